"""Utility layers (Softmax, Concat, Slice, Split, Eltwise, Flatten, Reshape, Crop, Tile,
Reduction, Silence, ArgMax, Filter, BatchReindex, Parameter): forward against the float64
references of layer_refs (written from Caffe's definitions, never by calling the layer),
Caffe's gradient checker on every differentiable bottom, analytic backward values, views,
Caffe's tie rules, float32 runs and the configuration / shape errors."""
import textwrap

import numpy as np
import pytest

from layer_refs import (argmax_ref, concat_ref, crop_ref, eltwise_ref, reduction_ref,
                        slice_ref, softmax_ref, tile_ref)
from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

RNG = np.random.default_rng(20240611)


def tops(n=1, dtype=np.float64):
    return [Blob((), dtype=dtype, name=f"t{i}") for i in range(n)]


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def gradcheck(layer, bottom, top, **kw):
    """Caffe's checker (step 1e-2, threshold 1e-3); returns the worst scaled error."""
    return GradientChecker().check(layer, bottom, top, **kw)


def check_grad(layer, bottom, ntop=1, **kw):
    return GradientChecker().check(layer, bottom, tops(ntop), **kw)


def f32(v):
    return float(np.float32(v))


def shape_param(*dims):
    return "shape { " + " ".join(f"dim: {d}" for d in dims) + " }"


# --------------------------------------------------------------------------------------------
# Softmax

@pytest.mark.parametrize("shape,params,axis", [
    ((2, 5), "", 1),                       # default axis: channels
    ((2, 3, 2, 2), "", 1),
    ((2, 5), "softmax_param { axis: 1 }", 1),
    ((3, 5), "softmax_param { axis: 1 }", 1),
    ((2, 4, 3), "softmax_param { axis: 1 }", 1),
    ((2, 3, 2, 3), "softmax_param { axis: 1 }", 1),
    ((2, 4, 2, 3), "softmax_param { axis: 1 }", 1),
    ((2, 3, 4), "softmax_param { axis: 2 }", 2),
    ((2, 3, 4, 2), "softmax_param { axis: 2 }", 2),
    ((2, 3, 4), "softmax_param { axis: -1 }", 2),
    ((3, 2, 4), "softmax_param { axis: -1 }", 2),
    ((3, 2, 2), "softmax_param { axis: 0 }", 0),
    ((4, 3), "softmax_param { axis: 0 }", 0),
])
def test_softmax_forward_and_gradient(shape, params, axis):
    layer = make_layer("Softmax", params)
    bottom = make_blobs([rand(shape, len(shape) + axis) * 3])
    top = run_forward(layer, bottom)
    assert top[0].shape == shape
    np.testing.assert_allclose(top[0].data, softmax_ref(bottom[0].data, axis), rtol=1e-12,
                               atol=1e-15)
    np.testing.assert_allclose(top[0].data.sum(axis=axis), 1.0, rtol=1e-12)
    gradcheck(layer, bottom, top)


def test_softmax_backward_formula_and_stability():
    # dx = y * (dy - sum_c dy*y): checked against the closed form on one fixed case
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 0.0]])
    layer = make_layer("Softmax")
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    dy = np.array([[0.3, -1.0, 2.0], [1.0, 1.0, -0.5]])
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    y = softmax_ref(x, 1)
    ref = y * (dy - (dy * y).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(bottom[0].diff, ref, rtol=1e-12)
    # max subtraction: huge logits stay finite and equal the shifted softmax
    topb = run_forward(make_layer("Softmax"), make_blobs([x + 1000.0]))
    assert np.all(np.isfinite(topb[0].data))
    np.testing.assert_allclose(topb[0].data, y, rtol=1e-12)
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0],
                  [0.0, 800.0, -800.0]])
    top = run_forward(make_layer("Softmax"), make_blobs([x]))
    np.testing.assert_allclose(top[0].data, softmax_ref(x - x.max(1, keepdims=True), 1),
                               rtol=1e-12)
    assert np.all(np.isfinite(top[0].data))


def test_softmax_large_inner_uses_many_blocks():
    x = rand((2, 3, 150), 2)              # several blocks of inner positions per item
    top = run_forward(make_layer("Softmax"), make_blobs([x.copy()]))
    np.testing.assert_allclose(top[0].data, softmax_ref(x, 1), rtol=1e-12)


def test_softmax_float32_and_errors():
    layer = make_layer("Softmax", "softmax_param { axis: 2 }", dtype=np.float32)
    bottom = make_blobs([(2, 3, 4)], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, softmax_ref(bottom[0].data, 2), rtol=1e-5)
    with pytest.raises(ConfigError, match="axis") as e:
        run_forward(make_layer("Softmax", "softmax_param { axis: 3 }"), make_blobs([(2, 3, 4)]))
    assert e.value.field == "softmax_param.axis"


# --------------------------------------------------------------------------------------------
# Concat

@pytest.mark.parametrize("params,axis,shapes", [
    ("", 1, [(2, 3, 2), (2, 1, 2), (2, 2, 2)]),
    ("concat_param { axis: 0 }", 0, [(1, 3, 2), (2, 3, 2), (3, 3, 2)]),
    ("concat_param { axis: 0 }", 0, [(1, 2, 3), (2, 2, 3), (1, 2, 3)]),
    ("concat_param { axis: 1 }", 1, [(2, 2, 1, 2), (2, 1, 1, 2), (2, 3, 1, 2)]),
    ("concat_param { axis: 1 }", 1, [(2, 1, 3), (2, 3, 3), (2, 2, 3)]),
    ("concat_param { axis: -1 }", 2, [(2, 2, 1), (2, 2, 3), (2, 2, 2)]),
    ("concat_param { axis: -1 }", 2, [(2, 3, 1), (2, 3, 4)]),
    ("concat_param { concat_dim: 0 }", 0, [(2, 3), (1, 3), (3, 3)]),     # legacy
    ("concat_param { concat_dim: 0 }", 0, [(3, 2), (1, 2)]),
    ("concat_param { concat_dim: 1 }", 1, [(2, 1, 2), (2, 2, 2), (2, 1, 2)]),
    ("concat_param { concat_dim: 1 }", 1, [(2, 3), (2, 2)]),
])
def test_concat(params, axis, shapes):
    layer = make_layer("Concat", params)
    bottom = make_blobs(shapes, seed=7)
    top = run_forward(layer, bottom)
    ref = concat_ref([b.data for b in bottom], axis)
    assert top[0].shape == ref.shape
    np.testing.assert_array_equal(top[0].data, ref)
    # backward: bottom k receives exactly its slab of the top diff
    dy = RNG.standard_normal(top[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [True] * len(bottom), bottom)
    off = 0
    for b in bottom:
        n = b.shape[axis]
        np.testing.assert_array_equal(b.diff, np.take(dy, range(off, off + n), axis=axis))
        off += n
    gradcheck(layer, bottom, top)


def test_concat_single_bottom_shares_data_and_diff():
    bottom = make_blobs([(2, 3)])
    layer = make_layer("Concat")
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, bottom[0].data)
    bottom[0].data[0, 0] = 42.0
    assert top[0].data[0, 0] == 42.0
    top[0].diff[...] = 7.0
    layer.backward(top, [True], bottom)
    assert np.all(bottom[0].diff == 7.0)


