"""The frozen model file (``.netdef``): one binary ``NetParameter`` readable by Caffe.

Layout::

    [NetParameter{ netdef_deploy = NetdefDeploy{..., body_size, body_sha256} }]   header
    [NetParameter{ name, layer = [... with blobs, like a .caffemodel] }]         body

Both parts are serialised NetParameters, so the concatenation parses as one NetParameter (a
protobuf reader merges them): Caffe sees a deploy net with its weights and ignores field 1000,
``netdef_deploy`` (inputs and their preprocessing, outputs, labels, fused activations, the
freeze report).  The header comes first, so a reader knows the body's length and checksum
before trusting it: a truncated, modified or foreign file is an error, never a wrong model.

Reading is data only — protobuf and numpy, no pickle, no imports named by the file — and
every declared size is checked against the bytes present before anything is allocated.
Needs only numpy and protobuf (the deploy extra).
"""
from __future__ import annotations

import hashlib

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import ConfigError, FileFormatError
from ..io.files import read_regular, write_file
from ..io.weights import blob_shape, check_blob
from ..proto import pb

FORMAT_VERSION = 1
#: tag of NetParameter field 1000 (netdef_deploy), length-delimited: a frozen file starts so
MAGIC = bytes([0xC2, 0x3E])
#: one input may hold at most this many elements (a declared shape beyond it is refused)
MAX_INPUT_ELEMENTS = 1 << 31
#: layer types a frozen model may not contain: they read or write files, or run Python code
FORBIDDEN_TYPES = {"Data", "ImageData", "HDF5Data", "HDF5Output", "WindowData", "MemoryData"}
PYTHON_TYPES = {"Python"}


def encode(net_param, deploy) -> bytes:
    """Bytes of a frozen file: ``net_param`` (layers with blobs; any netdef_deploy dropped) and
    ``deploy`` (a ``pb.NetdefDeploy``; body size and checksum are filled in)."""
    body_msg = pb.NetParameter()
    body_msg.CopyFrom(net_param)
    body_msg.ClearField("netdef_deploy")
    body = body_msg.SerializeToString()
    d = pb.NetdefDeploy()
    d.CopyFrom(deploy)
    d.format_version = FORMAT_VERSION
    d.body_size = len(body)
    d.body_sha256 = hashlib.sha256(body).digest()
    header = pb.NetParameter()
    header.netdef_deploy.CopyFrom(d)
    return header.SerializeToString() + body


