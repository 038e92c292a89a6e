"""COCO object detection: whole images with their boxes, as mmdetection v2's CocoDataset reads
them (the released FCOS-HRNet checkpoints were trained that way).

Layout (as released): `{root}/annotations/instances_{split}.json` and
`{root}/images/{split}/{file_name}`. Labels 0..K-1 are the file's categories sorted by COCO id
(the class order of the released 80-class checkpoints). Boxes `[x, y, w, h]` become
`[x, y, x + w, y + h]`; annotations outside the image, degenerate ones and crowd regions are left
out (COCOeval still reads the crowds from the annotation file), and so are, for training only,
images without any annotation or smaller than 32 pixels (an image whose annotations were all
left out stays: all background, as in mmdetection).

With `masks` (instance segmentation), each kept box also brings its instance mask, decoded as
mmdetection v2 decodes it (polygons and uncompressed RLE through pycocotools, merged into one
binary mask per annotation) when the sample is read. With `semantic` (Hybrid Task Cascade's
semantic branch), each image also brings its COCO-stuff label map, read from
`{root}/stuffthingmaps/{split}/{stem}.png` as mmdetection's recipe lays them out (one 8-bit
value per pixel: COCO category id - 1 for things, the stuff classes after them, 255 unlabelled).

`ImageFiles` runs a detector on a plain list of images (no ground truth).
"""

from __future__ import annotations

import collections
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from hrnet_jax.data.sources.coco import load_json
from hrnet_jax.data.sources.reader import (DataError, DetectionSource, read_image, read_label,
                                           require_paths)

MIN_TRAIN_SIZE = 32  # mmdetection's min_size for training images

# The 80 COCO categories (id, name): the classes of the released COCO detectors, for running one
# without the dataset at hand.
COCO_CATEGORIES = tuple(enumerate((
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', '', 'stop sign', 'parking meter', 'bench', 'bird', 'cat',
    'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', '', 'backpack',
    'umbrella', '', '', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard',
    'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', '', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl',
    'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut',
    'cake', 'chair', 'couch', 'potted plant', 'bed', '', 'dining table', '', '', 'toilet', '',
    'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster',
    'sink', 'refrigerator', '', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier',
    'toothbrush'), start=1))
COCO_CATEGORIES = tuple((i, n) for i, n in COCO_CATEGORIES if n)  # ids 12, 26, ... are unused


def annotation_path(root: str | os.PathLike, split: str) -> pathlib.Path:
  return pathlib.Path(root) / 'annotations' / f'instances_{split}.json'


def read_categories(path: pathlib.Path, data: dict[str, Any]) -> tuple[np.ndarray, tuple[str, ...]]:
  """(COCO ids, names) of the file's categories, sorted by id: label k is the k-th of them."""
  categories = data.get('categories') if isinstance(data, dict) else None
  if not categories:
    raise DataError(f'{path}: expected a non-empty "categories" list of {{"id", "name"}}')
  try:
    pairs = sorted((int(c['id']), str(c['name'])) for c in categories)
  except (KeyError, TypeError, ValueError):
    raise DataError(f'{path}: every category needs an integer "id" and a "name"') from None
  ids = [i for i, _ in pairs]
  if len(set(ids)) != len(ids):
    raise DataError(f'{path}: category ids repeat: {ids}')
  return np.asarray(ids, np.int64), tuple(n for _, n in pairs)


