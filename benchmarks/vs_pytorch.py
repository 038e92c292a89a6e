"""JAX against PyTorch on the same model with the same weights, measured side by side.

  python benchmarks/vs_pytorch.py [--cases pose_w32 seg_w18 seg_w48 cls_w18] [--batch 2 8]
                                  [--steps 3] [--dtype auto|float32|bfloat16] [--json bench.json]

For every case the PyTorch model is the official-layout reference (`hrnet_jax.convert.torch_hrnet`)
and the Flax model gets its weights through `convert.torch_to_flax`; the JAX training step is the
trainer's own (`make_train_step`, through benchmarks/common.py) on the case's recipe.
Repetitions alternate between the frameworks (JAX, PyTorch NCHW, PyTorch channels_last, again),
so load from other work on the machine hits both alike; times are medians (minimums also kept).

FLOPs are counted, not measured: the convolution and matmul multiply-adds of the traced forward
(`hrnet_jax.flops`), FLOPs = 2 x MACs, and a training step counted as 3x the forward by the usual
convention (forward, input gradients, weight gradients). GFLOP/s figures divide those counts by
the measured times; `peak` is the best float32 matmul either framework reaches on this machine.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
  arch: str
  train_hw: tuple[int, int]  # the recipe's sizes (on an accelerator)
  infer_hw: tuple[int, int]
  cpu_train_hw: tuple[int, int]  # smaller sizes that fit a CPU run of minutes
  cpu_infer_hw: tuple[int, int]
  overrides: tuple = ()  # zoo overrides as (key, value) pairs, e.g. a small width for tests


CASES = {
    'pose_w32': Case('pose_w32', (256, 192), (256, 192), (256, 192), (256, 192)),
    'seg_w18': Case('seg_w18', (512, 1024), (1024, 2048), (128, 256), (256, 512)),
    'seg_w48': Case('seg_w48', (512, 1024), (1024, 2048), (128, 256), (256, 512)),
    'cls_w18': Case('cls_w18', (224, 224), (224, 224), (224, 224), (224, 224)),
}
SEG_IGNORE = 255


def case_of(name: str, train_size=None, infer_size=None) -> Case:
  """A named case, or any seg/pose/cls zoo arch at the sizes given."""
  if name in CASES:
    return CASES[name]
  from hrnet_jax.models import zoo
  task, _ = zoo.split_arch(name)
  if task not in ('seg', 'pose', 'cls') or not (train_size and infer_size):
    raise SystemExit(f'--cases {name}: expected one of {list(CASES)}, or a seg/pose/cls zoo '
                     'arch together with --train-size and --infer-size')
  return Case(name, tuple(train_size), tuple(infer_size), tuple(train_size), tuple(infer_size))


# ---------------------------------------------------------------------------------------------
# Timing helpers.


def timed(fn: Callable[[], Any]) -> float:
  t = time.perf_counter()
  fn()
  return time.perf_counter() - t


SETTLE_S = 1.0  # pause between two timed calls (see `alternate`)


def alternate(fns: dict[str, Callable[[], Any]], reps: int) -> dict[str, list[float]]:
  """Seconds of each function over `reps` rounds, the functions interleaved in every round.
  Each call starts after a pause: a framework's worker threads keep spinning for a while after
  its call returns (OpenMP's spin-wait, XLA's thread pool), and on a small CPU they took the
  cores from the next framework's call."""
  times = {k: [] for k in fns}
  for _ in range(reps):
    for k, fn in fns.items():
      time.sleep(SETTLE_S)
      times[k].append(timed(fn))
  return times


def summary(times: list[float]) -> dict[str, float]:
  return {'median_s': statistics.median(times), 'min_s': min(times), 'reps': len(times)}


