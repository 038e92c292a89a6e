"""CenterNet's branches: the cascade corner pooling and centre pooling modules against a PyTorch
forward written from the authors' modules (their `pool` and `pool_cross`), with the same random
weights and BatchNorm statistics."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.models import centernet, layers

torch = pytest.importorskip('torch')
F = torch.nn.functional


def _cummax(x, dim, reverse):
  if reverse:
    return torch.cummax(x.flip(dim), dim=dim).values.flip(dim)
  return torch.cummax(x, dim=dim).values


POOLS = {'top': lambda x: _cummax(x, 2, True), 'bottom': lambda x: _cummax(x, 2, False),
         'left': lambda x: _cummax(x, 3, True), 'right': lambda x: _cummax(x, 3, False)}


def _t(a):
  return torch.tensor(np.asarray(a))


def torch_conv(x, p, bias=False):
  k = _t(p['kernel']).permute(3, 2, 0, 1)
  return F.conv2d(x, k, _t(p['bias']) if bias else None, padding=k.shape[-1] // 2)


def torch_bn(x, p, s):
  return F.batch_norm(x, _t(s['mean']), _t(s['var']), _t(p['scale']), _t(p['bias']),
                      training=False, eps=1e-5)


def torch_unit(x, p, s):  # the authors' `convolution`: conv (no bias) -> BN -> ReLU
  return F.relu(torch_bn(torch_conv(x, p['0']), p['1'], s['1']))


def torch_tail(x, pooled, p, s):  # p_conv1 -> p_bn1, + bn1(conv1(x)), ReLU, conv2
  y = torch_bn(torch_conv(pooled, p['p_conv1']), p['p_bn1'], s['p_bn1'])
  z = torch_bn(torch_conv(x, p['conv1']), p['bn1'], s['bn1'])
  return torch_unit(F.relu(y + z), p['conv2'], s['conv2'])


def torch_corner_pool(x, p, s, pool1, pool2):
  """The authors' `pool(dim, pool1, pool2)` forward."""
  look_right = pool2(torch_unit(x, p['look_conv1'], s['look_conv1']))
  pooled1 = pool1(torch_conv(torch_unit(x, p['p1_conv1'], s['p1_conv1']) + look_right,
                             p['P1_look_conv']))
  look_down = pool1(torch_unit(x, p['look_conv2'], s['look_conv2']))
  pooled2 = pool2(torch_conv(torch_unit(x, p['p2_conv1'], s['p2_conv1']) + look_down,
                             p['P2_look_conv']))
  return torch_tail(x, pooled1 + pooled2, p, s)


def torch_center_pool(x, p, s):
  """The authors' `pool_cross(dim, TopPool, LeftPool, BottomPool, RightPool)` forward."""
  pooled1 = POOLS['bottom'](POOLS['top'](torch_unit(x, p['p1_conv1'], s['p1_conv1'])))
  pooled2 = POOLS['right'](POOLS['left'](torch_unit(x, p['p2_conv1'], s['p2_conv1'])))
  return torch_tail(x, pooled1 + pooled2, p, s)


def randomized(variables, seed):
  """Random weights (He-scaled), BN scales, biases, means and positive variances."""
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'kernel' in name:
      fan_in = np.prod(leaf.shape[:-1])
      return rng.normal(0, np.sqrt(2 / fan_in), leaf.shape).astype(np.float32)
    if "'var'" in name:
      return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
    if "'scale'" in name:
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(0, 0.2, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, variables)


