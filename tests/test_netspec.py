"""netdef.netspec: pycaffe-style NetSpec with keyword arguments checked against the schema at
the user's line."""
import os

import pytest

from netdef.analysis import analyze
from netdef.config import net_from_text
from netdef.errors import ConfigError
from netdef.net import PHASES, Net
from netdef.netspec import NetSpec, to_proto
from netdef.netspec import layers as L
from netdef.netspec import params as P
from netdef.proto import pb

HERE = os.path.abspath(__file__)


def line_of(marker: str) -> int:
    """Line number of the line of this file that holds ``marker`` (in a comment)."""
    with open(HERE) as f:
        for i, line in enumerate(f, 1):
            if marker in line and "line_of(" not in line:
                return i
    raise AssertionError(marker)


def raises_here(excinfo, marker: str):
    err = excinfo.value
    assert os.path.abspath(err.file) == HERE, str(err)
    assert err.line == line_of(marker), str(err)
    assert f"{os.path.basename(HERE)}:{line_of(marker)}" in str(err)


def small_net():
    n = NetSpec(name="small")
    n.data = L.Input(input_param=dict(shape=dict(dim=[2, 3, 32, 32])))
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3, pad=1,
                            weight_filler=dict(type="msra"),
                            param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n["fc/out"] = L.InnerProduct(n.pool1, num_output=10)
    n.prob = L.Softmax(n["fc/out"])
    return n


def test_basic_proto_and_naming():
    net = small_net().to_proto()
    assert isinstance(net, pb.NetParameter)
    assert net.name == "small"
    assert [l.name for l in net.layer] == ["data", "conv1", "relu1", "pool1", "fc/out", "prob"]
    assert [l.type for l in net.layer] == ["Input", "Convolution", "ReLU", "Pooling",
                                           "InnerProduct", "Softmax"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    assert conv.convolution_param.num_output == 8
    assert list(conv.convolution_param.kernel_size) == [3]   # scalar into a repeated field
    assert conv.convolution_param.weight_filler.type == "msra"
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    # in place: the layer is named after the attribute, its top is its bottom's
    relu = net.layer[2]
    assert (relu.name, list(relu.bottom), list(relu.top)) == ("relu1", ["conv1"], ["conv1"])
    # a consumer of the in-place top reads the underlying blob
    assert list(net.layer[3].bottom) == ["conv1"]
    assert net.layer[3].pooling_param.pool == pb.PoolingParameter.MAX
    assert list(net.layer[5].bottom) == ["fc/out"]


def test_builds_a_net():
    stats = analyze(Net(small_net().to_proto(), PHASES["TEST"], init_params=False))
    assert stats.outputs == {"prob": [2, 10]}
    assert stats.learnable_params == (8 * 27 + 8) + (8 * 16 * 16 * 10 + 10)


@pytest.mark.parametrize("fmt", ["prototxt", "yaml"])
def test_round_trip(fmt):
    n = small_net()
    text = n.to_prototxt() if fmt == "prototxt" else n.to_yaml()
    assert n.to_text(fmt) == text
    back = net_from_text(text, fmt=fmt).message
    assert back == n.to_proto()


def test_ntop_repeated_nested_and_layer_fields():
    n = NetSpec(name="train", force_backward=True)
    n.data, n.label = L.Data(source="db", batch_size=4, backend=P.Data.LMDB, ntop=2,
                             transform_param=dict(crop_size=3, mirror=True,
                                                  mean_value=[1, 2, 3]),
                             include=dict(phase=P.Phase.TRAIN))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=[3, 3], stride=[1, 2],
                           bias_term=False)
    n.loss = L.SoftmaxWithLoss(n.conv, n.label, loss_weight=0.5,
                               loss_param=dict(normalization="VALID"))
    n.acc = L.Accuracy(n.conv, n.label, top_k=5, include=[dict(phase="TEST")])
    n.silence = L.Silence(n.acc, ntop=0)
    net = n.to_proto()
    assert net.force_backward
    d = net.layer[0]
    assert (d.name, list(d.top)) == ("data", ["data", "label"])
    assert d.data_param.source == "db" and d.data_param.backend == pb.DataParameter.LMDB
    assert list(d.transform_param.mean_value) == [1, 2, 3]
    assert d.include[0].phase == pb.TRAIN
    assert list(net.layer[1].convolution_param.kernel_size) == [3, 3]
    assert list(net.layer[1].convolution_param.stride) == [1, 2]
    assert not net.layer[1].convolution_param.bias_term
    loss = net.layer[2]
    assert list(loss.bottom) == ["conv", "label"] and list(loss.loss_weight) == [0.5]
    assert loss.loss_param.normalization == pb.LossParameter.VALID
    assert net.layer[3].accuracy_param.top_k == 5 and net.layer[3].include[0].phase == pb.TEST
    sil = net.layer[4]
    assert (sil.name, sil.type, list(sil.bottom), list(sil.top)) == \
        ("silence", "Silence", ["acc"], [])


