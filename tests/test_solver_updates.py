"""The solvers' numeric core against formulas written out here (CAFFE_REFERENCE §3.1-3.3):
learning-rate policies, the six update rules (several steps on float64 params against an
independent float64 reference, with the rate changing between steps), the .solverstate history
layout, regularisation, gradient clipping, iter_size normalisation and solver validation; and the
fused one-pass update (``updates.update_param`` -> ``backend.cpu.update.*_fused``) bit for bit
against the separate passes it replaces."""
import math

import numpy as np
import pytest

from netdef.backend.cpu import update as K
from netdef.config import parse_text
from netdef.errors import ConfigError
from netdef.proto import pb
from netdef.solvers import (RULES, clip_gradients, get_update_rule, learning_rate, normalize,
                            regularize, validate_solver)
from netdef.solvers import updates as U
from netdef.solvers.updates import update_param

from layer_refs import update_rule_ref


def sp(text):
    p = pb.SolverParameter()
    parse_text(text, p)
    return p


def f32(x):
    """The value a float field of the schema holds (Caffe's are float32, too)."""
    return float(np.float32(x))


ITERS = [0, 1, 2, 3, 5, 9, 10, 11, 99, 100, 1000, 4999, 5000]


# -- learning-rate policies ------------------------------------------------------------------
@pytest.mark.parametrize("text,formula", [
    ("lr_policy: 'fixed' base_lr: 0.1",
     lambda it: f32(0.1)),
    ("lr_policy: 'step' base_lr: 0.1 gamma: 0.5 stepsize: 3",
     lambda it: f32(0.1) * 0.5 ** math.floor(it / 3)),
    ("lr_policy: 'exp' base_lr: 0.1 gamma: 0.999",
     lambda it: f32(0.1) * f32(0.999) ** it),
    ("lr_policy: 'inv' base_lr: 0.01 gamma: 0.0001 power: 0.75",       # LeNet's
     lambda it: f32(0.01) * (1 + f32(1e-4) * it) ** -0.75),
    ("lr_policy: 'poly' base_lr: 0.1 power: 2 max_iter: 5000",
     lambda it: f32(0.1) * (1 - it / 5000) ** 2),
    ("lr_policy: 'poly' base_lr: 0.04 power: 0.5 max_iter: 6000",
     lambda it: f32(0.04) * (1 - it / 6000) ** 0.5),
    ("lr_policy: 'sigmoid' base_lr: 0.1 gamma: -0.05 stepsize: 10",
     lambda it: f32(0.1) / (1 + math.exp(f32(0.05) * (it - 10)))),
    ("lr_policy: 'sigmoid' base_lr: 0.1 gamma: 0.01 stepsize: 100",
     lambda it: f32(0.1) / (1 + math.exp(-f32(0.01) * (it - 100)))),
])
@pytest.mark.parametrize("dtype,rel", [(np.float64, 1e-7), (np.float32, 1e-6)])
def test_lr_policy_values(text, formula, dtype, rel):
    p = sp(text)
    for it in ITERS:
        rate, _ = learning_rate(p, it, 0, dtype=dtype)
        assert isinstance(rate, float)
        # abs: in float32, 1 - it/max_iter cancels near max_iter (in Caffe<float> too)
        assert rate == pytest.approx(formula(it), rel=rel, abs=1e-9), it


def test_lr_default_dtype_is_float64_and_float32_rounds():
    p = sp("lr_policy: 'inv' base_lr: 0.01 gamma: 0.0001 power: 0.75")
    r64, _ = learning_rate(p, 777, 0)
    r32, _ = learning_rate(p, 777, 0, dtype=np.float32)
    assert r32 == float(np.float32(r32))                 # a float32 value
    assert r64 == pytest.approx(r32, rel=1e-6)


def test_step_policy_sets_current_step():
    p = sp("lr_policy: 'step' base_lr: 1 gamma: 0.1 stepsize: 4")
    for it, want in [(0, 0), (3, 0), (4, 1), (7, 1), (8, 2), (41, 10)]:
        rate, step = learning_rate(p, it, 99)           # the counter passed in is ignored
        assert step == want
        assert rate == pytest.approx(0.1 ** want, rel=1e-7)


