"""predict.py: the boxes file, the samples a raw image becomes, one output per input, and bad
input reported and skipped without stopping the run. (Its results against eval.py's:
test_seg_train.py, test_pose_train.py, test_landmarks.py, test_cls.py.)"""

import json
import os
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from conftest import recipe
from hrnet_jax import convert, predict
from hrnet_jax.data import keypoints
from hrnet_jax.errors import UserError
from hrnet_jax.models import zoo
from hrnet_jax.predict import read_boxes
from hrnet_jax.tasks import get_task


def test_boxes_file_is_read_and_bad_ones_are_named(tmp_path):
  good = tmp_path / 'boxes.json'
  good.write_text(json.dumps({'a.jpg': [[1, 2, 30, 40], [5, 6, 7, 8]], 'b.jpg': []}))
  boxes = read_boxes(good)
  np.testing.assert_array_equal(boxes['a.jpg'], [[1, 2, 30, 40], [5, 6, 7, 8]])
  assert boxes['b.jpg'].shape == (0, 4)
  for text, message in (('{"a.jpg": [1, 2, 3, 4]}', "boxes of 'a.jpg'"),
                        ('{"a.jpg": [["x", 2, 3, 4]]}', "boxes of 'a.jpg'"),
                        ('{"a.jpg": [[1, 2, 3]]}', "boxes of 'a.jpg'"),
                        ('{"a.jpg": [[1, 2, 3, null]]}', "boxes of 'a.jpg'"),
                        ('[[1, 2, 3, 4]]', 'expected an object'), ('{oops', 'not valid JSON')):
    bad = tmp_path / 'bad.json'
    bad.write_text(text)
    with pytest.raises(UserError, match=message) as e:
      read_boxes(bad)
    assert str(bad) in str(e.value)
  with pytest.raises(UserError, match='cannot read'):
    read_boxes(tmp_path / 'missing.json')


def test_pose_samples_of_a_raw_image():
  from hrnet_jax.tasks.pose import Pose
  task = Pose(recipe('pose_coco', arg='demo'))  # 96x128 input: aspect 0.75
  image = np.zeros((100, 200, 3), np.uint8)
  whole, = task.image_samples(image)
  # The whole image (clipped to 199 x 99 as the COCO reader clips) widened in height to 3:4.
  np.testing.assert_allclose(whole['center'], [99.5, 49.5])
  np.testing.assert_allclose(whole['scale'], np.array([199, 199 / 0.75]) / 200 * 1.25, rtol=1e-6)
  boxed = task.image_samples(image, np.array([[10, 20, 30, 40]]))
  c, s = keypoints.box_to_center_scale([10, 20, 29, 39], 0.75)
  np.testing.assert_allclose(boxed[0]['center'], c)
  np.testing.assert_allclose(boxed[0]['scale'], s)
  with pytest.raises(ValueError, match='empty'):
    task.image_samples(image, np.array([[250, 20, 30, 40]]))


def test_output_names_keep_inputs_apart(tmp_path):
  paths = [tmp_path / 'a' / 'tiny.png', tmp_path / 'b' / 'tiny.png', tmp_path / 'a' / 'x.png',
           tmp_path / 'a' / 'x.jpg', tmp_path / 'a' / 'deep' / 'y.png']
  names = predict.output_names(paths)
  assert names == ['a/tiny', 'b/tiny', 'a/x_png', 'a/x_jpg', 'a/deep/y']
  assert predict.output_names([tmp_path / 'one.png']) == ['one']


# --- Whole runs on a tiny pose model ---------------------------------------------------------


@pytest.fixture(scope='module')
def pose_model(pose_root, tmp_path_factory):
  """(config, checkpoint dir) of the tiny pose recipe with random weights."""
  c = recipe('pose_coco', pose_root)
  task = get_task(c)
  rng = np.random.default_rng(0)
  shapes = zoo.init_shapes(c.model.arch, **task.model_kwargs)
  variables = jax.tree_util.tree_map(
      lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)
  variables['batch_stats'] = jax.tree_util.tree_map(np.abs, variables['batch_stats'])
  path = tmp_path_factory.mktemp('model') / 'pose'
  convert.write_variables(variables, path, {'arch': c.model.arch, 'overrides': task.model_kwargs})
  return c, path


@pytest.fixture
def images(tmp_path):
  """Two images of the same file name in two folders, an unreadable one and a good third."""
  rng = np.random.default_rng(1)
  out = []
  for name in ('a/tiny.png', 'b/tiny.png', 'bad/broken.png', 'c/other.jpg'):
    path = tmp_path / 'in' / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if 'broken' in name:
      path.write_bytes(b'\x89PNG not really')
    else:
      cv2.imwrite(str(path), rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    out.append(path)
  return out


def test_a_run_writes_one_output_per_input_and_skips_bad_input(pose_model, images, tmp_path):
  """Same-named inputs get their own outputs; an unreadable image and a box outside its image
  are reported with the file and the reason, counted, and the rest is written."""
  c, model = pose_model
  boxes = tmp_path / 'boxes.json'
  boxes.write_text(json.dumps({'other.jpg': [[500, 500, 10, 10]],  # outside the 80x60 image
                               str(images[1]): [[10, 10, 30, 40]]}))
  out = tmp_path / 'out'
  (out / 'keep.txt').parent.mkdir()
  (out / 'keep.txt').write_text('mine')
  outcome = predict.run(c, str(model), [str(p) for p in images], out, boxes_path=str(boxes))
  assert [r['picture'] for r in outcome.records] == ['a/tiny.png', 'b/tiny.png']
  assert [f for f, _ in outcome.failed] == [str(images[2]), str(images[3])]
  assert 'cannot read image' in outcome.failed[0][1]
  assert 'empty inside the 80x60 image' in outcome.failed[1][1]
  first, second = (json.loads((out / f'{n}.json').read_text()) for n in ('a/tiny', 'b/tiny'))
  assert first['image'] == str(images[0]) and second['image'] == str(images[1])
  assert first['people'][0]['box'] == [0.0, 0.0, 79.0, 59.0]  # no boxes: the whole image
  assert second['people'][0]['box'] == [10.0, 10.0, 29.0, 39.0]  # its own boxes, by path
  assert json.loads((out / 'predictions.json').read_text()) == outcome.records
  assert (out / 'keep.txt').read_text() == 'mine'
  with pytest.raises(UserError, match='not a directory'):
    predict.run(c, str(model), [str(images[0])], out / 'keep.txt')


@pytest.mark.slow
def test_the_command_reports_failures_in_one_line_each_and_exits_non_zero(pose_model, images,
                                                                           tmp_path):
  c, model = pose_model
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  args = [sys.executable, 'predict.py', '--config', 'configs/pose_coco.py:runlocal',
          f'--config.data.root={c.data.root}', '--checkpoint', str(model)]
  done = subprocess.run(args + ['--out', str(tmp_path / 'out'), *map(str, images)],
                        capture_output=True, text=True, env=env)
  assert done.returncode == 1, done.stderr[-2000:]
  errors = [l for l in done.stderr.splitlines() if l.startswith('error:')]
  assert errors == [f'error: {images[2]}: cannot read image {images[2]}: missing, unreadable '
                    'or not an image file']
  assert '3 done, 1 failed' in done.stdout and 'Traceback' not in done.stderr
  (tmp_path / 'file').write_text('x')
  done = subprocess.run(args + ['--out', str(tmp_path / 'file'), str(images[0])],
                        capture_output=True, text=True, env=env)
  assert done.returncode == 2
  assert done.stderr.strip() == f'error: --out {tmp_path / "file"}: exists and is not a directory'
