"""``netdef export onnx``: a frozen model as an ONNX graph (standard operators, opset >= 13).

Mapping (Caffe semantics kept exactly):

* Convolution -> Conv (groups, dilation, pads); InnerProduct -> Flatten + Gemm;
* Pooling -> MaxPool / AveragePool with explicit pads: the end pad is widened so that ONNX's
  floor-mode size equals Caffe's ceil-mode size after its "last window starts inside the
  image" clip; AVE divides by Caffe's divisor (the window clipped to the padded input) through
  a constant correction factor; global pooling -> GlobalMax/AveragePool;
* ReLU -> Relu / LeakyRelu, PReLU -> PRelu, Sigmoid, TanH -> Tanh, AbsVal -> Abs;
* Softmax (axis), LRN across channels -> LRN, within a channel -> Mul/AveragePool/Pow;
* Concat, Eltwise SUM (coefficients as Mul) / PROD / MAX, Split -> Identity;
* BatchNorm -> BatchNormalization (statistics divided by the stored factor), Scale / Bias ->
  Mul / Add with the operand reshaped to broadcast from its axis;
* Dropout -> Identity, Flatten / Reshape -> Reshape (batch dimension kept dynamic);
* Deconvolution -> ConvTranspose (groups, stride, dilation, pads: Caffe's output size
  stride * (in - 1) + dilation * (k - 1) + 1 - 2 * pad, no output_padding); Im2col -> a
  depthwise Conv with one-hot kernels; SPP -> one pooling per level, Flatten, Concat;
* MAX pooling's second (argmax) top -> MaxPool's Indices modulo H*W, as floats; STOCHASTIC
  pooling (TEST) -> AveragePool(x^2) / AveragePool(x), 0 where the sum is not positive;
* Power -> Mul / Add / Pow (Expand of the constant when power * scale == 0), Exp -> Mul / Exp
  / Mul, Log -> Mul / Add / Log / Mul, ELU -> Elu, Swish -> x * Sigmoid(beta x), BNLL ->
  Softplus, Threshold -> Greater + Cast, Clip -> Clip;
* Slice -> Split (equal parts) or one Slice per top, Crop -> Slice (Caffe's axis / offsets;
  the end of a cropped batch axis read from the reference at run time), Tile -> Tile,
  MVN -> ReduceMean / Sub / Sqrt / Div over (item[, channel]) rows (eps added to the
  standard deviation, as Caffe), Reduction -> ReduceSum / ReduceL1 / ReduceSumSquare /
  ReduceMean (* coeff), ArgMax -> ArgMax (select_last_index: Caffe's tie order) or TopK,
  ReduceMax for out_max_val, reshaped to Caffe's (N, 1|2, top_k) layout;
* Embed -> Gather (+ bias), BatchReindex -> Gather, Filter -> Compress, Parameter -> its
  blob as a constant.

LSTM, RNN, LSTMUnit and Python layers have no export.

The batch dimension of inputs and outputs is symbolic ("N").  Needs the ``onnx`` package.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers import geometry as geo
from . import numpy_kernels as K
from .frozen import FrozenModel


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ConfigError("exporting to ONNX needs the onnx package (pip install onnx)") \
            from None
    return onnx, helper, numpy_helper


def _shapes(fm: FrozenModel) -> dict:
    """Shape of every blob value by layer and top (numpy forward of zeros): for batch 1, or
    for the declared input shapes where batch 1 does not fit (e.g. a Parameter blob added to
    the input)."""
    try:
        return _shapes_for(fm, batch1=True)
    except (ValueError, ShapeError):
        return _shapes_for(fm, batch1=False)


def _shapes_for(fm: FrozenModel, batch1: bool) -> dict:
    env = {}
    shapes = {}
    for inp in fm.deploy.input:
        s = tuple(int(d) for d in inp.shape.dim)
        if batch1 and s:
            s = (1,) + s[1:]
        env[inp.name] = np.zeros(s, np.float32)
    for i, lp in enumerate(fm.net.layer):
        if lp.type == "Input":
            for t in lp.top:
                shapes[(i, t)] = env[t].shape
            continue
        fn = K.KERNELS.get(lp.type)
        if fn is None:
            raise ConfigError(f"layer type {lp.type} cannot be exported to ONNX",
                              layer=lp.name, layer_type=lp.type)
        xs = [env[b] for b in lp.bottom]
        shapes[(i, "__in__")] = [x.shape for x in xs]
        ys = fn(lp, fm.weights.get(lp.name, []), xs)
        for t, y in zip(lp.top, ys):
            env[t] = y
            shapes[(i, t)] = y.shape
    return shapes


class _Builder:
    """The ONNX graph under construction: nodes, initializers, unique value and node names,
    and the ONNX name of each Caffe blob's current value.  ``yshapes`` holds the shapes of the
    tops of the layer being exported."""

    def __init__(self, fm, helper, numpy_helper):
        self.fm = fm
        self.h = helper
        self.nh = numpy_helper
        self.nodes = []
        self.inits = []
        self.node_names: set[str] = set()
        self.opset = 13
        self.cur: dict[str, str] = {}
        self.used: set[str] = set()
        self.n = 0
        self.yshapes: list[tuple] = []
        writes: dict[str, int] = {}
        for lp in fm.net.layer:
            for t in lp.top:
                writes[t] = writes.get(t, 0) + 1
        self.remaining = writes

    def const(self, name, array) -> str:
        name = self.fresh(name)
        self.inits.append(self.nh.from_array(np.asarray(array), name))
        return name

    def fresh(self, base) -> str:
        name = base
        while name in self.used:
            self.n += 1
            name = f"{base}__{self.n}"
        self.used.add(name)
        return name

    def input(self, caffe_name) -> None:
        """A graph input: it keeps its Caffe name."""
        self.remaining[caffe_name] -= 1
        self.used.add(caffe_name)
        self.cur[caffe_name] = caffe_name

    def top(self, caffe_name) -> str:
        """ONNX name of a new value of blob ``caffe_name`` (its last write gets the plain
        name, so outputs keep their Caffe names)."""
        self.remaining[caffe_name] -= 1
        if self.remaining[caffe_name] == 0 and caffe_name not in self.used:
            self.used.add(caffe_name)
            name = caffe_name
        else:
            name = self.fresh(f"{caffe_name}__v")
        self.cur[caffe_name] = name
        return name

    def node(self, op, inputs, outputs, name=None, **attrs):
        name = name or outputs[0]
        base, k = name, 0
        while name in self.node_names:          # node names must be unique in a graph
            k += 1
            name = f"{base}#{k}"
        self.node_names.add(name)
        self.nodes.append(self.h.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]


# -- shared helpers ---------------------------------------------------------------------------
# Every exporter below has the signature (b, lp, xs, xshapes, W): the builder, the layer's
# LayerParameter, the ONNX names of its bottoms, their shapes, and its blobs.
def _out(b, lp, op, inputs, **attrs) -> str:
    """One node ``op`` writing the layer's (first) top, named after the layer."""
    return b.node(op, inputs, [b.top(lp.top[0])], name=lp.name, **attrs)


