"""Utility layers: Softmax, Concat, Slice, Split, Eltwise, Flatten, Reshape, Crop, Tile,
Reduction, Silence, ArgMax, Filter, BatchReindex, Parameter.

Most of these only move data (numpy slicing/concatenation); Softmax runs a Numba kernel on the
bottom viewed as ``(outer, channels, inner)``.  Flatten, Reshape, Split, and Concat/Slice with a
single bottom/top make the top a view of the bottom (Caffe's ShareData/ShareDiff).
"""
from __future__ import annotations

import numpy as np

from .base import Layer, canonical_axis
from .registry import register_layer


def _kernels():
    from ..backend.cpu import utility as K
    return K


def _prod(dims) -> int:
    return int(np.prod(dims, dtype=np.int64)) if len(dims) else 1


def _axis_slice(ndim: int, axis: int, start: int, stop: int) -> tuple:
    idx = [slice(None)] * ndim
    idx[axis] = slice(start, stop)
    return tuple(idx)


# ---------------------------------------------------------------------------------------------
@register_layer("Softmax", "softmax_param")
class SoftmaxLayer(Layer):
    """y = exp(x - max) / sum exp(x - max) along ``axis`` (default 1, channels)."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        s = bottom[0].shape
        self.axis = canonical_axis(self, self.param.softmax_param.axis, len(s),
                                   "softmax_param.axis")
        self.view = (_prod(s[:self.axis]), s[self.axis], _prod(s[self.axis + 1:]))
        top[0].reshape(s)

    def flops(self, bottom, top):
        # max, subtract, exp, sum, divide per element
        return 5 * bottom[0].count

    def forward(self, bottom, top):
        _kernels().softmax_forward(bottom[0].data.reshape(self.view),
                                   top[0].data.reshape(self.view))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            _kernels().softmax_backward(top[0].data.reshape(self.view),
                                        top[0].diff.reshape(self.view),
                                        bottom[0].diff.reshape(self.view))


# ---------------------------------------------------------------------------------------------
@register_layer("Concat", "concat_param")
class ConcatLayer(Layer):
    """Concatenate the bottoms along ``axis`` (legacy ``concat_dim``)."""
    has_cuda = True
    min_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise self.config_error("give either axis or concat_dim (deprecated), not both",
                                    field="concat_param.concat_dim")

    def _axis(self, bottom):
        p = self.param.concat_param
        n = bottom[0].num_axes
        if p.HasField("concat_dim"):
            if p.concat_dim >= n:
                raise self.config_error(f"concat_dim {p.concat_dim} is out of range for a "
                                        f"{n}-axis bottom", field="concat_param.concat_dim")
            return int(p.concat_dim)
        return canonical_axis(self, p.axis, n, "concat_param.axis")

    def reshape(self, bottom, top):
        a = self.axis = self._axis(bottom)
        s0 = bottom[0].shape
        total = s0[a]
        for i, b in enumerate(bottom[1:], 1):
            s = b.shape
            if len(s) != len(s0) or s[:a] != s0[:a] or s[a + 1:] != s0[a + 1:]:
                raise self.shape_error(
                    f"bottom {i} has shape {list(s)} but bottom 0 has {list(s0)}: all "
                    f"dimensions except the concatenation axis {a} must agree")
            total += s[a]
        top[0].reshape(s0[:a] + (total,) + s0[a + 1:])
        if len(bottom) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def forward(self, bottom, top):
        if len(bottom) > 1:
            np.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return                      # the diff is shared
        dy = top[0].diff
        off = 0
        for i, b in enumerate(bottom):
            n = b.shape[self.axis]
            if propagate_down[i]:
                b.diff[...] = dy[_axis_slice(dy.ndim, self.axis, off, off + n)]
            off += n


# ---------------------------------------------------------------------------------------------
@register_layer("Slice", "slice_param")
class SliceLayer(Layer):
    """Cut the bottom along ``axis`` at ``slice_point``s (or into equal parts)."""
    has_cuda = True
    exact_num_bottom = 1
    min_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.slice_param
        if p.HasField("axis") and p.HasField("slice_dim"):
            raise self.config_error("give either axis or slice_dim (deprecated), not both",
                                    field="slice_param.slice_dim")
        pts = [int(q) for q in p.slice_point]
        if pts:
            if len(pts) != len(top) - 1:
                raise self.config_error(
                    f"{len(pts)} slice_point values for {len(top)} tops: give exactly one "
                    f"fewer slice_point than tops ({len(top) - 1})",
                    field="slice_param.slice_point")
            for a, b in zip([0] + pts, pts):
                if b <= a:
                    raise self.config_error(
                        f"slice_point values {pts} must be positive and strictly increasing",
                        field="slice_param.slice_point")
        self.points = pts

    def reshape(self, bottom, top):
        p = self.param.slice_param
        s = bottom[0].shape
        if p.HasField("slice_dim"):
            if p.slice_dim >= len(s):
                raise self.config_error(f"slice_dim {p.slice_dim} is out of range for a "
                                        f"{len(s)}-axis bottom", field="slice_param.slice_dim")
            self.axis = int(p.slice_dim)
        else:
            self.axis = canonical_axis(self, p.axis, len(s), "slice_param.axis")
        dim = s[self.axis]
        if self.points:
            if self.points[-1] >= dim:
                raise self.config_error(
                    f"slice_point {self.points[-1]} is not inside axis {self.axis} of size "
                    f"{dim} (bottom {list(s)}): every point must be < {dim}",
                    field="slice_param.slice_point")
            bounds = [0] + self.points + [dim]
        else:
            if dim % len(top):
                raise self.shape_error(
                    f"axis {self.axis} has {dim} entries (bottom {list(s)}), which do not "
                    f"split into {len(top)} equal parts; give slice_point values")
            step = dim // len(top)
            bounds = [k * step for k in range(len(top) + 1)]
        self.bounds = bounds
        for k, t in enumerate(top):
            t.reshape(s[:self.axis] + (bounds[k + 1] - bounds[k],) + s[self.axis + 1:])
        if len(top) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def _idx(self, k, ndim):
        return _axis_slice(ndim, self.axis, self.bounds[k], self.bounds[k + 1])

    def forward(self, bottom, top):
        if len(top) == 1:
            return
        x = bottom[0].data
        for k, t in enumerate(top):
            t.data[...] = x[self._idx(k, x.ndim)]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        dx = bottom[0].diff
        for k, t in enumerate(top):
            dx[self._idx(k, dx.ndim)] = t.diff


# ---------------------------------------------------------------------------------------------
@register_layer("Split", None)
class SplitLayer(Layer):
    """One bottom to several tops that share its data; backward sums the top diffs."""
    has_cuda = True
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for t in top:
            t.reshape(bottom[0].shape)
            t.share_data(bottom[0])

    def forward(self, bottom, top):
        pass                            # the tops view the bottom's data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dx = bottom[0].diff
        if len(top) == 1:
            dx[...] = top[0].diff
            return
        np.add(top[0].diff, top[1].diff, out=dx)
        for t in top[2:]:
            dx += t.diff


# ---------------------------------------------------------------------------------------------
@register_layer("Eltwise", "eltwise_param")
class EltwiseLayer(Layer):
    """Elementwise PROD, SUM (with per-bottom coeffs) or MAX of equally shaped bottoms."""
    has_cuda = True
    min_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = {p.PROD: "PROD", p.SUM: "SUM", p.MAX: "MAX"}.get(p.operation)
        if self.op is None:
            raise self.config_error(f"unknown operation {p.operation}",
                                    field="eltwise_param.operation")
        nc = len(p.coeff)
        if nc and nc != len(bottom):
            raise self.config_error(f"{nc} coeff values for {len(bottom)} bottoms: give one "
                                    f"coeff per bottom, or none", field="eltwise_param.coeff")
        # Caffe rejects coefficients for PROD and ignores them for MAX
        if nc and self.op == "PROD":
            raise self.config_error("coeff is only used with operation: SUM; remove it",
                                    field="eltwise_param.coeff")
        self.coeff = [float(c) for c in p.coeff] if nc else [1.0] * len(bottom)
        self.stable = bool(p.stable_prod_grad)

    def reshape(self, bottom, top):
        s0 = bottom[0].shape
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != s0:
                raise self.shape_error(f"bottom {i} has shape {list(b.shape)} but bottom 0 has "
                                       f"{list(s0)}: Eltwise needs equal shapes")
        top[0].reshape(s0)

    def flops(self, bottom, top):
        n, nb = top[0].count, len(bottom)
        if self.op == "SUM":
            return n * (nb - 1) + n * sum(1 for c in self.coeff if c != 1.0)
        return n * (nb - 1)

    def forward(self, bottom, top):
        y = top[0].data
        if self.op == "PROD":
            np.multiply(bottom[0].data, bottom[1].data, out=y)
            for b in bottom[2:]:
                y *= b.data
        elif self.op == "SUM" and len(bottom) == 2 and \
                bottom[0].data.dtype == bottom[1].data.dtype == y.dtype:
            # one parallel pass (numpy's copy + add ran on one thread), the same values
            import numba

            from ..backend.cpu import workspace as W
            t = y.dtype.type
            with W.threads_for(y.size):
                _kernels().eltwise_sum_relu(numba.get_num_threads(), bottom[0].data,
                                            bottom[1].data, t(self.coeff[0]),
                                            t(self.coeff[1]), False, t(0), y)
        elif self.op == "SUM":
            c0 = self.coeff[0]
            if c0 == 1.0:
                y[...] = bottom[0].data
            else:
                np.multiply(bottom[0].data, c0, out=y)
            for c, b in zip(self.coeff[1:], bottom[1:]):
                if c == 1.0:
                    y += b.data
                else:
                    y += c * b.data
        else:
            # Caffe's order: bottom 1 wins a tie against bottom 0; later bottoms must be
            # strictly larger to take over
            a, b = bottom[0].data, bottom[1].data
            first = a > b
            np.copyto(y, np.where(first, a, b))
            mask = np.where(first, 0, 1).astype(np.int32)
            for k, blob in enumerate(bottom[2:], 2):
                x = blob.data
                gt = x > y
                y[gt] = x[gt]
                mask[gt] = k
            self.mask = mask

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            dx = b.diff
            if self.op == "PROD":
                if self.stable:
                    others = [o for j, o in enumerate(bottom) if j != i]
                    np.multiply(dy, others[0].data, out=dx)
                    for o in others[1:]:
                        dx *= o.data
                else:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        np.divide(top[0].data, b.data, out=dx)
                    dx *= dy
            elif self.op == "SUM":
                c = self.coeff[i]
                if c == 1.0:
                    dx[...] = dy
                else:
                    np.multiply(dy, c, out=dx)
            else:
                np.copyto(dx, np.where(self.mask == i, dy, 0))


# ---------------------------------------------------------------------------------------------
def _view(top, bottom) -> None:
    """Make ``top`` (already reshaped) a view of ``bottom``'s data and diff."""
    top.share_data(bottom)
    top.share_diff(bottom)


