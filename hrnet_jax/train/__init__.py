"""The one trainer: optimizer, mesh and shardings, checkpoints, logging, the loop."""
