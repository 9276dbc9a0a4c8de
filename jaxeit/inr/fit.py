"""Fitting an INR to EIT data: data loss through the FEM + regularisers on the grid, one jitted step.

Each iteration — INR evaluation at element centroids and on the grid, the FEM
solve and its adjoint (``custom_linear_solve``), the regularisers, and the Adam
update — is one jitted function; ``chunk`` iterations run inside a
``lax.scan`` per call, with a tqdm bar over chunks. The evaluation points are
fixed, so their Fourier features are computed once per fit and each step runs
only the MLP, in one pass over the centroids and the grid pixels inside the
domain.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from ..forward import ForwardModel
from ..grid import Grid, domain_mask
from ..recon.classical import fit_homogeneous
from ..recon.result import Result
from .bandwidth import DEFAULT_KAPPA, bandwidth_for_mesh
from .model import INR, FourierFeatures, domain_frame, factor_features, normalise_coordinates
from .regularizers import Regularizer, as_pytree

__all__ = ["INRConfig", "fit_inr", "inr_reconstruct", "render", "make_problem", "data_loss"]


@dataclasses.dataclass(frozen=True)
class INRConfig:
    """Settings of an INR reconstruction (defaults: Diff-INR §4.4 where it gives them)."""

    kappa: float = DEFAULT_KAPPA  # bandwidth as a fraction of the mesh Nyquist frequency (§4.3)
    n_features: int = 256  # m random frequencies
    width: int = 128  # §4.4: 4 fully connected layers × 128
    depth: int = 4
    learning_rate: float = 0.01  # §4.4: Adam, lr 0.01
    final_lr_fraction: float = 0.1  # cosine decay to this fraction (beyond the paper: a steadier last iterate)
    iterations: int = 600
    grid_size: int = 32  # regularisers see the INR on this grid (Diff-INR uses the prior's size)
    chunk: int = 50  # iterations per jitted scan call
    factor_features: bool = True  # low-rank factors of the fixed features when cheaper (equal to float32 rounding)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["points", "features", "feature_basis", "grid_index", "mask", "background",
                                "v_norm2"],
                   meta_fields=["n_centroids", "grid_shape"])
@dataclasses.dataclass(frozen=True)
class Problem:
    """Arrays of a fit (pytree leaves): evaluation points, grid, mask, data scale; the sizes are static.

    The INR is evaluated in one pass on ``points``: the E element centroids, then
    the G grid pixels inside the domain (pixels outside are fixed to σ_bg in the
    regulariser image, so they are never evaluated).
    """

    points: jax.Array  # (E + G, 2) float32, normalised
    features: jax.Array | None  # (2m, E + G) float32 Fourier features of points, or None (computed per step);
    #                             with feature_basis: their (r, E + G) coefficients in it
    feature_basis: jax.Array | None  # (2m, r) float32 or None: see jaxeit.inr.model.factor_features
    grid_index: jax.Array  # (G,) int32 flat indices of the inside pixels in the (H, W) grid
    mask: jax.Array  # (H, W) bool
    background: jax.Array  # σ_bg
    v_norm2: jax.Array  # ‖v‖²
    n_centroids: int  # E
    grid_shape: tuple  # (H, W)

    @property
    def centroids(self) -> jax.Array:
        """(E, 2) float32 normalised element centroids."""
        return self.points[: self.n_centroids]

    def with_features(self, features: FourierFeatures, factor: bool = True) -> Problem:
        """This problem with the features of ``points`` precomputed (exact, as B is not trained) and,
        with ``factor``, stored as low-rank factors when that makes the first layer cheaper
        (:func:`~jaxeit.inr.model.factor_features`: equal to float32 rounding)."""
        cols = features.columns(self.points)
        basis, coeffs = factor_features(cols) if factor else (None, cols)
        return dataclasses.replace(self, features=coeffs, feature_basis=basis)


def make_problem(model: ForwardModel, v, grid_size: int, background: float | None = None, *,
                 evaluate_grid: bool = True):
    """Evaluation points and the grid in the mesh's normalised frame; returns (Problem, Grid).

    ``evaluate_grid=False`` (a fit without regularisers) leaves the grid pixels
    out of the evaluation points; the regulariser image is then all ones.
    """
    centre, scale = domain_frame(model.mesh)
    grid = Grid(centre[0] - scale, centre[0] + scale, centre[1] - scale, centre[1] + scale, grid_size, grid_size)
    bg = fit_homogeneous(model, v) if background is None else float(background)
    mask = np.asarray(domain_mask(grid, model.mesh))
    inside = np.flatnonzero(mask.ravel()) if evaluate_grid else np.zeros(0, np.int64)
    points = np.concatenate([model.mesh.centroids(), grid.points()[inside]])
    prob = Problem(
        points=normalise_coordinates(points, centre, scale).astype(jnp.float32),
        features=None, feature_basis=None,
        grid_index=jnp.asarray(inside, jnp.int32), mask=jnp.asarray(mask), background=jnp.asarray(bg),
        v_norm2=jnp.sum(jnp.asarray(v, jnp.float64) ** 2), n_centroids=model.mesh.n_elements,
        grid_shape=grid.shape)
    return prob, grid


def data_loss(model: ForwardModel, sigma, v, v_norm2):
    """‖F(σ) − v‖² / ‖v‖² (dimensionless), σ (E,) cast to float64 for the FEM."""
    r = model.voltages(sigma.astype(jnp.float64)) - v
    return jnp.sum(r**2) / v_norm2


def _loss(params, key, *, graphdef, rest, model, v, prob: Problem, regs, weights):
    inr = nnx.merge(graphdef, params, rest)
    feats = inr.features.columns(prob.points) if prob.features is None else prob.features
    sigma = jnp.exp(inr.log_sigma_of_features(feats, prob.feature_basis))  # one MLP pass, all points
    d = data_loss(model, sigma[: prob.n_centroids], v, prob.v_norm2)
    inside = sigma[prob.n_centroids:] / prob.background
    image = (jnp.ones(prob.mask.size, inside.dtype)
             .at[prob.grid_index].set(inside, indices_are_sorted=True, unique_indices=True)
             .reshape(prob.grid_shape))
    keys = jax.random.split(key, max(len(regs), 1))
    reg_terms = [weights[i] * fn(image, keys[i]) for i, fn in enumerate(regs)]
    r = sum(reg_terms) if reg_terms else jnp.zeros(())
    return d + r, (d, r)


def _optimizer(config: INRConfig, total_steps):
    """Adam with a cosine decay from lr to lr·final_lr_fraction over ``total_steps`` (may be traced)."""

    def schedule(count):
        frac = jnp.minimum(count, total_steps) / total_steps
        alpha = config.final_lr_fraction
        return config.learning_rate * (alpha + (1 - alpha) * 0.5 * (1 + jnp.cos(jnp.pi * frac)))

    return optax.adam(schedule)


@functools.partial(jax.jit, static_argnames=("graphdef", "config"))
def _run_chunk(params, opt_state, key, rest, model, v, prob, regs, weights, total_steps, *, graphdef, config):
    """``config.chunk`` Adam iterations in one ``lax.scan``; everything but the structure is an argument,
    so repeated fits of same-sized problems reuse the compiled code."""
    optimizer = _optimizer(config, total_steps)
    loss_fn = functools.partial(_loss, graphdef=graphdef, rest=rest, model=model, v=v, prob=prob,
                                regs=regs, weights=weights)

    def step(carry, k):
        params, opt_state = carry
        (_, (d, r)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, k)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), (d, r)

    (params, opt_state), (d, r) = jax.lax.scan(step, (params, opt_state), jax.random.split(key, config.chunk))
    return params, opt_state, d, r


def render(inr: INR, grid: Grid, frame) -> np.ndarray:
    """The INR on any grid (super-resolution): (H, W) float64 conductivities; ``frame`` = (centre, scale)."""
    pts = normalise_coordinates(grid.points(), *frame).astype(jnp.float32)
    return np.asarray(inr(pts), dtype=np.float64).reshape(grid.shape)


def inr_reconstruct(model: ForwardModel, v, *, method: str = "inr", tv_weight: float = 1e-4,
                    regularizers: Sequence[tuple[float, Regularizer]] = (), key=None, progress: bool = False,
                    background: float | None = None, **config) -> Result:
    """``reconstruct`` entry for ``"inr"`` and ``"inr+tv"``: INRConfig fields as keyword options.

    ``tv_weight`` weighs the TV of the relative image on the grid (``"inr+tv"``);
    extra ``regularizers`` are added to either method.
    """
    from ..grid import domain_mask as _mask
    from .regularizers import total_variation

    cfg = INRConfig(**config)
    regs = list(regularizers)
    if method == "inr+tv":
        centre, scale = domain_frame(model.mesh)
        g = Grid(centre[0] - scale, centre[0] + scale, centre[1] - scale, centre[1] + scale,
                 cfg.grid_size, cfg.grid_size)
        regs.append((tv_weight, total_variation(_mask(g, model.mesh), pixel_size=2.0 / cfg.grid_size)))
    elif method != "inr":
        raise ValueError(f"method must be 'inr' or 'inr+tv', got {method!r}")
    return fit_inr(model, v, regularizers=regs, config=cfg, key=key, background=background,
                   progress=progress, method=method)


def fit_inr(model: ForwardModel, v, *, regularizers: Sequence[tuple[float, Regularizer]] = (),
            config: INRConfig = INRConfig(), key=None, background: float | None = None,
            progress: bool = False, method: str = "inr") -> Result:
    """Fit σ_θ to voltages ``v`` (M,) float64: min_θ ‖F(σ_θ) − v‖²/‖v‖² + Σ wᵢ Rᵢ(σ_θ on the grid / σ_bg).

    Args:
        model: forward model on the reconstruction mesh.
        regularizers: (weight, fn) pairs, fn(image (H, W), key) → scalar.
        config: :class:`INRConfig`.
        key: PRNG key for the Fourier features, the weights and stochastic regularisers
            (default ``PRNGKey(0)``).
        background: σ_bg; default the homogeneous fit of ``v``.

    Returns:
        :class:`~jaxeit.recon.Result` with element values (σ_θ at the centroids),
        the grid image, per-iteration ``"data"``/``"regulariser"`` losses, and in
        ``extras`` the fitted ``inr`` and its ``frame`` for :func:`render`.
    """
    t0 = time.perf_counter()
    key = jax.random.PRNGKey(0) if key is None else key
    v = jnp.asarray(v, jnp.float64)
    prob, grid = make_problem(model, v, config.grid_size, background, evaluate_grid=bool(regularizers))
    k_init, k_loop = jax.random.split(key)
    inr = INR(bandwidth=bandwidth_for_mesh(model.mesh, config.kappa), background=prob.background,
              n_features=config.n_features, width=config.width, depth=config.depth,
              rngs=nnx.Rngs(params=k_init))
    prob = prob.with_features(inr.features, factor=config.factor_features)
    graphdef, params, rest = nnx.split(inr, nnx.Param, ...)
    n_chunks = -(-config.iterations // config.chunk)
    total = n_chunks * config.chunk
    opt_state = _optimizer(config, float(total)).init(params)
    regs = tuple(as_pytree(fn) for _, fn in regularizers)
    weights = jnp.asarray([float(w) for w, _ in regularizers], jnp.float32)
    # the iteration count is not part of the compiled step (it only sets the traced schedule length)
    run = functools.partial(_run_chunk, graphdef=graphdef, config=dataclasses.replace(config, iterations=0))
    hist = {"data": [], "regulariser": [], "residual": []}
    bar = tqdm(range(n_chunks), desc=method, disable=not progress, leave=False)
    for c in bar:
        params, opt_state, d, r = run(params, opt_state, jax.random.fold_in(k_loop, c), rest, model, v, prob,
                                      regs, weights, jnp.asarray(total, jnp.float32))
        hist["data"] += np.asarray(d).tolist()
        hist["regulariser"] += np.asarray(r).tolist()
        bar.set_postfix(data=f"{float(d[-1]):.3g}", reg=f"{float(r[-1]):.3g}")
    inr = nnx.merge(graphdef, params, rest)
    hist["residual"] = np.sqrt(hist["data"]).tolist()
    frame = domain_frame(model.mesh)
    sigma = np.asarray(inr(prob.centroids), dtype=np.float64)
    return Result(sigma=sigma, method=method, history=hist, n_iter=total,
                  wall_time=time.perf_counter() - t0, background=float(prob.background),
                  options=dict(dataclasses.asdict(config), weights=np.asarray(weights).tolist()),
                  image=np.where(np.asarray(prob.mask), render(inr, grid, frame), np.nan),
                  extras=dict(inr=inr, frame=frame, grid=grid, mask=np.asarray(prob.mask)))