def matmul_peak(n: int, reps: int, torch_device: str, dtype: str = 'float32') -> dict[str, float]:
  """GFLOP/s of an n x n matmul in `dtype` in each framework (best of `reps`, alternating)."""
  import torch
  a = np.random.default_rng(0).standard_normal((n, n), np.float32)
  ja = jnp.asarray(a, dtype)
  mm = jax.jit(lambda x: x @ x)
  mm(ja).block_until_ready()
  ta = torch.from_numpy(a).to(torch_device).to(getattr(torch, dtype))

  def torch_mm():
    ta @ ta
    if torch_device == 'cuda':
      torch.cuda.synchronize()

  torch_mm()
  t = alternate({'jax': lambda: mm(ja).block_until_ready(), 'torch': torch_mm}, reps)
  flop = 2.0 * n**3
  return {'n': n, 'dtype': dtype, 'jax_gflops': flop / min(t['jax']) / 1e9,
          'torch_gflops': flop / min(t['torch']) / 1e9}


# Dense bf16 tensor-core peaks (TFLOP/s, vendor data sheets) for MFU; other GPUs use the best
# measured bf16 matmul of the run instead (the JSON says which).
GPU_BF16_PEAK_TFLOPS = {'H200': 989.4, 'H100': 989.4, 'A100': 312.0, 'L40S': 362.1, 'L4': 121.0,
                        'A10': 125.0, 'RTX 4090': 165.2, 'RTX 3090': 71.0, 'V100': 125.0}

# benchmarks/gpu_check.sh: (case, size for training and inference, batch) as the issue set them.
GPU_CHECK = (('seg_w48', (512, 1024), 8), ('pose_w32', (256, 192), 64), ('cls_w18', (224, 224), 128))
# --dry-run: the same cases, tiny, to test the whole path on a CPU.
DRY_RUN = dict(overrides=(('width', 4), ('num_modules', (1, 1, 1)), ('num_blocks', 1),
                          ('stage1_blocks', 1)), size=(64, 64), batch=2, steps=1)


def device_peak_gflops(peak: dict) -> tuple[float, str]:
  """(GFLOP/s, where it comes from): the data-sheet bf16 peak of a known GPU, else the best
  matmul measured in this run."""
  name = str(jax.devices()[0].device_kind)
  for key, tflops in GPU_BF16_PEAK_TFLOPS.items():
    if key.lower() in name.lower():
      return tflops * 1e3, f'{name} data sheet'
  return max(peak['jax_gflops'], peak['torch_gflops']), f'measured {peak["dtype"]} matmul'


def gpu_check(dry_run: bool, json_path: str, only: list[str] | None = None) -> dict:
  """The fixed GPU comparison (benchmarks/gpu_check.sh): bf16 JAX against PyTorch AMP, both
  layouts, training and inference, MFU against the device's bf16 peak. `only`: some of its
  cases (a rerun of those a time limit cut off)."""
  checks = [c for c in GPU_CHECK if not only or c[0] in only]
  if only and len(checks) != len(set(only)):
    raise SystemExit(f'gpu_check: --cases {only}: expected names among '
                     f'{[c[0] for c in GPU_CHECK]}')
  import torch
  gpu = jax.default_backend() == 'gpu' and torch.cuda.is_available()
  if not gpu and not dry_run:
    raise SystemExit('gpu_check: no GPU visible to both JAX and PyTorch (use --dry-run on a CPU)')
  info = machine()
  print(f"{info['device']}; jax {info['jax']} ({info['backend']}), torch {info['torch']}",
        flush=True)
  results = {'machine': info, 'mode': 'dry-run' if dry_run else 'gpu', 'load_start': load()}
  results['peak'] = matmul_peak(256 if dry_run else 8192, 3, 'cuda' if gpu else 'cpu', 'bfloat16')
  peak, source = device_peak_gflops(results['peak'])
  results['mfu_peak_gflops'], results['mfu_peak_source'] = peak, source
  print(f"bf16 matmul: JAX {results['peak']['jax_gflops']:.0f}, PyTorch "
        f"{results['peak']['torch_gflops']:.0f} GFLOP/s; MFU against {peak:.0f} GFLOP/s "
        f'({source})', flush=True)
  results['cases'] = []
  for name, size, batch in checks:
    case, steps = CASES[name], 10
    if dry_run:
      case = dataclasses.replace(case, overrides=DRY_RUN['overrides'])
      size, batch, steps = DRY_RUN['size'], DRY_RUN['batch'], DRY_RUN['steps']
    print(f'{name}: {size[0]}x{size[1]} batch {batch}, bfloat16', flush=True)
    results['cases'].append(run_case(case, batch=batch, steps=steps, dtype='bfloat16', gpu=gpu,
                                     train_hw=size, infer_hw=size,
                                     log=functools.partial(print, flush=True)))
    write_json(results, json_path)
  print(table(results, peak_gflops=peak))
  write_json(results, json_path)
  return results


