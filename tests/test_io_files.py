"""netdef.io.files: the one whole-file writer (temp file, fsync, umask mode, rename) and the
bounded regular-file reader; snapshots through it (umask, full-file-size limit, stale temp
files, a snapshot folder that cannot be written)."""
import os
import subprocess
import sys

import pytest

from netdef.errors import ConfigError
from netdef.io.files import WriteError, read_regular, remove_stale_temps, write_file


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_write_file_honours_the_umask_and_leaves_no_temp(tmp_path, umask022):
    p = tmp_path / "out.bin"
    write_file(str(p), b"abc")
    assert p.read_bytes() == b"abc" and (p.stat().st_mode & 0o777) == 0o644
    os.umask(0o077)
    write_file(str(p), "text é")
    assert p.read_text(encoding="utf-8") == "text é" and (p.stat().st_mode & 0o777) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]


def test_file_size_limit_is_one_error_and_the_old_file_survives(tmp_path):
    """RLIMIT_FSIZE (ulimit -f) makes write() fail with EFBIG (Python ignores SIGXFSZ)."""
    target = tmp_path / "model.caffemodel"
    target.write_bytes(b"old")
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "from netdef.io.files import write_file, WriteError\n"
            "try:\n"
            f"    write_file({str(target)!r}, b'x' * 100000)\n"
            "except WriteError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (f"{target}: cannot write: the file is too large (file size "
                                  f"limit, ulimit -f); nothing was replaced (the file there "
                                  f"before, if any, is intact)")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.caffemodel"]


def test_stale_temps_of_dead_processes_are_removed(tmp_path):
    dead = tmp_path / ".snap_iter_5.caffemodel.tmp-999999999-ab12cd34"
    live = tmp_path / f".snap_iter_5.caffemodel.tmp-{os.getpid()}-ab12cd34"
    other = tmp_path / ".other.tmp-999999999-ab12cd34"
    for p in (dead, live, other):
        p.write_bytes(b"partial")
    assert remove_stale_temps(str(tmp_path), "snap") == [str(dead)]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name])


def test_read_regular_refuses_devices_and_caps_size(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        read_regular("/dev/zero")
    p = tmp_path / "f"
    p.write_bytes(b"12345")
    assert read_regular(str(p), max_bytes=5) == b"12345"
    with pytest.raises(ConfigError, match="5 bytes is too large for a file \\(at most 4\\)"):
        read_regular(str(p), max_bytes=4)


NET = """layer { name: "d" type: "DummyData" top: "x" top: "y" dummy_data_param {
  shape { dim: 4 dim: 3 } shape { dim: 4 dim: 1 } data_filler { type: "gaussian" } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p" inner_product_param {
  num_output: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" }
"""


def _solver(tmp_path, prefix, extra="", snapshot=1):
    from netdef.config import load_solver
    from netdef.solvers.solver import Solver
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.01 lr_policy: "fixed" max_iter: 2\n'
        f'snapshot: {snapshot}\nsnapshot_prefix: "{prefix}"\nrandom_seed: 1 {extra}\n')
    return Solver(load_solver(str(tmp_path / "solver.prototxt")))


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_snapshots_are_written_with_the_umask_mode(tmp_path, umask022, fmt):
    if fmt == "HDF5":
        pytest.importorskip("h5py")
    stale = tmp_path / "snaps" / ".s_iter_1.solverstate.tmp-999999999-00000000"
    stale.parent.mkdir()
    stale.write_bytes(b"torn")
    s = _solver(tmp_path, tmp_path / "snaps" / "s", f"snapshot_format: {fmt}")
    s.solve()
    names = sorted(os.listdir(tmp_path / "snaps"))
    ext = ".h5" if fmt == "HDF5" else ""
    assert [n for n in names if "_iter_2" in n] == [f"s_iter_2.caffemodel{ext}",
                                                    f"s_iter_2.solverstate{ext}"]
    assert not any(".tmp-" in n for n in names)                     # the stale one is gone
    for n in names:
        if "_iter_" in n:
            assert (os.stat(tmp_path / "snaps" / n).st_mode & 0o777) == 0o644


def test_unwritable_snapshot_folder_fails_before_training(tmp_path):
    (tmp_path / "afile").write_text("")
    s = _solver(tmp_path, tmp_path / "afile" / "snap")
    with pytest.raises(ConfigError) as e:
        s.solve()
    assert e.value.field == "snapshot_prefix" and e.value.line == 3
    assert "snapshots would fail after training" in str(e.value)
    assert s.iter == 0                                               # nothing was trained


def test_full_disk_during_a_snapshot_says_the_previous_one_is_intact(tmp_path, monkeypatch):
    import errno
    from netdef.io import files
    s = _solver(tmp_path, tmp_path / "s", snapshot=0)
    s.step(1)
    s.snapshot()
    real = files.write_through

    def full(path, write_tmp):
        def write(tmp):
            write_tmp(tmp)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, write)
    monkeypatch.setattr(files, "write_through", full)
    s.step(1)
    with pytest.raises(WriteError) as e:
        s.snapshot()
    assert str(e.value).endswith("snapshot at iteration 2 failed: cannot write: no space left "
                                 "on the device; nothing was replaced (the file there before, "
                                 "if any, is intact); the previous snapshot (iteration 1) is "
                                 "intact")
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith("s_")) == [
        "s_iter_1.caffemodel", "s_iter_1.solverstate"]
