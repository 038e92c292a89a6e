"""Embedded demo datasets, generated deterministically on first use in the real on-disk layouts
(into `$HRNET_JAX_CACHE`, default ~/.cache/hrnet_jax), so the real readers, pipelines and
metrics run on them offline. One writer per task: seg_demo (Cityscapes layout), pose_demo (COCO
keypoints), face_demo (300W), cls_demo (ImageFolder), det_demo (COCO instances), posetrack_demo
(PoseTrack2018 videos); store.py writes each once, atomically."""

from hrnet_jax.data.demos.cls_demo import CLS_CLASSES, cls_demo_root, write_cls_demo
from hrnet_jax.data.demos.det_demo import DET_CATEGORIES, det_demo_root, write_det_demo
from hrnet_jax.data.demos.face_demo import face_demo_root, write_face_demo
from hrnet_jax.data.demos.pose_demo import pose_demo_root, write_pose_demo
from hrnet_jax.data.demos.posetrack_demo import posetrack_demo_root, write_posetrack_demo
from hrnet_jax.data.demos.seg_demo import seg_demo_root, write_seg_demo
from hrnet_jax.data.demos.store import cache_dir

__all__ = ['CLS_CLASSES', 'DET_CATEGORIES', 'cache_dir', 'cls_demo_root', 'det_demo_root',
           'face_demo_root', 'pose_demo_root', 'posetrack_demo_root', 'seg_demo_root',
           'write_cls_demo', 'write_det_demo', 'write_face_demo', 'write_pose_demo',
           'write_posetrack_demo', 'write_seg_demo']
