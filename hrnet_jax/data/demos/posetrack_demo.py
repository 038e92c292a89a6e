"""The pose-tracking demo: short videos of the pose demo's stick figures walking across a still
background, crossing each other (the nearer one drawn over the other), in the PoseTrack2018
layout with ground-truth tracks, so the real reader, tracker and metrics run on them.

Each person keeps their look (colours, proportions) through a video and moves at a steady
velocity with swinging limbs; the joints are the figure's (17 PoseTrack slots: nose,
head_bottom = the neck, head_top = the top of the head circle, empty ears, COCO's body joints);
the head box is the head circle's square. A joint outside the image is not annotated.
Beside them, `annotations/instances_{split}.json` holds every person's box in the COCO instances
layout (the tight box of the figure's drawing, hidden parts included), so a person detector can
be trained for the tracker on the same scenes (dataset `posetrack_demo_persons`)."""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

from hrnet_jax.data.demos.pose_demo import (draw_figure, drawn_box, pose_background,
                                             pose_keypoints)
from hrnet_jax.data.demos.store import cache_dir, write_once

POSETRACK_VERSION = 3  # 3: 64 training videos; 2: the person boxes (instances files); 1: 24
SPLITS = {'train': 64, 'val': 8}  # videos per split (64: enough backgrounds for a detector)
FRAMES = 12  # per video


def _walkers(rng: np.random.Generator, h: int, w: int, frames: int) -> list[dict]:
  """2-3 people: the first two walk towards each other and cross; a third, smaller and slower,
starts in the middle."""
  people = []
  for i in range(int(rng.integers(2, 4))):
    direction = 1 if i % 2 == 0 else -1
    if i < 2:  # the crossing pair
      height = rng.uniform(0.55, 0.8) * h
      start = (0.12 if direction > 0 else 0.88) * w + rng.uniform(-0.05, 0.05) * w
      speed = direction * rng.uniform(0.5, 0.75) * w / frames
      top = rng.uniform(0.02, 0.98 * h - 0.95 * height)
    else:  # a smaller one further back, slower, from the middle
      height = rng.uniform(0.35, 0.5) * h
      start = rng.uniform(0.35, 0.65) * w
      speed = direction * rng.uniform(0.2, 0.35) * w / frames
      top = rng.uniform(0.0, 0.15) * h
    people.append({'track_id': i, 'height': height, 'start': start, 'speed': speed, 'top': top,
                   'look': int(rng.integers(1 << 30)), 'shape': int(rng.integers(1 << 30)),
                   'depth': rng.uniform(), 'phase': rng.uniform(0, 2 * np.pi)})
  return people


def _pose(person: dict, t: int) -> np.ndarray:
  """17 COCO keypoints of `person` at frame t: one figure, moved and with its limbs swung."""
  k = pose_keypoints(np.random.default_rng(person['shape']), 0.0, person['top'],
                     person['height'])
  swing = 0.06 * person['height'] * np.sin(person['phase'] + 0.9 * t)
  for joint, sign in ((9, 1), (10, -1), (15, -1), (16, 1), (7, 0.5), (8, -0.5), (13, -0.5),
                      (14, 0.5)):
    k[joint, 0] += sign * swing
  k[:, 0] += person['start'] + person['speed'] * t
  return k


def _slots(k: np.ndarray, height: float, w: int, h: int) -> tuple[np.ndarray, list[float]]:
  """COCO keypoints (17, 2) -> PoseTrack2018 keypoints (17, 3) and the head box x y w h."""
  head_centre = (k[3] + k[4]) / 2
  radius = 0.06 * height
  out = np.zeros((17, 3))
  out[0, :2] = k[0]
  out[1, :2] = (k[5] + k[6]) / 2 + [0.0, -0.02 * height]  # head_bottom: the neck
  out[2, :2] = head_centre + [0.0, -radius]  # head_top
  out[5:, :2] = k[5:]
  inside = (out[:, 0] >= 0) & (out[:, 0] <= w - 1) & (out[:, 1] >= 0) & (out[:, 1] <= h - 1)
  inside[3:5] = False  # PoseTrack's ears are always empty
  out[:, 2] = inside
  out[~inside] = 0
  box = [head_centre[0] - radius, head_centre[1] - radius, 2 * radius, 2 * radius]
  return np.round(out, 2), [round(float(v), 2) for v in box]


