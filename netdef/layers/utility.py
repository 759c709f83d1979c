"""Utility layers: Softmax, Concat, Slice, Split, Eltwise, Flatten, Reshape, Crop, Tile,
Reduction, Silence, ArgMax."""
from __future__ import annotations

import numpy as np

from .base import Layer, canonical_axis
from .registry import register_layer


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """Max-subtracted softmax along ``axis`` (same dtype as x)."""
    z = x - x.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


@register_layer("Softmax", "softmax_param")
class SoftmaxLayer(Layer):
    """y = exp(x - max) / sum exp(x - max) along ``axis``."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self, self.param.softmax_param.axis, bottom[0].num_axes,
                                   "softmax_param.axis")
        top[0].reshape(bottom[0].shape)

    def flops(self, bottom, top):
        return 4 * bottom[0].count

    def forward(self, bottom, top):
        top[0].data = softmax(bottom[0].data, self.axis)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            bottom[0].diff = y * (dy - (dy * y).sum(axis=self.axis, keepdims=True))


@register_layer("Concat", "concat_param")
class ConcatLayer(Layer):
    """Concatenate bottoms along ``axis`` (legacy concat_dim)."""
    min_bottom = 1
    exact_num_top = 1

    def _axis(self, bottom):
        p = self.param.concat_param
        if p.HasField("concat_dim") and not p.HasField("axis"):
            if p.concat_dim >= bottom[0].num_axes:
                raise self.config_error(f"concat_dim {p.concat_dim} is out of range",
                                        field="concat_param.concat_dim")
            return int(p.concat_dim)
        return canonical_axis(self, p.axis, bottom[0].num_axes, "concat_param.axis")

    def reshape(self, bottom, top):
        a = self.axis = self._axis(bottom)
        s0 = bottom[0].shape
        total = 0
        for i, b in enumerate(bottom):
            s = b.shape
            if len(s) != len(s0) or s[:a] != s0[:a] or s[a + 1:] != s0[a + 1:]:
                raise self.shape_error(f"bottom {i} has shape {list(s)} but bottom 0 has "
                                       f"{list(s0)}: all dimensions except axis {a} must agree")
            total += s[a]
        top[0].reshape(s0[:a] + (total,) + s0[a + 1:])

    def forward(self, bottom, top):
        if len(bottom) == 1:
            top[0].data = bottom[0].data
        else:
            top[0].data = np.concatenate([b.data for b in bottom], axis=self.axis)

    def backward(self, top, propagate_down, bottom):
        off = 0
        dy = top[0].diff
        for i, b in enumerate(bottom):
            n = b.shape[self.axis]
            if propagate_down[i]:
                idx = [slice(None)] * dy.ndim
                idx[self.axis] = slice(off, off + n)
                b.diff = dy[tuple(idx)]
            off += n


@register_layer("Slice", "slice_param")
class SliceLayer(Layer):
    """Split bottom along ``axis`` at slice_point (or into equal parts)."""
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        p = self.param.slice_param
        if p.HasField("slice_dim") and not p.HasField("axis"):
            self.axis = int(p.slice_dim)
        else:
            self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "slice_param.axis")
        dim = bottom[0].shape[self.axis]
        pts = list(p.slice_point)
        if pts:
            if len(pts) != len(top) - 1:
                raise self.config_error(f"{len(pts)} slice_points for {len(top)} tops: give "
                                        f"one fewer than the tops", field="slice_param.slice_point")
            prev = 0
            for q in pts:
                if q <= prev or q >= dim:
                    raise self.config_error(f"slice_points {pts} must increase strictly inside "
                                            f"(0, {dim})", field="slice_param.slice_point")
                prev = q
            bounds = [0] + pts + [dim]
        else:
            if dim % len(top):
                raise self.shape_error(f"axis {self.axis} has {dim} entries, which do not split "
                                       f"into {len(top)} equal parts; give slice_point")
            step = dim // len(top)
            bounds = [k * step for k in range(len(top) + 1)]
        self.bounds = bounds
        s = bottom[0].shape
        for k, t in enumerate(top):
            t.reshape(s[:self.axis] + (bounds[k + 1] - bounds[k],) + s[self.axis + 1:])

    def _idx(self, k, ndim):
        idx = [slice(None)] * ndim
        idx[self.axis] = slice(self.bounds[k], self.bounds[k + 1])
        return tuple(idx)

    def forward(self, bottom, top):
        x = bottom[0].data
        for k, t in enumerate(top):
            t.data = x[self._idx(k, x.ndim)]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = np.empty(bottom[0].shape, dtype=bottom[0].dtype)
            for k, t in enumerate(top):
                dx[self._idx(k, dx.ndim)] = t.diff
            bottom[0].diff = dx


@register_layer("Split", None)
class SplitLayer(Layer):
    """One bottom to several tops sharing its data; backward sums the top diffs."""
    exact_num_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for t in top:
            t.reshape(bottom[0].shape)
            t.share_data(bottom[0])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            acc = top[0].diff.copy()
            for t in top[1:]:
                acc += t.diff
            bottom[0].diff = acc


@register_layer("Eltwise", "eltwise_param")
class EltwiseLayer(Layer):
    """PROD, SUM (with coeffs) or MAX of equally shaped bottoms."""
    min_bottom = 2
    exact_num_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = p.operation
        if len(p.coeff) and self.op != p.SUM:
            raise self.config_error("coeff is only for operation: SUM", field="eltwise_param.coeff")
        if len(p.coeff) and len(p.coeff) != len(bottom):
            raise self.config_error(f"{len(p.coeff)} coeffs for {len(bottom)} bottoms: give one "
                                    f"per bottom", field="eltwise_param.coeff")
        self.coeff = list(p.coeff) or [1.0] * len(bottom)
        self.stable = bool(p.stable_prod_grad)

    def reshape(self, bottom, top):
        for i, b in enumerate(bottom[1:], 1):
            if b.shape != bottom[0].shape:
                raise self.shape_error(f"bottom {i} has shape {list(b.shape)} but bottom 0 has "
                                       f"{list(bottom[0].shape)}; Eltwise needs equal shapes")
        top[0].reshape(bottom[0].shape)

    def flops(self, bottom, top):
        return top[0].count * (len(bottom) - 1) * (2 if self.op == 1 and
                                                   any(c != 1 for c in self.coeff) else 1)

    def forward(self, bottom, top):
        p = self.param.eltwise_param
        if self.op == p.PROD:
            y = bottom[0].data * bottom[1].data
            for b in bottom[2:]:
                y = y * b.data
        elif self.op == p.SUM:
            y = self.coeff[0] * bottom[0].data if self.coeff[0] != 1 else bottom[0].data.copy()
            for c, b in zip(self.coeff[1:], bottom[1:]):
                y += c * b.data if c != 1 else b.data
        else:
            stack = np.stack([b.data for b in bottom])
            self.argmax = stack.argmax(axis=0)          # first max wins, as Caffe
            y = np.take_along_axis(stack, self.argmax[None], 0)[0]
        top[0].data = y

    def backward(self, top, propagate_down, bottom):
        p = self.param.eltwise_param
        dy = top[0].diff
        for i, b in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if self.op == p.PROD:
                if self.stable:
                    g = dy.copy()
                    for j, o in enumerate(bottom):
                        if j != i:
                            g *= o.data
                else:
                    g = dy * top[0].data / b.data
            elif self.op == p.SUM:
                g = self.coeff[i] * dy
            else:
                g = np.where(self.argmax == i, dy, 0)
            b.diff = g


@register_layer("Flatten", "flatten_param")
class FlattenLayer(Layer):
    """Merge axes [axis, end_axis] into one; shares data and diff with the bottom."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.param.flatten_param
        n = bottom[0].num_axes
        a = canonical_axis(self, p.axis, n, "flatten_param.axis")
        e = canonical_axis(self, p.end_axis, n, "flatten_param.end_axis")
        s = bottom[0].shape
        top[0].reshape(s[:a] + (int(np.prod(s[a:e + 1], dtype=np.int64)),) + s[e + 1:])
        top[0].share_data(bottom[0])
        top[0].share_diff(bottom[0])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register_layer("Reshape", "reshape_param")
