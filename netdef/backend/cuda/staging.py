"""Asynchronous upload of a DeviceNet's input batch: pinned, double-buffered, own stream.

A *staged* blob is a top of a host-run data layer whose first reader is a CUDA layer and which
the net's first whole forward (synchronous, lazy uploads) uploaded exactly once — so staging
changes when the copy starts, never how many copies there are.  From then on, right after the
data layer's forward, each staged blob whose host copy is current (head CPU) is copied into
pinned host buffer ``k`` and sent with ``copy_to_device(stream=copy_stream)`` into device buffer
``k``; an event is recorded on the copy stream.  The blob's device mirror becomes buffer ``k``
(head SYNCED) with that event *pending*: its first device access makes the compute (default)
stream wait for it (:meth:`DeviceBlob._to_device`), without blocking the host.  ``k``
alternates: before buffer ``k`` is written again the copy stream waits for an event recorded
on the compute stream once every read of it was issued, and the host waits for buffer ``k``'s
previous upload before refilling its pinned twin.

On a GPU the copy stream is a non-blocking driver stream handed to numba through the public
``cuda.external_stream``, so the copy overlaps what the compute stream still runs (the previous
step's backward and update, the layers before the loss for a label); a plain ``cuda.stream()``
(the fallback: warned once and counted in :data:`FALLBACKS`) is serialised with the legacy
default stream.  The simulator runs streams and events synchronously.

``NETDEF_CUDA_SYNC_INPUT=1`` turns staging off: inputs go up on first device read, as before.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from .device import cuda, is_simulator
from .counters import count_h2d, device_empty
from .memory import CPU, SYNCED, DeviceBlob

log = logging.getLogger("netdef.cuda")

#: the compute stream: every kernel and synchronous copy runs on the default stream
COMPUTE = 0


def enabled() -> bool:
    """Whether input staging is on (``NETDEF_CUDA_SYNC_INPUT`` unset, empty or 0)."""
    return os.environ.get("NETDEF_CUDA_SYNC_INPUT", "") in ("", "0")


def _event(c):
    return c.event() if is_simulator() else c.event(timing=False)


#: fallbacks taken, by kind ("stream": no non-blocking copy stream, "pinned": pageable host
#: buffers); each kind is logged as a warning the first time
FALLBACKS: dict[str, int] = {"stream": 0, "pinned": 0}


def _fallback(kind: str, what: str) -> None:
    if not FALLBACKS[kind]:
        log.warning("input staging: %s", what)
    FALLBACKS[kind] += 1


_STREAMS: dict = {}      # context handle -> the process's non-blocking copy stream


def _copy_stream(c):
    """(stream, kind): a non-blocking stream on a GPU when possible (one per context, shared
    by every device net of the process), else ``cuda.stream()``."""
    if not is_simulator():
        try:
            key = id(c.current_context())
            if key not in _STREAMS:
                _STREAMS[key] = _nonblocking_stream(c)
            return _STREAMS[key], "non-blocking"
        except Exception as e:
            _fallback("stream", f"no non-blocking stream ({e}); the input copies use "
                                f"cuda.stream() and wait for the compute stream")
    return c.stream(), "simulator" if is_simulator() else "blocking"


def _nonblocking_stream(c):
    """A CU_STREAM_NON_BLOCKING stream made by the CUDA driver (through cuda-bindings when
    installed, else libcuda through ctypes) in numba's current context, handed to numba with
    the public ``cuda.external_stream`` (numba has no flag for it); it lives as long as the
    context (:func:`_copy_stream` makes one per context)."""
    c.current_context()                 # numba's context is current on this thread
    try:
        from cuda.bindings import driver as cb
    except ImportError:
        cb = None
    if cb is not None:
        err, handle = cb.cuStreamCreate(cb.CUstream_flags.CU_STREAM_NON_BLOCKING.value)
        if err != cb.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cuStreamCreate: {err}")
        ptr = int(handle)
    else:
        import ctypes
        import ctypes.util
        lib = ctypes.CDLL(ctypes.util.find_library("cuda") or "libcuda.so.1")
        h = ctypes.c_void_p()
        rc = lib.cuStreamCreate(ctypes.byref(h), ctypes.c_uint(1))   # CU_STREAM_NON_BLOCKING
        if rc:
            raise RuntimeError(f"cuStreamCreate returned {rc}")
        ptr = h.value
    return c.external_stream(ptr)


def _pinned(c, n, dtype):
    try:
        return c.pinned_array(n, dtype=dtype)
    except Exception as e:
        _fallback("pinned", f"no pinned host memory ({e}); copies from pageable memory are "
                            f"synchronous")
        return np.empty(n, dtype=dtype)


def _first_reader_on_device(net, impls, i, blob) -> bool:
    for j in range(i + 1, len(net.layers)):
        if any(b is blob for b in net.bottoms[j]):
            return impls[j] is not None
    return False


class _Buffers:
    """One blob's two pinned host buffers, two device buffers and their events."""
    __slots__ = ("n", "dtype", "host", "dev", "copied", "released", "k")

    def __init__(self, c, n, dtype):
        self.n, self.dtype, self.k = n, dtype, 0
        self.host = [_pinned(c, n, dtype) for _ in range(2)]
        self.dev = [device_empty(n, dtype) for _ in range(2)]
        # events never recorded are complete (synchronize and wait return at once)
        self.copied = [_event(c), _event(c)]      # copy stream: upload into dev[k] done
        self.released = [_event(c), _event(c)]    # compute stream: reads of dev[k] done

    def drain(self) -> None:
        for e in self.copied:
            e.synchronize()


