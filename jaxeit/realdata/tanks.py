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
           "KTC_DIRECTION", "DIRECTIONS", "stretch_electrodes"]

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


def stretch_electrodes(mesh: Mesh, stretches, *, band: float = 0.02) -> Mesh:
    """The disk mesh with electrode k's arc widened by the factor 1 + ``stretches[k]`` about its centre.

    Real electrodes conduct over an effective area that differs from the drawn one (partial contact,
    corrosion, a meniscus); :func:`jaxeit.realdata.calibrate.fit_electrode_widths` fits these factors
    to an empty tank. The mesh keeps its topology: nodes within ``band`` (m) of the wall turn about the
    centre, by the full stretch on the electrode and tapering linearly to nothing halfway to the next
    electrode and at depth ``band``, so a mesh of the same connectivity serves every width.

    Args:
        mesh: a disk mesh centred at the origin (:func:`tank_mesh`), with electrodes.
        stretches: (L,) relative width changes, each in (−1, ·): 0.2 widens electrode k by 20 %; the
            widened arc must stay clear of the neighbours' (the largest allowed is printed on error).
        band: depth (m) of the deformed layer at the wall.

    Returns:
        A new :class:`Mesh` (same triangles and electrode edges).
    """
    stretches = np.asarray(stretches, np.float64)
    L = mesh.n_electrodes
    if stretches.shape != (L,) or not np.all(np.isfinite(stretches)):
        raise ValueError(f"stretches must be {L} finite numbers (one per electrode), got shape {stretches.shape}")
    nodes = np.asarray(mesh.nodes, np.float64)
    r = np.hypot(nodes[:, 0], nodes[:, 1])
    wall = r[np.unique(mesh.electrode_edges)]              # the electrodes' radii: all the tank's radius
    if wall.size == 0 or np.ptp(wall) > 1e-6 * wall.max():
        raise ValueError("stretch_electrodes needs a disk mesh centred at the origin with complete electrodes "
                         "(tank_mesh, kit4_mesh, ktc_mesh)")
    theta = np.arctan2(nodes[:, 1], nodes[:, 0])
    centres, half = np.empty(L), np.empty(L)
    for k in range(L):
        a = theta[np.unique(mesh.electrode_edges[mesh.edge_electrode == k])]
        centres[k] = np.angle(np.mean(np.exp(1j * a)))
        half[k] = np.max(np.abs(np.angle(np.exp(1j * (a - centres[k])))))
    gaps = np.abs(np.angle(np.exp(1j * (centres[:, None] - centres[None, :])))) + np.diag(np.full(L, np.inf))
    reach = gaps.min(1) / 2                                 # halfway to the nearest electrode
    limit = 0.9 * (reach - half) / half
    if np.any(stretches <= -1) or np.any(stretches >= limit):
        k = int(np.argmax((stretches <= -1) | (stretches >= limit)))
        raise ValueError(f"stretches[{k}] = {stretches[k]:.3g} is outside (-1, {limit[k]:.3g}): an electrode "
                         "would vanish or reach its neighbour's")
    depth = np.clip((r - (wall.max() - band)) / band, 0.0, 1.0)
    turn = np.zeros_like(theta)
    for k in range(L):
        d = np.angle(np.exp(1j * (theta - centres[k])))
        taper = np.clip((reach[k] - np.abs(d)) / (reach[k] - half[k]), 0.0, 1.0)
        turn += stretches[k] * np.clip(d, -half[k], half[k]) * taper
    turn *= depth
    moved = nodes.copy()                                  # nodes that do not turn keep their exact coordinates
    on = turn != 0
    t = theta[on] + turn[on]
    moved[on] = np.stack([r[on] * np.cos(t), r[on] * np.sin(t)], axis=1)
    return Mesh(moved, mesh.triangles, mesh.electrode_edges, mesh.edge_electrode, mesh.electrode_nodes,
                mesh.ref_node)
