"""Layers: vision (see docs/LAYERS.md)."""
