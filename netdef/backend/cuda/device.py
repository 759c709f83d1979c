"""Device selection and the numba.cuda import.

``numba.cuda`` is imported lazily (never at ``import netdef``): the numpy ``row_stack`` shim is
applied first, because numba-cuda compiles kernels through code that still calls
``np.row_stack``, which numpy 2.x removed."""
from __future__ import annotations

import os

import numpy as np

from ...errors import NetdefError

_CUDA = None
_SELECTED: int | None = None


class NoDeviceError(NetdefError):
    """No CUDA GPU, no driver, or the requested device does not exist."""


class DeviceMemoryError(NetdefError):
    """The GPU has not enough free memory for a net (checked before allocating) or an
    allocation failed with CUDA's out-of-memory error."""


def free_memory() -> int | None:
    """Free bytes on the current device (None when unknown; the simulator reports none)."""
    if is_simulator():
        return None
    try:
        free, _ = cuda().current_context().get_memory_info()
        return int(free)
    except Exception:
        return None


def _shim_numpy() -> None:
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


def cuda():
    """The ``numba.cuda`` module (imported on first use, after the numpy shim)."""
    global _CUDA
    if _CUDA is None:
        _shim_numpy()
        import sys
        from numba.core import config
        if "numba.cuda" not in sys.modules:
            # the environment decides, even when numba was imported before it was set
            config.ENABLE_CUDASIM = 1 if is_simulator() else 0
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")    # numba's built-in CUDA target deprecation note
            from numba import cuda as _c
        _CUDA = _c
    return _CUDA


def is_simulator() -> bool:
    """Whether kernels run in numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1)."""
    import sys
    if "numba.cuda" in sys.modules:
        from numba.core import config
        return bool(config.ENABLE_CUDASIM)
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def available() -> bool:
    """Whether a CUDA device (or the simulator) can be used; never hangs, never raises."""
    try:
        return bool(cuda().is_available())
    except Exception:
        return False


def _why_unavailable() -> str:
    try:
        c = cuda()
    except Exception as e:      # pragma: no cover - numba without CUDA support
        return f"numba.cuda cannot be imported ({e})"
    try:
        len(c.gpus)
    except Exception as e:
        why = (str(e).splitlines() or [""])[0].strip().rstrip(":").strip()
        return f"no usable CUDA driver or GPU ({why or type(e).__name__})"
    return "no CUDA GPU found"


def select_device(device_id: int = 0) -> int:
    """Make ``device_id`` current; :class:`NoDeviceError` (one line) when impossible."""
    global _SELECTED
    device_id = int(device_id)
    if device_id < 0:
        raise NoDeviceError(f"GPU id {device_id} is negative")
    if not available():
        raise NoDeviceError(f"GPU {device_id}: {_why_unavailable()}")
    c = cuda()
    n = len(c.gpus)
    if device_id >= n:
        raise NoDeviceError(f"GPU {device_id} does not exist ({n} device(s) found)")
    if _SELECTED != device_id:
        c.select_device(device_id)
        _SELECTED = device_id
    return device_id


def device_query(device_id: int = 0) -> dict:
    """The card's properties (Caffe's ``device_query``)."""
    select_device(device_id)
    c = cuda()
    if is_simulator():
        return {"device": device_id, "name": "CUDA simulator (NUMBA_ENABLE_CUDASIM=1)",
                "simulator": True}
    dev = c.get_current_device()
    props = {"device": device_id, "name": dev.name.decode() if isinstance(dev.name, bytes)
             else str(dev.name), "compute_capability": list(dev.compute_capability)}
    for attr in ("MULTIPROCESSOR_COUNT", "MAX_THREADS_PER_BLOCK", "MAX_SHARED_MEMORY_PER_BLOCK",
                 "WARP_SIZE", "CLOCK_RATE", "MEMORY_CLOCK_RATE", "GLOBAL_MEMORY_BUS_WIDTH",
                 "L2_CACHE_SIZE", "MAX_REGISTERS_PER_BLOCK"):
        try:
            props[attr.lower()] = int(getattr(dev, attr))
        except Exception:
            pass
    try:
        free, total = c.current_context().get_memory_info()
        props["total_memory_bytes"], props["free_memory_bytes"] = int(total), int(free)
    except Exception:
        pass
    return props
