"""Face alignment readers in the layouts of the official HRNet face release: CSV files for WFLW,
300W and AFLW, MATLAB .mat files for COFW.

Every sample: `image` (HxWx3 uint8 RGB), `landmarks` (N, 2 float32, pixel coordinates taken as
0-based, as the official loader does: it adds 1 before its 1-based transform), `center` (2,),
`scale` (2,: the crop's side / 200 px, i.e. the CSV scale x 1.25), `box_size` (AFLW's
normalizer; 0 elsewhere) and `index`.

CSV layouts (one header row; columns read by position, as the official loader does):
  WFLW, 300W:  image_name, scale, center_w, center_h, x0, y0, x1, y1, ...
  AFLW:        image_name, scale, box_size, center_w, center_h, x0, y0, ...
`scale` is the face size in units of 200 px. Images live under `<root>/<image_dir>/image_name`.

COFW (`COFW_{train,test}_color.mat`): the images `IsTr` / `IsT` (a cell array, some grey) and the
shapes `phisTr` / `phisT` (N x 87: 29 x, 29 y, 29 occlusion flags). The official files are MATLAB
v7.3 (HDF5, read with h5py); older v5 files are read with scipy. The crop is the landmarks'
bounding box: centre ((floor xmin + ceil xmax) / 2, ...), scale max(side) / 200, x1.25.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import pathlib
from typing import Any

import numpy as np

from hrnet_jax.data.sources.reader import DataError, KeypointSource, read_image

PADDING = 1.25  # the crop is 1.25 x the annotated face size


@dataclasses.dataclass(frozen=True)
class FaceDataset:
  """What differs between the face datasets: markup size, mirror pairs, the NME normalizer, the
  annotation layout, and the named subsets reported when evaluating a split."""
  name: str
  num_landmarks: int
  flip_pairs: tuple[tuple[int, int], ...]  # 0-based
  norm: tuple[int, int] | None  # inter-ocular landmark pair; None: the AFLW box size
  layout: str  # 'csv', 'csv_box' (AFLW) or 'mat' (COFW)
  subsets: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

  def annotation_name(self, split: str) -> str:
    if self.layout == 'mat':
      return f'COFW_{split}_color.mat'
    return f'face_landmarks_{self.name}_{split}.csv'


def _pairs_1based(*pairs: tuple[int, int]) -> tuple[tuple[int, int], ...]:
  return tuple((a - 1, b - 1) for a, b in pairs)


# The official release's mirror pairs (its WFLW table is 0-based, the others 1-based).
FLIP_PAIRS_WFLW = (
    (0, 32), (1, 31), (2, 30), (3, 29), (4, 28), (5, 27), (6, 26), (7, 25), (8, 24), (9, 23),
    (10, 22), (11, 21), (12, 20), (13, 19), (14, 18), (15, 17),  # contour
    (33, 46), (34, 45), (35, 44), (36, 43), (37, 42), (38, 50), (39, 49), (40, 48), (41, 47),
    (60, 72), (61, 71), (62, 70), (63, 69), (64, 68), (65, 75), (66, 74), (67, 73),  # eyes
    (55, 59), (56, 58),  # nostrils
    (76, 82), (77, 81), (78, 80), (87, 83), (86, 84), (88, 92), (89, 91), (95, 93),  # mouth
    (96, 97))  # pupils
FLIP_PAIRS_300W = _pairs_1based(
    (1, 17), (2, 16), (3, 15), (4, 14), (5, 13), (6, 12), (7, 11), (8, 10),
    (18, 27), (19, 26), (20, 25), (21, 24), (22, 23), (32, 36), (33, 35),
    (37, 46), (38, 45), (39, 44), (40, 43), (41, 48), (42, 47),
    (49, 55), (50, 54), (51, 53), (62, 64), (61, 65), (68, 66), (59, 57), (60, 56))
FLIP_PAIRS_COFW = _pairs_1based(
    (1, 2), (5, 7), (3, 4), (6, 8), (9, 10), (11, 12), (13, 15), (17, 18), (14, 16), (19, 20),
    (23, 24))
FLIP_PAIRS_AFLW = _pairs_1based((1, 6), (2, 5), (3, 4), (7, 12), (8, 11), (9, 10), (13, 15),
                                (16, 18))

WFLW_SUBSETS = {'largepose': 'test_largepose', 'expression': 'test_expression',
                'illumination': 'test_illumination', 'makeup': 'test_makeup',
                'occlusion': 'test_occlusion', 'blur': 'test_blur'}

DATASETS: dict[str, FaceDataset] = {
    'wflw': FaceDataset('wflw', 98, FLIP_PAIRS_WFLW, (60, 72), 'csv', {'test': WFLW_SUBSETS}),
    # 'valid' is the 300W full set: common (LFPW + HELEN test) + challenge (iBUG).
    '300w': FaceDataset('300w', 68, FLIP_PAIRS_300W, (36, 45), 'csv',
                        {'valid': {'common': 'valid_common', 'challenge': 'valid_challenge'}}),
    'cofw': FaceDataset('cofw', 29, FLIP_PAIRS_COFW, (8, 9), 'mat'),
    'aflw': FaceDataset('aflw', 19, FLIP_PAIRS_AFLW, None, 'csv_box',
                        {'test': {'frontal': 'test_frontal'}}),
}
# The embedded demo is in the 300W layout.
DATASETS['face_demo'] = dataclasses.replace(DATASETS['300w'], name='300w')


def dataset_info(name: str) -> FaceDataset:
  if name not in DATASETS:
    raise ValueError(f'config.data.name: unknown face dataset {name!r}; expected one of '
                     f'{", ".join(DATASETS)}')
  return DATASETS[name]


# --- CSV --------------------------------------------------------------------------------------


def _float(value: str, path: Any, row: int, column: str) -> float:
  try:
    out = float(value)
  except ValueError:
    raise DataError(f'{path}: row {row}, column {column!r}: expected a number, got '
                    f'{value!r}') from None
  if not math.isfinite(out):
    raise DataError(f'{path}: row {row}, column {column!r}: expected a finite number, got '
                    f'{value!r}')
  return out


def read_face_csv(path: str | os.PathLike, num_landmarks: int, box: bool = False
                  ) -> dict[str, np.ndarray]:
  """The rows of an official face CSV: `names`, `scale` (as written), `box_size` (AFLW, else 0),
  `center` (M, 2), `landmarks` (M, N, 2). Rows are numbered from 1 after the header."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f'face annotations {path} not found')
  fixed = ['image_name', 'scale'] + (['box_size'] if box else []) + ['center_w', 'center_h']
  width = len(fixed) + 2 * num_landmarks
  with open(path, newline='') as f:
    rows = [r for r in csv.reader(f) if r]
  # One header row, as the official files have; a first row with a numeric scale is data.
  header = None
  if rows and not _is_number(rows[0][1] if len(rows[0]) > 1 else ''):
    header, rows = rows[0], rows[1:]
  names_of = lambda j: (header[j] if header and j < len(header) else
                        (fixed[j] if j < len(fixed) else
                         f'{"xy"[(j - len(fixed)) % 2]}{(j - len(fixed)) // 2}'))
  names, scale, box_size, center, landmarks = [], [], [], [], []
  for i, row in enumerate(rows, start=1):
    if len(row) != width:
      raise DataError(f'{path}: row {i}: expected {width} columns ({", ".join(fixed)}, then '
                      f'{num_landmarks} x,y pairs), got {len(row)}')
    values = [_float(v, path, i, names_of(j)) for j, v in enumerate(row) if j > 0]
    names.append(row[0])
    scale.append(values[0])
    box_size.append(values[1] if box else 0.0)
    center.append(values[len(fixed) - 3:len(fixed) - 1])
    landmarks.append(values[len(fixed) - 1:])
    if scale[-1] <= 0 or (box and box_size[-1] <= 0):
      raise DataError(f'{path}: row {i}: scale and box_size must be positive, got '
                      f'{row[1:len(fixed) - 2]}')
  if not names:
    raise DataError(f'{path}: no faces listed')
  return {'names': np.asarray(names), 'scale': np.asarray(scale, np.float32),
          'box_size': np.asarray(box_size, np.float32),
          'center': np.asarray(center, np.float32).reshape(-1, 2),
          'landmarks': np.asarray(landmarks, np.float32).reshape(-1, num_landmarks, 2)}


