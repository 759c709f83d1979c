"""Common layers (InnerProduct, Embed, Scale, Bias): forward values against float64 references
written here from Caffe's definitions (never by calling the layer), Caffe's gradient checker on
every differentiable bottom and every parameter, parameter-gradient accumulation, in-place
operation, a float32 smoke run, and the parameter / shape errors."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

GAUSS = "{ type: 'gaussian' std: 1 }"


def gradcheck(layer, bottom, top, **kw):
    return GradientChecker().check(layer, bottom, top, **kw)


# ---------------------------------------------------------------------------------------------
# InnerProduct
def ip_ref(x, w, b, axis, transpose):
    """y[m, n] = sum_k x[m, k] W[n, k] + b[n] with x flattened at ``axis`` (W[k, n] when
    transposed), as explicit sums."""
    m = int(np.prod(x.shape[:axis]))
    xr = x.reshape(m, -1)
    k = xr.shape[1]
    n = w.shape[1] if transpose else w.shape[0]
    y = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            acc = b[j] if b is not None else 0.0
            for q in range(k):
                acc += xr[i, q] * (w[q, j] if transpose else w[j, q])
            y[i, j] = acc
    return y.reshape(x.shape[:axis] + (n,))


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
def test_inner_product(shape, axis, num_output, transpose, bias):
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


def test_inner_product_default_fillers_and_float32():
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


def test_inner_product_errors():
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


# ---------------------------------------------------------------------------------------------
# Embed
@pytest.mark.parametrize("idx_shape,input_dim,num_output,bias", [
    ((4,), 5, 3, True),
    ((2, 3), 4, 2, True),
    ((2, 2, 1), 3, 4, False),
])
def test_embed(idx_shape, input_dim, num_output, bias):
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


# ---------------------------------------------------------------------------------------------
# Scale / Bias references
def broadcast_ref(x, operand, axis, op):
    """y[idx] = x[idx] (*|+) operand[idx[axis:axis + operand.ndim]], element by element."""
    y = np.empty_like(x, dtype=np.float64)
    k = np.ndim(operand)
    for idx in np.ndindex(*x.shape):
        o = operand[idx[axis:axis + k]] if k else operand[()]
        y[idx] = x[idx] * o if op == "mul" else x[idx] + o
    return y


def reduce_ref(values, x_shape, axis, k):
    """sum over every position of bottom[0] of ``values`` into the operand's (k axes) shape."""
    out = np.zeros(x_shape[axis:axis + k])
    for idx in np.ndindex(*x_shape):
        out[idx[axis:axis + k]] += values[idx]
    return out


# (params, bottom shape, operand axis in bottom, operand shape)
SCALE_LEARNED = [
    ("", (2, 3, 2, 2), 1, (3,)),                                   # defaults: axis 1, 1 axis
    ("axis: 0 num_axes: -1", (2, 3, 2), 0, (2, 3, 2)),             # elementwise
    ("axis: 1 num_axes: 2", (2, 3, 2, 2), 1, (3, 2)),
    ("axis: 2 num_axes: -1", (2, 2, 3, 2), 2, (3, 2)),
    ("num_axes: 0", (2, 3, 2), 0, ()),                             # one scalar
    ("axis: -1", (2, 2, 3), 2, (3,)),
    ("axis: 0", (3, 2, 2), 0, (3,)),
]


@pytest.mark.parametrize("bias_term", [False, True])
@pytest.mark.parametrize("params,shape,axis,oshape", SCALE_LEARNED)
def test_scale_learned(params, shape, axis, oshape, bias_term):
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
def test_scale_second_bottom(params, shape, sshape, axis, bias_term):
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
def test_scale_in_place(params, nbottom):
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


def test_scale_errors():
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


# ---------------------------------------------------------------------------------------------
# Bias
BIAS_LEARNED = [
    ("", (2, 3, 2), 1, (3,)),
    ("axis: 0 num_axes: -1", (2, 3), 0, (2, 3)),
    ("axis: 1 num_axes: 2", (2, 3, 2, 2), 1, (3, 2)),
    ("num_axes: 0", (2, 3), 0, ()),
    ("axis: -1", (2, 2, 3), 2, (3,)),
]


@pytest.mark.parametrize("params,shape,axis,oshape", BIAS_LEARNED)
def test_bias_learned(params, shape, axis, oshape):
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
def test_bias_second_bottom(params, shape, bshape, axis):
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
def test_bias_in_place(nbottom):
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
