"""One module per task. `get_task(config)` returns the object the trainer and evaluator talk to:
it builds the model, the data sources and transforms, the loss, and the evaluation metric."""

from __future__ import annotations

from typing import Any


def get_task(config: Any):
  name = config.task
  if name == 'segmentation':
    from hrnet_jax.tasks.segmentation import Segmentation
    return Segmentation(config)
  if name == 'pose':
    from hrnet_jax.tasks.pose import Pose
    return Pose(config)
  if name == 'landmarks':
    from hrnet_jax.tasks.landmarks import Landmarks
    return Landmarks(config)
  if name == 'classification':
    from hrnet_jax.tasks.classification import Classification
    return Classification(config)
  raise ValueError(f'config.task: unknown task {name!r}; expected one of: segmentation, pose, '
                   'landmarks, classification')