class InputStaging:
    """The staged uploads of one DeviceNet (see the module docstring).  ``uploads`` counts the
    asynchronous uploads issued, ``stream`` is the copy stream (None until the first)."""

    def __init__(self, net, impls):
        #: data layer index -> its tops that may be staged (first reader on the device)
        self.candidates = {}
        for i, layer in enumerate(net.layers):
            if impls[i] is None and (getattr(layer, "is_data", False) or layer.type == "Input"):
                tops = [t for t in net.tops[i] if isinstance(t, DeviceBlob) and
                        t._data_src is None and _first_reader_on_device(net, impls, i, t)]
                if tops:
                    self.candidates[i] = tops
        #: the staged tops per data layer, learned from the first whole forward
        self.plan: dict | None = None
        self._before: dict | None = None
        self.stream = None
        self.stream_kind = None
        self.uploads = 0
        self._bufs: dict[int, AsyncUpload] = {}

    @classmethod
    def create(cls, net, impls):
        """An InputStaging for ``net``, or None when staging is off or nothing qualifies."""
        if not enabled():
            return None
        st = cls(net, impls)
        return st if st.candidates else None

    @property
    def staged(self) -> list:
        """The staged blobs (empty until the plan is learned)."""
        return [t for ts in (self.plan or {}).values() for t in ts]

    # -- called by DeviceNet.forward --------------------------------------------------------
    def begin(self, whole: bool) -> None:
        """Before a forward; the first whole one is observed (uploads per candidate)."""
        self._before = None
        if self.plan is None and whole:
            self._before = {id(t): t._dev.data.h2d for ts in self.candidates.values()
                            for t in ts}

    def end(self) -> None:
        """After a forward: learn the plan from the observed one."""
        if self._before is None:
            return
        before, self._before = self._before, None
        self.plan = {}
        for i, ts in self.candidates.items():
            once = [t for t in ts if t._dev.data.h2d - before[id(t)] == 1]
            if once:
                self.plan[i] = once
        if self.plan and self.stream is None:
            self.stream, self.stream_kind = _copy_stream(cuda())

    def after_forward(self, i: int) -> None:
        """After data layer ``i``'s host forward: start the uploads of its staged tops."""
        if not self.plan:
            return
        for t in self.plan.get(i, ()):
            if t._data_src is None and t._dev.data.head == CPU and t.count:
                self._upload(t)

    # -- the upload -------------------------------------------------------------------------
    def _upload(self, blob: DeviceBlob) -> None:
        if self.stream is None:
            self.stream, self.stream_kind = _copy_stream(cuda())
        up = self._bufs.get(id(blob))
        if up is None:
            up = self._bufs[id(blob)] = AsyncUpload(self.stream)
        dev, event = up.send(blob.cpu_data())
        m = blob._dev.data
        m.dev, m.head, m.pending = dev, SYNCED, event
        m.h2d += 1
        self.uploads += 1


class AsyncUpload:
    """Host arrays sent to the device on the copy stream from pinned buffers, two in turn
    (see the module docstring): :meth:`send` returns the device buffer and the event of its
    copy; the compute stream must wait for the event before reading the buffer
    (``event.wait(0)``), the host never waits for the device except to reuse a pinned buffer
    whose copy (two sends ago) is still in flight.  Used by the input staging and by
    Dropout's host-drawn masks."""

    def __init__(self, stream=None):
        self.stream = stream
        self.bufs = None

    def send(self, arr: np.ndarray):
        c = cuda()
        if self.stream is None:
            self.stream, _ = _copy_stream(c)
        n, dtype = arr.size, np.dtype(arr.dtype)
        b = self.bufs
        if b is None or b.n != n or b.dtype != dtype:
            if b is not None:
                b.drain()
            b = self.bufs = _Buffers(c, n, dtype)
        k = b.k
        b.copied[k].synchronize()                 # pinned buffer k: previous upload done
        np.copyto(b.host[k].reshape(arr.shape), arr)
        b.released[k].wait(self.stream)           # compute stream: reads of dev[k] done
        b.dev[k].copy_to_device(b.host[k], stream=self.stream)
        b.copied[k].record(self.stream)
        b.released[1 - k].record(COMPUTE)         # every read of the other buffer is issued
        count_h2d(b.host[k].nbytes)
        b.k = 1 - k
        return b.dev[k], b.copied[k]


def send_async(layer, arr: np.ndarray):
    """``arr`` (drawn on the host for ``layer``: a Dropout mask, stochastic pooling's
    uniforms) to the device through the layer's own :class:`AsyncUpload`; the compute stream
    waits for the copy, the host does not.  The device array stays valid until the layer's
    next send but one (its backward reads it)."""
    up = layer.__dict__.get("_cu_upload")
    if up is None:
        up = layer._cu_upload = AsyncUpload()
    dev, event = up.send(arr)
    event.wait(0)
    return dev
