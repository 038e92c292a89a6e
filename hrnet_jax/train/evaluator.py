"""The one evaluator: a split through the task's jitted eval outputs into its metric. Used by the
trainer (periodic evaluation), eval.py and predict.py (the same jitted step)."""

from __future__ import annotations

import os
import pathlib
from typing import Any, Callable

import jax

from hrnet_jax.data import pipeline, sources, transforms
from hrnet_jax.tasks.base import Metric, Task
from hrnet_jax.train import parallel
from hrnet_jax.train.precision import compute_dtype


def make_eval_step(config: Any, task: Task, mesh: jax.sharding.Mesh,
                   variables_sharding: Any = None) -> Callable[[dict, dict], dict]:
  """jit(variables, global batch) -> small replicated outputs (e.g. a confusion matrix), with
  each sample's `index`, `valid` and `size` passed through. Variables are replicated unless
  `variables_sharding` says otherwise (sharded parameters)."""
  dtype = compute_dtype(config)
  model = task.create_model(dtype)
  mean, std = tuple(config.data.mean), tuple(config.data.std)

  def step(variables, batch):
    images = transforms.normalize(batch['image'], mean, std, dtype)
    apply = lambda x, **inputs: model.apply(variables, x, train=False, **inputs)
    out = task.eval_outputs(apply, images, batch)
    out.update({k: batch[k] for k in ('index', 'valid', 'size') if k in batch})
    return out

  jitted = jax.jit(step, in_shardings=(variables_sharding or parallel.replicated(mesh),
                                       parallel.batch_sharding(mesh)),
                   out_shardings=parallel.replicated(mesh))
  return parallel.CompiledTogether(jitted, 'eval step')


def evaluate(config: Any, task: Task, mesh: jax.sharding.Mesh, variables: dict, *,
             source: sources.Source, eval_step: Callable | None = None,
             predictions_dir: str | os.PathLike | None = None) -> Metric:
  """Runs the whole split in batches of `config.eval.batch_size` (0: one per device); returns
  the task's metric (`.result()`, `.report()`).

  With `predictions_dir`, process 0 writes the predictions there: what the task writes per batch
  (segmentation: colour PNGs) and what the metric writes at the end (pose: COCO results JSON)."""
  eval_step = eval_step or make_eval_step(config, task, mesh)
  batch_size = int(config.eval.get('batch_size') or mesh.devices.size)
  local = parallel.local_batch_size(batch_size, mesh)
  metric = task.new_metric(source)
  writer = jax.process_index() == 0 and predictions_dir is not None
  out_dir = pathlib.Path(predictions_dir) if writer else None
  if out_dir is not None:
    out_dir.mkdir(parents=True, exist_ok=True)
  for batch in pipeline.eval_batches(source, task.eval_transform(), batch_size=local,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count(),
                                     groups=task.batch_groups(source, train=False)):
    outputs = jax.device_get(eval_step(variables, parallel.to_global(batch, mesh)))
    metric.update(outputs)
    if out_dir is not None:
      task.write_predictions(source, outputs, out_dir)
  if out_dir is not None:
    metric.write(out_dir)
  return metric
