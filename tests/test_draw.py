"""netdef draw / caffe.draw: draw_net.py's picture as DOT for every corpus net, labels and
colours, phase filtering, images through graphviz where it is installed."""
import os
import re
import shutil

import pytest
from click.testing import CliRunner
from shared_paths import CORPUS

from netdef.config import load_net
from netdef.draw import (BLOB_COLOR, DEFAULT_COLOR, LAYER_COLORS, draw_net, get_pydot_graph,
                         to_dot)
from netdef_cli.main import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def _corpus_nets():
    import csv
    with open(os.path.join(CORPUS, "MANIFEST.tsv")) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return sorted(os.path.join(CORPUS, r["file"]) for r in rows
                  if r["notes"].startswith("net"))


NETS = _corpus_nets()
NODE = re.compile(r'^  (layer\d+|blob\d+) \[label="((?:[^"\\]|\\.)*)", shape=(\w+)')
EDGE = re.compile(r"^  (layer\d+|blob\d+) -> (layer\d+|blob\d+)(?: \[label=\"[^\"]*\"\])?;$")


def _unescape(text):
    """A quoted DOT string's text: \\n is a newline, \\x is x."""
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def _structure(dot):
    """(nodes {id: (label, shape)}, edges) of our DOT, checking every line's form."""
    lines = dot.strip().splitlines()
    assert lines[0].startswith("digraph ") and lines[0].endswith("{") and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[3:-1]:
        m = NODE.match(line)
        if m:
            assert m.group(1) not in nodes
            nodes[m.group(1)] = (_unescape(m.group(2)), m.group(3))
            continue
        m = EDGE.match(line)
        assert m, line
        edges.append((m.group(1), m.group(2)))
    for a, b in edges:
        assert a in nodes and b in nodes
        assert a.startswith("layer") != b.startswith("layer")       # layer <-> blob only
    return nodes, edges


def test_corpus_has_nets():
    assert len(NETS) >= 40


@pytest.mark.parametrize("path", NETS, ids=lambda p: os.path.relpath(p, CORPUS))
def test_every_corpus_net_gives_valid_dot(path):
    net = load_net(path).message
    dot = to_dot(net)
    nodes, edges = _structure(dot)
    layers = [n for n in nodes if n.startswith("layer")]
    assert len(layers) == len(net.layer)
    blob_names = [label for n, (label, shape) in nodes.items() if n.startswith("blob")]
    assert len(blob_names) == len(set(blob_names))                 # in place: no repeat
    tops = {t for lp in net.layer for t in lp.top} | {b for lp in net.layer for b in lp.bottom}
    assert set(blob_names) == tops
    if len(net.layer) > 200:
        return                      # pydot's parser takes seconds on the deepest nets
    pydot = pytest.importorskip("pydot")
    (g,) = pydot.graph_from_dot_data(dot)
    assert len(g.get_edges()) == len(edges)


def test_lenet_labels_colours_and_in_place():
    net = load_net(os.path.join(REPO, "model_zoo", "lenet", "lenet_train_test.prototxt")).message
    dot = to_dot(net, "TB", phase="TRAIN")
    nodes, edges = _structure(dot)
    label = {lab.split("\n")[0].split(" ")[0]: (n, lab) for n, (lab, s) in nodes.items()
             if n.startswith("layer")}
    conv1 = label["conv1"][1]
    assert conv1 == "conv1 (Convolution) kernel size: 5 stride: 1 pad: 0"    # TB: one line
    assert label["pool1"][1] == "pool1 (MAX Pooling) kernel size: 2 stride: 2 pad: 0"
    assert f'fillcolor="{LAYER_COLORS["Convolution"]}"' in dot
    assert f'fillcolor="{BLOB_COLOR}"' in dot
    # relu1 computes in place: ip1's octagon gets the edge back, no second "ip1" blob
    blobs = {lab: n for n, (lab, s) in nodes.items() if n.startswith("blob")}
    relu = label["relu1"][0]
    assert (blobs["ip1"], relu) in edges and (relu, blobs["ip1"]) in edges
    assert '-> blob' in dot and '[label="20"]' in dot and '[label="Batch 64"]' in dot
    lr = to_dot(net, display_lrm=True)
    assert "lr mult: 1, 2" in lr


