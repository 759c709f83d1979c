"""Inference kernels in plain numpy, for deploy targets without Numba (``netdef[deploy]``).

Each function takes ``(lp, blobs, xs)`` — the LayerParameter, its blobs (float32 arrays) and
the bottom arrays — and returns the list of top arrays.  Semantics are Caffe's (and netdef's
Numba layers'), inference only: output sizes with Caffe's integer rules, pooling in ceil mode
with its padding clip and AVE divisor, LRN's two regions, Eltwise coefficients, Scale/Bias
broadcasting, Reshape's 0 / -1, Deconvolution as a scatter of W^T x columns, MAX pooling's
argmax top (h*W + w of the first maximum in scan order) and STOCHASTIC pooling's TEST formula,
ArgMax's tie order (the larger index first), MVN's eps on the standard deviation, Power's
constant case.  Arithmetic in float32 except where noted; results agree with the Numba path to
rounding (sums may run in a different order).

Covered: every inference layer type of netdef except the recurrent ones (LSTM, RNN,
LSTMUnit) and Python layers, which need the Numba path.

Every allocation of an output goes through :func:`_new`, which refuses more than
``MAX_ELEMENTS`` elements (a hostile file cannot make the predictor allocate without bound).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers import geometry as geo

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
    """(kh, kw, ph, pw, sh, sw, dh, dw) of a ConvolutionParameter (2-D), Caffe's rules."""
    try:
        return geo.conv_params(cp)
    except geo.GeometryError as e:
        raise ConfigError(e.message, field=e.field) from None


conv_out = geo.conv_out


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


def deconvolution(lp, blobs, xs):
    """Transposed convolution (Caffe's Deconvolution): weight (C, O/group, kh, kw);
    out = stride * (in - 1) + dilation * (k - 1) + 1 - 2 * pad."""
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
        og = W.shape[1]
        o = og * g
        if c % g or W.shape[0] != c:
            raise ShapeError(f"weights {list(W.shape)} do not fit a bottom of {c} channels "
                             f"with group {g}", layer=lp.name)
        oh, ow = geo.deconv_out(h, kh, ph, sh, dh), geo.deconv_out(w, kw, pw, sw, dw)
        hp, wp = oh + 2 * ph, ow + 2 * pw            # before the pad is cropped
        if oh <= 0 or ow <= 0:
            raise ShapeError(f"output would be {oh}x{ow} for a {h}x{w} input", layer=lp.name)
        y = _new((n, o, oh, ow), layer=lp.name)
        cg = c // g
        L = h * w
        okk = o * kh * kw
        chunk = max(1, COL_CHUNK // max(1, okk * L))
        for n0 in range(0, n, chunk):
            xc = np.ascontiguousarray(x[n0:n0 + chunk], np.float32)
            m = xc.shape[0]
            xt = xc.transpose(1, 0, 2, 3).reshape(c, m * L)
            yp = np.zeros((m, o, hp, wp), np.float32)
            for gi in range(g):
                wg = W[gi * cg:(gi + 1) * cg].reshape(cg, og * kh * kw)
                cols = (wg.T @ xt[gi * cg:(gi + 1) * cg]).reshape(og, kh, kw, m, h, w)
                cols = cols.transpose(3, 0, 1, 2, 4, 5)          # (m, og, kh, kw, h, w)
                part = yp[:, gi * og:(gi + 1) * og]
                for i in range(kh):
                    for j in range(kw):
                        part[:, :, i * dh:i * dh + sh * (h - 1) + 1:sh,
                             j * dw:j * dw + sw * (w - 1) + 1:sw] += cols[:, :, i, j]
            y[n0:n0 + m] = yp[:, :, ph:ph + oh, pw:pw + ow]
        if bias is not None:
            y += bias.reshape(1, o, 1, 1)
        outs.append(y)
    return outs


def im2col(lp, blobs, xs):
    """Caffe's Im2col layer: top (N, C*kh*kw, out_h, out_w), row (c*kh + i)*kw + j."""
    kh, kw, ph, pw, sh, sw, dh, dw = conv_geometry(lp.convolution_param)
    x = xs[0]
    if x.ndim != 4:
        raise ShapeError(f"needs a 4-D bottom, got {list(x.shape)}", layer=lp.name)
    n, c, h, w = x.shape
    oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(w, kw, pw, sw, dw)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"output would be {oh}x{ow} for a {h}x{w} input", layer=lp.name)
    y = _new((n, c, kh, kw, oh, ow), layer=lp.name)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    for i in range(kh):
        for j in range(kw):
            y[:, :, i, j] = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                               j * dw:j * dw + sw * (ow - 1) + 1:sw]
    return [y.reshape(n, c * kh * kw, oh, ow)]


