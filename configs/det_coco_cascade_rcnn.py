"""Cascade R-CNN on HRNetV2p-W32 on COCO detection, mmdetection v2's release (box AP on val2017,
20 epochs: W18 41.2, W32 43.3, W40 43.8; the TPAMI paper, test-dev: W32 43.7).

As det_coco_faster_rcnn.py, except: RPN box loss smooth L1 (beta 1/9) and 2000 training
proposals; three class-agnostic box stages at IoU 0.5 / 0.6 / 0.7 with target stds
(.1 .1 .2 .2) / (.05 .05 .1 .1) / (.033 .033 .067 .067), smooth L1 (beta 1), loss weights 1 /
0.5 / 0.25, each stage refining the previous stage's samples (the ground truth taken out and
added again); 20 epochs, x0.1 at 16 and 19. Evaluation: the mean of the three stages' class
logits on the last stage's boxes.
  python train.py --config configs/det_coco_cascade_rcnn.py --config.data.root=/data/coco
  python eval.py --config configs/det_coco_cascade_rcnn.py \\
      --checkpoint cascade_rcnn_hrnetv2p_w32_20e_coco.pth --config.data.root=/data/coco
Variants: `:arch=cascade_rcnn_w18` / `cascade_rcnn_w40`; `:legacy` (HRNet-Object-Detection's
releases, as det_coco_faster_rcnn.py); `:demo`; `:runlocal`.
"""

from configs import common
from configs.det_coco_faster_rcnn import two_stage_config


def cascade_losses(c) -> None:
  """The cascade's losses: smooth L1 (RPN beta 1/9, R-CNN 1), stages weighted 1 / 0.5 / 0.25."""
  c.loss.rpn_beta = 1.0 / 9.0
  c.loss.rcnn_beta = 1.0
  c.loss.stage_weights = (1.0, 0.5, 0.25)


def get_config(arg=None):
  args = common.parse_arg(arg, arch='', schedule='20e', legacy=False, demo=False,
                          runlocal=False)
  c = two_stage_config(args, 'cascade_rcnn', 'det_coco_cascade_rcnn.py')
  cascade_losses(c)
  return c
