"""CUDA kernels vs the CPU layers, forward and backward, float32 and float64.

Runs on a real GPU, or in numba's CUDA simulator when no GPU is used: the module sets
NUMBA_ENABLE_CUDASIM=1 at import (collection time, so before any test of the worker imports
numba.cuda; netdef.backend.cuda.device syncs numba's config from the environment when it first
imports numba.cuda).  Set NUMBA_ENABLE_CUDASIM=0 to run on a real GPU (scripts/gpu_check.sh).
Shapes are tiny: the simulator runs each CUDA thread in Python."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from netdef.config import net_from_text  # noqa: E402
from netdef.layers import TEST, TRAIN  # noqa: E402
from netdef.net import Net  # noqa: E402

pytestmark = pytest.mark.gpu

TOL = {np.float32: 1e-5, np.float64: 1e-10}


def _shape_text(shape):
    return "shape { " + " ".join(f"dim: {d}" for d in shape) + " }"


def layer_parity(layer, shapes, phase=TRAIN, dtype=np.float32, tops=("y",), cpu_ok=()):
    """Net: Input tops x0.. (``shapes``), the layer under test, an EuclideanLoss per top
    against a random target; compare every blob on CPU and GPU."""
    from netdef.backend.cuda.parity import run_parity
    names = [f"x{i}" for i in range(len(shapes))]
    inp = ('layer { name: "in" type: "Input" ' + " ".join(f'top: "{n}"' for n in names) +
           " input_param { " + " ".join(_shape_text(s) for s in shapes) + " } }\n")
    base = "force_backward: true\n" + inp + layer
    probe = Net(net_from_text(base, file="t.prototxt"), phase, dtype=dtype, seed=1)
    text = base
    for t in tops:
        shp = probe.blobs[t].shape
        text += (f'layer {{ name: "in_{t}" type: "Input" top: "t_{t}" input_param {{ '
                 f'{_shape_text(shp)} }} }}\n'
                 f'layer {{ name: "loss_{t}" type: "EuclideanLoss" bottom: "{t}" '
                 f'bottom: "t_{t}" top: "l_{t}" }}\n')
    make = lambda: Net(net_from_text(text, file="t.prototxt"), phase, dtype=dtype, seed=1)  # noqa
    res = run_parity(make, 0, seed=2)
    gpu = make()
    gpu.to_device(0)
    on_cpu = [n for n in gpu.device.cpu_layers if not n.startswith(("in", "loss_"))]
    assert on_cpu == list(cpu_ok), f"layers without a CUDA path: {on_cpu}"
    bad = [(n, v) for n, v in res if not v <= TOL[dtype]]
    assert not bad, bad
    return res


DT = [np.float32, np.float64]

CASES = {
    "conv": ('layer { name: "l" type: "Convolution" bottom: "x0" top: "y" convolution_param '
             '{ num_output: 3 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "gaussian" '
             'std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }', [(2, 2, 5, 5)]),
    "conv_group_dilated": (
        'layer { name: "l" type: "Convolution" bottom: "x0" top: "y" convolution_param '
        '{ num_output: 4 kernel_size: 2 group: 2 dilation: 2 weight_filler { type: "gaussian" '
        'std: 0.5 } } }', [(1, 4, 5, 4)]),
    "conv_pointwise": (
        'layer { name: "l" type: "Convolution" bottom: "x0" top: "y" convolution_param '
        '{ num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 } '
        'bias_filler { type: "gaussian" std: 0.5 } } }', [(2, 2, 3, 3)]),
    "conv_depthwise": (
        'layer { name: "l" type: "Convolution" bottom: "x0" top: "y" convolution_param '
        '{ num_output: 4 kernel_size: 2 pad: 1 group: 2 weight_filler { type: "gaussian" '
        'std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }', [(2, 2, 3, 3)]),
    "pool_max": ('layer { name: "l" type: "Pooling" bottom: "x0" top: "y" pooling_param '
                 '{ pool: MAX kernel_size: 3 stride: 2 pad: 1 } }', [(2, 2, 5, 5)]),
    "pool_ave": ('layer { name: "l" type: "Pooling" bottom: "x0" top: "y" pooling_param '
                 '{ pool: AVE kernel_size: 3 stride: 2 pad: 1 } }', [(2, 2, 5, 5)]),
    "ip": ('layer { name: "l" type: "InnerProduct" bottom: "x0" top: "y" inner_product_param '
           '{ num_output: 5 weight_filler { type: "gaussian" std: 0.5 } bias_filler '
           '{ type: "gaussian" std: 0.5 } } }', [(3, 2, 2, 2)]),
    "ip_transpose": ('layer { name: "l" type: "InnerProduct" bottom: "x0" top: "y" '
                     'inner_product_param { num_output: 4 transpose: true weight_filler '
                     '{ type: "gaussian" std: 0.5 } } }', [(3, 7)]),
    "relu_leaky": ('layer { name: "l" type: "ReLU" bottom: "x0" top: "y" relu_param '
                   '{ negative_slope: 0.1 } }', [(4, 9)]),
    "neurons_in_place": (
        'layer { name: "c" type: "Power" bottom: "x0" top: "y" }\n'
        'layer { name: "l1" type: "ReLU" bottom: "y" top: "y" }\n'
        'layer { name: "l2" type: "Sigmoid" bottom: "y" top: "y" }\n'
        'layer { name: "l3" type: "TanH" bottom: "y" top: "y" }', [(3, 8)]),
    "neurons": (
        'layer { name: "a" type: "AbsVal" bottom: "x0" top: "a" }\n'
        'layer { name: "e" type: "ELU" bottom: "a" top: "e" elu_param { alpha: 0.7 } }\n'
        'layer { name: "b" type: "BNLL" bottom: "x0" top: "b" }\n'
        'layer { name: "c" type: "Clip" bottom: "x0" top: "c" clip_param { min: -0.5 max: 0.5 } }\n'
        'layer { name: "s" type: "Eltwise" bottom: "e" bottom: "b" bottom: "c" top: "y" }',
        [(3, 8)]),
    "dropout": ('layer { name: "l" type: "Dropout" bottom: "x0" top: "y" dropout_param '
                '{ dropout_ratio: 0.3 } }', [(4, 10)]),
    "softmax": ('layer { name: "l" type: "Softmax" bottom: "x0" top: "y" }', [(2, 4, 3)]),
    "concat_slice": (
        'layer { name: "c" type: "Concat" bottom: "x0" bottom: "x1" top: "cat" }\n'
        'layer { name: "l" type: "Slice" bottom: "cat" top: "y" top: "z" slice_param '
        '{ slice_point: 1 } }', [(2, 2, 3), (2, 3, 3)]),
    "eltwise_prod_max": (
        'layer { name: "p" type: "Eltwise" bottom: "x0" bottom: "x1" top: "p" eltwise_param '
        '{ operation: PROD } }\n'
        'layer { name: "l" type: "Eltwise" bottom: "p" bottom: "x1" bottom: "x0" top: "y" '
        'eltwise_param { operation: MAX } }', [(2, 9), (2, 9)]),
    "eltwise_sum_coeff_flatten": (
        'layer { name: "s" type: "Eltwise" bottom: "x0" bottom: "x1" top: "s" eltwise_param '
        '{ operation: SUM coeff: 0.5 coeff: -2 } }\n'
        'layer { name: "l" type: "Flatten" bottom: "s" top: "y" }', [(2, 3, 2), (2, 3, 2)]),
    "lrn": ('layer { name: "l" type: "LRN" bottom: "x0" top: "y" lrn_param '
            '{ local_size: 3 alpha: 0.5 beta: 0.75 } }', [(2, 5, 2, 2)]),
    "batchnorm": ('layer { name: "l" type: "BatchNorm" bottom: "x0" top: "y" }',
                  [(3, 2, 2, 2)]),
}

CPU_OK: dict = {}     # every layer type of these cases has a CUDA path


@pytest.mark.parametrize("dtype", DT, ids=["f32", "f64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_cpu(case, dtype):
    text, shapes = CASES[case]
    tops = ("y", "z") if case == "concat_slice" else ("y",)
    layer_parity(text, shapes, dtype=dtype, tops=tops, cpu_ok=CPU_OK.get(case, ()))


def test_batchnorm_global_stats_test_phase():
    layer_parity('layer { name: "l" type: "BatchNorm" bottom: "x0" top: "y" batch_norm_param '
                 '{ use_global_stats: true } }', [(2, 3, 2)], phase=TEST, dtype=np.float64)


@pytest.mark.parametrize("dtype", DT, ids=["f32", "f64"])
def test_softmax_loss_and_accuracy(dtype):
    from netdef.backend.cuda.parity import run_parity
    text = """force_backward: true