def test_explicit_name_and_unassigned_extra_top():
    n = NetSpec()
    n.data = L.Input(name="input", shape=dict(dim=[1, 4]))
    n.a, _ = L.Slice(n.data, ntop=2, axis=1)      # the second top is never used
    net = n.to_proto()
    assert net.layer[0].name == "input" and list(net.layer[0].top) == ["data"]
    assert list(net.layer[1].top) == ["a", "Slice1"]


def test_params_enums():
    assert P.Pooling.MAX == pb.PoolingParameter.MAX
    assert P.Pooling.AVE == pb.PoolingParameter.AVE
    assert P.Phase.TEST == pb.TEST
    assert P.Convolution.CAFFE == pb.ConvolutionParameter.CAFFE
    with pytest.raises(AttributeError, match="Pooling"):
        P.Poolin


def test_free_to_proto_autonames():
    top = L.ReLU(L.Convolution(L.Input(shape=dict(dim=[1, 2, 3, 3])), num_output=3,
                               kernel_size=1), in_place=True)
    net = to_proto(top)
    assert [l.name for l in net.layer] == ["Input1", "Convolution1", "ReLU1"]
    assert list(net.layer[2].top) == ["Convolution1"]


# -- errors at the user's line ------------------------------------------------------------------
def test_unknown_field_with_suggestion():
    n = small_net()
    with pytest.raises(ConfigError) as ei:
        L.Convolution(n.data, num_output=3, kernal_size=3)  # MARK-unknown
    raises_here(ei, "MARK-unknown")
    assert "kernal_size" in str(ei.value) and "did you mean 'kernel_size'" in str(ei.value)
    assert ei.value.field == "kernal_size"


def test_unknown_nested_field():
    n = small_net()
    with pytest.raises(ConfigError) as ei:
        L.Convolution(n.data, num_output=3, weight_filler=dict(tpye="msra"))  # MARK-nested
    raises_here(ei, "MARK-nested")
    assert "weight_filler.tpye" in str(ei.value) and "'type'" in str(ei.value)


def test_wrong_type():
    n = small_net()
    with pytest.raises(ConfigError) as ei:
        L.Convolution(n.data, num_output="64")  # MARK-type
    raises_here(ei, "MARK-type")
    assert "num_output" in str(ei.value) and "integer" in str(ei.value)
    for bad in (dict(num_output=2.5), dict(bias_term=1), dict(num_output=-1),
                dict(num_output=[1, 2]), dict(weight_filler="msra"),
                dict(param=[dict(lr_mult="x")])):
        with pytest.raises(ConfigError):
            L.Convolution(n.data, **bad)


def test_bad_enum():
    n = small_net()
    with pytest.raises(ConfigError) as ei:
        L.Pooling(n.data, pool="MAXIMUM", kernel_size=2)  # MARK-enum
    raises_here(ei, "MARK-enum")
    assert "pooling_param.pool" in str(ei.value) and "MAX" in str(ei.value)
    with pytest.raises(ConfigError):
        L.Pooling(n.data, pool=7, kernel_size=2)


def test_unknown_layer_type():
    with pytest.raises(ConfigError) as ei:
        L.Convolutoin(num_output=3)  # MARK-ltype
    raises_here(ei, "MARK-ltype")
    assert "did you mean L.Convolution" in str(ei.value)


def test_missing_bottom_names_the_layer_and_line():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    hidden = L.Convolution(n.data, num_output=4, kernel_size=3)
    n.relu = L.ReLU(hidden)  # MARK-missing
    with pytest.raises(ConfigError) as ei:
        n.to_proto()
    raises_here(ei, "MARK-missing")
    msg = str(ei.value)
    assert "layer 'relu' (ReLU)" in msg and "never assigned" in msg and "Convolution" in msg


def test_bad_bottom_and_bad_assignment():
    n = NetSpec()
    with pytest.raises(ConfigError) as ei:
        L.ReLU("data")  # MARK-bottom
    raises_here(ei, "MARK-bottom")
    with pytest.raises(ConfigError) as ei:
        n.both = L.Data(source="x", ntop=2)  # MARK-assign
    raises_here(ei, "MARK-assign")
    assert "unpack" in str(ei.value)
    with pytest.raises(ConfigError):
        n.x = 3
    n.data = L.Input(shape=dict(dim=[1]))
    with pytest.raises(ConfigError, match="in_place"):
        L.Eltwise(n.data, n.data, in_place=True)
    with pytest.raises(ConfigError, match="positional"):
        L.ReLU(n.data, bottom="data")
    with pytest.raises(ConfigError, match="ntop"):
        L.ReLU(n.data, ntop=-1)
    with pytest.raises(ConfigError):
        NetSpec(nmae="x")