def write_video(folder: pathlib.Path, name: str, split: str, rng: np.random.Generator,
                size_hw: tuple[int, int], frames: int) -> tuple[dict, list[list]]:
  """Writes the frames of one video as JPEGs under `folder`; returns its 2018 JSON and per frame
  the people's drawn boxes [x1, y1, x2, y2]."""
  from hrnet_jax.data.sources.posetrack import SLOTS_2018
  h, w = size_hw
  background = pose_background(rng, h, w)
  people = _walkers(rng, h, w, frames)
  (folder / name).mkdir(parents=True)
  images, annotations, drawn = [], [], []
  for t in range(frames):
    image = background.copy()
    poses = {p['track_id']: _pose(p, t) for p in people}
    boxes = []
    for p in sorted(people, key=lambda p: p['depth']):  # far to near
      before = image.copy()
      draw_figure(image, poses[p['track_id']], p['height'], np.random.default_rng(p['look']))
      box = drawn_box(np.any(before != image, axis=2))
      if box is not None:
        boxes.append(box)
    drawn.append(boxes)
    image = image + rng.normal(0, 4, image.shape)
    file_name = f'images/{split}/{name}/{t:06d}.jpg'
    cv2.imwrite(str(folder / name / f'{t:06d}.jpg'),
                np.clip(image, 0, 255).astype(np.uint8)[..., ::-1],
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    image_id = t + 1
    images.append({'id': image_id, 'file_name': file_name, 'frame_id': image_id,
                   'vid_id': name, 'nframes': frames, 'is_labeled': True,
                   'height': h, 'width': w})
    for p in people:
      keypoints, head = _slots(poses[p['track_id']], p['height'], w, h)
      if not keypoints[:, 2].any():
        continue
      annotations.append({'id': image_id * 100 + p['track_id'], 'image_id': image_id,
                          'category_id': 1, 'track_id': p['track_id'], 'bbox_head': head,
                          'keypoints': [float(v) for v in keypoints.reshape(-1)]})
  return {'images': images, 'annotations': annotations,
          'categories': [{'id': 1, 'name': 'person', 'supercategory': 'person',
                          'keypoints': list(SLOTS_2018)}]}, drawn


def _instances(videos: list[tuple[str, dict, list[list]]]) -> dict:
  """A split's person boxes in the COCO instances layout (file names under images/{split})."""
  images, annotations = [], []
  for v, (name, data, drawn) in enumerate(videos):
    for im, boxes in zip(data['images'], drawn):
      image_id = (v + 1) * 1000 + im['id']
      images.append({'id': image_id, 'file_name': im['file_name'].split('/', 2)[2],
                     'height': im['height'], 'width': im['width']})
      for x1, y1, x2, y2 in boxes:
        annotations.append({'id': len(annotations) + 1, 'image_id': image_id, 'category_id': 1,
                            'bbox': [x1, y1, x2 - x1, y2 - y1],
                            'area': (x2 - x1) * (y2 - y1), 'iscrowd': 0})
  return {'images': images, 'annotations': annotations,
          'categories': [{'id': 1, 'name': 'person', 'supercategory': 'person'}]}


def write_posetrack_demo(root: str | os.PathLike, videos: dict[str, int] | None = None,
                         frames: int = FRAMES, size_hw: tuple[int, int] = (192, 256),
                         seed: int = 0) -> pathlib.Path:
  """Writes the demo in PoseTrack2018's layout under `root` (atomically):
  images/{split}/{video}/{frame:06d}.jpg, annotations/{split}/{video}.json, and the person
  boxes of each split in annotations/instances_{split}.json."""
  import json
  videos = SPLITS if videos is None else videos

  def fill(tmp: pathlib.Path) -> None:
    for split, count in videos.items():
      (tmp / 'annotations' / split).mkdir(parents=True)
      written = []
      for v in range(count):
        name = f'{v + (0 if split == "train" else 500):06d}_demo_{split}'
        rng = np.random.default_rng([seed, 30, v, len(split)])
        data, drawn = write_video(tmp / 'images' / split, name, split, rng, size_hw, frames)
        (tmp / 'annotations' / split / f'{name}.json').write_text(json.dumps(data))
        written.append((name, data, drawn))
      (tmp / 'annotations' / f'instances_{split}.json').write_text(
          json.dumps(_instances(written)))

  return write_once(root, fill, f'hrnet-jax posetrack demo v{POSETRACK_VERSION}')


def posetrack_demo_root() -> pathlib.Path:
  """The pose-tracking demo (PoseTrack2018 layout), written into the cache on first use."""
  return write_posetrack_demo(cache_dir() / f'demo_posetrack_v{POSETRACK_VERSION}')