def load() -> list[float]:
  return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------------------------------------
# Memory.


def jax_peak_bytes(compiled) -> dict[str, int]:
  """XLA's own estimate for a compiled function. 'step': outputs + temporaries, minus outputs
  that reuse donated argument buffers: the memory a call needs beyond its inputs (weights and
  optimizer state), the counterpart of the PyTorch figure. 'total' adds the arguments."""
  m = compiled.memory_analysis()
  step = int(m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes)
  return {'step': step, 'total': step + int(m.argument_size_in_bytes)}


def torch_peak_bytes(fn: Callable[[], Any], device: str) -> int:
  """Peak bytes allocated above the start of `fn`. CUDA: the allocator's peak counter. CPU:
  torch.profiler's allocation events (every tensor allocation and free, in time order) summed
  into a running total; this sees tensors only, like the JAX figure, not allocator caching."""
  import torch
  if device == 'cuda':
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_allocated() - base)
  from torch._C._profiler import _EventType
  with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                              profile_memory=True) as prof:
    fn()
  events = []

  def walk(e):
    if e.tag == _EventType.Allocation:
      events.append((e.start_time_ns, e.extra_fields.alloc_size))
    for c in e.children:
      walk(c)

  for root in prof.profiler.kineto_results.experimental_event_tree():
    walk(root)
  live = peak = 0
  for _, size in sorted(events):
    live += size
    peak = max(peak, live)
  return int(peak)


# ---------------------------------------------------------------------------------------------
# The two sides of a case.


def case_batch(case: Case, batch: int, hw: tuple[int, int], seed: int = 0) -> dict:
  """uint8 images and the labels the case's loss needs, as numpy."""
  rng = np.random.default_rng(seed)
  data = {'image': rng.integers(0, 256, (batch, *hw, 3), dtype=np.uint8)}
  task = case.arch.split('_')[0]
  if task == 'seg':
    label = rng.integers(0, 19, (batch, *hw)).astype(np.uint8)
    label[:, :4] = SEG_IGNORE
    data['label'] = label
  elif task == 'pose':
    hh, hw4 = hw[0] // 4, hw[1] // 4
    data['target'] = rng.random((batch, hh, hw4, 17), dtype=np.float32)
    data['target_weight'] = (rng.random((batch, 17)) > 0.2).astype(np.float32)
  else:
    data['label'] = rng.integers(0, 1000, (batch,)).astype(np.int32)
  return data


def train_config(case: Case, dtype: str):
  """The case's recipe (its task's loss and normalization) with SGD momentum 0.9, no decay, a
  constant lr of 0.01, to match the PyTorch side."""
  from configs import cls_imagenet, pose_coco, seg_cityscapes
  recipe = {'seg': seg_cityscapes, 'pose': pose_coco, 'cls': cls_imagenet}[case.arch.split('_')[0]]
  c = recipe.get_config()
  c.model.arch = case.arch
  c.model.overrides.update(dict(case.overrides))
  c.dtype = dtype
  c.optimizer.update(dict(name='sgd', momentum=0.9, nesterov=False, weight_decay=0.0,
                          schedule='constant', lr=0.01, warmup_steps=0))
  return c


