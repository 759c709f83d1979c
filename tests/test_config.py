"""Reading and writing definitions: prototxt/YAML parsing with positions, upgrades."""
import glob
import os

import pytest

from shared_paths import CORPUS, DATA
from google.protobuf import text_format

from netdef.config import (load_net, load_solver, net_from_text, parse_text, to_prototxt,
                           to_yaml)
from netdef.config.loader import _read_text
from netdef.errors import ConfigError
from netdef.proto import pb

CORPUS_FILES = sorted(glob.glob(os.path.join(CORPUS, "*", "*.prototxt")))


def is_solver(path):
    return "solver" in os.path.basename(path)


def test_corpus_present():
    assert len(CORPUS_FILES) == 71


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: os.path.relpath(p, CORPUS))
def test_corpus_parses_like_protobuf_and_round_trips(path):
    cls = pb.SolverParameter if is_solver(path) else pb.NetParameter
    text = _read_text(path)
    ours = cls()
    parse_text(text, ours, path)
    if "ceil_mode" not in text:  # protobuf's own parser is the oracle, except for the alias
        ref = cls()
        text_format.Parse(text, ref)
        assert ours == ref
    for writer, fmt in ((to_yaml, "yaml"), (to_prototxt, "prototxt")):
        back = cls()
        parse_text(writer(ours), back, "x", fmt)
        assert back == ours


def test_positions_recorded():
    d = net_from_text('name: "n"\nlayer {\n  name: "a"\n  type: "Input"\n'
                      '  input_param { shape { dim: 1 dim: 2 } }\n}\n', file="n.prototxt")
    assert d.where(("layer", 0)) == (2, 1)
    assert d.where(("layer", 0, "type")) == (4, 3)
    assert d.where(("layer", 0, "input_param", "shape", 0, "dim", 1)) == (5, 32)


def test_yaml_positions_and_values():
    text = ("name: lenet\nlayer:\n  - name: data\n    type: Input\n    top: [data]\n"
            "    input_param: {shape: [{dim: [64, 1, 28, 28]}]}\n"
            "  - name: pool\n    type: Pooling\n    bottom: data\n    top: pool\n"
            "    pooling_param: {pool: AVE, kernel_size: 2, stride: 2}\n")
    d = net_from_text(text, "yaml", file="n.yaml")
    net = d.message
    assert net.layer[0].input_param.shape[0].dim == [64, 1, 28, 28]
    assert net.layer[1].pooling_param.pool == pb.PoolingParameter.AVE
    assert d.where(("layer", 1)) == (7, 5)
    assert d.where(("layer", 1, "pooling_param", "pool")) == (11, 21)


def test_ceil_mode_alias():
    net = pb.NetParameter()
    parse_text('layer { pooling_param { ceil_mode: false } }', net)
    assert net.layer[0].pooling_param.round_mode == pb.PoolingParameter.FLOOR
    parse_text('layer { pooling_param { ceil_mode: true } }', net)
    assert net.layer[0].pooling_param.round_mode == pb.PoolingParameter.CEIL


def test_text_format_variants():
    net = pb.NetParameter()
    parse_text("# c\nname: 'a' \"b\"\nlayer: < name: \"x\" bottom: [\"p\", \"q\"]; "
               "param: { lr_mult: 1e-1 } param { lr_mult: 2.5f } >\n"
               "force_backward: true state { phase: TEST level: 0x10 }", net)
    assert net.name == "ab"
    assert list(net.layer[0].bottom) == ["p", "q"]
    assert net.layer[0].param[0].lr_mult == pytest.approx(0.1)
    assert net.layer[0].param[1].lr_mult == 2.5
    assert net.state.level == 16 and net.state.phase == pb.TEST


@pytest.mark.parametrize("text,line,col,words", [
    ('layer { nme: "a" }', 1, 9, ["unknown field 'nme'", "did you mean 'name'"]),
    ('layer {\n  name: "a"\n  convolution_param { num_output: -3 }\n}', 3, 35,
     ["num_output", "non-negative"]),
    ('layer { name: a }', 1, 15, ["quoted string"]),
    ('layer { pooling_param { pool: MAXX } }', 1, 31, ["unknown value", "MAX, AVE"]),
    ('layer { name: "a" name: "b" }', 1, 19, ["given twice"]),
    ('layer { name: "a" ', 1, 19, ["missing '}'"]),
    ('layer { name: "a" } }', 1, 21, ["unexpected '}'"]),
    ('layer { name "a" }', 1, 14, ["expected ':'"]),
    ('layer { convolution_param { pad: 1.5 } }', 1, 34, ["an integer"]),
    ('force_backward: maybe', 1, 17, ["true or false"]),
    ('layer { name: "abc }', 1, 15, ["unterminated string"]),
    ('layer: 3', 1, 1, ["is a message"]),
    ('name { }', 1, 1, ["takes a value"]),
])
def test_prototxt_errors(text, line, col, words):
    with pytest.raises(ConfigError) as ei:
        parse_text(text, pb.NetParameter(), "bad.prototxt")
    e = ei.value
    assert (e.file, e.line, e.col) == ("bad.prototxt", line, col), str(e)
    for w in words:
        assert w in str(e)
    assert str(e).startswith(f"bad.prototxt:{line}:{col}: ")


