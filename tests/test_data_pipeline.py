"""The data pipeline behind the data layers: IDX/MNIST, Datum, LMDB source and writer,
DataTransformer (vs hand-written references of Caffe's loop), mean .binaryproto, ImageData
lists.  Uses the real MNIST files, the real CIFAR-100 mean and the sample PNGs (read-only);
everything written goes to tmp_path."""
import glob
import gzip
import os

import numpy as np
import pytest
from shared_paths import DATA

from netdef.data import binaryproto, datum, mnist
from netdef.data.transform import TEST, TRAIN, DataTransformer
from netdef.errors import ConfigError, FileFormatError, NetdefError
from netdef.proto import pb

MNIST = os.path.join(DATA, "mnist")
CIFAR_MEAN = os.path.join(DATA, "caffe", "mean", "cifar100_mean.binaryproto")
SAMPLES = os.path.join(DATA, "samples")


@pytest.fixture(scope="module")
def mnist_test():
    imgs = mnist.read_idx_images(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"))
    labels = mnist.read_idx_labels(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))
    return imgs, labels


def tp(**kw):
    return pb.TransformationParameter(**kw)


# ---------------------------------------------------------------------------------------------
# IDX / MNIST

def test_idx_real_mnist_counts_and_first_labels(mnist_test):
    imgs, labels = mnist_test
    assert imgs.shape == (10000, 1, 28, 28) and imgs.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert labels.max() == 9 and imgs.max() == 255
    train_labels = mnist.read_idx_labels(os.path.join(MNIST, "train-labels-idx1-ubyte.gz"))
    assert train_labels.shape == (60000,) and train_labels[:3].tolist() == [5, 0, 4]
    # the image file's header alone gives the count (no need to decode 47 MB here)
    with gzip.open(os.path.join(MNIST, "train-images-idx3-ubyte.gz")) as f:
        head = f.read(16)
    assert [int.from_bytes(head[k:k + 4], "big") for k in range(0, 16, 4)] == \
        [2051, 60000, 28, 28]


