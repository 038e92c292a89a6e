"""The trainer's mechanics on the tiny segmentation recipe (configs/seg_cityscapes.py:runlocal):
exact resume after a stop and after SIGTERM, init_from, the NaN guard, checkpoint retention,
damaged and mismatched checkpoints, workdir errors; and the memory levers (remat, gradient
accumulation) against the plain step, in float64. Every run uses the same config (6 steps), so
all of them compile the same programs. (Device and process counts: test_scale.py.)"""

import os
import shutil
import signal

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import TINY, flat, fresh_step, read_scalars, recipe
from hrnet_jax import convert
from hrnet_jax.errors import Interrupted, UserError
from hrnet_jax.tasks import get_task
from hrnet_jax.train import checkpoint, optim, parallel
from hrnet_jax.train.workdir import LOCK_FILE
from hrnet_jax.train.loop import NonFiniteLossError, create_train_state, train_and_evaluate


def config(seg_root):
  c = recipe('seg_cityscapes', seg_root)
  c.checkpoint.every_steps = 3  # checkpoints at steps 3 and 6
  c.log_every_steps = 1  # every step's loss in TensorBoard
  return c


@pytest.fixture(scope='module')
def straight(seg_root, tmp_path_factory):
  """The reference: 6 steps without interruption."""
  workdir = tmp_path_factory.mktemp('straight')
  results = train_and_evaluate(config(seg_root), str(workdir))
  assert 'miou' in results
  return workdir


def assert_same_run(a, b):
  """Bit for bit: every variable of the newest checkpoint and every step's loss."""
  va, vb = flat(checkpoint.load_variables(a)[0]), flat(checkpoint.load_variables(b)[0])
  assert va.keys() == vb.keys()
  for k in va:
    np.testing.assert_array_equal(va[k], vb[k], err_msg=k)
  la, lb = read_scalars(a, 'train/loss'), read_scalars(b, 'train/loss')
  assert len(la) == 6 and sorted(set(lb)) == la  # a resumed run logs its steps once each


def test_stopped_and_resumed_run_is_bit_exact(seg_root, straight, tmp_path):
  train_and_evaluate(config(seg_root), str(tmp_path), stop_at=3)
  assert checkpoint.latest_step_dir(tmp_path).name == '3'
  train_and_evaluate(config(seg_root), str(tmp_path))
  assert_same_run(straight, tmp_path)


def test_sigterm_saves_the_current_step_and_the_same_command_resumes(seg_root, straight,
                                                                     tmp_path):
  def sigterm_at_4(step):  # a real signal, as a preempted machine or `kill` sends
    if step == 4:
      os.kill(os.getpid(), signal.SIGTERM)

  results = train_and_evaluate(config(seg_root), str(tmp_path), hooks=[sigterm_at_4])
  assert results == {'preempted_at': 4}
  assert checkpoint.latest_step_dir(tmp_path).name == '4'
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back
  train_and_evaluate(config(seg_root), str(tmp_path))
  assert_same_run(straight, tmp_path)


@pytest.mark.parametrize('source', ['workdir', 'converted classifier'])
def test_init_from_fills_the_backbone_and_keeps_the_head(seg_root, straight, tmp_path, source):
  """The trainer's initial state: every backbone array from `init_from`, the head as a fresh
  run with the same seed initializes it (a classifier's backbone is a segmentation backbone)."""
  c = config(seg_root)
  task = get_task(c)
  mesh = parallel.make_mesh()
  tx = optim.make_optimizer(c.optimizer, optim.make_schedule(c.optimizer, 6))
  if source == 'workdir':
    c.init_from = str(straight)
    pretrained = checkpoint.load_variables(straight)[0]
  else:
    from hrnet_jax.models import zoo
    shapes = zoo.init_shapes('cls_w18_small_v1', num_classes=10, **TINY)
    rng = np.random.default_rng(0)
    pretrained = jax.tree_util.tree_map(
        lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)
    convert.write_variables(pretrained, tmp_path / 'cls', {'arch': 'cls_w18_small_v1',
                                                           'overrides': dict(TINY)})
    c.init_from = str(tmp_path / 'cls')
  logged = []
  state, start = create_train_state(c, task, mesh, tx, log=logged.append)
  fresh, _ = create_train_state(config(seg_root), task, mesh, tx, log=logged.append)
  assert start == 0 and any('init_from' in line for line in logged)
  for collection in ('params', 'batch_stats'):
    got = flat(getattr(state, collection))
    want = flat(pretrained[collection]['backbone'])
    backbone = {k: v for k, v in got.items() if k.startswith("['backbone']")}
    assert len(backbone) == len(want) > 20
    for k, v in want.items():
      np.testing.assert_array_equal(backbone["['backbone']" + k], v, err_msg=k)
    head = {k: v for k, v in got.items() if k.startswith("['head']")}
    new_head = flat(getattr(fresh, collection))
    assert head
    for k, v in head.items():
      np.testing.assert_array_equal(v, new_head[k], err_msg=k)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(seg_root, tmp_path):
  train_and_evaluate(config(seg_root), str(tmp_path), stop_at=3)
  good = flat(checkpoint.load_variables(tmp_path)[0])
  c = config(seg_root)
  c.optimizer.lr = 1e30  # diverges at once
  with pytest.raises(NonFiniteLossError, match=r'at step [45].*checkpoints/3'):
    train_and_evaluate(c, str(tmp_path))
  assert checkpoint.latest_step_dir(tmp_path).name == '3'
  for k, v in flat(checkpoint.load_variables(tmp_path)[0]).items():
    np.testing.assert_array_equal(v, good[k])


