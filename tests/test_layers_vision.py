"""Vision layers (Convolution, Deconvolution, Im2col, Pooling incl. STOCHASTIC, SPP): forward
values against the float64 references of ``layer_refs`` (written from Caffe's definitions),
Caffe's central-difference gradient checks on the bottom and every parameter, shapes, flops
and errors."""
import numpy as np
import pytest

from layer_refs import (
    conv_out,
    conv_ref,
    deconv_ref,
    im2col_ref,
    pool_ref,
    spp_ref,
    stochastic_ref,
)
from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.layers import vision as V
from netdef.testing import TEST, TRAIN, GradientChecker, make_blobs, make_layer, run_forward

FILL = "weight_filler { type: 'gaussian' std: 0.5 } bias_filler { type: 'gaussian' std: 0.5 }"


def conv_layer(params, dtype=np.float64, type_="Convolution"):
    return make_layer(type_, f"convolution_param {{ {params} {FILL} }}", dtype=dtype)


def bias_of(layer):
    return layer.blobs[1].data if len(layer.blobs) > 1 else None


def distinct(shape, seed=0):
    """Values 0.05 apart in random order: no ties for MAX, and the checker's 1e-2 step never
    changes an argmax."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    return (rng.permutation(n).astype(np.float64) - n / 2).reshape(shape) * 0.05


def ids(cases):
    return [c[0] for c in cases]


# -- Convolution ------------------------------------------------------------------------------
# (id, bottom shape, params, stride, pad, dilation, group, gradient-checked)
CONV_CASES = [
    ("k3", (2, 3, 6, 5), "num_output: 4 kernel_size: 3", (1, 1), (0, 0), (1, 1), 1, True),
    ("k3_5x5", (2, 3, 5, 5), "num_output: 4 kernel_size: 3", (1, 1), (0, 0), (1, 1), 1, True),
    ("s2p1", (2, 3, 7, 7), "num_output: 2 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1),
     (1, 1), 1, True),
    ("s2p1_6x6", (2, 3, 6, 6), "num_output: 2 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1),
     (1, 1), 1, True),
    ("d2p1", (2, 2, 7, 6), "num_output: 3 kernel_size: 3 dilation: 2 pad: 1", (1, 1), (1, 1),
     (2, 2), 1, True),
    ("d2p1_n1", (1, 2, 7, 6), "num_output: 3 kernel_size: 3 pad: 1 dilation: 2", (1, 1), (1, 1),
     (2, 2), 1, True),
    ("k2d2p1", (1, 2, 7, 6), "num_output: 3 kernel_size: 2 dilation: 2 pad: 1", (1, 1), (1, 1),
     (2, 2), 1, True),
    ("g2p1", (2, 4, 5, 5), "num_output: 6 kernel_size: 3 group: 2 pad: 1", (1, 1), (1, 1),
     (1, 1), 2, True),
    ("g2s2", (2, 4, 6, 6), "num_output: 4 kernel_size: 3 group: 2 stride: 2", (2, 2), (0, 0),
     (1, 1), 2, False),
    ("g2s2_c2", (2, 2, 6, 6), "num_output: 4 kernel_size: 3 group: 2 stride: 2", (2, 2), (0, 0),
     (1, 1), 2, True),
    ("depthwise", (2, 3, 5, 5), "num_output: 3 kernel_size: 3 pad: 1 group: 3", (1, 1), (1, 1),
     (1, 1), 3, True),
    ("depthwise_c4", (2, 4, 6, 6), "num_output: 4 kernel_size: 3 group: 4 pad: 1", (1, 1),
     (1, 1), (1, 1), 4, True),
    ("depthwise_mult2", (2, 3, 5, 5), "num_output: 6 kernel_size: 3 pad: 1 group: 3", (1, 1),
     (1, 1), (1, 1), 3, True),
    ("depthwise_mult2_s2p1", (2, 2, 5, 5), "num_output: 4 kernel_size: 3 group: 2 pad: 1 "
     "stride: 2", (2, 2), (1, 1), (1, 1), 2, True),
    ("depthwise_mult2_s2_d2", (1, 2, 7, 7), "num_output: 4 kernel_size: 3 pad: 2 stride: 2 "
     "dilation: 2 group: 2 bias_term: false", (2, 2), (2, 2), (2, 2), 2, True),
    ("depthwise_mult2_s2_d2_p2", (2, 3, 7, 6), "num_output: 6 kernel_size: 3 group: 3 pad: 2 "
     "stride: 2 dilation: 2", (2, 2), (2, 2), (2, 2), 3, True),
    ("depthwise_nonsquare", (1, 2, 5, 6), "num_output: 2 kernel_h: 2 kernel_w: 3 pad_h: 0 "
     "pad_w: 1 stride_h: 1 stride_w: 2 group: 2", (1, 2), (0, 1), (1, 1), 2, False),
    ("pointwise", (2, 4, 3, 3), "num_output: 5 kernel_size: 1", (1, 1), (0, 0), (1, 1), 1, True),
    ("pointwise_3x4", (2, 4, 3, 4), "num_output: 5 kernel_size: 1", (1, 1), (0, 0), (1, 1), 1,
     True),
    ("pointwise_g2", (2, 4, 3, 3), "num_output: 6 kernel_size: 1 group: 2", (1, 1), (0, 0),
     (1, 1), 2, True),
    ("pointwise_g2_o4", (2, 4, 3, 3), "num_output: 4 kernel_size: 1 group: 2", (1, 1), (0, 0),
     (1, 1), 2, True),
    ("1x1_s2", (2, 4, 5, 5), "num_output: 3 kernel_size: 1 stride: 2", (2, 2), (0, 0), (1, 1),
     1, False),
    ("1x1_s2_c3", (2, 3, 5, 5), "num_output: 2 kernel_size: 1 stride: 2", (2, 2), (0, 0),
     (1, 1), 1, True),
    ("1x1_p1", (1, 2, 3, 3), "num_output: 2 kernel_size: 1 pad: 1", (1, 1), (1, 1), (1, 1), 1,
     False),
    ("no_bias", (2, 2, 5, 5), "num_output: 3 kernel_size: 3 bias_term: false", (1, 1), (0, 0),
     (1, 1), 1, True),
    ("khw_no_bias", (2, 2, 6, 7), "num_output: 3 kernel_h: 3 kernel_w: 2 pad_h: 1 stride_h: 2 "
     "stride_w: 1 bias_term: false", (2, 1), (1, 0), (1, 1), 1, True),
    ("khw_no_bias_n1", (1, 2, 6, 7), "num_output: 2 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 "
     "stride_h: 2 stride_w: 1 bias_term: false", (2, 1), (1, 0), (1, 1), 1, True),
    ("khw_pad_hw", (1, 2, 6, 7), "num_output: 2 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 "
     "stride_h: 2 stride_w: 1", (2, 1), (1, 0), (1, 1), 1, True),
    ("repeated_pairs", (1, 2, 5, 6), "num_output: 2 kernel_size: 2 kernel_size: 3 pad: 1 "
     "pad: 0 stride: 1 stride: 2", (1, 2), (1, 0), (1, 1), 1, False),
    ("repeated_pairs_dil", (1, 2, 6, 7), "num_output: 2 kernel_size: 2 kernel_size: 3 pad: 0 "
     "pad: 1 stride: 1 stride: 2 dilation: 2 dilation: 1", (1, 2), (0, 1), (2, 1), 1, True),
    # padding wider than the image: whole kernel columns fall outside it
    ("pad_wider_than_image", (3, 2, 3, 1), "num_output: 2 kernel_size: 7 pad: 3", (1, 1),
     (3, 3), (1, 1), 1, True),
    ("pad_wider_than_image_g2", (3, 2, 3, 1), "num_output: 2 group: 2 kernel_size: 7 pad: 3",
     (1, 1), (3, 3), (1, 1), 2, True),
    ("dilated_pad_wider", (2, 1, 3, 1), "num_output: 2 kernel_size: 3 dilation: 3 pad: 3",
     (1, 1), (3, 3), (3, 3), 1, True),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=ids(CONV_CASES))
def test_convolution_forward(case):
    _, shape, params, stride, pad, dil, group, _ = case
    layer = conv_layer(params)
    bottom = make_blobs([shape], seed=3)
    top = run_forward(layer, bottom)
    b = bias_of(layer)
    o, cg, kh, kw = layer.blobs[0].shape
    assert cg * group == shape[1]
    assert (b is None) == ("bias_term: false" in params)
    ref = conv_ref(bottom[0].data, layer.blobs[0].data, b, stride, pad, dil, group)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)
    # the layer's own flops: 2 per weight tap and output, plus the bias adds
    assert layer.flops(bottom, top) == 2 * ref.size * cg * kh * kw + (ref.size if b is not None
                                                                      else 0)


@pytest.mark.parametrize("case", [c for c in CONV_CASES if c[-1]],
                         ids=ids([c for c in CONV_CASES if c[-1]]))
def test_convolution_gradients(case):
    layer = conv_layer(case[2])
    bottom = make_blobs([case[1]], seed=4)
    GradientChecker().check(layer, bottom, [Blob(dtype=np.float64)])


def test_convolution_reshape_to_new_size():
    """A second input size reuses the layer (scratch buffers must follow the new shape)."""
    params = "num_output: 2 kernel_size: 3 stride: 2 pad: 1"
    layer = conv_layer(params)
    bottom = make_blobs([(2, 3, 6, 6)], seed=5)
    top = run_forward(layer, bottom)
    bottom[0].reshape((1, 3, 9, 7))
    bottom[0].data = np.random.default_rng(6).standard_normal((1, 3, 9, 7))
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    ref = conv_ref(bottom[0].data, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1))
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, [Blob(dtype=np.float64)])


def test_convolution_batch_chunks_and_multiple_bottoms(monkeypatch):
    """The batch split into several im2col chunks gives the same values and gradients; two
    bottoms share the weights."""
    # one image per chunk
    from netdef.backend.cpu import workspace
    monkeypatch.setattr(workspace, "COL_CHUNK_ELEMENTS", 1)
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


@pytest.mark.parametrize("type_", ["Convolution", "Deconvolution"])
def test_convolution_two_bottoms_share_weights(type_):
    """Caffe's BaseConvolutionLayer: several bottoms of one shape, one top each, same filters;
    the parameter gradients sum over the bottoms; bottoms of different shapes are refused."""
    layer = conv_layer("num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2", type_=type_)
    bottom = make_blobs([(2, 4, 4, 4), (2, 4, 4, 4)], seed=10)
    top = run_forward(layer, bottom, ntop=2)
    ref = conv_ref if type_ == "Convolution" else deconv_ref
    for b, t in zip(bottom, top):
        want = ref(b.data, layer.blobs[0].data, layer.blobs[1].data, (2, 2), (1, 1), (1, 1), 2)
        assert t.shape == want.shape
        np.testing.assert_allclose(t.data, want, rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, [Blob(dtype=np.float64) for _ in range(2)])
    bottom[1].reshape((2, 4, 5, 4))
    with pytest.raises(ShapeError, match="bottom"):
        layer.reshape(bottom, top)


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


@pytest.mark.parametrize("cid", ["g2p1", "depthwise_mult2", "pointwise"])
def test_convolution_backward_accumulates_params_overwrites_bottom(cid):
    case = next(c for c in CONV_CASES if c[0] == cid)
    layer = conv_layer(case[2])
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
    np.testing.assert_allclose(bottom[0].diff, dx1, rtol=1e-10, atol=1e-12)
    for p, d in zip(layer.blobs, dp1):
        np.testing.assert_allclose(p.diff, 2 * d, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cid", ["d2p1_n1", "depthwise_mult2", "pointwise", "k3_o3"])
def test_convolution_float32_against_reference(cid):
    cases = CONV_CASES + [("k3_o3", (2, 2, 5, 5), "num_output: 3 kernel_size: 3", (1, 1),
                           (0, 0), (1, 1), 1, False)]
    _, shape, params, stride, pad, dil, group, _ = next(c for c in cases if c[0] == cid)
    layer = conv_layer(params, dtype=np.float32)
    bottom = make_blobs([shape], dtype=np.float32, seed=9)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32 and layer.blobs[0].data.dtype == np.float32
    ref = conv_ref(bottom[0].data.astype(np.float64), layer.blobs[0].data.astype(np.float64),
                   layer.blobs[1].data.astype(np.float64), stride, pad, dil, group)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("channels,params,tiles,flat", [
    # strided and 1x1: the 512-bit tiles over the im2col matrix, else im2col + GEMM
    (2, "num_output: 4 kernel_size: 3 pad: 1 stride: 2", False, True),
    (3, "num_output: 3 kernel_size: 3 group: 3 pad: 1", False, False),
    (2, "num_output: 4 kernel_size: 1", False, True),
    # stride 1: the register tiles (netdef.backend.cpu.microkernel), forward and dx
    (2, "num_output: 5 kernel_size: 3 pad: 1", True, True),
    (3, "num_output: 9 kernel_size: 3 dilation: 2 pad: 2 bias_term: false", True, True),
    (1, "num_output: 13 kernel_h: 2 kernel_w: 4", True, True)])
def test_convolution_float32_paths(monkeypatch, channels, params, tiles, flat):
    from netdef.backend.cpu import gemm as G
    from netdef.backend.cpu import microkernel as MK
    used = []
    real = MK.tiles_for
    monkeypatch.setattr(MK, "tiles_for",
                        lambda *a, **k: used.append(real(*a, **k)) or used[-1])
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
    forward_tiles = tiles or (flat and MK.LANES == 16)
    assert (bool(used) and used[-1] is not None) == (forward_tiles and G.AVAILABLE
                                                     and MK.ENABLED)
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


@pytest.mark.parametrize("channels,params,tiled", [
    (4, "num_output: 12 kernel_size: 3 pad: 1", None),
    (4, "num_output: 7 kernel_size: 3 stride: 2", None),
    (4, "num_output: 9 kernel_size: 1", None),
    # 512-bit hosts: dL/dW through the tiles, by blocks of the batch / of dW's columns
    (4, "num_output: 64 kernel_size: 3 pad: 1", "batch"),
    (16, "num_output: 64 kernel_size: 3 stride: 2", "columns")])
def test_convolution_float32_backward_accumulates_params(monkeypatch, channels, params,
                                                         tiled):
    """float32 (the tiled and GEMM paths): a second backward adds the same parameter
    gradient again and overwrites the bottom's; the gradients are float64's."""
    import numba

    from netdef.backend.cpu import microkernel as MK
    used = []
    real = V.ConvolutionLayer._weight_grad_tiles
    monkeypatch.setattr(V.ConvolutionLayer, "_weight_grad_tiles",
                        lambda self, *a: used.append(real(self, *a)) or used[-1])
    l32 = conv_layer(params, dtype=np.float32)
    l64 = conv_layer(params)
    x = np.random.default_rng(3).standard_normal((5, channels, 9, 11))
    t32, t64 = run_forward(l32, make_blobs([x], dtype=np.float32)), run_forward(
        l64, make_blobs([x]))
    dy = np.random.default_rng(4).standard_normal(t64[0].shape)
    t32[0].diff[...] = dy
    t64[0].diff[...] = dy
    b32, b64 = make_blobs([x], dtype=np.float32), make_blobs([x])
    for p in l32.blobs + l64.blobs:
        p.diff = np.zeros(p.shape, p.data.dtype)
    l64.backward(t64, [True], b64)
    l32.backward(t32, [True], b32)
    once = [p.diff.copy() for p in l32.blobs]
    for p, q in zip(l32.blobs, l64.blobs):
        np.testing.assert_allclose(p.diff, q.diff, rtol=1e-4, atol=1e-4)
    dx = b32[0].diff.copy()
    l32.backward(t32, [True], b32)
    np.testing.assert_allclose(b32[0].diff, dx, rtol=1e-6, atol=1e-6)
    for p, d in zip(l32.blobs, once):
        np.testing.assert_allclose(p.diff, 2 * d, rtol=1e-5, atol=1e-5)
    if MK.ENABLED and MK.LANES == 16 and numba.get_num_threads() == 2:
        assert used[-2:] == [tiled, tiled]     # the two float32 backward passes


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


# -- Deconvolution ----------------------------------------------------------------------------
# (id, bottom shape, params, stride, pad, dilation, group); every case is gradient-checked
DECONV_CASES = [
    ("k3", (2, 3, 3, 3), "num_output: 2 kernel_size: 3", (1, 1), (0, 0), (1, 1), 1),
    ("s2p1", (2, 3, 3, 4), "num_output: 2 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1),
     (1, 1), 1),
    ("s2p1_o3", (2, 2, 3, 4), "num_output: 3 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1),
     (1, 1), 1),
    ("s3_k3", (2, 2, 2, 2), "num_output: 3 kernel_size: 3 stride: 3 pad: 0 group: 1", (3, 3),
     (0, 0), (1, 1), 1),
    ("g2_k2", (1, 4, 3, 3), "num_output: 4 kernel_size: 2 group: 2", (1, 1), (0, 0), (1, 1), 2),
    ("g2s2p1", (2, 4, 3, 3), "num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2", (2, 2),
     (1, 1), (1, 1), 2),
    ("g2s2", (2, 4, 3, 3), "num_output: 2 kernel_size: 3 stride: 2 group: 2", (2, 2), (0, 0),
     (1, 1), 2),
    ("g3_o6", (1, 3, 3, 3), "num_output: 6 kernel_size: 2 stride: 2 group: 3", (2, 2), (0, 0),
     (1, 1), 3),
    # group == num_output: every output channel gathers C/O input channels (depthwise path)
    ("g_eq_o", (2, 3, 3, 3), "num_output: 3 kernel_size: 3 stride: 2 pad: 1 group: 3", (2, 2),
     (1, 1), (1, 1), 3),
    ("g_eq_o_k4", (2, 3, 3, 3), "num_output: 3 kernel_size: 4 stride: 2 pad: 1 group: 3",
     (2, 2), (1, 1), (1, 1), 3),
    ("g_eq_o_mult2", (1, 4, 3, 4), "num_output: 2 kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 0 "
     "stride_h: 2 stride_w: 1 dilation: 2 dilation: 1 group: 2 bias_term: false", (2, 1),
     (1, 0), (2, 1), 2),
    ("d2_no_bias", (1, 2, 3, 3), "num_output: 2 kernel_size: 2 stride: 2 dilation: 2 "
     "bias_term: false", (2, 2), (0, 0), (2, 2), 1),
    ("khw_s3_d2_no_bias", (2, 2, 3, 2), "num_output: 3 kernel_h: 3 kernel_w: 2 stride: 3 "
     "dilation: 2 bias_term: false", (3, 3), (0, 0), (2, 2), 1),
    ("khw", (1, 2, 3, 4), "num_output: 2 kernel_h: 2 kernel_w: 3 pad_h: 0 pad_w: 1 stride_h: 2 "
     "stride_w: 1", (2, 1), (0, 1), (1, 1), 1),
    ("k5p2s3", (3, 2, 1, 2), "num_output: 2 kernel_size: 5 pad: 2 stride: 3", (3, 3), (2, 2),
     (1, 1), 1),
]


@pytest.mark.parametrize("case", DECONV_CASES, ids=ids(DECONV_CASES))
def test_deconvolution(case):
    _, shape, params, stride, pad, dil, group = case
    layer = conv_layer(params, type_="Deconvolution")
    bottom = make_blobs([shape], seed=11)
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


def test_deconvolution_float32_against_reference_and_flops():
    _, shape, params, stride, pad, dil, group = next(c for c in DECONV_CASES if c[0] == "g2s2p1")
    layer = conv_layer(params, dtype=np.float32, type_="Deconvolution")
    bottom = make_blobs([shape], dtype=np.float32, seed=12)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    ref = deconv_ref(bottom[0].data.astype(np.float64), layer.blobs[0].data.astype(np.float64),
                     layer.blobs[1].data.astype(np.float64), stride, pad, dil, group)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-4, atol=1e-5)
    n, c, h, w = shape
    # the multiply-adds of the convolution it is the transpose of, plus the bias
    assert layer.flops(bottom, top) == 2 * n * c * h * w * (4 // group) * 3 * 3 + top[0].count


# -- Im2col -----------------------------------------------------------------------------------
# (id, bottom shape, params, kernel, stride, pad, dilation)
IM2COL_CASES = [
    ("k3", (2, 2, 5, 5), "kernel_size: 3", (3, 3), (1, 1), (0, 0), (1, 1)),
    ("k2p1", (2, 2, 5, 5), "kernel_size: 2 pad: 1", (2, 2), (1, 1), (1, 1), (1, 1)),
    ("k2p1_3x3", (2, 2, 3, 3), "kernel_size: 2 stride: 1 pad: 1", (2, 2), (1, 1), (1, 1),
     (1, 1)),
    ("s2p1", (1, 3, 6, 5), "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), (1, 1)),
    ("khw_s2_d2_pw1", (2, 2, 5, 5), "kernel_h: 3 kernel_w: 2 stride: 2 dilation: 2 pad_w: 1",
     (3, 2), (2, 2), (0, 1), (2, 2)),
    ("khw_dil_hw", (1, 2, 7, 6), "kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 "
     "stride_w: 2 dilation: 2 dilation: 1", (2, 3), (1, 2), (1, 0), (2, 1)),
    ("k7p4", (2, 2, 5, 5), "kernel_size: 7 pad: 4", (7, 7), (1, 1), (4, 4), (1, 1)),
]


@pytest.mark.parametrize("case", IM2COL_CASES, ids=ids(IM2COL_CASES))
def test_im2col(case):
    _, shape, params, k, s, p, d = case
    layer = make_layer("Im2col", f"convolution_param {{ {params} }}")
    bottom = make_blobs([shape], seed=13)
    top = run_forward(layer, bottom)
    oh, ow = (conv_out(shape[2 + i], k[i], p[i], s[i], d[i]) for i in range(2))
    assert top[0].shape == (shape[0], shape[1] * k[0] * k[1], oh, ow)
    np.testing.assert_array_equal(top[0].data, im2col_ref(bottom[0].data, k, s, p, d))
    GradientChecker().check(layer, bottom, top, setup=False)


def test_im2col_float32():
    _, shape, params, k, s, p, d = IM2COL_CASES[3]
    layer = make_layer("Im2col", f"convolution_param {{ {params} }}", dtype=np.float32)
    bottom = make_blobs([shape], dtype=np.float32, seed=14)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data,
                                  im2col_ref(bottom[0].data.astype(np.float64), k, s, p, d))


# -- Pooling ----------------------------------------------------------------------------------
# (id, bottom shape, params, kernel, stride, pad, ceil, expected top H, W, gradient-checked)
POOL_CASES = [
    ("k3s2", (2, 2, 6, 6), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), True, (3, 3),
     True),
    ("k3s2_n1", (1, 2, 6, 6), "kernel_size: 3 stride: 2", (3, 3), (2, 2), (0, 0), True, (3, 3),
     False),
    ("k3s2_floor", (2, 2, 6, 6), "kernel_size: 3 stride: 2 round_mode: FLOOR", (3, 3), (2, 2),
     (0, 0), False, (2, 2), True),
    ("k3s2_floor_n1", (1, 2, 6, 6), "kernel_size: 3 stride: 2 round_mode: FLOOR", (3, 3),
     (2, 2), (0, 0), False, (2, 2), False),
    ("k3s2p1", (1, 2, 5, 7), "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1), True,
     (3, 4), True),
    ("k3s2p1_6x6", (2, 2, 6, 6), "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1),
     True, (4, 4), True),
    ("k3s2p1_c3", (1, 3, 6, 6), "kernel_size: 3 stride: 2 pad: 1", (3, 3), (2, 2), (1, 1),
     True, (4, 4), True),
    ("k3s2p1_floor", (2, 2, 6, 6), "kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (3, 3),
     (2, 2), (1, 1), False, (3, 3), True),
    # the ceil'd last window would start in the padding: Caffe drops it (3 -> 2)
    ("k3s3p2_last_dropped", (1, 2, 4, 4), "kernel_size: 3 stride: 3 pad: 2", (3, 3), (3, 3),
     (2, 2), True, (2, 2), True),
    ("k3s3p2_7x7", (1, 2, 7, 7), "kernel_size: 3 stride: 3 pad: 2", (3, 3), (3, 3), (2, 2),
     True, (3, 3), True),
    ("k2s2p1_last_dropped", (1, 2, 5, 5), "kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2),
     (1, 1), True, (3, 3), True),
    ("k2s2p1_5x7", (1, 2, 5, 7), "kernel_size: 2 stride: 2 pad: 1", (2, 2), (2, 2), (1, 1),
     True, (3, 4), True),
    ("k2s2p1_floor", (1, 2, 5, 5), "kernel_size: 2 stride: 2 pad: 1 round_mode: FLOOR", (2, 2),
     (2, 2), (1, 1), False, (3, 3), True),
    ("k2s1", (2, 2, 4, 5), "kernel_size: 2", (2, 2), (1, 1), (0, 0), True, (3, 4), False),
    ("khw_pad_h", (1, 3, 5, 6), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1",
     (3, 2), (2, 1), (1, 0), True, (3, 5), True),
    ("khw_pad_h_7x5", (2, 1, 7, 5), "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1",
     (3, 2), (2, 1), (1, 0), True, (4, 4), True),
    ("nonsquare", (1, 2, 5, 7), "kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 1 stride_h: 2 "
     "stride_w: 3", (3, 2), (2, 3), (1, 1), True, (3, 3), True),
    ("nonsquare_floor", (1, 2, 5, 7), "kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 1 stride_h: 2 "
     "stride_w: 3 round_mode: FLOOR", (3, 2), (2, 3), (1, 1), False, (3, 3), False),
    # pad only along H: Caffe's "drop a last window that starts in the padding" rule applies to
    # both axes as soon as either pad is non-zero
    ("pad_h_only", (1, 2, 4, 4), "kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride: 2", (3, 1),
     (2, 2), (1, 0), True, (3, 2), True),
    # kernel taller than the input: ceil((2 - 3) / 2) + 1 = 1 window clipped to the image
    ("kernel_taller_than_input", (1, 2, 2, 5), "kernel_size: 3 stride: 2", (3, 3), (2, 2),
     (0, 0), True, (1, 2), True),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("case", POOL_CASES, ids=ids(POOL_CASES))
def test_pooling(method, case):
    _, shape, params, k, s, p, ceil, hw, grad = case
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} {params} }}")
    bottom = make_blobs([distinct(shape, seed=15)])
    top = run_forward(layer, bottom)
    ref, _ = pool_ref(bottom[0].data, k, s, p, method, ceil)
    assert top[0].shape[:2] == shape[:2] and top[0].shape[2:] == hw == ref.shape[2:]
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    if grad:
        GradientChecker().check(layer, bottom, top, setup=False)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", POOL_CASES, ids=ids(POOL_CASES))
def test_max_pooling_without_mask(case, dtype):
    """keep_mask False (the frozen predictor's pooling, never a backward): the values-only
    kernel gives the float64 reference's values, ties and negative inputs included."""
    _, shape, params, k, s, p, ceil, hw, _ = case
    layer = make_layer("Pooling", f"pooling_param {{ pool: MAX {params} }}")
    layer.keep_mask = False
    x = np.round((distinct(shape, seed=16) - 0.5) * 6) / 4     # negatives and ties
    bottom = make_blobs([x.astype(dtype)])
    top = run_forward(layer, bottom)
    ref, _ = pool_ref(bottom[0].data.astype(np.float64), k, s, p, "MAX", ceil)
    assert top[0].shape[2:] == hw == ref.shape[2:] and layer.mask is None
    np.testing.assert_array_equal(top[0].data, ref.astype(dtype))


def test_pooling_shapes_ceil_vs_floor():
    def shape_of(params, h, w):
        layer = make_layer("Pooling", f"pooling_param {{ {params} }}", init_params=False)
        top = [Blob(())]
        bottom = [Blob((1, 1, h, w))]
        layer.setup(bottom, top)
        assert not bottom[0].allocated                  # shape inference alone
        return top[0].shape[2:]

    assert shape_of("kernel_size: 3 stride: 2 pad: 1", 6, 6) == (4, 4)
    assert shape_of("kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", 6, 6) == (3, 3)
    assert shape_of("kernel_size: 3 stride: 2", 6, 6) == (3, 3)           # ceil(3/2)+1
    assert shape_of("kernel_size: 3 stride: 2 round_mode: FLOOR", 6, 6) == (2, 2)
    assert shape_of("kernel_size: 3 stride: 2 round_mode: CEIL", 7, 7) == (3, 3)
    # pad 1, k 2, s 2 on 6: ceil(6/2)+1 = 4, and (4-1)*2 = 6 < 6+1 keeps it
    assert shape_of("kernel_size: 2 stride: 2 pad: 1", 6, 6) == (4, 4)
    # on 5: ceil gives 4 windows, the last would start in the padding: dropped
    assert shape_of("kernel_size: 2 stride: 2 pad: 1", 5, 5) == (3, 3)
    assert shape_of("kernel_size: 2 stride: 2 pad: 1", 3, 3) == (2, 2)
    assert shape_of("kernel_h: 3 kernel_w: 1 pad_h: 1 pad_w: 0 stride: 2", 4, 4) == (3, 2)
    assert shape_of("kernel_size: 3 stride: 2 pad: 1", 112, 112) == (57, 57)  # ResNet pool1


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


@pytest.mark.parametrize("cid", ["k3s2p1_6x6", "k2s2p1_last_dropped", "nonsquare", "k2s2"])
def test_pooling_max_two_tops(cid):
    cases = POOL_CASES + [("k2s2", (2, 3, 4, 5), "kernel_size: 2 stride: 2", (2, 2), (2, 2),
                           (0, 0), True, (2, 3), True)]
    _, shape, params, k, s, p, ceil, hw, _ = next(c for c in cases if c[0] == cid)
    layer = make_layer("Pooling", f"pooling_param {{ pool: MAX {params} }}")
    bottom = make_blobs([distinct(shape, seed=17)])
    top = run_forward(layer, bottom, ntop=2)
    ref, mask = pool_ref(bottom[0].data, k, s, p, "MAX", ceil)
    assert top[1].shape == top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(top[1].data, mask)
    GradientChecker().check(layer, bottom, [Blob(dtype=np.float64) for _ in range(2)],
                            top_ids=[0])


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
    # a new input size changes the global window
    bottom[0].reshape((1, 3, 3, 2))
    bottom[0].data = distinct((1, 3, 3, 2), seed=19)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    x = bottom[0].data
    want = x.max(axis=(2, 3)) if method == "MAX" else x.mean(axis=(2, 3))
    assert top[0].shape == (1, 3, 1, 1)
    np.testing.assert_allclose(top[0].data[:, :, 0, 0], want, rtol=1e-12)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (2, 2, 6, 6)])
