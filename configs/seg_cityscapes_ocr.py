"""Alias of `seg_cityscapes.py:arch=seg_ocr_w48`."""
from configs import seg_cityscapes
def get_config(arg=None): return seg_cityscapes.get_config(f'arch=seg_ocr_w48,{arg or ""}')