def test_concat_propagate_down_subset_and_float32():
    bottom = make_blobs([(2, 1), (2, 2)])
    layer = make_layer("Concat")
    top = run_forward(layer, bottom)
    bottom[0].diff[...] = -5.0
    top[0].diff[...] = np.arange(6.0).reshape(2, 3)
    layer.backward(top, [False, True], bottom)
    assert np.all(bottom[0].diff == -5.0)
    np.testing.assert_array_equal(bottom[1].diff, [[1, 2], [4, 5]])
    layer = make_layer("Concat", dtype=np.float32)
    bottom = make_blobs([(2, 1, 3), (2, 2, 3), (2, 1, 3)], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, concat_ref([b.data for b in bottom], 1))
    for b in bottom:
        b.diff[...] = 7.0
    top[0].diff[...] = 1.0
    layer.backward(top, [False, True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 7.0)     # untouched
    np.testing.assert_array_equal(bottom[1].diff, 1.0)
    np.testing.assert_array_equal(bottom[2].diff, 7.0)


def test_concat_errors():
    with pytest.raises(ShapeError, match="must agree") as e:
        run_forward(make_layer("Concat"), make_blobs([(2, 3, 2), (2, 3, 3)]))
    assert "[2, 3, 3]" in str(e.value) and "[2, 3, 2]" in str(e.value)
    with pytest.raises(ShapeError, match="must agree"):
        run_forward(make_layer("Concat", "concat_param { axis: 0 }"),
                    make_blobs([(2, 3, 2), (3, 3, 3)]))
    with pytest.raises(ShapeError) as e:
        run_forward(make_layer("Concat"), make_blobs([(2, 3, 4), (2, 1, 4), (2, 2, 5)]))
    msg = str(e.value)
    assert "bottom 2" in msg and "[2, 2, 5]" in msg and "[2, 3, 4]" in msg
    with pytest.raises(ShapeError, match="must agree"):      # batch differs on axis 1 concat
        run_forward(make_layer("Concat"), make_blobs([(2, 3), (3, 3)]))
    with pytest.raises(ShapeError, match="bottom 1"):         # number of axes differs
        run_forward(make_layer("Concat"), make_blobs([(2, 3, 4), (2, 3)]))
    with pytest.raises(ShapeError, match="must agree"):
        run_forward(make_layer("Concat"), make_blobs([(2, 3), (2, 3, 1)]))
    with pytest.raises(ConfigError, match="not both"):
        run_forward(make_layer("Concat", "concat_param { axis: 1 concat_dim: 1 }"),
                    make_blobs([(2, 3), (2, 3)]))
    for params, field in (("concat_dim: 2", "concat_param.concat_dim"),
                          ("axis: -3", "concat_param.axis")):
        with pytest.raises(ConfigError, match="out of range") as e:
            run_forward(make_layer("Concat", f"concat_param {{ {params} }}"),
                        make_blobs([(2, 3), (2, 3)]))
        assert e.value.field == field


# --------------------------------------------------------------------------------------------
# Slice

@pytest.mark.parametrize("params,shape,axis,bounds", [
    ("slice_param { slice_point: 1 slice_point: 4 }", (2, 6, 2), 1, [0, 1, 4, 6]),
    ("slice_param { slice_point: 1 slice_point: 3 }", (2, 5, 2), 1, [0, 1, 3, 5]),
    ("", (6, 2), 1, [0, 1, 2]),                                               # equal parts
    ("slice_param { axis: 0 slice_point: 2 }", (5, 2), 0, [0, 2, 5]),
    ("slice_param { axis: 0 }", (6, 2, 3), 0, [0, 2, 4, 6]),
    ("slice_param { axis: 0 }", (4, 3), 0, [0, 2, 4]),
    ("slice_param { axis: 1 }", (2, 6, 1), 1, [0, 2, 4, 6]),                  # equal parts
    ("slice_param { axis: 1 }", (2, 6, 2), 1, [0, 2, 4, 6]),
    ("slice_param { axis: -1 }", (2, 2, 4), 2, [0, 2, 4]),                    # equal parts
    ("slice_param { axis: -1 slice_point: 2 }", (2, 3, 5), 2, [0, 2, 5]),
    ("slice_param { slice_dim: 1 slice_point: 5 }", (2, 6), 1, [0, 5, 6]),    # legacy
    ("slice_param { slice_dim: 1 slice_point: 5 }", (2, 6, 2), 1, [0, 5, 6]),
    ("slice_param { slice_dim: 0 }", (6, 2), 0, [0, 3, 6]),                   # legacy, equal
    ("slice_param { slice_dim: 0 slice_point: 3 }", (4, 2), 0, [0, 3, 4]),
])
def test_slice(params, shape, axis, bounds):
    ntop = len(bounds) - 1
    layer = make_layer("Slice", params)
    bottom = make_blobs([shape], seed=9)
    top = run_forward(layer, bottom, ntop=ntop)
    for t, r in zip(top, slice_ref(bottom[0].data, axis, bounds)):
        assert t.shape == r.shape
        np.testing.assert_array_equal(t.data, r)
    gradcheck(layer, bottom, top)


def test_slice_single_top_is_a_view():
    bottom = make_blobs([(2, 3)])
    layer = make_layer("Slice")
    top = run_forward(layer, bottom)
    bottom[0].data[1, 2] = 9.0
    assert top[0].data[1, 2] == 9.0
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    assert np.all(bottom[0].diff == 3.0)


def test_slice_backward_places_diffs():
    layer = make_layer("Slice", "slice_param { slice_point: 1 }", dtype=np.float32)
    bottom = make_blobs([(2, 3)], dtype=np.float32)
    top = run_forward(layer, bottom, ntop=2)
    assert top[1].data.dtype == np.float32
    top[0].diff[...] = 1.0
    top[1].diff[...] = 2.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[1, 2, 2], [1, 2, 2]])


@pytest.mark.parametrize("params,ntop,match", [
    ("slice_param { slice_point: 2 }", 3, "one fewer"),
    ("slice_param { slice_point: 1 slice_point: 2 slice_point: 3 }", 3, "one fewer"),
    ("slice_param { slice_point: 3 slice_point: 2 }", 3, "strictly increasing"),
    ("slice_param { slice_point: 4 slice_point: 2 }", 3, "strictly increasing"),
    ("slice_param { slice_point: 2 slice_point: 2 }", 3, "strictly increasing"),
    ("slice_param { slice_point: 0 }", 2, "strictly increasing"),
    ("slice_param { slice_point: 0 slice_point: 2 }", 3, "strictly increasing"),
    ("slice_param { slice_point: 6 }", 2, "inside"),
    ("slice_param { slice_point: 1 slice_point: 9 }", 3, "inside"),
    ("slice_param { axis: 1 slice_dim: 1 }", 2, "not both"),
    ("slice_param { slice_dim: 3 }", 2, "out of range"),
])
def test_slice_config_errors(params, ntop, match):
    with pytest.raises(ConfigError, match=match):
        run_forward(make_layer("Slice", params), make_blobs([(2, 6, 2)]), ntop=ntop)


def test_slice_shape_errors():
    with pytest.raises(NetdefError, match="slice_point") as e:
        run_forward(make_layer("Slice", "slice_param { slice_point: 7 }"),
                    make_blobs([(2, 6)]), ntop=2)
    assert "7" in str(e.value) and "6" in str(e.value)
    with pytest.raises(ShapeError, match="equal parts"):
        run_forward(make_layer("Slice"), make_blobs([(2, 5)]), ntop=2)


# --------------------------------------------------------------------------------------------
# Split

def test_split_forward_shares_and_backward_sums():
    x = rand((2, 3, 2), 7)
    bottom = make_blobs([x.copy()])
    layer = make_layer("Split")
    top = run_forward(layer, bottom, ntop=3)
    for t in top:
        np.testing.assert_array_equal(t.data, x)
    bottom[0].data[0, 0, 0] = 5.0                  # tops view the bottom's data
    assert all(t.data[0, 0, 0] == 5.0 for t in top)
    ds = [rand((2, 3, 2), 10 + k) for k in range(3)]
    for t, d in zip(top, ds):
        t.diff[...] = d
    bottom[0].diff[...] = 100.0                    # must be overwritten
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, ds[0] + ds[1] + ds[2], rtol=1e-15)
    # top diffs are left alone
    for t, d in zip(top, ds):
        np.testing.assert_array_equal(t.diff, d)


