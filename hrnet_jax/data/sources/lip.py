"""LIP (Look Into Person), 20 classes (0 = background), in its distributed layout:

  root/TrainVal_images/{split}_images/{id}.jpg
  root/TrainVal_parsing_annotations/{split}_segmentations/{id}.png
  root/TrainVal_images/{split}_id.txt   one id per line
with split 'train' or 'val'. Label values above 19 map to 255.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from hrnet_jax.data.sources.reader import (DataError, SegmentationSource, lookup_table,
                                           read_image, read_label, require_paths)

CLASS_NAMES = ('background', 'hat', 'hair', 'glove', 'sunglasses', 'upper-clothes', 'dress',
               'coat', 'socks', 'pants', 'jumpsuits', 'scarf', 'skirt', 'face', 'left-arm',
               'right-arm', 'left-leg', 'right-leg', 'left-shoe', 'right-shoe')
# Horizontal flip swaps left and right parts.
FLIP_PAIRS = ((14, 15), (16, 17), (18, 19))
TABLE = lookup_table({v: v for v in range(20)})
_HOW = ('Unpack TrainVal_images.zip and TrainVal_parsing_annotations.zip from the LIP release '
        'into this root.')


class LIP(SegmentationSource):
  CLASS_NAMES, FLIP_PAIRS = CLASS_NAMES, FLIP_PAIRS


  def __init__(self, root: str | os.PathLike, split: str):
    self.root, self.split = pathlib.Path(root), split
    self.images = self.root / 'TrainVal_images' / f'{split}_images'
    self.labels = self.root / 'TrainVal_parsing_annotations' / f'{split}_segmentations'
    lst = f'TrainVal_images/{split}_id.txt'
    require_paths('LIP', self.root, [str(self.images.relative_to(self.root)),
                                     str(self.labels.relative_to(self.root)), lst], _HOW)
    self.names = [s.strip() for s in (self.root / lst).read_text().splitlines() if s.strip()]
    if not self.names:
      raise DataError(f'LIP: {self.root / lst} lists no images')

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    name = self.names[i]
    return {'image': read_image(self.images / f'{name}.jpg'),
            'label': TABLE[read_label(self.labels / f'{name}.png')]}
