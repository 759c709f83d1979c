"""Memory preflight (netdef.memcheck): a definition asking for more memory than the process
can have is one line before anything is allocated -- how much it needs, how much there is,
the largest layer -- for train, test and time; and the bounds it reads (MemAvailable, ulimit -v)."""
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from netdef.config import load_solver, net_from_text
from netdef.layers import TEST, TRAIN
from netdef.memcheck import MemoryPreflightError, available_bytes, check, preflight_net
from netdef_cli.main import cli

BIG = """name: "big"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: %d dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "c"
        convolution_param { num_output: 4 kernel_size: 3 } }
"""


def test_need_counts_blobs_params_history_and_workspace():
    d = net_from_text(BIG % 10)
    fwd = preflight_net(d, TEST, backward=False)
    data, conv = 10 * 3 * 32 * 32 * 4, 10 * 4 * 30 * 30 * 4
    params = (4 * 3 * 3 * 3 + 4) * 4
    col = 3 * 3 * 3 * 30 * 30 * 4                  # im2col of one image
    assert (fwd["activations"], fwd["params"], fwd["workspace"]) == (data + conv, params, col)
    assert fwd["total"] == data + conv + params + col and fwd["largest"].name == "conv"
    train = preflight_net(d, TRAIN, backward=True, history=2)     # Adam: 2 history blobs
    assert train["activations"] == 2 * (data + conv) and train["params"] == 4 * params


def test_check_names_need_available_and_largest_layer():
    need = preflight_net(net_from_text(BIG % 20_000_000), TEST, backward=False)
    with pytest.raises(MemoryPreflightError) as e:
        check([need], "this net", file="big.prototxt")
    msg = str(e.value)
    assert msg.startswith("big.prototxt: this net needs about 497.1 GiB (blobs 497.1 GiB, ")
    assert "is available (" in msg and "the largest layer is 'conv' (Convolution) with 268.2 GiB" \
        in msg and msg.endswith("lower the batch size")
    check([preflight_net(net_from_text(BIG % 2), TEST, backward=False)])     # small: passes


def test_time_and_test_refuse_before_allocating(tmp_path):
    net = tmp_path / "big.prototxt"
    net.write_text(BIG % 20_000_000)
    for args in (["time", "--model", str(net), "--iterations", "1"],
                 ["test", "--model", str(net), "--iterations", "1"]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 2, r.output
        last = r.output.strip().splitlines()[-1]
        assert last.startswith(f"error: {net}: this net needs about ") and "Traceback" not in \
            r.output


def test_train_refuses_before_allocating(tmp_path):
    from netdef.solvers.solver import Solver
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "d" type: "DummyData" top: "x" top: "y" dummy_data_param { '
        'shape { dim: 20000000 dim: 3 dim: 32 dim: 32 } shape { dim: 20000000 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "p" '
        'inner_product_param { num_output: 10 } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "p" bottom: "y" }')
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" max_iter: 1')
    with pytest.raises(MemoryPreflightError, match=r"^.*solver.prototxt: training needs about "
                                                   r".*the largest layer is 'd' \(DummyData\)"):
        Solver(load_solver(str(tmp_path / "solver.prototxt")))


def test_available_bytes_follows_the_address_space_limit():
    code = ("import resource, json\n"
            "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))\n"
            "from netdef.memcheck import available_bytes\n"
            "print(json.dumps(available_bytes()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    n, source = json.loads(out)
    assert 0 < n < 3 << 30
    assert source in ("the address-space limit (ulimit -v)", "MemAvailable",
                      "the cgroup's memory limit")
    n0, _ = available_bytes()
    assert n0 is None or n0 > 0
