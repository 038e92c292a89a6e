"""The online pose tracker of the paper's PoseTrack result, after FlowTrack (SimpleBaseline).

Per frame: (1) the detector's person boxes (score >= `detection_score`), a pose in each (the
caller's estimator, e.g. the pose model with flip test), OKS NMS; (2) ids: every live track's
last pose, moved by optical flow to this frame (and, with `velocity_too`, moved on at the
track's own velocity), is compared with each pose by OKS over the joints kept in both, plus
`appearance` x the similarity of their colours along the limbs (ours); pairs are taken greedily
from the most similar, above `min_similarity`; (3) a person of the previous
frame whom no detection found: a box around the moved pose (its kept joints' extent + 15%),
unless a detection overlaps it by IoU > `box_nms_iou`, and the pose there kept under the same
id when it still resembles the track and duplicates nobody; (4) a detected pose left over
starts a new id; a track not seen for `memory` frames ends. A detected pose with fewer than
`min_joints` kept joints is dropped before all this. Ids are unique within a frame.

The papers leave several thresholds unstated; `TrackerSettings` holds each with the value
chosen and why. Everything runs on the host, per video.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from hrnet_jax.data.sources.posetrack import joint_box
from hrnet_jax.tracking.flow import Flow, move_points

# (image RGB (H, W, 3), boxes (N, 4) x1 y1 x2 y2) -> joints (N, 17, 2), joint scores (N, 17).
Estimator = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class TrackerSettings:
  detection_score: float = 0.5  # detector boxes kept: FlowTrack's (and the issue's) 0.5
  box_nms_iou: float = 0.7  # a propagated box overlapping a detection by more is the same
  # person. Not published (FlowTrack); on the demo videos with one person's detection removed in
  # every second frame, 0.5 lost two person-frames and an id to crossings, 0.7 one and one
  box_enlarge: float = 1.15  # propagated boxes: the moved joints' extent + 15% (the paper)
  joint_score: float = 0.4  # a joint is kept above this: propagated, compared, counted and
  # written (FlowTrack drops joints below 0.4 for MOTA)
  oks_nms: float = 0.8  # poses more similar than this to a better one are duplicates (one
  # person estimated in two boxes). Not published. On the demo videos (demo models), person-level
  # id changes with ground-truth boxes / the detector's: 0.7: 0 / 7 (2 person-frames lost with
  # ground-truth boxes), 0.8: 0 / 6, 0.9: 0 / 16 (the detector's duplicate boxes survive)
  min_similarity: float = 0.3  # a pose continues a track only above this OKS (MMPose's 0.3)
  min_joints: int = 8  # a detected pose takes part (matched, or a new id) only with this many
  # kept joints (of the 15 annotated). MMPose asks 3 of a new id only; then a pose of a few joints
  # in a false box took a small person's track on the demo videos (with the demo detector, id
  # changes: 3 for new ids only: 7, 8 for all: 6; with ground-truth boxes 0 both ways)
  memory: int = 5  # frames a lost track stays matchable (FlowTrack's multi-frame queue)
  velocity_too: bool = True  # also compare with the track's last estimated pose moved on at
  # the track's own velocity (the mean shift of its kept joints per frame between its last two
  # estimates; 0 for a new track: where it was last seen) and take the better OKS: where one
  # person passes in front of another, the flow at the one behind follows the one in front and
  # moves its pose away, and a person hidden for a few frames reappears further along its way.
  # Ours, not FlowTrack's: on the demo videos (demo models) flow alone changed 1 / 11 people's
  # ids (ground-truth boxes / the detector's), this way 0 / 6
  appearance: float = 0.5  # ours, not FlowTrack's (0: its pose-only rule): a pair's similarity
  # is OKS + this x their colour similarity (0-1: head, torso, upper arms, forearms, thighs,
  # shins; `pose_look`). Where two people overlap the poses alone are ambiguous and a hidden
  # person's moved pose drifts with the one in front, so the person reappears far from it. On
  # the demo videos (1600-step demo detector, 2-core AMD EPYC): people whose id after their
  # crossing differs from their first: 5 -> 0 of 19; joint id switches 71 -> 37; 0.3: 4; 0.7: as 0.5
  appearance_sigma: float = 25.0  # colour distance (RGB 0-255) at which a part's similarity is
  # exp(-1/2): the same clothes under JPEG noise and blur stay within ~10 (15 and 25 gave the
  # same ids, 40 two later ids changed)
  appearance_min_oks: float = 0.05  # colour counts only between poses at least this similar,
  # i.e. near each other: two people dressed alike elsewhere in the frame stay apart (0 and 0.05
  # the same on the demo; 0.1 and 0.15 left a reappearing person a new id)


def tracker_settings(config: Any, detection_score: float) -> TrackerSettings:
  """The settings of a pose config's `tracking` block (every field but `detection_score`,
  which is the detector flag's threshold); the defaults where the config has no block."""
  from hrnet_jax.errors import ConfigError
  block = dict(config.get('tracking') or {})
  fields = {f.name for f in dataclasses.fields(TrackerSettings)} - {'detection_score'}
  unknown = sorted(set(block) - fields)
  if unknown:
    raise ConfigError(f'config.tracking.{unknown[0]}: not a tracker setting; expected one of '
                      f'{", ".join(sorted(fields))}')
  return TrackerSettings(detection_score=detection_score, **block)


