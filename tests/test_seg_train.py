"""The trainer on segmentation: learning on the demo, exact resume, init_from, the NaN guard, and
eval.py on a converted PyTorch checkpoint against the PyTorch forward. (Device and process counts:
test_scale.py.)"""

import json
import pathlib

import cv2
import jax
import numpy as np
import pytest

from conftest import randomize_torch_bn
from hrnet_jax.data import demo
from hrnet_jax.train import checkpoint
from hrnet_jax.train.loop import NonFiniteLossError, train_and_evaluate
from seg_tiny import tiny_config

@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
  return demo.write_seg_demo(tmp_path_factory.mktemp('data') / 'demo', num_train=48, num_val=8,
                             size_hw=(64, 128))


def read_scalars(workdir, tag):
  """Values of one TensorBoard scalar, read back from the event files."""
  from tensorboardX.proto import event_pb2
  values = []
  for f in sorted((pathlib.Path(workdir) / 'tensorboard').glob('events.out.tfevents.*')):
    data = f.read_bytes()
    pos = 0
    while pos < len(data):
      n = int.from_bytes(data[pos:pos + 8], 'little')
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in event.summary.value:
        if v.tag == tag:
          values.append((event.step, v.simple_value))
  return values


def test_training_on_the_demo_learns(data_root, tmp_path):
  c = tiny_config(data_root, steps=100, batch_size=8)
  c.optimizer.lr = 0.05
  c.log_every_steps = 10
  c.eval.every_steps = 50
  results = train_and_evaluate(c, str(tmp_path))
  losses = [v for _, v in read_scalars(tmp_path, 'train/loss')]
  assert len(losses) == 10
  assert losses[-1] < 0.5 * losses[0]
  # 8 classes appear in the demo scenes: chance mIoU over them is ~1/8 at best.
  assert results['miou_present'] > 0.35 and results['pixel_acc'] > 0.7
  assert [s for s, _ in read_scalars(tmp_path, 'eval/miou')] == [50, 100]


def flat(tree):
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_resume_is_bit_exact(data_root, tmp_path):
  c = tiny_config(data_root, steps=6)
  c.checkpoint.every_steps = 100
  c.log_every_steps = 1
  train_and_evaluate(c, str(tmp_path / 'straight'))
  train_and_evaluate(c, str(tmp_path / 'resumed'), stop_at=3)
  assert checkpoint.latest_step_dir(tmp_path / 'resumed').name == '3'
  train_and_evaluate(c, str(tmp_path / 'resumed'))
  a, _ = checkpoint.load_variables(tmp_path / 'straight')
  b, _ = checkpoint.load_variables(tmp_path / 'resumed')
  fa, fb = flat(a), flat(b)
  assert fa.keys() == fb.keys()
  for k in fa:
    np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
  sa = read_scalars(tmp_path / 'straight', 'train/loss')
  sb = read_scalars(tmp_path / 'resumed', 'train/loss')
  assert len(sa) == 6 and sa == sb  # steps 1-3 from the first run, 4-6 from the resumed one


def test_init_from_loads_the_backbone_and_keeps_the_head(data_root, tmp_path):
  c = tiny_config(data_root, steps=2)
  train_and_evaluate(c, str(tmp_path / 'pre'))
  pre, _ = checkpoint.load_variables(tmp_path / 'pre')
  c2 = tiny_config(data_root, steps=1)
  c2.optimizer.lr = 0.0
  c2.optimizer.weight_decay = 0.0
  c2.init_from = str(tmp_path / 'pre')
  c2.seed = 7
  train_and_evaluate(c2, str(tmp_path / 'fine'))
  fine, _ = checkpoint.load_variables(tmp_path / 'fine')
  for k, v in flat(pre['params']['backbone']).items():
    np.testing.assert_array_equal(flat(fine['params']['backbone'])[k], v, err_msg=k)
  head_pre, head_fine = flat(pre['params']['head']), flat(fine['params']['head'])
  assert any(not np.array_equal(head_pre[k], head_fine[k]) for k in head_pre)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
  c = tiny_config(data_root, steps=4)
  c.checkpoint.every_steps = 2
  c.eval.every_steps = 100
  train_and_evaluate(c, str(tmp_path), stop_at=2)
  good = checkpoint.load_variables(tmp_path)[0]
  c.optimizer.lr = 1e30  # diverges at once
  with pytest.raises(NonFiniteLossError, match='step'):
    train_and_evaluate(c, str(tmp_path))
  assert checkpoint.latest_step_dir(tmp_path).name == '2'
  again = checkpoint.load_variables(tmp_path)[0]
  for k, v in flat(good).items():
    np.testing.assert_array_equal(flat(again)[k], v)


def test_eval_and_predict_on_a_converted_pytorch_checkpoint_match_pytorch(data_root, tmp_path):
  torch = pytest.importorskip('torch')
  from configs import seg_demo
  from hrnet_jax import evaluate, torch_reference
  from hrnet_jax.data.sources.cityscapes import CityscapesFolder
  from hrnet_jax.tasks import segmentation as seg

  ref = torch_reference.build('seg_w18_small_v1', num_classes=19)
  randomize_torch_bn(ref)
  torch.save(ref.state_dict(), tmp_path / 'model.pth')
  c = seg_demo.get_config()
  c.data.root = str(data_root)
  c.eval.batch_size = 4
  scores = evaluate.run(c, str(tmp_path / 'model.pth'), predictions_dir=tmp_path / 'pred',
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
    same.append((png == seg.colorize(pred, seg.dataset_info('cityscapes')[1])).all(-1).mean())
  expected = seg.scores_from_confusion(confusion)
  assert min(same) > 0.999
  assert abs(scores['miou'] - expected['miou']) < 1e-3
  assert json.loads((tmp_path / 'scores.json').read_text())['miou'] == pytest.approx(scores['miou'])

  # predict.py on two of the images: the same class map as eval.py's, drawn with a legend.
  from hrnet_jax import predict
  images = [str(src.images[i]) for i in (0, 1)]
  records = predict.run(c, str(tmp_path / 'model.pth'), images, tmp_path / 'shown')
  palette = seg.dataset_info('cityscapes')[1]
  for i, record in enumerate(records):
    labels = cv2.imread(str(tmp_path / 'shown' / record['labels']), cv2.IMREAD_UNCHANGED)
    eval_png = cv2.imread(str(tmp_path / 'pred' / f'{src.names[i]}.png'))[..., ::-1]
    np.testing.assert_array_equal(seg.colorize(labels, palette), eval_png)
    shares = record['class_share']
    counts = np.bincount(labels.reshape(-1), minlength=19)
    names = seg.dataset_info('cityscapes')[0]
    assert shares == {names[k]: pytest.approx(counts[k] / labels.size, abs=1e-6)  # 6 decimals
                      for k in np.flatnonzero(counts)}
    picture = cv2.imread(str(tmp_path / 'shown' / f'{pathlib.Path(images[i]).stem}.png'))[..., ::-1]
    h, w = labels.shape
    assert picture.shape == (h, w + 220, 3)
    blend = (0.5 * src[i]['image'] + 0.5 * seg.colorize(labels, palette)).astype(np.uint8)
    np.testing.assert_array_equal(picture[:, :w], blend)
    assert (picture[:, w:] != 255).any()  # the legend
