"""Where the compiled train step's time goes, by kind of XLA op: the trainer's own step
(benchmarks/common.build_step) traced with jax.profiler, its XLA:CPU op events grouped.

  python benchmarks/profile_step.py [--arch seg_w18] [--size 128 256] [--batch 2] [--steps 3]
                                    [--override width=8 ...] [--top 15] [--save DIR | --load DIR]

Proportions stay meaningful on a loaded machine (every op is slowed alike); absolute times do
not. Ops are classified from the optimized HLO of the compiled step: a convolution is a forward,
input-gradient or weight-gradient convolution by its output shape and metadata (see
`conv_kind`); a fusion by the ops inside it, forward / backward / other by its metadata.
"""

import argparse
import collections
import os
import pathlib
import re
import sys
import tempfile

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import vs_pytorch as bench  # noqa: E402


def conv_kind(line: str, batch: int) -> str:
  """Forward, input-gradient or weight-gradient convolution, from an optimized HLO line.

  After layout assignment XLA:CPU writes every convolution as NHWC x HWIO -> NHWC
  (b01f_01io->b01f), with transposes around it, so the dimension labels tell nothing. The weight
  gradient contracts the batch: its output is a kernel-shaped [I, kh, kw, O] array, whose leading
  dimension is a channel count, not the batch. The input gradient keeps the batch and comes from
  the transposed (backward) pass, or carries lhs dilation (strided layers).
  """
  m = re.search(r'= \w+\[(\d+),\d+,\d+,\d+\]', line)
  if m and int(m.group(1)) != batch:
    return 'conv weight-grad'
  if 'lhs_dilate' in line or 'transpose(jvp' in line:
    return 'conv input-grad'
  return 'conv forward'


