"""Neuron (elementwise) layers: forward against float64 formulas, gradients, in-place, errors."""
import math

import numpy as np
import pytest

from layer_refs import (
    ref_bnll,
    ref_elu,
    ref_exp,
    ref_log,
    ref_power,
    ref_prelu,
    ref_relu,
    ref_sigmoid,
    ref_swish,
)
from netdef.blob import Blob
from netdef.errors import ConfigError, ShapeError
from netdef.testing import TEST, TRAIN, GradientChecker, make_blobs, make_layer, run_forward

SHAPES = [(2, 3, 4, 5), (3, 7), (2, 2, 3)]


def f32(v):
    """A parameter as the float32 the schema stores."""
    return float(np.float32(v))


# --------------------------------------------------------------------------------------------
# generic cases: (type, params, reference(x), input maker(rng, shape), kink_range)

# NB: make_blobs adopts a float64 array without copying it, hence the x.copy() calls below.


def normal(rng, shape):
    return rng.standard_normal(shape)


def positive(rng, shape):
    return rng.uniform(0.5, 2.5, size=shape)


CASES = [
    ("ReLU", "", lambda x: ref_relu(x), normal, 0.01),
    ("ReLU", "relu_param { negative_slope: 0.3 }", lambda x: ref_relu(x, f32(0.3)), normal, 0.01),
    ("ReLU", "relu_param { negative_slope: -0.7 }", lambda x: ref_relu(x, f32(-0.7)), normal,
     0.01),
    ("ELU", "", lambda x: ref_elu(x), normal, 0.01),
    ("ELU", "elu_param { alpha: 0.5 }", lambda x: ref_elu(x, 0.5), normal, 0.01),
    ("ELU", "elu_param { alpha: -0.4 }", lambda x: ref_elu(x, f32(-0.4)), normal, 0.01),
    ("Sigmoid", "", ref_sigmoid, normal, -1),
    ("TanH", "", np.tanh, normal, -1),
    ("AbsVal", "", np.abs, normal, 0.01),
    ("Power", "", lambda x: ref_power(x), normal, -1),
    ("Power", "power_param { power: 2 scale: 0.5 shift: -1 }",
     lambda x: ref_power(x, 2, 0.5, -1), normal, -1),
    ("Power", "power_param { power: 3 scale: -0.5 shift: 0.2 }",
     lambda x: ref_power(x, 3, -0.5, f32(0.2)), normal, -1),
    ("Power", "power_param { power: 0.37 scale: 0.83 shift: 1 }",
     lambda x: ref_power(x, f32(0.37), f32(0.83), 1), positive, -1),
    ("Power", "power_param { power: -1.5 }", lambda x: ref_power(x, -1.5), positive, -1),
    ("Power", "power_param { power: 1 scale: 2 shift: 3 }",
     lambda x: ref_power(x, 1, 2, 3), normal, -1),
    ("Power", "power_param { power: 0 scale: 2 shift: 3 }",
     lambda x: np.ones_like(x), normal, -1),
    ("Power", "power_param { power: 2.5 scale: 0 shift: 3 }",
     lambda x: np.full_like(x, 3 ** 2.5), normal, -1),
    ("Exp", "", lambda x: np.exp(x), normal, -1),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }",
     lambda x: ref_exp(x, 2, 0.5, 1), normal, -1),
    ("Exp", "exp_param { base: 0.5 scale: -1.5 shift: -0.3 }",
     lambda x: ref_exp(x, 0.5, -1.5, f32(-0.3)), normal, -1),
    ("Exp", "exp_param { shift: 0.7 }", lambda x: ref_exp(x, -1, 1, f32(0.7)), normal, -1),
    ("Log", "", lambda x: np.log(x), positive, -1),
    ("Log", "log_param { base: 2 scale: 0.5 shift: 1 }",
     lambda x: ref_log(x, 2, 0.5, 1), positive, -1),
    ("Log", "log_param { base: 10 scale: -2 shift: 6 }",
     lambda x: ref_log(x, 10, -2, 6), positive, -1),
    ("BNLL", "", ref_bnll, normal, -1),
    ("Swish", "", ref_swish, normal, -1),
    ("Swish", "swish_param { beta: 0.5 }", lambda x: ref_swish(x, 0.5), normal, -1),
    ("Swish", "swish_param { beta: 2.5 }", lambda x: ref_swish(x, 2.5), normal, -1),
    ("Clip", "clip_param { min: -0.5 max: 0.5 }",
     lambda x: np.minimum(np.maximum(x, -0.5), 0.5), normal, 0.02),
]
CASE_IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("shape", SHAPES[:2])
def test_forward_matches_reference(case, shape):
    typ, params, ref, maker, _ = case
    x = maker(np.random.default_rng(3), shape)
    layer = make_layer(typ, params)
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    assert top[0].shape == shape
    assert top[0].data.dtype == np.float64
    np.testing.assert_allclose(top[0].data, ref(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(bottom[0].data, x)   # input untouched


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_float32_and_in_place(case):
    typ, params, ref, maker, _ = case
    x = maker(np.random.default_rng(5), (2, 3, 4))
    want = ref(x)
    layer = make_layer(typ, params, dtype=np.float32)
    bottom = make_blobs([x.copy()], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, want, rtol=2e-5, atol=2e-6)
    # in place gives the same values
    layer = make_layer(typ, params, dtype=np.float32)
    blob = make_blobs([x.copy()], dtype=np.float32)
    layer.setup(blob, blob)
    layer.forward(blob, blob)
    np.testing.assert_array_equal(blob[0].data, top[0].data)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("in_place", [False, True])
def test_gradient(case, in_place):
    typ, params, _, maker, kink = case
    for k, shape in enumerate(SHAPES if not in_place else SHAPES[1:]):
        x = maker(np.random.default_rng(10 + k), shape)
        if typ == "Clip":   # keep away from both clip points
            x = np.where(np.abs(np.abs(x) - 0.5) < 0.02, x + 0.05, x)
        layer = make_layer(typ, params)
        bottom = make_blobs([x.copy()])
        top = bottom if in_place else [Blob((), np.float64)]
        GradientChecker(kink=0.0, kink_range=kink).check(layer, bottom, top)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_in_place_backward_equals_out_of_place(case):
    typ, params, _, maker, _ = case
    x = maker(np.random.default_rng(21), (2, 3, 5))
    dy = np.random.default_rng(22).standard_normal(x.shape)

    layer = make_layer(typ, params)
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)

    layer2 = make_layer(typ, params)
    blob = make_blobs([x.copy()])
    layer2.setup(blob, blob)
    layer2.forward(blob, blob)
    blob[0].diff[...] = dy
    layer2.backward(blob, [True], blob)
    np.testing.assert_allclose(blob[0].diff, bottom[0].diff, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("typ,params", [("ReLU", ""), ("Sigmoid", ""), ("Power", ""),
                                        ("Clip", "clip_param { min: 0 max: 1 }")])
def test_propagate_down_false_leaves_diff(typ, params):
    layer = make_layer(typ, params)
    bottom = make_blobs([(2, 3)])
    top = run_forward(layer, bottom)
    bottom[0].diff[...] = 7.0
    top[0].diff[...] = 1.0
    layer.backward(top, [False], bottom)
    assert np.all(bottom[0].diff == 7.0)


def test_flops_positive():
    for typ, params, _, maker, _ in CASES:
        layer = make_layer(typ, params)
        bottom = make_blobs([maker(np.random.default_rng(0), (2, 3, 4))])
        top = run_forward(layer, bottom)
        f = layer.flops(bottom, top)
        assert isinstance(f, int) and f >= 0
    layer = make_layer("ReLU")
    bottom = make_blobs([(2, 3, 4)])
    assert layer.flops(bottom, run_forward(layer, bottom)) == 24


# --------------------------------------------------------------------------------------------
# special points

def test_relu_backward_at_zero_uses_slope():
    layer = make_layer("ReLU", "relu_param { negative_slope: 0.25 }")
    bottom = make_blobs([np.array([[-1.0, 0.0, 2.0]])])
    top = run_forward(layer, bottom)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[0.25, 0.25, 1.0]])


