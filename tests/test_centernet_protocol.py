"""CenterNet's host side and data: the soft-NMS against the authors' routine written as a scalar
loop, the final 100 boxes, the training crop, the test canvas, the colour noise against the
authors' order of operations in numpy (BGR in [0, 1]), and the rescaling of pairs to the image;
hand-worked cases beside."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.tasks.detection import keypoint_triplets as kt


def loop_soft_nms(boxes, method, nt=0.5, sigma=0.5, threshold=0.001, weight_exp=None):
  """The authors' Cython soft-NMS (with `weight_exp`: their soft_nms_merge), element by element
  in float32 (their `cdef float`s); only the first five columns move."""
  b = np.array(boxes, np.float32)
  f = np.float32
  n = len(b)
  for i in range(len(b)):  # their range is fixed at the start; rows past N are left alone
    maxpos = i
    for pos in range(i + 1, n):
      if b[maxpos, 4] < b[pos, 4]:
        maxpos = pos
    top = b[maxpos, :5].copy()
    b[maxpos, :5] = b[i, :5]
    b[i, :5] = top
    tx1, ty1, tx2, ty2 = b[i, :4]
    if weight_exp is not None:
      mx1, my1, mx2, my2 = tx1 * b[i, 5], ty1 * b[i, 5], tx2 * b[i, 6], ty2 * b[i, 6]
      mts, mbs = b[i, 5], b[i, 6]
    pos = i + 1
    while pos < n:
      x1, y1, x2, y2 = b[pos, :4]
      area = (x2 - x1 + f(1)) * (y2 - y1 + f(1))
      iw = min(tx2, x2) - max(tx1, x1) + f(1)
      if iw > 0:
        ih = min(ty2, y2) - max(ty1, y1) + f(1)
        if ih > 0:
          ua = f((tx2 - tx1 + f(1)) * (ty2 - ty1 + f(1)) + area - iw * ih)
          ov = f(iw * ih / ua)
          if method == 'linear_soft_nms':
            weight = f(1) - ov if ov > f(nt) else f(1)
          elif method == 'exp_soft_nms':
            weight = f(np.exp(float(-(ov * ov) / f(sigma))))
          else:
            weight = f(0) if ov > f(nt) else f(1)
          if weight_exp is not None:
            mw = f((f(1) - weight) ** f(weight_exp))
            mx1 = f(mx1 + b[pos, 0] * b[pos, 5] * mw)
            my1 = f(my1 + b[pos, 1] * b[pos, 5] * mw)
            mx2 = f(mx2 + b[pos, 2] * b[pos, 6] * mw)
            my2 = f(my2 + b[pos, 3] * b[pos, 6] * mw)
            mts = f(mts + b[pos, 5] * mw)
            mbs = f(mbs + b[pos, 6] * mw)
          b[pos, 4] = f(weight * b[pos, 4])
          if b[pos, 4] < f(threshold):
            b[pos, :5] = b[n - 1, :5]
            n -= 1
            pos -= 1
      pos += 1
    if weight_exp is not None:
      b[i, :4] = mx1 / mts, my1 / mts, mx2 / mbs, my2 / mbs
  return b


def overlapping_boxes(rng, n):
  """Boxes in a few clusters, so that many overlap (and some fall below the threshold)."""
  centres = rng.uniform(20, 80, (3, 2))[rng.integers(0, 3, n)] + rng.normal(0, 4, (n, 2))
  half = rng.uniform(5, 15, (n, 2))
  boxes = np.concatenate([centres - half, centres + half], 1)
  scores = rng.choice([0.9, 0.5, 0.05, 0.002], n) * rng.uniform(0.5, 1, n)
  scores[:3] = scores[3]  # equal scores: the first is taken
  return np.concatenate([boxes, scores[:, None]], 1).astype(np.float32)


@pytest.mark.parametrize('method', kt.NMS_METHODS)
@pytest.mark.parametrize('weight_exp', [None, 10.0])
def test_soft_nms_equals_the_authors_loop(method, weight_exp):
  rng = np.random.default_rng(3)
  for trial in range(6):
    boxes = overlapping_boxes(rng, 25)
    if weight_exp:  # the corner scores the merge weighs the boxes by
      boxes = np.concatenate([boxes, rng.uniform(0.1, 1, (25, 2)).astype(np.float32)], 1)
    want = loop_soft_nms(boxes, method, nt=0.3, threshold=0.05, weight_exp=weight_exp)
    got = kt.soft_nms(boxes, method, iou_threshold=0.3, threshold=0.05, weight_exp=weight_exp)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=0)
  if not weight_exp:  # ghost rows: discarded boxes' copies (merging moves the selected ones)
    assert len(np.unique(got, axis=0)) < len(got)


def test_soft_nms_by_hand():
  a, b, c = [0, 0, 9, 9], [5, 0, 14, 9], [20, 20, 29, 29]
  # IoU of a and b with inclusive pixels: 5 x 10 / (100 + 100 - 50) = 1/3.
  two = np.array([a + [0.8], b + [0.9]], np.float32)
  got = kt.soft_nms(two, 'exp_soft_nms')
  np.testing.assert_allclose(got, [b + [0.9], a + [0.8 * np.exp(-(1 / 9) / 0.5)]], rtol=1e-6)
  got = kt.soft_nms(two, 'linear_soft_nms', iou_threshold=0.3)
  np.testing.assert_allclose(got, [b + [0.9], a + [0.8 * 2 / 3]], rtol=1e-6)
  assert kt.soft_nms(two, 'linear_soft_nms', iou_threshold=0.5)[1, 4] == np.float32(0.8)
  # nms: a duplicate of the best is dropped; the last active box (c) is copied over it and is
  # also left where it was: the authors' test reads all three rows.
  three = np.array([a + [0.9], a + [0.8], c + [0.7]], np.float32)
  got = kt.soft_nms(three, 'nms')
  np.testing.assert_array_equal(got, np.array([a + [0.9], c + [0.7], c + [0.7]], np.float32))
  with pytest.raises(ValueError, match='soft_nms: method expected one of'):
    kt.soft_nms(three, 'greedy')


def test_final_detections_keep_ties_at_the_hundredth():
  """Per class soft-NMS after the centre check, then every row scoring at least the
  `max_per_image`-th best (ties kept), class by class, with the class appended."""
  def pair(x, score, cls):  # a 10 x 10 box at x with its centre in the middle
    return [x, 0, x + 10, 10, score, score, score, cls]
  dets = np.array([pair(0, 0.9, 0), pair(100, 0.6, 0), pair(200, 0.6, 1), pair(300, 0.3, 1),
                   pair(400, 0.6, 2), [0, 0, 5, 5, -1, 0, 0, 2]], np.float32)
  centres = np.array([[x + 5, 5, c, 0.9] for x, c in ((0, 0), (100, 0), (200, 1), (300, 1),
                                                       (400, 2))], np.float32)
  got = kt.final_detections(dets, centres, 3, max_per_image=2)
  score = lambda s: (2 * s + 0.9) / 3
  np.testing.assert_allclose(got[:, 4], [score(0.9), score(0.6), score(0.6), score(0.6)],
                             rtol=1e-6)
  np.testing.assert_array_equal(got[:, 5], [0, 0, 1, 2])
  np.testing.assert_array_equal(got[:, 0], [0, 100, 200, 400])
  assert len(kt.final_detections(dets, centres, 3, max_per_image=5)) == 5


# --- Data ---------------------------------------------------------------------------------


def test_border_and_paste_by_hand():
  assert kt._border(128, 300) == 128 and kt._border(128, 192) == 64
  assert kt._border(128, 100) == 32
  image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) + 1
  # A 5 x 5 window centred at (3, 2): columns 1..4 (half-sides floored), rows 0..3; the last
  # row and column of the window stay black.
  out, dx, dy = kt._paste_centred(image, 3, 2, (5, 5))
  assert (dx, dy) == (-1, 0)
  np.testing.assert_array_equal(out[:4, :4], image[0:4, 1:5])
  assert not out[4].any() and not out[:, 4].any()


def coordinate_image(h, w):
  """RGB: x + 1, y + 1, 200, so that every pixel names where it came from (0: black)."""
  y, x = np.mgrid[:h, :w]
  return np.stack([x + 1, y + 1, np.full_like(x, 200)], -1).astype(np.uint8)


@pytest.mark.parametrize('seed', range(4))
def test_train_sample_crops_pastes_and_mirrors(seed):
  """At scale 1 (no resizing) every pixel of the sample is the image's pixel at the sample's
  offset (or black), the crop centre lies `_border` from the sides, the boxes move with the
  image, are clipped to [0, size - 1], the empty ones dropped, and mirrored as x -> size - 1 - x
  with the image."""
  rng = np.random.default_rng(seed)
  h, w, size = 90, 120, 64
  boxes = np.array([[10, 10, 40, 50], [60, 5, 110, 85], [0, 0, 2, 2]], np.float32)
  sample = {'image': coordinate_image(h, w), 'boxes': boxes, 'labels': np.array([0, 1, 2]),
            'image_id': 7}
  out = kt.train_sample(sample, rng, input_size=size, scales=(1.0,), border=40, flip=True,
                        color=True, max_boxes=4)
  image = out['image']
  assert image.shape == (size, size, 3) and image.dtype == np.uint8
  row = np.flatnonzero((image[..., 2] == 200).any(1))[0]
  reds = image[row, image[row, :, 2] == 200, 0].astype(int)  # x + 1 along a row of the image
  flipped = reds[0] > reds[-1]
  view = image[:, ::-1] if flipped else image
  ys, xs = np.nonzero(view[..., 2] == 200)
  dx = int(view[ys[0], xs[0], 0]) - 1 - xs[0]  # image x = sample x + dx
  dy = int(view[ys[0], xs[0], 1]) - 1 - ys[0]
  np.testing.assert_array_equal(view[ys, xs, 0], xs + dx + 1)
  np.testing.assert_array_equal(view[ys, xs, 1], ys + dy + 1)
  assert len(ys) == np.sum((np.arange(size) + dy >= 0) & (np.arange(size) + dy < h)) * np.sum(
      (np.arange(size) + dx >= 0) & (np.arange(size) + dx < w))  # all of the overlap, no more
  cx, cy = dx + size // 2, dy + size // 2  # the crop centre in the image
  assert kt._border(40, w) <= cx < w - kt._border(40, w)
  assert kt._border(40, h) <= cy < h - kt._border(40, h)
  want = np.clip(boxes - [dx, dy, dx, dy], 0, size - 1)
  keep = (want[:, 2] > want[:, 0]) & (want[:, 3] > want[:, 1])
  want, labels = want[keep], np.array([0, 1, 2])[keep]
  if flipped:
    want = np.stack([size - 1 - want[:, 2], want[:, 1], size - 1 - want[:, 0], want[:, 3]], 1)
  n = len(want)
  np.testing.assert_allclose(out['boxes'][:n], want, atol=1e-4)
  np.testing.assert_array_equal(out['box_valid'], np.arange(4) < n)
  np.testing.assert_array_equal(out['labels'][:n], labels)
  noise = out['color_noise']
  assert sorted(noise[:3]) == [0, 1, 2] and np.all(np.abs(noise[3:6] - 1) <= 0.4)
  assert noise[6] == 1 and out['lighting'].shape == (3,)


def test_train_sample_resizes_the_window():
  """At scale 2 the window is twice the input: the image shrinks by half, the boxes too."""
  sample = {'image': np.full((200, 200, 3), 100, np.uint8),
            'boxes': np.array([[80, 80, 120, 140]], np.float32), 'labels': np.array([1]),
            'image_id': 1}
  out = kt.train_sample(sample, np.random.default_rng(0), input_size=100, scales=(2.0,),
                        border=100, flip=False, color=False, max_boxes=2)
  # Border 100 halves to 50 on 200 pixels; a 200-pixel window around a centre in [50, 150).
  box = out['boxes'][0]
  assert box[2] - box[0] == pytest.approx(20) and box[3] - box[1] == pytest.approx(30)
  assert not out['color_noise'].any() and not out['lighting'].any()


def test_eval_sample_centres_the_image_on_its_canvas():
  assert kt.eval_canvas_hw(5, 6) == (127, 127) and kt.eval_canvas_hw(130, 200) == (255, 255)
  assert kt.eval_canvas_hw(127, 128) == (127, 255)
  image = coordinate_image(5, 6)
  out = kt.eval_sample({'image': image, 'image_id': 3})
  # Centre (3, 2) at (63, 63): the image's (0, 0) lands at (60, 61).
  np.testing.assert_array_equal(out['offset_xy'], [60, 61])
  np.testing.assert_array_equal(out['image_hw'], [5, 6])
  assert out['scale'] == 1
  half = kt.eval_sample({'image': coordinate_image(100, 60), 'image_id': 3, 'test_scale': 0.5})
  np.testing.assert_array_equal(half['image_hw'], [50, 30])  # int(side x scale), resized
  assert half['image'].shape == (127, 127, 3) and half['scale'] == 0.5
  np.testing.assert_array_equal(half['offset_xy'], [63 - 15, 63 - 25])
  np.testing.assert_array_equal(half['image'][38:88, 48:78],
                                cv2.resize(coordinate_image(100, 60), (30, 50)))
  np.testing.assert_array_equal(out['image'][61:66, 60:66], image)
  assert out['image'].sum() == image.sum()


def numpy_color_noise(bgr, order, factors, alpha):
  """The authors' colour jitter and lighting on a BGR image in [0, 1] (their utils/image.py
  order of operations): grey and its mean first, then the three in `order` (0 brightness,
  1 contrast, 2 saturation), then the lighting noise."""
  image = bgr.astype(np.float32).copy()
  grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
  mean = grey.mean()
  for which in order:
    a = factors[which]
    if which == 0:
      image *= a
    elif which == 1:
      image = image * a + mean * (1 - a)
    else:
      image = image * a + grey[:, :, None] * (1 - a)
  return image + kt.LIGHTING_EIGVEC @ (kt.LIGHTING_EIGVAL * alpha)


def test_color_noise_equals_the_authors_order_in_numpy():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (3, 8, 10, 3)).astype(np.uint8)
  orders = [(2, 0, 1), (1, 2, 0), (0, 1, 2)]
  factors = rng.uniform(0.6, 1.4, (3, 3)).astype(np.float32)
  alphas = rng.normal(0, 0.1, (3, 3)).astype(np.float32)
  noise = np.concatenate([np.array(orders, np.float32), factors, [[1], [1], [0]]], 1)
  got = np.asarray(jax.jit(kt.color_noise)(jnp.asarray(images), jnp.asarray(noise),
                                          jnp.asarray(alphas)))
  for i in range(2):
    want = numpy_color_noise(images[i, ..., ::-1] / 255.0, orders[i], factors[i], alphas[i])
    np.testing.assert_allclose(got[i] / 255, want[..., ::-1], rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(got[2], images[2])  # flag 0: untouched


def test_rescale_triplets_by_hand():
  """Maps at a quarter of a 256-wide canvas; the image (100 x 80 pixels) at (60, 61) on it.
  The first three pairs are of the image, the last three of its mirror (x -> 64 - x)."""
  dets = np.array([[20, 20, 30, 30, 0.8, 0.7, 0.9, 1],
                   [14, 20, 30, 30, 0.6, 0.5, 0.7, 0],  # x1 = -4: within 5 pixels, clipped
                   [20, 20, 42, 30, 0.7, 0.6, 0.8, 2],  # x2 = 108: beyond 105, no score
                   [30, 20, 40, 30, 0.5, 0.5, 0.5, 2],  # mirrored: x 24..34
                   [30, 10, 40, 30, 0.4, 0.4, 0.4, 1],  # y1 = -21: no score
                   [62, 20, 63, 30, 0.3, 0.3, 0.3, 0]],  # mirrored x 1..2: far left
                  np.float32)
  centres = np.array([[25, 30, 1, 0.9], [50, 5, 0, 0.2],
                      [40, 30, 2, 0.8], [0, 0, 1, 0.1]], np.float32)
  got_d, got_c = jax.jit(kt.rescale_triplets, static_argnums=(2, 3))(
      dets, centres, 64, (0.25, 0.25), jnp.array([60.0, 61.0]), jnp.array([80, 100]))
  # x: 4 v - 60, y: 4 v - 61, then clipped to the image.
  np.testing.assert_allclose(np.asarray(got_d)[:, :5], [[20, 19, 60, 59, 0.8],
                                                        [0, 19, 60, 59, 0.6],
                                                        [20, 19, 100, 59, -1],
                                                        [36, 19, 76, 59, 0.5],
                                                        [36, 0, 76, 59, -1],
                                                        [0, 19, 0, 59, -1]], atol=1e-5)
  np.testing.assert_array_equal(np.asarray(got_d)[:, 5:], dets[:, 5:])
  np.testing.assert_allclose(np.asarray(got_c), [[40, 59, 1, 0.9], [100, 0, 0, 0.2],
                                                 [36, 59, 2, 0.8], [100, 0, 1, 0.1]], atol=1e-5)


# --- The whole test protocol on outputs that are the ground truth ---------------------------


def perfect_outputs(boxes, labels, num_classes, canvas_hw):
  """The two model outputs (the canvas and its mirror) a perfect network would give for
  `boxes` (canvas pixels): logit 10 at each object's corner and centre cells of its class
  (-10 elsewhere), the offsets flooring drops, embedding 2 j + 5 for object j (0 elsewhere). In
  the mirror the top-left corner is the top-right one's image, x -> map_w - x (the authors'
  inverse of their flip)."""
  H, W = canvas_hw
  h, w = (H + 1) // 4, (W + 1) // 4
  rx, ry = w / W, h / H
  out = {f'{k}_heat': np.full((2, h, w, num_classes), -10.0, np.float32)
         for k in ('tl', 'br', 'ct')}
  out.update({f'{k}_regr': np.zeros((2, h, w, 2), np.float32) for k in ('tl', 'br', 'ct')})
  out.update({f'{k}_tag': np.zeros((2, h, w, 1), np.float32) for k in ('tl', 'br')})
  for j, ((x1, y1, x2, y2), c) in enumerate(zip(boxes, labels)):
    points = {'tl': (x1 * rx, x2 * rx, y1 * ry), 'br': (x2 * rx, x1 * rx, y2 * ry),
              'ct': ((x1 + x2) / 2 * rx, (x1 + x2) / 2 * rx, (y1 + y2) / 2 * ry)}
    for k, (x, x_other, y) in points.items():
      for m, px in enumerate((x, w - x_other)):  # the canvas; the mirror
        cx, cy = int(np.floor(px)), int(np.floor(y))
        assert 0 <= cx < w and 0 <= cy < h and out[f'{k}_heat'][m, cy, cx].max() < 0
        out[f'{k}_heat'][m, cy, cx, c] = 10.0
        out[f'{k}_regr'][m, cy, cx] = (px - cx, y - cy)
        if k != 'ct':
          out[f'{k}_tag'][m, cy, cx] = 2 * j + 5
  return out


@pytest.mark.parametrize('variant', ['runlocal', 'runlocal,multi_scale'])
def test_perfect_outputs_come_back_as_the_ground_truth(det_demo_root, variant):
  """The eval step's decode and rescale, then the centre check, soft-NMS and the 100 best, on
  outputs that hold the ground truth on each val image's canvas: every object comes back as
  a box within 0.01 pixel of its own, of its class, found twice (canvas and mirror: the copy
  scored at least exp(-1 / 0.5) lower by the soft-NMS); the metric scores AP 1.0. Multi-scale:
  each image at five scales (items fed in reverse), merged back to its boxes, AP 1.0."""
  from conftest import recipe
  from hrnet_jax.tasks import get_task
  task = get_task(recipe('det_coco_centernet', det_demo_root, variant))
  src = task.source('val')
  scales = getattr(src, 'scales', (1.0,))
  metric = task.new_metric(src)
  step = jax.jit(lambda out, images, batch: task.eval_outputs(lambda x: out, images, batch))
  for j in reversed(range(len(src))):
    s = src[j]
    e = task.eval_transform()(s)
    boxes = s['boxes'] * e['scale'] + np.tile(e['offset_xy'], 2)
    out = perfect_outputs(boxes, s['labels'], len(task.class_names), e['image'].shape[:2])
    batch = {k: jnp.asarray(e[k])[None] for k in ('offset_xy', 'image_hw', 'scale', 'image_id')}
    got = jax.device_get(step(out, jnp.asarray(e['image'])[None], batch))
    pairs = got['pairs'][0]
    for box in s['boxes']:  # at every scale, back in the image's pixels (the clip to the
      # resized image's int(side x scale), then / scale, moves a side by up to 1 / scale)
      assert (np.abs(pairs[pairs[:, 4] > 0.99, :4] - box).max(1) <= 1 / e['scale']).sum() == 2
    if len(scales) == 1:
      dets = task.final(got['pairs'][0], got['centres'][0])
      for box, c in zip(s['boxes'], s['labels']):
        twins = dets[np.abs(dets[:, :4] - box).max(1) < 0.01]
        assert len(twins) == 2 and np.all(twins[:, 5] == c)
        first, copy = sorted(twins[:, 4], reverse=True)
        assert first > 0.9 and copy <= first * np.exp(-2) * (1 + 1e-3)
    got.update(valid=np.ones(1, np.int32), index=np.asarray([j]))
    metric.update(got)
  r = metric.result()
  assert r['AP'] == pytest.approx(1.0) and r['num_images'] == len(src) // len(scales)


def test_multi_scale_metric_finishes_each_image_once_all_its_scales_came():
  """Items j = image x 3 + scale arrive in any order; each image is finished once, from its
  scored pairs of every scale in scale order and the centres of scale 1 (index 1 here)."""
  calls = []
  finish = lambda pairs, centres: calls.append((pairs, centres)) or np.zeros((0, 6))
  metric = kt.CenterNetMetric(finish, [1, 2], None, 'val', num_scales=3, centre_scale=1)
  def item(j):
    pairs = np.full((4, 8), j, np.float32)
    pairs[j % 2, 4] = -1  # no box: left out
    return {'pairs': pairs[None], 'centres': np.full((1, 2, 4), 10 * j, np.float32),
            'image_id': np.asarray([100 + j // 3]), 'index': np.asarray([j]),
            'valid': np.ones(1, np.int32)}
  for j in (5, 0, 3, 1, 4):
    metric.update(item(j))
  assert len(calls) == 1  # image 1 (items 3, 4, 5)
  with pytest.raises(RuntimeError, match='1 image'):
    metric.result()
  metric.update(item(2))
  pairs, centres = calls[1]  # image 0
  np.testing.assert_array_equal(pairs[:, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2])
  assert np.all(centres == 10) and np.all(calls[0][1] == 40)
  assert metric.result()['num_images'] == 2 and metric.image_ids == {1: 101, 0: 100}