class _ViewLayer(Layer):
    """Flatten and Reshape: the top is a view, so forward and backward have nothing to do."""

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass                            # the diff is shared


@register_layer("Flatten", "flatten_param")
class FlattenLayer(_ViewLayer):
    """Merge axes [axis, end_axis] into one; the top views the bottom's data and diff."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.param.flatten_param
        s = bottom[0].shape
        a = canonical_axis(self, p.axis, len(s), "flatten_param.axis")
        e = canonical_axis(self, p.end_axis, len(s), "flatten_param.end_axis")
        if e < a:
            raise self.config_error(f"end_axis {p.end_axis} (axis {e}) comes before axis "
                                    f"{p.axis} (axis {a}) for bottom {list(s)}",
                                    field="flatten_param.end_axis")
        top[0].reshape(s[:a] + (_prod(s[a:e + 1]),) + s[e + 1:])
        _view(top[0], bottom[0])


# ---------------------------------------------------------------------------------------------
@register_layer("Reshape", "reshape_param")
class ReshapeLayer(_ViewLayer):
    """New shape for axes [axis, axis + num_axes): 0 copies a bottom dimension, one -1 is
    inferred.  The top views the bottom's data and diff."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        dims = [int(d) for d in self.param.reshape_param.shape.dim]
        if dims.count(-1) > 1:
            raise self.config_error(f"shape {dims} has {dims.count(-1)} dimensions of -1: at "
                                    f"most one may be inferred", field="reshape_param.shape")
        if any(d < -1 for d in dims):
            raise self.config_error(f"shape {dims}: dimensions must be positive, 0 (copy) or "
                                    f"-1 (infer)", field="reshape_param.shape")
        if self.param.reshape_param.num_axes < -1:
            raise self.config_error("num_axes must be >= 0, or -1 for all remaining axes",
                                    field="reshape_param.num_axes")
        self.dims = dims

    def reshape(self, bottom, top):
        p = self.param.reshape_param
        s = bottom[0].shape
        n = len(s)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise self.config_error(f"axis {p.axis} is out of range for a {n}-axis bottom",
                                    field="reshape_param.axis")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise self.config_error(f"axis {p.axis} + num_axes {p.num_axes} goes past the "
                                    f"{n} axes of the bottom", field="reshape_param.num_axes")
        new = []
        for k, d in enumerate(self.dims):
            if d == 0:
                if start + k >= n:
                    raise self.config_error(
                        f"shape dim {k} is 0 (copy), but the bottom {list(s)} has no axis "
                        f"{start + k} to copy", field="reshape_param.shape")
                new.append(s[start + k])
            else:
                new.append(d)
        shape = list(s[:start]) + new + list(s[end:])
        count = bottom[0].count
        if -1 in shape:
            known = _prod([d for d in shape if d != -1])
            if known == 0 or count % known:
                raise self.shape_error(f"cannot infer the -1 dimension of {shape}: the bottom "
                                       f"{list(s)} has {count} elements, not a multiple of "
                                       f"{known}")
            shape[shape.index(-1)] = count // known
        if _prod(shape) != count:
            raise self.shape_error(f"shape {shape} has {_prod(shape)} elements but the bottom "
                                   f"{list(s)} has {count}")
        top[0].reshape(shape)
        _view(top[0], bottom[0])


