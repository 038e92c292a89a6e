"""Compile times cold and warm: each case's initializer (as train.py runs it at a fresh start),
inference program and training step, first in a fresh
process with an empty persistent compilation cache, then in a second fresh process that finds
them in the cache (what a restart, a resume or a second eval.py sees; train.py, eval.py and
predict.py turn the cache on by default, `config.compile_cache`).

  python benchmarks/compile_cache.py [--cases pose_w32 seg_w18 cls_w18 seg_w48] [--batch 2]
                                     [--json compile.json]

Times are lower + compile of the jitted functions (tracing included), with the sizes of
vs_pytorch.py's CPU cases (the recipe sizes on a GPU).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(name: str, batch: int, cache: str) -> dict:
  """In this process: {'init_s', 'infer_s', 'train_s'} for one case with the cache in
  `cache`."""
  import jax
  import jax.numpy as jnp

  from benchmarks import vs_pytorch
  from hrnet_jax import cli
  from hrnet_jax.models import zoo
  from hrnet_jax.train.loop import init_variables
  cli.enable_compile_cache(cache)
  case = vs_pytorch.case_of(name)
  gpu = jax.default_backend() == 'gpu'
  train_hw = case.train_hw if gpu else case.cpu_train_hw
  infer_hw = case.infer_hw if gpu else case.cpu_infer_hw

  model = zoo.create_model(case.arch)
  t = time.perf_counter()
  jax.jit(lambda: init_variables(model, 0)).lower().compile()
  init_s = time.perf_counter() - t
  images = jax.ShapeDtypeStruct((batch, *infer_hw, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)
  t = time.perf_counter()
  jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images).compile()
  infer_s = time.perf_counter() - t

  step, state, _ = vs_pytorch.jax_train_step(case, 'float32', None)
  data = jax.device_put(vs_pytorch.case_batch(case, batch, train_hw))
  t = time.perf_counter()
  step.lower(state, data).compile()
  return {'init_s': init_s, 'infer_s': infer_s, 'train_s': time.perf_counter() - t,
          'infer_hw': list(infer_hw), 'train_hw': list(train_hw)}


def child(name: str, batch: int, cache: str) -> dict:
  """measure() in a fresh process (nothing compiled in memory)."""
  env = dict(os.environ)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)  # the cache under test, not the caller's
  out = subprocess.run([sys.executable, __file__, '--child', name, '--batch', str(batch),
                        '--cache', cache], env=env, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise SystemExit(f'{name}: the measuring process failed:\n{out.stderr[-3000:]}')
  return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--cases', nargs='+', default=['pose_w32', 'seg_w18', 'cls_w18', 'seg_w48'])
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--json', default='')
  p.add_argument('--child', default='', help=argparse.SUPPRESS)
  p.add_argument('--cache', default='', help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.child:
    print(json.dumps(measure(a.child, a.batch, a.cache)))
    return
  results = []
  print(f'{"case":>9} {"phase":>6} {"size":>12} | {"cold s":>7} {"warm s":>7}')
  for name in a.cases:
    with tempfile.TemporaryDirectory() as cache:
      cold = child(name, a.batch, cache)
      warm = child(name, a.batch, cache)
    results.append({'case': name, 'batch': a.batch, 'cold': cold, 'warm': warm})
    for phase in ('init', 'infer', 'train'):
      hw = cold.get(f'{phase}_hw')
      size = f'{hw[0]}x{hw[1]} b{a.batch}' if hw else '-'
      print(f'{name:>9} {phase:>6} {size:>12} | '
            f'{cold[f"{phase}_s"]:7.1f} {warm[f"{phase}_s"]:7.1f}', flush=True)
  if a.json:
    pathlib.Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == '__main__':
  main()
