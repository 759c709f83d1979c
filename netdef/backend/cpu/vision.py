"""CPU kernels for depthwise convolution and pooling (NCHW, C-contiguous, float32 or float64).

im2col / col2im and the GEMM layout changes live in :mod:`netdef.backend.cpu.im2col`.

Depthwise convolution (group == input channels, ``mult`` outputs per channel; output ``o``
reads channel ``o // mult`` with weight ``wt[o, 0]``) is computed directly from a
zero-bordered copy of each plane, so the inner loops are branch-free.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba import uint64 as U


#: channels per parallel block of :func:`depthwise_forward` (one padded-plane buffer each)
_DW_BLOCK = 8


@njit(cache=True, parallel=True)
def depthwise_forward(x, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, bias, y):
    """Overwrite y (N, O, oh, ow) with the depthwise convolution of x (N, C, H, W), plus
    bias[o] when ``bias`` is not empty: :func:`depthwise_blocks` over all blocks of
    :data:`_DW_BLOCK` output planes, in parallel."""
    nblk = (y.shape[0] * y.shape[1] + _DW_BLOCK - 1) // _DW_BLOCK
    for blk in prange(nblk):
        depthwise_blocks(blk, blk + 1, x, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, bias,
                         y.dtype.type(1.0), y)


@njit(cache=True, parallel=True)
def depthwise_relu(nt, x, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, bias, slope, y):
    """:func:`depthwise_blocks` with the fused ReLU ``slope`` (1: none) as ``nt`` tasks of
    consecutive blocks of output planes: the frozen-net predictor's depthwise layers."""
    nblk = (y.shape[0] * y.shape[1] + _DW_BLOCK - 1) // _DW_BLOCK
    per = (nblk + nt - 1) // nt
    for t in prange(nt):
        depthwise_blocks(t * per, min(nblk, (t + 1) * per), x, wt, kh, kw, ph, pw, sh, sw,
                         dh, dw, mult, bias, slope, y)


