"""The remaining Caffe types (SPP, Filter, BatchReindex, Parameter) and STOCHASTIC pooling:
forward against float64 references, gradient checks, Caffe's rules and errors; every type
string Caffe registers is registered; ``netdef layers`` reports kernels per backend."""
import json
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from netdef.errors import ConfigError, ShapeError
from netdef.layers.registry import get_layer_class, layer_types
from netdef.testing import (
    TEST,
    TRAIN,
    GradientChecker,
    make_blobs,
    make_layer,
    run_forward,
)


def distinct(shape, seed=0):
    """Values 0.05 apart in random order: no ties, and a 1e-2 step never changes an argmax."""
    n = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    return (rng.permutation(n).astype(np.float64) - n / 2).reshape(shape) * 0.05


# --------------------------------------------------------------------------------------------
# SPP

def pool2d_ref(x, method, kh, kw, ph, pw, sh, sw):
    """Caffe's MAX/AVE pooling (ceil rounding, last window must start inside the image)."""
    n, c, h, w = x.shape

    def out(size, k, p, s):
        o = -(-(size + 2 * p - k) // s) + 1
        if p and (o - 1) * s >= size + p:
            o -= 1
        return o

    oh, ow = out(h, kh, ph, sh), out(w, kw, pw, sw)
    y = np.zeros((n, c, oh, ow))
    for a in range(n):
        for b in range(c):
            for i in range(oh):
                for j in range(ow):
                    hs, ws = i * sh - ph, j * sw - pw
                    if method == "MAX":
                        y[a, b, i, j] = x[a, b, max(hs, 0):min(hs + kh, h),
                                          max(ws, 0):min(ws + kw, w)].max()
                    else:
                        he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                        y[a, b, i, j] = x[a, b, max(hs, 0):min(he, h),
                                          max(ws, 0):min(we, w)].sum() / ((he - hs) * (we - ws))
    return y


def spp_ref(x, height, method):
    n, _, h, w = x.shape
    outs = []
    for lv in range(height):
        bins = 2 ** lv
        kh, kw = int(np.ceil(h / bins)), int(np.ceil(w / bins))
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        outs.append(pool2d_ref(x, method, kh, kw, ph, pw, kh, kw))
    if height == 1:
        return outs[0]
    return np.concatenate([o.reshape(n, -1) for o in outs], axis=1)


@pytest.mark.parametrize("shape,height,method", [
    ((2, 3, 8, 8), 3, "MAX"),
    ((1, 2, 7, 9), 2, "MAX"),
    ((2, 2, 6, 5), 2, "AVE"),
    ((1, 3, 8, 8), 3, "AVE"),
    ((2, 2, 5, 6), 1, "MAX"),
])
def test_spp(shape, height, method):
    layer = make_layer("SPP", f"spp_param {{ pyramid_height: {height} pool: {method} }}")
    bottom = make_blobs([distinct(shape, seed=height)])
    top = run_forward(layer, bottom)
    ref = spp_ref(bottom[0].data, height, method)
    n, c = shape[:2]
    if height == 1:
        assert top[0].shape == (n, c, 1, 1)
    else:
        assert top[0].shape == (n, c * sum(4 ** lv for lv in range(height)))
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12, atol=1e-12)
    GradientChecker().check(layer, bottom, top)


def test_spp_input_size_change_and_errors():
    layer = make_layer("SPP", "spp_param { pyramid_height: 2 }")
    top = run_forward(layer, make_blobs([distinct((1, 2, 8, 8))]))
    b = make_blobs([distinct((1, 2, 6, 10), seed=3)])
    layer.reshape(b, top)
    layer.forward(b, top)
    np.testing.assert_allclose(top[0].data, spp_ref(b[0].data, 2, "MAX"))
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("SPP", "spp_param { }"), make_blobs([(1, 1, 4, 4)]))
    assert e.value.field == "spp_param.pyramid_height"
    with pytest.raises(ShapeError, match="too small for pyramid level 2"):
        run_forward(make_layer("SPP", "spp_param { pyramid_height: 3 }"),
                    make_blobs([(1, 1, 5, 5)]))
    with pytest.raises(ShapeError, match="4-D"):
        run_forward(make_layer("SPP", "spp_param { pyramid_height: 1 }"),
                    make_blobs([(2, 4)]))


