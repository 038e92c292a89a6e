"""The benchmark machinery on a tiny model: both frameworks run, the JSON holds the measured
times, ratios and GFLOP/s follow from them, the FLOP count is hrnet_jax.flops'. No timing
assertions."""

import json

import numpy as np
import pytest

pytest.importorskip('torch')
from benchmarks import vs_pytorch as bench  # noqa: E402
from hrnet_jax.flops import flops  # noqa: E402

TINY = dict(width=4, num_modules=(1, 1, 1), num_blocks=1, stage1_blocks=1)


@pytest.mark.slow
@pytest.mark.parametrize('case', ['seg_w18', 'cls_w18'])
def test_bench_end_to_end(tmp_path, case):
  out = tmp_path / 'bench.json'
  overrides = [f'{k}={v}' for k, v in TINY.items()]
  argv = ['--cases', case, '--train-size', '64', '96', '--infer-size', '64', '64',
          '--batch', '2', '--steps', '1', '--peak-n', '128', '--no-pipeline', '--json', str(out)]
  for o in overrides:
    argv += ['--override', o]
  bench.main(argv)
  r = json.loads(out.read_text())
  assert r['peak']['jax_gflops'] > 0 and r['peak']['torch_gflops'] > 0
  arch = case
  (case,) = r['cases']
  assert case['arch'] == arch and case['train_hw'] == [64, 96]
  # The same model with the same weights on both sides.
  assert case['infer_max_rel_err'] < 1e-4
  assert case['train_first_loss']['jax'] == pytest.approx(case['train_first_loss']['torch'],
                                                          rel=1e-4)
  # FLOPs: 2 x the paper's multiply-adds; training 3x the forward.
  assert case['gflop']['infer'] == pytest.approx(2 * flops(arch, (64, 64), batch=2, **TINY)
                                                 * 2**30 / 1e9)
  assert case['gflop']['train'] == pytest.approx(6 * flops(arch, (64, 96), batch=2, **TINY)
                                                 * 2**30 / 1e9)
  for phase in ('infer', 'train'):
    p = case[phase]
    sides = ('jax', 'torch_nchw', 'torch_channels_last')
    for k in sides:
      assert p[k]['reps'] == 1 and p[k]['min_s'] == p[k]['median_s'] > 0
      assert p[k]['img_per_s'] == pytest.approx(2 / p[k]['median_s'])
      assert p[k]['gflops'] == pytest.approx(case['gflop'][phase] / p[k]['median_s'])
      assert p[k]['step_peak_bytes'] > 0
    best = min(sides[1:], key=lambda k: p[k]['median_s'])
    assert p['torch_best'] == best
    assert p['ratio'] == pytest.approx(p[best]['median_s'] / p['jax']['median_s'])
    assert p['jax']['compile_s'] > 0
  assert len(r['load_start']) == 3


def test_torch_peak_bytes_counts_live_tensors():
  torch = pytest.importorskip('torch')
  n = 1 << 20  # 4 MiB float32 tensors

  def fn():
    a = torch.ones(n)
    b = torch.ones(n)  # two live at once
    del a, b
    c = torch.ones(n)  # a third after both were freed
    return c

  peak = bench.torch_peak_bytes(fn, 'cpu')
  assert 2 * 4 * n <= peak < 3 * 4 * n


