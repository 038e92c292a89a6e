"""One module per task; `get_task(config)` returns the `Task` (hrnet_jax.tasks.base) that the
trainer, the evaluator and predict.py talk to."""

from __future__ import annotations

import importlib
from typing import Any

from hrnet_jax.errors import ConfigError
from hrnet_jax.tasks.base import Task

# config.task -> 'module.Class' under hrnet_jax.tasks (imported on use).
TASKS = {'segmentation': 'segmentation.Segmentation', 'pose': 'pose.Pose',
         'landmarks': 'landmarks.Landmarks', 'classification': 'classification.Classification',
         'detection': 'detection.detection_task'}


def get_task(config: Any) -> Task:
  if config.task not in TASKS:
    raise ConfigError(f'config.task: unknown task {config.task!r}; expected one of: '
                      f'{", ".join(TASKS)}')
  module, cls = TASKS[config.task].rsplit('.', 1)
  return getattr(importlib.import_module(f'hrnet_jax.tasks.{module}'), cls)(config)