def _c(b, lp, what, value, dtype=np.float32):
    return b.const(f"{lp.name}_{what}", np.asarray(value, dtype))


def _pos_axis(axis: int, ndim: int) -> int:
    return axis + ndim if axis < 0 else axis


def _chain(b, lp, x, steps, top):
    """Apply ``steps`` [(op, [extra inputs], attrs)] in turn; the last writes ``top``."""
    cur = x
    for k, (op, extra, attrs) in enumerate(steps):
        out = top if k == len(steps) - 1 else b.fresh(f"{lp.name}__{op.lower()}{k}")
        b.node(op, [cur] + list(extra), [out], name=lp.name if out == top else out, **attrs)
        cur = out
    return cur


def _reduce(b, op, x, out, axes, keepdims, name=None):
    """Reduce* over ``axes``: an attribute before opset 18 (ReduceSum: 13), an input after."""
    if op == "ReduceSum" or b.opset >= 18:
        b.node(op, [x, b.const(f"{out}_axes", np.asarray(axes, np.int64))], [out],
               name=name or out, keepdims=keepdims)
    else:
        b.node(op, [x], [out], name=name or out, axes=list(axes), keepdims=keepdims)
    return out


def _reshape_to(b, lp, x, shape, top=None, tag="shape"):
    out = top or b.fresh(f"{lp.name}__{tag}")
    b.node("Reshape", [x, _c(b, lp, tag, shape, np.int64)], [out], name=lp.name
           if top else out)
    return out


def _broadcast_operand(operand, xshape, axis, num_axes_zero):
    if operand.ndim == 0 or num_axes_zero:
        return operand.reshape(())
    pad = len(xshape) - axis - operand.ndim
    return operand.reshape(operand.shape + (1,) * pad)


def _with_weights(b, lp, x, W, bias_term) -> list:
    """Inputs [x, weights(, bias)] of a Conv / ConvTranspose / Gemm node."""
    ins = [x, b.const(f"{lp.name}_W", W[0])]
    if bias_term and len(W) > 1:
        ins.append(b.const(f"{lp.name}_B", W[1]))
    return ins


def _elementwise(op):
    """Exporter of a layer computing ``op`` of its bottom into each of its tops."""
    def export(b, lp, xs, xshapes, W):
        for top in lp.top:
            b.node(op, xs[:1], [b.top(top)], name=f"{lp.name}/{top}" if len(lp.top) > 1
                   else lp.name)
    return export


# -- vision -----------------------------------------------------------------------------------
def _conv_attrs(cp) -> dict:
    kh, kw, ph, pw, sh, sw, dh, dw = K.conv_geometry(cp)
    return {"kernel_shape": [kh, kw], "pads": [ph, pw, ph, pw], "strides": [sh, sw],
            "dilations": [dh, dw]}


