"""Learning-rate schedules and optimizers from `config.optimizer`."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import traverse_util

from hrnet_jax.errors import ConfigError


def make_schedule(c: Any, total_steps: int, steps_per_epoch: int = 1) -> optax.Schedule:
  """'poly' (lr * (1 - t/T)^power per step), 'step' (x gamma at each of `boundaries`, given in
  epochs, fractions allowed: step round(epoch x steps_per_epoch)) or 'constant', after an
  optional warmup of `warmup_steps`: 'linear' (`warmup_mode`, the default) from warmup_init * lr
  up to lr, or 'constant' at warmup_init * lr (mmdetection's detector recipes)."""
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
  mode = c.get('warmup_mode', 'linear')
  if mode == 'linear':
    ramp = optax.linear_schedule(c.get('warmup_init', 0.0) * c.lr, c.lr, warmup)
  elif mode == 'constant':
    ramp = optax.constant_schedule(c.get('warmup_init', 0.0) * c.lr)
  else:
    raise ConfigError(f"config.optimizer.warmup_mode: expected 'linear' or 'constant', got "
                      f'{mode!r}')
  return optax.join_schedules([ramp, main], [warmup])


def conv_bias_mask(params: Any) -> Any:
  """True for the biases of convolutions and dense layers (a `bias` beside a `kernel`), False
  for everything else, normalization biases included (mmcv's rule for bias_lr_mult and
  bias_decay_mult)."""
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict(
      {path: path[-1] == 'bias' and path[:-1] + ('kernel',) in flat for path in flat})


def make_optimizer(c: Any, schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD (momentum, optional Nesterov) or Adam, with coupled weight decay as in PyTorch:
  wd * param is added to the gradient before momentum. Options of mmdetection's recipes:
  `grad_clip_norm` > 0 clips the gradients' global norm first; `bias_lr_mult` and
  `bias_decay_mult` scale the learning rate and the weight decay of conv/dense biases."""
  if c.name == 'sgd':
    base = optax.sgd(schedule, momentum=c.momentum or None, nesterov=c.get('nesterov', False))
  elif c.name == 'adam':
    base = optax.adam(schedule, b1=c.get('b1', 0.9), b2=c.get('b2', 0.999))
  else:
    raise ConfigError(f"config.optimizer.name: expected 'sgd' or 'adam', got {c.name!r}")
  bias_lr, bias_decay = float(c.get('bias_lr_mult', 1.0)), float(c.get('bias_decay_mult', 1.0))
  parts = []
  if c.get('grad_clip_norm', 0.0):
    parts.append(optax.clip_by_global_norm(float(c.grad_clip_norm)))
  if c.weight_decay:
    if bias_decay == 1.0:
      parts.append(optax.add_decayed_weights(c.weight_decay))
    else:
      others = lambda p: jax.tree_util.tree_map(lambda b: not b, conv_bias_mask(p))
      parts.append(optax.add_decayed_weights(c.weight_decay, mask=others))
      if bias_decay:
        parts.append(optax.add_decayed_weights(c.weight_decay * bias_decay, mask=conv_bias_mask))
  parts.append(base)
  if bias_lr != 1.0:  # Both optimizers are linear in the learning rate: scale the update.
    parts.append(optax.masked(optax.scale(bias_lr), conv_bias_mask))
  return parts[0] if len(parts) == 1 else optax.chain(*parts)
