"""The two-stage detectors' heads in PyTorch (mmdetection v2's module layout), written from the
documented formulas with torchvision's ops: the reference that conversions (`--verify`) and the
tests hold the JAX model against. NCHW throughout; the box head flattens RoI features in
PyTorch's (C, 7, 7) order, as the released weights expect. With mask heads (Mask R-CNN, Cascade
Mask R-CNN) the reference also runs the R-CNN test (`detections`) and the mask heads on the
detected boxes, as mmdetection's simple_test does.

`legacy=True` builds HRNet-Object-Detection's network instead (mmdetection v0.x / v1.0):
top-level `bbox_head` (and `mask_head`, `semantic_head`), background FIRST in the class logits,
in class-specific regression and in the mask maps (81), and v1's arithmetic written out here
(inclusive boxes with widths + 1, its NMS, its RoIAlign kernel, its R-CNN test).

Hybrid Task Cascade (`htc`): the mask heads chain their features (conv_res) and, with
`semantic_classes`, the fused semantic head's embedding is RoIAligned into the box features
(average-pooled to 7x7) and the mask features."""

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
  """Shared2FCBBoxHead: registration order fc_cls, fc_reg, shared_fcs (as mmdetection); legacy:
  class-specific regression also has the background's 4 outputs (first)."""

  def __init__(self, channels: int, roi_size: int, fc: int, num_classes: int, agnostic: bool,
               legacy: bool = False):
    super().__init__()
    self.fc_cls = nn.Linear(fc, num_classes + 1)
    self.fc_reg = nn.Linear(fc, 4 if agnostic else 4 * (num_classes + int(legacy)))
    self.shared_fcs = nn.ModuleList([nn.Linear(channels * roi_size * roi_size, fc),
                                     nn.Linear(fc, fc)])

  def forward(self, x):
    x = x.flatten(1)
    for fc in self.shared_fcs:
      x = F.relu(fc(x))
    return self.fc_cls(x), self.fc_reg(x)


class MaskHead(nn.Module):
  """FCNMaskHead: convs.<i>.conv (3x3 + ReLU), upsample (ConvTranspose2d 2x2 stride 2 + ReLU),
  conv_logits (1x1, a map per class); HTCMaskHead after the first stage also conv_res.conv
  (1x1 + ReLU of the previous head's features, added to the input). Returns (logits, the
  features after the convs)."""

  def __init__(self, channels: int, num_classes: int, num_convs: int = 4,
               with_conv_res: bool = False):
    super().__init__()
    self.convs = nn.ModuleList()
    for _ in range(num_convs):
      block = nn.Module()
      block.conv = nn.Conv2d(channels, channels, 3, 1, 1)
      self.convs.append(block)
    self.upsample = nn.ConvTranspose2d(channels, channels, 2, 2)
    self.conv_logits = nn.Conv2d(channels, num_classes, 1)
    if with_conv_res:
      self.conv_res = nn.Module()
      self.conv_res.conv = nn.Conv2d(channels, channels, 1)

  def forward(self, x, previous=None):
    if previous is not None:
      x = x + F.relu(self.conv_res.conv(previous))
    for block in self.convs:
      x = F.relu(block.conv(x))
    return self.conv_logits(F.relu(self.upsample(x))), x