def _convolution(b, lp, xs, xshapes, W):
    cp = lp.convolution_param
    _out(b, lp, "Conv", _with_weights(b, lp, xs[0], W, cp.bias_term), group=int(cp.group),
         **_conv_attrs(cp))


def _deconvolution(b, lp, xs, xshapes, W):
    # ONNX: out = stride * (in - 1) + dilation * (k - 1) + 1 - pad_begin - pad_end,
    # Caffe's size exactly (no output_padding)
    cp = lp.convolution_param
    _out(b, lp, "ConvTranspose", _with_weights(b, lp, xs[0], W, cp.bias_term),
         group=int(cp.group), **_conv_attrs(cp))


def _im2col(b, lp, xs, xshapes, W):
    # a depthwise convolution with one-hot kernels: output channel (c*kh + i)*kw + j
    # is input channel c at window offset (i, j)
    attrs = _conv_attrs(lp.convolution_param)
    kh, kw = attrs["kernel_shape"]
    c = xshapes[0][1]
    onehot = np.zeros((c * kh * kw, 1, kh, kw), np.float32)
    r = np.arange(kh * kw)
    onehot.reshape(c, kh * kw, kh * kw)[:, r, r] = 1
    _out(b, lp, "Conv", [xs[0], b.const(f"{lp.name}_onehot", onehot)], group=c, **attrs)


def _inner_product(b, lp, xs, xshapes, W):
    ip = lp.inner_product_param
    if int(ip.axis) not in (1, -len(xshapes[0]) + 1):
        raise ConfigError("InnerProduct with axis other than 1 cannot be exported",
                          layer=lp.name, layer_type=lp.type)
    flat = xs[0]
    if len(xshapes[0]) != 2:
        flat = b.fresh(f"{lp.name}__flat")
        b.node("Flatten", xs[:1], [flat], name=flat, axis=1)
    _out(b, lp, "Gemm", _with_weights(b, lp, flat, W, ip.bias_term),
         transB=0 if ip.transpose else 1)


def _pooling(b, lp, xs, xshapes, W):
    _, _, h, w = xshapes[0]
    mask = b.top(lp.top[1]) if len(lp.top) == 2 else None
    _pool(b, lp.name, lp.pooling_param, xs[0], h, w, b.top(lp.top[0]), mask)


def _spp(b, lp, xs, xshapes, W):
    _, _, h, w = xshapes[0]
    levels = K.spp_levels(lp, h, w)
    if len(levels) == 1:
        _pool(b, lp.name, levels[0].pooling_param, xs[0], h, w, b.top(lp.top[0]))
        return
    flat = []
    for q in levels:
        y = b.fresh(f"{q.name}")
        _pool(b, q.name, q.pooling_param, xs[0], h, w, y)
        f = b.fresh(f"{q.name}__flat")
        b.node("Flatten", [y], [f], name=f, axis=1)
        flat.append(f)
    _out(b, lp, "Concat", flat, axis=1)


# -- pooling --------------------------------------------------------------------------------
def _pool(b, name, pp, x, h, w, top, mask=None) -> None:
    """Caffe pooling of ``x`` (an h x w image) into ONNX value ``top`` (and its argmax mask,
    index h*W + w as floats, into ``mask``)."""
    kh, kw, ph, pw, sh, sw, oh, ow = K.pooling_geometry(pp, h, w)
    method = int(pp.pool)
    if mask is not None and method != pp.MAX:
        raise ConfigError("a second top (the argmax mask) needs pool: MAX", layer=name)
    if method == pp.STOCHASTIC:
        _stochastic_pool(b, name, x, h, w, kh, kw, sh, sw, oh, ow, top)
        return
    is_max = method == pp.MAX
    if pp.global_pooling and mask is None:
        b.node("GlobalMaxPool" if is_max else "GlobalAveragePool", [x], [top], name=name)
        return
    ends = geo.pool_end_pads(h, w, kh, kw, ph, pw, sh, sw, oh, ow)
    if ends is None:
        raise ConfigError("this pooling geometry has no ONNX equivalent", layer=name,
                          layer_type="Pooling")
    eh, ew = ends
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [ph, pw, eh, ew]}
    if is_max:
        if mask is None:
            b.node("MaxPool", [x], [top], name=name, **attrs)
            return
        # ONNX's indices run over the whole (unpadded) N x C x H x W tensor: keep h*W + w
        ind = b.fresh(f"{name}__indices")
        b.node("MaxPool", [x], [top, ind], name=name, **attrs)
        rem = b.fresh(f"{name}__hw")
        b.node("Mod", [ind, b.const(f"{name}_hw", np.asarray(h * w, np.int64))], [rem],
               name=rem)
        b.node("Cast", [rem], [mask], name=f"{name}/mask", to=1)
        return
    hs = np.arange(oh) * sh - ph
    ws = np.arange(ow) * sw - pw
    div = ((np.minimum(hs + kh, h + ph) - hs)[:, None]
           * (np.minimum(ws + kw, w + pw) - ws)[None, :]).astype(np.float64)
    corr = (kh * kw / div).astype(np.float32)
    if np.all(corr == 1):
        b.node("AveragePool", [x], [top], name=name, count_include_pad=1, **attrs)
        return
    mid = b.fresh(f"{name}__avg")
    b.node("AveragePool", [x], [mid], name=mid, count_include_pad=1, **attrs)
    b.node("Mul", [mid, b.const(f"{name}_div", corr.reshape(1, 1, oh, ow))], [top], name=name)


