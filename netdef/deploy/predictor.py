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
from .preprocess import center_crop

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
        self.fuse_conv = FUSE_CONV

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
        idx = {n: i for i, n in enumerate(net.layer_names)}
        self.epilogue = {idx[p]: s for p, r, s in self.fused if p in idx}
        groups = _conv_groups(net, skip, self.epilogue, self.fm.outputs) \
            if self.fuse_conv else []
        chains = _chains(net, skip, groups)
        io, span, consumed = {}, {}, set()
        for chain in chains:
            lo, hi = chain[0].index, chain[-1].last
            for g in chain:
                io[g.index] = ([g.bottom], [g.top])
                span[g.index] = (lo, hi)
                consumed.update(g.consumed)
        planned = plan_net(net, skip | consumed, self.fm.outputs, io, span)
        if planned["arena_bytes"] > MAX_ACTIVATION_BYTES:
            raise ShapeError(f"the model needs {planned['arena_bytes']:,} bytes of activations "
                             f"for this batch (limit {MAX_ACTIVATION_BYTES:,}, "
                             f"NETDEF_MAX_ACTIVATION_BYTES)")
        self.arena = apply_plan(planned)
        self.plan = {k: planned[k] for k in ("arena_bytes", "unplanned_bytes", "values")}
        self.skip = skip | consumed
        self.net = net
        scratch = _Scratch(max(_threads(), _pool_size()))
        heads = {c[0].index: _ChainRunner(c, scratch) for c in chains}
        scratch.allocate()
        for r in heads.values():
            r.bind(scratch)
        self.steps = []
        for layer in net.layers:        # no backward here: no argmax mask, no LRN scale
            if layer.type == "Pooling":
                layer.keep_mask = False
            elif layer.type == "LRN":
                layer.keep_scale = False
        for i in range(len(net.layers)):
            if i in heads:
                self.steps.append((1, heads[i]))
            elif i not in self.skip and i not in io:
                if self.fuse_conv and _DepthwiseRunner.takes(net, i):
                    self.steps.append((1, _DepthwiseRunner(net, i, self.epilogue.get(i))))
                elif self.fuse_conv and _EltwiseRunner.takes(net, i):
                    run = _EltwiseRunner(net, i, self.epilogue.get(i), self.skip)
                    self.steps.append((1, run))
                    if run.relu_layer is not None:
                        self.skip.add(run.relu_layer)
                else:
                    self.steps.append((0, i))
        self.chains = chains
        self._batch = shapes

    def run(self, feeds: dict) -> dict:
        from .numpy_kernels import relu_inplace
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        if shapes != self._batch:
            self._build(shapes)
        net = self.net
        for k, v in feeds.items():
            net.blobs[k].data = v
        layers, bottoms, tops, epilogue = net.layers, net.bottoms, net.tops, self.epilogue
        for kind, i in self.steps:
            if kind:
                i()                 # a chain of fused convolutions, one task per batch block
                continue
            layers[i].forward(bottoms[i], tops[i])
            if i in epilogue:
                relu_inplace(tops[i][0].data, epilogue[i])
        return {o: np.array(net.blobs[o].data) for o in self.fm.outputs}


#: fuse convolution + ReLU + pooling (+ ReLU) for the numba backend (NETDEF_NO_FUSE_CONV=1: off)
FUSE_CONV = not os.environ.get("NETDEF_NO_FUSE_CONV")
#: batch blocks per thread of a chain of fused convolutions
CHAIN_TASKS_PER_THREAD = 2
#: a fused convolution's GEMM takes whole images until it has at least this many columns
FUSED_MIN_COLUMNS = 256


class _ConvGroup:
    """A Convolution (with its fused ReLU) whose output feeds only a MAX / AVE Pooling
    (optionally followed by a ReLU): run as one kernel, the convolution's output never
    materialised.  Or a Convolution (with or without a fused ReLU) and no pooling."""

    def __init__(self, net, index, relu_pre, pool, relu_post, top, consumed):
        self.index, self.conv = index, net.layers[index]
        self.bottom = net.bottoms[index][0]
        self.conv_top = net.tops[index][0]
        self.relu_pre, self.pool, self.relu_post = relu_pre, pool, relu_post
        self.top, self.consumed = top, consumed
        self.last = max([index] + list(consumed))

    def describe(self) -> str:
        parts = [self.conv.name]
        if self.relu_pre is not None:
            parts.append("relu")
        if self.pool is not None:
            parts.append(self.pool.name)
        if self.relu_post is not None:
            parts.append("relu")
        return "+".join(parts)


