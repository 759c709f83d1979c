"""Caffe's update rules (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) and the gradient
preprocessing around them (``ClipGradients``, ``Normalize``, ``Regularize``).

Per iteration the training loop does, as ``SGDSolver::ApplyUpdate``::

    rate = learning_rate(param, iter, current_step)
    clip_gradients(all_diffs, param.clip_gradients)
    for i, param_blob in enumerate(learnable_params):
        normalize(diff, param.iter_size)
        regularize(diff, data, param.weight_decay, decay_mult[i], param.regularization_type)
        rule.compute_update(i, diff, data, rate * lr_mult[i], history, iter)
        data -= diff

``update_param`` does those four steps; for C-contiguous float32/float64 host arrays it runs them
as one Numba kernel per param (``netdef.backend.cpu.update``), a single pass over memory that is
bit-identical to the passes above (``NETDEF_NO_FUSED_UPDATE=1`` or ``FUSED = False`` keeps the
passes).  Every rule leaves the update Δ in ``diff`` (in place), computed in the param's dtype with
Caffe's operation order (so a float32 net updates in float32 like ``Caffe<float>``).  The history
list holds, in ``.solverstate`` order, one blob per param (SGD, Nesterov, AdaGrad, RMSProp) or
all first-moment blobs followed by all second-moment blobs (AdaDelta, Adam).
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np

from ..errors import ConfigError
from .lr_policy import validate_policy

log = logging.getLogger("netdef.solver")

REGULARIZATION_TYPES = ("L2", "L1")


# -- one-pass CPU kernels ---------------------------------------------------------------------
#: arrays at least this large are updated by all Numba threads
PARALLEL_MIN_SIZE = 1 << 17
#: ``update_param`` runs the fused one-pass kernel where it applies (off: the separate passes)
FUSED = os.environ.get("NETDEF_NO_FUSED_UPDATE", "").strip() in ("", "0")


def _flat_ok(a, b) -> bool:
    """The Numba update kernels apply: two C-contiguous host arrays of one float dtype."""
    return (type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype
            and a.dtype in (np.float32, np.float64) and a.shape == b.shape
            and a.flags.c_contiguous and b.flags.c_contiguous)


def _kernels(size: int):
    from ..backend.cpu import update as K
    if size < PARALLEL_MIN_SIZE:
        return K, 1
    import numba
    return K, numba.get_num_threads()


# -- gradient preprocessing -------------------------------------------------------------------
def clip_gradients(diffs, threshold: float) -> float:
    """Caffe's ``ClipGradients``: when ``threshold >= 0`` and the global L2 norm L of all the
    diffs exceeds it, scale every diff (in place) by ``threshold / L``.  Returns the factor
    applied (1.0 when nothing was done).  The sum of squares is accumulated in float64."""
    if threshold < 0:
        return 1.0
    sumsq = 0.0
    for d in diffs:
        x = np.asarray(d, dtype=np.float64).reshape(-1)
        sumsq += float(np.dot(x, x))
    norm = math.sqrt(sumsq)
    if not norm > threshold:          # also: a NaN norm clips nothing, as in Caffe
        return 1.0
    scale = threshold / norm
    log.info(f"Gradient clipping: scaling down gradients (L2 norm {norm:g} > {threshold:g}) "
             f"by scale factor {scale:g}")
    for d in diffs:
        d *= d.dtype.type(scale)
    return scale


def normalize(diff, iter_size: int) -> None:
    """Caffe's ``Normalize``: ``diff *= 1/iter_size`` (nothing when iter_size is 1)."""
    scale = _normalize_scale(diff.dtype.type, iter_size)
    if scale is not None:
        diff *= scale


def _normalize_scale(t, iter_size: int):
    """``1/iter_size`` in dtype ``t`` (None for iter_size 1)."""
    if iter_size < 1:
        raise ConfigError(f"iter_size must be at least 1 (got {iter_size})", field="iter_size")
    return None if iter_size == 1 else t(1) / t(iter_size)


