"""Top-down keypoint transforms in numpy/OpenCV: person box -> (center, scale), the crop affine,
augmentation (half body, scale, rotation, flip with joint swaps) and Gaussian heatmap targets.

Conventions of the official pose release: a scale of 1 is 200 pixels; a crop spans
`scale * 200` pixels of the image around `center`; heatmaps are at 1/4 of the input size.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

PIXEL_STD = 200.0


def box_to_center_scale(box_xywh: Sequence[float], aspect_ratio: float,
                        padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
  """A person box -> (center, scale): the box is widened (or heightened) to `aspect_ratio`
  (w / h of the model input) and enlarged by `padding`."""
  x, y, w, h = (float(v) for v in box_xywh)
  center = np.array([x + 0.5 * w, y + 0.5 * h], np.float32)
  if w > aspect_ratio * h:
    h = w / aspect_ratio
  elif w < aspect_ratio * h:
    w = h * aspect_ratio
  scale = np.array([w, h], np.float32) / PIXEL_STD * padding
  return center, scale


def crop_matrix(center: Sequence[float], scale: Sequence[float], rotation: float,
                out_wh: Sequence[int], flip_width: int | None = None) -> np.ndarray:
  """2x3 affine: image -> crop. The crop's centre is `center`; `scale[0] * 200` image pixels span
  the crop's width (the same factor applies vertically); `rotation` is in degrees.

  With `flip_width` the image is first mirrored (x -> flip_width - 1 - x), so one warp does both
  (the crop centre must then be given in mirrored coordinates, as the joints are)."""
  out_w, out_h = out_wh
  k = out_w / (float(scale[0]) * PIXEL_STD)
  r = np.deg2rad(rotation)
  linear = k * np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]])
  offset = np.array([0.5 * out_w, 0.5 * out_h]) - linear @ np.asarray(center, np.float64)
  m = np.concatenate([linear, offset[:, None]], axis=1)
  if flip_width is not None:
    mirror = np.array([[-1.0, 0.0, flip_width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    m = m @ mirror
  return m


def apply_affine(points: np.ndarray, m: np.ndarray) -> np.ndarray:
  """(N, 2) points through a 2x3 affine."""
  return points @ m[:, :2].T + m[:, 2]


def heatmap_to_image(coords: np.ndarray, center: np.ndarray, scale: np.ndarray,
                     heatmap_wh: Sequence[int]) -> np.ndarray:
  """Heatmap coordinates (..., K, 2) back to the image, for crops without rotation:
  x_img = cx + (x - W/2) * scale_w * 200 / W (the same factor vertically)."""
  w, h = heatmap_wh
  factor = np.asarray(scale, np.float64)[..., :1, None] * PIXEL_STD / w
  half = np.array([0.5 * w, 0.5 * h])
  return np.asarray(center, np.float64)[..., None, :] + (coords - half) * factor


def decoded_to_image(outputs: dict, heatmap_wh: Sequence[int]) -> np.ndarray:
  """The eval step's decoded `coords` (B, K, 2 heatmap pixels) -> image pixels, through each
  sample's crop (`center`, `scale`)."""
  return heatmap_to_image(np.asarray(outputs['coords'], np.float64), np.asarray(outputs['center']),
                          np.asarray(outputs['scale']), heatmap_wh)


