"""Alias of `pose_coco.py:arch=pose_w48,size=256x192`."""
from configs import pose_coco
def get_config(arg=None): return pose_coco.get_config(f'arch=pose_w48,size=256x192,{arg or ""}')
