"""CUDA kernels vs the CPU layers, forward and backward, float32 (1e-5) and float64 (1e-10)
relative to each blob's largest magnitude: one parity table over the layer catalogue
(convolutions, pooling, InnerProduct, neurons, Dropout, Softmax, Concat/Slice, Eltwise, LRN,
BatchNorm, parametric neurons, Scale/Bias, Deconvolution, Im2col, MVN, Embed, Reduction,
ArgMax, Crop, Tile...), then the cases that need more than a table row (STOCHASTIC pooling,
the losses, SPP, LSTMUnit/RNN/LSTM, the per-layer backward hook of MPI in device mode), and
the dispatch table against each layer class's ``has_cuda``.

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
DT = [np.float32, np.float64]
DT_IDS = ["f32", "f64"]


def _shape_text(shape):
    return "shape { " + " ".join(f"dim: {d}" for d in shape) + " }"


def parity(layer, shapes, phase=TRAIN, dtype=np.float32, tops=("y",), values=None,
           cpu_ok=(), seed=2):
    """Net: Input tops x0.. (``shapes``; random normal values unless ``values`` names them),
    the layers under test, an EuclideanLoss per top in ``tops`` against a random target.
    Runs one forward/backward on the CPU and on the device and compares every blob's data and
    diff and every parameter; checks that only ``cpu_ok`` layers ran on the CPU."""
    from netdef.backend.cuda.parity import compare, copy_params
    names = [f"x{i}" for i in range(len(shapes))]
    inp = ('layer { name: "in" type: "Input" ' + " ".join(f'top: "{n}"' for n in names) +
           " input_param { " + " ".join(_shape_text(s) for s in shapes) + " } }\n")
    text = "force_backward: true\n" + inp + layer
    if tops:
        probe = Net(net_from_text(text, file="t.prototxt"), phase, dtype=dtype, seed=1)
        for t in tops:
            shp = probe.blobs[t].shape
            text += (f'layer {{ name: "in_{t}" type: "Input" top: "t_{t}" input_param {{ '
                     f'{_shape_text(shp)} }} }}\n'
                     f'layer {{ name: "loss_{t}" type: "EuclideanLoss" bottom: "{t}" '
                     f'bottom: "t_{t}" top: "l_{t}" }}\n')

    def make():
        return Net(net_from_text(text, file="t.prototxt"), phase, dtype=dtype, seed=1)

    cpu, gpu = make(), make()
    copy_params(cpu, gpu)
    gpu.to_device(0)
    rng = np.random.default_rng(seed)
    vals = {n: rng.standard_normal(cpu.blobs[n].shape) for n in cpu.input_names}
    vals.update(values or {})
    res = compare(cpu, gpu, vals)
    on_cpu = [n for n in gpu.device.cpu_layers if not n.startswith(("in", "loss_"))]
    assert on_cpu == list(cpu_ok), f"layers without a CUDA path: {on_cpu}"
    bad = [(n, v) for n, v in res if not v <= TOL[dtype]]
    assert not bad, bad
    return cpu, gpu, res


CORE = {
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


G = 'filler { type: "gaussian" std: 0.5 }'

CASES = {
    # name: (layers, input shapes, tops, values)
    "neurons_param": (
        'layer { name: "a" type: "Power" bottom: "x0" top: "a" power_param '
        '{ power: 2 scale: 0.5 shift: 1 } }\n'
        'layer { name: "b" type: "Power" bottom: "x0" top: "b" power_param '
        '{ power: 0.5 scale: 0.2 shift: 3 } }\n'
        'layer { name: "c" type: "Exp" bottom: "x0" top: "c" exp_param '
        '{ base: 2 scale: 0.5 shift: 0.3 } }\n'
        'layer { name: "d" type: "Log" bottom: "x0" top: "d" log_param '
        '{ base: 10 scale: 0.3 shift: 4 } }\n'
        'layer { name: "e" type: "Swish" bottom: "x0" top: "e" swish_param { beta: 1.5 } }\n'
        'layer { name: "f" type: "Power" bottom: "x0" top: "f" power_param { power: 0 } }\n'
        'layer { name: "g" type: "Exp" bottom: "x0" top: "g" }\n'
        'layer { name: "h" type: "Log" bottom: "g" top: "g" log_param { scale: 0.3 shift: 1 } }\n'
        'layer { name: "k" type: "Power" bottom: "x0" top: "k" power_param { power: 1 '
        'scale: -2 } }\n'
        'layer { name: "m" type: "Swish" bottom: "k" top: "k" }\n'
        'layer { name: "s" type: "Eltwise" bottom: "a" bottom: "b" bottom: "c" bottom: "d" '
        'bottom: "e" bottom: "f" bottom: "g" bottom: "k" top: "y" }', [(3, 8)], ("y",), None),
    "prelu": (
        'layer { name: "p" type: "PReLU" bottom: "x0" top: "y" prelu_param { ' + G + ' } }\n'
        'layer { name: "a" type: "Power" bottom: "x1" top: "z" power_param { scale: 1.5 } }\n'
        'layer { name: "q" type: "PReLU" bottom: "z" top: "z" prelu_param '
        '{ channel_shared: true filler { type: "constant" value: 0.3 } } }',
        [(2, 3, 4), (2, 2, 3)], ("y", "z"), None),
    "scale": (
        'layer { name: "s1" type: "Scale" bottom: "x0" top: "y" scale_param { axis: 1 '
        'num_axes: 2 bias_term: true ' + G + ' bias_filler { type: "gaussian" std: 0.5 } } }\n'
        'layer { name: "s2" type: "Scale" bottom: "x0" bottom: "x1" top: "z" }\n'
        'layer { name: "a" type: "Power" bottom: "x0" top: "w" power_param { scale: 2 } }\n'
        'layer { name: "s3" type: "Scale" bottom: "w" top: "w" scale_param { num_axes: 0 '
        + G + ' } }', [(2, 3, 2, 2), (3,)], ("y", "z", "w"), None),
    "bias": (
        'layer { name: "b1" type: "Bias" bottom: "x0" top: "y" bias_param { axis: 1 '
        'num_axes: -1 ' + G + ' } }\n'
        'layer { name: "b2" type: "Bias" bottom: "x0" bottom: "x1" top: "z" bias_param '
        '{ axis: 0 } }\n'
        'layer { name: "a" type: "Power" bottom: "x0" top: "w" power_param { scale: 2 } }\n'
        'layer { name: "b3" type: "Bias" bottom: "w" top: "w" bias_param { num_axes: 1 ' + G +
        ' } }', [(2, 3, 2), (2, 3)], ("y", "z", "w"), None),
    "deconv": (
        'layer { name: "l" type: "Deconvolution" bottom: "x0" top: "y" convolution_param '
        '{ num_output: 3 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "gaussian" '
        'std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }', [(2, 2, 3, 3)], ("y",),
        None),
    "deconv_group_depthwise": (
        'layer { name: "l" type: "Deconvolution" bottom: "x0" top: "y" convolution_param '
        '{ num_output: 4 kernel_size: 2 group: 2 dilation: 2 weight_filler { type: "gaussian" '
        'std: 0.5 } } }\n'
        'layer { name: "d" type: "Deconvolution" bottom: "x0" top: "z" convolution_param '
        '{ num_output: 2 kernel_size: 2 stride: 2 group: 2 weight_filler { type: "gaussian" '
        'std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }', [(1, 4, 3, 2)],
        ("y", "z"), None),
    "im2col_lrn_within": (
        'layer { name: "l" type: "Im2col" bottom: "x0" top: "y" convolution_param '
        '{ kernel_size: 2 pad: 1 stride: 2 } }\n'
        'layer { name: "r" type: "LRN" bottom: "x0" top: "z" lrn_param { local_size: 3 '
        'alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL } }', [(2, 2, 3, 4)], ("y", "z"),
        None),
    "mvn": (
        'layer { name: "a" type: "MVN" bottom: "x0" top: "y" }\n'
        'layer { name: "b" type: "MVN" bottom: "x0" top: "z" mvn_param '
        '{ across_channels: true eps: 0.01 } }\n'
        'layer { name: "c" type: "MVN" bottom: "x0" top: "w" mvn_param '
        '{ normalize_variance: false } }', [(2, 3, 5)], ("y", "z", "w"), None),
    "reduction_tile_crop": (
        'layer { name: "r1" type: "Reduction" bottom: "x0" top: "y" reduction_param '
        '{ axis: 1 } }\n'
        'layer { name: "r2" type: "Reduction" bottom: "x0" top: "z" reduction_param '
        '{ operation: ASUM axis: 0 coeff: 0.5 } loss_weight: 2 }\n'
        'layer { name: "r3" type: "Reduction" bottom: "x0" top: "w" reduction_param '
        '{ operation: SUMSQ axis: 2 } }\n'
        'layer { name: "r4" type: "Reduction" bottom: "x0" top: "v" reduction_param '
        '{ operation: MEAN axis: -1 coeff: 2 } }\n'
        'layer { name: "t" type: "Tile" bottom: "x0" top: "u" tile_param { axis: 1 '
        'tiles: 3 } }\n'
        'layer { name: "c" type: "Crop" bottom: "x0" bottom: "x1" top: "q" crop_param '
        '{ axis: 1 offset: 1 offset: 0 offset: 2 } }', [(2, 3, 4, 5), (2, 2, 3, 2)],
        ("y", "w", "v", "u", "q"), None),
    "argmax_threshold": (
        'layer { name: "a" type: "ArgMax" bottom: "x0" top: "y" }\n'
        'layer { name: "b" type: "ArgMax" bottom: "x0" top: "z" argmax_param '
        '{ top_k: 3 out_max_val: true } }\n'
        'layer { name: "c" type: "ArgMax" bottom: "x0" top: "w" argmax_param '
        '{ top_k: 2 axis: 1 } }\n'
        'layer { name: "d" type: "ArgMax" bottom: "x0" top: "v" argmax_param '
        '{ top_k: 2 axis: 2 out_max_val: true } }\n'
        'layer { name: "t" type: "Threshold" bottom: "x0" top: "u" threshold_param '
        '{ threshold: 0.2 } }',
        [(2, 4, 3)], ("y", "z", "w", "v", "u"),
        # ties: the larger index first, as the CPU
        {"x0": np.round(np.random.default_rng(3).standard_normal((2, 4, 3)), 0)}),
}


# the first table's cases (text, input shapes) join it: tops "y" ("y", "z" for concat_slice)
CASES.update({k: (text, shapes, ("y", "z") if k == "concat_slice" else ("y",), None)
              for k, (text, shapes) in CORE.items()})


@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_cpu(case, dtype):
    text, shapes, tops, values = CASES[case]
    parity(text, shapes, dtype=dtype, tops=tops, values=values)


@pytest.mark.parametrize("phase", [TRAIN, TEST], ids=["train", "test"])
@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
def test_stochastic_pooling(phase, dtype):
    x = np.abs(np.random.default_rng(4).standard_normal((2, 2, 5, 5)))
    x[0, 0, :2, :2] = 0.0                   # an all-zero window
    parity('layer { name: "l" type: "Pooling" bottom: "x0" top: "y" pooling_param '
           '{ pool: STOCHASTIC kernel_size: 3 stride: 2 } }', [(2, 2, 5, 5)], phase=phase,
           dtype=dtype, values={"x0": x})


def _labels(rng, shape, c):
    return rng.integers(0, c, size=shape).astype(np.float64)


@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
def test_euclidean_sigmoid_ce_losses(dtype):
    rng = np.random.default_rng(5)
    t = rng.random((3, 4))
    t[0, :2] = 1.0                          # ignored targets (ignore_label 1)
    text = ('layer { name: "e" type: "EuclideanLoss" bottom: "x0" bottom: "x1" top: "le" '
            'loss_weight: 2 }\n'
            'layer { name: "s" type: "SigmoidCrossEntropyLoss" bottom: "x0" bottom: "x2" '
            'top: "ls" loss_weight: 0.5 }\n'
            'layer { name: "i" type: "SigmoidCrossEntropyLoss" bottom: "x1" bottom: "x2" '
            'top: "li" loss_param { ignore_label: 1 normalization: VALID } }')
    parity(text, [(3, 4), (3, 2, 2), (3, 4)], dtype=dtype, tops=(), values={"x2": t})


@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
def test_classification_losses(dtype):
    rng = np.random.default_rng(6)
    h = np.abs(rng.standard_normal((4, 4)))
    h[1, 2] = 0.0
    text = ('layer { name: "h1" type: "HingeLoss" bottom: "x0" bottom: "x1" top: "l1" }\n'
            'layer { name: "h2" type: "HingeLoss" bottom: "x0" bottom: "x1" top: "l2" '
            'loss_weight: 3 hinge_loss_param { norm: L2 } }\n'
            'layer { name: "sm" type: "Softmax" bottom: "x0" top: "p" }\n'
            'layer { name: "m" type: "MultinomialLogisticLoss" bottom: "p" bottom: "x1" '
            'top: "l3" }\n'
            'layer { name: "ig" type: "InfogainLoss" bottom: "x2" bottom: "x3" bottom: "x4" '
            'top: "l4" top: "prob" loss_weight: 2 loss_weight: 0 '
            'loss_param { ignore_label: 3 } }')
    parity(text, [(3, 4), (3,), (2, 4, 3), (2, 3), (4, 4)], dtype=dtype, tops=(),
           values={"x1": _labels(rng, (3,), 4), "x3": _labels(rng, (2, 3), 4), "x4": h})


@pytest.mark.parametrize("legacy", [False, True], ids=["new", "legacy"])
@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
def test_contrastive_loss(dtype, legacy):
    y = np.array([1.0, 0.0, 0.0, 2.7, 0.0])
    text = ('layer { name: "c" type: "ContrastiveLoss" bottom: "x0" bottom: "x1" bottom: "x2" '
            f'top: "l" contrastive_loss_param {{ margin: 3 legacy_version: '
            f'{str(legacy).lower()} }} }}')
    parity(text, [(5, 3), (5, 3), (5,)], dtype=dtype, tops=(), values={"x2": y})


@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
def test_embed_batchreindex_filter_parameter(dtype):
    rng = np.random.default_rng(7)
    text = ('layer { name: "e" type: "Embed" bottom: "x0" top: "y" embed_param '
            '{ num_output: 3 input_dim: 5 weight_filler { type: "gaussian" std: 0.5 } '
            'bias_filler { type: "gaussian" std: 0.5 } } }\n'
            'layer { name: "r" type: "BatchReindex" bottom: "x1" bottom: "x2" top: "z" }\n'
            'layer { name: "f" type: "Filter" bottom: "x1" bottom: "x3" top: "w" }\n'
            'layer { name: "fr" type: "Reduction" bottom: "w" top: "wl" loss_weight: 1 '
            'reduction_param { operation: SUMSQ axis: 0 } }\n'
            'layer { name: "p" type: "Parameter" top: "v" parameter_param '
            '{ shape { dim: 2 dim: 3 } } }\n'
            'layer { name: "s" type: "Eltwise" bottom: "v" bottom: "x4" top: "u" }')
    parity(text, [(2, 4), (3, 2, 2), (5,), (3,), (2, 3)], dtype=dtype,
           tops=("y", "z", "u"),
           values={"x0": np.array([[0, 4, 4, 1], [2, 0, 4, 3]], np.float64),
                   "x2": np.array([2, 0, 2, 2, 1], np.float64),
                   "x3": np.array([1, 0, 1], np.float64), "x4": rng.standard_normal((2, 3))})


@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
def test_spp(dtype):
    x = np.abs(np.random.default_rng(8).standard_normal((1, 2, 5, 4)))
    parity('layer { name: "a" type: "SPP" bottom: "x0" top: "y" spp_param '
           '{ pyramid_height: 2 pool: MAX } }\n'
           'layer { name: "b" type: "SPP" bottom: "x0" top: "z" spp_param '
           '{ pyramid_height: 2 pool: AVE } }\n'
           'layer { name: "c" type: "SPP" bottom: "x0" top: "w" spp_param '
           '{ pyramid_height: 1 pool: STOCHASTIC } }', [(1, 2, 5, 4)], dtype=dtype,
           tops=("y", "z", "w"), values={"x0": x})


@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
def test_lstm_unit(dtype):
    cont = np.array([[1.0, 0.0, 1.0]])
    parity('layer { name: "u" type: "LSTMUnit" bottom: "x0" bottom: "x1" bottom: "x2" '
           'top: "y" top: "z" }', [(1, 3, 2), (1, 3, 8), (1, 3)], dtype=dtype,
           tops=("y", "z"), values={"x2": cont})


def test_every_core_layer_type_has_a_cuda_path():
    from netdef.backend.cuda.dispatch import TABLE
    want = ["Deconvolution", "Im2col", "PReLU", "Power", "Exp", "Log", "Swish", "Scale", "Bias",
            "Embed", "MVN", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
            "MultinomialLogisticLoss", "InfogainLoss", "ContrastiveLoss", "Reduction",
            "ArgMax", "Crop", "Tile", "Threshold", "BatchReindex", "Filter", "Parameter",
            "SPP", "LSTMUnit", "Pooling", "LRN"]
    assert [t for t in want if t not in TABLE] == []


def test_backward_hook_fires_in_device_mode():
    """Net.on_layer_backward (the MPI gradient sync) runs after each layer's device backward;
    a parameter's ``.diff`` read there is its finished gradient, copied to the host."""
    text = """force_backward: true
layer { name: "in" type: "Input" top: "x" top: "t"
        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "l" }
"""
    from netdef.backend.cuda.parity import copy_params
    def make():
        return Net(net_from_text(text, file="t.prototxt"), TRAIN, dtype=np.float64, seed=1)

    cpu, gpu = make(), make()
    copy_params(cpu, gpu)
    gpu.to_device(0)
    rng = np.random.default_rng(0)
    for n in ("x", "t"):
        v = rng.standard_normal(cpu.blobs[n].shape)
        cpu.blobs[n].data = v
        gpu.blobs[n].data = v
    seen = {}

    def recorder(net, tag):
        def hook(i):
            for j, b in enumerate(net.layers[i].blobs):
                seen[(tag, i, j)] = np.array(b.diff)       # what the MPI code reads
                b.diff[...] *= 2.0                          # ... and writes back
        return hook

    for net, tag in ((cpu, "cpu"), (gpu, "gpu")):
        net.on_layer_backward = recorder(net, tag)
        net.clear_param_diffs()
        net.forward()
        net.backward()
    keys = sorted(k[1:] for k in seen if k[0] == "cpu")
    assert keys == sorted(k[1:] for k in seen if k[0] == "gpu") and len(keys) == 4
    for k in keys:
        np.testing.assert_allclose(seen[("gpu",) + k], seen[("cpu",) + k], rtol=1e-12)
    # the host-side write reaches the device copy the solver updates from
    for la, lb in zip(cpu.layers, gpu.layers):
        for pa, pb_ in zip(la.blobs, lb.blobs):
            pb_.gpu_diff()
            np.testing.assert_allclose(pb_.cpu_diff(), pa.diff, rtol=1e-12)


