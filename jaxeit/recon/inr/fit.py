"""Fitting an INR to EIT data: data loss through the FEM + regularisers on the grid, one jitted step.

Each iteration — INR evaluation at the mesh nodes, the FEM solve and its adjoint
(``custom_linear_solve``), the regularisers, and the Adam update — is one step of the
iterative driver (:func:`jaxeit.recon.driver.iterate`):
``chunk`` iterations run inside one compiled ``lax.while_loop`` per call, with a
tqdm bar over chunks, exactly ``max_iter`` iterations in all. The driver stops
a diverging fit (a non-finite loss, or a data misfit ``divergence_factor``
times the smallest so far and above :data:`DIVERGENCE_FLOOR`) and a fit that has lost the data after
its warm-up (:data:`LOST_FIT_FACTOR` times the smallest misfit since then, above
:data:`LOST_FIT_FLOOR`) at the last good parameters, with status ``"diverged"``.

The INR is evaluated once per step at the N mesh nodes; the FEM sees each element's
geometric mean of its three nodal values (exp of the mean log σ, i.e. log σ at the
centroid for a log σ linear on the element) and the regularisers the P1 interpolation of
log σ on their grid. The INR's bandwidth is a small fraction of the mesh's Nyquist
frequency (κ ≤ 0.15 of 1/(2h)), so nodal samples carry all of it, and one MLP pass over
N ≈ E/2 points replaces a pass over the E centroids plus the grid pixels: 2.4× fewer
evaluations on the 28 cm tank at h = 0.06 R with the 32×32 prior, 4× with a 64×64 one.
The points are fixed, so their Fourier features are computed once per fit.
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

from ...forward import ForwardModel
from ...grid import Grid, domain_mask, mesh_to_grid_nodes
from ..classical import fit_homogeneous
from ..driver import CONTINUE, DIVERGED, iterate
from ..method import Method
from ..result import Result
from .bandwidth import DEFAULT_KAPPA, bandwidth_for_mesh
from .model import INR, FourierFeatures, domain_frame, factor_features, normalise_coordinates
from .regularizers import Regularizer, as_pytree, total_variation

__all__ = ["INRConfig", "INRFit", "INRTV", "fit_inr", "render", "make_problem", "data_loss", "domain_grid"]


#: data misfits ‖F(σ) − v‖²/‖v‖² below this never count as a divergence (10 % relative residual)
DIVERGENCE_FLOOR = 1e-2
#: a fit that has lost the data: after the first LOST_FIT_WARMUP of the iterations (the early Adam steps
#: jump about), a misfit LOST_FIT_FACTOR times the smallest since then and above LOST_FIT_FLOOR (3 %
#: relative residual). A regulariser that overpowers the data term (an SDS prior on a nearly flat
#: image) drifts there slowly, never reaching the blow-up of the first rule.
LOST_FIT_WARMUP = 0.1
LOST_FIT_FACTOR = 10.0
LOST_FIT_FLOOR = 1e-3


@dataclasses.dataclass(frozen=True, kw_only=True)
class INRConfig:
    """Settings of an INR reconstruction (defaults: Diff-INR §4.4 where it gives them)."""

    kappa: float = DEFAULT_KAPPA  # bandwidth as a fraction of the mesh Nyquist frequency (§4.3)
    n_features: int = 256  # m random frequencies
    width: int = 128  # §4.4: 4 fully connected layers × 128
    depth: int = 4
    learning_rate: float = 0.01  # §4.4: Adam, lr 0.01
    final_lr_fraction: float = 0.1  # cosine decay to this fraction (beyond the paper: a steadier last iterate)
    max_iter: int = 600  # Adam iterations (exactly this many unless the fit diverges)
    grid_size: int = 32  # regularisers see the INR on this grid (Diff-INR uses the prior's size)
    chunk: int = 50  # iterations per jitted scan call
    factor_features: bool = True  # low-rank factors of the fixed features when cheaper (equal to float32 rounding)
    divergence_factor: float = 100.0  # stop ("diverged") when the data misfit exceeds this × max(its minimum
    #                                   so far, DIVERGENCE_FLOOR)


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["points", "features", "feature_basis", "triangles", "to_grid", "mask", "background",
                                "v_norm2"],
                   meta_fields=["grid_shape"])
@dataclasses.dataclass(frozen=True)
class Problem:
    """Arrays of a fit (pytree leaves): evaluation points, mesh → grid map, mask, data scale.

    The INR is evaluated in one pass on ``points``, the N mesh nodes; element values
    and the regulariser image are interpolated from them (see the module notes).
    """

    points: jax.Array  # (N, 2) float32, normalised node coordinates
    features: jax.Array | None  # (2m, N) float32 Fourier features of points, or None (computed per step);
    #                             with feature_basis: their (r, N) coefficients in it
    feature_basis: jax.Array | None  # (2m, r) float32 or None: see jaxeit.recon.inr.model.factor_features
    triangles: jax.Array  # (E, 3) int32 node indices of the elements
    to_grid: object  # SparseOperator (N,) nodal values → (H, W) image by P1 interpolation, 0 outside
    mask: jax.Array  # (H, W) bool
    background: jax.Array  # σ_bg
    v_norm2: jax.Array  # ‖v‖²
    grid_shape: tuple  # (H, W)

    def element_log_sigma(self, log_sigma_nodes):
        """(E,) log σ per element: the mean of its nodes' log σ (log σ at the centroid of a linear log σ)."""
        return jnp.mean(log_sigma_nodes[self.triangles], axis=1)

    def relative_image(self, log_sigma_nodes):
        """(H, W) σ/σ_bg on the regularisers' grid (P1 interpolation of log σ; 1 outside the domain)."""
        return jnp.exp(self.to_grid(log_sigma_nodes - jnp.log(self.background).astype(log_sigma_nodes.dtype)))

    def with_features(self, features: FourierFeatures, factor: bool = True) -> Problem:
        """This problem with the features of ``points`` precomputed (exact, as B is not trained) and,
        with ``factor``, stored as low-rank factors when that makes the first layer cheaper
        (:func:`~jaxeit.recon.inr.model.factor_features`: equal to float32 rounding)."""
        cols = features.columns(self.points)
        basis, coeffs = factor_features(cols) if factor else (None, cols)
        return dataclasses.replace(self, features=coeffs, feature_basis=basis)


