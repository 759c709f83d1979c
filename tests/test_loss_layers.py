"""Loss layers and Accuracy: forward values against float64 references written here from
Caffe's definitions (never by calling the layer), analytic gradients scaled by the top diff
(the loss weight), Caffe's gradient checker on the prediction bottoms (never on labels), a
float32 smoke run, and the label / shape / parameter errors."""
import math

import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_THRESHOLD = 1e-20           # Caffe's kLOG_THRESHOLD (loss_layer.hpp)


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


def softmax_rows(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def class_view(x, axis):
    """(outer, inner, C) view of x with classes on ``axis``, plus (outer, inner)."""
    outer = int(np.prod(x.shape[:axis]))
    c = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:]))
    return np.moveaxis(x.reshape(outer, c, inner), 1, 2), outer, inner


# ---------------------------------------------------------------------------------------------
# SoftmaxWithLoss
def softmax_loss_ref(x, lab, axis=1, ignore=None, mode="VALID"):
    """Loss, gradient (unit top diff) and probabilities, by explicit loops."""
    xv, outer, inner = class_view(np.asarray(x, np.float64), axis)
    labv = np.asarray(lab).reshape(outer, inner)
    prob = np.zeros_like(xv)
    grad = np.zeros_like(xv)
    loss, valid = 0.0, 0
    for i in range(outer):
        for j in range(inner):
            p = softmax_rows(xv[i, j])
            prob[i, j] = p
            l = int(labv[i, j])
            if ignore is not None and l == ignore:
                continue
            loss -= math.log(max(p[l], FLT_MIN))
            grad[i, j] = p
            grad[i, j, l] -= 1.0
            valid += 1
    norm = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    norm = max(1.0, norm)

    def back(a):
        return np.moveaxis(a, 2, 1).reshape(x.shape)
    return loss / norm, back(grad) / norm, back(prob)


SWL_CASES = [
    ("", None, "VALID"),                                                  # default VALID
    ("loss_param { normalization: FULL }", None, "FULL"),
    ("loss_param { normalization: VALID }", None, "VALID"),
    ("loss_param { normalization: BATCH_SIZE }", None, "BATCH_SIZE"),
    ("loss_param { normalization: NONE }", None, "NONE"),
    ("loss_param { normalize: true }", None, "VALID"),                   # legacy
    ("loss_param { normalize: false }", None, "BATCH_SIZE"),             # legacy
    ("loss_param { ignore_label: 2 }", 2, "VALID"),
    ("loss_param { ignore_label: 2 normalization: FULL }", 2, "FULL"),
    ("loss_param { ignore_label: 0 normalization: BATCH_SIZE }", 0, "BATCH_SIZE"),
    ("loss_param { ignore_label: 1 normalization: NONE }", 1, "NONE"),
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
    top = run_forward(layer, bottom)
    loss, grad, _ = softmax_loss_ref(x, lab, 1, ignore, mode)
    assert loss_of(top) == pytest.approx(loss, rel=1e-12)
    d = backward_with_weight(layer, bottom, top, 2.5, [True, False])
    np.testing.assert_allclose(d[0], 2.5 * grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0])


def test_softmax_with_loss_all_ignored_normalizer_is_at_least_one():
    x = np.random.default_rng(0).standard_normal((2, 3))
    layer = make_layer("SoftmaxWithLoss", "loss_param { ignore_label: 1 }")
    bottom = make_blobs([x, np.array([1.0, 1.0])])
    top = run_forward(layer, bottom)
    assert loss_of(top) == 0.0
    d = backward_with_weight(layer, bottom, top, 1.0, [True, False])
    np.testing.assert_array_equal(d[0], 0.0)


@pytest.mark.parametrize("shape,axis,lab_shape", [
    ((2, 3, 4, 2), 2, (2, 3, 2)),        # classes on H of an (N, C, H, W) blob
    ((2, 3, 4), 2, (2, 3)),
    ((2, 5), 1, (2,)),
    ((3, 2, 2), -2, (3, 2)),
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
    d = backward_with_weight(layer, bottom, top, -0.5, [True, False])
    np.testing.assert_allclose(d[0], -0.5 * grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0], top_ids=[0])


def test_softmax_with_loss_clamps_with_flt_min():
    x = np.array([[0.0, -800.0]])        # p[1] underflows to 0 -> -log(FLT_MIN)
    top = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([1.0])]))
    assert loss_of(top) == pytest.approx(-math.log(FLT_MIN), rel=1e-12)


