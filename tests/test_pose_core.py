"""Pose building blocks against values worked by hand: targets, crops, decoding, flip test, OKS
NMS, PCKh, the COCO metric through pycocotools, the loss, the readers."""

import copy
import json

import cv2
import numpy as np
import pytest

from hrnet_jax.data import keypoints
from hrnet_jax.data.sources import DataError, coco, mpii
from hrnet_jax.data.sources.coco import CocoKeypoints
from hrnet_jax.tasks import heatmaps, pose


# --- Targets ---------------------------------------------------------------------------------


def test_gaussian_target_values_by_hand():
  # Input 96x128 (w x h), heatmaps 24x32: stride 4. Joint (10.3, 7.6) -> centre pixel
  # (int(2.575 + 0.5), int(1.9 + 0.5)) = (3, 2).
  joints = np.array([[10.3, 7.6]])
  maps, w = keypoints.gaussian_targets(joints, np.array([1.0]), (96, 128), (24, 32), sigma=2.0)
  assert maps.shape == (32, 24, 1) and w[0] == 1.0
  assert maps[2, 3, 0] == 1.0
  assert maps[2, 4, 0] == pytest.approx(np.exp(-1 / 8))
  assert maps[4, 6, 0] == pytest.approx(np.exp(-(9 + 4) / 8))
  assert maps[8, 9, 0] == pytest.approx(np.exp(-72 / 8))  # 6 px = 3 sigma away on both axes
  assert maps[2, 10, 0] == 0.0 and maps[9, 3, 0] == 0.0  # 7 px: outside the window
  assert maps.sum() == pytest.approx(
      sum(np.exp(-((x - 3)**2 + (y - 2)**2) / 8) for x in range(0, 10) for y in range(0, 9)))


def test_gaussian_target_at_and_beyond_the_border():
  # x = -20 -> int(-5 + 0.5) = -4 (towards zero); its window reaches columns 0..2: kept, weight 1.
  # x = -40 -> -9; the window ends at column -3 (< 0): weight 0, all zero.
  # y = 130 -> int(32.5 + 0.5) = 33, below the last row (31), but its window starts at 27.
  joints = np.array([[-20.0, 40.0], [-40.0, 40.0], [50.0, 130.0], [50.0, 40.0]])
  maps, w = keypoints.gaussian_targets(joints, np.array([1.0, 1.0, 1.0, 0.0]), (96, 128),
                                       (24, 32), sigma=2.0)
  np.testing.assert_array_equal(w, [1.0, 0.0, 1.0, 0.0])
  assert maps[10, 0, 0] == pytest.approx(np.exp(-16 / 8))  # dx = 4 from mu_x = -4
  assert maps[10, 2, 0] == pytest.approx(np.exp(-36 / 8))
  assert maps[:, 3:, 0].max() == 0.0
  assert maps[..., 1].max() == 0.0 and maps[..., 3].max() == 0.0
  assert maps[31, 13, 2] == pytest.approx(np.exp(-4 / 8)) and maps[26, 13, 2] == 0.0


# --- Crops -----------------------------------------------------------------------------------


def test_box_to_center_scale_by_hand():
  c, s = keypoints.box_to_center_scale([10, 20, 30, 100], aspect_ratio=192 / 256)
  np.testing.assert_allclose(c, [25, 70])
  np.testing.assert_allclose(s, np.array([75, 100]) / 200 * 1.25)  # widened to 3:4
  c, s = keypoints.box_to_center_scale([0, 0, 150, 100], aspect_ratio=0.75)
  np.testing.assert_allclose(s, np.array([150, 200]) / 200 * 1.25)  # heightened


def test_crop_matrix_maps_centre_scale_and_rotation():
  c, s = np.array([100.0, 60.0]), np.array([0.5, 0.5 * 4 / 3])  # 100 px wide in the image
  m = keypoints.crop_matrix(c, s, 0.0, (48, 64))
  np.testing.assert_allclose(keypoints.apply_affine(np.array([[100.0, 60.0], [150.0, 60.0],
                                                              [100.0, 10.0]]), m),
                             [[24, 32], [48, 32], [24, 8]], atol=1e-9)
  # Rotated by r: the crop's "up" is the image direction (sin r, -cos r).
  r = 30.0
  m = keypoints.crop_matrix(c, s, r, (48, 64))
  up = c + 50 * np.array([np.sin(np.deg2rad(r)), -np.cos(np.deg2rad(r))])
  np.testing.assert_allclose(keypoints.apply_affine(up[None], m), [[24, 8]], atol=1e-9)
  # Back-projection of heatmap pixels (x4 smaller than the crop) inverts the crop.
  hm = keypoints.apply_affine(np.array([[130.0, 40.0]]), keypoints.crop_matrix(c, s, 0, (12, 16)))
  np.testing.assert_allclose(keypoints.heatmap_to_image(hm[None], c[None], s[None], (12, 16))[0],
                             [[130.0, 40.0]], atol=1e-9)


