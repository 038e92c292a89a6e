"""Conversion between official PyTorch HRNet checkpoints and Flax variables.

  variables = torch_to_flax('pose_hrnet_w32_256x192.pth', 'pose_w32')
  state_dict = flax_to_torch(variables, 'pose_w32')   # official keys, official order

CLI: `python -m hrnet_jax.convert SRC DST [--arch ARCH] [--num-classes N] [--verify]`.
"""

from hrnet_jax.convert.core import Report, flax_to_torch, normalize_state_dict, torch_to_flax
from hrnet_jax.convert.files import (read_torch_file, read_variables, write_torch_file,
                                     write_variables)
from hrnet_jax.convert.mapping import infer_arch, torch_keys_and_shapes
from hrnet_jax.errors import ConversionError

__all__ = [
    'ConversionError', 'Report', 'flax_to_torch', 'torch_to_flax', 'normalize_state_dict',
    'infer_arch', 'torch_keys_and_shapes', 'read_torch_file', 'write_torch_file',
    'read_variables', 'write_variables'
]
