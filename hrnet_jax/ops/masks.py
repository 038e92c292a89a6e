"""Instance masks as mmdetection v2 makes and reads them: the R-CNN mask head's training targets
(ground-truth masks cut out by the sampled boxes and resized, in jit), and its 28x28 outputs
pasted back onto the image (on the host, numpy) and encoded as COCO RLE.

`mask_targets`: mmdetection's mask_target: each box clipped to the (padded) mask, the binary
mask RoIAligned to size x size (aligned, adaptive sampling), then `>= 0.5`.

`paste_masks`: mmdetection's _do_paste_mask: image pixel (i, j) reads the mask at the position
of its centre in the box, ((j + 0.5 - x1) / (x2 - x1)) * m - 0.5 mask pixels (grid_sample with
align_corners=False), bilinearly, taps outside the mask counting zero; a box of zero width reads
position 0 (the mask's centre line, across the whole image). Only a window one pixel beyond the
box is computed: further out every tap is outside.
Bilinear sampling is separable, so each window is (rows x m) @ mask @ (m x cols).

`paste_masks(..., legacy=True)`: mmdetection v1's get_seg_masks (the HRNet-Object-Detection and
v1.0 releases): the box's corners truncated to integers, the mask resized (OpenCV bilinear, the
release's own call) to the inclusive box, x2 - x1 + 1 by y2 - y1 + 1 pixels (at least 1),
`> 0.5`, written at (x1, y1); what would fall past the image is cut off (v1 would fail there).
"""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.ops.roi_align import roi_align

Array = jax.Array


def mask_targets(masks: Array, boxes: Array, index: Array, size: int) -> Array:
  """(R, size, size) float 0/1 targets: box r (R, 4), in mask pixels, cut from mask `index[r]`
  of `masks` (N, H, W), any dtype (uint8 keeps the gather small)."""
  h, w = masks.shape[1:]
  limit = jnp.asarray([w, h, w, h], jnp.float32)
  boxes = jnp.clip(boxes.astype(jnp.float32), 0.0, limit)
  rows = jnp.concatenate([index.astype(jnp.float32)[:, None], boxes], axis=1)
  pooled = roi_align(masks[..., None], rows, size, 1.0, sampling_ratio=0, aligned=True)
  return (pooled[..., 0] >= 0.5).astype(jnp.float32)


def _bilinear_matrix(centres: np.ndarray, start: np.float32, end: np.float32,
                     m: int) -> np.ndarray:
  """(len(centres), m): the weights of the mask's pixels for the image pixels at `centres`,
  grid_sample's arithmetic in float32 (normalized grid, then unnormalized, align_corners=False)."""
  with np.errstate(divide='ignore', invalid='ignore'):
    grid = (centres - start) / (end - start) * np.float32(2) - np.float32(1)
  grid = np.where(np.isinf(grid), np.float32(0), grid)  # a zero-width box: its centre
  pos = ((grid + np.float32(1)) * np.float32(m) - np.float32(1)) / np.float32(2)
  low = np.floor(pos)
  frac = pos - low
  out = np.zeros((len(centres), m), np.float32)
  for tap, weight in ((low, np.float32(1) - frac), (low + 1, frac)):
    ok = np.isfinite(tap) & (tap >= 0) & (tap <= m - 1)
    rows = np.nonzero(ok)[0]
    out[rows, tap[ok].astype(np.int64)] += weight[ok]
  return out


def _window(start: np.float32, end: np.float32, size: int) -> tuple[int, int]:
  """The pixels a box side can paint: one beyond its ends; all of them when it has zero width
  (every pixel then reads the mask's centre line, as the whole-image paste does)."""
  if end == start:
    return 0, size
  return int(max(np.floor(min(start, end)) - 1, 0)), int(min(np.ceil(max(start, end)) + 1, size))


def _paste_legacy(masks: np.ndarray, boxes: np.ndarray, out: np.ndarray,
                  threshold: float | None) -> np.ndarray:
  """mmdetection v1's paste (module docstring) into `out` (N, H, W)."""
  height, width = out.shape[1:]
  for i, box in enumerate(boxes):
    x1, y1, x2, y2 = (int(v) for v in box.astype(np.int32))
    w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    resized = cv2.resize(masks[i], (w, h), interpolation=cv2.INTER_LINEAR)
    c0, r0 = max(x1, 0), max(y1, 0)
    c1, r1 = min(x1 + w, width), min(y1 + h, height)
    if c1 <= c0 or r1 <= r0:
      continue
    window = resized[r0 - y1:r1 - y1, c0 - x1:c1 - x1]
    out[i, r0:r1, c0:c1] = window if threshold is None else window > threshold
  return out


def paste_masks(masks: np.ndarray, boxes: np.ndarray, height: int, width: int,
                threshold: float | None = 0.5, legacy: bool = False) -> np.ndarray:
  """(N, height, width) masks of an image: each (m, m) mask probability map of `masks` pasted
  into its box (N, 4) x1y1x2y2 in image pixels; bool `>= threshold` (legacy: `> threshold`),
  or the float32 probabilities when `threshold` is None."""
  masks = np.asarray(masks, np.float32)
  boxes = np.asarray(boxes, np.float32)
  n, mh, mw = masks.shape
  out = np.zeros((n, height, width), np.float32 if threshold is None else bool)
  if legacy:
    return _paste_legacy(masks, boxes, out, threshold)
  for i in range(n):
    x1, y1, x2, y2 = boxes[i]
    c0, c1 = _window(x1, x2, width)
    r0, r1 = _window(y1, y2, height)
    if c1 <= c0 or r1 <= r0:
      continue
    cols = np.arange(c0, c1, dtype=np.float32) + np.float32(0.5)
    rows = np.arange(r0, r1, dtype=np.float32) + np.float32(0.5)
    window = (_bilinear_matrix(rows, y1, y2, mh) @ masks[i]) @ _bilinear_matrix(
        cols, x1, x2, mw).T
    out[i, r0:r1, c0:c1] = window if threshold is None else window >= threshold
  return out


def encode_rle(mask: np.ndarray) -> dict:
  """A binary (H, W) mask as COCO's compressed RLE, {'size': [H, W], 'counts': str} (JSON-ready,
  what pycocotools' loadRes and COCOeval read)."""
  from pycocotools import mask as mask_utils
  rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, np.uint8)))
  return {'size': [int(s) for s in rle['size']], 'counts': rle['counts'].decode('ascii')}
