"""Normalisation layers (LRN, BatchNorm, MVN): forward against the float64 references of
layer_refs (written from Caffe's formulas: naive loops / plain numpy, never the layers' kernels),
central-difference gradient checks, BatchNorm's three stored blobs against the moving-average
formulas (TRAIN, global statistics, 1-D to 5-D bottoms, in place, clobbered top), float32,
shape-only setup and parameter errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import TEST, TRAIN, GradientChecker, make_blobs, make_layer, run_forward

from layer_refs import bn_apply, bn_backward_ref, bn_stats, lrn_ref, mvn_ref


def f32(v):
    """Layer parameters are proto ``float`` fields: the layer sees them rounded to float32."""
    return float(np.float32(v))


EPS = f32(1e-5)       # BatchNorm's default eps


def fresh(shape, seed=3, dtype=np.float64):
    return make_blobs([np.random.default_rng(seed).standard_normal(shape)], dtype=dtype)


def check_grad(layer, bottom, top=None, **kw):
    top = [Blob((), dtype=layer.dtype, name="t0")] if top is None else top
    GradientChecker(step=1e-2, threshold=1e-3).check(layer, bottom, top, **kw)
    return top


def assert_close(a, b, rtol=1e-10, atol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != reference {b.shape}"
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------------
# LRN

LRN_ACROSS = [  # local_size, alpha, beta, k, shape
    (3, 1.0, 0.75, 1.0, (2, 7, 3, 2)),
    (5, 0.3, 0.6, 2.0, (2, 6, 2, 3)),
    (5, 2.0, 0.75, 1.5, (1, 3, 2, 2)),      # fewer channels than the window
    (5, 0.3, 0.6, 2.0, (2, 7, 3, 2)),
]


@pytest.mark.parametrize("n,alpha,beta,k,shape", LRN_ACROSS)
def test_lrn_across_channels(n, alpha, beta, k, shape):
    layer = make_layer("LRN", f"lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} "
                              f"k: {k} }}")
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    ref = lrn_ref(bottom[0].data, n, f32(alpha), f32(beta), f32(k), True)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-14)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_lrn_without_its_scale_and_with_it_reused(region):
    """keep_scale False (the frozen predictor: no backward) gives the same top, bit for bit,
    without a scale array (across channels); with it, a second forward reuses the buffer and
    the backward after it is that forward's."""
    params = f"lrn_param {{ local_size: 5 alpha: 0.3 beta: 0.75 k: 2 norm_region: {region} }}"
    rng = np.random.default_rng(6)
    x1, x2 = (rng.standard_normal((2, 7, 3, 4)).astype(np.float32) for _ in range(2))
    keep = make_layer("LRN", params, dtype=np.float32)
    lean = make_layer("LRN", params, dtype=np.float32)
    lean.keep_scale = False
    tk = run_forward(keep, make_blobs([x1], dtype=np.float32))
    tl = run_forward(lean, make_blobs([x1], dtype=np.float32))
    np.testing.assert_array_equal(tl[0].data, tk[0].data)
    assert lean._scale.size == (0 if region == "ACROSS_CHANNELS" else x1.size)
    first = keep._scale
    b2 = make_blobs([x2], dtype=np.float32)
    keep.forward(b2, tk)
    assert keep._scale is first or region == "WITHIN_CHANNEL"
    fresh_layer = make_layer("LRN", params, dtype=np.float32)
    bf = make_blobs([x2], dtype=np.float32)
    tf = run_forward(fresh_layer, bf)
    dy = rng.standard_normal(x2.shape).astype(np.float32)
    tk[0].diff = dy
    tf[0].diff = dy
    keep.backward(tk, [True], b2)
    fresh_layer.backward(tf, [True], bf)
    np.testing.assert_array_equal(b2[0].diff, bf[0].diff)


@pytest.mark.parametrize("n,alpha,beta,shape,extra", [
    (3, 1.0, 0.75, (2, 2, 5, 4), ""),
    (5, 2.0, 0.5, (1, 3, 3, 4), "k: 7"),      # window larger than the image; k is ignored
    (5, 0.7, 0.9, (1, 2, 6, 5), ""),
    (5, 2.0, 0.5, (2, 2, 5, 4), ""),
])
def test_lrn_within_channel(n, alpha, beta, shape, extra):
    layer = make_layer("LRN", f"lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} "
                              f"norm_region: WITHIN_CHANNEL {extra} }}")
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    ref = lrn_ref(bottom[0].data, n, f32(alpha), f32(beta), 1.0, False)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-14)
    GradientChecker().check(layer, bottom, top)


