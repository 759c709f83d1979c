"""Loss layers and Accuracy: forward values against the float64 references of layer_refs
(written from Caffe's definitions, never by calling the layer), analytic gradients scaled by
the top diff (the loss weight), Caffe's gradient checker on the prediction bottoms (never on
labels), float32 runs, and the label / shape / parameter errors."""
import math

import numpy as np
import pytest

from layer_refs import (FLT_MIN, LOG_THRESHOLD, accuracy_ref, contrastive_ref, hinge_ref,
                        sigmoid_ce_ref, softmax_loss_ref, softmax_ref)
from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward


def gradcheck(layer, bottom, top, **kw):
    return GradientChecker().check(layer, bottom, top, **kw)


def loss_of(top):
    assert top[0].shape == ()
    return float(top[0].data)


def backward_with_weight(layer, bottom, top, weight, propagate):
    """Seed the loss top's diff with ``weight`` (what the net does with loss_weight) and run
    backward; returns copies of the bottom diffs."""
    for t in top:
        t.diff[...] = 0.0
    top[0].diff[...] = weight
    layer.backward(top, propagate, bottom)
    return [b.diff.copy() for b in bottom]


def labels_for(shape, axis, c, rng):
    return rng.integers(0, c, size=shape[:axis] + shape[axis + 1:]).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# SoftmaxWithLoss
SWL_CASES = [
    ("", None, "VALID"),                                                  # default VALID
    ("loss_param { normalization: FULL }", None, "FULL"),
    ("loss_param { normalization: VALID }", None, "VALID"),
    ("loss_param { normalization: BATCH_SIZE }", None, "BATCH_SIZE"),
    ("loss_param { normalization: NONE }", None, "NONE"),
    ("loss_param { normalize: true }", None, "VALID"),                   # legacy
    ("loss_param { normalize: false }", None, "BATCH_SIZE"),             # legacy
    ("loss_param { ignore_label: 2 }", 2, "VALID"),
    ("loss_param { ignore_label: 1 }", 1, "VALID"),
    ("loss_param { ignore_label: 2 normalization: FULL }", 2, "FULL"),
    ("loss_param { ignore_label: 1 normalization: FULL }", 1, "FULL"),
    ("loss_param { ignore_label: 0 normalization: FULL }", 0, "FULL"),
    ("loss_param { ignore_label: 0 normalization: BATCH_SIZE }", 0, "BATCH_SIZE"),
    ("loss_param { ignore_label: 1 normalization: NONE }", 1, "NONE"),
    ("loss_param { normalization: NONE ignore_label: 1 }", 1, "NONE"),
    ("loss_param { ignore_label: 1 normalize: false }", 1, "BATCH_SIZE"),
    ("loss_param { ignore_label: 3 normalize: true }", 3, "VALID"),
    # normalization wins over the legacy field when both are given
    ("loss_param { normalize: false normalization: FULL }", None, "FULL"),
]


@pytest.mark.parametrize("params,ignore,mode", SWL_CASES)
def test_softmax_with_loss_normalization(params, ignore, mode):
    rng = np.random.default_rng(sum(map(ord, params)))
    x = rng.standard_normal((2, 4, 2, 2))
    lab = rng.integers(0, 4, size=(2, 1, 2, 2)).astype(float)
    lab[0, 0, 0, 0], lab[1, 0, 1, 1] = 2, 1          # every ignore label occurs at least once
    lab[0, 0, 1, 0], lab[1, 0, 0, 0] = 0, 3
    layer = make_layer("SoftmaxWithLoss", params)
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom, ntop=2)
    loss, grad, prob = softmax_loss_ref(x, lab, 1, ignore, mode)
    assert loss_of(top) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(top[1].data, prob, rtol=1e-12)
    d = backward_with_weight(layer, bottom, top, 2.5, [True, False])
    np.testing.assert_allclose(d[0], 2.5 * grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0], top_ids=[0])


@pytest.mark.parametrize("shape,axis,lab_shape", [
    ((2, 3, 4, 2), 2, (2, 3, 2)),        # classes on H of an (N, C, H, W) blob
    ((2, 3, 4), 2, (2, 3)),
    ((2, 3, 5), 2, (2, 3)),
    ((2, 5), 1, (2,)),
    ((5, 3), 1, (5,)),
    ((3, 2, 2), -2, (3, 2)),
    ((2, 4, 3), -1, (2, 4)),
])
def test_softmax_with_loss_axis_and_prob_top(shape, axis, lab_shape):
    rng = np.random.default_rng(len(shape) + axis)
    x = rng.standard_normal(shape)
    a = axis % len(shape)
    lab = rng.integers(0, shape[a], size=lab_shape).astype(float)
    layer = make_layer("SoftmaxWithLoss", f"softmax_param {{ axis: {axis} }}")
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom, ntop=2)
    loss, grad, prob = softmax_loss_ref(x, lab, a)
    assert loss_of(top) == pytest.approx(loss, rel=1e-12)
    assert top[1].shape == shape
    np.testing.assert_allclose(top[1].data, prob, rtol=1e-12)
    np.testing.assert_allclose(prob, softmax_ref(x, a), rtol=1e-12)
    d = backward_with_weight(layer, bottom, top, -0.5, [True, False])
    np.testing.assert_allclose(d[0], -0.5 * grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0], top_ids=[0])


