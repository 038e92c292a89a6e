"""Task heads on the tuple of streams: V1 (pose), V2 (segmentation, face), V2p (detection
pyramid), classification (HRNet-Wx-C) and OCR. Every head is called as `head(streams, train)`."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax.models import initializers
from hrnet_jax.models.backbone import Streams
from hrnet_jax.models.layers import (Array, Bottleneck, ConvBN, Dtype, GroupNorm, conv1x1, conv3x3,
                                     make_conv, make_norm, resize_bilinear)


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
                   kernel_init=initializers.normal(0.001))(streams[0])


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
                    kernel_init=initializers.lecun_normal, name='classifier')(y)


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


def average_pool(x: Array, k: int) -> Array:
  """k x k average pooling at stride k, trailing rows and columns that fill no window dropped
  (PyTorch's avg_pool2d(k, k)); a reshape and a mean, which every exporter understands."""
  n, h, w, c = x.shape
  x = x[:, :h // k * k, :w // k * k]
  return jnp.mean(x.reshape(n, h // k, k, w // k, k, c), axis=(2, 4))


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
      y = x if i == 0 else average_pool(x, 2**i)
      levels.append(conv3x3(conv, self.out_channels, stride=self.stride, use_bias=True,
                            name=f'fpn_convs.{i}.conv')(y))
    return tuple(levels)


class Scale(nn.Module):
  """One learnable scalar multiplying its input (mmcv's `Scale`: FCOS's per-level box scale)."""
  init: float = 1.0
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param('scale', nn.initializers.constant(self.init), (), self.param_dtype)
    return x * scale.astype(x.dtype)


class FCOSHead(nn.Module):
  """The FCOS head of mmdetection v2, as in the released FCOS-HRNetV2p detectors: on every
  pyramid level (shared weights), a classification tower and a regression tower of
  `stacked_convs` x (3x3 conv without bias, GroupNorm, ReLU); then a 3x3 conv to the class
  logits (sigmoid, prior 0.01), a 3x3 conv to the 4 box distances (left, top, right, bottom)
  as exp(scale_l * x) with a learnable scale per level, and a 3x3 conv to the centerness logit
  (on the classification tower, or on the regression tower with `centerness_on_reg`).

  Returns (class logits, distances, centerness logits), each a tuple over levels of NHWC maps;
  distances are in input pixels."""
  num_classes: int = 80
  feat_channels: int = 256
  stacked_convs: int = 4
  num_levels: int = 5
  gn_groups: int = 32
  centerness_on_reg: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, levels: tuple[Array, ...], train: bool = False
               ) -> tuple[tuple[Array, ...], tuple[Array, ...], tuple[Array, ...]]:
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    init = initializers.normal(0.01)  # mmdetection's head init (std 0.01, zero bias)
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)),
                             kernel_init=init, **dt)

    def tower(name):
      return [(conv(self.feat_channels, use_bias=False, name=f'{name}.{i}.conv'),
               GroupNorm(self.gn_groups, name=f'{name}.{i}.gn', **dt))
              for i in range(self.stacked_convs)]

    cls_tower, reg_tower = tower('cls_convs'), tower('reg_convs')
    prior = -math.log((1 - 0.01) / 0.01)  # every class starts at probability 0.01
    conv_cls = conv(self.num_classes, bias_init=nn.initializers.constant(prior), name='conv_cls')
    conv_reg = conv(4, name='conv_reg')
    conv_ctr = conv(1, name='conv_centerness')
    scales = [Scale(param_dtype=self.param_dtype, name=f'scales.{i}')
              for i in range(self.num_levels)]

    def run(layers, x):
      for c, gn in layers:
        x = nn.relu(gn(c(x)))
      return x

    logits, distances, centerness = [], [], []
    for level, x in enumerate(levels):
      cls_feat, reg_feat = run(cls_tower, x), run(reg_tower, x)
      logits.append(conv_cls(cls_feat))
      reg = scales[level](conv_reg(reg_feat))
      distances.append(jnp.exp(reg.astype(jnp.promote_types(reg.dtype, jnp.float32))))
      centerness.append(conv_ctr(reg_feat if self.centerness_on_reg else cls_feat))
    return tuple(logits), tuple(distances), tuple(centerness)


class FCOS(nn.Module):
  """The FCOS detector's head on the backbone: the HRNetV2p pyramid (`neck`) and the FCOS head
  (`bbox_head`), named as mmdetection's state_dict."""
  num_classes: int = 80
  out_channels: int = 256
  num_levels: int = 5
  neck_stride: int = 2
  stacked_convs: int = 4
  gn_groups: int = 32
  centerness_on_reg: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: Streams, train: bool = False):
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    levels = PyramidNeck(self.out_channels, self.num_levels, self.neck_stride, name='neck',
                         **dt)(streams, train)
    return FCOSHead(self.num_classes, self.out_channels, self.stacked_convs, self.num_levels,
                    self.gn_groups, self.centerness_on_reg, name='bbox_head', **dt)(levels, train)