def test_softmax_with_loss_float32():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4)).astype(np.float32)
    lab = np.array([0.0, 3.0, 1.0])
    layer = make_layer("SoftmaxWithLoss", dtype=np.float32)
    bottom = make_blobs([x, lab], dtype=np.float32)
    top = run_forward(layer, bottom, ntop=2, dtype=np.float32)
    loss, grad, prob = softmax_loss_ref(x, lab)
    assert top[0].data.dtype == np.float32 and top[1].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(loss, rel=1e-5)
    d = backward_with_weight(layer, bottom, top, 1.0, [True, False])
    assert bottom[0].diff.dtype == np.float32
    np.testing.assert_allclose(d[0], grad, rtol=1e-4, atol=1e-6)


def test_softmax_with_loss_errors():
    x = np.zeros((2, 3))
    with pytest.raises(NetdefError, match="label 7"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([0.0, 7.0])]))
    with pytest.raises(NetdefError, match="label -1"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([-1.0, 0.0])]))
    # Caffe reads labels with static_cast<int>: 1.9 is class 1
    xs = np.array([[0.5, -1.0, 2.0], [0.0, 1.0, 0.3]])
    t1 = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([xs, np.array([1.9, 0.0])]))
    t2 = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([xs, np.array([1.0, 0.0])]))
    assert loss_of(t1) == loss_of(t2) == pytest.approx(
        softmax_loss_ref(xs, np.array([1.0, 0.0]))[0], rel=1e-12)
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([(2, 3), (3,)]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("SoftmaxWithLoss", "softmax_param { axis: 2 }"),
                    make_blobs([(2, 3, 4), (2, 4)]))
    with pytest.raises(ConfigError, match="softmax_param.axis|out of range"):
        run_forward(make_layer("SoftmaxWithLoss", "softmax_param { axis: 2 }"),
                    make_blobs([(2, 3), (2,)]))
    layer = make_layer("SoftmaxWithLoss")
    bottom = make_blobs([x, np.array([0.0, 1.0])])
    top = run_forward(layer, bottom)
    with pytest.raises(NetdefError, match="label"):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1)


# ---------------------------------------------------------------------------------------------
# EuclideanLoss
@pytest.mark.parametrize("s0,s1", [((4, 3), (4, 3)), ((2, 3, 2, 1), (2, 6)), ((3,), (3,))])
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


def test_euclidean_loss_float32_and_errors():
    layer = make_layer("EuclideanLoss", dtype=np.float32)
    bottom = make_blobs([(2, 3), (2, 3)], dtype=np.float32)
    top = run_forward(layer, bottom)
    ref = ((bottom[0].data.astype(np.float64) - bottom[1].data) ** 2).sum() / 4
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(ref, rel=1e-5)
    with pytest.raises(ShapeError, match="same") as e:
        run_forward(make_layer("EuclideanLoss"), make_blobs([(2, 3), (2, 4)]))
    assert "[2, 3]" in str(e.value) and "[2, 4]" in str(e.value)
    with pytest.raises(ShapeError, match="first"):
        run_forward(make_layer("EuclideanLoss"), make_blobs([(2, 3), (3, 2)]))


