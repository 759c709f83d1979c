"""Background batch preparation for data layers (Caffe's prefetch queue), deterministic.

One worker thread per data layer reads and transforms batches into a bounded queue while the
net computes.  All randomness of the data path (crop offsets, mirror, list shuffles) comes from
the layer's own generator, used only by the worker, in batch order — so the batches are the
same as without prefetching.  Every batch carries the reader state *after* it (source position
and generator state); the layer reports the state of the last batch it consumed, which is what
a snapshot must store for an exact resume.
"""
from __future__ import annotations

import json
import queue
import threading

import numpy as np


def rng_state(rng: np.random.Generator) -> bytes:
    return json.dumps(rng.bit_generator.state).encode()


def set_rng_state(rng: np.random.Generator, raw: bytes) -> None:
    rng.bit_generator.state = json.loads(raw.decode())


class Prefetcher:
    """``make_batch()`` (called in the worker) returns a batch; ``state()`` the reader state
    after it.  ``get()`` returns (batch, state) in order."""

    _STOP = object()

    def __init__(self, make_batch, state, depth: int = 4):
        self.make_batch = make_batch
        self.state = state
        self.q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="netdef-prefetch")
        self.thread.start()

    def _run(self):
        while not self.stop_event.is_set():
            try:
                item = (self.make_batch(), self.state(), None)
            except BaseException as e:  # forwarded to the consumer
                item = (None, None, e)
            while not self.stop_event.is_set():
                try:
                    self.q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def get(self):
        batch, state, err = self.q.get()
        if err is not None:
            raise err
        return batch, state

    def close(self) -> None:
        self.stop_event.set()
        while self.thread.is_alive():
            try:
                self.q.get_nowait()
            except queue.Empty:
                pass
            self.thread.join(timeout=0.05)
