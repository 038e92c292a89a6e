"""Facial landmark detection (HRNetV2-W18 face alignment: WFLW, 300W, COFW, AFLW): the task
object for the shared trainer and evaluator, the face crops, and the NME metric.

Inside jit: heatmaps (optionally flip-averaged) -> argmax + quarter offset in heatmap pixels (the
pose decoding). On the host: back through the crop to the image, NME per face with the dataset's
normalizer, failure rates and AUC of the cumulative error distribution, named subsets.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
from typing import Any, Callable, Sequence

import cv2
import jax
import numpy as np

from hrnet_jax.data import keypoints, sources
from hrnet_jax.data.sources import faces
from hrnet_jax.tasks.base import HeatmapTask, Metric

Array = jax.Array
THRESHOLDS = (0.08, 0.10)


# --- Crops ------------------------------------------------------------------------------------


def random_face_crop(sample: dict, rng: np.random.Generator, *, input_wh: Sequence[int],
                     heatmap_wh: Sequence[int], sigma: float,
                     flip_pairs: Sequence[tuple[int, int]], scale_factor: float = 0.25,
                     rotation_factor: float = 30.0, rotation_prob: float = 0.6,
                     flip: bool = True, convention: str = 'exact') -> dict:
  """Training crop of one face, as the official face release draws it: scale x U(1 - f, 1 + f),
  rotation U(-r, r) with probability `rotation_prob`, flip (p 0.5) with landmark swaps; one
  bilinear warp; Gaussian targets (weight 0 where a landmark's window leaves the heatmap).

  convention 'official' keeps the official face code's rules: a target sits at the truncated
  heatmap coordinate, and a flip maps x to width - x (the mirrored image: width - 1 - x)."""
  official = _check_convention(convention)
  image = sample['image']
  points = sample['landmarks'].astype(np.float64)
  center = sample['center'].astype(np.float64)
  scale = sample['scale'].astype(np.float64) * rng.uniform(1 - scale_factor, 1 + scale_factor)
  rotation = float(rng.uniform(-rotation_factor, rotation_factor)) \
      if rng.random() <= rotation_prob else 0.0
  ones = np.ones(len(points), np.float32)
  width = image.shape[1]
  flip_width = None
  if flip and rng.random() <= 0.5:
    mirror = width + 1 if official else width  # points and centre go to mirror - 1 - x
    points, _ = keypoints.flip_joints(points, ones, mirror, flip_pairs)
    center = np.array([mirror - 1 - center[0], center[1]])
    flip_width = width
  m = keypoints.crop_matrix(center, scale, rotation, input_wh, flip_width=flip_width)
  crop = cv2.warpAffine(image, m, tuple(int(v) for v in input_wh), flags=cv2.INTER_LINEAR)
  # `points` are already mirrored, so they take the crop part of the warp alone.
  points = keypoints.apply_affine(points, keypoints.crop_matrix(center, scale, rotation,
                                                                input_wh))
  target, weight = keypoints.gaussian_targets(points, ones, input_wh, heatmap_wh, sigma,
                                              rounding=0.0 if official else 0.5)
  return {'image': crop, 'target': target, 'target_weight': weight}


def face_eval_crop(sample: dict, *, input_wh: Sequence[int], convention: str = 'exact') -> dict:
  """The crop at the annotated face (no augmentation) and what decoding needs to map back."""
  if _check_convention(convention):
    crop = official_face_crop(sample['image'], sample['center'], float(sample['scale'][0]),
                              input_wh)
    return {'image': crop, 'center': np.asarray(sample['center'], np.float32),
            'scale': np.asarray(sample['scale'], np.float32)}
  out = keypoints.eval_crop(sample, input_wh=input_wh)
  del out['box_score']
  return out


CONVENTIONS = ('official', 'exact')


def _check_convention(convention: str) -> bool:
  if convention not in CONVENTIONS:
    raise ValueError(f'config.data.convention must be one of {CONVENTIONS}, got {convention!r}')
  return convention == 'official'


def _official_to_crop(q, center, side, out):
  """The official face code's inverse crop transform: crop (or heatmap) coordinate q -> image,
  for a crop of `out` pixels spanning `side` image pixels around `center`."""
  return (np.asarray(q, np.float64) - 0.5 * out) * (side / out) + np.asarray(center, np.float64)


def _bytescale(image: np.ndarray) -> np.ndarray:
  """What the official code's image resizing does to a float image first: its value range
  stretched to 0..255 (min -> 0, max -> 255), rounded to uint8."""
  lo, hi = float(image.min()), float(image.max())
  scale = 255.0 / ((hi - lo) or 1.0)
  return (np.clip((image.astype(np.float64) - lo) * scale, 0, 255) + 0.5).astype(np.uint8)


def _pil_bilinear(image: np.ndarray, size_wh: Sequence[int]) -> np.ndarray:
  from PIL import Image
  return np.asarray(Image.fromarray(_bytescale(image)).resize(
      (int(size_wh[0]), int(size_wh[1])), Image.BILINEAR))


def official_face_crop(image: np.ndarray, center: Sequence[float], scale: float,
                       input_wh: Sequence[int]) -> np.ndarray:
  """The official face evaluation crop, rule for rule: when the crop spans >= 2x the input, the
  image is first shrunk by that factor; the crop box is [ul, br) with corners from the inverse
  transform of pixels -1 and out - 1, truncated, plus 1; outside the image is 0; the box is
  resized to the input by PIL's bilinear filter after the official range stretch (_bytescale).
  """
  out_w, out_h = int(input_wh[0]), int(input_wh[1])
  img = np.asarray(image, np.float32)
  center = np.asarray(center, np.float64)
  ht, wd = img.shape[:2]
  sf = scale * keypoints.PIXEL_STD / out_w
  if sf >= 2:
    new_ht, new_wd = int(np.floor(ht / sf)), int(np.floor(wd / sf))
    if max(new_ht, new_wd) < 2:
      return np.zeros((out_h, out_w, 3), np.uint8)
    img = _pil_bilinear(img, (new_wd, new_ht)).astype(np.float32)
    center, scale = center / sf, scale / sf
  side = scale * keypoints.PIXEL_STD
  corner = lambda q: np.trunc(_official_to_crop(q, center, side, np.array([out_w, out_h]))
                              ).astype(int) + 1
  ul, br = corner([-1.0, -1.0]), corner([out_w - 1.0, out_h - 1.0])
  box = np.zeros((br[1] - ul[1], br[0] - ul[0], 3), np.float32)
  x0, x1 = max(0, ul[0]), min(img.shape[1], br[0])
  y0, y1 = max(0, ul[1]), min(img.shape[0], br[1])
  if x1 > x0 and y1 > y0:
    box[y0 - ul[1]:y1 - ul[1], x0 - ul[0]:x1 - ul[0]] = img[y0:y1, x0:x1]
  return _pil_bilinear(box, (out_w, out_h))


def face_points_to_image(outputs: dict, heatmap_wh: Sequence[int],
                         convention: str = 'exact') -> np.ndarray:
  """Decoded heatmap coordinates -> image pixels. 'exact': the exact inverse of the crop.
  'official': as the official face code, half a heatmap pixel added, the inverse transform
  applied, the result truncated to an integer and 1 added (a map without a positive maximum
  sits at its 1-based 0, i.e. -1)."""
  if not _check_convention(convention):
    return keypoints.decoded_to_image(outputs, heatmap_wh)
  coords = np.asarray(outputs['coords'], np.float64)
  coords = np.where(np.asarray(outputs['scores'])[..., None] > 0, coords, -1.0)
  shifted = dict(outputs, coords=coords + 0.5)
  return np.trunc(keypoints.decoded_to_image(shifted, heatmap_wh)) + 1.0


# --- Metric -----------------------------------------------------------------------------------


def nme_per_face(pred: np.ndarray, truth: np.ndarray, norm: np.ndarray) -> np.ndarray:
  """Mean point-to-point error of each face (M, N, 2) divided by its normalizer (M,)."""
  return np.linalg.norm(pred - truth, axis=-1).mean(axis=-1) / norm


def failure_rate(nme: np.ndarray, threshold: float) -> float:
  """Fraction of faces with NME above `threshold` (strictly, as the official release counts)."""
  return float(np.mean(nme > threshold))


def auc(nme: np.ndarray, threshold: float) -> float:
  """Area under the cumulative error distribution CED(e) = fraction of faces with NME <= e, from
  0 to `threshold`, divided by `threshold` (1 = every face exact).

  Integration rule: exact. CED is a step function, and face i contributes 1[e_i <= e] to it, whose
  integral over [0, t] is max(0, t - e_i); so AUC = mean_i max(0, 1 - e_i / t). (Sampling CED on a
  grid and using the trapezoid rule converges to this as the step shrinks.)"""
  return float(np.mean(np.maximum(0.0, 1.0 - np.asarray(nme, np.float64) / threshold)))


def nme_summary(nme: np.ndarray) -> dict[str, float]:
  out = {'nme': float(np.mean(nme))}
  for t in THRESHOLDS:
    out[f'fr@{t:.2f}'] = failure_rate(nme, t)
    out[f'auc@{t:.2f}'] = auc(nme, t)
  return out


class NMEMetric(Metric):
  """NME over a split (and its named subsets), matched to the truth by sample index. Values are
  fractions (0.046 = 4.6%), as the official release computes them; reports print percent."""

  def __init__(self, source: Any, heatmap_wh: Sequence[int], convention: str = 'exact'):
    self.source = source
    self.heatmap_wh = tuple(heatmap_wh)
    self.convention = convention
    self.pred = np.zeros((len(source), source.dataset.num_landmarks, 2))
    self.seen = np.zeros(len(source), bool)
    self._result = None

  def update(self, outputs: dict) -> None:
    xy = face_points_to_image(outputs, self.heatmap_wh, self.convention)
    for i, (index, valid) in enumerate(zip(np.asarray(outputs['index']),
                                           np.asarray(outputs['valid']))):
      if valid:
        self.pred[int(index)], self.seen[int(index)] = xy[i], True
    self._result = None

  def per_face(self) -> np.ndarray:
    if not self.seen.all():
      raise ValueError(f'NME: {int((~self.seen).sum())} of {len(self.seen)} faces have no '
                       'prediction')
    return nme_per_face(self.pred, self.source.landmarks, self.source.norms())

  def result(self) -> dict[str, Any]:
    if self._result is None:
      nme = self.per_face()
      self._result = nme_summary(nme)
      self._result['num_faces'] = len(nme)
      for name, ids in self.source.subsets().items():
        self._result[f'nme_{name}'] = float(np.mean(nme[ids]))
    return self._result

  def report(self) -> str:
    r = self.result()
    names = ['NME'] + [f'FR@{t:.2f}' for t in THRESHOLDS] + [f'AUC@{t:.2f}' for t in THRESHOLDS]
    values = [r['nme']] + [r[f'fr@{t:.2f}'] for t in THRESHOLDS] + [
        r[f'auc@{t:.2f}'] for t in THRESHOLDS]
    for k in r:
      if k.startswith('nme_'):
        names.append(k[4:])
        values.append(r[k])
    norm = 'box size' if self.source.dataset.norm is None else 'inter-ocular distance'
    return (f'{self.source.dataset.name} {self.source.split}: {r["num_faces"]} faces, NME by '
            f'{norm}, in %\n' + ' | '.join(f'{n:>12}' for n in names) + '\n'
            + ' | '.join(f'{100 * v:12.2f}' for v in values))

  def summary(self) -> str:
    r = self.result()
    return (f'NME {100 * r["nme"]:.2f}%, FR@0.10 {100 * r["fr@0.10"]:.2f}%, AUC@0.10 '
            f'{r["auc@0.10"]:.4f}')

  def write(self, out_dir: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(out_dir) / f'landmarks_{self.source.split}.json'
    rows = [{'image': str(self.source.names[i]), 'landmarks': np.round(self.pred[i], 3).tolist()}
            for i in range(len(self.pred))]
    with open(path, 'w') as f:
      json.dump(rows, f)
    return path


# --- The task ---------------------------------------------------------------------------------


class Landmarks(HeatmapTask):
  """What the trainer, evaluator and predict.py need for face alignment; reads
  config.model/data/loss/eval."""
  task_name = 'landmarks'
  metric_name = 'nme'
  metric_mode = 'min'  # lower NME is better: the trainer keeps the checkpoint with the lowest

  def __init__(self, config: Any):
    super().__init__(config)
    reader = sources.reader_class(config.data.name, self.task_name)
    self.dataset = reader.LAYOUT
    self.flip_pairs = self.dataset.flip_pairs
    self.num_points = self.num_landmarks = self.dataset.num_landmarks
    self.convention = config.data.convention
    _check_convention(self.convention)
    self.decode_first_inner = 1 if self.convention == 'official' else 2

  def train_transform(self) -> Callable:
    d = self.config.data
    return functools.partial(
        random_face_crop, input_wh=self.input_wh, heatmap_wh=self.heatmap_wh, sigma=d.sigma,
        flip_pairs=self.dataset.flip_pairs, scale_factor=d.scale_factor,
        rotation_factor=d.rotation_factor, rotation_prob=d.rotation_prob, flip=d.flip,
        convention=self.convention)

  def eval_transform(self) -> Callable:
    return functools.partial(face_eval_crop, input_wh=self.input_wh, convention=self.convention)

  def protocol(self) -> str:
    norm = 'box size' if self.dataset.norm is None else 'inter-ocular distance'
    return (f'{self.input_wh[0]}x{self.input_wh[1]} crops at the annotated face (x1.25), flip '
            f'test {bool(self.config.eval.flip)}, NME by {norm}, {self.convention} '
            'coordinate convention')

  def new_metric(self, source: sources.Source) -> NMEMetric:
    return NMEMetric(source, self.heatmap_wh, self.convention)

  # --- predict.py hooks ---

  def image_samples(self, image: np.ndarray, boxes: np.ndarray | None = None,
                    box_scores: Sequence[float] | None = None) -> list[dict]:
    """One sample per face box [x, y, w, h] (the whole image without boxes): the crop is the
    box's longer side x1.25 around its centre, as the datasets' face boxes are used."""
    del box_scores
    h, w = image.shape[:2]
    boxes = np.array([[0, 0, w, h]], np.float64) if boxes is None else np.asarray(boxes,
                                                                                 np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
      raise ValueError(f'boxes: expected (N, 4) [x, y, w, h], got shape {boxes.shape}')
    samples = []
    for i, (x, y, bw, bh) in enumerate(boxes):
      scale = max(bw, bh) / keypoints.PIXEL_STD * faces.PADDING
      samples.append({'image': image,
                      'landmarks': np.zeros((self.num_landmarks, 2), np.float32),
                      'center': np.array([x + bw / 2, y + bh / 2], np.float32),
                      'scale': np.array([scale, scale], np.float32),
                      'box_size': np.float32(0), 'index': np.int32(i)})
    return samples

  def prediction(self, samples: list[dict], outputs: dict) -> dict:
    """{'faces': [{'landmarks': [[x, y], ...] in image pixels, 'scores': heatmap peaks}]}."""
    xy = face_points_to_image(outputs, self.heatmap_wh, self.convention)
    scores = np.asarray(outputs['scores'])
    return {'dataset': self.dataset.name,
            'faces': [{'landmarks': [[float(a), float(b)] for a, b in xy[i]],
                       'scores': [float(v) for v in scores[i]]} for i in range(len(samples))]}

  def draw(self, image: np.ndarray, prediction: dict) -> np.ndarray:
    """The image with a dot per landmark (green), sized to the image."""
    out = np.ascontiguousarray(image.copy())
    radius = max(1, round(max(image.shape[:2]) / 200))
    for face in prediction['faces']:
      for x, y in face['landmarks']:
        cv2.circle(out, (int(round(x)), int(round(y))), radius, (0, 255, 0), -1, cv2.LINE_AA)
    return out
