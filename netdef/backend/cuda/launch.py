"""Every kernel launch of the CUDA backend goes through :class:`Kernel` (``@kernel`` instead of
``@cuda.jit``): numba's launch configurations are made once per (grid, block) and reused, each
launch is counted in :data:`netdef.backend.cuda.counters.STATS` ``["launches"]``, and with
:func:`counting` ``(dry=True)`` launches are counted without running the kernel bodies (what
``scripts/bench_gpu.py --simulate`` counts: the simulator runs every block's threads as Python,
far too slow for a real batch).  On a GPU the kernels are compiled with ``cache=True``
(numba-cuda's on-disk cache, next to the module); the simulator has no compilation to cache.

Host synchronisations (:func:`host_sync`) and layers that ran on the CPU (:func:`cpu_fallback`)
are counted beside the transfers.
"""
from __future__ import annotations

import contextlib

from .device import cuda as _get_cuda, is_simulator
from .counters import STATS

cuda = _get_cuda()

#: launches are counted but not executed (kernel bodies skipped), see :func:`counting`
_DRY = [False]
#: while :func:`counting`: launches per :data:`WHERE` (layer name, "forward"/"backward"/...)
_BY: list = [None]
#: what is running now, set by the device net and the solver (a label for the counts)
WHERE = ["", ""]


class _Launch:
    """One (grid, block) configuration of a kernel: counted, run unless dry."""
    __slots__ = ("run", "name")

    def __init__(self, run, name):
        self.run = run
        self.name = name

    def __call__(self, *args):
        STATS["launches"] += 1
        by = _BY[0]
        if by is not None:
            per = by.setdefault(f"{WHERE[0]}:{WHERE[1]}", {})
            per[self.name] = per.get(self.name, 0) + 1
        if _DRY[0]:
            return None
        return self.run(*args)


class Kernel:
    """A ``cuda.jit`` kernel launched as ``k[grid, block](*args)``."""

    def __init__(self, fn):
        sim = is_simulator()
        self.dispatcher = cuda.jit(fn) if sim else cuda.jit(cache=True)(fn)
        self.py_func = fn
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        # the simulator's kernel[config] configures the kernel object itself and returns it:
        # nothing there to keep
        self._configs: dict | None = None if sim else {}

    def __getitem__(self, config):
        if self._configs is None:
            return _Launch(self.dispatcher[config], self.__name__)
        try:
            return self._configs[config]
        except KeyError:
            launch = self._configs[config] = _Launch(self.dispatcher[config], self.__name__)
            return launch
        except TypeError:          # an unhashable configuration (a list): not cached
            return _Launch(self.dispatcher[config], self.__name__)


def kernel(fn) -> Kernel:
    """Decorator: ``fn`` as a counted CUDA kernel (see :class:`Kernel`)."""
    return Kernel(fn)


def host_sync(kind: str = "host_syncs") -> None:
    """Count one point where the host waits for the device (``kind``: ``host_syncs``, or the
    kinds of their own: ``cpu_fallbacks``, ``mpi``)."""
    STATS[kind] = STATS.get(kind, 0) + 1


def cpu_fallback() -> None:
    """Count one layer run on the CPU inside a device net (its inputs come to the host)."""
    host_sync("cpu_fallbacks")


def at(layer: str, phase: str) -> None:
    """Label the launches that follow (``layer``, ``phase``) for :func:`counting`."""
    WHERE[0] = layer
    WHERE[1] = phase


@contextlib.contextmanager
def counting(dry: bool = False):
    """Reset the counters and yield {"layer:phase": {kernel: launches}}; with ``dry``, the
    launches inside are counted and not executed."""
    for k in STATS:
        STATS[k] = 0
    old = _DRY[0], _BY[0]
    _DRY[0] = bool(dry)
    by = _BY[0] = {}
    try:
        yield by
    finally:
        _DRY[0], _BY[0] = old


def is_dry() -> bool:
    return _DRY[0]
