"""LRN, BatchNorm, MVN, InnerProduct, Embed, Scale, Bias: forward against float64 references
written from Caffe's formulas, and gradient checks."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import NetdefError
from netdef.testing import GradientChecker, TEST, TRAIN, make_blobs, make_layer, run_forward

RNG = np.random.default_rng(11)


def lrn_across_ref(x, n, alpha, beta, k):
    y = np.zeros_like(x)
    c = x.shape[1]
    for ci in range(c):
        lo, hi = max(0, ci - (n - 1) // 2), min(c, ci + (n - 1) // 2 + 1)
        scale = k + alpha / n * (x[:, lo:hi] ** 2).sum(axis=1)
        y[:, ci] = x[:, ci] * scale ** -beta
    return y


def lrn_within_ref(x, n, alpha, beta):
    _, _, h, w = x.shape
    p = (n - 1) // 2
    y = np.zeros_like(x)
    for i in range(h):
        for j in range(w):
            win = x[:, :, max(0, i - p):min(h, i + p + 1), max(0, j - p):min(w, j + p + 1)]
            s = 1 + alpha * (win ** 2).sum(axis=(2, 3)) / n ** 2
            y[:, :, i, j] = x[:, :, i, j] * s ** -beta
    return y


@pytest.mark.parametrize("n,alpha,beta,k", [(3, 1.0, 0.75, 1.0), (5, 0.3, 0.6, 2.0)])
def test_lrn_across(n, alpha, beta, k):
    layer = make_layer("LRN", f"lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} k: {k} }}")
    bottom = make_blobs([(2, 7, 3, 2)])
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, lrn_across_ref(bottom[0].data, n, alpha, beta, k),
                               rtol=1e-5)  # alpha/beta are float32 in the schema
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("n,alpha,beta", [(3, 1.0, 0.75), (5, 2.0, 0.5)])
def test_lrn_within(n, alpha, beta):
    layer = make_layer("LRN", f"lrn_param {{ local_size: {n} alpha: {alpha} beta: {beta} "
                              f"norm_region: WITHIN_CHANNEL }}")
    bottom = make_blobs([(2, 2, 5, 4)])
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, lrn_within_ref(bottom[0].data, n, alpha, beta),
                               rtol=1e-5)
    GradientChecker().check(layer, bottom, top)


def test_lrn_even_size_is_an_error():
    with pytest.raises(NetdefError, match="odd"):
        run_forward(make_layer("LRN", "lrn_param { local_size: 4 }"), make_blobs([(1, 4, 2, 2)]))


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 4, 5)])
def test_batchnorm_train_statistics_and_gradient(shape):
    layer = make_layer("BatchNorm", "batch_norm_param { moving_average_fraction: 0.875 eps: 1e-5 }",
                       phase=TRAIN)
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    x = bottom[0].data
    axes = (0,) + tuple(range(2, x.ndim))
    bs = (1, -1) + (1,) * (x.ndim - 2)
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    np.testing.assert_allclose(top[0].data, (x - mean.reshape(bs)) / np.sqrt(var.reshape(bs) + 1e-5),
                               rtol=1e-9)
    m = x.size / shape[1]
    np.testing.assert_allclose(layer.blobs[2].data, [1.0])
    np.testing.assert_allclose(layer.blobs[0].data, mean)
    np.testing.assert_allclose(layer.blobs[1].data, var * m / (m - 1))
    x2 = RNG.standard_normal(shape)
    bottom[0].data = x2
    layer.forward(bottom, top)
    np.testing.assert_allclose(layer.blobs[2].data, [0.875 + 1])
    np.testing.assert_allclose(layer.blobs[0].data, 0.875 * mean + x2.mean(axis=axes))
    np.testing.assert_allclose(layer.blobs[1].data,
                               0.875 * var * m / (m - 1) + x2.var(axis=axes) * m / (m - 1))
    GradientChecker(step=1e-3).check(layer, bottom, top, check_params=False, setup=False)


def test_batchnorm_global_stats_and_in_place():
    layer = make_layer("BatchNorm", "", phase=TEST)
    bottom = make_blobs([(2, 3, 2, 2)])
    layer.setup(bottom, [Blob((), np.float64)])
    layer.blobs[0].data = np.array([1.0, 2.0, 3.0])
    layer.blobs[1].data = np.array([4.0, 8.0, 2.0])
    layer.blobs[2].data = np.array([2.0])
    x = bottom[0].data.copy()
    layer.forward(bottom, bottom)                     # in place
    ref = (x - np.array([0.5, 1, 1.5]).reshape(1, 3, 1, 1)) / \
        np.sqrt(np.array([2.0, 4, 1]).reshape(1, 3, 1, 1) + 1e-5)
    np.testing.assert_allclose(bottom[0].data, ref, rtol=1e-9)
    bottom = make_blobs([x])
    GradientChecker().check(layer, bottom, bottom, check_params=False, setup=False)


def test_batchnorm_rejects_learning_its_statistics():
    with pytest.raises(NetdefError, match="lr_mult"):
        run_forward(make_layer("BatchNorm", "param { lr_mult: 1 }"), make_blobs([(2, 3)]))


@pytest.mark.parametrize("nv", [True, False])
@pytest.mark.parametrize("across", [True, False])
def test_mvn(nv, across):
    layer = make_layer("MVN", f"mvn_param {{ normalize_variance: {str(nv).lower()} "
                              f"across_channels: {str(across).lower()} }}")
    bottom = make_blobs([(2, 3, 2, 3)])
    top = run_forward(layer, bottom)
    x = bottom[0].data
    axes = (1, 2, 3) if across else (2, 3)
    c = x - x.mean(axis=axes, keepdims=True)
    if nv:
        c = c / (np.sqrt((c ** 2).mean(axis=axes, keepdims=True)) + 1e-9)
    np.testing.assert_allclose(top[0].data, c, rtol=1e-8)
    GradientChecker().check(layer, bottom, top)


IP_FILL = "weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'gaussian' std: 1 }"


@pytest.mark.parametrize("shape,params", [
    ((2, 3, 2, 2), "num_output: 4"),
    ((2, 3, 4), "num_output: 2 axis: 2"),
    ((3, 5), "num_output: 3 transpose: true"),
    ((2, 6), "num_output: 2 bias_term: false"),
])
def test_inner_product(shape, params):
    layer = make_layer("InnerProduct", f"inner_product_param {{ {params} {IP_FILL} }}")
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    axis = 2 if "axis: 2" in params else 1
    x = bottom[0].data.reshape(int(np.prod(shape[:axis])), -1)
    w = layer.blobs[0].data
    y = x @ (w if "transpose" in params else w.T)
    if len(layer.blobs) > 1:
        y = y + layer.blobs[1].data
    np.testing.assert_allclose(top[0].data.reshape(y.shape), y, rtol=1e-12)
    assert top[0].shape == shape[:axis] + (y.shape[1],)
    GradientChecker().check(layer, bottom, top)


def test_inner_product_input_size_change_is_an_error():
    layer = make_layer("InnerProduct", "inner_product_param { num_output: 2 }")
    bottom = make_blobs([(2, 6)])
    top = run_forward(layer, bottom)
    with pytest.raises(NetdefError, match="expect 6"):
        layer.reshape(make_blobs([(2, 5)]), top)


def test_embed():
    layer = make_layer("Embed", f"embed_param {{ num_output: 3 input_dim: 5 {IP_FILL} }}")
    idx = np.array([[0, 4], [2, 2]], dtype=float)
    bottom = make_blobs([idx])
    top = run_forward(layer, bottom)
    ref = layer.blobs[0].data[idx.astype(int)] + layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, ref)
    GradientChecker().check(layer, bottom, top, check_bottom=[])
    bottom[0].data = np.array([[0, 5], [1, 1]], dtype=float)
    with pytest.raises(NetdefError, match="index 5"):
        layer.forward(bottom, top)


@pytest.mark.parametrize("shape,params,sshape", [
    ((2, 3, 4), "bias_term: true filler { type: 'gaussian' } bias_filler { type: 'gaussian' }", (3,)),
    ((2, 3, 4), "axis: 1 num_axes: 2 filler { type: 'gaussian' }", (3, 4)),
    ((2, 3, 4), "axis: 0 num_axes: -1 filler { type: 'gaussian' }", (2, 3, 4)),
    ((2, 3, 4, 2), "axis: -2 filler { type: 'gaussian' }", (4,)),
])
def test_scale_learned(shape, params, sshape):
    layer = make_layer("Scale", f"scale_param {{ {params} }}")
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    s = layer.blobs[0].data
    assert s.shape == sshape
    x = bottom[0].data
    ax = [i for i in range(x.ndim) if x.shape[i:i + len(sshape)] == sshape][0] \
        if "axis: -2" not in params else 2
    bshape = (1,) * ax + sshape + (1,) * (x.ndim - ax - len(sshape))
    ref = x * s.reshape(bshape)
    if len(layer.blobs) > 1:
        ref = ref + layer.blobs[1].data.reshape(bshape)
    np.testing.assert_allclose(top[0].data, ref)
    GradientChecker().check(layer, bottom, top)


def test_scale_second_bottom_and_in_place():
    layer = make_layer("Scale", "scale_param { axis: 1 }")
    bottom = make_blobs([(2, 3, 4), (3,)])
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, bottom[0].data * bottom[1].data.reshape(1, 3, 1))
    GradientChecker().check(layer, bottom, top)
    layer = make_layer("Scale", "scale_param { bias_term: true filler { type: 'gaussian' } "
                                "bias_filler { type: 'gaussian' } }")
    bottom = make_blobs([(2, 3, 2)])
    GradientChecker().check(layer, bottom, [bottom[0]])   # in place
    with pytest.raises(NetdefError, match="must match"):
        run_forward(make_layer("Scale", ""), make_blobs([(2, 3, 4), (4,)]))


def test_bias_learned_and_bottom():
    layer = make_layer("Bias", "bias_param { filler { type: 'gaussian' } }")
    bottom = make_blobs([(2, 3, 2)])
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, bottom[0].data + layer.blobs[0].data.reshape(1, 3, 1))
    GradientChecker().check(layer, bottom, top)
    layer = make_layer("Bias", "bias_param { axis: 0 }")
    bottom = make_blobs([(2, 3), (2, 3)])
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, bottom[0].data + bottom[1].data)
    GradientChecker().check(layer, bottom, top)
