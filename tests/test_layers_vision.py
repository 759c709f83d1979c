"""Vision layers (Convolution, Deconvolution, Im2col, Pooling): forward values against float64
references written here from the definitions, Caffe's gradient checks, shapes, errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.layers import vision as V
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

FILL = "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.5 }"


# -- references -------------------------------------------------------------------------------
def conv_out(size, k, p, s, d):
    span = size + 2 * p - (d * (k - 1) + 1)
    return int(span / s) + 1            # C integer division, as Caffe


def conv_ref(x, w, b, stride=(1, 1), pad=(0, 0), dil=(1, 1), group=1):
    """Direct definition: y[n,o,i,j] = b[o] + sum_{c in group(o), a, e} w[o,c,a,e] *
    x[n, c, i*sh - ph + a*dh, j*sw - pw + e*dw] (zero outside the image)."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    oh, ow = conv_out(h, kh, ph, sh, dh), conv_out(wd, kw, pw, sw, dw)
    og = o // group
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                for ci in range(cg):
                    for a in range(kh):
                        iy = i * sh - ph + a * dh
                        if not 0 <= iy < h:
                            continue
                        for e in range(kw):
                            ix = j * sw - pw + e * dw
                            if 0 <= ix < wd:
                                y[:, oc, i, j] += w[oc, ci, a, e] * x[:, g * cg + ci, iy, ix]
        if b is not None:
            y[:, oc] += b[oc]
    return y


def deconv_ref(x, w, b, stride=(1, 1), pad=(0, 0), dil=(1, 1), group=1):
    """Scatter-add: every input pixel adds x * w[c] into the output at stride spacing."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    o = og * group
    cg = c // group
    fh, fw = sh * (h - 1) + dh * (kh - 1) + 1, sw * (wd - 1) + dw * (kw - 1) + 1
    full = np.zeros((n, o, fh, fw))
    for ci in range(c):
        g = ci // cg
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for e in range(kw):
                        full[:, g * og:(g + 1) * og, i * sh + a * dh, j * sw + e * dw] += \
                            x[:, ci, i, j][:, None] * w[ci, :, a, e][None, :]
    y = full[:, :, ph:fh - ph, pw:fw - pw]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


def pool_ref(x, k, s, p, method, ceil=True):
    """Caffe's pooling written out: sizes, last-window rule, AVE divisor, MAX first argmax."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = k, s, p
    rnd = np.ceil if ceil else np.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    y = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            win = x[:, :, h0:h1, w0:w1]
            if method == "AVE":
                y[:, :, i, j] = win.sum(axis=(2, 3)) / size
            else:
                flat = win.reshape(n, c, -1)
                arg = flat.argmax(axis=2)                      # first maximum in scan order
                y[:, :, i, j] = flat.max(axis=2)
                mask[:, :, i, j] = (h0 + arg // (w1 - w0)) * w + (w0 + arg % (w1 - w0))
    return y, mask


def conv_layer(params, dtype=np.float64, type_="Convolution"):
    return make_layer(type_, f"convolution_param {{ {params} {FILL} }}", dtype=dtype)


def bias_of(layer):
    return layer.blobs[1].data if len(layer.blobs) > 1 else None


# -- Convolution ------------------------------------------------------------------------------
# (bottom shape, params, stride, pad, dilation, group)
CONV_CASES = [
    ((2, 3, 6, 5), "num_output: 4 kernel_size: 3", (1, 1), (0, 0), (1, 1), 1),
    ((2, 3, 7, 7), "num_output: 2 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1), (1, 1), 1),
    ((2, 2, 7, 6), "num_output: 3 kernel_size: 3 dilation: 2 pad: 1", (1, 1), (1, 1), (2, 2), 1),
    ((2, 4, 5, 5), "num_output: 6 kernel_size: 3 group: 2 pad: 1", (1, 1), (1, 1), (1, 1), 2),
    ((2, 4, 6, 6), "num_output: 4 kernel_size: 3 group: 4 pad: 1", (1, 1), (1, 1), (1, 1), 4),
    ((2, 3, 7, 6), "num_output: 6 kernel_size: 3 group: 3 pad: 2 stride: 2 dilation: 2",
     (2, 2), (2, 2), (2, 2), 3),
    ((2, 4, 3, 4), "num_output: 5 kernel_size: 1", (1, 1), (0, 0), (1, 1), 1),
    ((2, 4, 5, 5), "num_output: 3 kernel_size: 1 stride: 2", (2, 2), (0, 0), (1, 1), 1),
    ((2, 2, 6, 7), "num_output: 3 kernel_h: 3 kernel_w: 2 pad_h: 1 stride_h: 2 stride_w: 1 "
     "bias_term: false", (2, 1), (1, 0), (1, 1), 1),
    ((1, 2, 5, 6), "num_output: 2 kernel_size: 2 kernel_size: 3 pad: 1 pad: 0 stride: 1 "
     "stride: 2", (1, 2), (1, 0), (1, 1), 1),
    # padding wider than the image: whole kernel columns fall outside it
    ((3, 2, 3, 1), "num_output: 2 kernel_size: 7 pad: 3", (1, 1), (3, 3), (1, 1), 1),
    ((3, 2, 3, 1), "num_output: 2 group: 2 kernel_size: 7 pad: 3", (1, 1), (3, 3), (1, 1), 2),
    ((2, 1, 3, 1), "num_output: 2 kernel_size: 3 dilation: 3 pad: 3", (1, 1), (3, 3), (3, 3), 1),
]


@pytest.mark.parametrize("shape,params,stride,pad,dil,group", CONV_CASES)
def test_convolution_forward(shape, params, stride, pad, dil, group):
    layer = conv_layer(params)
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    ref = conv_ref(bottom[0].data, layer.blobs[0].data, bias_of(layer), stride, pad, dil, group)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("idx", [1, 2, 3, 4, 5, 6, 8, 10, 11, 12])
def test_convolution_gradients(idx):
    shape, params = CONV_CASES[idx][:2]
    layer = conv_layer(params)
    bottom = make_blobs([shape])
    top = [Blob(dtype=np.float64)]
    GradientChecker().check(layer, bottom, top)


def test_convolution_batch_chunks_and_multiple_bottoms(monkeypatch):
    """The batch split into several im2col chunks gives the same values and gradients; two
    bottoms share the weights."""
    monkeypatch.setattr(V, "COL_CHUNK_ELEMENTS", 1)        # one image per chunk
    layer = conv_layer("num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2")
    bottom = make_blobs([(3, 2, 5, 5), (3, 2, 5, 5)], seed=3)
    top = [Blob(dtype=np.float64), Blob(dtype=np.float64)]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    for b, t in zip(bottom, top):
        ref = conv_ref(b.data, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1),
                       (1, 1), 2)
        np.testing.assert_allclose(t.data, ref, rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, top, setup=False)


def test_convolution_kernel_overhanging_input_truncates_like_caffe():
    # (2 + 0 - 3) / 2 truncates to 0 in C: one output row whose window hangs off the image
    layer = conv_layer("num_output: 2 kernel_size: 3 stride: 2")
    bottom = make_blobs([(1, 2, 2, 5)])
    top = run_forward(layer, bottom)
    assert top[0].shape == (1, 2, 1, 2)
    ref = conv_ref(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, (2, 2))
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)


