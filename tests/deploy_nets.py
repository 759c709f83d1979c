"""Shared fixtures of the deploy tests: small nets with random weights and non-trivial
BatchNorm statistics, and the LeNet files."""
from __future__ import annotations

import os

import numpy as np
from shared_paths import DATA

LENET_DIR = os.path.join(DATA, "caffe", "lenet")
LENET_TRAIN = os.path.join(LENET_DIR, "lenet_train_test.prototxt")
LENET_DEPLOY = os.path.join(LENET_DIR, "lenet.prototxt")
LENET_WEIGHTS = os.path.join(LENET_DIR, "lenet_iter_10000.caffemodel")
MNIST_DIR = os.path.join(DATA, "mnist")
SAMPLES = os.path.join(DATA, "samples")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_QUICK = os.path.join(REPO, "model_zoo", "cifar10_quick", "cifar10_quick.prototxt")

# BatchNorm + Scale after convolutions (in place and not), a BatchNorm without Scale, a
# BatchNorm + Scale after an Eltwise (nothing to fold into), a BatchNorm after an
# InnerProduct, a Scale -> Bias chain after the input, Dropout, LRN, grouped and dilated
# convolutions, MAX and AVE pooling with padding (Caffe's ceil mode and clip), Concat.
BN_NET = """
name: "bnnet"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 13 dim: 13 } } }
layer { name: "pre_scale" type: "Scale" bottom: "data" top: "pre"
        scale_param { axis: 1 num_axes: 1 } }
layer { name: "pre_bias" type: "Bias" bottom: "pre" top: "pre" }
layer { name: "conv1" type: "Convolution" bottom: "pre" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 k: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 2 dilation: 2 group: 2
                            weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" }
layer { name: "sc2" type: "Scale" bottom: "bn2" top: "sc2" scale_param { bias_term: true } }
layer { name: "relu2" type: "ReLU" bottom: "sc2" top: "relu2" }
layer { name: "drop2" type: "Dropout" bottom: "relu2" top: "drop2"
        dropout_param { dropout_ratio: 0.3 } }
layer { name: "conv3" type: "Convolution" bottom: "norm1" top: "conv3"
        convolution_param { num_output: 8 kernel_size: 1
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn3" type: "BatchNorm" bottom: "conv3" top: "conv3" }
layer { name: "sum" type: "Eltwise" bottom: "drop2" bottom: "conv3" top: "sum"
        eltwise_param { operation: SUM coeff: 1 coeff: 0.5 } }
layer { name: "bnx" type: "BatchNorm" bottom: "sum" top: "sum" }
layer { name: "scx" type: "Scale" bottom: "sum" top: "sum" scale_param { bias_term: true } }
layer { name: "cat" type: "Concat" bottom: "sum" bottom: "norm1" top: "cat" }
layer { name: "pool2" type: "Pooling" bottom: "cat" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "bn4" type: "BatchNorm" bottom: "ip1" top: "ip1" }
layer { name: "relu4" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""


def random_net(text: str, seed: int = 0, input_shapes=None, calibrate: bool = False):
    """A Net of ``text`` with random weights, random biases and BatchNorm statistics
    (mean, variance and a moving-average factor != 1), Scale/Bias operands far from 1/0."""
    from netdef.config import net_from_text
    from netdef.net import Net

    rng = np.random.default_rng(seed)
    net = Net(net_from_text(text), 1, input_shapes=input_shapes, seed=seed)
    for lay in net.layers:
        if lay.type == "BatchNorm":
            c = lay.blobs[0].shape[0]
            sf = 0.5
            lay.blobs[0].data = rng.normal(0, 0.5, c) * sf
            lay.blobs[1].data = rng.uniform(0.2, 2.0, c) * sf
            lay.blobs[2].data = np.array([sf])
        elif lay.type in ("Scale", "Bias"):
            for b in lay.blobs:
                b.data = rng.uniform(0.5, 1.5, b.shape) if lay.type == "Scale" and b is \
                    lay.blobs[0] else rng.normal(0, 0.3, b.shape)
        elif lay.type in ("Convolution", "InnerProduct") and len(lay.blobs) > 1:
            lay.blobs[1].data = rng.normal(0, 0.1, lay.blobs[1].shape)
        elif lay.type == "Convolution" and lay.blobs and not np.any(lay.blobs[0].data):
            lay.blobs[0].data = rng.normal(0, 0.1, lay.blobs[0].shape)
    for lay in net.layers:
        if lay.type in ("Convolution", "InnerProduct") and not np.any(lay.blobs[0].data):
            fan_in = int(np.prod(lay.blobs[0].shape[1:]))
            lay.blobs[0].data = rng.normal(0, 1 / np.sqrt(fan_in), lay.blobs[0].shape)
    if calibrate:
        # BatchNorm statistics near those of a random batch (times noise), so that deep nets
        # keep activations of order 1 and their outputs stay informative
        for name in net.input_names:
            net.blobs[name].data = rng.normal(0, 1, net.blobs[name].shape)
        for i, lay in enumerate(net.layers):
            if lay.type == "BatchNorm":
                x = net.bottoms[i][0].data
                axes = tuple(k for k in range(x.ndim) if k != 1)
                sf = 0.5
                lay.blobs[0].data = (x.mean(axis=axes) + rng.normal(0, 0.2, x.shape[1])) * sf
                lay.blobs[1].data = x.var(axis=axes) * rng.uniform(0.5, 2, x.shape[1]) * sf
                lay.blobs[2].data = np.array([sf])
            net.forward(i, i)
    return net


def weights_of(net):
    from netdef.io.weights import net_to_proto
    return net_to_proto(net)


def forward(net, x):
    """Outputs of ``net`` (a Net whose input is 'data') for batch ``x``."""
    from netdef.net import Net
    if tuple(net.blobs["data"].shape) != tuple(x.shape):
        other = Net(net.param, 1, input_shapes={"data": x.shape}, init_params=False)
        for a, b in zip(net.layers, other.layers):
            for pa, pb_ in zip(a.blobs, b.blobs):
                pb_.data = pa.data
        net = other
    net.blobs["data"].data = x
    net.forward()
    return {n: net.blobs[n].data.copy() for n in net.output_names}


def rel_diff(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# Layer types beyond the classic CNN ones, batched into two nets (every top nothing reads is an
# output): Deconvolution (grouped, strided, dilated, padded), Crop, Tile, MVN, Slice, Im2col,
# SPP, MAX pooling with its argmax top, STOCHASTIC pooling (TEST), ...
VISION_NET = """
name: "visionnet"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 4 dim: 9 dim: 9 } } }
layer { name: "deconv1" type: "Deconvolution" bottom: "data" top: "deconv1"
        convolution_param { num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2
                            weight_filler { type: "gaussian" std: 0.3 }
                            bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "deconv2" type: "Deconvolution" bottom: "data" top: "deconv2"
        convolution_param { num_output: 3 kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2
                            dilation: 2 pad_h: 0 pad_w: 1 bias_term: false
                            weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "deconv3" type: "Deconvolution" bottom: "data" top: "deconv3"
        convolution_param { num_output: 4 kernel_size: 2 stride: 2 group: 4
                            weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "crop" type: "Crop" bottom: "deconv1" bottom: "data" top: "crop"
        crop_param { axis: 2 offset: 3 offset: 5 } }
layer { name: "crop1" type: "Crop" bottom: "deconv1" bottom: "data" top: "crop1"
        crop_param { axis: 1 offset: 1 } }
layer { name: "mvn" type: "MVN" bottom: "crop" top: "mvn" }
layer { name: "mvn2" type: "MVN" bottom: "deconv2" top: "mvn2"
        mvn_param { across_channels: true normalize_variance: false } }
layer { name: "pool" type: "Pooling" bottom: "mvn" top: "pool" top: "mask"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "abs" type: "AbsVal" bottom: "deconv1" top: "abs" }
layer { name: "spool" type: "Pooling" bottom: "abs" top: "spool"
        pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 } }
layer { name: "tile" type: "Tile" bottom: "pool" top: "tile"
        tile_param { axis: 1 tiles: 3 } }
layer { name: "slice" type: "Slice" bottom: "tile" top: "s1" top: "s2" top: "s3"
        slice_param { axis: 1 slice_point: 4 slice_point: 11 } }
layer { name: "slice2" type: "Slice" bottom: "deconv1" top: "h1" top: "h2" top: "h3"
        slice_param { axis: 1 } }
layer { name: "tile2" type: "Tile" bottom: "h2" top: "tile2"
        tile_param { axis: -1 tiles: 2 } }
layer { name: "im2col" type: "Im2col" bottom: "data" top: "im2col"
        convolution_param { kernel_size: 3 stride: 2 pad: 1 dilation: 1 } }
layer { name: "spp" type: "SPP" bottom: "mvn2" top: "spp"
        spp_param { pyramid_height: 3 pool: MAX } }
layer { name: "spp_ave" type: "SPP" bottom: "crop" top: "spp_ave"
        spp_param { pyramid_height: 2 pool: AVE } }
"""

# neurons and reductions: Power (and its constant case), Exp, Log, ELU, PReLU (per channel
# and shared), Swish, BNLL, Threshold, Clip, Sigmoid, TanH, ArgMax (3 forms), Reduction (4
# operations), Embed (a second, integer-valued input)
NEURON_NET = """
name: "neuronnet"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 5 dim: 3 dim: 4 } } }
layer { name: "ids" type: "Input" top: "ids" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "pow" type: "Power" bottom: "data" top: "pow"
        power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "pow3" type: "Power" bottom: "data" top: "pow3"
        power_param { power: 3 scale: -0.7 } }
