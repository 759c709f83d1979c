"""Feature extraction (Caffe's ``extract_features``): run a net forward batch by batch and write
the values of chosen blobs, one record per item.

Formats:

* ``lmdb`` — one LMDB per blob (Caffe's tool): keys are the item index as 10 digits, values a
  ``Datum`` of ``float_data`` with channels, height, width of one item (an item of fewer axes
  pads with 1s; more than three are flattened into channels);
* ``hdf5`` — one file, one dataset per blob (N x item shape), written batch by batch;
* ``npy`` — one ``.npy`` per blob, written through a memory map.

Memory stays bounded by one batch: each batch is written before the next forward.  The blobs
are read from :class:`netdef.net.Net` as they are after the forward (no fusion applies there).
"""
from __future__ import annotations

import os

import numpy as np

from .errors import ConfigError

FORMATS = ("lmdb", "hdf5", "npy")


def _datum(item: np.ndarray):
    from .proto import pb
    shape = item.shape
    if len(shape) > 3:
        shape = (int(np.prod(shape[:-2])),) + shape[-2:]
    c, h, w = (tuple(shape) + (1, 1, 1))[:3]
    d = pb.Datum(channels=int(c), height=int(h), width=int(w))
    d.float_data.extend(np.asarray(item, np.float32).reshape(-1).tolist())
    return d


class _Sink:
    def __init__(self, fmt: str, out: str, blobs: list[str], shapes: dict, total: int):
        self.fmt, self.n, self.shapes = fmt, 0, shapes
        if fmt == "lmdb":
            from .data.lmdb_source import LMDBWriter
            if isinstance(out, dict):        # Caffe's tool: one path per blob
                paths = out
            else:
                os.makedirs(out, exist_ok=True)
                paths = {b: os.path.join(out, _safe(b)) for b in blobs}
            self.writers = {b: LMDBWriter(paths[b]) for b in blobs}
        elif isinstance(out, dict):
            raise ConfigError(f"one output path per blob is for --format lmdb, not {fmt}")
        elif fmt == "npy":
            os.makedirs(out, exist_ok=True)
            self.paths = {b: os.path.join(out, _safe(b) + ".npy") for b in blobs}
            self.arrays = {b: np.lib.format.open_memmap(self.paths[b] + ".part", mode="w+",
                                                        dtype=np.float32,
                                                        shape=(total,) + shapes[b])
                           for b in blobs}
        else:
            from .io.hdf5_snapshot import _h5py
            h5py = _h5py("HDF5 feature files")
            path = out if out.endswith((".h5", ".hdf5")) else os.path.join(out, "features.h5")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.path = path
            self.h5 = h5py.File(path + ".part", "w")
            self.sets = {b: self.h5.create_dataset(b, shape=(total,) + shapes[b],
                                                   dtype="float32") for b in blobs}

    def write(self, values: dict) -> None:
        k = len(next(iter(values.values())))
        for b, v in values.items():
            if self.fmt != "lmdb" and v.shape[1:] != self.shapes[b]:
                raise ConfigError(f"blob '{b}' changed shape from {list(self.shapes[b])} to "
                                  f"{list(v.shape[1:])} per item: {self.fmt} files hold one "
                                  f"shape (use --format lmdb)")
            if self.fmt == "lmdb":
                w = self.writers[b]
                for i in range(k):
                    w.put(b"%010d" % (self.n + i), _datum(v[i]).SerializeToString())
            elif self.fmt == "npy":
                self.arrays[b][self.n:self.n + k] = v
            else:
                self.sets[b][self.n:self.n + k] = v
        self.n += k

    def close(self) -> list[str]:
        if self.fmt == "lmdb":
            for w in self.writers.values():
                w.close()
            return [w.path for w in self.writers.values()]
        if self.fmt == "npy":
            for b, a in self.arrays.items():
                a.flush()
                del a
                os.replace(self.paths[b] + ".part", self.paths[b])
            self.arrays = {}
            return list(self.paths.values())
        self.h5.close()
        os.replace(self.path + ".part", self.path)
        return [self.path]

    def discard(self) -> None:
        if self.fmt == "lmdb":
            for w in self.writers.values():
                w.discard()
        elif self.fmt == "npy":
            for p in self.paths.values():
                if os.path.exists(p + ".part"):
                    os.remove(p + ".part")
        else:
            self.h5.close()
            os.remove(self.path + ".part")


def _host(blob) -> np.ndarray:
    """A blob's values on the host; a device blob (``--gpu``) is read without making the host
    copy the authoritative one (which would re-upload it before the next forward)."""
    read = getattr(blob, "cpu_data", None)
    return read() if read is not None else blob.data


def _safe(name: str) -> str:
    """A blob name as a file name ("pool5/7x7_s1" -> "pool5_7x7_s1")."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "blob"


def extract_features(net, blobs: list[str], iterations: int, out, fmt: str = "lmdb",
                     on_batch=None) -> list[str]:
    """Run ``iterations`` forwards of ``net`` and write ``blobs`` (names) to ``out`` (a folder,
    the .h5 file, or for lmdb a dict blob -> LMDB path); returns the paths written.  ``on_batch(k)`` is called after each batch (progress)."""
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    if iterations < 1:
        raise ConfigError(f"--iterations must be at least 1, not {iterations}")
    missing = [b for b in blobs if b not in net.blobs]
    if missing or not blobs:
        raise ConfigError(f"no blob named {', '.join(missing) or '(none given)'} in the net "
                          f"(blobs: {', '.join(net.blobs)})", file=net.loc.file)
    sink = None
    try:
        for it in range(iterations):
            net.forward()
            values = {b: _host(net.blobs[b]) for b in blobs}
            if sink is None:
                nums = {len(v) if v.ndim else 1 for v in values.values()}
                if len(nums) != 1 or any(v.ndim == 0 for v in values.values()):
                    raise ConfigError("the blobs must have one row per item, with the same "
                                      "batch size (got shapes "
                                      f"{', '.join(f'{b} {list(v.shape)}' for b, v in values.items())})")
                total = nums.pop() * iterations
                sink = _Sink(fmt, out, blobs, {b: v.shape[1:] for b, v in values.items()},
                             total)
            sink.write(values)
            if on_batch is not None:
                on_batch(it + 1)
    except BaseException:
        if sink is not None:
            sink.discard()
        raise
    return sink.close()
