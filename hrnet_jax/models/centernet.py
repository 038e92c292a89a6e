"""CenterNet's keypoint-triplet branches (Duan et al., "CenterNet: Keypoint Triplets for Object
Detection"), as the authors' implementation builds them on a stride-4 feature map: cascade corner
pooling for the top-left and bottom-right corners, centre pooling for the centres, and per
branch the heads for heatmaps, embeddings and offsets. HRNetV2 feeds them in the TPAMI paper
(no HRNet variant was released; the backbone side is ours).

`conv` and `norm` are the model's factories (layers.make_conv / make_norm); every
"convolution" of the authors is conv 3x3 -> BN -> ReLU (`ConvBN`), their width inside the
pooling modules 128 (`pool_channels`).
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from hrnet_jax import ops
from hrnet_jax.models import initializers
from hrnet_jax.models.backbone import Streams
from hrnet_jax.models.heads import concat_streams
from hrnet_jax.models.layers import (Array, ConvBN, Dtype, ModuleDef, conv1x1, conv3x3, make_conv,
                                     make_norm)

Pool = Callable[[Array], Array]
POOL_CHANNELS = 128  # the authors' width inside the pooling modules


def _merge(conv: ModuleDef, norm: ModuleDef, features: int, x: Array, pooled: Array) -> Array:
  """What both pooling modules end with (submodules of the calling module): the pooled maps
  convolved and normalized, plus a 1x1 projection of the input, ReLU, a last conv-BN-ReLU."""
  pooled = norm(name='p_bn1')(conv3x3(conv, features, name='p_conv1')(pooled))
  skip = norm(name='bn1')(conv1x1(conv, features, name='conv1')(x))
  return ConvBN(conv, norm, features, name='conv2')(nn.relu(pooled + skip))


class CornerPool(nn.Module):
  """Cascade corner pooling of one corner: `first` pools along columns (top_pool for the
  top-left corner, bottom_pool for the bottom-right), `second` along rows (left_pool /
  right_pool). Each direction's map first adds the other direction's pooled look-ahead map
  (the cascade), then is pooled; the two pooled maps are summed, convolved and added to a 1x1
  projection of the input (a residual), then a last conv-BN-ReLU."""
  conv: ModuleDef
  norm: ModuleDef
  features: int
  first: Pool
  second: Pool
  pool_channels: int = POOL_CHANNELS

  @nn.compact
  def __call__(self, x: Array) -> Array:
    unit = lambda name: ConvBN(self.conv, self.norm, self.pool_channels, name=name)
    look1 = self.second(unit('look_conv1')(x))
    pool1 = self.first(conv3x3(self.conv, self.pool_channels, name='P1_look_conv')(
        unit('p1_conv1')(x) + look1))
    look2 = self.first(unit('look_conv2')(x))
    pool2 = self.second(conv3x3(self.conv, self.pool_channels, name='P2_look_conv')(
        unit('p2_conv1')(x) + look2))
    return _merge(self.conv, self.norm, self.features, x, pool1 + pool2)


class CenterPool(nn.Module):
  """Centre pooling: one map's whole-column maxima plus another's whole-row maxima (each the
  authors' chain of two directional pools), convolved and added to a 1x1 projection of the
  input, then a last conv-BN-ReLU."""
  conv: ModuleDef
  norm: ModuleDef
  features: int
  pool_channels: int = POOL_CHANNELS

  @nn.compact
  def __call__(self, x: Array) -> Array:
    unit = lambda name: ConvBN(self.conv, self.norm, self.pool_channels, name=name)
    pool1 = ops.column_max(unit('p1_conv1')(x))
    pool2 = ops.row_max(unit('p2_conv1')(x))
    return _merge(self.conv, self.norm, self.features, x, pool1 + pool2)


def top_left_pool(conv: ModuleDef, norm: ModuleDef, features: int, name: str,
                  pool_channels: int = POOL_CHANNELS) -> CornerPool:
  return CornerPool(conv, norm, features, ops.top_pool, ops.left_pool, pool_channels, name=name)


def bottom_right_pool(conv: ModuleDef, norm: ModuleDef, features: int, name: str,
                      pool_channels: int = POOL_CHANNELS) -> CornerPool:
  return CornerPool(conv, norm, features, ops.bottom_pool, ops.right_pool, pool_channels,
                    name=name)


class KeypointHead(nn.Module):
  """One output of a branch (the authors' `make_kp_layer`): conv 3x3 with bias -> ReLU -> conv
  1x1 to `outputs` channels."""
  conv: ModuleDef
  features: int
  outputs: int
  bias: float = 0.0

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = nn.relu(conv3x3(self.conv, self.features, use_bias=True, name='0')(x))
    return conv1x1(self.conv, self.outputs, use_bias=True,
                   bias_init=nn.initializers.constant(self.bias), name='1')(x)


HEAT_BIAS = -2.19  # the heatmaps' last bias, as the authors fill it: probabilities start near 0.1


class CenterNetHead(nn.Module):
  """The HRNetV2 representation (the four streams resized to stride 4 and concatenated) through
  the authors' `cnv` layer (conv-BN-ReLU to `cnv_channels`), then the top-left, bottom-right
  and centre branches. Returns NHWC maps at stride 4: `{tl,br,ct}_heat` (class logits),
  `{tl,br}_tag` (1-d embeddings), `{tl,br,ct}_regr` (x, y offsets).

  Ours, as no HRNet variant was released: the `cnv` layer reads the concatenated streams (15x
  the width in channels) where the authors' reads the hourglass output (256), and the heads'
  hidden width is the authors' 256 (their `curr_dim`). `pool_channels` below the authors' 128
  only for small runs (the demo)."""
  num_classes: int = 80
  cnv_channels: int = 256
  head_channels: int = 256
  pool_channels: int = POOL_CHANNELS
  bn_momentum: float = 0.9
  align_corners: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: Streams, train: bool = False) -> dict[str, Array]:
    # PyTorch's default init, as the authors' branches have (biases: zero here, theirs drawn):
    # the zoo's He fan-out init gives a 1-channel 1x1 output a weight std of sqrt(2), logits
    # spread over tens of units at the start, and the focal loss's clipped probabilities no
    # gradient at many positive cells.
    conv = functools.partial(make_conv(self.dtype, self.param_dtype),
                             kernel_init=initializers.torch_default)
    norm = make_norm(train, self.bn_momentum, self.dtype, self.param_dtype)
    cnv = ConvBN(conv, norm, self.cnv_channels, name='cnv')(
        concat_streams(streams, self.align_corners))
    p = self.pool_channels
    branches = {'tl': top_left_pool(conv, norm, self.cnv_channels, 'tl_cnv', p)(cnv),
                'br': bottom_right_pool(conv, norm, self.cnv_channels, 'br_cnv', p)(cnv),
                'ct': CenterPool(conv, norm, self.cnv_channels, p, name='ct_cnv')(cnv)}
    out = {}
    for b, y in branches.items():
      head = lambda n, what, bias=0.0: KeypointHead(conv, self.head_channels, n, bias,
                                                    name=f'{b}_{what}')(y)
      out[f'{b}_heat'] = head(self.num_classes, 'heat', HEAT_BIAS)
      if b != 'ct':
        out[f'{b}_tag'] = head(1, 'tag')
      out[f'{b}_regr'] = head(2, 'regr')
    return out
