"""Loss layers and Accuracy: forward values against float64 references written here from the
formulas (never by calling the layer's kernels), gradient checks on every differentiable bottom
(never on labels), loss-weight scaling, float32 smoke runs and the user errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

RNG = np.random.default_rng(20260127)
FLT_MIN = float(np.finfo(np.float32).tiny)


# -- references ----------------------------------------------------------------------------
def softmax_ref(x, axis):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def normalizer_ref(mode, outer, inner, valid):
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(n))


def positions(x, axis):
    """(positions, C) view of scores with classes on ``axis``, in Caffe's (outer, inner) order."""
    return np.moveaxis(np.asarray(x, np.float64), axis, -1).reshape(-1, x.shape[axis])


def softmax_loss_ref(x, lab, axis=1, ignore=None, mode="VALID", h=None, floor=FLT_MIN):
    p = positions(softmax_ref(x, axis), axis)
    lab = np.trunc(np.asarray(lab, np.float64).reshape(-1)).astype(int)
    total, valid = 0.0, 0
    for i, l in enumerate(lab):
        if ignore is not None and l == ignore:
            continue
        valid += 1
        if h is None:
            total -= np.log(max(p[i, l], floor))
        else:
            for k in range(p.shape[1]):
                total -= h[l, k] * np.log(max(p[i, k], floor))
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    return total / normalizer_ref(mode, outer, inner, valid)


def labels_for(shape, axis, c, rng=RNG):
    lab_shape = shape[:axis] + shape[axis + 1:]
    return rng.integers(0, c, size=lab_shape).astype(np.float64)


def loss_value(top):
    assert top[0].shape == ()
    return float(top[0].data)


def diffs_with_weight(layer, bottom, top, weight, propagate):
    """Forward, seed the loss top's diff with ``weight`` (the net's loss weight), backward;
    returns copies of the bottom diffs."""
    layer.forward(bottom, top)
    for t in top:
        t.diff[...] = 0
    top[0].diff[...] = weight
    layer.backward(top, propagate, bottom)
    return [b.diff.copy() for b in bottom]


# -- SoftmaxWithLoss -----------------------------------------------------------------------
@pytest.mark.parametrize("params,ignore,mode", [
    ("", None, "VALID"),
    ("loss_param { ignore_label: 2 }", 2, "VALID"),
    ("loss_param { ignore_label: 0 normalization: FULL }", 0, "FULL"),
    ("loss_param { normalization: BATCH_SIZE }", None, "BATCH_SIZE"),
    ("loss_param { normalization: NONE ignore_label: 1 }", 1, "NONE"),
    ("loss_param { normalize: false }", None, "BATCH_SIZE"),
    ("loss_param { normalize: true ignore_label: 3 }", 3, "VALID"),
    ("loss_param { normalize: false normalization: FULL }", None, "FULL"),
])
def test_softmax_with_loss_normalization(params, ignore, mode):
    x = RNG.standard_normal((3, 4, 2, 2))
    lab = labels_for(x.shape, 1, 4)
    lab[0, 0, 0] = 2
    lab[1, 1, 0] = 3
    bottom = make_blobs([x, lab.reshape(3, 1, 2, 2)])
    layer = make_layer("SoftmaxWithLoss", params)
    top = run_forward(layer, bottom, ntop=2)
    assert loss_value(top) == pytest.approx(softmax_loss_ref(x, lab, 1, ignore, mode), rel=1e-12)
    np.testing.assert_allclose(top[1].data, softmax_ref(x, 1), rtol=1e-12)
    GradientChecker().check(layer, bottom, top, check_bottom=[0], top_ids=[0])


@pytest.mark.parametrize("shape,axis", [((5, 3), 1), ((2, 3, 4, 2), 2), ((2, 4, 3), -1),
                                        ((3, 2, 2), 0)])