def test_lrn_defaults_and_many_blocks():
    """local_size 5, alpha 1, beta 0.75, k 1; more positions than one kernel block."""
    layer = make_layer("LRN")
    bottom = fresh((2, 6, 12, 13))
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, lrn_ref(bottom[0].data, 5, 1.0, 0.75, 1.0, True),
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


# (id, shape, region, local_size, alpha, beta, k)
LRN_CASES = [
    ("across3", (2, 4, 3, 3), "ACROSS_CHANNELS", 3, 2.0, 0.6, 1.5),
    ("across5_defaults", (2, 6, 2, 3), "ACROSS_CHANNELS", 5, 1.0, 0.75, 1.0),
    ("across5_wider_than_C", (1, 3, 3, 2), "ACROSS_CHANNELS", 5, 0.5, 0.9, 2.0),
    ("within3", (2, 2, 5, 5), "WITHIN_CHANNEL", 3, 1.5, 0.8, 5.0),
    ("within5", (1, 2, 4, 6), "WITHIN_CHANNEL", 5, 3.0, 0.5, 1.0),
]


def lrn_layer(case, dtype=np.float64):
    _, _, region, size, alpha, beta, k = case
    return make_layer("LRN", f"lrn_param {{ norm_region: {region} local_size: {size} "
                             f"alpha: {alpha} beta: {beta} k: {k} }}", dtype=dtype)


@pytest.mark.parametrize("case", LRN_CASES, ids=[c[0] for c in LRN_CASES])
def test_lrn_forward(case):
    _, shape, region, size, alpha, beta, k = case
    layer = lrn_layer(case)
    bottom = make_blobs([shape], seed=21)
    top = run_forward(layer, bottom)
    ref = lrn_ref(bottom[0].data, size, f32(alpha), f32(beta), f32(k),
                  region == "ACROSS_CHANNELS")
    assert_close(top[0].data, ref)


@pytest.mark.parametrize("case", LRN_CASES, ids=[c[0] for c in LRN_CASES])
def test_lrn_gradient(case):
    layer = lrn_layer(case)
    bottom = make_blobs([case[1]], seed=22)
    check_grad(layer, bottom)


def test_lrn_within_ignores_k():
    x = make_blobs([(1, 2, 4, 4)], seed=23)
    a = run_forward(make_layer("LRN", "lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 "
                                      "k: 1 }"), x)[0].data.copy()
    b = run_forward(make_layer("LRN", "lrn_param { norm_region: WITHIN_CHANNEL local_size: 3 "
                                      "k: 7 }"), x)[0].data
    assert_close(a, b)


def test_lrn_default_parameters():
    """local_size 5, alpha 1, beta 0.75, k 1, ACROSS_CHANNELS."""
    bottom = make_blobs([(1, 7, 2, 2)], seed=24)
    top = run_forward(make_layer("LRN"), bottom)
    assert_close(top[0].data, lrn_ref(bottom[0].data, 5, 1.0, 0.75, 1.0, True))


