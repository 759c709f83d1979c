"""Building blocks shared by the zoo generators: data layers, classification heads and the
usual units (conv-BN-scale-ReLU, bottleneck, fire, inception, depthwise-separable).

Each helper writes its layers into a :class:`~netdef.netspec.NetSpec` under explicit names
(the families name their layers differently; the generators pass the originals' names) and
returns the top to build on.
"""
from __future__ import annotations

from ..netspec import NetSpec
from ..netspec import layers as L
from ..netspec import params as P
from ..proto import pb

#: where the ImageNet LMDBs are by default (BVLC Caffe's examples/imagenet layout)
DEFAULT_DATA = "examples/imagenet"
BGR_MEAN = (104.0, 117.0, 123.0)           # BVLC Caffe's ImageNet mean values
BGR_MEAN_FINE = (103.94, 116.78, 123.68)   # MobileNet / DenseNet Caffe ports (+ scale 0.017)

TRAIN = P.Phase.TRAIN
TEST = P.Phase.TEST


# -- data and heads -------------------------------------------------------------------------------
def imagenet_data(n: NetSpec, *, data_dir: str = DEFAULT_DATA, crop: int = 224,
                  mean=BGR_MEAN, scale: float | None = None, train_batch: int = 32,
                  test_batch: int = 50) -> pb.LayerParameter:
    """Assign the TEST-phase Data layer to ``n.data, n.label`` and return the TRAIN-phase one
    (same tops; pass it to :func:`train_val`).  ImageNet transform: random crop ``crop`` and
    mirror in TRAIN, centre crop in TEST, per-channel BGR mean (and ``scale``)."""
    def layer(phase, batch, source, mirror):
        tp = dict(mirror=mirror, crop_size=crop, mean_value=list(mean))
        if scale is not None:
            tp["scale"] = scale
        return L.Data(name="data", ntop=2, include=dict(phase=phase), transform_param=tp,
                      source=f"{data_dir}/{source}", batch_size=batch, backend=P.Data.LMDB)

    t = NetSpec()
    t.data, t.label = layer(TRAIN, train_batch, "ilsvrc12_train_lmdb", True)
    n.data, n.label = layer(TEST, test_batch, "ilsvrc12_val_lmdb", False)
    return t.to_proto().layer[0]


def train_val(n: NetSpec, train_layer: pb.LayerParameter) -> pb.NetParameter:
    """``n.to_proto()`` with the TRAIN-phase data layer first."""
    net = n.to_proto()
    layers = [train_layer] + list(net.layer)
    del net.layer[:]
    net.layer.extend(layers)
    return net


def deploy_input(n: NetSpec, shape, name: str = "data"):
    """The deploy net's Input layer (top ``data``)."""
    n.data = L.Input(name=name, shape=dict(dim=list(shape)))
    return n.data


def classifier_head(n: NetSpec, logits, label, *, loss: str = "loss",
                    top1: str = "accuracy", top5: str = "accuracy_top5",
                    loss_top: str | None = None, loss_weight: float | None = None):
    """SoftmaxWithLoss (both phases) and top-1 / top-5 Accuracy (TEST only)."""
    kw = {} if loss_weight is None else dict(loss_weight=loss_weight)
    n[loss_top or loss] = L.SoftmaxWithLoss(logits, label, name=loss, **kw)
    n[top1] = L.Accuracy(logits, label, include=dict(phase=TEST))
    n[top5] = L.Accuracy(logits, label, include=dict(phase=TEST), top_k=5)


