"""Runs the tiny segmentation recipe (configs/seg_cityscapes.py:runlocal, 4 steps, batch 8) in
float64 in a fresh process with a given device count, optionally as one process of a
multi-process job; test_scale.py compares the checkpoints and TensorBoard events it leaves.

  python tests/scale_run.py DEVICES DATA_ROOT WORKDIR [--stop-at N] [--shard]
      [--coordinator HOST:PORT --num-processes P --process-id I] [--late SECONDS]

--late makes this process start its first training step SECONDS late, as a host that compiles
for longer would (the others must wait for it, beyond the collectives' own 30 s deadline).
"""

import argparse
import json
import pathlib
import sys
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / 'tests')]


def config(data_root):
  """float64 (see test_scale.py), 4 steps of batch 8, checkpoints compared, no evaluation."""
  from configs import seg_cityscapes
  c = seg_cityscapes.get_config('runlocal')
  c.data.root = str(data_root)
  c.dtype = 'float64'
  c.batch_size = 8
  c.total_steps = 4
  c.log_every_steps = 1
  c.eval.every_steps = 0
  c.checkpoint.every_steps = 4
  c.checkpoint.preemption_check_every = 1
  return c


def late(make_train_step, seconds):
  """make_train_step whose step sleeps `seconds` before its first call."""
  def make(*args, **kwargs):
    step, calls = make_train_step(*args, **kwargs), []
    def call(*a):
      if not calls:
        time.sleep(seconds)
      calls.append(1)
      return step(*a)
    return call
  return make


def main():
  p = argparse.ArgumentParser()
  p.add_argument('devices', type=int)
  p.add_argument('data')
  p.add_argument('workdir')
  p.add_argument('--stop-at', type=int, default=None)
  p.add_argument('--shard', action='store_true')
  p.add_argument('--coordinator', default='')
  p.add_argument('--num-processes', type=int, default=1)
  p.add_argument('--process-id', type=int, default=0)
  p.add_argument('--late', type=float, default=0)
  a = p.parse_args()
  jax.config.update('jax_num_cpu_devices', a.devices)
  jax.config.update('jax_enable_x64', True)

  from hrnet_jax.train import loop, parallel
  if a.late:
    loop.make_train_step = late(loop.make_train_step, a.late)

  c = config(a.data)
  c.mesh.shard_params = a.shard
  if a.coordinator:
    c.distributed.coordinator_address = a.coordinator
    c.distributed.num_processes = a.num_processes
    c.distributed.process_id = a.process_id
  parallel.initialize_distributed(c)
  loop.train_and_evaluate(c, a.workdir, stop_at=a.stop_at)
  if jax.process_index() == 0:  # the test reads the checkpoint itself, in one process
    json.dump({'devices': jax.device_count(), 'processes': jax.process_count()},
              open(pathlib.Path(a.workdir) / 'run.json', 'w'))


if __name__ == '__main__':
  main()