@pytest.mark.parametrize("case", [LRN_CASES[0], LRN_CASES[3]], ids=["across", "within"])
def test_lrn_float32(case):
    _, shape, region, size, alpha, beta, k = case
    layer = lrn_layer(case, dtype=np.float32)
    bottom = make_blobs([shape], dtype=np.float32, seed=25)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    ref = lrn_ref(bottom[0].data.astype(np.float64), size, f32(alpha), f32(beta), f32(k),
                  region == "ACROSS_CHANNELS")
    assert_close(top[0].data, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("params,shape,err,words", [
    ("lrn_param { local_size: 4 }", (1, 4, 3, 3), ConfigError, "odd"),
    ("lrn_param { local_size: 2 norm_region: WITHIN_CHANNEL }", (1, 4, 3, 3), ConfigError,
     "odd"),
    ("lrn_param { local_size: 0 }", (1, 4, 3, 3), ConfigError, "local_size"),
    ("lrn_param { local_size: 3 }", (2, 4, 3), ShapeError, "4"),
])
def test_lrn_errors(params, shape, err, words):
    layer = make_layer("LRN", params)
    with pytest.raises(err) as info:
        run_forward(layer, make_blobs([shape]))
    assert isinstance(info.value, NetdefError)
    assert words in str(info.value), str(info.value)
    if err is ConfigError:
        assert info.value.field == "lrn_param.local_size"


# --------------------------------------------------------------------------------------------
# BatchNorm

@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5), (2, 3, 2, 1, 2), (5,)])
@pytest.mark.parametrize("eps", [1e-4, 1e-5])
def test_batchnorm_train_batch_statistics(shape, eps):
    maf = 0.875
    layer = make_layer("BatchNorm", f"batch_norm_param {{ moving_average_fraction: {maf} "
                                    f"eps: {eps} }}", phase=TRAIN)
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    c = 1 if len(shape) == 1 else shape[1]
    assert [b.shape for b in layer.blobs] == [(c,), (c,), (1,)]
    assert layer.param_propagate_down == [False, False, False]
    x1 = bottom[0].data.copy()
    mean1, var1, m = bn_stats(x1)
    np.testing.assert_allclose(top[0].data, bn_apply(x1, mean1, var1, f32(eps)),
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
    np.testing.assert_allclose(top[0].data, bn_apply(x2, mean2, var2, f32(eps)),
                               rtol=1e-10, atol=1e-12)
    GradientChecker(step=1e-3).check(layer, bottom, top, setup=False)


def test_batchnorm_batch_gradient_formula():
    """dx = (dy - mean(dy) - mean(dy*y) y) / sqrt(var + eps), against a float64 reference."""
    layer = make_layer("BatchNorm", "", phase=TRAIN)
    bottom = fresh((3, 2, 2, 3))
    top = run_forward(layer, bottom)
    x = bottom[0].data
    mean, var, _ = bn_stats(x)
    y = bn_apply(x, mean, var, f32(1e-5))
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
    ref = bn_apply(x3, acc_mean / sf, acc_var / sf, f32(1e-5))
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
    np.testing.assert_allclose(top[0].data, bn_apply(bottom[0].data, mean, var, f32(1e-5)),
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
    np.testing.assert_allclose(top[0].data, bn_apply(x, mean, var, f32(1e-5)),
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


BN_SHAPES = [(5, 3), (2, 3, 2, 3), (2, 2, 5)]


@pytest.mark.parametrize("shape", BN_SHAPES, ids=["2d", "4d", "3d"])
@pytest.mark.parametrize("maf,eps", [(0.999, 1e-5), (0.9, 1e-2)])
def test_batchnorm_train_forward_and_moving_averages(shape, maf, eps):
    params = "" if maf == 0.999 else f"batch_norm_param {{ moving_average_fraction: {maf} " \
                                     f"eps: {eps} }}"
    maf, eps = f32(maf), f32(eps)
    layer = make_layer("BatchNorm", params, phase=TRAIN)
    rng = np.random.default_rng(31)
    x1 = rng.standard_normal(shape) * 2 + 0.5
    x2 = rng.standard_normal(shape) * 0.5 - 1.0
    bottom = make_blobs([x1])
    top = run_forward(layer, bottom)
    assert [b.shape for b in layer.blobs] == [(shape[1],), (shape[1],), (1,)]
    m1, v1, m = bn_stats(x1)
    assert_close(top[0].data, bn_apply(x1, m1, v1, eps), rtol=1e-9)
    assert_close(layer.blobs[2].data, [1.0])
    assert_close(layer.blobs[0].data, m1)
    assert_close(layer.blobs[1].data, m / (m - 1) * v1)

    bottom[0].data = x2
    layer.forward(bottom, top)
    m2, v2, _ = bn_stats(x2)
    assert_close(top[0].data, bn_apply(x2, m2, v2, eps), rtol=1e-9)
    assert_close(layer.blobs[2].data, [maf * 1.0 + 1.0])
    assert_close(layer.blobs[0].data, maf * m1 + m2)
    assert_close(layer.blobs[1].data, maf * (m / (m - 1) * v1) + m / (m - 1) * v2)

    # the stored statistics, used by a TEST-phase twin, give mean = b0 / s and var = b1 / s
    twin = make_layer("BatchNorm", params, phase=TEST)
    tb = make_blobs([x1])
    ttop = [Blob((), dtype=np.float64)]
    twin.setup(tb, ttop)
    for mine, theirs in zip(twin.blobs, layer.blobs):
        mine.data = theirs.data
    twin.forward(tb, ttop)
    s = maf + 1.0
    assert_close(ttop[0].data, bn_apply(x1, (maf * m1 + m2) / s,
                                        (maf * m / (m - 1) * v1 + m / (m - 1) * v2) / s, eps),
                 rtol=1e-9)


def _set_stats(layer, mean_acc, var_acc, s):
    layer.blobs[0].data = mean_acc
    layer.blobs[1].data = var_acc
    layer.blobs[2].data = [s]


@pytest.mark.parametrize("shape", BN_SHAPES, ids=["2d", "4d", "3d"])
@pytest.mark.parametrize("how", ["test_phase", "train_use_global_stats"])
def test_batchnorm_global_stats(shape, how):
    if how == "test_phase":
        layer = make_layer("BatchNorm", "batch_norm_param { eps: 1e-3 }", phase=TEST)
    else:
        layer = make_layer("BatchNorm", "batch_norm_param { use_global_stats: true eps: 1e-3 }",
                           phase=TRAIN)
    c = shape[1]
    rng = np.random.default_rng(32)
    bottom = make_blobs([rng.standard_normal(shape)])
    top = [Blob((), dtype=np.float64)]
    layer.setup(bottom, top)
    mean_acc, var_acc, s = rng.standard_normal(c), rng.uniform(0.5, 2.0, c), 2.5
    _set_stats(layer, mean_acc, var_acc, s)
    layer.forward(bottom, top)
    assert_close(top[0].data, bn_apply(bottom[0].data, mean_acc / s, var_acc / s, f32(1e-3)))
    # global statistics are read, never updated
    assert_close(layer.blobs[0].data, mean_acc)
    assert_close(layer.blobs[1].data, var_acc)
    assert_close(layer.blobs[2].data, [s])
    check_grad(layer, bottom)
    assert_close(layer.blobs[2].data, [s])


def test_batchnorm_global_stats_zero_scale_factor():
    """s == 0 (never trained): Caffe uses mean = var = 0."""
    layer = make_layer("BatchNorm", "", phase=TEST)
    bottom = make_blobs([(2, 3, 2, 2)], seed=33)
    top = [Blob((), dtype=np.float64)]
    layer.setup(bottom, top)
    _set_stats(layer, np.ones(3), np.ones(3), 0.0)
    layer.forward(bottom, top)
    assert_close(top[0].data, bottom[0].data / np.sqrt(EPS))


def test_batchnorm_batch_stats_in_test_phase():
    """use_global_stats: false in TEST normalises with the batch statistics."""
    layer = make_layer("BatchNorm", "batch_norm_param { use_global_stats: false "
                                    "moving_average_fraction: 0.5 }", phase=TEST)
    x = np.random.default_rng(34).standard_normal((3, 2, 2, 2))
    top = run_forward(layer, make_blobs([x]))
    mean, var, _ = bn_stats(x)
    assert_close(top[0].data, bn_apply(x, mean, var, EPS), rtol=1e-9)


def test_batchnorm_default_phase_rule():
    x = make_blobs([(4, 2)], seed=35)
    tr = make_layer("BatchNorm", "", phase=TRAIN)
    te = make_layer("BatchNorm", "", phase=TEST)
    mean, var, _ = bn_stats(x[0].data)
    assert_close(run_forward(tr, x)[0].data, bn_apply(x[0].data, mean, var, EPS), rtol=1e-9)
    # TEST with untouched blobs (s = 0): mean 0, var 0
    assert_close(run_forward(te, x)[0].data, x[0].data / np.sqrt(EPS))
    assert_close(te.blobs[2].data, [0.0])


@pytest.mark.parametrize("shape", BN_SHAPES, ids=["2d", "4d", "3d"])
def test_batchnorm_train_gradient(shape):
    layer = make_layer("BatchNorm", "", phase=TRAIN)
    bottom = make_blobs([shape], seed=36)
    check_grad(layer, bottom)


@pytest.mark.parametrize("global_stats", [False, True], ids=["batch", "global"])
def test_batchnorm_in_place_against_a_separate_top(global_stats):
    shape = (2, 3, 2, 3)
    phase = TEST if global_stats else TRAIN
    rng = np.random.default_rng(37)
    x = rng.standard_normal(shape)
    dy = rng.standard_normal(shape)
    stats = (rng.standard_normal(3), rng.uniform(0.5, 2.0, 3), 1.7)

    def run(in_place):
        layer = make_layer("BatchNorm", "batch_norm_param { moving_average_fraction: 0.8 }",
                           phase=phase)
        bottom = make_blobs([x])
        top = bottom if in_place else [Blob((), dtype=np.float64, name="t")]
        layer.setup(bottom, top)
        if global_stats:
            _set_stats(layer, *stats)
        layer.forward(bottom, top)
        y = top[0].data.copy()
        top[0].diff = dy
        layer.backward(top, [True], bottom)
        return y, bottom[0].diff.copy(), [b.data.copy() for b in layer.blobs]

    y0, dx0, blobs0 = run(False)
    y1, dx1, blobs1 = run(True)
    assert_close(y1, y0)
    assert_close(dx1, dx0)
    for a, b in zip(blobs1, blobs0):
        assert_close(a, b)
    if global_stats:
        mean, var = stats[0] / stats[2], stats[1] / stats[2]
        assert_close(y0, bn_apply(x, mean, var, EPS))
        assert_close(dx0, dy / np.sqrt(var.reshape(1, 3, 1, 1) + EPS))
    else:
        mean, var, _ = bn_stats(x)
        assert_close(y0, bn_apply(x, mean, var, EPS), rtol=1e-9)
        assert_close(dx0, bn_backward_ref(y0, dy, var, EPS), rtol=1e-8, atol=1e-10)

    # Caffe's gradient check of the in-place layer
    layer = make_layer("BatchNorm", "", phase=phase)
    bottom = make_blobs([x])
    layer.setup(bottom, bottom)
    if global_stats:
        _set_stats(layer, *stats)
    check_grad(layer, bottom, top=bottom, setup=False)


@pytest.mark.parametrize("in_place", [False, True], ids=["separate", "in_place"])
def test_batchnorm_backward_survives_clobbered_top(in_place):
    """A later in-place layer (Scale, ReLU) overwrites BatchNorm's top before its backward:
    Caffe keeps its own copy of the normalised data (x_norm_) for the gradient."""
    shape = (3, 2, 2, 2)
    rng = np.random.default_rng(38)
    x, dy = rng.standard_normal(shape), rng.standard_normal(shape)
    layer = make_layer("BatchNorm", "", phase=TRAIN)
    bottom = make_blobs([x])
    top = bottom if in_place else [Blob((), dtype=np.float64, name="t")]
    layer.setup(bottom, top)
    layer.forward(bottom, top)
    y = top[0].data.copy()
    top[0].data = np.maximum(3.0 * y + 1.0, 0.0)       # e.g. Scale then ReLU, in place
    top[0].diff = dy
    layer.backward(top, [True], bottom)
    _, var, _ = bn_stats(x)
    assert_close(bottom[0].diff, bn_backward_ref(y, dy, var, EPS), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("global_stats", [False, True], ids=["batch", "global"])
def test_batchnorm_float32_batch_and_global(global_stats):
    shape = (2, 3, 3, 2)
    layer = make_layer("BatchNorm", "", phase=TEST if global_stats else TRAIN, dtype=np.float32)
    rng = np.random.default_rng(39)
    bottom = make_blobs([rng.standard_normal(shape) * 3 + 1], dtype=np.float32)
    top = [Blob((), dtype=np.float32)]
    layer.setup(bottom, top)
    x64 = bottom[0].data.astype(np.float64)
    if global_stats:
        _set_stats(layer, np.array([0.5, -1.0, 2.0]), np.array([1.0, 4.0, 0.25]), 2.0)
        mean = layer.blobs[0].data.astype(np.float64) / 2.0
        var = layer.blobs[1].data.astype(np.float64) / 2.0
    else:
        mean, var, _ = bn_stats(x64)
    layer.forward(bottom, top)
    assert top[0].data.dtype == np.float32
    assert all(b.data.dtype == np.float32 for b in layer.blobs)
    assert_close(top[0].data, bn_apply(x64, mean, var, EPS), rtol=1e-4, atol=1e-5)


def test_batchnorm_1d_bottom_is_one_channel():
    x = np.random.default_rng(40).standard_normal(6)
    layer = make_layer("BatchNorm", "", phase=TRAIN)
    top = run_forward(layer, make_blobs([x]))
    assert [b.shape for b in layer.blobs] == [(1,), (1,), (1,)]
    mu, var = x.mean(), x.var()
    assert_close(top[0].data, (x - mu) / np.sqrt(var + EPS), rtol=1e-9)
    assert_close(layer.blobs[1].data, [6 / 5 * var])


def test_batchnorm_lr_mult_must_be_zero():
    with pytest.raises(ConfigError) as info:
        run_forward(make_layer("BatchNorm", "param { lr_mult: 0 } param { lr_mult: 1 } "
                                            "param { lr_mult: 0 }", phase=TRAIN),
                    make_blobs([(2, 3)]))
    assert "lr_mult" in str(info.value) and info.value.field == "param[1].lr_mult"
    # all zero is fine, and nothing is learned
    layer = make_layer("BatchNorm", "param { lr_mult: 0 } param { lr_mult: 0 } "
                                    "param { lr_mult: 0 }", phase=TRAIN)
    run_forward(layer, make_blobs([(2, 3)]))
    assert layer.param_propagate_down == [False, False, False]


def test_batchnorm_channel_mismatch_on_reshape():
    layer = make_layer("BatchNorm", "", phase=TRAIN)
    bottom = make_blobs([(2, 3, 2, 2)])
    top = run_forward(layer, bottom)
    bottom[0].reshape((2, 4, 2, 2))
    with pytest.raises(ShapeError, match="channels"):
        layer.reshape(bottom, top)


# --------------------------------------------------------------------------------------------
# MVN

@pytest.mark.parametrize("nv", [True, False])
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("eps,shape", [(1e-9, (2, 3, 2, 3)), (0.5, (2, 2, 5))])
def test_mvn(nv, across, eps, shape):
    layer = make_layer("MVN", f"mvn_param {{ normalize_variance: {str(nv).lower()} "
                              f"across_channels: {str(across).lower()} eps: {eps} }}")
    bottom = fresh(shape, seed=21)
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, mvn_ref(bottom[0].data, nv, across, f32(eps)),
                               rtol=1e-10, atol=1e-12)
    GradientChecker().check(layer, bottom, top)


def test_mvn_float32_clobbered_top_and_constant_rows():
    x = np.random.default_rng(22).standard_normal((2, 3, 4))
    x[1, 2] = 3.0                      # a constant channel: y = 0, finite gradient
    ref = mvn_ref(x, True, False, f32(1e-9))
    for dt in (np.float64, np.float32):
        layer = make_layer("MVN", "mvn_param { eps: 0.001 }", dtype=dt)
        bottom = make_blobs([x], dtype=dt)
        top = run_forward(layer, bottom)
        assert top[0].data.dtype == dt
        ref = mvn_ref(x, True, False, f32(0.001))
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


MVN_COMBOS = [(nv, ac) for nv in (True, False) for ac in (False, True)]
MVN_IDS = [f"{'var' if nv else 'mean'}_{'across' if ac else 'per_channel'}"
           for nv, ac in MVN_COMBOS]


def mvn_layer(nv, ac, eps=None, dtype=np.float64):
    e = "" if eps is None else f"eps: {eps}"
    return make_layer("MVN", f"mvn_param {{ normalize_variance: {str(nv).lower()} "
                             f"across_channels: {str(ac).lower()} {e} }}", dtype=dtype)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 6)], ids=["4d", "3d"])
