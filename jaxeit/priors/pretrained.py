"""The pretrained shapes prior: :class:`DiffusionPrior` and :func:`load_pretrained` (offline).

Shipped weights live in ``jaxeit/priors/weights/<name>.msgpack`` (EMA
parameters, float32, ``flax.serialization`` msgpack of a pure dict) with
``<name>.json`` beside them (network and training config, provenance). They
are read from the package folder only; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxeit.priors import shapes as shapes_lib
from jaxeit.priors.diffusion import GaussianDiffusion
from jaxeit.priors.unet import UNetConfig, abstract_params, make_apply

__all__ = ["DiffusionPrior", "load_pretrained", "available_priors", "DEFAULT_PRIOR", "WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Name of the shipped prior.
DEFAULT_PRIOR = "shapes32"

_F32 = jnp.float32


def _regen_hint(name: str) -> str:
    return (f"regenerate it with `python -m jaxeit.priors.train --workdir runs/{name} --export {name}` "
            f"(or `jaxeit train-prior --workdir runs/{name} --export {name}`; about 75 min on one CPU core)")


class DiffusionPrior:
    """A trained ε-prediction diffusion model on ``image_size × image_size`` images in [-1, 1].

    Attributes:
        name: the weights' name (or None).
        image_size: n.
        unet_config: the network's :class:`~jaxeit.priors.unet.UNetConfig`.
        diffusion: the training process (cosine schedule, T steps).
        num_timesteps: T.
        alphas_cumprod: (T,) float32 ᾱ_t, index t = 0 … T-1 (as passed to :meth:`apply`).
        params: the network parameters (an ``nnx.State``).
        provenance: the JSON metadata shipped with the weights.

    All image arguments are (B, n, n) or (n, n) arrays in the normalised [-1, 1]
    units of :func:`normalize`; timesteps are integers in [0, T), a scalar or (B,).
    Network functions run in float32.
    """

    def __init__(self, params, unet_config: UNetConfig, *, num_timesteps: int = 1000, name: str | None = None,
                 provenance: dict | None = None):
        self.name = name
        self.unet_config = unet_config
        self.image_size = int(unet_config.image_size)
        self.diffusion = GaussianDiffusion.cosine(num_timesteps)
        self.num_timesteps = int(num_timesteps)
        self.alphas_cumprod = jnp.asarray(self.diffusion.alphas_cumprod, _F32)
        self.params = params
        self.provenance = provenance or {}
        graphdef, _ = abstract_params(unet_config)
        self._net = make_apply(graphdef)
        self.network = self._net  # pure (params, x, t) -> (ε̂, v), for jitted callers such as the SDS regulariser
        self._samplers = {}
        net, check = self._net, self._check

        @jax.jit
        def _apply_with_variance(params, x, t):
            x = check(x)
            t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), x.shape[:-2])
            return net(params, x, t)

        @jax.jit
        def _apply(params, x, t):
            return _apply_with_variance(params, x, t)[0]

        def apply(x, t):
            """ε̂(x_t, t): float32 of x's shape ((B, n, n) or (n, n)); t int, scalar or (B,)."""
            return _apply(self.params, x, t)

        def apply_with_variance(x, t):
            """(ε̂, v) at (x_t, t); v ∈ [0, 1] nominal: Σ = exp(v log β_t + (1 − v) log β̃_t)."""
            return _apply_with_variance(self.params, x, t)

        self.apply = apply
        self.apply_with_variance = apply_with_variance

    def _check(self, x):
        x = jnp.asarray(x, _F32)
        if x.ndim not in (2, 3) or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of shape (B, {self.image_size}, {self.image_size}) or "
                             f"({self.image_size}, {self.image_size}), got {x.shape}")
        return x

    # -- diffusion helpers -----------------------------------------------------------
    def q_sample(self, x0, t, noise):
        """``x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε`` (any leading shape; t scalar or (B,))."""
        x0 = self._check(x0)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), x0.shape[:-2])
        ab = self.alphas_cumprod[t][..., None, None]
        return jnp.sqrt(ab) * x0 + jnp.sqrt(1.0 - ab) * jnp.asarray(noise, _F32)

    def denoise(self, x_t, t):
        """x̂₀ = (x_t − √(1 − ᾱ_t) ε̂)/√ᾱ_t (Tweedie / DDPM estimate; not clipped)."""
        x_t = self._check(x_t)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.int32), x_t.shape[:-2])
        ab = self.alphas_cumprod[t][..., None, None]
        return (x_t - jnp.sqrt(1.0 - ab) * self.apply(x_t, t)) / jnp.sqrt(ab)

    def sample(self, key, n: int, *, steps: int = 100, clip: bool = True) -> jax.Array:
        """``n`` samples (n, size, size) float32 in [-1, 1] by ancestral sampling on ``steps`` respaced steps.

        Uses the learned variances of the respaced process; ``clip`` clips x̂₀ to
        [-1, 1] at every step. Compiles once per ``(steps, clip, n)``.
        """
        if int(n) < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        k = (int(steps), bool(clip))
        if k not in self._samplers:
            self._samplers[k] = self.diffusion.respace(int(steps)).sampler(self._net, clip=bool(clip))
        return self._samplers[k](self.params, key, (int(n), self.image_size, self.image_size))

    # -- normalisation (the data set's rules) ------------------------------------------
    def disk_mask(self) -> np.ndarray:
        """(n, n) bool: pixel centres inside the unit disk of the prior's [-1, 1]² grid."""
        return shapes_lib.disk_mask(self.image_size)

    normalize = staticmethod(shapes_lib.normalize)
    denormalize = staticmethod(shapes_lib.denormalize)
    fill_outside = staticmethod(shapes_lib.fill_outside)
    to_prior = staticmethod(shapes_lib.to_prior)

    def __repr__(self):
        return (f"DiffusionPrior(name={self.name!r}, image_size={self.image_size}, "
                f"T={self.num_timesteps}, channels={self.unet_config.base_channels}x"
                f"{list(self.unet_config.channel_mult)})")