layer { name: "in" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 3 dim: 4 dim: 2 } shape { dim: 3 dim: 2 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "label" top: "loss"
        top: "prob" loss_weight: 2 loss_weight: 0 loss_param { ignore_label: 1 } }
layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "label" top: "acc"
        accuracy_param { top_k: 2 } }
"""
    make = lambda: Net(net_from_text(text, file="t.prototxt"), TRAIN, dtype=dtype, seed=1)  # noqa
    res = run_parity(make, 0, seed=5)
    bad = [(n, v) for n, v in res if not v <= TOL[dtype]]
    assert not bad, bad
    assert make().to_device(0).cpu_layers == ["in"]


def test_has_cuda_is_set_from_the_table():
    from netdef.backend.cuda.layers import TABLE, register_has_cuda
    from netdef.layers.registry import get_layer_class
    register_has_cuda()
    for t in ("Convolution", "Pooling", "InnerProduct", "ReLU", "SoftmaxWithLoss", "BatchNorm"):
        assert t in TABLE and get_layer_class(t).has_cuda
    assert not get_layer_class("Python").has_cuda


def test_the_static_list_of_cuda_types_matches_the_table():
    """`netdef layers` reports CUDA support from a list that needs no numba.cuda import."""
    from netdef.backend.cuda import CUDA_LAYER_TYPES
    from netdef.backend.cuda.layers import TABLE
    assert set(TABLE) == set(CUDA_LAYER_TYPES)