@pytest.mark.parametrize("eps", [None, 0.1], ids=["eps_default", "eps_0.1"])
@pytest.mark.parametrize("nv,ac", MVN_COMBOS, ids=MVN_IDS)
def test_mvn_forward(nv, ac, eps, shape):
    layer = mvn_layer(nv, ac, eps)
    rng = np.random.default_rng(41)
    bottom = make_blobs([rng.standard_normal(shape) * 2 + 3])
    top = run_forward(layer, bottom)
    ref = mvn_ref(bottom[0].data, nv, ac, f32(1e-9 if eps is None else eps))
    assert_close(top[0].data, ref, rtol=1e-9, atol=1e-11)


def test_mvn_2d_across_channels():
    x = np.random.default_rng(42).standard_normal((4, 6))
    top = run_forward(mvn_layer(True, True), make_blobs([x]))
    assert_close(top[0].data, mvn_ref(x, True, True, f32(1e-9)), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("nv,ac", MVN_COMBOS, ids=MVN_IDS)
def test_mvn_gradient(nv, ac):
    layer = mvn_layer(nv, ac)
    bottom = make_blobs([(2, 3, 3, 3)], seed=43)
    check_grad(layer, bottom)


@pytest.mark.parametrize("nv,ac", [(True, False), (True, True)], ids=["per_channel", "across"])
def test_mvn_float32(nv, ac):
    layer = mvn_layer(nv, ac, dtype=np.float32)
    bottom = make_blobs([(2, 3, 4, 4)], dtype=np.float32, seed=44)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    ref = mvn_ref(bottom[0].data.astype(np.float64), nv, ac, 1e-9)
    assert_close(top[0].data, ref, rtol=1e-4, atol=1e-5)


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
