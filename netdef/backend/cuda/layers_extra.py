"""CUDA implementations of the rest of the core layer catalogue (registered into
:data:`netdef.backend.cuda.layers.TABLE` when that module is imported): Deconvolution, Im2col,
STOCHASTIC pooling, LRN within a channel, PReLU, Power, Exp, Log, Swish, Scale, Bias, Embed,
MVN, Reduction, ArgMax, Crop, Tile, BatchReindex, Filter, Parameter, SPP, the losses other than
SoftmaxWithLoss (Euclidean, SigmoidCrossEntropy, Hinge, MultinomialLogistic, Infogain,
Contrastive), LSTMUnit, and RNN / LSTM (step by step: one GEMM per step plus elementwise
kernels).

Conventions as in :mod:`netdef.backend.cuda.layers`: the layer object's configuration comes from
its CPU ``layer_setup``/``reshape``; forward/backward read and write the blobs' device mirrors.
Values that decide *shapes* or validity (labels and indices, a Filter's selector) are read on
the host (``cpu_data()``, which leaves the blob's device copy current); random numbers come from
the layer's own generator on the host (STOCHASTIC pooling in TRAIN, like Dropout), so the device
picks exactly what the CPU picks.
"""
from __future__ import annotations

import numpy as np

from . import kernels as K
from . import kernels_extra as X
from .gemm import gemm
from .layers import (
    TABLE,
    Impl,
    _checked_labels,
    _chunk,
    conv_backward,
    impl,
    scratch,
    state,
)
from .memory import count_h2d, to_device


def _upload(layer, name, arr):
    """A per-layer device copy of a small host array (counted as a host->device copy)."""
    arr = np.ascontiguousarray(arr).reshape(-1)
    d = state(layer, name, arr.size, arr.dtype)
    if arr.size:
        d.copy_to_device(arr)
    count_h2d(arr.nbytes)
    return d


def _labels(layer, blob, c):
    """Class labels checked on a host copy (the blob's device copy stays current)."""
    from ...layers.loss import class_labels
    return class_labels(layer, _RO(blob), c)


class _RO:
    """A read-only stand-in for a blob (``.data`` is a host copy) for CPU validation code."""

    def __init__(self, blob):
        self.name = blob.name
        self.data = blob.cpu_data()
        self.shape = blob.shape


# -- parametric neurons -------------------------------------------------------------------------
class _Neuron2(Impl):
    """Elementwise layers computed by kernels_extra.neuron2_*; keeps the input of an in-place
    layer that needs it (like the CPU layer)."""
    op = 0

    def params(self, layer):
        return 0.0, 0.0, 0.0, 0.0

    def aux(self, layer, n, dtype):
        return None

    def forward(self, layer, bottom, top):
        n = bottom[0].count
        x = bottom[0].gpu_data()
        if top[0] is bottom[0] and layer.needs_input():
            keep = state(layer, "x", n, x.dtype)
            K.copy(keep, x, n)
        y = top[0].mutable_gpu_data()
        X.neuron2_forward(self.op, x, y, n, self.aux(layer, n, x.dtype), *self.params(layer))

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        if top[0] is bottom[0] and layer.needs_input():
            x = layer._cu_x
        else:
            x = bottom[0].gpu_data()
        y = top[0].gpu_data()
        aux = self.aux(layer, n, y.dtype)
        X.neuron2_backward(self.op, x, y, top[0].gpu_diff(), bottom[0].mutable_gpu_diff(), n,
                           aux, *self.params(layer))


@impl("Power")
class Power(_Neuron2):
    op = X.POWER

    def params(self, layer):
        return layer.power, layer.scale, layer.shift, layer.diff_scale

    def forward(self, layer, bottom, top):
        if layer.diff_scale == 0:
            with np.errstate(all="ignore"):
                value = 1.0 if layer.power == 0 else \
                    float(np.power(np.float64(layer.shift), layer.power))
            K.fill(top[0].mutable_gpu_data(), value, top[0].count)
            return
        super().forward(layer, bottom, top)

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0] and layer.diff_scale == 0:
            K.fill(bottom[0].mutable_gpu_diff(), 0.0, bottom[0].count)
            return
        super().backward(layer, top, propagate_down, bottom)


@impl("Exp")
class Exp(_Neuron2):
    op = X.EXP

    def params(self, layer):
        return layer.inner_scale, layer.outer_scale, 0.0, 0.0


@impl("Log")
class Log(_Neuron2):
    op = X.LOG

    def params(self, layer):
        return layer.scale, layer.shift, layer.base_scale, layer.backward_scale


@impl("Swish")
class Swish(_Neuron2):
    op = X.SWISH

    def params(self, layer):
        return layer.beta, 0.0, 0.0, 0.0

    def aux(self, layer, n, dtype):
        return state(layer, "sig", n, dtype)


