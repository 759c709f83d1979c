"""ResNet-18/34/50/101/152 (He et al., "Deep Residual Learning for Image Recognition", 2015)
in the style of the original Caffe models (github.com/KaimingHe/deep-residual-networks):
layer names ``res2a_branch2a``/``bn2a_branch2a``/``scale2a_branch2a``, BatchNorm + Scale
after every convolution, stride 2 on the first 1x1 convolution of a stage (the projection
``branch1`` too).  ResNet-18/34 (not released by MSRA) use the same style with
basic blocks (two 3x3 convolutions).

conv1 has a bias only in ResNet-50, exactly as in the MSRA files (ResNet-101/152 write
``bias_term: false``).  ResNet-18/34 follow 101/152 (no conv1 bias), so their learnable
parameters equal torchvision's: 11,689,512 and 21,797,672.

Deploy nets set ``use_global_stats: true`` like the originals; train_val nets leave it unset,
so Caffe uses batch statistics in TRAIN and the stored averages in TEST.
"""
from __future__ import annotations

from ..netspec import NetSpec
from ..netspec import layers as L
from ..netspec import params as P
from ..proto import pb
from . import blocks

VARIANTS = (18, 34, 50, 101, 152)
_CONFIG = {18: (True, (2, 2, 2, 2)), 34: (True, (3, 4, 6, 3)), 50: (False, (3, 4, 6, 3)),
           101: (False, (3, 4, 23, 3)), 152: (False, (3, 8, 36, 3))}


def _block_name(depth: int, stage: int, index: int) -> str:
    # the MSRA files name deep stages res4a, res4b1 ... res4b22 (and res3b1 ... for 152)
    if depth >= 101 and stage in (3, 4):
        return "a" if index == 0 else f"b{index}"
    return "abcdefghijklmnopqrstuvwxyz"[index]


def build(depth: int = 50, *, deploy: bool = True, data_dir: str = blocks.DEFAULT_DATA,
          batch: int = 1, train_batch: int = 32, test_batch: int = 50) -> pb.NetParameter:
    depth = int(depth)
    if depth not in _CONFIG:
        raise ValueError(f"ResNet depth must be one of {VARIANTS}, got {depth}")
    basic, counts = _CONFIG[depth]
    n = NetSpec(name=f"ResNet-{depth}")
    if deploy:
        blocks.deploy_input(n, (batch, 3, 224, 224), name="input")
        bn_kw = dict(global_stats=True)
        conv_kw = {}
    else:
        train_layer = blocks.imagenet_data(n, data_dir=data_dir, crop=224,
                                           train_batch=train_batch, test_batch=test_batch)
        bn_kw = {}
        conv_kw = dict(weight_filler=dict(type="msra"))

    # only the MSRA ResNet-50 file gives conv1 a bias; 101/152 (and our 18/34) do not
    bias = {} if depth == 50 else dict(bias_term=False)
    n.conv1 = L.Convolution(n.data, num_output=64, kernel_size=7, pad=3, stride=2, **bias,
                            **conv_kw)
    x = blocks.bn_scale(n, n.conv1, bn="bn_conv1", scale="scale_conv1", **bn_kw)
    n.conv1_relu = L.ReLU(x, in_place=True)
    n.pool1 = L.Pooling(n.conv1_relu, kernel_size=3, stride=2, pool=P.Pooling.MAX)
    x, channels = n.pool1, 64
    for s, count in enumerate(counts):
        stage, inner = s + 2, 64 << s
        out = inner if basic else inner * 4
        for i in range(count):
            stride = 2 if (i == 0 and stage > 2) else 1
            x = blocks.bottleneck(n, x, name=f"{stage}{_block_name(depth, stage, i)}",
                                  inner=inner, out=out, stride=stride,
                                  project=(stride != 1 or channels != out), bn_kw=bn_kw,
                                  conv_kw=conv_kw, basic=basic)
            channels = out
    n.pool5 = L.Pooling(x, kernel_size=7, stride=1, pool=P.Pooling.AVE)
    fc_kw = {} if deploy else dict(weight_filler=dict(type="msra"),
                                   bias_filler=dict(type="constant", value=0))
    n.fc1000 = L.InnerProduct(n.pool5, num_output=1000, **fc_kw)
    if deploy:
        n.prob = L.Softmax(n.fc1000)
        return n.to_proto()
    blocks.classifier_head(n, n.fc1000, n.label)
    return blocks.train_val(n, train_layer)


def solver(depth: int = 50, *, net: str, snapshot_prefix: str) -> tuple[str, pb.SolverParameter]:
    """He et al. 2015, sec. 3.4: SGD, momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10
    (here every 30 epochs, fb.resnet.torch's schedule), mini-batch 256 (32 x iter_size 8),
    90 epochs of the 1,281,167 ImageNet training images (5,005 iterations an epoch)."""
    s = pb.SolverParameter(
        net=net, test_iter=[1000], test_interval=5005, test_initialization=False,
        display=20, average_loss=20, base_lr=0.1, lr_policy="step", gamma=0.1,
        stepsize=150150, max_iter=450450, momentum=0.9, weight_decay=0.0001, iter_size=8,
        snapshot=5005, snapshot_prefix=snapshot_prefix, solver_mode=pb.SolverParameter.GPU)
    note = (f"ResNet-{depth} solver: He, Zhang, Ren, Sun, \"Deep Residual Learning for Image "
            "Recognition\" (CVPR 2016), sec. 3.4:\nSGD, momentum 0.9, weight decay 0.0001, "
            "base_lr 0.1 divided by 10 every 30 epochs (the schedule of\nfacebook/fb.resnet.torch), "
            "90 epochs, mini-batch 256 = batch_size 32 x iter_size 8;\none epoch = 5005 "
            "iterations; test: 50,000 validation images = 1000 x 50.")
    return note, s
