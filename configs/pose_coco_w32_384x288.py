"""HRNet-W32 on COCO keypoints at 384x288 (heatmaps 96x72, sigma 3); paper: 75.8 AP."""

from configs import pose_coco_w32_256x192


def get_config():
  c = pose_coco_w32_256x192.get_config()
  c.data.input_size = (384, 288)
  c.data.heatmap_size = (96, 72)
  c.data.sigma = 3.0
  return c
