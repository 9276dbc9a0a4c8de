"""KTC2023 tank simulator: random targets in the challenge's truth frame and their CEM voltages.

Training data for learned KTC2023 segmentations, made on jaxeit's complete electrode model
in the geometry the real data fit (:func:`jaxeit.realdata.ktc_mesh`: electrode 1 at the top,
counter-clockwise, 32 electrodes of 11.29 mm on a 0.115 m tank):

* **Targets** (:func:`random_truth`): 1–3 objects in the 256 × 256 truth frame of
  :mod:`jaxeit.realdata.ktc` (0 water, 1 resistive, 2 conductive): discs, polygons of 3–7
  vertices, smooth star-shaped blobs, bars and crosses of two bars (the shapes of the
  training truths; radii of 20–48 pixels, the public truths' objects having equivalent
  radii of 27–42) and, where ``shape_weights`` asks for them, elongated ellipses and crosses
  of two thin ellipses (thin objects whose width tapers to their ends), placed apart or, with
  probability ``touch_probability``, touching the previous object; each object's class is
  drawn with equal odds.
* **Conductivities**: water σ_bg = the calibrated background × (1 ± ``background_spread``);
  each object σ_bg × 10^U(``resistive_decades``) or × 10^U(``conductive_decades``);
  element values are the pixel averages over each element (partial volumes).
* **Measurements**: the 76 injections × 31 differences of the challenge (from ``ref.mat``:
  currents in mA, converted to A), every sample with its own contact impedances (the
  calibrated z × a log-uniform factor in ``z_factor``, times a log-normal factor per electrode
  of log-std ``z_electrode_spread``: real electrodes differ, and the model error this leaves in
  difference data is what a learned method must tolerate), for the target and for the empty
  tank. Both get the same per-channel offset (31 values, N(0, ``offset_std``²) V: the real
  data showed offsets of up to 0.1 V per measurement channel, which cancel in difference
  data) and independent noise of the organisers' model,
  std = √((5·10⁻⁴·|U_ref|)² + (10⁻⁴·max|U_ref|)²).
* **Model error**: each measurement's change U − U_ref is multiplied by 1 + ``model_error``·N(0, 1).
  The 2D model leaves 4.9 % of the empty tank's voltages unexplained once the channel offsets are
  removed (``benchmarks/results/real_data.md``, ref.mat alone); a change computed by the same model
  is taken to be as uncertain, else the simulated data are cleaner than the tank's and reward
  reconstructions that fit detail the real data do not carry.
* **Drift** (optional, ``drift``): the water of the target recording differs from the empty tank's by
  the factor e^U(−drift, drift) (temperature: the real targets' changes fit their truths far better
  with a uniform drift of the water, up to +8 %, ``benchmarks/ktc_model_error.py``); with
  ``drift_fraction`` < 1 only that share of the tanks drifts, the others keep the empty tank's water.
* **Electrode widths** (optional, ``electrode_stretches``): the data and the calibration meshes with
  each electrode at an effective width (:func:`jaxeit.realdata.tanks.stretch_electrodes`), e.g. the
  widths :func:`jaxeit.realdata.calibrate.fit_electrode_widths` finds in ``ref.mat``; the reconstructions
  keep the drawn ones (``benchmarks/ktc_model_error.py`` measures what that costs).
* **Levels** only remove measurements (:func:`jaxeit.io.ktc_level_mask`): a sample is
  simulated once with all 2356 measurements and serves every level.

Data are simulated on a finer mesh (``h``) than reconstructions use (no inverse crime),
in batches (``jax.vmap`` of the forward solve over σ and z) and written in shards with
sidecars (:mod:`jaxeit.data.store`), resumable: a run stopped anywhere keeps its complete
shards and continues with the next. Sample i depends only on (``seed``, i).

    >>> cfg = KTCSimConfig(n_samples=64)
    >>> root = simulate_ktc(cfg, "runs/ktc_sim", reference="ktc2023/training/ref.mat")
    >>> data = load_ktc_simulation(root)          # truth (n, 256, 256) uint8, voltages (n, 2356), ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..data.store import shard_path, verify_shard, write_shard
from ..grid import grid_to_mesh
from ..io import EITDataset, load_ktc_reference, resolve_data_path
from ..io_utils import atomic_write_text
from ..training import config_hash
from .calibrate import calibrate_dataset, forward_model
from .ktc import KTC_GRID, to_truth_frame
from .tanks import ktc_mesh, stretch_electrodes

__all__ = ["KTCSimConfig", "random_truth", "sample_contrast", "simulate_ktc", "load_ktc_simulation",
           "simulated_dataset", "SHAPES", "THIN_SHAPE_WEIGHTS", "SIM_FIELDS"]

#: the object shapes of :func:`random_truth`
SHAPES = ("disc", "polygon", "blob", "bar", "cross", "ellipse", "ellipse-cross")
#: ``shape_weights`` with the thin ellipses and their crosses (the defaults leave them out, so that every
#: recorded simulation keeps its samples: a shape of weight 0 changes no random draw)
THIN_SHAPE_WEIGHTS = (1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 0.75)
_ELONGATED = ("bar", "cross", "ellipse", "ellipse-cross")
#: fields added to KTCSimConfig after the first simulations, with the value that draws the same samples
_LATER_FIELDS = {"electrode_stretches": None, "drift": 0.0, "drift_fraction": 1.0}
_FIRST_SHAPES = 5                # the shapes of the first simulator (the rest came later)
#: arrays of a simulator shard
SIM_FIELDS = ("index", "truth", "voltages", "reference", "sigma_bg", "contact_impedance")
_N = 256                       # truth-frame pixels per side
_CENTRE = (_N - 1) / 2.0       # the tank's centre in pixel coordinates
_R_PIX = _N / 2.0              # the tank's radius in pixels


@dataclasses.dataclass(frozen=True)
class KTCSimConfig:
    """Settings of a simulated KTC2023 data set (defaults: the description in the module notes).

    Sizes in truth-frame pixels (0.23/256 m ≈ 0.9 mm), conductivity factors relative to the
    water's σ_bg, voltages in V.
    """

    n_samples: int = 16_384
    seed: int = 0
    h: float = 0.006                        # data mesh size (m); reconstructions use 0.014
    max_objects: int = 3
    shape_weights: tuple = (1.0, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0)   # SHAPES (THIN_SHAPE_WEIGHTS: with ellipses)
    size_range: tuple = (20.0, 48.0)        # object radius (half the bar length / 1.25) in pixels
    bar_width: tuple = (0.15, 0.35)         # a bar's half width / the object radius
    touch_probability: float = 0.2
    margin: float = 8.0                     # pixels kept free inside the tank wall
    background_spread: float = 0.05
    resistive_decades: tuple = (-3.0, -1.0)
    conductive_decades: tuple = (1.0, 3.0)
    z_factor: tuple = (0.3, 3.0)
    z_electrode_spread: float = 0.3         # std of log z across one tank's electrodes
    model_error: float = 0.05               # relative std of an error on each measurement's change
    offset_std: float = 0.02
    noise_relative: float = 5e-4
    noise_floor: float = 1e-4
    shard_size: int = 256
    batch_size: int = 16
    electrode_stretches: tuple | None = None   # (32,) effective widths (tanks.stretch_electrodes); None: as drawn
    drift: float = 0.0                      # the target's water: σ_bg·e^U(−drift, drift) against the empty tank's
    drift_fraction: float = 1.0             # the share of tanks whose water drifts (the others: none)

    def __post_init__(self):
        bad = lambda msg: (_ for _ in ()).throw(ValueError(f"KTCSimConfig: {msg}"))  # noqa: E731
        for name in ("n_samples", "max_objects", "shard_size", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                bad(f"{name} must be an integer >= 1, got {value!r}")
        if len(self.shape_weights) != len(SHAPES) or min(self.shape_weights) < 0 or sum(self.shape_weights) <= 0:
            bad(f"shape_weights must be {len(SHAPES)} non-negative weights for {SHAPES}, got {self.shape_weights}")
        lo, hi = self.size_range
        if not 2 <= lo <= hi <= _R_PIX / 2:
            bad(f"size_range must satisfy 2 <= lo <= hi <= {_R_PIX / 2:g} pixels, got {self.size_range}")
        if not 0 < self.bar_width[0] <= self.bar_width[1] <= 1:
            bad(f"bar_width must satisfy 0 < lo <= hi <= 1 (fractions of the radius), got {self.bar_width}")
        for name in ("h", "offset_std", "noise_relative", "noise_floor", "margin", "z_electrode_spread",
                     "model_error"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0) or (name == "h" and value == 0):
                bad(f"{name} must be a finite number >= 0 (h > 0), got {value!r}")
        if not 0 <= self.touch_probability <= 1 or not 0 <= self.background_spread < 1:
            bad("touch_probability must be in [0, 1] and background_spread in [0, 1)")
        if not 0 < self.z_factor[0] <= self.z_factor[1]:
            bad(f"z_factor must be 0 < lo <= hi, got {self.z_factor}")
        if not 0 <= self.drift < 1:
            bad(f"drift must be in [0, 1) (a log-conductivity half-range), got {self.drift}")
        if not 0 <= self.drift_fraction <= 1:
            bad(f"drift_fraction must be in [0, 1] (the share of drifting tanks), got {self.drift_fraction}")
        if self.electrode_stretches is not None and len(self.electrode_stretches) != 32:
            bad(f"electrode_stretches must be None or 32 numbers, got {len(self.electrode_stretches)}")

    def fingerprint(self) -> str:
        """8 hex digits naming the distribution of the samples: every field but the sample count and the
        shard and batch sizes (records and caches of simulated tanks are keyed on it)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items()
                  if k not in ("n_samples", "shard_size", "batch_size")}
        for name, neutral in _LATER_FIELDS.items():   # fields added later: at their neutral value they change
            if fields[name] == neutral:                  # no sample, so they stay out of the fingerprint
                del fields[name]
        weights = list(self.shape_weights)      # shapes added later with weight 0 change no sample: the
        while len(weights) > _FIRST_SHAPES and weights[-1] == 0:   # fingerprints of earlier simulations stay
            weights.pop()
        fields["shape_weights"] = tuple(weights)
        return config_hash(fields)[:8]


