"""Classification: top-1/top-5 and the loss against numpy, the ImageNet transforms worked by hand,
the ImageFolder and TFDS readers, the demo learns through the shared trainer, eval.py on a
converted PyTorch classifier matches the PyTorch forward, and predict.py agrees with eval.py."""

import io
import json
import os
import subprocess
import sys
import tarfile

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import randomize_torch_bn, recipe
from hrnet_jax.data import demos, transforms
from hrnet_jax.data.sources import DataError
from hrnet_jax.data.sources.imagenet import ImageFolder, ImageNetTFDS
from hrnet_jax.tasks import classification, get_task
from hrnet_jax.train.loop import train_and_evaluate


@pytest.fixture(scope='module')
def data_root(cls_root):
  return cls_root  # 10 classes, 24 train and 6 val images each


def demo_config(root):
  """The demo recipe with the tiny model and evaluation batches of 50 (the last one padded)."""
  c = recipe('cls_imagenet', root, 'demo,runlocal')
  c.eval.batch_size = 50
  return c


@pytest.fixture(scope='module')
def trained(data_root, tmp_path_factory):
  """(config, workdir, results) of a tiny classifier trained on the demo by the shared trainer."""
  c = demo_config(data_root)
  c.batch_size = 16
  c.total_steps = 60
  c.optimizer.boundaries = (50 / 15,)  # epochs: step 50 at 240 images, batch 16
  c.eval.every_steps = c.checkpoint.every_steps = 60
  workdir = tmp_path_factory.mktemp('cls_run')
  return c, workdir, train_and_evaluate(c, str(workdir))


# --- Metric and loss ---------------------------------------------------------------------------


def test_top1_top5_match_numpy_argsort_and_ignore_padded_rows(data_root):
  task = get_task(demo_config(data_root))
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (3, 8, 10)).astype(np.float32)
  labels = rng.integers(0, 10, (3, 8)).astype(np.int32)
  boost = rng.uniform(0, 4, (3, 8))  # some rows right, some nearly, some wrong
  np.put_along_axis(logits, labels[..., None],
                    np.take_along_axis(logits, labels[..., None], -1) + boost[..., None], -1)
  valid = np.ones((3, 8), np.int32)
  valid[2, 5:] = 0  # the evaluator's filler rows
  labels[2, 5:] = 255
  metric = task.new_metric(task.source('val'))
  for b in range(3):
    batch = {'label': labels[b], 'valid': valid[b], 'index': np.arange(8) + 8 * b}
    out = task.eval_outputs(lambda x, b=b: jnp.asarray(logits[b]), None, batch)
    metric.update(dict(jax.device_get(out), valid=valid[b], index=batch['index']))

  flat_logits, flat_labels = logits.reshape(-1, 10), labels.reshape(-1)
  keep = valid.reshape(-1) == 1
  probs = np.exp(flat_logits) / np.exp(flat_logits).sum(-1, keepdims=True)
  order = np.argsort(-probs, axis=1)[:, :5]
  top1 = np.mean((order[:, 0] == flat_labels)[keep])
  top5 = np.mean([label in row for label, row in zip(flat_labels[keep], order[keep])])
  r = metric.result()
  assert r['num_images'] == 21
  assert r['top1'] == pytest.approx(top1) and r['top5'] == pytest.approx(top5)
  assert r['top1_error'] == pytest.approx(1 - top1)
  assert 0 < top1 < top5 < 1  # the random draw exercises both
  for i in np.flatnonzero(keep):
    _, ids, p = metric.rows[i]
    np.testing.assert_array_equal(ids, order[i])
    np.testing.assert_allclose(p, probs[i, order[i]], rtol=1e-5)


def test_metric_rejects_labels_outside_the_classes():
  metric = classification.AccuracyMetric(['a', 'b', 'c'])
  with pytest.raises(ValueError, match='label 7'):
    metric.update({'top_ids': np.zeros((1, 3), np.int32), 'top_probs': np.ones((1, 3)),
                   'label': np.array([7]), 'index': np.array([0]), 'valid': np.array([1])})


