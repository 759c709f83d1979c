"""CUDA kernels and implementations of the utility layers (netdef.layers.utility): Softmax,
Concat, Slice, Split, Eltwise, Flatten, Reshape, Silence, Crop, Tile, Reduction, ArgMax,
Filter, BatchReindex, Parameter."""
from __future__ import annotations

import math
import numpy as np

from .launch import kernel
from .memory import _upload
from .primitives import (
    ASUM,
    Impl,
    SUM,
    SUMSQ,
    _RO,
    add_to,
    axpby,
    copy,
    copy_block,
    cuda,
    div_mul,
    fill,
    grid1d,
    impl,
    mul,
    row_reduce,
    scaled_copy,
    state,
)


# -- softmax and softmax loss ----------------------------------------------------------------------
@kernel
def _softmax_fwd(x, outer, c, inner, y):
    total = outer * inner
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        o = e // inner
        i = e - o * inner
        base = o * c * inner + i
        mx = x[base]
        for k in range(1, c):
            mx = max(mx, x[base + k * inner])
        s = 0.0
        for k in range(c):
            v = math.exp(x[base + k * inner] - mx)
            y[base + k * inner] = v
            s += y[base + k * inner]
        for k in range(c):
            y[base + k * inner] = y[base + k * inner] / s


@kernel
def _softmax_bwd(y, dy, outer, c, inner, dx):
    total = outer * inner
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        o = e // inner
        i = e - o * inner
        base = o * c * inner + i
        dot = 0.0
        for k in range(c):
            dot += y[base + k * inner] * dy[base + k * inner]
        for k in range(c):
            q = base + k * inner
            dx[q] = (dy[q] - dot) * y[q]


def softmax_forward(x, outer, c, inner, y):
    _softmax_fwd[grid1d(outer * inner)](x, outer, c, inner, y)


def softmax_backward(y, dy, outer, c, inner, dx):
    _softmax_bwd[grid1d(outer * inner)](y, dy, outer, c, inner, dx)


# -- Eltwise ---------------------------------------------------------------------------------------
@kernel
def _eltwise_max(n, a, b, y, mask, idx_b, first):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        if first:
            if a[i] > b[i]:
                y[i] = a[i]
                mask[i] = 0
            else:
                y[i] = b[i]
                mask[i] = idx_b
        elif b[i] > y[i]:
            y[i] = b[i]
            mask[i] = idx_b


