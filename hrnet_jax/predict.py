"""What predict.py runs: a trained or converted model on images, folders and videos -> pictures,
annotated videos and raw results.

Each image (or video frame) goes through the evaluator's own jitted step (normalize + the task's
eval outputs) on the samples the task makes of it (the whole image, or given boxes), and the
task's host-side post-processing; so the results are what `eval.py` would compute for the same
image. Samples of the same shape (pose, face and classification crops always; segmentation
images of one size) run `batch` at a time, the last batch padded, so one program serves them all.

A file or frame that cannot be read or predicted (or whose boxes do not fit it) is reported,
counted and skipped; the others are written all the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
import time
from typing import Any, Iterator, Sequence

import cv2
import jax
import numpy as np
import tqdm

from hrnet_jax.data.sources import read_image
from hrnet_jax.errors import UserError
from hrnet_jax.tasks import get_task
from hrnet_jax.train import checkpoint
from hrnet_jax.train.evaluator import make_eval_step


def _valid_boxes(boxes: Any) -> bool:
  return isinstance(boxes, list) and all(
      isinstance(b, list) and len(b) == 4 and all(
          isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in b)
      for b in boxes)


def read_boxes(path: str | os.PathLike) -> dict[str, Any]:
  """A JSON file {image file name: [[x, y, w, h], ...]} -> boxes (N, 4) per name; for a video
  {video file name: {frame index: [[x, y, w, h], ...]}} -> {frame index: boxes}."""
  try:
    with open(path) as f:
      table = json.load(f)
  except OSError as e:
    raise UserError(f'boxes file {path}: cannot read it ({e.strerror})') from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f'{path}: not valid JSON ({e})') from None
  if not isinstance(table, dict):
    raise UserError(f'{path}: expected an object mapping image file names to lists of '
                    f'[x, y, w, h] boxes, got {type(table).__name__}')
  out: dict[str, Any] = {}
  for name, boxes in table.items():
    if isinstance(boxes, dict):  # a video: per frame index
      frames = {}
      for frame, b in boxes.items():
        if not (str(frame).isdigit() and _valid_boxes(b)):
          raise UserError(f'{path}: boxes of {name!r} frame {frame!r} must be keyed by a frame '
                          f'index (0, 1, ...) and be a list of [x, y, w, h] lists of four '
                          f'numbers, got {json.dumps(b)[:80]}')
        frames[int(frame)] = np.asarray(b, np.float32).reshape(-1, 4)
      out[name] = frames
      continue
    if not _valid_boxes(boxes):
      raise UserError(f'{path}: boxes of {name!r} must be a list of [x, y, w, h] lists of four '
                      f'numbers, got {json.dumps(boxes)[:80]}')
    out[name] = np.asarray(boxes, np.float32).reshape(-1, 4)
  return out


IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
VIDEO_SUFFIXES = ('.mp4', '.avi', '.mov', '.mkv', '.m4v')
_FOURCC = {'.avi': 'MJPG'}  # others: mp4v (plays in browsers after a re-encode; no licence)


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> tuple[list[pathlib.Path],
                                                                list[tuple[str, str]]]:
  """Files as given (each once), directories walked recursively for image and video files
  (sorted); and (input, reason) for inputs that do not exist or hold no such file."""
  found, missing = [], []
  for given in inputs:
    p = pathlib.Path(given)
    if p.is_dir():
      inside = sorted(f for f in p.rglob('*') if f.is_file()
                      and f.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
      if not inside:
        missing.append((str(p), f'no image or video files ({", ".join(IMAGE_SUFFIXES)}, '
                                f'{", ".join(VIDEO_SUFFIXES)}) in this directory'))
      found += inside
    elif p.exists():
      found.append(p)
    else:
      missing.append((str(p), 'no such file or directory'))
  return list(dict.fromkeys(found)), missing


def is_video(path: pathlib.Path) -> bool:
  return path.suffix.lower() in VIDEO_SUFFIXES


SUMMARY_FILE = 'predictions.json'


def output_names(paths: Sequence[pathlib.Path], array_keys: Sequence[str] = ()) -> list[str]:
  """A distinct output name (no suffix) per input: its path relative to the inputs' common
  folder (so a/x.png and b/x.png stay apart), with the suffix kept where two inputs would still
  meet (x.png and x.jpg). Each name also owns `<name>_<key>.png` per key of `array_keys` (the
  task's array outputs, e.g. a label map), so a name that would meet one of those, or the
  summary file, gets a number (s.png, s_labels.png -> 's', 's_labels_2')."""
  parents = [str(p.resolve().parent) for p in paths]
  root = pathlib.Path(os.path.commonpath(parents)) if paths else pathlib.Path('.')
  names = [str(p.resolve().relative_to(root).with_suffix('')) for p in paths]
  clash = {n for n in names if names.count(n) > 1}
  names = [f'{n}_{p.suffix.lstrip(".")}' if n in clash else n for n, p in zip(names, paths)]
  owned = lambda n: {n, *(f'{n}_{k}' for k in array_keys)}
  used, out = {pathlib.Path(SUMMARY_FILE).stem}, []
  for name in names:
    chosen, i = name, 1
    while owned(chosen) & used:
      i += 1
      chosen = f'{name}_{i}'
    used |= owned(chosen)
    out.append(chosen)
  return out


def check_out_dir(out: pathlib.Path, inputs: Sequence[str | os.PathLike],
                  paths: Sequence[pathlib.Path], overwrite: bool) -> None:
  """--out must not be (or be inside) an input folder, nor hold an input file (pictures would
  replace the inputs); an --out that holds an earlier run's results needs `overwrite`."""
  if out.exists() and not out.is_dir():
    raise UserError(f'--out {out}: exists and is not a directory')
  target = out.resolve()
  for given in inputs:
    folder = pathlib.Path(given).resolve()
    if folder.is_dir() and (target == folder or folder in target.parents):
      raise UserError(f'--out {out} is inside the input folder {given}: the pictures would be '
                      'written among (and over) the inputs; choose an --out outside it')
  for p in paths:
    if target in p.resolve().parents:
      raise UserError(f'--out {out} holds the input {p}: its picture could replace it; choose '
                      'another --out')
  if (out / SUMMARY_FILE).exists() and not overwrite:
    raise UserError(f'--out {out} holds the results of an earlier run ({SUMMARY_FILE}): pass '
                    '--overwrite to replace them, or choose another --out')


class Predictor:
  """A config and checkpoint, loaded once. `__call__(image, boxes)` -> the task's prediction;
  `predictions` runs many prepared images `batch` samples at a time."""

  def __init__(self, config: Any, checkpoint_path: str | os.PathLike, batch: int = 1):
    config = config.copy_and_resolve_references()
    with config.unlocked():
      if 'save_predictions' in config.eval:
        config.eval.save_predictions = 1  # segmentation: keep the label map
      if 'eval_size' in config.data:
        config.data.eval_size = ()  # segmentation: each image at its own size
    if batch < 1:
      raise UserError(f'--batch {batch}: expected a positive number of images per step')
    self.batch = batch
    self.task = get_task(config)
    # One device: the batch is small and latency matters more than splitting it.
    mesh = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.local_devices()[:1])
    variables, self.where = checkpoint.load_model_variables(checkpoint_path, self.task)
    self.variables = jax.device_put(variables, jax.local_devices()[0])
    self.step = make_eval_step(config, self.task, mesh)
    self.transform = self.task.eval_transform()
    self._row_outputs: dict[tuple, set[str]] = {}  # per batch shape: see _per_sample

  def prepare(self, image: np.ndarray, boxes: np.ndarray | None = None,
              allow_empty: bool = False, box_scores: Sequence[float] | None = None
              ) -> tuple[list[dict], list[dict]]:
    """(samples, transformed items) of one image; raises for boxes that do not fit it, and for
    an empty list of boxes unless `allow_empty` (a detector that found nobody). `box_scores`:
    a detector's score per box (top-down pose rescales its people by them)."""
    samples = self.task.image_samples(image, boxes, box_scores)
    if not samples and not allow_empty:
      raise UserError('nothing to predict: its list of boxes is empty')
    return samples, [self.transform(s) for s in samples]

  def _per_sample(self, batch: dict[str, np.ndarray]) -> set[str]:
    """The outputs of the step that have a row per sample (their leading size follows the
    batch's), found by tracing it abstractly at a second batch size (once per batch shape)."""
    key = tuple((k, np.shape(v)) for k, v in sorted(batch.items()))
    if key in self._row_outputs:
      return self._row_outputs[key]
    grown = {k: jax.ShapeDtypeStruct((len(v) + 1, *np.shape(v)[1:]), np.asarray(v).dtype)
             for k, v in batch.items()}
    a = jax.eval_shape(self.step.jitted, self.variables, batch)
    b = jax.eval_shape(self.step.jitted, self.variables, grown)
    self._row_outputs[key] = {k for k in a if a[k].ndim and a[k].shape[0] != b[k].shape[0]}
    return self._row_outputs[key]

  def run_items(self, items: list[dict]) -> tuple[dict[str, np.ndarray], set[str]]:
    """Eval outputs of items of one shape, `batch` per step (the last step padded by repeating
    an item, its rows dropped); and which outputs have a row per item."""
    parts, per_sample = [], None
    for start in range(0, len(items), self.batch):
      chunk = items[start:start + self.batch]
      rows = [dict(it, index=np.int32(i), valid=np.int32(1)) for i, it in enumerate(chunk)]
      rows += [dict(chunk[-1], index=np.int32(0), valid=np.int32(0))] * (self.batch - len(chunk))
      batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
      if per_sample is None:
        per_sample = self._per_sample(batch)
      out = jax.device_get(self.step(self.variables, batch))
      parts.append({k: np.asarray(v)[:len(chunk)] if k in per_sample else v
                    for k, v in out.items()})
    return ({k: np.concatenate([p[k] for p in parts]) if k in per_sample else parts[0][k]
             for k in parts[0]}, per_sample)

  def predictions(self, prepared: list[tuple[list[dict], list[dict]]]) -> list[dict]:
    """The task's prediction for each prepared image; items of all of them run together."""
    items = [it for _, its in prepared for it in its]
    if not items:  # nothing to run (no boxes): each image's prediction is empty
      return [self.task.prediction([], {}) for _ in prepared]
    outputs, per_sample = self.run_items(items)
    out, start = [], 0
    for samples, its in prepared:
      mine = {k: v[start:start + len(its)] if k in per_sample else v for k, v in outputs.items()}
      out.append(self.task.prediction(samples, mine))
      start += len(its)
    return out

  def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None) -> dict:
    return self.predictions([self.prepare(image, boxes)])[0]


