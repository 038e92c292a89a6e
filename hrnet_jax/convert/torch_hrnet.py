"""A PyTorch HRNet built from the architecture description, with the official module layout.

Used to verify conversions numerically (`python -m hrnet_jax.convert --verify`), by the parity
tests and by the benchmarks. Its state_dict keys are the official keys, so official checkpoints
load into it directly. Needs torch; the rest of the package never imports this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hrnet_jax.models import zoo


# Tasks whose releases are mmdetection's: the backbone under `backbone.`, then `neck.`, heads.
MMDET_TASKS = ('det', 'fcos') + zoo.TWO_STAGE_TASKS


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
  return nn.BatchNorm2d(channels, momentum=momentum)


class BasicBlock(nn.Module):
  expansion = 1

  def __init__(self, inplanes: int, planes: int, momentum: float, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
    self.bn1 = _bn(planes, momentum)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = _bn(planes, momentum)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    residual = x if self.downsample is None else self.downsample(x)
    return F.relu(out + residual)


class Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes: int, planes: int, momentum: float, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = _bn(planes, momentum)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = _bn(planes, momentum)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = _bn(planes * 4, momentum)
    self.downsample = downsample

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = F.relu(self.bn2(self.conv2(out)))
    out = self.bn3(self.conv3(out))
    residual = x if self.downsample is None else self.downsample(x)
    return F.relu(out + residual)


def make_layer(block, inplanes: int, planes: int, blocks: int, momentum: float) -> nn.Sequential:
  downsample = None
  if inplanes != planes * block.expansion:
    downsample = nn.Sequential(nn.Conv2d(inplanes, planes * block.expansion, 1, bias=False),
                               _bn(planes * block.expansion, momentum))
  layers = [block(inplanes, planes, momentum, downsample)]
  layers += [block(planes * block.expansion, planes, momentum) for _ in range(blocks - 1)]
  return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):

  def __init__(self, channels: list[int], num_blocks: int, multi_scale_output: bool,
               upsample: str, align_corners: bool, momentum: float):
    super().__init__()
    n = len(channels)
    self.upsample, self.align_corners = upsample, align_corners
    self.branches = nn.ModuleList(
        [make_layer(BasicBlock, c, c, num_blocks, momentum) for c in channels])
    fuse_layers = []
    for i in range(n if multi_scale_output else 1):
      row = []
      for j in range(n):
        if j > i:
          row.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 1, bias=False),
                                   _bn(channels[i], momentum)))
        elif j == i:
          row.append(None)
        else:
          steps = []
          for k in range(i - j):
            if k == i - j - 1:
              steps.append(nn.Sequential(nn.Conv2d(channels[j], channels[i], 3, 2, 1, bias=False),
                                         _bn(channels[i], momentum)))
            else:
              steps.append(nn.Sequential(nn.Conv2d(channels[j], channels[j], 3, 2, 1, bias=False),
                                         _bn(channels[j], momentum), nn.ReLU()))
          row.append(nn.Sequential(*steps))
      fuse_layers.append(nn.ModuleList(row))
    self.fuse_layers = nn.ModuleList(fuse_layers) if n > 1 else None

  def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    xs = [branch(x) for branch, x in zip(self.branches, xs)]
    if self.fuse_layers is None:
      return xs
    out = []
    for i, row in enumerate(self.fuse_layers):
      y = xs[0] if i == 0 else row[0](xs[0])
      for j in range(1, len(xs)):
        if j == i:
          y = y + xs[j]
        elif j > i:
          z = row[j](xs[j])
          if self.upsample == 'bilinear':
            z = F.interpolate(z, size=xs[i].shape[-2:], mode='bilinear',
                              align_corners=self.align_corners)
          else:
            z = F.interpolate(z, scale_factor=2**(j - i), mode='nearest')
          y = y + z
        else:
          y = y + row[j](xs[j])
      out.append(F.relu(y))
    return out


class Backbone(nn.Module):
  """Stem, layer1, transitions and stages, registered under the official names."""

  def __init__(self, variant: zoo.Variant, upsample: str, align_corners: bool, momentum: float,
               multi_scale_output: bool):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 3, 2, 1, bias=False)
    self.bn1 = _bn(64, momentum)
    self.conv2 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
    self.bn2 = _bn(64, momentum)
    self.layer1 = make_layer(Bottleneck, 64, variant.stage1_planes, variant.stage1_blocks, momentum)
    prev = [variant.stage1_planes * 4]
    for s, modules in enumerate(variant.num_modules, start=2):
      cur = [variant.width * 2**i for i in range(s)]
      trans = []
      for i, c in enumerate(cur):
        if i < len(prev):
          trans.append(None if prev[i] == c else nn.Sequential(
              nn.Conv2d(prev[i], c, 3, 1, 1, bias=False), _bn(c, momentum), nn.ReLU()))
        else:
          trans.append(nn.Sequential(nn.Sequential(
              nn.Conv2d(prev[-1], c, 3, 2, 1, bias=False), _bn(c, momentum), nn.ReLU())))
      setattr(self, f'transition{s - 1}', nn.ModuleList(trans))
      stage = []
      for m in range(modules):
        multi = multi_scale_output or not (s == 4 and m == modules - 1)
        stage.append(HighResolutionModule(cur, variant.num_blocks, multi, upsample, align_corners,
                                          momentum))
      setattr(self, f'stage{s}', nn.Sequential(*stage))
      prev = cur

  def stem(self, x):
    return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))

  def streams(self, x) -> list[torch.Tensor]:
    xs = [self.layer1(self.stem(x))]
    for s in (2, 3, 4):
      trans = getattr(self, f'transition{s - 1}')
      xs = [xs[i] if t is None else t(xs[min(i, len(xs) - 1)]) for i, t in enumerate(trans)]
      for module in getattr(self, f'stage{s}'):
        xs = module(xs)
    return xs


def _concat(xs: list[torch.Tensor], align_corners: bool) -> torch.Tensor:
  size = xs[0].shape[-2:]
  return torch.cat([xs[0]] + [F.interpolate(x, size=size, mode='bilinear',
                                            align_corners=align_corners) for x in xs[1:]], 1)


def _bn_relu(channels: int, momentum: float) -> nn.Sequential:
  return nn.Sequential(_bn(channels, momentum), nn.ReLU())


class ObjectAttentionBlock(nn.Module):

  def __init__(self, in_channels: int, key_channels: int, momentum: float):
    super().__init__()
    self.key_channels = key_channels

    def proj(cin, widths):
      layers = []
      for w in widths:
        layers += [nn.Conv2d(cin, w, 1, bias=False), _bn_relu(w, momentum)]
        cin = w
      return nn.Sequential(*layers)

    self.f_pixel = proj(in_channels, (key_channels, key_channels))
    self.f_object = proj(in_channels, (key_channels, key_channels))
    self.f_down = proj(in_channels, (key_channels,))
    self.f_up = proj(key_channels, (in_channels,))

  def forward(self, x, proxy):
    b, _, h, w = x.shape
    query = self.f_pixel(x).flatten(2).permute(0, 2, 1)
    key = self.f_object(proxy).flatten(2)
    value = self.f_down(proxy).flatten(2).permute(0, 2, 1)
    sim = torch.softmax(torch.matmul(query, key) * self.key_channels**-0.5, dim=-1)
    context = torch.matmul(sim, value).permute(0, 2, 1).reshape(b, self.key_channels, h, w)
    return self.f_up(context)


class SpatialOCR(nn.Module):

  def __init__(self, channels: int, key_channels: int, dropout: float, momentum: float):
    super().__init__()
    self.object_context_block = ObjectAttentionBlock(channels, key_channels, momentum)
    self.conv_bn_dropout = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False),
                                         _bn_relu(channels, momentum), nn.Dropout2d(dropout))

  def forward(self, feats, proxy):
    context = self.object_context_block(feats, proxy)
    return self.conv_bn_dropout(torch.cat([context, feats], 1))


class ConvGN(nn.Module):
  """mmcv's ConvModule with GN and ReLU: 3x3 conv without bias, then `gn`, keys `.conv.weight`,
  `.gn.weight`, `.gn.bias`."""

  def __init__(self, cin: int, cout: int, groups: int):
    super().__init__()
    self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
    self.gn = nn.GroupNorm(groups, cout, eps=1e-5)

  def forward(self, x):
    return F.relu(self.gn(self.conv(x)))


class Scale(nn.Module):
  """mmcv's Scale: one learnable 0-d `scale`."""

  def __init__(self, init: float = 1.0):
    super().__init__()
    self.scale = nn.Parameter(torch.tensor(init, dtype=torch.float32))

  def forward(self, x):
    return x * self.scale


