"""Legacy definitions → current format, the same steps Caffe's upgrade takes, in the same order:

1. V0 → V1: ``layers { layer { type: "conv" ... } }`` (with "padding" layers folded into the
   next convolution's ``pad``);
2. data-transform fields (scale, mean_file, crop_size, mirror) moved into ``transform_param``;
3. V1 → V2: ``layers { type: CONVOLUTION blobs_lr weight_decay param }`` → ``layer { type:
   "Convolution" param { lr_mult decay_mult name share_mode } }``;
4. net-level ``input`` + ``input_dim``/``input_shape`` → a leading ``Input`` layer "input";
5. BatchNorm layers with 3 ``param`` specs lose them (the layer freezes its statistics itself).

Solver: ``solver_type`` enum → ``type`` string, nets embedded in the solver upgraded too.
Every function returns a list of notes describing what it changed (empty: nothing to do), and
keeps the source map pointing at the original text.
"""
from __future__ import annotations

from ..errors import ConfigError
from ..proto import pb

_V1_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU",
    "SIGMOID": "Sigmoid", "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence", "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH", "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

_V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING",
    "relu": "RELU", "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT", "tanh": "TANH", "window_data": "WINDOW_DATA",
}

# V0 field -> {v0 type: "param_message.field"}  ("*" = any type)
_V0_FIELDS = {
    "num_output": {"conv": "convolution_param.num_output",
                   "innerproduct": "inner_product_param.num_output"},
    "biasterm": {"conv": "convolution_param.bias_term",
                 "innerproduct": "inner_product_param.bias_term"},
    "weight_filler": {"conv": "convolution_param.weight_filler",
                      "innerproduct": "inner_product_param.weight_filler"},
    "bias_filler": {"conv": "convolution_param.bias_filler",
                    "innerproduct": "inner_product_param.bias_filler"},
    "pad": {"conv": "convolution_param.pad", "pool": "pooling_param.pad"},
    "kernelsize": {"conv": "convolution_param.kernel_size", "pool": "pooling_param.kernel_size"},
    "group": {"conv": "convolution_param.group"},
    "stride": {"conv": "convolution_param.stride", "pool": "pooling_param.stride"},
    "pool": {"pool": "pooling_param.pool"},
    "dropout_ratio": {"dropout": "dropout_param.dropout_ratio"},
    "local_size": {"lrn": "lrn_param.local_size"},
    "alpha": {"lrn": "lrn_param.alpha"},
    "beta": {"lrn": "lrn_param.beta"},
    "k": {"lrn": "lrn_param.k"},
    "source": {"data": "data_param.source", "hdf5_data": "hdf5_data_param.source",
               "images": "image_data_param.source", "window_data": "window_data_param.source",
               "infogain_loss": "infogain_loss_param.source"},
    "scale": {"*": "transform_param.scale"},
    "meanfile": {"*": "transform_param.mean_file"},
    "batchsize": {"data": "data_param.batch_size", "hdf5_data": "hdf5_data_param.batch_size",
                  "images": "image_data_param.batch_size",
                  "window_data": "window_data_param.batch_size"},
    "cropsize": {"*": "transform_param.crop_size"},
    "mirror": {"*": "transform_param.mirror"},
    "rand_skip": {"data": "data_param.rand_skip", "images": "image_data_param.rand_skip"},
    "shuffle_images": {"images": "image_data_param.shuffle"},
    "new_height": {"images": "image_data_param.new_height"},
    "new_width": {"images": "image_data_param.new_width"},
    "concat_dim": {"concat": "concat_param.concat_dim"},
    "det_fg_threshold": {"window_data": "window_data_param.fg_threshold"},
    "det_bg_threshold": {"window_data": "window_data_param.bg_threshold"},
    "det_fg_fraction": {"window_data": "window_data_param.fg_fraction"},
    "det_context_pad": {"window_data": "window_data_param.context_pad"},
    "det_crop_mode": {"window_data": "window_data_param.crop_mode"},
    "hdf5_output_param": {"hdf5_output": "hdf5_output_param"},
}

