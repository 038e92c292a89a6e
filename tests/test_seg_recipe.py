"""Recipe pieces: schedules and optimizer against PyTorch, the OCR loss, bf16 steps, init_from
an official classification .pth, the PASCAL-Context / LIP readers."""

import cv2
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import flat

from hrnet_jax.tasks import segmentation as seg
from hrnet_jax.train import checkpoint, optim


def opt_config(**kw):
  c = ml_collections.ConfigDict(dict(name='sgd', lr=0.01, momentum=0.9, nesterov=False,
                                     weight_decay=5e-4, schedule='poly', power=0.9,
                                     warmup_steps=0))
  c.update(kw)
  return c


def test_poly_schedule_and_warmup_by_hand():
  s = optim.make_schedule(opt_config(), 100)
  for t in (0, 1, 37, 99, 100):
    assert float(s(t)) == pytest.approx(0.01 * (1 - t / 100) ** 0.9, abs=1e-9)
  w = optim.make_schedule(opt_config(warmup_steps=10), 110)
  assert float(w(0)) == pytest.approx(0.0)
  assert float(w(5)) == pytest.approx(0.005)
  assert float(w(10 + 50)) == pytest.approx(0.01 * (1 - 50 / 100) ** 0.9, rel=1e-6)
  st = optim.make_schedule(opt_config(schedule='step', boundaries=(30, 60), gamma=0.1), 90)
  assert [float(st(t)) for t in (29, 30, 59, 60)] == pytest.approx([0.01, 0.001, 0.001, 1e-4])


@pytest.mark.parametrize('name,kw', [('sgd', {}), ('sgd', {'nesterov': True}), ('adam', {})])
def test_optimizer_matches_pytorch(name, kw):
  torch = pytest.importorskip('torch')
  c = opt_config(name=name, schedule='constant', **kw)
  tx = optim.make_optimizer(c, optim.make_schedule(c, 10))
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(4, 3)).astype(np.float32)
  grads = [rng.normal(size=(4, 3)).astype(np.float32) for _ in range(4)]
  params, state = jnp.asarray(w0), tx.init(jnp.asarray(w0))
  for g in grads:
    updates, state = tx.update(jnp.asarray(g), state, params)
    params = params + updates
  tw = torch.nn.Parameter(torch.from_numpy(w0.copy()))
  if name == 'sgd':
    topt = torch.optim.SGD([tw], lr=0.01, momentum=0.9, weight_decay=5e-4, **kw)
  else:
    topt = torch.optim.Adam([tw], lr=0.01, weight_decay=5e-4)
  for g in grads:
    tw.grad = torch.from_numpy(g)
    topt.step()
  np.testing.assert_allclose(params, tw.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_ocr_loss_adds_the_weighted_aux_cross_entropy():
  c = ml_collections.ConfigDict(dict(
      task='segmentation', model=dict(arch='seg_ocr_w18', overrides={}, remat=False),
      data=dict(name='cityscapes'), loss=dict(class_weights=(), ohem=True, ohem_thresh=0.7,
                                               ohem_min_kept=50, ohem_group=0,
                                               aux_weight=0.4)))
  task = seg.Segmentation(c)
  assert task.align_corners  # the OCR release
  rng = np.random.default_rng(0)
  aux, out = (jnp.asarray(rng.normal(size=(2, 4, 6, 19)), jnp.float32) for _ in range(2))
  labels = rng.integers(0, 19, (2, 16, 24)).astype(np.uint8)
  loss, parts = task.loss((aux, out), {'label': labels})
  up = lambda x: seg.upsample_logits(x, (16, 24), True)
  main = seg.ohem_cross_entropy(up(out), labels, None, 0.7, 50)
  expected = main + 0.4 * seg.cross_entropy(up(aux), labels)
  assert float(loss) == pytest.approx(float(expected), rel=1e-6)
  assert float(parts['loss_main']) == pytest.approx(float(main), rel=1e-6)


def test_bf16_step_keeps_float32_params_and_learns(seg_root):
  """The trainer's step in bfloat16: float32 params, BN statistics and loss, and it learns."""
  from conftest import fresh_step, recipe
  c = recipe('seg_cityscapes', seg_root)
  c.dtype = 'bfloat16'
  c.optimizer.update(dict(schedule='constant', lr=0.01))
  state, step = fresh_step(c)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
           'label': np.tile(np.arange(32, dtype=np.uint8) % 3, (4, 32, 1))}
  losses = []
  for _ in range(4):
    state, m = step(state, batch)
    losses.append(float(m['loss']))
    assert m['loss'].dtype == jnp.float32
  leaves = jax.tree_util.tree_leaves((state.params, state.batch_stats))
  assert all(x.dtype == jnp.float32 for x in leaves)
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


