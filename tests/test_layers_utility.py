"""Utility layers (Softmax, Concat, Slice, Split, Eltwise, Flatten, Reshape, Crop, Tile,
Reduction, Silence, ArgMax): forward against float64 references written from the formulas,
gradient checks, views, Caffe's tie rules, and configuration/shape errors."""
import math

import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward


def tops(n=1, dtype=np.float64):
    return [Blob((), dtype=dtype, name=f"t{i}") for i in range(n)]


def rand(shape, seed=0, lo=None, hi=None):
    rng = np.random.default_rng(seed)
    if lo is None:
        return rng.standard_normal(shape)
    return rng.uniform(lo, hi, size=shape)


def check_grad(layer, bottom, ntop=1, **kw):
    checker = GradientChecker(**{k: kw.pop(k) for k in ("kink", "kink_range") if k in kw})
    return checker.check(layer, bottom, tops(ntop), **kw)


def f32(v):
    return float(np.float32(v))


# --------------------------------------------------------------------------------------------
# references (float64, elementwise loops from the formulas)

def ref_softmax(x, axis):
    xm = np.moveaxis(x, axis, -1)
    out = np.empty_like(xm)
    for idx in np.ndindex(*xm.shape[:-1]):
        row = [float(v) for v in xm[idx]]
        m = max(row)
        e = [math.exp(v - m) for v in row]
        s = sum(e)
        out[idx] = [v / s for v in e]
    return np.moveaxis(out, -1, axis)


def ref_concat(xs, axis):
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        k = idx[axis]
        for x in xs:
            if k < x.shape[axis]:
                src = list(idx)
                src[axis] = k
                out[idx] = x[tuple(src)]
                break
            k -= x.shape[axis]
    return out


def ref_slice(x, axis, bounds):
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        shape = list(x.shape)
        shape[axis] = b - a
        o = np.empty(shape)
        for idx in np.ndindex(*shape):
            src = list(idx)
            src[axis] += a
            o[idx] = x[tuple(src)]
        outs.append(o)
    return outs


def ref_eltwise(xs, op, coeff=None):
    out = np.empty(xs[0].shape)
    for idx in np.ndindex(*out.shape):
        vals = [float(x[idx]) for x in xs]
        if op == "SUM":
            c = coeff or [1.0] * len(xs)
            out[idx] = sum(ci * v for ci, v in zip(c, vals))
        elif op == "PROD":
            out[idx] = math.prod(vals)
        else:
            out[idx] = max(vals)
    return out


def ref_crop(x, ref_shape, axis, offsets):
    shape = list(x.shape)
    for i in range(axis, x.ndim):
        shape[i] = ref_shape[i]
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        src = [k + (offsets[i - axis] if i >= axis else 0) for i, k in enumerate(idx)]
        out[idx] = x[tuple(src)]
    return out


def ref_tile(x, axis, tiles):
    shape = list(x.shape)
    shape[axis] *= tiles
    out = np.empty(shape)
    for idx in np.ndindex(*shape):
        src = list(idx)
        src[axis] = idx[axis] % x.shape[axis]
        out[idx] = x[tuple(src)]
    return out


def ref_reduction(x, op, axis, coeff=1.0):
    lead = x.shape[:axis]
    out = np.empty(lead)
    for idx in np.ndindex(*lead):
        vals = [float(v) for v in np.asarray(x[idx]).ravel()]
        if op == "SUM":
            r = sum(vals)
        elif op == "ASUM":
            r = sum(abs(v) for v in vals)
        elif op == "SUMSQ":
            r = sum(v * v for v in vals)
        else:
            r = sum(vals) / len(vals)
        out[idx] = coeff * r
    return out


def ref_argmax_pairs(values, k):
    """Caffe: sort (value, index) pairs with std::greater, keep the first k."""
    pairs = sorted(((float(v), j) for j, v in enumerate(values)), reverse=True)
    return pairs[:k]


