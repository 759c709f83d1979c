"""The numba predictor's fused convolutions (convolution + bias + ReLU + pooling + ReLU in one
kernel, chained per batch block) compute what the unfused net computes."""
from __future__ import annotations

import os

import numpy as np
import pytest
from deploy_nets import forward, random_net, rel_diff, weights_of
from google.protobuf import text_format

import netdef.deploy.predictor as P
from netdef.backend.cpu import gemm as G
from netdef.backend.cpu import microkernel as MK
from netdef.config import load_net
from netdef.deploy import load
from netdef.deploy.freeze import freeze

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not (P.numba_available() and G.AVAILABLE),
                                reason="needs numba and numpy's BLAS")

# negative slopes, a non-in-place ReLU after an AVE pool, a pointwise convolution, padding
# and a ceil-mode window hanging off the image
SLOPES_NET = """
name: "slopes"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 13 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1"
        relu_param { negative_slope: 0.1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "relu1b" type: "ReLU" bottom: "pool1" top: "relu1b"
        relu_param { negative_slope: 0.2 } }
layer { name: "conv2" type: "Convolution" bottom: "relu1b" top: "conv2"
        convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
        convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }
layer { name: "pool3" type: "Pooling" bottom: "conv3" top: "pool3"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool3" top: "ip"
        inner_product_param { num_output: 3 } }
"""


def _logits_text(path: str) -> str:
    """A model zoo deploy net without its Softmax: the outputs are the logits."""
    msg = load_net(os.path.join(REPO, path)).message
    keep = [lp for lp in msg.layer if lp.type != "Softmax"]
    del msg.layer[:]
    msg.layer.extend(keep)
    return text_format.MessageToString(msg)


# name: (net, input CHW, chains, register tiles per group with the 256-bit and with the
# 512-bit tiles: (mr, nv, lanes, flat) -- flat: over the im2col matrix, any stride or 1x1)
CASES = {
    "lenet": (_logits_text("model_zoo/lenet/lenet.prototxt"), (1, 28, 28),
              [["conv1+pool1", "conv2+pool2"]],
              {"ymm": [[(4, 3, 8, False), (8, 1, 8, False)]],
               # conv1 rows of 24: 48 pixels a tile would be half padding; conv2 rows of 8
               "zmm": [[(8, 2, 16, True), (8, 2, 16, True)]]}),
    "cifar10_quick": (_logits_text("model_zoo/cifar10_quick/cifar10_quick.prototxt"),
                      (3, 32, 32),
                      [["conv1+pool1+relu", "conv2+relu+pool2", "conv3+relu+pool3"]],
                      {"ymm": [[(4, 2, 8, False), (4, 2, 8, False), (8, 1, 8, False)]],
                       # rows of 32: whole 512-bit tiles; of 16 and 8: flat
                       "zmm": [[(8, 2, 16, False), (8, 2, 16, True), (8, 2, 16, True)]]}),
    "slopes": (SLOPES_NET, (3, 13, 16),
               [["conv1+relu+pool1+relu", "conv2+relu", "conv3+pool3"]],
               # 256-bit: no tiles for 1x1 (the GEMM reads the image) and stride 2
               {"ymm": [[(6, 2, 8, False), None, None]],
                # 6, 5 and 4 channels: 8-channel tiles, flat (rows of 16: a 256-bit tile
                # would fit them, at half the speed)
                "zmm": [[(8, 2, 16, True), (8, 2, 16, True), (8, 2, 16, True)]]}),
}

TILE_MODES = ["off", "ymm", pytest.param("zmm", marks=pytest.mark.skipif(
    MK.host_lanes() != 16, reason="the host has no AVX-512F: the 512-bit tiles cannot run"))]


def use_tiles(monkeypatch, mode):
    """Register tiles off, 256-bit only (as on an AVX2 host) or 256 + 512-bit."""
    monkeypatch.setattr(MK, "ENABLED", mode != "off")
    lanes = 16 if mode == "zmm" else 8
    monkeypatch.setattr(MK, "LANES", lanes)
    monkeypatch.setattr(MK, "TILES", tuple(t for t in MK.TILES_ALL if t[2] <= lanes))