_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _set_path(msg, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        msg = getattr(msg, p)
    fd = msg.DESCRIPTOR.fields_by_name[last]
    if fd.is_repeated:
        getattr(msg, last).append(value)
    elif fd.type == fd.TYPE_MESSAGE:
        getattr(msg, last).CopyFrom(value)
    else:
        setattr(msg, last, value)


def _remap(smap: dict, fn) -> dict:
    """Rewrite every source-map path through ``fn`` (which returns None to drop it)."""
    out = {}
    for path, pos in smap.items():
        new = fn(path)
        if new is not None and new not in out:
            out[new] = pos
    return out


# -- 1. V0 -> V1 -------------------------------------------------------------------------------
def upgrade_v0_to_v1(net, smap: dict, file=None) -> list[str]:
    if not any(l.HasField("layer") for l in net.layers):
        return []
    # fold "padding" layers into the following convolution
    padding: dict[str, tuple[str, int]] = {}
    kept: list[tuple[int, object]] = []
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        if v0.type == "padding":
            if len(conn.bottom) != 1 or len(conn.top) != 1:
                raise ConfigError("a V0 padding layer needs exactly one bottom and one top",
                                  file=file, line=smap.get(("layers", i), (None,))[0],
                                  layer=v0.name)
            padding[conn.top[0]] = (conn.bottom[0], v0.pad)
            continue
        kept.append((i, conn))
    new_layers = []
    index_map = {}
    for new_i, (old_i, conn) in enumerate(kept):
        index_map[old_i] = new_i
        v0 = conn.layer
        v1 = pb.V1LayerParameter()
        v1.name = v0.name
        bottoms = list(conn.bottom)
        for b_i, b in enumerate(bottoms):
            if b in padding:
                src, pad = padding[b]
                if v0.type != "conv":
                    raise ConfigError(f"V0 padding layer output '{b}' feeds a '{v0.type}' layer;"
                                      " only convolutions can absorb padding", file=file,
                                      layer=v0.name)
                bottoms[b_i] = src
                v0.pad = pad
        v1.bottom.extend(bottoms)
        v1.top.extend(conn.top)
        if v0.type not in _V0_TYPES:
            raise ConfigError(f"unknown V0 layer type '{v0.type}'", file=file, layer=v0.name,
                              line=smap.get(("layers", old_i), (None, None))[0])
        v1.type = pb.V1LayerParameter.LayerType.Value(_V0_TYPES[v0.type])
        for fd, value in v0.ListFields():
            name = fd.name
            if name in ("name", "type"):
                continue
            if name == "blobs":
                v1.blobs.extend(value)
                continue
            if name in ("blobs_lr", "weight_decay"):
                getattr(v1, name).extend(value)
                continue
            targets = _V0_FIELDS.get(name)
            if not targets:
                continue
            target = targets.get(v0.type) or targets.get("*")
            if target is None:
                continue
            top_msg = target.split(".")[0]
            if top_msg == "transform_param":
                _set_path(v1, target, value)
            else:
                if name == "pool":
                    value = int(value)
                _set_path(v1, target, value)
        # the legacy fields of the connection itself (include/exclude, loss_weight...) stay
        for fd, value in conn.ListFields():
            if fd.name in ("layer", "bottom", "top", "name", "type"):
                continue
            f = getattr(v1, fd.name)
            if fd.is_repeated:
                f.extend(value)
            elif fd.type == fd.TYPE_MESSAGE:
                f.MergeFrom(value)
            else:
                setattr(v1, fd.name, value)
        new_layers.append(v1)
    del net.layers[:]
    net.layers.extend(new_layers)

    def fn(path):
        if path and path[0] == "layers" and len(path) > 1:
            if path[1] not in index_map:
                return None
            return ("layers", index_map[path[1]])
        return path
    smap.update(_remap(smap, fn))
    return [f"upgraded {len(new_layers)} V0 layers to V1"
            + (f" (folded {len(padding)} padding layers)" if padding else "")]


# -- 2. data transformation -----------------------------------------------------------------
def upgrade_data_transform(net) -> list[str]:
    notes = []
    for coll in (net.layers, net.layer):
        for layer in coll:
            for pname in ("data_param", "image_data_param", "window_data_param"):
                if not layer.HasField(pname):
                    continue
                p = getattr(layer, pname)
                moved = []
                for f in _TRANSFORM_FIELDS:
                    if f in p.DESCRIPTOR.fields_by_name and p.HasField(f):
                        setattr(layer.transform_param, f, getattr(p, f))
                        p.ClearField(f)
                        moved.append(f)
                if moved:
                    notes.append(f"layer '{layer.name}': moved {', '.join(moved)} from "
                                 f"{pname} to transform_param")
    return notes


# -- 3. V1 -> V2 ------------------------------------------------------------------------------
def upgrade_v1_to_v2(net, smap: dict, file=None) -> list[str]:
    if not len(net.layers):
        return []
    if len(net.layer):
        raise ConfigError("the net mixes legacy 'layers' (V1) and current 'layer' entries; "
                          "use one kind", file=file)
    lp_fields = pb.LayerParameter.DESCRIPTOR.fields_by_name
    out = []
    for i, v1 in enumerate(net.layers):
        layer = pb.LayerParameter()
        type_name = pb.V1LayerParameter.LayerType.Name(v1.type)
        layer.type = _V1_TYPES.get(type_name, "")
        nparams = max(len(v1.blobs_lr), len(v1.weight_decay), len(v1.param),
                      len(v1.blob_share_mode))
        for j in range(nparams):
            layer.param.add()
        for j, v in enumerate(v1.blobs_lr):
            layer.param[j].lr_mult = v
        for j, v in enumerate(v1.weight_decay):
            layer.param[j].decay_mult = v
        for j, v in enumerate(v1.param):
            layer.param[j].name = v
        for j, v in enumerate(v1.blob_share_mode):
            layer.param[j].share_mode = v
        for fd, value in v1.ListFields():
            name = fd.name
            if name in ("type", "blobs_lr", "weight_decay", "param", "blob_share_mode",
                        "layer"):
                continue
            target = lp_fields.get(name)
            if target is None:
                continue
            f = getattr(layer, name)
            if fd.is_repeated:
                f.extend(value)
            elif fd.type == fd.TYPE_MESSAGE:
                f.CopyFrom(value)
            else:
                setattr(layer, name, value)
        out.append(layer)
    del net.layers[:]
    net.layer.extend(out)

    def fn(path):
        if path and path[0] == "layers":
            rest = path[2:]
            # V1 field names that became something else point at the layer itself
            if rest and rest[0] in ("blobs_lr", "weight_decay", "param", "blob_share_mode"):
                rest = ("param",) + rest[1:]
            return ("layer",) + path[1:2] + rest
        return path
    smap.update(_remap(smap, fn))
    return [f"upgraded {len(out)} V1 layers (layers {{ type: ENUM }}) to current layer {{ }}"]


# -- 4. input fields -> Input layer ----------------------------------------------------------
def upgrade_input_fields(net, smap: dict, file=None) -> list[str]:
    if not len(net.input):
        if len(net.input_dim) or len(net.input_shape):
            raise ConfigError("input_dim/input_shape given without 'input' names", file=file,
                              line=smap.get(("input_dim", 0), (None,))[0])
        return []
    n = len(net.input)
    layer = pb.LayerParameter(name="input", type="Input")
    layer.top.extend(net.input)
    if len(net.input_shape):
        if len(net.input_shape) != n:
            raise ConfigError(f"{n} inputs but {len(net.input_shape)} input_shape entries",
                              file=file, line=smap.get(("input_shape", 0), (None,))[0])
        for s in net.input_shape:
            layer.input_param.shape.add().CopyFrom(s)
    elif len(net.input_dim):
        if len(net.input_dim) != 4 * n:
            raise ConfigError(f"{n} inputs need {4 * n} input_dim values (4 each), got "
                              f"{len(net.input_dim)}", file=file,
                              line=smap.get(("input_dim", 0), (None,))[0])
        for k in range(n):
            layer.input_param.shape.add().dim.extend(net.input_dim[4 * k:4 * k + 4])
    else:
        # legacy caffemodels: names without dims are just dropped
        net.ClearField("input")
        return ["dropped net-level input names without dimensions"]
    old = list(net.layer)
    del net.layer[:]
    net.layer.add().CopyFrom(layer)
    net.layer.extend(old)
    pos = smap.get(("input", 0))
    net.ClearField("input")
    net.ClearField("input_dim")
    net.ClearField("input_shape")

    def fn(path):
        if path and path[0] == "layer" and len(path) > 1:
            return ("layer", path[1] + 1) + path[2:]
        return path
    new = _remap(smap, fn)
    smap.clear()
    smap.update(new)
    if pos:
        smap[("layer", 0)] = pos
    return [f"replaced net-level input fields by an Input layer 'input' ({n} tops)"]


# -- 5. BatchNorm params ----------------------------------------------------------------------
def upgrade_batchnorm(net) -> list[str]:
    notes = []
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            layer.ClearField("param")
            notes.append(f"layer '{layer.name}': dropped 3 legacy BatchNorm param specs")
    return notes


def upgrade_net(net, smap: dict | None = None, file=None) -> list[str]:
    """Upgrade ``net`` (a NetParameter) in place; returns the notes of what changed."""
    smap = smap if smap is not None else {}
    notes = upgrade_v0_to_v1(net, smap, file)
    notes += upgrade_data_transform(net)
    notes += upgrade_v1_to_v2(net, smap, file)
    notes += upgrade_input_fields(net, smap, file)
    notes += upgrade_batchnorm(net)
    return notes


_SOLVER_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def upgrade_solver(solver, smap: dict | None = None, file=None) -> list[str]:
    notes = []
    if solver.HasField("solver_type"):
        new = _SOLVER_TYPES[solver.solver_type]
        if solver.HasField("type") and solver.type != new:
            raise ConfigError(f"solver_type {pb.SolverParameter.SolverType.Name(solver.solver_type)}"
                              f" contradicts type \"{solver.type}\"; keep only 'type'", file=file,
                              line=(smap or {}).get(("solver_type",), (None,))[0])
        solver.type = new
        solver.ClearField("solver_type")
        notes.append(f"solver_type enum -> type: \"{new}\"")
    for field in ("net_param", "train_net_param"):
        if solver.HasField(field):
            sub = {k[1:]: v for k, v in (smap or {}).items() if k[:1] == (field,)}
            n = upgrade_net(getattr(solver, field), sub, file)
            notes += [f"{field}: {x}" for x in n]
    for i, tn in enumerate(solver.test_net_param):
        n = upgrade_net(tn, {}, file)
        notes += [f"test_net_param[{i}]: {x}" for x in n]
    return notes