def test_softmax_with_loss_edge_cases():
    rng = np.random.default_rng(0)
    # every label ignored: normaliser clamps to 1, loss 0, zero gradient
    x = rng.standard_normal((2, 3))
    layer = make_layer("SoftmaxWithLoss", "loss_param { ignore_label: 255 }")
    bottom = make_blobs([x, np.array([255.0, 255.0])])
    top = run_forward(layer, bottom)
    assert loss_of(top) == 0.0
    assert not backward_with_weight(layer, bottom, top, 1.0, [True, False])[0].any()
    # loss weight 0: no gradient at all
    layer = make_layer("SoftmaxWithLoss")
    bottom = make_blobs([x, np.array([0.0, 2.0])])
    top = run_forward(layer, bottom)
    assert backward_with_weight(layer, bottom, top, 1.0, [True, False])[0].any()
    assert not backward_with_weight(layer, bottom, top, 0.0, [True, False])[0].any()
    # probabilities that underflow are clamped at FLT_MIN (also in float64)
    for x in (np.array([[1000.0, -1000.0]]), np.array([[0.0, -800.0]])):
        top = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([1.0])]))
        assert loss_of(top) == pytest.approx(-math.log(FLT_MIN), rel=1e-12)
    # labels arrive as floats and are truncated (Caffe's static_cast<int>)
    x = rng.standard_normal((3, 4))
    top = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([1.7, 0.2, 3.9])]))
    assert loss_of(top) == pytest.approx(softmax_loss_ref(x, np.array([1, 0, 3]))[0])


@pytest.mark.parametrize("shape", [(3, 4), (4, 5, 3)])
def test_softmax_with_loss_float32(shape):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    lab = labels_for(shape, 1, shape[1], rng)
    layer = make_layer("SoftmaxWithLoss", dtype=np.float32)
    bottom = make_blobs([x, lab], dtype=np.float32)
    top = run_forward(layer, bottom, ntop=2, dtype=np.float32)
    loss, grad, prob = softmax_loss_ref(x, lab)
    assert top[0].data.dtype == np.float32 and top[1].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(top[1].data, prob, rtol=1e-5, atol=1e-7)
    d = backward_with_weight(layer, bottom, top, 1.0, [True, False])
    assert bottom[0].diff.dtype == np.float32
    np.testing.assert_allclose(d[0], grad, rtol=1e-4, atol=1e-6)


def test_softmax_with_loss_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ShapeError, match="label 7"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([0.0, 7.0])]))
    with pytest.raises(ShapeError, match="label -1"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([-1.0, 0.0])]))
    with pytest.raises(ShapeError, match="label nan"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([np.nan, 0])]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([(2, 3), (3,)]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([(2, 3, 4), (2,)]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("SoftmaxWithLoss", "softmax_param { axis: 2 }"),
                    make_blobs([(2, 3, 4), (2, 4)]))
    # Caffe's first-dimension check: labels (positions,) need shape[0] == C on axis 0
    with pytest.raises(ShapeError, match="first"):
        run_forward(make_layer("SoftmaxWithLoss", "softmax_param { axis: 0 }"),
                    make_blobs([(3, 2, 2), (4,)]))
    for axis in (2, 3):
        with pytest.raises(ConfigError) as ei:
            run_forward(make_layer("SoftmaxWithLoss", f"softmax_param {{ axis: {axis} }}"),
                        make_blobs([(2, 3), (2,)]))
        assert ei.value.field == "softmax_param.axis"
    with pytest.raises(ConfigError):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([(2, 3)]))   # one bottom
    layer = make_layer("SoftmaxWithLoss")
    bottom = make_blobs([x, np.array([0.0, 1.0])])
    top = run_forward(layer, bottom)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    with pytest.raises(ConfigError, match="propagate_down"):
        layer.backward(top, [True, True], bottom)


# ---------------------------------------------------------------------------------------------
# EuclideanLoss
@pytest.mark.parametrize("s0,s1", [((4, 3), (4, 3)), ((2, 3, 2), (2, 6)),
                                   ((2, 3, 2, 1), (2, 6)), ((3,), (3,))])
def test_euclidean_loss(s0, s1):
    layer = make_layer("EuclideanLoss")
    bottom = make_blobs([s0, s1], seed=len(s0))
    top = run_forward(layer, bottom)
    a = bottom[0].data.ravel()
    b = bottom[1].data.ravel()
    n = s0[0]
    assert loss_of(top) == pytest.approx(sum((p - q) ** 2 for p, q in zip(a, b)) / (2 * n),
                                         rel=1e-13)
    d = backward_with_weight(layer, bottom, top, 3.0, [True, True])
    np.testing.assert_allclose(d[0], 3.0 * (bottom[0].data - bottom[1].data.reshape(s0)) / n,
                               rtol=1e-13)
    np.testing.assert_allclose(d[1].reshape(s0), -d[0], rtol=1e-13)
    # both inputs are differentiable (Caffe's test checks both)
    gradcheck(layer, bottom, top)
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1)


