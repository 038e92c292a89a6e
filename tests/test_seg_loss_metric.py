"""Segmentation loss and metric against independent numpy / PyTorch computations."""

import numpy as np
import pytest

from hrnet_jax.tasks import segmentation as seg


def random_case(seed=0, n=2, h=9, w=11, k=5, ignore_frac=0.2):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 2, (n, h, w, k)).astype(np.float32)
  labels = rng.integers(0, k, (n, h, w)).astype(np.int32)
  labels[rng.random((n, h, w)) < ignore_frac] = 255
  return logits, labels


def np_nll(logits, labels):
  z = logits.astype(np.float64)
  logp = z - z.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  safe = np.where(labels == 255, 0, labels)
  return -np.take_along_axis(logp, safe[..., None], -1)[..., 0]


def test_confusion_matrix_equals_numpy_bincount():
  rng = np.random.default_rng(3)
  k = 7
  labels = rng.integers(0, k, (3, 20, 30))
  labels[rng.random(labels.shape) < 0.3] = 255
  pred = rng.integers(0, k, labels.shape)
  valid = labels != 255
  expected = np.bincount(labels[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
  got = np.asarray(seg.confusion_matrix(pred, labels, k))
  np.testing.assert_array_equal(got, expected)


def test_scores_by_hand():
  confusion = np.array([[3, 0, 1], [1, 2, 0], [0, 0, 0]])  # rows ground truth, columns prediction
  # class 0: gt 4, pred 4, tp 3 -> 3/5; class 1: gt 3, pred 2, tp 2 -> 2/3; class 2: gt 0,
  # pred 1, tp 0 -> 0.
  s = seg.scores_from_confusion(confusion)
  np.testing.assert_allclose(s['iou'], [3 / 5, 2 / 3, 0.0])
  assert s['miou'] == pytest.approx((3 / 5 + 2 / 3) / 3)
  assert s['pixel_acc'] == pytest.approx(5 / 7)
  assert s['mean_acc'] == pytest.approx((3 / 4 + 2 / 3 + 0) / 3)
  assert s['miou_present'] == pytest.approx((3 / 5 + 2 / 3) / 2)


def test_weighted_cross_entropy_equals_numpy_and_torch():
  logits, labels = random_case()
  weights = np.linspace(0.5, 1.5, 5)
  nll = np_nll(logits, labels)
  valid = labels != 255
  w = weights[np.where(valid, labels, 0)] * valid
  expected = (nll * w).sum() / w.sum()
  got = float(seg.cross_entropy(logits, labels, tuple(weights)))
  assert got == pytest.approx(expected, rel=1e-5)
  torch = pytest.importorskip('torch')
  ref = torch.nn.functional.cross_entropy(
      torch.from_numpy(logits).permute(0, 3, 1, 2), torch.from_numpy(labels).long(),
      weight=torch.tensor(weights, dtype=torch.float32), ignore_index=255)
  assert got == pytest.approx(float(ref), rel=1e-5)


def np_ohem(logits, labels, weights, thresh, min_kept):
  """The OHEM rule written out in numpy: sort true-class probabilities of valid pixels."""
  nll = np_nll(logits, labels)
  valid = labels != 255
  w = weights[np.where(valid, labels, 0)]
  losses, probs = (nll * w)[valid], np.exp(-nll)[valid]
  order = np.argsort(probs, kind='stable')
  probs, losses = probs[order], losses[order]
  threshold = max(probs[min(min_kept, probs.size - 1)], thresh)
  return losses[probs < threshold].mean(), threshold


@pytest.mark.parametrize('thresh,min_kept', [(0.7, 10), (0.05, 150), (0.05, 10**6)])
def test_ohem_equals_numpy(thresh, min_kept):
  logits, labels = random_case(seed=5, n=2, h=12, w=10, k=4)
  weights = np.array([0.8, 1.2, 1.0, 0.9])
  expected, threshold = np_ohem(logits, labels, weights, thresh, min_kept)
  if thresh == 0.05 and min_kept == 150:
    assert threshold > thresh  # the min_kept branch sets the threshold
  got = float(seg.ohem_cross_entropy(logits, labels, tuple(weights), thresh, min_kept))
  assert got == pytest.approx(expected, rel=1e-5)


def test_losses_of_an_all_ignored_batch_are_zero():
  logits, labels = random_case()
  labels[:] = 255
  assert float(seg.cross_entropy(logits, labels)) == 0.0
  assert float(seg.ohem_cross_entropy(logits, labels)) == 0.0


def test_ohem_groups_mine_each_run_of_images_apart():
  """The official per-GPU rule: groups of `group` images, each with its own threshold, the loss
  the mean of the groups' losses (4 images in 2 groups here)."""
  logits, labels = random_case(seed=6, n=4, h=12, w=10, k=4)
  weights = np.ones(4)
  thresh, min_kept = 0.05, 100
  per_group = [np_ohem(logits[i:i + 2], labels[i:i + 2], weights, thresh, min_kept)[0]
               for i in (0, 2)]
  got = float(seg.ohem_cross_entropy(logits, labels, None, thresh, min_kept, group=2))
  assert got == pytest.approx(np.mean(per_group), rel=1e-5)
  whole = np_ohem(logits, labels, weights, thresh, min_kept)[0]
  assert abs(whole - np.mean(per_group)) > 1e-3  # the grouping changes the loss
  assert float(seg.ohem_cross_entropy(logits, labels, None, thresh, min_kept, group=4)) == \
      pytest.approx(whole, rel=1e-5)
  with pytest.raises(ValueError, match='ohem_group 3 must divide the batch of 4'):
    seg.ohem_cross_entropy(logits, labels, None, thresh, min_kept, group=3)