def flip_joints(joints: np.ndarray, visible: np.ndarray, width: int,
                flip_pairs: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
  """Mirror joints (K, 2) horizontally in an image of `width` and swap the left/right pairs."""
  joints = joints.copy()
  joints[:, 0] = width - 1 - joints[:, 0]
  perm = flip_permutation(len(joints), flip_pairs)
  return joints[perm] * (visible[perm, None] > 0), visible[perm]


def flip_permutation(num_joints: int, flip_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
  """Index array that swaps every (a, b) pair; an involution."""
  perm = np.arange(num_joints)
  for a, b in flip_pairs:
    perm[a], perm[b] = b, a
  return perm


def half_body(joints: np.ndarray, visible: np.ndarray, upper_ids: Sequence[int],
              aspect_ratio: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray] | None:
  """A crop around the visible upper or lower body (scale x1.5), or None with < 2 joints.
  The upper body is chosen when randn < 0.5 (as in the official release) and it has > 2 joints."""
  is_upper = np.isin(np.arange(len(joints)), upper_ids)
  seen = visible > 0
  upper, lower = joints[seen & is_upper], joints[seen & ~is_upper]
  if rng.standard_normal() < 0.5 and len(upper) > 2:
    chosen = upper
  else:
    chosen = lower if len(lower) > 2 else upper
  if len(chosen) < 2:
    return None
  center = chosen.mean(axis=0).astype(np.float32)
  w, h = chosen.max(axis=0) - chosen.min(axis=0)
  if w > aspect_ratio * h:
    h = w / aspect_ratio
  elif w < aspect_ratio * h:
    w = h * aspect_ratio
  return center, np.array([w, h], np.float32) / PIXEL_STD * 1.5


def gaussian_targets(joints: np.ndarray, weights: np.ndarray, image_wh: Sequence[int],
                     heatmap_wh: Sequence[int], sigma: float,
                     rounding: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
  """Heatmaps (H, W, K) float32 with an unnormalized Gaussian (peak 1) per joint, and weights.

  The centre is the joint's heatmap pixel int(x / stride + rounding): rounded (0.5, the pose
  code) or truncated (0.0, the official face code); values are set within 3 sigma
  of it (a square window). A joint whose window lies entirely outside the heatmap, or with
  weight 0, gets an all-zero map and weight 0."""
  w, h = heatmap_wh
  stride = np.asarray(image_wh, np.float64) / np.asarray(heatmap_wh, np.float64)
  radius = 3.0 * sigma
  mu = np.trunc(joints / stride + rounding)  # int() of the official code: towards zero
  top_left = np.trunc(mu - radius)
  bottom_right = np.trunc(mu + radius + 1)
  outside = ((top_left[:, 0] >= w) | (top_left[:, 1] >= h) | (bottom_right[:, 0] < 0)
             | (bottom_right[:, 1] < 0))
  weights = np.where(outside, 0.0, np.asarray(weights, np.float64)).astype(np.float32)
  dx = np.arange(w)[None, :] - mu[:, :1]  # (K, W)
  dy = np.arange(h)[None, :] - mu[:, 1:]  # (K, H)
  gx = np.where(np.abs(dx) <= radius, np.exp(-dx**2 / (2 * sigma**2)), 0.0)
  gy = np.where(np.abs(dy) <= radius, np.exp(-dy**2 / (2 * sigma**2)), 0.0)
  gx = gx * (weights > 0.5)[:, None]  # times 0 or 1: exact
  maps = gy.T[:, None, :] * gx.T[None, :, :]  # (H, W, K) at once, no transposed copy
  return maps.astype(np.float32, order='C'), weights


def random_top_down(sample: dict, rng: np.random.Generator, *, input_wh: Sequence[int],
                    heatmap_wh: Sequence[int], sigma: float, flip_pairs: Sequence[tuple[int, int]],
                    upper_ids: Sequence[int], scale_factor: float = 0.35,
                    rotation_factor: float = 45.0, rotation_prob: float = 0.6,
                    flip: bool = True, half_body_prob: float = 0.3,
                    half_body_min_joints: int = 8) -> dict:
  """Training crop of one person: half body (p `half_body_prob` when more than
  `half_body_min_joints` joints are visible), scale 1 + f * N(0,1) clipped to 1 +- f, rotation
  r * N(0,1) clipped to +-2r with probability `rotation_prob`, flip (p 0.5) with joint swaps;
  one bilinear warp; Gaussian targets."""
  image = sample['image']
  joints = sample['joints'].astype(np.float64)
  visible = sample['joints_vis'].astype(np.float32)
  center = sample['center'].astype(np.float64)
  scale = sample['scale'].astype(np.float64)
  aspect = input_wh[0] / input_wh[1]
  if (half_body_prob and visible.sum() > half_body_min_joints
      and rng.random() < half_body_prob):
    crop = half_body(joints, visible, upper_ids, aspect, rng)
    if crop is not None:
      center, scale = crop[0].astype(np.float64), crop[1].astype(np.float64)
  scale = scale * np.clip(1 + scale_factor * rng.standard_normal(), 1 - scale_factor,
                          1 + scale_factor)
  rotation = 0.0
  if rng.random() <= rotation_prob:
    rotation = float(np.clip(rotation_factor * rng.standard_normal(), -2 * rotation_factor,
                             2 * rotation_factor))
  width = image.shape[1]
  flip_width = None
  if flip and rng.random() <= 0.5:
    joints, visible = flip_joints(joints, visible, width, flip_pairs)
    center = np.array([width - 1 - center[0], center[1]])
    flip_width = width
  m = crop_matrix(center, scale, rotation, input_wh, flip_width=flip_width)
  crop = cv2.warpAffine(image, m, tuple(int(v) for v in input_wh), flags=cv2.INTER_LINEAR)
  # `joints` are already mirrored, so they take the crop part of the warp alone.
  joints = apply_affine(joints, crop_matrix(center, scale, rotation, input_wh))
  target, weight = gaussian_targets(joints, visible, input_wh, heatmap_wh, sigma)
  return {'image': crop, 'target': target, 'target_weight': weight}


def eval_crop(sample: dict, *, input_wh: Sequence[int]) -> dict:
  """Evaluation crop at the box (no augmentation), with what decoding needs to map back."""
  m = crop_matrix(sample['center'], sample['scale'], 0.0, input_wh)
  crop = cv2.warpAffine(sample['image'], m, tuple(int(v) for v in input_wh),
                        flags=cv2.INTER_LINEAR)
  return {'image': crop, 'center': np.asarray(sample['center'], np.float32),
          'scale': np.asarray(sample['scale'], np.float32),
          'box_score': np.float32(sample.get('score', 1.0))}
