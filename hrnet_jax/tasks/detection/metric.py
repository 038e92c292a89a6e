"""COCO box AP of detections: the eval outputs of any detection framework (per image `boxes`
x1y1x2y2 in original pixels, `scores`, `labels`, `det_valid`, `exact`) as COCO results, scored
by pycocotools."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from hrnet_jax.tasks.base import Metric, coco_eval

COCO_STATS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'AR1', 'AR10', 'AR100', 'ARs', 'ARm',
              'ARl')


def detection_rows(outputs: dict, category_ids: Sequence[int],
                   legacy: bool = False) -> dict[int, list[dict]]:
  """Per valid image of an eval batch (by source index): its detections as COCO results
  (`bbox` [x, y, w, h] in original pixels, w = x2 - x1; legacy, mmdetection v1's inclusive
  boxes: x2 - x1 + 1)."""
  one = 1.0 if legacy else 0.0
  rows = {}
  for i in np.flatnonzero(np.asarray(outputs['valid'])):
    keep = np.asarray(outputs['det_valid'][i], bool)
    boxes = np.asarray(outputs['boxes'][i], np.float64)[keep]
    scores = np.asarray(outputs['scores'][i], np.float64)[keep]
    labels = np.asarray(outputs['labels'][i])[keep]
    image_id = int(outputs['image_id'][i])
    rows[int(outputs['index'][i])] = [
        {'image_id': image_id, 'category_id': int(category_ids[k]),
         'bbox': [round(float(b[0]), 2), round(float(b[1]), 2),
                  round(float(b[2] - b[0] + one), 2), round(float(b[3] - b[1] + one), 2)],
         'score': round(float(s), 5)}
        for b, s, k in zip(boxes, scores, labels)]
  return rows


class CocoBoxMetric(Metric):
  """COCO box AP of the detections (pycocotools against the split's annotation file, over the
  images evaluated); without an annotation file (plain image lists) it only collects.
  `legacy`: boxes are mmdetection v1's inclusive ones (detection_rows)."""

  def __init__(self, category_ids: Sequence[int], annotation_file: str | os.PathLike | None,
               split: str = 'val', legacy: bool = False):
    self.category_ids = [int(c) for c in category_ids]
    self.legacy = legacy
    self.annotation_file, self.split = annotation_file, split
    self.rows: dict[int, list[dict]] = {}
    self.image_ids: dict[int, int] = {}
    self.inexact = 0
    self._result: dict[str, Any] | None = None

  def update(self, outputs: dict) -> None:
    self.rows.update(detection_rows(outputs, self.category_ids, self.legacy))
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


def mask_rows(outputs: dict, category_ids: Sequence[int],
              legacy: bool = False) -> dict[int, list[dict]]:
  """Per valid image of an eval batch (by source index): its detections' masks as COCO `segm`
  results: each 28x28 probability map pasted into its box on the original image
  (ops.paste_masks, `>= 0.5`; legacy: mmdetection v1's paste) and encoded as RLE, scored as its
  box."""
  from hrnet_jax import ops
  rows = {}
  for i in np.flatnonzero(np.asarray(outputs['valid'])):
    keep = np.asarray(outputs['det_valid'][i], bool)
    h, w = (int(v) for v in outputs['orig_hw'][i])
    pasted = ops.paste_masks(np.asarray(outputs['masks'][i])[keep],
                             np.asarray(outputs['boxes'][i])[keep], h, w, legacy=legacy)
    scores = np.asarray(outputs['scores'][i], np.float64)[keep]
    labels = np.asarray(outputs['labels'][i])[keep]
    image_id = int(outputs['image_id'][i])
    rows[int(outputs['index'][i])] = [
        {'image_id': image_id, 'category_id': int(category_ids[k]),
         'segmentation': ops.encode_rle(m), 'score': round(float(s), 5)}
        for m, s, k in zip(pasted, scores, labels)]
  return rows


class CocoInstanceMetric(CocoBoxMetric):
  """COCO box AP and mask AP (`segm`, pycocotools) of detections with instance masks; the mask
  numbers are named `mask_AP`, `mask_AP50`, ..."""

  def __init__(self, category_ids: Sequence[int], annotation_file: str | os.PathLike | None,
               split: str = 'val', legacy: bool = False):
    super().__init__(category_ids, annotation_file, split, legacy)
    self.mask_rows: dict[int, list[dict]] = {}

  def update(self, outputs: dict) -> None:
    super().update(outputs)
    self.mask_rows.update(mask_rows(outputs, self.category_ids, self.legacy))

  def segmentations(self) -> list[dict]:
    return [d for index in sorted(self.mask_rows) for d in self.mask_rows[index]]

  def result(self) -> dict[str, Any]:
    if self._result is None:
      out = super().result()
      if self.annotation_file is not None:
        scores = coco_eval(self.annotation_file, self.segmentations(), 'segm', COCO_STATS,
                           self.image_ids.values())
        out.update({f'mask_{k}': v for k, v in scores.items()})
      self._result = out
    return self._result

  def report(self) -> str:
    lines = [super().report()]
    r = self.result()
    if self.annotation_file is not None:
      lines.append('COCO mask (segm): ' + ' | '.join(
          f'{k} {100 * r["mask_" + k]:.1f}' for k in COCO_STATS))
    return '\n'.join(lines)

  def summary(self) -> str:
    r = self.result()
    if self.annotation_file is None:
      return super().summary()
    return f'{super().summary()}; mask AP {100 * r["mask_AP"]:.1f}'

  def write(self, out_dir: str | os.PathLike) -> pathlib.Path:
    """Also `segmentations_<split>.json`: COCO segm results (RLE) beside the boxes."""
    path = super().write(out_dir)
    with open(pathlib.Path(out_dir) / f'segmentations_{self.split}.json', 'w') as f:
      json.dump(self.segmentations(), f)
    return path
