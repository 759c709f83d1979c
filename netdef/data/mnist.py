"""MNIST in its IDX files (gzip or raw), and Caffe's convert_mnist_data (IDX -> LMDB).

IDX: a big-endian header — magic (two zero bytes, a type code, the number of dimensions),
then one uint32 per dimension — followed by the values, big-endian.  MNIST images have magic
2051 (0x00000803: uint8, 3 dims N×rows×cols), labels 2049 (0x00000801: uint8, N); Caffe's
converter checks both magics and that the counts agree, and writes one 1×rows×cols uint8
Datum per image, keyed "%08d".
"""
from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..errors import ConfigError, FileFormatError

__all__ = ["read_idx", "read_idx_images", "read_idx_labels", "write_idx", "convert_mnist",
           "convert_mnist_folder", "find", "IMAGES_MAGIC", "LABELS_MAGIC"]

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049

# IDX type code -> big-endian numpy dtype
_IDX_TYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read(path: str) -> bytes:
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileFormatError("file not found", file=path) from None
    except IsADirectoryError:
        raise FileFormatError("is a folder, not an IDX file", file=path) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise FileFormatError(f"corrupt or truncated gzip file ({e})", file=path) from None
    return raw


def _parse_idx(raw: bytes, path: str, magic: int | None, what: str) -> np.ndarray:
    what = f"IDX {what}".strip()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise FileFormatError(f"not an {what} file (bad magic "
                              f"{int.from_bytes(raw[:4], 'big') if len(raw) >= 4 else '?'}"
                              f"{f', expected {magic}' if magic else ''})", file=path)
    got = int.from_bytes(raw[:4], "big")
    if magic is not None and got != magic:
        raise FileFormatError(f"not an {what} file: magic number {got}, expected {magic}",
                              file=path)
    ndim = raw[3]
    head = 4 + 4 * ndim
    if ndim == 0 or len(raw) < head:
        raise FileFormatError(f"truncated IDX header ({len(raw)} bytes)", file=path)
    dims = tuple(int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    dtype = _IDX_TYPES[raw[2]]
    need = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - head != need:
        raise FileFormatError(f"IDX file holds {len(raw) - head} data bytes but its header "
                              f"{'x'.join(map(str, dims))} needs {need} (truncated or "
                              f"corrupt)", file=path)
    arr = np.frombuffer(raw, dtype, offset=head).reshape(dims)
    return arr if dtype.itemsize == 1 else arr.astype(dtype.newbyteorder("="))


def read_idx(path: str) -> np.ndarray:
    """Any IDX file (gzip or raw) as an array of its stored shape and type."""
    return _parse_idx(_read(path), os.fspath(path), None, "")


def read_idx_images(path: str) -> np.ndarray:
    """MNIST images (magic 2051) as uint8 N×1×rows×cols (read-only)."""
    arr = _parse_idx(_read(path), os.fspath(path), IMAGES_MAGIC, "image")
    if arr.ndim != 3 or arr.dtype != np.uint8:
        raise FileFormatError(f"IDX image file should be uint8 N×rows×cols, got "
                              f"{arr.dtype} {list(arr.shape)}", file=os.fspath(path))
    return arr.reshape(arr.shape[0], 1, arr.shape[1], arr.shape[2])


def read_idx_labels(path: str) -> np.ndarray:
    """MNIST labels (magic 2049) as uint8 N (read-only)."""
    arr = _parse_idx(_read(path), os.fspath(path), LABELS_MAGIC, "label")
    if arr.ndim != 1 or arr.dtype != np.uint8:
        raise FileFormatError(f"IDX label file should be uint8 N, got {arr.dtype} "
                              f"{list(arr.shape)}", file=os.fspath(path))
    return arr


def write_idx(path: str, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write ``array`` (uint8 N×rows×cols images, uint8 N labels, or any IDX type) as an IDX
    file; gzip-compressed when ``compress`` or (by default) when the name ends in ``.gz``."""
    a = np.asarray(array)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    codes = {v.newbyteorder("="): k for k, v in _IDX_TYPES.items()}
    code = codes.get(a.dtype.newbyteorder("="))
    if code is None:
        raise ConfigError(f"IDX cannot store {a.dtype}")
    head = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    raw = head + np.ascontiguousarray(a, dtype=_IDX_TYPES[code]).tobytes()
    path = os.fspath(path)
    if compress if compress is not None else path.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    with open(path, "wb") as f:
        f.write(raw)


def find(folder: str, stem: str) -> str:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists."""
    for name in (stem, stem + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    raise FileFormatError(f"no {stem}[.gz] in this folder", file=folder)


def _as_images(images) -> np.ndarray:
    if isinstance(images, (str, os.PathLike)):
        return read_idx_images(images)
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] != 1 or a.dtype != np.uint8:
        raise ConfigError(f"MNIST images are uint8 N×rows×cols (or N×1×rows×cols), not "
                          f"{a.dtype} {list(a.shape)}")
    return a


def _as_labels(labels) -> np.ndarray:
    if isinstance(labels, (str, os.PathLike)):
        return read_idx_labels(labels)
    a = np.asarray(labels)
    if a.ndim != 1:
        raise ConfigError(f"MNIST labels are a 1-D array, not shape {list(a.shape)}")
    return a


def convert_mnist(images, labels, out_lmdb=None, *, limit: int | None = None,
                  overwrite: bool = False):
    """Caffe's convert_mnist_data: one 1×rows×cols uint8 Datum per image, label from the
    label file, keys "%08d", into a new LMDB ``out_lmdb``.  Returns the record count.

    ``images`` / ``labels``: IDX file paths (gzip or raw) or arrays (uint8 N×rows×cols or
    N×1×rows×cols; N labels).  ``limit`` converts only the first ``limit`` items.

    Compatibility: ``convert_mnist(src_folder, out_folder)`` (two arguments, the first a
    folder) is :func:`convert_mnist_folder` and returns its dict."""
    if out_lmdb is None:
        if isinstance(images, (str, os.PathLike)) and isinstance(labels, (str, os.PathLike)):
            return convert_mnist_folder(images, labels)
        raise ConfigError("convert_mnist(images, labels, out_lmdb): no output LMDB given")
    from .lmdb_source import write_lmdb
    imgs = _as_images(images)
    labs = _as_labels(labels)
    if len(imgs) != len(labs):
        raise FileFormatError(f"{len(imgs)} images but {len(labs)} labels",
                              file=os.fspath(images) if isinstance(images, (str, os.PathLike))
                              else None)
    if limit is not None:
        imgs, labs = imgs[:limit], labs[:limit]
    return write_lmdb(out_lmdb, zip(imgs, labs.tolist()), overwrite=overwrite)


def convert_mnist_folder(src_folder: str, out_folder: str) -> dict[str, int]:
    """Caffe's create_mnist.sh: ``mnist_train_lmdb`` and ``mnist_test_lmdb`` under
    ``out_folder`` from the four official files (raw or .gz) in ``src_folder``.  Returns the
    record counts ``{"train": 60000, "test": 10000}``."""
    counts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        counts[split] = convert_mnist(find(src_folder, f"{prefix}-images-idx3-ubyte"),
                                      find(src_folder, f"{prefix}-labels-idx1-ubyte"),
                                      os.path.join(out_folder, f"mnist_{split}_lmdb"))
    return counts
