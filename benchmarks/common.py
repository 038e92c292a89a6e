"""Shared by the figure scripts: the real train step of a config, timed on a given batch."""

import functools
import time

import jax
import numpy as np


def step_time(config, batch: dict, steps: int) -> tuple[float, float]:
  """(compile s, s/step) of the trainer's own step function for `config` on `batch`."""
  from hrnet_jax.tasks import get_task
  from hrnet_jax.train import optim
  from hrnet_jax.train.loop import TrainState, init_variables, train_step
  task = get_task(config)
  model = task.create_model()
  schedule = optim.make_schedule(config.optimizer, 1000)
  tx = optim.make_optimizer(config.optimizer, schedule)
  v = init_variables(model, 0)
  state = TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=v['params'],
                     batch_stats=v['batch_stats'], opt_state=tx.init(v['params']))
  step = jax.jit(functools.partial(train_step, model=model, tx=tx, loss_fn=task.loss,
                                   schedule=schedule, mean=tuple(config.data.mean),
                                   std=tuple(config.data.std), dtype=jax.numpy.float32,
                                   rng=jax.random.key(0)), donate_argnums=(0,))
  t = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  t = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  return compile_s, (time.perf_counter() - t) / steps


def header() -> str:
  return f'jax {jax.__version__} on {jax.devices()[0].device_kind}, {len(jax.devices())} device(s)'


def random_images(rng: np.random.Generator, shape: tuple) -> np.ndarray:
  return rng.integers(0, 256, shape, dtype=np.uint8)