def _frozen(tmp_path, name, batch):
    text, chw = CASES[name][:2]
    net = random_net(text, seed=5)
    res = freeze(net.param, weights_of(net), input_shapes={"data": (batch,) + chw})
    path = str(tmp_path / f"{name}.frozen")
    res.save(path)
    return net, path


@pytest.mark.parametrize("tiles", TILE_MODES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_fused_equals_unfused(tmp_path, monkeypatch, name, tiles):
    _, chw, chains, tile_shapes = CASES[name]
    net, path = _frozen(tmp_path, name, 8)
    use_tiles(monkeypatch, tiles)
    fused = load(path, backend="numba")
    monkeypatch.setattr(P, "FUSE_CONV", False)
    plain = load(path, backend="numba")
    rng = np.random.default_rng(1)
    for batch in (8, 7, 1, 16):
        x = rng.normal(0, 1, (batch,) + chw).astype(np.float32)
        ref = forward(net, x)
        out = fused.predict(x)
        unf = plain.predict(x)
        assert set(out) == set(ref)
        for k in ref:
            assert np.abs(ref[k]).max() > 1e-3        # informative outputs
            assert rel_diff(out[k], ref[k]) <= 1e-5, (name, batch, k)
            assert rel_diff(out[k], unf[k]) <= 1e-5, (name, batch, k)
    assert [[g.describe() for g in c] for c in fused.runner.chains] == chains
    expect = tile_shapes[tiles] if tiles != "off" else [[None] * len(c) for c in chains]
    assert [r.tiles for kind, r in fused.runner.steps if kind] == expect
    assert plain.runner.chains == []


def test_fused_plan_smaller_or_equal(tmp_path, monkeypatch):
    """The convolution outputs a fused group absorbs take no arena bytes."""
    _, path = _frozen(tmp_path, "cifar10_quick", 4)
    x = np.zeros((4, 3, 32, 32), np.float32)
    fused = load(path, backend="numba")
    fused.predict(x)
    monkeypatch.setattr(P, "FUSE_CONV", False)
    plain = load(path, backend="numba")
    plain.predict(x)
    assert fused.runner.plan["arena_bytes"] <= plain.runner.plan["arena_bytes"]


def test_groups_share_their_workspaces(tmp_path):
    """The fused groups run one after another: one block of per-thread rows per kind of
    workspace for the whole net, as large as its largest group needs, not one per group."""
    _, path = _frozen(tmp_path, "cifar10_quick", 4)
    p = load(path, backend="numba")
    p.predict(np.zeros((4, 3, 32, 32), np.float32))
    groups = [a for kind, r in p.runner.steps if isinstance(r, P._ChainRunner) for a in r.args]
    assert len(groups) == 3
    for k in (3, 4, 5):                                 # col, out, xp
        views = [g[k] for g in groups]
        assert all(np.shares_memory(views[0], v) for v in views[1:])
        assert all(v.flags.c_contiguous and v.shape[0] >= P._threads() for v in views)


def test_conv_output_read_elsewhere_is_not_fused(tmp_path):
    """A convolution whose output is also a net output keeps its own buffer."""
    text = SLOPES_NET + 'layer { name: "keep" type: "ReLU" bottom: "conv3" top: "keep" }\n'
    net = random_net(text, seed=2)
    res = freeze(net.param, weights_of(net), input_shapes={"data": (3, 3, 13, 11)})
    path = str(tmp_path / "k.frozen")
    res.save(path)
    p = load(path, backend="numba")
    x = np.random.default_rng(0).normal(0, 1, (3, 3, 13, 11)).astype(np.float32)
    out = p.predict(x)
    ref = forward(net, x)
    for k in ref:
        assert rel_diff(out[k], ref[k]) <= 1e-5, k
    names = [g.describe() for c in p.runner.chains for g in c]
    assert "conv3+pool3" not in names


# a grouped convolution, a convolution with no ReLU (a group of its own), one with tiles
BLOCKS_NET = """
name: "blocks"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 4 dim: 12 dim: 24 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 22 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 18 kernel_size: 3 group: 2 stride: 2 } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
        convolution_param { num_output: 13 kernel_size: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv3" top: "ip"
        inner_product_param { num_output: 3 } }
"""


@pytest.mark.parametrize("tiles", TILE_MODES)
@pytest.mark.parametrize("threads", [2, 3, 5])
def test_small_batch_splits_output_channels(tmp_path, monkeypatch, tiles, threads):
    """A batch smaller than the threads runs each group as blocks of its output channels
    (grouped convolutions split across their groups, tiles in whole channel blocks): the
    same values as the float64 reference."""
    net = random_net(BLOCKS_NET, seed=3)
    res = freeze(net.param, weights_of(net), input_shapes={"data": (1, 4, 12, 24)})
    path = str(tmp_path / "b.frozen")
    res.save(path)
    use_tiles(monkeypatch, tiles)
    monkeypatch.setattr(P, "_threads", lambda: threads)
    p = load(path, backend="numba")
    rng = np.random.default_rng(4)
    for batch in (1, 2):
        x = rng.normal(0, 1, (batch, 4, 12, 24)).astype(np.float32)
        out = p.predict(x)
        ref = forward(net, x)
        for k in ref:
            assert np.abs(ref[k]).max() > 1e-3
            assert rel_diff(out[k], ref[k]) <= 1e-5, (batch, k)
        runners = [r for kind, r in p.runner.steps if kind]
        assert [r.cb for r in runners] == [-(-threads // batch)] * len(runners)
    assert [g.describe() for c in p.runner.chains for g in c] == \
        ["conv1+relu", "conv2+pool2", "conv3"]
    assert [r.tiles for kind, r in p.runner.steps if kind] == [{
        "off": [None, None, None], "ymm": [(4, 3, 8, False), None, None],
        # conv1: rows of 24, flat; conv2: groups; conv3: 1x1, flat
        "zmm": [(8, 2, 16, True), None, (8, 2, 16, True)]}[tiles]]


# depthwise convolutions: MobileNet's 3x3 stride 1 and 2 with fused ReLUs, and a 2x3 window
DW_NET = """
name: "dw"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 6 dim: 11 dim: 13 } } }
layer { name: "dw1" type: "Convolution" bottom: "data" top: "dw1"
        convolution_param { num_output: 12 kernel_size: 3 pad: 1 group: 6 } }
layer { name: "relu1" type: "ReLU" bottom: "dw1" top: "dw1" relu_param { negative_slope: 0.1 } }
layer { name: "dw2" type: "Convolution" bottom: "dw1" top: "dw2"
        convolution_param { num_output: 12 kernel_size: 3 pad: 1 stride: 2 group: 12 } }
layer { name: "relu2" type: "ReLU" bottom: "dw2" top: "dw2" }
layer { name: "dw3" type: "Convolution" bottom: "dw2" top: "dw3"
        convolution_param { num_output: 12 kernel_h: 2 kernel_w: 3 group: 12 bias_term: false } }
layer { name: "ip" type: "InnerProduct" bottom: "dw3" top: "ip"
        inner_product_param { num_output: 3 } }
"""


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_depthwise_runs_on_the_task_threads_with_its_relu(tmp_path, monkeypatch, threads):
    """Depthwise layers run as tasks of whole blocks of output planes, their ReLU (any
    slope) applied as they are written: the float64 reference's values, whatever the
    threads and the batch."""
    net = random_net(DW_NET, seed=6)
    res = freeze(net.param, weights_of(net), input_shapes={"data": (1, 6, 11, 13)})
    path = str(tmp_path / "dw.frozen")
    res.save(path)
    monkeypatch.setattr(P, "_threads", lambda: threads)
    p = load(path, backend="numba")
    rng = np.random.default_rng(7)
    for batch in (1, 3):
        x = rng.normal(0, 1, (batch, 6, 11, 13)).astype(np.float32)
        out, ref = p.predict(x), forward(net, x)
        for k in ref:
            assert np.abs(ref[k]).max() > 1e-3
            assert rel_diff(out[k], ref[k]) <= 1e-5, (batch, k)
        dw = [r for kind, r in p.runner.steps if isinstance(r, P._DepthwiseRunner)]
        assert [float(r.args[-1]) for r in dw] == [np.float32(0.1), 0.0, 1.0]
        assert all(r.nt == threads for r in dw)
    # the ReLUs are in the depthwise steps, not steps of their own
    names = [p.runner.net.layer_names[i] for kind, i in p.runner.steps if not kind]
    assert not any(n.startswith("relu") for n in names)


def test_run_tasks_runs_each_task_once_on_distinct_slots():
    """Every task exactly once; concurrent tasks never share a slot (their workspaces); the
    caller's slot is 0; an error in a task reaches the caller once the other threads have
    run the tasks left."""
    import threading
    import time
    for ntasks, nt in [(1, 2), (2, 2), (7, 2), (5, 3), (3, 1)]:
        seen, busy, lock = [], set(), threading.Lock()

        def task(t, slot):
            with lock:
                assert slot not in busy and 0 <= slot < nt
                busy.add(slot)
                seen.append((t, slot, threading.get_ident()))
            time.sleep(0.002)
            with lock:
                busy.discard(slot)
        G.run_tasks(task, ntasks, nt)
        assert sorted(t for t, _, _ in seen) == list(range(ntasks))
        me = threading.get_ident()
        assert all(slot == 0 for _, slot, ident in seen if ident == me)
        assert all(slot != 0 for _, slot, ident in seen if ident != me)
    done = []

    def failing(t, slot):
        if t == 1:
            raise ValueError("task 1")
        time.sleep(0.01)
        done.append(t)
    with pytest.raises(ValueError, match="task 1"):
        G.run_tasks(failing, 4, 2)
    assert sorted(done) == [0, 2, 3]


# residual adds: a ReLU after the sum (slope 0, then 0.2), a weighted sum without one, and a
# three-way sum (left to the layer)
RES_NET = """
name: "res"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 4 dim: 9 dim: 7 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "c2" type: "Convolution" bottom: "c1" top: "c2"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "sum1" type: "Eltwise" bottom: "c1" bottom: "c2" top: "sum1" }
layer { name: "relu1" type: "ReLU" bottom: "sum1" top: "sum1" }
layer { name: "c3" type: "Convolution" bottom: "sum1" top: "c3"
        convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "sum2" type: "Eltwise" bottom: "sum1" bottom: "c3" top: "sum2" }
layer { name: "relu2" type: "ReLU" bottom: "sum2" top: "sum2" relu_param { negative_slope: 0.2 } }
layer { name: "sum3" type: "Eltwise" bottom: "sum2" bottom: "c3" top: "sum3"
        eltwise_param { operation: SUM coeff: 0.5 coeff: -1 } }
layer { name: "sum4" type: "Eltwise" bottom: "sum3" bottom: "c1" bottom: "c2" top: "sum4" }
"""


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_residual_sums_and_their_relu_run_as_one_parallel_pass(tmp_path, monkeypatch,
                                                               threads):
    """Two-input Eltwise SUMs run as one pass with the ReLU that follows them in place (the
    ReLU layer is then no step of its own): the float64 reference's values, coefficients and
    negative slopes included; the three-input sum stays the layer's."""
    net = random_net(RES_NET, seed=8)
    res = freeze(net.param, weights_of(net), input_shapes={"data": (2, 4, 9, 7)})
    path = str(tmp_path / "res.frozen")
    res.save(path)
    monkeypatch.setattr(P, "_threads", lambda: threads)
    p = load(path, backend="numba")
    rng = np.random.default_rng(3)
    for batch in (2, 1, 5):
        x = rng.normal(0, 1, (batch, 4, 9, 7)).astype(np.float32)
        out, ref = p.predict(x), forward(net, x)
        for k in ref:
            assert np.abs(ref[k]).max() > 1e-3
            assert rel_diff(out[k], ref[k]) <= 1e-5, (batch, k)
    runners = [r for kind, r in p.runner.steps if isinstance(r, P._EltwiseRunner)]
    assert [(bool(r.args[2]), float(r.args[3]), float(r.args[0]), float(r.args[1]))
            for r in runners] == [(True, 0.0, 1, 1), (True, np.float32(0.2), 1, 1),
                                  (False, 0.0, 0.5, -1)]
    names = [p.runner.net.layer_names[i] for kind, i in p.runner.steps if not kind]
    assert "sum4" in names and not {"relu1", "relu2", "sum1", "sum2", "sum3"} & set(names)
