"""Alias of `seg_cityscapes.py:demo`: HRNetV2-W18-Small-v1 on the embedded street scenes."""
from configs import seg_cityscapes
def get_config(arg=None): return seg_cityscapes.get_config(f'demo,{arg or ""}')
