"""CUDA kernels and implementations of the vision layers (netdef.layers.vision): Convolution
and Deconvolution (im2col + GEMM, pointwise and depthwise paths), Im2col, Pooling (MAX, AVE,
STOCHASTIC), SPP."""
from __future__ import annotations

import math
import numpy as np

from .launch import kernel
from .gemm import A_K_BLOCKED, B_N_BLOCKED, C_N_BLOCKED, gemm
from .memory import to_device
from .staging import send_async
from .primitives import (
    add_bias,
    Impl,
    RED,
    add_to,
    copy_block,
    cuda,
    fill,
    grid1d,
    impl,
    scratch,
    segment_sum,
    state,
)


# -- im2col / col2im ---------------------------------------------------------------------------
# The column matrix's entry for row r = (ci*kh + i)*kw + j, image b and pixel l = oy*ow + ox
# sits at col[r*rs + b*bs + l]: channel-major (rs = the row length, bs = L) for the GEMM
# convolutions, image-major (rs = L, bs = C*kh*kw*L) for the Im2col layer's top.
@kernel
def _im2col(x, xoff, c, h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, m, col, rs, bs):
    """The column entries of images b in [0, m) of x (from xoff)."""
    L = oh * ow
    total = c * kh * kw * m * L
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = e % L
        t = e // L
        b = t % m
        r = t // m
        j = r % kw
        i = (r // kw) % kh
        ci = r // (kw * kh)
        oy = l // ow
        ox = l - oy * ow
        yy = oy * sh - ph + i * dh
        xx = ox * sw - pw + j * dw
        v = 0.0
        if 0 <= yy < h and 0 <= xx < w:
            v = x[xoff + ((b * c + ci) * h + yy) * w + xx]
        col[r * rs + b * bs + l] = v


@kernel
def _col2im(col, rs, bs, c, h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, m, x, xoff):
    """x[b, ci, yy, xx] = sum of the col entries that im2col read from it (a gather)."""
    total = m * c * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = e % w
        t = e // w
        yy = t % h
        t //= h
        ci = t % c
        b = t // c
        acc = 0.0
        for i in range(kh):
            ty = yy + ph - i * dh
            if ty < 0 or ty % sh != 0:
                continue
            oy = ty // sh
            if oy >= oh:
                continue
            for j in range(kw):
                tx = xx + pw - j * dw
                if tx < 0 or tx % sw != 0:
                    continue
                ox = tx // sw
                if ox >= ow:
                    continue
                acc += col[((ci * kh + i) * kw + j) * rs + b * bs + oy * ow + ox]
        x[xoff + e] = acc


def im2col(x, xoff, c, h, w, geom, oh, ow, m, col, ld):
    """Channel-major columns of m images (rows ld long)."""
    n = c * geom[0] * geom[1] * m * oh * ow
    if n:
        _im2col[grid1d(n)](x, xoff, c, h, w, *geom, oh, ow, m, col, ld, oh * ow)


def col2im(col, ld, c, h, w, geom, oh, ow, m, x, xoff):
    n = m * c * h * w
    if n:
        _col2im[grid1d(n)](col, ld, oh * ow, c, h, w, *geom, oh, ow, m, x, xoff)


def im2col_images(x, n, c, h, w, geom, oh, ow, col):
    """Image-major columns (the Im2col layer's top: (N, C*kh*kw, oh, ow))."""
    L = oh * ow
    total = n * c * geom[0] * geom[1] * L
    if total:
        _im2col[grid1d(total)](x, 0, c, h, w, *geom, oh, ow, n, col, L,
                               c * geom[0] * geom[1] * L)


def col2im_images(col, n, c, h, w, geom, oh, ow, x):
    L = oh * ow
    if n * c * h * w:
        _col2im[grid1d(n * c * h * w)](col, L, c * geom[0] * geom[1] * L, c, h, w, *geom, oh,
                                       ow, n, x, 0)


@kernel
def _nchw_to_cl(x, xoff, m, c, L, out):
    """out[ci, b*L + l] = x[b, ci, l]"""
    total = m * c * L
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = e % L
        t = e // L
        b = t % m
        ci = t // m
        out[e] = x[xoff + (b * c + ci) * L + l]


@kernel
def _cl_to_nchw(cl, m, c, L, bias, has_bias, y, yoff):
    """y[b, ci, l] = cl[ci, b*L + l] (+ bias[ci])"""
    total = m * c * L
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = e % L
        t = e // L
        ci = t % c
        b = t // c
        v = cl[(ci * m + b) * L + l]
        if has_bias:
            v += bias[ci]
        y[yoff + e] = v


def nchw_to_cl(x, xoff, m, c, L, out):
    if m * c * L:
        _nchw_to_cl[grid1d(m * c * L)](x, xoff, m, c, L, out)


def cl_to_nchw(cl, m, c, L, bias, y, yoff):
    if m * c * L:
        has = bias is not None
        _cl_to_nchw[grid1d(m * c * L)](cl, m, c, L, bias if has else cl, has, y, yoff)


# -- depthwise convolution ---------------------------------------------------------------------
@kernel
def _dw_forward(x, n, c, h, w, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, bias, has_bias,
                y, oh, ow):
    o = c * mult
    total = n * o * oh * ow
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ox = e % ow
        t = e // ow
        oy = t % oh
        t //= oh
        oc = t % o
        b = t // o
        ci = oc // mult
        acc = 0.0
        for i in range(kh):
            yy = oy * sh - ph + i * dh
            if yy < 0 or yy >= h:
                continue
            for j in range(kw):
                xx = ox * sw - pw + j * dw
                if 0 <= xx < w:
                    acc += x[((b * c + ci) * h + yy) * w + xx] * wt[(oc * kh + i) * kw + j]
        if has_bias:
            acc += bias[oc]
        y[e] = acc


@kernel
def _dw_backward_data(dy, n, c, h, w, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, dx, oh, ow):
    o = c * mult
    total = n * c * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = e % w
        t = e // w
        yy = t % h
        t //= h
        ci = t % c
        b = t // c
        acc = 0.0
        for q in range(mult):
            oc = ci * mult + q
            for i in range(kh):
                ty = yy + ph - i * dh
                if ty < 0 or ty % sh != 0:
                    continue
                oy = ty // sh
                if oy >= oh:
                    continue
                for j in range(kw):
                    tx = xx + pw - j * dw
                    if tx < 0 or tx % sw != 0:
                        continue
                    ox = tx // sw
                    if ox >= ow:
                        continue
                    acc += dy[((b * o + oc) * oh + oy) * ow + ox] * wt[(oc * kh + i) * kw + j]
        dx[e] = acc


@kernel
def _dw_backward_weight(x, n, c, h, w, dy, kh, kw, ph, pw, sh, sw, dh, dw, mult, dwt, oh, ow):
    """dwt[oc, i, j] += sum over b, oy, ox: one block per weight element."""
    buf = cuda.shared.array(RED, np.float64)
    k = cuda.blockIdx.x
    t = cuda.threadIdx.x
    j = k % kw
    i = (k // kw) % kh
    oc = k // (kw * kh)
    ci = oc // mult
    o = c * mult
    acc = 0.0
    total = n * oh * ow
    for e in range(t, total, cuda.blockDim.x):
        ox = e % ow
        r = e // ow
        oy = r % oh
        b = r // oh
        yy = oy * sh - ph + i * dh
        xx = ox * sw - pw + j * dw
        if 0 <= yy < h and 0 <= xx < w:
            acc += x[((b * c + ci) * h + yy) * w + xx] * dy[((b * o + oc) * oh + oy) * ow + ox]
    buf[t] = acc
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        dwt[k] += buf[0]


def depthwise_forward(x, n, c, h, w, wt, geom, mult, bias, y, oh, ow):
    total = n * c * mult * oh * ow
    has = bias is not None
    _dw_forward[grid1d(total)](x, n, c, h, w, wt, *geom, mult, bias if has else wt, has,
                               y, oh, ow)


def depthwise_backward_data(dy, n, c, h, w, wt, geom, mult, dx, oh, ow):
    _dw_backward_data[grid1d(n * c * h * w)](dy, n, c, h, w, wt, *geom, mult, dx, oh, ow)


def depthwise_backward_weight(x, n, c, h, w, dy, geom, mult, dwt, oh, ow):
    nk = c * mult * geom[0] * geom[1]
    _dw_backward_weight[nk, RED](x, n, c, h, w, dy, *geom, mult, dwt, oh, ow)


# -- pooling -------------------------------------------------------------------------------------
@kernel
def _max_pool_fwd(x, nc, h, w, kh, kw, ph, pw, sh, sw, y, mask, oh, ow):
    total = nc * oh * ow
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ox = e % ow
        t = e // ow
        oy = t % oh
        p = t // oh
        hs = oy * sh - ph
        ws = ox * sw - pw
        he = min(hs + kh, h)
        we = min(ws + kw, w)
        hs = max(hs, 0)
        ws = max(ws, 0)
        best = -math.inf
        arg = -1
        for yy in range(hs, he):
            for xx in range(ws, we):
                v = x[(p * h + yy) * w + xx]
                if v > best or arg < 0:
                    best = v
                    arg = yy * w + xx
        y[e] = best
        mask[e] = arg


@kernel
def _max_pool_bwd(dy, mask, nc, h, w, kh, kw, ph, pw, sh, sw, dx, oh, ow):
    total = nc * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = e % w
        t = e // w
        yy = t % h
        p = t // h
        phs = 0 if yy + ph < kh else (yy + ph - kh) // sh + 1
        phe = min((yy + ph) // sh + 1, oh)
        pws = 0 if xx + pw < kw else (xx + pw - kw) // sw + 1
        pwe = min((xx + pw) // sw + 1, ow)
        acc = 0.0
        idx = yy * w + xx
        for oy in range(phs, phe):
            for ox in range(pws, pwe):
                q = (p * oh + oy) * ow + ox
                if mask[q] == idx:
                    acc += dy[q]
        dx[e] = acc


@kernel
def _ave_pool_fwd(x, nc, h, w, kh, kw, ph, pw, sh, sw, y, oh, ow):
    total = nc * oh * ow
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ox = e % ow
        t = e // ow
        oy = t % oh
        p = t // oh
        hs = oy * sh - ph
        ws = ox * sw - pw
        he = min(hs + kh, h + ph)
        we = min(ws + kw, w + pw)
        size = (he - hs) * (we - ws)
        hs = max(hs, 0)
        ws = max(ws, 0)
        he = min(he, h)
        we = min(we, w)
        acc = 0.0
        for yy in range(hs, he):
            for xx in range(ws, we):
                acc += x[(p * h + yy) * w + xx]
        y[e] = acc / size


@kernel
def _ave_pool_bwd(dy, nc, h, w, kh, kw, ph, pw, sh, sw, dx, oh, ow):
    total = nc * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = e % w + pw
        t = e // w
        yy = t % h + ph
        p = t // h
        phs = 0 if yy < kh else (yy - kh) // sh + 1
        phe = min(yy // sh + 1, oh)
        pws = 0 if xx < kw else (xx - kw) // sw + 1
        pwe = min(xx // sw + 1, ow)
        acc = 0.0
        for oy in range(phs, phe):
            for ox in range(pws, pwe):
                hs = oy * sh - ph
                ws = ox * sw - pw
                he = min(hs + kh, h + ph)
                we = min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                acc += dy[(p * oh + oy) * ow + ox] / size
        dx[e] = acc


def max_pool_forward(x, nc, h, w, geom, y, mask, oh, ow):
    _max_pool_fwd[grid1d(nc * oh * ow)](x, nc, h, w, *geom, y, mask, oh, ow)


def max_pool_backward(dy, mask, nc, h, w, geom, dx, oh, ow):
    _max_pool_bwd[grid1d(nc * h * w)](dy, mask, nc, h, w, *geom, dx, oh, ow)


def ave_pool_forward(x, nc, h, w, geom, y, oh, ow):
    _ave_pool_fwd[grid1d(nc * oh * ow)](x, nc, h, w, *geom, y, oh, ow)


def ave_pool_backward(dy, nc, h, w, geom, dx, oh, ow):
    _ave_pool_bwd[grid1d(nc * h * w)](dy, nc, h, w, *geom, dx, oh, ow)


@kernel
def _mask_to_float(mask, n, out):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = mask[i]


def mask_to_float(mask, out, n):
    _mask_to_float[grid1d(n)](mask, n, out)


# -- STOCHASTIC pooling -------------------------------------------------------------------------------
@kernel
def _sto_pool_train(x, nc, h, w, kh, kw, sh, sw, rand, y, mask, oh, ow):
    for e in range(cuda.grid(1), nc * oh * ow, cuda.gridsize(1)):
        px = e % ow
        t = e // ow
        py = t % oh
        p = t // oh
        hs = py * sh
        he = min(hs + kh, h)
        ws = px * sw
        we = min(ws + kw, w)
        total = 0.0
        for iy in range(hs, he):
            for ix in range(ws, we):
                total += x[(p * h + iy) * w + ix]
        thres = rand[e] * total
        acc = 0.0
        idx = -1
        for iy in range(hs, he):
            for ix in range(ws, we):
                if idx < 0:
                    acc += x[(p * h + iy) * w + ix]
                    if acc >= thres:
                        idx = iy * w + ix
        if idx < 0 and he > hs and we > ws:
            idx = (he - 1) * w + (we - 1)
        if idx >= 0:
            y[e] = x[p * h * w + idx]
        else:
            y[e] = 0.0
        mask[e] = idx


@kernel
def _sto_pool_test(x, nc, h, w, kh, kw, sh, sw, y, ssum, oh, ow):
    """y = sum v^2 / sum v per window (0 unless the sum is positive); ssum keeps sum v."""
    for e in range(cuda.grid(1), nc * oh * ow, cuda.gridsize(1)):
        px = e % ow
        t = e // ow
        py = t % oh
        p = t // oh
        hs = py * sh
        he = min(hs + kh, h)
        ws = px * sw
        we = min(ws + kw, w)
        s = 0.0
        q = 0.0
        for iy in range(hs, he):
            for ix in range(ws, we):
                v = x[(p * h + iy) * w + ix]
                s += v
                q += v * v
        ssum[e] = s
        y[e] = q / s if s > 0.0 else 0.0


@kernel
def _sto_pool_test_bwd(x, y, dy, ssum, nc, h, w, kh, kw, sh, sw, dx, oh, ow):
    for e in range(cuda.grid(1), nc * h * w, cuda.gridsize(1)):
        ix = e % w
        t = e // w
        iy = t % h
        p = t // h
        phs = 0 if iy < kh else (iy - kh) // sh + 1
        phe = min(iy // sh + 1, oh)
        pws = 0 if ix < kw else (ix - kw) // sw + 1
        pwe = min(ix // sw + 1, ow)
        acc = 0.0
        v = x[e]
        for py in range(phs, phe):
            for px in range(pws, pwe):
                q = (p * oh + py) * ow + px
                s = ssum[q]
                if s > 0.0:
                    acc += dy[q] / s * (2.0 * v - y[q])
        dx[e] = acc


def sto_pool_train(x, nc, h, w, kh, kw, sh, sw, rand, y, mask, oh, ow):
    _sto_pool_train[grid1d(nc * oh * ow)](x, nc, h, w, kh, kw, sh, sw, rand, y, mask, oh, ow)


def sto_pool_test(x, nc, h, w, kh, kw, sh, sw, y, ssum, oh, ow):
    _sto_pool_test[grid1d(nc * oh * ow)](x, nc, h, w, kh, kw, sh, sw, y, ssum, oh, ow)


def sto_pool_test_backward(x, y, dy, ssum, nc, h, w, kh, kw, sh, sw, dx, oh, ow):
    _sto_pool_test_bwd[grid1d(nc * h * w)](x, y, dy, ssum, nc, h, w, kh, kw, sh, sw, dx, oh, ow)


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
                depthwise_forward(x, n, c, h, w, wt, layer.geom, o // c, bias, y, oh, ow)
                continue
            L = oh * ow
            kkg = layer.blobs[0].count // o
            ckk, og = kkg * g, o // g
            nb = _chunk(n, ckk * L)
            relu = getattr(layer, "_cu_fused_relu", None)
            for n0 in range(0, n, nb):
                m = min(nb, n - n0)
                ML = m * L
                col = scratch("col", ckk * ML, x.dtype)
                if path == "pointwise":
                    nchw_to_cl(x, n0 * c * L, m, c, L, col)
                else:
                    im2col(x, n0 * c * h * w, c, h, w, layer.geom, oh, ow, m, col, ML)
                # y's images written in place (columns (image, pixel)), bias and a fused
                # ReLU in the GEMM's epilogue
                for gi in range(g):
                    gemm(0, 0, og, ML, kkg, 1.0, wt, col, 0.0, y, offA=gi * og * kkg,
                         offB=gi * kkg * ML, offC=n0 * o * L + gi * og * L, lda=kkg, ldb=ML,
                         ldc=L, blocked=(C_N_BLOCKED, L, o * L),
                         bias=None if bias is None else
                         (bias if g == 1 else bias[gi * og:(gi + 1) * og]), relu=relu)

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
                segment_sum(dy, n, o, oh * ow, layer.blobs[1].mutable_gpu_diff(), 1.0, 1.0)
            pd = propagate_down[i]
            if not (do_w or pd):
                continue
            x = b.gpu_data()
            dx = b.mutable_gpu_diff() if pd else None
            if path == "depthwise":
                if do_w:
                    depthwise_backward_weight(x, n, c, h, w, dy, layer.geom, o // c, dwt,
                                                oh, ow)
                if pd:
                    depthwise_backward_data(dy, n, c, h, w, wt, layer.geom, o // c, dx,
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
    dy_cols = (A_K_BLOCKED, L, o * L)     # dy's images read as (channel, (image, pixel))
    for n0 in range(0, n, nb):
        m = min(nb, n - n0)
        ML = m * L
        col = scratch("col", ckk * ML, dy.dtype)
        dy0 = n0 * o * L
        if dwt is not None:
            if path == "pointwise":
                nchw_to_cl(x, n0 * c * L, m, c, L, col)
            else:
                im2col(x, n0 * c * h * w, c, h, w, geom, oh, ow, m, col, ML)
            for gi in range(g):
                gemm(0, 1, og, kkg, ML, 1.0, dy, col, 1.0, dwt, offA=dy0 + gi * og * L,
                     lda=L, blocked=dy_cols, offB=gi * kkg * ML, ldb=ML, offC=gi * og * kkg,
                     ldc=kkg)
        if dx is not None:
            for gi in range(g):
                gemm(1, 0, kkg, ML, og, 1.0, wt, dy, 0.0, col, offA=gi * og * kkg,
                     lda=kkg, offB=dy0 + gi * og * L, ldb=L, blocked=(B_N_BLOCKED, L, o * L),
                     offC=gi * kkg * ML, ldc=ML)
            if path == "pointwise":
                cl_to_nchw(col, m, c, L, None, dx, n0 * c * L)
            else:
                col2im(col, ML, c, h, w, geom, oh, ow, m, dx, n0 * c * h * w)


# -- Pooling ---------------------------------------------------------------------------------
class _PlainPooling(Impl):
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
            max_pool_forward(x, n * c, h, w, geom, y, mask, oh, ow)
            if len(top) == 2:
                mask_to_float(mask, top[1].mutable_gpu_data(), top[0].count)
        else:
            ave_pool_forward(x, n * c, h, w, geom, y, oh, ow)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        geom = layer._args()
        if layer.method == layer.param.pooling_param.MAX:
            max_pool_backward(dy, layer._cu_mask, n * c, h, w, geom, dx, oh, ow)
        else:
            ave_pool_backward(dy, n * c, h, w, geom, dx, oh, ow)


_PLAIN_POOLING = _PlainPooling()


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
                depthwise_backward_data(x, n, o, oh, ow, wt, layer.geom, c // o, y, h, w)
            else:       # the transposed convolution: a convolution's input gradient
                conv_backward(None, x, (n, o, oh, ow), (c, h, w), wt,
                              layer.blobs[0].count // c, layer.group, layer.geom, "gemm",
                              None, y)
            if layer.bias_term:
                add_bias(y, n, o, oh * ow, layer.blobs[1].gpu_data())

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
                segment_sum(dy, n, o, oh * ow, layer.blobs[1].mutable_gpu_diff(), 1.0, 1.0)
            pd = propagate_down[i]
            if not (do_w or pd):
                continue
            x = b.gpu_data()
            dx = b.mutable_gpu_diff() if pd else None
            if layer._depthwise():
                mult = c // o
                if do_w:
                    depthwise_backward_weight(dy, n, o, oh, ow, x, layer.geom, mult, dwt, h, w)
                if pd:
                    depthwise_forward(dy, n, o, oh, ow, wt, layer.geom, mult, None, dx, h, w)
                continue
            L = h * w
            okkg = layer.blobs[0].count // c
            okk, cg = okkg * g, c // g
            nb = _chunk(n, okk * L)
            for n0 in range(0, n, nb):
                m = min(nb, n - n0)
                ML = m * L
                col = scratch("col", okk * ML, x.dtype)
                im2col(dy, n0 * o * oh * ow, o, oh, ow, layer.geom, h, w, m, col, ML)
                xcl = scratch("cl", c * ML, x.dtype)
                if do_w:
                    nchw_to_cl(x, n0 * c * L, m, c, L, xcl)
                    for gi in range(g):
                        gemm(0, 1, cg, okkg, ML, 1.0, xcl, col, 1.0, dwt, offA=gi * cg * ML,
                             lda=ML, offB=gi * okkg * ML, ldb=ML, offC=gi * cg * okkg, ldc=okkg)
                if pd:
                    for gi in range(g):
                        gemm(0, 0, cg, ML, okkg, 1.0, wt, col, 0.0, xcl, offA=gi * cg * okkg,
                             lda=okkg, offB=gi * okkg * ML, ldb=ML, offC=gi * cg * ML, ldc=ML)
                    cl_to_nchw(xcl, m, c, L, None, dx, n0 * c * L)


@impl("Im2col")
class Im2col(Impl):
    def forward(self, layer, bottom, top):
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        im2col_images(bottom[0].gpu_data(), n, c, h, w, layer.geom, oh, ow,
                        top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0]:
            n, c, h, w = bottom[0].shape
            oh, ow = top[0].shape[2:]
            col2im_images(top[0].gpu_diff(), n, c, h, w, layer.geom, oh, ow,
                            bottom[0].mutable_gpu_diff())


@impl("Pooling")
class Pooling(Impl):
    """MAX and AVE through _PlainPooling; STOCHASTIC: TRAIN draws one uniform number per output from
    the layer's generator on the host (the CPU layer's draw) and samples on the device; TEST
    computes the weighted average and its exact gradient."""

    def forward(self, layer, bottom, top):
        pp = layer.param.pooling_param
        if layer.method != pp.STOCHASTIC:
            return _PLAIN_POOLING.forward(layer, bottom, top)
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        x = bottom[0].gpu_data()
        y = top[0].mutable_gpu_data()
        if layer.phase == 0:
            rand = send_async(layer, layer.rng.random(top[0].shape))   # host-drawn, as CPU
            mask = state(layer, "mask", top[0].count, np.int64)
            sto_pool_train(x, n * c, h, w, layer.kh, layer.kw, layer.sh, layer.sw, rand, y,
                             mask, oh, ow)
        else:
            ssum = state(layer, "ssum", top[0].count, np.float64)
            sto_pool_test(x, n * c, h, w, layer.kh, layer.kw, layer.sh, layer.sw, y, ssum,
                            oh, ow)

    def backward(self, layer, top, propagate_down, bottom):
        pp = layer.param.pooling_param
        if layer.method != pp.STOCHASTIC:
            return _PLAIN_POOLING.backward(layer, top, propagate_down, bottom)
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        oh, ow = top[0].shape[2:]
        dx = bottom[0].mutable_gpu_diff()
        if layer.phase == 0:
            max_pool_backward(top[0].gpu_diff(), layer._cu_mask, n * c, h, w,
                                (layer.kh, layer.kw, 0, 0, layer.sh, layer.sw), dx, oh, ow)
        else:
            sto_pool_test_backward(bottom[0].gpu_data(), top[0].gpu_data(), top[0].gpu_diff(),
                                     layer._cu_ssum, n * c, h, w, layer.kh, layer.kw, layer.sh,
                                     layer.sw, dx, oh, ow)


_POOLING = Pooling()


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
            _POOLING.forward(lv, bottom, [t])
            k = t.count // max(n, 1)
            copy_block(t.gpu_data(), n, k, 1, y, width, off, True)
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
        fill(dx, 0.0, cnt)
        off = 0
        for lv, t in zip(layer._levels, layer._tops):
            k = t.count // max(n, 1)
            copy_block(t.mutable_gpu_diff(), n, k, 1, dy, width, off, False)
            off += k
            _POOLING.backward(lv, [t], [True], [proxy])
            add_to(proxy.gpu_diff(), dx, cnt)
