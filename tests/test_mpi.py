"""Data-parallel training over MPI: two ranks of batch 32 end where one process of batch 64
ends; a rank that dies or raises ends the whole job quickly with a message; resume restores
every rank."""
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from netdef.io.weights import load_caffemodel
from shared_paths import DATA

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
MPIEXEC = shutil.which("mpiexec", path=BIN) or shutil.which("mpiexec")

pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'netdef[mpi]')")
pytest.importorskip("mpi4py")

SOLVER = """net: "{net}"
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75
display: 10 max_iter: {iters} snapshot: {snap} snapshot_prefix: "{prefix}" random_seed: 1701
solver_mode: CPU
"""


@pytest.fixture(scope="module")
def mnist_lmdb(tmp_path_factory):
    from netdef.data.mnist import convert_mnist
    d = tmp_path_factory.mktemp("mnist")
    mn = os.path.join(DATA, "mnist")
    convert_mnist(os.path.join(mn, "train-images-idx3-ubyte.gz"),
                  os.path.join(mn, "train-labels-idx1-ubyte.gz"), str(d / "train_lmdb"),
                  limit=3200)
    return str(d / "train_lmdb")


def lenet(tmp_path, lmdb, batch, name, iters=50, snap=0):
    with open(os.path.join(REPO, "model_zoo", "lenet", "lenet_train_test.prototxt")) as f:
        text = f.read()
    text = text.replace("examples/mnist/mnist_train_lmdb", lmdb)
    text = text.replace("batch_size: 64", f"batch_size: {batch}")
    (tmp_path / f"{name}_net.prototxt").write_text(text)
    (tmp_path / f"{name}.prototxt").write_text(SOLVER.format(
        net=tmp_path / f"{name}_net.prototxt", iters=iters, snap=snap,
        prefix=tmp_path / name))
    return str(tmp_path / f"{name}.prototxt")


def env():
    e = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    e["PATH"] = BIN + os.pathsep + e.get("PATH", "")
    return e


def netdef_cmd(*args):
    return [sys.executable, "-m", "netdef_cli.main", *map(str, args)]


def mpirun(n, *args, timeout=240):
    return subprocess.run([MPIEXEC, "-n", str(n), *netdef_cmd(*args)], capture_output=True,
                          text=True, env=env(), timeout=timeout, check=False,
                          start_new_session=True)


def weights(path):
    return {l.name: [np.asarray(b.data) for b in l.blobs]
            for l in load_caffemodel(str(path)).layer if len(l.blobs)}


def test_two_ranks_of_32_equal_one_process_of_64(tmp_path, mnist_lmdb):
    single = lenet(tmp_path, mnist_lmdb, 64, "single")
    r = subprocess.run(netdef_cmd("train", "--solver", single), capture_output=True, text=True,
                       env=env(), check=False)
    assert r.returncode == 0, r.stderr
    multi = lenet(tmp_path, mnist_lmdb, 32, "multi")
    r = mpirun(2, "train", "--solver", multi, "--check-sync", 10)
    assert r.returncode == 0, r.stderr
    assert "data-parallel over 2 MPI ranks: rank 0 = pid" in r.stderr
    # rank 0 alone logs
    assert r.stderr.count("Iteration 40 (") == 1
    a, b = weights(tmp_path / "single_iter_50.caffemodel"), weights(tmp_path /
                                                                   "multi_iter_50.caffemodel")
    for name in a:
        for x, y in zip(a[name], b[name]):
            assert np.abs(x - y).max() <= 1e-5 * np.abs(x).max(), name
    # and the comparison can fail: one rank alone (batch 32) ends elsewhere
    r = subprocess.run(netdef_cmd("train", "--solver", multi), capture_output=True, text=True,
                       env=env(), check=False)
    c = weights(tmp_path / "multi_iter_50.caffemodel")
    assert any(np.abs(x - y).max() > 1e-3 * np.abs(x).max()
               for name in a for x, y in zip(a[name], c[name]))


def test_resume_restores_every_rank(tmp_path, mnist_lmdb):
    full = lenet(tmp_path, mnist_lmdb, 32, "full", iters=30)
    r = mpirun(2, "train", "--solver", full)
    assert r.returncode == 0, r.stderr
    part = lenet(tmp_path, mnist_lmdb, 32, "part", iters=30, snap=10)
    r = mpirun(2, "train", "--solver", part, "--set", "max_iter=20")
    assert r.returncode == 0, r.stderr
    r = mpirun(2, "train", "--solver", part, "--snapshot", tmp_path / "part_iter_10.solverstate")
    assert r.returncode == 0, r.stderr
    a, b = weights(tmp_path / "full_iter_30.caffemodel"), weights(tmp_path /
                                                                 "part_iter_30.caffemodel")
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)