# --------------------------------------------------------------------------------------------
# Softmax

@pytest.mark.parametrize("shape,axis", [((2, 5), 1), ((2, 3, 2, 3), 1), ((2, 3, 4), 2),
                                        ((2, 3, 4), -1), ((3, 2, 2), 0)])
def test_softmax_forward(shape, axis):
    x = rand(shape, 1) * 3
    layer = make_layer("Softmax", f"softmax_param {{ axis: {axis} }}")
    top = run_forward(layer, make_blobs([x.copy()]))
    np.testing.assert_allclose(top[0].data, ref_softmax(x, axis), rtol=1e-12, atol=1e-15)


def test_softmax_large_inputs_are_stable():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0],
                  [0.0, 800.0, -800.0]])
    top = run_forward(make_layer("Softmax"), make_blobs([x]))
    np.testing.assert_allclose(top[0].data, ref_softmax(x - x.max(1, keepdims=True), 1),
                               rtol=1e-12)
    assert np.all(np.isfinite(top[0].data))


def test_softmax_large_inner_uses_many_blocks():
    x = rand((2, 3, 150), 2)              # several blocks of inner positions per item
    top = run_forward(make_layer("Softmax"), make_blobs([x.copy()]))
    e = np.exp(x - x.max(axis=1, keepdims=True))
    np.testing.assert_allclose(top[0].data, e / e.sum(axis=1, keepdims=True), rtol=1e-12)


@pytest.mark.parametrize("shape,axis", [((2, 4, 3), 1), ((2, 3, 4, 2), 2), ((3, 5), 1)])
def test_softmax_gradient(shape, axis):
    layer = make_layer("Softmax", f"softmax_param {{ axis: {axis} }}")
    check_grad(layer, make_blobs([shape], seed=3))


def test_softmax_errors():
    layer = make_layer("Softmax", "softmax_param { axis: 3 }")
    with pytest.raises(ConfigError, match="axis") as e:
        run_forward(layer, make_blobs([(2, 3, 4)]))
    assert e.value.field == "softmax_param.axis"


# --------------------------------------------------------------------------------------------
# Concat

@pytest.mark.parametrize("shapes,params,axis", [
    ([(2, 3, 2), (2, 1, 2), (2, 2, 2)], "", 1),
    ([(1, 3, 2), (2, 3, 2), (3, 3, 2)], "concat_param { axis: 0 }", 0),
    ([(2, 3, 1), (2, 3, 4)], "concat_param { axis: -1 }", 2),
    ([(2, 3), (2, 2)], "concat_param { concat_dim: 1 }", 1),
    ([(3, 2), (1, 2)], "concat_param { concat_dim: 0 }", 0),
])
def test_concat_forward(shapes, params, axis):
    xs = [rand(s, i) for i, s in enumerate(shapes)]
    layer = make_layer("Concat", params)
    top = run_forward(layer, make_blobs([x.copy() for x in xs]))
    np.testing.assert_array_equal(top[0].data, ref_concat(xs, axis))


@pytest.mark.parametrize("shapes,axis", [([(1, 2, 3), (2, 2, 3), (1, 2, 3)], 0),
                                         ([(2, 1, 3), (2, 3, 3), (2, 2, 3)], 1)])
def test_concat_gradient(shapes, axis):
    layer = make_layer("Concat", f"concat_param {{ axis: {axis} }}")
    check_grad(layer, make_blobs(shapes, seed=4))


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


def test_concat_partial_propagate_down():
    bottom = make_blobs([(2, 1), (2, 2)])
    layer = make_layer("Concat")
    top = run_forward(layer, bottom)
    bottom[0].diff[...] = -5.0
    top[0].diff[...] = np.arange(6.0).reshape(2, 3)
    layer.backward(top, [False, True], bottom)
    assert np.all(bottom[0].diff == -5.0)
    np.testing.assert_array_equal(bottom[1].diff, [[1, 2], [4, 5]])


