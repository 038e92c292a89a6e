"""Segmentation data: the Cityscapes label table, readers and their errors, transforms, the grain
pipeline's determinism, resumable state and worker processes, and the TFDS reader on zips in the
real layout."""

import os
import subprocess
import sys
import time
import zipfile

import cv2
import jax
import numpy as np
import pytest

from hrnet_jax.data import pipeline, transforms
from hrnet_jax.data.sources import DataError, cityscapes

# The official Cityscapes label definitions: (name, labelId, trainId); -1 = license plate.
OFFICIAL_LABELS = [
    ('unlabeled', 0, 255), ('ego vehicle', 1, 255), ('rectification border', 2, 255),
    ('out of roi', 3, 255), ('static', 4, 255), ('dynamic', 5, 255), ('ground', 6, 255),
    ('road', 7, 0), ('sidewalk', 8, 1), ('parking', 9, 255), ('rail track', 10, 255),
    ('building', 11, 2), ('wall', 12, 3), ('fence', 13, 4), ('guard rail', 14, 255),
    ('bridge', 15, 255), ('tunnel', 16, 255), ('pole', 17, 5), ('polegroup', 18, 255),
    ('traffic light', 19, 6), ('traffic sign', 20, 7), ('vegetation', 21, 8), ('terrain', 22, 9),
    ('sky', 23, 10), ('person', 24, 11), ('rider', 25, 12), ('car', 26, 13), ('truck', 27, 14),
    ('bus', 28, 15), ('caravan', 29, 255), ('trailer', 30, 255), ('train', 31, 16),
    ('motorcycle', 32, 17), ('bicycle', 33, 18), ('license plate', -1, 255)]


def test_label_mapping_equals_the_official_table():
  values = np.arange(256, dtype=np.uint8)
  got = cityscapes.to_train_ids(values)
  expected = np.full(256, 255)
  for _, label_id, train_id in OFFICIAL_LABELS:
    if label_id >= 0:
      expected[label_id] = train_id
  np.testing.assert_array_equal(got, expected)
  names = [n for n, _, t in sorted(OFFICIAL_LABELS, key=lambda x: x[2]) if t != 255]
  assert tuple(names) == cityscapes.CLASS_NAMES


@pytest.fixture(scope='module')
def demo_root(seg_root):
  return seg_root  # 16 train and 4 val scenes of 64x128


def test_folder_reader_on_the_demo_layout(demo_root):
  src = cityscapes.CityscapesFolder(demo_root, 'train')
  assert len(src) == 16
  sample = src[3]
  assert sample['image'].shape == (64, 128, 3) and sample['image'].dtype == np.uint8
  raw = cv2.imread(str(src.labels[3]), cv2.IMREAD_UNCHANGED)
  np.testing.assert_array_equal(sample['label'], cityscapes.to_train_ids(raw))
  assert set(np.unique(sample['label'])) <= set(range(19)) | {255}


def test_missing_root_lists_the_expected_paths(tmp_path):
  with pytest.raises(DataError) as e:
    cityscapes.CityscapesFolder(tmp_path / 'nowhere', 'train')
  assert 'leftImg8bit/train' in str(e.value) and 'gtFine/train' in str(e.value)
  assert 'gtFine_trainvaltest.zip' in str(e.value)


def test_unreadable_image_names_the_file(demo_root, tmp_path):
  import shutil
  root = tmp_path / 'broken'
  shutil.copytree(demo_root, root)
  src = cityscapes.CityscapesFolder(root, 'val')
  src.images[1].write_bytes(b'not a png')
  with pytest.raises(DataError, match=str(src.images[1].name)):
    src[1]


def test_scale_one_crop_is_an_exact_window_and_pads_bottom_right():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
  label = rng.integers(0, 19, (20, 30), dtype=np.uint8)
  for seed in range(20):
    out = transforms.random_scale_crop_flip({'image': image, 'label': label},
                                            np.random.default_rng(seed), crop_hw=(12, 40),
                                            scale_range=(1.0, 1.0), flip=True)
    # Height 20 > 12: some window rows; width 30 < 40: all columns plus 10 padded ones.
    padded_img = np.zeros((20, 40, 3), np.uint8)
    padded_img[:, :30] = image
    padded_lab = np.full((20, 40), 255, np.uint8)
    padded_lab[:, :30] = label
    matches = []
    for y0 in range(20 - 12 + 1):
      for flip in (False, True):
        win_i, win_l = padded_img[y0:y0 + 12], padded_lab[y0:y0 + 12]
        if flip:
          win_i, win_l = win_i[:, ::-1], win_l[:, ::-1]
        if np.array_equal(out['image'], win_i) and np.array_equal(out['label'], win_l):
          matches.append((y0, flip))
    assert len(matches) == 1, seed


