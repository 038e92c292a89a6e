"""HRNetV2-W18 face alignment on 300W (68 landmarks): trained on the 3148 training faces, evaluated
on 'valid' (the full set, 689 faces: common 554 + challenge 135; NME 3.32%) or 'test' (the 300W
private test set, 600 faces). Sigma 1.0, as the official 300W experiment file sets.
  python train.py --config configs/face_300w.py --workdir runs/face_300w --config.data.root=/data/300w
  python eval.py --config configs/face_300w.py --checkpoint HR18-300W.pth --split test
`:demo`: synthetic faces in the 300W layout and a tiny HRNetV2 (600 steps: `make face-demo`; the
NME ends at 8.5%, against 15.0% for the training set's mean shape); `:runlocal`: 6 steps.
"""

from configs import common, face_wflw


def get_config(arg=None):
  args = common.parse_arg(arg, arch='face_w18', demo=False, runlocal=False)
  c = face_wflw.get_config(f'arch={args.arch}')
  c.data.name = '300w'
  c.data.eval_split = 'valid'
  c.data.sigma = 1.0
  if args.demo or args.runlocal:
    c.data.name = 'face_demo'  # 300W layout; 'valid' reports common / challenge / full
    c.model.overrides.update(common.TINY_MODEL)
    c.model.overrides.bn_momentum = 0.9  # running statistics settle within a short run
    c.data.input_size, c.data.heatmap_size = (96, 96), (24, 24)
    c.data.sigma = 3.0  # wide targets: a tiny model learns them in a few hundred steps
    c.data.num_workers = 2
    c.optimizer.lr = 5e-3
    c.optimizer.boundaries = (50 / 3,)  # epochs: step 500 at 480 images, batch 16
    c.num_epochs, c.total_steps = 0, 600
    c.eval.every_steps = c.checkpoint.every_steps = 200
    c.log_every_steps = 50
  if args.runlocal:
    face_wflw.runlocal(c)
  return c
