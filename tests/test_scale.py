"""Scale-out: 8 devices (data-parallel and sharded state) = 1 device, two processes = one,
restore on another device count, SIGTERM, and the memory levers (remat, gradient accumulation)
against the plain step."""

import functools
import json
import pathlib
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.data import demo, pipeline
from hrnet_jax.data.sources import cityscapes
from hrnet_jax.train import checkpoint, optim
from hrnet_jax.train.loop import TrainState, init_variables, train_step
from seg_tiny import tiny_config
from test_seg_train import read_scalars

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = str(ROOT / 'tests' / 'scale_run.py')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return demo.write_seg_demo(tmp_path_factory.mktemp('data') / 'demo', num_train=48, num_val=8,
                             size_hw=(64, 128))


def run(devices, data_root, workdir, *args, timeout=600):
  done = subprocess.run([sys.executable, RUN, str(devices), str(data_root), str(workdir), *args],
                        capture_output=True, text=True, timeout=timeout)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stdout


def trained(workdir):
  """(variables of the newest checkpoint, per-step losses) of a run."""
  v, _ = checkpoint.load_variables(workdir)
  flat = {jax.tree_util.keystr(k): np.asarray(x)
          for k, x in jax.tree_util.tree_flatten_with_path(v)[0]}
  return flat, [x for _, x in read_scalars(workdir, 'train/loss')]


@pytest.fixture(scope='module')
def initial(data_root):
  """The variables every run starts from (initialization does not depend on the devices)."""
  from hrnet_jax.tasks import get_task
  c = tiny_config(data_root)
  v = init_variables(get_task(c).create_model(), c.seed)
  return {jax.tree_util.keystr(k): np.asarray(x)
          for k, x in jax.tree_util.tree_flatten_with_path(v)[0]}


def assert_same_training(a, b, start, tol=1e-5):
  """Per-step losses, and all parameters / BN statistics within `tol` (relative, one vector per
  collection: single near-zero leaves such as conv biases before BN, whose true gradient is 0,
  carry only noise). The change from `start` must agree too (to 1e-3): at the small learning
  rate of these runs the parameters alone would hide a wrong update."""
  (va, la), (vb, lb) = a, b
  assert len(la) == len(lb) == 4
  np.testing.assert_allclose(lb, la, rtol=tol)
  for collection in ('params', 'batch_stats'):
    keys = [k for k in va if k.startswith(f"['{collection}']")]
    x = np.concatenate([va[k].ravel() for k in keys])
    y = np.concatenate([vb[k].ravel() for k in keys])
    x0 = np.concatenate([start[k].ravel() for k in keys])
    assert np.linalg.norm(y - x) / np.linalg.norm(x) <= tol, collection
    assert np.linalg.norm((y - x0) - (x - x0)) / np.linalg.norm(x - x0) <= 1e-3, collection


@pytest.fixture(scope='module')
def one_device(data_root, tmp_path_factory):
  """The reference: 4 steps on one device, one process."""
  workdir = tmp_path_factory.mktemp('one')
  run(1, data_root, workdir)
  return trained(workdir)


def test_eight_devices_sharded_then_resumed_on_two_match_one(data_root, one_device, initial,
                                                              tmp_path):
  """Steps 1-2 on 8 devices, parameters and optimizer state sharded over them (ZeRO/FSDP), saved;
  steps 3-4 restored onto 2 devices with replicated state."""
  out = run(8, data_root, tmp_path, '--stop-at', '2', '--shard')
  assert 'sharded over 8 devices' in out, out  # really split, not replicated
  assert checkpoint.latest_step_dir(tmp_path).name == '2'
  eight = [v for _, v in read_scalars(tmp_path, 'train/loss')]
  np.testing.assert_allclose(eight, one_device[1][:2], rtol=1e-5)
  run(2, data_root, tmp_path)
  assert checkpoint.latest_step_dir(tmp_path).name == '4'
  assert_same_training(one_device, trained(tmp_path), initial)


