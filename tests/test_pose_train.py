"""Pose through the shared trainer and evaluator: the demo learns (pycocotools AP), and eval.py /
predict.py on a converted PyTorch pose checkpoint give the keypoints of the PyTorch forward and
the same decoding."""

import json
import pathlib

import cv2
import numpy as np
import pytest

from conftest import randomize_torch_bn, recipe
from hrnet_jax.data import demos, keypoints
from hrnet_jax.train.loop import train_and_evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return demos.write_pose_demo(tmp_path_factory.mktemp('pose') / 'demo', num_train=160,
                                   num_val=16)


def demo_config(root):
  """The pose demo recipe (its small HRNet), with no worker processes."""
  c = recipe('pose_coco', root, 'demo')
  c.data.num_workers = 0
  return c


def test_training_on_the_pose_demo_raises_ap(data_root, tmp_path):
  c = demo_config(data_root)
  c.total_steps = 100
  c.optimizer.boundaries = (8,)  # epochs: step 80 at 160 images, batch 16
  c.eval.every_steps = 100
  c.checkpoint.every_steps = 100
  results = train_and_evaluate(c, str(tmp_path))
  # Random heatmaps score AP ~0 on this data (the untrained model below scores 0.0).
  assert results['AP'] > 0.3 and results['AR'] > 0.3
  assert (tmp_path / 'checkpoints' / '100').is_dir()


def test_eval_and_predict_on_a_converted_pytorch_pose_checkpoint_match_pytorch(data_root, tmp_path):
  torch = pytest.importorskip('torch')
  from hrnet_jax import evaluate_checkpoint
  from hrnet_jax.convert import torch_hrnet
  from hrnet_jax.data.sources.coco import FLIP_PAIRS, CocoKeypoints
  from hrnet_jax.tasks import heatmaps

  ref = torch_hrnet.build('pose_w18_small_v1').eval()
  randomize_torch_bn(ref)
  torch.save(ref.state_dict(), tmp_path / 'pose.pth')
  c = demo_config(data_root)
  c.model.overrides.stage1_blocks = c.model.overrides.stage1_planes = None  # official layout
  c.eval.oks_thre = 1.0  # keep every person, to compare all of them
  scores = evaluate_checkpoint.run(c, str(tmp_path / 'pose.pth'), predictions_dir=tmp_path / 'pred')
  results = json.loads((tmp_path / 'pred' / 'keypoints_val_results.json').read_text())
  assert 0.0 <= scores['AP'] < 0.05  # random weights

  src = CocoKeypoints(data_root, 'val', aspect_ratio=96 / 128)
  perm = keypoints.flip_permutation(17, FLIP_PAIRS)
  mean, std = np.asarray(c.data.mean), np.asarray(c.data.std)
  expected = {}
  for i in range(len(src)):
    crop = keypoints.eval_crop(src[i], input_wh=(96, 128))['image']
    x = torch.from_numpy(((crop - mean) / std).astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
      plain = ref(x).permute(0, 2, 3, 1).numpy()
      mirrored = ref(torch.flip(x, dims=[3])).permute(0, 2, 3, 1).numpy()
    hm = 0.5 * (plain + np.asarray(heatmaps.flip_back(mirrored, perm)))
    coords, joint_scores = heatmaps.decode_heatmaps(hm)
    xy = keypoints.heatmap_to_image(np.asarray(coords), src.centers[i:i + 1],
                                    src.scales[i:i + 1], (24, 32))[0]
    expected.setdefault(int(src.image_ids[i]), []).append(xy)
  assert len(results) == len(src)
  errors = []
  for r in results:
    got = np.asarray(r['keypoints']).reshape(17, 3)[:, :2]
    per_person = [np.abs(got - e).max(axis=1) for e in expected[r['image_id']]]
    errors.append(min(per_person, key=np.median))  # the same person of that image
  errors = np.concatenate(errors)
  assert np.mean(errors < 1e-2) > 0.99, np.sort(errors)[-10:]

  # predict.py on the annotated boxes of three images gives eval.py's keypoints and scores.
  from hrnet_jax import predict
  annotations = json.loads((data_root / 'annotations' / 'person_keypoints_val.json').read_text())
  names = {im['id']: im['file_name'] for im in annotations['images'][:3]}
  boxes = {}
  for a in annotations['annotations']:
    if a['image_id'] in names and a['num_keypoints'] > 0:
      boxes.setdefault(names[a['image_id']], []).append(a['bbox'])
  (tmp_path / 'boxes.json').write_text(json.dumps(boxes))
  images = [str(data_root / 'images' / 'val' / n) for n in boxes]
  records = predict.run(c, str(tmp_path / 'pose.pth'), images, tmp_path / 'shown',
                        boxes_path=tmp_path / 'boxes.json').records
  compared = 0
  for record in records:
    name = pathlib.Path(record['image']).name
    assert len(record['people']) == len(boxes[name])
    evaluated = [r for r in results if names.get(r['image_id']) == name]
    for person in record['people']:
      got = np.asarray(person['keypoints'])
      match = min(evaluated, key=lambda r: np.abs(np.asarray(r['keypoints']).reshape(17, 3)
                                                  - got).max())
      np.testing.assert_allclose(np.asarray(match['keypoints']).reshape(17, 3), got, atol=2e-3)
      assert person['score'] == pytest.approx(match['score'], rel=1e-4)  # other batch sizes
      compared += 1
    picture = cv2.imread(str(tmp_path / 'shown' / record['picture']))[..., ::-1]
    image = cv2.imread(images[records.index(record)])[..., ::-1]
    assert picture.shape == image.shape and (picture != image).any()
  assert compared == sum(map(len, boxes.values()))
