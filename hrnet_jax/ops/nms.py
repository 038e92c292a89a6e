"""Non-maximum suppression under fixed shapes: a mask of survivors instead of a list of indices.
A box is suppressed when a better surviving box overlaps it with IoU > the threshold (mmcv's
and torchvision's rule)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hrnet_jax.ops.boxes import box_iou

Array = jax.Array


def greedy_nms(boxes: Array, valid: Array, iou_threshold: float) -> Array:
  """Greedy NMS of (N, 4) boxes sorted by score, best first; `valid` (N,) marks real ones.
  Returns the survivors' mask."""
  iou = box_iou(boxes, boxes)
  n = boxes.shape[0]
  later = jnp.arange(n)[None, :] > jnp.arange(n)[:, None]
  suppresses = (iou > iou_threshold) & later

  def body(i, keep):
    return keep & ~(keep[i] & suppresses[i])

  return jax.lax.fori_loop(0, n, body, valid)


def class_wise_nms(boxes: Array, labels: Array, valid: Array, iou_threshold: float,
                   span: Array | None = None) -> Array:
  """NMS within each class (torchvision's batched_nms), as one NMS: each class's boxes are
  shifted past every other class's (by `span` + 1 per class id; `span`: the largest coordinate,
  of `boxes` by default), so boxes of different classes never overlap. Boxes sorted by score,
  best first."""
  span = jnp.max(boxes) if span is None else span
  offset = (span + 1.0) * labels.astype(boxes.dtype)
  return greedy_nms(boxes + offset[:, None], valid, iou_threshold)
