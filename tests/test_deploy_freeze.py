"""netdef freeze: the passes, their report, and frozen LeNet against the unfrozen net."""
from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner
from deploy_nets import (
    BN_NET,
    LENET_DEPLOY,
    LENET_TRAIN,
    LENET_WEIGHTS,
    MNIST_DIR,
    forward,
    random_net,
    rel_diff,
    weights_of,
)

from netdef.config import net_from_text
from netdef.deploy import load
from netdef.deploy.freeze import PASS_NAMES, freeze


@pytest.fixture(scope="module")
def lenet_frozen(tmp_path_factory):
    res = freeze(LENET_TRAIN, LENET_WEIGHTS, input_shapes={"data": (1, 1, 28, 28)})
    path = str(tmp_path_factory.mktemp("lenet") / "lenet.netdef")
    res.save(path)
    return res, path


def test_lenet_strip_training_and_report(lenet_frozen):
    res, path = lenet_frozen
    m = res.model
    assert [r.name for r in res.rows] == ["(definition, TEST)"] + PASS_NAMES
    types = [w.type for w in m.layers]
    assert types == ["Input", "Convolution", "Pooling", "Convolution", "Pooling",
                     "InnerProduct", "ReLU", "InnerProduct", "Softmax"]
    assert m.outputs == ["prob"]
    assert m.fused == [("ip1", "relu1", 0.0)]
    inp = m.inputs[0]
    assert (inp.name, inp.shape, inp.channel_order) == ("data", (1, 1, 28, 28), "GRAY")
    assert inp.scale == pytest.approx(1 / 256)
    before, strip, last = res.rows[0], res.rows[1], res.rows[-1]
    assert strip.layers < before.layers            # data/accuracy/loss gone, prob added
    assert last.layers == strip.layers - 1         # relu1 fused
    assert last.params == before.params == 431_080
    assert last.activation_bytes < strip.activation_bytes
    text = res.report
    assert "loss (SoftmaxWithLoss) -> Softmax 'prob'" in text and "plan_memory" in text
    p = load(path)
    assert p.report[-1]["name"] == "plan_memory"
    assert p.labels == [] and p.outputs == ["prob"]


def test_lenet_frozen_matches_unfrozen_on_mnist(lenet_frozen):
    """All 10,000 MNIST test images: same accuracy (>= 0.99), outputs within 1e-5."""
    from netdef.config import load_net
    from netdef.data.mnist import read_idx_images, read_idx_labels
    from netdef.io.weights import load_weights
    from netdef.net import Net

    _, path = lenet_frozen
    images = read_idx_images(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
    labels = read_idx_labels(os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))
    x = images.astype(np.float32) * np.float32(0.00390625)      # lenet_train_test's scale
    n = 2500
    ref_net = Net(load_net(LENET_DEPLOY), 1, input_shapes={"data": (n, 1, 28, 28)})
    load_weights(ref_net, LENET_WEIGHTS)
    pred = load(path)
    ref, out = [], []
    for i in range(0, len(x), n):
        ref_net.blobs["data"].data = x[i:i + n]
        ref_net.forward()
        ref.append(ref_net.blobs["prob"].data.copy())
        out.append(pred.predict(x[i:i + n])["prob"])
    ref, out = np.concatenate(ref), np.concatenate(out)
    acc_ref = float(np.mean(ref.argmax(1) == labels))
    acc = float(np.mean(out.argmax(1) == labels))
    assert acc >= 0.99 and acc == acc_ref
    assert rel_diff(out, ref) <= 1e-5
    # raw uint8 images through the stored preprocessing give the same numbers
    raw = pred.predict(images[:64])["prob"]
    assert rel_diff(raw, out[:64]) <= 1e-6


def test_batchnorm_scale_folding_same_outputs_fewer_layers():
    net = random_net(BN_NET, seed=3)
    x = np.random.default_rng(4).normal(0, 1, (2, 3, 13, 13)).astype(np.float32)
    ref = forward(net, x)["prob"]
    res = freeze(net_from_text(BN_NET), weights_of(net))
    notes = "\n".join(n for r in res.rows for n in r.notes)
    for want in ("folded bn1+sc1 into conv1", "folded bn2+sc2 into conv2",
                 "folded bn3 into conv3", "folded bn4 into ip1", "bnx+scx -> one Scale",
                 "merged pre_bias into pre_scale", "removed drop2"):
        assert want in notes
    types = [w.type for w in res.model.layers]
    assert "BatchNorm" not in types and "Dropout" not in types and "Bias" not in types
    rows = {r.name: r for r in res.rows}
    assert rows["fold_batchnorm"].layers < rows["remove_dropout"].layers
    assert rows["fold_batchnorm"].params < rows["remove_dropout"].params
    assert rows["plan_memory"].activation_bytes < rows["strip_training"].activation_bytes
    assert res.rows[-1].layers < res.rows[0].layers
    # folded model, both backends, against the unfolded net
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "bn.netdef")
        res.save(path)
        for backend in ("numba", "numpy"):
            out = load(path, backend=backend).predict(x)["prob"]
            assert rel_diff(out, ref) <= 1e-5, backend
        # nothing folded: the same numbers too
        plain = freeze(net_from_text(BN_NET), weights_of(net),
                       skip=("fold_batchnorm", "fold_scale_bias", "fuse_relu"))
        plain.save(path)
        assert rel_diff(load(path).predict(x)["prob"], ref) <= 1e-6


def test_non_inplace_dropout_and_unused_branch():
    text = """
    name: "t"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "drop" type: "Dropout" bottom: "ip" top: "d" }
    layer { name: "side" type: "InnerProduct" bottom: "data" top: "side"
            inner_product_param { num_output: 2 } }
    layer { name: "silence" type: "Silence" bottom: "side" }
    layer { name: "sig" type: "Sigmoid" bottom: "d" top: "out" }
    """
    net = random_net(text)
    res = freeze(net_from_text(text), weights_of(net))
    names = [w.name for w in res.model.layers]
    assert names == ["data", "ip", "sig"]
    assert res.model.outputs == ["out"]
    notes = "\n".join(n for r in res.rows for n in r.notes)
    assert "removed side (InnerProduct)" in notes and "removed silence (Silence)" in notes


def test_missing_weights_is_an_error():
    from netdef.errors import FileFormatError
    from netdef.proto import pb
    with pytest.raises(FileFormatError, match="no weights for layers conv1, conv2"):
        freeze(LENET_DEPLOY, pb.NetParameter())


def test_cli_freeze(tmp_path):
    from netdef_cli.main import cli
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    out = tmp_path / "m.netdef"
    r = CliRunner().invoke(cli, ["freeze", "--model", LENET_DEPLOY, "--weights", LENET_WEIGHTS,
                                 "-o", str(out), "--input-shape", "data=1,1,28,28",
                                 "--scale", "1/256", "--labels", str(labels)])
    assert r.exit_code == 0, r.output
    assert "fuse_relu" in r.output and "wrote" in r.output
    p = load(str(out))
    assert p.labels[3] == "digit 3"
    assert p.preprocessing()["scale"] == pytest.approx(1 / 256)
    assert p.input_shape() == (1, 1, 28, 28)
    r = CliRunner().invoke(cli, ["freeze", "--model", LENET_DEPLOY, "--weights",
                                 str(tmp_path / "nope.caffemodel"), "-o", str(out)])
    assert r.exit_code == 2 and "not found" in r.output