def test_scaled_crop_matches_resize_then_crop():
  rng = np.random.default_rng(1)
  image = cv2.GaussianBlur(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), (5, 5), 0)
  label = np.repeat(np.repeat(rng.integers(0, 19, (8, 12), dtype=np.uint8), 5, 0), 5, 1)
  out = transforms.random_scale_crop_flip({'image': image, 'label': label},
                                          np.random.default_rng(0), crop_hw=(80, 120),
                                          scale_range=(2.0, 2.0), flip=False)
  big_i = cv2.resize(image, (120, 80), interpolation=cv2.INTER_LINEAR)
  big_l = cv2.resize(label, (120, 80), interpolation=cv2.INTER_NEAREST)
  assert np.abs(out['image'].astype(int) - big_i).mean() < 1.0
  assert (out['label'] == big_l).mean() > 0.97


def test_flip_swaps_left_right_labels():
  table = transforms.flip_swap_table(((14, 15), (16, 17)))
  np.testing.assert_array_equal(table[[14, 15, 16, 17, 3, 255]], [15, 14, 17, 16, 3, 255])
  np.testing.assert_array_equal(table[table], np.arange(256))


def take(it, n):
  return [next(it) for _ in range(n)]


def test_train_iterator_is_deterministic_and_resumes_exactly(demo_root):
  src = cityscapes.CityscapesFolder(demo_root, 'train')
  tf = transforms_partial()
  a = take(pipeline.train_iterator(src, tf, batch_size=4, seed=3), 6)  # crosses 2 epochs
  it = pipeline.train_iterator(src, tf, batch_size=4, seed=3)
  first = take(it, 3)
  state = it.get_state()
  resumed = pipeline.train_iterator(src, tf, batch_size=4, seed=3)
  resumed.set_state(state)
  b = first + take(resumed, 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])
    np.testing.assert_array_equal(x['label'], y['label'])
  c = take(pipeline.train_iterator(src, tf, batch_size=4, seed=4), 1)
  assert not np.array_equal(a[0]['image'], c[0]['image'])


def test_device_feed_hands_the_same_batches_and_resumes_at_the_first_unused(demo_root):
  """Batches read ahead onto the devices come out in the iterator's order, and the state saved
  after 3 steps (the host iterator being 2 batches further) resumes at the 4th."""
  from hrnet_jax.train import parallel
  from hrnet_jax.train.device_feed import DeviceFeed
  src = cityscapes.CityscapesFolder(demo_root, 'train')
  it = lambda: pipeline.train_iterator(src, transforms_partial(), batch_size=4, seed=3)
  plain = take(it(), 6)
  mesh = parallel.make_mesh()
  feed = DeviceFeed(it(), mesh, depth=2)
  first = take(feed, 3)
  assert len(feed._ahead) == 2  # read ahead, not yet used
  resumed = DeviceFeed(it(), mesh, depth=2)
  resumed.set_state(feed.get_state())
  for x, y in zip(plain, first + take(resumed, 3)):
    assert isinstance(y['image'], jax.Array)
    np.testing.assert_array_equal(x['image'], np.asarray(y['image']))
    np.testing.assert_array_equal(x['label'], np.asarray(y['label']))
  assert feed.take_waited() > 0 and feed.take_waited() == 0


def test_worker_processes_give_the_same_batches(demo_root):
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  src = cityscapes.CityscapesFolder(demo_root, 'train')
  a = take(pipeline.train_iterator(src, transforms_partial(), batch_size=2, seed=0), 3)
  b = take(pipeline.train_iterator(src, transforms_partial(), batch_size=2, seed=0,
                                   num_workers=2), 3)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x['image'], y['image'])


def test_hosts_read_disjoint_shards(demo_root):
  src = cityscapes.CityscapesFolder(demo_root, 'val')  # 4 samples
  ident = lambda s: {'label': s['label']}
  seen = []
  for host in range(3):
    batches = list(pipeline.eval_batches(src, ident, batch_size=1, process_index=host,
                                         process_count=3))
    assert len(batches) == 2  # ceil(ceil(4 / 3) / 1): every host steps equally
    for b in batches:
      if b['valid'][0]:
        seen.append(int(b['index'][0]))
      else:
        assert (b['label'] == 255).all()
  assert sorted(seen) == [0, 1, 2, 3]


