"""JAX against JAX: the trainer's step as the package builds it ('new') and with one of its
optimisations undone ('old'), compiled in one process and timed in alternating repetitions, so
load from other work hits both alike (relative figures stay meaningful on a loaded machine).

  python benchmarks/ab_step.py [--undo barrier] [--arch seg_w18] [--size 128 256] [--batch 2]
                               [--reps 5] [--override width=8 ...]

--undo barrier: no optimization barrier on block and fuse outputs (layers.materialize).

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


def compiled_step(arch, size, batch, overrides, patches: dict):
  saved = {k: getattr(*k) for k in patches}
  for (mod, name), v in patches.items():
    setattr(mod, name, v)
  try:
    t = time.perf_counter()
    out = profile_step.build(arch, size, batch, overrides)
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
  a = p.parse_args()
  overrides = dict(bench.parse_overrides(a.override))
  sides = {'new': compiled_step(a.arch, a.size, a.batch, overrides, {}),
           'old': compiled_step(a.arch, a.size, a.batch, overrides, undone(a.undo))}
  states = {k: v[1] for k, v in sides.items()}
  losses = {}

  def run(k):
    compiled, _, data = sides[k]
    states[k], m = compiled(states[k], data)
    losses.setdefault(k, []).append(float(jax.block_until_ready(m)['loss']))

  for k in sides:
    run(k)
  times = bench.alternate({k: functools.partial(run, k) for k in sides}, a.reps)
  print(f'undo {a.undo}: {a.arch} {a.size[0]}x{a.size[1]} batch {a.batch}, {a.reps} alternating reps, '
        f'load {bench.load()}, XLA_FLAGS={profile_step.xla_flags()!r}')
  for k, t in times.items():
    print(f'{k:<9} median {statistics.median(t) * 1e3:8.1f} ms  min {min(t) * 1e3:8.1f} ms  '
          f'losses {losses[k][:3]}')
  ratio = statistics.median(times['old']) / statistics.median(times['new'])
  print(f'undo {a.undo}: old/new median ratio {ratio:.3f} (> 1: new is faster)')


if __name__ == '__main__':
  main()
