"""Command-line plumbing shared by train.py, eval.py and predict.py: the --config flag (a
recipe file with `get_config(arg)`, e.g. `configs/seg_cityscapes.py:arch=seg_w18`, and
`--config.KEY=VALUE` overrides), and bad input reported as one line instead of a traceback."""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
import sys
from typing import Any, Callable

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from hrnet_jax.errors import Interrupted, UserError


def define_config_flag() -> None:
  config_flags.DEFINE_config_file('config', None, 'Recipe file with get_config(), optionally '
                                  'followed by :ARG (e.g. configs/seg_cityscapes.py:arch=seg_w18)',
                                  lock_config=True)


def _config_spec(argv: list[str]) -> str | None:
  for i, a in enumerate(argv):
    if a.startswith('--config='):
      return a.split('=', 1)[1]
    if a == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return None


def config_spec() -> str | None:
  """The --config value of this command (`path.py[:arg]`), as given."""
  return _config_spec(sys.argv)


def load_config(spec: str) -> Any:
  """`path.py[:arg]` -> the recipe's config: `get_config(arg)`, or `get_config()` without an arg."""
  path, _, arg = spec.partition(':')
  module_spec = importlib.util.spec_from_file_location('_recipe', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _keys(config: Any, prefix: str = '') -> list[str]:
  out = []
  for k, v in config.items():
    out.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      out += _keys(v, prefix + k + '.')
  return out


def describe_override_error(argv: list[str], error: Exception) -> str:
  """Which --config.KEY could not be applied, and the config's closest keys."""
  overrides = [a[2:].split('=', 1)[0] for a in argv if a.startswith('--config.')]
  spec = _config_spec(argv)
  try:
    known = _keys(load_config(spec)) if spec else []
  except Exception:  # pylint: disable=broad-except  (the original error says more)
    known = []
  bad = [k for k in overrides if known and k.split('.', 1)[1] not in known]
  if not bad:
    return f'--config override: {error}'
  key = bad[0].split('.', 1)[1]
  close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
  if close:
    hint = f'did you mean {" or ".join("config." + c for c in close)}?'
  else:
    parent = key.rsplit('.', 1)[0] if '.' in key else ''
    while parent and parent not in known:
      parent = parent.rsplit('.', 1)[0] if '.' in parent else ''
    level = [k for k in known if (k.rsplit('.', 1)[0] if '.' in k else '') == parent]
    names = ', '.join(k.rsplit('.', 1)[-1] for k in level)
    hint = f'config{"." + parent if parent else ""} holds: {names}'
  return f'--{bad[0]}: {spec} has no key config.{key}; {hint}'


def enable_compile_cache(setting: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache, so that a restart, a resume or a second
  evaluation reuses the programs compiled before. `setting`: 'auto' ($HRNET_JAX_CACHE/xla, by
  default ~/.cache/hrnet_jax/xla), a directory, or 'off'. JAX_COMPILATION_CACHE_DIR, when set,
  wins. Returns the directory in use (None: off)."""
  import os

  import jax
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return os.environ['JAX_COMPILATION_CACHE_DIR']
  setting = (setting or 'off').strip()
  if setting.lower() in ('off', 'none', 'false', '0'):
    return None
  if setting == 'auto':
    from hrnet_jax.data.demos import cache_dir
    setting = str(cache_dir() / 'xla')
  jax.config.update('jax_compilation_cache_dir', setting)
  return setting


def start_runtime(config: Any) -> None:
  """What train.py, eval.py and predict.py do first: JAX's multi-process runtime when the job
  has several processes (before anything asks for devices), and the compilation cache
  (`config.compile_cache`)."""
  from hrnet_jax.train.parallel import initialize_distributed
  initialize_distributed(config)
  enable_compile_cache(config.get('compile_cache', 'auto'))


_HELP_FLAGS = ('--help', '-help', '--helpshort', '--helpfull', '--helpxml', '-?', '-h')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing with the commands' conventions: a bad flag or value is one `error:` line
  and exit status 2 (absl: a 'FATAL Flags parsing error' and 1); --help exits 0 (absl: 1)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {" ".join(str(e).split())} (--helpshort lists the flags)', file=sys.stderr)
    sys.exit(2)
  except SystemExit as e:
    if e.code == 1 and any(a.split('=')[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise


def stopped_by_user(message: str) -> None:
  """Ctrl-C: the one line saying where the run stopped, and exit status 130 (128 + SIGINT)."""
  print(message, file=sys.stderr, flush=True)
  sys.exit(130)


def run(main: Callable[[list[str]], Any]) -> None:
  """app.run(main): a UserError from the library, a bad flag, or a --config override that does
  not apply ends the command with one `error:` line and exit status 2; Ctrl-C with one line and
  exit status 130. Orbax's per-save INFO logs are off unless --verbosity is given."""
  started = []

  def wrapped(argv: list[str]) -> Any:
    started.append(True)
    if not flags.FLAGS['verbosity'].present:
      logging.set_verbosity(logging.WARNING)
    return main(argv)

  spec = _config_spec(sys.argv)
  try:
    if spec:  # errors of the recipe itself, before absl wraps them in a traceback
      path = spec.partition(':')[0]
      if pathlib.Path(path).is_dir():
        raise UserError(f'{path} is a directory; expected a recipe file such as '
                        'configs/seg_cityscapes.py')
      load_config(spec)
  except UserError as e:
    print(f'error: --config={spec}: {e}', file=sys.stderr)
    sys.exit(2)
  except FileNotFoundError:
    print(f'error: --config={spec}: no such recipe file', file=sys.stderr)
    sys.exit(2)
  try:
    app.run(wrapped, flags_parser=parse_flags)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:  # the machine's, not the program's: a full disk, a read-only folder
    if not started:
      raise
    print(f'error: {e.filename or ""}{": " if e.filename else ""}{e.strerror or e}',
          file=sys.stderr)
    sys.exit(2)
  except Interrupted as e:
    stopped_by_user(str(e))
  except KeyboardInterrupt:
    stopped_by_user('stopped (Ctrl-C)')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    if started:
      raise
    print(f'error: {describe_override_error(sys.argv, e)}', file=sys.stderr)
    sys.exit(2)
