"""CPU kernels for convolution (im2col/col2im, depthwise) and pooling.

Arrays are NCHW, C-contiguous; ``col`` is (N, C*kh*kw, oh*ow).  Every kernel is parallel over
(image, channel) pairs, which are independent.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col):
    n_img, c_in, h, w = x.shape
    for nc in prange(n_img * c_in):
        n = nc // c_in
        c = nc % c_in
        for ki in range(kh):
            for kj in range(kw):
                row = (c * kh + ki) * kw + kj
                for oy in range(oh):
                    iy = oy * sh - ph + ki * dh
                    base = oy * ow
                    if iy < 0 or iy >= h:
                        for ox in range(ow):
                            col[n, row, base + ox] = 0.0
                    else:
                        for ox in range(ow):
                            ix = ox * sw - pw + kj * dw
                            if ix >= 0 and ix < w:
                                col[n, row, base + ox] = x[n, c, iy, ix]
                            else:
                                col[n, row, base + ox] = 0.0


@njit(cache=True, parallel=True)
def col2im(col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, x):
    """x[n, c] = sum of the col entries that im2col would have read from it (x is overwritten)."""
    n_img, c_in, h, w = x.shape
    for nc in prange(n_img * c_in):
        n = nc // c_in
        c = nc % c_in
        for iy in range(h):
            for ix in range(w):
                x[n, c, iy, ix] = 0.0
        for ki in range(kh):
            for kj in range(kw):
                row = (c * kh + ki) * kw + kj
                for oy in range(oh):
                    iy = oy * sh - ph + ki * dh
                    if iy < 0 or iy >= h:
                        continue
                    base = oy * ow
                    for ox in range(ow):
                        ix = ox * sw - pw + kj * dw
                        if ix >= 0 and ix < w:
                            x[n, c, iy, ix] += col[n, row, base + ox]


@njit(cache=True, parallel=True)
def depthwise_forward(x, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, y):
    """y[n, o] = conv(x[n, o // mult], wt[o, 0]) for group == channels."""
    n_img, c_out, oh, ow = y.shape
    h, w = x.shape[2], x.shape[3]
    for no in prange(n_img * c_out):
        n = no // c_out
        o = no % c_out
        c = o // mult
        for oy in range(oh):
            for ox in range(ow):
                acc = 0.0
                for ki in range(kh):
                    iy = oy * sh - ph + ki * dh
                    if iy < 0 or iy >= h:
                        continue
                    for kj in range(kw):
                        ix = ox * sw - pw + kj * dw
                        if ix >= 0 and ix < w:
                            acc += x[n, c, iy, ix] * wt[o, 0, ki, kj]
                y[n, o, oy, ox] = acc


@njit(cache=True, parallel=True)
def depthwise_backward_data(dy, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, dx):
    n_img, c_in, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in prange(n_img * c_in):
        n = nc // c_in
        c = nc % c_in
        for iy in range(h):
            for ix in range(w):
                dx[n, c, iy, ix] = 0.0
        for m in range(mult):
            o = c * mult + m
            for oy in range(oh):
                for ki in range(kh):
                    iy = oy * sh - ph + ki * dh
                    if iy < 0 or iy >= h:
                        continue
                    for ox in range(ow):
                        g = dy[n, o, oy, ox]
                        for kj in range(kw):
                            ix = ox * sw - pw + kj * dw
                            if ix >= 0 and ix < w:
                                dx[n, c, iy, ix] += g * wt[o, 0, ki, kj]


@njit(cache=True, parallel=True)
def depthwise_backward_weight(x, dy, kh, kw, ph, pw, sh, sw, dh, dw, mult, dwt):
    """dwt[o, 0] += correlation of dy[:, o] with x[:, o // mult]."""
    n_img, c_out, oh, ow = dy.shape
    h, w = x.shape[2], x.shape[3]
    for o in prange(c_out):
        c = o // mult
        for ki in range(kh):
            for kj in range(kw):
                acc = 0.0
                for n in range(n_img):
                    for oy in range(oh):
                        iy = oy * sh - ph + ki * dh
                        if iy < 0 or iy >= h:
                            continue
                        for ox in range(ow):
                            ix = ox * sw - pw + kj * dw
                            if ix >= 0 and ix < w:
                                acc += dy[n, o, oy, ox] * x[n, c, iy, ix]
                dwt[o, 0, ki, kj] += acc


@njit(cache=True, parallel=True)
def max_pool_forward(x, kh, kw, ph, pw, sh, sw, y, mask):
    n_img, ch, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for py in range(oh):
            hs = py * sh - ph
            he = min(hs + kh, h)
            hs = max(hs, 0)
            for px in range(ow):
                ws = px * sw - pw
                we = min(ws + kw, w)
                ws = max(ws, 0)
                best = -np.inf
                idx = -1
                for iy in range(hs, he):
                    for ix in range(ws, we):
                        v = x[n, c, iy, ix]
                        if v > best:
                            best = v
                            idx = iy * w + ix
                y[n, c, py, px] = best if idx >= 0 else 0.0
                mask[n, c, py, px] = idx


@njit(cache=True, parallel=True)
def max_pool_backward(dy, mask, dx):
    n_img, ch, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for iy in range(h):
            for ix in range(w):
                dx[n, c, iy, ix] = 0.0
        for py in range(oh):
            for px in range(ow):
                idx = mask[n, c, py, px]
                if idx >= 0:
                    dx[n, c, idx // w, idx % w] += dy[n, c, py, px]


@njit(cache=True, parallel=True)
def ave_pool_forward(x, kh, kw, ph, pw, sh, sw, y):
    n_img, ch, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for py in range(oh):
            hs = py * sh - ph
            he = min(hs + kh, h + ph)
            for px in range(ow):
                ws = px * sw - pw
                we = min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                acc = 0.0
                for iy in range(max(hs, 0), min(he, h)):
                    for ix in range(max(ws, 0), min(we, w)):
                        acc += x[n, c, iy, ix]
                y[n, c, py, px] = acc / size


@njit(cache=True, parallel=True)
def ave_pool_backward(dy, kh, kw, ph, pw, sh, sw, dx):
    n_img, ch, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for iy in range(h):
            for ix in range(w):
                dx[n, c, iy, ix] = 0.0
        for py in range(oh):
            hs = py * sh - ph
            he = min(hs + kh, h + ph)
            for px in range(ow):
                ws = px * sw - pw
                we = min(ws + kw, w + pw)
                g = dy[n, c, py, px] / ((he - hs) * (we - ws))
                for iy in range(max(hs, 0), min(he, h)):
                    for ix in range(max(ws, 0), min(we, w)):
                        dx[n, c, iy, ix] += g