def test_concat_shape_mismatch_names_bottom_and_shapes():
    layer = make_layer("Concat")
    with pytest.raises(ShapeError) as e:
        run_forward(layer, make_blobs([(2, 3, 4), (2, 1, 4), (2, 2, 5)]))
    msg = str(e.value)
    assert "bottom 2" in msg and "[2, 2, 5]" in msg and "[2, 3, 4]" in msg
    with pytest.raises(ShapeError, match="bottom 1"):
        run_forward(make_layer("Concat"), make_blobs([(2, 3, 4), (2, 3)]))


def test_concat_config_errors():
    with pytest.raises(ConfigError, match="not both"):
        run_forward(make_layer("Concat", "concat_param { axis: 1 concat_dim: 1 }"),
                    make_blobs([(2, 3), (2, 3)]))
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Concat", "concat_param { concat_dim: 2 }"),
                    make_blobs([(2, 3), (2, 3)]))
    assert e.value.field == "concat_param.concat_dim"
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Concat", "concat_param { axis: -3 }"),
                    make_blobs([(2, 3), (2, 3)]))
    assert e.value.field == "concat_param.axis"


# --------------------------------------------------------------------------------------------
# Slice

@pytest.mark.parametrize("shape,params,ntop,axis,bounds", [
    ((2, 6, 2), "slice_param { slice_point: 1 slice_point: 4 }", 3, 1, [0, 1, 4, 6]),
    ((6, 2), "", 2, 1, [0, 1, 2]),
    ((6, 2, 3), "slice_param { axis: 0 }", 3, 0, [0, 2, 4, 6]),
    ((2, 3, 5), "slice_param { axis: -1 slice_point: 2 }", 2, 2, [0, 2, 5]),
    ((4, 2), "slice_param { slice_dim: 0 slice_point: 3 }", 2, 0, [0, 3, 4]),
])
def test_slice_forward(shape, params, ntop, axis, bounds):
    x = rand(shape, 5)
    layer = make_layer("Slice", params)
    top = run_forward(layer, make_blobs([x.copy()]), ntop=ntop)
    for t, r in zip(top, ref_slice(x, axis, bounds)):
        np.testing.assert_array_equal(t.data, r)


@pytest.mark.parametrize("shape,params,ntop", [
    ((2, 5, 2), "slice_param { slice_point: 1 slice_point: 3 }", 3),
    ((4, 3), "slice_param { axis: 0 }", 2),
    ((2, 6), "slice_param { axis: 1 }", 3),
])
def test_slice_gradient(shape, params, ntop):
    check_grad(make_layer("Slice", params), make_blobs([shape], seed=6), ntop=ntop)


def test_slice_single_top_is_a_view():
    bottom = make_blobs([(2, 3)])
    layer = make_layer("Slice")
    top = run_forward(layer, bottom)
    bottom[0].data[1, 2] = 9.0
    assert top[0].data[1, 2] == 9.0
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    assert np.all(bottom[0].diff == 3.0)


@pytest.mark.parametrize("params,ntop,match", [
    ("slice_param { slice_point: 2 }", 3, "one fewer"),
    ("slice_param { slice_point: 1 slice_point: 2 slice_point: 3 }", 3, "one fewer"),
    ("slice_param { slice_point: 3 slice_point: 2 }", 3, "strictly increasing"),
    ("slice_param { slice_point: 2 slice_point: 2 }", 3, "strictly increasing"),
    ("slice_param { slice_point: 0 }", 2, "strictly increasing"),
    ("slice_param { slice_point: 6 }", 2, "inside"),
    ("slice_param { slice_point: 1 slice_point: 9 }", 3, "inside"),
    ("slice_param { axis: 1 slice_dim: 1 }", 2, "not both"),
    ("slice_param { slice_dim: 3 }", 2, "out of range"),
])
def test_slice_config_errors(params, ntop, match):
    with pytest.raises(ConfigError, match=match):
        run_forward(make_layer("Slice", params), make_blobs([(2, 6, 2)]), ntop=ntop)


