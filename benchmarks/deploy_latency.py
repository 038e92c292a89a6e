"""Latency of the exported artifacts next to JAX and PyTorch, on the same weights, in one run
(the README's "Deploy" table).

  python benchmarks/deploy_latency.py [--cases pose_w32 seg_w18] [--reps 10] [--json FILE]

pose_w32 at 256x192 and seg_w18 at 512x1024, batch 1, float32, the network's raw outputs on
normalized input. Each artifact is made by `hrnet_jax.export` from a converted checkpoint of the
PyTorch reference's random weights, checked against JAX, then every runtime is timed in turns
(`vs_pytorch.alternate`: a pause before each call so that one runtime's spinning threads do not
take the cores from the next). PyTorch: eager, inference mode, the faster of NCHW and
channels_last. Needs the export and torch extras.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.vs_pytorch import alternate, load, machine  # noqa: E402
from hrnet_jax import cli, convert, export  # noqa: E402

CASES = {'pose_w32': ('configs/pose_coco.py', (256, 192)),
         'seg_w18': ('configs/seg_cityscapes.py:arch=seg_w18', (512, 1024))}


def run_case(name: str, reps: int, workdir: pathlib.Path, log=print) -> dict:
  import torch
  from hrnet_jax.convert import torch_hrnet
  from hrnet_jax.tasks import get_task
  spec, hw = CASES[name]
  config = cli.load_config(spec)
  task = get_task(config)
  torch.manual_seed(0)
  ref = torch_hrnet.build(config.model.arch, **task.model_kwargs).eval()
  variables = convert.torch_to_flax(ref.state_dict(), config.model.arch, **task.model_kwargs)
  ckpt = workdir / name
  convert.write_variables(variables, ckpt, {'arch': config.model.arch,
                                            'overrides': task.model_kwargs})
  s, _ = export.serving(config, ckpt, hw, batch=1)
  x = export.random_input(s, 1)
  result = {'arch': config.model.arch, 'input_hw': list(hw), 'batch': 1, 'artifacts': {}}
  runners = {}
  fn = jax.jit(s.fn)
  expected = {k: np.asarray(v) for k, v in fn(x).items()}
  output = sorted(expected)[-1]  # 'heatmaps' / 'logits'
  runners['jax'] = lambda: jax.block_until_ready(fn(x))
  for fmt, suffix in (('onnx', '.onnx'), ('savedmodel', ''), ('stablehlo', '.stablehlo')):
    path = workdir / f'{name}_{fmt}{suffix}'
    report = export.export(config, ckpt, fmt, path, size=hw, batch=1, log=log)
    run = export.load_runner(fmt, path)
    errors = export.compare(expected, run(x))
    result['artifacts'][fmt] = {'bytes': report['bytes'], 'export_s': report['export_s'],
                                'max_rel_err': max(errors.values())}
    runners[fmt] = (lambda run: lambda: run(x))(run)
  images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  last = torch_hrnet.build(config.model.arch, **task.model_kwargs).eval().to(
      memory_format=torch.channels_last)
  last.load_state_dict(ref.state_dict())
  last_images = images.contiguous(memory_format=torch.channels_last)

  def torch_run(model, inp):
    with torch.inference_mode():
      out = model(inp)
    return out[-1] if isinstance(out, (tuple, list)) else out

  got = torch_run(ref, images).numpy().transpose(0, 2, 3, 1)
  result['torch_max_rel_err'] = float(np.max(np.abs(got - expected[output])) /
                                      np.max(np.abs(expected[output])))
  runners['torch_nchw'] = lambda: torch_run(ref, images)
  runners['torch_channels_last'] = lambda: torch_run(last, last_images)
  for f in runners.values():  # warm up (first calls allocate, tune and compile)
    f()
    f()
  times = alternate(runners, reps)
  result['latency_ms'] = {k: round(1000 * statistics.median(v), 1) for k, v in times.items()}
  result['min_ms'] = {k: round(1000 * min(v), 1) for k, v in times.items()}
  log(f'{name}: {result["latency_ms"]} (load {load()})')
  return result


def table(results: dict) -> str:
  rows = ['| case | JAX (jit) | ONNX (onnxruntime) | SavedModel (TF) | StableHLO (jax.export) | '
          'PyTorch (best layout) | onnxruntime / PyTorch speed |',
          '|---|---|---|---|---|---|---|']
  for name, r in results.items():
    t = r['latency_ms']
    torch_ms = min(t['torch_nchw'], t['torch_channels_last'])
    h, w = r['input_hw']
    rows.append(f'| {r["arch"]} {h}x{w} b1 | {t["jax"]} ms | {t["onnx"]} ms | '
                f'{t["savedmodel"]} ms | {t["stablehlo"]} ms | {torch_ms} ms | '
                f'{torch_ms / t["onnx"]:.2f}x |')
  rows += ['', '| case | artifact | size | export time | max rel. error vs JAX |',
           '|---|---|---|---|---|']
  for name, r in results.items():
    for fmt, a in r['artifacts'].items():
      rows.append(f'| {r["arch"]} | {fmt} | {a["bytes"] / 2**20:.1f} MiB | {a["export_s"]} s | '
                  f'{a["max_rel_err"]:.1e} |')
  return '\n'.join(rows)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--cases', nargs='+', default=list(CASES), choices=list(CASES))
  p.add_argument('--reps', type=int, default=10)
  p.add_argument('--json', default='')
  a = p.parse_args(argv)
  results = {'machine': machine()}
  with tempfile.TemporaryDirectory() as tmp:
    for name in a.cases:
      results[name] = run_case(name, a.reps, pathlib.Path(tmp))
      if a.json:
        pathlib.Path(a.json).write_text(json.dumps(results, indent=1))
  print(table({k: v for k, v in results.items() if k != 'machine'}))
  return results


if __name__ == '__main__':
  main()