class CocoDetection(DetectionSource):
  """Random-access images: {'image' HxWx3 uint8 RGB, 'boxes' (N, 4) float32 x1y1x2y2, 'labels'
  (N,) int32, 'image_id' int64, with `masks` 'masks' (N, H, W) uint8, with `semantic`
  'semantic' (H, W) uint8}. Boxes of all images
  live in one array with per-image offsets, so the source pickles cheaply into grain workers."""

  @classmethod
  def from_config(cls, data: Any, root: str, split: str) -> 'CocoDetection':
    train = split == data.train_split
    return cls(root, split, train=train, masks=bool(getattr(data, 'masks', False)) and train,
               semantic=bool(getattr(data, 'semantic', False)) and train)

  @classmethod
  def categories(cls, data: Any, root: str | os.PathLike) -> tuple[np.ndarray, tuple[str, ...]]:
    """(COCO ids, names) from the evaluation split's file (the small one), so a task knows its
    classes before opening the training split; the 80 COCO categories when `root` is empty and
    the dataset is COCO itself (running a released detector without the data)."""
    if not root and data.name == 'coco_detection':
      return (np.asarray([i for i, _ in COCO_CATEGORIES], np.int64),
              tuple(n for _, n in COCO_CATEGORIES))
    path = annotation_path(root, data.eval_split)
    return read_categories(path, load_json(path, 'COCO annotation file'))

  def __init__(self, root: str | os.PathLike, split: str, *, train: bool = False,
               masks: bool = False, semantic: bool = False):
    self.root, self.split, self.train = pathlib.Path(root), split, train
    self.with_masks, self.with_semantic = masks, semantic
    if semantic:
      require_paths('COCO-stuff label maps', self.root, [f'stuffthingmaps/{split}'],
                    'Hybrid Task Cascade\'s semantic branch reads stuffthingmaps/{split}/<image '
                    'stem>.png (COCO-stuff); set config.data.semantic=False without it')
    require_paths('COCO detection', self.root,
                  [f'annotations/instances_{split}.json', f'images/{split}'],
                  'Expected the COCO 2017 layout: annotations/instances_{train,val}2017.json and '
                  'images/{train,val}2017/*.jpg.')
    self.annotation_file = annotation_path(root, split)
    path = self.annotation_file
    data = load_json(path, 'COCO annotation file')
    for key in ('images', 'annotations'):
      if not isinstance(data, dict) or key not in data:
        raise DataError(f'{path}: expected a COCO instances file with "{key}"')
    self.category_ids, self.class_names = read_categories(path, data)
    label_of = {int(c): k for k, c in enumerate(self.category_ids)}
    images = {im.get('id'): im for im in data['images']}
    for image_id, im in images.items():
      if not all(k in im for k in ('id', 'file_name', 'height', 'width')):
        raise DataError(f'{path}: image {image_id} needs "id", "file_name", "height" and "width"')

    # What the protocol leaves out, counted so that it can be reported.
    self.skipped = collections.Counter()
    per_image: dict[Any, list[tuple[list[float], int, Any]]] = {i: [] for i in images}
    annotated = set()  # images with any annotation, usable or not (mmdetection's filter)
    for ann in data['annotations']:
      im = images.get(ann.get('image_id'))
      if im is None:
        raise DataError(f'{path}: annotation {ann.get("id")} refers to unknown image_id '
                        f'{ann.get("image_id")}')
      annotated.add(im['id'])
      label = label_of.get(ann.get('category_id'))
      if label is None:
        raise DataError(f'{path}: annotation {ann.get("id")} has category_id '
                        f'{ann.get("category_id")}, not one of the file\'s categories')
      try:
        x, y, w, h = (float(v) for v in ann['bbox'])
      except (KeyError, TypeError, ValueError):
        raise DataError(f'{path}: annotation {ann.get("id")} needs a "bbox" [x, y, w, h]') from None
      width, height = im['width'], im['height']
      overlap_w = max(0.0, min(x + w, width) - max(x, 0.0))
      overlap_h = max(0.0, min(y + h, height) - max(y, 0.0))
      if overlap_w * overlap_h == 0:
        self.skipped['boxes outside the image'] += 1
      elif ann.get('area', w * h) <= 0 or w < 1 or h < 1:
        self.skipped['boxes under 1 pixel or of zero area'] += 1
      elif ann.get('iscrowd', 0):
        self.skipped['crowd'] += 1
      else:
        segmentation = None
        if masks:
          segmentation = ann.get('segmentation')
          if not isinstance(segmentation, (list, dict)) or not segmentation:
            raise DataError(f'{path}: annotation {ann.get("id")} needs a "segmentation" '
                            '(polygons or RLE) for instance masks')
        per_image[im['id']].append(([x, y, x + w, y + h], label, segmentation))

    image_ids, file_names, heights, widths = [], [], [], []
    boxes, labels, segmentations, offsets = [], [], [], [0]
    for image_id, im in images.items():
      objects = per_image[image_id]
      if train and image_id not in annotated:
        self.skipped['images without annotations'] += 1
        continue
      if train and min(im['width'], im['height']) < MIN_TRAIN_SIZE:
        self.skipped[f'images smaller than {MIN_TRAIN_SIZE}'] += 1
        continue
      image_ids.append(image_id)
      file_names.append(im['file_name'])
      heights.append(im['height'])
      widths.append(im['width'])
      boxes.extend(b for b, _, _ in objects)
      labels.extend(k for _, k, _ in objects)
      segmentations.extend(m for _, _, m in objects)
      offsets.append(len(boxes))
    self.image_ids = np.asarray(image_ids, np.int64)
    self.file_names = file_names
    self.names = file_names
    self.heights = np.asarray(heights, np.int32)
    self.widths = np.asarray(widths, np.int32)
    self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    self.labels = np.asarray(labels, np.int32)
    self.offsets = np.asarray(offsets, np.int64)
    self.num_boxes = np.diff(self.offsets).astype(np.int32)
    self.segmentations = segmentations if masks else None

  def describe(self) -> str:
    left_out = ', '.join(f'{n} {k}' for k, n in sorted(self.skipped.items())) or 'none'
    return (f'{len(self)} images, {len(self.boxes)} boxes of {len(self.class_names)} classes '
            f'(left out: {left_out})')

  def __len__(self) -> int:
    return len(self.file_names)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    a, b = self.offsets[i], self.offsets[i + 1]
    sample = {'image': read_image(self.root / 'images' / self.split / self.file_names[i]),
              'boxes': self.boxes[a:b].copy(), 'labels': self.labels[a:b].copy(),
              'image_id': self.image_ids[i]}
    if self.segmentations is not None:
      h, w = int(self.heights[i]), int(self.widths[i])
      sample['masks'] = np.zeros((b - a, h, w), np.uint8)
      for k, segmentation in enumerate(self.segmentations[a:b]):
        sample['masks'][k] = decode_segmentation(segmentation, h, w)
    if self.with_semantic:
      stem = pathlib.Path(self.file_names[i]).with_suffix('.png').name
      path = self.root / 'stuffthingmaps' / self.split / stem
      sample['semantic'] = read_label(path)
      if sample['semantic'].shape != sample['image'].shape[:2]:
        raise DataError(f'{path}: a {sample["semantic"].shape} label map for a '
                        f'{sample["image"].shape[:2]} image')
    return sample


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
  """A COCO annotation's `segmentation` as an (height, width) uint8 mask: polygons rasterized
  and merged, uncompressed RLE compressed first, compressed RLE decoded (pycocotools)."""
  from pycocotools import mask as mask_utils
  if isinstance(segmentation, list):
    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
  elif isinstance(segmentation.get('counts'), list):
    rle = mask_utils.frPyObjects(segmentation, height, width)
  else:
    rle = segmentation
  return mask_utils.decode(rle).astype(np.uint8)


