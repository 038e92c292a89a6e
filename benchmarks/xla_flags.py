"""XLA:CPU flags against each other: the same jitted inference (and optionally train step) of a
zoo model, one fresh process per flag set (XLA reads XLA_FLAGS once, at start-up).

  python benchmarks/xla_flags.py --arch seg_w18 --size 256 512 --batch 2 \
      --flags='--xla_cpu_use_onednn=true' --flags='--xla_cpu_enable_fast_math=true'

Prints compile seconds and median / minimum ms per call for each flag set, with the baseline
(no flags) first; rounds alternate between the flag sets (load hits all alike).
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]

CHILD = r'''
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, {root!r})
from hrnet_jax.models import zoo
arch, h, w, batch, train = {arch!r}, {h}, {w}, {batch}, {train}
model = zoo.create_model(arch)
x = jnp.asarray(np.random.default_rng(0).standard_normal((batch, h, w, 3), np.float32))
variables = jax.jit(model.init)(jax.random.key(0), x)
if train:
  def loss(params, stats, x):
    out, upd = model.apply({{'params': params, 'batch_stats': stats}}, x, train=True,
                           mutable=['batch_stats'])
    out = out[-1] if isinstance(out, tuple) else out
    return jnp.mean(jnp.square(out)), upd
  fn = jax.jit(lambda v, x: jax.grad(loss, has_aux=True)(v['params'], v['batch_stats'], x))
else:
  fn = jax.jit(lambda v, x: model.apply(v, x))
t = time.perf_counter(); jax.block_until_ready(fn(variables, x)); compile_s = time.perf_counter() - t
print(json.dumps({{'compile_s': compile_s}}), flush=True)
for line in sys.stdin:  # one timed call per line from the parent, so rounds alternate
  t = time.perf_counter(); jax.block_until_ready(fn(variables, x))
  print(json.dumps({{'ms': 1e3 * (time.perf_counter() - t)}}), flush=True)
'''


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--arch', default='seg_w18')
  p.add_argument('--size', type=int, nargs=2, default=(256, 512))
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--reps', type=int, default=5)
  p.add_argument('--train', action='store_true', help='time forward + backward instead')
  p.add_argument('--flags', action='append', default=[],
                 help="one XLA_FLAGS value per use, written --flags='--xla_...'")
  a = p.parse_args()
  flag_sets = [''] + [f for f in a.flags if f]
  code = CHILD.format(root=str(ROOT), arch=a.arch, h=a.size[0], w=a.size[1], batch=a.batch,
                      train=a.train)
  procs, compile_s = [], []
  for flags in flag_sets:
    env = dict(os.environ, XLA_FLAGS=flags)
    proc = subprocess.Popen([sys.executable, '-c', code], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # compile before the next process starts: no overlap
    if not first:
      raise SystemExit(f'XLA_FLAGS={flags!r}: the child failed (see stderr above)')
    compile_s.append(json.loads(first)['compile_s'])
    procs.append(proc)
  times = [[] for _ in flag_sets]
  for _ in range(a.reps):
    for i, proc in enumerate(procs):
      proc.stdin.write('\n')
      proc.stdin.flush()
      times[i].append(json.loads(proc.stdout.readline())['ms'])
  for proc in procs:
    proc.stdin.close()
    proc.wait()
  what = 'forward+backward' if a.train else 'inference'
  print(f'{a.arch} {what}, {a.size[0]}x{a.size[1]}, batch {a.batch}, {a.reps} alternating rounds, '
        f'load {os.getloadavg()[0]:.1f}')
  base = statistics.median(times[0])
  print('| XLA_FLAGS | compile s | median ms | min ms | vs no flags |\n|---|---|---|---|---|')
  for flags, c, t in zip(flag_sets, compile_s, times):
    med = statistics.median(t)
    print(f'| `{flags or "(none)"}` | {c:.1f} | {med:.0f} | {min(t):.0f} | {base / med:.2f}x |')


if __name__ == '__main__':
  main()
