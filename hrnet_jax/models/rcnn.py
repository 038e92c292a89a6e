"""Two-stage detectors on HRNetV2p: Faster R-CNN and Cascade R-CNN, with mask heads Mask R-CNN,
Cascade Mask R-CNN and Hybrid Task Cascade, as mmdetection v2 builds them for its HRNet
releases (module names are that state_dict's keys).

The HRFPN neck (levels at strides 4..64) feeds an RPN head; the best anchors, decoded and
NMS-ed per level, become proposals; RoIAlign (7x7, levels 4..32) feeds one box head (Faster)
or three in a cascade, each stage refining the previous stage's boxes. Everything has fixed
shapes: proposals and sampled RoIs are fixed counts with validity masks.

Mask heads (`with_mask`, one per stage) read 14x14 RoIAlign features. Evaluating, they need the
detections (mmdetection's test: the masks are computed for the final boxes), so the head runs
the test protocol itself (`detect`, with the `test_*` settings) and returns the detections and
their 28x28 mask probabilities (Cascade: the mean of the stages' sigmoids) in input pixels;
pasting them onto the image is the host's job (ops/masks.py).

Hybrid Task Cascade (`htc`) changes the cascade in three ways. Interleaved: each stage's mask
head trains on RoIs drawn again from the boxes its own box head just refined. Mask information
flow: stage s > 0 adds `conv_res` (1x1 conv + ReLU) of the previous stage's mask features (after
its four convs) to its RoI features, in training (the earlier heads rerun on the stage's RoIs)
and at test (the heads run as a chain). With `semantic_classes` > 0, a fused semantic head
(`SemanticHead`) on all levels predicts the COCO-stuff map at stride 8 (`semantic_logits` in
training) and its embedding, RoIAligned (14x14 at stride 8), is added to the mask features and,
average-pooled to 7x7, to the box features.

`legacy` runs the test arithmetic of the HRNet-Object-Detection releases (mmdetection v1):
anchors centred at (stride - 1) / 2 and rounded, widths x2 - x1 + 1 in the coder, NMS and level
rule, clipping to width - 1, RoIAlign with 2 samples per bin side on boxes ending at x2 + 1
(ops' `legacy`, also for the mask and semantic RoIs), no empty-proposal filter. The mask heads
are the same (the converter drops the legacy background mask, never read); pasting differs
(ops.paste_masks' `legacy`). It evaluates only (its training arithmetic differs too; fine-tune
such weights with legacy off).

The head is called as `head(streams, train, image_hw=None, targets=None, scale_xy=None)`. In
training it also takes the ground truth (`targets`: `boxes` (B, M, 4), `labels` (B, M),
`box_valid` (B, M), and with masks `masks` (B, M, H, W) uint8 over the padded input) and draws
the RPN's and each stage's samples inside (random stream 'sample'), so its outputs carry their
targets and the loss is a pure function of them (tasks/detection/rcnn.py).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax import ops
from hrnet_jax.models import initializers
from hrnet_jax.models.backbone import Streams
from hrnet_jax.models.heads import PyramidNeck
from hrnet_jax.models.layers import Array, Dtype, resize_bilinear

# The box heads' regression target scales per cascade stage (Faster uses the first).
STAGE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
STAGE_IOUS = (0.5, 0.6, 0.7)
ROI_STRIDES = (4, 8, 16, 32)  # the levels RoIAlign pools from (stride 64 is the RPN's only)


class RPNHead(nn.Module):
  """A 3x3 conv + ReLU shared by the levels, then per anchor an objectness logit (sigmoid) and
  4 deltas. Returns per level (B, H, W, A) logits and (B, H, W, 4A) deltas."""
  num_anchors: int = 3
  feat_channels: int = 256
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, levels: Sequence[Array]) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    conv = functools.partial(nn.Conv, kernel_init=initializers.normal(0.01),
                             dtype=self.dtype, param_dtype=self.param_dtype)
    shared = conv(self.feat_channels, (3, 3), padding=((1, 1), (1, 1)), name='rpn_conv')
    cls = conv(self.num_anchors, (1, 1), name='rpn_cls')
    reg = conv(4 * self.num_anchors, (1, 1), name='rpn_reg')
    logits, deltas = [], []
    for x in levels:
      y = nn.relu(shared(x))
      logits.append(cls(y))
      deltas.append(reg(y))
    return tuple(logits), tuple(deltas)


class BoxHead(nn.Module):
  """mmdetection's Shared2FCBBoxHead on (R, 7, 7, C) RoI features: two fc + ReLU, then class
  logits (num_classes + 1, background last) and deltas (4 per class, or 4 class-agnostic).

  The first fc reads the features flattened in (h, w, c) order; the released weight, made for
  PyTorch's (c, h, w) order, is permuted on conversion (convert/mapping.py)."""
  num_classes: int = 80
  fc_channels: int = 1024
  class_agnostic: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> tuple[Array, Array]:
    dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
    x = x.reshape(x.shape[0], -1)
    for i in range(2):
      x = nn.relu(dense(self.fc_channels, kernel_init=initializers.xavier_uniform,
                        name=f'shared_fcs.{i}')(x))
    logits = dense(self.num_classes + 1, kernel_init=initializers.normal(0.01),
                   name='fc_cls')(x)
    deltas = dense(4 if self.class_agnostic else 4 * self.num_classes,
                   kernel_init=initializers.normal(0.001), name='fc_reg')(x)
    return logits, deltas