class FCOSHead(nn.Module):
  """mmdetection v2's FCOSHead, registered in its order (cls_convs, reg_convs, conv_cls,
  conv_reg, conv_centerness, scales); `forward` returns (class logits, distances, centerness)
  over levels, distances = exp(scale * conv_reg(reg tower))."""

  def __init__(self, num_classes: int, channels: int, stacked_convs: int, num_levels: int,
               gn_groups: int, centerness_on_reg: bool):
    super().__init__()
    self.centerness_on_reg = centerness_on_reg
    self.cls_convs = nn.ModuleList(
        [ConvGN(channels, channels, gn_groups) for _ in range(stacked_convs)])
    self.reg_convs = nn.ModuleList(
        [ConvGN(channels, channels, gn_groups) for _ in range(stacked_convs)])
    self.conv_cls = nn.Conv2d(channels, num_classes, 3, padding=1)
    self.conv_reg = nn.Conv2d(channels, 4, 3, padding=1)
    self.conv_centerness = nn.Conv2d(channels, 1, 3, padding=1)
    self.scales = nn.ModuleList([Scale(1.0) for _ in range(num_levels)])

  def forward(self, levels):
    logits, distances, centerness = [], [], []
    for x, scale in zip(levels, self.scales):
      cls_feat, reg_feat = x, x
      for layer in self.cls_convs:
        cls_feat = layer(cls_feat)
      for layer in self.reg_convs:
        reg_feat = layer(reg_feat)
      logits.append(self.conv_cls(cls_feat))
      distances.append(scale(self.conv_reg(reg_feat)).float().exp())
      centerness.append(self.conv_centerness(reg_feat if self.centerness_on_reg else cls_feat))
    return tuple(logits), tuple(distances), tuple(centerness)


