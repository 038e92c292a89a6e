"""The pose tracker: flow moving points, DIS flow against a known shift, and ids kept through
the demo videos' crossings (poses from the ground truth: the tracking logic alone), scored by
the PoseTrack metrics."""

import numpy as np
import pytest

from hrnet_jax.data import demos
from hrnet_jax.data.sources import posetrack
from hrnet_jax.data.sources.reader import read_image
from hrnet_jax.tracking import posetrack_metrics as pm
from hrnet_jax.tracking.flow import DISFlow, move_points
from hrnet_jax.tracking.track_videos import ground_truth_boxes, to_person
from hrnet_jax.tracking.tracker import PoseTracker, TrackerSettings, box_iou


def test_move_points_samples_the_flow_bilinearly():
  h, w = 6, 8
  xs, ys = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
  flow = np.stack([0.5 * xs, 2.0 + 0 * ys], -1)  # linear in x: bilinear sampling is exact
  np.testing.assert_allclose(move_points(np.asarray([[3.5, 1.25], [0, 0]]), flow),
                             [[3.5 + 1.75, 3.25], [0, 2]])
  # Outside the frame the flow is read at the nearest edge; the point itself is not clamped.
  np.testing.assert_allclose(move_points(np.asarray([[20.0, -3.0]]), flow), [[23.5, -1.0]])


def test_dis_flow_finds_a_known_shift():
  rng = np.random.default_rng(0)
  texture = rng.uniform(0, 255, (24, 32, 3))
  texture = np.kron(texture, np.ones((6, 6, 1)))  # 144 x 192, blocky
  import cv2
  image = cv2.GaussianBlur(texture, (7, 7), 2).astype(np.uint8)
  shifted = np.roll(image, (-3, 4), axis=(0, 1))  # content moves right 4, up 3
  flow = DISFlow('medium')(image, shifted)
  np.testing.assert_allclose(np.median(flow[20:-20, 20:-20].reshape(-1, 2), 0), [4, -3],
                             atol=0.25)
  with pytest.raises(ValueError, match="DIS preset 'slow'"):
    DISFlow('slow')


def track_demo(drop_every=0, settings=TrackerSettings()):
  """Tracks the demo's validation videos: the detector gives the ground-truth people's boxes
  (joints + 15%), except person 0's in every `drop_every`-th frame; the estimator returns the
  ground-truth pose of the person whose box overlaps most. -> (results, dropped person-frames)."""
  root = demos.posetrack_demo_root()
  pairs, dropped = [], 0
  for path in sorted((root / 'annotations' / 'val').glob('*.json')):
    video = posetrack.read_video(path)
    tracker = PoseTracker(None, DISFlow('medium'), settings)
    frames = []
    for t, frame in enumerate(video.frames):
      people = [posetrack.to_slots(p) for p in frame.people]
      boxes, _ = ground_truth_boxes(frame)

      def estimate(image, asked, people=people, boxes=boxes):
        del image
        best = box_iou(asked, boxes).argmax(1)
        return (np.stack([people[b][:, :2] for b in best]),
                np.stack([np.where(people[b][:, 2] > 0, 0.9, 0.1) for b in best]))

      tracker.estimate = estimate
      detections = np.concatenate([boxes, np.ones((len(boxes), 1))], 1)
      if drop_every and t % drop_every == drop_every - 1:
        detections = detections[[p.track_id != 0 for p in frame.people]]
        dropped += 1
      out = [to_person(pose, settings.joint_score)
             for pose in tracker.step(read_image(root / frame.image), detections)]
      assert len({p.track_id for p in out}) == len(out)  # ids unique within a frame
      frames.append(posetrack.Frame(frame.image, out))
    pairs.append((video, posetrack.Video(video.name, frames, video.layout)))
  return pm.evaluate(pairs), dropped


def test_ids_survive_the_crossings():
  """With every person detected: no id switch, nothing missed (MOTA 100). FlowTrack's rule
  (flow-moved poses alone, no colours) loses an id where the small person walks behind a
  crossing one; the flow and the colours keep it."""
  result, _ = track_demo()
  counts = result['mot']['counts']
  assert counts['num_switches'].sum() == 0 and counts['num_misses'].sum() == 0
  assert result['mot']['mota'][-1] == pytest.approx(100.0)
  flowtrack, _ = track_demo(settings=TrackerSettings(velocity_too=False, appearance=0.0))
  assert flowtrack['mot']['counts']['num_switches'].sum() > 0
  coloured, _ = track_demo(settings=TrackerSettings(velocity_too=False))
  assert coloured['mot']['counts']['num_switches'].sum() == 0


