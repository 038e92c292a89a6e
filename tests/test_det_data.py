"""Detection data: the COCO instances reader (mmdetection v2's annotation rules) on hand-built
files, plain image lists, and the embedded detection demo."""

import collections
import json
import pickle
import re
import types

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from hrnet_jax.data import demos
from hrnet_jax.data.sources import DEMO_ROOTS, DataError, reader_class
from hrnet_jax.data.sources.coco_detection import CocoDetection, ImageFiles

DATA = types.SimpleNamespace(train_split='train', eval_split='val')
# COCO ids out of order: labels follow the sorted ids (2 -> 0, 5 -> 1).
CATEGORIES = [{'id': 5, 'name': 'cat', 'supercategory': 'animal'},
              {'id': 2, 'name': 'dog', 'supercategory': 'animal'}]


def image_entry(image_id, h, w):
  return {'id': image_id, 'file_name': f'{image_id:04d}.png', 'height': h, 'width': w}


def ann(ann_id, image_id, bbox, category_id=5, **extra):
  entry = {'id': ann_id, 'image_id': image_id, 'category_id': category_id, 'bbox': bbox,
           'area': bbox[2] * bbox[3], 'iscrowd': 0}
  return dict(entry, **extra)


def write_coco(root, split, images, annotations, categories=CATEGORIES):
  """A COCO instances file and its images (each filled with its id, BGR -> a known RGB)."""
  (root / 'annotations').mkdir(parents=True, exist_ok=True)
  (root / 'images' / split).mkdir(parents=True, exist_ok=True)
  for im in images:
    pixels = np.zeros((im['height'], im['width'], 3), np.uint8)
    pixels[..., 0], pixels[..., 2] = im['id'] % 256, 200  # B = id, R = 200
    cv2.imwrite(str(root / 'images' / split / im['file_name']), pixels)
  path = root / 'annotations' / f'instances_{split}.json'
  path.write_text(json.dumps({'images': images, 'annotations': annotations,
                              'categories': categories}))
  return path


def test_boxes_labels_and_samples(tmp_path):
  write_coco(tmp_path, 'train', [image_entry(7, 40, 60), image_entry(3, 50, 50)],
             [ann(1, 7, [1.5, 2.25, 10, 20.5], category_id=5),
              ann(2, 7, [0, 0, 60, 40], category_id=2),
              ann(3, 3, [10, 10, 5, 5], category_id=2)])
  src = CocoDetection.from_config(DATA, str(tmp_path), 'train')
  assert src.train and len(src) == 2
  assert src.class_names == ('dog', 'cat')
  np.testing.assert_array_equal(src.category_ids, [2, 5])
  assert src.category_ids.dtype == np.int64
  np.testing.assert_array_equal(src.image_ids, [7, 3])
  assert src.file_names == ['0007.png', '0003.png']
  np.testing.assert_array_equal(src.heights, [40, 50])
  np.testing.assert_array_equal(src.widths, [60, 50])
  assert src.annotation_file == tmp_path / 'annotations' / 'instances_train.json'
  sample = src[0]
  assert set(sample) == {'image', 'boxes', 'labels', 'image_id'}
  assert sample['image'].shape == (40, 60, 3) and sample['image'].dtype == np.uint8
  np.testing.assert_array_equal(sample['image'][0, 0], [200, 0, 7])  # RGB
  assert sample['boxes'].dtype == np.float32 and sample['labels'].dtype == np.int32
  np.testing.assert_array_equal(sample['boxes'], [[1.5, 2.25, 11.5, 22.75], [0, 0, 60, 40]])
  np.testing.assert_array_equal(sample['labels'], [1, 0])
  assert sample['image_id'] == 7 and sample['image_id'].dtype == np.int64
  np.testing.assert_array_equal(src[1]['boxes'], [[10, 10, 15, 15]])
  assert '2 images, 3 boxes of 2 classes (left out: none)' in src.describe()
  again = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(again[0]['boxes'], sample['boxes'])


