"""Alias of `pose_coco.py:demo`: a small HRNet on the embedded stick figures (COCO layout)."""
from configs import pose_coco
def get_config(arg=None): return pose_coco.get_config(f'demo,{arg or ""}')
