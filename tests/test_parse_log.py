"""netdef parse-log: Caffe's parse_log.py CSVs (LOG.train, LOG.test) from a glog-format Caffe
log written here from CAFFE_REFERENCE.md's line formats, and from a real netdef log.

parse_log.py's own conventions, checked here: NumIters written as a float ("100.0"); Seconds
counted from the "Solving NAME" line, taken at a row's first output line; a row's LearningRate
is the last "lr = " logged before its outputs (so the previous display's), the first row
copying the second's; excel-dialect CSV (CRLF)."""
import csv
import os
import subprocess
import sys

from click.testing import CliRunner

from netdef_cli.main import cli

CAFFE_LOG = """\
I1207 10:00:00.000000  4242 caffe.cpp:218] Using GPUs 0
I1207 10:00:00.750000  4242 solver.cpp:294] Solving LeNet
I1207 10:00:00.750000  4242 solver.cpp:295] Learning Rate Policy: inv
I1207 10:00:01.500000  4242 solver.cpp:330] Iteration 0, Testing net (#0)
I1207 10:00:02.000000  4242 solver.cpp:397]     Test net output #0: accuracy = 0.1
I1207 10:00:02.000000  4242 solver.cpp:397]     Test net output #1: loss = 2.3 (* 1 = 2.3 loss)
I1207 10:00:02.250000  4242 solver.cpp:218] Iteration 0 (0 iter/s, 0.75s/100 iters), loss = 2.31
I1207 10:00:02.250000  4242 solver.cpp:237]     Train net output #0: loss = 2.31 (* 1 = 2.31 loss)
I1207 10:00:02.250000  4242 sgd_solver.cpp:105] Iteration 0, lr = 0.01
I1207 10:00:04.000000  4242 solver.cpp:218] Iteration 100 (57 iter/s, 1.75s/100 iters), loss = 0.2
I1207 10:00:04.000000  4242 solver.cpp:237]     Train net output #0: loss = 0.21 (* 1 = 0.21 loss)
I1207 10:00:04.000000  4242 sgd_solver.cpp:105] Iteration 100, lr = 0.00992565
I1207 10:00:05.000000  4242 solver.cpp:330] Iteration 200, Testing net (#0)
I1207 10:00:05.500000  4242 solver.cpp:397]     Test net output #0: accuracy = 0.95
I1207 10:00:05.500000  4242 solver.cpp:397]     Test net output #1: loss = 0.15 (* 1 = 0.15 loss)
"""


def _read(path):
    with open(path, newline="") as f:
        text = f.read()
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    return list(csv.reader(text.splitlines()))


def test_caffe_log_gives_parse_log_py_files(tmp_path):
    log = tmp_path / "caffe.INFO"
    log.write_text(CAFFE_LOG)
    r = CliRunner().invoke(cli, ["parse-log", str(log), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    train = _read(tmp_path / "out" / "caffe.INFO.train")
    test = _read(tmp_path / "out" / "caffe.INFO.test")
    assert train[0] == ["NumIters", "Seconds", "LearningRate", "loss"]
    # iteration 100's row has the lr logged at iteration 0; row 0 copies row 1's
    assert train[1:] == [["0.0", "1.5", "0.01", "2.31"],
                         ["100.0", "3.25", "0.01", "0.21"]]
    assert test[0] == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    # a test row: the last lr logged before it (iteration 100's), Seconds of its first output
    assert test[1:] == [["0.0", "1.25", "0.00992565", "0.1", "2.3"],
                        ["200.0", "4.75", "0.00992565", "0.95", "0.15"]]


def test_netdef_log_and_delimiter(tmp_path):
    solver = tmp_path / "s.prototxt"
    solver.write_text(f"""net_param {{
  layer {{ name: "data" type: "DummyData" top: "x" top: "label"
          dummy_data_param {{ shape {{ dim: 4 dim: 6 }} shape {{ dim: 4 }}
                             data_filler {{ type: "gaussian" std: 1 }}
                             data_filler {{ type: "constant" value: 1 }} }} }}
  layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y"
          inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
  layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss" }}
  layer {{ name: "acc" type: "Accuracy" bottom: "y" bottom: "label" top: "acc"
          include {{ phase: TEST }} }}
}}
base_lr: 0.1 lr_policy: "fixed" max_iter: 20 display: 5 test_iter: 1 test_interval: 10
snapshot: 0 random_seed: 1 snapshot_prefix: "{tmp_path / 's'}"
""")
    r = subprocess.run([sys.executable, "-m", "netdef_cli.main", "train", "--solver",
                        str(solver)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    log = tmp_path / "train.log"
    log.write_text(r.stderr)
    r = CliRunner().invoke(cli, ["parse-log", str(log), "--delimiter", ";"])
    assert r.exit_code == 0, r.output
    train = [row.split(";") for row in (tmp_path / "train.log.train").read_bytes().decode()
             .split("\r\n") if row]
    test = [row.split(";") for row in (tmp_path / "train.log.test").read_bytes().decode()
            .split("\r\n") if row]
    assert train[0] == ["NumIters", "Seconds", "LearningRate", "loss"]
    # the final "Iteration 20, loss = L" line has no outputs: no row, as parse_log.py
    assert [row[0] for row in train[1:]] == ["0.0", "5.0", "10.0", "15.0"]
    assert all(row[2] == "0.1" for row in train[1:])
    assert all(0 <= float(row[1]) < 60 for row in train[1:])
    assert test[0] == ["NumIters", "Seconds", "LearningRate", "acc", "loss"]   # Caffe's order
    assert [row[0] for row in test[1:]] == ["0.0", "10.0", "20.0"]
    assert os.path.getsize(tmp_path / "train.log.test") > 0