class Upsample2x(nn.Module):
  """PyTorch's ConvTranspose2d(kernel 2, stride 2): each input pixel paints its own 2x2 block
  of the output, so it is one matmul. `kernel` (2, 2, in, out): [a, b, i, o] is PyTorch's
  weight[i, o, a, b] (convert/mapping.py)."""
  features: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', initializers.he_normal_fan_out,
                        (2, 2, x.shape[-1], self.features), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    y = jnp.einsum('nhwc,abco->nhawbo', x.astype(self.dtype), kernel.astype(self.dtype))
    n, h, _, w, _, o = y.shape
    return y.reshape(n, 2 * h, 2 * w, o) + bias.astype(self.dtype)


_KAIMING = initializers.he_normal_fan_out  # mmcv's conv init


class MaskHead(nn.Module):
  """mmdetection's FCNMaskHead on (R, 14, 14, C) RoI features: four 3x3 convs + ReLU, the 2x
  transposed conv + ReLU, a 1x1 conv to one (R, 28, 28) logit map per class. HTC's heads after
  the first (`with_conv_res`) first add `conv_res` (1x1 + ReLU) of the previous head's features.

  Returns (logits or None when `logits` is False, the features after the four convs)."""
  num_classes: int = 80
  channels: int = 256
  num_convs: int = 4
  with_conv_res: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, previous: Array | None = None,
               logits: bool = True) -> tuple[Array | None, Array]:
    conv = functools.partial(nn.Conv, kernel_init=_KAIMING, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    if self.with_conv_res:
      res = conv(self.channels, (1, 1), name='conv_res.conv')
      if previous is not None:
        x = x + nn.relu(res(previous))
    elif previous is not None:
      raise ValueError('a mask head without conv_res was given the previous head\'s features')
    for i in range(self.num_convs):
      x = nn.relu(conv(self.channels, (3, 3), padding=((1, 1), (1, 1)), name=f'convs.{i}.conv')(x))
    if not logits:
      return None, x
    y = nn.relu(Upsample2x(self.channels, self.dtype, self.param_dtype, name='upsample')(x))
    return conv(self.num_classes, (1, 1), name='conv_logits')(y), x


class SemanticHead(nn.Module):
  """mmdetection's FusedSemanticHead: each level through a 1x1 conv + ReLU (the others resized
  first to the `fusion_level` map, bilinear with aligned corners) and summed, four 3x3 convs +
  ReLU, then `conv_logits` (the class map) and `conv_embedding` (1x1 + ReLU, the features the
  RoI heads read). Returns (logits, embedding) at the fusion level's stride."""
  num_classes: int = 183
  channels: int = 256
  num_convs: int = 4
  fusion_level: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, levels: Sequence[Array]) -> tuple[Array, Array]:
    conv = functools.partial(nn.Conv, kernel_init=_KAIMING, dtype=self.dtype,
                             param_dtype=self.param_dtype)
    lateral = [conv(self.channels, (1, 1), name=f'lateral_convs.{i}.conv')
               for i in range(len(levels))]
    f = self.fusion_level
    size = levels[f].shape[1:3]
    x = nn.relu(lateral[f](levels[f]))
    for i, level in enumerate(levels):
      if i != f:
        x = x + nn.relu(lateral[i](resize_bilinear(level, size, align_corners=True)))
    for i in range(self.num_convs):
      x = nn.relu(conv(self.channels, (3, 3), padding=((1, 1), (1, 1)), name=f'convs.{i}.conv')(x))
    logits = conv(self.num_classes, (1, 1), name='conv_logits')(x)
    return logits, nn.relu(conv(self.channels, (1, 1), name='conv_embedding.conv')(x))


