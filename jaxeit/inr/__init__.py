"""Implicit neural representations for EIT (Diff-INR §2.2, §3.2, §4.3–4.4)."""

from .bandwidth import DEFAULT_KAPPA, bandwidth_for_mesh, mesh_resolution
from .fit import INRConfig, fit_inr, inr_reconstruct, render
from .model import INR, FourierFeatures
from .regularizers import Regularizer, total_variation

__all__ = ["INR", "FourierFeatures", "INRConfig", "fit_inr", "inr_reconstruct", "render", "bandwidth_for_mesh",
           "mesh_resolution", "DEFAULT_KAPPA", "Regularizer", "total_variation"]
