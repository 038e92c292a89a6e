"""What every recipe shares: checkpointing, devices and processes, logging (trainer keys)."""

import ml_collections

from hrnet_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 (for recipes)


def add_trainer_keys(c: ml_collections.ConfigDict, checkpoint_every: int,
                     log_every: int) -> ml_collections.ConfigDict:
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = checkpoint_every
  c.checkpoint.keep = 3  # the newest ones ...
  c.checkpoint.keep_best = 1  # ... and the best by the task's metric
  c.checkpoint.async_save = True
  c.checkpoint.preemption_check_every = 10  # steps between multi-host SIGTERM agreements

  c.grad_accum_steps = 1  # > 1: the batch runs as that many micro-batches per update

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # devices on the data axis; -1 = all
  c.mesh.shard_params = False  # shard params and optimizer state over 'data' (ZeRO/FSDP)

  # Multi-process: empty = detect (TPU pod slices, SLURM, Open MPI, JAX_COORDINATOR_ADDRESS).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.coordinator_address = ''  # host:port of process 0
  c.distributed.num_processes = 1
  c.distributed.process_id = 0

  c.log_every_steps = log_every
  return c
