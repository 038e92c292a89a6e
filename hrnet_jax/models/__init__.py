"""Flax modules of HRNet: layers, the backbone, heads and the zoo."""