@pytest.mark.parametrize("ntop", [1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 2), (1, 2, 2, 2)])
def test_split(shape, ntop):
    layer = make_layer("Split")
    bottom = make_blobs([shape], seed=8)
    top = run_forward(layer, bottom, ntop=ntop)
    for t in top:
        assert t.shape == shape
        np.testing.assert_array_equal(t.data, bottom[0].data)
    d = [RNG.standard_normal(shape) for _ in range(ntop)]
    for t, v in zip(top, d):
        t.diff[...] = v
    bottom[0].diff[...] = 99.0                  # backward overwrites, never accumulates
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, sum(d), rtol=1e-14)
    gradcheck(layer, bottom, top)


def test_split_one_top_float32_and_bottom_reshape():
    layer = make_layer("Split", dtype=np.float32)
    bottom = make_blobs([(2, 2)], dtype=np.float32)
    top = run_forward(layer, bottom, ntop=1)
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.dtype == np.float32
    np.testing.assert_array_equal(bottom[0].diff, 3.0)
    bottom = make_blobs([(2, 3)])
    layer = make_layer("Split")
    top = run_forward(layer, bottom, ntop=2)
    bottom[0].reshape((4, 5))
    bottom[0].data = rand((4, 5), 9)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[1].shape == (4, 5)
    np.testing.assert_array_equal(top[1].data, bottom[0].data)


# --------------------------------------------------------------------------------------------
# Eltwise

def eltwise_inputs(shape=(2, 3, 2), n=3, seed=0):
    """Distinct, nonzero values of mixed sign (no ties, no zeros: MAX and unstable PROD are
    differentiable there)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    vals = rng.permutation(n * size).astype(float) / (n * size) + 0.1
    vals *= rng.choice([-1.0, 1.0], size=n * size)
    return [vals[k * size:(k + 1) * size].reshape(shape) for k in range(n)]


@pytest.mark.parametrize("params,op,coeff,n", [
    ("", "SUM", None, 2),
    ("", "SUM", None, 3),
    ("eltwise_param { coeff: 0.5 coeff: -2 }", "SUM", [0.5, -2], 2),
    ("eltwise_param { coeff: 1 coeff: 3 }", "SUM", [1, 3], 2),
    ("eltwise_param { coeff: 1 coeff: -0.5 coeff: 2 }", "SUM", [1, -0.5, 2], 3),
    ("eltwise_param { coeff: 0.5 coeff: -2 coeff: 1 }", "SUM", [0.5, -2, 1], 3),
    ("eltwise_param { coeff: 0.5 coeff: -2 coeff: 3 }", "SUM", [0.5, -2, 3], 3),
    ("eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 }", "SUM", [0.5, -2, 3], 3),
    ("eltwise_param { coeff: 1 coeff: 0 coeff: -1 }", "SUM", [1, 0, -1], 3),
    ("eltwise_param { operation: PROD }", "PROD", None, 2),
    ("eltwise_param { operation: PROD }", "PROD", None, 3),
    ("eltwise_param { operation: PROD stable_prod_grad: true }", "PROD", None, 2),
    ("eltwise_param { operation: PROD stable_prod_grad: true }", "PROD", None, 3),
    ("eltwise_param { operation: PROD stable_prod_grad: false }", "PROD", None, 2),
    ("eltwise_param { operation: PROD stable_prod_grad: false }", "PROD", None, 3),
    ("eltwise_param { operation: MAX }", "MAX", None, 2),
    ("eltwise_param { operation: MAX }", "MAX", None, 3),
    ("eltwise_param { operation: MAX coeff: 2 coeff: 3 }", "MAX", None, 2),   # Caffe ignores them
])
def test_eltwise(params, op, coeff, n):
    xs = eltwise_inputs(n=n, seed=n + len(params))
    layer = make_layer("Eltwise", params)
    bottom = make_blobs(xs)
    top = run_forward(layer, bottom)
    np.testing.assert_allclose(top[0].data, eltwise_ref(xs, op, coeff), rtol=1e-14)
    # backward: SUM scales by the coeff, PROD multiplies by the other inputs, MAX routes the
    # diff to the (unique) largest input
    dy = RNG.standard_normal(xs[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [True] * n, bottom)
    for k, b in enumerate(bottom):
        if op == "SUM":
            want = (coeff[k] if coeff else 1.0) * dy
        elif op == "PROD":
            want = dy * eltwise_ref([x for j, x in enumerate(xs) if j != k], "PROD")
        else:
            want = np.where(np.argmax(np.stack(xs), 0) == k, dy, 0.0)
        np.testing.assert_allclose(b.diff, want, rtol=1e-12, atol=1e-15)
    gradcheck(layer, bottom, top)


@pytest.mark.parametrize("coeff", [(1.0, 1.0), (0.5, -2.0)])
def test_eltwise_sum_of_two_large_float32_blobs_in_parallel(coeff):
    """The two-input SUM's parallel pass over a blob far larger than one task (several
    chunks, an odd size): numpy's float32 result, bit for bit, in place on bottom 0 too."""
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal((3, 5, 101, 67)).astype(np.float32) for _ in range(2))
    c0, c1 = (np.float32(c) for c in coeff)
    want = (a if c0 == 1 else a * c0) + (b if c1 == 1 else b * c1)
    layer = make_layer("Eltwise", f"eltwise_param {{ coeff: {coeff[0]} coeff: {coeff[1]} }}",
                       dtype=np.float32)
    bottom = make_blobs([a, b], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, want)
    from netdef.backend.cpu.utility import eltwise_sum_relu
    x = a.copy()
    eltwise_sum_relu(3, x, b, c0, c1, True, np.float32(0.0), x)     # in place, with a ReLU
    np.testing.assert_array_equal(x, np.maximum(want, 0))


def test_eltwise_max_ties_follow_caffe():
    # Caffe: bottom 1 wins a tie against bottom 0 (a > b else b); a later bottom must be
    # strictly larger than the running max to take over
    for (a, b, c), fwd, diffs in (
            (([1.0, 2.0, 3.0, 0.0], [1.0, 1.0, 3.0, 0.0], [1.0, 5.0, 0.0, 0.0]), [1, 5, 3, 0],
             ([0, 0, 0, 0], [10, 0, 30, 40], [0, 20, 0, 0])),
            (([1.0, 2.0, 5.0, 0.0], [1.0, 3.0, 4.0, 0.0], [0.0, 3.0, 5.0, 0.0]), [1, 3, 5, 0],
             ([0, 0, 30, 0], [10, 20, 0, 40], [0, 0, 0, 0]))):
        bottom = make_blobs([np.array(a), np.array(b), np.array(c)])
        layer = make_layer("Eltwise", "eltwise_param { operation: MAX }")
        top = run_forward(layer, bottom)
        np.testing.assert_array_equal(top[0].data, fwd)
        top[0].diff[...] = [10.0, 20.0, 30.0, 40.0]
        layer.backward(top, [True, True, True], bottom)
        for bl, d in zip(bottom, diffs):
            np.testing.assert_array_equal(bl.diff, d)


def test_eltwise_prod_gradient_formulas_at_zeros():
    xs = [np.array([2.0, -4.0]), np.array([3.0, 0.5])]
    bottom = make_blobs(xs)
    layer = make_layer("Eltwise", "eltwise_param { operation: PROD stable_prod_grad: false }")
    top = run_forward(layer, bottom)
    top[0].diff[...] = [1.0, 2.0]
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[0].diff, [3.0, 1.0])
    np.testing.assert_allclose(bottom[1].diff, [2.0, -8.0])
    xs = [np.array([[0.0, 2.0], [3.0, -1.0]]), np.array([[4.0, 0.5], [0.0, 2.0]])]
    layer = make_layer("Eltwise", "eltwise_param { operation: PROD }")   # stable by default
    bottom = make_blobs(xs)
    top = run_forward(layer, bottom)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, xs[1])    # d(ab)/da = b, even where a = 0
    np.testing.assert_array_equal(bottom[1].diff, xs[0])


