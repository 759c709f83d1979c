"""netdef predict / netdef.deploy.load: samples, preprocessing, the numpy fallback without
Numba, and malformed files (one-line errors, no large allocation)."""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from deploy_nets import (
    BN_NET,
    LENET_DEPLOY,
    LENET_TRAIN,
    LENET_WEIGHTS,
    MNIST_DIR,
    NEURON_NET,
    SAMPLES,
    VISION_NET,
    batch_net,
    neuron_inputs,
    random_net,
    rel_diff,
    vision_inputs,
    weights_of,
)

from netdef.config import net_from_text
from netdef.deploy import load
from netdef.deploy.freeze import freeze
from netdef.deploy.frozen import encode, read_frozen
from netdef.errors import FileFormatError
from netdef.proto import pb

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict")
    path = str(d / "lenet.netdef")
    labels = d / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    # through the CLI: `netdef freeze --labels FILE` stores the class names
    r = _cli("freeze", "--model", LENET_TRAIN, "--weights", LENET_WEIGHTS, "-o", path,
             "--input-shape", "data=1,1,28,28", "--labels", str(labels))
    assert r.exit_code == 0, r.output
    return path


@pytest.fixture(scope="module")
def bnnet(tmp_path_factory):
    net = random_net(BN_NET, seed=5)
    path = str(tmp_path_factory.mktemp("bn") / "bn.netdef")
    freeze(net_from_text(BN_NET), weights_of(net)).save(path)
    return path


def _cli(*args):
    from netdef_cli.main import cli
    return CliRunner().invoke(cli, list(args))


def test_cli_predicts_the_mnist_samples(lenet):
    pngs = sorted(glob.glob(os.path.join(SAMPLES, "mnist_*_*.png")))
    assert len(pngs) == 20
    r = _cli("predict", lenet, *pngs, "--json", "--top-k", "3")
    assert r.exit_code == 0, r.output
    lines = [json.loads(ln) for ln in r.output.strip().splitlines()]
    assert len(lines) == 20
    for obj, png in zip(lines, pngs):
        want = int(re.search(r"_(\d)\.png$", png).group(1))
        assert set(obj) == {"input", "top_k", "output"}
        assert obj["input"] == png
        assert len(obj["top_k"]) == 3 and len(obj["output"]) == 10
        for t in obj["top_k"]:
            assert set(t) == {"index", "label", "score"}
            assert t["label"] == NAMES[t["index"]]
            assert t["score"] == pytest.approx(obj["output"][t["index"]])
        assert [t["score"] for t in obj["top_k"]] == sorted(obj["output"], reverse=True)[:3]
        best = obj["top_k"][0]
        assert best["index"] == want and best["label"] == NAMES[want]
        assert best["score"] == pytest.approx(max(obj["output"]))
        assert all(v >= 0 for v in obj["output"])
        assert sum(obj["output"]) == pytest.approx(1, abs=1e-5)
    r = _cli("predict", lenet, pngs[0])
    assert r.exit_code == 0 and r.output.startswith(pngs[0] + ": ")


def test_npy_inputs_and_preprocessing(lenet, tmp_path):
    from PIL import Image

    from netdef.data.mnist import read_idx_images
    images = read_idx_images(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))[:4]
    p = load(lenet)
    x = images.astype(np.float32) * np.float32(1 / 256)
    ref = p.predict(x)["prob"]
    # raw uint8: N x C x H x W, N x H x W x C, one H x W image, a list
    assert np.array_equal(p.predict(images)["prob"], ref)
    hwc = images.transpose(0, 2, 3, 1)
    assert np.array_equal(p.predict(hwc)["prob"], ref)
    assert rel_diff(p.predict(images[0, 0])["prob"], ref[:1]) < 1e-6   # batch 1: other GEMM
    # RGB images become gray with ITU-R 601 weights (equal channels stay the same)
    rgb = np.repeat(hwc[:1], 3, axis=3)
    assert rel_diff(p.predict(rgb)["prob"], ref[:1]) < 1e-5
    np.save(tmp_path / "x.npy", x[:2])
    np.save(tmp_path / "u.npy", images[2])
    Image.fromarray(images[3, 0]).save(tmp_path / "i.png")
    r = _cli("predict", lenet, str(tmp_path / "x.npy"), str(tmp_path / "u.npy"),
             str(tmp_path / "i.png"), "--json", "--top-k", "1")
    assert r.exit_code == 0, r.output
    objs = [json.loads(ln) for ln in r.output.splitlines()]
    assert [o["input"] for o in objs][:2] == [str(tmp_path / "x.npy") + "[0]",
                                              str(tmp_path / "x.npy") + "[1]"]
    for o, want in zip(objs, ref):
        assert rel_diff(o["output"], want) < 1e-6
    assert p.top_k(ref[0], 2)[0]["index"] == int(ref[0].argmax())


