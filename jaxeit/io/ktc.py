"""Kuopio Tomography Challenge 2023 (KTC2023) data: measurements, ground truths and the organisers' meshes.

What the files hold (read from the training set and meshes):

* ``data{k}.mat``: ``Inj`` (32, 76) float64 mA, one injection per column, a
  pair of electrodes at about ±1.4–1.5 mA (the measured amplitudes differ per
  pair). Only odd electrodes (1-based 1, 3, …, 31) inject: 1-based
  ``a → b``: columns 0–14 ``2k−1 → 2k+1``, 15 ``31 → 1``, then each of
  electrodes 1, 9, 17, 25 paired with the other odd electrodes.
  ``Mpat`` (32, 31) (int16): column k (0-based) reads ``U_k − U_{k+1}``;
  there is no ``U_31 − U_0`` column. ``Uel`` (2356, 1) V = 76 injections × 31
  measurements, column-major by injection: ``Uel[31·p + k]`` is measurement
  k of injection p.
* ``ref.mat``: ``Injref`` (equal to ``Inj``), ``Mpat``, ``Uelref`` (2356, 1):
  the empty tank.
* ``true{k}.mat``: ``truth`` (256, 256) uint8: 0 water, 1 resistive,
  2 conductive inclusion.
* ``Mesh_sparse.mat`` / ``Mesh_dense.mat``: ``g`` (N, 2) node coordinates in
  metres (radius 0.115), ``H`` (E, 3) **0-based** uint16 triangles (already
  counter-clockwise), ``elfaces`` a (1, 32) cell array whose entry l is an
  (n_l, 2) array of 0-based node pairs, the boundary edges of electrode l;
  also ``elcenterangles`` (= 2πk/32), ``z`` (zeros), ``vincl`` (all True,
  level 1), second-order ``g2``/``H2``/``elfaces2`` (not used here). The
  electrodes of ``elfaces`` span 2π/64 of arc each (half the electrode
  pitch, 0.01129 m), but electrode l sits at angle π/2 + 2πl/32, a quarter
  turn from ``elcenterangles``: the angles of :func:`load_ktc2023` are
  nominal (README and ``elcenterangles``), fit the rotation by calibration.

Difficulty levels (the organisers' rule, README): level l removes electrodes
R = {1, …, 2(l−1)} (1-based). Every measurement of an injection with nonzero
current on an electrode of R is unusable, and measurement k (1-based ``Mpat``
column k, reading ``U_k − U_{k+1}``) is unusable for every injection when
electrode k is in R. Usable counts: level 1: 2356, 2: 1624, 3: 1404,
4: 1200, 5: 1012, 6: 630, 7: 513 (the 513 of level 7 is the count published
for the challenge data).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..mesh import Mesh
from ..protocol import from_arrays
from .dataset import EITDataset, _array, _check_file_patterns, _check_not_all_zero, _read_mat

__all__ = ["load_ktc2023", "load_ktc_reference", "load_ktc_truth", "save_ktc_segmentation", "load_ktc_mesh",
           "ktc_level_mask",
           "KTC_RADIUS", "KTC_N_ELECTRODES", "KTC_ELECTRODE_WIDTH", "KTC_LEVELS"]

KTC_RADIUS = 0.115  # m
KTC_N_ELECTRODES = 32
#: electrode arc length (m). The organisers' description available here states
#: no width; their meshes' ``elfaces`` give every electrode an arc of exactly
#: 2π/64 rad (half the pitch), i.e. π·0.115/32 ≈ 0.01129 m (chord sum 11.289 mm
#: on Mesh_sparse, 11.290 mm on Mesh_dense). We use that value.
KTC_ELECTRODE_WIDTH = np.pi * KTC_RADIUS / KTC_N_ELECTRODES
KTC_LEVELS = range(1, 8)


def ktc_level_mask(currents, n_measurements: int, level: int) -> np.ndarray:
    """(P·K,) bool usable-measurement mask of a KTC2023 difficulty level.

    Args:
        currents: (L, P) injected currents (``Inj``, one injection per column).
        n_measurements: K, measurements per injection (``Mpat`` columns);
            measurement k must read ``U_k − U_{k+1}`` (0-based), as in ``Mpat``.
        level: difficulty level 1–7; removes electrodes 0 … 2(level−1)−1 (0-based).

    Returns:
        Mask in ``Uel`` order (injection-major): entry ``K·p + k`` is False when
        injection p drives a removed electrode or electrode k is removed.
    """
    cur = np.asarray(currents)
    level = _check_level(level)
    removed = np.arange(2 * (level - 1))
    if cur.ndim != 2 or len(removed) > cur.shape[0] or len(removed) > n_measurements:
        raise ValueError(f"currents must be (L, P) with L >= {len(removed)} for level {level}, got {cur.shape}")
    keep = np.ones((cur.shape[1], int(n_measurements)), bool)
    keep[(cur[removed] != 0).any(axis=0), :] = False  # injections through a removed electrode
    keep[:, removed] = False  # measurement k touches electrode k
    return keep.reshape(-1)


def load_ktc2023(path, ref_path, level: int = 1) -> EITDataset:
    """Load a KTC2023 measurement ``data{k}.mat`` with its empty-tank ``ref.mat``.

    Args:
        path: the target file (``Inj``, ``Mpat``, ``Uel``).
        ref_path: the empty-tank file (``Injref``, ``Uelref``; ``Mpat`` if present
            must equal the target's).
        level: difficulty level 1–7 deciding ``mask`` (module docstring).

    Returns:
        An :class:`EITDataset` with the full protocol (76 injections × 31
        measurements = 2356, currents in mA), ``voltages`` (2356,) V,
        ``reference`` (2356,) V, ``mask`` of the level, radius 0.115 m, 32
        electrodes of width :data:`KTC_ELECTRODE_WIDTH` at nominal angles
        2πk/32, and name ``"<stem>_level<l>"``.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: an unreadable file, variables missing or of inconsistent
            shapes, an injection with no current, a zero ``Mpat`` column, a reference
            recorded with other patterns, a level outside 1–7, NaN/inf in
            usable voltages, or all-zero ``Uel``/``Uelref``; each message
            names the file.
    """
    path, ref_path = Path(path), Path(ref_path)
    level = _check_level(level)
    inj, mpat, volts = _read_recording(path, "Inj", "Uel", "KTC2023 data")
    ref = _read_mat(ref_path, ("Injref", "Uelref"), "KTC2023 reference")
    injref = _array(ref, "Injref", (inj.shape[0], None), ref_path)
    if injref.shape[1] != inj.shape[1]:
        raise ValueError(
            f"{path}: {inj.shape[1]} injections, but {ref_path} has {injref.shape[1]}; KTC2023 recordings keep all "
            f"{injref.shape[1]} injections at every level (level {level} only masks the measurements that touch "
            f"its removed electrodes), so pass the full recording of the level together with its own ref.mat")
    uref = _array(ref, "Uelref", volts.shape, ref_path)
    _check_not_all_zero(ref_path, "Uelref", uref)
    if "Mpat" in ref and not np.array_equal(_array(ref, "Mpat", mpat.shape, ref_path), mpat):
        raise ValueError(f"{ref_path}: Mpat differs from that of {path}; use the reference of the same data set")
    # measured amplitudes may differ in the last digits between recordings, pairs may not
    if not np.allclose(injref, inj, rtol=1e-3, atol=0):
        raise ValueError(f"{ref_path}: Injref differs from Inj of {path} (other injections); "
                         "use the reference of the same data set")
    usable = ktc_level_mask(inj, mpat.shape[1], level)
    for file, name, values in ((path, "Uel", volts), (ref_path, "Uelref", uref)):
        bad = np.flatnonzero(usable & ~np.isfinite(values.reshape(-1)))
        if bad.size:
            raise ValueError(f"{file}: {bad.size} of the {int(usable.sum())} voltages of {name} used at level {level} "
                             f"are NaN or inf (first at index {bad[0]}); repair or re-export the recording")
    return _dataset(inj, mpat, volts, uref, level, path.stem, mask=usable)


def load_ktc_reference(ref_path, level: int = 1) -> EITDataset:
    """The empty-tank file ``ref.mat`` alone as an :class:`EITDataset` (voltages = reference = ``Uelref``).

    For what needs the protocol and the empty tank but no target (calibration, the simulator of
    :mod:`jaxeit.realdata.ktc_simulator`). Same checks and fields as :func:`load_ktc2023`.
    """
    ref_path = Path(ref_path)
    level = _check_level(level)
    inj, mpat, uref = _read_recording(ref_path, "Injref", "Uelref", "KTC2023 reference")
    return _dataset(inj, mpat, uref, uref, level, ref_path.stem)


def _read_recording(path: Path, inj_name: str, volts_name: str, what: str):
    """(Inj (L, P), Mpat (L, K), U (P·K, 1)) of a KTC2023 file, checked (``Inj``/``Uel`` or their ``ref`` names)."""
    data = _read_mat(path, (inj_name, "Mpat", volts_name), what)
    inj = _array(data, inj_name, (None, None), path)
    n_el, n_inj = inj.shape
    mpat = _array(data, "Mpat", (n_el, None), path)
    n_meas = mpat.shape[1]
    _check_file_patterns(path, inj, mpat, inj_name, "Mpat")
    volts = _array(data, volts_name, (None, None), path)
    if volts.size != n_inj * n_meas or min(volts.shape) != 1:
        raise ValueError(f"{path}: {volts_name} has shape {volts.shape}, expected ({n_inj * n_meas}, 1) = "
                         f"{n_inj} injections × {n_meas} measurements")
    _check_not_all_zero(path, volts_name, volts)
    return inj, mpat, volts


def _dataset(inj, mpat, volts, uref, level: int, stem: str, mask=None) -> EITDataset:
    n_el = inj.shape[0]
    # U is column-major by injection, i.e. injection-major once flattened: matches from_arrays
    protocol = from_arrays(inj, mpat, currents_per_column=True, measurements_per_column=True)
    return EITDataset(
        protocol=protocol,
        voltages=volts.reshape(-1),
        reference=uref.reshape(-1),
        mask=ktc_level_mask(inj, mpat.shape[1], level) if mask is None else mask,
        radius=KTC_RADIUS,
        n_electrodes=n_el,
        electrode_width=KTC_ELECTRODE_WIDTH if n_el == KTC_N_ELECTRODES else None,
        electrode_angles=2 * np.pi * np.arange(n_el) / n_el,
        current_unit="mA",
        name=f"{stem}_level{level}",
    )


def load_ktc_truth(path) -> np.ndarray:
    """(256, 256) uint8 ground-truth segmentation from ``true{k}.mat`` (variable ``truth``).

    Classes: 0 water, 1 resistive inclusion, 2 conductive inclusion. The image
    is returned as stored (row index first, no flips).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for an
    unreadable file, a missing variable, another shape or values outside {0, 1, 2}.
    """
    path = Path(path)
    data = _read_mat(path, ("truth",), "KTC2023 ground truth")
    truth = _array(data, "truth", (256, 256), path)
    bad = ~np.isin(truth, (0, 1, 2))
    if bad.any():
        raise ValueError(f"{path}: truth has {int(bad.sum())} pixels outside the classes {{0, 1, 2}} "
                         f"(values {np.unique(truth[bad])[:5].tolist()})")
    return truth.astype(np.uint8)


def save_ktc_segmentation(path, segmentation) -> Path:
    """Save a segmentation in the challenge's submission format, atomically: ``path`` (.mat) gets one
    variable, ``reconstruction``, (256, 256) uint8 in the truth frame (0 water, 1 resistive,
    2 conductive), what the organisers' scoring code reads and :func:`load_ktc_truth`'s layout."""
    from scipy.io import savemat

    from ..io_utils import atomic_path

    seg = np.asarray(segmentation)
    if seg.shape != (256, 256) or not np.isin(seg, (0, 1, 2)).all():
        raise ValueError(f"a KTC2023 segmentation is (256, 256) with classes 0, 1, 2; got {seg.shape}, "
                         f"values {np.unique(seg)[:5].tolist()}")
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            savemat(f, {"reconstruction": seg.astype(np.uint8)})
    return path


def load_ktc_mesh(path) -> Mesh:
    """The organisers' first-order FE mesh (``Mesh_sparse.mat`` / ``Mesh_dense.mat``) as a :class:`Mesh`.

    Reads ``g`` (N, 2) node coordinates (m), ``H`` (E, 3) triangles and
    ``elfaces``, a (1, L) cell array of (n_l, 2) electrode boundary edges; the
    second-order ``g2``/``H2`` are ignored. Indices are 0-based in the
    published files; 1-based files (MATLAB style) are recognised (max index
    = N) and shifted. Clockwise triangles are flipped (``orient=True``).
    Electrode l of the result is cell ``elfaces[l]``.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` (naming
    the file) for an unreadable file, missing variables, bad shapes, ambiguous,
    fractional or out-of-range indices, or any invalid mesh (electrode edges
    that are not boundary edges, overlapping electrodes, ... see :class:`Mesh`).
    """
    path = Path(path)
    data = _read_mat(path, ("g", "H", "elfaces"), "KTC2023 mesh")
    nodes = _array(data, "g", (None, 2), path)
    tri = _array(data, "H", (None, 3), path, dtype=np.int64)  # int64 first: uint16 - 1 would wrap
    cells = np.asarray(data["elfaces"])
    if cells.dtype != object or cells.size == 0:
        raise ValueError(f"{path}: elfaces must be a cell array (1, L) of (n, 2) node-index arrays, "
                         f"got a {cells.dtype} array of shape {cells.shape}")
    faces = []
    for l, cell in enumerate(cells.reshape(-1)):
        e = np.asarray(cell)
        if e.ndim == 2 and e.shape[0] == 2 and e.shape[1] != 2:
            e = e.T  # a MATLAB 2 × n layout
        if e.ndim != 2 or e.shape[1] != 2 or e.shape[0] == 0:
            raise ValueError(f"{path}: elfaces{{{l + 1}}} has shape {e.shape}, expected (n, 2) node pairs")
        faces.append(_array({"elfaces": e}, "elfaces", (None, 2), path, dtype=np.int64))
    n = len(nodes)
    lo, hi = tri.min(), tri.max()
    if lo == 0 and hi <= n - 1:
        base = 0
    elif lo >= 1 and hi == n:
        base = 1
    else:
        raise ValueError(f"{path}: triangle indices span [{lo}, {hi}] for {n} nodes; cannot tell 0-based "
                         f"(needs [0, {n - 1}]) from 1-based (needs [1, {n}]) indexing")
    tri = tri - base
    faces = [f - base for f in faces]
    edges = np.concatenate(faces)
    if edges.min() < 0 or edges.max() >= n:
        raise ValueError(f"{path}: elfaces index nodes outside [0, {n}) after {base}-based conversion")
    # electrode edges must lie on the boundary (an index-base or ordering mistake would not)
    all_edges = np.sort(tri[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    keys, counts = np.unique(all_edges[:, 0] * n + all_edges[:, 1], return_counts=True)
    boundary = keys[counts == 1]
    sorted_edges = np.sort(edges, axis=1)
    off = ~np.isin(sorted_edges[:, 0] * n + sorted_edges[:, 1], boundary)
    if off.any():
        raise ValueError(f"{path}: {int(off.sum())} electrode edges of elfaces are not boundary edges of H "
                         f"(first: {edges[off][:3].tolist()}); the mesh or its index base is inconsistent")
    edge_el = np.concatenate([np.full(len(f), l) for l, f in enumerate(faces)])
    try:
        return Mesh.from_arrays(nodes, tri, electrode_edges=edges, edge_electrode=edge_el, orient=True)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def _check_level(level) -> int:
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or int(level) not in KTC_LEVELS:
        raise ValueError(f"level must be an integer difficulty level 1–7, got {level!r}")
    return int(level)
