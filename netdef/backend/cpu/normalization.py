"""CPU kernels for the normalisation layers (LRN).

ACROSS_CHANNELS works on the bottom viewed as ``(N, C, S)`` (``S = H*W``): every position sums
the squares of the ``size`` channels centred on its own (channels outside ``[0, C)`` count as
zero).  Work is split into tasks of one image and up to ``_BLOCK`` consecutive spatial positions,
so that both large batches and single large images parallelise.  Window sums are formed directly
(no running add/subtract), in float64, so a zero window gives exactly zero; indices are
unsigned (Numba's negative-index wraparound would stop vectorisation).

WITHIN_CHANNEL uses :func:`box_sum_2d`: the sum over the ``(2h+1) x (2h+1)`` patch centred on
each position, clipped to the plane (zero padding).  The window is symmetric, so the same sum is
also its own adjoint (used by the backward pass).

All kernels accept float32 or float64 arrays (C-contiguous) and accumulate in float64.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba import uint64 as U

_BLOCK = 128


@njit(cache=True, inline="always")
def _neg_pow(sc, beta):
    """sc ** -beta; for Caffe's default beta 0.75 (AlexNet's, GoogLeNet's) as 1 / (r * sqrt(r))
    with r = sqrt(sc): two square roots, which vectorise, instead of a call to pow (within a
    few ulps of it in float64)."""
    if beta == 0.75:
        r = np.sqrt(sc)
        return 1.0 / (r * np.sqrt(r))
    return sc ** (-beta)


@njit(cache=True, parallel=True)
def lrn_across_forward(x, size, alpha_over_n, k, beta, scale, y):
    """scale = k + alpha/n * sum_window x^2 ; y = x * scale^-beta.  Arrays are (N, C, S).
    Each channel's window sum is formed from the inputs themselves (the squares recomputed,
    cheaper than a float64 copy of the block), channel by channel in order.  An empty
    ``scale`` is not written (a net that runs no backward)."""
    n_img, ch, sp = x.shape
    if n_img == 0 or ch == 0 or sp == 0:
        return
    store = scale.size > 0
    half = (size - 1) // 2
    nblk = (sp + _BLOCK - 1) // _BLOCK
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    sf = scale.reshape(-1)
    for t in prange(n_img * nblk):
        n = t // nblk
        s0 = (t % nblk) * _BLOCK
        m = min(_BLOCK, sp - s0)
        acc = np.empty(_BLOCK, np.float64)
        for c in range(ch):
            lo = max(0, c - half)
            hi = min(ch, c + half + 1)
            for j in range(m):
                acc[U(j)] = 0.0
            for cc in range(lo, hi):
                b = U((n * ch + cc) * sp + s0)
                for j in range(m):
                    v = np.float64(xf[b + U(j)])
                    acc[U(j)] += v * v
            b = U((n * ch + c) * sp + s0)
            if store:
                for j in range(m):
                    sf[b + U(j)] = k + alpha_over_n * acc[U(j)]
            for j in range(m):
                sc = k + alpha_over_n * acc[U(j)]
                yf[b + U(j)] = np.float64(xf[b + U(j)]) * _neg_pow(sc, beta)


@njit(cache=True, parallel=True)
def lrn_across_backward(x, dy, scale, size, coef, beta, dx):
    """dx = dy * scale^-beta - coef * x * sum_window(dy * x * scale^(-beta-1)),
    ``coef = 2 alpha beta / n``.  Arrays are (N, C, S); ``dx`` may alias ``dy``."""
    n_img, ch, sp = x.shape
    if n_img == 0 or ch == 0 or sp == 0:
        return
    half = (size - 1) // 2
    nblk = (sp + _BLOCK - 1) // _BLOCK
    xf = x.reshape(-1)
    gf = dy.reshape(-1)
    sf = scale.reshape(-1)
    df = dx.reshape(-1)
    for t in prange(n_img * nblk):
        n = t // nblk
        s0 = (t % nblk) * _BLOCK
        m = min(_BLOCK, sp - s0)
        ratio = np.empty(ch * m, np.float64)
        for c in range(ch):
            b = U((n * ch + c) * sp + s0)
            r = U(c * m)
            for j in range(m):
                sc = np.float64(sf[b + U(j)])
                p = _neg_pow(sc, beta)
                g = np.float64(gf[b + U(j)])
                ratio[r + U(j)] = g * np.float64(xf[b + U(j)]) * p / sc
                df[b + U(j)] = g * p
        acc = np.empty(m, np.float64)
        for c in range(ch):
            lo = max(0, c - half)
            hi = min(ch, c + half + 1)
            for j in range(m):
                acc[U(j)] = 0.0
            for cc in range(lo, hi):
                r = U(cc * m)
                for j in range(m):
                    acc[U(j)] += ratio[r + U(j)]
            b = U((n * ch + c) * sp + s0)
            for j in range(m):
                df[b + U(j)] -= coef * np.float64(xf[b + U(j)]) * acc[U(j)]


@njit(cache=True, parallel=True)
def box_sum_2d(a, half, out):
    """out[p, i, j] = sum of a[p, i', j'] over |i'-i| <= half, |j'-j| <= half inside the plane.
    Arrays are (P, H, W); ``out`` must not alias ``a``."""
    planes, h, w = a.shape
    for p in prange(planes):
        rows = np.empty((h, w), np.float64)
        for i in range(h):
            for j in range(w):
                s = 0.0
                for jj in range(max(0, j - half), min(w, j + half + 1)):
                    s += a[p, i, jj]
                rows[i, j] = s
        acc = np.empty(w, np.float64)
        for i in range(h):
            for j in range(w):
                acc[j] = 0.0
            for ii in range(max(0, i - half), min(h, i + half + 1)):
                for j in range(w):
                    acc[j] += rows[ii, j]
            for j in range(w):
                out[p, i, j] = acc[j]


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def batch_norm_stats(x, mean, var):
    """Per channel of x (N, C, S): mean and biased variance (float64 ``mean``/``var``),
    two passes (the variance of the centred values), float64 accumulation."""
    n_img, ch, sp = x.shape
    m = max(n_img * sp, 1)
    for c in prange(ch):
        acc = 0.0
        for n in range(n_img):
            r = x[n, c]
            for i in range(sp):
                acc += r[i]
        mu = acc / m
        acc = 0.0
        for n in range(n_img):
            r = x[n, c]
            for i in range(sp):
                d = r[i] - mu
                acc += d * d
        mean[c] = mu
        var[c] = acc / m


@njit(cache=True, parallel=True)
def batch_norm_apply(x, mean, std, y, xn):
    """y = (x - mean[c]) / std[c] (in x's dtype; ``mean``/``std`` already in it); also into
    ``xn`` when it is not empty.  ``y`` may be ``x``."""
    n_img, ch, sp = x.shape
    keep = xn.shape[0] > 0
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        mu = mean[c]
        sd = std[c]
        r = x[n, c]
        o = y[n, c]
        if keep:
            k = xn[n, c]
            for i in range(sp):
                v = (r[i] - mu) / sd
                o[i] = v
                k[i] = v
        else:
            for i in range(sp):
                o[i] = (r[i] - mu) / sd


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def batch_norm_backward(dy, xn, std, dx):
    """dx = (dy - mean(dy) - xn * mean(dy * xn)) / std per channel (means over N and S,
    float64 accumulation); ``dx`` may be ``dy``."""
    n_img, ch, sp = dy.shape
    m = max(n_img * sp, 1)
    for c in prange(ch):
        s1 = 0.0
        s2 = 0.0
        for n in range(n_img):
            g = dy[n, c]
            k = xn[n, c]
            for i in range(sp):
                s1 += g[i]
                s2 += g[i] * k[i]
        a = dy.dtype.type(s1 / m)
        b = dy.dtype.type(s2 / m)
        sd = std[c]
        for n in range(n_img):
            g = dy[n, c]
            k = xn[n, c]
            o = dx[n, c]
            for i in range(sp):
                o[i] = (g[i] - a - k[i] * b) / sd
