"""Segmentation figures on this machine: input-pipeline images/s per worker at the Cityscapes
recipe (2048x1024 PNG decode -> 512x1024 scaled crop), and the train-step time of a model.

  python benchmarks/seg_figures.py [--arch seg_w18] [--batch 2] [--crop 512 1024] [--steps 5]
"""

import argparse
import functools
import pathlib
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from hrnet_jax.data import transforms  # noqa: E402
from hrnet_jax.data.sources.cityscapes import CityscapesFolder  # noqa: E402


def pipeline_rate(n: int = 6) -> float:
  """Samples/s of one worker: decode a 2048x1024 image + label, random scale/crop/flip."""
  root = pathlib.Path(tempfile.mkdtemp())
  rng = np.random.default_rng(0)
  for i in range(n):
    for sub, suffix, array in (
        ('leftImg8bit', 'leftImg8bit', cv2.GaussianBlur(
            rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8), (7, 7), 0)),
        ('gtFine', 'gtFine_labelIds', np.repeat(rng.integers(0, 34, (1024, 64), np.uint8), 32, 1))):
      d = root / sub / 'train' / 'city'
      d.mkdir(parents=True, exist_ok=True)
      cv2.imwrite(str(d / f'city_{i:06d}_000019_{suffix}.png'), array)
  src = CityscapesFolder(root, 'train')
  tf = functools.partial(transforms.random_scale_crop_flip, crop_hw=(512, 1024))
  return common.transform_rate(src, tf, n)


def step_time(arch: str, batch: int, crop: tuple[int, int], steps: int) -> tuple[float, float]:
  """(compile s, s/step) of the real train step (SGD, weighted CE) at `crop`."""
  from configs import seg_cityscapes
  c = seg_cityscapes.get_config()
  c.model.arch = arch
  rng = np.random.default_rng(0)
  data = {'image': common.random_images(rng, (batch, *crop, 3)),
          'label': rng.integers(0, 19, (batch, *crop), dtype=np.uint8)}
  return common.step_time(c, data, steps)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='seg_w18')
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--crop', type=int, nargs=2, default=(512, 1024))
  p.add_argument('--steps', type=int, default=3)
  a = p.parse_args()
  print(common.header())
  print(f'pipeline: {pipeline_rate():.2f} samples/s per worker '
        '(2048x1024 PNG decode + label decode + scale/crop 512x1024/flip)')
  compile_s, s = step_time(a.arch, a.batch, tuple(a.crop), a.steps)
  print(f'train step {a.arch} {a.crop[0]}x{a.crop[1]} batch {a.batch}: {s:.2f} s/step '
        f'({a.batch / s:.2f} img/s), compile {compile_s:.1f} s')


if __name__ == '__main__':
  main()
