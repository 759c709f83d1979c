"""pycaffe's ``Net`` and ``Blob`` over :class:`netdef.net.Net` (which keeps its own API: the
CLI and the solvers use it).  Names and semantics follow pycaffe's documentation; errors are
netdef's exceptions (file:line, layer).

Blobs handed out are views of the net's memory: writing ``net.blobs['data'].data[...]`` writes
the net, and an array taken from a blob stays valid (numpy keeps its memory) after the Net is
gone.  A changed input shape reaches every layer before the next forward (``Net.forward``
reshapes each layer whose bottoms changed shape), as Caffe reshapes the whole net on every
forward.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..errors import ConfigError, ShapeError
from . import runtime

TRAIN, TEST = 0, 1


class Blob:
    """A net blob as pycaffe shows it: ``data``, ``diff`` (float32 arrays of ``shape``; writing
    into them writes into the net), ``shape``, ``count``, ``num``/``channels``/``height``/
    ``width``, ``reshape(*dims)``."""
    __slots__ = ("_b",)

    def __init__(self, blob):
        self._b = blob

    @property
    def data(self) -> np.ndarray:
        return self._b.data

    @data.setter
    def data(self, value) -> None:
        self._b.data = value

    @property
    def diff(self) -> np.ndarray:
        return self._b.diff

    @diff.setter
    def diff(self, value) -> None:
        self._b.diff = value

    @property
    def shape(self) -> tuple[int, ...]:
        return self._b.shape

    @property
    def count(self) -> int:
        return self._b.count

    def _legacy(self, axis: int) -> int:
        s = self._b.shape
        if len(s) > 4:
            raise ShapeError(f"blob '{self._b.name}' has {len(s)} axes: num/channels/height/"
                             f"width need at most 4 (use .shape)")
        return s[axis] if axis < len(s) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape) -> None:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self._b.reshape(tuple(int(s) for s in shape))

    def __repr__(self):
        return f"<caffe Blob '{self._b.name}' {list(self._b.shape)}>"


class Layer:
    """One layer of a Net: ``type``, ``blobs`` (its learnable blobs), ``setup``/``reshape``/
    ``forward``/``backward`` on lists of pycaffe Blobs."""

    def __init__(self, layer):
        self._layer = layer
        self.blobs = [Blob(b) for b in layer.blobs]

    @property
    def type(self) -> str:
        return self._layer.type

    @staticmethod
    def _raw(blobs):
        return [b._b if isinstance(b, Blob) else b for b in blobs]

    def setup(self, bottom, top) -> None:
        self._layer.setup(self._raw(bottom), self._raw(top))

    def reshape(self, bottom, top) -> None:
        self._layer.reshape(self._raw(bottom), self._raw(top))

    def forward(self, bottom, top) -> None:
        self._layer.forward(self._raw(bottom), self._raw(top))

    def backward(self, top, propagate_down, bottom) -> None:
        self._layer.backward(self._raw(top), list(propagate_down), self._raw(bottom))


def _phase(value, what: str = "phase") -> int:
    if isinstance(value, str) and value.upper() in ("TRAIN", "TEST"):
        return TRAIN if value.upper() == "TRAIN" else TEST
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or int(value) not in (TRAIN, TEST):
        raise TypeError(f"{what} must be caffe.TRAIN or caffe.TEST, not {value!r}")
    return int(value)


def _parse_args(args, kwargs):
    """(phase, weights) from pycaffe's constructor forms: (file, phase), (file, weights,
    phase), (file, phase, level=, stages=, weights=)."""
    weights = kwargs.pop("weights", None)
    phase = kwargs.pop("phase", None)
    if len(args) == 1:
        phase = args[0] if phase is None else phase
    elif len(args) == 2:
        if weights is not None:
            raise TypeError("Net(file, weights, phase) and weights= given together")
        weights, phase = args
    elif len(args) > 2:
        raise TypeError(f"Net() takes at most 3 positional arguments ({1 + len(args)} given)")
    if phase is None:
        raise TypeError("Net() needs a phase: Net(file, caffe.TEST) or "
                        "Net(file, weights, caffe.TEST)")
    return _phase(phase), weights


def _join(parts: list, bs: int, total: int) -> np.ndarray:
    """Per-batch results as one array: items concatenated and the padding trimmed; a result
    that is not one row per item (a scalar loss) gets one row per batch."""
    if parts[0].ndim == 0 or parts[0].shape[0] != bs:
        return np.stack(parts)
    return np.concatenate(parts)[:total]


class Net:
    """``Net(network_file, phase, level=0, stages=None, weights=None)`` or
    ``Net(network_file, pretrained_file, phase)``; ``network_file`` is a prototxt (or YAML)
    path, a ``NetParameter``, or a :class:`netdef.net.Net` to wrap."""

    def __init__(self, network_file, *args, **kwargs):
        from ..net import Net as CoreNet
        if isinstance(network_file, CoreNet):
            self._net = network_file
            if args or kwargs:
                raise TypeError("wrapping a netdef Net takes no other arguments")
        else:
            level = int(kwargs.pop("level", 0) or 0)
            stages = kwargs.pop("stages", None) or ()
            phase, weights = _parse_args(args, kwargs)
            if kwargs:
                raise TypeError(f"Net() got unexpected keyword arguments {sorted(kwargs)}")
            if isinstance(stages, str):
                stages = (stages,)
            definition = network_file
            if not hasattr(network_file, "SerializeToString") and \
                    not hasattr(network_file, "message"):
                from ..config import load_net
                definition = load_net(str(network_file))
            self._net = CoreNet(definition, phase, level=level, stages=list(stages),
                                rng=runtime.net_rng())
            if weights is not None:
                self.copy_from(weights)
            dev = runtime.device()
            if dev is not None:
                self._net.to_device(dev)
        self._cache()

    def _cache(self) -> None:
        n = self._net
        self._blobs = OrderedDict((k, Blob(b)) for k, b in n.blobs.items())
        self._layers = [Layer(lay) for lay in n.layers]

    # -- structure ------------------------------------------------------------------------
    @property
    def blobs(self) -> "OrderedDict[str, Blob]":
        return self._blobs

    @property
    def layers(self) -> list:
        return self._layers

    @property
    def params(self) -> "OrderedDict[str, list[Blob]]":
        return OrderedDict((name, lay.blobs) for name, lay in zip(self._net.layer_names,
                                                                   self._layers) if lay.blobs)

    @property
    def layer_dict(self) -> "OrderedDict[str, Layer]":
        d = OrderedDict()
        for name, lay in zip(self._net.layer_names, self._layers):
            d.setdefault(name, lay)
        return d

    @property
    def _layer_names(self) -> list[str]:
        return list(self._net.layer_names)

    @property
    def _blob_names(self) -> list[str]:
        return list(self._net.blobs)

    @property
    def inputs(self) -> list[str]:
        return list(self._net.input_names)

    @property
    def outputs(self) -> list[str]:
        return list(self._net.output_names)

    @property
    def top_names(self) -> "OrderedDict[str, list[str]]":
        return OrderedDict((n, [t for t in ts if t in self._net.blobs])
                           for n, ts in zip(self._net.layer_names, self._net.top_names))

    @property
    def bottom_names(self) -> "OrderedDict[str, list[str]]":
        return OrderedDict((n, list(bs)) for n, bs in zip(self._net.layer_names,
                                                          self._net.bottom_names))

    @property
    def blob_loss_weights(self) -> "OrderedDict[str, float]":
        w = OrderedDict((k, 0.0) for k in self._net.blobs)
        for ts, ws in zip(self._net.top_names, self._net.loss_weights):
            for t, x in zip(ts, ws):
                if t in w and x:
                    w[t] = float(x)
        return w

    @property
    def phase(self) -> int:
        return self._net.phase

    @property
    def core(self):
        """The :class:`netdef.net.Net` underneath."""
        return self._net

    # -- running --------------------------------------------------------------------------
    def _index(self, name, what: str) -> int:
        if name is None:
            return -1
        if name not in self._net.layer_index:
            raise ConfigError(f"{what}: no layer named '{name}' (layers: "
                              f"{', '.join(self._net.layer_names)})", file=self._net.loc.file)
        return self._net.layer_index[name]

    def _set(self, values: dict, what: str) -> None:
        for name, arr in values.items():
            if name not in self._blobs:
                raise ConfigError(f"{what}: the net has no blob '{name}' (inputs: "
                                  f"{', '.join(self.inputs) or 'none'})", file=self._net.loc.file)
            blob = self._net.blobs[name]
            arr = np.asarray(arr)
            if arr.shape != blob.shape:
                raise ShapeError(f"{what}: '{name}' is {list(arr.shape)} but the blob is "
                                 f"{list(blob.shape)} (reshape the blob first: "
                                 f"net.blobs['{name}'].reshape(...))", file=self._net.loc.file)
            if what == "forward":
                blob.data = arr
            else:
                blob.diff = arr

    def forward(self, blobs=None, start=None, end=None, **kwargs) -> dict:
        """Set input blobs from ``kwargs``, run layers ``start`` through ``end`` (layer names),
        return ``{name: array}`` for the outputs (``end``'s tops when given) and ``blobs``."""
        if kwargs:
            self._set(kwargs, "forward")
        i0 = self._index(start, "forward(start=...)")
        i1 = self._index(end, "forward(end=...)")
        self._net.forward(max(i0, 0), None if i1 < 0 else i1)
        outs = self.top_names[self._net.layer_names[i1]] if end is not None else self.outputs
        names = list(dict.fromkeys(list(outs) + list(blobs or [])))
        return {n: self._blobs[n].data for n in names}

    def backward(self, diffs=None, start=None, end=None, **kwargs) -> dict:
        """Set top diffs from ``kwargs``, run backward from layer ``start`` down to ``end``,
        return ``{name: diff}`` for the inputs (``end``'s bottoms when given) and ``diffs``."""
        n = self._net
        n.seed_loss_diffs()
        if kwargs:
            self._set(kwargs, "backward")
        i0 = self._index(start, "backward(start=...)")
        i1 = self._index(end, "backward(end=...)")
        n.backward(None if i0 < 0 else i0, max(i1, 0), seed=False)
        outs = self.bottom_names[n.layer_names[i1]] if end is not None else self.inputs
        names = list(dict.fromkeys(list(outs) + list(diffs or [])))
        return {k: self._blobs[k].diff for k in names}

    def _batches(self, kwargs):
        """(batch size, number of items, the kwargs cut into batches, the last padded)."""
        if not kwargs:
            return None, 0, []
        for name in kwargs:
            if name not in self._blobs:
                raise ConfigError(f"forward_all: the net has no blob '{name}'",
                                  file=self._net.loc.file)
        arrays = {k: np.asarray(v) for k, v in kwargs.items()}
        counts = {len(a) for a in arrays.values()}
        if len(counts) != 1:
            raise ShapeError(f"forward_all: the inputs have different lengths "
                             f"({', '.join(f'{k}={len(a)}' for k, a in arrays.items())})")
        total = counts.pop()
        bs = self._blobs[next(iter(arrays))].shape[0]
        batches = []
        for s in range(0, total, bs):
            cut = {}
            for k, a in arrays.items():
                part = a[s:s + bs]
                if len(part) < bs:
                    pad = np.zeros((bs - len(part),) + part.shape[1:], dtype=part.dtype)
                    part = np.concatenate([part, pad])
                cut[k] = part
            batches.append(cut)
        return bs, total, batches

    def forward_all(self, blobs=None, **kwargs) -> dict:
        """Forward arbitrary-length inputs batch by batch; every output (and ``blobs``)
        concatenated, the padding of the last batch trimmed (a scalar output such as a loss:
        one value per batch)."""
        out = {n: [] for n in dict.fromkeys(self.outputs + list(blobs or []))}
        bs, total, batches = self._batches(kwargs)
        if not batches:
            res = self.forward(blobs=blobs)
            return {k: v.copy() for k, v in res.items()}
        for cut in batches:
            res = self.forward(blobs=blobs, **cut)
            for k in out:
                out[k].append(res[k].copy())
        return {k: _join(v, bs, total) for k, v in out.items()}

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """forward_all with a backward per batch: ``(outputs, diffs)``; ``kwargs`` holds the
        input blobs and, under output names, their top diffs."""
        outs = set(self.outputs)
        fwd = {k: v for k, v in kwargs.items() if k not in outs}
        bwd = {k: v for k, v in kwargs.items() if k in outs}
        o = {n: [] for n in dict.fromkeys(self.outputs + list(blobs or []))}
        d = {n: [] for n in dict.fromkeys(self.inputs + list(diffs or []))}
        bs, total, fb = self._batches(fwd)
        _, _, bb = self._batches(bwd) if bwd else (None, 0, [])
        if not fb:
            raise ConfigError("forward_backward_all needs input arrays", file=self._net.loc.file)
        for k, cut in enumerate(fb):
            res = self.forward(blobs=blobs, **cut)
            for n in o:
                o[n].append(res[n].copy())
            res = self.backward(diffs=diffs, **(bb[k] if bb else {}))
            for n in d:
                d[n].append(res[n].copy())
        return ({k: _join(v, bs, total) for k, v in o.items()},
                {k: _join(v, bs, total) for k, v in d.items()})

    def reshape(self) -> None:
        self._net.reshape()

    # -- weights --------------------------------------------------------------------------
    def copy_from(self, path) -> None:
        """Copy weights by layer name from a .caffemodel (binary or HDF5)."""
        from ..io.weights import load_weights
        load_weights(self._net, [str(path)])

    def share_with(self, other: "Net") -> None:
        """Share ``other``'s learnable blobs (data), layer by layer of the same name."""
        src = other._net if isinstance(other, Net) else other
        for name, i in self._net.layer_index.items():
            if name not in src.layer_index:
                continue
            a_blobs = src.layers[src.layer_index[name]].blobs
            b_blobs = self._net.layers[i].blobs
            if len(a_blobs) != len(b_blobs):
                raise ShapeError(f"share_with: layer '{name}' has {len(b_blobs)} blobs here "
                                 f"but {len(a_blobs)} in the other net", layer=name)
            for a, b in zip(a_blobs, b_blobs):
                if a.shape != b.shape:
                    raise ShapeError(f"share_with: layer '{name}' has a blob of shape "
                                     f"{list(b.shape)} here but {list(a.shape)} in the other "
                                     f"net", layer=name)
                b.share_data(a)

    def save(self, path) -> None:
        """Write the weights as a binary .caffemodel."""
        from ..io.weights import save_caffemodel
        save_caffemodel(self._net, str(path))

    def save_hdf5(self, path) -> None:
        from ..io.hdf5_snapshot import save_caffemodel_h5
        save_caffemodel_h5(self._net, str(path))

    def load_hdf5(self, path) -> None:
        from ..io.hdf5_snapshot import load_caffemodel_h5
        from ..io.weights import copy_trained_layers
        copy_trained_layers(self._net, load_caffemodel_h5(str(path)), str(path))

    def clear_param_diffs(self) -> None:
        self._net.clear_param_diffs()

    def set_input_arrays(self, data, labels, layer: str | None = None) -> None:
        data = np.asarray(data)
        labels = np.asarray(labels)
        if data.ndim != 4 or data.dtype != np.float32 or not data.flags.c_contiguous:
            raise ShapeError(f"set_input_arrays: data must be a C-contiguous 4-D float32 "
                             f"array (got {data.ndim}-D {data.dtype})")
        if len(labels) != len(data):
            raise ShapeError(f"set_input_arrays: {len(labels)} labels for {len(data)} items")
        self._net.set_input_arrays(data, labels.reshape(len(labels)), layer)

    # -- callbacks ------------------------------------------------------------------------
    def before_forward(self, fn) -> None:
        self._net.hooks["before_forward"].append(fn)

    def after_forward(self, fn) -> None:
        self._net.hooks["after_forward"].append(fn)

    def before_backward(self, fn) -> None:
        self._net.hooks["before_backward"].append(fn)

    def after_backward(self, fn) -> None:
        self._net.hooks["after_backward"].append(fn)