def tracking_config() -> dict[str, Any]:
  """The default settings as a config block (`config.tracking`), overridable from the
  command line (`--config.tracking.appearance=0`)."""
  block = dataclasses.asdict(TrackerSettings())
  del block['detection_score']
  return block


@dataclasses.dataclass
class TrackedPose:
  track_id: int
  joints: np.ndarray  # (17, 2)
  scores: np.ndarray  # (17,)
  box: np.ndarray  # (4,) x1 y1 x2 y2, the box it was estimated in


@dataclasses.dataclass
class _Track:
  track_id: int
  joints: np.ndarray  # the last pose, moved by flow to the current frame
  scores: np.ndarray
  seen: np.ndarray  # the last pose where it was estimated
  age: int = 0  # frames since it was last matched
  velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(2))  # px / frame
  look: np.ndarray | None = None  # (6, 3) part colours (pose_look), NaN: not seen yet


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of boxes (N, 4) and (M, 4), x1 y1 x2 y2 -> (N, M)."""
  lt = np.maximum(a[:, None, :2], b[None, :, :2])
  rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
  inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
  area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=-1)
  union = area(a)[:, None] + area(b)[None, :] - inter
  return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _box(joints: np.ndarray, kept: np.ndarray, enlarge: float) -> np.ndarray | None:
  """x1 y1 x2 y2 of the kept joints' extent, enlarged (None: it spans no area)."""
  box = joint_box(joints, kept, enlarge)
  return None if box is None else np.asarray([box[0], box[1], box[0] + box[2], box[1] + box[3]])


# The parts whose colours describe a person (COCO joints; left and right together, so that a
# pose with its sides swapped looks the same): upper arms, forearms, thighs, shins.
_LIMBS = (((5, 7), (6, 8)), ((7, 9), (8, 10)), ((11, 13), (12, 14)), ((13, 15), (14, 16)))


