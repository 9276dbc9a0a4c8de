"""Gaussian diffusion with learned-range variance (improved DDPM, Nichol & Dhariwal 2021).

Notation (timesteps are 0-based indices ``t = 0 … T-1``; index ``t`` is the
paper's step ``t + 1``, as in ``openai/improved-diffusion``):

- cosine schedule ``ᾱ(τ) = f(τ)/f(0)``, ``f(τ) = cos²((τ + s)/(1 + s) · π/2)``,
  ``s = 0.008``, ``β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), 0.999)``, ``T = 1000``;
  ``alphas_cumprod[t] = Π_{i ≤ t} (1 − β_i)``;
- forward: ``x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε`` (:meth:`GaussianDiffusion.q_sample`);
- posterior ``q(x_{t−1} | x_t, x₀) = N(μ̃_t, β̃_t)`` with
  ``β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t)`` and
  ``μ̃_t = β_t √ᾱ_{t−1}/(1 − ᾱ_t) · x₀ + (1 − ᾱ_{t−1}) √α_t/(1 − ᾱ_t) · x_t``;
  ``log β̃`` is clipped at index 0 (where β̃ = 0) to ``log β̃_1``;
- the network returns ε̂ and ``v ∈ [0, 1]`` (nominally); the model is
  ``p(x_{t−1} | x_t) = N(μ̃_t(x̂₀, x_t), Σ)`` with
  ``x̂₀ = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t`` and the learned-range variance
  ``log Σ = v log β_t + (1 − v) log β̃_t``;
- hybrid loss (per image, averaged over pixels):
  ``L = L_simple + λ · T · L_t`` with ``L_simple = mean (ε − ε̂)²``,
  ``λ = 0.001`` and ``L_t`` the VLB term of the drawn step in bits per pixel:
  ``KL(q(x_{t−1}|x_t,x₀) ‖ p(x_{t−1}|x_t))`` for ``t > 0`` and the discretised
  Gaussian decoder NLL ``−log p(x₀ | x₁)`` (bins of width 2/255 on [−1, 1],
  edge bins open) for ``t = 0``. ``T · L_t`` is the one-sample estimate of
  ``L_vlb = Σ_t L_t`` under uniform ``t``. The VLB term sees ε̂ through a
  stop-gradient, so it trains only ``v`` (the mean is trained by L_simple).
- sampling: ancestral steps on a respaced schedule (:meth:`respace`: keep
  ``S`` evenly spaced steps, ``β'_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}``; the network is
  called with the original index ``τ_i``), x̂₀ clipped to [−1, 1].

Schedules are computed in float64 on the host; everything on device is float32.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr, ndtr

__all__ = [
    "cosine_alphas_cumprod",
    "cosine_betas",
    "space_timesteps",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "GaussianDiffusion",
    "EMA_DECAY",
]

_F32 = jnp.float32
_LOG2 = math.log(2.0)

#: Number of diffusion steps (improved DDPM uses T = 4000 for images; the
#: Diff-INR setup and our METHODS notes use T = 1000).
NUM_TIMESTEPS = 1000
#: Cosine-schedule offset s (Nichol & Dhariwal 2021, eq. 17).
COSINE_S = 0.008
#: Hybrid-loss weight of the VLB term (Nichol & Dhariwal 2021, §3.1).
LAMBDA_VLB = 0.001
#: Default EMA decay of the weights used for sampling.
EMA_DECAY = 0.999


def cosine_alphas_cumprod(num_timesteps: int = NUM_TIMESTEPS, s: float = COSINE_S) -> np.ndarray:
    """(T + 1,) float64 ``ᾱ(t/T) = f(t/T)/f(0)`` for ``t = 0 … T`` (unclipped cosine curve)."""
    tau = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    f = np.cos((tau + s) / (1 + s) * np.pi / 2) ** 2
    return f / f[0]


def cosine_betas(num_timesteps: int = NUM_TIMESTEPS, *, s: float = COSINE_S,
                 max_beta: float = 0.999) -> np.ndarray:
    """(T,) float64 cosine-schedule betas ``β_t = min(1 − ᾱ((t+1)/T)/ᾱ(t/T), max_beta)``."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    a = cosine_alphas_cumprod(num_timesteps, s)
    return np.minimum(1.0 - a[1:] / a[:-1], max_beta)


