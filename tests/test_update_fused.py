"""The fused one-pass parameter update (``updates.update_param`` -> ``backend.cpu.update.*_fused``)
against the separate passes it replaces (Normalize, Regularize, ComputeUpdateValue, data -= diff):
bit-identical data, diff and history for every rule, float32 and float64, L2/L1/no decay,
iter_size 1 and 3, lr_mult/decay_mult != 1, serial and per-thread blocks; and it is the path
taken wherever it applies."""
import numpy as np
import pytest

from netdef.backend.cpu import update as K
from netdef.proto import pb
from netdef.solvers import updates as U
from netdef.solvers.updates import get_update_rule, update_param

KINDS = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]


def bits(a):
    """The array's bytes as unsigned ints: equal means bit-identical (-0.0 != 0.0, NaN == NaN)."""
    a = np.ascontiguousarray(a)
    return a.view({4: np.uint32, 8: np.uint64}[a.itemsize])


def assert_bits_equal(x, y, what):
    assert x.dtype == y.dtype and x.shape == y.shape, what
    bad = np.flatnonzero(bits(x).reshape(-1) != bits(y).reshape(-1))
    assert bad.size == 0, f"{what}: {bad.size} elements differ, first at {bad[0]}: " \
                          f"{x.reshape(-1)[bad[0]]!r} vs {y.reshape(-1)[bad[0]]!r}"


def solver_param(kind, rng):
    p = pb.SolverParameter()
    p.type = kind
    if kind not in ("AdaGrad", "RMSProp"):
        p.momentum = float(rng.choice([0.9, 0.95, 0.5, 0.0]))
    p.momentum2 = float(rng.choice([0.999, 0.99]))
    p.delta = float(rng.choice([1e-8, 1e-6, 0.1]))
    p.rms_decay = float(rng.choice([0.99, 0.9]))
    return p


