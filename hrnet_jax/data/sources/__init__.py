"""Dataset readers. Each is a random-access source: `len(src)` and `src[i]` -> dict of numpy
arrays (`image` HxWx3 uint8 RGB, `label` HxW uint8 with 255 = ignore), and nothing else, so that
grain workers can index them in any order."""

from hrnet_jax.data.sources.common import DataError, read_image, read_label

__all__ = ['DataError', 'read_image', 'read_label']