def test_phase_selects_the_layers_of_a_phase():
    net = load_net(os.path.join(REPO, "model_zoo", "lenet", "lenet_train_test.prototxt")).message
    every, _ = _structure(to_dot(net))
    train, _ = _structure(to_dot(net, phase="TRAIN"))
    test, _ = _structure(to_dot(net, phase="TEST"))
    names = lambda nodes: sorted(l.split("\n")[0] for n, (l, s) in nodes.items()  # noqa: E731
                                 if n.startswith("layer"))
    assert names(every).count("mnist") == 2                          # train and test data
    assert names(train).count("mnist") == 1 and "accuracy" not in names(train)
    assert "accuracy" in names(test)


def test_cli_writes_dot_and_reports_bad_requests(tmp_path):
    net = os.path.join(REPO, "model_zoo", "lenet", "lenet.prototxt")
    r = CliRunner().invoke(cli, ["draw", net, "-o", str(tmp_path / "n.dot"), "--rankdir", "TB"])
    assert r.exit_code == 0, r.output
    _structure((tmp_path / "n.dot").read_text())
    r = CliRunner().invoke(cli, ["draw", net, "-o", str(tmp_path / "n.xyz")])
    assert r.exit_code == 2 and "cannot draw a '.xyz' file" in r.output


def test_images_through_graphviz(tmp_path, monkeypatch):
    net = os.path.join(REPO, "model_zoo", "lenet", "lenet.prototxt")
    if shutil.which("dot") is None:
        r = CliRunner().invoke(cli, ["draw", net, "-o", str(tmp_path / "n.png")])
        assert r.exit_code == 2 and "needs graphviz's `dot`" in r.output
        pytest.skip("graphviz's dot is not installed: only the error was checked")
    r = CliRunner().invoke(cli, ["draw", net, "-o", str(tmp_path / "n.svg")])
    assert r.exit_code == 0, r.output
    svg = (tmp_path / "n.svg").read_text()
    assert "<svg" in svg and "conv1" in svg and "ip2" in svg
    import netdef.caffe as caffe
    from netdef.caffe import draw
    png = draw.draw_net(load_net(net).message, "LR", ext="png", phase=caffe.TEST)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    r = CliRunner().invoke(cli, ["draw", net, "-o", str(tmp_path / "m.png")])
    assert r.exit_code == 2 and "needs graphviz's `dot`" in r.output


def _hostile_net():
    from google.protobuf import text_format

    from netdef.proto import pb
    net = pb.NetParameter()
    text_format.Parse(r'''
        name: "a \"quoted\" net {x}"
        layer { name: "in|put" type: "Input" top: "da\"ta" input_param { shape { dim: 1 } } }
        layer { name: "c<1>{x}" type: "Convolution" bottom: "da\"ta" top: "back\\slash\nnl"
                convolution_param { num_output: 2 kernel_size: 3 } }
        layer { name: "r -> e; lu" type: "ReLU" bottom: "back\\slash\nnl"
                top: "back\\slash\nnl" }
        layer { name: "ünï" type: "MyOwnType" bottom: "back\\slash\nnl" top: "out" }
    ''', net)
    return net


