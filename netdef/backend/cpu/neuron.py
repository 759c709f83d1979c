"""CPU kernels for the neuron (elementwise) layers that do not map onto one numpy ufunc.

PReLU works on the bottom viewed as ``(rows, D)`` where row ``r`` belongs to channel
``r % C`` (``C == 1`` for a shared slope).  Both kernels accept float32 and float64.
"""
from __future__ import annotations

from numba import njit, prange


@njit(cache=True, parallel=True)
def prelu_forward(x, slope, channels, y):
    """y[r, d] = max(x, 0) + slope[r % channels] * min(x, 0); ``y`` may be ``x``."""
    rows, dim = x.shape
    for r in prange(rows):
        a = slope[r % channels]
        for d in range(dim):
            v = x[r, d]
            if v > 0:
                y[r, d] = v
            else:
                y[r, d] = a * v


@njit(cache=True, parallel=True)
def prelu_backward(x, slope, channels, top_diff, bottom_diff, partial, do_bottom, do_slope):
    """Gradient of PReLU.

    ``partial[r]`` receives sum_d top_diff * x * (x <= 0) (the slope gradient of row ``r``,
    summed per channel by the caller) when ``do_slope``; ``bottom_diff`` (may be ``top_diff``)
    is overwritten when ``do_bottom``.  ``x`` is the layer's input."""
    rows, dim = x.shape
    for r in prange(rows):
        a = slope[r % channels]
        acc = 0.0
        for d in range(dim):
            v = x[r, d]
            g = top_diff[r, d]
            if v > 0:
                if do_bottom:
                    bottom_diff[r, d] = g
            else:
                if do_slope:
                    acc += g * v
                if do_bottom:
                    bottom_diff[r, d] = a * g
        if do_slope:
            partial[r] = acc
