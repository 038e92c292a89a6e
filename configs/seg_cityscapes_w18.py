"""HRNetV2-W18 on Cityscapes: the W48 recipe with the W18 backbone."""

from configs import seg_cityscapes


def get_config():
  c = seg_cityscapes.get_config()
  c.model.arch = 'seg_w18'
  return c
