"""The data pipeline behind Caffe's data layers.

* :mod:`.datum` — Datum records <-> arrays (uint8 ``data``, ``float_data``, encoded images);
* :mod:`.lmdb_source` — :class:`LMDBSource` (wrap-around cursor, saveable ``position``) and
  :func:`write_lmdb` (Caffe's ``"%08d"`` keys);
* :mod:`.mnist` — IDX files and Caffe's convert_mnist_data;
* :mod:`.image_list` — :class:`ImageListSource`, the ImageData layer's ``path label`` list;
* :mod:`.transform` — :class:`DataTransformer` (mean, crop, mirror, scale);
* :mod:`.binaryproto` — ``mean.binaryproto`` files.

LMDB needs the ``lmdb`` package and images need Pillow (``pip install 'netdef[data]'``);
both are imported only when used.
"""
from .binaryproto import read_blobproto, read_mean, write_blobproto, write_mean
from .datum import array_to_datum, datum_to_array, decode_datum, encode_datum
from .image_list import ImageListSource
from .lmdb_source import LMDBSource, write_lmdb
from .mnist import convert_mnist, convert_mnist_folder, read_idx_images, read_idx_labels
from .transform import DataTransformer

__all__ = ["DataTransformer", "LMDBSource", "ImageListSource", "write_lmdb", "convert_mnist",
           "convert_mnist_folder", "read_idx_images", "read_idx_labels", "datum_to_array",
           "array_to_datum", "encode_datum", "decode_datum", "read_mean", "read_blobproto",
           "write_mean", "write_blobproto"]