def test_other_policies_keep_current_step():
    for text in ["lr_policy: 'fixed' base_lr: 1",
                 "lr_policy: 'inv' base_lr: 1 gamma: 0.1 power: 1",
                 "lr_policy: 'exp' base_lr: 1 gamma: 0.9"]:
        assert learning_rate(sp(text), 50, 3)[1] == 3


def test_multistep_one_step_per_iteration():
    p = sp("lr_policy: 'multistep' base_lr: 1 gamma: 0.5 "
           "stepvalue: 2 stepvalue: 3 stepvalue: 4 stepvalue: 8")
    step, got = 0, []
    for it in range(12):
        rate, step = learning_rate(p, it, step)
        got.append((rate, step))
    want_steps = [0, 0, 1, 2, 3, 3, 3, 3, 4, 4, 4, 4]
    assert [s for _, s in got] == want_steps
    assert [r for r, _ in got] == pytest.approx([0.5 ** k for k in want_steps])
    # a counter that is behind (e.g. a state saved by an older run) catches up one step per
    # call, never several at once -- Caffe's `if`, not a `while`
    step, steps = 0, []
    for it in range(20, 25):
        rate, step = learning_rate(p, it, step)
        steps.append(step)
        assert rate == pytest.approx(0.5 ** step)
    assert steps == [1, 2, 3, 4, 4]
    # a counter that is already past every stepvalue stays put
    assert learning_rate(p, 0, 4) == (pytest.approx(0.5 ** 4), 4)


def test_multistep_lenet_schedule():
    p = sp("lr_policy: 'multistep' base_lr: 0.01 gamma: 0.9 stepvalue: 5000 stepvalue: 7000 "
           "stepvalue: 8000 stepvalue: 9000 stepvalue: 9500")
    step = 0
    rates = {}
    for it in range(10000):
        rates[it], step = learning_rate(p, it, step)
    base = f32(0.01)
    g = f32(0.9)
    for it, k in [(0, 0), (4999, 0), (5000, 1), (6999, 1), (7000, 2), (8000, 3), (9000, 4),
                  (9499, 4), (9500, 5), (9999, 5)]:
        assert rates[it] == pytest.approx(base * g ** k, rel=1e-7), it
    assert step == 5


# Caffe's own log of LeNet (examples/mnist, lr_policy inv, gamma 1e-4, power 0.75), "%g" format
LENET_LOG = {100: "0.00992565", 200: "0.00985258", 300: "0.00978075", 400: "0.00971013",
             500: "0.00964069", 9600: "0.00603682", 9700: "0.00601382", 9800: "0.00599102",
             9900: "0.00596843", 10000: "0.00594604"}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lenet_inv_matches_caffe_log(dtype):
    p = sp("base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 "
           "power: 0.75 max_iter: 10000")
    assert learning_rate(p, 0, 0, dtype=dtype)[0] == pytest.approx(0.01, rel=1e-7)
    for it, text in LENET_LOG.items():
        rate, _ = learning_rate(p, it, 0, dtype=dtype)
        assert f"{rate:g}" == text
        assert rate == pytest.approx(0.01 * (1 + 1e-4 * it) ** -0.75, rel=1e-6)


def test_poly_reaches_zero_and_stays_finite():
    p = sp("lr_policy: 'poly' base_lr: 0.1 power: 0.5 max_iter: 100")
    assert learning_rate(p, 100, 0)[0] == 0.0
    assert learning_rate(p, 150, 0)[0] == 0.0         # past max_iter: no NaN, no complex


def test_extreme_exponents_do_not_raise():
    p = sp("lr_policy: 'sigmoid' base_lr: 0.1 gamma: -1 stepsize: 0")
    assert learning_rate(p, 100000, 0)[0] == 0.0       # exp overflows to inf -> rate 0
    assert learning_rate(p, 0, 0)[0] == pytest.approx(0.05, rel=1e-7)
    p = sp("lr_policy: 'exp' base_lr: 0.1 gamma: 1.5")
    assert learning_rate(p, 100000, 0)[0] == math.inf
    p = sp("lr_policy: 'exp' base_lr: 0.1 gamma: 0.5")
    assert learning_rate(p, 100000, 0)[0] == 0.0