def jax_train_step(case: Case, dtype: str, variables: dict | None):
  """(jitted step, state, config): the trainer's step, the state carrying `variables` (the
  converted weights; None: a fresh initialization).
  Classification runs with ImageNet's 1000 classes, without a dataset."""
  config = train_config(case, dtype)
  task = None
  if case.arch.startswith('cls'):
    from hrnet_jax.tasks.classification import Classification
    names = [str(i) for i in range(1000)]
    task = Classification(config, classes=(names, names))
  step, state = common.build_step(config, task=task)
  if variables is not None:
    state = state.replace(params=variables['params'], batch_stats=variables['batch_stats'])
  return step, state, config


def torch_loss(case: Case, config, out, batch: dict):
  import torch
  import torch.nn.functional as F
  task = case.arch.split('_')[0]
  out = out.float()
  if task == 'seg':
    label = batch['label']
    logits = F.interpolate(out, size=label.shape[1:], mode='bilinear', align_corners=False)
    weight = torch.tensor(config.loss.class_weights, device=out.device)
    return F.cross_entropy(logits, label, weight=weight, ignore_index=SEG_IGNORE)
  if task == 'pose':
    w = batch['target_weight'][:, :, None, None]
    return 0.5 * torch.mean((out * w - batch['target'] * w) ** 2)
  return F.cross_entropy(out, batch['label'])


def torch_batch(data: dict, device: str) -> dict:
  """The numpy batch as torch tensors (NCHW targets), on `device`."""
  import torch
  out = {}
  for k, v in data.items():
    t = torch.from_numpy(np.ascontiguousarray(v)).to(device)
    if k == 'target':
      t = t.permute(0, 3, 1, 2).contiguous()
    if k == 'label':
      t = t.long()
    out[k] = t
  return out


def torch_normalize(images, mean, std, channels_last: bool):
  import torch
  m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
  s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
  x = (images.permute(0, 3, 1, 2).float() - m) / s
  return x.contiguous(memory_format=torch.channels_last if channels_last else
                      torch.contiguous_format)


def _first(out):
  return out[-1] if isinstance(out, (tuple, list)) else out


# ---------------------------------------------------------------------------------------------
# One case.


