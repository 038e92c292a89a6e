"""predict.py: the boxes file, the samples a raw image becomes, one output per input, and bad
input reported and skipped without stopping the run. (Its results against eval.py's:
test_seg_train.py, test_pose_train.py, test_landmarks.py, test_cls.py.)"""

import json
import os
import subprocess
import sys

import cv2
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import recipe, write_random_checkpoint
from hrnet_jax import predict
from hrnet_jax.data import keypoints
from hrnet_jax.errors import UserError
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
  path = tmp_path_factory.mktemp('model') / 'pose'
  write_random_checkpoint(c, path)
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
  assert '3 done (3 images, 0 video frames' in done.stdout and '), 1 failed' in done.stdout
  assert 'Traceback' not in done.stderr
  (tmp_path / 'file').write_text('x')
  done = subprocess.run(args + ['--out', str(tmp_path / 'file'), str(images[0])],
                        capture_output=True, text=True, env=env)
  assert done.returncode == 2
  assert done.stderr.strip() == f'error: --out {tmp_path / "file"}: exists and is not a directory'


# --- Many inputs: folders, batches, videos ---------------------------------------------------


def write_video(path, frames: int, fps: float, size_wh=(80, 64)):
  """A synthetic video: a bright square moving over noise."""
  w, h = size_wh
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), fps, (w, h))
  rng = np.random.default_rng(3)
  for i in range(frames):
    frame = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
    frame[20:40, 2 * i % (w - 20):2 * i % (w - 20) + 20] = 230
    writer.write(frame)
  writer.release()


def test_folders_run_in_batches_as_one_by_one(pose_model, tmp_path):
  """A folder walked recursively (non-image files ignored); batches of 3 with padding give
  what single images give; a 250x190 crop is predicted and drawn at its own size."""
  c, model = pose_model
  rng = np.random.default_rng(4)
  sizes = {'d/a.png': (60, 80), 'd/sub/b.jpg': (250, 190), 'd/sub/deeper/c.png': (90, 40),
           'd/e.png': (64, 64)}
  for name, (h, w) in sizes.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(tmp_path / name), rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
  (tmp_path / 'd' / 'notes.txt').write_text('not an image')
  outcome = predict.run(c, str(model), [str(tmp_path / 'd')], tmp_path / 'out', batch=3)
  assert not outcome.failed
  assert sorted(r['picture'] for r in outcome.records) == ['a.png', 'e.png', 'sub/b.png',
                                                          'sub/deeper/c.png']
  single = predict.Predictor(c, str(model), batch=1)
  for record in outcome.records:
    image = cv2.imread(record['image'])[..., ::-1]
    expected = single(np.ascontiguousarray(image))
    np.testing.assert_allclose(record['people'][0]['keypoints'],
                               expected['people'][0]['keypoints'], rtol=1e-5, atol=1e-4)
    picture = cv2.imread(str(tmp_path / 'out' / record['picture']))
    assert picture.shape == image.shape
  crop = next(r for r in outcome.records if r['picture'] == 'sub/b.png')
  k = np.asarray(crop['people'][0]['keypoints'])
  sample, = single.task.image_samples(np.zeros((250, 190, 3), np.uint8))
  lo, hi = sample['center'] - 100 * sample['scale'], sample['center'] + 100 * sample['scale']
  assert k.shape == (17, 3) and np.all((k[:, :2] >= lo) & (k[:, :2] <= hi))  # inside the crop


