"""Training-target assignment of two-stage detectors with fixed shapes: mmdetection's
MaxIoUAssigner and RandomSampler. Ground truth arrives padded with a validity mask; candidates
(anchors, proposals) may be masked too (anchors over the padding, empty proposal slots)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hrnet_jax.ops.boxes import box_iou

Array = jax.Array


def max_iou_assign(boxes: Array, box_valid: Array, gt_boxes: Array, gt_valid: Array,
                   pos_iou: float, neg_iou: float, min_pos_iou: float,
                   match_low_quality: bool = True) -> tuple[Array, Array]:
  """Each candidate box (N, 4) -> (assigned (N,), max IoU (N,)): assigned is the index of its
  ground-truth box (M, 4) + 1, 0 for background, -1 for ignored (IoU between neg_iou and
  pos_iou, or an invalid candidate).

  mmdetection's rule: background below `neg_iou`, the best box at or above `pos_iou`; with
  `match_low_quality`, every candidate whose IoU with a box equals that box's best IoU (ties
  included) goes to that box when the best is at least `min_pos_iou`, later boxes winning."""
  iou = jnp.where(gt_valid[:, None] & box_valid[None, :], box_iou(gt_boxes, boxes), -1.0)
  best = jnp.max(iou, axis=0, initial=-1.0)
  best_gt = jnp.argmax(iou, axis=0)
  assigned = jnp.where((best >= 0) & (best < neg_iou), 0, -1)
  assigned = jnp.where(best >= pos_iou, best_gt + 1, assigned)
  if match_low_quality:
    gt_best = jnp.max(iou, axis=1, initial=-1.0)
    ties = (iou == gt_best[:, None]) & (gt_best >= min_pos_iou)[:, None] & gt_valid[:, None]
    m = ties.shape[0]
    last = m - 1 - jnp.argmax(ties[::-1], axis=0)  # the last box whose best this candidate is
    assigned = jnp.where(jnp.any(ties, axis=0), last + 1, assigned)
  no_gt = ~jnp.any(gt_valid)
  assigned = jnp.where(no_gt, 0, assigned)  # no ground truth: everything is background
  assigned = jnp.where(box_valid, assigned, -1)
  return assigned.astype(jnp.int32), jnp.where(no_gt, 0.0, jnp.maximum(best, 0.0))


def random_sample(key: Array, assigned: Array, num: int,
                  pos_fraction: float) -> tuple[Array, Array]:
  """mmdetection's RandomSampler with fixed shapes: up to int(num * pos_fraction) positives
  (assigned > 0) drawn uniformly without replacement, negatives (assigned == 0) filling the rest
  of `num`. Returns (indices (num,), kind (num,)): kind 1 positive, 0 negative, -1 an empty slot
  (too few candidates); positives come first."""
  n = assigned.shape[0]
  if n < num:
    raise ValueError(f'random_sample: {n} candidates for {num} samples')
  pos_key, neg_key = jax.random.split(key)
  pos, neg = assigned > 0, assigned == 0
  num_pos = jnp.minimum(jnp.sum(pos), int(num * pos_fraction))
  num_neg = jnp.minimum(jnp.sum(neg), num - num_pos)
  # Random priorities, the wanted kind first: the top entries are a uniform draw of that kind.
  _, pos_idx = jax.lax.top_k(jnp.where(pos, jax.random.uniform(pos_key, (n,)), -1.0), num)
  _, neg_idx = jax.lax.top_k(jnp.where(neg, jax.random.uniform(neg_key, (n,)), -1.0), num)
  slot = jnp.arange(num)
  take_neg = jnp.clip(slot - num_pos, 0, num - 1)
  indices = jnp.where(slot < num_pos, pos_idx, neg_idx[take_neg])
  kind = jnp.where(slot < num_pos, 1, jnp.where(slot < num_pos + num_neg, 0, -1))
  return indices.astype(jnp.int32), kind.astype(jnp.int32)
