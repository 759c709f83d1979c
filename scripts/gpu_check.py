#!/usr/bin/env python
"""One-shot GPU check (scripts/gpu_check.sh runs it): everything a lent GPU machine should tell
us, in one bounded run that needs no network and no ../shared.

    python scripts/gpu_check.py --prepare        # here, before the run: MNIST into gpu_data/
    python scripts/gpu_check.py [--out DIR]      # on the GPU machine (or a dry run below)

Steps, each with its own time limit and its result written as soon as it is known (a killed run
still reports): ``env`` (versions), ``device`` (device-query), ``tests`` (the CUDA test suite,
junit XML), ``parity`` (every CUDA layer of zoo nets against the CPU, check-parity), ``lenet``
(LeNet on MNIST from HDF5 for N iterations on the GPU and on the CPU: pass when the test
accuracies are within 0.3 points), ``bench`` (bench_gpu.py --vs-torch), ``sanitizer``
(compute-sanitizer memcheck on a small net).  Results: ``DIR/summary.json`` plus at most seven
step files (``DIR/<step>.txt``, ``tests.xml``).

``NUMBA_ENABLE_CUDASIM=1`` makes it a dry run: the same steps at the smallest sizes (the
simulator runs every CUDA thread in Python), which must complete and write the summary.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: the ignored folder that travels with a device run (.gitignore: /gpu_data/)
DATA = os.path.join(ROOT, "gpu_data")
SIM = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def prepare() -> int:
    """Copy MNIST's four IDX files from ../shared into gpu_data/mnist (no network later)."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from shared_paths import find
    shared = find(required=False)
    if shared is None:
        print("error: ../shared not found (set NETDEF_SHARED)", file=sys.stderr)
        return 2
    dst = os.path.join(DATA, "mnist")
    os.makedirs(dst, exist_ok=True)
    for f in glob.glob(os.path.join(shared, "data", "mnist", "*.gz")):
        shutil.copy(f, dst)
    print(f"copied {len(os.listdir(dst))} files to {dst}")
    return 0


class Run:
    def __init__(self, out: str, budget_s: float):
        self.out = out
        self.t0 = time.time()
        self.budget = budget_s
        self.summary = {"dry_run": SIM, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "steps": {}}
        os.makedirs(out, exist_ok=True)
        self.write()

    def write(self) -> None:
        self.summary["elapsed_s"] = round(time.time() - self.t0, 1)
        tmp = os.path.join(self.out, "summary.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.summary, f, indent=1)
        os.replace(tmp, os.path.join(self.out, "summary.json"))

    def step(self, name: str, cmd: list, limit_s: float, env=None, parse=None,
             file: str | None = None) -> dict:
        left = self.budget - (time.time() - self.t0)
        limit = max(5.0, min(limit_s, left - 5))
        res = {"cmd": " ".join(cmd), "limit_s": round(limit)}
        if left < 10:
            res.update(status="skipped", why="out of time")
        else:
            t = time.time()
            try:
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                                   cwd=ROOT, env={**os.environ, **(env or {})})
                text = p.stdout + ("\n--- stderr ---\n" + p.stderr if p.stderr else "")
                res.update(status="pass" if p.returncode == 0 else "fail", rc=p.returncode)
                if parse is not None:
                    try:
                        res.update(parse(p.stdout, p.stderr))
                    except Exception as e:
                        res.update(parse_error=f"{type(e).__name__}: {e}")
            except subprocess.TimeoutExpired as e:
                text = (e.stdout or b"").decode(errors="replace") if isinstance(
                    e.stdout, bytes) else (e.stdout or "")
                res.update(status="timeout")
            res["wall_s"] = round(time.time() - t, 1)
            # at most 8 result files: steps may share one (``file``), appended to
            path = os.path.join(self.out, f"{file or name}.txt")
            with open(path, "a" if file else "w") as f:
                f.write(f"==== {res['cmd']}\n{text[-200_000:]}\n")
            res["tail"] = text.strip().splitlines()[-3:]
        self.summary["steps"][name] = res
        self.write()
        return res


