"""Vision layers (Convolution, Deconvolution, Im2col, Pooling).

Every forward is compared with a float64 reference written here from Caffe's formulas as naive
Python loops (the layers' Numba kernels are never called by the references); gradients are
checked with Caffe's central-difference GradientChecker on the bottom and on every parameter.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

FILL = "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.5 }"


# ----------------------------------------------------------------------------------------------
# references (float64, naive loops, straight from the formulas)

def conv_out(size, k, p, s, d):
    return (size + 2 * p - (d * (k - 1) + 1)) // s + 1


def conv_ref(x, w, b, geom, group):
    """y[n, o, oy, ox] = b[o] + sum_{ci, i, j} x[n, g*Cg + ci, oy*s - p + i*d, ox*s - p + j*d]
    * w[o, ci, i, j], with g = o // (O / group) and zero padding."""
    kh, kw, ph, pw, sh, sw, dh, dw = geom
    n, c, h, wd = x.shape
    o, cg, wkh, wkw = w.shape
    assert (wkh, wkw) == (kh, kw) and cg * group == c
    oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(wd, kw, pw, sw, dw)
    og = o // group
    y = np.zeros((n, o, oh, ow))
    for ni in range(n):
        for oc in range(o):
            g = oc // og
            for oy in range(oh):
                for ox in range(ow):
                    acc = 0.0 if b is None else float(b[oc])
                    for ci in range(cg):
                        for i in range(kh):
                            iy = oy * sh - ph + i * dh
                            if not 0 <= iy < h:
                                continue
                            for j in range(kw):
                                ix = ox * sw - pw + j * dw
                                if 0 <= ix < wd:
                                    acc += x[ni, g * cg + ci, iy, ix] * w[oc, ci, i, j]
                    y[ni, oc, oy, ox] = acc
    return y


def deconv_ref(x, w, b, geom, group):
    """Transposed convolution as a scatter: input pixel (iy, ix) of channel c adds
    x * w[c, oo, i, j] to output (iy*s - p + i*d, ix*s - p + j*d) of channel g*Og + oo."""
    kh, kw, ph, pw, sh, sw, dh, dw = geom
    n, c, h, wd = x.shape
    wc, og, wkh, wkw = w.shape
    assert wc == c and (wkh, wkw) == (kh, kw)
    o = og * group
    cg = c // group
    oh = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph
    ow = sw * (wd - 1) + dw * (kw - 1) + 1 - 2 * pw
    y = np.zeros((n, o, oh, ow))
    for ni in range(n):
        for ci in range(c):
            g = ci // cg
            for iy in range(h):
                for ix in range(wd):
                    v = x[ni, ci, iy, ix]
                    for oo in range(og):
                        for i in range(kh):
                            oy = iy * sh - ph + i * dh
                            if not 0 <= oy < oh:
                                continue
                            for j in range(kw):
                                ox = ix * sw - pw + j * dw
                                if 0 <= ox < ow:
                                    y[ni, g * og + oo, oy, ox] += v * w[ci, oo, i, j]
    if b is not None:
        y += np.asarray(b).reshape(1, o, 1, 1)
    return y


def im2col_ref(x, geom):
    """top[n, (c*kh + i)*kw + j, oy, ox] = x[n, c, oy*s - p + i*d, ox*s - p + j*d] (0 outside)."""
    kh, kw, ph, pw, sh, sw, dh, dw = geom
    n, c, h, wd = x.shape
    oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(wd, kw, pw, sw, dw)
    y = np.zeros((n, c * kh * kw, oh, ow))
    for ni in range(n):
        for ci in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = (ci * kh + i) * kw + j
                    for oy in range(oh):
                        for ox in range(ow):
                            iy, ix = oy * sh - ph + i * dh, ox * sw - pw + j * dw
                            if 0 <= iy < h and 0 <= ix < wd:
                                y[ni, row, oy, ox] = x[ni, ci, iy, ix]
    return y


