"""Lazy host/device mirrors for blobs (Caffe's SyncedMemory).

A Blob converted with :func:`to_device` becomes a :class:`DeviceBlob` (same slots, so the
conversion is a ``__class__`` switch; CPU-only blobs are untouched).  Its data and diff each have
a :class:`SyncedMem` whose ``head`` says where the current values live:

* ``UNINIT``: nowhere yet (zeros on first use, allocated where it is first used);
* ``CPU``: the host array (``Blob._data``/``_diff``) is current, the device copy stale;
* ``GPU``: the device array is current, the host copy stale;
* ``SYNCED``: both agree.

``blob.data``/``blob.diff`` (what CPU layers use) are *mutable* host accessors: they copy from
the device when needed and leave the head at CPU.  ``cpu_data()``/``cpu_diff()`` are read-only
(head SYNCED).  ``gpu_data()``/``gpu_diff()`` read on the device, ``mutable_gpu_data()``/
``mutable_gpu_diff()`` write there (head GPU).  Device arrays are flat (``count`` elements).

Every host<->device copy is counted, per SyncedMem and in :data:`STATS`.  A staged input
(:mod:`.staging`) is uploaded on a copy stream; its SyncedMem holds the upload's event in
``pending`` until the first device access makes the compute stream wait for it.
"""
from __future__ import annotations

import numpy as np

from ...blob import Blob
from .counters import STATS, count_d2h, count_h2d, device_empty  # noqa: F401
from .device import cuda

UNINIT, CPU, GPU, SYNCED = "UNINIT", "CPU", "GPU", "SYNCED"

def device_zeros(n: int, dtype):
    from .primitives import fill
    d = device_empty(n, dtype)
    fill(d, 0.0)
    return d


class SyncedMem:
    __slots__ = ("dev", "head", "h2d", "d2h", "pending", "filled")

    def __init__(self, head=UNINIT):
        self.dev = None
        self.head = head
        self.h2d = 0
        self.d2h = 0
        self.pending = None     # event of an asynchronous upload into ``dev`` (staging.py)
        #: the constant ``dev`` was filled with, while nothing wrote it since (a loss top's
        #: seeded diff: not filled again); None after any write access
        self.filled = None

    def reset(self):
        self.dev = None
        self.head = UNINIT
        self.pending = None
        self.filled = None


class _DevState:
    __slots__ = ("data", "diff")

    def __init__(self, data_head, diff_head):
        self.data = SyncedMem(data_head)
        self.diff = SyncedMem(diff_head)


