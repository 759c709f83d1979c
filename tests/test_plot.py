"""`netdef plot` and netdef.logparse: Caffe's and netdef's text logs and netdef's metrics files
read back into the same rows; the curves drawn into an image; bad inputs -> one line, exit 2."""
import json
import math
import signal
import sys

import pytest
from click.testing import CliRunner

from netdef.logparse import parse_file, parse_log_lines
from netdef_cli.main import cli

# lines as BVLC Caffe writes them (solver.cpp / sgd_solver.cpp), with glog's prefix
CAFFE_LOG = """\
I1127 03:56:50.000000 12345 caffe.cpp:218] Using GPUs 0
I1127 03:56:50.500000 12345 solver.cpp:48] Initializing solver from parameters:
test_iter: 100
test_interval: 500
I1127 03:56:55.123456 12345 solver.cpp:397] Iteration 0, Testing net (#0)
I1127 03:56:55.200000 12345 net.cpp:676] Ignoring source layer mnist
I1127 03:56:56.000000 12345 solver.cpp:464]     Test net output #0: accuracy = 0.0912
I1127 03:56:56.000000 12345 solver.cpp:464]     Test net output #1: loss = 2.30862 (* 1 = 2.30862 loss)
I1127 03:56:56.250000 12345 solver.cpp:218] Iteration 0 (-1.2e-05 iter/s, 0.06s/100 iters), loss = 2.32
I1127 03:56:56.250000 12345 solver.cpp:237]     Train net output #0: loss = 2.32 (* 1 = 2.32 loss)
I1127 03:56:56.250000 12345 sgd_solver.cpp:105] Iteration 0, lr = 0.01
I1127 03:56:57.100000 12345 solver.cpp:228] Iteration 100, loss = 0.2
I1127 03:56:57.100000 12345 solver.cpp:244]     Train net output #0: loss = 0.2 (* 1 = 0.2 loss)
I1127 03:56:57.100000 12345 sgd_solver.cpp:106] Iteration 100, lr = 0.00992565
I1127 03:56:58.100000 12345 solver.cpp:337] Iteration 500, Testing net (#0)
I1127 03:56:58.500000 12345 solver.cpp:404]     Test net output #0: accuracy = 0.98
I1127 03:56:58.500000 12345 solver.cpp:404]     Test net output #1: loss = 5.12e-02 (* 1 = 0.0512 loss)
I1127 03:56:58.500000 12345 solver.cpp:337] Iteration 500, Testing net (#1)
I1127 03:56:58.700000 12345 solver.cpp:404]     Test net output #0: prob = 0.25
I1127 03:56:58.700000 12345 solver.cpp:404]     Test net output #1: prob = 0.75
I1127 03:56:58.800000 12345 solver.cpp:228] Iteration 500, loss = -nan
I1127 03:56:58.800000 12345 sgd_solver.cpp:106] Iteration 500, lr = 1e-05
I1127 03:56:59.000000 12345 solver.cpp:454] Snapshotting to binary proto file lenet_iter_500.caffemodel
I1127 03:57:01.000000 12345 solver.cpp:317] Iteration 600, loss = 0.05
I1127 03:57:01.000000 12345 solver.cpp:322] Optimization Done.
"""


def test_parse_caffe_log_exact():
    train, test = parse_log_lines(CAFFE_LOG.splitlines(keepends=True))
    assert [r["iter"] for r in train] == [0, 100, 500, 600]
    assert train[0] == {"iter": 0, "loss": 2.32, "lr": 0.01, "outputs": {"loss": 2.32},
                        "time": 6.25}
    assert train[1] == {"iter": 100, "loss": 0.2, "lr": 0.00992565, "outputs": {"loss": 0.2},
                        "time": pytest.approx(7.1)}
    assert math.isnan(train[2]["loss"]) and train[2]["lr"] == 1e-05
    assert train[3]["loss"] == 0.05 and train[3]["lr"] is None
    assert train[3]["time"] == pytest.approx(11.0)
    assert test == [
        {"iter": 0, "net": 0, "outputs": {"accuracy": 0.0912, "loss": 2.30862},
         "time": pytest.approx(5.123456)},
        {"iter": 500, "net": 0, "outputs": {"accuracy": 0.98, "loss": 0.0512},
         "time": pytest.approx(8.1)},
        {"iter": 500, "net": 1, "outputs": {"prob": [0.25, 0.75]},
         "time": pytest.approx(8.5)},
    ]