def _conv_groups(net, skip, epilogue, outputs) -> list:
    from ..backend.cpu import gemm as G
    from .memplan import _root
    if not G.AVAILABLE:
        return []
    readers: dict = {}
    for i, lay in enumerate(net.layers):
        if i in skip:
            continue
        for b in net.bottoms[i]:
            readers.setdefault(id(_root(b)), []).append(i)
    out_roots = {id(_root(net.blobs[o])) for o in list(outputs) + list(net.output_names)
                 if o in net.blobs}
    groups = []
    taken: set = set()
    for i, lay in enumerate(net.layers):
        if i in skip or i in taken or lay.type != "Convolution" or len(net.bottoms[i]) != 1 \
                or len(net.tops[i]) != 1:
            continue
        x = net.bottoms[i][0]
        if x.dtype not in (np.float32, np.float64) or len(x.shape) != 4 \
                or lay._path() not in ("gemm", "pointwise"):
            continue
        relu_pre = epilogue.get(i)
        c = id(_root(net.tops[i][0]))
        rd = [k for k in readers.get(c, []) if k != i]
        pool = relu_post = None
        top, consumed = net.tops[i][0], []
        if c not in out_roots and len(rd) == 1 and rd[0] > i:
            j = rd[0]
            pl = net.layers[j]
            pp = pl.param.pooling_param if pl.type == "Pooling" else None
            if pp is not None and len(net.tops[j]) == 1 and pl.method in (pp.MAX, pp.AVE) \
                    and id(_root(net.bottoms[j][0])) == c:
                pool, top, consumed = pl, net.tops[j][0], [j]
                p = id(_root(top))
                rd2 = [k for k in readers.get(p, []) if k != j]
                if rd2 and min(rd2) > j:
                    k = min(rd2)
                    rl = net.layers[k]
                    if rl.type == "ReLU" and len(net.bottoms[k]) == 1 \
                            and len(net.tops[k]) == 1 and k not in taken:
                        in_place = id(_root(net.tops[k][0])) == p
                        if in_place or (len(rd2) == 1 and p not in out_roots):
                            relu_post = float(rl.param.relu_param.negative_slope)
                            top = net.tops[k][0]
                            consumed = [j, k]
        taken.update(consumed)
        groups.append(_ConvGroup(net, i, relu_pre, pool, relu_post, top, consumed))
    return groups


def _chains(net, skip, groups) -> list:
    """Fused groups that run back to back (nothing else runs between them) on the same batch
    size: one set of tasks runs the whole chain, each task its block of the batch."""
    by_index = {g.index: g for g in groups}
    consumed = {k for g in groups for k in g.consumed}
    chains, cur = [], []
    for i in range(len(net.layers)):
        if i in skip or i in consumed:
            continue
        g = by_index.get(i)
        if g is not None and (not cur or cur[-1].bottom.shape[0] == g.bottom.shape[0]):
            cur.append(g)
            continue
        if cur:
            chains.append(cur)
        cur = [g] if g is not None else []
    if cur:
        chains.append(cur)
    return chains


def _threads() -> int:
    import numba
    return numba.get_num_threads()


def _pool_size() -> int:
    """Threads in Numba's pool: every thread id a parallel region can see is below it."""
    import numba
    return numba.config.NUMBA_NUM_THREADS


def _slope(f, negative_slope):
    """A fused ReLU as the kernels take it: its slope, 1 when there is none."""
    return f(1.0 if negative_slope is None else negative_slope)