def test_softmax_with_loss_axes(shape, axis):
    x = RNG.standard_normal(shape) * 2
    ax = axis % len(shape)
    c = shape[ax]
    lab = labels_for(shape, ax, c)
    layer = make_layer("SoftmaxWithLoss", f"softmax_param {{ axis: {axis} }}")
    if ax == 0:
        # Caffe's first-dimension check: labels (positions,) need shape[0] == C here
        lab = lab.reshape(-1)
    bottom = make_blobs([x, lab])
    if ax == 0 and lab.shape[0] != shape[0]:
        with pytest.raises(ShapeError, match="first"):
            run_forward(layer, bottom)
        return
    top = run_forward(layer, bottom, ntop=2)
    assert loss_value(top) == pytest.approx(softmax_loss_ref(x, lab, ax), rel=1e-12)
    np.testing.assert_allclose(top[1].data, softmax_ref(x, ax), rtol=1e-12)
    GradientChecker().check(layer, bottom, top, check_bottom=[0], top_ids=[0])


def test_softmax_with_loss_gradient_formula_and_loss_weight():
    x = RNG.standard_normal((4, 3))
    lab = np.array([0, 2, 1, 2.0])
    layer = make_layer("SoftmaxWithLoss", "loss_param { ignore_label: 1 }")
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom)
    g1 = diffs_with_weight(layer, bottom, top, 1.0, [True, False])[0]
    p = softmax_ref(x, 1)
    want = p.copy()
    want[np.arange(4), lab.astype(int)] -= 1
    want[2] = 0                      # ignored position
    np.testing.assert_allclose(g1, want / 3, rtol=1e-12, atol=1e-15)
    g2 = diffs_with_weight(layer, bottom, top, 2.0, [True, False])[0]
    np.testing.assert_allclose(g2, 2 * g1, rtol=1e-12)
    g0 = diffs_with_weight(layer, bottom, top, 0.0, [True, False])[0]
    assert not g0.any()


def test_softmax_with_loss_edge_cases():
    # every label ignored: normaliser clamps to 1, loss 0, zero gradient
    x = RNG.standard_normal((2, 3))
    layer = make_layer("SoftmaxWithLoss", "loss_param { ignore_label: 255 }")
    bottom = make_blobs([x, np.array([255.0, 255.0])])
    top = run_forward(layer, bottom)
    assert loss_value(top) == 0.0
    assert not diffs_with_weight(layer, bottom, top, 1.0, [True, False])[0].any()
    # probabilities that underflow are clamped at FLT_MIN (also in float64)
    x = np.array([[1000.0, -1000.0]])
    top = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([1.0])]))
    assert loss_value(top) == pytest.approx(-np.log(FLT_MIN), rel=1e-12)
    # labels arrive as floats and are truncated (Caffe's static_cast<int>)
    x = RNG.standard_normal((3, 4))
    top = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([1.7, 0.2, 3.9])]))
    assert loss_value(top) == pytest.approx(softmax_loss_ref(x, np.array([1, 0, 3]), 1))


def test_softmax_with_loss_float32():
    x = RNG.standard_normal((4, 5, 3))
    lab = labels_for(x.shape, 1, 5)
    layer = make_layer("SoftmaxWithLoss", dtype=np.float32)
    bottom = make_blobs([x, lab], dtype=np.float32)
    top = run_forward(layer, bottom, ntop=2)
    assert top[0].data.dtype == np.float32 and top[1].data.dtype == np.float32
    assert loss_value(top) == pytest.approx(softmax_loss_ref(x.astype(np.float32), lab), rel=1e-5)
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    assert bottom[0].diff.dtype == np.float32
    assert abs(bottom[0].diff.sum()) < 1e-5     # each position's gradient sums to 0


def test_softmax_with_loss_errors():
    x = RNG.standard_normal((2, 3))
    with pytest.raises(ShapeError, match="label 7"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([0, 7.0])]))
    with pytest.raises(ShapeError, match="label -1"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([-1.0, 0])]))
    with pytest.raises(ShapeError, match="label nan"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, np.array([np.nan, 0])]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([(2, 3), (3,)]))
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([(2, 3, 4), (2,)]))
    with pytest.raises(ConfigError) as ei:
        run_forward(make_layer("SoftmaxWithLoss", "softmax_param { axis: 3 }"),
                    make_blobs([(2, 3), (2,)]))
    assert ei.value.field == "softmax_param.axis"
    with pytest.raises(ConfigError):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([(2, 3)]))   # one bottom
    layer = make_layer("SoftmaxWithLoss")
    bottom = make_blobs([x, np.array([0, 1.0])])
    top = run_forward(layer, bottom)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)
    with pytest.raises(ConfigError, match="propagate_down"):
        layer.backward(top, [True, True], bottom)


