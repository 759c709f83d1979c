"""netdef.caffe: pycaffe's Net, Blob, solvers and module surface, each behaviour written from
pycaffe's documentation (../shared/PYCAFFE.md) and checked against independent numpy values."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from shared_paths import DATA

import netdef.caffe as caffe
from netdef.errors import ConfigError, NetdefError, ShapeError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET_DEPLOY = os.path.join(REPO, "model_zoo", "lenet", "lenet.prototxt")


def _lenet_weights():
    return os.path.join(DATA, "caffe", "lenet", "lenet_iter_10000.caffemodel")


def _mnist_digits(n):
    import gzip
    with gzip.open(os.path.join(DATA, "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    return x.astype(np.float32) * np.float32(0.00390625)


MLP = """
name: "mlp"
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 2 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "ip1"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "r1" }
layer { name: "ip2" type: "InnerProduct" bottom: "r1" top: "ip2"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip2" bottom: "y" top: "loss" }
"""


@pytest.fixture
def mlp(tmp_path):
    p = tmp_path / "mlp.prototxt"
    p.write_text(MLP)
    return str(p)


def _ref_forward(net, x):
    w1, b1 = [np.float64(b.data) for b in net.params["ip1"]]
    w2, b2 = [np.float64(b.data) for b in net.params["ip2"]]
    h = np.float64(x) @ w1.T + b1
    r = np.maximum(h, 0)
    return h, r, r @ w2.T + b2, (w1, b1, w2, b2)


# -- construction ---------------------------------------------------------------------------
def test_every_constructor_form_loads_lenet_with_its_weights():
    w = _lenet_weights()
    nets = [caffe.Net(LENET_DEPLOY, w, caffe.TEST),
            caffe.Net(LENET_DEPLOY, caffe.TEST, weights=w),
            caffe.Net(LENET_DEPLOY, caffe.TEST, level=0, stages=[], weights=w),
            caffe.Net(LENET_DEPLOY, phase=caffe.TEST, weights=w)]
    plain = caffe.Net(LENET_DEPLOY, caffe.TEST)
    from netdef.io.weights import load_caffemodel
    trained = {lp.name: lp for lp in load_caffemodel(w).layer}
    ref = np.asarray(trained["conv1"].blobs[0].data, np.float32).reshape(20, 1, 5, 5)
    for n in nets:
        assert n.params["conv1"][0].data.shape == (20, 1, 5, 5)
        np.testing.assert_array_equal(n.params["conv1"][0].data, ref)
    assert not np.array_equal(plain.params["conv1"][0].data, ref)
    with pytest.raises(TypeError, match="phase"):
        caffe.Net(LENET_DEPLOY)
    with pytest.raises(TypeError, match="TRAIN or caffe.TEST"):
        caffe.Net(LENET_DEPLOY, 7)
    with pytest.raises(NetdefError):
        caffe.Net(os.path.join(REPO, "no_such.prototxt"), caffe.TEST)


def test_structure_names_follow_pycaffe(mlp):
    net = caffe.Net(mlp, caffe.TRAIN)
    assert net.inputs == ["x", "y"]
    assert net.outputs == ["loss"]
    assert net._layer_names == ["x", "y", "ip1", "relu1", "ip2", "loss"]
    assert list(net.blobs) == net._blob_names == ["x", "y", "ip1", "r1", "ip2", "loss"]
    assert list(net.params) == ["ip1", "ip2"]           # only layers with learnable blobs
    assert [b.shape for b in net.params["ip1"]] == [(4, 3), (4,)]
    assert [b.shape for b in net.params["ip2"]] == [(2, 4), (2,)]
    assert net.top_names["ip1"] == ["ip1"] and net.bottom_names["loss"] == ["ip2", "y"]
    assert net.layer_dict["ip2"].type == "InnerProduct"
    assert [lay.type for lay in net.layers] == ["Input", "Input", "InnerProduct", "ReLU",
                                                "InnerProduct", "EuclideanLoss"]
    assert net.blob_loss_weights == {"x": 0, "y": 0, "ip1": 0, "r1": 0, "ip2": 0, "loss": 1}
    b = net.blobs["x"]
    assert (b.num, b.channels, b.height, b.width, b.count) == (2, 3, 1, 1, 6)
    # params are the layer's own blobs: writing through them writes the net
    net.params["ip1"][1].data[...] = 7
    assert np.all(net.layer_dict["ip1"].blobs[1].data == 7)


# -- forward / backward ------------------------------------------------------------------------
def test_forward_with_inputs_start_end_against_numpy(mlp):
    net = caffe.Net(mlp, caffe.TRAIN)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y = rng.standard_normal((2, 2)).astype(np.float32)
    h, r, o, _ = _ref_forward(net, x)
    out = net.forward(x=x, y=y)
    assert set(out) == {"loss"}
    np.testing.assert_allclose(out["loss"], np.sum((o - y) ** 2) / 4, rtol=1e-5)
    out = net.forward(end="ip1", x=x)
    assert set(out) == {"ip1"}
    np.testing.assert_allclose(out["ip1"], h, rtol=1e-5, atol=1e-6)
    # start: from relu1 on, with ip1 set by hand
    net.blobs["ip1"].data[...] = -1.0
    out = net.forward(start="relu1", end="ip2", blobs=["r1"])
    np.testing.assert_array_equal(out["r1"], 0)
    np.testing.assert_allclose(out["ip2"], np.broadcast_to(net.params["ip2"][1].data, (2, 2)))
    with pytest.raises(ShapeError, match="reshape the blob first"):
        net.forward(x=np.zeros((3, 3), np.float32))
    with pytest.raises(ConfigError, match="no layer named 'nope'"):
        net.forward(end="nope")
    with pytest.raises(ConfigError, match="no blob 'z'"):
        net.forward(z=x)


def test_backward_with_top_diffs_start_end_against_numpy(mlp):
    net = caffe.Net(mlp, caffe.TRAIN)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y = rng.standard_normal((2, 2)).astype(np.float32)
    h, r, o, (w1, b1, w2, b2) = _ref_forward(net, x)
    net.forward(x=x, y=y)
    d = net.backward()
    assert set(d) == {"x", "y"}
    g_o = (o - y) / 2                                       # d loss / d ip2 (loss weight 1)
    g_x = ((g_o @ w2) * (h > 0)) @ w1
    np.testing.assert_allclose(d["x"], g_x, rtol=1e-4, atol=1e-6)
    # backward from ip2 down to ip1 with a hand-set top diff
    net.clear_param_diffs()
    g = rng.standard_normal((2, 2)).astype(np.float32)
    d = net.backward(start="ip2", end="ip1", diffs=["r1"], ip2=g)
    assert set(d) == {"x", "r1"}
    np.testing.assert_allclose(d["r1"], g @ w2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d["x"], ((g @ w2) * (h > 0)) @ w1, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip2"][0].diff, g.T @ r, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip1"][1].diff, ((g @ w2) * (h > 0)).sum(0),
                               rtol=1e-4, atol=1e-6)


def test_callbacks_see_every_layer_in_order(mlp):
    net = caffe.Net(mlp, caffe.TRAIN)
    seen = []
    net.before_forward(lambda i: seen.append(("bf", i)))
    net.after_forward(lambda i: seen.append(("af", i)))
    net.after_backward(lambda i: seen.append(("ab", i)))
    net.forward()
    net.backward()
    n = len(net.layers)
    fwd = [e for i in range(n) for e in (("bf", i), ("af", i))]
    assert seen == fwd + [("ab", i) for i in range(n - 1, -1, -1)]


def test_forward_all_batches_and_trims(mlp):
    net = caffe.Net(mlp, caffe.TEST)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3)).astype(np.float32)      # batch 2: 3 batches, last padded
    y = rng.standard_normal((5, 2)).astype(np.float32)
    out = net.forward_all(blobs=["ip2"], x=x, y=y)
    _, _, o, _ = _ref_forward(net, x)
    assert out["ip2"].shape == (5, 2) and out["loss"].shape == (3,)
    np.testing.assert_allclose(out["ip2"], o, rtol=1e-5, atol=1e-6)
    outs, diffs = net.forward_backward_all(x=x, y=y)
    assert diffs["x"].shape == (5, 3) and outs["loss"].shape == (3,)


# -- reshape (the stale-rows regression) -------------------------------------------------------
def test_blob_reshape_then_forward_equals_a_net_built_at_that_shape():
    """pycaffe's idiom: reshape the input, forward: every layer follows (no stale rows)."""
    from netdef.config import load_net
    from netdef.io.weights import load_weights
    from netdef.net import Net as CoreNet
    w = _lenet_weights()
    net = caffe.Net(LENET_DEPLOY, w, caffe.TEST)
    assert net.blobs["prob"].shape == (64, 10)
    x = _mnist_digits(2)
    net.blobs["data"].reshape(2, 1, 28, 28)
    net.blobs["data"].data[...] = x
    prob = net.forward()["prob"]
    assert net.blobs["conv1"].shape == (2, 20, 24, 24) and prob.shape == (2, 10)
    ref = CoreNet(load_net(LENET_DEPLOY), 1, input_shapes={"data": (2, 1, 28, 28)})
    load_weights(ref, [w])
    ref.blobs["data"].data[...] = x
    ref.forward()
    np.testing.assert_allclose(prob, ref.blobs["prob"].data, rtol=1e-5, atol=1e-7)
    # and back to a bigger batch through net.reshape(), pycaffe's explicit form
    net.blobs["data"].reshape(3, 1, 28, 28)
    net.reshape()
    assert net.blobs["prob"].shape == (3, 10) and net.blobs["ip1"].shape == (3, 500)


def test_net_test_runs_mixed_size_images_at_batch_1(tmp_path):
    """An ImageData layer without resize at batch 1 (Caffe: each batch takes its first image's
    shape) through `netdef test`: each image's global max per channel, averaged."""
    from PIL import Image
    rng = np.random.default_rng(3)
    sizes = [(5, 7), (9, 4), (6, 6)]
    lines, maxes = [], []
    for k, (h, w) in enumerate(sizes):
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / f"im{k}.png")
        lines.append(f"im{k}.png {k}")
        maxes.append(a.reshape(-1, 3).max(0)[::-1].astype(np.float64))   # BGR
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "net.prototxt").write_text(textwrap.dedent(f"""
        layer {{ name: "data" type: "ImageData" top: "data" top: "label"
                image_data_param {{ source: "{tmp_path / 'list.txt'}" root_folder: "{tmp_path}/"
                                    batch_size: 1 }} }}
        layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"
                pooling_param {{ pool: MAX global_pooling: true }} }}
        layer {{ name: "sil" type: "Silence" bottom: "label" }}
    """))
    from click.testing import CliRunner
    from netdef_cli.main import cli
    r = CliRunner().invoke(cli, ["test", "--model", str(tmp_path / "net.prototxt"),
                                 "--iterations", "3", "--json"])
    assert r.exit_code == 0, r.output
    means = json.loads(r.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(means["pool"], np.mean(maxes, axis=0), rtol=1e-6)


def test_predictor_follows_the_batch_size(tmp_path):
    """The frozen predictor rebuilds for each batch shape: batch 3, 1, 3 agree row by row."""
    from netdef.deploy import predictor
    from netdef.deploy.freeze import freeze
    out = tmp_path / "lenet.netdef"
    res = freeze(LENET_DEPLOY, [_lenet_weights()])
    res.save(str(out))
    p = predictor.load(str(out))
    x = _mnist_digits(3)
    a = p.predict(x)["prob"]
    b = p.predict(x[1:2])["prob"]
    c = p.predict(x)["prob"]
    assert a.shape == (3, 10) and b.shape == (1, 10)
    np.testing.assert_allclose(b[0], a[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(a, c)


# -- weights ---------------------------------------------------------------------------------
def test_save_then_load_is_bit_exact(tmp_path, mlp):
    caffe.set_random_seed(5)
    a = caffe.Net(mlp, caffe.TRAIN)
    a.save(str(tmp_path / "w.caffemodel"))
    b = caffe.Net(mlp, str(tmp_path / "w.caffemodel"), caffe.TEST)
    for name in a.params:
        for pa, pb_ in zip(a.params[name], b.params[name]):
            assert pa.data.tobytes() == pb_.data.tobytes()
    c = caffe.Net(mlp, caffe.TRAIN)
    assert not np.array_equal(c.params["ip1"][0].data, a.params["ip1"][0].data)
    pytest.importorskip("h5py")
    a.save_hdf5(str(tmp_path / "w.h5"))
    c.load_hdf5(str(tmp_path / "w.h5"))
    np.testing.assert_array_equal(c.params["ip1"][0].data, a.params["ip1"][0].data)


def test_set_random_seed_makes_fills_repeat(mlp):
    caffe.set_random_seed(11)
    a = caffe.Net(mlp, caffe.TRAIN).params["ip1"][0].data.copy()
    caffe.set_random_seed(11)
    b = caffe.Net(mlp, caffe.TRAIN).params["ip1"][0].data.copy()
    np.testing.assert_array_equal(a, b)


def test_share_with_views_the_other_nets_params(mlp):
    a = caffe.Net(mlp, caffe.TRAIN)
    b = caffe.Net(mlp, caffe.TEST)
    b.share_with(a)
    a.params["ip2"][0].data[...] = 3.5
    np.testing.assert_array_equal(b.params["ip2"][0].data, 3.5)


def test_arrays_outlive_the_net(mlp):
    net = caffe.Net(mlp, caffe.TRAIN)
    net.params["ip1"][0].data[...] = 2.0
    arr = net.params["ip1"][0].data
    out = net.forward(x=np.ones((2, 3), np.float32))["loss"]
    del net
    import gc
    gc.collect()
    assert np.all(arr == 2.0) and np.isfinite(out).all()


# -- solvers ---------------------------------------------------------------------------------
SOLVER = """
net_param {{
  name: "tiny"
  layer {{ name: "data" type: "DummyData" top: "data" top: "label"
          dummy_data_param {{ shape {{ dim: 8 dim: 1 dim: 6 dim: 6 }} shape {{ dim: 8 }}
                             data_filler {{ type: "gaussian" std: 1 }}
                             data_filler {{ type: "constant" value: 1 }} }} }}
  layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
          convolution_param {{ num_output: 3 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
  layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
          inner_product_param {{ num_output: 4 weight_filler {{ type: "xavier" }} }} }}
  layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
}}
type: "{type}"
base_lr: 0.05
momentum: 0.9
lr_policy: "fixed"
display: 0
max_iter: 10
snapshot: 0
random_seed: 7
snapshot_prefix: "{prefix}"
"""


def _solver_file(tmp_path, type_="SGD", name="s"):
    p = tmp_path / f"{name}.prototxt"
    p.write_text(SOLVER.format(type=type_, prefix=tmp_path / name))
    return str(p)


def test_get_solver_step_equals_netdef_train_bit_for_bit(tmp_path):
    from click.testing import CliRunner
    from netdef.io.weights import load_caffemodel
    from netdef_cli.main import cli
    path = _solver_file(tmp_path, "Adam")
    r = CliRunner().invoke(cli, ["train", "--solver", path, "--set", "max_iter=10"])
    assert r.exit_code == 0, r.output
    trained = {lp.name: lp for lp in load_caffemodel(str(tmp_path / "s_iter_10.caffemodel")).layer}
    s = caffe.get_solver(path)
    assert type(s).__name__ == "_Solver" and s.param.type == "Adam"
    s.step(10)
    assert s.iter == 10
    for name, blobs in s.net.params.items():
        for b, bp in zip(blobs, trained[name].blobs):
            assert np.asarray(bp.data, np.float32).tobytes() == b.data.tobytes()
    assert not (tmp_path / "s_iter_5.caffemodel").exists()     # snapshot: 0 -> none in step


def test_named_solver_classes_force_their_type(tmp_path):
    s = caffe.NesterovSolver(_solver_file(tmp_path, "SGD"))
    assert s.param.type == "Nesterov"
    calls = []
    s.add_callback(lambda: calls.append("start"), lambda: calls.append("grads"))
    s.step(2)
    assert calls == ["start", "grads", "start", "grads"]
    a = caffe.SGDSolver(_solver_file(tmp_path, "SGD", "a"))
    b = caffe.SGDSolver(_solver_file(tmp_path, "SGD", "b"))
    a.step(3)
    b.step(1)
    b.snapshot()
    b.step(2)
    c = caffe.SGDSolver(_solver_file(tmp_path, "SGD", "b"))
    c.restore(str(tmp_path / "b_iter_1.solverstate"))
    c.step(2)
    for x, y in zip(a.net.params["ip"], c.net.params["ip"]):
        np.testing.assert_array_equal(x.data, y.data)        # resume is bit-exact
    deploy = caffe.Net(a.net.core.param, caffe.TEST)
    a.share_weights(deploy)
    np.testing.assert_array_equal(deploy.params["ip"][0].data, a.net.params["ip"][0].data)


def _run_py(code, tmp_path, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, cwd=tmp_path, timeout=600, env=e)


def test_gpu_mode_without_a_gpu_says_why(tmp_path):
    r = _run_py("""
        import netdef.caffe as caffe
        from netdef.backend.cuda import device
        if device.available():
            print("skip")
        else:
            try:
                caffe.set_mode_gpu()
            except Exception as e:
                print(type(e).__name__, e)
    """, tmp_path, NUMBA_ENABLE_CUDASIM="0")
    assert r.returncode == 0, r.stderr
    if r.stdout.strip() == "skip":
        pytest.skip("this machine has a usable CUDA GPU")
    assert r.stdout.startswith("NoDeviceError GPU 0: "), r.stdout


@pytest.mark.gpu
def test_gpu_mode_puts_nets_and_solvers_on_the_device(tmp_path, mlp):
    """Under the CUDA simulator: set_mode_gpu() + set_device(0) put the next Net and Solver on
    the device, with the CPU's values."""
    solver = _solver_file(tmp_path, "SGD")
    r = _run_py(f"""
        import numpy as np
        import netdef.caffe as caffe
        caffe.set_random_seed(3)
        cpu = caffe.Net({mlp!r}, caffe.TRAIN)
        caffe.set_mode_gpu()
        caffe.set_device(0)
        caffe.set_random_seed(3)
        gpu = caffe.Net({mlp!r}, caffe.TRAIN)
        x = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
        y = np.ones((2, 2), np.float32)
        a = float(cpu.forward(x=x, y=y)["loss"])
        b = float(gpu.forward(x=x, y=y)["loss"])
        s = caffe.SGDSolver({solver!r})
        s.step(1)
        # a new batch size reaches every layer of the device net too (no stale rows)
        for n in (cpu, gpu):
            n.blobs["x"].reshape(3, 3)
            n.blobs["y"].reshape(3, 2)
        x3 = np.linspace(-2, 1, 9, dtype=np.float32).reshape(3, 3)
        y3 = np.zeros((3, 2), np.float32)
        c = cpu.forward(x=x3, y=y3, blobs=["ip2"])["ip2"].copy()
        g = gpu.forward(x=x3, y=y3, blobs=["ip2"])["ip2"]
        dg = gpu.backward(ip2=np.ones((3, 2), np.float32))["x"]
        cpu.backward(ip2=np.ones((3, 2), np.float32))
        dc = cpu.blobs["x"].diff
        print(gpu.core.device is not None, cpu.core.device is None, abs(a - b) <= 1e-5 * abs(a),
              s.core.device is not None, s.iter, g.shape == (3, 2),
              float(np.abs(g - c).max()) <= 1e-5, float(np.abs(dg - dc).max()) <= 1e-5)
    """, tmp_path, NUMBA_ENABLE_CUDASIM="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "True", "1", "True", "True", "True"]


# -- module surface --------------------------------------------------------------------------
def test_module_names_and_helpers():
    for name in ("Net", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
                 "AdaDeltaSolver", "AdamSolver", "get_solver", "TRAIN", "TEST", "set_mode_cpu",
                 "set_mode_gpu", "set_device", "set_random_seed", "layer_type_list", "Layer",
                 "NetSpec", "layers", "params", "to_proto", "init_log", "log", "Timer",
                 "solver_count", "set_solver_count", "solver_rank", "set_solver_rank",
                 "set_multiprocess", "has_nccl", "__version__"):
        assert hasattr(caffe, name), name
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)
    assert "Convolution" in caffe.layer_type_list() and "Python" in caffe.layer_type_list()
    from netdef.layers.python_layer import PyLayerBase
    assert caffe.Layer is PyLayerBase
    caffe.set_solver_count(3)
    caffe.set_solver_rank(2)
    assert (caffe.solver_count(), caffe.solver_rank(), caffe.has_nccl()) == (3, 2, False)
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)
    t = caffe.Timer()
    t.start()
    sum(range(10000))
    t.stop()
    assert t.ms > 0 and t.ms == t.ms
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        caffe.nonesuch  # noqa: B018


def test_netspec_to_proto_round_trips(tmp_path):
    from google.protobuf import text_format
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[2, 1, 8, 8]), dict(dim=[2])], ntop=2)
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3,
                           weight_filler=dict(type="xavier"))
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.loss = L.SoftmaxWithLoss(L.InnerProduct(n.pool, num_output=3), n.label)
    proto = n.to_proto()
    back = caffe.proto.caffe_pb2.NetParameter()
    text_format.Merge(str(proto), back)
    assert back == proto
    p = tmp_path / "n.prototxt"
    p.write_text(str(proto))
    net = caffe.Net(str(p), caffe.TRAIN)
    assert net.blobs["pool"].shape == (2, 4, 3, 3)
    assert [lay.type for lay in net.layers][-1] == "SoftmaxWithLoss"


