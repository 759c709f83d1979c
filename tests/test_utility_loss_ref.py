"""Utility, loss and data layers: forward against float64 references written from Caffe's
formulas, gradient checks on every differentiable input, and parameter errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import NetdefError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

RNG = np.random.default_rng(5)


def softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("shape,axis", [((3, 5), 1), ((2, 3, 4), 2), ((2, 4, 2, 3), 1)])
def test_softmax(shape, axis):
    layer = make_layer("Softmax", f"softmax_param {{ axis: {axis} }}")
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, softmax_ref(bottom[0].data, axis), rtol=1e-12)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("params,axis", [("", 1), ("concat_param { axis: 0 }", 0),
                                         ("concat_param { concat_dim: 1 }", 1)])
def test_concat(params, axis):
    shapes = [(2, 3, 2), (2, 1, 2), (2, 2, 2)] if axis == 1 else [(1, 3, 2), (2, 3, 2), (3, 3, 2)]
    layer = make_layer("Concat", params)
    bottom = make_blobs(shapes)
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, np.concatenate([b.data for b in bottom], axis))
    GradientChecker().check(layer, bottom, top)
    with pytest.raises(NetdefError, match="must agree"):
        run_forward(make_layer("Concat", params), make_blobs([(2, 3, 2), (3, 3, 3)]))


@pytest.mark.parametrize("params,sizes", [("slice_param { slice_point: 1 slice_point: 4 }", [1, 3, 2]),
                                          ("slice_param { axis: 1 }", [2, 2, 2]),
                                          ("slice_param { slice_dim: 1 slice_point: 5 }", [5, 1])])
def test_slice(params, sizes):
    layer = make_layer("Slice", params)
    bottom = make_blobs([(2, 6, 2)])
    top = run_forward(layer, bottom, ntop=len(sizes))
    np.testing.assert_array_equal(np.concatenate([t.data for t in top], 1), bottom[0].data)
    assert [t.shape[1] for t in top] == sizes
    GradientChecker().check(layer, bottom, top)


def test_slice_errors():
    with pytest.raises(NetdefError, match="slice_point"):
        run_forward(make_layer("Slice", "slice_param { slice_point: 4 slice_point: 2 }"),
                    make_blobs([(2, 6)]), ntop=3)
    with pytest.raises(NetdefError, match="equal parts"):
        run_forward(make_layer("Slice", ""), make_blobs([(2, 5)]), ntop=2)


def test_split():
    layer = make_layer("Split")
    bottom = make_blobs([(2, 3)])
    top = run_forward(layer, bottom, ntop=3)
    for t in top:
        np.testing.assert_array_equal(t.data, bottom[0].data)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("params", ["", "eltwise_param { coeff: 0.5 coeff: -2 coeff: 3 }",
                                    "eltwise_param { operation: PROD }",
                                    "eltwise_param { operation: PROD stable_prod_grad: false }",
                                    "eltwise_param { operation: MAX }"])
def test_eltwise(params):
    layer = make_layer("Eltwise", params)
    # distinct magnitudes 0.2 apart (no MAX ties within the checker's step, no zeros for PROD),
    # from a generator of its own so the values do not depend on test order
    rng = np.random.default_rng(2)
    vals = (rng.permutation(36) + 1) * 0.2 * rng.choice([-1, 1], size=36)
    xs = list(vals.reshape(3, 3, 4))
    bottom = make_blobs(xs)
    top = run_forward(layer, bottom)
    if "PROD" in params:
        ref = xs[0] * xs[1] * xs[2]
    elif "MAX" in params:
        ref = np.maximum(np.maximum(xs[0], xs[1]), xs[2])
    elif "coeff" in params:
        ref = 0.5 * xs[0] - 2 * xs[1] + 3 * xs[2]
    else:
        ref = xs[0] + xs[1] + xs[2]
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    GradientChecker().check(layer, bottom, top)


def test_eltwise_errors():
    with pytest.raises(NetdefError, match="coeff"):
        run_forward(make_layer("Eltwise", "eltwise_param { coeff: 1 }"), make_blobs([(2,), (2,)]))
    with pytest.raises(NetdefError, match="shape"):
        run_forward(make_layer("Eltwise", ""), make_blobs([(2,), (3,)]))


def test_flatten_and_reshape():
    layer = make_layer("Flatten", "flatten_param { axis: 1 end_axis: 2 }")
    bottom = make_blobs([(2, 3, 4, 5)])
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 12, 5)
    np.testing.assert_array_equal(top[0].data, bottom[0].data.reshape(2, 12, 5))
    GradientChecker().check(layer, bottom, top)
    layer = make_layer("Reshape", "reshape_param { shape { dim: 0 dim: -1 dim: 2 } }")
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 30, 2)
    GradientChecker().check(layer, bottom, top)
    layer = make_layer("Reshape", "reshape_param { shape { dim: 2 dim: 2 } axis: 1 num_axes: 1 }")
    top = run_forward(layer, make_blobs([(2, 4, 5)]))
    assert top[0].shape == (2, 2, 2, 5)
    for bad, word in (("dim: -1 dim: -1", "-1"), ("dim: 7", "elements")):
        with pytest.raises(NetdefError, match=word):
            run_forward(make_layer("Reshape", f"reshape_param {{ shape {{ {bad} }} }}"),
                        make_blobs([(2, 3)]))


def test_crop():
    layer = make_layer("Crop", "crop_param { axis: 2 offset: 1 offset: 2 }")
    bottom = make_blobs([(2, 3, 5, 6), (2, 3, 3, 3)])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, bottom[0].data[:, :, 1:4, 2:5])
    GradientChecker().check(layer, bottom, top, check_bottom=[0])
    with pytest.raises(NetdefError, match="exceeds"):
        run_forward(make_layer("Crop", "crop_param { axis: 2 offset: 3 }"),
                    make_blobs([(1, 1, 5, 5), (1, 1, 3, 3)]))


def test_tile():
    layer = make_layer("Tile", "tile_param { axis: 1 tiles: 3 }")
    bottom = make_blobs([(2, 2, 3)])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, np.tile(bottom[0].data, (1, 3, 1)))
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_reduction(op, axis):
    layer = make_layer("Reduction", f"reduction_param {{ operation: {op} axis: {axis} coeff: 1.5 }}")
    x = RNG.uniform(0.2, 1.0, size=(2, 3, 4)) * RNG.choice([-1, 1], size=(2, 3, 4))
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    r = x.reshape(int(np.prod(x.shape[:axis])), -1)
    ref = {"SUM": r.sum(1), "ASUM": np.abs(r).sum(1), "SUMSQ": (r ** 2).sum(1),
           "MEAN": r.mean(1)}[op] * 1.5
    np.testing.assert_allclose(top[0].data.reshape(-1), ref)
    assert top[0].shape == x.shape[:axis]
    GradientChecker().check(layer, bottom, top)


def test_silence_and_argmax():
    layer = make_layer("Silence")
    bottom = make_blobs([(2, 3)])
    layer.setup(bottom, [])
    layer.backward([], [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0)
    x = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, -1.0, 4.0, 4.0]])
    top = run_forward(make_layer("ArgMax", "argmax_param { top_k: 2 out_max_val: true }"),
                      make_blobs([x]))
    # ties: the larger index first (Caffe sorts (value, index) pairs in descending order)
    np.testing.assert_array_equal(top[0].data, [[[2, 1], [3, 3]], [[3, 2], [4, 4]]])
    top = run_forward(make_layer("ArgMax", "argmax_param { axis: 1 }"), make_blobs([x]))
    np.testing.assert_array_equal(top[0].data, [[2], [3]])


# -- losses --------------------------------------------------------------------------------
def sm_loss_ref(x, lab, axis=1, ignore=None, mode="VALID"):
    p = softmax_ref(x, axis)
    p = np.moveaxis(p, axis, -1).reshape(-1, x.shape[axis])
    lab = lab.reshape(-1).astype(int)
    valid = lab != ignore if ignore is not None else np.ones(len(lab), bool)
    loss = -np.log(p[np.arange(len(lab))[valid], lab[valid]]).sum()
    outer = int(np.prod(x.shape[:axis]))
    norm = {"VALID": valid.sum(), "FULL": len(lab), "BATCH_SIZE": outer, "NONE": 1}[mode]
    return loss / max(norm, 1)


@pytest.mark.parametrize("params,mode,ignore", [
    ("", "VALID", None),
    ("loss_param { ignore_label: 2 }", "VALID", 2),
    ("loss_param { ignore_label: 1 normalization: FULL }", "FULL", 1),
    ("loss_param { normalization: BATCH_SIZE }", "BATCH_SIZE", None),
    ("loss_param { normalize: false }", "BATCH_SIZE", None),
    ("loss_param { normalization: NONE }", "NONE", None),
])
def test_softmax_with_loss(params, mode, ignore):
    layer = make_layer("SoftmaxWithLoss", params)
    x = RNG.standard_normal((3, 4, 2, 2))
    lab = RNG.integers(0, 4, size=(3, 1, 2, 2)).astype(float)
    lab[0, 0, 0, 0] = 2
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom, ntop=2)
    assert top[0].shape == ()
    assert top[0].data == pytest.approx(sm_loss_ref(x, lab, 1, ignore, mode), rel=1e-12)
    np.testing.assert_allclose(top[1].data, softmax_ref(x, 1))
    GradientChecker().check(layer, bottom, top, check_bottom=[0], top_ids=[0])


def test_softmax_with_loss_axis2_and_bad_labels():
    layer = make_layer("SoftmaxWithLoss", "softmax_param { axis: 2 }")
    x = RNG.standard_normal((2, 3, 5))
    lab = RNG.integers(0, 5, size=(2, 3)).astype(float)
    top = run_forward(layer, make_blobs([x, lab]))
    assert top[0].data == pytest.approx(sm_loss_ref(x, lab, 2))
    with pytest.raises(NetdefError, match="label 7"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([x[:, :, 0], np.array([0, 7.0])]))
    with pytest.raises(NetdefError, match="label count"):
        run_forward(make_layer("SoftmaxWithLoss"), make_blobs([(2, 3), (3,)]))


def test_euclidean_loss():
    layer = make_layer("EuclideanLoss")
    bottom = make_blobs([(4, 3), (4, 3)])
    top = run_forward(layer, bottom)
    assert top[0].data == pytest.approx(((bottom[0].data - bottom[1].data) ** 2).sum() / 8)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("params,mode", [("", "BATCH_SIZE"), ("loss_param { normalization: FULL }", "FULL"),
                                         ("loss_param { ignore_label: -1 }", "BATCH_SIZE")])
def test_sigmoid_cross_entropy(params, mode):
    layer = make_layer("SigmoidCrossEntropyLoss", params)
    x = RNG.standard_normal((3, 4)) * 3
    t = RNG.uniform(0, 1, size=(3, 4))
    if "ignore" in params:
        t[0, :2] = -1
    bottom = make_blobs([x, t])
    top = run_forward(layer, bottom)
    p = 1 / (1 + np.exp(-x))
    l = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    valid = t != -1
    norm = 3 if mode == "BATCH_SIZE" else 12
    assert top[0].data == pytest.approx(l[valid].sum() / norm, rel=1e-10)
    GradientChecker().check(layer, bottom, top, check_bottom=[0])


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):
    layer = make_layer("HingeLoss", f"hinge_loss_param {{ norm: {norm} }}")
    x = RNG.standard_normal((4, 3))
    lab = np.array([0, 2, 1, 2.0])
    bottom = make_blobs([x, lab])
    top = run_forward(layer, bottom)
    y = -np.ones_like(x)
    y[np.arange(4), lab.astype(int)] = 1
    m = np.maximum(0, 1 - y * x)
    assert top[0].data == pytest.approx((m if norm == "L1" else m ** 2).sum() / 4)
    GradientChecker(kink=1.0, kink_range=0.02).check(layer, bottom, top, check_bottom=[0])


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss(legacy):
    layer = make_layer("ContrastiveLoss", f"contrastive_loss_param {{ margin: 2 "
                                          f"legacy_version: {str(legacy).lower()} }}")
    rng = np.random.default_rng(4)   # fixed draws: no pair sits on the margin's kink
    a, b = rng.standard_normal((5, 3)) * 0.6, rng.standard_normal((5, 3)) * 0.6
    y = np.array([1, 0, 0, 1, 0.0])
    bottom = make_blobs([a, b, y])
    top = run_forward(layer, bottom)
    d2 = ((a - b) ** 2).sum(1)
    other = np.maximum(2 - d2, 0) if legacy else np.maximum(2 - np.sqrt(d2), 0) ** 2
    assert top[0].data == pytest.approx(np.where(y == 1, d2, other).sum() / 10)
    GradientChecker().check(layer, bottom, top, check_bottom=[0, 1])


def test_multinomial_logistic_and_infogain(tmp_path):
    p = softmax_ref(RNG.standard_normal((4, 3)), 1)
    lab = np.array([0, 2, 1, 1.0])
    layer = make_layer("MultinomialLogisticLoss")
    bottom = make_blobs([p, lab])
    top = run_forward(layer, bottom)
    assert top[0].data == pytest.approx(-np.log(p[np.arange(4), [0, 2, 1, 1]]).mean())
    GradientChecker(step=1e-4).check(layer, bottom, top, check_bottom=[0])
    x = RNG.standard_normal((4, 3))
    h = RNG.uniform(0, 1, size=(3, 3))
    ref = -(h[lab.astype(int)] * np.log(softmax_ref(x, 1))).sum() / 4
    layer = make_layer("InfogainLoss")
    bottom = make_blobs([x, lab, h])
    top = run_forward(layer, bottom)
    assert top[0].data == pytest.approx(ref)
    GradientChecker().check(layer, bottom, top, check_bottom=[0])
    from netdef.io.weights import to_blob_proto
    f = tmp_path / "h.binaryproto"
    f.write_bytes(to_blob_proto(h).SerializeToString())
    layer = make_layer("InfogainLoss", f"infogain_loss_param {{ source: '{f}' }}")
    top = run_forward(layer, make_blobs([x, lab]))
    assert top[0].data == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("k", [1, 2])
def test_accuracy(k):
    x = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4], [0.9, 0.05, 0.05], [0.2, 0.2, 0.6]])
    lab = np.array([1, 0, 0, 2.0])
    top = run_forward(make_layer("Accuracy", f"accuracy_param {{ top_k: {k} }}"),
                      make_blobs([x, lab]), ntop=2)
    # Caffe: correct iff fewer than k classes score >= the true class (ties count against)
    expect = [1, 0, 1, 1]   # the tie in row 1 counts against it, even with k = 2
    assert top[0].data == pytest.approx(np.mean(expect))
    per = [np.mean([e for e, l in zip(expect, lab) if l == c]) for c in range(3)]
    np.testing.assert_allclose(top[1].data, per)
    top = run_forward(make_layer("Accuracy", "accuracy_param { ignore_label: 0 }"),
                      make_blobs([x, lab]))
    assert top[0].data == pytest.approx(1.0)


# -- data ----------------------------------------------------------------------------------
def test_input_and_dummy_data():
    layer = make_layer("Input", "top: 'a' top: 'b' input_param { shape { dim: 2 dim: 3 } }")
    tops = [Blob(()), Blob(())]
    layer.setup([], tops)
    assert [t.shape for t in tops] == [(2, 3), (2, 3)]
    layer = make_layer("DummyData", "top: 'a' top: 'b' dummy_data_param { shape { dim: 4 dim: 2 } "
                                    "shape { dim: 3 } data_filler { type: 'constant' value: 7 } "
                                    "data_filler { type: 'uniform' min: 1 max: 2 } }")
    tops = [Blob(()), Blob(())]
    layer.setup([], tops)
    layer.forward([], tops)
    np.testing.assert_array_equal(tops[0].data, np.full((4, 2), 7.0))
    assert tops[1].shape == (3,) and np.all((tops[1].data >= 1) & (tops[1].data <= 2))
    layer = make_layer("DummyData", "top: 'a' dummy_data_param { num: 2 channels: 3 height: 4 "
                                    "width: 5 }")
    tops = [Blob(())]
    layer.setup([], tops)
    assert tops[0].shape == (2, 3, 4, 5)


def test_data_layer_shapes():
    layer = make_layer("Data", "top: 'data' top: 'label' data_param { source: 'nowhere' "
                               "batch_size: 8 }")
    with pytest.raises(NetdefError, match="--input-shape data="):
        layer.setup([], [Blob(()), Blob(())])
    layer = make_layer("Data", "top: 'data' top: 'label' data_param { source: 'x' batch_size: 8 }")
    layer.input_shapes = {"data": (8, 1, 28, 28)}
    tops = [Blob(()), Blob(())]
    layer.setup([], tops)
    assert tops[1].shape == (8,)
    layer = make_layer("MemoryData", "top: 'd' top: 'l' memory_data_param { batch_size: 4 "
                                     "channels: 3 height: 2 width: 2 }")
    tops = [Blob(()), Blob(())]
    layer.setup([], tops)
    assert tops[0].shape == (4, 3, 2, 2)
    layer = make_layer("ImageData", "top: 'd' top: 'l' image_data_param { batch_size: 5 "
                                    "new_height: 9 new_width: 7 }")
    tops = [Blob(()), Blob(())]
    layer.setup([], tops)
    assert tops[0].shape == (5, 3, 9, 7)
