"""Alias of `cls_imagenet.py:demo`: a small HRNet-C on 10 classes of synthetic shapes."""
from configs import cls_imagenet
def get_config(arg=None): return cls_imagenet.get_config(f'demo,{arg or ""}')