def _stochastic_pool(b, name, x, h, w, kh, kw, sh, sw, oh, ow, top) -> None:
    """STOCHASTIC pooling, TEST phase: sum(v^2) / sum(v) per window (windows from (0, 0),
    not shifted by the padding), 0 where the sum is not positive.  Both sums are average
    pools over the same windows, so their common divisor cancels."""
    ends = geo.pool_end_pads(h, w, kh, kw, 0, 0, sh, sw, oh, ow)
    if ends is None:
        raise ConfigError("this pooling geometry has no ONNX equivalent", layer=name,
                          layer_type="Pooling")
    eh, ew = ends
    attrs = {"kernel_shape": [kh, kw], "strides": [sh, sw], "pads": [0, 0, eh, ew],
             "count_include_pad": 1}
    sq = b.fresh(f"{name}__sq")
    b.node("Mul", [x, x], [sq], name=sq)
    s = b.fresh(f"{name}__s")
    b.node("AveragePool", [x], [s], name=s, **attrs)
    q = b.fresh(f"{name}__q")
    b.node("AveragePool", [sq], [q], name=q, **attrs)
    ratio = b.fresh(f"{name}__ratio")
    b.node("Div", [q, s], [ratio], name=ratio)
    pos = b.fresh(f"{name}__pos")
    zero = b.const(f"{name}_zero", np.float32(0))
    b.node("Greater", [s, zero], [pos], name=pos)
    b.node("Where", [pos, ratio, zero], [top], name=name)



# -- common -----------------------------------------------------------------------------------
def _scale_or_bias(b, lp, xs, xshapes, W):
    """Scale -> Mul (+ Add of its bias), Bias -> Add, the operand (a second bottom or the
    layer's blob) reshaped to broadcast from ``axis``."""
    is_scale = lp.type == "Scale"
    p = lp.scale_param if is_scale else lp.bias_param
    xshape = xshapes[0]
    axis = _pos_axis(int(p.axis), len(xshape))
    if len(xs) == 2:
        oshape = xshapes[1]
        pad = len(xshape) - axis - len(oshape)
        if len(oshape) == 0:
            operand = xs[1]
        else:
            operand = b.fresh(f"{lp.name}__operand")
            shape = [0 if k == 0 and axis == 0 else int(d)
                     for k, d in enumerate(oshape)] + [1] * pad
            b.node("Reshape", [xs[1], b.const(f"{lp.name}_shape",
                                               np.asarray(shape, np.int64))],
                   [operand], name=operand)
    else:
        operand = b.const(f"{lp.name}_{'scale' if is_scale else 'bias'}",
                          _broadcast_operand(W[0], xshape, axis, int(p.num_axes) == 0))
    if not (is_scale and p.bias_term):
        _out(b, lp, "Mul" if is_scale else "Add", [xs[0], operand])
        return
    first = b.fresh(f"{lp.name}__mul")
    b.node("Mul", [xs[0], operand], [first], name=first)
    bias = b.const(f"{lp.name}_bias", _broadcast_operand(
        W[-1], xshape, 0 if W[-1].ndim == 0 else axis, int(p.num_axes) == 0))
    _out(b, lp, "Add", [first, bias])


def _embed(b, lp, xs, xshapes, W):
    ids = b.fresh(f"{lp.name}__ids")
    b.node("Cast", xs[:1], [ids], name=ids, to=7)       # int64
    top = b.top(lp.top[0])
    has_bias = lp.embed_param.bias_term and len(W) > 1
    g = b.fresh(f"{lp.name}__gather") if has_bias else top
    b.node("Gather", [b.const(f"{lp.name}_W", W[0]), ids], [g], name=lp.name if not has_bias
           else g, axis=0)
    if has_bias:
        b.node("Add", [g, b.const(f"{lp.name}_B", W[1].reshape(-1))], [top], name=lp.name)


# -- neurons ----------------------------------------------------------------------------------
def _relu(b, lp, xs, xshapes, W):
    s = float(lp.relu_param.negative_slope)
    if s == 0:
        _out(b, lp, "Relu", xs)
    else:
        _out(b, lp, "LeakyRelu", xs, alpha=s)


def _prelu(b, lp, xs, xshapes, W):
    a = W[0].reshape(-1)
    nd = len(xshapes[0])
    slope = a.reshape((a.size,) + (1,) * (nd - 2)) if a.size > 1 else a.reshape(1)
    _out(b, lp, "PRelu", [xs[0], b.const(f"{lp.name}_slope", slope)])


