"""Checkpoints: the training CheckpointManager (state + data iterator + config), and loading
model variables from anything a user may point at (a workdir, a step, a converted directory, an
official .pth / .safetensors)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import re
import sys
import warnings
from typing import Any, Callable, Iterator

import grain
from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from hrnet_jax.errors import UserError
from hrnet_jax.models import zoo

CHECKPOINT_DIR = 'checkpoints'


def make_manager(workdir: str | os.PathLike, keep: int, keep_best: int, metric: str,
                 async_save: bool = True, mode: str = 'max') -> ocp.CheckpointManager:
  """Keeps the newest `keep` steps and the best `keep_best` by `metric`: the highest with
  `mode` 'max' (accuracy, mIoU, AP), the lowest with 'min' (errors such as NME).

  The preservation policy keeps the newest checkpoint whatever the metrics say; saves are atomic
  (written to a temporary directory, renamed when complete), so an interrupted save never
  replaces a good checkpoint.
  """
  if mode not in ('max', 'min'):
    raise ValueError(f"metric mode: expected 'max' or 'min', got {mode!r}")
  keep_policies = [policies.LatestN(n=max(1, keep))]
  if keep_best:  # BestN keeps the last n after sorting; reverse=True sorts the lowest last.
    keep_policies.append(policies.BestN(get_metric_fn=lambda m: m[metric], n=keep_best,
                                        reverse=mode == 'min',
                                        keep_checkpoints_without_metrics=False))
  options = ocp.CheckpointManagerOptions(
      preservation_policy=policies.AnyPreservationPolicy(keep_policies),
      enable_async_checkpointing=async_save, create=True, cleanup_tmp_directories=True)
  path = pathlib.Path(workdir).absolute() / CHECKPOINT_DIR
  _drop_closed_loop_callbacks()  # a failed write leaves such callbacks too (disk full)
  return ocp.CheckpointManager(path, options=options)


class CheckpointWriteError(UserError):
  """A checkpoint could not be written (disk full, read-only or vanished directory); the ones
  before it are intact, and the next run's manager removes the unfinished temporary one."""


_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")


def _os_error(e: BaseException) -> str | None:
  """The operating system's reason behind a failed write, also where orbax and tensorstore wrap
  it in another exception (their messages carry `os_error_code='28'`); None for other errors."""
  for error in (e, e.__cause__, e.__context__):
    if isinstance(error, OSError):
      return error.strerror or str(error)
    code = _OS_ERROR_CODE.search(str(error or ''))
    if code:
      return os.strerror(int(code.group(1)))
  return None


class _QuietWriteFailures(logging.Filter):
  """Drops orbax's logged tracebacks of a failed background write: the write error is raised in
  the main thread, as one line (CheckpointWriteError)."""

  def filter(self, record: logging.LogRecord) -> bool:
    text = record.getMessage()
    return not (record.levelno >= logging.ERROR and 'orbax' in record.pathname
                and ('thread' in text or 'raised an exception' in text))


class _QuietLostWrites(logging.Filter):
  """Drops asyncio's 'exception was never retrieved' reports of the same failed write: orbax
  stops waiting on its remaining write tasks once one fails, and their errors are reported when
  the tasks are collected (at any later moment, often at exit)."""

  def filter(self, record: logging.LogRecord) -> bool:
    error = record.exc_info[1] if record.exc_info else None
    return not ('never retrieved' in str(record.msg) and error is not None
                and _os_error(error) is not None)


logging.getLogger('absl').addFilter(_QuietWriteFailures())
logging.getLogger('asyncio').addFilter(_QuietLostWrites())
# The same failed write leaves orbax's not-yet-started fragment writes un-awaited; Python warns of
# them when they are collected (often at exit, after the one-line error).
warnings.filterwarnings('ignore', category=RuntimeWarning,
                        message=r"coroutine '[\w.<>]*write_fragment' was never awaited")