# ---------------------------------------------------------------------------------------------
# SigmoidCrossEntropyLoss
def sigmoid_ce_ref(x, t, ignore=None, mode="BATCH_SIZE"):
    x = np.asarray(x, np.float64).ravel()
    tt = np.asarray(t, np.float64).ravel()
    loss, valid = 0.0, 0
    grad = np.zeros_like(x)
    for i, (xi, ti) in enumerate(zip(x, tt)):
        if ignore is not None and int(ti) == ignore:       # Caffe casts the target to int
            continue
        p = 1.0 / (1.0 + math.exp(-xi))
        loss -= ti * math.log(p) + (1 - ti) * math.log(1 - p)
        grad[i] = p - ti
        valid += 1
    n = np.asarray(t).shape[0]
    norm = max(1.0, {"FULL": x.size, "VALID": valid, "BATCH_SIZE": n, "NONE": 1}[mode])
    return loss / norm, grad / norm


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
])
def test_sigmoid_cross_entropy(params, ignore, mode):
    rng = np.random.default_rng(sum(map(ord, params)))
    x = rng.standard_normal((3, 2, 2)) * 3
    t = rng.uniform(0, 1, size=(3, 2, 2))
    t[0, 0, 1] = 1.0
    t[2, 1, 0] = 0.0
    t[0, 1, :] = -1.0                      # ignored where ignore_label is -1
    t[1, 0, 0] = -1.0
    if ignore is None:
        t = np.abs(t)
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
    # Caffe compares static_cast<int>(target) with ignore_label: -1.5 truncates to -1
    x = np.array([[0.3, -0.2, 0.5]])
    t = np.array([[-1.5, 1.0, 0.0]])
    layer = make_layer("SigmoidCrossEntropyLoss",
                       "loss_param { ignore_label: -1 normalization: VALID }")
    top = run_forward(layer, make_blobs([x, t]))
    assert loss_of(top) == pytest.approx(sigmoid_ce_ref(x, t, -1, "VALID")[0], rel=1e-12)


