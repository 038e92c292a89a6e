"""Pure numpy/OpenCV sample transforms. Each takes a sample dict (and a numpy Generator where it
is random) and returns a new dict; none touches global state, so grain workers stay reproducible.

Normalization happens on the device (`normalize`), so batches travel as uint8.
"""

from __future__ import annotations

import fractions
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


def scaled_size(h, w, scale: float, base_size: int = 0):
  """(h, w) after the official multi-scale resize: the long side becomes
  int(base_size * scale + 0.5) and the other int(side * long / long_side + 0.5); with base_size 0
  each side becomes side x scale rounded half up, the scale read as the fraction it stands for
  (1.3 = 13/10). Exact integer arithmetic, the same for Python ints and traced int32 arrays (a
  square image counts as wide, as officially)."""
  static = isinstance(h, (int, np.integer))
  where = (lambda c, a, b: a if c else b) if static else _jnp_where
  if not base_size:
    frac = fractions.Fraction(scale).limit_denominator(10000)
    p, q = frac.numerator, frac.denominator
    size = lambda n: (2 * n * p + q) // (2 * q)
    return (int(size(h)), int(size(w))) if static else (size(h), size(w))
  long = int(base_size * scale + 0.5)
  # int(a * long / b + 0.5) == (2 * a * long + b) // (2 * b) for positive integers.
  other = lambda a, b: (2 * a * long + b) // (2 * b)
  taller = h > w
  out = where(taller, long, other(h, w)), where(taller, other(w, h), long)
  return (int(out[0]), int(out[1])) if static else out


def _jnp_where(c, a, b):
  import jax.numpy as jnp
  return jnp.where(c, a, b).astype(jnp.int32)


def draw_scale(rng: np.random.Generator, scale_range: Sequence[float], step: float = 0.0) -> float:
  """A training scale: uniform in `scale_range`, or with `step` (e.g. 0.1) one of lo, lo + step,
  ..., hi drawn uniformly, computed as lo + k / (1 / step) like the official 0.5 + k / 10."""
  lo, hi = float(scale_range[0]), float(scale_range[1])
  if not step:
    return float(rng.uniform(lo, hi))
  k = int(rng.integers(0, int(round((hi - lo) / step)) + 1))
  return lo + k / (1.0 / step)


def random_scale_crop_flip(sample: dict, rng: np.random.Generator, *, crop_hw: Sequence[int],
                           scale_range: Sequence[float] = (0.5, 2.0), scale_step: float = 0.0,
                           base_size: int = 0, resize_hw: Sequence[int] | None = None,
                           flip: bool = True, flip_swap: np.ndarray | None = None,
                           ignore_label: int = 255) -> dict:
  """The official segmentation augmentation: (optionally stretch to `resize_hw` first, as LIP),
  random scale (`scaled_size` with `base_size`), random crop (padding image 0 / label ignore at
  the bottom-right when the scaled image is smaller than the crop), random horizontal flip.

  The scale and crop are one affine warp of only the output window: equal to resizing the whole
  image and then cropping, at the cost of the crop alone (a 2048x1024 resize per sample would
  dominate). `flip_swap` is a 256-entry table applied to flipped labels (left/right classes).
  """
  image, label = sample['image'], sample['label']
  if resize_hw:
    size = (int(resize_hw[1]), int(resize_hw[0]))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
  h, w = label.shape
  ch, cw = crop_hw
  sh, sw = scaled_size(h, w, draw_scale(rng, scale_range, scale_step), base_size)
  sh, sw = max(1, sh), max(1, sw)
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


def segmentation_eval_sample(sample: dict, *, canvas_hw: Sequence[int] | None = None,
                             resize_hw: Sequence[int] | None = None,
                             ignore_label: int = 255) -> dict:
  """Eval-time: the image (stretched to `resize_hw` first when given, as LIP's protocol) and the
  untouched label, each at the top-left of a `canvas_hw` canvas (image 0 / label ignore) so that
  images of any size batch; `image_hw` and `size` record their own extents. Without a canvas
  both keep their size (datasets of one image size, and predict.py)."""
  image, label = sample['image'], sample['label']
  if resize_hw:
    image = cv2.resize(image, (int(resize_hw[1]), int(resize_hw[0])),
                       interpolation=cv2.INTER_LINEAR)
  image_hw, label_hw = image.shape[:2], label.shape
  if not canvas_hw:
    return {'image': image, 'label': label, 'image_hw': np.array(image_hw, np.int32),
            'size': np.array(label_hw, np.int32)}
  th, tw = int(canvas_hw[0]), int(canvas_hw[1])
  if max(image_hw[0], label_hw[0]) > th or max(image_hw[1], label_hw[1]) > tw:
    big = label_hw if label_hw[0] > th or label_hw[1] > tw else image_hw
    raise ValueError(f'an evaluation image of {big[0]}x{big[1]} does not fit '
                     f'config.data.eval_size {th}x{tw}; raise it to at least the largest image')
  canvas_h = image_hw[0] if resize_hw else th
  canvas_w = image_hw[1] if resize_hw else tw
  out_image = np.zeros((canvas_h, canvas_w, 3), np.uint8)
  out_label = np.full((th, tw), ignore_label, np.uint8)
  out_image[:image_hw[0], :image_hw[1]] = image
  out_label[:label_hw[0], :label_hw[1]] = label
  return {'image': out_image, 'label': out_label, 'image_hw': np.array(image_hw, np.int32),
          'size': np.array(label_hw, np.int32)}


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
    out = cv2.flip(out, 1)  # a tenth of the time of copying out[:, ::-1]; the same pixels
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
