"""Every net of the corpus compiles, and its parameter count and output shapes equal MANIFEST.tsv
(computed independently of netdef); every solver loads."""
import csv
import json
import os
import re

import pytest

from shared_paths import CORPUS

from netdef.analysis import analyze
from netdef.config import load_net, load_solver
from netdef.net import PHASES, Net



def manifest():
    with open(os.path.join(CORPUS, "MANIFEST.tsv"), newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r for r in rows if r["file"].endswith(".prototxt")]


ROWS = manifest()
NETS = [r for r in ROWS if r["notes"].startswith("net")]
SOLVERS = [r for r in ROWS if r["notes"].startswith("solver")]


def test_manifest_covers_corpus():
    assert len(ROWS) == 71
    assert len(NETS) + len(SOLVERS) == 71


def data_top(net_param, phase):
    """First top of the first data layer active in ``phase`` (what the note's shape is for)."""
    from netdef.graph import Locator, filter_layers
    from netdef.proto import pb
    state = pb.NetState(phase=phase)
    for ref in filter_layers(net_param, state, Locator()):
        if ref.param.type in ("Data", "ImageData", "HDF5Data", "WindowData", "MemoryData"):
            return ref.param.top[0]
    return None


@pytest.mark.parametrize("row", NETS, ids=lambda r: r["file"])
def test_net_summary_matches_manifest(row):
    path = os.path.join(CORPUS, row["file"])
    d = load_net(path)
    if not row["learnable_params(computed)"]:
        assert "Python" in [l.type for l in d.message.layer]  # linreg: issue 8
        return
    m = re.search(r"phase=(TRAIN|TEST)", row["notes"])
    phase = PHASES[m.group(1)]
    shapes = {}
    m = re.search(r"assumed data shape \[([\d, ]+)\]", row["notes"])
    if m:
        shapes[data_top(d.message, phase)] = tuple(int(x) for x in m.group(1).split(","))
    net = Net(d, phase, input_shapes=shapes, init_params=False)
    stats = analyze(net)
    assert stats.learnable_params == int(row["learnable_params(computed)"])
    assert stats.outputs == json.loads(row["outputs(computed shape)"])
    m = re.search(r"BN running-stat elements=(\d+)", row["notes"])
    if m:
        assert stats.stat_params == int(m.group(1))
    assert stats.flops > 0


@pytest.mark.parametrize("row", SOLVERS, ids=lambda r: r["file"])
def test_solver_loads(row):
    d = load_solver(os.path.join(CORPUS, row["file"]))
    s = d.message
    m = re.search(r"base_lr=([\d.e-]+)", row["notes"])
    if m:
        assert s.base_lr == pytest.approx(float(m.group(1)))
    m = re.search(r"max_iter=(\d+)", row["notes"])
    if m:
        assert s.max_iter == int(m.group(1))
    m = re.search(r"type=(\w+)", row["notes"])
    assert s.type == m.group(1)   # "SGD(default)": the field's default is "SGD"
    m = re.search(r"lr_policy=(\w+)", row["notes"])
    assert s.lr_policy == m.group(1)


def test_resnet152_known_numbers():
    d = load_net(os.path.join(CORPUS, "resnet_152", "ResNet-152-deploy.prototxt"))
    stats = analyze(Net(d, PHASES["TEST"], init_params=False))
    assert stats.learnable_params == 60_192_808
    # ~11.3 GMACs for ResNet-152 at 224x224 (published), i.e. ~22.6 GFLOPs
    assert 21e9 < stats.flops < 24e9
