"""netdef device-query / check-parity / train --gpu, in the CUDA simulator unless
NUMBA_ENABLE_CUDASIM=0 (see test_cuda_layers.py)."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from netdef_cli.main import cli  # noqa: E402

pytestmark = pytest.mark.gpu

MODEL = """name: "tiny"
layer { name: "in" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 1 dim: 1 dim: 5 dim: 5 } shape { dim: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "c" top: "p"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "p" top: "y"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "label" top: "loss" }
"""


def test_device_query_simulator():
    r = CliRunner().invoke(cli, ["device-query", "--json"])
    assert r.exit_code == 0, r.output
    props = json.loads(r.output)
    assert props["device"] == 0 and props["name"]


def test_device_query_without_gpu_is_one_line_exit_2():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-m", "netdef_cli.main", "device-query"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "GPU" in lines[0]


def test_check_parity(tmp_path):
    m = tmp_path / "m.prototxt"
    m.write_text(MODEL)
    r = CliRunner().invoke(cli, ["check-parity", str(m), "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["ok"] and out["max"] <= 1e-4
    assert "conv[0] param diff" in out["blobs"] and "c data" in out["blobs"]
    # an impossible tolerance fails with exit 1
    r = CliRunner().invoke(cli, ["check-parity", str(m), "--tol", "-1", "--dtype", "float64"])
    assert r.exit_code == 1 and "FAIL" in r.output


def _gpu_solver(tmp_path):
    net = MODEL.replace('type: "Input" top: "x" top: "label"\n        input_param { shape { dim: 1 '
                        'dim: 1 dim: 5 dim: 5 } shape { dim: 1 } } }',
                        'type: "DummyData" top: "x" top: "label"\n        dummy_data_param { '
                        'shape { dim: 2 dim: 1 dim: 6 dim: 6 } shape { dim: 2 } data_filler { '
                        'type: "gaussian" } data_filler { type: "uniform" min: 0 max: 2.9 } } }')
    (tmp_path / "net.prototxt").write_text(net)
    s = tmp_path / "solver.prototxt"
    s.write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                 f'max_iter: 2\ndisplay: 1\nsnapshot_prefix: "{tmp_path / "snap"}"\n'
                 f'random_seed: 1\nsolver_mode: GPU\n')
    return s


def test_train_gpu_and_solver_mode(tmp_path):
    s = _gpu_solver(tmp_path)
    r = CliRunner().invoke(cli, ["train", "--solver", str(s)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "snap_iter_2.caffemodel").exists()
    assert (tmp_path / "snap_iter_2.solverstate").exists()


def test_gpu_out_of_memory_is_one_line_exit_2(tmp_path, monkeypatch):
    """A net larger than the GPU's free memory is refused before anything is allocated, and
    CUDA's out-of-memory error from an allocation is one line too: exit 2, no traceback."""
    from netdef.backend.cuda import counters, device
    s = _gpu_solver(tmp_path)
    monkeypatch.setattr(device, "free_memory", lambda: 1000)
    r = CliRunner().invoke(cli, ["train", "--solver", str(s)])
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "MiB of device memory" in lines[0] and "smaller batch" in lines[0]
    monkeypatch.setattr(device, "free_memory", lambda: None)

    class FakeCuda:
        def device_array(self, n, dtype):
            raise RuntimeError("Call to cuMemAlloc results in CUDA_ERROR_OUT_OF_MEMORY")
    monkeypatch.setattr(counters, "cuda", lambda: FakeCuda())
    with pytest.raises(device.DeviceMemoryError, match="GPU out of memory allocating 4.0 MiB"):
        counters.device_empty(1 << 20, "float32")
    r = CliRunner().invoke(cli, ["train", "--solver", str(s)])
    assert r.exit_code == 2 and r.output.strip().startswith("error: GPU out of memory"), r.output
    assert "Traceback" not in r.output


def test_bench_gpu_simulate_counts_one_training_iteration():
    """scripts/bench_gpu.py --simulate --json (kernel bodies skipped): per non-display LeNet
    iteration at batch 64 at most 30 launches, no host sync, nothing copied down, only the
    batch (data + labels) up, and both convolutions' weight-gradient GEMMs launch >= 264
    blocks (two per SM of an H100); CIFAR-10 quick likewise without a read back."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    r = subprocess.run([sys.executable, os.path.join(root, "scripts", "bench_gpu.py"),
                        "--simulate", "--json"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    lenet = out["lenet"]
    assert lenet["launches"] <= 30
    assert lenet["host_syncs"] == lenet["d2h_transfers"] == lenet["cpu_fallbacks"] == 0
    assert lenet["h2d_transfers"] == 2 and lenet["h2d_bytes"] == 64 * (28 * 28 + 1) * 4
    assert sum(sum(k.values()) for k in lenet["launches_by_layer"].values()) == \
        lenet["launches"]
    for conv, (m, n) in (("conv1", (20, 25)), ("conv2", (50, 500))):
        dw = [g for g in lenet["gemm_blocks"][f"{conv}:backward"] if (g["M"], g["N"]) == (m, n)]
        assert len(dw) == 1 and dw[0]["blocks"] >= 264, (conv, dw)
    cifar = out["cifar10_quick"]
    assert cifar["d2h_transfers"] == cifar["host_syncs"] == 0 and cifar["h2d_transfers"] == 2
