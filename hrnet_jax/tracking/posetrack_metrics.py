"""The PoseTrack metrics with the official evaluation's rules (poseval), quirks included:

- frames whose ground truth has no people are dropped (their predictions too); people without
  `annopoints` (2017 layout) are dropped; in frames with ignore regions, ground-truth and
  predicted joints strictly inside a region are removed, and people left with no joint;
- a predicted joint matches a ground-truth joint within 0.5 head sizes (0.6 x the head box's
  diagonal); per frame each prediction keeps only its best person by the fraction of matched
  joints, and each person the best such prediction;
- AP per joint over all frames, ranked by joint score (missing: -9999), VOC's area under the
  monotone precision envelope, over the annotated joints; precision and recall at the end;
- MOTA per joint by CLEAR-MOT (py-motmetrics) with objects = ground-truth track ids having the
  joint, hypotheses = predicted ids having it, distance = the normalized distance when it
  matches; per video without its last frame; a frame with no predictions (or, after ignore
  regions, no people) counts one miss and one false positive per joint instead of its people;
  counts summed over videos; MOTP = 1 - (sum of distances) / matches, where the sum runs over
  py-motmetrics' events as the official one sums them: every candidate pair within the
  threshold (its RAW events) besides the matches, so a matched distance counts twice;
- Total = the mean over the joints with a number; the tables group joints as the official one
  (Head = head_top, head_bottom, nose; the others left and right).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from hrnet_jax.data.sources.posetrack import JOINTS, Person, Video
from hrnet_jax.data.sources.reader import DataError

THRESHOLD = 0.5  # PCKh: distance / head size
HEAD_SIZE = 0.6  # x the head box's diagonal
MIN_SCORE = -9999.0  # a predicted joint without a score
NUM_JOINTS = len(JOINTS)
# The tables' columns: joint ids averaged per column, as the official table groups them.
GROUPS = (('Head', (14, 12, 13)), ('Shou', (8, 9)), ('Elb', (7, 10)), ('Wri', (6, 11)),
          ('Hip', (2, 3)), ('Knee', (1, 4)), ('Ankl', (0, 5)))
MOT_COUNTS = ('num_misses', 'num_switches', 'num_false_positives', 'num_objects',
              'num_detections')


def inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
  """(N,) bool: points (N, 2) strictly inside `polygon` (K, 2), even-odd rule; points on an
  edge are outside (as shapely's `contains`, which the official evaluation calls). Fewer than
  three corners contain nothing."""
  points = np.asarray(points, np.float64).reshape(-1, 2)
  polygon = np.asarray(polygon, np.float64).reshape(-1, 2)
  if len(polygon) < 3:
    return np.zeros(len(points), bool)
  x, y = points[:, :1], points[:, 1:]
  ax, ay = polygon[:, 0], polygon[:, 1]
  bx, by = np.roll(ax, -1), np.roll(ay, -1)
  cross = (bx - ax) * (y - ay) - (by - ay) * (x - ax)
  on_edge = ((cross == 0) & (np.minimum(ax, bx) <= x) & (x <= np.maximum(ax, bx))
             & (np.minimum(ay, by) <= y) & (y <= np.maximum(ay, by)))
  with np.errstate(divide='ignore', invalid='ignore'):
    at_x = ax + (y - ay) * (bx - ax) / (by - ay)
  crosses = ((ay > y) != (by > y)) & (x < at_x)
  return (np.sum(crosses, axis=1) % 2 == 1) & ~np.any(on_edge, axis=1)


def _drop_ignored(people: list[Person], regions: list[np.ndarray]) -> list[Person]:
  kept = []
  for person in people:
    inside = np.zeros(NUM_JOINTS, bool)
    for region in regions:
      inside |= inside_polygon(person.joints, region)
    present = person.present & ~inside
    if present.any():
      kept.append(dataclasses.replace(person, present=present))
  return kept


def evaluated_frames(gt: Video, pred: Video) -> list[tuple[list[Person], list[Person]]]:
  """The (ground truth, prediction) people of the frames the evaluation keeps, in order."""
  if len(gt.frames) != len(pred.frames):
    raise DataError(f'prediction {pred.name}: {len(pred.frames)} frames, the ground truth has '
                    f'{len(gt.frames)}')
  out = []
  for g, p in zip(gt.frames, pred.frames):
    if not g.people:
      continue
    gp = [q for q in g.people if q.has_points]
    pp = [q for q in p.people if q.has_points]
    if g.ignore_regions:
      gp, pp = _drop_ignored(gp, g.ignore_regions), _drop_ignored(pp, g.ignore_regions)
    out.append((gp, pp))
  return out


@dataclasses.dataclass
class FrameMatch:
  """One frame's contribution: per joint the predictions' (score, label) and the annotated
  count; per joint the CLEAR-MOT input (ground-truth ids, predicted ids, distances (G, P),
  nan = no match)."""
  scores: list[np.ndarray]
  labels: list[np.ndarray]
  num_gt: np.ndarray
  mot: list[tuple[list[int], list[int], np.ndarray]]


def match_frame(gt: list[Person], pred: list[Person], where: str = '') -> FrameMatch:
  """Predictions to ground truth in one frame (module docstring)."""
  has_gt = np.asarray([q.present for q in gt], bool).reshape(len(gt), NUM_JOINTS)
  has_pr = np.asarray([q.present for q in pred], bool).reshape(len(pred), NUM_JOINTS)
  score = np.asarray([np.where(np.isnan(q.scores), MIN_SCORE, q.scores) for q in pred],
                     np.float64).reshape(len(pred), NUM_JOINTS)
  num_gt = has_gt.sum(0)
  if not (gt and pred):  # every prediction is a false positive; MOT: one dummy miss and FP
    labels = [np.zeros(int(has_pr[:, j].sum()), bool) for j in range(NUM_JOINTS)]
    scores = [score[has_pr[:, j], j] for j in range(NUM_JOINTS)]
    dummy = ([0], [0], np.full((1, 1), np.nan))
    return FrameMatch(scores, labels, num_gt, [dummy] * NUM_JOINTS)
  dist = np.full((len(pred), len(gt), NUM_JOINTS), np.inf)
  for g, person in enumerate(gt):
    if person.head is None:
      raise DataError(f'{where}: a person (track {person.track_id}) has no head box (x1 y1 x2 '
                      f'y2 / bbox_head), which PCKh needs')
    size = HEAD_SIZE * np.linalg.norm(person.head[2:] - person.head[:2])
    for p, other in enumerate(pred):
      both = has_gt[g] & has_pr[p]
      with np.errstate(divide='ignore', invalid='ignore'):
        d = np.linalg.norm(person.joints - other.joints, axis=1) / size
      dist[p, g, both] = d[both]
  match = dist <= THRESHOLD
  annotated = has_gt.sum(1)[None, :]  # a person with no joint matches nothing: pck 0
  pck = match.sum(2) / np.maximum(annotated, 1)
  best = np.argmax(pck, axis=1)
  pck = np.where(np.arange(len(gt))[None, :] == best[:, None], pck, 0.0)
  pred_of_gt = np.argmax(pck, axis=0)
  pred_of_gt[np.max(pck, axis=0) == 0] = -1
  labels_per_pred = np.zeros((len(pred), NUM_JOINTS), bool)
  for p in range(len(pred)):
    owner = np.flatnonzero(pred_of_gt == p)
    if owner.size:
      labels_per_pred[p] = match[p, owner[0]]
  scores = [score[has_pr[:, j], j] for j in range(NUM_JOINTS)]
  labels = [labels_per_pred[has_pr[:, j], j] for j in range(NUM_JOINTS)]
  mot = []
  for j in range(NUM_JOINTS):
    gi, pi = np.flatnonzero(has_gt[:, j]), np.flatnonzero(has_pr[:, j])
    d = dist[np.ix_(pi, gi, [j])][..., 0].T
    d = np.where(match[np.ix_(pi, gi, [j])][..., 0].T, d, np.nan)
    mot.append(([gt[i].track_id for i in gi], [pred[i].track_id for i in pi], d))
  return FrameMatch(scores, labels, num_gt, mot)


def _voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
  """The area under the monotone precision envelope, summed where recall changes."""
  mrec = np.concatenate([[0.0], recall, [1.0]])
  mpre = np.concatenate([[0.0], precision, [0.0]])
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  i = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
  return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def _with_total(values: np.ndarray) -> np.ndarray:
  ok = ~np.isnan(values)
  return np.append(values, values[ok].mean() if ok.any() else np.nan)


def average_precision(frames: Sequence[FrameMatch]) -> dict[str, np.ndarray]:
  """Per joint and Total (16,): AP, precision and recall (the last point of the curve), in %."""
  ap, pre, rec = np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS), np.zeros(NUM_JOINTS)
  num_gt = np.sum([f.num_gt for f in frames], axis=0) if frames else np.zeros(NUM_JOINTS)
  for j in range(NUM_JOINTS):
    scores = np.concatenate([np.zeros(0)] + [f.scores[j] for f in frames])
    labels = np.concatenate([np.zeros(0, bool)] + [f.labels[j] for f in frames])
    if not len(scores):
      continue
    order = scores.argsort()[::-1]  # the official order, ties included
    hits = np.cumsum(labels[order])
    with np.errstate(divide='ignore', invalid='ignore'):
      recall = hits / np.float64(num_gt[j])
    precision = hits / np.arange(1, len(order) + 1)
    ap[j] = _voc_ap(recall, precision) * 100
    pre[j], rec[j] = precision[-1] * 100, recall[-1] * 100
  return {'ap': _with_total(ap), 'precision': _with_total(pre), 'recall': _with_total(rec),
          'num_gt': num_gt}


def mot_counts(frames: Sequence[FrameMatch]) -> dict[str, np.ndarray]:
  """CLEAR-MOT counts per joint (15,) of one video (its frames without the last) and the sum of
  matched distances (`sum_distance`)."""
  import motmetrics  # pylint: disable=import-outside-toplevel
  metrics = motmetrics.metrics.create()
  out = {k: np.zeros(NUM_JOINTS) for k in MOT_COUNTS + ('sum_distance',)}
  for j in range(NUM_JOINTS):
    acc = motmetrics.MOTAccumulator(auto_id=True)
    for frame in frames[:-1]:
      acc.update(*frame.mot[j])
    counts = metrics.compute(acc, metrics=list(MOT_COUNTS), return_dataframe=False, name='acc')
    for k in MOT_COUNTS:
      out[k][j] = counts[k]
    out['sum_distance'][j] = acc.events['D'].sum()
  return out


def mot_metrics(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """MOTA, MOTP, precision and recall per joint and Total (16,), in %, from summed counts."""
  objects = np.where(counts['num_objects'] > 0, counts['num_objects'], np.nan)
  fp, det = counts['num_false_positives'], counts['num_detections']
  with np.errstate(divide='ignore', invalid='ignore'):
    mota = 100 * (1 - (counts['num_misses'] + counts['num_switches'] + fp) / objects)
    motp = np.where((det == 0) | np.isnan(counts['sum_distance']), 0.0,
                    100 * (1 - counts['sum_distance'] / det))
    pre = 100 * det / np.where(fp + det > 0, fp + det, np.nan)
    rec = 100 * det / objects
  return {'mota': _with_total(mota), 'motp': _with_total(motp), 'precision': _with_total(pre),
          'recall': _with_total(rec)}


def check_track_ids(video: Video, what: str) -> None:
  """Tracking needs an id on every person, unique within each frame."""
  for f, frame in enumerate(video.frames):
    ids = [q.track_id for q in frame.people]
    if None in ids:
      raise DataError(f'{what} {video.name}: frame {f} ({frame.image}) has a person without '
                      f'track_id')
    if len(set(ids)) != len(ids):
      raise DataError(f'{what} {video.name}: frame {f} ({frame.image}) repeats a track_id '
                      f'({sorted(ids)})')


def evaluate(videos: Sequence[tuple[Video, Video]], track: bool = True) -> dict:
  """(ground truth, prediction) video pairs -> {'ap': {...}, 'mot': {...} (with `track`),
  'frames': evaluated frames, 'videos': count}."""
  matches, counts = [], {k: np.zeros(NUM_JOINTS) for k in MOT_COUNTS + ('sum_distance',)}
  total_frames = 0
  for gt, pred in videos:
    if track:
      check_track_ids(gt, 'ground truth')
      check_track_ids(pred, 'prediction')
    frames = [match_frame(g, p, f'ground truth {gt.name}') for g, p in evaluated_frames(gt, pred)]
    matches += frames
    total_frames += len(frames)
    if track and frames:
      for k, v in mot_counts(frames).items():
        counts[k] += v
  out = {'ap': average_precision(matches), 'frames': total_frames, 'videos': len(videos)}
  if track:
    out['mot'] = dict(mot_metrics(counts), counts=counts)
  return out


def _cells(values: np.ndarray) -> list[float]:
  return [float(np.mean(values[list(ids)])) for _, ids in GROUPS] + [float(values[-1])]


def tables(result: dict) -> str:
  """The official tables: AP per joint group and Total; MOTA per group and Total, with MOTP,
  precision and recall (Totals)."""
  fmt = lambda v: f'{v:5.1f}'
  names = [name for name, _ in GROUPS] + ['Total']
  lines = ['Average Precision (AP):', '| ' + ' | '.join(f'{n:>5}' for n in names) + ' |',
           '| ' + ' | '.join(fmt(v) for v in _cells(result['ap']['ap'])) + ' |']
  if 'mot' in result:
    mot = result['mot']
    head = [f'{n:>5}' for n in names] + ['MOTP', 'Prec', 'Rec']
    row = _cells(mot['mota']) + [mot['motp'][-1], mot['precision'][-1], mot['recall'][-1]]
    lines += ['Multiple Object Tracking (MOTA per group; MOTP, precision, recall: Total):',
              '| ' + ' | '.join(f'{h:>5}' for h in head) + ' |',
              '| ' + ' | '.join(fmt(v) for v in row) + ' |']
  return '\n'.join(lines)


def to_json(result: dict) -> dict:
  """The result as JSON-ready lists, joints named (the official files' `names` with 'total')."""
  names = list(JOINTS) + ['total']
  clean = lambda v: [None if np.isnan(x) else float(x) for x in np.asarray(v, np.float64)]
  out = {'names': names, 'frames': result['frames'], 'videos': result['videos'],
         'ap': clean(result['ap']['ap']), 'ap_precision': clean(result['ap']['precision']),
         'ap_recall': clean(result['ap']['recall'])}
  if 'mot' in result:
    mot = result['mot']
    out.update(mota=clean(mot['mota']), motp=clean(mot['motp']),
               mot_precision=clean(mot['precision']), mot_recall=clean(mot['recall']),
               mot_counts={k: clean(v) for k, v in mot['counts'].items()})
  return out
