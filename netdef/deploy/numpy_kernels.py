"""Inference kernels in plain numpy, for deploy targets without Numba (``netdef[deploy]``).

Each function takes ``(lp, blobs, xs)`` — the LayerParameter, its blobs (float32 arrays) and
the bottom arrays — and returns the list of top arrays.  Semantics are Caffe's (and netdef's
Numba layers'), inference only: output sizes with Caffe's integer rules, pooling in ceil mode
with its padding clip and AVE divisor, LRN's two regions, Eltwise coefficients, Scale/Bias
broadcasting, Reshape's 0 / -1.  Arithmetic in float32 except where noted; results agree with
the Numba path to rounding (sums may run in a different order).

Every allocation of an output goes through :func:`_new`, which refuses more than
``MAX_ELEMENTS`` elements (a hostile file cannot make the predictor allocate without bound).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError

MAX_ELEMENTS = 1 << 32
#: im2col columns per chunk of images (bounds the temporary)
COL_CHUNK = 1 << 24


def _new(shape, dtype=np.float32, *, layer=None) -> np.ndarray:
    n = 1
    for d in shape:
        n *= int(d)
    if n > MAX_ELEMENTS or any(int(d) < 0 for d in shape):
        raise ShapeError(f"output shape {list(shape)} is too large ({n:,} elements)",
                         layer=layer)
    return np.empty(tuple(int(d) for d in shape), dtype)


def _axis(axis: int, ndim: int, lp, field: str) -> int:
    if not -ndim <= axis < ndim:
        raise ConfigError(f"{field} {axis} is out of range for a {ndim}-axis bottom",
                          layer=lp.name, layer_type=lp.type, field=field)
    return axis + ndim if axis < 0 else axis


def _prod(dims) -> int:
    p = 1
    for d in dims:
        p *= int(d)
    return p


# -- convolution --------------------------------------------------------------------------------
def conv_geometry(cp):
    """(kh, kw, ph, pw, sh, sw, dh, dw) of a ConvolutionParameter (2-D)."""
    def two(vals, default):
        vals = [int(v) for v in vals]
        if not vals:
            return default, default
        return (vals[0], vals[0]) if len(vals) == 1 else (vals[0], vals[1])

    if cp.HasField("kernel_h") or cp.HasField("kernel_w"):
        kh, kw = int(cp.kernel_h), int(cp.kernel_w)
    else:
        kh, kw = two(cp.kernel_size, 0)
    if cp.HasField("pad_h") or cp.HasField("pad_w"):
        ph, pw = int(cp.pad_h), int(cp.pad_w)
    else:
        ph, pw = two(cp.pad, 0)
    if cp.HasField("stride_h") or cp.HasField("stride_w"):
        sh, sw = int(cp.stride_h), int(cp.stride_w)
    else:
        sh, sw = two(cp.stride, 1)
    dh, dw = two(cp.dilation, 1)
    if min(kh, kw, sh, sw, dh, dw) <= 0 or min(ph, pw) < 0:
        raise ConfigError("kernel, stride and dilation must be positive, pad not negative",
                          field="convolution_param")
    return kh, kw, ph, pw, sh, sw, dh, dw


def conv_out(size, k, p, s, d) -> int:
    span = size + 2 * p - (d * (k - 1) + 1)
    q = abs(span) // s
    return (q if span >= 0 else -q) + 1


def _windows(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    """View (N, C, kh, kw, oh, ow) of the padded input."""
    n, c = xp.shape[:2]
    s = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (n, c, kh, kw, oh, ow), (s[0], s[1], dh * s[2], dw * s[3], sh * s[2], sw * s[3]),
        writeable=False)


def convolution(lp, blobs, xs):
    cp = lp.convolution_param
    kh, kw, ph, pw, sh, sw, dh, dw = conv_geometry(cp)
    W = blobs[0]
    bias = blobs[1] if cp.bias_term and len(blobs) > 1 else None
    g = int(cp.group)
    outs = []
    for x in xs:
        if x.ndim != 4:
            raise ShapeError(f"needs a 4-D bottom, got {list(x.shape)}", layer=lp.name)
        n, c, h, w = x.shape
        o = W.shape[0]
        if c % g or o % g or W.shape[1] * g != c:
            raise ShapeError(f"weights {list(W.shape)} do not fit a bottom of {c} channels "
                             f"with group {g}", layer=lp.name)
        oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(w, kw, pw, sw, dw)
        if oh <= 0 or ow <= 0:
            raise ShapeError(f"output would be {oh}x{ow} for a {h}x{w} input", layer=lp.name)
        y = _new((n, o, oh, ow), layer=lp.name)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
        xp = np.ascontiguousarray(xp, np.float32)
        cg, og = c // g, o // g
        L = oh * ow
        chunk = max(1, COL_CHUNK // max(1, c * kh * kw * L))
        for n0 in range(0, n, chunk):
            xc = xp[n0:n0 + chunk]
            m = xc.shape[0]
            # im2col: rows (c, i, j), columns (image, oy, ox); one GEMM per group
            cols = np.empty((c, kh, kw, m, oh, ow), np.float32)
            xt = xc.transpose(1, 0, 2, 3)
            for i in range(kh):
                for j in range(kw):
                    cols[:, i, j] = xt[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                       j * dw:j * dw + sw * (ow - 1) + 1:sw]
            cols = cols.reshape(c * kh * kw, m * L)
            kg = cg * kh * kw
            for gi in range(g):
                wg = W[gi * og:(gi + 1) * og].reshape(og, kg)
                r = wg @ cols[gi * kg:(gi + 1) * kg]
                y[n0:n0 + m, gi * og:(gi + 1) * og] = \
                    r.reshape(og, m, oh, ow).transpose(1, 0, 2, 3)
        if bias is not None:
            y += bias.reshape(1, o, 1, 1)
        outs.append(y)
    return outs


# -- pooling ------------------------------------------------------------------------------------
def pooling_geometry(pp, h, w):
    if pp.global_pooling:
        kh, kw = h, w
    elif pp.HasField("kernel_h") or pp.HasField("kernel_w"):
        kh, kw = int(pp.kernel_h), int(pp.kernel_w)
    else:
        kh = kw = int(pp.kernel_size)
    if pp.HasField("pad_h") or pp.HasField("pad_w"):
        ph, pw = int(pp.pad_h), int(pp.pad_w)
    else:
        ph = pw = int(pp.pad)
    if pp.HasField("stride_h") or pp.HasField("stride_w"):
        sh, sw = int(pp.stride_h), int(pp.stride_w)
    else:
        sh = sw = int(pp.stride)
    if min(kh, kw, sh, sw) <= 0:
        raise ConfigError("pooling kernel and stride must be positive", field="pooling_param")
    ceil = int(pp.round_mode) == pp.CEIL

    def one(size, k, p, s):
        span = size + 2 * p - k
        return (-(-span // s) if ceil else span // s) + 1

    oh, ow = one(h, kh, ph, sh), one(w, kw, pw, sw)
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    return kh, kw, ph, pw, sh, sw, oh, ow


def pooling(lp, blobs, xs):
    pp = lp.pooling_param
    x = xs[0]
    n, c, h, w = x.shape
    kh, kw, ph, pw, sh, sw, oh, ow = pooling_geometry(pp, h, w)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"pooled output would be {oh}x{ow}", layer=lp.name)
    _new((n, c, oh, ow), layer=lp.name)  # size check
    # pad so that every (ceil-mode) window lies inside the padded array
    ext_h = max((oh - 1) * sh + kh, h + ph) - h - ph
    ext_w = max((ow - 1) * sw + kw, w + pw) - w - pw
    if int(pp.pool) not in (pp.MAX, pp.AVE):
        raise ConfigError("only MAX and AVE pooling are supported", layer=lp.name,
                          layer_type=lp.type)
    if len(lp.top) == 2:
        raise ConfigError("the argmax top of MAX pooling is not available in the numpy "
                          "fallback", layer=lp.name, layer_type=lp.type)
    is_max = int(pp.pool) == pp.MAX
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ext_h), (pw, ext_w)),
                constant_values=-np.inf if is_max else 0)
    y = None
    for i in range(kh):
        for j in range(kw):
            v = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            if y is None:
                y = np.array(v, np.float32)
            elif is_max:
                np.maximum(y, v, out=y)
            else:
                y += v
    if is_max:
        return [y]
    hs = np.arange(oh) * sh - ph
    ws = np.arange(ow) * sw - pw
    dh_ = np.minimum(hs + kh, h + ph) - hs
    dw_ = np.minimum(ws + kw, w + pw) - ws
    y /= (dh_[:, None] * dw_[None, :]).astype(np.float32)
    return [y]


# -- dense and elementwise ----------------------------------------------------------------------
def inner_product(lp, blobs, xs):
    p = lp.inner_product_param
    x = xs[0]
    axis = _axis(int(p.axis), x.ndim, lp, "inner_product_param.axis")
    m, k = _prod(x.shape[:axis]), _prod(x.shape[axis:])
    W = blobs[0]
    wt = W if p.transpose else W.T
    if wt.shape[0] != k:
        raise ShapeError(f"bottom {list(x.shape)} has {k} inputs per item but the weights are "
                         f"{list(W.shape)}", layer=lp.name)
    y = np.matmul(x.reshape(m, k), wt)
    if p.bias_term and len(blobs) > 1:
        y += blobs[1]
    return [y.reshape(x.shape[:axis] + (wt.shape[1],)).astype(np.float32, copy=False)]


def relu(lp, blobs, xs):
    x = xs[0]
    s = np.float32(lp.relu_param.negative_slope)
    if s == 0:
        return [np.maximum(x, 0)]
    return [np.maximum(x, 0) + s * np.minimum(x, 0)]


def relu_inplace(y: np.ndarray, slope: float) -> None:
    """The fused epilogue: ReLU in the producer's output buffer."""
    if slope == 0:
        np.maximum(y, 0, out=y)
    else:
        np.multiply(y, np.float32(slope), out=y, where=y < 0)


