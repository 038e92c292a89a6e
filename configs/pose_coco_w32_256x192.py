"""HRNet-W32 on COCO keypoints at 256x192, the paper's recipe (74.4 AP on val2017 with the
detector boxes and an ImageNet-pretrained backbone; 73.4 from scratch).

Adam lr 1e-3, x0.1 at epochs 170 and 200 of 210, batch 32 x 4 GPUs; Gaussian heatmaps (sigma 2)
at 64x48; half body, scale, rotation and flip augmentation; flip test at evaluation.
  python train.py --config configs/pose_coco_w32_256x192.py --workdir runs/pose_w32 \
      --config.data.root=/data/coco --config.init_from=hrnetv2_w32_imagenet_pretrained.pth
  python eval.py --config configs/pose_coco_w32_256x192.py --checkpoint runs/pose_w32 \
      --config.data.det_json=COCO_val2017_detections_AP_H_56_person.json
"""

import ml_collections

from configs import common
from configs.common import IMAGENET_MEAN, IMAGENET_STD


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'pose'
  c.seed = 0
  c.dtype = 'float32'  # or 'bfloat16'
  c.init_from = ''  # ImageNet-pretrained backbone: a .pth, a converted dir, or a workdir

  c.model = ml_collections.ConfigDict()
  c.model.arch = 'pose_w32'
  c.model.overrides = ml_collections.ConfigDict()
  c.model.remat = False  # recompute blocks in the backward pass: less memory, ~1.3x compute

  c.data = ml_collections.ConfigDict()
  c.data.name = 'coco'  # coco | coco_demo | mpii
  c.data.root = ''  # holds annotations/ and images/
  c.data.train_split = 'train2017'
  c.data.eval_split = 'val2017'
  c.data.det_json = ''  # person detections for evaluation; '' = ground-truth boxes
  c.data.image_thre = 0.0  # detections scored below are left out (and counted)
  c.data.input_size = (256, 192)  # (h, w)
  c.data.heatmap_size = (64, 48)
  c.data.sigma = 2.0
  c.data.scale_factor = 0.35
  c.data.rotation_factor = 45.0
  c.data.rotation_prob = 0.6
  c.data.flip = True
  c.data.half_body_prob = 0.3
  c.data.half_body_min_joints = 8
  c.data.num_workers = 8
  c.data.mean = IMAGENET_MEAN
  c.data.std = IMAGENET_STD

  c.loss = ml_collections.ConfigDict()
  c.loss.use_target_weight = True

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'adam'
  c.optimizer.lr = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.schedule = 'step'
  c.optimizer.boundary_epochs = (170, 200)
  c.optimizer.gamma = 0.1
  c.optimizer.warmup_steps = 0

  c.batch_size = 128  # global, over all devices and hosts
  c.num_epochs = 210
  c.total_steps = 0  # > 0 overrides num_epochs

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 10000  # and at the end; 0 = never while training
  c.eval.batch_size = 64
  c.eval.flip = True
  c.eval.shift_heatmap = True
  c.eval.in_vis_thre = 0.2
  c.eval.oks_thre = 0.9

  return common.add_trainer_keys(c, checkpoint_every=2000, log_every=100)
