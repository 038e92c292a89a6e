"""Image classification (HRNet-Wx-C, the ImageNet pretraining of the TPAMI paper): data, the
cross-entropy loss, top-1/top-5 accuracy, and drawing a prediction.

Inside jit: softmax probabilities -> the top-5 class ids and their probabilities. On the host:
accuracy over the valid rows, per-image JSON rows, pictures.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from typing import Any, Callable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax import ops
from hrnet_jax.data import sources, transforms
from hrnet_jax.tasks.base import Metric, Task, at_least_float32

Array = jax.Array
TOP_K = 5


# --- Loss ------------------------------------------------------------------------------------


def cross_entropy(logits: Array, labels: Array, label_smoothing: float = 0.0) -> Array:
  """Mean softmax cross-entropy in float32, with PyTorch's label smoothing: the target is
  (1 - eps) x one-hot + eps / K."""
  logp = jax.nn.log_softmax(at_least_float32(logits), axis=-1)
  k = logits.shape[-1]
  target = jax.nn.one_hot(labels.astype(jnp.int32), k, dtype=jnp.float32)
  if label_smoothing:
    target = (1.0 - label_smoothing) * target + label_smoothing / k
  return -jnp.mean(jnp.sum(target * logp, axis=-1))


# --- Inference and metric --------------------------------------------------------------------


def top_k(probs: Array, k: int = TOP_K) -> tuple[Array, Array]:
  """(ids, probabilities) of the k most probable classes, most probable first (k is capped at
  the number of classes)."""
  values, ids = ops.top_k(probs, min(k, probs.shape[-1]))
  return ids.astype(jnp.int32), values


def topk_rows(outputs: dict) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
  """(source index, label, top ids, top probabilities) of each valid row of an eval batch: the
  one host-side reading of the eval outputs, shared by the metric and `prediction`."""
  ids, probs = np.asarray(outputs['top_ids']), np.asarray(outputs['top_probs'], np.float64)
  labels = np.asarray(outputs['label'])
  n = len(ids)
  valid, index = np.asarray(outputs['valid']), np.asarray(outputs['index'])
  return [(int(index[i]), int(labels[i]), ids[i], probs[i]) for i in range(n) if valid[i]]


class AccuracyMetric(Metric):
  """Top-1 and top-5 accuracy (and error, as the papers report) over a split; padded rows
  (valid 0) count for nothing."""

  def __init__(self, class_names: Sequence[str], names: Sequence[str] | None = None,
               split: str = 'val'):
    self.class_names = list(class_names)
    self.names, self.split = names, split
    self.rows: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}

  def update(self, outputs: dict) -> None:
    k = len(self.class_names)
    for index, label, ids, probs in topk_rows(outputs):
      if not 0 <= label < k:
        raise ValueError(f'classification metric: sample {index} has label {label}, outside '
                         f'[0, {k}) for the {k} classes')
      self.rows[index] = (label, ids, probs)

  def result(self) -> dict[str, float]:
    n = len(self.rows)
    top1 = sum(int(ids[0] == label) for label, ids, _ in self.rows.values())
    top5 = sum(int(label in ids[:TOP_K]) for label, ids, _ in self.rows.values())
    acc1, acc5 = top1 / max(1, n), top5 / max(1, n)
    return {'top1': acc1, 'top5': acc5, 'top1_error': 1.0 - acc1, 'top5_error': 1.0 - acc5,
            'num_images': n}

  def report(self) -> str:
    r = self.result()
    return (f'classification ({r["num_images"]} images, {len(self.class_names)} classes)\n'
            f'top-1 accuracy {100 * r["top1"]:.2f}% (error {100 * r["top1_error"]:.2f}%), '
            f'top-5 accuracy {100 * r["top5"]:.2f}% (error {100 * r["top5_error"]:.2f}%)')

  def summary(self) -> str:
    r = self.result()
    return f'top-1 {100 * r["top1"]:.2f}%, top-5 {100 * r["top5"]:.2f}%'

  def write(self, out_dir: str | os.PathLike) -> pathlib.Path:
    """`predictions_<split>.json`: per image, its label and the top-5 classes."""
    rows = []
    for index, (label, ids, probs) in sorted(self.rows.items()):
      row = {'index': index, 'label': label, 'top5': _top_list(ids, probs, self.class_names)}
      if self.names is not None:
        row['file'] = self.names[index]
      rows.append(row)
    path = pathlib.Path(out_dir) / f'predictions_{self.split}.json'
    with open(path, 'w') as f:
      json.dump(rows, f)
    return path


def _top_list(ids: np.ndarray, probs: np.ndarray, class_names: Sequence[str]) -> list[dict]:
  return [{'class_id': int(i), 'name': class_names[int(i)], 'probability': float(p)}
          for i, p in zip(ids, probs)]


# --- Data ------------------------------------------------------------------------------------


def _eval_sample(sample: dict, *, size_hw: Sequence[int], crop_fraction: float) -> dict:
  out = transforms.resize_center_crop(sample, size_hw=size_hw, crop_fraction=crop_fraction)
  return {'image': out['image'], 'label': np.int32(sample['label'])}


def _train_sample(sample: dict, rng: np.random.Generator, **kwargs: Any) -> dict:
  out = transforms.random_resized_crop_flip(sample, rng, **kwargs)
  return {'image': out['image'], 'label': np.int32(sample['label'])}


# --- The task --------------------------------------------------------------------------------


class Classification(Task):
  """What the trainer, evaluator and predict.py need from classification; reads
  config.model/data/loss/eval. The classes come from the dataset (its training split), or from
  `classes` (keys, readable names) when the data is not at hand (benchmarks)."""
  task_name = 'classification'
  metric_name = 'top1'

  def __init__(self, config: Any, classes: tuple[Sequence[str], Sequence[str]] | None = None):
    super().__init__(config)
    self._sources: dict[str, sources.Source] = {}
    if classes is None:
      reader = sources.reader_class(config.data.name, self.task_name)
      classes = reader.class_list(config.data, sources.dataset_root(config.data))
    self.classes, self.class_names = list(classes[0]), list(classes[1])
    self.num_classes = len(self.classes)
    self.size_hw = tuple(int(v) for v in config.data.input_size)

  def head_kwargs(self) -> dict[str, Any]:
    return {'num_classes': self.num_classes}

  def source(self, split: str) -> sources.Source:
    """The split's reader, listed once per task (an ImageNet listing takes seconds)."""
    if split not in self._sources:
      self._sources[split] = super().source(split)
    return self._sources[split]

  def train_transform(self) -> Callable:
    d = self.config.data
    return functools.partial(_train_sample, size_hw=self.size_hw,
                             area_range=tuple(d.area_range), aspect_range=tuple(d.aspect_range),
                             flip=bool(d.flip))

  def eval_transform(self) -> Callable:
    return functools.partial(_eval_sample, size_hw=self.size_hw,
                             crop_fraction=float(self.config.data.crop_fraction))

  def loss(self, outputs: Array, batch: dict) -> tuple[Array, dict]:
    loss = cross_entropy(outputs, batch['label'], self.config.loss.get('label_smoothing', 0.0))
    correct = jnp.argmax(outputs, axis=-1) == batch['label'].astype(jnp.int32)
    return loss, {'train_top1': jnp.mean(correct.astype(jnp.float32))}

  def probabilities(self, apply_fn: Callable, images: Array) -> Array:
    """Softmax of a normalized batch; with config.eval.flip, averaged with the mirrored image's."""
    if not self.config.eval.get('flip', False):
      return jax.nn.softmax(apply_fn(images).astype(jnp.float32), axis=-1)
    both = apply_fn(jnp.concatenate([images, images[:, :, ::-1]], axis=0)).astype(jnp.float32)
    plain, mirrored = jnp.split(jax.nn.softmax(both, axis=-1), 2, axis=0)
    return 0.5 * (plain + mirrored)

  def serving_outputs(self, outputs: Array, input_hw: tuple[int, int],
                      postprocess: bool) -> dict[str, Array]:
    """`logits` (B, classes); post-processed: `top_ids` (B, 5) int32 and `top_probs` (B, 5),
    the most probable classes of the softmax, most probable first."""
    del input_hw
    if not postprocess:
      return {'logits': outputs}
    ids, probs = top_k(jax.nn.softmax(at_least_float32(outputs), axis=-1))
    return {'top_ids': ids, 'top_probs': probs}

  def eval_outputs(self, apply_fn: Callable, images: Array, batch: dict) -> dict:
    ids, probs = top_k(self.probabilities(apply_fn, images))
    return {'top_ids': ids, 'top_probs': probs, 'label': batch['label']}

  def protocol(self) -> str:
    d = self.config.data
    short = int(np.floor(min(self.size_hw) / float(d.crop_fraction)))
    return (f'shorter side resized to {short}, centre crop {self.size_hw[0]}x{self.size_hw[1]}, '
            f'flip test {bool(self.config.eval.get("flip", False))}')

  def new_metric(self, source: sources.Source) -> AccuracyMetric:
    return AccuracyMetric(self.class_names, source.names, source.split)

  # --- predict.py ------------------------------------------------------------------------------

  def image_samples(self, image: np.ndarray, boxes: np.ndarray | None = None,
                    box_scores: Sequence[float] | None = None) -> list[dict]:
    """The whole image, or one crop per [x, y, w, h] box (clipped to the image), as samples."""
    del box_scores
    h, w = image.shape[:2]
    if boxes is None or len(boxes) == 0:
      return [{'image': image, 'label': np.int32(-1),
               'box': np.array([0, 0, w, h], np.float32)}]
    samples = []
    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
      x0, y0 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
      x1 = int(np.clip(np.ceil(box[0] + box[2]), x0 + 1, w))
      y1 = int(np.clip(np.ceil(box[1] + box[3]), y0 + 1, h))
      samples.append({'image': np.ascontiguousarray(image[y0:y1, x0:x1]), 'label': np.int32(-1),
                      'box': np.array([x0, y0, x1 - x0, y1 - y0], np.float32)})
    return samples

  def prediction(self, samples: list[dict], outputs: dict) -> dict:
    """Per sample: its box (image pixels) and the top-5 classes with names and probabilities."""
    rows = topk_rows({k: v[:len(samples)] for k, v in outputs.items()})
    return {'predictions': [
        {'box': [float(v) for v in s['box']], 'top5': _top_list(ids, probs, self.class_names)}
        for s, (_, _, ids, probs) in zip(samples, rows)]}

  def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
    """The image with numbered boxes (when there are several or a partial one), and a strip on
    the right listing each box's top-5 classes with probability bars."""
    h, w = image.shape[:2]
    canvas = np.ascontiguousarray(image, np.uint8).copy()
    preds = prediction['predictions']
    whole = len(preds) == 1 and preds[0]['box'] == [0.0, 0.0, float(w), float(h)]
    scale = 0.45
    line_h, strip_w = 16, 300
    lines = sum(len(p['top5']) + 1 for p in preds)
    strip = np.full((max(h, lines * line_h + 8), strip_w, 3), 255, np.uint8)
    y = 4
    for n, p in enumerate(preds, 1):
      if not whole:
        x0, y0, bw, bh = (int(round(v)) for v in p['box'])
        cv2.rectangle(canvas, (x0, y0), (x0 + bw - 1, y0 + bh - 1), (255, 0, 0), 2)
        cv2.putText(canvas, str(n), (x0 + 3, y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 0, 0), 1, cv2.LINE_AA)
      title = 'image' if whole else f'box {n}'
      cv2.putText(strip, title, (4, y + 12), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                  cv2.LINE_AA)
      y += line_h
      for t in p['top5']:
        bar = int(round(90 * t['probability']))
        cv2.rectangle(strip, (4, y + 3), (4 + max(1, bar), y + line_h - 3), (70, 130, 230), -1)
        text = f'{100 * t["probability"]:5.1f}% {t["name"][:28]}'
        cv2.putText(strip, text, (98, y + 12), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
        y += line_h
    out = np.full((strip.shape[0], w + strip_w, 3), 255, np.uint8)
    out[:h, :w] = canvas
    out[:, w:] = strip
    return out
