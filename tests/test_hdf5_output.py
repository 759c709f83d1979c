"""HDF5Output: its two bottoms appended per forward to the datasets "data" and "label" of an
HDF5 file (read back exactly with h5py and by HDF5Data), no tops, no gradient, clear errors."""
import sys

import numpy as np
import pytest

from netdef.blob import Blob
from netdef.config import net_from_text
from netdef.errors import ConfigError, NetdefError, ShapeError
from netdef.layers import TEST, TRAIN
from netdef.layers.registry import get_layer_class
from netdef.net import Net
from netdef.testing import make_layer

h5py = pytest.importorskip("h5py")


def out_net(path, data_shape=(3, 2, 4, 5), label_shape=(3,)):
    d = " ".join(f"dim: {k}" for k in data_shape)
    l_ = " ".join(f"dim: {k}" for k in label_shape)
    return net_from_text(
        f'layer {{ name: "in" type: "Input" top: "data" top: "label"\n'
        f'  input_param {{ shape {{ {d} }} shape {{ {l_} }} }} }}\n'
        f'layer {{ name: "out" type: "HDF5Output" bottom: "data" bottom: "label"\n'
        f'  hdf5_output_param {{ file_name: "{path}" }} }}\n', file="out.prototxt")


def feed(net, rng):
    x = rng.standard_normal(net.blobs["data"].shape).astype(net.dtype)
    y = rng.integers(0, 10, size=net.blobs["label"].shape).astype(net.dtype)
    net.blobs["data"].data = x
    net.blobs["label"].data = y
    net.forward()
    return x, y


def test_registered_with_its_param():
    cls = get_layer_class("HDF5Output")
    assert cls.type == "HDF5Output" and cls.__doc__
    assert cls.exact_num_bottom == 2 and cls.exact_num_top == 0


def test_writes_and_appends_per_forward_exactly(tmp_path):
    path = tmp_path / "out.h5"
    net = Net(out_net(path), TEST)
    assert not path.exists()                       # created by the first forward, not setup
    rng = np.random.default_rng(0)
    xs, ys = zip(*(feed(net, rng) for _ in range(3)))
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["data", "label"]
        assert f["data"].dtype == np.float32 and f["label"].dtype == np.float32
        assert f["data"].shape == (9, 2, 4, 5) and f["label"].shape == (9,)
        np.testing.assert_array_equal(f["data"][...], np.concatenate(xs))
        np.testing.assert_array_equal(f["label"][...], np.concatenate(ys))
    assert net.layers[1].rows_written == 9


def test_float64_net_writes_float64_any_rank(tmp_path):
    path = tmp_path / "out.h5"
    net = Net(out_net(path, (2, 7), (2, 1, 3)), TRAIN, dtype=np.float64)
    rng = np.random.default_rng(1)
    x1, y1 = feed(net, rng)
    x2, y2 = feed(net, rng)
    with h5py.File(path, "r") as f:
        assert f["data"].dtype == np.float64 and f["label"].shape == (4, 1, 3)
        np.testing.assert_array_equal(f["data"][...], np.concatenate([x1, x2]))
        np.testing.assert_array_equal(f["label"][...], np.concatenate([y1, y2]))


def test_file_readable_between_forwards_and_new_net_truncates(tmp_path):
    path = tmp_path / "out.h5"
    rng = np.random.default_rng(2)
    net = Net(out_net(path), TEST)
    x1, _ = feed(net, rng)
    with h5py.File(path, "r") as f:                # complete after each forward
        np.testing.assert_array_equal(f["data"][...], x1)
    x2, _ = feed(net, rng)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["data"][...], np.concatenate([x1, x2]))
    net2 = Net(out_net(path), TEST)                # a new layer starts the file over
    x3, y3 = feed(net2, rng)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["data"][...], x3)
        np.testing.assert_array_equal(f["label"][...], y3)


def test_hdf5data_reads_what_hdf5output_wrote(tmp_path):
    path = tmp_path / "out.h5"
    net = Net(out_net(path, (4, 3, 2, 2), (4,)), TEST)
    rng = np.random.default_rng(3)
    xs, ys = zip(*(feed(net, rng) for _ in range(2)))
    x, y = np.concatenate(xs), np.concatenate(ys)
    (tmp_path / "list.txt").write_text("out.h5\n")
    reader = Net(net_from_text(
        f'layer {{ name: "d" type: "HDF5Data" top: "data" top: "label"\n'
        f'  hdf5_data_param {{ source: "{tmp_path / "list.txt"}" batch_size: 3 }} }}\n'), TEST)
    assert reader.blobs["data"].shape == (3, 3, 2, 2) and reader.blobs["label"].shape == (3,)
    for start in (0, 3, 6):                        # 8 rows, wrapping
        reader.forward()
        idx = [(start + k) % 8 for k in range(3)]
        np.testing.assert_array_equal(reader.blobs["data"].data, x[idx])
        np.testing.assert_array_equal(reader.blobs["label"].data, y[idx])


