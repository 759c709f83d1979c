"""Per-layer-type CUDA implementations: ``TABLE[type] = impl`` where an impl has
``supports(layer) -> bool``, ``forward(layer, bottom, top)`` and
``backward(layer, top, propagate_down, bottom)``.  They read the Layer object's configuration
(set up by its CPU ``layer_setup``/``reshape``) and work on the device mirrors of the blobs
(:class:`~netdef.backend.cuda.memory.DeviceBlob`).  A layer whose type is missing, or whose
configuration an impl does not support, runs its CPU code on host copies (the Net in device mode
falls back per layer).  :func:`register_has_cuda` sets ``has_cuda`` on the covered classes.
"""
from __future__ import annotations

import numpy as np

from . import kernels as K
from .device import cuda as _get_cuda
from .gemm import gemm

cuda = _get_cuda()
TABLE: dict[str, object] = {}
_WORK: dict = {}


def scratch(tag: str, n: int, dtype):
    """A device scratch array of at least ``n`` elements (contents undefined), shared."""
    dt = np.dtype(dtype)
    key = (tag, dt.str)
    buf = _WORK.get(key)
    if buf is None or buf.size < n:
        buf = cuda.device_array(max(int(n), 1), dtype=dt)
        _WORK[key] = buf
    return buf


def state(layer, name, n, dtype):
    """A per-layer device array ``name`` of exactly ``n`` elements (reallocated on change)."""
    attr = "_cu_" + name
    buf = layer.__dict__.get(attr)
    dt = np.dtype(dtype)
    if buf is None or buf.size != max(n, 1) or buf.dtype != dt:
        buf = cuda.device_array(max(int(n), 1), dtype=dt)
        setattr(layer, attr, buf)
    return buf


def impl(*types):
    def deco(cls):
        obj = cls()
        for t in types:
            TABLE[t] = obj
        return cls
    return deco


class Impl:
    def supports(self, layer) -> bool:
        return True

    def backward(self, layer, top, propagate_down, bottom):
        return None


