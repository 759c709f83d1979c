"""netdef: Caffe-style declarative deep learning (prototxt/YAML nets on Numba kernels)."""
import os as _os

# OpenBLAS worker threads spin after each call and starve the Numba kernels that follow
# (measured 2-3x slower); let them sleep at once.  Only effective before numpy is imported.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# ... but not at once: Numba's OpenMP workers that sleep at the end of every parallel region
# take tens of microseconds to wake for the next (a frozen net runs one region per layer:
# MobileNet v1 batch 1 on 2 threads 11.3 -> 6.7 ms, SqueezeNet batch 8 44 -> 33 ms); a short
# spin (libgomp's count, about a millisecond on Zen 5) keeps them for the next layer without
# starving training's task threads (10x longer made them 1.5x slower).  Only effective
# before Numba's OpenMP layer starts.
_os.environ.setdefault("GOMP_SPINCOUNT", "30000")

# Under an MPI launcher the ranks of one machine share its cores: give each its share of
# BLAS and Numba threads (the launchers' local-size variables; explicit settings win).
_local = next((_os.environ[k] for k in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE",
                                        "MV2_COMM_WORLD_LOCAL_SIZE") if k in _os.environ), None)
if _local and _local.isdigit() and int(_local) > 1:
    _share = str(max(1, (_os.cpu_count() or 1) // int(_local)))
    for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS"):
        _os.environ.setdefault(_k, _share)

__version__ = "0.1.0"