def test_slice_unequal_parts_is_a_shape_error():
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
def test_split_gradient(ntop):
    check_grad(make_layer("Split"), make_blobs([(2, 3, 2)], seed=8), ntop=ntop)


def test_split_follows_bottom_reshape():
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

ELT_SHAPE = (2, 3, 2)


@pytest.mark.parametrize("op,params,n", [
    ("SUM", "", 2),
    ("SUM", "eltwise_param { coeff: 1 coeff: -0.5 coeff: 2 }", 3),
    ("PROD", "eltwise_param { operation: PROD }", 3),
    ("PROD", "eltwise_param { operation: PROD stable_prod_grad: false }", 2),
    ("MAX", "eltwise_param { operation: MAX }", 3),
    ("MAX", "eltwise_param { operation: MAX coeff: 2 coeff: 3 }", 2),   # Caffe ignores them
])
def test_eltwise_forward(op, params, n):
    xs = [rand(ELT_SHAPE, 20 + i) for i in range(n)]
    layer = make_layer("Eltwise", params)
    top = run_forward(layer, make_blobs([x.copy() for x in xs]))
    coeff = [1.0, -0.5, 2.0] if "coeff: -0.5" in params else None
    np.testing.assert_allclose(top[0].data, ref_eltwise(xs, op, coeff), rtol=1e-14)


@pytest.mark.parametrize("params,n,lo", [
    ("eltwise_param { coeff: 0.5 coeff: -2 coeff: 1 }", 3, None),
    ("", 2, None),
    ("eltwise_param { operation: PROD }", 3, None),
    ("eltwise_param { operation: PROD stable_prod_grad: true }", 2, None),
    ("eltwise_param { operation: PROD stable_prod_grad: false }", 3, 0.5),
])
def test_eltwise_gradient(params, n, lo):
    if lo is None:
        bottom = make_blobs([ELT_SHAPE] * n, seed=21)
    else:   # the unstable PROD gradient divides by the input: keep it away from 0
        rng = np.random.default_rng(21)
        bottom = make_blobs([rng.uniform(lo, 1.5, ELT_SHAPE) * rng.choice([-1, 1], ELT_SHAPE)
                             for _ in range(n)])
    check_grad(make_layer("Eltwise", params), bottom)


def test_eltwise_max_gradient_distinct_values():
    # a random permutation of well separated values: the step never changes the argmax
    vals = np.random.default_rng(22).permutation(3 * 12).astype(float).reshape(3, *ELT_SHAPE)
    bottom = make_blobs([v * 0.1 for v in vals])
    check_grad(make_layer("Eltwise", "eltwise_param { operation: MAX }"), bottom)


def test_eltwise_max_ties_follow_caffe():
    # Caffe: bottom 1 wins a tie against bottom 0; later bottoms must be strictly larger
    a = np.array([1.0, 2.0, 3.0, 0.0])
    b = np.array([1.0, 1.0, 3.0, 0.0])
    c = np.array([1.0, 5.0, 0.0, 0.0])
    bottom = make_blobs([a, b, c])
    layer = make_layer("Eltwise", "eltwise_param { operation: MAX }")
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, [1, 5, 3, 0])
    top[0].diff[...] = [10.0, 20.0, 30.0, 40.0]
    layer.backward(top, [True, True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 0, 0, 0])
    np.testing.assert_array_equal(bottom[1].diff, [10, 0, 30, 40])
    np.testing.assert_array_equal(bottom[2].diff, [0, 20, 0, 0])


def test_eltwise_prod_unstable_gradient_formula():
    xs = [np.array([2.0, -4.0]), np.array([3.0, 0.5])]
    bottom = make_blobs(xs)
    layer = make_layer("Eltwise", "eltwise_param { operation: PROD stable_prod_grad: false }")
    top = run_forward(layer, bottom)
    top[0].diff[...] = [1.0, 2.0]
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[0].diff, [3.0, 1.0])
    np.testing.assert_allclose(bottom[1].diff, [2.0, -8.0])


