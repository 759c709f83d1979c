"""Seeded mutation fuzzing of every reader a downloaded or damaged file reaches: prototxt and
YAML definitions (through the whole build: parse, schema, upgrade, shape inference),
.caffemodel, .solverstate (through resume), frozen models, .binaryproto means, LMDB records
and predict's image decoder. Each mutated input must give a result or a NetdefError -- never
another exception, a crash or a large allocation. Hypothesis runs derandomized (the same
examples every run), bounded to a few seconds per reader."""
import os

import numpy as np
import pytest

from shared_paths import CORPUS, DATA

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from netdef.errors import NetdefError  # noqa: E402

FUZZ = settings(derandomize=True, max_examples=400, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
LENET = os.path.join(DATA, "caffe", "lenet")
MEAN = os.path.join(DATA, "caffe", "mean", "cifar100_mean.binaryproto")


def _read(path):
    with open(path, "rb") as f:
        return f.read()


@st.composite
def mutated(draw, seed: bytes, max_ops: int = 6):
    """``seed`` with a few byte flips, insertions, deletions, duplicated spans or a cut."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup", "cut", "byte"]))
        if not data:
            data += b"\x00"
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 16))]
        elif op == "dup":
            n = draw(st.integers(1, 64))
            data[i:i] = data[i:i + n]
        else:
            del data[i:]
    return bytes(data)


def _tolerated(fn, *args):
    """Run ``fn``: success and NetdefError are the two allowed outcomes."""
    try:
        fn(*args)
    except NetdefError as e:
        assert "\n" not in str(e).strip() or "Traceback" not in str(e)


PROTOTXT = _read(os.path.join(CORPUS, "mnist", "lenet.prototxt"))
TEXT_TOKENS = [b"{", b"}", b":", b'"', b"\\x", b"layer {", b"&a ", b"*a", b"- ", b"nan", b"1e999",
               b"-1", b"\n", b"#", b"input_param { shape { dim: 0 } }"]


@st.composite
def mutated_text(draw, seed: bytes):
    data = draw(mutated(seed, 4))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from(TEXT_TOKENS)) + data[i:]
    return data


def _build(text: bytes, fmt: str):
    from netdef.config import net_from_text
    from netdef.layers.python_layer import SKIP, python_layers_mode
    from netdef.net import Net
    try:
        s = text.decode("utf-8")
    except UnicodeDecodeError:
        return
    with python_layers_mode(SKIP):
        Net(net_from_text(s, fmt, "fuzz." + fmt), 1, init_params=False)


@FUZZ
@given(mutated_text(PROTOTXT))
def test_fuzz_prototxt(data):
    _tolerated(_build, data, "prototxt")


def _yaml_seed():
    from netdef.config import net_from_text, to_yaml
    return to_yaml(net_from_text(PROTOTXT.decode(), "prototxt").message).encode()


@FUZZ
@given(mutated_text(_yaml_seed()))
def test_fuzz_yaml(data):
    _tolerated(_build, data, "yaml")


@pytest.fixture(scope="module")
def lenet_net():
    from netdef.config import load_net
    from netdef.layers import TEST
    from netdef.net import Net
    return Net(load_net(os.path.join(LENET, "lenet.prototxt")), TEST)


CAFFEMODEL = _read(os.path.join(LENET, "lenet_iter_10000.caffemodel"))


@FUZZ
@given(mutated(CAFFEMODEL))
def test_fuzz_caffemodel(tmp_path_factory, lenet_net, data):
    from netdef.io.weights import load_weights
    path = tmp_path_factory.mktemp("cm") / "w.caffemodel"
    path.write_bytes(data)
    _tolerated(load_weights, lenet_net, str(path))


@FUZZ
@given(mutated(_read(MEAN), 4))
def test_fuzz_binaryproto(tmp_path_factory, data):
    from netdef.data.binaryproto import read_mean
    path = tmp_path_factory.mktemp("bp") / "mean.binaryproto"
    path.write_bytes(data)
    _tolerated(read_mean, str(path))


@pytest.fixture(scope="module")
def frozen_bytes(tmp_path_factory):
    from netdef.config import load_net
    from netdef.deploy.freeze import freeze
    from netdef.io.weights import load_caffemodel
    path = tmp_path_factory.mktemp("fz") / "lenet.netdef"
    freeze(load_net(os.path.join(LENET, "lenet.prototxt")),
           load_caffemodel(os.path.join(LENET, "lenet_iter_10000.caffemodel"))).save(str(path))
    return path.read_bytes()


def test_fuzz_frozen(tmp_path, frozen_bytes):
    """Frozen files are checksummed: mutations also go into the body with the checksum
    recomputed (what a crafted file does), so the semantic checks behind it are reached."""
    from netdef.deploy.frozen import decode, encode
    from netdef.proto import pb
    fm = decode(frozen_bytes)
    body = fm.net.SerializeToString()

    @FUZZ
    @given(mutated(frozen_bytes, 3), mutated(body, 3))
    def run(raw, new_body):
        _tolerated(decode, raw, "f.netdef")
        net = pb.NetParameter()
        try:
            net.ParseFromString(new_body)
        except Exception:
            return
        _tolerated(decode, encode(net, fm.deploy), "f.netdef")
    run()


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    from test_solvers import solver_def
    from netdef.solvers.solver import Solver
    d = tmp_path_factory.mktemp("ss")
    s = Solver(solver_def(d, "max_iter: 2"))
    s.solve()
    model, state = s.snapshot()
    return d, state, _read(state)


@FUZZ
@given(data=st.data())
def test_fuzz_solverstate(snapshot, data):
    from test_solvers import solver_def
    from netdef.solvers.solver import Solver
    d, state, raw = snapshot
    s = Solver(solver_def(d, "max_iter: 4"))
    bad = os.path.join(d, "fuzz.solverstate")
    with open(bad, "wb") as f:
        f.write(data.draw(mutated(raw, 3)))
    _tolerated(s.restore, bad)


@pytest.fixture(scope="module")
def lmdb_records():
    pytest.importorskip("lmdb")
    from netdef.data.datum import array_to_datum
    rng = np.random.default_rng(0)
    return [array_to_datum(rng.integers(0, 255, (1, 6, 6), dtype=np.uint8), 3)
            .SerializeToString() for _ in range(4)]


@FUZZ
@given(data=st.data())
def test_fuzz_lmdb_records(tmp_path_factory, lmdb_records, data):
    """Damaged records in an intact LMDB (the B-tree itself is LMDB's to check: its
    truncation is tested in test_data_sources)."""
    import lmdb
    from netdef.data.lmdb_source import LMDBSource
    path = tmp_path_factory.mktemp("db")
    with lmdb.open(str(path), map_size=1 << 20) as env, env.begin(write=True) as txn:
        for i, rec in enumerate(lmdb_records):
            value = data.draw(mutated(rec, 3)) if i == 1 else rec
            txn.put(b"%08d" % i, value)

    def read():
        with LMDBSource(path) as src:
            src.read(4)
    _tolerated(read)


SAMPLE_PNG = _read(os.path.join(DATA, "samples", "mnist_00_7.png"))


@FUZZ
@given(mutated(SAMPLE_PNG, 4))
def test_fuzz_image_decoder(data):
    pytest.importorskip("PIL")
    from netdef.data.datum import decode_image
    _tolerated(decode_image, data, None)
