"""Numerical checks of a conversion: bit-exact round trips and a forward pass against PyTorch."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from hrnet_jax.convert.core import ConversionError, normalize_state_dict

TOLERANCE = 1e-4  # relative: max |jax - torch| / max |torch|, per output


def relative_error(a: Any, b: Any) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check_same_tensors(expected: Mapping[str, Any], found: Mapping[str, Any], where: str) -> None:
  """Every tensor of `expected` is in `found`, bit for bit (num_batches_tracked aside)."""
  expected = normalize_state_dict(expected)
  found = normalize_state_dict(found)
  bad = [k for k in expected
         if k not in found or not np.array_equal(np.asarray(expected[k]), np.asarray(found[k]))]
  if bad:
    raise ConversionError(f'{where}: {len(bad)} tensors differ or are missing: {bad[:10]}')


def forward_errors(state_dict: Mapping[str, Any], variables: Mapping[str, Any], arch: str,
                   input_hw: tuple[int, int] | None = None, **overrides: Any) -> list[float]:
  """Relative errors of each output: the PyTorch reference with `state_dict` vs the Flax
  model with `variables`, eval mode, float32, on a fixed random batch (64x96; 128x192 for
  FCOS, whose GroupNorms on 1x1 maps of a smaller input see two values a group)."""
  import torch  # pylint: disable=import-outside-toplevel

  from hrnet_jax.convert import torch_hrnet  # pylint: disable=import-outside-toplevel
  from hrnet_jax.models import zoo  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel

  reference = torch_hrnet.build(arch, **overrides)
  reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()})
  if input_hw is None:
    input_hw = (128, 192) if arch.startswith('fcos_') else (64, 96)
  x = np.random.default_rng(0).standard_normal((2, *input_hw, 3), np.float32)
  # Weights trained on BGR (detection) see the channels turned around by the Flax model.
  bgr = zoo.model_config(arch, **overrides).get('input_bgr', False)
  with torch.no_grad():
    expected = reference(torch.from_numpy(np.ascontiguousarray(x[..., ::-1] if bgr else x))
                         .permute(0, 3, 1, 2))
  found = zoo.create_model(arch, **overrides).apply(variables, x, train=False)
  settings = zoo.model_config(arch, **overrides)
  if settings.get('legacy'):  # HRNet-Object-Detection's background comes first
    from hrnet_jax.convert import torch_rcnn  # pylint: disable=import-outside-toplevel
    expected = torch_rcnn.in_model_order(expected, True, not settings['class_agnostic'])
  maps = zoo.split_arch(arch)[0] not in zoo.TWO_STAGE_TASKS  # two-stage: boxes, 28x28 masks
  if settings.get('with_mask'):  # `exact` (the NMS cap) is the JAX protocol's own report
    found = dict(found, detections={k: v for k, v in found['detections'].items()
                                    if k != 'exact'})
  expected = jax.tree_util.tree_leaves(expected)  # FCOS: three outputs x five levels
  found = jax.tree_util.tree_leaves(found)
  errors = []
  for f, e in zip(found, expected):
    e = e.numpy()
    e = e.transpose(0, 2, 3, 1) if e.ndim == 4 and maps else e
    if f.shape != e.shape:
      raise ConversionError(f'output shape {f.shape} differs from PyTorch {e.shape}')
    errors.append(relative_error(f, e))
  return errors
