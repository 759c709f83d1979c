"""Layers: loss (see docs/LAYERS.md)."""
