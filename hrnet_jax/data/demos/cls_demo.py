"""The classification demo: coloured shapes on cluttered backgrounds, one class per folder
(ImageFolder)."""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import cv2
import numpy as np

from hrnet_jax.data.demos.store import cache_dir, write_once

CLS_VERSION = 2
CLS_CLASSES = ('circle', 'square', 'triangle', 'star', 'cross', 'ring', 'stripes', 'checker',
               'dots', 'crescent')


def _cls_shape(image: np.ndarray, name: str, rng: np.random.Generator) -> None:
  """Draws one object of class `name`: a hue of its own (jittered), random saturation,
  brightness, size, place and rotation."""
  h, w = image.shape[:2]
  r = rng.uniform(0.28, 0.42) * min(h, w)
  cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
  angle = rng.uniform(0, 2 * np.pi)
  hue = (18 * CLS_CLASSES.index(name) + rng.uniform(-5, 5)) % 180
  hsv = np.array([[[hue, rng.uniform(150, 255), rng.uniform(120, 255)]]], np.uint8)
  color = tuple(float(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])
  other = tuple(float(v) for v in rng.uniform(0, 255, 3))

  def polygon(radii: Sequence[float], phase: float = 0.0) -> np.ndarray:
    t = angle + phase + 2 * np.pi * np.arange(len(radii)) / len(radii)
    return np.stack([cx + np.asarray(radii) * np.cos(t), cy + np.asarray(radii) * np.sin(t)],
                    axis=1).round().astype(np.int32)

  c, ri = (int(round(cx)), int(round(cy))), int(round(r))
  if name == 'circle':
    cv2.circle(image, c, ri, color, -1, cv2.LINE_AA)
  elif name == 'square':
    cv2.fillConvexPoly(image, polygon([r] * 4), color, cv2.LINE_AA)
  elif name == 'triangle':
    cv2.fillConvexPoly(image, polygon([r] * 3), color, cv2.LINE_AA)
  elif name == 'star':
    cv2.fillPoly(image, [polygon([r, 0.42 * r] * 5)], color, cv2.LINE_AA)
  elif name == 'cross':
    arm = r * 0.32
    for a in (angle, angle + np.pi / 2):
      d = np.array([np.cos(a), np.sin(a)])
      p = np.array([-d[1], d[0]])
      corners = [cx + s * r * d[0] + t * arm * p[0] for s, t in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
      ys = [cy + s * r * d[1] + t * arm * p[1] for s, t in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
      cv2.fillConvexPoly(image, np.round(np.stack([corners, ys], 1)).astype(np.int32), color,
                         cv2.LINE_AA)
  elif name == 'ring':
    cv2.circle(image, c, max(2, int(0.75 * r)), color, max(2, int(0.3 * r)), cv2.LINE_AA)
  elif name in ('stripes', 'checker', 'dots'):
    patch = np.zeros((2 * ri + 1, 2 * ri + 1, 3), np.float64)
    patch[:] = other
    yy, xx = np.mgrid[-ri:ri + 1, -ri:ri + 1]
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    period = max(4.0, r / rng.uniform(2.0, 3.0))
    if name == 'stripes':
      on = np.mod(u, period) < period / 2
    elif name == 'checker':
      on = (np.mod(u, period) < period / 2) ^ (np.mod(v, period) < period / 2)
    else:
      on = (np.mod(u, period) - period / 2) ** 2 + (np.mod(v, period) - period / 2) ** 2 < (
          0.3 * period) ** 2
    patch[on] = color
    inside = (np.abs(u) < 0.8 * r) & (np.abs(v) < 0.8 * r)
    y0, x0 = c[1] - ri, c[0] - ri
    region = image[max(0, y0):y0 + 2 * ri + 1, max(0, x0):x0 + 2 * ri + 1]
    sub = (slice(max(0, -y0), max(0, -y0) + region.shape[0]),
           slice(max(0, -x0), max(0, -x0) + region.shape[1]))
    region[inside[sub]] = patch[sub][inside[sub]]
  elif name == 'crescent':
    cv2.circle(image, c, ri, color, -1, cv2.LINE_AA)
    off = (int(round(cx + 0.45 * r * np.cos(angle))), int(round(cy + 0.45 * r * np.sin(angle))))
    cv2.circle(image, off, int(0.85 * r), other, -1, cv2.LINE_AA)
  else:
    raise ValueError(f'unknown demo class {name!r}')


def _cls_image(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
  top, bottom = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
  image = np.linspace(0, 1, size)[:, None, None] * (bottom - top) + top
  image = np.broadcast_to(image, (size, size, 3)).copy()
  for _ in range(int(rng.integers(2, 6))):  # clutter: thin lines and small blobs
    color = tuple(float(v) for v in rng.uniform(0, 255, 3))
    p = tuple(int(v) for v in rng.integers(0, size, 2))
    if rng.random() < 0.5:
      q = tuple(int(v) for v in rng.integers(0, size, 2))
      cv2.line(image, p, q, color, 1, cv2.LINE_AA)
    else:
      cv2.circle(image, p, int(rng.integers(1, max(2, size // 12))), color, -1, cv2.LINE_AA)
  _cls_shape(image, name, rng)
  image = image + rng.normal(0, 6, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def write_cls_demo(root: str | os.PathLike, num_train: int = 40, num_val: int = 10,
                   size: int = 48, seed: int = 0) -> pathlib.Path:
  """Writes the classification demo in the ImageFolder layout under `root` (atomically):
  shapes and textures whose class shows in both form and hue (learnable in minutes on a CPU),
  `{train,val}/<class>/*.jpg`, `num_train`/`num_val` images per class of CLS_CLASSES, plus
  `class_names.txt` (`<folder> <name>` lines)."""

  def fill(tmp: pathlib.Path) -> None:
    for split, count, offset in (('train', num_train, 0), ('val', num_val, 10**6)):
      for k, name in enumerate(CLS_CLASSES):
        d = tmp / split / f'{k:02d}_{name}'
        d.mkdir(parents=True)
        for i in range(count):
          image = _cls_image(np.random.default_rng([seed, 11, k, offset + i]), name, size)
          cv2.imwrite(str(d / f'{name}_{i:04d}.jpg'), image[..., ::-1],
                      [cv2.IMWRITE_JPEG_QUALITY, 92])
    (tmp / 'class_names.txt').write_text(
        ''.join(f'{k:02d}_{name} {name}\n' for k, name in enumerate(CLS_CLASSES)))

  return write_once(root, fill, f'hrnet-jax classification demo v{CLS_VERSION}')


def cls_demo_root() -> pathlib.Path:
  """The classification demo dataset (ImageFolder layout), written into the cache on first use."""
  return write_cls_demo(cache_dir() / f'demo_cls_v{CLS_VERSION}')
