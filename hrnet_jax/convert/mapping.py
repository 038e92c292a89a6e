"""The one mapping between Flax variables and official PyTorch state_dict keys.

Flax module names mirror the official modules, so a variable's path joined with dots is its
PyTorch key, up to the leaf name and layout:

  params/.../kernel (4-D, HWIO)  <->  .weight (OIHW)      params/.../scale  <->  .weight (BN)
  params/.../kernel (2-D, in,out) <-> .weight (out,in)    batch_stats/.../mean <-> .running_mean
  params/.../bias                <->  .bias               batch_stats/.../var  <-> .running_var

The top-level 'backbone'/'head' component is dropped (detection keeps mmdet's `backbone.` and
`neck.` prefixes; FCOS's head already holds `neck` and `bbox_head`). Every BN also has
`num_batches_tracked` in PyTorch. One exception to the leaf names: mmcv's `Scale` (FCOS's
`bbox_head.scales.<i>`) keeps its 0-d parameter as `.scale`, not `.weight`.

Two-stage detectors with `legacy=True` take the layout of the HRNet-Object-Detection releases
(mmdetection v0.x): `neck.reduction_conv.0`, `neck.fpn_conv.<i>`, top-level `bbox_head[.<s>]`,
the background class FIRST in `fc_cls` and, for class-specific regression, a background block of
4 rows first in `fc_reg` (324 rows for 80 classes); mask heads (top-level `mask_head[.<s>]`,
`semantic_head`) have a background map first in `conv_logits` (81). The model keeps the
background last and has no background regression or mask (no test reads them): those rows are
dropped, and written as zeros.

A scanned group (`stage3.0-3`, `branches.0.0-3`, see `hrnet_jax.models.backbone`) stacks its
copies on leading axes, one axis per range in the path, outermost first: the official tensor
`stage3.2.branches.0.1.conv1.weight` is slice [2, 1] of `stage3.0-3/branches.0.0-3/conv1/kernel`.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from hrnet_jax.models import zoo

# PyTorch registration order of module and leaf names, for writing keys in the official order.
_ORDER = [
    'conv1', 'bn1', 'conv2', 'bn2', 'conv3', 'bn3', 'downsample', 'layer1', 'transition1',
    'stage2', 'transition2', 'stage3', 'transition3', 'stage4', 'branches', 'fuse_layers',
    'incre_modules', 'downsamp_modules', 'final_layer', 'classifier', 'last_layer', 'head',
    'conv3x3_ocr', 'ocr_distri_head', 'object_context_block', 'f_pixel', 'f_object', 'f_down',
    'f_up', 'conv_bn_dropout', 'cls_head', 'aux_head', 'backbone', 'neck', 'reduction_conv',
    'fpn_convs', 'fpn_conv', 'rpn_head', 'rpn_conv', 'rpn_cls', 'rpn_reg', 'bbox_head',
    'cls_convs', 'reg_convs', 'conv_cls', 'conv_reg', 'conv_centerness', 'scales', 'roi_head',
    'fc_cls', 'fc_reg', 'shared_fcs', 'mask_head', 'semantic_head', 'lateral_convs', 'convs',
    'upsample', 'conv_embedding', 'conv_logits', 'conv_res', 'conv',
    'gn', 'weight', 'bias', 'scale', 'running_mean',
    'running_var', 'num_batches_tracked'
]
_RANK = {name: i for i, name in enumerate(_ORDER)}

_TO_TORCH_LEAF = {('params', 'kernel'): 'weight', ('params', 'bias'): 'bias',
                  ('params', 'scale'): 'weight', ('batch_stats', 'mean'): 'running_mean',
                  ('batch_stats', 'var'): 'running_var'}


def torch_key_order(key: str) -> tuple:
  """Sort key giving the official state_dict order."""
  return tuple((0, int(p), 0) if p.isdigit() else (1, 0, _RANK.get(p, len(_RANK)))
               for p in key.split('.'))


def _top_prefix(task: str, top: str) -> str:
  if task == 'det':
    return {'backbone': 'backbone.', 'head': 'neck.'}[top]
  if task == 'fcos' or task in zoo.TWO_STAGE_TASKS:  # the head's children carry mmdet's names
    return {'backbone': 'backbone.', 'head': ''}[top]
  return ''


_SCALE_MODULE = re.compile(r'^scales\.\d+$')


def _torch_leaf(collection: str, module: str, name: str) -> str:
  """The PyTorch name of a Flax leaf: `scale` is a norm's `weight`, except in mmcv's `Scale`
  (FCOS's `scales.<i>`), whose parameter is itself called `scale`."""
  if collection == 'params' and name == 'scale' and _SCALE_MODULE.match(module):
    return 'scale'
  return _TO_TORCH_LEAF[collection, name]


# Legacy outputs the model does not have: the leading rows dropped per kind of background.
_DROPPED = {'reg': 4, 'mask': 1}


@dataclasses.dataclass(frozen=True)
class Entry:
  """One tensor: its PyTorch key and shape, its Flax collection/path and shape. In a scanned
  group it is slice `index` of a Flax leaf of shape `stack + flax_shape`."""
  key: str
  torch_shape: tuple[int, ...]
  flax_path: tuple[str, ...]  # (collection, 'backbone'|'head', ..., leaf)
  flax_shape: tuple[int, ...]
  index: tuple[int, ...] = ()
  stack: tuple[int, ...] = ()
  chw: tuple[int, int, int] | None = None  # a dense layer reading (C, H, W)-flattened features
  background_first: str = ''  # legacy: 'cls' (box logits), 'reg' (4 deltas), 'mask' (1 map)
  transposed_conv: bool = False  # ConvTranspose2d: (in, out, kh, kw) <-> (kh, kw, in, out)

  def to_flax(self, array: np.ndarray) -> np.ndarray:
    if self.transposed_conv:
      return _contiguous(np.asarray(array).transpose(2, 3, 0, 1))
    array = _transpose(array, to_torch=False)
    if self.chw:  # rows c*H*W + h*W + w -> rows (h*W + w)*C + c, the order of NHWC features
      c, h, w = self.chw
      array = array.reshape(c, h, w, -1).transpose(1, 2, 0, 3).reshape(array.shape)
    if self.background_first == 'cls':  # outputs (last axis): background from first to last
      array = np.roll(array, -1, axis=-1)
    elif self.background_first:
      array = array[..., _DROPPED[self.background_first]:]
    return _contiguous(array)

  def to_torch(self, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if self.transposed_conv:
      return _contiguous(array.transpose(2, 3, 0, 1))
    if self.background_first == 'cls':
      array = np.roll(array, 1, axis=-1)
    elif self.background_first:
      lead = np.zeros(array.shape[:-1] + (_DROPPED[self.background_first],), array.dtype)
      array = np.concatenate([lead, array], -1)
    if self.chw:
      c, h, w = self.chw
      array = array.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(array.shape)
    return _contiguous(_transpose(array, to_torch=True))


def _contiguous(a: np.ndarray) -> np.ndarray:
  """C order, same shape: ascontiguousarray alone turns a 0-d array (FCOS's scales) into (1,)."""
  return np.ascontiguousarray(a).reshape(a.shape)


def _transpose(a: np.ndarray, to_torch: bool) -> np.ndarray:
  if a.ndim == 4:  # HWIO <-> OIHW
    return a.transpose((3, 2, 0, 1) if to_torch else (2, 3, 1, 0))
  if a.ndim == 2:  # (in, out) <-> (out, in)
    return a.T
  return a


def _freeze(overrides: Mapping[str, Any]) -> tuple:
  return tuple(sorted(overrides.items()))


_STACKED = re.compile(r'^(.*)\.(\d+)-(\d+)$')


def _unstacked(modules: list[str]) -> list[tuple[tuple[int, ...], list[str]]]:
  """Every (index, official module names) a Flax module path stands for: one pair for a plain
  path, the product of the ranges for a path through scanned groups."""
  out = [((), [])]
  for name in modules:
    m = _STACKED.match(name)
    if m is None:
      out = [(index, names + [name]) for index, names in out]
    else:
      prefix, first, last = m.group(1), int(m.group(2)), int(m.group(3))
      out = [(index + (k - first,), names + [f'{prefix}.{k}'])
             for index, names in out for k in range(first, last + 1)]
  return out


def restack(source: Mapping[tuple[str, ...], Any], target: Mapping[tuple[str, ...], Any]
            ) -> dict[tuple[str, ...], Any]:
  """`source` (flat {path: array}) in the layout of `target` (flat {path: shape-bearing leaf}):
  per-module variables stacked into scanned groups, or groups split into modules, by name alone
  (so it works on any subtree, e.g. a backbone moving between tasks). Paths that cannot be
  matched are left to the caller's checks: returns what it could place, plus the source paths
  that already fit."""
  def expanded(path):
    *modules, leaf = path
    return [(index, tuple(names) + (leaf,)) for index, names in _unstacked(list(modules))]

  where = {}  # an official-form path -> (source path, index in its stacked leaf)
  for path in source:
    for index, plain in expanded(path):
      where[plain] = (path, index)
  out = {}
  for path, leaf in target.items():
    if path in source:
      out[path] = source[path]
      continue
    parts = expanded(path)
    if not all(plain in where for _, plain in parts):
      continue
    pieces = [np.asarray(source[where[plain][0]])[where[plain][1]] for _, plain in parts]
    stack = tuple(leaf.shape[:len(parts[0][0])])
    out[path] = np.stack(pieces).reshape(stack + pieces[0].shape) if stack else pieces[0]
  return out


_V1_NECK = ((re.compile(r'^neck\.reduction_conv\.conv\.'), 'neck.reduction_conv.0.'),
            (re.compile(r'^neck\.fpn_convs\.(\d+)\.conv\.'), r'neck.fpn_conv.\1.'))


_TO_LEGACY = _V1_NECK + (
    (re.compile(r'^roi_head\.(bbox_head|mask_head|semantic_head)'), r'\1'),)


def _legacy_key(key: str) -> str:
  for pattern, new in _TO_LEGACY:
    key = pattern.sub(new, key)
  return key


@functools.lru_cache(maxsize=64)
def _layout(arch: str, frozen_overrides: tuple) -> tuple[Entry, ...]:
  task, _ = zoo.split_arch(arch)
  overrides = dict(frozen_overrides)
  shapes = zoo.init_shapes(arch, **overrides)
  legacy = bool(overrides.get('legacy', False))
  class_specific = legacy and not zoo.model_config(arch, **overrides)['class_agnostic']
  entries = []
  for path, leaf in traverse_util.flatten_dict(dict(shapes)).items():
    collection, top, *modules, name = path
    for index, names in _unstacked(modules):
      key = (_top_prefix(task, top) + '.'.join(names) + '.' +
             _torch_leaf(collection, names[-1], name))
      stack, flax_shape = tuple(leaf.shape[:len(index)]), tuple(leaf.shape[len(index):])
      transposed = key.endswith('upsample.weight')  # mask heads' ConvTranspose2d
      torch_shape = (flax_shape[2], flax_shape[3], *flax_shape[:2]) if transposed else (
          _transpose(np.empty(flax_shape, np.bool_), to_torch=True).shape)
      chw, background = None, ''
      if key.endswith('shared_fcs.0.weight'):  # R-CNN box heads: (C, 7, 7) flattened inputs
        size = int(overrides.get('roi_size', zoo.TASKS[task].get('roi_size', 7)))
        chw = (flax_shape[0] // (size * size), size, size)
      if legacy:
        key = _legacy_key(key)
        if '.fc_cls.' in key:
          background = 'cls'
        elif '.fc_reg.' in key and class_specific:
          background = 'reg'  # class-specific: the background's 4 rows first
        elif key.startswith('mask_head.') and '.conv_logits.' in key:
          background = 'mask'
        if background in _DROPPED:
          torch_shape = (torch_shape[0] + _DROPPED[background],) + tuple(torch_shape[1:])
      entries.append(Entry(key, tuple(torch_shape), tuple(path), flax_shape, index, stack, chw,
                           background, transposed))
  return tuple(sorted(entries, key=lambda e: torch_key_order(e.key)))


def layout(arch: str, **overrides: Any) -> tuple[Entry, ...]:
  """All tensors of an arch, in official PyTorch order (num_batches_tracked not included)."""
  return _layout(arch, _freeze(overrides))


def num_batches_tracked_key(entry: Entry) -> str | None:
  """PyTorch BNs carry a step counter after running_var; Flax has no such variable."""
  if entry.key.endswith('.running_var'):
    return entry.key[:-len('running_var')] + 'num_batches_tracked'
  return None


def torch_keys_and_shapes(arch: str, **overrides: Any) -> list[tuple[str, tuple[int, ...]]]:
  """The official state_dict layout of an arch: every key, in order, with its shape."""
  out = []
  for e in layout(arch, **overrides):
    out.append((e.key, e.torch_shape))
    if nbt := num_batches_tracked_key(e):
      out.append((nbt, ()))
  return out


# ---------------------------------------------------------------------------------------------
# Recognising a checkpoint.

_STAGE_MODULE = re.compile(r'^stage(\d)\.(\d+)\.')


def _indices(keys: set[str], prefix: str) -> set[str]:
  """The module indices under `prefix` (e.g. 'bbox_head.cls_convs.' -> {'0', '1', ...})."""
  return {k[len(prefix):].split('.', 1)[0] for k in keys if k.startswith(prefix)}


def _fcos_head(tensors: Mapping[str, Any]) -> dict[str, Any]:
  """The head settings of an mmdetection FCOS state_dict that differ from the COCO release:
  classes, channels, tower depth, levels (GN groups and centerness_on_reg leave no trace in the
  shapes, so they keep their defaults)."""
  keys, default = set(tensors), zoo.TASKS['fcos']
  classes, channels = tuple(tensors['bbox_head.conv_cls.weight'].shape)[:2]
  found = dict(num_classes=classes, out_channels=channels,
               stacked_convs=len(_indices(keys, 'bbox_head.cls_convs.')),
               num_levels=len(_indices(keys, 'bbox_head.scales.')))
  return {k: v for k, v in found.items() if v != default[k]}


def legacy_layout(keys: Any) -> bool | None:
  """Whether the keys of a two-stage state_dict are HRNet-Object-Detection's (mmdetection v0.x:
  top-level `bbox_head.`) rather than v2's (`roi_head.`); None when they are not two-stage."""
  keys = set(keys)
  if 'rpn_head.rpn_conv.weight' not in keys:
    return None
  return not any(k.startswith('roi_head.') for k in keys) and any(
      k.startswith('bbox_head.') for k in keys)


def v1_neck_to_legacy(tensors: Mapping[str, Any]) -> dict[str, Any]:
  """mmdetection v1.0's checkpoints (the W48 releases) have v0.x's heads and arithmetic but a
  ConvModule neck (`neck.reduction_conv.conv`, `neck.fpn_convs.<i>.conv`): renamed to the legacy
  layout's `neck.reduction_conv.0`, `neck.fpn_conv.<i>`."""
  out = {}
  for key, value in tensors.items():
    for pattern, new in _V1_NECK:
      key = pattern.sub(new, key)
    out[key] = value
  return out


def _two_stage_head(tensors: Mapping[str, Any]) -> tuple[str, None, dict[str, Any]]:
  """(task, None, head settings differing from the COCO release) of an mmdetection two-stage
  state_dict: Cascade when the box heads are numbered (`roi_head.bbox_head.<s>.`), with masks
  when there are mask heads, HTC when they have `conv_res` (with the semantic branch when
  `roi_head.semantic_head.` is there); `legacy` when they are top-level (`bbox_head.`,
  HRNet-Object-Detection's mmdetection v0.x)."""
  keys = set(tensors)
  legacy = bool(legacy_layout(keys))
  head = 'bbox_head.' if legacy else 'roi_head.bbox_head.'
  stages = _indices(keys, head)
  cascade = stages and all(s.isdigit() for s in stages)
  first = head + '0.' if cascade else head
  if first + 'fc_cls.weight' not in keys:
    raise ValueError(f'cannot infer the arch: an RPN but no box head ({first}fc_cls.weight)')
  task = 'cascade_rcnn' if cascade else 'faster_rcnn'
  mask_head = ('mask_head.' if legacy else 'roi_head.mask_head.')
  if any(k.startswith(mask_head) for k in keys):
    task = 'cascade_mask_rcnn' if cascade else 'mask_rcnn'
  semantic = ('' if legacy else 'roi_head.') + 'semantic_head.conv_logits.weight'
  if task == 'cascade_mask_rcnn' and any('.conv_res.' in k for k in keys):
    task = 'htc' if semantic in keys else 'htc_without_semantic'
  default = zoo.TASKS[task]
  found = dict(num_classes=tuple(tensors[first + 'fc_cls.weight'].shape)[0] - 1,
               out_channels=tuple(tensors['rpn_head.rpn_conv.weight'].shape)[0],
               fc_channels=tuple(tensors[first + 'shared_fcs.1.weight'].shape)[0])
  if task == 'htc':
    found['semantic_classes'] = tuple(tensors[semantic].shape)[0]
  if cascade:
    found['num_stages'] = len(stages)
  found['legacy'] = legacy
  return task, None, {k: v for k, v in found.items() if v != default[k]}


def infer_arch(tensors: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
  """The arch and head size of a state_dict (prefixes already stripped), from tensor shapes.
  For fcos, only the head settings that differ from the COCO release are returned."""
  keys = set(tensors)
  shape = lambda k: tuple(tensors[k].shape)
  head_overrides = {}
  if 'bbox_head.conv_centerness.weight' in keys and 'bbox_head.conv_cls.weight' in keys:
    task, head_key, head_overrides = 'fcos', None, _fcos_head(tensors)
  elif 'tl_heat.1.weight' in keys and 'ct_heat.1.weight' in keys:
    task, head_key = 'centernet', 'tl_heat.1.weight'
  elif 'rpn_head.rpn_conv.weight' in keys:
    task, head_key, head_overrides = _two_stage_head(tensors)
  elif any(k.startswith('neck.') for k in keys):
    task, head_key = 'det', None
  elif 'classifier.weight' in keys:
    task, head_key = 'cls', 'classifier.weight'
  elif 'cls_head.weight' in keys and 'aux_head.3.weight' in keys:
    task, head_key = 'seg_ocr', 'cls_head.weight'
  elif 'last_layer.3.weight' in keys:
    task, head_key = 'seg', 'last_layer.3.weight'
  elif 'head.3.weight' in keys:
    task, head_key = 'face', 'head.3.weight'
  elif 'final_layer.weight' in keys and len(shape('final_layer.weight')) == 4:
    task, head_key = 'pose', 'final_layer.weight'
  else:
    raise ValueError('cannot infer the arch: no known head found (expected one of classifier.*, '
                     'last_layer.*, head.*, cls_head.* + aux_head.*, final_layer.*, neck.*, '
                     'bbox_head.conv_centerness.*, tl_heat.* + ct_heat.*)')
  if task in ('det', 'fcos') or task in zoo.TWO_STAGE_TASKS:  # keys carry mmdet's prefixes
    keys = {k[len('backbone.'):] for k in keys if k.startswith('backbone.')}
    shape = lambda k: tuple(tensors['backbone.' + k].shape)
  width_key = 'stage2.0.branches.0.0.conv1.weight'
  if width_key not in keys or 'layer1.0.conv1.weight' not in keys:
    raise ValueError(f'cannot infer the variant: {width_key} or layer1.0.conv1.weight is missing')
  modules = {}
  for k in keys:
    if m := _STAGE_MODULE.match(k):
      modules.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
  found = dict(
      width=shape(width_key)[0],
      stage1_blocks=len({k.split('.')[1] for k in keys if k.startswith('layer1.')}),
      stage1_planes=shape('layer1.0.conv1.weight')[0],
      num_modules=tuple(len(modules.get(s, ())) for s in (2, 3, 4)),
      num_blocks=len({k.split('.')[4] for k in keys if k.startswith('stage2.0.branches.0.')}))
  for name, v in zoo.VARIANTS.items():
    want = dataclasses.asdict(v)
    if task == 'pose':  # stage 1 is the same for every pose variant
      want.pop('stage1_blocks'), want.pop('stage1_planes')
    if all(found[k] == want[k] for k in want):
      head = 'num_joints' if task in ('pose', 'face') else 'num_classes'
      overrides = {head: shape(head_key)[0]} if head_key else head_overrides
      return f'{task}_{name}', overrides
  raise ValueError(f'cannot infer the variant of this {task} checkpoint: found {found}, which '
                   f'matches none of {list(zoo.VARIANTS)}')
