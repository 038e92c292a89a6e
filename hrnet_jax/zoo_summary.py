"""Forward passes of zoo models on a sample image: output shapes, parameters, GFLOPs, time.

  python -m hrnet_jax.zoo_summary [--image PATH] [--arch seg_w18 pose_w32 ...] [--checkpoint DIR]

Without --image a synthetic street-like picture is drawn (no downloads). Without --checkpoint
the weights are random: this shows the model zoo runs; the task commands train real models.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import hrnet_jax
from hrnet_jax.models import zoo

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def sample_image(h: int = 512, w: int = 1024) -> np.ndarray:
  """A deterministic street-like RGB uint8 picture: sky, buildings, road, a car."""
  img = np.zeros((h, w, 3), np.uint8)
  sky = np.linspace(255, 140, h // 3)[:, None]
  img[:h // 3] = np.stack([sky * 0.55, sky * 0.75, sky], -1).astype(np.uint8)[:, None, 0]
  rng = np.random.default_rng(0)
  x = 0
  while x < w:  # buildings
    bw, top = int(rng.integers(60, 160)), int(rng.integers(h // 8, h // 3))
    img[top:h // 2, x:x + bw] = rng.integers(60, 160, 3)
    x += bw
  img[h // 2:] = (90, 90, 95)  # road
  img[int(h * 0.75):int(h * 0.77), ::40] = 230  # lane marks
  img[int(h * 0.55):int(h * 0.7), w // 3:w // 3 + w // 6] = (170, 20, 30)  # a car
  return img


def load_image(path: str | None, size: tuple[int, int]) -> np.ndarray:
  if path is None:
    return sample_image(*size)
  from PIL import Image  # pylint: disable=import-outside-toplevel
  return np.asarray(Image.open(path).convert('RGB').resize(size[::-1], Image.BILINEAR))


def run(arch: str, image: np.ndarray, variables=None, overrides=None) -> dict:
  """One forward pass; returns shapes, parameter count and timings."""
  overrides = overrides or {}
  model = hrnet_jax.create_model(arch, **overrides)
  x = ((image.astype(np.float32) / 255.0 - MEAN) / STD)[None]
  if variables is None:
    variables = jax.jit(model.init)(jax.random.key(0), x)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  t0 = time.perf_counter()
  jax.block_until_ready(forward(variables, x))
  t1 = time.perf_counter()
  out = jax.block_until_ready(forward(variables, x))
  t2 = time.perf_counter()
  shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), out)
  return dict(arch=arch, input=tuple(x.shape), output=shapes,
              params=sum(int(a.size) for a in jax.tree_util.tree_leaves(variables['params'])),
              gflops=hrnet_jax.flops(arch, image.shape[:2], **overrides),
              compile_s=t1 - t0 - (t2 - t1), run_s=t2 - t1, out=out)


_SIZES = {'cls': (224, 224), 'seg': (512, 1024), 'seg_ocr': (512, 1024), 'pose': (256, 192),
          'face': (256, 256), 'det': (512, 512), 'fcos': (512, 512)}


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--image', help='an image file (default: a synthetic street scene)')
  p.add_argument('--arch', nargs='+', default=['cls_w18', 'seg_w18', 'pose_w32'])
  p.add_argument('--checkpoint', help='an orbax directory or .pth for the (single) --arch')
  args = p.parse_args(argv)

  print(f'jax {jax.__version__} on {jax.devices()[0].platform}; '
        f'{len(hrnet_jax.list_models())} archs in the zoo')
  for arch in args.arch:
    size = _SIZES[zoo.split_arch(arch)[0]]
    variables, overrides = None, {}
    if args.checkpoint:
      from hrnet_jax import convert  # pylint: disable=import-outside-toplevel
      if convert.files.is_torch_file(args.checkpoint):
        report = convert.Report()
        variables = convert.torch_to_flax(args.checkpoint, arch, report=report)
        overrides = report.overrides
      else:
        variables, meta = convert.read_variables(args.checkpoint)
        overrides = meta.get('overrides', {})
    r = run(arch, load_image(args.image, size), variables, overrides)
    print(f"{arch:12s} input {r['input']} -> {r['output']}  params {r['params']:,}  "
          f"{r['gflops']:.2f} GFLOPs  compile {r['compile_s']:.1f}s  run {r['run_s'] * 1e3:.0f} ms")


if __name__ == '__main__':
  main()
