"""Python layers (type "Python"): a user module written to tmp_path gives the same loss and
gradients as the built-in EuclideanLoss (gradient-checked with the shared checker), pycaffe's
own example module (``import caffe``) runs unchanged in a net, learnable blobs added by the
user train, errors for a missing module/class name the field with file:line, and the
disallowed mode refuses to construct the layer."""
import json
import os
import sys
import textwrap

import numpy as np
import pytest
from shared_paths import CORPUS

from netdef.analysis import analyze
from netdef.config import load_net
from netdef.errors import ConfigError
from netdef.layers.python_layer import (
    allow_python_layers,
    python_layers_allowed,
    set_allow_python_layers,
)
from netdef.net import PHASES, Net
from netdef.testing import TRAIN, GradientChecker, make_blobs, make_layer, run_forward

# a loss module written the way pycaffe's example (examples/pycaffe/layers/pyloss.py) is:
# ``import caffe``, a ``caffe.Layer`` subclass, ``top[0].reshape(1)``, legacy ``.num``, and a
# backward that assumes loss_weight 1
PYLOSS = '''
import caffe
import numpy as np


class EuclideanLossLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise ValueError("two bottoms expected")

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise ValueError("bottoms differ in size")
        self.delta = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.delta[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = 0.5 * np.sum(self.delta ** 2) / bottom[0].num

    def backward(self, top, propagate_down, bottom):
        for k, sign in enumerate((1.0, -1.0)):
            if propagate_down[k]:
                bottom[k].diff[...] = sign * self.delta / bottom[k].num
'''

