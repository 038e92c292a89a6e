"""The recipes: every file and variant builds, aliases equal what they name, the keys the README
tells users to override parse from the command line, bad keys and arguments are one clear line,
and the demos' schedule boundaries (in epochs) fall on the steps they state."""

import importlib
import os
import pathlib
import subprocess
import sys

import pytest
from absl import flags
from ml_collections import config_flags

from hrnet_jax import cli
from hrnet_jax.errors import ConfigError
from hrnet_jax.models import zoo

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (ROOT / 'configs').glob('*.py')
                 if p.stem not in ('__init__', 'common'))


def load(name, arg=None):
  return importlib.import_module(f'configs.{name}').get_config(arg)


@pytest.mark.parametrize('name', RECIPES)
def test_every_recipe_builds_with_the_shared_keys(name):
  c = load(name)
  base = load('seg_cityscapes')  # every recipe has at least the shared keys
  for group in ('model', 'data', 'optimizer', 'eval', 'checkpoint', 'mesh', 'distributed'):
    assert set(base[group].keys()) - {'crop_size', 'scale_range', 'scale_step', 'base_size',
                                      'train_resize', 'flip', 'eval_size', 'scales', 'resize',
                                      'windows', 'stride_rate',
                                      'multi_scales', 'sliding', 'save_predictions'} \
        <= set(c[group].keys()), group
  zoo.split_arch(c.model.arch)  # a zoo arch
  assert all(v is None for v in load(name).model.overrides.values()) or 'demo' in name
  small = load(name, 'runlocal') if 'runlocal' in _args(name) else None
  if small is not None:
    assert small.total_steps == 6 and small.data.num_workers == 0
    assert small.model.overrides.width == 8


def _args(name):
  try:
    load(name, 'nonsense')
  except ConfigError as e:
    return str(e)
  return ''


def test_variants_and_aliases_are_the_same_configs():
  assert load('seg_cityscapes', 'arch=seg_w18').model.arch == 'seg_w18'
  for alias, target, arg in (('seg_cityscapes_w18', 'seg_cityscapes', 'arch=seg_w18'),
                             ('seg_cityscapes_ocr', 'seg_cityscapes', 'arch=seg_ocr_w48'),
                             ('seg_demo', 'seg_cityscapes', 'demo'),
                             ('pose_coco_w48_384x288', 'pose_coco', 'arch=pose_w48,size=384x288'),
                             ('pose_demo', 'pose_coco', 'demo'),
                             ('cls_imagenet_w18', 'cls_imagenet', ''),
                             ('cls_demo', 'cls_imagenet', 'demo'),
                             ('face_demo', 'face_300w', 'demo')):
    assert load(alias).to_dict() == load(target, arg).to_dict(), alias
  big = load('pose_coco', 'size=384x288')
  assert (big.data.input_size, big.data.heatmap_size, big.data.sigma) == ((384, 288), (96, 72),
                                                                          3.0)
  with pytest.raises(ConfigError, match=r"expected one of \['arch', 'demo', 'runlocal'\]"):
    load('seg_cityscapes', 'runloc')
  with pytest.raises(ValueError, match='size=1x1'):
    load('pose_coco', 'size=1x1')


