"""Solvers: the training loop, snapshots in Caffe's format, and bit-exact resume (the LR policies
and update rules are tested in test_solver_updates.py)."""
import os

import numpy as np
import pytest

from netdef.config import load_solver, parse_text
from netdef.errors import ConfigError
from netdef.proto import pb


NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 dim: 2 }
    data_filler { type: "gaussian" } data_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
  inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "drop" type: "Dropout" bottom: "h" top: "h" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "p"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }
"""


def solver_def(tmp_path, extra, kind="SGD"):
    (tmp_path / "net.prototxt").write_text(NET)
    text = (f'net: "{tmp_path / "net.prototxt"}" type: "{kind}" base_lr: 0.05 momentum: 0.9 '
            f'weight_decay: 0.001 lr_policy: "step" gamma: 0.5 stepsize: 7 '
            f'snapshot_prefix: "{tmp_path / "snap"}" display: 0 '
            f'snapshot_after_train: false {extra}')
    if "max_iter" not in extra:
        text += " max_iter: 20"
    if "random_seed" not in extra:
        text += " random_seed: 42"

    if kind in ("AdaGrad", "RMSProp"):
        text = text.replace("momentum: 0.9", "")
    (tmp_path / "solver.prototxt").write_text(text)
    return load_solver(str(tmp_path / "solver.prototxt"))


def final_weights(solver):
    return [p.blob.data.copy() for p in solver.params]


@pytest.mark.parametrize("kind", ["SGD", "Adam", "RMSProp"])
def test_resume_is_bit_exact(tmp_path, kind):
    from netdef.solvers.solver import Solver
    a = Solver(solver_def(tmp_path, "", kind))
    a.solve()
    full = final_weights(a)
    b = Solver(solver_def(tmp_path, "max_iter: 9", kind))
    b.solve()
    _, state = b.snapshot()
    assert os.path.basename(state) == "snap_iter_9.solverstate"
    c = Solver(solver_def(tmp_path, "", kind))
    c.solve(resume=state)
    for x, y in zip(full, final_weights(c)):
        np.testing.assert_array_equal(x, y)
    # and a run with another seed differs (the comparison can fail)
    d = Solver(solver_def(tmp_path, "random_seed: 7", kind))
    d.solve()
    assert any(not np.array_equal(x, y) for x, y in zip(full, final_weights(d)))


def test_snapshot_files_are_caffe_format(tmp_path):
    from netdef.io.weights import load_caffemodel
    from netdef.solvers.solver import Solver
    s = Solver(solver_def(tmp_path, "snapshot: 10 max_iter: 10"))
    s.solve()
    model = tmp_path / "snap_iter_10.caffemodel"
    state = pb.SolverState()
    state.ParseFromString((tmp_path / "snap_iter_10.solverstate").read_bytes())
    assert state.iter == 10 and state.learned_net == str(model)
    assert len(state.history) == len(s.params) == 4
    net = load_caffemodel(str(model))
    ip1 = next(l for l in net.layer if l.name == "ip1")
    np.testing.assert_array_equal(np.asarray(ip1.blobs[0].data).reshape(6, 4),
                                  s.params[0].blob.data.astype(np.float32))
    assert not list(tmp_path.glob(".tmp-*"))   # written atomically


def test_iter_size_accumulates(tmp_path):
    """iter_size 2 with the same data twice = one step on the doubled-then-halved gradient."""
    from netdef.solvers.solver import Solver
    net = NET.replace('data_filler { type: "gaussian" } data_filler { type: "uniform" min: -1 max: 1 }',
                      'data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: 0.25 }')
    net = net.replace('dropout_ratio: 0.3', 'dropout_ratio: 0.0')
    (tmp_path / "net.prototxt").write_text(net)
    base = (f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" max_iter: 3 '
            f'random_seed: 3 display: 0 snapshot_after_train: false ')
    (tmp_path / "a.prototxt").write_text(base)
    (tmp_path / "b.prototxt").write_text(base + "iter_size: 2")
    a = Solver(load_solver(str(tmp_path / "a.prototxt")))
    a.solve()
    b = Solver(load_solver(str(tmp_path / "b.prototxt")))
    b.solve()
    for x, y in zip(final_weights(a), final_weights(b)):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_metrics_jsonl_beside_snapshots(tmp_path):
    import json
    from netdef.solvers.solver import Solver
    s = Solver(solver_def(tmp_path, "max_iter: 10"))
    s.param.display = 5
    s.solve()
    lines = [json.loads(l) for l in (tmp_path / "snap_metrics.jsonl").read_text().splitlines()]
    assert [l["iter"] for l in lines] == [0, 5]
    assert all(l["phase"] == "train" and l["outputs"]["loss"] == pytest.approx(l["loss"])
               for l in lines)
    assert lines[1]["lr"] == pytest.approx(0.05)   # step policy: gamma^(5 // 7) = 1


def test_metrics_file_is_one_run(tmp_path):
    """A second fresh run starts the metrics file anew; a resumed run keeps the lines up to
    its snapshot and drops what the interrupted run wrote after it."""
    import json
    from netdef.solvers.solver import Solver

    def iters():
        return [json.loads(l)["iter"] for l in
                (tmp_path / "snap_metrics.jsonl").read_text().splitlines()]
    def run(max_iter, resume=None):
        s = Solver(solver_def(tmp_path, f"max_iter: {max_iter}"))
        s.param.display = 2
        s.solve(resume=resume)
        return s
    for _ in range(2):
        run(10)
    assert iters() == [0, 2, 4, 6, 8]
    _, state = run(4).snapshot()            # iterations 0, 2 (and the snapshot at 4)
    assert iters() == [0, 2]
    run(10, resume=state)
    assert iters() == [0, 2, 4, 6, 8]


def test_resume_is_bit_exact_with_lmdb_random_crop_and_mirror(tmp_path):
    """Data layer over an LMDB with random crops and mirroring, read by the prefetch worker:
    a run resumed from a snapshot ends with the same weights as the uninterrupted run."""
    pytest.importorskip("lmdb")
    from netdef.data.lmdb_source import write_lmdb
    from netdef.solvers.solver import Solver
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, size=(23, 1, 10, 10), dtype=np.uint8)
    write_lmdb(str(tmp_path / "db"), zip(imgs, (np.arange(23) % 3).tolist()))
    net = f"""
    layer {{ name: "d" type: "Data" top: "data" top: "label"
      data_param {{ source: "{tmp_path / 'db'}" batch_size: 5 backend: LMDB }}
      transform_param {{ crop_size: 8 mirror: true scale: 0.01 }} }}
    layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
      inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
    layer {{ name: "drop" type: "Dropout" bottom: "ip" top: "ip" }}
    layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
    """
    (tmp_path / "net.prototxt").write_text(net)

    def solver(max_iter):
        (tmp_path / "s.prototxt").write_text(
            f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" '
            f'max_iter: {max_iter} random_seed: 9 display: 0 snapshot_after_train: false '
            f'snapshot_prefix: "{tmp_path / "snap"}"')
        return Solver(load_solver(str(tmp_path / "s.prototxt")))
    a = solver(12)
    a.solve()
    b = solver(7)
    b.solve()
    _, state = b.snapshot()
    c = solver(12)
    c.solve(resume=state)
    for x, y in zip(final_weights(a), final_weights(c)):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(final_weights(a)[0], final_weights(b)[0])


@pytest.mark.parametrize("text,field,message", [
    ("test_iter: 10 test_iter: -1", "test_iter", "test_iter must not be negative (value 2 is -1)"),
    ("average_loss: 0", "average_loss", "average_loss must be at least 1 (got 0"),
])
def test_solver_counts_are_checked(text, field, message):
    from netdef.solvers.updates import solver_problems
    p = pb.SolverParameter()
    parse_text(f'type: "SGD" base_lr: 0.01 lr_policy: "fixed" {text}', p)
    assert any(f == field and message in m for f, m in solver_problems(p))


def test_uniform_filler_min_above_max_is_a_config_error():
    from netdef.config import net_from_text
    from netdef.net import Net
    text = ('layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param '
            '{ num_output: 2 weight_filler { type: "uniform" min: 1 max: -1 } } }')
    with pytest.raises(ConfigError) as e:
        Net(net_from_text(text, file="n.prototxt"), 1)
    assert e.value.layer == "ip" and e.value.file == "n.prototxt" and e.value.line == 2
    assert "uniform filler min (1) is larger than its max (-1)" in str(e.value)


def _damaged_state(tmp_path, damage):
    """A 3-iteration SGD snapshot, rewritten after ``damage(state)``."""
    from netdef.proto import pb
    from netdef.solvers.solver import Solver
    s = Solver(solver_def(tmp_path, "max_iter: 3"))
    s.solve()
    _, path = s.snapshot()
    state = pb.SolverState()
    with open(path, "rb") as f:
        state.ParseFromString(f.read())
    damage(state)
    with open(path, "wb") as f:
        f.write(state.SerializeToString())
    return path


def _short_history(st):
    del st.history[0].data[1:]


def _wrong_shape(st):
    st.history[0].shape.dim[:] = [4, 6]


@pytest.mark.parametrize("damage,kind,message", [
    (lambda st: setattr(st.netdef_resume, "rng_state", b"{not json"), "SGD",
     "the solver's RNG state is corrupt"),
    (lambda st: setattr(st.netdef_resume, "rng_state", b'{"bit_generator": "MT19937"}'), "SGD",
     "the solver's RNG state is corrupt"),
    (lambda st: setattr(st, "learned_net", "/nonexistent/x.caffemodel"), "SGD",
     "its learned_net '/nonexistent/x.caffemodel': "),
    (lambda st: setattr(st, "learned_net", "/dev/zero"), "SGD",
     "not a regular file"),
    (lambda st: setattr(st, "learned_net", ""), "SGD", "it names no learned_net"),
    (_short_history, "SGD", "history blob 0 (ip1[0]) holds 1 values but its shape needs 24"),
    (_wrong_shape, "SGD", "history blob 0 (ip1[0]) has shape [4, 6] but the net needs [6, 4]"),
    (lambda st: st.history.pop(), "SGD", "it holds 3 history blobs but a SGD solver"),
    (lambda st: None, "Nesterov", "written by a SGD solver, this one is Nesterov"),
])
def test_resume_validates_the_whole_state(tmp_path, damage, kind, message):
    from netdef.errors import FileFormatError
    from netdef.solvers.solver import Solver
    path = _damaged_state(tmp_path, damage)
    s = Solver(solver_def(tmp_path, "max_iter: 6", kind))
    with pytest.raises(FileFormatError) as e:
        s.restore(path)
    assert e.value.file == path and "cannot resume from this snapshot: " in str(e.value)
    assert message in str(e.value)
    assert s.iter == 0                                   # nothing was applied


def test_resume_refuses_a_device_as_snapshot(tmp_path):
    from netdef.errors import ConfigError
    from netdef.solvers.solver import Solver
    s = Solver(solver_def(tmp_path, "max_iter: 6"))
    with pytest.raises(ConfigError, match="not a regular file"):
        s.restore("/dev/zero")