def random_variables(arch: str, seed: int) -> dict:
  """Variables of an arch filled with random numbers (shapes from eval_shape: no compile)."""
  from hrnet_jax.models import zoo
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(s.dtype),
                                zoo.init_shapes(arch))


@pytest.mark.parametrize('target_arch', ['seg_w18', 'pose_w18'])
def test_init_from_an_official_classification_pth(tmp_path, target_arch):
  """An official ImageNet .pth (converted on the fly) fills a segmentation backbone, and the
  pose backbone, whose last stage keeps only the high-resolution stream, as a subset; the head
  keeps its fresh values. A checkpoint of another width is refused with what is mis-shaped."""
  torch = pytest.importorskip('torch')
  from flax import traverse_util

  from hrnet_jax import convert
  from hrnet_jax.convert import mapping
  from hrnet_jax.models import zoo
  pretrained = random_variables('cls_w18', 1)
  torch.save({k: torch.from_numpy(np.array(a)) for k, a in
              convert.flax_to_torch(pretrained, 'cls_w18').items()}, tmp_path / 'imagenet.pth')
  loaded, where = checkpoint.load_variables(tmp_path / 'imagenet.pth')
  assert 'PyTorch' in where
  target = random_variables(target_arch, 2)
  merged, what = checkpoint.merge_subtree(target, loaded, 'backbone')
  assert 'backbone arrays' in what and 'others kept fresh' in what
  for collection in ('params', 'batch_stats'):
    got = flat(merged[collection])
    fresh = flat(target[collection])
    # The pose backbone groups stage 4's modules differently (its last one stands alone):
    # compare with the pretrained arrays placed, module by module, in the target's layout.
    want = flat(traverse_util.unflatten_dict(mapping.restack(
        traverse_util.flatten_dict(pretrained[collection]),
        traverse_util.flatten_dict(target[collection]))))
    backbone = [k for k in got if k.startswith("['backbone']")]
    assert len(backbone) > 100
    for k in backbone:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    for k in got:
      if k.startswith("['head']"):
        np.testing.assert_array_equal(got[k], fresh[k], err_msg=k)
  with pytest.raises(ValueError, match='mis-shaped'):
    checkpoint.merge_subtree(zoo.init_shapes(target_arch.replace('w18', 'w32')), loaded)


def write_png(path, array):
  path.parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(str(path), array)


def test_pascal_context_and_lip_readers(tmp_path):
  from hrnet_jax.data.sources import DataError, lip, pascal_context
  rng = np.random.default_rng(0)
  ctx = tmp_path / 'ctx'
  label = rng.integers(0, 61, (6, 8)).astype(np.uint8)  # 60 is out of range -> ignore
  write_png(ctx / 'SegmentationClassContext' / '2008_000001.png', label)
  (ctx / 'JPEGImages').mkdir()
  cv2.imwrite(str(ctx / 'JPEGImages' / '2008_000001.jpg'), np.zeros((6, 8, 3), np.uint8))
  (ctx / 'ImageSets' / 'SegmentationContext').mkdir(parents=True)
  (ctx / 'ImageSets' / 'SegmentationContext' / 'val.txt').write_text('2008_000001\n')
  s = pascal_context.PascalContext(ctx, 'val')[0]
  expected = np.where((label == 0) | (label > 59), 255, label.astype(int) - 1)
  np.testing.assert_array_equal(s['label'], expected)
  with pytest.raises(DataError, match='train.txt'):
    pascal_context.PascalContext(ctx, 'train')

  root = tmp_path / 'lip'
  label = rng.integers(0, 22, (5, 7)).astype(np.uint8)
  write_png(root / 'TrainVal_parsing_annotations' / 'val_segmentations' / '100_1.png', label)
  (root / 'TrainVal_images' / 'val_images').mkdir(parents=True)
  cv2.imwrite(str(root / 'TrainVal_images' / 'val_images' / '100_1.jpg'),
              np.zeros((5, 7, 3), np.uint8))
  (root / 'TrainVal_images' / 'val_id.txt').write_text('100_1\n')
  s = lip.LIP(root, 'val')[0]
  np.testing.assert_array_equal(s['label'], np.where(label > 19, 255, label))
  assert s['image'].shape == (5, 7, 3)