def test_eltwise_float32():
    xs = eltwise_inputs(n=2)
    for params, op in (("", "SUM"), ("eltwise_param { operation: PROD }", "PROD"),
                       ("eltwise_param { operation: MAX }", "MAX")):
        layer = make_layer("Eltwise", params, dtype=np.float32)
        top = run_forward(layer, make_blobs(xs, dtype=np.float32))
        assert top[0].data.dtype == np.float32
        np.testing.assert_allclose(top[0].data, eltwise_ref(xs, op), rtol=1e-6)


def test_eltwise_errors():
    with pytest.raises(ConfigError, match="one coeff per bottom") as e:
        run_forward(make_layer("Eltwise", "eltwise_param { coeff: 1 coeff: 2 }"),
                    make_blobs([(2, 2)] * 3))
    assert e.value.field == "eltwise_param.coeff"
    assert "2 coeff" in str(e.value) and "3 bottoms" in str(e.value)
    with pytest.raises(ConfigError, match="coeff"):
        run_forward(make_layer("Eltwise", "eltwise_param { coeff: 1 }"), make_blobs([(2,), (2,)]))
    with pytest.raises(ConfigError, match="SUM"):
        run_forward(make_layer("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 2 }"),
                    make_blobs([(2, 2)] * 2))
    with pytest.raises(ShapeError, match=r"bottom 1 has shape \[2, 3\]"):
        run_forward(make_layer("Eltwise"), make_blobs([(2, 2), (2, 3)]))
    with pytest.raises(ShapeError, match="equal shapes"):
        run_forward(make_layer("Eltwise"), make_blobs([(2, 3), (3, 2)]))
    with pytest.raises(ShapeError, match="shape"):
        run_forward(make_layer("Eltwise"), make_blobs([(2,), (3,)]))
    with pytest.raises(ConfigError, match="at least 2 bottoms"):
        run_forward(make_layer("Eltwise"), make_blobs([(2, 2)]))


# --------------------------------------------------------------------------------------------
# Flatten and Reshape (views of the bottom)

@pytest.mark.parametrize("params,shape,expect", [
    ("", (2, 3, 4, 2), (2, 24)),
    ("flatten_param { axis: 2 }", (2, 3, 4, 2), (2, 3, 8)),
    ("flatten_param { axis: 1 end_axis: 2 }", (2, 3, 4, 2), (2, 12, 2)),
    ("flatten_param { axis: 1 end_axis: 2 }", (2, 3, 4, 5), (2, 12, 5)),
    ("flatten_param { axis: 0 end_axis: 1 }", (2, 3, 4), (6, 4)),
    ("flatten_param { axis: 0 end_axis: -2 }", (2, 3, 4, 2), (24, 2)),
    ("flatten_param { axis: 0 }", (2, 3, 4), (24,)),
    ("flatten_param { axis: 0 }", (3,), (3,)),
    ("flatten_param { axis: -1 }", (2, 3, 4, 2), (2, 3, 4, 2)),
    ("flatten_param { axis: -3 end_axis: -2 }", (2, 3, 4, 2), (2, 12, 2)),
    ("flatten_param { axis: 1 end_axis: 1 }", (2, 3, 4), (2, 3, 4)),
])
def test_flatten(params, shape, expect):
    layer = make_layer("Flatten", params)
    bottom = make_blobs([shape], seed=30)
    top = run_forward(layer, bottom)
    assert top[0].shape == expect
    # row-major order is kept: element i of the flat view is element i of the bottom
    np.testing.assert_array_equal(top[0].data, bottom[0].data.reshape(expect))
    gradcheck(layer, bottom, top)
    bottom[0].data.reshape(-1)[-1] = 123.0         # a view, no copy
    assert top[0].data.reshape(-1)[-1] == 123.0


def test_flatten_errors():
    with pytest.raises(ConfigError, match="out of range") as e:
        run_forward(make_layer("Flatten", "flatten_param { axis: 4 }"), make_blobs([(2, 3, 4)]))
    assert e.value.field == "flatten_param.axis"
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Flatten", "flatten_param { axis: 4 }"), make_blobs([(2, 3)]))
    assert e.value.field == "flatten_param.axis"
    with pytest.raises(ConfigError, match="end_axis") as e:
        run_forward(make_layer("Flatten", "flatten_param { axis: 2 end_axis: 1 }"),
                    make_blobs([(2, 3, 4)]))
    assert e.value.field == "flatten_param.end_axis"


# expected shapes from Caffe's reshape tests and its documented rules
@pytest.mark.parametrize("shape,params,expect", [
    ((2, 3, 6, 5), shape_param(6, 2, 3, 5), (6, 2, 3, 5)),
    ((2, 3, 6, 5), shape_param(0, -1), (2, 90)),
    ((2, 3, 4, 2), shape_param(0, -1), (2, 24)),
    ((2, 3, 4, 5), shape_param(0, -1, 2), (2, 30, 2)),
    ((2, 3, 2, 2), shape_param(0, -1, 2), (2, 6, 2)),
    ((2, 3, 4), shape_param(-1, 4), (6, 4)),
    ((2, 3, 6, 5), shape_param(0, 3, 0, -1), (2, 3, 6, 5)),
    ((2, 3, 6, 5), shape_param(-1, 0, 5), (12, 3, 5)),
    ((2, 3, 6, 5), shape_param(0, 0, 0, 0), (2, 3, 6, 5)),
    ((2, 3, 4, 2), shape_param(0, 2, -1, 0), (2, 2, 6, 2)),
    ((2, 3, 4), shape_param(6, 4), (6, 4)),
    # axis / num_axes: replace a range of axes
    ((2, 3, 6, 5), shape_param(1, 1) + " axis: 1 num_axes: 0", (2, 1, 1, 3, 6, 5)),
    ((2, 3, 6, 5), shape_param(1) + " axis: -1 num_axes: 0", (2, 3, 6, 5, 1)),
    ((2, 3), shape_param(1) + " axis: -1 num_axes: 0", (2, 3, 1)),
    ((2, 3), shape_param(1, 1) + " axis: 0 num_axes: 0", (1, 1, 2, 3)),
    ((2, 3), shape_param(1) + " axis: 1 num_axes: 0", (2, 1, 3)),
    ((2, 3, 6, 5), shape_param(-1) + " axis: 1 num_axes: 2", (2, 18, 5)),
    ((2, 3, 4, 2), shape_param(-1) + " axis: 1 num_axes: 2", (2, 12, 2)),
    ((2, 3, 6, 5), shape_param(3, 2) + " axis: 2 num_axes: 1", (2, 3, 3, 2, 5)),
    ((2, 3, 4), shape_param(1, 3) + " axis: 1 num_axes: 1", (2, 1, 3, 4)),
    ((2, 4, 5), shape_param(2, 2) + " axis: 1 num_axes: 1", (2, 2, 2, 5)),
    ((2, 3, 6, 5), shape_param(-1) + " axis: 0", (180,)),
    ((2, 3, 4, 2), shape_param(0, -1) + " axis: 1", (2, 3, 8)),
    # negative axis: start = num_axes + axis + 1, so -2 replaces only the last axis
    ((2, 8), shape_param(2, 2, 2) + " axis: -2", (2, 2, 2, 2)),
    ((2, 3, 4), shape_param(2, -1) + " axis: -2", (2, 3, 2, 2)),
])
def test_reshape(shape, params, expect):
    layer = make_layer("Reshape", f"reshape_param {{ {params} }}")
    bottom = make_blobs([shape], seed=32)
    top = run_forward(layer, bottom)
    assert top[0].shape == expect
    np.testing.assert_array_equal(top[0].data, bottom[0].data.reshape(expect))
    gradcheck(layer, bottom, top)
    bottom[0].data.reshape(-1)[1] = -77.0          # a view, no copy
    assert top[0].data.reshape(-1)[1] == -77.0