class ReshapeLayer(Layer):
    """New shape (0 copies a dimension, one -1 is inferred); shares data and diff."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.param.reshape_param
        dims = list(p.shape.dim)
        if dims.count(-1) > 1:
            raise self.config_error("at most one dimension may be -1 (inferred)",
                                    field="reshape_param.shape")
        if any(d < -1 for d in dims):
            raise self.config_error("dimensions must be >= -1", field="reshape_param.shape")
        s = bottom[0].shape
        n = len(s)
        start = p.axis + n + 1 if p.axis < 0 else p.axis
        if not 0 <= start <= n:
            raise self.config_error(f"axis {p.axis} out of range", field="reshape_param.axis")
        end = n if p.num_axes == -1 else start + p.num_axes
        if p.num_axes < -1 or end > n:
            raise self.config_error(f"num_axes {p.num_axes} out of range",
                                    field="reshape_param.num_axes")
        new = []
        for k, d in enumerate(dims):
            if d == 0:
                if start + k >= n:
                    raise self.config_error(f"dim {k} is 0 (copy) but the bottom has no axis "
                                            f"{start + k}", field="reshape_param.shape")
                new.append(s[start + k])
            else:
                new.append(d)
        shape = list(s[:start]) + new + list(s[end:])
        known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
        if -1 in shape:
            if known == 0 or bottom[0].count % known:
                raise self.shape_error(f"cannot infer -1: {bottom[0].count} elements do not "
                                       f"divide into {shape}")
            shape[shape.index(-1)] = bottom[0].count // known
        if int(np.prod(shape, dtype=np.int64)) != bottom[0].count:
            raise self.shape_error(f"shape {shape} has {int(np.prod(shape))} elements but the "
                                   f"bottom {list(s)} has {bottom[0].count}")
        top[0].reshape(shape)
        top[0].share_data(bottom[0])
        top[0].share_diff(bottom[0])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register_layer("Crop", "crop_param")
class CropLayer(Layer):
    """Crop bottom[0] to bottom[1]'s shape from ``axis`` on, at ``offset``."""
    exact_num_bottom = 2
    exact_num_top = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def reshape(self, bottom, top):
        p = self.param.crop_param
        n = bottom[0].num_axes
        if bottom[1].num_axes != n:
            raise self.shape_error(f"bottoms have {n} and {bottom[1].num_axes} axes")
        a = canonical_axis(self, p.axis, n, "crop_param.axis")
        offs = list(p.offset)
        if len(offs) not in (0, 1, n - a):
            raise self.config_error(f"offset takes 0, 1 or {n - a} values", field="crop_param.offset")
        shape = list(bottom[0].shape)
        self.slices = [slice(None)] * n
        for i in range(a, n):
            o = offs[0] if len(offs) == 1 else offs[i - a] if offs else 0
            size = bottom[1].shape[i]
            if o + size > bottom[0].shape[i]:
                raise self.shape_error(f"crop of axis {i}: offset {o} + size {size} exceeds "
                                       f"{bottom[0].shape[i]}")
            shape[i] = size
            self.slices[i] = slice(o, o + size)
        self.slices = tuple(self.slices)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data = bottom[0].data[self.slices]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = np.zeros(bottom[0].shape, dtype=bottom[0].dtype)
            dx[self.slices] = top[0].diff
            bottom[0].diff = dx


