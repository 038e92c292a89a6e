"""HRNet-W48 fine-tuned on PoseTrack for single-frame pose, the CVPR paper's tracking recipe
(Section 4.3; HRNet-W48: 77.3 mAP on PoseTrack2017 val with the tracker's boxes, 74.9 mAP /
57.9 MOTA on test).

Initialised from a COCO pose checkpoint (the 17 heatmaps transfer: PoseTrack2018's slots are
COCO's with the eyes replaced by head_bottom and head_top); training boxes are the annotated
joints' extent enlarged by 15%; COCO's augmentation; Adam lr 1e-4, x0.1 at epochs 10 and 15 of
20. The paper does not give the input size: 384x288 here (the best COCO W48 release, 76.3 AP),
`:size=256x192` for the other. Evaluation: PoseTrack's per-joint AP (the official rules) of the
estimates on the ground-truth people's boxes.
  python train.py --config configs/pose_posetrack.py --workdir runs/posetrack_w48 \\
      --config.data.root=/data/posetrack --config.init_from=pose_hrnet_w48_384x288.pth
  python eval.py --config configs/pose_posetrack.py --checkpoint runs/posetrack_w48 \\
      --config.data.root=/data/posetrack
Data root: `annotations/{train,val}/<video>.json` (PoseTrack2018 or 2017 layout) and the images
the files name (`images/{train,val}/<video>/<frame>.jpg`). Variants: `:arch=pose_w32`;
`:demo` (the embedded crossing stick figures, from scratch); `:runlocal`.
"""

from configs import common, pose_coco
from hrnet_jax.tracking.tracker import tracking_config


def get_config(arg=None):
  args = common.parse_arg(arg, arch='', size='384x288', demo=False, runlocal=False)
  demo = args.demo or args.runlocal
  base = [f'size={args.size}', f'arch={args.arch or ("" if demo else "pose_w48")}']
  c = pose_coco.get_config(','.join([b for b in base if not b.endswith('=')]
                                    + (['demo'] if args.demo else [])
                                    + (['runlocal'] if args.runlocal else [])))
  c.data.name = 'posetrack_demo' if demo else 'posetrack'
  c.data.train_split, c.data.eval_split = 'train', 'val'
  del c.data['det_json'], c.data['image_thre']
  c.tracking = tracking_config()  # eval.py / predict.py --track: each value and why, in
  # hrnet_jax/tracking/tracker.py (TrackerSettings)
  if demo:  # the pose demo's model; 1932 people in 64 videos: 120 steps per epoch
    if not args.runlocal:
      c.total_steps = 1500  # 6m00s alone on 2 cores (AMD EPYC): mAP 78.6
      c.eval.every_steps = c.checkpoint.every_steps = 500
    c.optimizer.boundaries = (11,)  # x0.1 at step 1320
    return c
  c.optimizer.lr = 1e-4
  c.optimizer.boundaries = (10, 15)
  c.num_epochs = 20
  c.eval.every_steps = 2000
  return c
