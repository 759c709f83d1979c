"""VGG-16 and VGG-19 (Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale
Image Recognition", ICLR 2015), with the layer names of the authors' Caffe release
(``conv1_1`` ... ``fc8``; gist ksimonyan/211839e770f7b538e2d8 and 3785162f95cd2d5fee77)."""
from __future__ import annotations

from ..netspec import NetSpec
from ..netspec import layers as L
from ..netspec import params as P
from ..proto import pb
from . import blocks

VARIANTS = (16, 19)
_CONVS = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_WIDTH = (64, 128, 256, 512, 512)
VGG_MEAN = (103.939, 116.779, 123.68)   # BGR, from the authors' Caffe model page


def build(depth: int = 16, *, deploy: bool = True, data_dir: str = blocks.DEFAULT_DATA,
          batch: int = 1, train_batch: int = 32, test_batch: int = 50) -> pb.NetParameter:
    depth = int(depth)
    if depth not in _CONVS:
        raise ValueError(f"VGG depth must be one of {VARIANTS}, got {depth}")
    n = NetSpec(name=f"VGG_ILSVRC_{depth}_layers")
    if deploy:
        blocks.deploy_input(n, (batch, 3, 224, 224), name="input")
        kw = {}
    else:
        train_layer = blocks.imagenet_data(n, data_dir=data_dir, crop=224, mean=VGG_MEAN,
                                           train_batch=train_batch, test_batch=test_batch)
        # sec. 3.1: weights from N(0, 0.01^2), biases 0; the usual Caffe lr/decay multipliers
        kw = dict(param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                  weight_filler=dict(type="gaussian", std=0.01),
                  bias_filler=dict(type="constant", value=0))
    x = n.data
    for b, (count, width) in enumerate(zip(_CONVS[depth], _WIDTH), start=1):
        for i in range(1, count + 1):
            x = blocks.conv_relu(n, x, f"conv{b}_{i}", f"relu{b}_{i}", kw, num_output=width,
                                 pad=1, kernel_size=3)
        n[f"pool{b}"] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        x = n[f"pool{b}"]
    for i in (6, 7):
        n[f"fc{i}"] = L.InnerProduct(x, num_output=4096, **kw)
        n[f"relu{i}"] = L.ReLU(n[f"fc{i}"], in_place=True)
        n[f"drop{i}"] = L.Dropout(n[f"relu{i}"], in_place=True, dropout_ratio=0.5)
        x = n[f"drop{i}"]
    n.fc8 = L.InnerProduct(x, num_output=1000, **kw)
    if deploy:
        n.prob = L.Softmax(n.fc8)
        return n.to_proto()
    blocks.classifier_head(n, n.fc8, n.label)
    return blocks.train_val(n, train_layer)


def solver(depth: int = 16, *, net: str, snapshot_prefix: str):
    """Simonyan & Zisserman 2015, sec. 3.1: mini-batch 256, momentum 0.9, weight decay 5e-4,
    dropout 0.5, lr 0.01 decreased 3 times by 10, 370K iterations (74 epochs)."""
    s = pb.SolverParameter(
        net=net, test_iter=[1000], test_interval=5000, test_initialization=False,
        display=20, average_loss=20, base_lr=0.01, lr_policy="multistep", gamma=0.1,
        stepvalue=[100000, 200000, 300000], max_iter=370000, momentum=0.9,
        weight_decay=0.0005, iter_size=8, snapshot=10000, snapshot_prefix=snapshot_prefix,
        solver_mode=pb.SolverParameter.GPU)
    note = (f"VGG-{depth} solver: Simonyan & Zisserman, \"Very Deep Convolutional Networks for "
            "Large-Scale Image\nRecognition\" (ICLR 2015), sec. 3.1: momentum 0.9, weight decay "
            "5e-4, base_lr 0.01 divided by 10\nthree times (the paper on plateaus of the "
            "validation accuracy; fixed steps here), 370K iterations,\nmini-batch 256 = "
            "batch_size 32 x iter_size 8.")
    return note, s
