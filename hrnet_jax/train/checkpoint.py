"""Checkpoints: the training CheckpointManager (state + data iterator + config), and loading
model variables from anything a user may point at (a workdir, a step, a converted directory, an
official .pth / .safetensors)."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import grain
from flax import traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

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
  return ocp.CheckpointManager(path, options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_iter: Any, config: Any,
         metrics: dict | None = None) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data_iter=grain.checkpoint.CheckpointSave(data_iter),
      config=ocp.args.JsonSave(json.loads(config.to_json()))), metrics=metrics)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any, data_iter: Any) -> Any:
  """Restores the state onto the shardings of `abstract_state` and the iterator in place."""
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
  return restored['state']


# ------------------------------------------------------------------------------------------------
# Loading model variables for evaluation and init_from
# ------------------------------------------------------------------------------------------------


def _restore_state_item(step_dir: pathlib.Path) -> dict[str, Any]:
  """The saved state onto this process's first device, whatever the devices and processes that
  wrote it (orbax needs an explicit target to restore onto another topology)."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  with ocp.StandardCheckpointer() as ckptr:
    meta = ckptr.metadata(step_dir / 'state').item_metadata
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    state = ckptr.restore(step_dir / 'state', target)
  get = (lambda k: state[k]) if isinstance(state, dict) else (lambda k: getattr(state, k))
  return {'params': get('params'), 'batch_stats': get('batch_stats')}


def latest_step_dir(path: pathlib.Path) -> pathlib.Path | None:
  """The newest finished step directory under a workdir or its checkpoints/ directory."""
  root = path / CHECKPOINT_DIR if (path / CHECKPOINT_DIR).is_dir() else path
  steps = sorted((int(p.name), p) for p in root.iterdir()
                 if p.is_dir() and p.name.isdigit() and (p / 'state').is_dir())
  return steps[-1][1] if steps else None


def load_variables(path: str | os.PathLike, arch: str | None = None,
                   **overrides: Any) -> tuple[dict[str, Any], str]:
  """{'params', 'batch_stats'} (numpy) and a one-line description of what was read.

  `path`: an official PyTorch file (.pth/.pth.tar/.pt/.safetensors; `arch` None infers it), a
  directory written by `python -m hrnet_jax.convert`, a training step directory, or a workdir
  (its newest step).
  """
  from hrnet_jax import convert
  from hrnet_jax.convert.files import META_FILE, is_torch_file

  p = pathlib.Path(path).absolute()  # Orbax needs absolute paths.
  if not p.exists():
    raise FileNotFoundError(f'checkpoint {p} does not exist')
  if p.is_file() and (is_torch_file(p) or p.suffix == '.safetensors'):
    report = convert.Report()
    variables = convert.torch_to_flax(p, arch, report=report, **overrides)
    return variables, f'{p} (PyTorch, converted on the fly; {report.summary()})'
  if (p / META_FILE).is_file():
    variables, meta = convert.read_variables(p)
    return variables, f'{p} (converted {meta.get("arch", "?")})'
  step_dir = p if (p / 'state').is_dir() else (latest_step_dir(p) if p.is_dir() else None)
  if step_dir is None:
    raise ValueError(f'{p}: not a checkpoint. Expected an official .pth/.pt/.safetensors file, a '
                     f'directory from `python -m hrnet_jax.convert`, a training workdir, or one '
                     f'of its {CHECKPOINT_DIR}/<step> directories')
  variables = jax.tree_util.tree_map(np.asarray, _restore_state_item(step_dir))
  return variables, f'{step_dir} (training checkpoint, step {step_dir.name})'


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
    missing = [k for k in wanted if k not in src]
    mismatched = [(k, tuple(src[k].shape), tuple(v.shape)) for k, v in wanted.items()
                  if k in src and tuple(src[k].shape) != tuple(v.shape)]
    if missing or mismatched:
      raise ValueError(
          f'the checkpoint\'s {collection}/{subtree or ""} does not fit this model: '
          f'{len(missing)} missing (e.g. {["/".join(k) for k in missing[:3]]}), '
          f'{len(mismatched)} mis-shaped (e.g. {[("/".join(k), a, b) for k, a, b in mismatched[:3]]}'
          ' as (key, checkpoint, model)); is it the same variant?')
    merged = {k: (np.asarray(src[k], v.dtype) if k in wanted else v) for k, v in tgt.items()}
    out[collection] = traverse_util.unflatten_dict(merged)
    n = sum(int(np.size(src[k])) for k in wanted)
    lines.append(f'{collection}: {len(wanted)} {subtree or ""} arrays ({n:,} values) loaded, '
                 f'{len(tgt) - len(wanted)} others kept fresh')
  return out, '; '.join(lines)

