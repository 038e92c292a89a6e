"""COCO person keypoints, top-down: one sample per person box.

Layout (as released): `{root}/annotations/person_keypoints_{split}.json` and
`{root}/images/{split}/{file_name}`. Training (and ground-truth-box evaluation) uses the annotated
people with at least one labelled keypoint, boxes clipped to the image; detector-box evaluation
reads a COCO results JSON (`image_id`, `category_id`, `bbox`, `score`) and keeps people with
score >= `image_thre`.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
from typing import Any

import numpy as np

from hrnet_jax.data.keypoints import box_to_center_scale
from hrnet_jax.data.sources.reader import DataError, KeypointSource, read_image, require_paths

KEYPOINT_NAMES = ('nose', 'left_eye', 'right_eye', 'left_ear', 'right_ear', 'left_shoulder',
                  'right_shoulder', 'left_elbow', 'right_elbow', 'left_wrist', 'right_wrist',
                  'left_hip', 'right_hip', 'left_knee', 'right_knee', 'left_ankle', 'right_ankle')
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
UPPER_BODY = tuple(range(11))
# Per-keypoint OKS constants of the COCO keypoint evaluation.
SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                   .89, .89]) / 10.0
SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
            (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))


def annotation_path(root: str | os.PathLike, split: str) -> pathlib.Path:
  return pathlib.Path(root) / 'annotations' / f'person_keypoints_{split}.json'


def load_json(path: str | os.PathLike, what: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise DataError(f'{what} not found: {path}') from None
  except json.JSONDecodeError as e:
    raise DataError(f'{what} {path} is not valid JSON: {e}') from None


def clean_box(box: Any, width: int, height: int) -> list[float] | None:
  """An annotation box clipped to the image (the official rule), or None when it is empty."""
  x, y, w, h = (float(v) for v in box)
  x1, y1 = max(0.0, x), max(0.0, y)
  x2 = min(width - 1.0, x1 + max(0.0, w - 1.0))
  y2 = min(height - 1.0, y1 + max(0.0, h - 1.0))
  if w * h > 0 and x2 >= x1 and y2 >= y1:
    return [x1, y1, x2 - x1, y2 - y1]
  return None


class CocoKeypoints(KeypointSource):
  """Random-access person samples: `image` (the whole image, RGB), `joints` (17, 2), `joints_vis`
  (17,), `center`, `scale`, `score`, `image_id`. Metadata stays in small numpy arrays so the
  source pickles cheaply into grain workers."""
  KEYPOINT_NAMES, FLIP_PAIRS, UPPER_BODY = KEYPOINT_NAMES, FLIP_PAIRS, UPPER_BODY
  SKELETON = SKELETON

  @classmethod
  def from_config(cls, data: Any, root: str, split: str) -> 'CocoKeypoints':
    """Boxes widened to the aspect of `data.input_size`; evaluation splits use the detector
    boxes of `data.det_json` when it is set (training always uses the annotated people)."""
    h, w = data.input_size
    det_json = data.get('det_json') if split != data.train_split else None
    return cls(root, split, aspect_ratio=w / h, det_json=det_json or None,
               image_thre=data.get('image_thre', 0.0))

  def __init__(self, root: str | os.PathLike, split: str, *, aspect_ratio: float,
               det_json: str | os.PathLike | None = None, image_thre: float = 0.0):
    self.root, self.split = pathlib.Path(root), split
    require_paths('COCO keypoints', self.root,
                  [f'annotations/person_keypoints_{split}.json', f'images/{split}'],
                  'Expected the COCO 2017 layout: annotations/person_keypoints_{train,val}2017.json '
                  'and images/{train,val}2017/*.jpg.')
    self.annotation_file = annotation_path(root, split)
    data = load_json(self.annotation_file, 'COCO annotation file')
    for key in ('images', 'annotations'):
      if key not in data:
        raise DataError(f'{self.annotation_file}: expected a COCO keypoints file with "{key}"')
    images = {im['id']: im for im in data['images']}
    self.det_json = det_json
    file_names, image_ids, centers, scales, joints, scores = [], [], [], [], [], []
    # What the protocol leaves out, counted so that it can be reported.
    self.skipped = collections.Counter()
    if det_json:
      for det in load_json(det_json, 'detection results JSON'):
        if det.get('category_id', 1) != 1:
          continue
        if det['score'] < image_thre:
          self.skipped['detections below image_thre'] += 1
          continue
        if det['image_id'] not in images:
          raise DataError(f'{det_json}: image_id {det["image_id"]} is not in '
                          f'{self.annotation_file}')
        c, s = box_to_center_scale(det['bbox'], aspect_ratio)
        im = images[det['image_id']]
        file_names.append(im['file_name'])
        image_ids.append(im['id'])
        centers.append(c), scales.append(s), scores.append(det['score'])
        joints.append(np.zeros((17, 3), np.float32))
    else:
      for ann in data['annotations']:
        if ann.get('category_id', 1) != 1:
          continue
        if ann.get('iscrowd', 0):
          self.skipped['crowd'] += 1
          continue
        kpts = np.asarray(ann.get('keypoints', []), np.float32).reshape(-1, 3)
        if len(kpts) != 17:
          raise DataError(f'{self.annotation_file}: annotation {ann.get("id")} has '
                          f'{len(kpts)} keypoints, expected 17')
        if kpts.max() == 0:
          self.skipped['without keypoints'] += 1
          continue
        im = images.get(ann['image_id'])
        if im is None:
          raise DataError(f'{self.annotation_file}: annotation {ann.get("id")} refers to '
                          f'unknown image_id {ann["image_id"]}')
        box = clean_box(ann['bbox'], im['width'], im['height'])
        if box is None:
          self.skipped['empty boxes'] += 1
          continue
        c, s = box_to_center_scale(box, aspect_ratio)
        file_names.append(im['file_name'])
        image_ids.append(im['id'])
        centers.append(c), scales.append(s), scores.append(1.0)
        joints.append(kpts)
    self.file_names = file_names
    self.image_ids = np.asarray(image_ids, np.int64)
    self.centers = np.asarray(centers, np.float32).reshape(-1, 2)
    self.scales = np.asarray(scales, np.float32).reshape(-1, 2)
    self.scores = np.asarray(scores, np.float32)
    self.joints = np.asarray(joints, np.float32).reshape(-1, 17, 3)

  def describe(self) -> str:
    kind = f'boxes from {self.det_json}' if self.det_json else 'ground-truth boxes'
    left_out = ', '.join(f'{n} {k}' for k, n in sorted(self.skipped.items())) or 'none'
    return f'{len(self)} people ({kind}; left out: {left_out})'

  def __len__(self) -> int:
    return len(self.file_names)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    kpts = self.joints[i]
    return {'image': read_image(self.root / 'images' / self.split / self.file_names[i]),
            'joints': kpts[:, :2].copy(), 'joints_vis': np.minimum(1.0, kpts[:, 2]),
            'center': self.centers[i], 'scale': self.scales[i], 'score': self.scores[i],
            'image_id': self.image_ids[i]}