@contextlib.contextmanager
def writing(manager: ocp.CheckpointManager, step: int | None = None) -> Iterator[None]:
  """Turns a failed checkpoint write inside the block into a CheckpointWriteError saying why and
  which checkpoint is still the last good one."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except  (orbax wraps OS errors in several types)
    reason = _os_error(e)
    if reason is None:
      raise
    kept = last_finished(manager)
    what = f'checkpoint {step}' if step is not None else 'a checkpoint'
    raise CheckpointWriteError(f'cannot write {what} in {manager.directory}: {reason}. The last '
                               f'good checkpoint is {kept}; free space (or make the workdir '
                               'writable) and run the same command to resume') from None


def last_finished(manager: ocp.CheckpointManager) -> str:
  """The newest finished checkpoint on disk (an unfinished save is a temporary directory), or
  'none': what the messages of a stopped run name as kept."""
  finished = step_dirs(pathlib.Path(manager.directory))
  return str(finished[0]) if finished else 'none'


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iter: Any, config: Any,
         metrics: dict | None = None) -> None:
  """Starts writing `step` (asynchronously with `async_save`); a failed write, of this or the
  previous save, is a CheckpointWriteError."""
  with writing(manager, step):
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=grain.checkpoint.CheckpointSave(data_iter),
        config=ocp.args.JsonSave(json.loads(config.to_json()))), metrics=metrics)


def close(manager: ocp.CheckpointManager, step: int | None = None) -> None:
  """Waits for the last save (of `step`) to be written, then closes; a failed write is a
  CheckpointWriteError."""
  with writing(manager, step):
    manager.close()


class CheckpointError(UserError, ValueError):
  """A checkpoint that cannot serve this run: unreadable, or written for another model."""


# Config keys whose values fix the shapes and structure of the saved train state.
_STATE_KEYS = ('task', 'model.', 'data.name', 'optimizer.name', 'optimizer.momentum',
               'optimizer.nesterov', 'optimizer.weight_decay', 'dtype')


def _flat_config(config: Any) -> dict[str, Any]:
  tree = config if isinstance(config, dict) else json.loads(config.to_json())
  return {'.'.join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def saved_config(step_dir: pathlib.Path) -> dict[str, Any] | None:
  """The config saved with a training checkpoint (flattened), or None when unreadable."""
  try:
    return _flat_config(json.loads((step_dir / 'config' / 'metadata').read_text()))
  except (OSError, ValueError):
    return None


def _path_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """'params/backbone/conv1/kernel' -> shape, whatever containers hold the leaves (orbax's
  metadata has dicts and lists where the state has dataclasses and tuples)."""
  token = lambda k: str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))))
  return {'/'.join(map(token, path)): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_differences(saved: Any, target: Any) -> list[str]:
  """Paths whose shapes (or presence) differ between two pytrees of arrays/metadata."""
  a, b = _path_shapes(saved), _path_shapes(target)
  return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def describe_mismatch(step_dir: pathlib.Path, config: Any, differences: list[str]) -> str:
  """A few lines: what the checkpoint was written with, what differs, how to go on."""
  now, then = _flat_config(config), saved_config(step_dir) or {}
  changed = [k for k in sorted(now.keys() | then.keys())
             if k.startswith(_STATE_KEYS) and now.get(k) != then.get(k)]
  lines = [f'{step_dir} was written for another model or optimizer: {len(differences)} arrays '
           f'of the train state differ in shape or presence (e.g. {differences[0]}).']
  if changed:
    lines.append('It was written with ' + ', '.join(
        f'{k}={then.get(k)!r} (this run: {now.get(k)!r})' for k in changed[:6]) + '.')
  if now.get('model.scan', True) != then.get('model.scan', False):
    lines.append('Checkpoints written before the scanned layout (stacked `stage3.0-3`-style '
                 'groups) hold one module per copy: resume them with --config.model.scan=False '
                 '(eval.py, predict.py and init_from read either layout).')
  lines.append('To train this config, use a new --workdir (add --config.init_from=<this workdir> '
               'to start from its backbone); to resume, run with the config it was written with.')
  return '\n'.join(lines)


def _state_metadata(step_dir: pathlib.Path) -> Any:
  """The saved state's tree of array metadata (read through the handler: orbax's Checkpointer
  would warn about the step-level metadata file that only the manager writes)."""
  return ocp.StandardCheckpointHandler().metadata(step_dir / 'state')


def _why(e: Exception) -> str:
  """One line on why a checkpoint could not be read."""
  return f'{type(e).__name__}: {str(e).splitlines()[0][:160]}' if str(e) else type(e).__name__


def _drop_closed_loop_callbacks() -> None:
  """After orbax gives up on a damaged checkpoint or a failed write, tensorstore still completes
  the reads and writes in flight, and their callbacks find orbax's event loop closed: Python
  would print a traceback for each (hundreds). Exactly those are dropped; every other
  unraisable exception is reported as before."""
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop_callbacks', False):
    return

  def hook(unraisable) -> None:
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == 'Event loop is closed'):
      previous(unraisable)

  hook.drops_closed_loop_callbacks = True
  sys.unraisablehook = hook


def restore_latest(manager: ocp.CheckpointManager, target: Any, data_iter: Any, config: Any,
                   log: Callable[[str], None] = print) -> tuple[Any, int] | None:
  """(state, step) from the newest readable checkpoint, restored onto the shardings of `target`
  (ShapeDtypeStructs) with the data iterator restored in place; None when there is none.

  A checkpoint that cannot be read is named in a warning and renamed `<step>.unreadable` (kept
  for inspection; the run will write that step again), and the one before it is tried; one
  written for another model is an error saying what differs."""
  steps = sorted(manager.all_steps(), reverse=True)
  for step in steps:
    step_dir = pathlib.Path(manager.directory) / str(step)
    try:
      differences = _shape_differences(_state_metadata(step_dir), target)
      if differences:
        raise CheckpointError(describe_mismatch(step_dir, config, differences))
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target),
          data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
      return restored['state'], step
    except CheckpointError:
      raise
    except Exception as e:  # pylint: disable=broad-except  (any damage: try the one before)
      _drop_closed_loop_callbacks()
      aside = step_dir.with_name(f'{step}.unreadable')
      log(f'warning: checkpoint {step_dir} is unreadable ({_why(e)}); moved to {aside} and '
          'resuming from the one before')
      if jax.process_index() == 0:
        step_dir.rename(aside)
      _sync_processes(f'set aside {step_dir}')
      manager.reload()
  if steps:
    raise CheckpointError(f'no readable checkpoint in {manager.directory} (steps {steps}, set '
                          'aside as <step>.unreadable): use another --workdir')
  return None


def _sync_processes(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------------------------
# Loading model variables for evaluation and init_from
# ------------------------------------------------------------------------------------------------


def _restore_state_item(step_dir: pathlib.Path) -> dict[str, Any]:
  """The saved state onto this process's first device, whatever the devices and processes that
  wrote it (orbax needs an explicit target to restore onto another topology)."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), _state_metadata(step_dir))
  handler = ocp.StandardCheckpointHandler()
  try:
    state = handler.restore(step_dir / 'state', args=ocp.args.StandardRestore(target))
  finally:
    handler.close()
  return {'params': state['params'], 'batch_stats': state['batch_stats']}


