"""caffe.coord_map on FCN-like NetSpecs, against offsets worked out by hand from each layer's
map (conv/pool: x -> x/s + (p - (k-1)/2)/s; deconv: x -> s x + (k-1)/2 - p)."""
import pytest

import netdef.caffe as caffe
from netdef.caffe import coord_map
from netdef.errors import ConfigError

L = caffe.layers


def _fcn(size=32):
    """data -> conv1 (k3 p100) -> pool1 (k2 s2) -> conv2 (k3 p1) -> pool2 (k2 s2) -> fc (k7)
    -> score (k1) -> upscore2 (deconv k4 s2), fused with pool1's scores (FCN-16s style)."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, size, size]))
    n.conv1 = L.Convolution(n.data, num_output=2, kernel_size=3, pad=100)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=2, kernel_size=3, pad=1)
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2)
    n.fc = L.Convolution(n.pool2, num_output=2, kernel_size=7)
    n.score = L.Convolution(n.fc, num_output=2, kernel_size=1)
    n.upscore2 = L.Deconvolution(n.score, convolution_param=dict(num_output=2, kernel_size=4,
                                                                 stride=2))
    n.score_pool1 = L.Convolution(n.pool1, num_output=2, kernel_size=1)
    return n


def test_fcn32_offset_by_hand(tmp_path):
    # conv1: d + 99; pool1: d/2 + 49.25; conv2 (k3 p1): same; pool2: d/4 + 24.375;
    # fc (k7): d/4 + 21.375; score (k1): same; deconv k8 s4: d + 85.5 + 3.5 = d + 89
    n = _fcn()
    n.upscore = L.Deconvolution(n.score, convolution_param=dict(num_output=2, kernel_size=8,
                                                                stride=4))
    assert coord_map.coord_map_from_to(n.data, n.pool2) == (2, 0.25, 24.375)
    assert coord_map.coord_map_from_to(n.fc, n.data) == (2, 4.0, -85.5)
    assert coord_map.coord_map_from_to(n.upscore, n.data) == (2, 1.0, -89.0)
    n.out = coord_map.crop(n.upscore, n.data)
    proto = n.to_proto()
    crop = proto.layer[-1]
    assert crop.type == "Crop" and list(crop.bottom) == ["upscore", "data"]
    assert crop.crop_param.axis == 2 and list(crop.crop_param.offset) == [89]
    p = tmp_path / "fcn32.prototxt"
    p.write_text(str(proto))
    net = caffe.Net(str(p), caffe.TEST)
    assert net.blobs["upscore"].shape == (1, 2, 212, 212)      # (52 - 1) * 4 + 8
    assert net.blobs["out"].shape == (1, 2, 32, 32)


def test_fcn16_fusion_through_eltwise():
    # upscore2 = 2 * score + 1.5 = d/2 + 44.25; score_pool1 = d/2 + 49.25: crop at 5
    n = _fcn()
    assert coord_map.coord_map_from_to(n.score_pool1, n.upscore2) == (2, 1.0, -5.0)
    n.score_pool1c = coord_map.crop(n.score_pool1, n.upscore2)
    # the Crop's map (x - 5) carries on through the Eltwise, whichever bottom comes first
    n.fuse = L.Eltwise(n.score_pool1c, n.upscore2)
    n.up = L.Deconvolution(n.fuse, convolution_param=dict(num_output=2, kernel_size=4,
                                                          stride=2))
    # up = 2 * fuse + 1.5 = d + 88.5 + 1.5
    assert coord_map.coord_map_from_to(n.up, n.data) == (2, 1.0, -90.0)
    n.out = coord_map.crop(n.up, n.data)
    assert list(n.to_proto().layer[-1].crop_param.offset) == [90]


def test_common_ancestor_through_a_second_bottom():
    m = caffe.NetSpec()
    m.a = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    m.b = L.Input(shape=dict(dim=[1, 1, 8, 8]))
    m.s = L.Eltwise(m.a, m.b)
    m.p = L.Pooling(m.s, kernel_size=3, stride=2, pad=1)
    # p = (b + 1 - 1) / 2 = b / 2: b is reached through the Eltwise's second bottom
    assert coord_map.coord_map_from_to(m.b, m.p) == (2, 0.5, 0.0)
    assert coord_map.coord_map_from_to(m.p, m.b) == (2, 2.0, 0.0)


def test_errors_name_the_problem():
    n = _fcn()
    with pytest.raises(ConfigError, match="scales differ"):
        coord_map.crop(n.pool1, n.data)
    with pytest.raises(ConfigError, match="whole number >= 0"):
        coord_map.crop(n.data, n.conv1)                   # conv1 starts 99 before data
    m = caffe.NetSpec()
    m.a = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    m.b = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    with pytest.raises(ConfigError, match="share no ancestor"):
        coord_map.coord_map_from_to(m.a, m.b)
    m.ip = L.InnerProduct(m.a, num_output=2)
    with pytest.raises(ConfigError, match="InnerProduct layer has no spatial coordinate map"):
        coord_map.coord_map_from_to(m.ip, m.a)
    with pytest.raises(ConfigError, match="expected NetSpec tops"):
        coord_map.coord_map_from_to("data", m.a)
