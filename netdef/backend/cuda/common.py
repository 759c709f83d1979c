"""CUDA implementations of the common layers (netdef.layers.common): InnerProduct, Embed,
Scale, Bias."""
from __future__ import annotations

from .launch import kernel
from .gemm import gemm
from .primitives import (
    DOT,
    Impl,
    SUM,
    _RO,
    bcast,
    copy,
    cuda,
    grid1d,
    impl,
    seg_reduce,
    segment_sum,
    state,
)


# -- Embed ----------------------------------------------------------------------------------------
@kernel
def _embed_fwd(idx, m, no, w, b, has_b, y):
    for e in range(cuda.grid(1), m * no, cuda.gridsize(1)):
        r = e // no
        j = e - r * no
        v = w[int(idx[r]) * no + j]
        if has_b:
            v += b[j]
        y[e] = v


@kernel
def _embed_bwd(idx, m, no, dy, wd):
    for e in range(cuda.grid(1), m * no, cuda.gridsize(1)):
        r = e // no
        j = e - r * no
        cuda.atomic.add(wd, int(idx[r]) * no + j, dy[e])


def embed_forward(idx, m, no, w, b, y):
    if m * no:
        _embed_fwd[grid1d(m * no)](idx, m, no, w, w if b is None else b, b is not None, y)


def embed_backward(idx, m, no, dy, wd):
    if m * no:
        _embed_bwd[grid1d(m * no)](idx, m, no, dy, wd)


# -- InnerProduct ------------------------------------------------------------------------------
@impl("InnerProduct")
class InnerProduct(Impl):
    def forward(self, layer, bottom, top):
        m = bottom[0].count_range(0, layer.axis)
        k, no = layer.k, layer.num_output
        x = bottom[0].gpu_data()
        y = top[0].mutable_gpu_data()
        wt = layer.blobs[0].gpu_data()
        # y = x W^T (W is (no, k)), or x W with transpose (W is (k, no)); the bias and a
        # fused ReLU (netdef.backend.cuda.runner.relu_fusions) in the GEMM's epilogue
        gemm(0, 0 if layer.transpose else 1, m, no, k, 1.0, x, wt, 0.0, y,
             bias=layer.blobs[1].gpu_data() if layer.bias_term else None, bias_on="n",
             relu=getattr(layer, "_cu_fused_relu", None))

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
            segment_sum(dy, m, no, 1, layer.blobs[1].mutable_gpu_diff(), 1.0, 1.0)
        if propagate_down[0]:
            wt = layer.blobs[0].gpu_data()
            dx = bottom[0].mutable_gpu_diff()
            gemm(0, 1 if layer.transpose else 0, m, k, no, 1.0, dy, wt, 0.0, dx)


# -- Scale / Bias -------------------------------------------------------------------------------------
@impl("Scale")
class Scale(Impl):
    def forward(self, layer, bottom, top):
        _, d, i = layer._dims(bottom[0].shape)
        n = bottom[0].count
        x = bottom[0].gpu_data()
        if top[0] is bottom[0] and layer._needs_input(bottom):
            copy(state(layer, "x", n, x.dtype), x, n)
        s = bottom[1].gpu_data() if len(bottom) == 2 else layer.blobs[0].gpu_data()
        b = layer.blobs[-1].gpu_data() if layer.bias_term else None
        bcast(x, top[0].mutable_gpu_data(), n, d, i, s=s, b=b)

    def backward(self, layer, top, propagate_down, bottom):
        o, d, i = layer._dims(bottom[0].shape)
        n = bottom[0].count
        dy = top[0].gpu_diff()
        learned = len(bottom) == 1
        if layer.bias_term and layer.param_propagate_down[-1]:
            seg_reduce(dy, o, d, i, layer.blobs[-1].mutable_gpu_diff(), SUM, 1.0, 1.0)
        want_s = layer.param_propagate_down[0] if learned else propagate_down[1]
        if want_s:
            x = layer._cu_x if top[0] is bottom[0] else bottom[0].gpu_data()
            if learned:
                seg_reduce(dy, o, d, i, layer.blobs[0].mutable_gpu_diff(), DOT, 1.0, 1.0,
                             x2=x)
            else:
                seg_reduce(dy, o, d, i, bottom[1].mutable_gpu_diff(), DOT, 1.0, 0.0, x2=x)
        if propagate_down[0]:
            s = bottom[1].gpu_data() if len(bottom) == 2 else layer.blobs[0].gpu_data()
            bcast(dy, bottom[0].mutable_gpu_diff(), n, d, i, s=s)


@impl("Bias")
class Bias(Impl):
    def forward(self, layer, bottom, top):
        _, d, i = layer._dims(bottom[0].shape)
        b = bottom[1].gpu_data() if len(bottom) == 2 else layer.blobs[0].gpu_data()
        bcast(bottom[0].gpu_data(), top[0].mutable_gpu_data(), bottom[0].count, d, i, b=b)

    def backward(self, layer, top, propagate_down, bottom):
        o, d, i = layer._dims(bottom[0].shape)
        dy = top[0].gpu_diff()
        if len(bottom) == 1:
            if layer.param_propagate_down[0]:
                seg_reduce(dy, o, d, i, layer.blobs[0].mutable_gpu_diff(), SUM, 1.0, 1.0)
        elif propagate_down[1]:
            seg_reduce(dy, o, d, i, bottom[1].mutable_gpu_diff(), SUM, 1.0, 0.0)
        if propagate_down[0] and top[0] is not bottom[0]:
            copy(bottom[0].mutable_gpu_diff(), dy, bottom[0].count)


# -- Embed ---------------------------------------------------------------------------------------------
@impl("Embed")
class Embed(Impl):
    def forward(self, layer, bottom, top):
        layer._index = layer._indices([_RO(bottom[0])])       # validated on the host
        m = bottom[0].count
        b = layer.blobs[1].gpu_data() if layer.bias_term else None
        embed_forward(bottom[0].gpu_data(), m, layer.num_output, layer.blobs[0].gpu_data(), b,
                        top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        m, no = bottom[0].count, layer.num_output
        dy = top[0].gpu_diff()
        if layer.param_propagate_down[0]:
            embed_backward(bottom[0].gpu_data(), m, no, dy, layer.blobs[0].mutable_gpu_diff())
        if layer.bias_term and layer.param_propagate_down[1]:
            seg_reduce(dy, m, no, 1, layer.blobs[1].mutable_gpu_diff(), SUM, 1.0, 1.0)
