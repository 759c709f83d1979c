"""DenseNet-121/161/169/201 (Huang et al., "Densely Connected Convolutional Networks", CVPR
2017) as in the Caffe conversion github.com/shicai/DenseNet-Caffe: BN-ReLU-conv bottleneck
layers (``conv2_1/x1``, ``conv2_1/x2``), ``concat_2_1`` ..., transitions ``conv2_blk`` +
``pool2`` with compression 0.5, output ``fc6`` (a 1x1 convolution, no softmax in deploy).
BatchNorm writes ``use_global_stats`` nowhere, as in those files (Caffe picks by phase)."""
from __future__ import annotations

from ..netspec import NetSpec
from ..netspec import layers as L
from ..netspec import params as P
from ..proto import pb
from . import blocks

VARIANTS = (121, 161, 169, 201)
#: growth rate, initial features, layers per dense block
_CONFIG = {121: (32, 64, (6, 12, 24, 16)), 161: (48, 96, (6, 12, 36, 24)),
           169: (32, 64, (6, 12, 32, 32)), 201: (32, 64, (6, 12, 48, 32))}


def build(depth: int = 121, *, deploy: bool = True, data_dir: str = blocks.DEFAULT_DATA,
          batch: int = 1, train_batch: int = 32, test_batch: int = 50) -> pb.NetParameter:
    depth = int(depth)
    if depth not in _CONFIG:
        raise ValueError(f"DenseNet depth must be one of {VARIANTS}, got {depth}")
    k, init, counts = _CONFIG[depth]
    n = NetSpec(name=f"DENSENET_{depth}")
    if deploy:
        blocks.deploy_input(n, (batch, 3, 224, 224), name="input")
        ckw = {}
    else:
        train_layer = blocks.imagenet_data(n, data_dir=data_dir, crop=224,
                                           mean=blocks.BGR_MEAN_FINE, scale=0.017,
                                           train_batch=train_batch, test_batch=test_batch)
        ckw = dict(weight_filler=dict(type="msra"))
    bn_kw = dict(eps=1e-5)

    def bn_relu_conv(x, tag, relu, cout, ksize, pad=0):
        y = blocks.bn_scale(n, x, bn=f"{tag}/bn", scale=f"{tag}/scale", top=f"{tag}/bn",
                            **bn_kw)
        n[relu] = L.ReLU(y, in_place=True)
        kw = dict(pad=pad) if pad else {}
        n[tag] = L.Convolution(n[relu], num_output=cout, bias_term=False, kernel_size=ksize,
                               **kw, **ckw)
        return n[tag]

    n.conv1 = L.Convolution(n.data, num_output=init, bias_term=False, pad=3, kernel_size=7,
                            stride=2, **ckw)
    y = blocks.bn_scale(n, n.conv1, bn="conv1/bn", scale="conv1/scale", top="conv1/bn",
                        **bn_kw)
    n.relu1 = L.ReLU(y, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=3, stride=2, pad=1,
                        round_mode=P.Pooling.FLOOR)
    x, channels = n.pool1, init
    for b, count in enumerate(counts, start=2):
        for i in range(1, count + 1):
            y = bn_relu_conv(x, f"conv{b}_{i}/x1", f"relu{b}_{i}/x1", 4 * k, 1)
            y = bn_relu_conv(y, f"conv{b}_{i}/x2", f"relu{b}_{i}/x2", k, 3, pad=1)
            n[f"concat_{b}_{i}"] = L.Concat(x, y)
            x, channels = n[f"concat_{b}_{i}"], channels + k
        # the DenseNet-201 file names its transitions after the last layer of the block
        blk, sfx = (f"{b}_{count}/blk", f"{b}_{count}") if depth == 201 else (f"{b}_blk", b)
        if b < 5:
            channels //= 2
            y = bn_relu_conv(x, f"conv{blk}", f"relu{blk}", channels, 1)
            n[f"pool{sfx}"] = L.Pooling(y, pool=P.Pooling.AVE, kernel_size=2, stride=2)
            x = n[f"pool{sfx}"]
    y = blocks.bn_scale(n, x, bn=f"conv{blk}/bn", scale=f"conv{blk}/scale", top=f"conv{blk}/bn",
                        **bn_kw)
    n[f"relu{blk}"] = L.ReLU(y, in_place=True)
    n.pool5 = L.Pooling(n[f"relu{blk}"], pool=P.Pooling.AVE, global_pooling=True)
    fkw = {} if deploy else dict(weight_filler=dict(type="msra"),
                                 bias_filler=dict(type="constant", value=0))
    n.fc6 = L.Convolution(n.pool5, num_output=1000, kernel_size=1, **fkw)
    if deploy:
        return n.to_proto()
    blocks.classifier_head(n, n.fc6, n.label)
    return blocks.train_val(n, train_layer)


def solver(depth: int = 121, *, net: str, snapshot_prefix: str):
    """Huang et al. 2017, sec. 4.2 (ImageNet): SGD with Nesterov momentum 0.9 (no dampening),
    weight decay 1e-4, batch 256 for 90 epochs, lr 0.1 divided by 10 at epochs 30 and 60."""
    s = pb.SolverParameter(
        net=net, test_iter=[1000], test_interval=5005, test_initialization=False, display=20,
        average_loss=20, type="Nesterov", base_lr=0.1, lr_policy="multistep", gamma=0.1,
        stepvalue=[150150, 300300], max_iter=450450, momentum=0.9, weight_decay=0.0001,
        iter_size=8, snapshot=5005, snapshot_prefix=snapshot_prefix,
        solver_mode=pb.SolverParameter.GPU)
    note = (f"DenseNet-{depth} solver: Huang, Liu, van der Maaten, Weinberger, \"Densely "
            "Connected Convolutional\nNetworks\" (CVPR 2017), sec. 4.2: Nesterov momentum 0.9, "
            "weight decay 1e-4, base_lr 0.1 divided\nby 10 at epochs 30 and 60, 90 epochs, "
            "batch 256 = batch_size 32 x iter_size 8 (5005 iterations an epoch).")
    return note, s
