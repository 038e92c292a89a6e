"""Segmentation end to end: the demo learns through the trainer, and eval.py / predict.py on a
converted PyTorch checkpoint give the PyTorch forward's class maps. (The trainer's mechanics:
test_trainer.py; device and process counts: test_scale.py.)"""

import json

import cv2
import numpy as np
import pytest

from conftest import randomize_torch_bn, read_scalars, recipe
from hrnet_jax.data import demos
from hrnet_jax.train.loop import train_and_evaluate

pytestmark = pytest.mark.slow


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return demos.write_seg_demo(tmp_path_factory.mktemp('data') / 'demo', num_train=48,
                                  num_val=8, size_hw=(64, 128))


def test_training_on_the_demo_learns(data_root, tmp_path):
  c = recipe('seg_cityscapes', data_root)
  c.batch_size, c.total_steps = 8, 100
  c.log_every_steps = 10
  c.eval.every_steps = 50
  c.checkpoint.every_steps = 50
  results = train_and_evaluate(c, str(tmp_path))
  losses = [v for _, v in read_scalars(tmp_path, 'train/loss')]
  assert len(losses) == 10
  assert losses[-1] < 0.5 * losses[0]
  # 8 classes appear in the demo scenes: chance mIoU over them is ~1/8 at best.
  assert results['miou_present'] > 0.35 and results['pixel_acc'] > 0.7
  assert [s for s, _ in read_scalars(tmp_path, 'eval/miou')] == [50, 100]


def test_eval_and_predict_on_a_converted_pytorch_checkpoint_match_pytorch(data_root, tmp_path):
  torch = pytest.importorskip('torch')
  from hrnet_jax import evaluate_checkpoint
  from hrnet_jax.convert import torch_hrnet
  from hrnet_jax.data.sources.cityscapes import PALETTE, CLASS_NAMES, CityscapesFolder
  from hrnet_jax.tasks import segmentation as seg

  ref = torch_hrnet.build('seg_w18_small_v1', num_classes=19)
  randomize_torch_bn(ref)
  torch.save(ref.state_dict(), tmp_path / 'model.pth')
  c = recipe('seg_cityscapes', data_root, 'demo')
  c.eval.batch_size = 4
  scores = evaluate_checkpoint.run(c, str(tmp_path / 'model.pth'),
                                   predictions_dir=tmp_path / 'pred',
                                   results_path=tmp_path / 'scores.json')

  src = CityscapesFolder(data_root, 'val')
  mean, std = np.asarray(c.data.mean), np.asarray(c.data.std)
  confusion = np.zeros((19, 19), np.int64)
  same = []
  for i in range(len(src)):
    sample = src[i]
    x = torch.from_numpy(((sample['image'] - mean) / std).astype(np.float32)).permute(2, 0, 1)
    with torch.no_grad():
      logits = torch.nn.functional.interpolate(ref(x[None]), size=sample['label'].shape,
                                               mode='bilinear', align_corners=False)
    pred = logits[0].argmax(0).numpy()
    valid = sample['label'] != 255
    confusion += np.bincount(sample['label'][valid].astype(int) * 19 + pred[valid],
                             minlength=361).reshape(19, 19)
    png = cv2.imread(str(tmp_path / 'pred' / f'{src.names[i]}.png'))[..., ::-1]
    same.append((png == seg.colorize(pred, PALETTE)).all(-1).mean())
  expected = seg.scores_from_confusion(confusion)
  assert min(same) > 0.999
  assert abs(scores['miou'] - expected['miou']) < 1e-3
  assert json.loads((tmp_path / 'scores.json').read_text())['miou'] == pytest.approx(scores['miou'])

  # predict.py on two of the images: the same class map as eval.py's, drawn with a legend.
  from hrnet_jax import predict
  images = [str(src.images[i]) for i in (0, 1)]
  records = predict.run(c, str(tmp_path / 'model.pth'), images, tmp_path / 'shown').records
  for i, record in enumerate(records):
    labels = cv2.imread(str(tmp_path / 'shown' / record['labels']), cv2.IMREAD_UNCHANGED)
    eval_png = cv2.imread(str(tmp_path / 'pred' / f'{src.names[i]}.png'))[..., ::-1]
    np.testing.assert_array_equal(seg.colorize(labels, PALETTE), eval_png)
    counts = np.bincount(labels.reshape(-1), minlength=19)
    assert record['class_share'] == {  # rounded to 6 decimals
        CLASS_NAMES[k]: pytest.approx(counts[k] / labels.size, abs=1e-6)
        for k in np.flatnonzero(counts)}
    picture = cv2.imread(str(tmp_path / 'shown' / record['picture']))[..., ::-1]
    h, w = labels.shape
    assert picture.shape == (h, w + 220, 3)
    blend = (0.5 * src[i]['image'] + 0.5 * seg.colorize(labels, PALETTE)).astype(np.uint8)
    np.testing.assert_array_equal(picture[:, :w], blend)
    assert (picture[:, w:] != 255).any()  # the legend
