"""JAX against JAX: the trainer's step as the package builds it ('new') and with one of its
optimisations undone ('old'), compiled in one process and timed in alternating repetitions, so
load from other work hits both alike (relative figures stay meaningful on a loaded machine).

  python benchmarks/ab_step.py [--undo barrier] [--arch seg_w18] [--size 128 256] [--batch 2]
                               [--reps 5] [--override width=8 ...]

--undo barrier: no optimization barrier on block and fuse outputs (layers.materialize).
--infer: time jitted inference (eval mode, `--size` is then the inference size) instead.

XLA flags cannot change inside a process: compare them by running this script under each
`XLA_FLAGS` setting (the 'custom' row is the package default).
"""

import argparse
import functools
import pathlib
import statistics
import sys
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import profile_step  # noqa: E402
from hrnet_jax import bench  # noqa: E402
from hrnet_jax.models import backbone, layers  # noqa: E402


def undone(what: str):
  """Patches that undo one optimisation (module globals read when the model is traced)."""
  if what == 'barrier':
    return {(backbone, 'materialize'): lambda x: x, (layers, 'materialize'): lambda x: x}
  raise SystemExit(f'--undo {what!r}: expected barrier')


def compiled_infer(arch, size, batch, overrides):
  """(compiled inference, variables, images) in eval mode, as hrnet_jax.bench runs it."""
  import jax.numpy as jnp
  from hrnet_jax.models import zoo
  model = zoo.create_model(arch, **overrides)
  images = jnp.asarray(bench.case_batch(bench.case_of(arch, size, size), batch, tuple(size))[
      'image'], jnp.float32) / 255.0
  variables = jax.jit(lambda: model.init(jax.random.key(0), images[:1]))()
  fn = jax.jit(lambda v, x: bench._first(model.apply(v, x, train=False)))
  return fn.lower(variables, images).compile(), variables, images


def compiled_step(arch, size, batch, overrides, patches: dict, infer: bool = False):
  saved = {k: getattr(*k) for k in patches}
  for (mod, name), v in patches.items():
    setattr(mod, name, v)
  try:
    t = time.perf_counter()
    build = compiled_infer if infer else profile_step.build
    out = build(arch, size, batch, overrides)
    print(f'compiled in {time.perf_counter() - t:.0f} s', flush=True)
    return out
  finally:
    for (mod, name), v in saved.items():
      setattr(mod, name, v)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='seg_w18')
  p.add_argument('--size', type=int, nargs=2, default=(128, 256))
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--undo', default='barrier')
  p.add_argument('--infer', action='store_true')
  a = p.parse_args()
  overrides = dict(bench.parse_overrides(a.override))
  sides = {'new': compiled_step(a.arch, a.size, a.batch, overrides, {}, a.infer),
           'old': compiled_step(a.arch, a.size, a.batch, overrides, undone(a.undo), a.infer)}
  states = {k: v[1] for k, v in sides.items()}
  losses = {}

  def run(k):
    compiled, _, data = sides[k]
    if a.infer:
      out = jax.block_until_ready(compiled(states[k], data))
      losses.setdefault(k, []).append(float(out.astype('float32').sum()))
      return
    states[k], m = compiled(states[k], data)
    losses.setdefault(k, []).append(float(jax.block_until_ready(m)['loss']))

  for k in sides:
    run(k)
  times = bench.alternate({k: functools.partial(run, k) for k in sides}, a.reps)
  print(f'undo {a.undo} ({"infer" if a.infer else "train"}): {a.arch} {a.size[0]}x{a.size[1]} batch {a.batch}, {a.reps} alternating reps, '
        f'load {bench.load()}, XLA_FLAGS={profile_step.xla_flags()!r}')
  for k, t in times.items():
    print(f'{k:<9} median {statistics.median(t) * 1e3:8.1f} ms  min {min(t) * 1e3:8.1f} ms  '
          f'losses {losses[k][:3]}')
  ratio = statistics.median(times['old']) / statistics.median(times['new'])
  print(f'undo {a.undo}: old/new median ratio {ratio:.3f} (> 1: new is faster)')


if __name__ == '__main__':
  main()