def _conv_module(cin: int, cout: int, k: int) -> nn.Module:
  """mmcv's ConvModule without norm: the conv as `.conv` (its ReLU is applied by the caller)."""
  m = nn.Module()
  m.conv = nn.Conv2d(cin, cout, k, 1, k // 2)
  return m


class SemanticHead(nn.Module):
  """FusedSemanticHead: lateral_convs.<i> (1x1 + ReLU, each level resized to level 1 first,
  bilinear, align_corners), summed; convs.<i> (3x3 + ReLU); conv_embedding (1x1 + ReLU) and
  conv_logits. Returns (logits, embedding)."""

  def __init__(self, channels: int, num_classes: int, num_levels: int = 5, num_convs: int = 4):
    super().__init__()
    self.lateral_convs = nn.ModuleList([_conv_module(channels, channels, 1)
                                        for _ in range(num_levels)])
    self.convs = nn.ModuleList([_conv_module(channels, channels, 3) for _ in range(num_convs)])
    self.conv_embedding = _conv_module(channels, channels, 1)
    self.conv_logits = nn.Conv2d(channels, num_classes, 1)

  def forward(self, levels, fusion: int = 1):
    x = F.relu(self.lateral_convs[fusion].conv(levels[fusion]))
    for i, level in enumerate(levels):
      if i != fusion:
        level = F.interpolate(level, size=x.shape[2:], mode='bilinear', align_corners=True)
        x = x + F.relu(self.lateral_convs[i].conv(level))
    for block in self.convs:
      x = F.relu(block.conv(x))
    return self.conv_logits(x), F.relu(self.conv_embedding.conv(x))


def anchors(h: int, w: int, stride: int, legacy: bool = False) -> torch.Tensor:
  """(h * w * 3, 4): scale 8, ratios 0.5, 1, 2 centred on (stride x, stride y); legacy (v1):
  centred on (stride x + (stride - 1) / 2, ...), half sides (side - 1) / 2, rounded."""
  ratios = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
  hr = ratios.sqrt()
  ws, hs = stride * 8.0 / hr, stride * 8.0 * hr
  if legacy:
    c = (stride - 1) / 2
    base = torch.stack([c - (ws - 1) / 2, c - (hs - 1) / 2, c + (ws - 1) / 2,
                        c + (hs - 1) / 2], 1).round()
  else:
    base = torch.stack([-ws / 2, -hs / 2, ws / 2, hs / 2], 1)
  ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) * stride,
                          torch.arange(w, dtype=torch.float64) * stride, indexing='ij')
  shifts = torch.stack([xs, ys, xs, ys], -1).reshape(-1, 1, 4)
  return (shifts + base[None]).reshape(-1, 4).float()


def apply_deltas(boxes, deltas, stds, hw, legacy: bool = False):
  """boxes (N, 4), deltas (N, 4k) -> (N, 4k) clipped to the image (height, width); legacy:
  widths x2 - x1 + 1, corners at centre -+ (side - 1) / 2, clipped to width - 1."""
  one = 1.0 if legacy else 0.0
  d = deltas.reshape(len(deltas), deltas.shape[1] // 4, 4) * torch.tensor(stds)
  w, h = (boxes[:, 2] - boxes[:, 0] + one)[:, None], (boxes[:, 3] - boxes[:, 1] + one)[:, None]
  cx, cy = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None], ((boxes[:, 1] + boxes[:, 3]) / 2)[:, None]
  clamp = abs(math.log(16 / 1000))
  nw, nh = w * d[..., 2].clamp(-clamp, clamp).exp(), h * d[..., 3].clamp(-clamp, clamp).exp()
  nx, ny = cx + w * d[..., 0], cy + h * d[..., 1]
  out = torch.stack([nx - (nw - one) / 2, ny - (nh - one) / 2, nx + (nw - one) / 2,
                     ny + (nh - one) / 2], -1)
  limit = torch.tensor([hw[1], hw[0], hw[1], hw[0]], dtype=out.dtype) - one
  return torch.minimum(out.clamp(min=0), limit).reshape(deltas.shape)


