"""Top-down human pose estimation (COCO keypoints, MPII, PoseTrack): the task object for the
shared trainer and evaluator, the heatmap loss, flip test, decoding, OKS NMS, COCO AP, MPII PCKh
and PoseTrack's per-joint AP.

Inside jit: heatmaps (flip-averaged) -> argmax + quarter offset in heatmap pixels. On the host:
back-projection to the image, rescoring, OKS NMS, pycocotools COCOeval / PCKh.
"""

from __future__ import annotations

import collections
import functools
import json
import os
import pathlib
from typing import Any, Callable, Sequence

import cv2
import jax
import numpy as np

from hrnet_jax.data import keypoints, sources
from hrnet_jax.errors import UserError
from hrnet_jax.tasks.base import HeatmapTask, Metric, coco_eval

Array = jax.Array
COCO_STATS = ('AP', 'AP50', 'AP75', 'APm', 'APl', 'AR', 'AR50', 'AR75', 'ARm', 'ARl')


# --- Host-side post-processing ------------------------------------------------------------


def oks_iou(a: np.ndarray, b: np.ndarray, area_a: float, area_b: np.ndarray,
            sigmas: np.ndarray, in_vis_thre: float | None = None) -> np.ndarray:
  """OKS of instance `a` (K, 3: x, y, score) with each of `b` (N, K, 3), scale from the mean of
  the two areas; with `in_vis_thre` only joints scored above it in both count."""
  var = (2 * sigmas) ** 2
  d2 = ((b[..., :2] - a[None, :, :2]) ** 2).sum(-1)  # (N, K)
  e = d2 / var / ((area_a + area_b[:, None]) / 2 + np.spacing(1)) / 2
  if in_vis_thre is None:
    return np.exp(-e).mean(axis=1)
  used = (a[None, :, 2] > in_vis_thre) & (b[..., 2] > in_vis_thre)
  total = (np.exp(-e) * used).sum(axis=1)
  count = used.sum(axis=1)
  return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, thresh: float,
            sigmas: np.ndarray, in_vis_thre: float | None = None) -> list[int]:
  """Greedy NMS by score: keeps an instance, drops every remaining one whose OKS with it is
  above `thresh`. Returns kept indices, best first."""
  order = list(np.argsort(-scores, kind='stable'))
  keep = []
  while order:
    i, rest = order[0], np.asarray(order[1:], np.int64)
    keep.append(int(i))
    if not len(rest):
      break
    oks = oks_iou(kpts[i], kpts[rest], areas[i], areas[rest], sigmas, in_vis_thre)
    order = list(rest[oks <= thresh])
  return keep


def rescore(joint_scores: np.ndarray, box_score: float, in_vis_thre: float) -> float:
  """Box score x the mean of the joint scores above `in_vis_thre` (0 when none is)."""
  good = joint_scores[joint_scores > in_vis_thre]
  return float(box_score * (good.mean() if len(good) else 0.0))


# --- Metrics ---------------------------------------------------------------------------------


class _Predictions:
  """Host-side accumulation of decoded predictions, mapped back to the image."""

  def __init__(self, heatmap_wh: Sequence[int]):
    self.heatmap_wh = tuple(heatmap_wh)
    self.rows: dict[int, tuple] = {}

  def update(self, outputs: dict) -> None:
    image_xy = keypoints.decoded_to_image(outputs, self.heatmap_wh)
    scale = np.asarray(outputs['scale'])
    for i, (index, valid) in enumerate(zip(np.asarray(outputs['index']),
                                           np.asarray(outputs['valid']))):
      if valid:
        self.rows[int(index)] = (image_xy[i], np.asarray(outputs['scores'][i], np.float64),
                                 scale[i], float(outputs['box_score'][i]),
                                 int(outputs['image_id'][i]))


