"""What every reader shares: decoding with errors that name the file, and a missing-root message."""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

import cv2
import numpy as np

cv2.setNumThreads(1)  # Parallelism comes from grain workers; OpenCV threads would oversubscribe.


class DataError(ValueError):
  """Bad or missing data; the message names the path and what was expected."""


def read_image(path: str | os.PathLike) -> np.ndarray:
  """HxWx3 uint8 RGB."""
  image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
  if image is None:
    raise DataError(f'cannot read image {path}: missing, unreadable or not an image file')
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(path: str | os.PathLike) -> np.ndarray:
  """HxW uint8 label map, stored as a single-channel 8-bit PNG."""
  label = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
  if label is None:
    raise DataError(f'cannot read label map {path}: missing, unreadable or not an image file')
  if label.ndim != 2 or label.dtype != np.uint8:
    raise DataError(f'label map {path}: expected a single-channel 8-bit PNG, got shape '
                    f'{label.shape} dtype {label.dtype}')
  return label


def require_paths(dataset: str, root: pathlib.Path, expected: Sequence[str], how: str) -> None:
  """Raises with every expected path that is missing and how to prepare the dataset."""
  missing = [p for p in expected if not (root / p).exists()]
  if missing:
    lines = '\n'.join(f'  {root / p}' for p in missing)
    raise DataError(f'{dataset}: not found under {root}. Missing:\n{lines}\n{how}')


def lookup_table(mapping: dict[int, int], default: int = 255) -> np.ndarray:
  """A 256-entry uint8 table: label value -> train id, everything unlisted -> `default`."""
  table = np.full(256, default, np.uint8)
  for k, v in mapping.items():
    table[k] = v
  return table
