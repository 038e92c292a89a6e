"""Heatmap keypoints, shared by pose and facial landmarks: the weighted MSE loss, the flip test
and the decoding of heatmaps to sub-pixel coordinates. Pure jax functions, run inside jit."""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


def joints_mse_loss(heatmaps: Array, target: Array, weight: Array | None) -> Array:
  """0.5 * mean squared error of weighted heatmaps (B, H, W, K), averaged over joints, pixels
  and the batch; `weight` (B, K) zeroes joints without a usable label."""
  if weight is not None:
    heatmaps = heatmaps * weight[:, None, None, :]
    target = target * weight[:, None, None, :]
  return 0.5 * jnp.mean((heatmaps - target) ** 2)


def flip_back(heatmaps: Array, flip_perm: Sequence[int], shift: bool = True) -> Array:
  """Heatmaps of a mirrored crop -> heatmaps of the crop: mirror the width axis, swap left/right
  joints, and (`shift`) move everything one pixel right, keeping column 0 (the official
  alignment of mirrored heatmaps)."""
  out = heatmaps[:, :, ::-1, :][..., jnp.asarray(flip_perm)]
  if shift:
    out = jnp.concatenate([out[:, :, :1], out[:, :, :-1]], axis=2)
  return out


def flip_test_heatmaps(apply_fn: Callable, images: Array, flip_perm: Sequence[int] | None,
                       shift: bool = True) -> Array:
  """Float32 heatmaps of a normalized batch; with a flip permutation, averaged with the mirrored
  crop's heatmaps flipped back (one forward over both halves)."""
  if flip_perm is None:
    return apply_fn(images).astype(jnp.float32)
  both = apply_fn(jnp.concatenate([images, images[:, :, ::-1]], axis=0)).astype(jnp.float32)
  plain, mirrored = jnp.split(both, 2, axis=0)
  return 0.5 * (plain + flip_back(mirrored, flip_perm, shift))


def decode_heatmaps(heatmaps: Array, first_inner: int = 2) -> tuple[Array, Array]:
  """(B, H, W, K) -> coordinates (B, K, 2) in heatmap pixels (x, y) and scores (B, K).

  Argmax (the first maximum wins); coordinates are zeroed where the maximum is <= 0; then a
  quarter-pixel step towards the higher neighbour on each axis when first_inner <= x < W-1 and
  likewise for y (2 in the official pose code, 1 in the official face code).
  """
  b, h, w, k = heatmaps.shape
  flat = heatmaps.reshape(b, h * w, k)
  idx = jnp.argmax(flat, axis=1)  # (B, K)
  scores = jnp.max(flat, axis=1)
  row = jax.lax.div(idx, jnp.asarray(w, idx.dtype))  # idx >= 0; no remainder op (ONNX export)
  x, y = (idx - row * w).astype(jnp.float32), row.astype(jnp.float32)
  positive = scores > 0
  x, y = jnp.where(positive, x, 0.0), jnp.where(positive, y, 0.0)
  px, py = x.astype(jnp.int32), y.astype(jnp.int32)
  inner = (px >= first_inner) & (px < w - 1) & (py >= first_inner) & (py < h - 1)
  maps = jnp.moveaxis(heatmaps, 3, 1)  # (B, K, H, W)

  def at(yy, xx):
    yy, xx = jnp.clip(yy, 0, h - 1), jnp.clip(xx, 0, w - 1)
    return jnp.take_along_axis(maps.reshape(b, k, h * w), (yy * w + xx)[..., None],
                               axis=2)[..., 0]

  dx = at(py, px + 1) - at(py, px - 1)
  dy = at(py + 1, px) - at(py - 1, px)
  x = x + jnp.where(inner, 0.25 * jnp.sign(dx), 0.0)
  y = y + jnp.where(inner, 0.25 * jnp.sign(dy), 0.0)
  return jnp.stack([x, y], axis=-1), scores
