"""The layer contract (Caffe's): setup once, reshape when input shapes change, forward, backward.

Rules every layer follows (see docs/LAYERS.md):

* ``layer_setup(bottom, top)`` validates parameters (raise :meth:`Layer.config_error`, naming
  the field) and creates learnable blobs in ``self.blobs`` with their final shapes; it fills them
  with :meth:`Layer.fill` (a no-op when the net is built for shape inference only).
* ``reshape(bottom, top)`` sets every top's shape from the bottoms' shapes (raise
  :meth:`Layer.shape_error` when they do not fit).  It must not touch ``.data``.
* ``forward(bottom, top)`` writes top data.
* ``backward(top, propagate_down, bottom)`` *overwrites* ``bottom[i].diff`` where
  ``propagate_down[i]`` and *accumulates* (``+=``) into ``self.blobs[j].diff`` where
  ``self.param_propagate_down[j]`` (so iter_size accumulation works).
* ``flops(bottom, top)`` returns forward floating-point operations (a multiply-add counts 2).
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from ..blob import Blob
from ..errors import ConfigError, ShapeError

TRAIN, TEST = 0, 1


class Layer:
    #: the `type:` string; set by @register_layer
    type: ClassVar[str] = ""
    #: blob-count constraints (-1 = unconstrained)
    exact_num_bottom: ClassVar[int] = -1
    min_bottom: ClassVar[int] = -1
    max_bottom: ClassVar[int] = -1
    exact_num_top: ClassVar[int] = -1
    min_top: ClassVar[int] = -1
    max_top: ClassVar[int] = -1
    #: loss layers put loss_weight 1 on top[0] unless the definition says otherwise
    is_loss: ClassVar[bool] = False
    #: True when top[i] may be the same blob as bottom[i] (in-place computation)
    allow_in_place: ClassVar[bool] = False
    #: data layers get their top shapes from a source or from --input-shape
    is_data: ClassVar[bool] = False
    #: which backends have kernels for this type (``netdef layers``); each class with a CUDA
    #: implementation (netdef.backend.cuda.dispatch) says ``has_cuda = True``
    has_cpu: ClassVar[bool] = True
    has_cuda: ClassVar[bool] = False

    def __init__(self, param, phase: int = TEST, dtype=np.float32,
                 rng: np.random.Generator | None = None, init_params: bool = True):
        self.param = param                       # netdef.proto LayerParameter
        self.name: str = param.name
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.rng = rng if rng is not None else np.random.default_rng(1701)
        self.init_params = init_params
        self.blobs: list[Blob] = []
        self.param_propagate_down: list[bool] = []
        self.loss_weights: list[float] = []
        #: shapes forced by the user (--input-shape) for data layers: top name -> shape
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        #: directory of the definition file (relative data paths are resolved by the caller)
        self.base_dir: str | None = None

    # -- errors ----------------------------------------------------------------------------
    def config_error(self, message: str, field: str | None = None) -> ConfigError:
        """Return (for ``raise``) an error about this layer's parameters."""
        return ConfigError(message, layer=self.name, layer_type=self.type, field=field)

    def shape_error(self, message: str) -> ShapeError:
        return ShapeError(message, layer=self.name, layer_type=self.type)

    # -- setup -----------------------------------------------------------------------------
    def setup(self, bottom: Sequence[Blob], top: Sequence[Blob]) -> None:
        self.check_blob_counts(bottom, top)
        self.layer_setup(bottom, top)
        self.reshape(bottom, top)
        self.set_loss_weights(top)
        if len(self.param_propagate_down) != len(self.blobs):
            self.param_propagate_down = [True] * len(self.blobs)

    def check_blob_counts(self, bottom, top) -> None:
        nb, nt = len(bottom), len(top)

        def plural(n, what):
            return f"{n} {what}" + ("" if n == 1 else "s")

        if self.exact_num_bottom >= 0 and nb != self.exact_num_bottom:
            raise self.config_error(f"takes {plural(self.exact_num_bottom, 'bottom')}, got {nb}")
        if self.min_bottom >= 0 and nb < self.min_bottom:
            raise self.config_error(f"takes at least {plural(self.min_bottom, 'bottom')}, got {nb}")
        if self.max_bottom >= 0 and nb > self.max_bottom:
            raise self.config_error(f"takes at most {plural(self.max_bottom, 'bottom')}, got {nb}")
        if self.exact_num_top >= 0 and nt != self.exact_num_top:
            raise self.config_error(f"produces {plural(self.exact_num_top, 'top')}, got {nt}")
        if self.min_top >= 0 and nt < self.min_top:
            raise self.config_error(f"produces at least {plural(self.min_top, 'top')}, got {nt}")
        if self.max_top >= 0 and nt > self.max_top:
            raise self.config_error(f"produces at most {plural(self.max_top, 'top')}, got {nt}")

    def set_loss_weights(self, top) -> None:
        lw = list(self.param.loss_weight)
        if lw:
            if len(lw) != len(top):
                raise self.config_error(
                    f"loss_weight must be unspecified or given once per top "
                    f"({len(top)} tops, {len(lw)} loss_weight values)", field="loss_weight")
            self.loss_weights = [float(w) for w in lw]
        else:
            self.loss_weights = [0.0] * len(top)
            if self.is_loss and top:
                self.loss_weights[0] = 1.0

    def layer_setup(self, bottom, top) -> None:
        pass

    def reshape(self, bottom, top) -> None:
        raise NotImplementedError(f"{type(self).__name__}.reshape")

    def forward(self, bottom, top) -> None:
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, top, propagate_down, bottom) -> None:
        """Default: no gradient (data layers, Accuracy, ArgMax...)."""
        return None

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Whether force_backward may request a gradient for this bottom (labels: no)."""
        return True

    def flops(self, bottom, top) -> int:
        return 0

    # -- helpers for layer authors ---------------------------------------------------------
    def make_blob(self, shape, name: str = "") -> Blob:
        return Blob(shape, dtype=self.dtype, name=name or f"{self.name}[{len(self.blobs)}]")

    def fill(self, blob: Blob, filler_param=None, *, default: dict | None = None) -> None:
        """Fill ``blob`` with the filler ``filler_param`` (a FillerParameter), or ``default``
        (FillerParameter fields as a dict, e.g. ``{"type": "constant", "value": 1}``) when
        the definition did not set one.  No-op for shape-only nets."""
        if not self.init_params:
            return
        from ..fillers import fill_blob
        fill_blob(blob, filler_param, self.rng, default=default, layer=self)


def canonical_axis(layer: Layer, axis: int, num_axes: int, field: str) -> int:
    """Caffe's CanonicalAxisIndex with a config error naming ``field`` when out of range."""
    if not -num_axes <= axis < num_axes:
        raise layer.config_error(f"{field} {axis} is out of range for a {num_axes}-axis bottom",
                                 field=field)
    return axis + num_axes if axis < 0 else axis
