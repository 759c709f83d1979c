"""CUDA backend (numba.cuda): device memory mirrors for blobs, kernels for the layer families,
solver updates on the device, and the dispatch table used by a Net in device mode.

Importing this package does not import ``numba.cuda``; :func:`device.cuda` does, after applying
the ``np.row_stack`` shim.  Under ``NUMBA_ENABLE_CUDASIM=1`` every kernel runs in the CUDA
simulator (one Python thread per CUDA thread: keep shapes tiny)."""
from .device import available, cuda, device_query, is_simulator, select_device  # noqa: F401