def pose_look(image: np.ndarray, joints: np.ndarray, kept: np.ndarray) -> np.ndarray:
  """(6, 3) colours of head (nose to neck), torso (neck to mid-hip), upper arms, forearms,
  thighs, shins: the median of the pixels at 20-80% along each segment between kept joints (the
  ends are often background); NaN where a part's joints are not kept."""
  h, w = image.shape[:2]
  along = np.linspace(0.2, 0.8, 5)[:, None]

  def pixels(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    points = np.rint(a * (1 - along) + b * along).astype(np.int64)
    return image[np.clip(points[:, 1], 0, h - 1), np.clip(points[:, 0], 0, w - 1)]

  neck, hips = joints[[5, 6]].mean(0), joints[[11, 12]].mean(0)
  segments: list[list[np.ndarray]] = [[] for _ in range(6)]
  if kept[[0, 5, 6]].all():
    segments[0].append(pixels(joints[0], neck))
  if kept[[5, 6, 11, 12]].all():
    segments[1].append(pixels(neck, hips))
  for part, sides in enumerate(_LIMBS):
    segments[2 + part] += [pixels(joints[a], joints[b]) for a, b in sides if kept[a] and kept[b]]
  look = np.full((6, 3), np.nan)
  for part, seen in enumerate(segments):
    if seen:
      look[part] = np.median(np.concatenate(seen).astype(np.float64), 0)
  return look


def look_similarity(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
  """Mean over the parts seen in both looks of exp(-d^2 / 2 sigma^2), d their RGB distance;
  0 when no part is seen in both."""
  both = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
  if not both.any():
    return 0.0
  d2 = ((a[both] - b[both]) ** 2).sum(-1)
  return float(np.exp(-d2 / (2 * sigma ** 2)).mean())


def _area(joints: np.ndarray, kept: np.ndarray) -> float:
  box = joint_box(joints, kept, 1.0)
  return 0.0 if box is None else box[2] * box[3]


class PoseTracker:
  """One video at a time: `step(frame, detections)` per frame in order, `reset()` between
  videos. `estimate` gives poses in boxes; `flow` moves points between frames."""

  def __init__(self, estimate: Estimator, flow: Flow,
               settings: TrackerSettings = TrackerSettings()):
    from hrnet_jax.data.sources.coco import SIGMAS
    self.estimate, self.flow, self.settings = estimate, flow, settings
    self.sigmas = SIGMAS
    self.reset()

  def reset(self) -> None:
    self.tracks: list[_Track] = []
    self.last_frame: np.ndarray | None = None
    self.next_id = 0

  def _kept(self, scores: np.ndarray) -> np.ndarray:
    return scores > self.settings.joint_score

  def _oks(self, joints: np.ndarray, scores: np.ndarray, other: np.ndarray,
           other_scores: np.ndarray) -> float:
    """OKS of two poses over the joints kept in both, at the mean of their areas."""
    from hrnet_jax.tasks.pose import oks_iou
    area = (_area(joints, self._kept(scores)) + _area(other, self._kept(other_scores))) / 2
    a = np.concatenate([joints, scores[:, None]], -1)
    b = np.concatenate([other, other_scores[:, None]], -1)[None]
    return float(oks_iou(a, b, area, np.asarray([area]), self.sigmas,
                         self.settings.joint_score)[0])

  def _similarity(self, joints: np.ndarray, scores: np.ndarray, look: np.ndarray | None,
                  track: _Track) -> float:
    s = self.settings
    where = [track.joints]
    if s.velocity_too:
      where.append(track.seen + track.velocity * track.age)
    oks = max(self._oks(joints, scores, w, track.scores) for w in where)
    if look is None or track.look is None or oks <= s.appearance_min_oks:
      return oks
    return oks + s.appearance * look_similarity(look, track.look, s.appearance_sigma)

  def _poses(self, frame: np.ndarray, boxes: np.ndarray) -> list[tuple]:
    """(joints, scores, box, look) per box with `min_joints` kept joints, duplicates removed by
    OKS NMS (best pose first)."""
    from hrnet_jax.tasks.pose import oks_nms
    if not len(boxes):
      return []
    joints, scores = self.estimate(frame, boxes)
    joints, scores = np.asarray(joints, np.float64), np.asarray(scores, np.float64)
    kept = self._kept(scores)
    enough = np.flatnonzero(kept.sum(1) >= self.settings.min_joints)
    joints, scores, kept, boxes = joints[enough], scores[enough], kept[enough], boxes[enough]
    score = np.asarray([sc[k].mean() if k.any() else 0.0 for sc, k in zip(scores, kept)])
    areas = np.asarray([_area(j, k) for j, k in zip(joints, kept)])
    kpts = np.concatenate([joints, scores[..., None]], -1)
    keep = oks_nms(kpts, score, areas, self.settings.oks_nms, self.sigmas,
                   self.settings.joint_score)
    return [(joints[i], scores[i], boxes[i], self._look(frame, joints[i], scores[i]))
            for i in keep]

  def _look(self, frame: np.ndarray, joints: np.ndarray, scores: np.ndarray) -> np.ndarray | None:
    return pose_look(frame, joints, self._kept(scores)) if self.settings.appearance else None

  def _match(self, poses: list[tuple]) -> dict[int, int]:
    """pose index -> track index, greedily from the most similar pair above min_similarity."""
    pairs = []
    for p, (joints, scores, _, look) in enumerate(poses):
      for t, track in enumerate(self.tracks):
        sim = self._similarity(joints, scores, look, track)
        if sim > self.settings.min_similarity:
          pairs.append((sim, p, t))
    pairs.sort(key=lambda x: (-x[0], x[1], x[2]))
    owner: dict[int, int] = {}
    for _, p, t in pairs:
      if p not in owner and t not in owner.values():
        owner[p] = t
    return owner

  def step(self, frame: np.ndarray, detections: np.ndarray) -> list[TrackedPose]:
    """`detections` (N, 5): x1 y1 x2 y2 score. Returns the frame's tracked poses."""
    s = self.settings
    detections = np.asarray(detections, np.float64).reshape(-1, 5)
    detections = detections[detections[:, 4] >= s.detection_score]
    flow = self.flow(self.last_frame, frame) if self.last_frame is not None else None
    self.last_frame = frame
    for track in self.tracks:  # every live track's last pose, moved to this frame
      if flow is not None:
        track.joints = move_points(track.joints, flow)
      track.age += 1
    # 1. The detected people, matched to the tracks.
    poses = self._poses(frame, detections[:, :4])
    owner = self._match(poses)
    out: list[tuple[_Track, tuple]] = []  # (track, (joints, scores, box, look or None))
    for p, pose in enumerate(poses):
      if p in owner:
        out.append((self.tracks[owner[p]], pose))
    # 2. People of the previous frame that no detection found: a box around their moved pose
    # (unless a detection covers it), a pose there, kept when it still resembles them and
    # duplicates nobody already found.
    missed = [t for i, t in enumerate(self.tracks) if i not in owner.values() and t.age == 1]
    boxes, sources = [], []
    for track in missed:
      box = _box(track.joints, self._kept(track.scores), s.box_enlarge)
      if box is None or (len(detections) and
                         box_iou(box[None], detections[:, :4]).max() > s.box_nms_iou):
        continue
      boxes.append(box), sources.append(track)
    if boxes:
      joints, scores = self.estimate(frame, np.asarray(boxes))
      for track, j, sc, box in zip(sources, np.asarray(joints, np.float64),
                                   np.asarray(scores, np.float64), boxes):
        found = [pose for _, pose in out] + [pose for q, pose in enumerate(poses)
                                             if q not in owner]
        if (self._similarity(j, sc, self._look(frame, j, sc), track) > s.min_similarity
            and all(self._oks(j, sc, f[0], f[1]) <= s.oks_nms for f in found)):
          out.append((track, (j, sc, box, None)))  # a pose in a box we placed: look not kept
    # 3. New ids for the detected people left over.
    for p, pose in enumerate(poses):
      if p not in owner:
        track = _Track(self.next_id, pose[0], pose[1], pose[0])
        self.next_id += 1
        self.tracks.append(track)
        out.append((track, pose))
    result = []
    for track, (joints, scores, box, look) in out:
      both = self._kept(scores) & self._kept(track.scores)
      if track.age and both.any():
        track.velocity = (joints[both] - track.seen[both]).mean(0) / track.age
      if look is not None:  # a detected pose: the track's colours move halfway to its own
        track.look = look if track.look is None else np.where(
            np.isnan(track.look), look, np.where(np.isnan(look), track.look,
                                                 (track.look + look) / 2))
      track.joints, track.seen, track.scores, track.age = joints, joints, scores, 0
      result.append(TrackedPose(track.track_id, joints, scores, np.asarray(box)))
    self.tracks = [t for t in self.tracks if t.age <= s.memory]
    return result