# -- units ----------------------------------------------------------------------------------------
def bn_scale(n: NetSpec, bottom, *, bn: str, scale: str, top: str | None = None,
             global_stats: bool | None = None, eps: float | None = None,
             scale_params=None, scale_fillers: bool = False):
    """BatchNorm then Scale (γ, β).  In place on ``bottom`` when ``top`` is None, else the
    BatchNorm writes the new top ``top`` and the Scale works in place on it.  BatchNorm's
    statistics are not learned: ``use_global_stats`` is written only when ``global_stats`` is
    given (Caffe otherwise uses batch statistics in TRAIN and the stored ones in TEST)."""
    bnp = {}
    if global_stats is not None:
        bnp["use_global_stats"] = global_stats
    if eps is not None:
        bnp["eps"] = eps
    kw = dict(batch_norm_param=bnp) if bnp else {}
    if top is None:
        n[bn] = L.BatchNorm(bottom, in_place=True, **kw)
        x = n[bn]
    else:
        n[top] = L.BatchNorm(bottom, name=bn, **kw)
        x = n[top]
    skw = dict(bias_term=True)
    if scale_fillers:
        skw.update(filler=dict(value=1), bias_filler=dict(value=0))
    if scale_params is not None:
        skw["param"] = scale_params
    n[scale] = L.Scale(x, in_place=True, **skw)
    return n[scale]


def conv_bn_scale_relu(n: NetSpec, bottom, *, conv: str, bn: str, scale: str,
                       relu: str | None, num_output: int, kernel_size: int, stride: int = 1,
                       pad: int = 0, group: int | None = None, bias_term: bool = False,
                       bn_top: str | None = None, conv_kw: dict | None = None,
                       bn_kw: dict | None = None, write_stride: bool = False,
                       write_pad: bool = False):
    """Convolution → BatchNorm → Scale → (ReLU), the unit of ResNet and MobileNet.
    Returns the last top."""
    ckw = dict(num_output=num_output, kernel_size=kernel_size)
    if pad or write_pad:
        ckw["pad"] = pad
    if stride != 1 or write_stride:
        ckw["stride"] = stride
    if group is not None:
        ckw["group"] = group
    if not bias_term:
        ckw["bias_term"] = False
    ckw.update(conv_kw or {})
    n[conv] = L.Convolution(bottom, **ckw)
    x = bn_scale(n, n[conv], bn=bn, scale=scale, top=bn_top, **(bn_kw or {}))
    if relu is not None:
        n[relu] = L.ReLU(x, in_place=True)
        x = n[relu]
    return x


def bottleneck(n: NetSpec, bottom, *, name: str, inner: int, out: int, stride: int,
               project: bool, bn_kw: dict, conv_kw: dict, basic: bool = False):
    """A residual unit with the original Caffe ResNets' names (``res2a_branch2a`` ...):
    1x1-3x3-1x1 bottleneck (stride on the first 1x1, as in the MSRA models), or with
    ``basic=True`` the two-3x3 basic block of ResNet-18/34; a projection shortcut
    (``branch1``) when ``project``.  Eltwise sum, then ReLU."""
    def unit(x, branch, num_output, k, s, pad, relu=True):
        return conv_bn_scale_relu(
            n, x, conv=f"res{name}_branch{branch}", bn=f"bn{name}_branch{branch}",
            scale=f"scale{name}_branch{branch}",
            relu=f"res{name}_branch{branch}_relu" if relu else None, num_output=num_output,
            kernel_size=k, stride=s, pad=pad, conv_kw=conv_kw, bn_kw=bn_kw,
            write_stride=True, write_pad=True)

    shortcut = unit(bottom, "1", out, 1, stride, 0, relu=False) if project else bottom
    if basic:
        x = unit(bottom, "2a", out, 3, stride, 1)
        x = unit(x, "2b", out, 3, 1, 1, relu=False)
    else:
        x = unit(bottom, "2a", inner, 1, stride, 0)
        x = unit(x, "2b", inner, 3, 1, 1)
        x = unit(x, "2c", out, 1, 1, 0, relu=False)
    n[f"res{name}"] = L.Eltwise(shortcut, x)
    n[f"res{name}_relu"] = L.ReLU(n[f"res{name}"], in_place=True)
    return n[f"res{name}_relu"]