@pytest.mark.parametrize('kind', ['top_left', 'bottom_right', 'center'])
def test_pool_modules_equal_the_authors_structure_in_torch(kind):
  conv = layers.make_conv()
  norm = layers.make_norm(train=False, momentum=0.9)
  make = {'top_left': functools.partial(centernet.top_left_pool, name='tl'),
          'bottom_right': functools.partial(centernet.bottom_right_pool, name='br'),
          'center': lambda c, n, f: centernet.CenterPool(c, n, f, name='ct')}[kind]
  module = make(conv, norm, 32)
  x = np.random.default_rng(0).normal(size=(2, 12, 10, 32)).astype(np.float32)
  variables = randomized(module.init(jax.random.key(0), jnp.asarray(x)), 1)
  got = np.asarray(jax.jit(module.apply)(variables, jnp.asarray(x)))
  p, s = variables['params'], variables['batch_stats']
  xt = _t(x).permute(0, 3, 1, 2)
  with torch.no_grad():
    if kind == 'center':
      want = torch_center_pool(xt, p, s)
    else:
      first, second = ('top', 'left') if kind == 'top_left' else ('bottom', 'right')
      want = torch_corner_pool(xt, p, s, POOLS[first], POOLS[second])
  assert got.shape == (2, 12, 10, 32)
  np.testing.assert_allclose(got, want.permute(0, 2, 3, 1).numpy(), rtol=1e-4, atol=1e-4)


def torch_keypoint_head(x, p):
  """The authors' `make_kp_layer`: conv 3x3 with bias, ReLU, conv 1x1 with bias."""
  return torch_conv(F.relu(torch_conv(x, p['0'], bias=True)), p['1'], bias=True)


def test_head_equals_a_torch_forward_of_the_branches():
  """The whole head on four random streams: the streams resized bilinearly to stride 4 and
  concatenated, the cnv layer, the three branches and their eight outputs, against the same in
  PyTorch; the heatmaps' last biases start at -2.19, the kernels at PyTorch's default
  (U(+-1 / sqrt(fan_in)), the authors'), so the heatmaps start near probability 0.1."""
  rng = np.random.default_rng(5)
  streams = tuple(rng.normal(size=(1, 16 >> i, 12 >> i, 4 << i)).astype(np.float32)
                  for i in range(4))
  head = centernet.CenterNetHead(num_classes=5, cnv_channels=16, head_channels=8)
  variables = head.init(jax.random.key(0), tuple(map(jnp.asarray, streams)))
  assert np.all(np.asarray(variables['params']['ct_heat']['1']['bias']) == np.float32(-2.19))
  kernel = np.asarray(variables['params']['tl_heat']['1']['kernel'])  # fan_in 8
  assert np.abs(kernel).max() <= 1 / np.sqrt(8) and kernel.std() > 0.8 / np.sqrt(3 * 8)
  start = jax.jit(head.apply)(variables, tuple(map(jnp.asarray, streams)))
  for name in ('tl_heat', 'br_heat', 'ct_heat'):
    logits = np.asarray(start[name])
    assert abs(logits.mean() + 2.19) < 0.3 and logits.std() < 0.5, (name, logits.std())
  variables = randomized(variables, 6)
  got = jax.jit(head.apply)(variables, tuple(map(jnp.asarray, streams)))
  p, s = variables['params'], variables['batch_stats']
  with torch.no_grad():
    ts = [_t(x).permute(0, 3, 1, 2) for x in streams]
    x = torch.cat([ts[0]] + [F.interpolate(t, size=ts[0].shape[2:], mode='bilinear',
                                           align_corners=False) for t in ts[1:]], 1)
    cnv = torch_unit(x, p['cnv'], s['cnv'])
    branches = {'tl': torch_corner_pool(cnv, p['tl_cnv'], s['tl_cnv'], POOLS['top'],
                                        POOLS['left']),
                'br': torch_corner_pool(cnv, p['br_cnv'], s['br_cnv'], POOLS['bottom'],
                                        POOLS['right']),
                'ct': torch_center_pool(cnv, p['ct_cnv'], s['ct_cnv'])}
  assert sorted(got) == sorted(['tl_heat', 'br_heat', 'ct_heat', 'tl_tag', 'br_tag', 'tl_regr',
                                'br_regr', 'ct_regr'])
  channels = {'heat': 5, 'tag': 1, 'regr': 2}
  for name, value in got.items():
    branch, what = name.split('_')
    with torch.no_grad():
      want = torch_keypoint_head(branches[branch], p[name]).permute(0, 2, 3, 1).numpy()
    assert value.shape == (1, 16, 12, channels[what])
    np.testing.assert_allclose(np.asarray(value), want, rtol=1e-4, atol=1e-4, err_msg=name)


