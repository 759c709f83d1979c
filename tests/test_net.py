"""The net compiler: state rules, ordering, splits, in-place, sharing, loss weights, backward."""
import numpy as np
import pytest

from netdef.config import net_from_text
from netdef.errors import NetdefError
from netdef.net import Net
from netdef.layers import TEST, TRAIN


def build(text, phase=TEST, **kw):
    kw.setdefault("dtype", np.float64)
    kw.setdefault("seed", 3)
    return Net(net_from_text(text, file="t.prototxt"), phase, **kw)


MLP = """
name: "mlp"
layer { name: "in" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss" }
"""


def mlp_net(text=MLP, **kw):
    net = build(text, **kw)
    rng = np.random.default_rng(0)
    net.blobs["x"].data = rng.standard_normal((4, 5))
    net.blobs["label"].data = np.array([0, 2, 1, 2], dtype=float)
    return net


def reference_mlp_loss(x, label, w1, b1, w2, b2):
    h = np.maximum(x @ w1.T + b1, 0)
    y = h @ w2.T + b2
    y = y - y.max(axis=1, keepdims=True)
    logp = y - np.log(np.exp(y).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(label)), label.astype(int)].mean()


def test_mlp_forward_matches_reference_and_gradients_check():
    net = mlp_net()
    loss = net.forward()
    p = [pi.blob.data for pi in net.params]
    ref = reference_mlp_loss(net.blobs["x"].data, net.blobs["label"].data, *p)
    assert loss == pytest.approx(ref, rel=1e-12)
    net.clear_param_diffs()
    net.backward()
    # central differences of the whole net's loss
    for info in net.params:
        blob = info.blob
        analytic = blob.diff.copy()
        flat = blob.data.reshape(-1)
        for k in range(0, flat.size, max(1, flat.size // 7)):
            old = flat[k]
            flat[k] = old + 1e-5
            lp = net.forward()
            flat[k] = old - 1e-5
            lm = net.forward()
            flat[k] = old
            num = (lp - lm) / 2e-5
            assert analytic.reshape(-1)[k] == pytest.approx(num, rel=1e-5, abs=1e-8)


def test_float32_default_and_outputs():
    net = Net(net_from_text(MLP), TEST)
    assert net.blobs["x"].data.dtype == np.float32
    assert net.output_names == ["loss"]
    assert net.blobs["loss"].shape == ()


def test_loss_weight_scales_loss_and_gradients():
    a = mlp_net()
    b = mlp_net(MLP.replace('top: "loss" }', 'top: "loss" loss_weight: 2.5 }'))
    la, lb = a.forward(), b.forward()
    assert lb == pytest.approx(2.5 * la)
    a.clear_param_diffs(); a.backward()
    b.clear_param_diffs(); b.backward()
    np.testing.assert_allclose(b.params[0].blob.diff, 2.5 * a.params[0].blob.diff)


def test_param_diffs_accumulate_until_cleared():
    net = mlp_net()
    net.clear_param_diffs()
    net.forward(); net.backward()
    g1 = net.params[0].blob.diff.copy()
    net.forward(); net.backward()
    np.testing.assert_allclose(net.params[0].blob.diff, 2 * g1)


def test_in_place_shares_blob():
    net = mlp_net()
    i = net.layer_names.index("relu")
    assert net.tops[i][0] is net.bottoms[i][0]
    assert net.in_place[i] == [True]


SPLIT = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "ReLU" bottom: "data" top: "a" }
layer { name: "b" type: "Sigmoid" bottom: "data" top: "b" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "data" top: "s" }
"""


def test_split_insertion_uses_caffe_names():
    net = build(SPLIT)
    assert net.layer_names == ["data", "data_data_0_split", "a", "b", "sum"]
    i = net.layer_names.index("data_data_0_split")
    assert net.top_names[i] == [f"data_data_0_split_{k}" for k in range(3)]
    assert net.bottom_names[net.layer_names.index("sum")] == ["a", "b", "data_data_0_split_2"]
    net.blobs["data"].data = np.arange(6.0).reshape(2, 3) - 2
    net.forward()
    x = net.blobs["data"].data
    np.testing.assert_allclose(net.blobs["s"].data, np.maximum(x, 0) + 1 / (1 + np.exp(-x)) + x)


def test_split_carries_loss_weight():
    net = build("""
        layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "e" type: "EuclideanLoss" bottom: "x" bottom: "x" top: "l" }
        layer { name: "r" type: "ReLU" bottom: "l" top: "r" loss_weight: 0 }
    """)
    # 'l' has a consumer and loss weight 1 from EuclideanLoss only by default: no split
    assert "l_e_0_split" not in net.layer_names
    net2 = build("""
        layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "p" type: "Power" bottom: "x" top: "p" loss_weight: 2 }
        layer { name: "r" type: "ReLU" bottom: "p" top: "r" }
    """)
    i = net2.layer_names.index("p_p_0_split")
    assert net2.loss_weights[i] == [2.0, 0.0]
    assert net2.loss_weights[net2.layer_names.index("p")] == [0.0]


def test_state_rules():
    text = """
    layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "tr" type: "ReLU" bottom: "x" top: "t1" include { phase: TRAIN } }
    layer { name: "te" type: "ReLU" bottom: "x" top: "t2" include { phase: TEST } }
    layer { name: "st" type: "ReLU" bottom: "x" top: "t3" include { stage: "deploy" } }
    layer { name: "ns" type: "ReLU" bottom: "x" top: "t4" exclude { stage: "deploy" } }
    layer { name: "lv" type: "ReLU" bottom: "x" top: "t5" include { min_level: 2 } }
    layer { name: "mx" type: "ReLU" bottom: "x" top: "t6" include { max_level: 1 } }
    layer { name: "both" type: "ReLU" bottom: "x" top: "t7"
            include { phase: TRAIN } include { stage: "a" not_stage: "b" } }
    """
    names = lambda **kw: [n for n in build(text, **kw).layer_names
                          if n != "d" and not n.endswith("_split")]
    assert names(phase=TRAIN) == ["tr", "ns", "mx", "both"]
    assert names(phase=TEST) == ["te", "ns", "mx"]
    assert names(phase=TEST, stages=["deploy"], level=3) == ["te", "st", "lv"]
    assert names(phase=TEST, stages=["a"]) == ["te", "ns", "mx", "both"]
    assert names(phase=TEST, stages=["a", "b"]) == ["te", "ns", "mx"]


def test_layers_out_of_file_order_are_sorted():
    net = build("""
    layer { name: "r2" type: "ReLU" bottom: "h" top: "out" }
    layer { name: "r1" type: "TanH" bottom: "x" top: "h" }
    layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    """)
    assert net.layer_names == ["d", "r1", "r2"]


def error_of(text, **kw):
    with pytest.raises(NetdefError) as ei:
        build(text, **kw)
    return ei.value


def test_cycle_is_an_error():
    e = error_of("""
    layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "a" type: "Eltwise" bottom: "x" bottom: "c" top: "b" }
    layer { name: "b" type: "ReLU" bottom: "b" top: "c" }
    """)
    assert "cycle" in e.message and "'a'" in e.message and "'b'" in e.message
    assert e.file == "t.prototxt" and e.line is not None


def test_missing_bottom_points_at_it():
    e = error_of('layer { name: "d" type: "Input" top: "data" '
                 'input_param { shape { dim: 1 } } }\n'
                 'layer { name: "r" type: "ReLU" bottom: "dta" top: "r" }')
    assert (e.line, e.col) == (2, 32)
    assert "bottom 'dta'" in e.message and "did you mean 'data'" in e.message
    assert e.layer == "r"


def test_duplicate_top_is_an_error():
    e = error_of("""
    layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
    layer { name: "a" type: "ReLU" bottom: "x" top: "y" }
    layer { name: "b" type: "TanH" bottom: "x" top: "y" }
    """)
    assert "already produced by layer 'a'" in e.message and e.line == 4 and e.layer == "b"


def test_unknown_type_suggests():
    e = error_of('layer { name: "d" type: "Inptu" top: "x" }')
    assert "unknown layer type 'Inptu'" in e.message and "'Input'" in e.message
    assert (e.line, e.col) == (1, 19)


def test_layer_config_error_points_at_field():
    e = error_of("""layer { name: "d" type: "Input" top: "x"
                           input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "c" type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 4 kernel_size: 3 group: 2 } }""")
    assert e.layer == "c" and e.layer_type == "Convolution" and e.line in (3, 4)
    assert "group" in e.message


def test_shared_params_accumulate_into_one_blob():
    text = """
    layer { name: "d" type: "Input" top: "a" top: "b"
            input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "f1" type: "InnerProduct" bottom: "a" top: "fa"
            param { name: "w" } param { name: "bias" }
            inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
    layer { name: "f2" type: "InnerProduct" bottom: "b" top: "fb"
            param { name: "w" } param { name: "bias" }
            inner_product_param { num_output: 2 } }
    layer { name: "l" type: "EuclideanLoss" bottom: "fa" bottom: "fb" top: "loss" }
    """
    net = build(text)
    assert len(net.params) == 2
    f1, f2 = net.layer_by_name("f1"), net.layer_by_name("f2")
    np.testing.assert_array_equal(f1.blobs[0].data, f2.blobs[0].data)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    net.blobs["a"].data, net.blobs["b"].data = a, b
    net.clear_param_diffs()
    net.forward(); net.backward()
    w = f1.blobs[0].data
    d = (a - b) @ w.T  # fa - fb (biases cancel)
    # L = sum(d^2)/(2N); dL/dW = (d^T (a - b)) / N
    np.testing.assert_allclose(net.params[0].blob.diff, d.T @ (a - b) / 2)


def test_shared_param_shape_mismatch():
    e = error_of("""
    layer { name: "d" type: "Input" top: "a" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "f1" type: "InnerProduct" bottom: "a" top: "fa" param { name: "w" }
            inner_product_param { num_output: 2 } }
    layer { name: "f2" type: "InnerProduct" bottom: "a" top: "fb" param { name: "w" }
            inner_product_param { num_output: 3 } }
    """)
    assert "cannot share parameter 'w'" in e.message and e.layer == "f2" and e.line == 5


def test_backward_pruning_and_force_backward():
    net = mlp_net()
    need = dict(zip(net.layer_names, net.layer_need_backward))
    assert need == {"in": False, "ip1": True, "relu": True, "ip2": True, "loss": True}
    i = net.layer_names.index("ip1")
    assert net.bottom_need_backward[i] == [False]  # data needs no gradient
    i = net.layer_names.index("loss")
    assert net.bottom_need_backward[i] == [True, False]
    forced = mlp_net("force_backward: true\n" + MLP)
    i = forced.layer_names.index("ip1")
    assert forced.bottom_need_backward[i] == [True]
    i = forced.layer_names.index("loss")
    assert forced.bottom_need_backward[i] == [True, False]  # labels never


def test_lr_mult_zero_freezes_and_propagate_down():
    net = mlp_net(MLP.replace('top: "h"\n', 'top: "h" param { lr_mult: 0 } param { lr_mult: 0 }\n', 1))
    i = net.layer_names.index("ip1")
    assert not net.layer_need_backward[i]
    assert net.params[0].lr_mult == 0
    net2 = mlp_net(MLP.replace('bottom: "h" top: "y"', 'bottom: "h" top: "y" propagate_down: false'))
    need = dict(zip(net2.layer_names, net2.layer_need_backward))
    assert not need["ip1"] and not need["relu"] and need["ip2"]


def test_input_shape_override_and_unknown_name():
    net = build(MLP, input_shapes={"x": (7, 5), "label": (7,)})
    assert net.blobs["y"].shape == (7, 3)
    e = error_of(MLP, input_shapes={"nope": (1, 2)})
    assert "nope" in e.message and "x" in e.message


def test_shape_only_net_allocates_nothing():
    net = build(MLP, init_params=False, input_shapes={"x": (100000, 5), "label": (100000,)})
    assert all(b._data is None for b in net.blobs.values())
    assert all(p.blob._data is None for p in net.params)


DUP = """
layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "a" inner_product_param {
        num_output: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "a" top: "b" %s inner_product_param {
        num_output: 2 } }
"""


def test_two_learnable_layers_of_one_name_are_refused():
    with pytest.raises(NetdefError) as e:
        build(DUP % "")
    assert (e.value.file, e.value.line, e.value.layer) == ("t.prototxt", 5, "ip")
    assert "another layer with parameters is named 'ip' (first at line 3)" in str(e.value)


def test_same_name_in_other_phases_and_without_parameters_is_fine():
    net = build(DUP % "include { phase: TRAIN }", TEST)        # one 'ip' per state
    assert [l.name for l in net.layers] == ["data", "ip"]
    net = build(DUP.replace('type: "InnerProduct" bottom: "a" top: "b" %s inner_product_param '
                            '{\n        num_output: 2 }', 'type: "ReLU" bottom: "a" top: "b"'))
    assert [l.type for l in net.layers] == ["Input", "InnerProduct", "ReLU"]


@pytest.mark.parametrize("text,fmt,message", [
    ("", "prototxt", "the net defines no layers"),
    ("name: empty\n", "yaml", "the net defines no layers"),
    ('layer { name: "d" type: "Input" top: "x" include { phase: TRAIN } '
     'input_param { shape { dim: 1 } } }', "prototxt", "has no layer in this state (phase TEST)"),
])
def test_empty_net_is_an_error(text, fmt, message):
    with pytest.raises(NetdefError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Net(net_from_text(text, fmt, "t." + fmt), TEST)
