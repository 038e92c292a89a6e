"""hrnet_jax.ops against torchvision, hand-worked cases and independent numpy code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax import ops

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')


def random_boxes(rng, n, lo=-20.0, hi=60.0, largest=80.0):
  xy = rng.uniform(lo, hi, (n, 2))
  return np.concatenate([xy, xy + rng.uniform(0.1, largest, (n, 2))], 1).astype(np.float32)


# Boxes partly or wholly outside the 13x17 map (at scale 1/4), tiny, empty, inverted and huge.
EDGE_BOXES = [[-5, -5, -1, -1], [0, 0, 68, 52], [10, 10, 10, 10], [30, 20, 25, 15],
              [0, 0, 200, 3], [-40, -40, 300, 300], [66, 50, 67, 51], [1, 1, 1.5, 1.2]]


@pytest.fixture(scope='module')
def roi_case():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 13, 17, 3)).astype(np.float32)
  boxes = np.concatenate([random_boxes(rng, 40), np.asarray(EDGE_BOXES, np.float32)])
  batch = (np.arange(len(boxes)) % 2).astype(np.float32)
  return features, np.concatenate([batch[:, None], boxes], 1)


def torch_roi_align(features, rois, size, scale, ratio, aligned):
  x = torch.tensor(features.transpose(0, 3, 1, 2))
  out = torchvision.ops.roi_align(x, torch.tensor(rois), size, scale, ratio, aligned)
  return out.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize('aligned', [True, False])
@pytest.mark.parametrize('ratio', [0, 2])
def test_roi_align_equals_torchvision(roi_case, aligned, ratio):
  features, rois = roi_case
  want = torch_roi_align(features, rois, (7, 5), 0.25, ratio, aligned)
  got = ops.roi_align(jnp.asarray(features), jnp.asarray(rois), (7, 5), 0.25, ratio, aligned)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_roi_align_gradient_equals_torchvision(roi_case):
  features, rois = roi_case
  cotangent = np.random.default_rng(1).normal(size=(len(rois), 7, 7, 3)).astype(np.float32)
  x = torch.tensor(features.transpose(0, 3, 1, 2), requires_grad=True)
  out = torchvision.ops.roi_align(x, torch.tensor(rois), 7, 0.25, 0, True)
  (out * torch.tensor(cotangent.transpose(0, 3, 1, 2))).sum().backward()
  loss = lambda f: jnp.sum(ops.roi_align(f, jnp.asarray(rois), 7, 0.25, 0, True) * cotangent)
  got = jax.jit(jax.grad(loss))(jnp.asarray(features))
  np.testing.assert_allclose(np.asarray(got), x.grad.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def per_image(rois):
  """(K, 5) rows alternating between images 0 and 1 -> (2, K / 2, 4) and the row order of the
  separable op's (image-major) output."""
  order = np.argsort(rois[:, 0], kind='stable')
  return rois[order, 1:].reshape(2, -1, 4), order


@pytest.mark.parametrize('aligned,ratio,pool', [(True, 0, 1), (False, 2, 1), (True, 0, 2),
                                                (False, 0, 2)])
def test_separable_roi_align_equals_torchvision(roi_case, aligned, ratio, pool):
  """The same numbers as the sampling loop, edge boxes included; `pool` = the mean of pool x pool
  blocks of torchvision's bins (HTC's 14x14 semantic RoIs averaged to 7x7)."""
  features, rois = roi_case
  boxes, order = per_image(rois)
  want = torch_roi_align(features, rois, (14, 10), 0.25, ratio, aligned)[order]
  want = want.reshape(len(rois), 14 // pool, pool, 10 // pool, pool, 3).mean((2, 4))
  got = ops.separable_roi_align(jnp.asarray(features), jnp.asarray(boxes), (14, 10), 0.25, ratio,
                                aligned, pool=pool)
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)


