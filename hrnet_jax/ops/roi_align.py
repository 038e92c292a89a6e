"""RoIAlign with torchvision's and mmcv's meaning (`torchvision.ops.roi_align`), on NHWC maps,
in jit, including the adaptive sampling grid (`sampling_ratio` <= 0: ceil(roi / bin) samples per
bin side, per RoI).

Bilinear sampling is gathered from the flattened maps one sample position at a time, for all
RoIs at once; the loop runs as many times as the largest RoI has samples per bin, so the
adaptive grid is exact with static shapes. Several maps (pyramid levels) share the one flat
buffer, so RoIs of different levels are pooled together (`multilevel_roi_align`, mmdetection's
SingleRoIExtractor). The backward pass (to the features; boxes get no gradient, as proposals
in two-stage detectors are constants) scatters through the same loop.

`legacy`: mmdetection v1's kernel (the HRNet-Object-Detection releases): a box covers x1..x2
inclusive, so it ends at x2 + 1 on the map, with no one-pixel minimum; the pyramid level is chosen
by sqrt((w + 1) (h + 1)). Otherwise unaligned, as torchvision's aligned=False.

`separable_roi_align` computes the same numbers another way, for small single maps (HTC's
semantic embedding): a bin's samples form a grid, so its bilinear weights are a row weight times
a column weight and each RoI's output is Wy @ F @ Wx^T, two matrix products per image with no
sample loop over the channels. Its cost grows with the map's area instead of the samples.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

Array = jax.Array


# The box rule (static): 'aligned' (pixel centres), 'unaligned' (at least one pixel wide) or
# 'legacy' (mmdetection v1: ends one pixel further, at least zero wide; the +1 is added by the
# callers before scaling, as that kernel does).


def _geometry(rois: Array, output_size: tuple[int, int], sampling_ratio: int, rule: str):
  """Per RoI (boxes already in map pixels): start, bin sizes and grid counts, as torchvision's
  (or mmdetection v1's) kernel computes them."""
  offset = 0.5 if rule == 'aligned' else 0.0
  x1, y1, x2, y2 = (rois[:, k] - offset for k in range(4))
  roi_w, roi_h = x2 - x1, y2 - y1
  if rule != 'aligned':  # torchvision's unaligned rule: at least one pixel; v1's: zero
    least = 1.0 if rule == 'unaligned' else 0.0
    roi_w, roi_h = jnp.maximum(roi_w, least), jnp.maximum(roi_h, least)
  ph, pw = output_size
  bin_h, bin_w = roi_h / ph, roi_w / pw
  if sampling_ratio > 0:
    grid_h = jnp.full(rois.shape[:1], sampling_ratio, jnp.int32)
    grid_w = grid_h
  else:
    grid_h = jnp.maximum(jnp.ceil(roi_h / ph), 0).astype(jnp.int32)
    grid_w = jnp.maximum(jnp.ceil(roi_w / pw), 0).astype(jnp.int32)
  return x1, y1, bin_w, bin_h, grid_h, grid_w


def _axis(start: Array, size: Array, bins: int, grid: Array, i: Array, length: Array):
  """Sample positions along one axis for sample index `i` of every bin -> the two neighbouring
  pixel indices (R, bins, 2) and their bilinear weights (zero outside [-1, length])."""
  steps = jnp.arange(bins, dtype=start.dtype)
  pos = (start[:, None] + steps[None, :] * size[:, None]
         + (i[:, None].astype(start.dtype) + 0.5) * size[:, None]
         / jnp.maximum(grid, 1)[:, None].astype(start.dtype))
  last = (length - 1)[:, None]
  inside = (pos >= -1.0) & (pos <= length[:, None].astype(pos.dtype))
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(pos).astype(jnp.int32)
  at_end = low >= last
  low = jnp.where(at_end, last, low)
  high = jnp.where(at_end, last, low + 1)
  frac = jnp.where(at_end, 0.0, pos - low.astype(pos.dtype))
  weights = jnp.stack([1.0 - frac, frac], -1) * inside[..., None]
  return jnp.stack([low, high], -1), weights


def _samples(rois, meta, output_size, sampling_ratio, rule, k):
  """Flat indices (R, P, Q, 4) and weights (R, P, Q, 4) of sample number `k` of every bin."""
  base, heights, widths = meta[:, 0], meta[:, 1], meta[:, 2]
  x1, y1, bin_w, bin_h, grid_h, grid_w = _geometry(rois, output_size, sampling_ratio, rule)
  per_bin = grid_h * grid_w
  active = (k < per_bin).astype(rois.dtype) / jnp.maximum(per_bin, 1).astype(rois.dtype)
  a = k // jnp.maximum(grid_w, 1)
  b = k % jnp.maximum(grid_w, 1)
  rows, wy = _axis(y1, bin_h, output_size[0], grid_h, a, heights)
  cols, wx = _axis(x1, bin_w, output_size[1], grid_w, b, widths)
  index = (base[:, None, None, None, None] + rows[:, :, None, :, None] * widths[:, None, None,
                                                                                None, None]
           + cols[:, None, :, None, :])
  weight = wy[:, :, None, :, None] * wx[:, None, :, None, :] * active[:, None, None, None, None]
  r, p, q = index.shape[:3]
  return index.reshape(r, p, q, 4), weight.reshape(r, p, q, 4)


def _num_samples(rois, meta, output_size, sampling_ratio, rule):
  if sampling_ratio > 0:
    return sampling_ratio * sampling_ratio
  del meta
  _, _, _, _, grid_h, grid_w = _geometry(rois, output_size, sampling_ratio, rule)
  return jnp.max(jnp.concatenate([grid_h * grid_w, jnp.zeros(1, jnp.int32)]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _pool(flat: Array, rois: Array, meta: Array, output_size: tuple[int, int],
          sampling_ratio: int, rule: str) -> Array:
  """The average of the bilinear samples of every bin: (R, P, Q, C) from flat maps (M, C)."""
  p, q = output_size
  out = jnp.zeros((rois.shape[0], p, q, flat.shape[-1]), jnp.promote_types(flat.dtype,
                                                                           jnp.float32))

  # A while loop whose operands all travel in the carry (the ONNX converter takes no closures).
  def body(carry):
    k, acc, flat, rois, meta, n = carry
    index, weight = _samples(rois, meta, output_size, sampling_ratio, rule, k)
    acc = acc + jnp.einsum('rpqk,rpqkc->rpqc', weight, flat[index].astype(acc.dtype))
    return k + 1, acc, flat, rois, meta, n

  n = _num_samples(rois, meta, output_size, sampling_ratio, rule)
  carry = (jnp.zeros((), jnp.int32), out, flat, rois, meta, jnp.asarray(n, jnp.int32))
  pooled = jax.lax.while_loop(lambda c: c[0] < c[-1], body, carry)[1]
  # Integer maps (binary masks, gathered small) pool to float32.
  return pooled.astype(flat.dtype) if jnp.issubdtype(flat.dtype, jnp.floating) else pooled


def _pool_fwd(flat, rois, meta, output_size, sampling_ratio, rule):
  out = _pool(flat, rois, meta, output_size, sampling_ratio, rule)
  return out, (flat, rois, meta)  # the maps are kept anyway: the heads' convolutions read them


def _pool_bwd(output_size, sampling_ratio, rule, residuals, grad):
  flat, rois, meta = residuals
  shape, dtype = flat.shape, flat.dtype
  grad = grad.astype(jnp.promote_types(dtype, jnp.float32))

  def body(k, acc):
    index, weight = _samples(rois, meta, output_size, sampling_ratio, rule, k)
    values = weight[..., None] * grad[:, :, :, None, :]
    return acc.at[index.reshape(-1)].add(values.reshape(-1, shape[-1]))

  n = _num_samples(rois, meta, output_size, sampling_ratio, rule)
  dflat = jax.lax.fori_loop(0, n, body, jnp.zeros(shape, grad.dtype)).astype(dtype)
  return dflat, jnp.zeros_like(rois), jnp.zeros(meta.shape, jax.dtypes.float0)


_pool.defvjp(_pool_fwd, _pool_bwd)


def _size(output_size: int | Sequence[int]) -> tuple[int, int]:
  if isinstance(output_size, int):
    return output_size, output_size
  return int(output_size[0]), int(output_size[1])


def _rule(aligned: bool, legacy: bool) -> str:
  if legacy and aligned:
    raise ValueError('roi_align: legacy boxes are unaligned (aligned=False)')
  return 'legacy' if legacy else ('aligned' if aligned else 'unaligned')


def _legacy_ends(boxes: Array, legacy: bool) -> Array:
  """Legacy boxes end one pixel further (x2 + 1, y2 + 1), before the spatial scale."""
  return boxes + jnp.asarray([0.0, 0.0, 1.0, 1.0], boxes.dtype) if legacy else boxes


def roi_align(features: Array, boxes: Array, output_size: int | Sequence[int],
              spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False, legacy: bool = False) -> Array:
  """torchvision.ops.roi_align on NHWC `features` (N, H, W, C): `boxes` (K, 5) rows of
  (batch index, x1, y1, x2, y2) in input pixels (scaled by `spatial_scale` onto the map)
  -> (K, out_h, out_w, C). `sampling_ratio` <= 0 samples ceil(roi side / bins) points per bin
  side; `aligned` shifts boxes by -0.5 map pixel (pixel centres), otherwise boxes are at least
  one pixel wide (torchvision's unaligned rule); `legacy`: mmdetection v1's kernel (above).
  Integer features (binary masks) give float32."""
  n, h, w, c = features.shape
  batch = boxes[:, 0].astype(jnp.int32)
  dtype = jnp.promote_types(features.dtype, jnp.float32)
  rois = _legacy_ends(boxes[:, 1:].astype(dtype), legacy) * spatial_scale
  meta = jnp.stack([batch * h * w, jnp.full_like(batch, h), jnp.full_like(batch, w)], -1)
  return _pool(features.reshape(n * h * w, c), rois, meta, _size(output_size),
               int(sampling_ratio), _rule(aligned, legacy))


def _axis_weights(start: Array, size: Array, grid: Array, bins: int, length: int) -> Array:
  """The (R, bins, length) matrix that averages each bin's bilinear samples along one axis."""
  lengths = jnp.full(start.shape, length, jnp.int32)
  pixels = jnp.arange(length)

  def body(carry):  # one sample index of every bin; all operands in the carry (ONNX, as _pool)
    k, acc, start, size, grid, lengths, n = carry
    index, weight = _axis(start, size, bins, grid, jnp.full(start.shape, k), lengths)
    weight = weight * ((k < grid) / jnp.maximum(grid, 1))[:, None, None].astype(weight.dtype)
    hits = (index[..., None] == pixels).astype(weight.dtype)  # (R, bins, 2, length)
    acc = acc + jnp.einsum('rbk,rbkl->rbl', weight, hits)
    return k + 1, acc, start, size, grid, lengths, n

  acc = jnp.zeros((start.shape[0], bins, length), start.dtype)
  n = jnp.max(jnp.concatenate([grid, jnp.zeros(1, jnp.int32)]))
  carry = (jnp.zeros((), jnp.int32), acc, start, size, grid, lengths, n)
  return jax.lax.while_loop(lambda c: c[0] < c[-1], body, carry)[1]


def separable_roi_align(features: Array, rois: Array, output_size: int | Sequence[int],
                        spatial_scale: float = 1.0, sampling_ratio: int = -1,
                        aligned: bool = False, legacy: bool = False, pool: int = 1) -> Array:
  """`roi_align` of the R boxes (B, R, 4) of each image of `features` (B, H, W, C), in input
  pixels -> (B * R, out_h / pool, out_w / pool, C), image-major, with `roi_align`'s arguments
  and numbers (to float rounding), as two matrix products per image. `pool` > 1 averages the
  bins in pool x pool blocks (mmdetection's adaptive average pooling of HTC's 14x14 semantic
  RoIs to the 7x7 box size), folded into the weights. Cost ~ B R out_h (H W + out_w W) C
  multiply-adds: for maps of a few thousand pixels far cheaper than the sampling loop of
  `roi_align`; the gradient reaches the features only, as there."""
  b, h, w, c = features.shape
  r = rois.shape[1]
  (ph, pw), dtype = _size(output_size), jnp.promote_types(features.dtype, jnp.float32)
  if ph % pool or pw % pool:
    raise ValueError(f'separable_roi_align: output size {(ph, pw)} is not a multiple of pool '
                     f'{pool}')
  boxes = _legacy_ends(jax.lax.stop_gradient(rois).reshape(-1, 4).astype(dtype), legacy)
  x1, y1, bin_w, bin_h, grid_h, grid_w = _geometry(boxes * spatial_scale, (ph, pw),
                                                   int(sampling_ratio), _rule(aligned, legacy))
  rows = _axis_weights(y1, bin_h, grid_h, ph, h)
  cols = _axis_weights(x1, bin_w, grid_w, pw, w)
  rows = rows.reshape(b, r, ph // pool, pool, h).mean(3)
  cols = cols.reshape(b, r, pw // pool, pool, w).mean(3)
  exact = jax.lax.Precision.HIGHEST  # float32 products, as the sampling loop's
  partial = jnp.einsum('brph,bhwc->brpwc', rows, features.astype(dtype), precision=exact)
  out = jnp.einsum('brqw,brpwc->brpqc', cols, partial, precision=exact)
  out = out.reshape(b * r, ph // pool, pw // pool, c)
  return out.astype(features.dtype) if jnp.issubdtype(features.dtype, jnp.floating) else out


def roi_levels(boxes: Array, num_levels: int, finest_scale: float = 56.0,
               legacy: bool = False) -> Array:
  """The pyramid level of each box (K, 4), mmdetection's rule: floor(log2(sqrt(w h) /
  finest_scale + 1e-6)) clamped to [0, num_levels - 1] (boxes under 112 px on level 0; legacy:
  widths x2 - x1 + 1)."""
  one = 1.0 if legacy else 0.0
  scale = jnp.sqrt((boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one))
  level = jnp.floor(jnp.log2(scale / finest_scale + 1e-6))
  return jnp.clip(level, 0, num_levels - 1).astype(jnp.int32)


def multilevel_roi_align(levels: Sequence[Array], boxes: Array, batch_index: Array,
                         strides: Sequence[int], output_size: int | Sequence[int],
                         sampling_ratio: int = 0, aligned: bool = True,
                         finest_scale: float = 56.0, legacy: bool = False) -> Array:
  """mmdetection's SingleRoIExtractor: each box (K, 4) of image `batch_index` (K,) pooled from
  its level (`roi_levels` over the first len(strides) maps, spatial scale 1 / stride) ->
  (K, out_h, out_w, C). `legacy`: mmdetection v1's extractor and kernel (aligned=False)."""
  levels = list(levels)[:len(strides)]
  dtype = jnp.promote_types(levels[0].dtype, jnp.float32)
  level = roi_levels(boxes, len(levels), finest_scale, legacy)
  starts, offset = [], 0
  for m in levels:
    starts.append(offset)
    offset += math.prod(m.shape[:3])
  pick = lambda values: jnp.asarray(values)[level]
  heights = pick([m.shape[1] for m in levels])
  widths = pick([m.shape[2] for m in levels])
  batch = batch_index.astype(jnp.int32)
  meta = jnp.stack([pick(starts) + batch * heights * widths, heights, widths], -1)
  scale = (1.0 / pick([float(s) for s in strides])).astype(dtype)[:, None]
  rois = _legacy_ends(boxes.astype(dtype), legacy) * scale
  flat = jnp.concatenate([m.reshape(-1, m.shape[-1]) for m in levels])
  return _pool(flat, rois, meta, _size(output_size), int(sampling_ratio),
               _rule(aligned, legacy))
