"""Shared helpers: PyTorch references are optional; tests that need them skip without torch."""

import os
import pathlib
import tempfile

import jax
import numpy as np
import pytest

# Trainer tests compile the same tiny programs many times: share them through the disk cache
# (subprocesses inherit it through the environment).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', tempfile.mkdtemp(prefix='hrnet_jax_xla_'))
jax.config.update('jax_compilation_cache_dir', os.environ['JAX_COMPILATION_CACHE_DIR'])
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)

DATA = pathlib.Path(__file__).parent / 'data'


def relative_error(a, b) -> float:
  """max |a - b| / max |b|: the bound the parity tests hold."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def nchw_to_nhwc(t) -> np.ndarray:
  a = t.detach().numpy()
  return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def randomize_torch_bn(model, seed: int = 1) -> None:
  """Non-trivial BN affine parameters and running statistics, so eval mode is a real test."""
  torch = pytest.importorskip('torch')
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5, generator=g)
        m.bias.normal_(0.0, 0.1, generator=g)
        m.running_mean.normal_(0.0, 0.1, generator=g)
        m.running_var.uniform_(0.5, 1.5, generator=g)


def read_reference_layout(name: str) -> list[tuple[str, tuple[int, ...]]]:
  """`name [d0, d1, ...]` per line, as dumped from the official models."""
  out = []
  for line in (DATA / name).read_text().splitlines():
    key, shape = line.split(' ', 1)
    dims = shape.strip('[]').replace(' ', '')
    out.append((key, tuple(int(d) for d in dims.split(',')) if dims else ()))
  return out