def test_names_are_quoted_so_any_name_gives_valid_dot(tmp_path):
    net = _hostile_net()
    dot = to_dot(net, "TB")
    nodes, edges = _structure(dot)
    labels = sorted(lab for lab, _ in nodes.values())
    assert 'da"ta' in labels and "back\\slash\nnl" in labels
    assert "ünï (MyOwnType)" in labels and "in|put (Input)" in labels
    assert f'fillcolor="{DEFAULT_COLOR}"' in dot           # an unknown type: the default
    assert len(edges) == 7 and len([n for n in nodes if n.startswith("blob")]) == 3
    pydot = pytest.importorskip("pydot")
    (g,) = pydot.graph_from_dot_data(dot)
    assert len(g.get_nodes()) - len([n for n in g.get_nodes()
                                     if n.get_name() in ("node", "graph", "edge")]) == 7
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is not installed: the image was not rendered")
    svg = draw_net(net, "LR", ext="svg").decode()
    assert "<svg" in svg and "da&quot;ta" in svg and "ünï" in svg


def test_get_pydot_graph_and_its_error_without_pydot(monkeypatch):
    import sys

    from netdef.errors import ConfigError
    net = load_net(os.path.join(REPO, "model_zoo", "lenet", "lenet_train_test.prototxt")).message
    try:
        import pydot  # noqa: F401
    except ImportError:
        pydot = None
    if pydot is not None:
        g = get_pydot_graph(net, "BT", phase="TEST")
        assert isinstance(g, pydot.Dot)
        assert g.get_graph_defaults() == [{"rankdir": "BT"}] or "rankdir=BT" in g.to_string()
        names = {n.get_name() for n in g.get_nodes()}
        assert {"layer0", "blob0"} <= names
    monkeypatch.setitem(sys.modules, "pydot", None)           # as if it were not installed
    with pytest.raises(ConfigError, match=r"needs pydot \(pip install 'netdef\[draw\]'\)"):
        get_pydot_graph(net, "LR")


def test_legacy_v1_layers_are_drawn():
    from google.protobuf import text_format

    from netdef.proto import pb
    net = pb.NetParameter()
    text_format.Parse('''
        name: "old"
        input: "data" input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8
        layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
                 convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
        layers { name: "loss" type: SOFTMAX_LOSS bottom: "conv" bottom: "label" top: "loss"
                 include { phase: TRAIN } }
    ''', net)
    every, _ = _structure(to_dot(net))
    test, _ = _structure(to_dot(net, phase="TEST"))
    labels = [lab for n, (lab, s) in every.items() if n.startswith("layer")]
    assert "conv\n(Convolution)\nkernel size: 3\nstride: 2\npad: 0" in labels
    assert any(lab.startswith("loss\n(SoftmaxWithLoss)") for lab in labels)
    assert not any(lab.startswith("loss") for lab in (l for l, s in test.values()))


def test_bad_rankdir_and_phase_are_user_errors():
    from netdef.errors import ConfigError
    net = _hostile_net()
    with pytest.raises(ConfigError, match="rankdir must be one of LR, TB, BT, RL"):
        to_dot(net, "XY")
    with pytest.raises(ConfigError, match="phase must be TRAIN, TEST or ALL"):
        to_dot(net, phase="VAL")
    with pytest.raises(ConfigError, match="phase must be TRAIN, TEST or ALL"):
        to_dot(net, phase=7)
    assert to_dot(net, phase=1) == to_dot(net, phase="TEST")   # caffe.TEST is 1


def test_draw_imports_no_heavy_module(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "n.dot"
    code = ("import sys\n"
            "from netdef_cli.main import cli\n"
            "try:\n"
            f"    cli(['draw', {os.path.join(REPO, 'model_zoo', 'lenet', 'lenet.prototxt')!r},"
            f" '-o', {str(out)!r}])\n"
            "except SystemExit as e:\n"
            "    assert not e.code, e.code\n"
            "import netdef.caffe.draw\n"
            "bad = [m for m in ('numba.cuda', 'h5py', 'lmdb', 'pydot') if m in sys.modules]\n"
            "print('BAD', bad)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "BAD []" in r.stdout
    assert out.read_text().startswith('digraph "LeNet" {')
