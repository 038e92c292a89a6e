"""PoseTrack videos: the two annotation layouts read into one form, and written back.

One JSON file per video. PoseTrack2017 (`annolist`): per frame `image[0].name`, `annorect`
people with the head box `x1 y1 x2 y2`, `track_id`, `annopoints[0].point` (`id` 0-14, `x`, `y`,
`score`), `ignore_regions[].point`, `is_labeled`; every value wrapped in a one-element list.
PoseTrack2018 (COCO-style): `images` (`file_name`, `ignore_regions_x/y`, `is_labeled`),
`annotations` (`image_id`, `track_id`, `bbox_head` x y w h, 17 `keypoints` slots, `scores`), the
slots named by `categories[0].keypoints`; a slot (0, 0, 0) is absent, the ears are always empty.

Both become `Video` -> `Frame` -> `Person` with the 15 joints of the evaluation (`JOINTS`, the
2017 ids), as the official evaluation sees them after its own 2018-to-2017 conversion.
`PoseTrackKeypoints` serves the labelled people of a split as top-down pose samples in the 17
slots of PoseTrack2018 (COCO's layout, so a COCO pose head transfers).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np

from hrnet_jax.data.keypoints import box_to_center_scale
from hrnet_jax.data.sources.reader import DataError, KeypointSource, read_image, require_paths

# The 15 joints of PoseTrack2017 and of the evaluation, by id.
JOINTS = ('right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle',
          'right_wrist', 'right_elbow', 'right_shoulder', 'left_shoulder', 'left_elbow',
          'left_wrist', 'head_bottom', 'nose', 'head_top')
# PoseTrack2018's 17 slots: COCO's order with the eyes replaced by head_bottom and head_top and
# the ears left empty.
SLOTS_2018 = ('nose', 'head_bottom', 'head_top', 'left_ear', 'right_ear', 'left_shoulder',
              'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
              'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
# Joint j of the 15 is slot SLOT_OF_JOINT[j] of the 17.
SLOT_OF_JOINT = tuple(SLOTS_2018.index(name) for name in JOINTS)


@dataclasses.dataclass
class Person:
  """One person in one frame: joints (15, 2) x y in pixels, `present` (15,), `scores` (15,)
  (nan: no score given), the head box x1 y1 x2 y2 (None: not given). `has_points`: False for a
  2017 `annorect` without `annopoints` (the evaluation drops such people)."""
  track_id: int | None
  joints: np.ndarray
  present: np.ndarray
  scores: np.ndarray
  head: np.ndarray | None = None
  has_points: bool = True
  score: float | None = None  # the person's score, when a prediction file gives one

  @classmethod
  def empty(cls, track_id: int | None = None) -> 'Person':
    return cls(track_id, np.zeros((15, 2)), np.zeros(15, bool), np.full(15, np.nan))


@dataclasses.dataclass
class Frame:
  """One frame: its image (relative path as the file gives it), people and ignore regions
  (polygons (K, 2) x y)."""
  image: str
  people: list[Person]
  ignore_regions: list[np.ndarray] = dataclasses.field(default_factory=list)
  labeled: bool = True


@dataclasses.dataclass
class Video:
  name: str  # the file's stem
  frames: list[Frame]
  layout: str  # '2017' or '2018'


def _one(value: Any, where: str) -> Any:
  """The 2017 layout wraps every value in a one-element list."""
  if isinstance(value, list):
    if len(value) != 1:
      raise DataError(f'{where}: expected a one-element list, got {len(value)} elements')
    return value[0]
  return value


def _need(record: dict, key: str, where: str) -> Any:
  if not isinstance(record, dict) or key not in record:
    raise DataError(f'{where}: missing field {key!r}')
  return record[key]


def _read_2017(data: dict, path: str) -> list[Frame]:
  frames = []
  for f, entry in enumerate(_need(data, 'annolist', path)):
    where = f'{path}: annolist[{f}]'
    images = _need(entry, 'image', where)
    if not images:
      raise DataError(f'{where}.image: empty (expected [{{"name": ...}}])')
    image = _one(_need(images[0], 'name', f'{where}.image[0]'), f'{where}.image[0].name')
    people = []
    for r, rect in enumerate(entry.get('annorect') or []):
      here = f'{where}.annorect[{r}]'
      track = rect.get('track_id')
      person = Person.empty(None if track is None else int(_one(track, here + '.track_id')))
      if all(k in rect for k in ('x1', 'y1', 'x2', 'y2')):
        person.head = np.asarray([_one(rect[k], f'{here}.{k}') for k in ('x1', 'y1', 'x2', 'y2')],
                                 np.float64)
      if 'score' in rect:
        person.score = float(_one(rect['score'], here + '.score'))
      points = rect.get('annopoints')
      person.has_points = bool(points) and bool(points[0]) and 'point' in points[0]
      for p, point in enumerate(points[0]['point'] if person.has_points else []):
        there = f'{here}.annopoints[0].point[{p}]'
        j = point.get('id')
        j = None if j is None else int(_one(j, there + '.id'))
        if j is None or not 0 <= j < 15 or person.present[j]:
          continue  # the evaluation reads the first point of each id 0-14
        person.joints[j] = [float(_one(_need(point, k, there), f'{there}.{k}')) for k in 'xy']
        person.present[j] = True
        if 'score' in point:
          person.scores[j] = float(_one(point['score'], there + '.score'))
      people.append(person)
    regions = []
    for g, region in enumerate(entry.get('ignore_regions') or []):
      there = f'{where}.ignore_regions[{g}]'
      regions.append(np.asarray([[float(_one(_need(q, k, there), there)) for k in 'xy']
                                 for q in _need(region, 'point', there)], np.float64))
    labeled = bool(_one(entry['is_labeled'], where)) if 'is_labeled' in entry else bool(people)
    frames.append(Frame(image, people, regions, labeled))
  return frames


def _read_2018(data: dict, path: str) -> list[Frame]:
  categories = _need(data, 'categories', path)
  if len(categories) != 1:
    raise DataError(f'{path}: categories: expected one (person), got {len(categories)}')
  names = list(_need(categories[0], 'keypoints', f'{path}: categories[0]'))
  missing = [n for n in JOINTS if n not in names]
  if missing:
    raise DataError(f'{path}: categories[0].keypoints lacks {missing} (expected PoseTrack2018\'s '
                    f'17 slots)')
  slot = [names.index(n) for n in JOINTS]
  by_image: dict[Any, list[tuple[int, dict]]] = {}
  for a, person in enumerate(_need(data, 'annotations', path)):
    by_image.setdefault(_need(person, 'image_id', f'{path}: annotations[{a}]'), []).append(
        (a, person))
  frames = []
  for f, image in enumerate(_need(data, 'images', path)):
    where = f'{path}: images[{f}]'
    people = []
    for a, record in by_image.get(_need(image, 'id', where), []):
      here = f'{path}: annotations[{a}]'
      keypoints = np.asarray(_need(record, 'keypoints', here), np.float64)
      if keypoints.size != 3 * len(names):
        raise DataError(f'{here}.keypoints: expected {3 * len(names)} numbers (x, y, visibility '
                        f'per slot), got {keypoints.size}')
      keypoints = keypoints.reshape(len(names), 3)[slot]
      track = record.get('track_id')
      person = Person.empty(None if track is None else int(track))
      person.joints = keypoints[:, :2].copy()
      person.present = ~np.all(keypoints == 0, axis=1)  # (0, 0, 0): not annotated
      scores = record.get('scores')
      if scores:
        if len(scores) != len(names):
          raise DataError(f'{here}.scores: expected {len(names)} (one per slot), got '
                          f'{len(scores)}')
        person.scores = np.asarray(scores, np.float64)[slot]
      if record.get('bbox_head'):
        x, y, w, h = (float(v) for v in record['bbox_head'])
        person.head = np.asarray([x, y, x + w, y + h])
      if 'score' in record:
        person.score = float(record['score'])
      people.append(person)
    xs, ys = image.get('ignore_regions_x') or [], image.get('ignore_regions_y') or []
    if len(xs) != len(ys):
      raise DataError(f'{where}: ignore_regions_x and ignore_regions_y differ in length')
    regions = [np.stack([np.asarray(x, np.float64), np.asarray(y, np.float64)], 1)
               for x, y in zip(xs, ys)]
    frames.append(Frame(str(_need(image, 'file_name', where)), people, regions,
                        bool(image.get('is_labeled', bool(people)))))
  return frames


def layout_of(data: Any, path: str | os.PathLike) -> str:
  """'2017' (`annolist`) or '2018' (`images`, `annotations`)."""
  if isinstance(data, dict) and 'annolist' in data:
    return '2017'
  if isinstance(data, dict) and 'images' in data and 'annotations' in data:
    return '2018'
  raise DataError(f'{path}: not a PoseTrack video file: expected the 2017 layout (annolist) or '
                  f'the 2018 layout (images, annotations, categories)')


def read_video(path: str | os.PathLike) -> Video:
  """A PoseTrack video file of either layout."""
  path = pathlib.Path(path)
  try:
    data = json.loads(path.read_text())
  except OSError as e:
    raise DataError(f'cannot read {path}: {e.strerror}') from None
  except ValueError as e:
    raise DataError(f'{path}: not valid JSON ({e})') from None
  layout = layout_of(data, path)
  frames = _read_2017(data, str(path)) if layout == '2017' else _read_2018(data, str(path))
  return Video(path.stem, frames, layout)


def _point_value(v: float) -> float | int:
  return int(v) if float(v).is_integer() else float(v)


def video_to_json(video: Video, layout: str = '2018') -> dict:
  """The file contents of `video` in `layout` ('2017' or '2018')."""
  if layout == '2017':
    annolist = []
    for frame in video.frames:
      rects = []
      for person in frame.people:
        rect: dict[str, Any] = {}
        if person.track_id is not None:
          rect['track_id'] = [person.track_id]
        if person.head is not None:
          rect.update({k: [float(v)] for k, v in zip(('x1', 'y1', 'x2', 'y2'), person.head)})
        if person.score is not None:
          rect['score'] = [person.score]
        points = []
        for j in np.flatnonzero(person.present):
          point = {'id': [int(j)], 'x': [float(person.joints[j, 0])],
                   'y': [float(person.joints[j, 1])]}
          if not np.isnan(person.scores[j]):
            point['score'] = [float(person.scores[j])]
          points.append(point)
        if person.has_points:
          rect['annopoints'] = [{'point': points}]
        rects.append(rect)
      entry: dict[str, Any] = {'image': [{'name': frame.image}], 'annorect': rects,
                               'is_labeled': [int(frame.labeled)]}
      if frame.ignore_regions:
        entry['ignore_regions'] = [{'point': [{'x': [float(x)], 'y': [float(y)]} for x, y in r]}
                                   for r in frame.ignore_regions]
      annolist.append(entry)
    return {'annolist': annolist}
  if layout != '2018':
    raise ValueError(f'layout {layout!r}: expected 2017 or 2018')
  images, annotations = [], []
  for f, frame in enumerate(video.frames):
    image: dict[str, Any] = {'id': f, 'file_name': frame.image, 'is_labeled': frame.labeled,
                             'frame_id': f, 'nframes': len(video.frames), 'vid_id': video.name}
    if frame.ignore_regions:
      image['ignore_regions_x'] = [[float(x) for x in r[:, 0]] for r in frame.ignore_regions]
      image['ignore_regions_y'] = [[float(y) for y in r[:, 1]] for r in frame.ignore_regions]
    images.append(image)
    for k, person in enumerate(frame.people):
      keypoints = np.zeros((17, 3))
      scores = np.zeros(17)
      keypoints[list(SLOT_OF_JOINT), :2] = np.where(person.present[:, None], person.joints, 0)
      keypoints[list(SLOT_OF_JOINT), 2] = person.present
      scores[list(SLOT_OF_JOINT)] = np.where(np.isnan(person.scores), 0.0, person.scores)
      record: dict[str, Any] = {'id': f * 1000 + k, 'image_id': f, 'category_id': 1,
                                'keypoints': [_point_value(v) for v in keypoints.reshape(-1)]}
      if person.track_id is not None:
        record['track_id'] = person.track_id
      if not np.all(np.isnan(person.scores)):
        record['scores'] = [float(v) for v in scores]
      if person.head is not None:
        x1, y1, x2, y2 = (float(v) for v in person.head)
        record['bbox_head'] = [x1, y1, x2 - x1, y2 - y1]
      if person.score is not None:
        record['score'] = person.score
      annotations.append(record)
  return {'images': images, 'annotations': annotations,
          'categories': [{'id': 1, 'name': 'person', 'supercategory': 'person',
                          'keypoints': list(SLOTS_2018)}]}


def write_video(video: Video, path: str | os.PathLike, layout: str = '2018') -> pathlib.Path:
  """Writes `video` to `path` whole or not at all (a temporary file renamed into place)."""
  path = pathlib.Path(path)
  tmp = path.with_name(f'.{path.name}.tmp')
  tmp.write_text(json.dumps(video_to_json(video, layout)))
  os.replace(tmp, path)
  return path


# The 17 slots as a pose head sees them: COCO's pairs less the eyes' (head_bottom and head_top
# are not a left/right pair).
FLIP_PAIRS = ((3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
UPPER_BODY = tuple(range(11))
SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
            (6, 8), (7, 9), (8, 10), (1, 5), (1, 6), (1, 0), (0, 2))
BOX_ENLARGE = 1.15  # training boxes: the joints' extent enlarged by 15% (the paper)


def to_slots(person: Person) -> np.ndarray:
  """(17, 3) x, y, present in PoseTrack2018's slots (the ears empty)."""
  out = np.zeros((17, 3), np.float32)
  out[list(SLOT_OF_JOINT), :2] = np.where(person.present[:, None], person.joints, 0)
  out[list(SLOT_OF_JOINT), 2] = person.present
  return out