@pytest.mark.filterwarnings('ignore:overflow encountered in cast:RuntimeWarning')
def test_non_finite_parameters_are_never_saved(seg_root, tmp_path):
  """lr 1e39 is inf in float32: the first update makes the parameters inf/nan while the loss of
  that step (computed before the update) is finite; the save after it must not happen."""
  train_and_evaluate(config(seg_root), str(tmp_path), stop_at=3)
  good = flat(checkpoint.load_variables(tmp_path)[0])
  c = config(seg_root)
  c.optimizer.lr, c.checkpoint.every_steps = 1e39, 1
  with pytest.raises(NonFiniteLossError, match=r'non-finite at step 4.*not saved.*checkpoints/3'):
    train_and_evaluate(c, str(tmp_path))
  assert checkpoint.latest_step_dir(tmp_path).name == '3'
  for k, v in flat(checkpoint.load_variables(tmp_path)[0]).items():
    np.testing.assert_array_equal(v, good[k])
  assert isinstance(NonFiniteLossError('x'), UserError)  # the commands print one line


@pytest.fixture
def python_sigint():
  """Python's own SIGINT handler during the test (pytest-xdist's workers ignore SIGINT)."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  yield
  signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_after_the_step_and_says_where(seg_root, tmp_path, python_sigint):
  """A real SIGINT: the step in flight ends, nothing more is saved, the error names the last
  checkpoint; the handlers and the lock go with the run. A second Ctrl-C stops at once."""
  def ctrl_c_at_5(step):
    if step == 5:
      os.kill(os.getpid(), signal.SIGINT)

  with pytest.raises(Interrupted, match=r'stopped at step 5; the last checkpoint is .*'
                                        r'checkpoints/3; run the same command to resume'):
    train_and_evaluate(config(seg_root), str(tmp_path), hooks=[ctrl_c_at_5])
  assert checkpoint.latest_step_dir(tmp_path).name == '3'
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  assert not (tmp_path / LOCK_FILE).exists()

  reached = []

  def twice_at_4(step):
    if step == 4:
      os.kill(os.getpid(), signal.SIGINT)
      os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt here, inside the step
      reached.append(step)  # not reached

  with pytest.raises(Interrupted, match=r'stopped at step 4; the last checkpoint is .*'
                                        r'checkpoints/3;'):
    train_and_evaluate(config(seg_root), str(tmp_path), hooks=[twice_at_4])
  assert not reached


def test_one_run_at_a_time_in_a_workdir(seg_root, tmp_path):
  """A second run on a workdir in use stops at once naming the first one's PID; a run that was
  killed leaves a lock file behind that does not block the next."""
  import subprocess
  import sys
  hold = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time; from hrnet_jax.train.workdir import WorkdirLock; '
       'lock = WorkdirLock(sys.argv[1]); print("locked", flush=True); time.sleep(600)',
       str(tmp_path)],
      stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
  try:
    assert hold.stdout.readline().strip() == 'locked'
    with pytest.raises(UserError, match=rf'{tmp_path} is in use by PID {hold.pid} on '):
      train_and_evaluate(config(seg_root), str(tmp_path), stop_at=1)
    assert not (tmp_path / 'checkpoints').exists()
  finally:
    hold.kill()
    hold.wait()
  assert (tmp_path / LOCK_FILE).exists()  # left by the killed process
  train_and_evaluate(config(seg_root), str(tmp_path), stop_at=1)
  assert checkpoint.latest_step_dir(tmp_path).name == '1'


@pytest.fixture
def small_disk(tmp_path):
  """A 12 MiB filesystem of its own (tmpfs; needs the right to mount, as root has)."""
  import subprocess
  disk = tmp_path / 'disk'
  disk.mkdir()
  if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=12m', 'tmpfs', str(disk)],
                    capture_output=True).returncode:
    pytest.skip('cannot mount a small filesystem here (needs root)')
  yield disk
  subprocess.run(['umount', '-l', str(disk)], check=True)


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_full_disk_or_read_only_workdir_is_one_error_and_loses_nothing(seg_root, small_disk,
                                                                         caplog):
  """Disk full while saving: one CheckpointWriteError naming the reason and the last good
  checkpoint, which stays loadable; the next start removes the unfinished temporary directory.
  A read-only workdir: one error before anything runs."""
  import subprocess
  work = small_disk / 'run'
  train_and_evaluate(config(seg_root), str(work), stop_at=3)  # ~2.6 MB a checkpoint
  good = flat(checkpoint.load_variables(work)[0])
  free = shutil.disk_usage(small_disk).free
  (small_disk / 'filler').write_bytes(b'\0' * (free - 256 * 1024))
  with pytest.raises(checkpoint.CheckpointWriteError,
                     match=r'cannot write checkpoint 6 in .*: No space left on device\. The last '
                           r'good checkpoint is .*checkpoints/3; free space'):
    train_and_evaluate(config(seg_root), str(work))
  assert not any('raised an exception' in r.getMessage() for r in caplog.records)
  assert checkpoint.latest_step_dir(work).name == '3'
  for k, v in flat(checkpoint.load_variables(work)[0]).items():
    np.testing.assert_array_equal(v, good[k])
  assert any(p.name.endswith('-tmp') for p in (work / 'checkpoints').iterdir())
  (small_disk / 'filler').unlink()
  train_and_evaluate(config(seg_root), str(work))  # resumes at 3, cleans up, finishes
  names = sorted(p.name for p in (work / 'checkpoints').iterdir())
  assert names[-1] == '6' and not any(n.endswith('-tmp') for n in names), names
  subprocess.run(['mount', '-o', 'remount,ro', str(small_disk)], check=True)
  with pytest.raises(UserError, match=r'workdir .*run: cannot write there \(Read-only file '
                                      r'system\)'):
    train_and_evaluate(config(seg_root), str(work))
  assert checkpoint.latest_step_dir(work).name == '6'


def test_lost_write_tasks_of_a_failed_save_are_not_reported(caplog):
  """asyncio reports orbax's abandoned write tasks when they are collected, at any moment (often
  at exit, after the one error line): the reports of failed writes are dropped, others kept."""
  import asyncio
  import gc

  async def fail(message):
    raise ValueError(message)

  loop = asyncio.new_event_loop()
  tasks = [loop.create_task(fail("Failed to write 9 bytes: No space left on device "
                                 "[os_error_code='28']")),
           loop.create_task(fail('another failure'))]
  loop.run_until_complete(asyncio.sleep(0.01))
  loop.close()
  del tasks
  gc.collect()
  reported = [str(r.exc_info[1]) for r in caplog.records if 'never retrieved' in r.getMessage()]
  assert reported == ['another failure']


@pytest.mark.parametrize('mode, kept', [('max', [2, 4]), ('min', [3, 4])])
def test_checkpoints_keep_the_newest_and_the_best(tmp_path, mode, kept):
  """keep=1, keep_best=1: the newest, and the best by the metric (highest, or lowest for errors
  such as NME); steps without a metric never count as best."""
  manager = checkpoint.make_manager(tmp_path, keep=1, keep_best=1, metric='m', mode=mode)
  it = iter(grain.MapDataset.range(10).to_iter_dataset())
  for step, m in ((1, 0.5), (2, 0.9), (3, 0.1), (4, None)):
    next(it)
    checkpoint.save(manager, step, {'w': np.full(3, step, np.float32)}, it,
                    ml_collections.ConfigDict({'a': 1}), None if m is None else {'m': m})
  manager.close()
  assert sorted(manager.all_steps()) == kept
  assert checkpoint.latest_step_dir(tmp_path).name == '4'
  with pytest.raises(ValueError, match="expected 'max' or 'min'"):
    checkpoint.make_manager(tmp_path / 'x', 1, 1, 'm', mode='lowest')


# pytest swaps in its own unraisable-exception hook around each test, so the one the fallback
# installs for the commands (dropping tensorstore's late callbacks after the failed read, see
# checkpoint._drop_closed_loop_callbacks) does not silence them here.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(seg_root, straight, tmp_path,
                                                                  capsys):
  """Resume and eval use the newest readable step, name the damaged one, and keep it."""
  workdir = tmp_path / 'run'
  shutil.copytree(straight, workdir)
  damaged = workdir / 'checkpoints' / '6'
  for f in (damaged / 'state').rglob('*'):
    if f.is_file() and 'ocdbt' in f.name:
      f.write_bytes(b'\0' * 8)  # as a full disk or a killed copy leaves it
  variables, where = checkpoint.load_variables(workdir)
  assert 'step 3' in where and str(damaged) in capsys.readouterr().out
  assert damaged.is_dir()  # evaluation reads; it moves nothing

  train_and_evaluate(config(seg_root), str(workdir))
  out = capsys.readouterr().out
  assert f'checkpoint {damaged} is unreadable' in out and 'resumed from' in out
  assert (workdir / 'checkpoints' / '6.unreadable').is_dir()  # kept for inspection
  assert_same_run(straight, workdir)  # steps 4-6 again, from step 3


def test_resuming_with_another_model_says_what_differs(seg_root, straight, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(straight, workdir)
  c = config(seg_root)
  c.model.overrides.width = 16
  with pytest.raises(checkpoint.CheckpointError) as e:
    train_and_evaluate(c, str(workdir))
  message = str(e.value)
  assert 'model.overrides.width=8 (this run: 16)' in message
  assert 'new --workdir' in message and 'init_from' in message
  assert len(message.splitlines()) <= 4
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['3', '6']


def test_workdir_errors_leave_nothing_behind(seg_root, tmp_path):
  (tmp_path / 'file').write_text('mine')
  with pytest.raises(UserError, match='not a directory'):
    train_and_evaluate(config(seg_root), str(tmp_path / 'file'))
  assert (tmp_path / 'file').read_text() == 'mine'
  c = config(seg_root)
  c.init_from = str(tmp_path / 'missing')  # fails after the workdir is made, before step 1
  with pytest.raises(checkpoint.CheckpointError, match='does not exist'):
    train_and_evaluate(c, str(tmp_path / 'new'))
  assert not (tmp_path / 'new').exists()


# --- The memory levers, in float64 ---------------------------------------------------------
# float64 keeps the float noise of a different reduction order (~1e-16, amplified where
# BatchNorm nearly cancels a weight gradient) far below any real difference.


def plain_step(seg_root, remat='none', accum_steps=1):
  """(state, jitted step, batch) of the trainer in float64, SGD at lr 1 without momentum or
  decay (so the update is minus the gradient)."""
  c = config(seg_root)
  c.dtype = 'float64'
  c.optimizer.update(dict(name='sgd', lr=1.0, momentum=0.0, weight_decay=0.0,
                          schedule='constant'))
  c.model.remat, c.grad_accum_steps = remat, accum_steps
  state, step = fresh_step(c)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8),
           'label': rng.integers(0, 19, (4, 64, 64)).astype(np.uint8)}
  return state, step, batch


def grads(state, new):
  return jax.tree_util.tree_map(lambda a, b: np.asarray(a) - np.asarray(b), state.params,
                                new.params)


def assert_close(a, b, tol=1e-9):
  x = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(a)])
  y = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(b)])
  assert x.dtype == np.float64 and np.linalg.norm(x - y) <= tol * np.linalg.norm(x)


def copy(state):
  return jax.tree_util.tree_map(jnp.array, state)  # the step donates its input


@pytest.mark.parametrize('policy', ['conv', pytest.param('full', marks=pytest.mark.slow)])
def test_remat_gives_the_plain_gradients(seg_root, x64, policy):
  state, plain, batch = plain_step(seg_root)
  _, remat, _ = plain_step(seg_root, remat=policy)
  new_plain, m1 = plain(copy(state), batch)
  new_remat, m2 = remat(copy(state), batch)
  assert float(m1['loss']) == pytest.approx(float(m2['loss']), rel=1e-12)
  assert_close(grads(state, new_plain), grads(state, new_remat))
  assert_close(new_plain.batch_stats, new_remat.batch_stats)


def test_gradient_accumulation_is_the_mean_over_micro_batches(seg_root, x64):
  """k=2: the gradient is the mean of the two micro-batches' gradients (rows 0, 2 and 1, 3);
  BN statistics update once per micro-batch, in order."""
  state, step, batch = plain_step(seg_root)
  _, accumulate, _ = plain_step(seg_root, accum_steps=2)
  accumulated, metrics = accumulate(copy(state), batch)
  halves = [{k: v[i::2] for k, v in batch.items()} for i in (0, 1)]
  (s0, m0), (s1, m1) = step(copy(state), halves[0]), step(copy(state), halves[1])
  mean = jax.tree_util.tree_map(lambda a, b: (a + b) / 2, grads(state, s0), grads(state, s1))
  assert_close(mean, grads(state, accumulated))
  assert float(metrics['loss']) == pytest.approx((float(m0['loss']) + float(m1['loss'])) / 2,
                                                 rel=1e-12)
  # Running statistics: micro-batch 0 from the initial ones, then micro-batch 1 from those.
  chained, _ = step(copy(state).replace(batch_stats=s0.batch_stats), halves[1])
  assert_close(chained.batch_stats, accumulated.batch_stats)


# --- The commands, end to end ----------------------------------------------------------------


@pytest.mark.slow
def test_commands_end_without_leaked_memory_or_orbax_warnings(seg_root, tmp_path):
  """train.py with worker processes, its resume, and eval.py on the workdir: no 'leaked
  shared_memory' report from the worker processes' buffers at exit, no orbax 'Metadata file
  does not exist' warning when a checkpoint is read."""
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  recipe_args = ['--config', 'configs/seg_cityscapes.py:runlocal',
                 f'--config.data.root={seg_root}', '--config.data.num_workers=2']
  workdir = str(tmp_path / 'run')
  for command in (['train.py', '--workdir', workdir], ['train.py', '--workdir', workdir],
                  ['eval.py', '--checkpoint', workdir]):
    done = subprocess.run([sys.executable, *command, *recipe_args], capture_output=True,
                          text=True, cwd=root, env=dict(os.environ, PYTHONPATH=str(root)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'leaked shared_memory' not in done.stderr, done.stderr[-2000:]
    assert 'Metadata file does not exist' not in done.stderr, done.stderr[-2000:]
  assert 'mIoU' in done.stdout


@pytest.mark.slow
def test_train_py_on_a_full_disk_prints_one_line(seg_root, small_disk):
  """The command's whole stderr is the one error line (no orbax or tensorstore tracebacks), and
  the last good checkpoint stays."""
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  work = small_disk / 'run'
  command = [sys.executable, 'train.py', '--config', 'configs/seg_cityscapes.py:runlocal',
             f'--config.data.root={seg_root}', '--workdir', str(work)]
  env = dict(os.environ, PYTHONPATH=str(root))
  done = subprocess.run(command + ['--config.total_steps=3'], capture_output=True, text=True,
                        cwd=root, env=env)
  assert done.returncode == 0, done.stderr[-2000:]
  free = shutil.disk_usage(small_disk).free
  (small_disk / 'filler').write_bytes(b'\0' * (free - 256 * 1024))
  done = subprocess.run(command, capture_output=True, text=True, cwd=root, env=env)
  assert done.returncode == 2
  assert done.stderr.strip().splitlines() == [
      f'error: cannot write checkpoint 6 in {work}/checkpoints: No space left on device. The '
      f'last good checkpoint is {work}/checkpoints/3; free space (or make the workdir writable) '
      'and run the same command to resume']


@pytest.mark.slow
def test_a_restart_compiles_nothing_it_compiled_before(seg_root, tmp_path):
  """config.compile_cache='auto' (the default) keeps compiled programs in $HRNET_JAX_CACHE/xla:
  a second run of the same recipe finds every program there and adds none; 'off' writes none."""
  import pathlib
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[1]
  env = {k: v for k, v in os.environ.items() if k != 'JAX_COMPILATION_CACHE_DIR'}
  env.update(PYTHONPATH=str(root), HRNET_JAX_CACHE=str(tmp_path / 'cache'))
  cache = tmp_path / 'cache' / 'xla'

  def train(workdir, *extra):
    done = subprocess.run([sys.executable, 'train.py', '--workdir', str(tmp_path / workdir),
                           '--config', 'configs/seg_cityscapes.py:runlocal',
                           f'--config.data.root={seg_root}', *extra],
                          capture_output=True, text=True, cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []

  assert train('off', '--config.compile_cache=off') == []
  first = train('a')
  assert len(first) >= 2  # at least the train and eval steps
  assert train('b') == first


def test_data_benchmark_times_the_input_alone_and_writes_no_checkpoint(seg_root, tmp_path):
  c = config(seg_root)
  c.data.benchmark = 3
  out = train_and_evaluate(c, str(tmp_path))
  assert out['input_img_per_s'] > 0
  assert out['input_s_per_batch'] == pytest.approx(c.batch_size / out['input_img_per_s'])
  assert not (tmp_path / 'checkpoints').exists()
