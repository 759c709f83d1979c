"""Test-session settings that must precede the first numpy import: two pytest-xdist workers
share the two cores, so BLAS runs one thread per worker and its threads never spin (a spinning
OpenBLAS pool made InnerProduct steps ~30x slower on a loaded machine)."""
import os

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pytest_configure(config):
    # NETDEF_CUDA_RECORD=DIR: record every CUDA kernel launch (signature, block size) for the
    # compile check of netdef.backend.cuda.ptx_check (each xdist worker writes its own file)
    if os.environ.get("NETDEF_CUDA_RECORD"):
        from netdef.backend.cuda.ptx_check import maybe_record
        maybe_record()
