"""The detection task family's shared part, `DetectionTask`; each framework is a module of its
own beside it (fcos.py). Images are resized keeping their aspect and padded into canvases of a
few fixed sizes (canvas.py), so only a few programs compile; ground-truth boxes travel padded to
`config.data.max_boxes` with a `box_valid` mask; scores are COCO box AP (metric.py)."""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Sequence

import jax
import numpy as np

from hrnet_jax.data import sources
from hrnet_jax.data.sources.reader import DataError
from hrnet_jax.tasks.base import Task
from hrnet_jax.tasks.detection import canvas, draw, metric

Array = jax.Array


class DetectionTask(Task):
  """What every detection framework shares: the classes, the sources, the canvases and their
  transforms, the COCO box metric, predict.py's samples, results and pictures. A framework
  (fcos.FCOS, ...) adds its loss, `decode` (the model's outputs -> per image `boxes` x1y1x2y2
  in original pixels, `scores`, `labels`, `valid`, `exact`), `protocol` and export outputs.
  Classes come from the dataset's categories (its evaluation split's file), or from `classes`
  ((COCO ids, names)) when the data is not at hand."""
  task_name = 'detection'
  metric_name = 'AP'
  # Whether the post-processed export (`serving_outputs(..., postprocess=True)`) converts to
  # ONNX: it must run batched, without vmap (the converter's batching rules fail on this JAX).
  onnx_postprocess: ClassVar[bool] = False
  # Whether the raw network converts to ONNX at all (CenterNet's does not finish: see
  # keypoint_triplets.CenterNet).
  onnx_export: ClassVar[bool] = True

  def __init__(self, config: Any, classes: tuple[Sequence[int], Sequence[str]] | None = None):
    super().__init__(config)
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

  @property
  def legacy(self) -> bool:
    """mmdetection v1's arithmetic (inclusive boxes: COCO widths x2 - x1 + 1, one resize
    factor): frameworks whose model has a `legacy` setting say so."""
    return False

  def resize_protocol(self) -> str:
    """The test-time resize and padding, the first clause of every framework's `protocol`."""
    pad = (f'padded to a multiple of {self.size_divisor}' if self.size_divisor
           else f'padded to the buckets {self.buckets}')
    return f'resized keeping aspect to {self.eval_scale[0]}x{self.eval_scale[1]}, {pad}'

  def canvases(self, source: sources.DetectionSource, train: bool) -> list[tuple[int, int]]:
    """Per image of a detection source, its canvas (from the sizes in the source's metadata)."""
    if train:
      return [canvas.train_canvas(int(h), int(w), self.train_scales, self.buckets)
              for h, w in zip(source.heights, source.widths)]
    return [canvas.eval_canvas(int(h), int(w), self.eval_scale, self.buckets, self.size_divisor)
            for h, w in zip(source.heights, source.widths)]

  def batch_groups(self, source: sources.DetectionSource, train: bool) -> np.ndarray:
    """Per image, the index of its canvas among the distinct ones: a batch holds one canvas."""
    canvases = self.canvases(source, train)
    distinct = sorted(set(canvases))
    return np.asarray([distinct.index(c) for c in canvases], np.int32)

  def train_transform(self) -> Callable:
    d = self.config.data
    return functools.partial(canvas.train_sample, scales=self.train_scales, buckets=self.buckets,
                             pad_value=self.pad_value, flip=bool(d.flip),
                             max_boxes=int(d.max_boxes), masks=bool(d.get('masks', False)),
                             semantic=bool(d.get('semantic', False)))

  def eval_transform(self) -> Callable:
    return functools.partial(canvas.eval_sample, scale=self.eval_scale, buckets=self.buckets,
                             size_divisor=self.size_divisor, pad_value=self.pad_value,
                             one_factor=self.legacy)

  # --- Evaluation ---------------------------------------------------------------------------

  def decode(self, outputs: Any, image_hw: Array, scale_xy: Array) -> dict[str, Array]:
    """*Required.* The model's outputs on a batch -> per image the final detections."""
    raise NotImplementedError(f'{type(self).__name__} has no decode')

  def eval_outputs(self, apply_fn: Callable, images: Array, batch: dict) -> dict:
    out = self.decode(apply_fn(images), batch['image_hw'], batch['scale_xy'])
    return {'boxes': out['boxes'], 'scores': out['scores'], 'labels': out['labels'],
            'det_valid': out['valid'], 'exact': out['exact'], 'image_id': batch['image_id']}

  def new_metric(self, source: sources.Source) -> metric.CocoBoxMetric:
    from hrnet_jax.data.sources.coco_detection import CocoDetection
    annotations = source.annotation_file if isinstance(source, CocoDetection) else None
    return metric.CocoBoxMetric(self.category_ids, annotations, source.split,
                                legacy=self.legacy)

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
    rows = metric.detection_rows(out, range(len(self.class_names)), self.legacy)[0]
    return {'detections': [{'box': r['bbox'], 'score': r['score'],
                            'class_id': r['category_id'],
                            'class': self.class_names[r['category_id']]} for r in rows]}

  def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
    """The boxes scoring at least `config.eval.show_score`, coloured by class, with 'class score'
    labels (the JSON keeps every detection of the protocol)."""
    least = float(self.config.eval.get('show_score', 0.3))
    return draw.draw_detections(image, [d for d in prediction['detections'] if d['score'] >= least])
