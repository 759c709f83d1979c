"""Data layers: Input and DummyData shapes and fillers, top-shape inference for the
source-reading types (Data, ImageData, HDF5Data, WindowData, MemoryData) from their
parameters or from --input-shape (``layer.input_shapes``), including the error that asks for
--input-shape when nothing determines a shape; and HDF5Output, whose two bottoms are appended
per forward to the datasets "data" and "label" of an HDF5 file (read back exactly with h5py
and by HDF5Data), with no tops, no gradient and clear errors. Reading real sources is tested
in test_data_sources.py."""
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

try:
    import h5py
except ImportError:
    h5py = None
needs_h5py = pytest.mark.skipif(h5py is None, reason="needs h5py")


def setup_tops(layer, n, names=None):
    tops = [Blob((), dtype=layer.dtype, name=(names[j] if names else f"t{j}")) for j in range(n)]
    layer.setup([], tops)
    return tops


def setup(type_name, params, ntop, input_shapes=None, dtype=np.float64):
    layer = make_layer(type_name, params, dtype=dtype)
    if input_shapes:
        layer.input_shapes = dict(input_shapes)
    return layer, setup_tops(layer, ntop)


def tops_decl(*names):
    return " ".join(f"top: '{n}'" for n in names)


# -- Input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("params,input_shapes,expect", [
    ("top: 'a' top: 'b' input_param { shape { dim: 2 dim: 3 } }", None, [(2, 3), (2, 3)]),
    ("top: 'a' top: 'b' top: 'c' input_param { shape { dim: 2 dim: 3 dim: 4 } }", None,
     [(2, 3, 4)] * 3),
    ("top: 'a' top: 'b' input_param { shape { dim: 4 } shape { dim: 1 dim: 2 dim: 5 dim: 5 } }",
     None, [(4,), (1, 2, 5, 5)]),
    ("top: 'data' top: 'label' input_param { shape { dim: 5 dim: 1 dim: 28 dim: 28 } "
     "shape { dim: 5 } }", None, [(5, 1, 28, 28), (5,)]),
    # --input-shape wins over the definition, per top name
    ("top: 'a' top: 'b' input_param { shape { dim: 2 dim: 3 } }", {"b": (7, 1)},
     [(2, 3), (7, 1)]),
    ("top: 'data' top: 'label' input_param { shape { dim: 5 dim: 3 } shape { dim: 5 } }",
     {"data": (7, 3, 2)}, [(7, 3, 2), (5,)]),
    # and supplies shapes the definition does not give
    ("top: 'data'", {"data": (1, 3, 8, 8)}, [(1, 3, 8, 8)]),
    ("top: 'data'", {"data": (1, 2)}, [(1, 2)]),
])
def test_input_shapes(params, input_shapes, expect):
    layer, tops = setup("Input", params, len(expect), input_shapes)
    assert [t.shape for t in tops] == expect
    assert layer.is_data and layer.blobs == [] and layer.flops([], tops) == 0
    # forward leaves whatever the program put in the tops alone
    tops[0].data = np.arange(tops[0].count, dtype=np.float64).reshape(expect[0])
    tops[-1].data[...] = 1.5
    layer.forward([], tops)
    if len(tops) > 1:
        np.testing.assert_array_equal(tops[0].data.ravel(), np.arange(tops[0].count))
    np.testing.assert_array_equal(tops[-1].data, 1.5)


def test_input_errors():
    with pytest.raises(ConfigError, match="--input-shape data=") as ei:
        setup_tops(make_layer("Input", tops_decl("data")), 1)
    assert ei.value.field == "input_param.shape"
    with pytest.raises(ConfigError, match="2 shapes for 3 tops") as ei:
        setup_tops(make_layer("Input", tops_decl("a", "b", "c") + " input_param { shape "
                              "{ dim: 1 } shape { dim: 2 } }"), 3)
    assert ei.value.field == "input_param.shape"
    with pytest.raises(ConfigError, match="0 bottoms"):
        make_layer("Input", "top: 'a' input_param { shape { dim: 1 } }").setup([Blob((1,))],
                                                                              [Blob(())])