@pytest.mark.parametrize("text,field,words", [
    ("lr_policy: 'cosine' base_lr: 0.1", "lr_policy", "fixed, step, exp, inv, multistep"),
    ("base_lr: 0.1", "lr_policy", "not set"),
    ("lr_policy: 'Step' base_lr: 0.1 stepsize: 10 gamma: 0.1", "lr_policy", "did you mean 'step'"),
    ("lr_policy: 'step' base_lr: 0.1 gamma: 0.1", "stepsize", "stepsize"),
    ("lr_policy: 'step' base_lr: 0.1 gamma: 0.1 stepsize: 0", "stepsize", "> 0"),
    ("lr_policy: 'step' base_lr: 0.1 gamma: 0.1 stepsize: -5", "stepsize", "> 0"),
    ("lr_policy: 'step' base_lr: 0.1 stepsize: 10", "gamma", "gamma"),
    ("lr_policy: 'step' base_lr: 0.1 stepsize: 10 gamma: -0.1", "gamma", ">= 0"),
    ("lr_policy: 'exp' base_lr: 0.1", "gamma", "gamma"),
    ("lr_policy: 'inv' base_lr: 0.1 gamma: 0.001", "power", "power"),
    ("lr_policy: 'inv' base_lr: 0.1 power: 0.75", "gamma", "gamma"),
    ("lr_policy: 'multistep' base_lr: 0.1 gamma: 0.1", "stepvalue", "stepvalue"),
    ("lr_policy: 'multistep' base_lr: 0.1 gamma: 0.1 stepvalue: 10 stepvalue: 5",
     "stepvalue", "increase"),
    ("lr_policy: 'multistep' base_lr: 0.1 gamma: 0.1 stepvalue: 10 stepvalue: 10",
     "stepvalue", "increase"),
    ("lr_policy: 'poly' base_lr: 0.1 power: 1", "max_iter", "max_iter"),
    ("lr_policy: 'poly' base_lr: 0.1 power: 1 max_iter: 0", "max_iter", "> 0"),
    ("lr_policy: 'poly' base_lr: 0.1 max_iter: 10", "power", "power"),
    ("lr_policy: 'sigmoid' base_lr: 0.1 gamma: -0.1", "stepsize", "stepsize"),
])
def test_lr_policy_errors(text, field, words):
    p = sp(text)
    with pytest.raises(ConfigError) as ei:
        learning_rate(p, 10, 0)
    assert ei.value.field == field
    assert words in str(ei.value)
    with pytest.raises(ConfigError) as ei:          # validate_solver finds it up front
        validate_solver(p)
    assert ei.value.field == field


# -- update rules: an independent float64 reference (CAFFE_REFERENCE §3.2) -------------------
MU, MU2, DELTA, RHO = 0.9, 0.99, 1e-3, 0.8


def rule_param(kind):
    mom = 0 if kind in ("AdaGrad", "RMSProp") else MU
    p = sp(f"type: '{kind}' momentum: {mom} momentum2: {MU2} delta: {DELTA} rms_decay: {RHO} "
           "base_lr: 0.1 lr_policy: 'fixed'")
    validate_solver(p)
    return p


SHAPES = [(3, 4), (5,), (2, 1, 3)]
LRS = [0.1, 0.1, 0.03, 0.5, 0.02, 0.2, 0.07]     # a changing rate exposes lr-inside-velocity


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_update_rule_matches_reference(kind):
    p = rule_param(kind)
    rng = np.random.default_rng(sum(map(ord, kind)))
    rule = get_update_rule(kind)(p)
    params = [rng.standard_normal(s) for s in SHAPES]
    history = rule.init_history(params)
    n = len(params)
    assert len(history) == rule.history_count * n
    start = 4                                         # iter need not start at 0 (resume)
    iters = list(range(start, start + len(LRS)))
    grads = [[rng.standard_normal(s) * (1 + 3 * k) for k in range(len(LRS))] for s in SHAPES]
    for gs in grads:
        gs[2].flat[0] = 0.0                          # a zero gradient must not give NaN
    refs = [update_rule_ref(kind, grads[i], LRS, iters, p) for i in range(n)]
    w0 = [x.copy() for x in params]
    for k, (lr, it) in enumerate(zip(LRS, iters)):
        for i in range(n):
            diff = grads[i][k].copy()
            rule.compute_update(i, diff, params[i], lr, history, it)
            np.testing.assert_allclose(diff, refs[i][k][0], rtol=1e-10, atol=1e-15)
            params[i] -= diff
            # history layout: param i's first blob at i, its second (if any) at n + i
            np.testing.assert_allclose(history[i], refs[i][k][1], rtol=1e-10, atol=1e-15)
            if rule.history_count == 2:
                np.testing.assert_allclose(history[n + i], refs[i][k][2], rtol=1e-10,
                                           atol=1e-15)
    for i in range(n):
        want = w0[i] - sum(r[0] for r in refs[i])
        np.testing.assert_allclose(params[i], want, rtol=1e-10, atol=1e-14)
        assert np.all(np.isfinite(params[i]))


