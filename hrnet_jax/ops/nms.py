"""Non-maximum suppression under fixed shapes: a mask of survivors instead of a list of indices.
A box is suppressed when a better surviving box overlaps it with IoU > the threshold (mmcv's
and torchvision's rule; `legacy`: IoU of inclusive boxes, widths x2 - x1 + 1, as mmdetection v1's
GPU kernel)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hrnet_jax.ops.boxes import box_iou
from hrnet_jax.ops.top_k import top_k

Array = jax.Array


def greedy_nms(boxes: Array, valid: Array, iou_threshold: float, legacy: bool = False) -> Array:
  """Greedy NMS of (..., N, 4) boxes sorted by score, best first; `valid` (..., N) marks real
  ones. Returns the survivors' mask (..., N). Leading axes are independent sets (images)."""
  iou = box_iou(boxes, boxes, legacy)
  n = boxes.shape[-2]
  later = jnp.arange(n)[None, :] > jnp.arange(n)[:, None]
  suppresses = (iou > iou_threshold) & later

  # The matrix travels in the carry (the ONNX converter takes no closures); rows are sliced, not
  # gathered (a gather of booleans becomes an ONNX Where that onnxruntime lacks).
  def body(i, carry):
    keep, matrix = carry
    row = jax.lax.dynamic_index_in_dim(matrix, i, axis=matrix.ndim - 2, keepdims=False)
    this = jax.lax.dynamic_index_in_dim(keep, i, axis=keep.ndim - 1, keepdims=True)
    return keep & ~(this & row), matrix

  return jax.lax.fori_loop(0, n, body, (valid, suppresses))[0]


def class_wise_nms(boxes: Array, labels: Array, valid: Array, iou_threshold: float,
                   span: Array | None = None, legacy: bool = False) -> Array:
  """NMS within each class (torchvision's batched_nms), as one NMS: each class's boxes are
  shifted past every other class's (by `span` + 1 per class id; `span`: the largest coordinate,
  of `boxes` by default, one per set of leading axes), so boxes of different classes never
  overlap (a gap of at least one pixel: legacy boxes of neighbouring classes do not touch
  either). Boxes (..., N, 4) sorted by score, best first."""
  span = jnp.max(boxes, axis=(-2, -1)) if span is None else jnp.asarray(span)
  offset = (span[..., None] + 1.0) * labels.astype(boxes.dtype)
  return greedy_nms(boxes + offset[..., None], valid, iou_threshold, legacy)


def multiclass_nms(boxes: Array, scores: Array, candidate: Array, iou_threshold: float,
                   max_per_img: int = 100, max_pairs: int = 2000,
                   span: Array | None = None, legacy: bool = False) -> dict[str, Array]:
  """mmdetection's multiclass_nms under fixed shapes: every (box, class) pair marked in
  `candidate` (..., N, K) is a detection scored `scores` (..., N, K); class-wise NMS; the
  `max_per_img` best. `boxes` are (..., N, 4) shared by the classes or (..., N, K, 4) per class;
  `span` (the class offset of class_wise_nms) is the largest coordinate of the candidates by
  default (mmcv's). Leading axes are images, computed together (no vmap: the ONNX converter's
  batching rules fail on this JAX).

  The best `max_pairs` candidates go through NMS. Every one of them gets the same verdict as
  with all candidates (only better boxes can suppress a box), so the result is the protocol's
  whenever there are at most `max_pairs` candidates or at least `max_per_img` survivors:
  `exact` says whether that holds.

  Returns boxes (..., max_per_img, 4), scores, labels (-1 in empty slots), valid, exact (...)."""
  lead, (n, num_classes) = scores.shape[:-2], scores.shape[-2:]
  per_class = boxes.ndim == scores.ndim + 1
  flat = jnp.where(candidate, scores, -jnp.inf).reshape(lead + (n * num_classes,))
  k = min(max_pairs, flat.shape[-1])
  top_scores, top = top_k(flat, k)
  top_valid = top_scores > -jnp.inf
  top_labels = (top % num_classes).astype(jnp.int32)
  if per_class:
    pairs = boxes.reshape(lead + (n * num_classes, 4))
    top_boxes = jnp.take_along_axis(pairs, top[..., None], axis=-2)
  else:
    top_boxes = jnp.take_along_axis(boxes, (top // num_classes)[..., None], axis=-2)
  if span is None:
    used = candidate if per_class else jnp.any(candidate, axis=-1)
    span = jnp.max(jnp.where(used[..., None], boxes, 0.0),
                   axis=tuple(range(len(lead), boxes.ndim)))
  keep = class_wise_nms(top_boxes, top_labels, top_valid, iou_threshold, span=span,
                        legacy=legacy)
  m = min(max_per_img, k)
  order = jnp.argsort(~keep, axis=-1, stable=True)[..., :m]  # survivors first, still by score
  pad = max_per_img - m

  def take(v, fill):
    got = jnp.take_along_axis(v, order.reshape(order.shape + (1,) * (v.ndim - order.ndim)),
                              axis=len(lead))
    widths = [(0, 0)] * v.ndim
    widths[len(lead)] = (0, pad)
    return jnp.pad(got, widths, constant_values=fill)

  valid = take(keep.astype(jnp.int32), 0) > 0  # integers: see greedy_nms
  return {'boxes': jnp.where(valid[..., None], take(top_boxes, 0.0), 0.0),
          'scores': jnp.where(valid, take(top_scores, 0.0), 0.0),
          'labels': jnp.where(valid, take(top_labels, 0), -1),
          'valid': valid,
          'exact': (jnp.sum(candidate, axis=(-2, -1)) <= k)
                   | (jnp.sum(keep, axis=-1) >= max_per_img)}
