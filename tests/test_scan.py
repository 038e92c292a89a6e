"""The scanned backbone: runs of identical modules as one `nn.scan` body over stacked variables.

Checked against the per-module model (`scan=False`, the layout before): same outputs, batch
statistics and gradients in float64 with the same weights; the convolution's hand-written
gradients against autodiff; restacking between the layouts (old checkpoints), the converter's
stacked slices, and the FLOP count of scanned bodies.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from conftest import random_variables
from hrnet_jax.convert import mapping
from hrnet_jax.flops import flops
from hrnet_jax.models import layers, zoo
from hrnet_jax.train import checkpoint

# Small, but with a run of every kind: stage-1 blocks 1-2 (block 0 widens), stage-4 modules
# (pose's last one fuses only stream 0 and runs alone), 2 blocks per branch.
SMALL = dict(width=4, num_modules=(1, 1, 3), num_blocks=2, stage1_blocks=3, stage1_planes=8)


@pytest.mark.parametrize('n,h,w,ci,co,k,stride,pad', [
    (2, 9, 7, 3, 5, 3, 1, 1), (2, 9, 7, 3, 5, 3, 2, 1), (2, 8, 8, 4, 6, 3, 2, 1),
    (1, 8, 6, 4, 6, 1, 1, 0), (1, 5, 5, 2, 3, 1, 2, 0), (2, 10, 12, 3, 2, 3, 2, 1)])
def test_conv_gradients_equal_autodiff(x64, n, h, w, ci, co, k, stride, pad):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((n, h, w, ci)))
  kernel = jnp.asarray(rng.standard_normal((k, k, ci, co)))
  dn = ('NHWC', 'HWIO', 'NHWC')
  plain = lambda x, k_: jax.lax.conv_general_dilated(x, k_, (stride, stride),
                                                     ((pad, pad), (pad, pad)),
                                                     dimension_numbers=dn)
  ours = lambda x, k_: layers.conv_nhwc(x, k_, stride, pad)
  loss = lambda f: (lambda x, k_: jnp.sum(jnp.sin(f(x, k_))))
  np.testing.assert_allclose(ours(x, kernel), plain(x, kernel), rtol=1e-12, atol=1e-12)
  for got, want in zip(jax.grad(loss(ours), (0, 1))(x, kernel),
                       jax.grad(loss(plain), (0, 1))(x, kernel)):
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def _flat(tree):
  return traverse_util.flatten_dict(jax.tree_util.tree_map(np.asarray, dict(tree)))


def _restacked(variables, target):
  """`variables` moved into `target`'s layout by name, checked complete."""
  out = {}
  for collection in ('params', 'batch_stats'):
    src = _flat(variables[collection])
    tgt = traverse_util.flatten_dict(dict(target[collection]))  # arrays or ShapeDtypeStructs
    moved = mapping.restack(src, tgt)
    assert set(moved) == set(tgt) and all(moved[k].shape == tgt[k].shape for k in tgt)
    out[collection] = traverse_util.unflatten_dict(moved)
  return out