# the same loss, scaled by the top's diff (so any loss weight works), no caffe import,
# plus a layer with a learnable blob and a param_str
USERMOD = '''
import numpy as np


class Euclid:
    def setup(self, bottom, top):
        self.calls = ["setup"]

    def reshape(self, bottom, top):
        assert bottom[0].shape == bottom[1].shape
        top[0].reshape()

    def forward(self, bottom, top):
        self.d = bottom[0].data - bottom[1].data
        top[0].data[...] = np.sum(self.d ** 2) / bottom[0].num / 2.0

    def backward(self, top, propagate_down, bottom):
        g = float(top[0].diff)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                bottom[i].diff[...] = sign * g * self.d / bottom[i].num


class Scale:
    """y = w * x + b with w, b learnable (per channel); param_str holds the initial w."""

    def setup(self, bottom, top):
        c = bottom[0].channels
        self.blobs.add_blob(c)
        self.blobs.add_blob(c)
        self.blobs[0].data[...] = float(self.param_str or 1.0)
        self.blobs[1].data[...] = np.arange(c) * 0.1
        self.seen_phase = self.phase

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].shape)

    def _b(self, a, x):
        return a.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        x = bottom[0].data
        top[0].data[...] = x * self._b(self.blobs[0].data, x) + self._b(self.blobs[1].data, x)

    def backward(self, top, propagate_down, bottom):
        x, dy = bottom[0].data, top[0].diff
        axes = tuple(i for i in range(x.ndim) if i != 1)
        self.blobs[0].diff[...] += (dy * x).sum(axis=axes)
        self.blobs[1].diff[...] += dy.sum(axis=axes)
        if propagate_down[0]:
            bottom[0].diff[...] = dy * self._b(self.blobs[0].data, x)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """Write modules to tmp_path (unique names per test) and forget them afterwards."""
    names = []

    def write(name, text):
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
        names.append(name)
        return name

    monkeypatch.chdir(tmp_path)
    yield write
    for n in names:
        sys.modules.pop(n, None)


def test_user_euclidean_matches_builtin(user_module):
    mod = user_module("ndpl_euclid", USERMOD)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    py = make_layer("Python", f'python_param {{ module: "{mod}" layer: "Euclid" }} '
                              f'loss_weight: 1')
    ref = make_layer("EuclideanLoss")
    bp, br = make_blobs([a, b]), make_blobs([a, b])
    tp, tr = run_forward(py, bp), run_forward(ref, br)
    assert py.user.calls == ["setup"]
    np.testing.assert_allclose(tp[0].data, tr[0].data, rtol=1e-12)
    assert py.loss_weights == [1.0]
    for t in (tp, tr):
        t[0].diff[...] = 1.7
    py.backward(tp, [True, True], bp)
    ref.backward(tr, [True, True], br)
    for x, y in zip(bp, br):
        np.testing.assert_allclose(x.diff, y.diff, rtol=1e-12)
    GradientChecker().check(py, make_blobs([a, b]), tp)


def test_user_layer_with_learnable_blobs_and_param_str(user_module):
    mod = user_module("ndpl_scale", USERMOD)
    layer = make_layer("Python", f'python_param {{ module: "{mod}" layer: "Scale" '
                                 f'param_str: "0.5" }}', phase=TRAIN)
    bottom = make_blobs([np.random.default_rng(1).standard_normal((2, 3, 2, 2))])
    top = run_forward(layer, bottom)
    assert [p.shape for p in layer.blobs] == [(3,), (3,)]
    assert layer.user.param_str == "0.5" and layer.user.seen_phase == TRAIN
    ref = bottom[0].data * 0.5 + (np.arange(3) * 0.1).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-12)
    GradientChecker().check(layer, bottom, top)


def net_text(loss_layer: str) -> str:
    return textwrap.dedent(f"""
    name: "linreg"
    layer {{ name: "data" type: "Input" top: "x" top: "y"
      input_param {{ shape {{ dim: 5 dim: 3 }} shape {{ dim: 5 dim: 2 }} }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "p"
      inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 1 }}
                             bias_filler {{ type: "gaussian" std: 1 }} }} }}
    {loss_layer}
    """)


def test_pycaffe_example_module_in_a_net(tmp_path):
    """A pycaffe-style module (``import caffe``) beside the net file: same loss and parameter
    gradients as the built-in EuclideanLoss; the caffe stand-in does not leak."""
    sub = tmp_path / "model"
    sub.mkdir()
    (sub / "ndpl_pyloss.py").write_text(PYLOSS)
    py = net_text('layer { name: "loss" type: "Python" bottom: "p" bottom: "y" top: "loss" '
                  'python_param { module: "ndpl_pyloss" layer: "EuclideanLossLayer" } '
                  'loss_weight: 1 }')
    ref = net_text('layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" '
                   'top: "loss" }')
    (sub / "py.prototxt").write_text(py)
    (sub / "ref.prototxt").write_text(ref)
    try:
        nets = [Net(load_net(str(sub / f)), PHASES["TRAIN"], dtype=np.float64, seed=3)
                for f in ("py.prototxt", "ref.prototxt")]
        rng = np.random.default_rng(4)
        x, y = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
        losses = []
        for n in nets:
            n.blobs["x"].data[...] = x
            n.blobs["y"].data[...] = y
            losses.append(n.forward_backward())
        assert losses[0] == pytest.approx(losses[1], rel=1e-6)
        for a, b in zip(nets[0].params, nets[1].params):
            np.testing.assert_allclose(a.blob.diff, b.blob.diff, rtol=1e-5, atol=1e-7)
        assert nets[0].blobs["loss"].shape == (1,)
    finally:
        sys.modules.pop("ndpl_pyloss", None)
    assert "caffe" not in sys.modules or getattr(sys.modules["caffe"], "Layer", None) is not \
        __import__("netdef.layers.python_layer", fromlist=["x"]).PyLayerBase


def test_missing_module_and_class(tmp_path, user_module):
    user_module("ndpl_empty", "class Other:\n    pass\n")
    (tmp_path / "net.prototxt").write_text(net_text(
        'layer { name: "loss" type: "Python" bottom: "p" bottom: "y" top: "loss"\n'
        '  python_param { module: "ndpl_no_such_module" layer: "L" } }'))
    with pytest.raises(ConfigError) as e:
        Net(load_net(str(tmp_path / "net.prototxt")), PHASES["TRAIN"])
    assert e.value.field == "python_param.module"
    assert "ndpl_no_such_module" in str(e.value) and "net.prototxt:" in str(e.value)
    assert e.value.line is not None and e.value.layer == "loss"

    (tmp_path / "net2.prototxt").write_text(net_text(
        'layer { name: "loss" type: "Python" bottom: "p" bottom: "y" top: "loss"\n'
        '  python_param { module: "ndpl_empty" layer: "Missing" } }'))
    with pytest.raises(ConfigError, match="no layer class 'Missing'.*defines: Other") as e:
        Net(load_net(str(tmp_path / "net2.prototxt")), PHASES["TRAIN"])
    assert e.value.field == "python_param.layer" and e.value.line is not None

    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("Python", 'python_param { layer: "L" }'), make_blobs([(2,)]))
    assert e.value.field == "python_param.module"


def test_module_raising_on_import(user_module):
    mod = user_module("ndpl_broken", "raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="importing Python module 'ndpl_broken' failed.*boom"):
        run_forward(make_layer("Python", f'python_param {{ module: "{mod}" layer: "L" }}'),
                    make_blobs([(2,)]))
    mod = user_module("ndpl_dep", "import ndpl_not_installed_dependency\n")
    with pytest.raises(ConfigError, match="ndpl_not_installed_dependency"):
        run_forward(make_layer("Python", f'python_param {{ module: "{mod}" layer: "L" }}'),
                    make_blobs([(2,)]))


def test_disallowed_mode(user_module):
    mod = user_module("ndpl_euclid2", USERMOD)
    assert allow_python_layers()
    with python_layers_allowed(False):
        assert not allow_python_layers()
        with pytest.raises(ConfigError, match=r"this model contains Python layers \(module "
                                              r"'ndpl_euclid2'\); pass --allow-python-layers"):
            make_layer("Python", f'python_param {{ module: "{mod}" layer: "Euclid" }}')
    assert allow_python_layers()
    assert mod not in sys.modules                           # nothing was imported
    prev = set_allow_python_layers(False)
    try:
        assert prev is True
    finally:
        set_allow_python_layers(prev)


def test_summary_of_corpus_linreg(tmp_path, monkeypatch):
    """The pycaffe linreg net: with pyloss importable the Python layer's own reshape gives the
    loss shape; without it, shape inference assumes a scalar loss (it has a loss_weight)."""
    path = os.path.join(CORPUS, "pycaffe_linreg", "linreg.prototxt")
    monkeypatch.chdir(tmp_path)
    stats = analyze(Net(load_net(path), PHASES["TEST"], init_params=False))
    assert stats.learnable_params == 2 * (6 * 10 + 10)
    assert stats.outputs == {"loss": []}
    (tmp_path / "pyloss.py").write_text(PYLOSS)
    try:
        stats = analyze(Net(load_net(path), PHASES["TEST"], init_params=False))
        assert stats.outputs == {"loss": [1]}
        net = Net(load_net(path), PHASES["TRAIN"], seed=1)
        loss = net.forward_backward()
        assert np.isfinite(loss) and loss > 0
    finally:
        sys.modules.pop("pyloss", None)
    sys.modules.pop("pyloss", None)
    with pytest.raises(ConfigError, match="cannot import Python module 'pyloss'"):
        (tmp_path / "pyloss.py").unlink()
        Net(load_net(path), PHASES["TRAIN"], seed=1)


# -- where Python layers run: summary imports nothing unless asked; run commands can refuse --

PYDATA = """\
import os
open(os.environ["NDPL_MARKER"], "a").write("imported\\n")

class D:
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(2, 3, 8, 8)

    def forward(self, bottom, top):
        top[0].data[...] = 1

    def backward(self, top, propagate_down, bottom):
        pass
"""

PYNET = """name: "p"
layer { name: "data" type: "Python" top: "data" python_param { module: "ndpl_pydata" layer: "D" } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu" type: "ReLU" bottom: "c" top: "c" }
"""


@pytest.fixture
def pynet(tmp_path, monkeypatch):
    (tmp_path / "ndpl_pydata.py").write_text(PYDATA)
    (tmp_path / "net.prototxt").write_text(PYNET)
    marker = tmp_path / "marker"
    monkeypatch.setenv("NDPL_MARKER", str(marker))
    yield tmp_path / "net.prototxt", marker
    sys.modules.pop("ndpl_pydata", None)


def _cli(*args):
    from click.testing import CliRunner
    from netdef_cli.main import cli
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_summary_imports_no_python_layer(pynet):
    net, marker = pynet
    r = _cli("summary", net, "--json")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.output)
    assert stats["unknown"] == [["data", "Python"], ["conv", "Convolution"], ["relu", "ReLU"]]
    assert stats["layers"] == [] and stats["learnable_params"] == 0
    assert not marker.exists()                                   # nothing was imported
    r = _cli("summary", net)
    assert "unknown: 3 layers, left out of the totals" in r.output
    assert "data   Python       ?" in r.output


def test_summary_takes_python_tops_from_input_shape(pynet):
    net, marker = pynet
    stats = json.loads(_cli("summary", net, "--json", "--input-shape", "data=2,3,8,8").output)
    assert stats["unknown"] == [] and stats["outputs"] == {"c": [2, 4, 6, 6]}
    assert stats["learnable_params"] == 4 * 3 * 3 * 3 + 4
    assert not marker.exists()


def test_summary_allow_python_layers_runs_its_reshape(pynet, caplog):
    net, marker = pynet
    with caplog.at_level("INFO", logger="netdef.layers.python_layer"):
        r = _cli("summary", net, "--json", "--allow-python-layers")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)           # the import's log line goes to stderr
    assert stats["outputs"] == {"c": [2, 4, 6, 6]}
    assert marker.read_text() == "imported\n"
    assert any("imported module 'ndpl_pydata' from " + str(net.parent) in rec.getMessage()
               for rec in caplog.records)


def test_run_commands_refuse_python_layers_on_request(pynet):
    net, marker = pynet
    r = _cli("time", "--model", net, "--iterations", "1", "--phase", "TEST",
             "--no-python-layers")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == (
        f"error: {net}:2:64: layer 'data' (Python): this model contains Python layers "
        f"(module 'ndpl_pydata'); drop --no-python-layers to run them")
    assert not marker.exists()
    r = _cli("time", "--model", net, "--iterations", "1", "--phase", "TEST")
    assert r.exit_code == 0, r.output
    assert marker.read_text() == "imported\n"