def test_convolution_param_gradients_accumulate_and_default_fillers():
    layer = make_layer("Convolution", "convolution_param { num_output: 2 kernel_size: 3 }")
    bottom = make_blobs([(2, 2, 4, 4)])
    top = run_forward(layer, bottom)
    assert layer.blobs[0].shape == (2, 2, 3, 3) and layer.blobs[1].shape == (2,)
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()   # constant 0
    layer.blobs[0].data = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    top[0].diff[...] = np.random.default_rng(1).standard_normal(top[0].shape)
    layer.backward(top, [True], bottom)
    w1, b1, x1 = (layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy(),
                  bottom[0].diff.copy())
    assert np.abs(w1).sum() > 0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * w1)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * b1)
    np.testing.assert_allclose(bottom[0].diff, x1)                   # bottom diff overwritten
    np.testing.assert_allclose(b1, top[0].diff.sum(axis=(0, 2, 3)))


@pytest.mark.parametrize("channels,params,tiles", [
    (2, "num_output: 4 kernel_size: 3 pad: 1 stride: 2", False),
    (3, "num_output: 3 kernel_size: 3 group: 3 pad: 1", False),
    (2, "num_output: 4 kernel_size: 1", False),
    # stride 1: the register tiles (netdef.backend.cpu.microkernel)
    (2, "num_output: 5 kernel_size: 3 pad: 1", True),
    (3, "num_output: 9 kernel_size: 3 dilation: 2 pad: 2 bias_term: false", True),
    (1, "num_output: 13 kernel_h: 2 kernel_w: 4", True)])
