"""FCOS on HRNetV2p (the `fcos_*` archs), the task and its math in jit with fixed shapes: the
points of the pyramid, training targets, the losses, and decoding to boxes with class-wise NMS.
Follows mmdetection v2's FCOSHead, which trained the released FCOS-HRNetV2p checkpoints (boxes
x1y1x2y2 in input pixels, no +1 in widths), and its test protocol.

Ground truth arrives padded to a fixed count per image with a `valid` mask, so one program
serves every image of a bucket.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.errors import ConfigError
from hrnet_jax.models import zoo
from hrnet_jax.ops import aligned_iou, distance_boxes, multiclass_nms, top_k
from hrnet_jax.tasks.base import at_least_float32
from hrnet_jax.tasks.detection.task import DetectionTask

Array = jax.Array
INF = 1e8
# Per level (strides 8..128): the range of max(l, t, r, b) a point of that level regresses.
REGRESS_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, INF))
EPS = 1e-6


# --- Points -----------------------------------------------------------------------------------


def level_strides(neck_stride: int, num_levels: int) -> tuple[int, ...]:
  """The HRNetV2p pyramid's strides: 4 * neck_stride, doubling per level (8..128 at 2)."""
  return tuple(4 * neck_stride * 2**i for i in range(num_levels))


def points(shapes: Sequence[tuple[int, int]], strides: Sequence[int]) -> np.ndarray:
  """(P, 2) (x, y) input-pixel centres of every feature map position, level after level, rows
  first: position (i, j) of a level of stride s lies at (s * j + s // 2, s * i + s // 2)."""
  out = []
  for (h, w), s in zip(shapes, strides):
    ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing='ij')
    out.append(np.stack([xs.reshape(-1) * s + s // 2, ys.reshape(-1) * s + s // 2], -1))
  return np.concatenate(out).astype(np.float32)


def per_point(shapes: Sequence[tuple[int, int]], values: Sequence) -> np.ndarray:
  """A per-level value repeated for every point of that level, in `points` order."""
  return np.concatenate([np.repeat(np.asarray(v, np.float32)[None], h * w, axis=0)
                         for (h, w), v in zip(shapes, values)])


def flatten_levels(maps: Sequence[Array]) -> Array:
  """Per-level (B, H, W, C) maps -> (B, P, C), in `points` order."""
  return jnp.concatenate([m.reshape(m.shape[0], -1, m.shape[-1]) for m in maps], axis=1)


# --- Targets ----------------------------------------------------------------------------------


def targets(pts: Array, ranges: Array, radii: Array, boxes: Array, labels: Array, valid: Array,
            num_classes: int, center_sampling: bool = False) -> tuple[Array, Array]:
  """One image's FCOS targets: (labels (P,) with `num_classes` for background, distances (P, 4)
  (l, t, r, b) to the assigned box).

  A point is a candidate of a box when it lies strictly inside it (with `center_sampling`:
  inside the box's central region of `radii` = stride x radius around its centre, cut to the
  box) and the box's largest distance from it falls in the point's level range (inclusive);
  among its candidate boxes a point takes the one of smallest area (the first on ties).
  `boxes` (M, 4) x1y1x2y2, `labels` (M,), `valid` (M,) (padding is never assigned)."""
  x, y = pts[:, 0:1], pts[:, 1:2]
  x1, y1, x2, y2 = (boxes[None, :, k] for k in range(4))
  dist = jnp.stack([x - x1, y - y1, x2 - x, y2 - y], axis=-1)  # (P, M, 4)
  if center_sampling:
    cx, cy, r = (x1 + x2) / 2, (y1 + y2) / 2, radii[:, None]
    region = jnp.stack([x - jnp.maximum(cx - r, x1), y - jnp.maximum(cy - r, y1),
                        jnp.minimum(cx + r, x2) - x, jnp.minimum(cy + r, y2) - y], axis=-1)
    inside = jnp.min(region, axis=-1) > 0
  else:
    inside = jnp.min(dist, axis=-1) > 0
  largest = jnp.max(dist, axis=-1)
  in_range = (largest >= ranges[:, 0:1]) & (largest <= ranges[:, 1:2])
  areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
  areas = jnp.where(inside & in_range & valid[None, :], areas[None, :], INF)
  best = jnp.argmin(areas, axis=1)
  assigned = jnp.take_along_axis(areas, best[:, None], axis=1)[:, 0] < INF
  out_labels = jnp.where(assigned, labels[best], num_classes).astype(jnp.int32)
  out_dist = jnp.take_along_axis(dist, best[:, None, None], axis=1)[:, 0]
  return out_labels, out_dist


def centerness_target(dist: Array) -> Array:
  """sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)) of positive distances (P, 4)."""
  lr, tb = dist[..., 0::2], dist[..., 1::2]
  ratio = (jnp.min(lr, -1) / jnp.max(lr, -1)) * (jnp.min(tb, -1) / jnp.max(tb, -1))
  return jnp.sqrt(ratio)


# --- Losses -----------------------------------------------------------------------------------


def sigmoid_focal_loss(logits: Array, onehot: Array, alpha: float = 0.25,
                       gamma: float = 2.0) -> Array:
  """Elementwise focal loss of sigmoid logits: BCE x (alpha t + (1 - alpha)(1 - t)) x pt^gamma,
  pt = 1 - p for positives and p for negatives."""
  p = jax.nn.sigmoid(logits)
  bce = -(onehot * jax.nn.log_sigmoid(logits) + (1 - onehot) * jax.nn.log_sigmoid(-logits))
  pt = (1 - p) * onehot + p * (1 - onehot)
  return bce * (alpha * onehot + (1 - alpha) * (1 - onehot)) * pt**gamma


def fcos_loss(logits: Array, dist: Array, ctr_logits: Array, pts: Array, labels: Array,
              dist_targets: Array, *, box_loss: str = 'iou', alpha: float = 0.25,
              gamma: float = 2.0) -> tuple[Array, dict[str, Array]]:
  """The FCOS losses over a batch, all points of all images together (as mmdetection averages
  over the GPUs): focal loss summed and divided by the positives (at least 1); box loss (IoU:
  -log IoU, or GIoU: 1 - GIoU) of the positives weighted by their centerness targets and
  divided by the targets' sum; centerness BCE of the positives divided by the positives.

  logits (B, P, K), dist (B, P, 4), ctr_logits (B, P), labels (B, P) (K = background),
  dist_targets (B, P, 4), pts (P, 2)."""
  num_classes = logits.shape[-1]
  pos = labels < num_classes
  num_pos = jnp.maximum(jnp.sum(pos).astype(logits.dtype), 1.0)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)  # background: all zeros
  loss_cls = jnp.sum(sigmoid_focal_loss(logits, onehot, alpha, gamma)) / num_pos

  safe = jnp.where(pos[..., None], dist_targets, 1.0)  # negatives: any positive distances
  ctr_target = jnp.where(pos, centerness_target(safe), 0.0)
  ctr_target = jax.lax.stop_gradient(ctr_target)
  denorm = jnp.maximum(jnp.sum(ctr_target), EPS)
  pred_boxes = distance_boxes(pts[None], dist)
  target_boxes = distance_boxes(pts[None], safe)
  if box_loss == 'iou':
    per_box = -jnp.log(jnp.maximum(aligned_iou(pred_boxes, target_boxes), EPS))
  elif box_loss == 'giou':
    per_box = 1.0 - aligned_iou(pred_boxes, target_boxes, giou=True)
  else:
    raise ValueError(f"box_loss: expected 'iou' or 'giou', got {box_loss!r}")
  loss_box = jnp.sum(jnp.where(pos, per_box * ctr_target, 0.0)) / denorm
  bce = -(ctr_target * jax.nn.log_sigmoid(ctr_logits)
          + (1 - ctr_target) * jax.nn.log_sigmoid(-ctr_logits))
  loss_ctr = jnp.sum(jnp.where(pos, bce, 0.0)) / num_pos
  return loss_cls + loss_box + loss_ctr, {'loss_cls': loss_cls, 'loss_box': loss_box,
                                          'loss_centerness': loss_ctr,
                                          'num_pos': jnp.sum(pos).astype(jnp.float32)}


# --- Decoding ---------------------------------------------------------------------------------


def decode(logits: Sequence[Array], dist: Sequence[Array], ctr_logits: Sequence[Array],
           strides: Sequence[int], image_hw: Array, scale_xy: Array, *, nms_pre: int = 1000,
           score_thr: float = 0.05, iou_threshold: float = 0.5, max_per_img: int = 100,
           max_pairs: int = 2000) -> dict[str, Array]:
  """One image's detections, as mmdetection v2's FCOS test: per level the `nms_pre` points of
  highest max-class score x centerness; boxes clipped to the resized image (`image_hw`) and
  mapped back to the original by dividing by `scale_xy` (x and y factors); every (point, class)
  pair whose class probability exceeds `score_thr` is a candidate scored probability x
  centerness; class-wise NMS; the `max_per_img` best.

  Levels are (H, W, K), (H, W, 4), (H, W, 1) maps of this image. Fixed shapes: the best
  `max_pairs` candidates go through NMS. Every candidate among them gets the same verdict as
  with all candidates (only better boxes can suppress a box), so the result is the same
  whenever there are at most `max_pairs` candidates or at least `max_per_img` survivors:
  `exact` says whether that holds.

  Returns boxes (max_per_img, 4) x1y1x2y2 in original pixels, scores, labels, valid, exact."""
  shapes = [m.shape[:2] for m in logits]
  pts_all = points(shapes, strides)
  start = 0
  all_boxes, all_probs, all_ctr = [], [], []
  for k, (h, w) in enumerate(shapes):
    n = h * w
    probs = jax.nn.sigmoid(logits[k].reshape(n, -1).astype(jnp.float32))
    ctr = jax.nn.sigmoid(ctr_logits[k].reshape(n).astype(jnp.float32))
    d = dist[k].reshape(n, 4).astype(jnp.float32)
    pts = jnp.asarray(pts_all[start:start + n])
    start += n
    if n > nms_pre:
      _, top = top_k(jnp.max(probs * ctr[:, None], axis=1), nms_pre)
      probs, ctr, d, pts = probs[top], ctr[top], d[top], pts[top]
    all_boxes.append(distance_boxes(pts, d))
    all_probs.append(probs)
    all_ctr.append(ctr)
  boxes, probs, ctr = (jnp.concatenate(v) for v in (all_boxes, all_probs, all_ctr))
  hw = image_hw.astype(jnp.float32)
  limit = jnp.stack([hw[1], hw[0], hw[1], hw[0]])
  boxes = jnp.clip(boxes, 0.0, limit) / jnp.tile(scale_xy.astype(jnp.float32), 2)
  return multiclass_nms(boxes, probs * ctr[:, None], probs > score_thr, iou_threshold,
                        max_per_img, max_pairs, span=jnp.max(boxes))

# --- The task ---------------------------------------------------------------------------------


class FCOS(DetectionTask):
  """FCOS detection (`fcos_*` archs); reads config.model/data/loss/eval."""

  def __init__(self, config: Any, classes: tuple[Sequence[int], Sequence[str]] | None = None):
    if not config.model.arch.startswith('fcos_'):
      raise ConfigError(f'config.model.arch: FCOS needs an fcos_* arch, got '
                        f'{config.model.arch!r}')
    super().__init__(config, classes)

  @functools.cached_property
  def strides(self) -> tuple[int, ...]:
    c = zoo.model_config(self.config.model.arch, **self.model_kwargs)
    return level_strides(c['neck_stride'], c['num_levels'])


  def loss(self, outputs: Any, batch: dict) -> tuple[Array, dict]:
    logits, dist, ctr = outputs
    shapes = [m.shape[1:3] for m in logits]
    l = self.config.loss
    pts = points(shapes, self.strides)
    ranges = per_point(shapes, l.regress_ranges)
    radii = per_point(shapes, [s * float(l.center_sample_radius) for s in self.strides])
    num_classes = logits[0].shape[-1]
    assign = functools.partial(targets, jnp.asarray(pts), jnp.asarray(ranges),
                               jnp.asarray(radii), num_classes=num_classes,
                               center_sampling=bool(l.center_sampling))
    labels, dist_t = jax.vmap(assign)(batch['boxes'], batch['labels'], batch['box_valid'])
    flat = lambda maps: at_least_float32(flatten_levels(maps))
    return fcos_loss(flat(logits), flat(dist), flat(ctr)[..., 0], jnp.asarray(pts),
                          labels, dist_t, box_loss=l.box_loss, alpha=float(l.focal_alpha),
                          gamma=float(l.focal_gamma))


  def decode(self, outputs: Any, image_hw: Array, scale_xy: Array) -> dict[str, Array]:
    """The model's outputs on a batch -> per image the final detections (`decode` above)."""
    e = self.config.eval
    one = functools.partial(decode, strides=self.strides, nms_pre=int(e.nms_pre),
                            score_thr=float(e.score_thr), iou_threshold=float(e.nms_iou),
                            max_per_img=int(e.max_per_img), max_pairs=int(e.max_pairs))
    logits, dist, ctr = outputs
    return jax.vmap(lambda a, b, c, hw, s: one(a, b, c, image_hw=hw, scale_xy=s))(
        logits, dist, ctr, image_hw, scale_xy)

  def protocol(self) -> str:
    e = self.config.eval
    return (f'{self.resize_protocol()}; top '
            f'{e.nms_pre} points per level, score > {e.score_thr}, class-wise NMS IoU '
            f'{e.nms_iou}, {e.max_per_img} boxes per image')

  # --- Export -------------------------------------------------------------------------------

  def serving_outputs(self, outputs: Any, input_hw: tuple[int, int],
                      postprocess: bool) -> dict[str, Array]:
    """Raw: `logits` (B, P, K), `distances` (B, P, 4) (l, t, r, b in input pixels) and
    `centerness` (B, P) logits over the points of all levels (points order); post-processed:
    the detections of decode in input pixels, `boxes` (B, 100, 4) x1y1x2y2, `scores`,
    `labels` (-1 where `valid` is false) and `valid`."""
    if not postprocess:
      logits, dist, ctr = outputs
      return {'logits': flatten_levels(logits), 'distances': flatten_levels(dist),
              'centerness': flatten_levels(ctr)[..., 0]}
    b = outputs[0][0].shape[0]
    hw = jnp.broadcast_to(jnp.asarray(input_hw, jnp.int32), (b, 2))
    out = self.decode(outputs, hw, jnp.ones((b, 2), jnp.float32))
    return {k: out[k] for k in ('boxes', 'scores', 'labels', 'valid')}
