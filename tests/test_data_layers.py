"""Data layers: Input and DummyData shapes and fillers, and top-shape inference for the
source-reading types (Data, ImageData, HDF5Data, WindowData, MemoryData), including the error
that asks for --input-shape when nothing determines a shape."""
import numpy as np
import pytest

from netdef.blob import Blob
from netdef.errors import ConfigError, NetdefError
from netdef.testing import make_layer


def tops(n, dtype=np.float64):
    return [Blob((), dtype=dtype, name=f"t{i}") for i in range(n)]


def setup(type_name, params, ntop, input_shapes=None, dtype=np.float64):
    layer = make_layer(type_name, params, dtype=dtype)
    if input_shapes:
        layer.input_shapes = dict(input_shapes)
    t = tops(ntop, dtype)
    layer.setup([], t)
    return layer, t


# ---------------------------------------------------------------------------------------------
# Input
def test_input_one_shape_for_all_tops():
    layer, t = setup("Input", "top: 'a' top: 'b' top: 'c' input_param { shape { dim: 2 dim: 3 "
                              "dim: 4 } }", 3)
    assert [x.shape for x in t] == [(2, 3, 4)] * 3
    assert layer.is_data and layer.blobs == []
    # forward leaves whatever the program put in the tops alone
    t[0].data[...] = 1.5
    layer.forward([], t)
    np.testing.assert_array_equal(t[0].data, 1.5)


def test_input_one_shape_per_top():
    _, t = setup("Input", "top: 'data' top: 'label' input_param { shape { dim: 5 dim: 1 dim: 28 "
                          "dim: 28 } shape { dim: 5 } }", 2)
    assert [x.shape for x in t] == [(5, 1, 28, 28), (5,)]


def test_input_shapes_override():
    # --input-shape wins over the definition, per top name
    _, t = setup("Input", "top: 'data' top: 'label' input_param { shape { dim: 5 dim: 3 } "
                          "shape { dim: 5 } }", 2, input_shapes={"data": (7, 3, 2)})
    assert [x.shape for x in t] == [(7, 3, 2), (5,)]
    # and supplies shapes the definition does not give
    _, t = setup("Input", "top: 'data'", 1, input_shapes={"data": (1, 2)})
    assert t[0].shape == (1, 2)


def test_input_errors():
    with pytest.raises(ConfigError, match="2 shapes for 3 tops"):
        setup("Input", "top: 'a' top: 'b' top: 'c' input_param { shape { dim: 1 } "
                       "shape { dim: 2 } }", 3)
    with pytest.raises(ConfigError, match="--input-shape data=") as e:
        setup("Input", "top: 'data'", 1)
    assert e.value.field is not None and e.value.field.startswith("input_param")
    with pytest.raises(ConfigError, match="0 bottoms"):
        make_layer("Input", "top: 'a' input_param { shape { dim: 1 } }").setup(
            [Blob((1,))], tops(1))


# ---------------------------------------------------------------------------------------------
# DummyData
def test_dummy_data_shapes():
    _, t = setup("DummyData", "top: 'a' top: 'b' dummy_data_param { shape { dim: 2 dim: 3 } }", 2)
    assert [x.shape for x in t] == [(2, 3), (2, 3)]
    _, t = setup("DummyData", "top: 'a' top: 'b' dummy_data_param { shape { dim: 4 dim: 2 } "
                              "shape { dim: 3 } }", 2)
    assert [x.shape for x in t] == [(4, 2), (3,)]
    # legacy 4-D fields: each given once, or once per top
    _, t = setup("DummyData", "top: 'a' dummy_data_param { num: 2 channels: 3 height: 4 "
                              "width: 5 }", 1)
    assert t[0].shape == (2, 3, 4, 5)
    _, t = setup("DummyData", "top: 'a' top: 'b' dummy_data_param { num: 2 num: 6 channels: 3 "
                              "height: 1 height: 2 width: 5 }", 2)
    assert [x.shape for x in t] == [(2, 3, 1, 5), (6, 3, 2, 5)]
    # --input-shape overrides
    _, t = setup("DummyData", "top: 'a' dummy_data_param { shape { dim: 2 } }", 1,
                 input_shapes={"a": (3, 3)})
    assert t[0].shape == (3, 3)