def legacy_nms(boxes, scores, iou):
  """mmdetection v1's NMS: greedy by score, IoU of inclusive boxes (+1), suppress above `iou`.
  Returns the kept indices, best first."""
  order = scores.argsort(descending=True, stable=True)
  boxes = boxes[order]
  area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
  alive = torch.ones(len(boxes), dtype=torch.bool)
  keep = []
  for i in range(len(boxes)):
    if not alive[i]:
      continue
    keep.append(i)
    lt = torch.maximum(boxes[i, :2], boxes[i + 1:, :2])
    rb = torch.minimum(boxes[i, 2:], boxes[i + 1:, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    alive[i + 1:] &= inter / (area[i] + area[i + 1:] - inter) <= iou
  return order[torch.tensor(keep, dtype=torch.long)]


def legacy_roi_align(feature, rois, scale: float, size: int = 7, samples: int = 2):
  """mmdetection v1's RoIAlign kernel on one map (N, C, H, W): rois (K, 5) (image, x1, y1, x2,
  y2); the box spans x1 * scale .. (x2 + 1) * scale (at least zero wide), `samples` x `samples`
  bilinear samples per bin; a sample beyond [-1, side] is zero, one below 0 reads row 0."""
  n, c, h, w = feature.shape
  x1, y1 = rois[:, 1] * scale, rois[:, 2] * scale
  rw = ((rois[:, 3] + 1) * scale - x1).clamp(min=0)
  rh = ((rois[:, 4] + 1) * scale - y1).clamp(min=0)
  grid = torch.arange(size, dtype=rois.dtype)[:, None] + (
      torch.arange(samples, dtype=rois.dtype)[None, :] + 0.5) / samples  # (size, samples)
  ys = (y1[:, None, None] + grid[None] * (rh / size)[:, None, None]).reshape(len(rois), -1)
  xs = (x1[:, None, None] + grid[None] * (rw / size)[:, None, None]).reshape(len(rois), -1)

  def taps(pos, side):  # (K, P) -> low, high indices and weights, zero outside [-1, side]
    inside = (pos >= -1) & (pos <= side)
    pos = pos.clamp(min=0)
    low = pos.floor().long()
    edge = low >= side - 1
    low = torch.where(edge, torch.full_like(low, side - 1), low)
    high = torch.where(edge, low, low + 1)
    frac = torch.where(edge, torch.zeros_like(pos), pos - low.to(pos.dtype))
    return low, high, (1 - frac) * inside, frac * inside

  yl, yh, wyl, wyh = taps(ys, h)
  xl, xh, wxl, wxh = taps(xs, w)
  maps = feature[rois[:, 0].long()]  # (K, C, H, W)
  k = torch.arange(len(rois))[:, None, None]

  def at(yi, xi):  # (K, C, Py, Px)
    return maps[k, :, yi[:, :, None], xi[:, None, :]].permute(0, 3, 1, 2)

  out = (at(yl, xl) * (wyl[:, :, None] * wxl[:, None, :])[:, None]
         + at(yl, xh) * (wyl[:, :, None] * wxh[:, None, :])[:, None]
         + at(yh, xl) * (wyh[:, :, None] * wxl[:, None, :])[:, None]
         + at(yh, xh) * (wyh[:, :, None] * wxh[:, None, :])[:, None])
  return out.reshape(len(rois), c, size, samples, size, samples).mean(dim=(3, 5))


def proposals(cls, reg, i, hw, pre_nms, num, iou, legacy: bool = False):
  """Image i's RPN proposals: per level the best `pre_nms` anchors, decoded, clipped, empty
  ones dropped (legacy: none), NMS; the best `num` over the levels."""
  boxes, scores = [], []
  for level, (c, r) in enumerate(zip(cls, reg)):
    h, w = c.shape[2:]
    s = c[i].permute(1, 2, 0).reshape(-1).sigmoid()
    d = r[i].permute(1, 2, 0).reshape(-1, 4)
    a = anchors(h, w, 4 * 2**level, legacy)
    s, order = s.sort(descending=True)
    s, order = s[:pre_nms], order[:pre_nms]
    b = apply_deltas(a[order], d[order], (1, 1, 1, 1), hw, legacy)
    if not legacy:
      ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
      b, s = b[ok], s[ok]
    keep = legacy_nms(b, s, iou) if legacy else torchvision.ops.nms(b, s, iou)
    boxes.append(b[keep])
    scores.append(s[keep])
  boxes, scores = torch.cat(boxes), torch.cat(scores)
  scores, order = scores.sort(descending=True)
  return boxes[order[:num]]


def roi_features(levels, rois, batch, legacy: bool = False, size: int = 7):
  """mmdetection's level rule; RoIAlign size x size, adaptive sampling, aligned (legacy: v1's
  level rule with widths + 1, and its kernel)."""
  one = 1.0 if legacy else 0.0
  scale = ((rois[:, 2] - rois[:, 0] + one) * (rois[:, 3] - rois[:, 1] + one)).sqrt()
  level = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(0, 3).long()
  out = rois.new_zeros(len(rois), levels[0].shape[1], size, size)
  for k, stride in enumerate(ROI_STRIDES):
    picked = level == k
    if picked.any():
      boxes = torch.cat([batch[picked, None].float(), rois[picked]], 1)
      if legacy:
        out[picked] = legacy_roi_align(levels[k], boxes, 1 / stride, size)
      else:
        out[picked] = torchvision.ops.roi_align(levels[k], boxes, size, 1 / stride, 0, True)
  return out


def detections(rois, logits, deltas, hw, scale, stds, score_thr: float = 0.05,
               iou: float = 0.5, max_per_img: int = 100):
  """mmdetection v2's R-CNN test on one image's RoIs: softmax (background last, dropped), the
  class's deltas (or the class-agnostic ones), clipped to the image (height, width), divided
  by the (x, y) resize factors `scale`, every (RoI, class) scoring > score_thr, batched NMS,
  the best max_per_img. Returns boxes (D, 4), scores (D,), labels (D,), by score."""
  probs = torch.softmax(logits, 1)[:, :-1]
  k = probs.shape[1]
  boxes = apply_deltas(rois, deltas, stds, hw).reshape(len(rois), -1, 4)
  boxes = boxes / torch.tensor([scale[0], scale[1], scale[0], scale[1]], dtype=boxes.dtype)
  boxes = boxes.expand(len(rois), k, 4) if boxes.shape[1] == 1 else boxes
  rows, cols = torch.nonzero(probs > score_thr, as_tuple=True)
  b, s = boxes[rows, cols], probs[rows, cols]
  keep = torchvision.ops.batched_nms(b, s, cols, iou)[:max_per_img]
  return b[keep], s[keep], cols[keep]


def legacy_detections(rois, logits, deltas, hw, scale, stds, score_thr: float = 0.05,
                      iou: float = 0.5, max_per_img: int = 100):
  """mmdetection v1's R-CNN test on one image's RoIs (background FIRST in `logits` and in
  class-specific `deltas`): softmax, v1 deltas clipped to width - 1, divided by the one resize
  factor `scale[0]`, then class by class (the background skipped) every RoI scoring > score_thr,
  v1's NMS; the best max_per_img over the classes. Returns boxes, scores, labels, by score."""
  probs = torch.softmax(logits, 1)
  boxes = apply_deltas(rois, deltas, stds, hw, legacy=True).reshape(len(rois), -1, 4)
  boxes = boxes / float(scale[0])
  found = []
  for c in range(1, probs.shape[1]):
    pick = probs[:, c] > score_thr
    b = boxes[pick, 0] if boxes.shape[1] == 1 else boxes[pick, c]
    s = probs[pick, c]
    found += [(float(s[i]), b[i], c - 1) for i in legacy_nms(b, s, iou).tolist()]
  found = sorted(found, key=lambda t: -t[0])[:max_per_img]
  if not found:
    return rois.new_zeros(0, 4), rois.new_zeros(0), torch.zeros(0, dtype=torch.long)
  return (torch.stack([f[1] for f in found]), torch.tensor([f[0] for f in found]),
          torch.tensor([f[2] for f in found]))


class TwoStage(nn.Module):
  """The RPN and RoI heads on the neck's levels. `forward` returns, as the JAX model, the last
  stage's input boxes `rois` (B, num, 4), the mean of the stages' class `logits` and the last
  stage's `deltas`, rows past an image's proposals zero, and `valid`."""

  def __init__(self, channels: int, num_classes: int, num_stages: int, fc: int,
               pre_nms: int, num: int, legacy: bool = False, with_mask: bool = False,
               test: tuple[float, float, int] = (0.05, 0.5, 100), htc: bool = False,
               semantic_classes: int = 0):
    super().__init__()
    self.rpn_head = RPNHead(channels)
    heads = [BBoxHead(channels, 7, fc, num_classes, num_stages > 1, legacy)
             for _ in range(num_stages)]
    box_heads = heads[0] if num_stages == 1 else nn.ModuleList(heads)
    masks = [MaskHead(channels, num_classes + int(legacy), with_conv_res=htc and s > 0)
             for s in range(num_stages if with_mask else 0)]
    semantic = [SemanticHead(channels, semantic_classes)] if semantic_classes else []
    # v0.x / v1 (legacy): the heads are top-level modules; v2: under roi_head.
    owner = self if legacy else nn.Module()
    owner.bbox_head = box_heads
    if masks:
      owner.mask_head = masks[0] if num_stages == 1 else nn.ModuleList(masks)
    if semantic:
      owner.semantic_head = semantic[0]
    if not legacy:
      self.roi_head = owner
    self.heads, self.pre_nms, self.num, self.legacy = heads, pre_nms, num, legacy
    self.masks, self.test, self.htc, self.semantic = masks, test, htc, semantic

  def semantic_rois(self, embedding, rois, i):
    """HTC: the semantic embedding's 14x14 RoIAlign (stride 8) of image i's boxes."""
    if embedding is None:
      return 0
    boxes = torch.cat([torch.full((len(rois), 1), float(i)), rois], 1)
    if self.legacy:
      return legacy_roi_align(embedding, boxes, 1 / 8, 14)
    return torchvision.ops.roi_align(embedding, boxes, 14, 1 / 8, 0, True)

  def forward(self, levels, image_hw, scale_xy=None):
    """`scale_xy` (per image): the resize factors the detections are divided by (masks)."""
    cls, reg = self.rpn_head(levels)
    embedding = self.semantic[0](levels)[1] if self.semantic else None
    out = {'deltas': [], 'logits': [], 'rois': [], 'valid': []}
    found = []
    for i, hw in enumerate(image_hw):
      rois = proposals(cls, reg, i, hw, self.pre_nms, self.num, 0.7, self.legacy)
      n = len(rois)
      batch = torch.full((n,), i)
      logits = 0
      for s, head in enumerate(self.heads):
        feats = roi_features(levels, rois, batch, self.legacy)
        if embedding is not None:
          feats = feats + F.adaptive_avg_pool2d(self.semantic_rois(embedding, rois, i), 7)
        scores, deltas = head(feats)
        logits = logits + scores
        if s < len(self.heads) - 1:
          rois = apply_deltas(rois, deltas, STAGE_STDS[s], hw, self.legacy)
      pad = lambda t: F.pad(t, (0, 0, 0, self.num - n))
      out['rois'].append(pad(rois))
      out['logits'].append(pad(logits / len(self.heads)))
      out['deltas'].append(pad(deltas))
      out['valid'].append(torch.arange(self.num) < n)
      if self.masks:
        scale = (1.0, 1.0) if scale_xy is None else tuple(scale_xy[i])
        found.append(self.detect_masks(levels, embedding, i, rois, logits / len(self.heads),
                                       deltas, hw, scale))
    out = {k: torch.stack(v) for k, v in out.items()}
    if found:
      out['detections'] = {k: torch.stack([f[k] for f in found]) for k in found[0]}
    return out

  def detect_masks(self, levels, embedding, i, rois, logits, deltas, hw, scale):
    """Image i's detections and the mean of the mask heads' sigmoids for each box's class,
    on its boxes scaled back onto the input (HTC: the heads as a chain, on features with the
    semantic embedding's); padded to max_per_img (labels -1)."""
    score_thr, iou, top = self.test
    protocol = legacy_detections if self.legacy else detections
    boxes, scores, labels = protocol(rois, logits, deltas, hw, scale,
                                     STAGE_STDS[len(self.heads) - 1], score_thr, iou, top)
    on_input = boxes * torch.tensor([scale[0], scale[1], scale[0], scale[1]])
    feats = roi_features(levels, on_input, torch.full((len(boxes),), i), self.legacy, size=14)
    feats = feats + self.semantic_rois(embedding, on_input, i)
    probs, previous = 0, None
    channel = labels + int(self.legacy)  # legacy: the background's map comes first
    for head in self.masks:
      mask_logits, hidden = head(feats, previous)
      previous = hidden if self.htc else None
      probs = probs + mask_logits[torch.arange(len(boxes)), channel].sigmoid()
    d, m = len(boxes), top
    pad = lambda t, value=0: F.pad(t, (0, 0) * (t.dim() - 1) + (0, m - d), value=value)
    return {'boxes': pad(boxes), 'labels': pad(labels, -1), 'masks': pad(probs / len(self.masks)),
            'scores': pad(scores), 'valid': torch.arange(m) < d}


def in_model_order(out: dict, legacy: bool, class_specific: bool) -> dict:
  """The outputs of a legacy reference (background first) in the JAX model's order: the
  background logit last, no background deltas. Others pass through."""
  if not legacy:
    return out
  out = dict(out, logits=torch.roll(out['logits'], -1, dims=-1))
  if class_specific:
    out['deltas'] = out['deltas'][..., 4:]
  return out