def test_idx_raw_and_gzip_round_trip(tmp_path, mnist_test):
    imgs, labels = mnist_test
    for name in ("imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"):
        mnist.write_idx(tmp_path / name, imgs[:7])
        assert np.array_equal(mnist.read_idx_images(tmp_path / name), imgs[:7])
    raw = (tmp_path / "imgs-idx3-ubyte").read_bytes()
    assert raw[:4] == b"\x00\x00\x08\x03" and len(raw) == 16 + 7 * 784
    mnist.write_idx(tmp_path / "f.idx", np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.array_equal(mnist.read_idx(tmp_path / "f.idx"), np.arange(6).reshape(2, 3))


def test_idx_errors(tmp_path, mnist_test):
    imgs, labels = mnist_test
    lab = os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(FileFormatError, match="magic number 2049, expected 2051"):
        mnist.read_idx_images(lab)
    with pytest.raises(FileFormatError, match="expected 2049"):
        mnist.read_idx_labels(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz"))
    mnist.write_idx(tmp_path / "i", imgs[:3])
    (tmp_path / "cut").write_bytes((tmp_path / "i").read_bytes()[:-10])
    with pytest.raises(FileFormatError, match="truncated"):
        mnist.read_idx_images(tmp_path / "cut")
    (tmp_path / "cut.gz").write_bytes(open(lab, "rb").read()[:1000])
    with pytest.raises(FileFormatError, match="gzip"):
        mnist.read_idx_labels(tmp_path / "cut.gz")
    (tmp_path / "png").write_bytes(open(os.path.join(SAMPLES, "mnist_00_7.png"), "rb").read())
    with pytest.raises(FileFormatError, match="not an IDX image file"):
        mnist.read_idx_images(tmp_path / "png")
    with pytest.raises(FileFormatError, match="not found"):
        mnist.read_idx_images(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------
# Datum

def test_datum_uint8_and_float_round_trip():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    d = datum.array_to_datum(a, 7)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 7) and d.data == a.tobytes()
    back, label = datum.decode_datum(d.SerializeToString())
    assert label == 7 and back.dtype == np.uint8 and np.array_equal(back, a)
    f = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    back, label = datum.decode_datum(datum.encode_datum(f, -3))
    assert label == -3 and back.dtype == np.float32 and np.array_equal(back, f)


def test_datum_errors():
    bad = pb.Datum(channels=1, height=2, width=2, data=b"abc")
    with pytest.raises(FileFormatError, match="3 values for shape"):
        datum.datum_to_array(bad)
    with pytest.raises(FileFormatError, match="must be positive"):
        datum.datum_to_array(pb.Datum(label=1))
    with pytest.raises(FileFormatError, match="not a serialized Datum"):
        datum.decode_datum(b"\xff\xff\xff")


def test_datum_encoded_png_is_bgr_like_opencv():
    pytest.importorskip("PIL")
    bgr = np.zeros((3, 4, 5), np.uint8)
    bgr[0], bgr[1], bgr[2] = 10, 20, 30                  # B, G, R planes
    d = datum.array_to_datum(bgr, 3, encode="png")
    assert d.encoded and d.data[:4] == b"\x89PNG"
    back, label = datum.datum_to_array(d)
    assert label == 3 and np.array_equal(back, bgr)
    from PIL import Image
    import io
    rgb = np.asarray(Image.open(io.BytesIO(d.data)))
    assert rgb[0, 0].tolist() == [30, 20, 10]            # the file itself is RGB
    grey, _ = datum.datum_to_array(d, force_gray=True)
    # libpng's rgb_to_gray (0.299, 0.587, 15-bit weights, truncated), as OpenCV gets it
    assert grey.shape == (1, 4, 5) and grey[0, 0, 0] == (9797 * 30 + 19234 * 20 + 3737 * 10) >> 15
    g1 = datum.array_to_datum(bgr[:1], 0, encode="png")
    assert datum.datum_to_array(g1)[0].shape == (1, 4, 5)
    assert datum.datum_to_array(g1, force_color=True)[0].shape == (3, 4, 5)
    with pytest.raises(ConfigError, match="force_color and force_gray"):
        datum.datum_to_array(g1, force_color=True, force_gray=True)
    with pytest.raises(FileFormatError, match="cannot decode"):
        datum.datum_to_array(pb.Datum(encoded=True, data=b"not an image"))


# ---------------------------------------------------------------------------------------------
# LMDB

@pytest.fixture(scope="module")
def mnist_lmdb(tmp_path_factory, mnist_test):
    pytest.importorskip("lmdb")
    imgs, labels = mnist_test
    out = tmp_path_factory.mktemp("lmdb") / "mnist_test_lmdb"
    assert mnist.convert_mnist(imgs[:300], labels[:300], out) == 300
    return out


def test_convert_mnist_slice_reads_back_identical(mnist_lmdb, mnist_test):
    import lmdb

    from netdef.data.lmdb_source import LMDBSource
    imgs, labels = mnist_test
    src = LMDBSource(mnist_lmdb)
    assert len(src) == 300 and src.position == 0 and src.peek_shape() == (1, 28, 28)
    got = src.read(300)
    assert src.position == 0                                   # wrapped exactly once
    assert all(np.array_equal(a, imgs[i]) and lab == labels[i]
               for i, (a, lab) in enumerate(got))
    assert got[0][0].dtype == np.uint8 and got[0][1] == 7
    src.close()
    # Caffe's layout: "%08d" keys, 1x28x28 uint8 Datum values
    with lmdb.open(str(mnist_lmdb), readonly=True, lock=False) as env, env.begin() as txn:
        keys = [k for k, _ in txn.cursor()]
        d = pb.Datum.FromString(txn.get(b"00000002"))
    assert keys[:3] == [b"00000000", b"00000001", b"00000002"] and keys[-1] == b"00000299"
    assert (d.channels, d.height, d.width, d.label, d.encoded) == (1, 28, 28, 1, False)
    assert d.data == imgs[2].tobytes() and not d.float_data


def test_lmdb_cursor_wraps_and_position_restores(mnist_lmdb, mnist_test):
    from netdef.data.lmdb_source import LMDBSource
    _, labels = mnist_test
    src = LMDBSource(mnist_lmdb)
    src.position = 295
    got = [lab for _, lab in src.read(10)]                     # 295..299 then 0..4
    assert got == labels[295:300].tolist() + labels[:5].tolist() and src.position == 5
    saved = src.position
    a = src.read(7)
    src.position = saved                                       # resume from a saved position
    b = src.read(7)
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    src2 = LMDBSource(mnist_lmdb)                              # a fresh source, same position
    src2.position = saved
    assert [lab for _, lab in src2.read(7)] == [lab for _, lab in a]
    src.skip(600 + 3)                                          # rand_skip wraps too
    assert src.position == 15
    src.position = -1
    assert src.position == 299 and src.key(299) == b"00000299"
    assert src.read(0) == [] and src.peek()[1] == labels[299] and src.position == 299


def test_write_lmdb_grows_map_floats_and_encoded(tmp_path):
    pytest.importorskip("lmdb")
    from netdef.data.lmdb_source import LMDBSource, write_lmdb
    rng = np.random.default_rng(0)
    items = [(rng.integers(0, 256, (3, 16, 16), dtype=np.uint8), i % 5) for i in range(200)]
    # ~160 KB of records into a 32 KB map: doubles until it fits
    assert write_lmdb(tmp_path / "u8", items, map_size=32 << 10, commit_every=64) == 200
    got = LMDBSource(tmp_path / "u8").read(200)
    assert all(np.array_equal(a, x) and lab == y for (a, lab), (x, y) in zip(got, items))
    f = [(np.full((2, 3, 3), i / 3, np.float32), i) for i in range(5)]
    write_lmdb(tmp_path / "f", f)
    got = LMDBSource(tmp_path / "f").read(5)
    assert got[4][0].dtype == np.float32 and np.array_equal(got[4][0], f[4][0])
    pytest.importorskip("PIL")
    write_lmdb(tmp_path / "png", items[:4], encode="png")
    src = LMDBSource(tmp_path / "png")
    assert all(np.array_equal(a, x) for (a, _), (x, _) in zip(src.read(4), items))
    assert LMDBSource(tmp_path / "png", force_gray=True).peek_shape() == (1, 16, 16)
    with pytest.raises(ConfigError, match="not empty"):
        write_lmdb(tmp_path / "f", f)
    assert write_lmdb(tmp_path / "f", f[:2], overwrite=True) == 2
    assert len(LMDBSource(tmp_path / "f")) == 2


def test_lmdb_source_errors(tmp_path):
    pytest.importorskip("lmdb")
    from netdef.data.lmdb_source import LMDBSource, write_lmdb
    with pytest.raises(ConfigError, match="does not exist.*netdef data get mnist") as e:
        LMDBSource(tmp_path / "nope")
    assert e.value.field == "data_param.source"
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(FileFormatError, match="not an LMDB.*a file"):
        LMDBSource(tmp_path / "file")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileFormatError, match="no data.mdb.*create one"):
        LMDBSource(tmp_path / "empty_dir")
    ldb = tmp_path / "leveldb"
    ldb.mkdir()
    for name in ("CURRENT", "LOG", "000005.ldb"):
        (ldb / name).write_bytes(b"")
    with pytest.raises(FileFormatError, match="LevelDB"):
        LMDBSource(ldb)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "data.mdb").write_bytes(b"\x00" * 5000)
    with pytest.raises(FileFormatError,
                       match=r"not an LMDB: data.mdb \(5,000 bytes\) has no LMDB meta page"):
        LMDBSource(junk)
    write_lmdb(tmp_path / "none", [])
    with pytest.raises(FileFormatError, match="no records"):
        LMDBSource(tmp_path / "none")
    import lmdb
    with lmdb.open(str(tmp_path / "notdatum")) as env, env.begin(write=True) as txn:
        txn.put(b"00000000", b"\xff\xff\xff\xff")
    with pytest.raises(FileFormatError, match="not a serialized Datum"):
        LMDBSource(tmp_path / "notdatum").read(1)
    # every one of them is a one-line user error
    assert issubclass(FileFormatError, NetdefError) and issubclass(ConfigError, NetdefError)