def test_rate_outside_the_velocity():
    """v = μv + lr·g, not lr·(μv + g): with a rate that changes the two differ."""
    p = rule_param("SGD")
    rule = get_update_rule("SGD")(p)
    h = rule.init_history([np.zeros(1)])
    mu = float(p.momentum)
    d1 = np.array([1.0])
    rule.compute_update(0, d1, np.zeros(1), 1.0, h, 0)
    d2 = np.array([1.0])
    rule.compute_update(0, d2, np.zeros(1), 0.5, h, 1)
    assert d2[0] == pytest.approx(mu * 1.0 + 0.5)       # 1.4, where lr inside would give 0.95


def test_adam_uses_iter_for_bias_correction():
    p = rule_param("Adam")
    g = np.array([0.5, -2.0])
    out = []
    for it in (0, 9):
        rule = get_update_rule("Adam")(p)
        h = rule.init_history([g])
        d = g.copy()
        rule.compute_update(0, d, g, 0.01, h, it)
        out.append(d)
    b1, b2 = float(p.momentum), float(p.momentum2)
    for d, t in zip(out, (1, 10)):
        m, v = (1 - b1) * g, (1 - b2) * g ** 2
        want = 0.01 * math.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + float(p.delta))
        np.testing.assert_allclose(d, want, rtol=1e-12)
    assert not np.allclose(out[0], out[1])


@pytest.mark.parametrize("kind", ["AdaDelta", "Adam"])
def test_two_history_blobs_per_param_first_moments_first(kind):
    p = rule_param(kind)
    rule = RULES[kind](p)
    assert rule.history_count == 2
    params = [np.ones((2, 3)), np.ones(4), np.ones((1, 1, 5))]
    hist = rule.init_history(params)
    assert [h.shape for h in hist] == [(2, 3), (4,), (1, 1, 5)] * 2
    assert all(not h.any() for h in hist)
    # an update of param 1 touches exactly history[1] (first moment) and history[3 + 1]
    rule.compute_update(1, np.full(4, 2.0), params[1], 0.1, hist, 0)
    touched = [k for k, h in enumerate(hist) if h.any()]
    assert touched == [1, 4]
    mu = float(p.momentum)
    if kind == "Adam":
        np.testing.assert_allclose(hist[1], (1 - mu) * 2.0)                       # m
        np.testing.assert_allclose(hist[4], (1 - float(p.momentum2)) * 4.0)       # v
    else:
        np.testing.assert_allclose(hist[1], (1 - mu) * 4.0)                       # E[g²]
        assert np.all(hist[4] > 0) and np.all(hist[4] < hist[1])                  # E[Δx²]


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp"])
def test_one_history_blob_per_param(kind):
    rule = RULES[kind](rule_param(kind))
    assert rule.history_count == 1
    params = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]
    hist = rule.init_history(params)
    assert [(h.shape, h.dtype) for h in hist] == [((2, 3), np.float32), ((4,), np.float32)]


def test_init_history_accepts_blob_like_objects():
    class B:
        shape, dtype = (3, 2), np.dtype(np.float32)
    hist = RULES["Adam"](rule_param("Adam")).init_history([B(), B()])
    assert len(hist) == 4 and all(h.shape == (3, 2) and h.dtype == np.float32 for h in hist)


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_float32_params_update_in_float32(kind):
    p = rule_param(kind)
    rng = np.random.default_rng(5)
    w = rng.standard_normal(50).astype(np.float32)
    rule = RULES[kind](p)
    hist = rule.init_history([w])
    grads = [rng.standard_normal(50) for _ in range(4)]
    ref = update_rule_ref(kind, grads, LRS[:4], range(4), p)
    for k, g in enumerate(grads):
        diff = g.astype(np.float32)
        diff_id = id(diff)
        rule.compute_update(0, diff, w, LRS[k], hist, k)
        assert id(diff) == diff_id and diff.dtype == np.float32
        assert all(h.dtype == np.float32 for h in hist)
        np.testing.assert_allclose(diff, ref[k][0], rtol=2e-4, atol=1e-6)