def test_pooling_float32(method, shape):
    x = distinct(shape, seed=2)
    layer = make_layer("Pooling", f"pooling_param {{ pool: {method} kernel_size: 3 "
                       f"stride: 2 pad: 1 }}", dtype=np.float32)
    top = run_forward(layer, make_blobs([x], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    ref, _ = pool_ref(x, (3, 3), (2, 2), (1, 1), method)
    assert top[0].shape == ref.shape
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-5)


# -- STOCHASTIC pooling -----------------------------------------------------------------------
@pytest.mark.parametrize("shape,params,k,s", [
    ((2, 2, 6, 6), "kernel_size: 2 stride: 2", (2, 2), 2),
    ((1, 3, 5, 7), "kernel_size: 3 stride: 2", (3, 3), 2),
    ((2, 1, 4, 5), "kernel_h: 2 kernel_w: 3 stride: 1", (2, 3), 1),
])
def test_stochastic_pooling(shape, params, k, s):
    x = np.abs(distinct(shape)) + 0.05
    kh, kw = k
    # TEST: weighted average, exact gradient
    layer = make_layer("Pooling", f"pooling_param {{ pool: STOCHASTIC {params} }}", phase=TEST)
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    oh, ow = top[0].shape[2:]
    ref, _ = stochastic_ref(x, kh, kw, s, s, oh, ow)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    GradientChecker().check(layer, bottom, top)
    # TRAIN: samples with the layer's generator (uniform draws, one per output)
    layer = make_layer("Pooling", f"pooling_param {{ pool: STOCHASTIC {params} }}",
                       phase=TRAIN, seed=7)
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    rand = np.random.default_rng(7).random(top[0].shape)
    ref, mask = stochastic_ref(x, kh, kw, s, s, oh, ow, rand)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    np.testing.assert_array_equal(layer.mask, mask)
    dy = np.random.default_rng(1).standard_normal(top[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    dx = np.zeros(x.shape)
    for a, b, i, j in np.ndindex(*dy.shape):
        m = mask[a, b, i, j]
        dx[a, b, m // x.shape[3], m % x.shape[3]] += dy[a, b, i, j]
    np.testing.assert_allclose(bottom[0].diff, dx, rtol=1e-12)


def test_stochastic_pooling_samples_in_proportion():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    layer = make_layer("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 2 }",
                       phase=TRAIN, seed=3)
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    counts = np.zeros(4)
    for _ in range(4000):
        layer.forward(bottom, top)
        counts[int(top[0].data[0, 0, 0, 0]) - 1] += 1
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.03)


# -- SPP --------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,height,method", [
    ((2, 3, 8, 8), 3, "MAX"),
    ((1, 2, 7, 9), 2, "MAX"),
    ((2, 2, 6, 5), 2, "AVE"),
    ((1, 3, 8, 8), 3, "AVE"),
    ((2, 2, 5, 6), 1, "MAX"),
])
def test_spp(shape, height, method):
    layer = make_layer("SPP", f"spp_param {{ pyramid_height: {height} pool: {method} }}")
    bottom = make_blobs([distinct(shape, seed=height)])
    top = run_forward(layer, bottom)
    ref = spp_ref(bottom[0].data, height, method)
    n, c = shape[:2]
    if height == 1:
        assert top[0].shape == (n, c, 1, 1)
    else:
        assert top[0].shape == (n, c * sum(4 ** lv for lv in range(height)))
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    GradientChecker().check(layer, bottom, top)


def test_spp_input_size_change_and_errors():
    layer = make_layer("SPP", "spp_param { pyramid_height: 2 }")
    top = run_forward(layer, make_blobs([distinct((1, 2, 8, 8))]))
    b = make_blobs([distinct((1, 2, 6, 10), seed=3)])
    layer.reshape(b, top)
    layer.forward(b, top)
    np.testing.assert_allclose(top[0].data, spp_ref(b[0].data, 2, "MAX"))
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("SPP", "spp_param { }"), make_blobs([(1, 1, 4, 4)]))
    assert e.value.field == "spp_param.pyramid_height"
    with pytest.raises(ShapeError, match="too small for pyramid level 2"):
        run_forward(make_layer("SPP", "spp_param { pyramid_height: 3 }"),
                    make_blobs([(1, 1, 5, 5)]))
    with pytest.raises(ShapeError, match="4-D"):
        run_forward(make_layer("SPP", "spp_param { pyramid_height: 1 }"),
                    make_blobs([(2, 4)]))


