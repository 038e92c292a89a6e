"""The trainer shared by every task, in three pieces:

- `create_train_state(config, task, mesh, tx, ...)`: the state to train from (fresh, with
  `init_from`'s backbone, or resumed from the workdir), on its shardings;
- `make_train_step(config, task, mesh, tx, schedule, shardings)`: the jitted, sharded step;
- `train_and_evaluate(config, workdir)`: composes them with the data, evaluation, checkpoints
  and logs; it reads top to bottom.

Benchmarks and tests build their steps from the first two, so they run the trainer's own step.
"""

from __future__ import annotations

import functools
import math
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hrnet_jax.data import pipeline, transforms
from hrnet_jax.errors import ConfigError, Interrupted, UserError
from hrnet_jax.tasks import get_task
from hrnet_jax.tasks.base import Task
from hrnet_jax.train import checkpoint, optim, parallel
from hrnet_jax.train import workdir as workdir_lib
from hrnet_jax.train.device_feed import DeviceFeed
from hrnet_jax.train.evaluator import evaluate, make_eval_step
from hrnet_jax.train.log import Logger
from hrnet_jax.train.precision import compute_dtype


class NonFiniteLossError(UserError, RuntimeError):
  """Training produced a NaN/Inf loss or parameters; the last good checkpoint is left in
  place."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def micro_batches(x: jax.Array, k: int) -> jax.Array:
  """(B, ...) -> (k, B/k, ...): micro-batch i holds rows i, i+k, i+2k, ..., so each keeps an even
  share of every device's rows (no data moves between devices)."""
  return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def train_step(state: TrainState, batch: dict, *, model: Any, tx: optax.GradientTransformation,
               loss_fn: Any, schedule: Any, mean: tuple, std: tuple, dtype: Any,
               rng: jax.Array, accum_steps: int = 1,
               inputs_fn: Any = None, augment_fn: Any = None) -> tuple[TrainState, dict]:
  """One optimizer step on a global batch. Pure: the dropout key is derived from the step.

  The model's float outputs reach `loss_fn` in at least float32. With `accum_steps` k > 1 the batch
  runs as k micro-batches in sequence and the update uses the mean of their gradients.
  BatchNorm then normalizes with each micro-batch's statistics (as k smaller batches would) and
  updates its running statistics k times. `inputs_fn(batch)`: what the model takes besides the
  images (Task.model_inputs: a two-stage detector's ground truth); random streams 'dropout' and
  'sample' (a detector's training samples) come from the step's key. `augment_fn(images,
  batch)` (Task.augment) runs on the images before normalization."""
  loss_dtype = jnp.promote_types(dtype, jnp.float32)

  def compute_loss(params, batch_stats, micro, key):
    images = augment_fn(micro['image'], micro) if augment_fn else micro['image']
    images = transforms.normalize(images, mean, std, dtype)
    inputs = inputs_fn(micro) if inputs_fn else {}
    rngs = {'dropout': key, 'sample': jax.random.fold_in(key, 1)}
    outputs, updates = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                   train=True, mutable=['batch_stats'], rngs=rngs, **inputs)
    outputs = jax.tree_util.tree_map(  # float outputs; integer and boolean ones (targets) stay
        lambda x: x.astype(loss_dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, outputs)
    loss, extra = loss_fn(outputs, micro)
    return loss, (updates['batch_stats'], extra)

  grad_fn = jax.value_and_grad(compute_loss, has_aux=True)
  key = jax.random.fold_in(rng, state.step)
  if accum_steps == 1:
    (loss, (batch_stats, extra)), grads = grad_fn(state.params, state.batch_stats, batch, key)
  else:
    def body(carry, xs):
      grad_sum, loss_sum, stats = carry
      micro, i = xs
      (loss, (stats, extra)), grads = grad_fn(state.params, stats, micro,
                                              jax.random.fold_in(key, i))
      return (jax.tree_util.tree_map(jnp.add, grad_sum, grads), loss_sum + loss, stats), extra

    zeros = jax.tree_util.tree_map(jnp.zeros_like, state.params)
    split = jax.tree_util.tree_map(lambda x: micro_batches(x, accum_steps), batch)
    (grads, loss, batch_stats), extras = jax.lax.scan(
        body, (zeros, jnp.zeros((), loss_dtype), state.batch_stats),
        (split, jnp.arange(accum_steps)))
    grads = jax.tree_util.tree_map(lambda g: g / accum_steps, grads)
    loss = loss / accum_steps
    extra = jax.tree_util.tree_map(lambda v: jnp.mean(v, axis=0), extras)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  new_state = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state)
  metrics = {'loss': loss, 'lr': schedule(state.step), **extra}
  return new_state, metrics


