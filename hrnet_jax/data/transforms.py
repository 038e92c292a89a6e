"""Pure numpy/OpenCV sample transforms. Each takes a sample dict (and a numpy Generator where it
is random) and returns a new dict; none touches global state, so grain workers stay reproducible.

Normalization happens on the device (`normalize`), so batches travel as uint8.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


def _scale_crop_matrix(scale_yx: tuple[float, float], offset_yx: tuple[int, int], flip: bool,
                       out_w: int) -> np.ndarray:
  """Source -> output affine of "resize by scale (cv2 pixel-centre rule), crop at offset, flip"."""
  sy, sx = scale_yx
  y0, x0 = offset_yx
  m = np.array([[sx, 0.0, 0.5 * sx - 0.5 - x0], [0.0, sy, 0.5 * sy - 0.5 - y0]])
  if flip:
    m[0] = -m[0]
    m[0, 2] += out_w - 1
  return m


def random_scale_crop_flip(sample: dict, rng: np.random.Generator, *, crop_hw: Sequence[int],
                           scale_range: Sequence[float] = (0.5, 2.0), flip: bool = True,
                           flip_swap: np.ndarray | None = None,
                           ignore_label: int = 255) -> dict:
  """Random scale, random crop (padding image 0 / label ignore at the bottom-right when the scaled
  image is smaller than the crop), random horizontal flip.

  Done as one affine warp of only the output window: equal to resizing the whole image and then
  cropping, at the cost of the crop alone (a 2048x1024 resize per sample would dominate).
  `flip_swap` is a 256-entry table applied to flipped labels (left/right classes).
  """
  image, label = sample['image'], sample['label']
  h, w = label.shape
  ch, cw = crop_hw
  s = rng.uniform(*scale_range)
  sh, sw = max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))
  y0 = int(rng.integers(0, max(sh, ch) - ch + 1))
  x0 = int(rng.integers(0, max(sw, cw) - cw + 1))
  do_flip = bool(flip and rng.random() < 0.5)
  m = _scale_crop_matrix((sh / h, sw / w), (y0, x0), do_flip, cw)
  out_image = cv2.warpAffine(image, m, (cw, ch), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
  out_label = cv2.warpAffine(label, m, (cw, ch), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_REPLICATE)
  # Outside the scaled image is padding: replicated borders above only keep edge pixels exact.
  valid_h, valid_w = min(ch, sh - y0), min(cw, sw - x0)
  cols = slice(cw - valid_w, None) if do_flip else slice(0, valid_w)
  pad_image = np.zeros_like(out_image)
  pad_label = np.full_like(out_label, ignore_label)
  pad_image[:valid_h, cols] = out_image[:valid_h, cols]
  pad_label[:valid_h, cols] = out_label[:valid_h, cols]
  if do_flip and flip_swap is not None:
    pad_label = flip_swap[pad_label]
  return {'image': pad_image, 'label': pad_label}


def fit_and_pad(sample: dict, size_hw: Sequence[int], ignore_label: int = 255) -> dict:
  """Eval-time: shrink (keeping the aspect ratio) only if larger than `size_hw`, then pad the
  bottom-right to `size_hw` with image 0 / label ignore, so that images of any size batch.
  `size` records the unpadded extent."""
  image, label = sample['image'], sample['label']
  h, w = label.shape
  th, tw = size_hw
  if h > th or w > tw:
    s = min(th / h, tw / w)
    nh, nw = max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))
    image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
    h, w = nh, nw
  out_image = np.zeros((th, tw, 3), np.uint8)
  out_label = np.full((th, tw), ignore_label, np.uint8)
  out_image[:h, :w] = image
  out_label[:h, :w] = label
  return {'image': out_image, 'label': out_label, 'size': np.array([h, w], np.int32)}


def flip_swap_table(pairs: Sequence[tuple[int, int]]) -> np.ndarray | None:
  """256-entry label table swapping each (a, b) pair; None when there is nothing to swap."""
  if not pairs:
    return None
  table = np.arange(256, dtype=np.uint8)
  for a, b in pairs:
    table[a], table[b] = b, a
  return table


def normalize(images, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
              dtype=np.float32):
  """uint8 NHWC -> normalized float. Runs on the device inside the jitted step (works on numpy
  and jax arrays alike)."""
  import jax.numpy as jnp
  x = jnp.asarray(images).astype(jnp.float32)
  x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
  return x.astype(dtype)


# --- Classification (ImageNet) -----------------------------------------------------------------


def _resize(image: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
  """Bilinear resize; area averaging when shrinking, the counterpart of PIL's antialiased
  bilinear that the official torchvision pipelines use."""
  h, w = image.shape[:2]
  oh, ow = int(out_hw[0]), int(out_hw[1])
  if (h, w) == (oh, ow):
    return image
  interpolation = cv2.INTER_AREA if oh * ow < h * w else cv2.INTER_LINEAR
  return cv2.resize(image, (ow, oh), interpolation=interpolation)


def random_resized_crop_box(h: int, w: int, rng: np.random.Generator,
                            area_range: Sequence[float] = (0.08, 1.0),
                            aspect_range: Sequence[float] = (3 / 4, 4 / 3),
                            tries: int = 10) -> tuple[int, int, int, int]:
  """(y0, x0, crop_h, crop_w) as torchvision's RandomResizedCrop draws it: area fraction uniform in
  `area_range`, aspect (w/h) log-uniform in `aspect_range`, `tries` draws that must fit the image,
  then the central crop of the largest allowed aspect as the fallback."""
  area = h * w
  log_lo, log_hi = np.log(aspect_range[0]), np.log(aspect_range[1])
  for _ in range(tries):
    target = area * rng.uniform(*area_range)
    aspect = np.exp(rng.uniform(log_lo, log_hi))
    cw = int(round(np.sqrt(target * aspect)))
    ch = int(round(np.sqrt(target / aspect)))
    if 0 < cw <= w and 0 < ch <= h:
      return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw
  ratio = w / h
  if ratio < min(aspect_range):
    cw, ch = w, int(round(w / min(aspect_range)))
  elif ratio > max(aspect_range):
    ch, cw = h, int(round(h * max(aspect_range)))
  else:
    ch, cw = h, w
  return (h - ch) // 2, (w - cw) // 2, ch, cw


def random_resized_crop_flip(sample: dict, rng: np.random.Generator, *, size_hw: Sequence[int],
                             area_range: Sequence[float] = (0.08, 1.0),
                             aspect_range: Sequence[float] = (3 / 4, 4 / 3),
                             flip: bool = True) -> dict:
  """ImageNet training augmentation: a random resized crop to `size_hw`, then a horizontal flip
  with probability 0.5. Keys other than the image pass through."""
  image = sample['image']
  y0, x0, ch, cw = random_resized_crop_box(image.shape[0], image.shape[1], rng, area_range,
                                           aspect_range)
  out = _resize(image[y0:y0 + ch, x0:x0 + cw], size_hw)
  if flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return dict(sample, image=np.ascontiguousarray(out))


def resize_center_crop(sample: dict, *, size_hw: Sequence[int], crop_fraction: float = 0.875
                       ) -> dict:
  """ImageNet evaluation: the shorter side resized to floor(min(size) / crop_fraction) (256 for
  224 crops), the other keeping the aspect ratio (truncated, as torchvision's Resize), then the
  central `size_hw` crop (offsets rounded as torchvision's CenterCrop)."""
  image = sample['image']
  h, w = image.shape[:2]
  th, tw = int(size_hw[0]), int(size_hw[1])
  short = int(np.floor(min(th, tw) / crop_fraction))
  if h <= w:
    nh, nw = short, int(short * w / h)
  else:
    nh, nw = int(short * h / w), short
  if nh < th or nw < tw:
    raise ValueError(f'resize_center_crop: {h}x{w} resized to {nh}x{nw} is smaller than the '
                     f'{th}x{tw} crop (crop_fraction {crop_fraction} must be <= 1)')
  image = _resize(image, (nh, nw))
  y0, x0 = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
  return dict(sample, image=np.ascontiguousarray(image[y0:y0 + th, x0:x0 + tw]))
