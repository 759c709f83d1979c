"""The examples of model_zoo beyond the classifiers: mnist_siamese (ContrastiveLoss, weights
shared by name), mnist_autoencoder (two staged test nets) and lstm_sequence (HDF5 sequence data,
LSTM).  Each net loads and has the expected parameter count; the pair-LMDB writer makes the
exact pairs; a 20-iteration training of each example net (its own layers and solver, on a
tiny subset) lowers its loss."""
import importlib.util
import itertools
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner
from shared_paths import DATA

from netdef.config import load_net, load_solver
from netdef.config.loader import Definition
from netdef.data.lmdb_source import LMDBSource
from netdef.data.mnist import read_idx_images, read_idx_labels, write_idx
from netdef.data.siamese import convert_mnist_siamese, make_pairs, pair_indices
from netdef.errors import ConfigError
from netdef.layers import TRAIN
from netdef.net import Net

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = os.path.join(REPO, "model_zoo")
MNIST_DIR = os.path.join(DATA, "mnist")

SIAMESE = os.path.join(ZOO, "mnist_siamese")
AUTOENC = os.path.join(ZOO, "mnist_autoencoder")
LSTM = os.path.join(ZOO, "lstm_sequence")

LENET_TOWER = 20 * 25 + 20 + 50 * 20 * 25 + 50 + 800 * 500 + 500 + 500 * 10 + 10 + 10 * 2 + 2
AUTOENC_DIMS = [784, 1000, 500, 250, 30, 250, 500, 1000, 784]
AUTOENC_PARAMS = sum(a * b + b for a, b in itertools.pairwise(AUTOENC_DIMS))
LSTM_PARAMS = 4 * 16 * 2 + 4 * 16 + 4 * 16 * 16 + 16 + 1     # W_xc, b_c, W_hc; predict


