"""Instance masks (Mask R-CNN, Cascade Mask R-CNN, HTC): the mask ops against torch, the
mmdetection key layout of the mask heads, and the converted networks' detections and masks
against the PyTorch reference (HTC's own parts: test_htc.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TWO_STAGE_TINY as TINY, fit_two_stage, scaled_state_dict
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


def torch_legacy_paste(masks, boxes, height, width):
  """mmdetection v1's paste written with torch: corners truncated, the mask resized to the
  inclusive box by F.interpolate (bilinear, align_corners False), placed at (x1, y1), cut at the
  image's edges."""
  import torch
  import torch.nn.functional as F
  out = np.zeros((len(boxes), height, width), np.float32)
  for i, box in enumerate(boxes):
    x1, y1, x2, y2 = (int(v) for v in box)  # truncation toward zero, as astype(int32)
    w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    big = F.interpolate(torch.tensor(masks[i])[None, None], size=(h, w), mode='bilinear',
                        align_corners=False)[0, 0].numpy()
    region = out[i, y1:y1 + h, x1:x1 + w]
    region[...] = big[:region.shape[0], :region.shape[1]]
  return out


def test_legacy_paste_equals_interpolate_into_the_inclusive_box():
  """mmdetection v1's rule (the W48 releases): integer corners, the inclusive box x2 - x1 + 1
  wide, bilinear resize, `> 0.5`; boxes smaller and larger than the mask, one past the image."""
  rng = np.random.default_rng(4)
  h, w = 37, 53
  boxes = np.asarray([[5.3, 4.9, 30.7, 22.2], [0.0, 0.0, 52.0, 36.0], [10.2, 10.4, 10.6, 10.9],
                      [40.6, 25.3, 60.4, 45.8], [17.0, 3.0, 19.99, 30.5]], np.float32)
  masks = rng.uniform(0, 1, (len(boxes), 28, 28)).astype(np.float32)
  got = ops.paste_masks(masks, boxes, h, w, threshold=None, legacy=True)
  want = torch_legacy_paste(masks, boxes, h, w)
  np.testing.assert_allclose(got, want, atol=2e-6)
  binary = ops.paste_masks(masks, boxes, h, w, legacy=True)
  clear = np.abs(want - 0.5) > 1e-5
  assert np.array_equal(binary[clear], want[clear] > 0.5)
  # By hand: box (2.7, 3.2, 5.9, 4.99) -> corners (2, 3, 5, 4): 4 x 2 pixels; 0.5 is not > 0.5.
  ones = ops.paste_masks(np.ones((1, 28, 28)), np.asarray([[2.7, 3.2, 5.9, 4.99]]), 8, 9,
                         legacy=True)[0]
  assert np.argwhere(ones).tolist() == [[r, c] for r in (3, 4) for c in (2, 3, 4, 5)]
  half = np.full((1, 28, 28), 0.5, np.float32)
  assert not ops.paste_masks(half, np.asarray([[1.0, 1.0, 6.0, 6.0]]), 8, 9, legacy=True).any()
  assert ops.paste_masks(half, np.asarray([[1.0, 1.0, 6.0, 6.0]]), 8, 9).sum() == 25


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


@pytest.mark.parametrize('arch, stages', [('mask_rcnn_w32', 1), ('htc_w32', 3)])
def test_legacy_key_layout(arch, stages):
  """mmdetection v1.0's (the paper's W48 releases) and v0.x's: top-level mask and semantic
  heads, 81 mask maps (the background's first); the layout is inferred back."""
  keys = dict(mapping.torch_keys_and_shapes(arch, legacy=True))
  heads = ['mask_head.'] if stages == 1 else [f'mask_head.{s}.' for s in range(stages)]
  for head in heads:
    assert keys[head + 'convs.3.conv.weight'] == (256, 256, 3, 3)
    assert keys[head + 'conv_logits.weight'] == (81, 256, 1, 1)
    assert keys[head + 'conv_logits.bias'] == (81,)
  if stages == 3:
    assert keys['mask_head.2.conv_res.conv.weight'] == (256, 256, 1, 1)
    assert keys['semantic_head.conv_logits.weight'] == (183, 256, 1, 1)
  assert not any(k.startswith('roi_head.') for k in keys)
  shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in keys.items()}
  assert mapping.infer_arch(shapes) == (arch, {'legacy': True})


