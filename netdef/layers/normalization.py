"""Normalisation layers: LRN (across and within channels), BatchNorm (Caffe's: statistics only,
no affine), MVN."""
from __future__ import annotations

import weakref

import numpy as np

from ..backend.cpu import normalization as K
from .base import TRAIN, TEST, Layer
from .registry import register_layer


@register_layer("LRN", "lrn_param")
class LRNLayer(Layer):
    """Local response normalisation of an (N, C, H, W) bottom.

    ACROSS_CHANNELS: ``y = x * (k + alpha/n * sum x^2)^-beta`` over the n channels centred on
    each one (missing channels count as zero).
    WITHIN_CHANNEL (Caffe builds it from square -> AVE pooling (kernel n, stride 1, pad
    (n-1)/2) -> power -> product): ``y = x * (1 + alpha * avg x^2)^-beta``, where the average
    sums the n x n patch clipped to the image and always divides by n^2 (Caffe's pooling counts
    the padded cells; with stride 1 and this pad no window overhangs the padding), and k is
    ignored."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1
    #: the scale (k + alpha/n sum x^2) is kept for backward; a frozen predictor (never a
    #: backward) sets it False on its LRN layers
    keep_scale = True

    def layer_setup(self, bottom, top):
        p = self.param.lrn_param
        self.size = int(p.local_size)
        if self.size < 1 or self.size % 2 == 0:
            hint = f"{self.size - 1} or {self.size + 1}" if self.size > 1 else "e.g. 5"
            raise self.config_error(
                f"local_size must be odd (the window is centred on each element), got "
                f"{self.size}: use {hint}", field="lrn_param.local_size")
        self.alpha = float(p.alpha)
        self.beta = float(p.beta)
        self.k = float(p.k)
        self.across = p.norm_region == p.ACROSS_CHANNELS
        self._scale = None

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.shape_error(f"needs a 4-axis bottom (num, channels, height, width), got "
                                   f"shape {list(bottom[0].shape)}")
        top[0].reshape(bottom[0].shape)

    def flops(self, bottom, top):
        window = self.size if self.across else 2 * self.size   # separable patch sum
        # square, window adds, scale (mul+add), power, product
        return bottom[0].count * (window + 5)

    def forward(self, bottom, top):
        x = bottom[0].data
        n, c, h, w = x.shape
        scale = self._scale
        if self.across and not self.keep_scale:
            scale = np.empty((0, 0, 0), x.dtype)    # no backward: the kernel skips it
        elif scale is None or scale.shape != x.shape or scale.dtype != x.dtype:
            scale = np.empty_like(x)            # kept between forwards (no page faults)
        y = top[0].data
        if self.across:
            K.lrn_across_forward(x.reshape(n, c, h * w), self.size, self.alpha / self.size,
                                 self.k, self.beta,
                                 scale.reshape(n, c, h * w) if scale.size else scale,
                                 y.reshape(n, c, h * w))
        else:
            sq = x * x
            K.box_sum_2d(sq.reshape(n * c, h, w), (self.size - 1) // 2,
                         scale.reshape(n * c, h, w))
            scale /= self.size * self.size         # the pooling average (divisor n^2)
            scale *= self.alpha
            scale += 1.0
            np.multiply(x, scale ** -self.beta, out=y)
        self._scale = scale

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dy, scale = bottom[0].data, top[0].diff, self._scale
        n, c, h, w = x.shape
        dx = bottom[0].diff
        if self.across:
            K.lrn_across_backward(x.reshape(n, c, h * w), dy.reshape(n, c, h * w),
                                  scale.reshape(n, c, h * w), self.size,
                                  2.0 * self.alpha * self.beta / self.size, self.beta,
                                  dx.reshape(n, c, h * w))
            return
        pw = scale ** -self.beta
        ratio = dy * x * pw / scale
        inner = np.empty_like(ratio)
        K.box_sum_2d(ratio.reshape(n * c, h, w), (self.size - 1) // 2,
                     inner.reshape(n * c, h, w))
        coef = 2.0 * self.alpha * self.beta / (self.size * self.size)
        dx[...] = dy * pw - coef * x * inner


#: data pointer of a layer's output -> an array a layer keeps that holds the same values
#: (BatchNorm's normalised copy); weak values, so a dead layer's buffer is dropped
_OUTPUT_COPIES: "weakref.WeakValueDictionary[int, np.ndarray]" = weakref.WeakValueDictionary()


def register_output_copy(out: np.ndarray, copy: np.ndarray) -> None:
    """Record that ``copy`` (kept by its layer until its next forward) equals ``out`` now."""
    _OUTPUT_COPIES[out.ctypes.data] = copy


def output_copy(x: np.ndarray):
    """A kept array equal to ``x`` (checked element by element), or None: an in-place layer
    that must keep its input (Scale after BatchNorm) can reuse it instead of copying."""
    saved = _OUTPUT_COPIES.get(x.ctypes.data)
    if saved is None or saved.size != x.size or saved.dtype != x.dtype \
            or np.shares_memory(saved, x):
        return None
    saved = saved.reshape(x.shape)
    return saved if np.array_equal(saved, x) else None


@register_layer("BatchNorm", "batch_norm_param")
class BatchNormLayer(Layer):
    """Normalise every channel (axis 1; all other axes pooled) to zero mean and unit variance.

    Blobs (never learned): [0] mean accumulator (C,), [1] variance accumulator (C,),
    [2] moving-average normaliser (1,).  With batch statistics (``use_global_stats`` false;
    the default in TRAIN) the batch mean and biased variance normalise the data, and in TRAIN
    the accumulators are updated: ``s = maf*s + 1``, ``mean_acc = maf*mean_acc + mean``,
    ``var_acc = maf*var_acc + m/(m-1) * var`` (m = elements per channel).  With global
    statistics (default in TEST) ``mean = mean_acc/s`` and ``var = var_acc/s`` (0 when s == 0).
    Output ``(x - mean) / sqrt(var + eps)``."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1
    allow_in_place = True

    def layer_setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") \
            else self.phase == TEST
        self.maf = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        if self.eps < 0:
            raise self.config_error(f"eps must not be negative, got {self.eps:g}",
                                    field="batch_norm_param.eps")
        for j, spec in enumerate(self.param.param):
            if spec.lr_mult != 0:
                raise self.config_error(
                    "BatchNorm's blobs are running statistics, not learnable parameters: set "
                    "lr_mult: 0 or drop the param entries", field=f"param[{j}].lr_mult")
        if bottom[0].num_axes == 0:
            raise self.shape_error("needs a bottom with at least one axis (num), got a scalar")
        self.channels = 1 if bottom[0].num_axes == 1 else bottom[0].shape[1]
        if not self.blobs:
            c = self.channels
            self.blobs = [self.make_blob((c,)), self.make_blob((c,)), self.make_blob((1,))]
            for b in self.blobs:
                self.fill(b, None, default={"type": "constant", "value": 0.0})
        self.param_propagate_down = [False] * 3
        self._x_norm = None
        self._std = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        c = 1 if len(shape) == 1 else (shape[1] if shape else -1)
        if c != self.channels:
            raise self.shape_error(f"bottom {list(shape)} has {c} channels (axis 1) but the "
                                   f"layer was set up for {self.channels}")
        top[0].reshape(shape)

    def flops(self, bottom, top):
        # batch statistics: mean (1), variance (3), normalise (2); global: normalise only
        return bottom[0].count * (2 if self.use_global else 6)

    def _view(self, a):
        n = a.shape[0]
        c = self.channels
        s = a.size // (n * c) if n * c else 0
        return a.reshape(n, c, s)

    def forward(self, bottom, top):
        dt = bottom[0].dtype
        x = self._view(bottom[0].data)
        if self.use_global:
            sf = float(self.blobs[2].data.reshape(-1)[0])
            f = 0.0 if sf == 0 else 1.0 / sf
            mean = (self.blobs[0].data * f).astype(dt)
            var = (self.blobs[1].data * f).astype(dt)
        else:
            mean64 = np.empty(x.shape[1], np.float64)
            var64 = np.empty(x.shape[1], np.float64)
            K.batch_norm_stats(x, mean64, var64)
            if self.phase == TRAIN:
                m = x.shape[0] * x.shape[2]
                corr = m / (m - 1) if m > 1 else 1.0
                b0, b1, b2 = (b.data for b in self.blobs)
                b2[...] = b2 * self.maf + 1
                b0[...] = self.maf * b0 + mean64
                b1[...] = self.maf * b1 + corr * var64
            mean = mean64.astype(dt)
            var = var64.astype(dt)
        std = np.sqrt(var + np.asarray(self.eps, dt))
        self._std = std
        if self.use_global:
            self._x_norm = None
            xn = np.empty((0, 1, 1), dt)
        else:       # kept apart from top: later in-place layers may clobber it
            if self._x_norm is None or self._x_norm.shape != x.shape or \
                    self._x_norm.dtype != dt:
                self._x_norm = np.empty(x.shape, dt)
            xn = self._x_norm
        K.batch_norm_apply(x, mean.astype(dt), std, self._view(top[0].data), xn)
        if self._x_norm is not None:
            register_output_copy(top[0].data, self._x_norm)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = self._view(top[0].diff)
        dx = self._view(bottom[0].diff)
        if self.use_global:
            np.divide(dy, self._std[None, :, None], out=dx)
        else:
            K.batch_norm_backward(dy, self._x_norm, self._std, dx)


