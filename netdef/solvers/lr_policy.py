"""Caffe's learning-rate policies (SGDSolver::GetLearningRate)."""
from __future__ import annotations

import math

from ..errors import ConfigError

POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def learning_rate(p, it: int, current_step: int = 0) -> tuple[float, int]:
    """Rate at iteration ``it`` (updates done so far) and the new ``current_step``."""
    policy = p.lr_policy
    base = p.base_lr
    if policy == "fixed":
        return base, current_step
    if policy == "step":
        current_step = it // p.stepsize
        return base * p.gamma ** current_step, current_step
    if policy == "exp":
        return base * p.gamma ** it, current_step
    if policy == "inv":
        return base * (1.0 + p.gamma * it) ** (-p.power), current_step
    if policy == "multistep":
        if current_step < len(p.stepvalue) and it >= p.stepvalue[current_step]:
            current_step += 1
        return base * p.gamma ** current_step, current_step
    if policy == "poly":
        return base * (1.0 - it / p.max_iter) ** p.power, current_step
    if policy == "sigmoid":
        return base / (1.0 + math.exp(-p.gamma * (it - p.stepsize))), current_step
    raise ConfigError(f"unknown lr_policy '{policy}' (one of: {', '.join(POLICIES)})",
                      field="lr_policy")


def validate_policy(p) -> list[tuple[str, str]]:
    """(field, problem) pairs for policy settings that cannot work."""
    bad = []
    policy = p.lr_policy
    if policy not in POLICIES:
        bad.append(("lr_policy", f"unknown lr_policy '{policy}' (one of: {', '.join(POLICIES)})"))
    if policy in ("step", "sigmoid") and policy == "step" and p.stepsize <= 0:
        bad.append(("stepsize", "lr_policy step needs stepsize > 0"))
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and p.gamma < 0 and policy != "sigmoid":
        bad.append(("gamma", f"lr_policy {policy} needs gamma >= 0"))
    if policy == "multistep":
        sv = list(p.stepvalue)
        if not sv:
            bad.append(("stepvalue", "lr_policy multistep needs stepvalue entries"))
        elif any(b <= a for a, b in zip(sv, sv[1:])):
            bad.append(("stepvalue", f"stepvalues must increase: {sv}"))
    if policy == "poly" and p.max_iter <= 0:
        bad.append(("max_iter", "lr_policy poly needs max_iter > 0"))
    return bad