def _env_info() -> dict:
    info = {"python": sys.version.split()[0]}
    for mod in ("numpy", "numba", "numba_cuda", "cupy", "torch", "h5py", "lmdb"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except Exception as e:
            info[mod] = f"missing ({type(e).__name__})"
    try:
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception as e:
        info["nvidia_smi"] = f"unavailable ({type(e).__name__})"
    return info


def _mnist_hdf5(work: str, n_train: int, n_test: int) -> tuple[str, str]:
    """LeNet's data as HDF5 (h5py is on the GPU machines, lmdb is not), scaled by 1/256 as
    the zoo's transform_param does."""
    import h5py
    import numpy as np
    sys.path.insert(0, ROOT)
    from netdef.data.mnist import read_idx_images, read_idx_labels
    src = os.path.join(DATA, "mnist")
    lists = []
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        x = read_idx_images(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"))[:n]
        y = read_idx_labels(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"))[:n]
        path = os.path.join(work, f"{split}.h5")
        with h5py.File(path, "w") as f:
            f["data"] = (x.reshape(-1, 1, 28, 28).astype(np.float32) * np.float32(0.00390625))
            f["label"] = y.astype(np.float32)
        lst = os.path.join(work, f"{split}.txt")
        with open(lst, "w") as f:
            f.write(path + "\n")
        lists.append(lst)
    return lists[0], lists[1]


#: the dry run's stand-in for LeNet (the simulator runs LeNet's convolutions for minutes)
TINY_MNIST = """name: "tiny"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
#: the dry run's parity net: one of each common CUDA family at tiny shapes
TINY_PARITY = """force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 2 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def _lenet_solver(work: str, train_list: str, test_list: str, iters: int, test_iter: int,
                  tag: str) -> str:
    if SIM:
        net = TINY_MNIST
    else:
        with open(os.path.join(ROOT, "model_zoo", "lenet", "lenet_train_test.prototxt")) as f:
            net = f.read()
    # the two Data layers become HDF5Data layers over the lists (same tops, batch, phases)
    import re
    blocks = re.split(r"(?=^layer \{)", net, flags=re.M)
    out = []
    for b in blocks:
        if 'type: "Data"' in b:
            train = "TRAIN" in b
            batch = (4 if train else 10) if SIM else (64 if train else 100)
            b = (f'layer {{\n  name: "mnist"\n  type: "HDF5Data"\n  top: "data"\n  top: "label"\n'
                 f'  include {{ phase: {"TRAIN" if train else "TEST"} }}\n'
                 f'  hdf5_data_param {{ source: "{train_list if train else test_list}" '
                 f'batch_size: {batch} }}\n}}\n')
        out.append(b)
    net_path = os.path.join(work, f"lenet_{tag}.prototxt")
    with open(net_path, "w") as f:
        f.write("".join(out))
    with open(os.path.join(ROOT, "model_zoo", "lenet", "lenet_solver.prototxt")) as f:
        solver = f.read()
    solver = re.sub(r'^net: .*$', f'net: "{net_path}"', solver, flags=re.M)
    solver = re.sub(r"^max_iter: \d+", f"max_iter: {iters}", solver, flags=re.M)
    solver = re.sub(r"^test_iter: \d+", f"test_iter: {test_iter}", solver, flags=re.M)
    solver = re.sub(r"^test_interval: \d+", f"test_interval: {iters}", solver, flags=re.M)
    solver = re.sub(r"^snapshot: \d+", "snapshot: 0", solver, flags=re.M)
    solver = re.sub(r'^snapshot_prefix: .*$', f'snapshot_prefix: "{work}/lenet_{tag}"', solver,
                    flags=re.M)
    path = os.path.join(work, f"solver_{tag}.prototxt")
    with open(path, "w") as f:
        f.write(solver)
    return path


def _accuracy(stdout: str, stderr: str) -> dict:
    acc = [float(line.rsplit("=", 1)[1]) for line in stderr.splitlines()
           if "Test net output" in line and ": accuracy =" in line]
    return {"accuracy": acc[-1] if acc else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", action="store_true", help="copy MNIST into gpu_data/ and stop")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(ROOT, "gpu_results"))
    ap.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run")
    a = ap.parse_args(argv)
    if a.prepare:
        return prepare()
    run = Run(a.out, a.budget)
    run.summary["env"] = _env_info()
    run.write()
    py = sys.executable
    env = {"PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run.step("device", [py, "-m", "netdef_cli.main", "device-query", "--json"], 60, env)
    tests = ["tests/test_cuda_api.py", "tests/test_cuda_staging.py"] if SIM else [
        "tests/test_cuda_api.py", "tests/test_cuda_gemm.py", "tests/test_cuda_layers.py",
        "tests/test_cuda_train.py", "tests/test_cuda_staging.py", "tests/test_cuda_cli.py"]
    run.step("tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       f"--junitxml={os.path.join(a.out, 'tests.xml')}", *tests],
             120 if SIM else 200, env)
    import tempfile
    work = tempfile.mkdtemp(prefix="gpu_check_")
    if SIM:
        tiny = os.path.join(work, "tiny_parity.prototxt")
        with open(tiny, "w") as f:
            f.write(TINY_PARITY)
        nets = [tiny]
    else:
        nets = ["model_zoo/lenet/lenet.prototxt",
                "model_zoo/cifar10_quick/cifar10_quick.prototxt",
                "model_zoo/squeezenet_v1.1/deploy.prototxt", "model_zoo/resnet_18/deploy.prototxt"]
    shapes = {"model_zoo/lenet/lenet.prototxt": "data=64,1,28,28"}
    parity = []
    for n in nets:
        cmd = [py, "-m", "netdef_cli.main", "check-parity", n, "--json"]
        if n in shapes:
            cmd += ["--input-shape", shapes[n]]
        r = run.step("parity", cmd, 60 if SIM else 40, env, file="parity")
        parity.append({"net": n, "status": r.get("status"), "tail": r.get("tail")})
    run.summary["steps"]["parity"] = {"status": "pass" if all(p["status"] == "pass"
                                                              for p in parity) else "fail",
                                      "nets": parity}
    run.write()
    if os.path.isdir(os.path.join(DATA, "mnist")):
        iters, test_iter = (2, 1) if SIM else (2000, 100)
        n_train, n_test = (80, 20) if SIM else (60000, 10000)
        try:
            tr, te = _mnist_hdf5(work, n_train, n_test)
            gpu = run.step("lenet", [py, "-m", "netdef_cli.main", "train", "--solver",
                                     _lenet_solver(work, tr, te, iters, test_iter, "gpu"),
                                     "--gpu", "0"], 120 if SIM else 150, env, _accuracy,
                           file="lenet")
            cpu = run.step("lenet_cpu", [py, "-m", "netdef_cli.main", "train", "--solver",
                                         _lenet_solver(work, tr, te, iters, test_iter, "cpu")],
                           120 if SIM else 150, env, _accuracy, file="lenet")
            if gpu.get("accuracy") is not None and cpu.get("accuracy") is not None:
                gap = abs(gpu["accuracy"] - cpu["accuracy"]) * 100
                gpu["cpu_accuracy"] = cpu["accuracy"]
                gpu["gap_points"] = round(gap, 3)
                gpu["status"] = "pass" if gap <= 0.3 and gpu["status"] == "pass" else "fail"
            run.summary["steps"]["lenet"] = gpu
            run.summary["steps"].pop("lenet_cpu", None)
            run.write()
        except Exception as e:
            run.summary["steps"]["lenet"] = {"status": "error", "why": f"{type(e).__name__}: {e}"}
            run.write()
    else:
        run.summary["steps"]["lenet"] = {"status": "skipped",
                                         "why": "no gpu_data/mnist (run --prepare first)"}
        run.write()
    if SIM:
        run.summary["steps"]["bench"] = {"status": "skipped", "why": "dry run (simulator)"}
    else:
        run.step("bench", [py, "scripts/bench_gpu.py", "--gpu", "0", "--vs-torch", "--iters",
                           "10", "--warmup", "2", "--json"], 120, env)
    san = shutil.which("compute-sanitizer")
    if SIM or san is None:
        run.summary["steps"]["sanitizer"] = {"status": "skipped", "why": "dry run" if SIM else
                                             "no compute-sanitizer on PATH"}
    else:
        run.step("sanitizer", [san, "--tool", "memcheck", "--error-exitcode", "3", py, "-m",
                               "netdef_cli.main", "time", "--model",
                               "model_zoo/lenet/lenet.prototxt", "--gpu", "0", "--iterations",
                               "2", "--phase", "TEST"], 90, env)
    run.write()
    bad = [k for k, v in run.summary["steps"].items() if v.get("status") not in ("pass",
                                                                                  "skipped")]
    print(json.dumps({k: v.get("status") for k, v in run.summary["steps"].items()}))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
