"""Recipe pieces: schedules and optimizer against PyTorch, the OCR loss, bf16 steps, checkpoint
retention, init_from an official classification .pth, the PASCAL-Context / LIP readers."""

import functools

import cv2
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

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
      task='segmentation', model=dict(arch='seg_ocr_w18', overrides={}),
      data=dict(name='cityscapes'), loss=dict(class_weights=(), ohem=True, ohem_thresh=0.7,
                                               ohem_min_kept=50, aux_weight=0.4)))
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


def test_bf16_step_keeps_float32_params_and_learns():
  from seg_tiny import tiny_config
  from hrnet_jax.tasks import get_task
  from hrnet_jax.train.loop import TrainState, init_variables, train_step
  c = tiny_config('unused')
  task = get_task(c)
  model = task.create_model(jnp.bfloat16)
  tx = optim.make_optimizer(c.optimizer, optim.make_schedule(c.optimizer, 10))
  v = init_variables(model, 0)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=v['params'],
                     batch_stats=v['batch_stats'], opt_state=tx.init(v['params']))
  step = jax.jit(functools.partial(train_step, model=model, tx=tx, loss_fn=task.loss,
                                   schedule=lambda t: 0.01, mean=tuple(c.data.mean),
                                   std=tuple(c.data.std), dtype=jnp.bfloat16,
                                   rng=jax.random.key(0)))
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
           'label': np.tile(np.arange(32, dtype=np.uint8) % 3, (2, 32, 1))}
  losses = []
  for _ in range(4):
    state, m = step(state, batch)
    losses.append(float(m['loss']))
    assert m['loss'].dtype == jnp.float32
  leaves = jax.tree_util.tree_leaves((state.params, state.batch_stats))
  assert all(x.dtype == jnp.float32 for x in leaves)
  assert np.isfinite(losses).all() and losses[-1] < losses[0]


def test_checkpoints_keep_the_newest_and_the_best(tmp_path):
  manager = checkpoint.make_manager(tmp_path, keep=1, keep_best=1, metric='miou',
                                    async_save=True)
  it = iter(grain.MapDataset.range(10).to_iter_dataset())
  config = ml_collections.ConfigDict({'a': 1})
  for step, miou in ((1, 0.5), (2, 0.9), (3, 0.3), (4, None)):
    next(it)
    checkpoint.save(manager, step, {'w': np.full(3, step, np.float32)}, it, config,
                    None if miou is None else {'miou': miou})
  manager.wait_until_finished()
  assert sorted(manager.all_steps()) == [2, 4]
  assert checkpoint.latest_step_dir(tmp_path).name == '4'


def test_init_from_an_official_classification_pth(tmp_path):
  torch = pytest.importorskip('torch')
  from hrnet_jax import convert
  from hrnet_jax.models import zoo
  def init(arch, seed):
    model = zoo.create_model(arch)
    return jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 64, 64, 3)))

  v = init('cls_w18_small_v1', 1)
  torch.save({k: torch.from_numpy(np.array(a)) for k, a in
              convert.flax_to_torch(v, 'cls_w18_small_v1').items()}, tmp_path / 'imagenet.pth')
  loaded, where = checkpoint.load_variables(tmp_path / 'imagenet.pth')
  assert 'PyTorch' in where
  target = init('seg_w18_small_v1', 2)
  merged, what = checkpoint.merge_subtree(jax.device_get(target), loaded)
  assert 'backbone arrays' in what
  for a, b in zip(jax.tree_util.tree_leaves(merged['params']['backbone']),
                  jax.tree_util.tree_leaves(v['params']['backbone'])):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree_util.tree_leaves(merged['params']['head']),
                  jax.tree_util.tree_leaves(target['params']['head'])):
    np.testing.assert_array_equal(a, b)
  w18 = zoo.init_shapes('seg_w18')  # shapes are all the check needs
  with pytest.raises(ValueError, match='mis-shaped'):
    checkpoint.merge_subtree(w18, loaded)


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
