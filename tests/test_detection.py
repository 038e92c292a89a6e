"""FCOS detection: sizes and transforms, target assignment, losses, decoding and NMS against
hand-worked cases, numpy and torchvision; COCO box AP through the task's metric; grouped
batching; the recipe's optimizer options."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hrnet_jax.data import pipeline
from hrnet_jax.data.sources.coco_detection import CocoDetection
from hrnet_jax.errors import ConfigError
from hrnet_jax import ops
from hrnet_jax.tasks.detection import fcos
from hrnet_jax.tasks.detection.canvas import canvas_size, pad_boxes, rescale_size, resize_pad
from hrnet_jax.tasks.detection.metric import CocoBoxMetric
from hrnet_jax.train import optim

# --- Sizes and transforms ---------------------------------------------------------------------


def test_rescale_size_follows_the_keep_ratio_rule():
  # factor = min(1333 / long, 800 / short), sides rounded half up; worked by hand.
  assert rescale_size(480, 640, (1333, 800)) == (800, 1067)  # 640 * 5/3 = 1066.67
  assert rescale_size(427, 640, (1333, 800)) == (800, 1199)  # 640 * 800/427 = 1199.06
  assert rescale_size(300, 1000, (1333, 800)) == (400, 1333)  # the long side binds
  assert rescale_size(640, 480, (800, 1333)) == (1067, 800)  # (long, short) in either order
  assert rescale_size(800, 800, (1333, 800)) == (800, 800)


def test_canvas_size():
  buckets = ((800, 1344), (1344, 800))
  assert canvas_size((800, 1067), buckets) == (800, 1344)
  assert canvas_size((1067, 800), buckets) == (1344, 800)
  assert canvas_size((800, 800), buckets) == (800, 1344)  # the first that holds it
  assert canvas_size((800, 1067), buckets, size_divisor=32) == (800, 1088)
  with pytest.raises(ConfigError, match='no bucket holds a 900x900'):
    canvas_size((900, 900), buckets)


def test_resize_pad_scales_flips_and_pads():
  image = np.zeros((50, 100, 3), np.uint8)
  image[:, :50] = 200  # left half bright
  sample = {'image': image, 'boxes': np.array([[10, 5, 30, 25], [90, 40, 120, 60]], np.float32),
            'labels': np.array([2, 0], np.int32), 'image_id': 7}
  pad = np.array([124, 116, 104], np.uint8)
  out = resize_pad(sample, (200, 100), (128, 224), pad)  # factor 2: 100x200
  assert out['image'].shape == (128, 224, 3)
  np.testing.assert_array_equal(out['image'][100:, :], np.broadcast_to(pad, (28, 224, 3)))
  np.testing.assert_array_equal(out['image'][:100, 200:], np.broadcast_to(pad, (100, 24, 3)))
  assert out['image'][50, 10, 0] == 200 and out['image'][50, 190, 0] == 0
  # Scaled by 2, the second box clipped to the 200x100 resized image.
  np.testing.assert_allclose(out['boxes'], [[20, 10, 60, 50], [180, 80, 200, 100]])
  np.testing.assert_array_equal(out['image_hw'], [100, 200])
  np.testing.assert_allclose(out['scale_xy'], [2, 2])
  flipped = resize_pad(sample, (200, 100), (128, 224), pad, flip=True)
  np.testing.assert_allclose(flipped['boxes'], [[140, 10, 180, 50], [0, 80, 20, 100]])
  assert flipped['image'][50, 190, 0] == 200 and flipped['image'][50, 10, 0] == 0
  padded = pad_boxes(out, 4)
  np.testing.assert_array_equal(padded['box_valid'], [True, True, False, False])
  np.testing.assert_array_equal(padded['labels'], [2, 0, -1, -1])
  with pytest.raises(ValueError, match='2 boxes, more than config.data.max_boxes=1'):
    pad_boxes(out, 1)


# --- Targets ----------------------------------------------------------------------------------


def assign(pts, boxes, labels, ranges=((-1, 1e8),), radii=(0.0,), center_sampling=False,
           num_classes=3):
  pts = jnp.asarray(pts, jnp.float32)
  n = len(pts)
  ranges = jnp.broadcast_to(jnp.asarray(ranges, jnp.float32), (n, 2))
  radii = jnp.broadcast_to(jnp.asarray(radii, jnp.float32), (n,))
  boxes = jnp.asarray(boxes, jnp.float32)
  valid = jnp.asarray([True] * len(boxes))
  out = fcos.targets(pts, ranges, radii, boxes, jnp.asarray(labels), valid, num_classes,
                     center_sampling)
  return np.asarray(out[0]), np.asarray(out[1])


def test_points_of_the_pyramid():
  pts = fcos.points([(2, 3), (1, 2)], [8, 16])
  np.testing.assert_array_equal(pts, [[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12],
                                      [8, 8], [24, 8]])
  assert fcos.level_strides(2, 5) == (8, 16, 32, 64, 128)
  assert fcos.level_strides(1, 5) == (4, 8, 16, 32, 64)


def test_targets_inside_smallest_area_and_background():
  big, small = [0, 0, 100, 100], [40, 40, 60, 70]
  pts = [[50, 50], [10, 20], [40, 50], [150, 150]]
  labels, dist = assign(pts, [big, small], [1, 2])
  # (50, 50) is inside both: the smaller box (area 600) wins; (40, 50) lies on the small box's
  # left edge (l = 0, not strictly inside): the big box; (150, 150) is outside: background.
  np.testing.assert_array_equal(labels, [2, 1, 1, 3])
  np.testing.assert_allclose(dist[0], [10, 10, 10, 20])
  np.testing.assert_allclose(dist[1], [10, 20, 90, 80])
  np.testing.assert_allclose(dist[2], [40, 50, 60, 50])


def test_targets_regress_ranges_and_padding():
  pts = [[50, 50], [50, 50]]
  box = [[0, 0, 100, 100]]  # max distance 50 from the centre
  labels, _ = assign(pts, box, [0], ranges=[[-1, 49], [50, 64]])
  np.testing.assert_array_equal(labels, [3, 0])  # 50 is outside [-1, 49], inside [50, 64]
  # A padded (invalid) box is never assigned.
  out = fcos.targets(jnp.asarray([[50.0, 50.0]]), jnp.asarray([[-1.0, 1e8]]), jnp.zeros(1),
                     jnp.asarray(box, jnp.float32), jnp.asarray([0]), jnp.asarray([False]), 3)
  assert int(out[0][0]) == 3


def test_targets_center_sampling():
  box = [[0, 0, 100, 40]]  # centre (50, 20); radius 1.5 x stride 8 = 12
  pts = [[55, 25], [70, 20], [50, 35]]
  labels, dist = assign(pts, box, [1], radii=(12.0,), center_sampling=True)
  # (70, 20): 20 from the centre in x, outside the 12-pixel region; (50, 35): the region is
  # cut to the box (y up to min(32, 40) = 32), so 35 is outside it.
  np.testing.assert_array_equal(labels, [1, 3, 3])
  np.testing.assert_allclose(dist[0], [55, 25, 45, 15])  # distances to the box, not the region
  plain, _ = assign(pts, box, [1])
  np.testing.assert_array_equal(plain, [1, 1, 1])


# --- Losses -----------------------------------------------------------------------------------


def test_focal_loss_matches_the_formula():
  x = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
  t = np.array([0.0, 1.0, 0.0, 1.0, 0.0])
  p = 1 / (1 + np.exp(-x))
  want = np.where(t == 1, -0.25 * (1 - p)**2 * np.log(p), -0.75 * p**2 * np.log(1 - p))
  got = fcos.sigmoid_focal_loss(jnp.asarray(x), jnp.asarray(t))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_iou_and_giou_by_hand():
  a = jnp.asarray([[0.0, 0.0, 10.0, 10.0]])
  b = jnp.asarray([[5.0, 0.0, 15.0, 20.0]])
  # overlap 5 x 10 = 50; union 100 + 200 - 50 = 250; enclosure 15 x 20 = 300.
  np.testing.assert_allclose(ops.aligned_iou(a, b), [0.2], rtol=1e-6)
  np.testing.assert_allclose(ops.aligned_iou(a, b, giou=True), [0.2 - 50 / 300], rtol=1e-6)
  np.testing.assert_allclose(fcos.centerness_target(jnp.asarray([[10.0, 5.0, 30.0, 20.0]])),
                             [math.sqrt(10 / 30 * 5 / 20)], rtol=1e-6)


def test_fcos_loss_on_a_hand_worked_batch():
  # One image, two points, two classes: point 0 positive (class 1), point 1 background.
  logits = jnp.asarray([[[0.5, -1.0], [2.0, -3.0]]])
  dist = jnp.asarray([[[4.0, 4.0, 4.0, 4.0], [1.0, 1.0, 1.0, 1.0]]])
  ctr_logits = jnp.asarray([[0.3, -0.2]])
  pts = jnp.asarray([[10.0, 10.0], [30.0, 10.0]])
  labels = jnp.asarray([[1, 2]])
  targets = jnp.asarray([[[2.0, 4.0, 6.0, 4.0], [0.0, 0.0, 0.0, 0.0]]])
  loss, parts = fcos.fcos_loss(logits, dist, ctr_logits, pts, labels, targets)

  def focal(x, t):
    p = 1 / (1 + math.exp(-x))
    return -0.25 * (1 - p)**2 * math.log(p) if t else -0.75 * p**2 * math.log(1 - p)

  want_cls = focal(0.5, 0) + focal(-1.0, 1) + focal(2.0, 0) + focal(-3.0, 0)  # / 1 positive
  # Pred box [6, 6, 14, 14] vs target [8, 6, 16, 14]: overlap 6 x 8 = 48, union 64+64-48 = 80.
  ctr = math.sqrt(2 / 6 * 4 / 4)
  want_box = -math.log(48 / 80)  # weighted by ctr, divided by the sum of ctr (= ctr)
  s = 1 / (1 + math.exp(-0.3))
  want_ctr = -(ctr * math.log(s) + (1 - ctr) * math.log(1 - s))
  np.testing.assert_allclose(parts['loss_cls'], want_cls, rtol=1e-5)
  np.testing.assert_allclose(parts['loss_box'], want_box, rtol=1e-5)
  np.testing.assert_allclose(parts['loss_centerness'], want_ctr, rtol=1e-5)
  np.testing.assert_allclose(loss, want_cls + want_box + want_ctr, rtol=1e-5)
  # GIoU: the enclosure [6, 6, 16, 14] = 80 = the union, so GIoU = IoU.
  _, g = fcos.fcos_loss(logits, dist, ctr_logits, pts, labels, targets, box_loss='giou')
  np.testing.assert_allclose(g['loss_box'], 1 - 48 / 80, rtol=1e-5)
  # No positives: box and centerness losses are 0, the focal loss is divided by 1.
  _, none = fcos.fcos_loss(logits, dist, ctr_logits, pts, jnp.asarray([[2, 2]]), targets)
  assert float(none['loss_box']) == 0 and float(none['loss_centerness']) == 0
  assert np.isfinite(float(none['loss_cls']))


# --- NMS and decoding -------------------------------------------------------------------------


def numpy_nms(boxes, scores, thr):
  """Greedy NMS in plain numpy: an independent reference."""
  order = list(np.argsort(-scores, kind='stable'))
  keep = []
  while order:
    i = order.pop(0)
    keep.append(i)
    rest = []
    for j in order:
      xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
      xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
      inter = max(0, xx2 - xx1) * max(0, yy2 - yy1)
      area = lambda b: (b[2] - b[0]) * (b[3] - b[1])
      if inter / (area(boxes[i]) + area(boxes[j]) - inter) <= thr:
        rest.append(j)
    order = rest
  return sorted(keep)


def random_boxes(rng, n, size=100.0):
  xy = rng.uniform(0, size, (n, 2))
  wh = rng.uniform(5, 40, (n, 2))
  return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_greedy_nms_matches_numpy_and_torchvision():
  torchvision = pytest.importorskip('torchvision')
  import torch
  rng = np.random.default_rng(0)
  boxes = random_boxes(rng, 300)
  scores = rng.permutation(300).astype(np.float32) / 300  # distinct scores
  order = np.argsort(-scores)
  keep = np.asarray(ops.greedy_nms(jnp.asarray(boxes[order]), jnp.ones(300, bool), 0.5))
  got = sorted(order[keep].tolist())
  assert got == numpy_nms(boxes, scores, 0.5)
  assert got == sorted(torchvision.ops.nms(torch.tensor(boxes), torch.tensor(scores),
                                           0.5).tolist())
  assert 20 < len(got) < 300  # the case suppresses some boxes and keeps others


def test_greedy_nms_by_hand():
  boxes = jnp.asarray([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10.0]])
  # 1 overlaps 0 with IoU 90/110 > 0.5: suppressed; 3 is invalid (padding).
  keep = ops.greedy_nms(boxes, jnp.asarray([True, True, True, False]), 0.5)
  np.testing.assert_array_equal(keep, [True, False, True, False])


def level_maps(shapes, num_classes, fill=-10.0):
  logits = [np.full((h, w, num_classes), fill, np.float32) for h, w in shapes]
  dist = [np.full((h, w, 4), 2.0, np.float32) for h, w in shapes]
  ctr = [np.full((h, w, 1), 10.0, np.float32) for h, w in shapes]
  return logits, dist, ctr


def test_decode_by_hand():
  shapes, strides = [(4, 4), (2, 2)], (8, 16)
  logits, dist, ctr = level_maps(shapes, 3)
  logits[0][1, 2, 1] = 3.0  # point (2 * 8 + 4, 1 * 8 + 4) = (20, 12), class 1
  dist[0][1, 2] = [5, 6, 7, 8]  # box [15, 6, 27, 20]
  logits[1][1, 1, 0] = 2.0  # point (24, 24) of level 1, class 0
  dist[1][1, 1] = [30, 30, 30, 30]  # box [-6, -6, 54, 54] -> clipped to the 32x40 image
  logits[1][0, 0, 2] = -2.0  # probability 0.12: above the threshold
  ctr[1][0, 0, 0] = -3.0  # centerness 0.047: the final score 0.0056 still counts
  out = fcos.decode([jnp.asarray(x) for x in logits], [jnp.asarray(x) for x in dist],
                    [jnp.asarray(x) for x in ctr], strides, jnp.asarray([32, 40]),
                    jnp.asarray([2.0, 0.5]), max_per_img=5)
  sig = lambda v: 1 / (1 + math.exp(-v))
  assert np.asarray(out['valid']).tolist() == [True, True, True, False, False]
  np.testing.assert_array_equal(out['labels'], [1, 0, 2, -1, -1])
  np.testing.assert_allclose(out['scores'][:3], [sig(3) * sig(10), sig(2) * sig(10),
                                                 sig(-2) * sig(-3)], rtol=1e-5)
  # x divided by 2, y by 0.5 (back to the original image).
  np.testing.assert_allclose(out['boxes'][0], [7.5, 12, 13.5, 40], rtol=1e-6)
  np.testing.assert_allclose(out['boxes'][1], [0, 0, 20, 64], rtol=1e-6)
  np.testing.assert_allclose(out['boxes'][2], [3, 12, 5, 20], rtol=1e-6)  # (8, 8) +- 2
  assert bool(out['exact'])


def test_decode_equals_an_uncapped_numpy_protocol():
  """Random outputs: the jitted decode (top 40 points per level, 300 candidate pairs, NMS)
  against the protocol in numpy over all candidates."""
  rng = np.random.default_rng(1)
  shapes, strides, k = [(8, 10), (4, 5), (2, 3)], (8, 16, 32), 4
  logits = [rng.normal(-2.5, 1.5, (h, w, k)).astype(np.float32) for h, w in shapes]
  dist = [rng.uniform(2, 40, (h, w, 4)).astype(np.float32) for h, w in shapes]
  ctr = [rng.normal(0, 1, (h, w, 1)).astype(np.float32) for h, w in shapes]
  image_hw, scale = np.array([60, 75]), np.array([1.25, 1.2], np.float32)
  out = jax.jit(lambda a, b, c: fcos.decode(a, b, c, strides, jnp.asarray(image_hw),
                                            jnp.asarray(scale), nms_pre=40, max_per_img=30,
                                            max_pairs=300))(logits, dist, ctr)
  # numpy: per level top 40 by max prob x ctr, threshold, NMS per class, best 30.
  pts = fcos.points(shapes, strides)
  start, boxes, probs, ctrs = 0, [], [], []
  for (h, w), lg, d, c in zip(shapes, logits, dist, ctr):
    n = h * w
    p = 1 / (1 + np.exp(-lg.reshape(n, k).astype(np.float64)))
    cc = 1 / (1 + np.exp(-c.reshape(n).astype(np.float64)))
    top = np.argsort(-(p * cc[:, None]).max(1), kind='stable')[:40]
    pp = pts[start:start + n][top]
    dd = d.reshape(n, 4)[top]
    b = np.concatenate([pp - dd[:, :2], pp + dd[:, 2:]], 1)
    b = np.clip(b, 0, [75, 60, 75, 60]) / np.tile(scale, 2)
    boxes.append(b), probs.append(p[top]), ctrs.append(cc[top])
    start += n
  boxes, probs, ctrs = np.concatenate(boxes), np.concatenate(probs), np.concatenate(ctrs)
  dets = []
  for cls in range(k):
    idx = np.flatnonzero(probs[:, cls] > 0.05)
    s = probs[idx, cls] * ctrs[idx]
    for j in numpy_nms(boxes[idx], s, 0.5):
      dets.append((s[j], cls, boxes[idx][j]))
  dets.sort(key=lambda t: -t[0])
  dets = dets[:30]
  assert len(dets) == 30 and bool(out['exact'])
  np.testing.assert_allclose(out['scores'], [d[0] for d in dets], rtol=1e-5)
  np.testing.assert_array_equal(out['labels'], [d[1] for d in dets])
  np.testing.assert_allclose(out['boxes'], np.stack([d[2] for d in dets]), rtol=1e-5,
                             atol=1e-4)


# --- The metric -------------------------------------------------------------------------------


def test_perfect_detections_score_ap_one(det_demo_root):
  """The ground truth of the demo's val split, fed through the metric as eval outputs, scores
  AP 1.0 in pycocotools; shifting every box lowers it."""
  src = CocoDetection(det_demo_root, 'val')
  metric, shifted = (CocoBoxMetric(src.category_ids, src.annotation_file, 'val')
                     for _ in range(2))
  for i in range(len(src)):
    s = src[i]
    n = len(s['boxes'])
    pad = lambda a, fill: np.concatenate([a, np.full((100 - n,) + a.shape[1:], fill, a.dtype)])
    outputs = {'boxes': pad(s['boxes'], 0)[None], 'scores': pad(np.ones(n, np.float32), 0)[None],
               'labels': pad(s['labels'], -1)[None], 'det_valid': (np.arange(100) < n)[None],
               'exact': np.ones(1, bool), 'image_id': np.asarray([s['image_id']]),
               'valid': np.ones(1, np.int32), 'index': np.asarray([i])}
    metric.update(outputs)
    outputs['boxes'] = outputs['boxes'] + np.float32(6)
    shifted.update(outputs)
  r = metric.result()
  assert r['AP'] == pytest.approx(1.0) and r['AP50'] == pytest.approx(1.0)
  assert r['num_images'] == len(src) and r['num_detections'] == len(src.boxes)
  assert shifted.result()['AP'] < 0.9
  assert 'AP 100.0' in metric.report()


# --- Batching by canvas -----------------------------------------------------------------------


class Shapes:
  """A source whose samples carry their group (and index) in their shape."""

  def __init__(self, groups):
    self.groups = np.asarray(groups)

  def __len__(self):
    return len(self.groups)

  def __getitem__(self, i):
    return {'x': np.full((1 + int(self.groups[i]),), i, np.int32)}


def test_grouped_training_batches_never_mix_groups_and_cover_each_epoch():
  groups = np.array([0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 1])  # 5 of group 0, 6 of group 1
  src = Shapes(groups)
  it = pipeline.train_iterator(src, lambda s, rng: s, batch_size=2, seed=0, groups=groups)
  order = pipeline.GroupedOrder(src, groups, 2, 0)
  assert order.epoch_len == 6 + 6  # each group filled up to a multiple of the batch
  seen = []
  for _ in range(6):
    batch = next(it)['x']  # np.stack would fail on mixed shapes
    seen.extend(batch[:, 0].tolist())
  assert set(seen) == set(range(11))
  a = pipeline.train_iterator(src, lambda s, rng: s, batch_size=1, seed=0, groups=groups,
                              process_index=0, process_count=2)
  b = pipeline.train_iterator(src, lambda s, rng: s, batch_size=1, seed=0, groups=groups,
                              process_index=1, process_count=2)
  for k in range(6):  # two hosts' halves of a global batch: one group, the one-host order
    x, y = next(a)['x'], next(b)['x']
    assert x.shape == y.shape
    assert [x[0, 0], y[0, 0]] == seen[2 * k:2 * k + 2]


def test_grouped_eval_batches_cover_every_sample_once():
  groups = np.array([0, 1, 1, 0, 1, 2])
  src = Shapes(groups)
  for hosts in (1, 2):
    indices = []
    for host in range(hosts):
      batches = list(pipeline.eval_batches(src, lambda s: s, batch_size=2, process_index=host,
                                           process_count=hosts, groups=groups))
      assert len(batches) == (4 if hosts == 1 else 3)  # per group: ceil(ceil(n / hosts) / 2)
      for batch in batches:
        assert len({len(row) for row in batch['x']}) == 1
        indices.extend(batch['index'][batch['valid'] == 1].tolist())
        np.testing.assert_array_equal(batch['x'][:, 0][batch['valid'] == 1],
                                      batch['index'][batch['valid'] == 1])
    assert sorted(indices) == list(range(6))


# --- The recipe's optimizer -------------------------------------------------------------------


def test_bias_multipliers_and_clipping():
  import ml_collections
  params = {'conv': {'kernel': jnp.ones((1, 1, 1, 2)), 'bias': jnp.ones(2)},
            'gn': {'scale': jnp.ones(2), 'bias': jnp.ones(2)}}
  assert optim.conv_bias_mask(params) == {'conv': {'kernel': False, 'bias': True},
                                          'gn': {'scale': False, 'bias': False}}
  c = ml_collections.ConfigDict(dict(name='sgd', lr=0.1, momentum=0.9, weight_decay=0.5,
                                     bias_lr_mult=2.0, bias_decay_mult=0.0, grad_clip_norm=0.0))
  tx = optim.make_optimizer(c, optax.constant_schedule(0.1))
  grads = jax.tree_util.tree_map(lambda p: 0.25 * jnp.ones_like(p), params)
  updates, _ = tx.update(grads, tx.init(params), params)
  # weights and norm biases: -lr (g + wd p) = -0.1 x 0.75; conv bias: -2 lr g = -0.05.
  np.testing.assert_allclose(updates['conv']['kernel'], -0.075)
  np.testing.assert_allclose(updates['gn']['bias'], -0.075)
  np.testing.assert_allclose(updates['conv']['bias'], -0.05)
  c.update(bias_lr_mult=1.0, bias_decay_mult=1.0, weight_decay=0.0, grad_clip_norm=0.5)
  tx = optim.make_optimizer(c, optax.constant_schedule(0.1))
  updates, _ = tx.update(grads, tx.init(params), params)  # global norm 0.25 x sqrt(8) > 0.5
  np.testing.assert_allclose(updates['conv']['bias'], -0.1 * 0.25 * 0.5 / math.sqrt(0.5),
                             rtol=1e-6)
  s = optim.make_schedule(ml_collections.ConfigDict(dict(
      schedule='step', lr=0.01, boundaries=(2,), gamma=0.1, warmup_steps=5,
      warmup_mode='constant', warmup_init=1 / 3)), 100, steps_per_epoch=10)
  np.testing.assert_allclose([s(0), s(4), s(5), s(19), s(20)],
                             [0.01 / 3, 0.01 / 3, 0.01, 0.01, 0.001], rtol=1e-6)


def test_the_box_budget_is_checked_when_the_split_opens(det_demo_root):
  from conftest import recipe
  from hrnet_jax.data.sources import DataError
  from hrnet_jax.tasks.detection import detection_task
  c = recipe('det_coco_fcos', det_demo_root)
  task = detection_task(c)
  src = task.source('train')
  assert src.num_boxes.max() <= c.data.max_boxes
  c.data.max_boxes = int(src.num_boxes.max()) - 1
  worst = int(src.image_ids[int(np.argmax(src.num_boxes))])
  with pytest.raises(DataError, match=f'det_demo/train: image {worst} has .* boxes, more than '
                                      f'config.data.max_boxes={c.data.max_boxes}'):
    detection_task(c).source('train')
  assert len(detection_task(c).source('val')) == 8  # evaluation reads boxes only through COCOeval
