"""Implicit neural representations for EIT (Diff-INR §2.2, §3.2, §4.3–4.4)."""

from .bandwidth import DEFAULT_KAPPA, bandwidth_for_mesh, mesh_resolution
from .fit import INRTV, INRConfig, INRFit, domain_grid, fit_inr, render
from .model import INR, FourierFeatures
from .regularizers import Regularizer, total_variation

__all__ = ["INR", "FourierFeatures", "INRConfig", "INRFit", "INRTV", "fit_inr", "render", "domain_grid",
           "bandwidth_for_mesh", "mesh_resolution", "DEFAULT_KAPPA", "Regularizer", "total_variation"]