def prelu(lp, blobs, xs):
    x = xs[0]
    a = blobs[0].reshape(-1)
    shape = [1] * x.ndim
    if a.size > 1:
        shape[1] = a.size
    a = a.reshape(shape)
    return [np.maximum(x, 0) + a * np.minimum(x, 0)]


def sigmoid(lp, blobs, xs):
    x = xs[0]
    return [(0.5 * np.tanh(0.5 * x) + 0.5).astype(np.float32)]


def tanh(lp, blobs, xs):
    return [np.tanh(xs[0])]


def absval(lp, blobs, xs):
    return [np.abs(xs[0])]


def power(lp, blobs, xs):
    p = lp.power_param
    y = xs[0] * np.float32(p.scale) + np.float32(p.shift)
    return [(y ** np.float32(p.power)).astype(np.float32) if p.power != 1 else y]


def elu(lp, blobs, xs):
    x = xs[0]
    a = np.float32(lp.elu_param.alpha)
    return [np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))).astype(np.float32)]


def bnll(lp, blobs, xs):
    x = xs[0]
    return [np.where(x > 0, x + np.log1p(np.exp(-x)), np.log1p(np.exp(x))).astype(np.float32)]


def softmax(lp, blobs, xs):
    x = xs[0]
    axis = _axis(int(lp.softmax_param.axis), x.ndim, lp, "softmax_param.axis")
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return [(e / e.sum(axis=axis, keepdims=True)).astype(np.float32)]


