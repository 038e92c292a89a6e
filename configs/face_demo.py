"""The embedded face demo: a tiny HRNetV2 on synthetic faces with the 68 300W landmarks, in the
official 300W CSV layout (generated into the cache on first use). About two minutes on a laptop
CPU; the NME ends far below that of the mean shape.
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
  c.data.input_size = (96, 96)
  c.data.heatmap_size = (24, 24)
  c.data.sigma = 1.0
  c.data.num_workers = 2
  c.optimizer.lr = 3e-3
  c.optimizer.boundary_epochs = ()
  c.optimizer.boundaries = (400,)
  c.batch_size = 16
  c.num_epochs = 0
  c.total_steps = 500
  c.eval.every_steps = 250
  c.eval.batch_size = 32
  c.checkpoint.every_steps = 250
  c.log_every_steps = 50
  return c