class DeviceBlob(Blob):
    """A Blob with a device mirror (see the module docstring)."""
    __slots__ = ()

    # -- internal sync ----------------------------------------------------------------------
    def _host_arr(self, which: str) -> np.ndarray:
        attr = "_data" if which == "data" else "_diff"
        arr = getattr(self, attr)
        if arr is None:
            arr = np.zeros(self._shape, dtype=self.dtype)
            setattr(self, attr, arr)
        return arr

    def _to_host(self, which: str) -> np.ndarray:
        m: SyncedMem = getattr(self._dev, which)
        if m.head == GPU:
            arr = self._host_arr(which)
            if arr.size:
                m.dev.copy_to_host(arr.reshape(-1))
            m.d2h += 1
            count_d2h(arr.nbytes)
            m.head = SYNCED
        elif m.head == UNINIT:
            self._host_arr(which)
            m.head = CPU
        return self._host_arr(which)

    def _to_device(self, which: str):
        m: SyncedMem = getattr(self._dev, which)
        if m.pending is not None:       # a staged upload: the compute stream waits for it
            m.pending.wait(0)
            m.pending = None
        n = max(self.count, 1)
        if m.head in (CPU, SYNCED) and m.dev is None:
            m.head = CPU
        if m.head == CPU:
            arr = self._host_arr(which)
            if m.dev is None:
                m.dev = device_empty(n, self.dtype)
            if arr.size:
                m.dev.copy_to_device(np.ascontiguousarray(arr).reshape(-1))
            m.h2d += 1
            count_h2d(arr.nbytes)
            m.head = SYNCED
        elif m.head == UNINIT:
            m.dev = device_zeros(n, self.dtype)
            m.head = GPU
        return m.dev

    # -- host accessors (mutable, what CPU layers use) --------------------------------------
    @property
    def data(self) -> np.ndarray:
        if self._data_src is not None:
            return self._data_src.data.reshape(self._shape)
        arr = self._to_host("data")
        self._dev.data.head = CPU
        return arr

    @data.setter
    def data(self, value) -> None:
        self._set("data", value)

    @property
    def diff(self) -> np.ndarray:
        if self._diff_src is not None:
            return self._diff_src.diff.reshape(self._shape)
        arr = self._to_host("diff")
        self._dev.diff.head = CPU
        self._dev.diff.filled = None
        return arr

    @diff.setter
    def diff(self, value) -> None:
        self._set("diff", value)

    def _set(self, which, value) -> None:
        from ...errors import ShapeError
        value = np.asarray(value, dtype=self.dtype)
        if value.shape != self._shape:
            raise ShapeError(f"blob '{self.name}': cannot set {which} of shape "
                             f"{list(value.shape)} on a blob of shape {list(self._shape)}")
        getattr(self, which)[...] = value       # the host copy, head CPU

    def cpu_data(self) -> np.ndarray:
        """Read-only host view (no head change beyond SYNCED)."""
        if self._data_src is not None:
            return _cpu(self._data_src, "data").reshape(self._shape)
        return self._to_host("data")

    def cpu_diff(self) -> np.ndarray:
        if self._diff_src is not None:
            return _cpu(self._diff_src, "diff").reshape(self._shape)
        return self._to_host("diff")

    # -- device accessors -------------------------------------------------------------------
    def gpu_data(self):
        if self._data_src is not None:
            return _gpu(self._data_src, "data", False)
        return self._to_device("data")

    def gpu_diff(self):
        if self._diff_src is not None:
            return _gpu(self._diff_src, "diff", False)
        return self._to_device("diff")

    def mutable_gpu_data(self):
        if self._data_src is not None:
            return _gpu(self._data_src, "data", True)
        d = self._to_device("data")
        self._dev.data.head = GPU
        return d

    def mutable_gpu_diff(self):
        if self._diff_src is not None:
            return _gpu(self._diff_src, "diff", True)
        d = self._to_device("diff")
        self._dev.diff.head = GPU
        self._dev.diff.filled = None
        return d

    def fill_gpu_diff(self, value) -> None:
        """diff = ``value`` everywhere, on the device; skipped when it already is (filled with
        ``value`` and not written since)."""
        if self._diff_src is None:
            m = self._dev.diff
            if m.filled is not None and m.filled == value and m.dev is not None and \
                    m.head in (GPU, SYNCED):
                return
        from .primitives import fill
        fill(self.mutable_gpu_diff(), value, self.count)
        if self._diff_src is None:
            self._dev.diff.filled = value

    def set_gpu_data(self, dev) -> None:
        """Write: the device array now holds this blob's data."""
        self.mutable_gpu_data().copy_to_device(dev)

    # -- storage changes --------------------------------------------------------------------
    def reshape(self, shape) -> None:
        old = self._shape
        Blob.reshape(self, shape)
        if self._shape != old:
            self._dev.data.reset()
            self._dev.diff.reset()

    def share_data(self, other) -> None:
        Blob.share_data(self, other)
        self._dev.data.reset()

    def share_diff(self, other) -> None:
        Blob.share_diff(self, other)
        self._dev.diff.reset()

    def set_params_storage(self, data) -> None:
        Blob.set_params_storage(self, data)
        self._dev.data.dev = None
        self._dev.data.head = CPU

    def zero_diff(self) -> None:
        if self._diff_src is not None:
            return
        from .primitives import fill
        m = self._dev.diff
        m.filled = None
        if m.head == CPU and m.dev is None:
            self._diff.fill(0)
            return
        if m.dev is None:
            m.dev = device_zeros(max(self.count, 1), self.dtype)
        else:
            fill(m.dev, 0.0)
        m.head = GPU

    @property
    def data_mem(self) -> SyncedMem:
        b = self
        while b._data_src is not None:
            b = b._data_src
        return b._dev.data

    @property
    def diff_mem(self) -> SyncedMem:
        b = self
        while b._diff_src is not None:
            b = b._diff_src
        return b._dev.diff


def _cpu(blob, which):
    if isinstance(blob, DeviceBlob):
        return blob.cpu_data() if which == "data" else blob.cpu_diff()
    return getattr(blob, which)


def _gpu(blob, which, mutable):
    if not isinstance(blob, DeviceBlob):
        to_device(blob)
    if which == "data":
        return blob.mutable_gpu_data() if mutable else blob.gpu_data()
    return blob.mutable_gpu_diff() if mutable else blob.gpu_diff()


def to_device(blob: Blob) -> DeviceBlob:
    """Give ``blob`` a device mirror (in place; idempotent).  Current host values stay current
    (head CPU) and are copied to the device on first device use."""
    if isinstance(blob, DeviceBlob):
        return blob
    blob.__class__ = DeviceBlob
    blob._dev = _DevState(CPU if blob._data is not None else UNINIT,
                          CPU if blob._diff is not None else UNINIT)
    return blob


def _upload(layer, name, arr):
    """A per-layer device copy of a small host array (counted as a host->device copy)."""
    from .primitives import state
    arr = np.ascontiguousarray(arr).reshape(-1)
    d = state(layer, name, arr.size, arr.dtype)
    if arr.size:
        d.copy_to_device(arr)
    count_h2d(arr.nbytes)
    return d