def test_separable_roi_align_gradient_and_legacy_kernel(roi_case):
  features, rois = roi_case
  boxes, order = per_image(rois)
  cotangent = np.random.default_rng(5).normal(size=(len(rois), 7, 7, 3)).astype(np.float32)
  x = torch.tensor(features.transpose(0, 3, 1, 2), requires_grad=True)
  out = torchvision.ops.roi_align(x, torch.tensor(rois[order]), 7, 0.25, 0, True)
  (out * torch.tensor(cotangent.transpose(0, 3, 1, 2))).sum().backward()
  loss = lambda f: jnp.sum(ops.separable_roi_align(f, jnp.asarray(boxes), 7, 0.25, 0, True)
                           * cotangent)
  got = jax.jit(jax.grad(loss))(jnp.asarray(features))
  np.testing.assert_allclose(np.asarray(got), x.grad.numpy().transpose(0, 2, 3, 1), atol=1e-5)
  legacy = ops.separable_roi_align(jnp.asarray(features), jnp.asarray(boxes), 7, 0.25, 2,
                                   legacy=True)
  np.testing.assert_allclose(np.asarray(legacy),
                             numpy_legacy_roi_align(features, rois[order], 7, 0.25), atol=1e-5)
  with pytest.raises(ValueError, match='multiple of pool 2'):
    ops.separable_roi_align(jnp.asarray(features), jnp.asarray(boxes), 7, 0.25, pool=2)