def test_memory_plan_is_used(bnnet):
    p = load(bnnet, backend="numba")
    p.predict(np.zeros((3, 3, 13, 13), np.float32))
    plan = p.runner.plan
    assert plan["arena_bytes"] < plan["unplanned_bytes"]


_NO_NUMBA = r"""
import sys, json
sys.modules["numba"] = None          # numba cannot be imported
import numpy as np
import netdef.deploy as D
assert not D.numba_available()
out = {}
for path, x in zip(sys.argv[1:3], sys.argv[3:5]):
    p = D.load(path)
    assert p.backend == "numpy", p.backend
    np.save(x + ".out.npy", p.predict(np.load(x))[p.outputs[0]])
# the layer package's light modules (its registry and base class, Caffe's geometry) may load;
# no layer family, net, backend, config parser, yaml or click
LIGHT = ("netdef.layers", "netdef.layers.base", "netdef.layers.registry", "netdef.layers.geometry")
heavy = [m for m in sys.modules if m in ("netdef.net", "yaml", "click") or (
    m.startswith(("netdef.layers", "netdef.backend", "netdef.config")) and m not in LIGHT)]
print(json.dumps({"heavy": heavy}))
"""


def test_numpy_fallback_without_numba(lenet, bnnet, tmp_path):
    from netdef.data.mnist import read_idx_images
    images = read_idx_images(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))[:300]
    xl = images.astype(np.float32) * np.float32(1 / 256)
    xb = np.random.default_rng(7).normal(0, 1, (4, 3, 13, 13)).astype(np.float32)
    np.save(tmp_path / "xl.npy", xl)
    np.save(tmp_path / "xb.npy", xb)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _NO_NUMBA, lenet, bnnet,
                        str(tmp_path / "xl.npy"), str(tmp_path / "xb.npy")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["heavy"] == []
    for path, x, name in ((lenet, xl, "xl"), (bnnet, xb, "xb")):
        ref = load(path, backend="numba").predict(x)["prob"]
        out = np.load(tmp_path / f"{name}.npy.out.npy")
        assert np.array_equal(out.argmax(1), ref.argmax(1))
        assert rel_diff(out, ref) <= 1e-5


_NO_NUMBA_ALL = r"""
import sys, json
sys.modules["numba"] = None          # numba cannot be imported
import numpy as np
import netdef.deploy as D
for path in sys.argv[1:]:
    p = D.load(path)
    assert p.backend == "numpy", p.backend
    feeds = dict(np.load(path + ".in.npz"))
    np.savez(path + ".out.npz", **p.predict(feeds))
LIGHT = ("netdef.layers", "netdef.layers.base", "netdef.layers.registry", "netdef.layers.geometry")
print(json.dumps({"heavy": [m for m in sys.modules if m == "netdef.net" or (
    m.startswith(("netdef.layers", "netdef.backend")) and m not in LIGHT)]}))
"""


