"""Alias of `cls_imagenet.py` (HRNet-W18-C; other widths with `:arch=cls_w48` etc.)."""
from configs import cls_imagenet
def get_config(arg=None): return cls_imagenet.get_config(arg)
