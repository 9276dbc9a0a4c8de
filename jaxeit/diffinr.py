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

Default time range: t ∈ [50, 400] of T = 1000. Diff-INR §5.3 found a sub-range
of low-to-intermediate steps best; its numbers were lost from our copy. The
time-step study in benchmarks/results/diff_inr.md (thorax, 50 dB) gives SSIM
0.801 for [20, 200], 0.791 for [50, 400], 0.716 for [200, 800], 0.803 at a
fixed t = 100 and 0.674 at t = 500. Large t blur the image towards the prior's
mean shapes. The default stays at [50, 400], within 0.01 of the best, because
it was not tuned to that one phantom.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .forward import ForwardModel
from .recon.result import Result

__all__ = ["SDSRegularizer", "diff_inr_reconstruct", "timestep_analysis"]


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
    """

    def __init__(self, prior, mask, *, t_range=(50, 400), fixed_t: int | None = None, weighting: str = "constant"):
        if weighting not in ("constant", "snr"):
            raise ValueError(f"weighting must be 'constant' or 'snr', got {weighting!r}")
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

    def sample(self, x, key):
        """(t, ε, x_t, ε̂) for a normalised image x (n, n) float32."""
        k_t, k_e = jax.random.split(key)
        t = jax.random.randint(k_t, (), self.t_range[0], self.t_range[1] + 1)
        eps = jax.random.normal(k_e, x.shape, jnp.float32)
        a = self.alphas_cumprod[t]
        x_t = jnp.sqrt(a) * x + jnp.sqrt(1 - a) * eps
        eps_hat, _ = self.apply(self.params, x_t[None], t[None])
        return t, eps, x_t, eps_hat[0]

    def normalise(self, image):
        """Relative image (n, n) → prior units. Outside the mask: the median inside (the prior's
        padding rule); the padding value and the min/max ends are held fixed (stop-gradient), so
        the gradient reaches the inside pixels only, as 2/(hi − lo)·∂L/∂x."""
        from .priors.shapes import normalize

        inside = jnp.where(self.mask, image, jnp.nan)
        fill = jax.lax.stop_gradient(jnp.nanmedian(inside))
        filled = jnp.where(self.mask, image, fill)
        lo = jax.lax.stop_gradient(jnp.min(jnp.where(self.mask, image, jnp.inf)))
        hi = jax.lax.stop_gradient(jnp.max(jnp.where(self.mask, image, -jnp.inf)))
        x, _, _ = normalize(filled, self.mask, lo=lo, hi=hi)
        return x.astype(jnp.float32)

    def __call__(self, image, key):
        x = self.normalise(image)
        t, eps, _, eps_hat = self.sample(jax.lax.stop_gradient(x), key)
        a = self.alphas_cumprod[t]
        w = 1.0 if self.weighting == "constant" else jnp.sqrt(1 - a) / jnp.sqrt(a)
        grad = jax.lax.stop_gradient(w * (eps_hat - eps))
        return jnp.sum(grad * x) / x.size

    def tree_flatten(self):
        return (self.params, self.alphas_cumprod, self.mask), (self.apply, self.t_range, self.weighting)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        obj = object.__new__(cls)
        obj.params, obj.alphas_cumprod, obj.mask = leaves
        obj.apply, obj.t_range, obj.weighting = aux
        return obj


def diff_inr_reconstruct(model: ForwardModel, v, *, prior=None, sds_weight: float = 3e-3, tv_weight: float = 0.0,
                         t_range=(50, 400), fixed_t: int | None = None, weighting: str = "constant",
                         key=None, progress: bool = False, background: float | None = None,
                         **config) -> Result:
    """``reconstruct(model, v, "diff-inr", ...)``: INR + λ_sds·SDS (+ λ_tv·TV) in one jitted step.

    ``prior`` defaults to the shipped pretrained prior; the regulariser grid is
    the prior's. ``background``: σ_bg of the INR (default: the homogeneous fit
    of ``v``). Other keyword options are :class:`jaxeit.inr.INRConfig` fields.
    """
    from .grid import Grid, domain_mask
    from .inr.fit import INRConfig, fit_inr
    from .inr.model import domain_frame
    from .inr.regularizers import total_variation

    if prior is None:
        from .priors import load_pretrained

        prior = load_pretrained()
    n = prior.image_size
    cfg = INRConfig(**{"grid_size": n, **config})
    if cfg.grid_size != n:
        raise ValueError(f"Diff-INR renders on the prior's {n}×{n} grid; got grid_size={cfg.grid_size}")
    centre, scale = domain_frame(model.mesh)
    g = Grid(centre[0] - scale, centre[0] + scale, centre[1] - scale, centre[1] + scale, n, n)
    mask = domain_mask(g, model.mesh)
    regs = [(sds_weight, SDSRegularizer(prior, mask, t_range=t_range, fixed_t=fixed_t, weighting=weighting))]
    if tv_weight > 0:
        regs.append((tv_weight, total_variation(mask, pixel_size=2.0 / n)))
    res = fit_inr(model, v, regularizers=regs, config=cfg, key=key, background=background, progress=progress,
                  method="diff-inr")
    res.options.update(sds_weight=sds_weight, tv_weight=tv_weight, t_range=tuple(t_range), fixed_t=fixed_t,
                       weighting=weighting)
    return res


def timestep_analysis(result: Result, prior, ts=(50, 150, 300, 500, 800), *, key=None, path=None):
    """Diff-INR §5.3 / Fig. 5: for a reconstruction, x_t, ε̂ and ε̂ − ε at several t.

    Returns a dict t → (x_t, ε̂, ε̂ − ε) arrays (n, n) and, with ``path``, saves a
    3 × len(ts) figure atomically.
    """
    from .inr.fit import render

    from .grid import Grid

    key = jax.random.PRNGKey(0) if key is None else key
    inr, frame = result.extras["inr"], result.extras["frame"]
    n = prior.image_size
    centre, scale = frame
    g = Grid(centre[0] - scale, centre[0] + scale, centre[1] - scale, centre[1] + scale, n, n)
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

        from .plot import save_figure

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
        save_figure(fig, path)
    return out
