"""Checkpoint files: PyTorch (.pth, .pth.tar, .pt), safetensors, and orbax directories.

torch is imported only to read or write .pth files. Writes go to a temporary name first and are
renamed into place, so a failure never leaves a partial or corrupted destination, and an existing
one survives it. Overwriting replaces only what this converter wrote (see `_refusal`), and new
files and directories get the usual umask-derived permissions.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import pathlib
import secrets
import shutil
import stat
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from hrnet_jax.errors import ConversionError

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


def _refusal(dst: pathlib.Path, directory: bool) -> str | None:
  """Why an existing DST is not something this converter wrote, so must not be replaced.

  A variables checkpoint is a real directory holding only `META_FILE` (a regular file) and
  `variables/` (a real directory), exactly what `write_variables` leaves; an empty directory is
  accepted too (nothing to lose). A PyTorch/safetensors destination must be a regular file.
  Symbolic links are never replaced: the converter does not write them.
  """
  if dst.is_symlink():
    return 'is a symbolic link'
  if not directory:
    return None if dst.is_file() else 'is a directory' if dst.is_dir() else 'is not a regular file'
  if not dst.is_dir():
    return 'is not a directory'
  entries = {e.name: e for e in os.scandir(dst)}
  ours = {META_FILE, _VARIABLES_DIR}
  if not entries or (set(entries) == ours and entries[META_FILE].is_file(follow_symlinks=False)
                     and entries[_VARIABLES_DIR].is_dir(follow_symlinks=False)):
    return None
  others = sorted(set(entries) - ours)
  if others:
    more = f' and {len(others) - 3} more' if len(others) > 3 else ''
    return f'holds files this converter did not write ({", ".join(map(repr, others[:3]))}{more})'
  return 'is not an hrnet_jax variables checkpoint'


def _prepare(dst: pathlib.Path, overwrite: bool, directory: bool) -> None:
  """Refuses an existing DST unless --overwrite and the converter wrote it; makes the parent."""
  if os.path.lexists(dst):
    why = _refusal(dst, directory)
    if why:
      what = 'a checkpoint directory' if directory else 'a file'
      raise ConversionError(f'{dst} exists and {why}; not replacing it (--overwrite replaces only '
                            f'{what} this converter wrote)')
    if not overwrite:
      raise ConversionError(f'{dst} exists; pass --overwrite to replace it')
  for parent in dst.parents:  # mkdir would only say 'File exists'
    if parent.exists():
      if not parent.is_dir():
        raise ConversionError(f'cannot write {dst}: {parent} is not a directory')
      break
  dst.parent.mkdir(parents=True, exist_ok=True)


def new_sibling(dst: pathlib.Path, tag: str,
                 create: Callable[[pathlib.Path], Any]) -> pathlib.Path:
  """A fresh name next to DST (same filesystem, so renames are atomic), made by `create`.

  The name keeps DST's suffix, so a temporary .safetensors still reads as one. `create` makes it
  with os.mkdir / os.open modes 0777 / 0666, i.e. what the umask allows, like any new file
  (tempfile's 0700 / 0600 would stick to the result).
  """
  for _ in range(100):
    path = dst.with_name(f'{dst.stem}.{tag}-{secrets.token_hex(4)}{dst.suffix}')
    try:
      create(path)
      return path
    except FileExistsError:
      continue
  raise FileExistsError(errno.EEXIST, 'no free temporary name', str(dst))


def create_file(path: pathlib.Path) -> None:
  os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def swap_in(tmp: pathlib.Path, dst: pathlib.Path) -> None:
  """Renames the finished TMP directory to DST.

  A directory that is not empty cannot be renamed over, so an existing DST is first renamed
  aside and deleted only once TMP is in its place; if that fails, it is renamed back.
  """
  if not os.path.lexists(dst):
    os.rename(tmp, dst)
    return
  old = new_sibling(dst, 'old', os.mkdir)
  try:
    os.replace(dst, old)  # onto the empty directory that reserved the name
  except BaseException:
    os.rmdir(old)
    raise
  try:
    os.replace(tmp, dst)
  except BaseException:
    os.replace(old, dst)
    raise
  shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _writing(dst: pathlib.Path) -> Iterator[None]:
  """OS errors (read-only or missing parent, disk full ...) become one-line ConversionErrors."""
  try:
    yield
  except OSError as e:
    where = f': {e.filename}' if e.filename and os.fspath(e.filename) != str(dst) else ''
    raise ConversionError(f'cannot write {dst}: {e.strerror or e}{where}') from None


def write_torch_file(state: Mapping[str, np.ndarray], dst: str | os.PathLike,
                     overwrite: bool = False,
                     check: Callable[[pathlib.Path], None] | None = None) -> None:
  """Writes a state_dict as .pth (torch.save) or .safetensors, atomically.

  `check(tmp)` runs on the finished temporary file before it replaces DST, so a failed check
  (it raises) leaves an existing DST as it was. `overwrite` replaces only a regular file.
  """
  dst = pathlib.Path(dst)
  with _writing(dst):
    _prepare(dst, overwrite, directory=False)
    tmp = new_sibling(dst, 'tmp', create_file)
    try:
      mode = stat.S_IMODE(os.stat(tmp).st_mode)  # safetensors recreates the file as 0600
      if str(dst).lower().endswith(SAFETENSORS_SUFFIX):
        from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
        save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp))
      else:
        torch = _import_torch(f'writing {dst}')
        torch.save(collections.OrderedDict(
            (k, torch.from_numpy(np.array(v))) for k, v in state.items()), tmp)
      os.chmod(tmp, mode)
      if check is not None:
        check(tmp)
      os.replace(tmp, dst)
    finally:
      if os.path.lexists(tmp):
        os.remove(tmp)


def write_variables(variables: Mapping[str, Any], dst: str | os.PathLike, meta: Mapping[str, Any],
                    overwrite: bool = False,
                    check: Callable[[pathlib.Path], None] | None = None) -> None:
  """Saves {'params', 'batch_stats'} as an orbax checkpoint directory, with a JSON of the arch.

  Layout: DST/variables (orbax StandardCheckpointer) and DST/hrnet_jax_meta.json, nothing else:
  that is how `overwrite` tells a checkpoint this function wrote (or an empty directory) from a
  folder of the user's, which it refuses to touch. Written to a temporary sibling, checked by
  `check(tmp)` if given (it raises to abandon the write), then swapped in; an existing DST is
  deleted only after the new one is in place.
  """
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel

  dst = pathlib.Path(dst).absolute()
  with _writing(dst):
    _prepare(dst, overwrite, directory=True)
    tmp = new_sibling(dst, 'tmp', os.mkdir)
    try:
      with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp / _VARIABLES_DIR, dict(variables))
        ckptr.wait_until_finished()
      (tmp / META_FILE).write_text(json.dumps(dict(meta), indent=2, sort_keys=True))
      if check is not None:
        check(tmp)
      swap_in(tmp, dst)
    finally:
      if os.path.lexists(tmp):
        shutil.rmtree(tmp, ignore_errors=True)


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
