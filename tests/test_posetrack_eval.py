"""The PoseTrack metrics on hand-worked videos (the official evaluation's rules and arithmetic),
the two file layouts, and bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from hrnet_jax.data.sources import posetrack
from hrnet_jax.data.sources.posetrack import Frame, Person, Video
from hrnet_jax.data.sources.reader import DataError
from hrnet_jax.posetrack_eval import read_pairs
from hrnet_jax.tracking import posetrack_metrics as pm

# Joint j sits at the person's centre + OFFSETS[j]; the head box is 30 x 40 around the centre
# (diagonal 50, head size 0.6 x 50 = 30 px: a joint matches within 15 px).
OFFSETS = np.stack([np.arange(15) % 5 * 4.0, np.arange(15) // 5 * 6.0], 1)


def person(track_id, x, y, score=0.5, head=True):
  p = Person.empty(track_id)
  p.joints = np.asarray([x, y]) + OFFSETS
  p.present[:] = True
  p.scores = np.full(15, float(score)) if score is not None else p.scores
  p.head = np.asarray([x - 15.0, y - 20, x + 15, y + 20]) if head else None
  return p


A, B, C = (100, 100), (300, 100), (500, 300)
IGNORE = np.asarray([[450.0, 250], [600, 250], [600, 400], [450, 400]])  # around C


def hand_worked_videos():
  """Ground truth A (id 1) and B (id 2) in six frames. Predictions: frame 0 exact (7 on A,
  8 on B; C (id 3) and a prediction on it inside an ignore region); frame 1 the ids swapped
  (two switches per joint); frame 2 unlabelled (no people; its prediction is dropped); frame 3
  only A (8, 3 px off: 0.1 head sizes; B missed) and a false positive far away; frame 4 no
  predictions (one dummy miss and false positive per joint); frame 5 exact (last frame: AP
  only). The false positive scores 0.1 on joints 0-7 and 0.9 on 8-14; the rest 0.5."""
  fp = person(9, 700, 700, head=False)
  fp.scores = np.where(np.arange(15) < 8, 0.1, 0.9)
  gt = [Frame('f0.jpg', [person(1, *A), person(2, *B), person(3, *C)], [IGNORE]),
        Frame('f1.jpg', [person(1, *A), person(2, *B)]),
        Frame('f2.jpg', [], labeled=False),
        Frame('f3.jpg', [person(1, *A), person(2, *B)]),
        Frame('f4.jpg', [person(1, *A), person(2, *B)]),
        Frame('f5.jpg', [person(1, *A), person(2, *B)])]
  pred = [Frame('f0.jpg', [person(7, *A, head=False), person(8, *B, head=False),
                           person(9, *C, head=False)]),
          Frame('f1.jpg', [person(7, *B, head=False), person(8, *A, head=False)]),
          Frame('f2.jpg', [person(7, *A, head=False)]),
          Frame('f3.jpg', [person(8, A[0] + 3, A[1], head=False), fp]),
          Frame('f4.jpg', []),
          Frame('f5.jpg', [person(7, *A, head=False), person(8, *B, head=False)])]
  return Video('seq', gt, '2018'), Video('seq', pred, '2018')


def check_hand_worked(result):
  # AP: 7 true positives (2 + 2 + 1 + 2) and one false positive of 10 annotated joints per
  # joint (C's are ignored). Scored last: 0.7 x 1; first: every precision envelope is 7/8.
  want_ap = np.where(np.arange(15) < 8, 70.0, 0.7 * 7 / 8 * 100)
  np.testing.assert_allclose(result['ap']['ap'][:15], want_ap)
  assert result['ap']['ap'][15] == pytest.approx((8 * 70 + 7 * 61.25) / 15)
  np.testing.assert_allclose(result['ap']['precision'][:15], 7 / 8 * 100)
  np.testing.assert_allclose(result['ap']['recall'][:15], 70.0)
  np.testing.assert_array_equal(result['ap']['num_gt'], 10)
  # MOT over frames 0, 1, 3, 4: objects 2 + 2 + 2 + 1 (the dummy), misses 1 + 1, switches 2,
  # false positives 1 + 1, matches 2 + 2 + 1. The distance sum of MOTP runs over py-motmetrics'
  # events, as the official one sums them: the candidate pairs within the threshold (RAW) and the
  # matches, so the 3-px match counts twice: 0.2, MOTP 1 - 0.2 / 5.
  counts = result['mot']['counts']
  for key, value in [('num_objects', 7), ('num_misses', 2), ('num_switches', 2),
                     ('num_false_positives', 2), ('num_detections', 5)]:
    np.testing.assert_array_equal(counts[key], value, err_msg=key)
  np.testing.assert_allclose(counts['sum_distance'], 0.2)
  np.testing.assert_allclose(result['mot']['mota'], 100 / 7)
  np.testing.assert_allclose(result['mot']['motp'], 96.0)
  np.testing.assert_allclose(result['mot']['precision'], 500 / 7)
  np.testing.assert_allclose(result['mot']['recall'], 500 / 7)
  assert result['frames'] == 5 and result['videos'] == 1


@pytest.mark.parametrize('layout', ['2017', '2018'])
def test_hand_worked_video_through_files(tmp_path, layout):
  gt, pred = hand_worked_videos()
  (tmp_path / 'gt').mkdir()
  (tmp_path / 'pred').mkdir()
  posetrack.write_video(gt, tmp_path / 'gt' / 'seq.json', layout)
  posetrack.write_video(pred, tmp_path / 'pred' / 'seq.json', layout)
  pairs = read_pairs(tmp_path / 'gt', tmp_path / 'pred')
  assert pairs[0][0].layout == layout
  result = pm.evaluate(pairs)
  check_hand_worked(result)
  table = pm.tables(result).splitlines()
  # Head (joints 14, 12, 13) 61.25, Elb (7, 10) and Wri (6, 11) 65.6, Hip/Knee/Ankl 70.0.
  assert table[2] == '|  61.2 |  61.2 |  65.6 |  65.6 |  70.0 |  70.0 |  70.0 |  65.9 |'
  assert table[5] == '|  14.3 |  14.3 |  14.3 |  14.3 |  14.3 |  14.3 |  14.3 |  14.3 |  96.0 |' \
                     '  71.4 |  71.4 |'


def test_each_rule_changes_the_numbers():
  """The last frame, the ignore regions and the unlabelled frame each matter: without them the
  same predictions score differently (so the hand-worked numbers test each rule)."""
  gt, pred = hand_worked_videos()
  gt.frames.append(gt.frames[-1])  # frame 5 is no longer last: its two matches count
  pred.frames.append(Frame('f6.jpg', []))
  assert pm.evaluate([(gt, pred)])['mot']['counts']['num_objects'][0] == 9
  gt, pred = hand_worked_videos()
  gt.frames[0].ignore_regions = []  # C and its prediction count: one more object and match
  counts = pm.evaluate([(gt, pred)])['mot']['counts']
  assert counts['num_objects'][0] == 8 and counts['num_detections'][0] == 6
  gt, pred = hand_worked_videos()
  gt.frames[2].people = [person(1, 900, 900)]  # labelled now, far from the prediction
  counts = pm.evaluate([(gt, pred)])['mot']['counts']
  assert counts['num_misses'][0] == 3 and counts['num_false_positives'][0] == 3


def test_a_prediction_loses_a_person_another_prediction_prefers():
  """Per frame each prediction keeps its best person (the first on ties), then each person its
  best prediction: two people 10 px apart (both within 0.5 head sizes of either prediction),
  so both predictions prefer the first person and the one on the second person scores a false
  positive, as in the official evaluation."""
  gt = [person(1, 100, 100), person(2, 110, 100)]
  pred = [person(7, 100, 100), person(8, 110, 100)]
  m = pm.match_frame(gt, pred)
  np.testing.assert_array_equal([m.labels[j] for j in range(15)], [[True, False]] * 15)
  gi, pi, d = m.mot[0]  # MOT matches joints, not poses: both distances are kept
  assert gi == [1, 2] and pi == [7, 8]
  np.testing.assert_allclose(d, [[0, 10 / 30], [10 / 30, 0]], atol=1e-12)


def test_inside_polygon_by_hand():
  square = np.asarray([[0, 0], [10, 0], [10, 10], [0, 10]])
  points = [[5, 5], [10, 5], [0, 0], [11, 5], [-1, -1], [9.99, 0.01]]
  np.testing.assert_array_equal(pm.inside_polygon(points, square),
                                [True, False, False, False, False, True])
  ell = np.asarray([[0, 0], [10, 0], [10, 4], [4, 4], [4, 10], [0, 10]])  # concave
  np.testing.assert_array_equal(pm.inside_polygon([[2, 8], [8, 8], [8, 2], [4, 7]], ell),
                                [True, False, True, False])
  assert not pm.inside_polygon([[1, 1]], square[:2]).any()  # a segment contains nothing


def test_posetrack2018_slots_and_2017_people_without_points(tmp_path):
  """2018: the 17 slots by name, (0, 0, 0) absent, the ears dropped, scores per slot;
  2017: a person without annopoints is kept as read and dropped by the evaluation."""
  keypoints = np.zeros((17, 3))
  keypoints[0] = [5, 6, 1]  # nose -> joint 13
  keypoints[2] = [7, 8, 0]  # head_top, invisible but annotated -> joint 14
  keypoints[3] = [9, 9, 1]  # left ear: not a joint of the evaluation
  keypoints[16] = [1, 2, 1]  # right ankle -> joint 0
  data = {'images': [{'id': 4, 'file_name': 'a/000000.jpg'}],
          'annotations': [{'image_id': 4, 'track_id': 3, 'keypoints': keypoints.ravel().tolist(),
                           'scores': list(range(17)), 'bbox_head': [1, 2, 3, 4]}],
          'categories': [{'name': 'person', 'keypoints': list(posetrack.SLOTS_2018)}]}
  (tmp_path / 'v.json').write_text(json.dumps(data))
  p = posetrack.read_video(tmp_path / 'v.json').frames[0].people[0]
  np.testing.assert_array_equal(np.flatnonzero(p.present), [0, 13, 14])
  np.testing.assert_array_equal(p.joints[[0, 13, 14]], [[1, 2], [5, 6], [7, 8]])
  np.testing.assert_array_equal(p.scores[[0, 13, 14]], [16, 0, 2])
  np.testing.assert_array_equal(p.head, [1, 2, 4, 6])
  old = {'annolist': [{'image': [{'name': 'a/000000.jpg'}], 'annorect': [
      {'track_id': [0], 'x1': [0], 'y1': [0], 'x2': [30], 'y2': [40]},
      {'track_id': [1], 'x1': [0], 'y1': [0], 'x2': [30], 'y2': [40], 'annopoints': [
          {'point': [{'id': [13], 'x': [5], 'y': [6]}, {'id': [13], 'x': [50], 'y': [60]}]}]}]}]}
  (tmp_path / 'old.json').write_text(json.dumps(old))
  video = posetrack.read_video(tmp_path / 'old.json')
  first, second = video.frames[0].people
  assert not first.has_points and second.has_points
  np.testing.assert_array_equal(second.joints[13], [5, 6])  # the first point of an id
  kept = pm.evaluated_frames(video, video)
  assert [len(g) for g, _ in kept] == [1]


def test_bad_input_names_the_file_and_field(tmp_path):
  (tmp_path / 'gt').mkdir()
  (tmp_path / 'pred').mkdir()
  gt, pred = hand_worked_videos()
  posetrack.write_video(gt, tmp_path / 'gt' / 'seq.json')
  with pytest.raises(DataError, match=r'--pred .*no prediction for 1 of 1 videos \(first: seq'):
    read_pairs(tmp_path / 'gt', tmp_path / 'pred')
  short = Video('seq', pred.frames[:3], '2018')
  posetrack.write_video(short, tmp_path / 'pred' / 'seq.json')
  with pytest.raises(DataError, match='prediction seq: 3 frames, the ground truth has 6'):
    pm.evaluate(read_pairs(tmp_path / 'gt', tmp_path / 'pred'))
  pred.frames[1].people[1].track_id = 7
  with pytest.raises(DataError, match=r'prediction seq: frame 1 \(f1.jpg\) repeats a track_id'):
    pm.evaluate([(gt, pred)])
  pm.evaluate([(gt, pred)], track=False)  # AP alone needs no ids
  data = posetrack.video_to_json(gt)
  del data['annotations'][2]['keypoints']
  (tmp_path / 'gt' / 'seq.json').write_text(json.dumps(data))
  with pytest.raises(DataError, match=r"seq.json: annotations\[2\]: missing field 'keypoints'"):
    posetrack.read_video(tmp_path / 'gt' / 'seq.json')
  (tmp_path / 'gt' / 'seq.json').write_text(json.dumps({'images': []}))
  with pytest.raises(DataError, match='seq.json: not a PoseTrack video file'):
    posetrack.read_video(tmp_path / 'gt' / 'seq.json')
  gt.frames[1].people[0].head = None
  with pytest.raises(DataError, match='ground truth seq: a person .track 1. has no head box'):
    pm.evaluate([(gt, hand_worked_videos()[1])])


def test_command_line_prints_the_tables_and_writes_json(tmp_path):
  gt, pred = hand_worked_videos()
  for name, video in (('gt', gt), ('pred', pred)):
    (tmp_path / name).mkdir()
    posetrack.write_video(video, tmp_path / name / 'seq.json', '2017')
  out = tmp_path / 'metrics.json'
  run = subprocess.run([sys.executable, '-m', 'hrnet_jax.posetrack_eval', '--gt',
                        str(tmp_path / 'gt'), '--pred', str(tmp_path / 'pred'), '--json',
                        str(out)], capture_output=True, text=True, timeout=120)
  assert run.returncode == 0, run.stderr
  assert '1 videos, 5 frames with labelled people' in run.stdout
  assert '|  14.3 |  14.3 |' in run.stdout
  written = json.loads(out.read_text())
  assert written['names'][15] == 'total' and written['mota'][15] == pytest.approx(100 / 7)
  bad = subprocess.run([sys.executable, '-m', 'hrnet_jax.posetrack_eval', '--gt',
                        str(tmp_path / 'nothing'), '--pred', str(tmp_path / 'pred')],
                       capture_output=True, text=True, timeout=120)
  assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
      f'error: --gt {tmp_path / "nothing"}: not a directory']


# --- the demo videos and the training samples ------------------------------------------------


@pytest.fixture(scope='module')
def demo_root(tmp_path_factory):
  from hrnet_jax.data.demos import write_posetrack_demo
  return write_posetrack_demo(tmp_path_factory.mktemp('posetrack') / 'demo',
                              videos={'train': 3, 'val': 1}, frames=6)


def test_demo_videos_hold_crossing_tracks(demo_root):
  """Every frame labelled; ids unique per frame and stable; the first two people swap their
  left-to-right order within each video (they cross); perfect predictions score 100."""
  pairs = read_pairs(demo_root / 'annotations' / 'train', demo_root / 'annotations' / 'train')
  assert len(pairs) == 3
  for video, _ in pairs:
    assert len(video.frames) == 6 and all(f.people for f in video.frames)
    order = []
    for frame in video.frames:
      ids = [p.track_id for p in frame.people]
      assert len(set(ids)) == len(ids) and {0, 1} <= set(ids)
      x = {p.track_id: p.joints[p.present, 0].mean() for p in frame.people}
      order.append(x[0] < x[1])
      assert all(p.head is not None for p in frame.people)
      assert (demo_root / frame.image).is_file()
    assert order[0] and not order[-1]
  result = pm.evaluate(pairs)
  np.testing.assert_allclose(result['ap']['ap'], 100.0)
  np.testing.assert_allclose(result['mot']['mota'], 100.0)


def test_demo_person_boxes_for_a_detector(demo_root):
  """The instances file the detector trains on: one box per annotated person and frame, each
  the tight box of the person's drawing: it holds the joints and passes them by no more than
  the drawing's thickness when all are inside the frame (limbs, hands and feet under 0.06 of
  the height; the height is the head box's side / 0.12)."""
  from hrnet_jax.data.sources.coco_detection import CocoDetection
  src = CocoDetection(demo_root, 'train', train=False)
  pairs = read_pairs(demo_root / 'annotations' / 'train', demo_root / 'annotations' / 'train')
  frames = [f for video, _ in pairs for f in video.frames]
  assert len(src) == len(frames) == 18
  for i, frame in enumerate(frames):
    sample = src[i]
    assert src.names[i] == frame.image.split('/', 2)[2]
    boxes = sample['boxes']
    assert len(boxes) == len(frame.people) and (sample['labels'] == 0).all()
    for person in frame.people:
      j = person.joints[person.present]
      extent = np.concatenate([j.min(0), j.max(0)])
      margin = np.abs(boxes - extent).max(1)
      box = boxes[margin.argmin()]
      # (1.5 px: the head circle's centre and radius are drawn rounded to whole pixels)
      assert ((j >= box[:2] - 1.5) & (j <= box[2:] + 1.5)).all()
      height = (person.head[2] - person.head[0]) / 0.12
      if person.present.all():  # (a joint outside the frame is not annotated but drawn)
        assert margin.min() <= 0.06 * height + 1.5, (frame.image, margin.min(), height)


