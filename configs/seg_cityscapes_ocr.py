"""HRNetV2-W48 + OCR on Cityscapes: align_corners True, aux loss weight 0.4 (plain CE on the
aux head), otherwise the W48 recipe."""

from configs import seg_cityscapes


def get_config():
  c = seg_cityscapes.get_config()
  c.model.arch = 'seg_ocr_w48'
  c.loss.aux_weight = 0.4
  return c
