"""HRNet-W32 on COCO keypoints at 256x192, the paper's recipe (74.4 AP on val2017 with the
detector boxes and an ImageNet-pretrained backbone; 73.4 from scratch).

Adam lr 1e-3, x0.1 at epochs 170 and 200 of 210, batch 32 x 4 GPUs (W48 384x288: 24 x 4); Gaussian heatmaps (sigma 2)
at 64x48; half body, scale, rotation and flip augmentation; flip test at evaluation.
  python train.py --config configs/pose_coco.py --workdir runs/pose_w32 \
      --config.data.root=/data/coco --config.init_from=hrnetv2_w32_imagenet_pretrained.pth
  python eval.py --config configs/pose_coco.py --checkpoint runs/pose_w32 \
      --config.data.det_json=COCO_val2017_detections_AP_H_56_person.json
Variants: `:arch=pose_w48` and `:size=384x288` (heatmaps 96x72, sigma 3; paper: W32 75.8, W48
75.1 at 256x192 and 76.3 at 384x288); `:demo` (embedded stick figures, 300 steps: `make
pose-demo`); `:runlocal` (a tiny model, 6 steps).
"""

from configs import common

SIZES = {'256x192': ((256, 192), (64, 48), 2.0), '384x288': ((384, 288), (96, 72), 3.0)}


def get_config(arg=None):
  args = common.parse_arg(arg, arch='', size='256x192', demo=False, runlocal=False)
  demo = args.demo or args.runlocal
  c = common.base_config('pose', args.arch or ('pose_w18_small_v1' if demo else 'pose_w32'))
  if args.size not in SIZES:
    raise common.ConfigError(f'pose_coco.py:size={args.size}: expected one of {sorted(SIZES)}')
  c.data.name = 'coco'  # coco | coco_demo | mpii
  c.data.root = ''  # holds annotations/ and images/
  c.data.train_split = 'train2017'
  c.data.eval_split = 'val2017'
  c.data.det_json = ''  # person detections for evaluation; '' = ground-truth boxes
  c.data.image_thre = 0.0  # detections scored below are left out (and counted)
  (c.data.input_size, c.data.heatmap_size, c.data.sigma) = SIZES[args.size]  # (h, w)
  c.data.scale_factor = 0.35
  c.data.rotation_factor = 45.0
  c.data.rotation_prob = 0.6
  c.data.flip = True
  c.data.half_body_prob = 0.3
  c.data.half_body_min_joints = 8

  c.loss.use_target_weight = True

  c.optimizer.name = 'adam'
  c.optimizer.lr = 1e-3
  c.optimizer.schedule = 'step'
  c.optimizer.boundaries = (170, 200)
  # The official experiment files: 32 images x 4 GPUs, but 24 x 4 for W48 at 384x288.
  c.batch_size = 96 if (c.model.arch, args.size) == ('pose_w48', '384x288') else 128
  c.num_epochs = 210

  c.eval.every_steps = 10000
  c.eval.batch_size = 64
  c.eval.flip = True
  c.eval.shift_heatmap = True
  c.eval.in_vis_thre = 0.2
  c.eval.oks_thre = 0.9
  c.checkpoint.every_steps = 2000

  if demo:
    # The small-v1 stage 1 (one 32-plane bottleneck) instead of the pose release's 4 x 64: 3x
    # cheaper on a CPU.
    c.model.overrides.stage1_blocks = 1
    c.model.overrides.stage1_planes = 32
    c.data.name = 'coco_demo'
    c.data.train_split, c.data.eval_split = 'train', 'val'
    c.data.input_size, c.data.heatmap_size = (128, 96), (32, 24)
    c.data.num_workers = 2
    c.optimizer.lr = 2e-3
    c.optimizer.boundaries = (10,)  # epochs: step 250 of 300 at 400 images, batch 16
    c.batch_size = 16
    c.num_epochs, c.total_steps = 0, 300
    c.eval.every_steps = c.checkpoint.every_steps = 150
    c.eval.batch_size = 32
    c.log_every_steps = 20
  if args.runlocal:
    common.runlocal(c)  # at the demo's 128x96 crops: nearest fusion needs multiples of 32
  return c
