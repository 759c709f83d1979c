"""Vision layers: Convolution, Deconvolution, Im2col, Pooling (2-D, NCHW)."""
from __future__ import annotations

import math

import numpy as np

from .base import Layer
from .registry import register_layer


def _kernel_backend():
    from ..backend.cpu import vision as K
    return K


def conv_geometry(layer, cp):
    """(kh, kw, ph, pw, sh, sw, dh, dw) from a ConvolutionParameter, with Caffe's rules."""
    def pair(rep, h_field, w_field, name, default):
        has_hw = cp.HasField(h_field) or cp.HasField(w_field)
        if has_hw:
            if len(rep):
                raise layer.config_error(f"give either {name} or {h_field}/{w_field}, not both",
                                         field=f"convolution_param.{h_field}")
            if not (cp.HasField(h_field) and cp.HasField(w_field)):
                raise layer.config_error(f"{h_field} and {w_field} go together",
                                         field=f"convolution_param.{h_field}")
            return int(getattr(cp, h_field)), int(getattr(cp, w_field))
        vals = list(rep)
        if not vals:
            return default, default
        if len(vals) == 1:
            return int(vals[0]), int(vals[0])
        if len(vals) == 2:
            return int(vals[0]), int(vals[1])
        raise layer.config_error(f"{name} has {len(vals)} values; 2-D convolution takes 1 or 2",
                                 field=f"convolution_param.{name}")

    if not len(cp.kernel_size) and not cp.HasField("kernel_h") and not cp.HasField("kernel_w"):
        raise layer.config_error("kernel_size (or kernel_h and kernel_w) is required",
                                 field="convolution_param")
    kh, kw = pair(cp.kernel_size, "kernel_h", "kernel_w", "kernel_size", 0)
    ph, pw = pair(cp.pad, "pad_h", "pad_w", "pad", 0)
    sh, sw = pair(cp.stride, "stride_h", "stride_w", "stride", 1)
    dil = list(cp.dilation)
    if len(dil) > 2:
        raise layer.config_error("dilation takes 1 or 2 values", field="convolution_param.dilation")
    dh, dw = (1, 1) if not dil else (dil[0], dil[0]) if len(dil) == 1 else (dil[0], dil[1])
    if kh <= 0 or kw <= 0:
        raise layer.config_error("kernel size must be positive", field="convolution_param.kernel_size")
    if sh <= 0 or sw <= 0:
        raise layer.config_error("stride must be positive", field="convolution_param.stride")
    if dh <= 0 or dw <= 0:
        raise layer.config_error("dilation must be positive", field="convolution_param.dilation")
    return int(kh), int(kw), int(ph), int(pw), int(sh), int(sw), int(dh), int(dw)


