"""Reading whole files the user names: only regular files (never a device, a FIFO or a
directory, so ``/dev/zero`` as a net or ``--weights /etc`` is one line, not a hang), and text
definitions only up to a size cap."""
from __future__ import annotations

import os
import stat

from ..errors import ConfigError

# a prototxt/YAML definition or solver: ResNet-152's deploy net is ~250 KB
MAX_TEXT_BYTES = 64 << 20


def read_regular(path: str, what: str = "file", max_bytes: int | None = None) -> bytes:
    """The bytes of ``path``; ConfigError (naming ``path``) when it is missing, not a regular
    file, unreadable or larger than ``max_bytes``."""
    path = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ConfigError("file not found", file=path) from None
    except IsADirectoryError:
        raise ConfigError(f"is a directory, not a {what}", file=path) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", file=path) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"is a directory, not a {what}", file=path)
        raise ConfigError(f"not a regular file (a device, pipe or socket), not a {what}",
                          file=path)
    with os.fdopen(fd, "rb") as f:
        if max_bytes is not None and st.st_size > max_bytes:
            raise ConfigError(f"{st.st_size:,} bytes is too large for a {what} "
                              f"(at most {max_bytes:,})", file=path)
        try:
            return f.read()
        except OSError as e:
            raise ConfigError(f"cannot read: {e.strerror}", file=path) from None