def space_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """(steps,) int64 increasing timesteps kept by respacing: ``round(linspace(0, T−1, steps))``.

    Always includes 0 and T − 1; ``steps`` must be in [1, T] (1 keeps only T − 1).
    """
    steps = int(steps)
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"respaced steps must be in [1, {num_timesteps}], got {steps}")
    if steps == 1:
        return np.array([num_timesteps - 1])
    kept = np.unique(np.round(np.linspace(0, num_timesteps - 1, steps)).astype(np.int64))
    if len(kept) != steps:  # cannot happen for steps <= T, kept for safety
        raise ValueError(f"cannot space {steps} distinct steps in {num_timesteps}")
    return kept


def normal_kl(mean1, logvar1, mean2, logvar2):
    """Elementwise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, *, mean, log_scale, bin_width: float = 2.0 / 255.0):
    """Elementwise log-probability (nats) of data x ∈ [−1, 1] under a Gaussian discretised into bins.

    Bins have width ``bin_width`` (8-bit data on [−1, 1]: 2/255) centred on x;
    the lowest (x < −0.999) and highest (x > 0.999) bins extend to ∓∞.
    ``log_scale`` is log σ (half the log-variance).
    """
    centred = x - mean
    inv_std = jnp.exp(-log_scale)
    upper = inv_std * (centred + 0.5 * bin_width)
    lower = inv_std * (centred - 0.5 * bin_width)
    log_cdf_upper = log_ndtr(upper)                  # log P(X ≤ upper edge)
    log_sf_lower = log_ndtr(-lower)                  # log P(X ≥ lower edge)
    log_delta = jnp.log(jnp.maximum(ndtr(upper) - ndtr(lower), 1e-12))
    return jnp.where(x < -0.999, log_cdf_upper, jnp.where(x > 0.999, log_sf_lower, log_delta))


def _extract(arr: jax.Array, t, ndim: int) -> jax.Array:
    """arr[t] reshaped to broadcast against a (B, ...) array of ``ndim`` dimensions."""
    out = jnp.asarray(arr)[jnp.asarray(t)]
    return out.reshape(out.shape + (1,) * (ndim - out.ndim))


ApplyFn = Callable  # apply(params, x, t) -> (eps, v), see jaxeit.priors.unet.make_apply


@dataclasses.dataclass(frozen=True, eq=False)
class GaussianDiffusion:
    """A diffusion process on images in [−1, 1] (see the module docstring).

    Build the training process with :meth:`cosine`; :meth:`respace` gives the
    process used for fast sampling. Methods take integer step indices ``t`` of
    *this* process (scalar or (B,)) and images of shape (B, ...) or any shape
    broadcastable with ``t[:, None, ...]``.

    Attributes:
        betas: (S,) float64 betas of this process.
        timestep_map: (S,) int64 network timestep (index in the original
            T-step process) of each step; ``arange(T)`` for the training process.
        num_train_timesteps: T of the original process (scales the VLB term).
        lambda_vlb: hybrid-loss weight λ.
    """

    betas: np.ndarray
    timestep_map: np.ndarray | None = None
    num_train_timesteps: int | None = None
    lambda_vlb: float = LAMBDA_VLB

    def __post_init__(self):
        betas = np.asarray(self.betas, dtype=np.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas <= 1)).all():
            raise ValueError("betas must be a 1-D array in (0, 1]")
        S = len(betas)
        tmap = np.arange(S) if self.timestep_map is None else np.asarray(self.timestep_map, np.int64)
        if tmap.shape != (S,):
            raise ValueError(f"timestep_map must have shape ({S},), got {tmap.shape}")
        object.__setattr__(self, "betas", betas)
        object.__setattr__(self, "timestep_map", tmap)
        object.__setattr__(self, "num_train_timesteps", int(self.num_train_timesteps or S))
        ac = np.cumprod(1.0 - betas)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        host = {
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": np.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1.0),
            "log_betas": np.log(betas),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": np.log(np.append(post_var[1], post_var[1:]) if S > 1
                                                     else betas),
            "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(1.0 - betas) / (1.0 - ac),
        }
        object.__setattr__(self, "_host", host)
        object.__setattr__(self, "_dev", {k: jnp.asarray(v, _F32) for k, v in host.items()})

    # -- construction ---------------------------------------------------------------
    @classmethod
    def cosine(cls, num_timesteps: int = NUM_TIMESTEPS, *, lambda_vlb: float = LAMBDA_VLB) -> "GaussianDiffusion":
        """The training process: cosine schedule with ``num_timesteps`` steps."""
        return cls(cosine_betas(num_timesteps), lambda_vlb=lambda_vlb)

    def respace(self, steps: int) -> "GaussianDiffusion":
        """The ``steps``-step process on evenly spaced timesteps (same ᾱ at the kept steps)."""
        kept = space_timesteps(self.num_steps, steps)
        ac = self._host["alphas_cumprod"][kept]
        betas = 1.0 - ac / np.append(1.0, ac[:-1])
        return GaussianDiffusion(betas, self.timestep_map[kept], self.num_train_timesteps, self.lambda_vlb)

    # -- arrays ---------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """(S,) float64 ᾱ_t."""
        return self._host["alphas_cumprod"]

    def coef(self, name: str) -> jax.Array:
        """A float32 device copy of one of the schedule arrays (see ``__post_init__``)."""
        return self._dev[name]

    # -- forward process and posterior ----------------------------------------------
    def q_sample(self, x0, t, noise):
        """``x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε``; x0, noise (B, ...), t (B,) int."""
        x0 = jnp.asarray(x0, _F32)
        nd = x0.ndim
        return (_extract(self._dev["sqrt_alphas_cumprod"], t, nd) * x0
                + _extract(self._dev["sqrt_one_minus_alphas_cumprod"], t, nd) * noise)

    def q_posterior(self, x0, x_t, t):
        """Mean, variance and clipped log-variance of q(x_{t−1} | x_t, x₀), each x_t's shape."""
        nd = jnp.ndim(x_t)
        mean = (_extract(self._dev["posterior_mean_coef1"], t, nd) * x0
                + _extract(self._dev["posterior_mean_coef2"], t, nd) * x_t)
        var = _extract(self._dev["posterior_variance"], t, nd) * jnp.ones_like(x_t)
        logvar = _extract(self._dev["posterior_log_variance_clipped"], t, nd) * jnp.ones_like(x_t)
        return mean, var, logvar

    def predict_x0(self, x_t, t, eps):
        """x̂₀ = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t."""
        nd = jnp.ndim(x_t)
        return (_extract(self._dev["sqrt_recip_alphas_cumprod"], t, nd) * x_t
                - _extract(self._dev["sqrt_recipm1_alphas_cumprod"], t, nd) * eps)

    def predict_eps(self, x_t, t, x0):
        """ε implied by x_t and x₀ (inverse of :meth:`predict_x0`)."""
        nd = jnp.ndim(x_t)
        return ((_extract(self._dev["sqrt_recip_alphas_cumprod"], t, nd) * x_t - x0)
                / _extract(self._dev["sqrt_recipm1_alphas_cumprod"], t, nd))

    def model_log_variance(self, v, t):
        """Learned-range log Σ = v log β_t + (1 − v) log β̃_t (β̃ clipped at t = 0)."""
        nd = jnp.ndim(v)
        max_log = _extract(self._dev["log_betas"], t, nd)
        min_log = _extract(self._dev["posterior_log_variance_clipped"], t, nd)
        return v * max_log + (1.0 - v) * min_log

    def p_mean_variance(self, eps, v, x_t, t, *, clip: bool = True):
        """Model mean, log-variance and x̂₀ of p(x_{t−1} | x_t) from the network outputs."""
        x0 = self.predict_x0(x_t, t, eps)
        if clip:
            x0 = jnp.clip(x0, -1.0, 1.0)
        mean, _, _ = self.q_posterior(x0, x_t, t)
        return mean, self.model_log_variance(v, t), x0

    # -- losses ---------------------------------------------------------------------
    def vb_terms(self, eps, v, x0, x_t, t):
        """(B,) VLB term L_t in bits per pixel: KL for t > 0, decoder NLL for t = 0 (no clipping)."""
        true_mean, _, true_logvar = self.q_posterior(x0, x_t, t)
        mean, logvar, _ = self.p_mean_variance(eps, v, x_t, t, clip=False)
        axes = tuple(range(1, jnp.ndim(x_t)))
        kl = jnp.mean(normal_kl(true_mean, true_logvar, mean, logvar), axis=axes) / _LOG2
        nll = -jnp.mean(discretized_gaussian_log_likelihood(x0, mean=mean, log_scale=0.5 * logvar),
                        axis=axes) / _LOG2
        return jnp.where(jnp.asarray(t) == 0, nll, kl)

    def hybrid_loss(self, eps, v, x0, x_t, t, noise):
        """Per-image hybrid loss from network outputs (B, ...).

        Returns a dict of (B,) arrays: ``loss = mse + λ·T·vb``, ``mse`` (L_simple),
        ``vb`` (L_t in bits per pixel, computed with a stop-gradient on ε̂).
        """
        axes = tuple(range(1, jnp.ndim(x_t)))
        mse = jnp.mean((noise - eps) ** 2, axis=axes)
        vb = self.vb_terms(jax.lax.stop_gradient(eps), v, x0, x_t, t)
        return {"loss": mse + self.lambda_vlb * self.num_train_timesteps * vb, "mse": mse, "vb": vb}

    def training_losses(self, apply: ApplyFn, params, x0, key):
        """Hybrid loss of a batch with uniformly drawn t and noise from ``key``.

        Returns ``(loss, aux)``: scalar mean loss, and a dict of scalar means
        ``loss``, ``mse``, ``vb``.
        """
        x0 = jnp.asarray(x0, _F32)
        k_t, k_n = jax.random.split(key)
        t = jax.random.randint(k_t, x0.shape[:1], 0, self.num_steps)
        noise = jax.random.normal(k_n, x0.shape, _F32)
        x_t = self.q_sample(x0, t, noise)
        eps, v = apply(params, x_t, jnp.asarray(self.timestep_map, jnp.int32)[t])
        terms = self.hybrid_loss(eps, v, x0, x_t, t, noise)
        aux = {k: jnp.mean(val) for k, val in terms.items()}
        return aux["loss"], aux

    # -- sampling -------------------------------------------------------------------
    def denoise(self, apply: ApplyFn, params, x_t, t):
        """x̂₀ from ε̂ at step t of this process (no clipping); x_t (B, n, n), t (B,) or scalar."""
        x_t = jnp.asarray(x_t, _F32)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), x_t.shape[:1])
        eps, _ = apply(params, x_t, jnp.asarray(self.timestep_map, jnp.int32)[t])
        return self.predict_x0(x_t, t, eps)

    def p_sample_loop(self, apply: ApplyFn, params, key, shape, *, clip: bool = True, x_T=None):
        """Ancestral sampling over all steps of this process (use a :meth:`respace` d process).

        Args:
            apply: the network, ``apply(params, x, t) -> (eps, v)``.
            params: its parameters.
            key: a ``jax.random`` key.
            shape: (B, n, n) of the samples.
            clip: clip x̂₀ to [−1, 1] at every step.
            x_T: optional start noise of ``shape`` (default drawn from ``key``).

        Returns:
            (B, n, n) float32 samples (traceable; wrap in ``jax.jit``).
        """
        k0, key = jax.random.split(key)
        x = jax.random.normal(k0, shape, _F32) if x_T is None else jnp.asarray(x_T, _F32)
        tmap = jnp.asarray(self.timestep_map, jnp.int32)
        S = self.num_steps

        def body(j, x):
            i = S - 1 - j
            t = jnp.full(shape[:1], i, jnp.int32)
            eps, v = apply(params, x, tmap[t])
            mean, logvar, _ = self.p_mean_variance(eps, v, x, t, clip=clip)
            z = jax.random.normal(jax.random.fold_in(key, i), shape, _F32)
            return mean + jnp.where(i > 0, jnp.exp(0.5 * logvar), 0.0) * z

        return jax.lax.fori_loop(0, S, body, x)

    def sampler(self, apply: ApplyFn, *, clip: bool = True):
        """A jitted ``sample(params, key, shape) -> (B, n, n)`` (shape static)."""
        return jax.jit(functools.partial(self.p_sample_loop, apply, clip=clip), static_argnums=(2,))
