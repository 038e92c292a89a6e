"""Training logs: a progress line on stdout and TensorBoard event files (process 0 only)."""

from __future__ import annotations

import os
import time
from typing import Any

import jax


def _duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


class Logger:
  """`scalars(step, {...})` writes to TensorBoard; `progress(...)` prints a bar with the figures."""

  def __init__(self, workdir: str | os.PathLike, total_steps: int, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.total = total_steps
    self.start = time.time()
    self.writer = None
    if self.enabled:
      from tensorboardX import SummaryWriter
      self.writer = SummaryWriter(os.path.join(os.fspath(workdir), 'tensorboard'))

  def scalars(self, step: int, values: dict[str, Any]) -> None:
    if self.writer is not None:
      for k, v in values.items():
        self.writer.add_scalar(k, float(v), step)
      self.writer.flush()

  def progress(self, step: int, values: dict[str, Any], first_step: int = 0) -> None:
    if not self.enabled:
      return
    width = 24
    done = int(width * step / max(1, self.total))
    elapsed = time.time() - self.start
    eta = elapsed / max(1, step - first_step) * (self.total - step)
    figures = '  '.join(f'{k} {_fmt(v)}' for k, v in values.items())
    line = (f'[{"#" * done}{"." * (width - done)}] {step}/{self.total}  {figures}  '
            f'elapsed {_duration(elapsed)}  eta {_duration(eta)}')
    print(line, flush=True)

  def info(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()


def _fmt(v: Any) -> str:
  v = float(v)
  if v == 0 or 1e-3 <= abs(v) < 1e4:
    return f'{v:.4g}'
  return f'{v:.3e}'

