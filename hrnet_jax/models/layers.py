"""Building blocks shared by the backbone and the heads.

Submodule names follow the official PyTorch modules (`conv1`, `bn1`, `downsample.0`, ...), so a
Flax parameter path joined with dots is the PyTorch state_dict key (see `hrnet_jax.convert`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from hrnet_jax.models import initializers

Array = jax.Array
Dtype = Any
ModuleDef = Callable[..., nn.Module]

# He-normal (fan_out), the usual choice for ReLU networks trained from scratch.
conv_init = initializers.he_normal_fan_out


def _conv(x: Array, w: Array, stride: int, pad: int) -> Array:
  return jax.lax.conv_general_dilated(x, w, (stride, stride), ((pad, pad), (pad, pad)),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_nhwc(x: Array, w: Array, stride: int, pad: int) -> Array:
  """A 2-D convolution (NHWC x HWIO, square stride and symmetric padding) whose gradients are
  themselves plain NHWC x HWIO convolutions.

  Same values as autodiff of `lax.conv_general_dilated`, but XLA:CPU only rewrites the
  autodiff forms (a reversed OI kernel; the weight gradient over [C, H, W, N]) into its fast
  kernels outside loops: inside a scanned group they ran ~13x slower. Here the input gradient is
  a convolution of the (dilated) output gradient with the flipped, transposed kernel, and the
  weight gradient a convolution with the input channels as batch and the images as features;
  for 1x1 kernels both are single matmuls over the batch and pixels (no transposes: the seg_w18
  training step ran 1.19x faster at batch 2 and 1.30x at batch 8; per-tap matmuls for 3x3
  kernels were slower than the convolution form, BENCHMARKS.md).
  """
  return _conv(x, w, stride, pad)


def _conv_fwd(x, w, stride, pad):
  return _conv(x, w, stride, pad), (x, w)


def _conv_bwd(stride, pad, res, dy):
  x, w = res
  k, h, wd = w.shape[0], x.shape[1], x.shape[2]
  ho, wo = dy.shape[1], dy.shape[2]
  if k == 1 and pad == 0 and stride == 1:
    dx = jnp.einsum('nhwd,cd->nhwc', dy, w[0, 0])
  else:  # Full correlation of dy (dilated by the stride) with the flipped kernel.
    wt = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)
    lo = k - 1 - pad
    pads = ((lo, h + pad - 1 - (ho - 1) * stride), (lo, wd + pad - 1 - (wo - 1) * stride))
    dx = jax.lax.conv_general_dilated(dy, wt, (1, 1), pads, lhs_dilation=(stride, stride),
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if k == 1 and pad == 0:
    dw = jnp.einsum('nhwc,nhwd->cd', x[:, ::stride, ::stride][:, :ho, :wo], dy)[None, None]
  else:  # [Cin, H, W, N] (*) [Ho, Wo, N, Cout] -> [Cin, k, k, Cout].
    rem_h = (h + 2 * pad - k) % stride
    rem_w = (wd + 2 * pad - k) % stride
    dw = jax.lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0), dy.transpose(1, 2, 0, 3), (1, 1),
        ((pad, pad - rem_h), (pad, pad - rem_w)), rhs_dilation=(stride, stride),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC')).transpose(1, 2, 0, 3)
  return dx.astype(x.dtype), dw.astype(w.dtype)


conv_nhwc.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, precision=None,
                         **kw) -> Array:
  """`lax.conv_general_dilated` for nn.Conv: the model's convolutions (square stride, symmetric
  padding, no dilation or groups) go through `conv_nhwc`; anything else through lax."""
  (plo, phi), (qlo, qhi) = padding
  plain = (len(set(window_strides)) == 1 and plo == phi == qlo == qhi and feature_group_count == 1
           and set(lhs_dilation or (1,)) == {1} and set(rhs_dilation or (1,)) == {1}
           and precision is None and not kw and rhs.shape[0] == rhs.shape[1] and lhs.ndim == 4)
  if plain:
    y = conv_nhwc(lhs, rhs, int(window_strides[0]), int(plo))
  else:
    y = jax.lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                     rhs_dilation, dimension_numbers, feature_group_count,
                                     precision=precision, **kw)
  return checkpoint_name(y, CONV_OUTPUT)


CONV_OUTPUT = 'conv_output'  # the name remat policies save (`backbone.HRNet.remat`)


def make_conv(dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> ModuleDef:
  """Conv factory: explicit symmetric padding as in PyTorch ('SAME' pads (0, 1) at stride 2)."""
  return functools.partial(nn.Conv, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                           kernel_init=conv_init, conv_general_dilated=conv_general_dilated)


def conv3x3(conv: ModuleDef, features: int, stride: int = 1, **kw) -> nn.Module:
  return conv(features, (3, 3), strides=(stride, stride), padding=((1, 1), (1, 1)), **kw)


def conv1x1(conv: ModuleDef, features: int, **kw) -> nn.Module:
  return conv(features, (1, 1), padding=((0, 0), (0, 0)), **kw)


class BatchNorm(nn.Module):
  """BatchNorm with PyTorch semantics.

  Statistics are at least float32 whatever the compute dtype (float64 in float64 models, for
  numerical checks); the running variance is updated with the
  unbiased batch variance as PyTorch does (Linen's BatchNorm uses the biased one). Under a jit
  whose batch is sharded over a mesh the batch moments are global, i.e. synced BN.
  """
  use_running_average: bool
  momentum: float = 0.9  # Flax convention: 1 - PyTorch momentum.
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    stats = jnp.promote_types(jnp.promote_types(self.dtype, self.param_dtype), jnp.float32)
    ra_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros((c,), stats))
    ra_var = self.variable('batch_stats', 'var', lambda: jnp.ones((c,), stats))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      # One pass over x: E[x] and E[x^2] in (at least) float32.
      axes = tuple(range(x.ndim - 1))
      xf = x.astype(stats)
      mean = jnp.mean(xf, axes)
      var = jnp.maximum(jnp.mean(jnp.square(xf), axes) - jnp.square(mean), 0.0)
      if not self.is_initializing():
        n = x.size // c
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
        ra_var.value = m * ra_var.value + (1.0 - m) * var * (n / max(n - 1, 1))
    mul = scale.astype(stats) * jax.lax.rsqrt(var + self.epsilon)
    add = bias.astype(stats) - mean * mul
    return x * mul.astype(self.dtype) + add.astype(self.dtype)


class GroupNorm(nn.Module):
  """GroupNorm with PyTorch's semantics: per sample and group, mean and variance (two passes, as
  PyTorch computes it) over the pixels and the group's channels, eps 1e-5; statistics in at
  least float32. Plain reshapes and means, which every exporter understands."""
  num_groups: int = 32
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    n, h, w, c = x.shape
    scale = self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    y = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(n, h, w, self.num_groups, -1)
    mean = jnp.mean(y, axis=(1, 2, 4), keepdims=True)
    var = jnp.mean(jnp.square(y - mean), axis=(1, 2, 4), keepdims=True)
    y = ((y - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(n, h, w, c)
    return (y * scale + bias).astype(self.dtype)


def make_norm(train: bool, momentum: float, dtype: Dtype = jnp.float32,
              param_dtype: Dtype = jnp.float32) -> ModuleDef:
  return functools.partial(BatchNorm, use_running_average=not train, momentum=momentum,
                           dtype=dtype, param_dtype=param_dtype)


class ConvBN(nn.Module):
  """conv -> BN (-> ReLU): PyTorch `Sequential(conv, bn[, relu])`, children named '0' and '1'."""
  conv: ModuleDef
  norm: ModuleDef
  features: int
  kernel: int = 3
  stride: int = 1
  relu: bool = True
  use_bias: bool = False

  @nn.compact
  def __call__(self, x: Array) -> Array:
    p = self.kernel // 2
    x = self.conv(self.features, (self.kernel, self.kernel), strides=(self.stride, self.stride),
                  padding=((p, p), (p, p)), use_bias=self.use_bias, name='0')(x)
    x = self.norm(name='1')(x)
    return nn.relu(x) if self.relu else x


class BasicBlock(nn.Module):
  conv: ModuleDef
  norm: ModuleDef
  planes: int
  expansion = 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = nn.relu(self.norm(name='bn1')(conv3x3(self.conv, self.planes, name='conv1')(x)))
    y = self.norm(name='bn2')(conv3x3(self.conv, self.planes, name='conv2')(y))
    if x.shape[-1] != self.planes:
      x = ConvBN(self.conv, self.norm, self.planes, kernel=1, relu=False, name='downsample')(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  conv: ModuleDef
  norm: ModuleDef
  planes: int
  expansion = 4

  @nn.compact
  def __call__(self, x: Array) -> Array:
    out = self.planes * self.expansion
    y = nn.relu(self.norm(name='bn1')(conv1x1(self.conv, self.planes, name='conv1')(x)))
    y = nn.relu(self.norm(name='bn2')(conv3x3(self.conv, self.planes, name='conv2')(y)))
    y = self.norm(name='bn3')(conv1x1(self.conv, out, name='conv3')(y))
    if x.shape[-1] != out:
      x = ConvBN(self.conv, self.norm, out, kernel=1, relu=False, name='downsample')(x)
    return nn.relu(x + y)


# ---------------------------------------------------------------------------------------------
# Resizing, matching torch.nn.functional.interpolate.


def _linear_taps(in_size: int, out_size: int, align_corners: bool):
  """Source indices and weights of 1-D linear interpolation.

  PyTorch's coordinate rules, computed in float32 as PyTorch does, so weights agree bit for bit.
  """
  f32 = np.float32
  dst = np.arange(out_size, dtype=f32)
  if align_corners:
    scale = f32(in_size - 1) / f32(out_size - 1) if out_size > 1 else f32(0)
    src = scale * dst
  else:
    scale = f32(in_size) / f32(out_size)
    src = np.maximum(scale * (dst + f32(0.5)) - f32(0.5), f32(0))
  i0 = np.minimum(np.floor(src).astype(np.int32), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = np.clip(src - i0.astype(f32), f32(0), f32(1))
  return i0, i1, w1


# Up to this input length an axis is resized by a matmul with its (out, in) interpolation matrix
# (two non-zeros per row): XLA:CPU runs gathers and their scatter-add gradients slowly, and TPUs
# too; beyond it the dense matrix would cost more than it saves, and two-tap gathers are used.
MATMUL_RESIZE_MAX_IN = 512


def interpolation_matrix(in_size: int, out_size: int, align_corners: bool) -> np.ndarray:
  """The (out, in) float32 matrix of 1-D linear interpolation (PyTorch's taps and weights)."""
  i0, i1, w1 = _linear_taps(in_size, out_size, align_corners)
  m = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(m, (rows, i0), np.float32(1) - w1)
  np.add.at(m, (rows, i1), w1)
  return m


@functools.partial(jax.jit, static_argnames='axis')
def interpolate_axis(m: Array, x: Array, axis: int) -> Array:
  """`x` resampled along `axis` by an (out, in) interpolation matrix. A named call of its own,
  so that FLOP counts can tell resampling (not a layer in the papers' counts) from layers."""
  y = jnp.tensordot(m, x, axes=[[1], [axis]], precision=jax.lax.Precision.HIGHEST)
  return jnp.moveaxis(y, 0, axis)


def _resize_axis(x: Array, axis: int, out_size: int, align_corners: bool) -> Array:
  in_size = x.shape[axis]
  if in_size == out_size:
    return x
  if in_size <= MATMUL_RESIZE_MAX_IN:
    m = jnp.asarray(interpolation_matrix(in_size, out_size, align_corners), x.dtype)
    return interpolate_axis(m, x, axis=axis)
  i0, i1, w1 = _linear_taps(in_size, out_size, align_corners)
  shape = [1] * x.ndim
  shape[axis] = out_size
  w1 = jnp.asarray(w1, x.dtype).reshape(shape)
  x0 = jnp.take(x, i0, axis=axis)
  x1 = jnp.take(x, i1, axis=axis)
  return x0 * (1 - w1) + x1 * w1


def resize_bilinear(x: Array, size: Sequence[int], align_corners: bool = False) -> Array:
  """Bilinear resize of an NHWC batch to `size` (h, w), equal to PyTorch's `F.interpolate`.

  Separable and without antialiasing (unlike `jax.image.resize`), for up- and downscaling by
  any factor: per axis a small interpolation matmul, or two-tap gathers on long inputs.
  """
  x = _resize_axis(x, 1, int(size[0]), align_corners)
  return _resize_axis(x, 2, int(size[1]), align_corners)


def upsample_nearest(x: Array, factor: int) -> Array:
  """Nearest-neighbour upsampling by an integer factor (PyTorch `Upsample(scale_factor=f)`)."""
  if factor == 1:
    return x
  n, h, w, c = x.shape
  x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
  return x.reshape(n, h * factor, w * factor, c)


def upsample_to(x: Array, size: Sequence[int], mode: str, align_corners: bool,
                factor: int | None = None) -> Array:
  """Upsample a lower-resolution stream to a target size, by the release's rule. Nearest takes
  `factor` (2^k between streams) when given, so that symbolic sizes (jax.export) work."""
  if mode == 'bilinear':
    return resize_bilinear(x, (int(size[0]), int(size[1])), align_corners)
  if mode == 'nearest':
    h, w = size
    sizes = (h, w, x.shape[1], x.shape[2])
    if all(isinstance(d, int) for d in sizes):
      factor = factor or h // x.shape[1]
      if factor * x.shape[1] != h or factor * x.shape[2] != w:
        raise ValueError(
            f'nearest upsampling needs input sizes divisible by 32: a {x.shape[1]}x{x.shape[2]} '
            f'stream cannot be scaled to {h}x{w}; resize the input or use upsample="bilinear"')
    elif factor is None:
      raise ValueError('nearest upsampling of symbolic sizes needs the factor')
    return upsample_nearest(x, factor)
  raise ValueError(f"upsample mode must be 'nearest' or 'bilinear', got {mode!r}")
