"""User-facing errors.

Every mistake a user can make in a definition, a command line or an input file raises a
:class:`NetdefError` (or a subclass).  Its ``str()`` is one line::

    path/net.prototxt:12:3: layer 'pool1' (Pooling): pad (3) must be smaller than kernel (3)

The CLI prints that line and exits with code 2; anything else is an internal error and keeps
its traceback.
"""
from __future__ import annotations


class NetdefError(Exception):
    """An error caused by user input (definition, file, flag): reported in one line."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 col: int | None = None, layer: str | None = None,
                 layer_type: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.col = col
        self.layer = layer
        self.layer_type = layer_type
        self.field = field

    def located(self, *, file=None, line=None, col=None, layer=None, layer_type=None):
        """Fill in location details that are still unknown; returns self."""
        if self.file is None and file is not None:
            self.file = file
        if self.line is None and line is not None:
            self.line, self.col = line, col
        if self.layer is None and layer is not None:
            self.layer = layer
        if self.layer_type is None and layer_type is not None:
            self.layer_type = layer_type
        return self

    def __str__(self) -> str:
        loc = ""
        if self.file:
            loc = str(self.file)
            if self.line is not None:
                loc += f":{self.line}"
                if self.col is not None:
                    loc += f":{self.col}"
            loc += ": "
        who = ""
        if self.layer is not None:
            who = f"layer '{self.layer}'"
            if self.layer_type:
                who += f" ({self.layer_type})"
            who += ": "
        return f"{loc}{who}{self.message}"


class ConfigError(NetdefError):
    """Syntax or schema error in a definition file, or an invalid parameter value."""


class ShapeError(NetdefError):
    """Shapes that do not fit together."""


class FileFormatError(NetdefError):
    """A binary file (caffemodel, solverstate, binaryproto, LMDB...) that cannot be read."""
