"""Any input size: nearest-fusion models pad to a multiple of 32 inside the call and crop back."""

import jax
import numpy as np
import pytest

from conftest import random_variables
from hrnet_jax.models import zoo
from hrnet_jax.tasks.heatmaps import decode_heatmaps

TINY = dict(width=8, num_modules=(1, 1, 1), num_blocks=1, stage1_blocks=1, stage1_planes=16)


@pytest.fixture(scope='module')
def pose():
  """A tiny pose model with and without any-size padding (same variables)."""
  padded, plain = (zoo.create_model('pose_w18', any_size=a, **TINY) for a in (True, False))
  x = np.zeros((1, 64, 64, 3), np.float32)
  variables = random_variables(plain, x)  # BN statistics away from 0/1, so padding would show
  return padded, plain, variables


def test_divisible_sizes_are_bit_identical(pose):
  padded, plain, variables = pose
  x = np.random.default_rng(0).standard_normal((2, 96, 64, 3), np.float32)
  assert padded.pad_to == 32 and plain.pad_to == 0
  np.testing.assert_array_equal(padded.apply(variables, x), plain.apply(variables, x))


def test_pose_crop_250x190_matches_its_zero_padded_256x192_input(pose):
  """Heatmaps of ceil(250/4) x ceil(190/4); values and peaks are those of the crop zero-padded
  (numpy) to 256x192 and run by the plain model, cut to the same area."""
  padded, plain, variables = pose
  x = np.random.default_rng(2).standard_normal((1, 250, 190, 3), np.float32)
  out = np.asarray(padded.apply(variables, x))
  assert out.shape == (1, 63, 48, 17)
  reference = np.asarray(plain.apply(variables, np.pad(x, ((0, 0), (0, 6), (0, 2), (0, 0)))))
  np.testing.assert_allclose(out, reference[:, :63, :48], rtol=1e-5, atol=1e-6)
  ours, _ = decode_heatmaps(out)
  theirs, _ = decode_heatmaps(reference[:, :63, :48])
  np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize('arch', ['cls_w18', 'det_w18', 'seg_w18'])
def test_other_archs_run_on_odd_sizes(arch):
  """cls and det pad (outputs cropped to ceil(side / stride)); seg (bilinear fusion) needs no
  padding and is not padded."""
  model = zoo.create_model(arch, **TINY)
  shapes = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x)[0],
                          jax.ShapeDtypeStruct((1, 250, 190, 3), np.float32))
  if arch == 'cls_w18':
    assert shapes.shape == (1, 1000)
  elif arch == 'det_w18':
    assert [s.shape[1:3] for s in shapes] == [(63, 48), (32, 24), (16, 12), (8, 6), (4, 3)]
  else:
    assert model.pad_to == 0 and shapes.shape == (1, 63, 48, 19)


def test_crop_to_input_by_hand():
  y = np.arange(8 * 6).reshape(1, 8, 6, 1)  # stride 4 of a padded 32x24 input
  assert zoo.crop_to_input(y, (29, 17), (32, 24)).shape == (1, 8, 5, 1)  # ceil(29/4), ceil(17/4)
  assert zoo.crop_to_input(y, (28, 20), (32, 24)).shape == (1, 7, 5, 1)
  assert zoo.crop_to_input(np.ones((1, 10)), (29, 17), (32, 24)).shape == (1, 10)
