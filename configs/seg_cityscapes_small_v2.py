"""HRNetV2-W18-Small-v2 on Cityscapes (76.2 mIoU val in the release)."""

from configs import seg_cityscapes


def get_config():
  c = seg_cityscapes.get_config()
  c.model.arch = 'seg_w18_small_v2'
  return c
