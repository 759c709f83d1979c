"""CPU kernels for the solvers' per-parameter updates: one pass over memory instead of numpy's
chain of temporaries.  Arithmetic and rounding follow the numpy expressions they replace
(no fused multiply-add), so results are bit-identical.  Arrays are flat and C-contiguous;
the ``_par`` variants split the array into one block per thread (``nt`` passed in)."""
from __future__ import annotations

import numpy as np
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


# -- fused per-parameter updates ----------------------------------------------------------------
# One pass per learnable parameter doing all of ``SGDSolver::ApplyUpdate`` after the clipping:
# Normalize, Regularize, the rule's ComputeUpdateValue (history and update, left in ``g``, the
# diff) and ``w -= update``.  Every kernel takes ``(g, w, h1, h2, scale, decay, reg, c, nt)``:
# ``scale`` = 1/iter_size (1: no Normalize), ``decay`` = the local weight decay, ``reg`` 0: none,
# 1: L2, 2: L1, ``c`` the rule's constants (a tuple, in the arrays' dtype), h2 unused by rules with
# one history blob.  Each element sees the operations, operand order and dtypes of the numpy
# passes in ``netdef.solvers.updates``, so the result is bit-identical to them.
_JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_JIT)
def _grad(x, w, scale, decay, reg):
    """One element of the gradient the rule sees: Normalize, then Regularize."""
    if scale != 1:
        x = x * scale                               # diff *= 1/iter_size
    if reg == 1:
        x = x + w * decay                           # diff += data * local_decay
    elif reg == 2:                                  # diff += sign(data) * local_decay
        if w > 0:
            x = x + decay
        elif w < 0:
            x = x + -decay
        else:                                       # sign(±0) = +0, sign(NaN) = NaN
            x = x + (w - w) * decay
    return x


@njit(**_JIT)
def _sgd(g, w, v, h2, scale, decay, reg, c):
    mu, lr = c
    for i in range(g.shape[0]):
        u = v[i] * mu + _grad(g[i], w[i], scale, decay, reg) * lr
        v[i] = u
        g[i] = u
        w[i] -= u


@njit(**_JIT)
def _nesterov(g, w, v, h2, scale, decay, reg, c):
    mu, lr, one_plus_mu, minus_mu = c
    for i in range(g.shape[0]):
        old = v[i]
        vi = old * mu + _grad(g[i], w[i], scale, decay, reg) * lr
        v[i] = vi
        u = vi * one_plus_mu + old * minus_mu
        g[i] = u
        w[i] -= u


@njit(**_JIT)
def _adagrad(g, w, h, h2, scale, decay, reg, c):
    delta, lr = c
    for i in range(g.shape[0]):
        x = _grad(g[i], w[i], scale, decay, reg)
        hi = h[i] + x * x
        h[i] = hi
        u = x / (np.sqrt(hi) + delta) * lr
        g[i] = u
        w[i] -= u


@njit(**_JIT)
def _rmsprop(g, w, h, h2, scale, decay, reg, c):
    rho, one_minus_rho, delta, lr = c
    for i in range(g.shape[0]):
        x = _grad(g[i], w[i], scale, decay, reg)
        hi = h[i] * rho + x * x * one_minus_rho
        h[i] = hi
        u = x / (np.sqrt(hi) + delta) * lr
        g[i] = u
        w[i] -= u


@njit(**_JIT)
def _adadelta(g, w, h, h2, scale, decay, reg, c):
    mu, one_minus_mu, delta, lr = c
    for i in range(g.shape[0]):
        x = _grad(g[i], w[i], scale, decay, reg)
        hi = h[i] * mu + x * x * one_minus_mu
        h[i] = hi
        x = x * np.sqrt((h2[i] + delta) / (hi + delta))
        h2[i] = h2[i] * mu + x * x * one_minus_mu
        u = x * lr
        g[i] = u
        w[i] -= u


@njit(**_JIT)
def _adam(g, w, m, v, scale, decay, reg, c):
    b1, one_minus_b1, b2, one_minus_b2, eps, lr_corr = c
    for i in range(g.shape[0]):
        x = _grad(g[i], w[i], scale, decay, reg)
        mi = m[i] * b1 + x * one_minus_b1
        m[i] = mi
        vi = v[i] * b2 + x * x * one_minus_b2
        v[i] = vi
        u = mi / (np.sqrt(vi) + eps) * lr_corr
        g[i] = u
        w[i] -= u


# The drivers: the whole array on this thread (nt 1), or one block per thread on netdef's
# task pool (netdef.backend.cpu.gemm.run_tasks: plain nogil kernels, which compile several times
# faster than ``parallel=True`` drivers -- the cold first iteration of ``netdef train``).
def _driver(kernel):
    def run(g, w, h1, h2, scale, decay, reg, c, nt):
        if nt <= 1:
            kernel(g, w, h1, h2, scale, decay, reg, c)
            return
        from .gemm import run_tasks
        n = g.shape[0]
        k = -(-n // nt)

        def task(t, slot):
            s = slice(t * k, min(n, t * k + k))
            kernel(g[s], w[s], h1[s], h2[s], scale, decay, reg, c)
        run_tasks(task, nt, nt)
    run.__name__ = run.__qualname__ = kernel.__name__.lstrip("_") + "_fused"
    return run


sgd_fused = _driver(_sgd)
nesterov_fused = _driver(_nesterov)
adagrad_fused = _driver(_adagrad)
rmsprop_fused = _driver(_rmsprop)
adadelta_fused = _driver(_adadelta)
adam_fused = _driver(_adam)