class HRNetReference(nn.Module):
  """The whole official model of an arch; `forward` returns what the official model returns."""

  def __init__(self, arch: str, **overrides: Any):
    super().__init__()
    task, variant_name = zoo.split_arch(arch)
    c = zoo.model_config(arch, **overrides)
    variant = zoo.VARIANTS[variant_name]
    if task == 'pose':
      variant = zoo.Variant(variant.width, 4, 64, variant.num_modules, variant.num_blocks)
    # Shape overrides (small test models), as zoo.create_model applies them.
    shape = {k: tuple(v) if k == 'num_modules' else v for k, v in overrides.items()
             if k in zoo.VARIANT_FIELDS}
    variant = dataclasses.replace(variant, **shape)
    self.task, self.align_corners = task, c['align_corners']
    m = 1.0 - c['bn_momentum']
    backbone = Backbone(variant, c['upsample'], c['align_corners'], m, task != 'pose')
    widths = [variant.width * 2**i for i in range(4)]
    if task in MMDET_TASKS:  # mmdet layout: backbone.*, neck.* and the heads
      self.backbone = backbone
      self.neck = nn.Module()
      # mmdetection's ConvModule (no norm, no activation) keeps its conv as `.conv`; v0.x
      # (legacy) has plain convs: `reduction_conv.0`, `fpn_conv.<i>`.
      self.legacy = bool(c.get('legacy', False))
      reduction = nn.Conv2d(sum(widths), c['out_channels'], 1)
      fpn = [nn.Conv2d(c['out_channels'], c['out_channels'], 3, c['neck_stride'], 1)
             for _ in range(c['num_levels'])]
      if self.legacy:
        self.neck.reduction_conv = nn.Sequential(reduction)
        self.neck.fpn_conv = nn.ModuleList(fpn)
      else:
        self.neck.reduction_conv = nn.Module()
        self.neck.reduction_conv.conv = reduction
        self.neck.fpn_convs = nn.ModuleList()
        for conv in fpn:
          level = nn.Module()
          level.conv = conv
          self.neck.fpn_convs.append(level)
      self.num_levels = c['num_levels']
      if task == 'fcos':
        self.bbox_head = FCOSHead(c['num_classes'], c['out_channels'], c['stacked_convs'],
                                  c['num_levels'], c['gn_groups'], c['centerness_on_reg'])
      elif task in zoo.TWO_STAGE_TASKS:
        from hrnet_jax.convert import torch_rcnn  # pylint: disable=import-outside-toplevel
        heads = torch_rcnn.TwoStage(c['out_channels'], c['num_classes'], c['num_stages'],
                                    c['fc_channels'], c['test_pre_nms'], c['test_proposals'],
                                    self.legacy, c['with_mask'],
                                    (c['test_score_thr'], c['test_nms_iou'],
                                     c['test_max_per_img']), c['htc'], c['semantic_classes'])
        self.rpn_head = heads.rpn_head  # mmdet's top-level names
        if self.legacy:  # top-level heads, registered in the checkpoint's order
          self.bbox_head = heads.bbox_head
          if c['with_mask']:
            self.mask_head = heads.mask_head
          if c['semantic_classes']:
            self.semantic_head = heads.semantic_head
        else:
          self.roi_head = heads.roi_head
        self._two_stage = [heads]  # a plain list: not registered twice
      return
    # Other releases register the backbone's modules on the model itself.
    for name, module in backbone.named_children():
      self.add_module(name, module)
    self._backbone = [backbone]  # a plain list: not registered twice
    if task == 'cls':
      planes = (32, 64, 128, 256)
      self.incre_modules = nn.ModuleList(
          [make_layer(Bottleneck, w, p, 1, m) for w, p in zip(widths, planes)])
      self.downsamp_modules = nn.ModuleList([
          nn.Sequential(nn.Conv2d(p * 4, q * 4, 3, 2, 1), _bn(q * 4, m), nn.ReLU())
          for p, q in zip(planes[:-1], planes[1:])])
      self.final_layer = nn.Sequential(nn.Conv2d(1024, 2048, 1), _bn(2048, m), nn.ReLU())
      self.classifier = nn.Linear(2048, c['num_classes'])
    elif task in ('seg', 'face'):
      k = c['num_classes'] if task == 'seg' else c['num_joints']
      head = nn.Sequential(nn.Conv2d(sum(widths), sum(widths), 1), _bn(sum(widths), m), nn.ReLU(),
                           nn.Conv2d(sum(widths), k, 1))
      self.add_module('last_layer' if task == 'seg' else 'head', head)
    elif task == 'seg_ocr':
      mid, k = c['ocr_mid_channels'], c['num_classes']
      self.conv3x3_ocr = nn.Sequential(nn.Conv2d(sum(widths), mid, 3, 1, 1), _bn(mid, m),
                                       nn.ReLU())
      self.ocr_distri_head = SpatialOCR(mid, c['ocr_key_channels'], c['ocr_dropout'], m)
      self.cls_head = nn.Conv2d(mid, k, 1)
      self.aux_head = nn.Sequential(nn.Conv2d(sum(widths), sum(widths), 1), _bn(sum(widths), m),
                                    nn.ReLU(), nn.Conv2d(sum(widths), k, 1))
    elif task == 'pose':
      self.final_layer = nn.Conv2d(widths[0], c['num_joints'], 1)

  def streams(self, x) -> list[torch.Tensor]:
    backbone = self.backbone if self.task in MMDET_TASKS else self._backbone[0]
    return backbone.streams(x)

  def forward(self, x):
    xs = self.streams(x)
    if self.task == 'cls':
      y = self.incre_modules[0](xs[0])
      for i, down in enumerate(self.downsamp_modules):
        y = self.incre_modules[i + 1](xs[i + 1]) + down(y)
      y = self.final_layer(y).mean(dim=(2, 3))
      return self.classifier(y)
    if self.task == 'pose':
      return self.final_layer(xs[0])
    if self.task in ('seg', 'face'):
      head = self.last_layer if self.task == 'seg' else self.head
      return head(_concat(xs, self.align_corners))
    if self.task == 'seg_ocr':
      feats = _concat(xs, self.align_corners)
      aux = self.aux_head(feats)
      feats = self.conv3x3_ocr(feats)
      b, ch, h, w = feats.shape
      regions = torch.softmax(aux.flatten(2), dim=2)  # B x K x HW
      proxy = torch.matmul(regions, feats.flatten(2).permute(0, 2, 1))  # B x K x C
      proxy = proxy.permute(0, 2, 1).unsqueeze(3)  # B x C x K x 1
      out = self.cls_head(self.ocr_distri_head(feats, proxy))
      return aux, out
    levels = self.levels(xs)  # det, fcos, two-stage
    if self.task == 'fcos':
      return self.bbox_head(levels)
    if self.task in zoo.TWO_STAGE_TASKS:  # the whole input is the image
      return self._two_stage[0](levels, [tuple(x.shape[2:])] * len(x))
    return levels

  def levels(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The HRFPN neck's levels from the streams."""
    if self.legacy:
      reduction, fpn = self.neck.reduction_conv[0], list(self.neck.fpn_conv)
    else:
      reduction = self.neck.reduction_conv.conv
      fpn = [level.conv for level in self.neck.fpn_convs]
    y = reduction(torch.cat(
        [xs[0]] + [F.interpolate(x, scale_factor=2**i, mode='bilinear')
                   for i, x in enumerate(xs[1:], start=1)], 1))
    levels = [y] + [F.avg_pool2d(y, 2**i, 2**i) for i in range(1, self.num_levels)]
    return tuple(conv(z) for conv, z in zip(fpn, levels))

  def forward_two_stage(self, x, image_hw: list[tuple[int, int]], scale_xy=None):
    """A two-stage detector on images whose unpadded sizes are `image_hw` (per image); with
    masks, the detections are divided by `scale_xy` (per image, (x, y))."""
    return self._two_stage[0](self.levels(self.streams(x)), image_hw, scale_xy)


def build(arch: str, **overrides: Any) -> HRNetReference:
  return HRNetReference(arch, **overrides).eval()
