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
* Dropout -> Identity, Flatten / Reshape -> Reshape (batch dimension kept dynamic).

The batch dimension of inputs and outputs is symbolic ("N").  Needs the ``onnx`` package.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
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
    """Shape of every blob value for batch 1 (numpy forward of zeros), by layer and top."""
    env = {}
    shapes = {}
    for inp in fm.deploy.input:
        s = (1,) + tuple(int(d) for d in inp.shape.dim[1:])
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
    def __init__(self, fm, helper, numpy_helper):
        self.fm = fm
        self.h = helper
        self.nh = numpy_helper
        self.nodes = []
        self.inits = []
        self.cur: dict[str, str] = {}
        self.used: set[str] = set()
        self.n = 0
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
        self.nodes.append(self.h.make_node(op, inputs, outputs, name=name or outputs[0],
                                           **attrs))
        return outputs[0]


def _broadcast_operand(operand, xshape, axis, num_axes_zero):
    if operand.ndim == 0 or num_axes_zero:
        return operand.reshape(())
    pad = len(xshape) - axis - operand.ndim
    return operand.reshape(operand.shape + (1,) * pad)


def export_onnx(fm: FrozenModel, path: str, *, opset: int = 13) -> dict:
    onnx, helper, numpy_helper = _onnx()
    from onnx import TensorProto
    shapes = _shapes(fm)
    b = _Builder(fm, helper, numpy_helper)
    inputs = []
    for inp in fm.deploy.input:
        dims = ["N"] + [int(d) for d in inp.shape.dim[1:]]
        inputs.append(helper.make_tensor_value_info(inp.name, TensorProto.FLOAT, dims))
    for i, lp in enumerate(fm.net.layer):
        t = lp.type
        W = fm.weights.get(lp.name, [])
        if t == "Input":
            for top in lp.top:
                b.remaining[top] -= 1
                b.used.add(top)
                b.cur[top] = top
            continue
        xs = [b.cur[x] for x in lp.bottom]
        xshapes = shapes[(i, "__in__")]
        out_shape = shapes[(i, lp.top[0])]
        if t == "Convolution":
            cp = lp.convolution_param
            kh, kw, ph, pw, sh, sw, dh, dw = K.conv_geometry(cp)
            ins = [xs[0], b.const(f"{lp.name}_W", W[0])]
            if cp.bias_term and len(W) > 1:
                ins.append(b.const(f"{lp.name}_B", W[1]))
            b.node("Conv", ins, [b.top(lp.top[0])], name=lp.name, kernel_shape=[kh, kw],
                   pads=[ph, pw, ph, pw], strides=[sh, sw], dilations=[dh, dw],
                   group=int(cp.group))
        elif t == "Pooling":
            pp = lp.pooling_param
            _, _, h, w = xshapes[0]
            kh, kw, ph, pw, sh, sw, oh, ow = K.pooling_geometry(pp, h, w)
            is_max = int(pp.pool) == pp.MAX
            if len(lp.top) != 1:
                raise ConfigError("the argmax top of Pooling cannot be exported to ONNX",
                                  layer=lp.name, layer_type=t)
            if pp.global_pooling:
                b.node("GlobalMaxPool" if is_max else "GlobalAveragePool", xs[:1],
                       [b.top(lp.top[0])], name=lp.name)
                continue
            eh = (oh - 1) * sh + kh - h - ph
            ew = (ow - 1) * sw + kw - w - pw
            eh, ew = max(eh, 0), max(ew, 0)
            if (h + ph + eh - kh) // sh + 1 != oh or (w + pw + ew - kw) // sw + 1 != ow:
                raise ConfigError("this pooling geometry has no ONNX equivalent",
                                  layer=lp.name, layer_type=t)
            attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=[ph, pw, eh, ew])
            if is_max:
                b.node("MaxPool", xs[:1], [b.top(lp.top[0])], name=lp.name, **attrs)
            else:
                hs = np.arange(oh) * sh - ph
                ws = np.arange(ow) * sw - pw
                div = ((np.minimum(hs + kh, h + ph) - hs)[:, None]
                       * (np.minimum(ws + kw, w + pw) - ws)[None, :]).astype(np.float64)
                corr = (kh * kw / div).astype(np.float32)
                if np.all(corr == 1):
                    b.node("AveragePool", xs[:1], [b.top(lp.top[0])], name=lp.name,
                           count_include_pad=1, **attrs)
                else:
                    mid = b.fresh(f"{lp.name}__avg")
                    b.node("AveragePool", xs[:1], [mid], name=mid, count_include_pad=1,
                           **attrs)
                    b.node("Mul", [mid, b.const(f"{lp.name}_div", corr.reshape(1, 1, oh, ow))],
                           [b.top(lp.top[0])], name=lp.name)
        elif t == "InnerProduct":
            ip = lp.inner_product_param
            if int(ip.axis) not in (1, -len(xshapes[0]) + 1):
                raise ConfigError("InnerProduct with axis other than 1 cannot be exported",
                                  layer=lp.name, layer_type=t)
            flat = xs[0]
            if len(xshapes[0]) != 2:
                flat = b.fresh(f"{lp.name}__flat")
                b.node("Flatten", xs[:1], [flat], name=flat, axis=1)
            ins = [flat, b.const(f"{lp.name}_W", W[0])]
            if ip.bias_term and len(W) > 1:
                ins.append(b.const(f"{lp.name}_B", W[1]))
            b.node("Gemm", ins, [b.top(lp.top[0])], name=lp.name,
                   transB=0 if ip.transpose else 1)
        elif t == "ReLU":
            s = float(lp.relu_param.negative_slope)
            if s == 0:
                b.node("Relu", xs, [b.top(lp.top[0])], name=lp.name)
            else:
                b.node("LeakyRelu", xs, [b.top(lp.top[0])], name=lp.name, alpha=s)
        elif t == "PReLU":
            a = W[0].reshape(-1)
            nd = len(xshapes[0])
            slope = a.reshape((a.size,) + (1,) * (nd - 2)) if a.size > 1 else a.reshape(1)
            b.node("PRelu", [xs[0], b.const(f"{lp.name}_slope", slope)], [b.top(lp.top[0])],
                   name=lp.name)
        elif t in ("Sigmoid", "TanH", "AbsVal", "Dropout", "Split"):
            op = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs"}.get(t, "Identity")
            for top in lp.top:
                b.node(op, xs[:1], [b.top(top)], name=f"{lp.name}/{top}" if len(lp.top) > 1
                       else lp.name)
        elif t == "Softmax":
            axis = int(lp.softmax_param.axis)
            axis = axis + len(xshapes[0]) if axis < 0 else axis
            if opset < 13:
                raise ConfigError("Softmax needs opset 13 or later", layer=lp.name)
            b.node("Softmax", xs, [b.top(lp.top[0])], name=lp.name, axis=axis)
        elif t == "LRN":
            p = lp.lrn_param
            size = int(p.local_size)
            if p.norm_region == p.ACROSS_CHANNELS:
                b.node("LRN", xs, [b.top(lp.top[0])], name=lp.name, size=size,
                       alpha=float(p.alpha), beta=float(p.beta), bias=float(p.k))
            else:
                half = (size - 1) // 2
                sq = b.fresh(f"{lp.name}__sq")
                b.node("Mul", [xs[0], xs[0]], [sq], name=sq)
                avg = b.fresh(f"{lp.name}__avg")
                b.node("AveragePool", [sq], [avg], name=avg, kernel_shape=[size, size],
                       strides=[1, 1], pads=[half] * 4, count_include_pad=1)
                sc = b.fresh(f"{lp.name}__scale")
                b.node("Mul", [avg, b.const(f"{lp.name}_alpha", np.float32(p.alpha))], [sc],
                       name=sc)
                sc1 = b.fresh(f"{lp.name}__scale1")
                b.node("Add", [sc, b.const(f"{lp.name}_one", np.float32(1))], [sc1], name=sc1)
                pw_ = b.fresh(f"{lp.name}__pow")
                b.node("Pow", [sc1, b.const(f"{lp.name}_beta", np.float32(-p.beta))], [pw_],
                       name=pw_)
                b.node("Mul", [xs[0], pw_], [b.top(lp.top[0])], name=lp.name)
        elif t == "Concat":
            p = lp.concat_param
            a = int(p.concat_dim) if p.HasField("concat_dim") and not p.HasField("axis") \
                else int(p.axis)
            a = a + len(xshapes[0]) if a < 0 else a
            b.node("Concat", xs, [b.top(lp.top[0])], name=lp.name, axis=a)
        elif t == "Eltwise":
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
                        b.node("Mul", [x, b.const(f"{lp.name}_coeff{k}", np.float32(c))], [m],
                               name=m)
                        scaled.append(m)
                xs = scaled
            if op in ("Mul",) and len(xs) > 2:
                acc = xs[0]
                for k, x in enumerate(xs[1:-1]):
                    m = b.fresh(f"{lp.name}__p{k}")
                    b.node("Mul", [acc, x], [m], name=m)
                    acc = m
                xs = [acc, xs[-1]]
            b.node(op, xs, [b.top(lp.top[0])], name=lp.name)
        elif t == "BatchNorm":
            p = lp.batch_norm_param
            sf = float(W[2].reshape(-1)[0])
            f = 0.0 if sf == 0 else 1.0 / sf
            c = W[0].size
            b.node("BatchNormalization",
                   [xs[0], b.const(f"{lp.name}_gamma", np.ones(c, np.float32)),
                    b.const(f"{lp.name}_beta", np.zeros(c, np.float32)),
                    b.const(f"{lp.name}_mean", (W[0].reshape(-1) * f).astype(np.float32)),
                    b.const(f"{lp.name}_var", (W[1].reshape(-1) * f).astype(np.float32))],
                   [b.top(lp.top[0])], name=lp.name, epsilon=float(p.eps))
        elif t in ("Scale", "Bias"):
            p = lp.scale_param if t == "Scale" else lp.bias_param
            xshape = xshapes[0]
            axis = int(p.axis)
            axis = axis + len(xshape) if axis < 0 else axis
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
                operand = b.const(f"{lp.name}_{'scale' if t == 'Scale' else 'bias'}",
                                  _broadcast_operand(W[0], xshape, axis,
                                                     int(p.num_axes) == 0))
            has_bias = t == "Scale" and p.bias_term
            first = b.fresh(f"{lp.name}__mul") if has_bias else b.top(lp.top[0])
            b.node("Mul" if t == "Scale" else "Add", [xs[0], operand], [first],
                   name=first if has_bias else lp.name)
            if has_bias:
                bias = b.const(f"{lp.name}_bias", _broadcast_operand(
                    W[-1], xshape, 0 if W[-1].ndim == 0 else axis, int(p.num_axes) == 0))
                b.node("Add", [first, bias], [b.top(lp.top[0])], name=lp.name)
        elif t in ("Flatten", "Reshape"):
            ins, outs = xshapes[0], out_shape
            shape = list(outs)
            if t == "Flatten":
                keep_batch = K._axis(int(lp.flatten_param.axis), len(ins), lp,
                                     "flatten_param.axis") > 0
            else:
                p = lp.reshape_param
                start = p.axis if p.axis >= 0 else len(ins) + p.axis + 1
                keep_batch = start > 0 or (len(p.shape.dim) and p.shape.dim[0] == 0)
            if keep_batch and shape:
                shape[0] = 0
            b.node("Reshape", [xs[0], b.const(f"{lp.name}_shape", np.asarray(shape, np.int64))],
                   [b.top(lp.top[0])], name=lp.name)
        else:
            raise ConfigError(f"layer type {t} cannot be exported to ONNX", layer=lp.name,
                              layer_type=t)
    outputs = []
    for o in fm.deploy.output:
        i = max(k for k, lp in enumerate(fm.net.layer) if o in lp.top)
        dims = ["N"] + [int(d) for d in shapes[(i, o)][1:]]
        outputs.append(helper.make_tensor_value_info(b.cur[o], TensorProto.FLOAT, dims))
    graph = helper.make_graph(b.nodes, fm.net.name or "netdef", inputs, outputs, b.inits)
    model = helper.make_model(graph, producer_name="netdef",
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    from .frozen import _atomic_write
    _atomic_write(path, model.SerializeToString())
    return {"nodes": len(b.nodes), "initializers": len(b.inits)}
