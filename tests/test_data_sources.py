"""Data layers reading real sources: LMDB (Data) and image lists (ImageData) built from the
shared MNIST files, HDF5 files (HDF5Data), program arrays (MemoryData) and R-CNN windows files
(WindowData): exact batches, wrapping, shuffling, transformations, errors, the
convert-imageset / compute-mean commands, and a solver that trains on HDF5Data and resumes
bit-exactly."""
import importlib.util
import os
import sys

import numpy as np
import pytest

from shared_paths import DATA
from netdef.config import load_solver, net_from_text
from netdef.data.mnist import read_idx_images, read_idx_labels
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.layers import TEST, TRAIN
from netdef.net import Net

try:
    import h5py
except ImportError:
    h5py = None


def _needs(*modules):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


needs_h5py = pytest.mark.skipif(h5py is None, reason="needs h5py")


# -- Data (LMDB) and ImageData from the shared MNIST files -------------------------------------
@_needs("lmdb")
def test_data_layer_reads_mnist_lmdb_with_transform(tmp_path, monkeypatch):
    from netdef.data.lmdb_source import write_lmdb
    imgs = read_idx_images(os.path.join(DATA, "mnist", "t10k-images-idx3-ubyte.gz"))[:10]
    labels = read_idx_labels(os.path.join(DATA, "mnist", "t10k-labels-idx1-ubyte.gz"))[:10]
    write_lmdb(str(tmp_path / "db"), zip(imgs, labels.tolist()))
    text = f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
      data_param {{ source: "{tmp_path / 'db'}" batch_size: 4 backend: LMDB }}
      transform_param {{ scale: 0.5 crop_size: 20 mean_value: 10 }} }}"""
    net = Net(net_from_text(text), TEST)
    assert net.blobs["data"].shape == (4, 1, 20, 20)      # shape read from the source
    for start in (0, 4, 8):
        net.forward()
        idx = [(start + k) % 10 for k in range(4)]       # wraps around at the end
        ref = (imgs[idx, :, 4:24, 4:24].astype(np.float32) - 10) * 0.5   # centre crop in TEST
        np.testing.assert_array_equal(net.blobs["data"].data, ref)
        np.testing.assert_array_equal(net.blobs["label"].data, labels[idx])
    layer = net.layers[0]
    assert layer.data_position() == 2
    layer.set_data_position(7)
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, labels[[7, 8, 9, 0]])


@_needs("lmdb")
@pytest.mark.parametrize("keep", [8192, 100_000, 100, 0])
def test_truncated_lmdb_is_an_error_not_sigbus(tmp_path, keep):
    """A partial copy of data.mdb: LMDB would read the missing pages through its mmap and die
    of SIGBUS (already while listing keys); the meta page's size check refuses it first."""
    from netdef.data.lmdb_source import write_lmdb
    imgs = np.random.default_rng(0).integers(0, 255, (300, 1, 28, 28), dtype=np.uint8)
    write_lmdb(str(tmp_path / "db"), zip(imgs, [0] * len(imgs)))
    mdb = tmp_path / "db" / "data.mdb"
    full = mdb.read_bytes()
    assert len(full) > 200_000
    mdb.write_bytes(full[:keep])
    (tmp_path / "db" / "lock.mdb").unlink(missing_ok=True)
    text = f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
      data_param {{ source: "{tmp_path / 'db'}" batch_size: 4 backend: LMDB }} }}"""
    with pytest.raises(NetdefError) as e:
        Net(net_from_text(text, file="n.prototxt"), TEST)
    want = f"need {len(full):,}" if keep >= 8192 else "has no LMDB meta page"
    assert want in str(e.value) and str(tmp_path / "db") in str(e.value)


@_needs("PIL")
def test_image_data_layer_reads_png_list(tmp_path):
    from PIL import Image
    samples = sorted(f for f in os.listdir(os.path.join(DATA, "samples")) if f.startswith("mnist_"))[:6]
    lines = [f"{s} {s.split('_')[-1][0]}" for s in samples]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    root = os.path.join(DATA, "samples") + "/"
    text = f"""layer {{ name: "d" type: "ImageData" top: "data" top: "label"
      image_data_param {{ source: "{tmp_path / 'list.txt'}" root_folder: "{root}" batch_size: 3
                          is_color: false }} }}"""
    net = Net(net_from_text(text), TRAIN)
    assert net.blobs["data"].shape == (3, 1, 28, 28)
    net.forward()
    for k in range(3):
        ref = np.asarray(Image.open(root + samples[k]).convert("L"), dtype=np.float32)
        np.testing.assert_array_equal(net.blobs["data"].data[k, 0], ref)
    np.testing.assert_array_equal(net.blobs["label"].data, [int(l.split()[1]) for l in lines[:3]])


@_needs("lmdb", "PIL")
def test_convert_imageset_and_compute_mean(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from netdef.data.binaryproto import read_mean
    from netdef.data.lmdb_source import LMDBSource
    from netdef_cli.main import cli
    root = os.path.join(DATA, "samples")
    names = sorted(f for f in os.listdir(root) if f.startswith("mnist_"))[:5]
    (tmp_path / "list.txt").write_text("".join(f"{n} {k}\n" for k, n in enumerate(names)))
    r = CliRunner().invoke(cli, ["data", "convert-imageset", root, str(tmp_path / "list.txt"),
                                 str(tmp_path / "db"), "--gray"])
    assert r.exit_code == 0, r.output
    src = LMDBSource(str(tmp_path / "db"))
    assert len(src) == 5 and src.key(0) == f"00000000_{names[0]}".encode()
    imgs = [np.asarray(Image.open(os.path.join(root, n)).convert("L"), np.float64) for n in names]
    r = CliRunner().invoke(cli, ["data", "compute-mean", str(tmp_path / "db"),
                                 str(tmp_path / "mean.binaryproto")])
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(read_mean(str(tmp_path / "mean.binaryproto"))[0],
                               np.mean(imgs, axis=0), rtol=1e-6)


@_needs("lmdb", "PIL")
def test_convert_imageset_encoded_equals_raw_and_checks(tmp_path):
    """--encoded stores each PNG's own bytes (no re-encode); a Data layer reads the encoded
    and the raw LMDB into identical batches; --encode-type jpg re-encodes; --check-size and
    --backend leveldb are one-line errors."""
    import lmdb
    from click.testing import CliRunner
    from PIL import Image

    from netdef.config import net_from_text
    from netdef.net import Net
    from netdef.proto import pb
    from netdef_cli.main import cli
    rng = np.random.default_rng(0)
    names = []
    for k in range(6):
        a = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / f"c{k}.png")
        names.append(f"c{k}.png")
    (tmp_path / "list.txt").write_text("".join(f"{n} {k % 3}\n" for k, n in enumerate(names)))

    def convert(out, *flags):
        return CliRunner().invoke(cli, ["data", "convert-imageset", str(tmp_path),
                                        str(tmp_path / "list.txt"), str(tmp_path / out),
                                        *flags])
    assert convert("raw").exit_code == 0
    r = convert("enc", "--encoded")
    assert r.exit_code == 0, r.output
    env = lmdb.open(str(tmp_path / "enc"), readonly=True, lock=False)
    with env.begin() as txn:
        values = [pb.Datum.FromString(v) for _, v in txn.cursor()]
    env.close()
    assert all(d.encoded for d in values)
    assert [d.data for d in values] == [(tmp_path / n).read_bytes() for n in names]
    batches = []
    for db in ("raw", "enc"):
        net = Net(net_from_text(f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
                                f'data_param {{ source: "{tmp_path / db}" batch_size: 4 }} '
                                f'transform_param {{ scale: 0.5 }} }}'), 1)
        out = []
        for _ in range(3):
            net.forward()
            out.append((net.blobs["data"].data.copy(), net.blobs["label"].data.copy()))
        batches.append(out)
    for (a, la), (b, lb) in zip(*batches):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    r = convert("jpg", "--encoded", "--encode-type", "jpg")
    assert r.exit_code == 0, r.output
    env = lmdb.open(str(tmp_path / "jpg"), readonly=True, lock=False)
    with env.begin() as txn:
        first = pb.Datum.FromString(next(iter(txn.cursor()))[1])
    env.close()
    assert first.encoded and first.data[:3] == b"\xff\xd8\xff"
    Image.fromarray(rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)).save(tmp_path / "c5.png")
    r = convert("sized", "--check-size")
    assert r.exit_code == 2 and "c5.png" in r.output and "--check-size" in r.output
    assert not (tmp_path / "sized").exists()
    r = convert("ldb", "--backend", "leveldb")
    assert r.exit_code == 2 and "writes LMDB only" in r.output


@_needs("lmdb", "PIL")
def test_convert_imageset_bounded_transactions_grow_map(tmp_path, monkeypatch):
    """convert-imageset commits in bounded transactions into a map that doubles when full:
    from a 16 KiB map, committing every 5 images, all 40 images (~120 KB raw) arrive."""
    from click.testing import CliRunner
    from PIL import Image

    import netdef.data.lmdb_source as lmdb_source
    from netdef.data.lmdb_source import LMDBSource
    from netdef_cli.main import cli
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (20, 50, 3), dtype=np.uint8) for _ in range(40)]
    for k, a in enumerate(imgs):
        Image.fromarray(a).save(tmp_path / f"i{k:02d}.png")
    (tmp_path / "list.txt").write_text("".join(f"i{k:02d}.png {k}\n" for k in range(40)))
    commits = []
    real_write, real_commit = lmdb_source.write_lmdb, lmdb_source.LMDBWriter.commit

    def commit(self):
        commits.append(len(self.pending))
        real_commit(self)
    monkeypatch.setattr(lmdb_source, "write_lmdb", lambda *a, **k: real_write(
        *a, **{**k, "map_size": 16 << 10, "commit_every": 5}))
    monkeypatch.setattr(lmdb_source.LMDBWriter, "commit", commit)
    r = CliRunner().invoke(cli, ["data", "convert-imageset", str(tmp_path),
                                 str(tmp_path / "list.txt"), str(tmp_path / "db")])
    assert r.exit_code == 0, r.output
    assert commits[:8] == [5] * 8 and sum(commits) == 40      # 8 bounded commits (+ final)
    assert os.path.getsize(tmp_path / "db" / "data.mdb") > 16 << 10   # the map grew
    src = LMDBSource(str(tmp_path / "db"))
    got = src.read(40)
    assert len(src) == 40
    for (arr, label), (a, k) in zip(got, zip(imgs, range(40))):
        np.testing.assert_array_equal(arr, a[:, :, ::-1].transpose(2, 0, 1))   # BGR, C×H×W
        assert label == k


# -- HDF5Data ----------------------------------------------------------------------------------
def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, arr in datasets.items():
            f[name] = arr


def hdf5_net(source, batch=5, shuffle=False, tops=("data", "label"), extra=""):
    top_decl = " ".join(f'top: "{t}"' for t in tops)
    return (f'layer {{ name: "d" type: "HDF5Data" {top_decl}\n'
            f'  hdf5_data_param {{ source: "{source}" batch_size: {batch} '
            f'shuffle: {str(shuffle).lower()} }} {extra} }}\n')


@pytest.fixture
def two_files(tmp_path):
    """a.h5: rows 0..6, b.h5: rows 100..104 (data float64 (N, 3), label = row id)."""
    xa = np.arange(21, dtype=np.float64).reshape(7, 3) + 0.25
    xb = 1000 + np.arange(15, dtype=np.float64).reshape(5, 3)
    write_h5(tmp_path / "a.h5", data=xa, label=np.arange(7, dtype=np.float64))
    write_h5(tmp_path / "b.h5", data=xb, label=100 + np.arange(5, dtype=np.float64))
    (tmp_path / "list.txt").write_text("a.h5\n\nb.h5\n")     # relative to the list's folder
    return tmp_path / "list.txt", np.concatenate([xa, xb]), \
        np.concatenate([np.arange(7), 100 + np.arange(5)])


@needs_h5py
def test_hdf5_reads_batches_across_files_and_wraps(two_files):
    src, x, y = two_files
    net = Net(net_from_text(hdf5_net(src, batch=5)), TRAIN)
    assert net.blobs["data"].shape == (5, 3)           # from the first file's metadata
    assert net.blobs["label"].shape == (5,)
    for start in (0, 5, 10, 3):
        net.forward()
        idx = [(start + k) % 12 for k in range(5)]
        assert net.blobs["data"].data.dtype == np.float32
        np.testing.assert_array_equal(net.blobs["data"].data, x[idx].astype(np.float32))
        np.testing.assert_array_equal(net.blobs["label"].data, y[idx])
    layer = net.layers[0]
    assert layer.data_position() == 8
    layer.set_data_position(6)
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [6, 100, 101, 102, 103])


@needs_h5py
def test_hdf5_paths_as_given_relative_to_cwd(tmp_path, monkeypatch):
    (tmp_path / "h5").mkdir()
    (tmp_path / "lists").mkdir()
    write_h5(tmp_path / "h5" / "x.h5", data=np.ones((4, 2), np.float32) * 7,
             label=np.arange(4, dtype=np.float32))
    (tmp_path / "lists" / "l.txt").write_text("h5/x.h5\n")
    monkeypatch.chdir(tmp_path)
    net = Net(net_from_text(hdf5_net("lists/l.txt", batch=3)), TEST)
    net.forward()
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [3, 0, 1])
    np.testing.assert_array_equal(net.blobs["data"].data, np.full((3, 2), 7, np.float32))


def epochs(net, n_batches):
    out = []
    for _ in range(n_batches):
        net.forward()
        out.append(net.blobs["label"].data.copy())
    return np.concatenate(out)


@needs_h5py
def test_hdf5_shuffle_is_a_seeded_file_and_row_permutation(tmp_path):
    write_h5(tmp_path / "a.h5", data=np.arange(6.0)[:, None] * [1, 1], label=np.arange(6.0))
    write_h5(tmp_path / "b.h5", data=np.arange(10, 16.0)[:, None] * [1, 1],
             label=np.arange(10, 16.0))
    write_h5(tmp_path / "c.h5", data=np.arange(20, 26.0)[:, None] * [1, 1],
             label=np.arange(20, 26.0))
    (tmp_path / "l.txt").write_text("a.h5\nb.h5\nc.h5\n")
    text = net_from_text(hdf5_net(tmp_path / "l.txt", batch=6, shuffle=True))
    a = epochs(Net(text, TRAIN, seed=3), 9)              # 3 passes over 18 rows
    b = epochs(Net(text, TRAIN, seed=3), 9)
    c = epochs(Net(text, TRAIN, seed=4), 9)
    np.testing.assert_array_equal(a, b)                 # same seed: same batches
    assert not np.array_equal(a, c)                     # another seed: another order
    everything = sorted(list(range(6)) + list(range(10, 16)) + list(range(20, 26)))
    passes = a.reshape(3, 18)
    for p in passes:
        assert sorted(p) == everything                  # each pass reads every row once
        files = p // 10
        assert len({tuple(files[k:k + 6]) for k in (0, 6, 12)}) == 3   # files stay whole
        assert all(len(set(files[k:k + 6])) == 1 for k in (0, 6, 12))
    assert not all(np.array_equal(p, passes[0]) for p in passes[1:])  # reshuffled per pass
    assert not np.array_equal(passes[0], everything)    # actually shuffled
    # data and label rows stay paired
    net = Net(text, TRAIN, seed=3)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data[:, 0], net.blobs["label"].data)


@needs_h5py
def test_hdf5_any_number_of_tops_any_rank_cast_to_net_dtype(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.standard_normal((6, 2, 3, 4)).astype(np.float32)
    w = rng.integers(0, 9, size=(6, 2)).astype(np.int32)
    lab = np.arange(6, dtype=np.float64)[:, None]
    write_h5(tmp_path / "m.h5", img=img, lab=lab, w=w)
    (tmp_path / "l.txt").write_text(f"{tmp_path / 'm.h5'}\n")   # absolute path
    text = hdf5_net(tmp_path / "l.txt", batch=4, tops=("img", "lab", "w"))
    net = Net(net_from_text(text), TRAIN, dtype=np.float64)
    assert [net.blobs[t].shape for t in ("img", "lab", "w")] == [(4, 2, 3, 4), (4, 1), (4, 2)]
    net.forward()
    net.forward()
    idx = [4, 5, 0, 1]
    assert net.blobs["img"].data.dtype == np.float64
    np.testing.assert_array_equal(net.blobs["img"].data, img[idx].astype(np.float64))
    np.testing.assert_array_equal(net.blobs["lab"].data, lab[idx])
    np.testing.assert_array_equal(net.blobs["w"].data, w[idx])
    # shape inference alone (netdef summary) reads metadata only
    net = Net(net_from_text(text), TEST, init_params=False)
    assert net.blobs["img"].shape == (4, 2, 3, 4)


@needs_h5py
def test_hdf5_needs_h5py(two_files, monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)      # import h5py -> ImportError
    src, _, _ = two_files
    with pytest.raises(ConfigError) as e:
        Net(net_from_text(hdf5_net(src), file="net.prototxt"), TRAIN)
    assert "HDF5Data needs h5py: pip install 'netdef[hdf5]'" in str(e.value)
    assert e.value.layer == "d" and e.value.file == "net.prototxt" and e.value.line == 2
    assert e.value.field == "hdf5_data_param.source"


@needs_h5py
def test_hdf5_missing_dataset_and_files_name_the_file(tmp_path):
    write_h5(tmp_path / "a.h5", data=np.zeros((3, 2)))
    (tmp_path / "l.txt").write_text("a.h5\n")
    with pytest.raises(ConfigError, match=r"a\.h5' has no dataset 'label'.*has: data") as e:
        Net(net_from_text(hdf5_net(tmp_path / "l.txt"), file="n.prototxt"), TRAIN)
    assert str(e.value).startswith("n.prototxt:2:")
    (tmp_path / "l2.txt").write_text("a.h5\nnope.h5\n")
    with pytest.raises(ConfigError, match=r"HDF5 file 'nope\.h5' listed in .*l2\.txt' \(line 2\) "
                                          r"does not exist"):
        Net(net_from_text(hdf5_net(tmp_path / "l2.txt", tops=("data",))), TRAIN)
    write_h5(tmp_path / "b.h5", data=np.zeros((3, 5)))
    (tmp_path / "l3.txt").write_text("a.h5\nb.h5\n")
    with pytest.raises(ConfigError, match=r"\[5\] in HDF5 file .*b\.h5' but \[2\]"):
        Net(net_from_text(hdf5_net(tmp_path / "l3.txt", tops=("data",))), TRAIN)
    # an unreadable list: shapes from --input-shape, the error comes at forward, located
    text = net_from_text(hdf5_net(tmp_path / "missing.txt"), file="n.prototxt")
    with pytest.raises(ConfigError, match="--input-shape data="):
        Net(text, TRAIN)
    net = Net(text, TRAIN, input_shapes={"data": (5, 2)})
    with pytest.raises(ConfigError, match=r"HDF5 file list '.*missing\.txt' does not exist") as e:
        net.forward()
    assert e.value.file == "n.prototxt" and e.value.line == 2 and e.value.layer == "d"


@needs_h5py
def test_hdf5_input_shape_that_does_not_fit_the_data(two_files):
    src, _, _ = two_files
    net = Net(net_from_text(hdf5_net(src)), TRAIN, input_shapes={"data": (5, 4)})
    assert net.blobs["label"].shape == (5,)
    with pytest.raises(ShapeError, match=r"top 'data' has shape \[5, 4\] .* \[5, 3\]"):
        net.forward()


# -- MemoryData --------------------------------------------------------------------------------
def memory_net(batch=3, c=2, h=3, w=3, transform=""):
    return net_from_text(
        f'layer {{ name: "m" type: "MemoryData" top: "data" top: "label"\n'
        f'  memory_data_param {{ batch_size: {batch} channels: {c} height: {h} width: {w} }}\n'
        f'  {transform} }}\n', file="mem.prototxt")


def test_memory_data_serves_consecutive_batches_and_wraps():
    x = np.arange(6 * 2 * 3 * 3, dtype=np.float32).reshape(6, 2, 3, 3)
    y = np.arange(6, dtype=np.float32) * 10
    net = Net(memory_net(), TRAIN)
    net.set_input_arrays(x, y)
    for idx in ([0, 1, 2], [3, 4, 5], [0, 1, 2]):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, x[idx])
        np.testing.assert_array_equal(net.blobs["label"].data, y[idx])
    layer = net.layers[0]
    assert layer.data_state()[0] == 3
    layer.reset(x[::-1].copy(), y[::-1].copy())          # Caffe's Reset: back to item 0
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [50, 40, 30])
    x[:] = 0                                             # the net holds its own copy of batches
    assert net.blobs["data"].data.max() > 0


def test_memory_data_transform_scale_mean_and_crop():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, size=(4, 2, 4, 4)).astype(np.float32)
    y = np.array([1, 2, 3, 4], np.float32)
    net = Net(memory_net(batch=2, h=4, w=4,
                         transform="transform_param { scale: 0.5 mean_value: 10 mean_value: 20 }"),
              TEST)
    net.layers[0].set_input_arrays(x, y)
    net.forward()
    mean = np.array([10, 20], np.float32).reshape(2, 1, 1)
    np.testing.assert_array_equal(net.blobs["data"].data, (x[:2] - mean) * np.float32(0.5))
    net = Net(memory_net(batch=2, h=4, w=4, transform="transform_param { crop_size: 2 }"), TEST)
    assert net.blobs["data"].shape == (2, 2, 2, 2)
    net.set_input_arrays(x, y)
    net.forward()
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, x[2:, :, 1:3, 1:3])   # centre crop
    np.testing.assert_array_equal(net.blobs["label"].data, [3, 4])


@needs_h5py
def test_memory_data_errors():
    net = Net(memory_net(), TRAIN)
    with pytest.raises(ConfigError, match="set_input_arrays") as e:
        net.forward()
    assert e.value.file == "mem.prototxt" and e.value.line == 1
    layer = net.layers[0]
    with pytest.raises(ShapeError, match=r"\[6, 2, 4, 4\].*\(K, 2, 3, 3\)"):
        layer.set_input_arrays(np.zeros((6, 2, 4, 4)), np.zeros(6))
    with pytest.raises(ShapeError, match=r"4 items .* multiple of the batch size \(3\)"):
        layer.set_input_arrays(np.zeros((4, 2, 3, 3)), np.zeros(4))
    with pytest.raises(ShapeError, match=r"labels have shape \[5\] but data has shape "
                                         r"\[6, 2, 3, 3\]"):
        layer.set_input_arrays(np.zeros((6, 2, 3, 3)), np.zeros(5))
    with pytest.raises(ShapeError, match=r"\[2, 3, 3\]"):
        layer.set_input_arrays(np.zeros((2, 3, 3)), np.zeros(2))
    other = Net(net_from_text(hdf5_net("x.txt")), TRAIN, input_shapes={"data": (5, 2)},
                init_params=False)
    with pytest.raises(ConfigError, match="no MemoryData layer"):
        other.set_input_arrays(np.zeros((5, 2, 3, 3)), np.zeros(5))
    assert isinstance(ConfigError("x"), NetdefError)


# -- WindowData --------------------------------------------------------------------------------
@pytest.fixture
def windows(tmp_path):
    """Two PNG images and a windows file; returns (path, {image: BGR C×H×W array})."""
    from PIL import Image
    rng = np.random.default_rng(5)
    imgs = {}
    for name, (h, w) in (("im0.png", (20, 24)), ("im1.png", (18, 22))):
        rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / name)
        imgs[name] = np.ascontiguousarray(rgb[:, :, ::-1].transpose(2, 0, 1))   # BGR, C×H×W
    # fg (overlap >= 0.5) windows are 8x8, bg (< 0.3) 8x8 too; 0.4 is dropped
    text = """# 0