def test_a_video_is_annotated_frame_by_frame(pose_model, tmp_path):
  """A 3-second 10 fps video, every 2nd frame, boxes given for frame 4 only: an annotated video
  of 15 frames at 5 fps and the frame size, a JSON line per frame with its own boxes."""
  c, model = pose_model
  video = tmp_path / 'clip.avi'
  write_video(video, 30, 10.0)
  (tmp_path / 'broken.mp4').write_bytes(b'not a video')
  boxes = tmp_path / 'boxes.json'
  boxes.write_text(json.dumps({'clip.avi': {'4': [[10, 10, 30, 40]]}}))
  out = tmp_path / 'out'
  outcome = predict.run(c, str(model), [str(video), str(tmp_path / 'broken.mp4'),
                                        str(tmp_path / 'missing.png')],
                        out, boxes_path=str(boxes), batch=4, every=2)
  assert [f for f, _ in outcome.failed] == [str(tmp_path / 'missing.png'),
                                            str(tmp_path / 'broken.mp4')]
  assert 'cannot open video' in outcome.failed[1][1]
  record, = outcome.records
  assert record['frames'] == 15 and outcome.frames == 15
  lines = [json.loads(l) for l in (out / record['frames_file']).read_text().splitlines()]
  assert [l['frame'] for l in lines] == list(range(0, 30, 2))
  assert lines[2]['people'][0]['box'] == [10.0, 10.0, 29.0, 39.0]  # frame 4: its box
  assert lines[1]['people'][0]['box'] == [0.0, 0.0, 79.0, 63.0]  # the others: the whole frame
  annotated = cv2.VideoCapture(str(out / record['annotated']))
  assert annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
  assert (annotated.get(cv2.CAP_PROP_FRAME_WIDTH), annotated.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (
      80, 64)
  frames = []
  while True:
    ok, frame = annotated.read()
    if not ok:
      break
    frames.append(frame)
  assert len(frames) == 15
  # The drawing is on the frames: frame 4 (the 3rd written) differs from the source there.
  source = cv2.VideoCapture(str(video))
  for _ in range(5):
    ok, original = source.read()
  assert np.abs(frames[2].astype(int) - original).max() > 100  # lines and dots drawn over
  assert json.loads((out / 'predictions.json').read_text()) == outcome.records


def test_a_video_without_a_decodable_frame_leaves_nothing(pose_model, tmp_path):
  """A video whose header opens but whose frames are zeros: one failure line naming it, and
  no annotated video or JSON lines left behind."""
  c, model = pose_model
  video = tmp_path / 'zeros.avi'
  write_video(video, 5, 10.0)
  data = bytearray(video.read_bytes())
  start, end = data.find(b'movi') + 26, data.find(b'idx1')
  data[start:end] = bytes(end - start)
  video.write_bytes(bytes(data))
  outcome = predict.run(c, str(model), [str(video)], tmp_path / 'out')
  assert outcome.failed == [(str(video), f'cannot decode video {video}: no frame could be read')]
  assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['predictions.json']


def test_boxes_for_videos_are_checked(tmp_path):
  bad = tmp_path / 'b.json'
  bad.write_text(json.dumps({'v.mp4': {'x': [[1, 2, 3, 4]]}}))
  with pytest.raises(UserError, match="frame 'x' must be keyed by a frame index"):
    read_boxes(bad)
  bad.write_text(json.dumps({'v.mp4': {'3': [[1, 2, 3]]}}))
  with pytest.raises(UserError, match="boxes of 'v.mp4' frame '3'"):
    read_boxes(bad)


def test_a_700x1000_street_image_is_segmented_at_its_size(seg_root, tmp_path):
  """Bilinear fusion runs any size: the label map is 700x1000, each pixel the argmax of the
  network's logits resized to the image (the recipe's whole-image protocol)."""
  c = recipe('seg_cityscapes', seg_root)
  with c.unlocked():
    c.eval.crop_size = (704, 1024)  # one window covers the image
  task = get_task(c)
  variables = write_random_checkpoint(c, tmp_path / 'seg', bn_offset=0.5)
  image = np.random.default_rng(0).integers(0, 256, (700, 1000, 3), dtype=np.uint8)
  cv2.imwrite(str(tmp_path / 'street.png'), image[..., ::-1])
  outcome = predict.run(c, str(tmp_path / 'seg'), [str(tmp_path / 'street.png')],
                        tmp_path / 'out')
  record, = outcome.records
  labels = cv2.imread(str(tmp_path / 'out' / record['labels']), cv2.IMREAD_UNCHANGED)
  assert labels.shape == (700, 1000)
  from hrnet_jax.data import transforms
  from hrnet_jax.tasks.segmentation import upsample_logits
  logits = task.create_model().apply(variables, transforms.normalize(image[None], c.data.mean,
                                                                     c.data.std))
  expected = np.asarray(jnp.argmax(upsample_logits(logits, (700, 1000), False), -1))[0]
  assert np.mean(labels == expected) > 0.999  # ties and float order aside
  assert sum(record['class_share'].values()) == pytest.approx(1.0, abs=1e-4)
  picture = cv2.imread(str(tmp_path / 'out' / record['picture']))
  assert picture.shape[0] == 700 and picture.shape[1] > 1000  # the legend beside


def test_output_names_leave_room_for_label_maps_and_the_summary(tmp_path):
  """Segmentation writes `<name>_labels.png` beside `<name>.png`: an input named s_labels.png
  must not take that name (it would overwrite s.png's label map), nor predictions.png the
  summary's."""
  paths = [tmp_path / n for n in ('s.png', 's_labels.png', 'predictions.png', 't_labels.png')]
  assert predict.output_names(paths, ('labels',)) == ['s', 's_labels_2', 'predictions_2',
                                                      't_labels']
  assert predict.output_names(paths[:2]) == ['s', 's_labels']  # no array outputs: no clash


def test_out_must_not_overwrite_inputs_or_an_earlier_run(pose_model, images, tmp_path):
  c, model = pose_model
  folder, photo = images[0].parent, images[0]
  before = photo.read_bytes()
  for out, message in ((folder, 'inside the input folder'),
                       (folder / 'shown', 'inside the input folder'),
                       (tmp_path / 'in', 'holds the input')):  # the folder's parent
    with pytest.raises(UserError, match=message):
      predict.run(c, str(model), [str(folder)], out)
  with pytest.raises(UserError, match='holds the input'):
    predict.run(c, str(model), [str(photo)], folder)  # tiny.png would replace tiny.png
  assert photo.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ['tiny.png']
  out = tmp_path / 'out'
  predict.run(c, str(model), [str(photo)], out)
  first = (out / 'tiny.json').read_text()
  with pytest.raises(UserError, match=r'earlier run \(predictions.json\): pass --overwrite'):
    predict.run(c, str(model), [str(images[1])], out)
  assert (out / 'tiny.json').read_text() == first
  outcome = predict.run(c, str(model), [str(images[1])], out, overwrite=True)
  assert len(outcome.records) == 1 and not outcome.failed


def test_pose_people_keep_their_detector_box_scores(pose_model):
  """As in evaluation, a person's score is its box score x the mean of its confident joints: a
  detector box scored 0.25 gives a quarter of the score the same box gets unscored (1.0)."""
  from hrnet_jax.tasks.pose import rescore
  c, model = pose_model
  predictor = predict.Predictor(c, model)
  image = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
  box = np.array([[10, 5, 40, 50]], np.float32)
  plain, = predictor.predictions([predictor.prepare(image, box)])[0]['people']
  scored, = predictor.predictions([predictor.prepare(image, box, box_scores=[0.25])])[0]['people']
  assert scored['keypoints'] == plain['keypoints']
  joints = np.array([k[2] for k in plain['keypoints']])
  assert plain['score'] == pytest.approx(rescore(joints, 1.0, c.eval.in_vis_thre), rel=1e-3)
  assert scored['score'] == pytest.approx(0.25 * plain['score'], rel=1e-6)
  with pytest.raises(UserError, match='image too small for pose: 1x1'):
    predictor.prepare(np.zeros((1, 1, 3), np.uint8))
