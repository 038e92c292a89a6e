"""Faster R-CNN and Cascade R-CNN: the mmdetection key layout, conversion both ways, the network
and its detections against an independent PyTorch reference, losses and samples by hand."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TWO_STAGE_TINY as TINY, fit_two_stage, scaled_state_dict
from hrnet_jax import convert, ops
from hrnet_jax.convert import mapping
from hrnet_jax.models import rcnn, zoo
from hrnet_jax.tasks.detection import detection_task
from hrnet_jax.tasks.detection import rcnn as rcnn_task

RECIPES = {'faster_rcnn': 'det_coco_faster_rcnn', 'cascade_rcnn': 'det_coco_cascade_rcnn',
           'mask_rcnn': 'det_coco_mask_rcnn', 'cascade_mask_rcnn': 'det_coco_cascade_mask_rcnn',
           'htc': 'det_coco_htc', 'htc_without_semantic': 'det_coco_htc'}


def tiny_task(arch, legacy=False):
  """The recipe's task for a tiny `arch` of 3 classes (no dataset needed)."""
  import importlib
  recipe = importlib.import_module(f'configs.{RECIPES[zoo.split_arch(arch)[0]]}')
  config = recipe.get_config(f'arch={arch}' + (',legacy' if legacy else ''))
  config.model.overrides.update({k: v for k, v in TINY.items() if k != 'num_classes'})
  task = detection_task(config, classes=([1, 2, 3], ['a', 'b', 'c']))
  assert isinstance(task, rcnn_task.TwoStage)
  return task


@pytest.mark.parametrize('arch, stages', [('faster_rcnn_w32', 1), ('cascade_rcnn_w32', 3)])
def test_release_key_layout(arch, stages):
  """The released checkpoints' keys and shapes (COCO, 81 classes with background last)."""
  keys = dict(mapping.torch_keys_and_shapes(arch))
  assert keys['neck.reduction_conv.conv.weight'] == (256, 480, 1, 1)
  assert keys['rpn_head.rpn_conv.weight'] == (256, 256, 3, 3)
  assert keys['rpn_head.rpn_cls.weight'] == (3, 256, 1, 1)
  assert keys['rpn_head.rpn_reg.weight'] == (12, 256, 1, 1)
  heads = ['roi_head.bbox_head.'] if stages == 1 else [
      f'roi_head.bbox_head.{s}.' for s in range(stages)]
  for head in heads:
    assert keys[head + 'shared_fcs.0.weight'] == (1024, 256 * 7 * 7)
    assert keys[head + 'shared_fcs.1.weight'] == (1024, 1024)
    assert keys[head + 'fc_cls.weight'] == (81, 1024)
    assert keys[head + 'fc_reg.weight'] == ((320, 1024) if stages == 1 else (4, 1024))
  assert not any(k.startswith(('roi_head.mask', 'bbox_head')) for k in keys)
  shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in keys.items()}
  assert mapping.infer_arch(shapes) == (arch, {})


def test_first_fc_is_permuted_from_nchw_flattening():
  """shared_fcs.0: PyTorch row index c*49 + h*7 + w of its input is Flax row (h*7 + w)*C + c."""
  state = scaled_state_dict('faster_rcnn_w18', **TINY)
  variables = convert.torch_to_flax(state, 'faster_rcnn_w18', **TINY)
  kernel = variables['params']['head']['roi_head.bbox_head']['shared_fcs.0']['kernel']
  torch_weight = state['roi_head.bbox_head.shared_fcs.0.weight']
  c = TINY['out_channels']
  for (ch, h, w, o) in [(0, 0, 0, 0), (5, 2, 3, 7), (15, 6, 6, 31), (9, 0, 4, 12)]:
    assert kernel[(h * 7 + w) * c + ch, o] == torch_weight[o, ch * 49 + h * 7 + w]


@pytest.mark.parametrize('arch', ['faster_rcnn_w18', 'cascade_rcnn_w18'])
def test_conversion_round_trip_is_exact(arch):
  """mmdetection layout -> Flax -> mmdetection: every tensor bit for bit, in the release's
  key order."""
  state = scaled_state_dict(arch, **TINY)
  back = convert.flax_to_torch(convert.torch_to_flax(state, arch, **TINY), arch, **TINY)
  assert list(back) == [k for k, _ in mapping.torch_keys_and_shapes(arch, **TINY)]
  for k, v in state.items():
    np.testing.assert_array_equal(np.asarray(back[k]), v, err_msg=k)


