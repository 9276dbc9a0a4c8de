"""Conditional multi-scale normalising flow for EIT (Denker et al. 2021; DGM comparison §3.2).

The flow maps an image x (B, n, n) to a latent z (B, n²) given the
Gauss–Newton image c (B, n, n), with log p(x | c) = log N(z; 0, I) +
log |det ∂z/∂x|, and is trained by maximum likelihood (paper eq. 17).
Reconstruction: the mean of ``n_samples`` (20, the DGM code) samples
x = f⁻¹(z; c), z ~ N(0, T² I), and their pixel-wise standard deviation as an
uncertainty map.

Architecture (following the DGM code's ``CINN``: ``downsampling='invertible'``
initialised at Haar, ``num_blocks=2``, GLOW couplings with clamp 2.5, ActNorm,
fixed orthogonal 1×1 convolutions, ``downsample_levels=3``):

* a fixed normalisation x ↦ (x − shift)/scale (its log-det is counted);
* Haar squeeze (orthonormal 2×2 wavelet, n × n × 1 → n/2 × n/2 × 4), then two
  unconditional couplings (1×1 subnets), each followed by ActNorm;
* for each of ``levels − 1`` scales: ``blocks`` conditional coupling blocks
  (each: ActNorm → GLOW affine coupling conditioned on the features c_ℓ of
  the conditioning network at that resolution → fixed orthogonal 1×1 conv;
  subnets alternate 1×1 and 3×3 convolutions), a Haar squeeze with two
  unconditional couplings, and a split that sends half the channels to z;
* a final scale of ``blocks`` conditional coupling blocks.

The DGM code ends with dense couplings on a flattened 128-dim part
conditioned on a global feature vector; we keep the last scale
convolutional instead (``levels`` controls the depth).

GLOW affine coupling (Ardizzone et al. 2019, FrEIA's ``GLOWCouplingBlock``):
split channels x = (x₁, x₂); y₂ = x₂ ⊙ exp(s₂(x₁, c)) + t₂(x₁, c);
y₁ = x₁ ⊙ exp(s₁(y₂, c)) + t₁(y₂, c); log-det = Σ s₁ + Σ s₂; scales soft-clamped
s = 0.636·clamp·atan(s_raw/clamp). The subnets' last convolution starts at
zero, so the flow starts as the identity (up to the fixed maps).

Conditioning network: a small CNN on the normalised GN image (3×3 conv +
residual block at full resolution, then per scale a stride-2 3×3 conv and a
residual block), whose outputs at n/2, n/4, … are the features c_ℓ of the
coupling blocks at those resolutions ("resized per scale"). It is trained
jointly with the flow.

Dequantisation: the images are piecewise constant, so training adds
N(0, dequant_std²) noise to x (DGM code: ``train_noise = (0, 0.005)``).

Everything is float32 by default (``CNFConfig.dtype``; tests use float64).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..recon.result import Result
from .training import (FitConfig, count_params, fit, fit_summary, host_normal, host_rng, host_zeros, load_arrays,
                       read_meta, save_arrays, split_model)

__all__ = ["CNFConfig", "ConditionalFlow", "CNF", "haar_squeeze", "haar_unsqueeze", "nll_loss", "train_cnf"]

_ATAN_FACTOR = 2.0 / math.pi   # FrEIA: 0.636 * clamp * atan(s / clamp)


@dataclasses.dataclass(frozen=True)
class CNFConfig:
    """Architecture and training of the conditional flow (defaults: DGM code ``train_eit.py``).

    Attributes:
        image_size: n (divisible by 2**levels).
        levels: scales (DGM code ``downsample_levels=3``).
        blocks: conditional coupling blocks per scale (DGM code ``num_blocks=2``).
        hidden: subnet width per scale (the DGM code uses 2 × input channels;
            we use fixed widths).
        cond_channels: conditioning features per scale (DGM code 4, 16, 32, …).
        cond_width: width of the conditioning trunk at full resolution.
        clamp: soft clamp of the log-scales (DGM code 2.5).
        shift, scale: x ↦ (x − shift)/scale before the flow (background 1).
        cond_shift, cond_scale: the same for the GN image.
        dequant_std: training noise std on x (DGM code 0.005).
        n_samples: samples per reconstruction (DGM code 20).
        temperature: std of the latent when sampling.
        dtype: "float32" (default) or "float64".
        fit: :class:`FitConfig` (DGM code: Adam lr 1e-3, weight decay 1e-5,
            batch 8, gradient clip 1, 320 epochs).
        seed: parameter initialisation (and the fixed orthogonal convolutions).
    """

    image_size: int = 128
    levels: int = 3                      # DGM code downsample_levels
    blocks: int = 2                      # DGM code num_blocks
    hidden: tuple = (32, 64, 96)
    cond_channels: tuple = (8, 16, 32)
    cond_width: int = 16
    clamp: float = 2.5                   # DGM code
    shift: float = 1.0
    scale: float = 0.5
    cond_shift: float = 1.0
    cond_scale: float = 0.5
    dequant_std: float = 0.005           # DGM code train_noise
    n_samples: int = 20                  # DGM code / §4: 20 samples
    temperature: float = 1.0
    dtype: str = "float32"
    fit: FitConfig = FitConfig(epochs=320, batch_size=8, lr=1e-3, weight_decay=1e-5, grad_clip=1.0)
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.fit, dict):
            object.__setattr__(self, "fit", FitConfig(**self.fit))
        for f in ("hidden", "cond_channels"):
            object.__setattr__(self, f, tuple(int(x) for x in getattr(self, f)))
        if self.levels < 1 or self.blocks < 1:
            raise ValueError(f"levels and blocks must be >= 1, got {self.levels}, {self.blocks}")
        if self.image_size % 2**self.levels:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**levels = {2**self.levels}")
        if len(self.hidden) < self.levels or len(self.cond_channels) < self.levels:
            raise ValueError(f"hidden and cond_channels need one entry per level ({self.levels})")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.scale <= 0 or self.cond_scale <= 0 or self.clamp <= 0 or self.dequant_std < 0:
            raise ValueError("scale, cond_scale and clamp must be positive, dequant_std >= 0")
        if self.n_samples < 1 or self.temperature < 0:
            raise ValueError("n_samples must be >= 1 and temperature >= 0")

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CNFConfig":
        return cls(**d)


# -----------------------------------------------------------------------------------
# Fixed invertible maps
# -----------------------------------------------------------------------------------

def haar_squeeze(x):
    """(B, H, W, C) → (B, H/2, W/2, 4C): orthonormal 2×2 Haar transform, channels [LL, LH, HL, HH]."""
    a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
    c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    return 0.5 * jnp.concatenate([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d], axis=-1)


def haar_unsqueeze(y):
    """Inverse of :func:`haar_squeeze` (the transform is symmetric and orthogonal)."""
    ch = y.shape[-1] // 4
    ll, lh, hl, hh = (y[..., i * ch:(i + 1) * ch] for i in range(4))
    a = 0.5 * (ll + lh + hl + hh)
    b = 0.5 * (ll - lh + hl - hh)
    c = 0.5 * (ll + lh - hl - hh)
    d = 0.5 * (ll - lh - hl + hh)
    B, H, W, _ = y.shape
    x = jnp.zeros((B, 2 * H, 2 * W, ch), y.dtype)
    x = x.at[:, 0::2, 0::2].set(a).at[:, 0::2, 1::2].set(b)
    return x.at[:, 1::2, 0::2].set(c).at[:, 1::2, 1::2].set(d)


class Fixed(nnx.Variable):
    """A non-trainable array of a module (not an ``nnx.Param``)."""


def _conv(cin, cout, k, dtype, rngs, *, std=None, zero=False, stride=1):
    return nnx.Conv(cin, cout, (k, k), strides=stride, padding="SAME", dtype=dtype, param_dtype=dtype,
                    kernel_init=host_zeros if zero else host_normal(std), bias_init=host_zeros, rngs=rngs)


# -----------------------------------------------------------------------------------
# Flow layers: forward(x, c) -> (y, logdet (B,)), inverse(y, c) -> x
# -----------------------------------------------------------------------------------

def _sum_hw(x):
    return jnp.sum(x, axis=(1, 2, 3))


class ActNorm(nnx.Module):
    """y = (x + b) · exp(log_s) per channel; log-det H·W·Σ log_s. Starts at the identity."""

    def __init__(self, ch: int, dtype):
        self.log_scale = nnx.Param(host_zeros(None, (ch,), dtype))
        self.bias = nnx.Param(host_zeros(None, (ch,), dtype))

    def forward(self, x, c=None):
        y = (x + self.bias[...]) * jnp.exp(self.log_scale[...])
        return y, jnp.full(x.shape[:1], x.shape[1] * x.shape[2] * jnp.sum(self.log_scale[...]), x.dtype)

    def inverse(self, y, c=None):
        return y * jnp.exp(-self.log_scale[...]) - self.bias[...]


class Orthogonal1x1(nnx.Module):
    """A fixed random orthogonal 1×1 convolution (DGM code ``Fixed1x1ConvOrthogonal``); log-det 0."""

    def __init__(self, ch: int, dtype, rngs: nnx.Rngs):
        # QR in float64 on the host, so W is orthogonal to the working precision
        q, r = np.linalg.qr(host_rng(rngs.params()).standard_normal((ch, ch)))
        self.w = Fixed(jnp.asarray(q * np.sign(np.diag(r)), dtype))

    def forward(self, x, c=None):
        return x @ self.w[...], jnp.zeros(x.shape[:1], x.dtype)

    def inverse(self, y, c=None):
        return y @ self.w[...].T


class Subnet(nnx.Module):
    """conv k×k → LeakyReLU → conv k×k → LeakyReLU → conv k×k.

    Initialised as in the DGM code (``CINN.init_params``): weights 0.02·N(0, 1),
    the last convolution zero, so every coupling starts as the identity.
    """

    def __init__(self, cin: int, cout: int, hidden: int, k: int, dtype, rngs: nnx.Rngs):
        self.c1 = _conv(cin, hidden, k, dtype, rngs, std=0.02)
        self.c2 = _conv(hidden, hidden, k, dtype, rngs, std=0.02)
        self.c3 = _conv(hidden, cout, k, dtype, rngs, zero=True)

    def __call__(self, x):
        return self.c3(jax.nn.leaky_relu(self.c2(jax.nn.leaky_relu(self.c1(x)))))


class Coupling(nnx.Module):
    """GLOW affine coupling of both channel halves, optionally conditioned on features c (B, H, W, cc)."""

    def __init__(self, ch: int, cond_ch: int, hidden: int, k: int, clamp: float, dtype, rngs: nnx.Rngs):
        self.c1 = ch // 2
        self.c2 = ch - self.c1
        self.clamp = clamp
        self.net2 = Subnet(self.c1 + cond_ch, 2 * self.c2, hidden, k, dtype, rngs)   # (x1, c) → s2, t2
        self.net1 = Subnet(self.c2 + cond_ch, 2 * self.c1, hidden, k, dtype, rngs)   # (y2, c) → s1, t1

    def _st(self, net, h, c):
        out = net(h if c is None else jnp.concatenate([h, c], axis=-1))
        s, t = jnp.split(out, 2, axis=-1)
        return self.clamp * _ATAN_FACTOR * jnp.arctan(s / self.clamp), t

    def forward(self, x, c=None):
        x1, x2 = x[..., :self.c1], x[..., self.c1:]
        s2, t2 = self._st(self.net2, x1, c)
        y2 = x2 * jnp.exp(s2) + t2
        s1, t1 = self._st(self.net1, y2, c)
        y1 = x1 * jnp.exp(s1) + t1
        return jnp.concatenate([y1, y2], axis=-1), _sum_hw(s1) + _sum_hw(s2)

    def inverse(self, y, c=None):
        y1, y2 = y[..., :self.c1], y[..., self.c1:]
        s1, t1 = self._st(self.net1, y2, c)
        x1 = (y1 - t1) * jnp.exp(-s1)
        s2, t2 = self._st(self.net2, x1, c)
        x2 = (y2 - t2) * jnp.exp(-s2)
        return jnp.concatenate([x1, x2], axis=-1)


class ResBlock(nnx.Module):
    """x + conv3×3(LeakyReLU(conv3×3(x)))."""

    def __init__(self, ch: int, dtype, rngs: nnx.Rngs):
        self.c1 = _conv(ch, ch, 3, dtype, rngs)
        self.c2 = _conv(ch, ch, 3, dtype, rngs)

    def __call__(self, x):
        return x + self.c2(jax.nn.leaky_relu(self.c1(x)))


class CondNet(nnx.Module):
    """GN image (B, n, n) → features [(B, n/2, n/2, C₀), (B, n/4, n/4, C₁), …] for the scales."""

    def __init__(self, config: CNFConfig, dtype, rngs: nnx.Rngs):
        w = config.cond_width
        self.inp = _conv(1, w, 3, dtype, rngs)
        self.res = ResBlock(w, dtype, rngs)
        down, heads, cin = [], [], w
        for ch in config.cond_channels[:config.levels]:
            down.append(_conv(cin, ch, 3, dtype, rngs, stride=2))
            heads.append(ResBlock(ch, dtype, rngs))
            cin = ch
        self.down = nnx.List(down)
        self.heads = nnx.List(heads)

    def __call__(self, c):
        h = self.res(jax.nn.leaky_relu(self.inp(c[..., None])))
        feats = []
        for down, head in zip(self.down, self.heads):
            h = head(jax.nn.leaky_relu(down(h)))
            feats.append(h)
        return feats


class ConditionalFlow(nnx.Module):
    """The multi-scale conditional flow x (B, n, n) ↔ z (B, n²) given a GN image c (B, n, n)."""

    def __init__(self, config: CNFConfig, *, rngs: nnx.Rngs):
        self.config = config
        dt = config.jnp_dtype
        cc = config.cond_channels
        self.cond = CondNet(config, dt, rngs)

        def uncond(ch, hidden):
            return [Coupling(ch, 0, hidden, 1, config.clamp, dt, rngs), ActNorm(ch, dt),
                    Coupling(ch, 0, hidden, 1, config.clamp, dt, rngs), ActNorm(ch, dt)]

        def conditioned(ch, level):
            layers = []
            for k in range(config.blocks):
                layers += [ActNorm(ch, dt),
                           Coupling(ch, cc[level], config.hidden[level], 1 if k % 2 == 0 else 3,
                                    config.clamp, dt, rngs),
                           Orthogonal1x1(ch, dt, rngs)]
            return layers

        ch = 4
        self.entry = nnx.List(uncond(ch, config.hidden[0]))
        scales, downs = [], []
        for level in range(config.levels - 1):
            scales.append(nnx.List(conditioned(ch, level)))
            ch *= 4
            downs.append(nnx.List(uncond(ch, config.hidden[level + 1])))
            ch //= 2                          # split: half the channels leave for z
        scales.append(nnx.List(conditioned(ch, config.levels - 1)))
        self.scales = nnx.List(scales)
        self.downs = nnx.List(downs)

    # -- shapes ---------------------------------------------------------------------------
    def latent_shapes(self) -> list[tuple[int, int, int]]:
        """(H, W, C) of the split-off parts and the final part of z, in z's order."""
        n, ch, shapes = self.config.image_size // 2, 4, []
        for _ in range(self.config.levels - 1):
            n, ch = n // 2, ch * 4
            shapes.append((n, n, ch // 2))
            ch //= 2
        shapes.append((n, n, ch))
        return shapes

    # -- maps -------------------------------------------------------------------------------
    @staticmethod
    def _run(layers, h, c, ld):
        for layer in layers:
            h, d = layer.forward(h, c)
            ld = ld + d
        return h, ld

    @staticmethod
    def _run_inverse(layers, h, c):
        for layer in reversed(layers):
            h = layer.inverse(h, c)
        return h

    def features(self, gn):
        """Conditioning features of the GN images (B, n, n)."""
        cfg = self.config
        gn = (jnp.asarray(gn, cfg.jnp_dtype) - cfg.cond_shift) / cfg.cond_scale
        return self.cond(gn)

    def forward(self, x, gn, feats=None):
        """x (B, n, n) → (z (B, n²), log|det ∂z/∂x| (B,))."""
        cfg = self.config
        feats = self.features(gn) if feats is None else feats
        x = (jnp.asarray(x, cfg.jnp_dtype) - cfg.shift) / cfg.scale
        n2 = cfg.image_size**2
        ld = jnp.full(x.shape[:1], -n2 * math.log(cfg.scale), x.dtype)
        h = haar_squeeze(x[..., None])
        h, ld = self._run(self.entry, h, None, ld)
        zs = []
        for level in range(cfg.levels - 1):
            h, ld = self._run(self.scales[level], h, feats[level], ld)
            h = haar_squeeze(h)
            h, ld = self._run(self.downs[level], h, None, ld)
            half = h.shape[-1] // 2
            zs.append(h[..., half:].reshape(h.shape[0], -1))
            h = h[..., :half]
        h, ld = self._run(self.scales[-1], h, feats[cfg.levels - 1], ld)
        zs.append(h.reshape(h.shape[0], -1))
        return jnp.concatenate(zs, axis=1), ld

    def inverse(self, z, gn, feats=None):
        """z (B, n²) → x (B, n, n)."""
        cfg = self.config
        feats = self.features(gn) if feats is None else feats
        z = jnp.asarray(z, cfg.jnp_dtype)
        shapes = self.latent_shapes()
        sizes = [a * b * c for a, b, c in shapes]
        parts = jnp.split(z, np.cumsum(sizes)[:-1], axis=1)
        parts = [p.reshape(z.shape[0], *s) for p, s in zip(parts, shapes)]
        h = self._run_inverse(self.scales[-1], parts[-1], feats[cfg.levels - 1])
        for level in reversed(range(cfg.levels - 1)):
            h = jnp.concatenate([h, parts[level]], axis=-1)
            h = self._run_inverse(self.downs[level], h, None)
            h = haar_unsqueeze(h)
            h = self._run_inverse(self.scales[level], h, feats[level])
        h = self._run_inverse(self.entry, h, None)
        x = haar_unsqueeze(h)[..., 0]
        return x * cfg.scale + cfg.shift

    def log_prob(self, x, gn):
        """log p(x | gn) in nats per image (B,)."""
        z, ld = self.forward(x, gn)
        return -0.5 * jnp.sum(z**2, axis=1) - 0.5 * z.shape[1] * math.log(2 * math.pi) + ld


def nll_loss(model: ConditionalFlow, x, gn, key, dequant_std: float):
    """Mean negative log-likelihood per pixel (nats) of dequantised images: ``(loss, aux)``."""
    x = jnp.asarray(x, model.config.jnp_dtype)
    if dequant_std > 0:
        x = x + dequant_std * jax.random.normal(key, x.shape, x.dtype)
    lp = model.log_prob(x, gn)
    nll = -jnp.mean(lp) / x[0].size
    return nll, {"nll": nll}


# -----------------------------------------------------------------------------------
# Trained model
# -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _init(config: CNFConfig):
    """``(graphdef, params, rest)`` of a fresh flow from ``config.seed``."""
    return split_model(ConditionalFlow(config, rngs=nnx.Rngs(params=jax.random.PRNGKey(config.seed))))


@functools.lru_cache(maxsize=16)
def _sample_fn(graphdef, n_samples: int):
    @jax.jit
    def fn(params, rest, gn, key, temperature):
        model = nnx.merge(graphdef, params, rest)
        feats = model.features(gn)
        b, d = gn.shape[0], gn.shape[1] * gn.shape[2]

        def one(k):
            z = temperature * jax.random.normal(k, (b, d), feats[0].dtype)
            return model.inverse(z, gn, feats)

        xs = jax.lax.map(one, jax.random.split(key, n_samples))       # (S, B, n, n)
        return xs
    return fn


@dataclasses.dataclass(eq=False)
class CNF:
    """A trained conditional flow.

    Attributes:
        config: the :class:`CNFConfig`.
        params: trainable ``nnx.State``; rest: the fixed orthogonal convolutions.
        history: training history.
        summary: how the last training run ended (``stop_reason``, ``wall_time`` s,
            ``steps``, ``best_val_loss``, ``best_step``); empty for a loaded model.
    """

    config: CNFConfig
    params: object
    rest: object
    history: list = dataclasses.field(default_factory=list)
    summary: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def init(cls, config: CNFConfig) -> "CNF":
        """An untrained flow (the identity up to the fixed maps) from ``config.seed``."""
        _, params, rest = _init(config)
        return cls(config, params, rest)

    @property
    def graphdef(self):
        return _init(self.config)[0]

    def module(self) -> ConditionalFlow:
        """The flow as an ``nnx.Module`` (for direct use of forward/inverse)."""
        return nnx.merge(self.graphdef, self.params, self.rest)

    def sample(self, gn, key, *, n_samples: int | None = None, temperature: float | None = None,
               batch_size: int = 32) -> np.ndarray:
        """Posterior samples: (S, B, n, n) float32 for GN images (B, n, n).

        Args:
            gn: GN images (B, n, n) (or (n, n)).
            key: a JAX PRNG key; batch chunk i uses ``fold_in(key, i)``.
            n_samples: S (default ``config.n_samples``).
            temperature: latent std (default ``config.temperature``).
            batch_size: images per call.
        """
        gn = np.asarray(gn, np.float64)
        single = gn.ndim == 2
        gn = gn[None] if single else gn
        n = self.config.image_size
        if gn.ndim != 3 or gn.shape[1:] != (n, n):
            raise ValueError(f"GN images must be (B, {n}, {n}) or ({n}, {n}) ({n}x{n} pixels), got {gn.shape}")
        s = self.config.n_samples if n_samples is None else int(n_samples)
        t = self.config.temperature if temperature is None else float(temperature)
        fn = _sample_fn(self.graphdef, s)
        out = [np.asarray(fn(self.params, self.rest, jnp.asarray(gn[i:i + batch_size], self.config.jnp_dtype),
                             jax.random.fold_in(key, i // batch_size), t))
               for i in range(0, len(gn), batch_size)]
        xs = np.concatenate(out, axis=1).astype(np.float32)
        return xs[:, 0] if single else xs

    def reconstruct(self, gn, key, **kw) -> Result:
        """The posterior mean of :meth:`sample` as ``image`` (B, n, n) or (n, n), with ``extras["std"]``
        (its pixel-wise std, the uncertainty map) and ``extras["samples"]`` (S, B, n, n) or (S, n, n)."""
        t0 = time.perf_counter()
        xs = self.sample(gn, key, **kw)
        return Result(sigma=None, image=xs.mean(axis=0), method="cnf", history={}, n_iter=1,
                      wall_time=time.perf_counter() - t0, options=dict(kw),
                      extras=dict(std=xs.std(axis=0), samples=xs))

    def save(self, path) -> Path:
        meta = {"kind": "jaxeit.dgm.CNF", "config": self.config.to_dict(), "history": self.history}
        return save_arrays(path, (self.params, self.rest), meta)

    @classmethod
    def load(cls, path) -> "CNF":
        meta = read_meta(path)
        config = CNFConfig.from_dict(meta["config"])
        _, params, rest = _init(config)
        (params, rest), meta = load_arrays(path, (params, rest))
        return cls(config, params, rest, meta.get("history", []))


@functools.lru_cache(maxsize=16)
def _train_loss(graphdef, dequant_std: float):
    def loss(params, rest, batch, key, extra):
        return nll_loss(nnx.merge(graphdef, params, rest), batch["image"], batch["gn_image"], key, dequant_std)
    return loss


def train_cnf(config: CNFConfig, train: dict, *, workdir=None, data_tag: str = "", resume: bool = True,
              progress: bool = True, log=print, until_step: int | None = None, val: dict | None = None) -> CNF:
    """Train by maximum likelihood on ``train = {"image": (n, H, W), "gn_image": (n, H, W)}``.

    With ``workdir`` the run checkpoints to ``cnf.ckpt.npz`` and resumes; the
    result is also saved as ``<workdir>/cnf.npz``. With ``val`` (the same keys)
    and ``config.fit.patience``, training stops early on the validation NLL and
    keeps the best parameters.
    """
    log = log or (lambda *a, **k: None)
    n = config.image_size
    images = np.asarray(train["image"], np.float32)
    gns = np.asarray(train["gn_image"], np.float32)
    if images.shape[1:] != (n, n) or gns.shape != images.shape:
        raise ValueError(f"image and gn_image must both be (N, {n}, {n}), got {images.shape}, {gns.shape}")
    graphdef, params, rest = _init(config)
    log(f"[cnf] {count_params(params):,} parameters; {len(images)} training samples")

    val_data = None if val is None else {"image": np.asarray(val["image"], np.float32),
                                         "gn_image": np.asarray(val["gn_image"], np.float32)}
    res = fit(_train_loss(graphdef, config.dequant_std), params,
              data={"image": images, "gn_image": gns}, config=config.fit, rest=rest, workdir=workdir,
              name="cnf", run_config={"model": config.to_dict(), "data": data_tag}, resume=resume,
              progress=progress, log=log, until_step=until_step,
              val_data=val_data if config.fit.patience is not None else None)
    model = CNF(config, res.params, rest, res.history, fit_summary(res))
    if workdir is not None:
        model.save(Path(workdir) / "cnf.npz")
    return model