# ---------------------------------------------------------------------------------------------
@register_layer("Crop", "crop_param")
class CropLayer(Layer):
    """Crop bottom[0] to bottom[1]'s shape on the axes from ``axis`` on, starting at
    ``offset`` (none: 0; one: every cropped axis; else one per cropped axis)."""
    has_cuda = True
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        p = self.param.crop_param
        s0, s1 = bottom[0].shape, bottom[1].shape
        n = len(s0)
        a = canonical_axis(self, p.axis, n, "crop_param.axis")
        offs = [int(o) for o in p.offset]
        if len(offs) > 1 and len(offs) != n - a:
            raise self.config_error(
                f"{len(offs)} offset values: give none, one, or one per cropped axis "
                f"({n - a} axes from axis {a} on)", field="crop_param.offset")
        if len(s1) < n:
            raise self.shape_error(f"bottom 1 {list(s1)} has fewer axes than bottom 0 "
                                   f"{list(s0)}")
        shape = list(s0)
        sl = [slice(None)] * n
        for i in range(a, n):
            o = offs[0] if len(offs) == 1 else offs[i - a] if offs else 0
            size = s1[i]
            if o + size > s0[i]:
                raise self.shape_error(
                    f"crop of axis {i} out of range: offset {o} + size {size} exceeds "
                    f"bottom 0's {s0[i]} (bottoms {list(s0)} and {list(s1)})")
            shape[i] = size
            sl[i] = slice(o, o + size)
        self.slices = tuple(sl)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.slices]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = bottom[0].diff
            dx.fill(0)
            dx[self.slices] = top[0].diff
        if propagate_down[1]:           # bottom 1 only supplies a shape
            bottom[1].diff.fill(0)


