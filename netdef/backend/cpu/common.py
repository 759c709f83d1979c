"""CPU kernels for the common layers: Embed's weight gradient, Scale (per-channel multiply-add
and its one-pass backward).

InnerProduct's GEMMs are in :mod:`netdef.backend.cpu.gemm`; Bias is a numpy broadcast.
"""
from __future__ import annotations

from numba import njit, prange


@njit(cache=True)
def embed_backward(index, top_diff, weight_diff):
    """weight_diff[index[i], :] += top_diff[i, :] for every i (repeated indices add up).

    ``index`` is int64 (M,), ``top_diff`` (M, N), ``weight_diff`` (K, N).  Serial: rows may
    repeat, and the work is one pass over ``top_diff``."""
    m, n = top_diff.shape
    for i in range(m):
        r = index[i]
        for j in range(n):
            weight_diff[r, j] += top_diff[i, j]


@njit(cache=True, parallel=True)
def scale_forward(x, s, b, y, keep):
    """y[o, d, i] = x * s[d] (+ b[d] when ``b`` is not empty); x copied into ``keep`` first
    when it is not empty (``y`` may be ``x``).  Arrays (O, D, I)."""
    n_o, n_d, n_i = x.shape
    has_b = b.shape[0] > 0
    save = keep.shape[0] > 0
    for od in prange(n_o * n_d):
        o = od // n_d
        d = od % n_d
        r = x[o, d]
        out = y[o, d]
        sv = s[d]
        bv = b[d] if has_b else 0.0
        if save:
            k = keep[o, d]
            for i in range(n_i):
                k[i] = r[i]
        if has_b:
            for i in range(n_i):
                out[i] = r[i] * sv + bv
        else:
            for i in range(n_i):
                out[i] = r[i] * sv


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})
def scale_backward(dy, x, s, do_s, do_b, do_x, gs, gb, dx):
    """Gradients of :func:`scale_forward`, per channel d: gs[d] = sum dy * x (``do_s``),
    gb[d] = sum dy (``do_b``) (float64, overwritten), dx = dy * s[d] (``do_x``; may be dy)."""
    n_o, n_d, n_i = dy.shape
    for d in prange(n_d):
        a = 0.0
        c = 0.0
        sv = s[d]
        for o in range(n_o):
            g = dy[o, d]
            if do_s:
                r = x[o, d]
                for i in range(n_i):
                    a += g[i] * r[i]
            if do_b:
                for i in range(n_i):
                    c += g[i]
            if do_x:
                out = dx[o, d]
                for i in range(n_i):
                    out[i] = g[i] * sv
        gs[d] = a
        gb[d] = c
