"""Score network, denoising score matching and training for CSD* (DGM comparison §3.3).

* :func:`dsm_loss` — continuous-time denoising score matching (Song et al.
  2021, paper eq. 24): t ~ U(eps, T), x_t = α(t)x₀ + std(t)z, and
  ``mean_B Σ_pixels |s(x_t, t)·std + z|²`` (λ(t) = std², the ``score_sde``
  default) or, with ``likelihood_weighting``, ``g(t)² |s + z/std|²``.
* :func:`score_apply` — the score network: the repository U-Net
  (:mod:`jaxeit.priors.unet`, one output channel) predicts ε̂ and the score is
  −ε̂/std(t). Noise conditioning: the U-Net's sinusoidal timestep embedding
  expects steps in [0, 1000), so it is fed :func:`network_time`: 999·t for VP
  and, for VE, log σ(t) mapped affinely from [log σ_min, log σ_max] to
  [0, 999] (NCSN++ conditions on log σ; since log σ(t) is linear in t this is
  again 999·t). Input scaling: the network sees x_t/√(α² + std²) (unit scale
  for data of unit scale; VE inputs reach σ_max = 128 otherwise).
* :class:`ScoreConfig` — architecture and training (defaults: the DGM code's
  ``configs/ve/EIT_configs.py``), :func:`train_score` and the trained
  :class:`ScoreModel` (``reconstruct(gn_images, key)``: CSD* mean and std).

Training: :func:`jaxeit.dgm.training.fit` (the package's one trainer) with an
EMA of the weights in the state: data order ``default_rng([seed, epoch])``, step
keys ``fold_in(key, step)``, atomic ``<workdir>/score.ckpt.npz`` checkpoints
resumed when the run description matches, bit-for-bit resume, data-parallel
over ``devices``.
Optimiser (``score_sde``): clip by global norm → [L2 decay] → Adam with a
linear warm-up of the learning rate. Networks are float32.
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
from jax.tree_util import Partial

from ..priors.unet import UNetConfig, abstract_params, init_params
from ..recon.result import Result
from .sampling import csd_star, pc_sample
from .sde import VESDE, VPSDE, _bcast, get_sde
from .training import fit as fit_model
from .training import FitConfig, count_params, fit_summary, load_arrays, read_meta, save_arrays

__all__ = ["ScoreConfig", "ScoreModel", "dsm_loss", "network_time", "score_apply", "train_score"]

_F32 = jnp.float32
#: The U-Net's timestep embedding was designed for integer steps 0 … 999.
_TIME_SCALE = 999.0


# -----------------------------------------------------------------------------------
# Loss
# -----------------------------------------------------------------------------------

def dsm_loss(score_fn, sde, x0, key, *, likelihood_weighting: bool = False, eps: float = 1e-5,
             reduce_mean: bool = False):
    """Continuous-time denoising score-matching loss (a scalar of x0's float dtype).

    Args:
        score_fn: ``score_fn(x (B, ...), t (B,)) -> (B, ...)``.
        sde: a :class:`~jaxeit.dgm.sde.VPSDE` or :class:`~jaxeit.dgm.sde.VESDE`.
        x0: (B, H, W) or (B, H, W, C) (any (B, ...)) clean data.
        key: a ``jax.random`` key (draws t and the noise).
        likelihood_weighting: weight by g(t)² (Song et al. 2021a) instead of std(t)².
        eps: smallest training time (``score_sde``: 1e-5).
        reduce_mean: average over the pixels instead of summing (the DGM code sums).

    Returns:
        The mean over the batch of the per-sample loss.
    """
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(_F32)
    k_t, k_z = jax.random.split(key)
    b = x0.shape[0]
    t = jax.random.uniform(k_t, (b,), x0.dtype, eps, sde.T)
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    mean, std = sde.marginal(x0, t)
    std_b = _bcast(std, x0)
    score = jnp.asarray(score_fn(mean + std_b * z, t)).astype(x0.dtype)
    if likelihood_weighting:
        g2 = sde.drift_diffusion(x0, t)[1] ** 2
        per = (score + z / std_b) ** 2 * _bcast(g2, x0)
    else:
        per = (score * std_b + z) ** 2
    per = per.reshape(b, -1)
    per = jnp.mean(per, axis=1) if reduce_mean else jnp.sum(per, axis=1)
    return jnp.mean(per)


# -----------------------------------------------------------------------------------
# Score network
# -----------------------------------------------------------------------------------

def network_time(sde, t) -> jax.Array:
    """The U-Net's timestep input (t's shape, float32) for times ``t`` ∈ [0, 1].

    VP: 999·t. VE: 999·(log σ(t) − log σ_min)/log(σ_max/σ_min) (= 999·t).
    """
    t = jnp.asarray(t, _F32)
    if isinstance(sde, VESDE):
        return _TIME_SCALE * (jnp.log(sde.sigma(t)) - math.log(sde.sigma_min)) / sde.log_ratio
    if isinstance(sde, VPSDE):
        return _TIME_SCALE * t
    raise ValueError(f"unsupported SDE {type(sde).__name__}")


@functools.lru_cache(maxsize=32)
def score_apply(graphdef, sde):
    """The pure score function ``apply(params, x, t) -> score`` of a U-Net ε-network.

    Args (of the returned function):
        params: the U-Net's ``nnx.State`` (float32).
        x: (B, n, n) or (B, n, n, 1) states in the model's units (any float dtype).
        t: (B,) or scalar times in (0, 1].

    Returns:
        −ε̂/std(t), float32 of x's shape. Cached per ``(graphdef, sde)``, so the
        same object is returned and jitted samplers are compiled once; wrap it as
        ``jax.tree_util.Partial(apply, params)`` to get a sampler's ``score_fn``.
    """

    def apply(params, x, t):
        x = jnp.asarray(x)
        channel = x.ndim == 4
        if channel:
            x = x[..., 0]
        t = jnp.broadcast_to(jnp.asarray(t, _F32), x.shape[:1])
        a, std = sde.marginal_coeffs(t)
        h = (x * _bcast(jax.lax.rsqrt(a**2 + std**2), x)).astype(_F32)
        eps_hat = nnx.merge(graphdef, params)(h[..., None], network_time(sde, t))[..., 0]
        score = (-eps_hat / _bcast(std, eps_hat)).astype(_F32)
        return score[..., None] if channel else score

    return apply


# -----------------------------------------------------------------------------------
# Configuration
# -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """Score model and training (defaults: DGM paper §3.3 and its code's ``configs/ve/EIT_configs.py``).

    Attributes:
        image_size: n, images n × n (§4.1: 128).
        sde: ``"ve"`` (the code's ``training.sde='vesde'``; NCSN++cont, §3.3.2) or ``"vp"``.
        sigma_min, sigma_max: VE noise range (code: 0.01, 128).
        beta_min, beta_max: VP β range (0.1, 20).
        num_scales: N, the discretisation (§3.3.2: 1000 steps).
        base_channels, channel_mult, num_res_blocks: U-Net widths (code's NCSN++:
            nf = 32, ch_mult = (1, 1, 2, 2, 2, 2, 2), 2 residual blocks per level).
        attention_resolutions: (code: (20,), a resolution a 128 / 2^k grid never
            has, so attention is only in the middle block — as here with ()).
        num_heads: attention heads (NCSN++ 'ddpm' attention: 1).
        num_groups: GroupNorm groups (NCSN++: min(C/4, 32) = 8 at 32 channels).
        shift, scale: model units x = (image − shift)/scale (code: ``centered=False``,
            images used as they are: 0, 1).
        likelihood_weighting: code: False.
        reduce_mean: code: False (sum over pixels).
        train_eps: smallest training time (``score_sde``: 1e-5).
        ema_decay: EMA of the weights (code: ``ema_rate = 0.999``), with warm-up
            min(decay, (1 + s)/(10 + s)).
        warmup: linear learning-rate warm-up steps (code: 5000; 0 for none).
        fit: optimisation (code: batch 64, Adam lr 2e-3 — ``score_sde``'s 2e-4 is
            commented out there — grad clip 1, 500 001 iterations ≈ 1482 epochs of 21 600).
    """

    image_size: int = 128
    sde: str = "ve"
    sigma_min: float = 0.01
    sigma_max: float = 128.0
    beta_min: float = 0.1
    beta_max: float = 20.0
    num_scales: int = 1000
    base_channels: int = 32
    channel_mult: tuple = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple = ()
    num_heads: int = 1
    num_groups: int = 8
    shift: float = 0.0
    scale: float = 1.0
    likelihood_weighting: bool = False
    reduce_mean: bool = False
    train_eps: float = 1e-5
    ema_decay: float = 0.999
    warmup: int = 5000
    fit: FitConfig = FitConfig(epochs=1482, batch_size=64, lr=2e-3, grad_clip=1.0, checkpoint_every=1000,
                               log_every=100)

    def __post_init__(self):
        if isinstance(self.fit, dict):
            object.__setattr__(self, "fit", FitConfig(**self.fit))
        for f in ("channel_mult", "attention_resolutions"):
            object.__setattr__(self, f, tuple(getattr(self, f)))
        self.make_sde()                       # validates the name and the noise range
        self.unet_config()                    # validates the architecture
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.warmup < 0 or not 0 < self.train_eps < 1 or not self.scale > 0:
            raise ValueError("need warmup >= 0, 0 < train_eps < 1 and scale > 0")

    def make_sde(self):
        """The :class:`~jaxeit.dgm.sde.VESDE` / :class:`~jaxeit.dgm.sde.VPSDE` of this config."""
        if str(self.sde).lower() in ("ve", "vesde"):
            return get_sde("ve", sigma_min=self.sigma_min, sigma_max=self.sigma_max, N=self.num_scales)
        return get_sde(self.sde, beta_min=self.beta_min, beta_max=self.beta_max, N=self.num_scales)

    def unet_config(self) -> UNetConfig:
        """The U-Net (one input and one output channel: ε̂)."""
        return UNetConfig(image_size=self.image_size, base_channels=self.base_channels,
                          channel_mult=self.channel_mult, num_res_blocks=self.num_res_blocks,
                          attention_resolutions=self.attention_resolutions, num_heads=self.num_heads,
                          num_groups=self.num_groups, out_channels=1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ScoreConfig":
        return cls(**d)


@functools.lru_cache(maxsize=16)
def _graphdef(unet: UNetConfig):
    return abstract_params(unet)[0]


# -----------------------------------------------------------------------------------
# Trained model
# -----------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class ScoreModel:
    """A trained score model.

    Attributes:
        config: the :class:`ScoreConfig`.
        params: the trained U-Net ``nnx.State`` (float32).
        ema_params: the EMA of the weights (used for sampling by default).
        history: training history rows.
        summary: how the last training run ended (see :func:`~jaxeit.dgm.training.fit_summary`);
            empty for a loaded model.
    """

    config: ScoreConfig
    params: object
    ema_params: object
    history: list = dataclasses.field(default_factory=list)
    summary: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def init(cls, config: ScoreConfig, key) -> "ScoreModel":
        """An untrained model (score 0: the U-Net's output layer starts at zero) from ``key``."""
        _, params = init_params(config.unet_config(), key)
        return cls(config, params, jax.tree_util.tree_map(jnp.copy, params))

    @property
    def sde(self):
        return self.config.make_sde()

    @property
    def graphdef(self):
        return _graphdef(self.config.unet_config())

    def score_fn(self, *, ema: bool = True) -> Partial:
        """``score_fn(x (B, n, n), t (B,)) -> (B, n, n)`` float32, in model units, for the samplers."""
        return Partial(score_apply(self.graphdef, self.sde), self.ema_params if ema else self.params)

    def normalize(self, images):
        """Images (conductivity units) → model units (image − shift)/scale."""
        return (jnp.asarray(images) - self.config.shift) / self.config.scale

    def denormalize(self, x):
        """Model units → images."""
        return jnp.asarray(x) * self.config.scale + self.config.shift

    def sample(self, key, n: int, *, ema: bool = True, **kw) -> np.ndarray:
        """``n`` unconditional PC samples (n, size, size) float32 in image units.

        ``kw``: options of :func:`~jaxeit.dgm.sampling.pc_sample` (default corrector:
        the DGM code's ``corrector="ald", snr=0.056``).
        """
        size = self.config.image_size
        kw = {"corrector": "ald", "snr": 0.056, **kw}
        x = pc_sample(self.score_fn(ema=ema), self.sde, key, shape=(int(n), size, size), **kw)
        return np.asarray(self.denormalize(x), np.float32)

    def reconstruct(self, gn_images, key, *, t0: float = 0.55, n_samples: int = 20, n_steps=None,
                    ema: bool = True, **kw):
        """CSD*: mean and pixel-wise std of ``n_samples`` refinements of each GN image.

        Args:
            gn_images: (B, n, n) or (n, n) Gauss–Newton images in image units.
            key: a ``jax.random`` key.
            t0, n_samples, n_steps: see :func:`~jaxeit.dgm.sampling.csd_star`.
            ema: sample with the EMA weights.
            **kw: further options of :func:`~jaxeit.dgm.sampling.csd_star`; with the
                PC sampler the corrector defaults to the DGM code's annealed
                Langevin dynamics with r = 0.056 (``corrector="ald", snr=0.056``).

        Returns:
            A :class:`~jaxeit.recon.Result`: ``image`` the posterior mean and
            ``extras["std"]`` its pixel-wise std, float32 arrays of gn_images'
            shape in image units.
        """
        t_start = time.perf_counter()
        gn = np.asarray(gn_images, np.float32)
        single = gn.ndim == 2
        gn = gn[None] if single else gn
        n = self.config.image_size
        if gn.ndim != 3 or gn.shape[1:] != (n, n):
            raise ValueError(f"GN images must be (B, {n}, {n}) or ({n}, {n}), got {np.shape(gn_images)}")
        if kw.get("sampler", "pc") == "pc":
            kw = {"corrector": "ald", "snr": 0.056, **kw}
        mean, std = csd_star(self.score_fn(ema=ema), self.sde, self.normalize(gn), key, t0=t0,
                             n_samples=n_samples, n_steps=n_steps, **kw)
        mean = np.asarray(self.denormalize(mean), np.float32)
        std = np.asarray(std * self.config.scale, np.float32)
        return Result(sigma=None, image=mean[0] if single else mean, method="csd*", history={}, n_iter=1,
                      wall_time=time.perf_counter() - t_start,
                      options=dict(t0=t0, n_samples=n_samples, n_steps=n_steps, ema=ema, **kw),
                      extras=dict(std=std[0] if single else std))

    def save(self, path) -> Path:
        meta = {"kind": "jaxeit.dgm.ScoreModel", "config": self.config.to_dict(), "history": self.history}
        return save_arrays(path, (self.params, self.ema_params), meta)

    @classmethod
    def load(cls, path) -> "ScoreModel":
        meta = read_meta(path)
        config = ScoreConfig.from_dict(meta["config"])
        template = _zeros_like_abstract(config)
        (params, ema), meta = load_arrays(path, (template, template))
        return cls(config, params, ema, meta.get("history", []))


def _zeros_like_abstract(config: ScoreConfig):
    """The parameter state filled with numpy zeros (a loading template; no random draws)."""
    _, abstract = abstract_params(config.unet_config())
    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), abstract)


# -----------------------------------------------------------------------------------
# Training (the loop of jaxeit.dgm.training.fit, plus an EMA in the state)
# -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _loss_fn(graphdef, sde, likelihood_weighting: bool, reduce_mean: bool, eps: float):
    """``loss(params, rest, batch, key, extra) -> (loss, {})`` of :func:`jaxeit.dgm.training.fit`."""
    apply = score_apply(graphdef, sde)

    def loss(params, rest, batch, key, extra):
        value = dsm_loss(Partial(apply, params), sde, batch["x"], key, likelihood_weighting=likelihood_weighting,
                         eps=eps, reduce_mean=reduce_mean)
        return value, {}
    return loss


def _key_data(key) -> list:
    data = jax.random.key_data(key) if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key) else key
    return [int(v) for v in np.asarray(data).ravel()]