@kernel
def _mask_select(n, dy, mask, k, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = dy[i] if mask[i] == k else 0.0 * dy[i]


def eltwise_max(a, b, y, mask, idx_b, first, n):
    _eltwise_max[grid1d(n)](n, a, b, y, mask, idx_b, first)


def mask_select(dy, mask, k, dx, n):
    _mask_select[grid1d(n)](n, dy, mask, k, dx)


# -- Reduction ------------------------------------------------------------------------------------
@kernel
def _reduction_bwd(n, op, x, dy, coeff, dim, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        g = dy[i // dim] * coeff
        if op == 1:
            v = x[i]
            dx[i] = g if v > 0 else (-g if v < 0 else 0.0 * g)
        elif op == 2:
            dx[i] = x[i] * (2 * g)
        else:
            dx[i] = g


def reduction_backward(op, x, dy, coeff, dim, dx, n):
    if n:
        t = dx.dtype.type
        _reduction_bwd[grid1d(n)](n, op, x, dy, t(coeff), dim, dx)


# -- ArgMax ---------------------------------------------------------------------------------------
@kernel
def _argmax(x, outer, dim, inner, k, out_max, by_axis, y):
    """Top-k by (value, index) descending for each (outer, inner) position."""
    for e in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = e // inner
        i = e - o * inner
        base = o * dim * inner + i
        pv = 0.0
        pi = -1
        for j in range(k):
            best = -1
            bv = 0.0
            for d in range(dim):
                v = x[base + d * inner]
                if pi >= 0 and not (v < pv or (v == pv and d < pi)):
                    continue                # already picked (ranks at or above the last pick)
                if best < 0 or v > bv or (v == bv and d > best):
                    best = d
                    bv = v
            pv = bv
            pi = best
            if by_axis:
                y[(o * k + j) * inner + i] = bv if out_max else best
            elif out_max:
                y[o * 2 * k + j] = best
                y[o * 2 * k + k + j] = bv
            else:
                y[o * k + j] = best


def argmax(x, outer, dim, inner, k, out_max, by_axis, y):
    _argmax[grid1d(outer * inner)](x, outer, dim, inner, k, out_max, by_axis, y)


# -- Crop / Tile / gathers --------------------------------------------------------------------------
@kernel
def _crop(n, nd, meta, src, dst, forward):
    """meta = [top shape (nd), offsets (nd), bottom strides (nd)]; forward: dst (top) gets
    src (bottom) at the offsets; else src (bottom diff) gets dst (top diff) there."""
    for e in range(cuda.grid(1), n, cuda.gridsize(1)):
        r = e
        q = 0
        for a in range(nd - 1, -1, -1):
            sz = meta[a]
            c = r % sz
            r //= sz
            q += (c + meta[nd + a]) * meta[2 * nd + a]
        if forward:
            dst[e] = src[q]
        else:
            src[q] = dst[e]


def crop(meta, nd, src, dst, n, forward=True):
    if n:
        _crop[grid1d(n)](n, nd, meta, src, dst, forward)


@kernel
def _tile_fwd(x, outer, tiles, inner, y):
    for e in range(cuda.grid(1), outer * tiles * inner, cuda.gridsize(1)):
        i = e % inner
        o = e // (tiles * inner)
        y[e] = x[o * inner + i]


@kernel
def _tile_bwd(dy, outer, tiles, inner, dx):
    for e in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        i = e % inner
        o = e // inner
        acc = 0.0
        for t in range(tiles):
            acc += dy[(o * tiles + t) * inner + i]
        dx[e] = acc


def tile_forward(x, outer, tiles, inner, y):
    if outer * tiles * inner:
        _tile_fwd[grid1d(outer * tiles * inner)](x, outer, tiles, inner, y)


def tile_backward(dy, outer, tiles, inner, dx):
    if outer * inner:
        _tile_bwd[grid1d(outer * inner)](dy, outer, tiles, inner, dx)


@kernel
def _gather_rows(src, idx, m, inner, dst):
    """dst[r, :] = src[idx[r], :] (idx floats or ints)."""
    for e in range(cuda.grid(1), m * inner, cuda.gridsize(1)):
        r = e // inner
        dst[e] = src[int(idx[r]) * inner + (e - r * inner)]


@kernel
def _scatter_rows_sum(dy, idx, m, nb, inner, dx):
    """dx[b, :] = sum of dy[r, :] over r with idx[r] == b (a gather: deterministic)."""
    for e in range(cuda.grid(1), nb * inner, cuda.gridsize(1)):
        b = e // inner
        j = e - b * inner
        acc = 0.0
        for r in range(m):
            if int(idx[r]) == b:
                acc += dy[r * inner + j]
        dx[e] = acc


def gather_rows(src, idx, m, inner, dst):
    if m * inner:
        _gather_rows[grid1d(m * inner)](src, idx, m, inner, dst)


def scatter_rows_sum(dy, idx, m, nb, inner, dx):
    if nb * inner:
        _scatter_rows_sum[grid1d(nb * inner)](dy, idx, m, nb, inner, dx)


# -- Softmax and losses -------------------------------------------------------------------------
@impl("Softmax")
class Softmax(Impl):
    def forward(self, layer, bottom, top):
        o, c, i = layer.view
        softmax_forward(bottom[0].gpu_data(), o, c, i, top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0]:
            o, c, i = layer.view
            softmax_backward(top[0].gpu_data(), top[0].gpu_diff(), o, c, i,
                               bottom[0].mutable_gpu_diff())


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
        copy(dx, top[0].gpu_diff(), n)
        for t in top[1:]:
            add_to(t.gpu_diff(), dx, n)


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
            copy_block(b.gpu_data(), outer, b.shape[a], inner, y, da, off, True)
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
                copy_block(b.mutable_gpu_diff(), outer, b.shape[a], inner, dy, da, off, False)
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
            copy_block(t.mutable_gpu_data(), outer, t.shape[a], inner, x, da,
                         layer.bounds[k], False)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        a = layer.axis
        outer, inner = _oai(bottom[0].shape, a)
        da = bottom[0].shape[a]
        dx = bottom[0].mutable_gpu_diff()
        for k, t in enumerate(top):
            copy_block(t.gpu_diff(), outer, t.shape[a], inner, dx, da, layer.bounds[k], True)


@impl("Eltwise")
class Eltwise(Impl):
    def forward(self, layer, bottom, top):
        n = top[0].count
        y = top[0].mutable_gpu_data()
        if layer.op == "PROD":
            mul(bottom[0].gpu_data(), bottom[1].gpu_data(), y, n)
            for b in bottom[2:]:
                mul(y, b.gpu_data(), y, n)
        elif layer.op == "SUM":
            scaled_copy(bottom[0].gpu_data(), layer.coeff[0], y, n)
            for c, b in zip(layer.coeff[1:], bottom[1:]):
                axpby(c, b.gpu_data(), 1.0, y, n)
        else:
            mask = state(layer, "mask", n, np.int32)
            eltwise_max(bottom[0].gpu_data(), bottom[1].gpu_data(), y, mask, 1, True, n)
            for k, b in enumerate(bottom[2:], 2):
                eltwise_max(y, b.gpu_data(), y, mask, k, False, n)

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
                    mul(dy, others[0].gpu_data(), dx, n)
                    for o in others[1:]:
                        mul(dx, o.gpu_data(), dx, n)
                else:
                    div_mul(top[0].gpu_data(), b.gpu_data(), dy, dx, n)
            elif layer.op == "SUM":
                scaled_copy(dy, layer.coeff[i], dx, n)
            else:
                mask_select(dy, layer._cu_mask, i, dx, n)


# -- Reduction / ArgMax / Crop / Tile -------------------------------------------------------------------
@impl("Reduction")
class Reduction(Impl):
    def forward(self, layer, bottom, top):
        p = layer.param.reduction_param
        mode = {p.ASUM: ASUM, p.SUMSQ: SUMSQ}.get(layer.op, SUM)
        row_reduce(bottom[0].gpu_data(), layer.num, layer.dim, top[0].mutable_gpu_data(), mode,
                     layer._coeff())

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = layer.param.reduction_param
        op = {p.ASUM: 1, p.SUMSQ: 2}.get(layer.op, 0)
        reduction_backward(op, bottom[0].gpu_data(), top[0].gpu_diff(), layer._coeff(),
                             max(layer.dim, 1), bottom[0].mutable_gpu_diff(), bottom[0].count)


@impl("ArgMax")
class ArgMax(Impl):
    def forward(self, layer, bottom, top):
        outer, dim, inner = layer.view
        argmax(bottom[0].gpu_data(), outer, dim, inner, layer.k,
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
        crop(meta, nd, bottom[0].gpu_data(), top[0].mutable_gpu_data(), top[0].count, True)

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0]:
            meta, nd = self._meta(layer, bottom, top)
            dx = bottom[0].mutable_gpu_diff()
            fill(dx, 0.0, bottom[0].count)
            crop(meta, nd, dx, top[0].gpu_diff(), top[0].count, False)
        if propagate_down[1]:
            fill(bottom[1].mutable_gpu_diff(), 0.0, bottom[1].count)


@impl("Tile")
class Tile(Impl):
    def forward(self, layer, bottom, top):
        tile_forward(bottom[0].gpu_data(), layer.outer, layer.tiles, layer.inner,
                       top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0]:
            tile_backward(top[0].gpu_diff(), layer.outer, layer.tiles, layer.inner,
                            bottom[0].mutable_gpu_diff())


# -- gathers: BatchReindex, Filter; Parameter -------------------------------------------------------------
@impl("BatchReindex")
class BatchReindex(Impl):
    def forward(self, layer, bottom, top):
        layer._ii = layer._indices([bottom[0], _RO(bottom[1])])      # validated on the host
        m = bottom[1].count
        inner = bottom[0].count // max(bottom[0].shape[0], 1)
        gather_rows(bottom[0].gpu_data(), bottom[1].gpu_data(), m, inner,
                      top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[1]:
            layer.backward(top, propagate_down, bottom)     # raises: indices get no gradient
        if not propagate_down[0]:
            return
        nb = bottom[0].shape[0]
        inner = bottom[0].count // max(nb, 1)
        scatter_rows_sum(top[0].gpu_diff(), bottom[1].gpu_data(), bottom[1].count, nb, inner,
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
            gather_rows(b.gpu_data(), didx, len(idx), inner, t.mutable_gpu_data())

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
            scatter_rows_sum(t.gpu_diff(), didx, len(idx), nb, inner, b.mutable_gpu_diff())


@impl("Parameter")
class Parameter(Impl):
    def forward(self, layer, bottom, top):
        if top[0]._data_src is not layer.blobs[0]:
            top[0].share_data(layer.blobs[0])

    def backward(self, layer, top, propagate_down, bottom):
        if layer.param_propagate_down[0]:
            add_to(top[0].gpu_diff(), layer.blobs[0].mutable_gpu_diff(), top[0].count)
