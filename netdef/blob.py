"""Blob: an N-D array of data and its gradient (diff), like Caffe's Blob.

Memory is allocated lazily: a blob whose ``data`` is never touched (shape inference,
``netdef summary``) costs nothing.  ``data``/``diff`` are C-contiguous numpy arrays of
``shape``; a layer may make a top blob a *view* of a bottom (Flatten, Reshape) with
:meth:`share_data` / :meth:`share_diff`.
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError

MAX_AXES = 32


class Blob:
    __slots__ = ("name", "dtype", "_shape", "_data", "_diff", "_data_src", "_diff_src",
                 "_dev")

    def __init__(self, shape=(), dtype=np.float32, name: str = ""):
        self.name = name
        self.dtype = np.dtype(dtype)
        self._shape: tuple[int, ...] = ()
        self._data = None
        self._diff = None
        self._data_src = None   # Blob whose data this one views (Flatten/Reshape)
        self._diff_src = None
        self._dev = None        # device mirror state (netdef.backend.cuda.memory.DeviceBlob)
        self.reshape(shape)

    # -- shape ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def num_axes(self) -> int:
        return len(self._shape)

    @property
    def count(self) -> int:
        return int(np.prod(self._shape, dtype=np.int64)) if self._shape else 1

    def count_range(self, start: int, end: int | None = None) -> int:
        end = self.num_axes if end is None else end
        return int(np.prod(self._shape[start:end], dtype=np.int64))

    def canonical_axis(self, axis: int) -> int:
        """Map a possibly negative axis index to [0, num_axes); raises ShapeError."""
        n = self.num_axes
        if not -n <= axis < n:
            raise ShapeError(f"axis {axis} out of range for a {n}-axis blob {list(self._shape)}")
        return axis + n if axis < 0 else axis

    def reshape(self, shape) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) > MAX_AXES:
            raise ShapeError(f"blob '{self.name}' would have {len(shape)} axes (max {MAX_AXES})")
        for s in shape:
            if s < 0:
                raise ShapeError(f"blob '{self.name}' would have a negative dimension {list(shape)}")
        if shape != self._shape:
            self._shape = shape
            self._data = None
            self._diff = None

    def reshape_like(self, other: "Blob") -> None:
        self.reshape(other.shape)

    # -- storage -------------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        if self._data_src is not None:
            return self._data_src.data.reshape(self._shape)
        if self._data is None:
            self._data = np.zeros(self._shape, dtype=self.dtype)
        return self._data

    @data.setter
    def data(self, value) -> None:
        value = np.asarray(value, dtype=self.dtype)
        if value.shape != self._shape:
            raise ShapeError(f"blob '{self.name}': cannot set data of shape {list(value.shape)} "
                             f"on a blob of shape {list(self._shape)}")
        if self._data_src is not None or self._data is not None:
            self.data[...] = value          # keep views and shared storage intact
        else:
            self._data = np.array(value, dtype=self.dtype, order="C")  # a private copy

    @property
    def diff(self) -> np.ndarray:
        if self._diff_src is not None:
            return self._diff_src.diff.reshape(self._shape)
        if self._diff is None:
            self._diff = np.zeros(self._shape, dtype=self.dtype)
        return self._diff

    @diff.setter
    def diff(self, value) -> None:
        value = np.asarray(value, dtype=self.dtype)
        if value.shape != self._shape:
            raise ShapeError(f"blob '{self.name}': cannot set diff of shape {list(value.shape)} "
                             f"on a blob of shape {list(self._shape)}")
        if self._diff_src is not None or self._diff is not None:
            self.diff[...] = value          # keep views and shared storage intact
        else:
            self._diff = np.array(value, dtype=self.dtype, order="C")  # a private copy

    @property
    def allocated(self) -> bool:
        return self._data is not None or self._data_src is not None

    def share_data(self, other: "Blob") -> None:
        """Make this blob's data a view of ``other``'s (counts must match)."""
        if other.count != self.count:
            raise ShapeError(f"cannot share data of '{other.name}' ({other.count} elements) "
                             f"with '{self.name}' ({self.count} elements)")
        self._data = None
        self._data_src = other

    def share_diff(self, other: "Blob") -> None:
        if other.count != self.count:
            raise ShapeError(f"cannot share diff of '{other.name}' ({other.count} elements) "
                             f"with '{self.name}' ({self.count} elements)")
        self._diff = None
        self._diff_src = other

    def set_params_storage(self, data: np.ndarray) -> None:
        """Adopt ``data`` (same shape/dtype) as this blob's data array without copying."""
        if data.shape != self._shape or data.dtype != self.dtype:
            raise ShapeError(f"blob '{self.name}': storage {data.shape}/{data.dtype} does not "
                             f"match {self._shape}/{self.dtype}")
        self._data_src = None
        self._data = data

    def zero_diff(self) -> None:
        if self._diff_src is None and self._diff is not None:
            self._diff.fill(0)
        elif self._diff_src is None:
            self._diff = np.zeros(self._shape, dtype=self.dtype)

    def shape_string(self) -> str:
        return " ".join(str(s) for s in self._shape) + f" ({self.count})"

    def __repr__(self) -> str:
        return f"Blob({self.name!r}, shape={list(self._shape)}, dtype={self.dtype})"
