"""Whole-solver tests on a linear least-squares problem, after Caffe's
``test_gradient_based_solver.cpp``: Input (x, y) -> InnerProduct (num_output 1, bias) ->
EuclideanLoss.  Each test runs netdef's :class:`Solver` for a few iterations and compares the
weights, the bias, the solver history and the loss with a float64 numpy reference written here
from CAFFE_REFERENCE §3.1-3.3, independently of ``netdef.solvers``:

* loss = Σ(Xwᵀ + b − y)² / (2N);  ∂/∂w = rᵀX / N,  ∂/∂b = Σr / N  (r = Xwᵀ + b − y)
* per iteration: iter_size forward/backward passes (each on its own batch), gradients summed;
  ClipGradients on the summed gradient (global L2 norm); then per param: ÷ iter_size,
  + weight_decay·decay_mult·w (L2) or ·sign(w) (L1), update rule with rate·lr_mult, w −= Δ.

The batches are fixed in advance and written into the Input tops before each forward pass, so
the reference knows exactly which data each pass saw.  The schema's float fields are float32
(as in Caffe): the reference uses their float32 values, widened to float64.
"""
import math

import numpy as np
import pytest

from netdef.config import parse_text
from netdef.config.loader import Definition
from netdef.proto import pb
from netdef.solvers.solver import Solver

N, D = 6, 3             # batch size, input dimension
ITERS = 6               # solver iterations per run
MAX_ITER = 10           # the solvers' max_iter (poly policy)
TYPES = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]


def f32(x) -> float:
    """The value a float field of the schema holds (float32, as in Caffe)."""
    return float(np.float32(x))


# -- the problem -------------------------------------------------------------------------------
def make_batches(count: int, seed: int = 1701):
    """``count`` (X, y) batches of a noisy linear model; values exactly representable in float32
    so a float32 and a float64 net see the same data."""
    rng = np.random.default_rng(seed)
    w_true = np.array([[1.5, -2.0, 0.5]])
    out = []
    for _ in range(count):
        X = rng.standard_normal((N, D))
        y = X @ w_true.T + 0.7 + 0.3 * rng.standard_normal((N, 1))
        out.append((X.astype(np.float32).astype(np.float64),
                    y.astype(np.float32).astype(np.float64)))
    return out


W0 = np.array([[0.4, 0.3, -0.6]], dtype=np.float32).astype(np.float64)
B0 = np.array([-0.25], dtype=np.float32).astype(np.float64)
BATCHES = make_batches(ITERS * 3 + 3)


def net_text(mults) -> str:
    params = "".join(f" param {{ lr_mult: {lm} decay_mult: {dm} }}" for lm, dm in mults or ())
    return f"""
  layer {{ name: "data" type: "Input" top: "x" top: "y"
    input_param {{ shape {{ dim: {N} dim: {D} }} shape {{ dim: {N} dim: 1 }} }} }}
  layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "p"{params}
    inner_product_param {{ num_output: 1 }} }}
  layer {{ name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }}"""


def solver_text(cfg: dict) -> str:
    """Solver prototxt for ``cfg`` (solver fields; "mults": ((lr, decay) weight, (lr, decay)
    bias)); the net is inline as net_param."""
    parts = [f"net_param {{ {net_text(cfg.get('mults'))} }}", "display: 0",
             "snapshot_after_train: false", f"max_iter: {MAX_ITER}", "random_seed: 1"]
    for k, v in cfg.items():
        if k == "mults":
            continue
        for x in (v if isinstance(v, (list, tuple)) else [v]):
            parts.append(f'{k}: "{x}"' if isinstance(x, str) else f"{k}: {x}")
    return "\n".join(parts)


def make_solver(cfg: dict, dtype, prefix=None) -> Solver:
    msg = pb.SolverParameter()
    text = solver_text(cfg) + (f'\nsnapshot_prefix: "{prefix}"' if prefix else "")
    smap = parse_text(text, msg)
    return Solver(Definition(msg, None, smap, "prototxt"), dtype=dtype)