def test_spp_stochastic_test_phase():
    x = np.abs(distinct((1, 2, 4, 4))) + 0.1
    layer = make_layer("SPP", "spp_param { pyramid_height: 2 pool: STOCHASTIC }", phase=TEST)
    top = run_forward(layer, make_blobs([x]))
    level0 = (x ** 2).sum(axis=(2, 3)) / x.sum(axis=(2, 3))
    np.testing.assert_allclose(top[0].data[:, :2], level0, rtol=1e-12)


# -- errors -----------------------------------------------------------------------------------
# (bottom shape, convolution_param, error, word in the message): Convolution and Deconvolution
CONV_ERRORS = [
    ((1, 3, 5, 5), "num_output: 4 kernel_size: 3 group: 2", ConfigError, "group"),
    ((1, 4, 5, 5), "num_output: 3 kernel_size: 3 group: 2", ConfigError, "group"),
    ((1, 4, 5, 5), "num_output: 3 kernel_size: 3 group: 2", ConfigError, "num_output"),
    ((1, 3, 5, 5), "num_output: 4", ConfigError, "kernel_size"),
    ((1, 2, 5, 5), "num_output: 2", ConfigError, "kernel_size"),
    ((1, 3, 5, 5), "num_output: 0 kernel_size: 3", ConfigError, "num_output"),
    ((1, 3, 5, 5), "kernel_size: 3", ConfigError, "num_output"),
    ((1, 2, 5, 5), "kernel_size: 3", ConfigError, "num_output"),
    ((1, 3, 5, 5), "num_output: 2 kernel_size: 3 stride: 0", ConfigError, "stride"),
    ((1, 2, 5, 5), "num_output: 2 kernel_size: 3 stride: 0", ConfigError, "stride"),
    ((1, 3, 5, 5), "num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", ConfigError,
     "kernel"),
    ((1, 2, 5, 5), "num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", ConfigError,
     "not both"),
    ((1, 3, 5, 5), "num_output: 2 kernel_h: 3", ConfigError, "kernel_w"),
    ((1, 2, 5, 5), "num_output: 2 kernel_size: 3 axis: 2", ConfigError, "axis"),
    ((1, 1, 3, 3), "num_output: 2 kernel_size: 5", ShapeError, "kernel"),
    ((1, 1, 5, 5), "num_output: 2 kernel_size: 3 dilation: 3", ShapeError, "kernel"),
    ((1, 1, 3, 6), "num_output: 2 kernel_h: 4 kernel_w: 2", ShapeError, "kernel"),
    ((1, 2, 5, 5), "num_output: 2 kernel_size: 9", ShapeError, "larger"),
    ((1, 3, 5, 5), "num_output: 2 kernel_size: 9", ShapeError, "larger"),
    ((3, 5), "num_output: 2 kernel_size: 1", ShapeError, "4-D"),
]
# a transposed convolution grows its input: "kernel larger than the input" is Convolution's only
DECONV_ERRORS = [e for e in CONV_ERRORS if e[2] is not ShapeError or e[3] not in ("kernel",
                                                                                    "larger")]
