"""Data layers (no bottoms): Input and DummyData, and the types that read a source (Data,
ImageData, HDF5Data, WindowData, MemoryData).

The source-reading types know their top shapes from ``--input-shape`` (``self.input_shapes``,
top name -> shape) or from their parameters where those determine them (MemoryData's
dimensions, ImageData's resize or crop, WindowData's crop); Data also peeks at a readable LMDB.
Only Data reads its source so far (LMDB of Datum records); the others' forward is a
NotImplementedError until the data pipeline grows them.
"""
from __future__ import annotations

import os

import numpy as np

from ..fillers import FILLER_TYPES, fill_blob
from .base import Layer
from .registry import register_layer


def _shape_of(bs) -> tuple[int, ...]:
    return tuple(int(d) for d in bs.dim)


def _top_names(layer, top) -> list[str]:
    names = list(layer.param.top)
    return [names[j] if j < len(names) else t.name for j, t in enumerate(top)]


@register_layer("Input", "input_param")
class InputLayer(Layer):
    """Placeholder tops with fixed shapes, set by the user before forward (which does nothing).
    input_param.shape: one BlobShape per top, or one for all; ``--input-shape`` overrides."""
    exact_num_bottom = 0
    min_top = 1
    is_data = True

    def layer_setup(self, bottom, top):
        shapes = list(self.param.input_param.shape)
        if len(shapes) not in (0, 1, len(top)):
            raise self.config_error(
                f"input_param gives {len(shapes)} shapes for {len(top)} tops: give one shape "
                f"per top, or one for all", field="input_param.shape")
        self.shapes = []
        for j, name in enumerate(_top_names(self, top)):
            if name in self.input_shapes:
                self.shapes.append(tuple(int(d) for d in self.input_shapes[name]))
            elif shapes:
                self.shapes.append(_shape_of(shapes[0 if len(shapes) == 1 else j]))
            else:
                raise self.config_error(
                    f"no shape for top '{name}': add input_param {{ shape {{ dim: ... }} }} or "
                    f"pass --input-shape {name}=N,C,H,W", field="input_param.shape")

    def reshape(self, bottom, top):
        for t, s in zip(top, self.shapes):
            t.reshape(s)

    def forward(self, bottom, top):
        pass