class Run:
    """A netdef solver whose Input tops get BATCHES[k] before its k-th forward pass."""

    def __init__(self, cfg, dtype=np.float64, prefix=None):
        self.solver = s = make_solver(cfg, dtype, prefix)
        assert [p.blob.data.shape for p in s.params] == [(1, D), (1,)]
        s.params[0].blob.data[...] = W0
        s.params[1].blob.data[...] = B0
        self.passes = 0
        net = s.net
        forward_backward = net.forward_backward

        def feed_then_run():
            X, y = BATCHES[self.passes]
            self.passes += 1
            net.blobs["x"].data[...] = X
            net.blobs["y"].data[...] = y
            return forward_backward()
        net.forward_backward = feed_then_run

    def params(self):
        return [np.array(p.blob.data, dtype=np.float64) for p in self.solver.params]


# -- the reference -----------------------------------------------------------------------------
def rate_at(cfg: dict, it: int) -> float:
    """lr_policy (CAFFE_REFERENCE §3.3) at iteration ``it`` (updates done so far)."""
    base = f32(cfg["base_lr"])
    policy = cfg.get("lr_policy", "fixed")
    gamma, power = f32(cfg.get("gamma", 0)), f32(cfg.get("power", 0))
    if policy == "fixed":
        return base
    if policy == "step":
        return base * gamma ** (it // cfg["stepsize"])
    if policy == "exp":
        return base * gamma ** it
    if policy == "inv":
        # Caffe: Dtype(1) + gamma() * iter_ -- gamma() is a float, so the product is a float one
        return base * (1.0 + float(np.float32(gamma) * np.float32(it))) ** -power
    if policy == "multistep":
        reached = sum(1 for s in cfg["stepvalue"] if it >= s)
        return base * gamma ** reached
    if policy == "poly":
        return base * (1.0 - it / MAX_ITER) ** power
    if policy == "sigmoid":
        return base / (1.0 + math.exp(-gamma * (it - cfg["stepsize"])))
    raise AssertionError(policy)


def reference(cfg: dict, iters: int = ITERS):
    """Float64 run of ``iters`` solver iterations; returns (params, history, losses, clipped)
    with history in .solverstate order (first moments of all params, then second moments)."""
    kind = cfg.get("type", "SGD")
    iter_size = cfg.get("iter_size", 1)
    mu = f32(cfg.get("momentum", 0.0))
    mu2 = f32(cfg.get("momentum2", 0.999))
    delta = f32(cfg.get("delta", 1e-8))
    rho = f32(cfg.get("rms_decay", 0.99))
    wd = f32(cfg.get("weight_decay", 0.0))
    l1 = cfg.get("regularization_type", "L2") == "L1"
    clip = f32(cfg.get("clip_gradients", -1.0))
    mults = [(f32(lm), f32(dm)) for lm, dm in cfg.get("mults") or ((1, 1), (1, 1))]

    w, b = W0.copy(), B0.copy()
    h1 = [np.zeros_like(w), np.zeros_like(b)]
    h2 = [np.zeros_like(w), np.zeros_like(b)]
    losses, clipped, k = [], 0, 0
    for it in range(iters):
        gw, gb, loss = np.zeros_like(w), np.zeros_like(b), 0.0
        for _ in range(iter_size):
            X, y = BATCHES[k]
            k += 1
            r = X @ w.T + b - y                       # (N, 1) residuals
            loss += float(np.sum(r * r)) / (2 * N)
            gw += r.T @ X / N
            gb += r.sum(axis=0) / N
        losses.append(loss / iter_size)
        rate = rate_at(cfg, it)
        if clip >= 0:
            norm = math.sqrt(float(np.sum(gw * gw) + np.sum(gb * gb)))
            if norm > clip:
                gw, gb = gw * (clip / norm), gb * (clip / norm)
                clipped += 1
        params, grads = [w, b], [gw, gb]
        for i in range(2):
            p, g = params[i], grads[i] / iter_size
            lr_mult, decay_mult = mults[i]
            g = g + wd * decay_mult * (np.sign(p) if l1 else p)
            lr = rate * lr_mult
            if kind == "SGD":
                h1[i] = mu * h1[i] + lr * g
                step = h1[i]
            elif kind == "Nesterov":
                old = h1[i]
                h1[i] = mu * h1[i] + lr * g
                step = (1 + mu) * h1[i] - mu * old
            elif kind == "AdaGrad":
                h1[i] = h1[i] + g * g
                step = lr * g / (np.sqrt(h1[i]) + delta)
            elif kind == "RMSProp":
                h1[i] = rho * h1[i] + (1 - rho) * g * g
                step = lr * g / (np.sqrt(h1[i]) + delta)
            elif kind == "AdaDelta":
                h1[i] = mu * h1[i] + (1 - mu) * g * g
                u = g * np.sqrt((h2[i] + delta) / (h1[i] + delta))
                h2[i] = mu * h2[i] + (1 - mu) * u * u
                step = lr * u
            elif kind == "Adam":
                t = it + 1
                h1[i] = mu * h1[i] + (1 - mu) * g
                h2[i] = mu2 * h2[i] + (1 - mu2) * g * g
                correction = math.sqrt(1 - mu2 ** t) / (1 - mu ** t)
                step = lr * correction * h1[i] / (np.sqrt(h2[i]) + delta)
            else:
                raise AssertionError(kind)
            params[i] = p - step
        w, b = params
    history = h1 + (h2 if kind in ("AdaDelta", "Adam") else [])
    return [w, b], history, losses, clipped


# -- configurations ----------------------------------------------------------------------------
BASE = {
    "SGD": {"base_lr": 0.05},
    "Nesterov": {"base_lr": 0.05},
    "AdaGrad": {"base_lr": 0.1},
    "RMSProp": {"base_lr": 0.02},
    "AdaDelta": {"base_lr": 1.0, "momentum": 0.95},     # Caffe's example settings
    "Adam": {"base_lr": 0.05, "momentum": 0.9},
}
# each type's own hyper-parameters set away from their defaults
HYPER = {
    "SGD": {"momentum": 0.9},
    "Nesterov": {"momentum": 0.9},
    "AdaGrad": {"delta": 0.01},
    "RMSProp": {"rms_decay": 0.9, "delta": 1e-4},
    "AdaDelta": {"momentum": 0.8, "delta": 1e-4},
    "Adam": {"momentum": 0.8, "momentum2": 0.99, "delta": 1e-4},
}
CAFFE_MULTS = ((1, 1), (2, 0))          # the usual weights / bias ParamSpecs
VARIANTS = {
    "plain": {},
    "hyper": "HYPER",
    "l2": {"weight_decay": 0.1},
    "l2_mults": {"weight_decay": 0.1, "mults": CAFFE_MULTS},
    "l1_mults": {"weight_decay": 0.1, "regularization_type": "L1",
                 "mults": ((1.5, 2), (0.5, 1))},
    "iter_size": {"iter_size": 3},
    "clip": {"clip_gradients": 2.0},        # the norm is 1-6: some iterations clip
    "everything": "EVERYTHING",
}


def config(kind: str, variant: str) -> dict:
    cfg = {"type": kind, "lr_policy": "fixed", **BASE[kind]}
    v = VARIANTS[variant]
    if v == "HYPER":
        v = HYPER[kind]
    elif v == "EVERYTHING":
        v = {**HYPER[kind], "weight_decay": 0.05, "mults": CAFFE_MULTS, "iter_size": 2,
             "clip_gradients": 3.0, "lr_policy": "step", "gamma": 0.5, "stepsize": 2}
    return {**cfg, **v}


def check(run: Run, cfg: dict, rtol: float, update_rtol: float, iters: int = ITERS):
    (w, b), history, losses, clipped = reference(cfg, iters)
    s = run.solver
    assert s.iter == iters
    assert run.passes == iters * cfg.get("iter_size", 1)
    if cfg.get("clip_gradients", -1) >= 0:
        # both branches of ClipGradients are exercised
        assert 0 < clipped < iters, clipped
    got_w, got_b = run.params()
    # the run moved the params well beyond rounding (the comparison can fail)
    assert np.max(np.abs(w - W0)) > 1e-5 and np.max(np.abs(b - B0)) > 1e-5
    np.testing.assert_allclose(got_w, w, rtol=rtol, atol=0)
    np.testing.assert_allclose(got_b, b, rtol=rtol, atol=0)
    np.testing.assert_allclose(got_w - W0, w - W0, rtol=update_rtol, atol=0)
    np.testing.assert_allclose(got_b - B0, b - B0, rtol=update_rtol, atol=0)
    assert len(s.history) == len(history)
    for got, want in zip(s.history, history):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=update_rtol,
                                   atol=1e-300)
    assert s.losses[-1] == pytest.approx(losses[-1], rel=rtol)


