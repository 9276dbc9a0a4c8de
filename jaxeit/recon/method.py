"""The base of every reconstruction method's typed options, and the checks they share.

A method is a frozen dataclass with keyword-only fields (its options, with
the defaults of its paper) and a ``run(model, v, reference)`` that returns a
:class:`~jaxeit.recon.result.Result`. The shared vocabulary:

* ``max_iter`` — iterations at most (an int ≥ 1);
* ``sigma0`` — the starting conductivity / background: a positive float, an
  (E,) array where a method supports one, or None for the homogeneous fit of
  the data;
* ``key`` — a ``jax.random`` key for stochastic methods (default ``PRNGKey(0)``);
* ``progress`` — show a progress bar;
* ``reference`` — reference voltages, an argument of
  :func:`jaxeit.recon.reconstruct` (data, not an option), used by difference
  methods only (:attr:`Method.uses_reference`).

Options are checked when the object is made: weights that must be positive
(listed in ``_positive``) or non-negative (``_nonnegative``) and finite,
iteration counts (``_counts``), ``sigma0``. Each failure is a ValueError that
names the option and the allowed range.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .driver import check_max_iter

__all__ = ["Method", "Iterative", "option_names", "sigma_start"]


def option_names(cls) -> list[str]:
    """The option names of a method class, in declaration order."""
    return [f.name for f in dataclasses.fields(cls)]


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Method:
    """Options of a reconstruction method (subclass per method; see the module notes).

    Class attributes:
        name: the registry key (the string alias).
        description: one line for listings (CLI, docs).
        uses_reference: ``"never"`` (absolute), ``"optional"`` or ``"required"`` (difference).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    uses_reference: ClassVar[str] = "never"
    _positive: ClassVar[tuple] = ()
    _nonnegative: ClassVar[tuple] = ()
    _counts: ClassVar[tuple] = ()

    def __post_init__(self):
        for f in self._counts:
            check_max_iter(getattr(self, f), f"{self.name}: {f}")
        for f in self._positive + self._nonnegative:
            x = getattr(self, f)
            low_ok = (x > 0) if f in self._positive else (x >= 0)
            if not _is_number(x) or not math.isfinite(x) or not low_ok:
                rng = "> 0" if f in self._positive else ">= 0"
                raise ValueError(f"{self.name}: {f} must be a finite number {rng}, got {x!r}")
        if "sigma0" in option_names(type(self)) and self.sigma0 is not None:
            s = np.asarray(self.sigma0, np.float64) if not isinstance(self.sigma0, jax.core.Tracer) else None
            if s is not None and (s.ndim > 1 or not np.all(np.isfinite(s)) or not np.all(s > 0)):
                raise ValueError(f"{self.name}: sigma0 must be a positive finite float or (E,) array, got "
                                 f"{'shape ' + str(s.shape) if s.ndim > 1 else self.sigma0!r}")
        if "progress" in option_names(type(self)) and not isinstance(self.progress, bool):
            raise ValueError(f"{self.name}: progress must be True or False, got {self.progress!r}")

    @classmethod
    def from_options(cls, **options) -> "Method":
        """``cls(**options)``, with a ValueError listing the valid options for an unknown one."""
        valid = option_names(cls)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ValueError(f"method {cls.name!r} has no option {', '.join(map(repr, unknown))}; "
                             f"its options are: {', '.join(valid)}")
        return cls(**options)

    def replace(self, **options) -> "Method":
        """A copy with ``options`` changed (checked as in :meth:`from_options`)."""
        return type(self).from_options(**{**self.options(), **options})

    def options(self) -> dict:
        """The options as a plain dict (shallow: arrays and objects as they are)."""
        return {f: getattr(self, f) for f in option_names(type(self))}

    def check(self, model, v, reference) -> None:
        """Checks that need the model: ``sigma0`` of the mesh's size (a ValueError otherwise)."""
        if "sigma0" in option_names(type(self)) and self.sigma0 is not None and np.ndim(self.sigma0) == 1:
            if np.shape(self.sigma0) != (model.n_elements,):
                raise ValueError(f"{self.name}: sigma0 must be a float or ({model.n_elements},) for this mesh, "
                                 f"got shape {np.shape(self.sigma0)}")

    def run(self, model, v, reference=None):
        """Reconstruct from checked voltages ``v`` (M,) float64; returns a Result."""
        raise NotImplementedError(f"{type(self).__name__} must implement run(model, v, reference)")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Iterative(Method):
    """Options every iterative method shares: the start ``sigma0`` and a ``progress`` bar (with its
    own ``max_iter`` field, checked as an iteration count)."""

    _counts: ClassVar[tuple] = ("max_iter",)

    sigma0: float | np.ndarray | None = None
    progress: bool = False


def sigma_start(model, v, sigma0, fit) -> tuple[float, jax.Array]:
    """(σ_bg, (E,) float64 start): ``sigma0`` broadcast to the mesh, or ``fit(model, v)`` when None.

    σ_bg is the mean of ``sigma0`` (or the fit).
    """
    c = fit(model, v) if sigma0 is None else float(np.mean(np.asarray(sigma0)))
    start = jnp.broadcast_to(jnp.asarray(c if sigma0 is None else sigma0, jnp.float64), (model.n_elements,))
    return c, start