def transforms_partial():
  import functools
  return functools.partial(transforms.random_scale_crop_flip, crop_hw=(32, 48))


def _png(array) -> bytes:
  ok, buf = cv2.imencode('.png', array)
  assert ok
  return buf.tobytes()


@pytest.mark.slow
def test_tfds_cityscapes_from_zips_in_the_real_layout(tmp_path, demo_root, tensorflow):
  manual = tmp_path / 'manual'
  manual.mkdir()
  with zipfile.ZipFile(manual / 'leftImg8bit_trainvaltest.zip', 'w') as zi, \
       zipfile.ZipFile(manual / 'gtFine_trainvaltest.zip', 'w') as zl:
    for split in ('train', 'val', 'test'):
      src = cityscapes.CityscapesFolder(demo_root, 'val' if split == 'test' else split)
      for i in range(2):
        image = cv2.imread(str(src.images[i]), cv2.IMREAD_COLOR)
        label = cv2.imread(str(src.labels[i]), cv2.IMREAD_UNCHANGED)
        city, name = src.images[i].parent.name, src.names[i]
        zi.writestr(f'leftImg8bit/{split}/{city}/{name}_leftImg8bit.png', _png(image))
        zl.writestr(f'gtFine/{split}/{city}/{name}_gtFine_labelIds.png', _png(label))
  cityscapes.prepare_tfds(manual, tmp_path / 'tfds')
  source = cityscapes.CityscapesTFDS(tmp_path / 'tfds', 'val')
  assert len(source) == 2
  folder = cityscapes.CityscapesFolder(demo_root, 'val')
  expected = {folder[i]['label'].tobytes(): folder[i]['image'] for i in range(2)}
  for i in range(2):
    s = source[i]
    assert s['label'].tobytes() in expected  # TFDS may reorder; contents must match exactly
    np.testing.assert_array_equal(s['image'], expected[s['label'].tobytes()])


def test_training_hosts_read_disjoint_shards(demo_root):
  src = cityscapes.CityscapesFolder(demo_root, 'train')  # 16 samples
  keep_label = lambda s, rng: {'label': s['label']}
  seen = []
  for host in range(2):
    it = pipeline.train_iterator(src, keep_label, batch_size=8, seed=0, process_index=host,
                                 process_count=2)
    labels = next(it)['label']
    seen.append({labels[i].tobytes() for i in range(8)})
  all_labels = {src[i]['label'].tobytes() for i in range(16)}
  assert seen[0] | seen[1] == all_labels and not seen[0] & seen[1]


def test_lip_training_stretches_first_then_flips_with_part_swaps():
  """LIP: image and label stretched to 20x20 (cv2, as officially), then scale 1 and a 20x20 crop:
  the output is the stretched pair, or its mirror with left/right parts swapped."""
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
  label = rng.integers(0, 20, (30, 50), dtype=np.uint8)
  big_i = cv2.resize(image, (20, 20), interpolation=cv2.INTER_LINEAR)
  big_l = cv2.resize(label, (20, 20), interpolation=cv2.INTER_NEAREST)
  table = transforms.flip_swap_table(((14, 15), (16, 17), (18, 19)))
  seen = set()
  for seed in range(12):
    out = transforms.random_scale_crop_flip(
        {'image': image, 'label': label}, np.random.default_rng(seed), crop_hw=(20, 20),
        scale_range=(1.0, 1.0), base_size=20, resize_hw=(20, 20), flip_swap=table)
    mirrored = not np.array_equal(out['image'], big_i)
    if mirrored:
      np.testing.assert_array_equal(out['image'], big_i[:, ::-1])
      np.testing.assert_array_equal(out['label'], table[big_l[:, ::-1]])
    else:
      np.testing.assert_array_equal(out['label'], big_l)
    seen.add(mirrored)
  assert seen == {False, True}


def test_training_scale_sets_the_long_side_from_base_size():
  """Scale 0.6 of base 100 on a 50x100 image: long side 60, short int(50 * 60 / 100 + .5) = 30;
  a larger crop shows that extent, the rest is padding (image 0, label ignore)."""
  sample = {'image': np.full((50, 100, 3), 9, np.uint8), 'label': np.ones((50, 100), np.uint8)}
  out = transforms.random_scale_crop_flip(sample, np.random.default_rng(0), crop_hw=(40, 80),
                                          scale_range=(0.6, 0.6), base_size=100, flip=False)
  assert (out['label'][:30, :60] == 1).all() and (out['label'][30:] == 255).all()
  assert (out['label'][:, 60:] == 255).all() and (out['image'][:, 60:] == 0).all()


