"""``caffe.coord_map``: how spatial coordinates of one NetSpec top map onto another's, and the
Crop layer that aligns them (as FCNs use to crop an upsampled score map onto the input).

Each layer relates a top coordinate ``t`` to its (first) bottom's ``b`` as ``t = scale * b +
offset`` on the spatial axes:

* Convolution, Pooling (window k, stride s, pad p, dilation d): ``scale = 1/s``,
  ``offset = (p - d (k - 1) / 2) / s`` (a top pixel sits at its window's centre);
* Deconvolution: ``scale = s``, ``offset = d (k - 1) / 2 - p``;
* Crop (offset o): ``scale = 1``, ``offset = -o``;
* elementwise layers (ReLU, BatchNorm, Scale, Eltwise, Concat over channels, Dropout...):
  ``scale = 1``, ``offset = 0``.

:func:`coord_map_from_to` composes the maps from the two tops' nearest common ancestor (found
through every bottom of an elementwise layer, the first of any other) and
returns ``(axis, scale, offset)`` with ``coord_to = scale * coord_from + offset``; ``axis`` is
the first spatial axis.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..netspec import Top, layers as L

ELEMENTWISE = {"ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Exp", "Log",
               "Power", "Threshold", "Clip", "Swish", "Dropout", "BatchNorm", "Scale", "Bias",
               "Eltwise", "Concat", "Split", "LRN", "MVN", "Softmax"}
#: layer types whose first bottom carries no spatial map onward (the walk stops there)
SOURCES = {"Input", "Data", "ImageData", "DummyData", "HDF5Data", "MemoryData", "WindowData",
           "Python"}


def _one(values, h, w, default, what, type_name):
    vals = [v for v in (h, w) if v] or list(values) or [default]
    if len(set(vals)) != 1:
        raise ConfigError(f"coord_map: a {type_name} with different {what} per axis "
                          f"({vals}) has no single coordinate map")
    return vals[0]


def layer_map(fn) -> tuple[int, float, float]:
    """(axis, scale, offset) of ``fn``'s top in terms of its first bottom."""
    t = fn.type_name
    p = fn.proto
    if t in ("Convolution", "Deconvolution"):
        cp = p.convolution_param
        k = _one(cp.kernel_size, cp.kernel_h, cp.kernel_w, 1, "kernels", t)
        s = _one(cp.stride, cp.stride_h, cp.stride_w, 1, "strides", t)
        pad = _one(cp.pad, cp.pad_h, cp.pad_w, 0, "pads", t)
        d = _one(cp.dilation, 0, 0, 1, "dilations", t)
        axis = (cp.axis if cp.HasField("axis") else 1) + 1
        if t == "Convolution":
            return axis, 1.0 / s, (pad - d * (k - 1) / 2.0) / s
        return axis, float(s), d * (k - 1) / 2.0 - pad
    if t == "Pooling":
        pp = p.pooling_param
        if pp.global_pooling:
            raise ConfigError("coord_map: global pooling has no coordinate map")
        k = _one([pp.kernel_size] if pp.HasField("kernel_size") else [], pp.kernel_h,
                 pp.kernel_w, 1, "kernels", t)
        s = _one([pp.stride] if pp.HasField("stride") else [], pp.stride_h, pp.stride_w, 1,
                 "strides", t)
        pad = _one([pp.pad] if pp.HasField("pad") else [], pp.pad_h, pp.pad_w, 0, "pads", t)
        return 2, 1.0 / s, (pad - (k - 1) / 2.0) / s
    if t == "Crop":
        cp = p.crop_param
        offs = list(cp.offset) or [0]
        if len(set(offs)) != 1:
            raise ConfigError("coord_map: a Crop with different offsets per axis has no single "
                              "coordinate map")
        axis = cp.axis if cp.HasField("axis") else 2
        return axis, 1.0, -float(offs[0])
    if t in ELEMENTWISE:
        return 2, 1.0, 0.0
    raise ConfigError(f"coord_map: a {t} layer has no spatial coordinate map (only "
                      f"convolution, pooling, deconvolution, crop and elementwise layers)")


def _bottoms(top: Top) -> tuple:
    """The bottoms whose coordinates ``top`` shares: a Crop's first (the cropped one), an
    elementwise layer's every bottom (they are aligned), any other layer's first."""
    fn = top.fn
    if fn.type_name in SOURCES or not fn.inputs:
        return ()
    return fn.inputs if fn.type_name in ELEMENTWISE else fn.inputs[:1]


def _ancestors(top: Top):
    """{ancestor: (axis, a, b)} with ``coord(top) = a * coord(ancestor) + b``, nearest first
    (breadth first), and the error of the first layer met that has no coordinate map."""
    found = {top: (None, 1.0, 0.0)}
    queue, blocked = [top], None
    while queue:
        t = queue.pop(0)
        bottoms = _bottoms(t)
        if not bottoms:
            continue
        try:
            ax, s, o = layer_map(t.fn)
        except ConfigError as e:
            blocked = blocked or e
            continue
        axis, a, b = found[t]
        if t.fn.type_name not in ELEMENTWISE:
            if axis is not None and ax != axis:
                raise ConfigError(f"coord_map: the path mixes spatial axes {axis} and {ax}")
            axis = ax
        # coord(top) = a * coord(t) + b and coord(t) = s * coord(bottom) + o
        for bottom in bottoms:
            if bottom not in found:
                found[bottom] = (axis, a * s, a * o + b)
                queue.append(bottom)
    return found, blocked


def coord_map_from_to(top_from: Top, top_to: Top) -> tuple[int, float, float]:
    """(axis, scale, offset) with ``coord_to = scale * coord_from + offset``, through the two
    tops' nearest common ancestor."""
    for t in (top_from, top_to):
        if not isinstance(t, Top):
            raise ConfigError(f"coord_map: expected NetSpec tops, got {t!r}")
    up_from, err_from = _ancestors(top_from)
    up_to, err_to = _ancestors(top_to)
    common = next((t for t in up_from if t in up_to), None)
    if common is None:
        if err_from or err_to:
            raise err_from or err_to
        raise ConfigError("coord_map: the two tops share no ancestor (they are not connected "
                          "through Convolution/Pooling/Deconvolution/Crop or elementwise "
                          "layers)")
    ax1, a1, b1 = up_from[common]
    ax2, a2, b2 = up_to[common]
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise ConfigError(f"coord_map: the tops map over different axes ({ax1}, {ax2})")
    axis = ax1 if ax1 is not None else (ax2 if ax2 is not None else 2)
    # from = a1 anc + b1, to = a2 anc + b2  =>  to = (a2 / a1) from + b2 - a2 b1 / a1
    return axis, a2 / a1, b2 - a2 * b1 / a1


def crop(top_from: Top, top_to: Top):
    """A Crop layer call cutting ``top_from`` to ``top_to``'s extent, aligned by the map."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    if abs(a - 1) > 1e-9:
        raise ConfigError(f"crop: the tops' scales differ ({a:g}): crop only shifts")
    if b > 1e-9 or abs(b - round(b)) > 1e-9:
        raise ConfigError(f"crop: '{top_to}' would start at {-b:g} in '{top_from}' "
                          f"(the offset must be a whole number >= 0)")
    return L.Crop(top_from, top_to, crop_param=dict(axis=axis, offset=[int(round(-b))]))
