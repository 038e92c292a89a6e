"""Checkpoint files: PyTorch (.pth, .pth.tar, .pt), safetensors, and orbax directories.

torch is imported only to read or write .pth files. Writes go to a temporary name first and are
renamed into place, so a failure never leaves a partial or corrupted destination.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping

import numpy as np

from hrnet_jax.convert.core import ConversionError

TORCH_SUFFIXES = ('.pth', '.pth.tar', '.pt', '.bin')
SAFETENSORS_SUFFIX = '.safetensors'
META_FILE = 'hrnet_jax_meta.json'
_VARIABLES_DIR = 'variables'


def is_torch_file(path: str | os.PathLike) -> bool:
  name = str(path).lower()
  return name.endswith(TORCH_SUFFIXES + (SAFETENSORS_SUFFIX,))


def _import_torch(why: str):
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ConversionError(f'{why} needs PyTorch: pip install "hrnet-jax[torch]"') from None
  return torch


def read_torch_file(path: str | os.PathLike, trust_pickle: bool = False) -> Any:
  """Loads a .pth/.pt/.safetensors file; returns what it holds (usually a dict of tensors)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise ConversionError(f'{path}: no such file')
  if str(path).lower().endswith(SAFETENSORS_SUFFIX):
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    try:
      return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
      raise ConversionError(f'{path}: not a readable safetensors file ({e})') from None
  torch = _import_torch(f'reading {path}')
  try:
    return torch.load(str(path), map_location='cpu', weights_only=not trust_pickle)
  except Exception as e:  # truncated zip, random bytes, foreign pickles ...
    hint = ''
    if 'weights_only' in str(e) or 'Unsupported global' in str(e):
      hint = ' The file holds Python objects besides tensors; if you trust it, pass --trust-pickle.'
    raise ConversionError(f'{path}: not a readable PyTorch checkpoint '
                          f'({type(e).__name__}: {str(e).splitlines()[0][:300]}).{hint}') from None


def _atomic_target(dst: pathlib.Path, overwrite: bool) -> None:
  if dst.exists() and not overwrite:
    raise ConversionError(f'{dst} exists; pass --overwrite to replace it')
  dst.parent.mkdir(parents=True, exist_ok=True)


def write_torch_file(state: Mapping[str, np.ndarray], dst: str | os.PathLike,
                     overwrite: bool = False) -> None:
  """Writes a state_dict as .pth (torch.save) or .safetensors, atomically."""
  dst = pathlib.Path(dst)
  _atomic_target(dst, overwrite)
  fd, tmp = tempfile.mkstemp(prefix=dst.name + '.', suffix='.tmp', dir=dst.parent)
  os.close(fd)
  try:
    if str(dst).lower().endswith(SAFETENSORS_SUFFIX):
      from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
      save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, tmp)
    else:
      torch = _import_torch(f'writing {dst}')
      torch.save(collections.OrderedDict(
          (k, torch.from_numpy(np.array(v))) for k, v in state.items()), tmp)
    os.replace(tmp, dst)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_variables(variables: Mapping[str, Any], dst: str | os.PathLike, meta: Mapping[str, Any],
                    overwrite: bool = False) -> None:
  """Saves {'params', 'batch_stats'} as an orbax checkpoint directory, with a JSON of the arch.

  Layout: DST/variables (orbax StandardCheckpointer) and DST/hrnet_jax_meta.json.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  dst = pathlib.Path(dst).absolute()
  _atomic_target(dst, overwrite)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=dst.name + '.', suffix='.tmp', dir=dst.parent))
  try:
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(tmp / _VARIABLES_DIR, dict(variables))
      ckptr.wait_until_finished()
    (tmp / META_FILE).write_text(json.dumps(dict(meta), indent=2, sort_keys=True))
    if dst.exists():
      shutil.rmtree(dst)
    os.replace(tmp, dst)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)


def read_variables(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
  """Loads a directory written by `write_variables`: (variables as numpy, meta)."""
  import jax  # pylint: disable=import-outside-toplevel
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  path = pathlib.Path(path).absolute()
  meta_file = path / META_FILE
  if not (path / _VARIABLES_DIR).is_dir() or not meta_file.is_file():
    raise ConversionError(f'{path}: not an hrnet_jax variables checkpoint (expected '
                          f'{_VARIABLES_DIR}/ and {META_FILE} inside)')
  try:
    meta = json.loads(meta_file.read_text())
    with ocp.StandardCheckpointer() as ckptr:
      variables = ckptr.restore(path / _VARIABLES_DIR)
  except Exception as e:
    raise ConversionError(f'{path}: cannot restore ({type(e).__name__}: {e})') from None
  return jax.tree_util.tree_map(np.asarray, variables), meta
