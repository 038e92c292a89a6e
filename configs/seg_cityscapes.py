"""HRNetV2-W48 on Cityscapes, the paper's recipe (81.1 mIoU val, single scale).

SGD lr 0.01 momentum 0.9 wd 5e-4, poly 0.9 per step, 484 epochs at batch 12 (~120K steps) with
synced BN, 512x1024 crops of images scaled by [0.5, 2.0], class-weighted cross entropy.
  python train.py --config configs/seg_cityscapes.py --workdir runs/w48 \
      --config.data.root=/data/cityscapes --config.init_from=hrnetv2_w48_imagenet_pretrained.pth
"""

import ml_collections

from configs import common
from configs.common import IMAGENET_MEAN, IMAGENET_STD
CITYSCAPES_CLASS_WEIGHTS = (0.8373, 0.918, 0.866, 1.0345, 1.0166, 0.9969, 0.9754, 1.0489, 0.8786,
                            1.0023, 0.9539, 0.9843, 1.1116, 0.9037, 1.0865, 1.0955, 1.0865, 1.1529,
                            1.0507)
CITYSCAPES_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'segmentation'
  c.seed = 0
  c.dtype = 'float32'  # or 'bfloat16' (float32 params, BN statistics and loss)
  c.init_from = ''  # ImageNet-pretrained backbone: a .pth, a converted dir, or a workdir

  c.model = ml_collections.ConfigDict()
  c.model.arch = 'seg_w48'
  c.model.overrides = ml_collections.ConfigDict()
  c.model.remat = False  # recompute blocks in the backward pass: less memory, ~1.3x compute  # e.g. align_corners, upsample, width

  c.data = ml_collections.ConfigDict()
  c.data.name = 'cityscapes'  # cityscapes | cityscapes_tfds | cityscapes_demo | pascal_context | lip
  c.data.root = ''  # dataset root (the TFDS data_dir for cityscapes_tfds)
  c.data.train_split = 'train'
  c.data.eval_split = 'val'
  c.data.crop_size = (512, 1024)
  c.data.scale_range = (0.5, 2.0)
  c.data.flip = True
  c.data.eval_size = ()  # pad (or shrink) eval images to this size; () = keep (all same size)
  c.data.num_workers = 8
  c.data.mean = IMAGENET_MEAN
  c.data.std = IMAGENET_STD

  c.loss = ml_collections.ConfigDict()
  c.loss.class_weights = CITYSCAPES_CLASS_WEIGHTS
  c.loss.ohem = False
  c.loss.ohem_thresh = 0.9
  c.loss.ohem_min_kept = 131072
  c.loss.aux_weight = 0.4  # OCR only

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.01
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = False
  c.optimizer.weight_decay = 5e-4
  c.optimizer.schedule = 'poly'
  c.optimizer.power = 0.9
  c.optimizer.warmup_steps = 0

  c.batch_size = 12  # global, over all devices and hosts
  c.num_epochs = 484
  c.total_steps = 0  # > 0 overrides num_epochs

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 5000  # and at the end; 0 = never while training
  c.eval.batch_size = 0  # 0: one image per device
  c.eval.scales = (1.0,)
  c.eval.multi_scales = CITYSCAPES_SCALES  # what eval.py --multi_scale uses
  c.eval.flip = False
  c.eval.sliding = 'auto'  # windows of eval.crop_size for scales > 1
  c.eval.crop_size = (512, 1024)
  c.eval.save_predictions = 0

  return common.add_trainer_keys(c, checkpoint_every=1000, log_every=50)
