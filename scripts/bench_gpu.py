#!/usr/bin/env python
"""GPU training-step benchmark (netdef's CUDA backend): images/s of forward+backward+SGD update
for LeNet, CIFAR-10 quick and SqueezeNet v1.1 (224x224), the ratio to PyTorch CUDA fp32 (TF32
off) where torch is installed, and the tiled SGEMM's TFLOP/s.  Run from the source tree:

    PYTHONPATH=. python scripts/bench_gpu.py [--gpu 0] [--vs-torch] [--json]

``--simulate`` needs no GPU: it runs LeNet and CIFAR-10 quick training steps (``Solver.step``,
SGD with momentum and weight decay, the batch from a MemoryData layer, batch 64) under the CUDA
simulator with the kernel bodies skipped (netdef.backend.cuda.launch.counting) and prints, per
non-display iteration, what netdef's launch and transfer wrappers counted: ``launches``,
``h2d_transfers``/``h2d_bytes``, ``d2h_transfers``/``d2h_bytes``, ``host_syncs``,
``cpu_fallbacks``, the launches per layer and phase, and ``gemm_blocks``: each GEMM's grid as a
GPU would launch it at that batch (the default tile, an H100's 132 SMs)::

    python scripts/bench_gpu.py --simulate --json
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


SIM_NETS = {   # name: (deploy file, input shape without the batch)
    "lenet": ("model_zoo/lenet/lenet.prototxt", (1, 28, 28)),
    "cifar10_quick": ("model_zoo/cifar10_quick/cifar10_quick.prototxt", (3, 32, 32)),
}


def train_solver(path, batch, shape):
    """Solver (LeNet's recipe: SGD, momentum 0.9, weight decay 5e-4, "inv" policy, no display)
    on the deploy net with a MemoryData layer in place of its Input and SoftmaxWithLoss on top."""
    from netdef.config.loader import Definition, load_net
    from netdef.proto import pb
    from netdef.solvers.solver import Solver
    d = load_net(os.path.join(ROOT, path))
    net = pb.NetParameter()
    net.name = d.message.name
    for lp in d.message.layer:
        if lp.type == "Input":
            m = net.layer.add()
            m.name, m.type = "data", "MemoryData"
            m.top.extend([lp.top[0], "label"])
            mp = m.memory_data_param
            mp.batch_size, (mp.channels, mp.height, mp.width) = batch, shape
            data = lp.top[0]
        elif lp.type == "Softmax":
            loss = net.layer.add()
            loss.name, loss.type = "loss", "SoftmaxWithLoss"
            loss.bottom.extend([lp.bottom[0], "label"])
            loss.top.append("loss")
        else:
            net.layer.add().CopyFrom(lp)
    sp = pb.SolverParameter()
    sp.net_param.CopyFrom(net)
    sp.base_lr, sp.momentum, sp.weight_decay = 0.01, 0.9, 5e-4
    sp.lr_policy, sp.gamma, sp.power = "inv", 1e-4, 0.75
    sp.display, sp.max_iter, sp.snapshot, sp.random_seed = 0, 10 ** 6, 0, 1
    solver = Solver(Definition(sp, None, {}, "prototxt"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch * 2,) + tuple(shape)).astype(np.float32)
    y = rng.integers(0, 10, batch * 2).astype(np.float32)
    solver.net.set_input_arrays(x, y)
    return solver, data


def simulate(batch=64, iters=3):
    """The counts of --simulate (see the module docstring), one dict per net."""
    from netdef.backend.cuda import gemm
    from netdef.backend.cuda.launch import counting
    out = {}
    for name, (path, shape) in SIM_NETS.items():
        solver, _ = train_solver(path, batch, shape)
        solver.use_device(0)
        with counting(dry=True):
            solver.step(2)                      # first uploads, scratch, label checks
        gemm.PLANS = []
        try:
            with counting(dry=True) as by:
                solver.step(iters)
            from netdef.backend.cuda.counters import STATS
            stats = dict(STATS)
            plans = gemm.PLANS[:len(gemm.PLANS) // iters]
        finally:
            gemm.PLANS = None
        per = {k: v / iters for k, v in stats.items()}
        blocks = {}
        for where, M, N, K, grid, nblocks in plans:
            blocks.setdefault(where, []).append({"M": M, "N": N, "K": K, "grid": grid,
                                                 "blocks": nblocks})
        out[name] = {"batch": batch, "launches": per["launches"],
                     "h2d_transfers": per["h2d"], "h2d_bytes": per["h2d_bytes"],
                     "d2h_transfers": per["d2h"], "d2h_bytes": per["d2h_bytes"],
                     "host_syncs": per["host_syncs"], "cpu_fallbacks": per["cpu_fallbacks"],
                     "launches_by_layer": {k: {n: c / iters for n, c in v.items()}
                                               for k, v in by.items()},
                     "gemm_blocks": blocks}
    return out


def bench_netdef(name, gpu, iters, warm):
    """images/s of ``Solver.step`` on the GPU (SGD, momentum, weight decay; MemoryData)."""
    path, batch, shape = NETS[name]
    solver, _ = train_solver(path, batch, shape)
    solver.use_device(gpu)
    dev = solver.net.device
    from netdef.backend.cuda.launch import counting
    from netdef.backend.cuda.counters import STATS
    solver.step(warm)
    dev.synchronize()
    with counting():                      # the real launches and copies of the timed steps
        t0 = time.perf_counter()
        solver.step(iters)
        dev.synchronize()
        dt = (time.perf_counter() - t0) / iters
        per = {k: STATS[k] / iters for k in ("launches", "h2d", "d2h")}
    return {"images_per_s": batch / dt, "step_ms": dt * 1e3, "batch": batch,
            "launches_per_step": per["launches"], "h2d_per_step": per["h2d"],
            "d2h_per_step": per["d2h"],
            "cpu_layers": [n for n in dev.cpu_layers if n != "data"]}


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
    ap.add_argument("--simulate", action="store_true",
                    help="count launches/transfers/syncs per iteration under the simulator")
    args = ap.parse_args()
    if args.simulate:
        os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
        report = simulate()
        if args.json:
            print(json.dumps(report))
        else:
            for name, r in report.items():
                print(f"{name} (batch {r['batch']}): {r['launches']:g} launches, "
                      f"{r['h2d_transfers']:g} h2d ({r['h2d_bytes']:g} B), "
                      f"{r['d2h_transfers']:g} d2h, {r['host_syncs']:g} host syncs, "
                      f"{r['cpu_fallbacks']:g} CPU layers per iteration")
                for where, ks in r["launches_by_layer"].items():
                    print(f"  {where}: {sum(ks.values()):g} (" +
                          ", ".join(f"{k} {n:g}" for k, n in ks.items()) + ")")
                for where, gs in r["gemm_blocks"].items():
                    print(f"  GEMM {where}: " + ", ".join(
                        f"{g['M']}x{g['N']}x{g['K']} -> {g['blocks']} blocks" for g in gs))
        return
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
