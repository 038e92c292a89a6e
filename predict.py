"""Predict: `python predict.py --config CONFIG --checkpoint PATH IMAGE... --out DIR`.

Writes, per image, `<name>.png` (segmentation overlay with a class legend, pose skeletons, facial
landmarks, or the top-5 labels) and `<name>.json` (the raw results, in image pixels), and
`predictions.json` with all of them. Names are the images' paths relative to their common folder,
so images of the same name in different folders stay apart. PATH is anything eval.py takes: a
training workdir or step directory, a `python -m hrnet_jax.convert` directory, or an official
.pth (converted on the fly).

Pose, landmarks and classification run on the whole image, or on the boxes of `--boxes
FILE.json`: {"image.jpg": [[x, y, w, h], ...], ...} (keys: file names, or paths as given).
An image that fails is reported and skipped; the exit status is 1 when any did.
"""

import sys

from absl import app, flags

from hrnet_jax import cli

cli.define_config_flag()
flags.DEFINE_string('checkpoint', None, 'Checkpoint to run.')
flags.DEFINE_string('out', None, 'Directory for the pictures and JSON files.')
flags.DEFINE_string('boxes', None, 'JSON {image file name: [[x, y, w, h], ...]} (pose, landmarks, '
                    'classification).')
flags.mark_flags_as_required(['config', 'checkpoint', 'out'])


def main(argv):
  images = argv[1:]
  if not images:
    raise app.UsageError('give one or more image files after the flags')
  cli.start_runtime(flags.FLAGS.config)
  from hrnet_jax.predict import run
  f = flags.FLAGS
  outcome = run(f.config, f.checkpoint, images, f.out, boxes_path=f.boxes)
  sys.exit(1 if outcome.failed else 0)


if __name__ == '__main__':
  cli.run(main)
