"""ImageNet-style classification data: the ImageFolder layout, and TFDS `imagenet2012`.

Both yield `{'image': HxWx3 uint8 RGB, 'label': int32}`. Class indices are the sorted folder
names of the training split (for ImageNet: the WordNet ids n01440764 ... n15075141, the order of
the official releases and of TFDS), so a model trained on one source evaluates on the other.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any, Sequence

import numpy as np

from hrnet_jax.data.sources.reader import DataError, Source, read_image

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')  # compared lower-cased: ImageNet's .JPEG included

_HOW_FOLDER = ('Expected ROOT/{split}/{class_name}/*.{jpg,jpeg,png,JPEG}; class indices are the '
               'sorted folder names of ROOT/{train}. For ImageNet: extract ILSVRC2012_img_train.tar '
               '(one tar per class inside) into ROOT/train/<wnid>/, and sort the validation images '
               'into ROOT/val/<wnid>/ by their labels.')
_HOW_TFDS = ('Build it with hrnet_jax.data.sources.imagenet.prepare_tfds(manual_dir, data_dir), '
             'manual_dir holding ILSVRC2012_img_train.tar and/or ILSVRC2012_img_val.tar (from '
             'https://image-net.org/download-images).')


def read_class_names(path: str | os.PathLike, classes: Sequence[str]) -> list[str]:
  """Readable names of `classes` from a file of `<class> <name...>` lines (the layout of
  LOC_synset_mapping.txt: `n01440764 tench, Tinca tinca`)."""
  table = {}
  with open(path) as f:
    for number, line in enumerate(f, 1):
      if line.strip():
        key, _, name = line.strip().partition(' ')
        table[key] = name.strip() or key
  missing = [c for c in classes if c not in table]
  if missing:
    raise DataError(f'class names file {path}: no line for {len(missing)} class(es), e.g. '
                    f'{missing[:5]}; expected one `<class> <name>` line per class')
  return [table[c] for c in classes]


def folder_classes(root: str | os.PathLike, train_split: str = 'train') -> list[str]:
  """The sorted class folder names of the training split: class index -> folder name."""
  train_dir = pathlib.Path(root) / train_split
  if not train_dir.is_dir():
    raise DataError(f'ImageFolder: {train_dir} is not a directory (the class indices come from '
                    f'its sorted sub-folder names). {_HOW_FOLDER}')
  classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
  if not classes:
    raise DataError(f'ImageFolder: no class folders in {train_dir}. {_HOW_FOLDER}')
  return classes


def _class_names_file(data: Any, root: str) -> str | os.PathLike | None:
  """`data.class_names_file`; the embedded demo ships its own."""
  names_file = data.get('class_names_file') or None
  if data.name == 'imagenet_demo' and not names_file:
    return pathlib.Path(root) / 'class_names.txt'
  return names_file


class ImageFolder(Source):
  """`root/{split}/{class_name}/*.{jpg,jpeg,png}` (any case), images sorted by path.

  Files with other suffixes are not images and are left out (counted in `describe()`); a class
  folder of the split that the training split lacks, or one without images, is an error."""

  @classmethod
  def from_config(cls, data: Any, root: str, split: str) -> 'ImageFolder':
    return cls(root, split, train_split=data.train_split,
               class_names_file=_class_names_file(data, root))

  @classmethod
  def class_list(cls, data: Any, root: str) -> tuple[list[str], list[str]]:
    """(class keys, readable names) in class-index order, without listing any images."""
    classes = folder_classes(root, data.train_split)
    names_file = _class_names_file(data, root)
    return classes, (read_class_names(names_file, classes) if names_file else list(classes))

  def __init__(self, root: str | os.PathLike, split: str, *, train_split: str = 'train',
               class_names_file: str | os.PathLike | None = None):
    self.root = pathlib.Path(root)
    self.split = split
    self.classes = folder_classes(self.root, train_split)
    split_dir = self.root / split
    if not split_dir.is_dir():
      raise DataError(f'ImageFolder: split directory {split_dir} does not exist. {_HOW_FOLDER}')
    index = {c: i for i, c in enumerate(self.classes)}
    found = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    unknown = [c for c in found if c not in index]
    if unknown:
      raise DataError(f'ImageFolder: {len(unknown)} class folder(s) of {split_dir} are not in '
                      f'{self.root / train_split}, e.g. {[str(split_dir / c) for c in unknown[:3]]}'
                      '; every class must have a training folder (it fixes the class index)')
    self.paths: list[str] = []
    labels: list[int] = []
    self.skipped = 0
    for c in found:
      files = sorted(e.name for e in os.scandir(split_dir / c) if e.is_file())
      images = [f for f in files if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES]
      self.skipped += len(files) - len(images)
      if not images:
        raise DataError(f'ImageFolder: no images (*.jpg, *.jpeg, *.png) in {split_dir / c}')
      self.paths += [str(split_dir / c / f) for f in images]
      labels += [index[c]] * len(images)
    if not self.paths:
      raise DataError(f'ImageFolder: no class folders in {split_dir}. {_HOW_FOLDER}')
    self.labels = np.asarray(labels, np.int32)
    self.class_names = (read_class_names(class_names_file, self.classes) if class_names_file
                        else list(self.classes))
    self.names = [os.path.relpath(p, split_dir) for p in self.paths]

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    return {'image': read_image(self.paths[i]), 'label': self.labels[i]}

  def describe(self) -> str:
    classes = len(np.unique(self.labels))
    extra = f', {self.skipped} non-image files left out' if self.skipped else ''
    return (f'{len(self)} images of {classes} classes ({len(self.classes)} in training)'
            f'{extra}')


class ImageNetTFDS(Source):
  """TFDS `imagenet2012` (ArrayRecord), read with `tfds.data_source`: no TensorFlow needed.
  `data_dir` is the TFDS data directory; splits 'train' and 'val' (= 'validation')."""

  @classmethod
  def from_config(cls, data: Any, root: str, split: str) -> 'ImageNetTFDS':
    return cls(root, split, name=data.get('tfds_name', 'imagenet2012'),
               class_names_file=data.get('class_names_file') or None)

  @classmethod
  def class_list(cls, data: Any, root: str) -> tuple[list[str], list[str]]:
    """(class keys, readable names) from the dataset info of the training split, or of the
    evaluation split when only that one was built."""
    try:
      source = cls.from_config(data, root, data.train_split)
    except DataError:
      source = cls.from_config(data, root, data.eval_split)
    return list(source.classes), list(source.class_names)

  def __init__(self, data_dir: str | os.PathLike, split: str, *, name: str = 'imagenet2012',
               class_names_file: str | os.PathLike | None = None):
    import tensorflow_datasets as tfds
    self.split = {'val': 'validation'}.get(split, split)
    try:
      self._source = tfds.data_source(name, split=self.split, data_dir=os.fspath(data_dir),
                                      download=False)
    except Exception as e:  # TFDS raises several types for a missing or unbuilt dataset.
      raise DataError(f'TFDS {name} split {self.split!r} not found in {data_dir} '
                      f'({type(e).__name__}: {e}). {_HOW_TFDS}') from e
    label = self._source.dataset_info.features['label']
    self.classes = list(label.names)
    self.class_names = (read_class_names(class_names_file, self.classes) if class_names_file
                        else list(self.classes))

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict[str, np.ndarray]:
    record = self._source[i]
    image = np.asarray(record['image'], np.uint8)
    return {'image': image, 'label': np.int32(record['label'])}

  def describe(self) -> str:
    return f'{len(self)} images, {len(self.classes)} classes (TFDS {self.split})'


def prepare_tfds(manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
                 name: str = 'imagenet2012') -> None:
  """Builds TFDS `imagenet2012` as ArrayRecord from the official tars in `manual_dir`:
  ILSVRC2012_img_train.tar (1000 per-class tars inside, 138 GB) and ILSVRC2012_img_val.tar
  (50,000 JPEGs, 6.3 GB); either may be absent and its split is then skipped. Validation labels
  ship with TFDS. Building needs TensorFlow (`pip install 'hrnet-jax[tfds-build]'`); reading
  does not."""
  import importlib.util
  if importlib.util.find_spec('tensorflow') is None:  # TFDS needs it to build, not to read
    raise DataError('building the TFDS ImageNet dataset needs TensorFlow: '
                    "pip install 'hrnet-jax[tfds-build]'")
  import tensorflow_datasets as tfds
  manual = pathlib.Path(manual_dir)
  tars = ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')
  if not any((manual / t).is_file() for t in tars):
    raise DataError(f'ImageNet tars: neither {manual / tars[0]} nor {manual / tars[1]} exists. '
                    f'{_HOW_TFDS}')
  builder = tfds.builder(name, data_dir=os.fspath(data_dir), file_format='array_record')
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=os.fspath(manual)))