# -- DummyData -----------------------------------------------------------------------------
@pytest.mark.parametrize("params,input_shapes,expect", [
    ("shape { dim: 2 dim: 3 }", None, [(2, 3), (2, 3)]),
    ("shape { dim: 2 dim: 3 } shape { dim: 5 }", None, [(2, 3), (5,)]),
    ("shape { dim: 4 dim: 2 } shape { dim: 3 }", None, [(4, 2), (3,)]),
    ("shape { dim: 2 dim: 2 }", None, [(2, 2)]),
    # legacy 4-D fields: each given once, or once per top
    ("num: 2 channels: 3 height: 4 width: 5", None, [(2, 3, 4, 5), (2, 3, 4, 5)]),
    ("num: 2 channels: 3 height: 4 width: 5", None, [(2, 3, 4, 5)]),
    ("num: 2 num: 6 channels: 3 height: 1 width: 1", None, [(2, 3, 1, 1), (6, 3, 1, 1)]),
    ("num: 2 num: 6 channels: 3 height: 1 height: 2 width: 5", None,
     [(2, 3, 1, 5), (6, 3, 2, 5)]),
    # --input-shape overrides
    ("shape { dim: 2 }", {"a": (3, 3)}, [(3, 3)]),
])
def test_dummy_data_shapes_and_default_zero_filler(params, input_shapes, expect):
    layer, tops = setup("DummyData", tops_decl(*"ab"[:len(expect)]) +
                        f" dummy_data_param {{ {params} }}", len(expect), input_shapes)
    assert [t.shape for t in tops] == expect
    for t in tops:
        t.data[...] = 9.0
    layer.forward([], tops)
    for t in tops:                       # default filler: constant 0
        np.testing.assert_array_equal(t.data, 0.0)


def test_dummy_data_constant_and_uniform_fillers():
    layer, t = setup("DummyData", "top: 'a' top: 'b' dummy_data_param { shape { dim: 40 } "
                                  "shape { dim: 3 dim: 50 } "
                                  "data_filler { type: 'constant' value: 7 } "
                                  "data_filler { type: 'uniform' min: 1 max: 2 } }", 2)
    layer.forward([], t)
    np.testing.assert_array_equal(t[0].data, 7.0)
    first = t[1].data.copy()
    assert first.shape == (3, 50)
    assert np.all((first >= 1) & (first <= 2)) and first.std() > 0.1
    # Caffe: a constant top is filled once (the program may overwrite it); a random top is
    # refilled on every forward
    t[0].data[...] = -3.0
    layer.forward([], t)
    np.testing.assert_array_equal(t[0].data, -3.0)
    assert np.all((t[1].data >= 1) & (t[1].data <= 2))
    assert not np.array_equal(t[1].data, first)
    with pytest.raises(NetdefError, match="filler"):
        layer, t = setup("DummyData", "top: 'a' dummy_data_param { shape { dim: 1 } "
                                      "data_filler { type: 'nonsense' } }", 1)
        layer.forward([], t)


def test_dummy_data_one_filler_for_all_tops_float32_and_shape_only():
    layer, t = setup("DummyData", "top: 'a' top: 'b' dummy_data_param { shape { dim: 2 dim: 3 } "
                                  "shape { dim: 4 } data_filler { type: 'constant' value: -1.5 } }",
                     2, dtype=np.float32)
    layer.forward([], t)
    for x in t:
        assert x.data.dtype == np.float32
        np.testing.assert_array_equal(x.data, -1.5)
    layer, t = setup("DummyData", "top: 'a' top: 'b' dummy_data_param { shape { dim: 500 } "
                                  "data_filler { type: 'gaussian' mean: 3 std: 0.5 } }", 2)
    layer.forward([], t)
    for x in t:
        assert abs(x.data.mean() - 3) < 0.15 and abs(x.data.std() - 0.5) < 0.1
    assert not np.array_equal(t[0].data, t[1].data)
    layer, t = setup("DummyData", tops_decl("a", "b") + " dummy_data_param { shape { dim: 4 } "
                     "data_filler { type: 'gaussian' std: 2 } }", 2, {"b": (2, 2)}, np.float32)
    assert [x.shape for x in t] == [(4,), (2, 2)]
    layer.forward([], t)
    assert t[0].data.dtype == np.float32 and t[0].data.std() > 0 and t[1].data.std() > 0
    # shape-only nets: no storage
    layer = make_layer("DummyData", "top: 'a' dummy_data_param { shape { dim: 100000 } }",
                       init_params=False)
    tops = setup_tops(layer, 1)
    assert tops[0].shape == (100000,) and not tops[0].allocated