def test_sgd_float32_follows_caffe_operation_order():
    """caffe_cpu_axpby(N, lr, g, μ, v) = scal(μ, v); axpy(lr, g, v) -- all in float."""
    p = rule_param("SGD")
    rng = np.random.default_rng(1)
    rule = RULES["SGD"](p)
    w = rng.standard_normal(1000).astype(np.float32)
    hist = rule.init_history([w])
    v = np.zeros(1000, np.float32)
    mu = np.float32(p.momentum)
    for k, lr in enumerate([0.1, 0.0123, 0.07]):
        g = rng.standard_normal(1000).astype(np.float32)
        v = v * mu
        v = v + np.float32(lr) * g
        d = g.copy()
        rule.compute_update(0, d, w, lr, hist, k)
        np.testing.assert_array_equal(d, v)


def test_registry():
    assert list(RULES) == ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]
    assert {k: RULES[k].history_count for k in RULES} == {
        "SGD": 1, "Nesterov": 1, "AdaGrad": 1, "RMSProp": 1, "AdaDelta": 2, "Adam": 2}
    with pytest.raises(ConfigError) as ei:
        get_update_rule("Adagrad")
    assert ei.value.field == "type" and "AdaGrad" in str(ei.value)


# -- regularisation, normalisation, clipping ----------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_regularize_l2_l1_with_decay_mult(dtype):
    w = np.array([1.5, -2.0, 0.0, 0.25], dtype)
    g = np.array([0.1, 0.2, -0.3, 0.0], dtype)
    d = g.copy()
    regularize(d, w, 0.01, 2.0, "L2")
    np.testing.assert_allclose(d, g + 0.02 * w, rtol=1e-6)
    assert d.dtype == dtype
    d = g.copy()
    regularize(d, w, 0.01, 3.0, "L1")
    np.testing.assert_allclose(d, g + 0.03 * np.array([1, -1, 0, 1]), rtol=1e-6)
    d = g.copy()
    regularize(d, w, 0.01, 0.0, "L2")                  # decay_mult 0: no decay (biases)
    np.testing.assert_array_equal(d, g)
    d = g.copy()
    regularize(d, w, 0.0, 1.0, "L1")
    np.testing.assert_array_equal(d, g)
    np.testing.assert_array_equal(w, np.array([1.5, -2.0, 0.0, 0.25], dtype))   # data untouched


def test_regularize_unknown_type():
    for wd in (0.01, 0.0):
        with pytest.raises(ConfigError) as ei:
            regularize(np.zeros(2), np.ones(2), wd, 1.0, "L3")
        assert ei.value.field == "regularization_type"


def test_clip_gradients_global_norm():
    a = np.array([[3.0, 0.0], [0.0, 0.0]])
    b = np.array([4.0, 0.0, 0.0], np.float32)
    c = np.array([12.0])
    norm = 13.0                                         # sqrt(9 + 16 + 144), over all params
    scale = clip_gradients([a, b, c], 6.5)
    assert scale == pytest.approx(0.5)
    np.testing.assert_allclose(a, [[1.5, 0], [0, 0]])
    np.testing.assert_allclose(b, [2.0, 0, 0])
    np.testing.assert_allclose(c, [6.0])
    assert b.dtype == np.float32
    # now norm 6.5 == threshold: nothing happens
    assert clip_gradients([a, b, c], 6.5) == 1.0
    np.testing.assert_allclose(c, [6.0])
    # per-blob clipping would have left a alone; the global norm scales it
    x, y = np.array([0.6]), np.array([0.8, 0.0])
    clip_gradients([x, y], 0.5)
    np.testing.assert_allclose(np.concatenate([x, y]), [0.3, 0.4, 0.0])
    assert norm == 13.0


def test_clip_gradients_disabled_or_under_threshold():
    a = np.array([300.0, -400.0])
    assert clip_gradients([a], -1) == 1.0
    np.testing.assert_array_equal(a, [300.0, -400.0])
    assert clip_gradients([a], 1000.0) == 1.0
    np.testing.assert_array_equal(a, [300.0, -400.0])
    assert clip_gradients([a], 0.0) == 0.0               # threshold 0 zeroes the gradient
    np.testing.assert_array_equal(a, [0.0, 0.0])