def test_boxes_moved_by_flow_recover_missed_detections():
  """Person 0's detection removed in every third frame: the previous frame's pose moved by the
  flow gives the box back (most of the dropped person-frames are found) and the id stays."""
  result, dropped = track_demo(drop_every=3)
  counts = result['mot']['counts']
  assert dropped >= 24
  assert counts['num_switches'].sum() == 0
  # Misses are counted per joint: at most one dropped person-frame of the 24 stays missed.
  assert counts['num_misses'].sum() <= 15 + 1
  assert result['mot']['mota'][-1] > 99.0


def test_a_hidden_person_keeps_the_id_by_its_velocity():
  """A person walking right 12 px a frame, hidden (no detection, no pose) in frames 3 and 4,
  found again 36 px on from where last seen: compared where its velocity takes it, the id
  stays; with the flow alone (no motion here) it is a new person."""
  from hrnet_jax.data.demos.pose_demo import pose_keypoints
  pose = pose_keypoints(np.random.default_rng(0), 20.0, 10.0, 100.0)
  frame = np.zeros((160, 200, 3), np.uint8)
  no_motion = lambda a, b: np.zeros(a.shape[:2] + (2,))

  def ids(settings):
    tracker, out = PoseTracker(None, no_motion, settings), []
    for t in range(6):
      here = pose + [12.0 * t, 0.0]
      visible = t not in (3, 4)

      def estimate(image, boxes, here=here, visible=visible):
        del image
        return (np.repeat(here[None], len(boxes), 0),
                np.full((len(boxes), 17), 0.9 if visible else 0.0))

      tracker.estimate = estimate
      box = np.concatenate([here.min(0) - 5, here.max(0) + 5, [1.0]])[None]
      out.append([p.track_id for p in tracker.step(frame, box if visible else box[:0])])
    return out

  assert ids(TrackerSettings()) == [[0], [0], [0], [], [], [0]]
  assert ids(TrackerSettings(velocity_too=False)) == [[0], [0], [0], [], [], [1]]


def test_a_pose_of_few_joints_neither_takes_a_track_nor_starts_one():
  """Frame 1 has no detection of the person of frame 0, only two small false boxes whose poses
  keep 5 joints: one on the person's head (its joints exactly there), one elsewhere. With
  min_joints 8 both are dropped and the person is found by the box moved from frame 0 (all 17
  joints, id 0); with 3 the head pose takes id 0 and the other starts id 1."""
  from hrnet_jax.data.demos.pose_demo import pose_keypoints
  pose = pose_keypoints(np.random.default_rng(0), 60.0, 10.0, 100.0)
  frame = np.zeros((160, 200, 3), np.uint8)
  no_motion = lambda a, b: np.zeros(a.shape[:2] + (2,))
  head = np.concatenate([pose[:5].min(0) - 2, pose[:5].max(0) + 2])
  far = head + [100, 40, 100, 40]
  partial = np.where(np.arange(17)[:, None] < 5, 1.0, 0.0)

  def estimate(image, boxes):
    del image
    joints, scores = [], []
    for box in boxes:
      shift = [100, 40] if np.allclose(box, far) else [0, 0]
      few = np.allclose(box, head) or np.allclose(box, far)
      joints.append(pose + shift)
      scores.append(np.where(partial[:, 0] > 0, 0.9, 0.1) if few else np.full(17, 0.9))
    return np.asarray(joints), np.asarray(scores)

  def run(settings):
    tracker = PoseTracker(estimate, no_motion, settings)
    full = np.concatenate([pose.min(0) - 5, pose.max(0) + 5, [1.0]])[None]
    first = tracker.step(frame, full)
    second = tracker.step(frame, np.asarray([[*head, 0.9], [*far, 0.9]]))
    return [[(p.track_id, int((p.scores > 0.4).sum())) for p in f] for f in (first, second)]

  assert run(TrackerSettings()) == [[(0, 17)], [(0, 17)]]
  assert run(TrackerSettings(min_joints=3)) == [[(0, 17)], [(0, 5), (1, 5)]]