@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
def test_lstm_and_rnn(dtype):
    rp = ('num_output: 2 weight_filler { type: "gaussian" std: 0.5 } '
          'bias_filler { type: "gaussian" std: 0.5 }')
    text = ('layer { name: "l" type: "LSTM" bottom: "x0" bottom: "x1" bottom: "x2" top: "y" '
            f'recurrent_param {{ {rp} }} }}\n'
            'layer { name: "r" type: "RNN" bottom: "x0" bottom: "x1" bottom: "x3" top: "z" '
            f'top: "hT" recurrent_param {{ {rp} expose_hidden: true }} }}\n'
            'layer { name: "e" type: "LSTM" bottom: "x0" bottom: "x1" bottom: "x3" bottom: "x4" '
            f'top: "w" top: "wh" top: "wc" recurrent_param {{ {rp} expose_hidden: true }} }}\n'
            'layer { name: "s" type: "RNN" bottom: "x0" bottom: "x1" bottom: "x2" top: "v" '
            f'recurrent_param {{ {rp} }} }}')
    parity(text, [(3, 2, 3), (3, 2), (2, 2), (1, 2, 2), (1, 2, 2)], dtype=dtype,
           tops=("y", "z", "hT", "w", "wh", "wc", "v"),
           values={"x1": np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]])})


def test_batchnorm_global_stats_test_phase():
    parity('layer { name: "l" type: "BatchNorm" bottom: "x0" top: "y" batch_norm_param '
           '{ use_global_stats: true } }', [(2, 3, 2)], phase=TEST, dtype=np.float64)


@pytest.mark.parametrize("dtype", DT, ids=DT_IDS)
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


def test_each_layer_class_declares_what_the_dispatch_table_has():
    """``has_cuda`` on the layer classes (what `netdef layers` reports, with no numba.cuda
    import) equals the CUDA dispatch table, type by type."""
    from netdef.backend.cuda.dispatch import TABLE
    from netdef.layers.registry import get_layer_class, layer_types
    declared = {t for t in layer_types() if get_layer_class(t).has_cuda}
    assert declared == set(TABLE)
    for t in ("Convolution", "Pooling", "InnerProduct", "ReLU", "SoftmaxWithLoss", "BatchNorm"):
        assert t in TABLE
    assert not get_layer_class("Python").has_cuda
