"""Whole files in and out.

Reading the files the user names: only regular files (never a device, a FIFO or a directory,
so ``/dev/zero`` as a net or ``--weights /etc`` is one line, not a hang), and text definitions
only up to a size cap. Writing: every whole-file write of netdef (snapshots, weights, frozen
models, exports, generated definitions) goes through :func:`write_through` -- temp file,
fsync, umask mode, rename, fsync of the folder. Append-only files (logs, metrics) are the
exception.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from typing import Callable

from ..errors import ConfigError, NetdefError

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
    except ValueError:                      # an embedded NUL
        raise ConfigError("not a valid file name (it contains a NUL character)",
                          file=repr(path)) from None
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


# -- durable whole-file writes -------------------------------------------------------------------

class WriteError(NetdefError):
    """A file could not be written (full disk, file size limit, permissions)."""


_TMP = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)-[0-9a-z]+$")


def temp_path(path: str) -> str:
    """``.<name>.tmp-<pid>-<random>`` beside ``path``: where a file or folder is built before
    it is renamed to ``path`` (:func:`remove_stale_temps` knows the pattern)."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f".{base}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_error(path: str, e: OSError) -> WriteError:
    why = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "the file is too large "
           "(file size limit, ulimit -f)", errno.EDQUOT: "the disk quota is exceeded"}.get(
        e.errno, e.strerror or str(e))
    return WriteError(f"cannot write: {why}; nothing was replaced (the file there before, if "
                      f"any, is intact)", file=path)


def write_through(path: str, write_tmp: Callable[[str], None]) -> None:
    """The one way netdef writes a whole file: ``write_tmp(tmp)`` writes a temp file
    ``.<name>.tmp-<pid>-<random>`` beside ``path``, which is fsynced, given the mode the
    user's umask gives new files (0644 under umask 022), renamed over ``path``, and the folder
    fsynced -- so a crash or power loss leaves the old file or the new one, never a torn one.
    A full disk or a size limit is a :class:`WriteError` saying the old file is intact."""
    path = os.fspath(path)
    tmp = temp_path(path)
    try:
        write_tmp(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise _write_error(path, e) from None
        if isinstance(e, PermissionError):
            raise WriteError("cannot write: permission denied", file=path) from None
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_file(path: str, data: bytes | str) -> None:
    """Write ``data`` (text is UTF-8) to ``path`` durably: see :func:`write_through`."""
    raw = data.encode("utf-8") if isinstance(data, str) else data

    def write(tmp):
        with open(tmp, "xb") as f:
            f.write(raw)
    write_through(path, write)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: str, prefix: str = "") -> list[str]:
    """Delete temp files of :func:`write_through` in ``directory`` (for targets starting with
    ``prefix``) whose writing process is gone; returns their paths."""
    removed = []
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return removed
    for name in names:
        m = _TMP.match(name)
        if not m or not m.group("target").startswith(prefix) or _alive(int(m.group("pid"))):
            continue
        p = os.path.join(directory or ".", name)
        try:
            if os.path.isdir(p):
                import shutil
                shutil.rmtree(p)
            else:
                os.unlink(p)
            removed.append(p)
        except OSError:
            pass
    return removed