def test_legacy_mask_conversion_drops_the_background_map():
  """Flax keeps class k's map at k (v1: k + 1); written back, the background map is zeros and
  every other tensor is the checkpoint's."""
  arch, more = 'htc_w18', dict(TINY, legacy=True)
  state = scaled_state_dict(arch, **more)
  variables = convert.torch_to_flax(state, arch, **more)
  head = variables['params']['head']['roi_head.mask_head.1']['conv_logits']
  np.testing.assert_array_equal(head['kernel'][0, 0], state['mask_head.1.conv_logits.weight'][
      1:, :, 0, 0].T)
  np.testing.assert_array_equal(head['bias'], state['mask_head.1.conv_logits.bias'][1:])
  back = convert.flax_to_torch(variables, arch, **more)
  assert list(back) == list(state)
  for k, v in state.items():
    got = np.asarray(back[k])
    if k.startswith('mask_head.') and '.conv_logits.' in k:
      assert not got[0].any()
      got, v = got[1:], v[1:]
    np.testing.assert_array_equal(got, v, err_msg=k)


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


@pytest.fixture(scope='module', params=[('mask_rcnn_w18', False), ('cascade_mask_rcnn_w18', False),
                                        ('htc_w18', False), ('htc_w18', True)],
                ids=['mask', 'cascade-mask', 'htc', 'htc-legacy'])
def mask_networks(request):
  """(arch, legacy, JAX outputs, PyTorch reference outputs) of the converted tiny network on two
  images (unpadded 64x90 and 56x96; resize factors (0.8, 0.75) and (0.5, 0.5); legacy, one
  factor: 0.8 and 0.5). HTC: the semantic branch and the chained mask heads, at the box heads'
  0.05; legacy: mmdetection v1's layout (81 mask maps, background first) and arithmetic."""
  import torch
  from hrnet_jax.convert import torch_hrnet
  arch, legacy = request.param
  more = dict(TINY, test_proposals=1000, test_score_thr=0.05, legacy=legacy)
  state = scaled_state_dict(arch, seed=1, **more)
  variables = convert.torch_to_flax(state, arch, **more)
  reference = torch_hrnet.build(arch, **more)
  assert list(reference.state_dict()) == list(state)  # the layout's order is the reference's
  reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
  x = np.random.default_rng(2).standard_normal((2, 64, 96, 3), np.float32)
  hw = [(64, 90), (56, 96)]
  scale = [(0.8, 0.8), (0.5, 0.5)] if legacy else [(0.8, 0.75), (0.5, 0.5)]
  with torch.no_grad():
    want = reference.forward_two_stage(torch.from_numpy(x).permute(0, 3, 1, 2), hw, scale)
  model = zoo.create_model(arch, **more)
  got = jax.jit(lambda v, x: model.apply(v, x, image_hw=jnp.asarray(hw),
                                         scale_xy=jnp.asarray(scale)))(variables, x)
  want = jax.tree_util.tree_map(lambda t: t.numpy(), want)
  if legacy:  # the reference's background logit comes first
    want['logits'] = np.roll(want['logits'], -1, axis=-1)
  return arch, legacy, got, want


@pytest.mark.slow
def test_detections_and_masks_equal_pytorch(mask_networks):
  """The converted network's class logits, detections (mmdetection's test, in original pixels;
  legacy: v1's) and each box's mask probabilities (Cascade, HTC: the mean of three heads) equal
  the reference's."""
  arch, legacy, got, want = mask_networks
  np.testing.assert_allclose(np.asarray(got['logits']), want['logits'], atol=1e-4)
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


