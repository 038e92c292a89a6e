"""Devices and shardings: the mesh, the batch over the 'data' axis, the train state replicated or
sharded over 'data' (ZeRO/FSDP style), and the multi-process start-up.

Under the jitted step the batch statistics of BatchNorm are computed over the global batch
(synced BN), on one CPU, a multi-GPU host or a pod slice alike; with sharded state XLA gathers
each parameter where it is used and reduce-scatters its gradient, so the numbers are those of
the replicated step.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def initialize_distributed(config: Any) -> None:
  """Starts JAX's multi-process runtime when the job has several processes.

  `config.distributed.coordinator_address` (with `num_processes`, `process_id`) names it
  explicitly; otherwise JAX's own detection runs where a cluster is visible (TPU pod slices,
  SLURM with several tasks, Open MPI, or JAX_COORDINATOR_ADDRESS set). One process: nothing.
  """
  d = config.get('distributed') or {}
  address = d.get('coordinator_address', '')
  env = os.environ
  cluster = (address or env.get('JAX_COORDINATOR_ADDRESS')
             or int(env.get('SLURM_NTASKS', '1')) > 1
             or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
             or ',' in env.get('TPU_WORKER_HOSTNAMES', ''))
  if not cluster or jax.distributed.is_initialized():
    return
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU-only jobs need it
  if address:
    jax.distributed.initialize(address, int(d.get('num_processes')), int(d.get('process_id')))
  else:
    jax.distributed.initialize()


def make_mesh(mesh_config: Any = None) -> Mesh:
  """A 1-D mesh: `config.mesh.data` devices on the 'data' axis; -1 (default) takes them all."""
  n = jax.device_count()
  data = int(mesh_config.get('data', -1)) if mesh_config is not None else -1
  data = n if data == -1 else data
  if data != n:
    raise ValueError(f'config.mesh.data={data} but {n} devices are available (-1 uses all)')
  return jax.make_mesh((data,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P('data'))


def fsdp_spec(shape: tuple[int, ...], num_shards: int, min_size: int = 2**14) -> P:
  """Shards the largest dimension that `num_shards` divides; small or indivisible arrays (BN
  vectors, biases, the step) stay replicated."""
  if num_shards == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % num_shards == 0:
      return P(*[('data' if d == dim else None) for d in range(len(shape))])
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, shard: bool) -> Any:
  """Per-leaf shardings of a (possibly abstract) pytree: replicated, or FSDP over 'data'."""
  n = mesh.shape['data']
  return jax.tree_util.tree_map(
      lambda x: NamedSharding(mesh, fsdp_spec(tuple(x.shape), n) if shard else P()),
      abstract_state)


def describe_sharding(abstract_state: Any, shardings: Any) -> str:
  leaves = jax.tree_util.tree_leaves(abstract_state)
  specs = jax.tree_util.tree_leaves(shardings)
  total = sum(x.size * x.dtype.itemsize for x in leaves)
  per_device = sum(x.size * x.dtype.itemsize / s.num_devices if s.spec != P() else
                   x.size * x.dtype.itemsize for x, s in zip(leaves, specs))
  n = sum(s.spec != P() for s in specs)
  devices = specs[0].num_devices if specs else 1
  return (f'train state: {n} of {len(leaves)} arrays sharded over {devices} devices, '
          f'{per_device / 2**20:.1f} MiB per device instead of {total / 2**20:.1f} MiB')


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """This process's share of a global batch, which must split evenly over devices."""
  devices = mesh.devices.size
  if global_batch % devices:
    raise ValueError(f'batch size {global_batch} must be a multiple of the {devices} devices')
  return global_batch // jax.process_count()


def to_global(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays sharded over 'data' (this host's rows are its
  devices' share, in process order)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in host_batch.items()}


class CompiledTogether:
  """A jitted step whose every new program is compiled by all processes before any runs it.

  CPU collectives (gloo) wait only 30 s for a peer at a program's first collective, and one host
  can take longer than that to compile (two processes sharing two cores did, in CI). Here each
  process compiles ahead of time, then waits at a barrier of the coordination service, whose
  deadline is `timeout_s`. With one process it is the jitted function itself."""

  def __init__(self, jitted: Any, name: str, timeout_s: int = 3600):
    self.jitted, self.name, self.timeout_s = jitted, name, timeout_s
    self.programs: dict[Any, Any] = {}

  def lower(self, *args: Any) -> Any:
    return self.jitted.lower(*args)

  def __call__(self, *args: Any) -> Any:
    if jax.process_count() == 1:
      return self.jitted(*args)
    leaves, tree = jax.tree_util.tree_flatten(args)
    key = (tree, tuple((np.shape(x), np.result_type(x), getattr(x, 'sharding', None))
                       for x in leaves))
    if key not in self.programs:
      self.programs[key] = self.jitted.lower(*args).compile()
      barrier(f'{self.name} compiled ({len(self.programs)})', self.timeout_s)
    return self.programs[key](*args)


def barrier(name: str, timeout_s: int) -> None:
  """Waits until every process has arrived here (no-op with one process)."""
  if jax.process_count() == 1:
    return
  from jax._src import distributed  # the runtime's client; JAX has no public barrier
  distributed.global_state.client.wait_at_barrier(name, timeout_in_ms=timeout_s * 1000)


def all_finite(tree: Any) -> bool:
  """Whether every value of a pytree of jax arrays is finite, however they are sharded: each
  process reads one copy of each of its shards on the host (no compiled program), and all
  processes agree."""
  ok = all(np.isfinite(np.asarray(shard.data)).all()
           for leaf in jax.tree_util.tree_leaves(tree)
           for shard in leaf.addressable_shards if shard.replica_id == 0)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    ok = bool(np.min(multihost_utils.process_allgather(np.int32(ok))))
  return ok
