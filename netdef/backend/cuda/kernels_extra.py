"""CUDA kernels (numba.cuda) for the rest of the core layer catalogue: the parametric neurons
(PReLU, Power, Exp, Log, Swish), broadcasting (Scale, Bias), Embed, MVN, Reduction, ArgMax, Crop,
Tile, the other losses, Im2col, STOCHASTIC pooling, LRN within a channel, gathers/scatters
(BatchReindex, Filter) and the LSTM unit.

Same conventions as :mod:`netdef.backend.cuda.kernels`: flat device arrays, grid-stride loops,
reductions accumulate in float64 (one block per output segment, a shared-memory tree).  A loss
weight (a loss top's diff) is read on the device (``topdiff[0]``), so no host round trip.
"""
from __future__ import annotations

import math

import numpy as np

from .device import cuda as _get_cuda
from .kernels import SUM, grid1d, seg_reduce

cuda = _get_cuda()


def row_reduce(x, rows, dim, out, mode=SUM, alpha=1.0, beta=0.0, x2=None):
    """out[r] = alpha * sum_k f(x[r*dim + k]) + beta * out[r]."""
    seg_reduce(x, 1, rows, dim, out, mode, alpha, beta, x2)


# -- parametric neurons -------------------------------------------------------------------------
POWER, EXP, LOG, SWISH = range(4)


@cuda.jit
def _neuron2_fwd(op, n, x, y, aux, p0, p1, p2, p3):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        if op == 0:                 # power: p0 power, p1 scale, p2 shift
            b = v * p1 + p2
            if p0 == 1:
                r = b
            elif p0 == 2:
                r = b * b
            else:
                r = math.pow(b, p0)
        elif op == 1:               # exp: p0 inner scale, p1 outer scale
            r = math.exp(v * p0) * p1
        elif op == 2:               # log: p0 scale, p1 shift, p2 base scale
            r = math.log(v * p0 + p1) * p2
        else:                       # swish: p0 beta; aux keeps the sigmoid
            z = v * p0
            s = 1.0 / (1.0 + math.exp(-z)) if z >= -700 else 0.0
            aux[i] = s
            r = v * s
        y[i] = r


@cuda.jit
def _neuron2_bwd(op, n, x, y, aux, dy, dx, p0, p1, p2, p3):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        g = dy[i]
        if op == 0:                 # p3 = power * scale
            if p0 == 1:
                r = g * p3
            else:
                b = x[i] * p1 + p2
                d = b if p0 == 2 else math.pow(b, p0 - 1)
                r = g * (d * p3)
        elif op == 1:
            r = g * y[i] * p0
        elif op == 2:               # p3 = backward scale
            r = g * (p3 / (x[i] * p0 + p1))
        else:
            by = y[i] * p0
            r = g * ((1.0 - by) * aux[i] + by)
        dx[i] = r


def neuron2_forward(op, x, y, n, aux=None, p0=0.0, p1=0.0, p2=0.0, p3=0.0):
    if n:
        _neuron2_fwd[grid1d(n)](op, n, x, y, y if aux is None else aux, p0, p1, p2, p3)


def neuron2_backward(op, x, y, dy, dx, n, aux=None, p0=0.0, p1=0.0, p2=0.0, p3=0.0):
    if n:
        _neuron2_bwd[grid1d(n)](op, n, x, y, y if aux is None else aux, dy, dx, p0, p1, p2, p3)


