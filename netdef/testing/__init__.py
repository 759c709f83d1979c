"""Helpers for testing layers: build one layer from a prototxt snippet, run it, check gradients."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..blob import Blob
from ..layers.base import TEST, TRAIN  # noqa: F401
from .gradcheck import GradientChecker

__all__ = ["make_layer", "make_blobs", "run_forward", "GradientChecker", "TRAIN", "TEST"]


def make_layer(type_name: str, params: str = "", *, phase: int = TEST, dtype=np.float64,
               seed: int = 1701, name: str = "test", init_params: bool = True):
    """Create a layer of ``type_name`` from a prototxt snippet of LayerParameter fields, e.g.
    ``make_layer("Convolution", "convolution_param { num_output: 4 kernel_size: 3 }")``."""
    from google.protobuf import text_format

    from ..layers.registry import get_layer_class
    from ..proto import pb

    lp = pb.LayerParameter()
    text_format.Parse(f'name: "{name}" type: "{type_name}" {params}', lp)
    cls = get_layer_class(type_name)
    if cls is None:
        raise KeyError(f"layer type {type_name!r} is not registered")
    return cls(lp, phase=phase, dtype=dtype, rng=np.random.default_rng(seed),
               init_params=init_params)


def make_blobs(arrays_or_shapes: Sequence, dtype=np.float64, seed: int = 1701,
               names: Sequence[str] | None = None) -> list[Blob]:
    """Blobs from arrays (copied) or shapes (filled with standard-normal values)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, a in enumerate(arrays_or_shapes):
        name = names[i] if names else f"b{i}"
        if isinstance(a, np.ndarray):
            b = Blob(a.shape, dtype=dtype, name=name)
            b.data = np.array(a, dtype=dtype, copy=True)
        else:
            b = Blob(tuple(a), dtype=dtype, name=name)
            b.data = rng.standard_normal(tuple(a))
        out.append(b)
    return out


def run_forward(layer, bottom: Sequence[Blob], ntop: int = 1, dtype=None) -> list[Blob]:
    """Set up ``layer`` with ``ntop`` fresh top blobs, run forward, return the tops."""
    dt = dtype or layer.dtype
    top = [Blob((), dtype=dt, name=f"t{i}") for i in range(ntop)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    return top
