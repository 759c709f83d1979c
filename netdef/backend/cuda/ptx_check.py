"""Real compilation of the CUDA kernels without a GPU.

The simulator runs kernels as Python, so it never compiles them: a kernel that NVVM rejects,
spills registers or needs too many of them would only show on a GPU.  This module closes that
gap in two steps:

1. :func:`record` (in a process under ``NUMBA_ENABLE_CUDASIM=1``, e.g. the CUDA test suite with
   ``NETDEF_CUDA_RECORD=DIR``) wraps every kernel of the CUDA modules so that each launch
   records the kernel, its argument types (numba's, as a real launch would type them) and its
   block size, written to ``DIR/kernels-<pid>.jsonl`` at exit;
2. :func:`check` (in a process without the simulator) compiles each recorded signature with
   ``cuda.compile_ptx`` for the given compute capabilities, runs ``ptxas -v`` on the PTX and
   reports registers, shared memory and spills per kernel; a compile error, a spill, or more
   registers than two resident blocks per SM allow (65536 / (2 x block size) per thread) is a
   failure.  ``python -m netdef.backend.cuda.ptx_check DIR`` prints the table.
"""
from __future__ import annotations

import atexit
import glob
import importlib
import json
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

#: the modules whose module-level kernels are recorded (and compiled)
MODULES = ("primitives", "gemm", "vision", "neuron", "normalization", "common", "utility", "loss",
           "recurrent", "solver")
#: registers of an SM (every compute capability netdef targets: 7.5, 8.0, 9.0)
SM_REGISTERS = 65536
CCS = ((9, 0), (8, 0), (7, 5))


def _arg_spec(a) -> list:
    if isinstance(a, (bool, np.bool_)):
        return ["scalar", "bool"]
    if isinstance(a, np.generic):
        return ["scalar", str(a.dtype)]
    if isinstance(a, int):
        return ["scalar", "int64"]
    if isinstance(a, float):
        return ["scalar", "float64"]
    if hasattr(a, "dtype") and hasattr(a, "ndim") and hasattr(a, "shape"):
        try:
            c = a.is_c_contiguous() if hasattr(a, "is_c_contiguous") else \
                bool(a.flags["C_CONTIGUOUS"])
        except Exception:
            c = False
        return ["array", str(np.dtype(a.dtype)), int(a.ndim), "C" if c else "A"]
    raise TypeError(f"cannot record a kernel argument of type {type(a).__name__}")


def _threads(block) -> int:
    if isinstance(block, (tuple, list)):
        n = 1
        for b in block:
            n *= int(b)
        return n
    return int(block)


class _Recording:
    """A kernel whose launches are recorded (the launch itself is the kernel's)."""

    def __init__(self, kern, module: str, name: str, sink: set):
        self._kern, self._module, self._name, self._sink = kern, module, name, sink

    def __getitem__(self, config):
        launch = self._kern[config]
        block = config[1] if isinstance(config, tuple) and len(config) > 1 else 1
        key = (self._module, self._name)

        def run(*args):
            self._sink.add(json.dumps([*key, [_arg_spec(a) for a in args], _threads(block)]))
            return launch(*args)
        return run

    def __getattr__(self, attr):
        return getattr(self._kern, attr)


def _is_kernel(obj) -> bool:
    from .launch import Kernel
    return isinstance(obj, Kernel)


def record(out_dir: str) -> set:
    """Wrap the kernels of :data:`MODULES` (and the GEMM kernels made later) so that their
    launches are recorded; written to ``out_dir`` when the process exits."""
    sink: set = set()
    for m in MODULES:
        mod = importlib.import_module(f"{__package__}.{m}")
        for name, obj in list(vars(mod).items()):
            if _is_kernel(obj):
                setattr(mod, name, _Recording(obj, m, name, sink))
    gemm = importlib.import_module(f"{__package__}.gemm")
    make = gemm.make_kernel

    def make_recorded(dtype, config, trans=None, layout=0):
        kern, nt = make(dtype, config, trans, layout)
        name = (f"gemm_kernel:{np.dtype(dtype).str}:{'' if trans is None else '%d%d' % trans}"
                f":{int(layout)}")
        return _Recording(kern, "gemm", name, sink), nt
    gemm.make_kernel = make_recorded
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"kernels-{os.getpid()}.jsonl")

    def write():
        with open(path, "w") as f:
            for line in sorted(sink):
                f.write(line + "\n")
    atexit.register(write)
    return sink


def maybe_record() -> None:
    """:func:`record` into ``$NETDEF_CUDA_RECORD`` when it is set (tests/conftest.py)."""
    d = os.environ.get("NETDEF_CUDA_RECORD")
    if d:
        record(d)


def load(out_dir: str) -> list:
    """The recorded launches: unique (module, kernel, arg specs, largest block size)."""
    seen: dict = {}
    for path in glob.glob(os.path.join(out_dir, "kernels-*.jsonl")):
        with open(path) as f:
            for line in f:
                module, name, args, threads = json.loads(line)
                key = (module, name, json.dumps(args))
                seen[key] = max(seen.get(key, 0), threads)
    return [(m, n, json.loads(a), t) for (m, n, a), t in sorted(seen.items())]


def _numba_type(spec):
    from numba import types
    if spec[0] == "scalar":
        return types.boolean if spec[1] == "bool" else getattr(types, spec[1])
    _, dtype, ndim, layout = spec
    return types.Array(getattr(types, np.dtype(dtype).name), ndim, layout)