@register_layer("DummyData", "dummy_data_param")
class DummyDataLayer(Layer):
    """Tops filled by dummy_data_param.data_filler (none: constant 0; one for all tops, or one
    per top).  Shapes: dummy_data_param.shape (one, or one per top) or the legacy
    num/channels/height/width.  As in Caffe, tops with a constant filler are filled once (so a
    program may overwrite them); the others are refilled on every forward."""
    exact_num_bottom = 0
    min_top = 1
    is_data = True

    def layer_setup(self, bottom, top):
        p = self.param.dummy_data_param
        n = len(top)
        legacy = bool(len(p.num) or len(p.channels) or len(p.height) or len(p.width))
        if len(p.data_filler) not in (0, 1, n):
            raise self.config_error(f"{len(p.data_filler)} data_fillers for {n} tops: give "
                                    f"none, one for all tops, or one per top",
                                    field="dummy_data_param.data_filler")
        if legacy:
            if len(p.shape):
                raise self.config_error("give either shape or num/channels/height/width, not "
                                        "both", field="dummy_data_param.shape")
            dims = []
            for fname in ("num", "channels", "height", "width"):
                d = list(getattr(p, fname))
                if len(d) not in (1, n):
                    raise self.config_error(f"{fname} must be given once, or once per top ({n}); "
                                            f"got {len(d)}", field=f"dummy_data_param.{fname}")
                dims.append(d)
            shapes = [tuple(int(d[0 if len(d) == 1 else j]) for d in dims) for j in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise self.config_error(f"{len(p.shape)} shapes for {n} tops: give one shape "
                                        f"for all tops, or one per top",
                                        field="dummy_data_param.shape")
            shapes = [_shape_of(p.shape[0 if len(p.shape) == 1 else j]) for j in range(n)]
        names = _top_names(self, top)
        self.shapes = [tuple(int(d) for d in self.input_shapes.get(name, s))
                       for name, s in zip(names, shapes)]
        fillers = list(p.data_filler)
        self.fillers = [fillers[0 if len(fillers) == 1 else j] if fillers else None
                        for j in range(n)]
        for f in self.fillers:
            if f is not None and f.type not in FILLER_TYPES:
                raise self.config_error(f"unknown filler type '{f.type}' (one of "
                                        f"{', '.join(FILLER_TYPES)})",
                                        field="dummy_data_param.data_filler")
        self.refill = [f is not None and f.type != "constant" for f in self.fillers]
        self._constant_arrays: list = [None] * n   # storage last filled with a constant

    def reshape(self, bottom, top):
        for t, s in zip(top, self.shapes):
            t.reshape(s)

    def _fill(self, j, t) -> None:
        fill_blob(t, self.fillers[j], self.rng, default={"type": "constant", "value": 0.0},
                  layer=self)

    def forward(self, bottom, top):
        for j, t in enumerate(top):
            if self.refill[j]:
                self._fill(j, t)
            elif self._constant_arrays[j] is None or self._constant_arrays[j] is not t.data:
                # constant tops: once per storage (a reshape drops the storage)
                self._fill(j, t)
                self._constant_arrays[j] = t.data


class DataLayerBase(Layer):
    """A layer that reads its tops from a source (a file, a database, program memory).

    Top shapes: every top named in ``self.input_shapes`` takes that shape; otherwise the first
    top's shape comes from :meth:`derived_shape` (parameters alone, or a peek at the source)
    and the second (the label) defaults to ``(N,)``.  When nothing determines a shape the layer
    raises a config error that asks for ``--input-shape``."""
    exact_num_bottom = 0
    min_top = 1
    max_top = 2
    is_data = True
    #: the LayerParameter field holding this type's parameters
    param_name = "data_param"

    @property
    def type_param(self):
        return getattr(self.param, self.param_name)

    def source(self) -> str:
        return self.type_param.source

    def derived_shape(self) -> tuple[int, ...] | None:
        """The first top's shape from the parameters alone, or None when unknown."""
        return None

    def check_batch_size(self, n: int) -> int:
        if n <= 0:
            raise self.config_error(f"batch_size must be positive, got {n}",
                                    field=f"{self.param_name}.batch_size")
        return int(n)

    def _cannot_infer(self, name: str, example: str = "N,C,H,W"):
        return self.config_error(
            f"cannot infer the shape of top '{name}' without reading source "
            f"'{self.source()}': pass --input-shape {name}={example}",
            field=f"{self.param_name}.source")

    def top_shapes(self, top) -> list[tuple[int, ...]]:
        names = _top_names(self, top)
        given = {k: tuple(int(d) for d in v) for k, v in self.input_shapes.items()}
        if all(n in given for n in names):
            return [given[n] for n in names]
        if names[0] in given:
            first = given[names[0]]
        else:
            if getattr(self, "_derived", None) is None:
                self._derived = self.derived_shape()
            first = self._derived
            if first is None:
                raise self._cannot_infer(names[0])
        shapes = [tuple(first)]
        for j, name in enumerate(names[1:], start=1):
            if name in given:
                shapes.append(given[name])
            elif j == 1:       # the label: one value per item
                shapes.append((first[0],) if first else (0,))
            else:
                raise self._cannot_infer(name, "N,...")
        return shapes

    def reshape(self, bottom, top):
        for t, s in zip(top, self.top_shapes(top)):
            t.reshape(s)

    def allow_force_backward(self, bottom_index):
        return False

    def forward(self, bottom, top):
        raise NotImplementedError(f"reading {self.type} sources is not implemented yet")


def _crop(param) -> int:
    return int(param.transform_param.crop_size)


@register_layer("Data", "data_param")
class DataLayer(DataLayerBase):
    """An LMDB of Datum records, transformed by transform_param (Caffe's DataTransformer).
    The shape comes from the first record when the source is readable."""

    def _open(self):
        src = getattr(self, "_source", None)
        if src is None:
            from ..data.lmdb_source import LMDBSource
            p = self.param.data_param
            if p.HasField("backend") and p.backend == p.LEVELDB:
                raise self.config_error("LevelDB sources are not supported: convert the data "
                                        "to LMDB (backend: LMDB)", field="data_param.backend")
            tp = self.param.transform_param
            src = self._source = LMDBSource(p.source, force_color=tp.force_color,
                                            force_gray=tp.force_gray)
            if p.rand_skip and self.phase == 0:
                src.skip(int(self._drng.integers(0, p.rand_skip)))
        return src

    def derived_shape(self):
        p = self.param.data_param
        if not p.source or not os.path.isdir(p.source):
            return None
        n = self.check_batch_size(p.batch_size)
        c, h, w = self._open().peek_shape()
        crop = _crop(self.param)
        if crop:
            if crop > h or crop > w:
                raise self.config_error(f"crop_size {crop} exceeds the {h}x{w} data",
                                        field="transform_param.crop_size")
            h = w = crop
        return (n, c, h, w)

    def layer_setup(self, bottom, top):
        # the data path draws from its own generator (seeded from the net's), used only by
        # the prefetch worker, so batches do not depend on timing
        self._drng = np.random.default_rng(int(self.rng.integers(2 ** 63)))
        self._prefetch = None
        self._state = None

    def prefetch_depth(self) -> int:
        return int(getattr(self.type_param, "prefetch", 4) or 1)

    def _start(self, top):
        from ..data.prefetch import Prefetcher, rng_state
        from ..data.transform import DataTransformer
        src = self._open()
        transformer = DataTransformer(self.param.transform_param, self.phase, self._drng)
        shape, dtype = tuple(top[0].shape), top[0].dtype
        name = top[0].name

        def make_batch():
            out = np.empty(shape, dtype=dtype)
            labels = np.empty(shape[0], dtype=dtype)
            for i, (arr, label) in enumerate(src.read(shape[0])):
                want = transformer.output_shape(arr.shape)
                if tuple(shape[1:]) != tuple(want):
                    raise self.shape_error(
                        f"top '{name}' has shape {list(shape)} but the records give items of "
                        f"shape {list(want)}: fix --input-shape")
                transformer.transform(arr, out[i])
                labels[i] = label
            return out, labels

        def state():
            return src.position, rng_state(self._drng)

        if self._state is None:
            self._state = state()
        self._prefetch = Prefetcher(make_batch, state, self.prefetch_depth())

    def forward(self, bottom, top):
        if self._prefetch is None:
            self._start(top)
        (out, labels), self._state = self._prefetch.get()
        top[0].data = out
        if len(top) > 1:
            top[1].data = labels.reshape(top[1].shape)

    def data_state(self) -> tuple[int, bytes]:
        """Reader position and generator state after the last batch consumed."""
        from ..data.prefetch import rng_state
        if self._state is None:
            return self._open().position, rng_state(self._drng)
        return self._state

    def set_data_state(self, position: int, rng: bytes | None = None) -> None:
        from ..data.prefetch import set_rng_state
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None
        self._open().position = int(position)
        if rng:
            set_rng_state(self._drng, rng)
        self._state = None

    def data_position(self) -> int:
        return self.data_state()[0]

    def set_data_position(self, pos: int) -> None:
        self.set_data_state(pos)


@register_layer("ImageData", "image_data_param")
class ImageDataLayer(DataLayerBase):
    """A text file of "path label" lines; shape known when the images are resized
    (new_height/new_width) or cropped (transform_param.crop_size)."""
    exact_num_top = 2
    min_top = max_top = -1
    param_name = "image_data_param"

    def layer_setup(self, bottom, top):
        DataLayer.layer_setup(self, bottom, top)
        p = self.param.image_data_param
        if (p.new_height > 0) != (p.new_width > 0):
            raise self.config_error("set new_height and new_width together (or neither)",
                                    field="image_data_param.new_height")

    def _open(self):
        src = getattr(self, "_source", None)
        if src is None:
            from ..data.image_list import ImageListSource
            p = self.param.image_data_param
            src = self._source = ImageListSource.from_param(p, rng=self._drng)
            if p.rand_skip:
                src.skip(int(self._drng.integers(0, p.rand_skip)))
        return src

    prefetch_depth = DataLayer.prefetch_depth
    _start = DataLayer._start
    forward = DataLayer.forward
    data_state = DataLayer.data_state
    set_data_state = DataLayer.set_data_state
    data_position = DataLayer.data_position
    set_data_position = DataLayer.set_data_position

    def derived_shape(self):
        p = self.param.image_data_param
        c = 3 if p.is_color else 1
        crop = _crop(self.param)
        if not (p.new_height > 0 and p.new_width > 0) and not crop and p.source \
                and os.path.isfile(p.source):
            c, h, w = self._open().peek_shape()       # Caffe reads the first image
            return (self.check_batch_size(p.batch_size), c, h, w)
        if crop > 0:
            if p.new_height > 0 and (crop > p.new_height or crop > p.new_width):
                raise self.config_error(f"crop_size {crop} exceeds the {p.new_height}x"
                                        f"{p.new_width} resized images",
                                        field="transform_param.crop_size")
            return (self.check_batch_size(p.batch_size), c, crop, crop)
        if p.new_height > 0 and p.new_width > 0:
            return (self.check_batch_size(p.batch_size), c, int(p.new_height), int(p.new_width))
        return None


@register_layer("HDF5Data", "hdf5_data_param")
class HDF5DataLayer(DataLayerBase):
    """A list of HDF5 files with one dataset per top, named like the top.  Until sources are
    read every shape comes from --input-shape, except that a second top not given there is
    taken to be a label of shape (N,)."""
    max_top = -1
    param_name = "hdf5_data_param"


@register_layer("WindowData", "window_data_param")
class WindowDataLayer(DataLayerBase):
    """R-CNN style windows file; items are (3, crop, crop) windows, crop from
    transform_param.crop_size (Caffe requires it)."""
    exact_num_top = 2
    min_top = max_top = -1
    param_name = "window_data_param"

    def derived_shape(self):
        p = self.param.window_data_param
        crop = _crop(self.param) or int(p.crop_size)
        if crop <= 0:
            raise self.config_error("WindowData needs transform_param { crop_size: ... } (the "
                                    "size windows are warped to)",
                                    field="transform_param.crop_size")
        return (self.check_batch_size(p.batch_size), 3, crop, crop)


@register_layer("MemoryData", "memory_data_param")
class MemoryDataLayer(DataLayerBase):
    """Arrays handed in by the program: (batch_size, channels, height, width) and labels."""
    exact_num_top = 2
    min_top = max_top = -1
    param_name = "memory_data_param"

    def source(self):
        return "(program memory)"

    def derived_shape(self):
        p = self.param.memory_data_param
        dims = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        if min(dims) <= 0:
            raise self.config_error(
                f"memory_data_param needs positive batch_size, channels, height and width "
                f"(got {dims[0]}, {dims[1]}, {dims[2]}, {dims[3]})",
                field="memory_data_param.batch_size")
        return dims
