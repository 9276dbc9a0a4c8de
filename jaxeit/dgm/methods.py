"""The learned reconstructions as methods of :func:`jaxeit.recon.reconstruct`: ``"cnf"``, ``"cvae"``, ``"csd"``.

Importing :mod:`jaxeit.dgm` registers them, so that::

    import jaxeit.dgm
    fm = jaxeit.dgm.load_pretrained("cnf_c4_40db").forward_model()
    res = reconstruct(fm, v, "cnf", n_samples=20)      # res.image (n, n), res.extras["std"]

Each method uses a shipped model (:mod:`jaxeit.dgm.pretrained`) whose training
geometry matches the forward model: ``weights=`` names one, otherwise the
matching one is found; data of any other mesh, electrode model or protocol get
a ValueError that says what differs, and so do voltages whose scale is unlike
every training sample (:meth:`PretrainedDGM.check_data`: other units or
current), never a silently wrong image. The
network's input is formed exactly as in its training data (the linearised GN
image of :class:`jaxeit.data.Operators` for CNF and CSD*; raw voltages for the
CVAE, so they must also have the training data's scale: unit current, the
point-electrode model's units).

The result's ``image`` is the network's (n, n) image over [-1, 1]² (the
training data's exterior value outside the domain), ``sigma`` its average
over each element of the training mesh, and ``extras`` holds ``std`` (the
pixel-wise posterior std, for the sampling methods), ``samples``, the
``gn_image`` input and the model's name.
"""

from __future__ import annotations

import dataclasses
import time
from typing import ClassVar

import jax
import numpy as np

from ..recon.method import Method
from ..recon.registry import register_method
from ..recon.result import Result
from .pretrained import PretrainedDGM, find_pretrained

