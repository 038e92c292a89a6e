"""Detection data on canvases of a few fixed sizes, shared by the detection frameworks: images
resized keeping their aspect (to fit `scale` = (long, short) sides, mmcv's rule) and padded at
the bottom and right into a canvas from a small fixed set (`config.data.buckets`), or to the
next multiple of a size divisor; ground-truth boxes padded to `max_boxes` with a `box_valid`
mask. So only a few programs compile."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from hrnet_jax.data.sources.reader import DataError
from hrnet_jax.errors import ConfigError

SEMANTIC_STRIDE = 8  # HTC's semantic labels match the stride-8 level (mmdetection's SegRescale)
IGNORE_LABEL = 255  # semantic labels: unlabelled, and the canvas padding


# --- Sizes ------------------------------------------------------------------------------------


def rescale_factor(h: int, w: int, scale: Sequence[int]) -> float:
  """mmcv's keep-aspect factor: min(long / max(h, w), short / min(h, w))."""
  return min(max(scale) / max(h, w), min(scale) / min(h, w))


def rescale_size(h: int, w: int, scale: Sequence[int]) -> tuple[int, int]:
  """(h, w) resized keeping the aspect so that the long side fits scale[0] and the short side
  scale[1] (mmcv's rule: `rescale_factor`, sides rounded half up)."""
  factor = rescale_factor(h, w, scale)
  return int(h * factor + 0.5), int(w * factor + 0.5)


def canvas_size(resized_hw: tuple[int, int], buckets: Sequence[Sequence[int]],
                size_divisor: int = 0) -> tuple[int, int]:
  """The padded size of a resized image: the next multiple of `size_divisor` when it is > 0,
  else the first bucket (h, w) that holds it."""
  h, w = resized_hw
  if size_divisor:
    return -(-h // size_divisor) * size_divisor, -(-w // size_divisor) * size_divisor
  for bh, bw in buckets:
    if h <= bh and w <= bw:
      return int(bh), int(bw)
  raise ConfigError(f'config.data.buckets: no bucket holds a {h}x{w} image; buckets '
                    f'{[tuple(b) for b in buckets]}')


# --- Transforms -------------------------------------------------------------------------------


def resize_pad(sample: dict, scale: Sequence[int], canvas_hw: tuple[int, int],
               pad_value: np.ndarray, flip: bool = False, one_factor: bool = False,
               masks: bool = False, semantic: bool = False) -> dict:
  """The image resized keeping its aspect (bilinear), optionally mirrored, pasted at the top
  left of its canvas filled with `pad_value` (the mean colour: zero after normalization, as the
  release pads normalized images with zeros); its boxes scaled by the same x and y factors,
  clipped to the resized image, mirrored with it. `scale_xy`: the factors new / old side
  (mmdetection v2), or the one keep-aspect factor twice (`one_factor`, mmdetection v1). With
  `masks`, the sample's instance masks (N, H, W) go the same way (nearest-neighbour resize, as
  mmdetection's BitmapMasks.rescale), zero over the padding. With `semantic`, its label map
  (H, W) too, padded with IGNORE_LABEL, then every SEMANTIC_STRIDE-th pixel kept (a nearest
  1/8 rescale of the canvas, as mmdetection's SegRescale; later mmdetection versions also pad
  with 255, 2.0 padded with 0)."""
  image = sample['image']
  h, w = image.shape[:2]
  nh, nw = rescale_size(h, w, scale)
  resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
  if one_factor:
    factors = np.full(2, rescale_factor(h, w, scale), np.float32)
  else:
    factors = np.array([nw / w, nh / h], np.float32)
  boxes = np.asarray(sample['boxes'], np.float32).reshape(-1, 4) * np.tile(factors, 2)
  boxes = np.clip(boxes, 0, np.array([nw, nh, nw, nh], np.float32))
  if flip:
    resized = resized[:, ::-1]
    boxes = np.stack([nw - boxes[:, 2], boxes[:, 1], nw - boxes[:, 0], boxes[:, 3]], axis=1)
  ch, cw = canvas_hw
  canvas = np.empty((ch, cw, 3), np.uint8)
  canvas[:] = pad_value
  canvas[:nh, :nw] = resized
  out = {'image': canvas, 'boxes': boxes, 'labels': np.asarray(sample['labels'], np.int32),
         'image_hw': np.array([nh, nw], np.int32), 'scale_xy': factors,
         'image_id': np.int64(sample['image_id']), 'orig_hw': np.array([h, w], np.int32)}
  if masks:
    out['masks'] = np.zeros((len(sample['masks']), ch, cw), np.uint8)
    for k, mask in enumerate(sample['masks']):
      small = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_NEAREST)
      out['masks'][k, :nh, :nw] = small[:, ::-1] if flip else small
  if semantic:
    if ch % SEMANTIC_STRIDE or cw % SEMANTIC_STRIDE:
      raise ConfigError(f'a {ch}x{cw} canvas: semantic labels need sides divisible by '
                        f'{SEMANTIC_STRIDE} (config.data.buckets)')
    labels = np.full((ch, cw), IGNORE_LABEL, np.uint8)
    small = cv2.resize(sample['semantic'], (nw, nh), interpolation=cv2.INTER_NEAREST)
    labels[:nh, :nw] = small[:, ::-1] if flip else small
    out['semantic'] = labels[::SEMANTIC_STRIDE, ::SEMANTIC_STRIDE].copy()
  return out


