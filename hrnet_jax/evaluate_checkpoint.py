"""What eval.py runs: load any checkpoint, evaluate a split with the config's protocol, report."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from hrnet_jax.errors import ConfigError
from hrnet_jax.tasks import get_task
from hrnet_jax.train import checkpoint, parallel
from hrnet_jax.train.evaluator import evaluate


def run(config: Any, checkpoint_path: str, *, split: str | None = None, flip: bool = False,
        multi_scale: bool = False, sliding: str | None = None,
        predictions_dir: str | os.PathLike | None = None,
        results_path: str | os.PathLike | None = None) -> dict[str, Any]:
  """Evaluates `checkpoint_path` and prints the task's table; returns the scores."""
  config = config.copy_and_resolve_references()
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
