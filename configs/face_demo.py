"""The embedded face demo: a tiny HRNetV2 on synthetic faces with the 68 300W landmarks, in the
official 300W CSV layout (generated into the cache on first use). 600 steps, about 0.5 s each on a
busy 2-core CPU; the NME ends at 8.5%, against 15.0% for the training set's mean shape.
  python train.py --config configs/face_demo.py --workdir runs/face_demo
"""

from configs import face_wflw


def get_config():
  c = face_wflw.get_config()
  c.data.name = 'face_demo'  # 300W layout
  c.data.eval_split = 'valid'  # reports common / challenge / full
  c.model.overrides.width = 8
  c.model.overrides.stage1_blocks = 1
  c.model.overrides.stage1_planes = 16
  c.model.overrides.num_modules = (1, 1, 1)
  c.model.overrides.num_blocks = 1
  c.model.overrides.bn_momentum = 0.9  # running statistics settle within a short run
  c.data.input_size = (96, 96)
  c.data.heatmap_size = (24, 24)
  c.data.sigma = 3.0  # wide targets: a tiny model learns them in a few hundred steps
  c.data.num_workers = 2
  c.optimizer.lr = 5e-3
  c.optimizer.boundary_epochs = ()
  c.optimizer.boundaries = (500,)
  c.batch_size = 16
  c.num_epochs = 0
  c.total_steps = 600
  c.eval.every_steps = 200
  c.eval.batch_size = 32
  c.checkpoint.every_steps = 200
  c.log_every_steps = 50
  return c