def _dots_sample(h=120, w=160, num=17, seed=0):
  """A black image with one bright dot per joint; each dot's grey level names its joint."""
  grid = np.stack(np.meshgrid(np.arange(5), np.arange(4)), -1).reshape(-1, 2)[:num]
  joints = (np.array([50.0, 30.0]) + 14 * grid).astype(np.float64)  # 14 px apart
  joints = joints[np.random.default_rng(seed).permutation(num)]
  image = np.zeros((h, w, 3), np.uint8)
  for k, (x, y) in enumerate(joints):
    cv2.circle(image, (int(x), int(y)), 4, (60 + 10 * k,) * 3, -1)
  return {'image': image, 'joints': joints.astype(np.float32),
          'joints_vis': np.ones(num, np.float32), 'center': np.array([80.0, 60.0], np.float32),
          'scale': np.array([0.6, 0.8], np.float32)}


def test_random_crop_targets_sit_on_the_joints_dots_with_flip_swaps():
  """Every augmented target peak lies on its own joint's dot in the warped crop; after a flip,
  on the dot of its mirror partner. Both cases must occur."""
  sample = _dots_sample()
  perm = keypoints.flip_permutation(17, coco.FLIP_PAIRS)
  seen = set()
  for seed in range(12):
    out = keypoints.random_top_down(sample, np.random.default_rng(seed), input_wh=(96, 128),
                                    heatmap_wh=(96, 128), sigma=1.0, flip_pairs=coco.FLIP_PAIRS,
                                    upper_ids=coco.UPPER_BODY, half_body_prob=0.0)
    grey = out['image'][..., 0].astype(int)
    owners = []
    for k in range(17):
      if out['target_weight'][k] == 0:
        continue
      y, x = np.unravel_index(np.argmax(out['target'][..., k]), (128, 96))
      patch = grey[max(0, y - 1):y + 2, max(0, x - 1):x + 2]
      owners.append((k, round((patch.max() - 60) / 10)))
    flipped = all(owner == perm[k] for k, owner in owners)
    assert flipped or all(owner == k for k, owner in owners), owners
    seen.add(flipped)
  assert seen == {True, False}


def test_flip_joints_is_an_involution():
  joints = np.random.default_rng(0).uniform(0, 100, (17, 2))
  vis = np.ones(17)
  once = keypoints.flip_joints(joints, vis, 120, coco.FLIP_PAIRS)
  twice = keypoints.flip_joints(*once, 120, coco.FLIP_PAIRS)
  np.testing.assert_allclose(twice[0], joints)
  np.testing.assert_allclose(once[0][1], [119 - joints[2, 0], joints[2, 1]])  # l_eye <- r_eye
  for pairs, k in ((coco.FLIP_PAIRS, 17), (mpii.FLIP_PAIRS, 16)):
    perm = keypoints.flip_permutation(k, pairs)
    np.testing.assert_array_equal(perm[perm], np.arange(k))


# --- Decoding and flip test ------------------------------------------------------------------


def test_decode_argmax_quarter_offset_and_zeroing():
  hm = np.zeros((1, 8, 10, 4), np.float32)
  hm[0, 4, 5, 0] = 1.0
  hm[0, 4, 6, 0], hm[0, 4, 4, 0] = 0.5, 0.2  # right > left: +0.25 in x
  hm[0, 3, 5, 0], hm[0, 5, 5, 0] = 0.3, 0.1  # up > down: -0.25 in y
  hm[0, 3, 1, 1] = 0.9  # x = 1: no offset (strictly inside 1 < x < W-1 only)
  hm[0, 3, 2, 1] = 0.5
  hm[..., 2] = -1.0  # maximum <= 0: coordinates zeroed
  hm[0, 2, 3, 3] = hm[0, 6, 7, 3] = 0.7  # ties: the first maximum in row-major order wins
  coords, scores = heatmaps.decode_heatmaps(hm)
  np.testing.assert_allclose(np.asarray(coords[0]), [[5.25, 3.75], [1, 3], [0, 0], [3, 2]])
  np.testing.assert_allclose(np.asarray(scores[0]), [1.0, 0.9, -1.0, 0.7])


