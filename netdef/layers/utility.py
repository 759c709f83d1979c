"""Layers: utility (see docs/LAYERS.md)."""