def domain_grid(mesh, size: int) -> Grid:
    """The (size × size) grid over the mesh's normalised frame [-1, 1]² (centre ± scale): the regularisers' grid."""
    centre, scale = domain_frame(mesh)
    return Grid.square(scale, size, centre=centre)


def make_problem(model: ForwardModel, v, grid_size: int, background: float | None = None):
    """Evaluation points (the mesh nodes) and the grid in the mesh's normalised frame; returns (Problem, Grid)."""
    centre, scale = domain_frame(model.mesh)
    grid = domain_grid(model.mesh, grid_size)
    bg = fit_homogeneous(model, v) if background is None else float(background)
    mask = np.asarray(domain_mask(grid, model.mesh))
    prob = Problem(
        points=normalise_coordinates(model.mesh.nodes, centre, scale).astype(jnp.float32),
        features=None, feature_basis=None, triangles=jnp.asarray(model.mesh.triangles, jnp.int32),
        to_grid=mesh_to_grid_nodes(model.mesh, grid, fill=0.0), mask=jnp.asarray(mask), background=jnp.asarray(bg),
        v_norm2=jnp.sum(jnp.asarray(v, jnp.float64) ** 2), grid_shape=grid.shape)
    return prob, grid


def data_loss(model: ForwardModel, sigma, v, v_norm2):
    """‖F(σ) − v‖² / ‖v‖² (dimensionless), σ (E,) cast to float64 for the FEM.

    A σ that overflowed (inf, or 0 after underflow) gives an infinite loss instead of
    a singular system: the solve runs on σ = 1 and the fit's divergence test sees inf.
    """
    sigma = sigma.astype(jnp.float64)
    bad = ~jnp.all(jnp.isfinite(sigma) & (sigma > 0))
    r = model.voltages(jnp.where(bad, 1.0, sigma)) - v
    return jnp.where(bad, jnp.inf, jnp.sum(r**2) / v_norm2)


def _call_regularizer(fn, image, key, fraction):
    """``fn(image, key)``, or ``fn(image, key, fraction)`` for a regulariser that follows the run's progress
    (``uses_fraction = True``: e.g. a weight schedule or an annealed noise level; ``fraction`` = it / max_iter)."""
    return fn(image, key, fraction) if getattr(fn, "uses_fraction", False) else fn(image, key)


def _loss(params, key, fraction=0.0, *, graphdef, rest, model, v, prob: Problem, regs, weights):
    inr = nnx.merge(graphdef, params, rest)
    feats = inr.features.columns(prob.points) if prob.features is None else prob.features
    log_nodes = inr.log_sigma_of_features(feats, prob.feature_basis)  # one MLP pass, at the nodes
    d = data_loss(model, jnp.exp(prob.element_log_sigma(log_nodes)), v, prob.v_norm2)
    image = prob.relative_image(log_nodes).astype(log_nodes.dtype) if regs else None
    keys = jax.random.split(key, max(len(regs), 1))
    reg_terms = [weights[i] * _call_regularizer(fn, image, keys[i], fraction) for i, fn in enumerate(regs)]
    r = sum(reg_terms) if reg_terms else jnp.zeros(())
    return d + r, (d, r)


