"""Samplers of score-based diffusion models (Song et al. 2021; DGM comparison §3.3).

Every sampler takes a score function ``score_fn(x, t) -> ∇ₓ log p_t(x)`` on a
batch ``x`` (B, ...) at times ``t`` (B,) (the output may have any float dtype;
it is cast to the chain's dtype), an SDE of :mod:`jaxeit.dgm.sde`, and a
``jax.random`` key. Pass a score network as ``jax.tree_util.Partial(apply,
params)``: its parameters are then ordinary (traced) arguments of the jitted
sampler, so new weights do not recompile it; a plain function is wrapped in a
``Partial`` and compiled once per function object.

* :func:`pc_sample` — predictor–corrector sampler (``lax.scan``):
  reverse-diffusion predictor, then ``n_corrector`` Langevin steps
  x ← x + ε s + √(2ε) z with ε = 2α(r‖z‖/‖s‖)² (``corrector="langevin"``, r the
  signal-to-noise ratio ``snr``, α = 1 − β_i for VP and 1 for VE) or the
  annealed Langevin step ε = 2α(r·std(t))² (``corrector="ald"``, the DGM code's
  choice, with r = 0.056; ``score_sde``'s default is Langevin with r = 0.16).
  As in ``score_sde`` the norms are averaged over the batch by default
  (``langevin_norm="batch"``); ``"sample"`` makes each chain independent of the others.
* :func:`sde_sample` / :func:`ode_sample` — the reverse SDE (Euler–Maruyama or
  Heun with fixed steps on a ``VirtualBrownianTree``) and the probability-flow
  ODE (Tsit5 or Heun with a ``PIDController``) through ``diffrax``, one solve per
  sample under ``vmap``.
* :func:`csd_star` — CSD* (DGM paper §3.3.2): diffuse a Gauss–Newton image to
  an intermediate time t₀ with the forward marginal and run the reverse process
  from t₀ (SDEdit); returns the mean and std over samples.
* :func:`dps_sample` — diffusion posterior sampling (Chung et al. 2023) for
  any differentiable forward map.

Time grid: ``n_steps`` steps of size dt = (t_start − eps)/n_steps from
``t_start`` (T = 1 unless a start time is given) down to the SDE's ``eps``;
the last step of the PC and DPS samplers returns its noise-free mean
(``score_sde``'s ``denoise``). Randomness: chain i of a call uses keys derived
from ``fold_in(key, i)`` only, so a chain is the same whatever the batch size
(``pc_sample(..., shape=(4, d))[:2] == pc_sample(..., shape=(2, d))``) — exactly
so for every sampler except the batch-averaged Langevin corrector.

Arrays: chains run in ``dtype`` (float32 by default, the networks' precision);
``shape``/``x_start`` are (B, ...) with any event shape (e.g. (B, n, n)
images); outputs are (B, ...) of ``dtype``.
"""

from __future__ import annotations

import functools

import diffrax
import jax
import jax.numpy as jnp
import lineax
from jax.tree_util import Partial

from .sde import _bcast

__all__ = ["pc_sample", "sde_sample", "ode_sample", "csd_star", "dps_sample", "tweedie_x0",
           "CORRECTORS", "SDE_SOLVERS", "ODE_SOLVERS", "SAMPLERS"]

CORRECTORS = ("langevin", "ald", "none")
SDE_SOLVERS = ("euler", "heun")
ODE_SOLVERS = ("tsit5", "heun")
SAMPLERS = ("pc", "sde", "ode")


# -----------------------------------------------------------------------------------
# Helpers
# -----------------------------------------------------------------------------------

def tweedie_x0(sde, x, t, score):
    """Tweedie's estimate E[x₀ | x_t] = (x_t + std(t)² s)/α(t) (x's shape) from the score s at (x, t)."""
    a, std = sde.marginal_coeffs(t)
    return (x + _bcast(std**2, x) * score) / _bcast(a, x)


def _as_partial(fn):
    return fn if isinstance(fn, Partial) else Partial(fn)


