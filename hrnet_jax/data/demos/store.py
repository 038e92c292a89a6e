"""Where the demo datasets live and how they are written: once, atomically, into the cache."""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Callable

import cv2
import numpy as np

def cache_dir() -> pathlib.Path:
  """`$HRNET_JAX_CACHE` or `~/.cache/hrnet_jax`."""
  return pathlib.Path(os.environ.get('HRNET_JAX_CACHE', pathlib.Path.home() / '.cache' / 'hrnet_jax'))



def write_once(root: str | os.PathLike, fill: Callable[[pathlib.Path], None],
                stamp: str) -> pathlib.Path:
  """Runs `fill(dir)` in a fresh directory beside `root`, then renames it to `root`: readers see
  a finished dataset or none, and of concurrent writers the first rename wins."""
  root = pathlib.Path(root)
  if (root / 'DONE').exists():
    return root
  root.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=root.name + '.', dir=root.parent))
  fill(tmp)
  (tmp / 'DONE').write_text(stamp + '\n')
  try:
    tmp.rename(root)
  except OSError:  # Another process finished first: keep theirs.
    shutil.rmtree(tmp, ignore_errors=True)
  return root



def write_coco_image(folder: pathlib.Path, image_id: int, image: np.ndarray) -> dict:
  """Writes an RGB image as COCO names it (`<12-digit id>.jpg`); returns its `images` record."""
  name = f'{image_id:012d}.jpg'
  cv2.imwrite(str(folder / name), image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
  return {'id': image_id, 'file_name': name, 'height': image.shape[0], 'width': image.shape[1]}
