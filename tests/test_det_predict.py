"""Detection end to end on the embedded demo: training (runlocal), predict.py pictures, and the
person detector feeding top-down pose in predict.py and eval.py."""

import json

import cv2
import jax
import numpy as np
import pytest

from conftest import random_variables, recipe, write_random_checkpoint
from hrnet_jax import evaluate_checkpoint, predict
from hrnet_jax.data.sources.coco_detection import CocoDetection

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def det_model(det_demo_root, tmp_path_factory):
  """(config, checkpoint dir) of the tiny detection recipe with random weights: N(0, 0.1)
  class biases put every class near probability 0.5, so there are boxes to pass on."""
  c = recipe('det_coco_fcos', det_demo_root)
  path = tmp_path_factory.mktemp('model') / 'det'
  write_random_checkpoint(c, path)
  return c, path


def predict_a_val_image(config, checkpoint: str, root, out) -> tuple:
  """predict.py on the demo's first val image: (its record, path, height, width), after
  checking that nothing failed and that there are 1 to 100 detections."""
  src = CocoDetection(root, 'val')
  path = root / 'images' / 'val' / src.file_names[0]
  outcome = predict.run(config, checkpoint, [str(path)], out)
  record = outcome.records[0]
  assert not outcome.failed and 0 < len(record['detections']) <= 100
  h, w = cv2.imread(str(path)).shape[:2]
  return record, path, h, w


def test_detection_trains_and_scores_on_the_demo(det_demo_root, tmp_path):
  from hrnet_jax.train.loop import train_and_evaluate
  c = recipe('det_coco_fcos', det_demo_root)
  results = train_and_evaluate(c, str(tmp_path / 'run'))
  assert 0.0 <= results['AP'] <= 1.0 and results['num_images'] == 8
  assert results['num_detections'] > 0
  assert (tmp_path / 'run' / 'checkpoints' / str(c.total_steps)).is_dir()


def test_predict_draws_the_detections(det_model, det_demo_root, tmp_path):
  c, model = det_model
  src = CocoDetection(det_demo_root, 'val')
  paths = [det_demo_root / 'images' / 'val' / src.file_names[i] for i in (0, 1)]
  outcome = predict.run(c, str(model), [str(p) for p in paths], tmp_path / 'out', batch=2)
  assert not outcome.failed and len(outcome.records) == 2
  for path, record in zip(paths, outcome.records):
    image = cv2.imread(str(path))
    picture = cv2.imread(str(tmp_path / 'out' / record['picture']))
    assert picture.shape == image.shape
    dets = record['detections']
    assert 0 < len(dets) <= 100
    h, w = image.shape[:2]
    for d in dets:
      assert d['class'] in src.class_names and 0.05 < d['score'] <= 1.0
      x, y, bw, bh = d['box']
      assert 0 <= x <= x + bw <= w + 0.01 and 0 <= y <= y + bh <= h + 0.01
    assert [d['score'] for d in dets] == sorted((d['score'] for d in dets), reverse=True)
    assert not np.array_equal(picture, image)  # boxes drawn


def test_pose_takes_its_boxes_from_the_detector(det_model, det_demo_root, pose_root, tmp_path):
  c, det_path = det_model
  pose_config = recipe('pose_coco', pose_root)
  pose_path = tmp_path / 'pose'
  write_random_checkpoint(pose_config, pose_path)
  detector = predict.PersonDetector(c, str(det_path), threshold=0.3)
  src = CocoDetection(det_demo_root, 'val')
  image_path = det_demo_root / 'images' / 'val' / src.file_names[0]
  outcome = predict.run(pose_config, str(pose_path), [str(image_path)], tmp_path / 'out',
                        detector=detector)
  assert not outcome.failed
  people = outcome.records[0]['people']
  rgb = cv2.imread(str(image_path))[..., ::-1]
  boxes, scores = detector.boxes(rgb)
  assert len(people) == len(boxes) > 0 and min(scores) >= 0.3
  for person, (x, y, w, h) in zip(people, boxes):  # clipped as the COCO reader clips boxes
    np.testing.assert_allclose(person['box'], [x, y, w - 1, h - 1], atol=0.011)
    assert len(person['keypoints']) == 17
  nobody = predict.PersonDetector(c, str(det_path), threshold=1.01)
  outcome = predict.run(pose_config, str(pose_path), [str(image_path)], tmp_path / 'none',
                        detector=nobody)
  assert not outcome.failed and outcome.records[0]['people'] == []