def _chain_keys(key, n: int):
    """(n,) keys, chain i's being ``fold_in(key, i)`` (independent of n)."""
    return jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(n))


def _normal(keys, event_shape, dtype):
    """One N(0, I) draw of ``event_shape`` per key: (B, *event_shape)."""
    return jax.vmap(lambda k: jax.random.normal(k, event_shape, dtype))(keys)


def _score(score_fn, x, t):
    """The score at (x, t) with t a scalar broadcast to the batch, in x's dtype."""
    tb = jnp.full(x.shape[:1], t, x.dtype)
    return jnp.asarray(score_fn(x, tb)).astype(x.dtype), tb


def _check_steps(n_steps) -> int:
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
        raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    return int(n_steps)


def _check_start(sde, start_time, x_start):
    """Validated start time (a Python float)."""
    if start_time is None:
        return float(sde.T)
    t0 = float(start_time)
    if not 0.0 < t0 <= sde.T:
        raise ValueError(f"start time t0 must be in (0, {sde.T:g}], got {t0}")
    if t0 <= sde.eps:
        raise ValueError(f"start time t0 = {t0} must exceed the SDE's smallest time eps = {sde.eps:g}")
    if x_start is None and t0 < sde.T:
        raise ValueError(f"starting at t0 = {t0} < T needs x_start (the prior is the law at T only)")
    return t0


def _default_steps(sde, t_start: float, n_steps) -> int:
    """``n_steps`` or, if None, the steps of the SDE's N-step grid that fall in [eps, t_start]."""
    if n_steps is None:
        n_steps = max(1, round(sde.N * (t_start - sde.eps) / (sde.T - sde.eps)))
    return _check_steps(n_steps)


def _start_shape(shape, x_start, dtype):
    """Validated ``(shape, x_start)``: the chains' (B, ...) shape and x_start as an array of ``dtype`` (or None)."""
    if x_start is None:
        if shape is None:
            raise ValueError("give shape (B, ...) or x_start")
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ValueError(f"shape must be (B, ...) with a batch axis, got {shape}")
        return shape, None
    x_start = jnp.asarray(x_start, dtype)
    if shape is not None and tuple(shape) != x_start.shape:
        raise ValueError(f"shape {tuple(shape)} differs from x_start's {x_start.shape}")
    if x_start.ndim < 2:
        raise ValueError(f"x_start must be (B, ...) with a batch axis, got shape {x_start.shape}")
    return tuple(x_start.shape), x_start


def _init_state(sde, key, x_start, t_start, shape, diffuse, dtype):
    """Chains at ``t_start`` (inside the jitted samplers): prior samples, or the forward marginal of
    ``x_start`` (its mean α(t₀)x_start if not ``diffuse``).

    Returns:
        ``(x, run_keys)``: x ``shape`` of ``dtype`` and (B,) keys for the rest of each chain.
    """
    keys = _chain_keys(key, shape[0])
    pair = jax.vmap(jax.random.split)(keys)
    k_init, k_run = pair[:, 0], pair[:, 1]
    if x_start is None:
        x = jax.vmap(lambda k: sde.prior_sample(k, shape[1:], dtype))(k_init)
    else:
        t = jnp.full(shape[:1], t_start, dtype)
        mean, std = sde.marginal(x_start, t)
        x = mean + _bcast(std, x_start) * _normal(k_init, shape[1:], dtype) if diffuse else mean
    return x.astype(dtype), k_run


# -----------------------------------------------------------------------------------
# Predictor–corrector
# -----------------------------------------------------------------------------------

_STATIC = ("sde", "shape", "diffuse", "dtype")