@register_layer("Tile", "tile_param")
class TileLayer(Layer):
    """Repeat the bottom ``tiles`` times along ``axis``."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.param.tile_param
        if not p.HasField("tiles") or p.tiles <= 0:
            raise self.config_error("tiles must be given and positive", field="tile_param.tiles")
        self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "tile_param.axis")
        self.tiles = int(p.tiles)
        s = bottom[0].shape
        top[0].reshape(s[:self.axis] + (s[self.axis] * self.tiles,) + s[self.axis + 1:])

    def forward(self, bottom, top):
        x = bottom[0].data
        outer = int(np.prod(x.shape[:self.axis], dtype=np.int64))
        inner = x.reshape(outer, -1)
        top[0].data = np.tile(inner, (1, self.tiles)).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            outer = int(np.prod(bottom[0].shape[:self.axis], dtype=np.int64))
            dy = top[0].diff.reshape(outer, self.tiles, -1)
            bottom[0].diff = dy.sum(axis=1).reshape(bottom[0].shape)


@register_layer("Reduction", "reduction_param")
class ReductionLayer(Layer):
    """SUM / ASUM / SUMSQ / MEAN over all axes from ``axis``, times coeff."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.param.reduction_param
        self.axis = canonical_axis(self, p.axis, bottom[0].num_axes, "reduction_param.axis") \
            if bottom[0].num_axes else 0
        top[0].reshape(bottom[0].shape[:self.axis])

    def flops(self, bottom, top):
        return 2 * bottom[0].count

    def forward(self, bottom, top):
        p = self.param.reduction_param
        x = bottom[0].data.reshape(top[0].count, -1)
        op = p.operation
        if op == p.SUM:
            r = x.sum(axis=1)
        elif op == p.ASUM:
            r = np.abs(x).sum(axis=1)
        elif op == p.SUMSQ:
            r = (x * x).sum(axis=1)
        else:
            r = x.mean(axis=1) if x.shape[1] else np.zeros(x.shape[0], x.dtype)
        top[0].data = (p.coeff * r).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.param.reduction_param
        x = bottom[0].data.reshape(top[0].count, -1)
        g = (p.coeff * top[0].diff).reshape(-1, 1)
        op = p.operation
        if op == p.SUM:
            dx = np.broadcast_to(g, x.shape)
        elif op == p.ASUM:
            dx = np.sign(x) * g
        elif op == p.SUMSQ:
            dx = 2 * x * g
        else:
            dx = np.broadcast_to(g / max(x.shape[1], 1), x.shape)
        bottom[0].diff = np.asarray(dx).reshape(bottom[0].shape)


