"""Difference and absolute imaging of real data sets through :func:`jaxeit.recon.reconstruct`.

Only usable measurements (``dataset.mask``) enter, currents are in A (see
:mod:`jaxeit.realdata.calibrate`), and the background comes from a
calibration of the empty-tank reference.

Modes
-----
``"difference"`` (needs ``dataset.reference``):

* method ``"one-step"`` (and ``"bp"``): linearised, Δσ = (JᵀJ + λR)⁻¹Jᵀ(v − v_ref)
  with J at the calibrated background σ_bg (``reference=`` of ``reconstruct``).
* methods ``"gn"``, ``"lm"``, ``"tv"``: the *nonlinear difference model*:
  fit F(σ) to v* = F(σ_bg, z) + (v − v_ref), i.e. F(σ) − F(σ_bg) to the
  measured change, starting from (and, for GN, regularised towards) σ_bg.
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
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..forward import ForwardModel
from ..io.dataset import EITDataset
from ..mesh import Mesh
from ..protocol import Protocol
from ..recon import Result, reconstruct
from ..recon.operators import element_adjacency
from .calibrate import Calibration, calibrate, forward_model

__all__ = ["ImagingProblem", "prepare", "noise_weights", "weight_protocol", "reconstruct_dataset", "tv_log",
           "gn_gaussian", "smoothness_prior", "MODES", "METHODS"]

MODES = ("difference", "absolute")
#: methods of :func:`reconstruct_dataset`: those of :func:`jaxeit.recon.reconstruct` plus ``"tv-log"``
METHODS = ("one-step", "gn", "lm", "tv", "bp", "tv-log", "inr", "inr+tv", "diff-inr")
#: the INR methods start from the calibrated background through ``background`` (the others through ``sigma0``)
INR_METHODS = ("inr", "inr+tv", "diff-inr")


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


def reconstruct_dataset(dataset: EITDataset | ImagingProblem, mesh: Mesh | None = None, method: str = "tv", *,
                        mode: str = "difference", calibration: Calibration | None = None,
                        weights: str | np.ndarray | None = None, grid=None, **options) -> Result:
    """Reconstruct a real data set with :func:`jaxeit.recon.reconstruct` (see the module notes).

    Args:
        dataset: an :class:`EITDataset` (then ``mesh`` is required) or a prepared
            :class:`ImagingProblem` (reuse it across methods to calibrate once).
        method: ``"one-step"``, ``"gn"``, ``"lm"``, ``"tv"``, ``"bp"``, ``"tv-log"`` or an INR
            method (``"inr"``, ``"inr+tv"``, ``"diff-inr"``: fitted to the weighted data, with
            the calibrated background as the INR's background).
        mode: ``"difference"`` or ``"absolute"``.
        calibration, weights: see :func:`prepare` (ignored for a prepared problem).
        grid, **options: passed to :func:`reconstruct` (e.g. ``alpha``, ``prior``).
            ``sigma0`` defaults to the calibrated background.

    Returns:
        The :class:`~jaxeit.recon.Result`; ``sigma`` is the reconstructed
        conductivity (S/m of the 2D model), ``background`` the calibrated σ_bg.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if isinstance(dataset, ImagingProblem):
        prob = dataset
    else:
        if mesh is None:
            raise ValueError("give the reconstruction mesh (e.g. jaxeit.realdata.ktc_mesh())")
        prob = prepare(dataset, mesh, calibration=calibration, weights=weights)
    if method == "tv-log":
        data = prob.difference_data() if mode == "difference" else prob.v
        if mode == "difference" and prob.v_ref is None:
            raise ValueError(f"{prob.dataset.name}: difference imaging needs a reference; use mode='absolute'")
        result = tv_log(prob.model, data, sigma0=options.pop("sigma0", prob.sigma_bg), **options)
        if grid is not None:
            from ..grid import mesh_to_grid_elements

            result.image = np.asarray(mesh_to_grid_elements(prob.model.mesh, grid)(result.sigma))
        result.options = {**result.options, "mode": mode}
        return result
    options.setdefault("background" if method in INR_METHODS else "sigma0", prob.sigma_bg)
    if mode == "difference":
        if prob.v_ref is None:
            raise ValueError(f"{prob.dataset.name}: difference imaging needs a reference; use mode='absolute'")
        if method in ("one-step", "bp"):
            result = reconstruct(prob.model, prob.v, method, reference=prob.v_ref, grid=grid, **options)
        else:
            result = reconstruct(prob.model, prob.difference_data(), method, grid=grid, **options)
    else:
        if method == "bp":
            raise ValueError("back-projection is a difference method")
        result = reconstruct(prob.model, prob.v, method, grid=grid, **options)
    result.background = prob.sigma_bg
    result.options = {**result.options, "mode": mode}
    return result


# -- total variation of log σ (lagged-diffusivity Gauss–Newton) ------------------------------

_STEPS = jnp.array([1.0, 0.5, 0.25, 0.1, 0.03])


def _tv_objective(model, s, v, pairs, lengths, alpha, beta):
    r = model.voltages(jnp.exp(s)) - v
    d = s[pairs[:, 0]] - s[pairs[:, 1]]
    return 0.5 * jnp.dot(r, r) + alpha * jnp.sum(lengths * jnp.sqrt(d * d + beta)), r


@jax.jit
def _tv_log_step(model, s, v, pairs, lengths, alpha, beta):
    """One lagged-diffusivity GN step on s = log σ with a vectorised line search."""
    n = s.shape[0]
    sigma = jnp.exp(s)
    jac = model.jacobian(sigma) * sigma[None, :]
    f0, r = _tv_objective(model, s, v, pairs, lengths, alpha, beta)
    a, b = pairs[:, 0], pairs[:, 1]
    d = s[a] - s[b]
    eta = jnp.sqrt(d * d + beta)
    w = alpha * lengths / eta  # IRLS weights of the smoothed |jump|
    grad_tv = jnp.zeros(n).at[a].add(w * d).at[b].add(-w * d)
    hess = (jac.T @ jac).at[a, a].add(w).at[b, b].add(w).at[a, b].add(-w).at[b, a].add(-w)
    grad = jac.T @ r + grad_tv
    hess = hess + 1e-10 * jnp.trace(hess) / n * jnp.eye(n)
    delta = -jax.scipy.linalg.solve(hess, grad, assume_a="pos")
    delta = delta * jnp.minimum(1.0, 2.0 / jnp.max(jnp.abs(delta)))  # at most e² per element and step
    cand = s[None, :] + _STEPS[:, None] * delta[None, :]
    f_cand, r_cand = jax.vmap(lambda c: _tv_objective(model, c, v, pairs, lengths, alpha, beta))(cand)
    best = jnp.argmin(f_cand)
    return cand[best], f_cand[best], r_cand[best], _STEPS[best], f0


def tv_log(model: ForwardModel, v, *, sigma0, alpha: float = 1e-2, beta: float = 1e-4, max_iter: int = 12,
           tol: float = 1e-4, s_bounds=(-7.0, 7.0)) -> Result:
    """Total-variation reconstruction of log σ by lagged-diffusivity Gauss–Newton.

    Minimises ½‖F(e^s) − v‖² + α Σ_k l_k √((s_a − s_b)² + β) over s = log σ
    (k over interior edges between elements a and b, l_k the edge length),
    from s = log σ0. TV acts on the log-contrast, so a conductive inclusion
    (metal, σ up by orders of magnitude) and a resistive one (plastic) cost the
    same for the same relative jump, and constants (a uniform drift of the
    water's conductivity between two recordings) are free. α = alpha ·
    mean diag(JᵀJ)·R³/Ā² with J = ∂F/∂s at σ0, R the mesh radius (half its
    extent) and Ā the mean element area: diag(JᵀJ)/Ā² is the squared
    sensitivity per unit area, independent of the mesh density, so the
    dimensionless ``alpha`` weighs a region's squared data effect (∝ area²)
    against its TV (∝ perimeter) in units of R, the same on any mesh. β smooths |·| at jumps of ~√β
    (1e-4: 1 % of the log-contrast). Each iteration solves the IRLS normal
    equations (JᵀJ + α DᵀWD) with a five-step line search on the objective.

    Returns a :class:`Result` with σ = e^s (clipped to ``s_bounds`` around log σ0).
    """
    t0 = time.perf_counter()
    v = jnp.asarray(v, jnp.float64)
    n = model.n_elements
    s = jnp.full(n, jnp.log(jnp.asarray(np.mean(sigma0), jnp.float64))) if np.ndim(sigma0) == 0 \
        else jnp.log(jnp.asarray(sigma0, jnp.float64))
    s_ref = float(np.mean(np.asarray(s)))
    pairs, lengths = element_adjacency(model.mesh)
    sigma = jnp.exp(s)
    jac0 = model.jacobian(sigma) * sigma[None, :]
    area = float(np.mean(model.mesh.areas()))
    radius = 0.5 * float(np.max(np.ptp(model.mesh.nodes, axis=0)))
    alpha_eff = alpha * float(jnp.mean(jnp.sum(jac0 ** 2, axis=0))) * radius ** 3 / area ** 2
    pairs_j, lengths_j = jnp.asarray(pairs), jnp.asarray(lengths)
    hist = {"residual": [], "objective": [], "step": []}
    vnorm = float(jnp.linalg.norm(v))
    it = 0
    for it in range(1, max_iter + 1):
        s_new, f_new, res, step, f0 = _tv_log_step(model, s, v, pairs_j, lengths_j, alpha_eff, beta)
        f_new, f0 = float(f_new), float(f0)
        if not f_new < f0:
            break
        s = jnp.clip(s_new, s_ref + s_bounds[0], s_ref + s_bounds[1])
        hist["objective"].append(f_new)
        hist["residual"].append(float(jnp.linalg.norm(res)) / vnorm)
        hist["step"].append(float(step))
        if f0 - f_new < tol * f0:
            break
    return Result(sigma=np.asarray(jnp.exp(s)), method="tv-log", history=hist, n_iter=it,
                  wall_time=time.perf_counter() - t0, background=float(np.exp(s_ref)),
                  options=dict(alpha=alpha, beta=beta, max_iter=max_iter, alpha_effective=alpha_eff))


# -- Gauss–Newton with a Gaussian smoothness prior (MAP) --------------------------------------

def smoothness_prior(mesh: Mesh, corrlength: float = 0.115, variance: float = 0.05 ** 2,
                     nugget: float = 1e-9) -> np.ndarray:
    """(E, E) L with LᵀL = Γ⁻¹ for the KTC2023 organisers' Gaussian smoothness prior on element centroids.

    Γ_ij = (variance − nugget)·exp(−|x_i − x_j|²/(2b²)) + nugget·δ_ij with
    b = corrlength/√(−2 ln 0.01), i.e. correlation 0.01 at distance
    ``corrlength`` (their ``SMPrior``, squared-distance covariance, evaluated at
    element centroids instead of nodes).
    """
    import math

    c = mesh.centroids()
    d2 = np.sum((c[:, None, :] - c[None, :, :]) ** 2, axis=-1)
    b2 = -corrlength ** 2 / (2 * math.log(0.01))
    gamma = (variance - nugget) * np.exp(-d2 / (2 * b2)) + nugget * np.eye(len(c))
    chol = np.linalg.cholesky(gamma)  # Γ = C Cᵀ → Γ⁻¹ = C⁻ᵀC⁻¹, L = C⁻¹
    return np.linalg.solve(chol, np.eye(len(c)))


def _gn_map_objective(model, theta, v, sigma_bg, prec):
    s, c = theta[:-1], theta[-1]
    r = model.voltages(sigma_bg * jnp.exp(s + c)) - v
    return 0.5 * jnp.dot(r, r) + 0.5 * jnp.dot(s, prec @ s), r


@jax.jit
def _gn_map_step(model, theta, v, sigma_bg, prec, drift):
    n = theta.shape[0] - 1
    s, c = theta[:-1], theta[-1]
    sigma = sigma_bg * jnp.exp(s + c)
    js = model.jacobian(sigma) * sigma[None, :]
    jac = jnp.concatenate([js, drift * jnp.sum(js, axis=1, keepdims=True)], axis=1)  # ∂/∂c = Σ_e ∂/∂s_e
    f0, r = _gn_map_objective(model, theta, v, sigma_bg, prec)
    # without drift the c-row is the identity and its gradient zero: c stays 0
    h_prior = jnp.zeros((n + 1, n + 1)).at[:n, :n].set(prec).at[n, n].set(1.0 - drift)
    hess = jac.T @ jac + h_prior
    grad = jac.T @ r + h_prior @ theta
    hess = hess + 1e-10 * jnp.trace(hess) / (n + 1) * jnp.eye(n + 1)
    delta = -jax.scipy.linalg.solve(hess, grad, assume_a="pos")
    delta = delta * jnp.minimum(1.0, 2.0 / jnp.max(jnp.abs(delta)))
    cand = theta[None, :] + _STEPS[:, None] * delta[None, :]
    f_cand, r_cand = jax.vmap(lambda t: _gn_map_objective(model, t, v, sigma_bg, prec))(cand)
    best = jnp.argmin(f_cand)
    return cand[best], f_cand[best], r_cand[best], _STEPS[best], f0


def gn_gaussian(model: ForwardModel, v, *, sigma0: float, prior: np.ndarray, drift: bool = True,
                max_iter: int = 6, tol: float = 1e-4) -> Result:
    """MAP estimate with a Gaussian prior on the log-contrast, by Gauss–Newton.

    σ = σ0·exp(s + c) with s ~ N(0, Γ) (``prior`` = L, LᵀL = Γ⁻¹, e.g.
    :func:`smoothness_prior`) and, with ``drift``, one free scalar c: a
    uniform change of the water's conductivity between the reference and the
    target recordings (unpenalised). Minimises ½‖F(σ) − v‖² + ½‖Ls‖², so
    ``model`` and ``v`` must be whitened (rows scaled by 1/noise std, e.g.
    :func:`prepare` with absolute ``weights``) for this to be the MAP.
    Each iteration: Jacobian, normal equations, five-step line search.

    Returns a :class:`Result` whose ``sigma`` includes the drift; the drift
    itself is ``options["drift_log"]`` (c) and σ0·e^c is ``background``.
    """
    t0 = time.perf_counter()
    v = jnp.asarray(v, jnp.float64)
    n = model.n_elements
    L = jnp.asarray(prior, jnp.float64)
    if L.shape != (n, n):
        raise ValueError(f"prior must be ({n}, {n}), got {L.shape}")
    prec = L.T @ L
    theta = jnp.zeros(n + 1)
    sigma_bg = float(np.mean(sigma0))
    flag = jnp.asarray(1.0 if drift else 0.0)
    hist = {"residual": [], "objective": [], "step": []}
    vnorm = float(jnp.linalg.norm(v))
    it = 0
    for it in range(1, max_iter + 1):
        new, f_new, res, step, f0 = _gn_map_step(model, theta, v, sigma_bg, prec, flag)
        f_new, f0 = float(f_new), float(f0)
        if not f_new < f0:
            break
        theta = new
        hist["objective"].append(f_new)
        hist["residual"].append(float(jnp.linalg.norm(res)) / vnorm)
        hist["step"].append(float(step))
        if f0 - f_new < tol * f0:
            break
    c = float(theta[-1])
    return Result(sigma=np.asarray(sigma_bg * jnp.exp(theta[:-1] + theta[-1])), method="gn-gaussian",
                  history=hist, n_iter=it, wall_time=time.perf_counter() - t0,
                  background=sigma_bg * float(np.exp(c)),
                  options=dict(drift=drift, drift_log=c, max_iter=max_iter))
