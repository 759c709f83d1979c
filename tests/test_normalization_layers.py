"""Normalisation layers (LRN, BatchNorm, MVN).

Forward values are compared with float64 references written here from Caffe's formulas (naive
loops / plain numpy, never the layers' kernels); gradients are checked with Caffe's
central-difference GradientChecker.  BatchNorm's three stored blobs are checked against the
moving-average formulas after one and two forwards, in TRAIN and with global statistics, with
2-D and 4-D bottoms and in place.
"""
from __future__ import annotations

import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import TEST, TRAIN, GradientChecker, make_blobs, make_layer, run_forward


def f32(v):
    """Layer parameters are proto ``float`` fields: the layer sees them rounded to float32."""
    return float(np.float32(v))


EPS = f32(1e-5)       # BatchNorm's default eps


def check_grad(layer, bottom, top=None, **kw):
    top = [Blob((), dtype=layer.dtype, name="t0")] if top is None else top
    GradientChecker(step=1e-2, threshold=1e-3).check(layer, bottom, top, **kw)
    return top


def assert_close(a, b, rtol=1e-10, atol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"shape {a.shape} != reference {b.shape}"
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# ----------------------------------------------------------------------------------------------
# LRN

def lrn_ref(x, size, alpha, beta, k, across):
    """ACROSS_CHANNELS: y = x * (k + alpha/n * sum_{|c'-c| <= (n-1)/2} x[c']^2)^-beta, channels
    outside [0, C) count as zero.  WITHIN_CHANNEL (Caffe: square -> AVE pool n x n, stride 1,
    pad (n-1)/2 -> power(shift 1, scale alpha) -> product): y = x * (1 + alpha/n^2 *
    sum_{n x n patch inside the image} x^2)^-beta; k plays no part."""
    n, c, h, w = x.shape
    half = (size - 1) // 2
    y = np.zeros_like(x, dtype=np.float64)
    for ni in range(n):
        for ci in range(c):
            for hi in range(h):
                for wi in range(w):
                    s = 0.0
                    if across:
                        for cc in range(ci - half, ci + half + 1):
                            if 0 <= cc < c:
                                s += float(x[ni, cc, hi, wi]) ** 2
                        scale = k + alpha / size * s
                    else:
                        for hh in range(hi - half, hi + half + 1):
                            for ww in range(wi - half, wi + half + 1):
                                if 0 <= hh < h and 0 <= ww < w:
                                    s += float(x[ni, ci, hh, ww]) ** 2
                        scale = 1.0 + alpha / (size * size) * s
                    y[ni, ci, hi, wi] = float(x[ni, ci, hi, wi]) * scale ** -beta
    return y


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


# ----------------------------------------------------------------------------------------------
# BatchNorm

def bn_stats(x):
    """Per-channel (axis 1) mean and biased variance over every other axis, float64, plus m."""
    x = np.asarray(x, np.float64)
    c = 1 if x.ndim == 1 else x.shape[1]
    xr = np.moveaxis(x.reshape(x.shape[0], c, -1), 1, 0).reshape(c, -1)
    mean = np.array([sum(row) / len(row) for row in xr])
    var = np.array([sum((v - mu) ** 2 for v in row) / len(row) for row, mu in zip(xr, mean)])
    return mean, var, xr.shape[1]


def bn_apply(x, mean, var, eps):
    x = np.asarray(x, np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 1 else (-1,)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)


def bn_backward_ref(y, dy, var, eps):
    """Caffe: dx = (dy - mean(dy) - mean(dy * y) * y) / sqrt(var + eps), means per channel."""
    axes = (0,) + tuple(range(2, y.ndim))
    shape = (1, -1) + (1,) * (y.ndim - 2)
    return (dy - dy.mean(axis=axes, keepdims=True)
            - (dy * y).mean(axis=axes, keepdims=True) * y) / np.sqrt(var.reshape(shape) + eps)


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
def test_batchnorm_in_place(global_stats):
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
def test_batchnorm_float32(global_stats):
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


# ----------------------------------------------------------------------------------------------
# MVN

def mvn_ref(x, normalize_variance, across_channels, eps):
    """Per item (across_channels) or per (item, channel): subtract the mean and, with
    normalize_variance, divide by sqrt(biased variance) + eps (Caffe adds eps after the root)."""
    x = np.asarray(x, np.float64)
    rows = x.reshape(x.shape[0], -1) if across_channels or x.ndim < 2 \
        else x.reshape(x.shape[0] * x.shape[1], -1)
    out = np.empty_like(rows)
    for r, row in enumerate(rows):
        mu = sum(row) / len(row)
        cen = row - mu
        if normalize_variance:
            sd = np.sqrt(sum(cen * cen) / len(row))
            cen = cen / (sd + eps)
        out[r] = cen
    return out.reshape(x.shape)


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
