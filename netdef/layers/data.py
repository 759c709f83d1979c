"""Layers: data (see docs/LAYERS.md)."""