__all__ = ["LearnedMethod", "CNFMethod", "CVAEMethod", "CSDMethod", "DPSMethod"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LearnedMethod(Method):
    """Options every learned method shares: which model, and where the models are."""

    kind: ClassVar[str] = ""

    weights: str | None = None
    weights_dir: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.weights is not None and not isinstance(self.weights, str):
            raise ValueError(f"{self.name}: weights must be a shipped model's name (str) or None, "
                             f"got {self.weights!r}")

    def pretrained(self, fm) -> PretrainedDGM:
        """The model of this method for ``fm``'s geometry (a ValueError when there is none)."""
        return find_pretrained(self.kind, fm, name=self.weights, directory=self.weights_dir)

    def check(self, model, v, reference) -> None:
        super().check(model, v, reference)
        self.pretrained(model).check_data(v)

    def _result(self, pm: PretrainedDGM, image, t_start, *, std=None, samples=None, gn=None) -> Result:
        image = pm.masked(image)
        extras = {"model": pm.name}
        if std is not None:
            extras["std"] = pm.masked(std)
        if samples is not None:
            extras["samples"] = pm.masked(samples)
        if gn is not None:
            extras["gn_image"] = gn
        return Result(sigma=pm.image_to_sigma(image), method=self.name, history={}, n_iter=1,
                      wall_time=time.perf_counter() - t_start, status="done",
                      background=float(pm.simulation.background), options=self.options(), image=image,
                      extras=extras)


def _key(key, name):
    if key is None:
        return jax.random.PRNGKey(0)
    if not (isinstance(key, jax.Array) and (jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
                                            or (key.shape == (2,) and key.dtype == np.uint32))):
        raise ValueError(f"{name}: key must be a jax.random key (e.g. jax.random.PRNGKey(0)), got {key!r}")
    return key


def _check_steps(name: str, n_steps) -> None:
    """A sampler's ``n_steps`` option: an int >= 1, or None for the model card's value."""
    if n_steps is not None and not (isinstance(n_steps, (int, np.integer)) and n_steps >= 1):
        raise ValueError(f"{name}: n_steps must be an int >= 1 or None, got {n_steps!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class CNFMethod(LearnedMethod):
    """Conditional normalising flow on the GN image (Denker et al. 2021; DGM comparison §3.2).

    Options:
        weights: a shipped model's name (default: the one for this geometry).
        weights_dir: a folder of models saved with :func:`~jaxeit.dgm.save_pretrained`.
        n_samples: posterior samples; the image is their mean, ``extras["std"]`` their std.
        temperature: std of the latent (1: the trained posterior).
        key: ``jax.random`` key of the samples (default ``PRNGKey(0)``).
    """

    name: ClassVar[str] = "cnf"
    description: ClassVar[str] = "conditional normalising flow on the GN image (shipped model; mean and std of samples)"
    kind: ClassVar[str] = "cnf"
    _counts: ClassVar[tuple] = ("n_samples",)
    _nonnegative: ClassVar[tuple] = ("temperature",)

    n_samples: int = 20
    temperature: float = 1.0
    key: object = None

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        pm = self.pretrained(model)
        gn = pm.gn_image(v)
        xs = pm.model.sample(gn, _key(self.key, self.name), n_samples=self.n_samples, temperature=self.temperature)
        return self._result(pm, xs.mean(0), t0, std=xs.std(0), samples=xs, gn=gn)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CVAEMethod(LearnedMethod):
    """Two-stage conditional VAE (Seo et al. 2019; DGM comparison §3.1): voltages → latent → image.

    One deterministic pass, no uncertainty map. Options: ``weights``, ``weights_dir`` (see :class:`CNFMethod`).
    """

    name: ClassVar[str] = "cvae"
    description: ClassVar[str] = "two-stage conditional VAE from the voltages (shipped model; one pass)"
    kind: ClassVar[str] = "cvae"

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        pm = self.pretrained(model)
        return self._result(pm, pm.model.reconstruct(v).image, t0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CSDMethod(LearnedMethod):
    """CSD*: the GN image diffused to t₀ and denoised by a score model (DGM comparison §3.3.2).

    Options:
        weights, weights_dir: see :class:`CNFMethod` (a ``score`` model).
        t0: start time in (0, 1]; default the model card's ``t0`` (chosen on validation
            data when the model was trained), else 0.55 (the paper's code: step 550 of 1000).
        n_samples: refinements; the image is their mean, ``extras["std"]`` their std.
        n_steps: reverse steps (default: the card's ``n_steps``, else the SDE's N · t0).
        key: ``jax.random`` key (default ``PRNGKey(0)``).

    The input is the model card's ``csd_input``: the iterative Levenberg–Marquardt image (the
    paper's GN; ``extras["gn_image"]``) or the one-step GN image.
    """

    name: ClassVar[str] = "csd"
    description: ClassVar[str] = "CSD*: GN image refined by a score model from t0 (shipped model; mean and std)"
    kind: ClassVar[str] = "score"
    _counts: ClassVar[tuple] = ("n_samples",)

    t0: float | None = None
    n_samples: int = 20
    n_steps: int | None = None
    key: object = None

    def __post_init__(self):
        super().__post_init__()
        if self.t0 is not None and not (isinstance(self.t0, (int, float)) and 0 < self.t0 <= 1):
            raise ValueError(f"csd: t0 must be in (0, 1] or None (the model card's value), got {self.t0!r}")
        _check_steps(self.name, self.n_steps)

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        pm = self.pretrained(model)
        gn = pm.csd_input(v)
        start = float(self.t0 if self.t0 is not None else pm.card.get("t0", 0.55))
        steps = self.n_steps if self.n_steps is not None else pm.card.get("n_steps")
        res = pm.model.reconstruct(gn, _key(self.key, self.name), t0=start, n_samples=self.n_samples,
                                   n_steps=steps)
        return self._result(pm, res.image, t0, std=res.extras["std"], gn=gn)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DPSMethod(LearnedMethod):
    """Diffusion posterior sampling (Chung et al. 2023): a shipped score model as the prior, chains from
    noise guided by the exact forward model of the training geometry (beyond the DGM paper).

    Options:
        weights, weights_dir: see :class:`CNFMethod` (a ``score`` model).
        zeta: the likelihood step size (default: the card's ``dps_zeta``, chosen on validation data
            when the model was shipped, else 1).
        n_samples: chains; the image is their mean, ``extras["std"]`` their std.
        n_steps: reverse steps from T (default: the card's ``dps_steps``, else 200).
        key: ``jax.random`` key (default ``PRNGKey(0)``).

    Costs chains × steps score evaluations and FEM gradients: 42 s for the defaults (4 chains ×
    200 steps, ``score_c4_40db``) on 2 CPU cores after compilation (47 s with it).
    """

    name: ClassVar[str] = "dps"
    description: ClassVar[str] = "diffusion posterior sampling: shipped score prior + exact forward model (mean, std)"
    kind: ClassVar[str] = "score"
    _counts: ClassVar[tuple] = ("n_samples",)

    zeta: float | None = None
    n_samples: int = 4
    n_steps: int | None = None
    key: object = None

    def __post_init__(self):
        super().__post_init__()
        if self.zeta is not None and not (isinstance(self.zeta, (int, float)) and self.zeta >= 0):
            raise ValueError(f"dps: zeta must be a number >= 0 or None (the model card's value), got {self.zeta!r}")
        _check_steps(self.name, self.n_steps)

    def run(self, model, v, reference=None) -> Result:
        t0 = time.perf_counter()
        pm = self.pretrained(model)
        zeta = float(self.zeta if self.zeta is not None else pm.card.get("dps_zeta", 1.0))
        steps = int(self.n_steps if self.n_steps is not None else pm.card.get("dps_steps", 200))
        xs = pm.posterior_samples(v, _key(self.key, self.name), zeta=zeta, n_samples=self.n_samples, n_steps=steps)
        return self._result(pm, xs.mean(0), t0, std=xs.std(0), samples=xs)


for _cls in (CNFMethod, CVAEMethod, CSDMethod, DPSMethod):
    register_method(_cls)
