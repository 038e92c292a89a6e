"""Object detection with FCOS on HRNetV2p (the `fcos_*` archs): data, the loss, the evaluation
protocol of mmdetection v2 (which scored the released FCOS-HRNet checkpoints), COCO box AP, and
pictures for predict.py.

Images are resized keeping their aspect (to fit `scale` = (long, short) sides: 1333x800) and
padded at the bottom and right into a canvas. Canvases come from a small fixed set, so only a
few programs compile: training pads each image to the first of `config.data.buckets` that holds
it at the largest training scale (the recipe's: 800x1344 for landscape, 1344x800 for the rest),
and each batch holds one bucket only; evaluation does the same, or with
`config.eval.size_divisor` > 0 pads to the next multiple of it (32: the release's protocol,
exactly, at one program per distinct padded size). Ground-truth boxes travel padded to
`config.data.max_boxes` with a `box_valid` mask.
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

from hrnet_jax.data import sources
from hrnet_jax.data.sources.reader import DataError
from hrnet_jax.errors import ConfigError
from hrnet_jax.models import zoo
from hrnet_jax.tasks import fcos
from hrnet_jax.tasks.base import Metric, Task, at_least_float32, coco_eval

Array = jax.Array
COCO_STATS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm',
              'ARl')


# --- Sizes ------------------------------------------------------------------------------------


def rescale_size(h: int, w: int, scale: Sequence[int]) -> tuple[int, int]:
  """(h, w) resized keeping the aspect so that the long side fits scale[0] and the short side
  scale[1] (mmcv's rule: factor min(long / max(h, w), short / min(h, w)), sides rounded half
  up)."""
  factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
  return int(h * factor + 0.5), int(w * factor + 0.5)


def canvas_size(resized_hw: tuple[int, int], buckets: Sequence[Sequence[int]],
                size_divisor: int = 0) -> tuple[int, int]:
  """The padded size of a resized image: the next multiple of `size_divisor` when it is > 0,
  else the first bucket (h, w) that holds it."""
  h, w = resized_hw
  if size_divisor:
    return -(-h // size_divisor) * size_divisor, -(-w // size_divisor) * size_divisor
  for bh, bw in buckets:
    if h <= bh and w <= bw:
      return int(bh), int(bw)
  raise ConfigError(f'config.data.buckets: no bucket holds a {h}x{w} image; buckets '
                    f'{[tuple(b) for b in buckets]}')


# --- Transforms -------------------------------------------------------------------------------


def resize_pad(sample: dict, scale: Sequence[int], canvas_hw: tuple[int, int],
               pad_value: np.ndarray, flip: bool = False) -> dict:
  """The image resized keeping its aspect (bilinear), optionally mirrored, pasted at the top
  left of its canvas filled with `pad_value` (the mean colour: zero after normalization, as the
  release pads normalized images with zeros); its boxes scaled by the same x and y factors,
  clipped to the resized image, mirrored with it."""
  image = sample['image']
  h, w = image.shape[:2]
  nh, nw = rescale_size(h, w, scale)
  resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
  factors = np.array([nw / w, nh / h], np.float32)
  boxes = np.asarray(sample['boxes'], np.float32).reshape(-1, 4) * np.tile(factors, 2)
  boxes = np.clip(boxes, 0, np.array([nw, nh, nw, nh], np.float32))
  if flip:
    resized = resized[:, ::-1]
    boxes = np.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0], boxes[:, 3]], axis=1)
  ch, cw = canvas_hw
  canvas = np.empty((ch, cw, 3), np.uint8)
  canvas[:] = pad_value
  canvas[:nh, :nw] = resized
  return {'image': canvas, 'boxes': boxes, 'labels': np.asarray(sample['labels'], np.int32),
          'image_hw': np.array([nh, nw], np.int32), 'scale_xy': factors,
          'image_id': np.int64(sample['image_id'])}


def pad_boxes(out: dict, max_boxes: int) -> dict:
  """Boxes and labels padded to `max_boxes` rows, with `box_valid`."""
  n = len(out['boxes'])
  if n > max_boxes:
    raise DataError(f'image {out["image_id"]}: {n} boxes, more than config.data.max_boxes='
                    f'{max_boxes}; raise it')
  boxes = np.zeros((max_boxes, 4), np.float32)
  boxes[:n] = out['boxes']
  labels = np.full((max_boxes,), -1, np.int32)
  labels[:n] = out['labels']
  return dict(out, boxes=boxes, labels=labels, box_valid=np.arange(max_boxes) < n)


def train_canvas(h: int, w: int, scales: Sequence[Sequence[int]],
                 buckets: Sequence[Sequence[int]]) -> tuple[int, int]:
  """A training image's canvas: the bucket that holds it at the largest of the training scales,
  whichever scale a draw resizes it to (so all its draws share one batch group)."""
  sizes = [rescale_size(h, w, s) for s in scales]
  return canvas_size(tuple(int(v) for v in np.max(sizes, axis=0)), buckets)


def eval_canvas(h: int, w: int, scale: Sequence[int], buckets: Sequence[Sequence[int]],
                size_divisor: int) -> tuple[int, int]:
  return canvas_size(rescale_size(h, w, scale), buckets, size_divisor)


def _train_sample(sample: dict, rng: np.random.Generator, *, scales: Sequence[Sequence[int]],
                  buckets: Sequence[Sequence[int]], pad_value: np.ndarray, flip: bool,
                  max_boxes: int) -> dict:
  scale = scales[int(rng.integers(len(scales)))] if len(scales) > 1 else scales[0]
  canvas = train_canvas(*sample['image'].shape[:2], scales, buckets)
  out = resize_pad(sample, scale, canvas, pad_value, flip=flip and rng.random() < 0.5)
  return pad_boxes(out, max_boxes)


def _eval_sample(sample: dict, *, scale: Sequence[int], buckets: Sequence[Sequence[int]],
                 size_divisor: int, pad_value: np.ndarray) -> dict:
  canvas = eval_canvas(*sample['image'].shape[:2], scale, buckets, size_divisor)
  out = resize_pad(sample, scale, canvas, pad_value)
  return {k: out[k] for k in ('image', 'image_hw', 'scale_xy', 'image_id')}


# --- Metric -----------------------------------------------------------------------------------


def detection_rows(outputs: dict, category_ids: Sequence[int]) -> dict[int, list[dict]]:
  """Per valid image of an eval batch (by source index): its detections as COCO results
  (`bbox` [x, y, w, h] in original pixels, w = x2 - x1)."""
  rows = {}
  for i in np.flatnonzero(np.asarray(outputs['valid'])):
    keep = np.asarray(outputs['det_valid'][i], bool)
    boxes = np.asarray(outputs['boxes'][i], np.float64)[keep]
    scores = np.asarray(outputs['scores'][i], np.float64)[keep]
    labels = np.asarray(outputs['labels'][i])[keep]
    image_id = int(outputs['image_id'][i])
    rows[int(outputs['index'][i])] = [
        {'image_id': image_id, 'category_id': int(category_ids[k]),
         'bbox': [round(float(b[0]), 2), round(float(b[1]), 2), round(float(b[2] - b[0]), 2),
                  round(float(b[3] - b[1]), 2)], 'score': round(float(s), 5)}
        for b, s, k in zip(boxes, scores, labels)]
  return rows


class CocoBoxMetric(Metric):
  """COCO box AP of the detections (pycocotools against the split's annotation file, over the
  images evaluated); without an annotation file (plain image lists) it only collects."""

  def __init__(self, category_ids: Sequence[int], annotation_file: str | os.PathLike | None,
               split: str = 'val'):
    self.category_ids = [int(c) for c in category_ids]
    self.annotation_file, self.split = annotation_file, split
    self.rows: dict[int, list[dict]] = {}
    self.image_ids: dict[int, int] = {}
    self.inexact = 0
    self._result: dict[str, Any] | None = None

  def update(self, outputs: dict) -> None:
    self.rows.update(detection_rows(outputs, self.category_ids))
    for i in np.flatnonzero(np.asarray(outputs['valid'])):
      self.image_ids[int(outputs['index'][i])] = int(outputs['image_id'][i])
      self.inexact += int(not outputs['exact'][i])
    self._result = None

  def detections(self) -> list[dict]:
    return [d for index in sorted(self.rows) for d in self.rows[index]]

  def result(self) -> dict[str, Any]:
    if self._result is None:
      dets = self.detections()
      out = {'num_images': len(self.image_ids), 'num_detections': len(dets),
             'nms_capped_images': self.inexact}
      if self.annotation_file is not None:
        out.update(coco_eval(self.annotation_file, dets, 'bbox', COCO_STATS,
                             self.image_ids.values()))
      self._result = out
    return self._result

  def report(self) -> str:
    r = self.result()
    lines = [f'COCO box detection ({r["num_images"]} images, {r["num_detections"]} detections)']
    if self.annotation_file is not None:
      lines += [f'AP {100 * r["AP"]:.1f} | AP50 {100 * r["AP50"]:.1f} | AP75 '
                f'{100 * r["AP75"]:.1f} | APs {100 * r["APs"]:.1f} | APm {100 * r["APm"]:.1f} | '
                f'APl {100 * r["APl"]:.1f}',
                f'AR1 {100 * r["AR1"]:.1f} | AR10 {100 * r["AR10"]:.1f} | AR100 '
                f'{100 * r["AR100"]:.1f} | ARs {100 * r["ARs"]:.1f} | ARm {100 * r["ARm"]:.1f} | '
                f'ARl {100 * r["ARl"]:.1f}']
    if r['nms_capped_images']:
      lines.append(f'{r["nms_capped_images"]} image(s) had more NMS candidates than '
                   'config.eval.max_pairs and fewer survivors than max_per_img: their boxes may '
                   'differ from the uncapped protocol (raise eval.max_pairs)')
    return '\n'.join(lines)

  def summary(self) -> str:
    r = self.result()
    if self.annotation_file is None:
      return f'{r["num_detections"]} detections on {r["num_images"]} images'
    return f'box AP {100 * r["AP"]:.1f}, AP50 {100 * r["AP50"]:.1f}'

  def write(self, out_dir: str | os.PathLike) -> pathlib.Path:
    """`detections_<split>.json`: COCO results (image_id, category_id, bbox, score)."""
    path = pathlib.Path(out_dir) / f'detections_{self.split}.json'
    with open(path, 'w') as f:
      json.dump(self.detections(), f)
    return path


# --- The task ---------------------------------------------------------------------------------


class Detection(Task):
  """FCOS detection; reads config.model/data/loss/eval. Classes come from the dataset's
  categories (its evaluation split's file), or from `classes` ((COCO ids, names)) when the
  data is not at hand."""
  task_name = 'detection'
  metric_name = 'AP'

  def __init__(self, config: Any, classes: tuple[Sequence[int], Sequence[str]] | None = None):
    super().__init__(config)
    if not config.model.arch.startswith('fcos_'):
      raise ConfigError(f'config.model.arch: detection needs an fcos_* arch, got '
                        f'{config.model.arch!r}')
    if classes is None:
      reader = sources.reader_class(config.data.name, self.task_name)
      root = '' if config.data.name == 'coco_detection' and not config.data.root else (
          sources.dataset_root(config.data))
      classes = reader.categories(config.data, root)
    self.category_ids = [int(c) for c in classes[0]]
    self.class_names = [str(n) for n in classes[1]]
    d = config.data
    self.buckets = [tuple(int(v) for v in b) for b in d.buckets]
    self.train_scales = [tuple(int(v) for v in s) for s in d.train_scales]
    self.eval_scale = tuple(int(v) for v in d.eval_scale)
    # The mean colour in uint8: what padding becomes after normalization (~0).
    self.pad_value = np.clip(np.round(np.asarray(d.mean, np.float64)), 0, 255).astype(np.uint8)

  def head_kwargs(self) -> dict[str, Any]:
    return {'num_classes': len(self.class_names)}

  @functools.cached_property
  def strides(self) -> tuple[int, ...]:
    c = zoo.model_config(self.config.model.arch, **self.model_kwargs)
    return fcos.level_strides(c['neck_stride'], c['num_levels'])

  # --- Data ---------------------------------------------------------------------------------

  def source(self, split: str) -> sources.DetectionSource:
    """The split's reader; a training image with more boxes than `data.max_boxes` is an error
    now, naming it, rather than in a worker mid-training."""
    src = super().source(split)
    budget = int(self.config.data.max_boxes)
    if split == self.config.data.train_split and len(src) and src.num_boxes.max() > budget:
      i = int(np.argmax(src.num_boxes))
      raise DataError(f'{self.config.data.name}/{split}: image {src.image_ids[i]} has '
                      f'{src.num_boxes[i]} boxes, more than config.data.max_boxes={budget}; '
                      'raise it')
    return src

  @property
  def size_divisor(self) -> int:
    return int(self.config.eval.get('size_divisor', 0))

  def canvases(self, source: sources.DetectionSource, train: bool) -> list[tuple[int, int]]:
    """Per image of a detection source, its canvas (from the sizes in the source's metadata)."""
    if train:
      return [train_canvas(int(h), int(w), self.train_scales, self.buckets)
              for h, w in zip(source.heights, source.widths)]
    return [eval_canvas(int(h), int(w), self.eval_scale, self.buckets, self.size_divisor)
            for h, w in zip(source.heights, source.widths)]

  def batch_groups(self, source: sources.DetectionSource, train: bool) -> np.ndarray:
    """Per image, the index of its canvas among the distinct ones: a batch holds one canvas."""
    canvases = self.canvases(source, train)
    distinct = sorted(set(canvases))
    return np.asarray([distinct.index(c) for c in canvases], np.int32)

  def train_transform(self) -> Callable:
    d = self.config.data
    return functools.partial(_train_sample, scales=self.train_scales, buckets=self.buckets,
                             pad_value=self.pad_value, flip=bool(d.flip),
                             max_boxes=int(d.max_boxes))

  def eval_transform(self) -> Callable:
    return functools.partial(_eval_sample, scale=self.eval_scale, buckets=self.buckets,
                             size_divisor=self.size_divisor, pad_value=self.pad_value)

  # --- Training -----------------------------------------------------------------------------

  def loss(self, outputs: Any, batch: dict) -> tuple[Array, dict]:
    logits, dist, ctr = outputs
    shapes = [m.shape[1:3] for m in logits]
    l = self.config.loss
    pts = fcos.points(shapes, self.strides)
    ranges = fcos.per_point(shapes, l.regress_ranges)
    radii = fcos.per_point(shapes, [s * float(l.center_sample_radius) for s in self.strides])
    num_classes = logits[0].shape[-1]
    assign = functools.partial(fcos.targets, jnp.asarray(pts), jnp.asarray(ranges),
                               jnp.asarray(radii), num_classes=num_classes,
                               center_sampling=bool(l.center_sampling))
    labels, dist_t = jax.vmap(assign)(batch['boxes'], batch['labels'], batch['box_valid'])
    flat = lambda maps: at_least_float32(fcos.flatten_levels(maps))
    return fcos.fcos_loss(flat(logits), flat(dist), flat(ctr)[..., 0], jnp.asarray(pts),
                          labels, dist_t, box_loss=l.box_loss, alpha=float(l.focal_alpha),
                          gamma=float(l.focal_gamma))

  # --- Evaluation ---------------------------------------------------------------------------

  def decode(self, outputs: Any, image_hw: Array, scale_xy: Array) -> dict[str, Array]:
    """The model's outputs on a batch -> per image the final detections (fcos.decode)."""
    e = self.config.eval
    one = functools.partial(fcos.decode, strides=self.strides, nms_pre=int(e.nms_pre),
                            score_thr=float(e.score_thr), iou_threshold=float(e.nms_iou),
                            max_per_img=int(e.max_per_img), max_pairs=int(e.max_pairs))
    logits, dist, ctr = outputs
    return jax.vmap(lambda a, b, c, hw, s: one(a, b, c, image_hw=hw, scale_xy=s))(
        logits, dist, ctr, image_hw, scale_xy)

  def eval_outputs(self, apply_fn: Callable, images: Array, batch: dict) -> dict:
    out = self.decode(apply_fn(images), batch['image_hw'], batch['scale_xy'])
    return {'boxes': out['boxes'], 'scores': out['scores'], 'labels': out['labels'],
            'det_valid': out['valid'], 'exact': out['exact'], 'image_id': batch['image_id']}

  def protocol(self) -> str:
    e = self.config.eval
    pad = (f'padded to a multiple of {e.size_divisor}' if e.get('size_divisor', 0)
           else f'padded to the buckets {self.buckets}')
    return (f'resized keeping aspect to {self.eval_scale[0]}x{self.eval_scale[1]}, {pad}; top '
            f'{e.nms_pre} points per level, score > {e.score_thr}, class-wise NMS IoU '
            f'{e.nms_iou}, {e.max_per_img} boxes per image')

  def new_metric(self, source: sources.Source) -> CocoBoxMetric:
    from hrnet_jax.data.sources.coco_detection import CocoDetection
    annotations = source.annotation_file if isinstance(source, CocoDetection) else None
    return CocoBoxMetric(self.category_ids, annotations, source.split)

  # --- Export -------------------------------------------------------------------------------

  def serving_outputs(self, outputs: Any, input_hw: tuple[int, int],
                      postprocess: bool) -> dict[str, Array]:
    """Raw: `logits` (B, P, K), `distances` (B, P, 4) (l, t, r, b in input pixels) and
    `centerness` (B, P) logits over the points of all levels (fcos.points order); post-processed:
    the detections of fcos.decode in input pixels, `boxes` (B, 100, 4) x1y1x2y2, `scores`,
    `labels` (-1 where `valid` is false) and `valid`."""
    if not postprocess:
      logits, dist, ctr = outputs
      return {'logits': fcos.flatten_levels(logits), 'distances': fcos.flatten_levels(dist),
              'centerness': fcos.flatten_levels(ctr)[..., 0]}
    b = outputs[0][0].shape[0]
    hw = jnp.broadcast_to(jnp.asarray(input_hw, jnp.int32), (b, 2))
    out = self.decode(outputs, hw, jnp.ones((b, 2), jnp.float32))
    return {k: out[k] for k in ('boxes', 'scores', 'labels', 'valid')}

  # --- predict.py ---------------------------------------------------------------------------

  def image_samples(self, image: np.ndarray, boxes: np.ndarray | None = None,
                    box_scores: Sequence[float] | None = None) -> list[dict]:
    """The whole image (boxes are not used)."""
    del boxes, box_scores
    return [{'image': image, 'boxes': np.zeros((0, 4), np.float32),
             'labels': np.zeros((0,), np.int32), 'image_id': np.int64(0)}]

  def prediction(self, samples: list[dict], outputs: dict) -> dict:
    """The detections of the image: box [x, y, w, h] in image pixels, score, class."""
    out = {k: v[:1] for k, v in outputs.items()}
    out.update(valid=np.ones(1, np.int32), index=np.zeros(1, np.int32))
    rows = detection_rows(out, range(len(self.class_names)))[0]
    return {'detections': [{'box': r['bbox'], 'score': r['score'],
                            'class_id': r['category_id'],
                            'class': self.class_names[r['category_id']]} for r in rows]}

  def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
    """The boxes scoring at least `config.eval.show_score`, coloured by class, with 'class score'
    labels (the JSON keeps every detection of the protocol)."""
    least = float(self.config.eval.get('show_score', 0.3))
    return draw_detections(image, [d for d in prediction['detections'] if d['score'] >= least])


def draw_detections(image: np.ndarray, detections: Sequence[dict],
                    color: tuple[int, int, int] | None = None) -> np.ndarray:
  """Boxes with 'class score' labels over a copy of the image."""
  picture = np.ascontiguousarray(image, np.uint8).copy()
  scale = max(0.35, max(image.shape[:2]) / 1200)
  for d in detections:
    x, y, w, h = d['box']
    c = color or _class_color(int(d['class_id']))
    p1, p2 = (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h)))
    cv2.rectangle(picture, p1, p2, c, max(1, int(round(2 * scale))))
    text = f'{d["class"]} {d["score"]:.2f}'
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    top = max(0, p1[1] - th - 4)
    cv2.rectangle(picture, (p1[0], top), (p1[0] + tw + 2, top + th + 4), c, -1)
    cv2.putText(picture, text, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
  return picture


def _class_color(k: int) -> tuple[int, int, int]:
  rng = np.random.default_rng(k + 11)
  return tuple(int(v) for v in rng.integers(40, 220, 3))
