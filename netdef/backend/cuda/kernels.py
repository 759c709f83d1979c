"""CUDA kernels (numba.cuda) for the layer families and the solver updates.

All kernels work on flat device arrays (a blob's device mirror) plus integer geometry, with
grid-stride loops so any launch covers any size.  Under the simulator the launches are shrunk
(few threads, each looping), because every simulated thread is a Python thread.  Reductions
that Caffe does in double (loss sums) accumulate in float64 here too.
"""
from __future__ import annotations

import math

import numpy as np

from .device import cuda as _get_cuda, is_simulator

cuda = _get_cuda()
SIM = is_simulator()

#: threads per block for 1-D kernels
TPB = 32 if SIM else 256
RED = 32 if SIM else 256      # reduction block size (power of two)


def grid1d(n: int):
    n = max(int(n), 1)
    if SIM:
        return 1, min(TPB, n)
    return min((n + TPB - 1) // TPB, 65535 * 8), TPB


# -- basics --------------------------------------------------------------------------------
@cuda.jit
def _fill(a, n, v):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, n, stride):
        a[i] = v


def fill(a, v, n=None):
    n = a.size if n is None else n
    if n:
        _fill[grid1d(n)](a, n, v)


@cuda.jit
def _copy(dst, doff, src, soff, n):
    start = cuda.grid(1)
    for i in range(start, n, cuda.gridsize(1)):
        dst[doff + i] = src[soff + i]


def copy(dst, src, n=None, doff=0, soff=0):
    n = src.size if n is None else n
    if n:
        _copy[grid1d(n)](dst, doff, src, soff, n)


@cuda.jit
def _axpby(n, a, x, b, y):
    """y = a*x + b*y"""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = a * x[i] + b * y[i]


def axpby(a, x, b, y, n=None):
    n = x.size if n is None else n
    if n:
        _axpby[grid1d(n)](n, y.dtype.type(a), x, y.dtype.type(b), y)


@cuda.jit
def _add_to(n, x, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] += x[i]


def add_to(x, y, n=None):
    n = x.size if n is None else n
    if n:
        _add_to[grid1d(n)](n, x, y)


