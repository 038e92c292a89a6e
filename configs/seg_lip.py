"""HRNetV2-W48 on LIP (20 classes): 473x473 crops, lr 0.007, batch 40, 110K steps; flips swap
the left/right part labels. `:arch=...` and `:runlocal` as in seg_cityscapes.py.
  python train.py --config configs/seg_lip.py --workdir runs/lip --config.data.root=/data/lip
"""

from configs import common, seg_cityscapes


def get_config(arg=None):
  args = common.parse_arg(arg, arch='seg_w48', runlocal=False)
  c = seg_cityscapes.get_config(f'arch={args.arch}')
  c.data.name = 'lip'
  c.data.crop_size = c.eval.crop_size = (473, 473)
  c.data.eval_size = (512, 512)
  c.loss.class_weights = ()
  c.optimizer.lr = 0.007
  c.batch_size = 40
  c.total_steps = 110000
  if args.runlocal:
    common.runlocal(c)
    c.data.crop_size = c.eval.crop_size = c.data.eval_size = (64, 64)
  return c
