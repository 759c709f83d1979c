"""netdef: Caffe-style declarative deep learning (prototxt/YAML nets on Numba kernels)."""
import os as _os

# OpenBLAS worker threads spin after each call and starve the Numba kernels that follow
# (measured 2-3x slower); let them sleep at once.  Only effective before numpy is imported.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "1")
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
