"""Reconstruction methods behind one calling shape: ``reconstruct(model, v, method=..., **options)``."""

from __future__ import annotations

import jax
import numpy as np

from ..forward import ForwardModel
from .classical import back_projection, fit_homogeneous, gauss_newton, one_step, tv_pdipm
from .result import Result

__all__ = ["reconstruct", "Result", "METHODS", "fit_homogeneous", "one_step", "gauss_newton", "tv_pdipm",
           "back_projection"]

METHODS = {
    "one-step": "one-step linearised GN with a quadratic prior (difference with `reference`, else absolute)",
    "gn": "iterative regularised Gauss–Newton on log σ with line search (absolute)",
    "lm": "Levenberg–Marquardt on log σ (absolute)",
    "tv": "total variation by the primal–dual interior point method (absolute)",
    "bp": "sensitivity back-projection (difference; needs `reference`)",
    "inr": "implicit neural representation (Fourier features + MLP), Adam (Diff-INR §3.2)",
    "inr+tv": "INR with a total-variation regulariser on its grid rendering",
    "diff-inr": "INR regularised by the shipped diffusion prior through score distillation (Diff-INR)",
}


def _check_voltages(model: ForwardModel, v, name: str):
    if isinstance(v, jax.core.Tracer):
        return v
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (model.n_measurements,):
        raise ValueError(f"{name} must have shape ({model.n_measurements},) to match the protocol's "
                         f"measurements, got {arr.shape}; restrict the protocol with Protocol.subset if "
                         "some measurements are missing")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} contains {int(bad.sum())} NaN/inf values (first at index "
                         f"{int(np.flatnonzero(bad)[0])}); drop them with Protocol.subset(mask)")
    return arr


def reconstruct(model: ForwardModel, v, method: str = "gn", *, reference=None, grid=None, **options) -> Result:
    """Reconstruct element conductivities from voltages ``v`` (M,) float64.

    Args:
        model: the forward model on the reconstruction mesh.
        v: measured voltages, ordered as ``model.protocol``.
        method: a key of :data:`METHODS`.
        reference: reference voltages (M,) for difference imaging (methods
            ``"one-step"`` and ``"bp"``).
        grid: optional :class:`jaxeit.grid.Grid`; the result then carries an
            element-lookup rendering in ``Result.image``.
        **options: passed to the method (e.g. ``alpha``, ``prior``, ``max_iter``).
    """
    v = _check_voltages(model, v, "v")
    if reference is not None:
        reference = _check_voltages(model, reference, "reference")
    if method == "one-step":
        result = one_step(model, v, reference=reference, **options)
    elif method in ("gn", "lm"):
        result = gauss_newton(model, v, damping="line-search" if method == "gn" else "lm", **options)
    elif method == "tv":
        result = tv_pdipm(model, v, **options)
    elif method == "bp":
        if reference is None:
            raise ValueError("back-projection is a difference method: pass reference=<reference voltages>")
        result = back_projection(model, v, reference=reference, **options)
    elif method in ("inr", "inr+tv"):
        from ..inr import inr_reconstruct

        result = inr_reconstruct(model, v, method=method, **options)
    elif method == "diff-inr":
        from ..diffinr import diff_inr_reconstruct

        result = diff_inr_reconstruct(model, v, **options)
    else:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if grid is not None:
        if "inr" in result.extras:  # a continuous representation: sample it on the requested grid
            from ..inr import render

            result.image = render(result.extras["inr"], grid, result.extras["frame"])
        else:
            from ..grid import mesh_to_grid_elements

            result.image = np.asarray(mesh_to_grid_elements(model.mesh, grid)(result.sigma))
    return result
