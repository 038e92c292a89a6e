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


def multiclass_nms(boxes: Array, scores: Array, candidate: Array, iou_threshold: float,
                   max_per_img: int = 100, max_pairs: int = 2000,
                   span: Array | None = None) -> dict[str, Array]:
  """mmdetection's multiclass_nms under fixed shapes: every (box, class) pair marked in
  `candidate` (N, K) is a detection scored `scores` (N, K); class-wise NMS; the `max_per_img`
  best. `boxes` are (N, 4) shared by the classes or (N, K, 4) per class; `span` (the class
  offset of class_wise_nms) is the largest coordinate of the candidates by default (mmcv's).

  The best `max_pairs` candidates go through NMS. Every one of them gets the same verdict as
  with all candidates (only better boxes can suppress a box), so the result is the protocol's
  whenever there are at most `max_pairs` candidates or at least `max_per_img` survivors:
  `exact` says whether that holds.

  Returns boxes (max_per_img, 4), scores, labels (-1 in empty slots), valid, exact."""
  num_classes = scores.shape[1]
  flat = jnp.where(candidate, scores, -jnp.inf).reshape(-1)
  k = min(max_pairs, flat.shape[0])
  top_scores, top = jax.lax.top_k(flat, k)
  top_valid = top_scores > -jnp.inf
  top_labels = (top % num_classes).astype(jnp.int32)
  top_boxes = (boxes[top // num_classes] if boxes.ndim == 2
               else boxes.reshape(-1, 4)[top])
  if span is None:
    used = candidate if boxes.ndim == 3 else jnp.any(candidate, axis=1)
    span = jnp.max(jnp.where(used[..., None], boxes, 0.0))
  keep = class_wise_nms(top_boxes, top_labels, top_valid, iou_threshold, span=span)
  order = jnp.argsort(~keep, stable=True)[:max_per_img]  # survivors first, still by score
  m = min(max_per_img, k)
  pad = max_per_img - m
  take = lambda v, fill: jnp.concatenate([v[order[:m]], jnp.full((pad,) + v.shape[1:], fill,
                                                                  v.dtype)])
  valid = take(keep, False)
  return {'boxes': jnp.where(valid[:, None], take(top_boxes, 0.0), 0.0),
          'scores': jnp.where(valid, take(top_scores, 0.0), 0.0),
          'labels': jnp.where(valid, take(top_labels, 0), -1),
          'valid': valid,
          'exact': (jnp.sum(candidate) <= k) | (jnp.sum(keep) >= max_per_img)}
