"""Layers against PyTorch: resizing, BatchNorm (train and eval), compute dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import relative_error
from hrnet_jax.models import layers

torch = pytest.importorskip('torch')
F = torch.nn.functional


@pytest.mark.parametrize('align_corners', [False, True])
@pytest.mark.parametrize('src,dst', [((7, 9), (14, 18)), ((37, 53), (18, 26)), ((10, 12), (23, 31)),
                                     ((16, 24), (64, 96)), ((33, 20), (7, 41)), ((5, 6), (1, 1)),
                                     ((1, 1), (4, 5)), ((3, 600), (5, 257))])
def test_bilinear_matches_torch(src, dst, align_corners):
  # Axes up to MATMUL_RESIZE_MAX_IN long resize by interpolation matmuls, longer ones (600) by
  # two-tap gathers: both forms are checked.
  x = np.random.default_rng(0).standard_normal((2, *src, 3), np.float32)
  got = layers.resize_bilinear(jnp.asarray(x), dst, align_corners)
  want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=dst, mode='bilinear',
                       align_corners=align_corners).permute(0, 2, 3, 1).numpy()
  assert got.shape == want.shape
  # Same float32 taps as PyTorch; the separable sum rounds differently by a few ulps at most.
  assert relative_error(got, want) < 2e-6


def test_nearest_matches_torch_and_rejects_odd_sizes():
  x = np.random.default_rng(0).standard_normal((1, 3, 5, 2), np.float32)
  want = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=4,
                       mode='nearest').permute(0, 2, 3, 1).numpy()
  np.testing.assert_array_equal(np.asarray(layers.upsample_to(x, (12, 20), 'nearest', False)),
                                want)
  with pytest.raises(ValueError, match='divisible by 32'):
    layers.upsample_to(x, (7, 10), 'nearest', False)


def test_batchnorm_train_step_matches_torch():
  """Batch statistics normalise the output; running stats follow PyTorch (unbiased var)."""
  rng = np.random.default_rng(0)
  x = (rng.standard_normal((4, 5, 6, 3)) * 3 + 1).astype(np.float32)
  bn = layers.BatchNorm(use_running_average=False, momentum=0.9)
  variables = bn.init(jax.random.key(0), x)
  y, updates = bn.apply(variables, x, mutable=['batch_stats'])
  ref = torch.nn.BatchNorm2d(3, momentum=0.1).train()
  want = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
  np.testing.assert_allclose(np.asarray(y), want, atol=2e-5)
  np.testing.assert_allclose(updates['batch_stats']['mean'], ref.running_mean.numpy(), atol=1e-6)
  np.testing.assert_allclose(updates['batch_stats']['var'], ref.running_var.numpy(), rtol=1e-5)


def test_batchnorm_bf16_keeps_float32_statistics():
  x = np.random.default_rng(0).standard_normal((2, 4, 4, 8), np.float32)
  bn = layers.BatchNorm(use_running_average=False, dtype=jnp.bfloat16)
  variables = bn.init(jax.random.key(0), x)
  y, updates = bn.apply(variables, jnp.asarray(x, jnp.bfloat16), mutable=['batch_stats'])
  assert y.dtype == jnp.bfloat16
  assert variables['params']['scale'].dtype == jnp.float32
  assert updates['batch_stats']['var'].dtype == jnp.float32
  ref = (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-5)
  assert relative_error(np.asarray(y, np.float32), ref) < 2e-2


def test_initializers_equal_jax_nn_initializers_under_jit_and_vmap():
  """Our initializers draw each parameter at a shared power-of-two length and slice it; under
  jit (as train.py initializes) and vmap (the scanned stages' stacked parameters) the values
  equal jax.nn.initializers' bit for bit, for every initializer the models use."""
  from hrnet_jax.models import initializers as ours
  theirs = jax.nn.initializers
  pairs = [(ours.he_normal_fan_out, theirs.variance_scaling(2.0, 'fan_out', 'normal')),
           (ours.lecun_normal, theirs.lecun_normal()),
           (ours.xavier_uniform, theirs.xavier_uniform()),
           (ours.normal(0.001), theirs.normal(0.001)), (ours.normal(0.01), theirs.normal(0.01))]
  shapes = [(3, 3, 18, 36), (1, 1, 256, 17), (2048, 1000), (3, 3, 3, 64)]
  keys = jax.random.split(jax.random.key(7), 3)

  def draw(inits):
    return [[jax.vmap(lambda k, s=s: init(k, s, jnp.float32))(keys) for s in shapes]
            for init in inits]

  got, want = jax.jit(lambda: draw([p[0] for p in pairs]))(), jax.jit(
      lambda: draw([p[1] for p in pairs]))()
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    assert g.shape == w.shape and np.array_equal(g, w)
  with pytest.raises(ValueError, match="mode 'fan_max'"):
    ours.variance_scaling(1.0, 'fan_max', 'normal')