def test_shape_only_net_does_not_touch_the_file(tmp_path):
    path = tmp_path / "out.h5"
    path.write_bytes(b"keep me")
    net = Net(out_net(path), TEST, init_params=False)
    assert [l.type for l in net.layers] == ["Input", "HDF5Output"]
    assert path.read_bytes() == b"keep me"


def test_backward_does_nothing():
    layer = make_layer("HDF5Output", 'hdf5_output_param { file_name: "unused.h5" }')
    bottom = [Blob((2, 3), dtype=np.float64, name="data"), Blob((2,), dtype=np.float64,
                                                               name="label")]
    layer.setup(bottom, [])
    for b in bottom:
        b.diff = np.full(b.shape, 7.0)
    layer.backward([], [True, True], bottom)
    for b in bottom:
        np.testing.assert_array_equal(b.diff, np.full(b.shape, 7.0))
    assert not layer.allow_force_backward(0) and layer.blobs == []


def test_force_backward_net_leaves_bottoms_alone(tmp_path):
    text = out_net(tmp_path / "o.h5", (2, 3), (2,))
    text.message.force_backward = True
    net = Net(text, TRAIN)
    assert net.bottom_need_backward[1] == [False, False]
    net.forward()
    net.backward()


def test_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        Net(net_from_text(
            'layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 } } }\n'
            'layer { name: "out" type: "HDF5Output" bottom: "a" bottom: "b" }\n',
            file="n.prototxt"), TEST)
    assert "file_name" in str(e.value) and e.value.field == "hdf5_output_param.file_name"
    assert e.value.layer == "out" and e.value.line == 2
    # rows must agree
    with pytest.raises(ShapeError, match="different numbers of rows"):
        Net(out_net(tmp_path / "o.h5", (3, 2), (4,)), TEST)
    # two bottoms exactly, no tops
    with pytest.raises(NetdefError, match="takes 2 bottoms"):
        Net(net_from_text(
            'layer { name: "in" type: "Input" top: "a" input_param { shape { dim: 2 } } }\n'
            'layer { name: "out" type: "HDF5Output" bottom: "a" '
            'hdf5_output_param { file_name: "x.h5" } }\n'), TEST)
    # a folder that does not exist: named, with the field
    net = Net(out_net(tmp_path / "no" / "such" / "o.h5", (2, 2), (2,)), TEST)
    with pytest.raises(ConfigError) as e:
        net.forward()
    assert "cannot open" in str(e.value) and e.value.field == "hdf5_output_param.file_name"
    # h5py missing: a clear error when the net is built to run
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ConfigError) as e:
        Net(out_net(tmp_path / "o.h5"), TEST)
    assert "HDF5Output needs h5py: pip install 'netdef[hdf5]'" in str(e.value)
    assert e.value.layer == "out" and e.value.file == "out.prototxt"
    Net(out_net(tmp_path / "o.h5"), TEST, init_params=False)     # summary still works


def test_row_shape_change_is_refused_without_a_torn_file(tmp_path):
    path = tmp_path / "o.h5"
    layer = make_layer("HDF5Output", f'hdf5_output_param {{ file_name: "{path}" }}')
    bottom = [Blob((2, 3), dtype=np.float64, name="data"),
              Blob((2,), dtype=np.float64, name="label")]
    layer.setup(bottom, [])
    bottom[0].data = np.arange(6.0).reshape(2, 3)
    bottom[1].data = [4.0, 5.0]
    layer.forward(bottom, [])
    bottom[1].reshape((2, 2))                    # the label's rows change shape
    with pytest.raises(ShapeError, match="rows of shape"):
        layer.forward(bottom, [])
    with h5py.File(path, "r") as f:              # nothing of the refused batch was written
        assert f["data"].shape == (2, 3) and f["label"].shape == (2,)
        np.testing.assert_array_equal(f["label"][...], [4.0, 5.0])


def test_relative_file_name_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = Net(out_net("rel.h5", (1, 2), (1,)), TEST)
    feed(net, np.random.default_rng(4))
    assert (tmp_path / "rel.h5").is_file()