def test_euclidean_loss_float32_and_errors():
    layer = make_layer("EuclideanLoss", dtype=np.float32)
    bottom = make_blobs([(2, 3), (2, 3)], dtype=np.float32)
    top = run_forward(layer, bottom)
    ref = ((bottom[0].data.astype(np.float64) - bottom[1].data) ** 2).sum() / 4
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ShapeError, match="same number") as e:
        run_forward(make_layer("EuclideanLoss"), make_blobs([(2, 3), (2, 4)]))
    assert "[2, 3]" in str(e.value) and "[2, 4]" in str(e.value)
    with pytest.raises(ShapeError, match="first"):
        run_forward(make_layer("EuclideanLoss"), make_blobs([(2, 3), (3, 2)]))


# ---------------------------------------------------------------------------------------------
# SigmoidCrossEntropyLoss
@pytest.mark.parametrize("params,ignore,mode", [
    ("", None, "BATCH_SIZE"),                                    # Caffe's historical default
    ("loss_param { normalization: FULL }", None, "FULL"),
    ("loss_param { normalization: VALID }", None, "VALID"),
    ("loss_param { normalization: NONE }", None, "NONE"),
    ("loss_param { normalize: true }", None, "VALID"),
    ("loss_param { normalize: false }", None, "BATCH_SIZE"),
    ("loss_param { ignore_label: -1 }", -1, "BATCH_SIZE"),
    ("loss_param { ignore_label: -1 normalization: VALID }", -1, "VALID"),
    ("loss_param { ignore_label: -1 normalization: FULL }", -1, "FULL"),
    ("loss_param { normalize: true ignore_label: -1 }", -1, "VALID"),
])
@pytest.mark.parametrize("t_shape", [(3, 2, 2), (3, 4)])
def test_sigmoid_cross_entropy(params, ignore, mode, t_shape):
    rng = np.random.default_rng(sum(map(ord, params)))
    x = rng.standard_normal((3, 2, 2)) * 3
    t = rng.uniform(0, 1, size=(3, 2, 2))
    t[0, 0, 1] = 1.0
    t[2, 1, 0] = 0.0
    t[0, 1, :] = -1.0                      # ignored where ignore_label is -1
    t[1, 0, 0] = -1.0
    if ignore is None:
        t = np.abs(t)
    t = t.reshape(t_shape)                 # the target only needs the same count
    layer = make_layer("SigmoidCrossEntropyLoss", params)
    bottom = make_blobs([x, t])
    top = run_forward(layer, bottom)
    loss, grad = sigmoid_ce_ref(x, t, ignore, mode)
    assert loss_of(top) == pytest.approx(loss, rel=1e-12)
    d = backward_with_weight(layer, bottom, top, 0.7, [True, False])
    np.testing.assert_allclose(d[0].ravel(), 0.7 * grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0])


def test_sigmoid_cross_entropy_stable_for_large_logits_and_int_ignore():
    x = np.array([[60.0, -60.0, 800.0, -800.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0]])
    top = run_forward(make_layer("SigmoidCrossEntropyLoss"), make_blobs([x, t]))
    assert loss_of(top) == pytest.approx(120.0, rel=1e-12)    # no overflow, no log(0)
    x = np.array([[100.0, -100.0, 800.0, -800.0]])
    t = np.array([[1.0, 0.0, 0.0, 1.0]])
    top = run_forward(make_layer("SigmoidCrossEntropyLoss"), make_blobs([x, t]))
    assert loss_of(top) == pytest.approx(1600.0, rel=1e-12)
    # Caffe compares static_cast<int>(target) with ignore_label: -1.5 truncates to -1 (ignored),
    # -0.5 to 0 (not ignored)
    x = np.array([[0.3, -0.2, 0.5]])
    for t, params in ((np.array([[-1.5, 1.0, 0.0]]), "normalization: VALID"),
                      (np.array([[-1.5, -0.5, 1.0]]), "")):
        layer = make_layer("SigmoidCrossEntropyLoss",
                           f"loss_param {{ ignore_label: -1 {params} }}")
        top = run_forward(layer, make_blobs([x, t]))
        mode = "VALID" if params else "BATCH_SIZE"
        assert loss_of(top) == pytest.approx(sigmoid_ce_ref(x, t, -1, mode)[0], rel=1e-12)
    # per element: max(x,0) - x t + log(1 + exp(-|x|))
    ref = (0 - (-0.2) * (-0.5) + np.log1p(np.exp(-0.2))) + (0.5 - 0.5 + np.log1p(np.exp(-0.5)))
    assert loss_of(top) == pytest.approx(ref, rel=1e-12)