@functools.partial(jax.jit, static_argnames=_STATIC + ("n_steps", "n_corrector", "denoise"))
def _pc_core(score_fn, sde, key, x_start, t_start, snr, use_ald, batch_norm, *, shape, diffuse, dtype, n_steps,
             n_corrector, denoise):
    # the corrector variant (use_ald, batch_norm) is traced, not static: one compilation serves all
    x, keys = _init_state(sde, key, x_start, t_start, shape, diffuse, dtype)
    event = x.shape[1:]
    axes = tuple(range(1, x.ndim))
    dt = (t_start - sde.eps) / n_steps

    def step(carry, i):
        x, _ = carry
        t = t_start - i * dt
        # all of the step's noise in one draw per chain: (B, n_corrector + 1, *event)
        zs = _normal(jax.vmap(jax.random.fold_in, (0, None))(keys, i), (n_corrector + 1,) + event, x.dtype)
        alpha = sde.langevin_alpha(t, dt)
        for j in range(n_corrector):
            s, _ = _score(score_fn, x, t)
            z = zs[:, j]
            s_norm = jnp.sqrt(jnp.sum(s**2, axis=axes))
            z_norm = jnp.sqrt(jnp.sum(z**2, axis=axes))
            # score_sde averages the norms over the batch
            s_norm = jnp.where(batch_norm, jnp.mean(s_norm), s_norm)
            z_norm = jnp.where(batch_norm, jnp.mean(z_norm), z_norm)
            # a zero score (e.g. an untrained network) gives no step instead of inf
            ratio = jnp.where(s_norm > 0, z_norm / jnp.where(s_norm > 0, s_norm, 1.0), 0.0)
            # annealed Langevin dynamics (NCSN): the step follows the marginal std instead
            ratio = jnp.where(use_ald, sde.marginal_coeffs(t)[1], ratio)
            eps_step = 2.0 * alpha * (snr * ratio) ** 2
            x = x + _bcast(eps_step, x) * s + _bcast(jnp.sqrt(2.0 * eps_step), x) * z
        s, tb = _score(score_fn, x, t)
        f, g = sde.discretize(x, tb, dt)
        x_mean = x - f + _bcast(g**2, x) * s
        x = x_mean + _bcast(g, x) * zs[:, -1]
        return (x, x_mean), None

    (x, x_mean), _ = jax.lax.scan(step, (x, x), jnp.arange(n_steps))
    return x_mean if denoise else x


def pc_sample(score_fn, sde, key, *, shape=None, x_start=None, start_time=None, n_steps=None, snr: float = 0.16,
              n_corrector: int = 1, corrector: str = "langevin", langevin_norm: str = "batch", denoise: bool = True,
              diffuse: bool = True, dtype=jnp.float32):
    """Predictor–corrector samples (reverse-diffusion predictor + Langevin corrector).

    Args:
        score_fn: ``score_fn(x (B, ...), t (B,)) -> (B, ...)``.
        sde: a :class:`~jaxeit.dgm.sde.VPSDE` or :class:`~jaxeit.dgm.sde.VESDE`.
        key: a ``jax.random`` key.
        shape: (B, ...) of unconditional samples started from the prior at T.
        x_start: (B, ...) images; chains start at ``start_time`` from the forward
            marginal N(α x_start, std² I) (SDEdit / CSD*).
        start_time: t₀ ∈ (eps, T] (a Python float; default T); t₀ < T needs ``x_start``.
        n_steps: predictor steps (default: those of the SDE's N-step grid in
            [eps, t₀], N for a start at T).
        snr: the corrector's signal-to-noise ratio r (``score_sde``: 0.16; the DGM
            code: 0.056 with ``corrector="ald"``).
        n_corrector: corrector steps per predictor step (0 or ``corrector="none"``: predictor only).
        corrector: ``"langevin"`` (ε = 2α(r‖z‖/‖s‖)²), ``"ald"`` (ε = 2α(r·std)²) or ``"none"``.
        langevin_norm: ``"batch"``: ‖z‖ and ‖s‖ are means over the batch of the
            per-chain norms (``score_sde``; one step size per step for all chains);
            ``"sample"``: per chain, so a chain does not depend on the others. In
            low dimension the per-chain ratio is heavy-tailed and inflates the
            variance (+25 % for a 16-dim Gaussian); for images (n² ≥ 10³) both agree.
        denoise: return the last step's mean (no noise added in the last step).
        diffuse: with ``x_start``, draw x_{t₀} from the forward marginal (True) or
            take its mean α(t₀)x_start (False: the DGM code inserts the GN image as is).
        dtype: the chains' dtype.

    Returns:
        (B, ...) samples of ``dtype``.

    Raises:
        ValueError: on a bad ``n_steps``, ``start_time``, ``corrector`` or shape.
    """
    if corrector not in CORRECTORS:
        raise ValueError(f"unknown corrector {corrector!r}; expected one of {', '.join(CORRECTORS)}")
    if langevin_norm not in ("batch", "sample"):
        raise ValueError(f"langevin_norm must be 'batch' or 'sample', got {langevin_norm!r}")
    if int(n_corrector) < 0:
        raise ValueError(f"n_corrector must be >= 0, got {n_corrector}")
    t_start = _check_start(sde, start_time, x_start)
    n_steps = _default_steps(sde, t_start, n_steps)
    shape, x_start = _start_shape(shape, x_start, dtype)
    return _pc_core(_as_partial(score_fn), sde, key, x_start, jnp.asarray(t_start, dtype), jnp.asarray(snr, dtype),
                    jnp.asarray(corrector == "ald"), jnp.asarray(langevin_norm == "batch"), shape=shape,
                    diffuse=bool(diffuse), dtype=jnp.dtype(dtype), n_steps=n_steps,
                    n_corrector=0 if corrector == "none" else int(n_corrector), denoise=bool(denoise))