@pytest.mark.parametrize("text,line,words", [
    ("layer:\n  - name: a\n    typo: 1\n", 3, ["unknown field 'typo'"]),
    ("layer:\n  - convolution_param: {num_output: abc}\n", 2, ["an integer"]),
    ("layer: [\n", 2, ["YAML syntax error"]),
    ("- a\n- b\n", 1, ["must be a mapping"]),
])
def test_yaml_errors(text, line, words):
    with pytest.raises(ConfigError) as ei:
        parse_text(text, pb.NetParameter(), "bad.yaml", "yaml")
    assert ei.value.line == line, str(ei.value)
    for w in words:
        assert w in str(ei.value)


def test_v1_lenet_upgrades_to_the_current_lenet():
    v1 = load_net(os.path.join(DATA, "caffe", "lenet_v1format", "lenet_train_test.prototxt"))
    cur = load_net(os.path.join(DATA, "caffe", "lenet", "lenet_train_test.prototxt"))
    assert any("V1" in n for n in v1.notes) and not cur.notes
    assert v1.message == cur.message


def test_consolidated_solver_embeds_v1_net():
    d = load_solver(os.path.join(CORPUS, "mnist", "lenet_consolidated_solver.prototxt"))
    net = d.message.net_param
    assert not len(net.layers)
    assert [l.type for l in net.layer][:4] == ["Data", "Data", "Data", "Convolution"]
    conv = net.layer[3]
    assert [p.lr_mult for p in conv.param] == [1.0, 2.0]
    assert any("V1" in n for n in d.notes)


def test_v1_text_upgrade_fields():
    d = net_from_text("""
        name: "old"
        input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
        layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
                 convolution_param { num_output: 4 kernel_size: 3 } }
        layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
        layers { name: "d" type: DATA top: "x" data_param { source: "s" scale: 0.5 mirror: true } }
    """, file="old.prototxt")
    net = d.message
    assert [l.type for l in net.layer] == ["Input", "Convolution", "ReLU", "Data"]
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[1].param] == [(1, 1), (2, 0)]
    assert net.layer[3].transform_param.scale == 0.5 and net.layer[3].transform_param.mirror
    assert not net.layer[3].data_param.HasField("scale")
    assert d.where(("layer", 1)) == (4, 9)   # points at the original `layers {`
    assert len(d.notes) == 3


def test_v0_upgrade_folds_padding():
    d = net_from_text("""
        name: "v0"
        input: "data" input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9
        layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
        layers { layer { name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 1
                         blobs_lr: 1 blobs_lr: 2 weight_filler { type: "gaussian" std: 0.01 } }
                 bottom: "pad1" top: "conv1" }
        layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
                 bottom: "conv1" top: "pool1" }
    """)
    net = d.message
    assert [l.type for l in net.layer] == ["Input", "Convolution", "Pooling"]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"]
    assert list(conv.convolution_param.pad) == [2]
    assert list(conv.convolution_param.kernel_size) == [5]
    assert conv.convolution_param.weight_filler.type == "gaussian"
    assert [p.lr_mult for p in conv.param] == [1, 2]
    assert net.layer[2].pooling_param.pool == pb.PoolingParameter.AVE


def test_solver_type_upgrade():
    s = pb.SolverParameter()
    from netdef.config.upgrade import upgrade_solver
    parse_text("solver_type: NESTEROV base_lr: 0.1", s)
    notes = upgrade_solver(s)
    assert s.type == "Nesterov" and not s.HasField("solver_type") and notes


def test_batchnorm_param_upgrade():
    d = net_from_text('layer { name: "bn" type: "BatchNorm" param { lr_mult: 0 } '
                      'param { lr_mult: 0 } param { lr_mult: 0 } }')
    assert len(d.message.layer[0].param) == 0


def test_missing_file():
    with pytest.raises(ConfigError, match="file not found"):
        load_net("/nonexistent/net.prototxt")


