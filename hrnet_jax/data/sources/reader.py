"""What every reader shares: the Source contract, decoding with errors that name the file, and
the message for a missing dataset."""

from __future__ import annotations

import os
import pathlib
from typing import Any, ClassVar, Sequence

import cv2
import numpy as np
import simplejpeg

from hrnet_jax.errors import UserError

cv2.setNumThreads(1)  # Parallelism comes from grain workers; OpenCV threads would oversubscribe.


class DataError(UserError, ValueError):
  """Bad or missing data; the message names the path and what was expected."""


class Source:
  """A random-access split of a dataset: `len(src)` and `src[i]` -> a dict of numpy arrays
  (`image` HxWx3 uint8 RGB and the split's annotations). grain workers index it in any order,
  so a reader keeps only small metadata in memory and pickles cheaply.

  Readers are built from the config through `from_config` (the dataset table in
  hrnet_jax.data.sources names the reader of each `config.data.name`)."""

  split: str = ''
  names: Sequence[str] | None = None  # per sample: a name for prediction files, when known

  @classmethod
  def from_config(cls, data: Any, root: str, split: str) -> 'Source':
    """The reader of `split` under `root`, with the `config.data` keys it reads."""
    del data
    return cls(root, split)

  def __len__(self) -> int:
    raise NotImplementedError

  def __getitem__(self, i: int) -> dict[str, Any]:
    raise NotImplementedError

  def describe(self) -> str:
    """What the split holds, for the logs (readers add what they left out, and why)."""
    return f'{len(self)} samples'


class SegmentationSource(Source):
  """Samples {'image', 'label' HxW uint8 (255 = ignore)}; the dataset's classes as class
  attributes, so a task knows them before opening a split."""
  CLASS_NAMES: ClassVar[tuple[str, ...]] = ()
  PALETTE: ClassVar[np.ndarray | None] = None  # (K, 3) uint8 RGB; None: a generated palette
  FLIP_PAIRS: ClassVar[tuple[tuple[int, int], ...]] = ()  # classes a mirror swaps (left/right)


class DetectionSource(Source):
  """Whole images with boxes: {'image', 'boxes' (N, 4) float32 x1y1x2y2, 'labels' (N,) int32,
  'image_id'}. Each image's size and box count are known before it is read, so a task picks its
  canvas (and checks its box budget) from the metadata alone."""
  heights: np.ndarray  # per image, int32
  widths: np.ndarray
  num_boxes: np.ndarray


class KeypointSource(Source):
  """Samples of one person or face: {'image', 'center', 'scale', ...}; the point layout as
  class attributes."""
  KEYPOINT_NAMES: ClassVar[tuple[str, ...]] = ()
  FLIP_PAIRS: ClassVar[tuple[tuple[int, int], ...]] = ()  # 0-based points a mirror swaps
  UPPER_BODY: ClassVar[tuple[int, ...]] = ()  # for half-body crops
  SKELETON: ClassVar[tuple[tuple[int, int], ...]] = ()  # limbs drawn by predict.py


def read_image(path: str | os.PathLike) -> np.ndarray:
  """HxWx3 uint8 RGB, the pixels OpenCV's `imread` gives (EXIF orientation applied).

  A JPEG that needs no turning is decoded by libjpeg-turbo straight to RGB (simplejpeg): the
  same pixels in about half the time of OpenCV's decoder (1.6 against 2.7 ms for a 640x480
  COCO-sized photo on a 2-core AMD EPYC), and decoding is most of a pose or classification
  sample's time. Everything else (PNG, a JPEG whose EXIF turns it, one that does not decode
  there) goes through OpenCV as before."""
  try:
    with open(path, 'rb') as f:
      head = f.read(2)
      data = head + f.read() if head == b'\xff\xd8' else None
  except OSError:
    data = None  # missing or unreadable: OpenCV's path below reports it
  if data is not None and _exif_orientation(data) == 1:
    try:
      return simplejpeg.decode_jpeg(data, 'RGB')
    except ValueError:
      pass  # damaged or unusual: left to OpenCV, which decides as it always has
  image = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
  if image is None:
    raise DataError(f'cannot read image {path}: missing, unreadable or not an image file')
  return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _exif_orientation(jpeg: bytes) -> int:
  """The EXIF Orientation of a JPEG (1: as stored, also when it has no EXIF); 0 when its EXIF
  cannot be read. Reads the marker segments before the image data (TIFF IFD0, tag 0x0112)."""
  pos = 2
  while pos + 4 <= len(jpeg) and jpeg[pos] == 0xFF:
    marker = jpeg[pos + 1]
    if marker == 0xFF:  # fill byte
      pos += 1
      continue
    if marker in (0xDA, 0xD9):  # start of scan, end of image: no EXIF before the data
      return 1
    length = int.from_bytes(jpeg[pos + 2:pos + 4], 'big')
    if marker == 0xE1 and jpeg[pos + 4:pos + 10] == b'Exif\x00\x00':
      return _tiff_orientation(jpeg[pos + 10:pos + 2 + length])
    pos += 2 + length
  return 1


def _tiff_orientation(tiff: bytes) -> int:
  order = {b'II': 'little', b'MM': 'big'}.get(tiff[:2])
  if order is None or len(tiff) < 8:
    return 0
  number = lambda at, size: int.from_bytes(tiff[at:at + size], order)
  ifd = number(4, 4)
  if ifd + 2 > len(tiff):
    return 0
  for entry in range(ifd + 2, min(ifd + 2 + 12 * number(ifd, 2), len(tiff) - 11), 12):
    if number(entry, 2) == 0x0112:
      return number(entry + 8, 2) if number(entry + 2, 2) == 3 else 0  # type SHORT
  return 1


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