def lrn(lp, blobs, xs):
    p = lp.lrn_param
    x = xs[0]
    n_, c, h, w = x.shape
    size, alpha, beta, k = int(p.local_size), float(p.alpha), float(p.beta), float(p.k)
    x64 = x.astype(np.float64)
    sq = x64 * x64
    half = (size - 1) // 2
    if p.norm_region == p.ACROSS_CHANNELS:
        pad = np.pad(sq, ((0, 0), (half, half), (0, 0), (0, 0)))
        cs = np.cumsum(pad, axis=1)
        cs = np.concatenate([np.zeros((n_, 1, h, w)), cs], axis=1)
        s = cs[:, size:size + c] - cs[:, 0:c]
        scale = k + alpha / size * s
    else:
        pad = np.pad(sq, ((0, 0), (0, 0), (half, half), (half, half)))
        win = _windows(np.ascontiguousarray(pad), size, size, 1, 1, 1, 1, h, w)
        scale = 1.0 + alpha * win.sum(axis=(2, 3)) / (size * size)
    return [(x64 * scale ** -beta).astype(np.float32)]


def batch_norm(lp, blobs, xs):
    p = lp.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        raise ConfigError("BatchNorm with batch statistics is not an inference layer",
                          layer=lp.name, layer_type=lp.type)
    x = xs[0]
    sf = float(blobs[2].reshape(-1)[0])
    f = 0.0 if sf == 0 else 1.0 / sf
    mean = blobs[0].reshape(-1).astype(np.float32) * np.float32(f)
    var = blobs[1].reshape(-1).astype(np.float32) * np.float32(f)
    shape = [1] * x.ndim
    shape[1] = mean.size
    inv = 1.0 / np.sqrt(var + np.float32(p.eps))
    return [((x - mean.reshape(shape)) * inv.reshape(shape)).astype(np.float32)]


def _broadcast(lp, x, operand, pname):
    p = getattr(lp, pname)
    if operand.ndim == 0 or (operand.size == 1 and int(p.num_axes) == 0):
        return operand.reshape(())
    axis = _axis(int(p.axis), x.ndim, lp, f"{pname}.axis")
    shape = [1] * x.ndim
    shape[axis:axis + operand.ndim] = operand.shape
    if tuple(x.shape[axis:axis + operand.ndim]) != tuple(operand.shape):
        raise ShapeError(f"operand {list(operand.shape)} does not fit bottom {list(x.shape)} "
                         f"at axis {axis}", layer=lp.name)
    return operand.reshape(shape)


