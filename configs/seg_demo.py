"""The embedded demo: HRNetV2-W18-Small-v1 on synthetic street scenes (Cityscapes layout,
generated into the cache on first use). A few minutes on a laptop CPU.
  python train.py --config configs/seg_demo.py --workdir runs/seg_demo
"""

from configs import seg_cityscapes


def get_config():
  c = seg_cityscapes.get_config()
  c.model.arch = 'seg_w18_small_v1'
  c.model.overrides.bn_momentum = 0.9  # running statistics settle within a short run
  c.data.name = 'cityscapes_demo'
  c.data.crop_size = (128, 128)
  c.data.scale_range = (0.75, 1.5)
  c.data.num_workers = 2
  c.optimizer.lr = 0.05
  c.batch_size = 8
  c.num_epochs = 0
  c.total_steps = 300
  c.eval.every_steps = 100
  c.eval.batch_size = 8
  c.eval.crop_size = (128, 128)
  c.checkpoint.every_steps = 100
  c.log_every_steps = 20
  return c