def test_eltwise_errors():
    with pytest.raises(ConfigError, match="one coeff per bottom") as e:
        run_forward(make_layer("Eltwise", "eltwise_param { coeff: 1 coeff: 2 }"),
                    make_blobs([(2, 2)] * 3))
    assert e.value.field == "eltwise_param.coeff"
    with pytest.raises(ConfigError, match="SUM"):
        run_forward(make_layer("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 2 }"),
                    make_blobs([(2, 2)] * 2))
    with pytest.raises(ShapeError, match=r"bottom 1 has shape \[2, 3\]"):
        run_forward(make_layer("Eltwise"), make_blobs([(2, 2), (2, 3)]))
    with pytest.raises(ConfigError, match="at least 2 bottoms"):
        run_forward(make_layer("Eltwise"), make_blobs([(2, 2)]))


# --------------------------------------------------------------------------------------------
# Flatten and Reshape (views of the bottom)

@pytest.mark.parametrize("shape,params,expected", [
    ((2, 3, 4, 5), "", (2, 60)),
    ((2, 3, 4, 5), "flatten_param { axis: 2 }", (2, 3, 20)),
    ((2, 3, 4, 5), "flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
    ((2, 3, 4, 5), "flatten_param { axis: 0 end_axis: -2 }", (24, 5)),
    ((2, 3, 4, 5), "flatten_param { axis: -1 }", (2, 3, 4, 5)),
    ((3,), "flatten_param { axis: 0 }", (3,)),
])
def test_flatten_shapes_and_views(shape, params, expected):
    x = rand(shape, 30)
    bottom = make_blobs([x.copy()])
    layer = make_layer("Flatten", params)
    top = run_forward(layer, bottom)
    assert top[0].shape == expected
    np.testing.assert_array_equal(top[0].data.ravel(), x.ravel())
    bottom[0].data.reshape(-1)[-1] = 123.0
    assert top[0].data.reshape(-1)[-1] == 123.0


def test_flatten_gradient():
    check_grad(make_layer("Flatten", "flatten_param { axis: 1 end_axis: 2 }"),
               make_blobs([(2, 3, 2, 2)], seed=31))


def test_flatten_errors():
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Flatten", "flatten_param { axis: 4 }"), make_blobs([(2, 3)]))
    assert e.value.field == "flatten_param.axis"
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Flatten", "flatten_param { axis: 2 end_axis: 1 }"),
                    make_blobs([(2, 3, 4)]))
    assert e.value.field == "flatten_param.end_axis"


def shape_param(*dims):
    return "shape { " + " ".join(f"dim: {d}" for d in dims) + " }"


# expected shapes from Caffe's reshape tests and its documented rules
@pytest.mark.parametrize("shape,params,expected", [
    ((2, 3, 6, 5), shape_param(6, 2, 3, 5), (6, 2, 3, 5)),
    ((2, 3, 6, 5), shape_param(0, -1), (2, 90)),
    ((2, 3, 6, 5), shape_param(0, 3, 0, -1), (2, 3, 6, 5)),
    ((2, 3, 6, 5), shape_param(-1, 0, 5), (12, 3, 5)),
    ((2, 3, 6, 5), shape_param(0, 0, 0, 0), (2, 3, 6, 5)),
    ((2, 3, 6, 5), shape_param(1, 1) + " axis: 1 num_axes: 0", (2, 1, 1, 3, 6, 5)),
    ((2, 3, 6, 5), shape_param(1) + " axis: -1 num_axes: 0", (2, 3, 6, 5, 1)),
    ((2, 3, 6, 5), shape_param(-1) + " axis: 1 num_axes: 2", (2, 18, 5)),
    ((2, 3, 6, 5), shape_param(3, 2) + " axis: 2 num_axes: 1", (2, 3, 3, 2, 5)),
    ((2, 3, 6, 5), shape_param(-1) + " axis: 0", (180,)),
    ((2, 8), shape_param(2, 2, 2) + " axis: -2", (2, 2, 2, 2)),
])
def test_reshape_shapes(shape, params, expected):
    x = rand(shape, 32)
    bottom = make_blobs([x.copy()])
    layer = make_layer("Reshape", f"reshape_param {{ {params} }}")
    top = run_forward(layer, bottom)
    assert top[0].shape == expected
    np.testing.assert_array_equal(top[0].data, x.reshape(expected))
    bottom[0].data.reshape(-1)[5] = -77.0          # a view, no copy
    assert top[0].data.reshape(-1)[5] == -77.0


