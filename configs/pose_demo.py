"""The embedded pose demo: a small HRNet on synthetic stick figures in the COCO keypoints layout
(generated into the cache on first use), scored by pycocotools. A few minutes on a laptop CPU.
  python train.py --config configs/pose_demo.py --workdir runs/pose_demo
"""

from configs import pose_coco_w32_256x192


def get_config():
  c = pose_coco_w32_256x192.get_config()
  c.model.arch = 'pose_w18_small_v1'
  # The small-v1 stage 1 (one 32-plane bottleneck) instead of the pose release's 4 x 64: 3x
  # cheaper on a CPU.
  c.model.overrides.stage1_blocks = 1
  c.model.overrides.stage1_planes = 32
  c.data.name = 'coco_demo'
  c.data.train_split = 'train'
  c.data.eval_split = 'val'
  c.data.input_size = (128, 96)
  c.data.heatmap_size = (32, 24)
  c.data.sigma = 2.0
  c.data.num_workers = 2
  c.optimizer.lr = 2e-3
  c.optimizer.boundary_epochs = ()
  c.optimizer.boundaries = (250,)
  c.batch_size = 16
  c.num_epochs = 0
  c.total_steps = 300
  c.eval.every_steps = 150
  c.eval.batch_size = 32
  c.checkpoint.every_steps = 150
  c.log_every_steps = 20
  return c
