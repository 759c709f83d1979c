"""Imports every layer module so that their @register_layer decorators run."""
from . import data, vision, neuron, normalization, common, utility, loss  # noqa: F401
from . import recurrent, python_layer  # noqa: F401
