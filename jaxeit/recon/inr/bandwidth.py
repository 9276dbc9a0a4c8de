"""Mesh-adaptive bandwidth of the random Fourier features (Diff-INR §4.3).

The paper sets σ_b from the mesh's mean edge length and element count with one
hyperparameter; its eq. (18) is lost from our copy. Our rule: a fraction κ of
the mesh's Nyquist frequency in normalised coordinates,

    σ_b = κ · 1 / (2 h),   h = sqrt(h̄ · h_E),

where h̄ is the mean edge length and h_E = sqrt(2|Ω| / (√3 N_E)) the edge of an
equilateral triangle when |Ω| is split into N_E equal elements, both in the
normalised frame. A mesh cannot carry frequencies above 1/(2h); κ < 1 keeps the
INR below that limit, so the same κ means the same fraction of what each mesh
resolves. (h̄ alone is biased by the refinement at electrodes, h_E alone by
grading; the geometric mean uses both, as the paper's rule does.)
"""

from __future__ import annotations

import numpy as np

from ...mesh import Mesh
from .model import domain_frame

__all__ = ["mesh_resolution", "bandwidth_for_mesh", "DEFAULT_KAPPA"]

DEFAULT_KAPPA = 0.15  # chosen by the κ sweep in benchmarks/inr.py


def mesh_resolution(mesh: Mesh) -> float:
    """h = sqrt(h̄·h_E) in the normalised frame (see the module docstring)."""
    _, scale = domain_frame(mesh)
    h_mean = mesh.mean_edge_length() / scale
    area = mesh.areas().sum() / scale**2
    h_elem = np.sqrt(2 * area / (np.sqrt(3) * mesh.n_elements))
    return float(np.sqrt(h_mean * h_elem))


def bandwidth_for_mesh(mesh: Mesh, kappa: float = DEFAULT_KAPPA) -> float:
    """σ_b = κ / (2h) for ``mesh``; κ > 0."""
    if kappa <= 0:
        raise ValueError(f"kappa must be positive, got {kappa}")
    return float(kappa / (2 * mesh_resolution(mesh)))