layer { name: "powc" type: "Power" bottom: "data" top: "powc"
        power_param { power: 3 scale: 0 shift: 2 } }
layer { name: "exp" type: "Exp" bottom: "data" top: "exp"
        exp_param { base: 2 scale: 0.5 shift: 0.1 } }
layer { name: "expe" type: "Exp" bottom: "data" top: "expe" }
layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }
layer { name: "log" type: "Log" bottom: "abs" top: "log"
        log_param { base: 10 scale: 0.5 shift: 1.5 } }
layer { name: "loge" type: "Log" bottom: "abs" top: "loge" log_param { shift: 0.1 } }
layer { name: "elu" type: "ELU" bottom: "data" top: "elu" elu_param { alpha: 0.7 } }
layer { name: "prelu" type: "PReLU" bottom: "data" top: "prelu"
        prelu_param { filler { type: "uniform" min: -0.5 max: 0.8 } } }
layer { name: "prelus" type: "PReLU" bottom: "data" top: "prelus"
        prelu_param { channel_shared: true filler { type: "constant" value: -0.3 } } }
layer { name: "swish" type: "Swish" bottom: "data" top: "swish" swish_param { beta: 1.5 } }
layer { name: "bnll" type: "BNLL" bottom: "data" top: "bnll" }
layer { name: "thr" type: "Threshold" bottom: "data" top: "thr"
        threshold_param { threshold: 0.2 } }
