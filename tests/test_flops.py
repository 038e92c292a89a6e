"""GFLOPs in the papers' convention (conv + linear multiply-adds / 2^30), without running."""

import pytest

import hrnet_jax

PAPER = [('cls_w18', (224, 224), 3.99), ('pose_w32', (256, 192), 7.10),
         ('pose_w48', (256, 192), 14.6), ('pose_w32', (384, 288), 16.0),
         ('pose_w48', (384, 288), 32.9), ('seg_w48', (1024, 2048), 696.2)]


@pytest.mark.parametrize('arch,hw,paper', PAPER)
def test_flops_within_3_percent_of_paper(arch, hw, paper):
  assert abs(hrnet_jax.flops(arch, hw) / paper - 1) < 0.03


def conv(out_hw, cout, k, cin):
  """Multiply-adds of a convolution: every output value x kernel taps (padding included)."""
  return out_hw * out_hw * cout * k * k * cin


def test_flops_of_a_small_hrnet_counted_by_hand():
  """Every convolution of a seg model (width 8 branches 8/16/32/64, one bottleneck of 16
  planes, one module per stage, one basic block per branch) at 64x64, listed from the
  architecture: resolutions 16, 8, 4, 2 after the 4x stem."""
  blocks = lambda hw, c: 2 * conv(hw, c, 3, c)  # a basic block: two 3x3 convs
  stem = conv(32, 64, 3, 3) + conv(16, 64, 3, 64)
  layer1 = conv(16, 16, 1, 64) + conv(16, 16, 3, 16) + conv(16, 64, 1, 16)  # no downsample
  transition1 = conv(16, 8, 3, 64) + conv(8, 16, 3, 64)
  stage2 = blocks(16, 8) + blocks(8, 16)
  fuse2 = conv(8, 8, 1, 16) + conv(8, 16, 3, 8)  # up: 1x1 at the low resolution; down: 3x3 s2
  transition2 = conv(4, 32, 3, 16)
  stage3 = blocks(16, 8) + blocks(8, 16) + blocks(4, 32)
  fuse3 = (conv(8, 8, 1, 16) + conv(4, 8, 1, 32)  # to branch 0
           + conv(8, 16, 3, 8) + conv(4, 16, 1, 32)  # to branch 1
           + conv(8, 8, 3, 8) + conv(4, 32, 3, 8) + conv(4, 32, 3, 16))  # to branch 2
  transition3 = conv(2, 64, 3, 32)
  stage4 = blocks(16, 8) + blocks(8, 16) + blocks(4, 32) + blocks(2, 64)
  fuse4 = (conv(8, 8, 1, 16) + conv(4, 8, 1, 32) + conv(2, 8, 1, 64)
           + conv(8, 16, 3, 8) + conv(4, 16, 1, 32) + conv(2, 16, 1, 64)
           + conv(8, 8, 3, 8) + conv(4, 32, 3, 8) + conv(4, 32, 3, 16) + conv(2, 32, 1, 64)
           + conv(8, 8, 3, 8) + conv(4, 8, 3, 8) + conv(2, 64, 3, 8)
           + conv(4, 16, 3, 16) + conv(2, 64, 3, 16) + conv(2, 64, 3, 32))
  head = conv(16, 120, 1, 120) + conv(16, 19, 1, 120)  # on the 8+16+32+64 concatenation
  total = (stem + layer1 + transition1 + stage2 + fuse2 + transition2 + stage3 + fuse3
           + transition3 + stage4 + fuse4 + head)
  tiny = dict(width=8, stage1_blocks=1, stage1_planes=16, num_modules=(1, 1, 1), num_blocks=1)
  assert hrnet_jax.flops('seg_w18', (64, 64), **tiny) * 2**30 == pytest.approx(total, abs=0.5)
  assert hrnet_jax.flops('seg_w18', (64, 64), batch=3, **tiny) * 2**30 == pytest.approx(
      3 * total, abs=0.5)


def test_xla_convention_is_reported_separately():
  paper = hrnet_jax.flops('cls_w18_small_v1', (64, 64))
  xla = hrnet_jax.flops('cls_w18_small_v1', (64, 64), convention='xla')
  # XLA counts 2 FLOPs per multiply-add (padding taps skipped) in units of 1e9.
  assert 1.5 < xla / (paper * 2**30 / 1e9) < 2.6
  with pytest.raises(ValueError):
    hrnet_jax.flops('cls_w18', (64, 64), convention='other')
