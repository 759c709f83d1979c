"""Normalisation layers (LRN, BatchNorm, MVN): forward against float64 references written from
Caffe's formulas, gradient checks, in-place use, float32, shape-only setup, parameter errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, ShapeError
from netdef.testing import TEST, TRAIN, GradientChecker, make_blobs, make_layer, run_forward


def f32(v):
    """A parameter as the float32 the schema stores."""
    return float(np.float32(v))


def fresh(shape, seed=3, dtype=np.float64):
    return make_blobs([np.random.default_rng(seed).standard_normal(shape)], dtype=dtype)


# --------------------------------------------------------------------------------------------
# LRN references

def ref_lrn_across(x, n, alpha, beta, k):
    """Caffe's ACROSS_CHANNELS: zero-padded channel window of n centred on each channel."""
    nb, c, h, w = x.shape
    half = (n - 1) // 2
    y = np.empty_like(x)
    for b in range(nb):
        for ch in range(c):
            for i in range(h):
                for j in range(w):
                    s = 0.0
                    for cc in range(ch - half, ch + half + 1):
                        if 0 <= cc < c:
                            s += x[b, cc, i, j] ** 2
                    y[b, ch, i, j] = x[b, ch, i, j] * (k + alpha / n * s) ** -beta
    return y


def ref_ave_pool(a, kernel, pad):
    """Caffe's AVE pooling with stride 1 (CEIL rounding, divisor = window clipped to the
    padded image, sum over the window clipped to the image)."""
    nb, c, h, w = a.shape
    oh = int(np.ceil((h + 2 * pad - kernel) / 1.0)) + 1
    ow = int(np.ceil((w + 2 * pad - kernel) / 1.0)) + 1
    if pad and (oh - 1) >= h + pad:
        oh -= 1
    if pad and (ow - 1) >= w + pad:
        ow -= 1
    out = np.zeros((nb, c, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            hs, ws = oy - pad, ox - pad
            he, we = min(hs + kernel, h + pad), min(ws + kernel, w + pad)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            out[:, :, oy, ox] = a[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
    return out


def ref_lrn_within(x, n, alpha, beta):
    """Caffe's WITHIN_CHANNEL composite: square -> AVE pool -> (1 + alpha p)^-beta -> product."""
    pooled = ref_ave_pool(x ** 2, n, (n - 1) // 2)
    assert pooled.shape == x.shape
    return x * (1.0 + alpha * pooled) ** -beta


LRN_ACROSS = [  # local_size, alpha, beta, k, shape
    (3, 1.0, 0.75, 1.0, (2, 7, 3, 2)),
    (5, 0.3, 0.6, 2.0, (2, 6, 2, 3)),
    (5, 2.0, 0.75, 1.5, (1, 3, 2, 2)),      # fewer channels than the window
]


@pytest.mark.parametrize("n,alpha,beta,k,shape", LRN_ACROSS)
def test_lrn_across_channels(n, alpha, beta, k, shape):
    layer = make_layer("LRN", f"lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} "
                              f"k: {k} }}")
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    ref = ref_lrn_across(bottom[0].data, n, f32(alpha), f32(beta), f32(k))
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-14)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("n,alpha,beta,shape,extra", [
    (3, 1.0, 0.75, (2, 2, 5, 4), ""),
    (5, 2.0, 0.5, (1, 3, 3, 4), "k: 7"),      # window larger than the image; k is ignored
    (5, 0.7, 0.9, (1, 2, 6, 5), ""),
])
def test_lrn_within_channel(n, alpha, beta, shape, extra):
    layer = make_layer("LRN", f"lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} "
                              f"norm_region: WITHIN_CHANNEL {extra} }}")
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    ref = ref_lrn_within(bottom[0].data, n, f32(alpha), f32(beta))
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-14)
    GradientChecker().check(layer, bottom, top)


def test_lrn_defaults_and_many_blocks():
    """local_size 5, alpha 1, beta 0.75, k 1; more positions than one kernel block."""
    layer = make_layer("LRN")
    bottom = fresh((2, 6, 12, 13))
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, ref_lrn_across(bottom[0].data, 5, 1.0, 0.75, 1.0),
                               rtol=1e-12)
    # backward against a float64 gradient written from the formula
    x = bottom[0].data
    dy = np.random.default_rng(5).standard_normal(x.shape)
    top[0].diff = dy
    layer.backward(top, [True], bottom)
    s = np.zeros_like(x)
    for c in range(x.shape[1]):
        s[:, c] = 1.0 + 0.2 * (x[:, max(0, c - 2):c + 3] ** 2).sum(axis=1)
    r = dy * x * s ** -1.75
    acc = np.zeros_like(x)
    for c in range(x.shape[1]):
        acc[:, c] = r[:, max(0, c - 2):c + 3].sum(axis=1)
    ref = dy * s ** -0.75 - 2 * 0.2 * 0.75 * x * acc
    np.testing.assert_allclose(bottom[0].diff, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_float32_and_clobbered_top(region):
    params = f"lrn_param {{ local_size: 3 alpha: 1.5 norm_region: {region} }}"
    x = np.random.default_rng(2).standard_normal((2, 4, 3, 5))
    l64 = make_layer("LRN", params)
    b64 = make_blobs([x])
    t64 = run_forward(l64, b64)
    l32 = make_layer("LRN", params, dtype=np.float32)
    b32 = make_blobs([x], dtype=np.float32)
    t32 = run_forward(l32, b32)
    assert t32[0].data.dtype == np.float32
    np.testing.assert_allclose(t32[0].data, t64[0].data, rtol=1e-5, atol=1e-6)
    dy = np.random.default_rng(4).standard_normal(x.shape)
    t64[0].diff = dy
    t32[0].diff = dy
    l64.backward(t64, [True], b64)
    t32[0].data[...] = 123.0          # a later in-place layer may change the top
    l32.backward(t32, [True], b32)
    assert b32[0].diff.dtype == np.float32
    np.testing.assert_allclose(b32[0].diff, b64[0].diff, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [4, 2, 0])
def test_lrn_even_local_size_is_an_error(size):
    with pytest.raises(ConfigError, match="odd") as e:
        run_forward(make_layer("LRN", f"lrn_param {{ local_size: {size} }}"),
                    fresh((1, 4, 2, 2)))
    assert e.value.field == "lrn_param.local_size"


def test_lrn_needs_4_axes():
    with pytest.raises(ShapeError, match="4-axis"):
        run_forward(make_layer("LRN"), fresh((2, 4, 3)))


# --------------------------------------------------------------------------------------------
# BatchNorm

def bn_axes(x):
    return (0,) + tuple(range(2, x.ndim))


def bn_bshape(x):
    return (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 1 else (-1,)


def bn_stats(x):
    """Per-channel batch mean, biased variance, and m (elements per channel)."""
    xx = x.reshape(x.shape[0], 1) if x.ndim == 1 else x
    axes = bn_axes(xx)
    m = xx.size // xx.shape[1]
    mean = xx.mean(axis=axes)
    var = ((xx - mean.reshape(bn_bshape(xx))) ** 2).sum(axis=axes) / m
    return mean, var, m


def bn_normalise(x, mean, var, eps):
    xx = x.reshape(x.shape[0], 1) if x.ndim == 1 else x
    bs = bn_bshape(xx)
    return ((xx - mean.reshape(bs)) / np.sqrt(var.reshape(bs) + eps)).reshape(x.shape)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5), (2, 3, 2, 1, 2), (5,)])