# ---------------------------------------------------------------------------------------------
# mean .binaryproto

def test_read_real_cifar100_mean():
    m = binaryproto.read_mean(CIFAR_MEAN)
    assert m.shape == (3, 32, 32) and m.dtype == np.float32
    assert m[0, 0, :3].tolist() == pytest.approx([133.62582, 133.62025, 134.72561], abs=1e-4)
    assert 0 < m.min() and m.max() < 255
    full = binaryproto.read_blobproto(CIFAR_MEAN)
    assert full.shape == (1, 3, 32, 32) and np.array_equal(full[0], m)


def test_binaryproto_round_trip_and_errors(tmp_path):
    m = np.random.default_rng(0).random((3, 5, 4), dtype=np.float32) * 255
    binaryproto.write_mean(tmp_path / "m.binaryproto", m)     # compute_image_mean's layout
    bp = pb.BlobProto.FromString((tmp_path / "m.binaryproto").read_bytes())
    assert (bp.num, bp.channels, bp.height, bp.width) == (1, 3, 5, 4) and not bp.HasField("shape")
    assert np.array_equal(binaryproto.read_mean(tmp_path / "m.binaryproto"), m)
    binaryproto.write_blobproto(tmp_path / "d.binaryproto", m.astype(np.float64), double=True)
    d = binaryproto.read_blobproto(tmp_path / "d.binaryproto")
    assert d.dtype == np.float64 and d.shape == (3, 5, 4) and np.array_equal(d, m)

    raw = (tmp_path / "m.binaryproto").read_bytes()
    (tmp_path / "cut.binaryproto").write_bytes(raw[:-7])      # inside the packed floats
    with pytest.raises(FileFormatError, match="truncated"):
        binaryproto.read_mean(tmp_path / "cut.binaryproto")
    short = pb.BlobProto(num=1, channels=3, height=5, width=4)
    short.data.extend([1.0] * 10)
    (tmp_path / "short.binaryproto").write_bytes(short.SerializeToString())
    with pytest.raises(FileFormatError, match="holds 10 values but its shape"):
        binaryproto.read_mean(tmp_path / "short.binaryproto")
    for foreign in (os.path.join(SAMPLES, "mnist_00_7.png"),
                    os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz")):
        with pytest.raises(FileFormatError, match="BlobProto"):
            binaryproto.read_mean(foreign)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty"):
        binaryproto.read_mean(tmp_path / "empty")
    with pytest.raises(ConfigError, match="not found") as e:
        binaryproto.read_mean(tmp_path / "missing.binaryproto")
    assert e.value.field == "transform_param.mean_file"


# ---------------------------------------------------------------------------------------------
# DataTransformer vs a hand-written copy of Caffe's Transform loop

def caffe_transform(x, *, crop=0, phase=TRAIN, mirror=False, scale=1.0, mean=None,
                    mean_values=(), rng=None, dtype=np.float32):
    """DataTransformer::Transform, element by element: draws mirror, then h_off, w_off."""
    c, H, W = x.shape
    do_mirror = bool(rng.integers(2)) if mirror else False
    h, w, h_off, w_off = H, W, 0, 0
    if crop:
        h = w = crop
        if phase == TRAIN:
            h_off = int(rng.integers(H - crop + 1))
            w_off = int(rng.integers(W - crop + 1))
        else:
            h_off, w_off = (H - crop) // 2, (W - crop) // 2
    flat, out = x.reshape(-1), np.empty(c * h * w, dtype)
    mflat = None if mean is None else mean.reshape(-1)
    mv = list(mean_values) * c if len(mean_values) == 1 else list(mean_values)
    s = dtype(scale)
    for ci in range(c):
        for hi in range(h):
            for wi in range(w):
                di = (ci * H + h_off + hi) * W + w_off + wi
                ti = (ci * h + hi) * w + (w - 1 - wi if do_mirror else wi)
                e = dtype(flat[di])
                if mflat is not None:
                    out[ti] = (e - dtype(mflat[di])) * s
                elif mv:
                    out[ti] = (e - dtype(mv[ci])) * s
                else:
                    out[ti] = e * s
    return out.reshape(c, h, w), (h_off, w_off, do_mirror)


@pytest.fixture(scope="module")
def cifar_like():
    rng = np.random.default_rng(42)
    return [rng.integers(0, 256, (3, 32, 32), dtype=np.uint8) for _ in range(3)]


def test_transform_cifar_mean_file_center_crop_test_phase(cifar_like):
    mean = binaryproto.read_mean(CIFAR_MEAN)
    t = DataTransformer(tp(mean_file=CIFAR_MEAN, crop_size=28, scale=0.00390625), TEST,
                        np.random.default_rng(0))
    assert t.output_shape((3, 32, 32)) == (3, 28, 28)
    assert t.output_shape((64, 3, 32, 32)) == (64, 3, 28, 28)
    out = t.transform_batch(cifar_like)
    assert out.shape == (3, 3, 28, 28) and out.dtype == np.float32
    for x, o in zip(cifar_like, out):
        ref, draws = caffe_transform(x, crop=28, phase=TEST, scale=0.00390625, mean=mean)
        assert draws == (2, 2, False) and np.array_equal(o, ref)   # bit-exact
        # the mean is cropped at the data's offset: (x - mean)[2:30, 2:30] * scale
        manual = (x[:, 2:30, 2:30].astype(np.float32) - mean[:, 2:30, 2:30]) * \
            np.float32(0.00390625)
        assert np.array_equal(o, manual)


def test_transform_train_random_crop_and_mirror_follow_the_draw_order(cifar_like):
    mean = binaryproto.read_mean(CIFAR_MEAN)
    param = tp(mean_file=CIFAR_MEAN, crop_size=24, mirror=True, scale=0.5)
    t = DataTransformer(param, TRAIN, np.random.default_rng(7))
    out = t.transform_batch(cifar_like)
    ref_rng = np.random.default_rng(7)
    draws = []
    for x, o in zip(cifar_like, out):
        ref, d = caffe_transform(x, crop=24, phase=TRAIN, mirror=True, scale=0.5, mean=mean,
                                 rng=ref_rng)
        draws.append(d)
        assert np.array_equal(o, ref)
    assert len({d[:2] for d in draws}) > 1                 # offsets vary between items
    # same seed -> same batch; the generator is the only source of randomness
    again = DataTransformer(param, TRAIN, np.random.default_rng(7)).transform_batch(cifar_like)
    assert np.array_equal(out, again)
    # resume: a generator restored from a saved state continues identically
    rng = np.random.default_rng(3)
    t = DataTransformer(param, TRAIN, rng)
    t.transform_batch(cifar_like)
    state = rng.bit_generator.state
    nxt = t.transform_batch(cifar_like)
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = state
    assert np.array_equal(DataTransformer(param, TRAIN, rng2).transform_batch(cifar_like), nxt)


def test_transform_mirror_semantics_and_test_phase_mirror(cifar_like):
    x = cifar_like[0]
    t = DataTransformer(tp(mirror=True), TEST, np.random.default_rng(1))
    outs = [t.transform(x) for _ in range(16)]
    plain = x.astype(np.float32)
    flipped = plain[:, :, ::-1]
    kinds = {"plain" if np.array_equal(o, plain) else
             "flip" if np.array_equal(o, flipped) else "other" for o in outs}
    assert kinds == {"plain", "flip"}                      # Caffe mirrors in TEST too
    r1 = DataTransformer(tp(mirror=True), TEST, np.random.default_rng(5)).transform_batch([x] * 8)
    r2 = DataTransformer(tp(mirror=True), TEST, np.random.default_rng(5)).transform_batch([x] * 8)
    assert np.array_equal(r1, r2)
    ref = np.random.default_rng(5)
    expect = [bool(ref.integers(2)) for _ in range(8)]     # one draw per item
    assert [np.array_equal(o, flipped) and not np.array_equal(o, plain) for o in r1] == expect


def test_transform_mean_values_scale_and_dtype(cifar_like):
    x = cifar_like[1]
    t = DataTransformer(tp(mean_value=[104, 117, 123], scale=0.017), TEST, None)
    ref, _ = caffe_transform(x, mean_values=(104, 117, 123), scale=np.float32(0.017))
    out = t.transform(x)
    assert np.array_equal(out, ref)
    assert np.allclose(out[2, 3, 4], (float(x[2, 3, 4]) - 123) * 0.017, rtol=1e-6)
    one = DataTransformer(tp(mean_value=[128], crop_size=30), TEST).transform(x)
    assert np.array_equal(one, x[:, 1:31, 1:31].astype(np.float32) - 128)
    d = DataTransformer(tp(mean_value=[104, 117, 123], scale=0.017), TEST).transform(
        x, dtype=np.float64)
    ref64, _ = caffe_transform(x, mean_values=(104, 117, 123),
                               scale=np.float64(np.float32(0.017)), dtype=np.float64)
    assert d.dtype == np.float64 and np.array_equal(d, ref64)
    # no parameters: identity (cast); float data passes through the same way
    assert np.array_equal(DataTransformer(None, TRAIN).transform(x), x.astype(np.float32))
    f = x.astype(np.float32) / 255
    assert np.array_equal(DataTransformer(tp(scale=2), "TRAIN").transform(f), f * np.float32(2))
    out = np.empty((2, 3, 32, 32), np.float32)
    assert DataTransformer(tp(), TEST).transform_batch([x, x], out=out) is out


def test_transform_errors(tmp_path, cifar_like):
    x = cifar_like[0]
    with pytest.raises(ConfigError, match="either mean_file or mean_value"):
        DataTransformer(tp(mean_file=CIFAR_MEAN, mean_value=[1]), TRAIN)
    with pytest.raises(ConfigError, match="mean_file is 3x32x32.*data is 1x28x28"):
        DataTransformer(tp(mean_file=CIFAR_MEAN), TEST).output_shape((1, 28, 28))
    with pytest.raises(ConfigError, match="1 mean_value or as many as channels \\(3\\), not 2"):
        DataTransformer(tp(mean_value=[1, 2]), TEST).transform(x)
    with pytest.raises(ConfigError, match="crop_size 40 exceeds the 32x32"):
        DataTransformer(tp(crop_size=40), TEST).transform_batch([x])
    with pytest.raises(ConfigError, match="force_color and force_gray"):
        DataTransformer(tp(force_color=True, force_gray=True), TEST)
    with pytest.raises(ConfigError, match="not found"):
        DataTransformer(tp(mean_file=str(tmp_path / "none.binaryproto")), TEST)
    with pytest.raises(ValueError, match="rng"):
        DataTransformer(tp(mirror=True), TRAIN).transform(x)
    with pytest.raises(ConfigError, match="phase"):
        DataTransformer(tp(), "VAL")


def test_data_layer_still_reads_through_the_pipeline(mnist_lmdb, mnist_test):
    """The Data layer's current calls (LMDBSource + DataTransformer.transform(x, out))."""
    from netdef.data.lmdb_source import LMDBSource
    imgs, _ = mnist_test
    src = LMDBSource(mnist_lmdb)
    t = DataTransformer(tp(scale=0.00390625), TRAIN, np.random.default_rng(0))
    out = np.empty((4,) + t.output_shape(src.peek_shape()), np.float32)
    for i, (a, _) in enumerate(src.read(4)):
        t.transform(a, out[i])
    assert np.array_equal(out, imgs[:4].astype(np.float32) * np.float32(0.00390625))


# ---------------------------------------------------------------------------------------------
# ImageData lists

def write_list(tmp_path, names, name="list.txt"):
    p = tmp_path / name
    p.write_text("".join(f"{n} {n.rsplit('_', 1)[1][0]}\n" for n in names))
    return p


def test_image_list_reads_samples_like_mnist(tmp_path, mnist_test):
    pytest.importorskip("PIL")
    from netdef.data.image_list import ImageListSource
    imgs, labels = mnist_test
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SAMPLES, "mnist_*.png")))
    assert len(names) == 20
    lst = write_list(tmp_path, names)
    src = ImageListSource(lst, root_folder=SAMPLES + "/", is_color=False)
    assert len(src) == 20 and src.peek_shape() == (1, 28, 28)
    got = src.read(22)                                     # wraps after 20
    assert src.position == 2
    # the sample PNGs are the first 20 MNIST test digits
    for i, (a, lab) in enumerate(got[:20]):
        assert a.dtype == np.uint8 and np.array_equal(a, imgs[i]) and lab == labels[i]
    assert np.array_equal(got[20][0], imgs[0]) and np.array_equal(got[21][0], imgs[1])
    color = ImageListSource(lst, root_folder=SAMPLES + "/").read(1)[0][0]
    assert color.shape == (3, 28, 28) and all(np.array_equal(c, imgs[0][0]) for c in color)