def test_sigmoid_cross_entropy_float32_and_errors():
    rng = np.random.default_rng(8)
    x, t = rng.standard_normal((2, 3)), rng.uniform(0, 1, (2, 3))
    layer = make_layer("SigmoidCrossEntropyLoss", dtype=np.float32)
    bottom = make_blobs([x, t], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(sigmoid_ce_ref(x, t)[0], rel=1e-5)
    d = backward_with_weight(layer, bottom, top, 1.0, [True, False])
    assert bottom[0].diff.dtype == np.float32
    np.testing.assert_allclose(d[0].ravel(), sigmoid_ce_ref(x, t)[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ShapeError, match="same count"):
        run_forward(make_layer("SigmoidCrossEntropyLoss"), make_blobs([(2, 3), (2, 2)]))
    with pytest.raises(ConfigError, match="propagate_down"):
        layer.backward(top, [True, True], bottom)
    layer = make_layer("SigmoidCrossEntropyLoss")
    bottom = make_blobs([x, t])
    top = run_forward(layer, bottom)
    with pytest.raises(NetdefError, match="target"):
        layer.backward(top, [True, True], bottom)


# ---------------------------------------------------------------------------------------------
# HingeLoss
def hinge_inputs(n, c, seed):
    """Scores whose margins 1 - y*x stay at least 0.05 away from the hinge kink."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, size=(n, c))
    x = np.where(np.abs(np.abs(x) - 1.0) < 0.05, x + 0.2, x)
    lab = rng.integers(0, c, size=n).astype(float)
    return x, lab


@pytest.mark.parametrize("params,norm", [("", "L1"),                  # L1 is the default
                                         ("hinge_loss_param { norm: L1 }", "L1"),
                                         ("hinge_loss_param { norm: L2 }", "L2")])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 2), (3, 2, 2, 1)])
def test_hinge_loss(params, norm, shape):
    n = shape[0]
    x, lab = hinge_inputs(n, int(np.prod(shape[1:])), seed=len(shape))
    x = x.reshape(shape)
    layer = make_layer("HingeLoss", params)
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom)
    loss, grad = hinge_ref(x, lab, norm)
    assert loss_of(top) == pytest.approx(loss, rel=1e-13)
    d = backward_with_weight(layer, bottom, top, 1.5, [True, False])
    np.testing.assert_allclose(d[0], 1.5 * grad, rtol=1e-13)
    gradcheck(layer, bottom, top, check_bottom=[0])


def test_hinge_loss_float32_and_errors():
    x, lab = hinge_inputs(3, 4, seed=2)
    for params, norm in (("", "L1"), ("hinge_loss_param { norm: L2 }", "L2")):
        top = run_forward(make_layer("HingeLoss", params, dtype=np.float32),
                          make_blobs([x, lab], dtype=np.float32))
        assert top[0].data.dtype == np.float32
        assert loss_of(top) == pytest.approx(hinge_ref(x, lab, norm)[0], rel=1e-5)
    with pytest.raises(ShapeError, match="label 4"):
        run_forward(make_layer("HingeLoss"), make_blobs([x, np.array([0.0, 4.0, 1.0])]))
    with pytest.raises(ShapeError, match="one value per item"):
        run_forward(make_layer("HingeLoss"), make_blobs([x, np.zeros((3, 2))]))
    with pytest.raises(ShapeError, match="first|one value per item"):
        run_forward(make_layer("HingeLoss"), make_blobs([x, np.array([0.0, 1.0])]))


# ---------------------------------------------------------------------------------------------
# ContrastiveLoss
def contrastive_inputs(n, c, margin, seed):
    """Pairs whose distances stay away from the margin (the max(.,0) kink) and from 0."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, c)) * 0.5
    b = rng.standard_normal((n, c)) * 0.5
    for i in range(n):
        while True:
            d = np.sqrt(((a[i] - b[i]) ** 2).sum())
            if abs(d - margin) > 0.15 and abs(d * d - margin) > 0.15 and d > 0.3:
                break
            b[i] = rng.standard_normal(c) * 0.5
    y = (rng.random(n) < 0.5).astype(float)
    y[0], y[1] = 1.0, 0.0
    return a, b, y


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("margin", [None, 1.0, 2.0])       # None: the default margin, 1
def test_contrastive_loss(legacy, margin):
    m = margin or 1.0
    a, b, y = contrastive_inputs(5, 3, m, seed=int(m) + 2 * legacy + 5 * (margin is None))
    if margin is None:      # features (N, C), similarity (N, 1)
        a4, b4, y4 = a, b, y.reshape(5, 1)
        params = f"contrastive_loss_param {{ legacy_version: {str(legacy).lower()} }}"
    else:                   # Caffe's layout: features (N, C, 1, 1), similarity (N, 1, 1, 1)
        a4, b4, y4 = a.reshape(5, 3, 1, 1), b.reshape(5, 3, 1, 1), y.reshape(5, 1, 1, 1)
        params = f"contrastive_loss_param {{ margin: {margin} legacy_version: " \
                 f"{str(legacy).lower()} }}"
    layer = make_layer("ContrastiveLoss", params)
    bottom = make_blobs([a4, b4, y4])
    top = run_forward(layer, bottom)
    loss, ga = contrastive_ref(a, b, y, m, legacy)
    assert loss_of(top) == pytest.approx(loss, rel=1e-13)
    d = backward_with_weight(layer, bottom, top, 2.0, [True, True, False])
    np.testing.assert_allclose(d[0].reshape(5, 3), 2.0 * ga, rtol=2e-3, atol=1e-12)
    np.testing.assert_allclose(d[1], -d[0], rtol=1e-13)
    # Caffe's gradient divides by (d + 1e-4): the checker's default threshold allows for it
    gradcheck(layer, bottom, top, check_bottom=[0, 1])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(2)


def test_contrastive_loss_default_margin_and_similarity_cast():
    a = np.array([[0.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.3, 0.4], [0.18, 0.24]])        # distances 0.5 and 0.3
    # Caffe reads the similarity as static_cast<int>(y): 0.6 counts as dissimilar
    y = np.array([1.0, 0.6])
    top = run_forward(make_layer("ContrastiveLoss"), make_blobs([a, b, y]))
    assert loss_of(top) == pytest.approx((0.25 + (1.0 - 0.3) ** 2) / 4, rel=1e-12)
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((3, 2)), rng.standard_normal((3, 2))
    y = np.array([0.5, 1.7, -0.2])          # -> 0, 1, 0
    top = run_forward(make_layer("ContrastiveLoss"), make_blobs([a, b, y]))
    assert loss_of(top) == pytest.approx(contrastive_ref(a, b, [0, 1, 0], 1.0, False)[0])


def test_contrastive_loss_float32_and_errors():
    a, b, y = contrastive_inputs(3, 2, 1.0, seed=9)
    layer = make_layer("ContrastiveLoss", dtype=np.float32)
    top = run_forward(layer, make_blobs([a, b, y], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(contrastive_ref(a, b, y, 1.0, False)[0], rel=1e-5)
    with pytest.raises(ShapeError, match="same shape"):
        run_forward(make_layer("ContrastiveLoss"), make_blobs([(3, 2), (3, 3), (3,)]))
    with pytest.raises(ShapeError, match="one value per pair"):
        run_forward(make_layer("ContrastiveLoss"), make_blobs([(3, 2), (3, 2), (2,)]))
    with pytest.raises(ConfigError, match="3 bottoms"):
        run_forward(make_layer("ContrastiveLoss"), make_blobs([(3, 2), (3, 2)]))
    assert not make_layer("ContrastiveLoss").allow_force_backward(2)


# ---------------------------------------------------------------------------------------------
# MultinomialLogisticLoss
@pytest.mark.parametrize("shape,lab_shape", [((4, 3), (4, 1, 1, 1)), ((3, 5, 1, 1), (3, 1, 1, 1)),
                                             ((3, 2, 2), (3,))])
def test_multinomial_logistic_loss(shape, lab_shape):
    rng = np.random.default_rng(shape[1] + len(shape))
    n = shape[0]
    p = rng.uniform(0.5, 1.0, size=shape)       # probabilities, kept where log is smooth
    dim = p.size // n
    lab = rng.integers(0, dim, size=lab_shape).astype(float)
    layer = make_layer("MultinomialLogisticLoss")
    bottom = make_blobs([p, lab])
    top = run_forward(layer, bottom)
    pr = p.reshape(n, -1)
    li = lab.ravel().astype(int)
    loss = -sum(math.log(pr[i, li[i]]) for i in range(n)) / n
    assert loss_of(top) == pytest.approx(loss, rel=1e-13)
    d = backward_with_weight(layer, bottom, top, 2.0, [True, False])
    g = np.zeros_like(pr)
    for i in range(n):
        g[i, li[i]] = -2.0 / n / pr[i, li[i]]
    np.testing.assert_allclose(d[0].reshape(n, -1), g, rtol=1e-13)
    gradcheck(layer, bottom, top, check_bottom=[0])


def test_multinomial_logistic_loss_threshold_float32_and_errors():
    p = np.array([[0.0, 1.0], [0.5, 0.5]])
    # log is clamped at kLOG_THRESHOLD = 1e-20, and so is the gradient's divisor
    layer = make_layer("MultinomialLogisticLoss")
    bottom = make_blobs([p, np.array([0, 1.0])])
    top = run_forward(layer, bottom)
    assert loss_of(top) == pytest.approx((-np.log(LOG_THRESHOLD) - np.log(0.5)) / 2, rel=1e-12)
    g = backward_with_weight(layer, bottom, top, 1.0, [True, False])[0]
    np.testing.assert_allclose(g, [[-0.5 / LOG_THRESHOLD, 0], [0, -0.5 / 0.5]])
    layer = make_layer("MultinomialLogisticLoss", dtype=np.float32)
    top = run_forward(layer, make_blobs([p, np.array([0.0, 1.0])], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx((-math.log(LOG_THRESHOLD) - math.log(0.5)) / 2,
                                         rel=1e-5)
    with pytest.raises(ShapeError, match="label 2"):
        run_forward(make_layer("MultinomialLogisticLoss"), make_blobs([p, np.array([2.0, 0.0])]))
    with pytest.raises(ShapeError, match="first|one value per item"):
        run_forward(make_layer("MultinomialLogisticLoss"), make_blobs([p, np.array([0.0])]))


# ---------------------------------------------------------------------------------------------
# InfogainLoss
@pytest.mark.parametrize("shape,params,axis,ignore,mode", [
    ((4, 3), "", 1, None, "VALID"),
    ((4, 3), "infogain_loss_param { axis: 1 }", 1, None, "VALID"),
    ((2, 3, 2, 2), "", 1, None, "VALID"),
    ((2, 3, 2), "loss_param { normalization: BATCH_SIZE }", 1, None, "BATCH_SIZE"),
    ((2, 3, 2), "loss_param { normalization: NONE }", 1, None, "NONE"),
    ((2, 3, 2), "infogain_loss_param { axis: 1 } loss_param { ignore_label: 1 }", 1, 1, "VALID"),
    ((2, 2, 4), "infogain_loss_param { axis: 2 }", 2, None, "VALID"),
    ((2, 2, 3), "infogain_loss_param { axis: 2 } loss_param { normalization: BATCH_SIZE }", 2,
     None, "BATCH_SIZE"),
    ((3, 4), "loss_param { ignore_label: 1 }", 1, 1, "VALID"),
    ((3, 4), "loss_param { ignore_label: 1 normalization: FULL }", 1, 1, "FULL"),
    ((3, 4), "infogain_loss_param { axis: 1 } loss_param { ignore_label: 0 normalization: FULL }",
     1, 0, "FULL"),
])
def test_infogain_loss_third_bottom(shape, params, axis, ignore, mode):
    rng = np.random.default_rng(len(shape) * 10 + axis + len(params))
    x = rng.standard_normal(shape)
    c = shape[axis]
    lab = labels_for(shape, axis, c, rng)
    lab.ravel()[:2] = [1, 0]
    h = rng.uniform(0.0, 1.0, size=(c, c))
    layer = make_layer("InfogainLoss", params)
    bottom = make_blobs([x, lab, h])
    top = run_forward(layer, bottom, ntop=2)
    loss, grad, prob = softmax_loss_ref(x, lab, axis, ignore, mode, h=h, floor=LOG_THRESHOLD)
    assert loss_of(top) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(top[1].data, prob, rtol=1e-12)
    d = backward_with_weight(layer, bottom, top, 1.7, [True, False, False])
    np.testing.assert_allclose(d[0], 1.7 * grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0], top_ids=[0])
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)


def test_infogain_identity_equals_softmax_loss_and_threshold():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4))
    lab = np.array([0.0, 3.0, 2.0])
    a = run_forward(make_layer("InfogainLoss"), make_blobs([x, lab, np.eye(4)]))
    b = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, lab]))
    ref = -sum(math.log(softmax_ref(x[i], 0)[int(lab[i])]) for i in range(3)) / 3
    assert loss_of(a) == pytest.approx(ref, rel=1e-12)
    assert loss_of(a) == pytest.approx(loss_of(b), rel=1e-12)
    # an underflowing probability is clamped at 1e-20 (kLOG_THRESHOLD), not FLT_MIN
    # (p[1] = e^-100 ~ 3.7e-44; e^-2000 underflows to 0)
    for x in (np.array([[0.0, -100.0]]), np.array([[1000.0, -1000.0]])):
        top = run_forward(make_layer("InfogainLoss"),
                          make_blobs([x, np.array([0.0]), np.array([[0.0, 1.0], [0, 0]])]))
        assert loss_of(top) == pytest.approx(-math.log(LOG_THRESHOLD), rel=1e-9)


