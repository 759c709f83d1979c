"""Fused convolution kernels: convolution + bias + ReLU + pooling (+ ReLU) in one pass per task.

The frozen-net predictor (:mod:`netdef.deploy.predictor`) runs whole groups through
:func:`conv_fused_task` (training's tiled convolutions take
:func:`netdef.backend.cpu.microkernel.conv_task`, without the pooling epilogues).  A task
handles its block of the batch (and of the output channels, when the batch is too small to
feed the threads), image by image through the register tiles of
:mod:`netdef.backend.cpu.microkernel` or in chunks through im2col + GEMM (the split and the
GEMM calls of :func:`netdef.backend.cpu.gemm.conv_forward_task`); the convolution goes to
the thread's workspace, and each output plane is then finished while it is still in cache,
with 8-lane vector steps (:mod:`netdef.backend.cpu.simd`): bias, the producer's fused ReLU,
the pooling window (MAX: the first maximum, windows clipped to the image; AVE: float64 sum
divided by the window clipped to the padded input -- the semantics of
:mod:`netdef.backend.cpu.vision`), and a ReLU after the pooling.  The convolution's
full-size output is never written to memory.

``pool``: 0 none (the plane, after bias and ReLU, is the output), 1 MAX, 2 AVE.  A ReLU is
given by its slope in the data's dtype: ``act(v) = v * slope if v < 0 else v`` (NaN stays
NaN); slope 1 is no ReLU.
"""
from __future__ import annotations

import numpy as np
from numba import get_thread_id, njit, prange
from numba import uint64 as U

from .gemm import NO_TRANS, _im2col_chunk, gemm
from .microkernel import conv_chunk_flat, conv_image, padded_row
from .simd import (
    act,
    add8,
    add8s2,
    bias_act_plane,
    clean8,
    max8,
    max8s2,
    store8,
    store8s2,
)


@njit(cache=True)
def pool_buffers(w, ow, kw, sw):
    """Sizes of :func:`_pool_plane`'s ``vm`` and ``hb`` for planes of width w pooled to ow."""
    return w + ow * sw + 8 * sw + kw + 32, ow + 16