def test_sigmoid_cross_entropy_float32_and_errors():
    rng = np.random.default_rng(8)
    x, t = rng.standard_normal((2, 3)), rng.uniform(0, 1, (2, 3))
    layer = make_layer("SigmoidCrossEntropyLoss", dtype=np.float32)
    bottom = make_blobs([x, t], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(sigmoid_ce_ref(x, t)[0], rel=1e-5)
    with pytest.raises(ShapeError, match="same count"):
        run_forward(make_layer("SigmoidCrossEntropyLoss"), make_blobs([(2, 3), (2, 2)]))
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


def hinge_ref(x, lab, norm):
    n = x.shape[0]
    xr = x.reshape(n, -1)
    loss = 0.0
    grad = np.zeros_like(xr)
    for i in range(n):
        for k in range(xr.shape[1]):
            y = 1.0 if k == int(lab[i]) else -1.0
            m = max(0.0, 1.0 - y * xr[i, k])
            loss += m if norm == "L1" else m * m
            dm = -y if m > 0 else 0.0
            grad[i, k] = dm if norm == "L1" else 2 * m * dm
    return loss / n, grad.reshape(x.shape) / n


@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 2, 1)])
def test_hinge_loss(norm, shape):
    n = shape[0]
    x, lab = hinge_inputs(n, int(np.prod(shape[1:])), seed=len(shape))
    x = x.reshape(shape)
    params = "" if norm == "L1" else "hinge_loss_param { norm: L2 }"    # L1 is the default
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
    layer = make_layer("HingeLoss", "hinge_loss_param { norm: L2 }", dtype=np.float32)
    top = run_forward(layer, make_blobs([x, lab], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(hinge_ref(x, lab, "L2")[0], rel=1e-5)
    with pytest.raises(NetdefError, match="label 4"):
        run_forward(make_layer("HingeLoss"), make_blobs([x, np.array([0.0, 4.0, 1.0])]))
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


def contrastive_ref(a, b, y, margin, legacy):
    n = a.shape[0]
    loss = 0.0
    ga = np.zeros((n, a[0].size))
    for i in range(n):
        diff = (a[i] - b[i]).ravel()
        d2 = float(diff @ diff)
        d = math.sqrt(d2)
        if int(y.ravel()[i]):
            loss += d2
            ga[i] = diff / n
        elif legacy:
            loss += max(margin - d2, 0.0)
            ga[i] = -diff / n if margin - d2 > 0 else 0.0
        else:
            loss += max(margin - d, 0.0) ** 2
            # d/da (m - d)^2 / 2N = -(m - d) / d * diff / N (Caffe adds 1e-4 to d)
            ga[i] = -(margin - d) / d * diff / n if margin - d > 0 else 0.0
    return loss / (2 * n), ga


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("margin", [1.0, 2.0])
def test_contrastive_loss(legacy, margin):
    a, b, y = contrastive_inputs(5, 3, margin, seed=int(margin) + 2 * legacy)
    # Caffe's layout: features (N, C, 1, 1), similarity (N, 1, 1, 1)
    a4, b4, y4 = a.reshape(5, 3, 1, 1), b.reshape(5, 3, 1, 1), y.reshape(5, 1, 1, 1)
    params = f"contrastive_loss_param {{ margin: {margin} legacy_version: " \
             f"{str(legacy).lower()} }}"
    layer = make_layer("ContrastiveLoss", params)
    bottom = make_blobs([a4, b4, y4])
    top = run_forward(layer, bottom)
    loss, ga = contrastive_ref(a, b, y, margin, legacy)
    assert loss_of(top) == pytest.approx(loss, rel=1e-13)
    d = backward_with_weight(layer, bottom, top, 2.0, [True, True, False])
    np.testing.assert_allclose(d[0].reshape(5, 3), 2.0 * ga, rtol=2e-3, atol=1e-12)
    np.testing.assert_allclose(d[1], -d[0], rtol=1e-13)
    gradcheck(layer, bottom, top, check_bottom=[0, 1])


def test_contrastive_loss_default_margin_and_similarity_cast():
    a = np.array([[0.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.3, 0.4], [0.18, 0.24]])        # distances 0.5 and 0.3
    # Caffe reads the similarity as static_cast<int>(y): 0.6 counts as dissimilar
    y = np.array([1.0, 0.6])
    top = run_forward(make_layer("ContrastiveLoss"), make_blobs([a, b, y]))
    assert loss_of(top) == pytest.approx((0.25 + (1.0 - 0.3) ** 2) / 4, rel=1e-12)


def test_contrastive_loss_float32_and_errors():
    a, b, y = contrastive_inputs(3, 2, 1.0, seed=9)
    layer = make_layer("ContrastiveLoss", dtype=np.float32)
    top = run_forward(layer, make_blobs([a, b, y], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(contrastive_ref(a, b, y, 1.0, False)[0], rel=1e-5)
    with pytest.raises(ShapeError, match="same"):
        run_forward(make_layer("ContrastiveLoss"), make_blobs([(3, 2), (3, 3), (3,)]))
    with pytest.raises(ShapeError, match="one value per pair"):
        run_forward(make_layer("ContrastiveLoss"), make_blobs([(3, 2), (3, 2), (2,)]))
    assert not make_layer("ContrastiveLoss").allow_force_backward(2)


# ---------------------------------------------------------------------------------------------
# MultinomialLogisticLoss
@pytest.mark.parametrize("shape", [(4, 3), (3, 5, 1, 1)])
def test_multinomial_logistic_loss(shape):
    rng = np.random.default_rng(shape[1])
    n = shape[0]
    p = rng.uniform(0.5, 1.0, size=shape)       # probabilities, kept where log is smooth
    lab = rng.integers(0, shape[1], size=(n, 1, 1, 1)).astype(float)
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
    layer = make_layer("MultinomialLogisticLoss", dtype=np.float32)
    top = run_forward(layer, make_blobs([p, np.array([0.0, 1.0])], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    # log is clamped at kLOG_THRESHOLD = 1e-20
    assert loss_of(top) == pytest.approx((-math.log(LOG_THRESHOLD) - math.log(0.5)) / 2,
                                         rel=1e-5)
    with pytest.raises(NetdefError, match="label 2"):
        run_forward(make_layer("MultinomialLogisticLoss"), make_blobs([p, np.array([2.0, 0.0])]))
    with pytest.raises(ShapeError, match="first|one value per item"):
        run_forward(make_layer("MultinomialLogisticLoss"), make_blobs([p, np.array([0.0])]))


# ---------------------------------------------------------------------------------------------
# InfogainLoss
def infogain_ref(x, lab, h, axis=1, ignore=None, mode="VALID"):
    """Caffe's current InfogainLoss: internal softmax, then
    -sum_k H[label, k] log max(p_k, 1e-20), normalised like SoftmaxWithLoss."""
    xv, outer, inner = class_view(np.asarray(x, np.float64), axis)
    labv = np.asarray(lab).reshape(outer, inner)
    c = xv.shape[2]
    loss, valid = 0.0, 0
    grad = np.zeros_like(xv)
    for i in range(outer):
        for j in range(inner):
            l = int(labv[i, j])
            if ignore is not None and l == ignore:
                continue
            p = softmax_rows(xv[i, j])
            for k in range(c):
                loss -= h[l, k] * math.log(max(p[k], LOG_THRESHOLD))
                grad[i, j, k] = p[k] * h[l].sum() - h[l, k]
            valid += 1
    norm = max(1.0, {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer,
                     "NONE": 1}[mode])
    return loss / norm, np.moveaxis(grad, 2, 1).reshape(x.shape) / norm


@pytest.mark.parametrize("shape,params,axis,ignore,mode", [
    ((4, 3), "", 1, None, "VALID"),
    ((2, 3, 2, 2), "", 1, None, "VALID"),
    ((2, 3, 2), "loss_param { normalization: BATCH_SIZE }", 1, None, "BATCH_SIZE"),
    ((2, 3, 2), "loss_param { normalization: NONE }", 1, None, "NONE"),
    ((2, 2, 4), "infogain_loss_param { axis: 2 }", 2, None, "VALID"),
    ((3, 4), "loss_param { ignore_label: 1 }", 1, 1, "VALID"),
    ((3, 4), "loss_param { ignore_label: 1 normalization: FULL }", 1, 1, "FULL"),
])
def test_infogain_loss_third_bottom(shape, params, axis, ignore, mode):
    rng = np.random.default_rng(len(shape) * 10 + axis)
    x = rng.standard_normal(shape)
    c = shape[axis]
    lab_shape = shape[:axis] + shape[axis + 1:]
    lab = rng.integers(0, c, size=lab_shape).astype(float)
    lab.ravel()[:2] = [1, 0]
    h = rng.uniform(0.0, 1.0, size=(c, c))
    layer = make_layer("InfogainLoss", params)
    bottom = make_blobs([x, lab, h])
    top = run_forward(layer, bottom)
    loss, grad = infogain_ref(x, lab, h, axis, ignore, mode)
    assert loss_of(top) == pytest.approx(loss, rel=1e-12)
    d = backward_with_weight(layer, bottom, top, 1.7, [True, False, False])
    np.testing.assert_allclose(d[0], 1.7 * grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0])


def test_infogain_identity_equals_softmax_loss():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4))
    lab = np.array([0.0, 3.0, 2.0])
    top = run_forward(make_layer("InfogainLoss"), make_blobs([x, lab, np.eye(4)]))
    ref = -sum(math.log(softmax_rows(x[i])[int(lab[i])]) for i in range(3)) / 3
    assert loss_of(top) == pytest.approx(ref, rel=1e-12)


def test_infogain_log_threshold_is_1e_20():
    # p[1] = e^-100 ~ 3.7e-44 is clamped at kLOG_THRESHOLD = 1e-20 (not FLT_MIN)
    x = np.array([[0.0, -100.0]])
    h = np.array([[0.0, 1.0], [0.0, 1.0]])
    top = run_forward(make_layer("InfogainLoss"), make_blobs([x, np.array([0.0]), h]))
    assert loss_of(top) == pytest.approx(-math.log(LOG_THRESHOLD), rel=1e-9)


def _write_blob_proto(path, h, legacy):
    from netdef.proto import pb
    bp = pb.BlobProto()
    if legacy:                       # Caffe's usual H file: num/channels/height/width 1x1xCxC
        bp.num, bp.channels, bp.height, bp.width = 1, 1, h.shape[0], h.shape[1]
    else:
        bp.shape.dim.extend(h.shape)
    bp.data.extend(float(v) for v in h.ravel())
    path.write_bytes(bp.SerializeToString())


@pytest.mark.parametrize("legacy", [False, True])
def test_infogain_loss_from_blob_proto_file(tmp_path, legacy):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))
    lab = np.array([0.0, 2.0, 1.0, 1.0])
    h = rng.uniform(0, 1, (3, 3)).astype(np.float32).astype(np.float64)   # stored as float
    f = tmp_path / "H.binaryproto"
    _write_blob_proto(f, h, legacy)
    layer = make_layer("InfogainLoss", f"infogain_loss_param {{ source: '{f}' }}")
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom)
    loss, grad = infogain_ref(x, lab, h)
    assert loss_of(top) == pytest.approx(loss, rel=1e-12)
    d = backward_with_weight(layer, bottom, top, 1.0, [True, False])
    np.testing.assert_allclose(d[0], grad, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top, check_bottom=[0])


