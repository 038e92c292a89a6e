"""HRNet-W32 on MPII at 256x256 (heatmaps 64x64); paper: PCKh@0.5 92.3 on test, ~90.3 on val.
Scale factor 0.25, rotation 30 degrees, no half-body crops; 210 epochs of Adam as for COCO.
`:arch=pose_w48` for W48.
  python train.py --config configs/pose_mpii_w32_256x256.py --workdir runs/mpii \
      --config.data.root=/data/mpii
"""

from configs import common, pose_coco


def get_config(arg=None):
  args = common.parse_arg(arg, arch='pose_w32')
  c = pose_coco.get_config(f'arch={args.arch}')
  c.data.name = 'mpii'
  c.data.train_split = 'train'
  c.data.eval_split = 'valid'
  c.data.input_size = (256, 256)
  c.data.heatmap_size = (64, 64)
  c.data.scale_factor = 0.25
  c.data.rotation_factor = 30.0
  c.data.half_body_prob = 0.0
  return c
