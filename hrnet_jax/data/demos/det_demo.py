"""The detection demo: people (the pose demo's figures), stop signs and sports balls on cluttered
backgrounds, landscape and portrait, in the COCO instances layout with COCO's category ids.
Each object's `segmentation` is its exact silhouette (the pixels its drawing changed, less those
of the objects drawn over it), as compressed RLE; its box is the tight box of its drawing. Beside
the images, `stuffthingmaps/{split}/<stem>.png` label every pixel as COCO-stuff does: a
silhouette (crowds too) with its category id - 1, the rest with one stuff label."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Callable

import cv2
import numpy as np

from hrnet_jax.data.demos.pose_demo import (draw_figure, drawn_box, pose_background,
                                             pose_keypoints)
from hrnet_jax.data.demos.store import cache_dir, write_coco_image, write_once
from hrnet_jax.ops.masks import encode_rle

DET_VERSION = 3  # 3: COCO-stuff label maps; 2: silhouettes as segmentations; 1: boxes as polygons
DET_STUFF_LABEL = 171  # the background's label in the stuff maps (a COCO-stuff stuff value)
# COCO's ids and names, listed out of id order on purpose: readers must sort them into labels.
DET_CATEGORIES = ({'id': 13, 'name': 'stop sign', 'supercategory': 'outdoor'},
                  {'id': 1, 'name': 'person', 'supercategory': 'person'},
                  {'id': 37, 'name': 'sports ball', 'supercategory': 'sports'})
_DET_PERSON, _DET_STOP, _DET_BALL = 1, 13, 37
# (h, w) of the landscape images, the first the most common; portrait ones are the transposes.
_DET_SIZES = ((192, 256), (160, 224), (176, 240))


def _rgb(rng: np.random.Generator, lo: float = 0, hi: float = 255) -> tuple[float, ...]:
  return tuple(float(v) for v in rng.uniform(lo, hi, 3))


def _paint_disc(image: np.ndarray, cx: float, cy: float, r: float,
                colors: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
  """A disc with per-pixel colours `colors(dx, dy)` (from the offsets to the centre), its rim
  anti-aliased, clipped to the image; pixels outside it stay bit-identical."""
  h, w = image.shape[:2]
  x0, x1 = max(0, int(np.floor(cx - r))), min(w, int(np.ceil(cx + r)) + 1)
  y0, y1 = max(0, int(np.floor(cy - r))), min(h, int(np.ceil(cy + r)) + 1)
  if x0 >= x1 or y0 >= y1:
    return
  dy, dx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
  dx, dy = dx - cx, dy - cy
  alpha = np.clip(r + 0.5 - np.hypot(dx, dy), 0, 1)
  on = alpha > 0
  region = image[y0:y1, x0:x1]
  a = alpha[on][:, None]
  region[on] = region[on] * (1 - a) + colors(dx, dy)[on] * a


def _draw_ball(image: np.ndarray, cx: float, cy: float, r: float,
               rng: np.random.Generator) -> None:
  """A shaded ball: white with dark patches, or striped in two colours."""
  shade = lambda dx, dy: np.clip(1.1 - 0.35 * np.hypot(dx + 0.4 * r, dy + 0.4 * r) / r, 0.55,
                                 1.1)[..., None]
  if rng.random() < 0.5:
    white, dark = rng.uniform(215, 250), _rgb(rng, 10, 70)
    t = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(5) / 5
    centres = [(0.0, 0.0)] + [(0.62 * r * np.cos(a), 0.62 * r * np.sin(a)) for a in t]

    def colors(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
      out = np.full(dx.shape + (3,), white)
      for px, py in centres:
        out[np.hypot(dx - px, dy - py) < 0.26 * r] = dark
      return out * shade(dx, dy)
  else:
    first, second = np.array(_rgb(rng, 60, 255)), np.array(_rgb(rng, 0, 200))
    angle, period = rng.uniform(0, np.pi), 2 * r / rng.uniform(2.5, 5)

    def colors(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
      band = np.floor((dx * np.cos(angle) + dy * np.sin(angle)) / period) % 2 == 0
      return np.where(band[..., None], first, second) * shade(dx, dy)
  _paint_disc(image, cx, cy, r, colors)


def _draw_stop_sign(image: np.ndarray, cx: float, cy: float, r: float,
                    rng: np.random.Generator) -> None:
  """A red octagon (circumradius `r`) with a white border and a few white letter strokes."""
  t = np.pi / 8 + rng.uniform(-0.12, 0.12) + 2 * np.pi * np.arange(8) / 8
  octagon = lambda s: np.round(np.stack([cx + s * r * np.cos(t), cy + s * r * np.sin(t)], 1)
                               * 4).astype(np.int32)  # 2 fractional bits (shift=2)
  white = _rgb(rng, 215, 255)
  red = (rng.uniform(160, 235), rng.uniform(5, 50), rng.uniform(15, 60))
  cv2.fillConvexPoly(image, octagon(1.0), white, cv2.LINE_AA, 2)
  cv2.fillConvexPoly(image, octagon(0.85), red, cv2.LINE_AA, 2)
  n = int(rng.integers(2, 5))
  thickness = max(1, int(round(0.09 * r)))
  for j in range(n):
    x = cx + (j - (n - 1) / 2) * 1.0 * r / n
    dx = 0.0 if rng.random() < 0.5 else 0.1 * r
    cv2.line(image, (int(round(x - dx)), int(round(cy - 0.22 * r))),
             (int(round(x + dx)), int(round(cy + 0.22 * r))), white, thickness, cv2.LINE_AA)


def _draw_crowd(image: np.ndarray, cx: float, cy: float, bw: float, bh: float,
                rng: np.random.Generator) -> None:
  """A cluster of 5+ small balls inside the ellipse (cx, cy, bw / 2, bh / 2)."""
  for _ in range(int(rng.integers(5, 11))):
    a, d = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1))
    r = rng.uniform(3, 6.5)
    _draw_ball(image, cx + d * (bw / 2 - r) * np.cos(a), cy + d * (bh / 2 - r) * np.sin(a), r,
               rng)


def _det_distractors(image: np.ndarray, rng: np.random.Generator) -> None:
  """Background things that are not objects: red rectangles, plain rings, thin strokes."""
  h, w = image.shape[:2]
  for _ in range(int(rng.integers(1, 4))):
    x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
    kind = rng.integers(0, 3)
    if kind == 0:
      red = (rng.uniform(150, 235), rng.uniform(5, 60), rng.uniform(10, 70))
      cv2.rectangle(image, (x, y), (x + int(rng.integers(8, 50)), y + int(rng.integers(8, 50))),
                    red, -1, cv2.LINE_AA)
    elif kind == 1:
      cv2.circle(image, (x, y), int(rng.integers(6, 30)), _rgb(rng), int(rng.integers(1, 4)),
                 cv2.LINE_AA)
    else:
      for _ in range(int(rng.integers(1, 4))):
        q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(image, (x, y), q, _rgb(rng), int(rng.integers(1, 3)), cv2.LINE_AA)


def _det_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[dict]]:
  """One image and its annotations (bbox as x1y1x2y2 here, and the visible `mask`): 1-5 people,
  stop signs and balls of 16-170 pixels, partly overlapping or cut by the border, and now and
  then a crowd."""
  image = pose_background(rng, h, w)
  _det_distractors(image, rng)
  plans = []  # (category, centre x, centre y, estimated width, height, size); crowd: size 0
  if rng.random() < 1 / 15:
    bw, bh = rng.uniform(36, 70), rng.uniform(28, 50)
    plans.append((_DET_BALL, rng.uniform(bw / 2, w - bw / 2), rng.uniform(bh / 2, h - bh / 2),
                  bw, bh, 0.0))
  for _ in range(int(rng.integers(1, 6))):
    category = (_DET_PERSON, _DET_STOP, _DET_BALL)[int(rng.choice(3, p=[0.4, 0.3, 0.3]))]
    cap = min(170.0, 0.95 * h if category == _DET_PERSON else 0.9 * min(h, w))
    size = float(np.exp(rng.uniform(np.log(16), np.log(cap))))
    bw, bh = (0.8 * size, size) if category == _DET_PERSON else (size, size)
    for _ in range(10):  # at most 30% cut by a border, at most 35% hidden by another object
      cx = rng.uniform(0.2 * bw, max(0.2 * bw, w - 0.2 * bw))
      cy = rng.uniform(0.2 * bh, max(0.2 * bh, h - 0.2 * bh))
      fits = True
      for _, ox, oy, ow, oh, _ in plans:
        iw = min(cx + bw / 2, ox + ow / 2) - max(cx - bw / 2, ox - ow / 2)
        ih = min(cy + bh / 2, oy + oh / 2) - max(cy - bh / 2, oy - oh / 2)
        if iw > 0 and ih > 0 and iw * ih > 0.35 * min(bw * bh, ow * oh):
          fits = False
          break
      if fits:
        plans.append((category, cx, cy, bw, bh, size))
        break
  annotations = []
  for category, cx, cy, bw, bh, size in plans:
    before = image.copy()
    if size == 0:
      _draw_crowd(image, cx, cy, bw, bh, rng)
    elif category == _DET_PERSON:
      k = pose_keypoints(rng, cx, cy - size / 2, size)
      draw_figure(image, k, size, rng)
    elif category == _DET_STOP:
      _draw_stop_sign(image, cx, cy, size / 2, rng)
    else:
      _draw_ball(image, cx, cy, size / 2, rng)
    changed = np.any(before != image, axis=2)
    box = drawn_box(changed)
    if box is not None:
      for earlier in annotations:  # drawn over: no longer visible there
        earlier['mask'] &= ~changed
      annotations.append({'category_id': category, 'box': box, 'iscrowd': int(size == 0),
                          'mask': changed})
  image = image + rng.normal(0, 6, image.shape)
  image = cv2.GaussianBlur(image, (3, 3), 0)
  return np.clip(image, 0, 255).astype(np.uint8), annotations


def write_det_demo(root: str | os.PathLike, num_train: int = 320, num_val: int = 48,
                   seed: int = 0) -> pathlib.Path:
  """Writes the detection demo in the COCO instances layout under `root` (atomically): splits
  train (image ids 1..) and val (1000001..), half landscape and half portrait images of a few
  sizes, people, stop signs and sports balls with COCO's category ids."""

  def fill(tmp: pathlib.Path) -> None:
    (tmp / 'annotations').mkdir()
    ann_id = 1
    for split, count, offset in (('train', num_train, 0), ('val', num_val, 10**6)):
      (tmp / 'images' / split).mkdir(parents=True)
      (tmp / 'stuffthingmaps' / split).mkdir(parents=True)
      images, annotations = [], []
      for i in range(count):
        rng = np.random.default_rng([seed, 13, offset + i])
        h, w = _DET_SIZES[0] if rng.random() < 0.7 else _DET_SIZES[int(rng.integers(1, 3))]
        if i % 2:
          h, w = w, h
        image_id = offset + i + 1
        image, objects = _det_image(rng, h, w)
        images.append(write_coco_image(tmp / 'images' / split, image_id, image))
        labels = np.full(image.shape[:2], DET_STUFF_LABEL, np.uint8)
        for obj in objects:
          labels[obj['mask']] = obj['category_id'] - 1
        stem = pathlib.Path(images[-1]['file_name']).stem
        cv2.imwrite(str(tmp / 'stuffthingmaps' / split / f'{stem}.png'), labels)
        for obj in objects:
          x1, y1, x2, y2 = obj['box']
          annotations.append({
              'id': ann_id, 'image_id': image_id, 'category_id': obj['category_id'],
              'bbox': [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
              'area': round((x2 - x1) * (y2 - y1), 2), 'iscrowd': obj['iscrowd'],
              'segmentation': encode_rle(obj['mask'])})
          ann_id += 1
      with open(tmp / 'annotations' / f'instances_{split}.json', 'w') as f:
        json.dump({'info': {'description': f'hrnet-jax det demo v{DET_VERSION}'},
                   'images': images, 'annotations': annotations,
                   'categories': list(DET_CATEGORIES)}, f)

  return write_once(root, fill, f'hrnet-jax det demo v{DET_VERSION}')


def det_demo_root() -> pathlib.Path:
  """The detection demo dataset (COCO instances layout), written into the cache on first use."""
  return write_det_demo(cache_dir() / f'demo_det_v{DET_VERSION}')
