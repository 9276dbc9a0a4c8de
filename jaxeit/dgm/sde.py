"""Forward SDEs of score-based diffusion (Song et al. 2021; DGM comparison §3.3).

Two SDEs on t ∈ [0, T], T = 1, in the style of ``score_sde``'s ``sde_lib``:

* :class:`VPSDE` (variance preserving): dx = −½β(t)x dt + √β(t) dw with
  β(t) = β_min + t(β_max − β_min), β_min = 0.1, β_max = 20; marginal
  x_t | x₀ ~ N(α(t)x₀, (1 − α(t)²) I), α(t) = exp(−¼t²(β_max − β_min) − ½tβ_min);
  prior N(0, I).
* :class:`VESDE` (variance exploding): dx = √(d[σ²(t)]/dt) dw with
  σ(t) = σ_min (σ_max/σ_min)^t, σ_min = 0.01, σ_max = 128 (the DGM code's
  ``EIT_configs.py``); marginal x_t | x₀ ~ N(x₀, σ(t)² I) (the ``score_sde``
  convention: σ(0) = σ_min is taken as part of the data); prior N(0, σ_max² I).

Shapes: ``x`` is (B, ...) (any trailing event shape) and ``t`` is (B,) or a
scalar; per-sample coefficients have ``t``'s shape and are broadcast against
``x`` over its trailing axes. Arithmetic follows the dtype of ``x`` / ``t``
(float32 for networks, float64 where the caller asks for it).

The classes are frozen dataclasses (hashable, usable as static arguments of
``jax.jit``) registered as pytrees without leaves, so they can also be passed
as ordinary arguments. :func:`get_sde` builds one from a name.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = ["VPSDE", "VESDE", "get_sde", "SDE_NAMES"]

#: Accepted names of :func:`get_sde` (case-insensitive).
SDE_NAMES = ("vp", "vpsde", "ve", "vesde")


def _bcast(coef, x):
    """Reshape a per-sample coefficient of shape ``t.shape`` to broadcast against ``x``."""
    coef = jnp.asarray(coef)
    return coef.reshape(coef.shape + (1,) * (jnp.ndim(x) - coef.ndim))


def _register(cls):
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=[], meta_fields=fields)


class _SDEBase:
    """Shared methods; subclasses define ``beta``/``sigma``, :meth:`marginal_coeffs`, ``diffusion``."""

    N: int

    @property
    def T(self) -> float:
        """End time of the forward process (1)."""
        return 1.0

    def marginal(self, x0, t):
        """Mean and std of the forward marginal p(x_t | x₀).

        Args:
            x0: (B, ...) clean data.
            t: (B,) times in (0, T] (or a scalar).

        Returns:
            ``(mean, std)``: mean of x0's shape, std of t's shape.
        """
        a, std = self.marginal_coeffs(t)
        return _bcast(a, x0) * x0, std

    def drift_diffusion(self, x, t):
        """Drift f(x, t) (x's shape) and diffusion g(t) (t's shape) of the forward SDE."""
        raise NotImplementedError

    def discretize(self, x, t, dt=None):
        """Forward transition over [t − dt, t] as x_t = x_{t−dt} + f + G z (reverse-diffusion predictor).

        Args:
            x: (B, ...) state.
            t: (B,) or scalar time.
            dt: step (default ``T / N``, as ``score_sde``'s discrete schedules).

        Returns:
            ``(f, G)``: f of x's shape, G of t's shape.
        """
        raise NotImplementedError

    def langevin_alpha(self, t, dt=None):
        """The α factor of the Langevin corrector's step size (t's shape): 1 − β_i (VP) or 1 (VE)."""
        raise NotImplementedError

    def prior_sample(self, key, shape, dtype=jnp.float32):
        """A sample of the prior p_T, an array of ``shape`` and ``dtype``."""
        raise NotImplementedError

    def prior_logp(self, z):
        """log p_T(z) (B,) of (B, ...) points, in nats."""
        z = jnp.asarray(z)
        d = math.prod(z.shape[1:])
        s2 = self.prior_std() ** 2
        return -0.5 * d * math.log(2 * math.pi * s2) - jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=1) / (2 * s2)

    def prior_std(self) -> float:
        raise NotImplementedError


@_register
@dataclasses.dataclass(frozen=True)
class VPSDE(_SDEBase):
    """Variance-preserving SDE (DDPM's continuous limit).

    Attributes:
        beta_min, beta_max: β(0) and β(1) (0.1, 20).
        N: steps of the default discretisation (1000).
        eps: smallest sampling time (``score_sde``: 1e-3 for VP).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    N: int = 1000
    eps: float = 1e-3

    def __post_init__(self):
        if not 0 <= self.beta_min < self.beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max, got {self.beta_min}, {self.beta_max}")
        _check_common(self)

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _log_alpha(self, t):
        """log α(t) = −½∫₀ᵗ β."""
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal_coeffs(self, t):
        """``(α(t), std(t))``, each of t's shape: x_t = α x₀ + std z."""
        t = jnp.asarray(t)
        la = self._log_alpha(t)
        return jnp.exp(la), jnp.sqrt(-jnp.expm1(2.0 * la))

    def drift_diffusion(self, x, t):
        b = self.beta(jnp.asarray(t))
        return -0.5 * _bcast(b, x) * x, jnp.sqrt(b)

    def _beta_step(self, t, dt):
        """β_i = 1 − α(t)²/α(t−dt)² = 1 − exp(−∫_{t−dt}^t β): the exact forward kernel's variance."""
        t = jnp.asarray(t)
        dt = self.T / self.N if dt is None else dt
        lo = jnp.maximum(t - dt, 0.0)
        return -jnp.expm1(2.0 * (self._log_alpha(t) - self._log_alpha(lo)))

    def discretize(self, x, t, dt=None):
        beta = self._beta_step(t, dt)
        return (jnp.sqrt(1.0 - _bcast(beta, x)) - 1.0) * x, jnp.sqrt(beta)

    def langevin_alpha(self, t, dt=None):
        return 1.0 - self._beta_step(t, dt)

    def prior_sample(self, key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype)

    def prior_std(self) -> float:
        return 1.0


@_register
@dataclasses.dataclass(frozen=True)
class VESDE(_SDEBase):
    """Variance-exploding SDE (NCSN's continuous limit).

    Attributes:
        sigma_min, sigma_max: σ(0) and σ(1) (0.01 and 128, the DGM code; ``score_sde`` uses 50–378).
        N: steps of the default discretisation (1000).
        eps: smallest sampling time (``score_sde``: 1e-5 for VE).
    """

    sigma_min: float = 0.01
    sigma_max: float = 128.0
    N: int = 1000
    eps: float = 1e-5

    def __post_init__(self):
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        _check_common(self)

    @property
    def log_ratio(self) -> float:
        """log(σ_max/σ_min)."""
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        return self.sigma_min * jnp.exp(jnp.asarray(t) * self.log_ratio)

    def marginal_coeffs(self, t):
        """``(1, σ(t))``, each of t's shape."""
        s = self.sigma(t)
        return jnp.ones_like(s), s

    def drift_diffusion(self, x, t):
        return jnp.zeros_like(x), self.sigma(t) * math.sqrt(2.0 * self.log_ratio)

    def discretize(self, x, t, dt=None):
        t = jnp.asarray(t)
        dt = self.T / self.N if dt is None else dt
        # G² = σ(t)² − σ(t − dt)²; below t = dt the lower end is σ(0) = σ_min
        var = self.sigma(t) ** 2 - self.sigma(jnp.maximum(t - dt, 0.0)) ** 2
        return jnp.zeros_like(x), jnp.sqrt(jnp.maximum(var, 0.0))

    def langevin_alpha(self, t, dt=None):
        return jnp.ones_like(jnp.asarray(t))

    def prior_sample(self, key, shape, dtype=jnp.float32):
        return self.sigma_max * jax.random.normal(key, shape, dtype)

    def prior_std(self) -> float:
        return self.sigma_max


def _check_common(sde) -> None:
    if int(sde.N) < 1:
        raise ValueError(f"N must be >= 1, got {sde.N}")
    if not 0 < sde.eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {sde.eps}")


def get_sde(name: str, **kwargs):
    """An SDE from its name: ``"ve"``/``"vesde"`` or ``"vp"``/``"vpsde"`` (case-insensitive).

    ``kwargs`` go to the class (e.g. ``sigma_max=128``, ``N=1000``).

    Raises:
        ValueError: for an unknown name.
    """
    key = str(name).lower()
    if key in ("ve", "vesde"):
        return VESDE(**kwargs)
    if key in ("vp", "vpsde"):
        return VPSDE(**kwargs)
    raise ValueError(f"unknown SDE {name!r}; expected one of {', '.join(SDE_NAMES)}")