def _is_number(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


# --- COFW .mat --------------------------------------------------------------------------------


def read_cofw_mat(path: str | os.PathLike) -> tuple[list[np.ndarray], np.ndarray]:
  """(images HxWx3 uint8 RGB, landmarks (M, 29, 2)) of a COFW .mat file (train or test keys)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f'COFW annotations {path} not found')
  pairs = (('IsTr', 'phisTr'), ('IsT', 'phisT'))
  import h5py
  if h5py.is_hdf5(path):  # MATLAB v7.3: column-major arrays, cells as object references
    with h5py.File(path, 'r') as f:
      keys = [p for p in pairs if p[0] in f and p[1] in f]
      if not keys:
        raise DataError(f'{path}: expected IsTr + phisTr or IsT + phisT, found {sorted(f)}')
      image_key, shape_key = keys[0]
      refs = np.asarray(f[image_key]).reshape(-1)
      images = [np.asarray(f[r]).T for r in refs]
      phis = np.asarray(f[shape_key]).T
  else:
    import scipy.io
    try:
      mat = scipy.io.loadmat(path)
    except Exception as e:  # noqa: BLE001 (scipy raises several kinds)
      raise DataError(f'{path}: not a readable MATLAB file ({e})') from None
    keys = [p for p in pairs if p[0] in mat and p[1] in mat]
    if not keys:
      raise DataError(f'{path}: expected IsTr + phisTr or IsT + phisT, found '
                      f'{sorted(k for k in mat if not k.startswith("__"))}')
    image_key, shape_key = keys[0]
    images = [np.asarray(x) for x in mat[image_key].reshape(-1)]
    phis = np.asarray(mat[shape_key])
  if phis.ndim != 2 or phis.shape[1] < 58 or len(phis) != len(images):
    raise DataError(f'{path}: {shape_key} must be (num images = {len(images)}) x 87 (29 x, 29 y, '
                    f'29 occlusion flags), got {phis.shape}')
  out = []
  for i, image in enumerate(images):
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3
                                                                and image.shape[2] != 3):
      raise DataError(f'{path}: {image_key} image {i}: expected HxW or HxWx3 uint8, got '
                      f'{image.shape} {image.dtype}')
    out.append(np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image)
  landmarks = np.stack([phis[:, :29], phis[:, 29:58]], axis=-1).astype(np.float32)
  return out, landmarks


def box_center_scale(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
  """COFW's crop from its landmarks: the centre of the outward-rounded bounding box and its
  longer side / 200 (before the 1.25 padding)."""
  x0, y0 = np.floor(landmarks.min(axis=0))
  x1, y1 = np.ceil(landmarks.max(axis=0))
  return (np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32),
          float(max(x1 - x0, y1 - y0)) / 200.0)


# --- The source -------------------------------------------------------------------------------


class FaceLandmarks(KeypointSource):
  """One split of a face dataset: annotations in memory, images read on access (COFW's are in
  the .mat file). The subclasses below fix the dataset (`LAYOUT`: points, mirror pairs,
  normalizer, file layout)."""
  LAYOUT: FaceDataset

  @classmethod
  def from_config(cls, data: Any, root: str, split: str) -> 'FaceLandmarks':
    return cls(root, split, image_dir=data.get('image_dir', 'images'),
               annotation=data.get('annotations', {}).get(split, ''))

  def __init__(self, root: str | os.PathLike, split: str, dataset: FaceDataset | str | None = None,
               *, image_dir: str = 'images', annotation: str = ''):
    if dataset is None:
      dataset = self.LAYOUT
    self.dataset = dataset_info(dataset) if isinstance(dataset, str) else dataset
    self.root, self.split = pathlib.Path(root), split
    self.image_root = self.root / image_dir
    self.annotation_file = self.root / (annotation or self.dataset.annotation_name(split))
    d = self.dataset
    if d.layout == 'mat':
      self.images, self.landmarks = read_cofw_mat(self.annotation_file)
      boxes = [box_center_scale(p) for p in self.landmarks]
      self.names = np.asarray([f'{split}/{i}' for i in range(len(self.images))])
      self.centers = np.stack([c for c, _ in boxes]).astype(np.float32)
      raw_scale = np.asarray([s for _, s in boxes], np.float32)
      self.box_sizes = np.zeros(len(self.images), np.float32)
    else:
      rows = read_face_csv(self.annotation_file, d.num_landmarks, box=d.layout == 'csv_box')
      self.images = None
      self.names, self.centers, self.landmarks = rows['names'], rows['center'], rows['landmarks']
      raw_scale, self.box_sizes = rows['scale'], rows['box_size']
    self.scales = np.repeat(raw_scale[:, None] * PADDING, 2, axis=1).astype(np.float32)

  def __len__(self) -> int:
    return len(self.landmarks)

  def __getitem__(self, i: int) -> dict[str, Any]:
    image = self.images[i] if self.images is not None else read_image(
        self.image_root / str(self.names[i]))
    return {'image': image, 'landmarks': self.landmarks[i], 'center': self.centers[i],
            'scale': self.scales[i], 'box_size': self.box_sizes[i], 'index': np.int32(i)}

  def norms(self) -> np.ndarray:
    """Per face, the NME normalizer: the inter-ocular distance, or AFLW's box size."""
    if self.dataset.norm is None:
      return self.box_sizes.astype(np.float64)
    a, b = self.dataset.norm
    return np.linalg.norm(self.landmarks[:, a] - self.landmarks[:, b], axis=-1).astype(np.float64)

  def subsets(self) -> dict[str, np.ndarray]:
    """Named subsets of this split (WFLW attributes, 300W common/challenge, AFLW frontal) whose
    list files exist beside the annotations: name -> indices into this split. Faces are matched
    by image name and landmarks; a listed face missing here is an error."""
    out = {}
    key = lambda name, pts: (str(name), tuple(np.round(pts, 2).reshape(-1).tolist()))
    index = {key(n, p): i for i, (n, p) in enumerate(zip(self.names, self.landmarks))}
    for name, split in self.dataset.subsets.get(self.split, {}).items():
      path = self.annotation_file.parent / self.dataset.annotation_name(split)
      if not path.is_file():
        continue
      rows = read_face_csv(path, self.dataset.num_landmarks, self.dataset.layout == 'csv_box')
      ids = []
      for r, (n, p) in enumerate(zip(rows['names'], rows['landmarks']), start=1):
        if key(n, p) not in index:
          raise DataError(f'{path}: row {r} ({n}) is not a face of {self.annotation_file}')
        ids.append(index[key(n, p)])
      out[name] = np.asarray(ids, np.int64)
    return out

  def describe(self) -> str:
    return f'{len(self)} faces ({self.annotation_file.name})'



class WFLW(FaceLandmarks):
  """WFLW, 98 points (the official release's CSV layout)."""
  LAYOUT = DATASETS['wflw']


class Face300W(FaceLandmarks):
  """300W, 68 points (the official release's CSV layout; also the embedded demo's)."""
  LAYOUT = DATASETS['300w']


class COFW(FaceLandmarks):
  """COFW, 29 points (COFW_{train,test}_color.mat)."""
  LAYOUT = DATASETS['cofw']


class AFLW(FaceLandmarks):
  """AFLW, 19 points (CSV with a face box size per face, the NME normalizer)."""
  LAYOUT = DATASETS['aflw']
