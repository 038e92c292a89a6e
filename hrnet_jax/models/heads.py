"""Task heads on the tuple of streams: V1 (pose), V2 (segmentation, face), V2p (detection
pyramid), classification (HRNet-Wx-C) and OCR. Every head is called as `head(streams, train)`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax.models.backbone import Streams
from hrnet_jax.models.layers import (Array, Bottleneck, ConvBN, Dtype, conv1x1, conv3x3, make_conv,
                                     make_norm, resize_bilinear)


def concat_streams(streams: Streams, align_corners: bool) -> Array:
  """The HRNetV2 representation: all streams resized bilinearly to stream 0, concatenated."""
  size = streams[0].shape[1:3]
  return jnp.concatenate(
      [streams[0]] + [resize_bilinear(s, size, align_corners) for s in streams[1:]], axis=-1)


class PoseHead(nn.Module):
  """HRNetV1: a 1x1 conv on the high-resolution stream -> heatmaps at 1/4."""
  num_joints: int = 17
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: Streams, train: bool = False) -> Array:
    conv = make_conv(self.dtype, self.param_dtype)
    # Initial heatmaps near zero (std 0.001, as the official release initializes): training then
    # starts at the all-zero loss and spends its first steps on the peaks, not on the noise.
    return conv1x1(conv, self.num_joints, use_bias=True, name='final_layer',
                   kernel_init=nn.initializers.normal(0.001))(streams[0])


class SegHead(nn.Module):
  """HRNetV2: concat of all streams, conv1x1-BN-ReLU, conv1x1 to classes, at 1/4 resolution.

  `prefix` is the official module name: `last_layer` (segmentation) or `head` (face).
  """
  num_classes: int = 19
  align_corners: bool = False
  bn_momentum: float = 0.99
  prefix: str = 'last_layer'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: Streams, train: bool = False) -> Array:
    conv = make_conv(self.dtype, self.param_dtype)
    norm = make_norm(train, self.bn_momentum, self.dtype, self.param_dtype)
    x = concat_streams(streams, self.align_corners)
    x = ConvBN(conv, norm, x.shape[-1], kernel=1, use_bias=True, name=self.prefix)(x)
    return conv1x1(conv, self.num_classes, use_bias=True, name=f'{self.prefix}.3')(x)


class ClsHead(nn.Module):
  """HRNet-Wx-C: a Bottleneck per stream, strided convs merging high to low resolution,
  conv1x1 to 2048, global average pool, linear classifier."""
  num_classes: int = 1000
  bn_momentum: float = 0.9
  head_planes: tuple[int, ...] = (32, 64, 128, 256)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: Streams, train: bool = False) -> Array:
    conv = make_conv(self.dtype, self.param_dtype)
    norm = make_norm(train, self.bn_momentum, self.dtype, self.param_dtype)
    y = None
    for i, x in enumerate(streams):
      x = Bottleneck(conv, norm, self.head_planes[i], name=f'incre_modules.{i}.0')(x)
      if y is not None:
        x = x + ConvBN(conv, norm, x.shape[-1], stride=2, use_bias=True,
                       name=f'downsamp_modules.{i - 1}')(y)
      y = x
    y = ConvBN(conv, norm, 2048, kernel=1, use_bias=True, name='final_layer')(y)
    y = jnp.mean(y, axis=(1, 2))
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
                    name='classifier')(y)


class ObjectAttention(nn.Module):
  """Pixels (queries) attend to object-region features (keys, values)."""
  conv: nn.Module
  norm: nn.Module
  key_channels: int

  def _project(self, x: Array, name: str, widths: tuple[int, ...]) -> Array:
    # Official layout: conv at index 2k, BN+ReLU wrapper at index 2k+1 (BN as its child 0).
    for k, width in enumerate(widths):
      x = conv1x1(self.conv, width, name=f'{name}.{2 * k}')(x)
      x = nn.relu(self.norm(name=f'{name}.{2 * k + 1}.0')(x))
    return x

  @nn.compact
  def __call__(self, x: Array, proxy: Array) -> Array:
    n, h, w, c = x.shape
    kc = self.key_channels
    query = self._project(x, 'f_pixel', (kc, kc)).reshape(n, h * w, kc)
    key = self._project(proxy, 'f_object', (kc, kc)).reshape(n, -1, kc)
    value = self._project(proxy, 'f_down', (kc,)).reshape(n, -1, kc)
    sim = jnp.einsum('npc,nkc->npk', query, key) * kc**-0.5
    sim = jax.nn.softmax(sim.astype(jnp.float32), axis=-1).astype(x.dtype)
    context = jnp.einsum('npk,nkc->npc', sim, value).reshape(n, h, w, kc)
    return self._project(context, 'f_up', (c,))


class OCRHead(nn.Module):
  """Object-contextual representations on top of HRNetV2; returns (aux, out) logits at 1/4."""
  num_classes: int = 19
  align_corners: bool = True
  bn_momentum: float = 0.9
  mid_channels: int = 512
  key_channels: int = 256
  dropout: float = 0.05
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: Streams, train: bool = False) -> tuple[Array, Array]:
    conv = make_conv(self.dtype, self.param_dtype)
    norm = make_norm(train, self.bn_momentum, self.dtype, self.param_dtype)
    feats = concat_streams(streams, self.align_corners)
    aux = ConvBN(conv, norm, feats.shape[-1], kernel=1, use_bias=True, name='aux_head')(feats)
    aux = conv1x1(conv, self.num_classes, use_bias=True, name='aux_head.3')(aux)

    feats = ConvBN(conv, norm, self.mid_channels, use_bias=True, name='conv3x3_ocr')(feats)
    n, h, w, c = feats.shape
    # Soft object regions: a softmax of the aux logits over all pixels, one map per class.
    regions = jax.nn.softmax(aux.reshape(n, h * w, -1).astype(jnp.float32), axis=1)
    objects = jnp.einsum('npk,npc->nkc', regions.astype(feats.dtype), feats.reshape(n, h * w, c))
    objects = objects[:, :, None, :]  # (N, K, 1, C): the official B x C x K x 1, in NHWC.

    context = ObjectAttention(conv, norm, self.key_channels,
                              name='ocr_distri_head.object_context_block')(feats, objects)
    x = jnp.concatenate([context, feats], axis=-1)
    x = conv1x1(conv, self.mid_channels, name='ocr_distri_head.conv_bn_dropout.0')(x)
    x = nn.relu(norm(name='ocr_distri_head.conv_bn_dropout.1.0')(x))
    x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    out = conv1x1(conv, self.num_classes, use_bias=True, name='cls_head')(x)
    return aux, out


class PyramidNeck(nn.Module):
  """HRNetV2p (mmdetection's HRFPN): the V2 concat reduced to `out_channels` by a 1x1 conv,
  average-pooled to `num_levels` levels (strides 4, 8, ..., 64), a 3x3 conv per level with
  `stride` (2 gives levels 8 ... 128, as the FCOS-HRNet configs). Names follow mmdetection's
  ConvModule wrapping: `reduction_conv.conv`, `fpn_convs.<i>.conv`."""
  out_channels: int = 256
  num_levels: int = 5
  stride: int = 1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: Streams, train: bool = False) -> tuple[Array, ...]:
    conv = make_conv(self.dtype, self.param_dtype)
    x = concat_streams(streams, align_corners=False)
    x = conv1x1(conv, self.out_channels, use_bias=True, name='reduction_conv.conv')(x)
    levels = []
    for i in range(self.num_levels):
      y = x if i == 0 else nn.avg_pool(x, (2**i, 2**i), strides=(2**i, 2**i))
      levels.append(conv3x3(conv, self.out_channels, stride=self.stride, use_bias=True,
                            name=f'fpn_convs.{i}.conv')(y))
    return tuple(levels)