@pytest.mark.parametrize("legacy", [False, True])
def test_infogain_loss_from_blob_proto_file(tmp_path, monkeypatch, legacy):
    from netdef.proto import pb
    rng = np.random.default_rng(3)
    h = rng.uniform(0, 1, (3, 3)).astype(np.float32).astype(np.float64)   # stored as float
    bp = pb.BlobProto()
    if legacy:                       # Caffe's usual H file: num/channels/height/width 1x1xCxC
        bp.num, bp.channels, bp.height, bp.width = 1, 1, 3, 3
    else:
        bp.shape.dim.extend([3, 3])
    bp.data.extend(float(v) for v in h.ravel())
    (tmp_path / "H.binaryproto").write_bytes(bp.SerializeToString())
    x = rng.standard_normal((4, 3))
    lab = np.array([0.0, 2.0, 1.0, 1.0])
    loss, grad, _ = softmax_loss_ref(x, lab, h=h, floor=LOG_THRESHOLD)
    monkeypatch.chdir(tmp_path)            # a relative source is read from the working directory
    for source in (tmp_path / "H.binaryproto", "H.binaryproto"):
        layer = make_layer("InfogainLoss", f"infogain_loss_param {{ source: '{source}' }}")
        bottom = make_blobs([x, lab])
        top = run_forward(layer, bottom)
        assert loss_of(top) == pytest.approx(loss, rel=1e-12)
        d = backward_with_weight(layer, bottom, top, 1.0, [True, False])
        np.testing.assert_allclose(d[0], grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0])
    # shape-only nets do not read the file
    layer = make_layer("InfogainLoss", "infogain_loss_param { source: 'absent' }",
                       init_params=False)
    tops = [Blob(())]
    layer.setup(make_blobs([(4, 3), (4,)]), tops)
    assert tops[0].shape == ()