def test_reshape_gradient():
    check_grad(make_layer("Reshape", f"reshape_param {{ {shape_param(0, -1, 2)} }}"),
               make_blobs([(2, 3, 2, 2)], seed=33))


@pytest.mark.parametrize("shape,params,exc,match", [
    ((2, 3, 4), shape_param(-1, -1), ConfigError, "at most one"),
    ((2, 3, 4), shape_param(5, 5), ShapeError, "25 elements"),
    ((2, 3, 4), shape_param(5, -1), ShapeError, "infer"),
    ((2, 3, 4), shape_param(0, 0, 0, 0), ConfigError, "no axis 3"),
    ((2, 3, 4), shape_param(2, -2), ConfigError, "dimensions must be"),
    ((2, 3, 4), shape_param(6) + " axis: 5", ConfigError, "axis 5 is out of range"),
    ((2, 3, 4), shape_param(6) + " axis: 1 num_axes: 3", ConfigError, "past"),
    ((2, 3, 4), shape_param(6) + " num_axes: -2", ConfigError, "num_axes"),
])
def test_reshape_errors(shape, params, exc, match):
    with pytest.raises(exc, match=match):
        run_forward(make_layer("Reshape", f"reshape_param {{ {params} }}"), make_blobs([shape]))


# --------------------------------------------------------------------------------------------
# Crop

@pytest.mark.parametrize("s0,s1,params,axis,offsets", [
    ((2, 3, 5, 6), (2, 3, 3, 4), "", 2, [0, 0]),
    ((2, 3, 5, 6), (2, 3, 3, 4), "crop_param { offset: 1 }", 2, [1, 1]),
    ((2, 3, 5, 6), (2, 3, 3, 4), "crop_param { offset: 2 offset: 1 }", 2, [2, 1]),
    ((2, 4, 5, 6), (1, 2, 3, 4), "crop_param { axis: 1 offset: 1 offset: 2 offset: 0 }", 1,
     [1, 2, 0]),
    ((4, 3, 5), (2, 9, 9), "crop_param { axis: 0 offset: 1 offset: 0 offset: 2 }", 0,
     None),     # shape error: axis 1 of bottom 1 is larger
    ((2, 3, 5, 6), (9, 9, 2, 6), "crop_param { axis: -2 offset: 3 offset: 0 }", 2, [3, 0]),
])
def test_crop_forward(s0, s1, params, axis, offsets):
    x = rand(s0, 40)
    layer = make_layer("Crop", params)
    bottom = make_blobs([x.copy(), rand(s1, 41)])
    if offsets is None:
        with pytest.raises(ShapeError, match="out of range"):
            run_forward(layer, bottom)
        return
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, ref_crop(x, s1, axis, offsets))


@pytest.mark.parametrize("s0,s1,params", [
    ((2, 2, 4, 4), (2, 2, 2, 3), "crop_param { offset: 1 }"),
    ((3, 4, 3), (1, 2, 2), "crop_param { axis: 0 offset: 2 offset: 1 offset: 0 }"),
])
def test_crop_gradient(s0, s1, params):
    bottom = make_blobs([s0, s1], seed=42)
    check_grad(make_layer("Crop", params), bottom, check_bottom=[0])


