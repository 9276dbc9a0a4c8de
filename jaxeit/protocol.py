"""Current-injection and voltage-measurement protocols.

A :class:`Protocol` is two arrays:

* ``currents`` (P, L) float64: the current injected into each electrode by each
  pattern (positive into the body; each row sums to zero), in the caller's units
  (A, or mA for the real data sets whose files are in mA).
* ``measurements`` (M, L) float64 with ``pattern`` (M,) int32: measurement m
  reads ``measurements[m] @ U[pattern[m]]`` where ``U`` (P, L) are the electrode
  potentials. Measurements are stacked pattern by pattern.

Any linear measurement (differential, single-ended against ground, weighted)
fits; the forward model never needs to know which generator made a protocol.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .content_hash import ContentHashed

__all__ = ["Protocol", "adjacent", "opposite", "trigonometric", "from_arrays", "from_pairs", "check_patterns"]


@dataclasses.dataclass(frozen=True, eq=False)
class Protocol(ContentHashed):
    """Injection currents (P, L), measurement weights (M, L) and the pattern of each measurement (M,)."""

    currents: np.ndarray
    measurements: np.ndarray
    pattern: np.ndarray

    def __post_init__(self):
        cur = np.ascontiguousarray(self.currents, dtype=np.float64)
        meas = np.ascontiguousarray(self.measurements, dtype=np.float64)
        pat = np.ascontiguousarray(self.pattern, dtype=np.int32).reshape(-1)
        if cur.ndim != 2:
            raise ValueError(f"currents must have shape (P, L), got {cur.shape}")
        if meas.ndim != 2 or meas.shape[1] != cur.shape[1]:
            raise ValueError(f"measurements must have shape (M, {cur.shape[1]}), got {meas.shape}")
        if len(pat) != len(meas):
            raise ValueError("pattern must give one injection index per measurement")
        if len(pat) and (pat.min() < 0 or pat.max() >= len(cur)):
            raise ValueError("pattern indices must lie in [0, P)")
        if not (np.all(np.isfinite(cur)) and np.all(np.isfinite(meas))):
            raise ValueError("protocol currents/measurements contain NaN or inf")
        scale = np.abs(cur).max(initial=0.0)
        if np.any(np.abs(cur.sum(axis=1)) > 1e-9 * max(scale, 1e-300)):
            raise ValueError("each current pattern must sum to zero (charge conservation)")
        for name, value in [("currents", cur), ("measurements", meas), ("pattern", pat)]:
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    @property
    def n_electrodes(self) -> int:
        return self.currents.shape[1]

    @property
    def n_patterns(self) -> int:
        return self.currents.shape[0]

    @property
    def n_measurements(self) -> int:
        return self.measurements.shape[0]

    def subset(self, keep) -> "Protocol":
        """The protocol restricted to measurements where the boolean ``keep`` (M,) is True."""
        keep = np.asarray(keep, bool)
        if keep.shape != (self.n_measurements,):
            raise ValueError(f"keep must have shape ({self.n_measurements},), got {keep.shape}")
        return Protocol(self.currents, self.measurements[keep], self.pattern[keep])

    def __repr__(self):
        return (f"Protocol(n_electrodes={self.n_electrodes}, n_patterns={self.n_patterns}, "
                f"n_measurements={self.n_measurements})")


def from_pairs(n_electrodes: int, drive_pairs, meas_pairs_per_pattern, amplitude: float = 1.0) -> Protocol:
    """Protocol from electrode pairs (0-based).

    ``drive_pairs`` (P, 2): current ``+amplitude`` enters ``a`` and leaves ``b``.
    ``meas_pairs_per_pattern``: for each pattern a sequence of ``(n, m)`` pairs,
    each measuring ``U_n − U_m`` (pyEIT's ``meas_mat`` convention).
    """
    drive_pairs = np.asarray(drive_pairs)
    cur = np.zeros((len(drive_pairs), n_electrodes))
    rows = np.arange(len(drive_pairs))
    cur[rows, drive_pairs[:, 0]] += amplitude
    cur[rows, drive_pairs[:, 1]] -= amplitude
    meas, pat = [], []
    for p, pairs in enumerate(meas_pairs_per_pattern):
        for n, m in pairs:
            w = np.zeros(n_electrodes)
            w[n] += 1.0
            w[m] -= 1.0
            meas.append(w)
            pat.append(p)
    return Protocol(cur, np.asarray(meas).reshape(-1, n_electrodes), np.asarray(pat, np.int32))


def _pair_drive(n_electrodes: int, distance: int, amplitude: float, step: int, exclude_driven: bool):
    if n_electrodes < 4:
        raise ValueError(f"need at least 4 electrodes for a four-electrode protocol, got {n_electrodes}")
    if not 1 <= distance < n_electrodes:
        raise ValueError(f"drive distance must be in [1, {n_electrodes - 1}], got {distance}")
    drive = np.array([[k, (k + distance) % n_electrodes] for k in range(n_electrodes)])
    m = np.arange(n_electrodes)
    n = (m + step) % n_electrodes
    meas = []
    for a, b in drive:
        # pyEIT 'std' ordering: pairs (n, m) = (k + step, k) for k = 0..L-1, measuring U_n - U_m
        keep = (m != a) & (m != b) & (n != a) & (n != b) if exclude_driven else np.ones(n_electrodes, bool)
        meas.append(np.stack([n[keep], m[keep]], axis=1))
    return from_pairs(n_electrodes, drive, meas, amplitude)


def adjacent(n_electrodes: int = 16, skip: int = 0, amplitude: float = 1.0, exclude_driven: bool = True,
             meas_skip: int = 0) -> Protocol:
    """Adjacent-type protocol: drive pair (k, k+skip+1), measure (U_{j+meas_skip+1} − U_j).

    Equals pyEIT's ``protocol.create(n_el, dist_exc=skip+1, step_meas=meas_skip+1,
    parser_meas="std")`` (measurements on driven electrodes dropped when
    ``exclude_driven``): 16 electrodes give 16 × 13 = 208 measurements.
    """
    return _pair_drive(n_electrodes, skip + 1, amplitude, meas_skip + 1, exclude_driven)


def opposite(n_electrodes: int = 16, amplitude: float = 1.0, exclude_driven: bool = True) -> Protocol:
    """Opposite drive (k, k + L/2) with adjacent measurements; ``n_electrodes`` must be even."""
    if n_electrodes % 2:
        raise ValueError(f"opposite drive needs an even number of electrodes, got {n_electrodes}")
    return _pair_drive(n_electrodes, n_electrodes // 2, amplitude, 1, exclude_driven)


def trigonometric(n_electrodes: int = 16, amplitude: float = 1.0, offset: float = 0.0) -> Protocol:
    """Trigonometric current patterns (optimal for centred disk perturbations).

    Patterns k = 1..L/2: ``amplitude·cos(kθ_l)``, k = 1..L/2−1: ``amplitude·sin(kθ_l)``
    with θ_l = offset + 2πl/L (L − 1 patterns). Measurements: every electrode
    potential against the mean (the CEM ground), i.e. ``U_l`` for all l.
    """
    theta = offset + 2 * np.pi * np.arange(n_electrodes) / n_electrodes
    rows = [np.cos(k * theta) for k in range(1, n_electrodes // 2 + 1)]
    rows += [np.sin(k * theta) for k in range(1, (n_electrodes + 1) // 2)]
    cur = amplitude * np.asarray(rows)
    cur -= cur.mean(axis=1, keepdims=True)  # exact zero sums against round-off
    eye = np.eye(n_electrodes) - 1.0 / n_electrodes
    meas = np.tile(eye, (len(cur), 1))
    pat = np.repeat(np.arange(len(cur)), n_electrodes)
    return Protocol(cur, meas, pat)


def from_arrays(currents, measurement_pattern, *, currents_per_column: bool = True,
                measurements_per_column: bool | None = None) -> Protocol:
    """Protocol from a data set's arrays: every measurement for every pattern.

    Args:
        currents: (L, P) if ``currents_per_column`` (the KIT4 ``CurrentPattern``
            and KTC2023 ``Inj`` layout), else (P, L).
        measurement_pattern: K measurement weight vectors, as the columns of an
            (L, K) array (KTC2023 ``Mpat``, KIT4 ``MeasPattern`` whose column k
            reads U_k − U_{k+1}) or the rows of a (K, L) array.
        measurements_per_column: which of the two; inferred from the shape when
            only one dimension equals L, required when the array is square.

    Each of the K measurements is taken for every pattern; voltages stack
    pattern by pattern (the column-major order of KTC2023's ``Uel``).

    Raises ``ValueError`` for a pattern that injects no current, a zero
    measurement vector, NaN/inf, or currents that do not sum to zero
    (:func:`check_patterns`).
    """
    cur = np.asarray(currents, dtype=np.float64)
    if cur.ndim != 2:
        raise ValueError(f"currents must be a 2D array, got shape {cur.shape}")
    cur = cur.T if currents_per_column else cur
    n_el = cur.shape[1]
    mp = np.asarray(measurement_pattern, dtype=np.float64)
    if mp.ndim != 2 or n_el not in mp.shape:
        raise ValueError(f"measurement_pattern must be (L, K) or (K, L) with L={n_el}, got {mp.shape}")
    if measurements_per_column is None:
        if mp.shape[0] == mp.shape[1]:
            raise ValueError("measurement_pattern is square: say measurements_per_column=True (columns are "
                             "measurements) or False (rows are measurements)")
        measurements_per_column = mp.shape[0] == n_el
    weights = mp.T if measurements_per_column else mp
    if weights.shape[1] != n_el:
        raise ValueError(f"measurement vectors have length {weights.shape[1]}, expected L={n_el}")
    check_patterns(cur, weights)
    n_pat = cur.shape[0]
    meas = np.tile(weights, (n_pat, 1))
    pat = np.repeat(np.arange(n_pat), len(weights))
    return Protocol(cur, meas, pat)


def check_patterns(currents, measurements) -> None:
    """Check a data set's patterns: raise ``ValueError`` naming the first bad one.

    Args:
        currents: (P, L) injected currents, one pattern per row.
        measurements: (K, L) measurement weight vectors, one per row.

    A pattern with no current (all zeros) gives all-zero voltages and a
    measurement vector of zeros reads nothing: both mark a damaged file or a
    transposed array. Currents must be finite and sum to zero per pattern.
    """
    cur = np.asarray(currents, dtype=np.float64)
    meas = np.asarray(measurements, dtype=np.float64)
    for name, arr in [("current pattern", cur), ("measurement vector", meas)]:
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise ValueError(f"{name} {int(np.flatnonzero(bad)[0])} (0-based) holds NaN or inf "
                             f"({int(bad.sum())} such); repair the file or drop that {name}")
        zero = ~np.any(arr != 0, axis=1)
        if zero.any():
            what = "injects no current" if name == "current pattern" else "reads nothing"
            raise ValueError(f"{name} {int(np.flatnonzero(zero)[0])} (0-based) is all zero: it {what} "
                             f"({int(zero.sum())} such); drop it (select other patterns) or repair the file")
    scale = np.abs(cur).max(axis=1)
    unbalanced = np.abs(cur.sum(axis=1)) > 1e-9 * np.maximum(scale, 1e-300)
    if unbalanced.any():
        p = int(np.flatnonzero(unbalanced)[0])
        raise ValueError(f"current pattern {p} (0-based) sums to {cur[p].sum():.4g}, not zero: the currents "
                         "into the body must balance the currents out (check the file or its units)")