class ImageFiles(DetectionSource):
  """Images to run a detector on, without ground truth: samples carry empty `boxes` and
  `labels`, so they go through the evaluation pipeline unchanged."""

  def __init__(self, paths: Sequence[str | os.PathLike], image_ids: Sequence[int],
               sizes_hw: Sequence[Sequence[int]], split: str = 'images'):
    sizes = np.asarray(sizes_hw, np.int32).reshape(-1, 2)
    if not len(paths) == len(image_ids) == len(sizes):
      raise DataError(f'ImageFiles: expected as many image_ids and sizes as paths, got '
                      f'{len(paths)} paths, {len(image_ids)} ids, {len(sizes)} sizes')
    self.split = split
    self.names = [os.fspath(p) for p in paths]
    self.image_ids = np.asarray(image_ids, np.int64)
    self.heights, self.widths = sizes[:, 0].copy(), sizes[:, 1].copy()
    self.num_boxes = np.zeros(len(sizes), np.int32)

  @classmethod
  def from_coco_json(cls, json_path: str | os.PathLike,
                     image_dir: str | os.PathLike) -> 'ImageFiles':
    """The `images` of any COCO-format file (e.g. person_keypoints_val2017.json), read from
    `image_dir / file_name`."""
    data = load_json(json_path, 'COCO annotation file')
    if not isinstance(data, dict) or not isinstance(data.get('images'), list):
      raise DataError(f'{json_path}: expected a COCO file with an "images" list')
    try:
      rows = [(im['file_name'], int(im['id']), (int(im['height']), int(im['width'])))
              for im in data['images']]
    except (KeyError, TypeError, ValueError):
      raise DataError(f'{json_path}: every image needs "id", "file_name", "height" and '
                      '"width"') from None
    image_dir = pathlib.Path(image_dir)
    return cls([image_dir / f for f, _, _ in rows], [i for _, i, _ in rows],
               [s for _, _, s in rows])

  def __len__(self) -> int:
    return len(self.names)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {'image': read_image(self.names[i]), 'boxes': np.zeros((0, 4), np.float32),
            'labels': np.zeros((0,), np.int32), 'image_id': self.image_ids[i]}
