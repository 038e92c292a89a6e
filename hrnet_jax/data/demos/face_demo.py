"""The landmarks demo: synthetic faces with 68 points in the 300W CSV layout."""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

from hrnet_jax.data.demos.pose_demo import pose_background
from hrnet_jax.data.demos.store import cache_dir, write_once

FACE_VERSION = 1


def _face_shape(rng: np.random.Generator, hard: bool = False) -> np.ndarray:
  """68 landmarks in the 300W (iBUG) markup of a synthetic face, in face units (half the face
  width ~ 1, y down, origin near the nose): jaw 0-16 from the image's left, brows 17-26, nose
  27-35, eyes 36-47, mouth 48-67. The subject's right is on the image's left, so mirroring the
  image and swapping the 300W pairs gives another valid face."""
  p = np.zeros((68, 2))
  a, b = rng.uniform(0.9, 1.1), rng.uniform(1.2, 1.45)  # oval
  t = (np.pi + 0.25) - np.arange(17) * (np.pi + 0.5) / 16
  p[:17] = np.stack([a * np.cos(t), 0.1 + b * np.sin(t)], axis=1)
  brow_y, raise_ = -0.55, rng.uniform(-0.05, 0.12) * (2 if hard else 1)
  xs = np.linspace(-0.82, -0.15, 5)
  arch = brow_y - raise_ - 0.12 * np.sin(np.linspace(0.3, 2.6, 5))
  p[17:22] = np.stack([xs, arch], axis=1)
  p[22:27] = np.stack([-xs[::-1], arch[::-1]], axis=1)
  p[27:31] = np.stack([np.zeros(4), np.linspace(-0.35, 0.25, 4)], axis=1)
  p[31:36] = np.stack([np.linspace(-0.25, 0.25, 5), [0.38, 0.42, 0.45, 0.42, 0.38]], axis=1)
  ex, ew, eh = rng.uniform(0.38, 0.46), rng.uniform(0.17, 0.22), rng.uniform(0.05, 0.1)
  eye = np.array([[-1, 0], [-0.35, -1], [0.35, -1], [1, 0], [0.35, 1], [-0.35, 1]])
  p[36:42] = np.array([-ex, -0.25]) + eye * [ew, eh]  # outer corner first
  p[42:48] = np.array([ex, -0.25]) + (eye * [-ew, eh])[[3, 2, 1, 0, 5, 4]]  # inner corner first
  mw, my = rng.uniform(0.32, 0.45), rng.uniform(0.72, 0.85)
  open_ = rng.uniform(0.0, 0.12) * (2.5 if hard else 1)
  top = np.array([-1, -0.6, -0.25, 0, 0.25, 0.6, 1])
  p[48:55] = np.stack([mw * top, my - 0.08 * np.sin(np.pi * (top + 1) / 2) - 0.5 * open_], 1)
  p[55:60] = np.stack([mw * top[5:0:-1], my + 0.1 * np.sin(np.pi * (top[5:0:-1] + 1) / 2)
                       + 0.5 * open_], 1)
  inner = np.array([-0.75, -0.3, 0, 0.3, 0.75])
  p[60:65] = np.stack([mw * inner, my - 0.02 * np.sin(np.pi * (inner + 1) / 2) - 0.5 * open_], 1)
  p[65:68] = np.stack([mw * inner[3:0:-1], np.full(3, my + 0.5 * open_)], 1)
  p[60, 1] = p[64, 1] = my  # the inner corners stay on the lip line
  p[60:65, 1] = np.where(np.arange(5) % 4 == 0, my, p[60:65, 1])
  # Yaw: the far side narrows, the nose and mouth move towards it.
  yaw = rng.uniform(-0.35, 0.35) * (1.8 if hard else 1)
  depth = np.zeros(68)
  depth[27:36] = [0.2, 0.35, 0.5, 0.65, 0.3, 0.35, 0.4, 0.35, 0.3]
  depth[48:68] = 0.3
  p[:, 0] = p[:, 0] * np.cos(yaw) + depth * np.sin(yaw)
  return p


