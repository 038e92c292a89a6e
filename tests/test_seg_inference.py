"""Flip, multi-scale and sliding-window inference on a translation-equivariant model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.models.layers import resize_bilinear
from hrnet_jax.tasks import segmentation as seg


@pytest.mark.parametrize('size,crop,stride', [(100, 30, 20), (64, 64, 43), (65, 32, 22),
                                              (7, 3, 1)])
def test_windows_cover_every_pixel_and_stay_inside(size, crop, stride):
  starts = seg.window_starts(size, crop, stride)
  covered = np.zeros(size, int)
  for s in starts:
    assert 0 <= s <= size - crop
    covered[s:s + crop] += 1
  assert covered.min() >= 1
  assert starts[0] == 0 and starts[-1] == size - crop


def conv1x1():
  """A linear 1x1 conv: equivariant to translation and flips, so the protocols change nothing."""
  w = jax.random.normal(jax.random.key(0), (3, 5))
  b = jnp.arange(5, dtype=jnp.float32) * 0.1
  return lambda x: jnp.einsum('nhwc,ck->nhwk', x, w) + b


def test_flip_and_sliding_window_equal_the_plain_forward():
  f = conv1x1()
  x = jax.random.normal(jax.random.key(1), (2, 37, 53, 3))
  plain = f(x)
  for sliding in ('always', 'never'):
    got = seg.infer_logits(f, x, scales=(1.0,), flip=True, crop_hw=(16, 24), sliding=sliding)
    np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5)
  # A crop larger than the image: padded, then cropped back.
  got = seg.infer_logits(f, x, scales=(1.0,), crop_hw=(64, 64), sliding='always')
  np.testing.assert_allclose(got, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('align_corners', [False, True])
def test_multi_scale_equals_the_average_of_plain_forwards(align_corners):
  f = conv1x1()
  x = jax.random.normal(jax.random.key(2), (1, 40, 60, 3))
  scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
  expected = 0
  for s in scales:
    size = (int(40 * s + 0.5), int(60 * s + 0.5))
    xs = resize_bilinear(x, size, align_corners=align_corners)
    expected = expected + resize_bilinear(f(xs), (40, 60), align_corners=align_corners)
  expected = expected / len(scales)
  got = seg.infer_logits(f, x, scales=scales, flip=True, crop_hw=(24, 32), sliding='auto',
                         align_corners=align_corners)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_low_resolution_logits_are_upsampled_to_the_input():
  x = jax.random.normal(jax.random.key(3), (1, 32, 48, 3))
  quarter = lambda x: conv1x1()(x[:, ::4, ::4])
  got = seg.infer_logits(quarter, x)
  assert got.shape == (1, 32, 48, 5)
  np.testing.assert_allclose(got, resize_bilinear(quarter(x), (32, 48)), rtol=1e-6)
