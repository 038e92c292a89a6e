"""Parameter initializers with jax.nn.initializers' values that compile in a fraction of the time.

A jitted `model.init` draws every parameter's random numbers in kernels of that parameter's
shape, and XLA:CPU compiles each distinct kernel on its own (~36 ms each): seg_w18's initializer
compiled 334 kernels in 12 s, most of them the random draws of its 68 parameter shapes.
JAX's threefry bits are counter-based (element i of a draw depends only on the key and i), so a
parameter's numbers are the first n of a longer draw with the same key: here each parameter is
drawn at a power-of-two length (at least 2^16) behind an optimization barrier and sliced, so the
parameters of one length share their kernels (seg_w18: 210 kernels, 6-7 s). The values equal
jax.nn.initializers' bit for bit (tests/test_layers.py); the scale is applied as XLA applies it
there: for a normal draw, sqrt(2) and the scale folded into one float32 constant.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Initializer = Callable[..., jax.Array]
MIN_LENGTH = 1 << 16  # the shortest draw: fewer distinct lengths, little extra work


def _draw(sample: Callable, key: jax.Array, shape: Sequence[int], dtype) -> jax.Array:
  """sample(key, (L,), dtype) at a shared length L >= prod(shape), its first values shaped."""
  n = math.prod(shape)
  length = max(MIN_LENGTH, 1 << max(n - 1, 0).bit_length())
  return lax.optimization_barrier(sample(key, (length,), dtype))[:n].reshape(shape)


def _unit_erf_inv(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """erf_inv of jax.random.normal's uniform draw: the normal numbers before their sqrt(2)."""
  lo = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
  return lax.erf_inv(jax.random.uniform(key, shape, dtype, lo, 1.0))


def _normal_times(key: jax.Array, shape: Sequence[int], dtype, stddev: np.ndarray) -> jax.Array:
  """jax.random.normal(key, shape) * stddev, as XLA computes it: erf_inv(u) * (sqrt(2) stddev)."""
  dtype = np.dtype(dtype)
  factor = np.array(np.sqrt(2), dtype) * np.asarray(stddev, dtype)
  return _draw(_unit_erf_inv, key, shape, dtype) * jnp.asarray(factor, dtype)


def normal(stddev: float = 1e-2) -> Initializer:
  """jax.nn.initializers.normal(stddev)."""
  def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    return _normal_times(key, shape, dtype, np.asarray(stddev, np.dtype(dtype)))
  return init


def _fans(shape: Sequence[int]) -> tuple[float, float]:
  """(fan_in, fan_out) as jax.nn.initializers computes them: in axis -2, out axis -1, the other
  axes the receptive field."""
  receptive = math.prod(shape[:-2])
  return shape[-2] * receptive, shape[-1] * receptive


def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
  """jax.nn.initializers.variance_scaling(scale, mode, distribution) for float parameters of
  rank >= 2 (distribution 'normal', 'truncated_normal' or 'uniform')."""
  if mode not in ('fan_in', 'fan_out', 'fan_avg'):
    raise ValueError(f'variance_scaling: mode {mode!r}, expected fan_in, fan_out or fan_avg')
  if distribution not in ('normal', 'truncated_normal', 'uniform'):
    raise ValueError(f'variance_scaling: distribution {distribution!r}, expected normal, '
                     'truncated_normal or uniform')

  def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    dtype = np.dtype(dtype)
    fan_in, fan_out = _fans(shape)
    denominator = {'fan_in': fan_in, 'fan_out': fan_out, 'fan_avg': (fan_in + fan_out) / 2}[mode]
    variance = np.array(scale / denominator, dtype)
    if distribution == 'normal':
      return _normal_times(key, shape, dtype, np.sqrt(variance))
    if distribution == 'truncated_normal':
      stddev = np.sqrt(variance) / np.array(.87962566103423978, dtype)
      draw = lambda k, s, d: jax.random.truncated_normal(k, -2, 2, s, d)
      return _draw(draw, key, shape, dtype) * jnp.asarray(stddev, dtype)
    draw = lambda k, s, d: jax.random.uniform(k, s, d, -1)
    return _draw(draw, key, shape, dtype) * jnp.asarray(np.sqrt(3 * variance), dtype)
  return init


he_normal_fan_out = variance_scaling(2.0, 'fan_out', 'normal')  # the convolutions' init
lecun_normal = variance_scaling(1.0, 'fan_in', 'truncated_normal')  # nn.Dense's default
xavier_uniform = variance_scaling(1.0, 'fan_avg', 'uniform')
# PyTorch's default for nn.Conv2d / nn.Linear weights (kaiming_uniform with a = sqrt(5)):
# U(-b, b), b = 1 / sqrt(fan_in).
torch_default = variance_scaling(1.0 / 3, 'fan_in', 'uniform')
