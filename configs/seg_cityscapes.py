"""HRNetV2-W48 on Cityscapes, the paper's recipe (81.1 mIoU val, single scale).

SGD lr 0.01 momentum 0.9 wd 5e-4, poly 0.9 per step, 484 epochs at batch 12 (~120K steps) with
synced BN, 512x1024 crops of images scaled by [0.5, 2.0], class-weighted cross entropy.
  python train.py --config configs/seg_cityscapes.py --workdir runs/w48 \
      --config.data.root=/data/cityscapes --config.init_from=hrnetv2_w48_imagenet_pretrained.pth
Variants: `:arch=seg_w18` (also seg_w18_small_v1, seg_w18_small_v2, seg_ocr_w48: OCR, with
align_corners and the 0.4 aux loss of its release); `:demo` (the embedded street scenes, a
W18-Small-v1, 300 steps: `make demo`); `:runlocal` (a tiny model, 6 steps).
"""

from configs import common

CITYSCAPES_CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                            1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529,
                            1.0507)
CITYSCAPES_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def get_config(arg=None):
  args = common.parse_arg(arg, arch='', demo=False, runlocal=False)
  demo = args.demo or args.runlocal
  c = common.base_config('segmentation', args.arch or ('seg_w18_small_v1' if demo else 'seg_w48'))
  c.data.name = 'cityscapes'  # cityscapes | cityscapes_tfds (root: the TFDS data_dir) | ..._demo
  c.data.crop_size = (512, 1024)
  # Scale s = 0.5 + k / 10, k uniform in 0..16; the long side becomes base_size x s (official).
  c.data.scale_range = (0.5, 2.1)
  c.data.scale_step = 0.1  # 0: continuous
  c.data.base_size = 2048  # 0: scales relative to each image's own size
  c.data.train_resize = ()  # stretch every training image to (h, w) first (LIP)
  c.data.flip = True
  c.data.eval_size = ()  # canvas for images of several sizes; () = each keeps its own size

  c.loss.class_weights = CITYSCAPES_CLASS_WEIGHTS
  c.loss.ohem = False
  c.loss.ohem_thresh = 0.9
  c.loss.ohem_min_kept = 131072
  c.loss.ohem_group = 3  # images per OHEM group: the official 4-GPU x 3 images; 0 = whole batch
  c.loss.aux_weight = 0.4  # OCR: the aux head's plain cross entropy

  c.optimizer.lr = 0.01
  c.optimizer.weight_decay = 5e-4
  c.optimizer.schedule = 'poly'
  c.batch_size = 12
  c.num_epochs = 484

  c.eval.every_steps = 5000
  c.eval.scales = (1.0,)
  c.eval.multi_scales = CITYSCAPES_SCALES  # what eval.py --multi_scale uses
  c.eval.base_size = 2048  # long side at scale 1 (0: the image's own size)
  c.eval.resize = ()  # stretch every eval image to (h, w) first; scores go back to the label size
  # 'clamp' (the official Cityscapes test): whole image for scales <= 1, above that windows of
  # eval.crop_size, the last moved back to the border. 'pad': padded windows at every scale.
  c.eval.windows = 'clamp'
  c.eval.sliding = 'auto'  # 'clamp' only: 'auto' (scales > 1), 'always' or 'never'
  # Windows of the full test size, stride = window (official). On a memory-limited device:
  # --config.eval.crop_size=512,1024 --config.eval.stride_rate=0.6667 (see docs/PROTOCOLS.md).
  c.eval.crop_size = (1024, 2048)
  c.eval.stride_rate = 1.0
  c.eval.save_predictions = 0
  c.checkpoint.every_steps = 1000
  c.log_every_steps = 50

  if demo:
    c.model.overrides.bn_momentum = 0.9  # running statistics settle within a short run
    c.data.name = 'cityscapes_demo'
    c.data.crop_size = c.eval.crop_size = (128, 128)
    c.data.scale_range, c.data.scale_step = (0.75, 1.5), 0.0
    c.data.base_size = c.eval.base_size = 0
    c.eval.stride_rate = 2 / 3
    c.data.num_workers = 2
    c.optimizer.lr = 0.05
    c.batch_size = c.eval.batch_size = 8
    c.num_epochs, c.total_steps = 0, 300
    c.eval.every_steps = c.checkpoint.every_steps = 100
    c.log_every_steps = 20
  if args.runlocal:
    common.runlocal(c)
    c.data.crop_size = c.eval.crop_size = (64, 64)
  return c
