"""Calibration of real tanks: background conductivity and contact impedances from empty-tank data.

Units. The data files give currents in mA and voltages in V. Everything here
works in SI: :func:`si_protocol` converts the currents to A, so with meshes in
metres the fitted σ is in S/m and z in Ω·m² *of the 2D model*. A 2D model is
a cylinder of unit (1 m) depth, so for a tank filled to depth d the fitted σ
is the water's conductivity × d / (1 m) (a sheet conductance in S) and z the
3D contact impedance / d: compare values across data sets only with that in
mind.

Fit. :func:`calibrate` minimises ‖F(σ·1, z) − v‖² over θ = (log σ, log z)
with z a scalar or one value per electrode, by optimistix's Levenberg–Marquardt
(``optimistix.least_squares``) with Jacobian-vector products through the
differentiable forward model; log z is held in [1e-10, 1] by projection. The start comes from a
scan: for the dimensionless contact impedance ζ = zσ/w (w the electrode
width), F(σ, z) = G(ζ)/σ with G(ζ) = F(1, ζw), so for each ζ on a log grid
the best σ is closed-form; the best (σ, ζ) of the scan starts LM.

Identifiability. z enters only through the electrodes' contact layers: once
zσ ≪ w (the "shunt" limit) the data barely depend on z, and the fitted z is
then an upper bound rather than a value (``Calibration.z_sensitivity``
reports the relative change of F for a tenfold change of z).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from .. import compilation_cache
from ..forward import ForwardModel
from ..io_utils import atomic_write_text
from ..io.dataset import EITDataset
from ..mesh import Mesh
from ..protocol import Protocol

__all__ = ["Calibration", "si_protocol", "forward_model", "calibrate", "calibrate_dataset",
           "calibrate_dataset_cached", "fit_geometry", "CURRENT_SCALE", "ElectrodeWidthFit", "fit_electrode_widths",
           "channel_offset_misfit", "measurement_channels"]

#: factor from a data set's current unit to A
CURRENT_SCALE = {"A": 1.0, "mA": 1e-3, "uA": 1e-6, "µA": 1e-6}

_LOG_Z_BOUNDS = (np.log(1e-10), np.log(1.0))


def si_protocol(protocol: Protocol, current_unit: str = "mA") -> Protocol:
    """The protocol with currents converted from ``current_unit`` to A."""
    if current_unit not in CURRENT_SCALE:
        raise ValueError(f"unknown current unit {current_unit!r}; expected one of {sorted(CURRENT_SCALE)}")
    return Protocol(protocol.currents * CURRENT_SCALE[current_unit], protocol.measurements, protocol.pattern)


def forward_model(dataset: EITDataset, mesh: Mesh, *, masked: bool = True, contact_impedance=1e-4,
                  solver: str = "auto", protocol: Protocol | None = None) -> ForwardModel:
    """A CEM :class:`ForwardModel` for ``dataset`` on ``mesh`` with currents in A.

    With ``masked`` only the usable measurements (``dataset.mask``) are modelled,
    in file order, matching ``dataset.voltages[dataset.mask]``. ``protocol``
    overrides the data set's (e.g. a :func:`~jaxeit.realdata.tanks.permute_protocol`
    result; it must have the full file's measurements).
    """
    proto = dataset.protocol if protocol is None else protocol
    if proto.n_measurements != dataset.n_measurements:
        raise ValueError("protocol must hold every measurement of the data set (mask is applied here)")
    if mesh.n_electrodes != proto.n_electrodes:
        raise ValueError(f"mesh has {mesh.n_electrodes} electrodes, the data {proto.n_electrodes}")
    proto = si_protocol(proto, dataset.current_unit)
    if masked:
        proto = proto.subset(dataset.mask)
    return ForwardModel(mesh, proto, contact_impedance=contact_impedance, solver=solver)


@dataclasses.dataclass
class Calibration:
    """Result of :func:`calibrate`.

    Attributes:
        sigma: background conductivity (S/m of the 2D model; see module notes).
        contact_impedance: z (Ω·m²), a float or an (L,) array.
        residual: relative fit residual ‖F(σ, z) − v‖ / ‖v‖ (a fraction; ×100 for %).
        per_electrode: whether z has one value per electrode.
        n_iter: LM steps run.
        history: relative residual at the start and at the end of the fit.
        z_sensitivity: ‖F(σ, 10z) − F(σ, z)‖ / ‖F(σ, z)‖ at the optimum: a
            small value (≲ 1e-3) means z is barely identifiable.
        wall_time: seconds.
    """

    sigma: float
    contact_impedance: float | np.ndarray
    residual: float
    per_electrode: bool
    n_iter: int
    history: list
    z_sensitivity: float = float("nan")
    wall_time: float = float("nan")

    def sigma_vector(self, n_elements: int) -> np.ndarray:
        """(E,) the homogeneous background as element conductivities."""
        return np.full(int(n_elements), self.sigma)

    def __repr__(self):
        z = self.contact_impedance
        zs = f"{z:.3g}" if np.ndim(z) == 0 else f"[{np.min(z):.3g} … {np.max(z):.3g}] (median {np.median(z):.3g})"
        return (f"Calibration(sigma={self.sigma:.5g}, z={zs}, residual={100 * self.residual:.3f} %, "
                f"per_electrode={self.per_electrode}, n_iter={self.n_iter})")


def _residual(theta, args):
    """(F(e^θ₀·1, e^θ₁…) − v)/‖v‖ (dimensionless, so the tolerances are relative) with log z projected onto
    its bounds; ``args`` = (model, v, ‖v‖, per_electrode flag)."""
    model, v, v_norm, per_electrode = args
    t = jnp.concatenate([theta[:1], jnp.clip(theta[1:], *_LOG_Z_BOUNDS)])
    z = jnp.exp(t[1:]) if per_electrode else jnp.exp(t[1])
    return (model.voltages(jnp.exp(t[0]) * jnp.ones(model.n_elements), z) - v) / v_norm


@functools.partial(jax.jit, static_argnames=("per_electrode", "max_steps"))
def _levenberg_marquardt(model: ForwardModel, theta0, v, tol, *, per_electrode: bool, max_steps: int):
    solver = optx.LevenbergMarquardt(rtol=tol, atol=tol)
    sol = optx.least_squares(_residual, solver, theta0, args=(model, v, jnp.linalg.norm(v), per_electrode),
                             max_steps=max_steps, throw=False)
    theta = jnp.concatenate([sol.value[:1], jnp.clip(sol.value[1:], *_LOG_Z_BOUNDS)])
    return theta, sol.stats["num_steps"], sol.result == optx.RESULTS.successful


@jax.jit
def _residual_at(model: ForwardModel, sigma, z, v):
    return model.voltages(sigma * jnp.ones(model.n_elements), z) - v


def _scan_start(model: ForwardModel, v, width: float, n_scan: int = 13):
    """Best (σ, z) over ζ = zσ/w ∈ [1e-5, 10] (log grid) with σ in closed form."""
    v = np.asarray(v)
    best = None
    for zeta in np.logspace(-5, 1, n_scan):
        g = np.asarray(model.voltages(jnp.ones(model.n_elements), zeta * width))  # G(ζ) = F(1, ζw)
        gv = float(g @ v)
        if gv <= 0:
            continue
        inv_sigma = gv / float(g @ g)
        res = np.linalg.norm(g * inv_sigma - v)
        if best is None or res < best[0]:
            best = (res, 1.0 / inv_sigma, zeta * width / (1.0 / inv_sigma))
    if best is None:
        raise ValueError("the voltages are anti-correlated with every homogeneous model: check the sign of the "
                         "currents/measurements, the electrode numbering and the units")
    return best[1], best[2]


def calibrate(model: ForwardModel, v, *, per_electrode: bool = False, sigma0: float | None = None,
              z0=None, max_iter: int = 40, tol: float = 1e-10, electrode_width: float | None = None) -> Calibration:
    """Least-squares background σ and contact impedance z for homogeneous-tank voltages ``v``.

    Args:
        model: forward model of the measurements ``v`` (M,) (currents in A).
        per_electrode: fit one z per electrode (else one z for all).
        sigma0, z0: starting values; by default from a scan (module notes).
            With ``per_electrode`` a scalar calibration is run first unless
            both are given.
        max_iter: Levenberg–Marquardt steps at most.
        tol: relative and absolute tolerance of the steps in θ and in the relative residual
            (optimistix's ``rtol`` and ``atol``).
        electrode_width: w for the scan (default: the mean electrode length of the mesh).

    Returns:
        A :class:`Calibration`.
    """
    t0 = time.perf_counter()
    v = jnp.asarray(v, jnp.float64)
    if v.shape != (model.n_measurements,):
        raise ValueError(f"v must have shape ({model.n_measurements},), got {tuple(v.shape)}")
    n_el = model.mesh.n_electrodes
    if sigma0 is None or z0 is None:
        if per_electrode:
            scalar = calibrate(model, v, per_electrode=False, sigma0=sigma0,
                               z0=None if z0 is None else float(np.mean(z0)), max_iter=max_iter, tol=tol,
                               electrode_width=electrode_width)
            s_start, z_start = scalar.sigma, scalar.contact_impedance
        else:
            w = electrode_width if electrode_width is not None else float(np.mean(model.mesh.electrode_lengths()))
            s_start, z_start = _scan_start(model, v, w)
        sigma0 = s_start if sigma0 is None else sigma0
        z0 = z_start if z0 is None else z0
    z0 = np.broadcast_to(np.asarray(z0, np.float64), (n_el,)) if per_electrode else float(np.mean(z0))
    theta = jnp.concatenate([jnp.log(jnp.atleast_1d(jnp.asarray(sigma0, jnp.float64))),
                             jnp.log(jnp.atleast_1d(jnp.asarray(z0, jnp.float64)))])
    vnorm = float(jnp.linalg.norm(v))
    r0 = _residual(theta, (model, v, vnorm, per_electrode))
    theta, n_steps, _ = _levenberg_marquardt(model, theta, v, float(tol), per_electrode=per_electrode,
                                             max_steps=int(max_iter))
    r = _residual(theta, (model, v, vnorm, per_electrode)) * vnorm
    cost = float(r @ r)
    if not np.isfinite(cost):
        raise ValueError("the calibration diverged (non-finite residual): check the units and the sign of the "
                         "currents and voltages")
    history = [float(jnp.linalg.norm(r0)), np.sqrt(cost) / vnorm]
    it = int(n_steps)
    sigma = float(jnp.exp(theta[0]))
    z = np.asarray(jnp.exp(theta[1:])) if per_electrode else float(jnp.exp(theta[1]))
    f = np.asarray(r) + np.asarray(v)
    f10 = np.asarray(_residual_at(model, sigma, jnp.asarray(z) * 10.0, v)) + np.asarray(v)
    sens = float(np.linalg.norm(f10 - f) / np.linalg.norm(f))
    return Calibration(sigma=sigma, contact_impedance=z, residual=float(np.sqrt(cost) / vnorm),
                       per_electrode=per_electrode, n_iter=it, history=history, z_sensitivity=sens,
                       wall_time=time.perf_counter() - t0)


def calibrate_dataset(dataset: EITDataset, mesh: Mesh, *, per_electrode: bool = False, use: str = "reference",
                      **kw) -> Calibration:
    """:func:`calibrate` on a data set's usable ``reference`` (or ``voltages``) with currents in A."""
    if use not in ("reference", "voltages"):
        raise ValueError(f"use must be 'reference' or 'voltages', got {use!r}")
    values = dataset.reference if use == "reference" else dataset.voltages
    if values is None:
        raise ValueError(f"{dataset.name}: no reference voltages; pass use='voltages' for an empty-tank file")
    model = forward_model(dataset, mesh)
    return calibrate(model, values[dataset.mask], per_electrode=per_electrode,
                     electrode_width=dataset.electrode_width, **kw)


#: part of every remembered calibration's key: raise it when the fit changes, so old results are not read
_CALIBRATION_VERSION = 1


def calibration_cache_dir() -> Path:
    """Where :func:`calibrate_dataset_cached` keeps its results: ``$JAXEIT_CALIBRATION_CACHE``, else
    ``calibrations/`` beside the compilation cache (``~/.cache/jaxeit/calibrations``)."""
    if os.environ.get("JAXEIT_CALIBRATION_CACHE"):
        return Path(os.environ["JAXEIT_CALIBRATION_CACHE"]).expanduser()
    return compilation_cache.default_dir().parent / "calibrations"


def _calibration_key(dataset: EITDataset, mesh: Mesh, use: str, per_electrode: bool, kw: dict) -> str:
    """A digest of everything a calibration depends on: the voltages used, the mask, the protocol,
    the electrode width, the mesh, the options, the fit's version and JAX's."""
    values = np.asarray(dataset.reference if use == "reference" else dataset.voltages, np.float64)
    h = hashlib.blake2b(digest_size=16)
    for part in (values.tobytes(), np.asarray(dataset.mask).tobytes(), dataset.protocol.content_digest,
                 mesh.content_digest, repr((dataset.electrode_width, dataset.current_unit, use, per_electrode,
                                            sorted(kw.items()), _CALIBRATION_VERSION, jax.__version__)).encode()):
        h.update(part)
    return h.hexdigest()


def calibrate_dataset_cached(dataset: EITDataset, mesh: Mesh, *, per_electrode: bool = False,
                             use: str = "reference", folder=None, **kw) -> Calibration:
    """:func:`calibrate_dataset`, remembered on disk: a second call with the same recording, mask,
    mesh and options reads the result (a few ms) instead of fitting again (1–2 s on a CPU).

    The results live as small JSON files in ``folder`` (default :func:`calibration_cache_dir`), named
    by a digest of every input; an unreadable entry is fitted again and rewritten (atomically).
    Meant for command-line tools that meet the same empty-tank recording on every call.
    """
    folder = Path(folder) if folder is not None else calibration_cache_dir()
    path = folder / f"{_calibration_key(dataset, mesh, use, per_electrode, kw)}.json"
    try:
        d = json.loads(path.read_text())
        z = d["contact_impedance"]
        return Calibration(**dict(d, contact_impedance=np.asarray(z) if isinstance(z, list) else float(z)))
    except (OSError, ValueError, TypeError, KeyError):
        pass   # not cached yet, or a damaged entry: fit again
    cal = calibrate_dataset(dataset, mesh, per_electrode=per_electrode, use=use, **kw)
    d = dataclasses.asdict(cal)
    d["contact_impedance"] = np.asarray(cal.contact_impedance).tolist()
    d["history"] = [float(x) for x in cal.history]
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_text(path, json.dumps(d))
    except OSError:   # an unwritable cache must not stop the fit's caller
        pass
    return cal


def fit_geometry(dataset: EITDataset, mesh_factory, offsets, directions=("ccw", "cw"), *,
                 use: str = "reference", per_electrode: bool = False) -> list[dict]:
    """Calibrate on every candidate electrode geometry and report the residuals.

    Args:
        dataset: an empty-tank data set.
        mesh_factory: ``mesh_factory(offset=..., direction=...)`` → Mesh, e.g.
            ``functools.partial(kit4_mesh, h=0.01)``.
        offsets: electrode-1 angles (rad) to try.
        directions: numbering directions to try.

    Returns:
        One dict per candidate: offset, direction, sigma, z, residual (fraction).
        For a homogeneous circular tank all candidates fit equally well up to
        discretisation error (module notes of :mod:`jaxeit.realdata.tanks`).
    """
    rows = []
    for direction in directions:
        for offset in offsets:
            mesh = mesh_factory(offset=float(offset), direction=direction)
            cal = calibrate_dataset(dataset, mesh, per_electrode=per_electrode, use=use)
            rows.append(dict(offset=float(offset), direction=direction, sigma=cal.sigma,
                             z=cal.contact_impedance, residual=cal.residual))
    return rows


# -- effective electrode widths --------------------------------------------------------------

def measurement_channels(protocol: Protocol) -> np.ndarray:
    """(M,) int: the voltmeter (channel) of each measurement; measurements with the same weight row share
    one (numbered in the lexicographic order of the rows)."""
    _, index = np.unique(np.asarray(protocol.measurements), axis=0, return_inverse=True)
    return index.reshape(-1)


def channel_offset_misfit(residual, channels) -> float:
    """‖r − (mean of r per channel)‖ (V): the part of a residual that one constant offset per
    measurement channel cannot explain (the offsets of a measurement system cancel in difference data).

    Args:
        residual: (M,) data − model (V).
        channels: (M,) int channel of each measurement.
    """
    residual, channels = np.asarray(residual, np.float64), np.asarray(channels)
    means = np.bincount(channels, residual) / np.maximum(np.bincount(channels), 1)
    return float(np.linalg.norm(residual - means[channels]))


@dataclasses.dataclass
class ElectrodeWidthFit:
    """Effective electrode widths fitted to an empty tank (:func:`fit_electrode_widths`).

    Attributes:
        stretches: (L,) relative width change of each electrode (0 = as drawn).
        mesh: the mesh with those widths (:func:`jaxeit.realdata.tanks.stretch_electrodes`).
        calibration: σ and z calibrated on ``mesh``.
        misfit_before, misfit_after: relative misfit of the empty tank once one offset per measurement
            channel is removed (:func:`channel_offset_misfit` / ‖v‖), on the drawn and the fitted mesh.
        n_iter: Gauss–Newton iterations.
    """

    stretches: np.ndarray
    mesh: Mesh
    calibration: Calibration
    misfit_before: float
    misfit_after: float
    n_iter: int


def fit_electrode_widths(dataset: EITDataset, mesh: Mesh, *, iterations: int = 3, step: float = 0.05,
                         bound: float = 0.6, use: str = "reference") -> ElectrodeWidthFit:
    """Fit each electrode's effective width to an empty tank, with σ, z and channel offsets.

    Gauss–Newton on the stretches of :func:`~jaxeit.realdata.tanks.stretch_electrodes` (Jacobian by
    central differences of ±``step``, 2L forward solves per iteration), with one offset per
    measurement channel and log σ as free nuisance parameters; z and σ are recalibrated on each new
    mesh. Stretches are kept in [−``bound``, ``bound``] (and clear of the neighbours).

    Returns:
        :class:`ElectrodeWidthFit`.
    """
    from .tanks import stretch_electrodes

    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    values = dataset.reference if use == "reference" else dataset.voltages
    if values is None:
        raise ValueError(f"{dataset.name}: no reference voltages; pass use='voltages' for an empty-tank file")
    v = np.asarray(values, np.float64)[dataset.mask]
    channels = measurement_channels(dataset.protocol)[dataset.mask]
    nuisance = np.eye(channels.max() + 1)[channels]                  # (M, C) one offset per channel
    L = mesh.n_electrodes
    stretches = np.zeros(L)

    def model_voltages(m: Mesh, cal: Calibration) -> np.ndarray:
        model = forward_model(dataset, m, contact_impedance=cal.contact_impedance)
        return np.asarray(model.voltages(jnp.full(m.n_elements, cal.sigma), cal.contact_impedance))

    current, misfits = mesh, []
    for _ in range(iterations):
        cal = calibrate_dataset(dataset, current, use=use)
        base = model_voltages(current, cal)
        misfits.append(channel_offset_misfit(v - base, channels) / np.linalg.norm(v))
        jac = np.stack([(model_voltages(stretch_electrodes(mesh, stretches + step * e), cal)
                         - model_voltages(stretch_electrodes(mesh, stretches - step * e), cal)) / (2 * step)
                        for e in np.eye(L)], axis=1)
        design = np.concatenate([nuisance, -base[:, None], jac], axis=1)   # offsets, log σ, stretches
        delta = np.linalg.lstsq(design, v - base, rcond=None)[0][-L:]
        stretches = np.clip(stretches + delta, -bound, bound)
        try:
            current = stretch_electrodes(mesh, stretches)
        except ValueError:                     # a step into a neighbour: take half of it
            stretches = np.clip(stretches - delta / 2, -bound, bound)
            current = stretch_electrodes(mesh, stretches)
    cal = calibrate_dataset(dataset, current, use=use)
    after = channel_offset_misfit(v - model_voltages(current, cal), channels) / np.linalg.norm(v)
    return ElectrodeWidthFit(stretches=stretches, mesh=current, calibration=cal, misfit_before=misfits[0],
                             misfit_after=after, n_iter=iterations)
