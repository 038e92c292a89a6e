"""Input-pipeline throughput: our grain pipelines against the official repositories' datasets.

    python benchmarks/pipeline.py [--official DIR] [--tasks seg pose cls face det] \
        [--workers 1 2] [--batches 40] [--repeats 3] [--data DIR] [--json OUT]

Per task the benchmark writes the same files in the real layout (a temporary directory, or
--data DIR, kept and reused), then times training batches of our pipeline (the recipe's source
and train transform through `hrnet_jax.data.pipeline.train_iterator`, N worker processes) and,
with --official, of the official repository's dataset class with its own transforms through
torch's DataLoader with the same N workers, batch size and files. Each run is a fresh process;
the start-up and the batches the workers buffer meanwhile are not timed; `--repeats` runs per
side, ours and official alternated, and the median reported (on a shared 2-core VM single runs
of a second or two varied by up to 25%). Reported: samples/s, samples/s per worker and
ours / official.

DIR holds checkouts of the official repositories under their repository names
(HRNet-Semantic-Segmentation, deep-high-resolution-net.pytorch, HRNet-Image-Classification,
HRNet-Facial-Landmark-Detection, HRNet-Object-Detection) and, for the last one's toolbox,
open-mmlab/mmcv at tag v0.2.16 under `mmcv`; their code is read from there, never copied here.
Their configs come from their own files (yacs, addict: `pip install yacs addict`). To run on
today's packages (numpy 2, Python 3.10+, no GPU, no compiled ops) the official side gets shims
that do not touch its data path: `np.int` and friends as the builtins, `Tensor.cuda` returning
the tensor, `collections.Sequence`, and stand-ins for modules only its evaluation, plots, other
datasets or compiled ops import; except for the face code, which calls two functions SciPy
removed in 1.3: those are re-created as SciPy 1.2 computed them (`_scipy_misc_image_functions`).

The tasks and their protocols (the same on both sides):
  seg   Cityscapes: 2048x1024 PNG + labelIds PNG, random scale 0.5-2.0, crop 512x1024, flip
  pose  COCO keypoints: 640x480 JPEG, affine crop to 256x192 (scale, rotation, half body, flip),
        Gaussian targets 64x48
  cls   ImageNet folders: 500x375 JPEG, random-resized crop 224, flip
  face  300W: 640x480 JPEG and the official CSV, crop 256x256 (scale, rotation, flip), Gaussian
        targets 64x64 for 68 points
  det   COCO instances: 640x480 JPEG, resize to 1333x800 keeping aspect, flip, pad to /32
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
OFFICIAL = {'seg': 'HRNet-Semantic-Segmentation', 'pose': 'deep-high-resolution-net.pytorch',
            'cls': 'HRNet-Image-Classification', 'face': 'HRNet-Facial-Landmark-Detection',
            'det': 'HRNet-Object-Detection'}
CONFIGS = {'seg': 'configs/seg_cityscapes.py', 'pose': 'configs/pose_coco.py',
           'cls': 'configs/cls_imagenet.py', 'face': 'configs/face_300w.py',
           'det': 'configs/det_coco_faster_rcnn.py'}
BATCH = {'seg': 4, 'pose': 16, 'cls': 16, 'face': 16, 'det': 2}
# Images per task (file names), and how many distinct ones behind them (the rest hard links): a
# split of realistic length for the samplers (grain's index shuffle costs 400 us per index over
# 72 samples, 15 us over 2400, 4 us over COCO's 150k people), few bytes on disk.
FILES = {'seg': 600, 'pose': 800, 'cls': 2400, 'face': 2400, 'det': 1200}
DISTINCT = {'seg': 12, 'pose': 24, 'cls': 48, 'face': 24, 'det': 24}


# --- Files in the real layouts ------------------------------------------------------------------


def _photo(rng: np.random.Generator, h: int, w: int, noise: float) -> np.ndarray:
  """A uint8 BGR image of smooth colour fields, shapes and fine noise, the noise chosen so the
  files are about the size of the real datasets' (decoding time follows the coded size)."""
  import cv2
  image = cv2.resize(rng.uniform(0, 255, (h // 32, w // 32, 3)).astype(np.float32), (w, h),
                     interpolation=cv2.INTER_CUBIC)
  for _ in range(40):
    x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
    color = tuple(float(c) for c in rng.uniform(0, 255, 3))
    cv2.rectangle(image, (x, y), (x + int(rng.integers(8, w // 6)),
                                  y + int(rng.integers(8, h // 6))), color, -1)
  image += rng.normal(0, noise, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def _file(path: pathlib.Path, key: object, write, written: dict) -> None:
  """`write(path)` the first time `key` comes; later `path` is a hard link to that file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  if key in written:
    os.link(written[key], path)
  else:
    write(path)
    written[key] = path


def _jpeg(rng: np.random.Generator, h: int, w: int):
  """A writer of one h x w photo as a quality-90 JPEG (drawn from `rng` when called)."""
  import cv2
  return lambda path: cv2.imwrite(str(path), _photo(rng, h, w, 16), [cv2.IMWRITE_JPEG_QUALITY, 90])


def write_seg(root: pathlib.Path, n: int) -> str:
  import cv2
  rng = np.random.default_rng(0)
  lines, written = [], {}
  for i in range(n):
    city = f'city{i % 3}'
    name = f'{city}_{i:06d}_000019'
    img = root / 'leftImg8bit' / 'train' / city / f'{name}_leftImg8bit.png'
    lab = root / 'gtFine' / 'train' / city / f'{name}_gtFine_labelIds.png'
    k = i % DISTINCT['seg']
    _file(img, ('img', k), lambda p: cv2.imwrite(str(p), _photo(rng, 1024, 2048, 1.5)), written)
    _file(lab, ('lab', k), lambda p: cv2.imwrite(str(p), cv2.resize(
        rng.integers(0, 34, (16, 32)).astype(np.uint8), (2048, 1024),
        interpolation=cv2.INTER_NEAREST)), written)
    lines.append(f'{img.relative_to(root)} {lab.relative_to(root)}')
  (root / 'list').mkdir(exist_ok=True)
  (root / 'list' / 'train.lst').write_text('\n'.join(lines) + '\n')
  size = sum(p.stat().st_size for p in (root / 'leftImg8bit').rglob('*.png')) / n / 1e6
  return (f'{n} images 2048x1024 PNG ({size:.1f} MB each) with labelIds '
          f'({DISTINCT["seg"]} distinct)')


def _coco_image(root: pathlib.Path, image_id: int, h: int, w: int, rng: np.random.Generator,
                key: object, written: dict) -> dict:
  """Writes images/train2017/<id as 12 digits>.jpg (COCO's naming; a link for a `key` seen
  before); returns its record."""
  name = f'{image_id:012d}.jpg'
  _file(root / 'images' / 'train2017' / name, key, _jpeg(rng, h, w), written)
  return {'id': image_id, 'file_name': name, 'width': w, 'height': h}


def write_pose(root: pathlib.Path, n: int) -> str:
  rng = np.random.default_rng(0)
  (root / 'annotations').mkdir(parents=True, exist_ok=True)
  images, annotations, written = [], [], {}
  for i in range(n):
    image_id = 1000 + i
    images.append(_coco_image(root, image_id, 480, 640, rng, i % DISTINCT['pose'], written))
    for _ in range(3):
      w, h = rng.uniform(60, 200), rng.uniform(120, 400)
      x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
      kpts = np.stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17),
                       rng.choice([0, 1, 2], 17, p=[0.2, 0.2, 0.6])], 1)
      kpts[kpts[:, 2] == 0, :2] = 0
      annotations.append({'id': len(annotations) + 1, 'image_id': image_id, 'category_id': 1,
                          'bbox': [x, y, w, h], 'area': w * h, 'iscrowd': 0,
                          'num_keypoints': int((kpts[:, 2] > 0).sum()),
                          'keypoints': [float(v) for v in kpts.reshape(-1)]})
  from hrnet_jax.data.sources.coco import KEYPOINT_NAMES, SKELETON
  data = {'images': images, 'annotations': annotations,
          'categories': [{'id': 1, 'name': 'person', 'supercategory': 'person',
                          'keypoints': list(KEYPOINT_NAMES),
                          'skeleton': [[a + 1, b + 1] for a, b in SKELETON]}]}
  (root / 'annotations' / 'person_keypoints_train2017.json').write_text(json.dumps(data))
  size = sum(p.stat().st_size for p in (root / 'images').rglob('*.jpg')) / n / 1e3
  return (f'{n} images 640x480 JPEG ({size:.0f} kB each; {DISTINCT["pose"]} distinct), '
          f'{len(annotations)} people')


def write_cls(root: pathlib.Path, n: int) -> str:
  rng = np.random.default_rng(0)
  written = {}
  for i in range(n):
    k = i % DISTINCT['cls']
    h, w = (375, 500) if k % 3 else (500, 375)  # ImageNet's most common sizes
    _file(root / 'train' / f'n{i % 4:08d}' / f'img_{i:05d}.JPEG', k, _jpeg(rng, h, w), written)
  size = sum(p.stat().st_size for p in (root / 'train').rglob('*.JPEG')) / n / 1e3
  return (f'{n} images 500x375 / 375x500 JPEG ({size:.0f} kB each; {DISTINCT["cls"]} '
          f'distinct) in 4 class folders')


def write_face(root: pathlib.Path, n: int) -> str:
  """300W: images and the official CSV (image_name, scale, center_w, center_h, 68 x,y)."""
  rng = np.random.default_rng(0)
  (root / 'images').mkdir(parents=True, exist_ok=True)
  header = ['image_name', 'scale', 'center_w', 'center_h']
  header += [f'{a}{i}' for i in range(68) for a in 'xy']
  rows, written = [','.join(header)], {}
  for i in range(n):
    name = f'face_{i:04d}.jpg'
    _file(root / 'images' / name, i % DISTINCT['face'], _jpeg(rng, 480, 640), written)
    scale = rng.uniform(1.0, 2.0)  # face size / 200 px, as 300W's
    cx, cy = rng.uniform(220, 420), rng.uniform(200, 280)
    pts = np.stack([rng.uniform(cx - 70 * scale, cx + 70 * scale, 68),
                    rng.uniform(cy - 70 * scale, cy + 70 * scale, 68)], 1)
    rows.append(','.join([name, f'{scale:.4f}', f'{cx:.3f}', f'{cy:.3f}']
                         + [f'{v:.3f}' for v in pts.reshape(-1)]))
  (root / 'face_landmarks_300w_train.csv').write_text('\n'.join(rows) + '\n')
  size = sum(p.stat().st_size for p in (root / 'images').rglob('*.jpg')) / n / 1e3
  return (f'{n} images 640x480 JPEG ({size:.0f} kB each; {DISTINCT["face"]} distinct), one '
          f'face of 68 points each')


def write_det(root: pathlib.Path, n: int) -> str:
  """COCO instances: 640x480 JPEG (every third portrait), 7 boxes of 3 categories each."""
  rng = np.random.default_rng(0)
  (root / 'annotations').mkdir(parents=True, exist_ok=True)
  images, annotations, written = [], [], {}
  for i in range(n):
    image_id = 2000 + i
    k = i % DISTINCT['det']
    h, w = (480, 640) if k % 3 else (640, 480)
    images.append(_coco_image(root, image_id, h, w, rng, k, written))
    for _ in range(7):
      bw, bh = rng.uniform(20, w / 2), rng.uniform(20, h / 2)
      x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
      annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                          'category_id': int(rng.choice([1, 3, 18])), 'bbox': [x, y, bw, bh],
                          'area': bw * bh, 'iscrowd': 0, 'segmentation': []})
  data = {'images': images, 'annotations': annotations,
          'categories': [{'id': 1, 'name': 'person'}, {'id': 3, 'name': 'car'},
                         {'id': 18, 'name': 'dog'}]}
  (root / 'annotations' / 'instances_train2017.json').write_text(json.dumps(data))
  size = sum(p.stat().st_size for p in (root / 'images').rglob('*.jpg')) / n / 1e3
  return (f'{n} images 640x480 / 480x640 JPEG ({size:.0f} kB each; {DISTINCT["det"]} '
          f'distinct), {len(annotations)} boxes')


WRITERS = {'seg': write_seg, 'pose': write_pose, 'cls': write_cls, 'face': write_face,
           'det': write_det}


# --- One timed run (a child process) ------------------------------------------------------------


def _time_batches(it, batches: int, workers: int) -> float:
  """Seconds for `batches` batches in the steady state: first the start-up and what the workers
  had buffered meanwhile (both loaders hold 2 batches per worker) are taken untimed."""
  for _ in range(3 + 2 * workers):
    next(it)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return time.perf_counter() - start


def run_ours(task_name: str, root: str, workers: int, batches: int) -> float:
  from absl import flags
  flags.FLAGS.mark_as_parsed()  # grain's workers read their flags' defaults
  from hrnet_jax import cli
  from hrnet_jax.data import pipeline
  from hrnet_jax.tasks import get_task
  config = cli.load_config(CONFIGS[task_name])
  config.data.root = root
  config.data.eval_split = config.data.train_split  # only the training files are written
  task = get_task(config)
  source = task.source(config.data.train_split)
  it = pipeline.train_iterator(source, task.train_transform(), batch_size=BATCH[task_name],
                               seed=0, num_workers=workers,
                               groups=task.batch_groups(source, train=True))
  try:
    return _time_batches(it, batches, workers)
  finally:
    pipeline.close_iterator(it)


def _shim_official() -> None:
  """Today's packages for code written against numpy 1.1x with a GPU (see the docstring)."""
  import math
  import types
  import torch
  for name, value in (('int', int), ('float', float), ('bool', bool), ('object', object),
                      ('math', math)):
    if name not in vars(np):
      setattr(np, name, value)
  torch.Tensor.cuda = lambda self, *a, **k: self
  nms = types.ModuleType('nms')
  nms.nms = types.ModuleType('nms.nms')
  nms.nms.oks_nms = nms.nms.soft_oks_nms = None
  hdf5 = types.ModuleType('hdf5storage')  # the face code's COFW reader
  hdf5.loadmat = None
  sys.modules.update({'nms': nms, 'nms.nms': nms.nms, 'json_tricks': json, 'hdf5storage': hdf5})


def official_seg(checkout: pathlib.Path, root: str) -> object:
  sys.path.insert(0, str(checkout / 'lib'))
  from config import config  # the official repository's (yacs)
  config.defrost()
  config.merge_from_file(str(checkout / 'experiments' / 'cityscapes' /
                             'seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml'))
  import datasets  # the official repository's
  return datasets.cityscapes(
      root=root + '/', list_path='list/train.lst', num_samples=None,
      num_classes=config.DATASET.NUM_CLASSES, multi_scale=config.TRAIN.MULTI_SCALE,
      flip=config.TRAIN.FLIP, ignore_label=config.TRAIN.IGNORE_LABEL,
      base_size=config.TRAIN.BASE_SIZE, crop_size=tuple(config.TRAIN.IMAGE_SIZE[::-1]),
      downsample_rate=config.TRAIN.DOWNSAMPLERATE, scale_factor=config.TRAIN.SCALE_FACTOR)


def official_pose(checkout: pathlib.Path, root: str) -> object:
  sys.path.insert(0, str(checkout / 'lib'))
  import torchvision.transforms as T
  from config import cfg  # the official repository's (yacs)
  cfg.defrost()
  cfg.merge_from_file(str(checkout / 'experiments' / 'coco' / 'hrnet' /
                          'w32_256x192_adam_lr1e-3.yaml'))
  cfg.DATASET.ROOT = root
  import dataset  # the official repository's
  normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
  return dataset.coco(cfg, cfg.DATASET.ROOT, cfg.DATASET.TRAIN_SET, True,
                      T.Compose([T.ToTensor(), normalize]))


def official_cls(checkout: pathlib.Path, root: str) -> object:
  """Its tools/train.py builds the training set from torchvision (ImageFolder and its
  transforms), read here from its experiment file."""
  sys.path.insert(0, str(checkout / 'lib'))
  import torchvision.datasets as D
  import torchvision.transforms as T
  from config import config  # the official repository's (yacs)
  config.defrost()
  config.merge_from_file(str(checkout / 'experiments' /
                             'cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100.yaml'))
  normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
  return D.ImageFolder(os.path.join(root, 'train'), T.Compose([
      T.RandomResizedCrop(config.MODEL.IMAGE_SIZE[0]), T.RandomHorizontalFlip(), T.ToTensor(),
      normalize]))


def _scipy_misc_image_functions() -> None:
  """`scipy.misc.imresize` / `imrotate` (removed in SciPy 1.3), which the official face crop
  calls, as SciPy 1.2 computed them: the array byte-scaled to uint8 (its min to 0, max to 255,
  when not uint8 already), then PIL's resize / rotate, bilinear."""
  import scipy.misc
  from PIL import Image

  def to_image(arr):
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
      lo, hi = float(arr.min()), float(arr.max())
      scale = 255.0 / (hi - lo) if hi > lo else 1.0
      arr = ((arr - lo) * scale).clip(0, 255) + 0.5
      arr = arr.astype(np.uint8)
    return Image.fromarray(arr)

  scipy.misc.imresize = lambda arr, size, interp='bilinear', mode=None: np.asarray(
      to_image(arr).resize((int(size[1]), int(size[0])), resample=Image.BILINEAR))
  scipy.misc.imrotate = lambda arr, angle, interp='bilinear': np.asarray(
      to_image(arr).rotate(angle, resample=Image.BILINEAR))


def official_face(checkout: pathlib.Path, root: str) -> object:
  _scipy_misc_image_functions()
  sys.path.insert(0, str(checkout))
  from lib.config import config  # the official repository's (yacs)
  from lib.datasets import Face300W
  config.defrost()
  config.merge_from_file(str(checkout / 'experiments' / '300w' /
                             'face_alignment_300w_hrnet_w18.yaml'))
  config.DATASET.ROOT = os.path.join(root, 'images')
  config.DATASET.TRAINSET = os.path.join(root, 'face_landmarks_300w_train.csv')
  return Face300W(config, is_train=True)


def official_det(checkout: pathlib.Path, root: str) -> object:
  """The mmdetection v0.x of the release (its CocoDataset with the HRNetV2p-W32 Faster R-CNN
  config's training settings; the release reads zipped images, the plain-file reader is the
  alternative its config names) on mmcv 0.2.16, checked out beside it as `mmcv`."""
  import collections
  import collections.abc
  import types
  for name in ('Sequence', 'Mapping', 'Iterable'):  # moved in Python 3.10
    setattr(collections, name, getattr(collections.abc, name))
  ext = types.ModuleType('mmcv._ext')  # mmcv's compiled optical-flow warp, unused here
  ext.flow_warp_c = None
  version = types.ModuleType('mmdet.version')  # written by its setup.py
  version.__version__ = version.short_version = '0.6.0'
  plt = types.ModuleType('matplotlib.pyplot')  # its show_ann only
  sys.modules.update({'mmcv._ext': ext, 'mmdet.version': version, 'matplotlib.pyplot': plt,
                      'matplotlib': types.ModuleType('matplotlib')})
  # Its datasets import one pure function of mmdet.core, whose package imports every compiled
  # op: the two packages are entered without running their __init__.
  for name in ('mmdet.core', 'mmdet.core.evaluation'):
    package = types.ModuleType(name)
    package.__path__ = [str(checkout / name.replace('.', '/'))]
    sys.modules[name] = package
  sys.path[:0] = [str(checkout.parent / 'mmcv'), str(checkout)]
  import mmcv
  from mmdet.datasets import CocoDataset
  cfg = mmcv.Config.fromfile(str(checkout / 'configs' / 'hrnet' /
                                 'faster_rcnn_hrnetv2p_w32_1x.py'))
  train = dict(cfg.data.train)
  train.pop('type')
  train.update(ann_file=os.path.join(root, 'annotations', 'instances_train2017.json'),
               img_prefix=os.path.join(root, 'images', 'train2017') + '/',
               img_norm_cfg=dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                                 to_rgb=True))
  return CocoDataset(**train)


def run_official(task_name: str, root: str, workers: int, batches: int, official: str) -> float:
  _shim_official()
  import torch
  checkout = pathlib.Path(official) / OFFICIAL[task_name]
  code = checkout / ('mmdet' if task_name == 'det' else 'lib')
  if not code.is_dir():
    raise SystemExit(f'--official {official}: expected a checkout of {OFFICIAL[task_name]} '
                     f'at {checkout} (with {code.name}/)')
  ds = {'seg': official_seg, 'pose': official_pose, 'cls': official_cls,
        'face': official_face, 'det': official_det}[task_name](checkout, root)
  torch.manual_seed(0)
  if task_name == 'det':  # its own loader: aspect-grouped batches, DataContainer collation
    from mmdet.datasets import build_dataloader
    loader = build_dataloader(ds, BATCH[task_name], workers, num_gpus=1, dist=False,
                              persistent_workers=workers > 0)
  else:
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH[task_name], shuffle=True,
                                         num_workers=workers, drop_last=True,
                                         persistent_workers=workers > 0)

  def forever():
    while True:
      yield from loader
  return _time_batches(forever(), batches, workers)


# --- The driver ---------------------------------------------------------------------------------


def child(side: str, task_name: str, root: str, workers: int, batches: int,
          official: str | None) -> float:
  cmd = [sys.executable, __file__, '--_child', side, task_name, root, str(workers),
         str(batches), official or '']
  env = dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}',
             JAX_PLATFORMS='cpu')
  out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
  lines = [line for line in out.stdout.splitlines() if line.startswith('SECONDS ')]
  if out.returncode or not lines:
    raise SystemExit(f'{side} {task_name} with {workers} workers failed:\n{out.stderr[-3000:]}')
  return float(lines[-1].split()[1])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--official', help='directory of official repository checkouts')
  p.add_argument('--tasks', nargs='+', default=list(WRITERS), choices=list(WRITERS))
  p.add_argument('--workers', nargs='+', type=int, default=[1, 2])
  p.add_argument('--batches', type=int, default=40, help='timed batches per run')
  p.add_argument('--repeats', type=int, default=3,
                 help='runs per side and worker count (fresh processes); the median is reported')
  p.add_argument('--data', help='write (or reuse) the files here instead of a temporary dir')
  p.add_argument('--json', help='write the figures here')
  p.add_argument('--_child', nargs=6, help=argparse.SUPPRESS)
  args = p.parse_args()
  if args._child:
    side, task_name, root, workers, batches, official = args._child
    run = run_ours if side == 'ours' else (
        lambda *a: run_official(*a, official))
    print(f'SECONDS {run(task_name, root, int(workers), int(batches))}', flush=True)
    return

  base = pathlib.Path(args.data or tempfile.mkdtemp(prefix='pipeline_bench_'))
  results = {'cpu': _cpu(), 'cores': os.cpu_count(), 'tasks': {}}
  print(f'{"task":6} {"workers":>7} {"ours/s":>8} {"per wkr":>8} {"official/s":>10} '
        f'{"per wkr":>8} {"ours/off":>8}')
  for name in args.tasks:
    root = base / name
    if not (root / '.written').exists():
      root.mkdir(parents=True, exist_ok=True)
      (root / '.written').write_text(WRITERS[name](root, FILES[name]))
    rows = []
    for w in args.workers:
      n = args.batches * BATCH[name]
      ours_runs, off_runs = [], []
      for _ in range(args.repeats):  # alternated, so a slow spell of the machine hits both
        ours_runs.append(n / child('ours', name, str(root), w, args.batches, None))
        if args.official:
          off_runs.append(n / child('official', name, str(root), w, args.batches,
                                    args.official))
      ours = float(np.median(ours_runs))
      off = float(np.median(off_runs)) if off_runs else None
      rows.append({'workers': w, 'ours': ours, 'official': off,
                   'ratio': ours / off if off else None,
                   'ours_runs': ours_runs, 'official_runs': off_runs})
      print(f'{name:6} {w:7d} {ours:8.2f} {ours / w:8.2f} '
            + (f'{off:10.2f} {off / w:8.2f} {ours / off:7.2f}x' if off else ''), flush=True)
    results['tasks'][name] = {'files': (root / '.written').read_text(), 'batch': BATCH[name],
                              'timed_batches': args.batches, 'runs': rows}
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


def _cpu() -> str:
  try:
    for line in open('/proc/cpuinfo'):
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return 'unknown'


if __name__ == '__main__':
  main()
