"""Alias of `det_coco_fcos.py:demo`: a small FCOS-HRNet on the embedded shapes-and-people scenes."""
from configs import det_coco_fcos
def get_config(arg=None): return det_coco_fcos.get_config(f'demo,{arg or ""}')
