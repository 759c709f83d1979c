"""`netdef train` as a process: a run killed with SIGKILL between snapshots resumes from the
last snapshot and ends bit-equal to the uninterrupted run; 22 kills timed inside snapshot
writes (binary and HDF5) always resume from the newest snapshot and leave no temp file behind
the next start; damaged snapshot files are refused."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from netdef.io.weights import load_caffemodel

NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 16 dim: 8 } shape { dim: 16 dim: 2 }
    data_filler { type: "gaussian" } data_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
  inner_product_param { num_output: 32 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "drop" type: "Dropout" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "p"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""


def write(tmp_path, name, max_iter, snapshot):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / f"{name}.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" '
        f'max_iter: {max_iter} snapshot: {snapshot} snapshot_prefix: "{tmp_path / name}" '
        f'random_seed: 5 display: 0 solver_mode: CPU')
    return str(tmp_path / f"{name}.prototxt")


def netdef(*args, **kw):
    return [sys.executable, "-m", "netdef_cli.main", *map(str, args)]


def weights(path):
    return {l.name: [np.asarray(b.data) for b in l.blobs] for l in load_caffemodel(path).layer
            if len(l.blobs)}


def test_sigkill_then_resume_is_bit_equal(tmp_path):
    full = write(tmp_path, "full", 400, 0)
    subprocess.run(netdef("train", "--solver", full), check=True, capture_output=True)
    reference = weights(str(tmp_path / "full_iter_400.caffemodel"))

    killed = write(tmp_path, "run", 400, 50)
    proc = subprocess.Popen(netdef("train", "--solver", killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    target = tmp_path / "run_iter_100.solverstate"
    while not target.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = sorted(tmp_path.glob("run_iter_*.solverstate"),
                    key=lambda p: int(p.stem.split("_")[-1]))
    assert states, "no snapshot was written before the kill"
    last = states[-1]
    if int(last.stem.split("_")[-1]) == 400:
        pytest.skip("the run finished before it could be killed")
    r = subprocess.run(netdef("train", "--solver", killed, "--snapshot", last),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    resumed = weights(str(tmp_path / "run_iter_400.caffemodel"))
    assert resumed.keys() == reference.keys()
    for k in reference:
        for a, b in zip(reference[k], resumed[k]):
            np.testing.assert_array_equal(a, b)


def test_damaged_snapshots_are_refused(tmp_path):
    solver = write(tmp_path, "s", 20, 20)
    subprocess.run(netdef("train", "--solver", solver), check=True, capture_output=True)
    model = tmp_path / "s_iter_20.caffemodel"
    state = tmp_path / "s_iter_20.solverstate"
    raw = model.read_bytes()
    for name, data in (("trunc.caffemodel", raw[: len(raw) // 2]),
                       ("foreign.caffemodel", b"\x89PNG\r\n\x1a\n" + os.urandom(64))):
        (tmp_path / name).write_bytes(data)
        r = subprocess.run(netdef("train", "--solver", solver, "--weights", tmp_path / name),
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and name in r.stderr
    raw = state.read_bytes()
    (tmp_path / "trunc.solverstate").write_bytes(raw[: len(raw) - 7])
    r = subprocess.run(netdef("train", "--solver", solver, "--snapshot",
                              tmp_path / "trunc.solverstate"), capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "trunc.solverstate" in r.stderr


CHILD = r"""
import sys
from netdef.io import files, hdf5_snapshot
real = files.write_through

def announced(path, write_tmp):          # tells the parent a snapshot file is being written
    sys.stdout.write("w")
    sys.stdout.flush()
    return real(path, write_tmp)

files.write_through = hdf5_snapshot.write_through = announced
from netdef.config import load_solver
from netdef.solvers.solver import Solver
Solver(load_solver(sys.argv[1])).solve(sys.argv[2] if len(sys.argv) > 2 else None)
"""

BIG_NET = NET.replace("num_output: 32", "num_output: 4096")      # ~1.5 MB of snapshot per write


@pytest.mark.parametrize("fmt,kills", [("BINARYPROTO", 12), ("HDF5", 10)])
def test_kills_inside_snapshot_writes_always_resume(tmp_path, fmt, kills):
    """SIGKILL timed inside snapshot writes (the child announces each file it starts to write;
    the parent kills it 0-4 ms after the n-th announcement), again and again: every restart
    resumes from the newest .solverstate, and the temp files of killed writers are gone once
    the next run has started."""
    if fmt == "HDF5":
        pytest.importorskip("h5py")
    rng = np.random.default_rng(11)
    (tmp_path / "net.prototxt").write_text(BIG_NET)
    ext = ".h5" if fmt == "HDF5" else ""
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.001 momentum: 0.9 '
                      f'lr_policy: "fixed" max_iter: 1000000 snapshot: 1 display: 0 '
                      f'snapshot_prefix: "{tmp_path / "s"}" snapshot_format: {fmt} '
                      f'random_seed: 5')

    def states():
        return sorted(tmp_path.glob(f"s_iter_*.solverstate{ext}"),
                      key=lambda p: int(p.name.split("_iter_")[1].split(".")[0]))

    resumed_from = []
    torn = 0                    # kills that left a partial temp file: inside a write
    for k in range(kills):
        newest = states()[-1] if states() else None
        args = [sys.executable, "-c", CHILD, str(solver)] + ([str(newest)] if newest else [])
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        target = int(rng.integers(1, 7)) if k else 5     # the first run completes 2 snapshots
        seen = 0
        while seen < target:
            ch = proc.stdout.read(1)
            if not ch:
                pytest.fail(f"run {k} (resuming from {newest}) ended: "
                            f"{proc.stderr.read().decode()[-2000:]}")
            seen += 1
        if seen == 1:
            # started and past its start-up: no temp file of an earlier (dead) run is left
            stale = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name
                     and f".tmp-{proc.pid}-" not in p.name]
            assert stale == [], stale
        time.sleep(float(rng.uniform(0, 0.004)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        torn += any(f".tmp-{proc.pid}-" in p.name for p in tmp_path.iterdir())
        proc.stdout.close()
        proc.stderr.close()
        resumed_from.append(newest)
    assert sum(r is not None for r in resumed_from) == kills - 1
    print(f"{torn} of {kills} kills landed inside a write")
    # a last start resumes from the newest state and ends cleanly, leaving no temp file
    newest = states()[-1]
    it = int(newest.name.split("_iter_")[1].split(".")[0])
    solver.write_text(solver.read_text().replace("max_iter: 1000000", f"max_iter: {it + 2}"))
    r = subprocess.run([sys.executable, "-c", CHILD, str(solver), str(newest)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / f"s_iter_{it + 2}.solverstate{ext}").exists()
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
