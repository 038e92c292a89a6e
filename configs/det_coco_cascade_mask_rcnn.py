"""Cascade Mask R-CNN on HRNetV2p-W32 on COCO instance segmentation, mmdetection v2's release
(box / mask AP on val2017, 20 epochs: W18 41.6 / 36.4, W32 44.3 / 38.6, W40 45.1 / 39.3).

Cascade R-CNN's recipe (det_coco_cascade_rcnn.py) with a mask head per stage (as
det_coco_mask_rcnn.py), each trained on its stage's positive samples and weighted as its stage
(1 / 0.5 / 0.25). Evaluation: the cascade's boxes, then the mean of the three heads' mask
probabilities for each detection, pasted into its box on the original image (>= 0.5).
  python eval.py --config configs/det_coco_cascade_mask_rcnn.py \\
      --checkpoint cascade_mask_rcnn_hrnetv2p_w32_20e_coco.pth --config.data.root=/data/coco
Variants: `:arch=cascade_mask_rcnn_w18` / `cascade_mask_rcnn_w40`; `:legacy` (the paper's
mmdetection v1.0 W48 checkpoint, `:arch=cascade_mask_rcnn_w48,legacy`, as det_coco_mask_rcnn.py);
`:demo`; `:runlocal`.
"""

from configs.det_coco_cascade_rcnn import cascade_losses
from configs.det_coco_mask_rcnn import mask_config


def get_config(arg=None):
  c = mask_config(arg, 'cascade_mask_rcnn', 'det_coco_cascade_mask_rcnn.py', '20e')
  cascade_losses(c)
  return c
