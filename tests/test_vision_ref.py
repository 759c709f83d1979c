"""Convolution, Deconvolution, Im2col and Pooling against direct float64 references written
from Caffe's formulas, plus Caffe's central-difference gradient checks."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import NetdefError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

RNG = np.random.default_rng(7)


def conv_ref(x, w, b, stride, pad, dil, group):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    og = o // group
    y = np.zeros((n, o, oh, ow))
    for ni in range(n):
        for oc in range(o):
            g = oc // og
            for yy in range(oh):
                for xx in range(ow):
                    acc = 0.0
                    for ci in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                iy, ix = yy * sh - ph + i * dh, xx * sw - pw + j * dw
                                if 0 <= iy < h and 0 <= ix < wd:
                                    acc += x[ni, g * cg + ci, iy, ix] * w[oc, ci, i, j]
                    y[ni, oc, yy, xx] = acc + (b[oc] if b is not None else 0)
    return y


CONV_CASES = [
    # (input shape, params, stride, pad, dil, group)
    ((2, 3, 6, 5), "num_output: 4 kernel_size: 3", (1, 1), (0, 0), (1, 1), 1),
    ((2, 3, 7, 7), "num_output: 2 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1), (1, 1), 1),
    ((1, 2, 7, 6), "num_output: 3 kernel_size: 2 dilation: 2 pad: 1", (1, 1), (1, 1), (2, 2), 1),
    ((2, 4, 5, 5), "num_output: 6 kernel_size: 3 group: 2 pad: 1", (1, 1), (1, 1), (1, 1), 2),
    ((2, 3, 5, 5), "num_output: 3 kernel_size: 3 group: 3 pad: 1", (1, 1), (1, 1), (1, 1), 3),
    ((2, 2, 6, 6), "num_output: 4 kernel_size: 3 group: 2 stride: 2", (2, 2), (0, 0), (1, 1), 2),
    ((2, 4, 3, 3), "num_output: 5 kernel_size: 1", (1, 1), (0, 0), (1, 1), 1),
    ((2, 4, 3, 3), "num_output: 4 kernel_size: 1 group: 2", (1, 1), (0, 0), (1, 1), 2),
    ((1, 2, 6, 7), "num_output: 2 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 stride_h: 2 "
     "stride_w: 1 bias_term: false", (2, 1), (1, 0), (1, 1), 1),
]
FILL = "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.5 }"


@pytest.mark.parametrize("shape,params,stride,pad,dil,group", CONV_CASES)
def test_convolution_forward_and_gradients(shape, params, stride, pad, dil, group):
    layer = make_layer("Convolution", f"convolution_param {{ {params} {FILL} }}")
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    b = layer.blobs[1].data if len(layer.blobs) > 1 else None
    ref = conv_ref(bottom[0].data, layer.blobs[0].data, b, stride, pad, dil, group)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, top)
    # the layer's own flops: 2 MACs per weight tap and output, plus the bias adds
    o, cg, kh, kw = layer.blobs[0].shape
    expected = 2 * ref.size * cg * kh * kw + (ref.size if b is not None else 0)
    assert layer.flops(bottom, top) == expected


def test_convolution_float32_matches_float64():
    l64 = make_layer("Convolution", f"convolution_param {{ num_output: 3 kernel_size: 3 {FILL} }}")
    l32 = make_layer("Convolution", f"convolution_param {{ num_output: 3 kernel_size: 3 {FILL} }}",
                     dtype=np.float32)
    x = RNG.standard_normal((2, 2, 5, 5))
    t64 = run_forward(l64, make_blobs([x]))
    t32 = run_forward(l32, make_blobs([x], dtype=np.float32))
    assert t32[0].data.dtype == np.float32
    np.testing.assert_allclose(t32[0].data, t64[0].data, rtol=1e-4, atol=1e-5)


def test_depthwise_channel_multiplier():
    layer = make_layer("Convolution", f"convolution_param {{ num_output: 4 kernel_size: 3 "
                                      f"group: 2 pad: 1 stride: 2 {FILL} }}")
    bottom = make_blobs([(2, 2, 5, 5)])
    top = run_forward(layer, bottom)
    ref = conv_ref(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1),
                   (1, 1), 2)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, top)


def deconv_ref(x, w, b, s, p, group):
    n, c, h, wd = x.shape
    _, og, k, _ = w.shape
    o = og * group
    cg = c // group
    full = np.zeros((n, o, s * (h - 1) + k, s * (wd - 1) + k))
    for ni in range(n):
        for ci in range(c):
            g = ci // cg
            for yy in range(h):
                for xx in range(wd):
                    full[ni, g * og:(g + 1) * og, yy * s:yy * s + k, xx * s:xx * s + k] += \
                        x[ni, ci, yy, xx] * w[ci]
    out = full[:, :, p:full.shape[2] - p, p:full.shape[3] - p]
    return out + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("shape,s,p,k,g,o", [((2, 3, 3, 4), 2, 1, 3, 1, 2),
                                               ((1, 4, 3, 3), 1, 0, 2, 2, 4),
                                               ((2, 2, 2, 2), 3, 0, 3, 1, 3)])
def test_deconvolution(shape, s, p, k, g, o):
    layer = make_layer("Deconvolution", f"convolution_param {{ num_output: {o} kernel_size: {k} "
                                        f"stride: {s} pad: {p} group: {g} {FILL} }}")
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    ref = deconv_ref(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, s, p, g)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, top)


def test_im2col_layer():
    layer = make_layer("Im2col", "convolution_param { kernel_size: 2 stride: 1 pad: 1 }")
    bottom = make_blobs([(2, 2, 3, 3)])
    top = run_forward(layer, bottom)
    x = np.pad(bottom[0].data, ((0, 0), (0, 0), (1, 1), (1, 1)))
    assert top[0].shape == (2, 8, 4, 4)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                np.testing.assert_array_equal(top[0].data[:, (c * 2 + i) * 2 + j],
                                              x[:, c, i:i + 4, j:j + 4])
    GradientChecker().check(layer, bottom, top)


def pool_ref(x, k, s, p, method, ceil=True):
    n, c, h, w = x.shape
    kh, kw = k
    sh, sw = s
    ph, pw = p
    rnd = np.ceil if ceil else np.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph and (oh - 1) * sh >= h + ph:
        oh -= 1
    if pw and (ow - 1) * sw >= w + pw:
        ow -= 1
    y = np.zeros((n, c, oh, ow))
    mask = np.zeros((n, c, oh, ow))
    for a in range(oh):
        for b in range(ow):
            hs, ws = a * sh - ph, b * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs0, ws0, he0, we0 = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs0:he0, ws0:we0]
            if method == "MAX":
                flat = win.reshape(n, c, -1)
                idx = flat.argmax(axis=2)
                y[:, :, a, b] = flat.max(axis=2)
                ww = we0 - ws0
                mask[:, :, a, b] = (hs0 + idx // ww) * w + ws0 + idx % ww
            else:
                y[:, :, a, b] = win.sum(axis=(2, 3)) / size
    return y, mask


POOL_CASES = [
    ((2, 2, 6, 6), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), True),
    ((2, 2, 6, 6), "kernel_size: 3 stride: 2 round_mode: FLOOR", (3, 3), (2, 2), (0, 0), False),
    ((1, 3, 6, 6), "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), True),
    ((1, 2, 5, 7), "kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1), True),
    ((2, 1, 7, 5), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1",
     (3, 2), (2, 1), (1, 0), True),
    ((1, 2, 7, 7), "kernel_size: 3 stride: 3 pad: 2", (3, 3), (3, 3), (2, 2), True),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,params,k,s,p,ceil", POOL_CASES)
def test_pooling(method, shape, params, k, s, p, ceil):
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} {params} }}")
    x = RNG.permutation(np.prod(shape)).reshape(shape) / 7.0   # distinct values: no ties
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    ref, _ = pool_ref(x, k, s, p, method, ceil)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    GradientChecker().check(layer, bottom, top)


def test_pool_ceil_vs_floor_and_clip_shapes():
    def shape(params, hw=6):
        layer = make_layer("Pooling", f"pooling_param {{ {params} }}", init_params=False)
        t = [Blob(())]
        layer.setup([Blob((1, 1, hw, hw))], t)
        return t[0].shape[2:]
    assert shape("kernel_size: 3 stride: 2") == (3, 3)                 # ceil(3/2)+1
    assert shape("kernel_size: 3 stride: 2 round_mode: FLOOR") == (2, 2)
    # pad 1: ceil((6+2-3)/2)+1 = 4, and (4-1)*2 = 6 < 6+1 keeps it
    assert shape("kernel_size: 3 stride: 2 pad: 1") == (4, 4)
    # pad 1, k 2, s 2 on 6: ceil(6/2)+1 = 4, (4-1)*2 = 6 >= 6+1? no -> 4
    assert shape("kernel_size: 2 stride: 2 pad: 1") == (4, 4)
    # pad 1, k 2, s 2 on 5: ceil(5/2)+1 = 4, (4-1)*2 = 6 >= 5+1 -> clipped to 3
    assert shape("kernel_size: 2 stride: 2 pad: 1", 5) == (3, 3)


def test_global_pooling_and_mask_top():
    x = RNG.permutation(2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(float)
    layer = make_layer("Pooling", "pooling_param { pool: AVE global_pooling: true }")
    top = run_forward(layer, make_blobs([x]))
    np.testing.assert_allclose(top[0].data[..., 0, 0], x.mean(axis=(2, 3)))
    layer = make_layer("Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
    top = run_forward(layer, make_blobs([x]), ntop=2)
    ref, mask = pool_ref(x, (2, 2), (2, 2), (0, 0), "MAX")
    np.testing.assert_array_equal(top[1].data, mask)
    np.testing.assert_allclose(top[0].data, ref)


@pytest.mark.parametrize("type_,params,word", [
    ("Convolution", "convolution_param { num_output: 4 kernel_size: 3 group: 2 }", "group"),
    ("Convolution", "convolution_param { num_output: 4 }", "kernel_size"),
    ("Convolution", "convolution_param { kernel_size: 3 }", "num_output"),
    ("Convolution", "convolution_param { num_output: 2 kernel_size: 9 }", "larger"),
    ("Pooling", "pooling_param { kernel_size: 2 pad: 2 }", "pad"),
    ("Pooling", "pooling_param { global_pooling: true kernel_size: 2 }", "global"),
    ("Pooling", "pooling_param { }", "kernel_size"),
])
def test_vision_config_errors(type_, params, word):
    layer = make_layer(type_, params)
    with pytest.raises(NetdefError) as ei:
        run_forward(layer, make_blobs([(1, 3, 5, 5)]))
    assert word in str(ei.value)
