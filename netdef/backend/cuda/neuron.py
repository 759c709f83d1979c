"""CUDA kernels and implementations of the neuron layers (netdef.layers.neuron): ReLU,
Sigmoid, TanH, AbsVal, ELU, BNLL, Threshold, Clip, Dropout, Power, Exp, Log, Swish, PReLU."""
from __future__ import annotations

import math
import numpy as np

from .launch import kernel
from .staging import send_async
from .primitives import (
    Impl,
    SUM,
    copy,
    cuda,
    fill,
    grid1d,
    impl,
    scaled_copy,
    scratch,
    seg_reduce,
    state,
)


# -- neuron layers -----------------------------------------------------------------------------
RELU, SIGMOID, TANH, ABSVAL, ELU, BNLL, THRESHOLD, CLIP, SCALE = range(9)


@kernel
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


@kernel
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


# -- parametric neurons -------------------------------------------------------------------------
POWER, EXP, LOG, SWISH = range(4)


@kernel
def _neuron2_fwd(op, n, x, y, aux, p0, p1, p2, p3):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        if op == 0:                 # power: p0 power, p1 scale, p2 shift
            b = v * p1 + p2
            if p0 == 1:
                r = b
            elif p0 == 2:
                r = b * b
            else:
                r = math.pow(b, p0)
        elif op == 1:               # exp: p0 inner scale, p1 outer scale
            r = math.exp(v * p0) * p1
        elif op == 2:               # log: p0 scale, p1 shift, p2 base scale
            r = math.log(v * p0 + p1) * p2
        else:                       # swish: p0 beta; aux keeps the sigmoid
            z = v * p0
            s = 1.0 / (1.0 + math.exp(-z)) if z >= -700 else 0.0
            aux[i] = s
            r = v * s
        y[i] = r


@kernel
def _neuron2_bwd(op, n, x, y, aux, dy, dx, p0, p1, p2, p3):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        g = dy[i]
        if op == 0:                 # p3 = power * scale
            if p0 == 1:
                r = g * p3
            else:
                b = x[i] * p1 + p2
                d = b if p0 == 2 else math.pow(b, p0 - 1)
                r = g * (d * p3)
        elif op == 1:
            r = g * y[i] * p0
        elif op == 2:               # p3 = backward scale
            r = g * (p3 / (x[i] * p0 + p1))
        else:
            by = y[i] * p0
            r = g * ((1.0 - by) * aux[i] + by)
        dx[i] = r


def neuron2_forward(op, x, y, n, aux=None, p0=0.0, p1=0.0, p2=0.0, p3=0.0):
    if n:
        _neuron2_fwd[grid1d(n)](op, n, x, y, y if aux is None else aux, p0, p1, p2, p3)


def neuron2_backward(op, x, y, dy, dx, n, aux=None, p0=0.0, p1=0.0, p2=0.0, p3=0.0):
    if n:
        _neuron2_bwd[grid1d(n)](op, n, x, y, y if aux is None else aux, dy, dx, p0, p1, p2, p3)