@pytest.fixture(scope='module', params=[('faster_rcnn_w18', False), ('cascade_rcnn_w18', False),
                                        ('faster_rcnn_w18', True), ('cascade_rcnn_w18', True)],
                ids=['faster', 'cascade', 'faster-legacy', 'cascade-legacy'])
def both_networks(request):
  """(arch, legacy, JAX outputs, PyTorch reference outputs) of the converted tiny network on one
  image (64x96, the unpadded image 64x90), random weights of the release's layout (legacy:
  HRNet-Object-Detection's, converted with the layout inferred)."""
  import torch
  from hrnet_jax.convert import torch_hrnet
  arch, legacy = request.param
  more = dict(TINY, test_proposals=1000, legacy=legacy)  # more slots than survivors
  state = scaled_state_dict(arch, seed=1, **more)
  variables = convert.torch_to_flax(state, arch, **more)
  reference = torch_hrnet.build(arch, **more)
  reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
  x = np.random.default_rng(2).standard_normal((1, 64, 96, 3), np.float32)
  with torch.no_grad():
    want = reference.forward_two_stage(torch.from_numpy(x).permute(0, 3, 1, 2), [(64, 90)])
  model = zoo.create_model(arch, **more)
  got = jax.jit(lambda v, x: model.apply(v, x, image_hw=jnp.asarray([[64, 90]])))(variables, x)
  return arch, legacy, got, {k: v.numpy() for k, v in want.items()}


@pytest.mark.slow
def test_converted_network_equals_pytorch(both_networks):
  """The converted network gives the reference's proposals (the same ones: validity equal),
  class logits and deltas (torchvision's roi_align and nms inside the reference; legacy: v1's
  kernel and NMS written out, background first in its outputs)."""
  arch, legacy, got, want = both_networks
  if legacy:  # the reference's background comes first; the model has no background deltas
    want = dict(want, logits=np.roll(want['logits'], -1, axis=-1))
    if arch.startswith('faster'):
      want['deltas'] = want['deltas'][..., 4:]
  np.testing.assert_array_equal(np.asarray(got['valid']), want['valid'])
  assert 100 < want['valid'].sum() < 1000  # proposals, and empty slots
  for k in ('rois', 'logits', 'deltas'):
    scale = np.abs(want[k]).max()
    np.testing.assert_allclose(np.asarray(got[k]) / scale, want[k] / scale, atol=1e-4,
                               err_msg=k)


def torch_detections(rois, logits, deltas, hw, scale, stds, agnostic):
  """mmdetection's R-CNN test written with torch: softmax, deltas, clip, rescale, batched NMS."""
  import torch
  import torchvision
  from hrnet_jax.convert.torch_rcnn import apply_deltas
  rois, logits, deltas = (torch.tensor(np.asarray(a)) for a in (rois, logits, deltas))
  probs = torch.softmax(logits, 1)[:, :-1]
  k = probs.shape[1]
  boxes = apply_deltas(rois, deltas, stds, hw).reshape(len(rois), -1, 4)
  boxes = boxes / torch.tensor([scale[0], scale[1], scale[0], scale[1]])
  boxes = boxes.expand(len(rois), k, 4) if agnostic else boxes
  rows, cols = torch.nonzero(probs > 0.05, as_tuple=True)
  b, s = boxes[rows, cols], probs[rows, cols]
  keep = torchvision.ops.batched_nms(b, s, cols, 0.5)[:100]
  return b[keep].numpy(), s[keep].numpy(), cols[keep].numpy()


def legacy_torch_detections(rois, logits, deltas, hw, scale, stds, agnostic):
  """mmdetection v1's R-CNN test (the reference's, torch_rcnn.legacy_detections) on the
  reference network's raw outputs (background first)."""
  import torch
  from hrnet_jax.convert.torch_rcnn import legacy_detections
  del agnostic  # read from the deltas' width
  out = legacy_detections(*(torch.tensor(np.asarray(a)) for a in (rois, logits, deltas)), hw,
                          scale, stds)
  return tuple(t.numpy() for t in out)


