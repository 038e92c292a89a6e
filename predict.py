"""Predict: `python predict.py --config CONFIG --checkpoint PATH IMAGE... --out DIR`.

Writes, per image, `<name>.png` (segmentation overlay with a class legend, pose skeletons, facial
landmarks, or the top-5 labels) and `<name>.json` (the raw results, in image pixels), and
`predictions.json` with all of them. PATH is anything eval.py takes: a training workdir or step
directory, a `python -m hrnet_jax.convert` directory, or an official .pth (converted on the fly).

Pose and landmarks run on the whole image, or on the boxes of `--boxes FILE.json`:
{"image.jpg": [[x, y, w, h], ...], ...} (keys are image file names).
"""

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Recipe file with get_config().', lock_config=True)
flags.DEFINE_string('checkpoint', None, 'Checkpoint to run.')
flags.DEFINE_string('out', None, 'Directory for the pictures and JSON files.')
flags.DEFINE_string('boxes', None, 'JSON {image file name: [[x, y, w, h], ...]} (pose, landmarks).')
flags.mark_flags_as_required(['config', 'checkpoint', 'out'])


def main(argv):
  images = argv[1:]
  if not images:
    raise app.UsageError('give one or more image files after the flags')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  from hrnet_jax.predict import run
  f = flags.FLAGS
  run(f.config, f.checkpoint, images, f.out, boxes_path=f.boxes)


if __name__ == '__main__':
  app.run(main)