def skip_fixture(root, split='train'):
  images = [image_entry(1, 48, 64), image_entry(2, 40, 40), image_entry(3, 20, 40),
            image_entry(4, 64, 48)]
  annotations = [
      ann(1, 1, [4, 4, 20, 10]),  # kept
      ann(2, 1, [4, 4, 20, 10], iscrowd=1),
      ann(3, 1, [64, 0, 10, 10]),  # starts at the right edge: no overlap
      ann(4, 1, [-12, 5, 12, 10]),  # ends at the left edge: no overlap
      ann(5, 1, [0, 0, 0.5, 10]),  # w < 1
      ann(6, 1, [0, 0, 10, 0.9]),  # h < 1
      ann(7, 1, [0, 0, 10, 10], area=0),
      ann(8, 2, [1, 1, 30, 30], category_id=2, iscrowd=1),  # image 2: a crowd only
      ann(9, 3, [1, 1, 10, 10]),  # image 3: 20 pixels high
  ]  # image 4: no annotation
  write_coco(root, split, images, annotations)


def test_training_skips_are_counted(tmp_path):
  skip_fixture(tmp_path)
  src = CocoDetection(tmp_path, 'train', train=True)
  # Image 2 (a crowd only) stays as all background, as mmdetection keeps it.
  assert len(src) == 2
  np.testing.assert_array_equal(src.image_ids, [1, 2])
  np.testing.assert_array_equal(src[0]['boxes'], [[4, 4, 24, 14]])
  assert src[1]['boxes'].shape == (0, 4)
  assert src.skipped == collections.Counter({
      'crowd': 2, 'boxes outside the image': 2, 'boxes under 1 pixel or of zero area': 3,
      'images without annotations': 1, 'images smaller than 32': 1})
  assert '1 images without annotations' in src.describe()


def test_evaluation_keeps_every_image_in_file_order(tmp_path):
  skip_fixture(tmp_path, 'val')
  src = CocoDetection.from_config(DATA, str(tmp_path), 'val')
  assert not src.train
  np.testing.assert_array_equal(src.image_ids, [1, 2, 3, 4])
  assert [len(src[i]['boxes']) for i in range(4)] == [1, 0, 1, 0]
  assert src[3]['boxes'].shape == (0, 4) and src[3]['labels'].shape == (0,)
  assert 'images without annotations' not in src.skipped
  assert src.skipped['crowd'] == 2


def test_sizes_and_box_counts_before_reading(tmp_path):
  images = [image_entry(1, 40, 60), image_entry(2, 60, 40), image_entry(3, 48, 48)]
  write_coco(tmp_path, 'val', images, [ann(1, 3, [1, 1, 5, 5]), ann(2, 3, [2, 2, 9, 9])])
  src = CocoDetection(tmp_path, 'val')
  np.testing.assert_array_equal(src.heights, [40, 60, 48])
  np.testing.assert_array_equal(src.widths, [60, 40, 48])
  np.testing.assert_array_equal(src.num_boxes, [0, 0, 2])


def test_unknown_category_and_image_name_the_file(tmp_path):
  path = write_coco(tmp_path, 'train', [image_entry(1, 40, 40)], [ann(17, 1, [0, 0, 5, 5], 9)])
  with pytest.raises(DataError, match=re.escape(str(path)) + '.*annotation 17.*category_id 9'):
    CocoDetection(tmp_path, 'train')
  write_coco(tmp_path, 'train', [image_entry(1, 40, 40)], [ann(18, 4, [0, 0, 5, 5])])
  with pytest.raises(DataError, match=re.escape(str(path)) + '.*annotation 18.*image_id 4'):
    CocoDetection(tmp_path, 'train')


def test_missing_annotation_file(tmp_path):
  (tmp_path / 'images' / 'train').mkdir(parents=True)
  with pytest.raises(DataError, match='instances_train.json') as e:
    CocoDetection(tmp_path, 'train')
  assert 'COCO 2017 layout' in str(e.value)


def test_categories_from_the_evaluation_file(tmp_path):
  path = write_coco(tmp_path, 'val', [], [])
  ids, names = CocoDetection.categories(DATA, tmp_path)
  np.testing.assert_array_equal(ids, [2, 5])
  assert names == ('dog', 'cat')
  write_coco(tmp_path, 'val', [], [], categories=[])
  with pytest.raises(DataError, match=re.escape(str(path))):
    CocoDetection.categories(DATA, tmp_path)
  with pytest.raises(DataError, match='instances_val.json'):
    CocoDetection.categories(DATA, tmp_path / 'nowhere')


