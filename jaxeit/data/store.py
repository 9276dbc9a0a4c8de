"""On-disk layout of a simulated data set: shards, sidecars, metadata, geometry.

::

    <root>/metadata.json             config, mesh/protocol/noise/GN description, versions, splits, status
    <root>/geometry.npz              mesh arrays, pixel-grid box and domain mask
    <root>/<split>/shard_00000.npz   samples [start, stop) of the split (global indices)
    <root>/<split>/shard_00000.json  sidecar: start, stop, sha256 of the .npz (written after it)

Every file is written to a temporary name in the same folder and moved into
place with ``os.replace`` (:func:`jaxeit.io_utils.atomic_path`), so a crash
never leaves a half-written file under a final name. A shard counts as
complete only when its sidecar exists and the shard's SHA-256 and index range
match it (:func:`verify_shard`).

Fields of a shard (n = stop − start samples; E elements, M = 208 measurements,
K circles, H = W = image size):

=============  ==================  ========  ===============================================
name           shape               dtype     meaning
=============  ==================  ========  ===============================================
index          (n,)                int64     global sample index i (sample i depends only on (seed, i))
sigma          (n, E)              float64   element conductivity (S/m), phantom averaged per element
v_clean        (n, M)              float64   F(sigma), noise-free voltages (V for 1 A drive)
voltages       (n, M)              float64   v_clean + white Gaussian noise at the SNR
image          (n, H, W)           float32   ground-truth pixel averages, exterior_value outside the mesh
gn_sigma       (n, E)              float64   Gauss–Newton element conductivities from ``voltages``
gn_image       (n, H, W)           float32   the GN conductivities rendered on the grid
centres        (n, K, 2)           float64   circle centres
radii          (n, K)              float64   circle radii
values         (n, K)              float64   circle conductivities
=============  ==================  ========  ===============================================
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..io_utils import atomic_path, atomic_write_text

__all__ = ["FIELDS", "shard_path", "write_shard", "verify_shard", "read_metadata", "load_split",
           "load_geometry", "file_sha256"]

FIELDS = ("index", "sigma", "v_clean", "voltages", "image", "gn_sigma", "gn_image", "centres", "radii", "values")


def shard_path(root, split: str, k: int) -> Path:
    """Path of shard ``k`` of ``split`` (its sidecar has the suffix ``.json``)."""
    return Path(root) / split / f"shard_{k:05d}.npz"


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_shard(path, arrays: dict, *, start: int, stop: int, compress: bool = False, fields=FIELDS) -> str:
    """Write a shard and then its sidecar, both atomically; returns the shard's SHA-256.

    ``fields``: the arrays a shard holds (default :data:`FIELDS`, the DGM data set's; other
    data sets, such as the KTC2023 simulator's, name their own)."""
    path = Path(path)
    missing = set(fields) - set(arrays)
    if missing:
        raise ValueError(f"shard is missing fields {sorted(missing)}")
    with atomic_path(path) as tmp:
        (np.savez_compressed if compress else np.savez)(tmp, **{k: arrays[k] for k in fields})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        digest = file_sha256(tmp)
    atomic_write_text(path.with_suffix(".json"),
                      json.dumps({"start": int(start), "stop": int(stop), "sha256": digest}))
    return digest


def verify_shard(path, start: int, stop: int, fields=FIELDS) -> bool:
    """True if the shard and its sidecar exist, the hash matches and it holds exactly [start, stop)
    with the arrays ``fields``."""
    path = Path(path)
    side = path.with_suffix(".json")
    if not (path.exists() and side.exists()):
        return False
    try:
        meta = json.loads(side.read_text())
        if (meta["start"], meta["stop"]) != (start, stop) or meta["sha256"] != file_sha256(path):
            return False
        with np.load(path) as z:
            if set(z.files) != set(fields):
                return False
            return np.array_equal(z["index"], np.arange(start, stop))
    except (OSError, ValueError, KeyError):
        return False


def read_metadata(root) -> dict:
    """The parsed ``metadata.json`` of a data set; ``ValueError`` if there is none."""
    path = Path(root) / "metadata.json"
    if not path.exists():
        raise ValueError(f"{root} is not a data set (no metadata.json); create it with jaxeit.data.simulate")
    return json.loads(path.read_text())


def load_geometry(root) -> dict:
    """``geometry.npz`` as a dict: nodes, triangles, electrode_nodes, ref_node, grid_box, mask."""
    with np.load(Path(root) / "geometry.npz") as z:
        return {k: z[k] for k in z.files}


def load_split(root, split: str = "train", *, fields=None, limit: int | None = None,
               verify: bool = False) -> dict[str, np.ndarray]:
    """Concatenate the shards of ``split`` into arrays.

    Args:
        root: the data set folder.
        split: "train", "val" or "test".
        fields: names to load (default: all of :data:`FIELDS`).
        limit: load only the first ``limit`` samples of the split.
        verify: check every shard's hash first (slower).

    Returns:
        ``{field: array}`` with the sample axis first, in global index order.

    Raises:
        ValueError: for an unknown split or field, or an incomplete data set.
    """
    meta = read_metadata(root)
    if split not in meta["splits"]:
        raise ValueError(f"unknown split {split!r}; the data set has {sorted(meta['splits'])}")
    fields = tuple(FIELDS if fields is None else fields)
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown fields {sorted(unknown)}; available: {FIELDS}")
    out = {f: [] for f in fields}
    n = 0
    for k, (start, stop) in enumerate(meta["shards"][split]):
        if limit is not None and n >= limit:
            break
        path = shard_path(root, split, k)
        if verify and not verify_shard(path, start, stop):
            raise ValueError(f"shard {path} is missing or corrupt: rerun the simulation to regenerate it")
        if not path.exists():
            raise ValueError(f"shard {path} is missing: the data set is incomplete (rerun simulate to resume)")
        take = stop - start if limit is None else min(stop - start, limit - n)
        with np.load(path) as z:
            for f in fields:
                out[f].append(z[f][:take])
        n += take
    if n == 0:
        return {f: np.zeros((0,)) for f in fields}
    return {f: np.concatenate(v) for f, v in out.items()}
