"""HRNet-W48 on COCO keypoints at 384x288 (heatmaps 96x72, sigma 3); paper: 76.3 AP."""

from configs import pose_coco_w32_384x288


def get_config():
  c = pose_coco_w32_384x288.get_config()
  c.model.arch = 'pose_w48'
  return c
