"""Load net and solver definitions from prototxt, YAML or binary protobuf files.

``load_net(path)`` returns a :class:`Definition`: the upgraded NetParameter, where each of its
fields was written (``where(path)``), and the notes of any legacy upgrade.  The format follows
the extension: ``.yaml``/``.yml`` are YAML, ``.caffemodel``/``.binaryproto``/``.pb``/``.netdef``
binary, anything else prototxt.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError

from ..errors import ConfigError, FileFormatError
from ..io.files import MAX_TEXT_BYTES, read_regular
from ..proto import pb
from .build import build_message
from .prototxt import parse_prototxt
from .upgrade import upgrade_net, upgrade_solver
from .yamlfmt import parse_yaml

YAML_EXTS = (".yaml", ".yml")
BINARY_EXTS = (".caffemodel", ".binaryproto", ".pb", ".netdef", ".solverstate")


def file_format(path: str) -> str:
    low = str(path).lower()
    if low.endswith(YAML_EXTS):
        return "yaml"
    if low.endswith(BINARY_EXTS):
        return "binary"
    return "prototxt"


@dataclass
class Definition:
    message: object
    file: str | None = None
    smap: dict = field(default_factory=dict)
    format: str = "prototxt"
    notes: list[str] = field(default_factory=list)

    def where(self, path: tuple) -> tuple[int | None, int | None]:
        """(line, col) of the text that wrote ``path`` (or of its closest enclosing field)."""
        path = tuple(path)
        while path:
            pos = self.smap.get(path)
            if pos is not None:
                return pos
            # ("layer", 3, "param") may be recorded as ("layer", 3, "param", 0)
            pos = self.smap.get(path + (0,))
            if pos is not None:
                return pos
            path = path[:-1]
        return (None, None)


def _read_text(path: str) -> str:
    raw = read_regular(path, "definition file", MAX_TEXT_BYTES)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError("not a text file (invalid UTF-8); binary files need the extension "
                          ".caffemodel or .binaryproto", file=path, line=line) from None


def parse_text(text: str, message, file: str | None = None, fmt: str = "prototxt") -> dict:
    """Parse ``text`` into ``message`` (cleared first); returns the source map."""
    tree = parse_yaml(text, file) if fmt == "yaml" else parse_prototxt(text, file)
    message.Clear()
    return build_message(tree, message, file, prototxt=(fmt != "yaml"))


def _load(path: str, message, fmt: str | None) -> Definition:
    path = str(path)
    fmt = fmt or file_format(path)
    if fmt == "binary":
        data = read_regular(path, f"binary {message.DESCRIPTOR.name}")
        try:
            message.ParseFromString(data)
        except DecodeError as e:
            raise FileFormatError(f"not a valid binary {message.DESCRIPTOR.name} "
                                  f"(truncated or foreign file: {e})", file=path) from None
        return Definition(message, path, {}, fmt)
    smap = parse_text(_read_text(path), message, path, fmt)
    return Definition(message, path, smap, fmt)


def load_net(path: str, fmt: str | None = None) -> Definition:
    d = _load(path, pb.NetParameter(), fmt)
    d.notes = upgrade_net(d.message, d.smap, d.file)
    return d


def net_from_text(text: str, fmt: str = "prototxt", file: str | None = None) -> Definition:
    msg = pb.NetParameter()
    smap = parse_text(text, msg, file, fmt)
    d = Definition(msg, file, smap, fmt)
    d.notes = upgrade_net(msg, smap, file)
    return d


def load_solver(path: str, fmt: str | None = None) -> Definition:
    d = _load(path, pb.SolverParameter(), fmt)
    d.notes = upgrade_solver(d.message, d.smap, d.file)
    return d


def load_message(path: str, message, fmt: str | None = None) -> Definition:
    """Load any message type without upgrades (e.g. NetState, BlobProto text)."""
    return _load(path, message, fmt)


def resolve(base_file: str | None, rel: str) -> str:
    """A path written inside a definition, as the user's shell would see it (Caffe resolves
    relative paths from the working directory; so do we)."""
    return os.path.expanduser(rel)