@impl("PReLU")
class PReLU(Impl):
    @staticmethod
    def _dims(layer, blob):
        n = blob.shape[0]
        c = 1 if layer.channel_shared else blob.shape[1]
        rows = n if layer.channel_shared else n * c
        return c, (blob.count // rows if rows else 0), n

    def forward(self, layer, bottom, top):
        n = bottom[0].count
        x = bottom[0].gpu_data()
        if top[0] is bottom[0]:
            K.copy(state(layer, "x", n, x.dtype), x, n)
        c, inner, _ = self._dims(layer, bottom[0])
        X.prelu_forward(x, layer.blobs[0].gpu_data(), c, inner, top[0].mutable_gpu_data(), n)

    def backward(self, layer, top, propagate_down, bottom):
        do_x = bool(propagate_down[0])
        do_s = bool(layer.param_propagate_down and layer.param_propagate_down[0])
        if not (do_x or do_s):
            return
        n = bottom[0].count
        x = layer._cu_x if top[0] is bottom[0] else bottom[0].gpu_data()
        c, inner, nb = self._dims(layer, bottom[0])
        dy = top[0].gpu_diff()
        prod = scratch("prelu", n, np.float64) if do_s else None
        dx = bottom[0].mutable_gpu_diff() if do_x else None
        X.prelu_backward(x, layer.blobs[0].gpu_data(), c, inner, dy, dx, prod, n, do_x, do_s)
        if do_s:
            K.seg_reduce(prod, nb, c, inner, layer.blobs[0].mutable_gpu_diff(), K.SUM, 1.0, 1.0)


# -- Scale / Bias -------------------------------------------------------------------------------------
@impl("Scale")
class Scale(Impl):
    def forward(self, layer, bottom, top):
        _, d, i = layer._dims(bottom[0].shape)
        n = bottom[0].count
        x = bottom[0].gpu_data()
        if top[0] is bottom[0] and layer._needs_input(bottom):
            K.copy(state(layer, "x", n, x.dtype), x, n)
        s = bottom[1].gpu_data() if len(bottom) == 2 else layer.blobs[0].gpu_data()
        b = layer.blobs[-1].gpu_data() if layer.bias_term else None
        X.bcast(x, top[0].mutable_gpu_data(), n, d, i, s=s, b=b)

    def backward(self, layer, top, propagate_down, bottom):
        o, d, i = layer._dims(bottom[0].shape)
        n = bottom[0].count
        dy = top[0].gpu_diff()
        learned = len(bottom) == 1
        if layer.bias_term and layer.param_propagate_down[-1]:
            K.seg_reduce(dy, o, d, i, layer.blobs[-1].mutable_gpu_diff(), K.SUM, 1.0, 1.0)
        want_s = layer.param_propagate_down[0] if learned else propagate_down[1]
        if want_s:
            x = layer._cu_x if top[0] is bottom[0] else bottom[0].gpu_data()
            if learned:
                K.seg_reduce(dy, o, d, i, layer.blobs[0].mutable_gpu_diff(), K.DOT, 1.0, 1.0,
                             x2=x)
            else:
                K.seg_reduce(dy, o, d, i, bottom[1].mutable_gpu_diff(), K.DOT, 1.0, 0.0, x2=x)
        if propagate_down[0]:
            s = bottom[1].gpu_data() if len(bottom) == 2 else layer.blobs[0].gpu_data()
            X.bcast(dy, bottom[0].mutable_gpu_diff(), n, d, i, s=s)


@impl("Bias")
class Bias(Impl):
    def forward(self, layer, bottom, top):
        _, d, i = layer._dims(bottom[0].shape)
        b = bottom[1].gpu_data() if len(bottom) == 2 else layer.blobs[0].gpu_data()
        X.bcast(bottom[0].gpu_data(), top[0].mutable_gpu_data(), bottom[0].count, d, i, b=b)

    def backward(self, layer, top, propagate_down, bottom):
        o, d, i = layer._dims(bottom[0].shape)
        dy = top[0].gpu_diff()
        if len(bottom) == 1:
            if layer.param_propagate_down[0]:
                K.seg_reduce(dy, o, d, i, layer.blobs[0].mutable_gpu_diff(), K.SUM, 1.0, 1.0)
        elif propagate_down[1]:
            K.seg_reduce(dy, o, d, i, bottom[1].mutable_gpu_diff(), K.SUM, 1.0, 0.0)
        if propagate_down[0] and top[0] is not bottom[0]:
            K.copy(bottom[0].mutable_gpu_diff(), dy, bottom[0].count)


# -- Embed ---------------------------------------------------------------------------------------------
@impl("Embed")
class Embed(Impl):
    def forward(self, layer, bottom, top):
        layer._index = layer._indices([_RO(bottom[0])])       # validated on the host
        m = bottom[0].count
        b = layer.blobs[1].gpu_data() if layer.bias_term else None
        X.embed_forward(bottom[0].gpu_data(), m, layer.num_output, layer.blobs[0].gpu_data(), b,
                        top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        m, no = bottom[0].count, layer.num_output
        dy = top[0].gpu_diff()
        if layer.param_propagate_down[0]:
            X.embed_backward(bottom[0].gpu_data(), m, no, dy, layer.blobs[0].mutable_gpu_diff())
        if layer.bias_term and layer.param_propagate_down[1]:
            K.seg_reduce(dy, m, no, 1, layer.blobs[1].mutable_gpu_diff(), K.SUM, 1.0, 1.0)


# -- MVN ---------------------------------------------------------------------------------------------
@impl("MVN")
class MVN(Impl):
    @staticmethod
    def _rows(layer, blob):
        s = blob.shape
        n = s[0]
        rows = n if layer.across or len(s) < 2 else n * s[1]
        return rows, (blob.count // rows if rows else 0)

    def forward(self, layer, bottom, top):
        rows, dim = self._rows(layer, bottom[0])
        n = bottom[0].count
        x = bottom[0].gpu_data()
        mean = state(layer, "mean", rows, np.float64)
        X.row_reduce(x, rows, dim, mean, K.SUM, 1.0 / max(dim, 1))
        sigma = None
        if layer.normalize_variance:
            cen = scratch("mvn", n, np.float64)
            X.center(x, mean, dim, cen, n)
            sigma = state(layer, "sigma", rows, np.float64)
            X.row_reduce(cen, rows, dim, sigma, K.SUMSQ, 1.0 / max(dim, 1))
            X.sqrt_inplace(sigma, rows)
        X.mvn_normalize(x, mean, sigma, layer.eps, dim, top[0].mutable_gpu_data(), n)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        rows, dim = self._rows(layer, bottom[0])
        n = bottom[0].count
        dy = top[0].gpu_diff()
        inv = 1.0 / max(dim, 1)
        mdy = state(layer, "mdy", rows, np.float64)
        X.row_reduce(dy, rows, dim, mdy, K.SUM, inv)
        if not layer.normalize_variance:
            X.mvn_backward(dy, None, mdy, None, None, 0.0, dim, bottom[0].mutable_gpu_diff(), n)
            return
        # y recomputed from the bottom (a later in-place layer may have changed the top)
        y = scratch("mvn", n, np.float64)
        X.mvn_normalize(bottom[0].gpu_data(), layer._cu_mean, layer._cu_sigma, layer.eps, dim,
                        y, n)
        mdyy = state(layer, "mdyy", rows, np.float64)
        X.row_reduce(dy, rows, dim, mdyy, K.DOT, inv, x2=y)
        X.mvn_backward(dy, y, mdy, mdyy, layer._cu_sigma, layer.eps, dim,
                       bottom[0].mutable_gpu_diff(), n)


# -- Reduction / ArgMax / Crop / Tile -------------------------------------------------------------------
@impl("Reduction")
class Reduction(Impl):
    def forward(self, layer, bottom, top):
        p = layer.param.reduction_param
        mode = {p.ASUM: K.ASUM, p.SUMSQ: K.SUMSQ}.get(layer.op, K.SUM)
        X.row_reduce(bottom[0].gpu_data(), layer.num, layer.dim, top[0].mutable_gpu_data(), mode,
                     layer._coeff())

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = layer.param.reduction_param
        op = {p.ASUM: 1, p.SUMSQ: 2}.get(layer.op, 0)
        X.reduction_backward(op, bottom[0].gpu_data(), top[0].gpu_diff(), layer._coeff(),
                             max(layer.dim, 1), bottom[0].mutable_gpu_diff(), bottom[0].count)


@impl("ArgMax")
class ArgMax(Impl):
    def forward(self, layer, bottom, top):
        outer, dim, inner = layer.view
        X.argmax(bottom[0].gpu_data(), outer, dim, inner, layer.k,
                 bool(layer.param.argmax_param.out_max_val), layer.axis is not None,
                 top[0].mutable_gpu_data())


@impl("Crop")
class Crop(Impl):
    def _meta(self, layer, bottom, top):
        s0 = bottom[0].shape
        nd = len(s0)
        key = (tuple(s0), tuple(top[0].shape), tuple((sl.start or 0) for sl in layer.slices))
        if layer.__dict__.get("_cu_crop_key") != key:
            strides = [int(np.prod(s0[a + 1:], dtype=np.int64)) for a in range(nd)]
            meta = np.array(list(top[0].shape) + list(key[2]) + strides, dtype=np.int64)
            _upload(layer, "crop_meta", meta)
            layer._cu_crop_key = key
        return layer._cu_crop_meta, nd

    def forward(self, layer, bottom, top):
        meta, nd = self._meta(layer, bottom, top)
        X.crop(meta, nd, bottom[0].gpu_data(), top[0].mutable_gpu_data(), top[0].count, True)

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0]:
            meta, nd = self._meta(layer, bottom, top)
            dx = bottom[0].mutable_gpu_diff()
            K.fill(dx, 0.0, bottom[0].count)
            X.crop(meta, nd, dx, top[0].gpu_diff(), top[0].count, False)
        if propagate_down[1]:
            K.fill(bottom[1].mutable_gpu_diff(), 0.0, bottom[1].count)


@impl("Tile")
class Tile(Impl):
    def forward(self, layer, bottom, top):
        X.tile_forward(bottom[0].gpu_data(), layer.outer, layer.tiles, layer.inner,
                       top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0]:
            X.tile_backward(top[0].gpu_diff(), layer.outer, layer.tiles, layer.inner,
                            bottom[0].mutable_gpu_diff())


# -- gathers: BatchReindex, Filter; Parameter -------------------------------------------------------------
@impl("BatchReindex")
class BatchReindex(Impl):
    def forward(self, layer, bottom, top):
        layer._ii = layer._indices([bottom[0], _RO(bottom[1])])      # validated on the host
        m = bottom[1].count
        inner = bottom[0].count // max(bottom[0].shape[0], 1)
        X.gather_rows(bottom[0].gpu_data(), bottom[1].gpu_data(), m, inner,
                      top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[1]:
            layer.backward(top, propagate_down, bottom)     # raises: indices get no gradient
        if not propagate_down[0]:
            return
        nb = bottom[0].shape[0]
        inner = bottom[0].count // max(nb, 1)
        X.scatter_rows_sum(top[0].gpu_diff(), bottom[1].gpu_data(), bottom[1].count, nb, inner,
                           bottom[0].mutable_gpu_diff())


@impl("Filter")
class Filter(Impl):
    """The selector is read on the host (it decides the tops' shapes, as in Caffe); the
    selected item indices go to the device (one small host->device copy per forward)."""

    def forward(self, layer, bottom, top):
        idx = np.flatnonzero(bottom[-1].cpu_data().reshape(-1))
        layer._index = idx
        didx = _upload(layer, "filter_idx", idx.astype(np.int64))
        for t, b in zip(top, bottom):
            t.reshape((len(idx),) + tuple(b.shape[1:]))
            inner = b.count // max(b.shape[0], 1)
            X.gather_rows(b.gpu_data(), didx, len(idx), inner, t.mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[-1]:
            layer.backward(top, propagate_down, bottom)     # raises: the selector
        idx = layer._index
        didx = layer._cu_filter_idx
        for i, (t, b) in enumerate(zip(top, bottom)):
            if not propagate_down[i]:
                continue
            nb = b.shape[0]
            inner = b.count // max(nb, 1)
            X.scatter_rows_sum(t.gpu_diff(), didx, len(idx), nb, inner, b.mutable_gpu_diff())


@impl("Parameter")
class Parameter(Impl):
    def forward(self, layer, bottom, top):
        if top[0]._data_src is not layer.blobs[0]:
            top[0].share_data(layer.blobs[0])

    def backward(self, layer, top, propagate_down, bottom):
        if layer.param_propagate_down[0]:
            K.add_to(top[0].gpu_diff(), layer.blobs[0].mutable_gpu_diff(), top[0].count)


# -- Deconvolution / Im2col ----------------------------------------------------------------------------
@impl("Deconvolution")
class Deconvolution(Impl):
    def forward(self, layer, bottom, top):
        wt = layer.blobs[0].gpu_data()
        for b, t in zip(bottom, top):
            n, c, h, w = b.shape
            o, oh, ow = t.shape[1:]
            x = b.gpu_data()
            y = t.mutable_gpu_data()
            if layer._depthwise():
                K.depthwise_backward_data(x, n, o, oh, ow, wt, layer.geom, c // o, y, h, w)
            else:       # the transposed convolution: a convolution's input gradient
                conv_backward(None, x, (n, o, oh, ow), (c, h, w), wt,
                              layer.blobs[0].count // c, layer.group, layer.geom, "gemm",
                              None, y)
            if layer.bias_term:
                K.add_bias(y, n, o, oh * ow, layer.blobs[1].gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        do_w = layer.param_propagate_down[0]
        do_b = layer.bias_term and layer.param_propagate_down[1]
        wt = layer.blobs[0].gpu_data()
        dwt = layer.blobs[0].mutable_gpu_diff() if do_w else None
        g = layer.group
        for i, (b, t) in enumerate(zip(bottom, top)):
            n, c, h, w = b.shape
            o, oh, ow = t.shape[1:]
            dy = t.gpu_diff()
            if do_b:
                K.segment_sum(dy, n, o, oh * ow, layer.blobs[1].mutable_gpu_diff(), 1.0, 1.0)
            pd = propagate_down[i]
            if not (do_w or pd):
                continue
            x = b.gpu_data()
            dx = b.mutable_gpu_diff() if pd else None
            if layer._depthwise():
                mult = c // o
                if do_w:
                    K.depthwise_backward_weight(dy, n, o, oh, ow, x, layer.geom, mult, dwt, h, w)
                if pd:
                    K.depthwise_forward(dy, n, o, oh, ow, wt, layer.geom, mult, None, dx, h, w)
                continue
            L = h * w
            okkg = layer.blobs[0].count // c
            okk, cg = okkg * g, c // g
            nb = _chunk(n, okk * L)
            for n0 in range(0, n, nb):
                m = min(nb, n - n0)
                ML = m * L
                col = scratch("col", okk * ML, x.dtype)
                K.im2col(dy, n0 * o * oh * ow, o, oh, ow, layer.geom, h, w, m, col, ML)
                xcl = scratch("cl", c * ML, x.dtype)
                if do_w:
                    K.nchw_to_cl(x, n0 * c * L, m, c, L, xcl)
                    for gi in range(g):
                        gemm(0, 1, cg, okkg, ML, 1.0, xcl, col, 1.0, dwt, offA=gi * cg * ML,
                             lda=ML, offB=gi * okkg * ML, ldb=ML, offC=gi * cg * okkg, ldc=okkg)
                if pd:
                    for gi in range(g):
                        gemm(0, 0, cg, ML, okkg, 1.0, wt, col, 0.0, xcl, offA=gi * cg * okkg,
                             lda=okkg, offB=gi * okkg * ML, ldb=ML, offC=gi * cg * ML, ldc=ML)
                    K.cl_to_nchw(xcl, m, c, L, None, dx, n0 * c * L)


@impl("Im2col")
class Im2col(Impl):
    def forward(self, layer, bottom, top):
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        K.im2col_images(bottom[0].gpu_data(), n, c, h, w, layer.geom, oh, ow,
                        top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0]:
            n, c, h, w = bottom[0].shape
            oh, ow = top[0].shape[2:]
            K.col2im_images(top[0].gpu_diff(), n, c, h, w, layer.geom, oh, ow,
                            bottom[0].mutable_gpu_diff())


# -- Pooling (STOCHASTIC added), LRN (WITHIN_CHANNEL added), SPP ----------------------------------------
_BasePooling = TABLE["Pooling"]
_BaseLRN = TABLE["LRN"]


@impl("Pooling")
class Pooling(Impl):
    """MAX and AVE as in layers.py; STOCHASTIC: TRAIN draws one uniform number per output from
    the layer's generator on the host (the CPU layer's draw) and samples on the device; TEST
    computes the weighted average and its exact gradient."""

    def forward(self, layer, bottom, top):
        pp = layer.param.pooling_param
        if layer.method != pp.STOCHASTIC:
            return _BasePooling.forward(layer, bottom, top)
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        x = bottom[0].gpu_data()
        y = top[0].mutable_gpu_data()
        if layer.phase == 0:
            rand = _upload(layer, "rand", layer.rng.random(top[0].shape))
            mask = state(layer, "mask", top[0].count, np.int64)
            X.sto_pool_train(x, n * c, h, w, layer.kh, layer.kw, layer.sh, layer.sw, rand, y,
                             mask, oh, ow)
        else:
            ssum = state(layer, "ssum", top[0].count, np.float64)
            X.sto_pool_test(x, n * c, h, w, layer.kh, layer.kw, layer.sh, layer.sw, y, ssum,
                            oh, ow)

    def backward(self, layer, top, propagate_down, bottom):
        pp = layer.param.pooling_param
        if layer.method != pp.STOCHASTIC:
            return _BasePooling.backward(layer, top, propagate_down, bottom)
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        dx = bottom[0].mutable_gpu_diff()
        if layer.phase == 0:
            K.max_pool_backward(top[0].gpu_diff(), layer._cu_mask, n * c, h, w,
                                (layer.kh, layer.kw, 0, 0, layer.sh, layer.sw), dx, oh, ow)
        else:
            X.sto_pool_test_backward(bottom[0].gpu_data(), top[0].gpu_data(), top[0].gpu_diff(),
                                     layer._cu_ssum, n * c, h, w, layer.kh, layer.kw, layer.sh,
                                     layer.sw, dx, oh, ow)


@impl("LRN")
class LRN(Impl):
    def forward(self, layer, bottom, top):
        if layer.across:
            return _BaseLRN.forward(layer, bottom, top)
        n, c, h, w = bottom[0].shape
        sc = state(layer, "scale", bottom[0].count, bottom[0].dtype)
        X.lrn_within_forward(bottom[0].gpu_data(), n * c, h, w, layer.size, layer.alpha,
                             layer.beta, sc, top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if layer.across:
            return _BaseLRN.backward(layer, top, propagate_down, bottom)
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        cnt = bottom[0].count
        ratio = scratch("lrn_ratio", cnt, bottom[0].dtype)
        inner = scratch("lrn_inner", cnt, bottom[0].dtype)
        X.lrn_within_backward(bottom[0].gpu_data(), top[0].gpu_diff(), layer._cu_scale, n * c,
                              h, w, layer.size, layer.alpha, layer.beta, ratio, inner,
                              bottom[0].mutable_gpu_diff())


@impl("SPP")
class SPP(Impl):
    """One device Pooling per pyramid level into the level's own top, copied into the
    concatenated top (and back for the gradient)."""

    def forward(self, layer, bottom, top):
        n = bottom[0].shape[0]
        width = top[0].count // max(n, 1)
        y = top[0].mutable_gpu_data()
        off = 0
        for lv, t in zip(layer._levels, layer._tops):
            to_device(t)
            lv.rng = layer.rng
            lv.phase = layer.phase
            TABLE["Pooling"].forward(lv, bottom, [t])
            k = t.count // max(n, 1)
            K.copy_block(t.gpu_data(), n, k, 1, y, width, off, True)
            off += k

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        from ...blob import Blob
        n = bottom[0].shape[0]
        width = top[0].count // max(n, 1)
        dy = top[0].gpu_diff()
        proxy = layer.__dict__.get("_cu_proxy")
        if proxy is None or proxy.shape != bottom[0].shape:
            proxy = to_device(Blob(bottom[0].shape, dtype=layer.dtype,
                                   name=f"{layer.name}_bottom"))
            layer._cu_proxy = proxy
        proxy.share_data(bottom[0])
        cnt = bottom[0].count
        dx = bottom[0].mutable_gpu_diff()
        K.fill(dx, 0.0, cnt)
        off = 0
        for lv, t in zip(layer._levels, layer._tops):
            k = t.count // max(n, 1)
            K.copy_block(t.mutable_gpu_diff(), n, k, 1, dy, width, off, False)
            off += k
            TABLE["Pooling"].backward(lv, [t], [True], [proxy])
            K.add_to(proxy.gpu_diff(), dx, cnt)


# -- losses ---------------------------------------------------------------------------------------------
def _loss_out(top):
    return top[0].mutable_gpu_data()


@impl("EuclideanLoss")
class EuclideanLoss(Impl):
    def forward(self, layer, bottom, top):
        n = bottom[0].count
        diff = state(layer, "diff", n, bottom[0].dtype)
        X.sub(bottom[0].gpu_data(), bottom[1].gpu_data(), diff, n)
        X.row_reduce(diff, 1, n, _loss_out(top), K.SUMSQ, 1.0 / bottom[0].shape[0] / 2.0)

    def backward(self, layer, top, propagate_down, bottom):
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                X.scale_dev(layer._cu_diff, top[0].gpu_diff(), sign / bottom[i].shape[0],
                            bottom[i].mutable_gpu_diff(), bottom[i].count)


@impl("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(Impl):
    def forward(self, layer, bottom, top):
        n = bottom[0].count
        if layer.has_ignore:        # the normaliser needs the valid count: read the targets
            t = bottom[1].cpu_data().reshape(-1).astype(np.float64)
            ti = np.where(np.isfinite(t), t, 0).astype(np.int64)
            nvalid = int((ti != layer.ignore).sum())
        else:
            nvalid = n
        nb = bottom[0].shape[0]
        layer.norm = layer.normalizer(layer.mode, nb, n // max(nb, 1), nvalid)
        per = scratch("sce", n, np.float64)
        sig = state(layer, "sig", n, np.float64)
        X.sce_forward(bottom[0].gpu_data(), bottom[1].gpu_data(), layer.has_ignore,
                      layer.ignore, per, sig, n)
        X.row_reduce(per, 1, n, _loss_out(top), K.SUM, 1.0 / layer.norm)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        X.sce_backward(layer._cu_sig, bottom[1].gpu_data(), layer.has_ignore, layer.ignore,
                       top[0].gpu_diff(), 1.0 / layer.norm, bottom[0].mutable_gpu_diff(),
                       bottom[0].count)


@impl("HingeLoss")
class HingeLoss(Impl):
    def forward(self, layer, bottom, top):
        n = bottom[0].shape[0]
        dim = bottom[0].count // n
        _labels(layer, bottom[1], dim)
        margin = state(layer, "margin", n * dim, np.float64)
        X.hinge_margin(bottom[0].gpu_data(), bottom[1].gpu_data(), n, dim, margin)
        X.row_reduce(margin, 1, n * dim, _loss_out(top), K.SUMSQ if layer._l2() else K.SUM,
                     1.0 / n)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dim = bottom[0].count // n
        X.hinge_backward(layer._cu_margin, bottom[1].gpu_data(), n, dim, layer._l2(),
                         top[0].gpu_diff(), 1.0 / n, bottom[0].mutable_gpu_diff())


@impl("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Impl):
    def forward(self, layer, bottom, top):
        from ...layers.loss import LOG_THRESHOLD
        n = bottom[0].shape[0]
        dim = bottom[0].count // n
        _labels(layer, bottom[1], dim)
        pl = state(layer, "pl", n, np.float64)
        nll = scratch("mlog", n, np.float64)
        X.mlog_forward(bottom[0].gpu_data(), bottom[1].gpu_data(), n, dim, LOG_THRESHOLD, pl,
                       nll)
        X.row_reduce(nll, 1, n, _loss_out(top), K.SUM, 1.0 / n)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        X.mlog_backward(layer._cu_pl, bottom[1].gpu_data(), n, bottom[0].count // n,
                        top[0].gpu_diff(), 1.0 / n, bottom[0].mutable_gpu_diff())


@impl("InfogainLoss")
class InfogainLoss(Impl):
    def _h(self, layer, bottom):
        if len(bottom) == 3:
            return bottom[2].gpu_data()
        if layer.H is None:
            layer.infogain(bottom)          # raises the CPU layer's error
        if layer.__dict__.get("_cu_h_src") is not layer.H:
            _upload(layer, "h", np.asarray(layer.H, dtype=np.float64))
            layer._cu_h_src = layer.H
        return layer._cu_h

    def forward(self, layer, bottom, top):
        from ...layers.loss import LOG_THRESHOLD
        outer, c, inner = layer.outer, layer.c, layer.inner
        n = outer * c * inner
        prob = state(layer, "prob", n, bottom[0].dtype)
        K.softmax_forward(bottom[0].gpu_data(), outer, c, inner, prob)
        li = _checked_labels(layer, bottom[1], bottom[1].cpu_data(), c)
        valid = int((li != layer.ignore).sum()) if layer.has_ignore else outer * inner
        layer.norm = layer.normalizer(layer.mode, outer, inner, valid)
        per = scratch("infogain", outer * inner, np.float64)
        X.infogain_forward(prob, bottom[1].gpu_data(), self._h(layer, bottom), outer, c, inner,
                           layer.has_ignore, layer.ignore, LOG_THRESHOLD, per)
        X.row_reduce(per, 1, outer * inner, _loss_out(top), K.SUM, 1.0 / layer.norm)
        if len(top) == 2:
            K.copy(top[1].mutable_gpu_data(), prob, n)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        X.infogain_backward(layer._cu_prob, bottom[1].gpu_data(), self._h(layer, bottom),
                            layer.outer, layer.c, layer.inner, layer.has_ignore, layer.ignore,
                            top[0].gpu_diff(), 1.0 / layer.norm, bottom[0].mutable_gpu_diff())


@impl("ContrastiveLoss")
class ContrastiveLoss(Impl):
    def forward(self, layer, bottom, top):
        n = bottom[0].shape[0]
        cnt = bottom[0].count
        p = layer.param.contrastive_loss_param
        diff = state(layer, "diff", cnt, bottom[0].dtype)
        X.sub(bottom[0].gpu_data(), bottom[1].gpu_data(), diff, cnt)
        d2 = scratch("contrastive_d2", n, np.float64)
        X.row_reduce(diff, n, cnt // n, d2, K.SUMSQ)
        per = scratch("contrastive_per", n, np.float64)
        coefs = state(layer, "coefs", n, np.float64)
        X.contrastive_forward(d2, bottom[2].gpu_data(), n, p.margin, bool(p.legacy_version),
                              per, coefs)
        X.row_reduce(per, 1, n, _loss_out(top), K.SUM, 1.0 / n / 2.0)

    def backward(self, layer, top, propagate_down, bottom):
        n = bottom[0].shape[0]
        cnt = bottom[0].count
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                X.contrastive_backward(layer._cu_diff, layer._cu_coefs, n, cnt // n,
                                       top[0].gpu_diff(), sign / n,
                                       bottom[i].mutable_gpu_diff())


# -- recurrent ---------------------------------------------------------------------------------------------
@impl("LSTMUnit")
class LSTMUnit(Impl):
    def forward(self, layer, bottom, top):
        n, H = bottom[0].shape[1], bottom[0].shape[2]
        acts = state(layer, "acts", bottom[1].count, bottom[1].dtype)
        X.lstm_unit_forward(bottom[0].gpu_data(), bottom[1].gpu_data(), bottom[2].gpu_data(),
                            n, H, acts, top[0].mutable_gpu_data(), top[1].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        n, H = bottom[0].shape[1], bottom[0].shape[2]
        X.lstm_unit_backward(bottom[0].gpu_data(), layer._cu_acts, bottom[2].gpu_data(),
                             top[0].gpu_data(), top[0].gpu_diff(), top[1].gpu_diff(), n, H,
                             bool(propagate_down[0]), bool(propagate_down[1]),
                             bottom[0].mutable_gpu_diff() if propagate_down[0] else None,
                             bottom[1].mutable_gpu_diff() if propagate_down[1] else None)


class _Recurrent(Impl):
    """RNN / LSTM on the device, step by step: the input transform as one GEMM over all steps,
    then per step one GEMM for the recurrent transform and elementwise kernels (the CPU layer's
    operation order).  Without expose_hidden the final state carries over to the next forward
    (a device array per layer, zeros at first), as on the CPU."""

    def _initial(self, layer, bottom, N):
        H = layer.H
        if layer.expose:
            off = 3 if layer.static_input else 2
            return [bottom[off + j].gpu_data() for j in range(layer.num_recur)]
        if layer.__dict__.get("_cu_carry_n") != N:
            for j in range(layer.num_recur):
                K.fill(state(layer, f"carry{j}", N * H, layer.dtype), 0.0, N * H)
            layer._cu_carry_n = N
        return [layer.__dict__[f"_cu_carry{j}"] for j in range(layer.num_recur)]

    def _input_transform(self, layer, bottom, G, w, b, ws):
        T, N = bottom[0].shape[:2]
        GH = layer.gates * layer.H
        gemm(0, 1, T * N, GH, layer.D, 1.0, bottom[0].gpu_data(), w.gpu_data(), 0.0, G)
        K.add_bias(G, T * N, GH, 1, b.gpu_data())
        if layer.static_input:
            xs = bottom[2].gpu_data()
            for t in range(T):
                gemm(0, 1, N, GH, layer.Ds, 1.0, xs, ws.gpu_data(), 1.0, G, offC=t * N * GH)

    def _input_backward(self, layer, bottom, propagate_down, dG, w, b, ws):
        T, N = bottom[0].shape[:2]
        GH = layer.gates * layer.H
        ppd = layer.param_propagate_down
        if ppd[0]:
            gemm(1, 0, GH, layer.D, T * N, 1.0, dG, bottom[0].gpu_data(), 1.0,
                 w.mutable_gpu_diff())
        if ppd[1]:
            K.segment_sum(dG, T * N, GH, 1, b.mutable_gpu_diff(), 1.0, 1.0)
        if propagate_down[0]:
            gemm(0, 0, T * N, layer.D, GH, 1.0, dG, w.gpu_data(), 0.0,
                 bottom[0].mutable_gpu_diff())
        if layer.static_input:
            Gs = scratch("rnn_gs", N * GH, dG.dtype)
            K.seg_reduce(dG, T, N * GH, 1, Gs, K.SUM)
            if ppd[2]:
                gemm(1, 0, GH, layer.Ds, N, 1.0, Gs, bottom[2].gpu_data(), 1.0,
                     ws.mutable_gpu_diff())
            if propagate_down[2]:
                gemm(0, 0, N, layer.Ds, GH, 1.0, Gs, ws.gpu_data(), 0.0,
                     bottom[2].mutable_gpu_diff())

    def _final_diffs(self, layer, top, N):
        out = []
        for j in range(layer.num_recur):
            d = state(layer, f"dnext{j}", N * layer.H, layer.dtype)
            if layer.expose:
                K.copy(d, top[1 + j].gpu_diff(), N * layer.H)
            else:
                K.fill(d, 0.0, N * layer.H)
            out.append(d)
        return out

    def _state_backward(self, layer, propagate_down, bottom, grads, N):
        if not layer.expose:
            return
        off = 3 if layer.static_input else 2
        for j, g in enumerate(grads):
            if propagate_down[off + j]:
                K.copy(bottom[off + j].mutable_gpu_diff(), g, N * layer.H)


@impl("LSTM")
class LSTM(_Recurrent):
    def forward(self, layer, bottom, top):
        T, N = bottom[0].shape[:2]
        H = layer.H
        NH = N * H
        w, b, ws, whc = layer._weights()
        G = state(layer, "G", T * N * 4 * H, layer.dtype)      # gate inputs, then activations
        self._input_transform(layer, bottom, G, w, b, ws)
        hs = state(layer, "hs", (T + 1) * NH, layer.dtype)
        cs = state(layer, "cs", (T + 1) * NH, layer.dtype)
        h0, c0 = self._initial(layer, bottom, N)
        K.copy(hs, h0, NH)
        K.copy(cs, c0, NH)
        cont = bottom[1].gpu_data()
        hc = scratch("rnn_hc", NH, layer.dtype)
        for t in range(T):
            ct = cont[t * N:(t + 1) * N]
            Gt = G[t * N * 4 * H:(t + 1) * N * 4 * H]
            X.row_scale(hs[t * NH:(t + 1) * NH], ct, NH, H, hc)
            gemm(0, 1, N, 4 * H, H, 1.0, hc, whc.gpu_data(), 1.0, Gt)
            X.lstm_unit_forward(cs[t * NH:(t + 1) * NH], Gt, ct, N, H, Gt,
                                cs[(t + 1) * NH:(t + 2) * NH], hs[(t + 1) * NH:(t + 2) * NH])
        K.copy(top[0].mutable_gpu_data(), hs, T * NH, soff=NH)
        if layer.expose:
            K.copy(top[1].mutable_gpu_data(), hs, NH, soff=T * NH)
            K.copy(top[2].mutable_gpu_data(), cs, NH, soff=T * NH)
        else:
            K.copy(layer._cu_carry0, hs, NH, soff=T * NH)
            K.copy(layer._cu_carry1, cs, NH, soff=T * NH)

    def backward(self, layer, top, propagate_down, bottom):
        T, N = bottom[0].shape[:2]
        H = layer.H
        NH, G4 = N * H, N * 4 * H
        w, b, ws, whc = layer._weights()
        A, hs, cs = layer._cu_G, layer._cu_hs, layer._cu_cs
        cont = bottom[1].gpu_data()
        dh_next, dc_next = self._final_diffs(layer, top, N)
        dtop = top[0].gpu_diff()
        dG = state(layer, "dG", T * G4, layer.dtype)
        hc = scratch("rnn_hc", NH, layer.dtype)
        do_whc = layer.param_propagate_down[-1]
        for t in range(T - 1, -1, -1):
            ct = cont[t * N:(t + 1) * N]
            dGt = dG[t * G4:(t + 1) * G4]
            K.axpby(1.0, dtop[t * NH:(t + 1) * NH], 1.0, dh_next, NH)     # dh = dtop + dh_next
            X.lstm_unit_backward(cs[t * NH:(t + 1) * NH], A[t * G4:(t + 1) * G4], ct,
                                 cs[(t + 1) * NH:(t + 2) * NH], dc_next, dh_next, N, H, True,
                                 True, dc_next, dGt)
            if do_whc:
                X.row_scale(hs[t * NH:(t + 1) * NH], ct, NH, H, hc)
                gemm(1, 0, 4 * H, H, N, 1.0, dGt, hc, 1.0, whc.mutable_gpu_diff())
            gemm(0, 0, N, H, 4 * H, 1.0, dGt, whc.gpu_data(), 0.0, dh_next)
            X.row_scale(dh_next, ct, NH, H, dh_next)
        self._input_backward(layer, bottom, propagate_down, dG, w, b, ws)
        self._state_backward(layer, propagate_down, bottom, [dh_next, dc_next], N)


@impl("RNN")
class RNN(_Recurrent):
    def forward(self, layer, bottom, top):
        T, N = bottom[0].shape[:2]
        H = layer.H
        NH = N * H
        w, b, ws, whh, who, bo, _ = layer._weights()
        A = state(layer, "A", T * NH, layer.dtype)
        self._input_transform(layer, bottom, A, w, b, ws)
        hs = state(layer, "hs", (T + 1) * NH, layer.dtype)
        (h0,) = self._initial(layer, bottom, N)
        K.copy(hs, h0, NH)
        cont = bottom[1].gpu_data()
        hc = scratch("rnn_hc", NH, layer.dtype)
        for t in range(T):
            ct = cont[t * N:(t + 1) * N]
            At = A[t * NH:(t + 1) * NH]
            X.row_scale(hs[t * NH:(t + 1) * NH], ct, NH, H, hc)
            gemm(0, 1, N, H, H, 1.0, hc, whh.gpu_data(), 1.0, At)
            X.tanh(At, hs[(t + 1) * NH:(t + 2) * NH], NH)
        o = top[0].mutable_gpu_data()
        gemm(0, 1, T * N, H, H, 1.0, hs, who.gpu_data(), 0.0, o, offA=NH)
        K.add_bias(o, T * N, H, 1, bo.gpu_data())
        X.tanh(o, o, T * NH)
        if layer.expose:
            K.copy(top[1].mutable_gpu_data(), hs, NH, soff=T * NH)
        else:
            K.copy(layer._cu_carry0, hs, NH, soff=T * NH)

    def backward(self, layer, top, propagate_down, bottom):
        T, N = bottom[0].shape[:2]
        H = layer.H
        NH = N * H
        w, b, ws, whh, who, bo, k = layer._weights()
        hs = layer._cu_hs
        cont = bottom[1].gpu_data()
        ppd = layer.param_propagate_down
        do = scratch("rnn_do", T * NH, layer.dtype)
        X.tanh_grad(top[0].gpu_diff(), None, top[0].gpu_data(), do, T * NH)
        if ppd[k + 1]:
            gemm(1, 0, H, H, T * N, 1.0, do, hs, 1.0, who.mutable_gpu_diff(), offB=NH)
        if ppd[k + 2]:
            K.segment_sum(do, T * N, H, 1, bo.mutable_gpu_diff(), 1.0, 1.0)
        dH = state(layer, "dH", T * NH, layer.dtype)
        gemm(0, 0, T * N, H, H, 1.0, do, who.gpu_data(), 0.0, dH)
        (dh_next,) = self._final_diffs(layer, top, N)
        dA = state(layer, "dA", T * NH, layer.dtype)
        hc = scratch("rnn_hc", NH, layer.dtype)
        for t in range(T - 1, -1, -1):
            ct = cont[t * N:(t + 1) * N]
            da = dA[t * NH:(t + 1) * NH]
            X.tanh_grad(dH[t * NH:(t + 1) * NH], dh_next, hs[(t + 1) * NH:(t + 2) * NH], da, NH)
            if ppd[k]:
                X.row_scale(hs[t * NH:(t + 1) * NH], ct, NH, H, hc)
                gemm(1, 0, H, H, N, 1.0, da, hc, 1.0, whh.mutable_gpu_diff())
            gemm(0, 0, N, H, H, 1.0, da, whh.gpu_data(), 0.0, dh_next)
            X.row_scale(dh_next, ct, NH, H, dh_next)
        self._input_backward(layer, bottom, propagate_down, dA, w, b, ws)
        self._state_backward(layer, propagate_down, bottom, [dh_next], N)