def test_image_files(tmp_path):
  images = [image_entry(11, 40, 60), image_entry(12, 60, 40)]
  write_coco(tmp_path, 'val', images, [])
  json_path = tmp_path / 'person_keypoints_val.json'
  json_path.write_text(json.dumps({'images': images}))
  src = ImageFiles.from_coco_json(json_path, tmp_path / 'images' / 'val')
  assert len(src) == 2 and src.split == 'images'
  assert src.names == [str(tmp_path / 'images' / 'val' / '0011.png'),
                       str(tmp_path / 'images' / 'val' / '0012.png')]
  np.testing.assert_array_equal(src.heights, [40, 60])
  np.testing.assert_array_equal(src.num_boxes, [0, 0])
  sample = src[1]
  assert set(sample) == {'image', 'boxes', 'labels', 'image_id'}
  assert sample['image'].shape == (60, 40, 3)
  assert sample['boxes'].shape == (0, 4) and sample['boxes'].dtype == np.float32
  assert sample['labels'].shape == (0,) and sample['labels'].dtype == np.int32
  assert sample['image_id'] == 12 and sample['image_id'].dtype == np.int64
  direct = ImageFiles([tmp_path / 'images' / 'val' / '0011.png'], [5], [(40, 60)], split='mine')
  assert direct.split == 'mine' and direct[0]['image_id'] == 5
  with pytest.raises(DataError, match='as many'):
    ImageFiles(['a.jpg', 'b.jpg'], [1], [(4, 4)])
  json_path.write_text(json.dumps({'annotations': []}))
  with pytest.raises(DataError, match=re.escape(str(json_path))):
    ImageFiles.from_coco_json(json_path, tmp_path)


def test_registered_as_a_detection_dataset():
  assert reader_class('coco_detection', 'detection') is CocoDetection
  assert reader_class('det_demo', 'detection') is CocoDetection
  assert getattr(demos, DEMO_ROOTS['det_demo']) is demos.det_demo_root


# --- The demo ---------------------------------------------------------------------------------


def test_demo_loads_in_pycocotools_with_boxes_inside(det_demo_root):
  for split, count in (('train', 24), ('val', 8)):
    coco = COCO(str(det_demo_root / 'annotations' / f'instances_{split}.json'))
    assert len(coco.getImgIds()) == count
    assert sorted(coco.getCatIds()) == [1, 13, 37]
    for a in coco.dataset['annotations']:
      im = coco.imgs[a['image_id']]
      x, y, w, h = a['bbox']
      assert x >= 0 and y >= 0 and w >= 1 and h >= 1
      assert x + w <= im['width'] and y + h <= im['height']
      assert a['area'] > 0 and a['segmentation']
  ids = [im['id'] for im in COCO(str(det_demo_root / 'annotations' / 'instances_val.json'))
         .dataset['images']]
  assert ids[0] == 1000001


def test_demo_through_the_reader(det_demo_root):
  train = CocoDetection.from_config(DATA, str(det_demo_root), 'train')
  val = CocoDetection.from_config(DATA, str(det_demo_root), 'val')
  assert len(val) == 8 and 0 < len(train) <= 24
  assert train.class_names == ('person', 'stop sign', 'sports ball')
  np.testing.assert_array_equal(train.category_ids, [1, 13, 37])
  ids, names = CocoDetection.categories(DATA, det_demo_root)
  np.testing.assert_array_equal(ids, [1, 13, 37])
  assert names == train.class_names
  labels = np.concatenate([train.labels, val.labels])
  assert set(labels.tolist()) == {0, 1, 2}
  landscape = np.concatenate([train.widths > train.heights, val.widths > val.heights])
  assert set(landscape.tolist()) == {False, True}  # both orientations
  for i in (0, 1):
    sample = val[i]
    assert sample['image'].shape == (val.heights[i], val.widths[i], 3)
    boxes = sample['boxes']
    assert (boxes[:, 2] <= val.widths[i]).all() and (boxes[:, 3] <= val.heights[i]).all()


def test_demo_is_deterministic(tmp_path):
  roots = [demos.write_det_demo(tmp_path / name, num_train=4, num_val=2, seed=3)
           for name in ('a', 'b')]
  for split in ('train', 'val'):
    a, b = ((r / 'annotations' / f'instances_{split}.json').read_bytes() for r in roots)
    assert a == b
  names = sorted(p.name for p in (roots[0] / 'images' / 'train').iterdir())
  for name in names:
    assert ((roots[0] / 'images' / 'train' / name).read_bytes()
            == (roots[1] / 'images' / 'train' / name).read_bytes())
  other = demos.write_det_demo(tmp_path / 'c', num_train=4, num_val=2, seed=4)
  assert ((other / 'annotations' / 'instances_train.json').read_bytes()
          != (roots[0] / 'annotations' / 'instances_train.json').read_bytes())
