"""A measured EIT data set: protocol, voltages, reference, usable-data mask and tank geometry.

:class:`EITDataset` is what the loaders (:func:`jaxeit.io.load_kit4`,
:func:`jaxeit.io.load_ktc2023`) return and what reconstructions consume. It
keeps the *full* protocol of the file and marks unusable measurements in
``mask`` instead of deleting them, so measurement m always means row m of the
file; :meth:`EITDataset.masked` gives the restricted data when needed.

This module also holds the small ``.mat`` reading helpers the loaders share.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from ..protocol import Protocol, check_patterns

__all__ = ["EITDataset", "data_dir"]


def data_dir(path=None) -> Path:
    """The real-data folder (``kit4/``, ``ktc2023/``; see ``shared/data/README.md``).

    ``path`` if given, else ``$JAXEIT_DATA``, else ``../shared/data`` beside the
    source checkout. The folder may not exist: callers check and skip (tests,
    notebooks) or report it (benchmarks, the command line).
    """
    if path:
        return Path(path)
    env = os.environ.get("JAXEIT_DATA")
    # jaxeit/io/dataset.py -> parents[2] is the repository root, parents[3] the folder holding it
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def resolve_data_path(path) -> Path:
    """``path`` if it exists; else, for a relative path, the same path inside :func:`data_dir` when it is
    there (so ``"ktc2023/training/ref.mat"`` works from any folder). Otherwise ``path`` unchanged (the
    caller reports it as missing)."""
    path = Path(path)
    if path.exists() or path.is_absolute():
        return path
    inside = data_dir() / path
    return inside if inside.exists() else path


@dataclasses.dataclass(frozen=True, eq=False)
class EITDataset:
    """Voltages measured with a protocol on a circular tank, with an optional empty-tank reference.

    Attributes:
        protocol: the full :class:`~jaxeit.protocol.Protocol` of the file
            (currents (P, L) in ``current_unit``, measurement weights (M, L),
            pattern (M,)); every measurement of the file, usable or not.
        voltages: (M,) float64 measured voltages of the target (V), stacked
            pattern by pattern as in the protocol.
        reference: (M,) float64 empty-tank voltages (V) for the same protocol,
            or ``None`` when no reference was loaded.
        mask: (M,) bool, True where the measurement is usable (e.g. not on a
            removed electrode). ``None`` at construction means all usable.
        radius: tank radius (m).
        n_electrodes: L, equal to ``protocol.n_electrodes``.
        electrode_width: electrode arc length (m), or ``None`` if unknown.
        electrode_angles: (L,) float64 *nominal* centre angles (radians,
            counter-clockwise from +x) of the electrodes in the data set's own
            numbering (0-based index = file electrode number − 1). The rotation
            and direction that actually match the measurements are a
            calibration result, not a fact of the file: treat these as a
            starting point.
        current_unit: unit of ``protocol.currents`` ("mA" for both real data
            sets); voltages are in V, so transfer impedances come out in kΩ.
        name: a short label (e.g. the file stem).

    Arrays are stored as read-only float64/bool copies. ``__post_init__``
    raises ``ValueError`` for shapes that disagree with the protocol and for
    NaN/inf in usable measurements.
    """

    protocol: Protocol
    voltages: np.ndarray
    reference: np.ndarray | None
    mask: np.ndarray | None
    radius: float
    n_electrodes: int
    electrode_width: float | None
    electrode_angles: np.ndarray
    current_unit: str = "mA"
    name: str = ""

    def __post_init__(self):
        if not isinstance(self.protocol, Protocol):
            raise TypeError(f"protocol must be a jaxeit.protocol.Protocol, got {type(self.protocol).__name__}")
        m = self.protocol.n_measurements
        volts = _vector(self.voltages, m, "voltages", np.float64)
        ref = None if self.reference is None else _vector(self.reference, m, "reference", np.float64)
        mask = np.ones(m, bool) if self.mask is None else np.asarray(self.mask)
        if mask.dtype != bool:
            raise ValueError(f"mask must be a boolean array, got dtype {mask.dtype}")
        mask = _vector(mask, m, "mask", bool)
        for label, values in [("voltages", volts), ("reference", ref)]:
            if values is None:
                continue
            bad = int(np.count_nonzero(mask & ~np.isfinite(values)))
            if bad:
                raise ValueError(
                    f"{self.name or 'data set'}: {bad} usable {label} are NaN or inf; mark them unusable "
                    f"(mask[i] = False, e.g. mask &= np.isfinite({label})) or repair the file"
                )
        n_el = int(self.n_electrodes)
        if n_el != self.protocol.n_electrodes:
            raise ValueError(f"n_electrodes={n_el} but the protocol has {self.protocol.n_electrodes} electrodes")
        angles = _vector(self.electrode_angles, n_el, "electrode_angles", np.float64)
        if not np.all(np.isfinite(angles)):
            raise ValueError("electrode_angles contain NaN or inf")
        radius = float(self.radius)
        if not (np.isfinite(radius) and radius > 0):
            raise ValueError(f"radius must be a positive length in metres, got {self.radius}")
        width = None if self.electrode_width is None else float(self.electrode_width)
        if width is not None and not (0 < width and n_el * width < 2 * np.pi * radius):
            raise ValueError(
                f"electrode_width={width} m is impossible for {n_el} electrodes on a circle of radius {radius} m "
                f"(need 0 < width < {2 * np.pi * radius / n_el:.4g}); pass None if unknown"
            )
        for name, value in [("voltages", volts), ("reference", ref), ("mask", mask), ("electrode_angles", angles)]:
            if value is not None:
                value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "radius", radius)
        object.__setattr__(self, "n_electrodes", n_el)
        object.__setattr__(self, "electrode_width", width)
        object.__setattr__(self, "current_unit", str(self.current_unit))
        object.__setattr__(self, "name", str(self.name))

    @property
    def n_measurements(self) -> int:
        """M, all measurements of the file (usable or not)."""
        return self.protocol.n_measurements

    @property
    def n_usable(self) -> int:
        """Number of usable measurements (True entries of ``mask``)."""
        return int(np.count_nonzero(self.mask))

    def masked(self) -> "EITDataset":
        """The data set restricted to usable measurements: protocol, voltages and reference
        keep only ``mask`` rows (all P current patterns are kept), and the new mask is all True."""
        keep = self.mask
        return dataclasses.replace(
            self,
            protocol=self.protocol.subset(keep),
            voltages=self.voltages[keep],
            reference=None if self.reference is None else self.reference[keep],
            mask=np.ones(int(np.count_nonzero(keep)), bool),
        )

    def difference(self) -> np.ndarray:
        """(M,) float64 ``voltages − reference`` (V), the data of difference imaging.

        Unusable entries are computed too (they may be NaN); combine with ``mask``
        or call on :meth:`masked`. Raises ``ValueError`` without a reference.
        """
        if self.reference is None:
            raise ValueError(
                f"{self.name or 'data set'} has no reference (empty-tank) voltages: load it with one, e.g. "
                "load_kit4(path, reference_path='.../datamat_1_0.mat') or load_ktc2023(path, '.../ref.mat')"
            )
        return self.voltages - self.reference

    def __repr__(self):
        ref = "yes" if self.reference is not None else "no"
        return (f"EITDataset(name={self.name!r}, n_electrodes={self.n_electrodes}, "
                f"n_patterns={self.protocol.n_patterns}, n_measurements={self.n_measurements}, "
                f"usable={self.n_usable}, reference={ref}, radius={self.radius} m)")


def _vector(value, length: int, name: str, dtype) -> np.ndarray:
    arr = np.array(value, dtype=dtype, copy=True)
    if arr.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},) to match the protocol, got {arr.shape}")
    return arr


# -- .mat reading helpers shared by the loaders -------------------------------------

def _read_mat(path, required, what: str) -> dict:
    """Read a MATLAB file and check that it holds the ``required`` variables.

    Raises ``FileNotFoundError`` (no such file) or ``ValueError`` (a folder,
    not a readable MATLAB v4–v7.2 file, or variables missing), each naming
    the path. ``squeeze_me=False`` keeps shapes (and cell arrays) as stored.
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} file not found: {path} (check the path, or set JAXEIT_DATA)")
    if not path.is_file():
        raise ValueError(f"{path} is a folder, not a {what} file; give the path of the .mat file")
    try:
        data = loadmat(path, squeeze_me=False)
    except NotImplementedError as exc:  # scipy's message for v7.3 (HDF5) files
        raise ValueError(f"cannot read {path}: MATLAB v7.3 (HDF5) files are not supported; "
                         f"re-save it with save(..., '-v7') ({exc})") from exc
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError/OSError on corrupt files
        raise ValueError(f"cannot read {path} as a MATLAB .mat file ({type(exc).__name__}: {exc}); "
                         f"is it a {what} file, complete (not truncated)?") from exc
    present = sorted(k for k in data if not k.startswith("__"))
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{path} is missing the variable(s) {missing} of a {what} file; it holds {present}")
    return data


