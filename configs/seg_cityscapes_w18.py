"""Alias of `seg_cityscapes.py:arch=seg_w18`."""
from configs import seg_cityscapes
def get_config(arg=None): return seg_cityscapes.get_config(f'arch=seg_w18,{arg or ""}')