@cuda.jit
def _mul(n, a, b, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = a[i] * b[i]


def mul(a, b, y, n=None):
    n = a.size if n is None else n
    if n:
        _mul[grid1d(n)](n, a, b, y)


@cuda.jit
def _scale(n, a, x):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        x[i] = x[i] * a


def scale(a, x, n=None):
    n = x.size if n is None else n
    if n:
        _scale[grid1d(n)](n, x.dtype.type(a), x)


# -- reductions ------------------------------------------------------------------------------
SUM, ASUM, SUMSQ, DOT = 0, 1, 2, 3


def _blocks(n: int) -> int:
    """Blocks for a one-block-per-segment kernel (grid-stride over segments)."""
    n = max(int(n), 1)
    return min(n, 8 if SIM else 65535)


@cuda.jit
def _seg_reduce(x, x2, rows, seg, inner, mode, out, alpha, beta):
    """out[s] = alpha * sum_{a < rows, l < inner} f(x[(a*seg + s)*inner + l]) + beta * out[s]
    with f = identity / abs / square / x*x2 (mode 0..3); one block per segment s at a time,
    float64 accumulation."""
    buf = cuda.shared.array(RED, np.float64)
    t = cuda.threadIdx.x
    total = rows * inner
    for s in range(cuda.blockIdx.x, seg, cuda.gridDim.x):
        acc = 0.0
        for e in range(t, total, cuda.blockDim.x):
            a = e // inner
            lo = e - a * inner
            q = (a * seg + s) * inner + lo
            v = x[q]
            if mode == 1:
                acc += abs(v)
            elif mode == 2:
                acc += v * v
            elif mode == 3:
                acc += v * x2[q]
            else:
                acc += v
        buf[t] = acc
        cuda.syncthreads()
        h = cuda.blockDim.x // 2
        while h > 0:
            if t < h:
                buf[t] += buf[t + h]
            cuda.syncthreads()
            h //= 2
        if t == 0:
            if beta == 0:
                out[s] = alpha * buf[0]
            else:
                out[s] = alpha * buf[0] + beta * out[s]
        cuda.syncthreads()


def seg_reduce(x, rows, seg, inner, out, mode=SUM, alpha=1.0, beta=0.0, x2=None):
    """For x viewed as (rows, seg, inner): out[s] = alpha * sum f(x) + beta * out[s]."""
    if seg:
        _seg_reduce[_blocks(seg), RED](x, x if x2 is None else x2, rows, seg, inner, mode, out,
                                       float(alpha), float(beta))


def segment_sum(x, rows, seg, inner, out, alpha=1.0, beta=0.0, sq=False):
    """For x viewed as (rows, seg, inner): out[s] = alpha*sum_{rows,inner} x + beta*out[s]
    (with sq: of x*x)."""
    seg_reduce(x, rows, seg, inner, out, SUMSQ if sq else SUM, alpha, beta)


def sumsq(x, n=None):
    """Sum of squares of a flat array, on the host (float)."""
    out = cuda.device_array(1, np.float64)
    n = x.size if n is None else n
    seg_reduce(x, 1, 1, n, out, SUMSQ)
    return float(out.copy_to_host()[0])


# -- neuron layers -----------------------------------------------------------------------------
RELU, SIGMOID, TANH, ABSVAL, ELU, BNLL, THRESHOLD, CLIP, SCALE = range(9)


@cuda.jit
def _neuron_fwd(op, n, x, y, p0, p1):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        if op == 0:
            r = v if v > 0 else v * p0
            if v <= 0 and p0 == 0:
                r = 0.0
        elif op == 1:
            r = 1.0 / (1.0 + math.exp(-v)) if v >= -700 else 0.0
        elif op == 2:
            r = math.tanh(v)
        elif op == 3:
            r = abs(v)
        elif op == 4:
            r = v if v > 0 else p0 * math.expm1(v)
        elif op == 5:
            r = v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v))
        elif op == 6:
            r = 1.0 if v > p0 else 0.0
        elif op == 7:
            r = min(max(v, p0), p1)
        else:
            r = v * p0
        y[i] = r


@cuda.jit
def _neuron_bwd(op, n, x, y, dy, dx, p0, p1):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        g = dy[i]
        if op == 0:
            r = g if x[i] > 0 else g * p0
        elif op == 1:
            yy = y[i]
            r = g * ((1.0 - yy) * yy)
        elif op == 2:
            yy = y[i]
            r = g * (1.0 - yy * yy)
        elif op == 3:
            v = x[i]
            r = g if v > 0 else (-g if v < 0 else 0.0 * g)
        elif op == 4:
            r = g if x[i] > 0 else g * (y[i] + p0)
        elif op == 5:
            e = math.exp(min(x[i], 50.0))
            r = g * (e / (e + 1.0))
        elif op == 7:
            v = x[i]
            r = g if (v >= p0 and v <= p1) else 0.0 * g
        else:
            r = g * p0
        dx[i] = r


def neuron_forward(op, x, y, n, p0=0.0, p1=0.0):
    if n:
        _neuron_fwd[grid1d(n)](op, n, x, y, p0, p1)


def neuron_backward(op, x, y, dy, dx, n, p0=0.0, p1=0.0):
    if n:
        _neuron_bwd[grid1d(n)](op, n, x, y, dy, dx, p0, p1)


