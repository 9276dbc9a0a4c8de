"""Classical reconstructions: one-step linearised, Gauss–Newton / Levenberg–Marquardt, TV (PD-IPM), back-projection.

All work on element conductivities of a :class:`~jaxeit.ForwardModel`'s mesh.
Every iteration is one jitted function (forward solve, Jacobian by the adjoint
method, the regularised normal equations, and a vectorised line search), so
no FEM runs in Python.

Regularisation weights are given as dimensionless ``alpha`` and scaled so the
same value suits any current amplitude, background level and mesh density:

* quadratic priors (one-step, GN, LM): λ = alpha · mean diag(JᵀJ) / mean diag(R);
* TV: α = alpha · σ_bg · mean diag(JᵀJ) / h³, with h the mean edge length
  (the data gradient of an element scales as its area, the TV gradient as an
  edge length; see the module notes in ``tv_pdipm``).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from ..forward import ForwardModel
from .operators import element_adjacency, prior_matrix
from .result import Result

__all__ = ["fit_homogeneous", "one_step", "gauss_newton", "tv_pdipm", "back_projection"]

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


def _scaled_weight(alpha, jtj_diag, r):
    return alpha * jnp.mean(jtj_diag) / jnp.mean(jnp.diag(r))


def _history():
    return {"residual": [], "objective": [], "step": []}


# -- one-step linearised -----------------------------------------------------------

@jax.jit
def _one_step_update(model, sigma0, dv, r, alpha):
    jac = model.jacobian(sigma0)
    jtj = jac.T @ jac
    lam = _scaled_weight(alpha, jnp.diag(jtj), r)
    return jax.scipy.linalg.solve(jtj + lam * r, jac.T @ dv, assume_a="pos")


def one_step(model: ForwardModel, v, *, reference=None, sigma0=None, alpha: float = 1.0,
             prior: str = "noser") -> Result:
    """One-step linearised reconstruction σ = σ₀ + (JᵀJ + λR)⁻¹Jᵀ Δv.

    Difference imaging when ``reference`` (voltages of a reference state) is
    given: Δv = v − reference and σ₀ the homogeneous fit of the reference;
    absolute imaging otherwise: Δv = v − F(σ₀) with σ₀ the homogeneous fit of v.
    ``prior``: ``"tikhonov"``, ``"noser"`` (default, Cheney et al. 1990) or ``"laplace"``.
    Default ``alpha`` chosen on simulated 16-electrode data at 40–50 dB
    (benchmarks/classical.py).
    """
    t0 = time.perf_counter()
    base = reference if reference is not None else v
    s0 = fit_homogeneous(model, base) if sigma0 is None else sigma0
    sigma0 = jnp.broadcast_to(jnp.asarray(s0, jnp.float64), (model.n_elements,))
    if reference is not None:
        dv = jnp.asarray(v) - jnp.asarray(reference)
    else:
        dv = jnp.asarray(v) - model.voltages(sigma0)
    if prior == "noser":
        jac = model.jacobian(sigma0)
        r = jnp.asarray(prior_matrix(model.mesh, "noser", np.asarray(jnp.sum(jac**2, axis=0))))
    else:
        r = jnp.asarray(prior_matrix(model.mesh, prior))
    delta = _one_step_update(model, sigma0, dv, r, alpha)
    sigma = sigma0 + delta
    hist = _history()
    hist["residual"].append(float(jnp.linalg.norm(dv) / jnp.linalg.norm(v)))
    return Result(sigma=np.asarray(sigma), method="one-step", history=hist, n_iter=1,
                  wall_time=time.perf_counter() - t0, background=float(np.mean(np.asarray(sigma0))),
                  options=dict(alpha=alpha, prior=prior, difference=reference is not None))


# -- Gauss–Newton / Levenberg–Marquardt ----------------------------------------------

def _objective(model, s, v, r, lam, s_prior):
    res = model.voltages(jnp.exp(s)) - v
    d = s - s_prior
    return 0.5 * jnp.dot(res, res) + 0.5 * lam * jnp.dot(d, r @ d), res


@jax.jit
def _gn_step(model, s, v, r, lam, s_prior, mu):
    """One regularised Gauss–Newton step on s = log σ with a vectorised line search.

    Returns the new s, its objective and data residual, the step taken, the
    weight λ and the objective at the start.
    """
    sigma = jnp.exp(s)
    jac = model.jacobian(sigma) * sigma[None, :]  # chain rule for log σ
    jtj = jac.T @ jac
    f0, res = _objective(model, s, v, r, lam, s_prior)
    grad = jac.T @ res + lam * r @ (s - s_prior)
    hess = jtj + lam * r + mu * jnp.diag(jnp.diag(jtj))
    delta = -jax.scipy.linalg.solve(hess, grad, assume_a="pos")
    # positivity is automatic in log σ; bound the step so no element changes by more than e^3
    delta = delta * jnp.minimum(1.0, 3.0 / jnp.max(jnp.abs(delta)))
    cand = s[None, :] + _LINE_SEARCH_STEPS[:, None] * delta[None, :]
    f_cand, res_cand = jax.vmap(lambda c: _objective(model, c, v, r, lam, s_prior))(cand)
    best = jnp.argmin(f_cand)
    return cand[best], f_cand[best], res_cand[best], _LINE_SEARCH_STEPS[best], lam, f0


def gauss_newton(model: ForwardModel, v, *, sigma0=None, alpha: float = 10.0, prior: str = "laplace",
                 max_iter: int = 15, tol: float = 1e-4, damping: str = "line-search",
                 progress: bool = False) -> Result:
    """Iterative regularised Gauss–Newton (absolute imaging), DGM comparison paper eqs. 5–9.

    Minimises ½‖F(σ) − v‖² + ½λ‖log σ − log σ₀‖²_R over log σ (so σ stays
    positive) with σ₀ the homogeneous fit. ``damping="line-search"`` (Gauss–
    Newton) tries the steps 1, ½, ¼, 0.1, 0.03 in one vectorised evaluation and
    keeps the best; ``damping="lm"`` (Levenberg–Marquardt) adds μ·diag(JᵀJ) to
    the normal matrix and adapts μ (÷3 after a decrease, ×4 otherwise). Stops
    when the objective's relative decrease is below ``tol`` or after ``max_iter``.
    """
    t0 = time.perf_counter()
    v = jnp.asarray(v)
    c = fit_homogeneous(model, v) if sigma0 is None else None
    sigma_start = jnp.broadcast_to(jnp.asarray(c if sigma0 is None else sigma0, jnp.float64), (model.n_elements,))
    s = jnp.log(sigma_start)
    s_prior = s
    # λ is fixed from the starting point's Jacobian, so every iteration minimises the same objective
    jac0 = model.jacobian(sigma_start) * sigma_start[None, :]
    jtj_diag = jnp.sum(jac0**2, axis=0)
    r = jnp.asarray(prior_matrix(model.mesh, prior, np.asarray(jtj_diag)))
    lam = _scaled_weight(alpha, jtj_diag, r)
    mu = 1e-2 if damping == "lm" else 0.0
    if damping not in ("line-search", "lm"):
        raise ValueError(f"damping must be 'line-search' or 'lm', got {damping!r}")
    hist = _history()
    vnorm = float(jnp.linalg.norm(v))
    it = 0
    for it in tqdm(range(1, max_iter + 1), desc=f"GN ({damping})", disable=not progress, leave=False):
        s_new, f_new, res, step, _, f0 = _gn_step(model, s, v, r, lam, s_prior, mu)
        f_new, f0 = float(f_new), float(f0)
        if damping == "lm":
            if f_new < f0:
                mu = max(mu / 3.0, 1e-8)
            else:
                mu *= 4.0
                hist["objective"].append(f0)
                hist["residual"].append(hist["residual"][-1] if hist["residual"] else np.nan)
                hist["step"].append(0.0)
                continue
        if f_new >= f0:  # no candidate improved: converged at this regularisation
            hist["objective"].append(f0)
            hist["residual"].append(hist["residual"][-1] if hist["residual"] else np.nan)
            hist["step"].append(0.0)
            break
        s = s_new
        hist["objective"].append(f_new)
        hist["residual"].append(float(jnp.linalg.norm(res)) / vnorm)
        hist["step"].append(float(step))
        if (f0 - f_new) < tol * f0:
            break
    return Result(sigma=np.asarray(jnp.exp(s)), method="gn" if damping == "line-search" else "lm",
                  history=hist, n_iter=it, wall_time=time.perf_counter() - t0,
                  background=float(np.exp(np.mean(np.asarray(s_prior)))),
                  options=dict(alpha=alpha, prior=prior, max_iter=max_iter, damping=damping))


# -- total variation: primal–dual interior point ---------------------------------------

@jax.jit
def _tv_step(model, sigma, x, v, pairs, lengths, alpha_tv, beta, floor):
    """One PD-IPM iteration (Borsic, Graham, Adler, Lionheart 2010) for
    min_σ ½‖F(σ) − v‖² + α Σ_k l_k |σ_a − σ_b|, dual x ∈ [−1, 1] per interior edge."""
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
    a, b = pairs[:, 0], pairs[:, 1]
    hess = (jac.T @ jac).at[a, a].add(w).at[b, b].add(w).at[a, b].add(-w).at[b, a].add(-w)
    grad = jac.T @ res + alpha_tv * diff_t(x)
    delta = -jax.scipy.linalg.solve(hess + 1e-12 * jnp.trace(hess) / n * jnp.eye(n), grad, assume_a="pos")
    dx = -x + y / eta + (k / eta) * diff(delta)
    # largest dual step keeping |x| ≤ 1 (the dual feasibility rule of PD-IPM)
    lim = jnp.where(dx > 0, (1.0 - x) / jnp.maximum(dx, 1e-300), jnp.where(dx < 0, (-1.0 - x) / jnp.minimum(dx, -1e-300), jnp.inf))
    tau_x = jnp.minimum(1.0, 0.99 * jnp.min(lim))
    # primal line search on the smoothed TV objective, with a positivity floor
    def objective(s):
        r = model.voltages(s) - v
        return 0.5 * jnp.dot(r, r) + alpha_tv * jnp.sum(jnp.sqrt(diff(s) ** 2 + beta)), r

    cand = jnp.maximum(sigma[None, :] + _LINE_SEARCH_STEPS[:, None] * delta[None, :], floor)
    f_cand, r_cand = jax.vmap(objective)(cand)
    f0, _ = objective(sigma)
    best = jnp.argmin(f_cand)
    improved = f_cand[best] < f0
    sigma_new = jnp.where(improved, cand[best], sigma)
    x_new = jnp.clip(x + tau_x * dx, -1.0, 1.0)
    return sigma_new, x_new, f_cand[best], r_cand[best], _LINE_SEARCH_STEPS[best], f0, improved


def tv_pdipm(model: ForwardModel, v, *, sigma0=None, alpha: float = 1e-4, max_iter: int = 30,
             beta0: float = 1e-2, beta_min: float = 1e-8, beta_factor: float = 0.3, tol: float = 1e-5,
             progress: bool = False) -> Result:
    """Absolute total-variation reconstruction by the primal–dual interior point method.

    Minimises ½‖F(σ) − v‖² + α·TV(σ), TV(σ) = Σ over interior edges of
    |jump of σ| × edge length, with α = alpha·σ₀·mean diag(JᵀJ)/h³ (σ₀ the
    homogeneous fit, h the mean edge length). The smoothing β of |·| starts at
    β₀·(σ₀h)² and is divided by 1/``beta_factor`` each iteration down to
    β_min·(σ₀h)², as in Borsic et al. (2010). σ is kept ≥ 10⁻³σ₀.
    """
    t0 = time.perf_counter()
    v = jnp.asarray(v)
    c = fit_homogeneous(model, v) if sigma0 is None else float(np.mean(sigma0))
    sigma = jnp.broadcast_to(jnp.asarray(c if sigma0 is None else sigma0, jnp.float64), (model.n_elements,))
    pairs, lengths = element_adjacency(model.mesh)
    h = model.mesh.mean_edge_length()
    jac0 = model.jacobian(sigma)
    alpha_tv = alpha * c * float(jnp.mean(jnp.sum(jac0**2, axis=0))) / h**3
    scale = (c * h) ** 2
    beta = beta0 * scale
    x = jnp.zeros(len(pairs))
    hist = _history()
    vnorm = float(jnp.linalg.norm(v))
    it = 0
    pairs_j, lengths_j = jnp.asarray(pairs), jnp.asarray(lengths)
    for it in tqdm(range(1, max_iter + 1), desc="TV (PD-IPM)", disable=not progress, leave=False):
        sigma, x, f_new, res, step, f0, improved = _tv_step(model, sigma, x, v, pairs_j, lengths_j,
                                                            alpha_tv, beta, 1e-3 * c)
        hist["objective"].append(float(f_new if improved else f0))
        hist["residual"].append(float(jnp.linalg.norm(res)) / vnorm)
        hist["step"].append(float(step) if improved else 0.0)
        beta_done = beta <= beta_min * scale
        beta = max(beta * beta_factor, beta_min * scale)
        if beta_done and (not improved or (float(f0) - float(f_new)) < tol * float(f0)):
            break
    return Result(sigma=np.asarray(sigma), method="tv", history=hist, n_iter=it,
                  wall_time=time.perf_counter() - t0, background=c,
                  options=dict(alpha=alpha, max_iter=max_iter, beta0=beta0, beta_min=beta_min))


# -- back-projection -------------------------------------------------------------------

def back_projection(model: ForwardModel, v, *, reference, sigma0=None) -> Result:
    """Sensitivity back-projection (difference imaging; the counterpart of pyEIT's ``bp``).

    Each element gets its own one-parameter least-squares fit of the voltage
    change, Δσ_e = J_eᵀΔv / ‖J_e‖² (J_e the Jacobian column at the homogeneous
    fit of the reference), ignoring all other elements. Fast and qualitative:
    blurred, with the right sign and position of changes.
    """
    t0 = time.perf_counter()
    c = fit_homogeneous(model, reference) if sigma0 is None else sigma0
    sigma0 = jnp.broadcast_to(jnp.asarray(c, jnp.float64), (model.n_elements,))
    jac = model.jacobian(sigma0)
    dv = jnp.asarray(v) - jnp.asarray(reference)
    delta = (jac.T @ dv) / jnp.sum(jac**2, axis=0)
    hist = _history()
    hist["residual"].append(float(jnp.linalg.norm(dv) / jnp.linalg.norm(jnp.asarray(v))))
    return Result(sigma=np.asarray(sigma0 + delta), method="bp", history=hist, n_iter=1,
                  wall_time=time.perf_counter() - t0, background=float(np.mean(np.asarray(sigma0))),
                  options={})