def _draw_face(image: np.ndarray, p: np.ndarray, unit: float, rng: np.random.Generator) -> None:
  pt = lambda q: np.round(q * 16).astype(np.int32)  # 4 fractional bits (cv2 shift=4)
  draw = dict(lineType=cv2.LINE_AA, shift=4)
  color = lambda lo, hi: tuple(float(v) for v in rng.uniform(lo, hi, 3))
  skin = tuple(float(v) for v in np.array([224, 172, 140]) * rng.uniform(0.45, 1.15))
  hair = color(0, 90)
  # Hair behind the head, then the face: the jaw line closed over the forehead.
  forehead = p[[16, 0]].mean(0) + [0, -0.9 * unit]
  oval = np.concatenate([p[:17], [p[16] + [0, -0.6 * unit], forehead, p[0] + [0, -0.6 * unit]]])
  cv2.fillPoly(image, [pt(oval + (oval - oval.mean(0)) * 0.12 + [0, -0.1 * unit])], hair, **draw)
  cv2.fillPoly(image, [pt(oval)], skin, **draw)
  thick = max(1, int(round(0.09 * unit)))
  for brow in (p[17:22], p[22:27]):
    cv2.polylines(image, [pt(brow)], False, hair, thick, **draw)
  for eye in (p[36:42], p[42:48]):
    cv2.fillPoly(image, [pt(eye)], (235, 235, 230), **draw)
    c = eye.mean(0)
    r = max(1, int(round(16 * 0.55 * np.ptp(eye[:, 1]))))
    cv2.circle(image, tuple(int(v) for v in pt(c)), r, color(20, 120), -1, **draw)
    cv2.polylines(image, [pt(eye)], True, (40, 30, 30), 1, **draw)
  shade = tuple(0.7 * v for v in skin)
  cv2.polylines(image, [pt(p[27:31])], False, shade, max(1, thick // 2), **draw)
  cv2.polylines(image, [pt(p[31:36])], False, shade, max(1, thick // 2), **draw)
  lips = color(120, 200)
  cv2.fillPoly(image, [pt(p[48:60])], (lips[0], 0.5 * lips[1], 0.5 * lips[2]), **draw)
  cv2.fillPoly(image, [pt(p[60:68])], (50, 20, 20), **draw)


def _face_image(rng: np.random.Generator, size: int, hard: bool) -> tuple[np.ndarray, np.ndarray]:
  image = pose_background(rng, size, size)
  unit = rng.uniform(0.16, 0.3) * size  # half a face width, in pixels
  angle = np.deg2rad(rng.uniform(-20, 20) * (1.6 if hard else 1))
  rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
  centre = rng.uniform(0.35, 0.65, 2) * size
  points = _face_shape(rng, hard) @ rot.T * unit + centre
  _draw_face(image, points, unit, rng)
  for _ in range(int(rng.integers(0, 3))):  # clutter in front, sometimes over the face
    x, y = (int(v) for v in rng.uniform(0, size, 2))
    r = int(rng.integers(2, max(3, size // 12)))
    cv2.circle(image, (x, y), r, tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
  image = image + rng.normal(0, 5, image.shape)
  image = cv2.GaussianBlur(image, (3, 3), 0)
  return np.clip(image, 0, 255).astype(np.uint8), points


def write_face_demo(root: str | os.PathLike, num_train: int = 480, num_valid: int = 64,
                    size: int = 128, seed: int = 0) -> pathlib.Path:
  """Writes synthetic faces in the official 300W CSV layout under `root` (atomically): train and
  valid (= valid_common, the first three quarters, + valid_challenge, harder poses and
  expressions), images under images/<split>/."""
  header = ['image_name', 'scale', 'center_w', 'center_h'] + [
      f'original_{i}_{c}' for i in range(68) for c in 'xy']

  def fill(tmp: pathlib.Path) -> None:
    lists = {}
    for split, count, offset in (('train', num_train, 0), ('valid', num_valid, 10**6)):
      (tmp / 'images' / split).mkdir(parents=True)
      rows = lists[split] = []
      for i in range(count):
        hard = split == 'valid' and i >= count * 3 // 4
        image, p = _face_image(np.random.default_rng([seed, 11, offset + i]), size, hard)
        name = f'{split}/{i:05d}.jpg'
        cv2.imwrite(str(tmp / 'images' / name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        lo, hi = p.min(0), p.max(0)
        centre, scale = (lo + hi) / 2, float((hi - lo).max()) / 200
        rows.append([name, f'{scale:.4f}', f'{centre[0]:.3f}', f'{centre[1]:.3f}']
                    + [f'{v:.3f}' for v in p.reshape(-1)])
    cut = num_valid * 3 // 4
    lists['valid_common'], lists['valid_challenge'] = lists['valid'][:cut], lists['valid'][cut:]
    for split, rows in lists.items():
      with open(tmp / f'face_landmarks_300w_{split}.csv', 'w') as f:
        f.write('\n'.join(','.join(r) for r in [header] + rows) + '\n')

  return write_once(root, fill, f'hrnet-jax face demo v{FACE_VERSION}')


def face_demo_root() -> pathlib.Path:
  """The face demo dataset (300W layout), written into the cache on first use."""
  return write_face_demo(cache_dir() / f'demo_face_v{FACE_VERSION}')