def test_multilevel_roi_align_pools_each_box_from_its_level():
  """Level = floor(log2(sqrt(wh) / 56 + 1e-6)) clamped to [0, 3] (by hand: sides 50 -> 0,
  112 -> 1, 300 -> 2, 500 and 900 -> 3, 20 x 360 -> 0), each box pooled by torchvision at 1 / its
  stride. (No sample may fall exactly on the map's far edge: torchvision's compiled kernel
  rounds there with fused multiply-adds, so 900 x 900 at (1, 2) was taken to 900 x 905.)"""
  boxes = np.asarray([[3, 5, 53, 55], [0, 0, 112, 112], [10, 20, 310, 320], [0, 0, 500, 500],
                      [1, 2, 901, 907], [100, 40, 120, 400]], np.float32)
  np.testing.assert_array_equal(ops.roi_levels(jnp.asarray(boxes), 4), [0, 1, 2, 3, 3, 0])
  rng = np.random.default_rng(2)
  strides = (4, 8, 16, 32)
  levels = [rng.normal(size=(2, 256 // s, 320 // s, 5)).astype(np.float32) for s in strides]
  levels.append(rng.normal(size=(2, 4, 5, 5)).astype(np.float32))  # stride 64: not pooled
  batch = np.asarray([0, 1, 1, 0, 1, 0])
  got = ops.multilevel_roi_align([jnp.asarray(m) for m in levels], jnp.asarray(boxes),
                                 jnp.asarray(batch), strides, 7)
  for i, (box, level) in enumerate(zip(boxes, [0, 1, 2, 3, 3, 0])):
    rois = np.concatenate([[batch[i]], box])[None].astype(np.float32)
    want = torch_roi_align(levels[level], rois, 7, 1 / strides[level], 0, True)[0]
    np.testing.assert_allclose(np.asarray(got[i]), want, atol=1e-5)


def test_class_wise_nms_equals_torchvision_batched_nms():
  rng = np.random.default_rng(3)
  boxes = np.round(random_boxes(rng, 300, 0, 100, 40))  # rounded: exact ties of IoU occur
  scores = rng.permutation(300).astype(np.float32)  # distinct: one order
  labels = rng.integers(0, 4, 300)
  keep = torchvision.ops.batched_nms(torch.tensor(boxes), torch.tensor(scores),
                                     torch.tensor(labels), 0.5).numpy()
  order = np.argsort(-scores)
  mask = ops.class_wise_nms(jnp.asarray(boxes[order]), jnp.asarray(labels[order]),
                            jnp.ones(300, bool), 0.5)
  np.testing.assert_array_equal(order[np.asarray(mask)], keep)


def test_multiclass_nms_follows_mmdetection():
  """Class-specific boxes (N, K, 4): candidates above the score threshold, batched NMS, the best
  `max_per_img`; against torchvision over the candidates."""
  rng = np.random.default_rng(4)
  n, k = 60, 3
  boxes = random_boxes(rng, n * k, 0, 80, 50).reshape(n, k, 4)
  scores = rng.uniform(0, 1, (n, k)).astype(np.float32)
  got = ops.multiclass_nms(jnp.asarray(boxes), jnp.asarray(scores), jnp.asarray(scores > 0.3),
                           0.5, max_per_img=20)
  rows, cols = np.nonzero(scores > 0.3)
  keep = torchvision.ops.batched_nms(torch.tensor(boxes[rows, cols]),
                                     torch.tensor(scores[rows, cols]), torch.tensor(cols),
                                     0.5).numpy()[:20]
  assert bool(got['exact']) and int(np.sum(got['valid'])) == len(keep) == 20
  np.testing.assert_array_equal(np.asarray(got['labels']), cols[keep])
  np.testing.assert_allclose(np.asarray(got['scores']), scores[rows, cols][keep])
  np.testing.assert_allclose(np.asarray(got['boxes']), boxes[rows, cols][keep])


def test_anchors_by_hand():
  """Stride 4, scale 8, ratios 0.5/1/2: sides 32 / sqrt(r) by 32 sqrt(r) centred at the origin;
  a level's anchors in (y, x, anchor) order shifted by stride x (x, y)."""
  s2 = 16 * math.sqrt(2)
  want = [[-s2, -s2 / 2, s2, s2 / 2], [-16, -16, 16, 16], [-s2 / 2, -s2, s2 / 2, s2]]
  np.testing.assert_allclose(ops.base_anchors(4), want, rtol=1e-6)
  grid = ops.anchor_grid([(3, 4), (2, 2)], [4, 8])
  assert grid.shape == (3 * 4 * 3 + 2 * 2 * 3, 4)
  np.testing.assert_allclose(grid[(1 * 4 + 2) * 3 + 1], [8 - 16, 4 - 16, 8 + 16, 4 + 16])
  np.testing.assert_allclose(grid[36 + (1 * 2 + 0) * 3 + 2],
                             np.asarray(want[2]) * 2 + [0, 8, 0, 8], rtol=1e-6)
  # mmdetection v1: centre (4 - 1) / 2, corners centre -+ (side - 1) / 2, rounded (half to even).
  np.testing.assert_array_equal(ops.base_anchors(4, legacy=True)[1], [-14, -14, 17, 17])
  np.testing.assert_array_equal(ops.base_anchors(4, legacy=True)[0],
                                np.round([1.5 - (45.254834 - 1) / 2, 1.5 - (22.627417 - 1) / 2,
                                          1.5 + (45.254834 - 1) / 2, 1.5 + (22.627417 - 1) / 2]))
  valid = np.asarray(ops.valid_anchors([(3, 4)], [4], 3, np.asarray([9, 5])))
  np.testing.assert_array_equal(valid.reshape(3, 4, 3)[..., 0], [[1, 1, 0, 0]] * 3)


def test_delta_coder_by_hand():
  box, target = jnp.asarray([[0., 0., 10., 20.]]), jnp.asarray([[5., 5., 15., 25.]])
  deltas = ops.encode_deltas(box, target, stds=(.1, .1, .2, .2))
  np.testing.assert_allclose(np.asarray(deltas), [[5.0, 2.5, 0.0, 0.0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(ops.decode_deltas(box, deltas, stds=(.1, .1, .2, .2))),
                             np.asarray(target), atol=1e-5)
  # log-size changes clamp at |log(16 / 1000)|: 10 x 1000 / 16 = 625 wide at most.
  wide = ops.decode_deltas(box, jnp.asarray([[0., 0., 9., -9.]]))
  np.testing.assert_allclose(np.asarray(wide), [[5 - 312.5, 10 - 0.16, 5 + 312.5, 10 + 0.16]],
                             rtol=1e-5)
  clipped = ops.decode_deltas(box, jnp.asarray([[0., 0., 9., 0.]]), max_hw=jnp.asarray([15, 40]))
  np.testing.assert_allclose(np.asarray(clipped), [[0, 0, 40, 15]])


def numpy_max_iou_assign(iou, pos, neg, min_pos):
  """mmdetection's assign_wrt_overlaps, written out: iou (M gt, N boxes)."""
  assigned = np.full(iou.shape[1], -1)
  best, best_gt = iou.max(0), iou.argmax(0)
  assigned[(best >= 0) & (best < neg)] = 0
  assigned[best >= pos] = best_gt[best >= pos] + 1
  for i in range(iou.shape[0]):
    if iou[i].max() >= min_pos:
      assigned[iou[i] == iou[i].max()] = i + 1
  return assigned


def test_max_iou_assigner_by_hand_and_against_numpy():
  gt = jnp.asarray([[0., 0., 10., 10.], [20., 0., 30., 10.], [0, 0, 0, 0]])
  boxes = jnp.asarray([[0., 0., 10., 10.],   # IoU 1 with gt 0: positive
                       [0., 0., 10., 20.],   # 0.5 with gt 0: ignored (0.3 <= IoU < 0.7)
                       [50., 50., 60., 60.],  # no overlap: background
                       [20., 0., 30., 40.],  # gt 1's best (0.25, tied): low-quality match
                       [20., 30., 30., 40.],  # background
                       [20., 0., 30., 40.]])  # the tie: also gt 1
  assigned, _ = ops.max_iou_assign(boxes, jnp.ones(6, bool), gt, jnp.asarray([1, 1, 0], bool),
                                   0.7, 0.3, 0.2)
  np.testing.assert_array_equal(np.asarray(assigned), [1, -1, 0, 2, 0, 2])
  rng = np.random.default_rng(5)
  coarse = lambda b: np.concatenate([b[:, :2], np.maximum(b[:, 2:], b[:, :2] + 4)], 1)
  gts = coarse(np.round(random_boxes(rng, 7, 0, 40, 30) / 4) * 4)
  cands = coarse(np.round(random_boxes(rng, 300, 0, 40, 30) / 4) * 4)  # many exact ties
  iou = torchvision.ops.box_iou(torch.tensor(gts), torch.tensor(cands)).numpy()
  got, _ = ops.max_iou_assign(jnp.asarray(cands), jnp.ones(300, bool),
                              jnp.asarray(gts), jnp.ones(7, bool), 0.7, 0.3, 0.3)
  np.testing.assert_array_equal(np.asarray(got), numpy_max_iou_assign(iou, 0.7, 0.3, 0.3))
  none, _ = ops.max_iou_assign(jnp.asarray(cands), jnp.arange(300) < 290,
                               jnp.asarray(gts), jnp.zeros(7, bool), 0.7, 0.3, 0.3)
  np.testing.assert_array_equal(np.asarray(none), [0] * 290 + [-1] * 10)


def test_random_sampler_counts_and_draws_uniformly():
  assigned = jnp.asarray([1] * 30 + [0] * 500 + [-1] * 100)
  idx, kind = ops.random_sample(jax.random.key(0), assigned, 256, 0.5)
  idx, kind = np.asarray(idx), np.asarray(kind)
  assert (kind == 1).sum() == 30 and (kind == 0).sum() == 226 and (kind[:30] == 1).all()
  assert len(set(idx.tolist())) == 256
  assert (np.asarray(assigned)[idx] == kind).all()
  few = jnp.asarray([2] * 200 + [0] * 40 + [-1] * 300)
  idx, kind = map(np.asarray, ops.random_sample(jax.random.key(1), few, 256, 0.5))
  assert (kind == 1).sum() == 128 and (kind == 0).sum() == 40 and (kind == -1).sum() == 88
  # Uniform: over many draws every positive is taken about equally often (128 of 200).
  draws = jax.vmap(lambda k: ops.random_sample(k, few, 256, 0.5)[0])(
      jax.random.split(jax.random.key(2), 400))
  counts = np.bincount(np.asarray(draws)[:, :128].reshape(-1), minlength=200)[:200]
  assert abs(counts.mean() - 256) < 1e-9 and counts.min() > 200 and counts.max() < 310


# --- mmdetection v1's arithmetic (legacy: the HRNet-Object-Detection releases) ---------------


def numpy_legacy_roi_align(features, rois, size, scale, samples=2):
  """mmdetection v1's RoIAlign kernel, one sample at a time: the box spans x1 * scale ..
  (x2 + 1) * scale (no minimum), samples beyond [-1, side] read zero, below 0 read row 0."""
  n, h, w, c = features.shape
  out = np.zeros((len(rois), size, size, c), np.float64)
  for r, (b, x1, y1, x2, y2) in enumerate(rois.astype(np.float64)):
    sx, sy = x1 * scale, y1 * scale
    bw, bh = max((x2 + 1) * scale - sx, 0) / size, max((y2 + 1) * scale - sy, 0) / size
    fmap = features[int(b)].astype(np.float64)
    for ph in range(size):
      for pw in range(size):
        acc = np.zeros(c)
        for iy in range(samples):
          for ix in range(samples):
            y = sy + ph * bh + (iy + 0.5) * bh / samples
            x = sx + pw * bw + (ix + 0.5) * bw / samples
            if y < -1 or y > h or x < -1 or x > w:
              continue
            y, x = max(y, 0.0), max(x, 0.0)
            y0, x0 = int(y), int(x)
            if y0 >= h - 1:
              y0 = y1_ = h - 1
              y = float(y0)
            else:
              y1_ = y0 + 1
            if x0 >= w - 1:
              x0 = x1_ = w - 1
              x = float(x0)
            else:
              x1_ = x0 + 1
            ly, lx = y - y0, x - x0
            acc += ((1 - ly) * (1 - lx) * fmap[y0, x0] + (1 - ly) * lx * fmap[y0, x1_]
                    + ly * (1 - lx) * fmap[y1_, x0] + ly * lx * fmap[y1_, x1_])
        out[r, ph, pw] = acc / samples**2
  return out


def test_legacy_roi_align_equals_the_v1_kernel_written_out(roi_case):
  """Boxes end one pixel further and have no one-pixel minimum (the tiny and inverted edge
  boxes differ from torchvision's unaligned rule there)."""
  features, rois = roi_case
  got = ops.roi_align(jnp.asarray(features), jnp.asarray(rois), 7, 0.25, 2, legacy=True)
  np.testing.assert_allclose(np.asarray(got), numpy_legacy_roi_align(features, rois, 7, 0.25),
                             atol=1e-5, rtol=0)
  unaligned = torch_roi_align(features, rois, 7, 0.25, 2, False)
  assert np.abs(np.asarray(got) - unaligned).max() > 1e-2  # not the same thing


def test_legacy_levels_and_nms_by_hand():
  # A box 0..111 is 112 wide inclusive: level 1 (log2(112 / 56) = 1); without +1 111: level 0.
  box = jnp.asarray([[0., 0., 111., 111.]])
  assert int(ops.roi_levels(box, 4, legacy=True)[0]) == 1
  assert int(ops.roi_levels(box, 4)[0]) == 0
  # Two 10x10 (inclusive 11x11) boxes one pixel apart: intersection 10x11 = 110, union 132.
  a, b = [0., 0., 10., 10.], [1., 0., 11., 10.]
  iou = ops.box_iou(jnp.asarray([a]), jnp.asarray([b]), legacy=True)
  np.testing.assert_allclose(float(iou[0, 0]), 110 / 132, rtol=1e-6)
  np.testing.assert_allclose(float(ops.box_iou(jnp.asarray([a]), jnp.asarray([b]))[0, 0]),
                             90 / 110, rtol=1e-6)
  # At threshold 0.82 the legacy IoU (0.833) suppresses, the v2 one (0.818) does not.
  boxes, valid = jnp.asarray([a, b]), jnp.asarray([True, True])
  assert np.asarray(ops.greedy_nms(boxes, valid, 0.82, legacy=True)).tolist() == [True, False]
  assert np.asarray(ops.greedy_nms(boxes, valid, 0.82)).tolist() == [True, True]
  # Touching boxes of two classes never suppress each other (the class offset leaves a gap).
  keep = ops.class_wise_nms(jnp.asarray([a, a]), jnp.asarray([0, 1]), valid, 0.1, legacy=True)
  assert np.asarray(keep).tolist() == [True, True]


def test_legacy_delta_coder_by_hand():
  """Widths x2 - x1 + 1: box 0..9 x 0..19 is 10 x 20 centred (4.5, 9.5); the target 5..14 x
  5..24 is the same size moved by (5, 5): deltas (0.5, 0.25, 0, 0); decoding back and clipping
  to width - 1."""
  box, target = jnp.asarray([[0., 0., 9., 19.]]), jnp.asarray([[5., 5., 14., 24.]])
  deltas = ops.encode_deltas(box, target, legacy=True)
  np.testing.assert_allclose(np.asarray(deltas), [[0.5, 0.25, 0.0, 0.0]], atol=1e-6)
  np.testing.assert_allclose(np.asarray(ops.decode_deltas(box, deltas, legacy=True)),
                             np.asarray(target), atol=1e-5)
  # Twice the size about the same centre: 20 x 40 inclusive -> corners 4.5 -+ 9.5, 9.5 -+ 19.5.
  double = ops.decode_deltas(box, jnp.asarray([[0., 0., np.log(2), np.log(2)]]), legacy=True)
  np.testing.assert_allclose(np.asarray(double), [[-5., -10., 14., 29.]], atol=1e-5)
  clipped = ops.decode_deltas(box, jnp.asarray([[0., 0., np.log(2), np.log(2)]]),
                              max_hw=jnp.asarray([25, 12]), legacy=True)
  np.testing.assert_allclose(np.asarray(clipped), [[0., 0., 11., 24.]], atol=1e-5)


def test_legacy_anchors_by_hand():
  """v1's anchors at stride 4: centre 1.5, ratio 1: side 32 -> 1.5 -+ 15.5 = (-14, -14, 17,
  17); ratio 0.5: w 45.25, h 22.63 -> round(1.5 -+ 22.13), round(1.5 -+ 10.81)."""
  got = ops.base_anchors(4, legacy=True)
  np.testing.assert_array_equal(got[1], [-14., -14., 17., 17.])
  np.testing.assert_array_equal(got[0], [-21., -9., 24., 12.])


# --- CornerNet / CenterNet directional pools -------------------------------------------------


def torch_directional_pool(x, axis, reverse):
  """torch.cummax along `axis` of an NHWC tensor, on the flipped map when the pool looks
  towards the start (the authors' top and left pools)."""
  if reverse:
    return torch.cummax(x.flip(axis), dim=axis).values.flip(axis)
  return torch.cummax(x, dim=axis).values


@pytest.mark.parametrize('name,axis,reverse', [('top_pool', 1, True), ('bottom_pool', 1, False),
                                               ('left_pool', 2, True), ('right_pool', 2, False)])
def test_directional_pools_equal_torch_cummax_forward_and_backward(name, axis, reverse):
  """Values and gradients (random cotangent; continuous features, so no ties) equal torch's
  cummax on the same maps (flipped for the top and left pools); by hand on a column: a top
  pool gathers from below, a bottom pool from above."""
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 9, 13, 4)).astype(np.float32)
  cotangent = rng.normal(size=x.shape).astype(np.float32)
  pool = getattr(ops, name)
  xt = torch.tensor(x, requires_grad=True)
  want = torch_directional_pool(xt, axis, reverse)
  (want * torch.tensor(cotangent)).sum().backward()
  got, vjp = jax.vjp(jax.jit(pool), jnp.asarray(x))
  np.testing.assert_array_equal(np.asarray(got), want.detach().numpy())
  # A maximum's gradient sums the cotangents of every position it reaches: summation order apart.
  np.testing.assert_allclose(np.asarray(vjp(jnp.asarray(cotangent))[0]), xt.grad.numpy(),
                             rtol=1e-5, atol=1e-6)
  column = jnp.asarray([3.0, 1.0, 4.0, 1.0, 5.0, 0.0]).reshape(1, 6, 1, 1)
  if name == 'top_pool':
    np.testing.assert_array_equal(np.asarray(pool(column)).ravel(), [5, 5, 5, 5, 5, 0])
  if name == 'bottom_pool':
    np.testing.assert_array_equal(np.asarray(pool(column)).ravel(), [3, 3, 4, 4, 5, 5])


def test_centre_pooling_takes_whole_row_and_column_maxima():
  x = np.random.default_rng(4).normal(size=(2, 7, 5, 3)).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(ops.column_max(jnp.asarray(x))),
                                np.broadcast_to(x.max(axis=1, keepdims=True), x.shape))
  np.testing.assert_array_equal(np.asarray(ops.row_max(jnp.asarray(x))),
                                np.broadcast_to(x.max(axis=2, keepdims=True), x.shape))