# -- pooling ------------------------------------------------------------------------------------
def pooling_geometry(pp, h, w):
    """(kh, kw, ph, pw, sh, sw, oh, ow) of a PoolingParameter on an h x w input."""
    try:
        kh, kw, ph, pw, sh, sw = geo.pool_params(pp, h, w)
    except geo.GeometryError as e:
        raise ConfigError(e.message, field=e.field) from None
    ceil = int(pp.round_mode) == pp.CEIL
    oh, ow = geo.pooled_size(h, w, kh, kw, ph, pw, sh, sw, ceil)
    return kh, kw, ph, pw, sh, sw, oh, ow


def pooling(lp, blobs, xs):
    pp = lp.pooling_param
    x = xs[0]
    if x.ndim != 4:
        raise ShapeError(f"needs a 4-D bottom, got {list(x.shape)}", layer=lp.name)
    n, c, h, w = x.shape
    kh, kw, ph, pw, sh, sw, oh, ow = pooling_geometry(pp, h, w)
    if oh <= 0 or ow <= 0:
        raise ShapeError(f"pooled output would be {oh}x{ow}", layer=lp.name)
    _new((n, c, oh, ow), layer=lp.name)  # size check
    method = int(pp.pool)
    if method not in (pp.MAX, pp.AVE, pp.STOCHASTIC):
        raise ConfigError(f"unknown pool method {method}", layer=lp.name, layer_type=lp.type)
    if len(lp.top) == 2 and method != pp.MAX:
        raise ConfigError("a second top (the argmax mask) needs pool: MAX", layer=lp.name,
                          layer_type=lp.type)
    if method == pp.STOCHASTIC:
        return [_stochastic_pool_test(x, kh, kw, sh, sw, oh, ow)]
    # pad so that every (ceil-mode) window lies inside the padded array
    ext_h = max((oh - 1) * sh + kh, h + ph) - h - ph
    ext_w = max((ow - 1) * sw + kw, w + pw) - w - pw
    is_max = method == pp.MAX
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ext_h), (pw, ext_w)),
                constant_values=-np.inf if is_max else 0)
    want_mask = len(lp.top) == 2
    y = None
    mask = None
    for i in range(kh):
        for j in range(kw):
            v = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            if y is None:
                y = np.array(v, np.float32)
                if want_mask:
                    mask = np.full(y.shape, -1, np.int64)
                    _mask_update(mask, ~np.isneginf(v), i, j, sh, sw, ph,
                                 pw, w, oh, ow)
            elif is_max:
                if want_mask:
                    # the first maximum in scan order wins (Caffe compares with >)
                    better = (v > y) | ((mask < 0) & ~np.isneginf(v))
                    _mask_update(mask, better, i, j, sh, sw, ph, pw, w, oh, ow)
                np.maximum(y, v, out=y)
            else:
                y += v
    if is_max:
        if want_mask:
            empty = mask < 0
            if np.any(empty):
                y[empty] = 0
            return [y, mask.astype(np.float32)]
        return [y]
    hs = np.arange(oh) * sh - ph
    ws = np.arange(ow) * sw - pw
    dh_ = np.minimum(hs + kh, h + ph) - hs
    dw_ = np.minimum(ws + kw, w + pw) - ws
    y /= (dh_[:, None] * dw_[None, :]).astype(np.float32)
    return [y]