def test_parse_old_caffe_lines_without_glog_prefix():
    # pre-2016 Caffe: "Iteration N, loss = L"; a log run through `cut` loses the prefix
    train, test = parse_log_lines([
        "Iteration 0, Testing net (#0)\n",
        "    Test net output #0: accuracy = 0.1\n",
        "Iteration 20, loss = 1.5e+00\n",
        "Iteration 20, lr = 0.001\n",
        "Iteration 40, loss = 0.75\n",
    ])
    assert train == [{"iter": 20, "loss": 1.5, "lr": 0.001, "outputs": {}, "time": None},
                     {"iter": 40, "loss": 0.75, "lr": None, "outputs": {}, "time": None}]
    assert test == [{"iter": 0, "net": 0, "outputs": {"accuracy": 0.1}, "time": None}]


NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y" include { phase: TRAIN }
  dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 dim: 2 }
    data_filler { type: "gaussian" } data_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "data" type: "DummyData" top: "x" top: "y" top: "label" include { phase: TEST }
  dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 dim: 2 } shape { dim: 8 }
    data_filler { type: "gaussian" } data_filler { type: "uniform" min: -1 max: 1 }
    data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "p"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "p" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""


@pytest.fixture
def keep_signals():
    """`netdef train` installs SIGINT/SIGHUP handlers; give pytest its own back."""
    sigs = [signal.SIGINT] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    saved = {s: signal.getsignal(s) for s in sigs}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.fixture
def trained(tmp_path, keep_signals):
    """A real 30-iteration netdef run: its metrics file and its log."""
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.25 lr_policy: "step" gamma: 0.5 '
        f'stepsize: 10 max_iter: 30 display: 10 test_iter: 2 test_interval: 15 '
        f'snapshot_after_train: false snapshot_prefix: "{tmp_path / "run"}" random_seed: 3')
    r = CliRunner().invoke(cli, ["train", "--solver", str(tmp_path / "solver.prototxt")])
    assert r.exit_code == 0, r.output
    (tmp_path / "train.log").write_text(r.stderr)
    return tmp_path


def test_parse_metrics_of_a_real_run(trained):
    path = trained / "run_metrics.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    train, test = parse_file(str(path))
    assert [r["iter"] for r in train] == [0, 10, 20]
    assert [r["lr"] for r in train] == [0.25, 0.125, 0.0625]
    raw_train = [r for r in records if r["phase"] == "train"]
    assert train == [{"iter": r["iter"], "loss": r["loss"], "lr": r["lr"],
                      "outputs": r["outputs"], "time": r["time"]} for r in raw_train]
    assert all(r["outputs"] == {"loss": r["loss"]} for r in train)
    assert [(r["iter"], r["net"]) for r in test] == [(0, 0), (15, 0), (30, 0)]
    raw_test = [r for r in records if r["phase"] == "test"]
    assert [r["outputs"] for r in test] == [r["outputs"] for r in raw_test]
    assert set(test[0]["outputs"]) == {"loss", "accuracy"}

    # the same run's text log says the same (to its 6 significant digits)
    ltrain, ltest = parse_file(str(trained / "train.log"))
    assert [r["iter"] for r in ltrain] == [0, 10, 20, 30]   # + Solve()'s final loss line
    for a, b in zip(ltrain, train):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-5)
        assert a["outputs"] == pytest.approx(b["outputs"], rel=1e-5)
    assert [(r["iter"], r["net"]) for r in ltest] == [(0, 0), (15, 0), (30, 0)]
    for a, b in zip(ltest, test):
        assert a["outputs"] == pytest.approx(b["outputs"], rel=1e-5)