# -----------------------------------------------------------------------------------
# diffrax: reverse SDE and probability-flow ODE
# -----------------------------------------------------------------------------------
#
# Both are solved forward in s ∈ [0, 1] with t = t_start − s·(t_start − eps), so
# the Brownian tree and the step grid do not depend on t_start:
#   dx/ds = −span·[f(x,t) − c·g(t)² s(x,t)] (+ √span·g(t) dW_s for the SDE),
# c = 1 (reverse SDE) or ½ (probability-flow ODE), span = t_start − eps.

def _reverse_drift(score_fn, sde, t_start, span, event, c):
    def drift(s, y, args):
        t = t_start - s * span
        x = y.reshape((1,) + event)
        f, g = sde.drift_diffusion(x, t)
        score, _ = _score(args, x, t)
        return (-span * (f - c * g**2 * score)).reshape(-1).astype(y.dtype)
    return drift


@functools.partial(jax.jit, static_argnames=_STATIC + ("n_steps", "solver"))
def _sde_core(score_fn, sde, key, x_start, t_start, *, shape, diffuse, dtype, n_steps, solver):
    x, keys = _init_state(sde, key, x_start, t_start, shape, diffuse, dtype)
    event = x.shape[1:]
    span = t_start - sde.eps
    drift = _reverse_drift(score_fn, sde, t_start, span, event, 1.0)
    slv = {"euler": diffrax.Euler, "heun": diffrax.Heun}[solver]()

    def one(y0, key):
        bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1.0 / (8 * n_steps),
                                         shape=jax.ShapeDtypeStruct(y0.shape, y0.dtype), key=key)
        # additive noise (g depends on t only): Itô and Stratonovich agree, so Heun is valid
        diffusion = diffrax.ControlTerm(
            lambda s, y, args: lineax.DiagonalLinearOperator(
                (jnp.sqrt(span) * sde.drift_diffusion(y, t_start - s * span)[1] * jnp.ones_like(y)).astype(y.dtype)),
            bm)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffusion)
        sol = diffrax.diffeqsolve(terms, slv, 0.0, 1.0, 1.0 / n_steps, y0, args=score_fn,
                                  saveat=diffrax.SaveAt(t1=True), max_steps=n_steps + 1)
        return sol.ys[-1]

    y = jax.vmap(one)(x.reshape(x.shape[0], -1), keys)
    return y.reshape(x.shape).astype(x.dtype)      # diffrax may promote to its (float64) time dtype


