"""Caffe's convert_mnist_siamese_data (examples/siamese/create_mnist_siamese.sh): a database of
image *pairs* for the siamese example, written here as an LMDB of Datum records.

Each record ``k`` (key ``"%08d"``) draws two image indices ``i``, ``j`` uniformly at random
(with replacement, as Caffe's ``caffe_rng_rand() % num_items``) and stores the two
``rows×cols`` uint8 images as the two channels of one ``2×rows×cols`` Datum, image ``i`` in
channel 0; the label is 1 when the two images show the same digit, else 0.  There are as many
pairs as images (``num_pairs`` to change that).  Caffe drew from its global generator; here
the indices are ``numpy.random.default_rng(seed).integers(0, N, size=(num_pairs, 2))``, so a
seed gives the same database everywhere.

The net slices the 2-channel ``pair_data`` top into ``data`` and ``data_p`` (Slice on axis 1)
and ContrastiveLoss takes the label ("sim").
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, FileFormatError
from .mnist import _as_images, _as_labels, find

__all__ = ["convert_mnist_siamese", "convert_mnist_siamese_folder", "make_pairs", "pair_indices"]


def pair_indices(num_items: int, num_pairs: int | None = None, seed: int = 0) -> np.ndarray:
    """The ``(num_pairs, 2)`` image indices of the pairs (``num_pairs`` defaults to
    ``num_items``)."""
    if num_items <= 0:
        raise ConfigError("no images to pair")
    n = num_items if num_pairs is None else int(num_pairs)
    if n < 0:
        raise ConfigError(f"num_pairs must not be negative, got {n}")
    return np.random.default_rng(seed).integers(0, num_items, size=(n, 2))


def make_pairs(images, labels, num_pairs: int | None = None, seed: int = 0):
    """``(pairs, sim, index)``: uint8 ``(P, 2, rows, cols)`` pairs, int ``(P,)`` labels (1 =
    same digit) and the ``(P, 2)`` indices they came from.  ``images``/``labels``: IDX paths
    or arrays, as :func:`netdef.data.mnist.convert_mnist` takes them."""
    imgs = _as_images(images)
    labs = _as_labels(labels)
    if len(imgs) != len(labs):
        raise FileFormatError(f"{len(imgs)} images but {len(labs)} labels",
                              file=os.fspath(images) if isinstance(images, (str, os.PathLike))
                              else None)
    idx = pair_indices(len(imgs), num_pairs, seed)
    pairs = np.concatenate([imgs[idx[:, 0]], imgs[idx[:, 1]]], axis=1)
    sim = (labs[idx[:, 0]] == labs[idx[:, 1]]).astype(np.int64)
    return pairs, sim, idx


def convert_mnist_siamese(images, labels, out_lmdb, *, num_pairs: int | None = None,
                          seed: int = 0, limit: int | None = None,
                          overwrite: bool = False) -> int:
    """Write the pair LMDB ``out_lmdb`` from MNIST ``images``/``labels`` (IDX paths or
    arrays); ``limit`` uses only the first ``limit`` images.  Returns the number of pairs."""
    from .lmdb_source import write_lmdb
    imgs = _as_images(images)
    labs = _as_labels(labels)
    if limit is not None:
        imgs, labs = imgs[:limit], labs[:limit]
    if len(imgs) != len(labs):
        raise FileFormatError(f"{len(imgs)} images but {len(labs)} labels",
                              file=os.fspath(images) if isinstance(images, (str, os.PathLike))
                              else None)
    idx = pair_indices(len(imgs), num_pairs, seed)

    def records():       # one pair at a time: 60,000 pairs never sit in memory together
        for i, j in idx:
            yield (np.concatenate([imgs[i], imgs[j]], axis=0),
                   int(labs[i] == labs[j]))

    return write_lmdb(out_lmdb, records(), overwrite=overwrite)


def convert_mnist_siamese_folder(src_folder: str, out_folder: str, *, seed: int = 0,
                                 overwrite: bool = False) -> dict[str, int]:
    """Caffe's create_mnist_siamese.sh: ``mnist_siamese_train_lmdb`` and
    ``mnist_siamese_test_lmdb`` under ``out_folder`` from the four MNIST files (raw or .gz) in
    ``src_folder``.  The test pairs use ``seed + 1``.  Returns the pair counts."""
    counts = {}
    for k, (split, prefix) in enumerate((("train", "train"), ("test", "t10k"))):
        counts[split] = convert_mnist_siamese(
            find(src_folder, f"{prefix}-images-idx3-ubyte"),
            find(src_folder, f"{prefix}-labels-idx1-ubyte"),
            os.path.join(out_folder, f"mnist_siamese_{split}_lmdb"),
            seed=seed + k, overwrite=overwrite)
    return counts