def _mask_update(mask, where, i, j, sh, sw, ph, pw, w, oh, ow) -> None:
    """Set ``mask`` to the flat index iy * W + ix of window element (i, j) where ``where``."""
    iy = np.arange(oh) * sh - ph + i
    ix = np.arange(ow) * sw - pw + j
    idx = np.broadcast_to(iy[:, None] * w + ix[None, :], mask.shape)
    np.copyto(mask, idx, where=where)


def _stochastic_pool_test(x, kh, kw, sh, sw, oh, ow):
    """STOCHASTIC pooling, TEST phase (Caffe): sum(v^2) / sum(v) over each window (windows not
    shifted by the padding, clipped to the image; 0 where the sum is not positive)."""
    n, c, h, w = x.shape
    eh = max((oh - 1) * sh + kh - h, 0)
    ew = max((ow - 1) * sw + kw - w, 0)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (0, eh), (0, ew)))
    s = np.zeros((n, c, oh, ow))
    q = np.zeros((n, c, oh, ow))
    for i in range(kh):
        for j in range(kw):
            v = xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            s += v
            q += v * v
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(s > 0, q / np.where(s > 0, s, 1), 0)
    return y.astype(np.float32)


def spp_levels(lp, h: int, w: int) -> list:
    """One Pooling LayerParameter per pyramid level of an SPP layer."""
    from ..proto import pb
    p = lp.spp_param
    height = int(p.pyramid_height)
    if height < 1:
        raise ConfigError("pyramid_height must be at least 1", layer=lp.name,
                          layer_type=lp.type, field="spp_param.pyramid_height")
    out = []
    for lv in range(height):
        kh, kw, ph, pw = geo.spp_level_params(lv, h, w)
        if (ph or pw) and (ph >= kh or pw >= kw):
            raise ShapeError(f"a {h}x{w} input is too small for pyramid level {lv}",
                             layer=lp.name)
        q = pb.LayerParameter(name=f"{lp.name}_pool{lv}", type="Pooling")
        pp = q.pooling_param
        pp.pool = int(p.pool)
        pp.kernel_h, pp.kernel_w = kh, kw
        pp.stride_h, pp.stride_w = kh, kw
        pp.pad_h, pp.pad_w = ph, pw
        out.append(q)
    return out


def spp(lp, blobs, xs):
    x = xs[0]
    if x.ndim != 4:
        raise ShapeError(f"needs a 4-D bottom, got {list(x.shape)}", layer=lp.name)
    levels = [pooling(q, [], [x])[0] for q in spp_levels(lp, x.shape[2], x.shape[3])]
    if len(levels) == 1:
        return levels
    n = x.shape[0]
    return [np.concatenate([y.reshape(n, -1) for y in levels], axis=1)]


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
    with np.errstate(over="ignore"):
        return [(np.float32(1) / (np.float32(1) + np.exp(-x))).astype(np.float32)]


def tanh(lp, blobs, xs):
    return [np.tanh(xs[0])]


def absval(lp, blobs, xs):
    return [np.abs(xs[0])]


def power(lp, blobs, xs):
    """(shift + scale * x) ^ power; the constant 1 or shift^power when power * scale == 0."""
    p = lp.power_param
    x = xs[0]
    pw, sc, sh = float(p.power), float(p.scale), float(p.shift)
    if pw * sc == 0:
        with np.errstate(all="ignore"):
            value = 1.0 if pw == 0 else np.power(np.float64(sh), pw)
        return [np.full(x.shape, value, np.float32)]
    y = x * np.float32(sc) if sc != 1 else np.array(x, np.float32)
    if sh != 0:
        y += np.float32(sh)
    if pw != 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            np.power(y, np.float32(pw), out=y)
    return [y]


