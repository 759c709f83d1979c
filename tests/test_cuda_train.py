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


def make_solver(net_text, extra, dtype=np.float32):
    from netdef.proto import pb
    from netdef.solvers.solver import Solver
    text = f"net_param {{ {net_text} }}\nbase_lr: 0.1\nlr_policy: \"fixed\"\nmax_iter: 10\n" \
           f"display: 0\nsnapshot: 0\nrandom_seed: 7\nsnapshot_prefix: \"/nonexistent/x\"\n" \
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
    from netdef.backend.cuda import memory
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
    stats = dict(memory.STATS)
    cpu.step(2)
    gpu.step(2)
    assert param_copies() == before, "a training step copied parameters"
    # per step: the input batch (data + label) up, the loss down
    assert memory.STATS["h2d"] - stats["h2d"] == 2 * 2
    assert memory.STATS["d2h"] - stats["d2h"] == 2 * 1
    for a, b in zip(weights(cpu), weights(gpu)):
        assert rel_diff(a, b) < 1e-5
    assert abs(cpu.losses[-1] - gpu.losses[-1]) < 1e-5 * max(1.0, abs(cpu.losses[-1]))


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