def test_python_layer_with_param_str_through_caffe_net(tmp_path):
    (tmp_path / "ndpc_scale.py").write_text(textwrap.dedent("""
        import caffe
        class Scale(caffe.Layer):
            def setup(self, bottom, top):
                self.k = float(self.param_str)
            def reshape(self, bottom, top):
                top[0].reshape(*bottom[0].data.shape)
            def forward(self, bottom, top):
                top[0].data[...] = self.k * bottom[0].data
            def backward(self, top, propagate_down, bottom):
                bottom[0].diff[...] = self.k * top[0].diff
    """))
    (tmp_path / "net.prototxt").write_text("""
        force_backward: true
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "s" type: "Python" bottom: "x" top: "y"
                python_param { module: "ndpc_scale" layer: "Scale" param_str: "2.5" } }
    """)
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(net.forward(x=x)["y"], 2.5 * x)
    d = net.backward(y=np.ones((2, 3), np.float32))
    np.testing.assert_allclose(d["x"], 2.5)


def test_install_and_python_m_run_unchanged_pycaffe_code(tmp_path):
    script = tmp_path / "classify.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        import caffe
        from caffe.proto import caffe_pb2
        from caffe import layers as L
        import caffe.net_spec
        from google.protobuf import text_format
        caffe.set_mode_cpu()
        p = caffe_pb2.NetParameter()
        text_format.Merge(open({LENET_DEPLOY!r}).read(), p)
        net = caffe.Net({LENET_DEPLOY!r}, {_lenet_weights()!r}, caffe.TEST)
        print(len(p.layer), net.blobs['prob'].data.shape, sys.argv[1:], caffe.net_spec.__name__)
    """))
    r = subprocess.run([sys.executable, "-m", "netdef.caffe", str(script), "a", "b"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "9 (64, 10) ['a', 'b'] netdef.caffe.net_spec"


def test_import_compiles_nothing_and_stays_light():
    code = textwrap.dedent("""
        import sys, time
        t = time.perf_counter()
        import netdef.caffe as caffe
        dt = time.perf_counter() - t
        heavy = [m for m in sys.modules if m.split('.')[0] in ('h5py', 'lmdb', 'pydot')
                 or m.startswith('numba.cuda')]
        from numba.core.registry import CPUDispatcher
        import gc
        compiled = [d.py_func.__qualname__ for d in gc.get_objects()
                    if isinstance(d, CPUDispatcher) and d.signatures]
        print(heavy, compiled, round(dt, 3))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("[] [] "), r.stdout


