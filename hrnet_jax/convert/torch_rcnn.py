"""The two-stage detectors' heads in PyTorch (mmdetection v2's module layout), written from the
documented formulas with torchvision's ops: the reference that conversions (`--verify`) and the
tests hold the JAX model against. NCHW throughout; the box head flattens RoI features in
PyTorch's (C, 7, 7) order, as the released weights expect."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

STAGE_STDS = ((0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
ROI_STRIDES = (4, 8, 16, 32)


class RPNHead(nn.Module):
  def __init__(self, channels: int, num_anchors: int = 3):
    super().__init__()
    self.rpn_conv = nn.Conv2d(channels, channels, 3, 1, 1)
    self.rpn_cls = nn.Conv2d(channels, num_anchors, 1)
    self.rpn_reg = nn.Conv2d(channels, 4 * num_anchors, 1)

  def forward(self, levels):
    out = [F.relu(self.rpn_conv(x)) for x in levels]
    return [self.rpn_cls(y) for y in out], [self.rpn_reg(y) for y in out]


class BBoxHead(nn.Module):
  """Shared2FCBBoxHead: registration order fc_cls, fc_reg, shared_fcs (as mmdetection)."""

  def __init__(self, channels: int, roi_size: int, fc: int, num_classes: int, agnostic: bool):
    super().__init__()
    self.fc_cls = nn.Linear(fc, num_classes + 1)
    self.fc_reg = nn.Linear(fc, 4 if agnostic else 4 * num_classes)
    self.shared_fcs = nn.ModuleList([nn.Linear(channels * roi_size * roi_size, fc),
                                     nn.Linear(fc, fc)])

  def forward(self, x):
    x = x.flatten(1)
    for fc in self.shared_fcs:
      x = F.relu(fc(x))
    return self.fc_cls(x), self.fc_reg(x)


def anchors(h: int, w: int, stride: int) -> torch.Tensor:
  """(h * w * 3, 4): scale 8, ratios 0.5, 1, 2 centred on (stride x, stride y)."""
  ratios = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
  hr = ratios.sqrt()
  ws, hs = stride * 8.0 / hr, stride * 8.0 * hr
  base = torch.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], 1)
  ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) * stride,
                          torch.arange(w, dtype=torch.float64) * stride, indexing='ij')
  shifts = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4)
  return (shifts + base[None]).reshape(-1, 4).float()


def apply_deltas(boxes, deltas, stds, hw):
  """boxes (N, 4), deltas (N, 4k) -> (N, 4k) clipped to the image (height, width)."""
  d = deltas.reshape(len(deltas), deltas.shape[1] // 4, 4) * torch.tensor(stds)
  w, h = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
  cx, cy = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None], ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None]
  clamp = abs(math.log(16 / 1000))
  nw, nh = w * d[..., 2].clamp(-clamp, clamp).exp(), h * d[..., 3].clamp(-clamp, clamp).exp()
  nx, ny = cx + w * d[..., 0], cy + h * d[..., 1]
  out = torch.stack([nx - nw / 2, ny - nh / 2, nx + nw / 2, ny + nh / 2], -1)
  limit = torch.tensor([hw[1], hw[0], hw[1], hw[0]], dtype=out.dtype)
  return torch.minimum(out.clamp(min=0), limit).reshape(deltas.shape)


def proposals(cls, reg, i, hw, pre_nms, num, iou):
  """Image i's RPN proposals: per level the best `pre_nms` anchors, decoded, clipped, empty
  ones dropped, NMS; the best `num` over the levels."""
  boxes, scores = [], []
  for level, (c, r) in enumerate(zip(cls, reg)):
    h, w = c.shape[2:]
    s = c[i].permute(1, 2, 0).reshape(-1).sigmoid()
    d = r[i].permute(1, 2, 0).reshape(-1, 4)
    a = anchors(h, w, 4 * 2**level)
    s, order = s.sort(descending=True)
    s, order = s[:pre_nms], order[:pre_nms]
    b = apply_deltas(a[order], d[order], (1, 1, 1, 1), hw)
    ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    b, s = b[ok], s[ok]
    keep = torchvision.ops.nms(b, s, iou)
    boxes.append(b[keep])
    scores.append(s[keep])
  boxes, scores = torch.cat(boxes), torch.cat(scores)
  scores, order = scores.sort(descending=True)
  return boxes[order[:num]]


def roi_features(levels, rois, batch):
  """mmdetection's level rule; RoIAlign 7x7, adaptive sampling, aligned."""
  scale = ((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1])).sqrt()
  level = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(0, 3).long()
  out = rois.new_zeros(len(rois), levels[0].shape[1], 7, 7)
  for k, stride in enumerate(ROI_STRIDES):
    picked = level == k
    if picked.any():
      boxes = torch.cat([batch[picked, None].float(), rois[picked]], 1)
      out[picked] = torchvision.ops.roi_align(levels[k], boxes, 7, 1 / stride, 0, True)
  return out


class TwoStage(nn.Module):
  """The RPN and RoI heads on the neck's levels. `forward` returns, as the JAX model, the last
  stage's input boxes `rois` (B, num, 4), the mean of the stages' class `logits` and the last
  stage's `deltas`, rows past an image's proposals zero, and `valid`."""

  def __init__(self, channels: int, num_classes: int, num_stages: int, fc: int,
               pre_nms: int, num: int):
    super().__init__()
    self.rpn_head = RPNHead(channels)
    self.roi_head = nn.Module()
    heads = [BBoxHead(channels, 7, fc, num_classes, num_stages > 1) for _ in range(num_stages)]
    self.roi_head.bbox_head = heads[0] if num_stages == 1 else nn.ModuleList(heads)
    self.heads, self.pre_nms, self.num = heads, pre_nms, num

  def forward(self, levels, image_hw):
    cls, reg = self.rpn_head(levels)
    out = {'deltas': [], 'logits': [], 'rois': [], 'valid': []}
    for i, hw in enumerate(image_hw):
      rois = proposals(cls, reg, i, hw, self.pre_nms, self.num, 0.7)
      n = len(rois)
      batch = torch.full((n,), i)
      logits = 0
      for s, head in enumerate(self.heads):
        scores, deltas = head(roi_features(levels, rois, batch))
        logits = logits + scores
        if s < len(self.heads) - 1:
          rois = apply_deltas(rois, deltas, STAGE_STDS[s], hw)
      pad = lambda t: F.pad(t, (0, 0, 0, self.num - n))
      out['rois'].append(pad(rois))
      out['logits'].append(pad(logits / len(self.heads)))
      out['deltas'].append(pad(deltas))
      out['valid'].append(torch.arange(self.num) < n)
    return {k: torch.stack(v) for k, v in out.items()}
