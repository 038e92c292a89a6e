"""Step time and peak memory of the train step with and without the memory levers (remat, bf16,
gradient accumulation), from XLA's own memory analysis of the compiled step.

  python benchmarks/memory_figures.py [--arch seg_w18] [--batch 2] [--crop 512 1024] [--steps 2]
"""

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

CASES = (('float32', 'none', 1), ('float32', 'conv', 1), ('float32', 'full', 1),
         ('bfloat16', 'conv', 1), ('bfloat16', 'full', 1), ('float32', 'conv', 2))


def measure(arch, batch, crop, steps, dtype, remat, accum):
  from configs import seg_cityscapes
  c = seg_cityscapes.get_config()
  c.model.arch, c.model.remat, c.dtype, c.grad_accum_steps = arch, remat, dtype, accum
  step, state = common.build_step(c)
  rng = np.random.default_rng(0)
  data = {'image': common.random_images(rng, (batch, *crop, 3)),
          'label': rng.integers(0, 19, (batch, *crop), dtype=np.uint8)}
  t = time.perf_counter()
  compiled = step.lower(state, data).compile()
  compile_s = time.perf_counter() - t
  mem = compiled.memory_analysis()
  peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
          - mem.alias_size_in_bytes)
  state, m = compiled(state, data)
  jax.block_until_ready(m)
  return compile_s, common.timed_steps(compiled, state, data, steps), mem.temp_size_in_bytes, peak


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--arch', default='seg_w18')
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--crop', type=int, nargs=2, default=(512, 1024))
  p.add_argument('--steps', type=int, default=2)
  a = p.parse_args()
  print(common.header())
  print(f'{a.arch} train step, {a.crop[0]}x{a.crop[1]}, batch {a.batch}')
  print(f'{"compute":>9} {"remat":>5} {"accum":>5} | {"s/step":>7} {"compile s":>9} | '
        f'{"temp GiB":>8} {"peak GiB":>8}')
  for dtype, remat, accum in CASES:
    if a.batch % accum:
      print(f'{dtype:>9} {str(remat):>5} {accum:>5} | skipped: batch {a.batch} does not split '
            f'into {accum} micro-batches')
      continue
    compile_s, s, temp, peak = measure(a.arch, a.batch, tuple(a.crop), a.steps, dtype, remat,
                                       accum)
    print(f'{dtype:>9} {str(remat):>5} {accum:>5} | {s:7.2f} {compile_s:9.1f} | '
          f'{temp / 2**30:8.2f} {peak / 2**30:8.2f}', flush=True)


if __name__ == '__main__':
  main()
