"""Data layers (no bottoms): Input and DummyData, and the types that read a source (Data,
ImageData, HDF5Data, WindowData, MemoryData).

The source-reading types know their top shapes from ``--input-shape`` (``self.input_shapes``,
top name -> shape) or from their parameters where those determine them (MemoryData's
dimensions, ImageData's resize or crop, WindowData's crop); Data, ImageData and HDF5Data also
peek at a readable source.  Reading: Data (LMDB of Datum records), ImageData (image list) and
WindowData (R-CNN windows file) prepare batches in a prefetch worker; HDF5Data (list of .h5
files, needs h5py) and MemoryData (arrays from the program, ``set_input_arrays``) read in
forward.  Each keeps its randomness in its own generator (``self._drng``, seeded from the
net's) and reports ``data_state()`` (cursor, generator state) for the solver's snapshots.

HDF5Output is the one writer here (two bottoms, no tops): it appends its bottoms to the
datasets "data" and "label" of an HDF5 file (needs h5py).
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError
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


def _shard(batch_size: int) -> tuple[int, int]:
    from ..parallel.mpi import shard
    return shard(batch_size)


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
        # data-parallel training: this rank's slice of each global batch (netdef.parallel)
        before, after = _shard(shape[0]) if self.phase == 0 else (0, 0)

        # as Caffe, each batch takes the shape of its first item (images of varying size at
        # batch_size 1 run through a net that reshapes); --input-shape fixes the shape
        fixed = (self.param.top[0] if len(self.param.top) else name) in self.input_shapes

        def make_batch():
            out = None
            labels = np.empty(shape[0], dtype=dtype)
            if before:
                src.skip(before)
            for i, (arr, label) in enumerate(src.read(shape[0])):
                want = tuple(transformer.output_shape(arr.shape))
                if out is None:
                    if fixed and tuple(shape[1:]) != want:
                        raise self.shape_error(
                            f"top '{name}' has shape {list(shape)} but the records give "
                            f"items of shape {list(want)}: fix --input-shape")
                    out = np.empty((shape[0],) + want, dtype=dtype)
                elif out.shape[1:] != want:
                    raise self.shape_error(
                        f"item {i} of a batch of '{name}' has shape {list(want)} but the "
                        f"batch's first item has {list(out.shape[1:])}: the items of a batch "
                        f"need one shape (resize them: new_height/new_width, or crop_size, "
                        f"or use batch_size 1)")
                transformer.transform(arr, out[i])
                labels[i] = label
            if after:
                src.skip(after)
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
        if top[0].shape != out.shape:
            top[0].reshape(out.shape)
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


def _peek_seed(rng: np.random.Generator) -> int:
    """A seed drawn from a copy of ``rng`` (``rng`` itself does not move), so that what it
    seeds is a function of the generator state that snapshots save."""
    g = np.random.Generator(type(rng.bit_generator)())
    g.bit_generator.state = rng.bit_generator.state
    return int(g.integers(2 ** 63))


@register_layer("HDF5Data", "hdf5_data_param")
class HDF5DataLayer(DataLayerBase):
    """A text file listing HDF5 files with one dataset per top, named like the top (see
    :mod:`netdef.data.hdf5_source`; needs h5py).  Each top is ``batch_size`` rows of its
    dataset, cast to the net's dtype; shuffle permutes the files and the rows of each file
    every pass.  transform_param is ignored, as in Caffe.

    Shapes come from the first file's datasets (metadata only) when the list is readable;
    otherwise from --input-shape, with a second top not given there taken to be a label of
    shape (N,)."""
    max_top = -1
    param_name = "hdf5_data_param"

    def layer_setup(self, bottom, top):
        # the shuffle order is seeded from this generator, which nothing else draws from
        self._drng = np.random.default_rng(int(self.rng.integers(2 ** 63)))
        self._source = None
        self._names = _top_names(self, top)

    def _readable(self) -> bool:
        src = self.param.hdf5_data_param.source
        return bool(src) and os.path.isfile(src)

    def _open(self):
        if getattr(self, "_source", None) is None:
            from ..data.hdf5_source import HDF5Source
            p = self.param.hdf5_data_param
            if not p.source:
                raise self.config_error("no source given: hdf5_data_param { source: "
                                        "\"files.txt\" } names a text file listing .h5 files",
                                        field="hdf5_data_param.source")
            self._source = HDF5Source(p.source, self._names, shuffle=p.shuffle,
                                      shuffle_seed=_peek_seed(self._drng), dtype=self.dtype)
        return self._source

    def top_shapes(self, top):
        names = _top_names(self, top)
        given = {k: tuple(int(d) for d in v) for k, v in self.input_shapes.items()}
        if all(n in given for n in names) or not self._readable():
            return super().top_shapes(top)
        src = self._open()
        n = given[names[0]][0] if names[0] in given else \
            self.check_batch_size(self.param.hdf5_data_param.batch_size)
        return [given.get(name, (n,) + src.shapes[name]) for name in names]

    def forward(self, bottom, top):
        src = self._open()
        n = top[0].shape[0]
        for name, t in zip(self._names, top):
            want = (n,) + src.shapes[name]
            if tuple(t.shape) != want:
                raise self.shape_error(
                    f"top '{name}' has shape {list(t.shape)} but dataset '{name}' gives "
                    f"batches of shape {list(want)}: fix --input-shape")
        batch = src.read(n)
        for name, t in zip(self._names, top):
            t.data = batch[name]

    def data_state(self) -> tuple[int, bytes]:
        """Row cursor and generator state (the generator seeds the shuffle order)."""
        from ..data.prefetch import rng_state
        pos = self._source.position if getattr(self, "_source", None) is not None else 0
        return pos, rng_state(self._drng)

    def set_data_state(self, position: int, rng: bytes | None = None) -> None:
        from ..data.prefetch import set_rng_state
        if rng:
            set_rng_state(self._drng, rng)
        src = self._open()
        src.shuffle_seed = _peek_seed(self._drng)
        src.position = int(position)

    def data_position(self) -> int:
        return self.data_state()[0]

    def set_data_position(self, pos: int) -> None:
        self.set_data_state(pos)


def _window_transform(param) -> dict:
    """WindowData's transformation: transform_param, or the legacy window_data_param fields
    (scale, mean_file, crop_size, mirror) where transform_param leaves them unset."""
    tp, wp = param.transform_param, param.window_data_param
    return {"crop_size": int(tp.crop_size) or int(wp.crop_size),
            "mirror": bool(tp.mirror or wp.mirror),
            "scale": float(tp.scale if tp.HasField("scale") or not wp.HasField("scale")
                           else wp.scale),
            "mean_file": tp.mean_file or wp.mean_file,
            "mean_values": [float(v) for v in tp.mean_value]}


@register_layer("WindowData", "window_data_param")
class WindowDataLayer(DataLayerBase):
    """R-CNN style windows file (see :mod:`netdef.data.window_source`): batches of
    (3, crop, crop) windows warped out of their images, ``int(batch_size * fg_fraction)``
    foreground windows after the background ones; labels are the foreground classes and 0.
    crop from transform_param.crop_size (Caffe requires it)."""
    exact_num_top = 2
    min_top = max_top = -1
    param_name = "window_data_param"

    def layer_setup(self, bottom, top):
        DataLayer.layer_setup(self, bottom, top)

    def derived_shape(self):
        p = self.param.window_data_param
        crop = _window_transform(self.param)["crop_size"]
        if crop <= 0:
            raise self.config_error("WindowData needs transform_param { crop_size: ... } (the "
                                    "size windows are warped to)",
                                    field="transform_param.crop_size")
        return (self.check_batch_size(p.batch_size), 3, crop, crop)

    def _open(self):
        src = getattr(self, "_source", None)
        if src is None:
            from ..data.binaryproto import read_mean
            from ..data.window_source import WindowSource
            p = self.param.window_data_param
            if not p.source:
                raise self.config_error("no windows file given: window_data_param { source: "
                                        "\"windows.txt\" }", field="window_data_param.source")
            t = _window_transform(self.param)
            if t["crop_size"] <= 0:
                raise self.config_error("WindowData needs transform_param { crop_size: ... }",
                                        field="transform_param.crop_size")
            mean = read_mean(t["mean_file"]) if t["mean_file"] else None
            src = self._source = WindowSource(
                p.source, crop_size=t["crop_size"], root_folder=p.root_folder,
                fg_threshold=p.fg_threshold, bg_threshold=p.bg_threshold,
                fg_fraction=p.fg_fraction, context_pad=p.context_pad, crop_mode=p.crop_mode,
                mirror=t["mirror"], scale=t["scale"], mean=mean, mean_values=t["mean_values"],
                cache_images=p.cache_images)
        return src

    prefetch_depth = DataLayer.prefetch_depth

    def _start(self, top):
        from ..data.prefetch import Prefetcher, rng_state
        src = self._open()
        shape, dtype = tuple(top[0].shape), top[0].dtype
        want = (shape[0], 3, src.crop_size, src.crop_size)
        if shape != want:
            raise self.shape_error(f"top '{top[0].name}' has shape {list(shape)} but the "
                                   f"windows give batches of {list(want)}: fix --input-shape")
        src.check(shape[0])

        def make_batch():
            out = np.empty(shape, dtype=dtype)
            labels = np.empty(shape[0], dtype=dtype)
            src.read(shape[0], out, labels, self._drng)
            return out, labels

        def state():
            return src.position, rng_state(self._drng)

        if self._state is None:
            self._state = state()
        self._prefetch = Prefetcher(make_batch, state, self.prefetch_depth())

    forward = DataLayer.forward
    data_state = DataLayer.data_state
    set_data_state = DataLayer.set_data_state
    data_position = DataLayer.data_position
    set_data_position = DataLayer.set_data_position


@register_layer("MemoryData", "memory_data_param")
class MemoryDataLayer(DataLayerBase):
    """Arrays handed in by the program (pycaffe's ``set_input_arrays``): data (K, C, H, W)
    and labels (K,), K a multiple of the batch size.  Each forward serves the next batch_size
    items (wrapping around), transformed by transform_param (scale, mean, crop, mirror).
    Top shape: (batch_size, channels, height, width), or crop x crop with crop_size."""
    exact_num_top = 2
    min_top = max_top = -1
    param_name = "memory_data_param"

    def source(self):
        return "(program memory)"

    def layer_setup(self, bottom, top):
        self._drng = np.random.default_rng(int(self.rng.integers(2 ** 63)))
        self._data = self._labels = None
        self._pos = 0
        self._transformer = None
        self._shape = None

    def derived_shape(self):
        p = self.param.memory_data_param
        dims = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        if min(dims) <= 0:
            raise self.config_error(
                f"memory_data_param needs positive batch_size, channels, height and width "
                f"(got {dims[0]}, {dims[1]}, {dims[2]}, {dims[3]})",
                field="memory_data_param.batch_size")
        crop = _crop(self.param)
        if crop:
            if crop > dims[2] or crop > dims[3]:
                raise self.config_error(f"crop_size {crop} exceeds the {dims[2]}x{dims[3]} "
                                        f"data", field="transform_param.crop_size")
            dims = dims[:2] + (crop, crop)
        return dims

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self._shape = tuple(top[0].shape)

    def _get_transformer(self):
        if self._transformer is None:
            from ..data.transform import DataTransformer
            try:
                self._transformer = DataTransformer(self.param.transform_param, self.phase,
                                                    self._drng)
            except ConfigError as e:
                raise e.located(layer=self.name, layer_type=self.type)
        return self._transformer

    def _item_shape(self) -> tuple[int, ...] | None:
        """The C×H×W the items must have (None: any that transforms to the top's shape)."""
        p = self.param.memory_data_param
        dims = (int(p.channels), int(p.height), int(p.width))
        if min(dims) > 0:
            return dims
        if not _crop(self.param) and self._shape is not None:
            return self._shape[1:]
        return None

    def set_input_arrays(self, data, labels) -> None:
        """Serve ``data`` (K, C, H, W) and ``labels`` (K values) from the next forward on,
        starting with item 0.  Kept by reference when already of the net's dtype, as Caffe
        does (changes to the arrays show in later batches)."""
        data = np.asarray(data)
        labels = np.asarray(labels)
        if data.dtype.kind not in "fiub" or labels.dtype.kind not in "fiub":
            raise self.shape_error(f"data and labels must be numeric arrays, not {data.dtype} "
                                   f"and {labels.dtype}")
        n = self._shape[0] if self._shape else self.check_batch_size(
            self.param.memory_data_param.batch_size)
        want = self._item_shape()
        if data.ndim != 4 or (want is not None and tuple(data.shape[1:]) != tuple(want)):
            expect = "(K, C, H, W)" if want is None else f"(K, {', '.join(map(str, want))})"
            raise self.shape_error(f"data has shape {list(data.shape)} but this layer takes "
                                   f"{expect} (memory_data_param channels/height/width)")
        k = data.shape[0]
        if k == 0 or k % n:
            raise self.shape_error(f"data holds {k} items (shape {list(data.shape)}); it must "
                                   f"hold a positive multiple of the batch size ({n})")
        if labels.size != k or (labels.ndim > 1 and labels.shape[0] != k):
            raise self.shape_error(f"labels have shape {list(labels.shape)} but data has shape "
                                   f"{list(data.shape)}: give one label per item, shape ({k},)")
        if self._shape is not None:
            out = tuple(self._get_transformer().output_shape(data.shape[1:]))
            if out != tuple(self._shape[1:]):
                raise self.shape_error(f"items of shape {list(data.shape[1:])} transform to "
                                       f"{list(out)} but the top is {list(self._shape)}")
        self._data = np.asarray(data, self.dtype)
        self._labels = np.asarray(labels, self.dtype).reshape(k)
        self._pos = 0

    reset = set_input_arrays

    def forward(self, bottom, top):
        if self._data is None:
            raise self.config_error("no data to serve: call set_input_arrays(data, labels) on "
                                    "this layer (or Net.set_input_arrays) before forward")
        n = top[0].shape[0]
        k = len(self._data)
        if k % n:
            raise self.shape_error(f"the batch size is now {n} but the arrays hold {k} items "
                                   f"(not a multiple): call set_input_arrays again")
        pos = self._pos % k
        items = self._data[pos:pos + n]
        tr = self._get_transformer()
        out = np.empty(top[0].shape, dtype=top[0].dtype)
        for i in range(n):
            tr.transform(items[i], out[i])
        top[0].data = out
        if len(top) > 1:
            top[1].data = self._labels[pos:pos + n].reshape(top[1].shape)
        self._pos = (pos + n) % k

    def data_state(self) -> tuple[int, bytes]:
        """Cursor (the next item) and generator state (crop offsets, mirror)."""
        from ..data.prefetch import rng_state
        return self._pos, rng_state(self._drng)

    def set_data_state(self, position: int, rng: bytes | None = None) -> None:
        from ..data.prefetch import set_rng_state
        self._pos = int(position)
        if rng:
            set_rng_state(self._drng, rng)

    def data_position(self) -> int:
        return self._pos

    def set_data_position(self, pos: int) -> None:
        self._pos = int(pos)


HDF5_OUTPUT_HINT = "HDF5Output needs h5py: pip install 'netdef[hdf5]'"


@register_layer("HDF5Output", "hdf5_output_param")
class HDF5OutputLayer(Layer):
    """Writes its two bottoms to the HDF5 file ``hdf5_output_param.file_name`` as the
    datasets "data" (bottom 0) and "label" (bottom 1), each with its bottom's shape and the
    net's dtype; no tops, and backward does nothing (Caffe's hdf5_output_layer.cpp).

    The file is created (truncated) by the layer's first forward, not at setup, so building a
    net (``netdef summary``) never touches it; every forward appends its batch along axis 0,
    so after ``k`` forwards of batch ``N`` the datasets hold ``k*N`` rows (Caffe rewrote the
    datasets and failed on a second forward).  The file is opened and closed in each forward:
    it is complete and readable (by HDF5Data too) between forwards.  A relative file_name is
    taken relative to the working directory, as in Caffe.  Needs h5py."""
    exact_num_bottom = 2
    exact_num_top = 0
    DATASETS = ("data", "label")

    def layer_setup(self, bottom, top):
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.config_error('no file_name: hdf5_output_param { file_name: "out.h5" } '
                                    'names the HDF5 file to write',
                                    field="hdf5_output_param.file_name")
        if self.init_params:           # a net that will run: fail now, not at the first forward
            self._h5py()
        self.rows_written = 0
        self._created = False

    def _h5py(self):
        try:
            import h5py
        except ImportError:
            raise self.config_error(HDF5_OUTPUT_HINT) from None
        return h5py

    def reshape(self, bottom, top):
        for name, b in zip(self.DATASETS, bottom):
            if len(b.shape) == 0:
                raise self.shape_error(f"bottom '{name}' is a scalar; HDF5Output writes rows "
                                       f"along axis 0, so it needs at least one axis")
        if bottom[0].shape[0] != bottom[1].shape[0]:
            raise self.shape_error(
                f"the bottoms hold different numbers of rows: data {list(bottom[0].shape)}, "
                f"label {list(bottom[1].shape)} (HDF5Output writes them row by row)")

    def forward(self, bottom, top):
        h5py = self._h5py()
        self.reshape(bottom, top)
        try:
            f = h5py.File(self.file_name, "a" if self._created else "w")
        except OSError as e:
            raise self.config_error(f"cannot open '{self.file_name}' for writing ({e})",
                                    field="hdf5_output_param.file_name") from None
        with f:
            self._created = True
            arrays = [np.ascontiguousarray(b.data, dtype=self.dtype) for b in bottom]
            for name, arr in zip(self.DATASETS, arrays):     # check both before writing
                ds = f.get(name)
                if ds is not None and tuple(ds.shape[1:]) != tuple(arr.shape[1:]):
                    raise self.shape_error(
                        f"bottom '{name}' now has rows of shape {list(arr.shape[1:])} but "
                        f"'{self.file_name}' holds rows of shape {list(ds.shape[1:])}")
            for name, arr in zip(self.DATASETS, arrays):
                ds = f.get(name)
                if ds is None:
                    ds = f.create_dataset(name, shape=(0,) + arr.shape[1:],
                                          maxshape=(None,) + arr.shape[1:], dtype=self.dtype,
                                          chunks=True)
                n0 = ds.shape[0]
                ds.resize(n0 + arr.shape[0], axis=0)
                ds[n0:] = arr
        self.rows_written += bottom[0].shape[0]

    def backward(self, top, propagate_down, bottom):
        """Nothing: the layer only writes (Caffe's Backward_cpu returns)."""

    def allow_force_backward(self, bottom_index):
        return False
