"""CenterNet's keypoint-triplet branches (Duan et al., "CenterNet: Keypoint Triplets for Object
Detection"), as the authors' implementation builds them on a stride-4 feature map: cascade corner
pooling for the top-left and bottom-right corners, centre pooling for the centres, and per
branch the heads for heatmaps, embeddings and offsets. HRNetV2 feeds them in the TPAMI paper
(no HRNet variant was released; the backbone side is ours).

`conv` and `norm` are the model's factories (layers.make_conv / make_norm); every
"convolution" of the authors is conv 3x3 -> BN -> ReLU (`ConvBN`), their intermediate width
128.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

from hrnet_jax import ops
from hrnet_jax.models.layers import Array, ConvBN, ModuleDef, conv1x1, conv3x3

Pool = Callable[[Array], Array]
POOL_CHANNELS = 128  # the authors' width inside the pooling modules


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

  @nn.compact
  def __call__(self, x: Array) -> Array:
    unit = lambda name: ConvBN(self.conv, self.norm, POOL_CHANNELS, name=name)
    look1 = self.second(unit('look_conv1')(x))
    pool1 = self.first(conv3x3(self.conv, POOL_CHANNELS, name='P1_look_conv')(
        unit('p1_conv1')(x) + look1))
    look2 = self.first(unit('look_conv2')(x))
    pool2 = self.second(conv3x3(self.conv, POOL_CHANNELS, name='P2_look_conv')(
        unit('p2_conv1')(x) + look2))
    pooled = self.norm(name='p_bn1')(conv3x3(self.conv, self.features, name='p_conv1')(
        pool1 + pool2))
    skip = self.norm(name='bn1')(conv1x1(self.conv, self.features, name='conv1')(x))
    return ConvBN(self.conv, self.norm, self.features, name='conv2')(nn.relu(pooled + skip))


class CenterPool(nn.Module):
  """Centre pooling: one map's whole-column maxima plus another's whole-row maxima (each the
  authors' chain of two directional pools), convolved and added to a 1x1 projection of the
  input, then a last conv-BN-ReLU."""
  conv: ModuleDef
  norm: ModuleDef
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    unit = lambda name: ConvBN(self.conv, self.norm, POOL_CHANNELS, name=name)
    pool1 = ops.column_max(unit('p1_conv1')(x))
    pool2 = ops.row_max(unit('p2_conv1')(x))
    pooled = self.norm(name='p_bn1')(conv3x3(self.conv, self.features, name='p_conv1')(
        pool1 + pool2))
    skip = self.norm(name='bn1')(conv1x1(self.conv, self.features, name='conv1')(x))
    return ConvBN(self.conv, self.norm, self.features, name='conv2')(nn.relu(pooled + skip))


def top_left_pool(conv: ModuleDef, norm: ModuleDef, features: int, name: str) -> CornerPool:
  return CornerPool(conv, norm, features, ops.top_pool, ops.left_pool, name=name)


def bottom_right_pool(conv: ModuleDef, norm: ModuleDef, features: int, name: str) -> CornerPool:
  return CornerPool(conv, norm, features, ops.bottom_pool, ops.right_pool, name=name)
