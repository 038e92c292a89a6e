"""Segmentation inference protocols against the official algorithms written out independently:
per image, per scale, per window, with OpenCV resizing the input and PyTorch upsampling scores,
as the official test code does."""

import math
from fractions import Fraction

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.data import transforms
from hrnet_jax.models.layers import resize_bilinear
from hrnet_jax.tasks import segmentation as seg
from hrnet_jax.tasks import segmentation_inference as si

torch = pytest.importorskip('torch')
F = torch.nn.functional


@pytest.mark.parametrize('size,crop,stride', [(100, 30, 20), (64, 64, 43), (65, 32, 22),
                                              (7, 3, 1)])
def test_clamped_windows_cover_every_pixel_and_stay_inside(size, crop, stride):
  starts = si.window_starts(size, crop, stride)
  covered = np.zeros(size, int)
  for s in starts:
    assert 0 <= s <= size - crop
    covered[s:s + crop] += 1
  assert covered.min() >= 1
  assert starts[0] == 0 and starts[-1] == size - crop


def test_scaled_sizes_follow_the_long_side_rule():
  # Worked by hand: long = int(base * s + 0.5), other = int(side * long / long_side + 0.5).
  assert transforms.scaled_size(1024, 2048, 0.6, 2048) == (615, 1229)  # not int(1024 * .6 + .5)
  assert transforms.scaled_size(375, 500, 1.75, 520) == (683, 910)
  assert transforms.scaled_size(500, 333, 1.75, 520) == (910, 606)
  assert transforms.scaled_size(300, 300, 0.5, 473) == (237, 237)
  assert transforms.scaled_size(40, 60, 1.25, 0) == (50, 75)
  rng = np.random.default_rng(0)
  hw = rng.integers(20, 900, (200, 2)).astype(np.int32)
  for s, base in ((0.75, 520), (1.75, 520), (1.1, 473), (0.6, 2048), (1.3, 0)):
    got = np.stack(transforms.scaled_size(jnp.asarray(hw[:, 0]), jnp.asarray(hw[:, 1]), s, base),
                   1)
    want = []
    for h, w in hw.tolist():
      if not base:  # the scale as the fraction it stands for, halves rounded up
        want.append(tuple(int(Fraction(v) * Fraction(str(s)) + Fraction(1, 2)) for v in (h, w)))
        continue
      long = int(base * s + 0.5)
      want.append((long, int(w * long / h + 0.5)) if h > w else (int(h * long / w + 0.5), long))
    np.testing.assert_array_equal(got, want)


def test_training_scales_are_the_official_tenths():
  rng = np.random.default_rng(0)
  drawn = {transforms.draw_scale(rng, (0.5, 2.1), 0.1) for _ in range(3000)}
  assert drawn == {0.5 + k / 10.0 for k in range(17)}  # random.randint(0, 16) inclusive
  lip = {transforms.draw_scale(rng, (0.5, 1.6), 0.1) for _ in range(3000)}
  assert lip == {0.5 + k / 10.0 for k in range(12)}


def test_resize_region_equals_pytorch_on_each_sample():
  rng = np.random.default_rng(1)
  x = rng.random((2, 20, 30, 4)).astype(np.float32)
  in_hw = np.array([[13, 29], [20, 17]], np.int32)
  out_hw = np.array([[31, 7], [9, 40]], np.int32)
  for align in (False, True):
    got = np.array(si.resize_region(jnp.asarray(x), (35, 45), jnp.asarray(in_hw),
                                     jnp.asarray(out_hw), align))
    for n in range(2):
      ref = _torch_resize(x[n, :in_hw[n, 0], :in_hw[n, 1]], tuple(out_hw[n]), align)
      np.testing.assert_allclose(got[n, :out_hw[n, 0], :out_hw[n, 1]], ref, atol=2e-6)
      got[n, :out_hw[n, 0], :out_hw[n, 1]] = 0
    assert not got.any()  # zero outside each region


# --- A toy model that is neither translation nor flip equivariant -----------------------------


def toy_model(num_classes=5, seed=0):
  """3x3 conv (zero padded) at half resolution plus a ramp over the window's rows and columns:
  where a window starts, what it is padded with and how it is resized all change its output."""
  k = jax.random.normal(jax.random.key(seed), (3, 3, 3, num_classes)) * 0.5

  @jax.jit
  def forward(x):
    y = jax.lax.conv_general_dilated(x.astype(jnp.float32), k, (2, 2), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    h, w = y.shape[1:3]
    ramp = jnp.linspace(0, 1, h)[:, None, None] * jnp.arange(num_classes) / num_classes
    return y + ramp + jnp.linspace(-1, 0, w)[None, :, None] * (jnp.arange(num_classes) % 2)
  return forward


def _torch_resize(a, size_hw, align_corners):
  t = torch.from_numpy(np.array(a)).permute(2, 0, 1)[None]
  return F.interpolate(t, size=tuple(int(v) for v in size_hw), mode='bilinear',
                       align_corners=align_corners)[0].permute(1, 2, 0).numpy()


def official_inference(forward, image, flip, perm, align):
  """The official `inference`: logits upsampled to the input, flip averaged, then exp."""
  size = image.shape[:2]
  pred = _torch_resize(np.asarray(forward(image[None]))[0], size, align)
  if flip:
    mirrored = _torch_resize(np.asarray(forward(image[None, :, ::-1]))[0], size, align)[:, ::-1]
    if perm is not None:
      mirrored = mirrored[..., perm]
    pred = 0.5 * (pred + mirrored)
  return np.exp(pred)


def official_resize(image, s, base):
  h, w = image.shape[:2]
  long = int(base * s + 0.5)
  nh, nw = (long, int(w * long / h + 0.5)) if h > w else (int(h * long / w + 0.5), long)
  return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)


