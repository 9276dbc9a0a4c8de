"""Difference and absolute imaging of real data sets through :func:`jaxeit.recon.reconstruct`.

Only usable measurements (``dataset.mask``) enter, currents are in A (see
:mod:`jaxeit.realdata.calibrate`), and the background comes from a
calibration of the empty-tank reference.

Modes
-----
``"difference"`` (needs ``dataset.reference``):

* methods that take a reference (``uses_reference`` of their options class:
  ``"one-step"``, ``"bp"``): linearised, Δσ = (JᵀJ + λR)⁻¹Jᵀ(v − v_ref)
  with J at the calibrated background σ_bg (``reference=`` of ``reconstruct``).
* every other method of :data:`jaxeit.recon.METHODS` (``"gn"``, ``"lm"``,
  ``"tv"``, ``"tv-log"``, ``"gn-gaussian"``, the INR methods): the *nonlinear difference model*:
  fit F(σ) to v* = F(σ_bg, z) + (v − v_ref), i.e. F(σ) − F(σ_bg) to the
  measured change, starting from (and, for GN, regularised towards) σ_bg
  (``sigma0``; for the INR methods, their background).
  Systematic errors common to both recordings (channel offsets and gains,
  electrode positions, contact impedances) cancel as in linear difference
  imaging, while the forward map stays nonlinear, so large contrasts
  (metal, plastic) are not bound to the first-order approximation.

``"absolute"``: fit F(σ) to v itself, starting from σ_bg with the calibrated z.

Measurement weighting
---------------------
``weights`` (M_usable,) scales each measurement row (and the data) before the
fit, i.e. a diagonal noise model: weights = 1/std. :func:`noise_weights` gives
the KTC2023 organisers' model std_m = sqrt((a·|v_ref,m|)² + (b·max|v_ref|)²)
with a = 0.05, b = 0.01, normalised to mean 1 (the regularisation weights of
:mod:`jaxeit.recon` are scaled by mean diag(JᵀJ), so an overall factor does
not matter).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ..forward import ForwardModel
from ..io.dataset import EITDataset
from ..mesh import Mesh
from ..protocol import Protocol
from ..recon import Result, reconstruct, resolve
from .calibrate import Calibration, calibrate, forward_model

__all__ = ["ImagingProblem", "prepare", "noise_weights", "weight_protocol", "reconstruct_dataset", "MODES"]

MODES = ("difference", "absolute")


def noise_weights(v_ref, relative: float = 0.05, floor: float = 0.01, *, normalise: bool = True) -> np.ndarray:
    """(M,) 1/std of the noise model std = sqrt((relative·|v_ref|)² + (floor·max|v_ref|)²).

    With ``normalise`` (default) the weights are scaled to mean 1 (only their
    ratios matter to methods whose regularisation is scaled by JᵀJ); without,
    they are 1/std in 1/V (``relative`` and ``floor`` as fractions).
    """
    v_ref = np.abs(np.asarray(v_ref, np.float64))
    std = np.sqrt((relative * v_ref) ** 2 + (floor * v_ref.max()) ** 2)
    w = 1.0 / std
    return w / w.mean() if normalise else w


def weight_protocol(protocol: Protocol, weights) -> Protocol:
    """The protocol with measurement row m scaled by ``weights[m]`` (a diagonal data weighting)."""
    w = np.asarray(weights, np.float64)
    if w.shape != (protocol.n_measurements,):
        raise ValueError(f"weights must have shape ({protocol.n_measurements},), got {w.shape}")
    return Protocol(protocol.currents, protocol.measurements * w[:, None], protocol.pattern)


@dataclasses.dataclass
class ImagingProblem:
    """A data set prepared for reconstruction on a mesh.

    Attributes:
        model: weighted forward model of the usable measurements (currents in A).
        v: (M,) weighted usable target voltages.
        v_ref: (M,) weighted usable reference voltages, or None.
        calibration: the background (σ_bg, z) used.
        weights: (M,) the measurement weights (ones when unweighted).
        dataset: the source data set.
    """

    model: ForwardModel
    v: np.ndarray
    v_ref: np.ndarray | None
    calibration: Calibration
    weights: np.ndarray
    dataset: EITDataset

    @property
    def sigma_bg(self) -> float:
        return self.calibration.sigma

    def background(self) -> np.ndarray:
        """(E,) calibrated homogeneous conductivity."""
        return np.full(self.model.n_elements, self.calibration.sigma)

    def difference_data(self) -> np.ndarray:
        """v* = F(σ_bg, z) + (v − v_ref): target data of the nonlinear difference model (weighted)."""
        if self.v_ref is None:
            raise ValueError("difference imaging needs reference voltages")
        f_bg = np.asarray(self.model.voltages(jnp.asarray(self.background())))
        return f_bg + (self.v - self.v_ref)


def prepare(dataset: EITDataset, mesh: Mesh, *, calibration: Calibration | None = None,
            weights: str | np.ndarray | None = None, per_electrode: bool = False) -> ImagingProblem:
    """Build the weighted model and data of ``dataset`` on ``mesh``.

    Args:
        calibration: background and contact impedance; default: :func:`calibrate`
            on the usable reference (or, without one, on the target voltages).
        weights: None (unweighted), ``"ktc"`` (:func:`noise_weights` of the
            usable reference) or an (M_usable,) array.
        per_electrode: calibrate one contact impedance per electrode.
    """
    mask = dataset.mask
    v = dataset.voltages[mask]
    v_ref = None if dataset.reference is None else dataset.reference[mask]
    base = forward_model(dataset, mesh)
    if calibration is None:
        calibration = calibrate(base, v_ref if v_ref is not None else v, per_electrode=per_electrode,
                                electrode_width=dataset.electrode_width)
    if weights is None:
        w = np.ones(len(v))
    elif isinstance(weights, str):
        if weights != "ktc":
            raise ValueError(f"weights must be None, 'ktc' or an array, got {weights!r}")
        w = noise_weights(v_ref if v_ref is not None else v)
    else:
        w = np.asarray(weights, np.float64)
    model = ForwardModel(mesh, weight_protocol(base.protocol, w), contact_impedance=calibration.contact_impedance,
                         solver=base.solver)
    return ImagingProblem(model=model, v=w * v, v_ref=None if v_ref is None else w * v_ref,
                          calibration=calibration, weights=w, dataset=dataset)


def reconstruct_dataset(dataset: EITDataset | ImagingProblem, mesh: Mesh | None = None, method="tv", *,
                        mode: str = "difference", calibration: Calibration | None = None,
                        weights: str | np.ndarray | None = None, grid=None, **options) -> Result:
    """Reconstruct a real data set with :func:`jaxeit.recon.reconstruct` (see the module notes).

    Args:
        dataset: an :class:`EITDataset` (then ``mesh`` is required) or a prepared
            :class:`ImagingProblem` (reuse it across methods to calibrate once).
        method: a name of :data:`jaxeit.recon.METHODS` or an options object; INR
            methods are fitted to the weighted data with the calibrated background.
        mode: ``"difference"`` or ``"absolute"``.
        calibration, weights: see :func:`prepare` (ignored for a prepared problem).
        grid, **options: passed to :func:`reconstruct` (e.g. ``alpha``, ``prior``).
            ``sigma0`` defaults to the calibrated background.

    Returns:
        The :class:`~jaxeit.recon.Result`; ``sigma`` is the reconstructed
        conductivity (S/m of the 2D model), ``background`` the calibrated σ_bg
        (for ``"gn-gaussian"``: times its fitted drift).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    spec = resolve(method, **options)
    if isinstance(dataset, ImagingProblem):
        prob = dataset
    else:
        if mesh is None:
            raise ValueError("give the reconstruction mesh (e.g. jaxeit.realdata.ktc_mesh())")
        prob = prepare(dataset, mesh, calibration=calibration, weights=weights)
    if spec.sigma0 is None:
        spec = spec.replace(sigma0=prob.sigma_bg)
    if mode == "difference":
        if prob.v_ref is None:
            raise ValueError(f"{prob.dataset.name}: difference imaging needs a reference; use mode='absolute'")
        if spec.uses_reference != "never":
            result = reconstruct(prob.model, prob.v, spec, reference=prob.v_ref, grid=grid)
        else:
            result = reconstruct(prob.model, prob.difference_data(), spec, grid=grid)
    else:
        if spec.uses_reference == "required":
            raise ValueError(f"{spec.name} is a difference method: use mode='difference' with a reference")
        result = reconstruct(prob.model, prob.v, spec, grid=grid)
    if spec.name != "gn-gaussian":  # its background carries the fitted drift
        result.background = prob.sigma_bg
    result.options = {**result.options, "mode": mode}
    return result
