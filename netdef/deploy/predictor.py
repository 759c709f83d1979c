"""Run a frozen model: ``netdef.deploy.load(path).predict(batch)``.

Two backends compute the same numbers:

* ``numba`` — netdef's own layers (a :class:`netdef.net.Net` built from the frozen
  definition), fused ReLUs run as their producer's epilogue, and every activation lives in one
  arena laid out by :mod:`netdef.deploy.memplan` (blobs whose lifetimes do not overlap share
  bytes);
* ``numpy`` — :mod:`netdef.deploy.numpy_kernels`, used where Numba is not installed (the
  ``netdef[deploy]`` extra needs only numpy and protobuf); each activation is released after
  its last reader, per the same liveness.

``backend="auto"`` picks numba when it imports.  Nothing here imports Numba, netdef's layers or
the config machinery unless the numba backend is chosen.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import ConfigError, FileFormatError, ShapeError
from .frozen import FrozenModel, blob_array, read_frozen

#: refuse to plan more activation memory than this (bytes); NETDEF_MAX_ACTIVATION_BYTES
MAX_ACTIVATION_BYTES = int(os.environ.get("NETDEF_MAX_ACTIVATION_BYTES", str(16 << 30)))


def numba_available() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def load(path: str, *, backend: str = "auto", allow_python_layers: bool = False) \
        -> Predictor:
    """Load a frozen model (``netdef freeze``) for inference."""
    return Predictor(read_frozen(path, allow_python_layers=allow_python_layers),
                     backend=backend)


# -- backends -----------------------------------------------------------------------------------
class _NumbaRunner:
    name = "numba"

    def __init__(self, fm: FrozenModel):
        self.fm = fm
        self.definition = fm.definition()
        self.fused = [(f.layer, f.activation, float(f.negative_slope)) for f in fm.deploy.fused]
        self._batch = None
        self.plan = None

    def _build(self, shapes: dict) -> None:
        from ..net import Net
        from .memplan import apply_plan, fused_skip, plan_net
        net = Net(self.definition, 1, input_shapes=shapes, init_params=False)
        for name, lay in zip(net.layer_names, net.layers):
            arrays = self.fm.weights.get(name, [])
            if len(arrays) != len(lay.blobs):
                raise FileFormatError(f"layer '{name}' has {len(arrays)} blobs but its "
                                      f"{lay.type} needs {len(lay.blobs)}", file=self.fm.path)
            for j, (a, b) in enumerate(zip(arrays, lay.blobs)):
                if tuple(a.shape) != tuple(b.shape):
                    raise FileFormatError(f"layer '{name}' blob {j} has shape {list(a.shape)} "
                                          f"but the layer needs {list(b.shape)}",
                                          file=self.fm.path)
                b.data = a
            lay.param_propagate_down = [False] * len(lay.blobs)
        skip = fused_skip(net, self.fused)
        planned = plan_net(net, skip, self.fm.outputs)
        if planned["arena_bytes"] > MAX_ACTIVATION_BYTES:
            raise ShapeError(f"the model needs {planned['arena_bytes']:,} bytes of activations "
                             f"for this batch (limit {MAX_ACTIVATION_BYTES:,}, "
                             f"NETDEF_MAX_ACTIVATION_BYTES)")
        self.arena = apply_plan(planned)
        self.plan = {k: planned[k] for k in ("arena_bytes", "unplanned_bytes", "values")}
        idx = {n: i for i, n in enumerate(net.layer_names)}
        self.epilogue = {idx[p]: s for p, r, s in self.fused if p in idx}
        self.skip = skip
        self.net = net
        self._batch = shapes

    def run(self, feeds: dict) -> dict:
        from .numpy_kernels import relu_inplace
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        if shapes != self._batch:
            self._build(shapes)
        net = self.net
        for k, v in feeds.items():
            net.blobs[k].data = v
        for i, lay in enumerate(net.layers):
            if i in self.skip:
                continue
            lay.forward(net.bottoms[i], net.tops[i])
            if i in self.epilogue:
                relu_inplace(net.tops[i][0].data, self.epilogue[i])
        return {o: np.array(net.blobs[o].data) for o in self.fm.outputs}


class _NumpyRunner:
    name = "numpy"

    def __init__(self, fm: FrozenModel):
        from .numpy_kernels import KERNELS
        self.fm = fm
        layers = [lp for lp in fm.net.layer]
        self.layers = layers
        self.fused = {f.activation: (f.layer, float(f.negative_slope)) for f in fm.deploy.fused}
        self.epilogue = {f.layer: float(f.negative_slope) for f in fm.deploy.fused}
        known: set[str] = set()
        self.last_read: dict[str, int] = {}
        for i, lp in enumerate(layers):
            if lp.type != "Input" and lp.type not in KERNELS:
                raise ConfigError(f"layer type {lp.type} has no numpy kernel: install numba "
                                  f"(pip install numba) to run this model", layer=lp.name,
                                  layer_type=lp.type, file=fm.path)
            for b in lp.bottom:
                if b not in known:
                    raise FileFormatError(f"bottom '{b}' is not produced by an earlier layer",
                                          file=fm.path, layer=lp.name)
                self.last_read[b] = i
            known.update(lp.top)
        self.plan = None

    def run(self, feeds: dict) -> dict:
        from .numpy_kernels import KERNELS, relu_inplace
        env = dict(feeds)
        outputs = set(self.fm.outputs)
        weights = self.fm.weights
        for i, lp in enumerate(self.layers):
            if lp.type == "Input":
                continue
            if lp.name in self.fused:
                env[lp.top[0]] = env[lp.bottom[0]]      # already rectified by its producer
            else:
                xs = [env[b] for b in lp.bottom]
                try:
                    ys = KERNELS[lp.type](lp, weights.get(lp.name, []), xs)
                except (ShapeError, ConfigError) as e:
                    raise e.located(layer=lp.name, layer_type=lp.type) from None
                if lp.name in self.epilogue:
                    ys[0] = np.array(ys[0], np.float32)
                    relu_inplace(ys[0], self.epilogue[lp.name])
                for t, y in zip(lp.top, ys):
                    env[t] = y
            for b in set(lp.bottom):   # release what nothing reads any more
                if self.last_read.get(b) == i and b not in outputs and b not in lp.top:
                    env.pop(b, None)
        return {o: np.array(env[o], np.float32) for o in self.fm.outputs}


# -- the predictor ------------------------------------------------------------------------------
class Predictor:
    """A loaded frozen model.  ``predict(batch)`` -> {output name: array}."""

    def __init__(self, fm: FrozenModel, backend: str = "auto"):
        self.model = fm
        if backend == "auto":
            backend = "numba" if numba_available() else "numpy"
        if backend == "numba":
            if not numba_available():
                raise ConfigError("backend 'numba' needs the numba package (pip install numba)")
            self.runner = _NumbaRunner(fm)
        elif backend == "numpy":
            self.runner = _NumpyRunner(fm)
        else:
            raise ConfigError(f"backend must be auto, numba or numpy, not '{backend}'")
        self.backend = backend
        self.inputs = [i.name for i in fm.deploy.input]
        self.outputs = list(fm.deploy.output)
        self.labels = list(fm.deploy.label)
        self._input = {i.name: i for i in fm.deploy.input}

    def input_shape(self, name: str | None = None) -> tuple[int, ...]:
        return tuple(int(d) for d in self._input[name or self.inputs[0]].shape.dim)

    def preprocessing(self, name: str | None = None) -> dict:
        m = self._input[name or self.inputs[0]]
        return {"shape": list(self.input_shape(m.name)), "scale": m.scale,
                "mean_value": list(m.mean_value), "mean_file": m.HasField("mean"),
                "channel_order": m.channel_order or None}

    # -- preprocessing ---------------------------------------------------------------------
    def preprocess(self, images, input: str | None = None) -> np.ndarray:
        """Raw images -> the net's input batch (N x C x H x W float32).

        ``images``: one H x W (gray) or H x W x C array (RGB or RGBA, uint8 values 0..255), a
        list of them, or an N x H x W x C array.  Applies, as Caffe's DataTransformer does:
        channel order (RGB -> BGR for Caffe-trained color nets; color -> gray with ITU-R 601
        weights), a centre crop when the image is larger than the input, the mean (image or
        values), then the scale."""
        m = self._input[input or self.inputs[0]]
        shape = self.input_shape(m.name)
        if len(shape) != 4:
            raise ShapeError(f"input '{m.name}' is not an image input (shape {list(shape)})")
        if isinstance(images, np.ndarray) and images.ndim == 4:
            images = list(images)
        elif not isinstance(images, (list, tuple)):
            images = [images]
        mean = blob_array(m.mean) if m.HasField("mean") else None
        if mean is not None and mean.ndim == 4:
            mean = mean[0]
        return np.stack([self._one(np.asarray(im), shape[1:], m, mean) for im in images])

    @staticmethod
    def _one(a, chw, m, mean) -> np.ndarray:
        c, h, w = chw
        if a.ndim == 2:
            a = a[:, :, None]
        elif a.ndim == 3 and a.shape[0] == c and a.shape[2] not in (1, 3, 4):
            a = a.transpose(1, 2, 0)        # C x H x W given (e.g. an MNIST IDX array)
        if a.ndim != 3:
            raise ShapeError(f"an image is H x W or H x W x C, not shape {list(a.shape)}")
        a = a.astype(np.float32)
        if a.shape[2] == 4:
            a = a[:, :, :3]
        if c == 1 and a.shape[2] == 3:
            a = (a[:, :, 0:1] * np.float32(0.299) + a[:, :, 1:2] * np.float32(0.587)
                 + a[:, :, 2:3] * np.float32(0.114))
        elif c == 3 and a.shape[2] == 1:
            a = np.repeat(a, 3, axis=2)
        if a.shape[2] != c:
            raise ShapeError(f"the image has {a.shape[2]} channels, the model takes {c}")
        if (m.channel_order or "") == "BGR":
            a = a[:, :, ::-1]
        ih, iw = a.shape[:2]
        if ih < h or iw < w:
            raise ShapeError(f"the image is {ih}x{iw}, smaller than the model's {h}x{w} input "
                             f"(resize it first)")
        y0, x0 = (ih - h) // 2, (iw - w) // 2
        x = np.ascontiguousarray(a[y0:y0 + h, x0:x0 + w].transpose(2, 0, 1))
        if mean is not None:
            my, mx = (mean.shape[1] - h) // 2, (mean.shape[2] - w) // 2
            if mean.shape[1] == ih and mean.shape[2] == iw:
                my, mx = y0, x0
            x = x - mean[:, my:my + h, mx:mx + w]
        elif len(m.mean_value):
            mv = np.asarray(m.mean_value, np.float32)
            x = x - (mv.reshape(-1, 1, 1) if mv.size > 1 else mv[0])
        return (x * np.float32(m.scale)).astype(np.float32)

    # -- inference -------------------------------------------------------------------------
    def _feed(self, name: str, x) -> np.ndarray:
        x = np.asarray(x)
        shape = self.input_shape(name)
        if x.dtype == np.uint8:
            return self.preprocess(x if x.ndim != len(shape) else list(x), name)
        x = np.asarray(x, np.float32)
        if x.ndim == len(shape) - 1:
            x = x[None]
        if x.ndim != len(shape) or tuple(x.shape[1:]) != shape[1:]:
            raise ShapeError(f"input '{name}' takes N x {' x '.join(map(str, shape[1:]))} "
                             f"(preprocessed float) or raw uint8 images, not shape "
                             f"{list(x.shape)}")
        if x.shape[0] == 0:
            raise ShapeError("empty batch")
        return np.ascontiguousarray(x)

    def predict(self, batch) -> dict:
        """``batch``: preprocessed float array(s) N x C x H x W (or one C x H x W item), raw
        uint8 images (preprocessed here), or a dict input name -> such arrays.  Returns
        {output name: float32 array}."""
        if isinstance(batch, dict):
            unknown = set(batch) - set(self.inputs)
            if unknown:
                raise ConfigError(f"unknown input {', '.join(sorted(unknown))} (inputs: "
                                  f"{', '.join(self.inputs)})")
            feeds = {k: self._feed(k, v) for k, v in batch.items()}
        else:
            if len(self.inputs) != 1:
                raise ConfigError(f"the model has {len(self.inputs)} inputs: pass a dict")
            feeds = {self.inputs[0]: self._feed(self.inputs[0], batch)}
        missing = set(self.inputs) - set(feeds)
        if missing:
            raise ConfigError(f"missing input {', '.join(sorted(missing))}")
        return self.runner.run(feeds)

    def top_k(self, vector, k: int = 5) -> list[dict]:
        v = np.asarray(vector, np.float64).reshape(-1)
        k = max(1, min(int(k), v.size))
        idx = np.argsort(-v, kind="stable")[:k]
        out = []
        for i in idx:
            d = {"index": int(i)}
            if i < len(self.labels):
                d["label"] = self.labels[i]
            d["score"] = float(v[i])
            out.append(d)
        return out

    @property
    def report(self) -> list[dict]:
        import json
        raw = self.model.deploy.report_json
        return json.loads(raw) if raw else []