class _ConvBase(Layer):
    exact_num_bottom = 1
    exact_num_top = 1
    deconv = False

    def layer_setup(self, bottom, top):
        cp = self.param.convolution_param
        self.geom = conv_geometry(self, cp)
        if cp.axis not in (1, -3):
            raise self.config_error("only axis 1 (NCHW) is supported", field="convolution_param.axis")
        if bottom[0].num_axes != 4:
            raise self.shape_error(f"needs a 4-D bottom (N, C, H, W), got {list(bottom[0].shape)}")
        self.num_output = int(cp.num_output)
        if self.num_output <= 0:
            raise self.config_error("num_output must be positive", field="convolution_param.num_output")
        self.group = int(cp.group)
        c = bottom[0].shape[1]
        self.channels = c
        if self.group <= 0:
            raise self.config_error("group must be positive", field="convolution_param.group")
        if c % self.group:
            raise self.config_error(f"group {self.group} does not divide the {c} input channels",
                                    field="convolution_param.group")
        if self.num_output % self.group:
            raise self.config_error(f"group {self.group} does not divide num_output "
                                    f"{self.num_output}", field="convolution_param.group")
        kh, kw = self.geom[0], self.geom[1]
        if self.deconv:
            wshape = (c, self.num_output // self.group, kh, kw)
        else:
            wshape = (self.num_output, c // self.group, kh, kw)
        self.bias_term = bool(cp.bias_term)
        if not self.blobs:
            w = self.make_blob(wshape)
            self.blobs = [w]
            self.fill(w, cp.weight_filler if cp.HasField("weight_filler") else None)
            if self.bias_term:
                b = self.make_blob((self.num_output,))
                self.blobs.append(b)
                self.fill(b, cp.bias_filler if cp.HasField("bias_filler") else None)

    def out_size(self, h, w):
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        ekh, ekw = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if self.deconv:
            return sh * (h - 1) + ekh - 2 * ph, sw * (w - 1) + ekw - 2 * pw
        return (h + 2 * ph - ekh) // sh + 1, (w + 2 * pw - ekw) // sw + 1

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].shape if bottom[0].num_axes == 4 else (None,) * 4
        if c is None:
            raise self.shape_error(f"needs a 4-D bottom (N, C, H, W), got {list(bottom[0].shape)}")
        if c != self.channels:
            raise self.shape_error(f"bottom has {c} channels but the layer was set up for "
                                   f"{self.channels}")
        oh, ow = self.out_size(h, w)
        if oh <= 0 or ow <= 0:
            raise self.shape_error(f"output would be {oh}x{ow} for a {h}x{w} input: the "
                                   f"(dilated) kernel is larger than the padded input")
        top[0].reshape((n, self.num_output, oh, ow))

    def flops(self, bottom, top):
        kh, kw = self.geom[0], self.geom[1]
        if self.deconv:
            n, c, h, w = bottom[0].shape
            macs = n * c * h * w * (self.num_output // self.group) * kh * kw
        else:
            n, o, oh, ow = top[0].shape
            macs = n * o * oh * ow * (self.channels // self.group) * kh * kw
        return 2 * macs + (top[0].count if self.bias_term else 0)

    # -- helpers -------------------------------------------------------------------------
    def _buffer(self, name, shape, dtype):
        """A scratch array kept between calls (no page faults on every iteration)."""
        buf = getattr(self, name, None)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype=dtype)
            setattr(self, name, buf)
        return buf

    def _im2col(self, x, oh, ow):
        K = _kernel_backend()
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        n, c = x.shape[:2]
        col = self._buffer("_col", (n, c * kh * kw, oh * ow), x.dtype)
        K.im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col)
        return col

    def _col2im(self, col, shape, oh, ow, out=None):
        K = _kernel_backend()
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        x = np.empty(shape, dtype=col.dtype) if out is None else out
        K.col2im(np.ascontiguousarray(col), kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, x)
        return x

    def _is_pointwise(self):
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        return kh == kw == 1 and ph == pw == 0 and sh == sw == 1

    def _is_depthwise(self):
        return not self.deconv and self.group == self.channels and self.group > 1


@register_layer("Convolution", "convolution_param")
class ConvolutionLayer(_ConvBase):
    """y = W * x + b; weight (num_output, C/group, kh, kw).  Paths: 1x1 as a batched GEMM,
    depthwise (group == channels) as a direct kernel, otherwise im2col + GEMM per group."""

    def forward(self, bottom, top):
        x = bottom[0].data
        y = top[0].data
        wt = self.blobs[0].data
        n, c, h, w = x.shape
        o, oh, ow = y.shape[1:]
        g = self.group
        if self._is_depthwise():
            K = _kernel_backend()
            K.depthwise_forward(x, wt, *self.geom, o // c, y)
        elif self._is_pointwise() and g == 1:
            np.matmul(wt.reshape(o, c), x.reshape(n, c, h * w), out=y.reshape(n, o, oh * ow))
        else:
            col = x.reshape(n, c, h * w) if self._is_pointwise() else self._im2col(x, oh, ow)
            self._col_valid = not self._is_pointwise()
            kk = col.shape[1] // g
            og = o // g
            yv = y.reshape(n, o, oh * ow)
            wv = wt.reshape(o, -1)
            for gi in range(g):
                yv[:, gi * og:(gi + 1) * og] = np.matmul(wv[gi * og:(gi + 1) * og],
                                                         col[:, gi * kk:(gi + 1) * kk])
        if self.bias_term:
            y += self.blobs[1].data.reshape(1, o, 1, 1)

    def backward(self, top, propagate_down, bottom):
        x = bottom[0].data
        dy = top[0].diff
        wt = self.blobs[0].data
        n, c, h, w = x.shape
        o, oh, ow = dy.shape[1:]
        g = self.group
        do_w = self.param_propagate_down[0]
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3), dtype=np.float64).astype(dy.dtype)
        if self._is_depthwise():
            K = _kernel_backend()
            mult = o // c
            if do_w:
                K.depthwise_backward_weight(x, dy, *self.geom, mult, self.blobs[0].diff)
            if propagate_down[0]:
                dx = np.empty_like(x)
                K.depthwise_backward_data(dy, wt, *self.geom, mult, dx)
                bottom[0].diff = dx
            return
        pointwise = self._is_pointwise()
        dyv = dy.reshape(n, o, oh * ow)
        og = o // g
        if do_w:
            if pointwise:
                col = x.reshape(n, c, h * w)
            elif getattr(self, "_col_valid", False):
                col = self._col                       # im2col of this input, from forward
            else:
                col = self._im2col(x, oh, ow)
            kk = col.shape[1] // g
            dw = self.blobs[0].diff.reshape(o, -1)
            for gi in range(g):
                dw[gi * og:(gi + 1) * og] += np.matmul(
                    dyv[:, gi * og:(gi + 1) * og],
                    col[:, gi * kk:(gi + 1) * kk].transpose(0, 2, 1)).sum(axis=0)
        if propagate_down[0]:
            wv = wt.reshape(o, -1)
            kk = wv.shape[1]
            dcol = self._buffer("_dcol", (n, kk * g, oh * ow), x.dtype)
            for gi in range(g):
                np.matmul(wv[gi * og:(gi + 1) * og].T, dyv[:, gi * og:(gi + 1) * og],
                          out=dcol[:, gi * kk:(gi + 1) * kk])
            if pointwise:
                bottom[0].diff = dcol.reshape(x.shape)
            else:
                self._col2im(dcol, x.shape, oh, ow, out=bottom[0].diff)


