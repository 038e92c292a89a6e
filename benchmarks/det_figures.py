"""Detection figures on this machine: a detector recipe's train step (FCOS: targets, losses,
backward, SGD with clipping; Faster / Cascade R-CNN: anchors, proposals, samples, RoIAlign,
losses, backward; CenterNet: colour noise, targets, losses, backward, Adam) and eval step
(network + decoding + NMS; CenterNet: the image and its mirror, decoding and rescaling, the
host's centre check and soft-NMS not included) at a canvas of the recipe: compile time and
seconds per step; with --torch also the network's forward next to the PyTorch reference
(mmdetection's layout) with the same weights, in turns (the two-stage forward includes the
proposals and the box heads; CenterNet has no PyTorch release to compare with).

  python benchmarks/det_figures.py [--arch fcos_w32 | faster_rcnn_w32 | cascade_rcnn_w32 |
      centernet_w48] [--batch 1] [--size 800 1344] [--steps 2] [--torch]
"""

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


RECIPES = {'fcos': 'det_coco_fcos', 'faster_rcnn': 'det_coco_faster_rcnn',
           'cascade_rcnn': 'det_coco_cascade_rcnn', 'centernet': 'det_coco_centernet'}


def recipe(arch: str, size: tuple[int, int]):
  import importlib
  from hrnet_jax.tasks.detection import detection_task
  family = next((f for f in RECIPES if arch.startswith(f + '_')), None)
  if family is None:
    raise SystemExit(f'--arch {arch}: expected one of the families {sorted(RECIPES)}')
  c = importlib.import_module(f'configs.{RECIPES[family]}').get_config(f'arch={arch}')
  c.data.buckets = (tuple(size),)
  if family == 'centernet':
    c.data.input_size = tuple(size)  # square: its training window
  return c, detection_task(c)  # the 80 COCO classes are built in: no dataset needed


def train_batch(rng: np.random.Generator, batch: int, size: tuple[int, int], max_boxes: int,
                boxes: int = 12) -> dict:
  """Random images with `boxes` random boxes each (COCO's mean is 7.3 per image)."""
  h, w = size
  xy = rng.uniform(0, [w - 40, h - 40], (batch, max_boxes, 2))
  wh = rng.uniform(16, 400, (batch, max_boxes, 2))
  b = np.concatenate([xy, np.minimum(xy + wh, [w, h])], -1).astype(np.float32)
  noise = np.concatenate([np.tile(rng.permutation(3), (batch, 1)),
                          rng.uniform(0.6, 1.4, (batch, 3)), np.ones((batch, 1))], 1)
  return {'image': common.random_images(rng, (batch, h, w, 3)), 'boxes': b,
          'image_hw': np.array([[h, w]] * batch, np.int32),
          'labels': rng.integers(0, 80, (batch, max_boxes)).astype(np.int32),
          'box_valid': np.arange(max_boxes)[None].repeat(batch, 0) < boxes,
          'color_noise': noise.astype(np.float32),  # CenterNet's (the others ignore these)
          'lighting': rng.normal(0, 0.1, (batch, 3)).astype(np.float32)}


def eval_step_time(c, task, batch: int, size: tuple[int, int], steps: int) -> tuple[float, float]:
  """(compile s, s/step) of the evaluator's own jitted step (network, decoding, NMS)."""
  from hrnet_jax.train import parallel
  from hrnet_jax.train.evaluator import make_eval_step
  from hrnet_jax.train.loop import init_variables
  mesh = parallel.make_mesh(c.get('mesh'))
  variables = init_variables(task.create_model(), 0)
  step = make_eval_step(c, task, mesh)
  rng = np.random.default_rng(0)
  h, w = size
  data = {'image': common.random_images(rng, (batch, h, w, 3)),
          'image_hw': np.array([[h, w]] * batch, np.int32),
          'scale_xy': np.ones((batch, 2), np.float32),
          'offset_xy': np.zeros((batch, 2), np.float32), 'scale': np.ones(batch, np.float32),
          'image_id': np.arange(batch, dtype=np.int64), 'index': np.arange(batch, dtype=np.int32),
          'valid': np.ones(batch, np.int32)}
  t = time.perf_counter()
  jax.block_until_ready(step(variables, data))
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(steps):
    out = step(variables, data)
  jax.block_until_ready(out)
  return compile_s, (time.perf_counter() - t) / steps


