"""Weights in Caffe's `.caffemodel` format: a binary NetParameter whose layers carry blobs.

``copy_trained_layers`` copies by layer name, as Caffe does (layers the net lacks are skipped);
legacy files (V0/V1 layers, 4-D ``num/channels/height/width`` blob shapes) load unchanged.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError, FileFormatError, ShapeError
from ..proto import pb
from .files import write_file

log = logging.getLogger("netdef.weights")


def blob_proto_shape(bp) -> tuple[int, ...]:
    if bp.HasField("shape"):
        return tuple(int(d) for d in bp.shape.dim)
    return (bp.num, bp.channels, bp.height, bp.width)


def is_legacy(bp) -> bool:
    return not bp.HasField("shape") and any(
        bp.HasField(f) for f in ("num", "channels", "height", "width"))


def shape_matches(bp, shape: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: legacy 4-D dims match a shape of <= 4 axes padded with 1s."""
    if is_legacy(bp):
        if len(shape) > 4:
            return False
        return (1,) * (4 - len(shape)) + tuple(shape) == blob_proto_shape(bp)
    return blob_proto_shape(bp) == tuple(shape)


def blob_proto_array(bp, shape=None) -> np.ndarray:
    arr = np.asarray(bp.double_data if len(bp.double_data) else bp.data,
                     dtype=np.float64 if len(bp.double_data) else np.float32)
    shape = blob_proto_shape(bp) if shape is None else shape
    return arr.reshape(shape)


def blob_shape(bp) -> tuple[int, ...]:
    """The declared shape; a blob with neither ``shape`` nor legacy 4-D fields is 1-D over
    its values (frozen files and .caffemodel checks; :func:`blob_proto_shape` is Caffe's
    reading)."""
    if bp.HasField("shape"):
        return tuple(int(d) for d in bp.shape.dim)
    if any(bp.HasField(f) for f in ("num", "channels", "height", "width")):
        return (bp.num, bp.channels, bp.height, bp.width)
    return (len(bp.double_data) or len(bp.data),)


def check_blob(bp, file_size: int, *, file=None, layer=None, what="blob") -> tuple[int, ...]:
    """Shape of a BlobProto after checking that its declared size is what the file holds.
    Nothing is allocated: the count is computed with Python integers."""
    shape = blob_shape(bp)
    count = 1
    for d in shape:
        if d < 0:
            raise FileFormatError(f"{what} declares a negative dimension {list(shape)}",
                                  file=file, layer=layer)
        count *= d
    itemsize = 8 if len(bp.double_data) else 4
    n = len(bp.double_data) or len(bp.data)
    if count * itemsize > file_size:
        raise FileFormatError(
            f"{what} declares shape {list(shape)} = {count:,} values, more than the "
            f"{file_size:,}-byte file can hold (corrupt or malicious file)", file=file,
            layer=layer)
    if n != count:
        raise FileFormatError(f"{what} holds {n:,} values but its shape {list(shape)} needs "
                              f"{count:,} (truncated or corrupt file)", file=file, layer=layer)
    return shape


def to_blob_proto(array: np.ndarray, double: bool = False):
    bp = pb.BlobProto()
    bp.shape.dim.extend(array.shape)
    flat = np.asarray(array).reshape(-1)
    if double:
        bp.double_data.extend(flat.astype(np.float64).tolist())
    else:
        bp.data.extend(flat.astype(np.float32).tolist())
    return bp


def load_caffemodel(path: str):
    """The upgraded NetParameter of a (possibly legacy) .caffemodel, or of Caffe's HDF5
    ``.caffemodel.h5``."""
    from .hdf5_snapshot import is_hdf5, load_caffemodel_h5
    if is_hdf5(path):
        return load_caffemodel_h5(path)
    # imported here: the numpy-only frozen-model reader imports this module without netdef.config
    from ..config.loader import load_net
    d = load_net(path, fmt="binary")
    check_blob_sizes(d.message, _file_size(path), path)
    return d.message


