"""Caffe's (glog's) log line format, so tools like Caffe's parse_log.py read netdef's logs:
``I1127 01:40:00.123456 12345 solver.py:0] Iteration 100, loss = 0.2``."""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import ClassVar


class GlogFormatter(logging.Formatter):
    LEVELS: ClassVar[dict] = {"DEBUG": "I", "INFO": "I", "WARNING": "W", "ERROR": "E",
                              "CRITICAL": "F"}

    def format(self, record):
        t = time.localtime(record.created)
        us = int((record.created % 1) * 1e6)
        head = (f"{self.LEVELS.get(record.levelname, 'I')}{t.tm_mon:02d}{t.tm_mday:02d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{us:06d} {os.getpid():5d} "
                f"{record.module}.py:{record.lineno}] ")
        return head + record.getMessage()


class GlogHandler(logging.StreamHandler):
    """A stream handler that lets a live status line (``status``: an object with ``clear()``
    and ``redraw()``, e.g. :class:`netdef_cli.progress.ProgressBar`) get out of the way of
    each record, so the log holds the same lines with or without it."""

    status = None

    def __init__(self, stream=None):
        logging.Handler.__init__(self)
        self._stream = stream

    @property
    def stream(self):
        """The given stream, else whatever ``sys.stderr`` is now (so a second command run in
        the same process, as in tests, logs to its own stderr)."""
        return self._stream if self._stream is not None else sys.stderr

    @stream.setter
    def stream(self, value):
        self._stream = value

    def emit(self, record):
        status = self.status
        if status is None:
            return super().emit(record)
        status.clear()
        try:
            super().emit(record)
        finally:
            status.redraw()


def setup_logging(level=logging.INFO) -> None:
    root = logging.getLogger("netdef")
    if any(getattr(h, "_netdef", False) for h in root.handlers):
        return
    h = GlogHandler()
    h.setFormatter(GlogFormatter())
    h._netdef = True
    root.addHandler(h)
    root.setLevel(level)