def test_crop_gives_no_gradient_to_the_reference_bottom():
    layer = make_layer("Crop")
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)
    bottom = make_blobs([(1, 1, 3, 3), (1, 1, 2, 2)])
    top = run_forward(layer, bottom)
    bottom[1].diff[...] = 5.0
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    assert np.all(bottom[1].diff == 0.0)
    np.testing.assert_array_equal(bottom[0].diff, [[[[1, 1, 0], [1, 1, 0], [0, 0, 0]]]])


def test_crop_errors():
    with pytest.raises(ShapeError, match="offset 2 \\+ size 4 exceeds"):
        run_forward(make_layer("Crop", "crop_param { offset: 2 }"),
                    make_blobs([(1, 1, 5, 5), (1, 1, 4, 4)]))
    with pytest.raises(ConfigError, match="one per cropped axis") as e:
        run_forward(make_layer("Crop", "crop_param { offset: 1 offset: 1 offset: 1 }"),
                    make_blobs([(1, 1, 5, 5), (1, 1, 4, 4)]))
    assert e.value.field == "crop_param.offset"
    with pytest.raises(ShapeError, match="fewer axes"):
        run_forward(make_layer("Crop"), make_blobs([(1, 1, 5, 5), (1, 4, 4)]))


# --------------------------------------------------------------------------------------------
# Tile

@pytest.mark.parametrize("shape,axis,tiles", [((2, 3, 2), 1, 3), ((2, 3), 0, 2),
                                              ((2, 3, 2), -1, 4), ((1, 2, 2), 2, 1)])
def test_tile_forward(shape, axis, tiles):
    x = rand(shape, 50)
    layer = make_layer("Tile", f"tile_param {{ axis: {axis} tiles: {tiles} }}")
    top = run_forward(layer, make_blobs([x.copy()]))
    np.testing.assert_array_equal(top[0].data, ref_tile(x, axis % len(shape), tiles))


@pytest.mark.parametrize("shape,axis,tiles", [((2, 3, 2), 1, 3), ((2, 3), 0, 2)])
def test_tile_gradient(shape, axis, tiles):
    check_grad(make_layer("Tile", f"tile_param {{ axis: {axis} tiles: {tiles} }}"),
               make_blobs([shape], seed=51))


@pytest.mark.parametrize("params", ["", "tile_param { tiles: 0 }", "tile_param { tiles: -2 }"])
def test_tile_errors(params):
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Tile", params), make_blobs([(2, 3)]))
    assert e.value.field == "tile_param.tiles"


# --------------------------------------------------------------------------------------------
# Reduction

@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 2.5), (2, -0.7), (-1, 1.0)])
def test_reduction_forward(op, axis, coeff):
    x = rand((2, 3, 4), 60)
    layer = make_layer("Reduction",
                       f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}")
    top = run_forward(layer, make_blobs([x.copy()]))
    ax = axis % 3
    assert top[0].shape == x.shape[:ax]
    np.testing.assert_allclose(top[0].data, ref_reduction(x, op, ax, f32(coeff)), rtol=1e-12)


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_reduction_gradient(op, axis):
    # ASUM has a kink at 0: keep the inputs at |x| >= 0.2
    rng = np.random.default_rng(61)
    x = rng.uniform(0.2, 1.5, (2, 3, 2)) * rng.choice([-1.0, 1.0], (2, 3, 2))
    layer = make_layer("Reduction",
                       f"reduction_param {{ operation: {op} axis: {axis} coeff: 1.5 }}")
    check_grad(layer, make_blobs([x]))


def test_reduction_default_is_sum_over_everything():
    x = rand((2, 3), 62)
    top = run_forward(make_layer("Reduction"), make_blobs([x.copy()]))
    assert top[0].shape == ()
    assert float(top[0].data) == pytest.approx(x.sum(), rel=1e-12)