# (type, params, bottom shape, tops, error, word in the message)
ERRORS = ([("Convolution", f"convolution_param {{ {p} }}", s, 1, e, w)
           for s, p, e, w in CONV_ERRORS]
          + [("Deconvolution", f"convolution_param {{ {p} }}", s, 1, e, w)
             for s, p, e, w in DECONV_ERRORS]
          + [
    ("Deconvolution", "convolution_param { num_output: 2 kernel_size: 2 pad: 3 }",
     (1, 2, 2, 2), 1, ShapeError, "pad"),
    ("Im2col", "convolution_param { stride: 1 }", (1, 2, 5, 5), 1, ConfigError, "kernel_size"),
    ("Im2col", "convolution_param { stride: 2 }", (1, 1, 4, 4), 1, ConfigError, "kernel_size"),
    ("Im2col", "convolution_param { kernel_size: 5 }", (1, 1, 3, 3), 1, ShapeError, "kernel"),
    ("Pooling", "pooling_param { kernel_size: 2 pad: 2 }", (1, 2, 5, 5), 1, ConfigError, "pad"),
    ("Pooling", "pooling_param { kernel_size: 2 pad: 2 }", (1, 3, 5, 5), 1, ConfigError, "pad"),
    ("Pooling", "pooling_param { kernel_size: 3 pad: 3 }", (1, 2, 5, 5), 1, ConfigError, "pad"),
    ("Pooling", "pooling_param { kernel_size: 2 pad: 2 stride: 2 }", (1, 2, 5, 5), 1,
     ConfigError, "pad"),
    ("Pooling", "pooling_param { kernel_h: 3 kernel_w: 2 pad_h: 1 pad_w: 2 }", (1, 2, 5, 5), 1,
     ConfigError, "pad"),
    ("Pooling", "pooling_param { global_pooling: true pad: 1 }", (1, 2, 5, 5), 1, ConfigError,
     "pad 0"),
    ("Pooling", "pooling_param { global_pooling: true kernel_size: 2 }", (1, 2, 5, 5), 1,
     ConfigError, "global"),
    ("Pooling", "pooling_param { global_pooling: true kernel_size: 2 }", (1, 3, 5, 5), 1,
     ConfigError, "global"),
    ("Pooling", "pooling_param { global_pooling: true kernel_size: 2 }", (1, 2, 5, 5), 1,
     ConfigError, "kernel_size"),
    ("Pooling", "pooling_param { global_pooling: true stride: 2 }", (1, 2, 5, 5), 1,
     ConfigError, "stride"),
    ("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 2 }", (1, 2, 5, 5), 2,
     ConfigError, "MAX"),
    ("Pooling", "pooling_param { pool: AVE kernel_size: 2 }", (1, 2, 5, 5), 2, ConfigError,
     "MAX"),
    ("Pooling", "pooling_param { stride: 2 }", (1, 2, 5, 5), 1, ConfigError, "kernel_size"),
    ("Pooling", "pooling_param { }", (1, 3, 5, 5), 1, ConfigError, "kernel_size"),
    ("Pooling", "pooling_param { kernel_size: 0 }", (1, 2, 5, 5), 1, ConfigError, "kernel"),
    ("Pooling", "pooling_param { kernel_size: 2 stride: 0 }", (1, 2, 5, 5), 1, ConfigError,
     "stride"),
    ("Pooling", "pooling_param { kernel_size: 9 }", (1, 2, 5, 5), 1, ShapeError, "kernel"),
    ("Pooling", "pooling_param { kernel_size: 7 round_mode: FLOOR }", (1, 2, 5, 5), 1,
     ShapeError, "0x0"),
    ("Pooling", "pooling_param { kernel_size: 2 }", (2, 3, 4), 1, ShapeError, "4-D"),
])


