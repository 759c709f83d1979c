"""`netdef caffe TOOL`: Caffe's command lines with one word changed — train_lenet.sh, the GPU
solver on a CPU machine, convert_imageset's gflags, extract_features' positional form, the
upgrade tools, and an unknown tool."""
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from shared_paths import DATA

from netdef.config import load_net
from netdef.proto import pb
from netdef_cli.main import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(DATA, "caffe", "lenet")
V1 = os.path.join(DATA, "caffe", "lenet_v1format")


def netdef(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "netdef_cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=600, cwd=cwd,
                          env=env or os.environ)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    pytest.importorskip("lmdb")
    from netdef.data.mnist import convert_mnist
    d = tmp_path_factory.mktemp("caffe_tools")
    mn = os.path.join(DATA, "mnist")
    (d / "examples" / "mnist").mkdir(parents=True)
    for split, prefix, n in (("train", "train", 2000), ("test", "t10k", 200)):
        convert_mnist(os.path.join(mn, f"{prefix}-images-idx3-ubyte.gz"),
                      os.path.join(mn, f"{prefix}-labels-idx1-ubyte.gz"),
                      str(d / "examples" / "mnist" / f"mnist_{split}_lmdb"), limit=n)
    os.symlink(os.path.join(REPO, "model_zoo"), d / "model_zoo")
    return d


def test_train_lenet_sh_with_netdef_caffe(mnist):
    """examples/mnist/train_lenet.sh is `caffe train --solver=examples/mnist/
    lenet_solver.prototxt $@`: here `netdef caffe train` with the zoo's CPU solver in gflags'
    single-dash form, and `$@` cutting max_iter to 200."""
    r = netdef("caffe", "train", "-solver=model_zoo/lenet/lenet_solver.prototxt",
               "--set", "max_iter=200", "--set", "test_iter=2", "--set", "test_interval=200",
               "--set", "snapshot=0", cwd=mnist)
    assert r.returncode == 0, r.stderr
    assert "Iteration 200, Testing net (#0)" in r.stderr
    acc = [float(line.rsplit("=", 1)[1]) for line in r.stderr.splitlines()
           if "Test net output #0: accuracy" in line]
    assert acc and acc[-1] > 0.8
    assert (mnist / "examples" / "mnist" / "lenet_iter_200.caffemodel").is_file()


def test_bvlc_gpu_solver_on_a_cpu_machine_names_solver_mode(tmp_path):
    from netdef.backend.cuda import device
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    r = netdef("caffe", "train", "-solver", os.path.join(LENET, "lenet_solver.prototxt"),
               env=env)
    if r.returncode == 0 or "no usable CUDA" not in r.stderr and "no CUDA GPU" not in \
            r.stderr:
        if device.available():
            pytest.skip("this machine has a GPU")
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {os.path.join(LENET, 'lenet_solver.prototxt')}:25:")
    assert "solver_mode: GPU" in line and "solver_mode: CPU" in line


