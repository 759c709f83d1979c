"""Solver updates on the device: Caffe's ClipGradients, Normalize, Regularize and the six update
rules (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) as kernels, in the parameter's dtype and
in the CPU rules' operation order (netdef.solvers.updates).  Parameters, gradients and history
stay on the device; the history is copied to the host only for a snapshot."""
from __future__ import annotations

import math

import numba
import numpy as np

from ...errors import ConfigError
from . import primitives as K
from .device import cuda as _get_cuda
from .launch import kernel
from .counters import count_d2h, count_h2d, device_empty
from .memory import CPU, GPU, SYNCED

cuda = _get_cuda()

RULE_CODES = {"SGD": 0, "Nesterov": 1, "AdaGrad": 2, "RMSProp": 3, "AdaDelta": 4, "Adam": 5}


def _make_step(dtype):
    """The whole update of every parameter in one launch, for ``dtype``: parameter ``s`` is
    ``W[offs[s]:offs[s+1]]`` (its gradient in ``D``, history in ``H``/``H2``).  Per element, in
    the CPU rules' order: normalize (``g *= 1/iter_size``), regularize (L2: ``g += w*local``,
    L1: ``g += sign(w)*local``), the rule turns ``g`` into the update (left in ``D``), and
    ``w -= g``.  ``lr`` is ``dtype(rate * lr_mult)`` as on the host (times Adam's correction
    ``corr``)."""
    nbt = numba.from_dtype(np.dtype(dtype))

    def step(code, nseg, offs, lrm, local, W, D, H, H2, rate, norm, do_norm, reg, p0, p1, p2,
             p3, p4, corr):
        i = cuda.grid(1)
        total = offs[nseg]
        if i >= total:
            return
        lo = 0                                 # the parameter holding element i
        hi = nseg
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if offs[mid] <= i:
                lo = mid
            else:
                hi = mid
        s = lo
        while i < total:
            while i >= offs[s + 1]:
                s += 1
            lr = nbt(rate * lrm[s])
            if code == 5:
                lr = lr * corr
            g = D[i]
            if do_norm:
                g = g * norm
            loc = local[s]
            if reg == 1 and loc != 0:
                g = g + W[i] * loc
            elif reg == 2 and loc != 0:
                v = W[i]
                g = g + (loc if v > 0 else (-loc if v < 0 else loc * 0))
            if code == 0:                       # SGD: p0 = momentum
                v = H[i] * p0
                v = v + g * lr
                H[i] = v
                g = v
            elif code == 1:                     # Nesterov: p0 = mu, p1 = 1 + mu
                old = H[i]
                v = H[i] * p0
                v = v + g * lr
                H[i] = v
                g = v * p1 + old * (-p0)
            elif code == 2:                     # AdaGrad: p0 = delta
                hh = H[i] + g * g
                H[i] = hh
                g = (g / (math.sqrt(hh) + p0)) * lr
            elif code == 3:                     # RMSProp: p0 = delta, p1 = rho, p2 = 1 - rho
                u = (g * g) * p2
                hh = H[i] * p1 + u
                H[i] = hh
                g = (g / (math.sqrt(hh) + p0)) * lr
            elif code == 4:                     # AdaDelta: p0 = mu, p1 = 1 - mu, p2 = delta
                u = (g * g) * p1
                hh = H[i] * p0 + u
                H[i] = hh
                r = math.sqrt((H2[i] + p2) / (hh + p2))
                g = g * r
                u = (g * g) * p1
                H2[i] = H2[i] * p0 + u
                g = g * lr
            else:                               # Adam: p0 = b1, p1 = 1-b1, p2 = b2, p3 = 1-b2
                m = H[i] * p0 + g * p1
                H[i] = m
                v = H2[i] * p2 + (g * g) * p3
                H2[i] = v
                g = (m / (math.sqrt(v) + p4)) * lr     # p4 = delta
            D[i] = g
            W[i] = W[i] - g
            i += cuda.gridsize(1)

    step.__name__ = f"_step_{np.dtype(dtype).name}"
    return kernel(step)


_step_float32 = _make_step(np.float32)
_step_float64 = _make_step(np.float64)