@njit(cache=True, nogil=True)
def depthwise_blocks(blk0, blk1, x, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, bias, slope,
                     y):
    """Output planes blk0*_DW_BLOCK .. blk1*_DW_BLOCK (of N*O, image-major) of the depthwise
    convolution of x (N, C, H, W) into y (N, O, oh, ow), plus bias[o] when ``bias`` is not
    empty, then ``v * slope if v < 0`` (a fused ReLU; slope 1: none).

    Each input plane is first copied into a zero-bordered buffer (grown so every window
    Caffe's output size takes lies inside it) -- for stride 2 as two planes, the even and
    the odd columns -- so each tap of an output row reads consecutive values: the column
    loop is branch-free and vectorises.  3x3 windows (MobileNet's) sum their nine taps per
    column in registers; every window sums in the same order (the bias, then the taps row
    by row, left to right)."""
    n_img, c_out, oh, ow = y.shape
    c_in, h, w = x.shape[1], x.shape[2], x.shape[3]
    hp = max(h + 2 * ph, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(w + 2 * pw, (ow - 1) * sw + (kw - 1) * dw + 1)
    two = sw == 2
    wq = (wp + 1) // 2 if two else wp           # row stride of the buffer
    plane = hp * wq
    step = 1 if two else sw                     # between consecutive output columns
    has_bias = bias.shape[0] > 0
    total = n_img * c_out
    three = kh == 3 and kw == 3
    zero = np.empty(1, y.dtype)
    zero[0] = 0.0
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    toff = np.empty(kw, np.int64)               # buffer offset of each kernel column
    for kj in range(kw):
        q = kj * dw
        toff[kj] = (q & 1) * plane + (q >> 1) if two else q
    t0, t1, t2 = toff[0], toff[min(1, kw - 1)], toff[min(2, kw - 1)]
    if blk1 <= blk0:
        return
    xp = np.empty(2 * plane if two else plane, x.dtype)
    for i in range(xp.shape[0]):        # (a loop: called from a parallel region, np.zeros
        xp[i] = 0.0                     # would be one of its own)
    prev = -1
    for no in range(blk0 * _DW_BLOCK, min(total, blk1 * _DW_BLOCK)):
        n = no // c_out
        o = no % c_out
        c = o // mult
        if n * c_in + c != prev:
            prev = n * c_in + c
            for iy in range(h):
                s0 = ((n * c_in + c) * h + iy) * w
                if two:
                    for ix in range(w):
                        px = ix + pw
                        xp[U((px & 1) * plane + (iy + ph) * wq + (px >> 1))] = \
                            xf[U(s0 + ix)]
                else:
                    d0 = (iy + ph) * wp + pw
                    for ix in range(w):
                        xp[U(d0 + ix)] = xf[U(s0 + ix)]
        b0 = bias[o] if has_bias else zero[0]
        yb = no * oh * ow
        if three and step == 1:
            w0, w1, w2 = wt[o, 0, 0, 0], wt[o, 0, 0, 1], wt[o, 0, 0, 2]
            w3, w4, w5 = wt[o, 0, 1, 0], wt[o, 0, 1, 1], wt[o, 0, 1, 2]
            w6, w7, w8 = wt[o, 0, 2, 0], wt[o, 0, 2, 1], wt[o, 0, 2, 2]
            for oy in range(oh):
                r0 = oy * sh * wq
                r1 = r0 + dh * wq
                r2 = r1 + dh * wq
                yr = U(yb + oy * ow)
                for ox in range(ow):
                    a = b0 + w0 * xp[U(r0 + t0 + ox)]
                    a += w1 * xp[U(r0 + t1 + ox)]
                    a += w2 * xp[U(r0 + t2 + ox)]
                    a += w3 * xp[U(r1 + t0 + ox)]
                    a += w4 * xp[U(r1 + t1 + ox)]
                    a += w5 * xp[U(r1 + t2 + ox)]
                    a += w6 * xp[U(r2 + t0 + ox)]
                    a += w7 * xp[U(r2 + t1 + ox)]
                    a += w8 * xp[U(r2 + t2 + ox)]
                    yf[yr + U(ox)] = a * slope if a < 0 else a
            continue
        for oy in range(oh):
            yr = U(yb + oy * ow)
            for ox in range(ow):
                yf[yr + U(ox)] = b0
            for ki in range(kh):
                r = (oy * sh + ki * dh) * wq
                for kj in range(kw):
                    wv = wt[o, 0, ki, kj]
                    s0 = r + toff[kj]
                    if step == 1:
                        for ox in range(ow):
                            yf[yr + U(ox)] += wv * xp[U(s0 + ox)]
                    else:
                        for ox in range(ow):
                            yf[yr + U(ox)] += wv * xp[U(s0 + ox * step)]
            if slope != 1:
                for ox in range(ow):
                    v = yf[yr + U(ox)]
                    yf[yr + U(ox)] = v * slope if v < 0 else v


@njit(cache=True, parallel=True)
def depthwise_backward_data(dy, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, dx):
    """Overwrite dx (N, C, H, W) with the input gradient of :func:`depthwise_forward`."""
    n_img, c_in, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in prange(n_img * c_in):
        n = nc // c_in
        c = nc % c_in
        for iy in range(h):
            for ix in range(w):
                dx[n, c, iy, ix] = 0.0
        for m in range(mult):
            o = c * mult + m
            for oy in range(oh):
                for ki in range(kh):
                    iy = oy * sh - ph + ki * dh
                    if iy < 0 or iy >= h:
                        continue
                    for kj in range(kw):
                        off = kj * dw - pw
                        lo = min(ow, max(0, (sw - 1 - off) // sw))
                        hi = max(lo, min(ow, (w - 1 - off) // sw + 1))
                        wv = wt[o, 0, ki, kj]
                        if sw == 1:
                            xs = dx[n, c, iy, lo + off:hi + off]
                            gs = dy[n, o, oy, lo:hi]
                            for i in range(hi - lo):
                                xs[i] += wv * gs[i]
                        else:
                            xr = dx[n, c, iy]
                            gr = dy[n, o, oy]
                            for ox in range(lo, hi):
                                xr[ox * sw + off] += wv * gr[ox]


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def depthwise_backward_weight(x, dy, kh, kw, ph, pw, sh, sw, dh, dw, mult, partial):
    """partial[n, o, ki, kj] = sum over positions of dy[n, o] * x[n, o // mult] (shifted);
    the caller sums over n.  Accumulates in float64; reassociation lets it vectorise."""
    n_img, c_out, oh, ow = dy.shape
    h, w = x.shape[2], x.shape[3]
    for no in prange(n_img * c_out):
        n = no // c_out
        o = no % c_out
        c = o // mult
        for ki in range(kh):
            for kj in range(kw):
                off = kj * dw - pw
                lo = min(ow, max(0, (sw - 1 - off) // sw))
                hi = max(lo, min(ow, (w - 1 - off) // sw + 1))
                acc = 0.0
                for oy in range(oh):
                    iy = oy * sh - ph + ki * dh
                    if iy < 0 or iy >= h:
                        continue
                    if sw == 1:
                        gs = dy[n, o, oy, lo:hi]
                        xs = x[n, c, iy, lo + off:hi + off]
                        for i in range(hi - lo):
                            acc += gs[i] * xs[i]
                    else:
                        gr = dy[n, o, oy]
                        xr = x[n, c, iy]
                        for ox in range(lo, hi):
                            acc += gr[ox] * xr[ox * sw + off]
                partial[n, o, ki, kj] = acc


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def channel_sum(x, out):
    """out[c] = sum over n, i of x[n, c, i] (float64 accumulation) -- bias gradients."""
    n_img, ch, size = x.shape
    for c in prange(ch):
        acc = 0.0
        for n in range(n_img):
            row = x[n, c]
            for i in range(size):
                acc += row[i]
        out[c] = acc


@njit(cache=True, parallel=True)
def max_pool_forward(x, kh, kw, ph, pw, sh, sw, y, mask):
    """Caffe's MAX pooling: windows clipped to the image; mask = h*W + w of the first maximum
    in scan order (-1 and output 0 for a window that misses the image entirely).
    Flat, unsigned indexing (no wraparound checks) and the window's first element as the
    starting maximum; one task per thread over whole planes."""
    n_img, ch, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    mf = mask.reshape(-1)
    planes = n_img * ch
    for nc in prange(planes):
        xb = nc * h * w
        yb = nc * oh * ow
        for py in range(oh):
            hs = py * sh - ph
            he = min(hs + kh, h)
            hs = max(hs, 0)
            for px in range(ow):
                ws = px * sw - pw
                we = min(ws + kw, w)
                ws = max(ws, 0)
                o = U(yb + py * ow + px)
                if he <= hs or we <= ws:
                    yf[o] = 0.0
                    mf[o] = -1
                    continue
                idx = hs * w + ws
                best = xf[U(xb + idx)]
                for iy in range(hs, he):
                    r = xb + iy * w
                    for ix in range(ws, we):
                        v = xf[U(r + ix)]
                        if v > best:
                            best = v
                            idx = iy * w + ix
                yf[o] = best
                mf[o] = idx


@njit(cache=True, parallel=True)
def max_pool_values(x, kh, kw, ph, pw, sh, sw, y):
    """MAX pooling's values only (no argmax mask: a net that never runs backward), the values
    of :func:`max_pool_forward`.  Per output row: the column maxima of its window's rows into
    a row buffer bordered with -inf (the padding), then for each of the kw window columns the
    running maximum over every output position -- contiguous (stride 1) or evenly strided
    loops, which vectorise; a window that misses the image gives 0, as in Caffe."""
    n_img, ch, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    planes = n_img * ch
    wp = max(w + 2 * pw, (ow - 1) * sw + kw)
    # output columns whose window touches the image: [px0, px1)
    px0 = 0
    while px0 < ow and px0 * sw - pw + kw <= 0:
        px0 += 1
    px1 = ow
    while px1 > px0 and (px1 - 1) * sw - pw >= w:
        px1 -= 1
    for nc in prange(planes):
        cm = np.empty(wp, x.dtype)
        for ix in range(wp):
            cm[ix] = -np.inf
        xb = nc * h * w
        yb = nc * oh * ow
        for py in range(oh):
            hs = py * sh - ph
            he = min(hs + kh, h)
            hs = max(hs, 0)
            o = yb + py * ow
            if he <= hs:
                for px in range(ow):
                    yf[U(o + px)] = 0.0
                continue
            r0 = xb + hs * w
            for ix in range(w):
                cm[U(pw + ix)] = xf[U(r0 + ix)]
            for iy in range(hs + 1, he):
                r = xb + iy * w
                for ix in range(w):
                    v = xf[U(r + ix)]
                    c = cm[U(pw + ix)]
                    cm[U(pw + ix)] = v if v > c else c
            for px in range(px0, px1):
                yf[U(o + px)] = cm[U(px * sw)]
            for j in range(1, kw):
                for px in range(px0, px1):
                    v = cm[U(px * sw + j)]
                    c = yf[U(o + px)]
                    yf[U(o + px)] = v if v > c else c
            for px in range(px0):
                yf[U(o + px)] = 0.0
            for px in range(px1, ow):
                yf[U(o + px)] = 0.0


@njit(cache=True, parallel=True)
def max_pool_backward(dy, mask, dx):
    """Overwrite dx with dy routed to each window's argmax."""
    n_img, ch, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dxf = dx.reshape(-1)
    dyf = dy.reshape(-1)
    mf = mask.reshape(-1)
    for nc in prange(n_img * ch):
        xb = nc * h * w
        yb = nc * oh * ow
        for i in range(h * w):
            dxf[U(xb + i)] = 0.0
        for i in range(oh * ow):
            idx = mf[U(yb + i)]
            if idx >= 0:
                dxf[U(xb + idx)] += dyf[U(yb + i)]


@njit(cache=True, parallel=True)
def ave_pool_forward(x, kh, kw, ph, pw, sh, sw, y):
    """Caffe's AVE pooling: the divisor is the window clipped to the *padded* input."""
    n_img, ch, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    for nc in prange(n_img * ch):
        xb = nc * h * w
        yb = nc * oh * ow
        for py in range(oh):
            hs = py * sh - ph
            he = min(hs + kh, h + ph)
            for px in range(ow):
                ws = px * sw - pw
                we = min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                acc = 0.0
                for iy in range(max(hs, 0), min(he, h)):
                    r = xb + iy * w
                    for ix in range(max(ws, 0), min(we, w)):
                        acc += xf[U(r + ix)]
                o = U(yb + py * ow + px)
                if size > 0:
                    yf[o] = acc / size
                else:
                    yf[o] = 0.0


@njit(cache=True, parallel=True)
def ave_pool_backward(dy, kh, kw, ph, pw, sh, sw, dx):
    """Overwrite dx with each dy / pool_size spread over its window."""
    n_img, ch, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    dxf = dx.reshape(-1)
    dyf = dy.reshape(-1)
    for nc in prange(n_img * ch):
        xb = nc * h * w
        yb = nc * oh * ow
        for i in range(h * w):
            dxf[U(xb + i)] = 0.0
        for py in range(oh):
            hs = py * sh - ph
            he = min(hs + kh, h + ph)
            for px in range(ow):
                ws = px * sw - pw
                we = min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                if size <= 0:
                    continue
                g = dyf[U(yb + py * ow + px)] / size
                for iy in range(max(hs, 0), min(he, h)):
                    r = xb + iy * w
                    for ix in range(max(ws, 0), min(we, w)):
                        dxf[U(r + ix)] += g


@njit(cache=True, parallel=True)
def stochastic_pool_forward_train(x, kh, kw, sh, sw, rand, y, mask):
    """Caffe's STOCHASTIC pooling, TRAIN: in each window (not shifted by padding, like Caffe's
    kernel) pick one element with probability proportional to its value: the first whose
    running sum reaches ``rand * window sum`` (``rand`` uniform in [0, 1), one per output).
    mask = h*W + w of the pick (the last element when none qualifies, e.g. negative inputs)."""
    n_img, ch, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for py in range(oh):
            hs = py * sh
            he = min(hs + kh, h)
            for px in range(ow):
                ws = px * sw
                we = min(ws + kw, w)
                total = 0.0
                for iy in range(hs, he):
                    for ix in range(ws, we):
                        total += x[n, c, iy, ix]
                thres = rand[n, c, py, px] * total
                acc = 0.0
                idx = -1
                for iy in range(hs, he):
                    for ix in range(ws, we):
                        if idx < 0:
                            acc += x[n, c, iy, ix]
                            if acc >= thres:
                                idx = iy * w + ix
                if idx < 0 and he > hs and we > ws:
                    idx = (he - 1) * w + (we - 1)
                if idx >= 0:
                    y[n, c, py, px] = x[n, c, idx // w, idx % w]
                else:
                    y[n, c, py, px] = 0.0
                mask[n, c, py, px] = idx


@njit(cache=True, parallel=True)
def stochastic_pool_forward_test(x, kh, kw, sh, sw, y):
    """Caffe's STOCHASTIC pooling, TEST: the probability-weighted average
    sum(v^2) / sum(v) over each window (0 when the sum is not positive)."""
    n_img, ch, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for py in range(oh):
            hs = py * sh
            he = min(hs + kh, h)
            for px in range(ow):
                ws = px * sw
                we = min(ws + kw, w)
                s = 0.0
                q = 0.0
                for iy in range(hs, he):
                    for ix in range(ws, we):
                        v = x[n, c, iy, ix]
                        s += v
                        q += v * v
                y[n, c, py, px] = q / s if s > 0.0 else 0.0


@njit(cache=True, parallel=True)
def stochastic_pool_backward_test(x, y, dy, kh, kw, sh, sw, dx):
    """Overwrite dx with the gradient of the TEST-phase weighted average:
    d(sum v^2 / sum v)/dv_i = (2 v_i - y) / sum v (0 where the sum is not positive)."""
    n_img, ch, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for iy in range(h):
            for ix in range(w):
                dx[n, c, iy, ix] = 0.0
        for py in range(oh):
            hs = py * sh
            he = min(hs + kh, h)
            for px in range(ow):
                ws = px * sw
                we = min(ws + kw, w)
                s = 0.0
                for iy in range(hs, he):
                    for ix in range(ws, we):
                        s += x[n, c, iy, ix]
                if s <= 0.0:
                    continue
                g = dy[n, c, py, px] / s
                yv = y[n, c, py, px]
                for iy in range(hs, he):
                    for ix in range(ws, we):
                        dx[n, c, iy, ix] += g * (2.0 * x[n, c, iy, ix] - yv)