def test_flip_back_mirrors_swaps_and_shifts():
  rng = np.random.default_rng(0)
  hm = rng.random((2, 6, 5, 17)).astype(np.float32)
  perm = keypoints.flip_permutation(17, coco.FLIP_PAIRS)
  mirrored_output = hm[:, :, ::-1][..., perm]  # what a mirror-equivariant model gives
  back = np.asarray(heatmaps.flip_back(mirrored_output, perm))
  np.testing.assert_array_equal(back[:, :, 1:], hm[:, :, :-1])
  np.testing.assert_array_equal(back[:, :, 0], hm[:, :, 0])
  np.testing.assert_array_equal(np.asarray(heatmaps.flip_back(mirrored_output, perm, shift=False)), hm)


# --- OKS NMS, rescoring, PCKh ----------------------------------------------------------------


def _person(x0, y0, score=1.0):
  k = np.zeros((17, 3))
  k[:, 0] = x0 + np.arange(17) * 3
  k[:, 1] = y0 + np.arange(17) * 5
  k[:, 2] = score
  return k


def test_oks_nms_keeps_and_drops_by_hand():
  a = _person(100, 100)
  b = _person(101, 100)  # 1 px from a: OKS 0.988 -> dropped
  c = _person(300, 100)  # far away: OKS ~ 0 -> kept
  d = _person(100, 104)  # 4 px down from a: OKS = mean exp(-16 / (2 * area * (2 sigma)^2))
  kpts = np.stack([b, a, c, d])
  scores = np.array([0.8, 0.9, 0.7, 0.6])
  areas = np.full(4, 5000.0)
  oks_ad = np.mean(np.exp(-16 / (2 * 5000 * (2 * coco.SIGMAS) ** 2)))
  assert oks_ad == pytest.approx(0.84, abs=0.01)  # below 0.9: d survives a, above 0.8 it doesn't
  assert pose.oks_nms(kpts, scores, areas, 0.9, coco.SIGMAS) == [1, 2, 3]
  assert pose.oks_nms(kpts, scores, areas, 0.8, coco.SIGMAS) == [1, 2]
  np.testing.assert_allclose(pose.oks_iou(a, d[None], 5000.0, np.array([5000.0]), coco.SIGMAS),
                             [oks_ad])
  # Joints scored at or below in_vis_thre do not count: b's are all low, so OKS is 0 and b stays.
  kpts[0, :, 2] = 0.1
  assert pose.oks_nms(kpts, scores, areas, 0.9, coco.SIGMAS, in_vis_thre=0.2) == [1, 0, 2, 3]


def test_rescore_by_hand():
  assert pose.rescore(np.array([0.9, 0.1, 0.5, 0.3]), 0.8, 0.2) == pytest.approx(0.8 * 1.7 / 3)
  assert pose.rescore(np.array([0.1, 0.2]), 0.8, 0.2) == 0.0


def test_pckh_by_hand():
  # Two people, head diagonal 10 -> 6 px at factor 0.6; threshold 0.5 -> 3 px.
  truth = np.zeros((2, 16, 2))
  pred = truth.copy()
  pred[0, 9] = [2.9, 0]  # head: correct
  pred[1, 9] = [0, 3.1]  # head: wrong
  pred[:, 13] = [5, 0]  # left shoulder: both wrong; right shoulder (12) exact
  pred[:, 6] = [100, 0]  # pelvis: wrong but not in the mean
  annotated = np.ones((2, 16))
  annotated[1, 0] = 0  # right ankle of person 1 not annotated
  r = pose.pckh(pred, truth, annotated, np.array([10.0, 10.0]))
  assert r['Head'] == 50.0 and r['Shoulder'] == 50.0 and r['Ankle'] == 100.0
  # Mean over the 14 joints but pelvis and thorax, weighted by annotation counts (27 in all):
  # joint 0 (1 annotation) 100%, head 50%, left shoulder 0%, the other 11 joints 100%.
  expected = (100 * 1 + 50 * 2 + 0 * 2 + 100 * 2 * 11) / 27
  assert r['mean'] == pytest.approx(expected)
  r = pose.pckh(pred, truth, annotated, np.array([10.0, 10.0]), threshold=0.1)
  assert r['Head'] == 0.0


# --- The COCO metric through pycocotools -----------------------------------------------------


@pytest.fixture(scope='module')
def demo_root(pose_root):
  return pose_root  # 24 train and 12 val images


