"""im2col / col2im and the layout changes around the convolution GEMMs.

Layouts
-------
* images: NCHW, C-contiguous.
* ``col``: a flat buffer; the entry of (row, image n, output position p) lives at
  ``row * rs + n * ns + p`` where ``row = (c * kh + ki) * kw + kj`` and ``p = oy * ow + ox``.
  Convolution uses the batch-concatenated layout ``(C*kh*kw, N*L)`` (``rs = N*L, ns = L``) so
  that one GEMM per group covers a whole chunk of the batch; the Im2col layer uses
  ``(N, C*kh*kw, L)`` (``rs = L, ns = C*kh*kw*L``).
* "cl" (channel-major) ``(C, N*L)``: :func:`nchw_to_cl` / :func:`cl_to_nchw` convert to and from
  ``(N, C, L)``.

Every kernel is parallel over (image, channel) pairs, which write disjoint memory.  For each
kernel column ``kj`` the range of output columns whose input column falls inside the image is
computed once, so the inner loops carry no bounds tests; the stride-1 inner loops run over 1-D
row views from index 0, which is the form LLVM vectorises.
"""
from __future__ import annotations

from numba import njit, prange


@njit(cache=True, parallel=True)
def im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, rs, ns):
    """Fill ``col`` (flat) from ``x`` (N, C, H, W); padding reads as 0."""
    n_img, c_in, h, w = x.shape
    for nc in prange(n_img * c_in):
        n = nc // c_in
        c = nc % c_in
        for ki in range(kh):
            for kj in range(kw):
                off = kj * dw - pw
                lo = min(ow, max(0, (sw - 1 - off) // sw))
                hi = max(lo, min(ow, (w - 1 - off) // sw + 1))
                row = (c * kh + ki) * kw + kj
                base = row * rs + n * ns
                for oy in range(oh):
                    iy = oy * sh - ph + ki * dh
                    b = base + oy * ow
                    if iy < 0 or iy >= h:
                        col[b:b + ow] = 0.0
                        continue
                    col[b:b + lo] = 0.0
                    if sw == 1:
                        dst = col[b + lo:b + hi]
                        src = x[n, c, iy, lo + off:hi + off]
                        for i in range(hi - lo):
                            dst[i] = src[i]
                    else:
                        for ox in range(lo, hi):
                            col[b + ox] = x[n, c, iy, ox * sw + off]
                    col[b + hi:b + ow] = 0.0


@njit(cache=True, parallel=True)
def col2im(col, rs, ns, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, x):
    """Overwrite ``x`` (N, C, H, W) with the sum of the ``col`` entries im2col reads from it."""
    n_img, c_in, h, w = x.shape
    for nc in prange(n_img * c_in):
        n = nc // c_in
        c = nc % c_in
        for iy in range(h):
            for ix in range(w):
                x[n, c, iy, ix] = 0.0
        for ki in range(kh):
            for kj in range(kw):
                off = kj * dw - pw
                lo = min(ow, max(0, (sw - 1 - off) // sw))
                hi = max(lo, min(ow, (w - 1 - off) // sw + 1))
                row = (c * kh + ki) * kw + kj
                base = row * rs + n * ns
                for oy in range(oh):
                    iy = oy * sh - ph + ki * dh
                    if iy < 0 or iy >= h:
                        continue
                    b = base + oy * ow
                    if sw == 1:
                        dst = x[n, c, iy, lo + off:hi + off]
                        src = col[b + lo:b + hi]
                        for i in range(hi - lo):
                            dst[i] += src[i]
                    else:
                        for ox in range(lo, hi):
                            x[n, c, iy, ox * sw + off] += col[b + ox]


@njit(cache=True, parallel=True)
def nchw_to_cl(x, out):
    """out[c, n*L + l] = x[n, c, l] for x (N, C, L), out (C, N*L)."""
    n_img, ch, size = x.shape
    for cn in prange(ch * n_img):
        c = cn // n_img
        n = cn % n_img
        dst = out[c, n * size:(n + 1) * size]
        src = x[n, c]
        for i in range(size):
            dst[i] = src[i]


@njit(cache=True, parallel=True)
def cl_to_nchw(src, bias, out):
    """out[n, c, l] = src[c, n*L + l] (+ bias[c] when ``bias`` is not empty)."""
    n_img, ch, size = out.shape
    has_bias = bias.shape[0] > 0
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        s = src[c, n * size:(n + 1) * size]
        dst = out[n, c]
        if has_bias:
            v = bias[c]
            for i in range(size):
                dst[i] = s[i] + v
        else:
            for i in range(size):
                dst[i] = s[i]
