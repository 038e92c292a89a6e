"""Cityscapes: the distributed folder layout, and TFDS `cityscapes/semantic_segmentation`.

Labels are stored as labelIds (0..33, -1 as 255 in the PNGs); training uses the 19 trainIds.
Every labelId outside the official table (void classes, license plate, out-of-range values in a
damaged file) maps to 255 and is ignored by the loss and the metric.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from hrnet_jax.data.sources.reader import (DataError, SegmentationSource, lookup_table,
                                           read_image, read_label, require_paths)

CLASS_NAMES = ('road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
               'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car', 'truck',
               'bus', 'train', 'motorcycle', 'bicycle')
PALETTE = np.array([(128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
                    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
                    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
                    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230),
                    (119, 11, 32)], np.uint8)
# labelId -> trainId (the official table); everything else -> 255.
LABEL_TO_TRAIN_ID = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
                     24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
TRAIN_ID_TABLE = lookup_table(LABEL_TO_TRAIN_ID)
SPLITS = ('train', 'val', 'test')

_HOW = ('Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from '
        'https://www.cityscapes-dataset.com and unzip both into this root, giving '
        'leftImg8bit/{train,val,test}/<city>/*_leftImg8bit.png and '
        'gtFine/{train,val,test}/<city>/*_gtFine_labelIds.png.')


def to_train_ids(label_ids: np.ndarray) -> np.ndarray:
  return TRAIN_ID_TABLE[label_ids]


class CityscapesFolder(SegmentationSource):
  """`root/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png` with
  `root/gtFine/{split}/{city}/{name}_gtFine_labelIds.png`."""
  CLASS_NAMES, PALETTE = CLASS_NAMES, PALETTE

  def __init__(self, root: str | os.PathLike, split: str):
    if split not in SPLITS:
      raise DataError(f'Cityscapes split must be one of {SPLITS}, got {split!r}')
    self.root, self.split = pathlib.Path(root), split
    require_paths('Cityscapes', self.root, [f'leftImg8bit/{split}', f'gtFine/{split}'], _HOW)
    images = sorted((self.root / 'leftImg8bit' / split).glob('*/*_leftImg8bit.png'))
    if not images:
      raise DataError(f'Cityscapes: no *_leftImg8bit.png files under '
                      f'{self.root / "leftImg8bit" / split}/<city>/. {_HOW}')
    self.images = images
    self.labels = [self.root / 'gtFine' / split / p.parent.name /
                   p.name.replace('_leftImg8bit.png', '_gtFine_labelIds.png') for p in images]
    self.names = [p.name.replace('_leftImg8bit.png', '') for p in images]

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {'image': read_image(self.images[i]), 'label': to_train_ids(read_label(self.labels[i]))}


class CityscapesTFDS(SegmentationSource):
  """TFDS `cityscapes/semantic_segmentation` (ArrayRecord), read with `tfds.data_source`.

  Build it once with `prepare_tfds(manual_dir, data_dir)` (needs the `tfds-build` extra)."""
  CLASS_NAMES, PALETTE = CLASS_NAMES, PALETTE

  def __init__(self, data_dir: str | os.PathLike, split: str):
    import tensorflow_datasets as tfds
    self.split = split
    split = {'val': 'validation'}.get(split, split)
    try:
      self._source = tfds.data_source('cityscapes/semantic_segmentation', split=split,
                                      data_dir=os.fspath(data_dir), download=False)
    except Exception as e:  # TFDS raises several types for a missing or unbuilt dataset.
      raise DataError(f'TFDS cityscapes/semantic_segmentation split {split!r} not found in '
                      f'{data_dir} ({type(e).__name__}: {e}). Build it with '
                      f'hrnet_jax.data.sources.cityscapes.prepare_tfds(manual_dir, data_dir), '
                      f'manual_dir holding leftImg8bit_trainvaltest.zip and '
                      f'gtFine_trainvaltest.zip.') from e
    self.names = [str(i) for i in range(len(self._source))]

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    record = self._source[i]
    label = np.asarray(record['segmentation_label'])[..., 0].astype(np.uint8)
    return {'image': np.asarray(record['image_left'], np.uint8), 'label': to_train_ids(label)}


def prepare_tfds(manual_dir: str | os.PathLike, data_dir: str | os.PathLike) -> None:
  """Builds `cityscapes/semantic_segmentation` as ArrayRecord from the two official zips."""
  try:
    import tensorflow  # noqa: F401  (TFDS needs TensorFlow to build, not to read)
  except ImportError as e:
    raise DataError('building the TFDS Cityscapes dataset needs TensorFlow: '
                    "pip install 'hrnet-jax[tfds-build]'") from e
  import tensorflow_datasets as tfds
  manual = pathlib.Path(manual_dir)
  require_paths('Cityscapes zips', manual,
                ['leftImg8bit_trainvaltest.zip', 'gtFine_trainvaltest.zip'], _HOW)
  builder = tfds.builder('cityscapes/semantic_segmentation', data_dir=os.fspath(data_dir),
                         file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
