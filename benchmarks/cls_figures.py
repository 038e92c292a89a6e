"""Classification figures on this machine: input-pipeline images/s per worker at the ImageNet
recipe (500x375 JPEG decode -> random resized crop to 224 + flip, and decode -> resize 256 +
centre crop 224), and the train-step time of a model.

  python benchmarks/cls_figures.py [--arch cls_w18] [--batch 8] [--size 224] [--steps 3]
"""

import argparse
import pathlib
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def pipeline_rates(n: int = 60) -> tuple[float, float]:
  """(train, eval) images/s of one worker on synthetic 500x375 JPEGs (ImageNet's typical size),
  through the ImageFolder reader and the transforms of configs/cls_imagenet.py."""
  from configs import cls_imagenet
  from hrnet_jax.tasks import get_task
  root = pathlib.Path(tempfile.mkdtemp())
  rng = np.random.default_rng(0)
  for split in ('train', 'val'):
    for k in range(2):
      d = root / split / f'n{k:08d}'
      d.mkdir(parents=True)
      for i in range(4):
        image = cv2.GaussianBlur(common.random_images(rng, (375, 500, 3)), (9, 9), 0)
        cv2.imwrite(str(d / f'{i}.JPEG'), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
  c = cls_imagenet.get_config()
  c.data.root = str(root)
  task = get_task(c)
  return (common.transform_rate(task.source('train'), task.train_transform(), n),
          common.transform_rate(task.source('val'), task.eval_transform(), n, random=False))


def step_time(arch: str, batch: int, size: int, steps: int) -> tuple[float, float]:
  """(compile s, s/step) of the real train step (SGD Nesterov, cross-entropy) at `size`."""
  from configs import cls_imagenet
  from hrnet_jax.tasks.classification import Classification
  c = cls_imagenet.get_config(f'arch={arch}')
  names = [f'n{k:08d}' for k in range(1000)]  # ImageNet's classes, without the dataset
  rng = np.random.default_rng(0)
  data = {'image': common.random_images(rng, (batch, size, size, 3)),
          'label': rng.integers(0, 1000, batch).astype(np.int32)}
  return common.step_time(c, data, steps, task=Classification(c, classes=(names, names)))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='cls_w18')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--no-step', action='store_true', help='pipeline figures only')
  a = p.parse_args()
  print(common.header())
  train, val = pipeline_rates()
  print(f'pipeline: {train:.1f} images/s per worker for training (500x375 JPEG decode + random '
        f'resized crop to 224 + flip), {val:.1f} for evaluation (decode + resize to 256 + centre '
        'crop 224)')
  if not a.no_step:
    compile_s, s = step_time(a.arch, a.batch, a.size, a.steps)
    print(f'train step {a.arch} {a.size}x{a.size} batch {a.batch}: {s:.2f} s/step '
          f'({a.batch / s:.2f} img/s), compile {compile_s:.1f} s')


if __name__ == '__main__':
  main()