# -- targets --------------------------------------------------------------------------

def _pixel_grid():
    i, j = np.mgrid[0:_N, 0:_N]
    return j - _CENTRE, _CENTRE - i          # x to the right, y up, in pixels (truth frame: row 0 at the top)


_XY = _pixel_grid()


def _inside(shape: str, rng, size: float, centre, angle: float, bar_width=(0.15, 0.35)) -> np.ndarray:
    """(256, 256) bool of one object of ``shape`` and radius ``size`` (pixels) at ``centre``; a bar's (and a
    thin ellipse's) half width is ``size`` times U(``bar_width``), its half length 1.25 ``size``; an
    ``"ellipse"`` is up to twice as wide."""
    x, y = _XY[0] - centre[0], _XY[1] - centre[1]
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * x + s * y, -s * x + c * y       # object frame
    r, theta = np.hypot(u, v), np.arctan2(v, u)
    if shape == "disc":
        return r <= size
    if shape == "blob":                         # r(θ) = size·(1 + Σ a_k cos(kθ + φ_k)), k = 2..4
        radius = np.full_like(theta, 1.0)
        for k in (2, 3, 4):
            radius += rng.uniform(0.0, 0.25 / (k - 1)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        return r <= size * radius
    if shape == "polygon":
        n = int(rng.integers(3, 8))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n)) if rng.uniform() < 0.5 else np.arange(n) * 2 * np.pi / n
        radii = size * rng.uniform(0.8, 1.15, n)
        px, py = radii * np.cos(angles), radii * np.sin(angles)
        inside = np.ones(u.shape, bool)
        for k in range(n):                      # convex: inside every edge's half-plane (ccw vertices)
            ax, ay, bx, by = px[k], py[k], px[(k + 1) % n], py[(k + 1) % n]
            inside &= (bx - ax) * (v - ay) - (by - ay) * (u - ax) >= 0
        return inside
    half_length, half_width = size * 1.25, max(2.5, size * rng.uniform(*bar_width))
    if shape == "ellipse":      # draws a wider half width (the draw above stays: recorded simulations made it)
        half_width = max(2.5, size * rng.uniform(bar_width[0], 2 * bar_width[1]))
        return (u / half_length) ** 2 + (v / half_width) ** 2 <= 1
    if shape == "ellipse-cross":                # two thin ellipses crossing at their middles, roughly at right angles
        second_length = half_length * rng.uniform(0.6, 1.0)
        second_width = max(2.5, size * rng.uniform(*bar_width))
        tilt = np.pi / 2 + rng.uniform(-0.4, 0.4)
        u2, v2 = math.cos(tilt) * u + math.sin(tilt) * v, -math.sin(tilt) * u + math.cos(tilt) * v
        return (((u / half_length) ** 2 + (v / half_width) ** 2 <= 1)
                | ((u2 / second_length) ** 2 + (v2 / second_width) ** 2 <= 1))
    bar = (np.abs(u) <= half_length) & (np.abs(v) <= half_width)
    if shape == "bar":
        return bar
    return bar | ((np.abs(v) <= half_length * rng.uniform(0.6, 1.0)) & (np.abs(u) <= half_width))   # cross


