"""Mask R-CNN on HRNetV2p-W32 on COCO instance segmentation, mmdetection v2's release (box / mask
AP on val2017: W18 37.7 / 34.2 (1x), 39.8 / 36.0 (2x); W32 41.2 / 37.1, 42.5 / 37.8; W40
42.1 / 37.5, 42.8 / 38.2). Cascade Mask R-CNN: det_coco_cascade_mask_rcnn.py.

Faster R-CNN's recipe (det_coco_faster_rcnn.py) with a mask head: 14x14 RoIAlign features of each
positive sample, four 3x3 convs, a 2x2 transposed conv, 80 class maps of 28x28; targets are the
ground-truth masks (COCO polygons or RLE, `config.data.masks`) RoIAligned into the sample's box
and thresholded at 0.5; per-pixel sigmoid cross-entropy of the sample's class. Evaluation: the
box protocol, then each detection's mask pasted into its box on the original image (>= 0.5),
COCOeval bbox and segm.
  python train.py --config configs/det_coco_mask_rcnn.py --config.data.root=/data/coco \\
      --config.init_from=hrnetv2_w32_imagenet_pretrained.pth
  python eval.py --config configs/det_coco_mask_rcnn.py \\
      --checkpoint mask_rcnn_hrnetv2p_w32_1x_coco.pth --config.data.root=/data/coco
Variants: `:arch=mask_rcnn_w18` / `mask_rcnn_w40`, `:schedule=2x`; `:legacy` (evaluates
mmdetection v1.0 / v0.x checkpoints: their layout, 81 mask maps with the background's first, v1's
test arithmetic and mask paste; evaluation only); `:demo` (the embedded scenes, whose objects
carry their exact silhouettes); `:runlocal` (a tiny model, 6 steps).
"""

from configs import common
from configs.det_coco_faster_rcnn import two_stage_config


def mask_config(arg, family: str, name: str, schedule: str):
  """The mask recipe of the two-stage `family` ('mask_rcnn', 'cascade_mask_rcnn', 'htc')."""
  args = common.parse_arg(arg, arch='', schedule=schedule, legacy=False, demo=False,
                          runlocal=False)
  c = two_stage_config(args, family, name)
  c.data.masks = True  # the training split's instance masks
  if args.demo:  # Ten minutes on 2 cores: the mask heads (the cost per step grows with their
    # RoIs: 32 positive slots per image 5.4 s/step, 8 2.4 s/step) train on 8 of each image's
    # positives, drawn at random, and the schedule is 240 steps (lr x0.1 at step 200).
    c.model.overrides.mask_samples = 8
    c.total_steps = 240
    c.optimizer.boundaries = (5,)  # epochs of 40 steps
    c.eval.every_steps = c.checkpoint.every_steps = 120
  return c


def get_config(arg=None):
  return mask_config(arg, 'mask_rcnn', 'det_coco_mask_rcnn.py', '1x')