def test_dummy_data_default_filler_is_zero():
    layer, t = setup("DummyData", "top: 'a' dummy_data_param { shape { dim: 2 dim: 2 } }", 1)
    t[0].data[...] = 9.0
    layer.forward([], t)
    np.testing.assert_array_equal(t[0].data, 0.0)


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


def test_dummy_data_one_filler_for_all_tops_and_float32():
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


def test_dummy_data_errors():
    with pytest.raises(ConfigError, match="not both"):
        setup("DummyData", "top: 'a' dummy_data_param { shape { dim: 1 } num: 1 channels: 1 "
                           "height: 1 width: 1 }", 1)
    with pytest.raises(ConfigError, match="2 shapes for 3 tops"):
        setup("DummyData", "top: 'a' top: 'b' top: 'c' dummy_data_param { shape { dim: 1 } "
                           "shape { dim: 2 } }", 3)
    with pytest.raises(ConfigError, match="data_filler"):
        setup("DummyData", "top: 'a' top: 'b' top: 'c' dummy_data_param { shape { dim: 1 } "
                           "data_filler { value: 1 } data_filler { value: 2 } }", 3)
    with pytest.raises(ConfigError, match="num"):
        setup("DummyData", "top: 'a' top: 'b' top: 'c' dummy_data_param { num: 1 num: 2 "
                           "channels: 1 height: 1 width: 1 }", 3)
    with pytest.raises(ConfigError, match="channels"):
        setup("DummyData", "top: 'a' dummy_data_param { num: 1 height: 1 width: 1 }", 1)
    with pytest.raises(NetdefError, match="filler"):
        layer, t = setup("DummyData", "top: 'a' dummy_data_param { shape { dim: 1 } "
                                      "data_filler { type: 'nonsense' } }", 1)
        layer.forward([], t)


# ---------------------------------------------------------------------------------------------
# Source-reading types: shapes from parameters or --input-shape
def test_data_layer_needs_input_shape():
    layer = make_layer("Data", "top: 'data' top: 'label' data_param { source: 'no/such/lmdb' "
                               "batch_size: 8 backend: LMDB }")
    with pytest.raises(ConfigError, match="--input-shape data=N,C,H,W") as e:
        layer.setup([], tops(2))
    assert "no/such/lmdb" in str(e.value)


def test_data_layer_shapes_from_input_shape():
    _, t = setup("Data", "top: 'data' top: 'label' data_param { source: 'x' batch_size: 8 }", 2,
                 input_shapes={"data": (8, 1, 28, 28)})
    assert [x.shape for x in t] == [(8, 1, 28, 28), (8,)]     # label: one per item
    _, t = setup("Data", "top: 'data' data_param { source: 'x' batch_size: 4 }", 1,
                 input_shapes={"data": (4, 3, 5, 5)})
    assert t[0].shape == (4, 3, 5, 5)
    _, t = setup("Data", "top: 'data' top: 'label' data_param { source: 'x' batch_size: 2 }", 2,
                 input_shapes={"data": (2, 3), "label": (2, 4)})
    assert [x.shape for x in t] == [(2, 3), (2, 4)]
    layer = make_layer("Data", "top: 'data' data_param { source: 'x' }")
    assert layer.is_data and not layer.allow_force_backward(0)