@kernel
def _prelu_fwd(n, x, slope, c, inner, y):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        y[i] = v if v > 0 else slope[(i // inner) % c] * v


@kernel
def _prelu_bwd(n, x, slope, c, inner, dy, dx, prod, do_x, do_s):
    """dx = dy (x > 0) or a*dy; prod = dy * x where x <= 0 (the slope gradient's terms)."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        v = x[i]
        g = dy[i]
        if do_s:
            prod[i] = g * v if v <= 0 else 0.0
        if do_x:
            dx[i] = g if v > 0 else slope[(i // inner) % c] * g


def prelu_forward(x, slope, c, inner, y, n):
    if n:
        _prelu_fwd[grid1d(n)](n, x, slope, c, inner, y)


def prelu_backward(x, slope, c, inner, dy, dx, prod, n, do_x, do_s):
    if n:
        _prelu_bwd[grid1d(n)](n, x, slope, c, inner, dy, dx if do_x else dy,
                              prod if do_s else dy, do_x, do_s)


# -- neurons ---------------------------------------------------------------------------------
class _Neuron(Impl):
    op = 0

    def params(self, layer):
        return 0.0, 0.0

    def needs_input(self, layer):
        return layer.needs_input()

    def forward(self, layer, bottom, top):
        n = bottom[0].count
        x = bottom[0].gpu_data()
        if top[0] is bottom[0] and self.needs_input(layer):
            keep = state(layer, "x", n, x.dtype)
            copy(keep, x, n)
        y = top[0].mutable_gpu_data()
        neuron_forward(self.op, x, y, n, *self.params(layer))

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        if top[0] is bottom[0] and self.needs_input(layer):
            x = layer._cu_x
        else:
            x = bottom[0].gpu_data()
        y = top[0].gpu_data()
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        neuron_backward(self.op, x, y, dy, dx, n, *self.params(layer))


@impl("ReLU")
class ReLU(_Neuron):
    op = RELU

    def params(self, layer):
        return layer.slope, 0.0

    def backward(self, layer, top, propagate_down, bottom):
        # with slope >= 0 the output's sign is the input's: use y as x (works in place)
        if not propagate_down[0]:
            return
        n = bottom[0].count
        x = layer._cu_x if (top[0] is bottom[0] and layer.needs_input()) else \
            (top[0].gpu_data() if not layer.needs_input() else bottom[0].gpu_data())
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        neuron_backward(self.op, x, x, dy, dx, n, layer.slope, 0.0)


@impl("Sigmoid")
class Sigmoid(_Neuron):
    op = SIGMOID


@impl("TanH")
class TanH(_Neuron):
    op = TANH


@impl("AbsVal")
class AbsVal(_Neuron):
    op = ABSVAL


@impl("ELU")
class ELU(_Neuron):
    op = ELU

    def params(self, layer):
        return layer.alpha, 0.0

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        y = top[0].gpu_data()
        if layer.needs_input():
            x = layer._cu_x if top[0] is bottom[0] else bottom[0].gpu_data()
        else:
            x = y           # alpha >= 0: y > 0 exactly where x > 0
        neuron_backward(self.op, x, y, top[0].gpu_diff(), bottom[0].mutable_gpu_diff(), n,
                          layer.alpha, 0.0)


@impl("BNLL")
class BNLL(_Neuron):
    op = BNLL


@impl("Threshold")
class Threshold(_Neuron):
    op = THRESHOLD

    def params(self, layer):
        return layer.threshold, 0.0

    def needs_input(self, layer):
        return False

    def backward(self, layer, top, propagate_down, bottom):
        layer.backward(top, propagate_down, bottom)     # raises when a gradient is asked


@impl("Clip")
class Clip(_Neuron):
    op = CLIP

    def params(self, layer):
        return layer.lo, layer.hi


@kernel
def _dropout(n, x, keep, scale, y):
    """y = x * (scale if keep else 0): the CPU's x * mask, mask = keep * scale."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        m = scale if keep[i] else scale * 0
        y[i] = x[i] * m


@impl("Dropout")
class Dropout(_Neuron):
    """The mask comes from the layer's own generator on the host (bit-identical to the CPU
    path, its state in the solverstate) and goes to the device as one byte per element, on
    the copy stream from pinned buffers (:func:`.staging.send_async`): in TRAIN one
    asynchronous host->device copy per forward, no host wait."""

    def forward(self, layer, bottom, top):
        n = bottom[0].count
        x = bottom[0].gpu_data()
        y = top[0].mutable_gpu_data()
        if layer.phase == 0:
            keep = (layer.rng.random(bottom[0].shape) >= layer.ratio).view(np.uint8)
            layer._cu_keep = dkeep = send_async(layer, keep)
            layer._cu_scale = np.dtype(bottom[0].dtype).type(layer.train_scale)   # as mask
            _dropout[grid1d(n)](n, x, dkeep, layer._cu_scale, y)
        elif layer.test_scale != 1:
            scaled_copy(x, layer.test_scale, y, n)
        elif y is not x and top[0] is not bottom[0]:
            copy(y, x, n)

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        dy = top[0].gpu_diff()
        dx = bottom[0].mutable_gpu_diff()
        if layer.phase == 0:
            _dropout[grid1d(n)](n, dy, layer._cu_keep, layer._cu_scale, dx)
        elif layer.test_scale != 1:
            scaled_copy(dy, layer.test_scale, dx, n)
        elif top[0] is not bottom[0]:
            copy(dx, dy, n)


# -- parametric neurons -------------------------------------------------------------------------
class _Neuron2(Impl):
    """Elementwise layers computed by neuron2_forward/_backward; keeps the input of an in-place
    layer that needs it (like the CPU layer)."""
    op = 0

    def params(self, layer):
        return 0.0, 0.0, 0.0, 0.0

    def aux(self, layer, n, dtype):
        return None

    def forward(self, layer, bottom, top):
        n = bottom[0].count
        x = bottom[0].gpu_data()
        if top[0] is bottom[0] and layer.needs_input():
            keep = state(layer, "x", n, x.dtype)
            copy(keep, x, n)
        y = top[0].mutable_gpu_data()
        neuron2_forward(self.op, x, y, n, self.aux(layer, n, x.dtype), *self.params(layer))

    def backward(self, layer, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n = bottom[0].count
        if top[0] is bottom[0] and layer.needs_input():
            x = layer._cu_x
        else:
            x = bottom[0].gpu_data()
        y = top[0].gpu_data()
        aux = self.aux(layer, n, y.dtype)
        neuron2_backward(self.op, x, y, top[0].gpu_diff(), bottom[0].mutable_gpu_diff(), n,
                           aux, *self.params(layer))


@impl("Power")
class Power(_Neuron2):
    op = POWER

    def params(self, layer):
        return layer.power, layer.scale, layer.shift, layer.diff_scale

    def forward(self, layer, bottom, top):
        if layer.diff_scale == 0:
            with np.errstate(all="ignore"):
                value = 1.0 if layer.power == 0 else \
                    float(np.power(np.float64(layer.shift), layer.power))
            fill(top[0].mutable_gpu_data(), value, top[0].count)
            return
        super().forward(layer, bottom, top)

    def backward(self, layer, top, propagate_down, bottom):
        if propagate_down[0] and layer.diff_scale == 0:
            fill(bottom[0].mutable_gpu_diff(), 0.0, bottom[0].count)
            return
        super().backward(layer, top, propagate_down, bottom)


@impl("Exp")
class Exp(_Neuron2):
    op = EXP

    def params(self, layer):
        return layer.inner_scale, layer.outer_scale, 0.0, 0.0


@impl("Log")
class Log(_Neuron2):
    op = LOG

    def params(self, layer):
        return layer.scale, layer.shift, layer.base_scale, layer.backward_scale


@impl("Swish")
class Swish(_Neuron2):
    op = SWISH

    def params(self, layer):
        return layer.beta, 0.0, 0.0, 0.0

    def aux(self, layer, n, dtype):
        return state(layer, "sig", n, dtype)


@impl("PReLU")
class PReLU(Impl):
    @staticmethod
    def _dims(layer, blob):
        n = blob.shape[0]
        c = 1 if layer.channel_shared else blob.shape[1]
        rows = n if layer.channel_shared else n * c
        return c, (blob.count // rows if rows else 0), n

    def forward(self, layer, bottom, top):
        n = bottom[0].count
        x = bottom[0].gpu_data()
        if top[0] is bottom[0]:
            copy(state(layer, "x", n, x.dtype), x, n)
        c, inner, _ = self._dims(layer, bottom[0])
        prelu_forward(x, layer.blobs[0].gpu_data(), c, inner, top[0].mutable_gpu_data(), n)

    def backward(self, layer, top, propagate_down, bottom):
        do_x = bool(propagate_down[0])
        do_s = bool(layer.param_propagate_down and layer.param_propagate_down[0])
        if not (do_x or do_s):
            return
        n = bottom[0].count
        x = layer._cu_x if top[0] is bottom[0] else bottom[0].gpu_data()
        c, inner, nb = self._dims(layer, bottom[0])
        dy = top[0].gpu_diff()
        prod = scratch("prelu", n, np.float64) if do_s else None
        dx = bottom[0].mutable_gpu_diff() if do_x else None
        prelu_backward(x, layer.blobs[0].gpu_data(), c, inner, dy, dx, prod, n, do_x, do_s)
        if do_s:
            seg_reduce(prod, nb, c, inner, layer.blobs[0].mutable_gpu_diff(), SUM, 1.0, 1.0)