def test_pose_evaluation_with_detector_boxes(det_model, pose_root, tmp_path):
  c, det_path = det_model
  pose_config = recipe('pose_coco', pose_root)
  pose_path = tmp_path / 'pose'
  write_random_checkpoint(pose_config, pose_path)
  scores = evaluate_checkpoint.run(pose_config, str(pose_path), predictions_dir=tmp_path / 'p',
                                   detector=c, detector_checkpoint=str(det_path))
  boxes = json.loads((tmp_path / 'p' / 'person_detections_val.json').read_text())
  assert boxes and all(b['category_id'] == 1 for b in boxes)
  val = json.loads((pose_root / 'annotations' / 'person_keypoints_val.json').read_text())
  assert {b['image_id'] for b in boxes} <= {im['id'] for im in val['images']}
  assert 'AP' in scores


def test_two_stage_trains_predicts_and_finds_people(det_demo_root, pose_root, tmp_path):
  """Cascade Mask R-CNN end to end on the demo: the runlocal training (with the silhouettes'
  masks) and its box and mask evaluation, predict.py's detections and masks on a picture, and
  its person boxes (with their scores) feeding top-down pose. (HTC's own parts: its recipe's
  batches in test_htc.py, its network and training in test_htc / test_instance_masks; its
  compiled step would triple this test's time.)"""
  from pycocotools import mask as mask_utils
  from hrnet_jax.train.loop import train_and_evaluate
  c = recipe('det_coco_cascade_mask_rcnn', det_demo_root)
  c.eval.score_thr = c.eval.show_score = least = 0.001  # six steps from scratch: low scores
  run = tmp_path / 'run'
  results = train_and_evaluate(c, str(run))
  assert results['num_images'] == 8 and results['num_detections'] > 0
  assert 0.0 <= results['mask_AP'] <= 1.0 and 'mask_AR100' in results
  record, path, h, w = predict_a_val_image(c, str(run), det_demo_root, tmp_path / 'out')
  dets = record['detections']
  for d in dets:
    x, y, bw, bh = d['box']
    assert 0 <= x <= x + bw <= w + 0.01 and 0 <= y <= y + bh <= h + 0.01 and d['score'] > least
    mask = mask_utils.decode(dict(d['segmentation'], counts=d['segmentation']['counts'].encode()))
    assert mask.shape == (h, w)
    ys, xs = np.nonzero(mask)  # inside its box, up to the pixel beyond it
    assert len(xs) == 0 or (xs.min() >= x - 1 and xs.max() <= x + bw + 1 and ys.min() >= y - 1
                            and ys.max() <= y + bh + 1)
  picture = cv2.imread(str(tmp_path / 'out' / record['picture']))
  assert not np.array_equal(picture, cv2.imread(str(path)))
  detector = predict.PersonDetector(c, str(run), threshold=least)
  boxes, scores = detector.boxes(cv2.imread(str(path))[..., ::-1])
  assert len(boxes) == len(scores) > 0 and min(scores) >= least
  people = [d for d in dets if d['class'] == 'person' and d['score'] >= least]
  assert sorted(scores, reverse=True) == [d['score'] for d in people]
  pose_config = recipe('pose_coco', pose_root)
  write_random_checkpoint(pose_config, tmp_path / 'pose')
  outcome = predict.run(pose_config, str(tmp_path / 'pose'), [str(path)], tmp_path / 'poses',
                        detector=detector)
  assert not outcome.failed and len(outcome.records[0]['people']) == len(boxes)
  # Pose evaluation with the two-stage detector's person boxes (and their scores).
  scores = evaluate_checkpoint.run(pose_config, str(tmp_path / 'pose'),
                                   predictions_dir=tmp_path / 'p', detector=c,
                                   detector_checkpoint=str(run))
  found = json.loads((tmp_path / 'p' / 'person_detections_val.json').read_text())
  assert found and all(b['category_id'] == 1 and least < b['score'] <= 1 for b in found)
  assert 'AP' in scores