# -- tests -------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("kind", TYPES)
def test_least_squares_float64(kind, variant):
    cfg = config(kind, variant)
    run = Run(cfg)
    run.solver.step(ITERS)
    check(run, cfg, rtol=1e-10, update_rtol=1e-9)


@pytest.mark.parametrize("kind", TYPES)
def test_least_squares_float32(kind):
    """Caffe<float>: every operation in float32, so only float32-level agreement."""
    cfg = config(kind, "everything")
    run = Run(cfg, dtype=np.float32)
    run.solver.step(ITERS)
    assert all(p.blob.data.dtype == np.float32 for p in run.solver.params)
    check(run, cfg, rtol=1e-5, update_rtol=1e-4)


POLICIES = {
    "fixed": {},
    "step": {"gamma": 0.5, "stepsize": 2},
    "exp": {"gamma": 0.8},
    "inv": {"gamma": 0.3, "power": 0.75},
    "multistep": {"gamma": 0.5, "stepvalue": [1, 3, 4]},
    "poly": {"power": 1.5},                 # max_iter: MAX_ITER
    "sigmoid": {"gamma": -0.7, "stepsize": 3},
}


@pytest.mark.parametrize("policy", list(POLICIES))
@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_lr_policies_in_training(kind, policy):
    """The rate changes between iterations: with momentum it sits inside the velocity."""
    cfg = {**config(kind, "hyper"), "weight_decay": 0.01, "lr_policy": policy,
           **POLICIES[policy]}
    run = Run(cfg)
    run.solver.step(ITERS)
    rates = [rate_at(cfg, it) for it in range(ITERS)]
    if policy != "fixed":
        assert len(set(rates)) > 1
    check(run, cfg, rtol=1e-10, update_rtol=1e-9)