def test_abs_sign_and_clip_boundaries():
    layer = make_layer("AbsVal")
    bottom = make_blobs([np.array([[-2.0, 0.0, 3.0]])])
    top = run_forward(layer, bottom)
    top[0].diff[...] = 2.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[-2.0, 0.0, 2.0]])

    # Caffe: the gradient passes where min <= x <= max (boundaries included)
    layer = make_layer("Clip", "clip_param { min: -1 max: 2 }")
    x = np.array([[-3.0, -1.0, 0.5, 2.0, 5.0]])
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, [[-1.0, -1.0, 0.5, 2.0, 2.0]])
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[0.0, 3.0, 3.0, 3.0, 0.0]])
    # same in place (needs the kept input: the output alone cannot tell -1 from -3)
    blob = make_blobs([x.copy()])
    layer = make_layer("Clip", "clip_param { min: -1 max: 2 }")
    layer.setup(blob, blob)
    layer.forward(blob, blob)
    blob[0].diff[...] = 3.0
    layer.backward(blob, [True], blob)
    np.testing.assert_array_equal(blob[0].diff, [[0.0, 3.0, 3.0, 3.0, 0.0]])


def test_extreme_inputs_are_finite():
    x = np.array([[-1000.0, -60.0, -1e-8, 0.0, 1e-8, 60.0, 1000.0]])
    for typ, ref in [("Sigmoid", ref_sigmoid), ("BNLL", None), ("Swish", None), ("ELU", None),
                     ("TanH", np.tanh)]:
        for dtype in (np.float32, np.float64):
            layer = make_layer(typ, dtype=dtype)
            bottom = make_blobs([x.copy()], dtype=dtype)
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                top = run_forward(layer, bottom)
                top[0].diff[...] = 1.0
                layer.backward(top, [True], bottom)
            assert np.all(np.isfinite(top[0].data)), typ
            assert np.all(np.isfinite(bottom[0].diff)), typ
            if ref is not None:
                np.testing.assert_allclose(top[0].data, ref(x), rtol=1e-6, atol=1e-30)
    # BNLL: log(1 + e^x) never overflows; the gradient uses e^min(x, 50)
    layer = make_layer("BNLL")
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data[0, 5:], [60.0, 1000.0])
    np.testing.assert_allclose(top[0].data[0, 0], 0.0, atol=1e-300)
    np.testing.assert_allclose(top[0].data[0, 3], math.log(2.0))
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff[0, 3], 0.5)
    np.testing.assert_allclose(bottom[0].diff[0, 5:], math.exp(50) / (math.exp(50) + 1))


