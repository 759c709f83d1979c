"""Caffe's HDF5 snapshots (``snapshot_format: HDF5``): ``*.caffemodel.h5`` and
``*.solverstate.h5``, read and written with h5py (``pip install 'netdef[hdf5]'``).

Layout, as Caffe's ``Net::ToHDF5`` and ``SGDSolver::SnapshotSolverStateToHDF5`` write it:

* model: group ``data`` with one group per layer (by name) holding datasets ``"0"``, ``"1"``,
  ... — the layer's parameter blobs in their shapes (netdef also writes shared blobs under
  each sharing layer, which Caffe's reader accepts);
* state: scalar datasets ``iter`` and ``current_step``, string ``learned_net``, group
  ``history`` with datasets ``"0"``, ``"1"``, ...  netdef adds ``netdef_resume``: the
  serialized NetdefResumeState (RNG and data-reader states) that an exact resume needs;
  Caffe ignores it.

Readers turn these files into the same messages as the binary formats (NetParameter with
blobs, SolverState), so everything downstream is shared.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, FileFormatError
from ..proto import pb
from .files import write_through


def is_hdf5(path: str) -> bool:
    return os.fspath(path).endswith(".h5")


def _h5py(what: str):
    try:
        import h5py
    except ImportError:
        raise ConfigError(f"{what} needs h5py: pip install 'netdef[hdf5]'") from None
    return h5py


def _write_atomic_h5(path: str, fill) -> None:
    h5py = _h5py("HDF5 snapshots (snapshot_format: HDF5)")

    def write(tmp):
        with h5py.File(tmp, "w") as f:
            fill(f)
    write_through(path, write)


def _open(path: str, what: str):
    h5py = _h5py(f"reading {os.path.basename(path)}")
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except OSError as e:
        raise FileFormatError(f"not a readable HDF5 {what} ({e})", file=path) from None


#: the most a compressed dataset may expand relative to what it stores (float weights and
#: data barely compress; a 3.8 KB file that declares 18.6 GiB is a bomb)
MAX_EXPANSION = 1024


def check_dataset(ds, path: str, what: str, dtype_kinds: str = "f") -> None:
    """Refuse (one line) a dataset whose values could not be what it claims before reading
    it: a foreign dtype, no stored data, far more data declared than stored, or more than
    this process may allocate."""
    if ds.dtype.kind not in dtype_kinds:
        raise FileFormatError(f"{what} holds {ds.dtype} values, not numbers", file=path)
    declared = int(ds.size) * ds.dtype.itemsize
    if not declared:
        return
    stored = ds.id.get_storage_size()
    compressed = bool(ds.compression) or bool(getattr(ds, "_filters", None))
    if stored == 0 and ds.fillvalue is not None and not compressed and declared <= 1 << 20:
        return          # a small contiguous dataset of the fill value (h5py allocates late)
    limit = max(1 << 26, MAX_EXPANSION * stored) if compressed else stored
    if declared > limit:
        raise FileFormatError(f"{what} declares {list(ds.shape)} = {declared:,} bytes but "
                              f"stores {stored:,} (a truncated file or a decompression bomb)",
                              file=path)
    from ..memcheck import available_bytes, human_bytes
    avail, source = available_bytes()
    if avail is not None and declared > avail:
        raise FileFormatError(f"{what} needs {human_bytes(declared)} but {human_bytes(avail)} "
                              f"is available ({source})", file=path)


def save_caffemodel_h5(net, path: str, *, double: bool = False) -> None:
    dtype = np.float64 if double else np.float32

    def fill(f):
        data = f.create_group("data")
        for name, layer in zip(net.layer_names, net.layers):
            g = data.require_group(name)
            for j, blob in enumerate(layer.blobs):
                g.create_dataset(str(j), data=np.asarray(blob.data, dtype))

    _write_atomic_h5(path, fill)


def _indexed(group, path: str, where: str) -> list[np.ndarray]:
    keys = sorted(group.keys(), key=lambda k: int(k) if k.isdigit() else -1)
    if any(not k.isdigit() for k in keys) or [int(k) for k in keys] != list(range(len(keys))):
        raise FileFormatError(f"{where} should hold datasets 0, 1, ... but holds "
                              f"{', '.join(keys)}", file=path)
    out = []
    for k in keys:
        ds = group[k]
        if not hasattr(ds, "dtype"):
            raise FileFormatError(f"{where}/{k} is a group, not a dataset", file=path)
        check_dataset(ds, path, f"dataset {where}/{k}")
        out.append(np.asarray(ds))
    return out


def _blob(arr: np.ndarray) -> pb.BlobProto:
    bp = pb.BlobProto()
    bp.shape.dim.extend(arr.shape)
    flat = arr.reshape(-1)
    if arr.dtype == np.float64:
        bp.double_data.extend(flat.tolist())
    else:
        bp.data.extend(flat.astype(np.float32).tolist())
    return bp


def load_caffemodel_h5(path: str) -> pb.NetParameter:
    """A ``.caffemodel.h5`` as a NetParameter whose layers carry only names and blobs."""
    out = pb.NetParameter()
    with _open(path, "model") as f:
        if "data" not in f:
            raise FileFormatError("not a Caffe HDF5 model: no 'data' group", file=path)
        for name, g in f["data"].items():
            lp = out.layer.add(name=name)
            for arr in _indexed(g, path, f"data/{name}"):
                lp.blobs.add().CopyFrom(_blob(arr))
    return out


def save_solverstate_h5(state: pb.SolverState, history, path: str) -> None:
    h5py = _h5py("HDF5 snapshots (snapshot_format: HDF5)")

    def fill(f):
        f.create_dataset("iter", data=np.int32(state.iter))
        f.create_dataset("learned_net", data=state.learned_net,
                         dtype=h5py.string_dtype("ascii"))
        f.create_dataset("current_step", data=np.int32(state.current_step))
        g = f.create_group("history")
        for j, h in enumerate(history):
            g.create_dataset(str(j), data=np.asarray(h))
        if state.HasField("netdef_resume"):
            f.create_dataset("netdef_resume",
                             data=np.void(state.netdef_resume.SerializeToString()))

    _write_atomic_h5(path, fill)


def load_solverstate_h5(path: str) -> pb.SolverState:
    state = pb.SolverState()
    with _open(path, "solver state") as f:
        missing = [k for k in ("iter", "learned_net", "history") if k not in f]
        if missing:
            raise FileFormatError(f"not a Caffe HDF5 solver state: no {', '.join(missing)}",
                                  file=path)
        state.iter = int(f["iter"][()])
        learned = f["learned_net"][()]
        state.learned_net = learned.decode() if isinstance(learned, bytes) else str(learned)
        if "current_step" in f:
            state.current_step = int(f["current_step"][()])
        for arr in _indexed(f["history"], path, "history"):
            state.history.add().CopyFrom(_blob(arr))
        if "netdef_resume" in f:
            state.netdef_resume.ParseFromString(f["netdef_resume"][()].tobytes())
    return state