# --- Proposals ----------------------------------------------------------------------------------


def propose(logits: Sequence[Array], deltas: Sequence[Array], anchors: Sequence[Array],
            image_hw: Array, pre_nms: int, num: int, iou: float,
            legacy: bool = False) -> tuple[Array, Array]:
  """The images' proposals, mmdetection v2's RPN rule: per level the `pre_nms` anchors of
  highest objectness, moved by their deltas and clipped to the image, empty boxes dropped
  (legacy: none dropped, v1's min_bbox_size 0), NMS at `iou` within the level; then the best
  `num` of all levels. Levels: (B, H, W, A) logits,
  (B, H, W, 4A) deltas, (H W A, 4) anchors; `image_hw` (B, 2). Returns boxes (B, num, 4) by
  score and their validity (B, num). Batched without vmap (exportable to ONNX)."""
  b = image_hw.shape[0]
  boxes, scores = [], []
  for lg, dl, an in zip(logits, deltas, anchors):
    s = jax.nn.sigmoid(lg.reshape(b, -1).astype(jnp.float32))
    k = min(pre_nms, s.shape[1])
    top_s, top = ops.top_k(s, k)
    d = jnp.take_along_axis(dl.reshape(b, -1, 4).astype(jnp.float32), top[..., None], axis=1)
    box = ops.decode_deltas(an[top], d, max_hw=image_hw[:, None, :], legacy=legacy)
    if legacy:
      ok = jnp.ones(box.shape[:-1], bool)
    else:
      ok = (box[..., 2] > box[..., 0]) & (box[..., 3] > box[..., 1])
    keep = ops.greedy_nms(box, ok, iou, legacy)
    boxes.append(box)
    scores.append(jnp.where(keep, top_s, -1.0))
  boxes, scores = jnp.concatenate(boxes, axis=1), jnp.concatenate(scores, axis=1)
  k = min(num, scores.shape[1])
  top_s, top = ops.top_k(scores, k)
  pad = num - k
  out = jnp.pad(jnp.take_along_axis(boxes, top[..., None], axis=1), ((0, 0), (0, pad), (0, 0)))
  return out, jnp.pad(top_s > -1.0, ((0, 0), (0, pad)))


# --- Training samples ---------------------------------------------------------------------------