def run_case(case: Case, *, batch: int, steps: int, dtype: str, gpu: bool,
             train_hw: tuple[int, int], infer_hw: tuple[int, int], log=print) -> dict:
  import torch
  from hrnet_jax import convert
  from hrnet_jax.convert import torch_hrnet
  from hrnet_jax.flops import flops as paper_gmacs
  from hrnet_jax.models import zoo

  device = 'cuda' if gpu else 'cpu'
  low = dtype == 'bfloat16'
  jdtype = jnp.bfloat16 if low else jnp.float32
  # bf16: PyTorch autocast on either device (CPU autocast runs oneDNN's bf16 kernels).
  autocast = (torch.autocast(device, dtype=torch.bfloat16) if low
              else torch.autocast('cpu', enabled=False))
  torch.manual_seed(0)
  kw = dict(case.overrides)
  ref = torch_hrnet.build(case.arch, **kw)
  variables = convert.torch_to_flax(ref.state_dict(), case.arch, **kw)
  models = {'nchw': ref.to(device),
            'channels_last': torch_hrnet.build(case.arch, **kw).to(device).to(
                memory_format=torch.channels_last)}
  models['channels_last'].load_state_dict(ref.state_dict())
  result = {'arch': case.arch, 'batch': batch, 'dtype': dtype, 'train_hw': list(train_hw),
            'infer_hw': list(infer_hw)}

  # FLOPs: 2 x the forward's multiply-adds; training 3x the forward.
  macs = {k: round(paper_gmacs(case.arch, hw, 'paper', batch, **kw) * 2**30)
          for k, hw in (('infer', infer_hw), ('train', train_hw))}
  result['gflop'] = {'infer': 2 * macs['infer'] / 1e9, 'train': 3 * 2 * macs['train'] / 1e9}

  # --- Inference -----------------------------------------------------------------------------
  model = zoo.create_model(case.arch, dtype=jdtype, **kw)
  c = train_config(case, dtype)
  mean, std = tuple(c.data.mean), tuple(c.data.std)
  from hrnet_jax.data.transforms import normalize

  def jax_infer(v, images):
    return _first(model.apply(v, normalize(images, mean, std, jdtype), train=False))

  data = case_batch(case, batch, infer_hw)
  images = jax.device_put(data['image'])
  t = time.perf_counter()
  infer = jax.jit(jax_infer).lower(variables, images).compile()
  jax_compile = time.perf_counter() - t
  jax_out = np.asarray(infer(variables, images).astype(jnp.float32))
  timg = torch_batch(data, device)['image']

  def torch_infer(layout):
    m = models[layout].eval()
    with torch.inference_mode(), autocast:
      out = _first(m(torch_normalize(timg, mean, std, layout == 'channels_last')))
    if gpu:
      torch.cuda.synchronize()
    return out

  torch_out = torch_infer('nchw').float()
  torch_out = (torch_out.permute(0, 2, 3, 1) if torch_out.ndim == 4 else torch_out).cpu().numpy()
  torch_infer('channels_last')
  result['infer_max_rel_err'] = float(np.max(np.abs(jax_out - torch_out))
                                      / max(np.max(np.abs(torch_out)), 1e-12))
  t = alternate({'jax': lambda: infer(variables, images).block_until_ready(),
                 'torch_nchw': lambda: torch_infer('nchw'),
                 'torch_channels_last': lambda: torch_infer('channels_last')}, steps)
  result['infer'] = {k: summary(v) for k, v in t.items()}
  result['infer']['jax']['compile_s'] = jax_compile
  result['infer']['jax'].update(
      {f'{k}_peak_bytes': v for k, v in jax_peak_bytes(infer).items()})
  for layout in ('nchw', 'channels_last'):
    result['infer'][f'torch_{layout}']['step_peak_bytes'] = torch_peak_bytes(
        functools.partial(torch_infer, layout), device)
  log(f'  inference done (load {load()})')

  # --- Training step -------------------------------------------------------------------------
  step, state, config = jax_train_step(case, dtype, variables)
  data = case_batch(case, batch, train_hw, seed=1)
  jbatch = jax.device_put(data)
  t = time.perf_counter()
  compiled = step.lower(state, jbatch).compile()
  train_compile = time.perf_counter() - t
  holder = {'state': state}

  def jax_train():
    holder['state'], m = compiled(holder['state'], jbatch)
    return jax.block_until_ready(m)

  jax_loss = float(jax_train()['loss'])
  tb = torch_batch(data, device)
  opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}

  def torch_train(layout):
    m, opt = models[layout].train(), opts[layout]
    with autocast:
      out = _first(m(torch_normalize(tb['image'], mean, std, layout == 'channels_last')))
    loss = torch_loss(case, config, out, tb)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if gpu:
      torch.cuda.synchronize()
    return loss

  torch_loss0 = float(torch_train('nchw').detach())
  torch_train('channels_last')
  result['train_first_loss'] = {'jax': jax_loss, 'torch': torch_loss0}
  t = alternate({'jax': jax_train, 'torch_nchw': lambda: torch_train('nchw'),
                 'torch_channels_last': lambda: torch_train('channels_last')}, steps)
  result['train'] = {k: summary(v) for k, v in t.items()}
  result['train']['jax']['compile_s'] = train_compile
  result['train']['jax'].update(
      {f'{k}_peak_bytes': v for k, v in jax_peak_bytes(compiled).items()})
  for layout in ('nchw', 'channels_last'):
    result['train'][f'torch_{layout}']['step_peak_bytes'] = torch_peak_bytes(
        functools.partial(torch_train, layout), device)
  log(f'  training done (load {load()})')

  for phase in ('infer', 'train'):
    r = result[phase]
    best = min(('torch_nchw', 'torch_channels_last'), key=lambda k: r[k]['median_s'])
    r['torch_best'] = best
    for k in ('jax', 'torch_nchw', 'torch_channels_last'):
      r[k]['img_per_s'] = batch / r[k]['median_s']
      r[k]['gflops'] = result['gflop'][phase] / r[k]['median_s']
    # throughput ratio JAX / PyTorch (> 1: JAX faster), against PyTorch's better layout
    r['ratio'] = r[best]['median_s'] / r['jax']['median_s']
  result['load_after'] = load()
  return result