def parse(argv, monkeypatch):
  """The command line through a flag defined as train.py / eval.py / predict.py define theirs
  (ml_collections reads the overrides from sys.argv)."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'recipe', flag_values=values,
                                  lock_config=True)
  monkeypatch.setattr(sys, 'argv', ['train.py'] + argv)
  values(sys.argv)
  return values.config


def test_readme_overrides_parse_from_the_command_line(monkeypatch):
  c = parse(['--config=configs/seg_cityscapes.py:arch=seg_w18',
             '--config.model.overrides.align_corners=True',
             '--config.model.overrides.upsample=nearest', '--config.model.overrides.width=16',
             '--config.model.overrides.num_modules=(1,2,3)', '--config.model.remat=full',
             '--config.data.root=/data/cityscapes', '--config.init_from=w18.pth',
             '--config.dtype=bfloat16', '--config.batch_size=8', '--config.loss.ohem=True',
             '--config.optimizer.boundaries=(3,5)', '--config.mesh.shard_params=True'],
            monkeypatch)
  assert c.model.arch == 'seg_w18' and c.model.remat == 'full' and c.data.root == '/data/cityscapes'
  assert dict(c.model.overrides.items()) == dict(
      zoo_defaults(), align_corners=True, upsample='nearest', width=16, num_modules=(1, 2, 3))
  from hrnet_jax.tasks import get_task
  kwargs = get_task(c).model_kwargs
  assert kwargs == dict(align_corners=True, upsample='nearest', width=16, num_modules=(1, 2, 3),
                        num_classes=19)  # unset overrides stay out: the arch's defaults rule
  assert zoo.model_config(c.model.arch, **kwargs)['align_corners'] is True


def zoo_defaults():
  return {k: None for k in load('seg_cityscapes').model.overrides.keys()}


def test_unknown_override_keys_name_the_closest_ones():
  spec = 'configs/seg_cityscapes.py'
  say = lambda *a: cli.describe_override_error(['train.py', f'--config={spec}', *a],
                                               AttributeError('x'))
  assert say('--config.model.overides.width=3').startswith(
      f'--config.model.overides.width: {spec} has no key config.model.overides.width; did you '
      'mean config.model.overrides.width or ')  # the closest first
  assert 'did you mean config.data.name' in say('--config.data.nme=x')
  top = say('--config.does_not_exist=1')
  assert 'config holds: batch_size, checkpoint, compile_cache, data' in top


@pytest.mark.slow
def test_commands_end_bad_input_with_one_line(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  train = [sys.executable, 'train.py', '--config', 'configs/seg_cityscapes.py:runlocal']
  cases = [
      (['--workdir', str(tmp_path), '--config.model.overrides.widht=3'],
       'did you mean config.model.overrides.width'),
      (['--workdir', str(tmp_path / 'file')], 'exists and is not a directory'),
  ]
  (tmp_path / 'file').write_text('x')
  for args, message in cases:
    done = subprocess.run(train + args, capture_output=True, text=True, cwd=ROOT, env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], lines
  done = subprocess.run([sys.executable, 'train.py', '--config', 'configs/seg_cityscapes.py:x',
                         '--workdir', str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                        env=env)
  assert done.returncode == 2 and done.stderr.strip().startswith('error: --config=')
  assert not (tmp_path / 'checkpoints').exists()


@pytest.mark.slow
def test_first_hour_mistakes_end_with_one_line(seg_root, tmp_path):
  """What a new user types wrong: one `error:` line and exit status 2 each, no traceback, and
  nothing written; --help exits 0."""
  env = {k: v for k, v in os.environ.items() if k not in ('HRNET_JAX_DATA', 'TFDS_DATA_DIR')}
  env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path / 'home'))
  recipe = f'{ROOT}/configs/seg_cityscapes.py'
  demo = ['--config', f'{recipe}:runlocal', f'--config.data.root={seg_root}']
  work = ['--workdir', str(tmp_path / 'w')]
  cases = [
      (['train.py', *demo, *work, '--config.batch_size=0'], 'config.batch_size=0'),
      (['train.py', *demo, *work, '--config.batch_size=1000'],
       'config.batch_size=1000 is larger than the training split (16 samples)'),
      (['train.py', *demo, *work, '--config.total_steps=-3'],
       'config.total_steps=-3: expected a positive number'),
      (['train.py', *demo, *work, '--config.batch_size=abc'], "'abc'"),
      (['train.py', '--config', str(ROOT / 'configs'), *work], 'is a directory'),
      (['train.py', '--config', recipe],  # the mission's command, with no data anywhere
       'no cityscapes data: config.data.root is empty and $HRNET_JAX_DATA is not set. Set '
       '--config.data.root=PATH, or HRNET_JAX_DATA=DIR holding cityscapes/'),
      (['eval.py', *demo, '--checkpoint', str(tmp_path / 'none'), '--sliding=sometimes'],
       "--sliding=sometimes"),
      (['-m', 'hrnet_jax.export', *demo, '--checkpoint', str(tmp_path / 'none'), '--format',
        'tflite', '--out', str(tmp_path / 'x')], 'tflite'),
  ]
  for args, message in cases:
    done = subprocess.run([sys.executable, *(str(ROOT / args[0]) if args[0].endswith('.py')
                                             else args[0],), *args[1:]],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, (args, done.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], lines
  assert not (tmp_path / 'w').exists() and not (tmp_path / 'runs').exists()  # nothing written
  done = subprocess.run([sys.executable, str(ROOT / 'train.py'), '--help'], capture_output=True,
                        text=True, cwd=tmp_path, env=env)
  assert done.returncode == 0 and '--workdir' in done.stdout, done.stderr[-2000:]


@pytest.mark.slow
def test_ctrl_c_in_training_is_one_line_and_exit_130(seg_root, tmp_path):
  """SIGINT (Ctrl-C) with data worker processes running: a notice, then where it stopped and
  which checkpoint is kept, exit status 130, no traceback and no leaked shared memory report."""
  import signal
  import time
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  command = [sys.executable, 'train.py', '--config', 'configs/seg_cityscapes.py:runlocal',
             f'--config.data.root={seg_root}', '--config.data.num_workers=2',
             '--config.total_steps=100000', '--config.checkpoint.every_steps=2',
             '--config.eval.every_steps=0', '--workdir', str(tmp_path / 'w')]
  run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT, env=env)
  first = tmp_path / 'w' / 'checkpoints' / '2'
  deadline = time.time() + 300
  while not first.exists() and run.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  run.send_signal(signal.SIGINT)
  _, err = run.communicate(timeout=120)
  assert run.returncode == 130, err[-3000:]
  lines = err.strip().splitlines()
  assert len(lines) == 2, lines
  assert lines[0] == 'Ctrl-C: stopping after this step (Ctrl-C again to stop at once)'
  assert lines[1].startswith('stopped at step ') and '; the last checkpoint is ' in lines[1]
  assert lines[1].endswith('; run the same command to resume')
  assert 'leaked shared_memory' not in err and 'Traceback' not in err


@pytest.mark.parametrize('name, variant, images, steps', [
    ('pose_coco', 'demo', 400, 250), ('cls_imagenet', 'demo', 400, 160),
    ('face_300w', 'demo', 480, 500), ('det_coco_faster_rcnn', 'tracking_demo', 768, 1344),
    ('pose_posetrack', 'demo', 1932, 1320), ('det_coco_centernet', 'demo', 320, 720)])
def test_demo_boundaries_fall_on_the_stated_steps(name, variant, images, steps):
  """Boundaries are epochs; on each demo's data they land on the step its docstring states."""
  from hrnet_jax.train import optim
  c = load(name, variant)
  per_epoch = images // c.batch_size
  s = optim.make_schedule(c.optimizer, c.total_steps, per_epoch)
  assert float(s(steps - 1)) == pytest.approx(c.optimizer.lr)
  assert float(s(steps)) == pytest.approx(c.optimizer.lr * c.optimizer.gamma)


