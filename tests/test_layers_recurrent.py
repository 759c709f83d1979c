"""Recurrent layers (RNN, LSTM, LSTMUnit): forward against float64 references written from
Caffe's unrolled nets, gradient checks over several sequence lengths with cont resets in the
middle (static input and exposed hidden state included), Caffe's parameter order and shapes,
state carried across batches, errors, and an LSTM trained with the Solver on a
varying-length sequence task."""
import numpy as np
import pytest

from layer_refs import ref_lstm, ref_rnn, sig
from netdef.blob import Blob
from netdef.errors import ConfigError, ShapeError
from netdef.testing import GradientChecker, make_blobs, make_layer, run_forward

GAUSS = "{ type: 'gaussian' std: 0.5 }"


def rparams(h, *, expose=False):
    return (f"recurrent_param {{ num_output: {h} weight_filler {GAUSS} bias_filler {GAUSS}"
            f"{' expose_hidden: true' if expose else ''} }}")


def cont_for(T, N, seed=0):
    """cont with 0 at t=0 and random resets in the middle."""
    rng = np.random.default_rng(seed)
    c = (rng.uniform(size=(T, N)) > 0.3).astype(np.float64)
    c[0] = 0.0
    if T > 2:
        c[T // 2, 0] = 0.0
    return c


# --------------------------------------------------------------------------------------------
# LSTM

@pytest.mark.parametrize("T,N,xshape,H,static,expose", [
    (1, 2, (3,), 2, False, False),
    (3, 2, (3,), 3, False, False),
    (5, 3, (2, 2), 2, False, False),
    (4, 2, (3,), 2, True, False),
    (4, 2, (2,), 2, False, True),
    (3, 2, (2,), 2, True, True),
])
def test_lstm_forward_and_gradients(T, N, xshape, H, static, expose):
    rng = np.random.default_rng(T * 10 + N)
    x = rng.standard_normal((T, N) + xshape)
    cont = cont_for(T, N, seed=T)
    arrays = [x, cont]
    if static:
        arrays.append(rng.standard_normal((N, 3)))
    if expose:
        arrays += [rng.standard_normal((1, N, H)), rng.standard_normal((1, N, H))]
    bottom = make_blobs(arrays)
    layer = make_layer("LSTM", rparams(H, expose=expose))
    top = run_forward(layer, bottom, ntop=3 if expose else 1)
    D = int(np.prod(xshape))
    shapes = [(4 * H, D), (4 * H,)] + ([(4 * H, 3)] if static else []) + [(4 * H, H)]
    assert [p.shape for p in layer.blobs] == shapes           # Caffe's W_xc, b_c, [W_xc_static], W_hc
    W, b = layer.blobs[0].data, layer.blobs[1].data
    Whc = layer.blobs[-1].data
    Ws = layer.blobs[2].data if static else None
    xs = arrays[2] if static else None
    h0 = arrays[-2] if expose else None
    c0 = arrays[-1] if expose else None
    hs, hT, cT = ref_lstm(x, cont, W, b, Whc, Ws, xs, h0, c0)
    assert top[0].shape == (T, N, H)
    np.testing.assert_allclose(top[0].data, hs, rtol=1e-10, atol=1e-12)
    if expose:
        np.testing.assert_allclose(top[1].data, hT, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(top[2].data, cT, rtol=1e-10, atol=1e-12)
    check = [i for i in range(len(bottom)) if i != 1]
    GradientChecker().check(layer, bottom, top, check_bottom=check)


def test_lstm_cont_resets_state():
    """A stream restarted by cont=0 gives the same outputs as the same inputs fed alone."""
    rng = np.random.default_rng(5)
    layer = make_layer("LSTM", rparams(3))
    x = rng.standard_normal((6, 1, 2))
    cont = np.array([[0], [1], [1], [0], [1], [1]], float)
    top = run_forward(layer, make_blobs([x, cont]))
    alone = make_layer("LSTM", rparams(3))
    tail = run_forward(alone, make_blobs([x[3:], np.array([[0], [1], [1]], float)]))
    np.testing.assert_allclose(top[0].data[3:], tail[0].data, rtol=1e-12)


def test_lstm_state_carries_across_batches():
    """Without expose_hidden the final state of one forward is the next one's initial state
    (cont=1 at t=0 continues the stream), like Caffe; the two halves equal one long pass."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 2, 3))
    cont = np.ones((6, 2))
    cont[0] = 0
    full = run_forward(make_layer("LSTM", rparams(2)), make_blobs([x, cont]))[0].data.copy()
    layer = make_layer("LSTM", rparams(2))
    first = run_forward(layer, make_blobs([x[:3], cont[:3]]))
    np.testing.assert_allclose(first[0].data, full[:3], rtol=1e-12)
    b2 = make_blobs([x[3:], cont[3:]])
    layer.reshape(b2, first)
    layer.forward(b2, first)
    np.testing.assert_allclose(first[0].data, full[3:], rtol=1e-12)


def test_lstm_float32_and_varying_length():
    rng = np.random.default_rng(7)
    layer = make_layer("LSTM", rparams(4), dtype=np.float32)
    for T in (5, 2, 7):
        x = rng.standard_normal((T, 3, 2))
        cont = cont_for(T, 3, seed=T)
        bottom = make_blobs([x, cont], dtype=np.float32)
        top = [Blob((), np.float32)]
        if not layer.blobs:
            layer.setup(bottom, top)
        else:
            layer.reshape(bottom, top)
        layer.forward(bottom, top)
        ref = ref_lstm(x, cont, *(layer.blobs[i].data.astype(np.float64) for i in range(3)))[0]
        assert top[0].data.dtype == np.float32
        np.testing.assert_allclose(top[0].data, ref, rtol=1e-4, atol=1e-5)


def test_lstm_param_accumulates_and_no_cont_gradient():
    layer = make_layer("LSTM", rparams(2))
    bottom = make_blobs([np.random.default_rng(1).standard_normal((3, 2, 2)), cont_for(3, 2)])
    top = run_forward(layer, bottom)
    top[0].diff = np.random.default_rng(2).standard_normal(top[0].shape)
    for p in layer.blobs:
        p.zero_diff()
    layer.backward(top, [True, False], bottom)
    once = [p.diff.copy() for p in layer.blobs]
    layer.backward(top, [True, False], bottom)
    for p, g in zip(layer.blobs, once):
        np.testing.assert_allclose(p.diff, 2 * g)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


def test_recurrent_errors():
    x, cont = np.zeros((3, 2, 4)), np.zeros((3, 2))
    with pytest.raises(ConfigError) as e:
        run_forward(make_layer("LSTM", "recurrent_param { }"), make_blobs([x, cont]))
    assert e.value.field == "recurrent_param.num_output"
    with pytest.raises(ShapeError, match="cont"):
        run_forward(make_layer("RNN", rparams(2)), make_blobs([x, np.zeros((3, 3))]))
    with pytest.raises(ShapeError, match="at least 2 axes"):
        run_forward(make_layer("RNN", rparams(2)), make_blobs([np.zeros(3), np.zeros((3, 1))]))
    with pytest.raises(ShapeError, match="x_static"):
        run_forward(make_layer("RNN", rparams(2)), make_blobs([x, cont, np.zeros((3, 2))]))
    with pytest.raises(ConfigError, match="produces 3 tops"):
        run_forward(make_layer("LSTM", rparams(2, expose=True)),
                    make_blobs([x, cont, np.zeros((1, 2, 2)), np.zeros((1, 2, 2))]))
    with pytest.raises(ShapeError, match="h0"):
        run_forward(make_layer("LSTM", rparams(2, expose=True)),
                    make_blobs([x, cont, np.zeros((1, 2, 3)), np.zeros((1, 2, 2))]), ntop=3)
    layer = make_layer("LSTM", rparams(2))
    top = run_forward(layer, make_blobs([x, cont]))
    with pytest.raises(ShapeError, match="inputs per step"):
        layer.reshape(make_blobs([np.zeros((3, 2, 5)), cont]), top)


# --------------------------------------------------------------------------------------------
# RNN

@pytest.mark.parametrize("T,N,H,static,expose", [
    (1, 2, 2, False, False),
    (4, 2, 3, False, False),
    (6, 1, 2, False, False),
    (3, 2, 2, True, False),
    (4, 2, 2, False, True),
    (3, 2, 2, True, True),
])
def test_rnn_forward_and_gradients(T, N, H, static, expose):
    rng = np.random.default_rng(T * 7 + N)
    x = rng.standard_normal((T, N, 3))
    cont = cont_for(T, N, seed=T + 1)
    arrays = [x, cont]
    if static:
        arrays.append(rng.standard_normal((N, 2, 2)))
    if expose:
        arrays.append(rng.standard_normal((1, N, H)))
    bottom = make_blobs(arrays)
    layer = make_layer("RNN", rparams(H, expose=expose))
    top = run_forward(layer, bottom, ntop=2 if expose else 1)
    shapes = [(H, 3), (H,)] + ([(H, 4)] if static else []) + [(H, H), (H, H), (H,)]
    assert [p.shape for p in layer.blobs] == shapes     # W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o
    bl = [p.data for p in layer.blobs]
    Ws = bl.pop(2) if static else None
    out, hT = ref_rnn(x, cont, *bl, Ws=Ws, xs=arrays[2] if static else None,
                      h0=arrays[-1] if expose else None)
    np.testing.assert_allclose(top[0].data, out, rtol=1e-10, atol=1e-12)
    if expose:
        np.testing.assert_allclose(top[1].data, hT, rtol=1e-10, atol=1e-12)
    check = [i for i in range(len(bottom)) if i != 1]
    GradientChecker().check(layer, bottom, top, check_bottom=check)


# --------------------------------------------------------------------------------------------
# LSTMUnit

@pytest.mark.parametrize("N,H,cont", [(3, 2, [1, 0, 1]), (2, 4, [1, 1]), (1, 1, [0])])
def test_lstm_unit(N, H, cont):
    rng = np.random.default_rng(N + H)
    c_prev = rng.standard_normal((1, N, H))
    x = rng.standard_normal((1, N, 4 * H))
    cont = np.array([cont], dtype=float)
    bottom = make_blobs([c_prev, x, cont])
    layer = make_layer("LSTMUnit")
    top = run_forward(layer, bottom, ntop=2)
    for n in range(N):
        g = x[0, n]
        i, f, o, gg = sig(g[:H]), sig(g[H:2 * H]), sig(g[2 * H:3 * H]), np.tanh(g[3 * H:])
        c = cont[0, n] * f * c_prev[0, n] + i * gg
        np.testing.assert_allclose(top[0].data[0, n], c, rtol=1e-12)
        np.testing.assert_allclose(top[1].data[0, n], o * np.tanh(c), rtol=1e-12)
    GradientChecker().check(layer, bottom, top, check_bottom=[0, 1])


def test_lstm_unit_shape_errors():
    with pytest.raises(ShapeError, match="4 gates"):
        run_forward(make_layer("LSTMUnit"),
                    make_blobs([np.zeros((1, 2, 3)), np.zeros((1, 2, 8)), np.zeros((1, 2))]), 2)
    with pytest.raises(ShapeError, match="must agree"):
        run_forward(make_layer("LSTMUnit"),
                    make_blobs([np.zeros((1, 2, 2)), np.zeros((1, 3, 8)), np.zeros((1, 2))]), 2)


def test_lstm_equals_unrolled_lstm_units():
    """The LSTM layer equals Caffe's unrolled net: W_xc x + b_c + W_hc (cont h) into LSTMUnit."""
    rng = np.random.default_rng(11)
    T, N, H = 4, 2, 3
    x = rng.standard_normal((T, N, 2))
    cont = cont_for(T, N, seed=2)
    layer = make_layer("LSTM", rparams(H))
    top = run_forward(layer, make_blobs([x, cont]))
    W, b, Whc = (p.data for p in layer.blobs)
    unit = make_layer("LSTMUnit")
    c = np.zeros((1, N, H))
    h = np.zeros((1, N, H))
    for t in range(T):
        gates = x[t] @ W.T + b + (cont[t][:, None] * h[0]) @ Whc.T
        out = run_forward(unit, make_blobs([c, gates[None], cont[t][None]]), ntop=2)
        c, h = out[0].data.copy(), out[1].data.copy()
        np.testing.assert_allclose(top[0].data[t], h[0], rtol=1e-12)


# --------------------------------------------------------------------------------------------
# training: echo the first element of each sequence (sequences of 1..6 steps, separated by cont=0)

T_TRAIN, N_TRAIN = 12, 16
NET = f"""
layer {{ name: "data" type: "Input" top: "x" top: "cont" top: "y"
  input_param {{ shape {{ dim: {T_TRAIN} dim: {N_TRAIN} dim: 2 }}
                shape {{ dim: {T_TRAIN} dim: {N_TRAIN} }}
                shape {{ dim: {T_TRAIN} dim: {N_TRAIN} dim: 1 }} }} }}
layer {{ name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
  recurrent_param {{ num_output: 16 weight_filler {{ type: "uniform" min: -0.2 max: 0.2 }} }} }}
layer {{ name: "out" type: "InnerProduct" bottom: "h" top: "p"
  inner_product_param {{ num_output: 1 axis: 2 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "y" top: "loss" }}
"""


def echo_batch(rng, T=T_TRAIN, N=N_TRAIN):
    """x[..., 0] values, x[..., 1] = 1 at a sequence's first step; y = the sequence's first
    value at every step; cont = 0 where a sequence starts."""
    x = np.zeros((T, N, 2))
    cont = np.ones((T, N))
    y = np.zeros((T, N, 1))
    for n in range(N):
        t = 0
        while t < T:
            length = int(rng.integers(1, 7))
            v = rng.uniform(-0.5, 0.5, size=length)
            cont[t, n] = 0
            for k in range(min(length, T - t)):
                x[t + k, n] = (v[k], 1.0 if k == 0 else 0.0)
                y[t + k, n, 0] = v[0]
            t += length
    return x, cont, y


def test_lstm_learns_echo_of_varying_length_sequences():
    from netdef.config import parse_text
    from netdef.config.loader import Definition
    from netdef.proto import pb
    from netdef.solvers.solver import Solver

    msg = pb.SolverParameter()
    text = (f'net_param {{ {NET} }} type: "Adam" base_lr: 0.02 momentum: 0.9 '
            f'momentum2: 0.999 lr_policy: "fixed" display: 0 max_iter: 400 random_seed: 1 '
            f'snapshot_after_train: false')
    solver = Solver(Definition(msg, None, parse_text(text, msg), "prototxt"), dtype=np.float32)
    net = solver.net
    rng = np.random.default_rng(0)
    fb = net.forward_backward

    def feed():
        x, cont, y = echo_batch(rng)
        net.blobs["x"].data[...] = x
        net.blobs["cont"].data[...] = cont
        net.blobs["y"].data[...] = y
        return fb()

    net.forward_backward = feed
    solver.step(20)
    early = float(np.mean(list(solver.losses)))
    solver.step(380)
    final = float(np.mean(list(solver.losses)[-20:]))
    assert final < 2e-3 and final < early / 10, (early, final)
    # held-out batch: every step predicts its sequence's first value
    x, cont, y = echo_batch(np.random.default_rng(123))
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = cont
    net.blobs["y"].data[...] = y
    fb_loss = net.forward()
    assert fb_loss < 2e-3
    assert np.max(np.abs(net.blobs["p"].data - y)) < 0.15
