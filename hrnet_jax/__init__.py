"""hrnet-jax: HRNet in JAX/Flax, compatible with the official PyTorch weights."""

from hrnet_jax.flops import flops
from hrnet_jax.models.zoo import create_model, list_models, model_config, num_params

__all__ = ['create_model', 'list_models', 'model_config', 'num_params', 'flops']
__version__ = '0.1.0'