@register_layer("MVN", "mvn_param")
class MVNLayer(Layer):
    """Mean-variance normalisation per (item, channel), or per item with across_channels:
    ``y = x - mean`` and, with normalize_variance (default), ``y = (x - mean) / (sqrt(var) +
    eps)`` with the biased variance (eps added to the standard deviation, as Caffe)."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.mvn_param
        self.normalize_variance = bool(p.normalize_variance)
        self.across = bool(p.across_channels)
        self.eps = float(p.eps)
        if self.eps < 0:
            raise self.config_error(f"eps must not be negative, got {self.eps:g}",
                                    field="mvn_param.eps")
        self._mean = self._sigma = None

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 1:
            raise self.shape_error("needs a bottom with at least one axis (num), got a scalar")
        top[0].reshape(bottom[0].shape)

    def flops(self, bottom, top):
        return bottom[0].count * (5 if self.normalize_variance else 2)

    def _rows(self, a):
        n = a.shape[0]
        rows = n if self.across or a.ndim < 2 else n * a.shape[1]
        return a.reshape(rows, a.size // rows if rows else 0)

    def forward(self, bottom, top):
        x = self._rows(bottom[0].data)
        mean = x.mean(axis=1, keepdims=True, dtype=np.float64)
        y = x - mean
        if self.normalize_variance:
            sigma = np.sqrt((y * y).mean(axis=1, keepdims=True))
            y /= sigma + self.eps
            self._sigma = sigma
        self._mean = mean
        self._rows(top[0].data)[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = self._rows(top[0].diff)
        mdy = dy.mean(axis=1, keepdims=True, dtype=np.float64)
        if not self.normalize_variance:
            self._rows(bottom[0].diff)[...] = dy - mdy
            return
        # recompute y from the bottom (the top may have been changed by a later in-place layer)
        d = self._sigma + self.eps
        y = (self._rows(bottom[0].data) - self._mean) / d
        mdyy = np.einsum("rd,rd->r", dy, y)[:, None] / max(dy.shape[1], 1)
        with np.errstate(divide="ignore"):
            inv_sigma = np.where(self._sigma > 0, 1.0 / self._sigma, 0.0)
        # exact gradient of (x - mean) / (sigma + eps): the eps shows in the first term only
        self._rows(bottom[0].diff)[...] = (dy - mdy) / d - y * (mdyy * inv_sigma)