def test_image_list_resize_like_cv_resize(tmp_path):
    pytest.importorskip("PIL")
    from netdef.data.image_list import ImageListSource, resize_bilinear
    lst = write_list(tmp_path, ["fashionMNIST_00_9.png", "fashionMNIST_01_2.png"])
    src = ImageListSource(lst, root_folder=SAMPLES + os.sep, new_height=14, new_width=21,
                          is_color=False)
    a, lab = src.read(1)[0]
    assert a.shape == (1, 14, 21) and lab == 9
    # cv::resize INTER_LINEAR geometry on a ramp: exact 2x shrink averages pixel pairs,
    # upscaling interpolates between half-pixel centres and clamps at the borders
    ramp = (np.arange(8, dtype=np.uint8) * 10)[None, None, :].repeat(2, axis=1)
    assert resize_bilinear(ramp, 2, 4)[0, 0].tolist() == [5, 25, 45, 65]
    assert resize_bilinear(ramp, 2, 16)[0, 0].tolist() == \
        [0, 3, 8, 13, 18, 23, 28, 33, 38, 43, 48, 53, 58, 63, 68, 70]
    with pytest.raises(ConfigError, match="set together"):
        ImageListSource(lst, new_height=10)


def test_image_list_shuffle_is_seeded_and_resumable(tmp_path):
    pytest.importorskip("PIL")
    from netdef.data.image_list import ImageListSource
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SAMPLES, "*.png")))
    lst = write_list(tmp_path, names)

    def make(seed):
        return ImageListSource(lst, root_folder=SAMPLES + "/", shuffle=True, is_color=False,
                               rng=np.random.default_rng(seed))
    a, b = make(3), make(3)
    first = a.current_line()
    labels_a = [lab for _, lab in a.read(45)]              # more than two passes (40 lines)
    labels_b = [lab for _, lab in b.read(45)]
    assert labels_a == labels_b and a.position == 45 and first == a.lines[a.order(0)[0]]
    assert sorted(a.order(0).tolist()) == list(range(40))
    assert a.order(0).tolist() != a.order(1).tolist()      # a fresh order each pass
    assert a.order(0).tolist() != list(range(40))
    # resume from (shuffle_seed, position) in a new source
    c = make(99)
    c.shuffle_seed, c.position = a.shuffle_seed, 41
    a.position = 41
    assert [lab for _, lab in c.read(6)] == [lab for _, lab in a.read(6)]
    assert [x[1] for x in make(4).read(10)] != labels_a[:10]