def summary(args):
    from netdef_cli.main import cli
    r = CliRunner().invoke(cli, ["summary", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def _script():
    spec = importlib.util.spec_from_file_location(
        "make_sequence_data", os.path.join(REPO, "scripts", "make_sequence_data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- the definitions ---------------------------------------------------------------------------
@pytest.mark.parametrize("path, args, params", [
    (f"{SIAMESE}/mnist_siamese_train_test.prototxt",
     ["--phase", "train", "--input-shape", "pair_data=4,2,28,28"], LENET_TOWER),
    (f"{SIAMESE}/mnist_siamese_train_test.prototxt",
     ["--input-shape", "pair_data=4,2,28,28"], LENET_TOWER),
    (f"{SIAMESE}/mnist_siamese.prototxt", [], LENET_TOWER),
    (f"{AUTOENC}/mnist_autoencoder.prototxt",
     ["--phase", "train", "--input-shape", "data=4,1,28,28"], AUTOENC_PARAMS),
    (f"{AUTOENC}/mnist_autoencoder.prototxt",
     ["--stage", "test-on-test", "--input-shape", "data=4,1,28,28"], AUTOENC_PARAMS),
    (f"{LSTM}/lstm_sequence.prototxt",
     ["--phase", "train", "--input-shape", "x=12,16,2", "--input-shape", "cont=12,16",
      "--input-shape", "y=12,16,1"], LSTM_PARAMS),
])
def test_example_nets_load_with_expected_params(path, args, params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)        # no data sources here: shapes from --input-shape
    s = summary([path, *args])
    assert s["learnable_params"] == params
    if "siamese_train_test" in path:   # the second tower shares all its weights
        layers = {row["name"]: row for row in s["layers"]}
        for name in ("conv1", "conv2", "ip1", "ip2", "feat"):
            assert layers[name]["shared"] == 0 and layers[name]["params"] > 0
            assert layers[name + "_p"]["shared"] == 2 and layers[name + "_p"]["params"] == 0
        assert list(s["outputs"]) == ["loss"]
    if "autoencoder" in path:
        assert "l2_error" in s["outputs"] and "cross_entropy_loss" in s["outputs"]


def test_solvers_point_at_the_zoo_nets():
    for folder, name in ((SIAMESE, "mnist_siamese_solver"),
                         (AUTOENC, "mnist_autoencoder_solver"),
                         (LSTM, "lstm_sequence_solver")):
        p = load_solver(os.path.join(folder, f"{name}.prototxt")).message
        assert os.path.isfile(os.path.join(REPO, p.net)), p.net
        assert p.random_seed == 1701
    ae = load_solver(os.path.join(AUTOENC, "mnist_autoencoder_solver.prototxt")).message
    assert [list(s.stage) for s in ae.test_state] == [["test-on-train"], ["test-on-test"]]
    assert list(ae.test_iter) == [500, 100] and ae.test_compute_loss


def test_siamese_shared_weights_are_one_blob():
    net = Net(load_net(f"{SIAMESE}/mnist_siamese_train_test.prototxt"), TRAIN,
              input_shapes={"pair_data": (2, 2, 28, 28)}, init_params=False)
    assert len(net.params) == 10                      # 5 layers x (weight, bias), once
    i, k = net.layer_names.index("conv1"), net.layer_names.index("conv1_p")
    assert net.layer_param_owner[i] == net.layer_param_owner[k]
    assert sum(p.blob.count for p in net.params) == LENET_TOWER


# -- the pair LMDB -----------------------------------------------------------------------------
def tiny_images(n=6):
    imgs = (np.arange(n)[:, None, None] * 10 + np.arange(6).reshape(2, 3)).astype(np.uint8)
    return imgs, np.array([0, 1, 0, 1, 2, 2], np.uint8)[:n]


def test_pair_lmdb_holds_the_exact_pairs(tmp_path):
    imgs, labs = tiny_images()
    idx = [[5, 3], [3, 1], [1, 0], [0, 0], [1, 4], [3, 5], [3, 3], [5, 4]]
    sims = [0, 1, 0, 1, 0, 0, 1, 1]           # 1 where both images show the same digit
    np.testing.assert_array_equal(pair_indices(6, 8, seed=0), idx)
    n = convert_mnist_siamese(imgs, labs, tmp_path / "pairs", num_pairs=8, seed=0)
    assert n == 8
    src = LMDBSource(str(tmp_path / "pairs"))
    assert len(src) == 8
    records = src.read(8)
    src.close()
    for (arr, label), (i, j), sim in zip(records, idx, sims):
        assert arr.dtype == np.uint8 and arr.shape == (2, 2, 3)
        np.testing.assert_array_equal(arr[0], imgs[i])
        np.testing.assert_array_equal(arr[1], imgs[j])
        assert label == sim
    pairs, sim, got_idx = make_pairs(imgs, labs, 8, seed=0)
    assert pairs.shape == (8, 2, 2, 3) and sim.tolist() == sims
    np.testing.assert_array_equal(got_idx, idx)
    # one pair per image by default; another seed, other pairs
    assert len(pair_indices(6)) == 6
    assert not np.array_equal(pair_indices(6, 8, seed=1), idx)
    with pytest.raises(ConfigError):
        convert_mnist_siamese(imgs, labs, tmp_path / "pairs", num_pairs=8)   # not empty


def test_siamese_pairs_command(tmp_path):
    from netdef_cli.main import cli
    imgs, labs = tiny_images()
    src = tmp_path / "idx"
    src.mkdir()
    for prefix in ("train", "t10k"):
        write_idx(src / f"{prefix}-images-idx3-ubyte.gz", imgs)
        write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", labs)
    out = tmp_path / "siamese"
    r = CliRunner().invoke(cli, ["data", "siamese-pairs", "--from", str(src), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "(6 pairs)" in r.output
    for split, seed in (("train", 0), ("test", 1)):
        s = LMDBSource(str(out / f"mnist_siamese_{split}_lmdb"))
        got = s.read(6)
        s.close()
        i, j = pair_indices(6, seed=seed).T
        assert [lab for _, lab in got] == (labs[i] == labs[j]).astype(int).tolist()
    r = CliRunner().invoke(cli, ["data", "siamese-pairs", "--from", str(src), "--out", str(out)])
    assert r.exit_code == 0 and "exist already" in r.output
    r = CliRunner().invoke(cli, ["data", "siamese-pairs", "--from", str(tmp_path / "none"),
                                 "--out", str(tmp_path / "x")])
    assert r.exit_code != 0


def test_sequence_data_script(tmp_path):
    h5py = pytest.importorskip("h5py")
    mod = _script()
    x, cont, y = mod.echo_streams(40, 3, seed=5)
    assert x.shape == (40, 3, 2) and cont.shape == (40, 3) and y.shape == (40, 3, 1)
    assert (cont[0] == 0).all()                       # every stream starts a sequence
    for n in range(3):
        starts = list(np.flatnonzero(cont[:, n] == 0)) + [40]
        for a, b in itertools.pairwise(starts):
            assert 1 <= b - a <= mod.MAX_LEN
            assert x[a, n, 1] == 1 and (x[a + 1:b, n, 1] == 0).all()
            assert (y[a:b, n, 0] == x[a, n, 0]).all()  # the first value, echoed
    assert mod.main(["--out", str(tmp_path), "--train-steps", "24", "--test-steps", "12",
                     "--streams", "2"]) == 0
    with h5py.File(tmp_path / "train.h5", "r") as f:
        assert f["x"].shape == (24, 2, 2) and f["cont"].shape == (24, 2)
    assert (tmp_path / "test.txt").read_text() == "test.h5\n"


# -- 20 iterations of each example on a tiny subset --------------------------------------------
@pytest.fixture(scope="module")
def mnist16():
    path = os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")
    if not os.path.exists(path):
        pytest.skip("no MNIST files in the shared data")
    return (np.ascontiguousarray(read_idx_images(path)[:64]),
            np.ascontiguousarray(read_idx_labels(
                os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))[:64]))


def smoke_solver(solver_file, source, batch, tmp_path, **solver_fields):
    """The example's solver and net, with every data layer reading ``source`` in batches of
    ``batch``, no tests and no snapshots."""
    from netdef.solvers.solver import Solver
    sdef = load_solver(solver_file)
    p = sdef.message
    net = load_net(os.path.join(REPO, p.net)).message
    for lp in net.layer:
        for field in ("data_param", "hdf5_data_param"):
            if lp.HasField(field):
                getattr(lp, field).source = str(source)
                getattr(lp, field).batch_size = batch
    p.ClearField("net")
    p.net_param.CopyFrom(net)
    for f in ("test_iter", "test_state", "test_interval"):
        p.ClearField(f)
    p.max_iter, p.display, p.snapshot = 20, 0, 0
    p.snapshot_after_train = False
    p.snapshot_prefix = str(tmp_path / "snap")
    for k, v in solver_fields.items():
        setattr(p, k, v)
    return Solver(Definition(p, None, {}, "prototxt"))


def train_20(solver):
    """Loss on the (one, repeated) batch before and after 20 iterations."""
    before = solver.net.forward()
    solver.step(20)
    after = solver.net.forward()
    assert np.isfinite(after)
    return before, after


def test_siamese_smoke_training(mnist16, tmp_path):
    imgs, labs = mnist16
    convert_mnist_siamese(imgs, labs, tmp_path / "pairs", num_pairs=16, seed=0)
    solver = smoke_solver(f"{SIAMESE}/mnist_siamese_solver.prototxt", tmp_path / "pairs", 16,
                          tmp_path)
    assert solver.net.blobs["pair_data"].shape == (16, 2, 28, 28)
    before, after = train_20(solver)
    assert after < 0.8 * before, (before, after)


def test_autoencoder_smoke_training(mnist16, tmp_path):
    from netdef.data.mnist import convert_mnist
    imgs, labs = mnist16
    convert_mnist(imgs[:16], labs[:16], tmp_path / "mnist")
    solver = smoke_solver(f"{AUTOENC}/mnist_autoencoder_solver.prototxt", tmp_path / "mnist",
                          16, tmp_path)
    before = solver.net.forward()
    l2_before = float(solver.net.blobs["l2_error"].data)
    solver.step(20)
    after = solver.net.forward()
    l2_after = float(solver.net.blobs["l2_error"].data)
    assert after < 0.8 * before, (before, after)
    assert l2_after < l2_before, (l2_before, l2_after)


def test_lstm_sequence_smoke_training(tmp_path):
    h5py = pytest.importorskip("h5py")
    x, cont, y = _script().echo_streams(12, 16, seed=0)
    with h5py.File(tmp_path / "seq.h5", "w") as f:
        f["x"], f["cont"], f["y"] = x, cont, y
    (tmp_path / "seq.txt").write_text("seq.h5\n")
    solver = smoke_solver(f"{LSTM}/lstm_sequence_solver.prototxt", tmp_path / "seq.txt", 12,
                          tmp_path)
    assert solver.net.blobs["x"].shape == (12, 16, 2)
    before, after = train_20(solver)
    assert after < 0.5 * before, (before, after)
