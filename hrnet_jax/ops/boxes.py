"""Box geometry: IoU of all pairs (torchvision.ops.box_iou), IoU/GIoU of aligned pairs, and
boxes from a point's distances to their sides (mmdetection's distance2bbox)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
EPS = 1e-6  # floor of unions and enclosures: empty boxes give IoU 0, not NaN


def area(boxes: Array) -> Array:
  return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(a: Array, b: Array) -> Array:
  """(N, M) IoU of every box of `a` (N, 4) with every box of `b` (M, 4)."""
  lt = jnp.maximum(a[:, None, :2], b[None, :, :2])
  rb = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
  wh = jnp.clip(rb - lt, 0)
  inter = wh[..., 0] * wh[..., 1]
  return inter / jnp.maximum(area(a)[:, None] + area(b)[None, :] - inter, EPS)


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
