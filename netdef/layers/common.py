"""Common layers: InnerProduct, Embed, Scale, Bias."""
from __future__ import annotations

import numpy as np

from ..backend.cpu import common as K
from .base import Layer, canonical_axis
from .registry import register_layer


def _gemm_kernels(a):
    """netdef.backend.cpu.gemm when its BLAS-from-Numba kernels can run on ``a``'s dtype."""
    if a.dtype not in (np.float32, np.float64):
        return None
    from ..backend.cpu import gemm as G
    return G if G.AVAILABLE else None


#: below this many multiply-adds a matrix product runs on one thread
PARALLEL_MIN_MACS = 1 << 18


def _threads(m: int, k: int, n: int) -> int:
    import numba
    return numba.get_num_threads() if m * k * n >= PARALLEL_MIN_MACS else 1


def _fast_elementwise(a, b) -> bool:
    """Numba kernels for a per-channel broadcast: same float dtype, sizes worth a launch."""
    return a.dtype == b.dtype and a.dtype in (np.float32, np.float64) and a.size >= 4096


def _filler(p, name: str):
    """The FillerParameter ``name`` of message ``p``, or None when the definition omits it."""
    return getattr(p, name) if p.HasField(name) else None


@register_layer("InnerProduct", "inner_product_param")
class InnerProductLayer(Layer):
    """``y = x W^T + b`` with the bottom flattened to (M, K) at ``axis`` (M = product of the
    axes before it, K = product of the axes from it); top shape ``bottom.shape[:axis] +
    (num_output,)``.  W is (num_output, K), or (K, num_output) with ``transpose``."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.config_error("num_output must be set to a positive number of outputs",
                                    field="inner_product_param.num_output")
        self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "inner_product_param.axis")
        self.k = bottom[0].count_range(self.axis)
        self.transpose = bool(p.transpose)
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
            w = self.make_blob(shape)
            self.blobs = [w]
            self.fill(w, _filler(p, "weight_filler"))
            if self.bias_term:
                b = self.make_blob((self.num_output,))
                self.blobs.append(b)
                self.fill(b, _filler(p, "bias_filler"))

    def reshape(self, bottom, top):
        axis = canonical_axis(self, self.param.inner_product_param.axis, bottom[0].num_axes,
                              "inner_product_param.axis")
        k = bottom[0].count_range(axis)
        if k != self.k:
            raise self.shape_error(
                f"bottom {list(bottom[0].shape)} has {k} inputs per item (axes from {axis}) but "
                f"the weights {list(self.blobs[0].shape)} expect {self.k}; an InnerProduct "
                f"cannot change its input size after setup")
        self.axis = axis
        top[0].reshape(bottom[0].shape[:axis] + (self.num_output,))

    def flops(self, bottom, top):
        m = bottom[0].count_range(0, self.axis)
        return 2 * m * self.k * self.num_output + (m * self.num_output if self.bias_term else 0)

    def _wt(self, w):
        """W as a (K, num_output) matrix (a view)."""
        return w if self.transpose else w.T

    def forward(self, bottom, top):
        m = bottom[0].count_range(0, self.axis)
        x = bottom[0].data.reshape(m, self.k)
        y = top[0].data.reshape(m, self.num_output)
        w = self.blobs[0].data
        G = _gemm_kernels(x)
        if G is not None:
            with G.single_threaded_blas():
                G.matmul(x, False, w, not self.transpose, 0.0, y, _threads(m, self.k,
                                                                         self.num_output))
        else:
            np.matmul(x, self._wt(w), out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        m = bottom[0].count_range(0, self.axis)
        dy = top[0].diff.reshape(m, self.num_output)
        G = _gemm_kernels(dy)
        nt = _threads(m, self.k, self.num_output)
        if self.param_propagate_down[0]:
            x = bottom[0].data.reshape(m, self.k)
            dw = self.blobs[0].diff
            if G is not None:
                with G.single_threaded_blas():
                    if self.transpose:
                        G.matmul(x, True, dy, False, 1.0, dw, nt)
                    else:
                        G.matmul(dy, True, x, False, 1.0, dw, nt)
            elif self.transpose:
                dw += x.T @ dy
            else:
                dw += dy.T @ x
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            dx = bottom[0].diff.reshape(m, self.k)
            w = self.blobs[0].data
            if G is not None:
                with G.single_threaded_blas():
                    G.matmul(dy, False, w, self.transpose, 0.0, dx, nt)
            else:
                np.matmul(dy, self._wt(w).T, out=dx)


@register_layer("Embed", "embed_param")
class EmbedLayer(Layer):
    """Lookup table: ``top[..., :] = W[index] (+ b)``; the bottom (any shape) holds integer
    indices in [0, input_dim) stored as floats; W is (input_dim, num_output).  The indices get
    no gradient."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.embed_param
        self.num_output = int(p.num_output)
        self.input_dim = int(p.input_dim)
        if self.num_output <= 0:
            raise self.config_error("num_output must be set to a positive embedding size",
                                    field="embed_param.num_output")
        if self.input_dim <= 0:
            raise self.config_error("input_dim must be set to the number of distinct indices",
                                    field="embed_param.input_dim")
        self.bias_term = bool(p.bias_term)
        if not self.blobs:
            w = self.make_blob((self.input_dim, self.num_output))
            self.blobs = [w]
            self.fill(w, _filler(p, "weight_filler"))
            if self.bias_term:
                b = self.make_blob((self.num_output,))
                self.blobs.append(b)
                self.fill(b, _filler(p, "bias_filler"))
        self._index = None

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.num_output,))

    def allow_force_backward(self, bottom_index):
        return False

    def flops(self, bottom, top):
        return top[0].count if self.bias_term else 0

    def _indices(self, bottom):
        v = bottom[0].data.reshape(-1)
        ii = v.astype(np.int64)
        bad = (ii != v) | (ii < 0) | (ii >= self.input_dim)
        if np.any(bad):
            first = v[np.argmax(bad)]
            raise self.config_error(
                f"index {first:g} is not an integer in [0, {self.input_dim}): input_dim must "
                f"exceed every index in the bottom", field="embed_param.input_dim")
        return ii

    def forward(self, bottom, top):
        ii = self._indices(bottom)
        self._index = ii
        y = top[0].data.reshape(ii.size, self.num_output)
        np.take(self.blobs[0].data, ii, axis=0, out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(-1, self.num_output)
        if self.param_propagate_down[0]:
            ii = self._index if self._index is not None else self._indices(bottom)
            wd = self.blobs[0].diff
            K.embed_backward(ii, dy, wd)
        if self.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff += dy.sum(axis=0)


class _Broadcast(Layer):
    """Shared geometry of Scale and Bias: an operand of shape ``bottom.shape[axis:axis+len]``
    (a learned blob, or bottom[1]) broadcast over the other axes of bottom[0].  The bottom is
    handled as (outer, dim, inner) with the operand as (dim,)."""
    min_bottom = 1
    max_bottom = 2
    exact_num_top = 1
    allow_in_place = True
    pname = ""
    what = ""

    def _learned_shape(self, bottom):
        """Operand shape for a learned operand, from axis/num_axes (config errors)."""
        p = getattr(self.param, self.pname)
        x = bottom[0]
        num_axes = int(p.num_axes)
        if num_axes < -1:
            raise self.config_error(f"num_axes must be -1 (all remaining axes) or >= 0, got "
                                    f"{num_axes}", field=f"{self.pname}.num_axes")
        axis = canonical_axis(self, p.axis, x.num_axes, f"{self.pname}.axis")
        end = x.num_axes if num_axes == -1 else axis + num_axes
        if end > x.num_axes:
            raise self.config_error(
                f"the {self.what} would cover bottom axes {axis}..{end - 1} but bottom[0] "
                f"{list(x.shape)} has {x.num_axes} axes: lower axis or num_axes",
                field=f"{self.pname}.num_axes")
        return tuple(x.shape[axis:end])

    def _place(self, bottom, oshape, source):
        """Axis at which an operand of ``oshape`` applies; checks it fits bottom[0]."""
        p = getattr(self.param, self.pname)
        x = bottom[0]
        # a scalar applies anywhere: Caffe uses axis 0
        axis = 0 if len(oshape) == 0 else canonical_axis(self, p.axis, x.num_axes,
                                                         f"{self.pname}.axis")
        if tuple(x.shape[axis:axis + len(oshape)]) != tuple(oshape):
            raise self.shape_error(
                f"{source} shape {list(oshape)} must match bottom[0] shape {list(x.shape)} "
                f"from axis {axis} (i.e. {list(x.shape[axis:axis + len(oshape)])})")
        return axis

    def _operand_shape(self, bottom):
        return tuple(bottom[1].shape) if len(bottom) == 2 else tuple(self.blobs[0].shape)

    def reshape(self, bottom, top):
        oshape = self._operand_shape(bottom)
        source = "bottom[1]" if len(bottom) == 2 else f"the {self.what} blob"
        self.axis = self._place(bottom, oshape, source)
        self.oshape = oshape
        top[0].reshape(bottom[0].shape)

    def _dims(self, shape):
        outer = int(np.prod(shape[:self.axis], dtype=np.int64))
        dim = int(np.prod(self.oshape, dtype=np.int64))
        inner = int(np.prod(shape[self.axis + len(self.oshape):], dtype=np.int64))
        return outer, dim, inner


@register_layer("Scale", "scale_param")
class ScaleLayer(_Broadcast):
    """``y = x * s (+ b)``: s is a learned blob of shape ``bottom.shape[axis:axis+num_axes]``
    (num_axes -1 = all remaining; filler default constant 1) or bottom[1]; the optional bias
    (bias_term, bias_filler default 0) has the same shape and is the last blob."""
    has_cuda = True
    pname = "scale_param"
    what = "scale"

    def layer_setup(self, bottom, top):
        p = self.param.scale_param
        self.bias_term = bool(p.bias_term)
        if len(bottom) == 2:
            oshape = tuple(bottom[1].shape)
            self._place(bottom, oshape, "bottom[1]")
        else:
            oshape = self._learned_shape(bottom)
        if not self.blobs:
            if len(bottom) == 1:
                s = self.make_blob(oshape)
                self.blobs.append(s)
                self.fill(s, _filler(p, "filler"), default={"type": "constant", "value": 1.0})
            if self.bias_term:
                b = self.make_blob(oshape)
                self.blobs.append(b)
                self.fill(b, _filler(p, "bias_filler"))
        self._x = None

    def flops(self, bottom, top):
        return top[0].count * (2 if self.bias_term else 1)

    def _scale(self, bottom):
        return bottom[1].data if len(bottom) == 2 else self.blobs[0].data

    def _needs_input(self, bottom):
        """Whether backward will need x (for the scale's gradient)."""
        if len(bottom) == 2:
            return True
        return not self.param_propagate_down or self.param_propagate_down[0]

    def forward(self, bottom, top):
        x = bottom[0].data
        o, d, i = self._dims(x.shape)
        keep = np.empty((0, 1, 1), x.dtype)
        if top[0] is bottom[0] and self._needs_input(bottom):
            # in place: keep the input for the scale's gradient.  After a BatchNorm the input
            # equals BatchNorm's saved normalised copy: reuse that (after checking) instead of
            # a copy of our own -- one activation-sized buffer less per BatchNorm+Scale pair.
            from .normalization import output_copy
            saved = output_copy(x)
            if saved is not None:
                self._x = saved
            else:
                if getattr(self, "_x", None) is None or self._x.shape != x.shape or \
                        self._x.dtype != x.dtype or not self._x.flags.owndata:
                    self._x = np.empty_like(x)
                keep = self._x.reshape(o, d, i)
        sc = self._scale(bottom).reshape(d)
        y = top[0].data.reshape(o, d, i)
        if _fast_elementwise(x, sc):
            b = self.blobs[-1].data.reshape(d) if self.bias_term else np.empty(0, x.dtype)
            K.scale_forward(x.reshape(o, d, i), sc, b.astype(x.dtype, copy=False), y, keep)
            return
        if keep.size:
            keep[...] = x.reshape(o, d, i)
        np.multiply(x.reshape(o, d, i), sc.reshape(1, d, 1), out=y)
        if self.bias_term:
            y += self.blobs[-1].data.reshape(1, d, 1)

    def backward(self, top, propagate_down, bottom):
        o, d, i = self._dims(bottom[0].shape)
        dy = top[0].diff.reshape(o, d, i)
        learned = len(bottom) == 1
        if learned and _fast_elementwise(dy, self.blobs[0].data):
            do_s = self.param_propagate_down[0]
            do_b = self.bias_term and self.param_propagate_down[-1]
            x = self._x if top[0] is bottom[0] else bottom[0].data
            gs = np.empty(d, np.float64)
            gb = np.empty(d, np.float64)
            dx = bottom[0].diff.reshape(o, d, i) if propagate_down[0] else dy
            K.scale_backward(dy, x.reshape(o, d, i) if do_s else dy,
                             self.blobs[0].data.reshape(d), do_s, do_b, bool(propagate_down[0]),
                             gs, gb, dx)
            if do_s:
                self.blobs[0].diff += gs.astype(dy.dtype).reshape(self.oshape)
            if do_b:
                self.blobs[-1].diff += gb.astype(dy.dtype).reshape(self.oshape)
            return
        if self.bias_term and self.param_propagate_down[-1]:
            self.blobs[-1].diff += dy.sum(axis=(0, 2)).reshape(self.oshape)
        want_s = self.param_propagate_down[0] if learned else propagate_down[1]
        if want_s:
            x = self._x if top[0] is bottom[0] else bottom[0].data
            g = np.einsum("odi,odi->d", dy, x.reshape(o, d, i))
            if learned:
                self.blobs[0].diff += g.reshape(self.oshape)
            else:
                bottom[1].diff = g.reshape(bottom[1].shape)
        if propagate_down[0]:
            s = self._scale(bottom).reshape(1, d, 1)
            np.multiply(dy, s, out=bottom[0].diff.reshape(o, d, i))


@register_layer("Bias", "bias_param")
class BiasLayer(_Broadcast):
    """``y = x + b``: b is a learned blob of shape ``bottom.shape[axis:axis+num_axes]``
    (filler default constant 0) or bottom[1]."""
    has_cuda = True
    pname = "bias_param"
    what = "bias"

    def layer_setup(self, bottom, top):
        p = self.param.bias_param
        if len(bottom) == 2:
            self._place(bottom, tuple(bottom[1].shape), "bottom[1]")
        else:
            oshape = self._learned_shape(bottom)
            if not self.blobs:
                b = self.make_blob(oshape)
                self.blobs.append(b)
                self.fill(b, _filler(p, "filler"))

    def flops(self, bottom, top):
        return top[0].count

    def forward(self, bottom, top):
        x = bottom[0].data
        o, d, i = self._dims(x.shape)
        b = (bottom[1].data if len(bottom) == 2 else self.blobs[0].data).reshape(1, d, 1)
        np.add(x.reshape(o, d, i), b, out=top[0].data.reshape(o, d, i))

    def backward(self, top, propagate_down, bottom):
        o, d, i = self._dims(bottom[0].shape)
        dy = top[0].diff.reshape(o, d, i)
        if len(bottom) == 1:
            if self.param_propagate_down[0]:
                self.blobs[0].diff += dy.sum(axis=(0, 2)).reshape(self.oshape)
        elif propagate_down[1]:
            bottom[1].diff = dy.sum(axis=(0, 2)).reshape(bottom[1].shape)
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff = top[0].diff