def test_net_surgery_fully_convolutional_lenet(tmp_path):
    """docs/PYCAFFE.md's net surgery, on LeNet: ip1/ip2 become convolutions by transplanting
    their params (same memory order); at 28x28 the scores equal the original net's, and a
    36x36 input gives a 3x3 map whose cells equal the classifier on the 28x28 crops at stride 4."""
    text = open(LENET_DEPLOY).read()
    full = (text.replace('name: "ip1"\n  type: "InnerProduct"', 'name: "ip1-conv"\n  type: '
                         '"Convolution"')
                .replace('name: "ip2"\n  type: "InnerProduct"', 'name: "ip2-conv"\n  type: '
                         '"Convolution"')
                .replace("num_output: 500\n", "num_output: 500\n    kernel_size: 4\n")
                .replace("num_output: 10\n", "num_output: 10\n    kernel_size: 1\n")
                .replace("inner_product_param", "convolution_param"))
    (tmp_path / "full.prototxt").write_text(full)
    net = caffe.Net(LENET_DEPLOY, _lenet_weights(), caffe.TEST)
    conv = caffe.Net(str(tmp_path / "full.prototxt"), _lenet_weights(), caffe.TEST)
    assert list(conv.params) == ["conv1", "conv2", "ip1-conv", "ip2-conv"]
    for fc, cv in (("ip1", "ip1-conv"), ("ip2", "ip2-conv")):
        assert conv.params[cv][0].data.shape == ((500, 50, 4, 4) if fc == "ip1" else
                                                 (10, 500, 1, 1))
        conv.params[cv][0].data.flat = net.params[fc][0].data.flat
        conv.params[cv][1].data[...] = net.params[fc][1].data
    x = _mnist_digits(2)
    net.blobs["data"].reshape(*x.shape)
    a = net.forward(data=x)["prob"]
    conv.blobs["data"].reshape(*x.shape)
    b = conv.forward(data=x)["prob"]
    assert b.shape == (2, 10, 1, 1)
    np.testing.assert_allclose(b[:, :, 0, 0], a, rtol=1e-4, atol=1e-6)
    big = np.zeros((1, 1, 36, 36), np.float32)
    big[0, 0, 4:32, 6:34] = x[0, 0]
    conv.blobs["data"].reshape(1, 1, 36, 36)
    m = conv.forward(data=big)["prob"]
    assert m.shape == (1, 10, 3, 3)
    net.blobs["data"].reshape(1, 1, 28, 28)
    for i, j in ((0, 0), (1, 2)):             # the map's stride is 4 (two 2x2 poolings)
        ref = net.forward(data=big[:, :, 4 * i:4 * i + 28, 4 * j:4 * j + 28])["prob"]
        np.testing.assert_allclose(m[0, :, i, j], ref[0], rtol=1e-4, atol=1e-6)