def disc_batch():
  """Two 64x96 images of discs (image 0 two, image 1 one), visible in the red channel: the
  images, their `targets` (boxes, labels, box_valid, masks (2, 2, 64, 96)) and image sizes."""
  h, w = 64, 96
  yy, xx = np.mgrid[:h, :w]
  masks = np.zeros((2, 2, h, w), np.uint8)
  boxes = np.zeros((2, 2, 4), np.float32)
  labels = np.asarray([[0, 2], [1, -1]], np.int32)
  for (b, m), (cy, cx, r) in zip([(0, 0), (0, 1), (1, 0)], [(24, 24, 16), (40, 70, 18),
                                                              (30, 45, 20)]):
    masks[b, m] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    boxes[b, m] = [cx - r, cy - r, cx + r + 1, cy + r + 1]
  x = np.random.default_rng(3).normal(size=(2, h, w, 3)).astype(np.float32)
  x[..., 0] += 2.0 * masks.max(axis=1)
  targets = {'boxes': jnp.asarray(boxes), 'labels': jnp.asarray(labels),
             'box_valid': jnp.asarray(labels >= 0), 'masks': jnp.asarray(masks)}
  return jnp.asarray(x), targets, jnp.asarray([[h, w], [h, w]])


def test_mask_samples_caps_the_positives_the_heads_train_on():
  """`mask_samples` (the demos' speed setting): each stage's mask logits, targets and validity
  cover the first k sampled slots (where the positives are), not all int(32 * 0.25)."""
  from conftest import random_variables
  more = dict(TINY, roi_samples=32, train_pre_nms=200, train_proposals=64, rpn_samples=64)
  x, targets, hw = disc_batch()
  for k, want in ((0, 8), (3, 3)):  # 0: all of int(32 * 0.25) positive slots
    model = zoo.create_model('cascade_mask_rcnn_w18', **dict(more, mask_samples=k))
    variables = random_variables(model, x)
    out = jax.eval_shape(lambda v: model.apply(v, x, train=True, image_hw=hw, targets=targets,
                                               rngs={'sample': jax.random.key(0)},
                                               mutable=['batch_stats'])[0], variables)
    for stage in out['stages']:
      assert stage['mask_logits'].shape == stage['mask_targets'].shape == (2, want, 28, 28)
      assert stage['mask_valid'].shape == (2, want)


@pytest.mark.slow
def test_mask_training_learns_on_a_fixed_batch():
  """A tiny Mask R-CNN: twenty Adam steps on one batch of discs lower the mask loss (targets
  cut from the ground-truth masks inside the model) with the box losses."""
  import optax
  from test_rcnn import tiny_task
  model = zoo.create_model('mask_rcnn_w18', **dict(TINY, norm_eval=False, train_pre_nms=200,
                                                   train_proposals=64, roi_samples=32,
                                                   rpn_samples=64))
  x, targets, hw = disc_batch()
  logs = fit_two_stage(model, tiny_task('mask_rcnn_w18'), x, hw, targets, optax.adam(3e-3), 20)
  losses = [log['loss'] for log in logs]
  mask_losses = [log['loss_mask'] for log in logs]
  assert np.all(np.isfinite(losses)) and 0.3 < mask_losses[0] < 2.0
  assert np.mean(mask_losses[-3:]) < 0.6 * np.mean(mask_losses[:3]), mask_losses
  assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


# --- Data and the metric ------------------------------------------------------------------------


