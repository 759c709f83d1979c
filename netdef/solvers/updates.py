"""Caffe's update rules (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) and the gradient
preprocessing around them (clipping, iter_size normalisation, L1/L2 regularisation).

Each rule leaves the update in ``diff`` (the caller then does ``w -= diff``), in the param's
dtype, in place, as Caffe does."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .lr_policy import validate_policy


def clip_gradients(diffs, threshold: float) -> float:
    """Scale every diff by threshold/L when the global L2 norm L exceeds threshold."""
    if threshold < 0:
        return 1.0
    sumsq = sum(float(np.dot(d.reshape(-1).astype(np.float64), d.reshape(-1))) for d in diffs)
    norm = np.sqrt(sumsq)
    if norm > threshold:
        scale = threshold / norm
        for d in diffs:
            d *= d.dtype.type(scale)
        return scale
    return 1.0


def normalize(diff, iter_size: int) -> None:
    if iter_size > 1:
        diff *= diff.dtype.type(1.0 / iter_size)


def regularize(diff, data, weight_decay: float, decay_mult: float, reg_type: str) -> None:
    local = weight_decay * decay_mult
    if not local:
        return
    if reg_type == "L2":
        diff += diff.dtype.type(local) * data
    elif reg_type == "L1":
        diff += diff.dtype.type(local) * np.sign(data)
    else:
        raise ConfigError(f"unknown regularization_type '{reg_type}' (L1 or L2)",
                          field="regularization_type")


class UpdateRule:
    history_count = 1

    def __init__(self, p):
        self.p = p

    def init_history(self, blobs) -> list[np.ndarray]:
        return [np.zeros(b.shape, dtype=b.dtype) for _ in range(self.history_count)
                for b in blobs]

    def n(self, history):
        return len(history) // self.history_count

    def compute_update(self, i, diff, data, rate, history, it) -> None:
        raise NotImplementedError


class SGD(UpdateRule):
    """v = momentum v + lr g;  update = v."""

    def compute_update(self, i, diff, data, rate, history, it):
        v = history[i]
        v *= v.dtype.type(self.p.momentum)
        v += v.dtype.type(rate) * diff
        diff[...] = v


class Nesterov(UpdateRule):
    """v_new = momentum v + lr g;  update = (1 + momentum) v_new - momentum v_old."""

    def compute_update(self, i, diff, data, rate, history, it):
        v = history[i]
        mu = v.dtype.type(self.p.momentum)
        old = v.copy()
        v *= mu
        v += v.dtype.type(rate) * diff
        diff[...] = (1 + mu) * v - mu * old


class AdaGrad(UpdateRule):
    """h += g^2;  update = lr g / (sqrt(h) + delta)."""

    def compute_update(self, i, diff, data, rate, history, it):
        h = history[i]
        t = diff.dtype.type
        h += diff * diff
        diff *= t(rate) / (np.sqrt(h) + t(self.p.delta))


class RMSProp(UpdateRule):
    """h = rms_decay h + (1 - rms_decay) g^2;  update = lr g / (sqrt(h) + delta)."""

    def compute_update(self, i, diff, data, rate, history, it):
        h = history[i]
        t = diff.dtype.type
        rho = self.p.rms_decay
        h *= t(rho)
        h += t(1 - rho) * diff * diff
        diff *= t(rate) / (np.sqrt(h) + t(self.p.delta))


class AdaDelta(UpdateRule):
    """h = mu h + (1-mu) g^2; u = g sqrt((h2 + delta)/(h + delta)); h2 = mu h2 + (1-mu) u^2;
    update = lr u.  History: all h, then all h2."""
    history_count = 2

    def compute_update(self, i, diff, data, rate, history, it):
        n = self.n(history)
        h, h2 = history[i], history[n + i]
        t = diff.dtype.type
        mu, delta = t(self.p.momentum), t(self.p.delta)
        h *= mu
        h += (1 - mu) * diff * diff
        diff *= np.sqrt((h2 + delta) / (h + delta))
        h2 *= mu
        h2 += (1 - mu) * diff * diff
        diff *= t(rate)


class Adam(UpdateRule):
    """m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
    update = lr sqrt(1 - b2^t)/(1 - b1^t) m / (sqrt(v) + eps), t = iter + 1.
    History: all m, then all v."""
    history_count = 2

    def compute_update(self, i, diff, data, rate, history, it):
        n = self.n(history)
        m, v = history[i], history[n + i]
        t = diff.dtype.type
        b1, b2 = self.p.momentum, self.p.momentum2
        step = it + 1
        m *= t(b1)
        m += t(1 - b1) * diff
        v *= t(b2)
        v += t(1 - b2) * diff * diff
        corr = rate * np.sqrt(1 - b2 ** step) / (1 - b1 ** step)
        diff[...] = t(corr) * m / (np.sqrt(v) + t(self.p.delta))


RULES = {"SGD": SGD, "Nesterov": Nesterov, "AdaGrad": AdaGrad, "RMSProp": RMSProp,
         "AdaDelta": AdaDelta, "Adam": Adam}


def get_update_rule(type_name: str):
    try:
        return RULES[type_name]
    except KeyError:
        raise ConfigError(f"unknown solver type '{type_name}' (one of: {', '.join(RULES)})",
                          field="type") from None


def validate_solver(p, file=None, where=None) -> None:
    """Raise a ConfigError naming the field for settings the solver type cannot use."""
    def err(field, msg):
        line, col = where((field,)) if where else (None, None)
        return ConfigError(msg, file=file, line=line, col=col, field=field)

    if p.type not in RULES:
        raise err("type", f"unknown solver type '{p.type}' (one of: {', '.join(RULES)})")
    if p.type in ("AdaGrad", "RMSProp") and p.momentum != 0:
        raise err("momentum", f"{p.type} does not use momentum: remove it (or set 0)")
    if p.type == "RMSProp" and not 0 <= p.rms_decay < 1:
        raise err("rms_decay", "rms_decay must be in [0, 1)")
    if p.type == "Adam" and not (0 <= p.momentum < 1 and 0 <= p.momentum2 < 1):
        raise err("momentum", "Adam needs momentum (beta1) and momentum2 (beta2) in [0, 1)")
    if p.type == "AdaDelta" and p.HasField("momentum") and not 0 <= p.momentum < 1:
        raise err("momentum", "AdaDelta's momentum (decay) must be in [0, 1)")
    if p.iter_size < 1:
        raise err("iter_size", "iter_size must be at least 1")
    if p.regularization_type not in ("L1", "L2"):
        raise err("regularization_type",
                  f"unknown regularization_type '{p.regularization_type}' (L1 or L2)")
    if p.max_iter < 0:
        raise err("max_iter", "max_iter must be >= 0")
    for field, msg in validate_policy(p):
        raise err(field, msg)
