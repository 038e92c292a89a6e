"""Pose figures on this machine: input-pipeline crops/s per worker at the COCO recipe (640x480
JPEG decode -> augmented 256x192 crop + 64x48 targets), and the train-step time of a model.

  python benchmarks/pose_figures.py [--arch pose_w32] [--batch 8] [--size 256 192] [--steps 3]
"""

import argparse
import json
import pathlib
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def pipeline_rate(n: int = 40) -> float:
  """Crops/s of one worker on synthetic 640x480 JPEGs, through the COCO reader and the train
  transform of configs/pose_coco.py."""
  from configs import pose_coco
  from hrnet_jax.tasks import get_task
  root = pathlib.Path(tempfile.mkdtemp())
  (root / 'annotations').mkdir()
  (root / 'images' / 'train2017').mkdir(parents=True)
  rng = np.random.default_rng(0)
  images, anns = [], []
  for i in range(8):
    image = cv2.GaussianBlur(common.random_images(rng, (480, 640, 3)), (9, 9), 0)
    cv2.imwrite(str(root / 'images' / 'train2017' / f'{i}.jpg'), image)
    images.append({'id': i, 'file_name': f'{i}.jpg', 'width': 640, 'height': 480})
    kpts = np.concatenate([rng.uniform(200, 400, (17, 2)), np.full((17, 1), 2)], 1)
    anns.append({'id': i, 'image_id': i, 'category_id': 1, 'bbox': [180, 100, 240, 330],
                 'keypoints': kpts.reshape(-1).tolist()})
  (root / 'annotations' / 'person_keypoints_train2017.json').write_text(
      json.dumps({'images': images, 'annotations': anns}))
  c = pose_coco.get_config()
  c.data.root = str(root)
  task = get_task(c)
  return common.transform_rate(task.source('train2017'), task.train_transform(), n)


def step_time(arch: str, batch: int, size: tuple[int, int], steps: int) -> tuple[float, float]:
  """(compile s, s/step) of the real train step (Adam, joints MSE) at `size`."""
  from configs import pose_coco
  c = pose_coco.get_config()
  c.model.arch = arch
  hh, hw = size[0] // 4, size[1] // 4
  rng = np.random.default_rng(0)
  data = {'image': common.random_images(rng, (batch, *size, 3)),
          'target': rng.random((batch, hh, hw, 17), dtype=np.float32),
          'target_weight': np.ones((batch, 17), np.float32)}
  return common.step_time(c, data, steps)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='pose_w32')
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--size', type=int, nargs=2, default=(256, 192))
  p.add_argument('--steps', type=int, default=3)
  a = p.parse_args()
  print(common.header())
  print(f'pipeline: {pipeline_rate():.1f} crops/s per worker (640x480 JPEG decode + half body/'
        'scale/rotation/flip warp to 256x192 + 64x48 Gaussian targets)')
  compile_s, s = step_time(a.arch, a.batch, tuple(a.size), a.steps)
  print(f'train step {a.arch} {a.size[0]}x{a.size[1]} batch {a.batch}: {s:.2f} s/step '
        f'({a.batch / s:.2f} img/s), compile {compile_s:.1f} s')


if __name__ == '__main__':
  main()