def pool_out(size, k, p, s, ceil_mode, any_pad):
    """Caffe: ceil/floor((size + 2p - k) / s) + 1, then, when the layer has any padding, drop
    the last window if it would start at or after size + p."""
    v = float(size + 2 * p - k) / s
    out = (math.ceil(v) if ceil_mode else math.floor(v)) + 1
    if any_pad and (out - 1) * s >= size + p:
        out -= 1
    return out


def pool_ref(x, method, kh, kw, ph, pw, sh, sw, ceil_mode=True):
    """MAX: max over the window clipped to the input (mask = h*W + w of the first maximum);
    AVE: sum over the window clipped to the input divided by the size of the window clipped to
    [-p, size + p)."""
    n, c, h, w = x.shape
    any_pad = bool(ph or pw)
    oh = pool_out(h, kh, ph, sh, ceil_mode, any_pad)
    ow = pool_out(w, kw, pw, sw, ceil_mode, any_pad)
    y = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for ni in range(n):
        for ci in range(c):
            for oy in range(oh):
                for ox in range(ow):
                    hs, ws = oy * sh - ph, ox * sw - pw
                    if method == "MAX":
                        best, arg = -np.inf, -1
                        for iy in range(max(hs, 0), min(hs + kh, h)):
                            for ix in range(max(ws, 0), min(ws + kw, w)):
                                if x[ni, ci, iy, ix] > best:
                                    best, arg = x[ni, ci, iy, ix], iy * w + ix
                        y[ni, ci, oy, ox] = best
                        mask[ni, ci, oy, ox] = arg
                    else:
                        he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                        size = (he - hs) * (we - ws)
                        acc = 0.0
                        for iy in range(max(hs, 0), min(he, h)):
                            for ix in range(max(ws, 0), min(we, w)):
                                acc += x[ni, ci, iy, ix]
                        y[ni, ci, oy, ox] = acc / size
    return y, mask


