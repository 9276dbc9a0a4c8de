"""A Gaussian prior for the KTC2023 tank, learned from the simulator's random targets.

The organisers' smoothness prior (:func:`jaxeit.recon.linear.smoothness_prior`) is stationary: the
same correlation everywhere, at the electrodes too, where the challenge's objects never are. This
one is the second moment of the targets themselves. Each of ``n_samples`` targets drawn by the
simulator (:func:`jaxeit.realdata.ktc_simulator.random_truth`, with its conductivity factors) gives
the log-contrast s = log(σ/σ_bg) averaged over each element of the reconstruction mesh, and

    M = (1/n) Σ_k s_k s_kᵀ / mean(diag),        Γ = variance · (M + nugget · I)        (E × E)

The mean is left at zero: resistive and conductive objects are equally likely and their decades
symmetric, so the targets' mean log-contrast is about 0 (−0.002 against a standard deviation of
0.86 at 3,000 samples). M knows the objects' sizes and shapes, that they keep off the wall, and how
neighbouring elements move together. ``variance`` sets its scale in the MAP, as the smoothness
prior's variance does; ``nugget`` keeps Γ invertible in the directions no target excites.

The moment of the pipeline's mesh (``ktc_mesh(h=0.014)``) ships in
``weights/ktc_gn_prior/moment.npz`` (float32, upper triangle). It is recomputed for any other
mesh, simulator or sample count (about 4 ms per sample, once: kept in :func:`moment_cache_dir`).
Remake the shipped file with ``python -m jaxeit.realdata.ktc_prior``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .. import compilation_cache
from ..grid import grid_to_mesh
from ..io_utils import atomic_path
from ..mesh import Mesh
from ..recon.linear import precision_factor
from .ktc import KTC_GRID, to_truth_frame
from .ktc_simulator import KTCSimConfig, sample_contrast

__all__ = ["PRIOR_SAMPLES", "PRIOR_SEED", "SHIPPED_MOMENT", "target_log_contrasts", "simulated_moment",
           "simulated_prior", "write_moment", "moment_cache_dir"]

#: targets behind the shipped moment, and their seed (apart from every simulated data set's seed)
PRIOR_SAMPLES = 10_000
PRIOR_SEED = 31_337
SHIPPED_MOMENT = Path(__file__).resolve().parent / "weights" / "ktc_gn_prior" / "moment.npz"
_CHUNK = 250                      # targets mapped to the mesh at once


def target_log_contrasts(mesh: Mesh, n_samples: int, *, seed: int,
                         config: KTCSimConfig = KTCSimConfig()) -> np.ndarray:
    """(n_samples, E) float64: log(σ/σ_bg) of the simulator's targets ``0 … n_samples−1`` of ``seed``,
    averaged over each element of ``mesh`` (4 quadrature points per element). The targets are those
    :func:`~jaxeit.realdata.ktc_simulator.simulate_ktc` would draw with ``config`` and ``seed``."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    to_mesh = grid_to_mesh(mesh, KTC_GRID, samples=4)
    config = dataclasses.replace(config, seed=int(seed))
    out = np.empty((n_samples, mesh.n_elements))
    for start in range(0, n_samples, _CHUNK):
        stop = min(start + _CHUNK, n_samples)
        images = np.stack([np.log(sample_contrast(config, k)[1]) for k in range(start, stop)])
        out[start:stop] = np.asarray(to_mesh(jnp.asarray(to_truth_frame(images))))
    return out


def _digest(mesh: Mesh, n_samples: int, seed: int, config: KTCSimConfig) -> str:
    return json.dumps({"mesh": mesh.content_digest.hex(), "simulator": config.fingerprint(),
                       "n_samples": int(n_samples), "seed": int(seed)}, sort_keys=True)


_MOMENTS: dict = {}
_PRIORS: dict = {}                # (id(moment), variance, nugget) → L for the current moment


def moment_cache_dir() -> Path:
    """Where moments computed for other meshes are kept: ``ktc_priors/`` beside the compilation cache
    (``~/.cache/jaxeit/ktc_priors``; ``$JAXEIT_CACHE_DIR`` moves both)."""
    return compilation_cache.default_dir().parent / "ktc_priors"


def _read_moment(path: Path, key: str, n_elements: int) -> np.ndarray | None:
    """The moment stored in ``path`` when it was made for ``key``, else None (also when unreadable)."""
    try:
        with np.load(path) as f:
            if str(f["digest"]) != key:
                return None
            moment = np.zeros((n_elements,) * 2)
            moment[np.triu_indices(n_elements)] = f["upper"]
    except (OSError, ValueError, KeyError):
        return None
    return moment + np.triu(moment, 1).T


