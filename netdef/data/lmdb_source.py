"""LMDB databases of Caffe Datum records.

Reading (:class:`LMDBSource`) follows Caffe's Data layer: records in key order (LMDB's
byte-wise key order), a cursor that wraps around to the first record after the last; the
cursor ``position`` is a plain integer index in ``[0, len)`` that can be saved and restored
for bit-exact resume, and ``skip(n)`` moves it (rand_skip).

Writing (:func:`write_lmdb`) follows Caffe's tools (convert_mnist_data, convert_imageset):
keys ``"%08d"`` of the record index, one serialized Datum per key, a commit every 1000
records, and the map size doubled whenever it is full (LMDBTransaction::DoubleMapSize).

Also here, for callers of the original module: ``datum_to_array``/``array_to_datum``
(defined in :mod:`netdef.data.datum`).
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import ConfigError, FileFormatError
from ..proto import pb
from .datum import array_to_datum, datum_to_array

__all__ = ["LMDBSource", "write_lmdb", "datum_to_array", "array_to_datum", "CREATE_HINT"]

CREATE_HINT = ("create one with `netdef data get mnist --from MNIST_DIR --out FOLDER`, "
               "netdef.data.mnist.convert_mnist(...), netdef.data.lmdb_source.write_lmdb(...) "
               "or Caffe's convert_imageset")


def _lmdb():
    try:
        import lmdb
    except ImportError:
        raise ConfigError("reading LMDB needs the lmdb package: pip install 'netdef[data]'") \
            from None
    return lmdb


# py-lmdb refuses to open one environment twice in a process ("already open in this
# process"), yet a train and a test net may read the same LMDB: sources share one read-only
# environment per real path, closed when the last source using it is closed.
_ENVS: dict[str, list] = {}
_ENVS_LOCK = threading.Lock()


def check_lmdb_size(path: str) -> None:
    """Refuse an LMDB whose data.mdb is shorter than its own meta page says: LMDB maps the
    file and reads pages past its end as memory, so a truncated copy kills the process with
    SIGBUS instead of raising. The newer of the two meta pages (pages 0 and 1: magic
    0xBEEFC0DE, page size in the free DB's md_pad, the last page used, the transaction id)
    gives the size the file must have."""
    import struct
    mdb = os.path.join(path, "data.mdb")
    size = os.path.getsize(mdb)
    with open(mdb, "rb") as f:
        head = f.read(2 * 65536)
    metas = []
    for base in {0, *(struct.unpack_from("<I", head, 40) if len(head) >= 44 else ())}:
        if len(head) < base + 152:
            continue
        magic, version = struct.unpack_from("<II", head, base + 16)
        psize, = struct.unpack_from("<I", head, base + 40)
        last_pg, txnid = struct.unpack_from("<QQ", head, base + 136)
        if magic == 0xBEEFC0DE and psize >= 512 and psize & (psize - 1) == 0:
            metas.append((txnid, last_pg, psize))
    if not metas:
        raise FileFormatError(f"not an LMDB: data.mdb ({size:,} bytes) has no LMDB meta page "
                              f"(a truncated or foreign file?)", file=path)
    _, last_pg, psize = max(metas)
    need = (last_pg + 1) * psize
    if size < need:
        raise FileFormatError(f"truncated LMDB: data.mdb holds {size:,} bytes but its pages "
                              f"need {need:,} (an interrupted copy or download?)", file=path)


def _acquire_env(path: str):
    lmdb = _lmdb()
    key = os.path.realpath(path)
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            check_lmdb_size(path)
            # As Caffe: read-only; no lock file (works on read-only media), no readahead.
            env = lmdb.open(path, readonly=True, lock=False, readahead=False,
                            max_readers=126, subdir=True)
            entry = _ENVS[key] = [env, 0]
        entry[1] += 1
        return key, entry[0]


def _release_env(key: str) -> None:
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _ENVS[key]
            entry[0].close()


class _Keys:
    """The keys of an LMDB in order, compact when they all have the same length (the usual
    "%08d" keys): one bytes object instead of a million small ones."""

    def __init__(self, keys: list[bytes]):
        self.n = len(keys)
        width = len(keys[0]) if keys else 0
        if keys and all(len(k) == width for k in keys):
            self.width, self.blob, self.list = width, b"".join(keys), None
        else:
            self.width, self.blob, self.list = 0, b"", keys

    def __len__(self):
        return self.n

    def __getitem__(self, i: int) -> bytes:
        if self.list is not None:
            return self.list[i]
        return self.blob[i * self.width:(i + 1) * self.width]


class LMDBSource:
    """Datum records of an LMDB in key order, read through a wrap-around cursor.

    ``read(n)`` returns ``n`` ``(array C×H×W, label)`` pairs starting at ``position`` and
    advances it, wrapping to the first record after the last (Caffe's behaviour).  Arrays are
    uint8 (``data`` payload, read-only views), float32 (``float_data``) or decoded images
    (``encoded`` datums; ``force_color`` / ``force_gray`` as in TransformationParameter)."""

    def __init__(self, path: str, *, force_color: bool = False, force_gray: bool = False,
                 field: str = "data_param.source"):
        lmdb = _lmdb()
        path = os.fspath(path)
        self.path = path
        self.force_color = bool(force_color)
        self.force_gray = bool(force_gray)
        if force_color and force_gray:
            raise ConfigError("cannot set both force_color and force_gray",
                              field="transform_param.force_color")
        if not path:
            raise ConfigError(f"no data source given (an LMDB folder): {CREATE_HINT}",
                              field=field)
        if not os.path.exists(path):
            raise ConfigError(f"data source '{path}' does not exist (an LMDB folder): "
                              f"{CREATE_HINT}", field=field)
        if not os.path.isdir(path):
            raise FileFormatError(f"not an LMDB: an LMDB is a folder holding data.mdb, this is "
                                  f"a file; {CREATE_HINT}", file=path)
        if not os.path.exists(os.path.join(path, "data.mdb")):
            names = set(os.listdir(path))
            if "CURRENT" in names and any(n.endswith((".ldb", ".log")) for n in names):
                raise FileFormatError(f"this is a LevelDB, not an LMDB: netdef reads LMDB "
                                      f"only (backend: LMDB); convert the data again to "
                                      f"LMDB — {CREATE_HINT}", file=path)
            raise FileFormatError(f"not an LMDB (no data.mdb in the folder); {CREATE_HINT}",
                                  file=path)
        self.env = None
        try:
            self._env_key, self.env = _acquire_env(path)
            with self.env.begin() as txn:
                keys = list(txn.cursor().iternext(keys=True, values=False))
        except lmdb.Error as e:
            self.close()
            raise FileFormatError(f"not a readable LMDB ({e}); {CREATE_HINT}",
                                  file=path) from None
        if not keys:
            self.close()
            raise FileFormatError(f"the LMDB holds no records; {CREATE_HINT}", file=path)
        self._keys = _Keys(keys)
        self._pos = 0

    # -- cursor ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._keys)

    @property
    def position(self) -> int:
        """Index (in key order) of the record the next ``read`` returns, in ``[0, len)``."""
        return self._pos

    @position.setter
    def position(self, value: int) -> None:
        self._pos = int(value) % len(self._keys)

    def skip(self, n: int) -> None:
        """Advance the cursor by ``n`` records, wrapping around (Caffe's rand_skip)."""
        self.position = self._pos + int(n)

    def key(self, index: int) -> bytes:
        """The key of the record at ``index`` (key order)."""
        return self._keys[index % len(self._keys)]

    def _decode(self, value, key: bytes):
        d = pb.Datum()
        try:
            d.ParseFromString(bytes(value))
            return datum_to_array(d, force_color=self.force_color, force_gray=self.force_gray)
        except FileFormatError as e:
            raise FileFormatError(f"record {key!r}: {e.message}", file=self.path) from None
        except Exception as e:
            raise FileFormatError(f"record {key!r} is not a serialized Datum ({e})",
                                  file=self.path) from None

    def read(self, n: int) -> list[tuple[np.ndarray, int]]:
        """The next ``n`` records as ``(array, label)``, advancing (and wrapping) the cursor."""
        out = []
        if n <= 0:
            return out
        count = len(self._keys)
        with self.env.begin(buffers=False) as txn:
            cur = txn.cursor()
            for _ in range(int(n)):
                key = self._keys[self._pos]
                if not (cur.key() == key or cur.set_key(key)):
                    raise FileFormatError(f"record {key!r} vanished: the LMDB changed while "
                                          f"it was being read", file=self.path)
                out.append(self._decode(cur.value(), key))
                self._pos += 1
                if self._pos == count:
                    self._pos = 0
                    cur.first()
                else:
                    cur.next()
        return out

    def peek(self) -> tuple[np.ndarray, int]:
        """The record at the cursor, without advancing it (Caffe's DataLayerSetUp peek)."""
        key = self._keys[self._pos]
        with self.env.begin(buffers=False) as txn:
            value = txn.get(key)
        if value is None:
            raise FileFormatError(f"record {key!r} vanished: the LMDB changed while it was "
                                  f"being read", file=self.path)
        return self._decode(value, key)

    def peek_shape(self) -> tuple[int, ...]:
        """C×H×W of the record at the cursor (what the Data layer's top is shaped from)."""
        return tuple(self.peek()[0].shape)

    def close(self) -> None:
        """Release the database (shared with other sources of the same path)."""
        if getattr(self, "env", None) is not None:
            self.env = None
            _release_env(self._env_key)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"LMDBSource({self.path!r}, {len(self)} records, position {self._pos})"


class LMDBWriter:
    """A new LMDB at ``path``, written record by record: ``put(key, value)``, then
    ``close()`` (or use it as a context manager; an exception discards it).  Built in a temp
    folder beside ``path`` and moved in when complete, so a killed or failed run never leaves
    a half-written LMDB that reads as a good one; commits every ``commit_every`` records; the
    map starts at ``map_size`` bytes and doubles whenever it is full."""

    def __init__(self, path: str, *, map_size: int = 16 << 20, commit_every: int = 1000,
                 overwrite: bool = False):
        lmdb = self._lmdb = _lmdb()
        path = self.path = os.fspath(path)
        if os.path.realpath(path) in _ENVS:
            raise ConfigError(f"cannot write an LMDB at '{path}': it is open for reading "
                              f"(close its LMDBSource first)")
        if os.path.exists(path):
            if not os.path.isdir(path):
                raise ConfigError(f"cannot write an LMDB at '{path}': a file of that name "
                                  f"exists")
            if os.listdir(path) and not overwrite:
                raise ConfigError(f"cannot write an LMDB at '{path}': the folder exists and is "
                                  f"not empty (remove it first, or pass overwrite=True)")
        from ..io.files import temp_path
        self.tmp = temp_path(path)
        os.makedirs(self.tmp)
        self.env = lmdb.open(self.tmp, map_size=int(map_size), subdir=True, meminit=False)
        self.commit_every = int(commit_every)
        self.pending: list[tuple[bytes, bytes]] = []
        self.count = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.pending.append((key, value))
        self.count += 1
        if len(self.pending) >= self.commit_every:
            self.commit()

    def commit(self) -> None:
        while self.pending:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in self.pending:
                        txn.put(k, v)
                break
            except self._lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
        self.pending.clear()

    def discard(self) -> None:
        import shutil
        self.env.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def close(self) -> int:
        """Commit, and move the finished LMDB to ``path``; returns the records written."""
        try:
            self.commit()
            self.env.sync(True)
        except BaseException:
            self.discard()
            raise
        self.env.close()
        path, tmp = self.path, self.tmp
        if os.path.isdir(path):
            for name in ("data.mdb", "lock.mdb"):
                if os.path.exists(os.path.join(tmp, name)):
                    os.replace(os.path.join(tmp, name), os.path.join(path, name))
                elif os.path.exists(os.path.join(path, name)):
                    os.remove(os.path.join(path, name))
            os.rmdir(tmp)
        else:
            os.replace(tmp, path)
        return self.count

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.discard()
        return False


def write_lmdb(path: str, records, *, map_size: int = 16 << 20, commit_every: int = 1000,
               encode: str | None = None, overwrite: bool = False,
               key_format: str = "%08d", keys=None) -> int:
    """Write ``records`` — ``(array C×H×W, label)`` pairs (uint8 -> ``data``, other dtypes ->
    ``float_data``; ``encode='png'|'jpg'`` stores compressed images) or ready ``pb.Datum``
    messages — to a new LMDB at ``path`` with Caffe's ``"%08d"`` index keys (``key_format``:
    another printf format of the index, e.g. ``"%05d"`` as Caffe's convert_cifar_data; ``keys``:
    an iterable of ready keys, one per record, as convert_imageset's ``"%08d_<path>"``), through
    :class:`LMDBWriter`.  ``path`` must not exist or be an empty folder, unless ``overwrite``
    (which replaces data.mdb/lock.mdb).  Returns the number of records written."""
    key_iter = iter(keys) if keys is not None else None
    with LMDBWriter(path, map_size=map_size, commit_every=commit_every,
                    overwrite=overwrite) as w:
        for n, rec in enumerate(records):
            if isinstance(rec, pb.Datum):
                value = rec.SerializeToString()
            else:
                arr, label = rec
                value = array_to_datum(arr, label, encode=encode).SerializeToString()
            key = next(key_iter) if key_iter is not None else (key_format % n).encode()
            w.put(key, value)
    return w.count


def image_mean(path: str):
    """Caffe's compute_image_mean: the per-pixel mean (float64 C×H×W) of the Datum records of
    the LMDB at ``path``, read 1,000 at a time, and how many there were."""
    src = LMDBSource(path)
    total, remaining = None, len(src)
    while remaining:
        k = min(1000, remaining)
        for arr, _label in src.read(k):
            total = arr.astype(np.float64) if total is None else total + arr
        remaining -= k
    if total is None:
        raise ConfigError(f"{path} holds no items", file=path)
    return total / len(src), len(src)
