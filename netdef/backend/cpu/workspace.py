"""CPU plumbing shared by the layers' kernels: the process-wide scratch buffers (like Caffe's
shared col buffer: they live only during one forward or backward call), the threshold below
which kernels run on one thread, and the chunk and GEMM tuning constants of the convolutions
(also read by the frozen-model predictor and the CUDA backend)."""
from __future__ import annotations

import contextlib

import numpy as np

#: elements of the im2col buffer per chunk of the batch (a chunk holds at least one image)
COL_CHUNK_ELEMENTS = 1 << 25

_WORKSPACE: dict = {}


def scratch(tag: str, size: int, dtype) -> np.ndarray:
    """A 1-D scratch array of ``size`` elements (contents undefined), reused between calls."""
    dtype = np.dtype(dtype)
    key = (tag, dtype.str)
    buf = _WORKSPACE.get(key)
    if buf is None or buf.size < size:
        buf = np.empty(max(size, 1), dtype=dtype)
        _WORKSPACE[key] = buf
    return buf[:size]


#: below this much work (elements touched) kernels run on one thread: a parallel launch costs
#: more than it saves, and far more on a loaded machine
PARALLEL_MIN_WORK = 1 << 15


@contextlib.contextmanager
def threads_for(work: int):
    """Run the enclosed kernels single-threaded when ``work`` is small."""
    if work >= PARALLEL_MIN_WORK:
        yield
        return
    import numba
    prev = numba.get_num_threads()
    if prev == 1:
        yield
        return
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(prev)


#: the fused GEMM convolution groups images so that one GEMM has at least this many columns
GEMM_MIN_COLUMNS = 256
#: ... and its per-thread im2col buffer stays under this many bytes
GEMM_COL_BYTES = 4 << 20
#: a convolution's batch is split into this many tasks per thread (threads take tasks as they
#: become free: some balance when another process takes a core for a while)
TASKS_PER_THREAD = 2
#: weights at least this large (elements) get one backward task per thread: every task but
#: the first needs a weight-sized partial gradient
LARGE_WEIGHT = 1 << 20


def chunk(n: int, per_image: int) -> int:
    return max(1, min(n, COL_CHUNK_ELEMENTS // max(1, per_image)))
