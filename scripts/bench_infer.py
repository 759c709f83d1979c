#!/usr/bin/env python
"""Frozen-model inference on the CPU: netdef's predictor against onnxruntime and OpenCV dnn.

For each net of ``model_zoo/`` (seeded random weights, He-scaled; BatchNorm with random
statistics) the deploy definition is frozen (:func:`netdef.deploy.freeze.freeze`), exported to
ONNX (what ``netdef export onnx`` writes) for onnxruntime and to prototxt + caffemodel (``netdef
export caffe``) for OpenCV's ``readNetFromCaffe``.  Every engine runs in its own process with the
same thread count (netdef: ``NUMBA_NUM_THREADS``; onnxruntime: ``intra_op_num_threads``, one
inter-op thread, sequential execution; OpenCV: ``cv2.setNumThreads``; OpenMP/OpenBLAS/MKL
variables set alike).  The processes stay loaded and take turns: in each round every engine
times ``--reps`` batches while the others wait on a pipe, with a pause between turns so spinning
worker threads go back to sleep.  A cell is the median of ``--rounds`` rounds (min-max shown);
the ratio is onnxruntime_ms / netdef_ms (>= 1: netdef is faster).  Outputs are checked against
netdef's: max |a - b| / max |b| <= 1e-4, or the run fails.  Engines that do not import are
skipped and said so.

``--first-call``: wall time from process start to printed top-5 for a frozen ResNet-50 at
batch 1 (``python -c 'netdef.deploy.load(...).predict(...)'``), cold (empty
``NUMBA_CACHE_DIR``) and warm (the same cache again).

    python scripts/bench_infer.py [--nets squeezenet_v1.1,resnet_18,...] [--batches 1,8]
        [--threads 1,2] [--rounds 7] [--reps 1] [--engines netdef,onnxruntime,opencv]
        [--json] [--first-call]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

NETS = ("squeezenet_v1.1", "resnet_18", "resnet_50", "mobilenet_v1", "mobilenet_v2",
        "googlenet")
ENGINES = ("netdef", "onnxruntime", "opencv")
TOLERANCE = 1e-4
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> str:
    """The register tiles netdef picks on this host (netdef.backend.cpu.microkernel)."""
    from netdef.backend.cpu import microkernel as MK
    return "AVX-512" if MK.host_lanes() == 16 else "AVX2 or narrower"


# -- preparing the models ------------------------------------------------------------------------
def random_weights(net, seed: int = 0) -> None:
    """Seeded weights that keep activations in range through a deep net: He-normal filters,
    small biases, BatchNorm with random mean and variance, Scale near 1."""
    import numpy as np
    rng = np.random.default_rng(seed)
    for lay in net.layers:
        blobs = lay.blobs
        if not blobs:
            continue
        if lay.type == "BatchNorm":
            c = blobs[0].data.shape[0]
            blobs[0].data = rng.normal(0, 0.1, c).astype(np.float32)
            blobs[1].data = rng.uniform(0.5, 1.5, c).astype(np.float32)
            blobs[2].data = np.ones(blobs[2].data.shape, np.float32)
            continue
        if lay.type == "Scale":
            c = blobs[0].data.size
            blobs[0].data = rng.uniform(0.5, 1.5, blobs[0].data.shape).astype(np.float32)
            if len(blobs) > 1:
                blobs[1].data = rng.normal(0, 0.1, c).astype(np.float32).reshape(
                    blobs[1].data.shape)
            continue
        w = blobs[0].data
        fan_in = max(1, int(np.prod(w.shape[1:])))
        blobs[0].data = (rng.standard_normal(w.shape) * np.sqrt(2.0 / fan_in)).astype(
            np.float32)
        for b in blobs[1:]:
            b.data = rng.normal(0, 0.05, b.data.shape).astype(np.float32)


def _unsaturate(net, data: str, x) -> None:
    """Scale the last learned layer before the final Softmax so its logits have a standard
    deviation of 2 on ``x``: random deep nets otherwise saturate the softmax (outputs of 0
    and 1), and the engines' outputs would agree whatever their errors."""
    import numpy as np
    last = len(net.layers) - 1
    if net.layers[last].type != "Softmax":
        return
    net.blobs[data].data = x
    net.forward()
    logits = net.bottoms[last][0]
    std = float(np.std(logits.data))
    # the last Convolution / InnerProduct: what follows it in these nets (ReLU, pooling)
    # scales with it
    producer = max(i for i in range(last)
                   if net.layers[i].type in ("Convolution", "InnerProduct"))
    for b in net.layers[producer].blobs:
        b.data = (b.data * np.float32(2.0 / max(std, 1e-12))).astype(np.float32)