@pytest.mark.parametrize("params,ntop,field,match", [
    ("shape { dim: 1 } shape { dim: 2 } shape { dim: 3 }", 2, "dummy_data_param.shape", None),
    ("shape { dim: 1 } shape { dim: 2 }", 3, None, "2 shapes for 3 tops"),
    ("", 2, "dummy_data_param.shape", None),
    ("shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1", 2, "dummy_data_param.shape",
     "not both"),
    ("num: 1 channels: 1 height: 1", 2, "dummy_data_param.width", None),
    ("num: 1 height: 1 width: 1", 1, None, "channels"),
    ("num: 1 num: 2 num: 3 channels: 1 height: 1 width: 1", 2, "dummy_data_param.num", None),
    ("num: 1 num: 2 channels: 1 height: 1 width: 1", 3, None, "num"),
    ("shape { dim: 1 } data_filler { } data_filler { } data_filler { }", 2,
     "dummy_data_param.data_filler", None),
    ("shape { dim: 1 } data_filler { value: 1 } data_filler { value: 2 }", 3, None,
     "data_filler"),
    ("shape { dim: 1 } data_filler { type: 'gausian' }", 2, "dummy_data_param.data_filler",
     None),
])
def test_dummy_data_errors(params, ntop, field, match):
    with pytest.raises(ConfigError, match=match) as ei:
        setup_tops(make_layer("DummyData", tops_decl(*"abc"[:ntop]) +
                              f" dummy_data_param {{ {params} }}"), ntop)
    if field is not None:
        assert ei.value.field == field


# -- source-reading layers -----------------------------------------------------------------
@pytest.mark.parametrize("params", ["data_param { source: 'no_such_lmdb' batch_size: 8 }",
                                    "data_param { source: 'no_such_lmdb' batch_size: 8 "
                                    "backend: LMDB }"])
def test_data_layer_needs_input_shape(params):
    layer = make_layer("Data", tops_decl("data", "label") + " " + params)
    with pytest.raises(ConfigError) as ei:
        setup_tops(layer, 2)
    msg = str(ei.value)
    assert "cannot infer the shape of top 'data'" in msg and "'no_such_lmdb'" in msg
    assert "--input-shape data=N,C,H,W" in msg
    assert ei.value.field == "data_param.source"


@pytest.mark.parametrize("params,input_shapes,expect", [
    ("top: 'data' top: 'label' data_param { source: 'x' batch_size: 8 }",
     {"data": (8, 1, 28, 28)}, [(8, 1, 28, 28), (8,)]),            # label: one per item
    ("top: 'data' top: 'label' data_param { source: 'x' }", {"data": (4, 3), "label": (4, 2)},
     [(4, 3), (4, 2)]),
    ("top: 'data' top: 'label' data_param { source: 'x' batch_size: 2 }",
     {"data": (2, 3), "label": (2, 4)}, [(2, 3), (2, 4)]),
    ("top: 'data' data_param { source: 'x' }", {"data": (2, 5)}, [(2, 5)]),
    ("top: 'data' data_param { source: 'x' batch_size: 4 }", {"data": (4, 3, 5, 5)},
     [(4, 3, 5, 5)]),
])
def test_data_layer_input_shapes(params, input_shapes, expect):
    layer, tops = setup("Data", params, len(expect), input_shapes)
    assert [t.shape for t in tops] == expect
    assert not any(t.allocated for t in tops)
    assert layer.is_data and not layer.allow_force_backward(0)


def test_data_layer_reads_lmdb(tmp_path):
    pytest.importorskip("lmdb")
    from netdef.data.lmdb_source import write_lmdb
    rng = np.random.default_rng(3)
    recs = [(rng.integers(0, 255, (1, 6, 5)).astype(np.uint8), i % 3) for i in range(5)]
    write_lmdb(str(tmp_path / "db"), recs)
    layer = make_layer("Data", tops_decl("data", "label") +
                       f" data_param {{ source: '{tmp_path / 'db'}' batch_size: 3 }} "
                       "transform_param { crop_size: 4 scale: 0.5 }")
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(3, 1, 4, 4), (3,)]
    layer.forward([], tops)
    np.testing.assert_array_equal(tops[1].data, [0, 1, 2])
    # TEST phase: centre crop
    np.testing.assert_allclose(tops[0].data[1, 0], recs[1][0][0, 1:5, 0:4] * 0.5)
    # a forced shape that does not match the records is reported
    layer = make_layer("Data", tops_decl("data", "label") +
                       f" data_param {{ source: '{tmp_path / 'db'}' batch_size: 2 }}")
    layer.input_shapes = {"data": (2, 1, 5, 5)}
    tops = setup_tops(layer, 2)
    with pytest.raises(NetdefError, match="--input-shape"):
        layer.forward([], tops)