class CocoKeypointMetric(Metric):
  """COCO keypoint AP: rescoring, OKS NMS per image, pycocotools COCOeval('keypoints')."""

  def __init__(self, annotation_file: str | os.PathLike, heatmap_wh: Sequence[int], *,
               in_vis_thre: float = 0.2, oks_thre: float = 0.9, split: str = 'val'):
    self.annotation_file = annotation_file
    self.in_vis_thre, self.oks_thre, self.split = in_vis_thre, oks_thre, split
    self.predictions = _Predictions(heatmap_wh)
    self._result = None

  def update(self, outputs: dict) -> None:
    self.predictions.update(outputs)
    self._result = None

  def detections(self) -> list[dict]:
    """The COCO results list after rescoring and OKS NMS."""
    from hrnet_jax.data.sources.coco import SIGMAS
    per_image = collections.defaultdict(list)
    for xy, joint_scores, scale, box_score, image_id in self.predictions.rows.values():
      kpts = np.concatenate([xy, joint_scores[:, None]], axis=1)
      area = float(np.prod(scale * keypoints.PIXEL_STD))
      per_image[image_id].append((kpts, rescore(joint_scores, box_score, self.in_vis_thre),
                                  area))
    results = []
    for image_id, people in sorted(per_image.items()):
      kpts = np.stack([p[0] for p in people])
      scores = np.array([p[1] for p in people])
      areas = np.array([p[2] for p in people])
      # As the official evaluation: every joint counts in the OKS of the NMS (in_vis_thre only
      # rescores).
      keep = oks_nms(kpts, scores, areas, self.oks_thre, SIGMAS)
      for i in keep:
        results.append({'image_id': image_id, 'category_id': 1,
                        'keypoints': [round(float(v), 3) for v in kpts[i].reshape(-1)],
                        'score': float(scores[i])})
    return results

  def result(self) -> dict[str, float]:
    if self._result is None:
      self._result = coco_keypoint_eval(self.annotation_file, self.detections())
    return self._result

  def report(self) -> str:
    r = self.result()
    names = ' | '.join(f'{k:>6}' for k in COCO_STATS)
    values = ' | '.join(f'{100 * r[k]:6.2f}' for k in COCO_STATS)
    return (f'COCO keypoints ({len(self.predictions.rows)} people scored, '
            f'{r["num_results"]} after OKS NMS)\n{names}\n{values}')

  def summary(self) -> str:
    r = self.result()
    return f'AP {100 * r["AP"]:.2f}, AP50 {100 * r["AP50"]:.2f}, AR {100 * r["AR"]:.2f}'

  def write(self, out_dir: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(out_dir) / f'keypoints_{self.split}_results.json'
    with open(path, 'w') as f:
      json.dump(self.detections(), f)
    return path


def coco_keypoint_eval(annotation_file: str | os.PathLike, results: list[dict]
                       ) -> dict[str, float]:
  """The ten COCOeval keypoint numbers, and the number of results."""
  out = coco_eval(annotation_file, results, 'keypoints', COCO_STATS)
  out['num_results'] = len(results)
  return out


PCKH_GROUPS = (('Head', (9,)), ('Shoulder', (12, 13)), ('Elbow', (11, 14)), ('Wrist', (10, 15)),
               ('Hip', (2, 3)), ('Knee', (1, 4)), ('Ankle', (0, 5)))


def pckh(pred: np.ndarray, truth: np.ndarray, annotated: np.ndarray, head_diag: np.ndarray,
         threshold: float = 0.5, head_factor: float = 0.6) -> dict[str, Any]:
  """MPII PCKh: a joint is correct when it lies within `threshold` x (0.6 x head-box diagonal)
  of the truth. Per joint (%), per body part (mean of left and right), and the mean over joints
  weighted by how often each is annotated, without pelvis and thorax (6, 7)."""
  err = np.linalg.norm(pred - truth, axis=-1) / (head_factor * head_diag[:, None])
  annotated = annotated > 0
  count = annotated.sum(axis=0)
  correct = ((err <= threshold) & annotated).sum(axis=0)
  per_joint = 100.0 * correct / np.maximum(count, 1)
  used = np.ones(len(count), bool)
  used[6:8] = False
  ratio = np.where(used, count, 0) / max(1, np.where(used, count, 0).sum())
  out = {name: float(np.mean(per_joint[list(ids)])) for name, ids in PCKH_GROUPS}
  out['mean'] = float((per_joint * ratio).sum())
  out['per_joint'] = per_joint
  return out


# The official MPII table's "Mean@0.1" is row 11 of thresholds np.arange(0, 0.51, 0.01): 0.11.
OFFICIAL_MEAN_AT_01_THRESHOLD = float(np.arange(0, 0.5 + 0.01, 0.01)[11])


class _SampleMetric(Metric):
  """A metric over the split's samples: the estimates kept by sample index, the truth read
  from the source."""

  def __init__(self, source: Any, heatmap_wh: Sequence[int]):
    self.source = source
    self.predictions = _Predictions(heatmap_wh)
    self._result = None

  def update(self, outputs: dict) -> None:
    self.predictions.update(outputs)
    self._result = None


class PCKhMetric(_SampleMetric):
  """MPII PCKh@0.5 (and the mean at 0.1) over a split, matched to the truth by sample index."""

  def result(self) -> dict[str, Any]:
    if self._result is None:
      diag, truth, annotated = self.source.head_sizes_and_truth()
      pred = np.zeros_like(truth)
      seen = np.zeros(len(truth), bool)
      for index, row in self.predictions.rows.items():
        pred[index], seen[index] = row[0], True
      if not seen.all():
        raise ValueError(f'PCKh: {int((~seen).sum())} of {len(seen)} people have no prediction')
      at05 = pckh(pred, truth, annotated, diag, 0.5)
      at01 = pckh(pred, truth, annotated, diag, 0.1)
      official = pckh(pred, truth, annotated, diag, OFFICIAL_MEAN_AT_01_THRESHOLD)
      self._result = {'pckh': at05['mean'], 'pckh@0.1': at01['mean'],
                      'pckh@0.1_official': official['mean'],
                      **{k: v for k, v in at05.items() if k not in ('mean',)}}
    return self._result

  def report(self) -> str:
    r = self.result()
    names = [n for n, _ in PCKH_GROUPS] + ['Mean', 'Mean@0.1', 'official']
    values = [r[n] for n, _ in PCKH_GROUPS] + [r['pckh'], r['pckh@0.1'],
                                               r['pckh@0.1_official']]
    return ('MPII PCKh@0.5 (Mean@0.1: at exactly 0.1; official: the official table\'s '
            '"Mean@0.1", read at 0.11)\n' + ' | '.join(f'{n:>8}' for n in names) + '\n'
            + ' | '.join(f'{v:8.2f}' for v in values))

  def summary(self) -> str:
    r = self.result()
    return f'PCKh@0.5 {r["pckh"]:.2f}, @0.1 {r["pckh@0.1"]:.2f}'


class PoseTrackMetric(_SampleMetric):
  """PoseTrack's per-joint AP (the official rules: hrnet_jax.tracking.posetrack_metrics) of the
  estimates on the split's people, every joint kept with its heatmap score; the frames written
  back into their videos."""

  def videos(self) -> list[tuple[Any, Any]]:
    """(ground truth, prediction) per video; predicted people without track ids."""
    import dataclasses

    from hrnet_jax.data.sources.posetrack import SLOT_OF_JOINT, Frame, Person
    truth = self.source.ground_truth()
    people = collections.defaultdict(list)
    for index, (xy, scores, *_) in self.predictions.rows.items():
      slots = list(SLOT_OF_JOINT)
      people[int(self.source.video_index[index]), int(self.source.frame_index[index])].append(
          Person(None, np.asarray(xy[slots], np.float64), np.ones(15, bool),
                 np.asarray(scores[slots], np.float64)))
    pairs = []
    for v, video in enumerate(truth):
      frames = [Frame(f.image, people.get((v, i), [])) for i, f in enumerate(video.frames)]
      pairs.append((video, dataclasses.replace(video, frames=frames)))
    return pairs

  def evaluation(self) -> dict[str, Any]:
    """posetrack_metrics.evaluate's result (AP only)."""
    if self._result is None:
      from hrnet_jax.tracking import posetrack_metrics
      self._result = posetrack_metrics.evaluate(self.videos(), track=False)
    return self._result

  def result(self) -> dict[str, Any]:
    """`mAP` (the Total) and each column of the official table, in %; `ap` per joint (16,)."""
    from hrnet_jax.tracking import posetrack_metrics
    ap = self.evaluation()['ap']['ap']
    groups = {name: float(np.mean(ap[list(ids)])) for name, ids in posetrack_metrics.GROUPS}
    return {'mAP': float(ap[-1]), **groups, 'ap': ap}

  def report(self) -> str:
    from hrnet_jax.tracking import posetrack_metrics
    return (f'PoseTrack AP ({self.evaluation()["frames"]} labelled frames)\n'
            + posetrack_metrics.tables(self.evaluation()).split('\n', 1)[1])

  def summary(self) -> str:
    return f'mAP {self.result()["mAP"]:.2f}'


# --- The task --------------------------------------------------------------------------------


class Pose(HeatmapTask):
  """What the trainer, evaluator and predict.py need from top-down pose; reads
  config.model/data/loss/eval. COCO scores AP (pycocotools), MPII PCKh."""
  task_name = 'pose'

  def __init__(self, config: Any):
    super().__init__(config)
    reader = sources.reader_class(config.data.name, self.task_name)
    self.joint_names, self.flip_pairs = reader.KEYPOINT_NAMES, reader.FLIP_PAIRS
    self.upper_body, self.skeleton = reader.UPPER_BODY, reader.SKELETON
    self.num_points = len(self.joint_names)
    # PoseTrack's readers (either layout, the demo) are scored by PoseTrack's AP.
    from hrnet_jax.data.sources.posetrack import PoseTrackKeypoints
    self.videos = issubclass(reader, PoseTrackKeypoints)
    self.metric_name = 'mAP' if self.videos else 'pckh' if config.data.name == 'mpii' else 'AP'

  def train_transform(self) -> Callable:
    d = self.config.data
    return functools.partial(
        keypoints.random_top_down, input_wh=self.input_wh, heatmap_wh=self.heatmap_wh,
        sigma=d.sigma, flip_pairs=self.flip_pairs, upper_ids=self.upper_body,
        scale_factor=d.scale_factor, rotation_factor=d.rotation_factor,
        rotation_prob=d.rotation_prob, flip=d.flip, half_body_prob=d.half_body_prob,
        half_body_min_joints=d.half_body_min_joints)

  def eval_transform(self) -> Callable:
    return functools.partial(_eval_sample, input_wh=self.input_wh)

  def eval_outputs(self, apply_fn: Callable, images: Array, batch: dict) -> dict:
    """The decoded joints (`scores`: per joint) with the box score and image id."""
    out = super().eval_outputs(apply_fn, images, batch)
    return dict(out, box_score=batch['box_score'], image_id=batch['image_id'])

  def protocol(self) -> str:
    e = self.config.eval
    return (f'{self.input_wh[0]}x{self.input_wh[1]} crops, flip test {bool(e.flip)}'
            + ('' if self.config.data.name == 'mpii' else
               f', in_vis_thre {e.in_vis_thre}, OKS NMS {e.oks_thre}'))

  def new_metric(self, source: sources.Source) -> Metric:
    """The metric of an evaluation split (its source carries the ground truth)."""
    if self.config.data.name == 'mpii':
      return PCKhMetric(source, self.heatmap_wh)
    if self.videos:
      return PoseTrackMetric(source, self.heatmap_wh)
    e = self.config.eval
    return CocoKeypointMetric(source.annotation_file, self.heatmap_wh, in_vis_thre=e.in_vis_thre,
                              oks_thre=e.oks_thre, split=source.split)

  # --- predict.py --------------------------------------------------------------------------

  def image_samples(self, image: np.ndarray, boxes: np.ndarray | None = None,
                    box_scores: Sequence[float] | None = None) -> list[dict]:
    """One person per box ([x, y, w, h], clipped as the COCO reader clips annotation boxes);
    without boxes, the whole image is one person's box. Each person's box score is the
    detector's (`box_scores`), else 1: the person score is rescaled by it, as in evaluation."""
    from hrnet_jax.data.sources.coco import clean_box
    h, w = image.shape[:2]
    if h < 2 or w < 2:
      raise UserError(f'image too small for pose: {w}x{h} pixels (at least 2x2)')
    boxes = np.array([[0, 0, w, h]], np.float32) if boxes is None else np.asarray(boxes)
    scores = np.ones(len(boxes)) if box_scores is None else np.asarray(box_scores, np.float64)
    if len(scores) != len(boxes):
      raise ValueError(f'{len(scores)} box scores for {len(boxes)} boxes')
    samples = []
    for box, score in zip(boxes, scores):
      clean = clean_box(box, w, h)
      if clean is None:
        raise ValueError(f'box {list(map(float, box))} is empty inside the {w}x{h} image')
      center, scale = keypoints.box_to_center_scale(clean, self.input_wh[0] / self.input_wh[1])
      samples.append({'image': image, 'center': center, 'scale': scale, 'score': float(score),
                      'image_id': 0, 'box': clean})
    return samples

  def prediction(self, samples: list[dict], outputs: dict) -> dict:
    """Per box: keypoints (x, y, joint score) in image pixels and the rescored person score, as
    the COCO metric computes them (no OKS NMS: the boxes are the caller's). No samples (a
    detector found nobody): no people."""
    if not samples:
      return {'joint_names': list(self.joint_names), 'people': []}
    image_xy = keypoints.decoded_to_image(outputs, self.heatmap_wh)
    people = []
    for i, sample in enumerate(samples):
      joint_scores = np.asarray(outputs['scores'][i], np.float64)
      people.append({
          'box': [round(float(v), 2) for v in sample['box']],
          'keypoints': [[round(float(x), 3), round(float(y), 3), round(float(s), 4)]
                        for (x, y), s in zip(image_xy[i], joint_scores)],
          'score': rescore(joint_scores, float(outputs['box_score'][i]),
                           self.config.eval.get('in_vis_thre', 0.2))})
    return {'joint_names': list(self.joint_names), 'people': people}

  def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
    """Boxes, limbs and joints; joints scoring under in_vis_thre are left out. A tracked person
    (with a `track_id`) is drawn in its id's colour, labelled 'id N'."""
    from hrnet_jax.visualize import color_of
    thre = self.config.eval.get('in_vis_thre', 0.2)
    picture = np.ascontiguousarray(image.copy())
    radius = max(2, round(max(image.shape[:2]) / 200))
    for person in prediction['people']:
      tracked = person.get('track_id') is not None
      box_color, limb_color, joint_color = ((color_of(person['track_id']),) * 3 if tracked else
                                            ((255, 255, 0), (0, 255, 0), (255, 0, 0)))
      x, y, w, h = person['box']
      cv2.rectangle(picture, (round(x), round(y)), (round(x + w), round(y + h)), box_color, 1)
      k = np.asarray(person['keypoints'])
      for a, b in self.skeleton:
        if k[a, 2] >= thre and k[b, 2] >= thre:
          cv2.line(picture, (round(k[a, 0]), round(k[a, 1])), (round(k[b, 0]), round(k[b, 1])),
                   limb_color, max(1, radius // 2), cv2.LINE_AA)
      for px, py, s in k:
        if s >= thre:
          cv2.circle(picture, (round(px), round(py)), radius, joint_color, -1, cv2.LINE_AA)
      if tracked:
        cv2.putText(picture, f'id {person["track_id"]}', (round(x), max(10, round(y) - 3)),
                    cv2.FONT_HERSHEY_SIMPLEX, max(0.35, max(image.shape[:2]) / 1200),
                    box_color, 1, cv2.LINE_AA)
    return picture


def _eval_sample(sample: dict, *, input_wh: Sequence[int]) -> dict:
  out = keypoints.eval_crop(sample, input_wh=input_wh)
  out['image_id'] = np.int32(sample['image_id'])
  return out
