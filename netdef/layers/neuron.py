"""Layers: neuron (elementwise activations), Caffe semantics.  See docs/LAYERS.md.

Every layer here takes one bottom, produces one top of the same shape and may run in place
(``top[0] is bottom[0]``).  Backward needs either the output (Sigmoid, TanH, Exp, ELU with
alpha >= 0, ReLU with negative_slope >= 0: the sign of the input survives in the output) or the
input; in the second case an in-place layer keeps a copy of its input during forward.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend.cpu import neuron as K
from .base import TRAIN, Layer
from .registry import register_layer


class _Neuron(Layer):
    """Shared plumbing: shape, in-place input copy, dispatch to ``_forward``/``_backward``."""
    exact_num_bottom = 1
    exact_num_top = 1
    allow_in_place = True
    #: forward FLOPs per element
    flops_per_element = 1

    _x_mem: np.ndarray | None = None

    def reshape(self, bottom, top):
        if top[0] is not bottom[0]:
            top[0].reshape(bottom[0].shape)

    def needs_input(self) -> bool:
        """Whether backward must see the original input (kept as a copy when in place)."""
        return True

    def forward(self, bottom, top):
        x = bottom[0].data
        if top[0] is bottom[0] and self.needs_input():
            if self._x_mem is None or self._x_mem.shape != x.shape or \
                    self._x_mem.dtype != x.dtype:
                self._x_mem = np.empty_like(x)
            np.copyto(self._x_mem, x)
        self._forward(x, top[0].data)

    def _input(self, top, bottom) -> np.ndarray:
        if top[0] is bottom[0] and self.needs_input():
            return self._x_mem
        return bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        self._backward(self._input(top, bottom), top[0].data, top[0].diff, bottom[0].diff)

    def flops(self, bottom, top):
        return int(self.flops_per_element * bottom[0].count)

    # subclasses: x is the input, y the output (may be the same array as x in forward and
    # as x in backward when no copy is needed); dy may be the same array as dx.
    def _forward(self, x, y):
        raise NotImplementedError

    def _backward(self, x, y, dy, dx):
        raise NotImplementedError


def _sigmoid(x, out):
    """Logistic function 1 / (1 + e^-x) into ``out`` (may be ``x``); no overflow warnings."""
    with np.errstate(over="ignore"):
        np.negative(x, out=out)
        np.exp(out, out=out)
    out += 1
    np.reciprocal(out, out=out)
    return out


@register_layer("ReLU", "relu_param")
class ReLULayer(_Neuron):
    """y = max(x, 0) + negative_slope * min(x, 0)."""
    has_cuda = True
    flops_per_element = 1

    def layer_setup(self, bottom, top):
        self.slope = float(self.param.relu_param.negative_slope)
        if self.slope != 0:
            self.flops_per_element = 3

    def needs_input(self):
        # with a non-negative slope, y > 0 exactly where x > 0
        return self.slope < 0

    def _forward(self, x, y):
        if self.slope == 0:
            np.maximum(x, 0, out=y)
        else:
            neg = np.minimum(x, 0)
            neg *= self.slope
            np.maximum(x, 0, out=y)
            y += neg

    def _backward(self, x, y, dy, dx):
        if self.slope == 0:
            np.multiply(dy, x > 0, out=dx)
        else:
            np.multiply(dy, np.where(x > 0, x.dtype.type(1), x.dtype.type(self.slope)), out=dx)


@register_layer("PReLU", "prelu_param")
class PReLULayer(_Neuron):
    """Parametric ReLU: y = max(x, 0) + a_c * min(x, 0), one learned slope per channel (axis 1)
    or one shared slope."""
    has_cuda = True
    flops_per_element = 2

    def layer_setup(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.shape_error(f"PReLU needs a bottom with at least 2 axes (N, C, ...), got "
                                   f"shape {list(bottom[0].shape)}")
        p = self.param.prelu_param
        self.channel_shared = bool(p.channel_shared)
        shape = () if self.channel_shared else (bottom[0].shape[1],)  # Caffe: 0-axis blob
        if not self.blobs:
            slope = self.make_blob(shape)
            self.blobs = [slope]
            self.fill(slope, p.filler if p.HasField("filler") else None,
                      default={"type": "constant", "value": 0.25})
        elif self.blobs[0].count != int(np.prod(shape)):
            raise self.shape_error(f"slope blob has {self.blobs[0].count} values, expected "
                                   f"{int(np.prod(shape))} (channel_shared="
                                   f"{str(self.channel_shared).lower()})")

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.shape_error(f"PReLU needs a bottom with at least 2 axes (N, C, ...), got "
                                   f"shape {list(bottom[0].shape)}")
        want = 1 if self.channel_shared else bottom[0].shape[1]
        if self.blobs and self.blobs[0].count != want:
            raise self.shape_error(f"bottom has {bottom[0].shape[1]} channels but the slope "
                                   f"blob has {self.blobs[0].count} values")
        super().reshape(bottom, top)

    def _rows(self, a):
        """View as (rows, D); channel of row r is r % C (C = 1 when shared)."""
        if self.channel_shared:
            return a.reshape(a.shape[0], -1), 1
        c = a.shape[1]
        return a.reshape(a.shape[0] * c, -1), c

    def _forward(self, x, y):
        x2, c = self._rows(x)
        y2, _ = self._rows(y)
        K.prelu_forward(x2, self.blobs[0].data.reshape(-1), c, y2)

    def backward(self, top, propagate_down, bottom):
        do_bottom = bool(propagate_down[0])
        do_slope = bool(self.param_propagate_down and self.param_propagate_down[0])
        if not (do_bottom or do_slope):
            return
        x2, c = self._rows(self._input(top, bottom))
        dy2, _ = self._rows(top[0].diff)
        dx2 = self._rows(bottom[0].diff)[0] if do_bottom else dy2
        partial = np.zeros(x2.shape[0] if do_slope else 1, dtype=np.float64)
        slope = self.blobs[0]
        K.prelu_backward(x2, slope.data.reshape(-1), c, dy2, dx2, partial, do_bottom, do_slope)
        if do_slope:
            slope.diff.reshape(-1)[...] += partial.reshape(-1, c).sum(axis=0)


@register_layer("ELU", "elu_param")
class ELULayer(_Neuron):
    """y = x if x > 0 else alpha * (e^x - 1)."""
    has_cuda = True
    flops_per_element = 4

    def layer_setup(self, bottom, top):
        self.alpha = float(self.param.elu_param.alpha)

    def needs_input(self):
        # alpha >= 0: y > 0 exactly where x > 0, and dy/dx = alpha + y for x <= 0
        return self.alpha < 0

    def _forward(self, x, y):
        neg = np.minimum(x, 0)
        np.expm1(neg, out=neg)
        neg *= self.alpha
        np.maximum(x, 0, out=y)
        y += neg

    def _backward(self, x, y, dy, dx):
        np.multiply(dy, np.where(x > 0, x.dtype.type(1), y + x.dtype.type(self.alpha)), out=dx)


@register_layer("Sigmoid", "sigmoid_param")
class SigmoidLayer(_Neuron):
    """y = 1 / (1 + e^-x)."""
    has_cuda = True
    flops_per_element = 4

    def needs_input(self):
        return False

    def _forward(self, x, y):
        _sigmoid(x, y)

    def _backward(self, x, y, dy, dx):
        d = 1 - y
        d *= y
        np.multiply(dy, d, out=dx)


@register_layer("TanH", "tanh_param")
class TanHLayer(_Neuron):
    """y = tanh(x)."""
    has_cuda = True
    flops_per_element = 4

    def needs_input(self):
        return False

    def _forward(self, x, y):
        np.tanh(x, out=y)

    def _backward(self, x, y, dy, dx):
        d = np.square(y)
        np.subtract(1, d, out=d)
        np.multiply(dy, d, out=dx)


@register_layer("AbsVal", None)
class AbsValLayer(_Neuron):
    """y = |x|; dy/dx = sign(x) (0 at 0)."""
    has_cuda = True
    flops_per_element = 1

    def _forward(self, x, y):
        np.abs(x, out=y)

    def _backward(self, x, y, dy, dx):
        np.multiply(dy, np.sign(x), out=dx)


@register_layer("Power", "power_param")
class PowerLayer(_Neuron):
    """y = (shift + scale * x) ^ power, with Caffe's special cases: when power * scale == 0
    the output is the constant 1 (power 0) or shift^power, and the gradient is 0."""
    has_cuda = True

    def layer_setup(self, bottom, top):
        p = self.param.power_param
        self.power = float(p.power)
        self.scale = float(p.scale)
        self.shift = float(p.shift)
        self.diff_scale = self.power * self.scale
        # scale (1) + shift (1) + pow (counted as 4)
        self.flops_per_element = 0 if self.diff_scale == 0 else \
            (self.scale != 1) + (self.shift != 0) + 4 * (self.power != 1)

    def needs_input(self):
        return self.diff_scale != 0 and self.power != 1

    def _forward(self, x, y):
        if self.diff_scale == 0:
            with np.errstate(all="ignore"):
                value = 1.0 if self.power == 0 else np.power(np.float64(self.shift), self.power)
            y.fill(value)
            return
        if self.scale != 1:
            np.multiply(x, self.scale, out=y)
        elif y is not x:
            np.copyto(y, x)
        if self.shift != 0:
            y += self.shift
        if self.power != 1:
            np.power(y, self.power, out=y)

    def _backward(self, x, y, dy, dx):
        if self.diff_scale == 0:
            dx.fill(0)
            return
        if self.power == 1:
            np.multiply(dy, self.diff_scale, out=dx)
            return
        base = x * self.scale if self.scale != 1 else x.copy()
        if self.shift != 0:
            base += self.shift
        if self.power == 2:
            d = base
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                d = np.power(base, self.power - 1, out=base)
        d *= self.diff_scale
        np.multiply(dy, d, out=dx)


def _check_base(layer, base: float, field: str) -> float:
    """log(base) for a base that must be > 0 or -1 (meaning e)."""
    if base == -1:
        return 1.0
    if not base > 0 or math.isinf(base):
        raise layer.config_error(f"base must be a finite value > 0, or -1 for e (got {base:g})",
                                 field=field)
    return math.log(base)


@register_layer("Exp", "exp_param")
class ExpLayer(_Neuron):
    """y = base ^ (shift + scale * x), base -1 meaning e."""
    has_cuda = True

    def layer_setup(self, bottom, top):
        p = self.param.exp_param
        base = float(p.base)
        log_base = _check_base(self, base, "exp_param.base")
        self.inner_scale = log_base * float(p.scale)
        shift = float(p.shift)
        self.outer_scale = 1.0 if shift == 0 else \
            (math.exp(shift) if base == -1 else base ** shift)
        self.flops_per_element = 2 + (self.inner_scale != 1) + (self.outer_scale != 1)

    def needs_input(self):
        return False

    def _forward(self, x, y):
        with np.errstate(over="ignore"):
            if self.inner_scale == 1:
                np.exp(x, out=y)
            else:
                np.multiply(x, self.inner_scale, out=y)
                np.exp(y, out=y)
            if self.outer_scale != 1:
                y *= self.outer_scale

    def _backward(self, x, y, dy, dx):
        np.multiply(dy, y, out=dx)
        if self.inner_scale != 1:
            dx *= self.inner_scale


@register_layer("Log", "log_param")
class LogLayer(_Neuron):
    """y = log_base(shift + scale * x), base -1 meaning e."""
    has_cuda = True

    def layer_setup(self, bottom, top):
        p = self.param.log_param
        log_base = _check_base(self, float(p.base), "log_param.base")
        if log_base == 0:
            raise self.config_error("base 1 has no logarithm (log(1) = 0); use a base > 0 other "
                                    "than 1, or -1 for e", field="log_param.base")
        self.base_scale = 1.0 / log_base
        self.scale = float(p.scale)
        self.shift = float(p.shift)
        self.backward_scale = self.scale / log_base
        self.flops_per_element = 2 + (self.scale != 1) + (self.shift != 0) + \
            (self.base_scale != 1)

    def _affine(self, x, out):
        if self.scale != 1:
            np.multiply(x, self.scale, out=out)
        elif out is not x:
            np.copyto(out, x)
        if self.shift != 0:
            out += self.shift
        return out

    def _forward(self, x, y):
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log(self._affine(x, y), out=y)
        if self.base_scale != 1:
            y *= self.base_scale

    def _backward(self, x, y, dy, dx):
        d = self._affine(x, np.empty_like(x))
        with np.errstate(divide="ignore"):
            np.reciprocal(d, out=d)
        if self.backward_scale != 1:
            d *= self.backward_scale
        np.multiply(dy, d, out=dx)


@register_layer("BNLL", None)
class BNLLLayer(_Neuron):
    """Binomial normal log likelihood: y = log(1 + e^x), computed stably."""
    has_cuda = True
    THRESHOLD = 50.0
    flops_per_element = 5

    def _forward(self, x, y):
        np.logaddexp(x, 0, out=y)

    def _backward(self, x, y, dy, dx):
        e = np.minimum(x, self.THRESHOLD)
        np.exp(e, out=e)
        d = e + 1
        np.divide(e, d, out=e)
        np.multiply(dy, e, out=dx)


@register_layer("Threshold", "threshold_param")
class ThresholdLayer(_Neuron):
    """y = 1 if x > threshold else 0; has no gradient."""
    has_cuda = True
    flops_per_element = 1

    def layer_setup(self, bottom, top):
        self.threshold = float(self.param.threshold_param.threshold)

    def needs_input(self):
        return False

    def _forward(self, x, y):
        np.greater(x, self.threshold, out=y, casting="unsafe")

    def allow_force_backward(self, bottom_index):
        return False

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.config_error(
                "Threshold has no gradient, but a gradient was requested for its bottom; add "
                "'propagate_down: false' to this layer or stop gradients before it")


@register_layer("Clip", "clip_param")
class ClipLayer(_Neuron):
    """y = min(max(x, min), max); the gradient passes where min <= x <= max."""
    has_cuda = True
    flops_per_element = 2

    def layer_setup(self, bottom, top):
        p = self.param.clip_param
        for f in ("min", "max"):
            if not p.HasField(f):
                raise self.config_error(f"clip_param.{f} is required", field=f"clip_param.{f}")
        self.lo = float(p.min)
        self.hi = float(p.max)
        if self.lo > self.hi:
            raise self.config_error(f"min ({self.lo:g}) must not be greater than max "
                                    f"({self.hi:g})", field="clip_param.min")

    def _forward(self, x, y):
        np.clip(x, self.lo, self.hi, out=y)

    def _backward(self, x, y, dy, dx):
        inside = x >= self.lo
        inside &= x <= self.hi
        np.multiply(dy, inside, out=dx)


@register_layer("Swish", "swish_param")
class SwishLayer(_Neuron):
    """y = x * sigmoid(beta * x); the sigmoid is kept for backward."""
    has_cuda = True
    flops_per_element = 6

    _sig: np.ndarray | None = None

    def layer_setup(self, bottom, top):
        self.beta = float(self.param.swish_param.beta)

    def needs_input(self):
        return False

    def _forward(self, x, y):
        if self._sig is None or self._sig.shape != x.shape or self._sig.dtype != x.dtype:
            self._sig = np.empty_like(x)
        s = self._sig
        if self.beta != 1:
            np.multiply(x, self.beta, out=s)
            _sigmoid(s, s)
        else:
            _sigmoid(x, s)
        np.multiply(x, s, out=y)

    def _backward(self, x, y, dy, dx):
        # d/dx = beta*y + s*(1 - beta*y)
        s = self._sig
        by = y * self.beta
        d = 1 - by
        d *= s
        d += by
        np.multiply(dy, d, out=dx)


@register_layer("Dropout", "dropout_param")
class DropoutLayer(_Neuron):
    """TRAIN: y = x * mask / (1 - p) with mask ~ Bernoulli(1 - p) from the layer's rng;
    TEST: identity.  (With ``scale_train: false``, where the schema has that field: TRAIN
    y = x * mask, TEST y = x * (1 - p).)"""
    has_cuda = True
    flops_per_element = 1

    _mask: np.ndarray | None = None

    def layer_setup(self, bottom, top):
        p = self.param.dropout_param
        self.ratio = float(p.dropout_ratio)
        if not 0.0 <= self.ratio < 1.0:
            raise self.config_error(f"dropout_ratio must be in [0, 1), got {self.ratio:g}",
                                    field="dropout_param.dropout_ratio")
        self.scale_train = bool(getattr(p, "scale_train", True))
        # factor applied to kept units in TRAIN, and to everything in TEST
        self.train_scale = 1.0 / (1.0 - self.ratio) if self.scale_train else 1.0
        self.test_scale = 1.0 if self.scale_train else 1.0 - self.ratio

    def needs_input(self):
        return False

    def flops(self, bottom, top):
        if self.phase == TRAIN or self.test_scale != 1:
            return bottom[0].count
        return 0

    def _forward(self, x, y):
        if self.phase == TRAIN:
            keep = self.rng.random(x.shape) >= self.ratio
            mask = keep.astype(x.dtype)
            if self.train_scale != 1:
                mask *= self.train_scale
            self._mask = mask
            np.multiply(x, mask, out=y)
        elif self.test_scale != 1:
            np.multiply(x, self.test_scale, out=y)
        elif y is not x:
            np.copyto(y, x)

    def _backward(self, x, y, dy, dx):
        if self.phase == TRAIN:
            np.multiply(dy, self._mask, out=dx)
        elif self.test_scale != 1:
            np.multiply(dy, self.test_scale, out=dx)
        elif dx is not dy:
            np.copyto(dx, dy)