def test_pose_look_is_the_median_colour_along_each_part():
  """Joints on a painted frame: each part's colour is the median of 5 pixels at 20-80% along
  its segments (left and right arms together); parts without kept joints are NaN."""
  from hrnet_jax.data.demos.pose_demo import pose_keypoints
  from hrnet_jax.tracking.tracker import look_similarity, pose_look
  joints = pose_keypoints(np.random.default_rng(0), 60.0, 10.0, 100.0)
  assert (joints.min(0) >= 0).all() and (joints.max(0) < [200, 160]).all()
  frame = np.zeros((160, 200, 3), np.uint8)
  frame[..., 0] = np.arange(200)[None, :]  # red = x, green = y: a pixel's colour is its place
  frame[..., 1] = np.arange(160)[:, None]
  kept = np.ones(17, bool)
  kept[[13, 15]] = False  # the left shin and thigh: only the right side is seen

  def expected(segments):
    at = np.linspace(0.2, 0.8, 5)[:, None]
    points = np.concatenate([np.rint(a * (1 - at) + b * at) for a, b in segments])
    return np.median(np.stack([points[:, 0], points[:, 1], 0 * points[:, 0]], 1), 0)

  look = pose_look(frame, joints, kept)
  neck, hips = joints[[5, 6]].mean(0), joints[[11, 12]].mean(0)
  np.testing.assert_allclose(look[0], expected([(joints[0], neck)]))
  np.testing.assert_allclose(look[1], expected([(neck, hips)]))
  np.testing.assert_allclose(look[2], expected([(joints[5], joints[7]), (joints[6], joints[8])]))
  np.testing.assert_allclose(look[4], expected([(joints[12], joints[14])]))
  np.testing.assert_allclose(look[5], expected([(joints[14], joints[16])]))
  kept[[14, 16]] = False
  assert np.isnan(pose_look(frame, joints, kept)[5]).all()
  # Similarity: the mean of exp(-d^2 / 2 sigma^2) over the parts seen in both.
  a = np.full((6, 3), np.nan)
  b = a.copy()
  a[0], b[0] = [10, 20, 30], [13, 24, 30]  # d = 5
  a[1], b[1] = [0, 0, 0], [0, 0, 0]  # d = 0
  a[2] = [1, 1, 1]  # seen in one only
  assert look_similarity(a, b, 5.0) == pytest.approx((np.exp(-0.5) + 1) / 2)
  assert look_similarity(a, np.full((6, 3), np.nan), 5.0) == 0.0


def test_a_hidden_person_found_off_the_path_keeps_the_id_by_colour():
  """A person seen in frame 0 and hidden in frame 1 is found in frame 2 shifted so far that the
  pose alone is too unlike (OKS between 0.05 and 0.3): by the paper's pose-only rule
  (appearance 0) a new id; with the colours along the limbs the same id, and a person dressed
  otherwise at the same place still a new one."""
  from hrnet_jax.data.demos.pose_demo import pose_keypoints
  from hrnet_jax.tracking.tracker import _Track
  pose = pose_keypoints(np.random.default_rng(0), 40.0, 10.0, 100.0)
  shifted = pose + [16.0, 6.0]
  no_motion = lambda a, b: np.zeros(a.shape[:2] + (2,))
  kept = np.full(17, 0.9)
  oks = PoseTracker(None, no_motion)._similarity(shifted, kept, None, _Track(0, pose, kept, pose))
  assert 0.05 < oks < 0.3

  def ids(settings, second_colour):
    tracker, out = PoseTracker(None, no_motion, settings), []
    for t, (here, colour) in enumerate(((pose, (200, 40, 40)), (None, None),
                                        (shifted, second_colour))):
      frame = np.zeros((160, 200, 3), np.uint8)
      if here is not None:
        frame[:] = colour  # the person's colours are all the frame shows
      seen = pose if here is None else here  # hidden: the estimate finds no joint
      tracker.estimate = lambda image, boxes, seen=seen, score=0.0 if here is None else 0.9: (
          np.repeat(seen[None], len(boxes), 0), np.full((len(boxes), 17), score))
      box = (np.concatenate([here.min(0) - 5, here.max(0) + 5, [1.0]])[None]
             if here is not None else np.zeros((0, 5)))
      out.append([p.track_id for p in tracker.step(frame, box)])
    return out

  no_velocity = dict(velocity_too=False)  # still: no motion to find it by
  assert ids(TrackerSettings(**no_velocity), (200, 40, 40)) == [[0], [], [0]]
  assert ids(TrackerSettings(**no_velocity, appearance=0.0), (200, 40, 40)) == [[0], [], [1]]
  assert ids(TrackerSettings(**no_velocity), (40, 40, 200)) == [[0], [], [1]]