def step_dirs(path: pathlib.Path) -> list[pathlib.Path]:
  """The finished step directories under a workdir or its checkpoints/ directory, newest first."""
  root = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
  steps = sorted((int(p.name), p) for p in root.iterdir()
                 if p.is_dir() and p.name.isdigit() and (p / 'state').is_dir())
  return [p for _, p in reversed(steps)]


def latest_step_dir(path: pathlib.Path) -> pathlib.Path | None:
  """The newest finished step directory under a workdir or its checkpoints/ directory."""
  dirs = step_dirs(path)
  return dirs[0] if dirs else None


def _read_workdir(path: pathlib.Path, log: Callable[[str], None]) -> tuple[dict, pathlib.Path]:
  """The variables of the newest readable step of a workdir; damaged ones are named in a warning
  and left in place."""
  dirs = step_dirs(path)
  for step_dir in dirs:
    try:
      return _restore_state_item(step_dir), step_dir
    except Exception as e:  # pylint: disable=broad-except  (any damage: try the one before)
      _drop_closed_loop_callbacks()
      log(f'warning: checkpoint {step_dir} is unreadable ({_why(e)}); it is left in place and '
          'the one before it is used')
  raise CheckpointError(f'{path}: no readable checkpoint among {[d.name for d in dirs]} (all '
                        'left in place)')