def regularize(diff, data, weight_decay: float, decay_mult: float, reg_type: str) -> None:
    """Caffe's ``Regularize``: with ``local_decay = weight_decay * decay_mult``,
    L2: ``diff += local_decay * w``; L1: ``diff += local_decay * sign(w)``."""
    local = _local_decay(diff.dtype.type, weight_decay, decay_mult, reg_type)
    if not local:
        return
    if reg_type == "L2":
        if _flat_ok(diff, data):
            K, nt = _kernels(diff.size)
            if nt > 1:
                K.axpy_par(local, data.reshape(-1), diff.reshape(-1), nt)
            else:
                K.axpy(local, data.reshape(-1), diff.reshape(-1))
        else:
            diff += data * local
    else:
        diff += np.sign(data) * local


def _local_decay(t, weight_decay, decay_mult, reg_type: str):
    """``weight_decay * decay_mult`` in dtype ``t`` (ConfigError for an unknown reg_type)."""
    if reg_type not in REGULARIZATION_TYPES:
        raise ConfigError(f"unknown regularization_type '{reg_type}' (use L2 or L1)",
                          field="regularization_type")
    return t(weight_decay) * t(decay_mult)


def update_param(rule, i, diff, data, local_rate, history, iter, iter_size, weight_decay,
                 decay_mult, reg_type) -> None:
    """Param i's part of ``ApplyUpdate`` after the clipping: Normalize, Regularize, the rule's
    update (left in ``diff``) and ``data -= diff`` -- in one pass where ``rule.fused_update``
    applies, else as the separate passes (the same result, bit for bit)."""
    if FUSED and rule.fused_update(i, diff, data, local_rate, history, iter, iter_size,
                                   weight_decay, decay_mult, reg_type):
        return
    normalize(diff, iter_size)
    regularize(diff, data, weight_decay, decay_mult, reg_type)
    rule.compute_update(i, diff, data, local_rate, history, iter)
    data -= diff


# -- update rules ----------------------------------------------------------------------------
RULES: dict[str, type] = {}


def register(name: str):
    """Class decorator: make an update rule available as solver ``type: name``."""
    def deco(cls):
        cls.type_name = name
        RULES[name] = cls
        return cls
    return deco


class UpdateRule:
    """Base: ``history_count`` blobs per param; ``compute_update`` turns the (regularised,
    normalised) gradient in ``diff`` into the update Δ, in place."""
    type_name = ""
    history_count = 1
    #: the one-pass kernel in ``netdef.backend.cpu.update`` (see ``fused_update``)
    kernel = ""

    def __init__(self, p):
        self.p = p
        self._scratch: dict[tuple, np.ndarray] = {}

    def init_history(self, params) -> list[np.ndarray]:
        """Zero history blobs in ``.solverstate`` order: for k in range(history_count), one blob
        per param (``params``: arrays or blobs with ``shape`` and ``dtype``)."""
        return [np.zeros(tuple(b.shape), dtype=b.dtype)
                for _ in range(self.history_count) for b in params]

    def _tmp(self, i: int, k: int, like: np.ndarray) -> np.ndarray:
        """Scratch array k for param i (Caffe's update_/temp_ blobs), reused between calls."""
        buf = self._scratch.get((i, k))
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = self._scratch[(i, k)] = np.empty_like(like)
        return buf

    @staticmethod
    def _num_params(history, count) -> int:
        return len(history) // count

    def compute_update(self, i, diff, data, local_rate, history, iter) -> None:
        raise NotImplementedError

    def constants(self, t, local_rate, iter) -> tuple:
        """The kernel's per-call constants, in dtype ``t``, built as ``compute_update`` builds
        its scalars."""
        raise NotImplementedError

    def fused_update(self, i, diff, data, local_rate, history, iter, iter_size, weight_decay,
                     decay_mult, reg_type) -> bool:
        """``update_param`` in one pass over memory; False (nothing done) where the kernel does
        not apply: arrays that are not C-contiguous host float32/float64 of one dtype, or a
        subclass that overrides ``compute_update`` without naming its own kernel."""
        owner = next(c for c in type(self).__mro__ if "compute_update" in vars(c))
        if not vars(owner).get("kernel"):
            return False
        n = self._num_params(history, self.history_count)
        hist = [history[k * n + i] for k in range(self.history_count)]
        if not all(_flat_ok(diff, a) for a in (data, *hist)):
            return False
        t = diff.dtype.type
        scale = _normalize_scale(t, iter_size)
        local = _local_decay(t, weight_decay, decay_mult, reg_type)
        reg = 0 if not local else 1 if reg_type == "L2" else 2
        c = self.constants(t, local_rate, iter)
        K, nt = _kernels(diff.size)
        h1, h2 = hist[0].reshape(-1), hist[-1].reshape(-1)
        getattr(K, self.kernel)(diff.reshape(-1), data.reshape(-1), h1, h2,
                                t(1) if scale is None else scale, local, reg, c, nt)
        return True


