"""Numerical parity with PyTorch: timm for classification, the reference for the other heads.

Random weights with non-trivial BN statistics, eval mode, float32; relative error
max|jax - torch| / max|torch| <= 1e-4 on the outputs and on the backbone's streams.
"""

import jax
import numpy as np
import pytest

from conftest import nchw_to_nhwc, randomize_torch_bn, relative_error
import hrnet_jax
from hrnet_jax import convert

torch = pytest.importorskip('torch')
TOL = 1e-4


def _outputs_and_streams(module, x):
  streams = module.backbone(x)
  return module.head(streams), streams


def _flax_forward(arch, variables, x, **overrides):
  model = hrnet_jax.create_model(arch, **overrides)
  return jax.jit(lambda v, x: model.apply(v, x, method=_outputs_and_streams))(variables, x)


@pytest.mark.parametrize('timm_name,arch', [
    ('hrnet_w18_small', 'cls_w18_small_v1'), ('hrnet_w18_small_v2', 'cls_w18_small_v2'),
    pytest.param('hrnet_w18', 'cls_w18', marks=pytest.mark.slow)])
def test_timm_classification_parity(timm_name, arch):
  timm = pytest.importorskip('timm')
  torch.manual_seed(0)
  ref = timm.create_model(timm_name, pretrained=False).eval()
  randomize_torch_bn(ref)
  variables = convert.torch_to_flax(ref.state_dict(), arch)
  x = np.random.default_rng(0).standard_normal((2, 96, 128, 3), np.float32)
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  with torch.no_grad():
    logits = ref(xt)
    stem = ref.act2(ref.bn2(ref.conv2(ref.act1(ref.bn1(ref.conv1(xt))))))
    streams = ref.stages(stem)
  out, flax_streams = _flax_forward(arch, variables, x)
  assert relative_error(out, logits.numpy()) <= TOL
  assert len(flax_streams) == len(streams) == 4
  for f, t in zip(flax_streams, streams):
    assert relative_error(f, nchw_to_nhwc(t)) <= TOL


CASES = [
    ('seg_w18', {}, (72, 100)),  # bilinear fusion at sizes not divisible by 32
    ('seg_w18_small_v2', {'upsample': 'nearest'}, (64, 96)),
    ('seg_w18_small_v1', {'align_corners': True}, (70, 90)),
    pytest.param('pose_w32', {}, (64, 96), marks=pytest.mark.slow),  # the full pose release
    ('pose_w18_small_v2', {}, (64, 96)),  # nearest fusion, single-scale last module
    ('pose_w18_small_v1', {'upsample': 'bilinear'}, (72, 56)),
    ('face_w18_small_v2', {}, (64, 64)),
    ('seg_ocr_w18_small_v2', {}, (72, 100)),  # align_corners=True everywhere
    ('seg_ocr_w18_small_v1', {'upsample': 'nearest', 'align_corners': False}, (64, 64)),
    ('det_w18_small_v1', {}, (64, 128)),
    ('det_w18_small_v1', {'neck_stride': 2}, (64, 128)),  # FCOS-HRNet: levels 8..128
]


def _case_id(case):
  arch, overrides, _ = case.values if hasattr(case, 'values') else case
  return f'{arch}-{overrides}'


@pytest.mark.parametrize('arch,overrides,hw', CASES, ids=[_case_id(c) for c in CASES])
def test_reference_parity(arch, overrides, hw):
  from hrnet_jax.convert import torch_hrnet
  torch.manual_seed(0)
  ref = torch_hrnet.build(arch, **overrides)
  randomize_torch_bn(ref)
  variables = convert.torch_to_flax(ref.state_dict(), arch, **overrides)
  x = np.random.default_rng(0).standard_normal((2, *hw, 3), np.float32)
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  with torch.no_grad():
    want = ref(xt)
    want_streams = ref.streams(xt)
  got, streams = _flax_forward(arch, variables, x, **overrides)
  want = want if isinstance(want, tuple) else (want,)
  got = got if isinstance(got, tuple) else (got,)
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert g.shape == nchw_to_nhwc(w).shape
    assert relative_error(g, nchw_to_nhwc(w)) <= TOL
  for g, w in zip(streams, want_streams, strict=True):
    assert relative_error(g, nchw_to_nhwc(w)) <= TOL


