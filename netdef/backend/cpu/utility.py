"""CPU kernels for the utility layers (Softmax, and Eltwise's sum in the frozen predictor).

Softmax works on the bottom viewed as ``(outer, C, inner)``: the normalisation runs over ``C``
for every ``(outer, inner)`` pair.  :func:`softmax_forward` is the one CPU softmax of the Numba
path (the Softmax layer, SoftmaxWithLoss / InfogainLoss, and so the numba predictor); the
numpy predictor keeps its own Numba-free one in ``deploy/numpy_kernels``.  The backward kernel
splits the work into blocks of up to ``_BLOCK`` consecutive inner positions of one outer index,
so that both classification (inner == 1, many items) and dense prediction (outer == 1, large
inner) parallelise, and the inner loops stay contiguous.  Inputs and outputs may be float32 or
float64 (C-contiguous).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange
from numba import uint64 as U

_BLOCK = 64


def softmax_forward(x, y) -> None:
    """y[o, :, i] = exp(x[o, :, i] - max) / sum exp(x[o, :, i] - max), in x's dtype; ``y`` may
    be ``x``.

    numpy rather than a Numba loop, chosen by measuring both (single thread, AMD EPYC, float32):
    (256, 1000, 1) 0.29 ms numpy vs 1.1 ms for a serial Numba loop and 2.2 ms for a blocked
    prange kernel; (1, 21, 250000) 6.7 ms vs 30 ms and 49 ms -- numpy's SIMD ``exp`` is 3-7x
    faster than the scalar libm ``exp`` a Numba loop gets. Only tiny arrays lose: (64, 10)
    11 us vs 2.8 us serial, a few microseconds per call (a size-dependent switch between the
    two would also make an item's probabilities depend on its batch's size)."""
    if y.size == 0:
        return
    np.subtract(x, x.max(axis=1, keepdims=True), out=y)
    np.exp(y, out=y)
    y *= 1.0 / y.sum(axis=1, keepdims=True)


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


@njit(cache=True, parallel=True)
def eltwise_sum_relu(nt, a, b, c0, c1, relu, slope, y):
    """y = c0 * a + c1 * b (a coefficient of 1 multiplies nothing, as the layer's numpy
    code), then with ``relu`` Caffe's ReLU ``max(v, 0) + slope * min(v, 0)``; one pass, ``nt``
    tasks of contiguous chunks, the common cases (coefficients 1) as branch-free loops that
    vectorise.  ``y`` may be ``a`` or ``b``."""
    af = a.reshape(-1)
    bf = b.reshape(-1)
    yf = y.reshape(-1)
    n = af.size
    step = (n + nt - 1) // nt
    step = (step + 15) // 16 * 16
    plain = c0 == 1 and c1 == 1
    for t in prange(nt):
        lo = U(min(n, t * step))
        hi = U(min(n, t * step + step))
        if plain and relu and slope == 0:
            for i in range(lo, hi):
                v = af[i] + bf[i]
                yf[i] = slope if v <= 0 else v            # slope is 0 here
        elif plain and relu:
            for i in range(lo, hi):
                v = af[i] + bf[i]
                yf[i] = v * slope if v <= 0 else v
        elif plain:
            for i in range(lo, hi):
                yf[i] = af[i] + bf[i]
        else:
            for i in range(lo, hi):
                u = af[i] if c0 == 1 else af[i] * c0
                v = u + (bf[i] if c1 == 1 else bf[i] * c1)
                if relu and v <= 0:
                    v = v * slope if slope != 0 else slope
                yf[i] = v
