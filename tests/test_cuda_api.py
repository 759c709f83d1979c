"""The CUDA backend uses numba-cuda's public API only: no driver internals anywhere in the
package, the single np.row_stack shim lets kernels compile where numpy has dropped it, and a
staging fallback is warned once and counted."""
import logging
import os
import re
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: numba's driver internals (numba-cuda 0.30 changed or removed them)
INTERNALS = re.compile(r"cudadrv|drvapi|USE_NV_BINDING|_stream_finalizer|\bdrv\.")


def test_no_driver_internals_in_the_package():
    hits = []
    for root, _, files in os.walk(os.path.join(REPO, "netdef")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(root, f)
                with open(path) as fh:
                    for n, line in enumerate(fh, 1):
                        if INTERNALS.search(line):
                            hits.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}")
    assert hits == []


def test_row_stack_shim_lets_a_kernel_compile_without_it(tmp_path):
    """numpy 2.5 has no np.row_stack, which numba-cuda 0.30.4 still calls while compiling:
    with it deleted, device.cuda() puts the shim in place before the first compile."""
    code = textwrap.dedent("""
        import numpy as np
        if hasattr(np, "row_stack"):
            del np.row_stack
        from netdef.backend.cuda.device import cuda
        c = cuda()
        assert np.row_stack is np.vstack
        from numba import float32
        def k(a):
            i = c.grid(1)
            if i < a.size:
                a[i] = 2 * a[i]
        try:
            ptx, _ = c.compile_ptx(k, (float32[:],), cc=(9, 0))
        except Exception as e:
            print("SKIP", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        else:
            print("PTX", ".entry" in ptx or ".visible" in ptx)
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    if r.stdout.startswith("SKIP"):
        pytest.skip(f"cuda.compile_ptx cannot run here (no NVVM?): {r.stdout.strip()}")
    assert r.stdout.strip() == "PTX True"


def test_staging_fallbacks_warn_once_and_count(caplog, monkeypatch):
    from netdef.backend.cuda import staging
    monkeypatch.setattr(staging, "FALLBACKS", {"stream": 0, "pinned": 0})
    with caplog.at_level(logging.WARNING, logger="netdef.cuda"):
        staging._fallback("stream", "no non-blocking stream (test)")
        staging._fallback("stream", "no non-blocking stream (test)")
    assert staging.FALLBACKS == {"stream": 2, "pinned": 0}
    assert [r.getMessage() for r in caplog.records] == [
        "input staging: no non-blocking stream (test)"]


def test_launches_are_recorded_and_compile_to_ptx(tmp_path):
    """ptx_check: launches under the simulator are recorded with numba's argument types and
    block size; without the simulator each signature compiles for sm_90 within its register
    budget (skipped visibly where the toolchain is missing)."""
    rec = tmp_path / "rec"
    code = textwrap.dedent(f"""
        import numpy as np
        from netdef.backend.cuda import ptx_check
        ptx_check.record({str(rec)!r})
        from netdef.backend.cuda import gemm, primitives as P
        c = P.cuda
        a = c.to_device(np.zeros(40, np.float32))
        P.fill(a, 1.5)
        A = c.to_device(np.ones(6, np.float32)); B = c.to_device(np.ones(6, np.float32))
        C = c.to_device(np.zeros(4, np.float32))
        gemm.gemm(False, True, 2, 2, 3, 1.0, A, B, 0.0, C)
        print(C.copy_to_host().tolist())
    """)
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[3.0, 3.0, 3.0, 3.0]"
    from netdef.backend.cuda.ptx_check import load
    launches = {(m, n): (args, t) for m, n, args, t in load(str(rec))}
    assert launches[("primitives", "_fill")][0] == [["array", "float32", 1, "C"],
                                                    ["scalar", "int64"], ["scalar", "float64"]]
    assert ("gemm", "gemm_kernel:<f4:01:0") in launches
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    r = subprocess.run([sys.executable, "-m", "netdef.backend.cuda.ptx_check", str(rec),
                        "--cc", "9.0"], capture_output=True, text=True, timeout=600, env=env)
    if r.stdout.startswith("SKIPPED"):
        pytest.skip(r.stdout.strip())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| gemm.gemm_kernel:<f4:01:0 | 9.0 | 256 |" in r.stdout
    assert "2 kernel signatures x 1 compute capabilities; 0 failures" in r.stdout