def official_padded(forward, image, scales, base, crop, flip, perm, pad, align):
  """The official base `multi_scale_inference` (PASCAL-Context, LIP), one image."""
  h, w = image.shape[:2]
  stride = int(crop * 2.0 / 3.0)
  final = 0
  pad_to = lambda a, size: cv2.copyMakeBorder(a, 0, max(size - a.shape[0], 0), 0,
                                              max(size - a.shape[1], 0), cv2.BORDER_CONSTANT,
                                              value=pad)
  for s in scales:
    new = official_resize(image, s, base)
    height, width = new.shape[:2]
    if max(height, width) <= crop:
      preds = official_inference(forward, pad_to(new, crop), flip, perm, align)[:height, :width]
    else:
      new = pad_to(new, crop)
      nh, nw = new.shape[:2]
      rows = math.ceil((nh - crop) / stride) + 1
      cols = math.ceil((nw - crop) / stride) + 1
      preds = np.zeros((nh, nw, final_k(forward)), np.float32)
      count = np.zeros((nh, nw, 1), np.float32)
      for r in range(rows):
        for c in range(cols):
          h0, w0 = r * stride, c * stride
          h1, w1 = min(h0 + crop, nh), min(w0 + crop, nw)
          window = pad_to(new[h0:h1, w0:w1], crop)
          pred = official_inference(forward, window, flip, perm, align)
          preds[h0:h1, w0:w1] += pred[:h1 - h0, :w1 - w0]
          count[h0:h1, w0:w1] += 1
      preds = (preds / count)[:height, :width]
    final = final + _torch_resize(preds, (h, w), align)
  return final


def official_clamped(forward, image, scales, base, crop_hw, flip, perm, align):
  """The official Cityscapes `multi_scale_inference`: whole image up to scale 1, above it
  windows of the crop at stride = crop, the last moved back to the border."""
  h, w = image.shape[:2]
  final = 0
  for s in scales:
    new = official_resize(image, s, base)
    height, width = new.shape[:2]
    if s <= 1.0:
      preds = official_inference(forward, new, flip, perm, align)
    else:
      ch, cw = crop_hw
      rows = math.ceil((height - ch) / ch) + 1
      cols = math.ceil((width - cw) / cw) + 1
      preds = np.zeros((height, width, final_k(forward)), np.float32)
      count = np.zeros((height, width, 1), np.float32)
      for r in range(rows):
        for c in range(cols):
          h1, w1 = min(r * ch + ch, height), min(c * cw + cw, width)
          h0, w0 = max(h1 - ch, 0), max(w1 - cw, 0)
          preds[h0:h1, w0:w1] += official_inference(forward, new[h0:h1, w0:w1], flip, perm,
                                                    align)
          count[h0:h1, w0:w1] += 1
      preds = preds / count
    final = final + _torch_resize(preds, (h, w), align)
  return final


def final_k(forward):
  return int(forward(jnp.zeros((1, 8, 8, 3))).shape[-1])


PAD = (-1.5, -0.5, 0.7)
PERM = np.array([0, 2, 1, 4, 3])


@pytest.mark.parametrize('align', [False, True])
def test_padded_windows_equal_the_official_algorithm_on_images_of_several_sizes(align):
  forward = toy_model()
  rng = np.random.default_rng(2)
  sizes = [(30, 40), (44, 23), (19, 19)]
  canvas = np.zeros((3, 48, 48, 3), np.float32)
  images = [rng.normal(size=(h, w, 3)).astype(np.float32) for h, w in sizes]
  for i, im in enumerate(images):
    canvas[i, :im.shape[0], :im.shape[1]] = im
  scales = (0.5, 1.0, 1.75)
  got = np.asarray(si.infer_padded(forward, jnp.asarray(canvas), jnp.asarray(sizes, jnp.int32),
                                   scales=scales, base_size=40, flip=True, flip_perm=PERM,
                                   crop_hw=(24, 24), stride_rate=2 / 3, pad_value=PAD,
                                   align_corners=align))
  for i, (h, w) in enumerate(sizes):
    want = official_padded(forward, images[i], scales, 40, 24, True, PERM, PAD, align)
    np.testing.assert_allclose(got[i, :h, :w], want, rtol=2e-4)
    assert not got[i, h:].any() and not got[i, :, w:].any()


