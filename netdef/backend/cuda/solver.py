"""Solver updates on the device: Caffe's ClipGradients, Normalize, Regularize and the six update
rules (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) as kernels, in the parameter's dtype and
in the CPU rules' operation order (netdef.solvers.updates).  Parameters, gradients and history
stay on the device; the history is copied to the host only for a snapshot."""
from __future__ import annotations

import math

import numpy as np

from ...errors import ConfigError
from . import primitives as K
from .device import cuda as _get_cuda
from .memory import count_d2h, count_h2d

cuda = _get_cuda()

RULE_CODES = {"SGD": 0, "Nesterov": 1, "AdaGrad": 2, "RMSProp": 3, "AdaDelta": 4, "Adam": 5}


@cuda.jit
def _prepare(n, d, w, norm, do_norm, local, reg):
    """normalize (d *= 1/iter_size) then regularize (L2: d += w*local; L1: d += sign(w)*local)"""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        g = d[i]
        if do_norm:
            g = g * norm
        if reg == 1:
            g = g + w[i] * local
        elif reg == 2:
            v = w[i]
            s = local if v > 0 else (-local if v < 0 else local * 0)
            g = g + s
        d[i] = g


@cuda.jit
def _update(code, n, d, w, h, h2, lr, p0, p1, p2, p3, one):
    """Turn the gradient d into the update (the CPU rule's order), then w -= d."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        g = d[i]
        if code == 0:                       # SGD: p0 = momentum
            v = h[i] * p0
            v = v + g * lr
            h[i] = v
            g = v
        elif code == 1:                     # Nesterov: p0 = mu, p1 = 1 + mu
            old = h[i]
            v = h[i] * p0
            v = v + g * lr
            h[i] = v
            g = v * p1 + old * (-p0)
        elif code == 2:                     # AdaGrad: p0 = delta
            hh = h[i] + g * g
            h[i] = hh
            g = (g / (math.sqrt(hh) + p0)) * lr
        elif code == 3:                     # RMSProp: p0 = delta, p1 = rho, p2 = 1 - rho
            u = (g * g) * p2
            hh = h[i] * p1 + u
            h[i] = hh
            g = (g / (math.sqrt(hh) + p0)) * lr
        elif code == 4:                     # AdaDelta: p0 = mu, p1 = 1 - mu, p2 = delta
            u = (g * g) * p1
            hh = h[i] * p0 + u
            h[i] = hh
            r = math.sqrt((h2[i] + p2) / (hh + p2))
            g = g * r
            u = (g * g) * p1
            h2[i] = h2[i] * p0 + u
            g = g * lr
        else:                               # Adam: p0 = b1, p1 = 1-b1, p2 = b2, p3 = 1-b2
            m = h[i] * p0 + g * p1
            h[i] = m
            v = h2[i] * p2 + (g * g) * p3
            h2[i] = v
            g = (m / (math.sqrt(v) + one)) * lr     # `one` carries delta here
        d[i] = g
        w[i] = w[i] - g


class DeviceUpdater:
    """``Solver.apply_update`` on the device, for a solver whose nets are in device mode."""

    def __init__(self, solver):
        self.solver = solver
        self.code = RULE_CODES[solver.param.type]
        self.dev_history = None          # device arrays, uploaded from solver.history once

    # -- history -------------------------------------------------------------------------------
    def _history(self):
        if self.dev_history is None:
            self.dev_history = []
            for h in self.solver.history:
                d = cuda.to_device(np.ascontiguousarray(h).reshape(-1) if h.size else
                                   np.zeros(1, h.dtype))
                count_h2d(h.nbytes)
                self.dev_history.append(d)
        return self.dev_history

    def sync_history(self) -> None:
        """Copy the device history into ``solver.history`` (before a snapshot)."""
        if self.dev_history is None:
            return
        for h, d in zip(self.solver.history, self.dev_history):
            if h.size:
                h.reshape(-1)[...] = d.copy_to_host()[:h.size]
                count_d2h(h.nbytes)

    def history_changed(self) -> None:
        """The host history was replaced (restore): upload it on the next update."""
        self.dev_history = None

    # -- one update --------------------------------------------------------------------------------
    def apply(self, rate: float) -> None:
        s = self.solver
        p = s.param
        hist = self._history()
        nparam = len(s.params)
        if p.clip_gradients >= 0:
            sumsq = sum(K.sumsq(pi.blob.gpu_diff(), pi.blob.count) for pi in s.params)
            norm = math.sqrt(sumsq)
            if norm > p.clip_gradients:
                scale = p.clip_gradients / norm
                import logging
                logging.getLogger("netdef.solver").info(
                    f"Gradient clipping: scaling down gradients (L2 norm {norm:g} > "
                    f"{p.clip_gradients:g}) by scale factor {scale:g}")
                for pi in s.params:
                    K.scale(scale, pi.blob.mutable_gpu_diff(), pi.blob.count)
        if p.iter_size < 1:
            raise ConfigError(f"iter_size must be at least 1 (got {p.iter_size})",
                              field="iter_size")
        reg = {"L2": 1, "L1": 2}.get(p.regularization_type)
        if reg is None:
            raise ConfigError(f"unknown regularization_type '{p.regularization_type}' (use L2 "
                              f"or L1)", field="regularization_type")
        for i, pi in enumerate(s.params):
            blob = pi.blob
            n = blob.count
            if not n:
                continue
            t = blob.dtype.type
            d = blob.mutable_gpu_diff()
            w = blob.mutable_gpu_data()
            local = t(p.weight_decay) * t(pi.decay_mult)
            do_norm = p.iter_size != 1
            if do_norm or local:
                _prepare[K.grid1d(n)](n, d, w, t(1) / t(p.iter_size), do_norm, local,
                                      reg if local else 0)
            lr = t(rate * pi.lr_mult)
            h = hist[i]
            h2 = hist[nparam + i] if len(hist) > nparam else h
            args = self._rule_args(t, s.iter)
            if self.code == 5:
                lr = t(rate * pi.lr_mult) * args[-1]
                args = args[:-1]
            _update[K.grid1d(n)](self.code, n, d, w, h, h2, lr, *args)

    def _rule_args(self, t, it):
        p = self.solver.param
        z = t(0)
        if self.code == 0:
            return t(p.momentum), z, z, z, z
        if self.code == 1:
            mu = t(p.momentum)
            return mu, t(1) + mu, z, z, z
        if self.code == 2:
            return t(p.delta), z, z, z, z
        if self.code == 3:
            rho = t(p.rms_decay)
            return t(p.delta), rho, t(1) - rho, z, z
        if self.code == 4:
            mu = t(p.momentum)
            return mu, t(1) - mu, t(p.delta), z, z
        b1, b2 = p.momentum, p.momentum2
        step = int(it) + 1
        denom = 1.0 - b1 ** step
        if denom == 0:
            raise ConfigError("Adam needs momentum (beta1) < 1", field="momentum")
        corr = t(math.sqrt(1.0 - b2 ** step) / denom)
        return t(b1), t(1) - t(b1), t(b2), t(1) - t(b2), t(p.delta), corr