@register_layer("Deconvolution", "convolution_param")
class DeconvolutionLayer(_ConvBase):
    """Transposed convolution; weight (C, num_output/group, kh, kw);
    out = stride*(in-1) + dilation*(k-1) + 1 - 2*pad."""
    deconv = True

    def forward(self, bottom, top):
        x = bottom[0].data
        y = top[0].data
        wt = self.blobs[0].data
        n, c, h, w = x.shape
        o, oh, ow = y.shape[1:]
        g = self.group
        cg, og = c // g, o // g
        wv = wt.reshape(c, -1)                       # (C, O/g*kk)
        kk = wv.shape[1]
        xv = x.reshape(n, c, h * w)
        col = np.empty((n, kk * g, h * w), dtype=x.dtype)
        for gi in range(g):
            col[:, gi * kk:(gi + 1) * kk] = np.matmul(wv[gi * cg:(gi + 1) * cg].T,
                                                      xv[:, gi * cg:(gi + 1) * cg])
        # the output plays the image, the input grid the columns
        top[0].data = self._col2im(col, (n, o, oh, ow), h, w)
        if self.bias_term:
            top[0].data += self.blobs[1].data.reshape(1, o, 1, 1)
        del og

    def backward(self, top, propagate_down, bottom):
        x = bottom[0].data
        dy = top[0].diff
        wt = self.blobs[0].data
        n, c, h, w = x.shape
        o = dy.shape[1]
        g = self.group
        cg = c // g
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=(0, 2, 3), dtype=np.float64).astype(dy.dtype)
        col = self._im2col(dy, h, w)                 # (N, O*kk, h*w)
        kk = col.shape[1] // g
        xv = x.reshape(n, c, h * w)
        if self.param_propagate_down[0]:
            dw = self.blobs[0].diff.reshape(c, -1)
            for gi in range(g):
                dw[gi * cg:(gi + 1) * cg] += np.tensordot(
                    xv[:, gi * cg:(gi + 1) * cg], col[:, gi * kk:(gi + 1) * kk],
                    axes=([0, 2], [0, 2]))
        if propagate_down[0]:
            wv = wt.reshape(c, -1)
            dx = np.empty((n, c, h * w), dtype=x.dtype)
            for gi in range(g):
                dx[:, gi * cg:(gi + 1) * cg] = np.matmul(wv[gi * cg:(gi + 1) * cg],
                                                         col[:, gi * kk:(gi + 1) * kk])
            bottom[0].diff = dx.reshape(x.shape)
        del o


