"""HRNetV2-W18 face alignment on 300W (68 landmarks): trained on the 3148 training faces, evaluated
on 'valid' (the full set, 689 faces: common 554 + challenge 135; NME 3.32%) or 'test' (the 300W
private test set, 600 faces). Sigma 1.0, as the official 300W experiment file sets.
  python train.py --config configs/face_300w.py --workdir runs/face_300w --config.data.root=/data/300w
  python eval.py --config configs/face_300w.py --checkpoint HR18-300W.pth --split test
"""

from configs import face_wflw


def get_config():
  c = face_wflw.get_config()
  c.data.name = '300w'
  c.data.eval_split = 'valid'
  c.data.sigma = 1.0
  return c
