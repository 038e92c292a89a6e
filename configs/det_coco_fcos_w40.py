"""Alias of `det_coco_fcos.py:arch=fcos_w40` (FCOS on HRNetV2p-W40; `:schedule=2x`, `:ms` as there)."""
from configs import det_coco_fcos
def get_config(arg=None): return det_coco_fcos.get_config(f'arch=fcos_w40,{arg or ""}')