@register_layer("Silence", None)
class SilenceLayer(Layer):
    """Consumes its bottoms (so they are not net outputs); no output."""
    min_bottom = 1
    exact_num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for i, b in enumerate(bottom):
            if propagate_down[i]:
                b.diff = np.zeros(b.shape, dtype=b.dtype)


@register_layer("ArgMax", "argmax_param")
class ArgMaxLayer(Layer):
    """Indices (and optionally values) of the top_k largest entries, per item or along axis."""
    exact_num_bottom = 1
    exact_num_top = 1

    def reshape(self, bottom, top):
        p = self.param.argmax_param
        self.k = int(p.top_k)
        if self.k < 1:
            raise self.config_error("top_k must be at least 1", field="argmax_param.top_k")
        s = bottom[0].shape
        if p.HasField("axis"):
            self.axis = canonical_axis(self, p.axis, len(s), "argmax_param.axis")
            if self.k > s[self.axis]:
                raise self.config_error(f"top_k {self.k} exceeds axis size {s[self.axis]}",
                                        field="argmax_param.top_k")
            shape = list(s)
            shape[self.axis] = self.k
        else:
            self.axis = None
            if self.k > bottom[0].count_range(1):
                raise self.config_error(f"top_k {self.k} exceeds the {bottom[0].count_range(1)} "
                                        f"values per item", field="argmax_param.top_k")
            shape = [s[0], 2 if p.out_max_val else 1, self.k]
        top[0].reshape(shape)

    def allow_force_backward(self, bottom_index):
        return False

    def forward(self, bottom, top):
        p = self.param.argmax_param
        x = bottom[0].data
        if self.axis is None:
            v = x.reshape(x.shape[0], -1)
            ax = 1
        else:
            v = np.moveaxis(x, self.axis, -1)
            ax = -1
        # ties: the larger index first (Caffe sorts (value, index) pairs descending)
        # descending (value, index): ties put the larger index first
        idx = np.flip(np.argsort(v, axis=ax, kind="stable"), axis=ax)[..., :self.k]
        vals = np.take_along_axis(v, idx, axis=ax)
        if self.axis is None:
            out = np.stack([idx, vals], axis=1) if p.out_max_val else idx[:, None, :]
        else:
            out = np.moveaxis(vals if p.out_max_val else idx, -1, self.axis)
        top[0].data = out.astype(top[0].dtype)
