"""Hybrid Task Cascade on HRNetV2p-W32 on COCO instance segmentation, mmdetection v2's release
(box / mask AP on val2017, 20 epochs: W18 42.8 / 37.9, W32 45.4 / 39.9, W40 46.4 / 40.8).

Cascade Mask R-CNN's recipe (det_coco_cascade_mask_rcnn.py) made a hybrid task cascade:
interleaved (each stage's mask head trains on RoIs drawn again, at its stage's IoU, from the
boxes its box head just refined), mask information flow (each mask head after the first adds a
1x1 conv + ReLU of the previous head's features), and a fused semantic branch trained on the
COCO-stuff label maps (`stuffthingmaps/{split}/<stem>.png` beside the images; 183 classes,
labels rescaled to stride 8, 255 ignored, loss weight 0.2) whose embedding joins the box and
mask RoI features. Evaluation: scores > 0.001, the mean of the three heads' mask probabilities.
  python train.py --config configs/det_coco_htc.py --config.data.root=/data/coco \\
      --config.init_from=hrnetv2_w32_imagenet_pretrained.pth
  python eval.py --config configs/det_coco_htc.py \\
      --checkpoint htc_hrnetv2p_w32_20e_coco.pth --config.data.root=/data/coco
Variants: `:arch=htc_w18` / `htc_w40`, `:arch=htc_without_semantic_w32` (no semantic branch: no
label maps needed); `:legacy` (the paper's mmdetection v1.0 W48 checkpoint,
`:arch=htc_w48,legacy`, as det_coco_mask_rcnn.py); `:demo` (the embedded scenes, with their
label maps); `:runlocal`.
"""

from configs.det_coco_cascade_rcnn import cascade_losses
from configs.det_coco_mask_rcnn import mask_config
from hrnet_jax.models import zoo


def get_config(arg=None):
  c = mask_config(arg, 'htc', 'det_coco_htc.py', '20e')
  cascade_losses(c)
  c.data.semantic = bool(zoo.model_config(c.model.arch)['semantic_classes'])
  c.loss.semantic_weight = 0.2
  c.eval.score_thr = 0.001
  if c.data.name == 'coco_detection':
    c.eval.max_pairs = 8000  # more (RoI, class) pairs pass 0.001 than 0.05
  # (Its demo needs the two-stage demos' gradient clipping most: from scratch the semantic
  # embedding and the chained mask heads start with losses of 30-40; unclipped, NaN at step 15.)
  return c
