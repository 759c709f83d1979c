"""pycaffe's process-wide state: CPU/GPU mode, device, random seed, the solver count/rank
helpers, ``Timer``, ``init_log``/``log``.

``set_mode_gpu()``/``set_device(i)`` make every Net and Solver built afterwards run on the CUDA
backend (netdef.backend.cuda); without a usable GPU (or ``NUMBA_ENABLE_CUDASIM=1``) they raise
:class:`netdef.backend.cuda.device.NoDeviceError` saying why.  Nothing here imports numba.cuda
until GPU mode is asked for.
"""
from __future__ import annotations

import logging
import time

import numpy as np

CPU, GPU = 0, 1

_state = {"mode": CPU, "device": 0, "seed": None, "rng": None,
          "solver_count": 1, "solver_rank": 0, "multiprocess": False}


def set_mode_cpu() -> None:
    _state["mode"] = CPU


def _check_gpu(device_id: int) -> None:
    from ..backend.cuda.device import select_device
    select_device(device_id)          # NoDeviceError: no driver, no GPU, no such device


def set_mode_gpu() -> None:
    _check_gpu(_state["device"])
    _state["mode"] = GPU


def set_device(device_id: int) -> None:
    """The CUDA device of GPU mode (checked now when GPU mode is on, else by set_mode_gpu)."""
    device_id = int(device_id)
    if _state["mode"] == GPU:
        _check_gpu(device_id)
    _state["device"] = device_id


def mode() -> int:
    return _state["mode"]


def device() -> int | None:
    """The device new nets run on, or None in CPU mode."""
    return _state["device"] if _state["mode"] == GPU else None


def set_random_seed(seed: int) -> None:
    """Seed the generator that fills the weights of nets built afterwards (and the solvers
    whose files set no ``random_seed``), as Caffe's global seed."""
    _state["seed"] = int(seed)
    _state["rng"] = np.random.default_rng(int(seed))


def net_rng() -> np.random.Generator:
    """The generator for the next Net: the seeded one after set_random_seed, else fresh."""
    rng = _state["rng"]
    return rng if rng is not None else np.random.default_rng()


def random_seed() -> int | None:
    return _state["seed"]


# -- multi-solver helpers (NCCL in Caffe; netdef's data parallelism is MPI: mpiexec) --------
def solver_count() -> int:
    return _state["solver_count"]


def set_solver_count(n: int) -> None:
    _state["solver_count"] = int(n)


def solver_rank() -> int:
    return _state["solver_rank"]


def set_solver_rank(r: int) -> None:
    _state["solver_rank"] = int(r)


def set_multiprocess(b: bool) -> None:
    _state["multiprocess"] = bool(b)


def has_nccl() -> bool:
    """False: netdef trains data-parallel over MPI (``mpiexec -n K netdef train``), not NCCL."""
    return False


# -- logging and timing -------------------------------------------------------------------
_log = logging.getLogger("netdef.caffe")


def init_log(level: int = 0, stderr: bool = True) -> None:
    """glog-format log lines on stderr for netdef's messages (solvers, layers), as pycaffe's
    ``init_log``; ``level`` is glog's minimum level (0 INFO, 1 WARNING, 2 ERROR)."""
    from netdef_cli.logfmt import setup_logging
    setup_logging({0: logging.INFO, 1: logging.WARNING}.get(int(level), logging.ERROR))


def log(msg: str) -> None:
    _log.info(msg)


class Timer:
    """pycaffe's Timer: ``start()``, ``stop()``, ``ms`` (the last start..stop, or start..now
    while running)."""

    def __init__(self):
        self._t0 = None
        self._ms = 0.0
        self.running = False

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self._ms = (time.perf_counter() - self._t0) * 1e3
            self.running = False

    @property
    def ms(self) -> float:
        if self.running:
            return (time.perf_counter() - self._t0) * 1e3
        return self._ms
