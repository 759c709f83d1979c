"""netdef export caffe / onnx: the exported files run elsewhere with the same numbers."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from deploy_nets import (
    BN_NET,
    CIFAR_QUICK,
    LENET_TRAIN,
    LENET_WEIGHTS,
    REPO,
    forward,
    random_net,
    rel_diff,
    weights_of,
)

from netdef.config import load_net, net_from_text
from netdef.deploy import load
from netdef.deploy.export_caffe import CAFFE_TYPES
from netdef.deploy.freeze import freeze
from netdef.proto import pb

RESNET18 = os.path.join(REPO, "model_zoo", "resnet_18", "deploy.prototxt")


def _cli(*args):
    from netdef_cli.main import cli
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    out = {}
    rng = np.random.default_rng(11)
    lenet = str(d / "lenet.netdef")
    freeze(LENET_TRAIN, LENET_WEIGHTS, input_shapes={"data": (1, 1, 28, 28)}).save(lenet)
    out["lenet"] = (lenet, rng.uniform(0, 1, (3, 1, 28, 28)).astype(np.float32))
    cq = random_net(open(CIFAR_QUICK).read(), seed=2)
    path = str(d / "cq.netdef")
    freeze(load_net(CIFAR_QUICK), weights_of(cq)).save(path)
    out["cifar10_quick"] = (path, rng.normal(0, 1, (2, 3, 32, 32)).astype(np.float32))
    bn = random_net(BN_NET, seed=4)
    path = str(d / "bn.netdef")
    freeze(net_from_text(BN_NET), weights_of(bn)).save(path)
    out["bnnet"] = (path, rng.normal(0, 1, (2, 3, 13, 13)).astype(np.float32))
    return d, out


@pytest.mark.parametrize("name", ["lenet", "cifar10_quick", "bnnet"])
def test_onnx_export_matches_in_onnxruntime(models, name):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    d, all_models = models
    path, x = all_models[name]
    out = str(d / f"{name}.onnx")
    r = _cli("export", "onnx", path, "-o", out)
    assert r.exit_code == 0, r.output
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"data": x})[0]
    ref = load(path).predict(x)["prob"]
    assert got.shape == ref.shape
    assert rel_diff(got, ref) <= 1e-4


def test_onnx_export_resnet18(tmp_path):
    """ResNet-18 (random weights, BatchNorm statistics near a batch's): folded == unfolded
    within 1e-5, and its ONNX export in onnxruntime within 1e-4."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from netdef.deploy.export_onnx import export_onnx
    from netdef.deploy.frozen import read_frozen
    net = random_net(open(RESNET18).read(), seed=1, calibrate=True)
    x = np.random.default_rng(3).normal(0, 1, (1, 3, 224, 224)).astype(np.float32)
    ref = forward(net, x)["prob"]
    res = freeze(load_net(RESNET18), weights_of(net))
    assert res.rows[-1].layers < res.rows[0].layers
    assert res.rows[-1].activation_bytes < res.rows[0].activation_bytes
    path = str(tmp_path / "r18.netdef")
    res.save(path)
    out = load(path).predict(x)["prob"]
    assert rel_diff(out, ref) <= 1e-5
    export_onnx(read_frozen(path), str(tmp_path / "r18.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "r18.onnx"), providers=["CPUExecutionProvider"])
    assert rel_diff(sess.run(None, {"data": x})[0], out) <= 1e-4


@pytest.mark.parametrize("name", ["lenet", "bnnet"])
def test_caffe_export_round_trips(models, name):
    from netdef.io.weights import load_weights
    from netdef.net import Net
    d, all_models = models
    path, x = all_models[name]
    proto, weights = str(d / f"{name}.prototxt"), str(d / f"{name}.caffemodel")
    r = _cli("export", "caffe", path, "-o", proto, weights)
    assert r.exit_code == 0, r.output
    definition = load_net(proto)
    assert all(lp.type in CAFFE_TYPES for lp in definition.message.layer)
    raw = pb.NetParameter.FromString(open(weights, "rb").read())
    assert not raw.HasField("netdef_deploy")
    assert "BatchNorm" not in {lp.type for lp in raw.layer}
    net = Net(definition, 1, input_shapes={"data": x.shape})
    copied = load_weights(net, weights)
    assert set(copied) == {lp.name for lp in raw.layer if len(lp.blobs)}
    got = forward(net, x)["prob"]
    # the frozen net's fused kernels round differently (GEMM column tails, pooling order)
    assert rel_diff(got, load(path, backend="numba").predict(x)["prob"]) <= 1e-6


def test_onnx_missing_is_one_line_error(models):
    _, all_models = models
    path = all_models["lenet"][0]
    code = ("import sys; sys.modules['onnx'] = None\n"
            "from netdef_cli.main import main\n"
            f"main(['export', 'onnx', {path!r}, '-o', {path + '.onnx'!r}])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines == ["error: exporting to ONNX needs the onnx package (pip install onnx)"]


@pytest.mark.parametrize("name", ["vision", "neuron", "batch"])
def test_onnx_export_more_layer_types(tmp_path, name):
    """Deconvolution -> ConvTranspose, Crop -> Slice, Tile, Slice -> Split / Slice, MVN,
    Im2col, SPP, the argmax top of pooling, STOCHASTIC pooling, Power / Exp / Log / ELU /
    PReLU / Swish / BNLL / Threshold / Clip, ArgMax, Reduction, Embed -> Gather, Parameter,
    BatchReindex, Filter -> Compress: every output of the ONNX graph in onnxruntime matches
    netdef within 1e-4 (vision and neuron at a batch size other than the frozen one)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from deploy_nets import (
        NEURON_NET,
        VISION_NET,
        batch_net,
        neuron_inputs,
        vision_inputs,
    )

    from netdef.deploy.export_onnx import export_onnx
    from netdef.deploy.frozen import read_frozen
    if name == "batch":
        net, inputs = batch_net()
    else:
        text = VISION_NET if name == "vision" else NEURON_NET
        net = random_net(text, seed=6)
        inputs = (vision_inputs if name == "vision" else neuron_inputs)(3, seed=1)
    path = str(tmp_path / f"{name}.netdef")
    freeze(net.param, weights_of(net)).save(path)
    fm = read_frozen(path)
    ref = load(path).predict(inputs)
    for opset in (13, 18):          # Reduce* axes and Split sizes moved to inputs in 18
        out = str(tmp_path / f"{name}{opset}.onnx")
        export_onnx(fm, out, opset=opset)
        sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
        assert set(got) == set(ref) == set(fm.outputs)
        for k, want in ref.items():
            assert got[k].shape == want.shape, (opset, k)
            assert rel_diff(got[k], want) <= 1e-4, (opset, k, rel_diff(got[k], want))