def _instances_file(root, with_images=True):
  """A COCO instances split of two images whose objects are given as a polygon, an
  uncompressed RLE and a compressed RLE (and a crowd region, left out)."""
  import json
  import cv2
  from pycocotools import mask as mask_utils
  (root / 'annotations').mkdir(parents=True)
  (root / 'images' / 'val').mkdir(parents=True)
  sizes = {1: (40, 60), 2: (50, 30)}
  for i, (h, w) in sizes.items():
    cv2.imwrite(str(root / 'images' / 'val' / f'{i}.png'), np.full((h, w, 3), 90, np.uint8))
  blob = np.zeros((50, 30), np.uint8)
  blob[5:40, 3:20] = 1
  blob[10:20, 8:12] = 0
  fortran = mask_utils.encode(np.asfortranarray(blob))
  counts, value, run = [], 0, 0  # uncompressed RLE of blob, column-major
  for v in blob.T.reshape(-1):
    if v != value:
      counts.append(run)
      value, run = v, 0
    run += 1
  counts.append(run)
  annotations = [
      {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0, 'area': 200.0,
       'bbox': [10, 10, 20, 10], 'segmentation': [[10, 10, 30, 10, 30, 20, 10, 20]]},
      {'id': 2, 'image_id': 1, 'category_id': 2, 'iscrowd': 0, 'area': 120.0,
       'bbox': [35, 5, 20, 12], 'segmentation': [[35, 5, 55, 5, 45, 17]]},
      {'id': 3, 'image_id': 2, 'category_id': 1, 'iscrowd': 0, 'area': float(blob.sum()),
       'bbox': [3, 5, 17, 35], 'segmentation': {'size': [50, 30], 'counts': counts}},
      {'id': 4, 'image_id': 2, 'category_id': 2, 'iscrowd': 0, 'area': 64.0,
       'bbox': [20, 40, 8, 8], 'segmentation': dict(
           size=[50, 30], counts=mask_utils.encode(np.asfortranarray(
               np.pad(np.ones((8, 8), np.uint8), ((40, 2), (20, 2)))))['counts'].decode())},
      {'id': 5, 'image_id': 2, 'category_id': 1, 'iscrowd': 1, 'area': 10.0,
       'bbox': [0, 0, 5, 2], 'segmentation': {'size': [50, 30],
                                              'counts': fortran['counts'].decode()}}]
  data = {'images': [{'id': i, 'file_name': f'{i}.png', 'height': h, 'width': w}
                     for i, (h, w) in sizes.items()],
          'annotations': annotations,
          'categories': [{'id': 1, 'name': 'a'}, {'id': 2, 'name': 'b'}]}
  (root / 'annotations' / 'instances_val.json').write_text(json.dumps(data))
  return root


def test_coco_masks_decode_as_the_coco_api(tmp_path):
  """Polygons, uncompressed and compressed RLE: each kept object's mask equals pycocotools'
  annToMask; the crowd region is left out with its box."""
  from pycocotools.coco import COCO
  from hrnet_jax.data.sources.coco_detection import CocoDetection
  root = _instances_file(tmp_path / 'coco')
  src = CocoDetection(root, 'val', masks=True)
  api = COCO(str(root / 'annotations' / 'instances_val.json'))
  kept = {1: [1, 2], 2: [3, 4]}
  for i in range(len(src)):
    sample = src[i]
    image_id = int(sample['image_id'])
    want = np.stack([api.annToMask(api.anns[a]) for a in kept[image_id]])
    assert sample['masks'].shape == want.shape and sample['masks'].dtype == np.uint8
    np.testing.assert_array_equal(sample['masks'], want)
    assert len(sample['boxes']) == len(want)
  assert src.skipped['crowd'] == 1


