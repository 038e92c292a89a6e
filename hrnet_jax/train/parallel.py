"""The device mesh and the shardings of the step: batch over the 'data' axis, state replicated.

Under this jit the batch statistics of BatchNorm are computed over the global batch (synced BN),
on one CPU, a multi-GPU host or a pod slice alike.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(mesh_config: Any = None) -> Mesh:
  """`config.mesh.data` devices on the 'data' axis; -1 (default) takes all devices."""
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


def local_batch_size(global_batch: int, mesh: Mesh) -> int:
  """This process's share of a global batch, which must split evenly over devices."""
  devices = mesh.devices.size
  if global_batch % devices:
    raise ValueError(f'batch size {global_batch} must be a multiple of the {devices} devices')
  return global_batch // jax.process_count()


def to_global(host_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch -> global arrays sharded over 'data'."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in host_batch.items()}
