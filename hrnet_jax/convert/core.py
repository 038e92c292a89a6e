"""Official PyTorch state_dicts <-> Flax variables, with a full report of what did not fit."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from hrnet_jax.convert import files, mapping
from hrnet_jax.errors import ConversionError
from hrnet_jax.models import zoo

# Wrappers and prefixes that training code puts around the model's own keys.
_WRAPPER_KEYS = ('state_dict', 'model', 'model_state', 'net')
_STRIP_PREFIXES = ('module.', 'model.')
# Older mmdetection (v1, early v2) named FCOS's predictors fcos_cls/fcos_reg/fcos_centerness;
# v2's AnchorFreeHead renames them to conv_* on load, and so do we.
_LEGACY_FCOS = re.compile(r'^bbox_head\.fcos_(cls|reg|centerness)\.')


@dataclasses.dataclass
class Report:
  """What a conversion used and ignored."""
  arch: str = ''
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  converted: int = 0
  ignored: list[str] = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    lines = [f'{self.arch} {self.overrides}: converted {self.converted} tensors']
    if self.ignored:
      lines.append(f'ignored {len(self.ignored)} entries: ' + ', '.join(self.ignored[:20]) +
                   (f', ... ({len(self.ignored) - 20} more)' if len(self.ignored) > 20 else ''))
    return '\n'.join(lines)


def _is_array(x: Any) -> bool:
  return hasattr(x, 'shape') and hasattr(x, 'dtype')


def normalize_state_dict(obj: Any, report: Report | None = None) -> dict[str, Any]:
  """Unwraps `{'state_dict': ...}`-style containers (mmdetection's `{'state_dict', 'meta'}`
  too), strips `module.`/`model.` prefixes and renames old FCOS `bbox_head.fcos_*` keys.

  Non-array entries (epoch counters, optimizer state, ...) and num_batches_tracked are dropped
  and listed in `report.ignored`.
  """
  report = report if report is not None else Report()
  if not isinstance(obj, Mapping):
    raise ConversionError(f'expected a dict of tensors, got {type(obj).__name__}')
  for wrapper in _WRAPPER_KEYS:
    if isinstance(obj.get(wrapper), Mapping):
      report.ignored += [f'{k} (outside {wrapper!r})' for k in obj if k != wrapper]
      obj = obj[wrapper]
      break
  out = {}
  for key, value in obj.items():
    name = str(key)
    if not _is_array(value):
      report.ignored.append(f'{name} (not a tensor)')
      continue
    while name.startswith(_STRIP_PREFIXES):
      name = name.split('.', 1)[1]
    name = _LEGACY_FCOS.sub(r'bbox_head.conv_\1.', name)
    if name.endswith('num_batches_tracked'):
      continue
    out[name] = value
  return out


def _to_numpy(x: Any) -> np.ndarray:
  """A copy: converted variables must not alias (and change with) the source tensors."""
  if type(x).__module__.startswith('torch'):
    x = x.detach().cpu()
    if str(x.dtype) == 'torch.bfloat16':
      x = x.float()
    x = x.numpy()
  return np.array(x)


def _ignorable(task: str, key: str) -> bool:
  if task == 'fcos':  # the whole detector is ours: every key must convert
    return False
  if key.startswith('loss.'):  # class weights saved by the segmentation train wrapper
    return True
  # Detection checkpoints hold the detector heads too; only the backbone and neck are ours.
  return task == 'det' and not key.startswith(('backbone.', 'neck.'))


def torch_to_flax(state_dict_or_path: Any, arch: str | None = None, *,
                  report: Report | None = None, **overrides: Any) -> dict[str, dict]:
  """An official state_dict (or a .pth/.pt/.safetensors path) -> {'params', 'batch_stats'}.

  With `arch=None` the arch and head size are inferred from tensor shapes. Raises
  ConversionError listing every missing, unexpected and mis-shaped tensor.
  """
  report = report if report is not None else Report()
  obj = state_dict_or_path
  if isinstance(obj, (str, bytes)) or hasattr(obj, '__fspath__'):
    obj = files.read_torch_file(obj)
  tensors = normalize_state_dict(obj, report)
  try:
    inferred_arch, inferred = mapping.infer_arch(tensors)
  except ValueError as e:
    if arch is None:
      raise ConversionError(str(e)) from None
    inferred_arch, inferred = None, {}
  if arch is None:
    arch = inferred_arch
  task, _ = zoo.split_arch(arch)
  head_sizes = {}  # the checkpoint's head size, where the caller asks for another
  layout_found = None  # the checkpoint's two-stage layout (legacy), where the caller asks another
  legacy = mapping.legacy_layout(tensors)
  if legacy:
    tensors = mapping.v1_neck_to_legacy(tensors)
  if legacy is not None and 'legacy' in zoo.TASKS[task]:
    if 'legacy' not in overrides:  # unstated: the checkpoint's own layout
      overrides = dict(overrides, legacy=True) if legacy else overrides
    elif overrides['legacy'] != legacy:
      layout_found = legacy
  if inferred_arch and zoo.split_arch(inferred_arch)[0] == task:
    # The head the checkpoint was trained with, unless the caller names its size (either key).
    sized = {'num_classes', 'num_joints'} & set(overrides)
    for k in sized:
      found = inferred.get(k, zoo.TASKS[task].get(k))
      if found is not None and found != overrides[k]:
        head_sizes[k] = found
    inferred = {k: v for k, v in inferred.items()
                if not (sized and k in ('num_classes', 'num_joints'))}
    overrides = {**inferred, **overrides}
  entries = mapping.layout(arch, **overrides)

  expected = {e.key for e in entries}
  missing, misshaped, flat = [], [], {}
  for e in entries:
    if e.key not in tensors:
      missing.append(f'{e.key} {list(e.torch_shape)}')
      continue
    value = tensors[e.key]
    if tuple(value.shape) != e.torch_shape:
      misshaped.append(f'{e.key}: expected {list(e.torch_shape)}, found {list(value.shape)}')
      continue
    value = e.to_flax(_to_numpy(value))
    if e.stack:  # one slice of a scanned group's stacked leaf
      if e.flax_path not in flat:
        flat[e.flax_path] = np.zeros(e.stack + e.flax_shape, value.dtype)
      flat[e.flax_path][e.index] = value
    else:
      flat[e.flax_path] = value
  unexpected = []
  for key in tensors:
    if key not in expected:
      (report.ignored if _ignorable(task, key) else unexpected).append(key)
  if missing or misshaped or unexpected:
    raise MismatchError(arch, overrides, missing, unexpected, misshaped, inferred_arch,
                        head_sizes, layout_found)
  report.arch, report.overrides, report.converted = arch, dict(overrides), len(entries)
  return traverse_util.unflatten_dict(flat)


def flax_to_torch(variables: Mapping[str, Any], arch: str, **overrides: Any) -> dict[str, Any]:
  """{'params', 'batch_stats'} -> {official key: numpy array}, in the official order, with
  num_batches_tracked (int64 scalar) for every BatchNorm."""
  flat = traverse_util.flatten_dict(_plain_dict(variables))
  entries = mapping.layout(arch, **overrides)
  expected = {e.flax_path for e in entries}
  missing, misshaped = [], []
  out = {}
  for e in entries:
    if e.flax_path not in flat:
      if not e.index or not any(e.index):  # a stacked leaf is listed once
        missing.append(f"{'/'.join(e.flax_path)} {list(e.stack + e.flax_shape)}")
      continue
    value = np.asarray(flat[e.flax_path])
    if value.shape != e.stack + e.flax_shape:
      if not any(m.startswith(f"{'/'.join(e.flax_path)}:") for m in misshaped):
        misshaped.append(f"{'/'.join(e.flax_path)}: expected {list(e.stack + e.flax_shape)}, "
                         f'found {list(value.shape)}')
      continue
    out[e.key] = e.to_torch(value[e.index])
    if nbt := mapping.num_batches_tracked_key(e):
      out[nbt] = np.zeros((), np.int64)
  unexpected = ['/'.join(p) for p in flat if p not in expected]
  if missing or misshaped or unexpected:
    raise MismatchError(arch, overrides, missing, unexpected, misshaped)
  return out


def _plain_dict(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _plain_dict(v) for k, v in tree.items()}
  return tree


SHOWN = 5  # tensors listed per kind of problem in the message


class MismatchError(ConversionError):
  """A checkpoint that does not fit an arch. The message is short: the arch the checkpoint's
  shapes point to first (when it is another), then the first few tensors of each kind of
  problem; `missing`, `unexpected` and `misshaped` hold every one."""

  def __init__(self, arch: str, overrides: Mapping[str, Any], missing: list[str],
               unexpected: list[str], misshaped: list[str], inferred_arch: str | None = None,
               head_sizes: Mapping[str, int] | None = None, legacy_found: bool | None = None):
    self.missing, self.unexpected, self.misshaped = missing, unexpected, misshaped
    lines = []
    if inferred_arch and inferred_arch != arch:
      lines.append(f'the checkpoint looks like {inferred_arch}, not {arch}: set '
                   f'config.model.arch={inferred_arch} (the converter: drop --arch, it is '
                   'inferred, or pass --arch ' + inferred_arch + ')')
    if legacy_found is not None:
      lines.append(
          "the checkpoint has HRNet-Object-Detection's layout (mmdetection v0.x: top-level "
          'bbox_head, background first): set config.model.overrides.legacy=True (the '
          "two-stage configs' :legacy)" if legacy_found else
          "the checkpoint has mmdetection v2's layout (roi_head.bbox_head): set "
          'config.model.overrides.legacy=False')
    for k, found in (head_sizes or {}).items():
      lines.append(f'the checkpoint\'s head has {k}={found}, this model {overrides[k]} (from the '
                   'dataset, config.data): evaluate it on its own dataset, or train from its '
                   'backbone with config.init_from')
    lines.append(f'checkpoint does not match {arch}' + (f' {dict(overrides)}' if overrides else '')
                 + f': {len(missing)} missing, {len(unexpected)} unexpected, {len(misshaped)} '
                 'mis-shaped')
    for title, items in (('missing', missing), ('unexpected', unexpected),
                         ('mis-shaped', misshaped)):
      if items:
        more = f' (first {SHOWN} of {len(items)})' if len(items) > SHOWN else ''
        lines.append(f'{title}{more}:')
        lines += [f'  {item}' for item in items[:SHOWN]]
    super().__init__('\n'.join(lines))