def _log_base(base: float, lp) -> float:
    import math
    if base == -1:
        return 1.0
    if not base > 0 or math.isinf(base):
        raise ConfigError(f"base must be a finite value > 0, or -1 for e (got {base:g})",
                          layer=lp.name, layer_type=lp.type)
    return math.log(base)


def exp_(lp, blobs, xs):
    """base ^ (shift + scale * x), base -1 meaning e."""
    import math
    p = lp.exp_param
    base = float(p.base)
    inner = _log_base(base, lp) * float(p.scale)
    shift = float(p.shift)
    outer = 1.0 if shift == 0 else (math.exp(shift) if base == -1 else base ** shift)
    x = xs[0]
    with np.errstate(over="ignore"):
        y = np.exp(x) if inner == 1 else np.exp(x * np.float32(inner))
    if outer != 1:
        y *= np.float32(outer)
    return [y.astype(np.float32, copy=False)]


def log_(lp, blobs, xs):
    """log_base(shift + scale * x), base -1 meaning e."""
    p = lp.log_param
    lb = _log_base(float(p.base), lp)
    if lb == 0:
        raise ConfigError("base 1 has no logarithm", layer=lp.name, layer_type=lp.type)
    sc, sh = float(p.scale), float(p.shift)
    y = xs[0] * np.float32(sc) if sc != 1 else np.array(xs[0], np.float32)
    if sh != 0:
        y += np.float32(sh)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.log(y, out=y)
    if 1.0 / lb != 1:
        y *= np.float32(1.0 / lb)
    return [y]


def swish(lp, blobs, xs):
    x = xs[0]
    beta = float(lp.swish_param.beta)
    z = x * np.float32(beta) if beta != 1 else x
    with np.errstate(over="ignore"):
        s = np.float32(1) / (np.float32(1) + np.exp(-z))
    return [(x * s).astype(np.float32, copy=False)]


def threshold(lp, blobs, xs):
    return [(xs[0] > np.float32(lp.threshold_param.threshold)).astype(np.float32)]


def clip(lp, blobs, xs):
    p = lp.clip_param
    if not (p.HasField("min") and p.HasField("max")):
        raise ConfigError("clip_param.min and clip_param.max are required", layer=lp.name,
                          layer_type=lp.type)
    return [np.clip(xs[0], np.float32(p.min), np.float32(p.max))]


def elu(lp, blobs, xs):
    x = xs[0]
    a = np.float32(lp.elu_param.alpha)
    return [np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))).astype(np.float32)]


def bnll(lp, blobs, xs):
    return [np.logaddexp(xs[0], np.float32(0)).astype(np.float32, copy=False)]


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
        if x.shape[axis] % nt:
            raise ShapeError(f"axis {axis} has {x.shape[axis]} entries, which do not split "
                             f"into {nt} equal parts", layer=lp.name)
        step = x.shape[axis] // nt
        points = [step * i for i in range(1, nt)]
    elif len(points) != nt - 1 or points != sorted(set(points)) or points[0] <= 0 \
            or points[-1] >= x.shape[axis]:
        raise ConfigError(f"slice_point {points} does not cut axis {axis} of size "
                          f"{x.shape[axis]} into {nt} parts", layer=lp.name, layer_type=lp.type)
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
    """Indices (or values) of the top_k largest entries per item or along ``axis``; ties:
    the larger index first (Caffe's descending sort of (value, index) pairs)."""
    p = lp.argmax_param
    x = xs[0]
    k = int(p.top_k)
    s = x.shape
    if not s:
        raise ShapeError("the bottom must have at least one axis", layer=lp.name)
    if p.HasField("axis"):
        a = _axis(int(p.axis), len(s), lp, "argmax_param.axis")
        view = (_prod(s[:a]), s[a], _prod(s[a + 1:]))
        shape = list(s)
        shape[a] = k
    else:
        a = None
        view = (s[0], _prod(s[1:]), 1)
        shape = [1] * max(3, len(s))
        shape[0] = s[0]
        shape[1] = 2 if p.out_max_val else 1
        shape[2] = k
    dim = view[1]
    if not 1 <= k <= dim:
        raise ConfigError(f"top_k {k} must be between 1 and {dim}", layer=lp.name,
                          layer_type=lp.type, field="argmax_param.top_k")
    v = np.swapaxes(x.reshape(view), 1, 2)
    if k == 1:
        idx = (dim - 1 - np.argmax(v[..., ::-1], axis=-1))[..., None]
    else:
        idx = np.argsort(v, axis=-1, kind="stable")[..., ::-1][..., :k]
    vals = np.take_along_axis(v, idx, axis=-1)
    if a is None:
        idx, vals = idx[:, 0, :], vals[:, 0, :]
        out = np.stack([idx, vals], axis=1) if p.out_max_val else idx[:, None, :]
    else:
        out = np.swapaxes(vals if p.out_max_val else idx, 1, 2)
    return [out.astype(np.float32).reshape(shape)]


