"""``netdef freeze``: turn a train/val (or deploy) definition and its weights into one frozen
inference model, through named graph passes, each measured before/after.

Passes (in order; each is a function ``(model) -> list of notes``):

* ``strip_training`` — keep the TEST-phase layers; data layers become an ``Input`` of the
  deploy shape (batch 1 unless ``--input-shape`` says otherwise) and their ``transform_param``
  becomes the stored preprocessing; label tops, Accuracy, Silence and loss layers go, a
  ``SoftmaxWithLoss`` becomes ``Softmax`` "prob" (``SigmoidCrossEntropyLoss``: ``Sigmoid``);
  the weights are copied by layer name, as Caffe does.
* ``remove_dropout`` — Dropout is the identity at inference.
* ``fold_batchnorm`` — BatchNorm (with global statistics), and a Scale right after it, become
  per-channel weights and bias of the Convolution / InnerProduct before it when that layer's
  output feeds only the BatchNorm; elsewhere the BatchNorm becomes one affine Scale.
* ``fold_scale_bias`` — chains of learned per-channel Scale / Bias merge into one, and fold
  into a preceding Convolution / InnerProduct.
* ``remove_unused`` — layers whose outputs nothing uses.
* ``fuse_relu`` — a ReLU whose input comes only from a Convolution / InnerProduct runs as that
  step's epilogue, in its output buffer (the ReLU layer stays in the file for Caffe; the
  pairing is stored in ``netdef_deploy.fused``).
* ``plan_memory`` — activation buffers shared between blobs whose lifetimes do not overlap
  (see :mod:`netdef.deploy.memplan`); the predictor uses the same plan.

All arithmetic of the folds is float64, rounded to float32 once.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import ConfigError, FileFormatError, NetdefError
from ..proto import pb

TRAINING_ONLY = {"Accuracy", "Silence"}
AFFINE_PRODUCERS = {"Convolution", "InnerProduct"}
INFERENCE_FORM = {"SoftmaxWithLoss": "Softmax", "SigmoidCrossEntropyLoss": "Sigmoid"}


# -- the working model ---------------------------------------------------------------------------
class WL:
    """A working layer: its LayerParameter (no blobs) and its blobs as float arrays."""
    __slots__ = ("blobs", "lp")

    def __init__(self, lp, blobs=None):
        self.lp = lp
        self.blobs = list(blobs or [])

    @property
    def type(self):
        return self.lp.type

    @property
    def name(self):
        return self.lp.name


@dataclass
class DeployInput:
    name: str
    shape: tuple
    scale: float = 1.0
    mean_value: list = field(default_factory=list)
    mean: np.ndarray | None = None
    channel_order: str = ""


@dataclass
class Model:
    name: str
    layers: list
    inputs: list          # DeployInput
    outputs: list         # blob names
    fused: list = field(default_factory=list)   # (producer, relu, negative_slope)
    plan: dict | None = None

    def to_proto(self, blobs: bool = True):
        net = pb.NetParameter()
        net.name = self.name
        for w in self.layers:
            lp = net.layer.add()
            lp.CopyFrom(w.lp)
            del lp.blobs[:]
            if blobs:
                for a in w.blobs:
                    bp = lp.blobs.add()
                    bp.shape.dim.extend(int(d) for d in a.shape)
                    bp.data.extend(np.asarray(a, np.float32).reshape(-1).tolist())
        return net


# -- graph helpers (names with in-place writes: a value lives until the name is rewritten) ------
def _consumers(layers, i, name):
    """Layers after ``i`` that read the value ``name`` written by layer ``i``, and whether
    that value survives to the end of the net (no later writer)."""
    out = []
    for k in range(i + 1, len(layers)):
        lp = layers[k].lp
        if name in lp.bottom:
            out.append(k)
        if name in lp.top:
            return out, False
    return out, True


def _producer(layers, k, name):
    """(index, top index) of the layer whose value ``name`` layer ``k`` reads."""
    for p in range(k - 1, -1, -1):
        tops = list(layers[p].lp.top)
        if name in tops:
            return p, tops.index(name)
    return None, None


def _only_consumer(model, p, j, k) -> bool:
    name = model.layers[p].lp.top[j]
    cons, to_end = _consumers(model.layers, p, name)
    return cons == [k] and not (to_end and name in model.outputs)


def _touched_between(layers, a, b, name) -> bool:
    return any(name in layers[m].lp.bottom or name in layers[m].lp.top for m in range(a + 1, b))


def _merge_into_producer(model, p, j, k) -> bool:
    """Remove layer ``k`` (one top) by letting producer ``p`` write ``k``'s top directly.
    The caller has already updated ``p`` to compute what ``k`` computed."""
    layers = model.layers
    t = layers[k].lp.top[0]
    if t != layers[p].lp.top[j] and _touched_between(layers, p, k, t):
        return False
    layers[p].lp.top[j] = t
    del layers[k]
    return True


def _can_merge(model, p, j, k) -> bool:
    layers = model.layers
    if not _only_consumer(model, p, j, k):
        return False
    t = layers[k].lp.top[0]
    return t == layers[p].lp.top[j] or not _touched_between(layers, p, k, t)


def _remove_identity(model, k) -> str | None:
    """Remove a one-bottom one-top identity layer; returns how, or None when it must stay."""
    layers = model.layers
    lp = layers[k].lp
    b, t = lp.bottom[0], lp.top[0]
    if b == t:
        del layers[k]
        return "in place"
    p, j = _producer(layers, k, b)
    if p is not None and layers[p].type != "Input" and len(layers[p].lp.top) == 1 \
            and _can_merge(model, p, j, k):
        _merge_into_producer(model, p, j, k)
        return f"'{layers[p].name}' now writes '{t}'"
    cons, to_end = _consumers(layers, k, t)
    if to_end and t in model.outputs:
        return None
    last = cons[-1] if cons else k
    if any(b in layers[m].lp.top for m in range(k + 1, last)):
        return None
    for m in cons:
        bl = layers[m].lp.bottom
        for q in range(len(bl)):
            if bl[q] == t:
                bl[q] = b
    del layers[k]
    return f"readers of '{t}' read '{b}'"


# -- affine (per-channel) layers -------------------------------------------------------------
def _bn_affine(w: WL):
    """(a, c) with BatchNorm(x) = a * x + c per channel, or None (batch statistics)."""
    p = w.lp.batch_norm_param
    if p.HasField("use_global_stats") and not p.use_global_stats:
        return None
    if len(w.blobs) != 3:
        return None
    mean, var, sf = (np.asarray(b, np.float64).reshape(-1) for b in w.blobs)
    f = 0.0 if sf[0] == 0 else 1.0 / sf[0]
    a = 1.0 / np.sqrt(var * f + float(p.eps))
    return a, -mean * f * a


def _sb_affine(w: WL):
    """(a, c) of a learned Scale/Bias on axis 1 with a (C,) or scalar operand, else None."""
    if len(w.lp.bottom) != 1:
        return None
    p = w.lp.scale_param if w.type == "Scale" else w.lp.bias_param
    if not w.blobs:
        return None
    op = np.asarray(w.blobs[0], np.float64)
    if op.ndim == 0 or op.size == 1 and int(p.num_axes) == 0:
        op = op.reshape(())
    elif not (op.ndim == 1 and int(p.axis) == 1 and int(p.num_axes) in (1, -1)):
        return None
    if w.type == "Scale":
        c = np.asarray(w.blobs[1], np.float64).reshape(op.shape) if p.bias_term \
            else np.zeros(op.shape)
        return op, c
    return np.ones(op.shape), op


def _set_scale(w: WL, a, c) -> None:
    """Rewrite ``w`` as a Scale with bias: y = a * x + c (a, c: (C,) or scalars)."""
    a = np.asarray(a, np.float64)
    c = np.asarray(c, np.float64)
    shape = np.broadcast_shapes(a.shape, c.shape)
    lp = pb.LayerParameter()
    lp.name, lp.type = w.lp.name, "Scale"
    lp.bottom.extend(w.lp.bottom)
    lp.top.extend(w.lp.top)
    lp.scale_param.bias_term = True
    if shape == ():
        lp.scale_param.num_axes = 0
    else:
        lp.scale_param.axis = 1
        lp.scale_param.num_axes = 1
    w.lp = lp
    w.blobs = [np.broadcast_to(a, shape).astype(np.float32),
               np.broadcast_to(c, shape).astype(np.float32)]


def _fold_into(prod: WL, a, c) -> bool:
    """Make Convolution/InnerProduct ``prod`` compute a * prod(x) + c; False if it cannot."""
    if prod.type not in AFFINE_PRODUCERS or len(prod.lp.top) != 1:
        return False
    W = np.asarray(prod.blobs[0], np.float64)
    if prod.type == "Convolution":
        n_out = W.shape[0]
        bias_term = prod.lp.convolution_param.bias_term
    else:
        ip = prod.lp.inner_product_param
        if int(ip.axis) != 1:
            return False
        n_out = W.shape[1] if ip.transpose else W.shape[0]
        bias_term = ip.bias_term
    a = np.broadcast_to(np.asarray(a, np.float64), (n_out,))
    c = np.broadcast_to(np.asarray(c, np.float64), (n_out,))
    if prod.type == "InnerProduct" and prod.lp.inner_product_param.transpose:
        W = W * a[None, :]
    else:
        W = W * a.reshape((n_out,) + (1,) * (W.ndim - 1))
    b = np.asarray(prod.blobs[1], np.float64).reshape(-1) if bias_term and \
        len(prod.blobs) > 1 else np.zeros(n_out)
    b = b * a + c
    prod.blobs = [W.astype(np.float32), b.astype(np.float32)]
    if prod.type == "Convolution":
        prod.lp.convolution_param.bias_term = True
    else:
        prod.lp.inner_product_param.bias_term = True
    if len(prod.lp.param) == 1:
        prod.lp.param.add()
    return True


def _fold_affine_back(model, k, a, c) -> str | None:
    """Try to fold affine layer ``k`` (a*x + c) into the Convolution/InnerProduct before it."""
    layers = model.layers
    p, j = _producer(layers, k, layers[k].lp.bottom[0])
    if p is None or layers[p].type not in AFFINE_PRODUCERS or len(layers[p].lp.top) != 1:
        return None
    if layers[p].type == "InnerProduct" and int(layers[p].lp.inner_product_param.axis) != 1:
        return None
    if not _can_merge(model, p, j, k):
        return None
    name = layers[p].name
    if not _fold_into(layers[p], a, c):
        return None
    _merge_into_producer(model, p, j, k)
    return name


# -- passes -----------------------------------------------------------------------------------
def pass_remove_dropout(model) -> list[str]:
    notes = []
    k = 0
    while k < len(model.layers):
        w = model.layers[k]
        if w.type == "Dropout" and len(w.lp.bottom) == 1 and len(w.lp.top) == 1:
            how = _remove_identity(model, k)
            if how is not None:
                notes.append(f"removed {w.name} ({how})")
                continue
            notes.append(f"kept {w.name} (its output cannot be renamed)")
        k += 1
    return notes


def pass_fold_batchnorm(model) -> list[str]:
    notes = []
    k = 0
    while k < len(model.layers):
        w = model.layers[k]
        if w.type != "BatchNorm":
            k += 1
            continue
        aff = _bn_affine(w)
        if aff is None:
            notes.append(f"kept {w.name} (uses batch statistics)")
            k += 1
            continue
        a, c = aff
        parts = [w.name]
        cons, to_end = _consumers(model.layers, k, w.lp.top[0])
        if len(cons) == 1 and model.layers[cons[0]].type == "Scale" \
                and _can_merge(model, k, 0, cons[0]):
            sc = model.layers[cons[0]]
            sa = _sb_affine(sc)
            if sa is not None:
                a, c = a * sa[0], c * sa[0] + sa[1]
                parts.append(sc.name)
                _merge_into_producer(model, k, 0, cons[0])
        _set_scale(model.layers[k], a, c)
        into = _fold_affine_back(model, k, a, c)
        if into is not None:
            notes.append(f"folded {'+'.join(parts)} into {into}")
            continue
        notes.append(f"{'+'.join(parts)} -> one Scale (no Convolution/InnerProduct before it "
                     f"that feeds only it)")
        k += 1
    return notes


def pass_fold_scale_bias(model) -> list[str]:
    notes = []
    changed = True
    while changed:
        changed = False
        for k, w in enumerate(model.layers):
            if w.type not in ("Scale", "Bias"):
                continue
            aff = _sb_affine(w)
            if aff is None:
                continue
            a, c = aff
            cons, _ = _consumers(model.layers, k, w.lp.top[0])
            if len(cons) == 1 and model.layers[cons[0]].type in ("Scale", "Bias") \
                    and _can_merge(model, k, 0, cons[0]):
                nxt = model.layers[cons[0]]
                b = _sb_affine(nxt)
                if b is not None:
                    _set_scale(w, a * b[0], c * b[0] + b[1])
                    _merge_into_producer(model, k, 0, cons[0])
                    notes.append(f"merged {nxt.name} into {w.name}")
                    changed = True
                    break
            into = _fold_affine_back(model, k, a, c)
            if into is not None:
                notes.append(f"folded {w.name} into {into}")
                changed = True
                break
    return notes


def pass_remove_unused(model) -> list[str]:
    notes = []
    changed = True
    while changed:
        changed = False
        for k in range(len(model.layers) - 1, -1, -1):
            w = model.layers[k]
            if w.type == "Input":
                continue
            used = False
            for t in w.lp.top:
                cons, to_end = _consumers(model.layers, k, t)
                if cons or (to_end and t in model.outputs):
                    used = True
                    break
            if not used:
                notes.append(f"removed {w.name} ({w.type})")
                del model.layers[k]
                changed = True
    return notes


def pass_fuse_relu(model) -> list[str]:
    notes = []
    model.fused = []
    for k, w in enumerate(model.layers):
        if w.type != "ReLU" or len(w.lp.bottom) != 1:
            continue
        p, j = _producer(model.layers, k, w.lp.bottom[0])
        if p is None or model.layers[p].type not in AFFINE_PRODUCERS \
                or len(model.layers[p].lp.top) != 1:
            continue
        if not _only_consumer(model, p, j, k):
            continue
        t = w.lp.top[0]
        if t != w.lp.bottom[0] and _touched_between(model.layers, p, k, t):
            continue
        slope = float(w.lp.relu_param.negative_slope)
        model.fused.append((model.layers[p].name, w.name, slope))
        notes.append(f"{w.name} runs inside {model.layers[p].name}")
    return notes


def pass_plan_memory(model) -> list[str]:
    from .memplan import plan_net
    net = build_net(model)
    skip = _fused_skip(net, model.fused)
    planned = plan_net(net, skip, model.outputs)
    model.plan = {"arena_bytes": planned["arena_bytes"],
                  "unplanned_bytes": planned["unplanned_bytes"], "values": planned["values"]}
    return [f"{planned['values']} activation blobs in one {planned['arena_bytes']:,}-byte "
            f"arena ({planned['unplanned_bytes']:,} bytes without sharing)"]


PASSES = {
    "remove_dropout": pass_remove_dropout,
    "fold_batchnorm": pass_fold_batchnorm,
    "fold_scale_bias": pass_fold_scale_bias,
    "remove_unused": pass_remove_unused,
    "fuse_relu": pass_fuse_relu,
    "plan_memory": pass_plan_memory,
}
PASS_NAMES = ["strip_training"] + list(PASSES)


# -- nets and measurements ---------------------------------------------------------------------
def build_net(model, batch: int | None = None):
    from ..net import Net
    net_param = model.to_proto(blobs=False)
    shapes = {}
    if batch is not None:
        shapes = {i.name: (batch,) + tuple(i.shape[1:]) for i in model.inputs}
    return Net(net_param, 1, input_shapes=shapes, init_params=False)


def _fused_skip(net, fused) -> set[int]:
    from .memplan import fused_skip
    return fused_skip(net, fused)


@dataclass
class PassRow:
    name: str
    layers: int
    params: int
    flops: int
    activation_bytes: int
    notes: list = field(default_factory=list)


def measure(model, name: str, notes) -> PassRow:
    from ..analysis import analyze
    net = build_net(model)
    s = analyze(net)
    n_layers = sum(1 for lay in net.layers if lay.type != "Split")
    act = s.activation_bytes
    if model.fused:
        fused = {r for _, r, _ in model.fused}
        n_layers -= len(fused)
        for ls in s.layers:
            if ls.name in fused:
                act -= ls.activation_bytes
    if model.plan is not None:
        act = model.plan["arena_bytes"]
    return PassRow(name, n_layers, s.learnable_params + s.stat_params, s.flops, act, list(notes))


def format_report(rows) -> str:
    from ..analysis import human, human_bytes
    head = ("pass", "layers", "parameters", "FLOPs", "activation memory")
    table = [head]
    for r in rows:
        r = r if isinstance(r, PassRow) else PassRow(**r)
        table.append((r.name, str(r.layers), f"{r.params:,}", human(r.flops),
                      human_bytes(r.activation_bytes)))
    widths = [max(len(t[c]) for t in table) for c in range(5)]
    lines = []
    for n, t in enumerate(table):
        lines.append("  ".join(t[c].ljust(widths[c]) if c == 0 else t[c].rjust(widths[c])
                               for c in range(5)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        r = r if isinstance(r, PassRow) else PassRow(**r)
        for note in r.notes:
            lines.append(f"  {r.name}: {note}")
    return "\n".join(lines)


# -- strip_training ----------------------------------------------------------------------------
def _definition(model_def):
    from ..config import load_net
    if isinstance(model_def, pb.NetParameter):
        return model_def
    if hasattr(model_def, "message"):
        return model_def
    return load_net(str(model_def))


def _weights_source(weights):
    from ..io.weights import load_caffemodel
    if weights is None:
        return []
    if isinstance(weights, pb.NetParameter):
        return [(weights, None)]
    if isinstance(weights, str):
        weights = [w for w in weights.split(",") if w]
    out = []
    for w in weights:
        if isinstance(w, pb.NetParameter):
            out.append((w, None))
        else:
            out.append((load_caffemodel(str(w)), str(w)))
    return out


def _refuse_python_layers(definition) -> None:
    """A Python layer of the TEST net is refused before anything imports its module (a
    frozen model holds no code; ``netdef predict DEF --weights`` freezes in memory)."""
    from ..graph import Locator, filter_layers
    if isinstance(definition, pb.NetParameter):
        param, loc = definition, Locator(None)
    else:
        param, loc = definition.message, Locator(definition)
    state = pb.NetState()
    state.CopyFrom(param.state)
    state.phase = pb.TEST
    for ref in filter_layers(param, state, loc):
        if ref.param.type == "Python":
            raise loc.error("Python layers cannot be frozen (a frozen model holds no code; "
                            "its module was not imported)", ("layer", ref.index),
                            layer=ref.param.name, layer_type="Python")


def strip_training(definition, weights, input_shapes=None) -> tuple[Model, list, dict, dict]:
    """The first pass (it also loads the weights).  Returns (model, notes, transforms,
    data_shapes): transforms maps an input name to the data layer's TransformationParameter,
    data_shapes every data top (labels too) to its shape at the deploy batch size."""
    from ..io.weights import copy_trained_layers
    from ..layers.registry import get_layer_class
    from ..net import Net

    input_shapes = {k: tuple(v) for k, v in (input_shapes or {}).items()}
    _refuse_python_layers(definition)       # before Net(...) would import their modules
    src = Net(definition, 1, input_shapes=input_shapes, init_params=False)
    file = getattr(definition, "file", None)
    notes: list[str] = []
    layers: list[WL] = []
    inputs: list[DeployInput] = []
    transforms: dict = {}
    gone: set[str] = set()         # blobs that no longer exist (labels...)
    silenced: set[str] = set()     # blobs a Silence layer consumed: not outputs
    names: set[str] = set()
    data_shapes: dict = {}
    from ..graph import filter_layers, order_layers
    refs = order_layers(filter_layers(src.param, src.state, src.loc), src.loc)
    for ref in refs:
        lp = ref.param
        if lp.type == "Python":
            raise ConfigError("Python layers cannot be frozen (a frozen model holds no code)",
                              file=file, layer=lp.name, layer_type=lp.type)
        cls = get_layer_class(lp.type)
        if getattr(cls, "is_data", False):
            keep = [0] if lp.type != "Input" else list(range(len(lp.top)))
            new = pb.LayerParameter(name=lp.name, type="Input")
            for j, t in enumerate(lp.top):
                if j not in keep:
                    gone.add(t)
                    continue
                shape = list(src.blobs[t].shape)
                if t in input_shapes:
                    shape = list(input_shapes[t])
                elif lp.type != "Input" and shape:
                    shape[0] = 1
                new.top.append(t)
                new.input_param.shape.add().dim.extend(shape)
                inputs.append(DeployInput(t, tuple(shape)))
                if lp.HasField("transform_param"):
                    transforms[t] = lp.transform_param
            batch = inputs[-1].shape[0] if inputs and inputs[-1].shape else 1
            for t in lp.top:
                s = tuple(src.blobs[t].shape)
                data_shapes[t] = tuple(inputs[-1].shape) if t == new.top[0] else \
                    ((batch,) + s[1:] if s else s)
            if lp.type != "Input":
                notes.append(f"{lp.name} ({lp.type}) -> Input {', '.join(new.top)} "
                             f"{'x'.join(map(str, inputs[-1].shape))}")
            layers.append(WL(new))
            continue
        if lp.type in INFERENCE_FORM and lp.bottom and lp.bottom[0] not in gone:
            kind = INFERENCE_FORM[lp.type]
            name = "prob" if "prob" not in names else f"{lp.name}_prob"
            new = pb.LayerParameter(name=name, type=kind)
            new.bottom.append(lp.bottom[0])
            new.top.append(name)
            if kind == "Softmax" and lp.HasField("softmax_param"):
                new.softmax_param.CopyFrom(lp.softmax_param)
            notes.append(f"{lp.name} ({lp.type}) -> {kind} '{name}'")
            names.add(name)
            layers.append(WL(new))
            gone.update(lp.top)
            continue
        if getattr(cls, "is_loss", False) or lp.type in TRAINING_ONLY:
            if lp.type == "Silence":
                silenced.update(lp.bottom)
            gone.update(lp.top)
            notes.append(f"removed {lp.name} ({lp.type})")
            continue
        if any(b in gone for b in lp.bottom):
            gone.update(lp.top)
            notes.append(f"removed {lp.name} ({lp.type}: needs a label)")
            continue
        new = pb.LayerParameter()
        new.CopyFrom(lp)
        for f in ("include", "exclude", "loss_weight", "propagate_down", "blobs"):
            new.ClearField(f)
        new.ClearField("phase")
        if new.name in names:
            base, n = new.name, 1
            while f"{base}_{n}" in names:
                n += 1
            new.name = f"{base}_{n}"
        names.add(new.name)
        layers.append(WL(new))
        gone.difference_update(lp.top)
    # outputs: what a removed loss consumed, then every final value nothing reads
    model = Model(src.name or "net", layers, inputs, [])
    outputs = []
    for k, w in enumerate(layers):
        for t in w.lp.top:
            cons, to_end = _consumers(layers, k, t)
            if to_end and not cons and w.type != "Input" and t not in outputs \
                    and t not in silenced:
                outputs.append(t)
    if not outputs:
        raise ConfigError("the net has no output left after removing its training layers",
                          file=file)
    model.outputs = outputs
    # weights, copied by layer name as Caffe does
    net = Net(model.to_proto(blobs=False), 1, init_params=False)
    sources = _weights_source(weights)
    copied: set[str] = set()
    for source, wfile in sources:
        copied.update(copy_trained_layers(net, source, wfile))
    missing = [n for n, lay in zip(net.layer_names, net.layers) if lay.blobs and n not in copied]
    if missing:
        raise FileFormatError(
            f"no weights for layer{'s' if len(missing) > 1 else ''} {', '.join(missing)} in "
            f"{', '.join(w or '(weights)' for _, w in sources) or 'the weights (none given)'}: "
            f"a frozen model needs trained values for every parameter", file=file)
    by_name = {n: lay for n, lay in zip(net.layer_names, net.layers)}
    for w in layers:
        lay = by_name.get(w.name)
        if lay is not None:
            w.blobs = [np.array(b.data, np.float32) for b in lay.blobs]
    return model, notes, transforms, data_shapes


def _preprocessing(model, transforms, *, scale=None, mean_file=None, mean_value=None,
                   channel_order=None) -> None:
    from ..data.binaryproto import read_mean
    for k, inp in enumerate(model.inputs):
        tp = transforms.get(inp.name)
        if tp is not None:
            inp.scale = float(tp.scale)
            inp.mean_value = [float(v) for v in tp.mean_value]
            if tp.mean_file:
                try:
                    inp.mean = read_mean(tp.mean_file)
                except NetdefError as e:
                    raise ConfigError(f"{e} (or give --mean-file / --mean-value)") from None
        if k == 0:
            if scale is not None:
                inp.scale = float(scale)
            if mean_file:
                inp.mean = read_mean(mean_file, field=None)
                inp.mean_value = []
            if mean_value:
                inp.mean_value = [float(v) for v in mean_value]
                inp.mean = None
            if channel_order:
                inp.channel_order = channel_order.upper()
        c = inp.shape[1] if len(inp.shape) > 1 else 1
        if not inp.channel_order:
            inp.channel_order = "GRAY" if c == 1 else ("BGR" if c == 3 else "")
        if inp.channel_order not in ("", "GRAY", "RGB", "BGR"):
            raise ConfigError(f"channel order must be RGB, BGR or GRAY, not "
                              f"'{inp.channel_order}'")
        if inp.mean_value and len(inp.mean_value) not in (1, c):
            raise ConfigError(f"give 1 mean value or {c} (one per channel), not "
                              f"{len(inp.mean_value)}")
        if inp.mean is not None:
            m = inp.mean
            if m.shape[0] != c or m.shape[1] < inp.shape[2] or m.shape[2] < inp.shape[3]:
                raise ConfigError(f"the mean is {'x'.join(map(str, m.shape))} (CxHxW) but the "
                                  f"input is {'x'.join(map(str, inp.shape[1:]))}")


def read_labels(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [ln.rstrip("\r\n") for ln in f]
    except FileNotFoundError:
        raise ConfigError("labels file not found", file=path) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read labels: {e}", file=path) from None
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


@dataclass
class FreezeResult:
    model: Model
    rows: list
    labels: list

    @property
    def report(self) -> str:
        return format_report(self.rows)

    def deploy_message(self, source: str = ""):
        d = pb.NetdefDeploy()
        for inp in self.model.inputs:
            m = d.input.add()
            m.name = inp.name
            m.shape.dim.extend(int(x) for x in inp.shape)
            m.scale = inp.scale
            m.mean_value.extend(inp.mean_value)
            if inp.mean is not None:
                m.mean.shape.dim.extend(inp.mean.shape)
                m.mean.data.extend(np.asarray(inp.mean, np.float32).reshape(-1).tolist())
            if inp.channel_order:
                m.channel_order = inp.channel_order
        d.output.extend(self.model.outputs)
        d.label.extend(self.labels)
        for prod, relu, slope in self.model.fused:
            d.fused.add(layer=prod, activation=relu, negative_slope=slope)
        d.report_json = json.dumps([asdict(r) for r in self.rows])
        if source:
            d.source = source
        return d

    def save(self, path: str, source: str = "") -> int:
        from .frozen import write_frozen
        return write_frozen(path, self.model.to_proto(), self.deploy_message(source))


def freeze(model_def, weights=None, *, input_shapes=None, labels=None, scale=None,
           mean_file=None, mean_value=None, channel_order=None, skip=()) -> FreezeResult:
    """Run every pass (except those named in ``skip``) and return the frozen model with its
    report.  ``model_def``: a path, Definition or NetParameter; ``weights``: caffemodel
    path(s) or a NetParameter with blobs."""
    unknown = set(skip) - set(PASSES)
    if unknown:
        raise ConfigError(f"unknown pass {', '.join(sorted(unknown))} (passes: "
                          f"{', '.join(PASSES)})")
    definition = _definition(model_def)
    model, notes, transforms, data_shapes = strip_training(definition, weights, input_shapes)
    _preprocessing(model, transforms, scale=scale, mean_file=mean_file, mean_value=mean_value,
                   channel_order=channel_order)
    # "before": the TEST net as defined (data and loss layers included)
    from ..analysis import analyze
    from ..net import Net
    try:
        before = analyze(Net(definition, 1, input_shapes=data_shapes, init_params=False))
    except NetdefError:     # e.g. a label shape that does not follow the batch size
        before = None
    if before is None:
        before = analyze(Net(definition, 1, input_shapes=input_shapes, init_params=False))
    rows = [PassRow("(definition, TEST)", sum(1 for x in before.layers if x.type != "Split"),
                    before.learnable_params + before.stat_params, before.flops,
                    before.activation_bytes)]
    rows.append(measure(model, "strip_training", notes))
    for name, fn in PASSES.items():
        if name in skip:
            continue
        rows.append(measure(model, name, fn(model)))
    if isinstance(labels, str):
        labels = read_labels(labels)
    labels = list(labels or [])
    return FreezeResult(model, rows, labels)