def test_half_written_last_metrics_line_is_skipped(tmp_path):
    p = tmp_path / "m_metrics.jsonl"
    p.write_text('{"iter": 0, "time": 0.1, "phase": "train", "loss": 1.0, "lr": 0.1, '
                 '"outputs": {"loss": 1.0}}\n{"iter": 10, "ti')
    train, test = parse_file(str(p))
    assert train == [{"iter": 0, "loss": 1.0, "lr": 0.1, "outputs": {"loss": 1.0},
                      "time": 0.1}] and test == []


def run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    return r.exit_code, r.output, r.stdout


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_png_from_metrics_and_logs(trained, tmp_path):
    pytest.importorskip("matplotlib")
    caffe = tmp_path / "caffe.log"
    caffe.write_text(CAFFE_LOG)
    out = tmp_path / "curves.png"
    code, output, _ = run("plot", trained / "run_metrics.jsonl", trained / "train.log", caffe,
                          "-o", out)
    assert code == 0, output
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000
    PIL = pytest.importorskip("PIL.Image")
    with PIL.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 300

    svg = tmp_path / "one.svg"
    code, output, _ = run("plot", trained / "run_metrics.jsonl", "-o", svg, "--smooth", "2")
    assert code == 0, output
    assert b"<svg" in svg.read_bytes()[:500]


def test_plot_json_prints_the_series(trained, tmp_path):
    caffe = tmp_path / "caffe.log"
    caffe.write_text(CAFFE_LOG)
    code, output, stdout = run("plot", "--json", trained / "run_metrics.jsonl", caffe)
    assert code == 0, output
    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [d["file"] for d in lines] == [str(trained / "run_metrics.jsonl"), str(caffe)]
    assert [r["lr"] for r in lines[0]["train"]] == [0.25, 0.125, 0.0625]
    assert lines[1]["train"][2]["loss"] is None           # -nan -> null, valid JSON
    assert lines[1]["test"][2]["outputs"] == {"prob": [0.25, 0.75]}
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("content,words", [
    ("", ["empty file"]),
    ("\n\n", ["empty file"]),
    ("hello\nthis is not a training log\n", ["no training or test records"]),
    ('{"iter": 0, "phase": "train", "loss": 1}\nnot json\n{"iter": 2}\n',
     ["line 2", "not a metrics record"]),
    ('{"phase": "train", "loss": 1}\n', ["line 1", "no 'iter'"]),
])
def test_unreadable_inputs_one_line_exit_2(tmp_path, content, words):
    p = tmp_path / "bad.log"
    p.write_text(content)
    code, output, _ = run("plot", p, "-o", tmp_path / "x.png")
    assert code == 2, output
    assert output.count("\n") == 1 and output.startswith(f"error: {p}: "), output
    for w in words:
        assert w in output
    assert not (tmp_path / "x.png").exists()


def test_missing_file_and_bad_format_one_line_exit_2(tmp_path):
    code, output, _ = run("plot", tmp_path / "nope.log")
    assert code == 2 and output == f"error: {tmp_path / 'nope.log'}: file not found\n"
    pytest.importorskip("matplotlib")
    p = tmp_path / "a.log"
    p.write_text(CAFFE_LOG)
    code, output, _ = run("plot", p, "-o", tmp_path / "x.notaformat")
    assert code == 2 and output.count("\n") == 1 and "notaformat" in output, output


def test_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    p = tmp_path / "a.log"
    p.write_text(CAFFE_LOG)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    code, output, _ = run("plot", p, "-o", tmp_path / "x.png")
    assert code == 2 and output.count("\n") == 1, output
    assert "pip install 'netdef[plot]'" in output
    # --json needs no matplotlib
    code, output, _ = run("plot", p, "--json")
    assert code == 0 and json.loads(output)["train"][0]["lr"] == 0.01