def prepare(net_name: str, batch: int, tmp: str) -> dict:
    """Frozen file, ONNX and Caffe exports and an input batch of one (net, batch)."""
    import numpy as np

    from netdef.config import load_net
    from netdef.deploy.export_caffe import export_caffe
    from netdef.deploy.freeze import freeze
    from netdef.deploy.frozen import read_frozen
    from netdef.io.weights import net_to_proto
    from netdef.net import Net
    path = os.path.join(ROOT, "model_zoo", net_name, "deploy.prototxt")
    definition = load_net(path)
    inp = [lp for lp in definition.message.layer if lp.type == "Input"][0]
    chw = tuple(int(d) for d in inp.input_param.shape[0].dim[1:])
    shape = (batch,) + chw
    net = Net(definition, 1, input_shapes={inp.top[0]: shape})
    random_weights(net)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    _unsaturate(net, inp.top[0], x)
    res = freeze(definition, net_to_proto(net), input_shapes={inp.top[0]: shape})
    base = os.path.join(tmp, f"{net_name}_b{batch}")
    frozen = base + ".frozen"
    res.save(frozen, source="bench_infer")
    fm = read_frozen(frozen)
    out = {"frozen": frozen, "input": base + ".input.npy", "shape": list(shape)}
    np.save(out["input"], x)
    try:
        from netdef.deploy.export_onnx import export_onnx
        export_onnx(fm, base + ".onnx")
        out["onnx"] = base + ".onnx"
    except Exception as e:      # noqa: BLE001 -- onnx not installed: reported, engine skipped
        out["onnx_error"] = f"{type(e).__name__}: {e}"
    export_caffe(fm, base + ".prototxt", base + ".caffemodel")
    out["prototxt"], out["caffemodel"] = base + ".prototxt", base + ".caffemodel"
    return out


# -- one engine in its own process ---------------------------------------------------------------
def worker(engine: str, files: dict, threads: int, reps: int, out_npy: str) -> None:
    """Load, run twice (warm-up; the first output is saved for the cross-check), then time
    ``reps`` batches per "go" line read from stdin and print the mean ms of each turn."""
    import numpy as np
    x = np.load(files["input"])
    if engine == "netdef":
        from netdef import deploy
        pred = deploy.load(files["frozen"], backend="numba")
        name = pred.outputs[0]

        def run():
            return pred.predict(x)[name]
    elif engine == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(files["onnx"], so, providers=["CPUExecutionProvider"])
        iname = sess.get_inputs()[0].name

        def run():
            return sess.run(None, {iname: x})[0]
    elif engine == "opencv":
        import cv2
        cv2.setNumThreads(threads)
        dnn = cv2.dnn.readNetFromCaffe(files["prototxt"], files["caffemodel"])
        dnn.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        dnn.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

        def run():
            dnn.setInput(x)
            return dnn.forward()
    else:
        raise SystemExit(f"unknown engine {engine}")
    np.save(out_npy, np.asarray(run(), np.float32).reshape(x.shape[0], -1))
    run()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        t0 = time.perf_counter()
        for _ in range(reps):
            run()
        print(f"{(time.perf_counter() - t0) * 1e3 / reps:.4f}", flush=True)


def engine_available(engine: str) -> str | None:
    check = {"netdef": "import numba", "onnxruntime": "import onnxruntime",
             # OpenCV 5 dropped the Caffe importer
             "opencv": "import cv2; cv2.dnn.readNetFromCaffe"}[engine]
    r = subprocess.run([sys.executable, "-c", check], capture_output=True)
    return None if r.returncode == 0 else f"'{check}' fails"


def thread_env(threads: int) -> dict:
    env = dict(os.environ)
    for v in THREAD_VARS:
        env[v] = str(threads)
    return env


