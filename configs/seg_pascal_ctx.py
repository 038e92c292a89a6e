"""HRNetV2-W48 on PASCAL-Context (59 classes), the official experiment file: 480x480 crops of
images whose long side is 520 x (0.5 + k/10, k in 0..16), SGD lr 0.004 wd 1e-4, batch 16,
200 epochs, unweighted cross entropy. Evaluation as the official `testval`: each image at its own
size, long side 520 x scale, padded 480x480 windows at stride 320 (54.0 mIoU with --multi_scale
--flip). `:arch=...` and `:runlocal` as in seg_cityscapes.py.
  python train.py --config configs/seg_pascal_ctx.py --workdir runs/pctx \
      --config.data.root=/data/pascal_context
"""

from configs import common, seg_cityscapes

PASCAL_CONTEXT_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def get_config(arg=None):
  args = common.parse_arg(arg, arch='seg_w48', runlocal=False)
  c = seg_cityscapes.get_config(f'arch={args.arch}')
  c.data.name = 'pascal_context'
  c.data.crop_size = c.eval.crop_size = (480, 480)
  c.data.base_size = c.eval.base_size = 520
  c.data.eval_size = (512, 512)  # canvas: VOC images are at most 500x500
  c.loss.class_weights = ()
  c.optimizer.lr = 0.004
  c.optimizer.weight_decay = 1e-4
  c.batch_size = 16
  c.num_epochs = 200
  c.eval.windows = 'pad'
  c.eval.stride_rate = 2 / 3
  c.eval.multi_scales = PASCAL_CONTEXT_SCALES
  if args.runlocal:
    common.runlocal(c)
    c.data.crop_size = c.eval.crop_size = (64, 64)
    c.data.base_size = c.eval.base_size = 72
    c.data.eval_size = (96, 96)
  return c
