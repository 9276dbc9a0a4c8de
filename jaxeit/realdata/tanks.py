"""Meshes of the real tanks (KIT4, KTC2023) and electrode numbering helpers.

Geometry conventions
--------------------
Meshes are in metres in a right-handed frame (x to the right, y up, angles
counter-clockwise from +x). :func:`jaxeit.mesh.disk` puts mesh electrode j at
polar angle ``offset + 2πj/L``. A data set whose electrodes are numbered
clockwise has its electrode k at ``offset − 2πk/L``; :func:`kit4_mesh` and
:func:`ktc_mesh` take ``direction="cw"`` and relabel the mesh electrodes so
that electrode k of the returned mesh is electrode k of the data either way.
The same relabelling can be applied to a protocol instead
(:func:`permute_protocol`), which keeps one mesh for many candidates.

What is identifiable
--------------------
For a homogeneous circular tank with equal, equally spaced electrodes the
measurements are invariant under every rotation of the electrode ring and
under the reflection that reverses the numbering, so offset and direction
cannot be fitted from empty-tank data (only the FE discretisation breaks the
symmetry, by tiny amounts; :func:`jaxeit.realdata.calibrate.fit_geometry`
shows it). Only the electrode geometry *relative to something else* is
identifiable: relative to a known inclusion (KTC2023 truth images, KIT4
photos). Fits of that kind are in :mod:`jaxeit.realdata.ktc` and
``benchmarks/real_data.py``; the findings are recorded below.

Findings (benchmarks/results/real_data.md)
------------------------------------------
* KTC2023: with the truth image read as row 0 = top (+y), column = +x (the
  organisers' ``flipud`` convention), the data fit electrode 1 at π/2
  (top) and counter-clockwise numbering: :data:`KTC_OFFSET`,
  :data:`KTC_DIRECTION`. Equivalent descriptions differ by a symmetry of the
  square (e.g. the transposed image with electrode 1 at 0 and clockwise
  numbering fits identically); only the image/electrode pair is identifiable.
* KIT4: electrode 1 is marked at the top of the photos and electrode 2 to its
  right (clockwise seen from above); the reconstructions put the inclusions
  where the photos show them with electrode 1 at π/2 and clockwise numbering:
  :data:`KIT4_OFFSET`, :data:`KIT4_DIRECTION` (photo frame: x right, y up).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..io.kit4 import KIT4_ELECTRODE_WIDTH, KIT4_N_ELECTRODES, KIT4_RADIUS
from ..io.ktc import KTC_ELECTRODE_WIDTH, KTC_N_ELECTRODES, KTC_RADIUS
from ..mesh import Mesh, disk
from ..protocol import Protocol

__all__ = ["kit4_mesh", "ktc_mesh", "tank_mesh", "electrode_permutation", "permute_protocol",
           "relabel_electrodes", "electrode_angles", "KIT4_OFFSET", "KIT4_DIRECTION", "KTC_OFFSET",
           "KTC_DIRECTION", "DIRECTIONS"]

DIRECTIONS = ("ccw", "cw")

#: fitted electrode-1 angle (rad) and numbering direction of KIT4 in the photo frame
KIT4_OFFSET = math.pi / 2
KIT4_DIRECTION = "cw"
#: fitted electrode-1 angle (rad) and numbering direction of KTC2023 in the truth-image frame
KTC_OFFSET = math.pi / 2
KTC_DIRECTION = "ccw"


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'ccw' (counter-clockwise) or 'cw' (clockwise), got {direction!r}")
    return direction


def electrode_permutation(n_electrodes: int, direction: str = "ccw", shift: int = 0) -> np.ndarray:
    """(L,) int mesh electrode index of each data electrode.

    Data electrode k sits on mesh electrode ``perm[k] = (s·k + shift) mod L``
    with s = +1 for ``"ccw"`` (same direction as the mesh) and −1 for ``"cw"``.
    ``shift`` rotates the labels by whole electrode pitches.
    """
    _check_direction(direction)
    k = np.arange(int(n_electrodes))
    sign = 1 if direction == "ccw" else -1
    return np.mod(sign * k + int(shift), int(n_electrodes))


def electrode_angles(n_electrodes: int, offset: float = 0.0, direction: str = "ccw") -> np.ndarray:
    """(L,) centre angle of data electrode k: ``offset ± 2πk/L`` (+ for ccw), wrapped to [0, 2π)."""
    sign = 1.0 if _check_direction(direction) == "ccw" else -1.0
    return np.mod(offset + sign * 2 * np.pi * np.arange(n_electrodes) / n_electrodes, 2 * np.pi)


def permute_protocol(protocol: Protocol, perm) -> Protocol:
    """The protocol with data electrode k moved to mesh electrode ``perm[k]``.

    Currents and measurement weights are scattered to the new columns, so the
    returned protocol, used with a mesh in the mesh's own numbering, measures
    what ``protocol`` measured with the data's numbering.
    """
    perm = np.asarray(perm)
    n = protocol.n_electrodes
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"perm must be a permutation of 0..{n - 1}, got {perm.tolist()}")
    cur = np.zeros_like(protocol.currents)
    meas = np.zeros_like(protocol.measurements)
    cur[:, perm] = protocol.currents
    meas[:, perm] = protocol.measurements
    return Protocol(cur, meas, protocol.pattern)


def relabel_electrodes(mesh: Mesh, perm) -> Mesh:
    """The mesh with its electrodes renumbered: new electrode k is old electrode ``perm[k]``."""
    perm = np.asarray(perm)
    n = mesh.n_electrodes
    if perm.shape != (n,) or not np.array_equal(np.sort(perm), np.arange(n)):
        raise ValueError(f"perm must be a permutation of 0..{n - 1}, got {perm.tolist()}")
    inv = np.empty(n, np.int64)
    inv[perm] = np.arange(n)
    if mesh.has_electrode_edges:
        return Mesh.from_arrays(mesh.nodes, mesh.triangles, electrode_edges=mesh.electrode_edges,
                                edge_electrode=inv[mesh.edge_electrode], orient=False)
    return Mesh.from_arrays(mesh.nodes, mesh.triangles, electrode_nodes=mesh.electrode_nodes[perm],
                            ref_node=mesh.ref_node, orient=False)


def tank_mesh(radius: float, n_electrodes: int, electrode_width: float, *, h: float, offset: float = 0.0,
              direction: str = "ccw", edge_refinement: float = 0.3) -> Mesh:
    """A disk tank mesh whose electrode k is centred at ``offset ± 2πk/L`` (``direction``)."""
    mesh = disk(radius, n_electrodes, electrode_width, h=h, offset=offset, edge_refinement=edge_refinement)
    if _check_direction(direction) == "cw":
        mesh = relabel_electrodes(mesh, electrode_permutation(n_electrodes, "cw"))
    return mesh


def kit4_mesh(h: float = 0.01, offset: float = KIT4_OFFSET, direction: str = KIT4_DIRECTION, **kw) -> Mesh:
    """KIT4 tank: radius 0.14 m, 16 electrodes 0.025 m wide; default geometry = the fitted one.

    ``h`` is the target element size (m); 0.01 gives ≈ 1.3k nodes.
    """
    return tank_mesh(KIT4_RADIUS, KIT4_N_ELECTRODES, KIT4_ELECTRODE_WIDTH, h=h, offset=offset,
                     direction=direction, **kw)


def ktc_mesh(h: float = 0.008, offset: float = KTC_OFFSET, direction: str = KTC_DIRECTION, **kw) -> Mesh:
    """KTC2023 tank: radius 0.115 m, 32 electrodes 11.29 mm wide; default geometry = the fitted one.

    Built once per process and arguments (a mesh is immutable), so the reconstruction, the
    segmenter's inputs and the calibration share it."""
    return _ktc_mesh(float(h), float(offset), direction, tuple(sorted(kw.items())))


@functools.lru_cache(maxsize=8)
def _ktc_mesh(h: float, offset: float, direction: str, kw: tuple) -> Mesh:
    return tank_mesh(KTC_RADIUS, KTC_N_ELECTRODES, KTC_ELECTRODE_WIDTH, h=h, offset=offset,
                     direction=direction, **dict(kw))
