"""Hybrid Task Cascade: the mmdetection key layout of its heads, the semantic branch against the
PyTorch reference (the whole network: test_instance_masks.py), its losses, its COCO-stuff labels
through the pipeline, and training on a fixed batch."""

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TWO_STAGE_TINY as TINY, fit_two_stage, scaled_state_dict
from hrnet_jax import convert
from hrnet_jax.convert import mapping
from hrnet_jax.models import rcnn, zoo


# --- The mmdetection layout ---------------------------------------------------------------------


def test_release_key_layout():
  """htc_hrnetv2p_w32: three mask heads, `conv_res` (1x1) on the second and third only; the
  fused semantic head (five lateral 1x1 convs, four 3x3, the embedding, 183 class maps) after
  the mask heads; inferred back from the keys, with and without the semantic head."""
  keys = dict(mapping.torch_keys_and_shapes('htc_w32'))
  assert 'roi_head.mask_head.0.conv_res.conv.weight' not in keys
  for s in (1, 2):
    assert keys[f'roi_head.mask_head.{s}.conv_res.conv.weight'] == (256, 256, 1, 1)
  semantic = 'roi_head.semantic_head.'
  for i in range(5):
    assert keys[f'{semantic}lateral_convs.{i}.conv.weight'] == (256, 256, 1, 1)
  for i in range(4):
    assert keys[f'{semantic}convs.{i}.conv.weight'] == (256, 256, 3, 3)
  assert keys[semantic + 'conv_embedding.conv.weight'] == (256, 256, 1, 1)
  assert keys[semantic + 'conv_logits.weight'] == (183, 256, 1, 1)
  order = list(keys)
  assert max(i for i, k in enumerate(order) if '.mask_head' in k) < min(
      i for i, k in enumerate(order) if '.semantic_head' in k)
  head = [k for k in order if k.startswith('roi_head.mask_head.1.')]
  assert head[-2:] == ['roi_head.mask_head.1.conv_res.conv.weight',
                       'roi_head.mask_head.1.conv_res.conv.bias']
  shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in keys.items()}
  assert mapping.infer_arch(shapes) == ('htc_w32', {})
  plain = {k: v for k, v in shapes.items() if not k.startswith(semantic)}
  assert mapping.infer_arch(plain) == ('htc_without_semantic_w32', {})
  assert set(plain) == set(dict(mapping.torch_keys_and_shapes('htc_without_semantic_w32')))


@pytest.mark.parametrize('arch', ['htc_w18', 'htc_without_semantic_w18'])
def test_conversion_round_trip_is_exact(arch):
  state = scaled_state_dict(arch, **TINY)
  back = convert.flax_to_torch(convert.torch_to_flax(state, arch, **TINY), arch, **TINY)
  assert list(back) == [k for k, _ in mapping.torch_keys_and_shapes(arch, **TINY)]
  for k, v in state.items():
    np.testing.assert_array_equal(np.asarray(back[k]), v, err_msg=k)


# --- Against the PyTorch reference --------------------------------------------------------------


