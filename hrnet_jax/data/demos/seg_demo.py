"""The segmentation demo: synthetic street scenes (sky, buildings, road, sidewalk, trees, cars,
people) in the Cityscapes folder layout with labelId PNGs, so the official labelId -> trainId
mapping and its ignore handling are exercised too."""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

from hrnet_jax.data.demos.store import cache_dir, write_once

VERSION = 2
# labelIds (Cityscapes) of the classes drawn; 0 ('unlabeled') and 1 ('ego vehicle') stay void.
_SKY, _BUILDING, _ROAD, _SIDEWALK, _VEGETATION, _CAR, _PERSON, _POLE = 23, 11, 7, 8, 21, 26, 24, 17
_EGO = 1
# Mean RGB per class; each scene jitters them, and texture noise is added on top.
_COLORS = {_SKY: (110, 150, 210), _BUILDING: (120, 100, 90), _ROAD: (90, 90, 95),
           _SIDEWALK: (170, 150, 160), _VEGETATION: (60, 120, 50), _CAR: (30, 40, 140),
           _PERSON: (200, 60, 70), _POLE: (160, 160, 150), _EGO: (20, 20, 20)}
_CITIES = ('north', 'south', 'east')



def _scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
  label = np.zeros((h, w), np.uint8)
  horizon = int(h * rng.uniform(0.35, 0.55))
  label[:horizon] = _SKY
  # Buildings: a skyline of boxes standing on the horizon.
  x = 0
  while x < w:
    bw = int(rng.integers(w // 10, w // 4))
    top = int(rng.uniform(0.05, 0.9) * horizon)
    if rng.random() < 0.8:
      label[top:horizon, x:x + bw] = _BUILDING
    x += bw
  label[horizon:] = _ROAD
  # Sidewalks: wedges on both sides widening towards the bottom.
  ys = np.arange(h)[:, None]
  xs = np.arange(w)[None, :]
  depth = np.clip((ys - horizon) / max(1, h - horizon), 0, 1)
  edge = (0.05 + 0.3 * rng.uniform(0.5, 1.0)) * w * depth
  below = ys >= horizon
  label[below & (xs < edge)] = _SIDEWALK
  label[below & (xs > w - 1 - edge)] = _SIDEWALK
  # Trees: ellipses around the horizon.
  for _ in range(int(rng.integers(1, 4))):
    cx, cy = int(rng.integers(0, w)), int(horizon - rng.uniform(0.0, 0.3) * h)
    cv2.ellipse(label, (cx, cy), (int(rng.integers(w // 20, w // 8)),
                                  int(rng.integers(h // 12, h // 5))), 0, 0, 360, _VEGETATION, -1)
  # Poles, cars on the road, people on the sidewalks.
  for _ in range(int(rng.integers(0, 3))):
    px = int(rng.integers(0, w))
    label[int(horizon * rng.uniform(0.3, 0.8)):int(horizon + 0.3 * (h - horizon)),
          px:px + max(2, w // 80)] = _POLE
  for _ in range(int(rng.integers(1, 4))):
    cy = int(rng.uniform(horizon + 0.1 * (h - horizon), h * 0.95))
    size = (cy - horizon) / max(1, h - horizon)
    cw, chh = int(w * (0.08 + 0.2 * size)), int(h * (0.04 + 0.15 * size))
    cx = int(rng.integers(0, max(1, w - cw)))
    label[max(horizon, cy - chh):cy, cx:cx + cw] = _CAR
  for _ in range(int(rng.integers(0, 4))):
    cy = int(rng.uniform(horizon + 0.1 * (h - horizon), h * 0.98))
    size = (cy - horizon) / max(1, h - horizon)
    pw, ph = max(2, int(w * (0.01 + 0.03 * size))), int(h * (0.05 + 0.25 * size))
    px = int(rng.integers(0, w - pw))
    label[max(0, cy - ph):cy, px:px + pw] = _PERSON
  # Ego vehicle hood at the bottom in some frames: void in Cityscapes (ignored).
  if rng.random() < 0.5:
    label[h - max(2, h // 16):] = _EGO
  image = np.zeros((h, w, 3), np.float32)
  for cls, color in _COLORS.items():
    jitter = rng.uniform(0.75, 1.25) * np.asarray(color) + rng.normal(0, 8, 3)
    image[label == cls] = jitter
  shade = np.linspace(1.1, 0.85, h)[:, None, None]
  image = image * shade + rng.normal(0, 12, image.shape)
  image = cv2.GaussianBlur(image, (3, 3), 0)
  return np.clip(image, 0, 255).astype(np.uint8), label



def write_seg_demo(root: str | os.PathLike, num_train: int = 96, num_val: int = 24,
                   size_hw: tuple[int, int] = (128, 256), seed: int = 0) -> pathlib.Path:
  """Writes the demo scenes in the Cityscapes layout under `root` (atomically) and returns it."""

  def fill(tmp: pathlib.Path) -> None:
    for split, count, offset in (('train', num_train, 0), ('val', num_val, 10**6)):
      for i in range(count):
        city = _CITIES[i % len(_CITIES)]  # lowercase letters: TFDS parses file names
        name = f'{city}_{i:06d}_000019'
        image, label = _scene(np.random.default_rng([seed, offset + i]), *size_hw)
        for sub, suffix, array in (('leftImg8bit', 'leftImg8bit', image[..., ::-1]),
                                   ('gtFine', 'gtFine_labelIds', label)):
          d = tmp / sub / split / city
          d.mkdir(parents=True, exist_ok=True)
          cv2.imwrite(str(d / f'{name}_{suffix}.png'), np.ascontiguousarray(array))

  return write_once(root, fill, f'hrnet-jax demo v{VERSION}')


def seg_demo_root() -> pathlib.Path:
  """The segmentation demo dataset, written into the cache on first use."""
  return write_seg_demo(cache_dir() / f'demo_seg_v{VERSION}')