@pytest.mark.parametrize("params,expect", [
    ("image_data_param { source: 'l.txt' batch_size: 5 new_height: 9 new_width: 7 }",
     (5, 3, 9, 7)),
    ("image_data_param { source: 'l.txt' batch_size: 2 new_height: 9 new_width: 7 "
     "is_color: false }", (2, 1, 9, 7)),
    ("image_data_param { source: 'l.txt' batch_size: 2 is_color: false } "
     "transform_param { crop_size: 6 }", (2, 1, 6, 6)),
    ("transform_param { crop_size: 4 } image_data_param { source: 'l.txt' batch_size: 3 }",
     (3, 3, 4, 4)),
    ("transform_param { crop_size: 4 } image_data_param { source: 'l.txt' batch_size: 3 "
     "new_height: 8 new_width: 6 }", (3, 3, 4, 4)),            # the crop comes last
    ("image_data_param { source: 'l.txt' new_height: 9 new_width: 8 } "
     "transform_param { crop_size: 8 }", (1, 3, 8, 8)),                 # batch_size default 1
])
def test_image_data_shapes(params, expect):
    layer = make_layer("ImageData", tops_decl("d", "l") + " " + params)
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [expect, (expect[0],)]
    with pytest.raises(ConfigError, match="image list 'l.txt' does not exist"):
        layer.forward([], tops)          # the source is read at the first forward


def test_image_data_errors():
    # without resize or crop the shape needs --input-shape
    layer = make_layer("ImageData", tops_decl("d", "l") +
                       " image_data_param { source: 'list.txt' batch_size: 4 }")
    with pytest.raises(ConfigError, match="--input-shape d=") as ei:
        setup_tops(layer, 2)
    assert ei.value.field == "image_data_param.source" and "list.txt" in str(ei.value)
    for shape in ((4, 3, 10, 10), (4, 3, 10, 12)):
        layer.input_shapes = {"d": shape}
        assert [t.shape for t in setup_tops(layer, 2)] == [shape, (4,)]
    with pytest.raises(ConfigError) as ei:
        setup_tops(make_layer("ImageData", tops_decl("d", "l") +
                              " image_data_param { source: 'l' new_height: 5 }"), 2)
    assert ei.value.field == "image_data_param.new_height"
    with pytest.raises(ConfigError) as ei:
        setup_tops(make_layer("ImageData", tops_decl("d", "l") +
                              " image_data_param { source: 'l' batch_size: 0 new_height: 5 "
                              "new_width: 5 }"), 2)
    assert ei.value.field == "image_data_param.batch_size"
    with pytest.raises(ConfigError, match="2 tops"):
        setup_tops(make_layer("ImageData", "top: 'd' image_data_param { new_height: 5 "
                              "new_width: 5 }"), 1)


def test_hdf5_data_shapes():
    layer = make_layer("HDF5Data", tops_decl("data", "label", "w") +
                       " hdf5_data_param { source: 'train.txt' batch_size: 10 }")
    with pytest.raises(ConfigError, match="--input-shape data=") as ei:
        setup_tops(layer, 3)
    assert ei.value.field == "hdf5_data_param.source"
    with pytest.raises(ConfigError, match="--input-shape data="):
        setup("HDF5Data", "top: 'data' top: 'label' hdf5_data_param { source: 'files.txt' "
                          "batch_size: 4 }", 2)
    layer.input_shapes = {"data": (10, 4)}
    with pytest.raises(ConfigError, match="top 'w'"):
        setup_tops(layer, 3)
    layer.input_shapes = {"data": (10, 4), "w": (10, 2)}
    assert [t.shape for t in setup_tops(layer, 3)] == [(10, 4), (10,), (10, 2)]
    with pytest.raises(ConfigError, match="train.txt"):      # reading needs the list file
        layer.forward([], [Blob(())] * 3)
    _, t = setup("HDF5Data", "top: 'data' top: 'label' top: 'w' hdf5_data_param { "
                             "source: 'files.txt' batch_size: 4 }", 3,
                 input_shapes={"data": (4, 10), "label": (4, 2), "w": (4,)})
    assert [x.shape for x in t] == [(4, 10), (4, 2), (4,)]


def test_window_data_shapes():
    for crop, shape in ((11, (6, 3, 11, 11)), (6, (6, 3, 6, 6))):
        layer = make_layer("WindowData", tops_decl("d", "l") +
                           " window_data_param { source: 'w.txt' batch_size: 6 } "
                           f"transform_param {{ crop_size: {crop} }}")
        assert [t.shape for t in setup_tops(layer, 2)] == [shape, (6,)]
    layer = make_layer("WindowData", tops_decl("d", "l") +
                       " window_data_param { source: 'w.txt' batch_size: 6 }")
    with pytest.raises(ConfigError, match="--input-shape|crop_size") as ei:
        setup_tops(layer, 2)
    assert ei.value.field == "transform_param.crop_size"
    layer.input_shapes = {"d": (6, 3, 5, 5)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(6, 3, 5, 5), (6,)]
    layer.input_shapes = {"d": (6, 3, 5, 5), "l": (6,)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(6, 3, 5, 5), (6,)]


