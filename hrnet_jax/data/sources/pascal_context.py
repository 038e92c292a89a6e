"""PASCAL-Context, 59 classes, in the converted-PNG layout:

  root/JPEGImages/{id}.jpg
  root/SegmentationClassContext/{id}.png   values 0 = background, 1..59 = the 59 classes
  root/ImageSets/SegmentationContext/{train,val}.txt   one id per line

The 59-class benchmark ignores background: value 0 -> 255, v -> v - 1.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from hrnet_jax.data.sources.reader import (DataError, SegmentationSource, lookup_table,
                                           read_image, read_label, require_paths)

CLASS_NAMES = (
    'aeroplane', 'bag', 'bed', 'bedclothes', 'bench', 'bicycle', 'bird', 'boat', 'book', 'bottle',
    'building', 'bus', 'cabinet', 'car', 'cat', 'ceiling', 'chair', 'cloth', 'computer', 'cow',
    'cup', 'curtain', 'dog', 'door', 'fence', 'floor', 'flower', 'food', 'grass', 'ground',
    'horse', 'keyboard', 'light', 'motorbike', 'mountain', 'mouse', 'person', 'plate', 'platform',
    'pottedplant', 'road', 'rock', 'sheep', 'shelves', 'sidewalk', 'sign', 'sky', 'snow', 'sofa',
    'table', 'track', 'train', 'tree', 'truck', 'tvmonitor', 'wall', 'water', 'window', 'wood')
TABLE = lookup_table({v: v - 1 for v in range(1, 60)})
_HOW = ('Unpack VOC2010 JPEGImages and the PASCAL-Context labels converted to 59-class PNGs '
        '(SegmentationClassContext, 0 = background) with the train/val id lists.')


class PascalContext(SegmentationSource):
  CLASS_NAMES = CLASS_NAMES


  def __init__(self, root: str | os.PathLike, split: str):
    self.root, self.split = pathlib.Path(root), split
    lst = f'ImageSets/SegmentationContext/{split}.txt'
    require_paths('PASCAL-Context', self.root, ['JPEGImages', 'SegmentationClassContext', lst],
                  _HOW)
    self.names = [s.strip() for s in (self.root / lst).read_text().splitlines() if s.strip()]
    if not self.names:
      raise DataError(f'PASCAL-Context: {self.root / lst} lists no images')

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    name = self.names[i]
    return {'image': read_image(self.root / 'JPEGImages' / f'{name}.jpg'),
            'label': TABLE[read_label(self.root / 'SegmentationClassContext' / f'{name}.png')]}
