"""Alias of `det_coco_fcos.py:arch=fcos_w32` (FCOS on HRNetV2p-W32; `:schedule=2x`, `:ms` as there)."""
from configs import det_coco_fcos
def get_config(arg=None): return det_coco_fcos.get_config(f'arch=fcos_w32,{arg or ""}')
