"""Implicit neural representation of conductivity: random Fourier features + MLP (Flax NNX).

σ_θ(x) = σ_bg · exp(MLP_θ(γ(x̃))),  γ(x̃) = [cos 2πBx̃, sin 2πBx̃],  B ∈ ℝ^{m×2}, B_ij ~ N(0, σ_b²),

with x̃ the coordinates normalised to the domain's [-1, 1]² box (Diff-INR §3.2)
and σ_b the bandwidth (see :mod:`jaxeit.recon.inr.bandwidth`). The exponential
around a background estimate keeps σ positive and makes the network model
relative contrast; the last layer starts small so σ_θ ≈ σ_bg at the start.
Defaults follow Diff-INR §4.4: 4 fully connected layers of 128 units (ReLU)
and Adam with lr 0.01; m = 256 features (the paper's count was lost from our copy).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["INR", "FourierFeatures", "factor_features", "normalise_coordinates"]


class FourierFeatures(nnx.Module):
    """Fixed random Fourier features γ(x) = [cos 2πBx, sin 2πBx]; B (m, 2) is not trained."""

    def __init__(self, n_features: int, bandwidth: float, *, rngs: nnx.Rngs):
        b = bandwidth * jax.random.normal(rngs.params(), (n_features, 2))
        self.B = nnx.Variable(b.astype(jnp.float32))  # a plain Variable, not nnx.Param: never optimised

    def __call__(self, x):
        """x (P, 2) → (P, 2m) float32."""
        return self.columns(x).T

    def columns(self, x):
        """x (P, 2) → (2m, P) float32, one column per point: the layout :meth:`INR.log_sigma_of_features` takes."""
        proj = 2 * jnp.pi * (self.B[...] @ x.astype(jnp.float32).T)
        return jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], axis=0)


class INR(nnx.Module):
    """σ_θ at points x (P, 2) in normalised coordinates → (P,) float32 conductivities.

    Args:
        bandwidth: σ_b of the Fourier features (cycles per unit of normalised length).
        background: σ_bg, the conductivity the exponential is centred on.
        n_features: m, number of frequencies (2m features).
        width, depth: hidden units and number of hidden layers.
        rngs: ``nnx.Rngs``; its ``params`` stream draws B and the weights.
    """

    def __init__(self, *, bandwidth: float, background: float = 1.0, n_features: int = 256, width: int = 128,
                 depth: int = 4, output_scale: float = 1e-2, rngs: nnx.Rngs):
        self.features = FourierFeatures(n_features, bandwidth, rngs=rngs)
        dims = [2 * n_features] + [width] * depth
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:])])
        self.out = nnx.Linear(width, 1, rngs=rngs,
                              kernel_init=nnx.initializers.variance_scaling(output_scale**2, "fan_in", "normal"))
        self.log_background = nnx.Variable(jnp.log(jnp.asarray(background, jnp.float32)))

    def log_sigma_of_features(self, cols, basis=None):
        """log σ_θ from Fourier features (2m, P) float32 (one column per point) → (P,) float32.

        The trained part of the network. Features of fixed points do not depend
        on θ, so a fit computes them once and calls this every step. With
        ``basis`` (2m, r), ``cols`` (r, P) are the features' coefficients in it
        (features = basis @ cols, see :func:`factor_features`) and the first
        layer costs r·(2m + P) instead of 2m·P per unit. Activations are kept as
        (units, P): on XLA's CPU backend the value and gradient then took ~20 %
        less CPU time than with points as rows, where every weight gradient
        contracts the leading (point) axis, a slow matmul form there.
        """
        first, *rest = self.hidden
        w = first.kernel[...].T if basis is None else first.kernel[...].T @ basis
        h = jax.nn.relu(w @ cols + first.bias[...][:, None])
        for layer in rest:
            h = jax.nn.relu(layer.kernel[...].T @ h + layer.bias[...][:, None])
        return (self.out.kernel[...].T @ h)[0] + self.out.bias[...][0] + self.log_background[...]

    def log_sigma(self, x):
        """log σ_θ at points x (P, 2) → (P,) float32."""
        return self.log_sigma_of_features(self.features.columns(x))

    def __call__(self, x):
        return jnp.exp(self.log_sigma(x))


def factor_features(cols, rtol: float = 1e-7, max_cost: float = 0.8):
    """Low-rank factors of fixed Fourier features: cols (2m, P) ≈ basis (2m, r) @ coeffs (r, P), float32.

    Features of smooth (band-limited) frequencies at many points are
    numerically low-rank: at the default bandwidth on a ~1k-element mesh
    about half of the 2m = 512 singular values lie below 1e-7 of the largest.
    The truncated SVD keeps those above ``rtol``·s₀, so the product differs
    from ``cols`` by about float32 rounding. Returns ``(None, cols)`` when the
    factored first layer would not cost less than ``max_cost`` times the dense one.
    """
    f = np.asarray(cols, np.float64)
    u, s, vt = np.linalg.svd(f, full_matrices=False)
    r = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    n_feat, n_pts = f.shape
    if r == 0 or r * (n_feat + n_pts) > max_cost * n_feat * n_pts:
        return None, jnp.asarray(cols, jnp.float32)
    return jnp.asarray(u[:, :r] * s[:r], jnp.float32), jnp.asarray(vt[:r], jnp.float32)


def normalise_coordinates(points, centre, scale):
    """Map physical coordinates (..., 2) to the normalised domain: (x − centre)/scale."""
    return (jnp.asarray(points) - jnp.asarray(centre)) / scale


def domain_frame(mesh) -> tuple[np.ndarray, float]:
    """(centre (2,), scale): the mesh's bounding-box centre and half-width (max over x, y)."""
    lo, hi = mesh.nodes.min(axis=0), mesh.nodes.max(axis=0)
    return 0.5 * (lo + hi), float(0.5 * np.max(hi - lo))