# --- Targets ---------------------------------------------------------------------------------


def test_gaussian_radius_by_hand():
  """10 x 10 cells at overlap 0.3: the three bounds (b + sqrt(b^2 - 4ac)) / 2 with (a, b, c) =
  (1, 20, 70 / 1.3), (4, 40, 70), (1.2, -12, -70) are 16.79, 30.95, 4.95: the least wins.
  2 x 18 cells: (1.2, -12, -25.2) gives (-12 + sqrt(264.96)) / 2 = 2.139."""
  from hrnet_jax.tasks.detection.keypoint_triplets import gaussian_radius
  assert float(gaussian_radius(jnp.float32(10), jnp.float32(10), 0.3)) == pytest.approx(
      (-12 + np.sqrt(144 + 4 * 1.2 * 70)) / 2, rel=1e-6)
  assert (-12 + np.sqrt(480)) / 2 == pytest.approx(4.954, abs=1e-3)
  assert float(gaussian_radius(jnp.float32(2), jnp.float32(18), 0.3)) == pytest.approx(
      (-12 + np.sqrt(264.96)) / 2, rel=1e-6)
  # The recipe's 0.7 (the authors' default) on 10 x 10: (1, 20, 30 / 1.7), (4, 40, 30),
  # (2.8, -28, -30) give 19.07, 36.73, (-28 + sqrt(784 + 336)) / 2 = 2.733.
  assert float(gaussian_radius(jnp.float32(10), jnp.float32(10))) == pytest.approx(
      (-28 + np.sqrt(1120)) / 2, rel=1e-6)


def numpy_targets(boxes, labels, num_classes, out_hw, ratio, o=0.7):
  """The authors' sampler for one image, written out in float64: int() cells, ceil'd sizes,
  their radius, gaussian2D windows (with its eps cut) maxed into each class's map."""
  h, w = out_hw
  ry, rx = ratio
  heats = {k: np.zeros((num_classes, h, w)) for k in ('tl', 'br', 'ct')}
  regrs, inds = {k: [] for k in heats}, {k: [] for k in heats}
  for (x1, y1, x2, y2), c in zip(boxes, labels):
    pts = {'tl': (x1 * rx, y1 * ry), 'br': (x2 * rx, y2 * ry),
           'ct': ((x1 + x2) / 2 * rx, (y1 + y2) / 2 * ry)}
    bw, bh = np.ceil((x2 - x1) * rx), np.ceil((y2 - y1) * ry)
    r = min((bh + bw + np.sqrt((bh + bw) ** 2 - 4 * bw * bh * (1 - o) / (1 + o))) / 2,
            (2 * (bh + bw) + np.sqrt(4 * (bh + bw) ** 2 - 16 * (1 - o) * bw * bh)) / 2,
            (-2 * o * (bh + bw) + np.sqrt(4 * o * o * (bh + bw) ** 2
                                          - 16 * o * (o - 1) * bw * bh)) / 2)
    r = max(0, int(r))
    for k, (fx, fy) in pts.items():
      x, y = int(fx), int(fy)
      d = 2 * r + 1
      sigma = d / (5 if k == 'ct' else 6)
      yy, xx = np.ogrid[-r:r + 1, -r:r + 1]
      g = np.exp(-(xx * xx + yy * yy) / (2 * sigma * sigma))
      g[g < np.finfo(g.dtype).eps * g.max()] = 0
      left, right = min(x, r), min(w - x, r + 1)
      top, bottom = min(y, r), min(h - y, r + 1)
      window = heats[k][c, y - top:y + bottom, x - left:x + right]
      np.maximum(window, g[r - top:r + bottom, r - left:r + right], out=window)
      regrs[k].append((fx - x, fy - y))
      inds[k].append(y * w + x)
  return heats, regrs, inds


