"""MPII Human Pose in the json layout of the official pose release.

`{root}/annot/{split}.json`: a list of people, each `{"image": "015601864.jpg", "center": [x, y],
"scale": s, "joints": [[x, y] x 16], "joints_vis": [0/1 x 16]}` in 1-based (Matlab) pixels;
images in `{root}/images/`. PCKh needs head boxes: from `{root}/annot/gt_{split}.mat` (the
released `gt_valid.mat`: `pos_gt_src`, `jnt_missing`, `headboxes_src`) when present, else from a
`"head_box": [x1, y1, x2, y2]` entry per person.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from hrnet_jax.data.sources.coco import load_json
from hrnet_jax.data.sources.reader import DataError, KeypointSource, read_image, require_paths

JOINT_NAMES = ('right_ankle', 'right_knee', 'right_hip', 'left_hip', 'left_knee', 'left_ankle',
               'pelvis', 'thorax', 'upper_neck', 'head_top', 'right_wrist', 'right_elbow',
               'right_shoulder', 'left_shoulder', 'left_elbow', 'left_wrist')
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
UPPER_BODY = (7, 8, 9, 10, 11, 12, 13, 14, 15)
SKELETON = ((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (7, 12),
            (12, 11), (11, 10), (7, 13), (13, 14), (14, 15))


class MPII(KeypointSource):
  """Random-access person samples: `image`, `joints` (16, 2, 0-based), `joints_vis`, `center`,
  `scale` (the official adjustment: centre moved down by 15 * scale px, scale x1.25), `score`."""
  KEYPOINT_NAMES, FLIP_PAIRS, UPPER_BODY, SKELETON = JOINT_NAMES, FLIP_PAIRS, UPPER_BODY, SKELETON

  def __init__(self, root: str | os.PathLike, split: str):
    self.root, self.split = pathlib.Path(root), split
    require_paths('MPII', self.root, [f'annot/{split}.json', 'images'],
                  'Expected the layout of the official pose release: annot/{train,valid}.json '
                  '(and annot/gt_valid.mat for PCKh) and images/*.jpg.')
    self.annotation_file = self.root / 'annot' / f'{split}.json'
    people = load_json(self.annotation_file, 'MPII annotation file')
    self.file_names = [p['image'] for p in people]
    n = len(people)
    self.centers = np.zeros((n, 2), np.float32)
    self.scales = np.zeros((n, 2), np.float32)
    self.joints = np.zeros((n, 16, 2), np.float32)
    self.visible = np.zeros((n, 16), np.float32)
    for i, p in enumerate(people):
      try:
        c = np.asarray(p['center'], np.float64)
        s = float(p['scale'])
        if c[0] != -1:
          c[1] += 15 * s
          s *= 1.25
        self.centers[i] = c - 1
        self.scales[i] = s
        if 'joints' in p:
          self.joints[i] = np.asarray(p['joints'], np.float64).reshape(16, 2) - 1
          self.visible[i] = np.asarray(p['joints_vis'], np.float64).reshape(16)
      except (KeyError, ValueError, TypeError) as e:
        raise DataError(f'{self.annotation_file}: person {i} ({p.get("image")}): expected '
                        f'center [x, y], scale, joints [[x, y] x 16] and joints_vis [16]: {e}'
                        ) from None
    self._people = people

  def head_sizes_and_truth(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(head box diagonals (N,), ground-truth joints (N, 16, 2) 0-based, annotated (N, 16))."""
    mat = self.root / 'annot' / f'gt_{self.split}.mat'
    if mat.exists():
      from scipy.io import loadmat
      gt = loadmat(mat)
      boxes = gt['headboxes_src']  # (2 corners, xy, N)
      truth = np.transpose(gt['pos_gt_src'], (2, 0, 1)) - 1
      annotated = 1 - np.transpose(gt['jnt_missing'], (1, 0))
      if truth.shape[0] != len(self):
        raise DataError(f'{mat}: {truth.shape[0]} people, but {self.annotation_file} has '
                        f'{len(self)}')
      diag = np.linalg.norm(boxes[1] - boxes[0], axis=0)
      return diag, truth, annotated
    try:
      boxes = np.asarray([p['head_box'] for p in self._people], np.float64).reshape(-1, 4)
    except KeyError:
      raise DataError(f'PCKh needs head boxes: neither {mat} nor "head_box" entries in '
                      f'{self.annotation_file}') from None
    diag = np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=1)
    return diag, self.joints.astype(np.float64), self.visible.astype(np.float64)

  def describe(self) -> str:
    return f'{len(self)} people'

  def __len__(self) -> int:
    return len(self.file_names)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {'image': read_image(self.root / 'images' / self.file_names[i]),
            'joints': self.joints[i].copy(), 'joints_vis': self.visible[i].copy(),
            'center': self.centers[i], 'scale': self.scales[i], 'score': np.float32(1.0),
            'image_id': np.int64(i)}
