"""Train: `python train.py --config configs/seg_cityscapes.py [--workdir DIR] [--config.KEY=VALUE]`.

Resumes from the newest checkpoint in DIR (default: runs/<recipe>[_<arg>], printed at the start).
The data: --config.data.root=PATH, else $HRNET_JAX_DATA/<dataset> (the TFDS data_dir for the
*_tfds names). All hosts of a multi-host job run the same command.
"""

from absl import flags

from hrnet_jax import cli

cli.define_config_flag()
flags.DEFINE_string('workdir', None, 'Checkpoints, TensorBoard events and logs go here '
                    '(default: runs/<recipe name>[_<recipe arg>]).')
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f'unexpected arguments {" ".join(argv[1:])}: train.py takes flags only')
  cli.start_runtime(flags.FLAGS.config)  # before anything asks JAX for devices
  from hrnet_jax.train.loop import train_and_evaluate
  from hrnet_jax.train.workdir import default_workdir
  workdir = flags.FLAGS.workdir
  if not workdir:
    workdir = default_workdir(cli.config_spec())
    print(f'workdir: {workdir} (the default; --workdir=DIR to choose)', flush=True)
  train_and_evaluate(flags.FLAGS.config, workdir)


if __name__ == '__main__':
  cli.run(main)