def random_truth(rng: np.random.Generator, config: KTCSimConfig = KTCSimConfig()) -> tuple[np.ndarray, list]:
    """A random target: (256, 256) uint8 truth (0 water, 1 resistive, 2 conductive) in the truth frame and
    the objects' (class, mask) list, later objects painted over earlier ones (so touching shapes meet).

    A polygon of random vertex angles is the intersection of its edges' half-planes; when its vertices leave
    its centre outside, that is empty (about 1.7 % of polygons), so a tank can hold fewer objects than were
    drawn, rarely none (an empty tank: water everywhere). Kept as it is, since the recorded simulations are
    named by the fingerprint of this very distribution."""
    weights = np.asarray(config.shape_weights, np.float64)
    n_objects = int(rng.integers(1, config.max_objects + 1))
    truth = np.zeros((_N, _N), np.uint8)
    objects, centres, sizes = [], [], []
    for _ in range(n_objects):
        shape = SHAPES[int(rng.choice(len(SHAPES), p=weights / weights.sum()))]
        size = float(rng.uniform(*config.size_range))
        reach = size * (1.25 if shape in _ELONGATED else 1.15)
        limit = _R_PIX - config.margin - reach
        for _attempt in range(200):
            if centres and rng.uniform() < config.touch_probability:   # next to the previous object
                phi = rng.uniform(0, 2 * np.pi)
                centre = np.asarray(centres[-1]) + 0.9 * (sizes[-1] + size) * np.array([np.cos(phi), np.sin(phi)])
                if np.hypot(*centre) <= limit:
                    break
            else:
                rho, phi = limit * math.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
                centre = np.array([rho * np.cos(phi), rho * np.sin(phi)])
                if all(np.hypot(*(centre - c)) > reach + r + 4 for c, r in zip(centres, sizes)):
                    break
        else:
            continue                                                   # no room left: fewer objects
        mask = _inside(shape, rng, size, centre, rng.uniform(0, 2 * np.pi), config.bar_width)
        label = int(rng.integers(1, 3))
        truth[mask] = label
        objects.append((label, mask))
        centres.append(centre)
        sizes.append(reach)
    return truth, objects