class FlatParams:
    """The solver's parameters in one device buffer each for data, diff and every history
    kind: each parameter blob's device mirrors become views of its slice (moved in once,
    values kept), so clearing the gradients is one fill and the update one launch."""

    def __init__(self, params, history, history_count, dtype):
        self.params = params
        self.dtype = np.dtype(dtype)
        offs = [0]
        for pi in params:
            offs.append(offs[-1] + pi.blob.count)
        self.offs_host = np.array(offs, np.int64)
        self.total = int(offs[-1])
        n = max(self.total, 1)
        self.W = device_empty(n, self.dtype)
        self.D = device_empty(n, self.dtype)
        self.views = []
        for pi, o in zip(params, offs):
            b = pi.blob
            nb = b.count
            vd, vg = self.W[o:o + nb], self.D[o:o + nb]
            for mem, view, which in ((b.data_mem, vd, "data"), (b.diff_mem, vg, "diff")):
                _move(b, mem, view, which)
            self.views.append((b.data_mem, vd, b.diff_mem, vg))
        self.offs = K.upload_const(self.offs_host)
        self.lrm = K.upload_const(np.array([pi.lr_mult for pi in params], np.float64))
        self.local_key = None
        self.local = None
        hist = []
        nparam = len(params)
        for k in range(history_count):
            flat = np.zeros(n, self.dtype)
            for i, o in enumerate(offs[:-1]):
                h = history[k * nparam + i]
                flat[o:o + h.size] = np.asarray(h).reshape(-1)
            hist.append(K.upload_const(flat))
        self.H = hist[0] if hist else self.D
        self.H2 = hist[1] if len(hist) > 1 else self.H

    def intact(self) -> bool:
        """Whether every parameter's device mirrors are still the views (a reshape or a new
        storage replaces them)."""
        for dm, vd, gm, vg in self.views:
            if dm.dev is not vd or gm.dev is not vg:
                return False
        return True

    def local_for(self, weight_decay):
        """Per parameter ``dtype(weight_decay) * dtype(decay_mult)`` (uploaded on change)."""
        if self.local_key != weight_decay:
            t = self.dtype.type
            self.local = K.upload_const(np.array([t(weight_decay) * t(pi.decay_mult)
                                                  for pi in self.params], self.dtype))
            self.local_key = weight_decay
        return self.local

    def zero_diffs(self) -> None:
        """All gradients to zero: one fill."""
        K.fill(self.D, 0.0, self.total)
        for _, _, gm, _ in self.views:
            gm.head = GPU

    def to_device(self) -> None:
        """Values written on the host since (pycaffe surgery on a weight, the MPI average of a
        gradient: head CPU) go into their views before the update reads the buffers."""
        for pi in self.params:
            b = pi.blob
            if b.data_mem.head == CPU:
                b.gpu_data()
            if b.diff_mem.head == CPU:
                b.gpu_diff()

    def written(self) -> None:
        """The device now holds the current data and diff of every parameter."""
        for dm, _, gm, _ in self.views:
            dm.head = GPU
            gm.head = GPU

    def history_to_host(self, history, history_count) -> None:
        nparam = len(self.params)
        for k, flat in enumerate((self.H, self.H2)[:history_count]):
            host = flat.copy_to_host()
            count_d2h(host.nbytes)
            for i in range(nparam):
                h = history[k * nparam + i]
                if h.size:
                    h.reshape(-1)[...] = host[self.offs_host[i]:self.offs_host[i] + h.size]


def _move(blob, mem, view, which) -> None:
    """Make ``view`` the device mirror of ``mem`` (blob's data or diff), keeping its values."""
    n = blob.count
    if mem.pending is not None:
        mem.pending.wait(0)
        mem.pending = None
    if mem.head == GPU and mem.dev is not None:
        if n:
            K.copy(view, mem.dev, n)
        mem.head = GPU
    elif mem.head in (CPU, SYNCED):          # (a solver's parameters own their memory)
        arr = blob._host_arr(which)
        if n:
            view.copy_to_device(np.ascontiguousarray(arr).reshape(-1))
            count_h2d(arr.nbytes)
        mem.head = SYNCED
    else:
        if n:
            K.fill(view, 0.0, n)
        mem.head = GPU
    mem.dev = view


