"""Caffe's (glog's) log line format, so tools like Caffe's parse_log.py read netdef's logs:
``I1127 01:40:00.123456 12345 solver.py:0] Iteration 100, loss = 0.2``."""
from __future__ import annotations

import logging
import os
import sys
import time


class GlogFormatter(logging.Formatter):
    LEVELS = {"DEBUG": "I", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "F"}

    def format(self, record):
        t = time.localtime(record.created)
        us = int((record.created % 1) * 1e6)
        head = (f"{self.LEVELS.get(record.levelname, 'I')}{t.tm_mon:02d}{t.tm_mday:02d} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{us:06d} {os.getpid():5d} "
                f"{record.module}.py:{record.lineno}] ")
        return head + record.getMessage()


def setup_logging(level=logging.INFO) -> None:
    root = logging.getLogger("netdef")
    if any(getattr(h, "_netdef", False) for h in root.handlers):
        return
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(GlogFormatter())
    h._netdef = True
    root.addHandler(h)
    root.setLevel(level)
