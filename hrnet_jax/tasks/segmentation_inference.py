"""Segmentation inference protocols: flip, multi-scale, sliding windows, inside jit.

The official releases score an image by summing, over scales, exp(logits) of the image resized
so that its long side is `base_size x scale`; each scale's logits come from one forward pass or
from windows of the crop size, the flipped pass is averaged in (left/right classes swapped back)
before the exp, and every per-scale map is upsampled bilinearly to the original size. Two window
rules exist (`windows`):

- 'clamp' (Cityscapes): scales <= 1 run the whole image; larger scales run windows with the last
  one moved back to end at the border. The image fills the batch: its size is static.
- 'pad' (every other dataset): windows start at multiples of the stride, and the image and edge
  windows are padded to the crop with black; a small image is one padded window. Images of any
  size share one program: each sits at the top-left of a canvas and its size travels as data
  (`image_hw`), so the resized sizes, the window count and the upsampling are per sample.

Resizing the input follows OpenCV's INTER_LINEAR (half-pixel centres, as the official code
resizes images with cv2); upsampling scores follows the model's `align_corners`.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hrnet_jax.data.transforms import scaled_size
from hrnet_jax.models.layers import resize_bilinear

Array = jax.Array
# The largest logit exponentiated: exp(80) ~ 5.5e34 stays finite in float32 even when summed over
# windows, flips and scales; trained models stay far below it.
MAX_LOGIT = 80.0


def window_starts(size: int, crop: int, stride: int) -> list[int]:
  """'clamp' rule: starts of windows of length `crop` every `stride`, the last moved back to end
  at `size`, so every position is covered (size >= crop)."""
  count = max(1, math.ceil((size - crop) / stride) + 1)
  return sorted({min(i * stride, size - crop) for i in range(count)})


def stride_of(crop: int, stride_rate: float) -> int:
  """The window stride, truncated as officially (int(480 * 2.0 / 3.0) = 320)."""
  return int(round(crop * stride_rate, 6))


def window_count(size, crop: int, stride: int):
  """'pad' rule: how many windows start at 0, stride, 2 stride, ... over a side of `size` padded
  to at least `crop` (ceil((max(size, crop) - crop) / stride) + 1; int or int32 array)."""
  if isinstance(size, int):
    return math.ceil((max(size, crop) - crop) / stride) + 1
  return (jnp.maximum(size, crop) - crop + stride - 1) // stride + 1


# ------------------------------------------------------------------------------------------------
# Bilinear resizing of a per-sample region (sizes as data)
# ------------------------------------------------------------------------------------------------


def _taps(out_canvas: int, in_len: Array, out_len: Array, align_corners: bool):
  """Per sample (rows of the result): the two source indices and the weight of the second for
  each output position, as PyTorch's `F.interpolate` (float32), and which positions are inside
  `out_len`."""
  f32 = jnp.float32
  dst = jnp.arange(out_canvas, dtype=f32)[None]
  n_in, n_out = in_len.astype(f32)[:, None], out_len.astype(f32)[:, None]
  if align_corners:
    src = dst * jnp.where(n_out > 1, (n_in - 1) / jnp.maximum(n_out - 1, 1), 0)
  else:
    src = jnp.maximum((n_in / n_out) * (dst + 0.5) - 0.5, 0)
  last = in_len[:, None].astype(jnp.int32) - 1
  i0 = jnp.minimum(jnp.floor(src).astype(jnp.int32), last)
  i1 = jnp.minimum(i0 + 1, last)
  w1 = jnp.clip(src - i0.astype(f32), 0, 1)
  return i0, i1, w1, dst < n_out


def resize_region(x: Array, out_canvas_hw: Sequence[int], in_hw: Array, out_hw: Array,
                  align_corners: bool = False) -> Array:
  """Bilinear resize of each sample's top-left region `in_hw` (N, 2) of x (N, H, W, C) to
  `out_hw` (N, 2), placed at the top-left of an `out_canvas_hw` canvas of zeros."""
  take = lambda a, idx, axis: jnp.take_along_axis(a, idx, axis=axis, mode='clip')
  i0, i1, w1, keep = _taps(int(out_canvas_hw[0]), in_hw[:, 0], out_hw[:, 0], align_corners)
  w1 = w1[:, :, None, None].astype(x.dtype)
  x = take(x, i0[:, :, None, None], 1) * (1 - w1) + take(x, i1[:, :, None, None], 1) * w1
  x = x * keep[:, :, None, None]
  i0, i1, w1, keep = _taps(int(out_canvas_hw[1]), in_hw[:, 1], out_hw[:, 1], align_corners)
  w1 = w1[:, None, :, None].astype(x.dtype)
  x = take(x, i0[:, None, :, None], 2) * (1 - w1) + take(x, i1[:, None, :, None], 2) * w1
  return x * keep[:, None, :, None]


def region_mask(canvas_hw: Sequence[int], hw: Array) -> Array:
  """(N, H, W, 1) bool: inside each sample's top-left `hw` region."""
  ys = jnp.arange(int(canvas_hw[0]))[None, :, None] < hw[:, 0, None, None]
  xs = jnp.arange(int(canvas_hw[1]))[None, None, :] < hw[:, 1, None, None]
  return (ys & xs)[..., None]