@pytest.mark.parametrize('smoothing', [0.0, 0.1])
def test_cross_entropy_matches_the_numpy_formula(smoothing):
  rng = np.random.default_rng(1)
  logits = rng.normal(0, 3, (6, 7)).astype(np.float32)
  labels = rng.integers(0, 7, 6)
  z = logits.astype(np.float64)
  logp = z - z.max(1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
  nll = -logp[np.arange(6), labels]
  expected = np.mean((1 - smoothing) * nll + smoothing * -logp.mean(1))
  got = classification.cross_entropy(jnp.asarray(logits), jnp.asarray(labels), smoothing)
  assert got.dtype == jnp.float32
  assert float(got) == pytest.approx(expected, rel=1e-5)


# --- Transforms ----------------------------------------------------------------------------


def test_eval_resize_and_centre_crop_worked_by_hand():
  # 60x100: left half red, right half blue, a green band over source rows 0-4.
  image = np.zeros((60, 100, 3), np.uint8)
  image[:, :50] = (255, 0, 0)
  image[:, 50:] = (0, 0, 255)
  image[:5] = (0, 255, 0)
  out = transforms.resize_center_crop({'image': image, 'label': 3}, size_hw=(32, 32),
                                      crop_fraction=0.875)
  # Shorter side to floor(32 / 0.875) = 36, so 36 x int(36 * 100 / 60) = 36x60 (5/3 smaller);
  # the crop starts at row round(4 / 2) = 2 and column round(28 / 2) = 14.
  assert out['image'].shape == (32, 32, 3) and out['label'] == 3
  o = out['image'].astype(int)
  # Column 30 of the resized image starts exactly at source column 50: 16 red, 16 blue columns.
  assert (o[5:, :16, 0] > 250).all() and (o[5:, :16, 2] < 5).all()
  assert (o[5:, 16:, 2] > 250).all() and (o[5:, 16:, 0] < 5).all()
  # Resized rows 0-2 cover source rows 0-5 (exactly 0-4 for row 2): only output row 0 is green.
  assert (o[0, :, 1] > 250).all() and (o[1:, :, 1] < 5).all()
  # 375x500 at 224: 256x341, crop at (16, 58) (58.5 rounds half to even, as torchvision does).
  big = np.random.default_rng(0).integers(0, 255, (375, 500, 3), dtype=np.uint8)
  out = transforms.resize_center_crop({'image': big}, size_hw=(224, 224), crop_fraction=0.875)
  resized = cv2.resize(big, (341, 256), interpolation=cv2.INTER_AREA)
  np.testing.assert_array_equal(out['image'], resized[16:240, 58:282])


def test_random_resized_crop_box_stays_inside_with_the_drawn_area_and_aspect():
  rng = np.random.default_rng(0)
  areas, aspects = [], []
  for _ in range(500):
    y0, x0, ch, cw = transforms.random_resized_crop_box(120, 200, rng)
    assert 0 <= y0 and y0 + ch <= 120 and 0 <= x0 and x0 + cw <= 200 and ch > 0 and cw > 0
    areas.append(ch * cw / (120 * 200))
    aspects.append(cw / ch)
  areas, aspects = np.array(areas), np.array(aspects)
  assert areas.min() > 0.06 and areas.max() <= 1.0 and np.ptp(areas) > 0.7
  assert aspects.min() > 0.7 and aspects.max() < 1.42  # 3/4 .. 4/3 up to pixel rounding
  # No draw fits (the whole area at aspect 2..3 of a square): the central crop of aspect 2.
  box = transforms.random_resized_crop_box(100, 100, rng, area_range=(1.0, 1.0),
                                           aspect_range=(2.0, 3.0))
  assert box == (25, 0, 50, 100)
  # Too wide an image for aspect <= 4/3: the full height, width round(60 * 4 / 3) = 80, centred.
  box = transforms.random_resized_crop_box(60, 200, rng, area_range=(1.0, 1.0))
  assert box == (0, 60, 60, 80)


def test_random_resized_crop_size_and_flips():
  image = np.zeros((90, 90, 3), np.uint8)
  image[:, 45:] = 255  # dark left, bright right
  flips = 0
  for seed in range(200):
    out = transforms.random_resized_crop_flip({'image': image, 'label': 1},
                                              np.random.default_rng(seed), size_hw=(32, 48),
                                              area_range=(1.0, 1.0), aspect_range=(1.0, 1.0))
    o = out['image']
    assert o.shape == (32, 48, 3) and o.dtype == np.uint8 and out['label'] == 1
    left, right = o[:, :20].mean(), o[:, -20:].mean()
    assert abs(left - right) > 250  # the whole image, mirrored or not
    flips += left > right
  assert 70 < flips < 130
  for seed in range(20):
    out = transforms.random_resized_crop_flip({'image': image}, np.random.default_rng(seed),
                                              size_hw=(32, 32), flip=False)
    assert out['image'][:, :4].mean() <= out['image'][:, -4:].mean()


# --- Readers -------------------------------------------------------------------------------


def _write(path, image):
  path.parent.mkdir(parents=True, exist_ok=True)
  cv2.imwrite(str(path), image[..., ::-1])


def test_image_folder_maps_sorted_train_folders_and_names_bad_input(tmp_path):
  colors = {'b_cat': (200, 0, 0), 'a_dog': (0, 200, 0), 'c_owl': (0, 0, 200)}
  for c, color in colors.items():
    for i, ext in enumerate(('png', 'JPEG', 'jpg')):
      _write(tmp_path / 'train' / c / f'{i}.{ext}', np.full((20, 30, 3), color, np.uint8))
  (tmp_path / 'train' / 'a_dog' / 'notes.txt').write_text('not an image')
  _write(tmp_path / 'val' / 'c_owl' / 'x.png', np.full((8, 8, 3), 9, np.uint8))
  _write(tmp_path / 'val' / 'a_dog' / 'y.png', np.full((8, 8, 3), 7, np.uint8))
  (tmp_path / 'names.txt').write_text('a_dog dog, hound\nb_cat cat\nc_owl owl\nzzz other\n')

  train = ImageFolder(tmp_path, 'train', class_names_file=tmp_path / 'names.txt')
  assert train.classes == ['a_dog', 'b_cat', 'c_owl']
  assert train.class_names == ['dog, hound', 'cat', 'owl']
  assert len(train) == 9 and train.skipped == 1 and '1 non-image' in train.describe()
  for i in range(len(train)):
    s = train[i]
    folder = train.names[i].split(os.sep)[0]
    assert s['label'].dtype == np.int32 and s['label'] == train.classes.index(folder)
    assert s['image'].shape == (20, 30, 3) and s['image'].dtype == np.uint8
    if train.names[i].endswith('.png'):  # lossless: the exact RGB colour
      np.testing.assert_array_equal(s['image'][0, 0], colors[folder])
  val = ImageFolder(tmp_path, 'val')
  assert [val[i]['label'] for i in range(2)] == [0, 2]  # a_dog, c_owl: the train indices
  assert int(val[1]['image'][0, 0, 0]) == 9

  _write(tmp_path / 'val' / 'zebra' / 'z.png', np.zeros((8, 8, 3), np.uint8))
  with pytest.raises(DataError, match='zebra'):
    ImageFolder(tmp_path, 'val')
  with pytest.raises(DataError, match=str(tmp_path / 'test')):
    ImageFolder(tmp_path, 'test')
  with pytest.raises(DataError, match=str(tmp_path / 'nowhere' / 'train')):
    ImageFolder(tmp_path / 'nowhere', 'val')
  (tmp_path / 'train' / 'd_empty').mkdir()
  with pytest.raises(DataError, match='d_empty'):
    ImageFolder(tmp_path, 'train')
  (tmp_path / 'train' / 'd_empty').rmdir()
  (tmp_path / 'short.txt').write_text('a_dog dog\n')
  with pytest.raises(DataError, match='b_cat'):
    ImageFolder(tmp_path, 'train', class_names_file=tmp_path / 'short.txt')
  c = demo_config(tmp_path)
  c.data.name = 'imagenet21k'
  with pytest.raises(ValueError, match='imagenet21k'):
    get_task(c)


def _tar_add(tar, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


@pytest.mark.slow
def test_tfds_imagenet2012_built_from_official_style_tars_reads_without_tensorflow(tmp_path,
                                                                                  tensorflow):
  """A tiny `imagenet2012` built by TFDS's own builder from fake manual tars in the official
  layout (per-class tars inside the train tar, flat validation JPEGs), read back as ArrayRecord
  through tfds.data_source."""
  import tensorflow_datasets as tfds
  from hrnet_jax.data.sources.imagenet import prepare_tfds
  labels_file = tfds.core.tfds_path('datasets/imagenet2012/labels.txt')
  wnids = open(labels_file).read().split()
  val_labels = open(tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt')
                    ).read().split()
  manual = tmp_path / 'manual'
  manual.mkdir()
  with pytest.raises(DataError, match='ILSVRC2012_img_train.tar'):
    prepare_tfds(manual, tmp_path / 'data')

  def jpeg(value):
    return cv2.imencode('.jpg', np.full((24, 32, 3), value, np.uint8))[1].tobytes()

  train_classes = [wnids[5], wnids[17], wnids[999]]
  with tarfile.open(manual / 'ILSVRC2012_img_train.tar', 'w') as outer:
    for k, wnid in enumerate(train_classes):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as t:
        for j in range(2):
          _tar_add(t, f'{wnid}_{j}.JPEG', jpeg(40 * k + 10 * j + 20))
      _tar_add(outer, f'{wnid}.tar', inner.getvalue())
  with tarfile.open(manual / 'ILSVRC2012_img_val.tar', 'w') as t:
    for i in range(1, 4):
      _tar_add(t, f'ILSVRC2012_val_{i:08d}.JPEG', jpeg(50 * i))
  prepare_tfds(manual, tmp_path / 'data')

  train = ImageNetTFDS(tmp_path / 'data', 'train')
  assert len(train) == 6 and len(train.classes) == 1000 and train.classes[5] == wnids[5]
  seen = set()
  for i in range(len(train)):
    s = train[i]
    assert s['image'].shape == (24, 32, 3) and s['image'].dtype == np.uint8
    assert s['label'].dtype == np.int32
    k = [wnids.index(w) for w in train_classes].index(int(s['label']))
    j = int(round((float(s['image'].mean()) - 40 * k - 20) / 10))
    assert j in (0, 1) and abs(float(s['image'].mean()) - (40 * k + 10 * j + 20)) < 2
    seen.add((k, j))
  assert len(seen) == 6
  val = ImageNetTFDS(tmp_path / 'data', 'val')
  got = sorted((int(round(val[i]['image'].mean() / 50)), int(val[i]['label']))
               for i in range(len(val)))
  assert got == [(i, wnids.index(val_labels[i - 1])) for i in range(1, 4)]
  with pytest.raises(DataError, match='prepare_tfds'):
    ImageNetTFDS(tmp_path / 'elsewhere', 'val')

  # Reading needs no TensorFlow: a fresh interpreter reads a record and never imports it.
  code = ('import sys; from hrnet_jax.data.sources.imagenet import ImageNetTFDS; '
          f's = ImageNetTFDS({str(tmp_path / "data")!r}, "val"); s[0]; '
          'print(len(s), "tensorflow" in sys.modules)')
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env,
                       check=True).stdout.split()
  assert out[-2:] == ['3', 'False']


# --- Through the trainer and the evaluator ---------------------------------------------------


@pytest.mark.slow
def test_training_on_the_demo_beats_chance_and_predict_agrees_with_the_eval_path(trained,
                                                                                 tmp_path):
  from hrnet_jax import predict
  from hrnet_jax.train import checkpoint, parallel
  from hrnet_jax.train.evaluator import evaluate
  c, workdir, results = trained
  # 10 balanced classes (6 validation images each): chance is 10% top-1, 50% top-5.
  assert results['num_images'] == 60
  assert results['top1'] >= 0.25 and results['top5'] >= 0.7, results
  assert (workdir / 'checkpoints' / '60').is_dir()

  # The evaluator on the checkpoint: the trainer's figures, and the per-image predictions.
  task = get_task(c)
  variables, _ = checkpoint.load_variables(workdir)
  source = task.source('val')
  metric = evaluate(c, task, parallel.make_mesh(), variables, source=source,
                    predictions_dir=tmp_path / 'pred')
  assert metric.result()['top1'] == pytest.approx(results['top1'])
  rows = json.loads((tmp_path / 'pred' / 'predictions_val.json').read_text())
  assert len(rows) == 60 and rows[7]['file'] == source.names[7]

  # predict.py's Predictor on the same image: the evaluator's top-5.
  predictor = predict.Predictor(c, str(workdir))
  image = source[7]['image']
  (p,) = predictor(image)['predictions']
  assert p['box'] == [0.0, 0.0, 48.0, 48.0]
  assert [t['class_id'] for t in p['top5']] == [t['class_id'] for t in rows[7]['top5']]
  np.testing.assert_allclose([t['probability'] for t in p['top5']],
                             [t['probability'] for t in rows[7]['top5']], atol=1e-6)
  assert p['top5'][0]['name'] == demos.CLS_CLASSES[p['top5'][0]['class_id']]

  # Two boxes: crops in image pixels (clipped), one prediction each; the picture shows them.
  boxes = np.array([[4, 2, 30, 40], [30, 30, 100, 100]], np.float32)
  samples = task.image_samples(image, boxes)
  assert [s['image'].shape for s in samples] == [(40, 30, 3), (18, 18, 3)]
  pred = predictor(image, boxes)
  json.dumps(pred)
  assert [p['box'] for p in pred['predictions']] == [[4, 2, 30, 40], [30, 30, 18, 18]]
  picture = task.draw(image, pred)
  assert picture.dtype == np.uint8 and picture.shape[1] == 48 + 300
  assert picture.shape[0] >= 48 and (picture[:, 48:] < 128).any()  # text on the strip
  assert (picture[2, 4:34] != image[2, 4:34]).any()  # the first box's outline
  np.testing.assert_array_equal(picture[10:20, 38:46], image[10:20, 38:46])  # elsewhere kept
  whole = task.draw(image, predictor(image))
  np.testing.assert_array_equal(whole[:48, :48], image)  # no box drawn over the whole image


@pytest.mark.slow
def test_eval_of_a_converted_pytorch_classifier_matches_pytorch(data_root, tmp_path):
  torch = pytest.importorskip('torch')
  from conftest import TINY
  from hrnet_jax import evaluate_checkpoint
  from hrnet_jax.convert import torch_hrnet
  ref = torch_hrnet.build('cls_w18', **TINY, num_classes=10).eval()
  randomize_torch_bn(ref)
  with torch.no_grad():  # a classifier with confident, well separated outputs
    ref.classifier.weight.mul_(30.0)
  torch.save(ref.state_dict(), tmp_path / 'cls.pth')
  c = demo_config(data_root)  # evaluation batches of 50: the second one is padded
  scores = evaluate_checkpoint.run(c, str(tmp_path / 'cls.pth'), predictions_dir=tmp_path / 'pred',
                        results_path=tmp_path / 'scores.json')
  rows = json.loads((tmp_path / 'pred' / 'predictions_val.json').read_text())

  task = get_task(c)
  source = task.source('val')
  mean, std = np.asarray(c.data.mean), np.asarray(c.data.std)
  images = np.stack([task.eval_transform()(source[i])['image'] for i in range(len(source))])
  x = torch.from_numpy(((images - mean) / std).astype(np.float32)).permute(0, 3, 1, 2)
  with torch.no_grad():
    probs = torch.softmax(ref(x), dim=1).numpy()
  order = np.argsort(-probs, axis=1)[:, :5]
  assert len(rows) == len(source) == 60
  for r in rows:
    i = r['index']
    got_p = np.array([t['probability'] for t in r['top5']])
    np.testing.assert_allclose(got_p, probs[i, order[i]], atol=1e-4)
    ids = [t['class_id'] for t in r['top5']]
    gaps = np.diff(-probs[i, order[i]])
    for j in range(5):  # the same class unless two probabilities tie within the tolerance
      if (j == 0 or gaps[j - 1] > 1e-4) and (j == 4 or gaps[j] > 1e-4):
        assert ids[j] == order[i, j]
  labels = np.array([int(source[i]['label']) for i in range(len(source))])
  assert scores['top1'] == pytest.approx(np.mean(order[:, 0] == labels))
  assert scores['top5'] == pytest.approx(np.mean([l in o for l, o in zip(labels, order)]))
  assert json.loads((tmp_path / 'scores.json').read_text())['num_images'] == 60