def test_reshape_follows_new_bottom_shape():
    layer = make_layer("Reshape", "reshape_param { shape { dim: 0 dim: -1 } }")
    bottom = make_blobs([(2, 3, 4)])
    top = run_forward(layer, bottom)
    bottom[0].reshape((5, 2, 2))
    layer.reshape(bottom, top)
    assert top[0].shape == (5, 4)


@pytest.mark.parametrize("shape,params,exc,match", [
    ((2, 3, 4), shape_param(-1, -1), ConfigError, "at most one"),
    ((2, 3), shape_param(-1, -1), ConfigError, "-1"),
    ((2, 3, 4), shape_param(5, 5), ShapeError, "25 elements"),
    ((2, 3), shape_param(7), ShapeError, "has 7 elements"),
    ((2, 3), shape_param(2, 2), ShapeError, "elements"),
    ((2, 3, 4), shape_param(5, -1), ShapeError, "infer"),
    ((2, 3), shape_param(4, -1), ShapeError, "cannot infer"),
    ((2, 3, 4), shape_param(0, 0, 0, 0), ConfigError, "no axis 3"),
    ((2, 3), shape_param(0, 0, 0), ConfigError, "copy"),
    ((2, 3, 4), shape_param(2, -2), ConfigError, "dimensions must be"),
    ((2, 3), shape_param(-2), ConfigError, "-1"),
    ((2, 3, 4), shape_param(6) + " axis: 5", ConfigError, "axis 5 is out of range"),
    ((2, 3), shape_param(1) + " axis: 4", ConfigError, "out of range"),
    ((2, 3, 4), shape_param(6) + " axis: 1 num_axes: 3", ConfigError, "past"),
    ((2, 3), shape_param(-1) + " axis: 1 num_axes: 3", ConfigError, "num_axes"),
    ((2, 3, 4), shape_param(6) + " num_axes: -2", ConfigError, "num_axes"),
])
def test_reshape_errors(shape, params, exc, match):
    with pytest.raises(exc, match=match):
        run_forward(make_layer("Reshape", f"reshape_param {{ {params} }}"), make_blobs([shape]))


# --------------------------------------------------------------------------------------------
# Crop

@pytest.mark.parametrize("params,s0,s1,axis,offsets", [
    ("", (2, 3, 5, 6), (2, 3, 3, 4), 2, [0, 0]),                 # default axis 2
    ("", (2, 2, 5, 6), (1, 1, 3, 3), 2, [0, 0]),
    ("crop_param { offset: 1 }", (2, 3, 5, 6), (2, 3, 3, 4), 2, [1, 1]),
    ("crop_param { offset: 1 }", (2, 2, 4, 4), (2, 2, 2, 3), 2, [1, 1]),
    ("crop_param { offset: 2 offset: 1 }", (2, 3, 5, 6), (2, 3, 3, 4), 2, [2, 1]),
    ("crop_param { offset: 1 offset: 2 }", (2, 2, 5, 6), (9, 9, 3, 3), 2, [1, 2]),
    ("crop_param { axis: 2 offset: 1 offset: 2 }", (2, 3, 5, 6), (2, 3, 3, 3), 2, [1, 2]),
    ("crop_param { axis: 1 offset: 1 offset: 2 offset: 0 }", (2, 4, 5, 6), (1, 2, 3, 4), 1,
     [1, 2, 0]),
    ("crop_param { axis: 1 offset: 1 }", (2, 4, 5), (2, 2, 3), 1, [1, 1]),
    ("crop_param { axis: 1 offset: 0 }", (2, 4, 5), (7, 2, 3), 1, [0, 0]),
    ("crop_param { axis: 0 }", (3, 4, 5), (2, 3, 4), 0, [0, 0, 0]),
    ("crop_param { axis: 0 offset: 1 offset: 0 offset: 2 }", (3, 2, 5), (2, 2, 2), 0,
     [1, 0, 2]),
    ("crop_param { axis: 0 offset: 2 offset: 1 offset: 0 }", (3, 4, 3), (1, 2, 2), 0,
     [2, 1, 0]),
    ("crop_param { axis: -1 offset: 2 }", (2, 3, 6), (1, 1, 3), 2, [2]),
    ("crop_param { axis: -2 offset: 3 offset: 0 }", (2, 3, 5, 6), (9, 9, 2, 6), 2, [3, 0]),
])
def test_crop(params, s0, s1, axis, offsets):
    layer = make_layer("Crop", params)
    bottom = make_blobs([s0, s1], seed=40)
    top = run_forward(layer, bottom)
    ref = crop_ref(bottom[0].data, s1, axis, offsets)
    assert top[0].shape == ref.shape
    np.testing.assert_array_equal(top[0].data, ref)
    # bottom 1 only supplies a shape: not differentiable, left out of the check
    gradcheck(layer, bottom, top, check_bottom=[0])
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    # backward: the top diff lands in the cropped window, zeros elsewhere (overwritten)
    dy = RNG.standard_normal(top[0].shape)
    top[0].diff[...] = dy
    bottom[0].diff[...] = 5.0
    layer.backward(top, [True, False], bottom)
    full = [0] * axis + list(offsets)
    expect_dx = np.zeros(s0)
    for idx in np.ndindex(*dy.shape):
        expect_dx[tuple(i + o for i, o in zip(idx, full))] = dy[idx]
    np.testing.assert_array_equal(bottom[0].diff, expect_dx)


def test_crop_gives_no_gradient_to_the_reference_bottom():
    layer = make_layer("Crop")
    bottom = make_blobs([(1, 1, 3, 3), (1, 1, 2, 2)])
    top = run_forward(layer, bottom)
    bottom[1].diff[...] = 5.0
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    assert np.all(bottom[1].diff == 0.0)
    np.testing.assert_array_equal(bottom[0].diff, [[[[1, 1, 0], [1, 1, 0], [0, 0, 0]]]])


def test_crop_float32_and_errors():
    layer = make_layer("Crop", "crop_param { axis: 1 offset: 1 }", dtype=np.float32)
    bottom = make_blobs([(1, 3, 4), (1, 2, 2)], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, bottom[0].data[:, 1:3, 1:3])
    # offset + size past the end
    with pytest.raises(ShapeError, match="offset 2 \\+ size 4 exceeds"):
        run_forward(make_layer("Crop", "crop_param { offset: 2 }"),
                    make_blobs([(1, 1, 5, 5), (1, 1, 4, 4)]))
    with pytest.raises(ShapeError, match="exceeds") as e:
        run_forward(make_layer("Crop", "crop_param { axis: 2 offset: 3 }"),
                    make_blobs([(1, 1, 5, 5), (1, 1, 3, 3)]))
    assert "offset 3" in str(e.value) and "5" in str(e.value)
    # the reference is larger than the data
    with pytest.raises(ShapeError, match="out of range|exceed"):
        run_forward(make_layer("Crop"), make_blobs([(1, 1, 3, 3), (1, 1, 4, 3)]))
    with pytest.raises(ShapeError, match="out of range"):
        run_forward(make_layer("Crop", "crop_param { axis: 0 offset: 1 offset: 0 offset: 2 }"),
                    make_blobs([(4, 3, 5), (2, 9, 9)]))
    # wrong number of offsets
    with pytest.raises(ConfigError, match="one per cropped axis") as e:
        run_forward(make_layer("Crop", "crop_param { offset: 1 offset: 1 offset: 1 }"),
                    make_blobs([(1, 1, 5, 5), (1, 1, 4, 4)]))
    assert e.value.field == "crop_param.offset"
    with pytest.raises(ConfigError, match="offset"):
        run_forward(make_layer("Crop", "crop_param { axis: 1 offset: 0 offset: 0 }"),
                    make_blobs([(1, 2, 5, 5), (1, 1, 3, 3)]))
    with pytest.raises(ConfigError, match="crop_param.axis|out of range"):
        run_forward(make_layer("Crop", "crop_param { axis: 4 }"),
                    make_blobs([(1, 2, 5, 5), (1, 1, 3, 3)]))
    with pytest.raises(ShapeError, match="fewer axes"):
        run_forward(make_layer("Crop"), make_blobs([(1, 1, 5, 5), (1, 4, 4)]))