@register("SGD")
class SGD(UpdateRule):
    """v ← μ·v + lr·g;  Δ = v."""
    kernel = "sgd_fused"

    def constants(self, t, local_rate, iter):
        return t(self.p.momentum), t(local_rate)

    def compute_update(self, i, diff, data, local_rate, history, iter):
        mu, lr = self.constants(diff.dtype.type, local_rate, iter)
        v = history[i]
        if _flat_ok(diff, v):                         # the same, in one pass
            K, nt = _kernels(diff.size)
            if nt > 1:
                K.sgd_momentum_par(diff.reshape(-1), v.reshape(-1), mu, lr, nt)
            else:
                K.sgd_momentum(diff.reshape(-1), v.reshape(-1), mu, lr)
            return
        v *= mu                                       # caffe_cpu_axpby(lr, g, μ, v)
        diff *= lr
        v += diff
        np.copyto(diff, v)


@register("Nesterov")
class Nesterov(UpdateRule):
    """v_old = v; v ← μ·v + lr·g;  Δ = (1+μ)·v − μ·v_old."""
    kernel = "nesterov_fused"

    def constants(self, t, local_rate, iter):
        mu = t(self.p.momentum)
        return mu, t(local_rate), t(1) + mu, -mu

    def compute_update(self, i, diff, data, local_rate, history, iter):
        mu, lr, one_plus_mu, minus_mu = self.constants(diff.dtype.type, local_rate, iter)
        v = history[i]
        old = self._tmp(i, 0, diff)
        np.copyto(old, v)                             # save history for stepping back
        v *= mu
        diff *= lr
        v += diff
        old *= minus_mu                               # axpby(1+μ, v, -μ, update)
        np.multiply(v, one_plus_mu, out=diff)
        diff += old


@register("AdaGrad")
class AdaGrad(UpdateRule):
    """h ← h + g²;  Δ = lr·g / (√h + δ).  (momentum must be 0)"""
    kernel = "adagrad_fused"

    def constants(self, t, local_rate, iter):
        return t(self.p.delta), t(local_rate)

    def compute_update(self, i, diff, data, local_rate, history, iter):
        delta, lr = self.constants(diff.dtype.type, local_rate, iter)
        h = history[i]
        u = self._tmp(i, 0, diff)
        np.multiply(diff, diff, out=u)
        h += u
        np.sqrt(h, out=u)
        u += delta
        np.divide(diff, u, out=u)
        np.multiply(u, lr, out=diff)


@register("RMSProp")
class RMSProp(UpdateRule):
    """h ← ρ·h + (1−ρ)·g² (ρ = rms_decay);  Δ = lr·g / (√h + δ).  (momentum must be 0)"""
    kernel = "rmsprop_fused"

    def constants(self, t, local_rate, iter):
        rho = t(self.p.rms_decay)
        return rho, t(1) - rho, t(self.p.delta), t(local_rate)

    def compute_update(self, i, diff, data, local_rate, history, iter):
        rho, one_minus_rho, delta, lr = self.constants(diff.dtype.type, local_rate, iter)
        h = history[i]
        u = self._tmp(i, 0, diff)
        np.multiply(diff, diff, out=u)
        h *= rho                                      # axpby(1-ρ, g², ρ, h)
        u *= one_minus_rho
        h += u
        np.sqrt(h, out=u)
        u += delta
        np.divide(diff, u, out=u)
        np.multiply(u, lr, out=diff)