def hlo_computations(text: str) -> dict[str, list[str]]:
  """Computation name -> its instruction lines, from an optimized HLO module's text."""
  comps, cur = {}, None
  for line in text.splitlines():
    m = re.match(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if m:
      cur = m.group(1)
      comps[cur] = []
    elif cur and line.strip() == '}':
      cur = None
    elif cur:
      comps[cur].append(line)
  return comps


def classify_hlo(text: str, batch: int) -> dict[str, str]:
  """Op name -> category, from the optimized HLO module text."""
  comps = hlo_computations(text)

  def ops_in(comp, seen=()):
    ops = []
    for line in comps.get(comp, ()):
      m = re.match(r'\s*(?:ROOT )?%?([\w.\-]+) = [^=]*?\s([\w\-]+)\(', line)
      if m:
        ops.append((m.group(1), m.group(2), line))
        for c in re.findall(r'calls=%?([\w.\-]+)', line):
          if c not in seen:
            ops += ops_in(c, seen + (c,))
    return ops

  def phase(line):
    m = re.search(r'op_name="([^"]*)"', line)
    name = m.group(1) if m else ''
    return 'bwd' if 'transpose(' in name else 'fwd' if 'jvp(' in name else 'other'

  def category(kind, line, inner):
    if kind == 'convolution':
      return conv_kind(line, batch) + ' [eigen]'
    if kind == 'fusion' or kind == 'call':
      lib = ' [ynnpack]' if '__ynn_fusion' in line else ''
      kinds = {k for _, k, _ in inner}
      for _, k, l in inner:
        if k == 'convolution':
          return conv_kind(l, batch) + (lib or ' [fused]')
      if 'dot' in kinds:
        return 'matmul' + lib
      if 'reduce' in kinds or 'reduce-window' in kinds:
        return f'reduce {phase(line)}' + lib
      if 'gather' in kinds or 'scatter' in kinds or 'dynamic-slice' in kinds:
        return 'gather/scatter' + lib
      if kinds <= {'parameter', 'copy', 'transpose', 'bitcast', 'reshape', 'broadcast', 'slice',
                   'concatenate', 'pad', 'constant', 'tuple', 'get-tuple-element'}:
        return 'copy/transpose/pad'
      return f'elementwise {phase(line)}' + lib
    if kind == 'dot':
      return 'matmul'
    if kind == 'reduce':
      return f'reduce {phase(line)}'
    if kind in ('copy', 'transpose', 'pad', 'concatenate', 'slice', 'reverse'):
      return 'copy/transpose/pad'
    if kind in ('gather', 'scatter', 'dynamic-slice', 'dynamic-update-slice'):
      return 'gather/scatter'
    return 'other: ' + kind

  cats = {}
  for comp, lines in comps.items():
    for name, kind, line in ops_in(comp):
      calls = re.findall(r'calls=%?([\w.\-]+)', line)
      inner = [o for c in calls for o in ops_in(c)]
      cats[name] = category(kind, line, inner)
  return cats


def xla_flags() -> str:
  return os.environ.get('XLA_FLAGS', '')


def build(arch: str, size, batch: int, overrides: dict):
  case = bench.Case(arch, tuple(size), tuple(size), tuple(size), tuple(size),
                    tuple(overrides.items()))
  step, state, _ = bench.jax_train_step(case, 'float32', None)
  data = jax.device_put(bench.case_batch(case, batch, tuple(size), seed=1))
  compiled = step.lower(state, data).compile()
  return compiled, state, data


def profile(compiled, state, data, steps: int):
  """(op name -> total seconds over `steps`, wall seconds per step) from a jax.profiler trace."""
  import time
  state, m = compiled(state, data)
  jax.block_until_ready(m)
  with tempfile.TemporaryDirectory() as d:
    jax.profiler.start_trace(d)
    t = time.perf_counter()
    for _ in range(steps):
      state, m = compiled(state, data)
    jax.block_until_ready(m)
    wall = (time.perf_counter() - t) / steps
    jax.profiler.stop_trace()
    (pb,) = pathlib.Path(d).rglob('*.xplane.pb')
    prof = jax.profiler.ProfileData.from_file(str(pb))
  times = collections.Counter()
  for plane in prof.planes:
    if not plane.name.startswith('/host:'):
      continue
    for line in plane.lines:
      for ev in line.events:
        times[(line.name, ev.name)] += ev.duration_ns * 1e-9
  return times, wall


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='seg_w18')
  p.add_argument('--size', type=int, nargs=2, default=(128, 256))
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--steps', type=int, default=3)
  p.add_argument('--override', action='append', default=[])
  p.add_argument('--top', type=int, default=15)
  p.add_argument('--raw', action='store_true', help='print the trace lines and top events')
  p.add_argument('--save', help='directory to write the optimized HLO and op times to')
  p.add_argument('--load', help='a --save directory: classify it again instead of running')
  a = p.parse_args()
  overrides = dict(bench.parse_overrides(a.override))
  if a.load:
    import json
    d = pathlib.Path(a.load)
    hlo, saved = (d / 'step.hlo.txt').read_text(), json.loads((d / 'times.json').read_text())
    times = {(ln, n): t for ln, n, t in saved['times']}
    wall, a.steps = saved['wall'], saved['steps']
  else:
    compiled, state, data = build(a.arch, a.size, a.batch, overrides)
    hlo = compiled.as_text()
    times, wall = profile(compiled, state, data, a.steps)
  if a.save:
    import json
    d = pathlib.Path(a.save)
    d.mkdir(parents=True, exist_ok=True)
    (d / 'step.hlo.txt').write_text(hlo)
    (d / 'times.json').write_text(json.dumps({'wall': wall, 'steps': a.steps, 'times': [
        [ln, n, t] for (ln, n), t in times.items()]}))
  cats = classify_hlo(hlo, a.batch)
  if a.raw:
    lines = collections.Counter()
    for (ln, _), t in times.items():
      lines[ln] += t
    print(lines.most_common(20))
    print(collections.Counter(times).most_common(40))
  by_cat, by_op = collections.Counter(), collections.Counter()
  for (_, name), t in times.items():
    if name in cats:
      by_cat[cats[name]] += t / a.steps
      by_op[name] += t / a.steps
  total = sum(by_cat.values())
  print(f'{a.arch} {a.size[0]}x{a.size[1]} batch {a.batch}: {wall * 1e3:.0f} ms/step wall, '
        f'{total * 1e3:.0f} ms in XLA ops (summed over threads), load {bench.load()}, '
        f'XLA_FLAGS={xla_flags()!r}')
  print(f'{"category":<36} {"ms/step":>9} {"share":>7}')
  for c, t in [ct for ct in by_cat.most_common() if ct[1] >= 5e-5]:
    print(f'{c:<36} {t * 1e3:9.1f} {100 * t / total:6.1f}%')
  by_prefix = collections.Counter()
  for n, t in by_op.items():  # XLA names fusions by their main ops: transpose_copy_fusion.12
    by_prefix[re.sub(r'\.\d+$', '', n)] += t
  print(f'\n{"XLA op name (numbers dropped)":<36} {"ms/step":>9} {"share":>7}')
  for n, t in by_prefix.most_common(a.top):
    print(f'{n:<36} {t * 1e3:9.1f} {100 * t / total:6.1f}%')
  print(f'\ntop {a.top} ops:')
  for n, t in by_op.most_common(a.top):
    print(f'{n:<40} {cats[n]:<34} {t * 1e3:8.1f} ms')
  return by_cat


if __name__ == '__main__':
  np.set_printoptions(precision=3)
  main()