@pytest.mark.slow
def test_detections_equal_the_reference_protocol(both_networks):
  """The task's decode of the converted model equals the protocol computed with torch on the
  reference network's outputs (the same boxes, scores and classes, in order)."""
  arch, legacy, got, want = both_networks
  hw, scale = np.asarray([64, 90]), np.asarray([0.8, 0.75], np.float32)
  if legacy:  # v1 divides by its one keep-aspect factor
    scale = np.asarray([0.8, 0.8], np.float32)
  detections = tiny_task(arch, legacy).decode(got, jnp.asarray([hw]), jnp.asarray([scale]))
  n = int(want['valid'][0].sum())
  stds = rcnn.STAGE_STDS[0 if arch.startswith('faster') else 2]
  protocol = legacy_torch_detections if legacy else torch_detections
  boxes, scores, labels = protocol(want['rois'][0, :n], want['logits'][0, :n],
                                   want['deltas'][0, :n], hw, scale, stds,
                                   arch.startswith('cascade'))
  m = int(detections['valid'][0].sum())
  assert m == len(scores) > 10 and bool(detections['exact'][0])
  np.testing.assert_array_equal(np.asarray(detections['labels'][0, :m]), labels)
  np.testing.assert_allclose(np.asarray(detections['scores'][0, :m]), scores, atol=1e-5)
  np.testing.assert_allclose(np.asarray(detections['boxes'][0, :m]), boxes, atol=1e-3)


def test_another_detector_or_class_count_names_the_key_and_the_config_key():
  cascade = scaled_state_dict('cascade_rcnn_w18_small_v1')
  with pytest.raises(convert.ConversionError) as e:
    convert.torch_to_flax(cascade, 'faster_rcnn_w18_small_v1')
  first = str(e.value).splitlines()[0]
  assert first.startswith('the checkpoint looks like cascade_rcnn_w18_small_v1, not '
                          'faster_rcnn_w18_small_v1: set config.model.arch=cascade_rcnn_w18')
  faster = scaled_state_dict('faster_rcnn_w18_small_v1')  # COCO: 80 classes
  with pytest.raises(convert.ConversionError) as e:
    convert.torch_to_flax(faster, 'faster_rcnn_w18_small_v1', num_classes=3)
  assert str(e.value).startswith("the checkpoint's head has num_classes=80, this model 3 (from "
                                 'the dataset, config.data)')
  assert e.value.misshaped[0] == ('roi_head.bbox_head.fc_cls.weight: expected [4, 1024], found '
                                  '[81, 1024]')


def test_losses_by_hand():
  """RPN: BCE over sampled anchors, L1 of positives, both / samples. R-CNN: CE over valid RoIs,
  L1 (or smooth L1) of positives, both / valid RoIs."""
  rpn = {'logits': jnp.asarray([[0.0, 2.0, -1.0, 5.0]]), 'labels': jnp.asarray([[1, 0, 0, 1]]),
         'weights': jnp.asarray([[1.0, 1.0, 0.0, 0.0]]), 'pos': jnp.asarray([[True, False,
                                                                             False, False]]),
         'deltas': jnp.asarray([[[1., 0, 0, 0], [9, 9, 9, 9], [9, 9, 9, 9], [9, 9, 9, 9]]]),
         'targets': jnp.zeros((1, 4, 4))}
  cls, box = rcnn_task.rpn_loss(rpn, beta=0.0)
  np.testing.assert_allclose(cls, (np.log(2) + np.log(1 + np.exp(2))) / 2, rtol=1e-6)
  np.testing.assert_allclose(box, 1.0 / 2, rtol=1e-6)
  _, smooth = rcnn_task.rpn_loss(rpn, beta=1 / 9)
  np.testing.assert_allclose(smooth, (1 - 1 / 18) / 2, rtol=1e-6)
  stage = {'logits': jnp.asarray([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 1.0, 1.0]]]),
           'labels': jnp.asarray([[0, 2, 1]]), 'valid': jnp.asarray([[True, True, False]]),
           'deltas': jnp.asarray([[[0.5, 0, 0, 0], [7, 7, 7, 7], [7, 7, 7, 7]]]),
           'targets': jnp.zeros((1, 3, 4))}
  cls, box, acc = rcnn_task.stage_loss(stage, beta=0.0)
  ce0 = -np.log(np.exp(2) / (np.exp(2) + 2))
  np.testing.assert_allclose(cls, (ce0 + np.log(3)) / 2, rtol=1e-6)
  np.testing.assert_allclose(box, 0.5 / 2, rtol=1e-6)  # label 2 is background (K = 2)
  np.testing.assert_allclose(acc, 0.5)  # RoI 0 right; RoI 1 a tie, argmax 0: wrong
  _, smooth, _ = rcnn_task.stage_loss(stage, beta=1.0)
  np.testing.assert_allclose(smooth, 0.125 / 2, rtol=1e-6)


