"""`train_and_evaluate(config, workdir)`: the training loop shared by every task.

Read top to bottom: setup, state (fresh, init_from, or resumed), data, the loop, the end.
"""

from __future__ import annotations

import functools
import math
import signal
import threading
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from hrnet_jax.data import pipeline, transforms
from hrnet_jax.tasks import get_task
from hrnet_jax.train import checkpoint, optim, parallel
from hrnet_jax.train.evaluate import evaluate, make_eval_step
from hrnet_jax.train.log import Logger

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss; the last good checkpoint is left in place."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def compute_dtype(config: Any):
  name = config.get('dtype', 'float32')
  if name not in DTYPES:
    raise ValueError(f'config.dtype: expected one of {sorted(DTYPES)}, got {name!r}')
  return DTYPES[name]


def micro_batches(x: jax.Array, k: int) -> jax.Array:
  """(B, ...) -> (k, B/k, ...): micro-batch i holds rows i, i+k, i+2k, ..., so each keeps an even
  share of every device's rows (no data moves between devices)."""
  return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)


def train_step(state: TrainState, batch: dict, *, model: Any, tx: optax.GradientTransformation,
               loss_fn: Any, schedule: Any, mean: tuple, std: tuple, dtype: Any,
               rng: jax.Array, accum_steps: int = 1) -> tuple[TrainState, dict]:
  """One optimizer step on a global batch. Pure: the dropout key is derived from the step.

  With `accum_steps` k > 1 the batch runs as k micro-batches in sequence and the update uses
  the mean of their gradients. BatchNorm then normalizes with each micro-batch's statistics
  (as k smaller batches would) and updates its running statistics k times."""

  def compute_loss(params, batch_stats, micro, key):
    images = transforms.normalize(micro['image'], mean, std, dtype)
    outputs, updates = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                   train=True, mutable=['batch_stats'], rngs={'dropout': key})
    outputs = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), outputs)
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
        body, (zeros, jnp.zeros((), jnp.float32), state.batch_stats),
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
  """Fresh variables (shapes do not depend on the image size)."""
  return model.init(jax.random.key(seed), jnp.zeros((1, 64, 64, 3), jnp.float32), train=False)


def new_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables['params'],
                    batch_stats=variables['batch_stats'], opt_state=tx.init(variables['params']))