def test_normalize():
    d = np.array([4.0, -8.0], np.float32)
    normalize(d, 1)
    np.testing.assert_array_equal(d, [4.0, -8.0])
    normalize(d, 4)
    np.testing.assert_array_equal(d, [1.0, -2.0])
    assert d.dtype == np.float32
    with pytest.raises(ConfigError) as ei:
        normalize(d, 0)
    assert ei.value.field == "iter_size"


# -- validation ---------------------------------------------------------------------------
GOOD = [
    "type: 'SGD' momentum: 0.9 base_lr: 0.01 lr_policy: 'inv' gamma: 0.0001 power: 0.75",
    "type: 'Nesterov' momentum: 0.95 lr_policy: 'step' gamma: 0.1 stepsize: 10000",
    "type: 'AdaGrad' lr_policy: 'fixed' base_lr: 0.01",
    "type: 'RMSProp' momentum: 0.0 rms_decay: 0.98 lr_policy: 'fixed'",
    "type: 'AdaDelta' momentum: 0.95 delta: 1e-6 base_lr: 1.0 lr_policy: 'fixed'",
    "type: 'Adam' momentum: 0.9 momentum2: 0.999 lr_policy: 'fixed' base_lr: 0.001",
    "lr_policy: 'multistep' gamma: 0.9 stepvalue: 5000 stepvalue: 7000 iter_size: 16",
    "lr_policy: 'poly' power: 0.5 max_iter: 2400000 regularization_type: 'L1'",
    "lr_policy: 'sigmoid' gamma: -0.001 stepsize: 5000 clip_gradients: 10",
]


@pytest.mark.parametrize("text", GOOD)
def test_valid_solvers_pass(text):
    validate_solver(sp(text))


@pytest.mark.parametrize("text,field,words", [
    ("type: 'AdaGrad' momentum: 0.9", "momentum", "AdaGrad"),
    ("type: 'RMSProp' momentum: 0.5", "momentum", "RMSProp"),
    ("type: 'RMSProp' rms_decay: 1.0", "rms_decay", "[0, 1)"),
    ("type: 'RMSProp' rms_decay: -0.1", "rms_decay", "[0, 1)"),
    ("type: 'Adamm'", "type", "SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam"),
    ("type: 'adam' momentum: 0.9", "type", "did you mean 'Adam'"),
    ("iter_size: 0", "iter_size", "at least 1"),
    ("regularization_type: 'L3'", "regularization_type", "L3"),
    ("regularization_type: 'l2'", "regularization_type", "L2"),
    ("type: 'Adam'", "momentum", "beta1"),
    ("type: 'Adam' momentum: 1.0", "momentum", "beta1"),
    ("type: 'Adam' momentum: 0.9 momentum2: 1.0", "momentum2", "beta2"),
    ("type: 'Adam' momentum: 0.9 delta: 0", "delta", "delta"),
    ("type: 'AdaDelta'", "momentum", "rho"),
    ("type: 'AdaDelta' momentum: 1.2", "momentum", "rho"),
    ("type: 'AdaDelta' momentum: 0.95 delta: 0", "delta", "never move"),
    ("type: 'AdaGrad' delta: -1e-8", "delta", "NaN"),
    ("max_iter: -1", "max_iter", "max_iter"),
])
def test_invalid_solver_settings(text, field, words):
    p = sp("lr_policy: 'fixed' base_lr: 0.1 " + text)
    with pytest.raises(ConfigError) as ei:
        validate_solver(p)
    assert ei.value.field == field
    assert words in str(ei.value)


def test_validate_solver_locates_the_field():
    p = sp("type: 'AdaGrad' momentum: 0.9 lr_policy: 'fixed'")
    with pytest.raises(ConfigError) as ei:
        validate_solver(p, file="s.prototxt", where=lambda path: {("momentum",): (3, 1)}[path])
    assert (ei.value.file, ei.value.line, ei.value.col) == ("s.prototxt", 3, 1)
    assert str(ei.value).startswith("s.prototxt:3:1: ")


# --- LR policies and update rules on other settings (formerly in test_solvers.py)