def test_sgd_momentum_history_each_iteration():
    """Caffe's solver test checks the history too: after every iteration the momentum blobs
    hold v = μv + lr·g (here the previous update, since Δ = v)."""
    cfg = config("SGD", "everything")
    run = Run(cfg)
    for k in range(1, ITERS + 1):
        before = run.params()
        run.solver.step(1)
        after = run.params()
        _, history, _, _ = reference(cfg, k)
        for got, want, b0, a1 in zip(run.solver.history, history, before, after):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
            np.testing.assert_allclose(got, b0 - a1, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("kind", ["SGD", "AdaDelta", "Adam"])
def test_snapshot_resume_matches(tmp_path, kind):
    """Snapshot after 3 of 6 iterations, restore in a fresh solver, finish: bit-for-bit the
    uninterrupted run, and the reference."""
    cfg = config(kind, "everything")
    full = Run(cfg, prefix=str(tmp_path / "full"))
    full.solver.step(ITERS)
    first = Run(cfg, prefix=str(tmp_path / "snap"))
    first.solver.step(3)
    _, state = first.solver.snapshot()
    resumed = Run(cfg, prefix=str(tmp_path / "snap"))
    resumed.solver.params[0].blob.data[...] = 0       # restore must bring the weights back
    resumed.solver.restore(state)
    assert resumed.solver.iter == 3
    resumed.passes = first.passes                     # the data continues where it stopped
    resumed.solver.step(ITERS - 3)
    for a, b in zip(full.params(), resumed.params()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(full.solver.history, resumed.solver.history):
        np.testing.assert_array_equal(a, b)
    check(resumed, cfg, rtol=1e-10, update_rtol=1e-9)
