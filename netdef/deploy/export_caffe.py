"""``netdef export caffe``: a frozen model as BVLC Caffe's deploy.prototxt + .caffemodel.

The frozen net already is a Caffe net (folded layers are plain Convolution / InnerProduct with a
bias; fused ReLUs are still ReLU layers), so the export drops netdef's extension field, checks
that every layer type is one BVLC Caffe knows, writes the definition without blobs as text and
the layers with blobs as binary.  The preprocessing goes into comments at the top of the
prototxt (Caffe has no field for it outside data layers).
"""
from __future__ import annotations

from google.protobuf import text_format

from ..errors import ConfigError
from ..io.files import write_file
from ..proto import pb
from .frozen import FrozenModel

#: layer types of BVLC Caffe (master, 2020) that can appear in a deploy net
CAFFE_TYPES = {
    "AbsVal", "ArgMax", "BatchNorm", "Bias", "BNLL", "Clip", "Concat", "Convolution", "Crop",
    "Deconvolution", "Dropout", "Eltwise", "ELU", "Embed", "Exp", "Flatten", "Im2col", "Input",
    "InnerProduct", "Log", "LRN", "MVN", "Parameter", "Pooling", "Power", "PReLU", "Reduction",
    "ReLU", "Reshape", "Scale", "Sigmoid", "Slice", "Softmax", "Split", "SPP", "Swish", "TanH",
    "Threshold", "Tile", "Python", "Silence",
}


def caffe_net(fm: FrozenModel, *, blobs: bool):
    net = pb.NetParameter()
    net.CopyFrom(fm.net)
    net.ClearField("netdef_deploy")
    for lp in net.layer:
        if lp.type not in CAFFE_TYPES:
            raise ConfigError(f"layer type {lp.type} is not a BVLC Caffe layer; it cannot be "
                              f"exported to Caffe", layer=lp.name, layer_type=lp.type)
        if not blobs:
            del lp.blobs[:]
    return net


def _comment_safe(s: str) -> str:
    """A name as it may stand in a ``#`` comment line: control characters (a newline would
    end the comment and turn the rest of the name into definition text) and backslashes
    escaped."""
    return s.encode("unicode_escape").decode("ascii")


def preprocessing_comment(fm: FrozenModel) -> str:
    lines = ["# exported by netdef from a frozen model"]
    for inp in fm.deploy.input:
        parts = [f"input {_comment_safe(inp.name)} {'x'.join(str(d) for d in inp.shape.dim)}",
                 f"scale {inp.scale:g}"]
        if len(inp.mean_value):
            parts.append("mean_value " + ",".join(f"{v:g}" for v in inp.mean_value))
        if inp.HasField("mean"):
            parts.append("mean image (not exported)")
        if inp.channel_order:
            parts.append(f"channel order {_comment_safe(inp.channel_order)}")
        lines.append("# preprocessing: " + ", ".join(parts) + " (out = (x - mean) * scale)")
    lines.append(f"# outputs: {', '.join(_comment_safe(o) for o in fm.deploy.output)}")
    return "\n".join(lines) + "\n"


def export_caffe(fm: FrozenModel, prototxt: str, caffemodel: str) -> dict:
    definition = caffe_net(fm, blobs=False)
    weights = caffe_net(fm, blobs=True)
    write_file(prototxt, (preprocessing_comment(fm)
                             + text_format.MessageToString(definition)).encode("utf-8"))
    write_file(caffemodel, weights.SerializeToString())
    return {"layers": len(definition.layer)}
