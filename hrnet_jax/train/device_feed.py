"""The training batches, already on the devices when the step asks for them.

The host pipeline (grain) prepares batches in its own threads or processes; this keeps the next
`depth` of them also transferred to the devices (`parallel.to_global`), so the copy of batch n+1
runs while step n computes (JAX dispatches steps asynchronously), and it times how long the loop
blocks on the host pipeline: the input-bound share of the step time.

A checkpoint must resume at the first batch no step has used, not at the host iterator's
position (which is `depth` batches further): the iterator's state is taken before each batch is
read and kept beside it, and `get_state` returns the state of the oldest batch not yet handed out.
"""

from __future__ import annotations

import collections
import json
import time
from typing import Any

import jax

from hrnet_jax.train import parallel


class DeviceFeed:
  """Iterator of global batches (dicts of sharded `jax.Array`) over `host_iter`'s host batches.

  Checkpointable by grain's handler (`grain.checkpoint.CheckpointSave/Restore`) through
  `get_state` / `set_state` / `start_prefetch`, in the same JSON as the host iterator's own."""

  def __init__(self, host_iter: Any, mesh: jax.sharding.Mesh, depth: int = 2):
    if depth < 1:
      raise ValueError(f'depth={depth}: expected at least 1 batch ahead')
    self.host_iter, self.mesh, self.depth = host_iter, mesh, depth
    self._ahead: collections.deque = collections.deque()  # (host state before it, batch)
    self.waited = 0.0  # seconds blocked on the host pipeline, since `take_waited`

  def _read(self) -> None:
    state = self.host_iter.get_state()
    start = time.perf_counter()
    batch = next(self.host_iter)
    self.waited += time.perf_counter() - start
    self._ahead.append((state, parallel.to_global(batch, self.mesh)))

  def __iter__(self) -> 'DeviceFeed':
    return self

  def __next__(self) -> dict[str, jax.Array]:
    if not self._ahead:
      self._read()
    _, batch = self._ahead.popleft()
    while len(self._ahead) < self.depth:  # the next ones start their transfer now
      self._read()
    return batch

  def take_waited(self) -> float:
    """Seconds blocked on the host pipeline since the last call."""
    waited, self.waited = self.waited, 0.0
    return waited

  # The checkpoint interface of grain's handler (non-DatasetIterator path: bytes of JSON).
  def get_state(self) -> bytes:
    state = self._ahead[0][0] if self._ahead else self.host_iter.get_state()
    return json.dumps(state, indent=4).encode()

  def set_state(self, state: bytes) -> None:
    self._ahead.clear()
    self.host_iter.set_state(json.loads(state))

  def start_prefetch(self) -> None:
    """Called by grain's handler after a restore; batches are read on the first `next`."""
