"""Solvers: update rules, learning-rate policies and the training loop."""
from .lr_policy import learning_rate
from .updates import RULES, get_update_rule, validate_solver

__all__ = ["learning_rate", "RULES", "get_update_rule", "validate_solver"]