def _power(b, lp, xs, xshapes, W):
    p = lp.power_param
    pw, sc, sh = float(p.power), float(p.scale), float(p.shift)
    top = b.top(lp.top[0])
    if pw * sc == 0:
        with np.errstate(all="ignore"):
            value = 1.0 if pw == 0 else float(np.power(np.float64(sh), pw))
        shape = b.fresh(f"{lp.name}__shape")
        b.node("Shape", xs[:1], [shape], name=shape)
        b.node("Expand", [_c(b, lp, "value", value), shape], [top], name=lp.name)
        return
    steps = []
    if sc != 1:
        steps.append(("Mul", [_c(b, lp, "scale", sc)], {}))
    if sh != 0:
        steps.append(("Add", [_c(b, lp, "shift", sh)], {}))
    if pw != 1:
        steps.append(("Pow", [_c(b, lp, "power", pw)], {}))
    _chain(b, lp, xs[0], steps or [("Identity", [], {})], top)


def _exp(b, lp, xs, xshapes, W):
    import math
    p = lp.exp_param
    base = float(p.base)
    inner = K._log_base(base, lp) * float(p.scale)
    shift = float(p.shift)
    outer = 1.0 if shift == 0 else (math.exp(shift) if base == -1 else base ** shift)
    steps = [("Mul", [_c(b, lp, "inner", inner)], {})] if inner != 1 else []
    steps.append(("Exp", [], {}))
    if outer != 1:
        steps.append(("Mul", [_c(b, lp, "outer", outer)], {}))
    _chain(b, lp, xs[0], steps, b.top(lp.top[0]))


def _log(b, lp, xs, xshapes, W):
    p = lp.log_param
    lb = K._log_base(float(p.base), lp)
    if lb == 0:
        raise ConfigError("base 1 has no logarithm", layer=lp.name, layer_type=lp.type)
    sc, sh = float(p.scale), float(p.shift)
    steps = [("Mul", [_c(b, lp, "scale", sc)], {})] if sc != 1 else []
    if sh != 0:
        steps.append(("Add", [_c(b, lp, "shift", sh)], {}))
    steps.append(("Log", [], {}))
    if lb != 1:
        steps.append(("Mul", [_c(b, lp, "base_scale", 1.0 / lb)], {}))
    _chain(b, lp, xs[0], steps, b.top(lp.top[0]))


def _swish(b, lp, xs, xshapes, W):
    beta = float(lp.swish_param.beta)
    z = xs[0]
    if beta != 1:
        z = b.fresh(f"{lp.name}__bx")
        b.node("Mul", [xs[0], _c(b, lp, "beta", beta)], [z], name=z)
    s = b.fresh(f"{lp.name}__sigmoid")
    b.node("Sigmoid", [z], [s], name=s)
    _out(b, lp, "Mul", [xs[0], s])


def _elu(b, lp, xs, xshapes, W):
    _out(b, lp, "Elu", xs[:1], alpha=float(lp.elu_param.alpha))


def _threshold(b, lp, xs, xshapes, W):
    _chain(b, lp, xs[0], [("Greater", [_c(b, lp, "threshold",
                                             lp.threshold_param.threshold)], {}),
                          ("Cast", [], {"to": 1})], b.top(lp.top[0]))


def _clip(b, lp, xs, xshapes, W):
    p = lp.clip_param
    _out(b, lp, "Clip", [xs[0], _c(b, lp, "min", p.min), _c(b, lp, "max", p.max)])


# -- normalization ----------------------------------------------------------------------------
def _lrn(b, lp, xs, xshapes, W):
    p = lp.lrn_param
    size = int(p.local_size)
    if p.norm_region == p.ACROSS_CHANNELS:
        _out(b, lp, "LRN", xs, size=size, alpha=float(p.alpha), beta=float(p.beta),
             bias=float(p.k))
        return
    # within a channel: x * (1 + alpha * mean of x^2 over the size x size window)^-beta
    half = (size - 1) // 2
    sq = b.fresh(f"{lp.name}__sq")
    b.node("Mul", [xs[0], xs[0]], [sq], name=sq)
    avg = b.fresh(f"{lp.name}__avg")
    b.node("AveragePool", [sq], [avg], name=avg, kernel_shape=[size, size],
           strides=[1, 1], pads=[half] * 4, count_include_pad=1)
    sc = b.fresh(f"{lp.name}__scale")
    b.node("Mul", [avg, b.const(f"{lp.name}_alpha", np.float32(p.alpha))], [sc], name=sc)
    sc1 = b.fresh(f"{lp.name}__scale1")
    b.node("Add", [sc, b.const(f"{lp.name}_one", np.float32(1))], [sc1], name=sc1)
    pw_ = b.fresh(f"{lp.name}__pow")
    b.node("Pow", [sc1, b.const(f"{lp.name}_beta", np.float32(-p.beta))], [pw_], name=pw_)
    _out(b, lp, "Mul", [xs[0], pw_])


