"""KIT4 water-tank data (Hauptmann et al. 2017, "Open 2D electrical impedance tomography data archive").

What the files hold (read from ``datamat_*.mat``; identical in every file):

* ``CurrentPattern`` (16, 79) float64, mA, one pattern per column, each a
  pair of electrodes at ±√2 mA (≈ ±1.414 mA). With 1-based electrode numbers
  and ``a → b`` meaning +√2 mA into ``a`` and −√2 mA into ``b``:

  - columns 0–15: adjacent, ``k → k+1`` for k = 1..16 (column 15 is 16 → 1);
  - columns 16–31: skip-1, ``k → k+2`` (cyclic);
  - columns 32–47: skip-2, ``k → k+3``;
  - columns 48–63: skip-3, ``k → k+4``;
  - columns 64–78: "all against electrode 1", ``k → 1`` for k = 2..16.

* ``MeasPattern`` (16, 16) (int16 or double): cyclic adjacent differences
  ±1. **Its columns are the measurements**: column k (0-based) reads
  ``U_k − U_{k+1}`` (``U_15 − U_0`` for k = 15), i.e. ``Uel = MeasPatternᵀ U``.
  Read as rows it would give ``U_k − U_{k−1}``: the same set with the sign
  flipped and shifted by one, which contradicts the data (for drive 1 → 2 the
  largest voltage, +1.39 V, is ``Uel[0]``, with equal neighbours ``Uel[1]`` and
  ``Uel[15]``; only ``U_1 − U_2`` fits) and a CEM simulation of the empty tank
  fits the column reading to 1.4 % and the row reading not at all (98 %).
* ``Uel`` (16, 79) float64, V: column p holds the 16 measurements of pattern p.
  Every measurement is present, including those on current-carrying electrodes
  (model them with the complete electrode model).

Tank: radius 0.14 m (28 cm diameter), 16 electrodes 0.025 m wide, equally
spaced; ``datamat_1_0.mat`` is the empty tank. Electrode angles are nominal
(``2πk/16`` counter-clockwise from +x): the archive marks electrode 1 on the
tank photos but gives no angle, so fit offset/direction by calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..protocol import from_arrays
from .dataset import EITDataset, _array, _check_file_patterns, _check_not_all_zero, _read_mat

__all__ = ["load_kit4", "KIT4_RADIUS", "KIT4_ELECTRODE_WIDTH", "KIT4_N_ELECTRODES", "KIT4_PATTERN_GROUPS"]

KIT4_RADIUS = 0.14  # m
KIT4_ELECTRODE_WIDTH = 0.025  # m
KIT4_N_ELECTRODES = 16
KIT4_N_PATTERNS = 79
#: column ranges of ``CurrentPattern`` / ``Uel`` by drive type
KIT4_PATTERN_GROUPS = {
    "adjacent": range(0, 16),
    "skip1": range(16, 32),
    "skip2": range(32, 48),
    "skip3": range(48, 64),
    "against1": range(64, 79),
}
_VARIABLES = ("CurrentPattern", "MeasPattern", "Uel")


def load_kit4(path, reference_path=None, *, patterns: str | Sequence[int] = "adjacent") -> EITDataset:
    """Load a KIT4 ``datamat_<i>_<j>.mat`` file as an :class:`EITDataset`.

    Args:
        path: the target measurement file.
        reference_path: optional empty-tank file (``datamat_1_0.mat``) giving
            ``reference``; it must hold the same current and measurement patterns.
        patterns: which current patterns (columns of ``CurrentPattern``/``Uel``)
            to keep: ``"adjacent"`` (columns 0–15, drive k → k+1), ``"all"``
            (the 79 columns), or a sequence of 0-based column indices.

    Returns:
        An :class:`EITDataset` with P selected patterns and M = 16·P
        measurements, stacked pattern by pattern in the order of ``patterns``
        (``voltages[16·i + k] = Uel[k, patterns[i]]``); measurement k of each
        pattern reads ``U_k − U_{k+1}`` (see the module docstring for why these
        are ``MeasPattern``'s columns). Currents in mA, voltages in V, all
        measurements usable (``mask`` all True), radius 0.14 m, 16 electrodes
        0.025 m wide at nominal angles 2πk/16.

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: a file that is not a readable MATLAB file, variables
            missing or of the wrong shape, a current pattern that injects no
            current (or does not sum to zero), a zero measurement column, an
            invalid ``patterns``, a reference recorded with other patterns,
            NaN/inf in the selected voltages, or a file whose Uel is all zero;
            each message names the file.
    """
    path = Path(path)
    cols = _select(patterns)
    cur, meas, volts = _read(path)
    ref = None
    if reference_path is not None:
        ref_cur, ref_meas, ref_volts = _read(Path(reference_path))
        if not (np.array_equal(ref_cur, cur) and np.array_equal(ref_meas, meas)):
            raise ValueError(f"reference {reference_path} was recorded with other CurrentPattern/MeasPattern "
                             f"than {path}; use the empty-tank file of the same archive (datamat_1_0.mat)")
        ref = ref_volts[:, cols].T.reshape(-1)
    # MeasPattern's columns are the measurement vectors (module docstring); Uel column-major by pattern
    protocol = from_arrays(cur[:, cols], meas, currents_per_column=True, measurements_per_column=True)
    n = KIT4_N_ELECTRODES
    return EITDataset(
        protocol=protocol,
        voltages=volts[:, cols].T.reshape(-1),
        reference=ref,
        mask=None,
        radius=KIT4_RADIUS,
        n_electrodes=n,
        electrode_width=KIT4_ELECTRODE_WIDTH,
        electrode_angles=2 * np.pi * np.arange(n) / n,
        current_unit="mA",
        name=path.stem,
    )


def _read(path: Path):
    data = _read_mat(path, _VARIABLES, "KIT4 datamat")
    n, p = KIT4_N_ELECTRODES, KIT4_N_PATTERNS
    cur = _array(data, "CurrentPattern", (n, p), path)
    meas = _array(data, "MeasPattern", (n, n), path)
    volts = _array(data, "Uel", (n, p), path)
    _check_file_patterns(path, cur, meas, "CurrentPattern", "MeasPattern")
    _check_not_all_zero(path, "Uel", volts)
    return cur, meas, volts


def _select(patterns) -> np.ndarray:
    if isinstance(patterns, str):
        if patterns == "adjacent":
            return np.arange(16)
        if patterns == "all":
            return np.arange(KIT4_N_PATTERNS)
        raise ValueError(f"patterns must be 'adjacent', 'all' or a sequence of column indices, got {patterns!r}")
    cols = np.asarray(patterns)
    if cols.ndim != 1 or cols.size == 0 or not np.issubdtype(cols.dtype, np.integer) or cols.dtype == bool:
        raise ValueError(f"patterns must be a non-empty sequence of integer column indices in [0, 79), "
                         f"got {patterns!r}")
    if cols.min() < 0 or cols.max() >= KIT4_N_PATTERNS:
        raise ValueError(f"pattern indices must lie in [0, {KIT4_N_PATTERNS}), got {cols.tolist()}")
    if len(np.unique(cols)) != len(cols):
        raise ValueError(f"pattern indices must not repeat, got {cols.tolist()}")
    return cols.astype(np.int64)
