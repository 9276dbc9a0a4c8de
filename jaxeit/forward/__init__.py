"""Finite-element forward models of EIT (complete and point electrode models)."""

from .assembly import Discretization, discretize, unit_stiffness
from .model import ForwardModel
from .solvers import BACKENDS, linear_solve, resolve_backend

__all__ = ["ForwardModel", "Discretization", "discretize", "unit_stiffness", "BACKENDS",
           "linear_solve", "resolve_backend"]
