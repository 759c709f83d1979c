"""Data layers: Input and DummyData shapes and fillers, and the shapes of the source-reading
types (Data, ImageData, HDF5Data, WindowData, MemoryData) from their parameters or from
--input-shape (``layer.input_shapes``)."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError
from netdef.testing import make_layer


def setup_tops(layer, n, names=None):
    tops = [Blob((), dtype=layer.dtype, name=(names[j] if names else f"t{j}")) for j in range(n)]
    layer.setup([], tops)
    return tops


def tops_decl(*names):
    return " ".join(f"top: '{n}'" for n in names)


# -- Input ---------------------------------------------------------------------------------
def test_input_shapes():
    layer = make_layer("Input", tops_decl("a", "b") + " input_param { shape { dim: 2 dim: 3 } }")
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(2, 3), (2, 3)]
    assert layer.is_data and layer.flops([], tops) == 0
    layer = make_layer("Input", tops_decl("a", "b") + " input_param { shape { dim: 4 } "
                       "shape { dim: 1 dim: 2 dim: 5 dim: 5 } }")
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(4,), (1, 2, 5, 5)]
    # forward leaves the user's data alone
    tops[0].data = np.arange(4.0)
    layer.forward([], tops)
    np.testing.assert_array_equal(tops[0].data, np.arange(4.0))


def test_input_shapes_from_input_shape_flag():
    layer = make_layer("Input", tops_decl("a", "b") + " input_param { shape { dim: 2 dim: 3 } }")
    layer.input_shapes = {"b": (7, 1)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(2, 3), (7, 1)]
    layer = make_layer("Input", tops_decl("data"))
    layer.input_shapes = {"data": (1, 3, 8, 8)}
    assert setup_tops(layer, 1)[0].shape == (1, 3, 8, 8)


def test_input_errors():
    with pytest.raises(ConfigError, match="--input-shape data=") as ei:
        setup_tops(make_layer("Input", tops_decl("data")), 1)
    assert ei.value.field == "input_param.shape"
    with pytest.raises(ConfigError, match="2 shapes for 3 tops") as ei:
        setup_tops(make_layer("Input", tops_decl("a", "b", "c") + " input_param { shape "
                              "{ dim: 1 } shape { dim: 2 } }"), 3)
    assert ei.value.field == "input_param.shape"
    with pytest.raises(ConfigError, match="bottom"):
        make_layer("Input", "input_param { shape { dim: 1 } }").setup([Blob((1,))], [Blob(())])


# -- DummyData -----------------------------------------------------------------------------
@pytest.mark.parametrize("params,expect", [
    ("shape { dim: 2 dim: 3 }", [(2, 3), (2, 3)]),
    ("shape { dim: 2 dim: 3 } shape { dim: 5 }", [(2, 3), (5,)]),
    ("num: 2 channels: 3 height: 4 width: 5", [(2, 3, 4, 5), (2, 3, 4, 5)]),
    ("num: 2 num: 6 channels: 3 height: 1 width: 1", [(2, 3, 1, 1), (6, 3, 1, 1)]),
])
def test_dummy_data_shapes(params, expect):
    layer = make_layer("DummyData", tops_decl("a", "b") + f" dummy_data_param {{ {params} }}")
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == expect
    layer.forward([], tops)
    assert not tops[0].data.any() and not tops[1].data.any()      # default: constant 0


def test_dummy_data_fillers_refill_and_constant():
    layer = make_layer("DummyData", tops_decl("c", "u") + " dummy_data_param { "
                       "shape { dim: 3 dim: 2 } data_filler { type: 'constant' value: 7 } "
                       "data_filler { type: 'uniform' min: 1 max: 2 } }")
    tops = setup_tops(layer, 2)
    layer.forward([], tops)
    np.testing.assert_array_equal(tops[0].data, np.full((3, 2), 7.0))
    first = tops[1].data.copy()
    assert np.all((first >= 1) & (first <= 2))
    # constant tops are filled once: a program may overwrite them; random ones are refilled
    tops[0].data[0, 0] = -5
    layer.forward([], tops)
    assert tops[0].data[0, 0] == -5
    assert np.all((tops[1].data >= 1) & (tops[1].data <= 2))
    assert not np.array_equal(tops[1].data, first)


def test_dummy_data_one_filler_for_all_tops_float32_and_overrides():
    layer = make_layer("DummyData", tops_decl("a", "b") + " dummy_data_param { shape { dim: 4 } "
                       "data_filler { type: 'gaussian' std: 2 } }", dtype=np.float32)
    layer.input_shapes = {"b": (2, 2)}
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(4,), (2, 2)]
    layer.forward([], tops)
    assert tops[0].data.dtype == np.float32 and tops[0].data.std() > 0
    assert tops[1].data.std() > 0
    # shape-only nets: no storage
    layer = make_layer("DummyData", "top: 'a' dummy_data_param { shape { dim: 100000 } }",
                       init_params=False)
    tops = setup_tops(layer, 1)
    assert tops[0].shape == (100000,) and not tops[0].allocated


@pytest.mark.parametrize("params,field", [
    ("shape { dim: 1 } shape { dim: 2 } shape { dim: 3 }", "dummy_data_param.shape"),
    ("", "dummy_data_param.shape"),
    ("shape { dim: 1 } num: 1 channels: 1 height: 1 width: 1", "dummy_data_param.shape"),
    ("num: 1 channels: 1 height: 1", "dummy_data_param.width"),
    ("num: 1 num: 2 num: 3 channels: 1 height: 1 width: 1", "dummy_data_param.num"),
    ("shape { dim: 1 } data_filler { } data_filler { } data_filler { }",
     "dummy_data_param.data_filler"),
    ("shape { dim: 1 } data_filler { type: 'gausian' }", "dummy_data_param.data_filler"),
])
def test_dummy_data_errors(params, field):
    with pytest.raises(ConfigError) as ei:
        setup_tops(make_layer("DummyData", tops_decl("a", "b") +
                              f" dummy_data_param {{ {params} }}"), 2)
    assert ei.value.field == field


# -- source-reading layers -----------------------------------------------------------------
def test_data_layer_needs_input_shape():
    layer = make_layer("Data", tops_decl("data", "label") +
                       " data_param { source: 'no_such_lmdb' batch_size: 8 }")
    with pytest.raises(ConfigError) as ei:
        setup_tops(layer, 2)
    msg = str(ei.value)
    assert "cannot infer the shape of top 'data'" in msg and "'no_such_lmdb'" in msg
    assert "--input-shape data=N,C,H,W" in msg
    assert ei.value.field == "data_param.source"


def test_data_layer_input_shapes():
    layer = make_layer("Data", tops_decl("data", "label") +
                       " data_param { source: 'x' batch_size: 8 }")
    layer.input_shapes = {"data": (8, 1, 28, 28)}
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(8, 1, 28, 28), (8,)]     # label: one per item
    assert not any(t.allocated for t in tops)
    layer = make_layer("Data", tops_decl("data", "label") + " data_param { source: 'x' }")
    layer.input_shapes = {"data": (4, 3), "label": (4, 2)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(4, 3), (4, 2)]
    layer = make_layer("Data", tops_decl("data") + " data_param { source: 'x' }")
    layer.input_shapes = {"data": (2, 5)}
    assert setup_tops(layer, 1)[0].shape == (2, 5)
    assert not layer.allow_force_backward(0)


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
    ("image_data_param { source: 'l.txt' batch_size: 2 is_color: false } "
     "transform_param { crop_size: 6 }", (2, 1, 6, 6)),
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
    layer = make_layer("ImageData", tops_decl("d", "l") +
                       " image_data_param { source: 'list.txt' batch_size: 4 }")
    with pytest.raises(ConfigError, match="--input-shape d=") as ei:
        setup_tops(layer, 2)
    assert ei.value.field == "image_data_param.source"
    layer.input_shapes = {"d": (4, 3, 10, 10)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(4, 3, 10, 10), (4,)]
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
    layer.input_shapes = {"data": (10, 4)}
    with pytest.raises(ConfigError, match="top 'w'"):
        setup_tops(layer, 3)
    layer.input_shapes = {"data": (10, 4), "w": (10, 2)}
    assert [t.shape for t in setup_tops(layer, 3)] == [(10, 4), (10,), (10, 2)]
    with pytest.raises(ConfigError, match="train.txt"):      # reading needs the list file
        layer.forward([], [Blob(())] * 3)


def test_window_data_shapes():
    layer = make_layer("WindowData", tops_decl("d", "l") +
                       " window_data_param { source: 'w.txt' batch_size: 6 } "
                       "transform_param { crop_size: 11 }")
    assert [t.shape for t in setup_tops(layer, 2)] == [(6, 3, 11, 11), (6,)]
    layer = make_layer("WindowData", tops_decl("d", "l") +
                       " window_data_param { source: 'w.txt' batch_size: 6 }")
    with pytest.raises(ConfigError) as ei:
        setup_tops(layer, 2)
    assert ei.value.field == "transform_param.crop_size"
    layer.input_shapes = {"d": (6, 3, 5, 5)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(6, 3, 5, 5), (6,)]


def test_memory_data_shapes():
    layer = make_layer("MemoryData", tops_decl("d", "l") +
                       " memory_data_param { batch_size: 4 channels: 3 height: 2 width: 5 }")
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(4, 3, 2, 5), (4,)]
    with pytest.raises(ConfigError, match="set_input_arrays"):
        layer.forward([], tops)
    layer = make_layer("MemoryData", tops_decl("d", "l") +
                       " memory_data_param { batch_size: 4 channels: 3 }")
    with pytest.raises(ConfigError, match="positive") as ei:
        setup_tops(layer, 2)
    assert ei.value.field == "memory_data_param.batch_size"
    layer.input_shapes = {"d": (1, 3, 8, 8), "l": (1,)}
    assert [t.shape for t in setup_tops(layer, 2)] == [(1, 3, 8, 8), (1,)]


@pytest.mark.parametrize("type_", ["Data", "ImageData", "HDF5Data", "WindowData", "MemoryData"])
def test_source_layers_contract(type_):
    layer = make_layer(type_, tops_decl("d", "l"))
    assert layer.is_data and not layer.is_loss
    layer.input_shapes = {"d": (2, 3)}
    with pytest.raises(ConfigError, match="bottom"):
        layer.setup([Blob((2, 3))], [Blob(()), Blob(())])
    tops = setup_tops(layer, 2)
    assert [t.shape for t in tops] == [(2, 3), (2,)]
    assert layer.flops([], tops) == 0