def test_power_special_cases_gradient_values():
    # power 1: constant gradient scale; power*scale == 0: zero gradient
    for params, grad in [("power_param { power: 1 scale: 2.5 shift: -1 }", 2.5),
                         ("power_param { power: 0 scale: 2 }", 0.0),
                         ("power_param { power: 3 scale: 0 shift: 2 }", 0.0)]:
        layer = make_layer("Power", params)
        bottom = make_blobs([(2, 4)])
        top = run_forward(layer, bottom)
        top[0].diff[...] = 2.0
        bottom[0].diff[...] = 9.0
        layer.backward(top, [True], bottom)
        np.testing.assert_allclose(bottom[0].diff, 2.0 * grad)
    layer = make_layer("Power", "power_param { power: 3 scale: 0 shift: 2 }")
    top = run_forward(layer, make_blobs([(3,)]))
    np.testing.assert_array_equal(top[0].data, [8.0, 8.0, 8.0])


# --------------------------------------------------------------------------------------------
# Threshold

def test_threshold_forward_and_no_gradient():
    x = np.array([[-1.0, 0.0, 0.3, 0.5, 0.7, 2.0]])
    for t, want in [(0.0, [0, 0, 1, 1, 1, 1]), (0.5, [0, 0, 0, 0, 1, 1])]:
        for dtype in (np.float32, np.float64):
            layer = make_layer("Threshold", f"threshold_param {{ threshold: {t} }}", dtype=dtype)
            bottom = make_blobs([x.copy()], dtype=dtype)
            top = run_forward(layer, bottom)
            assert top[0].data.dtype == dtype
            np.testing.assert_array_equal(top[0].data, [want])
            blob = make_blobs([x.copy()], dtype=dtype)
            layer.setup(blob, blob)
            layer.forward(blob, blob)
            np.testing.assert_array_equal(blob[0].data, [want])
    layer = make_layer("Threshold")
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    assert not layer.allow_force_backward(0)
    layer.backward(top, [False], bottom)   # nothing asked: fine
    with pytest.raises(ConfigError, match="no gradient"):
        layer.backward(top, [True], bottom)


# --------------------------------------------------------------------------------------------
# PReLU

@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 3), (2, 5, 6)])
def test_prelu_forward_default_slope(shared, shape):
    layer = make_layer("PReLU", f"prelu_param {{ channel_shared: {str(shared).lower()} }}")
    x = np.random.default_rng(1).standard_normal(shape)
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    assert len(layer.blobs) == 1
    assert layer.blobs[0].shape == (() if shared else (shape[1],))  # Caffe: a 0-axis blob
    np.testing.assert_array_equal(layer.blobs[0].data, 0.25)
    np.testing.assert_allclose(top[0].data, ref_prelu(x, layer.blobs[0].data, shared),
                               rtol=1e-14)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("in_place", [False, True])
