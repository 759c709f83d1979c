"""LMDB databases of Caffe Datum records: read in key order with a wrap-around cursor whose
position can be saved and restored (bit-exact resume), and written like Caffe's tools."""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, FileFormatError
from ..proto import pb


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise ConfigError("reading LMDB needs the lmdb package: pip install 'netdef[data]'") \
            from None
    return lmdb


def datum_to_array(d) -> tuple[np.ndarray, int]:
    if d.encoded:
        import io

        from PIL import Image
        img = np.asarray(Image.open(io.BytesIO(d.data)))
        arr = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)[::-1]  # RGB -> BGR
        return np.ascontiguousarray(arr), d.label
    shape = (d.channels, d.height, d.width)
    if d.data:
        arr = np.frombuffer(d.data, np.uint8)
    else:
        arr = np.asarray(d.float_data, np.float32)
    if arr.size != d.channels * d.height * d.width:
        raise FileFormatError(f"Datum holds {arr.size} values for shape {list(shape)}")
    return arr.reshape(shape), d.label


def array_to_datum(arr: np.ndarray, label: int):
    arr = np.asarray(arr)
    c, h, w = arr.shape
    d = pb.Datum(channels=c, height=h, width=w, label=int(label))
    if arr.dtype == np.uint8:
        d.data = arr.tobytes()
    else:
        d.float_data.extend(arr.astype(np.float32).reshape(-1).tolist())
    return d


class LMDBSource:
    """Records of an LMDB in key order; ``read(n)`` wraps around at the end, as Caffe does."""

    def __init__(self, path: str):
        lmdb = _lmdb()
        if not os.path.isdir(path):
            raise ConfigError(f"data source '{path}' does not exist (an LMDB folder); for MNIST "
                              f"create it with: netdef data mnist MNIST_DIR -o "
                              f"{os.path.dirname(path) or '.'}", field="data_param.source")
        try:
            self.env = lmdb.open(path, readonly=True, lock=False, readahead=False,
                                 max_readers=64)
        except lmdb.Error as e:
            raise FileFormatError(f"not an LMDB database ({e})", file=path) from None
        with self.env.begin() as txn:
            self.keys = [k for k, _ in txn.cursor()]
        if not self.keys:
            raise FileFormatError("the LMDB database is empty", file=path)
        self.path = path
        self.position = 0

    def __len__(self):
        return len(self.keys)

    def skip(self, n: int) -> None:
        self.position = (self.position + n) % len(self.keys)

    def read(self, n: int) -> list[tuple[np.ndarray, int]]:
        out = []
        with self.env.begin() as txn:
            for _ in range(n):
                d = pb.Datum()
                d.ParseFromString(txn.get(self.keys[self.position]))
                out.append(datum_to_array(d))
                self.position = (self.position + 1) % len(self.keys)
        return out

    def peek_shape(self) -> tuple[int, ...]:
        with self.env.begin() as txn:
            d = pb.Datum()
            d.ParseFromString(txn.get(self.keys[0]))
        return datum_to_array(d)[0].shape


def write_lmdb(path: str, records) -> int:
    """Write (array C×H×W, label) records with Caffe's "%08d" keys; returns the count."""
    lmdb = _lmdb()
    os.makedirs(path, exist_ok=True)
    env = lmdb.open(path, map_size=1 << 40)
    n = 0
    txn = env.begin(write=True)
    for arr, label in records:
        txn.put(f"{n:08d}".encode(), array_to_datum(arr, label).SerializeToString())
        n += 1
        if n % 1000 == 0:
            txn.commit()
            txn = env.begin(write=True)
    txn.commit()
    env.close()
    return n
