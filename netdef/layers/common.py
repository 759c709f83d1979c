"""Common layers: InnerProduct, Embed, Scale, Bias."""
from __future__ import annotations

import numpy as np

from .base import Layer, canonical_axis
from .registry import register_layer


@register_layer("InnerProduct", "inner_product_param")
class InnerProductLayer(Layer):
    """y = x W^T + b over the axes from ``axis`` on; W is (N_out, K) ((K, N_out) if transpose)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.config_error("num_output must be positive",
                                    field="inner_product_param.num_output")
        self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "inner_product_param.axis")
        self.k = bottom[0].count_range(self.axis)
        self.transpose = bool(p.transpose)
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
            w = self.make_blob(shape)
            self.blobs = [w]
            self.fill(w, p.weight_filler if p.HasField("weight_filler") else None)
            if self.bias_term:
                b = self.make_blob((self.num_output,))
                self.blobs.append(b)
                self.fill(b, p.bias_filler if p.HasField("bias_filler") else None)

    def reshape(self, bottom, top):
        axis = canonical_axis(self, self.param.inner_product_param.axis, bottom[0].num_axes,
                              "inner_product_param.axis")
        k = bottom[0].count_range(axis)
        if k != self.k:
            raise self.shape_error(f"input has {k} features per item (shape "
                                   f"{list(bottom[0].shape)} from axis {axis}) but the weights "
                                   f"expect {self.k}")
        top[0].reshape(bottom[0].shape[:axis] + (self.num_output,))

    def flops(self, bottom, top):
        m = bottom[0].count_range(0, self.axis)
        return 2 * m * self.k * self.num_output + (m * self.num_output if self.bias_term else 0)

    def _w(self, arr):
        return arr if self.transpose else arr.T     # (K, N_out) view

    def forward(self, bottom, top):
        m = bottom[0].count_range(0, self.axis)
        x = bottom[0].data.reshape(m, self.k)
        y = top[0].data.reshape(m, self.num_output)
        np.matmul(x, self._w(self.blobs[0].data), out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        m = bottom[0].count_range(0, self.axis)
        dy = top[0].diff.reshape(m, self.num_output)
        if self.param_propagate_down[0]:
            x = bottom[0].data.reshape(m, self.k)
            if self.transpose:
                self.blobs[0].diff += x.T @ dy
            else:
                self.blobs[0].diff += dy.T @ x
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            w = self.blobs[0].data
            dx = dy @ (w.T if self.transpose else w)
            bottom[0].diff = dx.reshape(bottom[0].shape)


@register_layer("Embed", "embed_param")
class EmbedLayer(Layer):
    """Lookup table: top = W[index] (+ b); bottom holds integer indices (as floats)."""
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.embed_param
        self.num_output = int(p.num_output)
        self.input_dim = int(p.input_dim)
        if self.num_output <= 0:
            raise self.config_error("num_output must be positive", field="embed_param.num_output")
        if self.input_dim <= 0:
            raise self.config_error("input_dim must be positive", field="embed_param.input_dim")
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            w = self.make_blob((self.input_dim, self.num_output))
            self.blobs = [w]
            self.fill(w, p.weight_filler if p.HasField("weight_filler") else None)
            if self.bias_term:
                b = self.make_blob((self.num_output,))
                self.blobs.append(b)
                self.fill(b, p.bias_filler if p.HasField("bias_filler") else None)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def allow_force_backward(self, bottom_index):
        return False

    def _indices(self, bottom):
        idx = bottom[0].data.reshape(-1)
        ii = idx.astype(np.int64)
        if np.any(ii != idx) or np.any(ii < 0) or np.any(ii >= self.input_dim):
            bad = idx[(ii != idx) | (ii < 0) | (ii >= self.input_dim)][0]
            raise self.shape_error(f"index {bad:g} is not an integer in [0, {self.input_dim})")
        return ii

    def forward(self, bottom, top):
        ii = self._indices(bottom)
        y = self.blobs[0].data[ii]
        if self.bias_term:
            y = y + self.blobs[1].data
        top[0].data = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(-1, self.num_output)
        if self.param_propagate_down[0]:
            np.add.at(self.blobs[0].diff, self._indices(bottom), dy)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)


class _Broadcast(Layer):
    """Shared geometry of Scale and Bias: the operand covers bottom axes
    [axis, axis + num_axes) and is broadcast over the rest."""
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1
    allow_in_place = True
    pname = ""

    def _geometry(self, bottom):
        p = getattr(self.param, self.pname)
        x = bottom[0]
        if len(bottom) == 2:
            sshape = bottom[1].shape
            axis = canonical_axis(self, p.axis, x.num_axes, f"{self.pname}.axis") \
                if sshape else 0
            if p.axis < 0 and sshape:
                axis = x.num_axes + p.axis
            if x.shape[axis:axis + len(sshape)] != tuple(sshape):
                raise self.shape_error(
                    f"bottom[1] shape {list(sshape)} must match bottom[0] shape "
                    f"{list(x.shape)} from axis {axis}")
            return axis, tuple(sshape)
        num_axes = int(p.num_axes)
        if num_axes < -1:
            raise self.config_error("num_axes must be -1 (all remaining) or >= 0",
                                    field=f"{self.pname}.num_axes")
        axis = canonical_axis(self, p.axis, x.num_axes, f"{self.pname}.axis") if x.num_axes \
            else 0
        end = x.num_axes if num_axes == -1 else axis + num_axes
        if end > x.num_axes:
            raise self.config_error(f"axis {axis} + num_axes {num_axes} exceeds the bottom's "
                                    f"{x.num_axes} axes", field=f"{self.pname}.num_axes")
        return axis, tuple(x.shape[axis:end])

    def _view(self, x_shape):
        """(outer, dim, inner) of the bottom."""
        outer = int(np.prod(x_shape[:self.axis], dtype=np.int64))
        dim = int(np.prod(self.oshape, dtype=np.int64))
        inner = int(np.prod(x_shape[self.axis + len(self.oshape):], dtype=np.int64))
        return outer, dim, inner

    def reshape(self, bottom, top):
        axis, oshape = self._geometry(bottom)
        if (axis, oshape) != (self.axis, self.oshape):
            raise self.shape_error(f"operand shape changed from {list(self.oshape)} to "
                                   f"{list(oshape)}")
        top[0].reshape(bottom[0].shape)

    def flops(self, bottom, top):
        return top[0].count


@register_layer("Scale", "scale_param")
class ScaleLayer(_Broadcast):
    """y = x * s (+ b); s learned (filler default 1) or given as bottom[1]."""
    pname = "scale_param"

    def layer_setup(self, bottom, top):
        p = self.param.scale_param
        self.axis, self.oshape = self._geometry(bottom)
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            if len(bottom) == 1:
                s = self.make_blob(self.oshape)
                self.blobs.append(s)
                self.fill(s, p.filler if p.HasField("filler") else None,
                          default={"type": "constant", "value": 1.0})
            if self.bias_term:
                b = self.make_blob(self.oshape)
                self.blobs.append(b)
                self.fill(b, p.bias_filler if p.HasField("bias_filler") else None)

    def flops(self, bottom, top):
        return top[0].count * (2 if self.bias_term else 1)

    def _scale(self, bottom):
        return (bottom[1].data if len(bottom) == 2 else self.blobs[0].data).reshape(-1)

    def forward(self, bottom, top):
        x = bottom[0].data
        outer, dim, inner = self._view(x.shape)
        s = self._scale(bottom).reshape(1, dim, 1)
        if top[0] is bottom[0]:
            self._x = x.copy()
        xv = x.reshape(outer, dim, inner)
        y = top[0].data.reshape(outer, dim, inner)
        np.multiply(xv, s, out=y)
        if self.bias_term:
            y += self.blobs[-1].data.reshape(1, dim, 1)

    def backward(self, top, propagate_down, bottom):
        x = self._x if top[0] is bottom[0] else bottom[0].data
        outer, dim, inner = self._view(x.shape)
        dy = top[0].diff.reshape(outer, dim, inner)
        xv = x.reshape(outer, dim, inner)
        if self.bias_term and self.param_propagate_down[-1]:
            self.blobs[-1].diff += dy.sum(axis=(0, 2)).reshape(self.oshape)
        learned = len(bottom) == 1
        if learned and self.param_propagate_down[0]:
            self.blobs[0].diff += (dy * xv).sum(axis=(0, 2)).reshape(self.oshape)
        if not learned and propagate_down[1]:
            bottom[1].diff = (dy * xv).sum(axis=(0, 2)).reshape(bottom[1].shape)
        if propagate_down[0]:
            s = self._scale(bottom).reshape(1, dim, 1)
            bottom[0].diff = (dy * s).reshape(bottom[0].shape)


@register_layer("Bias", "bias_param")
class BiasLayer(_Broadcast):
    """y = x + b; b learned (filler default 0) or given as bottom[1]."""
    pname = "bias_param"

    def layer_setup(self, bottom, top):
        p = self.param.bias_param
        self.axis, self.oshape = self._geometry(bottom)
        if not self.blobs and len(bottom) == 1:
            b = self.make_blob(self.oshape)
            self.blobs.append(b)
            self.fill(b, p.filler if p.HasField("filler") else None)

    def _bias(self, bottom):
        return (bottom[1].data if len(bottom) == 2 else self.blobs[0].data).reshape(-1)

    def forward(self, bottom, top):
        x = bottom[0].data
        outer, dim, inner = self._view(x.shape)
        y = top[0].data.reshape(outer, dim, inner)
        np.add(x.reshape(outer, dim, inner), self._bias(bottom).reshape(1, dim, 1), out=y)

    def backward(self, top, propagate_down, bottom):
        outer, dim, inner = self._view(bottom[0].shape)
        dy = top[0].diff.reshape(outer, dim, inner)
        db = dy.sum(axis=(0, 2))
        if len(bottom) == 1:
            if self.param_propagate_down[0]:
                self.blobs[0].diff += db.reshape(self.oshape)
        elif propagate_down[1]:
            bottom[1].diff = db.reshape(bottom[1].shape)
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff = top[0].diff
