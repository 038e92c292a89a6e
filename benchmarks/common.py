"""Shared by the figure scripts: the real train step of a config, timed on a given batch."""

import functools
import time

import jax
import numpy as np


def build_step(config, accum_steps: int = 1, task=None):
  """(jitted train step with donated state, fresh state) exactly as the trainer builds them, in
  `config.dtype` with `config.model.remat`. `task` (create_model, loss) replaces the config's
  task, for models without one (classification in hrnet_jax.bench)."""
  from hrnet_jax.tasks import get_task
  from hrnet_jax.train import optim
  from hrnet_jax.train.loop import compute_dtype, init_variables, new_state, train_step
  task = task or get_task(config)
  dtype = compute_dtype(config)
  model = task.create_model(dtype)
  schedule = optim.make_schedule(config.optimizer, 1000)
  tx = optim.make_optimizer(config.optimizer, schedule)
  state = new_state(init_variables(model, 0), tx)
  step = jax.jit(functools.partial(train_step, model=model, tx=tx, loss_fn=task.loss,
                                   schedule=schedule, mean=tuple(config.data.mean),
                                   std=tuple(config.data.std), dtype=dtype,
                                   rng=jax.random.key(0), accum_steps=accum_steps),
                 donate_argnums=(0,))
  return step, state


def timed_steps(step, state, batch: dict, steps: int) -> float:
  """Seconds per step over `steps` calls (after the caller's first, compiling one)."""
  t = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  return (time.perf_counter() - t) / steps


def step_time(config, batch: dict, steps: int) -> tuple[float, float]:
  """(compile s, s/step) of the trainer's own step function for `config` on `batch`."""
  step, state = build_step(config)
  t = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t
  return compile_s, timed_steps(step, state, batch, steps)


def header() -> str:
  return f'jax {jax.__version__} on {jax.devices()[0].device_kind}, {len(jax.devices())} device(s)'


def random_images(rng: np.random.Generator, shape: tuple) -> np.ndarray:
  return rng.integers(0, 256, shape, dtype=np.uint8)


def transform_rate(source, transform, n: int, random: bool = True) -> float:
  """Samples/s of one worker: read + `transform` (with an rng when `random`), after a warm-up."""
  g = np.random.default_rng(0)
  run = (lambda i: transform(source[i % len(source)], g)) if random else (
      lambda i: transform(source[i % len(source)]))
  run(0)
  start = time.perf_counter()
  for i in range(n):
    run(i)
  return n / (time.perf_counter() - start)
