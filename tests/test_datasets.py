"""`netdef data get`: checksums of the official files, downloads from mirrors (a local HTTP
server stands in for them), the Debian fallback for Fashion-MNIST, CIFAR-10's binary format
and mean, and the zoo nets that train on them."""
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from dataclasses import replace

import numpy as np
import pytest
from shared_paths import CORPUS, DATA

from netdef.config import load_net, load_solver
from netdef.data import datasets as dsm
from netdef.data.binaryproto import read_mean
from netdef.data.lmdb_source import LMDBSource
from netdef.data.mnist import write_idx
from netdef.errors import ConfigError, FileFormatError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(DATA, "mnist")


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "netdef_cli.main", *map(str, args)],
                          check=False, capture_output=True, text=True, cwd=cwd,
                          env=dict(os.environ, PYTHONPATH=REPO))


def test_shared_mnist_passes_the_official_checksums():
    found = dsm.locate(dsm.MNIST, MNIST)            # verifies all four; raises otherwise
    assert sorted(found) == sorted(dsm.MNIST.files)


def test_a_modified_file_fails_the_checksum_naming_it(tmp_path):
    for name in dsm.MNIST.files:
        shutil.copy(os.path.join(MNIST, name), tmp_path / name)
    raw = bytearray(gzip.decompress((tmp_path / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(FileFormatError) as e:
        dsm.locate(dsm.MNIST, str(tmp_path))
    assert "t10k-labels-idx1-ubyte.gz" in str(e.value) and "27ae3e4e" in str(e.value)
    # --no-verify takes it anyway; an uncompressed copy is accepted in place of the .gz
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes(raw))
    found = dsm.locate(dsm.MNIST, str(tmp_path), check=False)
    assert found["t10k-labels-idx1-ubyte.gz"].endswith("t10k-labels-idx1-ubyte")


def _tiny_idx(folder, n=12, seed=0):
    """Four MNIST-style files of n tiny images; returns {name: md5 of decompressed}."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    md5 = {}
    for stem, k in (("train", n), ("t10k", n // 2)):
        imgs = rng.integers(0, 256, (k, 4, 5), dtype=np.uint8)
        labels = rng.integers(0, 10, k).astype(np.uint8)
        for kind, arr in (("images-idx3", imgs), ("labels-idx1", labels)):
            name = f"{stem}-{kind}-ubyte.gz"
            write_idx(os.path.join(folder, name), arr)
            with open(os.path.join(folder, name), "rb") as f:
                md5[name] = hashlib.md5(gzip.decompress(f.read())).hexdigest()
    return md5


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


def test_download_tries_mirrors_in_order_and_checks(tmp_path, http_root, monkeypatch):
    root, url = http_root
    md5 = _tiny_idx(root / "mnist")
    monkeypatch.setenv("NETDEF_CACHE", str(tmp_path / "cache"))
    ds = replace(dsm.MNIST, files=md5, mirrors=(url + "missing/", url + "mnist/"))
    msgs = []
    counts = dsm._convert_idx(ds, dsm.locate(ds, log=msgs.append), str(tmp_path / "out"))
    assert counts == {"train": 12, "test": 6}
    assert any("missing/train-images" in m for m in msgs)
    cached = tmp_path / "cache" / "datasets" / "mnist"
    assert sorted(os.listdir(cached)) == sorted(md5)
    # cached files are reused without a server
    ds2 = replace(ds, mirrors=("http://127.0.0.1:9/",))
    assert dsm.locate(ds2)["train-images-idx3-ubyte.gz"] == str(cached /
                                                                "train-images-idx3-ubyte.gz")
    # what the LMDB holds is exactly what the files hold
    src = LMDBSource(str(tmp_path / "out" / "mnist_test_lmdb"))
    arr, _label = next(iter(src.read(1)))
    imgs = np.frombuffer(gzip.decompress((root / "mnist" / "t10k-images-idx3-ubyte.gz")
                                         .read_bytes())[16:], np.uint8).reshape(-1, 1, 4, 5)
    np.testing.assert_array_equal(arr, imgs[0])


def test_download_with_a_wrong_checksum_is_refused_and_removed(tmp_path, http_root,
                                                               monkeypatch):
    root, url = http_root
    md5 = _tiny_idx(root / "mnist")
    md5["t10k-labels-idx1-ubyte.gz"] = "0" * 32
    monkeypatch.setenv("NETDEF_CACHE", str(tmp_path / "cache"))
    ds = replace(dsm.MNIST, files=md5, mirrors=(url + "mnist/",))
    with pytest.raises(ConfigError) as e:
        dsm.locate(ds)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "MD5" in msg and "--from DIR" in msg
    assert not (tmp_path / "cache" / "datasets" / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()


def test_unreachable_mirrors_name_each_url_and_suggest_from(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDEF_CACHE", str(tmp_path / "cache"))
    ds = replace(dsm.MNIST, mirrors=("http://127.0.0.1:9/a/", "http://127.0.0.1:9/b/"))
    with pytest.raises(ConfigError) as e:
        dsm.locate(ds, log=lambda m: None)
    msg = str(e.value)
    assert "http://127.0.0.1:9/a/train-images-idx3-ubyte.gz" in msg
    assert "http://127.0.0.1:9/b/train-images-idx3-ubyte.gz" in msg and "--from DIR" in msg


def test_fashion_uses_the_system_folder_before_any_network(tmp_path, monkeypatch):
    md5 = _tiny_idx(tmp_path / "sys", seed=3)
    ds = replace(dsm.FASHION_MNIST, files=md5, system_folders=(str(tmp_path / "sys"),),
                 mirrors=("http://127.0.0.1:9/",))
    msgs = []
    found = dsm.locate(ds, log=msgs.append)
    assert found["train-images-idx3-ubyte.gz"] == str(tmp_path / "sys" /
                                                      "train-images-idx3-ubyte.gz")
    assert msgs == [f"using fashion-mnist from {tmp_path / 'sys'}"]


def test_fashion_without_mirrors_or_apt_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("NETDEF_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "bin"
    fake.mkdir()
    apt = fake / "apt-get"
    apt.write_text("#!/bin/sh\nexit 100\n")       # apt-get that cannot fetch anything
    apt.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root: no system change
    ds = replace(dsm.FASHION_MNIST, system_folders=(str(tmp_path / "nowhere"),),
                 mirrors=("http://127.0.0.1:9/",))
    msgs = []
    with pytest.raises(ConfigError) as e:
        dsm.locate(ds, log=msgs.append)
    assert "sudo apt-get install dataset-fashion-mnist" in str(e.value)
    assert any("falling back to the Debian package dataset-fashion-mnist" in m for m in msgs)


def test_fashion_from_a_debian_package_unpacked_without_root(tmp_path, monkeypatch):
    """Not root: `apt-get download` + `dpkg-deb -x` into the cache (a fake apt-get hands out a
    .deb built here), then the files are checked and used."""
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not available")
    md5 = _tiny_idx(tmp_path / "pkg" / "usr" / "share" / "datasets" / "fashion-mnist", seed=4)
    (tmp_path / "pkg" / "DEBIAN").mkdir()
    (tmp_path / "pkg" / "DEBIAN" / "control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 1\nArchitecture: all\n"
        "Maintainer: t <t@t>\nDescription: test\n")
    deb = tmp_path / "dataset-fashion-mnist_1_all.deb"
    subprocess.run(["dpkg-deb", "--build", str(tmp_path / "pkg"), str(deb)], check=True,
                   capture_output=True)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text(f'#!/bin/sh\n[ "$1" = download ] && cp {deb} . \n')
    (fake / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setenv("NETDEF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ds = replace(dsm.FASHION_MNIST, files=md5, system_folders=("/usr/share/datasets/fashion-mnist",
                                                                ),
                 mirrors=("http://127.0.0.1:9/",))
    monkeypatch.setattr(dsm, "_in_folder", functools.partial(_in_folder_not_system,
                                                             dsm._in_folder))
    found = dsm.locate(ds, log=lambda m: None)
    assert found["t10k-images-idx3-ubyte.gz"].startswith(str(tmp_path / "cache" / "debian"))


def _in_folder_not_system(orig, ds, folder):
    # the machine running the tests may have the real package installed: ignore it
    return None if folder.startswith("/usr/share") else orig(ds, folder)


# -- CIFAR-10 -------------------------------------------------------------------------------

def _tiny_cifar(folder, n=7, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    batches = {}
    for name in dsm.CIFAR_TRAIN + dsm.CIFAR_TEST:
        labels = rng.integers(0, 10, n).astype(np.uint8)
        imgs = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        rec = np.concatenate([labels[:, None], imgs.reshape(n, -1)], axis=1)
        (folder / name).write_bytes(rec.tobytes())
        batches[name] = (imgs, labels)
    return batches


def test_cifar10_from_the_binary_batches(tmp_path):
    batches = _tiny_cifar(tmp_path / "cifar-10-batches-bin")
    counts = dsm._convert_cifar(dsm.CIFAR10, dsm.locate(dsm.CIFAR10, str(tmp_path)),
                                str(tmp_path / "out"))
    assert counts == {"train": 35, "test": 7}
    train = np.concatenate([batches[n][0] for n in dsm.CIFAR_TRAIN])
    labels = np.concatenate([batches[n][1] for n in dsm.CIFAR_TRAIN])
    src = LMDBSource(str(tmp_path / "out" / "cifar10_train_lmdb"))
    got = list(src.read(35))
    np.testing.assert_array_equal(np.stack([a for a, _ in got]), train)   # RGB planes as stored
    assert [lab for _, lab in got] == labels.tolist()
    np.testing.assert_allclose(read_mean(str(tmp_path / "out" / "mean.binaryproto")),
                               train.astype(np.float64).mean(axis=0), rtol=1e-6)
    import lmdb
    with lmdb.open(str(tmp_path / "out" / "cifar10_test_lmdb"), readonly=True) as env, \
            env.begin() as txn:
        assert [k for k, _ in txn.cursor()] == [b"%05d" % i for i in range(7)]


def test_cifar10_from_the_official_archive_layout(tmp_path):
    _tiny_cifar(tmp_path / "cifar-10-batches-bin", n=3)
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz") as t:
        t.add(tmp_path / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    shutil.rmtree(tmp_path / "cifar-10-batches-bin")
    found = dsm.locate(dsm.CIFAR10, str(tmp_path), check=False)
    assert dsm._convert_cifar(dsm.CIFAR10, found, str(tmp_path / "out")) == \
        {"train": 15, "test": 3}
    with pytest.raises(FileFormatError, match="MD5"):     # a home-made archive is not official
        dsm.locate(dsm.CIFAR10, str(tmp_path))


def test_cifar10_damaged_batch_is_refused(tmp_path):
    _tiny_cifar(tmp_path, n=2)
    with open(tmp_path / "data_batch_3.bin", "ab") as f:
        f.write(b"xx")
    with pytest.raises(FileFormatError, match="data_batch_3.bin.*3073-byte"):
        dsm._convert_cifar(dsm.CIFAR10, dsm.locate(dsm.CIFAR10, str(tmp_path)),
                           str(tmp_path / "out"))


def test_cli_get_errors_are_one_line(tmp_path):
    r = cli("data", "get", "mnist", "--from", tmp_path / "nope", "--out", tmp_path)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert "no such folder" in r.stderr
    (tmp_path / "half").mkdir()
    shutil.copy(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"), tmp_path / "half")
    r = cli("data", "get", "fashion-mnist", "--from", tmp_path / "half", "--out", tmp_path)
    assert r.returncode == 2 and "missing train-images-idx3-ubyte.gz" in r.stderr


# -- the zoo nets that train on these ---------------------------------------------------------

def _manifest(path):
    with open(os.path.join(CORPUS, "MANIFEST.tsv")) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if cols[0] == path:
                return int(cols[6])
    raise KeyError(path)


@pytest.mark.parametrize("zoo,corpus", [
    ("cifar10_quick/cifar10_quick_train_test.prototxt", "cifar10/cifar10_quick_train_test.prototxt"),
    ("cifar10_quick/cifar10_quick.prototxt", "cifar10/cifar10_quick.prototxt"),
])
def test_cifar10_quick_zoo_matches_bvlc(zoo, corpus):
    from netdef.analysis import analyze
    from netdef.net import Net
    d = load_net(os.path.join(REPO, "model_zoo", zoo))
    a = analyze(Net(d, 1, input_shapes={"data": (100, 3, 32, 32)}, init_params=False))
    assert a.learnable_params == _manifest(corpus) == 145578


def test_lenet_fashion_is_lenet_but_for_its_data():
    a = load_net(os.path.join(REPO, "model_zoo", "lenet", "lenet_train_test.prototxt")).message
    b = load_net(os.path.join(REPO, "model_zoo", "lenet_fashion",
                              "lenet_train_test.prototxt")).message
    assert [lay.data_param.source for lay in b.layer[:2]] == [
        "examples/fashion_mnist/fashion_mnist_train_lmdb",
        "examples/fashion_mnist/fashion_mnist_test_lmdb"]
    assert list(a.layer[2:]) == list(b.layer[2:])
    sa = load_solver(os.path.join(REPO, "model_zoo", "lenet", "lenet_solver.prototxt")).message
    sb = load_solver(os.path.join(REPO, "model_zoo", "lenet_fashion",
                                  "lenet_solver.prototxt")).message
    sa.ClearField("net"), sb.ClearField("net")
    sa.ClearField("snapshot_prefix"), sb.ClearField("snapshot_prefix")
    assert sa == sb


def test_cifar10_quick_trains_from_get_cifar10(tmp_path):
    """`netdef data get cifar10 --from` + the zoo's solver, run from a checkout-like folder."""
    _tiny_cifar(tmp_path / "raw", n=40)
    os.symlink(os.path.join(REPO, "model_zoo"), tmp_path / "model_zoo")
    r = cli("data", "get", "cifar10", "--from", tmp_path / "raw", "--no-verify", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "examples" / "cifar10" / "mean.binaryproto").is_file()
    r = cli("train", "--solver", "model_zoo/cifar10_quick/cifar10_quick_solver.prototxt",
            "--set", "max_iter=2", "--set", "test_iter=1", "--set", "test_interval=2",
            "--set", "display=1", "--set", "snapshot=0", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Test net output #0: accuracy" in r.stderr
    assert (tmp_path / "examples" / "cifar10" / "cifar10_quick_iter_2.caffemodel").is_file()
    # a second `get` leaves the LMDBs alone
    r = cli("data", "get", "cifar10", "--from", tmp_path / "raw", cwd=tmp_path)
    assert r.returncode == 0 and "exist already" in r.stderr
