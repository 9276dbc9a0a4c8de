"""Classical reconstructions: one-step linearised, GN / LM, TV (PD-IPM), TV of log σ, MAP-GN, back-projection.

All work on element conductivities of a :class:`~jaxeit.ForwardModel`'s mesh.
Each method is a frozen options class (:class:`~jaxeit.recon.method.Method`);
the iterative ones supply a pure step to the one driver
(:func:`jaxeit.recon.driver.iterate`): the forward solve, the Jacobian by the
adjoint method, the regularised normal equations and a vectorised line search
run inside one ``lax.while_loop``, so no FEM runs in Python.

Regularisation weights are given as dimensionless ``alpha`` and scaled so the
same value suits any current amplitude, background level and mesh density:

* quadratic priors (one-step, GN, LM): λ = alpha · mean diag(JᵀJ) / mean diag(R);
* TV: α = alpha · σ_bg · mean diag(JᵀJ) / h³, with h the mean edge length
  (the data gradient of an element scales as its area, the TV gradient as an
  edge length; see :class:`TV`);
* TV of log σ: α = alpha · mean diag(J_sᵀJ_s)·R³/Ā² (see :class:`TVLog`).
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..forward import ForwardModel
from .driver import CONTINUE, CONVERGED, LINE_SEARCH_FAILED, iterate, line_search_status
from .linear import PRIORS, LinearGN, prior_triplets, smoothness_prior
from .method import Iterative, Method, sigma_start
from .normal import SparsePattern, solve_normal
from .operators import element_adjacency
from .result import Result

__all__ = ["fit_homogeneous", "OneStep", "GaussNewton", "LevenbergMarquardt", "TV", "BackProjection", "TVLog",
           "GNGaussian", "gauss_newton"]

_LINE_SEARCH_STEPS = jnp.array([1.0, 0.5, 0.25, 0.1, 0.03])


# -- helpers -----------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("iterations",))
def _fit_log_scale(model: ForwardModel, v, s0, iterations: int = 15):
    ones = jnp.ones(model.n_elements)

    def body(_, s):
        f = lambda s: model.voltages(jnp.exp(s) * ones)  # noqa: E731
        r, d = jax.jvp(f, (s,), (jnp.ones_like(s),))
        return s - jnp.dot(d, r - v) / jnp.dot(d, d)

    return jax.lax.fori_loop(0, iterations, body, s0)


def fit_homogeneous(model: ForwardModel, v, sigma_init: float = 1.0) -> float:
    """Best constant conductivity: argmin_c ‖F(c·1) − v‖₂ (Gauss–Newton in log c). Returns a float."""
    s = _fit_log_scale(model, jnp.asarray(v), jnp.log(jnp.asarray(sigma_init, jnp.float64)))
    c = float(jnp.exp(s))
    if not np.isfinite(c) or c <= 0:
        raise ValueError("could not fit a homogeneous conductivity: check the sign and units of the voltages")
    return c


def _check_prior(name, prior):
    if prior not in PRIORS:
        raise ValueError(f"{name}: prior must be one of {PRIORS}, got {prior!r}")


# -- one-step linearised -----------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class OneStep(Method):
    """One-step linearised reconstruction σ = σ₀ + (JᵀJ + λR)⁻¹Jᵀ Δv (:class:`~jaxeit.recon.linear.LinearGN`).

    Difference imaging when ``reference`` (voltages of a reference state) is
    given: Δv = v − reference and σ₀ the homogeneous fit of the reference;
    absolute imaging otherwise: Δv = v − F(σ₀) with σ₀ the homogeneous fit of v.
    ``prior``: a name of :data:`jaxeit.recon.linear.PRIORS` (default NOSER,
    Cheney et al. 1990). Default ``alpha`` chosen on simulated 16-electrode
    data at 40–50 dB (benchmarks/classical.py).
    """

    name = "one-step"
    description = "one-step linearised GN with a quadratic prior (difference with `reference`, else absolute)"
    uses_reference = "optional"
    _positive = ("alpha",)

    alpha: float = 1.0
    prior: str = "noser"
    sigma0: float | np.ndarray | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_prior(self.name, self.prior)

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        base = reference if reference is not None else v
        _, start = sigma_start(model, base, self.sigma0, fit_homogeneous)
        op = LinearGN.build(model, background=np.asarray(start), param="linear", prior=self.prior, alpha=self.alpha)
        dv = jnp.asarray(v) - (jnp.asarray(reference) if reference is not None else jnp.asarray(op.v_bg))
        sigma = start + op.solve(dv)
        hist = {"residual": [float(jnp.linalg.norm(dv) / jnp.linalg.norm(v))]}
        return Result(sigma=np.asarray(sigma), method=self.name, history=hist, n_iter=1, status="done",
                      wall_time=time.perf_counter() - t0, background=float(np.mean(np.asarray(start))),
                      options=dict(self.options(), difference=reference is not None))


# -- Gauss–Newton / Levenberg–Marquardt ----------------------------------------------

def _objective(model, s, v, prior, r, lam, s_prior):
    res = model.voltages(jnp.exp(s)) - v
    d = s - s_prior
    return 0.5 * jnp.dot(res, res) + 0.5 * lam * jnp.dot(d, prior.matvec(r, d)), res


def _gn_iteration(state, model, v, prior, r, lam, s_prior, v_norm, tol, lm):
    """One regularised Gauss–Newton step on s = log σ with a vectorised line search.

    Without ``lm`` a step that lowers no trial objective ends the run
    (line search failed); with ``lm`` (Levenberg–Marquardt) μ·diag(JᵀJ) damps the
    normal matrix, μ ÷ 3 after a decrease and × 4 (step rejected) otherwise. ``prior`` is the
    :class:`~jaxeit.recon.normal.SparsePattern` of R and ``r`` its values; the normal equations
    are solved without forming JᵀJ (:func:`~jaxeit.recon.normal.solve_normal`).
    """
    s, mu, last_res = state
    sigma = jnp.exp(s)
    jac = model.jacobian(sigma) * sigma[None, :]  # chain rule for log σ
    f0, res = _objective(model, s, v, prior, r, lam, s_prior)
    grad = jac.T @ res + lam * prior.matvec(r, s - s_prior)
    damping = mu * jnp.sum(jac**2, axis=0)  # μ·diag(JᵀJ)
    delta = -solve_normal(jac, prior, prior.values(jnp.zeros(prior.slot.shape[0]), damping) + lam * r, grad)
    # positivity is automatic in log σ; bound the step so no element changes by more than e^3
    delta = delta * jnp.minimum(1.0, 3.0 / jnp.max(jnp.abs(delta)))
    cand = s[None, :] + _LINE_SEARCH_STEPS[:, None] * delta[None, :]
    f_cand, res_cand = jax.vmap(lambda c: _objective(model, c, v, prior, r, lam, s_prior))(cand)
    best = jnp.argmin(f_cand)
    f_new = f_cand[best]
    improved = f_new < f0
    res_norm = jnp.where(improved, jnp.linalg.norm(res_cand[best]) / v_norm, last_res)
    mu_next = jnp.where(lm, jnp.where(improved, jnp.maximum(mu / 3.0, 1e-8), mu * 4.0), mu)
    status = jnp.where(lm, jnp.where(improved & (f0 - f_new < tol * f0), CONVERGED, CONTINUE),
                       line_search_status(f0, f_new, tol)).astype(jnp.int32)
    info = {"objective": jnp.where(improved, f_new, f0), "residual": res_norm,
            "step": jnp.where(improved, _LINE_SEARCH_STEPS[best], 0.0)}
    return (jnp.where(improved, cand[best], s), mu_next, res_norm), info, status


def gauss_newton(model: ForwardModel, v, *, sigma0=None, alpha: float = 10.0, prior: str = "laplace",
                 max_iter: int = 15, tol: float = 1e-4, lm: bool = False, progress: bool = False,
                 name: str = "gn") -> Result:
    """Iterative regularised Gauss–Newton (absolute imaging), DGM comparison paper eqs. 5–9.

    Minimises ½‖F(σ) − v‖² + ½λ‖log σ − log σ₀‖²_R over log σ (so σ stays
    positive) with σ₀ the homogeneous fit (or ``sigma0``); λ is fixed from the
    starting point's Jacobian, so every iteration minimises the same objective.
    The line search tries the steps 1, ½, ¼, 0.1, 0.03 in one vectorised
    evaluation and keeps the best; ``lm`` adds Levenberg–Marquardt damping
    (μ₀ = 0.01). Stops when the objective's relative decrease is below ``tol``,
    no step lowers it (GN), or after ``max_iter``. The implementation of
    :class:`GaussNewton` and :class:`LevenbergMarquardt`.
    """
    t0 = time.perf_counter()
    v = jnp.asarray(v)
    _, start = sigma_start(model, v, sigma0, fit_homogeneous)
    s = jnp.log(start)
    jac0 = model.jacobian(start) * start[None, :]
    jtj_diag = jnp.sum(jac0**2, axis=0)
    rows, cols, values = prior_triplets(model.mesh, prior, np.asarray(jtj_diag))
    pattern = SparsePattern.from_triplets(rows, cols, model.n_elements, model.solver)
    r_values = pattern.values(jnp.asarray(values))
    lam = alpha * jnp.mean(jtj_diag) / jnp.mean(pattern.diagonal(r_values))
    state = (s, jnp.asarray(1e-2 if lm else 0.0), jnp.asarray(jnp.nan))
    run = iterate(_gn_iteration, state,
                  (model, v, pattern, r_values, lam, s, jnp.linalg.norm(v), tol, jnp.asarray(lm)),
                  max_iter=max_iter, progress=progress, desc="LM" if lm else "GN")
    return Result(sigma=np.asarray(jnp.exp(run.state[0])), method=name, history=run.history, n_iter=run.n_iter,
                  status=run.status, wall_time=time.perf_counter() - t0,
                  background=float(np.exp(np.mean(np.asarray(s)))),
                  options=dict(sigma0=sigma0, alpha=alpha, prior=prior, max_iter=max_iter, tol=tol))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GaussNewton(Iterative):
    """Iterative regularised Gauss–Newton on log σ with a line search (absolute imaging); see :func:`gauss_newton`."""

    name = "gn"
    description = "iterative regularised Gauss–Newton on log σ with line search (absolute)"
    _positive = ("alpha", "tol")

    alpha: float = 10.0
    prior: str = "laplace"
    max_iter: int = 15
    tol: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        _check_prior(self.name, self.prior)

    def run(self, model, v, reference=None) -> Result:
        return gauss_newton(model, v, sigma0=self.sigma0, alpha=self.alpha, prior=self.prior,
                            max_iter=self.max_iter, tol=self.tol, lm=self.name == "lm", progress=self.progress,
                            name=self.name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevenbergMarquardt(GaussNewton):
    """Levenberg–Marquardt on log σ (absolute imaging): :func:`gauss_newton` with adaptive damping."""

    name = "lm"
    description = "Levenberg–Marquardt on log σ (absolute)"


# -- total variation: primal–dual interior point ---------------------------------------

def _tv_iteration(state, model, v, pairs, lengths, laplacian, alpha_tv, floor, v_norm, tol, beta_min,
                  beta_factor):
    """One PD-IPM iteration (Borsic, Graham, Adler, Lionheart 2010) for
    min_σ ½‖F(σ) − v‖² + α Σ_k l_k |σ_a − σ_b|, dual x ∈ [−1, 1] per interior edge,
    then β ← max(β·factor, β_min). ``laplacian`` is the :class:`~jaxeit.recon.normal.SparsePattern`
    of the weighted element-adjacency Laplacian (triplets aa, bb, ab, ba per pair); the normal
    equations are solved without forming JᵀJ (:func:`~jaxeit.recon.normal.solve_normal`)."""
    sigma, x, beta = state
    n = sigma.shape[0]
    diff = lambda s: lengths * (s[pairs[:, 0]] - s[pairs[:, 1]])  # noqa: E731
    diff_t = lambda y: (jnp.zeros(n).at[pairs[:, 0]].add(lengths * y)  # noqa: E731
                        .at[pairs[:, 1]].add(-lengths * y))
    jac = model.jacobian(sigma)
    res = model.voltages(sigma) - v
    y = diff(sigma)
    eta = jnp.sqrt(y**2 + beta)
    k = 1.0 - x * y / eta
    # Dᵀ diag(k/η) D is a weighted graph Laplacian on the element adjacency: scatter it
    w = alpha_tv * (k / eta) * lengths**2
    grad = jac.T @ res + alpha_tv * diff_t(x)
    ridge = 1e-12 * (jnp.sum(jac**2) + 2.0 * jnp.sum(w)) / n   # 1e-12 of the mean diagonal: a safety ridge
    delta = -solve_normal(jac, laplacian, laplacian.values(jnp.concatenate([w, w, -w, -w]), ridge), grad)
    dx = -x + y / eta + (k / eta) * diff(delta)
    # largest dual step keeping |x| ≤ 1 (the dual feasibility rule of PD-IPM)
    lim = jnp.where(dx > 0, (1.0 - x) / jnp.maximum(dx, 1e-300),
                    jnp.where(dx < 0, (-1.0 - x) / jnp.minimum(dx, -1e-300), jnp.inf))
    tau_x = jnp.minimum(1.0, 0.99 * jnp.min(lim))

    # primal line search on the smoothed TV objective, with a positivity floor
    def objective(s):
        r = model.voltages(s) - v
        return 0.5 * jnp.dot(r, r) + alpha_tv * jnp.sum(jnp.sqrt(diff(s) ** 2 + beta)), r

    cand = jnp.maximum(sigma[None, :] + _LINE_SEARCH_STEPS[:, None] * delta[None, :], floor)
    f_cand, r_cand = jax.vmap(objective)(cand)
    f0 = 0.5 * jnp.dot(res, res) + alpha_tv * jnp.sum(jnp.sqrt(y**2 + beta))  # objective(σ), residual known
    best = jnp.argmin(f_cand)
    f_new = f_cand[best]
    improved = f_new < f0
    sigma_new = jnp.where(improved, cand[best], sigma)
    x_new = jnp.clip(x + tau_x * dx, -1.0, 1.0)
    beta_done = beta <= beta_min
    stop = beta_done & (~improved | (f0 - f_new < tol * f0))
    status = jnp.where(stop, jnp.where(improved, CONVERGED, LINE_SEARCH_FAILED), CONTINUE).astype(jnp.int32)
    info = {"objective": jnp.where(improved, f_new, f0), "residual": jnp.linalg.norm(r_cand[best]) / v_norm,
            "step": jnp.where(improved, _LINE_SEARCH_STEPS[best], 0.0)}
    return (sigma_new, x_new, jnp.maximum(beta * beta_factor, beta_min)), info, status


@dataclasses.dataclass(frozen=True, kw_only=True)
class TV(Iterative):
    """Absolute total-variation reconstruction by the primal–dual interior point method.

    Minimises ½‖F(σ) − v‖² + α·TV(σ), TV(σ) = Σ over interior edges of
    |jump of σ| × edge length, with α = alpha·σ₀·mean diag(JᵀJ)/h³ (σ₀ the
    homogeneous fit, h the mean edge length). The smoothing β of |·| starts at
    β₀·(σ₀h)² and is multiplied by ``beta_factor`` each iteration down to
    β_min·(σ₀h)², as in Borsic et al. (2010). σ is kept ≥ 10⁻³σ₀. Stops once
    β is at its floor and the objective's relative decrease is below ``tol``.
    """

    name = "tv"
    description = "total variation by the primal–dual interior point method (absolute)"
    _positive = ("alpha", "beta0", "beta_min", "beta_factor", "tol")

    alpha: float = 1e-4
    max_iter: int = 30
    beta0: float = 1e-2
    beta_min: float = 1e-8
    beta_factor: float = 0.3
    tol: float = 1e-5

    def __post_init__(self):
        super().__post_init__()
        if not self.beta_factor < 1 or self.beta_min > self.beta0:
            raise ValueError(f"tv: need beta_factor < 1 and beta_min <= beta0, got beta_factor={self.beta_factor}, "
                             f"beta_min={self.beta_min}, beta0={self.beta0}")

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        v = jnp.asarray(v)
        c, sigma = sigma_start(model, v, self.sigma0, fit_homogeneous)
        pairs, lengths = element_adjacency(model.mesh)
        h = model.mesh.mean_edge_length()
        jac0 = model.jacobian(sigma)
        alpha_tv = self.alpha * c * float(jnp.mean(jnp.sum(jac0**2, axis=0))) / h**3
        scale = (c * h) ** 2
        state = (sigma, jnp.zeros(len(pairs)), jnp.asarray(self.beta0 * scale))
        a, b = pairs[:, 0], pairs[:, 1]
        laplacian = SparsePattern.from_triplets(np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a]),
                                                model.n_elements, model.solver)
        args = (model, v, jnp.asarray(pairs), jnp.asarray(lengths), laplacian, alpha_tv, 1e-3 * c,
                jnp.linalg.norm(v),
                self.tol, self.beta_min * scale, self.beta_factor)
        run = iterate(_tv_iteration, state, args, max_iter=self.max_iter, progress=self.progress,
                      desc="TV (PD-IPM)")
        return Result(sigma=np.asarray(run.state[0]), method=self.name, history=run.history, n_iter=run.n_iter,
                      status=run.status, wall_time=time.perf_counter() - t0, background=c, options=self.options())


# -- back-projection -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True, kw_only=True)
class BackProjection(Method):
    """Sensitivity back-projection (difference imaging; the counterpart of pyEIT's ``bp``).

    Each element gets its own one-parameter least-squares fit of the voltage
    change, Δσ_e = J_eᵀΔv / ‖J_e‖² (J_e the Jacobian column at the homogeneous
    fit of the reference), ignoring all other elements. Fast and qualitative:
    blurred, with the right sign and position of changes.
    """

    name = "bp"
    description = "sensitivity back-projection (difference; needs `reference`)"
    uses_reference = "required"

    sigma0: float | np.ndarray | None = None

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        _, sigma0 = sigma_start(model, reference, self.sigma0, fit_homogeneous)
        jac = model.jacobian(sigma0)
        dv = jnp.asarray(v) - jnp.asarray(reference)
        delta = (jac.T @ dv) / jnp.sum(jac**2, axis=0)
        hist = {"residual": [float(jnp.linalg.norm(dv) / jnp.linalg.norm(jnp.asarray(v)))]}
        return Result(sigma=np.asarray(sigma0 + delta), method=self.name, history=hist, n_iter=1, status="done",
                      wall_time=time.perf_counter() - t0, background=float(np.mean(np.asarray(sigma0))),
                      options=self.options())


# -- total variation of log σ (lagged-diffusivity Gauss–Newton) ------------------------------

def _descent_info(improved, f0, f_new, res_norm, last_res, step):
    res_norm = jnp.where(improved, res_norm, last_res)
    return res_norm, {"objective": jnp.where(improved, f_new, f0), "residual": res_norm,
                      "step": jnp.where(improved, step, 0.0)}


def _tv_log_objective(model, s, v, pairs, lengths, alpha, beta):
    r = model.voltages(jnp.exp(s)) - v
    d = s[pairs[:, 0]] - s[pairs[:, 1]]
    return 0.5 * jnp.dot(r, r) + alpha * jnp.sum(lengths * jnp.sqrt(d * d + beta)), r


def _tv_log_iteration(state, model, v, pairs, lengths, alpha, beta, v_norm, tol, lo, hi):
    """One lagged-diffusivity GN step on s = log σ with a vectorised line search; s clipped to [lo, hi]."""
    s, last_res = state
    n = s.shape[0]
    sigma = jnp.exp(s)
    jac = model.jacobian(sigma) * sigma[None, :]
    f0, r = _tv_log_objective(model, s, v, pairs, lengths, alpha, beta)
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
    cand = s[None, :] + _LINE_SEARCH_STEPS[:, None] * delta[None, :]
    f_cand, r_cand = jax.vmap(lambda c: _tv_log_objective(model, c, v, pairs, lengths, alpha, beta))(cand)
    best = jnp.argmin(f_cand)
    f_new = f_cand[best]
    improved = f_new < f0
    res_norm, info = _descent_info(improved, f0, f_new, jnp.linalg.norm(r_cand[best]) / v_norm, last_res,
                                   _LINE_SEARCH_STEPS[best])
    s_new = jnp.where(improved, jnp.clip(cand[best], lo, hi), s)
    return (s_new, res_norm), info, line_search_status(f0, f_new, tol)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TVLog(Iterative):
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
    equations (JᵀJ + α DᵀWD) with a five-step line search on the objective;
    s is clipped to ``s_bounds`` around mean log σ0.
    """

    name = "tv-log"
    description = "total variation of log σ by lagged-diffusivity Gauss–Newton (absolute)"
    _positive = ("alpha", "beta", "tol")

    alpha: float = 1e-2
    beta: float = 1e-4
    max_iter: int = 12
    tol: float = 1e-4
    s_bounds: tuple = (-7.0, 7.0)

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        v = jnp.asarray(v, jnp.float64)
        _, start = sigma_start(model, v, self.sigma0, fit_homogeneous)
        s = jnp.log(start)
        s_ref = float(np.mean(np.asarray(s)))
        pairs, lengths = element_adjacency(model.mesh)
        jac0 = model.jacobian(start) * start[None, :]
        area = float(np.mean(model.mesh.areas()))
        radius = 0.5 * float(np.max(np.ptp(model.mesh.nodes, axis=0)))
        alpha_eff = self.alpha * float(jnp.mean(jnp.sum(jac0 ** 2, axis=0))) * radius ** 3 / area ** 2
        args = (model, v, jnp.asarray(pairs), jnp.asarray(lengths), alpha_eff, self.beta, jnp.linalg.norm(v),
                self.tol, s_ref + self.s_bounds[0], s_ref + self.s_bounds[1])
        run = iterate(_tv_log_iteration, (s, jnp.asarray(jnp.nan)), args, max_iter=self.max_iter,
                      progress=self.progress, desc="TV (log σ)")
        return Result(sigma=np.asarray(jnp.exp(run.state[0])), method=self.name, history=run.history,
                      n_iter=run.n_iter, status=run.status, wall_time=time.perf_counter() - t0,
                      background=float(np.exp(s_ref)), options=dict(self.options(), alpha_effective=alpha_eff))


# -- Gauss–Newton with a Gaussian smoothness prior (MAP) --------------------------------------

def _gn_map_objective(model, theta, v, sigma_bg, prec):
    s, c = theta[:-1], theta[-1]
    r = model.voltages(sigma_bg * jnp.exp(s + c)) - v
    return 0.5 * jnp.dot(r, r) + 0.5 * jnp.dot(s, prec @ s), r


def _gn_map_iteration(state, model, v, sigma_bg, prec, drift, v_norm, tol):
    theta, last_res = state
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
    cand = theta[None, :] + _LINE_SEARCH_STEPS[:, None] * delta[None, :]
    f_cand, r_cand = jax.vmap(lambda t: _gn_map_objective(model, t, v, sigma_bg, prec))(cand)
    best = jnp.argmin(f_cand)
    f_new = f_cand[best]
    improved = f_new < f0
    res_norm, info = _descent_info(improved, f0, f_new, jnp.linalg.norm(r_cand[best]) / v_norm, last_res,
                                   _LINE_SEARCH_STEPS[best])
    return (jnp.where(improved, cand[best], theta), res_norm), info, line_search_status(f0, f_new, tol)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GNGaussian(Iterative):
    """MAP estimate with a Gaussian smoothness prior on the log-contrast, by Gauss–Newton.

    σ = σ0·exp(s + c) with s ~ N(0, Γ) (Γ of :func:`jaxeit.recon.linear.smoothness_prior`
    with ``corrlength`` (m) and ``variance``, or ``prior`` = L with LᵀL = Γ⁻¹)
    and, with ``drift``, one free scalar c: a uniform change of the water's
    conductivity between the reference and the target recordings
    (unpenalised). Minimises ½‖F(σ) − v‖² + ½‖Ls‖², so the model and ``v`` must
    be whitened (rows scaled by 1/noise std, e.g. :func:`jaxeit.realdata.prepare`
    with absolute ``weights``) for this to be the MAP. The result's ``sigma``
    includes the drift; c is ``options["drift_log"]`` and σ0·e^c the ``background``.
    """

    name = "gn-gaussian"
    description = "MAP Gauss–Newton on log σ with a Gaussian smoothness prior and a free uniform drift (absolute)"
    _positive = ("corrlength", "variance", "tol")

    corrlength: float = 0.115
    variance: float = 0.05 ** 2
    prior: np.ndarray | None = None
    drift: bool = True
    max_iter: int = 6
    tol: float = 1e-4

    def __post_init__(self):
        super().__post_init__()
        if self.sigma0 is not None and np.ndim(self.sigma0) != 0:
            raise ValueError("gn-gaussian: sigma0 must be a float (the background of the log-contrast)")

    def check(self, model, v, reference) -> None:
        super().check(model, v, reference)
        if self.prior is not None and np.shape(self.prior) != (model.n_elements,) * 2:
            raise ValueError(f"gn-gaussian: prior must be ({model.n_elements}, {model.n_elements}), "
                             f"got {np.shape(self.prior)}")

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        v = jnp.asarray(v, jnp.float64)
        sigma_bg = fit_homogeneous(model, v) if self.sigma0 is None else float(self.sigma0)
        L = smoothness_prior(model.mesh, self.corrlength, self.variance) if self.prior is None else self.prior
        L = jnp.asarray(L, jnp.float64)
        args = (model, v, sigma_bg, L.T @ L, jnp.asarray(1.0 if self.drift else 0.0), jnp.linalg.norm(v), self.tol)
        run = iterate(_gn_map_iteration, (jnp.zeros(model.n_elements + 1), jnp.asarray(jnp.nan)), args,
                      max_iter=self.max_iter, progress=self.progress, desc="MAP-GN")
        theta = run.state[0]
        c = float(theta[-1])
        opts = {k: val for k, val in self.options().items() if k != "prior"}
        return Result(sigma=np.asarray(sigma_bg * jnp.exp(theta[:-1] + theta[-1])), method=self.name,
                      history=run.history, n_iter=run.n_iter, status=run.status,
                      wall_time=time.perf_counter() - t0, background=sigma_bg * float(np.exp(c)),
                      options=dict(opts, drift_log=c))