# -- Convolution --------------------------------------------------------------------------
@impl("Convolution")
class Convolution(Impl):
    def supports(self, layer):
        return True

    def forward(self, layer, bottom, top):
        path = layer._path()
        wt = layer.blobs[0].gpu_data()
        bias = layer.blobs[1].gpu_data() if layer.bias_term else None
        g = layer.group
        for b, t in zip(bottom, top):
            n, c, h, w = b.shape
            o, oh, ow = t.shape[1:]
            x = b.gpu_data()
            y = t.mutable_gpu_data()
            if path == "depthwise":
                K.depthwise_forward(x, n, c, h, w, wt, layer.geom, o // c, bias, y, oh, ow)
                continue
            L = oh * ow
            kkg = layer.blobs[0].count // o
            ckk, og = kkg * g, o // g
            nb = _chunk(n, ckk * L)
            for n0 in range(0, n, nb):
                m = min(nb, n - n0)
                ML = m * L
                col = scratch("col", ckk * ML, x.dtype)
                if path == "pointwise":
                    K.nchw_to_cl(x, n0 * c * L, m, c, L, col)
                else:
                    K.im2col(x, n0 * c * h * w, c, h, w, layer.geom, oh, ow, m, col, ML)
                ycl = scratch("cl", o * ML, x.dtype)
                for gi in range(g):
                    gemm(0, 0, og, ML, kkg, 1.0, wt, col, 0.0, ycl, offA=gi * og * kkg,
                         offB=gi * kkg * ML, offC=gi * og * ML, lda=kkg, ldb=ML, ldc=ML)
                K.cl_to_nchw(ycl, m, o, L, bias, y, n0 * o * L)

    def backward(self, layer, top, propagate_down, bottom):
        path = layer._path()
        do_w = layer.param_propagate_down[0]
        do_b = layer.bias_term and layer.param_propagate_down[1]
        wt = layer.blobs[0].gpu_data()
        dwt = layer.blobs[0].mutable_gpu_diff() if do_w else None
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
            if path == "depthwise":
                if do_w:
                    K.depthwise_backward_weight(x, n, c, h, w, dy, layer.geom, o // c, dwt,
                                                oh, ow)
                if pd:
                    K.depthwise_backward_data(dy, n, c, h, w, wt, layer.geom, o // c, dx,
                                              oh, ow)
                continue
            conv_backward(x, dy, (n, c, h, w), (o, oh, ow), wt, layer.blobs[0].count // o,
                          layer.group, layer.geom, path, dwt, dx)


def _chunk(n, per_image):
    """Images per chunk of a convolution's column matrix."""
    from ..cpu.workspace import COL_CHUNK_ELEMENTS
    return max(1, min(n, COL_CHUNK_ELEMENTS // max(1, per_image)))


def conv_backward(x, dy, xshape, yshape, wt, kkg, g, geom, path, dwt, dx):
    """A convolution's gradients on the device: dwt += dL/dW (dwt not None) and dx = dL/dx
    (dx not None) for x (N, C, H, W), dy (N, O, oh, ow), weights (O, kkg) in g groups; path
    "gemm" or "pointwise".  Deconvolution's forward is this with dx its output."""
    n, c, h, w = xshape
    o, oh, ow = yshape
    L = oh * ow
    ckk, og = kkg * g, o // g
    nb = _chunk(n, ckk * L)
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        ML = m * L
        dycl = scratch("cl", o * ML, dy.dtype)
        K.nchw_to_cl(dy, n0 * o * L, m, o, L, dycl)
        col = scratch("col", ckk * ML, dy.dtype)
        if dwt is not None:
            if path == "pointwise":
                K.nchw_to_cl(x, n0 * c * L, m, c, L, col)
            else:
                K.im2col(x, n0 * c * h * w, c, h, w, geom, oh, ow, m, col, ML)
            for gi in range(g):
                gemm(0, 1, og, kkg, ML, 1.0, dycl, col, 1.0, dwt, offA=gi * og * ML,
                     lda=ML, offB=gi * kkg * ML, ldb=ML, offC=gi * og * kkg, ldc=kkg)
        if dx is not None:
            for gi in range(g):
                gemm(1, 0, kkg, ML, og, 1.0, wt, dycl, 0.0, col, offA=gi * og * kkg,
                     lda=kkg, offB=gi * og * ML, ldb=ML, offC=gi * kkg * ML, ldc=ML)
            if path == "pointwise":
                K.cl_to_nchw(col, m, c, L, None, dx, n0 * c * L)
            else:
                K.col2im(col, ML, c, h, w, geom, oh, ow, m, dx, n0 * c * h * w)


# -- Pooling ---------------------------------------------------------------------------------
@impl("Pooling")
class Pooling(Impl):
    def supports(self, layer):
        pp = layer.param.pooling_param
        return layer.method in (pp.MAX, pp.AVE)

    def forward(self, layer, bottom, top):
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        x = bottom[0].gpu_data()
        y = top[0].mutable_gpu_data()
        geom = layer._args()
        if layer.method == layer.param.pooling_param.MAX:
            mask = state(layer, "mask", top[0].count, np.int64)
            K.max_pool_forward(x, n * c, h, w, geom, y, mask, oh, ow)
            if len(top) == 2:
                K.mask_to_float(mask, top[1].mutable_gpu_data(), top[0].count)
        else:
            K.ave_pool_forward(x, n * c, h, w, geom, y, oh, ow)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        geom = layer._args()
        if layer.method == layer.param.pooling_param.MAX:
            K.max_pool_backward(dy, layer._cu_mask, n * c, h, w, geom, dx, oh, ow)
        else:
            K.ave_pool_backward(dy, n * c, h, w, geom, dx, oh, ow)


# -- InnerProduct ------------------------------------------------------------------------------
@impl("InnerProduct")
class InnerProduct(Impl):
    def forward(self, layer, bottom, top):
        m = bottom[0].count_range(0, layer.axis)
        k, no = layer.k, layer.num_output
        x = bottom[0].gpu_data()
        y = top[0].mutable_gpu_data()
        wt = layer.blobs[0].gpu_data()
        # y = x W^T (W is (no, k)), or x W with transpose (W is (k, no))
        gemm(0, 0 if layer.transpose else 1, m, no, k, 1.0, x, wt, 0.0, y)
        if layer.bias_term:
            K.add_bias(y, m, no, 1, layer.blobs[1].gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        m = bottom[0].count_range(0, layer.axis)
        k, no = layer.k, layer.num_output
        dy = top[0].gpu_diff()
        if layer.param_propagate_down[0]:
            x = bottom[0].gpu_data()
            dw = layer.blobs[0].mutable_gpu_diff()
            if layer.transpose:
                gemm(1, 0, k, no, m, 1.0, x, dy, 1.0, dw)       # x^T dy
            else:
                gemm(1, 0, no, k, m, 1.0, dy, x, 1.0, dw)       # dy^T x
        if layer.bias_term and layer.param_propagate_down[1]:
            K.segment_sum(dy, m, no, 1, layer.blobs[1].mutable_gpu_diff(), 1.0, 1.0)
        if propagate_down[0]:
            wt = layer.blobs[0].gpu_data()
            dx = bottom[0].mutable_gpu_diff()
            gemm(0, 1 if layer.transpose else 0, m, k, no, 1.0, dy, wt, 0.0, dx)


# -- neurons ---------------------------------------------------------------------------------
class _Neuron(Impl):
    op = 0

    def params(self, layer):
        return 0.0, 0.0

    def needs_input(self, layer):
        return layer.needs_input()

    def forward(self, layer, bottom, top):
        n = bottom[0].count
        x = bottom[0].gpu_data()
        if top[0] is bottom[0] and self.needs_input(layer):
            keep = state(layer, "x", n, x.dtype)
            K.copy(keep, x, n)
        y = top[0].mutable_gpu_data()
        K.neuron_forward(self.op, x, y, n, *self.params(layer))

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        if top[0] is bottom[0] and self.needs_input(layer):
            x = layer._cu_x
        else:
            x = bottom[0].gpu_data()
        y = top[0].gpu_data()
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        K.neuron_backward(self.op, x, y, dy, dx, n, *self.params(layer))


@impl("ReLU")
class ReLU(_Neuron):
    op = K.RELU

    def params(self, layer):
        return layer.slope, 0.0

    def backward(self, layer, top, propagate_down, bottom):
        # with slope >= 0 the output's sign is the input's: use y as x (works in place)
        if not propagate_down[0]:
            return
        n = bottom[0].count
        x = layer._cu_x if (top[0] is bottom[0] and layer.needs_input()) else \
            (top[0].gpu_data() if not layer.needs_input() else bottom[0].gpu_data())
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        K.neuron_backward(self.op, x, x, dy, dx, n, layer.slope, 0.0)


@impl("Sigmoid")
class Sigmoid(_Neuron):
    op = K.SIGMOID


@impl("TanH")
class TanH(_Neuron):
    op = K.TANH


@impl("AbsVal")
class AbsVal(_Neuron):
    op = K.ABSVAL


@impl("ELU")
class ELU(_Neuron):
    op = K.ELU

    def params(self, layer):
        return layer.alpha, 0.0

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        y = top[0].gpu_data()
        if layer.needs_input():
            x = layer._cu_x if top[0] is bottom[0] else bottom[0].gpu_data()
        else:
            x = y           # alpha >= 0: y > 0 exactly where x > 0
        K.neuron_backward(self.op, x, y, top[0].gpu_diff(), bottom[0].mutable_gpu_diff(), n,
                          layer.alpha, 0.0)


@impl("BNLL")
class BNLL(_Neuron):
    op = K.BNLL


@impl("Threshold")
class Threshold(_Neuron):
    op = K.THRESHOLD

    def params(self, layer):
        return layer.threshold, 0.0

    def needs_input(self, layer):
        return False

    def backward(self, layer, top, propagate_down, bottom):
        layer.backward(top, propagate_down, bottom)     # raises when a gradient is asked


@impl("Clip")
class Clip(_Neuron):
    op = K.CLIP

    def params(self, layer):
        return layer.lo, layer.hi


@impl("Dropout")
class Dropout(_Neuron):
    """The mask comes from the layer's own generator on the host (bit-identical to the CPU
    path) and is copied to the device: in TRAIN one host->device copy per forward."""

    def forward(self, layer, bottom, top):
        n = bottom[0].count
        x = bottom[0].gpu_data()
        y = top[0].mutable_gpu_data()
        if layer.phase == 0:
            keep = layer.rng.random(bottom[0].shape) >= layer.ratio
            mask = keep.astype(bottom[0].dtype)
            if layer.train_scale != 1:
                mask *= layer.train_scale
            dmask = state(layer, "mask", n, mask.dtype)
            dmask.copy_to_device(mask.reshape(-1))
            from .memory import count_h2d
            count_h2d(mask.nbytes)
            K.mul(x, dmask, y, n)
        elif layer.test_scale != 1:
            K.scaled_copy(x, layer.test_scale, y, n)
        elif y is not x and top[0] is not bottom[0]:
            K.copy(y, x, n)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        if layer.phase == 0:
            K.mul(dy, layer._cu_mask, dx, n)
        elif layer.test_scale != 1:
            K.scaled_copy(dy, layer.test_scale, dx, n)
        elif top[0] is not bottom[0]:
            K.copy(dx, dy, n)


# -- Softmax and losses -------------------------------------------------------------------------
@impl("Softmax")
class Softmax(Impl):
    def forward(self, layer, bottom, top):
        o, c, i = layer.view
        K.softmax_forward(bottom[0].gpu_data(), o, c, i, top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0]:
            o, c, i = layer.view
            K.softmax_backward(top[0].gpu_data(), top[0].gpu_diff(), o, c, i,
                               bottom[0].mutable_gpu_diff())


@impl("SoftmaxWithLoss")
class SoftmaxWithLoss(Impl):
    def forward(self, layer, bottom, top):
        from ...layers.loss import FLT_MIN
        outer, c, inner = layer.outer, layer.c, layer.inner
        n = outer * c * inner
        prob = state(layer, "prob", n, bottom[0].dtype)
        K.softmax_forward(bottom[0].gpu_data(), outer, c, inner, prob)
        # labels are validated where they live (the host, for a data layer's batch)
        lab_host = bottom[1].cpu_data()
        li = _checked_labels(layer, bottom[1], lab_host, c)
        valid = int((li != layer.ignore).sum()) if layer.has_ignore else outer * inner
        layer.norm = layer.normalizer(layer.mode, outer, inner, valid)
        K.nll_loss(prob, bottom[1].gpu_data(), outer, c, inner, layer.has_ignore, layer.ignore,
                   FLT_MIN, 1.0 / layer.norm, top[0].mutable_gpu_data())
        if len(top) == 2:
            K.copy(top[1].mutable_gpu_data(), prob, n)

    def backward(self, layer, top, propagate_down, bottom):
        layer.check_no_label_gradient(propagate_down, bottom)
        if not propagate_down[0]:
            return
        K.nll_grad(layer._cu_prob, bottom[1].gpu_data(), layer.outer, layer.c, layer.inner,
                   layer.has_ignore, layer.ignore, top[0].gpu_diff(), 1.0 / layer.norm,
                   bottom[0].mutable_gpu_diff())


def _checked_labels(layer, blob, lab_host, c):
    """class_labels() on a read-only host copy (so the blob's head is not moved)."""
    from ...layers.loss import class_labels

    class _RO:
        name = blob.name
        data = lab_host
    return class_labels(layer, _RO, c, layer.has_ignore, layer.ignore)


@impl("Accuracy")
class Accuracy(Impl):
    """Per-position hits on the device; the per-class tally (a few numbers) on the host."""

    def forward(self, layer, bottom, top):
        outer, c, inner = layer.outer, layer.c, layer.inner
        lab = bottom[1].cpu_data()
        li = _checked_labels(layer, bottom[1], lab, c)
        corr = state(layer, "correct", outer * inner, np.int32)
        K.accuracy(bottom[0].gpu_data(), bottom[1].gpu_data(), outer, c, inner, layer.top_k,
                   layer.has_ignore, layer.ignore, corr)
        hits_pos = corr.copy_to_host()[:outer * inner]
        from .memory import count_d2h
        count_d2h(hits_pos.nbytes)
        ok = hits_pos >= 0
        hits = np.bincount(li[ok], weights=(hits_pos[ok] == 1).astype(np.float64), minlength=c)
        seen = np.bincount(li[ok], minlength=c).astype(np.float64)
        count = seen.sum()
        top[0].data = np.array(hits.sum() / count if count else 0.0)
        if len(top) == 2:
            top[1].data = np.divide(hits, seen, out=np.zeros_like(hits), where=seen > 0)


# -- shape/view layers -----------------------------------------------------------------------
@impl("Flatten", "Reshape", "Silence")
class ViewLayer(Impl):
    """Views share the bottom's device memory: nothing to do."""

    def forward(self, layer, bottom, top):
        return None


@impl("Split")
class Split(Impl):
    def forward(self, layer, bottom, top):
        return None          # the tops view the bottom's data

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        dx = bottom[0].mutable_gpu_diff()
        K.copy(dx, top[0].gpu_diff(), n)
        for t in top[1:]:
            K.add_to(t.gpu_diff(), dx, n)


def _oai(shape, axis):
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, inner


@impl("Concat")
class Concat(Impl):
    def forward(self, layer, bottom, top):
        if len(bottom) == 1:
            return
        a = layer.axis
        outer, inner = _oai(top[0].shape, a)
        da = top[0].shape[a]
        y = top[0].mutable_gpu_data()
        off = 0
        for b in bottom:
            K.copy_block(b.gpu_data(), outer, b.shape[a], inner, y, da, off, True)
            off += b.shape[a]

    def backward(self, layer, top, propagate_down, bottom):
        if len(bottom) == 1:
            return
        a = layer.axis
        outer, inner = _oai(top[0].shape, a)
        da = top[0].shape[a]
        dy = top[0].gpu_diff()
        off = 0
        for i, b in enumerate(bottom):
            if propagate_down[i]:
                K.copy_block(b.mutable_gpu_diff(), outer, b.shape[a], inner, dy, da, off, False)
            off += b.shape[a]


@impl("Slice")
class Slice(Impl):
    def forward(self, layer, bottom, top):
        if len(top) == 1:
            return
        a = layer.axis
        outer, inner = _oai(bottom[0].shape, a)
        da = bottom[0].shape[a]
        x = bottom[0].gpu_data()
        for k, t in enumerate(top):
            K.copy_block(t.mutable_gpu_data(), outer, t.shape[a], inner, x, da,
                         layer.bounds[k], False)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        a = layer.axis
        outer, inner = _oai(bottom[0].shape, a)
        da = bottom[0].shape[a]
        dx = bottom[0].mutable_gpu_diff()
        for k, t in enumerate(top):
            K.copy_block(t.gpu_diff(), outer, t.shape[a], inner, dx, da, layer.bounds[k], True)


@impl("Eltwise")
class Eltwise(Impl):
    def forward(self, layer, bottom, top):
        n = top[0].count
        y = top[0].mutable_gpu_data()
        if layer.op == "PROD":
            K.mul(bottom[0].gpu_data(), bottom[1].gpu_data(), y, n)
            for b in bottom[2:]:
                K.mul(y, b.gpu_data(), y, n)
        elif layer.op == "SUM":
            K.scaled_copy(bottom[0].gpu_data(), layer.coeff[0], y, n)
            for c, b in zip(layer.coeff[1:], bottom[1:]):
                K.axpby(c, b.gpu_data(), 1.0, y, n)
        else:
            mask = state(layer, "mask", n, np.int32)
            K.eltwise_max(bottom[0].gpu_data(), bottom[1].gpu_data(), y, mask, 1, True, n)
            for k, b in enumerate(bottom[2:], 2):
                K.eltwise_max(y, b.gpu_data(), y, mask, k, False, n)

    def backward(self, layer, top, propagate_down, bottom):
        n = top[0].count
        dy = top[0].gpu_diff()
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            dx = b.mutable_gpu_diff()
            if layer.op == "PROD":
                if layer.stable:
                    others = [o for j, o in enumerate(bottom) if j != i]
                    K.mul(dy, others[0].gpu_data(), dx, n)
                    for o in others[1:]:
                        K.mul(dx, o.gpu_data(), dx, n)
                else:
                    K.div_mul(top[0].gpu_data(), b.gpu_data(), dy, dx, n)
            elif layer.op == "SUM":
                K.scaled_copy(dy, layer.coeff[i], dx, n)
            else:
                K.mask_select(dy, layer._cu_mask, i, dx, n)


# -- normalization ------------------------------------------------------------------------------
@impl("LRN")
class LRN(Impl):
    def supports(self, layer):
        return layer.across

    def forward(self, layer, bottom, top):
        n, c, h, w = bottom[0].shape
        sc = state(layer, "scale", bottom[0].count, bottom[0].dtype)
        K.lrn_forward(bottom[0].gpu_data(), n, c, h * w, layer.size, layer.alpha, layer.beta,
                      layer.k, sc, top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        K.lrn_backward(bottom[0].gpu_data(), top[0].gpu_data(), top[0].gpu_diff(),
                       layer._cu_scale, n, c, h * w, layer.size, layer.alpha, layer.beta,
                       bottom[0].mutable_gpu_diff())


@impl("BatchNorm")
class BatchNorm(Impl):
    def _dims(self, layer, blob):
        n = blob.shape[0]
        c = layer.channels
        s = blob.count // (n * c) if n * c else 0
        return n, c, s

    def forward(self, layer, bottom, top):
        n, c, s = self._dims(layer, bottom[0])
        cnt = bottom[0].count
        x = bottom[0].gpu_data()
        mean = state(layer, "mean", c, np.float64)
        var = state(layer, "var", c, np.float64)
        if layer.use_global:
            K.bn_global_stats(layer.blobs[0].gpu_data(), layer.blobs[1].gpu_data(),
                              layer.blobs[2].gpu_data(), c, mean, var)
        else:
            m = max(n * s, 1)
            K.segment_sum(x, n, c, s, mean, 1.0 / m, 0.0)
            sq = scratch("bn_sq", cnt, np.float64)
            K.bn_center_sq(x, n, c, s, mean, sq)
            K.segment_sum(sq, n, c, s, var, 1.0 / m, 0.0)
            if layer.phase == 0:
                mm = n * s
                corr = mm / (mm - 1) if mm > 1 else 1.0
                K.bn_update(layer.blobs[0].mutable_gpu_data(), layer.blobs[1].mutable_gpu_data(),
                            layer.blobs[2].mutable_gpu_data(), mean, var, c, layer.maf, corr)
        y = top[0].mutable_gpu_data()
        K.bn_normalize(x, n, c, s, mean, var, layer.eps, y)
        if not layer.use_global:
            keep = state(layer, "xnorm", cnt, bottom[0].dtype)
            K.copy(keep, y, cnt)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, s = self._dims(layer, bottom[0])
        cnt = bottom[0].count
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        if layer.use_global:
            K.bn_global_bwd(dy, n, c, s, layer._cu_var, layer.eps, dx)
            return
        m = max(n * s, 1)
        sum_dy = state(layer, "sum_dy", c, np.float64)
        sum_dyy = state(layer, "sum_dyy", c, np.float64)
        K.segment_sum(dy, n, c, s, sum_dy, 1.0, 0.0)
        prod = scratch("bn_sq", cnt, np.float64)
        K.mul(dy, layer._cu_xnorm, prod, cnt)
        K.segment_sum(prod, n, c, s, sum_dyy, 1.0, 0.0)
        K.bn_backward(layer._cu_xnorm, dy, n, c, s, sum_dy, sum_dyy, layer._cu_var, layer.eps,
                      m, dx)


# -- registration ---------------------------------------------------------------------------------
def register_has_cuda() -> None:
    """Set ``has_cuda = True`` on every layer class the table covers."""
    from ...layers.registry import get_layer_class
    for t in TABLE:
        cls = get_layer_class(t)
        if cls is not None:
            cls.has_cuda = True


def impl_for(layer):
    """The CUDA impl for ``layer``, or None when it runs on the CPU."""
    imp = TABLE.get(layer.type)
    if imp is None or not imp.supports(layer):
        return None
    return imp


# the rest of the catalogue (registers into TABLE; imported last: it extends Pooling and LRN)
from . import layers_extra  # noqa: F401
