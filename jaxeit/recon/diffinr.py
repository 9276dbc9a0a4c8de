"""Diff-INR: an INR regularised by a pretrained diffusion prior through score distillation (SDS).

For the INR's relative image x on the prior's grid, mapped to the prior's
[-1, 1] units (outside the domain filled with the background, per-image
min/max normalisation with the ends held fixed by stop-gradient), draw
t ~ U{t_min, …, t_max} (or a fixed t) and ε ~ N(0, I), form
x_t = √ᾱ_t x + √(1−ᾱ_t) ε and use

    L_sds(x) = w(t) · ⟨sg(ε̂_θ(x_t, t) − ε), x⟩ / n²,

so ∇_x L_sds = w(t)(ε̂ − ε)/n² and the U-Net is never differentiated
(Diff-INR eq. 14; Poole et al. 2023; Mardani et al. 2024). The total loss of
Diff-INR is ‖F(σ_θ) − v‖²/‖v‖² + λ_sds·L_sds (+ λ_tv·TV), all in one jitted
update step with the FEM solve, its adjoint, the U-Net evaluation and Adam.

The prior sees shapes, not amplitudes: its images are normalised per image, so nothing in
L_sds prefers a contrast of 2 to one of 50, and EIT data hardly tell them apart for a conductive
inclusion. Three safeguards keep the amplitude where the data put it (measured on the protocol's
validation split, ``benchmarks/sds_ablation.py``): ε̂ is taken of the denoised image clipped to
[-1, 1], so the prior never pushes a pixel past the current min or max; the normalised range has
a floor (``min_range``), so a nearly flat image (the INR's start, a faint inclusion) is not
stretched to [-1, 1] with its noise; and a small TV term (``tv_weight``) bounds the contrast.
Without them, a 7× inclusion of the validation split grew to 100× (relative error 1.3), and a
faint one lost the data fit entirely (misfit 2e-4 → 0.39).

Default time range: t ∈ [50, 400] of T = 1000. Diff-INR §5.3 found a sub-range
of low-to-intermediate steps best; its numbers were lost from our copy. The
time-step study in benchmarks/results/diff_inr_earlier.md (thorax, 50 dB) gives SSIM
0.801 for [20, 200], 0.791 for [50, 400], 0.716 for [200, 800], 0.803 at a
fixed t = 100 and 0.674 at t = 500. Large t blur the image towards the prior's
mean shapes. The default stays at [50, 400], within 0.01 of the best, because
it was not tuned to that one phantom.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..grid import Grid, domain_mask
from ..io_utils import atomic_path
from ..priors import load_pretrained
from ..priors.shapes import normalize
from .inr.fit import INRFit, domain_grid, render
from .inr.regularizers import total_variation
from .result import Result

__all__ = ["SDSRegularizer", "DiffINR", "timestep_analysis", "WEIGHT_SCHEDULES"]

#: Schedules of the SDS weight over a run (see :class:`SDSRegularizer`).
WEIGHT_SCHEDULES = ("constant", "linear", "warmup")


@jax.tree_util.register_pytree_node_class
class SDSRegularizer:
    """Score-distillation regulariser of a relative image (H, W) on the prior's grid.

    Args:
        prior: a loaded diffusion prior (``jaxeit.priors.load_pretrained()``): it gives
            ``params``, ``network(params, x, t) -> (eps, v)`` (pure, jitted),
            ``alphas_cumprod`` (T,) and ``image_size``.
        mask: (n, n) bool domain mask on the prior's grid.
        t_range: (t_min, t_max) inclusive, integer steps; ignored if ``fixed_t``.
        fixed_t: use this step always.
        weighting: ``"constant"`` (w = 1) or ``"snr"`` (w = √(1−ᾱ_t)/√ᾱ_t, RED-diff).
        n_draws: noise draws (t, ε) per step, their SDS gradients averaged (lower variance,
            one batched U-Net call).
        weight_schedule: the factor on λ_sds over the run (fraction f = iteration / max_iter):
            ``"constant"`` (1), ``"linear"`` (1 − f, the data term alone at the end) or
            ``"warmup"`` (min(1, 5f): the data term shapes the image first).
        t_schedule: ``"uniform"`` (t ~ U[t_min, t_max]) or ``"anneal"`` (t ~ U[t_min,
            t_max − (t_max − t_min)·f]: coarse structure first, fine detail last).
        min_range: the smallest span (relative conductivity, σ/σ_bg units) that the normalisation
            stretches to [-1, 1]; a flatter image keeps its contrast (default 0.5: the prior's
            training images have contrasts of 1.5× and more).
        clip_denoised: use ε̂ of the denoised image x̂₀ clipped to the prior's range [-1, 1]
            (as DDPM sampling does), so the prior never pushes a pixel past the image's current
            min or max. Without it, a pixel at the max that the denoiser would brighten raises the
            max; the next step's normalisation rescales and the push repeats. Adam's scale-free
            steps turn that into a steady growth of the contrast, which the data cannot stop where
            EIT is insensitive (high-contrast conductive inclusions).
    """

    uses_fraction = True   # called as fn(image, key, fraction) by the INR fit

    def __init__(self, prior, mask, *, t_range=(50, 400), fixed_t: int | None = None, weighting: str = "constant",
                 n_draws: int = 1, weight_schedule: str = "constant", t_schedule: str = "uniform",
                 clip_denoised: bool = True, min_range: float = 0.5):
        if weighting not in ("constant", "snr"):
            raise ValueError(f"weighting must be 'constant' or 'snr', got {weighting!r}")
        if weight_schedule not in WEIGHT_SCHEDULES:
            raise ValueError(f"weight_schedule must be one of {WEIGHT_SCHEDULES}, got {weight_schedule!r}")
        if t_schedule not in ("uniform", "anneal"):
            raise ValueError(f"t_schedule must be 'uniform' or 'anneal', got {t_schedule!r}")
        if int(n_draws) != n_draws or n_draws < 1:
            raise ValueError(f"n_draws must be an integer >= 1, got {n_draws}")
        n = prior.image_size
        mask = np.asarray(mask, bool)
        if mask.shape != (n, n):
            raise ValueError(f"mask must be the prior's grid ({n}, {n}), got {mask.shape}")
        t_min, t_max = (fixed_t, fixed_t) if fixed_t is not None else t_range
        T = len(prior.alphas_cumprod)
        if not 0 <= t_min <= t_max < T:
            raise ValueError(f"time steps must satisfy 0 <= t_min <= t_max < {T}, got {(t_min, t_max)}")
        self.params = prior.params
        self.alphas_cumprod = jnp.asarray(prior.alphas_cumprod, jnp.float32)
        self.mask = jnp.asarray(mask)
        # the pure network function (params, x (B, n, n), t (B,)) -> (ε̂, v); static under jit
        self.apply = getattr(prior, "network", None) or prior.apply_fn
        self.t_range = (int(t_min), int(t_max))
        self.weighting = weighting
        self.n_draws = int(n_draws)
        self.weight_schedule = weight_schedule
        self.t_schedule = t_schedule
        self.clip_denoised = bool(clip_denoised)
        if not (np.isfinite(min_range) and min_range >= 0):
            raise ValueError(f"min_range must be a finite number >= 0, got {min_range!r}")
        self.min_range = float(min_range)

    def sample(self, x, key, fraction=0.0):
        """(t, ε, x_t, ε̂) for a normalised image x (n, n) float32 (one draw)."""
        k_t, k_e = jax.random.split(key)
        t_min, t_max = self.t_range
        if self.t_schedule == "anneal":
            hi = jnp.round(t_max - (t_max - t_min) * fraction).astype(jnp.int32)
            t = t_min + jnp.floor(jax.random.uniform(k_t) * (hi - t_min + 1)).astype(jnp.int32)
        else:
            t = jax.random.randint(k_t, (), t_min, t_max + 1)
        eps = jax.random.normal(k_e, x.shape, jnp.float32)
        a = self.alphas_cumprod[t]
        x_t = jnp.sqrt(a) * x + jnp.sqrt(1 - a) * eps
        eps_hat, _ = self.apply(self.params, x_t[None], t[None])
        return t, eps, x_t, eps_hat[0]

    def normalise(self, image):
        """Relative image (n, n) → prior units. Outside the mask: the median inside (the prior's
        padding rule); the padding value and the min/max ends are held fixed (stop-gradient), so
        the gradient reaches the inside pixels only, as 2/(hi − lo)·∂L/∂x."""
        inside = jnp.where(self.mask, image, jnp.nan)
        fill = jax.lax.stop_gradient(jnp.nanmedian(inside))
        filled = jnp.where(self.mask, image, fill)
        lo = jax.lax.stop_gradient(jnp.min(jnp.where(self.mask, image, jnp.inf)))
        hi = jax.lax.stop_gradient(jnp.max(jnp.where(self.mask, image, -jnp.inf)))
        # a nearly flat image (the INR's start) would be stretched to [-1, 1], its noise with it, and
        # the SDS gradient in σ units, 2/(hi − lo)·∂L/∂x, would swamp the data term: widen the range
        # about its middle to at least min_range
        mid, half = (lo + hi) / 2, jnp.maximum(hi - lo, self.min_range) / 2
        lo, hi = mid - half, mid + half
        x, _, _ = normalize(filled, self.mask, lo=lo, hi=hi)
        return x.astype(jnp.float32)

    def weight_factor(self, fraction):
        """The factor on λ_sds at run fraction ``fraction`` ∈ [0, 1] (see ``weight_schedule``)."""
        if self.weight_schedule == "linear":
            return 1.0 - fraction
        if self.weight_schedule == "warmup":
            return jnp.minimum(1.0, 5.0 * fraction)
        return 1.0

    def __call__(self, image, key, fraction=0.0):
        x = self.normalise(image)
        xs = jax.lax.stop_gradient(x)

        def one(k):
            t, eps, x_t, eps_hat = self.sample(xs, k, fraction)
            a = self.alphas_cumprod[t]
            w = 1.0 if self.weighting == "constant" else jnp.sqrt(1 - a) / jnp.sqrt(a)
            if self.clip_denoised:   # ε̂ of the clipped x̂₀ (class docstring), minus ε, without cancellation
                x0 = jnp.clip((x_t - jnp.sqrt(1 - a) * eps_hat) / jnp.sqrt(a), -1.0, 1.0)
                return w * jnp.sqrt(a) * (xs - x0) / jnp.sqrt(1 - a)
            return w * (eps_hat - eps)

        keys = jax.random.split(key, self.n_draws) if self.n_draws > 1 else key[None]
        grad = jax.lax.stop_gradient(jnp.mean(jax.vmap(one)(keys), axis=0) * self.weight_factor(fraction))
        return jnp.sum(grad * x) / x.size

    def tree_flatten(self):
        return (self.params, self.alphas_cumprod, self.mask), (self.apply, self.t_range, self.weighting,
                                                                self.n_draws, self.weight_schedule, self.t_schedule,
                                                                self.clip_denoised, self.min_range)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        obj = object.__new__(cls)
        obj.params, obj.alphas_cumprod, obj.mask = leaves
        (obj.apply, obj.t_range, obj.weighting, obj.n_draws, obj.weight_schedule, obj.t_schedule,
         obj.clip_denoised, obj.min_range) = aux
        return obj


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffINR(INRFit):
    """Diff-INR: an INR + λ_sds·SDS (+ λ_tv·TV) in one jitted step (Diff-INR eq. 14).

    ``prior`` defaults to the shipped pretrained prior; the regulariser grid is
    the prior's (``grid_size`` None → the prior's size; another size is an
    error). ``t_range`` / ``fixed_t`` / ``weighting`` / ``n_draws`` / ``weight_schedule`` /
    ``t_schedule`` / ``clip_denoised`` / ``min_range``: see :class:`SDSRegularizer`.
    Other options: those of :class:`~jaxeit.recon.inr.INRFit`.
    """

    name = "diff-inr"
    description = "INR regularised by the shipped diffusion prior through score distillation (Diff-INR)"
    _positive = INRFit._positive + ("sds_weight",)
    _nonnegative = ("tv_weight",)
    _counts = tuple(c for c in INRFit._counts if c != "grid_size") + ("n_draws",)

    grid_size: int | None = None
    prior: object = None
    # twice INR+TV's 600: on the protocol's validation split 1,200 Adam steps (the cosine decay stretched
    # along) added SSIM +0.025 ± 0.012 and CC +0.018 ± 0.015 at λ_sds 9e-4, +0.064 SSIM on the thorax
    # (benchmarks/results/sds_ablation_iterations.md, sds_ablation_thorax.md); 16 s warm in `make demo`
    max_iter: int = 1200
    sds_weight: float = 9e-4   # chosen by the protocol's sweep on its validation split (benchmarks/diff_inr.py)
    tv_weight: float = 3e-6   # a little TV bounds the contrast, which neither the data nor the prior does
    t_range: tuple = (50, 400)
    fixed_t: int | None = None
    weighting: str = "constant"
    n_draws: int = 1
    weight_schedule: str = "constant"
    t_schedule: str = "uniform"
    clip_denoised: bool = True
    min_range: float = 0.5

    def _prior(self):
        return load_pretrained() if self.prior is None else self.prior

    def run(self, model, v, reference=None) -> Result:
        prior = self._prior()
        n = prior.image_size
        if self.grid_size not in (None, n):
            raise ValueError(f"diff-inr renders on the prior's {n}×{n} grid; got grid_size={self.grid_size}")
        spec = dataclasses.replace(self, grid_size=n, prior=prior)
        return INRFit.run(spec, model, v, reference)

    def _regularizers(self, model) -> list:
        n = self.prior.image_size
        mask = domain_mask(domain_grid(model.mesh, n), model.mesh)
        sds = SDSRegularizer(self.prior, mask, t_range=self.t_range, fixed_t=self.fixed_t, weighting=self.weighting,
                             n_draws=self.n_draws, weight_schedule=self.weight_schedule, t_schedule=self.t_schedule,
                             clip_denoised=self.clip_denoised, min_range=self.min_range)
        regs = [*self.regularizers, (self.sds_weight, sds)]
        if self.tv_weight > 0:
            regs.append((self.tv_weight, total_variation(mask, pixel_size=2.0 / n)))
        return regs


def timestep_analysis(result: Result, prior, ts=(50, 150, 300, 500, 800), *, key=None, path=None):
    """Diff-INR §5.3 / Fig. 5: for a reconstruction, x_t, ε̂ and ε̂ − ε at several t.

    Returns a dict t → (x_t, ε̂, ε̂ − ε) arrays (n, n) and, with ``path``, saves a
    3 × len(ts) figure atomically.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    inr, frame = result.extras["inr"], result.extras["frame"]
    n = prior.image_size
    centre, scale = frame
    g = Grid.square(scale, n, centre=centre)
    grid_mask = result.extras.get("mask")
    if grid_mask is None or np.shape(grid_mask) != (n, n):  # fitted on another grid: use the inscribed disk
        grid_mask = np.hypot(*np.meshgrid(g.x - centre[0], g.y - centre[1])) < scale
    image = render(inr, g, frame) / result.background
    out = {}
    for i, t in enumerate(ts):
        reg = SDSRegularizer(prior, grid_mask, fixed_t=int(t))
        x = reg.normalise(jnp.asarray(image, jnp.float32))
        _, eps, x_t, eps_hat = reg.sample(x, jax.random.fold_in(key, i))
        out[int(t)] = (np.asarray(x_t), np.asarray(eps_hat), np.asarray(eps_hat - eps))
    if path is not None:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(2.4 * len(ts), 7.2))
        axes = fig.subplots(3, len(ts), squeeze=False)
        for j, t in enumerate(ts):
            for i, (name, arr) in enumerate(zip(["x_t", "ε̂", "ε̂ − ε"], out[int(t)])):
                ax = axes[i, j]
                im = ax.imshow(arr, origin="lower", cmap="RdBu_r" if i == 2 else "viridis",
                               vmin=-3 if i == 2 else None, vmax=3 if i == 2 else None)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(name)
                if i == 0:
                    ax.set_title(f"t = {t}")
        fig.colorbar(im, ax=axes[2, :].tolist(), shrink=0.8)
        with atomic_path(path) as tmp:
            fig.savefig(tmp)
    return out