class PersonDetector:
  """A detection config and checkpoint used for the boxes of top-down pose: per image, the boxes
  of its `person` class scoring at least `threshold`, as [x, y, w, h] (best first)."""

  def __init__(self, config: Any, checkpoint_path: str | os.PathLike, threshold: float = 0.5,
               class_name: str = 'person'):
    if config.task != 'detection':
      raise UserError(f'--detector: expected a detection config (config.task=detection), got '
                      f'config.task={config.task!r}')
    self.predictor = Predictor(config, checkpoint_path)
    names = self.predictor.task.class_names
    if class_name not in names:
      raise UserError(f'--detector: the detector has no class {class_name!r}; its classes: '
                      f'{", ".join(names)}')
    self.class_id, self.threshold = names.index(class_name), threshold

  def boxes(self, image: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """(boxes (N, 4) [x, y, w, h], scores) of the people in `image`."""
    found = [d for d in self.predictor(image)['detections']
             if d['class_id'] == self.class_id and d['score'] >= self.threshold]
    return (np.asarray([d['box'] for d in found], np.float32).reshape(-1, 4),
            [d['score'] for d in found])


def _json_ready(prediction: dict, out_dir: pathlib.Path | None, name: str) -> dict:
  """Arrays in a prediction (e.g. a label map) go to PNG files named in the JSON; without
  `out_dir` (video frames) they are left out: the annotated video shows them."""
  out = {}
  for key, value in prediction.items():
    if isinstance(value, np.ndarray):
      if out_dir is None:
        continue
      file = f'{name}_{key}.png'
      cv2.imwrite(str(out_dir / file), value)
      out[key] = file
    else:
      out[key] = value
  return out


@dataclasses.dataclass
class Outcome:
  records: list[dict]  # one per image written, one per video
  failed: list[tuple[str, str]]  # (file or file#frame, reason) of each thing skipped
  frames: int = 0  # video frames predicted
  seconds: float = 0.0


@dataclasses.dataclass
class _Unit:
  """One image or video frame on its way through: what it is, and its prepared samples."""
  label: str  # for messages: the file, or file#frame
  image: np.ndarray
  prepared: tuple[list[dict], list[dict]]
  frame: int | None = None

  @property
  def key(self) -> tuple:
    """Items of units with equal keys stack into one batch (a unit without items joins any)."""
    if not self.prepared[1]:
      return ()
    return tuple((k, np.shape(v)) for k, v in sorted(self.prepared[1][0].items()))


class _Runner:
  """Groups consecutive units of one item shape into batches and hands each finished unit to
  its `done` callback; a unit whose group fails is reported with the reason."""

  def __init__(self, predictor: Predictor, outcome: Outcome, progress: Any):
    self.predictor, self.outcome, self.progress = predictor, outcome, progress
    self.pending: list[tuple[_Unit, Any]] = []

  def add(self, unit: _Unit, done: Any) -> None:
    keys = {u.key for u, _ in self.pending} - {()}
    if unit.key and keys and unit.key not in keys:
      self.flush()
    self.pending.append((unit, done))
    if sum(len(u.prepared[1]) for u, _ in self.pending) >= self.predictor.batch:
      self.flush()

  def flush(self) -> None:
    pending, self.pending = self.pending, []
    if not pending:
      return
    try:
      predictions = self.predictor.predictions([u.prepared for u, _ in pending])
    except Exception as e:  # pylint: disable=broad-except  (a bad batch must not stop the run)
      for unit, _ in pending:
        fail(self.outcome, unit.label, e)
      self.progress.update(len(pending))
      return
    for (unit, done), prediction in zip(pending, predictions):
      try:
        done(unit, prediction)
      except Exception as e:  # pylint: disable=broad-except
        fail(self.outcome, unit.label, e)
    self.progress.update(len(pending))


def fail(outcome: Outcome, label: str, error: Exception) -> None:
  reason = str(error) if isinstance(error, UserError) else f'{type(error).__name__}: {error}'
  outcome.failed.append((label, reason))
  print(f'error: {label}: {reason}', file=sys.stderr, flush=True)


def _boxes_for(boxes: dict[str, Any], path: pathlib.Path, name: str) -> Any:
  found = [boxes[k] for k in (str(path), name, path.name) if k in boxes]
  return found[0] if found else None


def _frames(video: '_Video', every: int) -> Iterator[tuple[int, np.ndarray]]:
  """(index, RGB frame) of every `every`-th frame of an opened video (counting those read)."""
  index = 0
  while True:
    ok, frame = video.capture.read()
    if not ok:
      return
    video.decoded += 1
    if index % every == 0:
      yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    index += 1


class _Video:
  """The annotated copy of one video (same size; its fps divided by `every`) and its JSON
  lines, one per predicted frame."""

  def __init__(self, path: pathlib.Path, out: pathlib.Path, name: str, every: int,
               draw: Any):
    self.path, self.name, self.draw, self.out = path, name, draw, out
    self.decoded = 0  # frames read (predicted or not)
    self.capture = cv2.VideoCapture(str(path))
    if not self.capture.isOpened():
      raise UserError(f'cannot open video {path}: missing, unreadable or not a video file')
    self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 25.0
    self.size = (int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                 int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    self.expected = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
    suffix = path.suffix.lower() if path.suffix.lower() in ('.mp4', '.avi', '.mov') else '.mp4'
    self.video_file = f'{name}{suffix}'
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*_FOURCC.get(suffix, 'mp4v'))
    self.writer = cv2.VideoWriter(str(out / self.video_file), fourcc, self.fps / every, self.size)
    if not self.writer.isOpened():
      raise UserError(f'cannot write video {out / self.video_file}')
    self.lines = open(out / f'{name}.jsonl', 'w')
    self.written = 0

  def done(self, unit: _Unit, prediction: dict) -> None:
    picture = self.picture(unit.image, prediction)
    self.writer.write(np.ascontiguousarray(picture[..., ::-1]))
    record = dict(frame=unit.frame, time=round(unit.frame / self.fps, 4),
                  **_json_ready(prediction, None, ''))
    self.lines.write(json.dumps(record) + '\n')
    self.written += 1

  def picture(self, image: np.ndarray, prediction: dict) -> np.ndarray:
    """The task's drawing over the frame; side panels (legends, top-5 strips) are cut so the
    video keeps the frame size (the JSON lines hold their content)."""
    h, w = image.shape[:2]
    return self.draw(image, prediction)[:h, :w]

  def close(self) -> dict:
    """The video's record; a video of which no frame was decoded leaves no files behind and is
    an error."""
    self.capture.release()
    self.writer.release()
    self.lines.close()
    if not self.written and self.decoded == 0:
      for name in (self.video_file, f'{self.name}.jsonl'):
        (self.out / name).unlink(missing_ok=True)
      raise UserError(f'cannot decode video {self.path}: no frame could be read')
    return dict(video=str(self.path), annotated=self.video_file, frames_file=f'{self.name}.jsonl',
                frames=self.written, fps=self.fps, size=list(self.size))


def _track_frames(video: _Video, path: pathlib.Path, every: int, tracker: Any,
                  frame_boxes: Any, joint_names: list[str], outcome: Outcome,
                  progress: Any) -> None:
  """Pose tracking through one video, frame after frame: `frame_boxes(index, frame)` gives the
  person boxes ([x, y, w, h], scores); each frame's tracked people are drawn and written."""
  from hrnet_jax.tracking.track_videos import frame_prediction
  tracker.reset()
  for index, frame in _frames(video, every):
    label = f'{path}#{index}'
    try:
      found, scores = frame_boxes(index, frame)
      found = np.asarray(found, np.float64).reshape(-1, 4)
      detections = np.concatenate([found[:, :2], found[:, :2] + found[:, 2:],
                                   np.asarray(scores, np.float64).reshape(-1, 1)], 1)
      prediction = frame_prediction(tracker.step(frame, detections), joint_names)
      video.done(_Unit(label, frame, ([], []), frame=index), prediction)
    except Exception as e:  # pylint: disable=broad-except  (one bad frame must not stop the run)
      fail(outcome, label, e)
    progress.update(1)


def run(config: Any, checkpoint_path: str, inputs: Sequence[str], out_dir: str | os.PathLike,
        boxes_path: str | None = None, batch: int = 1, every: int = 1,
        detector: PersonDetector | None = None, overwrite: bool = False,
        track: bool = False) -> Outcome:
  """Per image `<name>.png` (the picture) and `<name>.json` (the raw results); per video
  `<name>.<ext>` (annotated, every `every`-th frame) and `<name>.jsonl` (a line per frame); and
  `predictions.json` with all records (names: see `output_names`). Directories are walked for
  images and videos. With `detector` (top-down pose), images and frames without boxes of their
  own get the detector's people (none found: an empty prediction), each person scored with its
  box's score. `track` (top-down pose, videos only): people tracked through each video
  (hrnet_jax.tracking), drawn in their id's colour, `track_id` in the JSON lines; the boxes come
  from `detector`, or from the boxes file. An --out holding an earlier run's results is replaced
  only with `overwrite`."""
  out = pathlib.Path(out_dir)
  if every < 1:
    raise UserError(f'--every {every}: expected a positive frame step')
  boxes = read_boxes(boxes_path) if boxes_path else {}
  paths, missing = expand_inputs(inputs)
  check_out_dir(out, inputs, paths, overwrite)
  predictor = Predictor(config, checkpoint_path, batch)
  tracker = None
  if track:
    if predictor.task.task_name != 'pose':
      raise UserError(f'--track: tracks people with a pose model; {config.task} cannot')
    if detector is None and not boxes:
      raise UserError('--track: give --detector (or --boxes) for the person boxes')
    from hrnet_jax.tracking.flow import DISFlow
    from hrnet_jax.tracking.track_videos import model_estimator
    from hrnet_jax.tracking.tracker import PoseTracker, TrackerSettings, tracker_settings
    tracker = PoseTracker(model_estimator(predictor), DISFlow(), tracker_settings(
        config, TrackerSettings.detection_score if detector is None else detector.threshold))
  names = output_names(paths, predictor.task.prediction_arrays)
  print(f'model: {predictor.where}', flush=True)
  if detector is not None:
    print(f'person boxes: {detector.predictor.where} (score >= {detector.threshold})', flush=True)

  def prepare(image: np.ndarray, given: Any) -> tuple[list[dict], list[dict]]:
    if given is not None or detector is None:
      return predictor.prepare(image, given)
    found, scores = detector.boxes(image)
    return predictor.prepare(image, found, allow_empty=True, box_scores=scores)

  out.mkdir(parents=True, exist_ok=True)
  done = Outcome([], [])
  for given, reason in missing:
    fail(done, given, UserError(reason))
  total = 0
  for path in paths:
    if is_video(path):
      capture = cv2.VideoCapture(str(path))
      total += -(-int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) // every)
      capture.release()
    else:
      total += 1
  # A progress bar with images/s on a terminal; nothing when stderr is redirected.
  progress = tqdm.tqdm(total=total, unit='img', dynamic_ncols=True, disable=None, leave=False)
  runner = _Runner(predictor, done, progress)
  task = predictor.task
  start = time.time()

  def write_image(name: str, path: pathlib.Path):
    def finish(unit: _Unit, prediction: dict) -> None:
      picture = task.draw(unit.image, prediction)
      (out / name).parent.mkdir(parents=True, exist_ok=True)
      if not cv2.imwrite(str(out / f'{name}.png'), picture[..., ::-1]):
        raise OSError(f'cannot write {out / name}.png')
      record = dict(image=str(path), picture=f'{name}.png', **_json_ready(prediction, out, name))
      with open(out / f'{name}.json', 'w') as f:
        json.dump(record, f, indent=1)
      done.records.append(record)
      print(f'{path} -> {out / name}.png', flush=True)
    return finish

  for path, name in zip(paths, names):
    if not is_video(path) and tracker is not None:
      fail(done, str(path), UserError('--track: only videos are tracked'))
      progress.update(1)
      continue
    if not is_video(path):
      try:
        image = read_image(path)
        unit = _Unit(str(path), image, prepare(image, _boxes_for(boxes, path, name)))
      except Exception as e:  # pylint: disable=broad-except  (one bad file must not stop the run)
        fail(done, str(path), e)
        progress.update(1)
        continue
      runner.add(unit, write_image(name, path))
      continue
    runner.flush()  # images before a video are written before it starts
    try:
      video = _Video(path, out, name, every, task.draw)
    except Exception as e:  # pylint: disable=broad-except
      fail(done, str(path), e)
      continue
    table = _boxes_for(boxes, path, name)
    given_for = lambda index, table=table: table.get(index) if isinstance(table, dict) else table
    if tracker is not None:
      def frame_boxes(index: int, frame: Any) -> tuple[Any, Any]:
        given = given_for(index)
        if given is None and detector is not None:
          return detector.boxes(frame)
        given = np.asarray([] if given is None else given, np.float64).reshape(-1, 4)
        return given, np.ones(len(given))
      _track_frames(video, path, every, tracker, frame_boxes, list(task.joint_names), done,
                    progress)
    else:
      for index, frame in _frames(video, every):
        label = f'{path}#{index}'
        try:
          unit = _Unit(label, frame, prepare(frame, given_for(index)), frame=index)
        except Exception as e:  # pylint: disable=broad-except
          fail(done, label, e)
          progress.update(1)
          continue
        runner.add(unit, video.done)
    runner.flush()
    try:
      record = video.close()
    except UserError as e:
      fail(done, str(path), e)
      continue
    done.records.append(record)
    done.frames += record['frames']
    print(f'{path} -> {out / record["annotated"]} ({record["frames"]} frames)', flush=True)
  runner.flush()
  progress.close()
  done.seconds = time.time() - start
  with open(out / SUMMARY_FILE, 'w') as f:
    json.dump(done.records, f, indent=1)
  images = sum('image' in r for r in done.records)
  rate = (images + done.frames) / max(done.seconds, 1e-9)
  print(f'{len(done.records)} done ({images} images, {done.frames} video frames, {rate:.1f} '
        f'images/s), {len(done.failed)} failed; results in {out / SUMMARY_FILE}',
        flush=True)
  return done
