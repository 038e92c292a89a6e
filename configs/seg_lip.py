"""HRNetV2-W48 on LIP (20 classes), the official experiment file: every image and label stretched
to 473x473, scaled by 0.5 + k/10 (k in 0..11), 473x473 crops, flips swapping the left/right part
labels; SGD lr 0.007 wd 5e-4, batch 40, 150 epochs. Evaluation as the official `testval`: the
image stretched to 473x473, scores upsampled to the untouched label (55.83 mIoU with --flip).
`:arch=...` and `:runlocal` as in seg_cityscapes.py.
  python train.py --config configs/seg_lip.py --workdir runs/lip --config.data.root=/data/lip
"""

from configs import common, seg_cityscapes


def get_config(arg=None):
  args = common.parse_arg(arg, arch='seg_w48', runlocal=False)
  c = seg_cityscapes.get_config(f'arch={args.arch}')
  c.data.name = 'lip'
  c.data.crop_size = c.eval.crop_size = c.data.train_resize = c.eval.resize = (473, 473)
  c.data.base_size = c.eval.base_size = 473
  c.data.scale_range = (0.5, 1.6)
  c.data.eval_size = (1024, 1024)  # canvas of the untouched labels
  c.loss.class_weights = ()
  c.optimizer.lr = 0.007
  c.batch_size = 40
  c.num_epochs = 150
  c.eval.windows = 'pad'
  c.eval.stride_rate = 2 / 3
  if args.runlocal:
    common.runlocal(c)
    c.data.crop_size = c.eval.crop_size = c.data.train_resize = c.eval.resize = (64, 64)
    c.data.base_size = c.eval.base_size = 64
    c.data.eval_size = (96, 96)
  return c
