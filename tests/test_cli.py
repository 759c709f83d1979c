"""The command line: summary/convert/upgrade, and malformed definitions → one line, exit 2."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from shared_paths import CORPUS, DATA
from click.testing import CliRunner

from netdef_cli.main import cli


INPUT = 'layer { name: "data" type: "Input" top: "data" ' \
        'input_param { shape { dim: 2 dim: 4 dim: 8 dim: 8 } } }\n'


def run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    return r.exit_code, r.output


# (name, file name, text, expected line or None, words in the message)
MALFORMED = [
    ("syntax", "n.prototxt", INPUT + 'layer { name: "r" type: "ReLU" bottom: "data"', 2,
     ["missing '}'"]),
    ("unknown_field", "n.prototxt", INPUT + 'layer { name: "r" tpye: "ReLU" }', 2,
     ["unknown field 'tpye'", "did you mean 'type'"]),
    ("wrong_type", "n.prototxt",
     INPUT + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
     '  convolution_param { num_output: "four" kernel_size: 3 } }', 3, ["num_output", "integer"]),
    ("bad_enum", "n.prototxt",
     INPUT + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n'
     '  pooling_param { pool: MEDIAN kernel_size: 2 } }', 3, ["MEDIAN", "MAX, AVE"]),
    ("unquoted_string", "n.prototxt", INPUT + 'layer { name: r type: "ReLU" }', 2,
     ["quoted string"]),
    ("negative_uint", "n.prototxt",
     INPUT + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
     '  convolution_param { num_output: -4 kernel_size: 3 } }', 3, ["non-negative"]),
    ("field_twice", "n.prototxt", INPUT + 'layer { name: "r" name: "s" }', 2, ["given twice"]),
    ("unknown_type", "n.prototxt",
     INPUT + 'layer { name: "r" type: "Relu" bottom: "data" top: "r" }', 2,
     ["unknown layer type 'Relu'", "did you mean 'ReLU'"]),
    ("dangling_bottom", "n.prototxt",
     INPUT + 'layer { name: "r" type: "ReLU" bottom: "dat" top: "r" }', 2,
     ["bottom 'dat' is not produced"]),
    ("duplicate_top", "n.prototxt",
     INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "x" }\n'
     'layer { name: "s" type: "TanH" bottom: "data" top: "x" }', 3, ["already produced"]),
    ("cycle", "n.prototxt",
     INPUT + 'layer { name: "a" type: "Eltwise" bottom: "data" bottom: "c" top: "b" }\n'
     'layer { name: "b" type: "ReLU" bottom: "b" top: "c" }', None, ["cycle"]),
    ("shape_mismatch", "n.prototxt",
     INPUT + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n'
     '  pooling_param { kernel_size: 2 stride: 2 } }\n'
     'layer { name: "e" type: "Eltwise" bottom: "data" bottom: "p" top: "e" }', 4, ["shape"]),
    ("pool_pad_ge_kernel", "n.prototxt",
     INPUT + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n'
     '  pooling_param { kernel_size: 2 pad: 2 } }', 3, ["pad"]),
    ("group_not_dividing", "n.prototxt",
     INPUT + 'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
     '  convolution_param { num_output: 6 kernel_size: 3 group: 3 } }', 3, ["group"]),
    ("include_and_exclude", "n.prototxt",
     INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r"\n'
     '  include { phase: TEST } exclude { phase: TRAIN } }', 3, ["include", "exclude"]),
    ("too_many_param_specs", "n.prototxt",
     INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "a"\n'
     '  param { lr_mult: 1 } }', 3, ["1 param specs", "0 parameter blobs"]),
    ("not_in_place", "n.prototxt",
     INPUT + 'layer { name: "s" type: "Softmax" bottom: "data" top: "data" }', 2,
     ["in place"]),
    ("loss_weight_count", "n.prototxt",
     INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" '
     'loss_weight: 1 loss_weight: 2 }', 2, ["loss_weight"]),
    ("data_without_shape", "n.prototxt",
     'layer { name: "mnist" type: "Data" top: "data" top: "label"\n'
     '  data_param { source: "nowhere_lmdb" batch_size: 64 } }', 2, ["--input-shape"]),
    ("yaml_syntax", "n.yaml", "layer:\n  - name: [a\n", 3, ["YAML"]),
    ("yaml_unknown_field", "n.yaml", "layer:\n  - name: a\n    bottoms: [x]\n", 3,
     ["unknown field 'bottoms'", "did you mean 'bottom'"]),
    ("ip_zero_outputs", "n.prototxt",
     INPUT + 'layer { name: "f" type: "InnerProduct" bottom: "data" top: "f"\n'
     '  inner_product_param { num_output: 0 } }', 3, ["num_output"]),
]


@pytest.mark.parametrize("name,fname,text,line,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_definition(tmp_path, name, fname, text, line, words):
    path = tmp_path / fname
    path.write_text(text)
    code, out = run("summary", path)
    assert code == 2, out
    assert "Traceback" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    msg = lines[0]
    prefix = f"error: {path}:" + (f"{line}:" if line else "")
    assert msg.startswith(prefix), msg
    for w in words:
        assert w in msg, msg
    if name not in ("syntax", "unknown_field", "unquoted_string", "field_twice", "yaml_syntax",
                    "yaml_unknown_field", "wrong_type", "bad_enum", "negative_uint"):
        assert "layer '" in msg, msg   # graph and layer errors name the layer


def test_missing_file_and_garbage_binary(tmp_path):
    code, out = run("summary", tmp_path / "nope.prototxt")
    assert code == 2 and "file not found" in out and "Traceback" not in out
    bad = tmp_path / "w.caffemodel"
    bad.write_bytes(b"\xff\xff\xff\xff garbage")
    code, out = run("summary", bad)
    assert code == 2 and "not a valid binary NetParameter" in out


def test_bad_input_shape_flag():
    code, out = run("summary", os.path.join(CORPUS, "mnist", "lenet.prototxt"),
                    "--input-shape", "data=a,b")
    assert code == 2 and "BLOB=N,C,H,W" in out


def test_real_process_exit_code_and_no_traceback(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text(INPUT + 'layer { name: "p" type: "Pooling" bottom: "data" top: "p"\n'
                    '  pooling_param { kernel_size: 3 pad: 3 } }\n')
    r = subprocess.run([sys.executable, "-m", "netdef_cli.main", "summary", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error: {path}:3:")
    assert "layer 'p' (Pooling)" in r.stderr


def test_summary_json_lenet():
    code, out = run("summary", os.path.join(CORPUS, "mnist", "lenet.prototxt"), "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["learnable_params"] == 431080
    assert s["outputs"] == {"prob": [64, 10]}
    names = [l["name"] for l in s["layers"]]
    assert names[:3] == ["data", "conv1", "pool1"]
    conv1 = s["layers"][1]
    assert conv1["tops"] == {"conv1": [64, 20, 24, 24]}
    assert conv1["params"] == 20 * 25 + 20
    # 2 * N * outC * outH * outW * (C * k * k) multiply-adds + bias adds
    assert conv1["flops"] >= 2 * 64 * 20 * 24 * 24 * 25
    assert s["flops"] == sum(l["flops"] for l in s["layers"])


def test_summary_table_and_train_phase_input_shape():
    code, out = run("summary", os.path.join(CORPUS, "mnist", "lenet_train_test.prototxt"),
                    "--phase", "TRAIN", "--input-shape", "data=64,1,28,28")
    assert code == 0, out
    assert "conv1" in out and "64x20x24x24" in out and "431,080" in out


def test_summary_reads_shapes_from_the_data_source(tmp_path, monkeypatch):
    pytest.importorskip("lmdb")
    import numpy as np

    from netdef.data.lmdb_source import write_lmdb
    monkeypatch.chdir(tmp_path)
    net = os.path.join(CORPUS, "mnist", "lenet_train_test.prototxt")
    code, out = run("summary", net)
    assert code == 2 and "--input-shape data=" in out and "layer 'mnist'" in out
    assert "examples/mnist/mnist_test_lmdb" in out
    imgs = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 1, 28, 28)
    write_lmdb("examples/mnist/mnist_test_lmdb", zip(imgs, [1, 2, 3]))
    code, out = run("summary", net, "--json")
    assert code == 0, out
    s = json.loads(out)
    assert s["inputs"] == {} and s["layers"][0]["tops"] == {"data": [100, 1, 28, 28],
                                                            "label": [100]}


def test_convert_round_trip(tmp_path):
    src = os.path.join(CORPUS, "bvlc_googlenet", "train_val.prototxt")
    y = tmp_path / "g.yaml"
    p = tmp_path / "g.prototxt"
    assert run("convert", src, y)[0] == 0
    assert run("convert", y, p)[0] == 0
    from netdef.config import load_net
    assert load_net(str(p)).message == load_net(src).message
    s = os.path.join(CORPUS, "bvlc_googlenet", "solver.prototxt")
    sy = tmp_path / "s.yaml"
    assert run("convert", s, sy)[0] == 0
    assert "base_lr: 0.01" in sy.read_text()


def test_upgrade_v1(tmp_path):
    src = os.path.join(DATA, "caffe", "lenet_v1format", "lenet_train_test.prototxt")
    out = tmp_path / "up.prototxt"
    code, text = run("upgrade", src, out)
    assert code == 0 and "V1" in text
    from netdef.config import load_net
    assert load_net(str(out)).message == \
        load_net(os.path.join(DATA, "caffe", "lenet", "lenet_train_test.prototxt")).message
    assert "layers {" not in out.read_text()


def _bomb_yaml():
    lines = ["l0: &l0 {name: x}"]
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} {{a: [" + ",".join([f"*l{i - 1}"] * 9) + "]}")
    return "\n".join(lines) + "\n"


def test_hostile_inputs_under_an_address_space_limit(tmp_path):
    """Under ulimit -v 4000000 (4 GB), each command given a hostile input exits 0 or 2 within
    30 s with one error line: no signal, no traceback, no runaway allocation."""
    import resource
    lenet = os.path.join(CORPUS, "mnist", "lenet.prototxt")
    (tmp_path / "bomb.yaml").write_text(_bomb_yaml())
    (tmp_path / "deep.prototxt").write_text("layer {" * 3000)
    (tmp_path / "big.prototxt").write_text(INPUT.replace("dim: 2 ", "dim: 20000000 "))
    (tmp_path / "net.prototxt").write_text(INPUT)
    (tmp_path / "nan.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: nan lr_policy: "fixed" max_iter: 1')
    cases = [
        ["summary", "/dev/zero"],
        ["summary", tmp_path / "bomb.yaml"],
        ["summary", tmp_path / "deep.prototxt"],
        ["time", "--model", tmp_path / "big.prototxt", "--iterations", "1"],
        ["test", "--model", lenet, "--weights", "/etc", "--iterations", "1"],
        ["test", "--model", lenet, "--weights", "/dev/zero", "--iterations", "1"],
        ["train", "--solver", tmp_path / "nan.prototxt"],
        ["train", "--solver", "/dev/urandom"],
    ]

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (4_000_000 * 1024, resource.RLIM_INFINITY))
    for args in cases:
        r = subprocess.run([sys.executable, "-m", "netdef_cli.main", *map(str, args)],
                           capture_output=True, text=True, timeout=30, preexec_fn=limit,
                           cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr[-1500:])
        errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
        assert len(errors) == 1 and "Traceback" not in r.stderr, (args, r.stderr[-1500:])


def test_caffe_flag_spelling():
    """gflags' single-dash long flags and underscores, as Caffe's docs write them."""
    from netdef_cli.main import caffe_spelling
    assert caffe_spelling(["train", "-solver", "s.prototxt", "-weights=a.caffemodel",
                           "-sigint_effect", "stop", "--gpu", "-1"]) == [
        "train", "--solver", "s.prototxt", "--weights=a.caffemodel", "--sigint-effect",
        "stop", "--gpu", "-1"]
    assert caffe_spelling(["device_query", "-gpu", "0"]) == ["device-query", "--gpu", "0"]
    assert caffe_spelling(["freeze", "-o", "x", "--input_shape", "d=1", "--", "-model"]) == [
        "freeze", "-o", "x", "--input-shape", "d=1", "--", "-model"]
    lenet = os.path.join(CORPUS, "mnist", "lenet.prototxt")
    r = subprocess.run([sys.executable, "-m", "netdef_cli.main", "summary", lenet, "-phase",
                        "TEST", "-input_shape", "data=2,1,28,28", "-json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"] == {"prob": [2, 10]}


def test_solver_mode_gpu_without_a_gpu_names_the_solver_line(tmp_path, monkeypatch):
    """BVLC's solvers say solver_mode: GPU; on a machine without one the error points at that
    line, not at a --gpu flag the user never gave (no GPU is made so here even where one, or
    the simulator, is usable)."""
    from netdef.backend.cuda import device
    monkeypatch.setattr(device, "available", lambda: False)
    monkeypatch.setattr(device, "_why_unavailable", lambda: "no CUDA GPU found")
    net = os.path.join(CORPUS, "mnist", "lenet_train_test.prototxt")
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 1\n'
                      f'solver_mode: GPU\n')
    code, out = run("train", "--solver", solver)
    assert code == 2
    assert out.strip().splitlines()[-1] == (
        f"error: {solver}:5:1: solver_mode: GPU asks for GPU 0: no CUDA GPU found; set "
        f"solver_mode: CPU or pass --gpu -1 to train on the CPU")
    assert "--gpu -1" in out


BENCH = """name: "b"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 4 dim: 1 dim: 8 dim: 8 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
"""


def test_time_feeds_labels_class_indices_and_logs_like_caffe(tmp_path):
    """The usual benchmark net (data and label Inputs, SoftmaxWithLoss, Accuracy) runs: label
    tops are zero (Caffe's zero-filled blobs: a valid class), not Gaussian noise; the log has
    Caffe's lines in Caffe's order, which scripts parse."""
    net = tmp_path / "bench.prototxt"
    net.write_text(BENCH)
    r = subprocess.run([sys.executable, "-m", "netdef_cli.main", "time", "-model", str(net),
                        "-iterations", "3"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    msgs = [l.split("] ", 1)[1] for l in r.stderr.splitlines() if "] " in l]
    order = ["Use CPU.", "Performing Forward", "Initial loss: 2.30259", "Performing Backward",
             "*** Benchmark begins ***", "Testing for 3 iterations."]
    assert msgs[:6] == order
    assert [m.split(" forward-backward")[0] for m in msgs[6:9]] == [
        "Iteration: 1", "Iteration: 2", "Iteration: 3"]
    assert msgs[9] == "Average time per layer: "
    assert msgs[10].startswith("      data\tforward: ") and msgs[-1] == "*** Benchmark ends ***"
    assert [m.split(":")[0] for m in msgs[-5:-1]] == [
        "Average Forward pass", "Average Backward pass", "Average Forward-Backward",
        "Total Time"]


def test_time_runs_data_layers_with_readable_sources(tmp_path):
    """A Data layer over a real LMDB is run and timed (as caffe time does); one whose source
    cannot be read is fed random data, with a warning naming it."""
    pytest.importorskip("lmdb")
    from netdef.data.lmdb_source import write_lmdb
    rng = np.random.default_rng(0)
    write_lmdb(str(tmp_path / "db"), [(rng.integers(0, 255, (1, 8, 8)).astype(np.uint8), i % 10)
                                      for i in range(6)])
    net = tmp_path / "net.prototxt"
    net.write_text(f"""
layer {{ name: "data" type: "Data" top: "data" top: "label"
        data_param {{ source: "{tmp_path / 'db'}" batch_size: 4 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param {{ num_output: 10 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
""")
    r = subprocess.run([sys.executable, "-m", "netdef_cli.main", "time", "--model", str(net),
                        "--iterations", "2", "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    layers = json.loads(r.stdout.strip().splitlines()[-1])["layers"]
    assert layers[0]["name"] == "data" and layers[0]["forward_ms"] > 0
    assert "cannot read its data" not in r.stderr


def _commands(group, path=()):
    import click
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path + (name,))
        else:
            yield " ".join(path + (name,)), cmd


def test_readme_command_table_equals_the_commands():
    """README's commands table names every command and every flag that exists, and no command
    that does not."""
    import click
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "README.md")) as f:
        rows = [line for line in f.read().splitlines() if line.startswith("| `netdef ")]
    table = "\n".join(rows)
    missing = []
    names = set()
    for name, cmd in _commands(cli):
        names.add(name)
        mine = [r for r in rows if f"`netdef {name} " in r or f"`netdef {name}`" in r
                or f"/ `netdef {name}" in r]
        if not mine:
            missing.append(f"no row for `netdef {name}`")
            continue
        row = " ".join(mine)
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.hidden:
                continue
            spellings = [o for o in p.opts + p.secondary_opts if o != "--help"]
            if spellings and not any(o in row for o in spellings):
                missing.append(f"`netdef {name}`: {spellings[0]}")
    assert not missing, missing
    import re
    listed = set()
    for m in re.finditer(r"`netdef ([a-z][a-z0-9-]*(?: [a-z][a-z0-9-]*)?)", table):
        listed.add(m.group(1))
    ghosts = {n for n in listed if n not in names and not any(k.startswith(n + " ")
                                                              for k in names)
              and n.split(" ")[0] not in names}
    assert not ghosts, ghosts
