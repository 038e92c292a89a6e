"""Face figures on this machine: input-pipeline crops/s per worker at the WFLW recipe (640x480
JPEG decode -> augmented 256x256 crop + 64x64 targets for 98 landmarks), and the train-step time.

  python benchmarks/face_figures.py [--arch face_w18] [--batch 4] [--steps 3]
"""

import argparse
import pathlib
import sys
import tempfile

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


def pipeline_rate(n: int = 60) -> float:
  """Crops/s of one worker on synthetic 640x480 JPEGs, through the WFLW CSV reader and the train
  transform of configs/face_wflw.py."""
  from configs import face_wflw
  from hrnet_jax.tasks import get_task
  root = pathlib.Path(tempfile.mkdtemp())
  (root / 'images').mkdir()
  rng = np.random.default_rng(0)
  rows = ['image_name,scale,center_w,center_h,' + ','.join(f'p{i}' for i in range(196))]
  for i in range(8):
    image = cv2.GaussianBlur(common.random_images(rng, (480, 640, 3)), (9, 9), 0)
    cv2.imwrite(str(root / 'images' / f'{i}.jpg'), image)
    pts = rng.uniform(220, 420, (98, 2))
    rows.append(f'{i}.jpg,1.0,320,240,' + ','.join(f'{v:.2f}' for v in pts.reshape(-1)))
  (root / 'face_landmarks_wflw_train.csv').write_text('\n'.join(rows) + '\n')
  c = face_wflw.get_config()
  c.data.root = str(root)
  task = get_task(c)
  return common.transform_rate(task.source('train'), task.train_transform(), n)


def step_time(arch: str, batch: int, steps: int) -> tuple[float, float]:
  """(compile s, s/step) of the real train step (Adam, heatmap MSE) at 256x256, 98 landmarks."""
  from configs import face_wflw
  c = face_wflw.get_config()
  c.model.arch = arch
  rng = np.random.default_rng(0)
  data = {'image': common.random_images(rng, (batch, 256, 256, 3)),
          'target': rng.random((batch, 64, 64, 98), dtype=np.float32),
          'target_weight': np.ones((batch, 98), np.float32)}
  return common.step_time(c, data, steps)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='face_w18')
  p.add_argument('--batch', type=int, default=4)
  p.add_argument('--steps', type=int, default=3)
  a = p.parse_args()
  print(common.header())
  print(f'pipeline: {pipeline_rate():.1f} crops/s per worker (640x480 JPEG decode + scale/'
        'rotation/flip warp to 256x256 + 98 Gaussian targets at 64x64)')
  compile_s, s = step_time(a.arch, a.batch, a.steps)
  print(f'train step {a.arch} 256x256 batch {a.batch}: {s:.2f} s/step ({a.batch / s:.2f} img/s), '
        f'compile {compile_s:.1f} s')


if __name__ == '__main__':
  main()
