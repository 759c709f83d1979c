#!/usr/bin/env python
"""CPU speed of netdef: training throughput, frozen-net inference, first-iteration time of
``netdef train`` (cold and warm Numba cache) and peak memory -- optionally against PyTorch.

Nets (random data, fixed seed): LeNet (batch 64), CIFAR-10 quick (100), ResNet-18 for 32x32
inputs (CIFAR-style: 3x3 stem, no max pool, 4x4 average pool; batch 32) and AlexNet (8; from
the Caffe model corpus, skipped when absent).

* training step: forward, backward and the solver's update (SGD, momentum 0.9, weight decay
  5e-4) -- images/s; forward+backward alone -- ms;
* inference: the net frozen with :func:`netdef.deploy.freeze.freeze` and run through
  ``netdef.deploy.load(path).predict(batch)`` -- images/s;
* ``--first-iter``: wall time of ``netdef train`` on LeNet for one iteration (no test, no
  snapshot), with an empty ``NUMBA_CACHE_DIR`` (cold) and then the same one again (warm);
* ``--rss``: peak resident memory of a process that builds and trains the net (3 steps), one
  process per framework and net.

With ``--vs-torch`` the same nets run in PyTorch CPU eager mode in the same process (for speed;
separate processes for memory), netdef and PyTorch alternating ``--rounds`` times; the table
shows medians and min-max over the rounds and the ratio netdef/PyTorch of the medians (above 1:
netdef is faster).  PyTorch is never a dependency of netdef.

    python scripts/bench_train.py [--vs-torch] [--nets lenet,cifar10_quick,...] [--rounds 5]
        [--iters N] [--threads N] [--first-iter] [--rss] [--markdown]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

ALEXNET_DIR = os.path.join(ROOT, "model_zoo", "alexnet")       # BVLC's AlexNet, generated
# name: (image shape, batch, classes, training iterations per round)
NETS = {
    "lenet": ((1, 28, 28), 64, 10, 20),
    "cifar10_quick": ((3, 32, 32), 100, 10, 8),
    "resnet18_32": ((3, 32, 32), 32, 10, 3),
    "alexnet": ((3, 227, 227), 8, 1000, 3),
}
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "Input", "WindowData"}


# -- netdef ---------------------------------------------------------------------------------------
def resnet18_32(deploy: bool, batch: int):
    """CIFAR-style ResNet-18 (as torchvision's BasicBlock ResNet with a 3x3 stem) in Caffe's
    style: BatchNorm + Scale after each convolution."""
    from netdef.netspec import NetSpec
    from netdef.netspec import layers as L
    from netdef.netspec import params as P
    from netdef.zoo import blocks
    n = NetSpec(name="ResNet-18-32x32")
    if deploy:
        blocks.deploy_input(n, (batch, 3, 32, 32))
    else:
        n.data, n.label = L.Input(ntop=2, shape=[dict(dim=[batch, 3, 32, 32]),
                                                 dict(dim=[batch])])
    conv_kw = dict(weight_filler=dict(type="msra"))
    n.conv1 = L.Convolution(n.data, num_output=64, kernel_size=3, pad=1, bias_term=False,
                            **conv_kw)
    x = blocks.bn_scale(n, n.conv1, bn="bn_conv1", scale="scale_conv1")
    n.conv1_relu = L.ReLU(x, in_place=True)
    x, channels = n.conv1_relu, 64
    for s in range(4):
        out = 64 << s
        for i in range(2):
            stride = 2 if (i == 0 and s > 0) else 1
            x = blocks.bottleneck(n, x, name=f"{s + 2}{'ab'[i]}", inner=out, out=out,
                                  stride=stride, project=(stride != 1 or channels != out),
                                  bn_kw={}, conv_kw=conv_kw, basic=True)
            channels = out
    n.pool5 = L.Pooling(x, kernel_size=4, stride=1, pool=P.Pooling.AVE)
    n.fc = L.InnerProduct(n.pool5, num_output=10, weight_filler=dict(type="msra"))
    if deploy:
        n.prob = L.Softmax(n.fc)
    else:
        n.loss = L.SoftmaxWithLoss(n.fc, n.label)
    return n.to_proto()


def _with_input_layer(net_param, shapes: dict):
    """The TRAIN net of a train/val definition with its data layers replaced by one Input
    (random data is fed once, so no data pipeline is timed)."""
    from netdef.proto import pb
    out = pb.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    first = True
    for lp in net_param.layer:
        if any(r.HasField("phase") and r.phase == 1 for r in lp.include):
            continue                      # TEST-only
        if lp.type in DATA_TYPES:
            if not first:
                continue
            first = False
            inp = out.layer.add()
            inp.name, inp.type = "data", "Input"
            inp.top.extend(lp.top)
            for t in lp.top:
                inp.input_param.shape.add().dim.extend(shapes[t])
            continue
        out.layer.add().CopyFrom(lp)
    return out


def _definitions(name: str):
    """(train NetParameter with an Input layer, deploy NetParameter) of a benchmark net."""
    from netdef.config import load_net
    img, batch, _, _ = NETS[name]
    shapes = {"data": (batch,) + img, "label": (batch,)}
    if name == "resnet18_32":
        return resnet18_32(False, batch), resnet18_32(True, batch)
    if name == "lenet":
        tv = load_net(os.path.join(ROOT, "model_zoo/lenet/lenet_train_test.prototxt"))
        dep = load_net(os.path.join(ROOT, "model_zoo/lenet/lenet.prototxt"))
    elif name == "cifar10_quick":
        tv = load_net(os.path.join(ROOT, "model_zoo/cifar10_quick/"
                                         "cifar10_quick_train_test.prototxt"))
        dep = load_net(os.path.join(ROOT, "model_zoo/cifar10_quick/cifar10_quick.prototxt"))
    else:
        tv = load_net(os.path.join(ALEXNET_DIR, "train_val.prototxt"))
        dep = load_net(os.path.join(ALEXNET_DIR, "deploy.prototxt"))
    return _with_input_layer(tv.message, shapes), dep.message


SOLVER = """type: "SGD" base_lr: 0.001 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed"
max_iter: 1000000 display: 0 test_interval: 0 snapshot: 0 random_seed: 1 """


class NetdefRun:
    """A solver on the benchmark net with a random batch fed once."""

    def __init__(self, name: str, dtype="float32"):
        import numpy as np

        from netdef.config.loader import Definition
        from netdef.proto import pb
        from netdef.solvers.solver import Solver
        from google.protobuf import text_format
        img, batch, classes, _ = NETS[name]
        self.name, self.batch = name, batch
        train, self.deploy_def = _definitions(name)
        sp = text_format.Parse(SOLVER, pb.SolverParameter())
        sp.net_param.CopyFrom(train)
        self.solver = Solver(Definition(sp, None, {}, "prototxt"), dtype=np.dtype(dtype))
        self.net = self.solver.net
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((batch,) + img).astype(dtype)
        self.net.blobs["data"].data = self.x
        self.net.blobs["label"].data = rng.integers(0, classes, batch).astype(dtype)
        self.predictor = None

    def train_step(self):
        self.solver.step(1)

    def fwd_bwd(self):
        self.net.clear_param_diffs()
        self.net.forward_backward()

    def build_predictor(self, tmp: str):
        from netdef import deploy
        from netdef.deploy.freeze import freeze
        from netdef.io.weights import net_to_proto
        img, batch, _, _ = NETS[self.name]
        res = freeze(self.deploy_def, net_to_proto(self.net),
                     input_shapes={"data": (batch,) + img})
        path = os.path.join(tmp, f"{self.name}.frozen")
        res.save(path, source="bench_train")
        self.predictor = deploy.load(path)
        self.predictor.predict(self.x)

    def infer(self):
        self.predictor.predict(self.x)


# -- PyTorch --------------------------------------------------------------------------------------
def torch_model(name: str):
    import torch.nn as nn
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
                             nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2, ceil_mode=True),
                             nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    if name == "cifar10_quick":
        return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True),
                             nn.ReLU(), nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(),
                             nn.AvgPool2d(3, 2, ceil_mode=True), nn.Conv2d(32, 64, 5, padding=2),
                             nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True), nn.Flatten(),
                             nn.Linear(64 * 4 * 4, 64), nn.Linear(64, 10))
    if name == "alexnet":
        return nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), nn.LocalResponseNorm(5, 1e-4, 0.75),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(),
            nn.LocalResponseNorm(5, 1e-4, 0.75), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
            nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(),
            nn.MaxPool2d(3, 2, ceil_mode=True), nn.Flatten(),
            nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 1000))
    return _torch_resnet18_32()


def _torch_resnet18_32():
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.relu(self.b1(self.c1(x)))
            return self.relu(self.b2(self.c2(y)) + self.short(x))

    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
    cin = 64
    for s in range(4):
        out = 64 << s
        for i in range(2):
            layers.append(Block(cin, out, 2 if (i == 0 and s > 0) else 1))
            cin = out
    layers += [nn.AvgPool2d(4), nn.Flatten(), nn.Linear(512, 10)]
    return nn.Sequential(*layers)


class TorchRun:
    def __init__(self, name: str):
        import torch
        img, batch, classes, _ = NETS[name]
        torch.manual_seed(0)
        self.model = torch_model(name)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.001, momentum=0.9,
                                   weight_decay=5e-4)
        self.x = torch.randn((batch,) + img)
        self.y = torch.randint(0, classes, (batch,))
        self.loss = torch.nn.CrossEntropyLoss()

    def train_step(self):
        self.model.train()
        self.opt.zero_grad()
        self.loss(self.model(self.x), self.y).backward()
        self.opt.step()

    def fwd_bwd(self):
        self.model.train()
        self.opt.zero_grad()
        self.loss(self.model(self.x), self.y).backward()

    def build_predictor(self, tmp: str):
        self.model.eval()

    def infer(self):
        import torch
        self.model.eval()
        with torch.inference_mode():
            torch.softmax(self.model(self.x), 1)


# -- measuring ------------------------------------------------------------------------------------
def _timed(fn, iters: int) -> float:
    """Seconds per call of ``fn`` over ``iters`` calls."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


def bench_speed(names, frameworks, rounds: int, scale: float) -> dict:
    """{(net, framework, metric): [per-round values]}, frameworks alternating each round."""
    results: dict = {}
    tmp = tempfile.mkdtemp(prefix="netdef-bench-")
    for name in names:
        iters = max(1, round(NETS[name][3] * scale))
        batch = NETS[name][1]
        runs = {}
        for fw in frameworks:
            r = NetdefRun(name) if fw == "netdef" else TorchRun(name)
            r.train_step()                      # compile / warm up
            r.fwd_bwd()
            r.build_predictor(tmp)
            r.infer()
            runs[fw] = r
        for k in range(rounds):
            order = frameworks if k % 2 == 0 else frameworks[::-1]
            for fw in order:
                r = runs[fw]
                results.setdefault((name, fw, "train"), []).append(
                    batch / _timed(r.train_step, iters))
                results.setdefault((name, fw, "fwdbwd"), []).append(
                    1e3 * _timed(r.fwd_bwd, iters))
                results.setdefault((name, fw, "infer"), []).append(
                    batch / _timed(r.infer, 2 * iters))
        del runs
        print(f"# {name} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    return results


def first_iteration_times() -> dict:
    """Wall seconds of `netdef train` for LeNet, 1 iteration, cold and then warm cache."""
    out = {}
    cache = tempfile.mkdtemp(prefix="netdef-numba-cache-")
    snap = tempfile.mkdtemp(prefix="netdef-bench-snap-")
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    cmd = [sys.executable, "-m", "netdef_cli.main", "train", "--solver",
           "model_zoo/lenet/lenet_solver.prototxt", "--set", "max_iter=1", "--set",
           "test_interval=0", "--set", "snapshot=0", "--set", "snapshot_after_train=false",
           "--set", "display=1", "--set", f"snapshot_prefix={snap}/lenet"]
    for kind in ("cold", "warm"):
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        out[kind] = time.perf_counter() - t0
        if p.returncode:
            print(p.stderr[-2000:], file=sys.stderr)
            out[kind] = float("nan")
    return out


def _peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): VmHWM (per address space, so not the
    parent's peak, which ``ru_maxrss`` carries across fork and exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss(name: str, framework: str) -> float:
    """MiB of peak RSS of a fresh process training ``name`` for 3 steps."""
    code = ("import sys; sys.path.insert(0, %r); import bench_train as B\n"
            "r = (B.NetdefRun if %r == 'netdef' else B.TorchRun)(%r)\n"
            "[r.train_step() for _ in range(3)]\n"
            "print(B._peak_rss_mib())\n"
            % (HERE, framework, name))
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if p.returncode:
        print(p.stderr[-2000:], file=sys.stderr)
        return float("nan")
    return float(p.stdout.strip().splitlines()[-1])


def _fmt(vals, digits=1):
    med = statistics.median(vals)
    return f"{med:.{digits}f} ({min(vals):.{digits}f}-{max(vals):.{digits}f})"


def table(results, names, frameworks, rss=None, markdown=False) -> str:
    vs = "torch" in frameworks and "netdef" in frameworks
    head = ["net", "metric"] + [f"{fw}" for fw in frameworks] + (["netdef/torch"] if vs else [])
    rows = []
    labels = {"train": "train img/s", "fwdbwd": "fwd+bwd ms", "infer": "infer img/s"}
    for name in names:
        for metric in ("train", "fwdbwd", "infer"):
            if (name, frameworks[0], metric) not in results:
                continue
            row = [f"{name} b{NETS[name][1]}", labels[metric]]
            for fw in frameworks:
                row.append(_fmt(results[(name, fw, metric)], 2 if metric == "fwdbwd" else 1))
            if vs:
                a = statistics.median(results[(name, "netdef", metric)])
                b = statistics.median(results[(name, "torch", metric)])
                row.append(f"{(b / a if metric == 'fwdbwd' else a / b):.2f}x")
            rows.append(row)
        if rss and name in rss:
            row = [f"{name} b{NETS[name][1]}", "peak RSS MiB"]
            row += [f"{rss[name].get(fw, float('nan')):.0f}" for fw in frameworks]
            if vs:
                row.append(f"{rss[name]['torch'] / rss[name]['netdef']:.2f}x")
            rows.append(row)
    widths = [max(len(str(r[c])) for r in [head] + rows) for c in range(len(head))]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    else:
        lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply every net's iterations per round")
    ap.add_argument("--vs-torch", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--first-iter", action="store_true")
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    args = ap.parse_args()
    import netdef  # noqa: F401  (BLAS/OpenMP environment before numpy loads)
    import numba
    names = [n for n in args.nets.split(",") if n]
    if "alexnet" in names and not os.path.exists(os.path.join(ALEXNET_DIR, "train_val.prototxt")):
        print(f"# alexnet skipped: {ALEXNET_DIR} not found", file=sys.stderr)
        names.remove("alexnet")
    frameworks = ["netdef"]
    if args.vs_torch:
        try:
            import torch
        except ImportError:
            print("# PyTorch is not installed: netdef only", file=sys.stderr)
        else:
            frameworks.append("torch")
            if args.threads:
                torch.set_num_threads(args.threads)
    if args.threads:
        numba.set_num_threads(args.threads)
    threads = numba.get_num_threads()
    print(f"# {os.cpu_count()} CPUs, {threads} netdef threads"
          + (f", torch {sys.modules['torch'].__version__} with "
             f"{sys.modules['torch'].get_num_threads()} threads" if "torch" in frameworks else "")
          + f"; load at start {os.getloadavg()[0]:.2f}", flush=True)
    results = bench_speed(names, frameworks, args.rounds, args.scale)
    rss = None
    if args.rss:
        rss = {n: {fw: peak_rss(n, fw) for fw in frameworks} for n in names}
    print(table(results, names, frameworks, rss, args.markdown))
    first = None
    if args.first_iter:
        first = first_iteration_times()
        print(f"netdef train, LeNet, first iteration (process wall time): "
              f"cold cache {first['cold']:.1f} s, warm cache {first['warm']:.1f} s")
    print(f"# load at end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": {"|".join(k): v for k, v in results.items()}, "rss": rss,
                       "first_iter": first}, f, indent=1)


if __name__ == "__main__":
    main()
