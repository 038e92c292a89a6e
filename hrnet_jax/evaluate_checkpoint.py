"""What eval.py runs: load any checkpoint, evaluate a split with the config's protocol, report."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import numpy as np

from hrnet_jax.errors import ConfigError
from hrnet_jax.tasks import get_task
from hrnet_jax.train import checkpoint, parallel
from hrnet_jax.train.evaluator import evaluate


def detect_people(det_config: Any, det_checkpoint: str, json_path: str | os.PathLike,
                  image_dir: str | os.PathLike, out_path: str | os.PathLike,
                  class_name: str = 'person') -> int:
  """Runs a detector over the images of a COCO-format file and writes its `class_name` boxes as
  a COCO results JSON with category_id 1 (a person-detections file, as top-down pose evaluation
  reads). Returns the number of boxes written."""
  from hrnet_jax.data.sources.coco_detection import ImageFiles
  task = get_task(det_config)
  if det_config.task != 'detection' or class_name not in task.class_names:
    raise ConfigError(f'--detector: expected a detection config with a {class_name!r} class, '
                      f'got config.task={det_config.task!r}')
  mesh = parallel.make_mesh(det_config.get('mesh'))
  variables, where = checkpoint.load_model_variables(det_checkpoint, task)
  variables = jax.device_put(variables, parallel.replicated(mesh))
  source = ImageFiles.from_coco_json(json_path, image_dir)
  if jax.process_index() == 0:
    print(f'detecting people with {where} on {len(source)} images: {task.protocol()}',
          flush=True)
  metric = evaluate(det_config, task, mesh, variables, source=source)
  person = task.category_ids[task.class_names.index(class_name)]
  found = [dict(d, category_id=1) for d in metric.detections() if d['category_id'] == person]
  if jax.process_index() == 0:
    with open(out_path, 'w') as f:
      json.dump(found, f)
  return len(found)


def run_tracking(config: Any, checkpoint_path: str, *, split: str | None = None,
                 predictions_dir: str | os.PathLike | None = None,
                 results_path: str | os.PathLike | None = None, detector: Any = None,
                 detector_checkpoint: str | None = None,
                 detector_threshold: float = 0.5) -> dict[str, Any]:
  """Pose tracking of a PoseTrack split (hrnet_jax.tracking): boxes from the detector (else the
  ground-truth people's), poses from `checkpoint_path` with the recipe's flip test; prints the
  official AP and MOTA tables; writes the per-video prediction files into `predictions_dir`."""
  from hrnet_jax.predict import PersonDetector, Predictor
  from hrnet_jax.tracking import posetrack_metrics, track_videos
  from hrnet_jax.tracking.tracker import tracker_settings
  if config.task != 'pose' or not get_task(config).videos:
    raise ConfigError(f'--track: expected a PoseTrack pose config (videos), got '
                      f'{config.task} on {config.data.name}')
  settings = tracker_settings(config, detector_threshold)
  predictor = Predictor(config, checkpoint_path)
  boxes = None
  if detector is not None:
    boxes = track_videos.detector_boxes(PersonDetector(detector, detector_checkpoint,
                                                       settings.detection_score))
  split = split or config.data.eval_split
  source = predictor.task.source(split)
  print(f'tracking with {predictor.where} on {config.data.name}/{split} ({source.describe()}); '
        f'boxes: {"the detector" if boxes else "the ground-truth people"}; '
        f'{predictor.task.protocol()}', flush=True)
  result = track_videos.track_split(source, track_videos.model_estimator(predictor), boxes,
                                    predictions_dir, settings)
  print(f'{result["videos"]} videos, {result["frames"]} frames with labelled people')
  print(posetrack_metrics.tables(result), flush=True)
  scores = posetrack_metrics.to_json(result)
  if results_path:
    with open(results_path, 'w') as f:
      json.dump(scores, f, indent=2)
  if predictions_dir:
    print(f'per-video predictions written to {predictions_dir}', flush=True)
  return scores


def run(config: Any, checkpoint_path: str, *, split: str | None = None, flip: bool = False,
        multi_scale: bool = False, sliding: str | None = None,
        predictions_dir: str | os.PathLike | None = None,
        results_path: str | os.PathLike | None = None, detector: Any = None,
        detector_checkpoint: str | None = None, track: bool = False,
        detector_threshold: float = 0.5) -> dict[str, Any]:
  """Evaluates `checkpoint_path` and prints the task's table; returns the scores. Top-down pose
  on COCO may take its person boxes from a detector (`detector` config and checkpoint): it runs
  over the split's images first and its boxes replace config.data.det_json (the file is kept
  in the predictions directory, or beside the results, as `person_detections_<split>.json`).
  `track`: pose tracking of a PoseTrack split instead (`run_tracking`; person boxes from the
  detector scoring at least `detector_threshold`)."""
  config = config.copy_and_resolve_references()
  if track:
    with config.unlocked():
      config.eval.flip = bool(flip or config.eval.flip)
    return run_tracking(config, checkpoint_path, split=split, predictions_dir=predictions_dir,
                        results_path=results_path, detector=detector,
                        detector_checkpoint=detector_checkpoint,
                        detector_threshold=detector_threshold)
  if detector is not None:
    if config.task != 'pose' or 'det_json' not in config.data:
      raise ConfigError('--detector: only COCO top-down pose evaluation takes detector boxes')
    from hrnet_jax.data.sources import coco, dataset_root
    split = split or config.data.eval_split
    root = pathlib.Path(dataset_root(config.data))
    out_dir = pathlib.Path(predictions_dir or os.path.dirname(results_path or '') or '.')
    out_dir.mkdir(parents=True, exist_ok=True)
    boxes_file = out_dir / f'person_detections_{split}.json'
    n = detect_people(detector, detector_checkpoint, coco.annotation_path(root, split),
                      root / 'images' / split, boxes_file)
    print(f'{n} person boxes written to {boxes_file}', flush=True)
    with config.unlocked():
      config.data.det_json = str(boxes_file)
  for asked, key in ((multi_scale, 'multi_scales'), (sliding, 'sliding')):
    if asked and key not in config.eval:
      raise ConfigError(f'--{key.rstrip("s")}: the {config.task} task has no config.eval.{key}')
  with config.unlocked():
    config.eval.flip = bool(flip or config.eval.flip)
    if multi_scale:
      config.eval.scales = tuple(config.eval.multi_scales)
    if sliding:
      config.eval.sliding = sliding
    if predictions_dir and 'save_predictions' in config.eval:
      config.eval.save_predictions = 1
  task = get_task(config)
  mesh = parallel.make_mesh(config.get('mesh'))
  variables, where = checkpoint.load_model_variables(checkpoint_path, task)
  variables = jax.device_put(variables, parallel.replicated(mesh))
  split = split or config.data.eval_split
  source = task.source(split)
  if jax.process_index() == 0:
    print(f'evaluating {where} on {config.data.name}/{split} ({source.describe()}): '
          f'{task.protocol()}', flush=True)
  metric = evaluate(config, task, mesh, variables, source=source,
                    predictions_dir=predictions_dir)
  scores = metric.result()
  if jax.process_index() == 0:
    print(metric.report(), flush=True)
    if results_path:
      with open(results_path, 'w') as f:
        json.dump({k: np.asarray(v).tolist() for k, v in scores.items()}, f, indent=2)
    if predictions_dir:
      print(f'predictions written to {predictions_dir}', flush=True)
  return scores
