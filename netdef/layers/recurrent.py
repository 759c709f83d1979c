"""Recurrent layers: RNN, LSTM (Caffe's RecurrentLayer family) and LSTMUnit.

Caffe builds RNN and LSTM as an internal net unrolled over the T time steps; here the same
computation runs directly, one GEMM per time step for the recurrent transform and one GEMM over
all steps for the input transform, with the parameters Caffe's unrolled net owns, in its order
(so ``.caffemodel`` files load unchanged):

* LSTM: ``W_xc`` (4H, D), ``b_c`` (4H), [``W_xc_static`` (4H, Ds) with a static input],
  ``W_hc`` (4H, H); gates in the order i, f, o, g (Caffe's LSTMUnit).
* RNN: ``W_xh`` (H, D), ``b_h`` (H), [``W_xh_static`` (H, Ds)], ``W_hh`` (H, H),
  ``W_ho`` (H, H), ``b_o`` (H).

Bottoms: ``x`` (T, N, ...) with D = product of the axes from 2; ``cont`` (T, N), the
continuation indicators (0 starts a new sequence: the previous state is multiplied by
``cont_t``, so a 0 resets it); optionally ``x_static`` (N, ...) with Ds = product of the axes
from 1; with ``expose_hidden`` the initial states ``h0`` (and ``c0`` for LSTM), each
(1, N, H), as the last bottoms.  Tops: the outputs (T, N, H) and, with ``expose_hidden``, the
final states ``hT`` (and ``cT``), (1, N, H).

Without ``expose_hidden`` the state at the end of one forward pass is the initial state of
the next (Caffe's behaviour: a stream may continue across batches when ``cont`` is 1 at t=0);
no gradient crosses batches.  With ``expose_hidden`` gradients flow to h0/c0 and from the
diffs of hT/cT.
"""
from __future__ import annotations

import logging

import numpy as np

from .base import Layer
from .registry import register_layer

log = logging.getLogger(__name__)


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def _filler(p, name: str):
    return getattr(p, name) if p.HasField(name) else None


