"""Tests for the Caffe-compatible schema in protos/netdef.proto (module netdef.proto.pb).

(a) the committed generated module matches a fresh protoc run;
(b) field numbers / labels / types / packing / defaults / enums match BVLC caffe.proto
    (facts from CAFFE_REFERENCE.md section 1);
(c)-(e) real Caffe artefacts parse: binary caffemodels (new and V1 format), a mean
    binaryproto and the prototxt corpus (nets and solvers, text format).
"""
from __future__ import annotations

import glob
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import descriptor, text_format
from shared_paths import BESIDE_REPO, find as find_shared

from netdef.proto import pb

ROOT = Path(__file__).resolve().parent.parent
# the shared folder (tests/shared_paths.py); absent, the tests that read it skip
SHARED = Path(find_shared(required=False) or BESIDE_REPO)
CAFFE_DATA = SHARED / "data" / "caffe"
CORPUS = SHARED / "corpus" / "caffe_models"

FD = descriptor.FieldDescriptor


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"test data not available: {path}")
    return path


# ---------------------------------------------------------------------------
# (a) generated module is current
# ---------------------------------------------------------------------------

def _load_gen_proto():
    spec = importlib.util.spec_from_file_location("_netdef_gen_proto", ROOT / "scripts" / "gen_proto.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_generated_module_is_current():
    try:
        import grpc_tools.protoc  # noqa: F401
    except ImportError:
        pytest.skip("grpc_tools (grpcio-tools) is not importable; cannot regenerate netdef_pb2.py")
    gen = _load_gen_proto()
    ok, msg = gen.check()
    assert ok, msg


def test_gen_proto_check_detects_stale_module(tmp_path, monkeypatch):
    try:
        import grpc_tools.protoc  # noqa: F401
    except ImportError:
        pytest.skip("grpc_tools (grpcio-tools) is not importable; cannot regenerate netdef_pb2.py")
    gen = _load_gen_proto()
    stale = tmp_path / "netdef_pb2.py"
    stale.write_text("# stale\n", encoding="utf-8")
    monkeypatch.setattr(gen, "OUT_MODULE", stale)
    monkeypatch.setattr(gen, "ROOT", tmp_path)
    ok, msg = gen.check()
    assert not ok and "stale" in msg


def test_module_identity():
    import netdef.proto.netdef_pb2 as mod

    assert mod is pb
    assert pb.DESCRIPTOR.name == "netdef.proto"
    assert pb.DESCRIPTOR.package == "netdef"
    # nothing is registered under package "caffe", so a real caffe_pb2 can coexist
    for name in pb.DESCRIPTOR.message_types_by_name.values():
        assert name.full_name.startswith("netdef.")


# ---------------------------------------------------------------------------
# (b) schema facts
# ---------------------------------------------------------------------------

def _field(msg: str, name: str):
    d = pb.DESCRIPTOR.message_types_by_name[msg]
    assert name in d.fields_by_name, f"{msg}.{name} missing"
    return d.fields_by_name[name]


def _label(f) -> str:
    if f.is_repeated:
        return "rep"
    if f.is_required:
        return "req"
    return "opt"


_TYPES = {
    "string": FD.TYPE_STRING, "bytes": FD.TYPE_BYTES, "bool": FD.TYPE_BOOL,
    "int32": FD.TYPE_INT32, "int64": FD.TYPE_INT64, "uint32": FD.TYPE_UINT32,
    "float": FD.TYPE_FLOAT, "double": FD.TYPE_DOUBLE, "enum": FD.TYPE_ENUM,
    "msg": FD.TYPE_MESSAGE,
}

# (message, field, number, label, type[, message/enum type name])
FIELDS = [
    # binary-file messages (CAFFE_REFERENCE 1.1)
    ("NetParameter", "name", 1, "opt", "string"),
    ("NetParameter", "layers", 2, "rep", "msg", "V1LayerParameter"),
    ("NetParameter", "input", 3, "rep", "string"),
    ("NetParameter", "input_dim", 4, "rep", "int32"),
    ("NetParameter", "force_backward", 5, "opt", "bool"),
    ("NetParameter", "state", 6, "opt", "msg", "NetState"),
    ("NetParameter", "debug_info", 7, "opt", "bool"),
    ("NetParameter", "input_shape", 8, "rep", "msg", "BlobShape"),
    ("NetParameter", "layer", 100, "rep", "msg", "LayerParameter"),
    ("LayerParameter", "name", 1, "opt", "string"),
    ("LayerParameter", "type", 2, "opt", "string"),
    ("LayerParameter", "bottom", 3, "rep", "string"),
    ("LayerParameter", "top", 4, "rep", "string"),
    ("LayerParameter", "loss_weight", 5, "rep", "float"),
    ("LayerParameter", "param", 6, "rep", "msg", "ParamSpec"),
    ("LayerParameter", "blobs", 7, "rep", "msg", "BlobProto"),
    ("LayerParameter", "include", 8, "rep", "msg", "NetStateRule"),
    ("LayerParameter", "exclude", 9, "rep", "msg", "NetStateRule"),
    ("LayerParameter", "phase", 10, "opt", "enum", "Phase"),
    ("LayerParameter", "propagate_down", 11, "rep", "bool"),
    ("LayerParameter", "transform_param", 100, "opt", "msg", "TransformationParameter"),
    ("LayerParameter", "loss_param", 101, "opt", "msg", "LossParameter"),
    ("BlobProto", "num", 1, "opt", "int32"),
    ("BlobProto", "channels", 2, "opt", "int32"),
    ("BlobProto", "height", 3, "opt", "int32"),
    ("BlobProto", "width", 4, "opt", "int32"),
    ("BlobProto", "data", 5, "rep", "float"),
    ("BlobProto", "diff", 6, "rep", "float"),
    ("BlobProto", "shape", 7, "opt", "msg", "BlobShape"),
    ("BlobProto", "double_data", 8, "rep", "double"),
    ("BlobProto", "double_diff", 9, "rep", "double"),
    ("BlobShape", "dim", 1, "rep", "int64"),
    ("BlobProtoVector", "blobs", 1, "rep", "msg", "BlobProto"),
    ("SolverState", "iter", 1, "opt", "int32"),
    ("SolverState", "learned_net", 2, "opt", "string"),
    ("SolverState", "history", 3, "rep", "msg", "BlobProto"),
    ("SolverState", "current_step", 4, "opt", "int32"),
    ("SolverState", "netdef_resume", 1000, "opt", "msg", "NetdefResumeState"),
    ("Datum", "channels", 1, "opt", "int32"),
    ("Datum", "height", 2, "opt", "int32"),
    ("Datum", "width", 3, "opt", "int32"),
    ("Datum", "data", 4, "opt", "bytes"),
    ("Datum", "label", 5, "opt", "int32"),
    ("Datum", "float_data", 6, "rep", "float"),
    ("Datum", "encoded", 7, "opt", "bool"),
    # V1 / V0
    ("V1LayerParameter", "layer", 1, "opt", "msg", "V0LayerParameter"),
    ("V1LayerParameter", "bottom", 2, "rep", "string"),
    ("V1LayerParameter", "top", 3, "rep", "string"),
    ("V1LayerParameter", "name", 4, "opt", "string"),
    ("V1LayerParameter", "type", 5, "opt", "enum", "V1LayerParameter.LayerType"),
    ("V1LayerParameter", "blobs", 6, "rep", "msg", "BlobProto"),
    ("V1LayerParameter", "blobs_lr", 7, "rep", "float"),
    ("V1LayerParameter", "weight_decay", 8, "rep", "float"),
    ("V1LayerParameter", "include", 32, "rep", "msg", "NetStateRule"),
    ("V1LayerParameter", "exclude", 33, "rep", "msg", "NetStateRule"),
    ("V1LayerParameter", "loss_weight", 35, "rep", "float"),
    ("V1LayerParameter", "param", 1001, "rep", "string"),
    ("V1LayerParameter", "blob_share_mode", 1002, "rep", "enum", "V1LayerParameter.DimCheckMode"),
    ("V0LayerParameter", "name", 1, "opt", "string"),
    ("V0LayerParameter", "type", 2, "opt", "string"),
    ("V0LayerParameter", "num_output", 3, "opt", "uint32"),
    ("V0LayerParameter", "biasterm", 4, "opt", "bool"),
    ("V0LayerParameter", "kernelsize", 8, "opt", "uint32"),
    ("V0LayerParameter", "pool", 11, "opt", "enum", "V0LayerParameter.PoolMethod"),
    ("V0LayerParameter", "k", 22, "opt", "float"),
    ("V0LayerParameter", "blobs", 50, "rep", "msg", "BlobProto"),
    ("V0LayerParameter", "blobs_lr", 51, "rep", "float"),
    ("V0LayerParameter", "weight_decay", 52, "rep", "float"),
    ("V0LayerParameter", "rand_skip", 53, "opt", "uint32"),
    ("V0LayerParameter", "det_fg_fraction", 56, "opt", "float"),
    ("V0LayerParameter", "det_context_pad", 58, "opt", "uint32"),
    ("V0LayerParameter", "det_crop_mode", 59, "opt", "string"),
    ("V0LayerParameter", "new_num", 60, "opt", "int32"),
    ("V0LayerParameter", "new_width", 63, "opt", "int32"),
    ("V0LayerParameter", "shuffle_images", 64, "opt", "bool"),
    ("V0LayerParameter", "concat_dim", 65, "opt", "uint32"),
    ("V0LayerParameter", "hdf5_output_param", 1001, "opt", "msg", "HDF5OutputParameter"),
    # generic (1.3)
    ("NetState", "phase", 1, "opt", "enum", "Phase"),
    ("NetState", "level", 2, "opt", "int32"),
    ("NetState", "stage", 3, "rep", "string"),
    ("NetStateRule", "phase", 1, "opt", "enum", "Phase"),
    ("NetStateRule", "min_level", 2, "opt", "int32"),
    ("NetStateRule", "max_level", 3, "opt", "int32"),
    ("NetStateRule", "stage", 4, "rep", "string"),
    ("NetStateRule", "not_stage", 5, "rep", "string"),
    ("ParamSpec", "name", 1, "opt", "string"),
    ("ParamSpec", "share_mode", 2, "opt", "enum", "ParamSpec.DimCheckMode"),
    ("ParamSpec", "lr_mult", 3, "opt", "float"),
    ("ParamSpec", "decay_mult", 4, "opt", "float"),
    ("FillerParameter", "type", 1, "opt", "string"),
    ("FillerParameter", "sparse", 7, "opt", "int32"),
    ("FillerParameter", "variance_norm", 8, "opt", "enum", "FillerParameter.VarianceNorm"),
    ("TransformationParameter", "crop_size", 3, "opt", "uint32"),
    ("TransformationParameter", "mean_value", 5, "rep", "float"),
    ("TransformationParameter", "force_gray", 7, "opt", "bool"),
    ("LossParameter", "ignore_label", 1, "opt", "int32"),
    ("LossParameter", "normalize", 2, "opt", "bool"),
    ("LossParameter", "normalization", 3, "opt", "enum", "LossParameter.NormalizationMode"),
    # per-layer (1.4)
    ("ConvolutionParameter", "num_output", 1, "opt", "uint32"),
    ("ConvolutionParameter", "pad", 3, "rep", "uint32"),
    ("ConvolutionParameter", "kernel_size", 4, "rep", "uint32"),
    ("ConvolutionParameter", "group", 5, "opt", "uint32"),
    ("ConvolutionParameter", "stride", 6, "rep", "uint32"),
    ("ConvolutionParameter", "weight_filler", 7, "opt", "msg", "FillerParameter"),
    ("ConvolutionParameter", "kernel_h", 11, "opt", "uint32"),
    ("ConvolutionParameter", "stride_w", 14, "opt", "uint32"),
    ("ConvolutionParameter", "engine", 15, "opt", "enum", "ConvolutionParameter.Engine"),
    ("ConvolutionParameter", "axis", 16, "opt", "int32"),
    ("ConvolutionParameter", "force_nd_im2col", 17, "opt", "bool"),
    ("ConvolutionParameter", "dilation", 18, "rep", "uint32"),
    ("PoolingParameter", "pool", 1, "opt", "enum", "PoolingParameter.PoolMethod"),
    ("PoolingParameter", "kernel_size", 2, "opt", "uint32"),
    ("PoolingParameter", "stride", 3, "opt", "uint32"),
    ("PoolingParameter", "pad", 4, "opt", "uint32"),
    ("PoolingParameter", "engine", 11, "opt", "enum", "PoolingParameter.Engine"),
    ("PoolingParameter", "global_pooling", 12, "opt", "bool"),
    ("PoolingParameter", "round_mode", 13, "opt", "enum", "PoolingParameter.RoundMode"),
    ("InnerProductParameter", "axis", 5, "opt", "int32"),
    ("InnerProductParameter", "transpose", 6, "opt", "bool"),
    ("LRNParameter", "norm_region", 4, "opt", "enum", "LRNParameter.NormRegion"),
    ("LRNParameter", "k", 5, "opt", "float"),
    ("BatchNormParameter", "use_global_stats", 1, "opt", "bool"),
    ("BatchNormParameter", "moving_average_fraction", 2, "opt", "float"),
    ("BatchNormParameter", "eps", 3, "opt", "float"),
    ("ScaleParameter", "bias_term", 4, "opt", "bool"),
    ("ScaleParameter", "bias_filler", 5, "opt", "msg", "FillerParameter"),
    ("EltwiseParameter", "operation", 1, "opt", "enum", "EltwiseParameter.EltwiseOp"),
    ("EltwiseParameter", "coeff", 2, "rep", "float"),
    ("ConcatParameter", "concat_dim", 1, "opt", "uint32"),
    ("ConcatParameter", "axis", 2, "opt", "int32"),
    ("SliceParameter", "slice_dim", 1, "opt", "uint32"),
    ("SliceParameter", "slice_point", 2, "rep", "uint32"),
    ("SliceParameter", "axis", 3, "opt", "int32"),
    ("SwishParameter", "beta", 1, "opt", "float"),
    ("ClipParameter", "min", 1, "req", "float"),
    ("ClipParameter", "max", 2, "req", "float"),
    ("AccuracyParameter", "top_k", 1, "opt", "uint32"),
    ("AccuracyParameter", "ignore_label", 3, "opt", "int32"),
    ("ArgMaxParameter", "axis", 3, "opt", "int32"),
    ("HingeLossParameter", "norm", 1, "opt", "enum", "HingeLossParameter.Norm"),
    ("InfogainLossParameter", "source", 1, "opt", "string"),
    ("InfogainLossParameter", "axis", 2, "opt", "int32"),
    ("DataParameter", "batch_size", 4, "opt", "uint32"),
    ("DataParameter", "backend", 8, "opt", "enum", "DataParameter.DB"),
    ("DataParameter", "prefetch", 10, "opt", "uint32"),
    ("ImageDataParameter", "root_folder", 12, "opt", "string"),
    ("HDF5DataParameter", "batch_size", 2, "opt", "uint32"),
    ("WindowDataParameter", "crop_mode", 11, "opt", "string"),
    ("WindowDataParameter", "root_folder", 13, "opt", "string"),
    ("DummyDataParameter", "data_filler", 1, "rep", "msg", "FillerParameter"),
    ("DummyDataParameter", "num", 2, "rep", "uint32"),
    ("DummyDataParameter", "shape", 6, "rep", "msg", "BlobShape"),
    ("InputParameter", "shape", 1, "rep", "msg", "BlobShape"),
    ("ReshapeParameter", "shape", 1, "opt", "msg", "BlobShape"),
    ("ReshapeParameter", "num_axes", 3, "opt", "int32"),
    ("CropParameter", "offset", 2, "rep", "uint32"),
    ("TileParameter", "tiles", 2, "opt", "int32"),
    ("ReductionParameter", "operation", 1, "opt", "enum", "ReductionParameter.ReductionOp"),
    ("MVNParameter", "eps", 3, "opt", "float"),
    ("EmbedParameter", "input_dim", 2, "opt", "uint32"),
    ("ParameterParameter", "shape", 1, "opt", "msg", "BlobShape"),
    ("PythonParameter", "param_str", 3, "opt", "string"),
    ("PythonParameter", "share_in_parallel", 4, "opt", "bool"),
    ("RecurrentParameter", "expose_hidden", 5, "opt", "bool"),
    ("SPPParameter", "pyramid_height", 1, "opt", "uint32"),
    ("SPPParameter", "pool", 2, "opt", "enum", "SPPParameter.PoolMethod"),
    ("SPPParameter", "engine", 6, "opt", "enum", "SPPParameter.Engine"),
    ("PReLUParameter", "filler", 1, "opt", "msg", "FillerParameter"),
    ("PReLUParameter", "channel_shared", 2, "opt", "bool"),
    ("HDF5OutputParameter", "file_name", 1, "opt", "string"),
    ("MemoryDataParameter", "width", 4, "opt", "uint32"),
    # netdef extension messages
    ("NetdefResumeState", "rng_state", 1, "opt", "bytes"),
    ("NetdefResumeState", "data_cursor", 2, "rep", "msg", "NetdefDataCursor"),
    ("NetdefResumeState", "solver_type", 3, "opt", "string"),
    ("NetdefDataCursor", "layer", 1, "opt", "string"),
    ("NetdefDataCursor", "position", 2, "opt", "int64"),
    ("NetdefDataCursor", "rng_state", 3, "opt", "bytes"),
    ("NetParameter", "netdef_deploy", 1000, "opt", "msg", "NetdefDeploy"),
    ("NetdefDeploy", "format_version", 1, "opt", "uint32"),
    ("NetdefDeploy", "input", 2, "rep", "msg", "NetdefDeployInput"),
    ("NetdefDeploy", "body_sha256", 7, "opt", "bytes"),
    ("NetdefDeployInput", "mean", 5, "opt", "msg", "BlobProto"),
    ("NetdefFusedActivation", "negative_slope", 3, "opt", "float"),
]


@pytest.mark.parametrize("spec", FIELDS, ids=lambda s: f"{s[0]}.{s[1]}")
def test_field_spec(spec):
    msg, name, number, label, typ = spec[:5]
    f = _field(msg, name)
    assert f.number == number
    assert _label(f) == label
    assert f.type == _TYPES[typ]
    if len(spec) > 5:
        target = f.message_type if typ == "msg" else f.enum_type
        assert target.full_name == "netdef." + spec[5]


# LayerParameter type-specific params (CAFFE_REFERENCE 1.2)
LAYER_PARAMS = {
    "accuracy": 102, "argmax": 103, "batch_norm": 139, "bias": 141, "clip": 148, "concat": 104,
    "contrastive_loss": 105, "convolution": 106, "crop": 144, "data": 107, "dropout": 108,
    "dummy_data": 109, "eltwise": 110, "elu": 140, "embed": 137, "exp": 111, "flatten": 135,
    "hdf5_data": 112, "hdf5_output": 113, "hinge_loss": 114, "image_data": 115,
    "infogain_loss": 116, "inner_product": 117, "input": 143, "log": 134, "lrn": 118,
    "memory_data": 119, "mvn": 120, "parameter": 145, "pooling": 121, "power": 122,
    "prelu": 131, "python": 130, "recurrent": 146, "reduction": 136, "relu": 123,
    "reshape": 133, "scale": 142, "sigmoid": 124, "softmax": 125, "spp": 132, "slice": 126,
    "swish": 147, "tanh": 127, "threshold": 128, "tile": 138, "window_data": 129,
}

V1_PARAMS = {
    "concat": 9, "convolution": 10, "data": 11, "dropout": 12, "hdf5_data": 13,
    "hdf5_output": 14, "image_data": 15, "infogain_loss": 16, "inner_product": 17, "lrn": 18,
    "pooling": 19, "window_data": 20, "power": 21, "memory_data": 22, "argmax": 23,
    "eltwise": 24, "threshold": 25, "dummy_data": 26, "accuracy": 27, "hinge_loss": 29,
    "relu": 30, "slice": 31, "mvn": 34, "transform": 36, "tanh": 37, "sigmoid": 38,
    "softmax": 39, "contrastive_loss": 40, "exp": 41, "loss": 42,
}


def test_layer_parameter_type_params():
    d = pb.LayerParameter.DESCRIPTOR
    for short, num in LAYER_PARAMS.items():
        f = d.fields_by_name[f"{short}_param"]
        assert f.number == num, short
        assert not f.is_repeated and f.type == FD.TYPE_MESSAGE
    # exactly the BVLC set: 11 core + transform/loss + the type params, no fork extras
    assert len(d.fields) == 11 + 2 + len(LAYER_PARAMS)
    assert max(f.number for f in d.fields) == 148


def test_v1_layer_parameter_type_params():
    d = pb.V1LayerParameter.DESCRIPTOR
    for short, num in V1_PARAMS.items():
        assert d.fields_by_name[f"{short}_param"].number == num, short
    # 13 generic fields (layer, bottom, top, name, type, blobs, blobs_lr, weight_decay,
    # include, exclude, loss_weight, param, blob_share_mode) + per-type params
    assert len(d.fields) == 13 + len(V1_PARAMS)


def test_v0_layer_parameter_complete():
    d = pb.V0LayerParameter.DESCRIPTOR
    nums = sorted(f.number for f in d.fields)
    expected = list(range(1, 23)) + [50, 51, 52, 53, 54, 55, 56] + list(range(58, 66)) + [1001]
    assert nums == expected


SOLVER_FIELDS = {
    "train_net": 1, "test_net": 2, "test_iter": 3, "test_interval": 4, "base_lr": 5,
    "display": 6, "max_iter": 7, "lr_policy": 8, "gamma": 9, "power": 10, "momentum": 11,
    "weight_decay": 12, "stepsize": 13, "snapshot": 14, "snapshot_prefix": 15,
    "snapshot_diff": 16, "solver_mode": 17, "device_id": 18, "test_compute_loss": 19,
    "random_seed": 20, "train_net_param": 21, "test_net_param": 22, "debug_info": 23,
    "net": 24, "net_param": 25, "train_state": 26, "test_state": 27,
    "snapshot_after_train": 28, "regularization_type": 29, "solver_type": 30, "delta": 31,
    "test_initialization": 32, "average_loss": 33, "stepvalue": 34, "clip_gradients": 35,
    "iter_size": 36, "snapshot_format": 37, "rms_decay": 38, "momentum2": 39, "type": 40,
    "layer_wise_reduce": 41, "weights": 42,
}


def test_solver_parameter_fields():
    d = pb.SolverParameter.DESCRIPTOR
    assert {f.name: f.number for f in d.fields} == SOLVER_FIELDS
    assert d.fields_by_name["random_seed"].type == FD.TYPE_INT64
    assert d.fields_by_name["test_iter"].is_repeated
    assert d.fields_by_name["stepvalue"].is_repeated
    assert d.fields_by_name["weights"].is_repeated
    assert d.fields_by_name["weights"].type == FD.TYPE_STRING
    assert d.fields_by_name["test_net_param"].message_type.name == "NetParameter"
    assert d.fields_by_name["train_state"].message_type.name == "NetState"


def test_packed_options():
    def packed(msg, name):
        opts = _field(msg, name).GetOptions()
        return opts.HasField("packed") and opts.packed

    for name in ("data", "diff", "double_data", "double_diff"):
        assert packed("BlobProto", name), name
    assert packed("BlobShape", "dim")
    # everything else repeated-scalar in Caffe is declared unpacked
    for msg, name in [("Datum", "float_data"), ("NetParameter", "input_dim"),
                      ("LayerParameter", "loss_weight"), ("LayerParameter", "propagate_down"),
                      ("ConvolutionParameter", "pad"), ("TransformationParameter", "mean_value"),
                      ("SolverParameter", "test_iter"), ("SolverParameter", "stepvalue"),
                      ("V1LayerParameter", "blobs_lr")]:
        assert not packed(msg, name), (msg, name)


def test_blob_packed_wire_encoding():
    b = pb.BlobProto(data=[1.0, 2.0, 3.0])
    # field 5, wire type 2 (length-delimited) = tag 0x2a, then 12 bytes of floats
    raw = b.SerializeToString()
    assert raw[:2] == b"\x2a\x0c"
    # unpacked encoding of the same field must also be accepted
    unpacked = b"".join(b"\x2d" + np.float32(v).tobytes() for v in (1.0, 2.0, 3.0))
    assert list(pb.BlobProto.FromString(unpacked).data) == [1.0, 2.0, 3.0]


DEFAULTS = [
    ("PoolingParameter", "round_mode", pb.PoolingParameter.CEIL),
    ("PoolingParameter", "pool", pb.PoolingParameter.MAX),
    ("PoolingParameter", "stride", 1),
    ("PoolingParameter", "global_pooling", False),
    ("LossParameter", "normalization", pb.LossParameter.VALID),
    ("NetState", "phase", pb.TEST),
    ("NetState", "level", 0),
    ("SolverParameter", "solver_mode", pb.SolverParameter.GPU),
    ("SolverParameter", "snapshot_format", pb.SolverParameter.BINARYPROTO),
    ("SolverParameter", "solver_type", pb.SolverParameter.SGD),
    ("SolverParameter", "type", "SGD"),
    ("SolverParameter", "regularization_type", "L2"),
    ("SolverParameter", "random_seed", -1),
    ("SolverParameter", "clip_gradients", -1.0),
    ("SolverParameter", "delta", 1e-8),
    ("SolverParameter", "momentum2", 0.999),
    ("SolverParameter", "rms_decay", 0.99),
    ("SolverParameter", "average_loss", 1),
    ("SolverParameter", "iter_size", 1),
    ("SolverParameter", "test_initialization", True),
    ("SolverParameter", "snapshot_after_train", True),
    ("SolverParameter", "layer_wise_reduce", True),
    ("SolverParameter", "test_interval", 0),
    ("DataParameter", "backend", pb.DataParameter.LEVELDB),
    ("DataParameter", "prefetch", 4),
    ("DataParameter", "scale", 1.0),
    ("FillerParameter", "type", "constant"),
    ("FillerParameter", "value", 0.0),
    ("FillerParameter", "max", 1.0),
    ("FillerParameter", "std", 1.0),
    ("FillerParameter", "sparse", -1),
    ("FillerParameter", "variance_norm", pb.FillerParameter.FAN_IN),
    ("EltwiseParameter", "operation", pb.EltwiseParameter.SUM),
    ("EltwiseParameter", "stable_prod_grad", True),
    ("ParamSpec", "lr_mult", 1.0),
    ("ParamSpec", "decay_mult", 1.0),
    ("ConvolutionParameter", "bias_term", True),
    ("ConvolutionParameter", "group", 1),
    ("ConvolutionParameter", "axis", 1),
    ("ConvolutionParameter", "engine", pb.ConvolutionParameter.DEFAULT),
    ("InnerProductParameter", "bias_term", True),
    ("InnerProductParameter", "axis", 1),
    ("LRNParameter", "local_size", 5),
    ("LRNParameter", "alpha", 1.0),
    ("LRNParameter", "beta", 0.75),
    ("LRNParameter", "k", 1.0),
    ("LRNParameter", "norm_region", pb.LRNParameter.ACROSS_CHANNELS),
    ("BatchNormParameter", "moving_average_fraction", 0.999),
    ("BatchNormParameter", "eps", 1e-5),
    ("ScaleParameter", "axis", 1),
    ("ScaleParameter", "num_axes", 1),
    ("ScaleParameter", "bias_term", False),
    ("BiasParameter", "num_axes", 1),
    ("ConcatParameter", "axis", 1),
    ("ConcatParameter", "concat_dim", 1),
    ("SliceParameter", "axis", 1),
    ("SoftmaxParameter", "axis", 1),
    ("DropoutParameter", "dropout_ratio", 0.5),
    ("ReLUParameter", "negative_slope", 0.0),
    ("ELUParameter", "alpha", 1.0),
    ("PowerParameter", "power", 1.0),
    ("ExpParameter", "base", -1.0),
    ("LogParameter", "base", -1.0),
    ("SwishParameter", "beta", 1.0),
    ("AccuracyParameter", "top_k", 1),
    ("ArgMaxParameter", "top_k", 1),
    ("ContrastiveLossParameter", "margin", 1.0),
    ("HingeLossParameter", "norm", pb.HingeLossParameter.L1),
    ("InfogainLossParameter", "axis", 1),
    ("ImageDataParameter", "batch_size", 1),
    ("ImageDataParameter", "is_color", True),
    ("WindowDataParameter", "fg_threshold", 0.5),
    ("WindowDataParameter", "fg_fraction", 0.25),
    ("WindowDataParameter", "crop_mode", "warp"),
    ("FlattenParameter", "axis", 1),
    ("FlattenParameter", "end_axis", -1),
    ("ReshapeParameter", "axis", 0),
    ("ReshapeParameter", "num_axes", -1),
    ("CropParameter", "axis", 2),
    ("TileParameter", "axis", 1),
    ("ReductionParameter", "operation", pb.ReductionParameter.SUM),
    ("ReductionParameter", "axis", 0),
    ("ReductionParameter", "coeff", 1.0),
    ("MVNParameter", "normalize_variance", True),
    ("MVNParameter", "eps", 1e-9),
    ("EmbedParameter", "bias_term", True),
    ("PythonParameter", "param_str", ""),
    ("RecurrentParameter", "num_output", 0),
    ("SPPParameter", "pool", pb.SPPParameter.MAX),
    ("PReLUParameter", "channel_shared", False),
    ("TransformationParameter", "scale", 1.0),
    ("TransformationParameter", "mirror", False),
    ("BlobProto", "num", 0),
    ("SolverState", "current_step", 0),
    ("Datum", "encoded", False),
    ("V0LayerParameter", "biasterm", True),
    ("V0LayerParameter", "det_crop_mode", "warp"),
    ("V0LayerParameter", "concat_dim", 1),
    ("V0LayerParameter", "dropout_ratio", 0.5),
]


@pytest.mark.parametrize("msg,name,value", DEFAULTS, ids=lambda v: str(v))
def test_defaults(msg, name, value):
    m = getattr(pb, msg)()
    got = getattr(m, name)
    if isinstance(value, float):
        assert got == pytest.approx(value, rel=1e-6)
    else:
        assert got == value
    assert not m.HasField(name)


def test_fields_without_default():
    # these must be "unset" (no declared default) in Caffe
    for msg, name in [("ConvolutionParameter", "stride_h"), ("ConvolutionParameter", "kernel_h"),
                      ("PoolingParameter", "stride_h"), ("ParamSpec", "share_mode"),
                      ("LossParameter", "ignore_label"), ("BatchNormParameter", "use_global_stats"),
                      ("SolverParameter", "base_lr"), ("ArgMaxParameter", "axis")]:
        assert not _field(msg, name).has_default_value, (msg, name)


def test_enums():
    assert pb.Phase.items() == [("TRAIN", 0), ("TEST", 1)]
    assert dict(pb.SolverParameter.SolverType.items()) == {
        "SGD": 0, "NESTEROV": 1, "ADAGRAD": 2, "RMSPROP": 3, "ADADELTA": 4, "ADAM": 5}
    assert dict(pb.SolverParameter.SnapshotFormat.items()) == {"HDF5": 0, "BINARYPROTO": 1}
    assert dict(pb.SolverParameter.SolverMode.items()) == {"CPU": 0, "GPU": 1}
    assert dict(pb.LossParameter.NormalizationMode.items()) == {
        "FULL": 0, "VALID": 1, "BATCH_SIZE": 2, "NONE": 3}
    assert dict(pb.PoolingParameter.RoundMode.items()) == {"CEIL": 0, "FLOOR": 1}
    assert dict(pb.PoolingParameter.PoolMethod.items()) == {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}
    assert dict(pb.ParamSpec.DimCheckMode.items()) == {"STRICT": 0, "PERMISSIVE": 1}
    assert dict(pb.V1LayerParameter.DimCheckMode.items()) == {"STRICT": 0, "PERMISSIVE": 1}
    assert dict(pb.FillerParameter.VarianceNorm.items()) == {"FAN_IN": 0, "FAN_OUT": 1, "AVERAGE": 2}
    assert dict(pb.DataParameter.DB.items()) == {"LEVELDB": 0, "LMDB": 1}
    assert dict(pb.HingeLossParameter.Norm.items()) == {"L1": 1, "L2": 2}
    assert dict(pb.ReductionParameter.ReductionOp.items()) == {"SUM": 1, "ASUM": 2, "SUMSQ": 3, "MEAN": 4}
    assert dict(pb.EltwiseParameter.EltwiseOp.items()) == {"PROD": 0, "SUM": 1, "MAX": 2}
    assert dict(pb.LRNParameter.NormRegion.items()) == {"ACROSS_CHANNELS": 0, "WITHIN_CHANNEL": 1}
    for m in ("ConvolutionParameter", "PoolingParameter", "LRNParameter", "ReLUParameter",
              "SigmoidParameter", "SoftmaxParameter", "TanHParameter", "SPPParameter"):
        assert dict(getattr(pb, m).Engine.items()) == {"DEFAULT": 0, "CAFFE": 1, "CUDNN": 2}, m
    v1 = dict(pb.V1LayerParameter.LayerType.items())
    expected = ["NONE", "ACCURACY", "BNLL", "CONCAT", "CONVOLUTION", "DATA", "DROPOUT",
                "EUCLIDEAN_LOSS", "FLATTEN", "HDF5_DATA", "HDF5_OUTPUT", "IM2COL", "IMAGE_DATA",
                "INFOGAIN_LOSS", "INNER_PRODUCT", "LRN", "MULTINOMIAL_LOGISTIC_LOSS", "POOLING",
                "RELU", "SIGMOID", "SOFTMAX", "SOFTMAX_LOSS", "SPLIT", "TANH", "WINDOW_DATA",
                "ELTWISE", "POWER", "SIGMOID_CROSS_ENTROPY_LOSS", "HINGE_LOSS", "MEMORY_DATA",
                "ARGMAX", "THRESHOLD", "DUMMY_DATA", "SLICE", "MVN", "ABSVAL", "SILENCE",
                "CONTRASTIVE_LOSS", "EXP", "DECONVOLUTION"]
    assert v1 == {name: i for i, name in enumerate(expected)}
    assert dict(pb.V0LayerParameter.PoolMethod.items()) == {"MAX": 0, "AVE": 1, "STOCHASTIC": 2}


def test_all_bvlc_messages_present():
    names = set(pb.DESCRIPTOR.message_types_by_name)
    bvlc = {
        "BlobShape", "BlobProto", "BlobProtoVector", "Datum", "FillerParameter", "NetParameter",
        "SolverParameter", "SolverState", "NetState", "NetStateRule", "ParamSpec",
        "LayerParameter", "TransformationParameter", "LossParameter", "AccuracyParameter",
        "ArgMaxParameter", "BatchNormParameter", "BiasParameter", "ClipParameter",
        "ConcatParameter", "ContrastiveLossParameter", "ConvolutionParameter", "CropParameter",
        "DataParameter", "DropoutParameter", "DummyDataParameter", "EltwiseParameter",
        "ELUParameter", "EmbedParameter", "ExpParameter", "FlattenParameter",
        "HDF5DataParameter", "HDF5OutputParameter", "HingeLossParameter", "ImageDataParameter",
        "InfogainLossParameter", "InnerProductParameter", "InputParameter", "LogParameter",
        "LRNParameter", "MemoryDataParameter", "MVNParameter", "ParameterParameter",
        "PoolingParameter", "PowerParameter", "PythonParameter", "RecurrentParameter",
        "ReductionParameter", "ReLUParameter", "ReshapeParameter", "ScaleParameter",
        "SigmoidParameter", "SliceParameter", "SoftmaxParameter", "SwishParameter",
        "TanHParameter", "TileParameter", "ThresholdParameter", "WindowDataParameter",
        "SPPParameter", "V1LayerParameter", "V0LayerParameter", "PReLUParameter",
    }
    extensions = {"NetdefDataCursor", "NetdefResumeState", "NetdefDeploy", "NetdefDeployInput",
                  "NetdefFusedActivation"}
    assert names == bvlc | extensions
    assert set(pb.DESCRIPTOR.enum_types_by_name) == {"Phase"}


def test_clip_parameter_required():
    from google.protobuf.message import EncodeError

    lp = text_format.Parse('type: "Clip" clip_param { min: 0 }', pb.LayerParameter())
    assert not lp.IsInitialized()
    with pytest.raises(EncodeError):
        lp.SerializeToString()
    lp = text_format.Parse('type: "Clip" clip_param { min: -1 max: 1.5 }', pb.LayerParameter())
    assert lp.IsInitialized()
    assert (lp.clip_param.min, lp.clip_param.max) == (-1.0, 1.5)


def test_netdef_resume_extension_roundtrip():
    st = pb.SolverState(iter=500, learned_net="x_iter_500.caffemodel", current_step=2)
    st.history.add().data.extend([0.5, -0.25])
    st.netdef_resume.rng_state = b"\x01\x02"
    st.netdef_resume.solver_type = "Adam"
    cur = st.netdef_resume.data_cursor.add(layer="mnist", position=6400, rng_state=b"\x03")
    raw = st.SerializeToString()
    back = pb.SolverState.FromString(raw)
    assert back == st and back.netdef_resume.data_cursor[0].position == 6400
    assert cur.layer == "mnist"
    # a Caffe reader (no field 1000) sees the same core fields: dropping the extension
    # leaves a message whose bytes are a prefix-compatible Caffe SolverState
    core = pb.SolverState()
    core.CopyFrom(back)
    core.ClearField("netdef_resume")
    assert raw.startswith(core.SerializeToString())


# ---------------------------------------------------------------------------
# (c) binary caffemodels
# ---------------------------------------------------------------------------

LENET_PARAM_SHAPES = {
    "conv1": [(20, 1, 5, 5), (20,)],
    "conv2": [(50, 20, 5, 5), (50,)],
    "ip1": [(500, 800), (500,)],
    "ip2": [(10, 500), (10,)],
}
LENET_LAYERS = ["mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"]


def _read(path: Path) -> bytes:
    return _need(path).read_bytes()


def test_lenet_caffemodel_new_format():
    raw = _read(CAFFE_DATA / "lenet" / "lenet_iter_10000.caffemodel")
    net = pb.NetParameter.FromString(raw)
    assert net.name == "LeNet"
    assert len(net.layers) == 0
    assert [l.name for l in net.layer] == LENET_LAYERS
    assert [l.type for l in net.layer] == ["Data", "Convolution", "Pooling", "Convolution",
                                           "Pooling", "InnerProduct", "ReLU", "InnerProduct",
                                           "SoftmaxWithLoss"]
    with_blobs = {l.name: l for l in net.layer if len(l.blobs)}
    assert set(with_blobs) == set(LENET_PARAM_SHAPES)
    for name, shapes in LENET_PARAM_SHAPES.items():
        blobs = with_blobs[name].blobs
        assert [tuple(b.shape.dim) for b in blobs] == shapes
        for b, shape in zip(blobs, shapes):
            assert len(b.data) == int(np.prod(shape))
            assert len(b.double_data) == 0 and len(b.diff) == 0
            assert np.all(np.isfinite(np.asarray(b.data)))
    assert with_blobs["conv1"].convolution_param.num_output == 20
    assert net.layer[2].pooling_param.pool == pb.PoolingParameter.MAX
    assert net.layer[0].include[0].phase == pb.TRAIN
    assert net.layer[-1].loss_weight[0] == 1.0
    # Nothing unknown to the schema, and re-serialising reproduces Caffe's bytes exactly
    assert net.SerializeToString() == raw


def test_lenet_caffemodel_v1_format():
    raw = _read(CAFFE_DATA / "lenet_v1format" / "lenet_iter_10000.caffemodel")
    net = pb.NetParameter.FromString(raw)
    assert net.name == "LeNet"
    assert len(net.layer) == 0
    assert [l.name for l in net.layers] == LENET_LAYERS
    T = pb.V1LayerParameter
    assert [l.type for l in net.layers] == [T.DATA, T.CONVOLUTION, T.POOLING, T.CONVOLUTION,
                                            T.POOLING, T.INNER_PRODUCT, T.RELU,
                                            T.INNER_PRODUCT, T.SOFTMAX_LOSS]
    legacy = {  # right-aligned 4-D legacy dims
        "conv1": [(20, 1, 5, 5), (1, 1, 1, 20)],
        "conv2": [(50, 20, 5, 5), (1, 1, 1, 50)],
        "ip1": [(1, 1, 500, 800), (1, 1, 1, 500)],
        "ip2": [(1, 1, 10, 500), (1, 1, 1, 10)],
    }
    with_blobs = {l.name: l for l in net.layers if len(l.blobs)}
    assert set(with_blobs) == set(legacy)
    for name, dims in legacy.items():
        blobs = with_blobs[name].blobs
        assert [(b.num, b.channels, b.height, b.width) for b in blobs] == dims
        for b, d in zip(blobs, dims):
            assert not b.HasField("shape")
            assert len(b.data) == int(np.prod(d))
    assert net.SerializeToString() == raw


def test_lenet_both_formats_hold_same_kind_of_weights():
    new = pb.NetParameter.FromString(_read(CAFFE_DATA / "lenet" / "lenet_iter_10000.caffemodel"))
    old = pb.NetParameter.FromString(
        _read(CAFFE_DATA / "lenet_v1format" / "lenet_iter_10000.caffemodel"))
    for a, b in zip(new.layer, old.layers):
        assert a.name == b.name
        assert [len(x.data) for x in a.blobs] == [len(x.data) for x in b.blobs]


# ---------------------------------------------------------------------------
# (d) mean binaryproto
# ---------------------------------------------------------------------------

def test_cifar100_mean_binaryproto():
    raw = _read(CAFFE_DATA / "mean" / "cifar100_mean.binaryproto")
    blob = pb.BlobProto.FromString(raw)
    if blob.HasField("shape"):
        shape = tuple(blob.shape.dim)
    else:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    assert shape == (1, 3, 32, 32)
    values = np.asarray(blob.double_data if len(blob.double_data) else blob.data, np.float64)
    assert values.size == 3 * 32 * 32
    means = values.reshape(3, 32, 32).mean(axis=(1, 2))
    np.testing.assert_allclose(means, [129.30, 124.07, 112.43], atol=0.01)
    assert blob.SerializeToString() == raw


# ---------------------------------------------------------------------------
# (e) prototxt corpus (text format)
# ---------------------------------------------------------------------------

def _corpus_files():
    files = sorted(glob.glob(str(CORPUS / "**" / "*.prototxt"), recursive=True))
    files += sorted(glob.glob(str(CAFFE_DATA / "**" / "*.prototxt"), recursive=True))
    return files


CORPUS_FILES = _corpus_files()
_CEIL_MODE_LINE = re.compile(r"^\s*ceil_mode\s*:.*$", re.MULTILINE)


def _is_solver(path: str) -> bool:
    return "solver" in os.path.basename(path)


def _is_densenet(path: str) -> bool:
    return "densenet" in path.lower()


def _rel(path: str) -> str:
    try:
        return str(Path(path).relative_to(SHARED))
    except ValueError:
        return path


def test_corpus_present():
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not available: {CORPUS}")
    assert sum(1 for p in CORPUS_FILES if p.startswith(str(CORPUS))) >= 60
    assert any(_is_solver(p) for p in CORPUS_FILES)


@pytest.mark.parametrize("path", CORPUS_FILES, ids=_rel)
def test_corpus_prototxt_parses(path):
    text = Path(path).read_text(encoding="utf-8")
    if _is_solver(path):
        msg = pb.SolverParameter()
        text_format.Parse(text, msg)
        assert msg.ListFields(), "empty solver"
        return
    msg = pb.NetParameter()
    if _is_densenet(path) and _CEIL_MODE_LINE.search(text):
        # DenseNet uses the non-BVLC pooling field `ceil_mode`; plain text_format must
        # reject exactly that field (netdef's own loader maps it to round_mode).
        with pytest.raises(text_format.ParseError, match="ceil_mode"):
            text_format.Parse(text, pb.NetParameter())
        text = _CEIL_MODE_LINE.sub("", text)
    text_format.Parse(text, msg)
    assert len(msg.layer) + len(msg.layers) > 0
    # text round trip is lossless
    again = pb.NetParameter()
    text_format.Parse(text_format.MessageToString(msg), again)
    assert again == msg


def test_corpus_spot_values():
    path = _need(CORPUS / "mnist" / "lenet_consolidated_solver.prototxt")
    sol = text_format.Parse(path.read_text(), pb.SolverParameter())
    assert sol.HasField("net_param")
    assert len(sol.net_param.layers) > 0  # inline V1-format net
    assert len(sol.test_state) == len(sol.test_iter)

    path = _need(CORPUS / "mnist" / "mnist_autoencoder_solver.prototxt")
    sol = text_format.Parse(path.read_text(), pb.SolverParameter())
    assert [s.stage[0] for s in sol.test_state] == ["test-on-train", "test-on-test"]

    path = _need(CORPUS / "bvlc_googlenet" / "train_val.prototxt")
    net = text_format.Parse(path.read_text(), pb.NetParameter())
    aux = [l for l in net.layer if l.loss_weight and abs(l.loss_weight[0] - 0.3) < 1e-6]
    assert len(aux) >= 2