@pytest.mark.parametrize("text,fn", [
    ("lr_policy: 'fixed' base_lr: 0.1", lambda it: 0.1),
    ("lr_policy: 'step' base_lr: 0.1 gamma: 0.5 stepsize: 3", lambda it: 0.1 * 0.5 ** (it // 3)),
    ("lr_policy: 'exp' base_lr: 0.1 gamma: 0.9", lambda it: 0.1 * 0.9 ** it),
    ("lr_policy: 'inv' base_lr: 0.01 gamma: 0.0001 power: 0.75",
     lambda it: 0.01 * (1 + 0.0001 * it) ** -0.75),
    ("lr_policy: 'poly' base_lr: 0.1 power: 2 max_iter: 10", lambda it: 0.1 * (1 - it / 10) ** 2),
    ("lr_policy: 'sigmoid' base_lr: 0.1 gamma: -0.5 stepsize: 4",
     lambda it: 0.1 / (1 + math.exp(0.5 * (it - 4)))),
])
def test_lr_policies(text, fn):
    p = sp(text)
    for it in range(10):
        r, _ = learning_rate(p, it, 0)
        assert r == pytest.approx(fn(it), rel=1e-6)


def test_multistep_advances_one_step_per_iteration():
    p = sp("lr_policy: 'multistep' base_lr: 1 gamma: 0.1 stepvalue: 2 stepvalue: 3 stepvalue: 8")
    step, rates = 0, []
    for it in range(10):
        r, step = learning_rate(p, it, step)
        rates.append(r)
    assert rates == pytest.approx([1, 1, .1, .01, .01, .01, .01, .01, .001, .001])
    # resuming late with current_step 0 catches up one step per iteration, like Caffe
    r, step = learning_rate(p, 9, 0)
    assert step == 1 and r == pytest.approx(0.1)


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
def test_update_rules(kind):
    mom = {"AdaGrad": 0, "RMSProp": 0}.get(kind, 0.9)
    p = sp(f"type: '{kind}' momentum: {mom} momentum2: 0.999 delta: 1e-8 rms_decay: 0.95")
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(5) for _ in range(6)]
    lrs = [0.1, 0.1, 0.05, 0.05, 0.02, 0.3]      # changing lr exposes lr-inside-velocity
    rule = get_update_rule(kind)(p)

    class B:
        shape, dtype = (5,), np.float64
    hist = rule.init_history([B()])
    assert len(hist) == rule.history_count
    w = np.zeros(5)
    for t, (g, lr) in enumerate(zip(gs, lrs)):
        diff = g.copy()
        rule.compute_update(0, diff, w, lr, hist, t)
        w -= diff
    # the schema stores momentum/delta as float32: reference() uses the values the solver sees
    ref = -sum(d for d, _, _ in update_rule_ref(kind, gs, lrs, range(len(lrs)), p))
    np.testing.assert_allclose(w, ref, rtol=1e-9)


def test_regularization_and_clipping():
    w = np.array([1.0, -2.0, 0.0])
    d = np.zeros(3)
    regularize(d, w, 0.1, 2.0, "L2")
    np.testing.assert_allclose(d, [0.2, -0.4, 0])
    d = np.zeros(3)
    regularize(d, w, 0.1, 1.0, "L1")
    np.testing.assert_allclose(d, [0.1, -0.1, 0])
    a, b = np.array([3.0, 0.0]), np.array([4.0])
    clip_gradients([a, b], 1.0)        # global norm 5 -> 1
    np.testing.assert_allclose(np.concatenate([a, b]), [0.6, 0, 0.8])
    a = np.array([0.3])
    clip_gradients([a], 1.0)
    assert a[0] == 0.3


@pytest.mark.parametrize("text,field", [
    ("type: 'AdaGrad' momentum: 0.9", "momentum"),
    ("type: 'RMSProp' rms_decay: 1.5", "rms_decay"),
    ("type: 'Adamm'", "type"),
    ("lr_policy: 'stepp'", "lr_policy"),
    ("lr_policy: 'step'", "stepsize"),
    ("iter_size: 0", "iter_size"),
    ("regularization_type: 'L3'", "regularization_type"),
])
def test_invalid_solver_settings_name_the_field(text, field):
    with pytest.raises(ConfigError) as ei:
        validate_solver(sp("lr_policy: 'fixed' " + text if "lr_policy" not in text else text))
    assert ei.value.field == field


# --- the fused update against the separate passes (formerly test_update_fused.py)

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
