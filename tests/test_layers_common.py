"""Common layers (InnerProduct, Embed, Scale, Bias): forward against the float64 references of
layer_refs (explicit sums written from Caffe's definitions, never by calling the layer), backward
against the formulas, Caffe's gradient checker on every differentiable bottom and parameter,
parameter-gradient accumulation, in-place use, float32, shape-only setup, parameter and shape
errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

from layer_refs import broadcast_ref, ip_ref, reduce_ref

GAUSS = "{ type: 'gaussian' std: 1 }"


def fresh(*shapes, seed=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return make_blobs([rng.standard_normal(s) for s in shapes], dtype=dtype)


def gradcheck(layer, bottom, top, **kw):
    return GradientChecker().check(layer, bottom, top, **kw)


# --------------------------------------------------------------------------------------------
# InnerProduct

@pytest.mark.parametrize("shape,params,axis", [
    ((2, 3, 2, 2), "num_output: 4", 1),
    ((2, 3, 4), "num_output: 2 axis: 2", 2),
    ((2, 3, 4), "num_output: 3 axis: -1 transpose: true", 2),
    ((3, 5), "num_output: 3 transpose: true", 1),
    ((2, 6), "num_output: 2 bias_term: false", 1),
    ((2, 2, 3), "num_output: 2 axis: 0", 0),
])
def test_inner_product(shape, params, axis):
    layer = make_layer("InnerProduct", f"inner_product_param {{ {params} weight_filler {GAUSS} "
                                       f"bias_filler {GAUSS} }}")
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    k = int(np.prod(shape[axis:]))
    n = layer.num_output
    transpose = "transpose" in params
    assert layer.blobs[0].shape == ((k, n) if transpose else (n, k))
    bias = "bias_term: false" not in params
    assert len(layer.blobs) == (2 if bias else 1)
    if bias:
        assert layer.blobs[1].shape == (n,)
    ref = ip_ref(bottom[0].data, layer.blobs[0].data,
                 layer.blobs[1].data if bias else None, axis, transpose)
    assert top[0].shape == shape[:axis] + (n,)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-13)
    GradientChecker().check(layer, bottom, top)


def test_inner_product_param_gradients_accumulate():
    layer = make_layer("InnerProduct", f"inner_product_param {{ num_output: 3 "
                                       f"weight_filler {GAUSS} bias_filler {GAUSS} }}")
    bottom = fresh((4, 5))
    top = run_forward(layer, bottom)
    top[0].diff = np.random.default_rng(1).standard_normal(top[0].shape)
    for p in layer.blobs:
        p.zero_diff()
    layer.backward(top, [True], bottom)
    once = [p.diff.copy() for p in layer.blobs]
    dx = bottom[0].diff.copy()
    layer.backward(top, [True], bottom)
    for p, g in zip(layer.blobs, once):
        np.testing.assert_allclose(p.diff, 2 * g)
    np.testing.assert_allclose(bottom[0].diff, dx)          # bottom diff is overwritten
    np.testing.assert_allclose(once[0], top[0].diff.T @ bottom[0].data)
    np.testing.assert_allclose(once[1], top[0].diff.sum(axis=0))
    np.testing.assert_allclose(dx, top[0].diff @ layer.blobs[0].data)


def test_inner_product_default_fillers_and_float32():
    layer = make_layer("InnerProduct", "inner_product_param { num_output: 3 }")
    top = run_forward(layer, fresh((2, 4)))
    assert not np.any(layer.blobs[0].data) and not np.any(layer.blobs[1].data)  # constant 0
    np.testing.assert_array_equal(top[0].data, 0.0)
    x = np.random.default_rng(2).standard_normal((3, 2, 4))
    params = f"inner_product_param {{ num_output: 5 weight_filler {GAUSS} }}"
    l32 = make_layer("InnerProduct", params, dtype=np.float32)
    b32 = make_blobs([x], dtype=np.float32)
    t32 = run_forward(l32, b32)
    assert t32[0].data.dtype == np.float32 and l32.blobs[0].data.dtype == np.float32
    ref = ip_ref(b32[0].data.astype(np.float64), l32.blobs[0].data.astype(np.float64),
                 l32.blobs[1].data.astype(np.float64), 1, False)
    np.testing.assert_allclose(t32[0].data, ref, rtol=1e-5, atol=1e-5)


def test_inner_product_errors():
    layer = make_layer("InnerProduct", "inner_product_param { num_output: 2 }")
    top = run_forward(layer, fresh((2, 6)))
    with pytest.raises(ShapeError, match="5 inputs.*expect 6"):
        layer.reshape(fresh((2, 5)), top)
    layer.reshape(fresh((7, 2, 3)), top)                 # same K, other batch: fine
    assert top[0].shape == (7, 2)
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("InnerProduct", "inner_product_param { num_output: 0 }"),
                    fresh((2, 3)))
    assert e.value.field == "inner_product_param.num_output"
    with pytest.raises(ConfigError, match="axis"):
        run_forward(make_layer("InnerProduct", "inner_product_param { num_output: 2 axis: 3 }"),
                    fresh((2, 3)))


@pytest.mark.parametrize("shape,axis,num_output,transpose,bias", [
    ((2, 3, 2), 1, 4, False, True),
    ((2, 3, 2), 1, 4, True, True),
    ((2, 3, 2), 1, 3, False, False),
    ((2, 3, 2), 1, 3, True, False),
    ((2, 3, 4), 2, 3, False, True),        # one product per (n, c) position
    ((2, 3, 4), 2, 2, True, False),
    ((2, 2, 3), -1, 2, False, True),
    ((3, 4), 0, 2, False, True),           # the whole blob is one item
    ((5,), 0, 3, True, True),
])
def test_inner_product_axis_transpose_bias_grid(shape, axis, num_output, transpose, bias):
    params = (f"inner_product_param {{ num_output: {num_output} axis: {axis} "
              f"transpose: {str(transpose).lower()} bias_term: {str(bias).lower()} "
              f"weight_filler {GAUSS} bias_filler {GAUSS} }}")
    layer = make_layer("InnerProduct", params)
    bottom = make_blobs([shape], seed=num_output)
    top = run_forward(layer, bottom)
    a = axis % len(shape)
    k = int(np.prod(shape[a:]))
    assert len(layer.blobs) == (2 if bias else 1)
    assert layer.blobs[0].shape == ((k, num_output) if transpose else (num_output, k))
    if bias:
        assert layer.blobs[1].shape == (num_output,)
    w = layer.blobs[0].data
    b = layer.blobs[1].data if bias else None
    ref = ip_ref(bottom[0].data, w, b, a, transpose)
    assert top[0].shape == shape[:a] + (num_output,)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    gradcheck(layer, bottom, top)


def test_inner_product_transpose_equals_plain_with_transposed_weights():
    x = make_blobs([(3, 2, 2)], seed=4)
    plain = make_layer("InnerProduct", f"inner_product_param {{ num_output: 3 "
                                       f"weight_filler {GAUSS} bias_filler {GAUSS} }}")
    yp = run_forward(plain, x)[0].data.copy()
    tr = make_layer("InnerProduct", "inner_product_param { num_output: 3 transpose: true }")
    top = [Blob((), dtype=np.float64)]
    tr.setup(x, top)
    assert tr.blobs[0].shape == (4, 3)
    tr.blobs[0].data[...] = plain.blobs[0].data.T
    tr.blobs[1].data[...] = plain.blobs[1].data
    tr.forward(x, top)
    np.testing.assert_allclose(top[0].data, yp, rtol=1e-13)


def test_inner_product_backward_formulas_and_param_accumulation():
    layer = make_layer("InnerProduct", f"inner_product_param {{ num_output: 2 "
                                       f"weight_filler {GAUSS} bias_filler {GAUSS} }}")
    bottom = make_blobs([(3, 4)], seed=2)
    top = run_forward(layer, bottom)
    dy = np.random.default_rng(0).standard_normal((3, 2))
    top[0].diff[...] = dy
    for p in layer.blobs:
        p.diff[...] = 0.0
    layer.backward(top, [True], bottom)
    x, w = bottom[0].data, layer.blobs[0].data
    np.testing.assert_allclose(bottom[0].diff, dy @ w, rtol=1e-13)
    np.testing.assert_allclose(layer.blobs[0].diff, dy.T @ x, rtol=1e-13)
    np.testing.assert_allclose(layer.blobs[1].diff, dy.sum(0), rtol=1e-13)
    # parameter gradients accumulate (+=) across backward passes (iter_size); bottom diffs
    # are overwritten
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * dy.T @ x, rtol=1e-13)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * dy.sum(0), rtol=1e-13)
    np.testing.assert_allclose(bottom[0].diff, dy @ w, rtol=1e-13)
    # frozen parameters (param_propagate_down false) are left alone
    layer.param_propagate_down = [False, False]
    for p in layer.blobs:
        p.diff[...] = 0.0
    layer.backward(top, [True], bottom)
    assert not layer.blobs[0].diff.any() and not layer.blobs[1].diff.any()


def test_inner_product_float32_with_set_weights():
    layer = make_layer("InnerProduct", "inner_product_param { num_output: 3 }",
                       dtype=np.float32)
    bottom = make_blobs([(2, 4)], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert layer.blobs[0].data.dtype == np.float32 and top[0].data.dtype == np.float32
    # Caffe's default filler is constant 0
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()
    layer.blobs[0].data[...] = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    layer.blobs[1].data[...] = [1, -1, 0.5]
    layer.forward(bottom, top)
    ref = ip_ref(bottom[0].data.astype(np.float64), layer.blobs[0].data.astype(np.float64),
                 layer.blobs[1].data.astype(np.float64), 1, False)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-6)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.dtype == np.float32 and layer.blobs[0].diff.dtype == np.float32


def test_inner_product_errors_name_both_sizes():
    layer = make_layer("InnerProduct", "inner_product_param { num_output: 2 }")
    bottom = make_blobs([(2, 3, 4)])
    top = run_forward(layer, bottom)
    bottom[0].reshape((2, 3, 5))         # K changes from 12 to 15: the weights do not fit
    with pytest.raises(ShapeError, match="12") as e:
        layer.reshape(bottom, top)
    assert "15" in str(e.value)
    bottom[0].reshape((5, 12))           # a new batch size with the same K is fine
    layer.reshape(bottom, top)
    assert top[0].shape == (5, 2)
    with pytest.raises(ConfigError, match="num_output"):
        run_forward(make_layer("InnerProduct", "inner_product_param { }"), make_blobs([(2, 3)]))
    with pytest.raises(ConfigError, match="inner_product_param.axis|out of range"):
        run_forward(make_layer("InnerProduct", "inner_product_param { num_output: 2 axis: 3 }"),
                    make_blobs([(2, 3)]))


# --------------------------------------------------------------------------------------------
# Embed

@pytest.mark.parametrize("idx,bias", [
    (np.array([[0, 4], [2, 2]], float), True),           # repeated index: gradients add up
    (np.array([3, 1, 3, 0, 3], float), False),
    (np.array([[[1, 0, 4]], [[4, 4, 2]]], float), True),
])
def test_embed(idx, bias):
    layer = make_layer("Embed", f"embed_param {{ num_output: 3 input_dim: 5 "
                                f"bias_term: {str(bias).lower()} weight_filler {GAUSS} "
                                f"bias_filler {GAUSS} }}")
    bottom = make_blobs([idx])
    top = run_forward(layer, bottom)
    assert layer.blobs[0].shape == (5, 3)
    assert top[0].shape == idx.shape + (3,)
    w = layer.blobs[0].data
    ref = np.zeros(idx.shape + (3,))
    for pos in np.ndindex(*idx.shape):
        for o in range(3):
            ref[pos + (o,)] = w[int(idx[pos]), o] + (layer.blobs[1].data[o] if bias else 0.0)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-14)
    assert not layer.allow_force_backward(0)
    GradientChecker().check(layer, bottom, top, check_bottom=[])
    # the weight gradient is a scatter-add, accumulated into the diff
    dy = np.random.default_rng(4).standard_normal(top[0].shape)
    top[0].diff = dy
    for p in layer.blobs:
        p.diff = np.ones(p.shape)
    layer.backward(top, [False], bottom)
    expect = np.ones((5, 3))
    for pos in np.ndindex(*idx.shape):
        expect[int(idx[pos])] += dy[pos]
    np.testing.assert_allclose(layer.blobs[0].diff, expect, rtol=1e-14)


@pytest.mark.parametrize("bad", [5.0, -1.0, 1.5])
def test_embed_bad_index(bad):
    layer = make_layer("Embed", "embed_param { num_output: 2 input_dim: 5 }")
    bottom = make_blobs([np.array([0.0, 1.0])])
    top = run_forward(layer, bottom)
    bottom[0].data = np.array([0.0, bad])
    with pytest.raises(NetdefError, match=f"index {bad:g}"):
        layer.forward(bottom, top)


def test_embed_config_errors_and_float32():
    for params, field in [("num_output: 0 input_dim: 3", "embed_param.num_output"),
                          ("num_output: 2", "embed_param.input_dim")]:
        with pytest.raises(ConfigError) as e:
            run_forward(make_layer("Embed", f"embed_param {{ {params} }}"),
                        make_blobs([np.zeros(2)]))
        assert e.value.field == field
    layer = make_layer("Embed", f"embed_param {{ num_output: 4 input_dim: 3 "
                                f"weight_filler {GAUSS} }}", dtype=np.float32)
    top = run_forward(layer, make_blobs([np.array([2.0, 0.0])], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, layer.blobs[0].data[[2, 0]])


@pytest.mark.parametrize("idx_shape,input_dim,num_output,bias", [
    ((4,), 5, 3, True),
    ((2, 3), 4, 2, True),
    ((2, 2, 1), 3, 4, False),
])
def test_embed_backward_formula(idx_shape, input_dim, num_output, bias):
    rng = np.random.default_rng(input_dim)
    idx = rng.integers(0, input_dim, size=idx_shape).astype(float)
    idx.ravel()[:2] = [1, 1]                 # a repeated index: its gradients must add up
    params = (f"embed_param {{ num_output: {num_output} input_dim: {input_dim} "
              f"bias_term: {str(bias).lower()} weight_filler {GAUSS} bias_filler {GAUSS} }}")
    layer = make_layer("Embed", params)
    bottom = make_blobs([idx])
    top = run_forward(layer, bottom)
    w = layer.blobs[0].data
    assert w.shape == (input_dim, num_output)
    assert len(layer.blobs) == (2 if bias else 1)
    assert top[0].shape == idx_shape + (num_output,)
    for pos in np.ndindex(*idx_shape):
        for j in range(num_output):
            expect = w[int(idx[pos]), j] + (layer.blobs[1].data[j] if bias else 0.0)
            assert top[0].data[pos + (j,)] == pytest.approx(expect, rel=1e-14)
    # weight gradient: rows of the top diff summed into the looked-up rows
    dy = rng.standard_normal(top[0].shape)
    top[0].diff[...] = dy
    for p in layer.blobs:
        p.diff[...] = 0.0
    layer.backward(top, [False], bottom)
    gw = np.zeros_like(w)
    for pos in np.ndindex(*idx_shape):
        gw[int(idx[pos])] += dy[pos]
    np.testing.assert_allclose(layer.blobs[0].diff, gw, rtol=1e-13)
    if bias:
        np.testing.assert_allclose(layer.blobs[1].diff, dy.reshape(-1, num_output).sum(0),
                                   rtol=1e-13)
    # the indices are not differentiable: check the parameters only
    gradcheck(layer, bottom, top, check_bottom=[])
    assert not layer.allow_force_backward(0)


def test_embed_float32_and_errors():
    layer = make_layer("Embed", f"embed_param {{ num_output: 2 input_dim: 3 "
                                f"weight_filler {GAUSS} }}", dtype=np.float32)
    bottom = make_blobs([np.array([2.0, 0.0])], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_allclose(top[0].data, layer.blobs[0].data[[2, 0]], rtol=1e-6)
    with pytest.raises(NetdefError, match="index 3"):
        run_forward(make_layer("Embed", "embed_param { num_output: 2 input_dim: 3 }"),
                    make_blobs([np.array([0.0, 3.0])]))
    with pytest.raises(NetdefError, match="index -1"):
        run_forward(make_layer("Embed", "embed_param { num_output: 2 input_dim: 3 }"),
                    make_blobs([np.array([-1.0, 0.0])]))
    with pytest.raises(ConfigError, match="input_dim"):
        run_forward(make_layer("Embed", "embed_param { num_output: 2 }"),
                    make_blobs([np.array([0.0])]))
    with pytest.raises(ConfigError, match="num_output"):
        run_forward(make_layer("Embed", "embed_param { input_dim: 2 }"),
                    make_blobs([np.array([0.0])]))


# --------------------------------------------------------------------------------------------
# Scale

SCALE_LEARNED = [  # shape, params, axis, operand shape
    ((2, 3, 4), f"bias_term: true filler {GAUSS} bias_filler {GAUSS}", 1, (3,)),
    ((2, 3, 4), f"axis: 1 num_axes: 2 filler {GAUSS}", 1, (3, 4)),
    ((2, 3, 4), f"axis: 0 num_axes: -1 filler {GAUSS} bias_term: true", 0, (2, 3, 4)),
    ((2, 3, 4, 2), f"axis: -2 filler {GAUSS}", 2, (4,)),
    ((2, 3, 4), f"num_axes: 0 filler {GAUSS} bias_term: true bias_filler {GAUSS}", 0, ()),
    ((2, 3, 4), f"axis: 2 num_axes: -1 filler {GAUSS}", 2, (4,)),
]


@pytest.mark.parametrize("shape,params,axis,oshape", SCALE_LEARNED)
def test_scale_learned(shape, params, axis, oshape):
    layer = make_layer("Scale", f"scale_param {{ {params} }}")
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    bias = "bias_term: true" in params
    assert [b.shape for b in layer.blobs] == [oshape] * (2 if bias else 1)
    ref = broadcast_ref(bottom[0].data, layer.blobs[0].data, axis, "mul")
    if bias:
        ref = broadcast_ref(ref, layer.blobs[1].data, axis, "add")
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-14)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("shape,sshape,params,axis", [
    ((2, 3, 4), (3,), "", 1),
    ((2, 3, 4), (3, 4), "bias_term: true bias_filler " + GAUSS, 1),
    ((2, 3, 4), (), "", 0),
    ((2, 3, 4), (2, 3), "axis: 0 bias_term: true bias_filler " + GAUSS, 0),
    ((2, 3, 4), (4,), "axis: -1", 2),
])
def test_scale_second_bottom(shape, sshape, params, axis):
    layer = make_layer("Scale", f"scale_param {{ {params} }}")
    bottom = fresh(shape, sshape)
    top = run_forward(layer, bottom)
    bias = "bias_term" in params
    assert [b.shape for b in layer.blobs] == ([sshape] if bias else [])
    ref = broadcast_ref(bottom[0].data, bottom[1].data, axis, "mul")
    if bias:
        ref = broadcast_ref(ref, layer.blobs[0].data, axis, "add")
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-14)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("params,second", [
    (f"bias_term: true filler {GAUSS} bias_filler {GAUSS}", None),
    (f"axis: 1 num_axes: 2 filler {GAUSS}", None),
    ("", (3,)),
    (f"bias_term: true bias_filler {GAUSS}", (3, 2)),
])
def test_scale_in_place(params, second):
    shape = (2, 3, 2)
    shapes = [shape] + ([second] if second else [])
    x = fresh(*shapes, seed=7)
    ref_layer = make_layer("Scale", f"scale_param {{ {params} }}")
    rt = run_forward(ref_layer, x)
    layer = make_layer("Scale", f"scale_param {{ {params} }}")
    bottom = fresh(*shapes, seed=7)
    layer.setup(bottom, bottom[:1])
    layer.forward(bottom, bottom[:1])
    np.testing.assert_allclose(bottom[0].data, rt[0].data, rtol=1e-14)
    # backward in place: diff arrays shared, the input comes from the layer's saved copy
    dy = np.random.default_rng(8).standard_normal(shape)
    rt[0].diff = dy
    bottom[0].diff = dy
    for p in ref_layer.blobs + layer.blobs:
        p.zero_diff()
    pd = [True] * len(shapes)
    ref_layer.backward(rt, pd, x)
    layer.backward(bottom[:1], pd, bottom)
    for a, b in zip(x, bottom):
        np.testing.assert_allclose(b.diff, a.diff, rtol=1e-14)
    for p, q in zip(layer.blobs, ref_layer.blobs):
        np.testing.assert_allclose(p.diff, q.diff, rtol=1e-14)
    bottom = fresh(*shapes, seed=9)
    checker_layer = make_layer("Scale", f"scale_param {{ {params} }}")
    GradientChecker().check(checker_layer, bottom, bottom[:1])


def test_scale_default_filler_is_identity_and_float32():
    layer = make_layer("Scale", "scale_param { bias_term: true }", dtype=np.float32)
    bottom = fresh((2, 3, 2), dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(layer.blobs[0].data, np.ones(3, np.float32))
    np.testing.assert_array_equal(layer.blobs[1].data, np.zeros(3, np.float32))
    np.testing.assert_array_equal(top[0].data, bottom[0].data)


def test_scale_errors():
    with pytest.raises(ShapeError, match="must match"):
        run_forward(make_layer("Scale", ""), fresh((2, 3, 4), (4,)))
    with pytest.raises(ShapeError, match="must match"):
        run_forward(make_layer("Scale", "scale_param { axis: 2 }"), fresh((2, 3, 4), (4, 2)))
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Scale", "scale_param { num_axes: -2 }"), fresh((2, 3)))
    assert e.value.field == "scale_param.num_axes"
    with pytest.raises(ConfigError, match="axes"):
        run_forward(make_layer("Scale", "scale_param { axis: 2 num_axes: 2 }"), fresh((2, 3, 4)))
    with pytest.raises(ConfigError, match="axis"):
        run_forward(make_layer("Scale", "scale_param { axis: 3 }"), fresh((2, 3, 4)))
    layer = make_layer("Scale", "")
    top = run_forward(layer, fresh((2, 3, 4)))
    with pytest.raises(ShapeError, match="must match"):
        layer.reshape(fresh((2, 5, 4)), top)          # learned (3,) no longer fits


# (params, bottom shape, operand axis in bottom, operand shape)
SCALE_LEARNED_FORMULAS = [
    ("", (2, 3, 2, 2), 1, (3,)),                                   # defaults: axis 1, 1 axis
    ("axis: 0 num_axes: -1", (2, 3, 2), 0, (2, 3, 2)),             # elementwise
    ("axis: 1 num_axes: 2", (2, 3, 2, 2), 1, (3, 2)),
    ("axis: 2 num_axes: -1", (2, 2, 3, 2), 2, (3, 2)),
    ("num_axes: 0", (2, 3, 2), 0, ()),                             # one scalar
    ("axis: -1", (2, 2, 3), 2, (3,)),
    ("axis: 0", (3, 2, 2), 0, (3,)),
]


@pytest.mark.parametrize("bias_term", [False, True])
@pytest.mark.parametrize("params,shape,axis,oshape", SCALE_LEARNED_FORMULAS)
def test_scale_learned_backward_formulas(params, shape, axis, oshape, bias_term):
    p = f"scale_param {{ {params} filler {GAUSS} bias_term: {str(bias_term).lower()} " \
        f"bias_filler {GAUSS} }}"
    layer = make_layer("Scale", p)
    bottom = make_blobs([shape], seed=len(shape))
    top = run_forward(layer, bottom)
    assert [b.shape for b in layer.blobs] == [oshape] * (2 if bias_term else 1)
    s = layer.blobs[0].data
    ref = broadcast_ref(bottom[0].data, s, axis, "mul")
    if bias_term:
        ref = broadcast_ref(ref, layer.blobs[1].data, axis, "add")
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-13)
    # analytic gradients from the formulas
    dy = np.random.default_rng(1).standard_normal(shape)
    top[0].diff[...] = dy
    for b in layer.blobs:
        b.diff[...] = 0.0
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, broadcast_ref(dy, s, axis, "mul"), rtol=1e-13)
    np.testing.assert_allclose(layer.blobs[0].diff,
                               reduce_ref(dy * bottom[0].data, shape, axis, len(oshape)),
                               rtol=1e-12, atol=1e-13)
    if bias_term:
        np.testing.assert_allclose(layer.blobs[1].diff, reduce_ref(dy, shape, axis, len(oshape)),
                                   rtol=1e-12, atol=1e-13)
    gradcheck(layer, bottom, top)


def test_scale_default_filler_is_one_and_bias_zero():
    layer = make_layer("Scale", "scale_param { bias_term: true }")
    bottom = make_blobs([(2, 3)])
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(layer.blobs[0].data, 1.0)
    np.testing.assert_array_equal(layer.blobs[1].data, 0.0)
    np.testing.assert_array_equal(top[0].data, bottom[0].data)


# (params, bottom shape, bottom[1] shape, axis)
SCALE_BOTTOM = [
    ("axis: 0", (2, 3, 2), (2, 3), 0),                 # broadcast at the beginning
    ("", (2, 3, 2, 2), (3, 2), 1),                     # middle (default axis 1)
    ("axis: 2", (2, 2, 3, 2), (3, 2), 2),              # end
    ("axis: 0", (2, 3, 2), (2, 3, 2), 0),              # elementwise
    ("", (2, 3, 2), (), 0),                            # scalar: any axis
    ("axis: -2", (2, 3, 2), (3, 2), 1),
    ("num_axes: 2", (2, 3, 2), (3,), 1),               # num_axes is ignored with bottom[1]
]


@pytest.mark.parametrize("bias_term", [False, True])
@pytest.mark.parametrize("params,shape,sshape,axis", SCALE_BOTTOM)
def test_scale_second_bottom_backward_formulas(params, shape, sshape, axis, bias_term):
    rng = np.random.default_rng(len(shape) + len(sshape))
    x = rng.standard_normal(shape)
    s = rng.standard_normal(sshape)
    p = f"scale_param {{ {params} bias_term: {str(bias_term).lower()} bias_filler {GAUSS} }}"
    layer = make_layer("Scale", p)
    bottom = make_blobs([x, s])
    top = run_forward(layer, bottom)
    # no learned scale; the bias (if any) has bottom[1]'s shape
    assert [b.shape for b in layer.blobs] == ([sshape] if bias_term else [])
    ref = broadcast_ref(x, s, axis, "mul")
    if bias_term:
        ref = broadcast_ref(ref, layer.blobs[0].data, axis, "add")
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-13)
    dy = rng.standard_normal(shape)
    top[0].diff[...] = dy
    layer.backward(top, [True, True], bottom)
    np.testing.assert_allclose(bottom[0].diff, broadcast_ref(dy, s, axis, "mul"), rtol=1e-13)
    np.testing.assert_allclose(bottom[1].diff, reduce_ref(dy * x, shape, axis, len(sshape)),
                               rtol=1e-12, atol=1e-13)
    gradcheck(layer, bottom, top)


@pytest.mark.parametrize("params,nbottom", [
    ("scale_param { filler " + GAUSS + " }", 1),
    ("scale_param { axis: 0 num_axes: -1 filler " + GAUSS + " bias_term: true bias_filler "
     + GAUSS + " }", 1),
    ("scale_param { axis: 1 }", 2),
    ("scale_param { axis: 1 bias_term: true bias_filler " + GAUSS + " }", 2),
])
def test_scale_in_place_against_out_of_place(params, nbottom):
    rng = np.random.default_rng(nbottom)
    x = rng.standard_normal((2, 3, 2))
    # reference: the same layer out of place
    ref_layer = make_layer("Scale", params)
    ref_bottom = make_blobs([x, rng.standard_normal((3,))][:nbottom])
    ref_top = run_forward(ref_layer, ref_bottom)
    dy = rng.standard_normal(x.shape)
    ref_top[0].diff[...] = dy
    ref_layer.backward(ref_top, [True] * nbottom, ref_bottom)

    layer = make_layer("Scale", params)
    bottom = make_blobs([b.data for b in ref_bottom])
    layer.setup(bottom, [bottom[0]])
    for a, b in zip(layer.blobs, ref_layer.blobs):
        a.data[...] = b.data
    layer.forward(bottom, [bottom[0]])
    np.testing.assert_allclose(bottom[0].data, ref_top[0].data, rtol=1e-14)
    bottom[0].diff[...] = dy
    for b in layer.blobs:
        b.diff[...] = 0.0
    layer.backward([bottom[0]], [True] * nbottom, bottom)
    np.testing.assert_allclose(bottom[0].diff, ref_bottom[0].diff, rtol=1e-13)
    if nbottom == 2:
        np.testing.assert_allclose(bottom[1].diff, ref_bottom[1].diff, rtol=1e-13)
    for a, b in zip(layer.blobs, ref_layer.blobs):
        np.testing.assert_allclose(a.diff, b.diff, rtol=1e-13)
    # and the checker, in place (top is bottom)
    bottom = make_blobs([b.data for b in ref_bottom])
    gradcheck(layer, bottom, [bottom[0]])


def test_scale_follows_a_reshaped_second_bottom():
    # Caffe's Reshape re-reads bottom[1]'s shape every time (e.g. a new batch size)
    layer = make_layer("Scale", "scale_param { axis: 0 }")
    bottom = make_blobs([(2, 3, 2), (2, 3)])
    top = run_forward(layer, bottom)
    bottom[0].reshape((4, 3, 2))
    bottom[1].reshape((4, 3))
    bottom[0].data[...] = np.random.default_rng(0).standard_normal((4, 3, 2))
    bottom[1].data[...] = np.random.default_rng(1).standard_normal((4, 3))
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, broadcast_ref(bottom[0].data, bottom[1].data, 0,
                                                          "mul"), rtol=1e-13)


def test_scale_float32():
    layer = make_layer("Scale", f"scale_param {{ filler {GAUSS} bias_term: true "
                                f"bias_filler {GAUSS} }}", dtype=np.float32)
    bottom = make_blobs([(2, 3, 2)], dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    ref = broadcast_ref(bottom[0].data.astype(np.float64), layer.blobs[0].data, 1, "mul")
    ref = broadcast_ref(ref, layer.blobs[1].data, 1, "add")
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-6)
    top[0].diff[...] = 1.0
    layer.backward(top, [True], bottom)
    assert bottom[0].diff.dtype == np.float32 and layer.blobs[0].diff.dtype == np.float32


def test_scale_errors_name_bottom1():
    with pytest.raises(ShapeError, match="bottom\\[1\\]") as e:
        run_forward(make_layer("Scale"), make_blobs([(2, 3, 4), (4,)]))
    assert "[2, 3, 4]" in str(e.value)
    with pytest.raises(ShapeError, match="bottom\\[1\\]"):
        run_forward(make_layer("Scale", "scale_param { axis: 1 }"),
                    make_blobs([(2, 3, 4), (3, 4, 1)]))           # runs past the last axis
    with pytest.raises(ShapeError, match="bottom\\[1\\]"):
        run_forward(make_layer("Scale", "scale_param { axis: 0 }"),
                    make_blobs([(2, 3), (3,)]))
    with pytest.raises(ConfigError, match="num_axes"):
        run_forward(make_layer("Scale", "scale_param { axis: 1 num_axes: 3 }"),
                    make_blobs([(2, 3, 4)]))
    with pytest.raises(ConfigError, match="num_axes"):
        run_forward(make_layer("Scale", "scale_param { num_axes: -2 }"), make_blobs([(2, 3)]))
    with pytest.raises(ConfigError, match="scale_param.axis|out of range"):
        run_forward(make_layer("Scale", "scale_param { axis: 3 }"), make_blobs([(2, 3)]))
    # a learned scale cannot follow a bottom whose covered axes change
    layer = make_layer("Scale")
    bottom = make_blobs([(2, 3)])
    top = run_forward(layer, bottom)
    bottom[0].reshape((2, 4))
    with pytest.raises(ShapeError):
        layer.reshape(bottom, top)


# --------------------------------------------------------------------------------------------
# Bias

@pytest.mark.parametrize("shape,params,axis,oshape", [
    ((2, 3, 2), f"filler {GAUSS}", 1, (3,)),
    ((2, 3, 2), f"axis: 0 num_axes: -1 filler {GAUSS}", 0, (2, 3, 2)),
    ((2, 3, 2), f"num_axes: 0 filler {GAUSS}", 0, ()),
    ((2, 3, 4, 2), f"axis: -2 num_axes: 2 filler {GAUSS}", 2, (4, 2)),
])
def test_bias_learned(shape, params, axis, oshape):
    layer = make_layer("Bias", f"bias_param {{ {params} }}")
    bottom = fresh(shape)
    top = run_forward(layer, bottom)
    assert [b.shape for b in layer.blobs] == [oshape]
    ref = broadcast_ref(bottom[0].data, layer.blobs[0].data, axis, "add")
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-14)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("shape,bshape,params,axis", [
    ((2, 3), (2, 3), "axis: 0", 0),
    ((2, 3, 4), (3,), "", 1),
    ((2, 3, 4), (), "", 0),
])
def test_bias_second_bottom(shape, bshape, params, axis):
    layer = make_layer("Bias", f"bias_param {{ {params} }}")
    bottom = fresh(shape, bshape)
    top = run_forward(layer, bottom)
    assert layer.blobs == []
    ref = broadcast_ref(bottom[0].data, bottom[1].data, axis, "add")
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-14)
    GradientChecker().check(layer, bottom, top)


@pytest.mark.parametrize("params,second", [(f"filler {GAUSS}", None), ("", (3,))])
def test_bias_in_place(params, second):
    shapes = [(2, 3, 2)] + ([second] if second else [])
    layer = make_layer("Bias", f"bias_param {{ {params} }}")
    bottom = fresh(*shapes, seed=5)
    x = bottom[0].data.copy()
    layer.setup(bottom, bottom[:1])
    layer.forward(bottom, bottom[:1])
    b = bottom[1].data if second else layer.blobs[0].data
    np.testing.assert_allclose(bottom[0].data, x + b.reshape(1, 3, 1), rtol=1e-14)
    bottom = fresh(*shapes, seed=6)
    GradientChecker().check(make_layer("Bias", f"bias_param {{ {params} }}"), bottom, bottom[:1])


def test_bias_default_filler_and_errors():
    layer = make_layer("Bias", "", dtype=np.float32)
    bottom = fresh((2, 3), dtype=np.float32)
    top = run_forward(layer, bottom)
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, bottom[0].data)        # constant 0 filler
    with pytest.raises(ShapeError, match="must match"):
        run_forward(make_layer("Bias", ""), fresh((2, 3, 4), (2,)))
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Bias", "bias_param { num_axes: 3 }"), fresh((2, 3)))
    assert e.value.field == "bias_param.num_axes"


BIAS_LEARNED = [
    ("", (2, 3, 2), 1, (3,)),
    ("axis: 0 num_axes: -1", (2, 3), 0, (2, 3)),
    ("axis: 1 num_axes: 2", (2, 3, 2, 2), 1, (3, 2)),
    ("num_axes: 0", (2, 3), 0, ()),
    ("axis: -1", (2, 2, 3), 2, (3,)),
]


@pytest.mark.parametrize("params,shape,axis,oshape", BIAS_LEARNED)
def test_bias_learned_backward_formula(params, shape, axis, oshape):
    layer = make_layer("Bias", f"bias_param {{ {params} filler {GAUSS} }}")
    bottom = make_blobs([shape], seed=len(shape))
    top = run_forward(layer, bottom)
    assert [b.shape for b in layer.blobs] == [oshape]
    np.testing.assert_allclose(top[0].data,
                               broadcast_ref(bottom[0].data, layer.blobs[0].data, axis, "add"),
                               rtol=1e-13)
    dy = np.random.default_rng(3).standard_normal(shape)
    top[0].diff[...] = dy
    layer.blobs[0].diff[...] = 0.0
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy)
    np.testing.assert_allclose(layer.blobs[0].diff, reduce_ref(dy, shape, axis, len(oshape)),
                               rtol=1e-12, atol=1e-13)
    gradcheck(layer, bottom, top)


@pytest.mark.parametrize("params,shape,bshape,axis", [
    ("axis: 0", (2, 3, 2), (2, 3), 0),
    ("", (2, 3, 2), (3, 2), 1),
    ("axis: 2", (2, 2, 3), (3,), 2),
    ("", (2, 3), (), 0),
])
def test_bias_second_bottom_backward_formula(params, shape, bshape, axis):
    rng = np.random.default_rng(len(bshape))
    x, b = rng.standard_normal(shape), rng.standard_normal(bshape)
    layer = make_layer("Bias", f"bias_param {{ {params} }}")
    bottom = make_blobs([x, b])
    top = run_forward(layer, bottom)
    assert layer.blobs == []
    np.testing.assert_allclose(top[0].data, broadcast_ref(x, b, axis, "add"), rtol=1e-13)
    dy = rng.standard_normal(shape)
    top[0].diff[...] = dy
    layer.backward(top, [True, True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy)
    np.testing.assert_allclose(bottom[1].diff, reduce_ref(dy, shape, axis, len(bshape)),
                               rtol=1e-12, atol=1e-13)
    gradcheck(layer, bottom, top)


@pytest.mark.parametrize("nbottom", [1, 2])
def test_bias_in_place_backward_formula(nbottom):
    rng = np.random.default_rng(nbottom + 10)
    x = rng.standard_normal((2, 3, 2))
    params = f"bias_param {{ filler {GAUSS} }}"
    bottom = make_blobs([x, rng.standard_normal((3,))][:nbottom])
    layer = make_layer("Bias", params)
    layer.setup(bottom, [bottom[0]])
    operand = (bottom[1] if nbottom == 2 else layer.blobs[0]).data.copy()
    layer.forward(bottom, [bottom[0]])
    np.testing.assert_allclose(bottom[0].data, broadcast_ref(x, operand, 1, "add"), rtol=1e-14)
    dy = rng.standard_normal(x.shape)
    bottom[0].diff[...] = dy
    for b in layer.blobs:
        b.diff[...] = 0.0
    layer.backward([bottom[0]], [True] * nbottom, bottom)
    np.testing.assert_array_equal(bottom[0].diff, dy)
    got = bottom[1].diff if nbottom == 2 else layer.blobs[0].diff
    np.testing.assert_allclose(got, reduce_ref(dy, x.shape, 1, 1), rtol=1e-12)
    bottom = make_blobs([x, operand][:nbottom])
    gradcheck(layer, bottom, [bottom[0]])


def test_bias_float32_default_filler_and_errors():
    layer = make_layer("Bias", dtype=np.float32)
    bottom = make_blobs([(2, 3)], dtype=np.float32)
    top = run_forward(layer, bottom)
    np.testing.assert_array_equal(layer.blobs[0].data, 0.0)       # default filler: 0
    assert top[0].data.dtype == np.float32
    np.testing.assert_array_equal(top[0].data, bottom[0].data)
    layer = make_layer("Bias", dtype=np.float32)
    top = run_forward(layer, make_blobs([(2, 3), (3,)], dtype=np.float32))
    assert top[0].data.dtype == np.float32
    with pytest.raises(ShapeError, match="bottom\\[1\\]"):
        run_forward(make_layer("Bias"), make_blobs([(2, 3, 4), (4,)]))
    with pytest.raises(ConfigError, match="num_axes"):
        run_forward(make_layer("Bias", "bias_param { axis: 1 num_axes: 2 }"),
                    make_blobs([(2, 3)]))


# --------------------------------------------------------------------------------------------
# shared

@pytest.mark.parametrize("type_,params,shapes,top_shape,param_shapes", [
    ("InnerProduct", "inner_product_param { num_output: 7 }", [(2, 3, 4, 5)], (2, 7),
     [(7, 60), (7,)]),
    ("InnerProduct", "inner_product_param { num_output: 7 axis: 2 transpose: true }",
     [(2, 3, 4, 5)], (2, 3, 7), [(20, 7), (7,)]),
    ("Embed", "embed_param { num_output: 4 input_dim: 9 }", [(2, 3)], (2, 3, 4),
     [(9, 4), (4,)]),
    ("Scale", "scale_param { bias_term: true }", [(2, 3, 4)], (2, 3, 4), [(3,), (3,)]),
    ("Scale", "", [(2, 3, 4), (3, 4)], (2, 3, 4), []),
    ("Bias", "bias_param { axis: 0 num_axes: 2 }", [(2, 3, 4)], (2, 3, 4), [(2, 3)]),
])
def test_shape_only_setup_and_flops(type_, params, shapes, top_shape, param_shapes):
    layer = make_layer(type_, params, init_params=False, dtype=np.float32)
    bottom = [Blob(s, np.float32) for s in shapes]
    top = [Blob((), np.float32)]
    layer.setup(bottom, top)
    assert top[0].shape == top_shape
    assert [b.shape for b in layer.blobs] == param_shapes
    assert not any(b.allocated for b in bottom + layer.blobs)
    assert layer.flops(bottom, top) > 0
