#!/usr/bin/env python
"""Data-parallel scaling on this machine: training images/s of LeNet (batch 64 per rank, random
data) with 1, 2, ... MPI ranks, and the fraction of the step time spent in gradient
Allreduce (waiting for it included).  Needs `pip install 'netdef[mpi]'`.

    python scripts/bench_mpi.py [--ranks 1,2] [--iters 100] [--net lenet|cifar10_quick]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

NETS = {"lenet": ("model_zoo/lenet/lenet_train_test.prototxt", (64, 1, 28, 28)),
        "cifar10_quick": ("model_zoo/cifar10_quick/cifar10_quick_train_test.prototxt",
                          (100, 3, 32, 32))}


def worker(net_name: str, iters: int) -> None:
    import netdef  # noqa: F401  (first: it sets the per-rank BLAS threads before numpy loads)
    import numpy as np
    from netdef.config import load_solver
    from netdef.parallel.mpi import init
    from netdef.solvers.solver import Solver

    ctx = init()
    path, shape = NETS[net_name]
    with tempfile.TemporaryDirectory() as tmp:
        solver_file = os.path.join(tmp, "solver.prototxt")
        with open(solver_file, "w") as f:
            f.write(f'net: "{os.path.join(REPO, path)}" base_lr: 0.001 momentum: 0.9 '
                    f'lr_policy: "fixed" max_iter: {iters + 3} display: 0 snapshot: 0 '
                    f'snapshot_after_train: false random_seed: 1 snapshot_prefix: '
                    f'"{os.path.join(tmp, "s")}"')
        solver = Solver(load_solver(solver_file),
                        input_shapes={"data": shape, "label": (shape[0],)})
        rng = np.random.default_rng(ctx.rank)
        for layer in solver.net.layers:
            if getattr(layer, "is_data", False):
                layer.forward = lambda b, t: None        # the same random batch throughout
        solver.net.blobs["data"].data = rng.standard_normal(shape).astype(np.float32)
        solver.net.blobs["label"].data = rng.integers(0, 10, shape[0]).astype(np.float32)
        solver.step(3)                                   # compile and warm up
        if solver.sync is not None:
            solver.sync.seconds = 0.0
        t0 = time.perf_counter()
        solver.step(iters)
        dt = time.perf_counter() - t0
    if ctx.rank == 0:
        comm = solver.sync.seconds if solver.sync is not None else 0.0
        print(json.dumps({"ranks": ctx.size, "images_per_s": ctx.size * shape[0] * iters / dt,
                          "allreduce_fraction": comm / dt}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", default=None, help="comma list (default: 1 up to the cores)")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--net", choices=sorted(NETS), default="lenet")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.net, args.iters)
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("no mpiexec: pip install 'netdef[mpi]'")
    cores = os.cpu_count() or 1
    ranks = [int(r) for r in args.ranks.split(",")] if args.ranks else \
        sorted({1, *range(2, cores + 1, 2)})
    base = None
    print(f"{args.net}, batch {NETS[args.net][1][0]} per rank, {cores} cores")
    for n in ranks:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--net", args.net,
               "--iters", str(args.iters)]
        if n > 1:
            cmd = [mpiexec, "-n", str(n), *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            sys.exit(f"{n} ranks failed:\n{r.stderr}")
        res = json.loads(r.stdout.strip().splitlines()[-1])
        base = base or res["images_per_s"]
        print(f"{n:3d} ranks  {res['images_per_s']:9.1f} img/s  speed-up "
              f"{res['images_per_s'] / base:4.2f}  allreduce {100 * res['allreduce_fraction']:4.1f}"
              f"% of step time", flush=True)


if __name__ == "__main__":
    main()