@cuda.jit
def _prelu_fwd(n, x, slope, c, inner, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        y[i] = v if v > 0 else slope[(i // inner) % c] * v


@cuda.jit
def _prelu_bwd(n, x, slope, c, inner, dy, dx, prod, do_x, do_s):
    """dx = dy (x > 0) or a*dy; prod = dy * x where x <= 0 (the slope gradient's terms)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        g = dy[i]
        if do_s:
            prod[i] = g * v if v <= 0 else 0.0
        if do_x:
            dx[i] = g if v > 0 else slope[(i // inner) % c] * g


def prelu_forward(x, slope, c, inner, y, n):
    if n:
        _prelu_fwd[grid1d(n)](n, x, slope, c, inner, y)


def prelu_backward(x, slope, c, inner, dy, dx, prod, n, do_x, do_s):
    if n:
        _prelu_bwd[grid1d(n)](n, x, slope, c, inner, dy, dx if do_x else dy,
                              prod if do_s else dy, do_x, do_s)


# -- broadcasting (Scale, Bias) --------------------------------------------------------------------
@cuda.jit
def _bcast(n, x, s, has_s, b, has_b, d, inner, y):
    """y = x * s[(i // inner) % d] (if has_s) + b[...] (if has_b)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        k = (i // inner) % d
        v = x[i]
        if has_s:
            v = v * s[k]
        if has_b:
            v = v + b[k]
        y[i] = v


def bcast(x, y, n, d, inner, s=None, b=None):
    if n:
        _bcast[grid1d(n)](n, x, x if s is None else s, s is not None, x if b is None else b,
                          b is not None, d, inner, y)


# -- Embed ----------------------------------------------------------------------------------------
@cuda.jit
def _embed_fwd(idx, m, no, w, b, has_b, y):
    for e in range(cuda.grid(1), m * no, cuda.gridsize(1)):
        r = e // no
        j = e - r * no
        v = w[int(idx[r]) * no + j]
        if has_b:
            v += b[j]
        y[e] = v


@cuda.jit
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


# -- MVN ------------------------------------------------------------------------------------------
@cuda.jit
def _center(n, x, mean, dim, out):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = x[i] - mean[i // dim]


@cuda.jit
def _mvn_norm(n, x, mean, sigma, eps, dim, use_sigma, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        r = i // dim
        v = x[i] - mean[r]
        if use_sigma:
            v = v / (sigma[r] + eps)
        y[i] = v


@cuda.jit
def _mvn_bwd(n, dy, y, mdy, mdyy, sigma, eps, dim, use_sigma, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        r = i // dim
        if use_sigma:
            s = sigma[r]
            inv = 1.0 / s if s > 0 else 0.0
            dx[i] = (dy[i] - mdy[r]) / (s + eps) - y[i] * (mdyy[r] * inv)
        else:
            dx[i] = dy[i] - mdy[r]


@cuda.jit
def _sqrt_inplace(n, a):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        a[i] = math.sqrt(a[i])


def center(x, mean, dim, out, n):
    if n:
        _center[grid1d(n)](n, x, mean, dim, out)


def mvn_normalize(x, mean, sigma, eps, dim, y, n):
    if n:
        _mvn_norm[grid1d(n)](n, x, mean, mean if sigma is None else sigma, eps, dim,
                             sigma is not None, y)


def mvn_backward(dy, y, mdy, mdyy, sigma, eps, dim, dx, n):
    if n:
        use = sigma is not None
        _mvn_bwd[grid1d(n)](n, dy, y if use else dy, mdy, mdyy if use else mdy,
                            sigma if use else mdy, eps, dim, use, dx)


def sqrt_inplace(a, n):
    if n:
        _sqrt_inplace[grid1d(n)](n, a)


# -- Reduction ------------------------------------------------------------------------------------
@cuda.jit
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
@cuda.jit
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
@cuda.jit
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


@cuda.jit
def _tile_fwd(x, outer, tiles, inner, y):
    for e in range(cuda.grid(1), outer * tiles * inner, cuda.gridsize(1)):
        i = e % inner
        o = e // (tiles * inner)
        y[e] = x[o * inner + i]


@cuda.jit
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


@cuda.jit
def _gather_rows(src, idx, m, inner, dst):
    """dst[r, :] = src[idx[r], :] (idx floats or ints)."""
    for e in range(cuda.grid(1), m * inner, cuda.gridsize(1)):
        r = e // inner
        dst[e] = src[int(idx[r]) * inner + (e - r * inner)]


@cuda.jit
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


# -- STOCHASTIC pooling -------------------------------------------------------------------------------
@cuda.jit
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


@cuda.jit
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


@cuda.jit
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


# -- LRN within a channel ---------------------------------------------------------------------------
@cuda.jit
def _box_sum_sq(a, b, use_b, nc, h, w, half, scale, offset, out):
    """out = offset + scale * (box sum over the (2 half + 1)^2 patch, clipped to the plane) of
    a*a (use_b false) or a*b."""
    for e in range(cuda.grid(1), nc * h * w, cuda.gridsize(1)):
        j = e % w
        t = e // w
        i = t % h
        p = t // h
        acc = 0.0
        for ii in range(max(0, i - half), min(h, i + half + 1)):
            for jj in range(max(0, j - half), min(w, j + half + 1)):
                q = (p * h + ii) * w + jj
                if use_b:
                    acc += a[q] * b[q]
                else:
                    acc += a[q] * a[q]
        out[e] = offset + scale * acc


@cuda.jit
def _lrn_within_out(n, x, scale, beta, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = x[i] * math.pow(scale[i], -beta)


@cuda.jit
def _lrn_within_ratio(n, x, dy, scale, beta, ratio):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        s = scale[i]
        ratio[i] = dy[i] * x[i] * math.pow(s, -beta) / s


@cuda.jit
def _lrn_within_bwd(n, x, dy, scale, inner, beta, coef, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = dy[i] * math.pow(scale[i], -beta) - coef * x[i] * inner[i]


def lrn_within_forward(x, nc, h, w, size, alpha, beta, scale, y):
    n = nc * h * w
    if n:
        _box_sum_sq[grid1d(n)](x, x, False, nc, h, w, (size - 1) // 2, alpha / (size * size),
                               1.0, scale)
        _lrn_within_out[grid1d(n)](n, x, scale, beta, y)


def lrn_within_backward(x, dy, scale, nc, h, w, size, alpha, beta, ratio, inner, dx):
    n = nc * h * w
    if n:
        _lrn_within_ratio[grid1d(n)](n, x, dy, scale, beta, ratio)
        _box_sum[grid1d(n)](ratio, nc, h, w, (size - 1) // 2, inner)
        _lrn_within_bwd[grid1d(n)](n, x, dy, scale, inner, beta,
                                   2.0 * alpha * beta / (size * size), dx)


@cuda.jit
def _box_sum(a, nc, h, w, half, out):
    for e in range(cuda.grid(1), nc * h * w, cuda.gridsize(1)):
        j = e % w
        t = e // w
        i = t % h
        p = t // h
        acc = 0.0
        for ii in range(max(0, i - half), min(h, i + half + 1)):
            for jj in range(max(0, j - half), min(w, j + half + 1)):
                acc += a[(p * h + ii) * w + jj]
        out[e] = acc


# -- losses -------------------------------------------------------------------------------------------
@cuda.jit
def _scale_dev(n, x, topdiff, c, y):
    """y = c * topdiff[0] * x (a loss gradient scaled by the loss weight on the device)."""
    wgt = topdiff[0] * c
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = wgt * x[i]


def scale_dev(x, topdiff, c, y, n):
    if n:
        _scale_dev[grid1d(n)](n, x, topdiff, float(c), y)


@cuda.jit
def _sub(n, a, b, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = a[i] - b[i]


def sub(a, b, y, n):
    if n:
        _sub[grid1d(n)](n, a, b, y)


@cuda.jit
def _sce_fwd(n, x, t, has_ignore, ignore, per, sig):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        tv = t[i]
        e = math.exp(-abs(v))
        sig[i] = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
        ok = True
        if has_ignore:
            ti = 0
            if not (math.isnan(tv) or math.isinf(tv)):
                ti = int(tv)
            ok = ti != ignore
        per[i] = (max(v, 0.0) - v * tv + math.log1p(e)) if ok else 0.0


@cuda.jit
def _sce_bwd(n, sig, t, has_ignore, ignore, topdiff, inv_norm, dx):
    wgt = topdiff[0] * inv_norm
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        tv = t[i]
        ok = True
        if has_ignore:
            ti = 0
            if not (math.isnan(tv) or math.isinf(tv)):
                ti = int(tv)
            ok = ti != ignore
        dx[i] = (sig[i] - tv) * wgt if ok else 0.0


def sce_forward(x, t, has_ignore, ignore, per, sig, n):
    _sce_fwd[grid1d(n)](n, x, t, has_ignore, ignore, per, sig)


def sce_backward(sig, t, has_ignore, ignore, topdiff, inv_norm, dx, n):
    _sce_bwd[grid1d(n)](n, sig, t, has_ignore, ignore, topdiff, float(inv_norm), dx)


@cuda.jit
def _hinge_margin(x, labels, n, dim, margin):
    for e in range(cuda.grid(1), n * dim, cuda.gridsize(1)):
        r = e // dim
        v = np.float64(x[e])
        if e - r * dim == int(labels[r]):
            v = -v
        margin[e] = max(0.0, 1.0 + v)


@cuda.jit
def _hinge_bwd(margin, labels, n, dim, l2, topdiff, inv_n, dx):
    w = topdiff[0] * inv_n
    for e in range(cuda.grid(1), n * dim, cuda.gridsize(1)):
        r = e // dim
        m = margin[e]
        if l2:
            g = m * (2.0 * w)
        else:
            g = w if m > 0 else 0.0
        if e - r * dim == int(labels[r]):
            g = -g
        dx[e] = g


def hinge_margin(x, labels, n, dim, margin):
    _hinge_margin[grid1d(n * dim)](x, labels, n, dim, margin)


def hinge_backward(margin, labels, n, dim, l2, topdiff, inv_n, dx):
    _hinge_bwd[grid1d(n * dim)](margin, labels, n, dim, l2, topdiff, float(inv_n), dx)


@cuda.jit
def _mlog_fwd(p, labels, n, dim, floor, pl, nll):
    for r in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = max(np.float64(p[r * dim + int(labels[r])]), floor)
        pl[r] = v
        nll[r] = -math.log(v)


@cuda.jit
def _mlog_bwd(pl, labels, n, dim, topdiff, inv_n, dx):
    w = -topdiff[0] * inv_n
    for e in range(cuda.grid(1), n * dim, cuda.gridsize(1)):
        r = e // dim
        if e - r * dim == int(labels[r]):
            dx[e] = w / pl[r]
        else:
            dx[e] = 0.0


def mlog_forward(p, labels, n, dim, floor, pl, nll):
    _mlog_fwd[grid1d(n)](p, labels, n, dim, floor, pl, nll)


def mlog_backward(pl, labels, n, dim, topdiff, inv_n, dx):
    _mlog_bwd[grid1d(n * dim)](pl, labels, n, dim, topdiff, float(inv_n), dx)


@cuda.jit
def _infogain_fwd(prob, labels, h, outer, c, inner, has_ignore, ignore, floor, per):
    for e in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        lab = int(labels[e])
        if has_ignore and lab == ignore:
            per[e] = 0.0
            continue
        o = e // inner
        i = e - o * inner
        acc = 0.0
        for k in range(c):
            wk = np.float64(h[lab * c + k])
            if wk != 0.0:
                acc -= wk * math.log(max(np.float64(prob[(o * c + k) * inner + i]), floor))
        per[e] = acc


@cuda.jit
def _infogain_bwd(prob, labels, h, outer, c, inner, has_ignore, ignore, topdiff, inv_norm, g):
    wgt = topdiff[0] * inv_norm
    for e in range(cuda.grid(1), outer * c * inner, cuda.gridsize(1)):
        i = e % inner
        t = e // inner
        k = t % c
        o = t // c
        lab = int(labels[o * inner + i])
        if has_ignore and lab == ignore:
            g[e] = 0.0
        else:
            hs = 0.0
            for q in range(c):
                hs += np.float64(h[lab * c + q])
            g[e] = wgt * (prob[e] * hs - np.float64(h[lab * c + k]))


def infogain_forward(prob, labels, h, outer, c, inner, has_ignore, ignore, floor, per):
    _infogain_fwd[grid1d(outer * inner)](prob, labels, h, outer, c, inner, has_ignore, ignore,
                                         floor, per)


def infogain_backward(prob, labels, h, outer, c, inner, has_ignore, ignore, topdiff, inv_norm,
                      g):
    _infogain_bwd[grid1d(outer * c * inner)](prob, labels, h, outer, c, inner, has_ignore,
                                             ignore, topdiff, float(inv_norm), g)


@cuda.jit
def _contrastive_fwd(d2, y, n, margin, legacy, per, coefs):
    """per[r]: the pair's loss term; coefs[r]: d(term)/d(diff) / 2 without the weight."""
    for r in range(cuda.grid(1), n, cuda.gridsize(1)):
        yv = y[r]
        sim = False
        if not (math.isnan(yv) or math.isinf(yv)):
            sim = int(yv) != 0
        d = d2[r]
        if legacy:
            mdist = margin - d
            other = max(mdist, 0.0)
            factor = 1.0
        else:
            dist = math.sqrt(d)
            mdist = margin - dist
            other = max(mdist, 0.0) ** 2
            factor = mdist / (dist + 1e-4)
        if sim:
            per[r] = d
            coefs[r] = 1.0
        else:
            per[r] = other
            coefs[r] = -factor if mdist > 0 else 0.0


@cuda.jit
def _contrastive_bwd(diff, coefs, n, dim, topdiff, alpha, dx):
    w = topdiff[0] * alpha
    for e in range(cuda.grid(1), n * dim, cuda.gridsize(1)):
        dx[e] = (w * coefs[e // dim]) * diff[e]


def contrastive_forward(d2, y, n, margin, legacy, per, coefs):
    _contrastive_fwd[grid1d(n)](d2, y, n, float(margin), legacy, per, coefs)


def contrastive_backward(diff, coefs, n, dim, topdiff, alpha, dx):
    _contrastive_bwd[grid1d(n * dim)](diff, coefs, n, dim, topdiff, float(alpha), dx)


# -- LSTM unit ------------------------------------------------------------------------------------------
@cuda.jit
def _lstm_unit_fwd(cprev, x, cont, n, H, acts, c, h):
    """x (n, 4H) gate inputs i, f, o, g; acts keeps the activations."""
    for e in range(cuda.grid(1), n * H, cuda.gridsize(1)):
        r = e // H
        j = e - r * H
        b = r * 4 * H
        vi = x[b + j]
        vf = x[b + H + j]
        vo = x[b + 2 * H + j]
        i = 0.5 * (math.tanh(0.5 * vi) + 1.0)
        f = 0.5 * (math.tanh(0.5 * vf) + 1.0)
        o = 0.5 * (math.tanh(0.5 * vo) + 1.0)
        g = math.tanh(x[b + 3 * H + j])
        acts[b + j] = i
        acts[b + H + j] = f
        acts[b + 2 * H + j] = o
        acts[b + 3 * H + j] = g
        cc = cont[r] * f * cprev[e] + i * g
        c[e] = cc
        h[e] = o * math.tanh(cc)


@cuda.jit
def _lstm_unit_bwd(cprev, acts, cont, c, dc_top, dh_top, n, H, do_c, do_x, dcprev, dx):
    for e in range(cuda.grid(1), n * H, cuda.gridsize(1)):
        r = e // H
        j = e - r * H
        b = r * 4 * H
        i = acts[b + j]
        f = acts[b + H + j]
        o = acts[b + 2 * H + j]
        g = acts[b + 3 * H + j]
        ct = cont[r]
        tc = math.tanh(c[e])
        dh = dh_top[e]
        dc = dc_top[e] + dh * o * (1.0 - tc * tc)
        if do_x:
            dx[b + j] = dc * g * i * (1.0 - i)
            dx[b + H + j] = dc * cprev[e] * ct * f * (1.0 - f)
            dx[b + 2 * H + j] = dh * tc * o * (1.0 - o)
            dx[b + 3 * H + j] = dc * i * (1.0 - g * g)
        if do_c:
            dcprev[e] = dc * (ct * f)


def lstm_unit_forward(cprev, x, cont, n, H, acts, c, h):
    if n * H:
        _lstm_unit_fwd[grid1d(n * H)](cprev, x, cont, n, H, acts, c, h)


def lstm_unit_backward(cprev, acts, cont, c, dc_top, dh_top, n, H, do_c, do_x, dcprev, dx):
    if n * H:
        _lstm_unit_bwd[grid1d(n * H)](cprev, acts, cont, c, dc_top, dh_top, n, H, do_c, do_x,
                                      dcprev if do_c else c, dx if do_x else acts)


# -- RNN / LSTM helpers -----------------------------------------------------------------------------------
@cuda.jit
def _row_scale(n, src, cont, H, dst):
    """dst[r, j] = cont[r] * src[r, j]"""
    for e in range(cuda.grid(1), n, cuda.gridsize(1)):
        dst[e] = cont[e // H] * src[e]


@cuda.jit
def _tanh(n, x, y):
    for e in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[e] = math.tanh(x[e])


@cuda.jit
def _tanh_grad(n, a, b, has_b, y, dst):
    """dst = (a + b) * (1 - y^2)"""
    for e in range(cuda.grid(1), n, cuda.gridsize(1)):
        g = a[e]
        if has_b:
            g = g + b[e]
        yy = y[e]
        dst[e] = g * (1.0 - yy * yy)


def row_scale(src, cont, n, H, dst):
    if n:
        _row_scale[grid1d(n)](n, src, cont, H, dst)


def tanh(x, y, n):
    if n:
        _tanh[grid1d(n)](n, x, y)


def tanh_grad(a, b, y, dst, n):
    if n:
        _tanh_grad[grid1d(n)](n, a, a if b is None else b, b is not None, y, dst)