def _dispatcher(module: str, name: str):
    if module == "gemm" and name.startswith("gemm_kernel:"):
        # at the GPU's default tile, not the simulator's
        gemm = importlib.import_module(f"{__package__}.gemm")
        _, dt, tr, layout = name.split(":")
        trans = (int(tr[0]), int(tr[1])) if tr else None
        return gemm.make_kernel(np.dtype(dt), gemm.default_config(np.dtype(dt)), trans,
                                int(layout))[0]
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


def _threads_on_gpu(module: str, name: str, recorded: int) -> int:
    """The block size of a launch on a GPU: the GEMM's from its default tile; every other
    kernel launches at most TPB = RED = 256 threads there (the simulator's blocks are 32)."""
    if module == "gemm" and name.startswith("gemm_kernel:"):
        gemm = importlib.import_module(f"{__package__}.gemm")
        BM, BN, _, TM, TN = gemm.default_config(np.dtype(name.split(":")[1]))
        return (BM // TM) * (BN // TN)
    return 256


_INFO = re.compile(r"ptxas info\s*: Used (\d+) registers(?:.*?(\d+) bytes smem)?")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def ptxas_report(ptx: str, cc, ptxas: str) -> dict:
    """Registers, shared memory and spill bytes of the (one) kernel in ``ptx``."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", "-o",
                            os.path.join(d, "k.cubin"), src], capture_output=True, text=True,
                           timeout=300)
    if r.returncode != 0:
        raise RuntimeError((r.stderr.strip().splitlines() or ["ptxas failed"])[-1])
    regs = smem = spills = 0
    for line in r.stderr.splitlines():
        m = _INFO.search(line)
        if m:
            regs = max(regs, int(m.group(1)))
            smem = max(smem, int(m.group(2) or 0))
        m = _SPILL.search(line)
        if m:
            spills += int(m.group(1)) + int(m.group(2))
    return {"registers": regs, "smem": smem, "spill_bytes": spills}


def check(launches: list, ccs=CCS, ptxas: str | None = None) -> tuple[list, list]:
    """Compile every recorded launch for ``ccs`` and run ptxas; (rows, failures)."""
    from .device import cuda
    c = cuda()
    ptxas = ptxas or shutil.which("ptxas")
    rows, failures = [], []
    for module, name, args, threads in launches:
        threads = _threads_on_gpu(module, name, threads)
        sig = tuple(_numba_type(s) for s in args)
        budget = SM_REGISTERS // (2 * max(threads, 1))
        for cc in ccs:
            row = {"kernel": f"{module}.{name}", "cc": f"{cc[0]}.{cc[1]}",
                   "signature": ", ".join(str(t) for t in sig), "threads": threads,
                   "budget": budget}
            try:
                disp = _dispatcher(module, name)
                ptx, _ = c.compile_ptx(disp.py_func, sig, cc=cc)
                if ptxas:
                    row.update(ptxas_report(ptx, cc, ptxas))
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            rows.append(row)
            if "error" in row:
                failures.append(f"{row['kernel']} sm_{cc[0]}{cc[1]} ({row['signature']}): "
                                f"{row['error']}")
            elif row.get("spill_bytes"):
                failures.append(f"{row['kernel']} sm_{cc[0]}{cc[1]}: spills "
                                f"{row['spill_bytes']} bytes")
            elif row.get("registers", 0) > budget:
                failures.append(f"{row['kernel']} sm_{cc[0]}{cc[1]}: {row['registers']} "
                                f"registers > {budget} (block of {threads} threads)")
    return rows, failures


def toolchain_missing() -> str | None:
    """What the check cannot run without (ptxas, or NVVM/NVRTC for compile_ptx), or None."""
    if shutil.which("ptxas") is None:
        return "ptxas on PATH (a CUDA toolkit, or the nvidia-cuda-nvcc wheel)"
    from .device import cuda
    c = cuda()

    def k(a):
        a[0] = 1
    try:
        from numba import types
        c.compile_ptx(k, (types.Array(types.float32, 1, "C"),), cc=(9, 0))
    except Exception as e:
        return f"cuda.compile_ptx ({type(e).__name__}: {str(e).strip().splitlines()[0]})"
    return None


def table(rows: list) -> str:
    """Markdown: kernel, cc, registers / budget, shared memory, spills."""
    out = ["| kernel | cc | threads | registers (budget) | smem bytes | spill bytes |",
           "|---|---|---|---|---|---|"]
    best: dict = {}
    for r in rows:
        key = (r["kernel"], r["cc"])
        if key not in best or r.get("registers", 0) > best[key].get("registers", 0):
            best[key] = r
    for (k, cc), r in sorted(best.items()):
        regs = r.get("registers", "?") if "error" not in r else "error"
        out.append(f"| {k} | {cc} | {r['threads']} | {regs} ({r['budget']}) | "
                   f"{r.get('smem', '')} | {r.get('spill_bytes', '')} |")
    return "\n".join(out)


def main(argv=None) -> int:
    import argparse
    import sys
    ap = argparse.ArgumentParser(prog="python -m netdef.backend.cuda.ptx_check",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("record_dir")
    ap.add_argument("--cc", action="append", default=None, help="e.g. 9.0 (repeatable)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        print("error: run the compile check without NUMBA_ENABLE_CUDASIM", file=sys.stderr)
        return 2
    ccs = tuple(tuple(int(x) for x in s.split(".")) for s in a.cc) if a.cc else CCS
    why = toolchain_missing()
    if why:
        print(f"SKIPPED: the compile check needs {why}")
        return 0
    launches = load(a.record_dir)
    if not launches:
        print(f"error: no recorded launches in {a.record_dir}", file=sys.stderr)
        return 2
    rows, failures = check(launches, ccs)
    print(table(rows))
    print(f"{len(launches)} kernel signatures x {len(ccs)} compute capabilities; "
          f"{len(failures)} failures")
    for f in failures:
        print(f"FAIL {f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