def _truth_outputs(src, heatmap_wh, jitter=0.0, seed=0):
  """Eval outputs as the model would give them if its heatmaps were the ground truth."""
  w, h = heatmap_wh
  n = len(src)
  factor = src.scales[:, :1, None] * keypoints.PIXEL_STD / w
  coords = (src.joints[..., :2] - src.centers[:, None]) / factor + np.array([w / 2, h / 2])
  coords = coords + np.random.default_rng(seed).normal(0, jitter, coords.shape)
  return {'coords': coords, 'scores': np.full(coords.shape[:2], 0.9),
          'center': src.centers, 'scale': src.scales,
          'box_score': src.scores if isinstance(src, CocoKeypoints) else np.ones(n),
          'image_id': src.image_ids if isinstance(src, CocoKeypoints) else np.arange(n),
          'index': np.arange(n), 'valid': np.ones(n, np.int32)}


def test_perfect_predictions_score_ap_one_and_jittered_ones_as_pycocotools_says(demo_root):
  from pycocotools.coco import COCO
  from pycocotools.cocoeval import COCOeval
  src = coco.CocoKeypoints(demo_root, 'val', aspect_ratio=0.75)
  metric = pose.CocoKeypointMetric(src.annotation_file, (24, 32))
  metric.update(_truth_outputs(src, (24, 32)))
  r = metric.result()
  assert all(r[k] == pytest.approx(1.0) for k in ('AP', 'AP50', 'AP75', 'AR'))

  jittered = pose.CocoKeypointMetric(src.annotation_file, (24, 32))
  outputs = _truth_outputs(src, (24, 32), jitter=0.6)
  half = len(src) // 2  # two batches, one with padding rows that must not count
  first = {k: v[:half] for k, v in outputs.items()}
  second = {k: np.concatenate([v[half:], v[:2]]) for k, v in outputs.items()}
  second['valid'][-2:] = 0
  jittered.update(first), jittered.update(second)
  detections = jittered.detections()
  assert len(detections) == len(src)
  gt = COCO(str(src.annotation_file))
  ev = COCOeval(gt, gt.loadRes(copy.deepcopy(detections)), 'keypoints')  # loadRes edits
  ev.evaluate(), ev.accumulate(), ev.summarize()
  assert jittered.result()['AP'] == pytest.approx(ev.stats[0]) and ev.stats[0] < 0.9
  assert jittered.result()['AP75'] == pytest.approx(ev.stats[2])
  path = jittered.write(demo_root.parent)
  assert json.loads(path.read_text()) == json.loads(json.dumps(detections))


def test_coco_oks_nms_counts_every_joint_as_the_official_evaluation(demo_root):
  """A near copy of a person whose joints all score under in_vis_thre: the official OKS NMS
  (all joints count) drops it; counting only visible joints would keep it (OKS 0)."""
  src = coco.CocoKeypoints(demo_root, 'val', aspect_ratio=0.75)
  outputs = _truth_outputs(src, (24, 32))
  n = len(src)
  extended = {k: np.concatenate([v, v[:1]]) for k, v in outputs.items()}
  extended['index'][-1] = n
  extended['coords'][-1] += 0.05
  extended['scores'][-1] = 0.1
  metric = pose.CocoKeypointMetric(src.annotation_file, (24, 32), in_vis_thre=0.2)
  metric.update(extended)
  assert len(metric.detections()) == n
  people = [r for r in metric.predictions.rows.values() if r[4] == outputs['image_id'][0]]
  kpts = np.stack([np.concatenate([xy, s[:, None]], 1) for xy, s, *_ in people])
  areas = np.array([float(np.prod(r[2] * keypoints.PIXEL_STD)) for r in people])
  scores = np.arange(len(people), 0, -1.0)
  visible_only = pose.oks_nms(kpts, scores, areas, 0.9, coco.SIGMAS, in_vis_thre=0.2)
  assert len(visible_only) == len(people)  # the rule not taken would keep the copy


# --- Readers ---------------------------------------------------------------------------------


def _write_coco(root, annotations, images=None):
  (root / 'annotations').mkdir(parents=True, exist_ok=True)
  (root / 'images' / 'val').mkdir(parents=True, exist_ok=True)
  images = images or [{'id': 1, 'file_name': 'a.jpg', 'width': 100, 'height': 80}]
  cv2.imwrite(str(root / 'images' / 'val' / 'a.jpg'), np.zeros((80, 100, 3), np.uint8))
  path = root / 'annotations' / 'person_keypoints_val.json'
  path.write_text(json.dumps({'images': images, 'annotations': annotations}))
  return path


