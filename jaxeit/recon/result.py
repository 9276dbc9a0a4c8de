"""The common result type of every reconstruction method."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Result"]


@dataclasses.dataclass
class Result:
    """A reconstruction.

    Attributes:
        sigma: (E,) float64 element conductivities on the model's mesh.
        method: the method's name.
        history: per-iteration lists, e.g. ``"residual"`` (‖F(σ) − v‖/‖v‖),
            ``"objective"`` and ``"step"`` (line-search step taken).
        n_iter: iterations run.
        wall_time: seconds, including compilation on a first call.
        background: the homogeneous conductivity the method started from.
        options: the settings used.
        image: (H, W) float64 rendering on a pixel grid, when a grid was given
            (INR methods always render on their own grid, NaN outside the domain).
        extras: method-specific objects (e.g. the fitted INR and its frame).
    """

    sigma: np.ndarray
    method: str
    history: dict
    n_iter: int
    wall_time: float
    background: float = float("nan")
    options: dict = dataclasses.field(default_factory=dict)
    image: np.ndarray | None = None
    extras: dict = dataclasses.field(default_factory=dict, repr=False)

    def __repr__(self):
        res = self.history.get("residual") or [float("nan")]
        return (f"Result(method={self.method!r}, n_iter={self.n_iter}, residual={res[-1]:.3g}, "
                f"sigma∈[{np.min(self.sigma):.3g}, {np.max(self.sigma):.3g}], wall_time={self.wall_time:.2f}s)")
