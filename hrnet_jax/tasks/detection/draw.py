"""Pictures of detections for predict.py: boxes with 'class score' labels, and instance masks
as translucent colours, one per instance."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from hrnet_jax.visualize import color_of


def draw_detections(image: np.ndarray, detections: Sequence[dict],
                    color: tuple[int, int, int] | None = None) -> np.ndarray:
  """Boxes with 'class score' labels over a copy of the image; a detection with a
  `segmentation` (COCO RLE over the image) also gets its mask blended in at half opacity, in a
  colour of its own (its box and label too)."""
  picture = np.ascontiguousarray(image, np.uint8).copy()
  scale = max(0.35, max(image.shape[:2]) / 1200)
  instance_colors = {}
  for i, d in enumerate(detections):
    if 'segmentation' in d:
      rle = dict(d['segmentation'], counts=d['segmentation']['counts'].encode('ascii'))
      on = mask_utils.decode(rle).astype(bool)
      instance_colors[i] = color or color_of(1000 + i)
      picture[on] = (0.5 * picture[on] + 0.5 * np.asarray(instance_colors[i])).astype(np.uint8)
  for i, d in enumerate(detections):
    x, y, w, h = d['box']
    c = instance_colors.get(i) or color or color_of(int(d['class_id']))
    p1, p2 = (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h)))
    cv2.rectangle(picture, p1, p2, c, max(1, int(round(2 * scale))))
    text = f'{d["class"]} {d["score"]:.2f}'
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = max(0, p1[1] - th - 4)
    cv2.rectangle(picture, (p1[0], top), (p1[0] + tw + 2, top + th + 4), c, -1)
    cv2.putText(picture, text, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
  return picture

