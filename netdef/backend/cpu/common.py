"""CPU kernels for the common layers (Embed's weight gradient).

InnerProduct, Scale and Bias are GEMMs / broadcasts done with numpy in the layer module.
"""
from __future__ import annotations

from numba import njit


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
