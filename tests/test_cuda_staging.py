"""Staged input uploads (netdef.backend.cuda.staging): training with the batch uploaded on a
copy stream from pinned buffers is bit-identical to the synchronous path
(NETDEF_CUDA_SYNC_INPUT=1), uses the copy stream and pinned buffers, and copies exactly as
much.  NUMBA_ENABLE_CUDASIM=1 is set at import (see test_cuda_layers.py); the simulator runs
streams and events synchronously, so these tests check the code path, not the overlap."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from test_cuda_train import TINY, make_solver, weights  # noqa: E402

pytestmark = pytest.mark.gpu

SGD = 'type: "SGD" momentum: 0.9 weight_decay: 0.01'

MEMORY = """
layer { name: "data" type: "MemoryData" top: "x" top: "label"
        memory_data_param { batch_size: 4 channels: 6 height: 1 width: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss" }
"""

# the selector "sel" is read on the host only (Filter): never uploaded, so never staged
FILTER = """
layer { name: "data" type: "DummyData" top: "x" top: "t" top: "sel"
        dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 dim: 3 } shape { dim: 4 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "constant" value: 1 } } }
layer { name: "filter" type: "Filter" bottom: "x" bottom: "t" bottom: "sel"
        top: "xf" top: "tf" propagate_down: true propagate_down: false propagate_down: false }
layer { name: "ip" type: "InnerProduct" bottom: "xf" top: "y"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "tf" top: "loss" }
"""


def _memory_solver():
    s = make_solver(MEMORY, SGD)
    rng = np.random.default_rng(3)
    s.net.set_input_arrays(rng.normal(size=(12, 6, 1, 1)).astype(np.float32),
                           rng.integers(0, 3, size=12).astype(np.float32))
    return s


def _train(make, sync, monkeypatch, steps=3):
    """(solver, h2d and d2h per step after the first, parameter copies after the first)."""
    from netdef.backend.cuda import counters
    if sync:
        monkeypatch.setenv("NETDEF_CUDA_SYNC_INPUT", "1")
    else:
        monkeypatch.delenv("NETDEF_CUDA_SYNC_INPUT", raising=False)
    s = make()
    s.use_device(0)
    s.step(1)

    def param_copies():
        return sum(m.h2d + m.d2h for pi in s.params for m in (pi.blob.data_mem, pi.blob.diff_mem))

    before, stats = param_copies(), dict(counters.STATS)
    s.step(steps - 1)
    per_step = {k: (counters.STATS[k] - stats[k]) / (steps - 1) for k in ("h2d", "d2h")}
    return s, per_step, param_copies() - before


@pytest.mark.parametrize("make", [lambda: make_solver(TINY, SGD), _memory_solver],
                         ids=["dummy", "memory"])
def test_staged_training_is_bit_identical_to_sync(make, monkeypatch):
    staged, counts, copies = _train(make, False, monkeypatch)
    sync, sync_counts, sync_copies = _train(make, True, monkeypatch)
    assert sync.net.device.staging is None
    assert staged.net.device.staging.uploads == 2 * 2          # x and label, steps 2 and 3
    for a, b in zip(weights(staged), weights(sync)):
        assert np.array_equal(a, b)
    assert staged.device.loss_window.losses(1) == sync.device.loss_window.losses(1)
    # one upload per input blob and step, nothing down (the loss stays on the device), no
    # parameter copies: as without staging
    assert counts == sync_counts == {"h2d": 2, "d2h": 0}
    assert copies == sync_copies == 0


def test_staging_uses_the_copy_stream_pinned_buffers_and_events(monkeypatch):
    from netdef.backend.cuda.device import cuda, is_simulator
    c = cuda()
    pinned, copies, waits, records = set(), [], [], []
    real_pinned = c.pinned_array

    def pinned_array(*a, **k):
        arr = real_pinned(*a, **k)
        pinned.add(id(arr))
        return arr

    dev_cls, ev_cls = type(c.device_array(1)), type(c.event())
    real_copy, real_wait, real_record = dev_cls.copy_to_device, ev_cls.wait, ev_cls.record

    def copy_to_device(self, ary, stream=0):
        copies.append((id(ary), stream))
        return real_copy(self, ary, stream=stream)

    def wait(self, stream=0):
        waits.append((self, stream))
        return real_wait(self, stream)

    def record(self, stream=0):
        records.append((self, stream))
        return real_record(self, stream)

    monkeypatch.setattr(c, "pinned_array", pinned_array)
    monkeypatch.setattr(dev_cls, "copy_to_device", copy_to_device)
    monkeypatch.setattr(ev_cls, "wait", wait)
    monkeypatch.setattr(ev_cls, "record", record)
    monkeypatch.delenv("NETDEF_CUDA_SYNC_INPUT", raising=False)
    s = _memory_solver()
    s.use_device(0)
    s.step(1)                                     # observed: synchronous uploads
    st = s.net.device.staging
    assert st.uploads == 0 and [b.name for b in st.staged] == ["x", "label"]
    del copies[:], waits[:], records[:]
    s.step(2)
    assert st.uploads == 4 and st.stream is not None
    assert st.stream_kind == ("simulator" if is_simulator() else "non-blocking")
    staged_copies = [(a, strm) for a, strm in copies if strm is st.stream]
    assert len(staged_copies) == 4 and all(a in pinned for a, _ in staged_copies)
    # per upload: the copy stream waits (buffer free), records (copy done); the compute stream
    # records (reads issued) and waits for the copy at the first device read
    copied = {id(e) for u in st._bufs.values() for e in u.bufs.copied}
    assert sum(1 for e, strm in records if strm is st.stream and id(e) in copied) == 4
    assert sum(1 for e, strm in waits if strm == 0 and id(e) in copied) == 4
    assert sum(1 for _, strm in waits if strm is st.stream) == 4
    assert all(b.data_mem.pending is None for b in st.staged)     # every upload was waited for
    # the device mirror alternates between the two buffers
    for b in st.staged:
        assert any(b.data_mem.dev is d for d in st._bufs[id(b)].bufs.dev)


def test_host_only_input_is_not_staged(monkeypatch):
    staged, counts, _ = _train(lambda: make_solver(FILTER, SGD), False, monkeypatch)
    sync, sync_counts, _ = _train(lambda: make_solver(FILTER, SGD), True, monkeypatch)
    st = staged.net.device.staging
    assert [b.name for b in st.staged] == ["x", "t"]
    assert counts == sync_counts
    for a, b in zip(weights(staged), weights(sync)):
        assert np.array_equal(a, b)


def test_sync_switch(monkeypatch):
    from netdef.backend.cuda.staging import enabled
    monkeypatch.setenv("NETDEF_CUDA_SYNC_INPUT", "1")
    assert not enabled()
    monkeypatch.setenv("NETDEF_CUDA_SYNC_INPUT", "0")
    assert enabled()
