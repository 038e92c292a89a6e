"""The zoo: official parameter counts, output shapes, the public API, compute dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hrnet_jax
from conftest import TINY, random_variables
from hrnet_jax.models import zoo

# Trainable parameters of the official models (cls 1000, seg 19, pose 17, face 98 classes),
# counted by instantiating the official PyTorch code.
OFFICIAL_COUNTS = dict(
    cls_w18_small_v1=13187464, cls_w18_small_v2=15597464, cls_w18=21299004, cls_w30=37712220,
    cls_w32=41232680, cls_w40=57557160, cls_w44=67064984, cls_w48=77469864, cls_w64=128059944,
    seg_w18_small_v1=1540819, seg_w18_small_v2=3939579, seg_w18=9641119, seg_w30=26024695,
    seg_w32=29546515, seg_w40=45894435, seg_w44=55424779, seg_w48=65859379, seg_w64=116640339,
    pose_w18_small_v1=1602273, pose_w18_small_v2=3757475, pose_w18=9318215, pose_w30=25135883,
    pose_w32=28536113, pose_w40=44319753, pose_w44=53521205, pose_w48=63595745,
    pose_w64=112624785, face_w18=9662528, seg_ocr_w18=12080818, seg_ocr_w48=70372678)


@pytest.mark.parametrize('arch', sorted(OFFICIAL_COUNTS))
def test_parameter_count_equals_official(arch):
  assert zoo.num_params(arch) == OFFICIAL_COUNTS[arch]


def test_list_models_covers_every_task_and_variant():
  names = hrnet_jax.list_models()
  assert len(names) == len(zoo.TASKS) * len(zoo.VARIANTS) == 126
  assert {'seg_w48', 'pose_w32', 'cls_w18_small_v1', 'seg_ocr_w48', 'face_w18', 'det_w40',
          'fcos_w32', 'faster_rcnn_w18', 'cascade_rcnn_w40', 'mask_rcnn_w32',
          'cascade_mask_rcnn_w40', 'htc_w32', 'htc_without_semantic_w18',
          'centernet_w48'} <= set(names)


@pytest.mark.parametrize('arch,hw,expected', [
    ('cls_w18', (224, 224), [(2, 1000)]),
    ('seg_w48', (1024, 2048), [(2, 256, 512, 19)]),
    ('seg_w18', (100, 150), [(2, 25, 38, 19)]),  # bilinear fusion: any size
    ('pose_w32', (256, 192), [(2, 64, 48, 17)]),
    ('face_w18', (256, 256), [(2, 64, 64, 98)]),
    ('seg_ocr_w48', (512, 1024), [(2, 128, 256, 19)] * 2),
    ('det_w32', (512, 768), [(2, 128 // 2**i, 192 // 2**i, 256) for i in range(5)]),
    # FCOS at the recipe's landscape canvas: strides 8..128; the last level pools 200x336 by 16
    # (floor: 12x21) and halves it (6x11), as mmdetection's HRFPN does.
    ('fcos_w32', (800, 1344), [(2, h, w, c) for c in (80, 4, 1) for h, w in
                               ((100, 168), (50, 84), (25, 42), (13, 21), (6, 11))]),
    # Two-stage: 1000 proposals, (deltas, logits, rois, valid); Faster's deltas per class.
    ('faster_rcnn_w32', (800, 1344), [(2, 1000, 320), (2, 1000, 81), (2, 1000, 4), (2, 1000)]),
    ('cascade_rcnn_w18', (800, 1344), [(2, 1000, 4), (2, 1000, 81), (2, 1000, 4), (2, 1000)]),
    # CenterNet at the authors' 511x511 (padded to 512): 128x128 maps, as the Hourglass version;
    # leaves in key order: br_{heat,regr,tag}, ct_{heat,regr}, tl_{heat,regr,tag}.
    ('centernet_w48', (511, 511), [(2, 128, 128, c) for c in (80, 2, 1, 80, 2, 80, 2, 1)]),
])
def test_output_shapes(arch, hw, expected):
  model = hrnet_jax.create_model(arch)
  variables = zoo.init_shapes(arch)
  x = jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  assert [o.shape for o in jax.tree_util.tree_leaves(out)] == expected


def test_overrides_and_errors():
  assert zoo.model_config('pose_w32', num_classes=16)['num_joints'] == 16
  assert zoo.model_config('seg_ocr_w48')['align_corners'] is True
  assert zoo.model_config('seg_w48')['upsample'] == 'bilinear'
  assert zoo.model_config('cls_w18')['upsample'] == 'nearest'
  with pytest.raises(ValueError, match='unknown arch'):
    hrnet_jax.create_model('seg_w19')
  with pytest.raises(ValueError, match='unknown override'):
    hrnet_jax.create_model('seg_w18', num_joints=3)
  with pytest.raises(ValueError, match='upsample'):
    hrnet_jax.create_model('seg_w18', upsample='bicubic')
  with pytest.raises(ValueError, match='divisible by 32'):  # any-size padding turned off
    model = hrnet_jax.create_model('cls_w18_small_v1', any_size=False)
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 100, 100, 3)))


def test_bf16_compute_keeps_float32_params_and_agrees():
  x = np.random.default_rng(0).standard_normal((1, 64, 64, 3), np.float32)
  f32 = hrnet_jax.create_model('seg_w18_small_v1', **TINY)
  bf16 = hrnet_jax.create_model('seg_w18_small_v1', dtype=jnp.bfloat16, **TINY)
  variables = random_variables(f32, x)
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      lambda a: a.dtype == jnp.float32, jax.eval_shape(bf16.init, jax.random.key(0), x)))
  want = np.asarray(jax.jit(f32.apply)(variables, x))
  got = jax.jit(bf16.apply)(variables, x)
  assert got.dtype == jnp.bfloat16
  err = np.abs(np.asarray(got, np.float32) - want).max() / np.abs(want).max()
  assert err < 0.05


def test_train_mode_updates_batch_stats():
  model = hrnet_jax.create_model('seg_w18_small_v1', **TINY)
  x = np.random.default_rng(0).standard_normal((2, 64, 64, 3), np.float32)
  variables = random_variables(model, x)
  _, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, x)
  before = jax.tree_util.tree_leaves(variables['batch_stats'])
  after = jax.tree_util.tree_leaves(updates['batch_stats'])
  assert len(before) == len(after)
  assert all(not np.array_equal(a, b) for a, b in zip(before, after))