def test_convert_imageset_gflags(tmp_path):
    pytest.importorskip("lmdb")
    from netdef.data.lmdb_source import LMDBSource
    root = os.path.join(DATA, "samples")
    names = sorted(f for f in os.listdir(root) if f.startswith("mnist_"))[:4]
    (tmp_path / "list.txt").write_text("".join(f"{n} {k}\n" for k, n in enumerate(names)))
    r = netdef("caffe", "convert_imageset", "-resize_height=14", "-resize_width=14",
               "-gray=true", "-shuffle=false", "-backend", "lmdb", "-logtostderr",
               root + "/", tmp_path / "list.txt", tmp_path / "db")
    assert r.returncode == 0, r.stderr
    src = LMDBSource(str(tmp_path / "db"))
    arr, label = next(iter(src.read(1)))
    assert arr.shape == (1, 14, 14) and label == 0 and len(src) == 4
    r = netdef("caffe", "compute_image_mean", tmp_path / "db", tmp_path / "mean.binaryproto")
    assert r.returncode == 0, r.stderr
    from netdef.data.binaryproto import read_mean
    mean = read_mean(str(tmp_path / "mean.binaryproto"))
    items = [a.astype(np.float64) for a, _ in src.read(4)]
    np.testing.assert_allclose(np.asarray(mean).reshape(1, 14, 14), np.mean(items, axis=0),
                               rtol=1e-6)
    # no OUTPUT_FILE: only the per-channel mean is logged (gflags spelling through cli() too)
    r = CliRunner().invoke(cli, ["caffe", "compute_image_mean", "-backend=lmdb",
                                 str(tmp_path / "db")])
    assert r.exit_code == 0, r.output
    logged = [ln for ln in r.stderr.splitlines() if "mean_value channel [0]:" in ln]
    assert len(logged) == 1
    assert float(logged[0].rsplit(":", 1)[1]) == pytest.approx(np.mean(items), rel=1e-5)
    r = netdef("caffe", "convert_imageset", "-gray=maybe", root + "/", tmp_path / "list.txt",
               tmp_path / "db2")
    assert r.returncode == 2 and "takes true or false" in r.stderr


def test_extract_features_positional_form(tmp_path, mnist):
    import lmdb
    text = open(os.path.join(REPO, "model_zoo", "lenet", "lenet_train_test.prototxt")).read()
    text = text.replace("examples/mnist/mnist_test_lmdb",
                        str(mnist / "examples" / "mnist" / "mnist_test_lmdb"))
    (tmp_path / "net.prototxt").write_text(text.replace("batch_size: 100", "batch_size: 10"))
    r = netdef("caffe", "extract_features", os.path.join(LENET, "lenet_iter_10000.caffemodel"),
               tmp_path / "net.prototxt", "ip2,pool1", f"{tmp_path / 'a'},{tmp_path / 'b'}",
               2, "lmdb", "CPU")
    assert r.returncode == 0, r.stderr
    assert "Successfully extracted the features!" in r.stderr
    env = lmdb.open(str(tmp_path / "a"), readonly=True, lock=False)
    with env.begin() as txn:
        items = list(txn.cursor())
    env.close()
    assert len(items) == 20 and items[0][0] == b"0000000000"
    d = pb.Datum.FromString(items[0][1])
    assert (d.channels, d.height, d.width) == (10, 1, 1)
    assert np.argmax(d.float_data) == 7                 # MNIST's first test digit
    r = netdef("caffe", "extract_features", "w", "n", "a,b", "x", 1, "lmdb")
    assert r.returncode == 2 and "2 blobs but 1 databases" in r.stderr


def test_upgrade_tools(tmp_path):
    r = netdef("caffe", "upgrade_net_proto_text", os.path.join(V1, "lenet_train_test.prototxt"),
               tmp_path / "new.prototxt")
    assert r.returncode == 0, r.stderr
    new = load_net(str(tmp_path / "new.prototxt")).message
    assert len(new.layer) and not len(new.layers)
    assert [lp.type for lp in new.layer][:3] == ["Data", "Data", "Convolution"]
    r = netdef("caffe", "upgrade_net_proto_binary", os.path.join(V1, "lenet_iter_10000.caffemodel"),
               tmp_path / "new.bin")
    assert r.returncode == 0, r.stderr
    net = pb.NetParameter.FromString((tmp_path / "new.bin").read_bytes())
    assert len(net.layer) and not len(net.layers)
    r = netdef("caffe", "upgrade_solver_proto_text", os.path.join(V1, "lenet_solver.prototxt"),
               tmp_path / "s.prototxt")
    assert r.returncode == 0, r.stderr


def test_unknown_tool_and_help():
    r = CliRunner().invoke(cli, ["caffe", "convert_mnist_data", "a", "b"])
    assert r.exit_code == 2
    assert "unknown Caffe tool 'convert_mnist_data'" in r.output and "extract_features" in \
        r.output
    r = CliRunner().invoke(cli, ["caffe"])
    assert r.exit_code == 0 and "usage: netdef caffe TOOL" in r.output
