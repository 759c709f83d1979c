"""Net: a definition compiled into a static graph of layers (Caffe's Net).

Building a Net filters layers by the NetState rules, orders them, inserts Split layers, creates
every layer and blob, infers all shapes, shares parameters by name, and works out which layers
need backward.  ``init_params=False`` builds the graph for analysis only: shapes and parameter
counts without allocating or filling anything, and without compiling kernels.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from .blob import Blob
from .errors import ConfigError, NetdefError
from .graph import Locator, LayerRef, filter_layers, insert_splits, order_layers
from .layers.base import TEST, TRAIN
from .layers.registry import get_layer_class, layer_types
from .proto import pb

PHASES = {"TRAIN": TRAIN, "TEST": TEST}


@dataclass
class ParamInfo:
    """One learnable blob of the net (the owner of a shared group)."""
    blob: Blob
    layer: str
    index: int           # index among the layer's blobs
    name: str            # ParamSpec name ("" when unnamed)
    lr_mult: float
    decay_mult: float


class Net:
    def __init__(self, definition, phase: int = TEST, *, level: int | None = None,
                 stages=(), dtype=np.float32, input_shapes: dict | None = None,
                 init_params: bool = True, seed: int | None = None, rng=None):
        """``definition``: a :class:`netdef.config.Definition` (for file:line in errors) or a
        plain ``NetParameter``."""
        if isinstance(definition, pb.NetParameter):
            param, self.definition = definition, None
        else:
            param, self.definition = definition.message, definition
        self.param = param
        #: a netdef.backend.cuda.runner.DeviceNet once :meth:`to_device` was called
        self.device = None
        self.loc = Locator(self.definition)
        self.name = param.name
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.init_params = init_params
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.input_shapes = {k: tuple(int(x) for x in v) for k, v in (input_shapes or {}).items()}

        state = pb.NetState()
        state.CopyFrom(param.state)
        state.phase = phase
        if level is not None:
            state.level = level
        state.stage.extend(s for s in stages if s not in state.stage)
        self.state = state

        refs = filter_layers(param, state, self.loc)
        refs = order_layers(refs, self.loc)
        refs = insert_splits(refs)
        self.refs = refs
        self._build(refs)

    # -- construction -------------------------------------------------------------------------
    def _layer_error(self, err: NetdefError, ref: LayerRef, lp) -> NetdefError:
        path = self.loc.layer_path(ref)
        if err.field and path is not None and ref.index is not None:
            parts = []
            for p in err.field.split("."):
                name, _, idx = p.partition("[")
                parts.append(name)
                if idx:
                    parts.append(int(idx.rstrip("]")))
            path = path + tuple(parts)
        line, col = self.loc.where(path)
        return err.located(file=self.loc.file, line=line, col=col, layer=lp.name,
                           layer_type=lp.type)

    def _build(self, refs: list[LayerRef]) -> None:
        self.layers = []
        self.layer_names: list[str] = []
        self.layer_refs: list[LayerRef] = []
        self.blobs: dict[str, Blob] = {}
        self.bottoms: list[list[Blob]] = []
        self.tops: list[list[Blob]] = []
        self.bottom_names: list[list[str]] = []
        self.top_names: list[list[str]] = []
        self.in_place: list[list[bool]] = []
        self.params: list[ParamInfo] = []           # learnable (owner) params
        self.layer_param_owner: list[list[int]] = []  # per layer blob: index into self.params
        #: called with each layer's index once its backward is done (data-parallel sync)
        self.on_layer_backward = None
        #: pycaffe's per-layer callbacks fn(layer_index) (CPU nets)
        self.hooks = {"before_forward": [], "after_forward": [], "before_backward": [],
                      "after_backward": []}
        blob_need_backward: dict[str, bool] = {}
        bottom_need_backward: list[list[bool]] = []
        layer_need_backward: list[bool] = []
        self.loss_weights: list[list[float]] = []
        available: dict[str, None] = {}
        named_params: dict[str, int] = {}
        seen_names: dict[str, LayerRef] = {}
        used_shapes: set[str] = set()
        learnable_names: dict[str, int | None] = {}
        #: shape-only nets (summary): layers whose tops cannot be known without running a
        #: Python layer's module (and every layer after one), left out of the net
        self.unknown_layers: list[tuple[str, str]] = []
        unknown_blobs: set[str] = set()

        for ref in refs:
            lp = ref.param
            seen_names.setdefault(lp.name, ref)  # Caffe allows repeats (first wins)
            cls = get_layer_class(lp.type)
            if cls is None:
                known = layer_types()
                close = difflib.get_close_matches(lp.type, known, n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                what = "has no type" if not lp.type else f"unknown layer type '{lp.type}'"
                raise self.loc.error(f"{what}{hint}", self.loc.layer_path(ref, "type"),
                                     layer=lp.name, layer_type=lp.type or None)
            if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
                raise self.loc.error(
                    f"propagate_down must be given once per bottom ({len(lp.bottom)} bottoms, "
                    f"{len(lp.propagate_down)} values)", self.loc.layer_path(ref, "propagate_down"),
                    layer=lp.name, layer_type=lp.type)
            if getattr(cls, "is_data", False) or lp.type == "Input":
                lp = self._apply_input_shapes(lp, used_shapes)
            try:
                layer = cls(lp, phase=self.phase, dtype=self.dtype, rng=self.rng,
                            init_params=self.init_params)
            except NetdefError as e:
                raise self._layer_error(e, ref, lp) from None
            layer.input_shapes = {t: self.input_shapes[t] for t in lp.top
                                  if t in self.input_shapes}
            if self.definition is not None and self.definition.file:
                import os
                layer.base_dir = os.path.dirname(os.path.abspath(self.definition.file))
            if self._shape_unknown(layer, lp, unknown_blobs, used_shapes):
                self.unknown_layers.append((lp.name, lp.type))
                unknown_blobs.update(lp.top)
                for t in lp.top:
                    available.pop(t, None)
                continue
            # bottoms
            bottoms, bnames, bneed = [], [], []
            for j, b in enumerate(lp.bottom):
                blob = self.blobs[b]
                bottoms.append(blob)
                bnames.append(b)
                need = blob_need_backward.get(b, False)
                if len(lp.propagate_down):
                    need = need and bool(lp.propagate_down[j])
                bneed.append(need)
                available.pop(b, None)
            # tops
            tops, tnames, inpl = [], [], []
            for j, t in enumerate(lp.top):
                if j < len(lp.bottom) and lp.bottom[j] == t:
                    if not getattr(cls, "allow_in_place", False):
                        raise self.loc.error(
                            f"{lp.type} cannot compute in place: give top '{t}' a new name",
                            self.loc.layer_path(ref, "top", j), layer=lp.name,
                            layer_type=lp.type)
                    blob = self.blobs[t]
                    inpl.append(True)
                else:
                    blob = Blob((), dtype=self.dtype, name=t)
                    self.blobs[t] = blob
                    inpl.append(False)
                tops.append(blob)
                tnames.append(t)
                available[t] = None
            if getattr(cls, "is_loss", False):
                # Caffe's AutoTopBlobs: a loss layer written without a top still gets one
                needed = max(cls.min_top, cls.exact_num_top)
                while len(tops) < needed:
                    tops.append(Blob((), dtype=self.dtype, name="(automatic)"))
                    tnames.append("(automatic)")
                    inpl.append(False)
            try:
                layer.setup(bottoms, tops)
            except NetdefError as e:
                raise self._layer_error(e, ref, lp) from None
            if layer.blobs:
                # weights are saved and copied by layer name: two learnable layers of one
                # name would write a snapshot that cannot be loaded back (Caffe accepts
                # duplicate names only harmlessly, e.g. BVLC's autoencoder's two "loss")
                if lp.name in learnable_names:
                    l0, _ = self.loc.where(("layer", learnable_names[lp.name]))
                    at = f" (first at line {l0})" if l0 is not None else ""
                    raise self.loc.error(
                        f"another layer with parameters is named '{lp.name}'{at}: weights are "
                        f"saved and copied by layer name, so rename one (include/exclude "
                        f"rules may keep one per phase)", self.loc.layer_path(ref, "name"),
                        layer=lp.name, layer_type=lp.type)
                learnable_names[lp.name] = ref.index
            # parameters
            owners = []
            need_backward = any(bneed)
            if len(lp.param) > len(layer.blobs):
                raise self.loc.error(
                    f"{len(lp.param)} param specs given but {lp.type} has "
                    f"{len(layer.blobs)} parameter blobs", self.loc.layer_path(ref, "param"),
                    layer=lp.name, layer_type=lp.type)
            for j, blob in enumerate(layer.blobs):
                spec = lp.param[j] if j < len(lp.param) else pb.ParamSpec()
                frozen = j < len(layer.param_propagate_down) and \
                    not layer.param_propagate_down[j] and not spec.HasField("lr_mult")
                lr = 0.0 if frozen else spec.lr_mult
                pname = spec.name
                if pname and pname in named_params:
                    k = named_params[pname]
                    owner = self.params[k]
                    if spec.share_mode == pb.ParamSpec.PERMISSIVE:
                        ok = owner.blob.count == blob.count
                        rule = "the same number of elements (PERMISSIVE)"
                    else:
                        ok = owner.blob.shape == blob.shape
                        rule = "the same shape (STRICT; share_mode: PERMISSIVE compares counts)"
                    if not ok:
                        raise self.loc.error(
                            f"cannot share parameter '{pname}': blob {j} has shape "
                            f"{list(blob.shape)} but the owner '{owner.layer}' has "
                            f"{list(owner.blob.shape)}; shared parameters need {rule}",
                            self.loc.layer_path(ref, "param", j), layer=lp.name,
                            layer_type=lp.type)
                    if spec.HasField("lr_mult") and spec.lr_mult != owner.lr_mult:
                        raise self.loc.error(
                            f"shared parameter '{pname}' has lr_mult {spec.lr_mult:g} here but "
                            f"{owner.lr_mult:g} in its owner '{owner.layer}'",
                            self.loc.layer_path(ref, "param", j), layer=lp.name,
                            layer_type=lp.type)
                    if spec.HasField("decay_mult") and spec.decay_mult != owner.decay_mult:
                        raise self.loc.error(
                            f"shared parameter '{pname}' has decay_mult {spec.decay_mult:g} here "
                            f"but {owner.decay_mult:g} in its owner '{owner.layer}'",
                            self.loc.layer_path(ref, "param", j), layer=lp.name,
                            layer_type=lp.type)
                    blob.share_data(owner.blob)
                    blob.share_diff(owner.blob)
                    owners.append(k)
                    lr = owner.lr_mult
                else:
                    k = len(self.params)
                    self.params.append(ParamInfo(blob, lp.name, j, pname, lr,
                                                 spec.decay_mult))
                    if pname:
                        named_params[pname] = k
                    owners.append(k)
                pd = lr != 0
                if j < len(layer.param_propagate_down):
                    layer.param_propagate_down[j] = pd
                need_backward |= pd
            for t in tnames:
                if need_backward:
                    blob_need_backward[t] = True
                else:
                    blob_need_backward.setdefault(t, False)
            self.layers.append(layer)
            self.layer_names.append(lp.name)
            self.layer_refs.append(ref)
            self.bottoms.append(bottoms)
            self.tops.append(tops)
            self.bottom_names.append(bnames)
            self.top_names.append(tnames)
            self.in_place.append(inpl)
            self.layer_param_owner.append(owners)
            bottom_need_backward.append(bneed)
            layer_need_backward.append(need_backward)
            self.loss_weights.append(list(layer.loss_weights))

        unused = set(self.input_shapes) - used_shapes
        if unused:
            tops = sorted(t for ts, lay in zip(self.top_names, self.layers)
                          if getattr(lay, "is_data", False) or lay.type == "Input" for t in ts)
            raise ConfigError(f"--input-shape names {', '.join(sorted(unused))}, which is not "
                              f"a top of a data or Input layer (those are: "
                              f"{', '.join(tops) or 'none'})", file=self.loc.file)

        #: each layer's bottom shapes at its last setup/reshape (forward reshapes on change)
        self._reshaped_at = [[b.shape for b in bs] for bs in self.bottoms]
        self._prune_backward(layer_need_backward, bottom_need_backward, blob_need_backward)
        self.output_names = sorted(available)
        self.layer_index = {}
        for i, n in enumerate(self.layer_names):
            self.layer_index.setdefault(n, i)

    def _shape_unknown(self, layer, lp, unknown_blobs: set, used: set) -> bool:
        """True for a layer left out of a shape-only net: a Python layer that was not imported
        (SKIP) and whose tops --input-shape does not give, or a layer reading such a top."""
        if any(b in unknown_blobs for b in lp.bottom):
            return True
        if not getattr(layer, "skipped", False):
            return False
        if all(t in self.input_shapes for t in lp.top):
            used.update(lp.top)
            return False
        if len(lp.top) and len(lp.loss_weight) == len(lp.top) and all(lp.loss_weight):
            layer.input_shapes = {t: () for t in lp.top}     # a loss: scalars
            return False
        return True

    def _apply_input_shapes(self, lp, used: set):
        """--input-shape overrides the shape of an Input layer's top."""
        if lp.type != "Input":
            used.update(t for t in lp.top if t in self.input_shapes)
            return lp
        hits = [j for j, t in enumerate(lp.top) if t in self.input_shapes]
        if not hits:
            return lp
        new = pb.LayerParameter()
        new.CopyFrom(lp)
        shapes = list(lp.input_param.shape)
        if len(shapes) == 1 and len(lp.top) > 1:
            shapes = shapes * len(lp.top)
        while len(shapes) < len(lp.top):
            shapes.append(pb.BlobShape())
        new.input_param.ClearField("shape")
        for j, t in enumerate(lp.top):
            s = new.input_param.shape.add()
            if t in self.input_shapes:
                s.dim.extend(self.input_shapes[t])
                used.add(t)
            else:
                s.CopyFrom(shapes[j])
        return new

    def _prune_backward(self, layer_need, bottom_need, blob_need) -> None:
        """Caffe's backward pruning: only layers that lead to a loss need backward."""
        under_loss: set[str] = set()
        skip: set[str] = set()
        for i in range(len(self.layers) - 1, -1, -1):
            contributes = False
            skip_pd = True
            for j, t in enumerate(self.top_names[i]):
                if self.loss_weights[i][j] != 0 or t in under_loss:
                    contributes = True
                if t not in skip:
                    skip_pd = False
            if layer_need[i] and skip_pd:
                layer_need[i] = False
                bottom_need[i] = [False] * len(bottom_need[i])
            if not contributes:
                layer_need[i] = False
                bottom_need[i] = [False] * len(bottom_need[i])
            for j, b in enumerate(self.bottom_names[i]):
                if contributes:
                    under_loss.add(b)
                else:
                    bottom_need[i][j] = False
                if not bottom_need[i][j]:
                    skip.add(b)
        if self.param.force_backward:
            for i, layer in enumerate(self.layers):
                layer_need[i] = True
                for j in range(len(bottom_need[i])):
                    bottom_need[i][j] = bottom_need[i][j] or layer.allow_force_backward(j)
                layer.param_propagate_down = [True] * len(layer.blobs)
        self.layer_need_backward = layer_need
        self.bottom_need_backward = bottom_need

    # -- running ------------------------------------------------------------------------------
    def forward(self, start: int = 0, end: int | None = None) -> float:
        """Run layers ``start..end`` (inclusive); returns the weighted loss."""
        if self.device is not None:
            return self.device.forward(start, end)
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        seen = self._reshaped_at
        before, after = self.hooks["before_forward"], self.hooks["after_forward"]
        for i in range(start, end + 1):
            layer, bottoms, tops = self.layers[i], self.bottoms[i], self.tops[i]
            for fn in before:
                fn(i)
            try:
                # Caffe reshapes every layer before its forward: here, every layer whose
                # bottoms changed shape since its last reshape (a new input size, a data layer
                # of mixed-size images, Filter's data-dependent tops)
                shapes = [b.shape for b in bottoms]
                if shapes != seen[i]:
                    layer.reshape(bottoms, tops)
                    seen[i] = shapes
                layer.forward(bottoms, tops)
            except NetdefError as e:      # e.g. a data source that cannot be read
                raise self._layer_error(e, self.layer_refs[i], layer.param) from None
            for j, w in enumerate(self.loss_weights[i]):
                if w:
                    loss += w * float(np.sum(tops[j].data, dtype=np.float64))
            for fn in after:
                fn(i)
        return loss

    def reshape(self) -> None:
        """Re-run every layer's reshape in order after a blob changed shape (pycaffe's
        ``Net.reshape``); source layers (no bottoms) keep the shapes their tops have now."""
        if self.device is not None:
            self.device.reshape()
            return
        for i, (layer, bottoms, tops) in enumerate(zip(self.layers, self.bottoms, self.tops)):
            if not bottoms:
                continue
            try:
                layer.reshape(bottoms, tops)
            except NetdefError as e:
                raise self._layer_error(e, self.layer_refs[i], layer.param) from None
            self._reshaped_at[i] = [b.shape for b in bottoms]

    def backward(self, start: int | None = None, end: int = 0, *, seed: bool = True) -> None:
        """Run backward from layer ``start`` down to ``end`` (inclusive); ``seed=False`` keeps
        the loss tops' diffs as they are (set by the caller) instead of the loss weights."""
        if self.device is not None:
            return self.device.backward(start, end, seed)
        start = len(self.layers) - 1 if start is None else start
        if seed:
            self.seed_loss_diffs()
        hook = self.on_layer_backward
        before, after = self.hooks["before_backward"], self.hooks["after_backward"]
        for i in range(start, end - 1, -1):
            for fn in before:
                fn(i)
            if self.layer_need_backward[i]:
                self.layers[i].backward(self.tops[i], self.bottom_need_backward[i],
                                        self.bottoms[i])
            if hook is not None:
                hook(i)
            for fn in after:
                fn(i)

    def seed_loss_diffs(self) -> None:
        """Top diffs of loss outputs = their loss weights (the objective's gradient)."""
        if self.device is not None:
            return self.device.seed_loss_diffs()
        for i, weights in enumerate(self.loss_weights):
            for j, w in enumerate(weights):
                if w:
                    t = self.tops[i][j]
                    t.diff = np.full(t.shape, w, dtype=self.dtype)

    def to_device(self, device_id: int = 0):
        """Run this net on CUDA device ``device_id`` from now on (blobs get device mirrors;
        layers without a CUDA kernel keep running on the CPU).  Raises
        :class:`netdef.backend.cuda.device.NoDeviceError` when there is no usable GPU."""
        if self.device is None:
            from .backend.cuda.runner import DeviceNet
            self.device = DeviceNet(self, device_id)
        return self.device

    def forward_backward(self) -> float:
        loss = self.forward()
        self.backward()
        return loss

    def clear_param_diffs(self) -> None:
        if self.device is not None:
            return self.device.clear_param_diffs()
        for p in self.params:
            p.blob.zero_diff()

    def set_input_arrays(self, data, labels, layer: str | None = None) -> None:
        """pycaffe's ``Net.set_input_arrays``: hand ``data`` (K, C, H, W) and ``labels`` (K,)
        to the MemoryData layer named ``layer`` (default: the first one)."""
        if layer is None:
            target = next((lay for lay in self.layers if lay.type == "MemoryData"), None)
        else:
            target = self.layers[self.layer_index[layer]] if layer in self.layer_index else None
        if target is None or not hasattr(target, "set_input_arrays"):
            what = f"no MemoryData layer named '{layer}'" if layer else "no MemoryData layer"
            raise ConfigError(f"set_input_arrays: the net has {what}", file=self.loc.file)
        target.set_input_arrays(data, labels)

    # -- queries ------------------------------------------------------------------------------
    def layer_by_name(self, name: str):
        return self.layers[self.layer_index[name]]

    @property
    def outputs(self) -> dict[str, Blob]:
        return {n: self.blobs[n] for n in self.output_names}

    @property
    def input_names(self) -> list[str]:
        return [t for lay, ts in zip(self.layers, self.top_names) if lay.type == "Input"
                for t in ts]

    def locate_layer(self, i: int) -> tuple[str | None, int | None, int | None]:
        line, col = self.loc.where(self.loc.layer_path(self.layer_refs[i]))
        return self.loc.file, line, col