class Preemption:
  """SIGTERM (a preempted VM, `scancel`, `kill`) asks the loop to save and stop at the end of the
  current step. With several processes they agree every `check_every` steps, so all of them save
  the same step (orbax saves are collective)."""

  def __init__(self, check_every: int = 10):
    self.requested = False
    self.check_every = max(1, check_every)
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame) -> None:
    self.requested = True

  def should_stop(self, step: int) -> bool:
    if jax.process_count() == 1:
      return self.requested
    if step % self.check_every:
      return False
    from jax.experimental import multihost_utils
    return bool(np.max(multihost_utils.process_allgather(np.int32(self.requested))))

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def total_steps_of(config: Any, train_size: int) -> tuple[int, int]:
  """(total steps, steps per epoch): `config.total_steps` or `num_epochs` over the train split."""
  steps_per_epoch = max(1, train_size // config.batch_size)
  if config.get('total_steps'):
    return int(config.total_steps), steps_per_epoch
  return int(math.ceil(config.num_epochs * steps_per_epoch)), steps_per_epoch


def train_and_evaluate(config: Any, workdir: str, stop_at: int | None = None) -> dict[str, Any]:
  """Trains (resuming from the workdir's newest checkpoint), evaluates periodically, returns the
  last evaluation's results. `stop_at` ends this run early at that step with a checkpoint, as a
  preemption would."""
  # --- Setup -------------------------------------------------------------------------------------
  task = get_task(config)
  dtype = compute_dtype(config)
  mesh = parallel.make_mesh(config.get('mesh'))
  local_batch = parallel.local_batch_size(config.batch_size, mesh)
  accum_steps = int(config.get('grad_accum_steps', 1) or 1)
  if config.batch_size % (mesh.devices.size * accum_steps):
    raise ValueError(f'config.batch_size={config.batch_size} must split into '
                     f'grad_accum_steps={accum_steps} micro-batches over {mesh.devices.size} '
                     'devices')
  train_source = task.source(config.data.train_split)
  total_steps, steps_per_epoch = total_steps_of(config, len(train_source))
  schedule = optim.make_schedule(config.optimizer, total_steps, steps_per_epoch)
  tx = optim.make_optimizer(config.optimizer, schedule)
  model = task.create_model(dtype)
  logger = Logger(workdir, total_steps)
  described = train_source.describe() if hasattr(train_source, 'describe') else len(train_source)
  logger.info(f'{config.model.arch} on {config.data.name}: {described} for training, '
              f'batch {config.batch_size} on {mesh.devices.size} device(s), {total_steps} steps '
              f'({steps_per_epoch} per epoch), compute {jnp.dtype(dtype).name}')

  # --- State: fresh, init_from, or resumed ------------------------------------------------------
  rep = parallel.replicated(mesh)
  variables = jax.jit(functools.partial(init_variables, model, config.seed), out_shardings=rep)()
  if config.get('init_from'):
    loaded, where = checkpoint.load_variables(config.init_from)
    variables, what = checkpoint.merge_subtree(jax.device_get(variables), loaded, 'backbone')
    logger.info(f'init_from {where}: {what}')
  abstract = jax.eval_shape(functools.partial(new_state, tx=tx), variables)
  state_sharding = parallel.state_shardings(abstract, mesh, config.mesh.get('shard_params', False))
  state = jax.jit(functools.partial(new_state, tx=tx), out_shardings=state_sharding)(variables)
  del variables
  if config.mesh.get('shard_params', False):
    logger.info(parallel.describe_sharding(abstract, state_sharding))

  data_iter = pipeline.train_iterator(
      train_source, task.train_transform(), batch_size=local_batch, seed=config.seed,
      num_workers=config.data.num_workers, process_index=jax.process_index(),
      process_count=jax.process_count())

  c = config.checkpoint
  manager = checkpoint.make_manager(workdir, c.keep, c.keep_best, task.metric_name,
                                    async_save=c.get('async_save', True),
                                    mode=getattr(task, 'metric_mode', 'max'))
  start = manager.latest_step()
  if start is not None:  # onto this run's shardings, whatever the device count that saved it
    abstract = jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_sharding)
    state = checkpoint.restore(manager, start, abstract, data_iter)
    logger.info(f'resumed from {manager.directory / str(start)} at step {start}')
  start = int(start or 0)

  # --- Compiled steps ----------------------------------------------------------------------------
  step_fn = jax.jit(
      functools.partial(train_step, model=model, tx=tx, loss_fn=task.loss, schedule=schedule,
                        mean=tuple(config.data.mean), std=tuple(config.data.std), dtype=dtype,
                        rng=jax.random.key(config.seed + 1), accum_steps=accum_steps),
      in_shardings=(state_sharding, parallel.batch_sharding(mesh)),
      out_shardings=(state_sharding, rep), donate_argnums=(0,))
  variables_sharding = {'params': state_sharding.params,
                        'batch_stats': state_sharding.batch_stats}
  eval_step = make_eval_step(task, model, mesh, config, dtype, variables_sharding)
  eval_source = task.source(config.data.eval_split)  # listed once, not at every evaluation

  def run_eval(final: bool) -> dict[str, Any]:
    metric = evaluate(task, model, {'params': state.params, 'batch_stats': state.batch_stats},
                      mesh, config, dtype=dtype, eval_step=eval_step, source=eval_source)
    logger.info(metric.report() if final else f'eval at step {step}: {metric.summary()}')
    return metric.result()

  def save(step: int, metrics: dict | None = None) -> None:
    checkpoint.save(manager, step, state, data_iter, config, metrics)

  # --- The loop ----------------------------------------------------------------------------------
  end = total_steps if stop_at is None else min(stop_at, total_steps)
  results: dict[str, Any] = {}
  window: list[float] = []
  previous = None  # (step, metrics) of the step before: checked one step late, to keep overlap
  last_time, last_step = time.time(), start

  def check(step: int, metrics: dict) -> float:
    loss = float(metrics['loss'])
    if not math.isfinite(loss):
      manager.wait_until_finished()
      latest = manager.latest_step()
      raise NonFiniteLossError(
          f'loss is {loss} at step {step}: training stopped. The last good checkpoint '
          f'({"none" if latest is None else manager.directory / str(latest)}) is kept; lower '
          f'the learning rate, check the data, or try float32.')
    return loss

  step = start
  if start >= end:
    logger.info(f'nothing to do: the newest checkpoint is at step {start} of {end}')
  preemption = Preemption(c.get('preemption_check_every', 10))
  try:
    while step < end:
      batch = parallel.to_global(next(data_iter), mesh)
      state, metrics = step_fn(state, batch)
      if previous is not None:
        window.append(check(*previous))
      step += 1
      previous = (step, metrics)

      if step % config.log_every_steps == 0 or step == end:
        window.append(check(*previous))
        previous = None
        now = time.time()
        step_time = (now - last_time) / max(1, step - last_step)
        figures = {'loss': float(np.mean(window)), 'lr': float(metrics['lr']),
                   'img/s': config.batch_size / step_time, 's/step': step_time}
        figures.update({k: float(v) for k, v in metrics.items() if k not in ('loss', 'lr')})
        logger.progress(step, figures, first_step=start)
        logger.scalars(step, {f'train/{k}': v for k, v in figures.items()})
        window, last_time, last_step = [], now, step

      every = config.eval.every_steps  # <= 0: no evaluation while training (use eval.py)
      is_eval = every > 0 and (step % every == 0 or step == total_steps)
      is_save = step % c.every_steps == 0 or step == end or is_eval
      if is_eval or is_save:
        if previous is not None:
          check(*previous)
        metrics_now = None
        if is_eval:
          results = run_eval(final=step == total_steps)
          metrics_now = {task.metric_name: results[task.metric_name]}
          logger.scalars(step, {f'eval/{k}': v for k, v in results.items() if np.ndim(v) == 0})
        save(step, metrics_now)

      if preemption.should_stop(step):
        if previous is not None:
          check(*previous)
        if not (is_eval or is_save):
          save(step)
        logger.info(f'SIGTERM: saved the checkpoint of step {step}; stopping. Run the same '
                    'command to resume.')
        results = {'preempted_at': step}
        break
  finally:
    preemption.close()
    manager.wait_until_finished()
    logger.close()
    if hasattr(data_iter, 'close'):
      data_iter.close()  # stops the worker processes now rather than at interpreter exit
  return results