def bench_cell(files: dict, engines, threads: int, rounds: int, reps: int, pause: float,
               tmp: str) -> dict:
    import numpy as np
    procs, outs = {}, {}
    for e in engines:
        outs[e] = os.path.join(tmp, f"out_{e}.npy")
        procs[e] = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", e, "--files",
             json.dumps(files), "--threads", str(threads), "--reps", str(reps),
             "--out-npy", outs[e]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=thread_env(threads))
    try:
        for e, p in procs.items():          # loads run one at a time as well
            line = p.stdout.readline().strip()
            if line != "ready":
                p.kill()
                raise RuntimeError(f"{e} worker failed to start")
        times: dict = {e: [] for e in engines}
        for r in range(rounds):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for e in order:
                time.sleep(pause)
                procs[e].stdin.write("go\n")
                procs[e].stdin.flush()
                times[e].append(float(procs[e].stdout.readline()))
    finally:
        for p in procs.values():
            try:
                p.stdin.close()
            except OSError:
                pass
            p.wait(timeout=60)
    ref = np.load(outs["netdef"]) if "netdef" in outs else None
    cell = {}
    for e in engines:
        t = times[e]
        d = {"median_ms": statistics.median(t), "min_ms": min(t), "max_ms": max(t),
             "runs": len(t)}
        if ref is not None and e != "netdef":
            o = np.load(outs[e])
            d["rel_diff"] = float(np.abs(o - ref).max() / max(np.abs(ref).max(), 1e-30))
        cell[e] = d
    return cell


def fmt_cell(c: dict) -> str:
    return f"{c['median_ms']:.1f} ({c['min_ms']:.1f}-{c['max_ms']:.1f})"


def markdown(results: list, engines) -> str:
    head = ["net", "batch", "threads"] + [f"{e} ms" for e in engines]
    if "onnxruntime" in engines and "netdef" in engines:
        head.append("ort / netdef")
    if "opencv" in engines and "netdef" in engines:
        head.append("opencv / netdef")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r["net"], str(r["batch"]), str(r["threads"])]
        row += [fmt_cell(r["engines"][e]) for e in engines]
        nd = r["engines"].get("netdef", {}).get("median_ms")
        for e in ("onnxruntime", "opencv"):
            if e in engines and nd:
                row.append(f"{r['engines'][e]['median_ms'] / nd:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# -- first call ----------------------------------------------------------------------------------
FIRST_CALL = """
import sys, numpy as np
from netdef import deploy
p = deploy.load(sys.argv[1])
x = np.load(sys.argv[2])
y = p.predict(x)[p.outputs[0]]
print(p.top_k(y[0], 5))
"""


def first_call(tmp: str) -> dict:
    files = prepare("resnet_50", 1, tmp)
    cache = os.path.join(tmp, "numba_cache")
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, NUMBA_CACHE_DIR=cache)
    res = {}
    for kind in ("cold", "warm"):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", FIRST_CALL, files["frozen"], files["input"]],
                           env=env, capture_output=True, text=True)
        res[kind + "_s"] = round(time.perf_counter() - t0, 2)
        if r.returncode != 0:
            raise RuntimeError(f"first call failed: {r.stderr[-2000:]}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--pause", type=float, default=0.3,
                    help="seconds between turns (spinning threads go to sleep)")
    ap.add_argument("--engines", default=",".join(ENGINES))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--first-call", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--files", help=argparse.SUPPRESS)
    ap.add_argument("--out-npy", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, json.loads(a.files), int(a.threads), a.reps, a.out_npy)
        return
    info = {"cpu": cpu_model(), "simd": cpu_features(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        if a.first_call:
            info["first_call_resnet50_b1"] = first_call(tmp)
            print(json.dumps(info, indent=1))
            return
        engines, skipped = [], {}
        for e in a.engines.split(","):
            why = engine_available(e)
            if why:
                skipped[e] = why
            else:
                engines.append(e)
        info["skipped"] = skipped
        results, failed = [], []
        for net in a.nets.split(","):
            for batch in map(int, a.batches.split(",")):
                files = prepare(net, batch, tmp)
                eng = [e for e in engines if e != "onnxruntime" or "onnx" in files]
                for threads in map(int, a.threads.split(",")):
                    cell = bench_cell(files, eng, threads, a.rounds, a.reps, a.pause, tmp)
                    results.append({"net": net, "batch": batch, "threads": threads,
                                    "engines": cell})
                    for e, c in cell.items():
                        if c.get("rel_diff", 0.0) > TOLERANCE:
                            failed.append(f"{net} b{batch} t{threads}: {e} differs from "
                                          f"netdef by {c['rel_diff']:.2e}")
                    if not a.json:
                        print(markdown(results[-1:], eng).splitlines()[-1], flush=True)
        info["results"] = results
        if a.json:
            print(json.dumps(info, indent=1))
        else:
            print(f"\n{info['cpu']} ({info['simd']}, {info['cores']} cores); skipped: "
                  f"{skipped or 'none'}\n")
            print(markdown(results, engines))
        if failed:
            print("\n".join(failed), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