def test_train_mode_parity_outputs_and_running_stats():
  """One training-mode forward: batch-statistics outputs and PyTorch's running-stat update."""
  from hrnet_jax.convert import torch_hrnet
  arch = 'seg_w18_small_v1'
  torch.manual_seed(0)
  ref = torch_hrnet.build(arch)
  randomize_torch_bn(ref)
  variables = convert.torch_to_flax(ref.state_dict(), arch)
  x = np.random.default_rng(0).standard_normal((2, 64, 96, 3), np.float32)
  ref.train()
  with torch.no_grad():
    want = ref(torch.from_numpy(x).permute(0, 3, 1, 2))
  model = hrnet_jax.create_model(arch)
  got, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))(
      variables, x)
  assert relative_error(got, nchw_to_nhwc(want)) <= TOL
  new = convert.flax_to_torch({**variables, **updates}, arch)
  for key, value in ref.state_dict().items():
    if 'running' in key:
      assert relative_error(new[key], value.numpy()) <= TOL, key


# ---------------------------------------------------------------------------------------------
# FCOS (mmdetection's FCOS-HRNetV2p): backbone, pyramid and GN head, every output of every level.

FCOS_CASES = [
    # Tiny head; 128x192 keeps 4 values per GN group on the coarsest (1x2) level, where fewer
    # make the group statistics ill-conditioned in float32.
    ('fcos_w18_small_v1', {'out_channels': 64, 'gn_groups': 32, 'num_classes': 5}, (128, 192)),
    ('fcos_w18_small_v1', {'out_channels': 64, 'gn_groups': 16, 'num_classes': 3,
                           'stacked_convs': 2, 'centerness_on_reg': True}, (96, 160)),
    pytest.param('fcos_w18', {}, (128, 160), marks=pytest.mark.slow),  # the releases: 80 classes,
    pytest.param('fcos_w32', {}, (128, 160), marks=pytest.mark.slow),  # 256 channels
]


def randomize_torch_gn_and_scales(model, seed: int = 2) -> None:
  """Non-trivial GN affine parameters and per-level box scales (all 1.0 at init, so a swapped
  or dropped scale would go unnoticed)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.GroupNorm):
        m.weight.uniform_(0.5, 1.5, generator=g)
        m.bias.normal_(0.0, 0.1, generator=g)
    for scale in model.bbox_head.scales:
      scale.scale.uniform_(0.5, 1.5, generator=g)


@pytest.mark.parametrize('arch,overrides,hw', FCOS_CASES, ids=[_case_id(c) for c in FCOS_CASES])
def test_fcos_reference_parity(arch, overrides, hw):
  from hrnet_jax.convert import torch_hrnet
  torch.manual_seed(0)
  ref = torch_hrnet.build(arch, **overrides)
  randomize_torch_bn(ref)
  randomize_torch_gn_and_scales(ref)
  variables = convert.torch_to_flax(ref.state_dict(), arch, **overrides)
  x = np.random.default_rng(0).standard_normal((2, *hw, 3), np.float32)
  with torch.no_grad():  # the released weights take BGR: the Flax model turns RGB around
    want = ref(torch.from_numpy(np.ascontiguousarray(x[..., ::-1])).permute(0, 3, 1, 2))
  model = hrnet_jax.create_model(arch, **overrides)
  got = jax.jit(model.apply)(variables, x)
  num_classes = overrides.get('num_classes', 80)
  assert len(got) == len(want) == 3
  for name, g_levels, w_levels, channels in zip(('logits', 'distances', 'centerness'), got, want,
                                                (num_classes, 4, 1)):
    assert len(g_levels) == len(w_levels) == 5, name
    for level, (g, w) in enumerate(zip(g_levels, w_levels)):
      w = nchw_to_nhwc(w)
      assert g.shape == w.shape and g.shape[-1] == channels, (name, level, g.shape, w.shape)
      assert relative_error(g, w) <= TOL, (name, level)
  # Strides 8 ... 128 (neck_stride 2), and distances are positive (exp).
  assert [g.shape[1] for g in got[0]] == [-(-hw[0] // (8 * 2**i)) for i in range(5)]
  assert all(float(np.min(d)) > 0 for d in got[1])
  if overrides.get('centerness_on_reg'):  # the flag must matter, or parity proves nothing
    other = hrnet_jax.create_model(arch, **{**overrides, 'centerness_on_reg': False})
    moved = jax.jit(other.apply)(variables, x)[2]
    assert all(relative_error(a, b) > 1e-2 for a, b in zip(moved, got[2]))