class _Recurrent(Layer):
    """Shared set-up of RNN and LSTM (Caffe's RecurrentLayer)."""
    min_bottom = 2
    min_top = 1
    #: number of recurrent state blobs (h; or h and c)
    num_recur = 1
    #: gate multiple of the hidden size in the input/recurrent transforms (LSTM: 4)
    gates = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1                      # cont gets no gradient

    # -- set-up ------------------------------------------------------------------------------
    def _check_inputs(self, bottom):
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            raise self.shape_error(f"bottom[0] (x) must have at least 2 axes (T, N, ...), got "
                                   f"{list(x.shape)}")
        if cont.num_axes != 2 or tuple(cont.shape) != tuple(x.shape[:2]):
            raise self.shape_error(
                f"bottom[1] (cont) must be (T, N) = {list(x.shape[:2])} like the first two axes "
                f"of x, got {list(cont.shape)}")
        if self.static_input:
            xs = bottom[2]
            if xs.num_axes < 1 or xs.shape[0] != x.shape[1]:
                raise self.shape_error(f"bottom[2] (x_static) must be (N, ...) with N = "
                                       f"{x.shape[1]}, got {list(xs.shape)}")

    def layer_setup(self, bottom, top):
        p = self.param.recurrent_param
        self.H = int(p.num_output)
        if self.H <= 0:
            raise self.config_error("num_output must be set to a positive hidden size",
                                    field="recurrent_param.num_output")
        self.expose = bool(p.expose_hidden)
        self.debug_info = bool(p.debug_info)
        nexp = self.num_recur if self.expose else 0
        nb = len(bottom)
        if nb not in (2 + nexp, 3 + nexp):
            names = "x, cont, [x_static]" + (", h0" if self.expose else "") + \
                (", c0" if self.expose and self.num_recur == 2 else "")
            raise self.config_error(
                f"takes bottoms ({names}): {2 + nexp} or {3 + nexp} bottoms, got {nb}"
                + ("" if self.expose else
                   " (expose_hidden: true adds the initial state bottoms)"),
                field="recurrent_param.expose_hidden" if nb > 3 + nexp else None)
        if len(top) != 1 + nexp:
            what = "the output" + (", hT" if self.expose else "") + \
                (", cT" if self.expose and self.num_recur == 2 else "")
            raise self.config_error(f"produces {1 + nexp} top{'s' if nexp else ''} ({what}), "
                                    f"got {len(top)}")
        self.static_input = nb == 3 + nexp
        self._check_inputs(bottom)
        self.D = bottom[0].count_range(2)
        self.Ds = bottom[2].count_range(1) if self.static_input else 0
        if not self.blobs:
            self.blobs = self._make_params(p)
        self._carry = None

    def _param_blob(self, shape, filler, kind):
        b = self.make_blob(shape)
        if kind == "w":
            self.fill(b, _filler(filler, "weight_filler"))
        else:
            self.fill(b, _filler(filler, "bias_filler"))
        return b

    def _state_shape(self, bottom):
        return (1, bottom[0].shape[1], self.H)

    def reshape(self, bottom, top):
        self._check_inputs(bottom)
        d = bottom[0].count_range(2)
        if d != self.D:
            raise self.shape_error(f"x has {d} inputs per step (axes from 2) but the weights "
                                   f"expect {self.D}; the input size cannot change after setup")
        if self.static_input and bottom[2].count_range(1) != self.Ds:
            raise self.shape_error(f"x_static has {bottom[2].count_range(1)} inputs per item but "
                                   f"the weights expect {self.Ds}")
        T, N = bottom[0].shape[:2]
        sshape = self._state_shape(bottom)
        if self.expose:
            off = 3 if self.static_input else 2
            for j in range(self.num_recur):
                b = bottom[off + j]
                if tuple(b.shape) != sshape:
                    name = ("h0", "c0")[j]
                    raise self.shape_error(f"bottom[{off + j}] ({name}) must have the hidden "
                                           f"state shape {list(sshape)}, got {list(b.shape)}")
        top[0].reshape((T, N, self.H))
        for j in range(1, len(top)):
            top[j].reshape(sshape)

    # -- helpers -------------------------------------------------------------------------------
    def _initial_states(self, bottom):
        N = bottom[0].shape[1]
        if self.expose:
            off = 3 if self.static_input else 2
            return [bottom[off + j].data.reshape(N, self.H).astype(self.dtype)
                    for j in range(self.num_recur)]
        if self._carry is None or self._carry[0].shape != (N, self.H):
            self._carry = [np.zeros((N, self.H), self.dtype) for _ in range(self.num_recur)]
        return [c.copy() for c in self._carry]

    def _input_transform(self, bottom, w, b, ws):
        """W x_t + b (+ W_static x_static) for every step: (T, N, G*H)."""
        T, N = bottom[0].shape[:2]
        X = bottom[0].data.reshape(T * N, self.D)
        g = (X @ w.data.T).reshape(T, N, -1)
        g += b.data
        if self.static_input:
            g += (bottom[2].data.reshape(N, self.Ds) @ ws.data.T)[None]
        return g

    def _input_backward(self, bottom, propagate_down, dG, w, b, ws, iw, ib, iws):
        """Gradients of the input transform from dG (T, N, G*H)."""
        T, N = bottom[0].shape[:2]
        G = dG.reshape(T * N, -1)
        if self.param_propagate_down[iw]:
            w.diff += G.T @ bottom[0].data.reshape(T * N, self.D)
        if self.param_propagate_down[ib]:
            b.diff += G.sum(axis=0)
        if propagate_down[0]:
            np.matmul(G, w.data, out=bottom[0].diff.reshape(T * N, self.D))
        if self.static_input:
            Gs = dG.sum(axis=0)
            if self.param_propagate_down[iws]:
                ws.diff += Gs.T @ bottom[2].data.reshape(N, self.Ds)
            if propagate_down[2]:
                np.matmul(Gs, ws.data, out=bottom[2].diff.reshape(N, self.Ds))

    def _state_backward(self, top, propagate_down, bottom, grads):
        """dh0 (/dc0) into the exposed bottoms."""
        if not self.expose:
            return
        off = 3 if self.static_input else 2
        for j, g in enumerate(grads):
            if propagate_down[off + j]:
                bottom[off + j].diff[...] = g.reshape(bottom[off + j].shape)

    def _final_diffs(self, top, N):
        """Diffs of the exposed final states (zero when not exposed)."""
        out = []
        for j in range(self.num_recur):
            if self.expose:
                out.append(top[1 + j].diff.reshape(N, self.H).astype(self.dtype))
            else:
                out.append(np.zeros((N, self.H), self.dtype))
        return out

    def _debug(self, name, arr):
        if self.debug_info:
            log.info("    [%s] %s: mean |x| %.6g", self.name, name, float(np.abs(arr).mean()))

    def flops(self, bottom, top):
        T, N = bottom[0].shape[:2]
        gh = self.gates * self.H
        f = 2 * T * N * gh * (self.D + self.H) + 10 * T * N * gh
        if self.static_input:
            f += 2 * N * gh * self.Ds
        return int(f)


