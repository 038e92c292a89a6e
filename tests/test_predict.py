"""predict.py's inputs: the boxes file and the samples a raw image becomes. (Whole runs against
eval.py's outputs: test_seg_train.py and test_pose_train.py.)"""

import json

import numpy as np
import pytest

from hrnet_jax.data import keypoints
from hrnet_jax.predict import read_boxes


def test_boxes_file_is_read_and_bad_ones_are_named(tmp_path):
  good = tmp_path / 'boxes.json'
  good.write_text(json.dumps({'a.jpg': [[1, 2, 30, 40], [5, 6, 7, 8]]}))
  boxes = read_boxes(good)
  np.testing.assert_array_equal(boxes['a.jpg'], [[1, 2, 30, 40], [5, 6, 7, 8]])
  for text, message in (('{"a.jpg": [1, 2, 3, 4]}', "boxes of 'a.jpg'"),
                        ('[[1, 2, 3, 4]]', 'expected an object'), ('{oops', 'not valid JSON')):
    bad = tmp_path / 'bad.json'
    bad.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
      read_boxes(bad)
    assert str(bad) in str(e.value)


def test_pose_samples_of_a_raw_image():
  from configs import pose_demo
  from hrnet_jax.tasks.pose import Pose
  task = Pose(pose_demo.get_config())  # 96x128 input: aspect 0.75
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
