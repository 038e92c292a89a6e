"""The compute dtype a config asks for, shared by the train and eval steps."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from hrnet_jax.errors import ConfigError

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16, 'float64': jnp.float64}


def compute_dtype(config: Any) -> Any:
  """`config.dtype`: 'float32', 'bfloat16' (float32 params, BN statistics and loss), or
  'float64' (numerical checks; needs JAX_ENABLE_X64)."""
  name = config.get('dtype', 'float32')
  if name not in DTYPES:
    raise ConfigError(f'config.dtype: expected one of {sorted(DTYPES)}, got {name!r}')
  if name == 'float64' and not jax.config.read('jax_enable_x64'):
    raise ConfigError('config.dtype=float64 needs 64-bit JAX: set JAX_ENABLE_X64=1')
  return DTYPES[name]