def test_image_list_errors(tmp_path):
    pytest.importorskip("PIL")
    from netdef.data.image_list import ImageListSource
    with pytest.raises(ConfigError, match="does not exist") as e:
        ImageListSource(tmp_path / "missing.txt")
    assert e.value.field == "image_data_param.source"
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ConfigError, match="empty"):
        ImageListSource(tmp_path / "empty.txt")
    (tmp_path / "bad.txt").write_text("a.png 1\nb.png x\n")
    with pytest.raises(FileFormatError, match="not an integer") as e:
        ImageListSource(tmp_path / "bad.txt")
    assert e.value.line == 2
    (tmp_path / "nolabel.txt").write_text("a.png\n")
    with pytest.raises(FileFormatError, match="expected 'path label'"):
        ImageListSource(tmp_path / "nolabel.txt")
    (tmp_path / "spaces.txt").write_text("my image.png 3\r\n")
    assert ImageListSource(tmp_path / "spaces.txt").lines == [("my image.png", 3)]
    lst = write_list(tmp_path, ["mnist_00_7.png"], "one.txt")
    src = ImageListSource(lst, root_folder=SAMPLES)       # no trailing '/': prepended as-is
    with pytest.raises(FileFormatError, match="end it with '/'"):
        src.read(1)
    (tmp_path / "notimg.txt").write_text(f"{tmp_path / 'bad.txt'} 0\n")
    with pytest.raises(FileFormatError, match="could not load the image"):
        ImageListSource(tmp_path / "notimg.txt").read(1)
    with pytest.raises(ValueError, match="rng"):
        ImageListSource(lst, shuffle=True)


