"""Train: `python train.py --config configs/seg_cityscapes.py --workdir DIR [--config.KEY=VALUE]`.

Resumes from the newest checkpoint in DIR. All hosts of a multi-host job run the same command.
"""

from absl import flags

from hrnet_jax import cli

cli.define_config_flag()
flags.DEFINE_string('workdir', None, 'Checkpoints, TensorBoard events and logs go here.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  cli.start_runtime(flags.FLAGS.config)  # before anything asks JAX for devices
  from hrnet_jax.train.loop import train_and_evaluate
  train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main)
