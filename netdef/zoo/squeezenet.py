"""SqueezeNet v1.0 and v1.1 (Iandola et al., arXiv:1602.07360) as released in
github.com/DeepScale/SqueezeNet: same layer names, fillers and data settings."""
from __future__ import annotations

from ..netspec import NetSpec
from ..netspec import layers as L
from ..netspec import params as P
from ..proto import pb
from . import blocks

VARIANTS = ("1.0", "1.1")
#: (name, squeeze, expand) and the pooling layers between them
_FIRES = {
    "1.0": ["fire2:16:64", "fire3:16:64", "fire4:32:128", "pool4", "fire5:32:128",
            "fire6:48:192", "fire7:48:192", "fire8:64:256", "pool8", "fire9:64:256"],
    "1.1": ["fire2:16:64", "fire3:16:64", "pool3", "fire4:32:128", "fire5:32:128", "pool5",
            "fire6:48:192", "fire7:48:192", "fire8:64:256", "fire9:64:256"],
}


def build(version: str = "1.0", *, deploy: bool = True, data_dir: str = blocks.DEFAULT_DATA,
          batch: int = 10, train_batch: int = 32, test_batch: int = 25) -> pb.NetParameter:
    version = str(version)
    if version not in _FIRES:
        raise ValueError(f"SqueezeNet version must be one of {VARIANTS}, got {version}")
    n = NetSpec()
    if deploy:
        blocks.deploy_input(n, (batch, 3, 227, 227), name="input" if version == "1.0"
                            else "data")
        kw = {}
    else:
        train_layer = blocks.imagenet_data(n, data_dir=data_dir, crop=227,
                                           train_batch=train_batch, test_batch=test_batch)
        kw = dict(weight_filler=dict(type="xavier"))
    if version == "1.0":
        n.conv1 = L.Convolution(n.data, num_output=96, kernel_size=7, stride=2, **kw)
    else:
        n.conv1 = L.Convolution(n.data, num_output=64, kernel_size=3, stride=2, **kw)
    n.relu_conv1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu_conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = n.pool1
    for item in _FIRES[version]:
        if item.startswith("pool"):
            n[item] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
            x = n[item]
        else:
            name, s, e = item.split(":")
            x = blocks.fire(n, x, name, int(s), int(e), kw)
    n.drop9 = L.Dropout(x, in_place=True, dropout_ratio=0.5)
    pad = dict(pad=1) if version == "1.0" else {}   # v1.0's conv10 pads by 1 (15x15 output)
    ckw = {} if deploy else dict(weight_filler=dict(type="gaussian", mean=0.0, std=0.01))
    n.conv10 = L.Convolution(n.drop9, num_output=1000, kernel_size=1, **pad, **ckw)
    n.relu_conv10 = L.ReLU(n.conv10, in_place=True)
    n.pool10 = L.Pooling(n.relu_conv10, pool=P.Pooling.AVE, global_pooling=True)
    if deploy:
        n.prob = L.Softmax(n.pool10)
        return n.to_proto()
    blocks.classifier_head(n, n.pool10, n.label)
    return blocks.train_val(n, train_layer)


def solver(version: str = "1.0", *, net: str, snapshot_prefix: str):
    """DeepScale/SqueezeNet's SqueezeNet_v1.x/solver.prototxt (identical for both)."""
    s = pb.SolverParameter(
        net=net, test_iter=[2000], test_interval=1000, test_initialization=False,
        base_lr=0.04, display=40, average_loss=40, max_iter=170000, iter_size=16,
        lr_policy="poly", power=1.0, momentum=0.9, weight_decay=0.0002, snapshot=1000,
        snapshot_prefix=snapshot_prefix, random_seed=42, solver_mode=pb.SolverParameter.GPU)
    note = (f"SqueezeNet v{version} solver: github.com/DeepScale/SqueezeNet "
            f"SqueezeNet_v{version}/solver.prototxt\n(poly, power 1.0 = linear decay, base_lr "
            "0.04, momentum 0.9, weight decay 2e-4,\nbatch 512 = batch_size 32 x iter_size 16, "
            "170K iterations).  Please cite Iandola et al.,\n\"SqueezeNet: AlexNet-level "
            "accuracy with 50x fewer parameters and <0.5MB model size\", arXiv:1602.07360.")
    return note, s
