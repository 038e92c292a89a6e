"""CenterNet (keypoint triplets) on HRNetV2-W48 on COCO detection: the TPAMI paper's row (43.5
box AP on test-dev at 511x511, against Hourglass-52's 41.6). No HRNet variant was released: the
recipe is the authors' CenterNet-52 one (Duankaiwen/CenterNet, config/CenterNet-52.json) on the
HRNetV2 representation; docs/detection.md names what is theirs and what is ours.

Adam lr 2.5e-4 at batch 48 (no weight decay), x0.1 at iteration 450k of 480k (given in epochs of
train2017, 118287 images); samples: a square window of 511 x a random scale in 0.6, 0.7, ..,
1.3 centred at a random point (128 px from the sides, less on small images), resized to
511x511, mirrored half the time, colour jitter (brightness, contrast, saturation 1 +- 0.4 in
random order) and PCA lighting noise (0.1), normalized by the authors' COCO mean and std.
Targets on the 128x128 maps: Gaussians of the size-adaptive radius (overlap 0.7) for corners and
centres, offsets, embeddings. Evaluation: the image centred on a canvas of sides | 127 with its
mirror, top 70 corners and centres, pairs within embedding distance 0.5, the centre check,
exp soft-NMS per class (IoU 0.5, sigma 0.5), 100 boxes per image, COCOeval bbox.
  python train.py --config configs/det_coco_centernet.py --config.data.root=/data/coco \\
      --config.init_from=hrnetv2_w48_imagenet_pretrained.pth
  python eval.py --config configs/det_coco_centernet.py --checkpoint runs/centernet_w48 \\
      --config.data.root=/data/coco
Variants: `:arch=centernet_w32` / `centernet_w18`; `:multi_scale` (the authors' multi-scale
test: the image at 0.6, 1, 1.2, 1.5 and 1.8, the boxes of each class merged by the soft-NMS
with weight exponent 10); `:demo` (the embedded shapes-and-people scenes at 255x255: `make
centernet-demo`); `:runlocal` (a tiny model, 6 steps).
"""

from configs import common

# The authors' statistics of COCO (BGR in [0, 1] there), as RGB in [0, 255].
CENTERNET_MEAN = (0.47026115 * 255, 0.44719302 * 255, 0.40789654 * 255)
CENTERNET_STD = (0.27809835 * 255, 0.27408164 * 255, 0.28863828 * 255)
TRAIN2017_IMAGES = 118287


def get_config(arg=None):
  args = common.parse_arg(arg, arch='', demo=False, runlocal=False, multi_scale=False)
  demo = args.demo or args.runlocal
  c = common.base_config('detection', args.arch or ('centernet_w18_small_v1' if demo
                                                    else 'centernet_w48'))
  if not c.model.arch.startswith('centernet_'):
    raise common.ConfigError(f'det_coco_centernet.py:arch={args.arch}: expected a centernet_* '
                             'arch')
  common.coco_detection_data(c)
  c.data.mean, c.data.std = CENTERNET_MEAN, CENTERNET_STD
  c.data.input_size = (511, 511)  # the training window (output maps (511 + 1) / 4 = 128)
  c.data.rand_scales = tuple(round(0.6 + 0.1 * i, 1) for i in range(8))  # 0.6 .. 1.3
  c.data.border = 128  # crop centres at least this far from the sides (halved on small images)
  c.data.color = True  # colour jitter and lighting noise
  c.data.max_boxes = 100

  c.optimizer.name = 'adam'
  c.optimizer.lr = 2.5e-4
  c.optimizer.schedule = 'step'
  c.batch_size = 48
  c.num_epochs, c.total_steps = 0, 480000
  c.optimizer.boundaries = (450000 * 48 / TRAIN2017_IMAGES,)

  c.eval.every_steps = 5000
  c.eval.batch_size = 0  # one image per device (canvases differ by image size)
  c.eval.top_k = 70  # corners and centres per map
  c.eval.ae_threshold = 0.5  # embedding distance of a pair
  c.eval.nms_kernel = 3  # the heatmaps' peak window
  c.eval.num_dets = 1000  # pairs decoded per image (and as many of its mirror)
  c.eval.nms_method = 'exp_soft_nms'  # or 'linear_soft_nms', 'nms'
  c.eval.nms_iou = 0.5  # linear_soft_nms / nms only (exp: sigma 0.5)
  c.eval.max_per_img = 100
  c.eval.test_scales = (1.0,)  # the original resolution
  c.eval.merge_bbox = False  # the merging soft-NMS (the multi-scale test's)
  c.eval.weight_exp = 8.0  # its weight exponent
  if args.multi_scale:  # the authors' CenterNet-52-multi_scale test
    c.eval.test_scales = (0.6, 1.0, 1.2, 1.5, 1.8)
    c.eval.merge_bbox, c.eval.weight_exp = True, 10.0
  c.eval.show_score = 0.3
  c.checkpoint.every_steps = 5000

  if demo:
    common.detection_demo_data(c)
    c.data.mean, c.data.std = CENTERNET_MEAN, CENTERNET_STD
    c.data.input_size = (255, 255)  # maps of 64 x 64
    c.model.overrides.update(cnv_channels=32, head_channels=32, pool_channels=32)
    c.optimizer.name = 'adam'
    c.optimizer.lr = 1e-3
    c.optimizer.schedule = 'step'
    c.optimizer.warmup_steps = 0
    c.num_epochs, c.total_steps = 0, 800
    c.optimizer.boundaries = (18,)  # epochs of 40 steps: x0.1 at step 720
    c.eval.every_steps = c.checkpoint.every_steps = 200
    c.eval.batch_size = 8
    c.eval.show_score = 0.2
  if args.runlocal:
    common.runlocal(c)
  return c