def init_variables(model: Any, seed: int) -> dict:
  """Fresh variables (their shapes do not depend on the image size)."""
  return model.init(jax.random.key(seed), jnp.zeros((1, 64, 64, 3), jnp.float32), train=False)


def new_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params']))


def shardings_of(tree: Any) -> Any:
  """The sharding of every array of a pytree of jax arrays."""
  return jax.tree_util.tree_map(lambda x: x.sharding, tree)


def create_train_state(config: Any, task: Task, mesh: jax.sharding.Mesh,
                       tx: optax.GradientTransformation, *, manager: Any = None,
                       data_iter: Any = None, log: Callable[[str], None] = print
                       ) -> tuple[TrainState, int]:
  """(state, start step): the state to train from, placed on its shardings over `mesh`
  (replicated, or sharded with `config.mesh.shard_params`).

  Resumed from the newest readable checkpoint of `manager` when there is one (the data
  iterator restored in place, whatever device count wrote it); otherwise fresh from
  `config.seed`, with the backbone of `config.init_from` when set."""
  model = task.create_model(compute_dtype(config))
  init = functools.partial(init_variables, model, config.seed)
  new = functools.partial(new_state, tx=tx)
  abstract = jax.eval_shape(lambda: new(init()))
  shard = bool(config.mesh.get('shard_params', False))
  sharding = parallel.state_shardings(abstract, mesh, shard)
  if shard:
    log(parallel.describe_sharding(abstract, sharding))
  if manager is not None:
    target = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, sharding)
    restored = checkpoint.restore_latest(manager, target, data_iter, config, log=log)
    if restored is not None:
      state, step = restored
      log(f'resumed from {manager.directory / str(step)} at step {step}')
      return state, step
  rep = parallel.replicated(mesh)
  variables = jax.jit(init, out_shardings=rep)()
  if config.get('init_from'):
    loaded, where = checkpoint.load_variables(config.init_from, log=log)
    variables, what = checkpoint.merge_subtree(jax.device_get(variables), loaded, 'backbone')
    log(f'init_from {where}: {what}')
  return jax.jit(new, out_shardings=sharding)(variables), 0


def make_train_step(config: Any, task: Task, mesh: jax.sharding.Mesh,
                    tx: optax.GradientTransformation, schedule: optax.Schedule,
                    state_sharding: Any) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """jit(state, global batch) -> (new state, replicated metrics), the batch sharded over 'data',
  the state donated and kept on `state_sharding`."""
  dtype = compute_dtype(config)
  step = functools.partial(
      train_step, model=task.create_model(dtype), tx=tx, loss_fn=task.loss, schedule=schedule,
      mean=tuple(config.data.mean), std=tuple(config.data.std), dtype=dtype,
      rng=jax.random.key(config.seed + 1), accum_steps=int(config.get('grad_accum_steps', 1)),
      inputs_fn=task.model_inputs, augment_fn=task.augment)
  jitted = jax.jit(step, in_shardings=(state_sharding, parallel.batch_sharding(mesh)),
                   out_shardings=(state_sharding, parallel.replicated(mesh)), donate_argnums=(0,))
  return parallel.CompiledTogether(jitted, 'train step')