def test_batchnorm_train_batch_statistics(shape):
    maf, eps = 0.875, 1e-4
    layer = make_layer("BatchNorm", f"batch_norm_param {{ moving_average_fraction: {maf} "
                                    f"eps: {eps} }}", phase=TRAIN)
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    c = 1 if len(shape) == 1 else shape[1]
    assert [b.shape for b in layer.blobs] == [(c,), (c,), (1,)]
    assert layer.param_propagate_down == [False, False, False]
    x1 = bottom[0].data.copy()
    mean1, var1, m = bn_stats(x1)
    np.testing.assert_allclose(top[0].data, bn_normalise(x1, mean1, var1, f32(eps)),
                               rtol=1e-10, atol=1e-12)
    # stored: s = 0*maf + 1, mean_acc = mean, var_acc = m/(m-1) var
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])
    np.testing.assert_allclose(layer.blobs[0].data, mean1, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.blobs[1].data, var1 * m / (m - 1), rtol=1e-12)
    x2 = np.random.default_rng(8).standard_normal(shape) * 2 + 1
    bottom[0].data = x2
    layer.forward(bottom, top)
    mean2, var2, _ = bn_stats(x2)
    fm = f32(maf)
    np.testing.assert_allclose(layer.blobs[2].data, [fm + 1])
    np.testing.assert_allclose(layer.blobs[0].data, fm * mean1 + mean2, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(layer.blobs[1].data, fm * var1 * m / (m - 1) + var2 * m / (m - 1),
                               rtol=1e-12)
    np.testing.assert_allclose(top[0].data, bn_normalise(x2, mean2, var2, f32(eps)),
                               rtol=1e-10, atol=1e-12)
    GradientChecker(step=1e-3).check(layer, bottom, top, setup=False)


def test_batchnorm_batch_gradient_formula():
    """dx = (dy - mean(dy) - mean(dy*y) y) / sqrt(var + eps), against a float64 reference."""
    layer = make_layer("BatchNorm", "", phase=TRAIN)
    bottom = fresh((3, 2, 2, 3))
    top = run_forward(layer, bottom)
    x = bottom[0].data
    mean, var, _ = bn_stats(x)
    y = bn_normalise(x, mean, var, f32(1e-5))
    dy = np.random.default_rng(9).standard_normal(x.shape)
    top[0].diff = dy
    layer.backward(top, [True], bottom)
    axes = (0, 2, 3)
    ref = (dy - dy.mean(axis=axes, keepdims=True) - (dy * y).mean(axis=axes, keepdims=True) * y) \
        / np.sqrt(var.reshape(1, -1, 1, 1) + f32(1e-5))
    np.testing.assert_allclose(bottom[0].diff, ref, rtol=1e-10, atol=1e-12)


def test_batchnorm_global_stats_after_training():
    maf = 0.9
    train = make_layer("BatchNorm", f"batch_norm_param {{ moving_average_fraction: {maf} }}",
                       phase=TRAIN)
    shape = (3, 4, 2, 2)
    xs = [np.random.default_rng(s).standard_normal(shape) * (s + 1) for s in (1, 2)]
    bottom = make_blobs([xs[0]])
    top = run_forward(train, bottom)
    bottom[0].data = xs[1]
    train.forward(bottom, top)
    (m1, v1, m), (m2, v2, _) = bn_stats(xs[0]), bn_stats(xs[1])
    fm = f32(maf)
    sf = fm + 1
    acc_mean = fm * m1 + m2
    acc_var = fm * v1 * m / (m - 1) + v2 * m / (m - 1)
    np.testing.assert_allclose(train.blobs[2].data, [sf])
    np.testing.assert_allclose(train.blobs[0].data, acc_mean, rtol=1e-12)
    np.testing.assert_allclose(train.blobs[1].data, acc_var, rtol=1e-12)

    test = make_layer("BatchNorm", "", phase=TEST)          # use_global_stats defaults to true
    x3 = np.random.default_rng(3).standard_normal(shape)
    b3 = make_blobs([x3])
    t3 = [Blob((), np.float64)]
    test.setup(b3, t3)
    for dst, src in zip(test.blobs, train.blobs):
        dst.data = src.data
    test.forward(b3, t3)
    ref = bn_normalise(x3, acc_mean / sf, acc_var / sf, f32(1e-5))
    np.testing.assert_allclose(t3[0].data, ref, rtol=1e-10)
    np.testing.assert_allclose(test.blobs[2].data, [sf])     # TEST does not update
    np.testing.assert_allclose(test.blobs[0].data, acc_mean, rtol=1e-12)
    GradientChecker().check(test, b3, t3, setup=False)
    # dx = dy / sqrt(var + eps)
    dy = np.random.default_rng(6).standard_normal(shape)
    t3[0].diff = dy
    test.backward(t3, [True], b3)
    np.testing.assert_allclose(
        b3[0].diff, dy / np.sqrt((acc_var / sf).reshape(1, -1, 1, 1) + f32(1e-5)), rtol=1e-10)


def test_batchnorm_explicit_use_global_stats():
    # TRAIN with stored statistics: no update, stored numbers used
    layer = make_layer("BatchNorm", "batch_norm_param { use_global_stats: true }", phase=TRAIN)
    bottom = fresh((2, 3, 2))
    top = [Blob((), np.float64)]
    layer.setup(bottom, top)
    layer.blobs[0].data = [1.0, 2.0, 3.0]
    layer.blobs[1].data = [4.0, 8.0, 2.0]
    layer.blobs[2].data = [2.0]
    layer.forward(bottom, top)
    ref = (bottom[0].data - np.array([0.5, 1, 1.5]).reshape(1, 3, 1)) / \
        np.sqrt(np.array([2.0, 4, 1]).reshape(1, 3, 1) + f32(1e-5))
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    np.testing.assert_allclose(layer.blobs[2].data, [2.0])
    # a never-trained layer (scale factor 0) normalises with mean 0, variance 0
    fresh_layer = make_layer("BatchNorm", "", phase=TEST)
    top = run_forward(fresh_layer, bottom)
    np.testing.assert_allclose(top[0].data, bottom[0].data / np.sqrt(f32(1e-5)), rtol=1e-12)
    # TEST with batch statistics: normalises with the batch, stored values untouched
    layer = make_layer("BatchNorm", "batch_norm_param { use_global_stats: false }", phase=TEST)
    top = run_forward(layer, bottom)
    mean, var, _ = bn_stats(bottom[0].data)
    np.testing.assert_allclose(top[0].data, bn_normalise(bottom[0].data, mean, var, f32(1e-5)),
                               rtol=1e-10)
    assert not np.any(layer.blobs[2].data)


@pytest.mark.parametrize("phase", [TRAIN, TEST])
def test_batchnorm_in_place(phase):
    x = np.random.default_rng(12).standard_normal((4, 3, 2))
    ref_layer = make_layer("BatchNorm", "", phase=phase)
    rb = make_blobs([x])
    rt = run_forward(ref_layer, rb)
    layer = make_layer("BatchNorm", "", phase=phase)
    bottom = make_blobs([x])
    layer.setup(bottom, bottom)
    if phase == TEST:
        for lb, v in zip(layer.blobs + ref_layer.blobs, 2 * [[1, 2, 3], [2, 1, 4], [2]]):
            lb.data = np.array(v, dtype=float)
        ref_layer.forward(rb, rt)
    layer.forward(bottom, bottom)
    np.testing.assert_allclose(bottom[0].data, rt[0].data, rtol=1e-12)
    dy = np.random.default_rng(13).standard_normal(x.shape)
    rt[0].diff = dy
    ref_layer.backward(rt, [True], rb)
    bottom[0].data[...] = 7.0       # a following in-place Scale changes the shared top
    bottom[0].diff = dy
    layer.backward(bottom, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, rb[0].diff, rtol=1e-12)
    checker_bottom = make_blobs([x])
    GradientChecker(step=1e-3).check(layer, checker_bottom, checker_bottom, setup=False)


def test_batchnorm_float32():
    x = np.random.default_rng(14).standard_normal((4, 3, 3))
    layer = make_layer("BatchNorm", "", phase=TRAIN, dtype=np.float32)
    bottom = make_blobs([x], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32 and layer.blobs[1].data.dtype == np.float32
    mean, var, m = bn_stats(x.astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(top[0].data, bn_normalise(x, mean, var, f32(1e-5)),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].data, var * m / (m - 1), rtol=1e-5)
    top[0].diff = np.ones(x.shape, np.float32)
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.dtype == np.float32
    np.testing.assert_allclose(bottom[0].diff, 0.0, atol=1e-5)   # sum of y is constant


def test_batchnorm_errors():
    with pytest.raises(ConfigError, match="lr_mult"):
        run_forward(make_layer("BatchNorm", "param { lr_mult: 1 }"), fresh((2, 3)))
    run_forward(make_layer("BatchNorm", "param { lr_mult: 0 } param { lr_mult: 0 } "
                                        "param { lr_mult: 0 }"), fresh((2, 3)))
    layer = make_layer("BatchNorm")
    top = run_forward(layer, fresh((2, 3, 4)))
    with pytest.raises(ShapeError, match="3"):
        layer.reshape(fresh((2, 5, 4)), top)


# --------------------------------------------------------------------------------------------
# MVN

def ref_mvn(x, nv, across, eps):
    y = np.empty_like(x)
    for b in range(x.shape[0]):
        groups = [slice(None)] if across else list(range(x.shape[1]))
        for g in groups:
            v = x[b, g]
            c = v - v.mean()
            if nv:
                c = c / (np.sqrt((c ** 2).mean()) + eps)
            y[b, g] = c
    return y


@pytest.mark.parametrize("nv", [True, False])
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("eps,shape", [(1e-9, (2, 3, 2, 3)), (0.5, (2, 2, 5))])
def test_mvn(nv, across, eps, shape):
    layer = make_layer("MVN", f"mvn_param {{ normalize_variance: {str(nv).lower()} "
                              f"across_channels: {str(across).lower()} eps: {eps} }}")
    bottom = fresh(shape, seed=21)
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, ref_mvn(bottom[0].data, nv, across, f32(eps)),
                               rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, top)


def test_mvn_float32_clobbered_top_and_constant_rows():
    x = np.random.default_rng(22).standard_normal((2, 3, 4))
    x[1, 2] = 3.0                      # a constant channel: y = 0, finite gradient
    ref = ref_mvn(x, True, False, f32(1e-9))
    for dt in (np.float64, np.float32):
        layer = make_layer("MVN", "mvn_param { eps: 0.001 }", dtype=dt)
        bottom = make_blobs([x], dtype=dt)
        top = run_forward(layer, bottom)
        assert top[0].data.dtype == dt
        ref = ref_mvn(x, True, False, f32(0.001))
        np.testing.assert_allclose(top[0].data, ref, rtol=1e-4 if dt == np.float32 else 1e-10,
                                   atol=1e-5 if dt == np.float32 else 1e-12)
        dy = np.random.default_rng(23).standard_normal(x.shape)
        top[0].diff = dy
        layer.backward(top, [True], bottom)
        expect = bottom[0].diff.copy()
        assert np.all(np.isfinite(expect))
        top[0].data[...] = -5.0        # a later in-place layer changed the top
        layer.backward(top, [True], bottom)
        np.testing.assert_array_equal(bottom[0].diff, expect)


# --------------------------------------------------------------------------------------------
# shared

@pytest.mark.parametrize("type_,params,shape", [
    ("LRN", "", (2, 6, 5, 5)),
    ("LRN", "lrn_param { norm_region: WITHIN_CHANNEL }", (2, 6, 5, 5)),
    ("BatchNorm", "", (2, 6, 5, 5)),
    ("MVN", "", (2, 6, 5, 5)),
])
def test_shape_only_setup_and_flops(type_, params, shape):
    layer = make_layer(type_, params, init_params=False, dtype=np.float32)
    bottom = [Blob(shape, np.float32)]
    top = [Blob((), np.float32)]
    layer.setup(bottom, top)
    assert top[0].shape == shape
    assert not bottom[0].allocated
    assert all(not b.allocated for b in layer.blobs)
    assert layer.flops(bottom, top) >= 2 * bottom[0].count