@register("AdaDelta")
class AdaDelta(UpdateRule):
    """μ = momentum (the decay ρ):  h ← μ·h + (1−μ)·g²;  u = g·√((h2+δ)/(h+δ));
    h2 ← μ·h2 + (1−μ)·u²;  Δ = lr·u.  History: all h, then all h2."""
    history_count = 2
    kernel = "adadelta_fused"

    def constants(self, t, local_rate, iter):
        mu = t(self.p.momentum)
        return mu, t(1) - mu, t(self.p.delta), t(local_rate)

    def compute_update(self, i, diff, data, local_rate, history, iter):
        mu, one_minus, delta, lr = self.constants(diff.dtype.type, local_rate, iter)
        n = self._num_params(history, 2)
        h, h2 = history[i], history[n + i]
        u = self._tmp(i, 0, diff)
        tmp = self._tmp(i, 1, diff)
        np.multiply(diff, diff, out=u)
        h *= mu                                       # history of gradients
        u *= one_minus
        h += u
        np.add(h2, delta, out=u)                      # (h2 + δ) / (h + δ)
        np.add(h, delta, out=tmp)
        np.divide(u, tmp, out=u)
        np.sqrt(u, out=u)
        diff *= u                                     # u = g · RMS ratio
        np.multiply(diff, diff, out=u)
        h2 *= mu                                      # history of updates
        u *= one_minus
        h2 += u
        diff *= lr                                    # apply learning rate


@register("Adam")
class Adam(UpdateRule):
    """β1 = momentum, β2 = momentum2, ε = delta, t = iter + 1:  m ← β1·m + (1−β1)·g;
    v ← β2·v + (1−β2)·g²;  Δ = lr·√(1−β2ᵗ)/(1−β1ᵗ) · m / (√v + ε).  History: all m, then all v."""
    history_count = 2
    kernel = "adam_fused"

    def constants(self, t, local_rate, iter):
        b1, b2 = self.p.momentum, self.p.momentum2
        step = int(iter) + 1
        denom = 1.0 - b1 ** step
        if denom == 0:
            raise ConfigError("Adam needs momentum (beta1) < 1", field="momentum")
        # Caffe: const Dtype correction = sqrt(1 - pow(β2, t)) / (1 - pow(β1, t)), in double
        correction = t(math.sqrt(1.0 - b2 ** step) / denom)
        return (t(b1), t(1) - t(b1), t(b2), t(1) - t(b2), t(self.p.delta),
                t(local_rate) * correction)

    def compute_update(self, i, diff, data, local_rate, history, iter):
        b1, one_minus_b1, b2, one_minus_b2, eps, lr_corr = self.constants(
            diff.dtype.type, local_rate, iter)
        n = self._num_params(history, 2)
        m, v = history[i], history[n + i]
        u = self._tmp(i, 0, diff)
        m *= b1                                       # axpby(1-β1, g, β1, m)
        np.multiply(diff, one_minus_b1, out=u)
        m += u
        np.multiply(diff, diff, out=u)                # axpby(1-β2, g², β2, v)
        v *= b2
        u *= one_minus_b2
        v += u
        np.sqrt(v, out=u)
        u += eps
        np.divide(m, u, out=u)
        np.multiply(u, lr_corr, out=diff)


def get_update_rule(type_name: str):
    """The update-rule class registered as ``type_name`` (ConfigError if none)."""
    try:
        return RULES[type_name]
    except KeyError:
        raise ConfigError(_unknown_type_message(type_name), field="type") from None


