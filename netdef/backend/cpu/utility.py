"""CPU kernels for the utility layers (Softmax).

Softmax works on the bottom viewed as ``(outer, C, inner)``: the normalisation runs over ``C``
for every ``(outer, inner)`` pair.  Work is split into blocks of up to ``_BLOCK`` consecutive
inner positions of one outer index, so that both classification (inner == 1, many items) and
dense prediction (outer == 1, large inner) parallelise, and the inner loops stay contiguous.
Sums accumulate in float64; inputs and outputs may be float32 or float64 (C-contiguous).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

_BLOCK = 64


@njit(cache=True, parallel=True)
def softmax_forward(x, y):
    """y[o, :, i] = exp(x[o, :, i] - max) / sum exp(x[o, :, i] - max); ``y`` may be ``x``."""
    outer, ch, inner = x.shape
    if ch == 0 or inner == 0:
        return
    nblk = (inner + _BLOCK - 1) // _BLOCK
    for t in prange(outer * nblk):
        o = t // nblk
        i0 = (t % nblk) * _BLOCK
        n = min(_BLOCK, inner - i0)
        m = np.empty(n, x.dtype)        # exp in the input precision (expf for float32)
        s = np.zeros(n, np.float64)
        for j in range(n):
            m[j] = x[o, 0, i0 + j]
        for c in range(1, ch):
            for j in range(n):
                v = x[o, c, i0 + j]
                if v > m[j]:
                    m[j] = v
        for c in range(ch):
            for j in range(n):
                e = np.exp(x[o, c, i0 + j] - m[j])
                s[j] += e
                y[o, c, i0 + j] = e
        for c in range(ch):
            for j in range(n):
                y[o, c, i0 + j] = y[o, c, i0 + j] / s[j]


@njit(cache=True, parallel=True)
def softmax_backward(y, dy, dx):
    """dx = y * (dy - sum_c(dy * y)) over the channel axis; ``dx`` may be ``dy``."""
    outer, ch, inner = y.shape
    if ch == 0 or inner == 0:
        return
    nblk = (inner + _BLOCK - 1) // _BLOCK
    for t in prange(outer * nblk):
        o = t // nblk
        i0 = (t % nblk) * _BLOCK
        n = min(_BLOCK, inner - i0)
        s = np.zeros(n, np.float64)
        for c in range(ch):
            for j in range(n):
                s[j] += dy[o, c, i0 + j] * y[o, c, i0 + j]
        for c in range(ch):
            for j in range(n):
                dx[o, c, i0 + j] = y[o, c, i0 + j] * (dy[o, c, i0 + j] - s[j])