def test_targets_equal_the_authors_sampler_written_in_numpy():
  """Random boxes of 3 classes on a 511 x 511 input, 128 x 128 maps, padded to 12 with 3 empty
  rows: heatmaps (float32 of the float64 reference), offsets and cell indices agree, padding
  contributes nothing; by hand, the top-left cell of a box holds 1."""
  from hrnet_jax.tasks.detection.keypoint_triplets import centernet_targets
  rng = np.random.default_rng(0)
  n, size, out = 9, 511, 128
  xy = rng.uniform(0, 400, (n, 2))
  boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(8, 200, (n, 2)), size - 1)], 1)
  labels = rng.integers(0, 3, n)
  ratio = (out / size, out / size)
  pad = lambda a: np.concatenate([a, np.zeros((3,) + a.shape[1:], a.dtype)])
  got = jax.jit(centernet_targets, static_argnums=(3, 4, 5))(
      jnp.asarray(pad(boxes), jnp.float32), jnp.asarray(pad(labels)),
      jnp.asarray(pad(np.ones(n, bool))), 3, (out, out), ratio)
  heats, regrs, inds = numpy_targets(boxes, labels, 3, (out, out), ratio)
  for k in ('tl', 'br', 'ct'):
    np.testing.assert_allclose(np.asarray(got[f'{k}_heat']), heats[k].transpose(1, 2, 0),
                               atol=2e-6, err_msg=k)
    np.testing.assert_allclose(np.asarray(got[f'{k}_regr'])[:n], regrs[k], atol=1e-4)
    assert np.asarray(got[f'{k}_regr'])[n:].max() == 0 and np.all(got[f'{k}_ind'][n:] == 0)
    np.testing.assert_array_equal(np.asarray(got[f'{k}_ind'])[:n], inds[k])
  x, y = int(boxes[0, 0] * ratio[1]), int(boxes[0, 1] * ratio[0])
  assert float(got['tl_heat'][y, x, labels[0]]) == 1.0
  np.testing.assert_array_equal(np.asarray(got['mask']), [1] * n + [0] * 3)


def test_losses_equal_the_authors_formulas_written_as_loops():
  """Focal, pull/push and offset losses on random outputs and targets (2 images, 5 objects
  padded, the second image with 2), against the authors' formulas written element by element."""
  from hrnet_jax.tasks.detection import keypoint_triplets as kt
  rng = np.random.default_rng(1)
  b, h, w, c, n = 2, 6, 5, 3, 5
  logits = rng.normal(0, 2, (b, h, w, c)).astype(np.float32)
  target = rng.uniform(0, 1, (b, h, w, c)).astype(np.float32) ** 3
  target[0, 1, 2, 0] = target[1, 4, 4, 2] = target[1, 0, 0, 1] = 1.0
  p = np.clip(1 / (1 + np.exp(-logits.astype(np.float64))), 1e-4, 1 - 1e-4)
  pos = neg = 0.0
  for idx in np.ndindex(target.shape):
    if target[idx] == 1:
      pos += np.log(p[idx]) * (1 - p[idx]) ** 2
    else:
      neg += np.log(1 - p[idx]) * p[idx] ** 2 * (1 - target[idx]) ** 4
  assert float(kt.focal_loss(logits, target)) == pytest.approx(-(pos + neg) / 3, rel=1e-5)
  assert float(kt.focal_loss(logits, target * 0.5)) == pytest.approx(
      -sum(np.log(1 - p[i]) * p[i] ** 2 * (1 - target[i] * 0.5) ** 4
           for i in np.ndindex(target.shape)), rel=1e-5)  # no positive: negatives alone

  tl, br = rng.normal(0, 1, (b, n)).astype(np.float32), rng.normal(0, 1, (b, n)).astype(np.float32)
  mask = np.array([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], np.float32)
  pull = push = 0.0
  for i in range(b):
    m = int(mask[i].sum())
    e = (tl[i] + br[i]) / 2
    for k in range(m):
      pull += ((tl[i, k] - e[k]) ** 2 + (br[i, k] - e[k]) ** 2) / (m + 1e-4)
      for j in range(m):
        push += (max(0.0, 1 - abs(e[k] - e[j])) - 1 / (m + 1e-4)) / ((m - 1) * m + 1e-4)
  got_pull, got_push = kt.embedding_losses(tl, br, mask)
  assert float(got_pull) == pytest.approx(pull, rel=1e-5)
  assert float(got_push) == pytest.approx(push, rel=1e-4, abs=1e-6)

  pred, gt = rng.normal(0, 1, (b, n, 2)), rng.uniform(0, 1, (b, n, 2))
  l1 = lambda d: 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
  want = sum(l1(pred[i, k, a] - gt[i, k, a]) for i in range(b) for k in range(n) for a in (0, 1)
             if mask[i, k]) / (mask.sum() + 1e-4)
  assert float(kt.offset_loss(jnp.asarray(pred), jnp.asarray(gt), mask)) == pytest.approx(
      want, rel=1e-5)
  maps = rng.normal(size=(b, h, w, 2)).astype(np.float32)
  ind = rng.integers(0, h * w, (b, n))
  np.testing.assert_array_equal(np.asarray(kt.gather_cells(maps, ind)),
                                maps.reshape(b, h * w, 2)[np.arange(b)[:, None], ind])


