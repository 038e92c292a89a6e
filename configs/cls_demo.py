"""The embedded classification demo: a small HRNet-C on synthetic shapes and textures (10
classes, ImageFolder layout, generated into the cache on first use). 200 steps; 11m48s on a
2-core CPU shared with other jobs (load ~10), of which about 5 minutes compiling.
  python train.py --config configs/cls_demo.py --workdir runs/cls_demo
"""

from configs import cls_imagenet_w18


def get_config():
  c = cls_imagenet_w18.get_config()
  c.model.arch = 'cls_w18_small_v1'
  c.model.overrides.bn_momentum = 0.9  # running statistics settle within a short run
  c.data.name = 'imagenet_demo'
  c.data.input_size = (32, 32)  # from 48x48 images; evaluation resizes to 36 and crops 32
  c.data.area_range = (0.35, 1.0)  # the object should stay mostly in view
  c.data.num_workers = 2
  # Adam, as the pose demo: SGD at the recipe's lr is unstable with so few images per class.
  c.optimizer.name = 'adam'
  c.optimizer.lr = 1e-3
  c.optimizer.weight_decay = 0.0
  c.optimizer.boundary_epochs = ()
  c.optimizer.boundaries = (160,)
  c.batch_size = 16
  c.num_epochs = 0
  c.total_steps = 200
  c.eval.every_steps = 100
  c.eval.batch_size = 50
  c.checkpoint.every_steps = 100
  c.log_every_steps = 20
  return c
