"""MNIST in its IDX files (gzip or raw), and Caffe's convert_mnist_data (IDX -> LMDB)."""
from __future__ import annotations

import gzip
import os

import numpy as np

from ..errors import FileFormatError


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            raw = f.read()
    except FileNotFoundError:
        raise FileFormatError("file not found", file=path) from None
    return gzip.decompress(raw) if head == b"\x1f\x8b" else raw


def read_idx_images(path: str) -> np.ndarray:
    raw = _read(path)
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 2051:
        raise FileFormatError("not an IDX image file (magic 2051)", file=path)
    n, h, w = (int.from_bytes(raw[k:k + 4], "big") for k in (4, 8, 12))
    if len(raw) != 16 + n * h * w:
        raise FileFormatError(f"truncated IDX image file ({len(raw)} bytes for {n}x{h}x{w})",
                              file=path)
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, h, w)


def read_idx_labels(path: str) -> np.ndarray:
    raw = _read(path)
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != 2049:
        raise FileFormatError("not an IDX label file (magic 2049)", file=path)
    n = int.from_bytes(raw[4:8], "big")
    if len(raw) != 8 + n:
        raise FileFormatError("truncated IDX label file", file=path)
    return np.frombuffer(raw, np.uint8, offset=8)


def find(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    raise FileFormatError(f"no {stem}[.gz] in this folder", file=folder)


def convert_mnist(src_folder: str, out_folder: str) -> dict[str, int]:
    """Write ``mnist_train_lmdb`` and ``mnist_test_lmdb`` under ``out_folder`` (Caffe's
    create_mnist.sh layout).  Returns the record counts."""
    from .lmdb_source import write_lmdb
    counts = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx_images(find(src_folder, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx_labels(find(src_folder, f"{prefix}-labels-idx1-ubyte"))
        if len(images) != len(labels):
            raise FileFormatError(f"{len(images)} images but {len(labels)} labels",
                                  file=src_folder)
        out = os.path.join(out_folder, f"mnist_{split}_lmdb")
        write_lmdb(out, zip(images, labels.tolist()))
        counts[split] = len(images)
    return counts
