"""CUDA kernels and implementations of the recurrent layers (netdef.layers.recurrent):
LSTMUnit, LSTM, RNN (the unrolled time steps run the other families' implementations)."""
from __future__ import annotations

import math

from .launch import kernel
from .gemm import gemm
from .primitives import (
    add_bias,
    Impl,
    SUM,
    axpby,
    copy,
    cuda,
    fill,
    grid1d,
    impl,
    scratch,
    seg_reduce,
    segment_sum,
    state,
)


# -- LSTM unit ------------------------------------------------------------------------------------------
@kernel
def _lstm_unit_fwd(cprev, x, cont, n, H, acts, c, h):
    """x (n, 4H) gate inputs i, f, o, g; acts keeps the activations."""
    for e in range(cuda.grid(1), n * H, cuda.gridsize(1)):
        r = e // H
        j = e - r * H
        b = r * 4 * H
        vi = x[b + j]
        vf = x[b + H + j]
        vo = x[b + 2 * H + j]
        i = 0.5 * (math.tanh(0.5 * vi) + 1.0)
        f = 0.5 * (math.tanh(0.5 * vf) + 1.0)
        o = 0.5 * (math.tanh(0.5 * vo) + 1.0)
        g = math.tanh(x[b + 3 * H + j])
        acts[b + j] = i
        acts[b + H + j] = f
        acts[b + 2 * H + j] = o
        acts[b + 3 * H + j] = g
        cc = cont[r] * f * cprev[e] + i * g
        c[e] = cc
        h[e] = o * math.tanh(cc)


@kernel
def _lstm_unit_bwd(cprev, acts, cont, c, dc_top, dh_top, n, H, do_c, do_x, dcprev, dx):
    for e in range(cuda.grid(1), n * H, cuda.gridsize(1)):
        r = e // H
        j = e - r * H
        b = r * 4 * H
        i = acts[b + j]
        f = acts[b + H + j]
        o = acts[b + 2 * H + j]
        g = acts[b + 3 * H + j]
        ct = cont[r]
        tc = math.tanh(c[e])
        dh = dh_top[e]
        dc = dc_top[e] + dh * o * (1.0 - tc * tc)
        if do_x:
            dx[b + j] = dc * g * i * (1.0 - i)
            dx[b + H + j] = dc * cprev[e] * ct * f * (1.0 - f)
            dx[b + 2 * H + j] = dh * tc * o * (1.0 - o)
            dx[b + 3 * H + j] = dc * i * (1.0 - g * g)
        if do_c:
            dcprev[e] = dc * (ct * f)


def lstm_unit_forward(cprev, x, cont, n, H, acts, c, h):
    if n * H:
        _lstm_unit_fwd[grid1d(n * H)](cprev, x, cont, n, H, acts, c, h)


def lstm_unit_backward(cprev, acts, cont, c, dc_top, dh_top, n, H, do_c, do_x, dcprev, dx):
    if n * H:
        _lstm_unit_bwd[grid1d(n * H)](cprev, acts, cont, c, dc_top, dh_top, n, H, do_c, do_x,
                                      dcprev if do_c else c, dx if do_x else acts)


