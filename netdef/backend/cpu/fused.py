"""Fused inference kernels: convolution + bias + ReLU + pooling (+ ReLU) in one pass per task.

Used by the frozen-net predictor (:mod:`netdef.deploy.predictor`) only; training keeps the
separate layers.  A task handles its block of the batch exactly as
:func:`netdef.backend.cpu.gemm.conv_forward_task` does (same split, same chunks, the same GEMM
calls), but the GEMM always writes into the thread's ``(O, m*L)`` workspace, and each output
plane is then finished while it is still in cache: bias, the producer's fused ReLU
(``relu_pre``), the pooling window (MAX: first maximum in scan order, windows clipped to the
image; AVE: float64 sum divided by the window clipped to the padded input -- the loops of
:mod:`netdef.backend.cpu.vision`), and a ReLU after the pooling (``relu_post``).  The
convolution's full-size output is never written to memory.

``pool``: 0 none (the plane, after bias and ReLU, is the output), 1 MAX, 2 AVE.  ReLU: slope 0
leaves ``max(v, 0)`` (NaN stays NaN, as ``np.maximum``); otherwise negatives are multiplied by
the slope (pass it in the data's dtype).
"""
from __future__ import annotations

from numba import njit
from numba import uint64 as U

from .gemm import NO_TRANS, _im2col_chunk, gemm


@njit(cache=True, nogil=True, inline="always")
def _relu(v, slope):
    if v < 0:
        return v * slope
    return v


