"""CornerNet's directional max pools, which CenterNet's corner and centre branches are built of:
every position takes the maximum of its row or column from itself to one edge of the map.

Named as the authors name them (after the corner they serve, not the direction they look): a
top pool gathers from below (out[i] = max over rows k >= i), a bottom pool from above (k <= i),
a left pool from the right (columns k >= j), a right pool from the left (k <= j). Maps are
NHWC. Each is one `lax.cummax`: jit-safe and differentiable, the gradient going to the position
of the maximum. Where several positions hold exactly the same maximum JAX shares the gradient
among them, while the authors' CUDA kernels give it to one; with real-valued features such ties
are rare (ReLU zeros tie, but have no gradient either way).
"""

from __future__ import annotations

import jax
from jax import lax


def top_pool(x: jax.Array) -> jax.Array:
  """out[:, i, j] = max of x[:, k, j] over k >= i (NHWC)."""
  return lax.cummax(x, axis=1, reverse=True)


def bottom_pool(x: jax.Array) -> jax.Array:
  """out[:, i, j] = max of x[:, k, j] over k <= i (NHWC)."""
  return lax.cummax(x, axis=1)


def left_pool(x: jax.Array) -> jax.Array:
  """out[:, i, j] = max of x[:, i, k] over k >= j (NHWC)."""
  return lax.cummax(x, axis=2, reverse=True)


def right_pool(x: jax.Array) -> jax.Array:
  """out[:, i, j] = max of x[:, i, k] over k <= j (NHWC)."""
  return lax.cummax(x, axis=2)


def column_max(x: jax.Array) -> jax.Array:
  """Every position's whole-column maximum: a top pool, then a bottom pool (CenterNet's centre
  pooling chains them so on one of its two maps)."""
  return bottom_pool(top_pool(x))


def row_max(x: jax.Array) -> jax.Array:
  """Every position's whole-row maximum: a left pool, then a right pool (the centre pooling's
  other map)."""
  return right_pool(left_pool(x))
