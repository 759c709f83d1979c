"""Training on the (simulated) GPU: solver updates of all six types vs the CPU, and a 3-iteration
LeNet-like step matching the CPU within 1e-5 with no host<->device copy of any parameter after
the first iteration.  NUMBA_ENABLE_CUDASIM=1 is set at import (see test_cuda_layers.py)."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from netdef.config import parse_text  # noqa: E402
from netdef.config.loader import Definition  # noqa: E402
from netdef.backend.cuda.parity import rel_diff  # noqa: E402

pytestmark = pytest.mark.gpu

TINY = """
layer { name: "data" type: "DummyData" top: "x" top: "label"
        dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "uniform" min: 0 max: 2.99 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss" }
"""

LENET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 2 dim: 1 dim: 10 dim: 10 } shape { dim: 2 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "uniform" min: 0 max: 2.99 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" }
                            bias_filler { type: "constant" value: 0.1 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 4 kernel_size: 2 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param { num_output: 6 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def make_solver(net_text, extra, dtype=np.float32, display=0):
    from netdef.proto import pb
    from netdef.solvers.solver import Solver
    text = f"net_param {{ {net_text} }}\nbase_lr: 0.1\nlr_policy: \"fixed\"\nmax_iter: 10\n" \
           f"display: {display}\nsnapshot: 0\nrandom_seed: 7\nsnapshot_prefix: \"/nonexistent/x\"\n" \
           + extra
    msg = pb.SolverParameter()
    smap = parse_text(text, msg, file="s.prototxt")
    return Solver(Definition(msg, None, smap, "prototxt"), dtype=dtype)


def weights(solver):
    return [np.array(pi.blob.cpu_data() if hasattr(pi.blob, "cpu_data") else pi.blob.data)
            for pi in solver.params]


RULES = {
    "SGD": 'type: "SGD" momentum: 0.9 weight_decay: 0.01',
    "SGD_L1_clip_itersize": 'type: "SGD" momentum: 0.5 weight_decay: 0.02 '
                            'regularization_type: "L1" clip_gradients: 0.5 iter_size: 2',
    "Nesterov": 'type: "Nesterov" momentum: 0.9',
    "AdaGrad": 'type: "AdaGrad" delta: 1e-6 weight_decay: 0.001',
    "RMSProp": 'type: "RMSProp" rms_decay: 0.9 delta: 1e-6',
    "AdaDelta": 'type: "AdaDelta" momentum: 0.95 delta: 1e-6 base_lr: 1.0',
    "Adam": 'type: "Adam" momentum: 0.9 momentum2: 0.999 delta: 1e-8 base_lr: 0.01',
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_solver_updates_match_cpu(rule):
    extra = RULES[rule].replace("base_lr: 1.0", "").replace("base_lr: 0.01", "")
    cpu = make_solver(TINY, extra)
    gpu = make_solver(TINY, extra)
    gpu.use_device(0)
    cpu.step(2)
    gpu.step(2)
    for a, b in zip(weights(cpu), weights(gpu)):
        assert rel_diff(a, b) < 1e-5
    gpu.device.sync_history()
    for a, b in zip(cpu.history, gpu.history):
        assert rel_diff(a, b) < 1e-5


def test_lenet_like_trains_on_gpu_like_cpu_without_parameter_copies():
    from netdef.backend.cuda import counters
    cpu = make_solver(LENET, 'type: "SGD" momentum: 0.9 weight_decay: 0.0005')
    gpu = make_solver(LENET, 'type: "SGD" momentum: 0.9 weight_decay: 0.0005')
    gpu.use_device(0)
    assert gpu.net.device.cpu_layers == ["data"]
    cpu.step(1)
    gpu.step(1)

    def param_copies():
        return sum(m.h2d + m.d2h for pi in gpu.params
                   for m in (pi.blob.data_mem, pi.blob.diff_mem))

    before = param_copies()
    stats = dict(counters.STATS)
    cpu.step(2)
    gpu.step(2)
    assert param_copies() == before, "a training step copied parameters"
    # per step: the input batch (data + label) up, nothing down (the loss stays there)
    assert counters.STATS["h2d"] - stats["h2d"] == 2 * 2
    assert counters.STATS["d2h"] - stats["d2h"] == 0
    for a, b in zip(weights(cpu), weights(gpu)):
        assert rel_diff(a, b) < 1e-5
    gl = gpu.device.loss_window.losses(1)
    assert len(gl) == 1 and abs(cpu.losses[-1] - gl[-1]) < 1e-5 * max(1.0, abs(gl[-1]))


def test_smoothed_loss_printed_from_the_device_window_equals_the_cpu(caplog):
    """average_loss 3, iter_size 2, display every 2 iterations, 7 iterations: the device keeps
    each iteration's loss in its window (no read in between) and prints the same smoothed
    loss as the CPU, given the same per-iteration losses (the CPU solver is fed the device's
    forward losses, so the comparison is of the window's bookkeeping, to the last digit)."""
    import logging
    extra = 'type: "SGD" momentum: 0.9 average_loss: 3 iter_size: 2'
    gpu = make_solver(TINY, extra, display=2)
    gpu.use_device(0)
    assert gpu.device.loss_window is not None
    seen = []                          # each forward's loss, read only here, for the reference
    net = gpu.net
    orig = net.device.forward

    def forward(start=0, end=None):
        la = net.device.loss_acc
        out = orig(start, end)
        if la is not None:
            seen.append(float(la[0].copy_to_host()[la[1]]))
        return out
    net.device.forward = forward
    with caplog.at_level(logging.INFO, logger="netdef.solver"):
        gpu.step(7)
    printed = [r.getMessage().split("loss = ")[1] for r in caplog.records
               if "iter/s" in r.getMessage()]
    from collections import deque
    window, expect = deque(maxlen=3), []
    for it in range(7):
        window.append(seen[2 * it + 1] / 2)  # the slot after both forwards of iteration it
        if it % 2 == 0:
            expect.append(f"{float(np.mean(window)):.6g}")
    assert printed == expect and len(printed) == 4


RESHAPE_NET = """
layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ dim: {n} dim: 1 dim: 2 dim: 3 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param {{ num_output: 4 weight_filler {{ type: "gaussian" std: 0.5 }}
                              bias_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "prob" type: "Softmax" bottom: "ip" top: "prob" }}
"""


def test_device_net_follows_a_new_batch_size_like_a_net_built_at_it():
    """Caffe reshapes the whole net on every forward (issue 16 item 3): after
    ``net.blobs['data'].reshape(...)`` a device net's next forward reshapes every layer
    downstream, reallocates their device mirrors at the new size (no stale rows) and gives the
    values of a net built at that shape; batch 3, then 1, then 5."""
    from netdef.config import net_from_text
    from netdef.layers import TEST
    from netdef.net import Net

    def build(n):
        return Net(net_from_text(RESHAPE_NET.format(n=n), file="t.prototxt"), TEST, seed=1)

    rng = np.random.default_rng(0)
    net = build(3)
    net.to_device(0)
    assert net.device.cpu_layers == ["data"]
    net.blobs["data"].data[...] = rng.standard_normal((3, 1, 2, 3)).astype(np.float32)
    net.forward()
    assert net.blobs["prob"].data.shape == (3, 4)
    for n in (1, 5):
        x = rng.standard_normal((n, 1, 2, 3)).astype(np.float32)
        net.blobs["data"].reshape((n, 1, 2, 3))
        net.blobs["data"].data[...] = x
        net.forward()
        ref = build(n)                      # built at the new shape, same weights, CPU
        for pb, pr in zip(net.layers[1].blobs, ref.layers[1].blobs):
            pr.data[...] = pb.data
        ref.blobs["data"].data[...] = x
        ref.forward()
        for name in ("data", "ip", "prob"):
            b = net.blobs[name]
            assert b.shape == ref.blobs[name].shape, (n, name)
            assert b.gpu_data().size == b.count, (n, name)      # the mirror was reallocated
            np.testing.assert_allclose(b.data, ref.blobs[name].data, rtol=1e-5, atol=1e-6,
                                       err_msg=f"batch {n}: {name}")


EUCLID = """
layer { name: "data" type: "DummyData" top: "x" top: "t"
        dummy_data_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "gaussian" std: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss"
        loss_weight: 0.5 }
"""


def test_a_loss_without_its_own_accumulation_is_added_on_the_device_too():
    """EuclideanLoss (weight 0.5) goes through the generic device accumulator: no loss read
    per iteration, and the window holds the CPU's losses."""
    from netdef.backend.cuda import counters
    cpu = make_solver(EUCLID, 'type: "SGD" average_loss: 2')
    gpu = make_solver(EUCLID, 'type: "SGD" average_loss: 2')
    gpu.use_device(0)
    cpu.step(1)
    gpu.step(1)
    d2h = counters.STATS["d2h"]
    cpu.step(2)
    gpu.step(2)
    assert counters.STATS["d2h"] == d2h
    got = gpu.device.loss_window.losses(1)
    np.testing.assert_allclose(got, list(cpu.losses), rtol=1e-5)


FUSE = """
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 2 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 1 }
                            bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 1 } } }
layer { name: "leaky" type: "ReLU" bottom: "ip" top: "ip" relu_param { negative_slope: 0.1 } }
layer { name: "out" type: "InnerProduct" bottom: "ip" top: "out"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
"""


def test_relu_in_the_gemm_epilogue_changes_no_visible_value(monkeypatch):
    """Convolution + ReLU and InnerProduct + leaky ReLU (in place) fused on the device: the
    blobs after a whole forward and the gradients after backward are those of the unfused
    net (NETDEF_CUDA_FUSE=0) bit for bit; a partial forward up to the convolution sees its
    pre-ReLU output, as a hook between the two layers does."""
    from netdef.config import net_from_text
    from netdef.layers import TRAIN
    from netdef.net import Net
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    dout = rng.standard_normal((2, 2)).astype(np.float32)

    def run(fuse):
        monkeypatch.setenv("NETDEF_CUDA_FUSE", "1" if fuse else "0")
        net = Net(net_from_text(FUSE, file="f.prototxt"), TRAIN, seed=4)
        net.to_device(0)
        assert sorted(net.device.fusions) == ([1, 3] if fuse else [])
        net.blobs["data"].data[...] = x
        net.forward()
        net.blobs["out"].diff[...] = dout
        net.backward(seed=False)
        vals = {n: np.array(net.blobs[n].data) for n in ("conv", "ip", "out")}
        vals.update({f"d{n}": np.array(net.blobs[n].diff) for n in ("conv", "ip")})
        vals.update({f"w{i}": np.array(p.blob.diff) for i, p in enumerate(net.params)})
        net.forward(end=1)                   # the convolution alone: pre-ReLU values
        pre = np.array(net.blobs["conv"].data)
        return vals, pre

    fused, pre_f = run(True)
    plain, pre_p = run(False)
    assert (plain["conv"] == 0).any() and (plain["ip"] < 0).any()   # both ReLUs did work
    for k in plain:
        np.testing.assert_array_equal(fused[k], plain[k], err_msg=k)
    np.testing.assert_array_equal(pre_f, pre_p)
    assert (pre_f < 0).any()


def test_host_writes_to_parameters_between_steps_reach_the_flat_update():
    """A weight set and a gradient scaled on the host between backward and the update (pycaffe
    surgery; the MPI average writes the host gradient the same way) are what the device's
    one-launch update reads, as on the CPU."""
    cpu = make_solver(TINY, 'type: "SGD" momentum: 0.9 weight_decay: 0.01')
    gpu = make_solver(TINY, 'type: "SGD" momentum: 0.9 weight_decay: 0.01')
    gpu.use_device(0)
    for s in (cpu, gpu):
        s.step(1)
        s.params[0].blob.data[0, :] = 0.25
        s.net.clear_param_diffs()
        s.net.forward_backward()
        s.params[1].blob.diff[...] *= 3.0
        s.apply_update()
    for a, b in zip(weights(cpu), weights(gpu)):
        assert rel_diff(a, b) < 1e-5
    assert not np.allclose(weights(gpu)[0][0], 0.25)      # the update moved the set row


def test_float64_solver_updates_on_the_device_match_the_cpu():
    """A float64 solver's one-launch update (Adam: both history buffers, the bias
    correction) equals the CPU's to float64 precision."""
    extra = 'type: "Adam" momentum: 0.9 momentum2: 0.999 delta: 1e-8 weight_decay: 0.001'
    cpu = make_solver(TINY, extra, dtype=np.float64)
    gpu = make_solver(TINY, extra, dtype=np.float64)
    gpu.use_device(0)
    cpu.step(2)
    gpu.step(2)
    for a, b in zip(weights(cpu), weights(gpu)):
        assert a.dtype == b.dtype == np.float64
        assert rel_diff(a, b) < 1e-12