def test_training_samples_from_either_layout(demo_root, tmp_path):
  """Boxes = the joints' extent + 15% (worked by hand for one person), the 17 slots (ears
  empty, head_bottom and head_top not a flip pair), the same samples from a 2017 copy, whose
  one-joint person is left out and counted."""
  src = posetrack.PoseTrackKeypoints(demo_root, 'val', aspect_ratio=192 / 256)
  video = posetrack.read_video(sorted((demo_root / 'annotations' / 'val').glob('*.json'))[0])
  people = [p for f in video.frames for p in f.people]
  assert len(src) == len(people) and (1, 2) not in src.FLIP_PAIRS
  sample = src[0]
  first = people[0]
  assert sample['image'].shape == (192, 256, 3)
  xy = first.joints[first.present]
  w, h = np.ptp(xy[:, 0]) * 1.15, np.ptp(xy[:, 1]) * 1.15
  h = max(h, w / (192 / 256))  # widened to the input's aspect, then x1.25, in 200-px units
  np.testing.assert_allclose(sample['center'], (xy.min(0) + xy.max(0)) / 2, rtol=1e-6)
  np.testing.assert_allclose(sample['scale'], [h * 192 / 256 * 1.25 / 200, h * 1.25 / 200],
                             rtol=1e-5)
  np.testing.assert_array_equal(sample['joints_vis'][[3, 4]], 0)
  np.testing.assert_allclose(sample['joints'][[0, 1, 2]], first.joints[[13, 12, 14]])
  np.testing.assert_allclose(sample['joints'][16], first.joints[0])  # right ankle
  old = tmp_path / 'annotations' / 'val'
  old.mkdir(parents=True)
  lone = person(9, 50, 50)
  lone.present[1:] = False  # one joint: no box
  video.frames[0].people.append(lone)
  posetrack.write_video(video, old / f'{video.name}.json', '2017')
  (tmp_path / 'images').symlink_to(demo_root / 'images')
  again = posetrack.PoseTrackKeypoints(tmp_path, 'val', aspect_ratio=192 / 256)
  assert len(again) == len(src)
  for key in ('joints', 'joints_vis', 'center', 'scale'):
    np.testing.assert_allclose(again[3][key], src[3][key], err_msg=key)
  assert 'left out: none' in src.describe()
  assert 'left out: 1 people whose joints span no area' in again.describe()