def test_numpy_fallback_covers_more_layer_types(tmp_path):
    """Deconvolution, Crop, Tile, MVN, Slice, Im2col, SPP, pooling's argmax top, STOCHASTIC
    pooling, the neurons (Power, Exp, Log, ELU, PReLU, Swish, BNLL, Threshold, Clip...),
    ArgMax, Reduction, Embed, Parameter, BatchReindex, Filter: without Numba, every output
    equals the Numba path's within 1e-5 relative (indices and masks exactly)."""
    from netdef.deploy.numpy_kernels import KERNELS
    bnet, binputs = batch_net()
    cases = {"vision": (VISION_NET, random_net(VISION_NET, seed=3), vision_inputs(3)),
             "neuron": (NEURON_NET, random_net(NEURON_NET, seed=4), neuron_inputs(3)),
             "batch": (None, bnet, binputs)}
    paths = {}
    types = set()
    for name, (text, net, inputs) in cases.items():
        path = str(tmp_path / f"{name}.netdef")
        freeze(net.param, weights_of(net)).save(path)
        np.savez(path + ".in.npz", **inputs)
        paths[name] = path
        types |= {lp.type for lp in read_frozen(path).net.layer}
    assert types - {"Input"} <= set(KERNELS)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", _NO_NUMBA_ALL, *paths.values()],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["heavy"] == []
    exact = {"mask", "am", "amax", "thr", "embed", "filtered", "a", "b", "c"}
    for name, path in paths.items():
        ref = load(path, backend="numba").predict(cases[name][2])
        got = dict(np.load(path + ".out.npz"))
        assert set(got) == set(ref)
        for k, want in ref.items():
            assert got[k].shape == want.shape, (name, k)
            if k in exact:
                assert np.array_equal(got[k], want), (name, k)
            else:
                assert rel_diff(got[k], want) <= 1e-5, (name, k, rel_diff(got[k], want))


# -- malformed files ---------------------------------------------------------------------------
def _one_line_error(path, tmp_path):
    r = _cli("predict", str(path), os.path.join(SAMPLES, "mnist_00_7.png"))
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    return lines[0]