def load_variables(path: str | os.PathLike, arch: str | None = None,
                   log: Callable[[str], None] = print, **overrides: Any
                   ) -> tuple[dict[str, Any], str]:
  """{'params', 'batch_stats'} (numpy) and a one-line description of what was read.

  `path`: an official PyTorch file (.pth/.pth.tar/.pt/.safetensors; `arch` None infers it), a
  directory written by `python -m hrnet_jax.convert`, a training step directory, or a workdir
  (its newest readable step).
  """
  from hrnet_jax import convert
  from hrnet_jax.convert.files import META_FILE, is_torch_file

  p = pathlib.Path(path).absolute()  # Orbax needs absolute paths.
  if not p.exists():
    raise CheckpointError(f'checkpoint {p} does not exist')
  if p.is_file() and (is_torch_file(p) or p.suffix == '.safetensors'):
    report = convert.Report()
    variables = convert.torch_to_flax(p, arch, report=report, **overrides)
    return variables, f'{p} (PyTorch, converted on the fly; {report.summary()})'
  if (p / META_FILE).is_file():
    variables, meta = convert.read_variables(p)
    return variables, f'{p} (converted {meta.get("arch", "?")})'
  if (p / 'state').is_dir():
    try:
      variables, step_dir = _restore_state_item(p), p
    except Exception as e:  # pylint: disable=broad-except
      _drop_closed_loop_callbacks()
      raise CheckpointError(f'checkpoint {p} is unreadable ({_why(e)})') from None
  elif p.is_dir() and step_dirs(p):
    variables, step_dir = _read_workdir(p, log)
  else:
    raise CheckpointError(f'{p}: not a checkpoint. Expected an official .pth/.pt/.safetensors '
                          'file, a directory from `python -m hrnet_jax.convert`, a training '
                          f'workdir, or one of its {CHECKPOINT_DIR}/<step> directories')
  variables = jax.tree_util.tree_map(np.asarray, variables)
  return variables, f'{step_dir} (training checkpoint, step {step_dir.name})'


def load_model_variables(path: str | os.PathLike, task: Any) -> tuple[dict[str, Any], str]:
  """The variables of any checkpoint kind for `task`'s model (arch and overrides from its
  config), checked against the model's own structure and shapes; and what was read. A model
  with a `legacy` setting (two-stage detectors) states it: the arithmetic it runs is the layout
  an official checkpoint must have."""
  kwargs = dict(task.model_kwargs)
  settings = zoo.model_config(task.config.model.arch, **kwargs)
  if 'legacy' in settings:
    kwargs['legacy'] = settings['legacy']
  variables, where = load_variables(path, task.config.model.arch, **kwargs)
  model = task.create_model()
  expected = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                               np.zeros((1, 64, 64, 3), np.float32)))
  variables, _ = merge_subtree(expected, variables, subtree=None)
  return variables, where


def merge_subtree(target: dict[str, Any], loaded: dict[str, Any],
                  subtree: str | None = 'backbone') -> tuple[dict[str, Any], str]:
  """Copies `loaded[collection][subtree]` (everything when `subtree` is None) into `target`,
  whose structure and shapes it must match, and says what was loaded; the rest of `target` (the
  head) keeps its fresh initialization."""
  out, lines = {}, []
  for collection in ('params', 'batch_stats'):
    tgt = traverse_util.flatten_dict(target[collection])
    src = traverse_util.flatten_dict(loaded.get(collection, {}))
    wanted = {k: v for k, v in tgt.items() if subtree is None or k[0] == subtree}
    if any(k not in src for k in wanted):  # per-module vs scanned layout: restack by name
      from hrnet_jax.convert import mapping
      src = {**src, **mapping.restack(src, wanted)}
    missing = [k for k in wanted if k not in src]
    mismatched = [(k, tuple(src[k].shape), tuple(v.shape)) for k, v in wanted.items()
                  if k in src and tuple(src[k].shape) != tuple(v.shape)]
    if missing or mismatched:
      shown = [('/'.join(k), a, b) for k, a, b in mismatched[:3]]
      raise CheckpointError(
          f'the checkpoint\'s {collection}/{subtree or ""} does not fit this model: '
          f'{len(missing)} missing (e.g. {["/".join(k) for k in missing[:3]]}), '
          f'{len(mismatched)} mis-shaped (e.g. {shown} as (key, checkpoint, model)); is it the '
          'same variant?')
    merged = {k: (np.asarray(src[k], v.dtype) if k in wanted else v) for k, v in tgt.items()}
    out[collection] = traverse_util.unflatten_dict(merged)
    n = sum(int(np.size(src[k])) for k in wanted)
    lines.append(f'{collection}: {len(wanted)} {subtree or ""} arrays ({n:,} values) loaded, '
                 f'{len(tgt) - len(wanted)} others kept fresh')
  return out, '; '.join(lines)

