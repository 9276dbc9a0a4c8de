"""Diffusion prior of Diff-INR: shapes data set, U-Net, improved DDPM, training, pretrained weights.

Public API::

    from jaxeit.priors import load_pretrained
    prior = load_pretrained()                 # offline, the shipped "shapes32" prior
    x, lo, hi = prior.to_prior(sigma_image, mask)   # EIT image -> [-1, 1] prior units
    eps_hat = prior.apply(x_t, t)             # ε̂, float32
    x0_hat = prior.denoise(x_t, t)            # x̂₀ from ε̂
    samples = prior.sample(key, 16, steps=100)

Modules: :mod:`~jaxeit.priors.shapes` (data set, normalisation, outside-disk
rule), :mod:`~jaxeit.priors.unet` (Flax NNX U-Net), :mod:`~jaxeit.priors.diffusion`
(cosine schedule, learned-range variance, hybrid loss, respaced sampling),
:mod:`~jaxeit.priors.train` (training, checkpoints, CLI ``main``),
:mod:`~jaxeit.priors.pretrained` (:class:`DiffusionPrior`, :func:`load_pretrained`).
"""

from jaxeit.priors.diffusion import GaussianDiffusion, cosine_betas, space_timesteps
from jaxeit.priors.pretrained import DEFAULT_PRIOR, DiffusionPrior, available_priors, load_pretrained
from jaxeit.priors.shapes import (
    ShapesConfig,
    denormalize,
    disk_mask,
    fill_outside,
    normalize,
    sample_images,
    to_prior,
)
from jaxeit.priors.unet import UNet, UNetConfig, make_apply

__all__ = [
    "DEFAULT_PRIOR",
    "DiffusionPrior",
    "GaussianDiffusion",
    "ShapesConfig",
    "UNet",
    "UNetConfig",
    "available_priors",
    "cosine_betas",
    "denormalize",
    "disk_mask",
    "fill_outside",
    "load_pretrained",
    "make_apply",
    "normalize",
    "sample_images",
    "space_timesteps",
    "to_prior",
]