def test_truncated_foreign_and_oversized_files(lenet, tmp_path):
    data = open(lenet, "rb").read()
    for cut in (1, 3, 40, len(data) // 2, len(data) - 1):
        (tmp_path / "t.netdef").write_bytes(data[:cut])
        msg = _one_line_error(tmp_path / "t.netdef", tmp_path)
        assert "truncated" in msg
    (tmp_path / "png.netdef").write_bytes(open(os.path.join(SAMPLES, "mnist_00_7.png"),
                                               "rb").read())
    assert "PNG" in _one_line_error(tmp_path / "png.netdef", tmp_path)
    assert "netdef freeze" in _one_line_error(LENET_WEIGHTS, tmp_path)
    (tmp_path / "empty.netdef").write_bytes(b"")
    assert "empty" in _one_line_error(tmp_path / "empty.netdef", tmp_path)
    # flipped byte in the body: checksum
    bad = bytearray(data)
    bad[-100] ^= 0xFF
    (tmp_path / "c.netdef").write_bytes(bytes(bad))
    assert "checksum" in _one_line_error(tmp_path / "c.netdef", tmp_path)
    # a blob declaring 10^12 elements (a valid file otherwise): refused before allocating
    fm = read_frozen(lenet)
    net = pb.NetParameter()
    net.CopyFrom(fm.net)
    conv = next(lp for lp in net.layer if lp.name == "conv1")
    del conv.blobs[0].shape.dim[:]
    conv.blobs[0].shape.dim.extend([10 ** 6, 10 ** 6])
    (tmp_path / "big.netdef").write_bytes(encode(net, fm.deploy))
    msg = _one_line_error(tmp_path / "big.netdef", tmp_path)
    assert "1,000,000,000,000 values" in msg
    # an input declaring 10^12 elements
    dep = pb.NetdefDeploy()
    dep.CopyFrom(fm.deploy)
    del dep.input[0].shape.dim[:]
    dep.input[0].shape.dim.extend([10 ** 4, 1, 10 ** 4, 10 ** 4])
    (tmp_path / "bigin.netdef").write_bytes(encode(fm.net, dep))
    assert "elements" in _one_line_error(tmp_path / "bigin.netdef", tmp_path)


def test_python_and_file_layers_refused(lenet, tmp_path):
    fm = read_frozen(lenet)
    for typ, want in (("Python", "Python layer"), ("HDF5Output", "reads or writes files")):
        net = pb.NetParameter()
        net.CopyFrom(fm.net)
        lp = net.layer.add(name="evil", type=typ, bottom=["prob"])
        lp.python_param.module = "os"
        path = tmp_path / f"{typ}.netdef"
        path.write_bytes(encode(net, fm.deploy))
        assert want in _one_line_error(path, tmp_path)
        with pytest.raises(FileFormatError):
            read_frozen(str(path))
    read_frozen(str(tmp_path / "Python.netdef"), allow_python_layers=True)   # opt-in parses


def test_caffemodel_blob_sizes_checked_before_allocating(tmp_path):
    """A .caffemodel whose blob declares 10^12 elements: `netdef test --weights`,
    `netdef freeze --weights` and load_caffemodel give a one-line error, no allocation."""
    from netdef.io.weights import load_caffemodel
    with open(LENET_WEIGHTS, "rb") as f:
        net = pb.NetParameter.FromString(f.read())
    conv = next(lp for lp in net.layer if lp.name == "conv1")
    del conv.blobs[0].shape.dim[:]
    conv.blobs[0].shape.dim.extend([10 ** 6, 10 ** 6])
    big = tmp_path / "big.caffemodel"
    big.write_bytes(net.SerializeToString())
    with pytest.raises(FileFormatError, match="1,000,000,000,000 values"):
        load_caffemodel(str(big))
    # values that do not fill the declared shape (a cut or forged file)
    conv.blobs[0].shape.dim[:] = [20, 1, 5, 6]
    short = tmp_path / "short.caffemodel"
    short.write_bytes(net.SerializeToString())
    with pytest.raises(FileFormatError, match="holds 500 values"):
        load_caffemodel(str(short))
    for args in (["test", "--model", LENET_DEPLOY, "--weights", str(big), "--iterations", "1"],
                 ["freeze", "--model", LENET_TRAIN, "--weights", str(big), "-o",
                  str(tmp_path / "x.netdef"), "--input-shape", "data=1,1,28,28"]):
        r = _cli(*args)
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), r.output
        assert "1,000,000,000,000 values" in lines[0] and "conv1" in lines[0]


def _with(fm, *, net_edit=None, dep_edit=None):
    net, dep = pb.NetParameter(), pb.NetdefDeploy()
    net.CopyFrom(fm.net)
    dep.CopyFrom(fm.deploy)
    if net_edit:
        net_edit(net)
    if dep_edit:
        dep_edit(dep)
    return encode(net, dep)


def _mean(shape):
    def edit(dep):
        dep.input[0].mean.shape.dim[:] = shape
        n = 1
        for d in shape:
            n *= d
        dep.input[0].mean.data[:] = [0.0] * n
    return edit


@pytest.mark.parametrize("edit,message", [
    (dict(dep_edit=lambda d: d.ClearField("output")), "it declares no output"),
    (dict(dep_edit=lambda d: (d.ClearField("output"), d.output.append("nowhere"))),
     "output 'nowhere' is not a blob of the net"),
    (dict(dep_edit=lambda d: setattr(d.input[0], "name", "ghost")),
     "input 'ghost' is not a blob of the net"),
    (dict(net_edit=lambda n: n.layer[-1].top.__setitem__(0, "prob\nlayer { type: 'Python' }")),
     "contains control characters"),
    (dict(dep_edit=lambda d: d.input[0].shape.dim.__delitem__(slice(2, 4))),
     "carries image preprocessing but has shape [1, 1]"),
    (dict(dep_edit=_mean([5])), "the mean of input 'data' has shape [5]"),
    (dict(dep_edit=_mean([3, 28, 28])), "the mean of input 'data' has shape [3, 28, 28]"),
    (dict(dep_edit=_mean([1, 20, 20])), "which does not fit the input [1, 1, 28, 28]"),
])
def test_inconsistent_frozen_files_are_refused(lenet, tmp_path, edit, message):
    """Valid checksums, inconsistent content: one line each, on load."""
    fm = read_frozen(lenet)
    path = tmp_path / "x.netdef"
    path.write_bytes(_with(fm, **edit))
    msg = _one_line_error(path, tmp_path)
    assert "inconsistent frozen model: " in msg and message in msg, msg