def _file_size(path: str) -> int:
    import os
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def check_blob_sizes(net_param, file_size: int, file: str | None = None) -> None:
    """Refuse (one-line FileFormatError) any blob whose declared shape needs more bytes than
    the file holds, or whose values do not fill its shape -- checked with Python integers
    before anything is allocated from the declared shape (a hostile .caffemodel declaring a
    10^12-element blob is an error, not a 4 TB allocation).  Legacy V1 ``layers`` too."""
    for lp in list(net_param.layer) + list(net_param.layers):
        for j, bp in enumerate(lp.blobs):
            check_blob(bp, file_size, file=file, layer=lp.name or None, what=f"blob {j}")


def copy_trained_layers(net, source, file: str | None = None) -> list[str]:
    """Copy blobs from ``source`` (NetParameter with blobs) into ``net`` by layer name.
    Returns the names of the layers copied."""
    copied = []
    for lp in source.layer:
        if lp.name not in net.layer_index or not len(lp.blobs):
            log.info("Ignoring source layer %s", lp.name)
            continue
        layer = net.layers[net.layer_index[lp.name]]
        log.info("Copying source layer %s Type:%s #blobs=%d", lp.name, lp.type, len(lp.blobs))
        if len(lp.blobs) != len(layer.blobs):
            raise ShapeError(
                f"the weights have {len(lp.blobs)} blobs for this layer but the net's "
                f"{layer.type} has {len(layer.blobs)}; rename the layer in the definition "
                f"if it is not the same layer", file=file, layer=lp.name, layer_type=layer.type)
        for j, (bp, blob) in enumerate(zip(lp.blobs, layer.blobs)):
            if not shape_matches(bp, blob.shape):
                raise ShapeError(
                    f"blob {j} has shape {list(blob_proto_shape(bp))} in the weights but "
                    f"{list(blob.shape)} in the net; if this layer was changed on purpose "
                    f"(e.g. a new classifier), rename it so that its weights are not copied",
                    file=file, layer=lp.name, layer_type=layer.type)
            n = len(bp.double_data) or len(bp.data)
            if n != blob.count:
                raise FileFormatError(
                    f"blob {j} holds {n} values but its shape needs {blob.count} (truncated "
                    f"file?)", file=file, layer=lp.name)
            blob.data = blob_proto_array(bp, blob.shape).astype(blob.dtype)
            warn_not_finite(blob.data, f"layer '{lp.name}' blob {j}", file)
        copied.append(lp.name)
    return copied


def warn_not_finite(arr: np.ndarray, what: str, file: str | None = None) -> int:
    """Log a warning when ``arr`` holds NaN or +-inf (trained weights that diverged, a mean
    file written from broken data); returns how many values are not finite."""
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        log.warning("%s%s holds %d NaN or infinite value%s of %d", f"{file}: " if file else "",
                    what, bad, "" if bad == 1 else "s", arr.size)
    return bad


def load_weights(net, paths) -> list[str]:
    """``--weights a.caffemodel[,b.caffemodel]``: copy each file in turn."""
    if isinstance(paths, str):
        paths = [p for p in paths.split(",") if p]
    copied = []
    for p in paths:
        copied += copy_trained_layers(net, load_caffemodel(p), p)
    learnable = [l.name for l in net.layers if l.blobs]
    if paths and learnable and not copied:
        shown = ", ".join(learnable[:5]) + (", ..." if len(learnable) > 5 else "")
        raise ConfigError(f"no layer of the weights matches a layer of the net with "
                          f"parameters ({shown}) by name: nothing was copied; check that "
                          f"these weights belong to this net", file=",".join(paths))
    return copied


def net_to_proto(net, *, double: bool = False):
    """NetParameter holding the definition's layers with their current blobs."""
    out = pb.NetParameter()
    out.CopyFrom(net.param)
    del out.layer[:]
    by_name = {n: l for n, l in zip(net.layer_names, net.layers)}
    for lp in net.param.layer:
        new = out.layer.add()
        new.CopyFrom(lp)
        del new.blobs[:]
        layer = by_name.get(lp.name)
        if layer is not None:
            for blob in layer.blobs:
                new.blobs.add().CopyFrom(to_blob_proto(blob.data, double))
    return out


def save_caffemodel(net, path: str, *, double: bool = False) -> None:
    write_file(path, net_to_proto(net, double=double).SerializeToString())