def _batch_norm(b, lp, xs, xshapes, W):
    p = lp.batch_norm_param
    sf = float(W[2].reshape(-1)[0])
    f = 0.0 if sf == 0 else 1.0 / sf
    c = W[0].size
    _out(b, lp, "BatchNormalization",
         [xs[0], b.const(f"{lp.name}_gamma", np.ones(c, np.float32)),
          b.const(f"{lp.name}_beta", np.zeros(c, np.float32)),
          b.const(f"{lp.name}_mean", (W[0].reshape(-1) * f).astype(np.float32)),
          b.const(f"{lp.name}_var", (W[1].reshape(-1) * f).astype(np.float32))],
         epsilon=float(p.eps))


def _mvn(b, lp, xs, xshapes, W):
    p = lp.mvn_param
    s = xshapes[0]
    rows = [0] if p.across_channels or len(s) < 2 else [0, int(s[1])]
    r = _reshape_to(b, lp, xs[0], rows + [-1], tag="rows")
    ax = len(rows)
    mean = _reduce(b, "ReduceMean", r, b.fresh(f"{lp.name}__mean"), [ax], 1)
    cen = b.fresh(f"{lp.name}__centred")
    b.node("Sub", [r, mean], [cen], name=cen)
    y = cen
    if p.normalize_variance:
        sq = b.fresh(f"{lp.name}__sq")
        b.node("Mul", [cen, cen], [sq], name=sq)
        var = _reduce(b, "ReduceMean", sq, b.fresh(f"{lp.name}__var"), [ax], 1)
        sd = _chain(b, lp, var, [("Sqrt", [], {}), ("Add", [_c(b, lp, "eps", p.eps)], {})],
                    b.fresh(f"{lp.name}__sd"))
        y = b.fresh(f"{lp.name}__norm")
        b.node("Div", [cen, sd], [y], name=y)
    _reshape_to(b, lp, y, [0] + [int(d) for d in s[1:]], b.top(lp.top[0]))


# -- utility ----------------------------------------------------------------------------------
def _softmax(b, lp, xs, xshapes, W):
    _out(b, lp, "Softmax", xs, axis=_pos_axis(int(lp.softmax_param.axis), len(xshapes[0])))


def _concat(b, lp, xs, xshapes, W):
    p = lp.concat_param
    a = int(p.concat_dim) if p.HasField("concat_dim") and not p.HasField("axis") \
        else int(p.axis)
    _out(b, lp, "Concat", xs, axis=_pos_axis(a, len(xshapes[0])))


def _eltwise(b, lp, xs, xshapes, W):
    p = lp.eltwise_param
    if p.operation == p.PROD:
        op = "Mul"
    elif p.operation == p.MAX:
        op = "Max"
    else:
        op = "Sum"
        coeffs = [float(c) for c in p.coeff] or [1.0] * len(xs)
        scaled = []
        for k, (x, c) in enumerate(zip(xs, coeffs)):
            if c == 1:
                scaled.append(x)
            else:
                m = b.fresh(f"{lp.name}__c{k}")
                b.node("Mul", [x, b.const(f"{lp.name}_coeff{k}", np.float32(c))], [m], name=m)
                scaled.append(m)
        xs = scaled
    if op == "Mul" and len(xs) > 2:         # ONNX's Mul takes two inputs
        acc = xs[0]
        for k, x in enumerate(xs[1:-1]):
            m = b.fresh(f"{lp.name}__p{k}")
            b.node("Mul", [acc, x], [m], name=m)
            acc = m
        xs = [acc, xs[-1]]
    _out(b, lp, op, xs)


def _reshape_keeping_batch(b, lp, x, keep_batch):
    """Reshape to the top's shape, its batch dimension 0 (copied) where ``keep_batch``."""
    shape = list(b.yshapes[0])
    if keep_batch and shape:
        shape[0] = 0
    _out(b, lp, "Reshape", [x, b.const(f"{lp.name}_shape", np.asarray(shape, np.int64))])


def _flatten(b, lp, xs, xshapes, W):
    keep_batch = K._axis(int(lp.flatten_param.axis), len(xshapes[0]), lp,
                         "flatten_param.axis") > 0
    _reshape_keeping_batch(b, lp, xs[0], keep_batch)


def _reshape(b, lp, xs, xshapes, W):
    p = lp.reshape_param
    start = p.axis if p.axis >= 0 else len(xshapes[0]) + p.axis + 1
    keep_batch = start > 0 or (len(p.shape.dim) and p.shape.dim[0] == 0)
    _reshape_keeping_batch(b, lp, xs[0], keep_batch)