def test_loss_reads_embeddings_and_offsets_at_each_objects_cells():
  """Outputs that hold, at every object's corner cells, its own embedding (objects 2 apart) and
  the target offsets leave pull, push and the offset losses at 0; the same embeddings with the
  bottom-right ones rolled by an object do not."""
  from hrnet_jax.tasks.detection import keypoint_triplets as kt
  boxes = np.array([[[10, 20, 200, 300], [250, 40, 480, 210], [60, 330, 300, 500], [0, 0, 0, 0]]],
                   np.float32)
  valid = np.array([[1, 1, 1, 0]], bool)
  targets = jax.jit(jax.vmap(lambda bx, v: kt.centernet_targets(bx, jnp.zeros(4, jnp.int32), v, 2,
                                                        (32, 32), (32 / 511, 32 / 511))))(
      jnp.asarray(boxes), jnp.asarray(valid))

  def outputs(br_shift):
    out = {f'{k}_heat': jnp.zeros((1, 32, 32, 2)) for k in ('tl', 'br', 'ct')}
    for k in ('tl', 'br', 'ct'):
      regr = np.zeros((1, 32 * 32, 2), np.float32)
      regr[0, np.asarray(targets[f'{k}_ind'][0, :3])] = np.asarray(targets[f'{k}_regr'][0, :3])
      out[f'{k}_regr'] = jnp.asarray(regr.reshape(1, 32, 32, 2))
    for k, shift in (('tl', 0), ('br', br_shift)):
      tag = np.zeros((1, 32 * 32, 1), np.float32)
      tag[0, np.asarray(targets[f'{k}_ind'][0, :3]), 0] = np.roll([0.0, 2.0, 4.0], shift)
      out[f'{k}_tag'] = jnp.asarray(tag.reshape(1, 32, 32, 1))
    return out

  loss = jax.jit(kt.centernet_loss)
  good = loss(outputs(0), targets)
  assert abs(float(good['pull'])) < 1e-6 and abs(float(good['push'])) < 1e-3
  assert abs(float(good['offsets'])) < 1e-6 and float(good['focal']) > 0
  bad = loss(outputs(1), targets)
  assert float(bad['pull']) > 1.0


