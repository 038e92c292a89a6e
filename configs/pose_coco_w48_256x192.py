"""HRNet-W48 on COCO keypoints at 256x192; paper: 75.1 AP."""

from configs import pose_coco_w32_256x192


def get_config():
  c = pose_coco_w32_256x192.get_config()
  c.model.arch = 'pose_w48'
  return c