@register_layer("LSTM", "recurrent_param")
class LSTMLayer(_Recurrent):
    """Long short-term memory over T steps (Caffe's LSTM): gates (i, f, o, g) =
    W_xc x_t + b_c [+ W_xc_static x_static] + W_hc (cont_t h_{t-1});
    c_t = cont_t f c_{t-1} + i g, h_t = o tanh(c_t).  Blobs W_xc, b_c, [W_xc_static], W_hc."""
    has_cuda = True
    max_bottom = 5
    max_top = 3
    num_recur = 2
    gates = 4

    def _make_params(self, p):
        H4 = 4 * self.H
        blobs = [self._param_blob((H4, self.D), p, "w"), self._param_blob((H4,), p, "b")]
        if self.static_input:
            blobs.append(self._param_blob((H4, self.Ds), p, "w"))
        blobs.append(self._param_blob((H4, self.H), p, "w"))
        return blobs

    def _weights(self):
        w, b = self.blobs[0], self.blobs[1]
        ws = self.blobs[2] if self.static_input else None
        return w, b, ws, self.blobs[-1]

    def forward(self, bottom, top):
        T, N = bottom[0].shape[:2]
        H = self.H
        w, b, ws, whc = self._weights()
        G = self._input_transform(bottom, w, b, ws)            # (T, N, 4H), then activations
        cont = bottom[1].data.astype(self.dtype)
        h0, c0 = self._initial_states(bottom)
        hs = np.empty((T + 1, N, H), self.dtype)
        cs = np.empty((T + 1, N, H), self.dtype)
        hs[0], cs[0] = h0, c0
        whcT = whc.data.T
        for t in range(T):
            ct = cont[t][:, None]
            g = G[t]
            g += (ct * hs[t]) @ whcT
            g[:, :3 * H] = _sigmoid(g[:, :3 * H])
            g[:, 3 * H:] = np.tanh(g[:, 3 * H:])
            i, f, o, gg = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
            c = cs[t + 1]
            np.multiply(ct * f, cs[t], out=c)
            c += i * gg
            np.multiply(o, np.tanh(c), out=hs[t + 1])
        top[0].data[...] = hs[1:]
        if self.expose:
            top[1].data[...] = hs[T][None]
            top[2].data[...] = cs[T][None]
        else:
            self._carry = [hs[T].copy(), cs[T].copy()]
        self._cache = (G, hs, cs, cont)
        self._debug("h", hs[1:])
        self._debug("c", cs[1:])

    def backward(self, top, propagate_down, bottom):
        T, N = bottom[0].shape[:2]
        H = self.H
        w, b, ws, whc = self._weights()
        A, hs, cs, cont = self._cache
        dh_next, dc_next = self._final_diffs(top, N)
        dtop = top[0].diff
        dG = np.empty((T, N, 4 * H), self.dtype)
        dwhc = np.zeros((4 * H, H), self.dtype) if self.param_propagate_down[-1] else None
        for t in range(T - 1, -1, -1):
            ct = cont[t][:, None]
            a = A[t]
            i, f, o, gg = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
            tc = np.tanh(cs[t + 1])
            dh = dtop[t] + dh_next
            dc = dc_next + dh * o * (1.0 - tc * tc)
            d = dG[t]
            d[:, :H] = dc * gg * i * (1.0 - i)
            d[:, H:2 * H] = dc * cs[t] * ct * f * (1.0 - f)
            d[:, 2 * H:3 * H] = dh * tc * o * (1.0 - o)
            d[:, 3 * H:] = dc * i * (1.0 - gg * gg)
            dc_next = dc * ct * f
            hc = ct * hs[t]
            if dwhc is not None:
                dwhc += d.T @ hc
            dh_next = (d @ whc.data) * ct
        if dwhc is not None:
            whc.diff += dwhc
        self._input_backward(bottom, propagate_down, dG, w, b, ws, 0, 1, 2)
        self._state_backward(top, propagate_down, bottom, [dh_next, dc_next])


