"""MobileNet v1 (Howard et al., arXiv:1704.04861) and v2 (Sandler et al., CVPR 2018) as in
the Caffe ports of github.com/shicai/MobileNet-Caffe: same layer names, BatchNorm (eps 1e-5,
``use_global_stats: true`` in deploy) + Scale after every convolution, ReLU activations.

v2 reproduces that port exactly, including where it downsamples: its ``conv4_3`` keeps
28x28 and ``conv4_7`` reduces to 14x14 (the paper's table puts the stride on the first
64-channel block); the parameters are the same either way.
"""
from __future__ import annotations

from ..netspec import NetSpec
from ..netspec import layers as L
from ..netspec import params as P
from ..proto import pb
from . import blocks

VARIANTS = ("1", "2")
_V1 = [  # name, in, out, stride
    ("2_1", 32, 64, 1), ("2_2", 64, 128, 2), ("3_1", 128, 128, 1), ("3_2", 128, 256, 2),
    ("4_1", 256, 256, 1), ("4_2", 256, 512, 2), ("5_1", 512, 512, 1), ("5_2", 512, 512, 1),
    ("5_3", 512, 512, 1), ("5_4", 512, 512, 1), ("5_5", 512, 512, 1), ("5_6", 512, 1024, 2),
    ("6", 1024, 1024, 1),
]
_V2 = [  # name, expanded channels, out, stride
    ("2_1", 32, 16, 1), ("2_2", 96, 24, 2), ("3_1", 144, 24, 1), ("3_2", 144, 32, 2),
    ("4_1", 192, 32, 1), ("4_2", 192, 32, 1), ("4_3", 192, 64, 1), ("4_4", 384, 64, 1),
    ("4_5", 384, 64, 1), ("4_6", 384, 64, 1), ("4_7", 384, 96, 2), ("5_1", 576, 96, 1),
    ("5_2", 576, 96, 1), ("5_3", 576, 160, 2), ("6_1", 960, 160, 1), ("6_2", 960, 160, 1),
    ("6_3", 960, 320, 1),
]
_CONV = dict(param=[dict(lr_mult=1, decay_mult=1)], weight_filler=dict(type="msra"))
_SCALE_PARAMS = [dict(lr_mult=1, decay_mult=0), dict(lr_mult=1, decay_mult=0)]