class StopSignals:
  """SIGTERM (a preempted VM, `scancel`, `kill`) asks the loop to save and stop at the end of the
  current step; SIGINT (Ctrl-C) to stop there without saving, naming the last checkpoint. Both
  act between steps, never inside the libraries' code (an exception raised in the middle of a
  data worker's or a checkpoint writer's bookkeeping can leave them unable to close). A second
  Ctrl-C interrupts at once. With several processes they agree every `check_every` steps, so
  all of them stop at the same step (orbax saves are collective)."""

  def __init__(self, check_every: int = 10):
    self.preempted = self.interrupted = False
    self.check_every = max(1, check_every)
    self._previous = {}
    if threading.current_thread() is threading.main_thread():
      self._previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_sigterm),
                        signal.SIGINT: signal.signal(signal.SIGINT, self._on_sigint)}

  def _on_sigterm(self, signum, frame) -> None:
    self.preempted = True

  def _on_sigint(self, signum, frame) -> None:
    self.interrupted = True
    signal.signal(signal.SIGINT, self._previous[signal.SIGINT])  # the next one: at once
    print('Ctrl-C: stopping after this step (Ctrl-C again to stop at once)', file=sys.stderr,
          flush=True)

  def _agreed(self, flag: bool, step: int) -> bool:
    if jax.process_count() == 1:
      return flag
    if step % self.check_every:
      return False
    from jax.experimental import multihost_utils
    return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))

  def should_save_and_stop(self, step: int) -> bool:
    return self._agreed(self.preempted, step)

  def should_stop(self, step: int) -> bool:
    return self._agreed(self.interrupted, step)

  def close(self) -> None:
    for signum, previous in self._previous.items():
      if signal.getsignal(signum) in (self._on_sigterm, self._on_sigint):
        signal.signal(signum, previous)


class LossCheck:
  """The NaN/Inf guard. Each step's loss is read one step late (the host never waits for the
  step in flight), and every pending one before a checkpoint is written; the state itself is
  checked before it is saved (a finite loss is computed before the update, which may still
  overflow), so nothing non-finite is ever saved."""

  def __init__(self, manager: Any):
    self.manager = manager
    self.pending: list[tuple[int, dict]] = []
    self.losses: list[float] = []  # checked since the last `take`

  def push(self, step: int, metrics: dict) -> None:
    """Adds this step's metrics and checks the ones before it."""
    self.flush()
    self.pending.append((step, metrics))

  def flush(self) -> None:
    """Checks every pending loss (waits for the step in flight)."""
    for step, metrics in self.pending:
      loss = float(metrics['loss'])
      if not math.isfinite(loss):
        self.stop(f'loss is {loss} at step {step}')
      self.losses.append(loss)
    self.pending = []

  def check_state(self, step: int, state: Any) -> None:
    """Before a save: every pending loss, and every value of the state, finite."""
    self.flush()
    if not parallel.all_finite(state):
      self.stop(f'the parameters or optimizer state became non-finite at step {step} (the '
                'loss before that update was finite); they were not saved')

  def stop(self, what: str) -> None:
    with checkpoint.writing(self.manager):
      self.manager.wait_until_finished()
    kept = checkpoint.last_finished(self.manager)
    raise NonFiniteLossError(
        f'{what}: training stopped. The last good checkpoint ({kept}) is kept; lower the '
        'learning rate, check the data, or try float32.')

  def take(self) -> list[float]:
    losses, self.losses = self.losses, []
    return losses