def pad_boxes(out: dict, max_boxes: int, masks: bool = False) -> dict:
  """Boxes and labels padded to `max_boxes` rows, with `box_valid`; with `masks`, the masks too,
  their rows bit-packed ((max_boxes, H, ceil(W / 8)) uint8, np.packbits: an eighth of the bytes
  through the pipeline; the model unpacks them)."""
  n = len(out['boxes'])
  if n > max_boxes:
    raise DataError(f'image {out["image_id"]}: {n} boxes, more than config.data.max_boxes='
                    f'{max_boxes}; raise it')
  boxes = np.zeros((max_boxes, 4), np.float32)
  boxes[:n] = out['boxes']
  labels = np.full((max_boxes,), -1, np.int32)
  labels[:n] = out['labels']
  out = dict(out, boxes=boxes, labels=labels, box_valid=np.arange(max_boxes) < n)
  if masks:
    packed = np.packbits(out['masks'].astype(bool), axis=-1)
    out['masks'] = np.zeros((max_boxes,) + packed.shape[1:], np.uint8)
    out['masks'][:n] = packed
  return out


def train_canvas(h: int, w: int, scales: Sequence[Sequence[int]],
                 buckets: Sequence[Sequence[int]]) -> tuple[int, int]:
  """A training image's canvas: the bucket that holds it at the largest of the training scales,
  whichever scale a draw resizes it to (so all its draws share one batch group)."""
  sizes = [rescale_size(h, w, s) for s in scales]
  return canvas_size(tuple(int(v) for v in np.max(sizes, axis=0)), buckets)


def eval_canvas(h: int, w: int, scale: Sequence[int], buckets: Sequence[Sequence[int]],
                size_divisor: int) -> tuple[int, int]:
  return canvas_size(rescale_size(h, w, scale), buckets, size_divisor)


def train_sample(sample: dict, rng: np.random.Generator, *, scales: Sequence[Sequence[int]],
                  buckets: Sequence[Sequence[int]], pad_value: np.ndarray, flip: bool,
                  max_boxes: int, masks: bool = False, semantic: bool = False) -> dict:
  scale = scales[int(rng.integers(len(scales)))] if len(scales) > 1 else scales[0]
  canvas = train_canvas(*sample['image'].shape[:2], scales, buckets)
  out = resize_pad(sample, scale, canvas, pad_value, flip=flip and rng.random() < 0.5,
                   masks=masks, semantic=semantic)
  out.pop('orig_hw')
  return pad_boxes(out, max_boxes, masks)


def eval_sample(sample: dict, *, scale: Sequence[int], buckets: Sequence[Sequence[int]],
                 size_divisor: int, pad_value: np.ndarray, one_factor: bool = False) -> dict:
  canvas = eval_canvas(*sample['image'].shape[:2], scale, buckets, size_divisor)
  out = resize_pad(sample, scale, canvas, pad_value, one_factor=one_factor)
  return {k: out[k] for k in ('image', 'image_hw', 'scale_xy', 'image_id', 'orig_hw')}