def test_coco_reader_cleans_boxes_and_counts_what_it_leaves_out(tmp_path):
  kp = [10, 20, 2] + [0] * 48
  anns = [{'id': 1, 'image_id': 1, 'category_id': 1, 'bbox': [-5, 10, 40, 100], 'keypoints': kp},
          {'id': 2, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 10, 10], 'iscrowd': 1,
           'keypoints': kp},
          {'id': 3, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 10, 10],
           'keypoints': [0] * 51},
          {'id': 4, 'image_id': 1, 'category_id': 1, 'bbox': [0, 0, 0, 10], 'keypoints': kp}]
  _write_coco(tmp_path, anns)
  src = coco.CocoKeypoints(tmp_path, 'val', aspect_ratio=0.75)
  assert len(src) == 1
  assert dict(src.skipped) == {'crowd': 1, 'without keypoints': 1, 'empty boxes': 1}
  # Clipped box: x1 = 0, x2 = min(99, 0 + 39) = 39, y2 = min(79, 10 + 99) = 79 -> (0, 10, 39, 69).
  c, s = keypoints.box_to_center_scale([0, 10, 39, 69], 0.75)
  np.testing.assert_allclose(src.centers[0], c)
  np.testing.assert_allclose(src.scales[0], s)
  sample = src[0]
  assert sample['image'].shape == (80, 100, 3)
  np.testing.assert_array_equal(sample['joints'][0], [10, 20])
  assert sample['joints_vis'][0] == 1 and sample['joints_vis'][1] == 0
  assert '3 ' not in src.describe() and 'crowd' in src.describe()


