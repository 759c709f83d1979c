#!/usr/bin/env python
"""CPU speed of netdef: training throughput, frozen-net inference, first-iteration time of
``netdef train`` (cold and warm Numba cache) and peak memory -- optionally against PyTorch.

Nets (random data, fixed seed): LeNet (batch 64) and CIFAR-10 quick (100) from ``model_zoo/``,
ResNet-18 for 32x32 inputs (CIFAR-style: 3x3 stem, no max pool, 4x4 average pool; batch 32),
ResNet-18 (224x224, batch 8), GoogLeNet (224x224, batch 8, its two auxiliary classifiers
included) and AlexNet (227x227, batch 8), the last three from ``model_zoo/``.

* training step: forward, backward and the solver's update (SGD, momentum 0.9, weight decay
  5e-4) -- images/s; forward+backward alone -- ms;
* inference: the net frozen with :func:`netdef.deploy.freeze.freeze` and run through
  ``netdef.deploy.load(path).predict(batch)`` -- images/s;
* ``--first-iter``: wall time of ``netdef train`` on LeNet for one iteration (no test, no
  snapshot), with an empty ``NUMBA_CACHE_DIR`` (cold) and then the same one again (warm);
* ``--rss``: peak resident memory of a process that builds and trains the net (3 steps), one
  process per framework and net.

With ``--vs-torch`` the same definitions run in PyTorch CPU eager mode: each Caffe layer as the
matching ``torch.nn.functional`` call (BatchNorm + Scale as one ``batch_norm``), SGD alike.
Every framework runs in its own process with the same thread count (``--threads``: Numba,
OpenMP, OpenBLAS and MKL variables, ``torch.set_num_threads``); the processes stay loaded and
take turns, ``--rounds`` times in alternating order with a pause between turns.  The table
shows medians and min-max over the rounds and the ratio netdef/PyTorch of the medians (above
1: netdef is faster).  PyTorch is never a dependency of netdef.

    python scripts/bench_train.py [--vs-torch] [--nets lenet,cifar10_quick,...] [--rounds 5]
        [--scale F] [--threads N] [--first-iter] [--rss] [--markdown] [--json PATH]
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

ZOO = os.path.join(ROOT, "model_zoo")
# name: (image shape, batch, classes, training iterations per round)
NETS = {
    "lenet": ((1, 28, 28), 64, 10, 20),
    "cifar10_quick": ((3, 32, 32), 100, 10, 8),
    "resnet18_32": ((3, 32, 32), 32, 10, 3),
    "resnet18_224": ((3, 224, 224), 8, 1000, 2),
    "googlenet": ((3, 224, 224), 8, 1000, 2),
    "alexnet": ((3, 227, 227), 8, 1000, 3),
}
#: the model_zoo folder of each net read from its train_val.prototxt + deploy.prototxt
ZOO_DIRS = {"resnet18_224": "resnet_18", "googlenet": "googlenet", "alexnet": "alexnet"}
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


def _deploy_batch(net_param, shape):
    """The deploy definition with its Input layer (or net-level input) at ``shape``."""
    from netdef.proto import pb
    out = pb.NetParameter()
    out.CopyFrom(net_param)
    for lp in out.layer:
        if lp.type == "Input":
            del lp.input_param.shape[:]
            lp.input_param.shape.add().dim.extend(shape)
            break
    else:
        del out.input_shape[:]
        del out.input_dim[:]
        out.input_shape.add().dim.extend(shape)
    return out


def _definitions(name: str):
    """(train NetParameter with an Input layer, deploy NetParameter) of a benchmark net."""
    from netdef.config import load_net
    img, batch, _, _ = NETS[name]
    shapes = {"data": (batch,) + img, "label": (batch,)}
    if name == "resnet18_32":
        return resnet18_32(False, batch), resnet18_32(True, batch)
    if name == "lenet":
        tv = load_net(os.path.join(ZOO, "lenet/lenet_train_test.prototxt"))
        dep = load_net(os.path.join(ZOO, "lenet/lenet.prototxt"))
    elif name == "cifar10_quick":
        tv = load_net(os.path.join(ZOO, "cifar10_quick/cifar10_quick_train_test.prototxt"))
        dep = load_net(os.path.join(ZOO, "cifar10_quick/cifar10_quick.prototxt"))
    else:
        tv = load_net(os.path.join(ZOO, ZOO_DIRS[name], "train_val.prototxt"))
        dep = load_net(os.path.join(ZOO, ZOO_DIRS[name], "deploy.prototxt"))
        dep = _deploy_batch(dep.message, (batch,) + img)
        return _with_input_layer(tv.message, shapes), dep
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
class CaffeTorch:
    """A Caffe definition run with ``torch.nn.functional``: the same layers, shapes and
    parameters (He-initialised) as netdef's net of that definition.  BatchNorm followed by
    an in-place Scale is one ``batch_norm`` with its affine terms (as ``nn.BatchNorm2d``);
    the losses add up with their ``loss_weight``."""

    SKIP = {"Accuracy", "Silence"}

    def __init__(self, net_param, shapes: dict, train: bool):
        import numpy as np
        import torch

        from netdef.net import Net
        net = Net(net_param, 0 if train else 1, input_shapes=shapes, init_params=False)
        self.train = train
        self.steps, self.params = [], []
        rng = np.random.default_rng(0)
        skip_scale = set()
        for i, (name, lay) in enumerate(zip(net.layer_names, net.layers)):
            lp = lay.param
            if lp.type in self.SKIP or name in skip_scale:
                continue
            ps = []
            for b in lay.blobs:
                fan_in = max(1, int(np.prod(b.shape[1:]))) if len(b.shape) > 1 else 0
                a = (rng.standard_normal(b.shape) * np.sqrt(2.0 / fan_in) if fan_in
                     else np.zeros(b.shape))
                ps.append(torch.tensor(a, dtype=torch.float32,
                                       requires_grad=train and lp.type != "BatchNorm"))
            extra = None
            if lp.type == "BatchNorm":
                ps = [torch.zeros(lay.blobs[0].shape), torch.ones(lay.blobs[1].shape)]
                j = i + 1
                if j < len(net.layers) and net.layers[j].type == "Scale" \
                        and list(net.bottoms[j]) == list(net.tops[i]):
                    sc = net.layers[j]
                    extra = [torch.ones(sc.blobs[0].shape, requires_grad=train)]
                    if len(sc.blobs) > 1:
                        extra.append(torch.zeros(sc.blobs[1].shape, requires_grad=train))
                    skip_scale.add(net.layer_names[j])
                    self.params += extra
            self.params += [p for p in ps if p.requires_grad]
            self.steps.append((lp.type, lay, [b.name for b in net.bottoms[i]],
                               [t.name for t in net.tops[i]], ps, extra))
        self.input_names = [n for n in shapes]

    def __call__(self, feeds: dict):
        import torch
        import torch.nn.functional as F
        env = dict(feeds)
        loss = None
        for kind, lay, bottoms, tops, ps, extra in self.steps:
            xs = [env[b] for b in bottoms]
            x = xs[0] if xs else None
            p = lay.param
            if kind == "Input":
                continue
            if kind == "Convolution":
                kh, kw, ph, pw, sh, sw, dh, dw = lay.geom
                y = F.conv2d(x, ps[0], ps[1] if len(ps) > 1 else None, (sh, sw), (ph, pw),
                             (dh, dw), lay.group)
            elif kind == "InnerProduct":
                y = F.linear(x.flatten(1), ps[0], ps[1] if len(ps) > 1 else None)
            elif kind == "Pooling":
                k, st, pd = (lay.kh, lay.kw), (lay.sh, lay.sw), (lay.ph, lay.pw)
                if lay.method == p.pooling_param.MAX:
                    y = F.max_pool2d(x, k, st, pd, ceil_mode=True)
                else:
                    y = F.avg_pool2d(x, k, st, pd, ceil_mode=True)
            elif kind == "ReLU":
                s = p.relu_param.negative_slope
                y = F.leaky_relu(x, s) if s else F.relu(x, inplace=bottoms == tops)
            elif kind == "LRN":
                q = p.lrn_param
                y = F.local_response_norm(x, q.local_size, q.alpha, q.beta, q.k)
            elif kind == "Concat":
                y = torch.cat(xs, p.concat_param.axis)
            elif kind == "Eltwise":
                y = xs[0]
                for z in xs[1:]:
                    y = y + z
            elif kind == "BatchNorm":
                w, b = (extra + [None])[:2] if extra else (None, None)
                y = F.batch_norm(x, ps[0], ps[1], w, b, training=self.train,
                                 eps=p.batch_norm_param.eps)
            elif kind == "Scale":
                y = x * ps[0].view(1, -1, 1, 1)
                if len(ps) > 1:
                    y = y + ps[1].view(1, -1, 1, 1)
            elif kind == "Dropout":
                y = F.dropout(x, p.dropout_param.dropout_ratio, training=self.train)
            elif kind == "Softmax":
                y = torch.softmax(x, 1)
            elif kind == "SoftmaxWithLoss":
                w = p.loss_weight[0] if len(p.loss_weight) else 1.0
                y = F.cross_entropy(x, xs[1].long()) * w
                loss = y if loss is None else loss + y
            elif kind == "Split":
                for t in tops:
                    env[t] = x
                continue
            else:
                raise SystemExit(f"bench_train: no PyTorch mapping for {kind}")
            env[tops[0]] = y
        return loss if self.train else env


class TorchRun:
    def __init__(self, name: str):
        import torch
        img, batch, classes, _ = NETS[name]
        torch.manual_seed(0)
        train, self.deploy_def = _definitions(name)
        shapes = {"data": (batch,) + img, "label": (batch,)}
        self.model = CaffeTorch(train, shapes, train=True)
        self.opt = torch.optim.SGD(self.model.params, lr=0.001, momentum=0.9,
                                   weight_decay=5e-4)
        self.feeds = {"data": torch.randn((batch,) + img),
                      "label": torch.randint(0, classes, (batch,)).float()}
        self.shapes = {"data": (batch,) + img}
        self.predictor = None

    def train_step(self):
        self.opt.zero_grad()
        self.model(self.feeds).backward()
        self.opt.step()

    def fwd_bwd(self):
        self.opt.zero_grad()
        self.model(self.feeds).backward()

    def build_predictor(self, tmp: str):
        self.predictor = CaffeTorch(self.deploy_def, self.shapes, train=False)

    def infer(self):
        import torch
        with torch.inference_mode():
            self.predictor({"data": self.feeds["data"]})


# -- measuring ------------------------------------------------------------------------------------
def _timed(fn, iters: int) -> float:
    """Seconds per call of ``fn`` over ``iters`` calls."""
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) / iters


THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")


def worker(framework: str, name: str, threads: int, scale: float) -> None:
    """One framework on one net in this process: build, warm up (compiles), print "ready",
    then per "go" line on stdin print one JSON object of the three metrics."""
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
    else:
        import netdef  # noqa: F401  (its BLAS/OpenMP environment before numpy loads)
    iters = max(1, round(NETS[name][3] * scale))
    batch = NETS[name][1]
    r = NetdefRun(name) if framework == "netdef" else TorchRun(name)
    tmp = tempfile.mkdtemp(prefix="netdef-bench-")
    r.train_step()
    r.fwd_bwd()
    r.build_predictor(tmp)
    r.infer()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        out = {}
        for metric, fn, n in (("train", r.train_step, iters), ("fwdbwd", r.fwd_bwd, iters),
                              ("infer", r.infer, 2 * iters)):
            fn()                    # once untimed: threads awake after the pause
            dt = _timed(fn, n)
            out[metric] = 1e3 * dt if metric == "fwdbwd" else batch / dt
        print(json.dumps(out), flush=True)


def bench_speed(names, frameworks, rounds: int, scale: float, threads: int,
                pause: float = 0.3) -> dict:
    """{(net, framework, metric): [per-round values]}: one worker process per framework and
    net, the same thread count, taking turns in alternating order."""
    results: dict = {}
    env = dict(os.environ)
    for v in THREAD_VARS:
        env[v] = str(threads)
    for name in names:
        procs = {}
        try:
            for fw in frameworks:       # one at a time: compiles do not overlap
                p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker",
                                      fw, "--nets", name, "--threads", str(threads),
                                      "--scale", str(scale)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=env, cwd=ROOT)
                procs[fw] = p
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError(f"the {fw} worker for {name} failed to start")
            for k in range(rounds):
                order = frameworks if k % 2 == 0 else frameworks[::-1]
                for fw in order:
                    time.sleep(pause)
                    procs[fw].stdin.write("go\n")
                    procs[fw].stdin.flush()
                    for metric, v in json.loads(procs[fw].stdout.readline()).items():
                        results.setdefault((name, fw, metric), []).append(v)
        finally:
            for p in procs.values():
                try:
                    p.stdin.close()
                except OSError:
                    pass
                p.wait(timeout=120)
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
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    ap.add_argument("--first-iter", action="store_true")
    ap.add_argument("--rss", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", default=None, help="also write the raw numbers here")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    threads = args.threads or os.cpu_count() or 1
    if args.worker:
        worker(args.worker, args.nets, threads, args.scale)
        return
    names = [n for n in args.nets.split(",") if n]
    frameworks = ["netdef"]
    torch_version = None
    if args.vs_torch:
        p = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True)
        if p.returncode:
            print("# PyTorch is not installed: netdef only", file=sys.stderr)
        else:
            frameworks.append("torch")
            torch_version = p.stdout.strip()
    print(f"# {os.cpu_count()} CPUs, {threads} threads per framework"
          + (f", torch {torch_version} in its own process" if torch_version else "")
          + f"; load at start {os.getloadavg()[0]:.2f}", flush=True)
    results = bench_speed(names, frameworks, args.rounds, args.scale, threads)
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
            json.dump({"threads": threads, "torch": torch_version,
                       "results": {"|".join(k): v for k, v in results.items()}, "rss": rss,
                       "first_iter": first}, f, indent=1)


if __name__ == "__main__":
    main()