def test_yaml_and_prototxt_same_message(tmp_path):
    src = os.path.join(CORPUS, "bvlc_googlenet", "train_val.prototxt")
    d = load_net(src)
    y = tmp_path / "g.yaml"
    y.write_text(to_yaml(d.message))
    d2 = load_net(str(y))
    assert d2.message == d.message
    assert d2.where(("layer", 5)) != (None, None)


# --- hostile input: every parser bounded, every failure one ConfigError with a position ---

def _alias_bomb(levels=9):
    """YAML 'billion laughs': 9 aliases per level, 9**levels leaves once expanded, ~550 bytes."""
    lines = ["l0: &l0 {name: x}"]
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} {{a: [" + ",".join([f"*l{i - 1}"] * 9) + "]}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text,fmt,message,where", [
    (_alias_bomb(), "yaml", "once aliases are expanded", (None, None)),
    ("a: &a {b: *a}\n", "yaml", "an alias refers to a mapping that contains it", (1, 4)),
    ("layer {" * 3000, "prototxt", "nested deeper than 100 levels", (1, 707)),
    ("a: {" * 150 + "}" * 150, "yaml", "nested", None),
    ("{a: " * 3000, "yaml", "nested too deeply", None),
    ('name: "ab\\x"', "prototxt", "'\\x' must be followed by one or two hex digits", (1, 7)),
])
def test_parsers_are_bounded(text, fmt, message, where):
    with pytest.raises(ConfigError) as e:
        net_from_text(text, fmt, "net." + fmt)
    assert message in str(e.value)
    assert str(e.value).startswith("net." + fmt)
    if where and where[0] is not None:
        assert (e.value.line, e.value.col) == where


def test_alias_within_budget_still_expands():
    text = "name: n\nlayer: [&b {name: relu, type: ReLU, bottom: x, top: x}, *b]\n"
    d = net_from_text(text, "yaml", "n.yaml")
    assert [l.name for l in d.message.layer] == ["relu", "relu"]


@pytest.mark.parametrize("path,message", [
    ("/dev/zero", "not a regular file"),
    ("/dev/urandom", "not a regular file"),
    ("/etc", "is a directory"),
])
def test_only_regular_files_are_read(path, message):
    for load in (load_net, load_solver):
        with pytest.raises(ConfigError, match=message):
            load(path)
    with pytest.raises(ConfigError, match=message):
        load_net(path, fmt="binary")


def test_text_definition_size_is_capped(tmp_path):
    from netdef.io.files import MAX_TEXT_BYTES
    big = tmp_path / "big.prototxt"
    with open(big, "wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)       # sparse: costs no disk
    with pytest.raises(ConfigError, match="too large for a definition file"):
        load_net(str(big))


@pytest.mark.parametrize("text,field", [
    ('base_lr: nan', "base_lr"),
    ('base_lr: inf', "base_lr"),
    ('momentum: -inf', "momentum"),
    ('weight_decay: 1e39', "weight_decay"),
])
def test_solver_floats_must_be_finite(text, field):
    with pytest.raises(ConfigError) as e:
        parse_text(text, pb.SolverParameter(), "s.prototxt")
    assert e.value.field == field and (e.value.line, e.value.col) == (1, len(field) + 3)
    assert "must be a finite number" in str(e.value)


@pytest.mark.parametrize("body,field", [
    ('param { lr_mult: nan }', "param.lr_mult"),
    ('loss_weight: inf', "loss_weight"),
    ('convolution_param { weight_filler { type: "gaussian" std: nan } }',
     "convolution_param.weight_filler.std"),
    ('scale_param { filler { value: -inf } }', "scale_param.filler.value"),
    ('clip_param { min: nan max: 1 }', "clip_param.min"),
])
def test_net_floats_must_be_finite(body, field):
    text = f'layer {{ name: "l" type: "Convolution" {body} }}'
    with pytest.raises(ConfigError, match="must be a finite number") as e:
        net_from_text(text, "prototxt", "n.prototxt")
    assert e.value.field == field and e.value.file == "n.prototxt" and e.value.line == 1


def test_infinite_bounds_where_caffe_gives_them_a_meaning():
    d = net_from_text('layer { name: "c" type: "Clip" clip_param { min: -inf max: inf } }\n'
                      'layer { name: "t" type: "Threshold" threshold_param { threshold: inf } }',
                      "prototxt", "n.prototxt")
    assert d.message.layer[0].clip_param.min == float("-inf")
    assert d.message.layer[0].clip_param.max == float("inf")
    assert d.message.layer[1].threshold_param.threshold == float("inf")