# --------------------------------------------------------------------------------------------
# Tile

@pytest.mark.parametrize("params,shape,axis,tiles", [
    ("tile_param { tiles: 3 }", (2, 2, 3), 1, 3),
    ("tile_param { axis: 1 tiles: 3 }", (2, 3, 2), 1, 3),
    ("tile_param { axis: 1 tiles: 3 }", (2, 2, 3), 1, 3),
    ("tile_param { axis: 0 tiles: 2 }", (2, 3), 0, 2),
    ("tile_param { axis: 2 tiles: 2 }", (2, 1, 3), 2, 2),
    ("tile_param { axis: 2 tiles: 1 }", (1, 2, 2), 2, 1),
    ("tile_param { axis: -1 tiles: 3 }", (1, 2, 2), 2, 3),
    ("tile_param { axis: -1 tiles: 4 }", (2, 3, 2), 2, 4),
    ("tile_param { axis: 1 tiles: 1 }", (2, 3), 1, 1),
])
def test_tile(params, shape, axis, tiles):
    layer = make_layer("Tile", params)
    bottom = make_blobs([shape], seed=50)
    top = run_forward(layer, bottom)
    ref = tile_ref(bottom[0].data, axis, tiles)
    assert top[0].shape == ref.shape
    np.testing.assert_array_equal(top[0].data, ref)
    gradcheck(layer, bottom, top)


def test_tile_float32_and_errors():
    layer = make_layer("Tile", "tile_param { tiles: 2 }", dtype=np.float32)
    bottom = make_blobs([(1, 2)], dtype=np.float32)
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, np.hstack([bottom[0].data] * 2))
    top[0].diff[...] = [[1, 2, 3, 4]]
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[4, 6]])
    for params in ("", "tile_param { axis: 1 }", "tile_param { tiles: 0 }",
                   "tile_param { tiles: -2 }"):
        with pytest.raises(ConfigError, match="tiles") as e:
            run_forward(make_layer("Tile", params), make_blobs([(2, 3)]))
        assert e.value.field == "tile_param.tiles"


# --------------------------------------------------------------------------------------------
# Reduction

@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, None), (1, 2.5), (2, -0.5), (2, -0.7), (-1, 1.0),
                                        (0, 1.5), (1, 1.5), (2, 1.5)])
def test_reduction(op, axis, coeff):
    params = f"reduction_param {{ operation: {op} axis: {axis}" + \
        (f" coeff: {coeff} }}" if coeff is not None else " }")
    layer = make_layer("Reduction", params)
    # magnitudes away from 0 so ASUM's |x| kink is not crossed by the +-1e-2 probe
    rng = np.random.default_rng(60)
    x = rng.uniform(0.2, 1.5, size=(2, 3, 4)) * rng.choice([-1, 1], size=(2, 3, 4))
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    ax = axis % 3
    assert top[0].shape == x.shape[:ax]
    np.testing.assert_allclose(top[0].data, reduction_ref(x, op, ax, f32(coeff or 1.0)),
                               rtol=1e-12)
    gradcheck(layer, bottom, top)


def test_reduction_default_is_sum_over_everything_and_negative_axis():
    x = RNG.standard_normal((2, 3))
    top = run_forward(make_layer("Reduction"), make_blobs([x]))
    assert top[0].shape == ()
    assert float(top[0].data) == pytest.approx(x.sum(), rel=1e-13)
    layer = make_layer("Reduction", "reduction_param { operation: SUMSQ axis: -1 }")
    bottom = make_blobs([(2, 3, 2)])
    top = run_forward(layer, bottom)
    assert top[0].shape == (2, 3)
    np.testing.assert_allclose(top[0].data, reduction_ref(bottom[0].data, "SUMSQ", 2, 1.0))
    gradcheck(layer, bottom, top)


def test_reduction_float32_and_errors():
    layer = make_layer("Reduction", "reduction_param { operation: MEAN axis: 1 coeff: 2 }",
                       dtype=np.float32)
    bottom = make_blobs([(2, 4)], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, 2 * bottom[0].data.astype(np.float64).mean(1),
                               rtol=1e-5)
    top[0].diff[...] = [1.0, -2.0]
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.dtype == np.float32
    np.testing.assert_allclose(bottom[0].diff, [[0.5] * 4, [-1.0] * 4])
    for shape in ((2, 3), (2, 3, 4)):
        with pytest.raises(ConfigError, match="out of range") as e:
            run_forward(make_layer("Reduction", "reduction_param { axis: 3 }"),
                        make_blobs([shape]))
        assert e.value.field == "reduction_param.axis"


# --------------------------------------------------------------------------------------------
# Silence

