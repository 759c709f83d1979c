"""Layers: normalization (see docs/LAYERS.md)."""