@pytest.mark.parametrize("params,expect", [
    ("image_data_param { source: 'l.txt' batch_size: 5 new_height: 9 new_width: 7 }",
     (5, 3, 9, 7)),
    ("image_data_param { source: 'l.txt' batch_size: 2 new_height: 9 new_width: 7 "
     "is_color: false }", (2, 1, 9, 7)),
    ("transform_param { crop_size: 4 } image_data_param { source: 'l.txt' batch_size: 3 }",
     (3, 3, 4, 4)),
    ("transform_param { crop_size: 4 } image_data_param { source: 'l.txt' batch_size: 3 "
     "new_height: 8 new_width: 6 }", (3, 3, 4, 4)),            # the crop comes last
])
def test_image_data_shapes(params, expect):
    _, t = setup("ImageData", "top: 'd' top: 'l' " + params, 2)
    assert [x.shape for x in t] == [expect, (expect[0],)]


def test_image_data_needs_input_shape_without_resize_or_crop():
    with pytest.raises(ConfigError, match="--input-shape d=") as e:
        setup("ImageData", "top: 'd' top: 'l' image_data_param { source: 'list.txt' "
                           "batch_size: 5 }", 2)
    assert "list.txt" in str(e.value)
    _, t = setup("ImageData", "top: 'd' top: 'l' image_data_param { source: 'list.txt' "
                              "batch_size: 5 }", 2, input_shapes={"d": (5, 3, 10, 12)})
    assert [x.shape for x in t] == [(5, 3, 10, 12), (5,)]


def test_hdf5_data_shapes():
    with pytest.raises(ConfigError, match="--input-shape data="):
        setup("HDF5Data", "top: 'data' top: 'label' hdf5_data_param { source: 'files.txt' "
                          "batch_size: 4 }", 2)
    _, t = setup("HDF5Data", "top: 'data' top: 'label' top: 'w' hdf5_data_param { "
                             "source: 'files.txt' batch_size: 4 }", 3,
                 input_shapes={"data": (4, 10), "label": (4, 2), "w": (4,)})
    assert [x.shape for x in t] == [(4, 10), (4, 2), (4,)]


def test_window_data_shapes():
    _, t = setup("WindowData", "top: 'd' top: 'l' transform_param { crop_size: 6 } "
                               "window_data_param { source: 'w.txt' batch_size: 4 }", 2)
    assert [x.shape for x in t] == [(4, 3, 6, 6), (4,)]
    with pytest.raises(NetdefError, match="--input-shape|crop_size"):
        setup("WindowData", "top: 'd' top: 'l' window_data_param { source: 'w.txt' "
                            "batch_size: 4 }", 2)
    _, t = setup("WindowData", "top: 'd' top: 'l' window_data_param { source: 'w.txt' "
                               "batch_size: 4 }", 2, input_shapes={"d": (4, 3, 5, 5),
                                                                   "l": (4,)})
    assert t[0].shape == (4, 3, 5, 5)


def test_memory_data_shapes():
    _, t = setup("MemoryData", "top: 'd' top: 'l' memory_data_param { batch_size: 4 channels: 3 "
                               "height: 2 width: 5 }", 2)
    assert [x.shape for x in t] == [(4, 3, 2, 5), (4,)]
    _, t = setup("MemoryData", "top: 'd' top: 'l' memory_data_param { batch_size: 4 channels: 3 "
                               "height: 2 width: 5 }", 2, input_shapes={"d": (1, 3, 2, 5),
                                                                        "l": (1,)})
    assert [x.shape for x in t] == [(1, 3, 2, 5), (1,)]


def test_source_layers_take_no_bottoms():
    for type_name, params in (("Data", "data_param { source: 'x' batch_size: 1 }"),
                              ("MemoryData", "memory_data_param { batch_size: 1 channels: 1 "
                                             "height: 1 width: 1 }")):
        layer = make_layer(type_name, "top: 'd' top: 'l' " + params)
        layer.input_shapes = {"d": (1, 1, 1, 1)}
        with pytest.raises(ConfigError, match="0 bottoms"):
            layer.setup([Blob((1,))], tops(2))