@functools.partial(jax.jit, static_argnames=_STATIC + ("solver", "max_steps"))
def _ode_core(score_fn, sde, key, x_start, t_start, rtol, atol, *, shape, diffuse, dtype, solver, max_steps):
    x, _ = _init_state(sde, key, x_start, t_start, shape, diffuse, dtype)
    event = x.shape[1:]
    span = t_start - sde.eps
    term = diffrax.ODETerm(_reverse_drift(score_fn, sde, t_start, span, event, 0.5))
    slv = {"tsit5": diffrax.Tsit5, "heun": diffrax.Heun}[solver]()
    ctrl = diffrax.PIDController(rtol=rtol, atol=atol)

    def one(y0):
        sol = diffrax.diffeqsolve(term, slv, 0.0, 1.0, None, y0, args=score_fn, stepsize_controller=ctrl,
                                  saveat=diffrax.SaveAt(t1=True), max_steps=max_steps)
        return sol.ys[-1]

    return jax.vmap(one)(x.reshape(x.shape[0], -1)).reshape(x.shape).astype(x.dtype)


def sde_sample(score_fn, sde, key, *, shape=None, x_start=None, start_time=None, n_steps=None,
               solver: str = "euler", diffuse: bool = True, dtype=jnp.float32):
    """Samples by the reverse SDE dx = [f − g² ∇log p_t] dt + g dw̄ (diffrax, fixed steps).

    Arguments as :func:`pc_sample`; ``solver`` is ``"euler"`` (Euler–Maruyama) or
    ``"heun"``; each chain has its own ``VirtualBrownianTree`` (tolerance
    1/(8·n_steps) of the unit interval). Returns (B, ...) samples at time eps (no denoising).
    """
    if solver not in SDE_SOLVERS:
        raise ValueError(f"unknown SDE solver {solver!r}; expected one of {', '.join(SDE_SOLVERS)}")
    t_start = _check_start(sde, start_time, x_start)
    n_steps = _default_steps(sde, t_start, n_steps)
    shape, x_start = _start_shape(shape, x_start, dtype)
    return _sde_core(_as_partial(score_fn), sde, key, x_start, jnp.asarray(t_start, dtype), shape=shape,
                     diffuse=bool(diffuse), dtype=jnp.dtype(dtype), n_steps=n_steps, solver=solver)


def ode_sample(score_fn, sde, key, *, shape=None, x_start=None, start_time=None, solver: str = "tsit5",
               rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = 4096, diffuse: bool = True,
               dtype=jnp.float32):
    """Samples by the probability-flow ODE dx = [f − ½g² ∇log p_t] dt (diffrax, adaptive steps).

    Arguments as :func:`pc_sample`; the key draws only the starting points.
    ``solver``: ``"tsit5"`` or ``"heun"``; ``rtol``/``atol`` of the
    ``PIDController`` (``score_sde``'s RK45: 1e-5); ``max_steps`` per chain (a
    solve that needs more raises). Returns (B, ...) samples at time eps.
    """
    if solver not in ODE_SOLVERS:
        raise ValueError(f"unknown ODE solver {solver!r}; expected one of {', '.join(ODE_SOLVERS)}")
    t_start = _check_start(sde, start_time, x_start)
    shape, x_start = _start_shape(shape, x_start, dtype)
    return _ode_core(_as_partial(score_fn), sde, key, x_start, jnp.asarray(t_start, dtype), rtol, atol, shape=shape,
                     diffuse=bool(diffuse), dtype=jnp.dtype(dtype), solver=solver, max_steps=int(max_steps))


# -----------------------------------------------------------------------------------
# CSD*: score-based post-processing of a Gauss–Newton image
# -----------------------------------------------------------------------------------

