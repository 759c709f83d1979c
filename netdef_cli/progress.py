"""A one-line progress bar on a terminal for `netdef train` and `netdef test`::

    iter 1200/10000 [##........] 12% 35.1 it/s loss 0.231 eta 4m10s

It redraws itself in place (carriage return) at most every ``min_interval`` seconds, and gets
out of the way of log records: the netdef log handler (:class:`netdef_cli.logfmt.GlogHandler`)
clears the line before it writes a record and draws it again after, so the log itself holds
exactly the lines it holds without a bar.  Off when the stream is not a terminal (pipes,
files, CI), unless forced.
"""
from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from collections import deque


def format_duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def wanted(flag: bool | None, stream) -> bool:
    """``--progress/--no-progress`` when given, else: is the stream a terminal."""
    if flag is not None:
        return flag
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    def __init__(self, total: int, stream=None, *, width: int = 10, label: str = "iter",
                 min_interval: float = 0.1, clock=time.monotonic, columns: int | None = None):
        self.total = max(int(total), 0)
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.label = label
        self.min_interval = min_interval
        self.clock = clock
        self.columns = columns
        self.line = ""            # what is on the screen now ("" = nothing)
        self.state = None         # the latest (iteration, loss)
        self.samples: deque = deque(maxlen=30)   # (time, iteration) for the rate
        self.next_draw = 0.0
        self.closed = False
        self.lock = threading.RLock()
        self.handlers: list = []   # log handlers that clear the bar (attach)

    # -- text --------------------------------------------------------------------------
    def rate(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, i0), (t1, i1) = self.samples[0], self.samples[-1]
        return (i1 - i0) / (t1 - t0) if t1 > t0 and i1 > i0 else None

    def render(self, it: int, loss: float | None = None) -> str:
        parts = [f"{self.label} {it}/{self.total}" if self.total else f"{self.label} {it}"]
        if self.total:
            frac = min(max(it / self.total, 0.0), 1.0)
            fill = int(frac * self.width)
            parts.append(f"[{'#' * fill}{'.' * (self.width - fill)}] {int(frac * 100)}%")
        r = self.rate()
        if r is None:
            parts.append("-- it/s")
        elif r >= 1:
            parts.append(f"{r:.1f} it/s")
        else:
            parts.append(f"{1 / r:.1f} s/it")
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        if self.total:
            parts.append("eta " + (format_duration((self.total - it) / r) if r else "--"))
        return " ".join(parts)

    # -- screen ------------------------------------------------------------------------
    def _fit(self, text: str) -> str:
        cols = self.columns or shutil.get_terminal_size((80, 24)).columns
        return text[:max(cols - 1, 10)]   # never wrap: a wrapped line cannot be taken back

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):    # closed or broken stream: stop drawing
            self.closed = True

    def update(self, it: int, loss: float | None = None, *, force: bool = False) -> None:
        """Iteration ``it`` is done; redraws when ``min_interval`` has passed."""
        if self.closed:
            return
        now = self.clock()
        self.samples.append((now, it))
        self.state = (it, loss)
        if not force and now < self.next_draw and it < self.total:
            return
        self.next_draw = now + self.min_interval
        with self.lock:
            self._draw(self._fit(self.render(it, loss)))

    def _draw(self, text: str) -> None:
        pad = " " * max(len(self.line) - len(text), 0)
        self._write("\r" + text + pad)
        self.line = text

    def clear(self) -> None:
        """Take the line off the screen (before something else is written)."""
        with self.lock:
            if self.line:
                self._write("\r" + " " * len(self.line) + "\r")
                self.line = ""

    def redraw(self) -> None:
        """Put the line back, up to date (after a log record)."""
        with self.lock:
            if self.state is not None and not self.line and not self.closed:
                self._draw(self._fit(self.render(*self.state)))

    def close(self) -> None:
        self.clear()
        self.closed = True

    # -- log handlers ------------------------------------------------------------------
    def attach(self, logger: str = "netdef") -> ProgressBar:
        """Make the logger's netdef handlers (those with a ``status`` slot, see
        :class:`netdef_cli.logfmt.GlogHandler`) clear the bar before each record."""
        for h in logging.getLogger(logger).handlers:
            if hasattr(h, "status") and h not in self.handlers:
                h.status = self
                self.handlers.append(h)
        return self

    def detach(self) -> None:
        for h in self.handlers:
            if h.status is self:
                h.status = None
        self.handlers.clear()

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.close()
        self.detach()
        return False


def for_command(flag: bool | None, total: int, **kw) -> ProgressBar | None:
    """The bar a command shows on stderr, or None (not a terminal, or --no-progress)."""
    stream = sys.stderr
    return ProgressBar(total, stream, **kw) if wanted(flag, stream) else None