def test_infogain_loss_float32_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 3))
    lab = np.array([0.0, 1.0, 2.0])
    h = rng.uniform(0, 1, (3, 3))
    layer = make_layer("InfogainLoss", dtype=np.float32)
    bottom = make_blobs([x, lab, h], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(
        softmax_loss_ref(x, lab, h=h.astype(np.float32), floor=LOG_THRESHOLD)[0], rel=1e-5)
    backward_with_weight(layer, bottom, top, 1.0, [True, False, False])
    assert bottom[0].diff.dtype == np.float32
    with pytest.raises(ConfigError) as ei:
        run_forward(make_layer("InfogainLoss"), make_blobs([x, lab]))
    assert ei.value.field == "infogain_loss_param.source"
    with pytest.raises(ConfigError, match="cannot read"):
        run_forward(make_layer("InfogainLoss",
                               f"infogain_loss_param {{ source: '{tmp_path / 'nope'}' }}"),
                    make_blobs([x, lab]))
    with pytest.raises(ShapeError, match="3x3"):
        run_forward(make_layer("InfogainLoss"), make_blobs([x, lab, np.eye(2)]))
    with pytest.raises(ShapeError, match="label 3"):
        run_forward(make_layer("InfogainLoss"), make_blobs([x, np.array([0.0, 3.0, 1.0]), h]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("InfogainLoss"), make_blobs([x, np.zeros((3, 2)), h]))
    layer = make_layer("InfogainLoss")
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)


# ---------------------------------------------------------------------------------------------
# Accuracy
def tied_scores(shape, seed):
    return np.random.default_rng(seed).integers(0, 4, size=shape).astype(float)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("ignore", [None, 2])
def test_accuracy_top_k_ties_ignore_per_class(k, ignore):
    x = tied_scores((12, 5), seed=k + (ignore or 0))
    lab = np.random.default_rng(k).integers(0, 5, size=12).astype(float)
    lab[:5] = [0, 1, 2, 3, 2]
    params = f"accuracy_param {{ top_k: {k}" + \
        (f" ignore_label: {ignore} }}" if ignore is not None else " }")
    layer = make_layer("Accuracy", params)
    top = run_forward(layer, make_blobs([x, lab]), ntop=2)
    acc, per = accuracy_ref(x, lab, k, ignore=ignore)
    assert loss_of(top) == pytest.approx(acc, rel=1e-13)
    assert top[1].shape == (5,)
    np.testing.assert_allclose(top[1].data, per, rtol=1e-13)
    assert not layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    assert layer.loss_weights == [0.0, 0.0] and not layer.is_loss


def test_accuracy_tie_examples():
    x = np.array([[0.1, 0.5, 0.4],      # label 1: clear winner
                  [0.3, 0.3, 0.4],      # label 0 ties class 1 and loses to class 2
                  [0.9, 0.05, 0.05],    # label 0: winner
                  [0.2, 0.2, 0.6]])     # label 2: winner
    lab = np.array([1.0, 0.0, 0.0, 2.0])
    top = run_forward(make_layer("Accuracy"), make_blobs([x, lab]), ntop=2)
    assert loss_of(top) == pytest.approx(0.75)
    np.testing.assert_allclose(top[1].data, [0.5, 1.0, 1.0])
    # top-2: row 1 has two classes >= its score, so it is still wrong
    top = run_forward(make_layer("Accuracy", "accuracy_param { top_k: 2 }"),
                      make_blobs([x, lab]), ntop=2)
    assert loss_of(top) == pytest.approx(0.75)
    np.testing.assert_allclose(top[1].data, [0.5, 1.0, 1.0])
    top = run_forward(make_layer("Accuracy", "accuracy_param { top_k: 3 }"), make_blobs([x, lab]))
    assert loss_of(top) == 1.0
    top = run_forward(make_layer("Accuracy", "accuracy_param { ignore_label: 0 }"),
                      make_blobs([x, lab]))
    assert loss_of(top) == pytest.approx(1.0)
    # a plain two-way tie for first place is wrong at top-1 and right at top-2
    y = np.array([[0.5, 0.5, 0.0]])
    assert loss_of(run_forward(make_layer("Accuracy"), make_blobs([y, np.array([0.0])]))) == 0
    assert loss_of(run_forward(make_layer("Accuracy", "accuracy_param { top_k: 2 }"),
                               make_blobs([y, np.array([1.0])]))) == 1


@pytest.mark.parametrize("shape,axis,k", [((2, 4, 3), 1, 1), ((2, 3, 4), 1, 2), ((2, 3, 4), 2, 2),
                                          ((2, 4, 3), 2, 2), ((2, 4, 2, 2), 1, 3),
                                          ((3, 2, 4), -1, 1), ((3, 2, 2, 4), -1, 2)])
def test_accuracy_axis(shape, axis, k):
    a = axis % len(shape)
    x = tied_scores(shape, seed=a + k)
    lab = np.random.default_rng(a).integers(0, shape[a],
                                            size=shape[:a] + shape[a + 1:]).astype(float)
    layer = make_layer("Accuracy", f"accuracy_param {{ axis: {axis} top_k: {k} }}")
    top = run_forward(layer, make_blobs([x, lab]), ntop=2)
    acc, per = accuracy_ref(x, lab, k, axis=a)
    assert loss_of(top) == pytest.approx(acc, rel=1e-13)
    np.testing.assert_allclose(top[1].data, per, rtol=1e-13)


def test_accuracy_all_ignored_float32_and_errors():
    x = np.array([[0.2, 0.8], [0.6, 0.4]])
    top = run_forward(make_layer("Accuracy", "accuracy_param { ignore_label: 1 }"),
                      make_blobs([x, np.array([1.0, 1.0])]), ntop=2)
    assert loss_of(top) == 0.0
    np.testing.assert_array_equal(top[1].data, [0.0, 0.0])
    layer = make_layer("Accuracy", dtype=np.float32)
    top = run_forward(layer, make_blobs([x, np.array([1.0, 1.0])], dtype=np.float32))
    assert top[0].data.dtype == np.float32 and loss_of(top) == pytest.approx(0.5)
    for k in (3, 0):
        with pytest.raises(ConfigError) as ei:
            run_forward(make_layer("Accuracy", f"accuracy_param {{ top_k: {k} }}"),
                        make_blobs([x, np.array([0.0, 1.0])]))
        assert ei.value.field == "accuracy_param.top_k"
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("Accuracy"), make_blobs([x, np.array([0.0, 1.0, 1.0])]))
    with pytest.raises(ShapeError, match="label 2"):
        run_forward(make_layer("Accuracy"), make_blobs([x, np.array([0.0, 2.0])]))


