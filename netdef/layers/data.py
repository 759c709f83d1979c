"""Data layers: Input and DummyData, and the source-reading types (Data, ImageData, HDF5Data,
WindowData, MemoryData), whose shapes come from their parameters or ``--input-shape``.
Reading their sources belongs to the data pipeline (training)."""
from __future__ import annotations

import numpy as np

from .base import Layer
from .registry import register_layer


def _shape_of(bs) -> tuple[int, ...]:
    return tuple(int(d) for d in bs.dim)


@register_layer("Input", "input_param")
class InputLayer(Layer):
    """Placeholder tops with fixed shapes (one shape per top, or one for all)."""
    exact_num_bottom = 0
    min_top = 1
    is_data = True

    def layer_setup(self, bottom, top):
        shapes = list(self.param.input_param.shape)
        if len(shapes) not in (0, 1, len(top)) and not self.input_shapes:
            raise self.config_error(
                f"input_param gives {len(shapes)} shapes for {len(top)} tops: give one shape "
                f"per top, or one for all", field="input_param.shape")
        self.shapes = []
        for j, name in enumerate(self.param.top):
            if name in self.input_shapes:
                self.shapes.append(tuple(self.input_shapes[name]))
            elif len(shapes) == 1:
                self.shapes.append(_shape_of(shapes[0]))
            elif j < len(shapes):
                self.shapes.append(_shape_of(shapes[j]))
            else:
                raise self.config_error(f"no shape for top '{name}': add input_param "
                                        f"{{ shape {{ dim: ... }} }} or pass --input-shape "
                                        f"{name}=N,C,H,W", field="input_param")

    def reshape(self, bottom, top):
        for t, s in zip(top, self.shapes):
            t.reshape(s)

    def forward(self, bottom, top):
        pass