def test_silence():
    layer = make_layer("Silence")
    bottom = make_blobs([(2, 3), (4,), (1, 1, 2)])
    before = [b.data.copy() for b in bottom]
    top = run_forward(layer, bottom, ntop=0)
    assert top == []
    for b, d in zip(bottom, before):
        np.testing.assert_array_equal(b.data, d)
        b.diff[...] = 3.0
    layer.backward([], [True, False, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0.0)
    np.testing.assert_array_equal(bottom[1].diff, 3.0)     # propagate_down false: untouched
    np.testing.assert_array_equal(bottom[2].diff, 0.0)
    check_grad(make_layer("Silence"), make_blobs([(2, 3), (3,)]), ntop=0)
    with pytest.raises(ConfigError, match="0 tops"):
        run_forward(make_layer("Silence"), make_blobs([(2,)]), ntop=1)
    layer = make_layer("Silence", dtype=np.float32)
    bottom = make_blobs([(2, 2)], dtype=np.float32)
    layer.setup(bottom, [])
    layer.forward(bottom, [])
    bottom[0].diff[...] = 1.0
    layer.backward([], [True], bottom)
    assert bottom[0].diff.dtype == np.float32 and not bottom[0].diff.any()


# --------------------------------------------------------------------------------------------
# ArgMax

def tied_input(shape, seed):
    """Small integers so that ties are common."""
    return np.random.default_rng(seed).integers(0, 4, size=shape).astype(float)


def _omv(v):
    return f" out_max_val: {str(v).lower()}"


ARGMAX_CASES = [
    ((3, 10), ""),
    ((2, 3, 2, 2), "top_k: 3"),
    ((2, 3, 4), "out_max_val: true top_k: 2"),
    ((2, 5), "out_max_val: true"),
    ((2, 4, 3), "axis: 1"),
    ((2, 4, 3), "axis: 1 top_k: 3 out_max_val: true"),
    ((2, 4, 3), "axis: -1 top_k: 2"),
    ((5, 2), "axis: 0 top_k: 5"),
] + [(shape, f"top_k: {k}" + _omv(v)) for shape in ((3, 5), (2, 2, 3, 1))
     for k in (1, 3) for v in (False, True)] + \
    [((3, 4, 2), f"axis: {a} top_k: {k}" + _omv(v)) for a in (0, 1, 2, -1) for k in (1, 2)
     for v in (False, True)]


@pytest.mark.parametrize("shape,params", ARGMAX_CASES)
def test_argmax(shape, params):
    x = tied_input(shape, seed=len(params) + len(shape))
    layer = make_layer("ArgMax", f"argmax_param {{ {params} }}")
    top = run_forward(layer, make_blobs([x]))
    p = layer.param.argmax_param
    ref = argmax_ref(x, p.top_k, p.out_max_val, p.axis % len(shape) if p.HasField("axis")
                     else None)
    assert top[0].shape == ref.shape
    np.testing.assert_array_equal(top[0].data, ref)


def test_argmax_top_shape_follows_caffe():
    # without axis the top has max(3, bottom axes) axes: (N, 1 or 2, top_k, 1...)
    layer = make_layer("ArgMax", "argmax_param { top_k: 2 out_max_val: true }")
    assert run_forward(layer, make_blobs([(2, 3, 4, 5)]))[0].shape == (2, 2, 2, 1)
    assert run_forward(make_layer("ArgMax"), make_blobs([(4, 7)]))[0].shape == (4, 1, 1)


@pytest.mark.parametrize("k", [1, 3])
def test_argmax_ties_take_the_larger_index_first(k):
    x = np.array([[1.0, 3.0, 3.0, 0.0, 3.0, 2.0]])
    top = run_forward(make_layer("ArgMax", f"argmax_param {{ top_k: {k} }}"), make_blobs([x]))
    assert list(top[0].data.ravel()) == [4.0, 2.0, 1.0][:k]
    x2 = np.array([[[2.0], [5.0], [5.0], [1.0]]])           # along axis 1
    top = run_forward(make_layer("ArgMax", f"argmax_param {{ axis: 1 top_k: {k} }}"),
                      make_blobs([x2]))
    assert list(top[0].data.ravel()) == [2.0, 1.0, 0.0][:k]
    assert argmax_ref(x, k, False).ravel().tolist() == [4.0, 2.0, 1.0][:k]


def test_argmax_tie_examples_and_float32():
    x = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, -1.0, 4.0, 4.0]])
    layer = make_layer("ArgMax", "argmax_param { top_k: 3 out_max_val: true }",
                       dtype=np.float32)
    top = run_forward(layer, make_blobs([x], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, [[[2, 1, 0], [3, 3, 1]], [[3, 2, 0], [4, 4, 2]]])
    top = run_forward(make_layer("ArgMax"), make_blobs([x]))
    np.testing.assert_array_equal(top[0].data.reshape(-1), [2, 3])
    top = run_forward(make_layer("ArgMax", "argmax_param { axis: 1 }"), make_blobs([x]))
    np.testing.assert_array_equal(top[0].data, [[2], [3]])
    layer = make_layer("ArgMax", "argmax_param { axis: 0 }")
    top = run_forward(layer, make_blobs([np.array([[5.0, 1.0], [5.0, 2.0]])]))
    np.testing.assert_array_equal(top[0].data, [[1, 1]])
    assert not layer.allow_force_backward(0)


def test_argmax_errors():
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 7 }"), make_blobs([(2, 3, 2)]))
    assert e.value.field == "argmax_param.top_k"
    with pytest.raises(ConfigError, match="top_k"):
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 6 }"), make_blobs([(2, 5)]))
    with pytest.raises(ConfigError, match="top_k 4 exceeds"):
        run_forward(make_layer("ArgMax", "argmax_param { axis: 1 top_k: 4 }"),
                    make_blobs([(2, 3, 2)]))
    with pytest.raises(ConfigError, match="top_k"):
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 4 axis: 1 }"),
                    make_blobs([(2, 3, 5)]))
    with pytest.raises(ConfigError, match="at least 1"):
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 0 }"), make_blobs([(2, 3)]))
    with pytest.raises(ConfigError, match="argmax_param.axis|out of range"):
        run_forward(make_layer("ArgMax", "argmax_param { axis: 2 }"), make_blobs([(2, 5)]))
    assert not make_layer("ArgMax").allow_force_backward(0)


# --------------------------------------------------------------------------------------------
# all layers: float32, shape-only setup, flops

CASES = [
    # (type, params, bottom shapes, ntop)
    ("Softmax", "", [(2, 5, 3)], 1),
    ("Concat", "", [(2, 3, 2), (2, 1, 2)], 1),
    ("Slice", "slice_param { slice_point: 1 }", [(2, 3, 2)], 2),
    ("Split", "", [(2, 3)], 2),
    ("Eltwise", "eltwise_param { coeff: 0.5 coeff: 2 }", [(2, 3), (2, 3)], 1),
    ("Eltwise", "eltwise_param { operation: PROD }", [(2, 3), (2, 3)], 1),
    ("Eltwise", "eltwise_param { operation: MAX }", [(2, 3), (2, 3)], 1),
    ("Flatten", "", [(2, 3, 2)], 1),
    ("Reshape", f"reshape_param {{ {shape_param(0, -1)} }}", [(2, 3, 2)], 1),
    ("Crop", "crop_param { offset: 1 }", [(2, 3, 4, 4), (2, 3, 2, 2)], 1),
    ("Tile", "tile_param { tiles: 2 }", [(2, 3)], 1),
    ("Reduction", "reduction_param { operation: SUMSQ axis: 1 }", [(2, 3, 2)], 1),
    ("Reduction", "reduction_param { operation: MEAN axis: 1 coeff: 3 }", [(2, 3, 2)], 1),
    ("Silence", "", [(2, 3)], 0),
    ("ArgMax", "argmax_param { top_k: 2 out_max_val: true }", [(2, 3, 2)], 1),
]