def _write_moment(path: Path, moment: np.ndarray, key: str) -> Path:
    """``moment``'s upper triangle (float32, compressed) and its ``key``, written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, upper=moment[np.triu_indices(len(moment))].astype(np.float32),
                                digest=np.asarray(key))
    return Path(path)


def _draw_moment(mesh: Mesh, n_samples: int, seed: int, config: KTCSimConfig) -> np.ndarray:
    s = target_log_contrasts(mesh, n_samples, seed=seed, config=config)
    moment = s.T @ s / n_samples
    return moment / np.mean(np.diag(moment))


def simulated_moment(mesh: Mesh, n_samples: int | None = None, *, seed: int = PRIOR_SEED,
                     config: KTCSimConfig = KTCSimConfig(), log=print) -> np.ndarray:
    """(E, E) float64 M: the targets' second moment of log(σ/σ_bg) on ``mesh``, scaled to a mean
    diagonal of 1, from ``n_samples`` targets (default :data:`PRIOR_SAMPLES`). Read from the shipped
    file when it was made for the same mesh, simulator, sample count and seed, else from
    :func:`moment_cache_dir`; otherwise computed (``log`` says so) and written there. Kept for the process."""
    n_samples = PRIOR_SAMPLES if n_samples is None else n_samples
    key = _digest(mesh, n_samples, seed, config)
    if key in _MOMENTS:
        return _MOMENTS[key]
    cached = moment_cache_dir() / f"{hashlib.blake2b(key.encode(), digest_size=12).hexdigest()}.npz"
    moment = _read_moment(SHIPPED_MOMENT, key, mesh.n_elements)
    if moment is None:
        moment = _read_moment(cached, key, mesh.n_elements)
    if moment is None:
        if log is not None:
            log(f"[ktc-prior] no shipped or cached moment for this mesh/simulator: drawing {n_samples} targets "
                f"(about {4e-3 * n_samples:.0f} s, once; kept in {cached.parent})")
        moment = _draw_moment(mesh, n_samples, seed, config)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            _write_moment(cached, moment, key)
        except OSError:   # an unwritable cache must not stop the caller
            pass
    _MOMENTS.clear()                                  # one mesh at a time: E² floats each
    _PRIORS.clear()                                   # their L belong to the moment they were made from
    _MOMENTS[key] = moment
    return moment


def simulated_prior(mesh: Mesh, variance: float = 0.05 ** 2, nugget: float = 1e-3, **moment_options) -> np.ndarray:
    """(E, E) float64 L with LᵀL = Γ⁻¹, Γ = ``variance``·(M + ``nugget``·I), M of :func:`simulated_moment`
    (``moment_options`` go there): the ``prior`` of :class:`jaxeit.recon.GNGaussian`. ``variance`` is
    in (log-contrast)², the mean prior variance of an element; ``nugget`` relative to it."""
    if not (math.isfinite(variance) and variance > 0 and math.isfinite(nugget) and nugget > 0):
        raise ValueError(f"need variance > 0 and nugget > 0 (finite), got variance={variance}, nugget={nugget}")
    moment = simulated_moment(mesh, **moment_options)
    key = (id(moment), float(variance), float(nugget))   # _MOMENTS keeps the moment (and its id) alive
    if key not in _PRIORS:
        if len(_PRIORS) >= 4:
            _PRIORS.pop(next(iter(_PRIORS)))
        _PRIORS[key] = precision_factor(variance * (moment + nugget * np.eye(mesh.n_elements)))
    return _PRIORS[key]


def write_moment(mesh: Mesh, out: Path = SHIPPED_MOMENT, n_samples: int = PRIOR_SAMPLES, *,
                 seed: int = PRIOR_SEED, config: KTCSimConfig = KTCSimConfig()) -> Path:
    """Compute :func:`simulated_moment` for ``mesh`` and write it (upper triangle, float32) atomically."""
    t0 = time.perf_counter()
    moment = _draw_moment(mesh, n_samples, seed, config)
    out = _write_moment(Path(out), moment, _digest(mesh, n_samples, seed, config))
    print(f"[ktc-prior] {n_samples} targets, E = {mesh.n_elements}, {time.perf_counter() - t0:.0f} s → {out}")
    return out


def main(argv=None) -> int:
    """``python -m jaxeit.realdata.ktc_prior``: remake the shipped moment for the pipeline's mesh."""
    from .tanks import ktc_mesh

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=SHIPPED_MOMENT)
    ap.add_argument("--n-samples", type=int, default=PRIOR_SAMPLES)
    args = ap.parse_args(argv)
    write_moment(ktc_mesh(h=0.014), args.out, args.n_samples)
    return 0


if __name__ == "__main__":
    sys.exit(main())
