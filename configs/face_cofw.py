"""HRNetV2-W18 face alignment on COFW (29 landmarks; NME 3.45%, FR@0.10 0.20%). The data root
holds COFW_train_color.mat and COFW_test_color.mat (MATLAB v7.3, read with h5py).
  python train.py --config configs/face_cofw.py --workdir runs/face_cofw --config.data.root=/data/cofw
"""

from configs import face_wflw


def get_config(arg=None):
  c = face_wflw.get_config(arg)
  c.data.name = 'cofw'
  c.data.eval_split = 'test'
  return c