@pytest.mark.slow  # two float64 gradient programs of per-module models: ~50 s to compile
@pytest.mark.parametrize('arch', ['pose_w32', 'seg_w18'])
def test_scanned_model_equals_per_module_model(x64, arch):
  kw = dict(SMALL, dtype=jnp.float64, param_dtype=jnp.float64)
  plain, scanned = zoo.create_model(arch, scan=False, **kw), zoo.create_model(arch, scan=True, **kw)
  x = jnp.asarray(np.random.default_rng(1).standard_normal((2, 32, 32, 3)))
  v_plain = random_variables(plain, x)
  v_scan = _restacked(v_plain, jax.eval_shape(scanned.init, jax.random.key(1), x))
  names = {k for path in _flat(v_scan['params']) for k in path}
  stacked = {n for n in names if mapping._STACKED.match(n)}
  want = {'layer1.1-2', 'stage4.0-1', 'branches.0.0-1', 'branches.3.0-1'}
  if arch == 'seg_w18':
    want = (want - {'stage4.0-1'}) | {'stage4.0-2'}
  assert want <= stacked and ('stage4.2' in names) == (arch == 'pose_w32')

  def loss(model, v):
    def f(params):
      out, upd = model.apply({'params': params, 'batch_stats': v['batch_stats']}, x, train=True,
                             mutable=['batch_stats'])
      return jnp.sum(jnp.sin(out)), (out, upd['batch_stats'])
    return jax.jit(jax.grad(f, has_aux=True))(v['params'])

  g_plain, (out_plain, bs_plain) = loss(plain, v_plain)
  g_scan, (out_scan, bs_scan) = loss(scanned, v_scan)
  np.testing.assert_allclose(out_scan, out_plain, rtol=1e-10, atol=1e-10)
  back = _restacked({'params': g_scan, 'batch_stats': bs_scan}, v_plain)
  for got, want in ((back['params'], g_plain), (back['batch_stats'], bs_plain)):
    got, want = _flat(got), _flat(want)
    for k in want:
      # atol: gradients that BatchNorm cancels are float64 noise around 0 (~1e-11 of the rest).
      np.testing.assert_allclose(got[k], want[k], rtol=1e-8,
                                 atol=1e-9 * float(np.max(np.abs(want[k]))) + 1e-12,
                                 err_msg='/'.join(k))


def test_converter_maps_every_slice_of_a_stacked_leaf():
  entries = mapping.layout('pose_w32', **SMALL)
  by_key = {e.key: e for e in entries}
  e = by_key['stage4.1.branches.2.1.conv2.weight']
  assert e.flax_path == ('params', 'backbone', 'stage4.0-1', 'branches.2.0-1', 'conv2', 'kernel')
  assert e.index == (1, 1) and e.stack == (2, 2) and e.flax_shape == (3, 3, 16, 16)
  assert by_key['stage4.2.fuse_layers.0.3.0.weight'].index == ()  # pose's single last module
  # Official keys are those of the per-module model, one per tensor.
  plain = [(e.key, e.torch_shape) for e in mapping.layout('pose_w32', scan=False, **SMALL)]
  assert sorted((e.key, e.torch_shape) for e in entries) == sorted(plain)
  # A state_dict in, the same arrays out (both ways, exactly).
  rng = np.random.default_rng(0)
  state = {k: rng.standard_normal(s).astype(np.float32)
           for k, s in mapping.torch_keys_and_shapes('pose_w32', **SMALL)}
  from hrnet_jax import convert
  variables = convert.torch_to_flax(state, 'pose_w32', **SMALL)
  kernel = variables['params']['backbone']['stage4.0-1']['branches.2.0-1']['conv2']['kernel']
  np.testing.assert_array_equal(kernel[1, 1],
                                state['stage4.1.branches.2.1.conv2.weight'].transpose(2, 3, 1, 0))
  back = convert.flax_to_torch(variables, 'pose_w32', **SMALL)
  assert list(back) == list(state)
  for k in state:
    if not k.endswith('num_batches_tracked'):  # Flax keeps no step counter (written as 0)
      np.testing.assert_array_equal(back[k], state[k])


def test_old_per_module_checkpoints_load_into_the_scanned_model():
  x = np.zeros((1, 32, 32, 3), np.float32)
  old = random_variables(zoo.create_model('seg_w18', scan=False, **SMALL), x)
  target = jax.eval_shape(lambda: zoo.create_model('seg_w18', **SMALL).init(jax.random.key(0), x))
  merged, _ = checkpoint.merge_subtree(target, jax.tree_util.tree_map(np.asarray, old),
                                       subtree=None)
  back = _restacked(merged, old)
  for got, want in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(old)):
    np.testing.assert_array_equal(got, want)


def test_resuming_an_old_layout_says_how(tmp_path):
  import ml_collections
  config = ml_collections.ConfigDict({'model': {'arch': 'seg_w18', 'scan': True}})
  message = checkpoint.describe_mismatch(tmp_path, config, ['params/backbone/stage3.0-3/x'])
  assert '--config.model.scan=False' in message


def test_flops_count_every_copy_of_a_scanned_body():
  a = flops('pose_w32', (64, 64), scan=True, **SMALL)
  assert a == flops('pose_w32', (64, 64), scan=False, **SMALL) > 0