def test_train_canvas_carries_the_masks_packed(tmp_path):
  """Masks resized nearest-neighbour with the image, mirrored with it, zero over the padding,
  rows bit-packed and padded to max_boxes; unpacked they are the canvas masks."""
  import cv2
  from hrnet_jax.tasks.detection import canvas
  rng = np.random.default_rng(0)
  masks = (rng.uniform(size=(2, 30, 45)) < 0.4).astype(np.uint8)
  sample = {'image': rng.integers(0, 255, (30, 45, 3), dtype=np.uint8),
            'boxes': np.asarray([[1, 2, 20, 25], [10, 5, 44, 29]], np.float32),
            'labels': np.asarray([0, 1], np.int32), 'image_id': np.int64(3), 'masks': masks}
  for flip in (False, True):
    out = canvas.pad_boxes(canvas.resize_pad(sample, (64, 60), (64, 96), np.zeros(3, np.uint8),
                                             flip=flip, masks=True), 4, masks=True)
    nh, nw = out['image_hw']
    assert out['masks'].shape == (4, 64, 12)
    unpacked = np.unpackbits(out['masks'], axis=-1, count=96)
    want = np.stack([cv2.resize(m, (nw, nh), interpolation=cv2.INTER_NEAREST) for m in masks])
    want = want[:, :, ::-1] if flip else want
    np.testing.assert_array_equal(unpacked[:2, :nh, :nw], want)
    assert not unpacked[:2, nh:].any() and not unpacked[:2, :, nw:].any()
    assert not unpacked[2:].any()


@pytest.mark.parametrize('legacy', [False, True], ids=['v2', 'legacy'])
def test_perfect_masks_score_one_through_the_metric(tmp_path, legacy):
  """Each object's box with an all-ones 28x28 map: pasted it covers exactly its rectangle; on a
  split of rectangles, box AP and mask AP are 1 (pycocotools). Legacy: the boxes are v1's
  inclusive ones (x2 is the last pixel), pasted and written as v1 does."""
  import json
  from hrnet_jax.tasks.detection import metric
  root = tmp_path / 'coco'
  (root / 'annotations').mkdir(parents=True)
  rects = {1: [(10, 10, 30, 20), (35, 4, 55, 36)], 2: [(3, 5, 20, 40)]}
  sizes = {1: (40, 60), 2: (50, 30)}
  anns, k = [], 0
  for image_id, boxes in rects.items():
    for x1, y1, x2, y2 in boxes:
      k += 1
      anns.append({'id': k, 'image_id': image_id, 'category_id': 1, 'iscrowd': 0,
                   'area': float((x2 - x1) * (y2 - y1)), 'bbox': [x1, y1, x2 - x1, y2 - y1],
                   'segmentation': [[x1, y1, x2, y1, x2, y2, x1, y2]]})
  path = root / 'annotations' / 'instances_val.json'
  path.write_text(json.dumps({
      'images': [{'id': i, 'file_name': f'{i}.png', 'height': h, 'width': w}
                 for i, (h, w) in sizes.items()],
      'annotations': anns, 'categories': [{'id': 1, 'name': 'a'}]}))
  boxes = np.zeros((2, 3, 4), np.float32)
  det_valid = np.zeros((2, 3), bool)
  for b, image_id in enumerate(rects):
    boxes[b, :len(rects[image_id])] = np.asarray(rects[image_id]) - [0, 0, legacy, legacy]
    det_valid[b, :len(rects[image_id])] = True
  outputs = {'boxes': boxes, 'scores': np.full((2, 3), 0.9, np.float32),
             'labels': np.zeros((2, 3), np.int32), 'det_valid': det_valid,
             'exact': np.ones(2, bool), 'image_id': np.asarray([1, 2]),
             'masks': np.ones((2, 3, 28, 28), np.float32),
             'orig_hw': np.asarray([sizes[1], sizes[2]]), 'valid': np.ones(2, np.int32),
             'index': np.arange(2)}
  m = metric.CocoInstanceMetric([1], path, legacy=legacy)
  m.update(outputs)
  r = m.result()
  assert r['AP'] == pytest.approx(1.0) and r['mask_AP'] == pytest.approx(1.0)
  m.write(tmp_path)
  segm = json.loads((tmp_path / 'segmentations_val.json').read_text())
  assert len(segm) == 3 and all(isinstance(s['segmentation']['counts'], str) for s in segm)
  outputs['masks'][0, 0, :, :14] = 0.0  # half a mask: the mask AP drops, not the box AP
  m = metric.CocoInstanceMetric([1], path, legacy=legacy)
  m.update(outputs)
  assert m.result()['AP'] == pytest.approx(1.0) and m.result()['mask_AP'] < 0.9