def test_two_processes_match_one_process(data_root, one_device, initial, tmp_path):
  """Two processes with 2 CPU devices each (jax.distributed on localhost, gloo collectives)
  train like one process: each reads its own half of every global batch."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  procs = [subprocess.Popen([sys.executable, RUN, '2', str(data_root), str(tmp_path),
                             '--coordinator', f'127.0.0.1:{port}', '--num-processes', '2',
                             '--process-id', str(i)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  try:
    outs = [p.communicate(timeout=600) for p in procs]
  finally:
    for p in procs:
      p.kill()
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert json.loads((tmp_path / 'run.json').read_text()) == {'devices': 4, 'processes': 2}
  assert_same_training(one_device, trained(tmp_path), initial)


def test_sigterm_saves_the_current_step_and_resume_matches(data_root, one_device, tmp_path):
  out = run(1, data_root, tmp_path, '--sigterm-at', '2')
  assert 'SIGTERM: saved the checkpoint of step 2' in out, out
  assert checkpoint.latest_step_dir(tmp_path).name == '2'
  assert len(read_scalars(tmp_path, 'train/loss')) == 2
  run(1, data_root, tmp_path)  # the same command resumes
  (va, la), (vb, lb) = one_device, trained(tmp_path)
  np.testing.assert_allclose(lb, la, rtol=1e-6)
  for k in va:
    np.testing.assert_allclose(vb[k], va[k], rtol=1e-6, atol=1e-8, err_msg=k)


def test_two_hosts_read_exactly_the_global_batch_of_one(data_root):
  """Augmentations included: hosts' batches of a step together are the single-host batch."""
  src = cityscapes.CityscapesFolder(data_root, 'train')
  aug = lambda s, rng: {'x': rng.integers(0, 10**9, 4), 'label': s['label'][:2, :2]}
  one = pipeline.train_iterator(src, aug, batch_size=8, seed=3)
  hosts = [pipeline.train_iterator(src, aug, batch_size=4, seed=3, process_index=i,
                                   process_count=2) for i in range(2)]
  for _ in range(7):  # crosses an epoch boundary (48 samples)
    whole = next(one)['x']
    parts = np.concatenate([next(h)['x'] for h in hosts])
    assert sorted(map(tuple, whole)) == sorted(map(tuple, parts))


# --- Memory levers against the plain step ------------------------------------------------------


def _setup(data_root, **model):
  c = tiny_config(data_root, batch_size=4)
  for k, v in model.items():
    c.model[k] = v
  from hrnet_jax.tasks import get_task
  task = get_task(c)
  m = task.create_model()
  c.optimizer.update(dict(name='sgd', lr=1.0, momentum=0.0, weight_decay=0.0,
                          schedule='constant'))
  schedule = optim.make_schedule(c.optimizer, 10)
  tx = optim.make_optimizer(c.optimizer, schedule)
  v = init_variables(m, 0)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=v['params'],
                     batch_stats=v['batch_stats'], opt_state=tx.init(v['params']))
  step = functools.partial(train_step, model=m, tx=tx, loss_fn=task.loss, schedule=schedule,
                           mean=tuple(c.data.mean), std=tuple(c.data.std), dtype=jnp.float32,
                           rng=jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
           'label': rng.integers(0, 19, (4, 64, 64)).astype(np.uint8)}
  return state, step, batch


def _grads(state, new):
  """With SGD at lr 1 and no momentum or decay, the update is minus the gradient."""
  return jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b), state.params,
                                new.params)


def _close(a, b, tol):
  x = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(a)])
  y = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(b)])
  assert np.linalg.norm(x - y) <= tol * np.linalg.norm(x)


def test_remat_gives_the_plain_gradients(data_root):
  state, plain, batch = _setup(data_root)
  _, remat, _ = _setup(data_root, remat=True)
  new_plain, m1 = jax.jit(plain)(state, batch)
  new_remat, m2 = jax.jit(remat)(state, batch)
  assert float(m1['loss']) == pytest.approx(float(m2['loss']), rel=1e-6)
  _close(_grads(state, new_plain), _grads(state, new_remat), 1e-5)
  _close(new_plain.batch_stats, new_remat.batch_stats, 1e-6)


def test_gradient_accumulation_is_the_mean_over_micro_batches(data_root):
  """k=2: the gradient is the mean of the two micro-batches' gradients (rows 0, 2 and 1, 3);
  BN statistics update once per micro-batch, in order."""
  state, step, batch = _setup(data_root)
  accumulated, metrics = jax.jit(functools.partial(step, accum_steps=2))(state, batch)
  s0, m0 = jax.jit(step)(state, {k: v[0::2] for k, v in batch.items()})
  s1, m1 = jax.jit(step)(state, {k: v[1::2] for k, v in batch.items()})
  mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, _grads(state, s0), _grads(state, s1))
  _close(mean, _grads(state, accumulated), 1e-5)
  assert float(metrics['loss']) == pytest.approx((float(m0['loss']) + float(m1['loss'])) / 2,
                                                 rel=1e-6)
  # Running statistics: micro-batch 0 from the initial ones, then micro-batch 1 from those.
  after0 = s0.batch_stats
  chained, _ = jax.jit(step)(state.replace(batch_stats=after0),
                             {k: v[1::2] for k, v in batch.items()})
  _close(chained.batch_stats, accumulated.batch_stats, 1e-6)