class LossWindow:
    """The solver's ``average_loss`` window on the device: iteration k's loss (the sum over
    its ``iter_size`` forwards, each loss top weighted, in float64 as the host adds them) is
    written into slot k mod size by the forward itself; the host reads the window only to
    print the smoothed loss (display iterations), equal to the CPU's."""

    def __init__(self, size: int):
        from .memory import device_zeros
        self.size = max(1, int(size))
        self.dev = device_zeros(self.size, np.float64)
        self.pos = 0
        self.count = 0

    def arm(self, devnet) -> None:
        devnet.loss_acc = [self.dev, self.pos, True]

    def close(self, devnet) -> None:
        devnet.loss_acc = None
        self.pos = (self.pos + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def losses(self, iter_size: int) -> list:
        """The window's losses, oldest first, each divided by ``iter_size`` (as the host
        solver's ``losses`` deque holds them)."""
        host = self.dev.copy_to_host()
        count_d2h(host.nbytes)
        first = (self.pos - self.count) % self.size
        return [float(host[(first + k) % self.size]) / iter_size for k in range(self.count)]


class DeviceUpdater:
    """``Solver.apply_update`` on the device, for a solver whose nets are in device mode: the
    parameters in :class:`FlatParams`, one launch per update (plus the gradient-norm reduction
    of ``clip_gradients``, read on the host)."""

    def __init__(self, solver):
        self.solver = solver
        self.code = RULE_CODES[solver.param.type]
        self.flat = None                 # FlatParams, made on the first update
        #: the smoothed loss kept on the device (None: the net's loss layers run on the CPU,
        #: or MPI: read each iteration as on the CPU)
        dn = solver.net.device
        self.loss_window = LossWindow(solver.param.average_loss) \
            if dn is not None and solver.sync is None and dn.loss_on_device() else None

    def _flat(self) -> FlatParams:
        f = self.flat
        if f is None or not f.intact():
            s = self.solver
            if f is not None:
                self.sync_history()
            f = self.flat = FlatParams(s.params, s.history, s.rule.history_count, s.dtype)
            dn = s.net.device
            if dn is not None:
                dn.flat_params = f
        return f

    # -- history -------------------------------------------------------------------------------
    def sync_history(self) -> None:
        """Copy the device history into ``solver.history`` (before a snapshot)."""
        if self.flat is None:
            return
        s = self.solver
        self.flat.history_to_host(s.history, s.rule.history_count)

    def history_changed(self) -> None:
        """The host history was replaced (restore): upload it on the next update."""
        self.flat = None
        dn = self.solver.net.device
        if dn is not None:
            dn.flat_params = None

    # -- one update --------------------------------------------------------------------------------
    def apply(self, rate: float) -> None:
        from .launch import at
        s = self.solver
        p = s.param
        at("solver", "update")
        if p.iter_size < 1:
            raise ConfigError(f"iter_size must be at least 1 (got {p.iter_size})",
                              field="iter_size")
        reg = {"L2": 1, "L1": 2}.get(p.regularization_type)
        if reg is None:
            raise ConfigError(f"unknown regularization_type '{p.regularization_type}' (use L2 "
                              f"or L1)", field="regularization_type")
        f = self._flat()
        if not f.total:
            return
        f.to_device()
        t = f.dtype.type
        if p.clip_gradients >= 0:
            norm = math.sqrt(K.sumsq(f.D, f.total))
            if norm > p.clip_gradients:
                scale = p.clip_gradients / norm
                import logging
                logging.getLogger("netdef.solver").info(
                    f"Gradient clipping: scaling down gradients (L2 norm {norm:g} > "
                    f"{p.clip_gradients:g}) by scale factor {scale:g}")
                K.scale(scale, f.D, f.total)
        do_norm = p.iter_size != 1
        args = self._rule_args(t, s.iter)
        corr = args[5] if len(args) > 5 else t(1)
        # looked up by name at each update: ptx_check records launches through module names
        step = _step_float64 if f.dtype == np.float64 else _step_float32
        step[K.grid1d(f.total)](
            self.code, len(f.params), f.offs, f.lrm, f.local_for(p.weight_decay), f.W, f.D,
            f.H, f.H2, float(rate), t(1) / t(p.iter_size), do_norm, reg if p.weight_decay else 0,
            *args[:5], corr)
        f.written()

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