# ---------------------------------------------------------------------------------------------
# all loss layers
LOSSES = [
    ("SoftmaxWithLoss", "", [(2, 3), np.array([0, 2.0])]),
    ("EuclideanLoss", "", [(2, 3), (2, 3)]),
    ("SigmoidCrossEntropyLoss", "", [(2, 3), np.full((2, 3), 0.5)]),
    ("HingeLoss", "", [(2, 3), np.array([0, 2.0])]),
    ("ContrastiveLoss", "", [(2, 3), (2, 3), np.array([1, 0.0])]),
    ("MultinomialLogisticLoss", "", [np.full((2, 3), 1 / 3), np.array([0, 2.0])]),
    ("InfogainLoss", "", [(2, 3), np.array([0, 2.0]), np.eye(3)]),
]


@pytest.mark.parametrize("type_,params,arrays", LOSSES, ids=[t[0] for t in LOSSES])
def test_loss_layers_contract(type_, params, arrays):
    layer = make_layer(type_, params)
    bottom = make_blobs(arrays)
    top = run_forward(layer, bottom)
    assert layer.is_loss and layer.loss_weights == [1.0]
    assert top[0].shape == () and np.isfinite(top[0].data)
    assert layer.flops(bottom, top) > 0
    layer = make_layer(type_, params + " loss_weight: 0.5")
    run_forward(layer, bottom)
    assert layer.loss_weights == [0.5]
    # shape-only setup does not touch data
    shape_only = make_layer(type_, params, init_params=False)
    blobs = [Blob(b.shape) for b in bottom]
    tops = [Blob(())]
    shape_only.setup(blobs, tops)
    assert tops[0].shape == () and not any(b.allocated for b in blobs + tops)
    with pytest.raises(NetdefError):
        run_forward(make_layer(type_, params), [Blob((2, 3)), Blob(())])


def test_loss_layers_default_loss_weight():
    """Loss layers put loss_weight 1 on top[0] (and 0 on a second top); Accuracy is no loss."""
    layer = make_layer("SoftmaxWithLoss")
    top = [Blob(()), Blob(())]
    layer.setup(make_blobs([(2, 3), np.array([0.0, 1.0])]), top)
    assert layer.loss_weights == [1.0, 0.0]
    layer = make_layer("Accuracy")
    layer.setup(make_blobs([(2, 3), np.array([0.0, 1.0])]), [Blob(())])
    assert layer.loss_weights == [0.0]
    layer = make_layer("EuclideanLoss", "loss_weight: 0.25")
    layer.setup(make_blobs([(2, 3), (2, 3)]), [Blob(())])
    assert layer.loss_weights == [0.25]
