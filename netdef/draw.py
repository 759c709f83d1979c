"""Pictures of nets (Caffe's draw_net.py): DOT text from a ``NetParameter``, images through
graphviz's ``dot`` when it is installed.

Layers are boxes coloured by type and labelled with their name, type and (for convolution and
pooling) kernel, stride and padding; blobs are octagons; a layer computing in place points
back at its bottom's octagon instead of a second one of the same name; edges from a layer to
its tops may carry the layer's output count (``label_edges``).  ``phase`` (TRAIN/TEST, or None
for every layer) keeps the layers whose include/exclude rules match that phase, as the net
would be built.  Nothing here needs a package beyond protobuf; :func:`get_pydot_graph` needs
pydot (the ``draw`` extra) and image formats need graphviz's ``dot`` on PATH.
"""
from __future__ import annotations

import shutil
import subprocess

from .errors import ConfigError, NetdefError
from .proto import pb

#: fill colours by layer type (others: DEFAULT_COLOR)
LAYER_COLORS = {
    "Convolution": "#FF6F61", "Deconvolution": "#FF8A65", "Pooling": "#FFB74D",
    "InnerProduct": "#BA68C8", "ReLU": "#81C784", "PReLU": "#81C784", "ELU": "#81C784",
    "Sigmoid": "#81C784", "TanH": "#81C784", "BatchNorm": "#4DD0E1", "Scale": "#4DD0E1",
    "LRN": "#4DB6AC", "Dropout": "#B0BEC5", "Concat": "#FFF176", "Eltwise": "#FFF176",
    "Softmax": "#F06292", "SoftmaxWithLoss": "#E57373", "Accuracy": "#E57373",
    "Data": "#90A4AE", "Input": "#90A4AE", "ImageData": "#90A4AE", "HDF5Data": "#90A4AE",
}
DEFAULT_COLOR = "#64B5F6"
BLOB_COLOR = "#E0E0E0"
RANKDIRS = ("LR", "TB", "BT", "RL")
#: image formats handed to graphviz's dot (others: "dot"/"gv" write the DOT text)
IMAGE_FORMATS = ("svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps")