# ---------------------------------------------------------------------------------------------
# Input pipelines (reused from the figure scripts).


def pipeline_rates() -> dict[str, float]:
  from benchmarks import pose_figures as pose
  from benchmarks import seg_figures as seg
  return {'seg_samples_per_s_per_worker': seg.pipeline_rate(),
          'pose_samples_per_s_per_worker': pose.pipeline_rate()}


# ---------------------------------------------------------------------------------------------
# Report.


def machine() -> dict[str, Any]:
  import jaxlib
  import torch
  cpu = platform.processor()
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True, check=False).stdout
    cpu = next((l.split(':', 1)[1].strip() for l in out.splitlines()
                if l.startswith('Model name')), cpu)
  except OSError:
    pass
  return {'cpu': cpu, 'cores': os.cpu_count(), 'jax': jax.__version__,
          'jaxlib': jaxlib.__version__,
          'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
          'backend': jax.default_backend(), 'device': str(jax.devices()[0].device_kind),
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def table(results: dict, peak_gflops: float | None = None) -> str:
  """Markdown table: per case and phase, img/s and ms of each side, ratios, GFLOP/s, memory.
  "% peak" divides by `peak_gflops` (default: the run's best matmul)."""
  peak = peak_gflops or max(results['peak']['jax_gflops'], results['peak']['torch_gflops'])
  rows = ['| case | phase | size | JAX img/s | PyTorch NCHW img/s | PyTorch CL img/s | '
          'JAX/PyTorch | JAX GFLOP/s (% peak) | PyTorch GFLOP/s (% peak) | JAX compile s | '
          'JAX MiB | PyTorch MiB | load |',
          '|' + '---|' * 13]
  for r in results['cases']:
    for phase in ('infer', 'train'):
      p = r[phase]
      j, tb = p['jax'], p[p['torch_best']]
      hw = r[f'{phase}_hw']
      rows.append(
          f"| {r['arch']} | {phase} | {hw[0]}x{hw[1]} b{r['batch']} {_short(r['dtype'])} | "
          f"{j['img_per_s']:.2f} | "
          f"{p['torch_nchw']['img_per_s']:.2f} | {p['torch_channels_last']['img_per_s']:.2f} | "
          f"**{p['ratio']:.2f}** | {j['gflops']:.1f} ({100 * j['gflops'] / peak:.0f}%) | "
          f"{tb['gflops']:.1f} ({100 * tb['gflops'] / peak:.0f}%) | {j['compile_s']:.1f} | "
          f"{j['step_peak_bytes'] / 2**20:.0f} | {tb['step_peak_bytes'] / 2**20:.0f} | "
          f"{r['load_after'][0]:.1f} |")
  return '\n'.join(rows)


def _short(dtype: str) -> str:
  return {'float32': 'f32', 'bfloat16': 'bf16'}.get(dtype, dtype)


def parse_overrides(items: list[str]) -> tuple:
  out = []
  for item in items:
    key, sep, value = item.partition('=')
    if not sep:
      raise SystemExit(f'--override {item!r}: expected KEY=VALUE')
    try:
      out.append((key, ast.literal_eval(value)))
    except (ValueError, SyntaxError):
      out.append((key, value))
  return tuple(out)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog='python benchmarks/vs_pytorch.py',
                              description=__doc__.split('\n')[0])
  p.add_argument('--cases', nargs='+', default=None,
                 help=f'any of {list(CASES)} (default: all), or another seg/pose/cls zoo arch with '
                 '--train-size and --infer-size; with --gpu-check, some of its cases')
  p.add_argument('--batch', type=int, nargs='+', default=[2], help='one or more batch sizes')
  p.add_argument('--steps', type=int, default=3, help='timed repetitions per side')
  p.add_argument('--dtype', nargs='+', default=['auto'], choices=('auto', 'float32', 'bfloat16'),
                 help='one or more; auto: bfloat16 (JAX) vs bf16 autocast (PyTorch) on a GPU, '
                 'else float32')
  p.add_argument('--train-size', type=int, nargs=2, default=None,
                 help='h w of the training crop (default: the case\'s, smaller on CPU)')
  p.add_argument('--infer-size', type=int, nargs=2, default=None)
  p.add_argument('--full-size', action='store_true', help='recipe sizes even on CPU')
  p.add_argument('--threads', type=int, default=os.cpu_count(), help='torch.set_num_threads')
  p.add_argument('--peak-n', type=int, default=2048, help='matmul size of the peak measurement')
  p.add_argument('--no-pipeline', action='store_true', help='skip the input-pipeline rates')
  p.add_argument('--override', action='append', default=[], metavar='KEY=VALUE',
                 help='zoo override for every case, e.g. width=4 num_modules=(1,1,1) (tests)')
  p.add_argument('--json', default='', help='write all figures to this file')
  p.add_argument('--gpu-check', action='store_true',
                 help='the fixed GPU comparison of benchmarks/gpu_check.sh (other options than '
                 '--cases ignored)')
  p.add_argument('--dry-run', action='store_true', help='with --gpu-check: tiny shapes, any device')
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
  a = parse(argv)
  import torch
  torch.set_num_threads(a.threads)
  if a.gpu_check:
    return gpu_check(a.dry_run, a.json, a.cases)
  a.cases = a.cases or list(CASES)
  gpu = jax.default_backend() == 'gpu' and torch.cuda.is_available()
  dtypes = [d if d != 'auto' else ('bfloat16' if gpu else 'float32') for d in a.dtype]
  info = machine()
  print(f"{info['cpu']}, {info['cores']} cores; jax {info['jax']} ({info['backend']}), "
        f"torch {info['torch']} ({info['torch_threads']} threads); load {load()}", flush=True)
  results = {'machine': info, 'args': vars(a), 'dtype': dtypes, 'load_start': load()}
  results['peak'] = matmul_peak(a.peak_n, 3, 'cuda' if gpu else 'cpu')
  print(f"float32 matmul {a.peak_n}: JAX {results['peak']['jax_gflops']:.1f} GFLOP/s, PyTorch "
        f"{results['peak']['torch_gflops']:.1f} GFLOP/s", flush=True)
  results['cases'] = []
  for name in a.cases:
    case = dataclasses.replace(case_of(name, a.train_size, a.infer_size),
                               overrides=parse_overrides(a.override))
    full = gpu or a.full_size
    train_hw = tuple(a.train_size or (case.train_hw if full else case.cpu_train_hw))
    infer_hw = tuple(a.infer_size or (case.infer_hw if full else case.cpu_infer_hw))
    for dtype in dtypes:
      for batch in a.batch:
        print(f'{name}: train {train_hw[0]}x{train_hw[1]}, inference {infer_hw[0]}x{infer_hw[1]}, '
              f'batch {batch}, {dtype} (load {load()})', flush=True)
        results['cases'].append(run_case(case, batch=batch, steps=a.steps, dtype=dtype, gpu=gpu,
                                         train_hw=train_hw, infer_hw=infer_hw,
                                         log=functools.partial(print, flush=True)))
        print('\n'.join(table(results).splitlines()[-2:]), flush=True)  # this case's rows
        write_json(results, a.json)  # after every case: a long run keeps what it measured
  if not a.no_pipeline:
    results['pipeline'] = pipeline_rates()
    print(f"input pipeline per worker: seg {results['pipeline']['seg_samples_per_s_per_worker']:.2f}"
          f" samples/s, pose {results['pipeline']['pose_samples_per_s_per_worker']:.1f} samples/s",
          flush=True)
  results['load_end'] = load()
  print(table(results))
  write_json(results, a.json)
  if a.json:
    print(f'wrote {a.json}')
  return results


def write_json(results: dict, path: str) -> None:
  if path:
    with open(path, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  main()
