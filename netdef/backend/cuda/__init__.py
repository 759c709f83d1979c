"""CUDA backend (numba-cuda's public API): device memory mirrors for blobs (memory, staging),
one module per layer family with its kernels and implementations (vision, neuron,
normalization, common, utility, loss, recurrent; shared pieces in primitives, GEMMs in gemm),
the table a Net in device mode uses (dispatch), solver updates on the device (solver).

Importing this package does not import ``numba.cuda``; :func:`device.cuda` does, after applying
the ``np.row_stack`` shim.  Under ``NUMBA_ENABLE_CUDASIM=1`` every kernel runs in the CUDA
simulator (one Python thread per CUDA thread: keep shapes tiny)."""
from .device import available, cuda, device_query, is_simulator, select_device  # noqa: F401