# -- RNN / LSTM helpers -----------------------------------------------------------------------------------
@kernel
def _row_scale(n, src, cont, H, dst):
    """dst[r, j] = cont[r] * src[r, j]"""
    for e in range(cuda.grid(1), n, cuda.gridsize(1)):
        dst[e] = cont[e // H] * src[e]


@kernel
def _tanh(n, x, y):
    for e in range(cuda.grid(1), n, cuda.gridsize(1)):
        y[e] = math.tanh(x[e])


@kernel
def _tanh_grad(n, a, b, has_b, y, dst):
    """dst = (a + b) * (1 - y^2)"""
    for e in range(cuda.grid(1), n, cuda.gridsize(1)):
        g = a[e]
        if has_b:
            g = g + b[e]
        yy = y[e]
        dst[e] = g * (1.0 - yy * yy)


def row_scale(src, cont, n, H, dst):
    if n:
        _row_scale[grid1d(n)](n, src, cont, H, dst)


def tanh(x, y, n):
    if n:
        _tanh[grid1d(n)](n, x, y)


def tanh_grad(a, b, y, dst, n):
    if n:
        _tanh_grad[grid1d(n)](n, a, a if b is None else b, b is not None, y, dst)


# -- recurrent ---------------------------------------------------------------------------------------------
@impl("LSTMUnit")
class LSTMUnit(Impl):
    def forward(self, layer, bottom, top):
        n, H = bottom[0].shape[1], bottom[0].shape[2]
        acts = state(layer, "acts", bottom[1].count, bottom[1].dtype)
        lstm_unit_forward(bottom[0].gpu_data(), bottom[1].gpu_data(), bottom[2].gpu_data(),
                            n, H, acts, top[0].mutable_gpu_data(), top[1].mutable_gpu_data())

    def backward(self, layer, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        n, H = bottom[0].shape[1], bottom[0].shape[2]
        lstm_unit_backward(bottom[0].gpu_data(), layer._cu_acts, bottom[2].gpu_data(),
                             top[0].gpu_data(), top[0].gpu_diff(), top[1].gpu_diff(), n, H,
                             bool(propagate_down[0]), bool(propagate_down[1]),
                             bottom[0].mutable_gpu_diff() if propagate_down[0] else None,
                             bottom[1].mutable_gpu_diff() if propagate_down[1] else None)


class _Recurrent(Impl):
    """RNN / LSTM on the device, step by step: the input transform as one GEMM over all steps,
    then per step one GEMM for the recurrent transform and elementwise kernels (the CPU layer's
    operation order).  Without expose_hidden the final state carries over to the next forward
    (a device array per layer, zeros at first), as on the CPU."""

    def _initial(self, layer, bottom, N):
        H = layer.H
        if layer.expose:
            off = 3 if layer.static_input else 2
            return [bottom[off + j].gpu_data() for j in range(layer.num_recur)]
        if layer.__dict__.get("_cu_carry_n") != N:
            for j in range(layer.num_recur):
                fill(state(layer, f"carry{j}", N * H, layer.dtype), 0.0, N * H)
            layer._cu_carry_n = N
        return [layer.__dict__[f"_cu_carry{j}"] for j in range(layer.num_recur)]

    def _input_transform(self, layer, bottom, G, w, b, ws):
        T, N = bottom[0].shape[:2]
        GH = layer.gates * layer.H
        gemm(0, 1, T * N, GH, layer.D, 1.0, bottom[0].gpu_data(), w.gpu_data(), 0.0, G)
        add_bias(G, T * N, GH, 1, b.gpu_data())
        if layer.static_input:
            xs = bottom[2].gpu_data()
            for t in range(T):
                gemm(0, 1, N, GH, layer.Ds, 1.0, xs, ws.gpu_data(), 1.0, G, offC=t * N * GH)

    def _input_backward(self, layer, bottom, propagate_down, dG, w, b, ws):
        T, N = bottom[0].shape[:2]
        GH = layer.gates * layer.H
        ppd = layer.param_propagate_down
        if ppd[0]:
            gemm(1, 0, GH, layer.D, T * N, 1.0, dG, bottom[0].gpu_data(), 1.0,
                 w.mutable_gpu_diff())
        if ppd[1]:
            segment_sum(dG, T * N, GH, 1, b.mutable_gpu_diff(), 1.0, 1.0)
        if propagate_down[0]:
            gemm(0, 0, T * N, layer.D, GH, 1.0, dG, w.gpu_data(), 0.0,
                 bottom[0].mutable_gpu_diff())
        if layer.static_input:
            Gs = scratch("rnn_gs", N * GH, dG.dtype)
            seg_reduce(dG, T, N * GH, 1, Gs, SUM)
            if ppd[2]:
                gemm(1, 0, GH, layer.Ds, N, 1.0, Gs, bottom[2].gpu_data(), 1.0,
                     ws.mutable_gpu_diff())
            if propagate_down[2]:
                gemm(0, 0, N, layer.Ds, GH, 1.0, Gs, ws.gpu_data(), 0.0,
                     bottom[2].mutable_gpu_diff())

    def _final_diffs(self, layer, top, N):
        out = []
        for j in range(layer.num_recur):
            d = state(layer, f"dnext{j}", N * layer.H, layer.dtype)
            if layer.expose:
                copy(d, top[1 + j].gpu_diff(), N * layer.H)
            else:
                fill(d, 0.0, N * layer.H)
            out.append(d)
        return out

    def _state_backward(self, layer, propagate_down, bottom, grads, N):
        if not layer.expose:
            return
        off = 3 if layer.static_input else 2
        for j, g in enumerate(grads):
            if propagate_down[off + j]:
                copy(bottom[off + j].mutable_gpu_diff(), g, N * layer.H)


@impl("LSTM")
class LSTM(_Recurrent):
    def forward(self, layer, bottom, top):
        T, N = bottom[0].shape[:2]
        H = layer.H
        NH = N * H
        w, b, ws, whc = layer._weights()
        G = state(layer, "G", T * N * 4 * H, layer.dtype)      # gate inputs, then activations
        self._input_transform(layer, bottom, G, w, b, ws)
        hs = state(layer, "hs", (T + 1) * NH, layer.dtype)
        cs = state(layer, "cs", (T + 1) * NH, layer.dtype)
        h0, c0 = self._initial(layer, bottom, N)
        copy(hs, h0, NH)
        copy(cs, c0, NH)
        cont = bottom[1].gpu_data()
        hc = scratch("rnn_hc", NH, layer.dtype)
        for t in range(T):
            ct = cont[t * N:(t + 1) * N]
            Gt = G[t * N * 4 * H:(t + 1) * N * 4 * H]
            row_scale(hs[t * NH:(t + 1) * NH], ct, NH, H, hc)
            gemm(0, 1, N, 4 * H, H, 1.0, hc, whc.gpu_data(), 1.0, Gt)
            lstm_unit_forward(cs[t * NH:(t + 1) * NH], Gt, ct, N, H, Gt,
                                cs[(t + 1) * NH:(t + 2) * NH], hs[(t + 1) * NH:(t + 2) * NH])
        copy(top[0].mutable_gpu_data(), hs, T * NH, soff=NH)
        if layer.expose:
            copy(top[1].mutable_gpu_data(), hs, NH, soff=T * NH)
            copy(top[2].mutable_gpu_data(), cs, NH, soff=T * NH)
        else:
            copy(layer._cu_carry0, hs, NH, soff=T * NH)
            copy(layer._cu_carry1, cs, NH, soff=T * NH)

    def backward(self, layer, top, propagate_down, bottom):
        T, N = bottom[0].shape[:2]
        H = layer.H
        NH, G4 = N * H, N * 4 * H
        w, b, ws, whc = layer._weights()
        A, hs, cs = layer._cu_G, layer._cu_hs, layer._cu_cs
        cont = bottom[1].gpu_data()
        dh_next, dc_next = self._final_diffs(layer, top, N)
        dtop = top[0].gpu_diff()
        dG = state(layer, "dG", T * G4, layer.dtype)
        hc = scratch("rnn_hc", NH, layer.dtype)
        do_whc = layer.param_propagate_down[-1]
        for t in range(T - 1, -1, -1):
            ct = cont[t * N:(t + 1) * N]
            dGt = dG[t * G4:(t + 1) * G4]
            axpby(1.0, dtop[t * NH:(t + 1) * NH], 1.0, dh_next, NH)     # dh = dtop + dh_next
            lstm_unit_backward(cs[t * NH:(t + 1) * NH], A[t * G4:(t + 1) * G4], ct,
                                 cs[(t + 1) * NH:(t + 2) * NH], dc_next, dh_next, N, H, True,
                                 True, dc_next, dGt)
            if do_whc:
                row_scale(hs[t * NH:(t + 1) * NH], ct, NH, H, hc)
                gemm(1, 0, 4 * H, H, N, 1.0, dGt, hc, 1.0, whc.mutable_gpu_diff())
            gemm(0, 0, N, H, 4 * H, 1.0, dGt, whc.gpu_data(), 0.0, dh_next)
            row_scale(dh_next, ct, NH, H, dh_next)
        self._input_backward(layer, bottom, propagate_down, dG, w, b, ws)
        self._state_backward(layer, propagate_down, bottom, [dh_next, dc_next], N)


@impl("RNN")
class RNN(_Recurrent):
    def forward(self, layer, bottom, top):
        T, N = bottom[0].shape[:2]
        H = layer.H
        NH = N * H
        w, b, ws, whh, who, bo, _ = layer._weights()
        A = state(layer, "A", T * NH, layer.dtype)
        self._input_transform(layer, bottom, A, w, b, ws)
        hs = state(layer, "hs", (T + 1) * NH, layer.dtype)
        (h0,) = self._initial(layer, bottom, N)
        copy(hs, h0, NH)
        cont = bottom[1].gpu_data()
        hc = scratch("rnn_hc", NH, layer.dtype)
        for t in range(T):
            ct = cont[t * N:(t + 1) * N]
            At = A[t * NH:(t + 1) * NH]
            row_scale(hs[t * NH:(t + 1) * NH], ct, NH, H, hc)
            gemm(0, 1, N, H, H, 1.0, hc, whh.gpu_data(), 1.0, At)
            tanh(At, hs[(t + 1) * NH:(t + 2) * NH], NH)
        o = top[0].mutable_gpu_data()
        gemm(0, 1, T * N, H, H, 1.0, hs, who.gpu_data(), 0.0, o, offA=NH)
        add_bias(o, T * N, H, 1, bo.gpu_data())
        tanh(o, o, T * NH)
        if layer.expose:
            copy(top[1].mutable_gpu_data(), hs, NH, soff=T * NH)
        else:
            copy(layer._cu_carry0, hs, NH, soff=T * NH)

    def backward(self, layer, top, propagate_down, bottom):
        T, N = bottom[0].shape[:2]
        H = layer.H
        NH = N * H
        w, b, ws, whh, who, bo, k = layer._weights()
        hs = layer._cu_hs
        cont = bottom[1].gpu_data()
        ppd = layer.param_propagate_down
        do = scratch("rnn_do", T * NH, layer.dtype)
        tanh_grad(top[0].gpu_diff(), None, top[0].gpu_data(), do, T * NH)
        if ppd[k + 1]:
            gemm(1, 0, H, H, T * N, 1.0, do, hs, 1.0, who.mutable_gpu_diff(), offB=NH)
        if ppd[k + 2]:
            segment_sum(do, T * N, H, 1, bo.mutable_gpu_diff(), 1.0, 1.0)
        dH = state(layer, "dH", T * NH, layer.dtype)
        gemm(0, 0, T * N, H, H, 1.0, do, who.gpu_data(), 0.0, dH)
        (dh_next,) = self._final_diffs(layer, top, N)
        dA = state(layer, "dA", T * NH, layer.dtype)
        hc = scratch("rnn_hc", NH, layer.dtype)
        for t in range(T - 1, -1, -1):
            ct = cont[t * N:(t + 1) * N]
            da = dA[t * NH:(t + 1) * NH]
            tanh_grad(dH[t * NH:(t + 1) * NH], dh_next, hs[(t + 1) * NH:(t + 2) * NH], da, NH)
            if ppd[k]:
                row_scale(hs[t * NH:(t + 1) * NH], ct, NH, H, hc)
                gemm(1, 0, H, H, N, 1.0, da, hc, 1.0, whh.mutable_gpu_diff())
            gemm(0, 0, N, H, H, 1.0, da, whh.gpu_data(), 0.0, dh_next)
            row_scale(dh_next, ct, NH, H, dh_next)
        self._input_backward(layer, bottom, propagate_down, dA, w, b, ws)
        self._state_backward(layer, propagate_down, bottom, [dh_next], N)