@register_layer("Im2col", "convolution_param")
class Im2colLayer(Layer):
    """Exposes im2col: top (N, C*kh*kw, out_h, out_w)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        self.geom = conv_geometry(self, self.param.convolution_param)

    def _out(self, h, w):
        kh, kw, ph, pw, sh, sw, dh, dw = self.geom
        return ((h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1,
                (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1)

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.shape_error(f"needs a 4-D bottom, got {list(bottom[0].shape)}")
        n, c, h, w = bottom[0].shape
        oh, ow = self._out(h, w)
        if oh <= 0 or ow <= 0:
            raise self.shape_error(f"output would be {oh}x{ow} for a {h}x{w} input")
        top[0].reshape((n, c * self.geom[0] * self.geom[1], oh, ow))

    def forward(self, bottom, top):
        K = _kernel_backend()
        n, kc, oh, ow = top[0].shape
        col = np.empty((n, kc, oh * ow), dtype=bottom[0].dtype)
        K.im2col(bottom[0].data, *self.geom, oh, ow, col)
        top[0].data = col.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        K = _kernel_backend()
        n, kc, oh, ow = top[0].shape
        dx = np.empty(bottom[0].shape, dtype=bottom[0].dtype)
        K.col2im(np.ascontiguousarray(top[0].diff.reshape(n, kc, oh * ow)), *self.geom, oh, ow,
                 dx)
        bottom[0].diff = dx


@register_layer("Pooling", "pooling_param")
class PoolingLayer(Layer):
    """MAX / AVE pooling with Caffe's output size (ceil by default, round_mode FLOOR) and its
    rule that the last window starts inside the (unpadded) input; optional 2nd top = argmax."""
    exact_num_bottom = 1
    min_top = 1
    max_top = 2

    def layer_setup(self, bottom, top):
        pp = self.param.pooling_param
        self.method = pp.pool
        if self.method == pp.STOCHASTIC:
            raise self.config_error("STOCHASTIC pooling is not supported yet",
                                    field="pooling_param.pool")
        if len(top) == 2 and self.method != pp.MAX:
            raise self.config_error("a second top (the argmax mask) needs pool: MAX",
                                    field="pooling_param.pool")
        self.global_pooling = bool(pp.global_pooling)
        has_k = pp.HasField("kernel_size") or pp.HasField("kernel_h") or pp.HasField("kernel_w")
        if self.global_pooling:
            if has_k:
                raise self.config_error("global_pooling sets the kernel to the whole input: "
                                        "remove kernel_size", field="pooling_param.kernel_size")
        elif not has_k:
            raise self.config_error("kernel_size (or kernel_h and kernel_w) is required",
                                    field="pooling_param")
        if pp.HasField("kernel_size") and (pp.HasField("kernel_h") or pp.HasField("kernel_w")):
            raise self.config_error("give either kernel_size or kernel_h/kernel_w",
                                    field="pooling_param.kernel_size")
        if pp.HasField("kernel_h") != pp.HasField("kernel_w"):
            raise self.config_error("kernel_h and kernel_w go together", field="pooling_param.kernel_h")
        self.kh = pp.kernel_h if pp.HasField("kernel_h") else pp.kernel_size
        self.kw = pp.kernel_w if pp.HasField("kernel_w") else pp.kernel_size
        self.ph = pp.pad_h if pp.HasField("pad_h") else pp.pad
        self.pw = pp.pad_w if pp.HasField("pad_w") else pp.pad
        self.sh = pp.stride_h if pp.HasField("stride_h") else pp.stride
        self.sw = pp.stride_w if pp.HasField("stride_w") else pp.stride
        if self.global_pooling:
            if self.ph or self.pw or self.sh != 1 or self.sw != 1:
                raise self.config_error("global pooling needs pad 0 and stride 1",
                                        field="pooling_param.pad" if (self.ph or self.pw)
                                        else "pooling_param.stride")
        else:
            if self.kh <= 0 or self.kw <= 0:
                raise self.config_error("kernel size must be positive",
                                        field="pooling_param.kernel_size")
        if self.sh <= 0 or self.sw <= 0:
            raise self.config_error("stride must be positive", field="pooling_param.stride")
        if not self.global_pooling and (self.ph or self.pw):
            if self.ph >= self.kh or self.pw >= self.kw:
                raise self.config_error(
                    f"pad ({max(self.ph, self.pw)}) must be smaller than the kernel "
                    f"({min(self.kh, self.kw)})", field="pooling_param.pad")
        self.ceil = pp.round_mode == pp.CEIL

    def _size(self, h, k, p, s):
        span = h + 2 * p - k
        out = (-(-span // s) if self.ceil else span // s) + 1
        if p and (out - 1) * s >= h + p:
            out -= 1
        return out

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.shape_error(f"needs a 4-D bottom (N, C, H, W), got {list(bottom[0].shape)}")
        n, c, h, w = bottom[0].shape
        if self.global_pooling:
            self.kh, self.kw = h, w
        if self.kh > h + 2 * self.ph or self.kw > w + 2 * self.pw:
            raise self.shape_error(f"kernel {self.kh}x{self.kw} is larger than the padded "
                                   f"{h}x{w} input")
        oh = self._size(h, self.kh, self.ph, self.sh)
        ow = self._size(w, self.kw, self.pw, self.sw)
        for t in top:
            t.reshape((n, c, oh, ow))

    def flops(self, bottom, top):
        return top[0].count * self.kh * self.kw

    def _args(self):
        return self.kh, self.kw, self.ph, self.pw, self.sh, self.sw

    def forward(self, bottom, top):
        K = _kernel_backend()
        x = bottom[0].data
        y = top[0].data
        if self.method == self.param.pooling_param.MAX:
            self.mask = np.empty(y.shape, dtype=np.int64)
            K.max_pool_forward(x, *self._args(), y, self.mask)
            if len(top) == 2:
                top[1].data = self.mask.astype(top[1].dtype)
        else:
            K.ave_pool_forward(x, *self._args(), y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        K = _kernel_backend()
        dx = np.empty(bottom[0].shape, dtype=bottom[0].dtype)
        if self.method == self.param.pooling_param.MAX:
            K.max_pool_backward(top[0].diff, self.mask, dx)
        else:
            K.ave_pool_backward(top[0].diff, *self._args(), dx)
        bottom[0].diff = dx



