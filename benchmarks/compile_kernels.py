"""Where a cold compile's time goes. XLA:CPU turns every fusion of the optimized program into a
machine-code kernel, compiles each distinct one (same fused computation, same shapes) once, and
pays a roughly fixed cost per kernel whatever its size, so a train step's compile time follows
its number of distinct kernels, not its FLOPs.

  python benchmarks/compile_kernels.py [--cases pose_w32 seg_w18 cls_w18 seg_w48] [--batch 2]
                                       [--json kernels.json]

Per case (the trainer's own step, built as vs_pytorch.py builds it, at its CPU size, persistent
cache off): trace, lower and compile seconds; fusion calls in the optimized HLO; distinct
kernels, as generated code (loop fusions) and library calls (YNNPACK convolutions and matmuls),
and by origin: forward, backward, the rest (the optimizer update and the metrics). Then the cost
of one kernel: N small elementwise kernels of N distinct shapes, against N of one shape.
"""

import argparse
import collections
import json
import pathlib
import re
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import vs_pytorch  # noqa: E402
from benchmarks.profile_step import hlo_computations  # noqa: E402

FUSION = re.compile(r' fusion\([^)]*\), kind=(\w+), calls=%?([\w.\-]+)(.*)')


def origin(rest: str) -> str:
  """forward / backward / other, from the op_name metadata autodiff leaves on a fusion."""
  m = re.search(r'op_name="([^"]*)"', rest)
  name = m.group(1) if m else ''
  return 'backward' if 'transpose(' in name else 'forward' if 'jvp(' in name else 'other'


def distinct_kernels(hlo: str) -> dict:
  """Fusion calls and distinct kernels of an optimized HLO module (a kernel is distinct when its
  fused computation differs once instruction names and metadata are dropped)."""
  comps = hlo_computations(hlo)
  seen: dict[str, tuple[str, str]] = {}
  calls = 0
  for m in FUSION.finditer(hlo):
    kind, comp, rest = m.groups()
    calls += 1
    body = '\n'.join(re.sub(r'%[\w.\-]+', '%', re.sub(r', metadata=\{[^}]*\}', '', line)).strip()
                     for line in comps.get(comp, [comp]))
    seen.setdefault(kind + '\n' + body, ('library' if kind == 'kCustom' else 'generated',
                                         origin(rest)))
  return {'fusion_calls': calls, 'distinct': len(seen),
          'by_kind': dict(collections.Counter(k for k, _ in seen.values())),
          'by_origin': dict(collections.Counter(o for _, o in seen.values()))}


def kernel_cost(n: int = 200) -> dict:
  """Compile seconds of n small elementwise kernels: n distinct shapes against one shape n times."""
  def f(xs):
    return [jnp.tanh(x * 1.7 + 0.3) * x for x in xs]
  out = {}
  for name, widths in (('distinct_shapes_s', range(32, 32 + n)), ('one_shape_s', [32] * n)):
    xs = [jax.ShapeDtypeStruct((64, w), jnp.float32) for w in widths]
    t = time.perf_counter()
    jax.jit(f).lower(xs).compile()
    out[name] = time.perf_counter() - t
  out['n'] = n
  out['per_kernel_ms'] = 1e3 * (out['distinct_shapes_s'] - out['one_shape_s']) / (n - 1)
  return out


def measure(name: str, batch: int) -> dict:
  """Trace / lower / compile seconds and the kernel counts of one case's train step."""
  case = vs_pytorch.case_of(name)
  hw = case.train_hw if jax.default_backend() == 'gpu' else case.cpu_train_hw
  step, state, _ = vs_pytorch.jax_train_step(case, 'float32', None)
  data = jax.device_put(vs_pytorch.case_batch(case, batch, hw))
  t0 = time.perf_counter()
  traced = step.jitted.trace(state, data)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  compiled = lowered.compile()
  t3 = time.perf_counter()
  return {'case': name, 'size': list(hw), 'batch': batch, 'trace_s': t1 - t0,
          'lower_s': t2 - t1, 'compile_s': t3 - t2, **distinct_kernels(compiled.as_text())}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--cases', nargs='+', default=['pose_w32', 'seg_w18', 'cls_w18', 'seg_w48'])
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--kernels', type=int, default=200, help='kernels of the per-kernel measure')
  p.add_argument('--json', default='')
  a = p.parse_args()
  jax.config.update('jax_enable_compilation_cache', False)
  cost = kernel_cost(a.kernels)
  print(f'{a.kernels} elementwise kernels: {cost["distinct_shapes_s"]:.2f} s for distinct shapes, '
        f'{cost["one_shape_s"]:.2f} s for one shape -> {cost["per_kernel_ms"]:.1f} ms per '
        f'distinct kernel')
  print(f'{"case":>9} {"size":>10} | {"trace":>6} {"lower":>6} {"compile":>8} | {"fusions":>7} '
        f'{"distinct":>8} {"generated":>9} {"library":>7} | {"fwd":>5} {"bwd":>5} {"other":>5} '
        f'| {"ms/kernel":>9}')
  results = []
  for name in a.cases:
    r = measure(name, a.batch)
    results.append(r)
    k, o = r['by_kind'], r['by_origin']
    print(f'{name:>9} {r["size"][0]:>4}x{r["size"][1]:<5} | {r["trace_s"]:6.1f} {r["lower_s"]:6.1f} '
          f'{r["compile_s"]:8.1f} | {r["fusion_calls"]:7d} {r["distinct"]:8d} '
          f'{k.get("generated", 0):9d} {k.get("library", 0):7d} | {o.get("forward", 0):5d} '
          f'{o.get("backward", 0):5d} {o.get("other", 0):5d} | '
          f'{1e3 * r["compile_s"] / r["distinct"]:9.1f}', flush=True)
  if a.json:
    pathlib.Path(a.json).write_text(json.dumps({'kernel_cost': cost, 'cases': results,
                                                'load': vs_pytorch.load()}, indent=1))


if __name__ == '__main__':
  main()