def rpn_targets(key: Array, anchors: Array, anchor_valid: Array, gt: Array, gt_valid: Array,
                samples: int, pos_fraction: float, ious: Sequence[float]) -> dict[str, Array]:
  """One image's RPN targets: max-IoU assignment (pos, neg, min_pos IoU), `samples` anchors
  drawn at `pos_fraction` positives. Per anchor: `labels` (1 object, 0 background), `weights`
  (1 where sampled), `pos`, and `targets` (the deltas to the assigned box)."""
  assigned, _ = ops.max_iou_assign(anchors, anchor_valid, gt, gt_valid, *ious)
  index, kind = ops.random_sample(key, assigned, samples, pos_fraction)
  sampled = jnp.zeros(anchors.shape[0], bool).at[index].max(kind >= 0)
  pos = assigned > 0
  matched = gt[jnp.maximum(assigned - 1, 0)]
  safe = jnp.where(pos[:, None], matched, anchors + jnp.asarray([0., 0., 1., 1.]))
  return {'labels': pos.astype(jnp.int32), 'weights': sampled.astype(jnp.float32),
          'pos': pos & sampled, 'targets': ops.encode_deltas(anchors, safe)}


def roi_samples(key: Array, proposals: Array, proposal_valid: Array, gt: Array, gt_labels: Array,
                gt_valid: Array, num_classes: int, samples: int, pos_fraction: float,
                iou: float, stds: Sequence[float]) -> dict[str, Array]:
  """One image's R-CNN samples: the ground truth added to the proposals (first, as
  mmdetection), max-IoU assignment at `iou` (no low-quality matches), `samples` RoIs drawn at
  `pos_fraction` positives (first). Returns `rois` (S, 4), `valid`, `labels` (num_classes for
  background), `targets` (deltas normalized by `stds`, zero for background), `from_gt` and
  `gt_index` (the matched box, meaningful for positives)."""
  candidates = jnp.concatenate([gt, proposals])
  valid = jnp.concatenate([gt_valid, proposal_valid])
  from_gt = jnp.arange(candidates.shape[0]) < gt.shape[0]
  assigned, _ = ops.max_iou_assign(candidates, valid, gt, gt_valid, iou, iou, iou,
                                   match_low_quality=False)
  index, kind = ops.random_sample(key, assigned, samples, pos_fraction)
  rois = candidates[index]
  pos = kind == 1
  match = jnp.maximum(assigned[index] - 1, 0)
  safe = jnp.where(pos[:, None], gt[match], rois + jnp.asarray([0., 0., 1., 1.]))
  targets = jnp.where(pos[:, None], ops.encode_deltas(rois, safe, stds=stds), 0.0)
  return {'rois': rois, 'valid': kind >= 0, 'labels': jnp.where(pos, gt_labels[match],
                                                                 num_classes).astype(jnp.int32),
          'targets': targets, 'from_gt': from_gt[index] & (kind >= 0), 'gt_index': match}


# --- The test protocol -------------------------------------------------------------------------


def detect(rois: Array, valid: Array, logits: Array, deltas: Array, image_hw: Array,
           scale_xy: Array, *, stds: Sequence[float], score_thr: float = 0.05,
           iou_threshold: float = 0.5, max_per_img: int = 100,
           max_pairs: int = 2000, legacy: bool = False) -> dict[str, Array]:
  """The images' detections, mmdetection v2's R-CNN test: class probabilities by softmax
  (background last, dropped), each RoI moved by its class's deltas (or the class-agnostic
  ones) and clipped to the resized image, boxes divided by the x/y resize factors, every
  (RoI, class) with probability > `score_thr` a candidate, class-wise NMS, the `max_per_img`
  best (ops.multiclass_nms: `exact` says whether the fixed `max_pairs` changed nothing).
  `legacy`: mmdetection v1's inclusive-box coder, clipping and NMS.

  rois (B, P, 4), valid (B, P), logits (B, P, K + 1), deltas (B, P, 4K or 4), image_hw (B, 2),
  scale_xy (B, 2); batched without vmap (exportable to ONNX)."""
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., :-1]
  num_classes = probs.shape[-1]
  b, p = rois.shape[:2]
  per_class = deltas.reshape(b, p, -1, 4).astype(jnp.float32)
  boxes = ops.decode_deltas(rois[:, :, None, :], per_class, stds=stds,
                            max_hw=image_hw[:, None, None, :], legacy=legacy)
  boxes = boxes / jnp.tile(scale_xy.astype(jnp.float32), 2)[:, None, None, :]
  if per_class.shape[2] == 1:
    boxes = boxes[:, :, 0]
  elif per_class.shape[2] != num_classes:
    raise ValueError(f'{per_class.shape[2]} box deltas per RoI for {num_classes} classes')
  candidate = (probs > score_thr) & valid[..., None]
  return ops.multiclass_nms(boxes, probs, candidate, iou_threshold, max_per_img, max_pairs,
                            legacy=legacy)


