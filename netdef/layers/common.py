"""Layers: common (see docs/LAYERS.md)."""