def distinct(shape, seed=0):
    """Values 0.05 apart in random order: no ties for MAX, and a 1e-2 step never changes the
    argmax."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    return (rng.permutation(n).astype(np.float64) - n / 2).reshape(shape) * 0.05


def check_grad(layer, bottom, ntop=1, **kw):
    top = [Blob((), dtype=layer.dtype, name=f"t{i}") for i in range(ntop)]
    GradientChecker(step=1e-2, threshold=1e-3).check(layer, bottom, top, **kw)
    return top


def assert_close(a, b, rtol=1e-10, atol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != reference {b.shape}"
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# Convolution

# (id, bottom shape, num_output, group, bias, geometry (kh, kw, ph, pw, sh, sw, dh, dw), params)
CONV_CASES = [
    ("basic", (2, 3, 5, 5), 4, 1, True, (3, 3, 0, 0, 1, 1, 1, 1), "kernel_size: 3"),
    ("stride2_pad1", (2, 3, 6, 6), 2, 1, True, (3, 3, 1, 1, 2, 2, 1, 1),
     "kernel_size: 3 stride: 2 pad: 1"),
    ("dilation2", (1, 2, 7, 6), 3, 1, True, (3, 3, 1, 1, 1, 1, 2, 2),
     "kernel_size: 3 pad: 1 dilation: 2"),
    ("group2", (2, 4, 5, 5), 6, 2, True, (3, 3, 1, 1, 1, 1, 1, 1),
     "kernel_size: 3 pad: 1 group: 2"),
    ("group2_stride2", (2, 4, 6, 6), 4, 2, True, (3, 3, 0, 0, 2, 2, 1, 1),
     "kernel_size: 3 group: 2 stride: 2"),
    ("depthwise", (2, 3, 5, 5), 3, 3, True, (3, 3, 1, 1, 1, 1, 1, 1),
     "kernel_size: 3 pad: 1 group: 3"),
    ("depthwise_mult2", (2, 3, 5, 5), 6, 3, True, (3, 3, 1, 1, 1, 1, 1, 1),
     "kernel_size: 3 pad: 1 group: 3"),
    ("depthwise_mult2_s2_d2", (1, 2, 7, 7), 4, 2, False, (3, 3, 2, 2, 2, 2, 2, 2),
     "kernel_size: 3 pad: 2 stride: 2 dilation: 2 group: 2"),
    ("depthwise_nonsquare", (1, 2, 5, 6), 2, 2, True, (2, 3, 0, 1, 1, 2, 1, 1),
     "kernel_h: 2 kernel_w: 3 pad_h: 0 pad_w: 1 stride_h: 1 stride_w: 2 group: 2"),
    ("pointwise", (2, 4, 3, 3), 5, 1, True, (1, 1, 0, 0, 1, 1, 1, 1), "kernel_size: 1"),
    ("pointwise_group2", (2, 4, 3, 3), 6, 2, True, (1, 1, 0, 0, 1, 1, 1, 1),
     "kernel_size: 1 group: 2"),
    ("1x1_stride2", (2, 3, 5, 5), 2, 1, True, (1, 1, 0, 0, 2, 2, 1, 1),
     "kernel_size: 1 stride: 2"),
    ("1x1_pad1", (1, 2, 3, 3), 2, 1, True, (1, 1, 1, 1, 1, 1, 1, 1), "kernel_size: 1 pad: 1"),
    ("no_bias", (2, 2, 5, 5), 3, 1, False, (3, 3, 0, 0, 1, 1, 1, 1),
     "kernel_size: 3"),
    ("kernel_hw_pad_hw", (1, 2, 6, 7), 2, 1, True, (3, 2, 1, 0, 2, 1, 1, 1),
     "kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1"),
    ("repeated_pairs", (1, 2, 6, 7), 2, 1, True, (2, 3, 0, 1, 1, 2, 2, 1),
     "kernel_size: 2 kernel_size: 3 pad: 0 pad: 1 stride: 1 stride: 2 "
     "dilation: 2 dilation: 1"),
]
# gradient checks on a subset that covers every code path (im2col, depthwise, pointwise, group)
CONV_GRAD_IDS = {"basic", "stride2_pad1", "dilation2", "group2", "depthwise",
                 "depthwise_mult2", "depthwise_mult2_s2_d2", "pointwise", "pointwise_group2",
                 "1x1_stride2", "no_bias", "kernel_hw_pad_hw", "repeated_pairs"}


def conv_layer(case, dtype=np.float64, type_name="Convolution"):
    _, _, o, _, bias, _, params = case
    if not bias:
        params += " bias_term: false"
    return make_layer(type_name, f"convolution_param {{ num_output: {o} {params} {FILL} }}",
                      dtype=dtype)


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_convolution_forward(case):
    _, shape, o, g, bias, geom, _ = case
    layer = conv_layer(case)
    bottom = make_blobs([shape], seed=3)
    top = run_forward(layer, bottom)
    kh, kw = geom[:2]
    assert layer.blobs[0].shape == (o, shape[1] // g, kh, kw)
    assert len(layer.blobs) == (2 if bias else 1)
    if bias:
        assert layer.blobs[1].shape == (o,)
    b = layer.blobs[1].data if bias else None
    ref = conv_ref(bottom[0].data, layer.blobs[0].data, b, geom, g)
    assert_close(top[0].data, ref)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[0] in CONV_GRAD_IDS],
                         ids=[c[0] for c in CONV_CASES if c[0] in CONV_GRAD_IDS])
def test_convolution_gradient(case):
    layer = conv_layer(case)
    bottom = make_blobs([case[1]], seed=4)
    check_grad(layer, bottom)


def test_convolution_reshape_to_new_size():
    """A second input size reuses the layer (scratch buffers must follow the new shape)."""
    case = CONV_CASES[1]
    layer = conv_layer(case)
    bottom = make_blobs([(2, 3, 6, 6)], seed=5)
    top = run_forward(layer, bottom)
    bottom[0].reshape((1, 3, 9, 7))
    bottom[0].data = np.random.default_rng(6).standard_normal((1, 3, 9, 7))
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    ref = conv_ref(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, case[5], 1)
    assert_close(top[0].data, ref)
    check_grad(layer, bottom)


@pytest.mark.parametrize("type_name", ["Convolution", "Deconvolution"])
def test_convolution_two_bottoms_share_weights(type_name):
    """Caffe's BaseConvolutionLayer: several bottoms of one shape, one top each, same filters;
    the parameter gradients sum over the bottoms."""
    case = ("two", (2, 4, 4, 4), 4, 2, True, (3, 3, 1, 1, 2, 2, 1, 1),
            "kernel_size: 3 pad: 1 stride: 2 group: 2")
    layer = conv_layer(case, type_name=type_name)
    bottom = make_blobs([case[1], case[1]], seed=10)
    top = run_forward(layer, bottom, ntop=2)
    ref = conv_ref if type_name == "Convolution" else deconv_ref
    for b, t in zip(bottom, top):
        assert_close(t.data, ref(b.data, layer.blobs[0].data, layer.blobs[1].data, case[5], 2))
    check_grad(layer, bottom, ntop=2)
    bottom[1].reshape((2, 4, 5, 4))
    with pytest.raises(ShapeError, match="bottom"):
        layer.reshape(bottom, top)


@pytest.mark.parametrize("case", [CONV_CASES[3], CONV_CASES[6], CONV_CASES[9]],
                         ids=["group2", "depthwise_mult2", "pointwise"])
def test_convolution_backward_accumulates_params_overwrites_bottom(case):
    layer = conv_layer(case)
    bottom = make_blobs([case[1]], seed=7)
    top = run_forward(layer, bottom)
    top[0].diff = np.random.default_rng(8).standard_normal(top[0].shape)
    for p in layer.blobs:
        p.diff = np.zeros(p.shape)
    bottom[0].diff = np.full(bottom[0].shape, 123.0)
    layer.backward(top, [True], bottom)
    dx1 = bottom[0].diff.copy()
    dp1 = [p.diff.copy() for p in layer.blobs]
    assert np.all(np.isfinite(dx1)) and not np.allclose(dx1, 123.0)
    layer.backward(top, [True], bottom)
    assert_close(bottom[0].diff, dx1)
    for p, d in zip(layer.blobs, dp1):
        assert_close(p.diff, 2 * d)


@pytest.mark.parametrize("case", [CONV_CASES[2], CONV_CASES[6], CONV_CASES[9]],
                         ids=["dilation2", "depthwise_mult2", "pointwise"])
def test_convolution_float32(case):
    _, shape, o, g, bias, geom, _ = case
    layer = conv_layer(case, dtype=np.float32)
    bottom = make_blobs([shape], dtype=np.float32, seed=9)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    assert layer.blobs[0].data.dtype == np.float32
    ref = conv_ref(bottom[0].data.astype(np.float64), layer.blobs[0].data.astype(np.float64),
                   layer.blobs[1].data.astype(np.float64), geom, g)
    assert_close(top[0].data, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,params,expected", [
    ((2, 3, 6, 6), "num_output: 4 kernel_size: 3 pad: 1 stride: 2",
     2 * 2 * 4 * 3 * 3 * 3 * 3 * 3 + 2 * 4 * 3 * 3),
    ((2, 4, 5, 5), "num_output: 6 kernel_size: 3 group: 2",
     2 * 2 * 6 * 3 * 3 * 2 * 3 * 3 + 2 * 6 * 3 * 3),
    ((1, 4, 5, 5), "num_output: 8 kernel_size: 3 group: 4 pad: 1 bias_term: false",
     2 * 1 * 8 * 5 * 5 * 1 * 3 * 3),
    ((1, 4, 5, 6), "num_output: 2 kernel_h: 1 kernel_w: 3",
     2 * 1 * 2 * 5 * 4 * 4 * 1 * 3 + 1 * 2 * 5 * 4),
], ids=["stride2_pad1", "group2", "depthwise_mult2_no_bias", "kernel_hw"])
def test_convolution_flops(shape, params, expected):
    layer = make_layer("Convolution", f"convolution_param {{ {params} }}")
    bottom = make_blobs([shape])
    top = [Blob((), dtype=np.float64)]
    layer.setup(bottom, top)
    assert layer.flops(bottom, top) == expected


CONV_ERRORS = [
    ((1, 3, 5, 5), "num_output: 4 kernel_size: 3 group: 2", ConfigError, "group"),
    ((1, 4, 5, 5), "num_output: 3 kernel_size: 3 group: 2", ConfigError, "group"),
    ((1, 3, 5, 5), "num_output: 4", ConfigError, "kernel_size"),
    ((1, 3, 5, 5), "num_output: 0 kernel_size: 3", ConfigError, "num_output"),
    ((1, 3, 5, 5), "kernel_size: 3", ConfigError, "num_output"),
    ((1, 3, 5, 5), "num_output: 2 kernel_size: 3 stride: 0", ConfigError, "stride"),
    ((1, 3, 5, 5), "num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", ConfigError,
     "kernel"),
    ((1, 3, 5, 5), "num_output: 2 kernel_h: 3", ConfigError, "kernel_w"),
    ((1, 1, 3, 3), "num_output: 2 kernel_size: 5", ShapeError, "kernel"),
    ((1, 1, 5, 5), "num_output: 2 kernel_size: 3 dilation: 3", ShapeError, "kernel"),
    ((1, 1, 3, 6), "num_output: 2 kernel_h: 4 kernel_w: 2", ShapeError, "kernel"),
    ((3, 5), "num_output: 2 kernel_size: 1", ShapeError, "4-D"),
]
# a transposed convolution grows its input: "kernel larger than the input" is Convolution's only
DECONV_ERRORS = [e for e in CONV_ERRORS if e[2] is not ShapeError or e[3] != "kernel"]


@pytest.mark.parametrize("type_name,shape,params,err,words",
                         [("Convolution",) + e for e in CONV_ERRORS]
                         + [("Deconvolution",) + e for e in DECONV_ERRORS])
def test_convolution_errors(type_name, shape, params, err, words):
    layer = make_layer(type_name, f"convolution_param {{ {params} }}")
    with pytest.raises(err) as info:
        run_forward(layer, make_blobs([shape]))
    assert isinstance(info.value, NetdefError)
    assert words in str(info.value), str(info.value)


def test_convolution_error_names_field():
    layer = make_layer("Convolution", "convolution_param { num_output: 4 kernel_size: 3 "
                                      "group: 2 }")
    with pytest.raises(ConfigError) as info:
        run_forward(layer, make_blobs([(1, 3, 5, 5)]))
    assert info.value.field == "convolution_param.group"
    assert "3" in str(info.value)          # the channel count that group must divide


# ----------------------------------------------------------------------------------------------
# Deconvolution

DECONV_CASES = [
    ("basic", (2, 3, 3, 3), 2, 1, True, (3, 3, 0, 0, 1, 1, 1, 1), "kernel_size: 3"),
    ("stride2_pad1", (2, 2, 3, 4), 3, 1, True, (3, 3, 1, 1, 2, 2, 1, 1),
     "kernel_size: 3 stride: 2 pad: 1"),
    ("group2_stride2_pad1", (2, 4, 3, 3), 4, 2, True, (3, 3, 1, 1, 2, 2, 1, 1),
     "kernel_size: 3 stride: 2 pad: 1 group: 2"),
    ("group3_out6", (1, 3, 3, 3), 6, 3, True, (2, 2, 0, 0, 2, 2, 1, 1),
     "kernel_size: 2 stride: 2 group: 3"),
    # group == num_output: every output channel gathers C/O input channels (depthwise path)
    ("group_eq_outputs", (2, 3, 3, 3), 3, 3, True, (3, 3, 1, 1, 2, 2, 1, 1),
     "kernel_size: 3 stride: 2 pad: 1 group: 3"),
    ("group_eq_outputs_mult2", (1, 4, 3, 4), 2, 2, False, (3, 2, 1, 0, 2, 1, 2, 1),
     "kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 dilation: 2 "
     "dilation: 1 group: 2"),
    ("dilation2_no_bias", (1, 2, 3, 3), 2, 1, False, (2, 2, 0, 0, 2, 2, 2, 2),
     "kernel_size: 2 stride: 2 dilation: 2"),
    ("kernel_hw", (1, 2, 3, 4), 2, 1, True, (2, 3, 0, 1, 2, 1, 1, 1),
     "kernel_h: 2 kernel_w: 3 pad_h: 0 pad_w: 1 stride_h: 2 stride_w: 1"),
]


@pytest.mark.parametrize("case", DECONV_CASES, ids=[c[0] for c in DECONV_CASES])
def test_deconvolution_forward_and_gradient(case):
    _, shape, o, g, bias, geom, _ = case
    layer = conv_layer(case, type_name="Deconvolution")
    bottom = make_blobs([shape], seed=11)
    top = run_forward(layer, bottom)
    kh, kw = geom[:2]
    assert layer.blobs[0].shape == (shape[1], o // g, kh, kw)
    b = layer.blobs[1].data if bias else None
    ref = deconv_ref(bottom[0].data, layer.blobs[0].data, b, geom, g)
    assert_close(top[0].data, ref)
    check_grad(layer, bottom)


def test_deconvolution_float32_and_flops():
    case = DECONV_CASES[2]
    _, shape, o, g, bias, geom, _ = case
    layer = conv_layer(case, dtype=np.float32, type_name="Deconvolution")
    bottom = make_blobs([shape], dtype=np.float32, seed=12)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    ref = deconv_ref(bottom[0].data.astype(np.float64), layer.blobs[0].data.astype(np.float64),
                     layer.blobs[1].data.astype(np.float64), geom, g)
    assert_close(top[0].data, ref, rtol=1e-4, atol=1e-5)
    n, c, h, w = shape
    # the multiply-adds of the convolution it is the transpose of, plus the bias
    assert layer.flops(bottom, top) == 2 * n * c * h * w * (o // g) * 3 * 3 + top[0].count


# ----------------------------------------------------------------------------------------------
# Im2col

IM2COL_CASES = [
    ("basic", (2, 2, 5, 5), (3, 3, 0, 0, 1, 1, 1, 1), "kernel_size: 3"),
    ("stride2_pad1", (1, 3, 6, 5), (3, 3, 1, 1, 2, 2, 1, 1), "kernel_size: 3 stride: 2 pad: 1"),
    ("dilation_hw", (1, 2, 7, 6), (2, 3, 1, 0, 1, 2, 2, 1),
     "kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2 dilation: 2 "
     "dilation: 1"),
]


@pytest.mark.parametrize("case", IM2COL_CASES, ids=[c[0] for c in IM2COL_CASES])
def test_im2col_forward_and_gradient(case):
    _, shape, geom, params = case
    layer = make_layer("Im2col", f"convolution_param {{ {params} }}")
    bottom = make_blobs([shape], seed=13)
    top = run_forward(layer, bottom)
    assert_close(top[0].data, im2col_ref(bottom[0].data, geom), rtol=0, atol=0)
    check_grad(layer, bottom)


def test_im2col_float32():
    _, shape, geom, params = IM2COL_CASES[1]
    layer = make_layer("Im2col", f"convolution_param {{ {params} }}", dtype=np.float32)
    bottom = make_blobs([shape], dtype=np.float32, seed=14)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    assert_close(top[0].data, im2col_ref(bottom[0].data.astype(np.float64), geom), rtol=0,
                 atol=0)


def test_im2col_errors():
    with pytest.raises(ConfigError, match="kernel_size"):
        run_forward(make_layer("Im2col", "convolution_param { stride: 2 }"),
                    make_blobs([(1, 1, 4, 4)]))
    with pytest.raises(ShapeError):
        run_forward(make_layer("Im2col", "convolution_param { kernel_size: 5 }"),
                    make_blobs([(1, 1, 3, 3)]))


# ----------------------------------------------------------------------------------------------
# Pooling

# (id, bottom shape, (kh, kw, ph, pw, sh, sw), ceil?, params)
POOL_CASES = [
    ("k3s2p1_ceil", (2, 2, 6, 6), (3, 3, 1, 1, 2, 2), True, "kernel_size: 3 stride: 2 pad: 1"),
    ("k3s2p1_floor", (2, 2, 6, 6), (3, 3, 1, 1, 2, 2), False,
     "kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR"),
    ("k3s2_ceil", (1, 2, 6, 6), (3, 3, 0, 0, 2, 2), True, "kernel_size: 3 stride: 2"),
    ("k3s2_floor", (1, 2, 6, 6), (3, 3, 0, 0, 2, 2), False,
     "kernel_size: 3 stride: 2 round_mode: FLOOR"),
    ("k2s2p1_last_dropped", (1, 2, 5, 5), (2, 2, 1, 1, 2, 2), True,
     "kernel_size: 2 stride: 2 pad: 1"),
    ("k2s1", (2, 2, 4, 5), (2, 2, 0, 0, 1, 1), True, "kernel_size: 2"),
    ("nonsquare", (1, 2, 5, 7), (3, 2, 1, 1, 2, 3), True,
     "kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 1 stride_h: 2 stride_w: 3"),
    ("nonsquare_floor", (1, 2, 5, 7), (3, 2, 1, 1, 2, 3), False,
     "kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 1 stride_h: 2 stride_w: 3 round_mode: FLOOR"),
    # pad only along H: Caffe's "drop a last window that starts in the padding" rule applies to
    # both axes as soon as either pad is non-zero
    ("pad_h_only", (1, 2, 4, 4), (3, 1, 1, 0, 2, 2), True,
     "kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride: 2"),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pooling_forward(case, method):
    _, shape, (kh, kw, ph, pw, sh, sw), ceil_mode, params = case
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} {params} }}")
    bottom = [Blob(shape, dtype=np.float64)]
    bottom[0].data = distinct(shape, seed=15)
    top = run_forward(layer, bottom)
    ref, _ = pool_ref(bottom[0].data, method, kh, kw, ph, pw, sh, sw, ceil_mode)
    assert np.all(np.isfinite(top[0].data))
    assert_close(top[0].data, ref)


def test_pooling_shapes_ceil_vs_floor():
    def shape_of(params, h, w):
        layer = make_layer("Pooling", f"pooling_param {{ {params} }}")
        return run_forward(layer, make_blobs([(1, 1, h, w)]))[0].shape[2:]

    assert shape_of("kernel_size: 3 stride: 2 pad: 1", 6, 6) == (4, 4)
    assert shape_of("kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", 6, 6) == (3, 3)
    assert shape_of("kernel_size: 3 stride: 2", 6, 6) == (3, 3)
    assert shape_of("kernel_size: 3 stride: 2 round_mode: FLOOR", 6, 6) == (2, 2)
    assert shape_of("kernel_size: 3 stride: 2 round_mode: CEIL", 7, 7) == (3, 3)
    # ceil gives 4 windows, the last would start in the padding: dropped
    assert shape_of("kernel_size: 2 stride: 2 pad: 1", 5, 5) == (3, 3)
    assert shape_of("kernel_size: 2 stride: 2 pad: 1", 3, 3) == (2, 2)
    assert shape_of("kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride: 2", 4, 4) == (3, 2)
    assert shape_of("kernel_size: 3 stride: 2 pad: 1", 112, 112) == (57, 57)  # ResNet pool1


POOL_GRAD_CASES = [c for c in POOL_CASES
                   if c[0] in {"k3s2p1_ceil", "k3s2p1_floor", "k2s2p1_last_dropped",
                               "nonsquare", "pad_h_only"}]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", POOL_GRAD_CASES, ids=[c[0] for c in POOL_GRAD_CASES])
def test_pooling_gradient(case, method):
    _, shape, _, _, params = case
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} {params} }}")
    bottom = [Blob(shape, dtype=np.float64)]
    bottom[0].data = distinct(shape, seed=16)
    check_grad(layer, bottom)


@pytest.mark.parametrize("case", [POOL_CASES[0], POOL_CASES[4], POOL_CASES[6]],
                         ids=["k3s2p1", "last_dropped", "nonsquare"])
def test_pooling_max_two_tops(case):
    _, shape, (kh, kw, ph, pw, sh, sw), ceil_mode, params = case
    layer = make_layer("Pooling", f"pooling_param {{ pool: MAX {params} }}")
    bottom = [Blob(shape, dtype=np.float64)]
    bottom[0].data = distinct(shape, seed=17)
    top = run_forward(layer, bottom, ntop=2)
    ref, mask = pool_ref(bottom[0].data, "MAX", kh, kw, ph, pw, sh, sw, ceil_mode)
    assert top[1].shape == top[0].shape
    assert_close(top[0].data, ref)
    assert_close(top[1].data, mask, rtol=0, atol=0)
    check_grad(layer, bottom, ntop=2, top_ids=[0])


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_global(method):
    shape = (2, 3, 4, 5)
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} global_pooling: true }}")
    bottom = [Blob(shape, dtype=np.float64)]
    bottom[0].data = distinct(shape, seed=18)
    top = run_forward(layer, bottom)
    x = bottom[0].data
    ref = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    assert top[0].shape == (2, 3, 1, 1)
    assert_close(top[0].data[:, :, 0, 0], ref)
    check_grad(layer, bottom)
    # a new input size changes the global window
    bottom[0].reshape((1, 3, 3, 2))
    bottom[0].data = distinct((1, 3, 3, 2), seed=19)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    x = bottom[0].data
    ref = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    assert_close(top[0].data[:, :, 0, 0], ref)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_float32(method):
    _, shape, (kh, kw, ph, pw, sh, sw), ceil_mode, params = POOL_CASES[0]
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} {params} }}",
                       dtype=np.float32)
    bottom = [Blob(shape, dtype=np.float32)]
    bottom[0].data = distinct(shape, seed=20)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    ref, _ = pool_ref(bottom[0].data.astype(np.float64), method, kh, kw, ph, pw, sh, sw)
    assert_close(top[0].data, ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("params,ntop,err,words", [
    ("kernel_size: 3 pad: 3", 1, ConfigError, "pad"),
    ("kernel_size: 2 pad: 2 stride: 2", 1, ConfigError, "pad"),
    ("kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2", 1, ConfigError, "pad"),
    ("global_pooling: true kernel_size: 2", 1, ConfigError, "kernel_size"),
    ("global_pooling: true pad: 1", 1, ConfigError, "pad"),
    ("global_pooling: true stride: 2", 1, ConfigError, "stride"),
    ("pool: STOCHASTIC kernel_size: 2", 2, ConfigError, "MAX"),
    ("pool: AVE kernel_size: 2", 2, ConfigError, "MAX"),
    ("stride: 2", 1, ConfigError, "kernel_size"),
    ("kernel_size: 0", 1, ConfigError, "kernel"),
    ("kernel_size: 2 stride: 0", 1, ConfigError, "stride"),
    ("kernel_size: 9", 1, ShapeError, "kernel"),
])
def test_pooling_errors(params, ntop, err, words):
    layer = make_layer("Pooling", f"pooling_param {{ {params} }}")
    with pytest.raises(err) as info:
        run_forward(layer, make_blobs([(1, 2, 5, 5)]), ntop=ntop)
    assert isinstance(info.value, NetdefError)
    assert words in str(info.value), str(info.value)


def test_pooling_needs_4d():
    with pytest.raises(ShapeError, match="4-D"):
        run_forward(make_layer("Pooling", "pooling_param { kernel_size: 2 }"),
                    make_blobs([(2, 3, 4)]))