def test_prelu_gradient(shared, in_place):
    params = (f"prelu_param {{ channel_shared: {str(shared).lower()} "
              f"filler {{ type: 'uniform' min: -1.2 max: 1.5 }} }}")
    for k, shape in enumerate([(2, 3, 4, 5), (5, 4), (2, 3, 6)]):
        layer = make_layer("PReLU", params, seed=40 + k)
        x = np.random.default_rng(30 + k).standard_normal(shape)
        bottom = make_blobs([x.copy()])
        top = bottom if in_place else [Blob((), np.float64)]
        layer.setup(bottom, top)
        slopes = layer.blobs[0].data.copy()
        assert len(np.unique(slopes)) == slopes.size   # the filler was used
        layer.forward(bottom, top)
        np.testing.assert_allclose(top[0].data, ref_prelu(x, slopes, shared), rtol=1e-14)
        bottom[0].data[...] = x
        # NB: GradientChecker does not restore in-place bottoms between the +step and -step
        # forwards of a *parameter* element, so in place the slope is checked against the
        # (gradient-checked) out-of-place layer instead.
        GradientChecker(kink=0.0, kink_range=0.01).check(layer, bottom, top, setup=False,
                                                         check_params=not in_place)
        if in_place:
            ref = make_layer("PReLU", params, seed=40 + k)
            rb = make_blobs([x.copy()])
            rt = run_forward(ref, rb)
            bottom[0].data[...] = x
            layer.forward(bottom, top)
            dy = np.random.default_rng(k).standard_normal(shape)
            rt[0].diff[...] = dy
            top[0].diff[...] = dy
            ref.blobs[0].diff[...] = 0
            layer.blobs[0].diff[...] = 0
            ref.backward(rt, [True], rb)
            layer.backward(top, [True], bottom)
            np.testing.assert_allclose(layer.blobs[0].diff, ref.blobs[0].diff, rtol=1e-12)
            np.testing.assert_allclose(bottom[0].diff, rb[0].diff, rtol=1e-12)


def test_prelu_param_gradient_values_and_accumulation():
    x = np.array([[[1.0, -2.0], [-3.0, 4.0]], [[-1.0, -1.0], [0.5, -0.5]]])  # (2, 2, 2)
    dy = np.array([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    layer = make_layer("PReLU", "prelu_param { filler { type: 'constant' value: 0.1 } }")
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 0
    layer.backward(top, [True], bottom)
    # channel 0: x<=0 at (0,0,1) dy 2 x -2; (1,0,0) dy 5 x -1; (1,0,1) dy 6 x -1 → -4-5-6
    # channel 1: (0,1,0) dy 3 x -3; (1,1,1) dy 8 x -0.5 → -9-4
    np.testing.assert_allclose(layer.blobs[0].diff, [-15.0, -13.0])
    np.testing.assert_allclose(bottom[0].diff, np.where(x > 0, dy, 0.1 * dy))
    layer.backward(top, [False], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, [-30.0, -26.0])   # accumulated
    # param_propagate_down false: slope diff untouched
    layer.param_propagate_down = [False]
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, [-30.0, -26.0])


def test_prelu_float32_and_shape_only():
    x = np.random.default_rng(2).standard_normal((2, 3, 4)).astype(np.float32)
    layer = make_layer("PReLU", dtype=np.float32)
    bottom = make_blobs([x.copy()], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32 and layer.blobs[0].dtype == np.float32
    np.testing.assert_allclose(top[0].data, ref_prelu(x.astype(np.float64), [0.25] * 3, False),
                               rtol=1e-6)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.dtype == np.float32 and layer.blobs[0].diff.dtype == np.float32
    np.testing.assert_allclose(bottom[0].diff, np.where(x > 0, 1.0, 0.25))
    np.testing.assert_allclose(layer.blobs[0].diff,
                               np.minimum(x, 0).astype(np.float64).sum(axis=(0, 2)), rtol=1e-5)
    # shape inference only: no data touched, blob shapes still right
    layer = make_layer("PReLU", init_params=False)
    bottom = [Blob((2, 7, 3), np.float64)]
    top = [Blob((), np.float64)]
    layer.setup(bottom, top)
    assert layer.blobs[0].shape == (7,)
    assert top[0].shape == (2, 7, 3)
    assert not bottom[0].allocated and not top[0].allocated and not layer.blobs[0].allocated


def test_prelu_errors():
    layer = make_layer("PReLU")
    with pytest.raises(ShapeError, match="at least 2 axes"):
        layer.setup([Blob((5,), np.float64)], [Blob((), np.float64)])
    layer = make_layer("PReLU")
    run_forward(layer, make_blobs([(2, 3, 4)]))
    with pytest.raises(ShapeError, match="channels"):
        layer.reshape([Blob((2, 4, 4), np.float64)], [Blob((), np.float64)])


# --------------------------------------------------------------------------------------------
# Dropout

@pytest.mark.parametrize("ratio", [0.5, 0.2, 0.8])
def test_dropout_train_statistics(ratio):
    layer = make_layer("Dropout", f"dropout_param {{ dropout_ratio: {ratio} }}", phase=TRAIN)
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=(20, 50, 20))
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    y = top[0].data
    zeros = np.mean(y == 0)
    assert abs(zeros - ratio) < 0.02
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1.0 - f32(ratio)), rtol=1e-6)
    # a new forward draws a new mask
    layer.forward(bottom, top)
    assert not np.array_equal(top[0].data != 0, kept)
    # backward: the same mask and scale
    mask = top[0].data != 0
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, mask / (1.0 - f32(ratio)), rtol=1e-6)