def test_a_legacy_release_evaluates_with_the_switch(det_demo_root, tmp_path):
  """A checkpoint in HRNet-Object-Detection's layout (a random tiny Faster R-CNN written as a
  .pth) evaluates with `:legacy`; without it, the error names the switch."""
  import torch
  from hrnet_jax import convert
  from hrnet_jax.convert.core import ConversionError
  from hrnet_jax.tasks import get_task
  c = recipe('det_coco_faster_rcnn', det_demo_root, 'runlocal,legacy')
  task = get_task(c)
  variables = random_variables(task.create_model(), np.zeros((1, 64, 64, 3), np.float32))
  state = convert.flax_to_torch(variables, c.model.arch, **task.model_kwargs)
  assert 'bbox_head.fc_cls.weight' in state and 'neck.fpn_conv.0.weight' in state
  path = tmp_path / 'faster_rcnn_hrnetv2p_v0.pth'
  torch.save({'state_dict': {k: torch.from_numpy(np.array(v)) for k, v in state.items()}}, path)
  results = evaluate_checkpoint.run(c, str(path), predictions_dir=tmp_path / 'p')
  assert results['num_images'] == 8 and 0.0 <= results['AP'] <= 1.0
  with pytest.raises(ConversionError, match='set config.model.overrides.legacy=True'):
    evaluate_checkpoint.run(recipe('det_coco_faster_rcnn', det_demo_root), str(path))


def fixed_centernet_outputs(variables: dict) -> dict:
  """`variables` with the last layer of every CenterNet output zeroed to a constant: heatmaps
  at logit 2 for the first class (person) and -10 for the others, embeddings 0, offsets of
  (10, 12) cells for the top-left corners, (30, 40) for the bottom-right ones and (20, 26) for
  the centres: the same boxes, all people, on any image (ties ranked by cell)."""
  head = variables['params']['head']
  fill = {'tl_regr': [10, 12], 'br_regr': [30, 40], 'ct_regr': [20, 26]}
  for name, layer in head.items():
    if name.endswith(('_heat', '_tag', '_regr')):
      out = layer['1']['bias'].shape[0]
      value = [2.0] + [-10.0] * (out - 1) if name.endswith('_heat') else fill.get(name, [0.0])
      layer['1'] = {'kernel': np.zeros_like(layer['1']['kernel']),
                    'bias': np.asarray(value, np.float32)}
  return variables


def test_centernet_trains_predicts_and_finds_people(det_demo_root, tmp_path):
  """CenterNet end to end on the demo: the runlocal training (colour noise on the device) and
  its evaluation (canvas, mirror, centre check, soft-NMS, COCOeval); then, with outputs fixed
  to boxes of people (`fixed_centernet_outputs`), predict.py's boxes on a picture, best first
  inside the image, and its person boxes as a detector's (predict.py's and eval.py's)."""
  from hrnet_jax import convert
  from hrnet_jax.tasks import get_task
  from hrnet_jax.train import checkpoint
  from hrnet_jax.train.loop import train_and_evaluate
  c = recipe('det_coco_centernet', det_demo_root)
  run = tmp_path / 'run'
  results = train_and_evaluate(c, str(run))
  assert results['num_images'] == 8 and 0.0 <= results['AP'] <= 1.0
  task = get_task(c)
  variables, _ = checkpoint.load_model_variables(str(run), task)
  fixed = tmp_path / 'fixed'
  convert.write_variables(fixed_centernet_outputs(jax.device_get(variables)), fixed,
                          {'arch': c.model.arch, 'overrides': task.model_kwargs})
  record, path, h, w = predict_a_val_image(c, str(fixed), det_demo_root, tmp_path / 'out')
  dets = record['detections']
  assert [d['score'] for d in dets] == sorted((d['score'] for d in dets), reverse=True)
  for d in dets:
    x, y, bw, bh = d['box']
    assert 0 <= x <= x + bw <= w + 0.01 and 0 <= y <= y + bh <= h + 0.01
    assert d['class'] == 'person' and d['class_id'] == 0
  detector = predict.PersonDetector(c, str(fixed), threshold=0.0)
  boxes, scores = detector.boxes(cv2.imread(str(path))[..., ::-1])
  assert scores == [d['score'] for d in dets]
  np.testing.assert_allclose(boxes, np.asarray([d['box'] for d in dets]), atol=1e-4)
  # The person boxes top-down pose evaluation reads (the evaluator over a COCO file's images).
  src = CocoDetection(det_demo_root, 'val')
  n = evaluate_checkpoint.detect_people(c, str(fixed), src.annotation_file,
                                        det_demo_root / 'images' / 'val', tmp_path / 'p.json')
  found = json.loads((tmp_path / 'p.json').read_text())
  assert n == len(found) > 0 and all(b['category_id'] == 1 for b in found)
  assert {b['image_id'] for b in found} <= set(int(i) for i in src.image_ids)