def test_reduction_errors():
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Reduction", "reduction_param { axis: 3 }"),
                    make_blobs([(2, 3, 4)]))
    assert e.value.field == "reduction_param.axis"


# --------------------------------------------------------------------------------------------
# Silence

def test_silence():
    bottom = make_blobs([(2, 3), (4,)])
    layer = make_layer("Silence")
    top = run_forward(layer, bottom, ntop=0)
    assert top == []
    for b in bottom:
        b.diff[...] = 3.0
    layer.backward([], [True, False], bottom)
    assert np.all(bottom[0].diff == 0.0) and np.all(bottom[1].diff == 3.0)
    check_grad(make_layer("Silence"), make_blobs([(2, 3), (3,)]), ntop=0)
    with pytest.raises(ConfigError, match="0 tops"):
        run_forward(make_layer("Silence"), make_blobs([(2,)]), ntop=1)


# --------------------------------------------------------------------------------------------
# ArgMax

def ref_argmax(x, k, out_max_val, axis=None):
    if axis is None:
        n = x.shape[0]
        shape = [1] * max(3, x.ndim)
        shape[0], shape[1], shape[2] = n, 2 if out_max_val else 1, k
        out = np.zeros((n, shape[1], k))
        for i in range(n):
            pairs = ref_argmax_pairs(x[i].ravel(), k)
            for j, (v, idx) in enumerate(pairs):
                out[i, 0, j] = idx
                if out_max_val:
                    out[i, 1, j] = v
        return out.reshape(shape)
    xm = np.moveaxis(x, axis, -1)
    out = np.empty(xm.shape[:-1] + (k,))
    for idx in np.ndindex(*xm.shape[:-1]):
        pairs = ref_argmax_pairs(xm[idx], k)
        out[idx] = [v if out_max_val else j for v, j in pairs]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("shape,params", [
    ((3, 10), ""),
    ((2, 3, 2, 2), "argmax_param { top_k: 3 }"),
    ((2, 3, 4), "argmax_param { out_max_val: true top_k: 2 }"),
    ((2, 5), "argmax_param { out_max_val: true }"),
    ((2, 4, 3), "argmax_param { axis: 1 }"),
    ((2, 4, 3), "argmax_param { axis: 1 top_k: 3 out_max_val: true }"),
    ((2, 4, 3), "argmax_param { axis: -1 top_k: 2 }"),
    ((5, 2), "argmax_param { axis: 0 top_k: 5 }"),
])
def test_argmax_forward(shape, params):
    x = rand(shape, 70)
    layer = make_layer("ArgMax", params)
    top = run_forward(layer, make_blobs([x.copy()]))
    p = layer.param.argmax_param
    ref = ref_argmax(x, p.top_k, p.out_max_val, p.axis if p.HasField("axis") else None)
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
    assert ref_argmax(x, k, False).ravel().tolist() == [4.0, 2.0, 1.0][:k]


def test_argmax_errors():
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 7 }"), make_blobs([(2, 3, 2)]))
    assert e.value.field == "argmax_param.top_k"
    with pytest.raises(ConfigError, match="top_k 4 exceeds"):
        run_forward(make_layer("ArgMax", "argmax_param { axis: 1 top_k: 4 }"),
                    make_blobs([(2, 3, 2)]))
    with pytest.raises(ConfigError, match="at least 1"):
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 0 }"), make_blobs([(2, 3)]))
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


def test_softmax_helper_matches_reference():
    from netdef.layers.utility import softmax
    x = rand((2, 3, 4), 90)
    for axis in (0, 1, 2, -1):
        np.testing.assert_allclose(softmax(x, axis), ref_softmax(x, axis % 3), rtol=1e-12)
    y = softmax(x.astype(np.float32)[:, ::2], 1)          # non-contiguous float32 input
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, ref_softmax(x[:, ::2], 1), rtol=1e-5)


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