def test_pose_task_scores_its_estimates_with_the_posetrack_ap(demo_root):
  """The pose task's PoseTrack metric puts each sample's estimate back into its frame (every
  joint predicted; those the truth lacks scored 0, so ranked last): the annotated joints score
  100; one person's joints moved 200 px away (scored 0.5) lose exactly their matches."""
  from hrnet_jax.tasks.pose import PoseTrackMetric
  src = posetrack.PoseTrackKeypoints(demo_root, 'val', aspect_ratio=0.75)
  metric = PoseTrackMetric(src, (24, 32))
  for i in range(len(src)):
    metric.predictions.rows[i] = (src.joints[i, :, :2].astype(np.float64),
                                  src.joints[i, :, 2].astype(np.float64), None, 1.0, 0)
  result = metric.result()
  assert result['mAP'] == pytest.approx(100.0) and result['Head'] == pytest.approx(100.0)
  assert 'PoseTrack AP (6 labelled frames)' in metric.report()
  metric = PoseTrackMetric(src, (24, 32))
  for i in range(len(src)):
    moved = 200.0 * (i == 0)
    metric.predictions.rows[i] = (src.joints[i, :, :2].astype(np.float64) + moved,
                                  src.joints[i, :, 2] * (0.5 if moved else 1.0), None, 1.0, 0)
  ap = metric.result()['ap']
  present = src.joints[0, list(posetrack.SLOT_OF_JOINT), 2] > 0
  num_gt = metric.evaluation()['ap']['num_gt']
  np.testing.assert_allclose(ap[:15], np.where(present, (num_gt - 1) / num_gt * 100, 100.0),
                             rtol=1e-12)