def _png_header_only(w, h):
    """A PNG that declares w x h grey pixels and holds none: what a decompression bomb shows
    the decoder before it allocates."""
    import struct
    import zlib

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("w,h", [(10000, 10000), (20000, 10000)])   # Pillow warns / raises
def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path, w, h):
    from netdef.data.datum import MAX_PIXELS, decode_image, open_image
    from netdef.errors import FileFormatError
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(w, h))
    assert w * h > MAX_PIXELS
    with pytest.raises(FileFormatError, match="over the limit|more than 89,478,485 pixels") as e:
        open_image(str(path))
    assert e.value.file == str(path) and "--max-pixels" in str(e.value)
    with pytest.raises(FileFormatError, match="^x.png: "):
        decode_image(path.read_bytes(), name="x.png")


def test_max_pixels_limit_is_adjustable(tmp_path):
    from netdef.data import datum
    from netdef.errors import FileFormatError
    path = tmp_path / "small.png"
    path.write_bytes(datum.encode_image(np.zeros((1, 40, 50), np.uint8)))
    prev = datum.set_max_pixels(40 * 50 - 1)
    try:
        with pytest.raises(FileFormatError, match="50x40 = 2,000 pixels, over the limit of 1,999"):
            datum.open_image(str(path))
        datum.set_max_pixels(40 * 50)
        assert datum.open_image(str(path)).size == (50, 40)
    finally:
        datum.set_max_pixels(prev)


def test_write_lmdb_builds_in_a_temp_folder(tmp_path):
    """A writer that fails half-way leaves neither the LMDB nor its temp folder; one that ends
    moves the complete database in."""
    pytest.importorskip("lmdb")
    from netdef.data.lmdb_source import LMDBSource, write_lmdb

    def records():
        for i in range(5):
            yield np.full((1, 2, 2), i, np.uint8), i
        raise RuntimeError("source died")
    with pytest.raises(RuntimeError, match="source died"):
        write_lmdb(tmp_path / "db", records())
    assert os.listdir(tmp_path) == []
    assert write_lmdb(tmp_path / "db", [(np.zeros((1, 2, 2), np.uint8), 3)]) == 1
    assert os.listdir(tmp_path) == ["db"] and sorted(os.listdir(tmp_path / "db")) == [
        "data.mdb", "lock.mdb"]
    with LMDBSource(tmp_path / "db") as src:
        assert len(src) == 1 and src.read(1)[0][1] == 3
