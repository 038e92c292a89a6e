"""HRNet-W18-C on ImageNet, the TPAMI paper's classification recipe (top-1 error 23.1%).

SGD with Nesterov momentum 0.9, weight decay 1e-4, lr 0.1 x0.1 at epochs 30, 60 and 90 of 100,
batch 256, 224x224 random resized crops with flips; evaluation on the centre 224 crop of the
image resized to 256 on its shorter side.
  python train.py --config configs/cls_imagenet_w18.py --workdir runs/cls_w18 \
      --config.data.root=/data/imagenet                  # ROOT/{train,val}/<wnid>/*.JPEG
  python eval.py --config configs/cls_imagenet_w18.py --checkpoint runs/cls_w18 \
      --config.data.root=/data/imagenet                  # or hrnetv2_w18_imagenet_pretrained.pth
Other widths by override, e.g. --config.model.arch=cls_w48: cls_w18_small_v1, cls_w18_small_v2,
cls_w18, cls_w30, cls_w32, cls_w40, cls_w44, cls_w48, cls_w64. TFDS instead of folders:
--config.data.name=imagenet_tfds --config.data.root=TFDS_DATA_DIR.
"""

import ml_collections

from configs import common
from configs.common import IMAGENET_MEAN, IMAGENET_STD


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = 'classification'
  c.seed = 0
  c.dtype = 'float32'  # or 'bfloat16'
  c.init_from = ''  # e.g. a .pth or workdir to fine-tune from (backbone only)

  c.model = ml_collections.ConfigDict()
  c.model.arch = 'cls_w18'
  c.model.overrides = ml_collections.ConfigDict()
  c.model.remat = False  # recompute blocks in the backward pass: less memory, ~1.3x compute

  c.data = ml_collections.ConfigDict()
  c.data.name = 'imagenet'  # imagenet (folders) | imagenet_tfds | imagenet_demo
  c.data.root = ''  # ROOT/{train,val}/<class>/*.JPEG, or the TFDS data_dir
  c.data.tfds_name = 'imagenet2012'
  c.data.class_names_file = ''  # optional `<wnid> <name>` lines (LOC_synset_mapping.txt)
  c.data.train_split = 'train'
  c.data.eval_split = 'val'
  c.data.input_size = (224, 224)  # (h, w)
  c.data.crop_fraction = 0.875  # evaluation: shorter side to 224 / 0.875 = 256, centre crop
  c.data.area_range = (0.08, 1.0)  # random resized crop: fraction of the image area
  c.data.aspect_range = (3 / 4, 4 / 3)  # ... and aspect ratio (w/h), log-uniform
  c.data.flip = True
  c.data.num_workers = 16  # JPEG decoding dominates: ~ 1 worker per 150 images/s
  c.data.mean = IMAGENET_MEAN
  c.data.std = IMAGENET_STD

  c.loss = ml_collections.ConfigDict()
  c.loss.label_smoothing = 0.0

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = 'sgd'
  c.optimizer.lr = 0.1
  c.optimizer.momentum = 0.9
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = 'step'
  c.optimizer.boundary_epochs = (30, 60, 90)
  c.optimizer.boundaries = ()
  c.optimizer.gamma = 0.1
  c.optimizer.warmup_steps = 0

  c.batch_size = 256  # global, over all devices and hosts
  c.num_epochs = 100
  c.total_steps = 0  # > 0 overrides num_epochs

  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 5004  # one epoch at batch 256 (1,281,167 images); and at the end
  c.eval.batch_size = 256
  c.eval.flip = False

  return common.add_trainer_keys(c, checkpoint_every=5004, log_every=100)
