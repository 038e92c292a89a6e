"""HRNetV2-W48 on PASCAL-Context (59 classes): 480x480 crops, lr 0.004, wd 1e-4, batch 16,
60K steps, unweighted cross entropy. `:arch=...` and `:runlocal` as in seg_cityscapes.py.
  python train.py --config configs/seg_pascal_ctx.py --workdir runs/pctx \
      --config.data.root=/data/pascal_context
"""

from configs import common, seg_cityscapes


def get_config(arg=None):
  args = common.parse_arg(arg, arch='seg_w48', runlocal=False)
  c = seg_cityscapes.get_config(f'arch={args.arch}')
  c.data.name = 'pascal_context'
  c.data.crop_size = c.eval.crop_size = (480, 480)
  c.data.eval_size = (512, 512)
  c.loss.class_weights = ()
  c.optimizer.lr = 0.004
  c.optimizer.weight_decay = 1e-4
  c.batch_size = 16
  c.total_steps = 60000
  c.eval.multi_scales = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
  if args.runlocal:
    common.runlocal(c)
    c.data.crop_size = c.eval.crop_size = c.data.eval_size = (64, 64)
  return c