def test_convolution_float32(monkeypatch, channels, params, tiles):
    from netdef.backend.cpu import gemm as G
    from netdef.backend.cpu import microkernel as MK
    used = []
    real = MK.tiles_for
    monkeypatch.setattr(MK, "tiles_for", lambda *a: used.append(real(*a)) or used[-1])
    bwd = []
    real_bwd = V.ConvolutionLayer._backward_x_tiles
    monkeypatch.setattr(V.ConvolutionLayer, "_backward_x_tiles",
                        lambda self, *a: bwd.append(real_bwd(self, *a)) or bwd[-1])
    l64 = conv_layer(params)
    l32 = conv_layer(params, dtype=np.float32)
    x = np.random.default_rng(5).standard_normal((2, channels, 6, 16))
    t64 = run_forward(l64, make_blobs([x]))
    t32 = run_forward(l32, make_blobs([x], dtype=np.float32))
    assert t32[0].data.dtype == np.float32
    assert (bool(used) and used[-1] is not None) == (tiles and G.AVAILABLE and MK.ENABLED)
    np.testing.assert_allclose(t32[0].data, t64[0].data, rtol=1e-4, atol=1e-5)
    dy = np.random.default_rng(6).standard_normal(t64[0].shape)
    t64[0].diff[...] = dy
    t32[0].diff[...] = dy
    b64, b32 = make_blobs([x]), make_blobs([x], dtype=np.float32)
    b32[0].diff[...] = np.nan                                   # overwritten, not added to
    l64.backward(t64, [True], b64)
    l32.backward(t32, [True], b32)
    assert (bool(bwd) and bwd[-1]) == (tiles and G.AVAILABLE and MK.ENABLED)  # dx: tiles
    assert l32.blobs[0].diff.dtype == np.float32
    np.testing.assert_allclose(b32[0].diff, b64[0].diff, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(l32.blobs[0].diff, l64.blobs[0].diff, rtol=1e-4, atol=1e-4)


def test_convolution_flops_and_shape_inference():
    layer = make_layer("Convolution", "convolution_param { num_output: 6 kernel_size: 3 "
                       "stride: 2 pad: 1 group: 2 }", init_params=False)
    bottom = [Blob((2, 4, 9, 8))]
    top = [Blob(dtype=np.float64)]
    layer.setup(bottom, top)
    assert top[0].shape == (2, 6, 5, 4)
    assert layer.blobs[0].shape == (6, 2, 3, 3) and not layer.blobs[0].allocated
    assert not bottom[0].allocated
    assert layer.flops(bottom, top) == 2 * 2 * 6 * 5 * 4 * 2 * 3 * 3 + 2 * 6 * 5 * 4


# -- Deconvolution ----------------------------------------------------------------------------
DECONV_CASES = [
    ((2, 3, 3, 4), "num_output: 2 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1), (1, 1), 1),
    ((1, 4, 3, 3), "num_output: 4 kernel_size: 2 group: 2", (1, 1), (0, 0), (1, 1), 2),
    ((2, 2, 3, 2), "num_output: 3 kernel_h: 3 kernel_w: 2 stride: 3 dilation: 2 "
     "bias_term: false", (3, 3), (0, 0), (2, 2), 1),
    ((2, 3, 3, 3), "num_output: 3 kernel_size: 4 stride: 2 pad: 1 group: 3", (2, 2), (1, 1),
     (1, 1), 3),
    ((2, 4, 3, 3), "num_output: 2 kernel_size: 3 stride: 2 group: 2", (2, 2), (0, 0), (1, 1), 2),
    ((3, 2, 1, 2), "num_output: 2 kernel_size: 5 pad: 2 stride: 3", (3, 3), (2, 2), (1, 1), 1),
]


@pytest.mark.parametrize("shape,params,stride,pad,dil,group", DECONV_CASES)
def test_deconvolution(shape, params, stride, pad, dil, group):
    layer = conv_layer(params, type_="Deconvolution")
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    c, og = layer.blobs[0].shape[:2]
    assert c == shape[1] and og * group == layer.num_output
    ref = deconv_ref(bottom[0].data, layer.blobs[0].data, bias_of(layer), stride, pad, dil,
                     group)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, top, setup=False)


def test_deconvolution_float32_and_flops():
    params = "num_output: 2 kernel_size: 4 stride: 2 pad: 1"
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 4))
    l64 = conv_layer(params, type_="Deconvolution")
    l32 = conv_layer(params, dtype=np.float32, type_="Deconvolution")
    t64 = run_forward(l64, make_blobs([x]))
    t32 = run_forward(l32, make_blobs([x], dtype=np.float32))
    assert t32[0].shape == (2, 2, 8, 8) and t32[0].data.dtype == np.float32
    np.testing.assert_allclose(t32[0].data, t64[0].data, rtol=1e-4, atol=1e-5)
    assert l64.flops(make_blobs([x]), t64) == 2 * x.size * 2 * 16 + t64[0].count