def test_tracker_settings_from_the_config():
  """config.tracking overrides the defaults; a misspelt key is one line naming it."""
  import ml_collections
  from hrnet_jax.errors import ConfigError
  from hrnet_jax.tracking.tracker import tracker_settings, tracking_config
  config = ml_collections.ConfigDict({'tracking': tracking_config()})
  config.tracking.appearance = 0.0
  assert tracker_settings(config, 0.3) == TrackerSettings(detection_score=0.3, appearance=0.0)
  assert tracker_settings(ml_collections.ConfigDict(), 0.5) == TrackerSettings()
  config.tracking.apperance = 1.0
  with pytest.raises(ConfigError, match='config.tracking.apperance: not a tracker setting'):
    tracker_settings(config, 0.5)


@pytest.mark.slow
def test_eval_and_predict_track_with_a_trained_checkpoint(tmp_path):
  """train.py (the tiny recipe, 6 steps) then eval.py --track with the ground-truth people's
  boxes: one prediction file per validation video in the ground truth's layout, and
  posetrack_eval on those files prints the tables eval.py printed; then predict.py --track."""
  import json
  import subprocess
  import sys
  recipe = ['--config', 'configs/pose_posetrack.py:runlocal']
  work, pred = tmp_path / 'run', tmp_path / 'pred'
  subprocess.run([sys.executable, 'train.py', *recipe, '--workdir', str(work)], check=True,
                 capture_output=True, timeout=600)
  done = subprocess.run([sys.executable, 'eval.py', *recipe, '--checkpoint', str(work),
                         '--track', '--predictions', str(pred), '--results',
                         str(tmp_path / 'scores.json')], capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr
  truth = sorted((demos.posetrack_demo_root() / 'annotations' / 'val').glob('*.json'))
  assert sorted(p.name for p in pred.glob('*.json')) == [p.name for p in truth]
  again = subprocess.run([sys.executable, '-m', 'hrnet_jax.posetrack_eval', '--gt',
                          str(truth[0].parent), '--pred', str(pred)], capture_output=True,
                         text=True, timeout=120)
  assert again.returncode == 0, again.stderr
  table = again.stdout.split('Average Precision (AP):')[1]
  assert table.strip() in done.stdout
  scores = json.loads((tmp_path / 'scores.json').read_text())
  assert len(scores['mota']) == 16 and len(scores['ap']) == 16

  # predict.py --track on a clip of the first validation video, the people's boxes given per
  # frame: a video and a JSON line per frame with the track ids; an image is refused.
  import cv2
  video = posetrack.read_video(truth[0])
  root = demos.posetrack_demo_root()
  clip = tmp_path / 'clip.mp4'
  writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*'mp4v'), 10, (256, 192))
  boxes = {}
  for i, frame in enumerate(video.frames):
    writer.write(read_image(root / frame.image)[..., ::-1])
    xyxy, _ = ground_truth_boxes(frame)
    boxes[str(i)] = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1).tolist()
  writer.release()
  (tmp_path / 'boxes.json').write_text(json.dumps({'clip.mp4': boxes}))
  shown = subprocess.run([sys.executable, 'predict.py', *recipe, '--checkpoint', str(work),
                          '--track', '--boxes', str(tmp_path / 'boxes.json'), '--out',
                          str(tmp_path / 'shown'), str(clip), str(root / video.frames[0].image)],
                         capture_output=True, text=True, timeout=600)
  assert shown.returncode == 1 and '--track: only videos are tracked' in shown.stderr
  written = list((tmp_path / 'shown').rglob('clip.jsonl'))  # named under the inputs' common
  assert len(written) == 1  # folder
  lines = [json.loads(x) for x in written[0].read_text().splitlines()]
  assert len(lines) == len(video.frames)
  for line in lines:
    ids = [p['track_id'] for p in line['people']]
    assert len(set(ids)) == len(ids)
  assert written[0].with_suffix('.mp4').stat().st_size > 0