def _argmax(b, lp, xs, xshapes, W):
    p = lp.argmax_param
    s = xshapes[0]
    k = int(p.top_k)
    top = b.top(lp.top[0])
    if p.HasField("axis"):
        a = K._axis(int(p.axis), len(s), lp, "argmax_param.axis")
        x = xs[0]
    else:
        a = 1
        x = b.fresh(f"{lp.name}__flat")
        b.node("Flatten", xs[:1], [x], name=x, axis=1)
    if k == 1:
        idx = b.fresh(f"{lp.name}__idx")
        # ties: Caffe takes the larger index
        b.node("ArgMax", [x], [idx], name=idx, axis=a, keepdims=1, select_last_index=1)
        val = None
        if p.out_max_val:
            val = b.fresh(f"{lp.name}__val")
            _reduce(b, "ReduceMax", x, val, [a], 1)
    else:
        val = b.fresh(f"{lp.name}__val")
        idx = b.fresh(f"{lp.name}__idx")
        b.node("TopK", [x, _c(b, lp, "k", [k], np.int64)], [val, idx], name=idx, axis=a,
               largest=1, sorted=1)
        if not p.out_max_val:
            val = None
    fidx = b.fresh(f"{lp.name}__fidx")
    b.node("Cast", [idx], [fidx], name=fidx, to=1)
    if p.HasField("axis"):
        b.node("Identity", [val if val is not None else fidx], [top], name=lp.name)
        return
    # (N, k) -> (N, 1 or 2, k, 1, ...)
    shape = [0, 2 if p.out_max_val else 1, k] + [1] * (max(3, len(s)) - 3)
    if val is not None:
        cat = b.fresh(f"{lp.name}__cat")
        parts = [_reshape_to(b, lp, v, [0, 1, k], tag=f"part{j}_shape")
                 for j, v in enumerate((fidx, val))]
        b.node("Concat", parts, [cat], name=cat, axis=1)
        _reshape_to(b, lp, cat, shape, top)
    else:
        _reshape_to(b, lp, fidx, shape, top)


def _reduction(b, lp, xs, xshapes, W):
    p = lp.reduction_param
    s = xshapes[0]
    a = K._axis(int(p.axis), len(s), lp, "reduction_param.axis") if s else 0
    axes = list(range(a, len(s)))
    op = int(p.operation)
    top = b.top(lp.top[0])
    c = float(p.coeff)
    red = top if c == 1 else b.fresh(f"{lp.name}__reduce")
    onnx_op = {p.SUM: "ReduceSum", p.ASUM: "ReduceL1", p.SUMSQ: "ReduceSumSquare",
               p.MEAN: "ReduceMean"}.get(op)
    if onnx_op is None:
        raise ConfigError(f"unknown operation {op}", layer=lp.name, layer_type=lp.type)
    _reduce(b, onnx_op, xs[0], red, axes, 0, name=lp.name if red == top else None)
    if c != 1:
        b.node("Mul", [red, _c(b, lp, "coeff", c)], [top], name=lp.name)


def _crop(b, lp, xs, xshapes, W):
    p = lp.crop_param
    s0, s1 = xshapes[0], xshapes[1]
    n = len(s0)
    a = K._axis(int(p.axis), n, lp, "crop_param.axis")
    offs = [int(o) for o in p.offset]
    starts = [offs[0] if len(offs) == 1 else offs[i - a] if offs else 0 for i in range(a, n)]
    ends = [o + int(s1[i]) for o, i in zip(starts, range(a, n))]
    axes = list(range(a, n))
    if a > 0:
        ends_in = _c(b, lp, "ends", ends, np.int64)
    else:
        # the batch size of the reference is only known at run time
        shp = b.fresh(f"{lp.name}__refshape")
        b.node("Shape", [xs[1]], [shp], name=shp)
        n1 = b.fresh(f"{lp.name}__refbatch")
        b.node("Slice", [shp, _c(b, lp, "b0", [0], np.int64), _c(b, lp, "b1", [1], np.int64)],
               [n1], name=n1)
        e0 = b.fresh(f"{lp.name}__end0")
        b.node("Add", [n1, _c(b, lp, "off0", [starts[0]], np.int64)], [e0], name=e0)
        ends_in = b.fresh(f"{lp.name}__ends")
        b.node("Concat", [e0, _c(b, lp, "ends_rest", ends[1:], np.int64)], [ends_in],
               name=ends_in, axis=0)
    _out(b, lp, "Slice", [xs[0], _c(b, lp, "starts", starts, np.int64), ends_in,
                          _c(b, lp, "axes", axes, np.int64)])


def _slice(b, lp, xs, xshapes, W):
    p = lp.slice_param
    s = xshapes[0]
    ax = int(p.slice_dim) if p.HasField("slice_dim") and not p.HasField("axis") \
        else int(p.axis)
    a = K._axis(ax, len(s), lp, "slice_param.axis")
    tops = [b.top(t) for t in lp.top]
    if len(tops) == 1:
        b.node("Identity", xs[:1], tops, name=lp.name)
        return
    points = [int(v) for v in p.slice_point]
    if not points:
        extra = {"num_outputs": len(tops)} if b.opset >= 18 else {}
        b.node("Split", xs[:1], tops, name=lp.name, axis=a, **extra)     # equal parts
        return
    bounds = [0] + points + [np.iinfo(np.int64).max]
    for k, t in enumerate(tops):
        b.node("Slice", [xs[0], _c(b, lp, f"start{k}", [bounds[k]], np.int64),
                         _c(b, lp, f"end{k}", [bounds[k + 1]], np.int64),
                         _c(b, lp, "axis", [a], np.int64)], [t], name=f"{lp.name}/{k}")


