"""Solvers: update rules, learning-rate policies and the training loop.

The numeric core (no net needed) is :mod:`.lr_policy` and :mod:`.updates`; the training loop
is :mod:`.solver` (imported on demand: ``from netdef.solvers.solver import Solver``).
"""
from .lr_policy import POLICIES, check_policy, learning_rate, validate_policy
from .updates import (RULES, AdaDelta, AdaGrad, Adam, Nesterov, RMSProp, SGD, UpdateRule,
                      clip_gradients, get_update_rule, normalize, register, regularize,
                      solver_problems, update_param, validate_solver)

__all__ = ["POLICIES", "check_policy", "learning_rate", "validate_policy",
           "RULES", "UpdateRule", "SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam",
           "clip_gradients", "get_update_rule", "normalize", "register", "regularize",
           "solver_problems", "update_param", "validate_solver"]