def test_alternate_interleaves():
  calls = []
  t = bench.alternate({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}, 3)
  assert calls == ['a', 'b'] * 3
  assert [len(v) for v in t.values()] == [3, 3]
  assert np.all(np.array(t['a']) >= 0)


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
  """benchmarks/gpu_check.sh --dry-run: the GPU check's whole path (the three cases, bf16 on
  both sides, MFU, JSON) on tiny shapes on this CPU."""
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  out = tmp_path / 'gpu.json'
  run = subprocess.run(['bash', str(root / 'benchmarks' / 'gpu_check.sh'), '--dry-run', '--out',
                        str(out)], env={**__import__('os').environ, 'PYTHON': sys.executable},
                       capture_output=True, text=True, timeout=900)
  assert run.returncode == 0, run.stderr[-2000:]
  r = json.loads(out.read_text())
  assert r['mode'] == 'dry-run' and r['peak']['dtype'] == 'bfloat16'
  assert r['mfu_peak_gflops'] == max(r['peak']['jax_gflops'], r['peak']['torch_gflops'])
  assert [c['arch'] for c in r['cases']] == [name for name, _, _ in bench.GPU_CHECK]
  for c in r['cases']:
    assert c['dtype'] == 'bfloat16' and c['batch'] == 2 and c['train_hw'] == [64, 64]
    # bf16 on both sides (JAX bf16 compute, PyTorch autocast): same model, bf16 rounding apart.
    assert c['infer_max_rel_err'] < 0.05
    assert c['train_first_loss']['jax'] == pytest.approx(c['train_first_loss']['torch'], rel=0.02)
    for phase in ('infer', 'train'):
      assert c[phase]['ratio'] > 0 and c[phase]['jax']['compile_s'] > 0
  assert '| seg_w48 | train | 64x64 b2 bf16 |' in run.stdout
  pipeline = json.loads((tmp_path / 'gpu_pipeline.json').read_text())
  assert pipeline['tasks']['pose']['runs'][0]['ours'] > 0


def test_gpu_check_rejects_unknown_options():
  import pathlib
  import subprocess
  script = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'gpu_check.sh'
  run = subprocess.run(['bash', str(script), '--bogus'], capture_output=True, text=True)
  assert run.returncode == 2 and 'usage: benchmarks/gpu_check.sh' in run.stderr
  # --case picks some of the check's cases (a rerun of those a time limit cut off); others fail
  # before anything is measured.
  with pytest.raises(SystemExit, match=r"--cases \['seg_w48', 'nope'\]: expected names among "
                                       r"\['seg_w48', 'pose_w32', 'cls_w18'\]"):
    bench.gpu_check(True, '', ['seg_w48', 'nope'])


def test_distinct_kernels_counts_each_fused_computation_once():
  """Two arrays of one shape share one kernel, a third shape gets its own: the count the compile
  time follows (XLA:CPU compiles each distinct fused computation once)."""
  import jax
  import jax.numpy as jnp

  from benchmarks.compile_kernels import distinct_kernels
  f = jax.jit(lambda xs: [jnp.tanh(x * 1.7 + 0.3) * x for x in xs])
  xs = [jax.ShapeDtypeStruct(s, jnp.float32) for s in [(8, 16), (8, 16), (8, 17)]]
  r = distinct_kernels(f.lower(xs).compile().as_text())
  assert r['fusion_calls'] == 3 and r['distinct'] == 2
  assert r['by_kind'] == {'generated': 2} and r['by_origin'] == {'other': 2}


@pytest.mark.slow
def test_pipeline_benchmark_times_ours_and_names_a_missing_official_checkout(tmp_path):
  """benchmarks/pipeline.py on the pose files it writes: our loader's figure in the JSON; an
  --official directory without the checkout is one message naming the repository."""
  import subprocess
  import sys
  root = __import__('pathlib').Path(__file__).resolve().parents[1]
  cmd = [sys.executable, 'benchmarks/pipeline.py', '--tasks', 'pose', '--workers', '1',
         '--batches', '1', '--repeats', '1', '--data', str(tmp_path / 'files')]
  run = subprocess.run(cmd + ['--json', str(tmp_path / 'p.json')], cwd=root,
                       capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-2000:]
  pose = json.loads((tmp_path / 'p.json').read_text())['tasks']['pose']
  assert pose['files'].startswith('800 images 640x480 JPEG') and '2400 people' in pose['files']
  assert pose['runs'][0]['ours'] > 0 and pose['runs'][0]['official'] is None
  run = subprocess.run(cmd + ['--official', str(tmp_path / 'none')], cwd=root,
                       capture_output=True, text=True)
  assert run.returncode != 0
  assert f'expected a checkout of deep-high-resolution-net.pytorch at {tmp_path}' in run.stderr
