"""The model zoo: one table of variants, one table of task defaults, `create_model`.

An arch is `{task}_{variant}`, e.g. `seg_w48`, `pose_w32`, `cls_w18_small_v1`. Task defaults
match the official release of that task (fusion upsampling, BN momentum, classes).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax.errors import ConfigError
from hrnet_jax.models import centernet, heads, rcnn
from hrnet_jax.models.backbone import HRNet


@dataclasses.dataclass(frozen=True)
class Variant:
  width: int
  stage1_blocks: int = 4
  stage1_planes: int = 64
  num_modules: tuple[int, int, int] = (1, 4, 3)
  num_blocks: int = 4


VARIANTS: dict[str, Variant] = {
    'w18_small_v1': Variant(16, stage1_blocks=1, stage1_planes=32, num_modules=(1, 1, 1),
                            num_blocks=2),
    'w18_small_v2': Variant(18, stage1_blocks=2, num_modules=(1, 3, 2), num_blocks=2),
    **{f'w{c}': Variant(c) for c in (18, 30, 32, 40, 44, 48, 64)},
}

_TWO_STAGE = dict(upsample='nearest', align_corners=False, bn_momentum=0.9, num_classes=80,
                  out_channels=256, num_levels=5, neck_stride=1, fc_channels=1024, roi_size=7,
                  rpn_samples=256, rpn_pos_fraction=0.5, rpn_ious=(0.7, 0.3, 0.3),
                  rpn_nms_iou=0.7, train_pre_nms=2000, test_pre_nms=1000, test_proposals=1000,
                  roi_samples=512, roi_pos_fraction=0.25, legacy=False, with_mask=False,
                  mask_roi_size=14, mask_samples=0, htc=False, semantic_classes=0,
                  test_score_thr=0.05, test_nms_iou=0.5, test_max_per_img=100,
                  test_max_pairs=2000, norm_eval=True, input_bgr=False)
TWO_STAGE_FIELDS = tuple(k for k in _TWO_STAGE if k not in (
    'upsample', 'align_corners', 'bn_momentum', 'norm_eval', 'input_bgr')) + (
        'num_stages', 'class_agnostic', 'train_proposals')

# Per task: the official defaults, and the head-specific overrides it accepts.
TASKS: dict[str, dict[str, Any]] = {
    'cls': dict(upsample='nearest', align_corners=False, bn_momentum=0.9, num_classes=1000),
    'seg': dict(upsample='bilinear', align_corners=False, bn_momentum=0.99, num_classes=19),
    'seg_ocr': dict(upsample='bilinear', align_corners=True, bn_momentum=0.9, num_classes=19,
                    ocr_mid_channels=512, ocr_key_channels=256, ocr_dropout=0.05),
    'pose': dict(upsample='nearest', align_corners=False, bn_momentum=0.9, num_joints=17),
    'face': dict(upsample='bilinear', align_corners=False, bn_momentum=0.99, num_joints=98),
    'det': dict(upsample='nearest', align_corners=False, bn_momentum=0.9, out_channels=256,
                num_levels=5, neck_stride=1),
    # FCOS on HRNetV2p as mmdetection's release: levels at strides 8..128, BN frozen in training.
    'fcos': dict(upsample='nearest', align_corners=False, bn_momentum=0.9, num_classes=80,
                 out_channels=256, num_levels=5, neck_stride=2, stacked_convs=4, gn_groups=32,
                 centerness_on_reg=False, norm_eval=True, input_bgr=True),
    # Two-stage detectors as mmdetection v2's HRNet releases (models/rcnn.py): levels at strides
    # 4..64, BN frozen in training, RGB input; Cascade: three class-agnostic stages.
    'faster_rcnn': dict(_TWO_STAGE, num_stages=1, class_agnostic=False, train_proposals=1000),
    'cascade_rcnn': dict(_TWO_STAGE, num_stages=3, class_agnostic=True, train_proposals=2000),
    # With a mask head per stage (14x14 RoIs, 28x28 masks).
    'mask_rcnn': dict(_TWO_STAGE, num_stages=1, class_agnostic=False, train_proposals=1000,
                      with_mask=True),
    'cascade_mask_rcnn': dict(_TWO_STAGE, num_stages=3, class_agnostic=True,
                              train_proposals=2000, with_mask=True),
    # Hybrid Task Cascade: interleaved mask heads with information flow, the fused semantic
    # branch on the 183 COCO-stuff classes (none in htc_without_semantic), scores > 0.001.
    'htc': dict(_TWO_STAGE, num_stages=3, class_agnostic=True, train_proposals=2000,
                with_mask=True, htc=True, semantic_classes=183, test_score_thr=0.001),
    'htc_without_semantic': dict(_TWO_STAGE, num_stages=3, class_agnostic=True,
                                 train_proposals=2000, with_mask=True, htc=True,
                                 test_score_thr=0.001),
    # CenterNet (keypoint triplets) on the HRNetV2 representation at stride 4 (models/
    # centernet.py; never released for HRNet): the authors' 256 channels in the branches and
    # heads; nearest fusion, as the ImageNet backbones it starts from.
    'centernet': dict(upsample='nearest', align_corners=False, bn_momentum=0.9, num_classes=80,
                      cnv_channels=256, head_channels=256, pool_channels=128),
}
TWO_STAGE_TASKS = ('faster_rcnn', 'cascade_rcnn', 'mask_rcnn', 'cascade_mask_rcnn', 'htc',
                   'htc_without_semantic')

VARIANT_FIELDS = tuple(f.name for f in dataclasses.fields(Variant))
_COMMON = dict(dtype=jnp.float32, param_dtype=jnp.float32, remat='conv', scan=True,
               any_size=True)

# Nearest fusion upsamples a stream by exactly 2^k, so it needs sides divisible by 32 (the
# official networks fail elsewhere too). With `any_size` such models pad their input to this.
PAD_MULTIPLE = 32


def crop_to_input(outputs: Any, input_hw: tuple[int, int], padded_hw: tuple[int, int]) -> Any:
  """Every spatial (4-D) output of a padded input cut back to what the unpadded input covers:
  ceil(side / stride) rows and columns, the stride being padded side / output side."""
  (h, w), (ph, pw) = input_hw, padded_hw

  def crop(y):
    if y.ndim != 4:
      return y
    return y[:, :-(-h * y.shape[1] // ph), :-(-w * y.shape[2] // pw)]

  return jax.tree_util.tree_map(crop, outputs)


class HRNetModel(nn.Module):
  """A backbone and a task head. Params live under 'backbone' and 'head', so a trained backbone
  moves between tasks as one subtree.

  `pad_to` > 0 (nearest-fusion models, by default): an input whose sides are not multiples of it
  is padded at the bottom and right with zeros, which after normalization is the dataset's mean
  colour (the neutral value; edge padding would repeat the border into the receptive fields),
  and the outputs are cropped back (`crop_to_input`). The top-left origin is unchanged, so output
  pixel (i, j) still sits at input pixel (stride * i, stride * j); divisible sizes run exactly
  as before.

  `norm_eval`: the backbone's BatchNorms normalize with their running statistics in training
  too, and do not update them (mmdetection's `norm_eval`, for detectors trained at a few images
  per device); their scales and biases still train.

  `input_bgr`: the normalized RGB input is turned to BGR before the first convolution, for
  weights trained on BGR images (mmdetection's releases: their normalization in BGR order then
  equals ours in RGB order).

  `crop_outputs=False`: the outputs are not maps (two-stage detectors' boxes and 28x28 masks,
  already in input pixels) and are returned as they are."""
  backbone: HRNet
  head: nn.Module
  pad_to: int = 0
  norm_eval: bool = False
  input_bgr: bool = False
  crop_outputs: bool = True

  def __call__(self, images: jax.Array, train: bool = False, **inputs: Any) -> Any:
    """`inputs`: what a head takes besides the streams (two-stage detectors: `image_hw`, and
    the ground truth in training)."""
    if self.input_bgr:
      images = images[..., ::-1]
    h, w = images.shape[1:3]
    ph, pw = (-h % self.pad_to, -w % self.pad_to) if self.pad_to else (0, 0)
    padded = jnp.pad(images, ((0, 0), (0, ph), (0, pw), (0, 0))) if ph or pw else images
    outputs = self.head(self.backbone(padded, train=train and not self.norm_eval), train=train,
                        **inputs)
    if (ph or pw) and self.crop_outputs:
      return crop_to_input(outputs, (h, w), (h + ph, w + pw))
    return outputs


def split_arch(arch: str) -> tuple[str, str]:
  """'seg_ocr_w48' -> ('seg_ocr', 'w48'), with a clear error for unknown names."""
  for task in sorted(TASKS, key=len, reverse=True):
    if arch.startswith(task + '_') and arch[len(task) + 1:] in VARIANTS:
      return task, arch[len(task) + 1:]
  raise ConfigError(f'unknown arch {arch!r}: expected {{task}}_{{variant}} with task in '
                    f'{sorted(TASKS)} and variant in {list(VARIANTS)}')


def model_config(arch: str, **overrides: Any) -> dict[str, Any]:
  """The full settings of an arch: task defaults updated by `overrides` (validated)."""
  task, _ = split_arch(arch)
  config = dict(TASKS[task], **_COMMON)
  overrides = {k: v for k, v in overrides.items() if k not in VARIANT_FIELDS}  # shape, not settings
  if task in ('pose', 'face') and 'num_classes' in overrides:
    overrides = dict(overrides)
    overrides['num_joints'] = overrides.pop('num_classes')
  unknown = sorted(set(overrides) - set(config))
  if unknown:
    raise ConfigError(f'{arch}: unknown override(s) {unknown}; allowed: {sorted(config)}')
  config.update(overrides)
  if config['upsample'] not in ('nearest', 'bilinear'):
    raise ConfigError(f"{arch}: upsample must be 'nearest' or 'bilinear', got "
                      f"{config['upsample']!r}")
  return config


def create_model(arch: str, **overrides: Any) -> HRNetModel:
  """Builds a zoo model. Besides the task settings, `overrides` may reshape the variant
  (`width`, `num_modules`, `num_blocks`, `stage1_blocks`, `stage1_planes`) for small test
  models. `model.apply(variables, images_nhwc, train=False)` returns what the official model
  returns, in NHWC: logits (cls), logits at 1/4 (seg, face heatmaps), heatmaps at 1/4 (pose),
  (aux, out) at 1/4 (seg_ocr), a tuple of 5 pyramid levels (det), and for fcos (class logits,
  box distances, centerness logits), each a tuple of 5 levels (strides 8..128); fcos takes
  RGB images and feeds them to its weights as BGR (`input_bgr`, as released); faster_rcnn and
  cascade_rcnn return the dict of models/rcnn.TwoStageHead (proposals and box-head outputs);
  centernet the dict of models/centernet.CenterNetHead (corner and centre heatmaps, embeddings,
  offsets at stride 4).

  Any input size runs: bilinear-fusion models (seg, face) natively, as the official networks
  do; nearest-fusion models (pose, cls, det, fcos) pad to a multiple of 32 (`HRNetModel.pad_to`),
  unless `any_size=False`. Spatial outputs have ceil(side / stride) pixels either way."""
  task, variant = split_arch(arch)
  shape = {k: overrides.pop(k) for k in list(overrides) if k in VARIANT_FIELDS}
  c = model_config(arch, **overrides)
  v = VARIANTS[variant]
  if task == 'pose':  # The official pose code builds stage 1 as 4 x Bottleneck(64) for every width.
    v = dataclasses.replace(v, stage1_blocks=4, stage1_planes=64)
  v = dataclasses.replace(v, **{k: tuple(x) if k == 'num_modules' else x for k, x in shape.items()})
  dt = dict(dtype=c['dtype'], param_dtype=c['param_dtype'])
  backbone = HRNet(width=v.width, stage1_blocks=v.stage1_blocks, stage1_planes=v.stage1_planes,
                   num_modules=v.num_modules, num_blocks=v.num_blocks, upsample=c['upsample'],
                   align_corners=c['align_corners'], multi_scale_output=task != 'pose',
                   bn_momentum=c['bn_momentum'], remat=c['remat'], scan=c['scan'], **dt)
  if task == 'cls':
    head = heads.ClsHead(c['num_classes'], c['bn_momentum'], **dt)
  elif task in ('seg', 'face'):
    num = c['num_classes'] if task == 'seg' else c['num_joints']
    head = heads.SegHead(num, c['align_corners'], c['bn_momentum'],
                         prefix='last_layer' if task == 'seg' else 'head', **dt)
  elif task == 'seg_ocr':
    head = heads.OCRHead(c['num_classes'], c['align_corners'], c['bn_momentum'],
                         c['ocr_mid_channels'], c['ocr_key_channels'], c['ocr_dropout'], **dt)
  elif task == 'pose':
    head = heads.PoseHead(c['num_joints'], **dt)
  elif task in TWO_STAGE_TASKS:
    head = rcnn.TwoStageHead(**{k: c[k] for k in TWO_STAGE_FIELDS}, **dt)
  elif task == 'centernet':
    head = centernet.CenterNetHead(c['num_classes'], c['cnv_channels'], c['head_channels'],
                                   c['pool_channels'], c['bn_momentum'], c['align_corners'],
                                   **dt)
  elif task == 'fcos':
    head = heads.FCOS(c['num_classes'], c['out_channels'], c['num_levels'], c['neck_stride'],
                      c['stacked_convs'], c['gn_groups'], c['centerness_on_reg'], **dt)
  else:
    head = heads.PyramidNeck(c['out_channels'], c['num_levels'], c['neck_stride'], **dt)
  pad_to = PAD_MULTIPLE if c['any_size'] and c['upsample'] == 'nearest' else 0
  return HRNetModel(backbone=backbone, head=head, pad_to=pad_to,
                    crop_outputs=not isinstance(head, rcnn.TwoStageHead),
                    norm_eval=bool(c.get('norm_eval', False)),
                    input_bgr=bool(c.get('input_bgr', False)))


def list_models() -> list[str]:
  return [f'{task}_{variant}' for task in TASKS for variant in VARIANTS]


def init_shapes(arch: str, input_hw: tuple[int, int] = (64, 64), **overrides: Any) -> dict:
  """Variables of an arch as ShapeDtypeStructs: no compute, no memory."""
  model = create_model(arch, **overrides)
  images = jax.ShapeDtypeStruct((1, *input_hw, 3), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), images)


def num_params(arch: str, **overrides: Any) -> int:
  """Trainable parameters (the 'params' collection), as counted for the official models."""
  shapes = init_shapes(arch, **overrides)['params']
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(shapes))
