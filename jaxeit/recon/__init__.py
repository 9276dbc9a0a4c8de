"""Every reconstruction method, one registry and one calling shape: ``reconstruct(model, v, method, **options)``.

Modules: :mod:`~jaxeit.recon.linear` (the one linearised operator and the
prior matrices), :mod:`~jaxeit.recon.driver` (the one iterative driver),
:mod:`~jaxeit.recon.classical` (one-step, GN, LM, TV, TV of log σ, MAP-GN,
back-projection), :mod:`~jaxeit.recon.inr` (implicit neural representations),
:mod:`~jaxeit.recon.diffinr` (Diff-INR), :mod:`~jaxeit.recon.greit` (GREIT), :mod:`~jaxeit.recon.registry`
(:data:`METHODS`, :func:`reconstruct`) and :mod:`~jaxeit.recon.result`.
"""

from __future__ import annotations

from .classical import (TV, BackProjection, GaussNewton, GNGaussian, LevenbergMarquardt, OneStep, TVLog,
                        fit_homogeneous)
from .diffinr import DiffINR
from .greit import GREIT
from .inr.fit import INRTV, INRFit
from .linear import LinearGN, prior_matrix, smoothness_prior
from .method import Method
from .registry import METHODS, check_signal, describe, reconstruct, resolve
from .result import STATUSES, Result

__all__ = ["reconstruct", "resolve", "describe", "check_signal", "Result", "STATUSES", "METHODS", "Method", "fit_homogeneous",
           "OneStep", "GaussNewton", "LevenbergMarquardt", "TV", "BackProjection", "TVLog", "GNGaussian", "INRFit",
           "INRTV", "DiffINR", "GREIT", "LinearGN", "prior_matrix", "smoothness_prior"]
