"""The one linearised reconstruction operator H = (JᵀWJ + λR)⁻¹JᵀW, built once and applied to many frames.

Used by the one-step method (:mod:`jaxeit.recon.classical`), the KTC2023
organisers' reference (:func:`jaxeit.realdata.ktc.baseline_reconstruction`)
and the Gauss–Newton images of the paired data sets (:mod:`jaxeit.data`), as
pyEIT's ``EitBase`` sets up its solver once and ``solve``s each frame.

J = ∂F/∂σ at the linearisation point σ₀ (adjoint method), or ∂F/∂s = J·σ₀
for ``param="log"`` (s = log σ); W a diagonal data weighting (1/noise
variance; identity by default). In log σ (the default of the data sets; it
keeps σ positive and handles near-insulating inclusions far better):

    σ = σ₀ · exp(H (v − F(σ₀))),         in σ (``param="linear"``): σ = σ₀ + H (v − F(σ₀)),

or, for difference data, the step H (v − v_ref) alone (:meth:`LinearGN.solve`).

Priors (one vocabulary, :func:`prior_matrix`): ``"tikhonov"`` I, ``"noser"``
diag(JᵀWJ) (Cheney et al. 1990; the Levenberg–Marquardt diagonal of the DGM
paper's eq. 9), ``"kotre"`` diag(JᵀWJ)^p (pyEIT's JAC default, p = 0.2),
``"laplace"`` DᵀD (D the unweighted element-difference operator), or an
explicit (E, E) matrix R (e.g. LᵀL of :func:`smoothness_prior`). The weight
is λ = alpha · mean diag(JᵀWJ) / mean diag(R) (dimensionless ``alpha``, the
same value suits any current amplitude, background and mesh), or an absolute
``lam`` (for a statistically scaled prior such as the KTC one).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..forward import ForwardModel
from ..mesh import Mesh
from .normal import SparsePattern, solve_normal
from .operators import element_adjacency

__all__ = ["LinearGN", "apply_step", "prior_matrix", "prior_triplets", "smoothness_prior", "precision_factor", "PRIORS"]

#: names of the quadratic priors (the matrix R of ‖σ‖²_R)
PRIORS = ("tikhonov", "noser", "kotre", "laplace")


def prior_triplets(mesh: Mesh, kind: str, jtj_diag: np.ndarray | None = None, *, p: float = 0.2):
    """The regularisation matrix R of a quadratic prior ‖σ‖²_R as coordinate triplets (sparse form).

    Returns ``(rows, cols, values)`` (host int64, int64, float64 arrays; repeated entries add up),
    the same matrix as :func:`prior_matrix`. ``jtj_diag`` (E,) is diag(JᵀWJ), needed by
    ``"noser"`` and ``"kotre"``.
    """
    n = mesh.n_elements
    diag = np.arange(n)
    if kind == "tikhonov":
        return diag, diag, np.ones(n)
    if kind in ("noser", "kotre"):
        if jtj_diag is None:
            raise ValueError(f"the {kind!r} prior needs diag(JᵀJ): pass jtj_diag")
        d = np.asarray(jtj_diag, np.float64)
        return diag, diag, (d if kind == "noser" else d ** p)
    if kind == "laplace":
        # DᵀD for the unweighted difference operator D: the element-adjacency graph Laplacian,
        # with a tiny ridge (the constant is in its null space)
        pairs, _ = element_adjacency(mesh)
        a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
        ones = np.ones(len(a))
        return (np.concatenate([a, b, a, b, diag]), np.concatenate([a, b, b, a, diag]),
                np.concatenate([ones, ones, -ones, -ones, np.full(n, 1e-6)]))
    raise ValueError(f"prior must be one of {PRIORS} or an (E, E) matrix, got {kind!r}")


def prior_matrix(mesh: Mesh, kind: str, jtj_diag: np.ndarray | None = None, *, p: float = 0.2) -> np.ndarray:
    """(E, E) float64 regularisation matrix R of a quadratic prior ‖σ‖²_R (names: module notes).

    ``jtj_diag`` (E,) is diag(JᵀWJ), needed by ``"noser"`` and ``"kotre"``; the dense form of
    :func:`prior_triplets`.
    """
    rows, cols, values = prior_triplets(mesh, kind, jtj_diag, p=p)
    out = np.zeros((mesh.n_elements, mesh.n_elements))
    np.add.at(out, (rows, cols), values)
    return out


#: above this fraction of nonzeros a prior matrix is treated as dense (no sparse factorisation)
_SPARSE_PRIOR_FRACTION = 0.05
#: a flop of the Woodbury path (sparse solves for M + 1 right-hand sides, then an M × M solve) costs
#: about this many dense BLAS flops; measured on the KTC tank (E = 1566, warm): dense 1.6 s against
#: Woodbury 5.5 s at M = 1404 and 1.05 s against 1.26 s at M = 513
_WOODBURY_FLOP_COST = 8.0


def _dense_is_cheaper(n_elements: int, n_measurements: int) -> bool:
    """Whether H for all M right-hand sides is cheaper by a dense E × E solve (E³/3 + M·E² flops)
    than by Woodbury (M²·E + M³/3 flops at :data:`_WOODBURY_FLOP_COST` each)."""
    e, m = float(n_elements), float(n_measurements)
    return e**3 / 3 + m * e**2 <= _WOODBURY_FLOP_COST * (m**2 * e + m**3 / 3)

_SMOOTHNESS: dict = {}


def precision_factor(gamma: np.ndarray) -> np.ndarray:
    """(E, E) L with LᵀL = Γ⁻¹ for a covariance ``gamma`` (E, E), symmetric positive definite: with
    Γ = C Cᵀ (Cholesky), Γ⁻¹ = C⁻ᵀC⁻¹ and L = C⁻¹ (the ``prior`` of :class:`jaxeit.recon.GNGaussian`)."""
    return np.linalg.solve(np.linalg.cholesky(gamma), np.eye(len(gamma)))


def smoothness_prior(mesh: Mesh, corrlength: float = 0.115, variance: float = 0.05 ** 2,
                     nugget: float = 1e-9) -> np.ndarray:
    """(E, E) L with LᵀL = Γ⁻¹ for the KTC2023 organisers' Gaussian smoothness prior on element centroids.

    Γ_ij = (variance − nugget)·exp(−|x_i − x_j|²/(2b²)) + nugget·δ_ij with
    b = corrlength/√(−2 ln 0.01), i.e. correlation 0.01 at distance
    ``corrlength`` (m; their ``SMPrior``, squared-distance covariance, evaluated
    at element centroids instead of nodes). ``variance`` in (S/m)². Cached for
    the last few (mesh, corrlength, variance, nugget).
    """
    if not (corrlength > 0 and variance > nugget >= 0 and math.isfinite(variance)):
        raise ValueError(f"need corrlength > 0 and variance > nugget >= 0, got corrlength={corrlength}, "
                         f"variance={variance}, nugget={nugget}")
    key = (id(mesh), float(corrlength), float(variance), float(nugget))
    hit = _SMOOTHNESS.get(key)
    if hit is not None and hit[0] is mesh:
        return hit[1]
    c = mesh.centroids()
    d2 = np.sum((c[:, None, :] - c[None, :, :]) ** 2, axis=-1)
    b2 = -corrlength ** 2 / (2 * math.log(0.01))
    gamma = (variance - nugget) * np.exp(-d2 / (2 * b2)) + nugget * np.eye(len(c))
    L = precision_factor(gamma)
    if len(_SMOOTHNESS) > 4:
        _SMOOTHNESS.clear()
    _SMOOTHNESS[key] = (mesh, L)
    return L


def apply_step(h, v_bg, v, background, param: str):
    """The linearised step for (..., M) voltages: σ₀·exp(H Δv) ("log") or σ₀ + H Δv ("linear")."""
    step = (v - v_bg) @ h.T
    return background * jnp.exp(step) if param == "log" else background + step


@dataclasses.dataclass(frozen=True, eq=False)
class LinearGN:
    """The precomputed one-step Gauss–Newton operator of a forward model.

    Attributes:
        model: the forward model (its mesh is the reconstruction mesh).
        background: σ₀, the linearisation point and the prior mean: a float or (E,) float64.
        param: "log" or "linear" (see the module notes).
        prior: the prior's name, or "matrix" for an explicit R.
        alpha: the dimensionless weight (NaN when ``lam`` was given).
        p: the exponent of the "kotre" prior.
        v_bg: (M,) float64 F(σ₀) (weighted rows when ``weights`` were given).
        h: (E, M) float64 (JᵀWJ + λR)⁻¹JᵀW.
        lam: the weight λ actually used.
    """

    model: ForwardModel
    background: float | np.ndarray
    param: str
    prior: str
    alpha: float
    p: float
    v_bg: np.ndarray
    h: np.ndarray
    lam: float

    @classmethod
    def build(cls, model: ForwardModel, *, background=1.0, param: str = "log", prior="noser",
              alpha: float | None = None, lam: float | None = None, p: float = 0.2, weights=None,
              jacobian=None) -> "LinearGN":
        """Linearise ``model`` at σ₀ = ``background`` and form H (once).

        H = (JᵀWJ + λR)⁻¹JᵀW is formed by :func:`~jaxeit.recon.normal.solve_normal` on the
        whitened Jacobian W^½J: a sparse factorisation of λR and an M × M solve instead of a dense
        E × E one (a dense R, such as a Gaussian smoothness prior, or a mesh small against the number of
        measurements is solved densely, whichever costs fewer flops: :func:`_dense_is_cheaper`).

        Args:
            background: σ₀ > 0, a float or (E,) array.
            param: "log" (step in s = log σ) or "linear" (step in σ).
            prior: a name of :data:`PRIORS` or an (E, E) matrix R.
            alpha: dimensionless weight, λ = alpha · mean diag(JᵀWJ) / mean diag(R) (default 3).
            lam: absolute λ instead of ``alpha`` (give at most one of the two).
            weights: (M,) positive diagonal W (1/noise variance), default identity.
            jacobian: (M, E) ∂F/∂σ of ``model`` at ``background`` (V per S/m), when already computed
                (several priors on one linearisation); default: computed here.
        """
        if param not in ("log", "linear"):
            raise ValueError(f"param must be 'log' or 'linear', got {param!r}")
        bg = np.asarray(background, np.float64)
        if bg.ndim not in (0, 1) or (bg.ndim == 1 and bg.shape != (model.n_elements,)):
            raise ValueError(f"background must be a float or ({model.n_elements},), got shape {bg.shape}")
        if not (np.all(np.isfinite(bg)) and np.all(bg > 0)):
            raise ValueError(f"background must be positive and finite, got {background}")
        if alpha is not None and lam is not None:
            raise ValueError("give alpha (dimensionless) or lam (absolute), not both")
        if alpha is None and lam is None:
            alpha = 3.0
        weight = alpha if lam is None else lam
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"{'alpha' if lam is None else 'lam'} must be positive and finite, got {weight}")
        sigma0 = jnp.broadcast_to(jnp.asarray(bg), (model.n_elements,))
        if jacobian is None:
            jac = np.asarray(model.jacobian(sigma0))
        else:
            jac = np.asarray(jacobian, np.float64)
            if jac.shape != (model.n_measurements, model.n_elements):
                raise ValueError(f"jacobian must be ({model.n_measurements}, {model.n_elements}) for this model, "
                                 f"got {jac.shape}")
        if param == "log":
            jac = jac * np.asarray(sigma0)[None, :]   # ∂F/∂s = ∂F/∂σ · σ at s = log σ₀
        if weights is None:
            jw = jac
        else:
            w = np.asarray(weights, np.float64)
            if w.shape != (model.n_measurements,) or not (np.all(np.isfinite(w)) and np.all(w > 0)):
                raise ValueError(f"weights must be ({model.n_measurements},) positive and finite values")
            jw = jac * w[:, None]
        d = np.sum(jac * jw, axis=0)   # diag(JᵀWJ)
        dense_r = None
        if isinstance(prior, str):
            rows, cols, values = prior_triplets(model.mesh, prior, d, p=p)
            name = prior
        else:
            dense_r = np.asarray(prior, np.float64)
            if dense_r.shape != (model.n_elements,) * 2:
                raise ValueError(f"a prior matrix must be ({model.n_elements}, {model.n_elements}), "
                                 f"got {dense_r.shape}")
            rows, cols = np.nonzero(dense_r)
            values = dense_r[rows, cols]
            name = "matrix"
        r_diag_mean = float(np.mean(np.bincount(rows[rows == cols], values[rows == cols], model.n_elements)))
        lam_used = float(alpha * d.mean() / r_diag_mean) if lam is None else float(lam)
        if (len(values) > _SPARSE_PRIOR_FRACTION * model.n_elements**2
                or _dense_is_cheaper(model.n_elements, jac.shape[0])):
            # a dense R, or a mesh small against the measurements: the E × E solve is the cheaper one
            if dense_r is None:
                dense_r = np.zeros((model.n_elements, model.n_elements))
                np.add.at(dense_r, (rows, cols), values)
            h = np.linalg.solve(jac.T @ jw + lam_used * dense_r, jw.T)
        else:
            pattern = SparsePattern.from_triplets(rows, cols, model.n_elements, model.solver)
            root_w = np.ones(model.n_measurements) if weights is None else np.sqrt(w)
            jw_half = jnp.asarray(jac * root_w[:, None])                  # W^½J
            h = np.asarray(solve_normal(jw_half, pattern, lam_used * pattern.values(jnp.asarray(values)),
                                        jw_half.T * jnp.asarray(root_w)[None, :]))
        v_bg = np.asarray(model.voltages(sigma0))
        bg_out = float(bg) if bg.ndim == 0 else bg
        return cls(model, bg_out, param, name, float("nan") if alpha is None else float(alpha), float(p), v_bg,
                   h, lam_used)

    def solve(self, dv) -> jax.Array:
        """The linear step H·Δv for voltage changes (..., M) → (..., E) float64 (batched: one product)."""
        dv = jnp.asarray(dv, jnp.float64)
        if dv.shape[-1] != self.h.shape[1]:
            raise ValueError(f"voltages must have {self.h.shape[1]} measurements in the last axis, "
                             f"got shape {tuple(dv.shape)}")
        return dv @ jnp.asarray(self.h).T

    def __call__(self, v) -> jax.Array:
        """(..., M) voltages → (..., E) float64 element conductivities (one linearised step from σ₀)."""
        v = jnp.asarray(v, jnp.float64)
        if v.shape[-1] != self.h.shape[1]:
            raise ValueError(f"voltages must have {self.h.shape[1]} measurements in the last axis, "
                             f"got shape {tuple(v.shape)}")
        return apply_step(jnp.asarray(self.h), jnp.asarray(self.v_bg), v, jnp.asarray(self.background), self.param)

    def iterative(self, v, *, max_iter: int = 5, alpha: float | None = None, lm: bool = False,
                  progress: bool = False) -> np.ndarray:
        """Iterative regularised GN per sample: (B, M) or (M,) → (B, E) or (E,) float64.

        Uses :func:`jaxeit.recon.classical.gauss_newton` (line search, log σ) from
        σ₀ with the same prior and ``alpha`` (default this operator's); ``lm`` adds
        Levenberg–Marquardt damping (the DGM comparison paper's GN). About one
        forward solve + Jacobian per iteration and sample; ``progress`` shows a bar.
        """
        from .classical import gauss_newton  # same package: classical imports this module at its top

        if self.param != "log":
            raise ValueError("the iterative GN works in log sigma: build the operator with param='log'")
        if self.prior not in ("noser", "laplace", "tikhonov"):
            raise ValueError("the iterative GN supports the 'noser', 'laplace' and 'tikhonov' priors")
        vv = np.atleast_2d(np.asarray(v, np.float64))
        rows = range(len(vv))
        if progress:
            from tqdm.auto import tqdm
            rows = tqdm(rows, desc="LM" if lm else "GN", unit="sample", leave=False)
        out = np.stack([
            gauss_newton(self.model, vv[i], sigma0=self.background, alpha=self.alpha if alpha is None else alpha,
                         prior=self.prior, max_iter=int(max_iter), lm=lm).sigma
            for i in rows])
        return out if np.ndim(v) == 2 else out[0]

    def describe(self) -> dict:
        """JSON-able description for a data set's metadata."""
        formula = ("sigma = sigma_bg * exp((Js^T Js + lam R)^-1 Js^T (v - F(sigma_bg))), Js = sigma_bg dF/dsigma "
                   "at sigma_bg" if self.param == "log" else
                   "sigma = sigma_bg + (J^T J + lam R)^-1 J^T (v - F(sigma_bg)), J = dF/dsigma at sigma_bg")
        return {"formula": formula, "param": self.param, "prior": self.prior, "alpha": self.alpha, "p": self.p,
                "lambda": self.lam,
                "background": self.background if np.ndim(self.background) == 0 else "array"}
