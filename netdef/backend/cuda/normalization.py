"""CUDA kernels and implementations of the normalization layers (netdef.layers.normalization):
LRN (across and within channels), BatchNorm, MVN."""
from __future__ import annotations

import math
import numpy as np

from .launch import kernel
from .primitives import (
    DOT,
    Impl,
    SUM,
    SUMSQ,
    copy,
    cuda,
    grid1d,
    impl,
    mul,
    row_reduce,
    scratch,
    segment_sum,
    sqrt_inplace,
    state,
)


# -- LRN (across channels) ----------------------------------------------------------------------
@kernel
def _lrn_scale(x, n, c, hw, size, alpha_over, k, scale):
    total = n * c * hw
    pre = (size - 1) // 2
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        p = e % hw
        t = e // hw
        ci = t % c
        b = t // c
        acc = 0.0
        for q in range(max(ci - pre, 0), min(ci - pre + size, c)):
            v = x[(b * c + q) * hw + p]
            acc += v * v
        scale[e] = k + alpha_over * acc


@kernel
def _lrn_out(n, x, scale, beta, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = x[i] * math.pow(scale[i], -beta)


@kernel
def _lrn_bwd(x, y, dy, scale, n, c, hw, size, cache_ratio, beta, dx):
    total = n * c * hw
    post = size - (size - 1) // 2 - 1
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        p = e % hw
        t = e // hw
        ci = t % c
        b = t // c
        acc = 0.0
        for q in range(max(ci - post, 0), min(ci + (size - 1) // 2 + 1, c)):
            r = (b * c + q) * hw + p
            acc += dy[r] * y[r] / scale[r]
        dx[e] = dy[e] * math.pow(scale[e], -beta) - cache_ratio * x[e] * acc


def lrn_forward(x, n, c, hw, size, alpha, beta, k, scale, y):
    tot = n * c * hw
    _lrn_scale[grid1d(tot)](x, n, c, hw, size, alpha / size, k, scale)
    _lrn_out[grid1d(tot)](tot, x, scale, beta, y)


def lrn_backward(x, y, dy, scale, n, c, hw, size, alpha, beta, dx):
    tot = n * c * hw
    _lrn_bwd[grid1d(tot)](x, y, dy, scale, n, c, hw, size, 2.0 * alpha * beta / size, beta, dx)


# -- BatchNorm ------------------------------------------------------------------------------------
@kernel
def _bn_normalize(x, n, c, hw, mean, var, eps, y):
    total = n * c * hw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ci = (e // hw) % c
        y[e] = (x[e] - mean[ci]) / math.sqrt(var[ci] + eps)


@kernel
def _bn_center_sq(x, n, c, hw, mean, out):
    total = n * c * hw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ci = (e // hw) % c
        d = x[e] - mean[ci]
        out[e] = d * d


@kernel
def _bn_bwd(y, dy, n, c, hw, sum_dy, sum_dyy, var, eps, m, dx):
    total = n * c * hw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ci = (e // hw) % c
        dx[e] = (dy[e] - sum_dy[ci] / m - y[e] * sum_dyy[ci] / m) / math.sqrt(var[ci] + eps)


@kernel
def _bn_global_bwd(dy, n, c, hw, var, eps, dx):
    total = n * c * hw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ci = (e // hw) % c
        dx[e] = dy[e] / math.sqrt(var[ci] + eps)


@kernel
def _bn_global_stats(b0, b1, b2, c, mean, var):
    sf = b2[0]
    f = 0.0 if sf == 0 else 1.0 / sf
    for i in range(cuda.grid(1), c, cuda.gridsize(1)):
        mean[i] = b0[i] * f
        var[i] = b1[i] * f


@kernel
def _bn_update(b0, b1, b2, mean, var, c, maf, corr):
    for i in range(cuda.grid(1), c, cuda.gridsize(1)):
        b0[i] = maf * b0[i] + mean[i]
        b1[i] = maf * b1[i] + corr * var[i]
        if i == 0:
            b2[0] = b2[0] * maf + 1


def bn_global_stats(b0, b1, b2, c, mean, var):
    _bn_global_stats[grid1d(c)](b0, b1, b2, c, mean, var)


def bn_update(b0, b1, b2, mean, var, c, maf, corr):
    _bn_update[grid1d(c)](b0, b1, b2, mean, var, c, maf, corr)


def bn_center_sq(x, n, c, s, mean, out):
    _bn_center_sq[grid1d(n * c * s)](x, n, c, s, mean, out)


def bn_normalize(x, n, c, s, mean, var, eps, y):
    _bn_normalize[grid1d(n * c * s)](x, n, c, s, mean, var, eps, y)


def bn_backward(y, dy, n, c, s, sum_dy, sum_dyy, var, eps, m, dx):
    _bn_bwd[grid1d(n * c * s)](y, dy, n, c, s, sum_dy, sum_dyy, var, eps, float(m), dx)


def bn_global_bwd(dy, n, c, s, var, eps, dx):
    _bn_global_bwd[grid1d(n * c * s)](dy, n, c, s, var, eps, dx)


# -- MVN ------------------------------------------------------------------------------------------
@kernel
def _center(n, x, mean, dim, out):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = x[i] - mean[i // dim]


@kernel
def _mvn_norm(n, x, mean, sigma, eps, dim, use_sigma, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        r = i // dim
        v = x[i] - mean[r]
        if use_sigma:
            v = v / (sigma[r] + eps)
        y[i] = v


@kernel
def _mvn_bwd(n, dy, y, mdy, mdyy, sigma, eps, dim, use_sigma, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        r = i // dim
        if use_sigma:
            s = sigma[r]
            inv = 1.0 / s if s > 0 else 0.0
            dx[i] = (dy[i] - mdy[r]) / (s + eps) - y[i] * (mdyy[r] * inv)
        else:
            dx[i] = dy[i] - mdy[r]


def center(x, mean, dim, out, n):
    if n:
        _center[grid1d(n)](n, x, mean, dim, out)


def mvn_normalize(x, mean, sigma, eps, dim, y, n):
    if n:
        _mvn_norm[grid1d(n)](n, x, mean, mean if sigma is None else sigma, eps, dim,
                             sigma is not None, y)


def mvn_backward(dy, y, mdy, mdyy, sigma, eps, dim, dx, n):
    if n:
        use = sigma is not None
        _mvn_bwd[grid1d(n)](n, dy, y if use else dy, mdy, mdyy if use else mdy,
                            sigma if use else mdy, eps, dim, use, dx)


# -- LRN within a channel ---------------------------------------------------------------------------
@kernel
def _box_sum_sq(a, b, use_b, nc, h, w, half, scale, offset, out):
    """out = offset + scale * (box sum over the (2 half + 1)^2 patch, clipped to the plane) of
    a*a (use_b false) or a*b."""
    for e in range(cuda.grid(1), nc * h * w, cuda.gridsize(1)):
        j = e % w
        t = e // w
        i = t % h
        p = t // h
        acc = 0.0
        for ii in range(max(0, i - half), min(h, i + half + 1)):
            for jj in range(max(0, j - half), min(w, j + half + 1)):
                q = (p * h + ii) * w + jj
                if use_b:
                    acc += a[q] * b[q]
                else:
                    acc += a[q] * a[q]
        out[e] = offset + scale * acc


@kernel
def _lrn_within_out(n, x, scale, beta, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = x[i] * math.pow(scale[i], -beta)


@kernel
def _lrn_within_ratio(n, x, dy, scale, beta, ratio):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        s = scale[i]
        ratio[i] = dy[i] * x[i] * math.pow(s, -beta) / s


@kernel
def _lrn_within_bwd(n, x, dy, scale, inner, beta, coef, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = dy[i] * math.pow(scale[i], -beta) - coef * x[i] * inner[i]


def lrn_within_forward(x, nc, h, w, size, alpha, beta, scale, y):
    n = nc * h * w
    if n:
        _box_sum_sq[grid1d(n)](x, x, False, nc, h, w, (size - 1) // 2, alpha / (size * size),
                               1.0, scale)
        _lrn_within_out[grid1d(n)](n, x, scale, beta, y)


def lrn_within_backward(x, dy, scale, nc, h, w, size, alpha, beta, ratio, inner, dx):
    n = nc * h * w
    if n:
        _lrn_within_ratio[grid1d(n)](n, x, dy, scale, beta, ratio)
        _box_sum[grid1d(n)](ratio, nc, h, w, (size - 1) // 2, inner)
        _lrn_within_bwd[grid1d(n)](n, x, dy, scale, inner, beta,
                                   2.0 * alpha * beta / (size * size), dx)


@kernel
def _box_sum(a, nc, h, w, half, out):
    for e in range(cuda.grid(1), nc * h * w, cuda.gridsize(1)):
        j = e % w
        t = e // w
        i = t % h
        p = t // h
        acc = 0.0
        for ii in range(max(0, i - half), min(h, i + half + 1)):
            for jj in range(max(0, j - half), min(w, j + half + 1)):
                acc += a[(p * h + ii) * w + jj]
        out[e] = acc


# -- normalization ------------------------------------------------------------------------------
class _PlainLRN(Impl):
    def supports(self, layer):
        return layer.across

    def forward(self, layer, bottom, top):
        n, c, h, w = bottom[0].shape
        sc = state(layer, "scale", bottom[0].count, bottom[0].dtype)
        lrn_forward(bottom[0].gpu_data(), n, c, h * w, layer.size, layer.alpha, layer.beta,
                      layer.k, sc, top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        lrn_backward(bottom[0].gpu_data(), top[0].gpu_data(), top[0].gpu_diff(),
                       layer._cu_scale, n, c, h * w, layer.size, layer.alpha, layer.beta,
                       bottom[0].mutable_gpu_diff())


_PLAIN_LRN = _PlainLRN()


@impl("BatchNorm")
class BatchNorm(Impl):
    def _dims(self, layer, blob):
        n = blob.shape[0]
        c = layer.channels
        s = blob.count // (n * c) if n * c else 0
        return n, c, s

    def forward(self, layer, bottom, top):
        n, c, s = self._dims(layer, bottom[0])
        cnt = bottom[0].count
        x = bottom[0].gpu_data()
        mean = state(layer, "mean", c, np.float64)
        var = state(layer, "var", c, np.float64)
        if layer.use_global:
            bn_global_stats(layer.blobs[0].gpu_data(), layer.blobs[1].gpu_data(),
                              layer.blobs[2].gpu_data(), c, mean, var)
        else:
            m = max(n * s, 1)
            segment_sum(x, n, c, s, mean, 1.0 / m, 0.0)
            sq = scratch("bn_sq", cnt, np.float64)
            bn_center_sq(x, n, c, s, mean, sq)
            segment_sum(sq, n, c, s, var, 1.0 / m, 0.0)
            if layer.phase == 0:
                mm = n * s
                corr = mm / (mm - 1) if mm > 1 else 1.0
                bn_update(layer.blobs[0].mutable_gpu_data(), layer.blobs[1].mutable_gpu_data(),
                            layer.blobs[2].mutable_gpu_data(), mean, var, c, layer.maf, corr)
        y = top[0].mutable_gpu_data()
        bn_normalize(x, n, c, s, mean, var, layer.eps, y)
        if not layer.use_global:
            keep = state(layer, "xnorm", cnt, bottom[0].dtype)
            copy(keep, y, cnt)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, s = self._dims(layer, bottom[0])
        cnt = bottom[0].count
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        if layer.use_global:
            bn_global_bwd(dy, n, c, s, layer._cu_var, layer.eps, dx)
            return
        m = max(n * s, 1)
        sum_dy = state(layer, "sum_dy", c, np.float64)
        sum_dyy = state(layer, "sum_dyy", c, np.float64)
        segment_sum(dy, n, c, s, sum_dy, 1.0, 0.0)
        prod = scratch("bn_sq", cnt, np.float64)
        mul(dy, layer._cu_xnorm, prod, cnt)
        segment_sum(prod, n, c, s, sum_dyy, 1.0, 0.0)
        bn_backward(layer._cu_xnorm, dy, n, c, s, sum_dy, sum_dyy, layer._cu_var, layer.eps,
                      m, dx)


# -- MVN ---------------------------------------------------------------------------------------------
@impl("MVN")
class MVN(Impl):
    @staticmethod
    def _rows(layer, blob):
        s = blob.shape
        n = s[0]
        rows = n if layer.across or len(s) < 2 else n * s[1]
        return rows, (blob.count // rows if rows else 0)

    def forward(self, layer, bottom, top):
        rows, dim = self._rows(layer, bottom[0])
        n = bottom[0].count
        x = bottom[0].gpu_data()
        mean = state(layer, "mean", rows, np.float64)
        row_reduce(x, rows, dim, mean, SUM, 1.0 / max(dim, 1))
        sigma = None
        if layer.normalize_variance:
            cen = scratch("mvn", n, np.float64)
            center(x, mean, dim, cen, n)
            sigma = state(layer, "sigma", rows, np.float64)
            row_reduce(cen, rows, dim, sigma, SUMSQ, 1.0 / max(dim, 1))
            sqrt_inplace(sigma, rows)
        mvn_normalize(x, mean, sigma, layer.eps, dim, top[0].mutable_gpu_data(), n)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        rows, dim = self._rows(layer, bottom[0])
        n = bottom[0].count
        dy = top[0].gpu_diff()
        inv = 1.0 / max(dim, 1)
        mdy = state(layer, "mdy", rows, np.float64)
        row_reduce(dy, rows, dim, mdy, SUM, inv)
        if not layer.normalize_variance:
            mvn_backward(dy, None, mdy, None, None, 0.0, dim, bottom[0].mutable_gpu_diff(), n)
            return
        # y recomputed from the bottom (a later in-place layer may have changed the top)
        y = scratch("mvn", n, np.float64)
        mvn_normalize(bottom[0].gpu_data(), layer._cu_mean, layer._cu_sigma, layer.eps, dim,
                        y, n)
        mdyy = state(layer, "mdyy", rows, np.float64)
        row_reduce(dy, rows, dim, mdyy, DOT, inv, x2=y)
        mvn_backward(dy, y, mdy, mdyy, layer._cu_sigma, layer.eps, dim,
                       bottom[0].mutable_gpu_diff(), n)


@impl("LRN")
class LRN(Impl):
    def forward(self, layer, bottom, top):
        if layer.across:
            return _PLAIN_LRN.forward(layer, bottom, top)
        n, c, h, w = bottom[0].shape
        sc = state(layer, "scale", bottom[0].count, bottom[0].dtype)
        lrn_within_forward(bottom[0].gpu_data(), n * c, h, w, layer.size, layer.alpha,
                             layer.beta, sc, top[0].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if layer.across:
            return _PLAIN_LRN.backward(layer, top, propagate_down, bottom)
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        cnt = bottom[0].count
        ratio = scratch("lrn_ratio", cnt, bottom[0].dtype)
        inner = scratch("lrn_inner", cnt, bottom[0].dtype)
        lrn_within_backward(bottom[0].gpu_data(), top[0].gpu_diff(), layer._cu_scale, n * c,
                              h, w, layer.size, layer.alpha, layer.beta, ratio, inner,
                              bottom[0].mutable_gpu_diff())
