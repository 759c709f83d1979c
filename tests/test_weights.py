"""Caffe-trained LeNet weights (current and legacy V1 .caffemodel) classify real MNIST."""
import gzip
import os

import numpy as np
import pytest

from shared_paths import DATA
from netdef.config import load_net
from netdef.errors import ShapeError
from netdef.io.weights import load_caffemodel, load_weights, save_caffemodel
from netdef.net import Net
from netdef.layers import TEST

LENET = os.path.join(DATA, "caffe", "lenet")
LENET_V1 = os.path.join(DATA, "caffe", "lenet_v1format")


def mnist_test(n):
    with gzip.open(os.path.join(DATA, "mnist", "t10k-images-idx3-ubyte.gz")) as f:
        raw = f.read()
    assert int.from_bytes(raw[:4], "big") == 2051
    images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:n]
    with gzip.open(os.path.join(DATA, "mnist", "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    return images, labels


def deploy(batch):
    return Net(load_net(os.path.join(LENET, "lenet.prototxt")), TEST,
               input_shapes={"data": (batch, 1, 28, 28)})


@pytest.mark.parametrize("folder", [LENET, LENET_V1], ids=["current", "legacy_v1"])
def test_caffe_trained_lenet_accuracy(folder):
    images, labels = mnist_test(2000)
    net = deploy(500)
    copied = load_weights(net, os.path.join(folder, "lenet_iter_10000.caffemodel"))
    assert copied == ["conv1", "conv2", "ip1", "ip2"]
    correct = 0
    for s in range(0, len(images), 500):
        net.blobs["data"].data = images[s:s + 500] * np.float32(0.00390625)
        net.forward()
        prob = net.blobs["prob"].data
        np.testing.assert_allclose(prob.sum(axis=1), 1, rtol=1e-5)
        correct += int((prob.argmax(axis=1) == labels[s:s + 500]).sum())
    # Caffe reports 99.1% on the whole test set for these weights
    assert correct / len(images) >= 0.985


def test_legacy_file_really_is_legacy():
    """The V1 file stores `layers` with enum types and 4-D legacy blob dims; after the upgrade
    its blobs fit the current net (IP weights as 1x1xMxK, biases as 1x1x1xM)."""
    from netdef.io.weights import blob_proto_shape, is_legacy
    from netdef.proto import pb
    raw = pb.NetParameter()
    with open(os.path.join(LENET_V1, "lenet_iter_10000.caffemodel"), "rb") as f:
        raw.ParseFromString(f.read())
    assert len(raw.layers) and not len(raw.layer)
    up = load_caffemodel(os.path.join(LENET_V1, "lenet_iter_10000.caffemodel"))
    ip1 = next(l for l in up.layer if l.name == "ip1")
    assert ip1.type == "InnerProduct"
    assert is_legacy(ip1.blobs[0]) and blob_proto_shape(ip1.blobs[0]) == (1, 1, 500, 800)
    assert blob_proto_shape(ip1.blobs[1]) == (1, 1, 1, 500)


def test_shape_mismatch_names_layer_and_fix(tmp_path):
    text = open(os.path.join(LENET, "lenet.prototxt")).read().replace("num_output: 500",
                                                                      "num_output: 400")
    p = tmp_path / "l.prototxt"
    p.write_text(text)
    net = Net(load_net(str(p)), TEST)
    with pytest.raises(ShapeError) as ei:
        load_weights(net, os.path.join(LENET, "lenet_iter_10000.caffemodel"))
    msg = str(ei.value)
    assert "layer 'ip1'" in msg and "[500, 800]" in msg and "[400, 800]" in msg
    assert "rename" in msg


def test_save_and_reload_round_trip(tmp_path):
    net = deploy(1)
    load_weights(net, os.path.join(LENET, "lenet_iter_10000.caffemodel"))
    out = tmp_path / "copy.caffemodel"
    save_caffemodel(net, str(out))
    net2 = deploy(1)
    load_weights(net2, str(out))
    for pa, pb_ in zip(net.params, net2.params):
        np.testing.assert_array_equal(pa.blob.data, pb_.blob.data)


def test_weights_log_copied_and_ignored_layers_as_caffe(caplog):
    net = deploy(1)
    with caplog.at_level("INFO", logger="netdef.weights"):
        load_weights(net, os.path.join(LENET, "lenet_iter_10000.caffemodel"))
    lines = [r.getMessage() for r in caplog.records]
    assert "Copying source layer conv1 Type:Convolution #blobs=2" in lines
    assert "Copying source layer ip2 Type:InnerProduct #blobs=2" in lines
    assert "Ignoring source layer mnist" in lines            # the TRAIN data layer
    assert "Ignoring source layer loss" in lines


def test_weights_matching_no_layer_are_an_error(tmp_path):
    from netdef.config import net_from_text
    from netdef.errors import ConfigError
    net = Net(net_from_text('layer { name: "d" type: "Input" top: "x" input_param { shape { '
                            'dim: 1 dim: 4 } } }\nlayer { name: "fc" type: "InnerProduct" '
                            'bottom: "x" top: "y" inner_product_param { num_output: 2 } }'), TEST)
    w = os.path.join(LENET, "lenet_iter_10000.caffemodel")
    with pytest.raises(ConfigError, match=r"matches a layer of the net with parameters \(fc\)"):
        load_weights(net, w)


@pytest.mark.parametrize("path,message", [("/etc", "is a directory"),
                                          ("/dev/zero", "not a regular file")])
def test_weights_must_be_a_regular_file(path, message):
    from netdef.errors import ConfigError
    with pytest.raises(ConfigError, match=message):
        load_caffemodel(path)


def test_weights_and_means_holding_nan_are_warned_about(tmp_path, caplog):
    from netdef.data.binaryproto import read_mean, write_blobproto
    net = deploy(1)
    load_weights(net, os.path.join(LENET, "lenet_iter_10000.caffemodel"))
    net.layers[net.layer_index["ip2"]].blobs[1].data[[0, 3]] = [np.nan, np.inf]
    w = str(tmp_path / "nan.caffemodel")
    save_caffemodel(net, w)
    with caplog.at_level("WARNING", logger="netdef.weights"):
        load_weights(deploy(1), w)
        write_blobproto(str(tmp_path / "mean.binaryproto"), np.full((1, 2, 2), np.nan))
        read_mean(str(tmp_path / "mean.binaryproto"))
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert msgs == [f"{w}: layer 'ip2' blob 1 holds 2 NaN or infinite values of 10",
                    f"{tmp_path / 'mean.binaryproto'}: the mean holds 4 NaN or infinite "
                    f"values of 4"]