def forward_vs_torch(arch: str, batch: int, size: tuple[int, int], repeats: int = 3
                     ) -> dict[str, float]:
  """Median seconds of the network's forward (no box decoding): JAX jit and the PyTorch reference
  (NCHW and channels_last, inference mode), same random weights, alternated."""
  import torch
  from hrnet_jax import convert, create_model
  from hrnet_jax.models import zoo
  from hrnet_jax.convert import torch_hrnet
  torch.manual_seed(0)
  ref = torch_hrnet.build(arch)
  variables = convert.torch_to_flax(ref.state_dict(), arch)
  model = create_model(arch)
  x = np.random.default_rng(0).standard_normal((batch, *size, 3)).astype(np.float32)
  if zoo.model_config(arch).get('input_bgr'):
    x_ref = x[..., ::-1]  # the reference takes the channels in the release's order
  else:
    x_ref = x
  nchw = torch.from_numpy(np.ascontiguousarray(x_ref.transpose(0, 3, 1, 2)))
  if arch.startswith(('faster_rcnn_', 'cascade_rcnn_')):
    hw = np.array([size] * batch, np.int32)
    fwd = jax.jit(lambda v, x: model.apply(v, x, image_hw=hw))
    torch_fwd = lambda net, x: net.forward_two_stage(x, [size] * batch)  # noqa: E731
  else:
    fwd = jax.jit(lambda v, x: model.apply(v, x))
    torch_fwd = lambda net, x: net(x)  # noqa: E731
  runs = {'jax': lambda: jax.block_until_ready(fwd(variables, x)),
          'torch': lambda: torch_fwd(ref, nchw),
          'torch_channels_last': lambda: torch_fwd(ref_cl, nchw_cl)}
  ref_cl = torch_hrnet.build(arch).to(memory_format=torch.channels_last)
  ref_cl.load_state_dict(ref.state_dict())
  nchw_cl = nchw.contiguous(memory_format=torch.channels_last)
  times = {k: [] for k in runs}
  with torch.inference_mode():
    for f in runs.values():
      f()  # compile / warm up
    for _ in range(repeats):
      for k, f in runs.items():
        t = time.perf_counter()
        f()
        times[k].append(time.perf_counter() - t)
  return {k: float(np.median(v)) for k, v in times.items()}


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='fcos_w32')
  p.add_argument('--batch', type=int, default=1)
  p.add_argument('--size', type=int, nargs=2, default=(800, 1344))
  p.add_argument('--steps', type=int, default=2)
  p.add_argument('--torch', action='store_true', help='also the forward next to PyTorch')
  p.add_argument('--no-step', action='store_true', help='skip the train and eval steps')
  args = p.parse_args()
  size = tuple(args.size)
  print(common.header())
  if args.torch and not args.arch.startswith('centernet_'):
    t = forward_vs_torch(args.arch, args.batch, size)
    print(f'{args.arch} forward, batch {args.batch} at {size[0]}x{size[1]} (medians): JAX '
          f'{t["jax"]:.2f} s, PyTorch NCHW {t["torch"]:.2f} s, channels_last '
          f'{t["torch_channels_last"]:.2f} s', flush=True)
  if args.no_step:
    return
  c, task = recipe(args.arch, size)
  rng = np.random.default_rng(0)
  batch = train_batch(rng, args.batch, size, int(c.data.max_boxes))
  compile_s, step_s = common.step_time(c, batch, args.steps, task=task)
  print(f'{args.arch} train step, batch {args.batch} at {size[0]}x{size[1]}: compile '
        f'{compile_s:.1f} s, {step_s:.2f} s/step ({args.batch / step_s:.2f} img/s)', flush=True)
  compile_s, step_s = eval_step_time(c, task, args.batch, size, args.steps)
  what = ('the image and its mirror, decoding' if args.arch.startswith('centernet_')
          else 'network + decoding + NMS')
  print(f'{args.arch} eval step ({what}), batch {args.batch}: compile '
        f'{compile_s:.1f} s, {step_s:.2f} s/step ({args.batch / step_s:.2f} img/s)', flush=True)


if __name__ == '__main__':
  main()