def write_frozen(path: str, net_param, deploy) -> int:
    """Write a frozen model to ``path`` atomically; returns its size in bytes."""
    data = encode(net_param, deploy)
    write_file(path, data)
    return len(data)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise IndexError
        b = data[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def _sniff(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return " (it is a PNG image)"
    if data[:3] == b"\xff\xd8\xff":
        return " (it is a JPEG image)"
    if data[:6] == b"\x93NUMPY":
        return " (it is a .npy array)"
    if data[:4] == b"PK\x03\x04":
        return " (it is a zip archive, e.g. .npz)"
    if data[:8] == b"\x89HDF\r\n\x1a\n":
        return " (it is an HDF5 file)"
    try:
        msg = pb.NetParameter.FromString(data)
        if len(msg.layer) or len(msg.layers):
            return (" (it looks like a Caffe net or .caffemodel: make a frozen model from it "
                    "with `netdef freeze --model NET --weights WEIGHTS`)")
    except Exception:
        pass
    return ""


def blob_array(bp, shape=None) -> np.ndarray:
    if len(bp.double_data):
        arr = np.asarray(bp.double_data, dtype=np.float64).astype(np.float32)
    else:
        arr = np.asarray(bp.data, dtype=np.float32)
    return arr.reshape(blob_shape(bp) if shape is None else shape)


class FrozenModel:
    """A parsed frozen file: ``net`` (NetParameter, layers with blobs), ``deploy``
    (NetdefDeploy), ``weights`` (layer name -> list of float32 arrays)."""

    def __init__(self, net, deploy, weights: dict, path: str | None = None):
        self.net = net
        self.deploy = deploy
        self.weights = weights
        self.path = path

    @property
    def inputs(self) -> list[str]:
        return [i.name for i in self.deploy.input]

    @property
    def outputs(self) -> list[str]:
        return list(self.deploy.output)

    @property
    def labels(self) -> list[str]:
        return list(self.deploy.label)

    def definition(self):
        """The NetParameter without blobs (what a Net is built from)."""
        d = pb.NetParameter()
        d.CopyFrom(self.net)
        for lp in d.layer:
            del lp.blobs[:]
        d.ClearField("netdef_deploy")
        return d


def decode(data: bytes, path: str | None = None, *, allow_python_layers: bool = False) \
        -> FrozenModel:
    """Parse and check the bytes of a frozen file (see the module doc)."""
    size = len(data)
    if size == 0:
        raise FileFormatError("empty file: not a netdef frozen model", file=path)
    if data[:2] != MAGIC:
        raise FileFormatError("not a netdef frozen model (no netdef_deploy header)"
                              + _sniff(data), file=path)
    try:
        hlen, pos = _varint(data, 2)
    except IndexError:
        raise FileFormatError("truncated file: the header is cut short", file=path) from None
    if pos + hlen > size:
        raise FileFormatError(f"truncated file: the header needs {pos + hlen:,} bytes, the file "
                              f"has {size:,}", file=path)
    deploy = pb.NetdefDeploy()
    try:
        deploy.ParseFromString(data[pos:pos + hlen])
    except DecodeError as e:
        raise FileFormatError(f"not a netdef frozen model: corrupt header ({e})",
                              file=path) from None
    if deploy.format_version == 0 or not deploy.HasField("body_size"):
        raise FileFormatError("not a netdef frozen model (its header has no format version)",
                              file=path)
    if deploy.format_version > FORMAT_VERSION:
        raise FileFormatError(f"frozen model format {deploy.format_version} is newer than this "
                              f"netdef reads ({FORMAT_VERSION}); upgrade netdef", file=path)
    body = data[pos + hlen:]
    if len(body) != deploy.body_size:
        what = "truncated file" if len(body) < deploy.body_size else "trailing bytes"
        raise FileFormatError(f"{what}: the model body should be {deploy.body_size:,} bytes, "
                              f"the file holds {len(body):,}", file=path)
    if hashlib.sha256(body).digest() != deploy.body_sha256:
        raise FileFormatError("corrupt file: the model body does not match its checksum",
                              file=path)
    net = pb.NetParameter()
    try:
        net.ParseFromString(body)
    except (DecodeError, RecursionError) as e:
        raise FileFormatError(f"corrupt model body ({e})", file=path) from None
    if len(net.layers):
        raise FileFormatError("frozen models hold current-format layers only (found legacy V1 "
                              "`layers`)", file=path)
    weights: dict[str, list[np.ndarray]] = {}
    names = set()
    for lp in net.layer:
        if lp.type in PYTHON_TYPES and not allow_python_layers:
            raise FileFormatError(
                f"layer '{lp.name}' is a Python layer: a frozen model from an untrusted source "
                f"must not import code; load it with allow_python_layers=True (CLI: "
                f"--allow-python-layers) only if you trust the file", file=path)
        if lp.type in FORBIDDEN_TYPES:
            raise FileFormatError(f"layer '{lp.name}' ({lp.type}) reads or writes files and is "
                                  f"not allowed in a frozen model", file=path)
        if lp.name in names:
            raise FileFormatError(f"layer name '{lp.name}' appears twice", file=path)
        names.add(lp.name)
        arrays = []
        for j, bp in enumerate(lp.blobs):
            shape = check_blob(bp, size, file=path, layer=lp.name, what=f"blob {j}")
            arrays.append(blob_array(bp, shape))
        weights[lp.name] = arrays
    if not len(deploy.input):
        raise FileFormatError("the frozen model declares no input", file=path)
    for inp in deploy.input:
        dims = [int(d) for d in inp.shape.dim]
        count = 1
        for d in dims:
            if d <= 0:
                raise FileFormatError(f"input '{inp.name}' has an invalid shape {dims}",
                                      file=path)
            count *= d
        if count > MAX_INPUT_ELEMENTS:
            raise FileFormatError(f"input '{inp.name}' declares shape {dims} = {count:,} "
                                  f"elements (more than {MAX_INPUT_ELEMENTS:,})", file=path)
        if inp.HasField("mean"):
            check_blob(inp.mean, size, file=path, what=f"the mean of input '{inp.name}'")
    _check_semantics(net, deploy, path)
    return FrozenModel(net, deploy, weights, path)


def _printable(s: str) -> bool:
    return not any(ord(c) < 0x20 or ord(c) == 0x7F for c in s)


def _check_semantics(net, deploy, path) -> None:
    """What a checksum cannot vouch for: names a later export would write into text (no
    control characters), inputs and outputs naming blobs of the net, image preprocessing on
    4-D inputs only, and a mean image that fits its input."""
    def bad(msg):
        return FileFormatError(f"inconsistent frozen model: {msg}", file=path)
    strings = [("input", i.name) for i in deploy.input] + [("output", o) for o in deploy.output]
    strings += [("label", l) for l in deploy.label]
    for lp in net.layer:
        strings += [("layer", lp.name), ("layer type", lp.type)]
        strings += [("top", t) for t in lp.top] + [("bottom", b) for b in lp.bottom]
    for what, s in strings:
        if not _printable(s):
            raise bad(f"{what} name {s!r} contains control characters")
    tops = {t for lp in net.layer for t in lp.top}
    if not len(deploy.output):
        raise bad("it declares no output")
    for o in deploy.output:
        if o not in tops:
            raise bad(f"output '{o}' is not a blob of the net")
    for inp in deploy.input:
        if inp.name not in tops:
            raise bad(f"input '{inp.name}' is not a blob of the net")
        dims = [int(d) for d in inp.shape.dim]
        image = inp.HasField("mean") or len(inp.mean_value) or inp.scale != 1
        if image and len(dims) != 4:
            raise bad(f"input '{inp.name}' carries image preprocessing but has shape {dims} "
                      f"(images are N x C x H x W)")
        if inp.channel_order and inp.channel_order not in ("BGR", "RGB", "GRAY"):
            raise bad(f"input '{inp.name}' has channel order {inp.channel_order!r} (BGR, RGB "
                      f"or GRAY)")
        if len(inp.mean_value) not in (0, 1) and len(dims) == 4 and \
                len(inp.mean_value) != dims[1]:
            raise bad(f"input '{inp.name}' has {len(inp.mean_value)} mean values for "
                      f"{dims[1]} channels")
        if inp.HasField("mean"):
            ms = list(blob_shape(inp.mean))
            if len(ms) == 4 and ms[0] == 1:
                ms = ms[1:]
            if len(ms) != 3 or ms[0] != dims[1] or ms[1] < dims[2] or ms[2] < dims[3]:
                raise bad(f"the mean of input '{inp.name}' has shape {list(blob_shape(inp.mean))}"
                          f", which does not fit the input {dims} (C x H x W, at least the "
                          f"input's size)")


def read_frozen(path: str, *, allow_python_layers: bool = False) -> FrozenModel:
    """Read and check a frozen model file; every problem is a one-line FileFormatError."""
    path = str(path)
    try:
        data = read_regular(path, "frozen model")
    except ConfigError as e:
        raise FileFormatError(e.message, file=path) from None
    return decode(data, path, allow_python_layers=allow_python_layers)
