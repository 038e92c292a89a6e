"""Train: `python train.py --config configs/seg_cityscapes.py --workdir DIR [--config.KEY=VALUE]`.

Resumes from the newest checkpoint in DIR. All hosts of a multi-host job run the same command.
"""

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file('config', None, 'Recipe file with get_config().', lock_config=True)
flags.DEFINE_string('workdir', None, 'Checkpoints, TensorBoard events and logs go here.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  if not flags.FLAGS['verbosity'].present:  # Orbax logs every save step at INFO.
    logging.set_verbosity(logging.WARNING)
  from hrnet_jax.train.parallel import initialize_distributed
  initialize_distributed(flags.FLAGS.config)  # before anything asks JAX for devices
  from hrnet_jax.train.loop import train_and_evaluate
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
  app.run(main)
