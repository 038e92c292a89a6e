"""grain input pipelines: a per-host shard of a source -> transforms -> batches.

Training iterators are infinite, deterministic functions of (seed, step): the order of samples
and every random augmentation depend only on the seed and the element's global index, not on the
number of workers or hosts (each host takes every P-th element of the one global order, so the
P host batches of a step together hold exactly the global batch a single host would read), and
the iterator state goes into the checkpoint so a resume continues exactly.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import threading
import time
from typing import Any, Callable, Iterator

import grain
import numpy as np


def _host_shard(ds: grain.MapDataset, process_index: int, process_count: int) -> grain.MapDataset:
  return ds[process_index::process_count] if process_count > 1 else ds


def train_iterator(source: Any, transform: Callable, *, batch_size: int, seed: int,
                   num_workers: int = 0, process_index: int = 0, process_count: int = 1,
                   prefetch: int = 2, groups: np.ndarray | None = None) -> grain.DatasetIterator:
  """Infinite iterator of host-local batches (`batch_size` per host): shuffled each epoch,
  randomly augmented.

  `transform(sample, rng)` gets a numpy Generator seeded from (seed, epoch, index).
  `num_workers` > 0 runs the transforms in that many processes. With `groups` (an int per
  sample) every global batch holds samples of one group only (`GroupedOrder`), so a task can
  pad each group to its own shape (detection: landscape and portrait canvases).
  """
  ds = grain.MapDataset.source(source)
  if len(ds) < batch_size * process_count:
    raise ValueError(f'the training split has {len(ds)} samples, fewer than the global batch '
                     f'size {batch_size * process_count}')
  if groups is None:
    ds = ds.seed(seed).shuffle().random_map(transform).repeat()
  else:
    order = GroupedOrder(source, groups, batch_size * process_count, seed)
    ds = grain.MapDataset.source(order).seed(seed).random_map(transform)
  ds = _host_shard(ds, process_index, process_count)
  ds = ds.batch(batch_size, drop_remainder=True)
  threads = 0 if num_workers else 4
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads,
                                            prefetch_buffer_size=max(prefetch, threads)))
  if num_workers:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers,
                                                     per_worker_buffer_size=prefetch),
                        worker_init_fn=functools.partial(exit_with_parent, os.getpid()))
  return iter(it)


class GroupedOrder:
  """The training order when batches must not mix groups, as random access (picklable, so
  grain checkpoints and resumes it by position like any source).

  Each epoch (a function of seed and epoch only): the samples of every group are shuffled and
  cut into global batches, a group's last batch filled up with the first samples of its own
  shuffled order (every sample is seen each epoch), and all batches shuffled together. Indexing
  runs over `EPOCHS` epochs, more than any schedule takes."""
  EPOCHS = 10**6

  def __init__(self, source: Any, groups: np.ndarray, global_batch: int, seed: int):
    groups = np.asarray(groups)
    if len(groups) != len(source):
      raise ValueError(f'{len(groups)} batch groups for {len(source)} samples')
    self.source, self.global_batch, self.seed = source, global_batch, seed
    self.members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    self.epoch_len = sum(-(-len(m) // global_batch) * global_batch for m in self.members)
    self._cached: tuple[int, np.ndarray] | None = None

  def epoch_order(self, epoch: int) -> np.ndarray:
    if self._cached is None or self._cached[0] != epoch:
      rng = np.random.default_rng([self.seed, epoch, 0x6b])
      batches = []
      for m in self.members:
        m = rng.permutation(m)
        m = np.resize(m, -(-len(m) // self.global_batch) * self.global_batch)
        batches.extend(m.reshape(-1, self.global_batch))
      order = np.concatenate([batches[i] for i in rng.permutation(len(batches))])
      self._cached = (epoch, order)
    return self._cached[1]

  def __len__(self) -> int:
    return self.epoch_len * self.EPOCHS

  def __getitem__(self, i: int) -> Any:
    epoch, k = divmod(int(i), self.epoch_len)
    return self.source[int(self.epoch_order(epoch)[k])]


def exit_with_parent(parent: int, worker_index: int, num_workers: int) -> None:
  """Runs in each grain worker: a daemon thread ends the worker as soon as `parent`, the process
  that started it, is gone (also when it went while the worker was starting), so a trainer
  killed with SIGKILL leaves no workers behind (they would otherwise keep polling their
  queues)."""
  del worker_index, num_workers

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(0)

  threading.Thread(target=watch, name='exit-with-parent', daemon=True).start()


def close_iterator(it: grain.DatasetIterator) -> None:
  """Stops the worker processes now (not at interpreter exit) and releases the shared memory of
  the batches already delivered. grain unlinks those in a background thread pool; unlinks still
  pending at exit would be reported as 'leaked shared_memory objects', so the pool is drained
  (grain has no public call for this; if its internals change, only that report comes back)."""
  it.close()
  gc.collect()
  from grain._src.python.ipc import shared_memory_array
  array = shared_memory_array.SharedMemoryArray
  pool = getattr(array, '_del_thread_pool', None)
  if pool is not None:
    array._disable_async_del()  # later deletions run at once; the next iterator re-enables it
    pool.close()
    pool.join()


def eval_batches(source: Any, transform: Callable, *, batch_size: int, process_index: int = 0,
                 process_count: int = 1, num_threads: int = 4, groups: np.ndarray | None = None
                 ) -> Iterator[dict[str, np.ndarray]]:
  """One pass over this host's shard, in order, every host yielding the same number of batches.

  Each sample gains `index` (its position in the source) and `valid` (1). Short batches are
  filled with copies marked `valid` 0 whose labels are all ignore (255), so every global batch
  has the same shape and the filler counts for nothing. With `groups` (an int per sample) the
  split runs group after group and no batch mixes two (each group may have its own shape).
  """
  groups = np.zeros(len(source), np.int32) if groups is None else np.asarray(groups)
  members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
  mine = [m[process_index::process_count] for m in members]
  indices = np.concatenate(mine) if mine else np.zeros(0, np.int64)
  ds = grain.MapDataset.source(_Take(source, indices))
  ds = ds.map_with_index(_Indexed(transform, indices))
  samples = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                      prefetch_buffer_size=2 * batch_size)))
  if not len(source):
    raise ValueError(f'host {process_index} has no evaluation samples: the split is empty')
  for m, own in zip(members, mine):
    num_batches = math.ceil(math.ceil(len(m) / process_count) / batch_size)
    left = len(own)
    last = None
    if not left:  # This host has none of the group: its batches are all filler.
      last = _Indexed(transform, m[:1])(0, source[int(m[0])])
    for _ in range(num_batches):
      items = []
      for _ in range(batch_size):
        if left:
          sample, left = next(samples), left - 1
        else:
          sample = dict(last, valid=np.int32(0))
          if 'label' in sample:
            sample['label'] = np.full_like(sample['label'], 255)
        items.append(sample)
        last = sample
      yield {k: np.stack([s[k] for s in items]) for k in items[0]}


class _Take:
  """Picklable: the samples of `source` at `indices`, in that order."""

  def __init__(self, source: Any, indices: np.ndarray):
    self.source, self.indices = source, indices

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Any:
    return self.source[int(self.indices[i])]


class _Indexed:
  """Picklable: applies the transform, records the sample's source index and validity."""

  def __init__(self, transform: Callable, indices: np.ndarray):
    self.transform, self.indices = transform, indices

  def __call__(self, i: int, sample: dict) -> dict:
    out = dict(self.transform(sample))
    out['index'] = np.int32(self.indices[i])
    out['valid'] = np.int32(1)
    return out