@register_layer("DummyData", "dummy_data_param")
class DummyDataLayer(Layer):
    """Tops filled by fillers (constant 0 by default); refilled each forward unless constant."""
    exact_num_bottom = 0
    min_top = 1
    is_data = True

    def layer_setup(self, bottom, top):
        p = self.param.dummy_data_param
        n = len(top)
        legacy = len(p.num) or len(p.channels) or len(p.height) or len(p.width)
        if len(p.shape) and legacy:
            raise self.config_error("give either shape or num/channels/height/width, not both",
                                    field="dummy_data_param.shape")
        if legacy:
            dims = [list(p.num), list(p.channels), list(p.height), list(p.width)]
            for name, d in zip(("num", "channels", "height", "width"), dims):
                if len(d) not in (1, n):
                    raise self.config_error(f"{name} must be given once or once per top",
                                            field=f"dummy_data_param.{name}")
            self.shapes = [tuple(int(d[j if len(d) > 1 else 0]) for d in dims)
                           for j in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise self.config_error(f"{len(p.shape)} shapes for {n} tops: give one, or one "
                                        f"per top", field="dummy_data_param.shape")
            self.shapes = [_shape_of(p.shape[j if len(p.shape) > 1 else 0]) for j in range(n)]
        self.shapes = [tuple(self.input_shapes.get(t, s)) for t, s in zip(self.param.top,
                                                                         self.shapes)]
        if len(p.data_filler) not in (0, 1, n):
            raise self.config_error(f"{len(p.data_filler)} data_fillers for {n} tops: give "
                                    f"none, one, or one per top", field="dummy_data_param.data_filler")
        fillers = list(p.data_filler)
        self.fillers = [fillers[j if len(fillers) > 1 else 0] if fillers else None
                        for j in range(n)]
        self.refill = [f is not None and f.type != "constant" for f in self.fillers]
        self._filled = False

    def reshape(self, bottom, top):
        for t, s in zip(top, self.shapes):
            t.reshape(s)

    def forward(self, bottom, top):
        from ..fillers import fill_blob
        for j, t in enumerate(top):
            if self.refill[j] or not self._filled:
                fill_blob(t, self.fillers[j], self.rng, default={"type": "constant", "value": 0})
        self._filled = True


class DataLayerBase(Layer):
    """A layer reading a source; here only its top shapes are known."""
    exact_num_bottom = 0
    min_top = 1
    max_top = 2
    is_data = True
    source_field = "data_param.source"

    def source(self) -> str:
        msg, field = self.source_field.split(".")
        return getattr(getattr(self.param, msg), field)

    def batch_size(self) -> int:
        msg = self.source_field.split(".")[0]
        return int(getattr(getattr(self.param, msg), "batch_size", 0))

    def derived_shape(self) -> tuple[int, ...] | None:
        """Shape of the first top from the parameters alone, or None."""
        return None

    def layer_setup(self, bottom, top):
        names = list(self.param.top)
        first = self.input_shapes.get(names[0]) or self.derived_shape()
        if first is None:
            raise self.config_error(
                f"cannot infer the shape of top '{names[0]}' without reading source "
                f"'{self.source()}': pass --input-shape {names[0]}=N,C,H,W",
                field=self.source_field)
        self.shapes = [tuple(first)]
        for name in names[1:]:
            self.shapes.append(tuple(self.input_shapes.get(name, (first[0],))))

    def reshape(self, bottom, top):
        for t, s in zip(top, self.shapes):
            t.reshape(s)

    def allow_force_backward(self, bottom_index):
        return False

    def forward(self, bottom, top):
        raise NotImplementedError(f"reading {self.type} sources is not implemented yet")


def _crop(param):
    return int(param.transform_param.crop_size)


@register_layer("Data", "data_param")
class DataLayer(DataLayerBase):
    """LMDB of Datum records, transformed by transform_param (Caffe's DataTransformer)."""

    def _open(self):
        src = getattr(self, "_source", None)
        if src is None:
            from ..data.lmdb_source import LMDBSource
            p = self.param.data_param
            if p.backend == p.LEVELDB and p.HasField("backend"):
                raise self.config_error("LevelDB sources are not supported: convert the data "
                                        "to LMDB (backend: LMDB)", field="data_param.backend")
            src = self._source = LMDBSource(p.source)
            if p.rand_skip and self.phase == 0:
                src.skip(int(self.rng.integers(0, p.rand_skip)))
        return src

    def derived_shape(self):
        import os
        p = self.param.data_param
        if not p.source or not os.path.isdir(p.source):
            return None
        from ..data.transform import DataTransformer
        shape = self._open().peek_shape()
        t = DataTransformer(self.param.transform_param, self.phase, self.rng) \
            if not self.param.transform_param.mean_file or self.init_params else None
        out = t.output_shape(shape) if t is not None else shape
        if p.batch_size <= 0:
            raise self.config_error("batch_size must be positive", field="data_param.batch_size")
        return (int(p.batch_size),) + tuple(out)

    def forward(self, bottom, top):
        from ..data.transform import DataTransformer
        src = self._open()
        if getattr(self, "_transformer", None) is None:
            self._transformer = DataTransformer(self.param.transform_param, self.phase, self.rng)
        n = top[0].shape[0]
        out = top[0].data
        labels = np.empty(n, dtype=top[0].dtype)
        for i, (arr, label) in enumerate(src.read(n)):
            self._transformer.transform(arr, out[i])
            labels[i] = label
        if len(top) > 1:
            top[1].data = labels.reshape(top[1].shape)

    def data_position(self) -> int:
        return self._open().position

    def set_data_position(self, pos: int) -> None:
        self._open().position = int(pos) % len(self._open())


@register_layer("ImageData", "image_data_param")
class ImageDataLayer(DataLayerBase):
    """A text file of "path label" lines."""
    source_field = "image_data_param.source"

    def derived_shape(self):
        p = self.param.image_data_param
        c = 3 if p.is_color else 1
        crop = _crop(self.param)
        if crop:
            return (p.batch_size, c, crop, crop)
        if p.new_height and p.new_width:
            return (p.batch_size, c, p.new_height, p.new_width)
        return None


@register_layer("HDF5Data", "hdf5_data_param")
class HDF5DataLayer(DataLayerBase):
    """A list of HDF5 files with datasets named like the tops."""
    source_field = "hdf5_data_param.source"
    max_top = -1


@register_layer("WindowData", "window_data_param")
class WindowDataLayer(DataLayerBase):
    """R-CNN style windows file."""
    source_field = "window_data_param.source"

    def derived_shape(self):
        p = self.param.window_data_param
        crop = _crop(self.param) or int(getattr(p, "crop_size", 0) or 0)
        return (p.batch_size, 3, crop, crop) if crop else None


@register_layer("MemoryData", "memory_data_param")
class MemoryDataLayer(DataLayerBase):
    """Arrays handed in by the program."""
    source_field = "memory_data_param.batch_size"

    def source(self):
        return "memory"

    def derived_shape(self):
        p = self.param.memory_data_param
        return (p.batch_size, p.channels, p.height, p.width)