@pytest.mark.parametrize("type_,params,shape,ntop,err,word", ERRORS)
def test_config_errors(type_, params, shape, ntop, err, word):
    layer = make_layer(type_, params)
    with pytest.raises(err) as ei:
        run_forward(layer, make_blobs([shape]), ntop=ntop)
    assert isinstance(ei.value, NetdefError)
    assert word in str(ei.value), str(ei.value)
    assert "'test'" in str(ei.value)                    # the message names the layer


def test_convolution_error_names_field():
    layer = make_layer("Convolution", "convolution_param { num_output: 4 kernel_size: 3 "
                                      "group: 2 }")
    with pytest.raises(ConfigError) as info:
        run_forward(layer, make_blobs([(1, 3, 5, 5)]))
    assert info.value.field == "convolution_param.group"
    assert "3" in str(info.value)          # the channel count that group must divide


def test_pool_end_pads_reproduce_caffe_ceil_mode_sizes():
    """The end padding handed to ONNX's floor-mode pooling gives Caffe's ceil-mode size; a size that floor mode
    cannot reach with a non-negative end padding is None."""
    from netdef.layers.geometry import pool_end_pads, pooled_size
    seen = 0
    for size in range(1, 9):
        for k in range(1, 5):
            for p in range(0, min(k, 3)):
                for s in range(1, 4):
                    if size + 2 * p < k:
                        continue
                    oh, _ = pooled_size(size, size, k, k, p, p, s, s)
                    ends = pool_end_pads(size, size, k, k, p, p, s, s, oh, oh)
                    assert ends is not None
                    e = ends[0]
                    assert e >= 0 and (size + p + e - k) // s + 1 == oh
                    seen += 1
    assert seen > 100
    assert pool_end_pads(4, 4, 2, 2, 0, 0, 2, 2, 3, 3) == (2, 2)
    assert pool_end_pads(4, 4, 2, 2, 0, 0, 2, 2, 9, 9) == (14, 14)
    assert pool_end_pads(6, 6, 3, 3, 0, 0, 1, 1, 2, 2) is None     # floor gives 4, not 2
