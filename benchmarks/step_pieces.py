"""Where a train step's time goes: the pieces of an HRNet block timed alone, JAX against
PyTorch, alternating repetitions (medians). Shapes default to a pose_w32 stage-1 layer.

  python benchmarks/step_pieces.py [--batch 2] [--hw 64 48] [--channels 64] [--reps 5]
"""

import argparse
import pathlib
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from benchmarks.vs_pytorch import alternate, load  # noqa: E402
from hrnet_jax.models.layers import BatchNorm  # noqa: E402


def pieces(b, h, w, c):
  import torch
  import torch.nn.functional as F
  rng = np.random.default_rng(0)
  x = rng.standard_normal((b, h, w, c), np.float32)
  k = rng.standard_normal((3, 3, c, c), np.float32) * 0.05
  jx, jk = jnp.asarray(x), jnp.asarray(k)
  tx = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
  tk = torch.from_numpy(k).permute(3, 2, 0, 1).contiguous()
  txl = tx.contiguous(memory_format=torch.channels_last)
  tkl = tk.contiguous(memory_format=torch.channels_last)

  def conv(x, k):
    return jax.lax.conv_general_dilated(x, k, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

  bn = BatchNorm(use_running_average=False)
  v = bn.init(jax.random.key(0), jx)

  def bn_loss(p, x):
    y, _ = bn.apply({'params': p, 'batch_stats': v['batch_stats']}, x, mutable=['batch_stats'])
    return jnp.sum(jax.nn.relu(y) * x)

  j = {
      'conv3x3 fwd': jax.jit(conv),
      'conv3x3 input grad': jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) * x), 0)),
      'conv3x3 weight grad': jax.jit(jax.grad(lambda x, k: jnp.sum(conv(x, k) * x), 1)),
      'BN(train)+ReLU fwd+bwd': jax.jit(jax.grad(bn_loss, (0, 1))),
  }
  jargs = {'BN(train)+ReLU fwd+bwd': (v['params'], jx)}
  tbn = torch.nn.BatchNorm2d(c).train()

  def t_conv(layout, need):
    xx, kk = (txl, tkl) if layout else (tx, tk)
    if need is None:
      with torch.no_grad():
        return F.conv2d(xx, kk, padding=1)
    xx = xx.detach().requires_grad_(need == 'x')
    kk = kk.detach().requires_grad_(need == 'k')
    (F.conv2d(xx, kk, padding=1) * xx.detach()).sum().backward()

  def t_bn(layout):
    xx = (txl if layout else tx).detach().requires_grad_(True)
    (F.relu(tbn(xx)) * xx.detach()).sum().backward()

  t = {'conv3x3 fwd': lambda l: t_conv(l, None),
       'conv3x3 input grad': lambda l: t_conv(l, 'x'),
       'conv3x3 weight grad': lambda l: t_conv(l, 'k'),
       'BN(train)+ReLU fwd+bwd': t_bn}
  for name, f in j.items():
    args = jargs.get(name, (jx, jk))
    jax.block_until_ready(f(*args))
    yield name, (lambda f=f, args=args: jax.block_until_ready(f(*args))), t[name]


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--hw', type=int, nargs=2, default=(64, 48))
  p.add_argument('--channels', type=int, default=64)
  p.add_argument('--reps', type=int, default=5)
  a = p.parse_args()
  print(f'{a.batch}x{a.hw[0]}x{a.hw[1]}x{a.channels}, median ms of {a.reps} (load {load()})')
  print(f'{"piece":<24} {"JAX":>8} {"torch NCHW":>10} {"torch CL":>9} {"JAX/best":>8}')
  for name, jf, tf in pieces(a.batch, *a.hw, a.channels):
    tf(0), tf(1)
    r = alternate({'jax': jf, 'nchw': lambda: tf(0), 'cl': lambda: tf(1)}, a.reps)
    m = {k: 1e3 * statistics.median(v) for k, v in r.items()}
    print(f"{name:<24} {m['jax']:8.2f} {m['nchw']:10.2f} {m['cl']:9.2f} "
          f"{min(m['nchw'], m['cl']) / m['jax']:8.2f}", flush=True)


if __name__ == '__main__':
  main()