# --- The detector head --------------------------------------------------------------------------


def _flat(maps: Sequence[Array], per: int) -> Array:
  """Per-level (B, H, W, per * A) maps -> (B, N, per) in anchor order (level, y, x, anchor)."""
  return jnp.concatenate([m.reshape(m.shape[0], -1, per) for m in maps], axis=1)


class TwoStageHead(nn.Module):
  """The neck, the RPN and the RoI head (one box head, and mask head, per stage) on the
  backbone's streams.

  Outputs, evaluating: `rois` (B, P, 4) the last stage's input boxes, `valid` (B, P), `logits`
  (B, P, K + 1) (the mean of the stages' logits) and `deltas` (B, P, 4K or 4) of the last
  stage; with masks also `detections` (`detect`'s boxes in the input's original pixels, given
  `scale_xy`, with `scores`, `labels`, `valid`, `exact`, and `masks` (B, D, 28, 28) the mask
  probabilities of each box's class). Training: `rpn` (per anchor: `logits`, `deltas` and the
  targets of rpn_targets) and `stages` (per stage: the sampled RoIs' `logits`, their `deltas`
  for the target class, `labels`, `targets`, `valid`; with masks `mask_logits` (B, Q, 28, 28)
  of the first Q = roi_samples * roi_pos_fraction samples (where the positives are), for
  their class, with `mask_targets` and `mask_valid`); with the semantic branch
  `semantic_logits` (B, H / 8, W / 8, semantic_classes)."""
  num_classes: int = 80
  out_channels: int = 256
  num_levels: int = 5
  neck_stride: int = 1
  num_stages: int = 1
  fc_channels: int = 1024
  class_agnostic: bool = False
  roi_size: int = 7
  rpn_samples: int = 256
  rpn_pos_fraction: float = 0.5
  rpn_ious: tuple[float, float, float] = (0.7, 0.3, 0.3)
  rpn_nms_iou: float = 0.7
  train_pre_nms: int = 2000
  train_proposals: int = 1000
  test_pre_nms: int = 1000
  test_proposals: int = 1000
  roi_samples: int = 512
  roi_pos_fraction: float = 0.25
  legacy: bool = False
  with_mask: bool = False
  mask_roi_size: int = 14
  mask_samples: int = 0  # the positives per image the mask heads train on (0: all the slots)
  htc: bool = False  # Hybrid Task Cascade: interleaved training, mask information flow
  semantic_classes: int = 0  # HTC's semantic branch (0: none)
  test_score_thr: float = 0.05  # the test protocol, run here when masks need the detections
  test_nms_iou: float = 0.5
  test_max_per_img: int = 100
  test_max_pairs: int = 2000
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def strides(self) -> tuple[int, ...]:
    return tuple(4 * self.neck_stride * 2**i for i in range(self.num_levels))

  @nn.compact
  def __call__(self, streams: Streams, train: bool = False, image_hw: Array | None = None,
               targets: dict[str, Array] | None = None,
               scale_xy: Array | None = None) -> dict[str, Any]:
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    levels = PyramidNeck(self.out_channels, self.num_levels, self.neck_stride, name='neck',
                         **dt)(streams, train)
    rpn_logits, rpn_deltas = RPNHead(3, self.out_channels, name='rpn_head', **dt)(levels)
    b = levels[0].shape[0]
    shapes = [m.shape[1:3] for m in levels]
    strides = self.strides()
    if image_hw is None:  # the whole (padded) input is the image
      image_hw = jnp.broadcast_to(jnp.asarray([shapes[0][0] * strides[0],
                                               shapes[0][1] * strides[0]], jnp.int32), (b, 2))
    if (self.htc or self.semantic_classes) and not (self.with_mask and self.num_stages > 1):
      raise ValueError('htc and semantic_classes need a cascade (num_stages > 1) with masks')
    if train and self.legacy:
      raise ValueError('legacy=True (the HRNet-Object-Detection test arithmetic) evaluates only: '
                       'train with legacy=False (the converted weights are the same)')
    anchor_levels = [jnp.asarray(ops.anchor_grid([s], [st], legacy=self.legacy))
                     for s, st in zip(shapes, strides)]
    proposals, valid = propose(rpn_logits, rpn_deltas, anchor_levels, image_hw,
                               pre_nms=self.train_pre_nms if train else self.test_pre_nms,
                               num=self.train_proposals if train else self.test_proposals,
                               iou=self.rpn_nms_iou, legacy=self.legacy)
    proposals, valid = jax.lax.stop_gradient(proposals), jax.lax.stop_gradient(valid)

    heads = [BoxHead(self.num_classes, self.fc_channels, self.class_agnostic,
                     name='roi_head.bbox_head' if self.num_stages == 1
                     else f'roi_head.bbox_head.{s}', **dt) for s in range(self.num_stages)]

    mask_heads = [MaskHead(self.num_classes, self.out_channels, with_conv_res=self.htc and s > 0,
                           name='roi_head.mask_head' if self.num_stages == 1
                           else f'roi_head.mask_head.{s}', **dt)
                  for s in range(self.num_stages if self.with_mask else 0)]

    # Every RoIAlign's kernel: v2's (adaptive samples, aligned) or v1's (2 x 2, its own rule).
    kernel = dict(sampling_ratio=2 if self.legacy else 0, aligned=not self.legacy,
                  legacy=self.legacy)

    def features(rois, size):  # (B, R, 4) -> (B * R, size, size, C)
      r = rois.shape[1]
      batch = jnp.repeat(jnp.arange(b), r)
      return ops.multilevel_roi_align(levels, rois.reshape(-1, 4), batch, ROI_STRIDES, size,
                                      **kernel)

    semantic_logits = embedding = None
    if self.semantic_classes:
      semantic_logits, embedding = SemanticHead(self.semantic_classes, self.out_channels,
                                                name='roi_head.semantic_head', **dt)(levels)

    def semantic_features(rois, pool=1):  # the embedding's RoIs, mask_roi_size square, at
      # stride 8 (a small map: the separable RoIAlign, several times faster than the sampling
      # loop here), bins averaged pool x pool
      return ops.separable_roi_align(embedding, rois, self.mask_roi_size, 1.0 / strides[1],
                                     pool=pool, **kernel)

    def box_features(rois):
      x = features(rois, self.roi_size)
      if embedding is None:
        return x
      # average-pooled to the box size (mmdetection's adaptive pooling)
      y = semantic_features(rois, pool=self.mask_roi_size // self.roi_size)
      return x + y.astype(x.dtype)

    def mask_features(rois):
      x = features(rois, self.mask_roi_size)
      return x if embedding is None else x + semantic_features(rois).astype(x.dtype)

    if not train:
      out = self._evaluate(heads, box_features, proposals, valid, image_hw)
      if mask_heads:
        out['detections'] = self._detect_masks(mask_heads, mask_features, out, image_hw,
                                               scale_xy)
      return out
    out = self._train(heads, mask_heads, box_features, mask_features, proposals, valid,
                      image_hw, targets, rpn_logits, rpn_deltas, shapes, strides)
    if semantic_logits is not None:
      out['semantic_logits'] = semantic_logits
    return out

  def _evaluate(self, heads, box_features, rois, valid, image_hw) -> dict[str, Array]:
    b, p = rois.shape[:2]
    logits_sum = 0.0
    for s, head in enumerate(heads):
      logits, deltas = head(box_features(rois))
      logits, deltas = logits.reshape(b, p, -1), deltas.reshape(b, p, -1)
      logits_sum = logits_sum + logits.astype(jnp.float32)
      if s < len(heads) - 1:  # the next stage's boxes: this stage's (class-agnostic) regression
        rois = ops.decode_deltas(rois, deltas.astype(jnp.float32), stds=STAGE_STDS[s],
                                 max_hw=image_hw[:, None, :], legacy=self.legacy)
    zero = lambda v: jnp.where(valid[..., None], v, 0.0)  # rows past the proposals: zeros
    return {'rois': zero(rois), 'valid': valid, 'logits': zero(logits_sum / len(heads)),
            'deltas': zero(deltas)}

  def _detect_masks(self, mask_heads, mask_features, out, image_hw, scale_xy) -> dict[str, Array]:
    """mmdetection's mask test: the detections (in original pixels), then the mask heads on
    those boxes scaled back onto the input, each box's class picked, the stages' sigmoids
    averaged."""
    b = image_hw.shape[0]
    if scale_xy is None:
      scale_xy = jnp.ones((b, 2), jnp.float32)
    det = detect(out['rois'], out['valid'], out['logits'], out['deltas'], image_hw, scale_xy,
                 stds=STAGE_STDS[self.num_stages - 1], score_thr=self.test_score_thr,
                 iou_threshold=self.test_nms_iou, max_per_img=self.test_max_per_img,
                 max_pairs=self.test_max_pairs, legacy=self.legacy)
    boxes = det['boxes'] * jnp.tile(scale_xy.astype(jnp.float32), 2)[:, None, :]
    feats = mask_features(jax.lax.stop_gradient(boxes))
    d = boxes.shape[1]
    label = jnp.maximum(det['labels'], 0).reshape(-1)
    probs, previous = 0.0, None
    for head in mask_heads:  # HTC: a chain, each head given the previous one's features
      logits, feats_s = head(feats, previous)
      previous = feats_s if self.htc else None
      logits = logits.astype(jnp.float32)  # (B * D, 28, 28, K)
      picked = jnp.take_along_axis(logits, label[:, None, None, None], axis=-1)[..., 0]
      probs = probs + jax.nn.sigmoid(picked)
    m = probs.shape[-1]
    masks = (probs / len(mask_heads)).reshape(b, d, m, m)
    return dict(det, masks=jnp.where(det['valid'][:, :, None, None], masks, 0.0))

  def _mask_outputs(self, mask_heads, s, mask_features, sample, targets) -> dict[str, Array]:
    """Stage s's mask logits and targets on its positives: the first Q samples (positives
    come first), each read for its class, the targets cut from its ground-truth mask. HTC: the
    earlier stages' heads run first on the same RoIs, for the information flow."""
    q = int(self.roi_samples * self.roi_pos_fraction)
    q = min(q, self.mask_samples) if self.mask_samples else q  # a uniform draw: random order
    rois = sample['rois'][:, :q]
    b = rois.shape[0]
    pos = sample['valid'][:, :q] & (sample['labels'][:, :q] < self.num_classes)
    label = jnp.minimum(sample['labels'][:, :q], self.num_classes - 1).reshape(-1)
    feats = mask_features(rois)
    previous = None
    for head in mask_heads[:s] if self.htc else ():
      _, previous = head(feats, previous, logits=False)
    logits, _ = mask_heads[s](feats, previous)
    logits = jnp.take_along_axis(logits, label[:, None, None, None], axis=-1)[..., 0]
    masks = targets['masks']
    m = masks.shape[1]
    index = (jnp.arange(b)[:, None] * m + sample['gt_index'][:, :q]).reshape(-1)
    size = logits.shape[1]
    goal = ops.mask_targets(masks.reshape(b * m, *masks.shape[2:]), rois.reshape(-1, 4), index,
                            size)
    return {'mask_logits': logits.reshape(b, q, size, size),
            'mask_targets': jax.lax.stop_gradient(goal.reshape(b, q, size, size)),
            'mask_valid': pos}

  def _train(self, heads, mask_heads, box_features, mask_features, proposals, valid, image_hw,
             targets, rpn_logits, rpn_deltas, shapes, strides) -> dict[str, Any]:
    key = self.make_rng('sample')
    gt, gt_labels, gt_valid = targets['boxes'], targets['labels'], targets['box_valid']
    b = gt.shape[0]
    anchors = jnp.asarray(ops.anchor_grid(shapes, strides))
    keys = jax.random.split(key, self.num_stages + 1)
    anchor_valid = jax.vmap(lambda hw: ops.valid_anchors(shapes, strides, 3, hw))(image_hw)
    rpn = jax.vmap(functools.partial(
        rpn_targets, samples=self.rpn_samples, pos_fraction=self.rpn_pos_fraction,
        ious=self.rpn_ious), in_axes=(0, None, 0, 0, 0))(
            jax.random.split(keys[0], b), anchors, anchor_valid, gt, gt_valid)
    rpn = jax.lax.stop_gradient(rpn)
    rpn.update(logits=_flat(rpn_logits, 1)[..., 0], deltas=_flat(rpn_deltas, 4))

    stages = []
    for s, head in enumerate(heads):
      sample = jax.vmap(functools.partial(
          roi_samples, num_classes=self.num_classes, samples=self.roi_samples,
          pos_fraction=self.roi_pos_fraction, iou=STAGE_IOUS[s], stds=STAGE_STDS[s]))(
              jax.random.split(keys[s + 1], b), proposals, valid, gt, gt_labels, gt_valid)
      sample = jax.lax.stop_gradient(sample)
      rois = sample['rois']
      r = rois.shape[1]
      logits, deltas = head(box_features(rois))
      logits, deltas = logits.reshape(b, r, -1), deltas.reshape(b, r, -1)
      if not self.class_agnostic:  # the 4 deltas of the target class (any for background)
        per_class = deltas.reshape(b, r, self.num_classes, 4)
        pick = jnp.minimum(sample['labels'], self.num_classes - 1)
        deltas = jnp.take_along_axis(per_class, pick[:, :, None, None], axis=2)[:, :, 0]
      stages.append({'logits': logits, 'deltas': deltas, 'labels': sample['labels'],
                     'targets': sample['targets'], 'valid': sample['valid']})
      # The next stage (and HTC's interleaved mask head) takes this stage's samples, less the
      # gt boxes, refined by its regression.
      if s < len(heads) - 1 or self.htc:
        refined = ops.decode_deltas(rois, deltas.astype(jnp.float32), stds=STAGE_STDS[s],
                                    max_hw=image_hw[:, None, :])
        proposals = jax.lax.stop_gradient(refined)
        valid = sample['valid'] & ~sample['from_gt']
      if mask_heads and self.htc:  # interleaved: the masks train on RoIs drawn again from them
        sample = jax.lax.stop_gradient(jax.vmap(functools.partial(
            roi_samples, num_classes=self.num_classes, samples=self.roi_samples,
            pos_fraction=self.roi_pos_fraction, iou=STAGE_IOUS[s], stds=STAGE_STDS[s]))(
                jax.random.split(jax.random.fold_in(keys[s + 1], 1), b), proposals, valid, gt,
                gt_labels, gt_valid))
      if mask_heads:
        stages[-1].update(self._mask_outputs(mask_heads, s, mask_features, sample, targets))
    return {'rpn': rpn, 'stages': stages}
