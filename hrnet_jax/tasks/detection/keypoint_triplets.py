"""CenterNet's keypoint triplets (the `CenterNet` task of `centernet_*` archs), as the authors'
code does it: the training sample and colour noise, the targets and losses in jit with fixed
shapes, the decoding and rescaling of the test on the device, the centre check and soft-NMS on
the host, the multi-scale test and the COCO box metric. docs/detection.md names what is ours.

Per object (boxes x1y1x2y2 in input pixels, padded to a fixed count with a `valid` mask): its
top-left, bottom-right and centre points scaled to the output map (`ratio`, 128/511 at the
recipe's size) are floored to a cell; each class's heatmap takes, cell by cell, the maximum of
its objects' Gaussians there, drawn in a square window of the object's radius around the cell
(sigma = diameter / 6 for the corners, diameter / 5 for the centre); the offsets are what
flooring dropped; the indices flatten the cells (y * width + x) for gathering embeddings and
offsets. The heatmaps are built on the device: 3 x 80 maps of 128 x 128 float32 are 15.7 MB a
sample, the boxes a few hundred bytes.

The radius is CornerNet's `gaussian_radius` as the authors compute it, quirk included: each of
its three quadratics is solved as (b + sqrt(b^2 - 4ac)) / 2, without the division by a (the
published derivation divides), so two of the three bounds come out larger than the derivation's.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax import ops
from hrnet_jax.errors import ConfigError
from hrnet_jax.tasks.detection import canvas, metric
from hrnet_jax.tasks.detection.task import DetectionTask

Array = jax.Array
# The authors' `gaussian_iou`: a corner pair anywhere within the radius still gives a box of at
# least this IoU with the object. 0.7 is their dataset default, which no CenterNet config overrides.
GAUSSIAN_IOU = 0.7
CORNER_DELTA, CENTER_DELTA = 6.0, 5.0  # sigma = diameter / delta


def gaussian_radius(height: Array, width: Array, min_overlap: float = GAUSSIAN_IOU) -> Array:
  """The authors' radius for boxes of `height` x `width` output cells (elementwise)."""
  b1 = height + width
  c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
  r1 = (b1 + jnp.sqrt(b1 ** 2 - 4 * c1)) / 2
  b2 = 2 * (height + width)
  c2 = (1 - min_overlap) * width * height
  r2 = (b2 + jnp.sqrt(b2 ** 2 - 16 * c2)) / 2
  a3 = 4 * min_overlap
  b3 = -2 * min_overlap * (height + width)
  c3 = (min_overlap - 1) * width * height
  r3 = (b3 + jnp.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
  return jnp.minimum(jnp.minimum(r1, r2), r3)


def _gaussians(cells: Array, radius: Array, delta: float, hw: tuple[int, int]) -> Array:
  """(N, H, W): per object exp(-(dx^2 + dy^2) / 2 sigma^2) within `radius` cells of its cell
  (a square window), sigma = (2 radius + 1) / delta; 0 outside."""
  h, w = hw
  sigma = (2 * radius + 1) / delta
  dx = jnp.arange(w)[None, :] - cells[:, :1]  # (N, W)
  dy = jnp.arange(h)[None, :] - cells[:, 1:]  # (N, H)
  inside_x = jnp.abs(dx) <= radius[:, None]
  inside_y = jnp.abs(dy) <= radius[:, None]
  d2 = dy[:, :, None] ** 2 + dx[:, None, :] ** 2
  g = jnp.exp(-d2 / (2 * sigma[:, None, None] ** 2))
  return jnp.where(inside_y[:, :, None] & inside_x[:, None, :], g, 0.0)


def centernet_targets(boxes: Array, labels: Array, valid: Array, num_classes: int,
                      out_hw: tuple[int, int], ratio: tuple[float, float]) -> dict[str, Array]:
  """Targets of one image. `boxes` (N, 4) input pixels, `labels` (N,) 0-based classes, `valid`
  (N,); `ratio` (y, x) output cells per input pixel. Returns `{tl,br,ct}_heat` (H, W, C),
  `{tl,br,ct}_regr` (N, 2) x, y offsets, `{tl,br,ct}_ind` (N,) flat cell indices, `mask` (N,)."""
  h, w = out_hw
  ry, rx = ratio
  scale = jnp.asarray([rx, ry, rx, ry], jnp.float32)
  f = boxes.astype(jnp.float32) * scale
  points = {'tl': f[:, :2], 'br': f[:, 2:], 'ct': (boxes[:, :2] + boxes[:, 2:]) / 2 * scale[:2]}
  # The authors' window size: the box's output size rounded up, then the radius floored.
  size_w = jnp.ceil((boxes[:, 2] - boxes[:, 0]) * rx)
  size_h = jnp.ceil((boxes[:, 3] - boxes[:, 1]) * ry)
  radius = jnp.maximum(0.0, jnp.floor(gaussian_radius(size_h, size_w)))
  out = {'mask': valid.astype(jnp.float32)}
  for name, pt in points.items():
    cells = jnp.floor(pt)  # int() of non-negative coordinates
    g = _gaussians(cells, radius, CENTER_DELTA if name == 'ct' else CORNER_DELTA, (h, w))
    # Per class the maximum over its objects (a class without any: 0).
    g = jnp.where(valid[:, None, None], g, 0.0)
    heat = jax.ops.segment_max(g, jnp.where(valid, labels, 0), num_segments=num_classes)
    out[f'{name}_heat'] = jnp.maximum(heat, 0.0).transpose(1, 2, 0)
    out[f'{name}_regr'] = (pt - cells) * valid[:, None]
    cells = cells.astype(jnp.int32)
    out[f'{name}_ind'] = jnp.where(valid, cells[:, 1] * w + cells[:, 0], 0)
  return out



# --- Losses (the authors' AELoss with their weights) -----------------------------------------

PULL_WEIGHT = PUSH_WEIGHT = 0.1  # the authors' AELoss(pull_weight=1e-1, push_weight=1e-1)


def focal_loss(logits: Array, target: Array) -> Array:
  """CornerNet's penalty-reduced focal loss over a batch of heatmaps: probabilities clipped to
  [1e-4, 1 - 1e-4]; at cells where the target is 1, log(p) (1 - p)^2; elsewhere
  log(1 - p) p^2 (1 - target)^4; negated and divided by the number of 1-cells in the batch
  (the negatives alone when there is none)."""
  p = jnp.clip(jax.nn.sigmoid(logits.astype(jnp.float32)), 1e-4, 1 - 1e-4)
  pos = target == 1
  pos_loss = jnp.sum(jnp.where(pos, jnp.log(p) * (1 - p) ** 2, 0.0))
  neg_loss = jnp.sum(jnp.where(pos, 0.0, jnp.log(1 - p) * p ** 2 * (1 - target) ** 4))
  num_pos = jnp.sum(pos)
  return jnp.where(num_pos > 0, -(pos_loss + neg_loss) / jnp.maximum(num_pos, 1), -neg_loss)


def gather_cells(maps: Array, ind: Array) -> Array:
  """(B, H, W, C) maps read at flat cell indices (B, N) -> (B, N, C)."""
  b, h, w, c = maps.shape
  return jnp.take_along_axis(maps.reshape(b, h * w, c), ind[..., None], axis=1)


def embedding_losses(tl_tag: Array, br_tag: Array, mask: Array) -> tuple[Array, Array]:
  """(pull, push) of the corners' 1-d embeddings (B, N) of the objects in `mask` (B, N): pull
  draws each pair to their mean, push drives the means of different objects at least 1
  apart, each normalized per image as the authors do (with their 1e-4s), summed over images."""
  mask = mask.astype(jnp.float32)
  num = jnp.sum(mask, axis=1, keepdims=True)
  mean = (tl_tag + br_tag) / 2
  pull = jnp.sum(((tl_tag - mean) ** 2 + (br_tag - mean) ** 2) / (num + 1e-4) * mask)
  both = mask[:, None, :] * mask[:, :, None]
  dist = jax.nn.relu(1 - jnp.abs(mean[:, None, :] - mean[:, :, None]))
  dist = (dist - 1 / (num[..., None] + 1e-4)) / ((num[..., None] - 1) * num[..., None] + 1e-4)
  return pull, jnp.sum(dist * both)


def offset_loss(pred: Array, target: Array, mask: Array) -> Array:
  """Smooth L1 (beta 1) of the offsets (B, N, 2) of the objects in `mask`, summed, over the
  number of objects in the batch (+ 1e-4)."""
  d = jnp.abs(pred - target)
  l1 = jnp.where(d < 1, 0.5 * d * d, d - 0.5)
  return jnp.sum(l1 * mask[..., None]) / (jnp.sum(mask) + 1e-4)


def centernet_loss(outputs: dict[str, Array], targets: dict[str, Array]) -> dict[str, Array]:
  """The authors' training loss for one stack of outputs (`CenterNetHead`, (B, H, W, .) maps)
  and batched targets (`centernet_targets` under vmap): focal losses of the three heatmaps,
  0.1 x pull + 0.1 x push of the corner embeddings, the three offset losses."""
  mask = targets['mask']
  focal = sum(focal_loss(outputs[f'{k}_heat'], targets[f'{k}_heat']) for k in ('tl', 'br', 'ct'))
  tags = [gather_cells(outputs[f'{k}_tag'], targets[f'{k}_ind'])[..., 0] for k in ('tl', 'br')]
  pull, push = embedding_losses(*tags, mask)
  offsets = sum(offset_loss(gather_cells(outputs[f'{k}_regr'], targets[f'{k}_ind']),
                            targets[f'{k}_regr'], mask) for k in ('tl', 'br', 'ct'))
  total = focal + PULL_WEIGHT * pull + PUSH_WEIGHT * push + offsets
  return {'loss': total, 'focal': focal, 'pull': pull, 'push': push, 'offsets': offsets}


# --- Decoding (the authors' `_decode`, per image) ---------------------------------------------

TOP_K, AE_THRESHOLD, NMS_KERNEL, NUM_DETS = 70, 0.5, 3, 1000  # the authors' test settings


def _peaks(logits: Array, kernel: int) -> Array:
  """Sigmoid probabilities kept only where they are the maximum of their kernel x kernel
  neighbourhood (the heatmaps' NMS); (H, W, C)."""
  heat = jax.nn.sigmoid(logits.astype(jnp.float32))
  pad = (kernel - 1) // 2
  hmax = jax.lax.reduce_window(heat, -jnp.inf, jax.lax.max, (kernel, kernel, 1), (1, 1, 1),
                               ((pad, pad), (pad, pad), (0, 0)))
  return jnp.where(hmax == heat, heat, 0.0)


def _top_points(heat: Array, offsets: Array, k: int) -> tuple[Array, ...]:
  """The k best (class, cell) of a (H, W, C) map, ranked over classes and cells together:
  scores, flat cells, classes, x and y (the cell plus its predicted offset)."""
  h, w, c = heat.shape
  scores, idx = ops.top_k(heat.transpose(2, 0, 1).reshape(-1), k)  # class-major, as NCHW
  cells, classes = idx % (h * w), idx // (h * w)
  off = offsets.reshape(h * w, 2)[cells]
  return scores, cells, classes, (cells % w) + off[:, 0], (cells // w) + off[:, 1]


def decode_triplets(out: dict[str, Array], k: int = TOP_K, ae_threshold: float = AE_THRESHOLD,
                    kernel: int = NMS_KERNEL, num_dets: int = NUM_DETS) -> tuple[Array, Array]:
  """One image's outputs ((H, W, .) maps) -> (detections (num_dets, 8): x1, y1, x2, y2 in output
  cells, score, top-left score, bottom-right score, class; centres (k, 4): x, y, class, score).
  Every pair of the k best top-left and bottom-right corners is a box scored by the mean of the
  two, or -1 when their classes differ, their embeddings are more than `ae_threshold` apart or
  the box is inverted; the `num_dets` best pairs are returned."""
  tl = _top_points(_peaks(out['tl_heat'], kernel), out['tl_regr'], k)
  br = _top_points(_peaks(out['br_heat'], kernel), out['br_regr'], k)
  ct = _top_points(_peaks(out['ct_heat'], kernel), out['ct_regr'], k)
  tl_tag = out['tl_tag'].reshape(-1)[tl[1]]
  br_tag = out['br_tag'].reshape(-1)[br[1]]
  scores = (tl[0][:, None] + br[0][None, :]) / 2
  reject = ((tl[2][:, None] != br[2][None, :])
            | (jnp.abs(tl_tag[:, None] - br_tag[None, :]) > ae_threshold)
            | (br[3][None, :] < tl[3][:, None]) | (br[4][None, :] < tl[4][:, None]))
  scores = jnp.where(reject, -1.0, scores).reshape(-1)
  best, pairs = ops.top_k(scores, num_dets)
  i, j = pairs // k, pairs % k
  dets = jnp.stack([tl[3][i], tl[4][i], br[3][j], br[4][j], best, tl[0][i], br[0][j],
                    tl[2][i].astype(jnp.float32)], axis=1)
  centres = jnp.stack([ct[3], ct[4], ct[2].astype(jnp.float32), ct[0]], axis=1)
  return dets, centres


# --- The centre check (host, in image pixels) ---------------------------------------------------

SMALL_AREA = 22500.0  # boxes up to 150 x 150 pixels take the central third, larger the fifth


def center_check(detections: np.ndarray, centres: np.ndarray) -> np.ndarray:
  """The authors' test-time check of corner pairs (both in image pixels): a box keeps its pair
  only when a centre keypoint of its class lies strictly inside its central region (the middle
  third of each side for boxes up to 150 x 150 pixels, the middle fifth above), its score then
  (2 x pair score + that centre's score) / 3, the first such centre in the centres' order
  (best first). `detections` (M, 8) as `decode_triplets` gives them (score -1: no pair),
  `centres` (K, 4) x, y, class, score. Returns the kept rows, best first."""
  dets = detections[detections[:, 4] > -1].copy()
  x1, y1, x2, y2 = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3]
  small = (x2 - x1) * (y2 - y1) <= SMALL_AREA
  n = np.where(small, 3.0, 5.0)
  near = np.where(small, 2.0, 3.0)  # weights of the near side: (2a + b) / 3, (3a + 2b) / 5
  far = n - near
  left, right = (near * x1 + far * x2) / n, (far * x1 + near * x2) / n
  top, bottom = (near * y1 + far * y2) / n, (far * y1 + near * y2) / n
  cx, cy, cls = centres[:, :1], centres[:, 1:2], centres[:, 2:3]
  inside = ((cx > left) & (cx < right) & (cy > top) & (cy < bottom)
            & (cls == dets[:, 7][None, :]))  # (K, M)
  found = inside.any(axis=0)
  first = inside.argmax(axis=0)
  dets[:, 4] = np.where(found, (2 * dets[:, 4] + centres[first, 3]) / 3, -1)
  dets = dets[found]
  return dets[np.argsort(-dets[:, 4], kind='stable')]


# --- Soft-NMS and the final detections (host, as the authors' test) ----------------------------

SOFT_NMS_SIGMA, SOFT_NMS_THRESHOLD = 0.5, 0.001  # the authors' soft_nms defaults
NMS_METHODS = ('nms', 'linear_soft_nms', 'exp_soft_nms')  # their `nms_algorithm` values


def soft_nms(boxes: np.ndarray, method: str = 'exp_soft_nms', iou_threshold: float = 0.5,
             sigma: float = SOFT_NMS_SIGMA, threshold: float = SOFT_NMS_THRESHOLD,
             weight_exp: float | None = None) -> np.ndarray:
  """The authors' soft-NMS of one class's boxes (N, 5: x1, y1, x2, y2, score; with
  `weight_exp`, N x 7: and the top-left and bottom-right corner scores), returning the whole
  array as their test reads it afterwards (it ignores the routine's kept count).

  In order: the best remaining box is swapped into the next place; every box after it that
  overlaps it (inclusive-pixel IoU, widths x2 - x1 + 1) has its score multiplied by
  exp(-IoU^2 / sigma) (`exp_soft_nms`), by 1 - IoU above `iou_threshold` (`linear_soft_nms`)
  or by 0 above it (`nms`); a box falling below `threshold` is overwritten by the last active
  row, which stays where it was as well, and the active count shrinks. So the returned rows
  are the selected boxes (best first, scores as selected) followed by the rows past the active
  count: copies of moved boxes with the score they had then, and boxes discarded last. Only
  the first five columns move (theirs). With `weight_exp` (their `soft_nms_merge`, the
  multi-scale test) each selected box becomes the average of itself and the boxes it
  overlaps, weighted by (1 - weight)^weight_exp times the corner scores (x1, y1 by the
  top-left one, x2, y2 by the bottom-right one), the corner scores read in place, which
  after a swap are the row's previous box's. All in float32 as theirs."""
  if method not in NMS_METHODS:
    raise ValueError(f'soft_nms: method expected one of {NMS_METHODS}, got {method!r}')
  merge = weight_exp is not None
  b = np.array(boxes[:, :7] if merge else boxes[:, :5], np.float32)
  n = len(b)
  one, nt, sig, thr = (np.float32(v) for v in (1.0, iou_threshold, sigma, threshold))
  i = 0
  while i < n:
    best = i + int(np.argmax(b[i:n, 4]))  # the first of equal scores, as their strict '<'
    b[[i, best], :5] = b[[best, i], :5]
    tx1, ty1, tx2, ty2 = b[i, :4]
    if merge:  # sums of x1, y1 (weights: top-left scores), x2, y2 (bottom-right), weights
      sums = np.array([tx1 * b[i, 5], ty1 * b[i, 5], tx2 * b[i, 6], ty2 * b[i, 6], b[i, 5],
                       b[i, 6]], np.float32)
    top_area = (tx2 - tx1 + one) * (ty2 - ty1 + one)
    pos = i + 1
    while pos < n:
      rest = b[pos:n]
      iw = np.minimum(tx2, rest[:, 2]) - np.maximum(tx1, rest[:, 0]) + one
      ih = np.minimum(ty2, rest[:, 3]) - np.maximum(ty1, rest[:, 1]) + one
      hit = (iw > 0) & (ih > 0)
      area = (rest[:, 2] - rest[:, 0] + one) * (rest[:, 3] - rest[:, 1] + one)
      with np.errstate(divide='ignore', invalid='ignore'):
        ov = iw * ih / (top_area + area - iw * ih)
      if method == 'exp_soft_nms':
        weight = np.exp((-(ov * ov) / sig).astype(np.float64)).astype(np.float32)
      elif method == 'linear_soft_nms':
        weight = np.where(ov > nt, one - ov, one)
      else:
        weight = np.where(ov > nt, np.float32(0), one)
      scores = np.where(hit, weight * rest[:, 4], rest[:, 4])
      low = hit & (scores < thr)
      k = int(np.argmax(low)) if low.any() else len(rest) - 1  # the last row looked at
      if merge:
        sums = _merge_sums(sums, rest[:k + 1][hit[:k + 1]], weight[:k + 1][hit[:k + 1]],
                           np.float32(weight_exp))
      b[pos:pos + k + 1, 4] = scores[:k + 1]
      if not low.any():
        break
      b[pos + k, :5] = b[n - 1, :5]  # the last active row copied over it (itself if the last)
      n -= 1
      pos += k  # the copied row is looked at next
    if merge:
      b[i, :4] = sums[:4] / sums[[4, 4, 5, 5]]
    i += 1
  return b


def _merge_sums(sums: np.ndarray, rows: np.ndarray, weight: np.ndarray,
                weight_exp: np.float32) -> np.ndarray:
  """`soft_nms`'s merging sums plus those of the overlapping `rows` (N x 7), added one row
  after another in float32 (their order)."""
  mw = (np.float32(1) - weight) ** weight_exp
  terms = np.stack([rows[:, 0] * rows[:, 5] * mw, rows[:, 1] * rows[:, 5] * mw,
                    rows[:, 2] * rows[:, 6] * mw, rows[:, 3] * rows[:, 6] * mw,
                    rows[:, 5] * mw, rows[:, 6] * mw], 1)
  return np.add.accumulate(np.concatenate([sums[None], terms]), axis=0, dtype=np.float32)[-1]


def final_detections(detections: np.ndarray, centres: np.ndarray, num_classes: int,
                     method: str = 'exp_soft_nms', iou_threshold: float = 0.5,
                     max_per_image: int = 100, weight_exp: float | None = None) -> np.ndarray:
  """One image's detections as the authors' test finishes them (image pixels): the centre check,
  per class soft-NMS (every row it returns; with `weight_exp` the merging one), then when there
  are more than `max_per_image` rows those scoring at least the `max_per_image`-th best (ties
  kept). Returns (M, 6): x1, y1, x2, y2, score, class, class by class."""
  kept = center_check(detections, centres)
  per_class = []
  for c in range(num_classes):
    rows = soft_nms(kept[kept[:, 7] == c, :7], method, iou_threshold,
                    weight_exp=weight_exp)[:, :5]
    per_class.append(np.concatenate([rows, np.full((len(rows), 1), c, np.float32)], 1))
  out = np.concatenate(per_class) if per_class else np.zeros((0, 6), np.float32)
  if len(out) > max_per_image:
    kth = len(out) - max_per_image
    out = out[out[:, 4] >= np.partition(out[:, 4], kth)[kth]]
  return out


# --- Data: the authors' training crop and test canvas (host) ----------------------------------

# Their COCO colour statistics (BGR in [0, 1] there; RGB in [0, 255] here): the lighting noise's
# eigenvalues and eigenvectors (rows B, G, R; columns the eigenvectors).
LIGHTING_EIGVAL = np.array([0.2141788, 0.01817699, 0.00341571], np.float32)
LIGHTING_EIGVEC = np.array([[-0.58752847, -0.69563484, 0.41340352],
                            [-0.5832747, 0.00994535, -0.81221408],
                            [-0.56089297, 0.71832671, 0.41158938]], np.float32)
JITTER, LIGHTING_STD = 0.4, 0.1  # brightness / contrast / saturation factors 1 +- 0.4


def _border(border: int, size: int) -> int:
  """The authors' crop-centre margin: `border` halved until it leaves room in `size`."""
  i = 1
  while size - border // i <= border // i:
    i *= 2
  return border // i


def _paste_centred(image: np.ndarray, cx: int, cy: int, out_hw: tuple[int, int]) -> tuple:
  """The authors' crop: the `out_hw` window centred on (cx, cy) of `image` (half-sides floored,
  so an odd side loses its last row or column), pasted into black; returns the crop and where
  the image's (0, 0) lands in it (x, y)."""
  oh, ow = out_hw
  h, w = image.shape[:2]
  x0, x1 = max(cx - ow // 2, 0), min(cx + ow // 2, w)
  y0, y1 = max(cy - oh // 2, 0), min(cy + oh // 2, h)
  left, top = ow // 2 - (cx - x0), oh // 2 - (cy - y0)
  out = np.zeros((oh, ow, 3), np.uint8)
  out[top:top + y1 - y0, left:left + x1 - x0] = image[y0:y1, x0:x1]
  return out, left - x0, top - y0


def train_sample(sample: dict, rng: np.random.Generator, *, input_size: int,
                 scales: Sequence[float], border: int, flip: bool, color: bool,
                 max_boxes: int) -> dict:
  """The authors' training sample: a square window of `input_size` x a random scale, centred at
  a random point at least `_border` from the image's sides, pasted into black, resized to
  `input_size` (bilinear), boxes clipped to [0, size - 1] and dropped when empty, mirrored
  half the time (x -> size - x - 1, theirs), and the colour noise's random numbers (applied on
  the device: `color_noise`)."""
  image = sample['image']
  h, w = image.shape[:2]
  side = int(input_size * scales[int(rng.integers(len(scales)))])
  bw, bh = _border(border, w), _border(border, h)
  cx, cy = int(rng.integers(bw, w - bw)), int(rng.integers(bh, h - bh))
  crop, dx, dy = _paste_centred(image, cx, cy, (side, side))
  out = cv2.resize(crop, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
  r = np.float32(input_size / side)
  boxes = (np.asarray(sample['boxes'], np.float32).reshape(-1, 4)
           + np.array([dx, dy, dx, dy], np.float32)) * r
  boxes = np.clip(boxes, 0, input_size - 1)
  keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
  boxes, labels = boxes[keep], np.asarray(sample['labels'], np.int32)[keep]
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
    boxes = np.stack([input_size - boxes[:, 2] - 1, boxes[:, 1], input_size - boxes[:, 0] - 1,
                      boxes[:, 3]], axis=1)
  noise = np.zeros(7, np.float32)  # order of the three jitters (a permutation), factors, lighting
  if color:
    noise[:3] = rng.permutation(3)
    noise[3:6] = 1 + rng.uniform(-JITTER, JITTER, 3)
    noise[6:] = 1.0  # with lighting (a flag the device reads)
  lighting = rng.normal(0, LIGHTING_STD, 3).astype(np.float32) if color else np.zeros(3,
                                                                                    np.float32)
  result = {'image': np.ascontiguousarray(out), 'boxes': boxes, 'labels': labels,
            'image_id': np.int64(sample['image_id']), 'color_noise': noise,
            'lighting': lighting}
  return canvas.pad_boxes(result, max_boxes)


def color_noise(images: Array, noise: Array, lighting: Array) -> Array:
  """The authors' colour noise on (B, H, W, 3) RGB images in [0, 255] (floats), per image in the
  drawn order: brightness x a; contrast a x + (1 - a) x the grey mean; saturation a x +
  (1 - a) x grey, grey (BT.601, OpenCV's) and its mean taken before any of them; then the
  lighting noise eigvec (eigval * alpha) (x 255, RGB). `noise` (B, 7): order, three factors
  (brightness, contrast, saturation), a flag (0: no noise at all); `lighting` (B, 3)."""
  x = images.astype(jnp.float32)
  grey = x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114
  mean = jnp.mean(grey, axis=(1, 2))[:, None, None, None]
  grey = grey[..., None]
  a = noise[:, 3:6][:, None, None, None, :]
  ops = (lambda y: y * a[..., 0], lambda y: a[..., 1] * y + (1 - a[..., 1]) * mean,
         lambda y: a[..., 2] * y + (1 - a[..., 2]) * grey)
  y = x
  for step in range(3):
    which = noise[:, step][:, None, None, None]
    y = jnp.select([which == 0, which == 1], [ops[0](y), ops[1](y)], ops[2](y))
  bgr = jnp.einsum('ij,bj->bi', jnp.asarray(LIGHTING_EIGVEC),
                   jnp.asarray(LIGHTING_EIGVAL) * lighting)
  y = y + 255.0 * bgr[:, ::-1][:, None, None, :]
  on = noise[:, 6][:, None, None, None] > 0
  return jnp.where(on, y, x)


def eval_canvas_hw(h: int, w: int) -> tuple[int, int]:
  """The authors' test input for an h x w image: each side OR 127 (the next 128k - 1)."""
  return h | 127, w | 127


def eval_sample(sample: dict) -> dict:
  """The authors' test input: the image resized by its `test_scale` (1 when absent; bilinear,
  sides int(side x scale)) and centred (`_paste_centred` on its middle) in black on its canvas;
  `offset_xy` where its (0, 0) lies there, `image_hw` its (resized) size, `scale`."""
  image = sample['image']
  scale = float(sample.get('test_scale', 1.0))
  if scale != 1.0:
    h, w = image.shape[:2]
    image = cv2.resize(image, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_LINEAR)
  h, w = image.shape[:2]
  out, dx, dy = _paste_centred(image, w // 2, h // 2, eval_canvas_hw(h, w))
  return {'image': out, 'offset_xy': np.array([dx, dy], np.float32),
          'image_hw': np.array([h, w], np.int32), 'scale': np.float32(scale),
          'image_id': np.int64(sample['image_id'])}


class MultiScaleSource:
  """An evaluation split seen once per test scale (the authors' multi-scale test): item j is
  image j // S at scale `scales[j % S]` (its `test_scale`); `heights` and `widths` per item are
  the resized image's (they choose its canvas)."""

  def __init__(self, source: Any, scales: Sequence[float]):
    self.source, self.scales = source, tuple(float(s) for s in scales)
    self.split = source.split
    self.heights = np.asarray([int(h * s) for h in source.heights for s in self.scales])
    self.widths = np.asarray([int(w * s) for w in source.widths for s in self.scales])

  def __len__(self) -> int:
    return len(self.source) * len(self.scales)

  def __getitem__(self, j: int) -> dict:
    sample = dict(self.source[int(j) // len(self.scales)])
    sample['test_scale'] = self.scales[int(j) % len(self.scales)]
    return sample

  def describe(self) -> str:
    return f'{self.source.describe()}, each at the test scales {list(self.scales)}'


# --- The task ---------------------------------------------------------------------------------


def rescale_triplets(dets: Array, centres: Array, map_w: int, ratio: tuple[float, float],
                     offset_xy: Array, image_hw: Array) -> tuple[Array, Array]:
  """One image's decoded pairs and centres of the image and of its mirror (first and second
  halves) in output cells -> image pixels, as the authors' test: mirrored x -> map_w - x (their
  formula, no - 1); / ratio (cells per input pixel), minus where the image lies on its canvas;
  a pair with a side more than 5 pixels beyond the image loses its score (-1); all clipped to
  the image."""
  ry, rx = ratio
  h, w = image_hw[0].astype(jnp.float32), image_hw[1].astype(jnp.float32)
  n, k = dets.shape[0] // 2, centres.shape[0] // 2
  mirrored = jnp.arange(dets.shape[0]) >= n
  x1 = jnp.where(mirrored, map_w - dets[:, 2], dets[:, 0]) / rx - offset_xy[0]
  x2 = jnp.where(mirrored, map_w - dets[:, 0], dets[:, 2]) / rx - offset_xy[0]
  y1, y2 = dets[:, 1] / ry - offset_xy[1], dets[:, 3] / ry - offset_xy[1]
  outside = (x1 <= -5) | (x2 >= w + 5) | (y1 <= -5) | (y2 >= h + 5)
  score = jnp.where(outside, -1.0, dets[:, 4])
  boxes = [jnp.clip(x1, 0, w), jnp.clip(y1, 0, h), jnp.clip(x2, 0, w), jnp.clip(y2, 0, h)]
  dets = jnp.concatenate([jnp.stack(boxes + [score], 1), dets[:, 5:]], axis=1)
  cx = jnp.where(jnp.arange(centres.shape[0]) >= k, map_w - centres[:, 0], centres[:, 0])
  cx = jnp.clip(cx / rx - offset_xy[0], 0, w)
  cy = jnp.clip(centres[:, 1] / ry - offset_xy[1], 0, h)
  return dets, jnp.concatenate([cx[:, None], cy[:, None], centres[:, 2:]], axis=1)


class CenterNetMetric(metric.CocoBoxMetric):
  """COCO box AP of CenterNet's detections, finished on the host from the eval outputs' pairs
  and centres (`finish`: `final_detections`); results rounded as the authors' (coordinates and
  scores to 2 decimals), class by class. With `num_scales` S > 1 (a `MultiScaleSource`) item j
  is image j // S at scale j % S: an image is finished when all its scales have come, from
  the pairs of every scale (in scale order) and the centres of scale `centre_scale` (the
  authors' take them at scale 1 only)."""

  def __init__(self, finish: Callable[[np.ndarray, np.ndarray], np.ndarray], *args: Any,
               num_scales: int = 1, centre_scale: int = 0, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.finish = finish
    self.num_scales, self.centre_scale = num_scales, centre_scale
    self.partial: dict[int, dict[int, np.ndarray]] = {}  # image -> scale -> its scored pairs
    self.centres: dict[int, np.ndarray] = {}

  def update(self, outputs: dict) -> None:
    for i in np.flatnonzero(np.asarray(outputs['valid'])):
      image, scale = divmod(int(outputs['index'][i]), self.num_scales)
      pairs = np.asarray(outputs['pairs'][i])
      self.partial.setdefault(image, {})[scale] = pairs[pairs[:, 4] > -1]  # the rest: no box
      if scale == self.centre_scale:
        self.centres[image] = np.asarray(outputs['centres'][i])
      if len(self.partial[image]) == self.num_scales:
        parts = self.partial.pop(image)
        pairs = np.concatenate([parts[k] for k in range(self.num_scales)])
        self._add(image, int(outputs['image_id'][i]),
                  self.finish(pairs, self.centres.pop(image)))
    self._result = None

  def _add(self, image: int, image_id: int, dets: np.ndarray) -> None:
    self.rows[image] = [
        {'image_id': image_id, 'category_id': self.category_ids[int(d[5])],
         'bbox': [round(float(d[0]), 2), round(float(d[1]), 2),
                  round(float(d[2] - d[0]), 2), round(float(d[3] - d[1]), 2)],
         'score': round(float(d[4]), 2)} for d in dets]
    self.image_ids[image] = image_id

  def result(self) -> dict[str, Any]:
    if self.partial:
      raise RuntimeError(f'CenterNetMetric: {len(self.partial)} image(s) lack some of their '
                         f'{self.num_scales} test scales')
    return super().result()


class CenterNet(DetectionTask):
  """CenterNet keypoint triplets (`centernet_*` archs); reads config.model/data/eval. Training
  samples are the authors' random square crops at `data.input_size`; evaluation their test:
  the image centred on a canvas of sides | 127, the image and its mirror through the model,
  pairs decoded and rescaled on the device, then the centre check, soft-NMS and the 100 best on
  the host (the metric)."""
  # jax2onnx's graph optimizer did not finish on this network (over 5 minutes for the tiny
  # model at 64x64, in its redundant-transpose pass): export StableHLO or a SavedModel.
  onnx_export = False

  def __init__(self, config: Any, classes: tuple[Sequence[int], Sequence[str]] | None = None):
    if not config.model.arch.startswith('centernet_'):
      raise ConfigError(f'config.model.arch: CenterNet needs a centernet_* arch, got '
                        f'{config.model.arch!r}')
    super().__init__(config, classes)
    method = str(config.eval.nms_method)
    if method not in NMS_METHODS:
      raise ConfigError(f'config.eval.nms_method: expected one of {NMS_METHODS}, got '
                        f'{method!r}')
    h, w = (int(v) for v in config.data.input_size)
    if h != w:
      raise ConfigError(f'config.data.input_size={tuple(config.data.input_size)}: CenterNet '
                        'trains on square windows (the authors\' 511 x 511)')
    self.input_side = h
    self.test_scales = tuple(float(v) for v in config.eval.test_scales)
    if 1.0 not in self.test_scales or min(self.test_scales) <= 0:
      raise ConfigError(f'config.eval.test_scales={self.test_scales}: expected positive scales '
                        'including 1 (the centres are taken at scale 1, as the authors do)')

  # --- Data -----------------------------------------------------------------------------------

  def source(self, split: str) -> Any:
    """The split; an evaluation split once per test scale when there are several
    (`MultiScaleSource`)."""
    src = super().source(split)
    if split == self.config.data.train_split or len(self.test_scales) == 1:
      return src
    return MultiScaleSource(src, self.test_scales)

  def canvases(self, source: Any, train: bool) -> list[tuple[int, int]]:
    if train:
      side = self.input_side
      return [(side, side)] * len(source)
    return [eval_canvas_hw(int(h), int(w)) for h, w in zip(source.heights, source.widths)]

  def train_transform(self) -> Callable:
    d = self.config.data
    return functools.partial(train_sample, input_size=self.input_side,
                             scales=tuple(float(s) for s in d.rand_scales),
                             border=int(d.border), flip=bool(d.flip), color=bool(d.color),
                             max_boxes=int(d.max_boxes))

  def eval_transform(self) -> Callable:
    return eval_sample

  def augment(self, images: Array, batch: dict) -> Array:
    return color_noise(images, batch['color_noise'], batch['lighting'])

  # --- Training -------------------------------------------------------------------------------

  def loss(self, outputs: Any, batch: dict) -> tuple[Array, dict]:
    size = self.input_side
    out_hw = outputs['tl_heat'].shape[1:3]
    ratio = (out_hw[0] / size, out_hw[1] / size)
    targets = jax.vmap(lambda b, l, v: centernet_targets(
        b, l, v, outputs['tl_heat'].shape[-1], out_hw, ratio))(
            batch['boxes'], batch['labels'], batch['box_valid'])
    parts = centernet_loss(outputs, targets)
    return parts.pop('loss'), parts

  # --- Evaluation -----------------------------------------------------------------------------

  def decode_batch(self, outputs: dict) -> tuple[Array, Array]:
    """`decode_triplets` (config.eval's settings) of every image of a batch of outputs."""
    e = self.config.eval
    decode = functools.partial(decode_triplets, k=int(e.top_k),
                               ae_threshold=float(e.ae_threshold), kernel=int(e.nms_kernel),
                               num_dets=int(e.num_dets))
    return jax.vmap(decode)(outputs)

  def eval_outputs(self, apply_fn: Callable, images: Array, batch: dict) -> dict:
    """The image and its mirror through the model, each decoded (`decode_triplets`), rescaled
    to the image (`rescale_triplets`, then / its test scale): `pairs` (B, 2 x num_dets, 8) and
    `centres` (B, 2k, 4)."""
    b, in_h, in_w = images.shape[:3]
    out = apply_fn(jnp.concatenate([images, images[:, :, ::-1]]))
    map_h, map_w = out['tl_heat'].shape[1:3]
    dets, centres = self.decode_batch(out)
    pair = lambda x: jnp.concatenate([x[:b], x[b:]], axis=1)
    rescale = functools.partial(rescale_triplets, map_w=map_w,
                                ratio=(map_h / in_h, map_w / in_w))
    dets, centres = jax.vmap(rescale)(pair(dets), pair(centres), offset_xy=batch['offset_xy'],
                                      image_hw=batch['image_hw'])
    scale = batch['scale'][:, None, None]
    dets = jnp.concatenate([dets[..., :4] / scale, dets[..., 4:]], axis=-1)
    centres = jnp.concatenate([centres[..., :2] / scale, centres[..., 2:]], axis=-1)
    return {'pairs': dets, 'centres': centres, 'image_id': batch['image_id']}

  def final(self, pairs: np.ndarray, centres: np.ndarray, merge: bool = True) -> np.ndarray:
    """One image's detections from its pairs and centres (`final_detections`, config.eval);
    `merge`: with the merging soft-NMS when config.eval.merge_bbox says so."""
    e = self.config.eval
    weight_exp = float(e.weight_exp) if merge and bool(e.merge_bbox) else None
    return final_detections(pairs, centres, len(self.class_names), str(e.nms_method),
                            float(e.nms_iou), int(e.max_per_img), weight_exp)

  def new_metric(self, source: Any) -> CenterNetMetric:
    from hrnet_jax.data.sources.coco_detection import CocoDetection
    scales = source.scales if isinstance(source, MultiScaleSource) else (1.0,)
    base = source.source if isinstance(source, MultiScaleSource) else source
    annotations = base.annotation_file if isinstance(base, CocoDetection) else None
    return CenterNetMetric(self.final, self.category_ids, annotations, base.split,
                           num_scales=len(scales), centre_scale=scales.index(1.0))

  def protocol(self) -> str:
    e = self.config.eval
    scales = (f'at the scales {list(self.test_scales)} (centres from scale 1), '
              if len(self.test_scales) > 1 else '')
    merge = f', boxes merged (weight exponent {e.weight_exp})' if e.merge_bbox else ''
    return (f'image centred on a canvas of sides | 127 and mirrored, {scales}top {e.top_k} '
            f'corners and centres per map (3x3 peaks), pairs of one class with embeddings within '
            f'{e.ae_threshold}, kept when a centre of their class lies in the central third '
            f'(fifth above 150x150 px); {e.nms_method} (IoU {e.nms_iou}) per class{merge}; '
            f'{e.max_per_img} boxes per image')

  def serving_outputs(self, outputs: dict, input_hw: tuple[int, int],
                      postprocess: bool) -> dict[str, Array]:
    """Raw: the eight maps at ceil(side / 4) (`{tl,br,ct}_heat` logits, `{tl,br}_tag`,
    `{tl,br,ct}_regr`). Post-processed: each image decoded (`decode_triplets`, config.eval),
    in input pixels: `pairs` (B, num_dets, 8: x1, y1, x2, y2, score (-1: no pair), top-left
    and bottom-right scores, class) and `centres` (B, k, 4: x, y, class, score); no flip test.
    The centre check and soft-NMS are sequential host work: `final_detections(pairs[n],
    centres[n], num_classes)` in numpy finishes an image."""
    if not postprocess:
      return dict(outputs)
    map_h, map_w = outputs['tl_heat'].shape[1:3]
    dets, centres = self.decode_batch(outputs)
    px = jnp.asarray([input_hw[1] / map_w, input_hw[0] / map_h], jnp.float32)  # per output cell
    return {'pairs': jnp.concatenate([dets[..., :4] * jnp.tile(px, 2), dets[..., 4:]], -1),
            'centres': jnp.concatenate([centres[..., :2] * px, centres[..., 2:]], -1)}

  # --- predict.py -----------------------------------------------------------------------------

  def prediction(self, samples: list[dict], outputs: dict) -> dict:
    """The image at scale 1 (the multi-scale test is eval.py's), best first."""
    dets = self.final(np.asarray(outputs['pairs'][0]), np.asarray(outputs['centres'][0]),
                      merge=False)
    dets = dets[np.argsort(-dets[:, 4], kind='stable')]
    return {'detections': [
        {'box': [float(d[0]), float(d[1]), float(d[2] - d[0]), float(d[3] - d[1])],
         'score': float(d[4]), 'class_id': int(d[5]),
         'class': self.class_names[int(d[5])]} for d in dets]}