# -- im2col / col2im ---------------------------------------------------------------------------
# The column matrix's entry for row r = (ci*kh + i)*kw + j, image b and pixel l = oy*ow + ox
# sits at col[r*rs + b*bs + l]: channel-major (rs = the row length, bs = L) for the GEMM
# convolutions, image-major (rs = L, bs = C*kh*kw*L) for the Im2col layer's top.
@cuda.jit
def _im2col(x, xoff, c, h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, m, col, rs, bs):
    """The column entries of images b in [0, m) of x (from xoff)."""
    L = oh * ow
    total = c * kh * kw * m * L
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = e % L
        t = e // L
        b = t % m
        r = t // m
        j = r % kw
        i = (r // kw) % kh
        ci = r // (kw * kh)
        oy = l // ow
        ox = l - oy * ow
        yy = oy * sh - ph + i * dh
        xx = ox * sw - pw + j * dw
        v = 0.0
        if 0 <= yy < h and 0 <= xx < w:
            v = x[xoff + ((b * c + ci) * h + yy) * w + xx]
        col[r * rs + b * bs + l] = v


@cuda.jit
def _col2im(col, rs, bs, c, h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, m, x, xoff):
    """x[b, ci, yy, xx] = sum of the col entries that im2col read from it (a gather)."""
    total = m * c * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = e % w
        t = e // w
        yy = t % h
        t //= h
        ci = t % c
        b = t // c
        acc = 0.0
        for i in range(kh):
            ty = yy + ph - i * dh
            if ty < 0 or ty % sh != 0:
                continue
            oy = ty // sh
            if oy >= oh:
                continue
            for j in range(kw):
                tx = xx + pw - j * dw
                if tx < 0 or tx % sw != 0:
                    continue
                ox = tx // sw
                if ox >= ow:
                    continue
                acc += col[((ci * kh + i) * kw + j) * rs + b * bs + oy * ow + ox]
        x[xoff + e] = acc


def im2col(x, xoff, c, h, w, geom, oh, ow, m, col, ld):
    """Channel-major columns of m images (rows ld long)."""
    n = c * geom[0] * geom[1] * m * oh * ow
    if n:
        _im2col[grid1d(n)](x, xoff, c, h, w, *geom, oh, ow, m, col, ld, oh * ow)


def col2im(col, ld, c, h, w, geom, oh, ow, m, x, xoff):
    n = m * c * h * w
    if n:
        _col2im[grid1d(n)](col, ld, oh * ow, c, h, w, *geom, oh, ow, m, x, xoff)


def im2col_images(x, n, c, h, w, geom, oh, ow, col):
    """Image-major columns (the Im2col layer's top: (N, C*kh*kw, oh, ow))."""
    L = oh * ow
    total = n * c * geom[0] * geom[1] * L
    if total:
        _im2col[grid1d(total)](x, 0, c, h, w, *geom, oh, ow, n, col, L,
                               c * geom[0] * geom[1] * L)


def col2im_images(col, n, c, h, w, geom, oh, ow, x):
    L = oh * ow
    if n * c * h * w:
        _col2im[grid1d(n * c * h * w)](col, L, c * geom[0] * geom[1] * L, c, h, w, *geom, oh,
                                       ow, n, x, 0)


@cuda.jit
def _nchw_to_cl(x, xoff, m, c, L, out):
    """out[ci, b*L + l] = x[b, ci, l]"""
    total = m * c * L
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = e % L
        t = e // L
        b = t % m
        ci = t // m
        out[e] = x[xoff + (b * c + ci) * L + l]


@cuda.jit
def _cl_to_nchw(cl, m, c, L, bias, has_bias, y, yoff):
    """y[b, ci, l] = cl[ci, b*L + l] (+ bias[ci])"""
    total = m * c * L
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        l = e % L
        t = e // L
        ci = t % c
        b = t // c
        v = cl[(ci * m + b) * L + l]
        if has_bias:
            v += bias[ci]
        y[yoff + e] = v


def nchw_to_cl(x, xoff, m, c, L, out):
    if m * c * L:
        _nchw_to_cl[grid1d(m * c * L)](x, xoff, m, c, L, out)


def cl_to_nchw(cl, m, c, L, bias, y, yoff):
    if m * c * L:
        has = bias is not None
        _cl_to_nchw[grid1d(m * c * L)](cl, m, c, L, bias if has else cl, has, y, yoff)


@cuda.jit
def _add_bias(y, outer, c, inner, bias):
    total = outer * c * inner
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        y[e] += bias[(e // inner) % c]


def add_bias(y, outer, c, inner, bias):
    if outer * c * inner:
        _add_bias[grid1d(outer * c * inner)](y, outer, c, inner, bias)


# -- depthwise convolution ---------------------------------------------------------------------
@cuda.jit
def _dw_forward(x, n, c, h, w, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, bias, has_bias,
                y, oh, ow):
    o = c * mult
    total = n * o * oh * ow
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ox = e % ow
        t = e // ow
        oy = t % oh
        t //= oh
        oc = t % o
        b = t // o
        ci = oc // mult
        acc = 0.0
        for i in range(kh):
            yy = oy * sh - ph + i * dh
            if yy < 0 or yy >= h:
                continue
            for j in range(kw):
                xx = ox * sw - pw + j * dw
                if 0 <= xx < w:
                    acc += x[((b * c + ci) * h + yy) * w + xx] * wt[(oc * kh + i) * kw + j]
        if has_bias:
            acc += bias[oc]
        y[e] = acc


@cuda.jit
def _dw_backward_data(dy, n, c, h, w, wt, kh, kw, ph, pw, sh, sw, dh, dw, mult, dx, oh, ow):
    o = c * mult
    total = n * c * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = e % w
        t = e // w
        yy = t % h
        t //= h
        ci = t % c
        b = t // c
        acc = 0.0
        for q in range(mult):
            oc = ci * mult + q
            for i in range(kh):
                ty = yy + ph - i * dh
                if ty < 0 or ty % sh != 0:
                    continue
                oy = ty // sh
                if oy >= oh:
                    continue
                for j in range(kw):
                    tx = xx + pw - j * dw
                    if tx < 0 or tx % sw != 0:
                        continue
                    ox = tx // sw
                    if ox >= ow:
                        continue
                    acc += dy[((b * o + oc) * oh + oy) * ow + ox] * wt[(oc * kh + i) * kw + j]
        dx[e] = acc


@cuda.jit
def _dw_backward_weight(x, n, c, h, w, dy, kh, kw, ph, pw, sh, sw, dh, dw, mult, dwt, oh, ow):
    """dwt[oc, i, j] += sum over b, oy, ox: one block per weight element."""
    buf = cuda.shared.array(RED, np.float64)
    k = cuda.blockIdx.x
    t = cuda.threadIdx.x
    j = k % kw
    i = (k // kw) % kh
    oc = k // (kw * kh)
    ci = oc // mult
    o = c * mult
    acc = 0.0
    total = n * oh * ow
    for e in range(t, total, cuda.blockDim.x):
        ox = e % ow
        r = e // ow
        oy = r % oh
        b = r // oh
        yy = oy * sh - ph + i * dh
        xx = ox * sw - pw + j * dw
        if 0 <= yy < h and 0 <= xx < w:
            acc += x[((b * c + ci) * h + yy) * w + xx] * dy[((b * o + oc) * oh + oy) * ow + ox]
    buf[t] = acc
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        dwt[k] += buf[0]


def depthwise_forward(x, n, c, h, w, wt, geom, mult, bias, y, oh, ow):
    total = n * c * mult * oh * ow
    has = bias is not None
    _dw_forward[grid1d(total)](x, n, c, h, w, wt, *geom, mult, bias if has else wt, has,
                               y, oh, ow)


def depthwise_backward_data(dy, n, c, h, w, wt, geom, mult, dx, oh, ow):
    _dw_backward_data[grid1d(n * c * h * w)](dy, n, c, h, w, wt, *geom, mult, dx, oh, ow)


def depthwise_backward_weight(x, n, c, h, w, dy, geom, mult, dwt, oh, ow):
    nk = c * mult * geom[0] * geom[1]
    _dw_backward_weight[nk, RED](x, n, c, h, w, dy, *geom, mult, dwt, oh, ow)


# -- pooling -------------------------------------------------------------------------------------
@cuda.jit
def _max_pool_fwd(x, nc, h, w, kh, kw, ph, pw, sh, sw, y, mask, oh, ow):
    total = nc * oh * ow
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ox = e % ow
        t = e // ow
        oy = t % oh
        p = t // oh
        hs = oy * sh - ph
        ws = ox * sw - pw
        he = min(hs + kh, h)
        we = min(ws + kw, w)
        hs = max(hs, 0)
        ws = max(ws, 0)
        best = -math.inf
        arg = -1
        for yy in range(hs, he):
            for xx in range(ws, we):
                v = x[(p * h + yy) * w + xx]
                if v > best or arg < 0:
                    best = v
                    arg = yy * w + xx
        y[e] = best
        mask[e] = arg


@cuda.jit
def _max_pool_bwd(dy, mask, nc, h, w, kh, kw, ph, pw, sh, sw, dx, oh, ow):
    total = nc * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = e % w
        t = e // w
        yy = t % h
        p = t // h
        phs = 0 if yy + ph < kh else (yy + ph - kh) // sh + 1
        phe = min((yy + ph) // sh + 1, oh)
        pws = 0 if xx + pw < kw else (xx + pw - kw) // sw + 1
        pwe = min((xx + pw) // sw + 1, ow)
        acc = 0.0
        idx = yy * w + xx
        for oy in range(phs, phe):
            for ox in range(pws, pwe):
                q = (p * oh + oy) * ow + ox
                if mask[q] == idx:
                    acc += dy[q]
        dx[e] = acc


@cuda.jit
def _ave_pool_fwd(x, nc, h, w, kh, kw, ph, pw, sh, sw, y, oh, ow):
    total = nc * oh * ow
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ox = e % ow
        t = e // ow
        oy = t % oh
        p = t // oh
        hs = oy * sh - ph
        ws = ox * sw - pw
        he = min(hs + kh, h + ph)
        we = min(ws + kw, w + pw)
        size = (he - hs) * (we - ws)
        hs = max(hs, 0)
        ws = max(ws, 0)
        he = min(he, h)
        we = min(we, w)
        acc = 0.0
        for yy in range(hs, he):
            for xx in range(ws, we):
                acc += x[(p * h + yy) * w + xx]
        y[e] = acc / size


@cuda.jit
def _ave_pool_bwd(dy, nc, h, w, kh, kw, ph, pw, sh, sw, dx, oh, ow):
    total = nc * h * w
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        xx = e % w + pw
        t = e // w
        yy = t % h + ph
        p = t // h
        phs = 0 if yy < kh else (yy - kh) // sh + 1
        phe = min(yy // sh + 1, oh)
        pws = 0 if xx < kw else (xx - kw) // sw + 1
        pwe = min(xx // sw + 1, ow)
        acc = 0.0
        for oy in range(phs, phe):
            for ox in range(pws, pwe):
                hs = oy * sh - ph
                ws = ox * sw - pw
                he = min(hs + kh, h + ph)
                we = min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)
                acc += dy[(p * oh + oy) * ow + ox] / size
        dx[e] = acc


def max_pool_forward(x, nc, h, w, geom, y, mask, oh, ow):
    _max_pool_fwd[grid1d(nc * oh * ow)](x, nc, h, w, *geom, y, mask, oh, ow)


def max_pool_backward(dy, mask, nc, h, w, geom, dx, oh, ow):
    _max_pool_bwd[grid1d(nc * h * w)](dy, mask, nc, h, w, *geom, dx, oh, ow)


def ave_pool_forward(x, nc, h, w, geom, y, oh, ow):
    _ave_pool_fwd[grid1d(nc * oh * ow)](x, nc, h, w, *geom, y, oh, ow)


def ave_pool_backward(dy, nc, h, w, geom, dx, oh, ow):
    _ave_pool_bwd[grid1d(nc * h * w)](dy, nc, h, w, *geom, dx, oh, ow)


@cuda.jit
def _mask_to_float(mask, n, out):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = mask[i]


def mask_to_float(mask, out, n):
    _mask_to_float[grid1d(n)](mask, n, out)


# -- softmax and softmax loss ----------------------------------------------------------------------
@cuda.jit
def _softmax_fwd(x, outer, c, inner, y):
    total = outer * inner
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        o = e // inner
        i = e - o * inner
        base = o * c * inner + i
        mx = x[base]
        for k in range(1, c):
            mx = max(mx, x[base + k * inner])
        s = 0.0
        for k in range(c):
            v = math.exp(x[base + k * inner] - mx)
            y[base + k * inner] = v
            s += y[base + k * inner]
        for k in range(c):
            y[base + k * inner] = y[base + k * inner] / s


@cuda.jit
def _softmax_bwd(y, dy, outer, c, inner, dx):
    total = outer * inner
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        o = e // inner
        i = e - o * inner
        base = o * c * inner + i
        dot = 0.0
        for k in range(c):
            dot += y[base + k * inner] * dy[base + k * inner]
        for k in range(c):
            q = base + k * inner
            dx[q] = (dy[q] - dot) * y[q]


def softmax_forward(x, outer, c, inner, y):
    _softmax_fwd[grid1d(outer * inner)](x, outer, c, inner, y)


def softmax_backward(y, dy, outer, c, inner, dx):
    _softmax_bwd[grid1d(outer * inner)](y, dy, outer, c, inner, dx)


@cuda.jit
def _nll_loss(prob, labels, outer, c, inner, has_ignore, ignore, floor, scale, out):
    """out[0] = scale * sum over positions of -log(max(p[label], floor)) (one block)."""
    buf = cuda.shared.array(RED, np.float64)
    t = cuda.threadIdx.x
    acc = 0.0
    for e in range(t, outer * inner, cuda.blockDim.x):
        lab = int(labels[e])
        if has_ignore and lab == ignore:
            continue
        o = e // inner
        i = e - o * inner
        p = prob[(o * c + lab) * inner + i]
        acc -= math.log(max(p, floor))
    buf[t] = acc
    cuda.syncthreads()
    s = cuda.blockDim.x // 2
    while s > 0:
        if t < s:
            buf[t] += buf[t + s]
        cuda.syncthreads()
        s //= 2
    if t == 0:
        out[0] = buf[0] * scale


@cuda.jit
def _nll_grad(prob, labels, outer, c, inner, has_ignore, ignore, topdiff, inv_norm, g):
    total = outer * c * inner
    wgt = topdiff[0] * inv_norm
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        i = e % inner
        t = e // inner
        k = t % c
        o = t // c
        lab = int(labels[o * inner + i])
        if has_ignore and lab == ignore:
            g[e] = 0.0
        else:
            v = prob[e]
            if k == lab:
                v -= 1.0
            g[e] = v * wgt


def nll_loss(prob, labels, outer, c, inner, has_ignore, ignore, floor, scale, out):
    _nll_loss[1, RED](prob, labels, outer, c, inner, has_ignore, ignore, floor, scale, out)


def nll_grad(prob, labels, outer, c, inner, has_ignore, ignore, topdiff, inv_norm, g):
    _nll_grad[grid1d(outer * c * inner)](prob, labels, outer, c, inner, has_ignore, ignore,
                                         topdiff, inv_norm, g)


@cuda.jit
def _accuracy(x, labels, outer, c, inner, top_k, has_ignore, ignore, correct, per_class):
    """correct[e] = 1 when fewer than top_k other classes score at least as high as the label
    (ties count against the label, as in Caffe), 0 otherwise, -1 for ignored positions."""
    for e in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        lab = int(labels[e])
        if has_ignore and lab == ignore:
            correct[e] = -1
            continue
        o = e // inner
        i = e - o * inner
        base = o * c * inner + i
        v = x[base + lab * inner]
        rank = 0
        for k in range(c):
            u = x[base + k * inner]
            if k != lab and u >= v:
                rank += 1
        correct[e] = 1 if rank < top_k else 0


def accuracy(x, labels, outer, c, inner, top_k, has_ignore, ignore, correct):
    _accuracy[grid1d(outer * inner)](x, labels, outer, c, inner, top_k, has_ignore, ignore,
                                     correct, correct)


# -- channel copies (Concat, Slice) --------------------------------------------------------------
@cuda.jit
def _copy_block(src, outer, sa, inner, dst, da, off, forward):
    """forward: dst[o, off + a, i] = src[o, a, i]; else src[o, a, i] = dst[o, off + a, i]."""
    total = outer * sa * inner
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        i = e % inner
        t = e // inner
        a = t % sa
        o = t // sa
        q = (o * da + off + a) * inner + i
        if forward:
            dst[q] = src[e]
        else:
            src[e] = dst[q]


def copy_block(src, outer, sa, inner, dst, da, off, forward=True):
    if outer * sa * inner:
        _copy_block[grid1d(outer * sa * inner)](src, outer, sa, inner, dst, da, off, forward)


# -- Eltwise ---------------------------------------------------------------------------------------
@cuda.jit
def _eltwise_max(n, a, b, y, mask, idx_b, first):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        if first:
            if a[i] > b[i]:
                y[i] = a[i]
                mask[i] = 0
            else:
                y[i] = b[i]
                mask[i] = idx_b
        elif b[i] > y[i]:
            y[i] = b[i]
            mask[i] = idx_b


@cuda.jit
def _mask_select(n, dy, mask, k, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = dy[i] if mask[i] == k else 0.0 * dy[i]


def eltwise_max(a, b, y, mask, idx_b, first, n):
    _eltwise_max[grid1d(n)](n, a, b, y, mask, idx_b, first)


def mask_select(dy, mask, k, dx, n):
    _mask_select[grid1d(n)](n, dy, mask, k, dx)


# -- LRN (across channels) ----------------------------------------------------------------------
@cuda.jit
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


@cuda.jit
def _lrn_out(n, x, scale, beta, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = x[i] * math.pow(scale[i], -beta)


@cuda.jit
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
@cuda.jit
def _bn_normalize(x, n, c, hw, mean, var, eps, y):
    total = n * c * hw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ci = (e // hw) % c
        y[e] = (x[e] - mean[ci]) / math.sqrt(var[ci] + eps)


@cuda.jit
def _bn_center_sq(x, n, c, hw, mean, out):
    total = n * c * hw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ci = (e // hw) % c
        d = x[e] - mean[ci]
        out[e] = d * d


@cuda.jit
def _bn_bwd(y, dy, n, c, hw, sum_dy, sum_dyy, var, eps, m, dx):
    total = n * c * hw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ci = (e // hw) % c
        dx[e] = (dy[e] - sum_dy[ci] / m - y[e] * sum_dyy[ci] / m) / math.sqrt(var[ci] + eps)


@cuda.jit
def _bn_global_bwd(dy, n, c, hw, var, eps, dx):
    total = n * c * hw
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        ci = (e // hw) % c
        dx[e] = dy[e] / math.sqrt(var[ci] + eps)


@cuda.jit
def _scaled_copy(n, src, a, dst):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dst[i] = src[i] * a


def scaled_copy(src, a, dst, n):
    if n:
        _scaled_copy[grid1d(n)](n, src, a, dst)


@cuda.jit
def _div_mul(n, y, b, dy, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = y[i] / b[i] * dy[i]


def div_mul(y, b, dy, dx, n):
    _div_mul[grid1d(n)](n, y, b, dy, dx)


@cuda.jit
def _bn_global_stats(b0, b1, b2, c, mean, var):
    sf = b2[0]
    f = 0.0 if sf == 0 else 1.0 / sf
    for i in range(cuda.grid(1), c, cuda.gridsize(1)):
        mean[i] = b0[i] * f
        var[i] = b1[i] * f


@cuda.jit
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
