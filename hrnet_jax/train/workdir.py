"""The training workdir: where it is by default, and one run at a time in it."""

from __future__ import annotations

import fcntl
import os
import pathlib
import socket

from hrnet_jax.errors import UserError

LOCK_FILE = '.lock'


def default_workdir(config_spec: str) -> str:
  """runs/<recipe name>[_<arg>] for `--config configs/seg_cityscapes.py[:arg]`."""
  path, _, arg = config_spec.partition(':')
  name = pathlib.Path(path).stem
  if arg:
    name += '_' + ''.join(c if c.isalnum() or c in '-.' else '_' for c in arg)
  return str(pathlib.Path('runs') / name)


def check_workdir(workdir: str | os.PathLike) -> bool:
  """Whether `workdir` exists already; an error when it is a file."""
  path = pathlib.Path(workdir)
  if path.exists() and not path.is_dir():
    raise UserError(f'workdir {path} exists and is not a directory')
  return path.exists()


class WorkdirLock:
  """An exclusive lock on `workdir/.lock` while a run trains there, so that a second run on the
  same workdir stops with a clear error instead of racing the first one's checkpoints. The lock
  is the kernel's (flock): it goes with the process, so a killed run never leaves a stale one."""

  def __init__(self, workdir: str | os.PathLike):
    path = pathlib.Path(workdir)
    try:
      path.mkdir(parents=True, exist_ok=True)
      self.path = path / LOCK_FILE
      self.file = open(self.path, 'a+')
    except OSError as e:
      raise UserError(f'workdir {path}: cannot write there ({e.strerror})') from None
    try:
      fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      self.file.seek(0)
      holder = self.file.read().strip() or 'another process'
      self.file.close()
      raise UserError(f'{path} is in use by PID {holder}: wait for that run, stop it, or '
                      'use another --workdir') from None
    self.file.seek(0)
    self.file.truncate()
    self.file.write(f'{os.getpid()} on {socket.gethostname()}\n')
    self.file.flush()

  def release(self) -> None:
    if self.file.closed:
      return
    try:
      self.path.unlink()
    except OSError:
      pass
    self.file.close()  # closing releases the lock


def lock_workdir(workdir: str | os.PathLike, process_index: int) -> WorkdirLock | None:
  """The lock of a local workdir, taken by process 0 of a job; None for the other processes and
  for a bucket (gs://...), where no file lock exists."""
  if process_index != 0 or '://' in str(workdir):
    return None
  return WorkdirLock(workdir)
