"""HRNet-W18-C on ImageNet, the official experiment file cls_hrnet_w18_sgd_lr5e-2_wd1e-4_bs32_x100
(the TPAMI paper: top-1 error 23.1%).

SGD with Nesterov momentum 0.9, weight decay 1e-4, lr 0.05 x0.1 at epochs 30, 60 and 90 of 100,
batch 32 x 4 GPUs = 128, 224x224 random resized crops with flips; evaluation on the centre 224 crop of the
image resized to 256 on its shorter side.
  python train.py --config configs/cls_imagenet.py --workdir runs/cls_w18 \
      --config.data.root=/data/imagenet                  # ROOT/{train,val}/<wnid>/*.JPEG
  python eval.py --config configs/cls_imagenet.py --checkpoint runs/cls_w18 \
      --config.data.root=/data/imagenet                  # or hrnetv2_w18_imagenet_pretrained.pth
Variants: `:arch=cls_w48` (cls_w18_small_v1, cls_w18_small_v2, cls_w18, cls_w30, cls_w32, cls_w40,
cls_w44, cls_w48, cls_w64); `:demo` (10 classes of synthetic shapes, 200 steps: `make cls-demo`;
about 12 minutes on a busy 2-core CPU, 5 of them compiling); `:runlocal` (a tiny model, 6 steps).
TFDS instead of folders: --config.data.name=imagenet_tfds --config.data.root=TFDS_DATA_DIR.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, arch='', demo=False, runlocal=False)
  demo = args.demo or args.runlocal
  c = common.base_config('classification', args.arch or ('cls_w18_small_v1' if demo else 'cls_w18'))
  c.data.name = 'imagenet'  # imagenet (folders) | imagenet_tfds | imagenet_demo
  c.data.root = ''  # ROOT/{train,val}/<class>/*.JPEG, or the TFDS data_dir
  c.data.tfds_name = 'imagenet2012'
  c.data.class_names_file = ''  # optional `<wnid> <name>` lines (LOC_synset_mapping.txt)
  c.data.input_size = (224, 224)  # (h, w)
  c.data.crop_fraction = 0.875  # evaluation: shorter side to 224 / 0.875 = 256, centre crop
  c.data.area_range = (0.08, 1.0)  # random resized crop: fraction of the image area
  c.data.aspect_range = (3 / 4, 4 / 3)  # ... and aspect ratio (w/h), log-uniform
  c.data.flip = True
  c.data.num_workers = 16  # JPEG decoding dominates: ~ 1 worker per 150 images/s

  c.loss.label_smoothing = 0.0

  c.optimizer.lr = 0.05
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 1e-4
  c.optimizer.schedule = 'step'
  c.optimizer.boundaries = (30, 60, 90)
  c.batch_size = 128
  c.num_epochs = 100

  c.eval.every_steps = 10009  # one epoch at batch 128 (1,281,167 images); and at the end
  c.eval.batch_size = 256
  c.checkpoint.every_steps = 10009

  if demo:
    c.model.overrides.bn_momentum = 0.9  # running statistics settle within a short run
    c.data.name = 'imagenet_demo'
    c.data.input_size = (32, 32)  # from 48x48 images; evaluation resizes to 36 and crops 32
    c.data.area_range = (0.35, 1.0)  # the object should stay mostly in view
    c.data.num_workers = 2
    # Adam, as the pose demo: SGD at the recipe's lr is unstable with so few images per class.
    c.optimizer.name = 'adam'
    c.optimizer.lr = 1e-3
    c.optimizer.weight_decay = 0.0
    c.optimizer.boundaries = (6.4,)  # epochs: step 160 of 200 at 400 images, batch 16
    c.batch_size = 16
    c.num_epochs, c.total_steps = 0, 200
    c.eval.every_steps = c.checkpoint.every_steps = 100
    c.eval.batch_size = 50
    c.log_every_steps = 20
  if args.runlocal:
    common.runlocal(c)
  return c
