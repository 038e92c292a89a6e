"""The HRNet backbone: a stem, stage 1, then stages of parallel multi-resolution streams.

Streams are a plain tuple of NHWC maps, highest resolution first (1/4, 1/8, 1/16, 1/32).

Runs of identical modules (the HRModules of a stage, the BasicBlocks of a branch, stage 1's
Bottlenecks after the first) are applied with `nn.scan` over stacked variables when
`scan=True`, so XLA compiles each kind once instead of once per copy. A stacked group is named
by the official prefix and its index range: `stage3.0-3` holds modules 0..3 of stage 3 on a
leading axis, `branches.0.0-3` blocks 0..3 of branch 0 on the next one; `hrnet_jax.convert`
maps every slice to its official key.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax.errors import ConfigError
from hrnet_jax.models.layers import (CONV_OUTPUT, Array, BasicBlock, Bottleneck, ConvBN, Dtype,
                                     ModuleDef, conv3x3, make_conv, make_norm, upsample_to)

Streams = tuple[Array, ...]

# What the backward pass keeps of each stage-1 block and HRModule (`HRNet.remat`):
#   'none': whatever XLA keeps (every intermediate it chooses);
#   'conv': the convolution outputs only; BatchNorm, ReLU, resize and sums are recomputed from
#           them (cheap elementwise work). Less memory than 'none' and faster on CPU (BENCHMARKS.md);
#   'full': the block inputs only; the whole block runs again (least memory, ~1.3x compute).
REMAT_POLICIES = ('none', 'conv', 'full')


def rematted(module: type[nn.Module], policy: str) -> type[nn.Module]:
  """`module` with the backward-pass memory `policy` of REMAT_POLICIES; names are unchanged."""
  if policy not in REMAT_POLICIES:
    raise ConfigError(f'model.remat: {policy!r} is not one of {REMAT_POLICIES}')
  if policy == 'none':
    return module
  if policy == 'full':
    return nn.remat(module)
  return nn.remat(module, policy=jax.checkpoint_policies.save_only_these_names(CONV_OUTPUT))


def stacked_name(prefix: str, first: int, last: int) -> str:
  """The name of a scanned group: `stage3.0-3` = modules stage3.0 ... stage3.3, stacked."""
  return f'{prefix}.{first}-{last}'


def repeat(module: nn.Module, x: Any, length: int) -> Any:
  """Applies `module` `length` times in sequence, each copy with its own variables, stacked on a
  leading axis of every variable (one compiled body for all copies)."""
  scanned = nn.scan(lambda m, carry, _: (m(carry), None),
                    variable_axes={'params': 0, 'batch_stats': 0},
                    split_rngs={'params': True}, length=length)
  return scanned(module, x, None)[0]


def run_blocks(make: Any, x: Any, prefix: str, first: int, last: int, scan: bool) -> Any:
  """Modules `prefix.first` ... `prefix.last` (all alike) in sequence: one stacked scan group,
  or one module each. `make(name)` builds the module."""
  if scan and last > first:
    return repeat(make(stacked_name(prefix, first, last)), x, last - first + 1)
  for k in range(first, last + 1):
    x = make(f'{prefix}.{k}')(x)
  return x


class Transition(nn.Module):
  """Adapts the previous stage's streams to the next stage's widths and adds one new stream."""
  conv: ModuleDef
  norm: ModuleDef
  widths: Sequence[int]

  @nn.compact
  def __call__(self, streams: Streams) -> Streams:
    out = []
    for i, width in enumerate(self.widths):
      if i < len(streams):
        x = streams[i]
        if x.shape[-1] != width:
          x = ConvBN(self.conv, self.norm, width, name=str(i))(x)
      else:  # A new, lower-resolution stream from the lowest existing one.
        x = ConvBN(self.conv, self.norm, width, stride=2, name=f'{i}.0')(streams[-1])
      out.append(x)
    return tuple(out)


class HRModule(nn.Module):
  """Parallel branches of BasicBlocks, then the fuse (exchange) unit.

  Output i sums, in order j = 0, 1, ..., input j brought to stream i's resolution and width:
  conv1x1-BN then upsampling for j > i; stride-2 conv3x3 steps for j < i (ReLU on all but the
  last step). ReLU follows the sum. With `multi_scale_output=False` only output 0 is fused.
  """
  conv: ModuleDef
  norm: ModuleDef
  widths: Sequence[int]
  num_blocks: int
  upsample: str
  align_corners: bool
  multi_scale_output: bool = True
  scan: bool = False

  @nn.compact
  def __call__(self, streams: Streams) -> Streams:
    xs = []
    for i, x in enumerate(streams):
      block = lambda name, w=self.widths[i]: BasicBlock(self.conv, self.norm, w, name=name)
      xs.append(run_blocks(block, x, f'branches.{i}', 0, self.num_blocks - 1, self.scan))
    n = len(xs)
    if n == 1:
      return tuple(xs)

    fused = []
    for i in range(n if self.multi_scale_output else 1):
      y = None
      for j, x in enumerate(xs):
        if j > i:
          x = ConvBN(self.conv, self.norm, self.widths[i], kernel=1, relu=False,
                     name=f'fuse_layers.{i}.{j}')(x)
          x = upsample_to(x, xs[i].shape[1:3], self.upsample, self.align_corners, 2**(j - i))
        elif j < i:
          for k in range(i - j):
            last = k == i - j - 1
            x = ConvBN(self.conv, self.norm, self.widths[i] if last else self.widths[j],
                       stride=2, relu=not last, name=f'fuse_layers.{i}.{j}.{k}')(x)
        y = x if y is None else y + x
      fused.append(nn.relu(y))
    return tuple(fused)


class HRNet(nn.Module):
  """HRNet backbone; returns the tuple of streams of the last stage.

  Attributes follow the official configs: stage 1 has `stage1_blocks` Bottlenecks of
  `stage1_planes`; stages 2-4 have `num_modules` HRModules of `num_blocks` BasicBlocks per
  branch, branch widths C, 2C, 4C, 8C with C = `width`.
  """
  width: int = 18
  stage1_blocks: int = 4
  stage1_planes: int = 64
  num_modules: Sequence[int] = (1, 4, 3)
  num_blocks: int = 4
  stem_width: int = 64
  upsample: str = 'nearest'
  align_corners: bool = False
  multi_scale_output: bool = True
  bn_momentum: float = 0.9
  remat: str = 'conv'  # what the backward pass keeps: one of REMAT_POLICIES
  scan: bool = True  # stacked variables for runs of identical modules (see the module doc)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Streams:
    conv = make_conv(self.dtype, self.param_dtype)
    norm = make_norm(train, self.bn_momentum, self.dtype, self.param_dtype)

    x = jnp.asarray(x, self.dtype)
    x = nn.relu(norm(name='bn1')(conv3x3(conv, self.stem_width, 2, name='conv1')(x)))
    x = nn.relu(norm(name='bn2')(conv3x3(conv, self.stem_width, 2, name='conv2')(x)))
    block = rematted(Bottleneck, self.remat)
    module = rematted(HRModule, self.remat)
    x = block(conv, norm, self.stage1_planes, name='layer1.0')(x)  # widens: not like the rest
    x = run_blocks(lambda name: block(conv, norm, self.stage1_planes, name=name), x, 'layer1', 1,
                   self.stage1_blocks - 1, self.scan)

    streams = (x,)
    for s, modules in enumerate(self.num_modules):
      widths = tuple(self.width * 2**i for i in range(s + 2))
      streams = Transition(conv, norm, widths, name=f'transition{s + 1}')(streams)
      # Pose's last module fuses only stream 0: it differs from the others and runs alone.
      single_last = not self.multi_scale_output and s == len(self.num_modules) - 1
      make = lambda name, multi_scale=True: module(
          conv, norm, widths, self.num_blocks, self.upsample, self.align_corners, multi_scale,
          self.scan, name=name)
      alike = modules - 1 if single_last else modules
      streams = run_blocks(make, streams, f'stage{s + 2}', 0, alike - 1, self.scan)
      if single_last:
        streams = make(f'stage{s + 2}.{modules - 1}', multi_scale=False)(streams)
    return streams
