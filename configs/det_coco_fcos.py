"""FCOS on HRNetV2p-W32 on COCO detection, mmdetection's FCOS-HRNet release (box AP on val2017:
W18 35.3 (1x) / 38.2 (2x), W32 39.5 / 40.8, with multi-scale training 2x: W18 38.3, W32 41.9,
W40 42.7; the TPAMI paper: W18 37.8, W32 40.5, 2x).

SGD lr 0.01 momentum 0.9 weight decay 1e-4 (conv biases: lr x2, no decay), gradients clipped to
norm 35, constant warmup at lr / 3 for 500 steps, x0.1 at epochs 8 and 11 of 12 (1x) or 16 and
22 of 24 (2x), batch 16 (4 x 4 GPUs); images resized keeping aspect to 1333x800 (multi-scale:
short side 640 or 800), flipped; BN of the ImageNet-pretrained backbone frozen (norm_eval);
focal loss (alpha 0.25, gamma 2), IoU loss weighted by centerness, centerness BCE. Evaluation:
1333x800, padded to a multiple of 32, top 1000 points per level, score > 0.05, class-wise NMS
0.5, 100 boxes per image, COCOeval bbox.
  python train.py --config configs/det_coco_fcos.py --workdir runs/fcos_w32 \\
      --config.data.root=/data/coco --config.init_from=hrnetv2_w32_imagenet_pretrained.pth
  python eval.py --config configs/det_coco_fcos.py --checkpoint fcos_hrnetv2p_w32_gn-head_4x4_1x_coco.pth \\
      --config.data.root=/data/coco
Variants: `:arch=fcos_w18` / `fcos_w40`, `:schedule=2x`, `:ms` (multi-scale training),
`:giou` (GIoU box loss and center sampling); `:demo` (the embedded shapes-and-people scenes:
`make det-demo`); `:runlocal` (a tiny model, 6 steps).
"""

from configs import common

SCHEDULES = {'1x': (12, (8, 11)), '2x': (24, (16, 22))}


def get_config(arg=None):
  args = common.parse_arg(arg, arch='', schedule='1x', ms=False, giou=False, demo=False,
                          runlocal=False)
  demo = args.demo or args.runlocal
  c = common.base_config('detection', args.arch or ('fcos_w18_small_v1' if demo else 'fcos_w32'))
  if args.schedule not in SCHEDULES:
    raise common.ConfigError(f'det_coco_fcos.py:schedule={args.schedule}: expected one of '
                             f'{sorted(SCHEDULES)}')
  common.coco_detection_data(c)
  if args.ms:
    c.data.train_scales = ((1333, 640), (1333, 800))

  c.loss.box_loss = 'giou' if args.giou else 'iou'
  c.loss.focal_alpha = 0.25
  c.loss.focal_gamma = 2.0
  c.loss.center_sampling = bool(args.giou)
  c.loss.center_sample_radius = 1.5
  # Per level (strides 8..128): the largest box side distance a point of it regresses.
  c.loss.regress_ranges = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0),
                           (512.0, 1e8))

  epochs, boundaries = SCHEDULES[args.schedule]
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.weight_decay = 1e-4
  c.optimizer.bias_lr_mult = 2.0
  c.optimizer.bias_decay_mult = 0.0
  c.optimizer.grad_clip_norm = 35.0
  c.optimizer.schedule = 'step'
  c.optimizer.boundaries = boundaries
  c.optimizer.warmup_steps = 500
  c.optimizer.warmup_mode = 'constant'
  c.optimizer.warmup_init = 1.0 / 3
  c.batch_size = 16
  c.num_epochs = epochs

  c.eval.every_steps = 7330  # about an epoch of train2017 (117266 images)
  c.eval.batch_size = 0  # one image per device
  c.eval.size_divisor = 32  # 0: pad to the buckets instead (fewer programs, GN sees more padding)
  c.eval.nms_pre = 1000  # points per level kept before NMS
  c.eval.score_thr = 0.05
  c.eval.nms_iou = 0.5
  c.eval.max_per_img = 100
  c.eval.max_pairs = 2000  # (point, class) candidates entering NMS (fixed shapes; see fcos.decode)
  c.eval.show_score = 0.3  # predict.py draws the detections scoring at least this
  c.checkpoint.every_steps = 2000

  if demo:
    common.detection_demo_data(c)
    c.model.overrides.update(out_channels=64, gn_groups=16, stacked_convs=2, norm_eval=False)
    c.loss.regress_ranges = ((-1.0, 32.0), (32.0, 64.0), (64.0, 128.0), (128.0, 256.0),
                             (256.0, 1e8))
    c.eval.show_score = 0.1  # 400 steps from scratch: the best boxes score 0.1-0.4
  if args.runlocal:
    common.runlocal(c)
  return c