def scale(lp, blobs, xs):
    x = xs[0]
    s = xs[1] if len(xs) == 2 else blobs[0]
    y = x * _broadcast(lp, x, s, "scale_param")
    if lp.scale_param.bias_term:
        y = y + _broadcast(lp, x, blobs[-1], "scale_param")
    return [y.astype(np.float32, copy=False)]


def bias(lp, blobs, xs):
    x = xs[0]
    b = xs[1] if len(xs) == 2 else blobs[0]
    return [(x + _broadcast(lp, x, b, "bias_param")).astype(np.float32, copy=False)]


def concat(lp, blobs, xs):
    p = lp.concat_param
    a = int(p.concat_dim) if p.HasField("concat_dim") and not p.HasField("axis") else int(p.axis)
    axis = _axis(a, xs[0].ndim, lp, "concat_param.axis")
    return [np.concatenate(xs, axis=axis)]


def slice_(lp, blobs, xs):
    p = lp.slice_param
    x = xs[0]
    a = int(p.slice_dim) if p.HasField("slice_dim") and not p.HasField("axis") else int(p.axis)
    axis = _axis(a, x.ndim, lp, "slice_param.axis")
    nt = len(lp.top)
    points = [int(v) for v in p.slice_point]
    if not points:
        step = x.shape[axis] // nt
        points = [step * i for i in range(1, nt)]
    return [np.ascontiguousarray(part) for part in np.split(x, points, axis=axis)]


def split(lp, blobs, xs):
    return [xs[0]] * len(lp.top)


def eltwise(lp, blobs, xs):
    p = lp.eltwise_param
    if p.operation == p.PROD:
        y = xs[0].copy()
        for x in xs[1:]:
            y *= x
        return [y]
    if p.operation == p.MAX:
        y = xs[0].copy()
        for x in xs[1:]:
            np.maximum(y, x, out=y)
        return [y]
    coeffs = [float(c) for c in p.coeff] or [1.0] * len(xs)
    if len(coeffs) != len(xs):
        raise ConfigError("Eltwise SUM needs one coeff per bottom", layer=lp.name,
                          layer_type=lp.type)
    y = xs[0] * np.float32(coeffs[0])
    for x, c in zip(xs[1:], coeffs[1:]):
        y += np.float32(c) * x if c != 1 else x
    return [y]


def flatten(lp, blobs, xs):
    p = lp.flatten_param
    x = xs[0]
    a = _axis(int(p.axis), x.ndim, lp, "flatten_param.axis")
    e = _axis(int(p.end_axis), x.ndim, lp, "flatten_param.end_axis")
    return [x.reshape(x.shape[:a] + (_prod(x.shape[a:e + 1]),) + x.shape[e + 1:])]


def reshape_shape(p, s) -> list[int]:
    n = len(s)
    start = p.axis if p.axis >= 0 else n + p.axis + 1
    end = n if p.num_axes == -1 else start + p.num_axes
    if not 0 <= start <= n or end > n:
        raise ConfigError("reshape axis/num_axes out of range", field="reshape_param")
    new = [s[start + k] if d == 0 else int(d) for k, d in enumerate(p.shape.dim)]
    shape = list(s[:start]) + new + list(s[end:])
    count = _prod(s)
    if -1 in shape:
        known = _prod([d for d in shape if d != -1])
        shape[shape.index(-1)] = count // known if known else 0
    if _prod(shape) != count:
        raise ShapeError(f"reshape {shape} does not hold the {count} elements of {list(s)}")
    return shape


def reshape(lp, blobs, xs):
    x = xs[0]
    return [x.reshape(reshape_shape(lp.reshape_param, x.shape))]


def dropout(lp, blobs, xs):
    return [xs[0]]


def argmax(lp, blobs, xs):
    p = lp.argmax_param
    x = xs[0]
    if p.top_k != 1 or p.out_max_val or p.HasField("axis"):
        raise ConfigError("ArgMax in the numpy fallback supports top_k 1 without axis only",
                          layer=lp.name, layer_type=lp.type)
    flat = x.reshape(x.shape[0], -1)
    return [flat.argmax(axis=1).astype(np.float32).reshape(x.shape[0], 1, 1)]


KERNELS = {
    "Convolution": convolution, "Pooling": pooling, "InnerProduct": inner_product,
    "ReLU": relu, "PReLU": prelu, "Sigmoid": sigmoid, "TanH": tanh, "AbsVal": absval,
    "Power": power, "ELU": elu, "BNLL": bnll, "Softmax": softmax, "LRN": lrn,
    "BatchNorm": batch_norm, "Scale": scale, "Bias": bias, "Concat": concat, "Slice": slice_,
    "Split": split, "Eltwise": eltwise, "Flatten": flatten, "Reshape": reshape,
    "Dropout": dropout, "ArgMax": argmax,
}
