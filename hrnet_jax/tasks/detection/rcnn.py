"""Two-stage detection on HRNetV2p (the `faster_rcnn_*` and `cascade_rcnn_*` archs, and with
instance masks `mask_rcnn_*`, `cascade_mask_rcnn_*`, `htc_*` and `htc_without_semantic_*`): the
losses of mmdetection v2's recipes
and its test protocol. The network, its proposals and its training samples are models/rcnn.py;
the model draws the samples and returns them with their targets, so the loss here is a pure
function of its outputs. With masks the model also runs the test protocol (its boxes feed the
mask heads), with the settings of `config.eval` (`test_kwargs`).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.errors import ConfigError
from hrnet_jax.models import rcnn, zoo
from hrnet_jax.tasks.detection import canvas, metric
from hrnet_jax.tasks.detection.task import DetectionTask

Array = jax.Array
FRAMEWORK_ARCHS = zoo.TWO_STAGE_TASKS


def box_loss(diff: Array, beta: float) -> Array:
  """Elementwise L1 (beta 0) or smooth L1 (0.5 d^2 / beta below beta, d - beta / 2 above)."""
  d = jnp.abs(diff)
  if beta <= 0:
    return d
  return jnp.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


def rpn_loss(rpn: dict[str, Array], beta: float) -> tuple[Array, Array]:
  """Sigmoid BCE over the sampled anchors and the box loss of their positives, both divided by
  the number of samples (mmdetection's avg_factor with a sampler)."""
  weights = rpn['weights']
  n = jnp.maximum(jnp.sum(weights), 1.0)
  labels = rpn['labels'].astype(rpn['logits'].dtype)
  bce = -(labels * jax.nn.log_sigmoid(rpn['logits'])
          + (1 - labels) * jax.nn.log_sigmoid(-rpn['logits']))
  per_box = jnp.sum(box_loss(rpn['deltas'] - rpn['targets'], beta), axis=-1)
  return jnp.sum(bce * weights) / n, jnp.sum(jnp.where(rpn['pos'], per_box, 0.0)) / n


def stage_loss(stage: dict[str, Array], beta: float) -> tuple[Array, Array, Array]:
  """Softmax cross-entropy over the stage's sampled RoIs and the box loss of their positives,
  both divided by the number of RoIs; and the classification accuracy."""
  valid = stage['valid']
  n = jnp.maximum(jnp.sum(valid), 1).astype(stage['logits'].dtype)
  logp = jax.nn.log_softmax(stage['logits'], axis=-1)
  ce = -jnp.take_along_axis(logp, stage['labels'][..., None], axis=-1)[..., 0]
  background = stage['logits'].shape[-1] - 1
  pos = valid & (stage['labels'] < background)
  per_box = jnp.sum(box_loss(stage['deltas'] - stage['targets'], beta), axis=-1)
  right = jnp.argmax(stage['logits'], axis=-1) == stage['labels']
  return (jnp.sum(jnp.where(valid, ce, 0.0)) / n, jnp.sum(jnp.where(pos, per_box, 0.0)) / n,
          jnp.sum(valid & right) / n)


def mask_loss(stage: dict[str, Array]) -> Array:
  """Sigmoid cross-entropy of the positives' 28x28 masks for their class, the mean over their
  pixels (mmdetection's mask_cross_entropy); 0 without positives."""
  logits = stage['mask_logits'].astype(jnp.float32)
  targets = stage['mask_targets'].astype(jnp.float32)
  bce = -(targets * jax.nn.log_sigmoid(logits) + (1 - targets) * jax.nn.log_sigmoid(-logits))
  valid = stage['mask_valid']
  per_roi = jnp.mean(bce, axis=(-2, -1))
  return jnp.sum(jnp.where(valid, per_roi, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def semantic_loss(logits: Array, labels: Array, ignore: int = canvas.IGNORE_LABEL) -> Array:
  """HTC's semantic loss: softmax cross-entropy per pixel, zero where the label is `ignore`,
  averaged over all pixels, ignored ones included (mmdetection's CrossEntropyLoss with
  ignore_index and the default reduction). logits (B, H, W, K), labels (B, H, W)."""
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  labels = labels.astype(jnp.int32)
  known = labels != ignore
  ce = -jnp.take_along_axis(logp, jnp.where(known, labels, 0)[..., None], axis=-1)[..., 0]
  return jnp.mean(jnp.where(known, ce, 0.0))


class TwoStage(DetectionTask):
  """Faster R-CNN, Cascade R-CNN, and with masks Mask R-CNN, Cascade Mask R-CNN and Hybrid Task
  Cascade; reads config.model/data/loss/eval."""
  onnx_postprocess = True  # decode is batched without vmap

  def __init__(self, config: Any, classes: tuple[Sequence[int], Sequence[str]] | None = None):
    family = zoo.split_arch(config.model.arch)[0]
    if family not in FRAMEWORK_ARCHS:
      raise ConfigError(f'config.model.arch: two-stage detection needs one of '
                        f'{", ".join(f + "_*" for f in FRAMEWORK_ARCHS)}, got '
                        f'{config.model.arch!r}')
    super().__init__(config, classes)

  @functools.cached_property
  def settings(self) -> dict[str, Any]:
    return zoo.model_config(self.config.model.arch, **self.model_kwargs)

  @property
  def legacy(self) -> bool:
    return bool(self.settings['legacy'])

  @property
  def with_mask(self) -> bool:
    return bool(self.settings['with_mask'])

  @property
  def with_semantic(self) -> bool:
    return bool(self.settings['semantic_classes'])

  def test_kwargs(self) -> dict[str, Any]:
    e = self.config.eval
    return {'test_score_thr': float(e.score_thr), 'test_nms_iou': float(e.nms_iou),
            'test_max_per_img': int(e.max_per_img), 'test_max_pairs': int(e.max_pairs)}

  def model_inputs(self, batch: dict[str, Array]) -> dict[str, Any]:
    if self.legacy:
      raise ConfigError('config.model.overrides.legacy=True is the test arithmetic of the '
                        'HRNet-Object-Detection releases, for evaluation: train with legacy '
                        'False (their weights load as they are)')
    targets = {k: batch[k] for k in ('boxes', 'labels', 'box_valid')}
    if self.with_mask:  # bit-packed rows (canvas.pad_boxes)
      if not self.config.data.get('masks', False):
        raise ConfigError(f'{self.config.model.arch} trains on instance masks: set '
                          'config.data.masks=True')
      width = batch['image'].shape[2]
      targets['masks'] = jnp.unpackbits(batch['masks'], axis=-1, count=width)
    if self.with_semantic and not self.config.data.get('semantic', False):
      raise ConfigError(f'{self.config.model.arch} trains its semantic branch on COCO-stuff '
                        'label maps: set config.data.semantic=True (or use the '
                        'htc_without_semantic_* arch)')
    return {'image_hw': batch['image_hw'], 'targets': targets}

  def loss(self, outputs: Any, batch: dict) -> tuple[Array, dict]:
    """RPN and R-CNN losses of the recipe: (L1 or smooth L1 per `config.loss`), and the mask
    loss; the cascade's stages weighted by `config.loss.stage_weights`; HTC's semantic loss
    weighted by `config.loss.semantic_weight`. The other targets came through the model
    (model_inputs)."""
    l = self.config.loss
    cls, box = rpn_loss(outputs['rpn'], float(l.rpn_beta))
    extra = {'loss_rpn_cls': cls, 'loss_rpn_bbox': box}
    total = cls + box
    weights = tuple(l.stage_weights)
    for s, stage in enumerate(outputs['stages']):
      cls, box, acc = stage_loss(stage, float(l.rcnn_beta))
      prefix = f's{s}.' if len(outputs['stages']) > 1 else ''
      extra.update({f'{prefix}loss_cls': cls, f'{prefix}loss_bbox': box, f'{prefix}acc': acc})
      total = total + weights[s] * (cls + box)
      if self.with_mask:
        extra[f'{prefix}loss_mask'] = mask_loss(stage)
        total = total + weights[s] * extra[f'{prefix}loss_mask']
    if self.with_semantic:
      extra['loss_semantic_seg'] = semantic_loss(outputs['semantic_logits'], batch['semantic'])
      total = total + float(l.semantic_weight) * extra['loss_semantic_seg']
    return total, extra

  def decode(self, outputs: Any, image_hw: Array, scale_xy: Array) -> dict[str, Array]:
    """The detections; with masks, the model's own (it ran the protocol, with the `scale_xy`
    it was given, to read the masks of its boxes), with their `masks` (B, 100, 28, 28)."""
    if self.with_mask:
      return outputs['detections']
    e = self.config.eval
    stds = rcnn.STAGE_STDS[int(self.settings['num_stages']) - 1]
    return rcnn.detect(outputs['rois'], outputs['valid'], outputs['logits'], outputs['deltas'],
                       image_hw, scale_xy, stds=stds, score_thr=float(e.score_thr),
                       iou_threshold=float(e.nms_iou), max_per_img=int(e.max_per_img),
                       max_pairs=int(e.max_pairs), legacy=self.legacy)

  def eval_outputs(self, apply_fn: Any, images: Array, batch: dict) -> dict:
    outputs = apply_fn(images, image_hw=batch['image_hw'], scale_xy=batch['scale_xy'])
    out = self.decode(outputs, batch['image_hw'], batch['scale_xy'])
    found = {'boxes': out['boxes'], 'scores': out['scores'], 'labels': out['labels'],
             'det_valid': out['valid'], 'exact': out['exact'], 'image_id': batch['image_id']}
    if self.with_mask:
      found.update(masks=out['masks'], orig_hw=batch['orig_hw'])
    return found

  def prediction(self, samples: list[dict], outputs: dict) -> dict:
    """The detections; with masks each also has its `segmentation` (COCO RLE over the image,
    the mask pasted into its box, as the metric pastes it)."""
    found = super().prediction(samples, outputs)
    if self.with_mask:
      out = {k: v[:1] for k, v in outputs.items()}
      out.update(valid=np.ones(1, np.int32), index=np.zeros(1, np.int32))
      rows = metric.mask_rows(out, range(len(self.class_names)), self.legacy)[0]
      for d, row in zip(found['detections'], rows):
        d['segmentation'] = row['segmentation']
    return found

  def new_metric(self, source: Any) -> metric.CocoBoxMetric:
    if not self.with_mask:
      return super().new_metric(source)
    from hrnet_jax.data.sources.coco_detection import CocoDetection
    annotations = source.annotation_file if isinstance(source, CocoDetection) else None
    return metric.CocoInstanceMetric(self.category_ids, annotations, source.split,
                                     legacy=self.legacy)

  def protocol(self) -> str:
    e, c = self.config.eval, self.settings
    stages = ('' if c['num_stages'] == 1 else
              f'; {c["num_stages"]} stages, mean of their class logits')
    masks = ''
    if self.with_mask:
      masks = ('; each box\'s 28x28 mask probabilities (the mean of the stages\' heads) pasted '
               'into it, >= 0.5')
    return (f'{self.resize_protocol()}; RPN '
            f'top {c["test_pre_nms"]} per level, NMS {c["rpn_nms_iou"]}, '
            f'{c["test_proposals"]} proposals{stages}; softmax score > {e.score_thr}, '
            f'class-wise NMS IoU {e.nms_iou}, {e.max_per_img} boxes per image'
            + masks
            + ('; mmdetection v1 arithmetic (legacy: inclusive boxes, RoIAlign 2x2 samples '
               'unaligned' + (', masks resized into the integer box, > 0.5' if self.with_mask
                              else '') + ')' if self.legacy else ''))

  # --- Export ---------------------------------------------------------------------------------

  def serving_outputs(self, outputs: Any, input_hw: tuple[int, int],
                      postprocess: bool) -> dict[str, Array]:
    """Raw: the proposals' `rois` (B, P, 4) with `valid`, class `logits` (B, P, K + 1,
    background last) and box `deltas` (B, P, 4K or 4) of the last stage; post-processed: the
    detections in input pixels, `boxes` (B, 100, 4) x1y1x2y2, `scores`, `labels` (-1 where
    `valid` is false) and `valid`; with masks, and always, `masks` (B, 100, 28, 28): each box's
    mask probabilities, to paste into its box (ops.paste_masks, docs/detection.md)."""
    if not postprocess and not self.with_mask:
      return {k: outputs[k] for k in ('rois', 'valid', 'logits', 'deltas')}
    b = outputs['rois'].shape[0]
    hw = jnp.broadcast_to(jnp.asarray(input_hw, jnp.int32), (b, 2))
    out = self.decode(outputs, hw, jnp.ones((b, 2), jnp.float32))
    return {k: out[k] for k in ('boxes', 'scores', 'labels', 'valid')
            + (('masks',) if self.with_mask else ())}
