"""Alias of `seg_cityscapes.py:arch=seg_w18_small_v2`."""
from configs import seg_cityscapes
def get_config(arg=None): return seg_cityscapes.get_config(f'arch=seg_w18_small_v2,{arg or ""}')
