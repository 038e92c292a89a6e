"""Alias of `pose_coco.py:arch=pose_w32,size=384x288`."""
from configs import pose_coco
def get_config(arg=None): return pose_coco.get_config(f'arch=pose_w32,size=384x288,{arg or ""}')
