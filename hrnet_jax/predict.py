"""What predict.py runs: a trained or converted model on image files -> pictures and raw results.

Each image goes through the evaluator's own jitted step (normalize + the task's eval outputs) on
the samples the task makes of it (the whole image, or given boxes), and the task's host-side
post-processing; so the results are what `eval.py` would compute for the same image.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Sequence

import cv2
import jax
import numpy as np

from hrnet_jax.data.sources.common import read_image
from hrnet_jax.evaluate import load_checked
from hrnet_jax.tasks import get_task
from hrnet_jax.train.evaluate import make_eval_step
from hrnet_jax.train.loop import compute_dtype


def read_boxes(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """A JSON file {image file name: [[x, y, w, h], ...]} -> boxes per name."""
  with open(path) as f:
    try:
      table = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON ({e})') from None
  if not isinstance(table, dict):
    raise ValueError(f'{path}: expected an object mapping image file names to lists of '
                     f'[x, y, w, h] boxes, got {type(table).__name__}')
  out = {}
  for name, boxes in table.items():
    arr = np.asarray(boxes, np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
      raise ValueError(f'{path}: boxes of {name!r} must be a list of [x, y, w, h], got shape '
                       f'{arr.shape}')
    out[name] = arr
  return out


def _json_ready(prediction: dict, out_dir: pathlib.Path, stem: str) -> dict:
  """Arrays in a prediction (e.g. a label map) go to PNG files; the JSON names them."""
  out = {}
  for key, value in prediction.items():
    if isinstance(value, np.ndarray):
      name = f'{stem}_{key}.png'
      cv2.imwrite(str(out_dir / name), value)
      out[key] = name
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
    self.task = get_task(config)
    dtype = compute_dtype(config)
    model = self.task.create_model(dtype)
    # One device: a single image is the batch.
    self.mesh = jax.make_mesh((1,), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                              devices=jax.local_devices()[:1])
    variables, self.where = load_checked(self.task, model, checkpoint_path)
    self.variables = jax.device_put(variables, jax.local_devices()[0])
    self.step = make_eval_step(self.task, model, self.mesh, config, dtype)
    self.transform = self.task.eval_transform()

  def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None) -> dict:
    samples = self.task.image_samples(image, boxes)
    items = [dict(self.transform(s), index=np.int32(i), valid=np.int32(1))
             for i, s in enumerate(samples)]
    batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
    outputs = jax.device_get(self.step(self.variables, batch))
    return self.task.prediction(samples, outputs)


def run(config: Any, checkpoint_path: str, images: Sequence[str], out_dir: str | os.PathLike,
        boxes_path: str | None = None) -> list[dict]:
  """Writes `<stem>.png` (the picture) and `<stem>.json` (the raw results) per image into
  `out_dir`, plus `predictions.json` with all of them; returns the results."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  boxes = read_boxes(boxes_path) if boxes_path else {}
  predictor = Predictor(config, checkpoint_path)
  print(f'model: {predictor.where}', flush=True)
  everything = []
  for path in images:
    path = pathlib.Path(path)
    image = read_image(path)
    prediction = predictor(image, boxes.get(path.name))
    picture = predictor.task.draw(image, prediction)
    cv2.imwrite(str(out / f'{path.stem}.png'), picture[..., ::-1])
    record = dict(image=str(path), **_json_ready(prediction, out, path.stem))
    with open(out / f'{path.stem}.json', 'w') as f:
      json.dump(record, f, indent=1)
    everything.append(record)
    print(f'{path} -> {out / (path.stem + ".png")}', flush=True)
  with open(out / 'predictions.json', 'w') as f:
    json.dump(everything, f, indent=1)
  return everything