class _Scratch:
    """The per-thread workspaces of every fused group of a net, shared: the groups run one
    after the other, so each kind of buffer is one block of ``slots`` rows (one per thread of
    Numba's pool) as long as the largest group needs, and every group takes a C-contiguous
    view of it.  Groups ask (:meth:`request`) while the runners are built, then
    :meth:`allocate` makes the blocks."""

    def __init__(self, slots: int):
        self.slots = slots
        self.need: dict = {}
        self.blocks: dict = {}

    def request(self, name: str, size: int, dtype) -> tuple:
        key = (name, np.dtype(dtype).str)
        self.need[key] = max(self.need.get(key, 1), int(size))
        return key, max(1, int(size))

    def allocate(self) -> None:
        self.blocks = {k: np.zeros(self.slots * n, np.dtype(k[1])) for k, n in self.need.items()}

    def view(self, request: tuple) -> np.ndarray:
        key, size = request
        return self.blocks[key][:self.slots * size].reshape(self.slots, size)


class _ChainRunner:
    """Runs a chain of :class:`_ConvGroup`, each group in turn as one parallel region of
    ``CHAIN_TASKS_PER_THREAD * threads`` tasks (a block of the batch each) -- or, for a batch
    smaller than the threads, ``threads`` tasks of a block of its output channels each (every
    channel of a group is written before the next group reads).  The workspaces have one row
    per thread of Numba's pool, which the tasks index by thread id."""

    def __init__(self, chain, scratch):
        from ..backend.cpu import gemm as G
        from ..backend.cpu import microkernel as MK
        from ..backend.cpu.workspace import GEMM_COL_BYTES
        self.chain = chain
        n = chain[0].bottom.shape[0]
        self.nt = nt = max(1, _threads())
        self.ntasks = ntasks = 1 if nt == 1 else min(n, CHAIN_TASKS_PER_THREAD * nt)
        #: output-channel blocks per batch block (> 1 when the batch cannot feed the threads)
        self.cb = -(-nt // n) if n < nt else 1
        per = -(-n // ntasks)
        self.args = []
        #: per group, the (mr, nv, lanes, flat) of its register tiles, or None (im2col + GEMM)
        self.tiles = []
        for g in chain:
            conv = g.conv
            x, y = g.bottom, g.conv_top
            dtype = x.dtype
            o, oh, ow = y.shape[1:]
            L = oh * ow
            wt = conv.blobs[0].data
            ckk = wt[0].size * conv.group
            itemsize = np.dtype(dtype).itemsize
            chunk = max(1, min(per, -(-FUSED_MIN_COLUMNS // L),
                               GEMM_COL_BYTES // max(1, ckk * L * itemsize)))
            kh, kw, ph, pw, sh, sw, dh, dw = conv.geom
            pointwise = conv._path() == "pointwise"
            hp, wp = G.padded_size(x.shape[2], x.shape[3], *conv.geom, oh, ow)
            pad = x.shape[1] * hp * wp if (hp, wp) != tuple(x.shape[2:]) else 0
            tiles = MK.tiles_for(conv, x, hp, wp, oh, ow, flat=True, images=chunk)
            self.tiles.append(tiles)
            if tiles:
                mr, nv, lanes, flat = tiles
                ap = MK.pack_weights(wt.reshape(o, -1), mr)
                if flat:        # chunk images a row, as for the GEMM
                    lp = MK.padded_row(chunk * L, nv, lanes)
                    offs = np.zeros(0, np.int64)
                    sizes = (ckk * chunk * L + lp - chunk * L + lanes, -(-o // mr) * mr * lp,
                             pad)
                else:
                    owp = MK.padded_row(ow, nv, lanes)
                    offs = MK.tap_offsets(x.shape[1], kh, kw, dh, dw, hp, wp)
                    sizes = (1, -(-o // mr) * mr * oh * owp,
                             x.shape[1] * hp * wp + owp - ow + lanes)
                    chunk = 1
            else:
                mr = nv = lanes = 0
                flat = False
                ap, offs = np.zeros(0, dtype), np.zeros(0, np.int64)
                sizes = (ckk * chunk * L, o * chunk * L, pad)
            col, out, xp = (scratch.request(k, n, dtype) for k, n in zip(("col", "out", "xp"),
                                                                         sizes))
            bias = conv.blobs[1].data if conv.bias_term else np.zeros(o, dtype)
            f = np.dtype(dtype).type
            if g.pool is not None:
                pl = g.pool
                pool = 1 if pl.method == pl.param.pooling_param.MAX else 2
                pg = (pl.kh, pl.kw, pl.ph, pl.pw, pl.sh, pl.sw)
            else:
                pool, pg = 0, (1, 1, 0, 0, 1, 1)
            self.args.append((
                wt.reshape(o, -1), bias, (kh, kw, ph, pw, sh, sw, dh, dw, conv.group,
                                          pointwise, chunk, oh, ow, _slope(f, g.relu_pre),
                                          pool) + pg +
                (_slope(f, g.relu_post), ap, offs, mr, nv, lanes, flat), col, out, xp, g))

    def bind(self, scratch) -> None:
        """Replace each group's workspace requests by views of the allocated blocks."""
        self.args = [a[:3] + tuple(scratch.view(r) for r in a[3:6]) + a[6:]
                     for a in self.args]

    def __call__(self):
        from ..backend.cpu import fused as F
        from ..backend.cpu import gemm as G
        ntasks, cb = self.ntasks, self.cb
        with G.single_threaded_blas():
            for wv, bias, geom, col, out, xp, g in self.args:
                F.conv_fused_run(ntasks, cb, g.bottom.data, wv, bias, *geom, col, out, xp,
                                 g.top.data)


class _DepthwiseRunner:
    """A depthwise Convolution (``group == channels``) and its fused ReLU as ``threads``
    tasks of consecutive output planes."""

    @staticmethod
    def takes(net, i) -> bool:
        lay = net.layers[i]
        return lay.type == "Convolution" and lay._path() == "depthwise" \
            and net.bottoms[i][0].data.dtype == np.float32

    def __init__(self, net, i, relu):
        conv = net.layers[i]
        self.x, self.y = net.bottoms[i][0], net.tops[i][0]
        o, c = conv.num_output, conv.channels
        bias = conv.blobs[1].data if conv.bias_term else np.zeros(0, np.float32)
        self.args = (conv.blobs[0].data, *conv.geom, o // c, bias,
                     _slope(np.float32, relu))
        self.nt = max(1, _threads())

    def __call__(self):
        from ..backend.cpu.vision import depthwise_relu
        depthwise_relu(self.nt, self.x.data, *self.args, self.y.data)


class _EltwiseRunner:
    """An Eltwise SUM of two float32 blobs and the ReLU after it (its fused epilogue, or the
    in-place ReLU layer that follows, skipped then) in one parallel pass: the residual add of
    a ResNet, which numpy ran as a copy and an add on one thread, then a ReLU pass."""

    @staticmethod
    def takes(net, i) -> bool:
        lay = net.layers[i]
        return lay.type == "Eltwise" and lay.op == "SUM" and len(net.bottoms[i]) == 2 and \
            all(b.data.dtype == np.float32 for b in net.bottoms[i] + net.tops[i])

    def __init__(self, net, i, relu, skip):
        lay = net.layers[i]
        (self.a, self.b), self.y = net.bottoms[i], net.tops[i][0]
        self.relu_layer = None
        j = i + 1
        if relu is None and j < len(net.layers) and j not in skip and \
                net.layers[j].type == "ReLU" and len(net.bottoms[j]) == 1 and \
                net.bottoms[j][0] is self.y and len(net.tops[j]) == 1 and \
                net.tops[j][0] is self.y:
            relu, self.relu_layer = net.layers[j].slope, j
        c0, c1 = (float(c) for c in lay.coeff[:2])
        self.args = (np.float32(c0), np.float32(c1), relu is not None,
                     np.float32(0.0 if relu is None else relu))
        self.nt = max(1, _threads())

    def __call__(self):
        from ..backend.cpu.utility import eltwise_sum_relu
        eltwise_sum_relu(self.nt, self.a.data, self.b.data, *self.args, self.y.data)


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
        y0, x0 = (ih - h) // 2, (iw - w) // 2          # preprocess.center_crop's offset
        x = np.ascontiguousarray(center_crop(a[None], (h, w))[0].transpose(2, 0, 1))
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
