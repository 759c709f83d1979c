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
