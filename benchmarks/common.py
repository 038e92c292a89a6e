"""Shared by the benchmark scripts: the trainer's own train step of a config, timed on a batch."""

import time

import jax
import numpy as np


def build_step(config, task=None):
  """(jitted train step with donated state, fresh state) from the trainer's own seams
  (create_train_state, make_train_step) on all devices, in `config.dtype` with
  `config.model.remat` and `config.grad_accum_steps`. `task` replaces the config's own (e.g. a
  classifier given its classes, without a dataset)."""
  from hrnet_jax.tasks import get_task
  from hrnet_jax.train import optim, parallel
  from hrnet_jax.train.loop import create_train_state, make_train_step, shardings_of
  task = task or get_task(config)
  mesh = parallel.make_mesh(config.get('mesh'))
  schedule = optim.make_schedule(config.optimizer, 1000)
  tx = optim.make_optimizer(config.optimizer, schedule)
  state, _ = create_train_state(config, task, mesh, tx, log=lambda _: None)
  return make_train_step(config, task, mesh, tx, schedule, shardings_of(state)), state


def timed_steps(step, state, batch: dict, steps: int) -> float:
  """Seconds per step over `steps` calls (after the caller's first, compiling one)."""
  t = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  return (time.perf_counter() - t) / steps


def step_time(config, batch: dict, steps: int, task=None) -> tuple[float, float]:
  """(compile s, s/step) of the trainer's own step function for `config` on `batch`."""
  step, state = build_step(config, task)
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