def test_frozen_file_must_be_a_regular_file(tmp_path):
    assert "not a regular file" in _one_line_error("/dev/zero", tmp_path)
    with pytest.raises(FileFormatError, match="is a directory"):
        read_frozen(str(tmp_path))


def test_export_caffe_escapes_names_in_comments(lenet, tmp_path):
    """A name with a newline never reaches a file as definition text: decode refuses it, and
    the exporter escapes what it writes into comments even for an in-memory model."""
    from netdef.config import load_net
    from netdef.deploy.export_caffe import export_caffe
    from netdef.deploy.frozen import FrozenModel
    fm = read_frozen(lenet)
    dep = pb.NetdefDeploy()
    dep.CopyFrom(fm.deploy)
    dep.input[0].channel_order = "GRAY\nlayer { name: 'evil' type: 'Python' }"
    evil = FrozenModel(fm.net, dep, fm.weights, None)
    proto = tmp_path / "deploy.prototxt"
    export_caffe(evil, str(proto), str(tmp_path / "w.caffemodel"))
    text = proto.read_text()
    assert "evil" in text and "\nlayer { name: 'evil'" not in text
    assert all(line.startswith("#") for line in text.splitlines()[:3])
    d = load_net(str(proto))
    assert [l.name for l in d.message.layer if l.name == "evil"] == []


def test_predict_from_a_caffe_definition_equals_the_frozen_file(lenet, tmp_path):
    """`predict train_val.prototxt --weights W` freezes in memory: the same outputs as the
    frozen file; a definition without --weights says what is missing."""
    pngs = sorted(glob.glob(os.path.join(SAMPLES, "mnist_*_*.png")))[:5]
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(NAMES) + "\n")
    a = _cli("predict", lenet, *pngs, "--json")
    b = _cli("predict", LENET_TRAIN, "--weights", LENET_WEIGHTS, "--input-shape",
             "data=1,1,28,28", "--labels", str(labels), *pngs, "--json")
    assert a.exit_code == 0 and b.exit_code == 0, b.output
    assert a.stdout == b.stdout
    r = _cli("predict", LENET_DEPLOY, pngs[0])
    assert r.exit_code == 2
    assert "a Caffe definition needs its weights: netdef predict" in r.output
    r = _cli("predict", lenet, pngs[0], "--mean-value", "3")
    assert r.exit_code == 2 and "apply to a Caffe definition with --weights" in r.output


def test_predict_oversample_averages_the_ten_crops(lenet, tmp_path):
    """--oversample --images-dim 32,32: the image resized to 32x32, Caffe's 10 crops predicted
    one by one (here through the predictor on crops cut by hand), their outputs averaged."""
    from PIL import Image
    png = sorted(glob.glob(os.path.join(SAMPLES, "mnist_*_*.png")))[3]
    r = _cli("predict", lenet, png, "--json", "--oversample", "--images-dim", "32,32")
    assert r.exit_code == 0, r.output
    got = np.array(json.loads(r.stdout.strip())["output"])
    img = np.asarray(Image.open(png).convert("L"), np.float64)
    # the stated resize rule, independently: half-pixel bilinear 28 -> 32
    src = np.clip((np.arange(32) + 0.5) * 28 / 32 - 0.5, 0, 27)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, 27)
    f = src - lo
    rows = img[lo] * (1 - f)[:, None] + img[hi] * f[:, None]
    big = rows[:, lo] * (1 - f)[None, :] + rows[:, hi] * f[None, :]
    crops = [big[y:y + 28, x:x + 28] for y, x in [(0, 0), (0, 4), (4, 0), (4, 4), (2, 2)]]
    crops += [c[:, ::-1] for c in crops]
    pred = load(lenet)
    outs = [pred.predict(np.asarray(c, np.float32)[None, None] / 256)["prob"][0]
            for c in crops]
    np.testing.assert_allclose(got, np.mean(outs, axis=0), rtol=1e-5, atol=1e-7)
    single = _cli("predict", lenet, png, "--json", "--center-only")
    assert json.loads(single.stdout)["top_k"][0]["index"] == int(png[-5])
    r = _cli("predict", lenet, png, "--oversample", "--center-only")
    assert r.exit_code == 2