def test_clamped_full_windows_equal_the_official_cityscapes_algorithm():
  forward = toy_model(seed=1)
  image = np.random.default_rng(3).normal(size=(32, 64, 3)).astype(np.float32)
  scales = (0.5, 0.75, 1.0, 1.25, 1.75)
  got = si.infer_clamped(forward, jnp.asarray(image[None]), scales=scales, base_size=64,
                         flip=True, flip_perm=PERM, crop_hw=(32, 64), stride_rate=1.0)
  want = official_clamped(forward, image, scales, 64, (32, 64), True, PERM, False)
  np.testing.assert_allclose(np.asarray(got)[0], want, rtol=2e-4)


def test_flip_swaps_left_right_classes_back():
  """A mirror-consistent model (its prediction on a mirrored image is the mirrored prediction
  with left/right classes swapped) is unchanged by the flip test only with the swap."""
  g = toy_model(seed=2)
  f = lambda x: g(x) + g(x[:, :, ::-1])[:, :, ::-1][..., PERM]
  x = jax.random.normal(jax.random.key(4), (2, 16, 24, 3))
  plain = si.window_scores(f, x)
  np.testing.assert_allclose(si.window_scores(f, x, flip=True, flip_perm=PERM), plain,
                             rtol=1e-5)
  assert not np.allclose(si.window_scores(f, x, flip=True), plain, rtol=1e-3)


def test_low_resolution_logits_are_upsampled_to_the_input():
  x = jax.random.normal(jax.random.key(3), (1, 32, 48, 3))
  forward = toy_model()
  got = si.infer_clamped(forward, x)
  np.testing.assert_allclose(got, jnp.exp(resize_bilinear(forward(x), (32, 48))), rtol=1e-5)


# --- The recipes' protocols end to end: config -> eval transform -> task scores ---------------


def _task_scores(config, samples, forward):
  task = seg.Segmentation(config)
  items = [task.eval_transform()(s) for s in samples]
  batch = {k: np.stack([it[k] for it in items]) for k in items[0]}
  images = transforms.normalize(batch['image'], config.data.mean, config.data.std)
  return task, batch, np.asarray(task.scores(forward, images, batch))


def _normalized(image, config):
  return ((image.astype(np.float32) - np.float32(config.data.mean)) /
          np.float32(config.data.std)).astype(np.float32)


def test_lip_protocol_stretches_the_image_and_scores_at_the_label_size():
  from configs import seg_lip
  c = seg_lip.get_config('runlocal')
  c.eval.flip = True
  forward = toy_model(num_classes=20)
  rng = np.random.default_rng(5)
  samples = [{'image': rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
              'label': rng.integers(0, 20, (h, w), dtype=np.uint8)} for h, w in ((50, 90),
                                                                                 (80, 40))]
  task, batch, got = _task_scores(c, samples, forward)
  perm = np.arange(20)
  perm[[14, 15, 16, 17, 18, 19]] = [15, 14, 17, 16, 19, 18]  # arms, legs, shoes
  np.testing.assert_array_equal(task.flip_perm, perm)
  for i, s in enumerate(samples):
    h, w = s['label'].shape
    stretched = cv2.resize(s['image'], (64, 64), interpolation=cv2.INTER_LINEAR)
    scores = official_inference(forward, _normalized(stretched, c), True, perm, False)
    want = _torch_resize(scores, (h, w), False)
    np.testing.assert_allclose(got[i, :h, :w], want, rtol=2e-4)
    np.testing.assert_array_equal(batch['label'][i, :h, :w], s['label'])  # untouched


def test_pascal_context_protocol_multi_scale_on_images_of_their_own_size():
  from configs import seg_pascal_ctx
  c = seg_pascal_ctx.get_config('runlocal')
  c.eval.scales = (0.5, 1.0, 1.5)
  forward = toy_model(num_classes=59)
  rng = np.random.default_rng(6)
  samples = [{'image': rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
              'label': np.zeros((h, w), np.uint8)} for h, w in ((70, 90), (96, 52))]
  _, batch, got = _task_scores(c, samples, forward)
  pad = tuple(float(v) for v in _normalized(np.zeros((1, 1, 3), np.uint8), c)[0, 0])
  for i, s in enumerate(samples):
    h, w = s['label'].shape
    want = official_padded(forward, _normalized(s['image'], c), c.eval.scales, 72, 64, False,
                           None, pad, False)
    np.testing.assert_allclose(got[i, :h, :w], want, rtol=2e-4)


def test_eval_canvas_too_small_is_a_clear_error():
  sample = {'image': np.zeros((60, 80, 3), np.uint8), 'label': np.zeros((60, 80), np.uint8)}
  with pytest.raises(ValueError, match='60x80 does not fit config.data.eval_size 50x100'):
    transforms.segmentation_eval_sample(sample, canvas_hw=(50, 100))
  out = transforms.segmentation_eval_sample(sample, canvas_hw=(64, 96))
  assert out['image'].shape == (64, 96, 3) and (out['label'][60:] == 255).all()
  np.testing.assert_array_equal(out['size'], [60, 80])