def total_steps_of(config: Any, train_size: int) -> tuple[int, int]:
  """(total steps, steps per epoch): `config.total_steps` or `num_epochs` over the train split.
  A batch larger than the split, or a length that is not positive, is a ConfigError."""
  if config.batch_size > train_size:
    raise ConfigError(f'config.batch_size={config.batch_size} is larger than the training split '
                      f'({train_size} samples): lower it, or point at more data')
  steps_per_epoch = max(1, train_size // config.batch_size)
  if config.get('total_steps') is not None and config.total_steps != 0:
    if config.total_steps < 0:
      raise ConfigError(f'config.total_steps={config.total_steps}: expected a positive number '
                        'of steps (or 0 to train config.num_epochs epochs)')
    return int(config.total_steps), steps_per_epoch
  if not config.get('num_epochs', 0) > 0:
    raise ConfigError(f'config.num_epochs={config.get("num_epochs")}: expected a positive number '
                      'of epochs (or set config.total_steps)')
  return int(math.ceil(config.num_epochs * steps_per_epoch)), steps_per_epoch


def where_stopped(manager: Any, step: int) -> str:
  """'stopped at step N; the last checkpoint is ...': the newest finished one on disk."""
  kept = checkpoint.last_finished(manager)
  if kept != 'none':
    kept += '; run the same command to resume'
  return f'stopped at step {step}; the last checkpoint is {kept}'


def time_input(feed: DeviceFeed, steps: int, batch_size: int, num_workers: int,
               log: Callable[[str], None] = print) -> dict[str, float]:
  """The input pipeline alone through the training loop's device feed, no model: the rate the
  devices would be offered. Start-up and what the workers buffered meanwhile are not timed."""
  for _ in range(3 + 2 * num_workers):
    jax.block_until_ready(next(feed))
  start = time.perf_counter()
  for _ in range(steps):
    jax.block_until_ready(next(feed))
  seconds = time.perf_counter() - start
  rate = steps * batch_size / seconds
  log(f'input pipeline alone: {steps} batches of {batch_size} in {seconds:.2f} s: '
      f'{rate:.1f} img/s, {seconds / steps:.3f} s per batch ({num_workers} workers)')
  return {'input_img_per_s': rate, 'input_s_per_batch': seconds / steps}


def train_and_evaluate(config: Any, workdir: str, stop_at: int | None = None,
                       hooks: Sequence[Callable[[int], None]] = ()) -> dict[str, Any]:
  """Trains (resuming from the workdir's newest checkpoint), evaluates periodically, returns the
  last evaluation's results (`config.data.benchmark` > 0: times that many batches of the input
  alone instead, `time_input`, and returns its rate). `stop_at` ends this run early at that
  step with a checkpoint, as a preemption would; each of `hooks` is called with the step number
  after every step."""
  # --- Setup -------------------------------------------------------------------------------------
  existed = workdir_lib.check_workdir(workdir)
  task = get_task(config)
  mesh = parallel.make_mesh(config.get('mesh'))
  accum_steps = int(config.get('grad_accum_steps', 1))
  if config.batch_size < 1 or accum_steps < 1:
    raise ConfigError(f'config.batch_size={config.batch_size}, config.grad_accum_steps='
                      f'{accum_steps}: expected positive numbers')
  if config.batch_size % (mesh.devices.size * accum_steps):
    raise ConfigError(f'config.batch_size={config.batch_size} must split into '
                      f'grad_accum_steps={accum_steps} micro-batches over {mesh.devices.size} '
                      'devices')
  local_batch = parallel.local_batch_size(config.batch_size, mesh)
  train_source = task.source(config.data.train_split)
  eval_source = task.source(config.data.eval_split)  # listed once, not at every evaluation
  total_steps, steps_per_epoch = total_steps_of(config, len(train_source))
  schedule = optim.make_schedule(config.optimizer, total_steps, steps_per_epoch)
  tx = optim.make_optimizer(config.optimizer, schedule)
  end = total_steps if stop_at is None else min(stop_at, total_steps)
  c = config.checkpoint
  logger = data_iter = manager = stops = lock = None
  step = start = None
  try:
    lock = workdir_lib.lock_workdir(workdir, jax.process_index())
    logger = Logger(workdir, total_steps)
    logger.info(f'{config.model.arch} on {config.data.name}: {train_source.describe()} for '
                f'training, batch {config.batch_size} on {mesh.devices.size} device(s), '
                f'{total_steps} steps ({steps_per_epoch} per epoch), compute '
                f'{jnp.dtype(compute_dtype(config)).name}')
    data_iter = pipeline.train_iterator(
        train_source, task.train_transform(), batch_size=local_batch, seed=config.seed,
        num_workers=config.data.num_workers, process_index=jax.process_index(),
        process_count=jax.process_count(), groups=task.batch_groups(train_source, train=True))
    feed = DeviceFeed(data_iter, mesh, config.data.get('device_prefetch', 2))
    if config.data.get('benchmark', 0) > 0:
      return time_input(feed, int(config.data.benchmark), config.batch_size,
                        config.data.num_workers, logger.info)
    manager = checkpoint.make_manager(workdir, c.keep, c.keep_best, task.metric_name,
                                      async_save=c.async_save, mode=task.metric_mode)

    # --- State: resumed, or fresh (with init_from) ----------------------------------------------
    state, start = create_train_state(config, task, mesh, tx, manager=manager,
                                      data_iter=feed, log=logger.info)

    # --- Compiled steps -------------------------------------------------------------------------
    sharding = shardings_of(state)
    step_fn = make_train_step(config, task, mesh, tx, schedule, sharding)
    eval_step = make_eval_step(config, task, mesh, {'params': sharding.params,
                                                    'batch_stats': sharding.batch_stats})

    def run_eval(final: bool) -> dict[str, Any]:
      variables = {'params': state.params, 'batch_stats': state.batch_stats}
      metric = evaluate(config, task, mesh, variables, source=eval_source, eval_step=eval_step)
      logger.info(metric.report() if final else f'eval at step {step}: {metric.summary()}')
      return metric.result()

    # --- The loop -------------------------------------------------------------------------------
    results: dict[str, Any] = {}
    losses = LossCheck(manager)
    last_time, last_step = time.time(), start
    step = start
    if start >= end:
      logger.info(f'nothing to do: the newest checkpoint is at step {start} of {end}')
    stops = StopSignals(c.preemption_check_every)
    while step < end:
      # (No name holds the batch: its host memory is released as soon as the step has used it.)
      state, metrics = step_fn(state, next(feed))
      step += 1
      losses.push(step, metrics)
      for hook in hooks:
        hook(step)

      if step % config.log_every_steps == 0 or step == end:
        losses.flush()
        now = time.time()
        step_time = (now - last_time) / max(1, step - last_step)
        figures = {'loss': float(np.mean(losses.take())), 'lr': float(metrics['lr']),
                   'img/s': config.batch_size / step_time, 's/step': step_time,
                   'input_wait': 100 * feed.take_waited() / max(now - last_time, 1e-9)}
        figures.update({k: float(v) for k, v in metrics.items() if k not in ('loss', 'lr')})
        logger.progress(step, figures, first_step=start)
        logger.scalars(step, {f'train/{k}': v for k, v in figures.items()})
        last_time, last_step = now, step

      every = config.eval.every_steps  # <= 0: no evaluation while training (use eval.py)
      is_eval = every > 0 and (step % every == 0 or step == total_steps)
      is_save = step % c.every_steps == 0 or step == end or is_eval
      if is_eval or is_save:
        losses.flush()
        scores = None
        if is_eval:
          results = run_eval(final=step == total_steps)
          scores = {task.metric_name: results[task.metric_name]}
          logger.scalars(step, {f'eval/{k}': v for k, v in results.items() if np.ndim(v) == 0})
        losses.check_state(step, state)
        checkpoint.save(manager, step, state, feed, config, scores)

      if stops.should_stop(step):
        losses.flush()
        with checkpoint.writing(manager):
          manager.wait_until_finished()  # a save in flight is kept
        raise Interrupted(where_stopped(manager, step))
      if stops.should_save_and_stop(step):
        losses.flush()
        if not (is_eval or is_save):
          losses.check_state(step, state)
          checkpoint.save(manager, step, state, feed, config)
        logger.info(f'SIGTERM: saved the checkpoint of step {step}; stopping. Run the same '
                    'command to resume.')
        results = {'preempted_at': step}
        break
    return results
  except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop: at once
    if manager is None or step is None:
      raise
    raise Interrupted(where_stopped(manager, step)) from None
  finally:
    if stops is not None:
      stops.close()
    try:
      if manager is not None:
        checkpoint.close(manager, manager.latest_step())  # waits for the last one to be written
    finally:  # also when that last write failed
      if logger is not None:
        logger.close()
      if data_iter is not None:
        pipeline.close_iterator(data_iter)  # the worker processes stop now
      if lock is not None:
        lock.release()
      if not existed and (step is None or step == start):
        shutil.rmtree(workdir, ignore_errors=True)  # this run made it and trained no step
