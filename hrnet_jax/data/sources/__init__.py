"""Dataset readers, and the one table from `config.data.name` to the reader of that dataset.

A reader is a `Source` (hrnet_jax.data.sources.reader): `len(src)`, `src[i]` -> a dict of numpy
arrays, built with `Reader.from_config(config.data, root, split)`. Readers are imported when
first used, so TFDS or h5py load only for the datasets that need them.
"""

from __future__ import annotations

import importlib
import os
import pathlib
from typing import Any

from hrnet_jax.data.sources.reader import (DataError, DetectionSource, KeypointSource,
                                           SegmentationSource, Source, read_image, read_label)

# config.data.name -> (task, 'module.Reader' under hrnet_jax.data.sources).
DATASETS: dict[str, tuple[str, str]] = {
    'cityscapes': ('segmentation', 'cityscapes.CityscapesFolder'),
    'cityscapes_tfds': ('segmentation', 'cityscapes.CityscapesTFDS'),
    'cityscapes_demo': ('segmentation', 'cityscapes.CityscapesFolder'),
    'pascal_context': ('segmentation', 'pascal_context.PascalContext'),
    'lip': ('segmentation', 'lip.LIP'),
    'coco': ('pose', 'coco.CocoKeypoints'),
    'coco_demo': ('pose', 'coco.CocoKeypoints'),
    'coco_detection': ('detection', 'coco_detection.CocoDetection'),
    'det_demo': ('detection', 'coco_detection.CocoDetection'),
    'mpii': ('pose', 'mpii.MPII'),
    'posetrack': ('pose', 'posetrack.PoseTrackKeypoints'),
    'posetrack_demo': ('pose', 'posetrack.PoseTrackKeypoints'),
    'posetrack_demo_persons': ('detection', 'coco_detection.CocoDetection'),
    'wflw': ('landmarks', 'faces.WFLW'),
    '300w': ('landmarks', 'faces.Face300W'),
    'cofw': ('landmarks', 'faces.COFW'),
    'aflw': ('landmarks', 'faces.AFLW'),
    'face_demo': ('landmarks', 'faces.Face300W'),
    'imagenet': ('classification', 'imagenet.ImageFolder'),
    'imagenet_tfds': ('classification', 'imagenet.ImageNetTFDS'),
    'imagenet_demo': ('classification', 'imagenet.ImageFolder'),
}

# The embedded demos: written by hrnet_jax.data.demos on first use when config.data.root
# is empty (name -> the function there that returns the root).
DEMO_ROOTS: dict[str, str] = {'cityscapes_demo': 'seg_demo_root', 'coco_demo': 'pose_demo_root',
                              'face_demo': 'face_demo_root', 'imagenet_demo': 'cls_demo_root',
                              'det_demo': 'det_demo_root',
                              'posetrack_demo': 'posetrack_demo_root',
                              'posetrack_demo_persons': 'posetrack_demo_root'}


def reader_class(name: str, task: str) -> type[Source]:
  """The reader of dataset `name` for `task`; an unknown name is an error listing the task's."""
  entry = DATASETS.get(name)
  if entry is None or entry[0] != task:
    names = ', '.join(k for k, (t, _) in DATASETS.items() if t == task)
    raise DataError(f'config.data.name: unknown {task} dataset {name!r}; expected one of '
                    f'{names}')
  module, cls = entry[1].rsplit('.', 1)
  return getattr(importlib.import_module(f'hrnet_jax.data.sources.{module}'), cls)


DATA_ENV = 'HRNET_JAX_DATA'


def _folder(name: str) -> str:
  """The dataset's folder under $HRNET_JAX_DATA (both COCO tasks read one `coco/`)."""
  return 'coco' if name == 'coco_detection' else name


def default_root(name: str) -> tuple[str | None, str]:
  """(the root a dataset gets when config.data.root is empty, or None; how it was found):
  a *_tfds name the TFDS data_dir ($TFDS_DATA_DIR, else ~/tensorflow_datasets, TFDS's own
  default); any other the folder named as the dataset (coco_detection: coco) under
  $HRNET_JAX_DATA."""
  if name.endswith('_tfds'):
    if os.environ.get('TFDS_DATA_DIR'):
      return os.environ['TFDS_DATA_DIR'], '$TFDS_DATA_DIR'
    return str(pathlib.Path.home() / 'tensorflow_datasets'), "TFDS's default data_dir"
  if os.environ.get(DATA_ENV):
    return (str(pathlib.Path(os.environ[DATA_ENV]) / _folder(name)),
            f'${DATA_ENV}/{_folder(name)}')
  return None, ''


def dataset_root(data: Any) -> str:
  """`config.data.root`; else the embedded demo's (generated on first use) for a demo name; else
  the default of `default_root`. No data there is an error naming both ways to point at it."""
  if data.root:
    return str(data.root)
  if data.name in DEMO_ROOTS:
    from hrnet_jax.data import demos
    return str(getattr(demos, DEMO_ROOTS[data.name])())
  root, how = default_root(data.name)
  if root is not None and pathlib.Path(root).is_dir():
    return root
  where = (f'the TFDS data_dir ({root}, {how}) does not exist' if data.name.endswith('_tfds')
           else f'{root} ({how}) does not exist' if root else f'${DATA_ENV} is not set')
  raise DataError(f'no {data.name} data: config.data.root is empty and {where}. Set '
                  f'--config.data.root=PATH, or {DATA_ENV}=DIR holding {_folder(data.name)}/'
                  + (' (for a *_tfds name, TFDS_DATA_DIR=DIR)' if data.name.endswith('_tfds')
                     else ''))


def open_source(data: Any, split: str, task: str) -> Source:
  """The reader of `split` of the dataset `config.data` names (`data` is config.data)."""
  return reader_class(data.name, task).from_config(data, dataset_root(data), split)


__all__ = ['DATASETS', 'DATA_ENV', 'DataError', 'DetectionSource', 'KeypointSource',
           'SegmentationSource', 'Source', 'dataset_root', 'default_root', 'open_source',
           'read_image', 'read_label', 'reader_class']
