#!/usr/bin/env python
"""Training throughput (images/s) of LeNet (batch 64) and CIFAR-10 quick (batch 100) on random
data: one forward, backward and SGD update per iteration, after a warm-up that compiles the
kernels.  With --vs-torch (and PyTorch installed) the same nets run in PyTorch CPU eager mode in
this process, and the ratio is printed.  PyTorch is never a dependency of netdef.

    python scripts/bench_train.py [--iters 30] [--vs-torch] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

NETS = {
    "lenet": ("model_zoo/lenet/lenet_train_test.prototxt", (64, 1, 28, 28), 10),
    "cifar10_quick": (None, (100, 3, 32, 32), 10),
}

CIFAR_QUICK = """
name: "CIFAR10_quick"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 100 dim: 3 dim: 32 dim: 32 } shape { dim: 100 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 32 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.0001 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 32 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "conv3" type: "Convolution" bottom: "pool2" top: "conv3"
        convolution_param { num_output: 64 pad: 2 kernel_size: 5 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "pool3" type: "Pooling" bottom: "conv3" top: "pool3"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool3" top: "ip1"
        inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def netdef_net(name):
    import numpy as np

    from netdef.config import load_net, net_from_text
    from netdef.layers import TRAIN
    from netdef.net import Net
    path, shape, classes = NETS[name]
    d = load_net(os.path.join(os.path.dirname(HERE), path)) if path else net_from_text(CIFAR_QUICK)
    net = Net(d, TRAIN, input_shapes={"data": shape, "label": (shape[0],)}, seed=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.integers(0, classes, shape[0]).astype(np.float32)
    return net, x, y


def bench_netdef(name, iters):
    import numpy as np
    net, x, y = netdef_net(name)
    data_idx = [i for i, l in enumerate(net.layers) if getattr(l, "is_data", False)]
    for i in data_idx:
        net.layers[i].forward = lambda b, t: None   # feed the same random batch
    net.blobs["data"].data = x
    net.blobs["label"].data = y

    def step():
        net.clear_param_diffs()
        net.forward()
        net.backward()
        for p in net.params:
            p.blob.data -= np.float32(0.001) * p.blob.diff
    step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    dt = time.perf_counter() - t0
    return iters * x.shape[0] / dt


def torch_model(name):
    import torch.nn as nn
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
                             nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
                             nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True),
                         nn.ReLU(), nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(),
                         nn.AvgPool2d(3, 2, ceil_mode=True), nn.Conv2d(32, 64, 5, padding=2),
                         nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True), nn.Flatten(),
                         nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))


def bench_torch(name, iters):
    import torch
    _, shape, classes = NETS[name]
    model = torch_model(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.001)
    x = torch.randn(shape)
    y = torch.randint(0, classes, (shape[0],))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    step()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    return iters * shape[0] / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--vs-torch", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        import numba
        numba.set_num_threads(args.threads)
    for name in NETS:
        ours = bench_netdef(name, args.iters)
        line = f"{name:14s} netdef {ours:9.1f} img/s"
        if args.vs_torch:
            try:
                import torch
                if args.threads:
                    torch.set_num_threads(args.threads)
                theirs = bench_torch(name, args.iters)
                line += f"   torch {theirs:9.1f} img/s   ratio netdef/torch {ours / theirs:.2f}"
            except ImportError:
                line += "   (PyTorch not installed)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
