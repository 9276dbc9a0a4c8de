"""Deep generative models for EIT from the DGM comparison paper (Wang, Xu & Zhou): CVAE, CNF, CSD*.

* :mod:`jaxeit.dgm.cvae` — two-stage conditional VAE (Seo et al. 2019; §3.1):
  :class:`CVAEConfig`, :func:`train_cvae`, :class:`CVAE` (``reconstruct(voltages)``).
* :mod:`jaxeit.dgm.cnf` — conditional multi-scale normalising flow (Denker et
  al. 2021; §3.2): :class:`CNFConfig`, :func:`train_cnf`, :class:`CNF`
  (``reconstruct(gn_images, key)`` → mean and std of 20 samples).
* :mod:`jaxeit.dgm.sde` — VP and VE SDEs (Song et al. 2021): :class:`VPSDE`,
  :class:`VESDE`, :func:`get_sde`.
* :mod:`jaxeit.dgm.score` — score network on the repository U-Net, denoising
  score matching and training with an EMA (§3.3): :class:`ScoreConfig`,
  :func:`dsm_loss`, :func:`train_score`, :class:`ScoreModel`
  (``reconstruct(gn_images, key)`` → CSD* mean and std).
* :mod:`jaxeit.dgm.sampling` — predictor–corrector, reverse-SDE and
  probability-flow ODE samplers (diffrax), CSD* (:func:`csd_star`, §3.3.2) and
  DPS posterior sampling through any differentiable forward map
  (:func:`dps_sample`, Chung et al. 2023), from noise or, like CSD*, from a
  start image diffused to t₀ (CSD* with the likelihood step).
* :mod:`jaxeit.dgm.pretrained` — shipped models with the geometry they were
  trained on: :func:`load_pretrained`, :func:`available_models`,
  :func:`save_pretrained`, :func:`find_pretrained`.
* :mod:`jaxeit.dgm.methods` — ``"cnf"``, ``"cvae"`` and ``"csd"`` as methods of
  :func:`jaxeit.recon.reconstruct` (registered on import), using the shipped
  model that matches the forward model's geometry.
* :mod:`jaxeit.dgm.training` — the shared resumable training loop (optax,
  ``nnx.split`` + ``jax.jit`` + ``nnx.merge``, atomic checkpoints).

Networks are float32 (Flax NNX); data sets come from :mod:`jaxeit.data`.
"""

from .cnf import CNF, CNFConfig, ConditionalFlow, train_cnf
from .cvae import CVAE, CVAEConfig, LatentMLP, VAE, train_cvae
from .sampling import csd_star, dps_sample, ode_sample, pc_sample, sde_sample, tweedie_x0
from .score import ScoreConfig, ScoreModel, dsm_loss, train_score
from .sde import VESDE, VPSDE, get_sde
from .training import FitConfig, fit
from .pretrained import (PretrainedDGM, available_models, default_pretrained, find_pretrained, image_measurement,
                         load_pretrained, save_pretrained)
from .methods import CNFMethod, CSDMethod, CVAEMethod, DPSMethod, LearnedMethod

__all__ = ["CVAE", "CVAEConfig", "VAE", "LatentMLP", "train_cvae", "CNF", "CNFConfig", "ConditionalFlow",
           "train_cnf", "FitConfig", "fit", "VPSDE", "VESDE", "get_sde", "ScoreConfig", "ScoreModel", "dsm_loss",
           "train_score", "pc_sample", "sde_sample", "ode_sample", "csd_star", "dps_sample", "tweedie_x0",
           "PretrainedDGM", "available_models", "default_pretrained", "find_pretrained", "load_pretrained",
           "save_pretrained", "image_measurement", "LearnedMethod", "CNFMethod", "CVAEMethod", "CSDMethod",
           "DPSMethod"]