def test_a_killed_rank_ends_the_job_quickly(tmp_path, mnist_lmdb):
    solver = lenet(tmp_path, mnist_lmdb, 32, "long", iters=100000)
    proc = subprocess.Popen([MPIEXEC, "-n", "2", *netdef_cmd("train", "--solver", solver)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(), start_new_session=True)
    out = []
    deadline = time.time() + 120
    pid = None
    for line in proc.stdout:                      # wait until training runs
        out.append(line)
        if "rank 1 = pid" in line:
            pid = int(line.split("rank 1 = pid ")[1].split()[0])
        if pid and "Iteration 10 (" in line:
            break
        assert time.time() < deadline, "".join(out)
    assert pid is not None, "".join(out)
    os.kill(pid, 9)
    t0 = time.time()
    try:
        rest, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the job did not end within 30 s of a rank's death")
    assert time.time() - t0 < 30
    assert proc.returncode != 0
    assert f"PID {pid}" in rest or "Killed" in rest, rest


def test_an_exception_on_one_rank_aborts_all_naming_it(tmp_path, mnist_lmdb):
    solver = lenet(tmp_path, mnist_lmdb, 32, "boom", iters=100000)
    script = tmp_path / "boom.py"
    script.write_text(f"""
import sys
import netdef.solvers.solver as S
from netdef.parallel.mpi import init
ctx = init()
orig = S.Solver.apply_update
def bad(self, *a, **k):
    if ctx.rank == 1 and self.iter == 5:
        raise RuntimeError("boom at iteration 5")
    return orig(self, *a, **k)
S.Solver.apply_update = bad
from netdef_cli.main import main
sys.argv = ["netdef", "train", "--solver", {solver!r}]
main()
""")
    t0 = time.time()
    r = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script)], capture_output=True,
                       text=True, env=env(), timeout=120, check=False,
                       start_new_session=True)
    assert r.returncode != 0
    assert "error: rank 1: RuntimeError: boom at iteration 5" in r.stderr + r.stdout
    assert time.time() - t0 < 60


def test_ctrl_c_on_mpiexec_snapshots_once_and_stops(tmp_path, mnist_lmdb):
    import signal
    solver = lenet(tmp_path, mnist_lmdb, 32, "int", iters=100000)
    proc = subprocess.Popen([MPIEXEC, "-n", "2", *netdef_cmd("train", "--solver", solver)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(), start_new_session=True)
    out = []
    for line in proc.stdout:
        out.append(line)
        if "Iteration 20 (" in line:
            break
    proc.send_signal(signal.SIGINT)
    try:
        rest, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, _ = proc.communicate()
        pytest.fail("no stop after Ctrl-C:\n" + "".join(out)[-3000:] + rest[-6000:])
    assert proc.returncode == 0, "".join(out) + rest
    models = list(tmp_path.glob("int_iter_*.caffemodel"))
    states = list(tmp_path.glob("int_iter_*.solverstate"))
    assert len(models) == len(states) == 1, rest
    assert rest.count("Snapshotting to binary proto file") == 1
    assert "Optimization stopped early." in rest


TINY_GPU_SOLVER = """net_param {{
  layer {{ name: "data" type: "DummyData" top: "x" top: "label"
          dummy_data_param {{ shape {{ dim: 4 dim: 6 }} shape {{ dim: 4 }}
                             data_filler {{ type: "gaussian" std: 1 }}
                             data_filler {{ type: "constant" value: 1 }} }} }}
  layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y"
          inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
  layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss" }}
}}
base_lr: 0.1 lr_policy: "fixed" max_iter: 3 display: 1 snapshot: 0 random_seed: 5
snapshot_prefix: "{prefix}"
"""


@pytest.mark.gpu
def test_gpu_list_outside_mpiexec_starts_one_rank_per_device(tmp_path):
    """Caffe's `-gpu 0,0` (here: two ranks on one simulated device) starts the job under the
    MPI launcher: the weights equal those of `mpiexec -n 2 ... --gpu 0,0`."""
    e = dict(env(), NUMBA_ENABLE_CUDASIM="1")
    for name in ("auto", "manual"):
        (tmp_path / f"{name}.prototxt").write_text(TINY_GPU_SOLVER.format(prefix=tmp_path / name))
    r = subprocess.run(netdef_cmd("train", "-solver", tmp_path / "auto.prototxt", "-gpu", "0,0"),
                       capture_output=True, text=True, env=e, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    assert "data-parallel over 2 devices" in r.stderr
    assert "data-parallel over 2 MPI ranks" in r.stderr
    r = subprocess.run([MPIEXEC, "-n", "2", *netdef_cmd("train", "--solver",
                                                        tmp_path / "manual.prototxt",
                                                        "--gpu", "0,0")],
                       capture_output=True, text=True, env=e, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    a, b = weights(tmp_path / "auto_iter_3.caffemodel"), weights(tmp_path /
                                                                 "manual_iter_3.caffemodel")
    assert a.keys() == b.keys() == {"ip"}
    for x, y in zip(a["ip"], b["ip"]):
        np.testing.assert_array_equal(x, y)


def test_gpu_list_without_a_launcher_is_an_error(tmp_path, monkeypatch):
    from click.testing import CliRunner
    import netdef_cli.run as run
    from netdef_cli.main import cli
    monkeypatch.setattr(run, "gpu_ids", lambda gpu: [0, 1])
    monkeypatch.setattr("shutil.which", lambda *a, **k: None)
    (tmp_path / "s.prototxt").write_text(TINY_GPU_SOLVER.format(prefix=tmp_path / "s"))
    r = CliRunner().invoke(cli, ["train", "--solver", str(tmp_path / "s.prototxt"),
                                 "--gpu", "0,1"])
    assert r.exit_code == 2
    assert "trains one MPI rank per device, but mpiexec is not installed" in r.output
