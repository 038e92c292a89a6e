"""GFLOPs in the papers' convention (conv + linear multiply-adds / 2^30), without running."""

import pytest

import hrnet_jax

PAPER = [('cls_w18', (224, 224), 3.99), ('pose_w32', (256, 192), 7.10),
         ('pose_w48', (256, 192), 14.6), ('pose_w32', (384, 288), 16.0),
         ('pose_w48', (384, 288), 32.9), ('seg_w48', (1024, 2048), 696.2)]


@pytest.mark.parametrize('arch,hw,paper', PAPER)
def test_flops_within_3_percent_of_paper(arch, hw, paper):
  assert abs(hrnet_jax.flops(arch, hw) / paper - 1) < 0.03


def test_flops_counts_a_conv_by_hand():
  # cls_w18_small_v1 at 32x32, batch 2 vs 1: the count is linear in the batch.
  one = hrnet_jax.flops('cls_w18_small_v1', (64, 64))
  two = hrnet_jax.flops('cls_w18_small_v1', (64, 64), batch=2)
  assert two == pytest.approx(2 * one)
  # The stem's first conv alone, worked by hand: 32*32 outputs x 64 filters x 27 taps.
  stem = 32 * 32 * 64 * 3 * 3 * 3 / 2**30
  assert one > stem


def test_xla_convention_is_reported_separately():
  paper = hrnet_jax.flops('cls_w18_small_v1', (64, 64))
  xla = hrnet_jax.flops('cls_w18_small_v1', (64, 64), convention='xla')
  # XLA counts 2 FLOPs per multiply-add (padding taps skipped) in units of 1e9.
  assert 1.5 < xla / (paper * 2**30 / 1e9) < 2.6
  with pytest.raises(ValueError):
    hrnet_jax.flops('cls_w18', (64, 64), convention='other')