@njit(cache=True, nogil=True)
def _max_plane(src, sb, h, w, kh, kw, ph, pw, sh, sw, relu_post, slope_post, yf, yb, oh, ow):
    # output columns whose window lies inside the image: the window's elements are compared
    # in the same (row, column) order as the general loop, a whole output row at a time, so
    # the inner loop vectorises
    pxa = min(ow, (pw + sw - 1) // sw)
    pxb = max(pxa, min(ow, (w - kw + pw) // sw + 1))
    for py in range(oh):
        hs = py * sh - ph
        he = min(hs + kh, h)
        hs = max(hs, 0)
        rb = yb + py * ow
        if he > hs and pxb > pxa:
            s0 = sb + hs * w - pw
            if sw == 2:
                for px in range(pxa, pxb):
                    yf[U(rb + px)] = src[U(s0 + 2 * px)]
            else:
                for px in range(pxa, pxb):
                    yf[U(rb + px)] = src[U(s0 + px * sw)]
            for iy in range(hs, he):
                for kj in range(kw):
                    if iy == hs and kj == 0:
                        continue
                    s1 = sb + iy * w + kj - pw
                    if sw == 2:
                        for px in range(pxa, pxb):
                            v = src[U(s1 + 2 * px)]
                            a = yf[U(rb + px)]
                            yf[U(rb + px)] = v if v > a else a  # noqa: FURB136 (NaN: as the loop)
                    else:
                        for px in range(pxa, pxb):
                            v = src[U(s1 + px * sw)]
                            a = yf[U(rb + px)]
                            yf[U(rb + px)] = v if v > a else a  # noqa: FURB136 (NaN: as the loop)
        for px in range(ow):
            if pxa <= px < pxb and he > hs:
                continue
            ws = px * sw - pw
            we = min(ws + kw, w)
            ws = max(ws, 0)
            o = U(rb + px)
            if he <= hs or we <= ws:
                yf[o] = 0.0
                continue
            best = src[U(sb + hs * w + ws)]
            for iy in range(hs, he):
                r = sb + iy * w
                for ix in range(ws, we):
                    v = src[U(r + ix)]
                    if v > best:  # noqa: PLR1730 -- the first maximum, NaN as in vision.py
                        best = v
            yf[o] = best
        if relu_post:
            for px in range(ow):
                yf[U(rb + px)] = _relu(yf[U(rb + px)], slope_post)


@njit(cache=True, nogil=True)
def _ave_plane(src, sb, h, w, kh, kw, ph, pw, sh, sw, relu_post, slope_post, yf, yb, oh, ow):
    for py in range(oh):
        hs = py * sh - ph
        he = min(hs + kh, h + ph)
        for px in range(ow):
            ws = px * sw - pw
            we = min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            acc = 0.0
            for iy in range(max(hs, 0), min(he, h)):
                r = sb + iy * w
                for ix in range(max(ws, 0), min(we, w)):
                    acc += src[U(r + ix)]
            o = U(yb + py * ow + px)
            if size > 0:
                yf[o] = acc / size
            else:
                yf[o] = 0.0
            if relu_post:
                yf[o] = _relu(yf[o], slope_post)


@njit(cache=True, nogil=True)
def conv_fused_task(t, nt, x, wt, bias, kh, kw, ph, pw, sh, sw, dh, dw, group, pointwise,
                    chunk, oh, ow, relu_pre, slope_pre, pool, pkh, pkw, pph, ppw, psh, psw,
                    relu_post, slope_post, col, out, xp, y):
    """Task ``t`` of ``nt``: y = relu_post(pool(relu_pre(conv(x, wt) + bias))) for its block
    of the batch.  x (N, C, H, W); wt (O, C/g*kh*kw); (oh, ow) the convolution's output size;
    y (N, O, poh, pow) (pool > 0) or (N, O, oh, ow).  Workspaces of the calling thread: col
    (C*kh*kw*chunk*L; unused for a pointwise convolution with chunk 1), out (O*chunk*L), xp
    (the padded image, as for :func:`netdef.backend.cpu.gemm.conv_forward_task`)."""
    n_img, c_in = x.shape[0], x.shape[1]
    o = wt.shape[0]
    L = oh * ow
    kkg = wt.shape[1]
    og = o // group
    has_bias = bias.shape[0] > 0
    per = (n_img + nt - 1) // nt
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    wf = wt.reshape(-1)
    poh, pow_ = y.shape[2], y.shape[3]
    PL = poh * pow_
    img_in = c_in * x.shape[2] * x.shape[3]
    end = min(n_img, (t + 1) * per)
    for n0 in range(t * per, end, chunk):
        m = min(chunk, end - n0)
        cols = m * L
        direct = pointwise and m == 1
        if not direct:
            _im2col_chunk(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, xp)
        for gi in range(group):
            if direct:
                gemm(NO_TRANS, NO_TRANS, og, cols, kkg, 1.0, wf, gi * og * kkg, kkg,
                     xf, n0 * img_in + gi * kkg * L, L, 0.0, out, gi * og * cols, cols)
            else:
                gemm(NO_TRANS, NO_TRANS, og, cols, kkg, 1.0, wf, gi * og * kkg, kkg,
                     col, gi * kkg * cols, cols, 0.0, out, gi * og * cols, cols)
        for j in range(m):
            for oc in range(o):
                sb = oc * cols + j * L
                yb = ((n0 + j) * o + oc) * PL
                if pool == 0:
                    for i in range(L):
                        v = out[U(sb + i)]
                        if has_bias:
                            v += bias[oc]
                        if relu_pre:
                            v = _relu(v, slope_pre)
                        yf[U(yb + i)] = v
                    continue
                if has_bias or relu_pre:
                    bv = bias[oc] if has_bias else 0.0
                    for i in range(L):
                        v = out[U(sb + i)]
                        if has_bias:
                            v += bv
                        if relu_pre:
                            v = _relu(v, slope_pre)
                        out[U(sb + i)] = v
                if pool == 1:
                    _max_plane(out, sb, oh, ow, pkh, pkw, pph, ppw, psh, psw, relu_post,
                               slope_post, yf, yb, poh, pow_)
                else:
                    _ave_plane(out, sb, oh, ow, pkh, pkw, pph, ppw, psh, psw, relu_post,
                               slope_post, yf, yb, poh, pow_)
