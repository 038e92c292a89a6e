"""`lax.top_k` that an exported SavedModel can carry: JAX serializes `top_k` as a StableHLO
composite op that TensorFlow 2.21's reader does not know, so inside `portable_top_k()` (the
SavedModel writer's tracing) the same result comes from a stable sort."""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import jax
import jax.numpy as jnp
from jax import lax

_PORTABLE = contextvars.ContextVar('portable_top_k', default=False)


def top_k(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  """(values, indices) of the k largest along the last axis, the lower index first among equal
  values (lax.top_k's order); a stable descending sort inside `portable_top_k()`."""
  if not _PORTABLE.get():
    return lax.top_k(x, k)
  iota = lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
  negated, index = lax.sort((-x, iota), dimension=x.ndim - 1, is_stable=True, num_keys=1)
  return -negated[..., :k], index[..., :k]


@contextlib.contextmanager
def portable_top_k() -> Iterator[None]:
  """Functions traced inside take `top_k` by sorting (no composite op in the program)."""
  token = _PORTABLE.set(True)
  try:
    yield
  finally:
    _PORTABLE.reset(token)
