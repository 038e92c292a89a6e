"""HRNetV2-W18 face alignment on AFLW (19 landmarks; NME by the face box size: full 1.57%, frontal
1.46%). Adam lr 2e-4, as the official AFLW experiment file sets.
  python train.py --config configs/face_aflw.py --workdir runs/face_aflw --config.data.root=/data/aflw
"""

from configs import face_wflw


def get_config(arg=None):
  c = face_wflw.get_config(arg)
  c.data.name = 'aflw'
  c.data.eval_split = 'test'
  c.optimizer.lr = 2e-4
  return c