def _sample_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


# -- simulation -----------------------------------------------------------------------

def _sample_parameters(config: KTCSimConfig, index: int, sigma_cal: float, z_cal: float, n_electrodes: int):
    """Truth, σ image (256, 256) in the truth frame, σ_bg, z (L,), and the offset and noise draws of sample
    ``index``."""
    rng = _sample_rng(config.seed, index)
    truth, objects = random_truth(rng, config)
    sigma_bg = sigma_cal * (1.0 + rng.uniform(-config.background_spread, config.background_spread))
    image = np.full((_N, _N), sigma_bg)
    for label, mask in objects:
        decades = config.resistive_decades if label == 1 else config.conductive_decades
        image[mask] = sigma_bg * 10.0 ** rng.uniform(*decades)
    z = z_cal * math.exp(rng.uniform(math.log(config.z_factor[0]), math.log(config.z_factor[1])))
    z = z * np.exp(config.z_electrode_spread * rng.standard_normal(n_electrodes))   # no two electrodes alike
    if config.drift > 0:          # drawn last and only when asked for: without drift every sample stays the same
        drifts = config.drift_fraction >= 1 or rng.uniform() < config.drift_fraction
        factor = math.exp(rng.uniform(-config.drift, config.drift))
        if drifts:
            image[truth == 0] *= factor
    return truth, image, sigma_bg, z, rng


