"""Predict: `python predict.py --config CONFIG --checkpoint PATH INPUT... --out DIR`.

INPUT: image files, directories (walked recursively for images and videos) and video files
(.mp4/.avi/.mov/.mkv/.m4v). Writes, per image, `<name>.png` (segmentation overlay with a class
legend, pose skeletons, facial landmarks, or the top-5 labels) and `<name>.json` (the raw
results, in image pixels); per video the annotated video `<name>.<ext>` (same size; fps divided
by --every) and `<name>.jsonl` (one JSON line per predicted frame); and `predictions.json` with
all records. Samples of one shape run --batch at a time; a progress bar shows images/s on a
terminal. Names are the images' paths relative to their common folder,
so images of the same name in different folders stay apart. PATH is anything eval.py takes: a
training workdir or step directory, a `python -m hrnet_jax.convert` directory, or an official
.pth (converted on the fly).

Pose, landmarks and classification run on the whole image, or on the boxes of `--boxes
FILE.json`: {"image.jpg": [[x, y, w, h], ...], "video.mp4": {"0": [[x, y, w, h], ...], ...}}
(keys: file names, or paths as given; a video's boxes keyed by frame index, a frame without
an entry taken whole). Pose on any image: `--detector configs/det_coco_fcos.py
--detector_checkpoint DET_PATH` finds the people (class person, score >= --detector_threshold)
where --boxes gives none; with --track (videos) the people are tracked, each drawn in its id's
colour with an 'id N' label and its `track_id` in the JSON lines. Detection draws its boxes
with class and score.
An image, video or frame that fails is reported and skipped; the exit status is 1 when any did.
"""

import sys

from absl import flags

from hrnet_jax import cli

cli.define_config_flag()
flags.DEFINE_string('checkpoint', None, 'Checkpoint to run.')
flags.DEFINE_string('out', None, 'Directory for the pictures and JSON files.')
flags.DEFINE_string('boxes', None, 'JSON {image file name: [[x, y, w, h], ...]} (pose, landmarks, '
                    'classification).')
flags.DEFINE_integer('batch', 1, 'Samples per step (images of one size, crops, frames).')
flags.DEFINE_integer('every', 1, 'Videos: predict every N-th frame.')
flags.DEFINE_string('detector', None, 'Pose: a detection config (e.g. configs/det_coco_fcos.py) '
                    'whose person boxes feed the pose model where --boxes gives none.')
flags.DEFINE_string('detector_checkpoint', None, 'The detector\'s checkpoint (as --checkpoint).')
flags.DEFINE_float('detector_threshold', 0.5, 'Person boxes scoring below are left out.')
flags.DEFINE_bool('track', False, 'Pose on videos: track the people (ids kept through the video, '
                  'drawn in their colour; needs --detector or --boxes).')
flags.DEFINE_bool('overwrite', False, 'Replace the results of an earlier run in --out (without it, '
                  'an --out that holds predictions.json is an error).')
flags.mark_flags_as_required(['config', 'checkpoint', 'out'])


def main(argv):
  images = argv[1:]
  if not images:
    raise cli.UserError('give one or more images, directories or videos after the flags')
  cli.start_runtime(flags.FLAGS.config)
  from hrnet_jax.predict import PersonDetector, run
  f = flags.FLAGS
  detector = None
  if f.detector or f.detector_checkpoint:
    if not (f.detector and f.detector_checkpoint):
      raise cli.UserError('--detector and --detector_checkpoint go together')
    detector = PersonDetector(cli.load_config(f.detector), f.detector_checkpoint,
                              f.detector_threshold)
  outcome = run(f.config, f.checkpoint, images, f.out, boxes_path=f.boxes, batch=f.batch,
                every=f.every, detector=detector, overwrite=f.overwrite, track=f.track)
  sys.exit(1 if outcome.failed else 0)


if __name__ == '__main__':
  cli.run(main)
