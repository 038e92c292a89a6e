"""Runs the tiny segmentation recipe in a fresh process with a given device count (and,
optionally, as one process of a multi-process job); the checkpoints and TensorBoard events in the
workdir are what test_scale.py compares. Usage:

  python tests/scale_run.py DEVICES DATA_ROOT WORKDIR [--steps N] [--stop-at N] [--shard]
      [--coordinator HOST:PORT --num-processes P --process-id I] [--sigterm-at N]
"""

import argparse
import json
import os
import pathlib
import sys

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'tests')]


def main():
  p = argparse.ArgumentParser()
  p.add_argument('devices', type=int)
  p.add_argument('data')
  p.add_argument('workdir')
  p.add_argument('--steps', type=int, default=4)
  p.add_argument('--stop-at', type=int, default=None)
  p.add_argument('--shard', action='store_true')
  p.add_argument('--coordinator', default='')
  p.add_argument('--num-processes', type=int, default=1)
  p.add_argument('--process-id', type=int, default=0)
  p.add_argument('--sigterm-at', type=int, default=0, help='send ourselves SIGTERM during step N')
  a = p.parse_args()
  jax.config.update('jax_num_cpu_devices', a.devices)

  from seg_tiny import tiny_config
  from hrnet_jax.train import parallel
  from hrnet_jax.train.loop import train_and_evaluate

  c = tiny_config(a.data, steps=a.steps, batch_size=8)
  c.eval.batch_size = 8
  c.log_every_steps = 1
  c.eval.every_steps = 0  # the comparisons read checkpoints; no eval compile per run
  # A small learning rate: on this tiny model and data, early training amplifies float noise
  # (reduction order differs with the device count) by orders of magnitude within a few steps
  # at lr 1e-3; at 1e-5 runs stay within 1e-5 while the updates remain measurable.
  c.optimizer.lr = 1e-5
  c.mesh.shard_params = a.shard
  c.checkpoint.preemption_check_every = 1
  if a.coordinator:
    c.distributed.coordinator_address = a.coordinator
    c.distributed.num_processes = a.num_processes
    c.distributed.process_id = a.process_id
  parallel.initialize_distributed(c)
  if a.sigterm_at:  # a real signal, delivered while step N's batch is being prepared
    import signal
    to_global, calls = parallel.to_global, []

    def to_global_then_signal(batch, mesh):
      calls.append(1)
      if len(calls) == a.sigterm_at:
        os.kill(os.getpid(), signal.SIGTERM)
      return to_global(batch, mesh)

    parallel.to_global = to_global_then_signal
  train_and_evaluate(c, a.workdir, stop_at=a.stop_at)
  if jax.process_index() == 0:  # the test reads the checkpoint itself, in one process
    json.dump({'devices': jax.device_count(), 'processes': jax.process_count()},
              open(pathlib.Path(a.workdir) / 'run.json', 'w'))


if __name__ == '__main__':
  main()