def _quote(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def choose_color_by_layertype(layertype: str) -> str:
    return LAYER_COLORS.get(layertype, DEFAULT_COLOR)


def _spatial(values, h, w, default):
    if h or w:
        return f"{h}x{w}" if h != w else str(h)
    vals = list(values) or [default]
    return "x".join(str(v) for v in vals) if len(set(vals)) > 1 else str(vals[0])


def get_layer_label(layer, rankdir: str = "LR", display_lrm: bool = False) -> str:
    """The box's text: name, (type), and the geometry of convolutions and poolings."""
    sep = " " if rankdir in ("TB", "BT") else "\n"
    lines = [layer.name]
    if layer.type in ("Convolution", "Deconvolution"):
        cp = layer.convolution_param
        lines += [f"({layer.type})",
                  f"kernel size: {_spatial(cp.kernel_size, cp.kernel_h, cp.kernel_w, 1)}",
                  f"stride: {_spatial(cp.stride, cp.stride_h, cp.stride_w, 1)}",
                  f"pad: {_spatial(cp.pad, cp.pad_h, cp.pad_w, 0)}"]
    elif layer.type == "Pooling":
        pp = layer.pooling_param
        method = pb.PoolingParameter.PoolMethod.Name(pp.pool)
        lines.append(f"({method} Pooling)")
        if pp.global_pooling:
            lines.append("global")
        else:
            k = _spatial([pp.kernel_size] if pp.HasField("kernel_size") else [],
                         pp.kernel_h, pp.kernel_w, 1)
            s = _spatial([pp.stride] if pp.HasField("stride") else [], pp.stride_h,
                         pp.stride_w, 1)
            p = _spatial([pp.pad] if pp.HasField("pad") else [], pp.pad_h, pp.pad_w, 0)
            lines += [f"kernel size: {k}", f"stride: {s}", f"pad: {p}"]
    else:
        lines.append(f"({layer.type})")
    if display_lrm and len(layer.param):
        lines.append("lr mult: " + ", ".join(f"{p.lr_mult:g}" for p in layer.param))
        lines.append("decay mult: " + ", ".join(f"{p.decay_mult:g}" for p in layer.param))
    return sep.join(lines)


def get_edge_label(layer) -> str | None:
    """Data layers: 'Batch N'; Convolution, Deconvolution, InnerProduct: their num_output."""
    if layer.type in ("Data", "ImageData", "WindowData", "HDF5Data", "MemoryData"):
        for field in ("data_param", "image_data_param", "window_data_param",
                      "hdf5_data_param", "memory_data_param"):
            if layer.HasField(field) and getattr(layer, field).batch_size:
                return f"Batch {getattr(layer, field).batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return None


def _phase(phase):
    if phase is None or (isinstance(phase, str) and phase.upper() == "ALL"):
        return None
    if isinstance(phase, str):
        if phase.upper() not in ("TRAIN", "TEST"):
            raise ConfigError(f"phase must be TRAIN, TEST or ALL, not '{phase}'")
        return pb.TRAIN if phase.upper() == "TRAIN" else pb.TEST
    if phase not in (pb.TRAIN, pb.TEST):
        raise ConfigError(f"phase must be TRAIN, TEST or ALL, not {phase!r}")
    return int(phase)


def _layers(net, phase):
    """The layers to draw: all of them, or those the net keeps in ``phase`` (netdef.graph's
    include/exclude rules, with the definition's own level and stages)."""
    from .graph import Locator, filter_layers
    phase = _phase(phase)
    if not len(net.layer) and len(net.layers):
        from .config.upgrade import upgrade_net
        up = pb.NetParameter()
        up.CopyFrom(net)
        upgrade_net(up)
        net = up
    if phase is None:
        return list(net.layer)
    state = pb.NetState()
    state.CopyFrom(net.state)
    state.phase = phase
    return [ref.param for ref in filter_layers(net, state, Locator())]


def to_dot(net, rankdir: str = "LR", label_edges: bool = True, phase=None,
           display_lrm: bool = False) -> str:
    """The DOT text of ``net`` (a NetParameter)."""
    if rankdir not in RANKDIRS:
        raise ConfigError(f"rankdir must be one of {', '.join(RANKDIRS)}, not '{rankdir}'")
    out = [f"digraph {_quote(net.name or 'net')} {{",
           f"  graph [rankdir={rankdir}];",
           '  node [fontname="Helvetica", fontsize=10];']
    blobs: dict[str, str] = {}

    def blob_node(name: str) -> str:
        if name not in blobs:
            blobs[name] = f"blob{len(blobs)}"
            out.append(f"  {blobs[name]} [label={_quote(name)}, shape=octagon, style=filled, "
                       f"fillcolor={_quote(BLOB_COLOR)}];")
        return blobs[name]

    for i, lp in enumerate(_layers(net, phase)):
        node = f"layer{i}"
        out.append(f"  {node} [label={_quote(get_layer_label(lp, rankdir, display_lrm))}, "
                   f"shape=box, style=filled, "
                   f"fillcolor={_quote(choose_color_by_layertype(lp.type))}];")
        for b in lp.bottom:
            out.append(f"  {blob_node(b)} -> {node};")
        label = get_edge_label(lp) if label_edges else None
        attr = f" [label={_quote(label)}]" if label else ""
        for t in lp.top:
            out.append(f"  {node} -> {blob_node(t)}{attr};")   # in place: the bottom's node
    out.append("}")
    return "\n".join(out) + "\n"


def render(dot_text: str, fmt: str, timeout: float = 120.0) -> bytes:
    """``dot_text`` as ``fmt`` image bytes through graphviz's ``dot``."""
    fmt = fmt.lower().lstrip(".")
    if fmt in ("dot", "gv", "raw"):
        return dot_text.encode()
    if fmt not in IMAGE_FORMATS:
        raise ConfigError(f"cannot draw a '.{fmt}' file: use .dot, or an image format "
                          f"({', '.join(IMAGE_FORMATS)})")
    exe = shutil.which("dot")
    if exe is None:
        raise ConfigError(f"drawing .{fmt} needs graphviz's `dot` (apt-get install graphviz, "
                          f"or brew install graphviz); write a .dot file instead")
    try:
        r = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise NetdefError(f"graphviz's dot took more than {timeout:g} s") from None
    if r.returncode != 0:
        msg = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        raise NetdefError(f"graphviz's dot failed: {msg}")
    return r.stdout


def draw_net(net, rankdir: str = "LR", ext: str = "png", phase=None,
             display_lrm: bool = False) -> bytes:
    return render(to_dot(net, rankdir, phase=phase, display_lrm=display_lrm), ext)


def draw_net_to_file(net, filename: str, rankdir: str = "LR", phase=None,
                     display_lrm: bool = False) -> int:
    """Write the picture (format from the extension); returns the bytes written."""
    from .io.files import write_file
    ext = str(filename).rsplit(".", 1)[-1] if "." in str(filename) else ""
    data = draw_net(net, rankdir, ext or "dot", phase, display_lrm)
    write_file(str(filename), data)
    return len(data)


def get_pydot_graph(net, rankdir: str = "LR", label_edges: bool = True, phase=None,
                    display_lrm: bool = False):
    """A ``pydot.Dot`` of the picture (needs pydot: pip install 'netdef[draw]')."""
    try:
        import pydot
    except ImportError:
        raise ConfigError("get_pydot_graph needs pydot (pip install 'netdef[draw]'); "
                          "netdef.draw.to_dot gives the DOT text without it") from None
    graphs = pydot.graph_from_dot_data(to_dot(net, rankdir, label_edges, phase, display_lrm))
    return graphs[0]