def test_dropout_test_identity_and_ratio_zero():
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    layer = make_layer("Dropout", phase=TEST)
    bottom = make_blobs([x.copy()])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, x)
    top[0].diff[...] = 2.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 2.0)
    assert layer.flops(bottom, top) == 0
    blob = make_blobs([x.copy()])
    layer.setup(blob, blob)
    layer.forward(blob, blob)
    np.testing.assert_array_equal(blob[0].data, x)
    # ratio 0 in TRAIN keeps everything
    layer = make_layer("Dropout", "dropout_param { dropout_ratio: 0 }", phase=TRAIN)
    np.testing.assert_array_equal(run_forward(layer, make_blobs([x.copy()]))[0].data, x)


def test_dropout_float32_and_seeded():
    x = np.ones((4, 100), dtype=np.float32)
    a = run_forward(make_layer("Dropout", phase=TRAIN, dtype=np.float32, seed=7),
                    make_blobs([x.copy()], dtype=np.float32))[0].data
    b = run_forward(make_layer("Dropout", phase=TRAIN, dtype=np.float32, seed=7),
                    make_blobs([x.copy()], dtype=np.float32))[0].data
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 2.0}


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("ratio", [0.5, 0.3])
def test_dropout_gradient_train(in_place, ratio):
    for k, shape in enumerate([(2, 3, 4), (5, 6)]):
        layer = make_layer("Dropout", f"dropout_param {{ dropout_ratio: {ratio} }}",
                           phase=TRAIN)
        bottom = make_blobs([shape], seed=k)
        top = bottom if in_place else [Blob((), np.float64)]
        GradientChecker().check(layer, bottom, top)


# --------------------------------------------------------------------------------------------
# configuration errors

@pytest.mark.parametrize("typ,params,field", [
    ("Dropout", "dropout_param { dropout_ratio: 1 }", "dropout_param.dropout_ratio"),
    ("Dropout", "dropout_param { dropout_ratio: 1.5 }", "dropout_param.dropout_ratio"),
    ("Dropout", "dropout_param { dropout_ratio: -0.1 }", "dropout_param.dropout_ratio"),
    ("Exp", "exp_param { base: 0 }", "exp_param.base"),
    ("Exp", "exp_param { base: -2 }", "exp_param.base"),
    ("Exp", "exp_param { base: inf }", "exp_param.base"),
    ("Log", "log_param { base: 0 }", "log_param.base"),
    ("Log", "log_param { base: -0.5 }", "log_param.base"),
    ("Log", "log_param { base: 1 }", "log_param.base"),
    ("Clip", "clip_param { min: 2 max: 1 }", "clip_param.min"),
    ("Clip", "clip_param { min: 2 }", "clip_param.max"),
    ("Clip", "", "clip_param.min"),
])
def test_config_errors(typ, params, field):
    # a non-finite number is refused as the definition is read, the rest at setup
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer(typ, params), make_blobs([(2, 3)]))
    assert e.value.field == field
    assert e.value.layer == "test"


def test_valid_edge_configs():
    # base 1 is fine for Exp (constant output), min == max is fine for Clip
    top = run_forward(make_layer("Exp", "exp_param { base: 1 shift: 2 }"), make_blobs([(2, 3)]))
    np.testing.assert_allclose(top[0].data, 1.0)
    top = run_forward(make_layer("Clip", "clip_param { min: 0.5 max: 0.5 }"),
                      make_blobs([(2, 3)]))
    np.testing.assert_allclose(top[0].data, 0.5)


@pytest.mark.parametrize("typ", ["ReLU", "Sigmoid", "Dropout", "PReLU", "BNLL"])
def test_blob_counts(typ):
    layer = make_layer(typ)
    with pytest.raises(ConfigError):
        layer.setup(make_blobs([(2, 3), (2, 3)]), [Blob(), Blob()])
    assert layer.allow_in_place