@pytest.mark.parametrize("type_name,params,shapes,ntop", CASES)
def test_float32_matches_float64(type_name, params, shapes, ntop):
    xs = [rand(s, 80 + i) for i, s in enumerate(shapes)]
    out = {}
    for dt in (np.float32, np.float64):
        layer = make_layer(type_name, params, dtype=dt)
        top = run_forward(layer, make_blobs([x.astype(dt) for x in xs], dtype=dt), ntop=ntop)
        for t in top:
            assert t.data.dtype == dt
        out[dt] = [t.data.copy() for t in top]
        for t in top:
            t.diff[...] = 1.0
        layer.backward(top, [True] * len(shapes), make_blobs([x.astype(dt) for x in xs],
                                                            dtype=dt))
    for a, b in zip(out[np.float32], out[np.float64]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("type_name,params,shapes,ntop", CASES)
def test_shape_only_setup_does_not_touch_bottom_data(type_name, params, shapes, ntop):
    layer = make_layer(type_name, params, init_params=False)
    bottom = [Blob(s, dtype=np.float32, name=f"b{i}") for i, s in enumerate(shapes)]
    top = tops(ntop, np.float32)
    layer.setup(bottom, top)
    assert not any(b.allocated for b in bottom)
    assert layer.flops(bottom, top) >= 0


def test_flops():
    b = make_blobs([(2, 3, 4)])
    layer = make_layer("Softmax")
    assert layer.flops(b, run_forward(layer, b)) == 5 * 24
    b = make_blobs([(2, 3), (2, 3), (2, 3)])
    layer = make_layer("Eltwise", "eltwise_param { coeff: 1 coeff: 2 coeff: 1 }")
    assert layer.flops(b, run_forward(layer, b)) == 2 * 6 + 6
    b = make_blobs([(2, 3, 4)])
    layer = make_layer("Reduction", "reduction_param { operation: SUMSQ axis: 1 }")
    assert layer.flops(b, run_forward(layer, b)) == 2 * 24 + 2
    for t, p, shapes, ntop in [("Concat", "", [(2, 3), (2, 3)], 1), ("Flatten", "", [(2, 3)], 1),
                               ("Tile", "tile_param { tiles: 2 }", [(2, 3)], 1)]:
        layer = make_layer(t, p)
        b = make_blobs(shapes)
        assert layer.flops(b, run_forward(layer, b, ntop=ntop)) == 0


# --------------------------------------------------------------------------------------------
# in a net: auto-inserted Split, views and slicing compose

NET = """
force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 dim: 3 } } }
layer { name: "sl" type: "Slice" bottom: "x" top: "a" top: "b" slice_param { slice_point: 1 } }
layer { name: "fl" type: "Flatten" bottom: "x" top: "f" }
layer { name: "rs" type: "Reshape" bottom: "f" top: "r"
        reshape_param { shape { dim: 0 dim: 4 dim: -1 } } }
layer { name: "cc" type: "Concat" bottom: "b" bottom: "a" top: "c" }
layer { name: "el" type: "Eltwise" bottom: "c" bottom: "r" top: "e"
        eltwise_param { operation: PROD } }
layer { name: "tl" type: "Tile" bottom: "e" top: "et" tile_param { axis: 2 tiles: 2 } }
layer { name: "sm" type: "Softmax" bottom: "et" top: "p" }
layer { name: "rd" type: "Reduction" bottom: "p" top: "loss" loss_weight: 1
        reduction_param { operation: SUMSQ } }
"""


def test_net_composition_gradient():
    from netdef.config import net_from_text
    from netdef.net import Net

    net = Net(net_from_text(NET, file="t.prototxt"), 1, dtype=np.float64, seed=1)
    x0 = rand((2, 4, 3), 91)

    def loss_of(x):
        net.blobs["x"].data = x
        return net.forward()

    def ref_loss(x):
        a, b = x[:, :1], x[:, 1:]
        c = np.concatenate([b, a], axis=1)
        e = np.concatenate([c * x, c * x], axis=2)
        p = np.exp(e - e.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return (p ** 2).sum()

    assert loss_of(x0.copy()) == pytest.approx(ref_loss(x0), rel=1e-12)
    net.backward()
    analytic = net.blobs["x"].diff.copy()
    h = 1e-5
    for idx in [(0, 0, 0), (1, 2, 1), (0, 3, 2), (1, 0, 2)]:
        xp, xm = x0.copy(), x0.copy()
        xp[idx] += h
        xm[idx] -= h
        numeric = (ref_loss(xp) - ref_loss(xm)) / (2 * h)
        assert analytic[idx] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


# ============================================================================================
# Filter, BatchReindex, Parameter
# -- Filter

def test_filter_forward_backward():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 4))
    sel = np.array([1, 0, 1, 1, 0], float).reshape(5, 1)
    layer = make_layer("Filter")
    bottom = make_blobs([a, b, sel])
    top = run_forward(layer, bottom, ntop=2)
    idx = [0, 2, 3]
    np.testing.assert_array_equal(top[0].data, a[idx])
    np.testing.assert_array_equal(top[1].data, b[idx])
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(0)
    GradientChecker().check(layer, bottom, top, check_bottom=[0, 1])
    for t in top:
        t.diff[...] = 1.0
    layer.backward(top, [True, True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff[:, 0, 0], [1, 0, 1, 1, 0])
    with pytest.raises(ConfigError, match="selector"):
        layer.backward(top, [True, True, True], bottom)


def test_filter_errors():
    with pytest.raises(ConfigError, match="one top per filtered bottom"):
        run_forward(make_layer("Filter"), make_blobs([(4, 2), (4,)]), ntop=2)
    with pytest.raises(ShapeError, match="singletons"):
        run_forward(make_layer("Filter"), make_blobs([(4, 2), (4, 2)]))
    with pytest.raises(ShapeError, match="first dimension"):
        run_forward(make_layer("Filter"), make_blobs([(3, 2), (4,)]))


def test_filter_in_a_net_reshapes_the_following_layers(tmp_path):
    from netdef.config import load_net
    from netdef.net import PHASES, Net

    (tmp_path / "f.prototxt").write_text(textwrap.dedent("""
    layer { name: "in" type: "Input" top: "x" top: "y" top: "sel"
      input_param { shape { dim: 6 dim: 3 } shape { dim: 6 dim: 2 } shape { dim: 6 } } }
    layer { name: "f" type: "Filter" bottom: "x" bottom: "y" bottom: "sel" top: "xf" top: "yf"
      propagate_down: true propagate_down: false propagate_down: false }
    layer { name: "ip" type: "InnerProduct" bottom: "xf" top: "p"
      inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "yf" top: "loss" }
    """))
    net = Net(load_net(str(tmp_path / "f.prototxt")), PHASES["TRAIN"], dtype=np.float64, seed=1)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    W, b = net.params[0].blob.data, net.params[1].blob.data
    for sel in ([1, 1, 0, 1, 0, 1], [0, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]):
        sel = np.array(sel, float)
        net.blobs["x"].data[...] = x
        net.blobs["y"].data[...] = y
        net.blobs["sel"].data[...] = sel
        net.clear_param_diffs()
        loss = net.forward_backward()
        k = sel != 0
        p = x[k] @ W.T + b
        assert loss == pytest.approx(((p - y[k]) ** 2).sum() / (2 * k.sum()), rel=1e-12)
        assert net.blobs["p"].shape == (int(k.sum()), 2)
        np.testing.assert_allclose(net.params[0].blob.diff, (p - y[k]).T @ x[k] / k.sum(),
                                   rtol=1e-10)


# --------------------------------------------------------------------------------------------
# BatchReindex

def test_batch_reindex():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 3))
    idx = np.array([2, 0, 2, 3, 2], float)
    layer = make_layer("BatchReindex")
    bottom = make_blobs([x, idx])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, x[[2, 0, 2, 3, 2]])
    GradientChecker().check(layer, bottom, top, check_bottom=[0])
    top[0].diff[...] = 1.0
    layer.backward(top, [True, False], bottom)
    np.testing.assert_array_equal(bottom[0].diff[:, 0, 0], [1, 0, 3, 1])
    assert not layer.allow_force_backward(1)


def test_batch_reindex_errors():
    with pytest.raises(ShapeError, match="1-D"):
        run_forward(make_layer("BatchReindex"), make_blobs([(3, 2), (2, 2)]))
    with pytest.raises(ShapeError, match=r"index 3 is not an integer in \[0, 3\)"):
        run_forward(make_layer("BatchReindex"), make_blobs([np.zeros((3, 2)),
                                                           np.array([0.0, 3.0])]))
    with pytest.raises(ShapeError, match="index 0.5"):
        run_forward(make_layer("BatchReindex"), make_blobs([np.zeros((3, 2)),
                                                           np.array([0.5])]))


# --------------------------------------------------------------------------------------------
# Parameter

def test_parameter_layer():
    layer = make_layer("Parameter", "parameter_param { shape { dim: 2 dim: 3 } }")
    top = run_forward(layer, [])
    assert [p.shape for p in layer.blobs] == [(2, 3)] and top[0].shape == (2, 3)
    assert not np.any(top[0].data)                               # Caffe leaves it at 0
    layer.blobs[0].data[...] = np.arange(6).reshape(2, 3)
    layer.forward([], top)
    np.testing.assert_array_equal(top[0].data, np.arange(6).reshape(2, 3))
    GradientChecker().check(layer, [], top)
    top[0].diff[...] = 2.0
    layer.blobs[0].diff[...] = 1.0
    layer.backward(top, [], [])
    np.testing.assert_array_equal(layer.blobs[0].diff, 3.0)      # accumulates
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Parameter"), [])
    assert e.value.field == "parameter_param.shape"


def test_parameter_trains_in_a_net(tmp_path):
    from netdef.config import load_net
    from netdef.net import PHASES, Net

    (tmp_path / "p.prototxt").write_text(textwrap.dedent("""
    layer { name: "in" type: "Input" top: "y" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "w" type: "Parameter" top: "w" parameter_param { shape { dim: 2 dim: 3 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "w" bottom: "y" top: "loss" }
    """))
    net = Net(load_net(str(tmp_path / "p.prototxt")), PHASES["TRAIN"], dtype=np.float64)
    y = np.arange(6.0).reshape(2, 3)
    net.blobs["y"].data[...] = y
    assert len(net.params) == 1
    for _ in range(50):
        net.clear_param_diffs()
        net.forward_backward()
        net.params[0].blob.data[...] -= 0.5 * net.params[0].blob.diff
    np.testing.assert_allclose(net.blobs["w"].data, y, rtol=1e-6)