def random_config(seed):
    rng = np.random.default_rng(seed)
    kind = KINDS[seed % len(KINDS)]
    return {
        "kind": kind, "p": solver_param(kind, rng), "seed": seed,
        "dtype": (np.float32, np.float64)[(seed // len(KINDS)) % 2],
        "reg_type": str(rng.choice(["L2", "L1"])),
        "weight_decay": float(rng.choice([0.0, 5e-4, 0.01, 0.3])),
        "decay_mult": [float(rng.choice([1.0, 0.0, 2.5, 0.1])) for _ in range(3)],
        "lr_mult": [float(rng.choice([1.0, 2.0, 0.1, 0.0])) for _ in range(3)],
        "iter_size": int(rng.choice([1, 3])),
        "start": int(rng.choice([0, 1, 7, 100])),
        "shapes": [tuple(int(d) for d in rng.integers(1, 9, size=int(rng.integers(1, 4))))
                   for _ in range(2)] + [(int(rng.integers(100, 700)),)],
        "rates": [float(r) for r in rng.choice([0.01, 0.1, 1.0, 0.003], size=4)],
    }


def initial_arrays(cfg):
    rng = np.random.default_rng(1000 + cfg["seed"])
    dt = cfg["dtype"]
    params = [(rng.standard_normal(s) * 0.5).astype(dt) for s in cfg["shapes"]]
    grads = [[(rng.standard_normal(s) * 10.0 ** rng.integers(-3, 2)).astype(dt)
              for s in cfg["shapes"]] for _ in cfg["rates"]]
    for w in params:                                  # sign(0) for L1, and -0.0
        w.reshape(-1)[:: 7] = 0
        w.reshape(-1)[3:: 11] = -0.0
    for gs in grads:
        for g in gs:
            g.reshape(-1)[1:: 5] = 0
            g.reshape(-1)[2:: 13] = -0.0
    return params, grads


def run(cfg, fused, monkeypatch):
    monkeypatch.setattr(U, "FUSED", fused)
    rule = get_update_rule(cfg["kind"])(cfg["p"])
    params, grads = initial_arrays(cfg)
    history = rule.init_history(params)
    diffs = []
    for k, rate in enumerate(cfg["rates"]):
        step_diffs = []
        for i, w in enumerate(params):
            diff = grads[k][i]
            update_param(rule, i, diff, w, rate * cfg["lr_mult"][i], history, cfg["start"] + k,
                         cfg["iter_size"], cfg["weight_decay"], cfg["decay_mult"][i],
                         cfg["reg_type"])
            step_diffs.append(diff.copy())
        diffs.append(step_diffs)
    return params, diffs, history


def compare(cfg, monkeypatch):
    want = run(cfg, False, monkeypatch)
    got = run(cfg, True, monkeypatch)
    for name, a, b in zip(("data", "diff", "history"), want, got):
        a = [x for step in a for x in step] if name == "diff" else a
        b = [x for step in b for x in step] if name == "diff" else b
        assert len(a) == len(b)
        for j, (x, y) in enumerate(zip(a, b)):
            assert_bits_equal(x, y, f"{name}[{j}] {cfg['kind']} {cfg['dtype'].__name__}")
    assert all(np.all(np.isfinite(w)) for w in got[0])


@pytest.mark.parametrize("block", [0, 1, 2, 3])
def test_fused_matches_separate_passes_bit_for_bit(block, monkeypatch):
    """96 random configurations (every rule x dtype several times); blocks 2 and 3 lower the
    parallel threshold so that the per-thread block kernels run on odd sizes too."""
    if block >= 2:
        monkeypatch.setattr(U, "PARALLEL_MIN_SIZE", 5)
    for seed in range(24 * block, 24 * block + 24):
        compare(random_config(seed), monkeypatch)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reg_type,weight_decay", [("L2", 5e-4), ("L1", 0.01), ("L2", 0.0)])
@pytest.mark.parametrize("iter_size", [1, 3])
def test_fused_matches_every_combination(kind, dtype, reg_type, weight_decay, iter_size,
                                         monkeypatch):
    cfg = random_config(7)
    cfg.update(kind=kind, p=solver_param(kind, np.random.default_rng(3)), dtype=dtype,
               reg_type=reg_type, weight_decay=weight_decay, iter_size=iter_size,
               decay_mult=[1.0, 2.5, 0.0], lr_mult=[1.0, 2.0, 0.1], start=4)
    if kind not in ("AdaGrad", "RMSProp"):
        cfg["p"].momentum = 0.9
    compare(cfg, monkeypatch)


def test_large_array_threaded(monkeypatch):
    """Above PARALLEL_MIN_SIZE with the real threshold (blocks of one per thread)."""
    for kind in ("SGD", "Adam"):
        cfg = random_config(KINDS.index(kind))
        cfg.update(shapes=[(U.PARALLEL_MIN_SIZE + 37,), (3,), (1000, 150)], dtype=np.float32,
                   reg_type="L2", weight_decay=5e-4, iter_size=3, rates=[0.1, 0.05])
        compare(cfg, monkeypatch)


def counting(monkeypatch, name):
    calls = []
    real = getattr(K, name)

    def wrapper(*args):
        calls.append(args)
        return real(*args)
    monkeypatch.setattr(K, name, wrapper)
    return calls


def no_pass(*a, **k):
    raise AssertionError("a separate pass ran")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_kernel_is_the_path_taken(kind, dtype, monkeypatch):
    rule = get_update_rule(kind)(solver_param(kind, np.random.default_rng(0)))
    monkeypatch.setattr(U, "FUSED", True)
    calls = counting(monkeypatch, rule.kernel)
    for f in ("normalize", "regularize"):
        monkeypatch.setattr(U, f, no_pass)
    monkeypatch.setattr(rule, "compute_update", no_pass)
    w = np.ones((4, 5), dtype)
    history = rule.init_history([w])
    update_param(rule, 0, np.full((4, 5), 0.5, dtype), w, 0.1, history, 0, 2, 5e-4, 1.0, "L1")
    assert len(calls) == 1 and not np.array_equal(w, np.ones((4, 5), dtype))
    assert not rule._scratch                          # no temporaries


@pytest.mark.parametrize("case", ["strided", "mixed_dtype", "off"])
def test_separate_passes_where_the_kernel_does_not_apply(case, monkeypatch):
    rule = get_update_rule("Adam")(solver_param("Adam", np.random.default_rng(0)))
    calls = counting(monkeypatch, rule.kernel)
    monkeypatch.setattr(U, "FUSED", case != "off")
    w = np.ones((6, 4), np.float32)
    diff = np.full((6, 4), 0.5, np.float32)
    if case == "strided":
        w, diff = w[:, ::2], diff[:, ::2]
    history = rule.init_history([w])
    if case == "mixed_dtype":
        history[0] = history[0].astype(np.float64)
    update_param(rule, 0, diff, w, 0.1, history, 0, 1, 5e-4, 1.0, "L2")
    assert not calls and np.all(w < 1)


def test_a_subclass_overriding_compute_update_keeps_its_own_update(monkeypatch):
    class Halved(U.SGD):
        def compute_update(self, i, diff, data, local_rate, history, iter):
            super().compute_update(i, diff, data, local_rate, history, iter)
            diff *= diff.dtype.type(0.5)

    calls = counting(monkeypatch, "sgd_fused")
    monkeypatch.setattr(U, "FUSED", True)
    rule = Halved(solver_param("SGD", np.random.default_rng(0)))
    w = np.zeros(3, np.float32)
    update_param(rule, 0, np.ones(3, np.float32), w, 1.0, rule.init_history([w]), 0, 1, 0.0,
                 1.0, "L2")
    assert not calls and np.array_equal(w, np.full(3, -0.5, np.float32))


def test_solver_training_is_bit_identical_and_fused(tmp_path, monkeypatch):
    """Whole training runs (SGD and Adam, weight decay, iter_size 2): the same weights and
    history either way, and Solver.apply_update runs the fused kernel once per param."""
    from test_solvers import solver_def

    from netdef.solvers.solver import Solver
    for kind in ("SGD", "Adam"):
        out = []
        for fused in (False, True):
            monkeypatch.setattr(U, "FUSED", fused)
            calls = counting(monkeypatch, get_update_rule(kind).kernel)
            s = Solver(solver_def(tmp_path, "max_iter: 6 iter_size: 2", kind))
            s.solve()
            assert len(calls) == (6 * len(s.params) if fused else 0)
            out.append([p.blob.data.copy() for p in s.params] + [h.copy() for h in s.history])
        for j, (x, y) in enumerate(zip(*out)):
            assert_bits_equal(x, y, f"{kind} array {j}")