def test_spp_stochastic_test_phase():
    x = np.abs(distinct((1, 2, 4, 4))) + 0.1
    layer = make_layer("SPP", "spp_param { pyramid_height: 2 pool: STOCHASTIC }", phase=TEST)
    top = run_forward(layer, make_blobs([x]))
    level0 = (x ** 2).sum(axis=(2, 3)) / x.sum(axis=(2, 3))
    np.testing.assert_allclose(top[0].data[:, :2], level0, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# STOCHASTIC pooling

def stochastic_ref(x, kh, kw, sh, sw, oh, ow, rand=None):
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    mask = np.zeros((n, c, oh, ow), dtype=np.int64)
    for a in range(n):
        for b in range(c):
            for i in range(oh):
                for j in range(ow):
                    hs, ws = i * sh, j * sw
                    win = [(iy, ix) for iy in range(hs, min(hs + kh, h))
                           for ix in range(ws, min(ws + kw, w))]
                    vals = np.array([x[a, b, iy, ix] for iy, ix in win])
                    if rand is None:
                        s = vals.sum()
                        y[a, b, i, j] = (vals ** 2).sum() / s if s > 0 else 0.0
                        continue
                    thres = rand[a, b, i, j] * vals.sum()
                    k = int(np.argmax(np.cumsum(vals) >= thres))
                    iy, ix = win[k]
                    y[a, b, i, j] = vals[k]
                    mask[a, b, i, j] = iy * w + ix
    return y, mask


@pytest.mark.parametrize("shape,params", [
    ((2, 2, 6, 6), "kernel_size: 2 stride: 2"),
    ((1, 3, 5, 7), "kernel_size: 3 stride: 2"),
    ((2, 1, 4, 5), "kernel_h: 2 kernel_w: 3 stride: 1"),
])
def test_stochastic_pooling(shape, params):
    x = np.abs(distinct(shape)) + 0.05
    k = {kv.split(": ")[0]: int(kv.split(": ")[1]) for kv in
         [" ".join(p) for p in zip(params.split()[::2], params.split()[1::2])]}
    kh, kw = k.get("kernel_h", k.get("kernel_size")), k.get("kernel_w", k.get("kernel_size"))
    s = k["stride"]
    # TEST: weighted average, exact gradient
    layer = make_layer("Pooling", f"pooling_param {{ pool: STOCHASTIC {params} }}", phase=TEST)
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    oh, ow = top[0].shape[2:]
    ref, _ = stochastic_ref(x, kh, kw, s, s, oh, ow)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    GradientChecker().check(layer, bottom, top)
    # TRAIN: samples with the layer's generator (uniform draws, one per output)
    layer = make_layer("Pooling", f"pooling_param {{ pool: STOCHASTIC {params} }}",
                       phase=TRAIN, seed=7)
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    rand = np.random.default_rng(7).random(top[0].shape)
    ref, mask = stochastic_ref(x, kh, kw, s, s, oh, ow, rand)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    np.testing.assert_array_equal(layer.mask, mask)
    dy = np.random.default_rng(1).standard_normal(top[0].shape)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    dx = np.zeros(x.shape)
    for a, b, i, j in np.ndindex(*dy.shape):
        m = mask[a, b, i, j]
        dx[a, b, m // x.shape[3], m % x.shape[3]] += dy[a, b, i, j]
    np.testing.assert_allclose(bottom[0].diff, dx, rtol=1e-12)


def test_stochastic_pooling_samples_in_proportion():
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    layer = make_layer("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 2 }",
                       phase=TRAIN, seed=3)
    bottom = make_blobs([x])
    top = run_forward(layer, bottom)
    counts = np.zeros(4)
    for _ in range(4000):
        layer.forward(bottom, top)
        counts[int(top[0].data[0, 0, 0, 0]) - 1] += 1
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.03)


# --------------------------------------------------------------------------------------------
# Filter

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


# --------------------------------------------------------------------------------------------
# the whole catalogue

CAFFE_TYPES = [
    # vision
    "Convolution", "Deconvolution", "Pooling", "SPP", "Crop", "Im2col",
    # common / normalization
    "InnerProduct", "Dropout", "Embed", "LRN", "MVN", "BatchNorm",
    # activation / neuron
    "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL",
    "Threshold", "Clip", "Swish", "Bias", "Scale",
    # utility
    "Softmax", "Concat", "Slice", "Split", "Eltwise", "Flatten", "Reshape", "BatchReindex",
    "Filter", "Parameter", "Reduction", "Silence", "ArgMax", "Tile", "Python",
    # loss
    "SoftmaxWithLoss", "MultinomialLogisticLoss", "InfogainLoss", "EuclideanLoss",
    "SigmoidCrossEntropyLoss", "HingeLoss", "ContrastiveLoss", "Accuracy",
    # data
    "Data", "ImageData", "HDF5Data", "HDF5Output", "MemoryData", "WindowData", "DummyData",
    "Input",
    # recurrent
    "RNN", "LSTM", "LSTMUnit",
]


def test_caffe_catalogue_has_61_types():
    assert len(CAFFE_TYPES) == len(set(CAFFE_TYPES)) == 61


@pytest.mark.parametrize("type_name", CAFFE_TYPES)
def test_every_caffe_type_is_registered(type_name):
    assert type_name in layer_types()
    cls = get_layer_class(type_name)
    assert cls.type == type_name and cls.__doc__


def test_layers_command_reports_kernels():
    from netdef_cli.main import cli

    r = CliRunner().invoke(cli, ["layers", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["type"]: row for row in json.loads(r.output)}
    for t in ("LSTM", "RNN", "LSTMUnit", "SPP", "Filter", "BatchReindex", "Parameter",
              "Convolution"):
        assert rows[t]["cpu"] is True and rows[t]["cuda"] is True
    for t in ("Python", "Data", "HDF5Output"):
        assert rows[t]["cpu"] is True and rows[t]["cuda"] is False
    assert rows["LSTM"]["param_message"] == "RecurrentParameter"
    assert rows["Python"]["param_message"] == "PythonParameter"
    assert rows["SPP"]["param_field"] == "spp_param"
    assert rows["Filter"]["param_field"] is None
    r = CliRunner().invoke(cli, ["layers"])
    line = next(ln for ln in r.output.splitlines() if ln.startswith("LSTMUnit "))
    assert " cpu,cuda " in line
    line = next(ln for ln in r.output.splitlines() if ln.startswith("Python "))
    assert " cpu " in line and "cuda" not in line