@njit(cache=True, nogil=True)
def _pool_plane(src, sb, rs, h, w, kh, kw, ph, pw, sh, sw, bias, slope_pre, ave, slope_post,
                yf, yb, oh, ow, vm, vf, hb):
    """One output plane of y = act_post(pool(act_pre(src + bias))), src the (h, w) plane at
    ``sb`` with row stride ``rs``, y the (oh, ow) plane at ``yb``.

    Separable: for each output row the window's input rows are reduced column by column into
    ``vm`` (bias and activation applied on the way), then ``vm``'s windows along the row into
    ``hb`` -- 8 lanes per step (:mod:`netdef.backend.cpu.simd`; along the row for strides 1
    and 2).  Past the image ``vm`` holds -inf (MAX) or 0 (AVE), so windows hanging off the
    right edge need no clipping; windows starting left of the image are done one by one.
    MAX is the layer's scan ``best = first; best = v if v > best``: the window's first
    element if it is NaN, else the largest of its other values, NaN ignored -- so the
    column maxima in ``vm`` ignore NaN and start the row's fold from the first row's values
    ``vf``.  AVE sums in float64 and divides by the window clipped to the padded input.  An
    empty window gives 0.  ``vm``, ``vf``, ``hb`` sizes: :func:`pool_buffers` (float64 for
    AVE, the data type for MAX; ``vf`` unused by AVE).
    """
    w8 = w - w % 8
    pxa = min(ow, (pw + sw - 1) // sw)           # the first window starting inside the image
    nv = (ow - pxa + 7) // 8 * 8 if sw <= 2 else 0
    vm[0] = 0
    zero = vm[0]
    one = zero + 1
    margin = zero if ave else -np.inf
    for x in range(w, vm.shape[0]):
        vm[U(x)] = margin
    for py in range(oh):
        hs = py * sh - ph
        hs0 = max(hs, 0)
        he = min(hs + kh, h)
        rb = yb + py * ow
        if he <= hs0:
            for px in range(ow):
                yf[U(rb + px)] = 0.0
            continue
        for iy in range(hs0, he):
            r = U(sb + iy * rs)
            if ave:
                if iy == hs0:
                    for x in range(0, w8, 8):
                        store8(vm, U(x), src, r + U(x), bias, slope_pre)
                    for x in range(w8, w):
                        vm[U(x)] = act(src[r + U(x)] + bias, slope_pre)
                else:
                    for x in range(0, w8, 8):
                        add8(vm, U(x), src, r + U(x), bias, slope_pre)
                    for x in range(w8, w):
                        vm[U(x)] += act(src[r + U(x)] + bias, slope_pre)
            elif iy == hs0:
                for x in range(0, w8, 8):
                    store8(vf, U(x), src, r + U(x), bias, slope_pre)
                    clean8(vm, U(x), src, r + U(x), bias, slope_pre)
                for x in range(w8, w):
                    v = act(src[r + U(x)] + bias, slope_pre)
                    vf[U(x)] = v
                    vm[U(x)] = -np.inf if np.isnan(v) else v
            else:
                for x in range(0, w8, 8):
                    max8(vm, U(x), src, r + U(x), bias, slope_pre)
                for x in range(w8, w):
                    v = act(src[r + U(x)] + bias, slope_pre)
                    a = vm[U(x)]
                    vm[U(x)] = v if v > a else a  # noqa: FURB136 (NaN: ignored)
        for px0 in range(pxa, pxa + nv, 8):
            s0 = U(px0 * sw - pw)
            d = U(px0)
            if ave:
                if sw == 2:
                    store8s2(hb, d, vm, s0)
                    for kj in range(1, kw):
                        add8s2(hb, d, vm, s0 + U(kj))
                else:
                    store8(hb, d, vm, s0, zero, one)
                    for kj in range(1, kw):
                        add8(hb, d, vm, s0 + U(kj), zero, one)
            elif sw == 2:
                store8s2(hb, d, vf, s0)
                for kj in range(kw):
                    max8s2(hb, d, vm, s0 + U(kj))
            else:
                store8(hb, d, vf, s0, zero, one)
                for kj in range(kw):
                    max8(hb, d, vm, s0 + U(kj), zero, one)
        for px in range(ow):
            if pxa <= px < pxa + nv:
                continue
            ws = px * sw - pw
            we = min(ws + kw, w)
            ws = max(ws, 0)
            if we <= ws:
                hb[U(px)] = zero
            elif ave:
                acc = vm[U(ws)]
                for ix in range(ws + 1, we):
                    acc += vm[U(ix)]
                hb[U(px)] = acc
            else:
                best = vf[U(ws)]
                for ix in range(ws, we):
                    v = vm[U(ix)]
                    if v > best:  # noqa: PLR1730 -- NaN: only the window's first element
                        best = v
                hb[U(px)] = best
        px = ow - 1
        while px >= 0 and px * sw - pw >= w:        # windows wholly right of the image
            hb[U(px)] = zero
            px -= 1
        if ave:
            rows = min(hs + kh, h + ph) - hs
            for px in range(ow):
                ws = px * sw - pw
                v = hb[U(px)] / (rows * (min(ws + kw, w + pw) - ws))
                yf[U(rb + px)] = act(v, slope_post)
        else:
            ow8 = ow - ow % 8
            for px in range(0, ow8, 8):
                store8(yf, U(rb + px), hb, U(px), zero, slope_post)
            for px in range(ow8, ow):
                yf[U(rb + px)] = act(hb[U(px)], slope_post)


@njit(cache=True, nogil=True)
def _epilogue(src, sb, rs, h, w, bias, slope_pre, pool, pkh, pkw, pph, ppw, psh, psw,
              slope_post, yf, yb, poh, pow_, vm_max, vf_max, hb_max, vm_ave, hb_ave):
    """Finish one channel of one image: the (h, w) plane of ``src`` at ``sb`` (row stride
    ``rs``) through bias, ReLU, pooling and ReLU into y's plane at ``yb``."""
    if pool == 0:
        bias_act_plane(src, sb, rs, h, w, bias, slope_pre, yf, yb)
    elif pool == 1:
        _pool_plane(src, sb, rs, h, w, pkh, pkw, pph, ppw, psh, psw, bias, slope_pre, False,
                    slope_post, yf, yb, poh, pow_, vm_max, vf_max, hb_max)
    else:
        _pool_plane(src, sb, rs, h, w, pkh, pkw, pph, ppw, psh, psw, bias, slope_pre, True,
                    slope_post, yf, yb, poh, pow_, vm_ave, vm_ave, hb_ave)


@njit(cache=True, nogil=True)
def conv_fused_task(t, nt, cb, x, wt, bias, kh, kw, ph, pw, sh, sw, dh, dw, group, pointwise,
                    chunk, oh, ow, slope_pre, pool, pkh, pkw, pph, ppw, psh, psw, slope_post,
                    ap, offs, mr, nv, lanes, flat, col, out, xp, y):
    """Task ``t`` of ``nt * cb``: y = act_post(pool(act_pre(conv(x, wt) + bias))) for batch
    block ``t // cb`` of ``nt`` and output-channel block ``t % cb`` of ``cb`` (``cb > 1``
    feeds the threads when the batch is smaller than their number, e.g. one image: each
    channel block's task makes its own column matrix).  x (N, C, H, W); wt (O, C/g*kh*kw);
    bias (O,) (zeros without a bias term); (oh, ow) the convolution's output size; y (N, O,
    poh, pow) (pool > 0) or (N, O, oh, ow).
    ``act(v) = v * slope if v < 0 else v`` (slope 1: none).

    ``mr > 0``: computed image by image with the register tiles of
    :mod:`netdef.backend.cpu.microkernel` (``ap`` the packed weights, tiles of mr channels x
    lanes*nv pixels).  Not ``flat``: a stride-1 convolution straight from the zero-bordered
    image (``offs`` the tap offsets into it); the plane rows in ``out`` are then ``owp`` (ow
    rounded up to whole tiles) apart.  ``flat``: the im2col matrix of ``chunk`` images (K x
    chunk*L, any stride) read as one row of chunk*L pixels; each channel's row in ``out``
    takes chunk*L rounded up to whole tiles (``offs`` unused).  Otherwise im2col + GEMM in
    chunks of ``chunk`` images.  Workspaces of the calling thread: col (C*kh*kw*chunk*L, plus the tiles' overrun when
    flat; unused for a pointwise convolution with chunk 1 and for direct tiles), out
    (O*chunk*L, or O rounded up to mr times the padded plane), xp (the padded image, as for
    :func:`netdef.backend.cpu.gemm.conv_forward_task`, plus owp - ow + lanes values for
    direct tiles)."""
    n_img, c_in = x.shape[0], x.shape[1]
    o = wt.shape[0]
    L = oh * ow
    kkg = wt.shape[1]
    og = o // group
    per = (n_img + nt - 1) // nt
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    wf = wt.reshape(-1)
    poh, pow_ = y.shape[2], y.shape[3]
    PL = poh * pow_
    tb, tc = t // cb, t % cb
    unit = mr if mr > 0 else 8                  # channel blocks are whole tiles
    units = (o + unit - 1) // unit
    ustep = (units + cb - 1) // cb
    ub0, ub1 = min(units, tc * ustep), min(units, (tc + 1) * ustep)
    oc0, oc1 = min(o, ub0 * unit), min(o, ub1 * unit)
    img_in = c_in * x.shape[2] * x.shape[3]
    nvm, nhb = pool_buffers(ow, pow_, pkw, psw)
    vm_max = np.empty(nvm, x.dtype)
    vf_max = np.empty(nvm, x.dtype)
    hb_max = np.empty(nhb, x.dtype)
    vm_ave = np.empty(nvm, np.float64)
    hb_ave = np.empty(nhb, np.float64)
    end = min(n_img, (tb + 1) * per)
    if oc1 <= oc0:
        return
    if mr > 0 and flat:
        for n0 in range(tb * per, end, chunk):
            m = min(chunk, end - n0)
            LP = conv_chunk_flat(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, ap, kkg, mr,
                                 nv, lanes, ub0, ub1, col, out, xp)
            for j in range(m):
                for oc in range(oc0, oc1):
                    _epilogue(out, oc * LP + j * L, ow, oh, ow, bias[oc], slope_pre, pool,
                              pkh, pkw, pph, ppw, psh, psw, slope_post, yf,
                              ((n0 + j) * o + oc) * PL, poh, pow_, vm_max, vf_max, hb_max,
                              vm_ave, hb_ave)
        return
    if mr > 0:
        owp = padded_row(ow, nv, lanes)
        LP = oh * owp
        for n in range(tb * per, end):
            conv_image(x, n, kh, kw, ph, pw, dh, dw, oh, ow, ap, offs, mr, nv, lanes, ub0, ub1,
                       out, xp)
            for oc in range(oc0, oc1):
                _epilogue(out, oc * LP, owp, oh, ow, bias[oc], slope_pre, pool, pkh, pkw,
                          pph, ppw, psh, psw, slope_post, yf, (n * o + oc) * PL, poh, pow_,
                          vm_max, vf_max, hb_max, vm_ave, hb_ave)
        return
    for n0 in range(tb * per, end, chunk):
        m = min(chunk, end - n0)
        cols = m * L
        direct = pointwise and m == 1
        if not direct:
            _im2col_chunk(x, n0, m, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, xp)
        for gi in range(group):
            r0, r1 = max(oc0, gi * og), min(oc1, (gi + 1) * og)    # rows of this group
            if r1 <= r0:
                continue
            if direct:
                gemm(NO_TRANS, NO_TRANS, r1 - r0, cols, kkg, 1.0, wf, r0 * kkg, kkg,
                     xf, n0 * img_in + gi * kkg * L, L, 0.0, out, r0 * cols, cols)
            else:
                gemm(NO_TRANS, NO_TRANS, r1 - r0, cols, kkg, 1.0, wf, r0 * kkg, kkg,
                     col, gi * kkg * cols, cols, 0.0, out, r0 * cols, cols)
        for j in range(m):
            for oc in range(oc0, oc1):
                _epilogue(out, oc * cols + j * L, ow, oh, ow, bias[oc], slope_pre, pool, pkh,
                          pkw, pph, ppw, psh, psw, slope_post, yf, ((n0 + j) * o + oc) * PL,
                          poh, pow_, vm_max, vf_max, hb_max, vm_ave, hb_ave)


@njit(cache=True, parallel=True)
def conv_fused_run(nt, cb, x, wt, bias, kh, kw, ph, pw, sh, sw, dh, dw, group, pointwise,
                   chunk, oh, ow, slope_pre, pool, pkh, pkw, pph, ppw, psh, psw, slope_post,
                   ap, offs, mr, nv, lanes, flat, col, out, xp, y):
    """Every task (``nt * cb``) of :func:`conv_fused_task` on Numba's threads, each with the
    workspaces of its thread (``col``, ``out``, ``xp``: one row per thread of the pool).  One
    parallel region costs about a microsecond, a hand-off to Python threads tens."""
    for t in prange(nt * cb):
        s = get_thread_id()
        conv_fused_task(t, nt, cb, x, wt, bias, kh, kw, ph, pw, sh, sw, dh, dw, group,
                        pointwise, chunk, oh, ow, slope_pre, pool, pkh, pkw, pph, ppw, psh,
                        psw, slope_post, ap, offs, mr, nv, lanes, flat, col[s], out[s], xp[s],
                        y)
