"""``.binaryproto`` files: one serialized BlobProto, as Caffe's compute_image_mean writes the
data mean (``num: 1 channels: C height: H width: W`` + float ``data``) and as
``TransformationParameter.mean_file`` reads it.

Shape rules (Blob::FromProto): the legacy num/channels/height/width fields when any is present,
else ``shape.dim``; values from ``double_data`` when present, else ``data``; the value count
must equal the product of the dims — a file that breaks this is truncated or not a BlobProto.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, FileFormatError
from ..proto import pb

__all__ = ["read_blobproto", "read_mean", "write_blobproto", "write_mean"]


def _parse(path: str, field: str | None):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(f"mean file '{path}' not found (create one with Caffe's "
                          f"compute_image_mean or netdef.data.binaryproto.write_mean)",
                          field=field) from None
    except IsADirectoryError:
        raise ConfigError(f"'{path}' is a folder, not a .binaryproto file", field=field) \
            from None
    if not raw:
        raise FileFormatError("empty file: not a BlobProto (.binaryproto)", file=path)
    bp = pb.BlobProto()
    try:
        bp.ParseFromString(raw)
    except Exception as e:
        raise FileFormatError(f"not a BlobProto (.binaryproto) file, or truncated ({e})",
                              file=path) from None
    return bp


def _shape(bp) -> tuple[int, ...]:
    if any(bp.HasField(f) for f in ("num", "channels", "height", "width")):
        return (bp.num, bp.channels, bp.height, bp.width)
    return tuple(int(d) for d in bp.shape.dim)


def read_blobproto(path: str, *, field: str | None = None) -> np.ndarray:
    """The array of a ``.binaryproto`` file, in its stored shape (legacy files: N×C×H×W);
    float32 from ``data``, float64 from ``double_data``.  ``field`` names the parameter the
    path came from, for error messages."""
    bp = _parse(path, field)
    shape = _shape(bp)
    double = len(bp.double_data) > 0
    values = bp.double_data if double else bp.data
    count = int(np.prod(shape, dtype=np.int64)) if shape else 0
    if not shape or count <= 0 or any(d <= 0 for d in shape):
        raise FileFormatError(f"not a BlobProto (.binaryproto) file: no valid shape "
                              f"(got {list(shape)}, {len(values)} values)", file=path)
    if len(values) != count:
        raise FileFormatError(f"BlobProto holds {len(values)} values but its shape "
                              f"{list(shape)} needs {count} (truncated or foreign file)",
                              file=path)
    return np.asarray(values, np.float64 if double else np.float32).reshape(shape)


def read_mean(path: str, *, field: str | None = "transform_param.mean_file") -> np.ndarray:
    """The data mean of a ``mean.binaryproto`` as float32 C×H×W.

    A 4-D mean (the usual 1×C×H×W) gives its first item — Caffe compares only
    channels/height/width and reads the mean from the start of the blob; 3-D files are taken
    as C×H×W, 2-D as 1×H×W."""
    arr = read_blobproto(path, field=field)
    if arr.ndim == 4:
        arr = arr[0]
    elif arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim != 3:
        raise FileFormatError(f"a mean file holds a (1×)C×H×W blob, not shape "
                              f"{list(arr.shape)}", file=path)
    from ..io.weights import warn_not_finite
    warn_not_finite(arr, "the mean", path)
    return np.ascontiguousarray(arr, dtype=np.float32)


def write_blobproto(path: str, array: np.ndarray, *, legacy: bool = False,
                    double: bool = False) -> None:
    """Write ``array`` as one BlobProto.  ``legacy=True`` uses the 4-D num/channels/height/width
    fields (arrays of at most 4 axes, right-aligned, as compute_image_mean writes); otherwise
    ``shape.dim``.  ``double=True`` stores ``double_data`` instead of float ``data``."""
    a = np.asarray(array)
    bp = pb.BlobProto()
    if legacy:
        if a.ndim > 4:
            raise ConfigError(f"legacy BlobProto shapes have 4 axes at most, not {a.ndim}")
        bp.num, bp.channels, bp.height, bp.width = (1,) * (4 - a.ndim) + tuple(a.shape)
    else:
        bp.shape.dim.extend(int(d) for d in a.shape)
    flat = a.reshape(-1)
    if double:
        bp.double_data.extend(flat.astype(np.float64).tolist())
    else:
        bp.data.extend(flat.astype(np.float32).tolist())
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "wb") as f:
        f.write(bp.SerializeToString())


def write_mean(path: str, mean: np.ndarray) -> None:
    """Write a C×H×W (or 1×C×H×W) mean as compute_image_mean does: legacy 1×C×H×W, float."""
    m = np.asarray(mean, np.float32)
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 3:
        raise ConfigError(f"a mean is C×H×W, not shape {list(m.shape)}")
    write_blobproto(path, m[None], legacy=True)
