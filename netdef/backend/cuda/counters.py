"""The CUDA backend's process-wide counters -- host<->device transfers (counted by
:mod:`.memory` and every upload), kernel launches, host syncs and layers run on the CPU (counted
by :mod:`.launch`) -- and its one device allocator, :func:`device_empty`.  Imported by every
other CUDA module, it imports none of them."""
from __future__ import annotations

import numpy as np

from .device import DeviceMemoryError, cuda, free_memory

#: the counters (``counting`` in :mod:`.launch` resets them)
STATS = {"h2d": 0, "d2h": 0, "h2d_bytes": 0, "d2h_bytes": 0, "launches": 0, "host_syncs": 0,
         "cpu_fallbacks": 0}


def count_h2d(nbytes: int) -> None:
    STATS["h2d"] += 1
    STATS["h2d_bytes"] += int(nbytes)


def count_d2h(nbytes: int) -> None:
    STATS["d2h"] += 1
    STATS["d2h_bytes"] += int(nbytes)


def device_empty(n: int, dtype):
    """``cuda.device_array(max(n, 1), dtype)``; CUDA's out-of-memory error becomes a one-line
    :class:`~netdef.backend.cuda.device.DeviceMemoryError` (exit 2 on the command line)."""
    n = max(int(n), 1)
    try:
        return cuda().device_array(n, dtype=dtype)
    except Exception as e:
        text = str(e)
        if isinstance(e, MemoryError) or "OUT_OF_MEMORY" in text or "out of memory" in text:
            free = free_memory()
            left = f", {free / 2**20:.1f} MiB free" if free is not None else ""
            raise DeviceMemoryError(f"GPU out of memory allocating "
                                    f"{n * np.dtype(dtype).itemsize / 2**20:.1f} MiB{left}; "
                                    f"use a smaller batch") from None
        raise