@register_layer("RNN", "recurrent_param")
class RNNLayer(_Recurrent):
    """Elman RNN over T steps (Caffe's RNN): h_t = tanh(W_xh x_t + b_h [+ W_xh_static x_static]
    + W_hh (cont_t h_{t-1})), o_t = tanh(W_ho h_t + b_o); the top is o.  Blobs W_xh, b_h,
    [W_xh_static], W_hh, W_ho, b_o."""
    has_cuda = True
    max_bottom = 4
    max_top = 2
    num_recur = 1
    gates = 1

    def _make_params(self, p):
        H = self.H
        blobs = [self._param_blob((H, self.D), p, "w"), self._param_blob((H,), p, "b")]
        if self.static_input:
            blobs.append(self._param_blob((H, self.Ds), p, "w"))
        blobs += [self._param_blob((H, H), p, "w"), self._param_blob((H, H), p, "w"),
                  self._param_blob((H,), p, "b")]
        return blobs

    def _weights(self):
        k = 3 if self.static_input else 2
        ws = self.blobs[2] if self.static_input else None
        return self.blobs[0], self.blobs[1], ws, self.blobs[k], self.blobs[k + 1], \
            self.blobs[k + 2], k

    def flops(self, bottom, top):
        T, N = bottom[0].shape[:2]
        return super().flops(bottom, top) + 2 * T * N * self.H * self.H

    def forward(self, bottom, top):
        T, N = bottom[0].shape[:2]
        H = self.H
        w, b, ws, whh, who, bo, _ = self._weights()
        A = self._input_transform(bottom, w, b, ws)             # (T, N, H) -> h_1..h_T
        cont = bottom[1].data.astype(self.dtype)
        (h0,) = self._initial_states(bottom)
        hs = np.empty((T + 1, N, H), self.dtype)
        hs[0] = h0
        whhT = whh.data.T
        for t in range(T):
            a = A[t]
            a += (cont[t][:, None] * hs[t]) @ whhT
            np.tanh(a, out=hs[t + 1])
        o = top[0].data.reshape(T * N, H)
        np.matmul(hs[1:].reshape(T * N, H), who.data.T, out=o)
        o += bo.data
        np.tanh(o, out=o)
        if self.expose:
            top[1].data[...] = hs[T][None]
        else:
            self._carry = [hs[T].copy()]
        self._cache = (hs, cont)
        self._debug("h", hs[1:])

    def backward(self, top, propagate_down, bottom):
        T, N = bottom[0].shape[:2]
        H = self.H
        w, b, ws, whh, who, bo, k = self._weights()
        hs, cont = self._cache
        o = top[0].data.reshape(T * N, H)
        do = top[0].diff.reshape(T * N, H) * (1.0 - o * o)
        hflat = hs[1:].reshape(T * N, H)
        if self.param_propagate_down[k + 1]:
            who.diff += do.T @ hflat
        if self.param_propagate_down[k + 2]:
            bo.diff += do.sum(axis=0)
        dH = (do @ who.data).reshape(T, N, H)
        (dh_next,) = self._final_diffs(top, N)
        dA = np.empty((T, N, H), self.dtype)
        dwhh = np.zeros((H, H), self.dtype) if self.param_propagate_down[k] else None
        for t in range(T - 1, -1, -1):
            ct = cont[t][:, None]
            h = hs[t + 1]
            da = dA[t]
            np.multiply(dH[t] + dh_next, 1.0 - h * h, out=da)
            if dwhh is not None:
                dwhh += da.T @ (ct * hs[t])
            dh_next = (da @ whh.data) * ct
        if dwhh is not None:
            whh.diff += dwhh
        self._input_backward(bottom, propagate_down, dA, w, b, ws, 0, 1, 2)
        self._state_backward(top, propagate_down, bottom, [dh_next])


