"""What predict.py runs: a trained or converted model on image files -> pictures and raw results.

Each image goes through the evaluator's own jitted step (normalize + the task's eval outputs) on
the samples the task makes of it (the whole image, or given boxes), and the task's host-side
post-processing; so the results are what `eval.py` would compute for the same image.

A file that cannot be read or predicted (or whose boxes do not fit it) is reported, counted and
skipped; the others are written all the same.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
from typing import Any, Sequence

import cv2
import jax
import numpy as np

from hrnet_jax.data.sources import read_image
from hrnet_jax.errors import UserError
from hrnet_jax.tasks import get_task
from hrnet_jax.train import checkpoint
from hrnet_jax.train.evaluator import make_eval_step


def read_boxes(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A JSON file {image file name: [[x, y, w, h], ...]} -> boxes per name."""
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
  out = {}
  for name, boxes in table.items():
    ok = isinstance(boxes, list) and all(
        isinstance(b, list) and len(b) == 4 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in b)
        for b in boxes)
    if not ok:
      raise UserError(f'{path}: boxes of {name!r} must be a list of [x, y, w, h] lists of four '
                      f'numbers, got {json.dumps(boxes)[:80]}')
    out[name] = np.asarray(boxes, np.float32).reshape(-1, 4)
  return out


def output_names(paths: Sequence[pathlib.Path]) -> list[str]:
  """A distinct output name (no suffix) per input: its path relative to the inputs' common
  folder (so a/x.png and b/x.png stay apart), with the suffix kept where two inputs would still
  meet (x.png and x.jpg)."""
  parents = [str(p.resolve().parent) for p in paths]
  root = pathlib.Path(os.path.commonpath(parents)) if paths else pathlib.Path('.')
  names = [str(p.resolve().relative_to(root).with_suffix('')) for p in paths]
  clash = {n for n in names if names.count(n) > 1}
  return [f'{n}_{p.suffix.lstrip(".")}' if n in clash else n for n, p in zip(names, paths)]


def _json_ready(prediction: dict, out_dir: pathlib.Path, name: str) -> dict:
  """Arrays in a prediction (e.g. a label map) go to PNG files; the JSON names them."""
  out = {}
  for key, value in prediction.items():
    if isinstance(value, np.ndarray):
      file = f'{name}_{key}.png'
      cv2.imwrite(str(out_dir / file), value)
      out[key] = file
    else:
      out[key] = value
  return out


class Predictor:
  """A config and checkpoint, loaded once; `__call__(image, boxes)` -> the task's prediction."""

  def __init__(self, config: Any, checkpoint_path: str | os.PathLike):
    config = config.copy_and_resolve_references()
    with config.unlocked():
      if 'save_predictions' in config.eval:
        config.eval.save_predictions = 1  # segmentation: keep the label map
      if 'eval_size' in config.data:
        config.data.eval_size = ()  # segmentation: one image per call, at its own size
    self.task = get_task(config)
    # One device: a single image is the batch.
    mesh = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=jax.local_devices()[:1])
    variables, self.where = checkpoint.load_model_variables(checkpoint_path, self.task)
    self.variables = jax.device_put(variables, jax.local_devices()[0])
    self.step = make_eval_step(config, self.task, mesh)
    self.transform = self.task.eval_transform()

  def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None) -> dict:
    samples = self.task.image_samples(image, boxes)
    items = [dict(self.transform(s), index=np.int32(i), valid=np.int32(1))
             for i, s in enumerate(samples)]
    batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
    outputs = jax.device_get(self.step(self.variables, batch))
    return self.task.prediction(samples, outputs)


@dataclasses.dataclass
class Outcome:
  records: list[dict]  # one per image written
  failed: list[tuple[str, str]]  # (file, reason) of each image skipped


def run(config: Any, checkpoint_path: str, images: Sequence[str], out_dir: str | os.PathLike,
        boxes_path: str | None = None) -> Outcome:
  """Writes `<name>.png` (the picture) and `<name>.json` (the raw results) per image into
  `out_dir` (names: see `output_names`), and `predictions.json` with all of them."""
  out = pathlib.Path(out_dir)
  if out.exists() and not out.is_dir():
    raise UserError(f'--out {out}: exists and is not a directory')
  boxes = read_boxes(boxes_path) if boxes_path else {}
  paths = list(dict.fromkeys(pathlib.Path(p) for p in images))  # each file once
  names = output_names(paths)
  predictor = Predictor(config, checkpoint_path)
  print(f'model: {predictor.where}', flush=True)
  out.mkdir(parents=True, exist_ok=True)
  done = Outcome([], [])
  for path, name in zip(paths, names):
    try:
      image = read_image(path)
      found = [boxes[k] for k in (str(path), name, path.name) if k in boxes]
      prediction = predictor(image, found[0] if found else None)
      picture = predictor.task.draw(image, prediction)
      (out / name).parent.mkdir(parents=True, exist_ok=True)
      if not cv2.imwrite(str(out / f'{name}.png'), picture[..., ::-1]):
        raise OSError(f'cannot write {out / name}.png')
      record = dict(image=str(path), picture=f'{name}.png',
                    **_json_ready(prediction, out, name))
      with open(out / f'{name}.json', 'w') as f:
        json.dump(record, f, indent=1)
    except Exception as e:  # pylint: disable=broad-except  (one bad file must not stop the run)
      reason = str(e) if isinstance(e, UserError) else f'{type(e).__name__}: {e}'
      done.failed.append((str(path), reason))
      print(f'error: {path}: {reason}', file=sys.stderr, flush=True)
      continue
    done.records.append(record)
    print(f'{path} -> {out / name}.png', flush=True)
  with open(out / 'predictions.json', 'w') as f:
    json.dump(done.records, f, indent=1)
  print(f'{len(done.records)} done, {len(done.failed)} failed; results in '
        f'{out / "predictions.json"}', flush=True)
  return done
