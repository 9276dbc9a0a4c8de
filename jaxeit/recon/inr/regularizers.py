"""Regularisers of a gridded conductivity image: ``fn(image, key) -> scalar``.

The INR fitting renders σ_θ on a pixel grid (the prior's grid), divides it by
the background estimate σ_bg (so images are relative and dimensionless) and
calls each regulariser with that image (H, W) and a fresh PRNG key; the total
loss is data + Σ weightᵢ·regᵢ. Deterministic regularisers ignore the key. The
SDS prior of :mod:`jaxeit.priors` plugs in the same way.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["Regularizer", "TotalVariation", "total_variation", "StaticRegularizer", "as_pytree"]

Regularizer = Callable[[jax.Array, jax.Array], jax.Array]


@jax.tree_util.register_pytree_node_class
class TotalVariation:
    """Smoothed isotropic TV, ∫_Ω sqrt(|∇x|² + eps²) − eps dA, in normalised coordinates.

    Args:
        mask: (H, W) bool domain mask; differences are taken between pixels that
            are both inside, so the domain edge is not penalised.
        pixel_size: pixel edge length in the normalised frame ([-1, 1]² box: 2/W).
        eps: smoothing of |·| at zero gradient (relative conductivity per unit length).

    For a relative image, an inclusion of radius r and contrast c costs ≈ 2πr·c.
    A pytree (the mask is its leaf), so jitted fitting code is reused across calls.
    """

    def __init__(self, mask, *, pixel_size: float, eps: float = 1e-3):
        mask = jnp.asarray(mask)
        if mask.dtype == jnp.bool_:
            mx = (mask[:, 1:] & mask[:, :-1])[:-1, :]
            my = (mask[1:, :] & mask[:-1, :])[:, :-1]
            mask = (mx & my).astype(jnp.float32)  # pixels whose right and upper neighbours are inside
        self.weights = mask
        self.pixel_size = float(pixel_size)
        self.eps = float(eps)

    def __call__(self, image, key=None):
        h = self.pixel_size
        dx = (image[:-1, 1:] - image[:-1, :-1]) / h
        dy = (image[1:, :-1] - image[:-1, :-1]) / h
        mag = jnp.sqrt(dx**2 + dy**2 + self.eps**2) - self.eps
        return jnp.sum(self.weights * mag) * h**2

    def tree_flatten(self):
        return (self.weights,), (self.pixel_size, self.eps)

    @classmethod
    def tree_unflatten(cls, aux, leaves):
        obj = object.__new__(cls)
        (obj.weights,) = leaves
        obj.pixel_size, obj.eps = aux
        return obj


def total_variation(mask, *, pixel_size: float, eps: float = 1e-3) -> TotalVariation:
    """:class:`TotalVariation` of relative images on a grid with domain ``mask``."""
    return TotalVariation(mask, pixel_size=pixel_size, eps=eps)


@jax.tree_util.register_pytree_node_class
class StaticRegularizer:
    """Wraps a plain function so it can travel through ``jit`` as a (leafless) pytree."""

    def __init__(self, fn):
        self.fn = fn
        self.uses_fraction = bool(getattr(fn, "uses_fraction", False))   # fn(image, key, fraction)

    def __call__(self, image, key, *fraction):
        return self.fn(image, key, *fraction)

    def tree_flatten(self):
        return (), self.fn

    @classmethod
    def tree_unflatten(cls, fn, leaves):
        return cls(fn)


def as_pytree(fn) -> object:
    """``fn`` itself if it is a registered pytree (its arrays become jit arguments), else wrapped."""
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    if treedef.num_leaves == 1 and leaves and leaves[0] is fn:  # an unregistered object is its own leaf
        return StaticRegularizer(fn)
    return fn