def test_compile_cache_setting(monkeypatch, tmp_path):
  import jax
  calls = []
  monkeypatch.setattr(jax.config, 'update', lambda key, value: calls.append((key, value)))
  monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  monkeypatch.setenv('HRNET_JAX_CACHE', str(tmp_path))
  assert cli.enable_compile_cache('off') is None and calls == []
  assert cli.enable_compile_cache('auto') == str(tmp_path / 'xla')
  assert cli.enable_compile_cache(str(tmp_path / 'mine')) == str(tmp_path / 'mine')
  assert calls == [('jax_compilation_cache_dir', str(tmp_path / 'xla')),
                   ('jax_compilation_cache_dir', str(tmp_path / 'mine'))]
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', '/elsewhere')  # the user's own setting wins
  assert cli.enable_compile_cache('auto') == '/elsewhere' and len(calls) == 2
  for name in ('seg_cityscapes', 'pose_coco', 'cls_imagenet', 'face_300w'):
    config = importlib.import_module(f'configs.{name}').get_config()
    assert config.compile_cache == 'auto' and config.model.scan is True


def test_an_unknown_remat_policy_is_one_clear_error():
  import jax
  import jax.numpy as jnp

  from hrnet_jax.errors import ConfigError
  from hrnet_jax.models import zoo
  model = zoo.create_model('seg_w18', remat='sometimes', width=4, num_modules=(1, 1, 1))
  images = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  with pytest.raises(ConfigError, match=r"model.remat: 'sometimes' is not one of"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def test_default_workdir_and_data_root(monkeypatch, tmp_path):
  """train.py without --workdir: runs/<recipe>[_<arg>]; an empty config.data.root: the dataset's
  folder under $HRNET_JAX_DATA, or for a *_tfds name $TFDS_DATA_DIR, else ~/tensorflow_datasets
  (TFDS's default); nothing there: one error naming both ways."""
  import ml_collections
  from hrnet_jax.data.sources import DataError, dataset_root
  from hrnet_jax.train.workdir import default_workdir
  assert default_workdir('configs/seg_cityscapes.py') == 'runs/seg_cityscapes'
  assert default_workdir('x/pose_coco.py:arch=pose_w48') == 'runs/pose_coco_arch_pose_w48'
  data = lambda name: ml_collections.ConfigDict({'name': name, 'root': ''})
  for var in ('HRNET_JAX_DATA', 'TFDS_DATA_DIR'):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  with pytest.raises(DataError, match=r'no coco data: .* \$HRNET_JAX_DATA is not set\. Set '
                                      r'--config.data.root=PATH, or HRNET_JAX_DATA=DIR holding '
                                      r'coco/$'):
    dataset_root(data('coco'))
  monkeypatch.setenv('HRNET_JAX_DATA', str(tmp_path))
  with pytest.raises(DataError, match=rf'{tmp_path}/cityscapes \(\$HRNET_JAX_DATA/cityscapes\) '
                                      'does not exist'):
    dataset_root(data('cityscapes'))
  (tmp_path / 'cityscapes').mkdir()
  (tmp_path / 'coco').mkdir()
  assert dataset_root(data('cityscapes')) == str(tmp_path / 'cityscapes')
  assert dataset_root(data('coco_detection')) == str(tmp_path / 'coco')
  with pytest.raises(DataError, match=r"TFDS data_dir \(.*home/tensorflow_datasets, TFDS's "
                                      r'default data_dir\) does not exist.*TFDS_DATA_DIR=DIR'):
    dataset_root(data('imagenet_tfds'))
  (tmp_path / 'home' / 'tensorflow_datasets').mkdir(parents=True)
  assert dataset_root(data('imagenet_tfds')) == str(tmp_path / 'home' / 'tensorflow_datasets')
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))
  assert dataset_root(data('cityscapes_tfds')) == str(tmp_path)
  given = ml_collections.ConfigDict({'name': 'coco', 'root': '/given'})
  assert dataset_root(given) == '/given'  # config.data.root wins
