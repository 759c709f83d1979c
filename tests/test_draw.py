"""netdef draw / caffe.draw: draw_net.py's picture as DOT for every corpus net, labels and
colours, phase filtering, images through graphviz where it is installed."""
import os
import re
import shutil

import pytest
from click.testing import CliRunner
from shared_paths import CORPUS

from netdef.config import load_net
from netdef.draw import BLOB_COLOR, LAYER_COLORS, to_dot
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


def _structure(dot):
    """(nodes {id: (label, shape)}, edges) of our DOT, checking every line's form."""
    lines = dot.strip().splitlines()
    assert lines[0].startswith("digraph ") and lines[0].endswith("{") and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[3:-1]:
        m = NODE.match(line)
        if m:
            assert m.group(1) not in nodes
            nodes[m.group(1)] = (m.group(2).replace("\\n", "\n").replace('\\"', '"'),
                                 m.group(3))
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
