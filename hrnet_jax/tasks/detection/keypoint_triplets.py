"""CenterNet's keypoint triplets in jit with fixed shapes: the training targets as the authors'
sampler builds them, and their losses.

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

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
GAUSSIAN_IOU = 0.3  # the authors' `gaussian_iou`: corners within this overlap of the box
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
  scores, idx = jax.lax.top_k(heat.transpose(2, 0, 1).reshape(-1), k)  # class-major, as NCHW
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
  best, pairs = jax.lax.top_k(scores, num_dets)
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
