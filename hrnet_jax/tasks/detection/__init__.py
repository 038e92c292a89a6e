"""The detection family (`config.task = 'detection'`): what the frameworks share (task.py: the
DetectionTask; canvas.py: resized, padded images and boxes; metric.py: COCO box AP; draw.py:
pictures) and one module per framework, chosen by the arch (`fcos_w32` -> fcos.FCOS,
`faster_rcnn_w32`, `cascade_rcnn_w32`, `mask_rcnn_w32`, `cascade_mask_rcnn_w32`, `htc_w32`,
`htc_without_semantic_w32` -> rcnn.TwoStage, `centernet_w48` -> keypoint_triplets.CenterNet)."""

from __future__ import annotations

import importlib
from typing import Any, Sequence

from hrnet_jax.errors import ConfigError
from hrnet_jax.models import zoo
from hrnet_jax.tasks.detection.task import DetectionTask

# The arch's task part (zoo.split_arch) -> 'module.Class' of its framework (imported on use).
FRAMEWORKS = {'fcos': 'fcos.FCOS', 'centernet': 'keypoint_triplets.CenterNet',
              **{family: 'rcnn.TwoStage' for family in zoo.TWO_STAGE_TASKS}}


def framework_class(arch: str) -> type[DetectionTask]:
  """The task class of a detection arch's framework."""
  family = zoo.split_arch(arch)[0]
  if family not in FRAMEWORKS:
    raise ConfigError(f'config.model.arch: detection needs one of the frameworks\' archs '
                      f'({", ".join(f + "_*" for f in FRAMEWORKS)}), got {arch!r}')
  module, cls = FRAMEWORKS[family].rsplit('.', 1)
  return getattr(importlib.import_module(f'hrnet_jax.tasks.detection.{module}'), cls)


def detection_task(config: Any,
                   classes: tuple[Sequence[int], Sequence[str]] | None = None) -> DetectionTask:
  """The framework's task for `config.model.arch`."""
  return framework_class(config.model.arch)(config, classes)


__all__ = ['DetectionTask', 'FRAMEWORKS', 'detection_task', 'framework_class']