def test_roi_samples_add_the_ground_truth_and_encode_targets():
  """IoU >= 0.5 assignment over the ground truth (added first) and the proposals, 4 samples at
  half positives: 2 of the 3 positives (the gt itself, IoU 1; a shifted box, 0.905; a half-width
  box, exactly 0.5), the one negative, one empty slot; targets are the deltas to the matched box
  divided by the stds (worked by hand), background gets class K = 3."""
  gt = jnp.asarray([[10., 10., 50., 50.], [0, 0, 0, 0]])
  proposals = jnp.asarray([[12., 10., 52., 50.], [100., 100., 140., 140.], [10., 10., 30., 50.],
                           [0, 0, 0, 0]])
  out = rcnn.roi_samples(jax.random.key(0), proposals, jnp.asarray([1, 1, 1, 0], bool), gt,
                         jnp.asarray([2, 0]), jnp.asarray([1, 0], bool), num_classes=3,
                         samples=4, pos_fraction=0.5, iou=0.5, stds=(0.1, 0.1, 0.2, 0.2))
  expected = {(10., 10., 50., 50.): (2, True, [0, 0, 0, 0]),
              (12., 10., 52., 50.): (2, False, [-0.5, 0, 0, 0]),
              (10., 10., 30., 50.): (2, False, [5.0, 0, np.log(2) / 0.2, 0]),
              (100., 100., 140., 140.): (3, False, [0, 0, 0, 0])}
  valid = np.asarray(out['valid'])
  assert valid.tolist() == [True, True, True, False]
  seen = []
  for box, label, from_gt, target in zip(np.asarray(out['rois'])[:3], np.asarray(out['labels']),
                                         np.asarray(out['from_gt']), np.asarray(out['targets'])):
    want_label, want_gt, want_target = expected[tuple(box.tolist())]
    assert (label, from_gt) == (want_label, want_gt)
    np.testing.assert_allclose(target, want_target, atol=1e-5)
    seen.append(label)
  assert sorted(seen) == [2, 2, 3]


@pytest.mark.slow
def test_training_steps_learn_on_a_fixed_batch():
  """A tiny Faster R-CNN: fifteen SGD steps on one batch lower the loss (RPN and R-CNN)."""
  import optax
  model = zoo.create_model('faster_rcnn_w18', **dict(TINY, norm_eval=False, train_pre_nms=200,
                                                     train_proposals=64, roi_samples=32,
                                                     rpn_samples=64))
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 64, 96, 3)), jnp.float32)
  targets = {'boxes': jnp.asarray([[[8., 8., 40., 40.], [50., 20., 90., 60.]],
                                   [[30., 10., 60., 50.], [0., 0., 0., 0.]]]),
             'labels': jnp.asarray([[0, 2], [1, 0]]), 'box_valid': jnp.asarray([[1, 1], [1, 0]],
                                                                               bool)}
  hw = jnp.asarray([[64, 96], [64, 96]])
  logs = fit_two_stage(model, tiny_task('faster_rcnn_w18'), x, hw, targets,
                       optax.sgd(0.005, momentum=0.9), 15)
  losses = [log['loss'] for log in logs]
  assert np.all(np.isfinite(losses)) and np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


def test_anchor_targets_sample_only_anchors_on_the_image():
  """RPN targets: positives by IoU >= 0.7 or as a box's best anchor; anchors over the padding
  are never sampled."""
  anchors = jnp.asarray(ops.anchor_grid([(4, 4)], [8], scales=(2.0,), ratios=(1.0,)))
  valid = ops.valid_anchors([(4, 4)], [8], 1, np.asarray([16, 32]))  # rows 0-1 only
  gt = jnp.asarray([[-8., -8., 8., 8.], [12., 0., 28., 16.]])
  out = rcnn.rpn_targets(jax.random.key(0), anchors, valid, gt, jnp.asarray([1, 1], bool), 16,
                         0.5, (0.7, 0.3, 0.3))
  # By hand, row 0: IoU 1 (gt 0), 0.33 (ignored), 0.23, 0.23; row 1: 0.33 (ignored), 0.14,
  # then gt 1's best, 0.6 twice (tied low-quality matches, both positive).
  pos = np.asarray(out['pos']).reshape(4, 4)
  assert pos[0, 0] and pos[1, 2] and pos[1, 3] and pos.sum() == 3
  weights = np.asarray(out['weights']).reshape(4, 4)
  assert weights[2:].sum() == 0 and weights[:2].sum() == 6  # 3 positives + 3 negatives
  assert weights[0, 1] == weights[1, 0] == 0