# ---------------------------------------------------------------------------------------------
@register_layer("Tile", "tile_param")
class TileLayer(Layer):
    """Repeat the bottom ``tiles`` times along ``axis`` (whole blocks from ``axis`` on)."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.tile_param
        if not p.HasField("tiles"):
            raise self.config_error("tiles is required (number of copies, > 0)",
                                    field="tile_param.tiles")
        if p.tiles <= 0:
            raise self.config_error(f"tiles must be positive, got {p.tiles}",
                                    field="tile_param.tiles")
        self.tiles = int(p.tiles)

    def reshape(self, bottom, top):
        s = bottom[0].shape
        a = self.axis = canonical_axis(self, self.param.tile_param.axis, len(s),
                                       "tile_param.axis")
        self.outer = _prod(s[:a])
        self.inner = _prod(s[a:])
        top[0].reshape(s[:a] + (s[a] * self.tiles,) + s[a + 1:])

    def forward(self, bottom, top):
        y = top[0].data.reshape(self.outer, self.tiles, self.inner)
        y[...] = bottom[0].data.reshape(self.outer, 1, self.inner)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dy = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            np.sum(dy, axis=1, out=bottom[0].diff.reshape(self.outer, self.inner))


# ---------------------------------------------------------------------------------------------
@register_layer("Reduction", "reduction_param")
class ReductionLayer(Layer):
    """SUM / ASUM / SUMSQ / MEAN over all axes from ``axis`` on, times ``coeff``; the top has
    the bottom's leading axes (a scalar for axis 0)."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.reduction_param
        self.op = int(p.operation)
        if self.op not in (p.SUM, p.ASUM, p.SUMSQ, p.MEAN):
            raise self.config_error(f"unknown operation {self.op}",
                                    field="reduction_param.operation")

    def reshape(self, bottom, top):
        s = bottom[0].shape
        self.axis = canonical_axis(self, self.param.reduction_param.axis, len(s),
                                   "reduction_param.axis") if s else 0
        self.num = _prod(s[:self.axis])
        self.dim = _prod(s[self.axis:])
        top[0].reshape(s[:self.axis])

    def _coeff(self):
        p = self.param.reduction_param
        c = float(p.coeff)
        if self.op == p.MEAN:
            c = c / self.dim if self.dim else 0.0
        return c

    def flops(self, bottom, top):
        p = self.param.reduction_param
        per = 2 if self.op in (p.ASUM, p.SUMSQ) else 1
        return per * bottom[0].count + top[0].count

    def forward(self, bottom, top):
        p = self.param.reduction_param
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == p.ASUM:
            r = np.abs(x).sum(axis=1)
        elif self.op == p.SUMSQ:
            r = np.einsum("ij,ij->i", x, x)
        else:
            r = x.sum(axis=1)
        c = self._coeff()
        y = top[0].data.reshape(self.num)
        if c == 1.0:
            y[...] = r
        else:
            np.multiply(r, c, out=y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.param.reduction_param
        g = (top[0].diff.reshape(self.num, 1) * self._coeff()).astype(bottom[0].dtype)
        dx = bottom[0].diff.reshape(self.num, self.dim)
        if self.op == p.ASUM:
            np.multiply(np.sign(bottom[0].data.reshape(self.num, self.dim)), g, out=dx)
        elif self.op == p.SUMSQ:
            np.multiply(bottom[0].data.reshape(self.num, self.dim), 2 * g, out=dx)
        else:
            dx[...] = g


# ---------------------------------------------------------------------------------------------
@register_layer("Silence", None)
class SilenceLayer(Layer):
    """Consumes its bottoms (so they are not net outputs); no output, zero gradient."""
    has_cuda = True
    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for i, b in enumerate(bottom):
            if propagate_down[i]:
                b.diff.fill(0)


# ---------------------------------------------------------------------------------------------
@register_layer("ArgMax", "argmax_param")
class ArgMaxLayer(Layer):
    """Indices (and optionally values) of the ``top_k`` largest entries of each item
    (over C*H*W) or along ``axis``.  Ties: the larger index first, as Caffe's sort of
    (value, index) pairs in descending order.  No gradient."""
    has_cuda = True
    exact_num_bottom = 1
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.argmax_param
        self.k = int(p.top_k)
        if self.k < 1:
            raise self.config_error("top_k must be at least 1", field="argmax_param.top_k")

    def reshape(self, bottom, top):
        p = self.param.argmax_param
        s = bottom[0].shape
        if not s:
            raise self.shape_error("the bottom must have at least one axis")
        if p.HasField("axis"):
            a = self.axis = canonical_axis(self, p.axis, len(s), "argmax_param.axis")
            if self.k > s[a]:
                raise self.config_error(f"top_k {self.k} exceeds the size {s[a]} of axis {a} "
                                        f"(bottom {list(s)})", field="argmax_param.top_k")
            self.view = (_prod(s[:a]), s[a], _prod(s[a + 1:]))
            shape = list(s)
            shape[a] = self.k
        else:
            self.axis = None
            per = _prod(s[1:])
            if self.k > per:
                raise self.config_error(f"top_k {self.k} exceeds the {per} values per item "
                                        f"(bottom {list(s)})", field="argmax_param.top_k")
            self.view = (s[0], per, 1)
            shape = [1] * max(3, len(s))
            shape[0] = s[0]
            shape[1] = 2 if p.out_max_val else 1
            shape[2] = self.k
        top[0].reshape(shape)

    def allow_force_backward(self, bottom_index):
        return False

    def flops(self, bottom, top):
        return bottom[0].count          # comparisons

    def forward(self, bottom, top):
        p = self.param.argmax_param
        outer, dim, inner = self.view
        v = np.swapaxes(bottom[0].data.reshape(self.view), 1, 2)    # (outer, inner, dim)
        if self.k == 1:
            # the last maximum, i.e. the larger index among ties
            idx = (dim - 1 - np.argmax(v[..., ::-1], axis=-1))[..., None]
        else:
            # stable ascending sort, reversed: descending values, larger index first on ties
            idx = np.argsort(v, axis=-1, kind="stable")[..., ::-1][..., :self.k]
        vals = np.take_along_axis(v, idx, axis=-1)                   # (outer, inner, k)
        if self.axis is None:
            idx, vals = idx[:, 0, :], vals[:, 0, :]                  # (N, k)
            out = np.stack([idx, vals], axis=1) if p.out_max_val else idx[:, None, :]
        else:
            out = np.swapaxes(vals if p.out_max_val else idx, 1, 2)  # (outer, k, inner)
        top[0].data[...] = out.reshape(top[0].shape)


# --------------------------------------------------------------------------------------------
# Filter: the tops' sizes depend on the selector's *values* (like Caffe, which reads them in
# Reshape): set-up gives the full batch, every forward reshapes the tops to the selected
# items (the net re-runs the following layers' reshape, see ``dynamic_top_shapes``).

@register_layer("Filter", None)
class FilterLayer(Layer):
    """Keep the items (axis 0) of bottoms 0..K-1 whose selector (the last bottom, shape (N) or
    (N, 1, ...)) is nonzero; one top per filtered bottom.  Set-up shapes the tops with the full
    batch (Caffe's first reshape); each forward reshapes them to the selected items.  Backward
    puts the top diffs back at the selected items and zeros elsewhere; the selector gets no
    gradient."""
    has_cuda = True
    min_bottom = 2
    min_top = 1
    #: the tops' shapes depend on the selector's values: the net reshapes the layers after it
    dynamic_top_shapes = True

    def layer_setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.config_error(f"needs one top per filtered bottom: {len(bottom) - 1} "
                                    f"bottoms before the selector, {len(top)} tops")
        self._first = True
        self._index = None
        self._nbottom = len(bottom)

    def allow_force_backward(self, bottom_index):
        n = getattr(self, "_nbottom", len(self.param.bottom))
        return bottom_index != n - 1

    def _check(self, bottom):
        sel = bottom[-1]
        if sel.num_axes < 1 or any(d != 1 for d in sel.shape[1:]):
            raise self.shape_error(f"the selector (last bottom) must be (N) or (N, 1, ...): "
                                   f"all axes but the first singletons, got {list(sel.shape)}")
        for i, b in enumerate(bottom[:-1]):
            if b.num_axes < 1 or b.shape[0] != sel.shape[0]:
                raise self.shape_error(f"bottom[{i}] {list(b.shape)} must have the selector's "
                                       f"first dimension {sel.shape[0]}")

    def _selected(self, bottom):
        return np.flatnonzero(bottom[-1].data.reshape(-1))

    def reshape(self, bottom, top):
        self._check(bottom)
        if self._first:
            num = bottom[0].shape[0]
            self._first = False
        else:
            self._index = self._selected(bottom)
            num = len(self._index)
        for t, b in zip(top, bottom):
            t.reshape((num,) + tuple(b.shape[1:]))

    def forward(self, bottom, top):
        self._index = idx = self._selected(bottom)
        for t, b in zip(top, bottom):
            t.reshape((len(idx),) + tuple(b.shape[1:]))
            np.take(b.data, idx, axis=0, out=t.data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise self.config_error("cannot backpropagate to the selector (last bottom): set "
                                    "propagate_down: false for it", field="propagate_down")
        idx = self._index if self._index is not None else self._selected(bottom)
        for i, (t, b) in enumerate(zip(top, bottom)):
            if not propagate_down[i]:
                continue
            d = b.diff
            d[...] = 0
            d[idx] = t.diff


# --------------------------------------------------------------------------------------------
# BatchReindex

@register_layer("BatchReindex", None)
class BatchReindexLayer(Layer):
    """``top[i] = bottom[0][index[i]]``: gather items along axis 0 by the index blob bottom[1]
    (1-D, integer values stored as floats; repeats allowed).  Backward adds the top diffs back
    into the gathered items; the indices get no gradient."""
    has_cuda = True
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise self.shape_error(f"bottom[1] (the indices) must be 1-D, got "
                                   f"{list(bottom[1].shape)}")
        if bottom[0].num_axes < 1:
            raise self.shape_error("bottom[0] must have at least one axis")
        top[0].reshape((bottom[1].shape[0],) + tuple(bottom[0].shape[1:]))

    def _indices(self, bottom):
        v = bottom[1].data
        ii = v.astype(np.int64)
        n = bottom[0].shape[0]
        bad = (ii != v) | (ii < 0) | (ii >= n)
        if np.any(bad):
            raise self.shape_error(f"index {v[np.argmax(bad)]:g} is not an integer in "
                                   f"[0, {n}) (bottom[0] has {n} items)")
        return ii

    def forward(self, bottom, top):
        self._ii = ii = self._indices(bottom)
        np.take(bottom[0].data, ii, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.config_error("cannot backpropagate to the indices (bottom[1])",
                                    field="propagate_down")
        if not propagate_down[0]:
            return
        d = bottom[0].diff
        d[...] = 0
        np.add.at(d, self._ii, top[0].diff)


# --------------------------------------------------------------------------------------------
# Parameter

@register_layer("Parameter", "parameter_param")
class ParameterLayer(Layer):
    """Exposes one learned blob of shape ``parameter_param.shape`` as its top (no bottoms), so
    other layers can use a learned tensor; the blob starts at 0 (Caffe does not fill it) and
    can be shared by name through ``param { name: ... }``."""
    has_cuda = True
    exact_num_bottom = 0
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.parameter_param
        if not p.HasField("shape"):
            raise self.config_error("shape must be given (the learned blob's dimensions)",
                                    field="parameter_param.shape")
        shape = tuple(int(d) for d in p.shape.dim)
        if any(d < 0 for d in shape):
            raise self.config_error(f"shape {list(shape)} has a negative dimension",
                                    field="parameter_param.shape")
        if not self.blobs:
            self.blobs = [self.make_blob(shape)]

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])

    def forward(self, bottom, top):
        if top[0]._data_src is not self.blobs[0]:        # re-share after a reshape
            top[0].share_data(self.blobs[0])

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].diff += top[0].diff