def _unknown_type_message(name: str) -> str:
    msg = f"unknown solver type '{name}'"
    near = [k for k in RULES if k.lower() == str(name).lower().strip()]
    if near:
        msg += f" (did you mean '{near[0]}'? type names are case-sensitive)"
    return msg + f"; valid types: {', '.join(RULES)}"


# -- validation --------------------------------------------------------------------------------
def solver_problems(p) -> list[tuple[str, str]]:
    """``(field, problem)`` pairs for settings this solver cannot run with, most basic first."""
    bad: list[tuple[str, str]] = []
    kind = p.type
    if kind not in RULES:
        return [("type", _unknown_type_message(kind))]
    if p.iter_size < 1:
        bad.append(("iter_size", f"iter_size must be at least 1 (got {p.iter_size})"))
    for k, n in enumerate(p.test_iter):
        if n < 0:
            bad.append(("test_iter", f"test_iter must not be negative (value {k + 1} is {n})"))
            break
    if p.average_loss < 1:
        bad.append(("average_loss", f"average_loss must be at least 1 (got {p.average_loss}; "
                                    "1 shows each iteration's loss)"))
    if p.regularization_type not in REGULARIZATION_TYPES:
        bad.append(("regularization_type", f"unknown regularization_type "
                                           f"'{p.regularization_type}' (use L2 or L1)"))
    if kind in ("AdaGrad", "RMSProp") and p.momentum != 0:
        bad.append(("momentum", f"momentum cannot be used with {kind} (got {p.momentum:g}): "
                                "remove it or set it to 0"))
    if kind == "RMSProp" and not 0 <= p.rms_decay < 1:
        bad.append(("rms_decay", f"RMSProp needs rms_decay in [0, 1) (got {p.rms_decay:g}; "
                                 "default 0.99)"))
    if kind == "AdaDelta":
        if not p.HasField("momentum"):
            bad.append(("momentum", "AdaDelta takes its decay rate rho from momentum, which is "
                                    "not set: add e.g. momentum: 0.95 (and base_lr: 1.0, as in "
                                    "Caffe's examples)"))
        elif not 0 <= p.momentum < 1:
            bad.append(("momentum", f"AdaDelta's momentum is its decay rate rho and must be in "
                                    f"[0, 1) (got {p.momentum:g}; typical 0.95)"))
    if kind == "Adam":
        if not p.HasField("momentum"):
            bad.append(("momentum", "Adam takes beta1 from momentum, which is not set: add "
                                    "e.g. momentum: 0.9 (beta2 is momentum2, default 0.999)"))
        elif not 0 <= p.momentum < 1:
            bad.append(("momentum", f"Adam's momentum is beta1 and must be in [0, 1) "
                                    f"(got {p.momentum:g}; typical 0.9)"))
        if not 0 <= p.momentum2 < 1:
            bad.append(("momentum2", f"Adam's momentum2 is beta2 and must be in [0, 1) "
                                     f"(got {p.momentum2:g}; default 0.999)"))
    if kind in ("AdaGrad", "RMSProp", "AdaDelta", "Adam") and not p.delta > 0:
        hint = ("AdaDelta's first steps are scaled by sqrt(delta), so it would never move"
                if kind == "AdaDelta" else "a zero gradient would give 0/0 = NaN")
        bad.append(("delta", f"{kind} needs delta > 0 (got {p.delta:g}; default 1e-8): "
                             f"{hint}"))
    bad.extend(validate_policy(p))
    if p.max_iter < 0:
        bad.append(("max_iter", f"max_iter must be >= 0 (got {p.max_iter})"))
    return bad


def validate_solver(p, file=None, where=None) -> None:
    """Raise a ConfigError naming the field of the first setting the solver cannot use.
    ``where(path) -> (line, col)`` locates the field in ``file`` when given."""
    bad = solver_problems(p)
    if not bad:
        return
    field, msg = bad[0]
    line, col = where((field,)) if where else (None, None)
    raise ConfigError(msg, file=file, line=line, col=col, field=field)
