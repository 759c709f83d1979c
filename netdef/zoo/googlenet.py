"""GoogLeNet (Szegedy et al., "Going Deeper with Convolutions", CVPR 2015) as in BVLC Caffe's
models/bvlc_googlenet: same layer names, fillers and multipliers; the train_val net has the
two auxiliary classifiers (loss weight 0.3) of the paper, the deploy net does not."""
from __future__ import annotations

from ..netspec import NetSpec
from ..netspec import layers as L
from ..netspec import params as P
from ..proto import pb
from . import blocks

VARIANTS = ("v1",)
#: name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj (Table 1 of the paper)
_INCEPTION = [
    ("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool3",
    ("4a", 192, 96, 208, 16, 48, 64), "loss1", ("4b", 160, 112, 224, 24, 64, 64),
    ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64), "loss2",
    ("4e", 256, 160, 320, 32, 128, 128), "pool4",
    ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128),
]
_MULT = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
_CONV = dict(param=_MULT, weight_filler=dict(type="xavier"),
             bias_filler=dict(type="constant", value=0.2))
_CLS = dict(param=_MULT, weight_filler=dict(type="xavier"),
            bias_filler=dict(type="constant", value=0))


def _aux(n: NetSpec, x, k: int):
    p = f"loss{k}"
    n[f"{p}/ave_pool"] = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=5, stride=3)
    y = blocks.conv_relu(n, n[f"{p}/ave_pool"], f"{p}/conv", f"{p}/relu_conv", _CONV,
                         num_output=128, kernel_size=1)
    n[f"{p}/fc"] = L.InnerProduct(y, num_output=1024, **_CONV)
    n[f"{p}/relu_fc"] = L.ReLU(n[f"{p}/fc"], in_place=True)
    n[f"{p}/drop_fc"] = L.Dropout(n[f"{p}/relu_fc"], in_place=True, dropout_ratio=0.7)
    n[f"{p}/classifier"] = L.InnerProduct(n[f"{p}/drop_fc"], num_output=1000, **_CLS)
    blocks.classifier_head(n, n[f"{p}/classifier"], n.label, loss=f"{p}/loss",
                           loss_top=f"{p}/loss{k}", top1=f"{p}/top-1", top5=f"{p}/top-5",
                           loss_weight=0.3)


def build(variant: str = "v1", *, deploy: bool = True, data_dir: str = blocks.DEFAULT_DATA,
          batch: int = 10, train_batch: int = 32, test_batch: int = 50) -> pb.NetParameter:
    n = NetSpec(name="GoogleNet")
    if deploy:
        blocks.deploy_input(n, (batch, 3, 224, 224))
    else:
        train_layer = blocks.imagenet_data(n, data_dir=data_dir, crop=224,
                                           train_batch=train_batch, test_batch=test_batch)
    x = blocks.conv_relu(n, n.data, "conv1/7x7_s2", "conv1/relu_7x7", _CONV, num_output=64,
                         pad=3, kernel_size=7, stride=2)
    n["pool1/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    lrn = dict(local_size=5, alpha=0.0001, beta=0.75)
    n["pool1/norm1"] = L.LRN(n["pool1/3x3_s2"], **lrn)
    x = blocks.conv_relu(n, n["pool1/norm1"], "conv2/3x3_reduce", "conv2/relu_3x3_reduce",
                         _CONV, num_output=64, kernel_size=1)
    x = blocks.conv_relu(n, x, "conv2/3x3", "conv2/relu_3x3", _CONV, num_output=192, pad=1,
                         kernel_size=3)
    n["conv2/norm2"] = L.LRN(x, **lrn)
    n["pool2/3x3_s2"] = L.Pooling(n["conv2/norm2"], pool=P.Pooling.MAX, kernel_size=3,
                                  stride=2)
    x = n["pool2/3x3_s2"]
    for item in _INCEPTION:
        if item in ("pool3", "pool4"):
            n[f"{item}/3x3_s2"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
            x = n[f"{item}/3x3_s2"]
        elif item in ("loss1", "loss2"):
            if not deploy:
                _aux(n, x, int(item[-1]))
        else:
            x = blocks.inception(n, x, *item, conv_kw=_CONV)
    n["pool5/7x7_s1"] = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n["pool5/drop_7x7_s1"] = L.Dropout(n["pool5/7x7_s1"], in_place=True, dropout_ratio=0.4)
    n["loss3/classifier"] = L.InnerProduct(n["pool5/drop_7x7_s1"], num_output=1000, **_CLS)
    if deploy:
        n.prob = L.Softmax(n["loss3/classifier"])
        return n.to_proto()
    blocks.classifier_head(n, n["loss3/classifier"], n.label, loss="loss3/loss3",
                           top1="loss3/top-1", top5="loss3/top-5", loss_weight=1)
    return blocks.train_val(n, train_layer)


def solver(variant: str = "v1", *, net: str, snapshot_prefix: str):
    """BVLC Caffe's models/bvlc_googlenet/quick_solver.prototxt."""
    s = pb.SolverParameter(
        net=net, test_iter=[1000], test_interval=4000, test_initialization=False, display=40,
        average_loss=40, base_lr=0.01, lr_policy="poly", power=0.5, max_iter=2400000,
        momentum=0.9, weight_decay=0.0002, snapshot=40000, snapshot_prefix=snapshot_prefix,
        solver_mode=pb.SolverParameter.GPU)
    note = ("GoogLeNet solver: BVLC Caffe models/bvlc_googlenet/quick_solver.prototxt "
            "(poly, power 0.5, base_lr 0.01,\nmomentum 0.9, weight decay 2e-4, batch 32, "
            "2.4M iterations).")
    return note, s
