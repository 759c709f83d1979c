"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012) as in BVLC Caffe's models/bvlc_alexnet, and its CaffeNet variant
(models/bvlc_reference_caffenet: pooling before local response normalization, biases 1 where
AlexNet has 0.1): same layer names, fillers and multipliers.  The train_val nets use the mean
pixel (104, 117, 123) that BVLC's files give as the alternative to their mean image."""
from __future__ import annotations

from ..netspec import NetSpec
from ..netspec import layers as L
from ..netspec import params as P
from ..proto import pb
from . import blocks

VARIANTS = ("alexnet", "caffenet")
_MULT = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]


def _kw(std: float, bias: float) -> dict:
    return dict(param=_MULT, weight_filler=dict(type="gaussian", std=std),
                bias_filler=dict(type="constant", value=bias))


def build(variant: str = "alexnet", *, deploy: bool = True,
          data_dir: str = blocks.DEFAULT_DATA, batch: int = 10, train_batch: int = 256,
          test_batch: int = 50) -> pb.NetParameter:
    caffenet = variant == "caffenet"
    one = 1 if caffenet else 0.1               # the biases BVLC sets to 1 (CaffeNet) / 0.1
    n = NetSpec(name="CaffeNet" if caffenet else "AlexNet")
    if deploy:
        blocks.deploy_input(n, (batch, 3, 227, 227))
    else:
        train_layer = blocks.imagenet_data(n, data_dir=data_dir, crop=227,
                                           train_batch=train_batch, test_batch=test_batch)
    lrn = dict(local_size=5, alpha=0.0001, beta=0.75)

    def pool_norm(x, k: int):
        pool, norm = f"pool{k}", f"norm{k}"
        if caffenet:
            n[pool] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
            n[norm] = L.LRN(n[pool], **lrn)
            return n[norm]
        n[norm] = L.LRN(x, **lrn)
        n[pool] = L.Pooling(n[norm], pool=P.Pooling.MAX, kernel_size=3, stride=2)
        return n[pool]

    x = blocks.conv_relu(n, n.data, "conv1", "relu1", _kw(0.01, 0), num_output=96,
                         kernel_size=11, stride=4)
    x = pool_norm(x, 1)
    x = blocks.conv_relu(n, x, "conv2", "relu2", _kw(0.01, one), num_output=256, pad=2,
                         kernel_size=5, group=2)
    x = pool_norm(x, 2)
    x = blocks.conv_relu(n, x, "conv3", "relu3", _kw(0.01, 0), num_output=384, pad=1,
                         kernel_size=3)
    x = blocks.conv_relu(n, x, "conv4", "relu4", _kw(0.01, one), num_output=384, pad=1,
                         kernel_size=3, group=2)
    x = blocks.conv_relu(n, x, "conv5", "relu5", _kw(0.01, one), num_output=256, pad=1,
                         kernel_size=3, group=2)
    n.pool5 = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = n.pool5
    for k in (6, 7):
        n[f"fc{k}"] = L.InnerProduct(x, num_output=4096, **_kw(0.005, one))
        n[f"relu{k}"] = L.ReLU(n[f"fc{k}"], in_place=True)
        n[f"drop{k}"] = L.Dropout(n[f"relu{k}"], in_place=True, dropout_ratio=0.5)
        x = n[f"drop{k}"]
    n.fc8 = L.InnerProduct(x, num_output=1000, **_kw(0.01, 0))
    if deploy:
        n.prob = L.Softmax(n.fc8)
        return n.to_proto()
    n.accuracy = L.Accuracy(n.fc8, n.label, include=dict(phase=blocks.TEST))
    n.loss = L.SoftmaxWithLoss(n.fc8, n.label)
    return blocks.train_val(n, train_layer)


def solver(variant: str = "alexnet", *, net: str, snapshot_prefix: str):
    """BVLC Caffe's models/bvlc_alexnet/solver.prototxt (the same for CaffeNet)."""
    s = pb.SolverParameter(
        net=net, test_iter=[1000], test_interval=1000, base_lr=0.01, lr_policy="step",
        gamma=0.1, stepsize=100000, display=20, max_iter=450000, momentum=0.9,
        weight_decay=0.0005, snapshot=10000, snapshot_prefix=snapshot_prefix,
        solver_mode=pb.SolverParameter.GPU)
    name = "CaffeNet" if variant == "caffenet" else "AlexNet"
    folder = "bvlc_reference_caffenet" if variant == "caffenet" else "bvlc_alexnet"
    note = (f"{name} solver: BVLC Caffe models/{folder}/solver.prototxt "
            "(step: base_lr 0.01 divided by 10\nevery 100,000 iterations, momentum 0.9, weight "
            "decay 5e-4, batch 256, 450,000 iterations).")
    return note, s