WORKERS = r"""
import sys, time
from absl import flags
from hrnet_jax.data import pipeline
from hrnet_jax.data.sources.cityscapes import CityscapesFolder

def crop(sample, rng):
  return {'label': sample['label'][:8, :8]}

if __name__ == '__main__':
  flags.FLAGS.mark_as_parsed()
  it = pipeline.train_iterator(CityscapesFolder(sys.argv[1], 'train'), crop, batch_size=2,
                               seed=0, num_workers=2)
  next(it)
  print('ready', flush=True)
  time.sleep(600)
"""


def _children(pid: int) -> list[int]:
  out = []
  for task in os.listdir(f'/proc/{pid}/task'):
    with open(f'/proc/{pid}/task/{task}/children') as f:
      out += [int(p) for p in f.read().split()]
  return out


def _running(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'  # a zombie has exited
  except FileNotFoundError:
    return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir('/proc'), reason='reads /proc')
def test_workers_exit_when_the_trainer_is_killed(demo_root, tmp_path):
  """kill -9 of the process that reads batches leaves no grain worker behind."""
  script = tmp_path / 'workers.py'
  script.write_text(WORKERS)
  parent = subprocess.Popen([sys.executable, str(script), str(demo_root)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
  try:
    assert parent.stdout.readline().strip() == 'ready'
    workers = [p for p in _children(parent.pid) if _running(p)]
    assert len(workers) >= 2  # the two workers (and Python's resource tracker)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while any(map(_running, workers)) and time.time() < deadline:
      time.sleep(0.2)
    assert not [p for p in workers if _running(p)]
  finally:
    parent.kill()


def test_read_image_gives_opencvs_pixels(tmp_path):
  """The readers' decode (libjpeg-turbo to RGB for JPEGs) equals OpenCV's imread, BGR -> RGB,
  pixel for pixel: baseline 4:2:0 at an odd size, 4:4:4, progressive, grayscale, CMYK, EXIF
  orientations (OpenCV turns those), PNG; a truncated or missing file is the one-line error."""
  import io

  from PIL import Image

  from hrnet_jax.data.sources.reader import _tiff_orientation, read_image
  rng = np.random.default_rng(0)
  rgb = cv2.GaussianBlur(rng.uniform(0, 255, (61, 83, 3)).astype(np.uint8), (5, 5), 2)
  files = {}

  def pil(name, image, **kw):
    buffer = io.BytesIO()
    image.save(buffer, 'JPEG', **kw)
    files[name] = buffer.getvalue()

  files['baseline.jpg'] = cv2.imencode('.jpg', rgb[..., ::-1])[1].tobytes()
  pil('444.jpg', Image.fromarray(rgb), subsampling=0, quality=95)
  pil('progressive.jpg', Image.fromarray(rgb), progressive=True)
  pil('gray.jpg', Image.fromarray(rgb).convert('L'))
  pil('cmyk.jpg', Image.fromarray(rgb).convert('CMYK'))
  for orientation in (1, 3, 6, 8):
    exif = Image.Exif()
    exif[0x0112] = orientation
    pil(f'exif{orientation}.jpg', Image.fromarray(rgb), exif=exif)
  files['image.png'] = cv2.imencode('.png', rgb[..., ::-1])[1].tobytes()
  for name, data in files.items():
    (tmp_path / name).write_bytes(data)
    expected = cv2.cvtColor(cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR),
                            cv2.COLOR_BGR2RGB)
    got = read_image(tmp_path / name)
    assert got.dtype == np.uint8 and np.array_equal(got, expected), name
  assert read_image(tmp_path / 'exif6.jpg').shape == (83, 61, 3)  # turned
  # Big-endian EXIF (hand-written IFD0: one entry, Orientation SHORT 6) and an unreadable one.
  tiff = (b'MM\x00\x2a\x00\x00\x00\x08' + b'\x00\x01'  # header, IFD0 at 8 with 1 entry
          + b'\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00')  # tag, SHORT, count 1, 6
  assert _tiff_orientation(tiff) == 6 and _tiff_orientation(b'XX\x00\x2a') == 0
  (tmp_path / 'cut.jpg').write_bytes(files['baseline.jpg'][:300])
  for name in ('cut.jpg', 'missing.jpg'):
    with pytest.raises(DataError, match=f'cannot read image .*{name}: missing, unreadable'):
      read_image(tmp_path / name)