def build(version: str = "1", *, deploy: bool = True, data_dir: str = blocks.DEFAULT_DATA,
          batch: int = 1, train_batch: int = 32, test_batch: int = 50) -> pb.NetParameter:
    version = str(version)
    if version not in VARIANTS:
        raise ValueError(f"MobileNet version must be one of {VARIANTS}, got {version}")
    n = NetSpec(name="MOBILENET" if version == "1" else "MOBILENET_V2")
    if deploy:
        blocks.deploy_input(n, (batch, 3, 224, 224), name="input")
    else:
        # the port's preprocessing: BGR mean [103.94, 116.78, 123.68], scale 0.017
        train_layer = blocks.imagenet_data(n, data_dir=data_dir, crop=224,
                                           mean=blocks.BGR_MEAN_FINE, scale=0.017,
                                           train_batch=train_batch, test_batch=test_batch)
    bn_kw = dict(eps=1e-5, scale_params=_SCALE_PARAMS, scale_fillers=(version == "1"))
    if deploy:
        bn_kw["global_stats"] = True
    v2 = version == "2"

    def unit(x, conv, bn, scale, relu, cout, k, stride=1, group=None, **extra):
        return blocks.conv_bn_scale_relu(
            n, x, conv=conv, bn=bn, scale=scale, relu=relu, num_output=cout, kernel_size=k,
            stride=stride, pad=(k - 1) // 2, group=group,
            conv_kw=dict(_CONV, **extra), bn_kw=bn_kw, bn_top=bn if v2 else None,
            write_stride=not v2 and (k == 3 or conv.endswith("/sep")),
            write_pad=not v2 and conv.endswith("/sep"))

    x = unit(n.data, "conv1", "conv1/bn", "conv1/scale", "relu1", 32, 3, 2)
    if not v2:
        for name, cin, cout, stride in _V1:
            x = blocks.depthwise_separable(n, x, name, cin, cout, stride, _CONV, bn_kw)
        last = "pool6"
    else:
        channels = 32
        for name, mid, cout, stride in _V2:
            c = f"conv{name}"
            y = unit(x, f"{c}/expand", f"{c}/expand/bn", f"{c}/expand/scale",
                     f"relu{name}/expand", mid, 1)
            y = unit(y, f"{c}/dwise", f"{c}/dwise/bn", f"{c}/dwise/scale",
                     f"relu{name}/dwise", mid, 3, stride, group=mid, engine=P.Convolution.CAFFE)
            y = unit(y, f"{c}/linear", f"{c}/linear/bn", f"{c}/linear/scale", None, cout, 1)
            if stride == 1 and channels == cout:
                n[f"block_{name}"] = L.Eltwise(x, y)
                y = n[f"block_{name}"]
            x, channels = y, cout
        x = unit(x, "conv6_4", "conv6_4/bn", "conv6_4/scale", "relu6_4", 1280, 1)
        last = "pool6"
    n[last] = L.Pooling(x, pool=P.Pooling.AVE, global_pooling=True)
    n.fc7 = L.Convolution(n[last], num_output=1000, kernel_size=1,
                          param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                          weight_filler=dict(type="msra"),
                          bias_filler=dict(type="constant", value=0))
    if deploy:
        n.prob = L.Softmax(n.fc7)
        return n.to_proto()
    blocks.classifier_head(n, n.fc7, n.label)
    return blocks.train_val(n, train_layer)


def solver(version: str = "1", *, net: str, snapshot_prefix: str):
    """The papers' recipe as far as Caffe expresses it: RMSProp (decay 0.9, epsilon 1.0 as
    in Inception-v3 / TF-slim), initial lr 0.045; v1: x0.94 every 2 epochs, weight decay
    4e-5 (TF-slim's mobilenet_v1 default); v2 (sec. 6.1): x0.98 every epoch, weight decay
    4e-5, batch 96.  Caffe's RMSProp has no momentum term (the paper's 0.9 is dropped)."""
    batch = 96
    epoch = (1281167 + batch - 1) // batch        # 13346 iterations
    common = dict(net=net, test_iter=[1000], test_interval=epoch, test_initialization=False,
                  display=20, average_loss=20, type="RMSProp", rms_decay=0.9, delta=1.0,
                  base_lr=0.045, lr_policy="step", weight_decay=0.00004, iter_size=3,
                  snapshot=epoch, snapshot_prefix=snapshot_prefix,
                  solver_mode=pb.SolverParameter.GPU)
    if str(version) == "1":
        s = pb.SolverParameter(gamma=0.94, stepsize=2 * epoch, max_iter=100 * epoch, **common)
        note = ("MobileNet v1 solver: Howard et al., \"MobileNets\" (arXiv:1704.04861), sec. 4: "
                "RMSProp as in\nInception-v3 (decay 0.9, epsilon 1.0, lr 0.045 x0.94 every 2 "
                "epochs), little weight decay\n(4e-5, TF-slim's default); batch 96 = 32 x "
                "iter_size 3; 100 epochs.\nCaffe's RMSProp has no momentum term.")
    else:
        s = pb.SolverParameter(gamma=0.98, stepsize=epoch, max_iter=300 * epoch, **common)
        note = ("MobileNet v2 solver: Sandler et al., \"MobileNetV2\" (CVPR 2018), sec. 6.1: "
                "RMSProp, decay 0.9,\nweight decay 4e-5, initial lr 0.045 x0.98 every epoch, "
                "batch 96 = 32 x iter_size 3; 300 epochs.\nCaffe's RMSProp has no momentum "
                "term (the paper's 0.9 is dropped).")
    return note, s