# ------------------------------------------------------------------------------------------------
# One window: forward, flip, exp
# ------------------------------------------------------------------------------------------------


def window_scores(forward: Callable[[Array], Array], x: Array, *, flip: bool = False,
                  flip_perm: np.ndarray | None = None, align_corners: bool = False) -> Array:
  """exp of the logits upsampled to the input size; with `flip`, of their average with the
  mirrored input's logits, mirrored back and with left/right classes swapped (`flip_perm`)."""
  size = x.shape[1:3]

  def logits(inp):
    out = forward(inp).astype(jnp.float32)
    if tuple(out.shape[1:3]) != tuple(size):
      out = resize_bilinear(out, size, align_corners=align_corners)
    return out

  out = logits(x)
  if flip:
    mirrored = logits(x[:, :, ::-1])[:, :, ::-1]
    if flip_perm is not None:
      mirrored = mirrored[..., np.asarray(flip_perm)]
    out = 0.5 * (out + mirrored)
  return jnp.exp(jnp.minimum(out, MAX_LOGIT))


# ------------------------------------------------------------------------------------------------
# The two protocols
# ------------------------------------------------------------------------------------------------


def infer_clamped(forward: Callable[[Array], Array], x: Array, *, scales: Sequence[float] = (1.0,),
                  base_size: int = 0, flip: bool = False, flip_perm: np.ndarray | None = None,
                  crop_hw: Sequence[int] | None = None, sliding: str = 'auto',
                  stride_rate: float = 1.0, align_corners: bool = False) -> Array:
  """'clamp' rule on a batch of same-size images: scores (N, H, W, K) summed over scales.

  `sliding`: 'auto' runs windows of `crop_hw` for scales above 1 (the official rule), 'always'
  or 'never'. Windows overlap by 1 - stride_rate and are averaged where they do.
  """
  if sliding not in ('auto', 'always', 'never'):
    raise ValueError(f"sliding must be 'auto', 'always' or 'never', got {sliding!r}")
  n, h, w, _ = x.shape
  one = lambda inp: window_scores(forward, inp, flip=flip, flip_perm=flip_perm,
                                  align_corners=align_corners)
  total = 0.0
  for s in scales:
    size = scaled_size(h, w, s, base_size)
    xs = x if size == (h, w) else resize_bilinear(x, size, align_corners=False)
    if crop_hw is not None and (sliding == 'always' or (sliding == 'auto' and s > 1.0)):
      scores = _clamped_windows(one, xs, tuple(crop_hw), stride_rate)
    else:
      scores = one(xs)
    if size != (h, w):
      scores = resize_bilinear(scores, (h, w), align_corners=align_corners)
    total = total + scores
  return total


