"""Instance masks (Mask R-CNN, Cascade Mask R-CNN): the mask ops against torch, the mmdetection
key layout of the mask heads, and the converted networks' detections and masks against the
PyTorch reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TWO_STAGE_TINY as TINY, scaled_state_dict
from hrnet_jax import convert, ops
from hrnet_jax.convert import mapping
from hrnet_jax.models import zoo


def torch_paste(masks, boxes, height, width):
  """The paste rule written with torch: a grid of the image's pixel centres normalized by each
  box, grid_sample (bilinear, zeros outside, align_corners False); an infinite coordinate (a box
  of zero width) reads 0."""
  import torch
  import torch.nn.functional as F
  b = torch.tensor(boxes)
  x1, y1, x2, y2 = (b[:, k:k + 1] for k in range(4))
  ys = torch.arange(height, dtype=torch.float32) + 0.5
  xs = torch.arange(width, dtype=torch.float32) + 0.5
  gy, gx = (ys - y1) / (y2 - y1) * 2 - 1, (xs - x1) / (x2 - x1) * 2 - 1
  gy, gx = (torch.where(torch.isinf(g), torch.zeros_like(g), g) for g in (gy, gx))
  n = len(boxes)
  grid = torch.stack([gx[:, None, :].expand(n, height, width),
                      gy[:, :, None].expand(n, height, width)], 3)
  return F.grid_sample(torch.tensor(masks)[:, None], grid, align_corners=False)[:, 0].numpy()


def test_paste_equals_grid_sample():
  """Boxes inside, past every border, larger than the image, under a pixel, of zero width."""
  rng = np.random.default_rng(0)
  h, w = 37, 53
  boxes = np.asarray([[5.3, 4.1, 30.7, 22.9], [-12.5, -8.2, 20.1, 15.6], [40.2, 25.3, 70.4, 45.8],
                      [-30.0, -20.0, 90.0, 60.0], [10.2, 10.4, 10.6, 10.9],
                      [17.3, 3.2, 17.3, 30.1], [0.0, 0.0, 53.0, 37.0], [25.0, 12.0, 26.5, 36.5]],
                     np.float32)
  masks = rng.uniform(0, 1, (len(boxes), 28, 28)).astype(np.float32)
  got = ops.paste_masks(masks, boxes, h, w, threshold=None)
  want = torch_paste(masks, boxes, h, w)
  np.testing.assert_allclose(got, want, atol=2e-6)
  binary = ops.paste_masks(masks, boxes, h, w)
  clear = np.abs(want - 0.5) > 1e-5
  assert binary.dtype == bool and np.array_equal(binary[clear], want[clear] >= 0.5)
  assert binary[0].sum() > 100 and not binary[0, :, 35:].any()  # inside its box only


def test_mask_targets_equal_torchvision_roi_align():
  """Boxes clipped to the mask, RoIAlign (aligned, adaptive sampling) of each box's own mask,
  >= 0.5; inside jit, from uint8 masks."""
  import torch
  import torchvision
  rng = np.random.default_rng(1)
  h, w = 40, 56
  yy, xx = np.mgrid[:h, :w]
  centres = rng.uniform([8, 8], [32, 48], (4, 2))
  radii = rng.uniform(5, 14, 4)
  masks = np.stack([((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) for (cy, cx), r
                    in zip(centres, radii)]).astype(np.uint8)
  index = np.arange(12) % 4  # boxes near their own disc, some past the borders
  tight = np.concatenate([centres[index, ::-1] - radii[index, None],
                          centres[index, ::-1] + radii[index, None]], 1)
  boxes = (tight + rng.uniform(-9, 9, (12, 4))).astype(np.float32)
  boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2)
  got = np.asarray(jax.jit(ops.mask_targets, static_argnums=3)(
      jnp.asarray(masks), jnp.asarray(boxes), jnp.asarray(index), 28))
  clipped = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
  rois = torch.tensor(np.concatenate([np.arange(12)[:, None], clipped], 1), dtype=torch.float32)
  pooled = torchvision.ops.roi_align(torch.tensor(masks[index, None], dtype=torch.float32), rois,
                                     28, 1.0, 0, True)[:, 0].numpy()
  clear = np.abs(pooled - 0.5) > 1e-5
  assert clear.mean() > 0.99
  np.testing.assert_array_equal(got[clear], (pooled >= 0.5)[clear])
  assert 0.1 < got.mean() < 0.9  # the boxes cut into the shapes


def test_rle_round_trip():
  from pycocotools import mask as mask_utils
  mask = np.zeros((30, 41), bool)
  mask[3:17, 5:30] = True
  mask[20, 40] = True
  rle = ops.encode_rle(mask)
  assert rle['size'] == [30, 41] and isinstance(rle['counts'], str)
  back = mask_utils.decode(dict(rle, counts=rle['counts'].encode('ascii')))
  np.testing.assert_array_equal(back.astype(bool), mask)
  assert mask_utils.area(dict(rle, counts=rle['counts'].encode('ascii'))) == 14 * 25 + 1


# --- The mmdetection layout ---------------------------------------------------------------------


@pytest.mark.parametrize('arch, stages', [('mask_rcnn_w32', 1), ('cascade_mask_rcnn_w32', 3)])
def test_release_key_layout(arch, stages):
  """The released checkpoints' mask heads: four 3x3 convs, the transposed conv as PyTorch
  stores it (in, out, 2, 2), 80 class maps; one head per stage after the box heads."""
  keys = dict(mapping.torch_keys_and_shapes(arch))
  heads = ['roi_head.mask_head.'] if stages == 1 else [
      f'roi_head.mask_head.{s}.' for s in range(stages)]
  for head in heads:
    for i in range(4):
      assert keys[f'{head}convs.{i}.conv.weight'] == (256, 256, 3, 3)
    assert keys[head + 'upsample.weight'] == (256, 256, 2, 2)
    assert keys[head + 'conv_logits.weight'] == (80, 256, 1, 1)
  order = list(keys)
  assert max(i for i, k in enumerate(order) if '.bbox_head' in k) < min(
      i for i, k in enumerate(order) if '.mask_head' in k)
  shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in keys.items()}
  assert mapping.infer_arch(shapes) == (arch, {})


def test_transposed_conv_weight_is_read_in_and_out_first():
  """upsample: PyTorch weight[i, o, a, b] is Flax kernel[a, b, i, o]."""
  state = scaled_state_dict('mask_rcnn_w18', **TINY)
  variables = convert.torch_to_flax(state, 'mask_rcnn_w18', **TINY)
  kernel = variables['params']['head']['roi_head.mask_head']['upsample']['kernel']
  weight = state['roi_head.mask_head.upsample.weight']
  for (i, o, a, b) in [(0, 0, 0, 0), (3, 7, 1, 0), (15, 2, 0, 1), (9, 11, 1, 1)]:
    assert kernel[a, b, i, o] == weight[i, o, a, b]


@pytest.mark.parametrize('arch', ['mask_rcnn_w18', 'cascade_mask_rcnn_w18'])
def test_conversion_round_trip_is_exact(arch):
  state = scaled_state_dict(arch, **TINY)
  back = convert.flax_to_torch(convert.torch_to_flax(state, arch, **TINY), arch, **TINY)
  assert list(back) == [k for k, _ in mapping.torch_keys_and_shapes(arch, **TINY)]
  for k, v in state.items():
    np.testing.assert_array_equal(np.asarray(back[k]), v, err_msg=k)


# --- The network against the PyTorch reference -------------------------------------------------


@pytest.fixture(scope='module', params=['mask_rcnn_w18', 'cascade_mask_rcnn_w18'])
def mask_networks(request):
  """(arch, JAX outputs, PyTorch reference outputs) of the converted tiny network on two
  images (unpadded 64x90 and 56x96; resize factors (0.8, 0.75) and (0.5, 0.5))."""
  import torch
  from hrnet_jax.convert import torch_hrnet
  arch = request.param
  more = dict(TINY, test_proposals=1000)
  state = scaled_state_dict(arch, seed=1, **more)
  variables = convert.torch_to_flax(state, arch, **more)
  reference = torch_hrnet.build(arch, **more)
  reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
  x = np.random.default_rng(2).standard_normal((2, 64, 96, 3), np.float32)
  hw, scale = [(64, 90), (56, 96)], [(0.8, 0.75), (0.5, 0.5)]
  with torch.no_grad():
    want = reference.forward_two_stage(torch.from_numpy(x).permute(0, 3, 1, 2), hw, scale)
  model = zoo.create_model(arch, **more)
  got = jax.jit(lambda v, x: model.apply(v, x, image_hw=jnp.asarray(hw),
                                         scale_xy=jnp.asarray(scale)))(variables, x)
  return arch, got, jax.tree_util.tree_map(lambda t: t.numpy(), want)


@pytest.mark.slow
def test_detections_and_masks_equal_pytorch(mask_networks):
  """The converted network's detections (mmdetection's test, in original pixels) and each
  box's mask probabilities (Cascade: the mean of three heads) equal the reference's."""
  arch, got, want = mask_networks
  g, w = got['detections'], want['detections']
  np.testing.assert_array_equal(np.asarray(g['valid']), w['valid'])
  assert np.all(w['valid'].sum(1) > 10)
  np.testing.assert_array_equal(np.asarray(g['labels']), w['labels'])
  np.testing.assert_allclose(np.asarray(g['scores']), w['scores'], atol=1e-5)
  np.testing.assert_allclose(np.asarray(g['boxes']), w['boxes'], atol=1e-3)
  masks = np.asarray(g['masks'])
  assert masks.shape == w['masks'].shape == (2, 100, 28, 28)
  np.testing.assert_allclose(masks, w['masks'], atol=1e-4)
  assert masks[w['valid']].std() > 0.005  # the masks vary (50x the tolerance)


# --- Training -----------------------------------------------------------------------------------


def test_mask_loss_by_hand():
  """Mean binary cross-entropy over each positive's pixels, averaged over the positives."""
  from hrnet_jax.tasks.detection.rcnn import mask_loss
  logits = np.asarray([[[[2.0, -1.0], [0.5, 0.0]], [[9.0, 9.0], [9.0, 9.0]]]], np.float32)
  targets = np.asarray([[[[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]], np.float32)
  stage = {'mask_logits': jnp.asarray(logits), 'mask_targets': jnp.asarray(targets),
           'mask_valid': jnp.asarray([[True, False]])}
  softplus = lambda v: np.log1p(np.exp(v))
  # Pixel by pixel: -log sigmoid(2), -log(1 - sigmoid(-1)), -log(1 - sigmoid(0.5)), -log(1/2).
  want = (softplus(-2.0) + softplus(-1.0) + softplus(0.5) + np.log(2.0)) / 4
  assert float(mask_loss(stage)) == pytest.approx(want, rel=1e-6)
  none = dict(stage, mask_valid=jnp.asarray([[False, False]]))
  assert float(mask_loss(none)) == 0.0


@pytest.mark.slow
def test_mask_training_learns_on_a_fixed_batch():
  """A tiny Mask R-CNN: twenty Adam steps on one batch of discs lower the mask loss (targets
  cut from the ground-truth masks inside the model) with the box losses."""
  import optax
  from conftest import random_variables
  from test_rcnn import tiny_task
  model = zoo.create_model('mask_rcnn_w18', **dict(TINY, norm_eval=False, train_pre_nms=200,
                                                   train_proposals=64, roi_samples=32,
                                                   rpn_samples=64))
  h, w = 64, 96
  yy, xx = np.mgrid[:h, :w]
  discs = [(24, 24, 16), (40, 70, 18), (30, 45, 20)]  # (cy, cx, r): image 0 two, image 1 one
  masks = np.zeros((2, 2, h, w), np.uint8)
  boxes = np.zeros((2, 2, 4), np.float32)
  for (b, m), (cy, cx, r) in zip([(0, 0), (0, 1), (1, 0)], discs):
    masks[b, m] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    boxes[b, m] = [cx - r, cy - r, cx + r + 1, cy + r + 1]
  x = np.random.default_rng(3).normal(size=(2, h, w, 3)).astype(np.float32)
  x[..., 0] += 2.0 * masks.max(axis=1)  # the discs are visible
  targets = {'boxes': jnp.asarray(boxes), 'labels': jnp.asarray([[0, 2], [1, 0]]),
             'box_valid': jnp.asarray([[1, 1], [1, 0]], bool), 'masks': jnp.asarray(masks)}
  hw = jnp.asarray([[h, w], [h, w]])
  variables = random_variables(model, jnp.asarray(x))
  task = tiny_task('mask_rcnn_w18')
  tx = optax.adam(3e-3)

  @jax.jit
  def step(params, opt_state, stats, i):
    def loss_fn(p):
      out, upd = model.apply({'params': p, 'batch_stats': stats}, x, train=True, image_hw=hw,
                             targets=targets, rngs={'sample': jax.random.key(i)},
                             mutable=['batch_stats'])
      loss, extra = task.loss(out, {})
      return loss, (extra['loss_mask'], upd['batch_stats'])
    (loss, (mask, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, stats, loss, mask

  params, stats = variables['params'], variables['batch_stats']
  opt_state = tx.init(params)
  losses, mask_losses = [], []
  for i in range(20):
    params, opt_state, stats, loss, mask = step(params, opt_state, stats, i)
    losses.append(float(loss))
    mask_losses.append(float(mask))
  assert np.all(np.isfinite(losses)) and 0.3 < mask_losses[0] < 2.0
  assert np.mean(mask_losses[-3:]) < 0.6 * np.mean(mask_losses[:3]), mask_losses
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses
