"""Utility layers (Softmax, Concat, Slice, Split, Eltwise, Flatten, Reshape, Crop, Tile,
Reduction, Silence, ArgMax): forward values against float64 references written here from
Caffe's definitions (never by calling the layer), Caffe's gradient checker on every
differentiable bottom, a float32 smoke run, and the parameter / shape errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

RNG = np.random.default_rng(20240611)


def gradcheck(layer, bottom, top, **kw):
    """Caffe's checker (step 1e-2, threshold 1e-3); returns the worst scaled error."""
    return GradientChecker().check(layer, bottom, top, **kw)


# ---------------------------------------------------------------------------------------------
# Softmax
def softmax_ref(x, axis):
    """exp(x_c - max_c x) / sum_c exp(x_c - max_c x), written as explicit loops over the
    other axes so that it shares nothing with the layer's vectorised kernel."""
    x = np.asarray(x, dtype=np.float64)
    xm = np.moveaxis(x, axis, -1)
    out = np.empty_like(xm)
    for idx in np.ndindex(*xm.shape[:-1]):
        v = xm[idx]
        e = np.array([np.exp(t - max(v)) for t in v])
        out[idx] = e / sum(e)
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("shape,axis_param,axis", [
    ((2, 5), "", 1),                       # default axis: channels
    ((2, 3, 2, 2), "", 1),
    ((2, 3, 4), "softmax_param { axis: 2 }", 2),
    ((2, 3, 4, 2), "softmax_param { axis: 2 }", 2),
    ((3, 2, 4), "softmax_param { axis: -1 }", 2),
    ((4, 3), "softmax_param { axis: 0 }", 0),
])
def test_softmax_forward_and_gradient(shape, axis_param, axis):
    layer = make_layer("Softmax", axis_param)
    bottom = make_blobs([shape], seed=3)
    top = run_forward(layer, bottom)
    assert top[0].shape == shape
    ref = softmax_ref(bottom[0].data, axis)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-15)
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
    big = make_blobs([x + 1000.0])
    topb = run_forward(make_layer("Softmax"), big)
    assert np.all(np.isfinite(topb[0].data))
    np.testing.assert_allclose(topb[0].data, y, rtol=1e-12)


def test_softmax_float32_and_axis_error():
    layer = make_layer("Softmax", "softmax_param { axis: 2 }", dtype=np.float32)
    bottom = make_blobs([(2, 3, 4)], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, softmax_ref(bottom[0].data, 2), rtol=1e-5)
    with pytest.raises(ConfigError, match="softmax_param.axis|axis 3"):
        run_forward(make_layer("Softmax", "softmax_param { axis: 3 }"), make_blobs([(2, 3, 4)]))


# ---------------------------------------------------------------------------------------------
# Concat
def concat_ref(xs, axis):
    """Element-by-element placement: top[..., off + i, ...] = x_k[..., i, ...]."""
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    out = np.full(shape, np.nan)
    off = 0
    for x in xs:
        for idx in np.ndindex(*x.shape):
            j = list(idx)
            j[axis] += off
            out[tuple(j)] = x[idx]
        off += x.shape[axis]
    return out


@pytest.mark.parametrize("params,axis,shapes", [
    ("", 1, [(2, 3, 2), (2, 1, 2), (2, 2, 2)]),
    ("concat_param { axis: 0 }", 0, [(1, 3, 2), (2, 3, 2), (1, 3, 2)]),
    ("concat_param { axis: 1 }", 1, [(2, 2, 1, 2), (2, 1, 1, 2), (2, 3, 1, 2)]),
    ("concat_param { axis: -1 }", 2, [(2, 2, 1), (2, 2, 3), (2, 2, 2)]),
    ("concat_param { concat_dim: 0 }", 0, [(2, 3), (1, 3), (3, 3)]),     # legacy
    ("concat_param { concat_dim: 1 }", 1, [(2, 1, 2), (2, 2, 2), (2, 1, 2)]),
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
    layer.backward(top, [True] * 3, bottom)
    off = 0
    for b in bottom:
        n = b.shape[axis]
        np.testing.assert_array_equal(b.diff, np.take(dy, range(off, off + n), axis=axis))
        off += n
    gradcheck(layer, bottom, top)


def test_concat_propagate_down_subset_and_float32():
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
    with pytest.raises(ShapeError, match="must agree"):      # batch differs on axis 1 concat
        run_forward(make_layer("Concat"), make_blobs([(2, 3), (3, 3)]))
    with pytest.raises(ShapeError, match="must agree"):      # number of axes differs
        run_forward(make_layer("Concat"), make_blobs([(2, 3), (2, 3, 1)]))
    with pytest.raises(ConfigError, match="concat_dim"):
        run_forward(make_layer("Concat", "concat_param { axis: 1 concat_dim: 1 }"),
                    make_blobs([(2, 3), (2, 3)]))
    with pytest.raises(ConfigError, match="out of range"):
        run_forward(make_layer("Concat", "concat_param { concat_dim: 2 }"),
                    make_blobs([(2, 3), (2, 3)]))
    with pytest.raises(ConfigError, match="out of range"):
        run_forward(make_layer("Concat", "concat_param { axis: -3 }"),
                    make_blobs([(2, 3), (2, 3)]))


# ---------------------------------------------------------------------------------------------
# Slice
@pytest.mark.parametrize("params,shape,axis,bounds", [
    ("slice_param { slice_point: 1 slice_point: 4 }", (2, 6, 2), 1, [0, 1, 4, 6]),
    ("slice_param { axis: 0 slice_point: 2 }", (5, 2), 0, [0, 2, 5]),
    ("slice_param { axis: 1 }", (2, 6, 1), 1, [0, 2, 4, 6]),                  # equal parts
    ("slice_param { axis: -1 }", (2, 2, 4), 2, [0, 2, 4]),                    # equal parts
    ("slice_param { slice_dim: 1 slice_point: 5 }", (2, 6), 1, [0, 5, 6]),    # legacy
    ("slice_param { slice_dim: 0 }", (6, 2), 0, [0, 3, 6]),                   # legacy, equal
])
def test_slice(params, shape, axis, bounds):
    ntop = len(bounds) - 1
    layer = make_layer("Slice", params)
    bottom = make_blobs([shape], seed=9)
    top = run_forward(layer, bottom, ntop=ntop)
    x = bottom[0].data
    for k, t in enumerate(top):
        expect_shape = list(shape)
        expect_shape[axis] = bounds[k + 1] - bounds[k]
        assert t.shape == tuple(expect_shape)
        for idx in np.ndindex(*t.shape):
            j = list(idx)
            j[axis] += bounds[k]
            assert t.data[idx] == x[tuple(j)]
    gradcheck(layer, bottom, top)


def test_slice_backward_places_diffs():
    layer = make_layer("Slice", "slice_param { slice_point: 1 }", dtype=np.float32)
    bottom = make_blobs([(2, 3)], dtype=np.float32)
    top = run_forward(layer, bottom, ntop=2)
    assert top[1].data.dtype == np.float32
    top[0].diff[...] = 1.0
    top[1].diff[...] = 2.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[1, 2, 2], [1, 2, 2]])


def test_slice_errors():
    # not increasing
    with pytest.raises(ConfigError, match="slice_point"):
        run_forward(make_layer("Slice", "slice_param { slice_point: 4 slice_point: 2 }"),
                    make_blobs([(2, 6)]), ntop=3)
    # zero point
    with pytest.raises(ConfigError, match="slice_point"):
        run_forward(make_layer("Slice", "slice_param { slice_point: 0 slice_point: 2 }"),
                    make_blobs([(2, 6)]), ntop=3)
    # wrong number of points for the tops
    with pytest.raises(ConfigError, match="one\\s+fewer|slice_point"):
        run_forward(make_layer("Slice", "slice_param { slice_point: 2 }"),
                    make_blobs([(2, 6)]), ntop=3)
    # point past the end of the axis
    with pytest.raises(NetdefError, match="slice_point") as e:
        run_forward(make_layer("Slice", "slice_param { slice_point: 7 }"),
                    make_blobs([(2, 6)]), ntop=2)
    assert "7" in str(e.value) and "6" in str(e.value)
    # equal parts impossible
    with pytest.raises(ShapeError, match="equal parts"):
        run_forward(make_layer("Slice"), make_blobs([(2, 5)]), ntop=2)
    with pytest.raises(ConfigError, match="slice_dim"):
        run_forward(make_layer("Slice", "slice_param { axis: 1 slice_dim: 1 }"),
                    make_blobs([(2, 4)]), ntop=2)


# ---------------------------------------------------------------------------------------------
# Split
@pytest.mark.parametrize("shape", [(2, 3), (1, 2, 2, 2)])
def test_split(shape):
    layer = make_layer("Split")
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom, ntop=3)
    for t in top:
        assert t.shape == shape
        np.testing.assert_array_equal(t.data, bottom[0].data)
    d = [RNG.standard_normal(shape) for _ in range(3)]
    for t, v in zip(top, d):
        t.diff[...] = v
    bottom[0].diff[...] = 99.0                  # backward overwrites, never accumulates
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, d[0] + d[1] + d[2], rtol=1e-14)
    gradcheck(layer, bottom, top)


def test_split_one_top_and_float32():
    layer = make_layer("Split", dtype=np.float32)
    bottom = make_blobs([(2, 2)], dtype=np.float32)
    top = run_forward(layer, bottom, ntop=1)
    top[0].diff[...] = 3.0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.dtype == np.float32
    np.testing.assert_array_equal(bottom[0].diff, 3.0)


# ---------------------------------------------------------------------------------------------
# Eltwise
def eltwise_inputs(shape=(2, 3, 2), n=3, seed=0):
    """Distinct, nonzero values of mixed sign (no ties, no zeros: MAX and unstable PROD are
    differentiable there)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    vals = rng.permutation(n * size).astype(float) / (n * size) + 0.1
    vals *= rng.choice([-1.0, 1.0], size=n * size)
    return [vals[k * size:(k + 1) * size].reshape(shape) for k in range(n)]


@pytest.mark.parametrize("params,coeff", [
    ("", [1, 1, 1]),
    ("eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 }", [0.5, -2, 3]),
    ("eltwise_param { coeff: 1 coeff: 0 coeff: -1 }", [1, 0, -1]),
])
def test_eltwise_sum(params, coeff):
    xs = eltwise_inputs()
    layer = make_layer("Eltwise", params)
    bottom = make_blobs(xs)
    top = run_forward(layer, bottom)
    ref = sum(c * x for c, x in zip(coeff, xs))
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-14)
    dy = RNG.standard_normal(ref.shape)
    top[0].diff[...] = dy
    layer.backward(top, [True] * 3, bottom)
    for c, b in zip(coeff, bottom):
        np.testing.assert_allclose(b.diff, c * dy, rtol=1e-14)
    gradcheck(layer, bottom, top)


@pytest.mark.parametrize("stable", [True, False])
@pytest.mark.parametrize("n", [2, 3])
def test_eltwise_prod(stable, n):
    xs = eltwise_inputs(n=n, seed=n)
    layer = make_layer("Eltwise", f"eltwise_param {{ operation: PROD "
                                  f"stable_prod_grad: {str(stable).lower()} }}")
    bottom = make_blobs(xs)
    top = run_forward(layer, bottom)
    ref = np.ones_like(xs[0])
    for x in xs:
        ref = ref * x
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-14)
    gradcheck(layer, bottom, top)


def test_eltwise_prod_stable_grad_handles_zeros():
    xs = [np.array([[0.0, 2.0], [3.0, -1.0]]), np.array([[4.0, 0.5], [0.0, 2.0]])]
    layer = make_layer("Eltwise", "eltwise_param { operation: PROD }")   # stable by default
    bottom = make_blobs(xs)
    top = run_forward(layer, bottom)
    top[0].diff[...] = 1.0
    layer.backward(top, [True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, xs[1])    # d(ab)/da = b, even where a = 0
    np.testing.assert_array_equal(bottom[1].diff, xs[0])


def test_eltwise_max():
    xs = eltwise_inputs(n=3, seed=5)
    layer = make_layer("Eltwise", "eltwise_param { operation: MAX }")
    bottom = make_blobs(xs)
    top = run_forward(layer, bottom)
    ref = np.empty_like(xs[0])
    arg = np.empty(xs[0].shape, int)
    for idx in np.ndindex(*ref.shape):
        vals = [x[idx] for x in xs]
        ref[idx] = max(vals)
        arg[idx] = vals.index(max(vals))
    np.testing.assert_array_equal(top[0].data, ref)
    dy = RNG.standard_normal(ref.shape)
    top[0].diff[...] = dy
    layer.backward(top, [True] * 3, bottom)
    for k, b in enumerate(bottom):
        np.testing.assert_array_equal(b.diff, np.where(arg == k, dy, 0.0))
    gradcheck(layer, bottom, top)


def test_eltwise_max_tie_rule():
    # Caffe: bottom 1 wins a tie against bottom 0 (a > b else b); a later bottom must be
    # strictly larger than the running max to take over
    a = np.array([1.0, 2.0, 5.0])
    b = np.array([1.0, 3.0, 4.0])
    c = np.array([0.0, 3.0, 5.0])
    layer = make_layer("Eltwise", "eltwise_param { operation: MAX }")
    bottom = make_blobs([a, b, c])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, [1.0, 3.0, 5.0])
    top[0].diff[...] = 1.0
    layer.backward(top, [True] * 3, bottom)
    np.testing.assert_array_equal(bottom[0].diff, [0, 0, 1])
    np.testing.assert_array_equal(bottom[1].diff, [1, 1, 0])
    np.testing.assert_array_equal(bottom[2].diff, [0, 0, 0])


def test_eltwise_float32():
    xs = eltwise_inputs(n=2)
    for params, ref in (("", xs[0] + xs[1]), ("eltwise_param { operation: PROD }", xs[0] * xs[1]),
                        ("eltwise_param { operation: MAX }", np.maximum(xs[0], xs[1]))):
        layer = make_layer("Eltwise", params, dtype=np.float32)
        top = run_forward(layer, make_blobs(xs, dtype=np.float32))
        assert top[0].data.dtype == np.float32
        np.testing.assert_allclose(top[0].data, ref, rtol=1e-6)


def test_eltwise_errors():
    with pytest.raises(ConfigError, match="coeff") as e:
        run_forward(make_layer("Eltwise", "eltwise_param { coeff: 1 coeff: 2 }"),
                    make_blobs([(2,), (2,), (2,)]))
    assert "2 coeff" in str(e.value) and "3 bottoms" in str(e.value)
    with pytest.raises(ConfigError, match="SUM"):
        run_forward(make_layer("Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 2 }"),
                    make_blobs([(2,), (2,)]))
    with pytest.raises(ShapeError, match="equal shapes"):
        run_forward(make_layer("Eltwise"), make_blobs([(2, 3), (3, 2)]))
    with pytest.raises(ConfigError, match="at least 2 bottoms"):
        run_forward(make_layer("Eltwise"), make_blobs([(2, 3)]))


# ---------------------------------------------------------------------------------------------
# Flatten
@pytest.mark.parametrize("params,shape,expect", [
    ("", (2, 3, 4, 2), (2, 24)),
    ("flatten_param { axis: 2 }", (2, 3, 4, 2), (2, 3, 8)),
    ("flatten_param { axis: 1 end_axis: 2 }", (2, 3, 4, 2), (2, 12, 2)),
    ("flatten_param { axis: 0 end_axis: 1 }", (2, 3, 4), (6, 4)),
    ("flatten_param { axis: 0 }", (2, 3, 4), (24,)),
    ("flatten_param { axis: -3 end_axis: -2 }", (2, 3, 4, 2), (2, 12, 2)),
    ("flatten_param { axis: 1 end_axis: 1 }", (2, 3, 4), (2, 3, 4)),
])
def test_flatten(params, shape, expect):
    layer = make_layer("Flatten", params)
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    assert top[0].shape == expect
    # row-major order is kept: element i of the flat view is element i of the bottom
    np.testing.assert_array_equal(top[0].data.ravel(), bottom[0].data.ravel())
    gradcheck(layer, bottom, top)


def test_flatten_errors():
    with pytest.raises(ConfigError, match="end_axis"):
        run_forward(make_layer("Flatten", "flatten_param { axis: 2 end_axis: 1 }"),
                    make_blobs([(2, 3, 4)]))
    with pytest.raises(ConfigError, match="flatten_param.axis|out of range"):
        run_forward(make_layer("Flatten", "flatten_param { axis: 4 }"), make_blobs([(2, 3, 4)]))


# ---------------------------------------------------------------------------------------------
# Reshape
@pytest.mark.parametrize("params,shape,expect", [
    ("reshape_param { shape { dim: 0 dim: -1 } }", (2, 3, 4, 2), (2, 24)),
    ("reshape_param { shape { dim: -1 dim: 4 } }", (2, 3, 4), (6, 4)),
    ("reshape_param { shape { dim: 0 dim: 0 dim: 0 dim: 0 } }", (2, 3, 4, 2), (2, 3, 4, 2)),
    ("reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } }", (2, 3, 4, 2), (2, 2, 6, 2)),
    ("reshape_param { shape { dim: 6 dim: 4 } }", (2, 3, 4), (6, 4)),
    # axis / num_axes: replace a range of axes
    ("reshape_param { axis: 1 num_axes: 2 shape { dim: -1 } }", (2, 3, 4, 2), (2, 12, 2)),
    ("reshape_param { axis: 1 num_axes: 1 shape { dim: 1 dim: 3 } }", (2, 3, 4), (2, 1, 3, 4)),
    ("reshape_param { axis: 0 num_axes: 0 shape { dim: 1 dim: 1 } }", (2, 3), (1, 1, 2, 3)),
    ("reshape_param { axis: 1 num_axes: 0 shape { dim: 1 } }", (2, 3), (2, 1, 3)),
    ("reshape_param { axis: -1 num_axes: 0 shape { dim: 1 } }", (2, 3), (2, 3, 1)),
    # negative axis: start = num_axes + axis + 1, so -2 replaces only the last axis
    ("reshape_param { axis: -2 shape { dim: 2 dim: -1 } }", (2, 3, 4), (2, 3, 2, 2)),
    ("reshape_param { axis: 1 shape { dim: 0 dim: -1 } }", (2, 3, 4, 2), (2, 3, 8)),
])
def test_reshape(params, shape, expect):
    layer = make_layer("Reshape", params)
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    assert top[0].shape == expect
    np.testing.assert_array_equal(top[0].data.ravel(), bottom[0].data.ravel())
    gradcheck(layer, bottom, top)


def test_reshape_follows_new_bottom_shape():
    layer = make_layer("Reshape", "reshape_param { shape { dim: 0 dim: -1 } }")
    bottom = make_blobs([(2, 3, 4)])
    top = run_forward(layer, bottom)
    bottom[0].reshape((5, 2, 2))
    layer.reshape(bottom, top)
    assert top[0].shape == (5, 4)


@pytest.mark.parametrize("params,shape,err,word", [
    ("reshape_param { shape { dim: -1 dim: -1 } }", (2, 3), ConfigError, "at most one"),
    ("reshape_param { shape { dim: 7 } }", (2, 3), ShapeError, "has 7 elements"),
    ("reshape_param { shape { dim: 2 dim: 2 } }", (2, 3), ShapeError, "elements"),
    ("reshape_param { shape { dim: 4 dim: -1 } }", (2, 3), ShapeError, "cannot infer"),
    ("reshape_param { shape { dim: -2 } }", (2, 3), ConfigError, "-1"),
    ("reshape_param { shape { dim: 0 dim: 0 dim: 0 } }", (2, 3), ConfigError, "copy"),
    ("reshape_param { axis: 4 shape { dim: 1 } }", (2, 3), ConfigError, "out of range"),
    ("reshape_param { axis: 1 num_axes: 3 shape { dim: -1 } }", (2, 3), ConfigError,
     "num_axes"),
])
def test_reshape_errors(params, shape, err, word):
    with pytest.raises(err, match=word):
        run_forward(make_layer("Reshape", params), make_blobs([shape]))


# ---------------------------------------------------------------------------------------------
# Crop
@pytest.mark.parametrize("params,s0,s1,axis,offsets", [
    ("crop_param { axis: 0 }", (3, 4, 5), (2, 3, 4), 0, [0, 0, 0]),
    ("crop_param { axis: 1 offset: 1 }", (2, 4, 5), (2, 2, 3), 1, [0, 1, 1]),
    ("crop_param { axis: 1 offset: 0 }", (2, 4, 5), (7, 2, 3), 1, [0, 0, 0]),
    ("", (2, 2, 5, 6), (1, 1, 3, 3), 2, [0, 0, 0, 0]),           # default axis 2
    ("crop_param { offset: 1 offset: 2 }", (2, 2, 5, 6), (9, 9, 3, 3), 2, [0, 0, 1, 2]),
    ("crop_param { axis: -1 offset: 2 }", (2, 3, 6), (1, 1, 3), 2, [0, 0, 2]),
    ("crop_param { axis: 0 offset: 1 offset: 0 offset: 2 }", (3, 2, 5), (2, 2, 2), 0,
     [1, 0, 2]),
])
def test_crop(params, s0, s1, axis, offsets):
    layer = make_layer("Crop", params)
    bottom = make_blobs([s0, s1])
    top = run_forward(layer, bottom)
    # bottom 0's dims before the crop axis, bottom 1's from it on
    expect = tuple(s0[i] if i < axis else s1[i] for i in range(len(s0)))
    assert top[0].shape == expect
    ref = np.empty(expect)
    x = bottom[0].data
    for idx in np.ndindex(*expect):
        ref[idx] = x[tuple(i + o for i, o in zip(idx, offsets))]
    np.testing.assert_array_equal(top[0].data, ref)
    # bottom 1 only supplies a shape: not differentiable, left out of the check
    gradcheck(layer, bottom, top, check_bottom=[0])
    assert not layer.allow_force_backward(1)
    # backward: the top diff lands in the cropped window, zeros elsewhere (overwritten)
    dy = RNG.standard_normal(top[0].shape)
    top[0].diff[...] = dy
    bottom[0].diff[...] = 5.0
    layer.backward(top, [True, False], bottom)
    expect_dx = np.zeros(s0)
    for idx in np.ndindex(*dy.shape):
        expect_dx[tuple(i + o for i, o in zip(idx, offsets))] = dy[idx]
    np.testing.assert_array_equal(bottom[0].diff, expect_dx)


def test_crop_float32_and_errors():
    layer = make_layer("Crop", "crop_param { axis: 1 offset: 1 }", dtype=np.float32)
    bottom = make_blobs([(1, 3, 4), (1, 2, 2)], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, bottom[0].data[:, 1:3, 1:3])
    # offset + size past the end
    with pytest.raises(ShapeError, match="out of range|exceed") as e:
        run_forward(make_layer("Crop", "crop_param { axis: 2 offset: 3 }"),
                    make_blobs([(1, 1, 5, 5), (1, 1, 3, 3)]))
    assert "offset 3" in str(e.value) and "5" in str(e.value)
    # the reference is larger than the data
    with pytest.raises(ShapeError, match="out of range|exceed"):
        run_forward(make_layer("Crop"), make_blobs([(1, 1, 3, 3), (1, 1, 4, 3)]))
    # wrong number of offsets
    with pytest.raises(ConfigError, match="offset"):
        run_forward(make_layer("Crop", "crop_param { axis: 1 offset: 0 offset: 0 }"),
                    make_blobs([(1, 2, 5, 5), (1, 1, 3, 3)]))
    with pytest.raises(ConfigError, match="crop_param.axis|out of range"):
        run_forward(make_layer("Crop", "crop_param { axis: 4 }"),
                    make_blobs([(1, 2, 5, 5), (1, 1, 3, 3)]))


# ---------------------------------------------------------------------------------------------
# Tile
@pytest.mark.parametrize("params,shape,axis,tiles", [
    ("tile_param { tiles: 3 }", (2, 2, 3), 1, 3),
    ("tile_param { axis: 0 tiles: 2 }", (2, 3), 0, 2),
    ("tile_param { axis: 2 tiles: 2 }", (2, 1, 3), 2, 2),
    ("tile_param { axis: -1 tiles: 3 }", (1, 2, 2), 2, 3),
    ("tile_param { axis: 1 tiles: 1 }", (2, 3), 1, 1),
])
def test_tile(params, shape, axis, tiles):
    layer = make_layer("Tile", params)
    bottom = make_blobs([shape])
    top = run_forward(layer, bottom)
    x = bottom[0].data
    expect = list(shape)
    expect[axis] *= tiles
    assert top[0].shape == tuple(expect)
    for idx in np.ndindex(*expect):
        j = list(idx)
        j[axis] %= shape[axis]
        assert top[0].data[idx] == x[tuple(j)]
    gradcheck(layer, bottom, top)


def test_tile_float32_and_errors():
    layer = make_layer("Tile", "tile_param { tiles: 2 }", dtype=np.float32)
    bottom = make_blobs([(1, 2)], dtype=np.float32)
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(top[0].data, np.hstack([bottom[0].data] * 2))
    top[0].diff[...] = [[1, 2, 3, 4]]
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[4, 6]])
    with pytest.raises(ConfigError, match="tiles"):
        run_forward(make_layer("Tile", "tile_param { tiles: 0 }"), make_blobs([(2, 3)]))
    with pytest.raises(ConfigError, match="tiles"):
        run_forward(make_layer("Tile", "tile_param { axis: 1 }"), make_blobs([(2, 3)]))


# ---------------------------------------------------------------------------------------------
# Reduction
def reduction_ref(x, op, axis, coeff):
    lead = x.shape[:axis]
    out = np.zeros(lead)
    for idx in np.ndindex(*lead):
        vals = np.asarray(x[idx]).ravel()
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


@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 2.5), (2, -0.5)])
def test_reduction(op, axis, coeff):
    params = f"reduction_param {{ operation: {op} axis: {axis}" + \
        (f" coeff: {coeff} }}" if coeff != 1.0 else " }")
    layer = make_layer("Reduction", params)
    # magnitudes away from 0 so ASUM's |x| kink is not crossed by the +-1e-2 probe
    x = RNG.uniform(0.1, 1.0, size=(2, 3, 2)) * RNG.choice([-1, 1], size=(2, 3, 2))
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    assert top[0].shape == x.shape[:axis]
    np.testing.assert_allclose(top[0].data, reduction_ref(x, op, axis, coeff), rtol=1e-13)
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
    with pytest.raises(ConfigError, match="reduction_param.axis|out of range"):
        run_forward(make_layer("Reduction", "reduction_param { axis: 3 }"), make_blobs([(2, 3)]))


# ---------------------------------------------------------------------------------------------
# Silence
def test_silence():
    layer = make_layer("Silence")
    bottom = make_blobs([(2, 3), (4,), (1, 1, 2)])
    before = [b.data.copy() for b in bottom]
    layer.setup(bottom, [])
    layer.forward(bottom, [])
    for b, d in zip(bottom, before):
        np.testing.assert_array_equal(b.data, d)
        b.diff[...] = 3.0
    layer.backward([], [True, False, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, 0.0)
    np.testing.assert_array_equal(bottom[1].diff, 3.0)     # propagate_down false: untouched
    np.testing.assert_array_equal(bottom[2].diff, 0.0)
    with pytest.raises(ConfigError, match="0 tops"):
        make_layer("Silence").setup(make_blobs([(2,)]), [Blob(())])


def test_silence_float32():
    layer = make_layer("Silence", dtype=np.float32)
    bottom = make_blobs([(2, 2)], dtype=np.float32)
    layer.setup(bottom, [])
    layer.forward(bottom, [])
    bottom[0].diff[...] = 1.0
    layer.backward([], [True], bottom)
    assert bottom[0].diff.dtype == np.float32 and not bottom[0].diff.any()


# ---------------------------------------------------------------------------------------------
# ArgMax
def argmax_ref_items(rows, k):
    """Per row: the first k of (value, index) pairs sorted in descending order (Caffe's
    std::partial_sort with std::greater<pair>: equal values put the larger index first)."""
    out_idx, out_val = [], []
    for r in rows:
        pairs = sorted(((float(v), j) for j, v in enumerate(r)), reverse=True)[:k]
        out_idx.append([j for _, j in pairs])
        out_val.append([v for v, _ in pairs])
    return np.array(out_idx, float), np.array(out_val)


def tied_input(shape, seed):
    """Small integers so that ties are common."""
    return np.random.default_rng(seed).integers(0, 4, size=shape).astype(float)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("out_max_val", [False, True])
@pytest.mark.parametrize("shape", [(3, 5), (2, 2, 3, 1)])
def test_argmax_flattened(k, out_max_val, shape):
    x = tied_input(shape, seed=k + 10 * out_max_val)
    layer = make_layer("ArgMax", f"argmax_param {{ top_k: {k} "
                                 f"out_max_val: {str(out_max_val).lower()} }}")
    top = run_forward(layer, make_blobs([x]))
    expect_shape = [1] * max(3, len(shape))
    expect_shape[0], expect_shape[1], expect_shape[2] = shape[0], 2 if out_max_val else 1, k
    assert top[0].shape == tuple(expect_shape)
    idx, val = argmax_ref_items(x.reshape(shape[0], -1), k)
    y = top[0].data.reshape(shape[0], -1, k)
    np.testing.assert_array_equal(y[:, 0], idx)
    if out_max_val:
        np.testing.assert_array_equal(y[:, 1], val)


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_axis(axis, k, out_max_val):
    shape = (3, 4, 2)
    x = tied_input(shape, seed=axis + 7 * k)
    layer = make_layer("ArgMax", f"argmax_param {{ axis: {axis} top_k: {k} "
                                 f"out_max_val: {str(out_max_val).lower()} }}")
    top = run_forward(layer, make_blobs([x]))
    a = axis % 3
    expect_shape = list(shape)
    expect_shape[a] = k
    assert top[0].shape == tuple(expect_shape)
    xm = np.moveaxis(x, a, -1)
    idx, val = argmax_ref_items(xm.reshape(-1, shape[a]), k)
    want = (val if out_max_val else idx).reshape(xm.shape[:-1] + (k,))
    np.testing.assert_array_equal(top[0].data, np.moveaxis(want, -1, a))


def test_argmax_tie_examples_and_float32():
    x = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, -1.0, 4.0, 4.0]])
    layer = make_layer("ArgMax", "argmax_param { top_k: 3 out_max_val: true }",
                       dtype=np.float32)
    top = run_forward(layer, make_blobs([x], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, [[[2, 1, 0], [3, 3, 1]], [[3, 2, 0], [4, 4, 2]]])
    top = run_forward(make_layer("ArgMax"), make_blobs([x]))
    np.testing.assert_array_equal(top[0].data.reshape(-1), [2, 3])
    layer = make_layer("ArgMax", "argmax_param { axis: 0 }")
    top = run_forward(layer, make_blobs([np.array([[5.0, 1.0], [5.0, 2.0]])]))
    np.testing.assert_array_equal(top[0].data, [[1, 1]])
    assert not layer.allow_force_backward(0)


def test_argmax_errors():
    with pytest.raises(ConfigError, match="top_k"):
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 6 }"), make_blobs([(2, 5)]))
    with pytest.raises(ConfigError, match="top_k"):
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 4 axis: 1 }"),
                    make_blobs([(2, 3, 5)]))
    with pytest.raises(ConfigError, match="top_k"):
        run_forward(make_layer("ArgMax", "argmax_param { top_k: 0 }"), make_blobs([(2, 5)]))
    with pytest.raises(ConfigError, match="argmax_param.axis|out of range"):
        run_forward(make_layer("ArgMax", "argmax_param { axis: 2 }"), make_blobs([(2, 5)]))
