"""The HDF5Data layer's source: a text file listing ``.h5`` files (Caffe's hdf5_data_layer.cpp).

* The list names one file per line (blank lines ignored).  A relative name is taken as given
  (relative to the working directory, as Caffe does) and, when no such file exists, relative
  to the list file's folder.
* Each file holds one dataset per top, named like the top; all of a file's datasets have the
  same number of rows (the first dimension); any rank >= 1, float or integer values, cast to
  the net's dtype.  Every file must give the same row shape for a dataset.
* Rows are read ``batch_size`` at a time through a cursor that runs over the files in order
  and wraps around at the end.  Like Caffe, one file's data is held in memory at a time.
* ``shuffle``: each pass (epoch) visits the files in a random order and the rows of each file
  in a random order (Caffe's file permutation + data permutation, reshuffled every pass).  The
  orders of pass ``e`` are ``default_rng([shuffle_seed, e, 0]).permutation(num_files)`` and,
  for file ``f``, ``default_rng([shuffle_seed, e, 1, f]).permutation(rows_f)``: the stream is
  a function of ``shuffle_seed`` and ``position`` alone, which makes a bit-exact resume a
  matter of saving two integers.

``position``: without shuffle, the index of the next row in ``[0, total_rows)`` (rows counted
over the files in list order); with shuffle, ``pass * total_rows + index`` (the number of rows
read since the start).

h5py is an optional dependency (``pip install 'netdef[hdf5]'``), imported only when used.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, FileFormatError
from ..io.hdf5_snapshot import check_dataset

__all__ = ["H5PY_HINT", "HDF5Source", "list_hdf5_files", "read_hdf5_meta"]

H5PY_HINT = "HDF5Data needs h5py: pip install 'netdef[hdf5]'"
FIELD = "hdf5_data_param.source"


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ConfigError(H5PY_HINT, field=FIELD) from None
    return h5py


def list_hdf5_files(source: str) -> list[str]:
    """The ``.h5`` paths a list file names, resolved (see the module docstring)."""
    source = os.fspath(source)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"HDF5 file list '{source}' does not exist (a text file naming one "
                          f".h5 file per line)", field=FIELD) from None
    except IsADirectoryError:
        raise ConfigError(f"HDF5 file list '{source}' is a folder; HDF5Data reads a text file "
                          f"naming one .h5 file per line", field=FIELD) from None
    except UnicodeDecodeError:
        raise ConfigError(f"'{source}' is not a text file naming .h5 files (give the list "
                          f"file, not an .h5 file, as source)", field=FIELD) from None
    folder = os.path.dirname(source)
    files = []
    for no, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        path = name
        if not os.path.isfile(path) and not os.path.isabs(name):
            alt = os.path.join(folder, name)
            if os.path.isfile(alt):
                path = alt
        if not os.path.isfile(path):
            where = "" if os.path.isabs(name) else \
                f" (looked relative to the working directory and to '{folder or '.'}')"
            raise ConfigError(f"HDF5 file '{name}' listed in '{source}' (line {no}) does not "
                              f"exist{where}", field=FIELD)
        files.append(path)
    if not files:
        raise ConfigError(f"HDF5 file list '{source}' names no files", field=FIELD)
    return files


def _open_h5(path: str):
    h5py = _h5py()
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise FileFormatError(f"not a readable HDF5 file ({e})", file=path) from None


def _dataset(f, path: str, name: str):
    import h5py
    if name not in f:
        have = ", ".join(sorted(k for k in f if isinstance(f[k], h5py.Dataset)))
        raise ConfigError(f"HDF5 file '{path}' has no dataset '{name}' (one dataset per top, "
                          f"named like the top; the file has: {have or 'none'})", field=FIELD)
    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise ConfigError(f"'{name}' in HDF5 file '{path}' is a group, not a dataset",
                          field=FIELD)
    if ds.ndim < 1:
        raise ConfigError(f"dataset '{name}' in HDF5 file '{path}' is a scalar; HDF5Data needs "
                          f"at least one dimension (the rows)", field=FIELD)
    if ds.dtype.kind not in "fiu":
        raise ConfigError(f"dataset '{name}' in HDF5 file '{path}' holds {ds.dtype} values; "
                          f"HDF5Data reads float or integer data", field=FIELD)
    return ds


def read_hdf5_meta(path: str, names) -> tuple[int, dict[str, tuple[int, ...]]]:
    """``(rows, {name: row shape})`` of the datasets ``names`` of one file (metadata only)."""
    with _open_h5(path) as f:
        shapes = {}
        rows = None
        for name in names:
            ds = _dataset(f, path, name)
            if rows is None:
                rows, first = int(ds.shape[0]), name
            elif int(ds.shape[0]) != rows:
                raise ConfigError(f"datasets of HDF5 file '{path}' have different numbers of "
                                  f"rows: '{first}' {rows}, '{name}' {ds.shape[0]} (all tops "
                                  f"share the first dimension)", field=FIELD)
            shapes[name] = tuple(int(d) for d in ds.shape[1:])
    if not rows:
        raise ConfigError(f"HDF5 file '{path}' holds no rows", field=FIELD)
    return rows, shapes


class HDF5Source:
    """Rows of the datasets ``names`` of the files a list names, read through a wrap-around
    cursor (see the module docstring for ``position`` and the shuffle order).

    ``read(n)`` returns ``{name: array (n, *row_shape)}`` and advances the cursor."""

    def __init__(self, source: str, names, *, shuffle: bool = False, shuffle_seed: int = 0,
                 dtype=np.float32):
        _h5py()
        self.source = os.fspath(source)
        self.names = list(names)
        self.dtype = np.dtype(dtype)
        self.files = list_hdf5_files(self.source)
        self.rows: list[int] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        for path in self.files:
            rows, shapes = read_hdf5_meta(path, self.names)
            if not self.shapes:
                self.shapes = shapes
            for name in self.names:
                if shapes[name] != self.shapes[name]:
                    raise ConfigError(
                        f"dataset '{name}' has rows of shape {list(shapes[name])} in HDF5 file "
                        f"'{path}' but {list(self.shapes[name])} in '{self.files[0]}' (every "
                        f"file must give the same row shape)", field=FIELD)
            self.rows.append(rows)
        self.total = int(sum(self.rows))
        self.shuffle = bool(shuffle)
        self._seed = int(shuffle_seed)
        self._count = 0
        self._order_pass = None        # (pass, file order, cumulative row starts)
        self._loaded = None            # (pass, file index, {name: array}, row order)

    # -- cursor ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.total

    @property
    def shuffle_seed(self) -> int:
        return self._seed

    @shuffle_seed.setter
    def shuffle_seed(self, value: int) -> None:
        value = int(value)
        if value != self._seed:
            self._seed = value
            self._order_pass = None
            self._loaded = None

    @property
    def position(self) -> int:
        return self._count

    @position.setter
    def position(self, value: int) -> None:
        value = int(value)
        if value < 0:
            raise ValueError(f"position must be >= 0, not {value}")
        self._count = value if self.shuffle else value % self.total

    def file_order(self, pass_index: int) -> np.ndarray:
        """File indices in the order of pass ``pass_index``."""
        if not self.shuffle:
            return np.arange(len(self.files))
        return np.random.default_rng([self._seed, int(pass_index), 0]).permutation(
            len(self.files))

    def row_order(self, pass_index: int, file_index: int) -> np.ndarray | None:
        """Row indices of file ``file_index`` in pass ``pass_index`` (None: in order)."""
        if not self.shuffle:
            return None
        return np.random.default_rng([self._seed, int(pass_index), 1, int(file_index)]) \
            .permutation(self.rows[file_index])

    def _locate(self, count: int) -> tuple[int, int, int]:
        """(pass, file index, row within that file's order) of item ``count``."""
        e, offset = divmod(count, self.total)
        if self._order_pass is None or self._order_pass[0] != e:
            order = self.file_order(e)
            starts = np.cumsum([0] + [self.rows[f] for f in order])
            self._order_pass = (e, order, starts)
        _, order, starts = self._order_pass
        k = int(np.searchsorted(starts, offset, side="right")) - 1
        return e, int(order[k]), int(offset - starts[k])

    def _load(self, e: int, f: int):
        lo = self._loaded
        if lo is not None and lo[1] == f and (lo[0] == e or not self.shuffle):
            return lo[2], lo[3]
        if lo is not None and lo[1] == f:
            arrays = lo[2]                        # same file, next pass: keep the data
        else:
            path = self.files[f]
            with _open_h5(path) as h5:
                arrays = {}
                for name in self.names:
                    ds = _dataset(h5, path, name)
                    check_dataset(ds, path, f"dataset '{name}'", "fiu")
                    arrays[name] = np.asarray(ds[...], dtype=self.dtype)
            for name, a in arrays.items():
                if a.shape != (self.rows[f],) + self.shapes[name]:
                    raise FileFormatError(f"dataset '{name}' changed shape while reading "
                                          f"(now {list(a.shape)})", file=path)
        perm = self.row_order(e, f)
        self._loaded = (e, f, arrays, perm)
        return arrays, perm

    def read(self, n: int) -> dict[str, np.ndarray]:
        n = int(n)
        out = {name: np.empty((n,) + self.shapes[name], self.dtype) for name in self.names}
        i = 0
        while i < n:
            e, f, r = self._locate(self._count)
            arrays, perm = self._load(e, f)
            take = min(n - i, self.rows[f] - r)
            idx = slice(r, r + take) if perm is None else perm[r:r + take]
            for name in self.names:
                out[name][i:i + take] = arrays[name][idx]
            i += take
            self.position = self._count + take
        return out

    def __repr__(self):
        return (f"HDF5Source({self.source!r}, {len(self.files)} files, {self.total} rows, "
                f"position {self._count}{', shuffled' if self.shuffle else ''})")
