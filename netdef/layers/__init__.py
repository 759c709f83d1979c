"""Layer classes; ``get_layer_class(type)`` finds one by its `type:` string."""
from .base import Layer, TRAIN, TEST
from .registry import register_layer, get_layer_class, layer_types

__all__ = ["Layer", "TRAIN", "TEST", "register_layer", "get_layer_class", "layer_types"]
