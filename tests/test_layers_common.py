"""Common layers (InnerProduct, Embed, Scale, Bias): forward against float64 references written
from the formulas, gradient checks on bottoms and parameters, in-place use, float32,
shape-only setup, parameter and shape errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

GAUSS = "{ type: 'gaussian' std: 1 }"


def fresh(*shapes, seed=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return make_blobs([rng.standard_normal(s) for s in shapes], dtype=dtype)


# --------------------------------------------------------------------------------------------
# InnerProduct

def ref_inner_product(x, w, b, axis, transpose):
    m = int(np.prod(x.shape[:axis]))
    xf = x.reshape(m, -1)
    kk = xf.shape[1]
    n = w.shape[1] if transpose else w.shape[0]
    y = np.zeros((m, n))
    for i in range(m):
        for o in range(n):
            s = 0.0
            for k in range(kk):
                s += xf[i, k] * (w[k, o] if transpose else w[o, k])
            y[i, o] = s + (b[o] if b is not None else 0.0)
    return y.reshape(x.shape[:axis] + (n,))


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
    ref = ref_inner_product(bottom[0].data, layer.blobs[0].data,
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
    ref = ref_inner_product(b32[0].data.astype(np.float64), l32.blobs[0].data.astype(np.float64),
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


# --------------------------------------------------------------------------------------------
# Scale and Bias references: operand o of shape x.shape[axis:axis+len(o.shape)]

def ref_broadcast(x, o, axis, op):
    y = np.empty_like(x)
    for pos in np.ndindex(*x.shape):
        y[pos] = op(x[pos], o[pos[axis:axis + o.ndim]] if o.ndim else o[()])
    return y


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
    ref = ref_broadcast(bottom[0].data, layer.blobs[0].data, axis, lambda a, s: a * s)
    if bias:
        ref = ref_broadcast(ref, layer.blobs[1].data, axis, lambda a, b: a + b)
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
    ref = ref_broadcast(bottom[0].data, bottom[1].data, axis, lambda a, s: a * s)
    if bias:
        ref = ref_broadcast(ref, layer.blobs[0].data, axis, lambda a, b: a + b)
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
    ref = ref_broadcast(bottom[0].data, layer.blobs[0].data, axis, lambda a, b: a + b)
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
    ref = ref_broadcast(bottom[0].data, bottom[1].data, axis, lambda a, b: a + b)
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
