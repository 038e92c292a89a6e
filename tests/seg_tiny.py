"""A tiny segmentation recipe for the trainer tests: the demo config, a 8-wide HRNet, small data."""

from configs import seg_demo


def tiny_config(data_root, steps: int = 6, batch_size: int = 4):
  c = seg_demo.get_config()
  c.model.overrides.width = 8
  c.model.overrides.num_modules = (1, 1, 1)
  c.model.overrides.num_blocks = 1
  c.model.overrides.stage1_blocks = 1
  c.model.overrides.stage1_planes = 16
  c.data.root = str(data_root)
  c.data.crop_size = (64, 64)
  c.data.num_workers = 0
  c.batch_size = batch_size
  c.total_steps = steps
  c.eval.every_steps = steps
  c.eval.batch_size = 4
  c.eval.crop_size = (64, 64)
  c.checkpoint.every_steps = steps
  c.log_every_steps = steps
  return c
