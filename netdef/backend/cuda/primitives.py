"""What every CUDA family module builds on: the ``numba.cuda`` handle and launch sizes, the
small kernels shared by many layers (fill, copy, axpby, scale, broadcasts, segmented
reductions), device scratch and per-layer state arrays, and :class:`Impl`, the base of a layer
type's CUDA implementation (``@impl("Type")`` names the types a class implements;
:mod:`.dispatch` builds the table from the family modules)."""
from __future__ import annotations

import math
import numpy as np

from .launch import kernel
from .counters import count_d2h, count_h2d, device_empty
from .device import is_simulator
from .device import cuda as _get_cuda


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
@kernel
def _fill(a, n, v):
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, n, stride):
        a[i] = v


def fill(a, v, n=None):
    n = a.size if n is None else n
    if n:
        _fill[grid1d(n)](a, n, v)


@kernel
def _copy(dst, doff, src, soff, n):
    start = cuda.grid(1)
    for i in range(start, n, cuda.gridsize(1)):
        dst[doff + i] = src[soff + i]


def copy(dst, src, n=None, doff=0, soff=0):
    n = src.size if n is None else n
    if n:
        _copy[grid1d(n)](dst, doff, src, soff, n)


@kernel
def _axpby(n, a, x, b, y):
    """y = a*x + b*y"""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = a * x[i] + b * y[i]


def axpby(a, x, b, y, n=None):
    n = x.size if n is None else n
    if n:
        _axpby[grid1d(n)](n, y.dtype.type(a), x, y.dtype.type(b), y)


@kernel
def _add_to(n, x, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] += x[i]


def add_to(x, y, n=None):
    n = x.size if n is None else n
    if n:
        _add_to[grid1d(n)](n, x, y)


@kernel
def _mul(n, a, b, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = a[i] * b[i]


def mul(a, b, y, n=None):
    n = a.size if n is None else n
    if n:
        _mul[grid1d(n)](n, a, b, y)


@kernel
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


@kernel
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


def loss_acc(x, n, w, acc, slot, first):
    """A device net's loss without a host read: ``acc[slot] = w * sum(x)`` (``first``) or
    ``+=`` (the float64 sum the host makes of a scalar loss top, exactly)."""
    seg_reduce(x, 1, 1, n, acc[slot:slot + 1], SUM, w, 0.0 if first else 1.0)


def sumsq(x, n=None):
    """Sum of squares of a flat array, on the host (float)."""
    out = device_empty(1, np.float64)
    n = x.size if n is None else n
    seg_reduce(x, 1, 1, n, out, SUMSQ)
    count_d2h(8)
    return float(out.copy_to_host()[0])


# -- channel copies (Concat, Slice) --------------------------------------------------------------
@kernel
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


@kernel
def _scaled_copy(n, src, a, dst):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dst[i] = src[i] * a


def scaled_copy(src, a, dst, n):
    if n:
        _scaled_copy[grid1d(n)](n, src, a, dst)


@kernel
def _div_mul(n, y, b, dy, dx):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        dx[i] = y[i] / b[i] * dy[i]


def div_mul(y, b, dy, dx, n):
    _div_mul[grid1d(n)](n, y, b, dy, dx)


def row_reduce(x, rows, dim, out, mode=SUM, alpha=1.0, beta=0.0, x2=None):
    """out[r] = alpha * sum_k f(x[r*dim + k]) + beta * out[r]."""
    seg_reduce(x, 1, rows, dim, out, mode, alpha, beta, x2)


# -- broadcasting (Scale, Bias) --------------------------------------------------------------------
@kernel
def _bcast(n, x, s, has_s, b, has_b, d, inner, y):
    """y = x * s[(i // inner) % d] (if has_s) + b[...] (if has_b)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        k = (i // inner) % d
        v = x[i]
        if has_s:
            v = v * s[k]
        if has_b:
            v = v + b[k]
        y[i] = v


def bcast(x, y, n, d, inner, s=None, b=None):
    if n:
        _bcast[grid1d(n)](n, x, x if s is None else s, s is not None, x if b is None else b,
                          b is not None, d, inner, y)


@kernel
def _sqrt_inplace(n, a):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        a[i] = math.sqrt(a[i])


def sqrt_inplace(a, n):
    if n:
        _sqrt_inplace[grid1d(n)](n, a)


# -- losses -------------------------------------------------------------------------------------------
@kernel
def _scale_dev(n, x, topdiff, c, y):
    """y = c * topdiff[0] * x (a loss gradient scaled by the loss weight on the device)."""
    wgt = topdiff[0] * c
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = wgt * x[i]


def scale_dev(x, topdiff, c, y, n):
    if n:
        _scale_dev[grid1d(n)](n, x, topdiff, float(c), y)


@kernel
def _sub(n, a, b, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[i] = a[i] - b[i]


def sub(a, b, y, n):
    if n:
        _sub[grid1d(n)](n, a, b, y)


@kernel
def _add_bias(y, outer, c, inner, bias):
    total = outer * c * inner
    for e in range(cuda.grid(1), total, cuda.gridsize(1)):
        y[e] += bias[(e // inner) % c]


def add_bias(y, outer, c, inner, bias):
    if outer * c * inner:
        _add_bias[grid1d(outer * c * inner)](y, outer, c, inner, bias)


_WORK: dict = {}


def scratch(tag: str, n: int, dtype):
    """A device scratch array of at least ``n`` elements (contents undefined), shared."""
    dt = np.dtype(dtype)
    key = (tag, dt.str)
    buf = _WORK.get(key)
    if buf is None or buf.size < n:
        buf = device_empty(n, dt)
        _WORK[key] = buf
    return buf


def upload_const(arr):
    """A device copy of a host array made once (counted as a host->device copy)."""
    arr = np.ascontiguousarray(arr).reshape(-1)
    d = device_empty(arr.size, arr.dtype)
    if arr.size:
        d[:arr.size].copy_to_device(arr)
    count_h2d(arr.nbytes)
    return d


def state(layer, name, n, dtype):
    """A per-layer device array ``name`` of exactly ``n`` elements (reallocated on change)."""
    attr = "_cu_" + name
    buf = layer.__dict__.get(attr)
    dt = np.dtype(dtype)
    if buf is None or buf.size != max(n, 1) or buf.dtype != dt:
        buf = device_empty(n, dt)
        setattr(layer, attr, buf)
    return buf


def impl(*types):
    """Class decorator: the layer types this Impl subclass implements (read by
    :mod:`.dispatch`; nothing is registered at import)."""
    def deco(cls):
        cls.types = tuple(types)
        return cls
    return deco


class Impl:
    def supports(self, layer) -> bool:
        return True

    def backward(self, layer, top, propagate_down, bottom):
        return None


def _checked_labels(layer, blob, lab_host, c):
    """class_labels() on a read-only host copy (so the blob's head is not moved)."""
    from ..cpu.loss import class_labels

    class _RO:
        name = blob.name
        data = lab_host
    return class_labels(layer, _RO, c, layer.has_ignore, layer.ignore)


def _labels(layer, blob, c):
    """Class labels checked on a host copy (the blob's device copy stays current)."""
    from ..cpu.loss import class_labels
    return class_labels(layer, _RO(blob), c)


class _RO:
    """A read-only stand-in for a blob (``.data`` is a host copy) for CPU validation code."""

    def __init__(self, blob):
        self.name = blob.name
        self.data = blob.cpu_data()
        self.shape = blob.shape