def _array(data: dict, key: str, shape, path, *, dtype=np.float64) -> np.ndarray:
    """``data[key]`` as ``dtype``, checked against ``shape`` (None entries match any size).

    For an integer ``dtype`` the values must be whole numbers (never rounded).
    """
    arr = np.asarray(data[key])
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{path}: variable {key!r} must be a numeric array, got dtype {arr.dtype}")
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape))
    if not ok:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{path}: variable {key!r} has shape {arr.shape}, expected {want}")
    if np.issubdtype(dtype, np.integer) and not np.issubdtype(arr.dtype, np.integer):
        bad = ~(np.isfinite(arr) & (arr == np.round(arr)))
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{path}: variable {key!r} must hold whole-number indices, but {key}{list(pos)} = "
                             f"{float(arr[pos])!r} ({int(bad.sum())} such entries); the file is damaged or "
                             "not of this kind")
    return arr.astype(dtype)


def _check_file_patterns(path, currents_lp, meas_lk, cur_name: str, meas_name: str) -> None:
    """Check a file's (L, P) currents and (L, K) measurement columns; errors name the file and the column."""
    try:
        check_patterns(np.asarray(currents_lp).T, np.asarray(meas_lk).T)
    except ValueError as e:
        msg = str(e).replace("current pattern", f"{cur_name} column").replace("measurement vector",
                                                                           f"{meas_name} column")
        raise ValueError(f"{path}: {msg}") from None


def _check_not_all_zero(path, key: str, values) -> None:
    """A measured voltage array that is all zero holds no measurement (an empty or damaged file)."""
    v = np.asarray(values)
    if not np.any(v[np.isfinite(v)]):
        raise ValueError(f"{path}: variable {key!r} holds no nonzero voltage: the file records no measurement; "
                         "use a complete file of the data set")
