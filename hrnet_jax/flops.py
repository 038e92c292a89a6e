"""Model FLOPs without running the model.

The papers count multiply-adds of convolution and linear layers, every kernel tap including the
padded ones, and divide by 2^30. `flops(..., convention='paper')` counts exactly that from the
traced program (the convolutions and matmuls XLA will be given). `convention='xla'` reports
XLA's cost analysis of the lowered forward instead: 2 FLOPs per multiply-add, padding taps
skipped, elementwise work included (about 2.1x the paper figure), in units of 1e9.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

from hrnet_jax.models import layers, zoo


def _conv_macs(eqn) -> int:
  lhs, rhs = (v.aval for v in eqn.invars)
  out = eqn.outvars[0].aval
  dn = eqn.params['dimension_numbers']
  kernel_spatial = [rhs.shape[d] for d in dn.rhs_spec[2:]]
  in_features = rhs.shape[dn.rhs_spec[1]]  # already divided by feature_group_count
  return int(np.prod(out.shape)) * int(np.prod(kernel_spatial)) * in_features


def _dot_macs(eqn) -> int:
  lhs, rhs = (v.aval for v in eqn.invars)
  (lc, _), (lb, _) = eqn.params['dimension_numbers']
  out = eqn.outvars[0].aval
  contracted = int(np.prod([lhs.shape[d] for d in lc]))
  return int(np.prod(out.shape)) * contracted


def _count(jaxpr, include_matmul: bool) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name in ('jit', 'pjit') and eqn.params.get('name') == layers.interpolate_axis.__name__:
      continue  # bilinear resampling as a matmul: not a layer in the papers' counts
    if name == 'conv_general_dilated':
      total += _conv_macs(eqn)
    elif name == 'dot_general' and include_matmul:
      total += _dot_macs(eqn)
    repeats = eqn.params['length'] if name == 'scan' else 1  # a scanned group runs its body n times
    for sub in jex_core.jaxprs_in_params(eqn.params):
      total += repeats * _count(sub, include_matmul)
  return total


def _forward(arch: str, input_hw: tuple[int, int], batch: int, overrides: dict[str, Any]):
  model = zoo.create_model(arch, **overrides)
  variables = zoo.init_shapes(arch, **overrides)
  images = jax.ShapeDtypeStruct((batch, *input_hw, 3), jnp.float32)
  return (lambda v, x: model.apply(v, x, train=False)), (variables, images)


def flops(arch: str, input_hw: tuple[int, int], convention: str = 'paper', batch: int = 1,
          **overrides: Any) -> float:
  """GFLOPs of one forward pass of `arch` on `batch` images of `input_hw` (h, w).

  'paper': conv and linear multiply-adds / 2^30 (attention matmuls, as in OCR, are included:
  they are linear layers over features). 'xla': XLA's cost-analysis FLOPs / 1e9.
  """
  fn, args = _forward(arch, tuple(input_hw), batch, overrides)
  if convention == 'paper':
    jaxpr = jax.make_jaxpr(fn)(*args)
    return _count(jaxpr.jaxpr, include_matmul=True) / 2**30
  if convention == 'xla':
    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost['flops']) / 1e9
  raise ValueError(f"convention must be 'paper' or 'xla', got {convention!r}")
