"""Learning-rate schedules and optimizers from `config.optimizer`."""

from __future__ import annotations

from typing import Any

import optax

from hrnet_jax.errors import ConfigError


def make_schedule(c: Any, total_steps: int, steps_per_epoch: int = 1) -> optax.Schedule:
  """'poly' (lr * (1 - t/T)^power per step), 'step' (x gamma at each of `boundaries`, given in
  epochs, fractions allowed: step round(epoch x steps_per_epoch)) or 'constant', after an
  optional linear warmup of `warmup_steps`."""
  warmup = int(c.get('warmup_steps', 0))
  decay_steps = max(1, total_steps - warmup)
  if c.schedule == 'poly':
    main = optax.polynomial_schedule(c.lr, 0.0, c.power, decay_steps)
  elif c.schedule == 'step':
    boundaries = [round(e * steps_per_epoch) for e in c.boundaries]
    main = optax.piecewise_constant_schedule(c.lr, {b - warmup: c.gamma for b in boundaries})
  elif c.schedule == 'constant':
    main = optax.constant_schedule(c.lr)
  else:
    raise ConfigError(f"config.optimizer.schedule: expected 'poly', 'step' or 'constant', got "
                      f'{c.schedule!r}')
  if not warmup:
    return main
  ramp = optax.linear_schedule(c.get('warmup_init', 0.0) * c.lr, c.lr, warmup)
  return optax.join_schedules([ramp, main], [warmup])


def make_optimizer(c: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, optional Nesterov) or Adam, with coupled weight decay as in PyTorch:
  wd * param is added to the gradient before momentum."""
  if c.name == 'sgd':
    base = optax.sgd(schedule, momentum=c.momentum or None, nesterov=c.get('nesterov', False))
  elif c.name == 'adam':
    base = optax.adam(schedule, b1=c.get('b1', 0.9), b2=c.get('b2', 0.999))
  else:
    raise ConfigError(f"config.optimizer.name: expected 'sgd' or 'adam', got {c.name!r}")
  if c.weight_decay:
    return optax.chain(optax.add_decayed_weights(c.weight_decay), base)
  return base
