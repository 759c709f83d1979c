"""snapshot_format: HDF5 — Caffe's ``.caffemodel.h5`` / ``.solverstate.h5`` layout, bit-exact
resume from them, --weights from an HDF5 model, and damaged files refused."""
import os

import numpy as np
import pytest

from netdef.config import load_solver
from netdef.errors import NetdefError
from netdef.io.weights import copy_trained_layers, load_caffemodel
from shared_paths import CORPUS
from test_solvers import final_weights, solver_def

h5py = pytest.importorskip("h5py")


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_hdf5_resume_is_bit_exact(tmp_path, kind):
    from netdef.solvers.solver import Solver
    a = Solver(solver_def(tmp_path, "snapshot_format: HDF5", kind))
    a.solve()
    full = final_weights(a)
    b = Solver(solver_def(tmp_path, "snapshot_format: HDF5 max_iter: 9", kind))
    b.solve()
    model, state = b.snapshot()
    assert os.path.basename(model) == "snap_iter_9.caffemodel.h5"
    assert os.path.basename(state) == "snap_iter_9.solverstate.h5"
    c = Solver(solver_def(tmp_path, "snapshot_format: HDF5", kind))
    c.solve(resume=state)
    for x, y in zip(full, final_weights(c)):
        np.testing.assert_array_equal(x, y)


def test_hdf5_files_have_caffes_layout(tmp_path):
    from netdef.solvers.solver import Solver
    s = Solver(solver_def(tmp_path, "snapshot_format: HDF5 snapshot: 10 max_iter: 10"))
    s.solve()
    model = tmp_path / "snap_iter_10.caffemodel.h5"
    with h5py.File(model, "r") as f:
        assert sorted(f["data"].keys()) == ["data", "drop", "ip1", "ip2", "loss", "relu"]
        assert sorted(f["data/ip1"].keys()) == ["0", "1"]
        np.testing.assert_array_equal(f["data/ip1/0"][()], s.params[0].blob.data)
        assert f["data/ip1/0"].dtype == np.float32 and f["data/ip1/1"].shape == (6,)
    with h5py.File(tmp_path / "snap_iter_10.solverstate.h5", "r") as f:
        assert int(f["iter"][()]) == 10 and int(f["current_step"][()]) == 1
        assert f["learned_net"][()].decode() == str(model)
        assert sorted(f["history"].keys()) == ["0", "1", "2", "3"]
        np.testing.assert_array_equal(f["history/2"][()], s.history[2])
    # --weights from the HDF5 model: same values as the binary path would give
    net = load_caffemodel(str(model))
    fresh = Solver(solver_def(tmp_path, "snapshot_format: HDF5 random_seed: 3"))
    assert sorted(copy_trained_layers(fresh.net, net, str(model))) == ["ip1", "ip2"]
    for x, y in zip(final_weights(s), final_weights(fresh)):
        np.testing.assert_array_equal(x, y)
    assert not list(tmp_path.glob(".tmp-*"))


def test_damaged_hdf5_snapshots_are_refused(tmp_path):
    from netdef.solvers.solver import Solver
    s = Solver(solver_def(tmp_path, "snapshot_format: HDF5 snapshot: 5 max_iter: 5"))
    s.solve()
    state = tmp_path / "snap_iter_5.solverstate.h5"
    raw = state.read_bytes()
    state.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(NetdefError, match="snap_iter_5.solverstate.h5"):
        Solver(solver_def(tmp_path, "snapshot_format: HDF5")).restore(str(state))
    (tmp_path / "foreign.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(NetdefError, match="foreign.h5"):
        load_caffemodel(str(tmp_path / "foreign.h5"))
    with h5py.File(tmp_path / "other.caffemodel.h5", "w") as f:
        f.create_dataset("weights", data=np.zeros(3))
    with pytest.raises(NetdefError, match="no 'data' group"):
        load_caffemodel(str(tmp_path / "other.caffemodel.h5"))


def test_bvlc_hdf5_solver_loads_unchanged():
    d = load_solver(os.path.join(CORPUS, "cifar10", "cifar10_quick_solver_lr1.prototxt"))
    assert d.message.snapshot_format == d.message.HDF5


def test_hdf5_bomb_is_refused_before_reading(tmp_path):
    """A 3 KB .caffemodel.h5 declaring a 20 GB compressed dataset (nothing stored): refused
    from its metadata, not expanded. A small genuine model still loads."""
    bomb = tmp_path / "bomb.caffemodel.h5"
    with h5py.File(bomb, "w") as f:
        f.create_group("data/conv1").create_dataset(
            "0", shape=(50000, 100000), dtype="f4", compression="gzip", chunks=(1000, 1000))
    assert os.path.getsize(bomb) < 10_000
    with pytest.raises(NetdefError, match=r"dataset data/conv1/0 declares \[50000, 100000\] = "
                                          r"20,000,000,000 bytes but stores 0"):
        load_caffemodel(str(bomb))
    text = tmp_path / "text.caffemodel.h5"
    with h5py.File(text, "w") as f:
        f.create_group("data/conv1").create_dataset("0", data=np.array([b"ab", b"cd"]))
    with pytest.raises(NetdefError, match=r"holds \|S2 values, not numbers"):
        load_caffemodel(str(text))
    ok = tmp_path / "ok.caffemodel.h5"
    with h5py.File(ok, "w") as f:
        f.create_group("data/ip").create_dataset("0", data=np.arange(6, dtype="f4").reshape(2, 3))
    blobs = load_caffemodel(str(ok)).layer[0].blobs
    assert list(blobs[0].shape.dim) == [2, 3] and list(blobs[0].data) == [0, 1, 2, 3, 4, 5]
