"""Evaluate: `python eval.py --config CONFIG --checkpoint PATH [--flip] [--multi_scale]`.

Prints the task's scores: segmentation mIoU per class; pose COCO keypoint AP (ground-truth boxes,
detector boxes with --config.data.det_json=FILE, or those of a detector run first with
--detector DET_CONFIG --detector_checkpoint DET_PATH), MPII PCKh or PoseTrack AP; detection COCO
box AP; classification top-1/top-5 accuracy; facial landmarks NME, failure rate and AUC. With
--track (a PoseTrack pose config), pose tracking of every video: the official AP and MOTA
tables, the per-video files in --predictions (boxes from --detector, else the ground-truth
people's).

PATH is a training workdir or step directory, a `python -m hrnet_jax.convert` directory, or an
official PyTorch .pth / .safetensors (converted on the fly).
"""

from absl import flags

from hrnet_jax import cli

cli.define_config_flag()
flags.DEFINE_string('checkpoint', None, 'Checkpoint to evaluate.')
flags.DEFINE_string('split', None, 'Split to evaluate (default: config.data.eval_split).')
flags.DEFINE_bool('flip', False, 'Average with the horizontally flipped image.')
flags.DEFINE_bool('multi_scale', False, 'Average over config.eval.multi_scales (segmentation).')
flags.DEFINE_enum('sliding', None, ['auto', 'always', 'never'], "When windows run under "
                  "config.eval.windows='clamp': 'auto' (scales above 1), 'always' or 'never' "
                  '(segmentation).')
flags.DEFINE_string('predictions', None, 'Write predictions into this directory (segmentation: '
                    'colour PNGs; pose: the COCO-format keypoint results JSON; classification: '
                    'the top-5 per image; landmarks: the points per face).')
flags.DEFINE_string('results', None, 'Write the scores as JSON here.')
flags.DEFINE_string('detector', None, 'COCO pose: a detection config whose person boxes replace '
                    'config.data.det_json (written as person_detections_<split>.json).')
flags.DEFINE_string('detector_checkpoint', None, 'The detector\'s checkpoint.')
flags.DEFINE_float('detector_threshold', 0.5, '--track: person boxes scoring below are left out '
                   '(FlowTrack: 0.5).')
flags.DEFINE_bool('track', False, 'PoseTrack: track poses through each video (hrnet_jax.tracking) '
                  'and score AP and MOTA.')
flags.mark_flags_as_required(['config', 'checkpoint'])


def main(argv):
  del argv
  cli.start_runtime(flags.FLAGS.config)  # before anything asks JAX for devices
  from hrnet_jax.evaluate_checkpoint import run
  f = flags.FLAGS
  if bool(f.detector) != bool(f.detector_checkpoint):
    raise cli.UserError('--detector and --detector_checkpoint go together')
  detector = cli.load_config(f.detector) if f.detector else None
  run(f.config, f.checkpoint, split=f.split, flip=f.flip, multi_scale=f.multi_scale,
      sliding=f.sliding, predictions_dir=f.predictions, results_path=f.results,
      detector=detector, detector_checkpoint=f.detector_checkpoint, track=f.track,
      detector_threshold=f.detector_threshold)


if __name__ == '__main__':
  cli.run(main)
