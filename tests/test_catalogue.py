"""The layer catalogue: every type string Caffe registers is registered, with a docstring,
and ``netdef layers`` reports the kernels each backend has."""
import json

import pytest
from click.testing import CliRunner

from netdef.layers.registry import get_layer_class, layer_types


# --------------------------------------------------------------------------------------------
# the whole catalogue

CAFFE_TYPES = [
    # vision
    "Convolution", "Deconvolution", "Pooling", "SPP", "Crop", "Im2col",
    # common / normalization
    "InnerProduct", "Dropout", "Embed", "LRN", "MVN", "BatchNorm",
    # activation / neuron
    "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "Power", "Exp", "Log", "BNLL",
    "Threshold", "Clip", "Swish", "Bias", "Scale",
    # utility
    "Softmax", "Concat", "Slice", "Split", "Eltwise", "Flatten", "Reshape", "BatchReindex",
    "Filter", "Parameter", "Reduction", "Silence", "ArgMax", "Tile", "Python",
    # loss
    "SoftmaxWithLoss", "MultinomialLogisticLoss", "InfogainLoss", "EuclideanLoss",
    "SigmoidCrossEntropyLoss", "HingeLoss", "ContrastiveLoss", "Accuracy",
    # data
    "Data", "ImageData", "HDF5Data", "HDF5Output", "MemoryData", "WindowData", "DummyData",
    "Input",
    # recurrent
    "RNN", "LSTM", "LSTMUnit",
]


def test_caffe_catalogue_has_61_types():
    assert len(CAFFE_TYPES) == len(set(CAFFE_TYPES)) == 61


@pytest.mark.parametrize("type_name", CAFFE_TYPES)
def test_every_caffe_type_is_registered(type_name):
    assert type_name in layer_types()
    cls = get_layer_class(type_name)
    assert cls.type == type_name and cls.__doc__


def test_layers_command_reports_kernels():
    from netdef_cli.main import cli

    r = CliRunner().invoke(cli, ["layers", "--json"])
    assert r.exit_code == 0, r.output
    rows = {row["type"]: row for row in json.loads(r.output)}
    for t in ("LSTM", "RNN", "LSTMUnit", "SPP", "Filter", "BatchReindex", "Parameter",
              "Convolution"):
        assert rows[t]["cpu"] is True and rows[t]["cuda"] is True
    for t in ("Python", "Data", "HDF5Output"):
        assert rows[t]["cpu"] is True and rows[t]["cuda"] is False
    assert rows["LSTM"]["param_message"] == "RecurrentParameter"
    assert rows["Python"]["param_message"] == "PythonParameter"
    assert rows["SPP"]["param_field"] == "spp_param"
    assert rows["Filter"]["param_field"] is None
    r = CliRunner().invoke(cli, ["layers"])
    line = next(ln for ln in r.output.splitlines() if ln.startswith("LSTMUnit "))
    assert " cpu,cuda " in line
    line = next(ln for ln in r.output.splitlines() if ln.startswith("Python "))
    assert " cpu " in line and "cuda" not in line