def _tile(b, lp, xs, xshapes, W):
    p = lp.tile_param
    s = xshapes[0]
    a = K._axis(int(p.axis), len(s), lp, "tile_param.axis")
    reps = [1] * len(s)
    reps[a] = int(p.tiles)
    _out(b, lp, "Tile", [xs[0], _c(b, lp, "repeats", reps, np.int64)])


def _batch_reindex(b, lp, xs, xshapes, W):
    ids = b.fresh(f"{lp.name}__ids")
    b.node("Cast", [xs[1]], [ids], name=ids, to=7)
    _out(b, lp, "Gather", [xs[0], ids], axis=0)


def _filter(b, lp, xs, xshapes, W):
    flat = _reshape_to(b, lp, xs[-1], [-1], tag="selector")
    cond = b.fresh(f"{lp.name}__keep")
    b.node("Cast", [flat], [cond], name=cond, to=9)     # bool: nonzero
    for k, (x, t) in enumerate(zip(xs[:-1], lp.top)):
        b.node("Compress", [x, cond], [b.top(t)], name=f"{lp.name}/{k}", axis=0)


def _parameter(b, lp, xs, xshapes, W):
    _out(b, lp, "Identity", [b.const(f"{lp.name}_value", W[0])])


#: layer type -> exporter (b, lp, xs, xshapes, W)
_EXPORTERS = {
    # vision
    "Convolution": _convolution, "Deconvolution": _deconvolution, "Im2col": _im2col,
    "Pooling": _pooling, "SPP": _spp,
    # common
    "InnerProduct": _inner_product, "Scale": _scale_or_bias, "Bias": _scale_or_bias,
    "Embed": _embed,
    # neurons
    "ReLU": _relu, "PReLU": _prelu, "Sigmoid": _elementwise("Sigmoid"),
    "TanH": _elementwise("Tanh"), "AbsVal": _elementwise("Abs"),
    "BNLL": _elementwise("Softplus"), "Dropout": _elementwise("Identity"), "Power": _power,
    "Exp": _exp, "Log": _log, "Swish": _swish, "ELU": _elu, "Threshold": _threshold,
    "Clip": _clip,
    # normalization
    "LRN": _lrn, "BatchNorm": _batch_norm, "MVN": _mvn,
    # utility
    "Softmax": _softmax, "Concat": _concat, "Eltwise": _eltwise, "Split": _elementwise("Identity"),
    "Flatten": _flatten, "Reshape": _reshape, "ArgMax": _argmax, "Reduction": _reduction,
    "Crop": _crop, "Slice": _slice, "Tile": _tile, "BatchReindex": _batch_reindex,
    "Filter": _filter, "Parameter": _parameter,
}


def export_onnx(fm: FrozenModel, path: str, *, opset: int = 13) -> dict:
    onnx, helper, numpy_helper = _onnx()
    from onnx import TensorProto
    shapes = _shapes(fm)
    if opset < 13:
        raise ConfigError(f"opset {opset} is too old: netdef exports opset 13 or later")
    b = _Builder(fm, helper, numpy_helper)
    b.opset = opset
    inputs = []
    for inp in fm.deploy.input:
        dims = ["N"] + [int(d) for d in inp.shape.dim[1:]]
        inputs.append(helper.make_tensor_value_info(inp.name, TensorProto.FLOAT, dims))
    for i, lp in enumerate(fm.net.layer):
        if lp.type == "Input":
            for top in lp.top:
                b.input(top)
            continue
        export = _EXPORTERS.get(lp.type)
        if export is None:
            raise ConfigError(f"layer type {lp.type} cannot be exported to ONNX", layer=lp.name,
                              layer_type=lp.type)
        b.yshapes = [shapes[(i, t)] for t in lp.top]
        export(b, lp, [b.cur[x] for x in lp.bottom], shapes[(i, "__in__")],
               fm.weights.get(lp.name, []))
    outputs = []
    for o in fm.deploy.output:
        i = max(k for k, lp in enumerate(fm.net.layer) if o in lp.top)
        shape = shapes[(i, o)]
        dims = ["N"] + [int(d) for d in shape[1:]] if len(shape) else []
        outputs.append(helper.make_tensor_value_info(b.cur[o], TensorProto.FLOAT, dims))
    graph = helper.make_graph(b.nodes, fm.net.name or "netdef", inputs, outputs, b.inits)
    model = helper.make_model(graph, producer_name="netdef",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    from ..io.files import write_file
    write_file(path, model.SerializeToString())
    return {"nodes": len(b.nodes), "initializers": len(b.inits)}
