"""The rest of Caffe's catalogue: SPP (spatial pyramid pooling), Filter, BatchReindex and
Parameter, with Caffe's semantics.

* SPP runs one Pooling per pyramid level (the same kernels as the Pooling layer, STOCHASTIC
  included) and concatenates the flattened outputs; the level parameters are Caffe's
  (``GetPoolingParam``), recomputed when the input size changes.
* Filter's output size depends on the selector's *values* (like Caffe, which reads them in
  Reshape): set-up gives the full batch, every forward reshapes the tops to the selected items
  (the net re-runs the following layers' reshape, see ``dynamic_top_shapes``).
"""
from __future__ import annotations

import numpy as np

from ..blob import Blob
from .base import Layer
from .registry import register_layer

# --------------------------------------------------------------------------------------------
# SPP

def spp_level_params(level: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(kernel_h, kernel_w, pad_h, pad_w) of pyramid level ``level`` (2^level bins per side)
    for an h x w input, as Caffe's SPPLayer::GetPoolingParam (the stride equals the kernel)."""
    bins = 2 ** level
    kh = -(-h // bins)
    kw = -(-w // bins)
    ph = (kh * bins - h + 1) // 2
    pw = (kw * bins - w + 1) // 2
    return kh, kw, ph, pw


@register_layer("SPP", "spp_param")
class SPPLayer(Layer):
    """Spatial pyramid pooling: level l pools the (N, C, H, W) bottom into 2^l x 2^l bins
    (kernel ceil(H / 2^l), stride = kernel, pad (kernel * 2^l - H + 1) // 2), flattens and
    concatenates the levels: top (N, C * sum_l 4^l).  With pyramid_height 1 the top is the
    single pooling output (N, C, 1, 1), as in Caffe.  pool MAX / AVE / STOCHASTIC."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.spp_param
        if not p.HasField("pyramid_height") or p.pyramid_height < 1:
            raise self.config_error("pyramid_height must be set to the number of pyramid "
                                    "levels (at least 1)", field="spp_param.pyramid_height")
        self.height = int(p.pyramid_height)
        self.pool = int(p.pool)
        self._size = None
        self._levels: list = []

    def _check(self, bottom):
        x = bottom[0]
        if x.num_axes != 4:
            raise self.shape_error(f"bottom must be 4-D (N, C, H, W), got {list(x.shape)}")
        if x.shape[2] <= 0 or x.shape[3] <= 0:
            raise self.shape_error(f"input height and width must be positive, got "
                                   f"{list(x.shape)}")

    def _build_levels(self, h, w):
        from ..proto import pb
        from .vision import PoolingLayer

        levels = []
        for lv in range(self.height):
            kh, kw, ph, pw = spp_level_params(lv, h, w)
            if (ph or pw) and (ph >= kh or pw >= kw):
                raise self.shape_error(
                    f"a {h}x{w} input is too small for pyramid level {lv} ({2 ** lv}x{2 ** lv} "
                    f"bins): the pooling pad {ph}x{pw} would not be smaller than the kernel "
                    f"{kh}x{kw} (Caffe rejects it too); lower pyramid_height or enlarge the "
                    f"input")
            lp = pb.LayerParameter(name=f"{self.name}_pool{lv}", type="Pooling")
            pp = lp.pooling_param
            pp.pool = self.pool
            pp.kernel_h, pp.kernel_w = kh, kw
            pp.stride_h, pp.stride_w = kh, kw
            pp.pad_h, pp.pad_w = ph, pw
            layer = PoolingLayer(lp, phase=self.phase, dtype=self.dtype, rng=self.rng,
                                 init_params=self.init_params)
            levels.append(layer)
        return levels

    def reshape(self, bottom, top):
        self._check(bottom)
        n, _, h, w = bottom[0].shape
        if self._size != (h, w):
            self._levels = self._build_levels(h, w)
            self._size = (h, w)
            self._tops = [Blob((), dtype=self.dtype, name=f"{self.name}_pool{i}")
                          for i in range(self.height)]
            for layer, t in zip(self._levels, self._tops):
                layer.setup(bottom, [t])
        else:
            for layer, t in zip(self._levels, self._tops):
                layer.reshape(bottom, [t])
        if self.height == 1:
            top[0].reshape(self._tops[0].shape)
        else:
            top[0].reshape((n, sum(t.count // n if n else 0 for t in self._tops)))
            self._widths = [int(np.prod(t.shape[1:])) for t in self._tops]

    def flops(self, bottom, top):
        return sum(layer.flops(bottom, [t]) for layer, t in zip(self._levels, self._tops))

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        y = top[0].data.reshape(n, -1)
        off = 0
        for layer, t in zip(self._levels, self._tops):
            layer.rng = self.rng
            layer.phase = self.phase
            layer.forward(bottom, [t])
            k = int(np.prod(t.shape[1:]))
            y[:, off:off + k] = t.data.reshape(n, k)
            off += k

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dy = top[0].diff.reshape(n, -1)
        proxy = Blob(bottom[0].shape, dtype=self.dtype, name=f"{self.name}_bottom")
        proxy.share_data(bottom[0])
        dx = bottom[0].diff
        dx[...] = 0
        off = 0
        for layer, t in zip(self._levels, self._tops):
            k = int(np.prod(t.shape[1:]))
            t.diff[...] = dy[:, off:off + k].reshape(t.shape)
            off += k
            layer.backward([t], [True], [proxy])
            dx += proxy.diff


# --------------------------------------------------------------------------------------------
# Filter

@register_layer("Filter", None)
class FilterLayer(Layer):
    """Keep the items (axis 0) of bottoms 0..K-1 whose selector (the last bottom, shape (N) or
    (N, 1, ...)) is nonzero; one top per filtered bottom.  Set-up shapes the tops with the full
    batch (Caffe's first reshape); each forward reshapes them to the selected items.  Backward
    puts the top diffs back at the selected items and zeros elsewhere; the selector gets no
    gradient."""
    min_bottom = 2
    min_top = 1
    #: the tops' shapes depend on the selector's values: the net reshapes the layers after it
    dynamic_top_shapes = True

    def layer_setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.config_error(f"needs one top per filtered bottom: {len(bottom) - 1} "
                                    f"bottoms before the selector, {len(top)} tops")
        self._first = True
        self._index = None
        self._nbottom = len(bottom)

    def allow_force_backward(self, bottom_index):
        n = getattr(self, "_nbottom", len(self.param.bottom))
        return bottom_index != n - 1

    def _check(self, bottom):
        sel = bottom[-1]
        if sel.num_axes < 1 or any(d != 1 for d in sel.shape[1:]):
            raise self.shape_error(f"the selector (last bottom) must be (N) or (N, 1, ...): "
                                   f"all axes but the first singletons, got {list(sel.shape)}")
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes < 1 or b.shape[0] != sel.shape[0]:
                raise self.shape_error(f"bottom[{i}] {list(b.shape)} must have the selector's "
                                       f"first dimension {sel.shape[0]}")

    def _selected(self, bottom):
        return np.flatnonzero(bottom[-1].data.reshape(-1))

    def reshape(self, bottom, top):
        self._check(bottom)
        if self._first:
            num = bottom[0].shape[0]
            self._first = False
        else:
            self._index = self._selected(bottom)
            num = len(self._index)
        for t, b in zip(top, bottom):
            t.reshape((num,) + tuple(b.shape[1:]))

    def forward(self, bottom, top):
        self._index = idx = self._selected(bottom)
        for t, b in zip(top, bottom):
            t.reshape((len(idx),) + tuple(b.shape[1:]))
            np.take(b.data, idx, axis=0, out=t.data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise self.config_error("cannot backpropagate to the selector (last bottom): set "
                                    "propagate_down: false for it", field="propagate_down")
        idx = self._index if self._index is not None else self._selected(bottom)
        for i, (t, b) in enumerate(zip(top, bottom)):
            if not propagate_down[i]:
                continue
            d = b.diff
            d[...] = 0
            d[idx] = t.diff


# --------------------------------------------------------------------------------------------
# BatchReindex

@register_layer("BatchReindex", None)
class BatchReindexLayer(Layer):
    """``top[i] = bottom[0][index[i]]``: gather items along axis 0 by the index blob bottom[1]
    (1-D, integer values stored as floats; repeats allowed).  Backward adds the top diffs back
    into the gathered items; the indices get no gradient."""
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise self.shape_error(f"bottom[1] (the indices) must be 1-D, got "
                                   f"{list(bottom[1].shape)}")
        if bottom[0].num_axes < 1:
            raise self.shape_error("bottom[0] must have at least one axis")
        top[0].reshape((bottom[1].shape[0],) + tuple(bottom[0].shape[1:]))

    def _indices(self, bottom):
        v = bottom[1].data
        ii = v.astype(np.int64)
        n = bottom[0].shape[0]
        bad = (ii != v) | (ii < 0) | (ii >= n)
        if np.any(bad):
            raise self.shape_error(f"index {v[np.argmax(bad)]:g} is not an integer in "
                                   f"[0, {n}) (bottom[0] has {n} items)")
        return ii

    def forward(self, bottom, top):
        self._ii = ii = self._indices(bottom)
        np.take(bottom[0].data, ii, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.config_error("cannot backpropagate to the indices (bottom[1])",
                                    field="propagate_down")
        if not propagate_down[0]:
            return
        d = bottom[0].diff
        d[...] = 0
        np.add.at(d, self._ii, top[0].diff)


# --------------------------------------------------------------------------------------------
# Parameter

@register_layer("Parameter", "parameter_param")
class ParameterLayer(Layer):
    """Exposes one learned blob of shape ``parameter_param.shape`` as its top (no bottoms), so
    other layers can use a learned tensor; the blob starts at 0 (Caffe does not fill it) and
    can be shared by name through ``param { name: ... }``."""
    exact_num_bottom = 0
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.parameter_param
        if not p.HasField("shape"):
            raise self.config_error("shape must be given (the learned blob's dimensions)",
                                    field="parameter_param.shape")
        shape = tuple(int(d) for d in p.shape.dim)
        if any(d < 0 for d in shape):
            raise self.config_error(f"shape {list(shape)} has a negative dimension",
                                    field="parameter_param.shape")
        if not self.blobs:
            self.blobs = [self.make_blob(shape)]

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])

    def forward(self, bottom, top):
        if top[0]._data_src is not self.blobs[0]:        # re-share after a reshape
            top[0].share_data(self.blobs[0])

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].diff += top[0].diff