layer { name: "clip" type: "Clip" bottom: "data" top: "clip" clip_param { min: -0.5 max: 0.7 } }
layer { name: "sig" type: "Sigmoid" bottom: "data" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "data" top: "tanh" }
layer { name: "relu" type: "ReLU" bottom: "data" top: "lrelu" relu_param { negative_slope: 0.1 } }
layer { name: "am" type: "ArgMax" bottom: "data" top: "am" }
layer { name: "am3" type: "ArgMax" bottom: "data" top: "am3"
        argmax_param { top_k: 3 out_max_val: true } }
layer { name: "amax" type: "ArgMax" bottom: "data" top: "amax"
        argmax_param { axis: 1 top_k: 2 } }
layer { name: "amaxv" type: "ArgMax" bottom: "data" top: "amaxv"
        argmax_param { axis: 2 out_max_val: true } }
layer { name: "rsum" type: "Reduction" bottom: "data" top: "rsum"
        reduction_param { operation: SUM axis: 1 } }
layer { name: "rasum" type: "Reduction" bottom: "data" top: "rasum"
        reduction_param { operation: ASUM axis: 2 coeff: 0.5 } }
layer { name: "rsumsq" type: "Reduction" bottom: "data" top: "rsumsq"
        reduction_param { operation: SUMSQ axis: -1 } }
layer { name: "rmean" type: "Reduction" bottom: "data" top: "rmean"
        reduction_param { operation: MEAN axis: 1 coeff: 2 } }
layer { name: "embed" type: "Embed" bottom: "ids" top: "embed"
        embed_param { num_output: 4 input_dim: 7
                      weight_filler { type: "gaussian" std: 1 }
                      bias_filler { type: "gaussian" std: 0.5 } } }
"""


# graph plumbing on the batch axis: Parameter, BatchReindex, Filter, Crop and Slice of axis 0
BATCH_NET = """
name: "batchnet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "idx" type: "Input" top: "idx" input_param { shape { dim: 5 } } }
layer { name: "sel" type: "Input" top: "sel" input_param { shape { dim: 4 dim: 1 } } }
layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 4 dim: 3 } } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "p" top: "sum" }
layer { name: "br" type: "BatchReindex" bottom: "sum" bottom: "idx" top: "br" }
layer { name: "filter" type: "Filter" bottom: "data" bottom: "sel" top: "filtered" }
layer { name: "crop0" type: "Crop" bottom: "br" bottom: "data" top: "crop0"
        crop_param { axis: 0 offset: 1 offset: 0 } }
layer { name: "slice0" type: "Slice" bottom: "crop0" top: "a" top: "b" top: "c"
        slice_param { axis: 0 slice_point: 1 slice_point: 3 } }
"""


def batch_net():
    """BATCH_NET with a random Parameter blob, and its inputs."""
    net = random_net(BATCH_NET, seed=2)
    rng = np.random.default_rng(2)
    net.layers[net.layer_index["p"]].blobs[0].data = rng.normal(0, 1, (4, 3))
    inputs = {"data": rng.normal(0, 1, (4, 3)).astype(np.float32),
              "idx": np.array([3, 0, 0, 2, 1], np.float32),
              "sel": np.array([[1], [0], [1], [1]], np.float32)}
    return net, inputs


def neuron_inputs(n: int = 2, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"data": rng.normal(0, 1.5, (n, 5, 3, 4)).astype(np.float32),
            "ids": rng.integers(0, 7, (n, 3)).astype(np.float32)}


def vision_inputs(n: int = 2, seed: int = 0) -> dict:
    return {"data": np.random.default_rng(seed).normal(0, 1, (n, 4, 9, 9)).astype(np.float32)}