def test_infogain_loss_float32_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 3))
    lab = np.array([0.0, 1.0, 2.0])
    h = rng.uniform(0, 1, (3, 3))
    layer = make_layer("InfogainLoss", dtype=np.float32)
    bottom = make_blobs([x, lab, h], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    assert loss_of(top) == pytest.approx(infogain_ref(x, lab, h.astype(np.float32))[0],
                                         rel=1e-5)
    backward_with_weight(layer, bottom, top, 1.0, [True, False, False])
    assert bottom[0].diff.dtype == np.float32
    with pytest.raises(ConfigError, match="infogain_loss_param|source"):
        run_forward(make_layer("InfogainLoss"), make_blobs([x, lab]))
    with pytest.raises(ConfigError, match="cannot read"):
        run_forward(make_layer("InfogainLoss",
                               f"infogain_loss_param {{ source: '{tmp_path / 'nope'}' }}"),
                    make_blobs([x, lab]))
    with pytest.raises(ShapeError, match="3x3"):
        run_forward(make_layer("InfogainLoss"), make_blobs([x, lab, np.eye(2)]))
    with pytest.raises(NetdefError, match="label 3"):
        run_forward(make_layer("InfogainLoss"), make_blobs([x, np.array([0.0, 3.0, 1.0]), h]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("InfogainLoss"), make_blobs([x, np.zeros((3, 2)), h]))
    layer = make_layer("InfogainLoss")
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)


# ---------------------------------------------------------------------------------------------
# Accuracy
def accuracy_ref(x, lab, k, axis=1, ignore=None):
    """Caffe: correct iff fewer than k *other* classes score >= the true class (ties count
    against the label); per-class accuracy = correct / count for that class (0 if none)."""
    xv, outer, inner = class_view(np.asarray(x, np.float64), axis)
    labv = np.asarray(lab).reshape(outer, inner)
    c = xv.shape[2]
    correct = count = 0
    per_ok, per_n = np.zeros(c), np.zeros(c)
    for i in range(outer):
        for j in range(inner):
            l = int(labv[i, j])
            if ignore is not None and l == ignore:
                continue
            s = xv[i, j]
            better = sum(1 for q in range(c) if q != l and s[q] >= s[l])
            ok = better < k
            correct += ok
            count += 1
            per_ok[l] += ok
            per_n[l] += 1
    acc = correct / count if count else 0.0
    per = np.where(per_n > 0, per_ok / np.maximum(per_n, 1), 0.0)
    return acc, per


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


def test_accuracy_tie_examples():
    x = np.array([[0.1, 0.5, 0.4],      # label 1: clear winner
                  [0.3, 0.3, 0.4],      # label 0 ties class 1 and loses to class 2
                  [0.9, 0.05, 0.05],    # label 0: winner
                  [0.2, 0.2, 0.6]])     # label 2: winner
    lab = np.array([1.0, 0.0, 0.0, 2.0])
    top = run_forward(make_layer("Accuracy"), make_blobs([x, lab]))
    assert loss_of(top) == pytest.approx(0.75)
    # top-2: row 1 has two classes >= its score, so it is still wrong
    top = run_forward(make_layer("Accuracy", "accuracy_param { top_k: 2 }"),
                      make_blobs([x, lab]), ntop=2)
    assert loss_of(top) == pytest.approx(0.75)
    np.testing.assert_allclose(top[1].data, [0.5, 1.0, 1.0])
    # a plain two-way tie for first place is wrong at top-1 and right at top-2
    y = np.array([[0.5, 0.5, 0.0]])
    assert loss_of(run_forward(make_layer("Accuracy"), make_blobs([y, np.array([0.0])]))) == 0
    assert loss_of(run_forward(make_layer("Accuracy", "accuracy_param { top_k: 2 }"),
                               make_blobs([y, np.array([1.0])]))) == 1


@pytest.mark.parametrize("shape,axis,k", [((2, 4, 3), 1, 1), ((2, 3, 4), 2, 2),
                                          ((2, 4, 2, 2), 1, 3), ((3, 2, 4), -1, 1)])
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
    with pytest.raises(ConfigError, match="top_k"):
        run_forward(make_layer("Accuracy", "accuracy_param { top_k: 3 }"),
                    make_blobs([x, np.array([0.0, 1.0])]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("Accuracy"), make_blobs([x, np.array([0.0, 1.0, 1.0])]))
    with pytest.raises(NetdefError, match="label 2"):
        run_forward(make_layer("Accuracy"), make_blobs([x, np.array([0.0, 2.0])]))


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
