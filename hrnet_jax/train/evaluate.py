"""The one evaluator: a split through the task's jitted eval outputs into its metric."""

from __future__ import annotations

import os
import pathlib
from typing import Any

import jax

from hrnet_jax.data import pipeline, transforms
from hrnet_jax.train import parallel


def make_eval_step(task: Any, model: Any, mesh: Any, config: Any, dtype: Any,
                   variables_sharding: Any = None):
  """jit(variables, global batch) -> small replicated outputs (e.g. a confusion matrix).
  Variables are replicated unless `variables_sharding` says otherwise (sharded parameters)."""
  mean, std = tuple(config.data.mean), tuple(config.data.std)

  def step(variables, batch):
    images = transforms.normalize(batch['image'], mean, std, dtype)
    apply = lambda x: model.apply(variables, x, train=False)
    out = task.eval_outputs(apply, images, batch)
    out.update({k: batch[k] for k in ('index', 'valid', 'size') if k in batch})
    return out

  return jax.jit(step, in_shardings=(variables_sharding or parallel.replicated(mesh),
                                     parallel.batch_sharding(mesh)),
                 out_shardings=parallel.replicated(mesh))


def evaluate(task: Any, model: Any, variables: Any, mesh: Any, config: Any, *, dtype: Any,
             split: str | None = None, predictions_dir: str | os.PathLike | None = None,
             eval_step: Any = None, source: Any = None) -> Any:
  """Runs the whole split; returns the task's metric object (`.result()`, `.report()`).

  With `predictions_dir`, process 0 writes the predictions there: what the task writes per batch
  (segmentation: colour PNGs) and what the metric writes at the end (pose: COCO results JSON)."""
  source = source if source is not None else task.source(split or config.data.eval_split)
  eval_step = eval_step or make_eval_step(task, model, mesh, config, dtype)
  batch_size = int(config.eval.get('batch_size') or mesh.devices.size)
  local = parallel.local_batch_size(batch_size, mesh)
  metric = task.new_metric(source)
  out_dir = pathlib.Path(predictions_dir) if predictions_dir else None
  if out_dir is not None and jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
  for batch in pipeline.eval_batches(source, task.eval_transform(), batch_size=local,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()):
    outputs = eval_step(variables, parallel.to_global(batch, mesh))
    metric.update(outputs)
    if out_dir is not None and jax.process_index() == 0 and hasattr(task, 'write_predictions'):
      task.write_predictions(source, outputs, out_dir)
  if out_dir is not None and jax.process_index() == 0 and hasattr(metric, 'write'):
    metric.write(out_dir)
  return metric