def joint_box(joints: np.ndarray, present: np.ndarray,
              enlarge: float = BOX_ENLARGE) -> list[float] | None:
  """x y w h: the extent of the present joints, enlarged about its centre; None when it has no
  area (fewer than two distinct joints)."""
  xy = joints[present]
  if len(xy) == 0:
    return None
  (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
  if x2 <= x1 or y2 <= y1:
    return None
  w, h = (x2 - x1) * enlarge, (y2 - y1) * enlarge
  return [float((x1 + x2 - w) / 2), float((y1 + y2 - h) / 2), float(w), float(h)]


class PoseTrackKeypoints(KeypointSource):
  """Top-down samples of the labelled people of PoseTrack (either layout):
  `{root}/annotations/{split}/<video>.json`, images at `{root}/<the file's image path>`
  (`images/{split}/<video>/<frame>.jpg` as released). Boxes are the joints' extent enlarged by
  15%; people whose joints span no area are left out and counted. Samples carry `video` and
  `frame` besides COCO's keys."""
  KEYPOINT_NAMES, FLIP_PAIRS, UPPER_BODY, SKELETON = SLOTS_2018, FLIP_PAIRS, UPPER_BODY, SKELETON

  @classmethod
  def from_config(cls, data: Any, root: str, split: str) -> 'PoseTrackKeypoints':
    h, w = data.input_size
    return cls(root, split, aspect_ratio=w / h)

  def __init__(self, root: str | os.PathLike, split: str, *, aspect_ratio: float):
    self.root, self.split = pathlib.Path(root), split
    require_paths('PoseTrack', self.root, [f'annotations/{split}'],
                  'Expected the PoseTrack layout: annotations/{train,val}/<video>.json (2017 or '
                  '2018 layout) and the images the files name, under the same root.')
    files = sorted((self.root / 'annotations' / split).glob('*.json'))
    if not files:
      raise DataError(f'PoseTrack: no .json files in {self.root / "annotations" / split}')
    self.skipped = collections.Counter()
    self.files = files
    self.videos = [f.stem for f in files]
    images, video_index, frame_index, centers, scales, joints = [], [], [], [], [], []
    for v, path in enumerate(files):
      for f, frame in enumerate(read_video(path).frames):
        for person in frame.people:
          if not person.present.any():
            continue
          box = joint_box(person.joints, person.present)
          if box is None:
            self.skipped['people whose joints span no area'] += 1
            continue
          c, s = box_to_center_scale(box, aspect_ratio)
          images.append(frame.image)
          video_index.append(v), frame_index.append(f)
          centers.append(c), scales.append(s), joints.append(to_slots(person))
    self.images = images
    self.names = [f'{self.videos[v]}/{f}' for v, f in zip(video_index, frame_index)]
    self.video_index = np.asarray(video_index, np.int32)
    self.frame_index = np.asarray(frame_index, np.int32)
    self.centers = np.asarray(centers, np.float32).reshape(-1, 2)
    self.scales = np.asarray(scales, np.float32).reshape(-1, 2)
    self.joints = np.asarray(joints, np.float32).reshape(-1, 17, 3)

  def ground_truth(self) -> list[Video]:
    """The split's videos as read (the evaluation's ground truth), in sample order."""
    return [read_video(f) for f in self.files]

  def describe(self) -> str:
    left_out = ', '.join(f'{n} {k}' for k, n in sorted(self.skipped.items())) or 'none'
    return (f'{len(self)} people in {len(self.videos)} videos (boxes from the joints + 15%; '
            f'left out: {left_out})')

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, i: int) -> dict[str, Any]:
    kpts = self.joints[i]
    return {'image': read_image(self.root / self.images[i]), 'joints': kpts[:, :2].copy(),
            'joints_vis': kpts[:, 2].copy(), 'center': self.centers[i], 'scale': self.scales[i],
            'score': np.float32(1.0), 'image_id': np.int64(self.video_index[i]) * 100000
            + self.frame_index[i], 'video': self.video_index[i], 'frame': self.frame_index[i]}
