"""Semantic segmentation (HRNetV2, HRNetV2 + OCR): data, loss, inference and mIoU.

Everything the generic trainer needs from this task goes through `Segmentation`; the functions
below it are pure and tested on their own.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Callable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data import sources, transforms
from hrnet_jax.models import zoo
from hrnet_jax.models.layers import resize_bilinear
from hrnet_jax.tasks import segmentation_inference as inference
from hrnet_jax.tasks.base import Metric, Task, at_least_float32

Array = jax.Array

# ------------------------------------------------------------------------------------------------
# Loss
# ------------------------------------------------------------------------------------------------


def _pixel_nll(logits: Array, labels: Array, class_weights: Array | None, ignore_label: int):
  """Per-pixel weighted NLL (zero on ignored pixels), true-class probability, valid mask."""
  logits = at_least_float32(logits)
  valid = labels != ignore_label
  safe = jnp.where(valid, labels, 0).astype(jnp.int32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  weight = valid.astype(logits.dtype)
  if class_weights is not None:
    weight = weight * jnp.asarray(class_weights, logits.dtype)[safe]
  return nll * weight, jnp.exp(-nll), valid, weight


def cross_entropy(logits: Array, labels: Array, class_weights: Sequence[float] | None = None,
                  ignore_label: int = 255) -> Array:
  """PyTorch `CrossEntropyLoss(weight, ignore_index)` with mean reduction: sum(w*nll)/sum(w).
  An all-ignored batch gives 0, not NaN."""
  loss, _, _, weight = _pixel_nll(logits, labels, class_weights, ignore_label)
  return jnp.sum(loss) / jnp.maximum(jnp.sum(weight), 1e-12)


def ohem_cross_entropy(logits: Array, labels: Array, class_weights: Sequence[float] | None = None,
                       thresh: float = 0.9, min_kept: int = 131072,
                       ignore_label: int = 255, group: int = 0) -> Array:
  """Online hard example mining: average the weighted loss over pixels whose true-class
  probability is below max(thresh, the min_kept-th smallest probability).

  `group` > 0 applies the rule to each run of `group` images and averages the groups' losses:
  the official code mines per GPU (3 images each in its 4-GPU recipes), so a step keeps at least
  min_kept pixels per group, not per batch. 0: one group, the whole batch."""
  n = logits.shape[0]
  if group and group != n:
    if n % group:
      raise ValueError(f'config.loss.ohem_group {group} must divide the batch of {n} images '
                       '(per gradient-accumulation micro-batch)')
    split = lambda a: a.reshape((n // group, group) + a.shape[1:])
    per_group = jax.vmap(lambda lg, lb: ohem_cross_entropy(lg, lb, class_weights, thresh,
                                                          min_kept, ignore_label))
    return jnp.mean(per_group(split(logits), split(labels)))
  loss, prob, valid, _ = _pixel_nll(logits, labels, class_weights, ignore_label)
  n = jnp.sum(valid)
  ranked = jnp.sort(jnp.where(valid, prob, jnp.inf).ravel())
  k = jnp.clip(jnp.minimum(max(1, min_kept), n - 1), 0, ranked.size - 1)
  threshold = jnp.maximum(ranked[k], thresh)
  keep = valid & (prob < threshold)
  return jnp.sum(jnp.where(keep, loss, 0.0)) / jnp.maximum(jnp.sum(keep), 1)


def upsample_logits(logits: Array, size_hw: Sequence[int], align_corners: bool) -> Array:
  if tuple(logits.shape[1:3]) == tuple(size_hw):
    return logits
  return resize_bilinear(logits, size_hw, align_corners=align_corners)


# ------------------------------------------------------------------------------------------------
# Metric
# ------------------------------------------------------------------------------------------------


def confusion_matrix(pred: Array, labels: Array, num_classes: int,
                     ignore_label: int = 255) -> Array:
  """(K, K) int32 counts, rows = ground truth, columns = prediction, ignored pixels left out."""
  labels = labels.astype(jnp.int32)
  valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
  index = jnp.where(valid, labels * num_classes + pred.astype(jnp.int32), 0)
  counts = jnp.zeros(num_classes * num_classes, jnp.int32).at[index.ravel()].add(
      valid.ravel().astype(jnp.int32))
  return counts.reshape(num_classes, num_classes)


def scores_from_confusion(confusion: np.ndarray) -> dict[str, Any]:
  """mIoU (mean over all classes, the benchmark figure), per-class IoU, pixel accuracy, mean class
  accuracy, and the mIoU over classes present in the ground truth (for subsets and the demo)."""
  confusion = np.asarray(confusion, np.float64)
  tp = np.diag(confusion)
  gt, pred = confusion.sum(1), confusion.sum(0)
  iou = tp / np.maximum(1.0, gt + pred - tp)
  present = gt > 0
  return {'miou': float(iou.mean()), 'iou': iou, 'pixel_acc': float(tp.sum() / max(1.0, gt.sum())),
          'mean_acc': float((tp / np.maximum(1.0, gt)).mean()),
          'miou_present': float(iou[present].mean()) if present.any() else 0.0}


def summarize_scores(scores: dict[str, Any]) -> str:
  return (f'mIoU {100 * scores["miou"]:.2f}  pixel acc {100 * scores["pixel_acc"]:.2f}  '
          f'mean acc {100 * scores["mean_acc"]:.2f}  (mIoU over classes present '
          f'{100 * scores["miou_present"]:.2f})')


def format_scores(scores: dict[str, Any], class_names: Sequence[str]) -> str:
  lines = [f'{"class":<16} IoU']
  lines += [f'{name:<16} {100 * v:6.2f}' for name, v in zip(class_names, scores['iou'])]
  lines.append(summarize_scores(scores))
  return '\n'.join(lines)


# ------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------


def colorize(pred: np.ndarray, palette: np.ndarray, ignore_label: int = 255) -> np.ndarray:
  """HxW class ids -> HxWx3 uint8 colours (ignore -> black)."""
  table = np.zeros((256, 3), np.uint8)
  table[:len(palette)] = palette
  table[ignore_label] = 0
  return table[np.asarray(pred, np.uint8)]


def default_palette(num_classes: int) -> np.ndarray:
  """Distinct colours for datasets without an official palette (the PASCAL VOC bit pattern)."""
  out = np.zeros((num_classes, 3), np.uint8)
  for i in range(num_classes):
    c, v = i, [0, 0, 0]
    for j in range(8):
      for k in range(3):
        v[k] |= ((c >> k) & 1) << (7 - j)
      c >>= 3
    out[i] = v
  return out


# ------------------------------------------------------------------------------------------------
# The task object
# ------------------------------------------------------------------------------------------------


class Segmentation(Task):
  """What the trainer and evaluator need from segmentation; reads config.model/data/loss/eval."""
  task_name = 'segmentation'
  metric_name = 'miou'
  prediction_arrays = ('labels',)

  def __init__(self, config: Any):
    super().__init__(config)
    reader = sources.reader_class(config.data.name, self.task_name)
    self.class_names = reader.CLASS_NAMES
    self.num_classes = len(self.class_names)
    self.palette = (reader.PALETTE if reader.PALETTE is not None
                    else default_palette(self.num_classes))
    self.flip_swap = transforms.flip_swap_table(reader.FLIP_PAIRS)
    # Output channels of a mirrored prediction, left/right classes swapped back.
    self.flip_perm = (None if self.flip_swap is None
                      else np.asarray(self.flip_swap[:self.num_classes], np.int32))
    self.ignore_label = 255
    self.align_corners = bool(
        zoo.model_config(config.model.arch, **self.model_kwargs)['align_corners'])

  def head_kwargs(self) -> dict[str, Any]:
    return {'num_classes': self.num_classes}

  def train_transform(self) -> Callable:
    d = self.config.data
    return functools.partial(transforms.random_scale_crop_flip, crop_hw=tuple(d.crop_size),
                             scale_range=tuple(d.scale_range), scale_step=float(d.scale_step),
                             base_size=int(d.base_size), resize_hw=tuple(d.train_resize) or None,
                             flip=d.flip, flip_swap=self.flip_swap,
                             ignore_label=self.ignore_label)

  def eval_transform(self) -> Callable:
    return functools.partial(transforms.segmentation_eval_sample,
                             canvas_hw=tuple(self.config.data.eval_size) or None,
                             resize_hw=tuple(self.config.eval.resize) or None,
                             ignore_label=self.ignore_label)

  def loss(self, outputs: Any, batch: dict) -> tuple[Array, dict]:
    """Weighted CE (or OHEM) on logits upsampled to the label size; OCR adds the aux loss."""
    c = self.config.loss
    labels = batch['label'].astype(jnp.int32)
    weights = tuple(c.class_weights) if c.get('class_weights') else None
    up = functools.partial(upsample_logits, size_hw=labels.shape[1:3],
                           align_corners=self.align_corners)
    if isinstance(outputs, tuple):  # OCR: (aux, out); aux gets plain CE, as officially.
      aux_logits, logits = outputs
      aux = cross_entropy(up(at_least_float32(aux_logits)), labels, weights, self.ignore_label)
    else:
      logits, aux = outputs, None
    logits = up(at_least_float32(logits))
    if c.ohem:
      main = ohem_cross_entropy(logits, labels, weights, c.ohem_thresh, c.ohem_min_kept,
                                self.ignore_label, group=int(c.ohem_group))
    else:
      main = cross_entropy(logits, labels, weights, self.ignore_label)
    if aux is None:
      return main, {}
    return main + c.aux_weight * aux, {'loss_main': main, 'loss_aux': aux}

  def scores(self, apply_fn: Callable, images: Array, batch: dict) -> Array:
    """The eval protocol of config.eval on a normalized batch: per-class scores (summed exp of
    logits) at the label canvas."""
    e, d = self.config.eval, self.config.data
    forward = lambda x: _main(apply_fn(x))
    common = dict(scales=tuple(e.scales), base_size=int(e.base_size), flip=bool(e.flip),
                  flip_perm=self.flip_perm, crop_hw=tuple(e.crop_size or d.crop_size),
                  stride_rate=float(e.stride_rate), align_corners=self.align_corners)
    if e.windows == 'clamp':
      scores = inference.infer_clamped(forward, images, sliding=e.sliding, **common)
    elif e.windows == 'pad':
      pad_value = [-m / s for m, s in zip(d.mean, d.std)]  # black, normalized
      scores = inference.infer_padded(forward, images, batch['image_hw'], pad_value=pad_value,
                                      **common)
    else:
      raise ValueError(f"config.eval.windows must be 'clamp' or 'pad', got {e.windows!r}")
    if e.resize:  # the image was stretched: each prediction back to its label's own size
      scores = inference.resize_region(scores, batch['label'].shape[1:3], batch['image_hw'],
                                       batch['size'], self.align_corners)
    return scores

  def eval_outputs(self, apply_fn: Callable, images: Array, batch: dict) -> dict:
    """Per batch, inside jit: the confusion matrix (and the predictions when they are kept)."""
    pred = jnp.argmax(self.scores(apply_fn, images, batch), axis=-1)
    out = {'confusion': confusion_matrix(pred, batch['label'], self.num_classes,
                                         self.ignore_label)}
    if self.config.eval.get('save_predictions', 0):
      out['pred'] = pred.astype(jnp.uint8)
    return out

  def protocol(self) -> str:
    e = self.config.eval
    size = f', images stretched to {tuple(e.resize)}' if e.resize else ''
    base = f'long side {e.base_size} x scale' if e.base_size else 'image size x scale'
    rule = (f'sliding {e.sliding}' if e.windows == 'clamp'
            else f'padded windows of {tuple(e.crop_size)} at stride {e.stride_rate:.3g}')
    return (f'scales {tuple(e.scales)} ({base}{size}), flip {bool(e.flip)}, {e.windows} rule: '
            f'{rule}')

  def new_metric(self, source: sources.Source) -> 'ConfusionMetric':
    return ConfusionMetric(self.num_classes, self.class_names)

  def write_predictions(self, source: Any, outputs: dict, out_dir: pathlib.Path) -> None:
    """Colour PNGs named after the source samples, without the batching padding."""
    if 'pred' not in outputs:
      return
    names = source.names
    for pred, index, valid, (h, w) in zip(np.asarray(outputs['pred']),
                                          np.asarray(outputs['index']),
                                          np.asarray(outputs['valid']),
                                          np.asarray(outputs['size'])):
      if valid:
        name = names[int(index)] if names else f'{int(index):06d}'
        cv2.imwrite(str(out_dir / f'{name}.png'), colorize(pred[:h, :w], self.palette)[..., ::-1])

  def serving_outputs(self, outputs: Any, input_hw: tuple[int, int],
                      postprocess: bool) -> dict[str, Array]:
    """`logits` (B, H/4, W/4, classes), with OCR also `aux_logits`; post-processed: `labels`
    (B, H, W) int32, the argmax of the logits resized to the input (the official prediction)."""
    if not postprocess:
      if isinstance(outputs, tuple):
        return {'aux_logits': outputs[0], 'logits': outputs[1]}
      return {'logits': outputs}
    logits = upsample_logits(at_least_float32(_main(outputs)), input_hw, self.align_corners)
    return {'labels': jnp.argmax(logits, axis=-1).astype(jnp.int32)}

  # --- predict.py --------------------------------------------------------------------------

  def image_samples(self, image: np.ndarray, boxes: np.ndarray | None = None,
                    box_scores: Sequence[float] | None = None) -> list[dict]:
    """The whole image (boxes do not apply), with an all-ignore label."""
    del boxes, box_scores
    return [{'image': image, 'label': np.full(image.shape[:2], self.ignore_label, np.uint8)}]

  def prediction(self, samples: list[dict], outputs: dict) -> dict:
    """The class-id map at the image size, and the share of pixels per class, largest first."""
    h, w = samples[0]['image'].shape[:2]
    labels = np.asarray(outputs['pred'][0][:h, :w], np.uint8)
    counts = np.bincount(labels.reshape(-1), minlength=self.num_classes)
    order = np.argsort(-counts, kind='stable')
    share = {self.class_names[i]: round(float(counts[i]) / labels.size, 6)
             for i in order if counts[i]}
    return {'labels': labels, 'class_share': share}

  def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
    """The image blended half with the class colours, and a legend of the classes present."""
    from hrnet_jax import visualize
    labels = prediction['labels']
    overlay = (0.5 * image + 0.5 * colorize(labels, self.palette, self.ignore_label))
    names = list(self.class_names)
    entries = [(f'{name} {100 * share:.1f}%', self.palette[names.index(name)])
               for name, share in prediction['class_share'].items()]
    return visualize.beside(overlay.astype(np.uint8),
                            visualize.legend_panel(entries, image.shape[0]))


def _main(outputs: Any) -> Array:
  return outputs[1] if isinstance(outputs, tuple) else outputs


class ConfusionMetric(Metric):
  """Accumulates confusion matrices on the host in int64 (Cityscapes val is ~1e9 pixels)."""

  def __init__(self, num_classes: int, class_names: Sequence[str]):
    self.total = np.zeros((num_classes, num_classes), np.int64)
    self.class_names = class_names

  def update(self, outputs: dict) -> None:
    self.total += np.asarray(outputs['confusion'], np.int64)

  def result(self) -> dict[str, Any]:
    return scores_from_confusion(self.total)

  def report(self) -> str:
    return format_scores(self.result(), self.class_names)

  def summary(self) -> str:
    return summarize_scores(self.result())
