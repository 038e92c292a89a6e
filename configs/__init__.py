"""Training recipes: one file per recipe with `get_config()`; variants import their base."""