def train_score(images, config: ScoreConfig, workdir=None, *, key, progress: bool = True, resume: bool = True,
                until_step: int | None = None, data_tag: str = "", log=print, devices=None) -> ScoreModel:
    """Train a score model by denoising score matching, with an EMA of the weights.

    Args:
        images: (N, n, n) training images in image units (normalised with the
            config's shift/scale; float32 on device).
        config: the :class:`ScoreConfig` (``config.fit`` sets epochs, batch, lr,
            data order seed and checkpoint/log intervals).
        workdir: folder for ``score.ckpt.npz`` (resumed when the run description
            — config, data tag, key, number of images — matches) and the final
            ``score.npz``; ``None``: no files.
        key: a ``jax.random`` key: parameter initialisation and step keys
            (``fold_in(train_key, step)``).
        progress: tqdm bar.
        resume: continue from an existing checkpoint.
        until_step: stop after this many steps in total (to split a run).
        data_tag: a description of the data that a checkpoint must match.
        log: one-line messages (``None``: silent).
        devices: the devices to split each batch over (see
            :func:`jaxeit.parallel.data_mesh`; ``None``: all visible devices);
            parameters, optimiser state and EMA are replicated.

    Returns:
        The :class:`ScoreModel` (also saved as ``<workdir>/score.npz``).

    Raises:
        ValueError: on images of the wrong size, fewer images than one batch, a
            batch size that is not a multiple of the number of devices, or a
            checkpoint written with another configuration.
        FloatingPointError: if the loss becomes NaN/inf.
    """
    log = log or (lambda *a, **k: None)
    n_px = config.image_size
    imgs = np.asarray(images, np.float64)
    if imgs.ndim != 3 or imgs.shape[1:] != (n_px, n_px):
        raise ValueError(f"images must be (N, {n_px}, {n_px}), got {imgs.shape}")
    data = ((imgs - config.shift) / config.scale).astype(np.float32)
    fit = config.fit
    n = len(data)
    total = (n // fit.batch_size) * fit.epochs   # batch and device checks: jaxeit.dgm.training.fit

    init_key, train_key = jax.random.split(key)
    graphdef = _graphdef(config.unet_config())
    _, params = init_params(config.unet_config(), init_key)
    run = {"model": config.to_dict(), "data": data_tag, "key": _key_data(key)}
    log(f"[score] {count_params(params):,} parameters; {n} training images; {total} steps")
    loss_fn = _loss_fn(graphdef, config.make_sde(), config.likelihood_weighting, config.reduce_mean,
                       config.train_eps)
    fit_config = dataclasses.replace(fit, warmup_steps=config.warmup, ema_decay=config.ema_decay)
    result = fit_model(loss_fn, params, data={"x": data}, config=fit_config, workdir=workdir, name="score",
                       run_config=run, resume=resume, until_step=until_step, progress=progress, log=log,
                       devices=devices, key=train_key)
    state, history = result.state, result.history
    model = ScoreModel(config, state.params, state.ema, history, fit_summary(result))
    if workdir is not None:
        model.save(Path(workdir) / "score.npz")
    return model