@register_layer("LSTMUnit", None)
class LSTMUnitLayer(Layer):
    """One LSTM step (Caffe's LSTMUnit): bottoms c_prev (1, N, H), gate inputs x (1, N, 4H) in
    the order i, f, o, g, cont (1, N); tops c = cont sigmoid(f) c_prev + sigmoid(i) tanh(g) and
    h = sigmoid(o) tanh(c).  cont gets no gradient."""
    has_cuda = True
    exact_num_bottom = 3
    exact_num_top = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        c, x, cont = bottom
        if c.num_axes != 3 or x.num_axes != 3 or cont.num_axes != 2:
            raise self.shape_error(
                f"bottoms must be c_prev (1, N, H), x (1, N, 4H) and cont (1, N); got "
                f"{list(c.shape)}, {list(x.shape)}, {list(cont.shape)}")
        if x.shape[:2] != c.shape[:2] or cont.shape != c.shape[:2]:
            raise self.shape_error(
                f"the first two axes of c_prev {list(c.shape)}, x {list(x.shape)} and cont "
                f"{list(cont.shape)} must agree")
        if x.shape[2] != 4 * c.shape[2]:
            raise self.shape_error(f"x must hold 4 gates per hidden unit: x.shape[2] = "
                                   f"{x.shape[2]}, expected 4 * {c.shape[2]}")
        top[0].reshape(c.shape)
        top[1].reshape(c.shape)

    def flops(self, bottom, top):
        return 12 * top[0].count

    def forward(self, bottom, top):
        H = bottom[0].shape[2]
        x = bottom[1].data
        ct = bottom[2].data[..., None]
        a = np.empty(x.shape, x.dtype)
        a[..., :3 * H] = _sigmoid(x[..., :3 * H])
        a[..., 3 * H:] = np.tanh(x[..., 3 * H:])
        i, f, o, g = a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]
        c = top[0].data
        np.multiply(ct * f, bottom[0].data, out=c)
        c += i * g
        np.multiply(o, np.tanh(c), out=top[1].data)
        self._acts = a

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        H = bottom[0].shape[2]
        a = self._acts
        i, f, o, g = a[..., :H], a[..., H:2 * H], a[..., 2 * H:3 * H], a[..., 3 * H:]
        ct = bottom[2].data[..., None]
        c_prev = bottom[0].data
        tc = np.tanh(top[0].data)
        dh = top[1].diff
        dc = top[0].diff + dh * o * (1.0 - tc * tc)
        if propagate_down[1]:
            dx = bottom[1].diff
            dx[..., :H] = dc * g * i * (1.0 - i)
            dx[..., H:2 * H] = dc * c_prev * ct * f * (1.0 - f)
            dx[..., 2 * H:3 * H] = dh * tc * o * (1.0 - o)
            dx[..., 3 * H:] = dc * i * (1.0 - g * g)
        if propagate_down[0]:
            np.multiply(dc, ct * f, out=bottom[0].diff)
