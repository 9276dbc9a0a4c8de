"""Two-stage conditional VAE for EIT (Seo et al. 2019, as modified in the DGM comparison, §3.1).

Stage 1 (:class:`VAE`): a convolutional VAE on ground-truth images (float32,
channels-last). Encoder: four 5×5 stride-2 convolutions with 16, 32, 64, 128
channels (LeakyReLU, then GroupNorm), flattened to two linear heads for the
latent mean μ and log-variance (latent 16). Decoder: the mirror image — a
linear layer back to 128 × (n/16)², four 5×5 stride-2 transposed convolutions
with 64, 32, 16, 1 channels (ReLU, then GroupNorm, none after the last).
Loss (paper eq. 12; the DGM code's ``loss_fn``): Σ_pixels (x̂ − x)² + KL(q(z|x) ‖ N(0, I)),
both summed per sample and averaged over the batch.

Stage 2 (:class:`LatentMLP`): a fully connected network from the 208
voltages (standardised per measurement with training-set statistics) to the
latent: 208 → 256 → 128 → 64 → 32 → 16 with LeakyReLU, and ``5·tanh`` on the
output (the DGM code). Loss (paper eq. 13, whose formula our copy lost; read
from the DGM code ``fcn_eit.py``): Σ_latent (f(v) − z)² averaged over the
batch, where z = μ(x) + σ(x)⊙ε is a *fresh sample* of the frozen encoder's
posterior at every step. We read this as the paper's modification ("we have
replaced the original [target] used in Seo et al. (2019)"): Seo et al. match
the encoder's mean, which ``CVAEConfig.latent_target="mean"`` selects
(METHODS.md's description).

Inference (paper eq. 14): x̂ = decoder(f(v)).

Departures from the DGM code, all documented defaults: GroupNorm(8 groups,
or fewer for narrow layers) replaces BatchNorm, so the networks are pure
functions with no running statistics (with batch 8 those are noisy anyway);
the decoder's last layer is linear instead of ReLU (no dead output at
initialisation); the MLP's output dropout (p = 0.5 before the tanh) is left
out; voltages are standardised.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..recon.result import Result
from .training import (FitConfig, count_params, fit, fit_summary, host_normal, host_ones, host_zeros, load_arrays,
                       read_meta, save_arrays, split_model)

__all__ = ["CVAEConfig", "VAE", "LatentMLP", "CVAE", "vae_loss", "latent_loss", "train_cvae"]

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class CVAEConfig:
    """Architecture and training of the two-stage CVAE (defaults: paper §3.1 and the DGM code).

    Attributes:
        image_size: n, images are n × n (divisible by 16).
        channels: encoder widths (DGM code: 16, 32, 64, 128; 5×5, stride 2).
        kernel: convolution size (5).
        latent_dim: 16 (DGM code).
        mlp_widths: hidden widths of the voltage MLP (DGM code: 256, 128, 64, 32).
        n_measurements: 208 (16 electrodes, adjacent protocol).
        output_scale: the MLP output is ``output_scale · tanh(·)`` (DGM code: 5).
        kl_weight: weight of the KL term (eq. 12: 1).
        latent_target: "sample" (eq. 13 as in the DGM code) or "mean" (Seo et al.).
        groups: GroupNorm groups (capped by the width).
        vae: :class:`FitConfig` of stage 1 (DGM code: batch 8, Adam, lr 3e-4 or 7e-4, 350 epochs).
        mlp: :class:`FitConfig` of stage 2 (DGM code: batch 8, Adam, lr 8e-5 or 3e-4, 800 epochs).
        seed: parameter initialisation.
    """

    image_size: int = 128
    channels: tuple = (16, 32, 64, 128)      # §3.1 / DGM code
    kernel: int = 5                           # DGM code
    latent_dim: int = 16                      # DGM code
    mlp_widths: tuple = (256, 128, 64, 32)    # DGM code
    n_measurements: int = 208
    output_scale: float = 5.0                 # DGM code
    kl_weight: float = 1.0                    # eq. 12
    latent_target: str = "sample"             # eq. 13 (DGM code)
    groups: int = 8
    vae: FitConfig = FitConfig(epochs=350, batch_size=8, lr=3e-4)    # DGM code vae_eit.py
    mlp: FitConfig = FitConfig(epochs=800, batch_size=8, lr=3e-4)    # DGM code fcn_eit.py
    seed: int = 0

    def __post_init__(self):
        depth = 2 ** len(self.channels)
        if self.image_size % depth:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**{len(self.channels)} = {depth}")
        if self.latent_target not in ("sample", "mean"):
            raise ValueError(f"latent_target must be 'sample' or 'mean', got {self.latent_target!r}")
        if self.latent_dim < 1 or self.n_measurements < 1 or self.output_scale <= 0:
            raise ValueError("latent_dim, n_measurements and output_scale must be positive")
        for f in ("vae", "mlp"):
            if isinstance(getattr(self, f), dict):
                object.__setattr__(self, f, FitConfig(**getattr(self, f)))
        for f in ("channels", "mlp_widths"):
            object.__setattr__(self, f, tuple(getattr(self, f)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CVAEConfig":
        return cls(**d)


_INIT = dict(kernel_init=host_normal(), bias_init=host_zeros)   # host-side LeCun-normal / zeros


def _norm(ch: int, groups: int, rngs) -> nnx.GroupNorm:
    return nnx.GroupNorm(ch, num_groups=_groups(ch, groups), scale_init=host_ones, bias_init=host_zeros, rngs=rngs)


def _groups(ch: int, groups: int) -> int:
    g = min(groups, ch)
    while ch % g:
        g -= 1
    return g


class VAE(nnx.Module):
    """Convolutional VAE; images (B, n, n) float32 ↔ latents (B, latent_dim)."""

    def __init__(self, config: CVAEConfig, *, rngs: nnx.Rngs):
        c, k = config, (config.kernel, config.kernel)
        self.config = config
        self.bottom = config.image_size // 2 ** len(c.channels)
        enc, enc_norm, cin = [], [], 1
        for ch in c.channels:
            enc.append(nnx.Conv(cin, ch, k, strides=2, padding="SAME", rngs=rngs, **_INIT))
            enc_norm.append(_norm(ch, c.groups, rngs))
            cin = ch
        self.enc = nnx.List(enc)
        self.enc_norm = nnx.List(enc_norm)
        flat = cin * self.bottom ** 2
        self.fc_mu = nnx.Linear(flat, c.latent_dim, rngs=rngs, **_INIT)
        self.fc_logvar = nnx.Linear(flat, c.latent_dim, rngs=rngs, **_INIT)
        self.fc_dec = nnx.Linear(c.latent_dim, flat, rngs=rngs, **_INIT)
        widths = list(reversed(c.channels[:-1])) + [1]
        dec, dec_norm = [], []
        for i, ch in enumerate(widths):
            dec.append(nnx.ConvTranspose(cin, ch, k, strides=2, padding="SAME", rngs=rngs, **_INIT))
            dec_norm.append(_norm(ch, c.groups, rngs) if i < len(widths) - 1 else None)
            cin = ch
        self.dec = nnx.List(dec)
        self.dec_norm = nnx.List(dec_norm)

    def encode(self, x):
        """(B, n, n) images → (μ, log σ²), each (B, latent_dim) float32."""
        h = jnp.asarray(x, _F32)[..., None]
        for conv, norm in zip(self.enc, self.enc_norm):
            h = norm(jax.nn.leaky_relu(conv(h)))
        h = h.reshape(h.shape[0], -1)
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        """(B, latent_dim) → (B, n, n) float32 images."""
        ch = self.config.channels[-1]
        h = self.fc_dec(jnp.asarray(z, _F32)).reshape(-1, self.bottom, self.bottom, ch)
        for conv, norm in zip(self.dec, self.dec_norm):
            h = conv(h)
            if norm is not None:
                h = norm(jax.nn.relu(h))
        return h[..., 0]

    def __call__(self, x, key):
        """Reconstruction with a reparameterised sample: ``(x̂, μ, log σ²)``."""
        mu, logvar = self.encode(x)
        z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
        return self.decode(z), mu, logvar


class LatentMLP(nnx.Module):
    """Standardised voltages (B, M) → latents (B, latent_dim), ``output_scale·tanh`` output."""

    def __init__(self, config: CVAEConfig, *, rngs: nnx.Rngs):
        self.scale = config.output_scale
        sizes = [config.n_measurements, *config.mlp_widths, config.latent_dim]
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs, **_INIT) for a, b in zip(sizes[:-1], sizes[1:])])

    def __call__(self, v):
        h = jnp.asarray(v, _F32)
        for layer in self.layers[:-1]:
            h = jax.nn.leaky_relu(layer(h))
        return self.scale * jnp.tanh(self.layers[-1](h))


def vae_loss(model: VAE, x, key, kl_weight: float = 1.0):
    """Eq. 12: ``(loss, aux)`` with per-sample sums averaged over the batch (DGM code ``loss_fn``)."""
    x = jnp.asarray(x, _F32)
    recon, mu, logvar = model(x, key)
    mse = jnp.sum((recon - x) ** 2) / x.shape[0]
    kld = -0.5 * jnp.sum(1.0 + logvar - mu**2 - jnp.exp(logvar)) / x.shape[0]
    return mse + kl_weight * kld, {"mse": mse, "kld": kld}


def latent_loss(mlp: LatentMLP, vae: VAE, v_std, x, key, target: str = "sample"):
    """Eq. 13: mean over the batch of ‖f(v) − z‖², z a posterior sample (or the mean) of the frozen encoder."""
    mu, logvar = vae.encode(x)
    z = mu if target == "mean" else mu + jnp.exp(0.5 * logvar) * jax.random.normal(key, mu.shape, mu.dtype)
    z = jax.lax.stop_gradient(z)
    err = jnp.sum((mlp(v_std) - z) ** 2) / z.shape[0]
    return err, {"latent_mse": err / z.shape[1]}


@dataclasses.dataclass(eq=False)
class CVAE:
    """A trained two-stage CVAE: decode(MLP(standardised voltages)).

    Attributes:
        config: the :class:`CVAEConfig`.
        vae_params, mlp_params: ``nnx.State`` of the trained networks.
        v_mean, v_std: (M,) float32 voltage standardisation (training set).
        history: training history of both stages.
        summary: how each stage's last training run ended (``{"vae": ..., "mlp": ...}``, see
            :func:`~jaxeit.dgm.training.fit_summary`); empty for a loaded model.
    """

    config: CVAEConfig
    vae_params: object
    mlp_params: object
    v_mean: np.ndarray
    v_std: np.ndarray
    history: dict = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)

    @staticmethod
    def init(config: CVAEConfig):
        """Fresh ``(vae_graphdef, vae_params, mlp_graphdef, mlp_params)`` from ``config.seed``."""
        vgd, vp, _ = split_model(VAE(config, rngs=nnx.Rngs(params=config.seed)))
        mgd, mp, _ = split_model(LatentMLP(config, rngs=nnx.Rngs(params=config.seed + 1)))
        return vgd, vp, mgd, mp

    def _graphdefs(self):
        vgd, _, mgd, _ = _graphdefs_for(self.config)
        return vgd, mgd

    def reconstruct(self, voltages, *, batch_size: int = 256) -> Result:
        """(B, M) or (M,) voltages → a :class:`~jaxeit.recon.Result` whose ``image`` is (B, n, n) or (n, n) float32.

        One deterministic pass (the latent predicted from v, decoded): ``status`` "done", ``sigma`` None.
        """
        t0 = time.perf_counter()
        v = np.asarray(voltages, np.float64)
        single = v.ndim == 1
        v = np.atleast_2d(v)
        if v.shape[1] != self.config.n_measurements:
            raise ValueError(f"voltages must have {self.config.n_measurements} measurements, got {v.shape}")
        fn = _reconstruct_fn(*self._graphdefs())
        vs = ((v - self.v_mean) / self.v_std).astype(np.float32)
        out = np.concatenate([np.asarray(fn(self.vae_params, self.mlp_params, jnp.asarray(vs[i:i + batch_size])))
                              for i in range(0, len(vs), batch_size)])
        return Result(sigma=None, image=out[0] if single else out, method="cvae", history={}, n_iter=1,
                      wall_time=time.perf_counter() - t0, options=dict(batch_size=batch_size))

    def decode(self, z) -> np.ndarray:
        """(B, latent_dim) latents → (B, n, n) images."""
        vgd, _ = self._graphdefs()
        return np.asarray(nnx.merge(vgd, self.vae_params).decode(jnp.asarray(z, _F32)))

    def save(self, path) -> Path:
        meta = {"kind": "jaxeit.dgm.CVAE", "config": self.config.to_dict(), "history": self.history}
        return save_arrays(path, (self.vae_params, self.mlp_params, self.v_mean, self.v_std), meta)

    @classmethod
    def load(cls, path) -> "CVAE":
        meta = read_meta(path)
        config = CVAEConfig.from_dict(meta["config"])
        _, vp, _, mp = CVAE.init(config)
        m = config.n_measurements
        (vp, mp, v_mean, v_std), meta = load_arrays(path, (vp, mp, np.zeros(m, np.float32), np.zeros(m, np.float32)))
        return cls(config, vp, mp, np.asarray(v_mean), np.asarray(v_std), meta.get("history", {}))


@functools.lru_cache(maxsize=16)
def _graphdefs_for(config: CVAEConfig):
    return CVAE.init(config)


@functools.lru_cache(maxsize=16)
def _reconstruct_fn(vgd, mgd):
    @jax.jit
    def fn(vp, mp, vs):
        return nnx.merge(vgd, vp).decode(nnx.merge(mgd, mp)(vs))
    return fn


@functools.lru_cache(maxsize=16)
def _stage1_loss(vgd, kl_weight: float):
    def loss(params, rest, batch, key, extra):
        return vae_loss(nnx.merge(vgd, params), batch["image"], key, kl_weight)
    return loss


@functools.lru_cache(maxsize=16)
def _stage2_loss(vgd, mgd, target: str):
    def loss(params, rest, batch, key, extra):
        return latent_loss(nnx.merge(mgd, params), nnx.merge(vgd, extra), batch["v"], batch["image"], key, target)
    return loss


def _fingerprint(tree) -> str:
    h = hashlib.sha256()
    for x in jax.tree_util.tree_leaves(tree):
        h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
    return h.hexdigest()


def voltage_stats(v) -> tuple[np.ndarray, np.ndarray]:
    """Per-measurement mean and std (float32) of (n, M) training voltages."""
    v = np.asarray(v, np.float64)
    return v.mean(0).astype(np.float32), np.maximum(v.std(0), 1e-12).astype(np.float32)


def train_cvae(config: CVAEConfig, train: dict, *, workdir=None, data_tag: str = "", resume: bool = True,
               progress: bool = True, log=print, until_step: dict | None = None, val: dict | None = None) -> CVAE:
    """Train both stages on ``train = {"image": (n, H, W), "voltages": (n, M)}``.

    Stage 1 fits the VAE on the images; stage 2 fits the MLP with the VAE
    frozen. With ``workdir`` each stage checkpoints to ``vae.ckpt.npz`` /
    ``mlp.ckpt.npz`` there and resumes; ``data_tag`` (e.g. the data set's
    folder) is part of the run description a checkpoint must match, and the
    stage-2 checkpoint also records a hash of the VAE it was trained against.
    ``until_step`` ({"vae": s, "mlp": s}) stops a stage after s steps in total
    (to split a run); when the VAE stops early, stage 2 is not started (the
    returned model then has an untrained MLP). With ``val`` (the same keys) and a
    stage's ``patience``, that stage stops early on its validation loss and keeps
    its best parameters.

    Returns:
        The trained :class:`CVAE` (also saved as ``<workdir>/cvae.npz``).
    """
    log = log or (lambda *a, **k: None)
    images = np.asarray(train["image"], np.float32)
    volts = np.asarray(train["voltages"], np.float64)
    if images.shape[1:] != (config.image_size, config.image_size):
        raise ValueError(f"images must be {config.image_size}x{config.image_size}, got {images.shape[1:]}")
    if volts.shape != (len(images), config.n_measurements):
        raise ValueError(f"voltages must have shape ({len(images)}, {config.n_measurements}), got {volts.shape}")
    until_step = until_step or {}
    vgd, vp, mgd, mp = _graphdefs_for(config)
    run = {"model": config.to_dict(), "data": data_tag}
    log(f"[cvae] VAE {count_params(vp):,} parameters, MLP {count_params(mp):,}; {len(images)} training samples")

    val_images = None if val is None else np.asarray(val["image"], np.float32)
    res1 = fit(_stage1_loss(vgd, config.kl_weight), vp, data={"image": images}, config=config.vae,
               workdir=workdir, name="vae", run_config=run, resume=resume, progress=progress, log=log,
               until_step=until_step.get("vae"),
               val_data={"image": val_images} if val is not None and config.vae.patience is not None else None)
    vp, hist1 = res1.params, res1.history
    summary = {"vae": fit_summary(res1)}
    v_mean, v_std = voltage_stats(volts)
    hist2 = []
    vae_steps = (len(images) // config.vae.batch_size) * config.vae.epochs
    if until_step.get("vae") is None or until_step["vae"] >= vae_steps:
        # stage 2 needs the final encoder: its checkpoint is tied to the VAE's parameters
        run2 = dict(run, vae_sha256=_fingerprint(vp))
        v_stdized = ((volts - v_mean) / v_std).astype(np.float32)
        val2 = None
        if val is not None and config.mlp.patience is not None:
            val2 = {"image": val_images,
                    "v": ((np.asarray(val["voltages"], np.float64) - v_mean) / v_std).astype(np.float32)}
        res2 = fit(_stage2_loss(vgd, mgd, config.latent_target), mp,
                   data={"image": images, "v": v_stdized}, config=config.mlp, extra=vp, workdir=workdir,
                   name="mlp", run_config=run2, resume=resume, progress=progress, log=log,
                   until_step=until_step.get("mlp"), val_data=val2)
        mp, hist2 = res2.params, res2.history
        summary["mlp"] = fit_summary(res2)
    model = CVAE(config, vp, mp, v_mean, v_std, {"vae": hist1, "mlp": hist2}, summary)
    if workdir is not None:
        model.save(Path(workdir) / "cvae.npz")
    return model
