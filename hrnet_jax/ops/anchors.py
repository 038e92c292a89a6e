"""Anchor boxes as mmdetection v2's AnchorGenerator lays them out (and the v1 legacy layout of
the official HRNet-Object-Detection checkpoints). Anchors depend only on the feature map sizes,
so they are numpy constants of the compiled program."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def base_anchors(stride: int, scales: Sequence[float] = (8.0,),
                 ratios: Sequence[float] = (0.5, 1.0, 2.0), center_offset: float = 0.0,
                 legacy: bool = False) -> np.ndarray:
  """(A, 4) anchors of one position at the origin, ratio-major (index = ratio * len(scales) +
  scale): base size = stride, h = base * sqrt(ratio) * scale, w = base / sqrt(ratio) * scale,
  centred at center_offset * base. `legacy` (mmdetection v1, its LegacyAnchorGenerator in v2):
  centre (base - 1) / 2, corners at centre -+ (side - 1) / 2 (widths with +1), rounded."""
  base = float(stride)
  h_ratios = np.sqrt(np.asarray(ratios, np.float64))
  w_ratios = 1.0 / h_ratios
  scales = np.asarray(scales, np.float64)
  ws = (base * w_ratios[:, None] * scales[None, :]).reshape(-1)
  hs = (base * h_ratios[:, None] * scales[None, :]).reshape(-1)
  if legacy:
    c = (base - 1.0) / 2.0
    out = np.round(np.stack([c - 0.5 * (ws - 1), c - 0.5 * (hs - 1), c + 0.5 * (ws - 1),
                             c + 0.5 * (hs - 1)], -1))
  else:
    c = center_offset * base
    out = np.stack([c - 0.5 * ws, c - 0.5 * hs, c + 0.5 * ws, c + 0.5 * hs], -1)
  return out.astype(np.float32)


def anchor_grid(shapes: Sequence[tuple[int, int]], strides: Sequence[int],
                scales: Sequence[float] = (8.0,), ratios: Sequence[float] = (0.5, 1.0, 2.0),
                center_offset: float = 0.0, legacy: bool = False) -> np.ndarray:
  """(sum H W A, 4) anchors of all levels, level after level, each in (y, x, anchor) order:
  anchor a at position (i, j) of a level of stride s is base_anchors(s)[a] + (s j, s i)."""
  out = []
  for (h, w), s in zip(shapes, strides):
    ys, xs = np.meshgrid(np.arange(h) * s, np.arange(w) * s, indexing='ij')
    shifts = np.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4).astype(np.float32)
    out.append((shifts + base_anchors(s, scales, ratios, center_offset, legacy)[None]
                ).reshape(-1, 4))
  return np.concatenate(out)


def valid_anchors(shapes: Sequence[tuple[int, int]], strides: Sequence[int], num_anchors: int,
                  image_hw: tuple[int, int] | np.ndarray) -> np.ndarray:
  """(sum H W A,) whether each anchor's position lies on the unpadded image (mmdetection's
  valid flags: a level's first ceil(side / stride) rows and columns); anchors over the
  padding take no part in training."""
  import jax.numpy as jnp  # image sizes are traced in the training step
  out = []
  for (h, w), s in zip(shapes, strides):
    vh = jnp.minimum(jnp.ceil(image_hw[0] / s), h)
    vw = jnp.minimum(jnp.ceil(image_hw[1] / s), w)
    rows = jnp.arange(h)[:, None] < vh
    cols = jnp.arange(w)[None, :] < vw
    out.append(jnp.repeat((rows & cols).reshape(-1), num_anchors))
  return jnp.concatenate(out)