def _optimizer(config: INRConfig, total_steps):
    """Adam with a cosine decay from lr to lr·final_lr_fraction over ``total_steps`` (may be traced)."""

    def schedule(count):
        frac = jnp.minimum(count, total_steps) / total_steps
        alpha = config.final_lr_fraction
        return config.learning_rate * (alpha + (1 - alpha) * 0.5 * (1 + jnp.cos(jnp.pi * frac)))

    return optax.adam(schedule)


@dataclasses.dataclass(frozen=True)
class _INRStep:
    """One Adam iteration of an INR fit, for :func:`~jaxeit.recon.driver.iterate` (hashable: the network's
    structure and the settings that shape the compiled step; everything else is an argument).

    state = (params, opt_state, previous params, iteration, smallest data misfit so far, smallest
    data misfit after the warm-up).
    """

    graphdef: nnx.GraphDef
    config: INRConfig

    @staticmethod
    def initial_state(params, opt_state) -> tuple:
        """The state before the first iteration."""
        inf = jnp.asarray(jnp.inf, jnp.float64)
        return params, opt_state, params, jnp.asarray(0, jnp.int32), inf, inf

    def __call__(self, state, rest, model, v, prob, regs, weights, total_steps, key):
        params, opt_state, _, it, best, best_late = state
        optimizer = _optimizer(self.config, total_steps)
        loss_fn = functools.partial(_loss, graphdef=self.graphdef, rest=rest, model=model, v=v, prob=prob,
                                    regs=regs, weights=weights)
        chunk = self.config.chunk  # the keys of iteration i: split(fold_in(key, i // chunk), chunk)[i % chunk]
        k = jax.random.split(jax.random.fold_in(key, it // chunk), chunk)[it % chunk]
        fraction = jnp.minimum(it / total_steps, 1.0).astype(jnp.float32)
        (loss, (d, r)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, k, fraction)
        updates, new_opt = optimizer.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        # a misfit below the floor is no divergence, however much it grew: with a small contrast the
        # first Adam steps can multiply a tiny misfit by hundreds and the fit still recovers
        bad = ~jnp.isfinite(loss) | (d > self.config.divergence_factor * jnp.maximum(best, DIVERGENCE_FLOOR))
        late = it >= LOST_FIT_WARMUP * total_steps
        bad = bad | (late & (d > LOST_FIT_FACTOR * jnp.maximum(best_late, LOST_FIT_FLOOR)))
        # diverged: keep the parameters before the step that led here (their loss was finite)
        state = jax.tree.map(lambda keep, new: jnp.where(bad, keep, new),
                             (state[2], opt_state), (new_params, new_opt))
        info = {"objective": d + r, "data": d, "regulariser": r, "residual": jnp.sqrt(d)}
        status = jnp.where(bad, DIVERGED, CONTINUE).astype(jnp.int32)
        best_late = jnp.where(late, jnp.minimum(best_late, d), best_late).astype(best_late.dtype)
        return (*state, params, it + 1, jnp.minimum(best, d).astype(best.dtype), best_late), info, status


def render(inr: INR, grid: Grid, frame) -> np.ndarray:
    """The INR on any grid (super-resolution): (H, W) float64 conductivities; ``frame`` = (centre, scale)."""
    pts = normalise_coordinates(grid.points(), *frame).astype(jnp.float32)
    return np.asarray(inr(pts), dtype=np.float64).reshape(grid.shape)


def fit_inr(model: ForwardModel, v, *, regularizers: Sequence[tuple[float, Regularizer]] = (),
            config: INRConfig = INRConfig(), key=None, sigma0: float | None = None,
            progress: bool = False, method: str = "inr") -> Result:
    """Fit σ_θ to voltages ``v`` (M,) float64: min_θ ‖F(σ_θ) − v‖²/‖v‖² + Σ wᵢ Rᵢ(σ_θ on the grid / σ_bg).

    Args:
        model: forward model on the reconstruction mesh.
        regularizers: (weight, fn) pairs, fn(image (H, W), key) → scalar (or
            fn(image, key, fraction) with ``fn.uses_fraction = True``, fraction = iteration / max_iter).
        config: :class:`INRConfig`.
        key: PRNG key for the Fourier features, the weights and stochastic regularisers
            (default ``PRNGKey(0)``).
        sigma0: σ_bg, the INR's background; default the homogeneous fit of ``v``.

    Returns:
        :class:`~jaxeit.recon.Result` with element values (geometric mean of σ_θ at their nodes),
        the grid image, per-iteration ``"objective"``, ``"data"``, ``"regulariser"``
        and ``"residual"`` (√data), the status, and in ``extras`` the fitted
        ``inr`` and its ``frame`` for :func:`render`.
    """
    t0 = time.perf_counter()
    key = jax.random.PRNGKey(0) if key is None else key
    v = jnp.asarray(v, jnp.float64)
    # σ = exp(MLP) is positive by construction; a run that overflows is caught by the fit's own
    # divergence test (status "diverged", last good parameters), not by the forward model's checks
    model = model.with_checks(False)
    prob, grid = make_problem(model, v, config.grid_size, sigma0)
    k_init, k_loop = jax.random.split(key)
    inr = INR(bandwidth=bandwidth_for_mesh(model.mesh, config.kappa), background=prob.background,
              n_features=config.n_features, width=config.width, depth=config.depth,
              rngs=nnx.Rngs(params=k_init))
    prob = prob.with_features(inr.features, factor=config.factor_features)
    graphdef, params, rest = nnx.split(inr, nnx.Param, ...)
    total = jnp.asarray(config.max_iter, jnp.float32)
    opt_state = _optimizer(config, total).init(params)
    regs = tuple(as_pytree(fn) for _, fn in regularizers)
    weights = jnp.asarray([float(w) for w, _ in regularizers], jnp.float32)
    # only the step's structure is static: the iteration count sets the traced schedule length
    shape = INRConfig(**{f.name: getattr(config, f.name) for f in dataclasses.fields(INRConfig)})
    step = _INRStep(graphdef, dataclasses.replace(shape, max_iter=1))
    state = _INRStep.initial_state(params, opt_state)
    run = iterate(step, state, (rest, model, v, prob, regs, weights, total, k_loop), max_iter=config.max_iter,
                  chunk=config.chunk, progress=progress, desc=method)
    inr = nnx.merge(graphdef, run.state[0], rest)
    frame = domain_frame(model.mesh)
    sigma = np.exp(np.asarray(prob.element_log_sigma(inr.log_sigma(prob.points)), dtype=np.float64))
    return Result(sigma=sigma, method=method, history=run.history, n_iter=run.n_iter, status=run.status,
                  wall_time=time.perf_counter() - t0, background=float(prob.background),
                  options=dict(dataclasses.asdict(shape), weights=np.asarray(weights).tolist()),
                  image=np.where(np.asarray(prob.mask), render(inr, grid, frame), np.nan),
                  extras=dict(inr=inr, frame=frame, grid=grid, mask=np.asarray(prob.mask)))


@dataclasses.dataclass(frozen=True, kw_only=True)
class INRFit(INRConfig, Method):
    """An implicit neural representation (Fourier features + MLP) fitted by Adam (Diff-INR §3.2).

    Options: the :class:`INRConfig` fields, ``sigma0`` (the INR's background σ_bg,
    default the homogeneous fit of ``v``), ``key``, ``progress`` and extra
    ``regularizers`` ((weight, fn) pairs, see :func:`fit_inr`).
    """

    name = "inr"
    description = "implicit neural representation (Fourier features + MLP), Adam (Diff-INR §3.2)"
    _positive = ("kappa", "learning_rate", "final_lr_fraction", "divergence_factor")
    _counts = ("max_iter", "n_features", "width", "depth", "grid_size", "chunk")

    sigma0: float | None = None
    key: jax.Array | None = None
    progress: bool = False
    regularizers: tuple = ()

    def __post_init__(self):
        super().__post_init__()
        if self.sigma0 is not None and np.ndim(self.sigma0) != 0:
            raise ValueError(f"{self.name}: sigma0 (the INR's background) must be a float, "
                             f"got shape {np.shape(self.sigma0)}")
        if self.final_lr_fraction > 1:
            raise ValueError(f"{self.name}: final_lr_fraction must be in (0, 1], got {self.final_lr_fraction}")

    def _regularizers(self, model) -> list:
        return list(self.regularizers)

    def run(self, model, v, reference=None) -> Result:
        return fit_inr(model, v, regularizers=self._regularizers(model), config=self, key=self.key,
                       sigma0=self.sigma0, progress=self.progress, method=self.name)


@dataclasses.dataclass(frozen=True, kw_only=True)
class INRTV(INRFit):
    """:class:`INRFit` with ``tv_weight`` × the total variation of its relative image on the grid."""

    name = "inr+tv"
    description = "INR with a total-variation regulariser on its grid rendering"
    _nonnegative = ("tv_weight",)

    tv_weight: float = 1e-4

    def _regularizers(self, model) -> list:
        g = domain_grid(model.mesh, self.grid_size)
        tv = total_variation(domain_mask(g, model.mesh), pixel_size=2.0 / self.grid_size)
        return [*self.regularizers, (self.tv_weight, tv)]
