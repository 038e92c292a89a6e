"""Training recipes: one file per recipe with `get_config(arg)`, built on common.base_config."""