@pytest.mark.parametrize('arch, stages', [('faster_rcnn_w32', 1), ('cascade_rcnn_w32', 3)])
def test_legacy_key_layout(arch, stages):
  """HRNet-Object-Detection's checkpoints (mmdetection v0.x): plain neck convs, top-level box
  heads, 81 logits with the background first, 324 class-specific deltas (its 4 first)."""
  keys = dict(mapping.torch_keys_and_shapes(arch, legacy=True))
  assert keys['neck.reduction_conv.0.weight'] == (256, 480, 1, 1)
  assert keys['neck.fpn_conv.4.bias'] == (256,)
  heads = ['bbox_head.'] if stages == 1 else [f'bbox_head.{s}.' for s in range(stages)]
  for head in heads:
    assert keys[head + 'fc_cls.weight'] == (81, 1024)
    assert keys[head + 'fc_reg.weight'] == ((324, 1024) if stages == 1 else (4, 1024))
    assert keys[head + 'shared_fcs.0.weight'] == (1024, 256 * 7 * 7)
  assert not any(k.startswith(('roi_head', 'neck.fpn_convs', 'neck.reduction_conv.conv'))
                 for k in keys)
  shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in keys.items()}
  assert mapping.infer_arch(shapes) == (arch, {'legacy': True})


def test_legacy_conversion_moves_the_background_last():
  """The background's logit row moves from first to last; its 4 delta rows are dropped (no
  test reads them) and written back as zeros; everything else round-trips bit for bit."""
  arch, more = 'faster_rcnn_w18', dict(TINY, legacy=True)
  state = scaled_state_dict(arch, **more)
  variables = convert.torch_to_flax(state, arch, **more)
  head = variables['params']['head']['roi_head.bbox_head']  # the model's names stay v2's
  np.testing.assert_array_equal(head['fc_cls']['kernel'][:, -1],
                                state['bbox_head.fc_cls.weight'][0])
  np.testing.assert_array_equal(head['fc_cls']['bias'][:3], state['bbox_head.fc_cls.bias'][1:])
  np.testing.assert_array_equal(head['fc_reg']['bias'], state['bbox_head.fc_reg.bias'][4:])
  assert head['fc_reg']['kernel'].shape == (TINY['fc_channels'], 4 * TINY['num_classes'])
  back = convert.flax_to_torch(variables, arch, **more)
  for k, v in state.items():
    if k.startswith('bbox_head.fc_reg.'):
      np.testing.assert_array_equal(back[k][4:], v[4:])
      assert not np.any(back[k][:4])
    else:
      np.testing.assert_array_equal(np.asarray(back[k]), v, err_msg=k)


def test_a_legacy_checkpoint_without_the_switch_names_the_config_key():
  legacy = scaled_state_dict('faster_rcnn_w18_small_v1', legacy=True)
  with pytest.raises(convert.ConversionError) as e:
    convert.torch_to_flax(legacy, 'faster_rcnn_w18_small_v1', legacy=False)
  assert str(e.value).splitlines()[0] == (
      "the checkpoint has HRNet-Object-Detection's layout (mmdetection v0.x: top-level bbox_head, "
      "background first): set config.model.overrides.legacy=True (the two-stage configs' "
      ':legacy)')
  v2 = scaled_state_dict('faster_rcnn_w18_small_v1')
  with pytest.raises(convert.ConversionError) as e:
    convert.torch_to_flax(v2, 'faster_rcnn_w18_small_v1', legacy=True)
  assert str(e.value).splitlines()[0].startswith("the checkpoint has mmdetection v2's layout")
  # Without a stated layout (the converter, config.init_from) the checkpoint's is taken.
  report = convert.Report()
  convert.torch_to_flax(legacy, report=report)
  assert report.arch == 'faster_rcnn_w18_small_v1' and report.overrides == {'legacy': True}


def test_the_legacy_switch_evaluates_only():
  from hrnet_jax.errors import ConfigError
  task = tiny_task('faster_rcnn_w18', legacy=True)
  assert task.legacy and 'mmdetection v1 arithmetic' in task.protocol()
  with pytest.raises(ConfigError, match=r'^config.model.overrides.legacy=True .* train with '
                                        'legacy False'):
    task.model_inputs({})


def test_v1_release_neck_names_are_read_as_legacy():
  """mmdetection v1.0's checkpoints (the W48 releases): legacy heads, ConvModule neck names."""
  arch, more = 'cascade_rcnn_w18', dict(TINY, legacy=True)
  state = scaled_state_dict(arch, **more)
  v1 = {re.sub(r'^neck\.(reduction_conv)\.0\.|^neck\.fpn_conv\.(\d+)\.',
               lambda m: f'neck.{m[1]}.conv.' if m[1] else f'neck.fpn_convs.{m[2]}.conv.', k): v
        for k, v in state.items()}
  assert 'neck.fpn_convs.2.conv.weight' in v1
  want = convert.torch_to_flax(state, arch, **more)
  got = convert.torch_to_flax(v1, arch, **more)
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)

