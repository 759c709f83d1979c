"""CPU kernels for the solvers' per-parameter updates: one pass over memory instead of numpy's
chain of temporaries.  Arithmetic and rounding follow the numpy expressions they replace
(no fused multiply-add), so results are bit-identical.  Arrays are flat and C-contiguous;
the ``_par`` variants split the array into one block per thread (``nt`` passed in)."""
from __future__ import annotations

from numba import njit, prange


@njit(cache=True)
def axpy(a, x, y):
    """y += x * a (L2 weight decay: ``diff += data * local_decay``)."""
    for i in range(y.shape[0]):
        y[i] += x[i] * a


@njit(cache=True, parallel=True)
def axpy_par(a, x, y, nt):
    n = y.shape[0]
    step = (n + nt - 1) // nt
    for t in prange(nt):
        for i in range(t * step, min(n, (t + 1) * step)):
            y[i] += x[i] * a


@njit(cache=True)
def sgd_momentum(g, v, mu, lr):
    """Caffe's SGD: v = mu*v + lr*g; g = v (the update)."""
    for i in range(g.shape[0]):
        u = v[i] * mu + g[i] * lr
        v[i] = u
        g[i] = u


@njit(cache=True, parallel=True)
def sgd_momentum_par(g, v, mu, lr, nt):
    n = g.shape[0]
    step = (n + nt - 1) // nt
    for t in prange(nt):
        for i in range(t * step, min(n, (t + 1) * step)):
            u = v[i] * mu + g[i] * lr
            v[i] = u
            g[i] = u