# -- EuclideanLoss -------------------------------------------------------------------------
@pytest.mark.parametrize("s0,s1", [((4, 3), (4, 3)), ((2, 3, 2), (2, 6)), ((3,), (3,))])
def test_euclidean_loss(s0, s1):
    a, b = RNG.standard_normal(s0), RNG.standard_normal(s1)
    layer = make_layer("EuclideanLoss")
    bottom = make_blobs([a, b])
    top = run_forward(layer, bottom)
    ref = ((a.reshape(-1) - b.reshape(-1)) ** 2).sum() / s0[0] / 2
    assert loss_value(top) == pytest.approx(ref, rel=1e-12)
    GradientChecker().check(layer, bottom, top)       # both bottoms are differentiable
    g = diffs_with_weight(layer, bottom, top, 3.0, [True, True])
    np.testing.assert_allclose(g[0], 3 * (a - b.reshape(s0)) / s0[0], rtol=1e-12)
    np.testing.assert_allclose(g[1], -g[0].reshape(s1), rtol=1e-12)
    assert layer.allow_force_backward(0) and layer.allow_force_backward(1)


def test_euclidean_loss_float32_and_errors():
    a, b = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
    top = run_forward(make_layer("EuclideanLoss", dtype=np.float32),
                      make_blobs([a, b], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    assert loss_value(top) == pytest.approx(((a - b) ** 2).sum() / 6, rel=1e-5)
    with pytest.raises(ShapeError, match="same number"):
        run_forward(make_layer("EuclideanLoss"), make_blobs([(3, 4), (3, 5)]))
    with pytest.raises(ShapeError, match="first"):
        run_forward(make_layer("EuclideanLoss"), make_blobs([(3, 4), (4, 3)]))


# -- SigmoidCrossEntropyLoss ---------------------------------------------------------------
def bce_ref(x, t, ignore=None, mode="BATCH_SIZE"):
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64).reshape(x.shape)
    p = 1 / (1 + np.exp(-x))
    per = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    valid = np.ones(x.shape, bool) if ignore is None else np.trunc(t).astype(int) != ignore
    n = x.shape[0]
    return per[valid].sum() / normalizer_ref(mode, n, x.size // n, valid.sum())


@pytest.mark.parametrize("params,ignore,mode", [
    ("", None, "BATCH_SIZE"),
    ("loss_param { normalization: FULL }", None, "FULL"),
    ("loss_param { ignore_label: -1 }", -1, "BATCH_SIZE"),
    ("loss_param { ignore_label: -1 normalization: VALID }", -1, "VALID"),
    ("loss_param { normalize: true ignore_label: -1 }", -1, "VALID"),
    ("loss_param { normalization: NONE }", None, "NONE"),
])
def test_sigmoid_cross_entropy(params, ignore, mode):
    x = RNG.standard_normal((3, 2, 2)) * 2
    t = RNG.uniform(0, 1, size=(3, 4))
    t[0, :3] = -1 if ignore is not None else t[0, :3]
    layer = make_layer("SigmoidCrossEntropyLoss", params)
    bottom = make_blobs([x, t])
    top = run_forward(layer, bottom)
    assert loss_value(top) == pytest.approx(bce_ref(x, t, ignore, mode), rel=1e-12)
    GradientChecker().check(layer, bottom, top, check_bottom=[0])
    g = diffs_with_weight(layer, bottom, top, 1.0, [True, False])[0]
    if ignore is not None:
        assert not g.reshape(3, 4)[0, :3].any()


def test_sigmoid_cross_entropy_stable_and_truncating_ignore():
    x = np.array([[100.0, -100.0, 800.0, -800.0]])
    t = np.array([[1.0, 0.0, 0.0, 1.0]])
    top = run_forward(make_layer("SigmoidCrossEntropyLoss"), make_blobs([x, t]))
    assert loss_value(top) == pytest.approx(1600.0, rel=1e-12)     # no inf/nan
    # the ignore test uses the target's integer part: -1.5 -> -1 is ignored, -0.5 -> 0 is not
    x = np.array([[0.3, -0.2, 0.5]])
    t = np.array([[-1.5, -0.5, 1.0]])
    top = run_forward(make_layer("SigmoidCrossEntropyLoss", "loss_param { ignore_label: -1 }"),
                      make_blobs([x, t]))
    # per element: max(x,0) - x t + log(1 + exp(-|x|))
    ref = (0 - (-0.2) * (-0.5) + np.log1p(np.exp(-0.2))) + (0.5 - 0.5 + np.log1p(np.exp(-0.5)))
    assert loss_value(top) == pytest.approx(ref, rel=1e-12)


def test_sigmoid_cross_entropy_float32_and_errors():
    x, t = RNG.standard_normal((2, 3)), RNG.uniform(0, 1, (2, 3))
    layer = make_layer("SigmoidCrossEntropyLoss", dtype=np.float32)
    bottom = make_blobs([x, t], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert loss_value(top) == pytest.approx(bce_ref(x, t), rel=1e-5)
    top[0].diff[...] = 1
    layer.backward(top, [True, False], bottom)
    assert bottom[0].diff.dtype == np.float32
    with pytest.raises(ShapeError, match="same count"):
        run_forward(make_layer("SigmoidCrossEntropyLoss"), make_blobs([(2, 3), (2, 4)]))
    with pytest.raises(ConfigError, match="propagate_down"):
        layer.backward(top, [True, True], bottom)


# -- HingeLoss -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 2)])
def test_hinge_loss(norm, shape):
    x = RNG.standard_normal(shape) * 1.5
    n = shape[0]
    dim = x.size // n
    lab = RNG.integers(0, dim, size=n).astype(float)
    layer = make_layer("HingeLoss", f"hinge_loss_param {{ norm: {norm} }}" if norm != "L1"
                       else "")
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom)
    total = 0.0
    for i in range(n):
        for k in range(dim):
            y = 1.0 if k == int(lab[i]) else -1.0
            m = max(0.0, 1.0 - y * x.reshape(n, dim)[i, k])
            total += m if norm == "L1" else m * m
    assert loss_value(top) == pytest.approx(total / n, rel=1e-12)
    GradientChecker(kink=1.0, kink_range=0.02).check(layer, bottom, top, check_bottom=[0])


def test_hinge_loss_float32_and_errors():
    x = RNG.standard_normal((3, 4))
    lab = np.array([0, 3, 1.0])
    top = run_forward(make_layer("HingeLoss", dtype=np.float32),
                      make_blobs([x, lab], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    with pytest.raises(ShapeError, match="label 4"):
        run_forward(make_layer("HingeLoss"), make_blobs([x, np.array([0, 4, 1.0])]))
    with pytest.raises(ShapeError, match="one value per item"):
        run_forward(make_layer("HingeLoss"), make_blobs([x, np.zeros((3, 2))]))


# -- ContrastiveLoss -----------------------------------------------------------------------
def contrastive_ref(a, b, y, margin, legacy):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        d2 = float(((a[i] - b[i]) ** 2).sum())
        if int(y[i]) != 0:
            total += d2
        elif legacy:
            total += max(margin - d2, 0.0)
        else:
            total += max(margin - np.sqrt(d2), 0.0) ** 2
    return total / (2 * n)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("margin", [None, 2.0])
def test_contrastive_loss(legacy, margin):
    # its own generator: the shared RNG's state depends on which tests ran before (xdist), and
    # some draws put a pair on the hinge's kink, where central differences are meaningless
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 3)) * 0.5
    b = rng.standard_normal((6, 3)) * 0.5
    y = np.array([1, 0, 0, 1, 0, 0.0])
    p = f"legacy_version: {str(legacy).lower()}" + (f" margin: {margin}" if margin else "")
    layer = make_layer("ContrastiveLoss", f"contrastive_loss_param {{ {p} }}")
    bottom = make_blobs([a, b, y.reshape(6, 1)])
    top = run_forward(layer, bottom)
    assert loss_value(top) == pytest.approx(contrastive_ref(a, b, y, margin or 1.0, legacy),
                                            rel=1e-12)
    # Caffe's gradient divides by (d + 1e-4): allow for that epsilon
    GradientChecker(threshold=2e-3).check(layer, bottom, top, check_bottom=[0, 1])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(2)


def test_contrastive_loss_similarity_is_truncated_and_errors():
    a, b = RNG.standard_normal((3, 2)), RNG.standard_normal((3, 2))
    y = np.array([0.5, 1.7, -0.2])          # -> 0, 1, 0
    top = run_forward(make_layer("ContrastiveLoss"), make_blobs([a, b, y]))
    assert loss_value(top) == pytest.approx(contrastive_ref(a, b, [0, 1, 0], 1.0, False))
    top = run_forward(make_layer("ContrastiveLoss", dtype=np.float32),
                      make_blobs([a, b, y], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    with pytest.raises(ShapeError, match="one value per pair"):
        run_forward(make_layer("ContrastiveLoss"), make_blobs([(3, 2), (3, 2), (2,)]))
    with pytest.raises(ShapeError, match="same shape"):
        run_forward(make_layer("ContrastiveLoss"), make_blobs([(3, 2), (3, 3), (3,)]))
    with pytest.raises(ConfigError, match="3 bottoms"):
        run_forward(make_layer("ContrastiveLoss"), make_blobs([(3, 2), (3, 2)]))


# -- MultinomialLogisticLoss ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 2)])
def test_multinomial_logistic_loss(shape):
    n = shape[0]
    p = RNG.uniform(0.2, 1.0, size=shape)
    p /= p.reshape(n, -1).sum(axis=1).reshape((n,) + (1,) * (len(shape) - 1))
    dim = p.size // n
    lab = RNG.integers(0, dim, size=n).astype(float)
    layer = make_layer("MultinomialLogisticLoss")
    bottom = make_blobs([p, lab])
    top = run_forward(layer, bottom)
    ref = -sum(np.log(p.reshape(n, dim)[i, int(lab[i])]) for i in range(n)) / n
    assert loss_value(top) == pytest.approx(ref, rel=1e-12)
    GradientChecker(step=1e-3).check(layer, bottom, top, check_bottom=[0])


def test_multinomial_logistic_loss_threshold_float32_and_errors():
    p = np.array([[0.0, 1.0], [0.5, 0.5]])
    layer = make_layer("MultinomialLogisticLoss")
    bottom = make_blobs([p, np.array([0, 1.0])])
    top = run_forward(layer, bottom)
    assert loss_value(top) == pytest.approx((-np.log(1e-20) - np.log(0.5)) / 2, rel=1e-12)
    g = diffs_with_weight(layer, bottom, top, 1.0, [True, False])[0]
    np.testing.assert_allclose(g, [[-0.5 / 1e-20, 0], [0, -0.5 / 0.5]])
    top = run_forward(make_layer("MultinomialLogisticLoss", dtype=np.float32),
                      make_blobs([p + 0.1, np.array([0, 1.0])], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    with pytest.raises(ShapeError, match="label 2"):
        run_forward(make_layer("MultinomialLogisticLoss"), make_blobs([p, np.array([2, 0.0])]))


# -- InfogainLoss --------------------------------------------------------------------------
@pytest.mark.parametrize("shape,axis,params,ignore,mode", [
    ((4, 3), 1, "", None, "VALID"),
    ((2, 3, 2), 1, "loss_param { ignore_label: 1 }", 1, "VALID"),
    ((2, 2, 3), 2, "loss_param { normalization: BATCH_SIZE }", None, "BATCH_SIZE"),
    ((3, 4), 1, "loss_param { ignore_label: 0 normalization: FULL }", 0, "FULL"),
])
def test_infogain_loss_third_bottom(shape, axis, params, ignore, mode):
    x = RNG.standard_normal(shape)
    c = shape[axis]
    lab = labels_for(shape, axis, c)
    lab.reshape(-1)[0] = 1
    h = RNG.uniform(0, 1, size=(c, c))
    layer = make_layer("InfogainLoss", f"infogain_loss_param {{ axis: {axis} }} {params}")
    bottom = make_blobs([x, lab, h])
    top = run_forward(layer, bottom, ntop=2)
    ref = softmax_loss_ref(x, lab, axis, ignore, mode, h=h, floor=1e-20)
    assert loss_value(top) == pytest.approx(ref, rel=1e-12)
    np.testing.assert_allclose(top[1].data, softmax_ref(x, axis), rtol=1e-12)
    GradientChecker().check(layer, bottom, top, check_bottom=[0], top_ids=[0])
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)


def test_infogain_identity_matches_softmax_loss_and_threshold():
    x = RNG.standard_normal((3, 4))
    lab = np.array([0, 3, 2.0])
    a = run_forward(make_layer("InfogainLoss"), make_blobs([x, lab, np.eye(4)]))
    b = run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x, lab]))
    assert loss_value(a) == pytest.approx(loss_value(b), rel=1e-12)
    # an underflowing probability is clamped at 1e-20 (kLOG_THRESHOLD), not FLT_MIN
    x = np.array([[1000.0, -1000.0]])
    top = run_forward(make_layer("InfogainLoss"),
                      make_blobs([x, np.array([0.0]), np.array([[0.0, 1.0], [0, 0]])]))
    assert loss_value(top) == pytest.approx(-np.log(1e-20), rel=1e-12)


@pytest.mark.parametrize("legacy", [False, True])
def test_infogain_loss_from_source(tmp_path, monkeypatch, legacy):
    from netdef.proto import pb
    h = RNG.uniform(0, 1, size=(3, 3))
    bp = pb.BlobProto()
    if legacy:
        bp.num, bp.channels, bp.height, bp.width = 1, 1, 3, 3
    else:
        bp.shape.dim.extend([3, 3])
    bp.data.extend(h.astype(np.float32).reshape(-1).tolist())
    (tmp_path / "H.binaryproto").write_bytes(bp.SerializeToString())
    monkeypatch.chdir(tmp_path)            # the source is relative to the working directory
    x = RNG.standard_normal((4, 3))
    lab = np.array([2, 0, 1, 1.0])
    layer = make_layer("InfogainLoss", "infogain_loss_param { source: 'H.binaryproto' }")
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom)
    ref = softmax_loss_ref(x, lab, h=h.astype(np.float32).astype(np.float64), floor=1e-20)
    assert loss_value(top) == pytest.approx(ref, rel=1e-12)
    GradientChecker().check(layer, bottom, top, check_bottom=[0])
    # shape-only nets do not read the file
    layer = make_layer("InfogainLoss", "infogain_loss_param { source: 'absent' }",
                       init_params=False)
    tops = [Blob(())]
    layer.setup(make_blobs([(4, 3), (4,)]), tops)
    assert tops[0].shape == ()


def test_infogain_loss_errors(tmp_path):
    with pytest.raises(ConfigError) as ei:
        run_forward(make_layer("InfogainLoss"), make_blobs([(2, 3), (2,)]))
    assert ei.value.field == "infogain_loss_param.source"
    with pytest.raises(ConfigError, match="cannot read"):
        run_forward(make_layer("InfogainLoss", f"infogain_loss_param {{ source: "
                                               f"'{tmp_path / 'none'}' }}"),
                    make_blobs([(2, 3), (2,)]))
    with pytest.raises(ShapeError, match="3x3"):
        run_forward(make_layer("InfogainLoss"), make_blobs([(2, 3), (2,), (2, 2)]))
    with pytest.raises(ShapeError, match="label 3"):
        run_forward(make_layer("InfogainLoss"),
                    make_blobs([(2, 3), np.array([0, 3.0]), np.eye(3)]))
    top = run_forward(make_layer("InfogainLoss", dtype=np.float32),
                      make_blobs([(2, 3), np.array([0, 2.0]), np.eye(3)], dtype=np.float32))
    assert top[0].data.dtype == np.float32


# -- Accuracy ------------------------------------------------------------------------------
def accuracy_ref(x, lab, k, axis=1, ignore=None):
    """Caffe: correct iff fewer than k classes score >= the label's score."""
    s = positions(x, axis)
    lab = np.trunc(np.asarray(lab, np.float64).reshape(-1)).astype(int)
    c = s.shape[1]
    hits, seen = np.zeros(c), np.zeros(c)
    for i, l in enumerate(lab):
        if ignore is not None and l == ignore:
            continue
        seen[l] += 1
        better = sum(1 for j in range(c) if j != l and s[i, j] >= s[i, l])
        if better < k:
            hits[l] += 1
    acc = hits.sum() / seen.sum() if seen.sum() else 0.0
    per = np.array([hits[j] / seen[j] if seen[j] else 0.0 for j in range(c)])
    return acc, per


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("ignore", [None, 2])
def test_accuracy(k, ignore):
    # rounded scores make ties likely
    x = np.round(RNG.standard_normal((12, 5)), 0)
    lab = RNG.integers(0, 5, size=12).astype(float)
    params = f"accuracy_param {{ top_k: {k} " + \
        (f"ignore_label: {ignore} " if ignore is not None else "") + "}"
    layer = make_layer("Accuracy", params)
    top = run_forward(layer, make_blobs([x, lab]), ntop=2)
    acc, per = accuracy_ref(x, lab, k, ignore=ignore)
    assert top[0].shape == () and top[1].shape == (5,)
    assert float(top[0].data) == pytest.approx(acc, rel=1e-12)
    np.testing.assert_allclose(top[1].data, per, rtol=1e-12)
    assert layer.loss_weights == [0.0, 0.0] and not layer.is_loss


def test_accuracy_ties_count_against_the_label():
    x = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    lab = np.array([1, 0, 0, 2.0])
    top = run_forward(make_layer("Accuracy"), make_blobs([x, lab]))
    assert float(top[0].data) == pytest.approx(0.75)
    top = run_forward(make_layer("Accuracy", "accuracy_param { top_k: 2 }"), make_blobs([x, lab]))
    assert float(top[0].data) == pytest.approx(0.75)   # row 1: 0.3 ties and 0.4 beats
    top = run_forward(make_layer("Accuracy", "accuracy_param { top_k: 3 }"), make_blobs([x, lab]))
    assert float(top[0].data) == 1.0


@pytest.mark.parametrize("shape,axis", [((2, 3, 4), 1), ((2, 4, 3), 2), ((3, 2, 2, 4), -1)])
def test_accuracy_axis(shape, axis):
    x = RNG.standard_normal(shape)
    ax = axis % len(shape)
    lab = labels_for(shape, ax, shape[ax])
    top = run_forward(make_layer("Accuracy", f"accuracy_param {{ axis: {axis} top_k: 2 }}"),
                      make_blobs([x, lab]), ntop=2)
    acc, per = accuracy_ref(x, lab, 2, ax)
    assert float(top[0].data) == pytest.approx(acc)
    np.testing.assert_allclose(top[1].data, per)


def test_accuracy_all_ignored_float32_and_errors():
    x = RNG.standard_normal((3, 4))
    top = run_forward(make_layer("Accuracy", "accuracy_param { ignore_label: 1 }"),
                      make_blobs([x, np.ones(3)]), ntop=2)
    assert float(top[0].data) == 0.0 and not top[1].data.any()
    top = run_forward(make_layer("Accuracy", dtype=np.float32),
                      make_blobs([x, np.array([0, 1, 2.0])], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    with pytest.raises(ConfigError) as ei:
        run_forward(make_layer("Accuracy", "accuracy_param { top_k: 5 }"),
                    make_blobs([x, np.zeros(3)]))
    assert ei.value.field == "accuracy_param.top_k"
    with pytest.raises(ConfigError) as ei:
        run_forward(make_layer("Accuracy", "accuracy_param { top_k: 0 }"),
                    make_blobs([x, np.zeros(3)]))
    assert ei.value.field == "accuracy_param.top_k"
    with pytest.raises(ShapeError, match="label count"):
        run_forward(make_layer("Accuracy"), make_blobs([x, np.zeros(4)]))
    with pytest.raises(ShapeError, match="label 4"):
        run_forward(make_layer("Accuracy"), make_blobs([x, np.array([0, 4, 1.0])]))
    layer = make_layer("Accuracy")
    assert not layer.allow_force_backward(0) and not layer.allow_force_backward(1)


# -- shared --------------------------------------------------------------------------------
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