def sample_contrast(config: KTCSimConfig, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample ``index`` of ``config`` as :func:`simulate_ktc` draws it, without its voltages: the
    (256, 256) uint8 truth and the (256, 256) float64 conductivity relative to the water, σ/σ_bg
    (1 in the water unless it drifts), both in the truth frame."""
    truth, image, sigma_bg, _, _ = _sample_parameters(config, index, 1.0, 1.0, 32)
    return truth, image / sigma_bg


def simulate_ktc(config: KTCSimConfig, out, *, reference, log=print) -> Path:
    """Simulate ``config.n_samples`` KTC2023 samples into ``out`` (resumable; see the module notes).

    Args:
        config: :class:`KTCSimConfig`.
        out: the data set folder (``metadata.json`` and ``samples/shard_*.npz``).
        reference: the challenge's ``ref.mat`` (a path; a relative path not found is looked up
            in :func:`jaxeit.io.data_dir`): the protocol, and the empty tank that calibrates σ_bg
            and z.
        log: progress lines (``None`` for none).

    Returns:
        ``out`` as a Path. A folder holding another config is refused (``ValueError``).
    """
    out = Path(out)
    reference = resolve_data_path(reference)
    log = log or (lambda *_: None)
    meta_path = out / "metadata.json"
    config_json = {k: v for k, v in dataclasses.asdict(config).items()      # folders made before a later
                   if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}     # field still match without it
    if meta_path.exists():
        saved = json.loads(meta_path.read_text())["config"]
        if saved != json.loads(json.dumps(config_json)):
            diff = {k: (saved.get(k), v) for k, v in json.loads(json.dumps(config_json)).items() if saved.get(k) != v}
            raise ValueError(f"{out} holds a simulation with another config ({diff}); choose another folder")
    ref = load_ktc_reference(reference)
    t0 = time.perf_counter()
    mesh, cal_mesh = ktc_mesh(h=config.h), ktc_mesh(h=0.014)
    if config.electrode_stretches is not None:      # the tank's electrodes at their effective widths
        mesh = stretch_electrodes(mesh, config.electrode_stretches)
        cal_mesh = stretch_electrodes(cal_mesh, config.electrode_stretches)
    cal = calibrate_dataset(ref, cal_mesh)
    model = forward_model(ref, mesh, masked=False, contact_impedance=cal.contact_impedance).with_checks(False)
    to_mesh = grid_to_mesh(mesh, KTC_GRID, samples=4)
    pattern = np.asarray(ref.protocol.pattern)
    first = {p: int(np.flatnonzero(pattern == p)[0]) for p in np.unique(pattern)}
    channel = np.arange(len(pattern)) - np.asarray([first[p] for p in pattern])   # measurement k of its injection
    meta = {"config": config_json, "reference": str(reference), "calibration": {
        "sigma": cal.sigma, "contact_impedance": float(np.mean(cal.contact_impedance)), "residual": cal.residual},
        "mesh": {"h": config.h, "n_nodes": mesh.n_nodes, "n_elements": mesh.n_elements},
        "n_measurements": ref.protocol.n_measurements, "fields": list(SIM_FIELDS),
        "shards": [[s, min(s + config.shard_size, config.n_samples)]
                   for s in range(0, config.n_samples, config.shard_size)]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta_path, json.dumps(meta, indent=1))
    solve = jax.jit(jax.vmap(lambda s, z: model.voltages(s, z)))
    z_cal = float(np.mean(cal.contact_impedance))
    done = 0
    for k, (start, stop) in enumerate(meta["shards"]):
        path = shard_path(out, "samples", k)
        if verify_shard(path, start, stop, fields=SIM_FIELDS):
            continue
        arrays = {f: [] for f in SIM_FIELDS}
        for b0 in range(start, stop, config.batch_size):
            idx = range(b0, min(b0 + config.batch_size, stop))
            params = [_sample_parameters(config, i, cal.sigma, z_cal, mesh.n_electrodes) for i in idx]
            pad = config.batch_size - len(params)                 # one compiled batch size
            sig = np.stack([np.asarray(to_mesh(jnp.asarray(to_truth_frame(p[1])))) for p in params])
            bg = np.stack([np.full(mesh.n_elements, p[2]) for p in params])
            zs = np.stack([p[3] for p in params])                       # (B, L)
            both = np.concatenate([sig, bg] + ([np.repeat(bg[-1:], 2 * pad, 0)] if pad else []))
            zz = np.concatenate([zs, zs] + ([np.repeat(zs[-1:], 2 * pad, 0)] if pad else []))
            volts = np.asarray(solve(jnp.asarray(both), jnp.asarray(zz)))
            clean, empty = volts[:len(params)], volts[config.batch_size:config.batch_size + len(params)]
            for i, p, vc, ve in zip(idx, params, clean, empty):
                rng = p[4]
                offset = rng.normal(0.0, config.offset_std, channel.max() + 1)[channel]   # per channel
                std = np.sqrt((config.noise_relative * np.abs(ve)) ** 2 + (config.noise_floor * np.abs(ve).max()) ** 2)
                arrays["index"].append(i)
                arrays["truth"].append(p[0])
                noise_target, noise_empty = std * rng.standard_normal(vc.shape), std * rng.standard_normal(ve.shape)
                change = (vc - ve) * (1.0 + config.model_error * rng.standard_normal(vc.shape))
                arrays["voltages"].append(ve + change + offset + noise_target)
                arrays["reference"].append(ve + offset + noise_empty)
                arrays["sigma_bg"].append(p[2])
                arrays["contact_impedance"].append(p[3])
        write_shard(path, {f: np.asarray(v) for f, v in arrays.items()}, start=start, stop=stop,
                    compress=True, fields=SIM_FIELDS)
        done += stop - start
        rate = done / (time.perf_counter() - t0)
        log(f"[ktc-sim] shard {k + 1}/{len(meta['shards'])}: {stop}/{config.n_samples} samples, "
            f"{rate:.1f} samples/s, ETA {(config.n_samples - stop) / max(rate, 1e-9) / 60:.1f} min")
    return out


def load_ktc_simulation(root, *, limit: int | None = None) -> dict[str, np.ndarray]:
    """The samples of a simulated KTC2023 data set as arrays (``SIM_FIELDS``), in index order.

    ``ValueError`` for a folder that is not such a data set or an incomplete one (rerun
    :func:`simulate_ktc` to finish it)."""
    root = Path(root)
    meta_path = root / "metadata.json"
    if not meta_path.exists():
        raise ValueError(f"{root} is not a simulated KTC2023 data set (no metadata.json); make one with simulate_ktc")
    meta = json.loads(meta_path.read_text())
    out = {f: [] for f in SIM_FIELDS}
    n = 0
    for k, (start, stop) in enumerate(meta["shards"]):
        if limit is not None and n >= limit:
            break
        path = shard_path(root, "samples", k)
        if not path.exists():
            raise ValueError(f"shard {path} is missing: the data set is incomplete (rerun simulate_ktc to resume)")
        with np.load(path) as z:
            for f in SIM_FIELDS:
                out[f].append(z[f])
        n += stop - start
    data = {f: np.concatenate(v) for f, v in out.items()}
    return data if limit is None else {f: v[:limit] for f, v in data.items()}


def simulated_dataset(simulation: dict, index: int, empty_tank: EITDataset) -> EITDataset:
    """Sample ``index`` of :func:`load_ktc_simulation` as a data set, like :func:`jaxeit.io.load_ktc2023`.

    ``empty_tank``: :func:`jaxeit.io.load_ktc_reference` of the ``ref.mat`` the simulation used, at the
    wanted level (it gives the protocol and the level's mask); the sample brings its own voltages and
    simulated empty tank. The name is ``"sim<index>_level<l>"``.
    """
    level = empty_tank.name.rsplit("level", 1)[-1]
    return dataclasses.replace(empty_tank, voltages=simulation["voltages"][index],
                               reference=simulation["reference"][index], name=f"sim{index}_level{level}")