def test_coco_reader_detector_boxes_and_errors(tmp_path):
  _write_coco(tmp_path, [])
  dets = [{'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 30, 40], 'score': 0.9},
          {'image_id': 1, 'category_id': 1, 'bbox': [10, 10, 30, 40], 'score': 0.05},
          {'image_id': 1, 'category_id': 2, 'bbox': [10, 10, 30, 40], 'score': 0.9}]
  (tmp_path / 'dets.json').write_text(json.dumps(dets))
  src = coco.CocoKeypoints(tmp_path, 'val', aspect_ratio=0.75, det_json=tmp_path / 'dets.json',
                           image_thre=0.1)
  assert len(src) == 1 and src.scores[0] == pytest.approx(0.9)
  assert dict(src.skipped) == {'detections below image_thre': 1}
  (tmp_path / 'bad.json').write_text(json.dumps([dict(dets[0], image_id=7)]))
  with pytest.raises(DataError, match='image_id 7'):
    coco.CocoKeypoints(tmp_path, 'val', aspect_ratio=0.75, det_json=tmp_path / 'bad.json')
  with pytest.raises(DataError, match='person_keypoints_train.json'):
    coco.CocoKeypoints(tmp_path, 'train', aspect_ratio=0.75)
  _write_coco(tmp_path, [{'id': 9, 'image_id': 1, 'bbox': [0, 0, 5, 5], 'keypoints': [1, 2, 2]}])
  with pytest.raises(DataError, match='annotation 9 has 1 keypoints, expected 17'):
    coco.CocoKeypoints(tmp_path, 'val', aspect_ratio=0.75)


def test_mpii_reader_adjusts_centre_and_reads_head_boxes_from_mat_or_json(tmp_path):
  from scipy.io import savemat
  (tmp_path / 'annot').mkdir()
  (tmp_path / 'images').mkdir()
  cv2.imwrite(str(tmp_path / 'images' / 'x.jpg'), np.zeros((300, 400, 3), np.uint8))
  joints = np.arange(32, dtype=float).reshape(16, 2) + 50
  vis = np.ones(16)
  vis[3] = 0
  people = [{'image': 'x.jpg', 'center': [200, 100], 'scale': 2.0, 'joints': joints.tolist(),
             'joints_vis': vis.tolist(), 'head_box': [10, 10, 16, 18]}]
  (tmp_path / 'annot' / 'valid.json').write_text(json.dumps(people))
  src = mpii.MPII(tmp_path, 'valid')
  np.testing.assert_allclose(src.centers[0], [199, 100 + 30 - 1])  # +15 * scale, 1-based -> 0
  np.testing.assert_allclose(src.scales[0], [2.5, 2.5])
  np.testing.assert_allclose(src[0]['joints'], joints - 1)
  diag, truth, annotated = src.head_sizes_and_truth()
  assert diag[0] == pytest.approx(10.0)
  np.testing.assert_allclose(truth[0], joints - 1)
  assert annotated[0, 3] == 0
  savemat(tmp_path / 'annot' / 'gt_valid.mat',
          {'headboxes_src': np.array([[10, 10], [13, 14]], float)[:, :, None],
           'pos_gt_src': joints[:, :, None], 'jnt_missing': (1 - vis)[:, None]})
  diag, truth, annotated = src.head_sizes_and_truth()
  assert diag[0] == pytest.approx(5.0)
  np.testing.assert_allclose(truth[0], joints - 1)
  assert annotated[0, 3] == 0 and annotated[0, 4] == 1


# --- Loss and schedule -----------------------------------------------------------------------


def test_joints_mse_loss_matches_the_per_joint_formula():
  rng = np.random.default_rng(0)
  pred, target = rng.random((2, 8, 6, 5)), rng.random((2, 8, 6, 5))
  weight = np.array([[1, 0, 1, 1, 0], [1, 1, 1, 0, 1]], float)
  expected = 0.0
  for k in range(5):  # 0.5 * MSE(pred_k * w_k, gt_k * w_k), averaged over joints
    p = pred[..., k] * weight[:, k, None, None]
    g = target[..., k] * weight[:, k, None, None]
    expected += 0.5 * np.mean((p - g) ** 2) / 5
  assert float(heatmaps.joints_mse_loss(pred, target, weight)) == pytest.approx(expected, rel=1e-6)


def test_piecewise_schedule_by_epochs():
  import ml_collections
  from hrnet_jax.train import optim
  c = ml_collections.ConfigDict(dict(lr=1e-3, schedule='step', boundaries=(170, 200),
                                     gamma=0.1, warmup_steps=0))
  s = optim.make_schedule(c, 210 * 10, steps_per_epoch=10)
  assert float(s(1699)) == pytest.approx(1e-3) and float(s(1700)) == pytest.approx(1e-4)
  assert float(s(1999)) == pytest.approx(1e-4) and float(s(2000)) == pytest.approx(1e-5)


def test_pckh_metric_through_the_pose_task(tmp_path):
  """MPII end to end on the host side: outputs from the truth score 100; one joint moved by
  more than half the head size costs exactly that joint."""
  from configs import pose_mpii_w32_256x256
  (tmp_path / 'annot').mkdir()
  (tmp_path / 'images').mkdir()
  rng = np.random.default_rng(0)
  people = [{'image': 'x.jpg', 'center': [200.0 + i, 150.0], 'scale': 1.5,
             'joints': rng.uniform(100, 300, (16, 2)).tolist(), 'joints_vis': [1] * 16,
             'head_box': [0, 0, 30, 40]} for i in range(3)]
  (tmp_path / 'annot' / 'valid.json').write_text(json.dumps(people))
  c = pose_mpii_w32_256x256.get_config()
  c.data.root = str(tmp_path)
  task = pose.Pose(c)
  src = task.source('valid')
  metric = task.new_metric(src)
  outputs = _truth_outputs(src, task.heatmap_wh)
  outputs['scores'] = np.ones((3, 16))
  outputs['coords'][1, 9, 0] += 0.6 * 50 * 0.5 / (1.5 * 1.25 * 200 / 64) * 1.01  # head, person 1
  metric.update(outputs)
  r = metric.result()
  assert r['Head'] == pytest.approx(200 / 3) and r['Shoulder'] == 100.0
  assert r['pckh'] == pytest.approx(100 * (14 * 3 - 1) / (14 * 3))
  assert 'Mean@0.1' in metric.report()
  assert pose.OFFICIAL_MEAN_AT_01_THRESHOLD == pytest.approx(0.11)


def test_official_mean_at_01_is_read_at_011():
  """A joint 0.105 head-sizes off counts in the official "Mean@0.1" (threshold 0.11) but not at
  exactly 0.1."""
  truth = np.zeros((1, 16, 2))
  pred = truth.copy()
  pred[0, 9] = [0.105 * 6, 0]  # head diagonal 10 x 0.6 = 6 px per head size
  annotated = np.ones((1, 16))
  at01 = pose.pckh(pred, truth, annotated, np.array([10.0]), 0.1)
  official = pose.pckh(pred, truth, annotated, np.array([10.0]),
                       pose.OFFICIAL_MEAN_AT_01_THRESHOLD)
  assert at01['Head'] == 0.0 and official['Head'] == 100.0
