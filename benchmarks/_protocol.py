"""A fair, independent test protocol for EIT reconstructions (used by benchmarks/diff_inr.py).

* **Tank.** A 28 cm circular tank (R = 0.14 m), 16 electrodes of 2.5 cm, adjacent drive, CEM with
  z = 6e-3 Ω·m².
* **No inverse crime.** Data are simulated on a fine mesh (h = 0.025 R, partial-volume element values);
  reconstructions use a different, coarser mesh (h = 0.06 R, the resolution of the issue's tests).
* **Families** (background σ_bg log-uniform in [0.1, 0.4] S/m in every family):

  - ``thorax``: two lungs (ellipses) and a heart (disc), positions, sizes, tilt and conductivities
    varied around :func:`jaxeit.phantoms.thorax`;
  - ``circles``: 2–4 non-overlapping discs, radius 0.10–0.25 R, contrast ×1.5–×5 either way;
  - ``shapes``: images of the diffusion prior's own shapes generator (a key never used in training);
  - ``crescents``: crescents and rings (a disc with an offset or concentric disc of background cut
    out), shapes that the prior's generator cannot make (none of its shapes is a ring or a crescent).

* **Splits.** ``val`` and ``test`` draw from disjoint seeds; every tuned choice is made on ``val``.
* **Noise.** 60, 50 and 40 dB (σ_n = ‖v‖/√M · 10^(−SNR/20)), a key per case and SNR.
* **Metrics**, inside the tank on a 128×128 grid: SSIM (Wang 2004), CC (Pearson correlation of the
  images, i.e. of σ − σ_bg), RE (relative L1 error) and PSNR; a case *diverged* when its image is not
  finite or RE > 1.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from jaxeit import ForwardModel, grid, mesh, metrics, noise, phantoms, protocol
from jaxeit.phantoms import Circles, Ellipses, Phantom

R, WIDTH, Z = 0.14, 0.025, 6e-3
H_FINE, H_INVERSE = 0.025, 0.06           # mesh sizes as fractions of R
FAMILIES = ("thorax", "circles", "shapes", "crescents")
SPLIT_SEEDS = {"val": 7_000, "test": 9_000}
SHAPES_KEY = 20_261_202                   # the prior trained on fold_in(PRNGKey(seed), ·) streams, never this


@dataclasses.dataclass
class Problem:
    """The tank: meshes, forward/inverse models, the evaluation grid and its mask."""

    fine: mesh.Mesh
    coarse: mesh.Mesh
    fwd: ForwardModel
    inv: ForwardModel
    grid: grid.Grid
    mask: np.ndarray          # (128, 128) bool, inside the tank


def tank_problem(h_inverse: float = H_INVERSE) -> Problem:
    prot = protocol.adjacent(16)
    fine = mesh.cached(f"tank28_h{H_FINE:g}", lambda: mesh.disk(radius=R, electrode_width=WIDTH, h=H_FINE * R))
    coarse = mesh.cached(f"tank28_h{h_inverse:g}",
                         lambda: mesh.disk(radius=R, electrode_width=WIDTH, h=h_inverse * R))
    g = grid.Grid.square(R, 128)
    return Problem(fine, coarse, ForwardModel(fine, prot, contact_impedance=Z),
                   ForwardModel(coarse, prot, contact_impedance=Z), g, np.hypot(*np.meshgrid(g.x, g.y)) < R)


# -----------------------------------------------------------------------------------
# Phantom families
# -----------------------------------------------------------------------------------

def _background(rng) -> float:
    return float(np.exp(rng.uniform(np.log(0.1), np.log(0.4))))


def _contrast(rng, lo=1.5, hi=5.0) -> float:
    return float(np.exp(rng.choice([-1, 1]) * rng.uniform(np.log(lo), np.log(hi))))


def _thorax(rng) -> Phantom:
    g = phantoms.THORAX_GEOMETRY
    bg = _background(rng)
    lx, ly = g["lung_centre"]
    ax, ay = g["lung_axes"]
    centres, axes, angles = [], [], []
    for side in (-1, 1):
        centres.append([R * (side * lx + rng.uniform(-0.05, 0.05)), R * (ly + rng.uniform(-0.06, 0.06))])
        s = rng.uniform(0.8, 1.15)
        axes.append([R * ax * s * rng.uniform(0.9, 1.1), R * ay * s * rng.uniform(0.9, 1.1)])
        angles.append(side * (g["lung_tilt"] + rng.uniform(-0.12, 0.12)))
    lung = bg * rng.uniform(0.15, 0.45, size=2)
    lungs = Ellipses(jnp.asarray(centres), jnp.asarray(axes), jnp.asarray(angles), jnp.asarray(lung))
    hx, hy = g["heart_centre"]
    heart = Circles(jnp.asarray([[R * (hx + rng.uniform(-0.08, 0.08)), R * (hy + rng.uniform(-0.06, 0.04))]]),
                    jnp.asarray([R * g["heart_radius"] * rng.uniform(0.8, 1.2)]),
                    jnp.asarray([bg * rng.uniform(1.3, 2.2)]))
    return Phantom(jnp.asarray(bg), (lungs, heart))


def _disjoint_discs(rng, n, r_lo, r_hi, margin=0.06 * R, gap=0.04 * R, tries=500):
    centres, radii = [], []
    while len(radii) < n and tries:
        tries -= 1
        r = rng.uniform(r_lo, r_hi)
        rho = (R - margin - r) * np.sqrt(rng.uniform())
        th = rng.uniform(0, 2 * np.pi)
        c = np.array([rho * np.cos(th), rho * np.sin(th)])
        if all(np.hypot(*(c - c2)) > r + r2 + gap for c2, r2 in zip(centres, radii)):
            centres.append(c)
            radii.append(r)
    return np.asarray(centres), np.asarray(radii)


def _circles(rng) -> Phantom:
    bg = _background(rng)
    c, r = _disjoint_discs(rng, int(rng.integers(2, 5)), 0.10 * R, 0.25 * R)
    vals = [bg * _contrast(rng) for _ in r]
    return Phantom(jnp.asarray(bg), (Circles(jnp.asarray(c), jnp.asarray(r), jnp.asarray(vals)),))


def _crescents(rng) -> Phantom:
    """1–2 crescents or rings: a disc of value σ_k, then a smaller disc of background painted inside it."""
    bg = _background(rng)
    c, r = _disjoint_discs(rng, int(rng.integers(1, 3)), 0.22 * R, 0.38 * R)
    outer_c, outer_r, outer_v, inner_c, inner_r = [], [], [], [], []
    for ci, ri in zip(c, r):
        ring = rng.uniform() < 0.35
        rin = ri * (rng.uniform(0.45, 0.65) if ring else rng.uniform(0.6, 0.85))
        off = 0.0 if ring else (ri - rin) * rng.uniform(0.55, 0.9) + 0.1 * rin
        th = rng.uniform(0, 2 * np.pi)
        outer_c.append(ci)
        outer_r.append(ri)
        outer_v.append(bg * _contrast(rng, 2.0, 5.0))
        inner_c.append(ci + off * np.array([np.cos(th), np.sin(th)]))
        inner_r.append(rin)
    outer = Circles(jnp.asarray(outer_c), jnp.asarray(outer_r), jnp.asarray(outer_v))
    inner = Circles(jnp.asarray(inner_c), jnp.asarray(inner_r), jnp.full(len(inner_r), bg))
    return Phantom(jnp.asarray(bg), (outer, inner))


@dataclasses.dataclass
class Case:
    """One test case: its truth on the grid (128, 128) S/m, element values on the fine mesh, clean voltages."""

    family: str
    index: int
    truth: np.ndarray
    sigma_fine: np.ndarray
    v_clean: np.ndarray


def make_cases(problem: Problem, split: str, family: str, n: int) -> list[Case]:
    """``n`` cases of ``family`` in ``split`` (deterministic in (split, family, index))."""
    seed = SPLIT_SEEDS[split] + 100 * FAMILIES.index(family)
    cases = []
    if family == "shapes":
        from jaxeit.priors.shapes import sample_conductivity

        key = jax.random.fold_in(jax.random.PRNGKey(SHAPES_KEY), seed)
        to_mesh = grid.grid_to_mesh(problem.fine, problem.grid, samples=16)
        for i in range(n):   # a key per case: case i is the same whatever n
            img = np.asarray(sample_conductivity(jax.random.fold_in(key, i), 1, size=problem.grid.nx)[0][0],
                             np.float64)
            rng = np.random.default_rng([seed, i])
            img = img * (_background(rng) / img[0, 0])   # the corner is background; rescale to the tank's range
            s = np.asarray(to_mesh(jnp.asarray(img)))
            cases.append(Case(family, i, img, s, np.asarray(problem.fwd.voltages(jnp.asarray(s)))))
        return cases
    make = {"thorax": _thorax, "circles": _circles, "crescents": _crescents}[family]
    for i in range(n):
        ph = make(np.random.default_rng([seed, i]))
        s = np.asarray(phantoms.on_mesh(ph, problem.fine))
        cases.append(Case(family, i, np.asarray(phantoms.on_grid(ph, problem.grid)), s,
                          np.asarray(problem.fwd.voltages(jnp.asarray(s)))))
    return cases


def noisy(case: Case, snr_db: float, split: str) -> np.ndarray:
    key = jax.random.PRNGKey(SPLIT_SEEDS[split] * 7 + 1000 * FAMILIES.index(case.family) + case.index)
    return np.asarray(noise.add_noise(jnp.asarray(case.v_clean), snr_db, jax.random.fold_in(key, int(snr_db))))


# -----------------------------------------------------------------------------------
# Metrics and statistics
# -----------------------------------------------------------------------------------

def score(image: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> dict:
    """SSIM, CC, RE, PSNR inside ``mask`` and whether the image diverged (non-finite or RE > 1)."""
    image = np.asarray(image, np.float64)
    if not np.all(np.isfinite(image[mask])):
        return {"SSIM": 0.0, "CC": 0.0, "RE": math.inf, "PSNR": -math.inf, "diverged": True}
    m = jnp.asarray(mask)
    a, b = image[mask], truth[mask]
    cc = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    re = float(metrics.relative_error(jnp.asarray(image), jnp.asarray(truth), mask=m))
    return {"SSIM": float(metrics.ssim(jnp.asarray(image), jnp.asarray(truth), mask=m)), "CC": cc, "RE": re,
            "PSNR": float(metrics.psnr(jnp.asarray(image), jnp.asarray(truth), mask=m)), "diverged": re > 1.0}


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (nan for fewer than 2 values)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return (float(x.mean()) if len(x) else math.nan), math.nan
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def fmt_ci(values, digits: int = 3) -> str:
    m, h = mean_ci(values)
    return f"{m:.{digits}f} ± {h:.{digits}f}" if np.isfinite(h) else f"{m:.{digits}f}"


def cache_dir() -> Path:
    return Path(__file__).resolve().parent / ".cache" / "diff_inr_protocol"