def test_memory_data_shapes():
    layer = make_layer("MemoryData", tops_decl("d", "l") +
                       " memory_data_param { batch_size: 4 channels: 3 height: 2 width: 5 }")
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(4, 3, 2, 5), (4,)]
    with pytest.raises(ConfigError, match="set_input_arrays"):
        layer.forward([], tops)
    layer.input_shapes = {"d": (1, 3, 2, 5), "l": (1,)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(1, 3, 2, 5), (1,)]
    layer = make_layer("MemoryData", tops_decl("d", "l") +
                       " memory_data_param { batch_size: 4 channels: 3 }")
    with pytest.raises(ConfigError, match="positive") as ei:
        setup_tops(layer, 2)
    assert ei.value.field == "memory_data_param.batch_size"
    layer.input_shapes = {"d": (1, 3, 8, 8), "l": (1,)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(1, 3, 8, 8), (1,)]


@pytest.mark.parametrize("type_,params", [
    ("Data", ""), ("Data", "data_param { source: 'x' batch_size: 1 }"), ("ImageData", ""),
    ("HDF5Data", ""), ("WindowData", ""), ("MemoryData", ""),
    ("MemoryData", "memory_data_param { batch_size: 1 channels: 1 height: 1 width: 1 }")])
def test_source_layers_contract(type_, params):
    layer = make_layer(type_, tops_decl("d", "l") + " " + params)
    assert layer.is_data and not layer.is_loss
    layer.input_shapes = {"d": (2, 3)}
    with pytest.raises(ConfigError, match="0 bottoms"):
        layer.setup([Blob((2, 3))], [Blob(()), Blob(())])
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(2, 3), (2,)]
    assert layer.flops([], tops) == 0


# -- HDF5Output ----------------------------------------------------------------------------
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


@needs_h5py
def test_hdf5_output_registered_with_its_param():
    cls = get_layer_class("HDF5Output")
    assert cls.type == "HDF5Output" and cls.__doc__
    assert cls.exact_num_bottom == 2 and cls.exact_num_top == 0


@needs_h5py
def test_hdf5_output_writes_and_appends_per_forward_exactly(tmp_path):
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


@needs_h5py
def test_hdf5_output_float64_net_writes_float64_any_rank(tmp_path):
    path = tmp_path / "out.h5"
    net = Net(out_net(path, (2, 7), (2, 1, 3)), TRAIN, dtype=np.float64)
    rng = np.random.default_rng(1)
    x1, y1 = feed(net, rng)
    x2, y2 = feed(net, rng)
    with h5py.File(path, "r") as f:
        assert f["data"].dtype == np.float64 and f["label"].shape == (4, 1, 3)
        np.testing.assert_array_equal(f["data"][...], np.concatenate([x1, x2]))
        np.testing.assert_array_equal(f["label"][...], np.concatenate([y1, y2]))


@needs_h5py
def test_hdf5_output_readable_between_forwards_new_net_truncates(tmp_path):
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


@needs_h5py
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


@needs_h5py
def test_hdf5_output_shape_only_net_does_not_touch_the_file(tmp_path):
    path = tmp_path / "out.h5"
    path.write_bytes(b"keep me")
    net = Net(out_net(path), TEST, init_params=False)
    assert [l.type for l in net.layers] == ["Input", "HDF5Output"]
    assert path.read_bytes() == b"keep me"


@needs_h5py
def test_hdf5_output_backward_does_nothing():
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


@needs_h5py
def test_hdf5_output_force_backward_net_leaves_bottoms_alone(tmp_path):
    text = out_net(tmp_path / "o.h5", (2, 3), (2,))
    text.message.force_backward = True
    net = Net(text, TRAIN)
    assert net.bottom_need_backward[1] == [False, False]
    net.forward()
    net.backward()


@needs_h5py
def test_hdf5_output_errors(tmp_path, monkeypatch):
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


@needs_h5py
def test_hdf5_output_row_shape_change_is_refused_without_a_torn_file(tmp_path):
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


@needs_h5py
def test_hdf5_output_relative_file_name_is_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    net = Net(out_net("rel.h5", (1, 2), (1,)), TEST)
    feed(net, np.random.default_rng(4))
    assert (tmp_path / "rel.h5").is_file()