def numpy_decode(out, k, ae_threshold, num_dets):
  """The authors' `_decode` on one image, in numpy: sigmoid, 3x3 peak NMS (-inf padding), the k
  best over classes and cells, all top-left x bottom-right pairs with their rejections."""
  def peaks(logits):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    padded = np.pad(p, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    h, w, _ = p.shape
    hmax = np.max([padded[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=0)
    return np.where(hmax == p, p, 0.0)

  def top(heat, regr):
    h, w, c = heat.shape
    flat = heat.transpose(2, 0, 1).reshape(-1)
    idx = np.argsort(-flat, kind='stable')[:k]
    cells, classes = idx % (h * w), idx // (h * w)
    ys, xs = cells // w, cells % w
    return flat[idx], cells, classes, xs + regr[ys, xs, 0], ys + regr[ys, xs, 1]

  tl, br, ct = (top(peaks(out[f'{n}_heat']), out[f'{n}_regr']) for n in ('tl', 'br', 'ct'))
  rows = []
  for i in range(k):
    for j in range(k):
      score = (tl[0][i] + br[0][j]) / 2
      if (tl[2][i] != br[2][j] or br[3][j] < tl[3][i] or br[4][j] < tl[4][i]
          or abs(out['tl_tag'].reshape(-1)[tl[1][i]] - out['br_tag'].reshape(-1)[br[1][j]])
          > ae_threshold):
        score = -1
      rows.append([tl[3][i], tl[4][i], br[3][j], br[4][j], score, tl[0][i], br[0][j], tl[2][i]])
  rows = np.asarray(rows)
  rows = rows[np.argsort(-rows[:, 4], kind='stable')][:num_dets]
  return rows, np.stack([ct[3], ct[4], ct[2], ct[0]], 1)


def test_decode_equals_the_authors_decode_written_in_numpy():
  """Random heads (12 x 12 cells, 3 classes, embeddings spread so about half the same-class
  pairs match), the 20 best corners, 200 detections: the kept pairs (score > -1) and the centres
  agree with the numpy decode."""
  from hrnet_jax.tasks.detection.keypoint_triplets import decode_triplets
  rng = np.random.default_rng(2)
  out = {f'{n}_heat': rng.normal(-2, 2, (12, 12, 3)).astype(np.float32)
         for n in ('tl', 'br', 'ct')}
  out.update({f'{n}_regr': rng.uniform(0, 1, (12, 12, 2)).astype(np.float32)
              for n in ('tl', 'br', 'ct')})
  out.update({f'{n}_tag': rng.uniform(0, 1, (12, 12, 1)).astype(np.float32) for n in ('tl', 'br')})
  dets, centres = jax.jit(decode_triplets, static_argnums=(1, 2, 3, 4))(
      {k_: jnp.asarray(v) for k_, v in out.items()}, 20, 0.5, 3, 200)
  want, want_centres = numpy_decode(out, 20, 0.5, 200)
  dets = np.asarray(dets)
  kept, want_kept = dets[dets[:, 4] > -1], want[want[:, 4] > -1]
  assert len(want_kept) >= 15  # the case exercises pairing
  order = lambda a: a[np.lexsort((a[:, 3], a[:, 2], a[:, 1], a[:, 0], -a[:, 4]))]
  np.testing.assert_allclose(order(kept), order(want_kept), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(centres), want_centres, rtol=1e-5, atol=1e-5)


def test_center_check_by_hand():
  """A small box (100 x 60: its central third is x 133.3-166.7, y 40-60) with a centre of its
  class inside keeps its pair, scored (2 x 0.6 + 0.9) / 3 = 0.7; the same centre of another
  class does not count; a large box (300 x 200: central fifth x 220-280, y 180-220) whose only
  centre sits at x 215 (inside its third, outside its fifth) is dropped, as is a rejected pair."""
  from hrnet_jax.tasks.detection.keypoint_triplets import center_check
  dets = np.array([[100, 20, 200, 80, 0.6, 0.7, 0.5, 1],
                   [100, 100, 400, 300, 0.8, 0.8, 0.8, 2],
                   [0, 0, 50, 50, -1, 0.1, 0.1, 1]], np.float64)
  centres = np.array([[150, 50, 0, 0.95], [150, 50, 1, 0.9], [215, 200, 2, 0.99]], np.float64)
  kept = center_check(dets, centres)
  assert kept.shape == (1, 8) and kept[0, 4] == pytest.approx(0.7)
  np.testing.assert_array_equal(kept[0, [0, 1, 2, 3, 7]], [100, 20, 200, 80, 1])
  centres[2, 0] = 225  # now inside the large box's fifth: kept, (1.6 + 0.99) / 3
  kept = center_check(dets, centres)
  np.testing.assert_allclose(kept[:, 4], [(1.6 + 0.99) / 3, 0.7])