def test_semantic_head_equals_pytorch():
  """The fused semantic head on five random levels (strides 4..64 of a 64x96 input): class
  logits and embedding at stride 8 equal the reference's (bilinear resizing with aligned
  corners, down from stride 4 and up from 16..64)."""
  import torch
  from hrnet_jax.convert import torch_rcnn
  rng = np.random.default_rng(0)
  levels = [rng.standard_normal((2, 64 // s, 96 // s, 8), np.float32) for s in (4, 8, 16, 32, 64)]
  levels[-1] = rng.standard_normal((2, 1, 2, 8), np.float32)
  reference = torch_rcnn.SemanticHead(8, 5)
  for p in reference.parameters():
    torch.nn.init.normal_(p, std=0.3)
  head = rcnn.SemanticHead(5, 8)
  params = {}
  for name, p in reference.named_parameters():
    module, leaf = name.rsplit('.', 1)
    w = p.detach().numpy()
    params.setdefault(module, {})['kernel' if leaf == 'weight' else 'bias'] = (
        w.transpose(2, 3, 1, 0) if leaf == 'weight' else w)
  logits, embedding = head.apply({'params': params}, [jnp.asarray(x) for x in levels])
  with torch.no_grad():
    want = reference([torch.from_numpy(x).permute(0, 3, 1, 2) for x in levels])
  assert logits.shape == (2, 8, 12, 5) and embedding.shape == (2, 8, 12, 8)
  for got, w in zip((logits, embedding), want):
    np.testing.assert_allclose(np.asarray(got), w.permute(0, 2, 3, 1).numpy(), rtol=1e-4,
                               atol=1e-4)
  assert np.asarray(embedding).std() > 0.1


# --- Losses and training ------------------------------------------------------------------------


def test_semantic_loss_by_hand():
  """Cross-entropy per pixel, ignored pixels (255) counted in the mean with zero loss."""
  from hrnet_jax.tasks.detection.rcnn import semantic_loss
  logits = np.asarray([[[[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]],
                        [[1.0, 3.0, 0.0], [5.0, -5.0, 0.0]]]], np.float32)  # (1, 2, 2, 3)
  labels = np.asarray([[[0, 2], [1, 255]]], np.uint8)
  ce = lambda row, k: np.log(np.exp(row).sum()) - row[k]
  want = (ce(logits[0, 0, 0], 0) + ce(logits[0, 0, 1], 2) + ce(logits[0, 1, 0], 1) + 0.0) / 4
  assert float(semantic_loss(jnp.asarray(logits), jnp.asarray(labels))) == pytest.approx(
      want, rel=1e-6)


@pytest.mark.slow
def test_htc_learns_on_a_fixed_batch():
  """A tiny HTC: twenty Adam steps on one batch of discs lower each stage's mask loss (trained
  on re-drawn RoIs of the refined boxes, heads chained) and the semantic loss."""
  import optax
  from test_instance_masks import disc_batch
  from test_rcnn import tiny_task
  more = dict(TINY, norm_eval=False, train_pre_nms=200, train_proposals=64, roi_samples=32,
              rpn_samples=64, semantic_classes=4)
  model = zoo.create_model('htc_w18', **more)
  x, targets, hw = disc_batch()
  semantic = np.full((2, 64, 96), 3, np.uint8)  # class 3: the background "stuff"
  for b in range(2):
    for mask, label in zip(np.asarray(targets['masks'][b]), np.asarray(targets['labels'][b])):
      if label >= 0:
        semantic[b][mask > 0] = label
  batch = {'semantic': jnp.asarray(semantic[:, ::8, ::8])}
  logs = fit_two_stage(model, tiny_task('htc_w18'), x, hw, targets, optax.adam(3e-3), 20,
                       batch)
  first = lambda k: np.mean([e[k] for e in logs[:3]])
  last = lambda k: np.mean([e[k] for e in logs[-3:]])
  assert all(np.isfinite(e['loss']) for e in logs)
  for k in ('s0.loss_mask', 's1.loss_mask', 's2.loss_mask'):
    assert last(k) < 0.75 * first(k), (k, [e[k] for e in logs])
  assert last('loss_semantic_seg') < 0.6 * first('loss_semantic_seg')
  assert last('loss') < 0.7 * first('loss')


# --- COCO-stuff labels --------------------------------------------------------------------------


def test_train_canvas_carries_the_semantic_labels():
  """The label map resized nearest-neighbour with the image, mirrored with it, 255 over the
  padding, then every 8th pixel (mmdetection's 1/8 SegRescale of the padded map)."""
  from hrnet_jax.tasks.detection import canvas
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 183, (30, 45), dtype=np.uint8)
  sample = {'image': rng.integers(0, 255, (30, 45, 3), dtype=np.uint8),
            'boxes': np.zeros((0, 4), np.float32), 'labels': np.zeros((0,), np.int32),
            'image_id': np.int64(3), 'semantic': labels}
  for flip in (False, True):
    out = canvas.resize_pad(sample, (64, 60), (64, 96), np.zeros(3, np.uint8), flip=flip,
                            semantic=True)
    nh, nw = out['image_hw']
    assert out['semantic'].shape == (8, 12)
    full = np.full((64, 96), 255, np.uint8)
    resized = cv2.resize(labels, (int(nw), int(nh)), interpolation=cv2.INTER_NEAREST)
    full[:nh, :nw] = resized[:, ::-1] if flip else resized
    want = np.stack([[full[8 * i, 8 * j] for j in range(12)] for i in range(8)])
    np.testing.assert_array_equal(out['semantic'], want)
    assert (out['semantic'][:, -(-int(nw) // 8):] == 255).all()


def test_stuff_maps_are_read_beside_the_images(tmp_path):
  """The demo writes COCO-stuff maps that agree with its silhouettes; the source reads them
  for training; a missing folder and a map of the wrong size are one-line errors that name
  the path."""
  from hrnet_jax.data.demos.det_demo import DET_STUFF_LABEL, write_det_demo
  from hrnet_jax.data.sources.coco_detection import CocoDetection
  from hrnet_jax.data.sources.reader import DataError
  root = write_det_demo(tmp_path / 'demo', num_train=4, num_val=2)
  src = CocoDetection(root, 'train', train=True, masks=True, semantic=True)
  ids = {1: 0, 13: 1, 37: 2}
  for i in range(len(src)):
    sample = src[i]
    sem = sample['semantic']
    assert sem.shape == sample['image'].shape[:2] and sem.dtype == np.uint8
    for mask, label in zip(sample['masks'], sample['labels']):
      category = [c for c, k in ids.items() if k == label][0]
      np.testing.assert_array_equal(sem[mask > 0], category - 1)
    things = np.any(sample['masks'], axis=0)  # elsewhere: the stuff, or a crowd of balls
    assert set(np.unique(sem[~things]).tolist()) <= {DET_STUFF_LABEL, 37 - 1}
    assert (sem == DET_STUFF_LABEL).mean() > 0.3
  name = src.file_names[0].replace('.jpg', '.png')
  cv2.imwrite(str(root / 'stuffthingmaps' / 'train' / name), np.zeros((5, 5), np.uint8))
  with pytest.raises(DataError, match=name):
    src[0]
  (root / 'stuffthingmaps' / 'val').rename(root / 'elsewhere')
  with pytest.raises(DataError, match='stuffthingmaps'):
    CocoDetection(root, 'val', semantic=True)


def test_the_recipe_batches_carry_the_stuff_labels(det_demo_root):
  """The HTC recipe's training batches from the trainer's own pipeline on the demo: `semantic`
  (B, H / 8, W / 8) uint8 beside each canvas, the things' labels where the silhouettes are,
  255 over the padding, and the task takes them as the model's inputs."""
  from conftest import recipe
  from hrnet_jax.data import pipeline
  from hrnet_jax.tasks import get_task
  from hrnet_jax.tasks.detection import canvas
  c = recipe('det_coco_htc', det_demo_root)
  task = get_task(c)
  src = task.source(c.data.train_split)
  batches = pipeline.train_iterator(src, task.train_transform(), batch_size=2, seed=0,
                                    groups=task.batch_groups(src, train=True))
  batch = next(batches)
  pipeline.close_iterator(batches)
  b, h, w = batch['image'].shape[:3]
  sem = batch['semantic']
  assert sem.shape == (b, h // 8, w // 8) and sem.dtype == np.uint8
  masks = np.unpackbits(batch['masks'], axis=-1, count=w)[..., ::8, ::8]
  checked = 0
  for i in range(b):
    nh, nw = (int(v) for v in batch['image_hw'][i])
    assert (sem[i, -(-nh // 8):] == canvas.IGNORE_LABEL).all()
    assert (sem[i, :, -(-nw // 8):] == canvas.IGNORE_LABEL).all()
    for mask, label, ok in zip(masks[i], batch['labels'][i], batch['box_valid'][i]):
      inner = mask > 0
      if ok and inner.sum() > 4:  # things: category_id - 1 (person 0, car 12, ball 36)
        values, counts = np.unique(sem[i][inner], return_counts=True)
        assert values[np.argmax(counts)] == {0: 0, 1: 12, 2: 36}[int(label)]
        checked += 1
  assert checked >= 2
  assert set(task.model_inputs(batch)['targets']) == {'boxes', 'labels', 'box_valid', 'masks'}
