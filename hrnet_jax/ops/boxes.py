"""Box geometry: IoU of all pairs (torchvision.ops.box_iou), IoU/GIoU of aligned pairs, boxes
from a point's distances to their sides (mmdetection's distance2bbox), and the delta coder of
anchor and R-CNN regression (mmdetection's DeltaXYWHBBoxCoder).

`legacy` (IoU, coder, clipping): mmdetection v1's pixel arithmetic, that of the
HRNet-Object-Detection releases: a box covers x1..x2 inclusive, so its width is x2 - x1 + 1, and
boxes are clipped to [0, width - 1] x [0, height - 1]."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
EPS = 1e-6  # floor of unions and enclosures: empty boxes give IoU 0, not NaN


def area(boxes: Array, legacy: bool = False) -> Array:
  one = 1.0 if legacy else 0.0
  return (boxes[..., 2] - boxes[..., 0] + one) * (boxes[..., 3] - boxes[..., 1] + one)


def box_iou(a: Array, b: Array, legacy: bool = False) -> Array:
  """(..., N, M) IoU of every box of `a` (..., N, 4) with every box of `b` (..., M, 4)."""
  lt = jnp.maximum(a[..., :, None, :2], b[..., None, :, :2])
  rb = jnp.minimum(a[..., :, None, 2:], b[..., None, :, 2:])
  wh = jnp.maximum(rb - lt + (1.0 if legacy else 0.0), 0.0)
  inter = wh[..., 0] * wh[..., 1]
  union = area(a, legacy)[..., :, None] + area(b, legacy)[..., None, :] - inter
  return inter / jnp.maximum(union, EPS)


def aligned_iou(a: Array, b: Array, giou: bool = False) -> Array:
  """IoU (or generalized IoU) of the pairs a[i], b[i] (shapes (..., 4))."""
  wh = jnp.clip(jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2]), 0)
  overlap = wh[..., 0] * wh[..., 1]
  union = jnp.maximum(area(a) + area(b) - overlap, EPS)
  iou = overlap / union
  if not giou:
    return iou
  ewh = jnp.clip(jnp.maximum(a[..., 2:], b[..., 2:]) - jnp.minimum(a[..., :2], b[..., :2]), 0)
  enclose = jnp.maximum(ewh[..., 0] * ewh[..., 1], EPS)
  return iou - (enclose - union) / enclose


def distance_boxes(points: Array, distances: Array) -> Array:
  """Points (..., 2) (x, y) and their distances (..., 4) to the left, top, right and bottom
  sides -> boxes (..., 4)."""
  return jnp.concatenate([points - distances[..., :2], points + distances[..., 2:]], axis=-1)


# --- The delta coder (mmdetection's DeltaXYWHBBoxCoder) -------------------------------------

WH_RATIO_CLIP = 16 / 1000  # largest change of log width / height: |log(16 / 1000)| = 4.135


def encode_deltas(boxes: Array, targets: Array, means: Sequence[float] = (0., 0., 0., 0.),
                  stds: Sequence[float] = (1., 1., 1., 1.), legacy: bool = False) -> Array:
  """Deltas (..., 4) taking `boxes` to `targets` (both (..., 4)): ((gx - px) / pw,
  (gy - py) / ph, log(gw / pw), log(gh / ph)), normalized by `means` and `stds`."""
  one = 1.0 if legacy else 0.0
  pw, ph = boxes[..., 2] - boxes[..., 0] + one, boxes[..., 3] - boxes[..., 1] + one
  px, py = (boxes[..., 0] + boxes[..., 2]) * 0.5, (boxes[..., 1] + boxes[..., 3]) * 0.5
  gw, gh = targets[..., 2] - targets[..., 0] + one, targets[..., 3] - targets[..., 1] + one
  gx, gy = (targets[..., 0] + targets[..., 2]) * 0.5, (targets[..., 1] + targets[..., 3]) * 0.5
  deltas = jnp.stack([(gx - px) / pw, (gy - py) / ph, jnp.log(gw / pw), jnp.log(gh / ph)], -1)
  return (deltas - jnp.asarray(means, deltas.dtype)) / jnp.asarray(stds, deltas.dtype)


def decode_deltas(boxes: Array, deltas: Array, means: Sequence[float] = (0., 0., 0., 0.),
                  stds: Sequence[float] = (1., 1., 1., 1.), max_hw: Array | None = None,
                  wh_ratio_clip: float = WH_RATIO_CLIP, legacy: bool = False) -> Array:
  """`boxes` (..., 4) moved by `deltas` (..., 4) (the inverse of encode_deltas), the log-size
  changes clamped to |log(wh_ratio_clip)|; with `max_hw` (height, width) the result is clipped
  to [0, width] x [0, height] (the unpadded image)."""
  d = deltas * jnp.asarray(stds, deltas.dtype) + jnp.asarray(means, deltas.dtype)
  limit = abs(math.log(wh_ratio_clip))
  one = 1.0 if legacy else 0.0
  pw, ph = boxes[..., 2] - boxes[..., 0] + one, boxes[..., 3] - boxes[..., 1] + one
  px, py = (boxes[..., 0] + boxes[..., 2]) * 0.5, (boxes[..., 1] + boxes[..., 3]) * 0.5
  # minimum/maximum rather than jnp.clip: the ONNX converter's clip fails under vmap.
  gw = pw * jnp.exp(jnp.minimum(jnp.maximum(d[..., 2], -limit), limit))
  gh = ph * jnp.exp(jnp.minimum(jnp.maximum(d[..., 3], -limit), limit))
  gx, gy = px + pw * d[..., 0], py + ph * d[..., 1]
  half = 0.5 * one  # legacy: the inclusive corners of a box of width gw
  out = jnp.stack([gx - gw * 0.5 + half, gy - gh * 0.5 + half, gx + gw * 0.5 - half,
                   gy + gh * 0.5 - half], -1)
  return out if max_hw is None else clip_boxes(out, max_hw, legacy)


def clip_boxes(boxes: Array, max_hw: Array, legacy: bool = False) -> Array:
  """Boxes (..., 4) clipped to [0, width] x [0, height] (legacy: [0, width - 1] x
  [0, height - 1]); `max_hw` (2,) or broadcastable (..., 2)."""
  hw = jnp.asarray(max_hw, boxes.dtype) - (1.0 if legacy else 0.0)
  limit = jnp.stack([hw[..., 1], hw[..., 0], hw[..., 1], hw[..., 0]], -1)
  return jnp.minimum(jnp.maximum(boxes, 0.0), limit)