def _clamped_windows(one: Callable, x: Array, crop_hw: tuple[int, int],
                     stride_rate: float) -> Array:
  n, h, w, _ = x.shape
  ch, cw = crop_hw
  ph, pw = max(h, ch), max(w, cw)
  if (ph, pw) != (h, w):  # only when the crop is larger than the image
    x = jnp.pad(x, ((0, 0), (0, ph - h), (0, pw - w), (0, 0)))
  total, count = None, np.zeros((ph, pw), np.float32)
  for y0 in window_starts(ph, ch, stride_of(ch, stride_rate)):
    for x0 in window_starts(pw, cw, stride_of(cw, stride_rate)):
      scores = one(x[:, y0:y0 + ch, x0:x0 + cw])
      if total is None:
        total = jnp.zeros((n, ph, pw, scores.shape[-1]), jnp.float32)
      total = total.at[:, y0:y0 + ch, x0:x0 + cw].add(scores)
      count[y0:y0 + ch, x0:x0 + cw] += 1
  return (total / jnp.asarray(count)[None, :, :, None])[:, :h, :w]


def infer_padded(forward: Callable[[Array], Array], x: Array, image_hw: Array, *,
                 scales: Sequence[float] = (1.0,), base_size: int = 0, flip: bool = False,
                 flip_perm: np.ndarray | None = None, crop_hw: Sequence[int],
                 stride_rate: float = 2 / 3, pad_value: Sequence[float] = (0.0, 0.0, 0.0),
                 align_corners: bool = False) -> Array:
  """'pad' rule on images of any size: x (N, H, W, 3) holds each image at the top-left, its size
  in `image_hw` (N, 2); returns scores (N, H, W, K) summed over scales, zero outside the image.

  Per scale, the static bound of the resized image fixes the window grid; windows beyond a
  sample's own count are computed but count for nothing.
  """
  n, h, w, _ = x.shape
  ch, cw = int(crop_hw[0]), int(crop_hw[1])
  sh, sw = stride_of(ch, stride_rate), stride_of(cw, stride_rate)
  pad = jnp.asarray(pad_value, x.dtype)
  total = 0.0
  for s in scales:
    bound = scaled_size(h, w, s, base_size) if not base_size else (int(base_size * s + 0.5),) * 2
    new_h, new_w = scaled_size(image_hw[:, 0], image_hw[:, 1], s, base_size)
    new_hw = jnp.stack([new_h, new_w], axis=1)
    rows, cols = window_count(bound[0], ch, sh), window_count(bound[1], cw, sw)
    canvas = ((rows - 1) * sh + ch, (cols - 1) * sw + cw)
    xs = resize_region(x, canvas, image_hw, new_hw)
    xs = jnp.where(region_mask(canvas, new_hw), xs, pad)
    starts = [(r * sh, c * sw) for r in range(rows) for c in range(cols)]
    crops = jnp.concatenate([xs[:, y:y + ch, x0:x0 + cw] for y, x0 in starts])
    scores = window_scores(forward, crops, flip=flip, flip_perm=flip_perm,
                           align_corners=align_corners)
    scores = scores.reshape(len(starts), n, ch, cw, scores.shape[-1])
    live_rows = window_count(new_h, ch, sh)[:, None]
    live_cols = window_count(new_w, cw, sw)[:, None]
    acc = jnp.zeros((n,) + canvas + (scores.shape[-1],), jnp.float32)
    count = jnp.zeros((n,) + canvas + (1,), jnp.float32)
    for k, (y, x0) in enumerate(starts):
      live = ((y // sh < live_rows) & (x0 // sw < live_cols)).astype(jnp.float32)  # (n, 1)
      acc = acc.at[:, y:y + ch, x0:x0 + cw].add(scores[k] * live[:, :, None, None])
      count = count.at[:, y:y + ch, x0:x0 + cw].add(live[:, :, None, None])
    mean = acc / jnp.maximum(count, 1.0)
    total = total + resize_region(mean, (h, w), new_hw, image_hw, align_corners)
  return total