# -- Im2col -----------------------------------------------------------------------------------
@pytest.mark.parametrize("params,k,s,p,d", [
    ("kernel_size: 2 pad: 1", (2, 2), (1, 1), (1, 1), (1, 1)),
    ("kernel_h: 3 kernel_w: 2 stride: 2 dilation: 2 pad_w: 1", (3, 2), (2, 2), (0, 1), (2, 2)),
    ("kernel_size: 7 pad: 4", (7, 7), (1, 1), (4, 4), (1, 1)),
])
def test_im2col(params, k, s, p, d):
    layer = make_layer("Im2col", f"convolution_param {{ {params} }}")
    bottom = make_blobs([(2, 2, 5, 5)])
    top = run_forward(layer, bottom)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = k, s, p, d
    oh, ow = conv_out(5, kh, ph, sh, dh), conv_out(5, kw, pw, sw, dw)
    assert top[0].shape == (2, 2 * kh * kw, oh, ow)
    xp = np.pad(bottom[0].data, ((0, 0), (0, 0), (ph, ph + 4), (pw, pw + 4)))
    for c in range(2):
        for a in range(kh):
            for e in range(kw):
                want = xp[:, c, a * dh:a * dh + sh * oh:sh, e * dw:e * dw + sw * ow:sw]
                np.testing.assert_array_equal(top[0].data[:, (c * kh + a) * kw + e], want)
    GradientChecker().check(layer, bottom, top, setup=False)