def csd_star(score_fn, sde, gn_images, key, *, t0: float = 0.55, n_steps=None, n_samples: int = 20,
             sampler: str = "pc", diffuse: bool = True, dtype=jnp.float32, **sampler_kw):
    """CSD* (DGM paper §3.3.2): SDEdit-style refinement of Gauss–Newton images.

    Each image is diffused to t₀ with the forward marginal and the reverse
    process runs from t₀ to eps, ``n_samples`` times per image.

    Args:
        score_fn: the unconditional score (in the units the model was trained in).
        sde: the model's SDE.
        gn_images: (B, ...) Gauss–Newton images in the model's units.
        key: a ``jax.random`` key.
        t0: the insertion time in (eps, 1]. The DGM code's loop ``range(550, N)``
            over ``linspace(T, eps, N)`` starts at t ≈ 0.45 (with 450 steps) and
            inserts the GN image without noise (``diffuse=False``); METHODS.md and
            the paper's "step 550 of 1000" read as t₀ = 0.55, the default here.
        n_steps: reverse steps from t₀ (default ``round(N·(t₀ − eps)/(T − eps))``, 550 for t₀ = 0.55).
        n_samples: samples per image (S).
        sampler: ``"pc"`` (the paper's), ``"sde"`` or ``"ode"``.
        diffuse: see :func:`pc_sample`.
        dtype: the chains' dtype.
        **sampler_kw: options of the sampler (``snr``, ``corrector``, ``n_corrector``,
            ``solver``, ``rtol``, ...).

    Returns:
        ``(mean, std)``: (B, ...) arrays of ``dtype``, the mean and pixel-wise
        standard deviation over the S samples. Memory scales with B·S chains.

    Raises:
        ValueError: for t₀ outside (eps, 1], n_steps < 1, n_samples < 1 or an unknown sampler.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if t0 is None:
        raise ValueError("t0 must be a time in (0, 1], got None")
    _check_start(sde, t0, gn_images)
    gn = jnp.asarray(gn_images, dtype)
    if gn.ndim < 2:
        raise ValueError(f"gn_images must be (B, ...) with a batch axis, got shape {gn.shape}")
    s = int(n_samples)
    x_start = jnp.repeat(gn, s, axis=0)                       # chain b·S + j: sample j of image b
    kw = dict(x_start=x_start, start_time=t0, diffuse=diffuse, dtype=dtype, **sampler_kw)
    if sampler == "pc":
        xs = pc_sample(score_fn, sde, key, n_steps=n_steps, **kw)
    elif sampler == "sde":
        xs = sde_sample(score_fn, sde, key, n_steps=n_steps, **kw)
    else:
        if n_steps is not None:
            _check_steps(n_steps)                             # the ODE solver chooses its own steps
        xs = ode_sample(score_fn, sde, key, **kw)
    xs = xs.reshape((gn.shape[0], s) + gn.shape[1:])
    return jnp.mean(xs, axis=1), jnp.std(xs, axis=1)


# -----------------------------------------------------------------------------------
# DPS: diffusion posterior sampling
# -----------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("sde", "shape", "dtype", "n_steps"))
def _dps_core(score_fn, measurement_fn, sde, v, key, zeta, lo, hi, x_start, t_start, *, shape, dtype, n_steps):
    x, keys = _init_state(sde, key, x_start, t_start, shape, True, dtype)
    event = x.shape[1:]
    dt = (t_start - sde.eps) / n_steps
    axes = tuple(range(1, v.ndim + 1))
    tiny = jnp.finfo(x.dtype).tiny

    def residual_norms(x, t):
        s, tb = _score(score_fn, x, t)
        x0 = jnp.clip(tweedie_x0(sde, x, tb, s), lo, hi)       # the DPS code's clipped x̂₀
        r = v - jax.vmap(measurement_fn)(x0)
        norms = jnp.sqrt(jnp.sum(r**2, axis=axes) + tiny)     # ‖v − F(x̂₀)‖ per chain (no NaN gradient at 0)
        return jnp.sum(norms), (s, norms)                     # chains are independent: the sum's gradient is per chain

    def step(carry, i):
        x, _ = carry
        t = t_start - i * dt
        grad, (s, norms) = jax.grad(residual_norms, has_aux=True)(x, t)
        f, g = sde.discretize(x, jnp.full(x.shape[:1], t, x.dtype), dt)
        x_mean = x - f + _bcast(g**2, x) * s - zeta * grad.astype(x.dtype)
        x = x_mean + _bcast(g, x) * _normal(jax.vmap(jax.random.fold_in, (0, None))(keys, i), event, x.dtype)
        return (x, x_mean), norms

    (x, x_mean), norms = jax.lax.scan(step, (x, x), jnp.arange(n_steps))
    return jnp.clip(x_mean, lo, hi), norms


def dps_sample(score_fn, sde, measurement_fn, v, key, *, zeta: float, shape, n_samples: int = 1, n_steps=None,
               dtype=jnp.float32, data_range=None, x_start=None, start_time=None, return_residuals: bool = False):
    """Diffusion posterior sampling (Chung et al. 2023) with an unconditional score.

    Each step: the score s at x_t, Tweedie's x̂₀ = (x_t + std² s)/α, the
    reverse-diffusion predictor step, then x ← x − ζ ∇_{x_t}‖v − F(x̂₀)‖ (the
    gradient flows through the score, as in the DPS code; ζ is constant, the
    norm is not squared). With ``data_range`` the x̂₀ fed to F and the returned
    samples are clipped to it, as the DPS code clips x̂₀ to [−1, 1]: F is
    only evaluated on images the prior can produce, and a chain that
    overshoots cannot push the FEM to extreme conductivities.

    Args:
        score_fn: ``score_fn(x (B, ...), t (B,))``; it must treat batch entries
            independently (the gradient is taken of the sum over chains).
        sde: the model's SDE.
        measurement_fn: ``F(x0) -> (M,)`` predicted measurements of ONE image of
            ``shape`` (differentiable JAX; it is ``vmap``-ed over chains; a
            ``jax.tree_util.Partial`` keeps its arrays traced).
        v: (M,) measurements (the same for all chains).
        key: a ``jax.random`` key.
        zeta: step size ζ (≥ 0; DPS used 0.1–1 on 256² images in [−1, 1]).
        shape: the event shape of one image, e.g. (n, n).
        n_samples: chains.
        n_steps: reverse steps from the start time to eps (default the SDE's N-step
            grid over that span: N = 1000 from T, as in DPS).
        dtype: the chains' dtype.
        data_range: (lo, hi) of the training images in model units, or None (no clipping).
        x_start: optional image of ``shape`` (e.g. a Gauss–Newton reconstruction in
            model units): the chains start from its forward marginal at
            ``start_time`` instead of the prior at T — CSD* with the likelihood
            step added (SDEdit + DPS), which needs far fewer steps and a less
            accurate score far from the data than a start from noise.
        start_time: t₀ ∈ (eps, T] (default T; t₀ < T needs ``x_start``).
        return_residuals: also return ‖v − F(x̂₀)‖ per step and chain.

    Returns:
        (n_samples, *shape) samples of ``dtype``; with ``return_residuals`` also
        the (n_steps, n_samples) residual norms.
    """
    if zeta is None or (not isinstance(zeta, jax.core.Tracer) and not float(zeta) >= 0):
        raise ValueError(f"zeta must be >= 0, got {zeta!r}")   # a traced ζ (e.g. a jit argument) is not checked
    if int(n_samples) < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    t_start = _check_start(sde, start_time, x_start)
    n_steps = _default_steps(sde, t_start, n_steps)
    event = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    shape, _ = _start_shape((int(n_samples),) + event, None, dtype)
    if x_start is not None:
        x_start = jnp.asarray(x_start, dtype)
        if x_start.shape != event:
            raise ValueError(f"x_start must have the event shape {event}, got {x_start.shape}")
        x_start = jnp.broadcast_to(x_start, shape)
    lo, hi = (-jnp.inf, jnp.inf) if data_range is None else data_range
    if data_range is not None and not isinstance(lo, jax.core.Tracer) and not float(lo) < float(hi):
        raise ValueError(f"data_range must be (lo, hi) with lo < hi, got {data_range!r}")
    out, norms = _dps_core(_as_partial(score_fn), _as_partial(measurement_fn), sde, jnp.asarray(v), key,
                           jnp.asarray(zeta, dtype), jnp.asarray(lo, dtype), jnp.asarray(hi, dtype), x_start,
                           jnp.asarray(t_start, dtype), shape=shape,
                           dtype=jnp.dtype(dtype), n_steps=n_steps)
    return (out, norms) if return_residuals else out
