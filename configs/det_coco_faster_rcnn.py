"""Faster R-CNN on HRNetV2p-W32 on COCO detection, mmdetection v2's release (box AP on val2017:
W18 36.9 (1x) / 38.9 (2x), W32 40.2 / 41.4, W40 41.2 / 42.1; the TPAMI paper, test-dev: W32 2x
41.1). Cascade R-CNN: det_coco_cascade_rcnn.py.

SGD lr 0.02 at batch 16, momentum 0.9, weight decay 1e-4, linear warmup from 0.001 x lr over 500
steps, x0.1 at epochs 8 and 11 of 12 (1x) or 16 and 22 of 24 (2x); images resized keeping
aspect to 1333x800, flipped, RGB normalized by mmdetection's mean and std; the backbone's BN
frozen (norm_eval). RPN: anchors of scale 8 and ratios 0.5/1/2 at strides 4..64, 256 anchors
sampled at half positives (IoU 0.7 / 0.3, low-quality matches from 0.3), sigmoid BCE + L1;
proposals: top 2000 per level, NMS 0.7, 1000 kept. R-CNN: RoIAlign 7x7 (adaptive sampling,
aligned) from strides 4..32, 512 RoIs sampled at a quarter positives (IoU 0.5) with the ground
truth added, two fc of 1024, softmax CE + L1 on class-specific deltas (stds .1 .1 .2 .2).
Evaluation: 1333x800 padded to a multiple of 32, top 1000 per level, NMS 0.7, 1000 proposals,
score > 0.05, class-wise NMS 0.5, 100 boxes per image, COCOeval bbox.
  python train.py --config configs/det_coco_faster_rcnn.py --config.data.root=/data/coco \\
      --config.init_from=hrnetv2_w32_imagenet_pretrained.pth
  python eval.py --config configs/det_coco_faster_rcnn.py \\
      --checkpoint faster_rcnn_hrnetv2p_w32_1x_coco.pth --config.data.root=/data/coco
Variants: `:arch=faster_rcnn_w18` / `faster_rcnn_w40`, `:schedule=2x`; `:legacy` (evaluates the
HRNet-Object-Detection releases, mmdetection v0.x: their key layout and test arithmetic, RPN
2000 / NMS 0.7 / 2000 proposals; evaluation only); `:demo` (the embedded shapes-and-people
scenes: `make faster-rcnn-demo`); `:tracking_demo` (the same model and schedule trained on the
pose-tracking demo's people, `posetrack_demo_persons`: the person detector of the tracking demo,
`make posetrack-detector-demo`: 1600 steps, x0.1 at step 1344 on its 768 frames); `:runlocal` (a
tiny model, 6 steps).
"""

from configs import common
from hrnet_jax.models import zoo

SCHEDULES = {'1x': (12, (8, 11)), '2x': (24, (16, 22)), '20e': (20, (16, 19))}


def two_stage_config(args, family: str, name: str):
  """The recipe shared by Faster and Cascade R-CNN (`family`), for the config file `name`."""
  demo = args.demo or args.runlocal
  c = common.base_config('detection', args.arch or f'{family}_{"w18_small_v1" if demo else "w32"}')
  if not c.model.arch.startswith(family + '_'):
    raise common.ConfigError(f'{name}:arch={args.arch}: expected a {family}_* arch')
  if args.schedule not in SCHEDULES:
    raise common.ConfigError(f'{name}:schedule={args.schedule}: expected one of '
                             f'{sorted(SCHEDULES)}')
  common.coco_detection_data(c)

  # The HRNet-Object-Detection (mmdetection v0.x) releases: their layout and test arithmetic,
  # RPN 2000 / 2000 at test; the mask releases of mmdetection v1.0 (the paper's W48 Cascade Mask
  # R-CNN and HTC) keep the recipe's 1000 / 1000 (their configs).
  if args.legacy:
    c.model.overrides.update(legacy=True)
    if not zoo.TASKS[family]['with_mask']:
      c.model.overrides.update(test_pre_nms=2000, test_proposals=2000)

  c.loss.rpn_beta = 0.0  # 0: L1; > 0: smooth L1 with this beta
  c.loss.rcnn_beta = 0.0
  c.loss.stage_weights = (1.0,)

  epochs, boundaries = SCHEDULES[args.schedule]
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.02
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = 'step'
  c.optimizer.boundaries = boundaries
  c.optimizer.warmup_steps = 500
  c.optimizer.warmup_mode = 'linear'
  c.optimizer.warmup_init = 0.001
  c.batch_size = 16
  c.num_epochs = epochs

  c.eval.every_steps = 7330  # about an epoch of train2017 (117266 images)
  c.eval.batch_size = 0  # one image per device
  c.eval.size_divisor = 32
  c.eval.score_thr = 0.05
  c.eval.nms_iou = 0.5
  c.eval.max_per_img = 100
  c.eval.max_pairs = 2000  # (RoI, class) candidates entering NMS (fixed shapes)
  c.eval.show_score = 0.3  # predict.py draws the detections scoring at least this
  c.checkpoint.every_steps = 2000

  if demo:
    common.detection_demo_data(c)
    # A small head for a small problem: 64 channels, fc 256, fewer proposals and samples.
    c.model.overrides.update(out_channels=64, fc_channels=256, norm_eval=False,
                             train_pre_nms=500, train_proposals=200, test_pre_nms=500,
                             test_proposals=200, rpn_samples=128, roi_samples=128)
    c.eval.show_score = 0.3
    # From scratch at lr 0.02 the loss can explode in the warmup (Faster R-CNN on a 2-core
    # Intel Xeon: 13 at step 32, 1e12 at 37, NaN at 38; the same run passed on AMD EPYC):
    # the gradients' global norm is clipped at 10.
    c.optimizer.grad_clip_norm = 10.0
  if args.runlocal:
    common.runlocal(c)
  return c


def get_config(arg=None):
  args = common.parse_arg(arg, arch='', schedule='1x', legacy=False, demo=False, runlocal=False,
                          tracking_demo=False)
  args.demo = args.demo or args.tracking_demo
  c = two_stage_config(args, 'faster_rcnn', 'det_coco_faster_rcnn.py')
  if args.tracking_demo:  # the demo detector does not find the tracking demo's crossing figures
    c.data.name = 'posetrack_demo_persons'
    if not args.runlocal:
      # 800 steps (box AP 48.3 on a 2-core AMD EPYC) left merged boxes on crossing people and
      # boxes on parts: 23 people's ids changed in the tracking demo; 1600: AP 51.8, 6 changes.
      c.total_steps = 1600
      c.eval.every_steps = c.checkpoint.every_steps = 400
    c.optimizer.boundaries = (14,)
  return c
