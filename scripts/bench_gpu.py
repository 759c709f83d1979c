#!/usr/bin/env python
"""GPU training-step benchmark (netdef's CUDA backend): images/s of forward+backward+SGD update
for LeNet, CIFAR-10 quick and SqueezeNet v1.1 (224x224), the ratio to PyTorch CUDA fp32 (TF32
off) where torch is installed, and the tiled SGEMM's TFLOP/s.  Run from the source tree:

    PYTHONPATH=. python scripts/bench_gpu.py [--gpu 0] [--vs-torch] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

NETS = {   # name: (deploy file, batch, input shape without the batch)
    "lenet": ("model_zoo/lenet/lenet.prototxt", 64, (1, 28, 28)),
    "cifar10_quick": ("model_zoo/cifar10_quick/cifar10_quick.prototxt", 100, (3, 32, 32)),
    "squeezenet_v1.1": ("model_zoo/squeezenet_v1.1/deploy.prototxt", 32, (3, 224, 224)),
}


def train_net(path, batch, shape, classes_hint=None):
    """The deploy net with its final Softmax replaced by SoftmaxWithLoss on a label input."""
    from netdef.config.loader import load_net
    from netdef.layers import TRAIN
    from netdef.net import Net
    from netdef.proto import pb
    d = load_net(os.path.join(ROOT, path))
    msg = pb.NetParameter()
    msg.CopyFrom(d.message)
    last = msg.layer[-1]
    if last.type == "Softmax":
        out = last.bottom[0]
        del msg.layer[-1]
    else:
        out = last.top[0]
    data = next(lp.top[0] for lp in msg.layer if lp.type == "Input")
    lab = msg.layer.add()
    lab.name, lab.type = "label_in", "Input"
    lab.top.append("label")
    lab.input_param.shape.add().dim.append(batch)
    loss = msg.layer.add()
    loss.name, loss.type = "loss", "SoftmaxWithLoss"
    loss.bottom.extend([out, "label"])
    loss.top.append("loss")
    net = Net(msg, TRAIN, input_shapes={data: (batch,) + tuple(shape)}, seed=1)
    return net, data


def bench_netdef(name, gpu, iters, warm):
    from netdef.backend.cuda.solver import _update
    from netdef.backend.cuda import primitives as K
    path, batch, shape = NETS[name]
    net, data = train_net(path, batch, shape)
    rng = np.random.default_rng(0)
    net.blobs[data].data = rng.standard_normal(net.blobs[data].shape)
    nclass = net.blobs[net.bottom_names[-1][0]].shape[1]
    net.blobs["label"].data = rng.integers(0, nclass, batch).astype(np.float32)
    dev = net.to_device(gpu)
    cpu_layers = dev.cpu_layers

    def step():
        net.clear_param_diffs()
        net.forward()
        net.backward()
        for pi in net.params:         # SGD momentum 0.9, lr 0.001 (device kernels)
            b = pi.blob
            n = b.count
            t = b.dtype.type
            if getattr(pi, "_h", None) is None:
                from netdef.backend.cuda.memory import device_zeros
                pi._h = device_zeros(n, b.dtype)
            _update[K.grid1d(n)](0, n, b.mutable_gpu_diff(), b.mutable_gpu_data(), pi._h, pi._h,
                                 t(1e-3), t(0.9), t(0), t(0), t(0), t(0))

    for _ in range(warm):
        step()
    dev.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    dev.synchronize()
    dt = (time.perf_counter() - t0) / iters
    return {"images_per_s": batch / dt, "step_ms": dt * 1e3, "batch": batch,
            "cpu_layers": [n for n in cpu_layers if n not in ("data", "label_in")]}


def torch_model(name, torch):
    nn = torch.nn
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5),
                             nn.MaxPool2d(2, 2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(),
                             nn.Linear(500, 10))
    if name == "cifar10_quick":
        return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True),
                             nn.ReLU(), nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(),
                             nn.AvgPool2d(3, 2, ceil_mode=True), nn.Conv2d(32, 64, 5, padding=2),
                             nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True), nn.Flatten(),
                             nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))
    try:
        import torchvision
        return torchvision.models.squeezenet1_1(num_classes=1000)
    except ImportError:
        return None


def bench_torch(name, iters, warm):
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    model = torch_model(name, torch)
    if model is None:
        return None
    model = model.cuda()
    path, batch, shape = NETS[name]
    x = torch.randn((batch,) + shape, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(warm):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / iters
    return {"images_per_s": batch / dt, "step_ms": dt * 1e3}


def bench_sgemm(n=4096, reps=5):
    from netdef.backend.cuda.device import cuda
    from netdef.backend.cuda.gemm import gemm
    c = cuda()
    rng = np.random.default_rng(0)
    a = c.to_device(rng.standard_normal(n * n).astype(np.float32))
    b = c.to_device(rng.standard_normal(n * n).astype(np.float32))
    out = c.device_array(n * n, np.float32)
    gemm(0, 0, n, n, n, 1.0, a, b, 0.0, out)
    c.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        gemm(0, 0, n, n, n, 1.0, a, b, 0.0, out)
    c.synchronize()
    dt = (time.perf_counter() - t0) / reps
    return {"n": n, "tflops": 2 * n ** 3 / dt / 1e12, "ms": dt * 1e3}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--vs-torch", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from netdef.backend.cuda.device import select_device
    select_device(args.gpu)
    report = {"sgemm": bench_sgemm()}
    print(f"SGEMM 4096^3: {report['sgemm']['tflops']:.2f} TFLOP/s", flush=True)
    for name in args.nets.split(","):
        r = bench_netdef(name, args.gpu, args.iters, args.warmup)
        if args.vs_torch:
            t = bench_torch(name, args.iters, args.warmup)
            if t is not None:
                r["torch_images_per_s"] = t["images_per_s"]
                r["ratio_to_torch"] = r["images_per_s"] / t["images_per_s"]
        report[name] = r
        extra = (f", torch {r['torch_images_per_s']:.0f} img/s, ratio {r['ratio_to_torch']:.3f}"
                 if "ratio_to_torch" in r else "")
        print(f"{name}: {r['images_per_s']:.0f} img/s ({r['step_ms']:.2f} ms/step, batch "
              f"{r['batch']}){extra}; CPU-fallback layers: {r['cpu_layers'] or 'none'}",
              flush=True)
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
