"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``).

``learning_rate(param, iter, current_step)`` returns ``(rate, current_step)``; ``iter`` is the
number of updates already done (0 for the first), ``current_step`` the step counter that Caffe
keeps for ``step``/``multistep`` (saved in the ``.solverstate``).

The arithmetic follows Caffe's, operation by operation, in the net's ``dtype`` (default float64
= ``Caffe<double>``; pass ``np.float32`` for the bit pattern ``Caffe<float>`` produces): e.g.
``inv`` is ``base_lr * pow(Dtype(1) + gamma * iter, -power)`` with ``gamma * iter`` a float
product, while ``step``/``exp``/``multistep`` raise gamma to an *integer* power (C++ promotes
that to double).  The rate comes back as a Python float holding the ``dtype`` value.

Settings a policy cannot run with (unknown policy, ``stepsize <= 0`` for ``step``, missing
``gamma``/``power``, stepvalues that do not increase, ``max_iter <= 0`` for ``poly``) raise
:class:`~netdef.errors.ConfigError` naming the field; :func:`validate_policy` lists them
without raising.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import ConfigError

log = logging.getLogger("netdef.solver")

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")

# parameters each policy reads (besides base_lr); checked for presence, in this order
_NEEDS = {
    "fixed": (),
    "step": ("stepsize", "gamma"),
    "exp": ("gamma",),
    "inv": ("gamma", "power"),
    "multistep": ("stepvalue", "gamma"),
    "poly": ("max_iter", "power"),
    "sigmoid": ("gamma", "stepsize"),
}

_MEANING = {
    "gamma": "the decay factor gamma",
    "power": "the exponent power",
    "stepsize": "stepsize",
    "stepvalue": "stepvalue entries",
    "max_iter": "max_iter",
}


def _has(p, field: str) -> bool:
    if field == "stepvalue":
        return len(p.stepvalue) > 0
    return p.HasField(field)


def validate_policy(p) -> list[tuple[str, str]]:
    """``(field, problem)`` pairs for LR-policy settings that cannot work (empty when fine)."""
    policy = p.lr_policy
    if policy not in POLICIES:
        if not policy:
            what = "lr_policy is not set"
        else:
            what = f"unknown lr_policy '{policy}'"
            near = [q for q in POLICIES if q == policy.lower().strip()]
            if near:
                what += f" (did you mean '{near[0]}'?)"
        return [("lr_policy", f"{what}; use one of: {', '.join(POLICIES)}")]
    bad = []
    for field in _NEEDS[policy]:
        if not _has(p, field):
            bad.append((field, f"lr_policy '{policy}' needs {_MEANING[field]}"))
    if bad:
        return bad
    if policy == "step" and p.stepsize <= 0:
        bad.append(("stepsize", f"lr_policy 'step' needs stepsize > 0 (got {p.stepsize})"))
    if policy in ("step", "exp", "multistep") and p.gamma < 0:
        bad.append(("gamma", f"lr_policy '{policy}' needs gamma >= 0 (got {p.gamma:g}): a "
                             "negative gamma flips the sign of the learning rate"))
    if policy == "inv" and p.gamma < 0:
        bad.append(("gamma", f"lr_policy 'inv' needs gamma >= 0 (got {p.gamma:g}): "
                             "1 + gamma*iter would turn negative"))
    if policy == "multistep":
        sv = list(p.stepvalue)
        for k in range(1, len(sv)):
            if sv[k] <= sv[k - 1]:
                bad.append(("stepvalue", f"stepvalues must increase: stepvalue {sv[k]} "
                                         f"follows {sv[k - 1]} (all: {sv})"))
                break
    if policy == "poly" and p.max_iter <= 0:
        bad.append(("max_iter", f"lr_policy 'poly' needs max_iter > 0 (got {p.max_iter})"))
    return bad


def check_policy(p) -> None:
    """Raise the first problem :func:`validate_policy` finds."""
    bad = validate_policy(p)
    if bad:
        field, msg = bad[0]
        raise ConfigError(msg, field=field)


def learning_rate(p, iter: int, current_step: int = 0, dtype=np.float64) -> tuple[float, int]:
    """Learning rate at iteration ``iter`` and the updated ``current_step``.

    ``step`` sets ``current_step = iter // stepsize``; ``multistep`` advances it by at most one
    per call (``iter >= stepvalue[current_step]``), exactly as Caffe, so a run resumed with a
    stale counter catches up one step per iteration.  Other policies leave it unchanged.
    """
    check_policy(p)
    F = np.dtype(dtype).type
    it = int(iter)
    policy = p.lr_policy
    base = np.float32(p.base_lr)        # the schema's floats are float32 in Caffe, too
    gamma = np.float32(p.gamma)
    power = np.float32(p.power)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        if policy == "fixed":
            rate = F(base)
        elif policy == "step":
            current_step = it // p.stepsize
            # base_lr() * pow(gamma(), int): C++ promotes to double
            rate = F(np.float64(base) * np.power(np.float64(gamma), np.float64(current_step)))
        elif policy == "exp":
            rate = F(np.float64(base) * np.power(np.float64(gamma), np.float64(it)))
        elif policy == "inv":
            # Dtype(1) + gamma() * iter_   (float * int is a float product)
            x = F(1) + F(gamma * np.float32(it))
            rate = F(F(base) * np.power(x, F(-power)))
        elif policy == "multistep":
            if current_step < len(p.stepvalue) and it >= p.stepvalue[current_step]:
                current_step += 1
                log.info(f"MultiStep Status: Iteration {it}, step = {current_step}")
            rate = F(np.float64(base) * np.power(np.float64(gamma), np.float64(current_step)))
        elif policy == "poly":
            frac = F(1) - F(it) / F(p.max_iter)
            # past max_iter Caffe raises a negative number to a real power (NaN); the training
            # loop never gets there, but a rate of 0 is the sane continuation
            if frac < 0:
                frac = F(0)
            rate = F(F(base) * np.power(frac, F(power)))
        else:  # sigmoid
            z = F(-gamma) * (F(it) - F(p.stepsize))
            rate = F(F(base) * (F(1) / (F(1) + np.exp(z))))
    return float(rate), current_step