def conv_relu(n: NetSpec, bottom, name: str, relu: str, conv_kw: dict, **kw):
    """Convolution + in-place ReLU (GoogLeNet, SqueezeNet); returns the ReLU's top."""
    n[name] = L.Convolution(bottom, **kw, **conv_kw)
    n[relu] = L.ReLU(n[name], in_place=True)
    return n[relu]


def fire(n: NetSpec, bottom, name: str, squeeze: int, expand: int, conv_kw: dict):
    """SqueezeNet's fire module: 1x1 squeeze, then 1x1 and 3x3 expands concatenated."""
    s = conv_relu(n, bottom, f"{name}/squeeze1x1", f"{name}/relu_squeeze1x1", conv_kw,
                  num_output=squeeze, kernel_size=1)
    e1 = conv_relu(n, s, f"{name}/expand1x1", f"{name}/relu_expand1x1", conv_kw,
                   num_output=expand, kernel_size=1)
    e3 = conv_relu(n, s, f"{name}/expand3x3", f"{name}/relu_expand3x3", conv_kw,
                   num_output=expand, kernel_size=3, pad=1)
    n[f"{name}/concat"] = L.Concat(e1, e3)
    return n[f"{name}/concat"]


def inception(n: NetSpec, bottom, name: str, c1: int, c3r: int, c3: int, c5r: int, c5: int,
              pool_proj: int, conv_kw: dict):
    """GoogLeNet's inception module (BVLC names: ``inception_3a/1x1`` ...)."""
    p = f"inception_{name}"
    b1 = conv_relu(n, bottom, f"{p}/1x1", f"{p}/relu_1x1", conv_kw, num_output=c1,
                   kernel_size=1)
    r3 = conv_relu(n, bottom, f"{p}/3x3_reduce", f"{p}/relu_3x3_reduce", conv_kw,
                   num_output=c3r, kernel_size=1)
    b3 = conv_relu(n, r3, f"{p}/3x3", f"{p}/relu_3x3", conv_kw, num_output=c3, pad=1,
                   kernel_size=3)
    r5 = conv_relu(n, bottom, f"{p}/5x5_reduce", f"{p}/relu_5x5_reduce", conv_kw,
                   num_output=c5r, kernel_size=1)
    b5 = conv_relu(n, r5, f"{p}/5x5", f"{p}/relu_5x5", conv_kw, num_output=c5, pad=2,
                   kernel_size=5)
    n[f"{p}/pool"] = L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
    bp = conv_relu(n, n[f"{p}/pool"], f"{p}/pool_proj", f"{p}/relu_pool_proj", conv_kw,
                   num_output=pool_proj, kernel_size=1)
    n[f"{p}/output"] = L.Concat(b1, b3, b5, bp)
    return n[f"{p}/output"]


def depthwise_separable(n: NetSpec, bottom, name: str, cin: int, cout: int, stride: int,
                        conv_kw: dict, bn_kw: dict):
    """MobileNet v1's unit: 3x3 depthwise conv (group = channels) and 1x1 pointwise conv,
    each followed by BatchNorm, Scale and ReLU (names ``conv2_1/dw``, ``conv2_1/sep`` ...)."""
    x = conv_bn_scale_relu(n, bottom, conv=f"conv{name}/dw", bn=f"conv{name}/dw/bn",
                           scale=f"conv{name}/dw/scale", relu=f"relu{name}/dw",
                           num_output=cin, kernel_size=3, pad=1, stride=stride, group=cin,
                           conv_kw=dict(conv_kw, engine=P.Convolution.CAFFE), bn_kw=bn_kw,
                           write_stride=True)
    return conv_bn_scale_relu(n, x, conv=f"conv{name}/sep", bn=f"conv{name}/sep/bn",
                              scale=f"conv{name}/sep/scale", relu=f"relu{name}/sep",
                              num_output=cout, kernel_size=1, conv_kw=conv_kw, bn_kw=bn_kw,
                              write_stride=True, write_pad=True)