def mvn(lp, blobs, xs):
    """Mean-variance normalisation per (item, channel), or per item (across_channels)."""
    p = lp.mvn_param
    x = xs[0]
    if x.ndim < 1:
        raise ShapeError("needs a bottom with at least one axis", layer=lp.name)
    n = x.shape[0]
    rows = n if p.across_channels or x.ndim < 2 else n * x.shape[1]
    r = x.reshape(rows, x.size // rows if rows else 0)
    y = r - r.mean(axis=1, keepdims=True, dtype=np.float64)
    if p.normalize_variance:
        sigma = np.sqrt((y * y).mean(axis=1, keepdims=True))
        y /= sigma + float(p.eps)
    return [y.astype(np.float32).reshape(x.shape)]


def crop(lp, blobs, xs):
    p = lp.crop_param
    x, ref = xs[0], xs[1]
    n = x.ndim
    a = _axis(int(p.axis), n, lp, "crop_param.axis")
    offs = [int(o) for o in p.offset]
    if len(offs) > 1 and len(offs) != n - a:
        raise ConfigError(f"{len(offs)} offset values: give none, one, or one per cropped "
                          f"axis ({n - a})", layer=lp.name, layer_type=lp.type)
    if ref.ndim < n:
        raise ShapeError(f"bottom 1 {list(ref.shape)} has fewer axes than bottom 0 "
                         f"{list(x.shape)}", layer=lp.name)
    sl = [slice(None)] * n
    for i in range(a, n):
        o = offs[0] if len(offs) == 1 else offs[i - a] if offs else 0
        if o + ref.shape[i] > x.shape[i]:
            raise ShapeError(f"crop of axis {i} out of range: offset {o} + size "
                             f"{ref.shape[i]} exceeds {x.shape[i]}", layer=lp.name)
        sl[i] = slice(o, o + ref.shape[i])
    return [np.ascontiguousarray(x[tuple(sl)])]


def tile(lp, blobs, xs):
    p = lp.tile_param
    x = xs[0]
    t = int(p.tiles)
    if t <= 0:
        raise ConfigError("tiles must be positive", layer=lp.name, layer_type=lp.type)
    a = _axis(int(p.axis), x.ndim, lp, "tile_param.axis")
    s = x.shape
    _new(s[:a] + (s[a] * t,) + s[a + 1:], layer=lp.name)     # size check
    y = np.broadcast_to(x.reshape(_prod(s[:a]), 1, _prod(s[a:])),
                        (_prod(s[:a]), t, _prod(s[a:])))
    return [np.ascontiguousarray(y).reshape(s[:a] + (s[a] * t,) + s[a + 1:])]


def reduction(lp, blobs, xs):
    p = lp.reduction_param
    x = xs[0]
    s = x.shape
    a = _axis(int(p.axis), len(s), lp, "reduction_param.axis") if s else 0
    num, dim = _prod(s[:a]), _prod(s[a:])
    r = x.reshape(num, dim)
    op = int(p.operation)
    if op == p.ASUM:
        v = np.abs(r).sum(axis=1)
    elif op == p.SUMSQ:
        v = np.einsum("ij,ij->i", r, r)
    elif op in (p.SUM, p.MEAN):
        v = r.sum(axis=1)
    else:
        raise ConfigError(f"unknown operation {op}", layer=lp.name, layer_type=lp.type)
    c = float(p.coeff)
    if op == p.MEAN:
        c = c / dim if dim else 0.0
    if c != 1.0:
        v = v * c
    return [np.asarray(v, np.float32).reshape(s[:a])]


def embed(lp, blobs, xs):
    p = lp.embed_param
    x = xs[0]
    W = blobs[0]
    v = x.reshape(-1)
    ii = v.astype(np.int64)
    bad = (ii != v) | (ii < 0) | (ii >= W.shape[0])
    if np.any(bad):
        raise ConfigError(f"index {v[np.argmax(bad)]:g} is not an integer in "
                          f"[0, {W.shape[0]}): input_dim must exceed every index",
                          layer=lp.name, layer_type=lp.type)
    y = np.take(W, ii, axis=0)
    if p.bias_term and len(blobs) > 1:
        y += blobs[1].reshape(1, -1)
    return [y.reshape(x.shape + (W.shape[1],))]


def parameter(lp, blobs, xs):
    return [np.array(blobs[0], np.float32)]


def batch_reindex(lp, blobs, xs):
    x, v = xs[0], xs[1]
    if v.ndim != 1:
        raise ShapeError(f"bottom[1] (the indices) must be 1-D, got {list(v.shape)}",
                         layer=lp.name)
    ii = v.astype(np.int64)
    bad = (ii != v) | (ii < 0) | (ii >= x.shape[0])
    if np.any(bad):
        raise ShapeError(f"index {v[np.argmax(bad)]:g} is not an integer in "
                         f"[0, {x.shape[0]})", layer=lp.name)
    return [np.take(x, ii, axis=0)]


def filter_(lp, blobs, xs):
    sel = xs[-1]
    if sel.ndim < 1 or any(d != 1 for d in sel.shape[1:]):
        raise ShapeError(f"the selector (last bottom) must be (N) or (N, 1, ...), got "
                         f"{list(sel.shape)}", layer=lp.name)
    idx = np.flatnonzero(sel.reshape(-1))
    for i, b in enumerate(xs[:-1]):
        if b.ndim < 1 or b.shape[0] != sel.shape[0]:
            raise ShapeError(f"bottom[{i}] {list(b.shape)} must have the selector's first "
                             f"dimension {sel.shape[0]}", layer=lp.name)
    return [np.take(b, idx, axis=0) for b in xs[:-1]]


KERNELS = {
    "Convolution": convolution, "Deconvolution": deconvolution, "Im2col": im2col,
    "Pooling": pooling, "SPP": spp, "InnerProduct": inner_product,
    "ReLU": relu, "PReLU": prelu, "Sigmoid": sigmoid, "TanH": tanh, "AbsVal": absval,
    "Power": power, "Exp": exp_, "Log": log_, "ELU": elu, "BNLL": bnll, "Swish": swish,
    "Threshold": threshold, "Clip": clip, "Softmax": softmax, "LRN": lrn,
    "BatchNorm": batch_norm, "MVN": mvn, "Scale": scale, "Bias": bias, "Concat": concat,
    "Slice": slice_, "Split": split, "Eltwise": eltwise, "Flatten": flatten,
    "Reshape": reshape, "Crop": crop, "Tile": tile, "Reduction": reduction,
    "Dropout": dropout, "ArgMax": argmax, "Embed": embed, "Parameter": parameter,
    "BatchReindex": batch_reindex, "Filter": filter_,
}
