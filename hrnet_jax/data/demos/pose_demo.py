"""The pose demo: stick figures with the 17 COCO keypoints (front-facing, so a person's left is
on the image's right, which horizontal flipping with joint swaps preserves) on cluttered
backgrounds, in the COCO keypoints layout, so pycocotools scores them. The detection demo
draws its people with the same figures."""

from __future__ import annotations

import json
import os
import pathlib

import cv2
import numpy as np

from hrnet_jax.data.demos.store import cache_dir, write_coco_image, write_once

POSE_VERSION = 1




def pose_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
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


def pose_keypoints(rng: np.random.Generator, cx: float, top: float, height: float) -> np.ndarray:
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


def drawn_box(changed: np.ndarray) -> list[float] | None:
  """[x1, y1, x2, y2] of the pixels that drawing changed (tight, inside the image)."""
  ys, xs = np.nonzero(changed)
  if len(xs) == 0:
    return None
  return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def draw_figure(image: np.ndarray, k: np.ndarray, height: float,
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
  image = pose_background(rng, h, w)
  people = []
  for _ in range(1 if rng.random() < 0.65 else 2):
    height = rng.uniform(0.35, 0.9) * h
    cx = rng.uniform(0.1, 0.9) * w
    top = rng.uniform(-0.1 * height, h - 0.9 * height)
    k = pose_keypoints(rng, cx, top, height)
    draw_figure(image, k, height, rng)
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
        images.append(write_coco_image(tmp / 'images' / split, image_id, image))
        for person in people:
          annotations.append(dict(person, id=ann_id, image_id=image_id, category_id=1,
                                  iscrowd=0))
          ann_id += 1
      with open(tmp / 'annotations' / f'person_keypoints_{split}.json', 'w') as f:
        json.dump({'images': images, 'annotations': annotations, 'categories': [category]}, f)

  return write_once(root, fill, f'hrnet-jax pose demo v{POSE_VERSION}')


def pose_demo_root() -> pathlib.Path:
  """The pose demo dataset (COCO layout), written into the cache on first use."""
  return write_pose_demo(cache_dir() / f'demo_pose_v{POSE_VERSION}')