im0.png
3 20 24
4
1 0.9 2 3 9 10
2 0.7 12 1 19 8
0 0.1 0 0 7 7
5 0.4 1 1 8 8
# 1
im1.png
3 18 22
2
3 0.8 10 5 17 12
4 0.2 14 10 21 17
"""
    (tmp_path / "windows.txt").write_text(text)
    return tmp_path, imgs


FG = [("im0.png", 1, (2, 3, 9, 10)), ("im0.png", 2, (12, 1, 19, 8)),
      ("im1.png", 3, (10, 5, 17, 12))]
BG = [("im0.png", 0, (0, 0, 7, 7)), ("im1.png", 0, (14, 10, 21, 17))]


def window_net(folder, batch=8, fg_fraction=0.25, extra="", transform="crop_size: 8"):
    return net_from_text(
        f'layer {{ name: "w" type: "WindowData" top: "data" top: "label"\n'
        f'  window_data_param {{ source: "{folder / "windows.txt"}" root_folder: "{folder}/" '
        f'batch_size: {batch} fg_threshold: 0.5 bg_threshold: 0.3 fg_fraction: {fg_fraction} '
        f'{extra} }}\n'
        f'  transform_param {{ {transform} }} }}\n')


def crops(imgs, table):
    return [(label, imgs[name][:, y1:y2 + 1, x1:x2 + 1].astype(np.float32))
            for name, label, (x1, y1, x2, y2) in table]


@_needs("PIL")
def test_window_data_batches_bg_then_fg_with_exact_windows(windows):
    folder, imgs = windows
    fg, bg = crops(imgs, FG), crops(imgs, BG)
    net = Net(window_net(folder), TRAIN, seed=0)
    assert net.blobs["data"].shape == (8, 3, 8, 8)
    seen = set()
    for _ in range(4):
        net.forward()
        data, labels = net.blobs["data"].data, net.blobs["label"].data
        num_fg = int(8 * 0.25)
        assert list(labels[:8 - num_fg]) == [0] * 6                 # background first
        assert set(labels[8 - num_fg:]) <= {1, 2, 3}                # then the foreground
        for k in range(8):
            table = bg if k < 8 - num_fg else fg
            hits = [lab for lab, c in table if np.array_equal(data[k], c)]
            assert hits and hits[0] == labels[k]                     # a window, copied as is
            seen.add((k < 6, len(hits) and hits[0], int(data[k, 0, 0, 0])))
    assert len(seen) > 3                                            # several windows drawn
    # repeatable with a seed
    a, b = Net(window_net(folder), TRAIN, seed=7), Net(window_net(folder), TRAIN, seed=7)
    for _ in range(2):
        a.forward()
        b.forward()
        np.testing.assert_array_equal(a.blobs["data"].data, b.blobs["data"].data)
        np.testing.assert_array_equal(a.blobs["label"].data, b.blobs["label"].data)


@_needs("PIL")
def test_window_data_fg_fraction_mirror_scale_mean(windows):
    folder, imgs = windows
    net = Net(window_net(folder, batch=6, fg_fraction=0.5,
                         transform="crop_size: 8 mirror: true scale: 0.5 mean_value: 100"),
              TRAIN, seed=1)
    flips = 0
    for _ in range(3):
        net.forward()
        labels = net.blobs["label"].data
        assert list(labels[:3]) == [0, 0, 0] and all(labels[3:] > 0)
        for k in range(6):
            table = crops(imgs, BG if k < 3 else FG)
            refs = [(c - 100) * np.float32(0.5) for _, c in table]
            same = any(np.array_equal(net.blobs["data"].data[k], r) for r in refs)
            flipped = any(np.array_equal(net.blobs["data"].data[k], r[:, :, ::-1]) for r in refs)
            assert same or flipped
            flips += flipped and not same
    assert flips > 0


@_needs("PIL")
def test_window_data_warp_shrinks_like_opencv_and_pads_context(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    bgr = rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.int64)
    (tmp_path / "windows.txt").write_text(
        "# 0\na.png\n3 20 20\n2\n1 1.0 2 4 17 19\n0 0.0 0 0 3 3\n")
    net = Net(window_net(tmp_path, batch=2, fg_fraction=0.5), TRAIN, seed=0)
    net.forward()
    # a 16x16 window warped to 8x8: cv::resize INTER_LINEAR at exactly 1/2 averages 2x2
    # blocks, rounding halves up
    win = bgr[:, 4:20, 2:18]
    ref = (win[:, 0::2, 0::2] + win[:, 1::2, 0::2] + win[:, 0::2, 1::2] + win[:, 1::2, 1::2]
           + 2) // 4
    np.testing.assert_array_equal(net.blobs["data"].data[1], ref.astype(np.float32))
    assert net.blobs["label"].data[1] == 1
    # context_pad 2 around the corner window (0,0)-(3,3): expanded to (-2,-2)-(6,6), whose
    # 2 pixels beyond the image become 2 zero rows/columns (not mean-subtracted)
    from netdef.data.image_list import resize_bilinear
    net = Net(window_net(tmp_path, batch=2, fg_fraction=0.5, extra="context_pad: 2",
                         transform="crop_size: 8 mean_value: 10"), TRAIN, seed=0)
    net.forward()
    out = net.blobs["data"].data[0]
    assert net.blobs["label"].data[0] == 0
    assert not out[:, :2, :].any() and not out[:, :, :2].any()
    inner = resize_bilinear(bgr[:, 0:7, 0:7].astype(np.uint8), 6, 6).astype(np.float32) - 10
    np.testing.assert_array_equal(out[:, 2:, 2:], inner)


@_needs("PIL")
def test_window_data_errors(windows, tmp_path):
    folder, _ = windows
    (folder / "bad.txt").write_text("# 0\nim0.png\n3 20 24\n1\n0 0.9 1 1 5 5\n")
    text = window_net(folder).message
    text.layer[0].window_data_param.source = str(folder / "bad.txt")
    net = Net(text, TRAIN)
    with pytest.raises(NetdefError, match=r"foreground window .* has class 0") as e:
        net.forward()
    assert e.value.file == str(folder / "bad.txt") and e.value.line == 5
    (folder / "only_bg.txt").write_text("# 0\nim0.png\n3 20 24\n1\n0 0.1 1 1 5 5\n")
    text.layer[0].window_data_param.source = str(folder / "only_bg.txt")
    with pytest.raises(ConfigError, match="no foreground windows but batches take 2"):
        Net(text, TRAIN).forward()
    text.layer[0].window_data_param.source = str(folder / "nowhere.txt")
    with pytest.raises(ConfigError, match=r"window file '.*nowhere\.txt' does not exist"):
        Net(text, TRAIN).forward()


# -- solver ------------------------------------------------------------------------------------
def regression_files(tmp_path, n=24):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 4))
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]]) + 0.25
    write_h5(tmp_path / "r0.h5", data=x[:14], label=y[:14])
    write_h5(tmp_path / "r1.h5", data=x[14:], label=y[14:])
    (tmp_path / "train.txt").write_text("r0.h5\nr1.h5\n")
    return x.astype(np.float32), y.astype(np.float32)


def regression_solver(tmp_path, max_iter, shuffle=False, momentum=0.9):
    from netdef.solvers.solver import Solver
    (tmp_path / "net.prototxt").write_text(f"""
    layer {{ name: "d" type: "HDF5Data" top: "data" top: "label"
      hdf5_data_param {{ source: "{tmp_path / 'train.txt'}" batch_size: 5
                         shuffle: {str(shuffle).lower()} }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
      inner_product_param {{ num_output: 1 weight_filler {{ type: "constant" value: 0 }} }} }}
    layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }}
    """)
    (tmp_path / "s.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.05 momentum: {momentum} '
        f'lr_policy: "fixed" max_iter: {max_iter} random_seed: 9 display: 0 '
        f'snapshot_after_train: false snapshot_prefix: "{tmp_path / "snap"}"')
    return Solver(load_solver(str(tmp_path / "s.prototxt")))


@needs_h5py
def test_solver_trains_on_hdf5_data(tmp_path):
    x, y = regression_files(tmp_path)
    s = regression_solver(tmp_path, 1, momentum=0.0)
    s.solve()
    # one SGD step from zero weights on rows 0..4: dW = -(y^T x) / N, db = -sum(y) / N
    w, b = (p.blob.data for p in s.params)
    xb, yb = x[:5].astype(np.float64), y[:5].astype(np.float64)
    np.testing.assert_allclose(w, 0.05 * (yb.T @ xb) / 5, rtol=1e-5)
    np.testing.assert_allclose(b, 0.05 * yb.sum(0) / 5, rtol=1e-5)
    s = regression_solver(tmp_path, 60)
    s.solve()
    first = float(np.mean((y[:5]) ** 2) / 2)
    assert s.net.forward() < 0.05 * first                 # it learned the linear map
    assert s.net.layers[0].data_position() == (61 * 5) % 24


@needs_h5py
def test_resume_is_bit_exact_with_hdf5_shuffle(tmp_path):
    regression_files(tmp_path)
    a = regression_solver(tmp_path, 12, shuffle=True)
    a.solve()
    b = regression_solver(tmp_path, 7, shuffle=True)
    b.solve()
    _, state = b.snapshot()
    c = regression_solver(tmp_path, 12, shuffle=True)
    c.solve(resume=state)
    for p, q in zip(a.params, c.params):
        np.testing.assert_array_equal(p.blob.data, q.blob.data)
    assert not np.array_equal(a.params[0].blob.data, b.params[0].blob.data)
    assert a.net.layers[0].data_state() == c.net.layers[0].data_state()
    # shuffled batches differ from the file order
    d = regression_solver(tmp_path, 12, shuffle=False)
    d.solve()
    assert not np.array_equal(a.params[0].blob.data, d.params[0].blob.data)