def test_coord_map_and_crop_on_a_small_fcn(tmp_path):
    """conv (k3 p3) -> pool (k2 s2) -> conv (k3) -> deconv (k4 s2): by hand, up = data + 1,
    so data = up - 1 and crop(up, data) cuts from offset 1; the net builds at data's size."""
    from netdef.caffe import coord_map
    L = caffe.layers
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 20, 20]))
    n.conv1 = L.Convolution(n.data, num_output=4, kernel_size=3, pad=3)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=4, kernel_size=3)
    n.up = L.Deconvolution(n.conv2, convolution_param=dict(num_output=4, kernel_size=4,
                                                           stride=2))
    assert coord_map.coord_map_from_to(n.up, n.data) == (2, 1.0, -1.0)
    assert coord_map.coord_map_from_to(n.data, n.pool1) == (2, 0.5, 0.75)
    assert coord_map.coord_map_from_to(n.pool1, n.data) == (2, 2.0, -1.5)
    n.score = coord_map.crop(n.up, n.data)
    proto = n.to_proto()
    assert list(proto.layer[-1].crop_param.offset) == [1]
    p = tmp_path / "fcn.prototxt"
    p.write_text(str(proto))
    net = caffe.Net(str(p), caffe.TEST)
    assert net.blobs["up"].shape == (1, 4, 22, 22) and net.blobs["score"].shape == (1, 4, 20, 20)
    with pytest.raises(ConfigError, match="would start at -1"):
        coord_map.crop(n.data, n.up)
    with pytest.raises(ConfigError, match="scales differ"):
        coord_map.crop(n.pool1, n.data)
    m = caffe.NetSpec()
    m.a = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    m.b = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    with pytest.raises(ConfigError, match="share no ancestor"):
        coord_map.coord_map_from_to(m.a, m.b)
    m.ip = L.InnerProduct(m.a, num_output=2)
    with pytest.raises(ConfigError, match="no spatial coordinate map"):
        coord_map.coord_map_from_to(m.ip, m.a)
