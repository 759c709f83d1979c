"""The CUDA implementation of each layer type: the table built from the family modules'
:class:`~.primitives.Impl` classes (``@impl("Type")``), and the lookup a device net uses.

Importing this imports numba.cuda (through the family modules); the list of types alone,
without it, is each layer class's ``has_cuda`` (netdef.layers), which a test keeps equal to
this table."""
from __future__ import annotations

from . import common, loss, neuron, normalization, recurrent, utility, vision
from .primitives import Impl

FAMILIES = (vision, neuron, normalization, common, utility, loss, recurrent)


def _table() -> dict:
    table: dict[str, Impl] = {}
    for mod in FAMILIES:
        for cls in vars(mod).values():
            if isinstance(cls, type) and issubclass(cls, Impl) and "types" in cls.__dict__ \
                    and cls.__module__ == mod.__name__:
                for t in cls.types:
                    if t in table:
                        raise RuntimeError(f"two CUDA implementations of {t}: "
                                           f"{type(table[t]).__qualname__} and "
                                           f"{cls.__qualname__}")
                    table[t] = cls()
    return table


#: layer type -> its implementation (one instance per type)
TABLE: dict[str, Impl] = _table()


def impl_for(layer):
    """The CUDA impl for ``layer``, or None when it runs on the CPU."""
    imp = TABLE.get(layer.type)
    if imp is None or not imp.supports(layer):
        return None
    return imp