# -- Pooling ----------------------------------------------------------------------------------
def distinct(shape, seed=0):
    """Values at least 0.05 apart, so MAX has no ties within the checker's step."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.05 - n * 0.025).reshape(shape)


# (bottom shape, params, kernel, stride, pad, ceil, expected top H, W)
POOL_CASES = [
    ((2, 2, 6, 6), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), True, (3, 3)),
    ((2, 2, 6, 6), "kernel_size: 3 stride: 2 round_mode: FLOOR", (3, 3), (2, 2), (0, 0), False,
     (2, 2)),
    ((1, 2, 5, 7), "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), True, (3, 4)),
    # the ceil'd last window would start in the padding: Caffe drops it (3 -> 2)
    ((1, 2, 4, 4), "kernel_size: 3 stride: 3 pad: 2", (3, 3), (3, 3), (2, 2), True, (2, 2)),
    ((1, 3, 5, 6), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1",
     (3, 2), (2, 1), (1, 0), True, (3, 5)),
    ((1, 2, 5, 5), "kernel_size: 2 stride: 2 pad: 1 round_mode: FLOOR", (2, 2), (2, 2), (1, 1),
     False, (3, 3)),
    # kernel taller than the input: ceil((2 - 3) / 2) + 1 = 1 window clipped to the image
    ((1, 2, 2, 5), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), True, (1, 2)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,params,k,s,p,ceil,hw", POOL_CASES)
def test_pooling(method, shape, params, k, s, p, ceil, hw):
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} {params} }}")
    bottom = make_blobs([distinct(shape)])
    top = run_forward(layer, bottom)
    ref, mask = pool_ref(bottom[0].data, k, s, p, method, ceil)
    assert top[0].shape[2:] == hw == ref.shape[2:]
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    GradientChecker().check(layer, bottom, top, setup=False)


def test_max_pooling_mask_top_and_ties():
    layer = make_layer("Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }")
    x = distinct((2, 2, 5, 6), seed=4)
    x[0, 0, 0:2, 0:2] = 7.0                      # a tie: the first in scan order wins
    bottom = make_blobs([x])
    top = run_forward(layer, bottom, ntop=2)
    ref, mask = pool_ref(x, (3, 3), (2, 2), (1, 1), "MAX")
    np.testing.assert_allclose(top[0].data, ref)
    np.testing.assert_array_equal(top[1].data, mask)
    assert top[1].data[0, 0, 0, 0] == 0.0
    top[0].diff[...] = 1.0
    top[1].diff[...] = 0.0
    layer.backward(top, [True], bottom)
    want = np.zeros(x.shape)
    for idx in np.ndindex(*mask.shape):
        m = int(mask[idx])
        want[idx[0], idx[1], m // x.shape[3], m % x.shape[3]] += 1.0
    np.testing.assert_array_equal(bottom[0].diff, want)
    assert want[0, 0, 0, 0] == 1.0 and want[0, 0, 1, 0] == 1.0


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} global_pooling: true }}")
    bottom = make_blobs([distinct((2, 3, 4, 5), seed=1)])
    top = run_forward(layer, bottom)
    x = bottom[0].data
    want = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    assert top[0].shape == (2, 3, 1, 1)
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], want, rtol=1e-12)
    assert layer.flops(bottom, top) == 2 * 3 * 20
    GradientChecker().check(layer, bottom, top, setup=False)


def test_pooling_float32():
    x = distinct((2, 3, 7, 7), seed=2)
    for method in ("MAX", "AVE"):
        layer = make_layer("Pooling", f"pooling_param {{ pool: {method} kernel_size: 3 "
                           f"stride: 2 pad: 1 }}", dtype=np.float32)
        top = run_forward(layer, make_blobs([x], dtype=np.float32))
        assert top[0].data.dtype == np.float32
        ref, _ = pool_ref(x, (3, 3), (2, 2), (1, 1), method)
        np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-5)


# -- errors -----------------------------------------------------------------------------------
ERRORS = [
    ("Convolution", "convolution_param { num_output: 2 }", (1, 2, 5, 5), ConfigError,
     "kernel_size"),
    ("Convolution", "convolution_param { kernel_size: 3 }", (1, 2, 5, 5), ConfigError,
     "num_output"),
    ("Convolution", "convolution_param { num_output: 4 kernel_size: 3 group: 2 }", (1, 3, 5, 5),
     ConfigError, "group"),
    ("Convolution", "convolution_param { num_output: 3 kernel_size: 3 group: 2 }", (1, 4, 5, 5),
     ConfigError, "num_output"),
    ("Convolution", "convolution_param { num_output: 2 kernel_size: 3 stride: 0 }",
     (1, 2, 5, 5), ConfigError, "stride"),
    ("Convolution", "convolution_param { num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3 }",
     (1, 2, 5, 5), ConfigError, "not both"),
    ("Convolution", "convolution_param { num_output: 2 kernel_size: 9 }", (1, 2, 5, 5),
     ShapeError, "larger"),
    ("Convolution", "convolution_param { num_output: 2 kernel_size: 3 axis: 2 }", (1, 2, 5, 5),
     ConfigError, "axis"),
    ("Deconvolution", "convolution_param { num_output: 2 kernel_size: 2 pad: 3 }",
     (1, 2, 2, 2), ShapeError, "pad"),
    ("Im2col", "convolution_param { stride: 1 }", (1, 2, 5, 5), ConfigError, "kernel_size"),
    ("Pooling", "pooling_param { kernel_size: 2 pad: 2 }", (1, 2, 5, 5), ConfigError, "pad"),
    ("Pooling", "pooling_param { global_pooling: true pad: 1 }", (1, 2, 5, 5), ConfigError,
     "pad 0"),
    ("Pooling", "pooling_param { global_pooling: true kernel_size: 2 }", (1, 2, 5, 5),
     ConfigError, "global"),
    ("Pooling", "pooling_param { stride: 2 }", (1, 2, 5, 5), ConfigError, "kernel_size"),
    ("Pooling", "pooling_param { kernel_size: 2 stride: 0 }", (1, 2, 5, 5), ConfigError,
     "stride"),
    ("Pooling", "pooling_param { kernel_size: 7 round_mode: FLOOR }", (1, 2, 5, 5), ShapeError,
     "0x0"),
]


@pytest.mark.parametrize("type_,params,shape,err,word", ERRORS)
def test_config_errors(type_, params, shape, err, word):
    layer = make_layer(type_, params)
    with pytest.raises(err) as ei:
        run_forward(layer, make_blobs([shape]))
    assert isinstance(ei.value, NetdefError)
    assert word in str(ei.value)
    assert "'test'" in str(ei.value)


def test_ave_pooling_mask_top_rejected():
    layer = make_layer("Pooling", "pooling_param { pool: AVE kernel_size: 2 }")
    with pytest.raises(ConfigError, match="MAX"):
        run_forward(layer, make_blobs([(1, 1, 4, 4)]), ntop=2)
