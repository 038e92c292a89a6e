"""Embedded demo datasets, generated deterministically on first use in the real on-disk layouts,
so the real readers, pipelines and metrics run on them offline.

Segmentation: synthetic street scenes (sky, buildings, road, sidewalk, trees, cars, people) in
the Cityscapes folder layout with labelId PNGs, so the official labelId -> trainId mapping and
its ignore handling are exercised too.

Pose: stick figures with the 17 COCO keypoints (front-facing, so a person's left is on the
image's right, which horizontal flipping with joint swaps preserves) on cluttered backgrounds,
in the COCO keypoints layout, so pycocotools scores them.

Classification: coloured shapes on cluttered backgrounds, one class per folder (ImageFolder).

Landmarks: synthetic faces with 68 points in the 300W CSV layout.

Detection: people (the pose demo's figures), stop signs and sports balls on cluttered
backgrounds, landscape and portrait, in the COCO instances layout with COCO's category ids.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
from typing import Callable, Sequence

import cv2
import numpy as np

VERSION = 2
POSE_VERSION = 1
# labelIds (Cityscapes) of the classes drawn; 0 ('unlabeled') and 1 ('ego vehicle') stay void.
_SKY, _BUILDING, _ROAD, _SIDEWALK, _VEGETATION, _CAR, _PERSON, _POLE = 23, 11, 7, 8, 21, 26, 24, 17
_EGO = 1
# Mean RGB per class; each scene jitters them, and texture noise is added on top.
_COLORS = {_SKY: (110, 150, 210), _BUILDING: (120, 100, 90), _ROAD: (90, 90, 95),
           _SIDEWALK: (170, 150, 160), _VEGETATION: (60, 120, 50), _CAR: (30, 40, 140),
           _PERSON: (200, 60, 70), _POLE: (160, 160, 150), _EGO: (20, 20, 20)}
_CITIES = ('north', 'south', 'east')


def cache_dir() -> pathlib.Path:
  """`$HRNET_JAX_CACHE` or `~/.cache/hrnet_jax`."""
  return pathlib.Path(os.environ.get('HRNET_JAX_CACHE', pathlib.Path.home() / '.cache' / 'hrnet_jax'))


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


def _write_once(root: str | os.PathLike, fill: Callable[[pathlib.Path], None],
                stamp: str) -> pathlib.Path:
  """Runs `fill(dir)` in a fresh directory beside `root`, then renames it to `root`: readers see
  a finished dataset or none, and of concurrent writers the first rename wins."""
  root = pathlib.Path(root)
  if (root / 'DONE').exists():
    return root
  root.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=root.name + '.', dir=root.parent))
  fill(tmp)
  (tmp / 'DONE').write_text(stamp + '\n')
  try:
    tmp.rename(root)
  except OSError:  # Another process finished first: keep theirs.
    shutil.rmtree(tmp, ignore_errors=True)
  return root


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

  return _write_once(root, fill, f'hrnet-jax demo v{VERSION}')


def seg_demo_root() -> pathlib.Path:
  """The segmentation demo dataset, written into the cache on first use."""
  return write_seg_demo(cache_dir() / f'demo_seg_v{VERSION}')


# --- Pose -------------------------------------------------------------------------------------


def _pose_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
  top, bottom = rng.uniform(30, 230, 3), rng.uniform(30, 230, 3)
  image = np.linspace(0, 1, h)[:, None, None] * (bottom - top) + top
  image = np.broadcast_to(image, (h, w, 3)).copy()
  for _ in range(int(rng.integers(3, 9))):
    color = tuple(float(v) for v in rng.uniform(0, 255, 3))
    x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
    if rng.random() < 0.5:
      cv2.rectangle(image, (x, y), (x + int(rng.integers(10, w // 2)),
                                    y + int(rng.integers(10, h // 2))), color, -1)
    else:
      cv2.ellipse(image, (x, y), (int(rng.integers(5, w // 4)), int(rng.integers(5, h // 4))),
                  float(rng.uniform(0, 180)), 0, 360, color, -1)
  return image


def _pose_keypoints(rng: np.random.Generator, cx: float, top: float, height: float) -> np.ndarray:
  """17 COCO keypoints of a front-facing figure `height` pixels tall (head top to ankles)."""
  u = height
  k = np.zeros((17, 2))
  hip_c = np.array([cx, top + 0.53 * u])
  neck = hip_c + [rng.uniform(-0.05, 0.05) * u, -0.30 * u]
  head = neck + [rng.uniform(-0.02, 0.02) * u, -0.11 * u]
  yaw = rng.uniform(-0.012, 0.012) * u
  k[0] = head + [yaw, 0.015 * u]  # nose
  for side, eye, ear, sho, hip in ((+1, 1, 3, 5, 11), (-1, 2, 4, 6, 12)):  # left is +x
    k[eye] = head + [side * 0.025 * u + yaw, -0.012 * u]
    k[ear] = head + [side * 0.055 * u, 0.0]
    k[sho] = neck + [side * 0.12 * u, 0.02 * u]
    k[hip] = hip_c + [side * 0.08 * u, 0.0]
  for side, sho, elb, wri in ((+1, 5, 7, 9), (-1, 6, 8, 10)):
    a1 = np.deg2rad(rng.uniform(-20, 150))
    a2 = a1 + np.deg2rad(rng.uniform(-10, 120))
    k[elb] = k[sho] + 0.16 * u * np.array([side * np.sin(a1), np.cos(a1)])
    k[wri] = k[elb] + 0.14 * u * np.array([side * np.sin(a2), np.cos(a2)])
  for side, hip, kne, ank in ((+1, 11, 13, 15), (-1, 12, 14, 16)):
    b1 = np.deg2rad(rng.uniform(-10, 45))
    b2 = b1 - np.deg2rad(rng.uniform(0, 60))
    k[kne] = k[hip] + 0.23 * u * np.array([side * np.sin(b1), np.cos(b1)])
    k[ank] = k[kne] + 0.22 * u * np.array([side * np.sin(b2), np.cos(b2)])
  return k


def _draw_figure(image: np.ndarray, k: np.ndarray, height: float,
                 rng: np.random.Generator) -> None:
  u = height
  shirt, pants, shoes = (tuple(float(v) for v in rng.uniform(0, 255, 3)) for _ in range(3))
  skin = tuple(float(v) for v in np.array([224, 172, 140]) * rng.uniform(0.4, 1.1))
  p = lambda i: (int(round(k[i, 0])), int(round(k[i, 1])))
  t = lambda f: max(1, int(round(f * u)))
  line = lambda a, b, color, f: cv2.line(image, p(a), p(b), color, t(f), cv2.LINE_AA)
  for hip, kne, ank in ((11, 13, 15), (12, 14, 16)):
    line(hip, kne, pants, 0.075)
    line(kne, ank, tuple(0.6 * c for c in pants), 0.06)
    cv2.circle(image, p(ank), t(0.035), shoes, -1, cv2.LINE_AA)
  torso = np.round(k[[5, 6, 12, 11]]).astype(np.int32)
  cv2.fillConvexPoly(image, torso, shirt, cv2.LINE_AA)
  line(5, 11, shirt, 0.04), line(6, 12, shirt, 0.04)
  for sho, elb, wri in ((5, 7, 9), (6, 8, 10)):
    line(sho, elb, shirt, 0.06)
    line(elb, wri, skin, 0.045)
    cv2.circle(image, p(wri), t(0.03), tuple(0.85 * c for c in skin), -1, cv2.LINE_AA)
  neck = (k[5] + k[6]) / 2
  cv2.line(image, (int(neck[0]), int(neck[1])), p(0), skin, t(0.05), cv2.LINE_AA)
  for ear in (3, 4):
    cv2.circle(image, p(ear), t(0.022), tuple(0.8 * c for c in skin), -1, cv2.LINE_AA)
  head = (k[3] + k[4]) / 2
  cv2.circle(image, (int(round(head[0])), int(round(head[1]))), t(0.06), skin, -1, cv2.LINE_AA)
  for eye in (1, 2):
    cv2.circle(image, p(eye), t(0.011), (20, 20, 20), -1, cv2.LINE_AA)
  cv2.circle(image, p(0), t(0.012), tuple(0.6 * c for c in skin), -1, cv2.LINE_AA)


def _pose_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[dict]]:
  image = _pose_background(rng, h, w)
  people = []
  for _ in range(1 if rng.random() < 0.65 else 2):
    height = rng.uniform(0.35, 0.9) * h
    cx = rng.uniform(0.1, 0.9) * w
    top = rng.uniform(-0.1 * height, h - 0.9 * height)
    k = _pose_keypoints(rng, cx, top, height)
    _draw_figure(image, k, height, rng)
    people.append({'keypoints': k, 'height': height})
  visible = [np.full(17, 2) for _ in people]
  if rng.random() < 0.3:  # An occluder: joints under it stay labelled but not visible (v=1).
    x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
    x2, y2 = x + int(rng.integers(10, w // 3)), y + int(rng.integers(10, h // 3))
    cv2.rectangle(image, (x, y), (x2, y2), tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
    for person, v in zip(people, visible):
      k = person['keypoints']
      v[(k[:, 0] >= x) & (k[:, 0] <= x2) & (k[:, 1] >= y) & (k[:, 1] <= y2)] = 1
  image = image + rng.normal(0, 6, image.shape)
  image = cv2.GaussianBlur(image, (3, 3), 0)
  annotations = []
  for person, v in zip(people, visible):
    k, u = person['keypoints'], person['height']
    inside = (k[:, 0] >= 0) & (k[:, 0] <= w - 1) & (k[:, 1] >= 0) & (k[:, 1] <= h - 1)
    v = np.where(inside, v, 0)
    if not v.any():
      continue
    x1, y1 = k[:, 0].min() - 0.06 * u, k[:, 1].min() - 0.06 * u
    x2, y2 = k[:, 0].max() + 0.06 * u, k[:, 1].max() + 0.04 * u
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w - 1, x2), min(h - 1, y2)
    kpts = np.concatenate([np.where(v[:, None] > 0, k, 0), v[:, None]], axis=1)
    annotations.append({'bbox': [round(float(x1), 2), round(float(y1), 2),
                                 round(float(x2 - x1), 2), round(float(y2 - y1), 2)],
                        'area': round(float(0.55 * (x2 - x1) * (y2 - y1)), 2),
                        'num_keypoints': int((v > 0).sum()),
                        'keypoints': [round(float(x), 2) for x in kpts.reshape(-1)]})
  return np.clip(image, 0, 255).astype(np.uint8), annotations


def _write_coco_image(folder: pathlib.Path, image_id: int, image: np.ndarray) -> dict:
  """Writes an RGB image as COCO names it (`<12-digit id>.jpg`); returns its `images` record."""
  name = f'{image_id:012d}.jpg'
  cv2.imwrite(str(folder / name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
  return {'id': image_id, 'file_name': name, 'height': image.shape[0], 'width': image.shape[1]}


def write_pose_demo(root: str | os.PathLike, num_train: int = 400, num_val: int = 60,
                    size_hw: tuple[int, int] = (192, 256), seed: int = 0) -> pathlib.Path:
  """Writes the pose demo in the COCO keypoints layout under `root` (atomically)."""
  from hrnet_jax.data.sources.coco import KEYPOINT_NAMES, SKELETON
  category = {'id': 1, 'name': 'person', 'supercategory': 'person',
              'keypoints': list(KEYPOINT_NAMES), 'skeleton': [[a + 1, b + 1] for a, b in SKELETON]}

  def fill(tmp: pathlib.Path) -> None:
    (tmp / 'annotations').mkdir()
    ann_id = 1
    for split, count, offset in (('train', num_train, 0), ('val', num_val, 10**6)):
      (tmp / 'images' / split).mkdir(parents=True)
      images, annotations = [], []
      for i in range(count):
        image_id = offset + i + 1
        image, people = _pose_image(np.random.default_rng([seed, 7, offset + i]), *size_hw)
        images.append(_write_coco_image(tmp / 'images' / split, image_id, image))
        for person in people:
          annotations.append(dict(person, id=ann_id, image_id=image_id, category_id=1,
                                  iscrowd=0))
          ann_id += 1
      with open(tmp / 'annotations' / f'person_keypoints_{split}.json', 'w') as f:
        json.dump({'images': images, 'annotations': annotations, 'categories': [category]}, f)

  return _write_once(root, fill, f'hrnet-jax pose demo v{POSE_VERSION}')


def pose_demo_root() -> pathlib.Path:
  """The pose demo dataset (COCO layout), written into the cache on first use."""
  return write_pose_demo(cache_dir() / f'demo_pose_v{POSE_VERSION}')


# --- Faces ------------------------------------------------------------------------------------

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
  image = _pose_background(rng, size, size)
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

  return _write_once(root, fill, f'hrnet-jax face demo v{FACE_VERSION}')


def face_demo_root() -> pathlib.Path:
  """The face demo dataset (300W layout), written into the cache on first use."""
  return write_face_demo(cache_dir() / f'demo_face_v{FACE_VERSION}')


# --- Classification ---------------------------------------------------------------------------

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

  return _write_once(root, fill, f'hrnet-jax classification demo v{CLS_VERSION}')


def cls_demo_root() -> pathlib.Path:
  """The classification demo dataset (ImageFolder layout), written into the cache on first use."""
  return write_cls_demo(cache_dir() / f'demo_cls_v{CLS_VERSION}')


# --- Detection --------------------------------------------------------------------------------

DET_VERSION = 1
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


def _drawn_box(before: np.ndarray, after: np.ndarray) -> list[float] | None:
  """[x1, y1, x2, y2] of the pixels that drawing changed (tight, inside the image)."""
  changed = np.any(before != after, axis=2)
  ys, xs = np.nonzero(changed)
  if len(xs) == 0:
    return None
  return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _det_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, list[dict]]:
  """One image and its annotations (bbox as x1y1x2y2 here): 1-5 people, stop signs and balls
  of 16-170 pixels, partly overlapping or cut by the border, and now and then a crowd."""
  image = _pose_background(rng, h, w)
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
      k = _pose_keypoints(rng, cx, cy - size / 2, size)
      _draw_figure(image, k, size, rng)
    elif category == _DET_STOP:
      _draw_stop_sign(image, cx, cy, size / 2, rng)
    else:
      _draw_ball(image, cx, cy, size / 2, rng)
    box = _drawn_box(before, image)
    if box is not None:
      annotations.append({'category_id': category, 'box': box, 'iscrowd': int(size == 0)})
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
      images, annotations = [], []
      for i in range(count):
        rng = np.random.default_rng([seed, 13, offset + i])
        h, w = _DET_SIZES[0] if rng.random() < 0.7 else _DET_SIZES[int(rng.integers(1, 3))]
        if i % 2:
          h, w = w, h
        image_id = offset + i + 1
        image, objects = _det_image(rng, h, w)
        images.append(_write_coco_image(tmp / 'images' / split, image_id, image))
        for obj in objects:
          x1, y1, x2, y2 = obj['box']
          annotations.append({
              'id': ann_id, 'image_id': image_id, 'category_id': obj['category_id'],
              'bbox': [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
              'area': round((x2 - x1) * (y2 - y1), 2), 'iscrowd': obj['iscrowd'],
              'segmentation': [[x1, y1, x2, y1, x2, y2, x1, y2]]})
          ann_id += 1
      with open(tmp / 'annotations' / f'instances_{split}.json', 'w') as f:
        json.dump({'info': {'description': f'hrnet-jax det demo v{DET_VERSION}'},
                   'images': images, 'annotations': annotations,
                   'categories': list(DET_CATEGORIES)}, f)

  return _write_once(root, fill, f'hrnet-jax det demo v{DET_VERSION}')


def det_demo_root() -> pathlib.Path:
  """The detection demo dataset (COCO instances layout), written into the cache on first use."""
  return write_det_demo(cache_dir() / f'demo_det_v{DET_VERSION}')


# --- Where a config's data lives ------------------------------------------------------------------

DEMO_ROOTS: dict[str, Callable[[], pathlib.Path]] = {
    'cityscapes_demo': seg_demo_root, 'coco_demo': pose_demo_root, 'face_demo': face_demo_root,
    'imagenet_demo': cls_demo_root, 'det_demo': det_demo_root}


def dataset_root(data_config, what: str = 'dataset') -> str:
  """`config.data.root`, or the embedded demo's (generated on first use) for a demo name; an
  empty root for any other dataset is an error saying which key to set."""
  if data_config.root:
    return str(data_config.root)
  if data_config.name in DEMO_ROOTS:
    return str(DEMO_ROOTS[data_config.name]())
  raise ValueError(f'config.data.root is empty: set --config.data.root=PATH to the '
                   f'{data_config.name} {what}')