def test_predict_a_deploy_prototxt_in_classify_py_spelling(lenet):
    """`predict lenet.prototxt --weights W` with classify.py's flags spelled as classify.py
    does (underscores): raw_scale 255 x input_scale 1/256 is the train net's scale, so the
    outputs equal the frozen train/val file's, with and without --oversample."""
    from netdef_cli.main import caffe_spelling
    pngs = sorted(glob.glob(os.path.join(SAMPLES, "mnist_*_*.png")))[5:8]
    outs = []
    for extra in ([], ["--oversample", "--images_dim", "30,31"], ["--center_only"]):
        args = caffe_spelling(["predict", LENET_DEPLOY, "--weights", LENET_WEIGHTS,
                               "--raw_scale", "255", "--input_scale", "0.00390625",
                               *extra, *pngs, "--json"])
        b = _cli(*args)
        a = _cli("predict", lenet, *[e.replace("_", "-") for e in extra], *pngs, "--json")
        assert a.exit_code == 0 and b.exit_code == 0, b.output
        got = [json.loads(ln)["output"] for ln in b.stdout.splitlines()]
        want = [json.loads(ln)["output"] for ln in a.stdout.splitlines()]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        outs.append(got)
    assert np.abs(np.subtract(outs[1], outs[0])).max() > 1e-6     # the 10 crops did differ


def test_predict_refuses_a_definitions_python_layer_before_importing_it(tmp_path,
                                                                          monkeypatch):
    """A Python layer in `predict DEF --weights` (and `freeze`) is refused with a located
    one-line error before its module is imported (the predictor holds no code), with or
    without --allow-python-layers."""
    marker = tmp_path / "imported"
    (tmp_path / "h1_evil_layer.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\nclass L:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with open(LENET_DEPLOY) as f:
        text = f.read()
    head, sep, tail = text.partition('layer {\n  name: "prob"')
    assert sep, "lenet.prototxt changed: its prob layer is not where the test expects"
    evil = ('layer {\n  name: "evil"\n  type: "Python"\n  bottom: "ip2"\n  top: "evil"\n'
            '  python_param { module: "h1_evil_layer" layer: "L" }\n}\n')
    proto = tmp_path / "evil.prototxt"
    proto.write_text(head + evil + sep + tail)
    png = sorted(glob.glob(os.path.join(SAMPLES, "mnist_*_*.png")))[0]
    line = len((head + "x").splitlines())           # the line the Python layer starts on
    for extra in ([], ["--allow-python-layers"]):
        r = _cli("predict", str(proto), "--weights", LENET_WEIGHTS, png, *extra)
        assert r.exit_code == 2, r.output
        assert len(r.output.strip().splitlines()) == 1
        assert f"evil.prototxt:{line}:" in r.output and "Python layers cannot be frozen" \
            in r.output
    r = _cli("freeze", "--model", str(proto), "--weights", LENET_WEIGHTS, "-o",
             str(tmp_path / "x.netdef"))
    assert r.exit_code == 2 and "Python layers cannot be frozen" in r.output
    assert not marker.exists()
    assert "h1_evil_layer" not in sys.modules
