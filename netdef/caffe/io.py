"""``caffe.io``: image loading and preprocessing (:mod:`netdef.deploy.preprocess`, whose
docstring states the resize rule and the Transformer's order) and conversions between numpy
arrays and Caffe's ``BlobProto`` / ``Datum`` messages."""
from __future__ import annotations

import numpy as np

from ..data import datum as _datum
from ..deploy.preprocess import (Transformer, center_crop, load_image, oversample,  # noqa: F401
                                 resize_image)
from ..errors import ShapeError
from ..io.weights import blob_proto_shape
from ..proto import pb

__all__ = ["Transformer", "load_image", "resize_image", "oversample", "center_crop",
           "blobproto_to_array", "array_to_blobproto", "arraylist_to_blobprotovector_str",
           "blobprotovector_str_to_arraylist", "array_to_datum", "datum_to_array"]


def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """The blob's data (or diff) as an array of its shape (legacy blobs: num x channels x
    height x width)."""
    vals = (blob.double_diff or blob.diff) if return_diff else (blob.double_data or blob.data)
    dtype = np.float64 if (blob.double_diff if return_diff else blob.double_data) \
        else np.float32
    arr = np.asarray(vals, dtype=dtype)
    shape = blob_proto_shape(blob)
    if int(np.prod(shape, dtype=np.int64)) != arr.size:
        raise ShapeError(f"the BlobProto holds {arr.size} values for shape {list(shape)}")
    return arr.reshape(shape)


def array_to_blobproto(arr, diff=None):
    """A ``BlobProto`` holding ``arr`` (float32) and, when given, ``diff`` of the same shape."""
    arr = np.asarray(arr)
    blob = pb.BlobProto()
    blob.shape.dim.extend(int(d) for d in arr.shape)
    blob.data.extend(arr.astype(np.float32).reshape(-1).tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ShapeError(f"diff of shape {list(diff.shape)} for data of shape "
                             f"{list(arr.shape)}")
        blob.diff.extend(diff.astype(np.float32).reshape(-1).tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    vec = pb.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(s: bytes) -> list:
    vec = pb.BlobProtoVector()
    vec.ParseFromString(s)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    """A ``Datum`` of a C x H x W array: uint8 as ``data`` bytes, anything else as
    ``float_data``; ``label`` when given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ShapeError(f"a Datum holds a C x H x W array, not shape {list(arr.shape)}")
    d = _datum.array_to_datum(arr, 0 if label is None else int(label))
    if label is None:
        d.ClearField("label")
    return d


def datum_to_array(datum) -> np.ndarray:
    """The Datum's C x H x W array (uint8 for ``data``, float32 for ``float_data``; an
    encoded image decoded)."""
    return np.array(_datum.datum_to_array(datum)[0])