def available_priors() -> list[str]:
    """Names of the weights shipped in the package (``weights/<name>.msgpack``, or its parts ``.msgpack.00`` …)."""
    whole = {p.stem for p in WEIGHTS_DIR.glob("*.msgpack")}
    parts = {p.name.split(".msgpack.")[0] for p in WEIGHTS_DIR.glob("*.msgpack.00")}
    return sorted(whole | parts)


def _weight_files(wpath: Path) -> list[Path]:
    """The file(s) holding the weights: ``wpath`` itself, or its parts ``wpath.00``, ``wpath.01``, …"""
    if wpath.is_file():
        return [wpath]
    parts = sorted(wpath.parent.glob(wpath.name + ".[0-9][0-9]"))
    return parts if parts and parts[0].name.endswith(".00") else [wpath]


def _names_diff(expected: set, got: set) -> str:
    missing, extra = sorted(expected - got), sorted(got - expected)
    return (f"missing {missing[:3]}{' …' if len(missing) > 3 else ''} ({len(missing)}), "
            f"unexpected {extra[:3]}{' …' if len(extra) > 3 else ''} ({len(extra)})")


_CACHE: dict = {}


def load_pretrained(name: str = DEFAULT_PRIOR, *, path=None, cache: bool = True) -> DiffusionPrior:
    """Load a shipped prior, offline.

    Args:
        name: weights name (default :data:`DEFAULT_PRIOR`); see :func:`available_priors`.
        path: explicit ``.msgpack`` file instead (its ``.json`` must sit beside it).
        cache: return the same object for the same unchanged files (so its compiled
            functions are reused).

    Returns:
        A :class:`DiffusionPrior` with the EMA weights.

    Raises:
        FileNotFoundError: the weights or their JSON are missing (the message names
            the file and the command that regenerates it).
        ValueError: the files are corrupt or do not match their config.
    """
    from flax import nnx, serialization

    wpath = Path(path) if path is not None else WEIGHTS_DIR / f"{name}.msgpack"
    name = wpath.stem
    jpath = wpath.with_suffix(".json")
    files = _weight_files(wpath)
    for p in (*files, jpath):
        if not p.is_file():
            avail = available_priors()
            raise FileNotFoundError(f"prior weights file {p} is missing"
                                    f"{f' (shipped: {avail})' if avail else ''}; {_regen_hint(name)}")
    stamp = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in (*files, jpath))
    if cache and stamp in _CACHE:
        return _CACHE[stamp]
    try:
        meta = json.loads(jpath.read_text())
        unet_config = UNetConfig.from_dict(meta["unet_config"])
        num_timesteps = int(meta["train_config"].get("num_timesteps", 1000))
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"prior metadata file {jpath} is corrupt ({type(exc).__name__}: {exc}); "
                         f"{_regen_hint(name)}") from exc
    _, template = abstract_params(unet_config)
    try:
        blob = b"".join(p.read_bytes() for p in files)
        expected_parts = [part["bytes"] for part in meta.get("parts", [])]
        if expected_parts and [p.stat().st_size for p in files] != expected_parts:
            raise ValueError(f"the weights parts have sizes {[p.stat().st_size for p in files]}, "
                             f"{jpath.name} lists {expected_parts}")
        restored = serialization.msgpack_restore(blob)
        ref = nnx.to_pure_dict(template)
        ref_flat = dict(jax.tree_util.tree_flatten_with_path(ref)[0])
        got_flat = dict(jax.tree_util.tree_flatten_with_path(restored)[0])
        ref_names, got_names = set(map(jax.tree_util.keystr, ref_flat)), set(map(jax.tree_util.keystr, got_flat))
        if ref_names != got_names:
            raise ValueError(f"parameter names differ from the network of the JSON's unet_config "
                             f"({_names_diff(ref_names, got_names)})")
        got = {jax.tree_util.keystr(k): v for k, v in got_flat.items()}
        for k, v in ref_flat.items():
            g = got[jax.tree_util.keystr(k)]
            if np.shape(g) != np.shape(v):
                raise ValueError(f"parameter {jax.tree_util.keystr(k)} has shape {np.shape(g)}, "
                                 f"expected {np.shape(v)}")
            if not np.all(np.isfinite(g)):
                raise ValueError(f"parameter {jax.tree_util.keystr(k)} is not finite")
        restored = jax.tree_util.tree_map(lambda a: jnp.asarray(a, _F32), restored)
        nnx.replace_by_pure_dict(template, restored)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"prior weights file {wpath} is corrupt or does not match {jpath.name} "
                         f"({type(exc).__name__}: {exc}); {_regen_hint(name)}") from exc
    prior = DiffusionPrior(template, unet_config, num_timesteps=num_timesteps, name=name, provenance=meta)
    if cache:
        _CACHE[stamp] = prior
    return prior
