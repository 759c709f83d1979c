"""netdef extract-features: Caffe's extract_features (one Datum LMDB per blob, 10-digit keys),
HDF5 and .npy, each equal to Net.forward on the same batches (LeNet, Caffe's weights, MNIST)."""
import os

import numpy as np
import pytest
from click.testing import CliRunner
from shared_paths import DATA

from netdef.config import load_net
from netdef.io.weights import load_weights
from netdef.net import Net
from netdef.proto import pb
from netdef_cli.main import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEIGHTS = os.path.join(DATA, "caffe", "lenet", "lenet_iter_10000.caffemodel")


@pytest.fixture(scope="module")
def lenet(tmp_path_factory):
    pytest.importorskip("lmdb")
    from netdef.data.mnist import convert_mnist
    d = tmp_path_factory.mktemp("features")
    mn = os.path.join(DATA, "mnist")
    convert_mnist(os.path.join(mn, "t10k-images-idx3-ubyte.gz"),
                  os.path.join(mn, "t10k-labels-idx1-ubyte.gz"), str(d / "test_lmdb"),
                  limit=50)
    with open(os.path.join(REPO, "model_zoo", "lenet", "lenet_train_test.prototxt")) as f:
        text = f.read()
    text = text.replace("examples/mnist/mnist_test_lmdb", str(d / "test_lmdb"))
    text = text.replace("batch_size: 100", "batch_size: 20")
    (d / "net.prototxt").write_text(text)
    return d


def _reference(net_path, blobs, iterations):
    net = Net(load_net(str(net_path)), 1)
    load_weights(net, [WEIGHTS])
    out = {b: [] for b in blobs}
    for _ in range(iterations):
        net.forward()
        for b in blobs:
            out[b].append(net.blobs[b].data.copy())
    return {b: np.concatenate(v) for b, v in out.items()}


def _run(*args):
    return CliRunner().invoke(cli, ["extract-features", *map(str, args)])


def test_lmdb_per_blob_equals_forward(lenet, tmp_path):
    import lmdb
    r = _run("--model", lenet / "net.prototxt", "--weights", WEIGHTS, "--blobs", "ip2,pool2",
             "--iterations", 3, "--out", tmp_path / "feat")
    assert r.exit_code == 0, r.output
    ref = _reference(lenet / "net.prototxt", ["ip2", "pool2"], 3)   # wraps past 50 items
    for blob, shape in (("ip2", (10, 1, 1)), ("pool2", (50, 4, 4))):
        env = lmdb.open(str(tmp_path / "feat" / blob), readonly=True, lock=False)
        with env.begin() as txn:
            items = list(txn.cursor())
        env.close()
        assert [k for k, _ in items] == [b"%010d" % i for i in range(60)]
        for i, (_, v) in enumerate(items):
            d = pb.Datum.FromString(v)
            assert (d.channels, d.height, d.width) == shape
            np.testing.assert_array_equal(np.asarray(d.float_data, np.float32),
                                          ref[blob][i].reshape(-1))


def test_hdf5_and_npy_equal_forward(lenet, tmp_path):
    ref = _reference(lenet / "net.prototxt", ["ip1"], 2)
    r = _run("--model", lenet / "net.prototxt", "--weights", WEIGHTS, "--blobs", "ip1",
             "--iterations", 2, "--out", tmp_path / "npy", "--format", "npy")
    assert r.exit_code == 0, r.output
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "ip1.npy"), ref["ip1"])
    h5py = pytest.importorskip("h5py")
    r = _run("--model", lenet / "net.prototxt", "--weights", WEIGHTS, "--blobs", "ip1",
             "--iterations", 2, "--out", tmp_path / "f.h5", "--format", "hdf5")
    assert r.exit_code == 0, r.output
    with h5py.File(tmp_path / "f.h5", "r") as f:
        np.testing.assert_array_equal(f["ip1"][...], ref["ip1"])
    assert not list(tmp_path.glob("*.part"))


def test_unknown_blob_is_one_line(lenet, tmp_path):
    r = _run("--model", lenet / "net.prototxt", "--blobs", "fc7", "--iterations", 1,
             "--out", tmp_path / "x")
    assert r.exit_code == 2
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "no blob named fc7" in line and "ip2" in line
    assert not (tmp_path / "x").exists() or not os.listdir(tmp_path / "x")
