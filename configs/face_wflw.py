"""HRNetV2-W18 face alignment on WFLW (98 landmarks), the paper's recipe (test NME 4.60%).

256x256 crops at the annotated face x1.25; scale x U(0.75, 1.25), rotation U(-30, 30) with p 0.6,
flip with landmark swaps; heatmaps 64x64 (sigma 1.5); Adam lr 1e-4, x0.1 at epochs 30 and 50 of
60, batch 16; NME by the inter-ocular (outer eye corner) distance.
  python train.py --config configs/face_wflw.py --workdir runs/face_wflw \
      --config.data.root=/data/wflw --config.init_from=hrnetv2_w18_imagenet_pretrained.pth
  python eval.py --config configs/face_wflw.py --checkpoint HR18-WFLW.pth
The other datasets: face_300w.py, face_cofw.py, face_aflw.py. `:runlocal`: a tiny model, 6 steps.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, arch='face_w18', runlocal=False)
  c = common.base_config('landmarks', args.arch)
  c.data.name = 'wflw'  # wflw | 300w | cofw | aflw | face_demo
  c.data.root = ''  # holds the annotation files and image_dir
  c.data.image_dir = 'images'
  # Annotation file per split, relative to root; unset splits use the official names
  # (face_landmarks_<name>_<split>.csv, COFW_<split>_color.mat).
  c.data.annotations = {'train': '', 'test': '', 'valid': ''}
  c.data.eval_split = 'test'
  c.data.input_size = (256, 256)  # (h, w)
  c.data.heatmap_size = (64, 64)
  c.data.sigma = 1.5
  c.data.scale_factor = 0.25
  c.data.rotation_factor = 30.0
  c.data.rotation_prob = 0.6
  c.data.flip = True
  c.data.num_workers = 4
  # 'official': the official face code's pixel rules (truncated target centres, flips to
  # width - x, its integer crop box resized by PIL, decoding + half a heatmap pixel then
  # truncated + 1), so converted official checkpoints score their published NME. 'exact': the
  # pose conventions (rounded centres, exact affine crop and inverse); see docs/PROTOCOLS.md.
  c.data.convention = 'official'

  c.loss.use_target_weight = False  # the official face loss is a plain heatmap MSE

  c.optimizer.name = 'adam'
  c.optimizer.lr = 1e-4
  c.optimizer.schedule = 'step'
  c.optimizer.boundaries = (30, 50)
  c.batch_size = 16
  c.num_epochs = 60

  c.eval.every_steps = 2000
  c.eval.batch_size = 32
  c.eval.flip = False  # the official face release tests without flip
  c.eval.shift_heatmap = True
  c.checkpoint.every_steps = 2000
  if args.runlocal:
    runlocal(c)
  return c


def runlocal(c):
  common.runlocal(c)
  c.data.input_size, c.data.heatmap_size = (64, 64), (16, 16)
  return c
