"""Pose tracking of whole videos with the models: what `eval.py --track` runs on a PoseTrack
split (the per-video prediction files and the official tables), and the estimator that gives
the tracker a pose model's poses.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import numpy as np

from hrnet_jax.data.sources import posetrack
from hrnet_jax.data.sources.reader import read_image
from hrnet_jax.tracking import posetrack_metrics
from hrnet_jax.tracking.flow import DISFlow
from hrnet_jax.tracking.tracker import Estimator, PoseTracker, TrackedPose, TrackerSettings

# (image RGB) -> (boxes (N, 4) x1 y1 x2 y2, scores (N,)): the person boxes of one frame.
BoxSource = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def model_estimator(predictor: Any) -> Estimator:
  """The tracker's estimator from a pose `hrnet_jax.predict.Predictor` (its recipe's flip test):
  boxes are clipped to the frame; a box with no area left gives a pose scored 0."""
  def estimate(image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    clipped = np.clip(boxes, 0, [w - 1, h - 1, w - 1, h - 1])
    usable = np.all(clipped[:, 2:] - clipped[:, :2] >= 1, axis=1)
    n = predictor.task.num_points
    joints, scores = np.zeros((len(boxes), n, 2)), np.zeros((len(boxes), n))
    if usable.any():
      xywh = np.concatenate([clipped[usable, :2], clipped[usable, 2:] - clipped[usable, :2]], 1)
      people = predictor(image, xywh)['people']
      kpts = np.asarray([p['keypoints'] for p in people], np.float64)
      joints[usable], scores[usable] = kpts[..., :2], kpts[..., 2]
    return joints, scores
  return estimate


def detector_boxes(detector: Any) -> BoxSource:
  """The person boxes of a `hrnet_jax.predict.PersonDetector`, as x1 y1 x2 y2."""
  def boxes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xywh, scores = detector.boxes(image)
    return (np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
            np.asarray(scores, np.float64))
  return boxes


def ground_truth_boxes(frame: posetrack.Frame) -> tuple[np.ndarray, np.ndarray]:
  """The annotated people's boxes (their joints + 15%), score 1: the common ablation."""
  boxes = [posetrack.joint_box(p.joints, p.present) for p in frame.people]
  xywh = np.asarray([b for b in boxes if b is not None], np.float64).reshape(-1, 4)
  return (np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
          np.ones(len(xywh)))


def to_person(pose: TrackedPose, joint_score: float) -> posetrack.Person:
  """A tracked pose in the evaluation's 15 joints; joints scoring <= `joint_score` left out."""
  slots = list(posetrack.SLOT_OF_JOINT)
  person = posetrack.Person.empty(pose.track_id)
  person.joints, person.scores = pose.joints[slots], pose.scores[slots]
  person.present = person.scores > joint_score
  return person


def frame_prediction(tracked: list[TrackedPose], joint_names: list[str]) -> dict:
  """A frame's tracked poses as the pose task's prediction (what predict.py draws and writes):
  per person its `track_id`, box [x, y, w, h], keypoints [x, y, score] and score (the mean of
  its joint scores)."""
  people = [{'track_id': int(p.track_id),
             'box': [round(float(v), 2) for v in (*p.box[:2], *(p.box[2:] - p.box[:2]))],
             'keypoints': [[round(float(x), 3), round(float(y), 3), round(float(s), 4)]
                           for (x, y), s in zip(p.joints, p.scores)],
             'score': round(float(np.mean(p.scores)), 4)} for p in tracked]
  return {'joint_names': list(joint_names), 'people': people}


def track_video(video: posetrack.Video, root: pathlib.Path, tracker: PoseTracker,
                boxes: BoxSource | None, progress: Any = None) -> posetrack.Video:
  """Every frame of `video` (images under `root`) through the tracker; `boxes` None: the
  ground-truth people's boxes."""
  tracker.reset()
  frames = []
  for frame in video.frames:
    image = read_image(root / frame.image)
    found, scores = boxes(image) if boxes is not None else ground_truth_boxes(frame)
    detections = np.concatenate([found, np.asarray(scores)[:, None]], 1)
    tracked = tracker.step(image, detections)
    frames.append(posetrack.Frame(frame.image, [to_person(p, tracker.settings.joint_score)
                                                for p in tracked]))
    if progress is not None:
      progress.update(1)
  return posetrack.Video(video.name, frames, video.layout)


def track_split(source: Any, estimate: Estimator, boxes: BoxSource | None,
                out_dir: str | pathlib.Path | None,
                settings: TrackerSettings = TrackerSettings()) -> dict:
  """Tracks every video of a `PoseTrackKeypoints` split, writes each prediction file (the
  ground truth's layout and name) into `out_dir`, and returns the official metrics."""
  from tqdm import tqdm
  truth = source.ground_truth()
  tracker = PoseTracker(estimate, DISFlow(), settings)
  out = pathlib.Path(out_dir) if out_dir else None
  if out is not None:
    out.mkdir(parents=True, exist_ok=True)
  pairs = []
  with tqdm(total=sum(len(v.frames) for v in truth), unit='frame', desc='tracking') as bar:
    for video in truth:
      predicted = track_video(video, source.root, tracker, boxes, bar)
      if out is not None:
        posetrack.write_video(predicted, out / f'{video.name}.json', video.layout)
      pairs.append((video, predicted))
  return posetrack_metrics.evaluate(pairs)
