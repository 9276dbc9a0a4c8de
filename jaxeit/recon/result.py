"""The common result type of every reconstruction method."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Result", "STATUSES"]

#: why a run stopped: the iterative methods' reasons (:mod:`jaxeit.recon.driver`), and "done" for direct
#: methods (one linear step, one network pass or one sampling run)
STATUSES = ("converged", "max_iter", "line_search_failed", "diverged", "done")


@dataclasses.dataclass
class Result:
    """A reconstruction.

    Attributes:
        sigma: (E,) float64 element conductivities on the model's mesh, or None
            for a method that reconstructs on a pixel grid only (then ``image``).
        method: the method's name.
        history: per-iteration lists: ``"objective"``, ``"residual"`` (the
            relative data misfit ‖F(σ) − v‖/‖v‖), ``"step"`` (line-search step
            taken, 0 for a rejected step) and method-specific ones (INR:
            ``"data"``, ``"regulariser"``).
        n_iter: iterations run.
        wall_time: seconds, including compilation on a first call.
        status: why the run stopped, one of :data:`STATUSES`.
        background: the homogeneous conductivity the method started from.
        options: the settings used.
        image: (H, W) float64 rendering on a pixel grid, when a grid was given
            (INR methods always render on their own grid, NaN outside the domain).
        extras: method-specific objects (e.g. the fitted INR and its frame; for
            learned methods the posterior ``std`` and ``samples``).
    """

    sigma: np.ndarray | None
    method: str
    history: dict
    n_iter: int
    wall_time: float
    status: str = "done"
    background: float = float("nan")
    options: dict = dataclasses.field(default_factory=dict)
    image: np.ndarray | None = None
    extras: dict = dataclasses.field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def __repr__(self):
        res = self.history.get("residual") or [float("nan")]
        values = self.sigma if self.sigma is not None else self.image
        rng = (f"[{np.nanmin(values):.3g}, {np.nanmax(values):.3g}]" if values is not None else "[]")
        return (f"Result(method={self.method!r}, status={self.status!r}, n_iter={self.n_iter}, "
                f"residual={res[-1]:.3g}, sigma∈{rng}, wall_time={self.wall_time:.2f}s)")
