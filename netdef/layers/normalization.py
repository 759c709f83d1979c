"""Normalisation layers: LRN (across and within channels), BatchNorm (Caffe's: statistics only,
no affine), MVN."""
from __future__ import annotations

import numpy as np

from .base import Layer, TEST
from .registry import register_layer


def _window_sum(a: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Sum over a centred window of ``size`` along ``axis`` with zero padding."""
    pre = (size - 1) // 2
    pad = [(0, 0)] * a.ndim
    pad[axis] = (pre + 1, size - pre - 1)
    c = np.cumsum(np.pad(a, pad), axis=axis)
    n = a.shape[axis]
    hi = np.take(c, np.arange(size, size + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return hi - lo


@register_layer("LRN", "lrn_param")
class LRNLayer(Layer):
    """ACROSS_CHANNELS: y = x (k + alpha/n sum_window x^2)^-beta over n neighbouring channels;
    WITHIN_CHANNEL: y = x (1 + alpha/n^2 sum_window x^2)^-beta over an n x n patch."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.lrn_param
        self.size = int(p.local_size)
        if self.size % 2 == 0 or self.size < 1:
            raise self.config_error(f"local_size must be odd and positive, got {self.size}",
                                    field="lrn_param.local_size")
        self.alpha, self.beta, self.k = float(p.alpha), float(p.beta), float(p.k)
        self.across = p.norm_region == p.ACROSS_CHANNELS

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.shape_error(f"needs a 4-D bottom (N, C, H, W), got {list(bottom[0].shape)}")
        top[0].reshape(bottom[0].shape)

    def flops(self, bottom, top):
        return bottom[0].count * (2 * self.size + 4)

    def _box(self, a):
        if self.across:
            return _window_sum(a, 1, self.size)
        return _window_sum(_window_sum(a, 2, self.size), 3, self.size)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.across:
            self.scale = self.k + (self.alpha / self.size) * self._box(x * x)
        else:
            self.scale = 1 + (self.alpha / self.size ** 2) * self._box(x * x)
        top[0].data = x * self.scale ** -self.beta

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy = bottom[0].data, top[0].data, top[0].diff
        n = self.size if self.across else self.size ** 2
        inner = self._box(dy * y / self.scale)
        bottom[0].diff = dy * self.scale ** -self.beta - \
            (2 * self.alpha * self.beta / n) * x * inner


@register_layer("BatchNorm", "batch_norm_param")
class BatchNormLayer(Layer):
    """Normalise per channel with batch statistics (TRAIN) or the stored ones (TEST); blobs are
    mean, variance and the moving-average normaliser, never learned."""
    exact_num_bottom = 1
    exact_num_top = 1
    allow_in_place = True

    def layer_setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global = bool(p.use_global_stats) if p.HasField("use_global_stats") \
            else self.phase == TEST
        self.maf = float(p.moving_average_fraction)
        self.eps = float(p.eps)
        for j, spec in enumerate(self.param.param):
            if spec.lr_mult != 0:
                raise self.config_error("BatchNorm's blobs are statistics, not parameters: "
                                        "set lr_mult: 0 or drop the param entries",
                                        field=f"param[{j}].lr_mult")
        if bottom[0].num_axes < 2:
            raise self.shape_error(f"needs a bottom with a channel axis, got "
                                   f"{list(bottom[0].shape)}")
        c = bottom[0].shape[1]
        self.channels = c
        if not self.blobs:
            self.blobs = [self.make_blob((c,)), self.make_blob((c,)), self.make_blob((1,))]
            if self.init_params:
                for b in self.blobs:
                    b.data = np.zeros(b.shape)
        self.param_propagate_down = [False, False, False]

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2 or bottom[0].shape[1] != self.channels:
            raise self.shape_error(f"bottom {list(bottom[0].shape)} does not have the "
                                   f"{self.channels} channels the layer was set up for")
        top[0].reshape(bottom[0].shape)

    def flops(self, bottom, top):
        return bottom[0].count * (2 if self.use_global else 6)

    def _axes(self, x):
        return (0,) + tuple(range(2, x.ndim))

    def _bshape(self, x):
        return (1, self.channels) + (1,) * (x.ndim - 2)

    def forward(self, bottom, top):
        x = bottom[0].data
        axes, bs = self._axes(x), self._bshape(x)
        if self.use_global:
            sf = float(self.blobs[2].data[0])
            f = 0.0 if sf == 0 else 1.0 / sf
            mean = self.blobs[0].data * f
            var = self.blobs[1].data * f
        else:
            mean = x.mean(axis=axes, dtype=np.float64)
            var = ((x - mean.reshape(bs)) ** 2).mean(axis=axes, dtype=np.float64)
            m = x.size // self.channels
            self.blobs[2].data = self.blobs[2].data * self.maf + 1
            self.blobs[0].data = self.maf * self.blobs[0].data + mean
            corr = m / (m - 1) if m > 1 else 1.0
            self.blobs[1].data = self.maf * self.blobs[1].data + corr * var
        self.inv_std = (1.0 / np.sqrt(np.asarray(var, np.float64) + self.eps)).astype(x.dtype)
        top[0].data = (x - np.asarray(mean, x.dtype).reshape(bs)) * self.inv_std.reshape(bs)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y, dy = top[0].data, top[0].diff
        bs = self._bshape(y)
        inv = self.inv_std.reshape(bs)
        if self.use_global:
            bottom[0].diff = dy * inv
            return
        axes = self._axes(y)
        g = dy - dy.mean(axis=axes, keepdims=True) - \
            y * (dy * y).mean(axis=axes, keepdims=True)
        bottom[0].diff = g * inv


@register_layer("MVN", "mvn_param")
class MVNLayer(Layer):
    """Subtract the mean (and divide by sqrt(variance) + eps) per channel, or per item
    across channels."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2:
            raise self.shape_error(f"needs at least 2 axes, got {list(bottom[0].shape)}")
        top[0].reshape(bottom[0].shape)

    def flops(self, bottom, top):
        return 6 * bottom[0].count

    def _rows(self, a):
        p = self.param.mvn_param
        n = a.shape[0]
        return a.reshape(n, -1) if p.across_channels else a.reshape(n * a.shape[1], -1)

    def forward(self, bottom, top):
        p = self.param.mvn_param
        x = self._rows(bottom[0].data)
        c = x - x.mean(axis=1, keepdims=True)
        if p.normalize_variance:
            self.std = np.sqrt((c * c).mean(axis=1, keepdims=True)) + p.eps
            c = c / self.std
        top[0].data = c.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.param.mvn_param
        dy = self._rows(top[0].diff)
        if p.normalize_variance:
            y = self._rows(top[0].data)
            g = (dy - dy.mean(axis=1, keepdims=True) -
                 y * (dy * y).mean(axis=1, keepdims=True)) / self.std
        else:
            g = dy - dy.mean(axis=1, keepdims=True)
        bottom[0].diff = g.reshape(bottom[0].shape)
