"""Triangular meshes with electrodes, and their generators.

A :class:`Mesh` holds P1 triangles (counter-clockwise), the boundary edges
covered by each electrode (for the complete electrode model) and one node per
electrode (for the point-electrode model of pyEIT). It is immutable and hashes
by identity, and it is registered as a pytree with no leaves, so it can be
passed through ``jax.jit`` as a static argument.

Generators (:func:`disk`, :func:`ellipse`, :func:`thorax`) use gmsh. Electrode
ends are mesh vertices and the mesh is refined towards them, where the CEM
current density is singular.

Lengths are in the caller's units (metres for the real tanks, the unit radius
for the studies of the papers); coordinates are float64.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from .content_hash import ContentHashed

__all__ = [
    "Mesh",
    "disk",
    "ellipse",
    "thorax",
    "from_outline",
    "from_pyeit",
    "from_meshio",
    "MESH_CACHE_ENV",
    "cache_path",
    "cached",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Mesh(ContentHashed):
    """A 2D triangular mesh with electrodes.

    Attributes:
        nodes: (N, 2) float64 node coordinates.
        triangles: (E, 3) int32 node indices, counter-clockwise.
        electrode_edges: (K, 2) int32 node pairs of the boundary edges under
            the electrodes (empty for point-electrode meshes).
        edge_electrode: (K,) int32 electrode index (0-based) of each edge.
        electrode_nodes: (L,) int32 one node per electrode: the node nearest to
            the electrode centre; used by the point-electrode model.
        ref_node: int node grounded by the point-electrode model (pyEIT's
            ``ref_node``); not an electrode node.

    Construct through the generators, :meth:`from_arrays`, :func:`from_pyeit`
    or :func:`from_meshio`. The constructor validates everything the forward
    model relies on and raises a ``ValueError`` naming the first offending item
    and the fix: indices that are not whole numbers or out of range (never
    rounded), NaN/inf coordinates, inverted or degenerate triangles, repeated
    triangles or nodes, an edge of more than two triangles, overlapping
    (tangled or folded) neighbours, a pinched boundary node, a second
    disconnected part, and electrode edges that are not boundary edges, belong
    to two electrodes or do not form one contiguous piece per electrode.
    Nodes used by no triangle are removed with a warning (indices renumbered).
    Validation is vectorised: about 30 ms at 20k nodes.
    """

    nodes: np.ndarray
    triangles: np.ndarray
    electrode_edges: np.ndarray
    edge_electrode: np.ndarray
    electrode_nodes: np.ndarray
    ref_node: int = 0

    def __post_init__(self):
        nodes = _coordinates(self.nodes)
        n = len(nodes)
        tri = _indices(self.triangles, "triangles", 3, n)
        if len(tri) == 0:
            raise ValueError("a mesh needs at least one triangle; give triangles as an (E, 3) array of node indices")
        edges = _indices(self.electrode_edges, "electrode_edges", 2, n)
        edge_el = _indices(self.edge_electrode, "edge_electrode", None, None)
        el_nodes = _indices(self.electrode_nodes, "electrode_nodes", None, n)
        ref = _indices(np.reshape(self.ref_node, -1), "ref_node", None, n)
        if ref.shape != (1,):
            raise ValueError(f"ref_node must be one node index, got {self.ref_node!r}")
        nodes, tri, edges, el_nodes, ref = _drop_unused_nodes(nodes, tri, edges, el_nodes, ref)
        for name, value in [("nodes", nodes), ("triangles", tri.astype(np.int32)),
                            ("electrode_edges", edges.astype(np.int32)),
                            ("edge_electrode", edge_el.astype(np.int32)),
                            ("electrode_nodes", el_nodes.astype(np.int32))]:
            value = np.ascontiguousarray(value)
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "ref_node", int(ref[0]))
        self._validate()

    # -- validation -----------------------------------------------------------------
    def _validate(self):
        """Check the topology and geometry (vectorised numpy; ~10 ms at 20k nodes).

        Raises ``ValueError`` naming the first offending item: a degenerate or
        clockwise triangle, a repeated triangle or node, an edge shared by more
        than two triangles, neighbouring triangles that overlap (a tangled or
        folded mesh), a pinched boundary node, a second connected part, or an
        electrode whose edges are not boundary edges, are shared with another
        electrode or do not form one contiguous piece.
        """
        nodes, tri = self.nodes, self.triangles
        area2 = _signed_area2(nodes, tri)
        scale = float(np.mean(np.ptp(nodes, axis=0))) ** 2
        bad = np.flatnonzero(area2 <= 1e-14 * scale)
        if bad.size:
            raise ValueError(
                f"mesh has {bad.size} inverted or degenerate triangles (first: {bad[:5].tolist()}, nodes "
                f"{tri[bad[0]].tolist()}); triangles must be counter-clockwise with positive area: use "
                "Mesh.from_arrays(..., orient=True) to reorient, or remesh"
            )
        _check_duplicate_nodes(nodes, scale)
        topo = _Topology(nodes, tri)
        topo.check()
        topo.check_connected()
        self._validate_electrodes(topo)

    def _validate_electrodes(self, topo: "_Topology"):
        n = len(self.nodes)
        edges, edge_el, el_nodes = self.electrode_edges, self.edge_electrode, self.electrode_nodes
        if len(edge_el) != len(edges):
            raise ValueError(f"edge_electrode has {len(edge_el)} entries for {len(edges)} electrode edges: "
                             "give one electrode index per edge")
        n_el = len(el_nodes)
        if n_el == 0:
            raise ValueError("a mesh needs at least one electrode: give electrode_edges (CEM) or "
                             "electrode_nodes (point electrodes)")
        if len(edge_el) and (edge_el.min() < 0 or edge_el.max() >= n_el):
            i = int(np.flatnonzero((edge_el < 0) | (edge_el >= n_el))[0])
            raise ValueError(f"edge_electrode[{i}] = {int(edge_el[i])} is not an electrode index in "
                             f"[0, {n_el}): there are {n_el} electrode nodes")
        if len(edges):
            present = np.bincount(edge_el, minlength=n_el) > 0
            if not present.all():
                raise ValueError(f"electrodes {np.flatnonzero(~present).tolist()} have no boundary edges: "
                                 "every electrode needs at least one edge (or drop its electrode node)")
            _check_electrode_edges(edges, edge_el, topo, n)
        uniq, counts = np.unique(el_nodes, return_counts=True)
        if np.any(counts > 1):
            node = int(uniq[counts > 1][0])
            which = np.flatnonzero(el_nodes == node).tolist()
            raise ValueError(f"electrodes {which} share the electrode node {node}: give each electrode its own node")
        if self.ref_node in set(el_nodes.tolist()):
            raise ValueError(f"ref_node {self.ref_node} is an electrode node; the reference (grounded) node must "
                             "be another node")

    # -- constructors ---------------------------------------------------------------
    @classmethod
    def from_arrays(cls, nodes, triangles, *, electrode_edges=None, edge_electrode=None,
                    electrode_nodes=None, ref_node=None, orient=True) -> "Mesh":
        """Build a mesh from arrays, validated like any :class:`Mesh`.

        Args:
            nodes: (N, 2) or (N, 3) coordinates (a third column is dropped).
            triangles: (E, 3) integer node indices (0-based). Float arrays are
                accepted only when every entry is a whole number (never rounded).
            electrode_edges, edge_electrode: (K, 2) boundary edges under the
                electrodes and (K,) their electrode index (CEM meshes).
            electrode_nodes: (L,) one node per electrode; defaults to the
                endpoint nearest each electrode's mid-point.
            ref_node: the grounded node of the point-electrode model; defaults to
                pyEIT's rule (the first node index that is not an electrode node).
            orient: flip clockwise triangles. This only fixes the order in which
                a triangle lists its nodes: a tangled mesh, where a flipped
                triangle overlaps its neighbours, is rejected with ``ValueError``.

        Nodes used by no triangle are removed (with a warning) and the indices
        renumbered.
        """
        nodes = _coordinates(nodes, allow_3d=True)
        tri = _indices(triangles, "triangles", 3, len(nodes))
        if len(tri) == 0:
            raise ValueError("a mesh needs at least one triangle; give triangles as an (E, 3) array of node indices")
        if orient:
            flip = _signed_area2(nodes, tri) < 0
            if flip.any():
                tri = tri.copy()
                tri[flip] = tri[flip][:, [0, 2, 1]]
                _Topology(nodes, tri).check(flipped=flip)
        edges = _indices(np.zeros((0, 2), np.int64) if electrode_edges is None else electrode_edges,
                         "electrode_edges", 2, len(nodes))
        edge_el = _indices(np.zeros((0,), np.int64) if edge_electrode is None else edge_electrode,
                           "edge_electrode", None, None)
        if len(edge_el) != len(edges):
            raise ValueError(f"edge_electrode has {len(edge_el)} entries for {len(edges)} electrode edges: "
                             "give one electrode index per edge")
        if electrode_nodes is None:
            if len(edges) == 0:
                raise ValueError("give electrode_edges (CEM) or electrode_nodes (point electrodes)")
            if edge_el.min() < 0:
                raise ValueError(f"edge_electrode values must be >= 0, got {int(edge_el.min())}")
            electrode_nodes = _electrode_centre_nodes(nodes, edges, edge_el)
        electrode_nodes = _indices(electrode_nodes, "electrode_nodes", None, len(nodes))
        if ref_node is None:
            free = np.zeros(len(nodes), bool)
            free[tri.reshape(-1)] = True
            free[electrode_nodes] = False
            candidates = np.flatnonzero(free)
            if candidates.size == 0:
                raise ValueError("every mesh node is an electrode node: no node is left to ground (ref_node)")
            ref_node = int(candidates[0])
        return cls(nodes, tri, edges, edge_el, electrode_nodes, ref_node)

    # -- geometry -------------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    @property
    def n_elements(self) -> int:
        return len(self.triangles)

    @property
    def n_electrodes(self) -> int:
        return len(self.electrode_nodes)

    @property
    def has_electrode_edges(self) -> bool:
        """True when the mesh resolves electrode surfaces (needed by the CEM)."""
        return len(self.electrode_edges) > 0

    def areas(self) -> np.ndarray:
        """(E,) float64 triangle areas."""
        return 0.5 * _signed_area2(self.nodes, self.triangles)

    def centroids(self) -> np.ndarray:
        """(E, 2) float64 triangle centroids."""
        return self.nodes[self.triangles].mean(axis=1)

    def edges(self) -> np.ndarray:
        """(n_edges, 2) int unique undirected edges (sorted node pairs)."""
        e = np.sort(self.triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        return np.unique(e, axis=0)

    def mean_edge_length(self) -> float:
        """Mean length of the unique mesh edges (float, caller's units)."""
        e = self.edges()
        return float(np.mean(np.linalg.norm(self.nodes[e[:, 0]] - self.nodes[e[:, 1]], axis=1)))

    def boundary_edges(self) -> np.ndarray:
        """(B, 2) directed boundary edges, oriented so the domain lies on the left."""
        e = self.triangles[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
        key = np.sort(e, axis=1)
        _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
        return e[counts[inv.reshape(-1)] == 1]

    def boundary_loop(self) -> np.ndarray:
        """(B,) node indices of the outer boundary, in counter-clockwise order."""
        edges = self.boundary_edges()
        nxt = dict(zip(edges[:, 0].tolist(), edges[:, 1].tolist()))
        start = int(edges[0, 0])
        loop, node = [start], nxt[start]
        while node != start and len(loop) <= len(edges):
            loop.append(node)
            node = nxt[node]
        return np.asarray(loop)

    def electrode_lengths(self) -> np.ndarray:
        """(L,) float64 length of each electrode (sum of its edge lengths)."""
        length = np.linalg.norm(self.nodes[self.electrode_edges[:, 0]] - self.nodes[self.electrode_edges[:, 1]], axis=1)
        return np.bincount(self.edge_electrode, weights=length, minlength=self.n_electrodes)

    def electrode_centres(self) -> np.ndarray:
        """(L, 2) float64 electrode centres (edge mid-points weighted by length), or node positions."""
        if not self.has_electrode_edges:
            return self.nodes[self.electrode_nodes]
        a, b = self.nodes[self.electrode_edges[:, 0]], self.nodes[self.electrode_edges[:, 1]]
        w = np.linalg.norm(a - b, axis=1)
        mid = 0.5 * (a + b)
        tot = np.bincount(self.edge_electrode, weights=w, minlength=self.n_electrodes)
        return np.stack([np.bincount(self.edge_electrode, weights=w * mid[:, i], minlength=self.n_electrodes)
                         for i in range(2)], axis=1) / tot[:, None]

    def quality(self) -> dict:
        """Shape-quality summary: min angle (degrees), and the radius ratio 2·r_in/r_out (1 = equilateral)."""
        p = self.nodes[self.triangles]
        a = np.linalg.norm(p[:, 1] - p[:, 2], axis=1)
        b = np.linalg.norm(p[:, 2] - p[:, 0], axis=1)
        c = np.linalg.norm(p[:, 0] - p[:, 1], axis=1)
        area = self.areas()
        s = 0.5 * (a + b + c)
        ratio = 2 * (area / s) / (a * b * c / (4 * area))
        angles = np.degrees(np.arccos(np.clip(np.stack([
            (b**2 + c**2 - a**2) / (2 * b * c), (a**2 + c**2 - b**2) / (2 * a * c),
            (a**2 + b**2 - c**2) / (2 * a * b)]), -1, 1)))
        return {"min_angle_deg": float(angles.min()), "min_radius_ratio": float(ratio.min()),
                "mean_radius_ratio": float(ratio.mean()), "n_nodes": self.n_nodes,
                "n_elements": self.n_elements}

    # -- conversion -----------------------------------------------------------------
    def to_meshio(self):
        """A ``meshio.Mesh`` that meshio writes in gmsh 2.2 / 4.1, VTU or XDMF and :func:`from_meshio` reads back.

        Cells: ``triangle`` (E, 3), then one ``line`` block per electrode
        holding its boundary edges. Cell data (int32): ``gmsh:physical``
        (electrode k is physical group k + 1, the triangles group L + 1) and
        ``gmsh:geometrical``. Point data: ``electrode_node`` (N,) float64, the
        electrode whose point-electrode node this is, else -1; ``is_ref_node``
        (N,) float64, 1 at ``ref_node``; ``gmsh:dim_tags`` (N, 2) int32, the
        entity blocks gmsh 4.1 needs, chosen so that gmsh 4.1 keeps the node
        order. Field data names the physical groups (``electrode_1``, …, ``domain``).

        The round trips gmsh 2.2 and 4.1 (binary, meshio's default), VTU and
        XDMF (needs h5py) give back identical arrays (tested). Data arrays are
        reals because gmsh stores data as reals. meshio 5.3's ASCII gmsh
        writer garbles data arrays under numpy 2: write gmsh files binary.
        """
        import meshio

        n_el = self.n_electrodes
        domain = n_el + 1
        lines = self.has_electrode_edges
        cells = [("triangle", self.triangles)]
        phys = [np.full(self.n_elements, domain, np.int32)]
        geo = [np.full(self.n_elements, 1, np.int32)]
        for k in range(n_el if lines else 0):
            e = self.electrode_edges[self.edge_electrode == k]
            cells.append(("line", e))
            phys.append(np.full(len(e), k + 1, np.int32))
            geo.append(np.full(len(e), k + 1, np.int32))
        # gmsh 4.1 lists nodes entity by entity, in (dim, tag) order, and needs a node in every entity:
        # nodes 0..L-1 stand for the L curve entities, the rest for the surface, so the order is kept
        dim_tags = np.tile(np.array([2, 1], np.int32), (self.n_nodes, 1))
        if lines:
            dim_tags[:n_el] = np.column_stack([np.ones(n_el, np.int32), np.arange(1, n_el + 1, dtype=np.int32)])
        el_node = np.full(self.n_nodes, -1.0)
        el_node[self.electrode_nodes] = np.arange(n_el)
        is_ref = np.zeros(self.n_nodes)
        is_ref[self.ref_node] = 1.0
        field = {f"electrode_{k + 1}": np.array([k + 1, 1]) for k in range(n_el if lines else 0)}
        field["domain"] = np.array([domain, 2])
        points = np.column_stack([self.nodes, np.zeros(self.n_nodes)])
        return meshio.Mesh(points, cells, cell_data={"gmsh:physical": phys, "gmsh:geometrical": geo},
                           field_data=field,
                           point_data={"electrode_node": el_node, "is_ref_node": is_ref, "gmsh:dim_tags": dim_tags})

    def save(self, path) -> Path:
        """Write the mesh to an ``.npz`` file atomically (all arrays, exactly); reload with :meth:`load`.

        Lets a mesh made where gmsh is installed be used where it is not (e.g. an accelerator host).
        """
        from .io_utils import atomic_path

        with atomic_path(path) as tmp:
            np.savez(tmp, nodes=self.nodes, triangles=self.triangles, electrode_edges=self.electrode_edges,
                     edge_electrode=self.edge_electrode, electrode_nodes=self.electrode_nodes,
                     ref_node=np.asarray(self.ref_node))
        return Path(path)

    @classmethod
    def load(cls, path) -> "Mesh":
        """Read a mesh written by :meth:`save` (validated like any other mesh).

        Raises:
            FileNotFoundError: if ``path`` does not exist.
            ValueError: if the file is not a readable ``.npz`` (truncated,
                corrupt, another format), lacks a mesh array, or holds an
                invalid mesh; the message names the file.
        """
        import zipfile

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"mesh file {path} does not exist; write one with Mesh.save")
        keys = ("nodes", "triangles", "electrode_edges", "edge_electrode", "electrode_nodes", "ref_node")
        try:
            with np.load(path, allow_pickle=False) as z:
                if not hasattr(z, "files"):
                    raise ValueError("it holds a single array, not a mesh archive")
                missing = [k for k in keys if k not in z.files]
                if missing:
                    raise ValueError(f"it lacks the array(s) {missing} (it holds {sorted(z.files)})")
                arrays = {k: z[k] for k in keys}
        except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"cannot read a mesh from {path}: {e} ({type(e).__name__}); the file may be "
                             "truncated or of another kind: write it again with Mesh.save") from e
        try:
            return cls(**arrays)
        except ValueError as e:
            raise ValueError(f"{path} holds an invalid mesh: {e}") from e

    def with_electrode_nodes(self, electrode_nodes, ref_node=None) -> "Mesh":
        """The same mesh with other point-electrode nodes (e.g. pyEIT's ``el_pos``)."""
        return Mesh.from_arrays(self.nodes, self.triangles, electrode_edges=self.electrode_edges,
                                edge_electrode=self.edge_electrode, electrode_nodes=electrode_nodes,
                                ref_node=ref_node, orient=False)

    def __repr__(self):
        kind = "CEM" if self.has_electrode_edges else "point"
        return (f"Mesh(n_nodes={self.n_nodes}, n_elements={self.n_elements}, "
                f"n_electrodes={self.n_electrodes}, electrodes={kind})")


jax.tree_util.register_pytree_node(Mesh, lambda m: ((), m), lambda m, _: m)


#: Environment variable naming a folder of saved meshes (see :func:`cached`).
MESH_CACHE_ENV = "JAXEIT_MESH_CACHE"


def cache_path(name: str, folder=None) -> Path | None:
    """``<folder>/<name>.npz`` with ``folder`` defaulting to ``$JAXEIT_MESH_CACHE`` (None if neither is set)."""
    folder = folder if folder is not None else os.environ.get(MESH_CACHE_ENV)
    return Path(folder) / f"{name}.npz" if folder else None


def cached(name: str, build: Callable[[], "Mesh"], folder=None) -> "Mesh":
    """``build()``, or the mesh saved under ``name`` in the cache folder (``folder`` or ``$JAXEIT_MESH_CACHE``).

    A built mesh is saved there (:meth:`Mesh.save`), so a machine without gmsh or pyeit (e.g. an
    accelerator host) can use meshes made elsewhere. Without a cache folder this is just ``build()``.
    """
    path = cache_path(name, folder)
    if path is not None and path.exists():
        return Mesh.load(path)
    mesh = build()
    if path is not None:
        mesh.save(path)
    return mesh


def _signed_area2(nodes: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """(E,) twice the signed triangle areas (positive when counter-clockwise)."""
    x, y = nodes[:, 0], nodes[:, 1]
    x0, y0 = x[tri[:, 0]], y[tri[:, 0]]
    return (x[tri[:, 1]] - x0) * (y[tri[:, 2]] - y0) - (y[tri[:, 1]] - y0) * (x[tri[:, 2]] - x0)


# -- validation helpers (vectorised; used by Mesh.__post_init__ and Mesh.from_arrays) ----------

def _coordinates(value, allow_3d: bool = False) -> np.ndarray:
    """(N, 2) float64 finite node coordinates (a third column is dropped when ``allow_3d``)."""
    try:
        nodes = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"nodes must be an (N, 2) array of numbers: {e}") from None
    if nodes.ndim != 2 or nodes.shape[1] not in ((2, 3) if allow_3d else (2,)):
        raise ValueError(f"nodes must have shape (N, 2){' or (N, 3)' if allow_3d else ''}, got {nodes.shape}")
    nodes = np.ascontiguousarray(nodes[:, :2])
    bad = ~np.isfinite(nodes).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} nodes have NaN or inf coordinates (first: node {i} at "
                         f"{nodes[i].tolist()}); give finite coordinates")
    if len(nodes) < 3:
        raise ValueError(f"a mesh needs at least 3 nodes, got {len(nodes)}")
    return nodes


def _indices(value, name: str, width: int | None, n: int | None) -> np.ndarray:
    """``value`` as an int64 index array of shape (-1, width) (or (-1,) when ``width`` is None).

    Integer arrays pass; float arrays only when every entry is a whole number
    (indices are never rounded). With ``n`` given, every index must lie in [0, n).
    """
    arr = np.asarray(value)
    if arr.size == 0:
        arr = arr.reshape(0, width) if width else arr.reshape(0)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer node indices, got dtype {arr.dtype}")
    if width is not None and (arr.ndim != 2 or arr.shape[1] != width):
        if arr.ndim == 1 and arr.size % width == 0 and name != "triangles":
            arr = arr.reshape(-1, width)
        else:
            raise ValueError(f"{name} must have shape (*, {width}), got {arr.shape}")
    if width is None:
        arr = arr.reshape(-1)
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~(np.isfinite(arr) & (arr == np.round(arr)))
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}{list(pos)} = {float(arr[pos])!r} is not a whole number: indices are never "
                             f"rounded; pass integer node indices (e.g. {name}.astype(int) if they are exact)")
    out = arr.astype(np.int64)
    if n is not None and out.size:
        bad = (out < 0) | (out >= n)
        if bad.any():
            pos = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"{name}{list(pos)} = {int(out[pos])} is not a node index in [0, {n}) "
                             f"({int(bad.sum())} such entries); indices are 0-based (subtract 1 from "
                             "MATLAB-style 1-based indices)")
    return out


def _drop_unused_nodes(nodes, tri, edges, el_nodes, ref):
    """Remove nodes used by no triangle (with a warning) and renumber; electrode and reference
    nodes must be triangle vertices."""
    used = np.zeros(len(nodes), bool)
    used[tri.reshape(-1)] = True
    if used.all():
        return nodes, tri, edges, el_nodes, ref
    for name, idx in [("electrode_edges", edges), ("electrode_nodes", el_nodes), ("ref_node", ref)]:
        off = ~used[idx]
        if off.any():
            pos = tuple(int(i) for i in np.argwhere(off)[0])
            raise ValueError(f"{name}{list(pos) if name != 'ref_node' else ''} = {int(idx[pos])} is a node of no "
                             "triangle: electrode and reference nodes must be mesh vertices")
    unused = np.flatnonzero(~used)
    warnings.warn(f"mesh: removed {unused.size} node(s) used by no triangle (first: {unused[:5].tolist()}); "
                  "node indices are renumbered (Mesh.nodes holds the kept nodes in their order)",
                  stacklevel=3)
    remap = np.cumsum(used) - 1
    return nodes[used], remap[tri], remap[edges], remap[el_nodes], remap[ref]


def _check_duplicate_triangles(tri, n):
    """Reject repeated triangles (any node order)."""
    st = np.sort(tri, axis=1)
    if n < 2**21:
        key = (st[:, 0] * n + st[:, 1]) * n + st[:, 2]
        order = np.argsort(key, kind="stable")
        dup = np.flatnonzero(key[order][1:] == key[order][:-1])
    else:
        order = np.lexsort(st.T[::-1])
        dup = np.flatnonzero(np.all(st[order][1:] == st[order][:-1], axis=1))
    if dup.size:
        a, b = sorted((int(order[dup[0]]), int(order[dup[0] + 1])))
        raise ValueError(f"triangles {a} and {b} have the same nodes {tri[a].tolist()} ({dup.size} repeated "
                         "triangles): list each triangle once")


def _check_duplicate_nodes(nodes, scale):
    """Reject two nodes at the same position (within 1e-10 of the mesh size)."""
    tol = 1e-10 * math.sqrt(scale)
    q = np.round(nodes / tol) if tol > 0 else nodes
    order = np.lexsort((q[:, 1], q[:, 0]))
    qs = q[order]
    same = np.flatnonzero((qs[1:, 0] == qs[:-1, 0]) & (qs[1:, 1] == qs[:-1, 1]))
    if same.size:
        a, b = sorted((int(order[same[0]]), int(order[same[0] + 1])))
        raise ValueError(f"nodes {a} and {b} are at the same position {nodes[a].tolist()} ({same.size} repeated "
                         f"nodes): merge them (use one index for both in the triangles)")


class _Topology:
    """Edges of a triangle mesh as sparse matrices (built in O(E), no sorting).

    ``directed`` (N, N) CSR: entry (a, b) counts the triangles whose boundary
    runs a → b. In a valid mesh every entry is 1, an interior edge appears
    once each way and a boundary edge once. ``boundary`` (B, 2) directed
    boundary edges (domain on the left).
    """

    def __init__(self, nodes, tri):
        from scipy.sparse import csr_matrix

        self.nodes, self.tri, self.n = nodes, tri, len(nodes)
        a = tri.reshape(-1)
        b = tri[:, [1, 2, 0]].reshape(-1)
        self.directed = csr_matrix((np.ones(len(a), np.int32), (a, b)), shape=(self.n, self.n))
        self.directed.sum_duplicates()
        self.boundary = None

    def check(self, flipped=None):
        """Raise ValueError for non-manifold edges, overlapping neighbours, pinched nodes and folds."""
        n, d = self.n, self.directed
        if d.data.max(initial=0) > 1:
            _check_duplicate_triangles(self.tri, n)
            coo = d.tocoo()
            i = int(np.flatnonzero(coo.data > 1)[0])
            a, b = int(coo.row[i]), int(coo.col[i])
            on = np.flatnonzero(np.isin(self.tri, [a, b]).sum(axis=1) == 2)
            if len(on) > 2:
                raise ValueError(f"edge ({a}, {b}) belongs to {len(on)} triangles {on[:6].tolist()}: an edge may be "
                                 "shared by at most two triangles; remove the overlapping triangles")
            t, u = on.tolist()
            if flipped is not None and (flipped[t] or flipped[u]):
                raise ValueError(
                    f"orient=True flipped {int(np.count_nonzero(flipped))} clockwise triangles (first: "
                    f"{np.flatnonzero(flipped)[:5].tolist()}), but the mesh is tangled, not just listed clockwise: "
                    f"triangles {t} and {u} lie on the same side of their edge ({a}, {b}) and overlap; move the "
                    "misplaced nodes or remesh")
            raise ValueError(f"triangles {t} and {u} lie on the same side of their common edge ({a}, {b}) and "
                             "overlap: the mesh is tangled; move the misplaced nodes or remesh")
        # a directed edge whose reverse is missing is a boundary edge
        bnd = (d - d.T).tocoo()
        keep = bnd.data > 0
        self.boundary = np.column_stack([bnd.row[keep], bnd.col[keep]]).astype(np.int64)
        # each boundary node has one boundary edge in and one out (else the boundary is pinched there)
        out_deg = np.bincount(self.boundary[:, 0], minlength=n)
        in_deg = np.bincount(self.boundary[:, 1], minlength=n)
        pinched = np.flatnonzero((out_deg > 1) | (in_deg > 1) | (out_deg != in_deg))
        if pinched.size:
            raise ValueError(f"boundary node {int(pinched[0])} joins {int(out_deg[pinched[0]])} boundary loops "
                             f"({pinched.size} such nodes): the domain is pinched there (triangles meet only at "
                             "a node); connect the parts through an edge or remesh")
        # the corner angles at a node add up to 2π (interior) or to the boundary angle (else folded)
        tri, x = self.tri, self.nodes
        p0, p1, p2 = x[tri[:, 0]], x[tri[:, 1]], x[tri[:, 2]]
        total = np.zeros(n)
        for j, (c, u, v) in enumerate([(p0, p1, p2), (p1, p2, p0), (p2, p0, p1)]):
            ux, uy, vx, vy = u[:, 0] - c[:, 0], u[:, 1] - c[:, 1], v[:, 0] - c[:, 0], v[:, 1] - c[:, 1]
            total += np.bincount(tri[:, j], weights=np.arctan2(ux * vy - uy * vx, ux * vx + uy * vy), minlength=n)
        expect = np.full(n, 2 * np.pi)
        b = self.boundary
        if len(b):
            prev = np.empty(n, np.int64)
            prev[b[:, 1]] = b[:, 0]
            node, nxt = b[:, 0], b[:, 1]
            du, dv = x[nxt] - x[node], x[prev[node]] - x[node]
            expect[node] = np.arctan2(du[:, 0] * dv[:, 1] - du[:, 1] * dv[:, 0],
                                      du[:, 0] * dv[:, 0] + du[:, 1] * dv[:, 1]) % (2 * np.pi)
        folded = np.flatnonzero(np.abs(total - expect) > 1e-6)
        if folded.size:
            i = int(folded[0])
            raise ValueError(f"the triangles around node {i} turn {total[i] / np.pi:.3g}π instead of "
                             f"{expect[i] / np.pi:.3g}π ({folded.size} such nodes): the mesh folds over itself "
                             "there; move the misplaced nodes or remesh")

    def check_connected(self):
        from scipy.sparse.csgraph import connected_components

        n_comp, label = connected_components(self.directed, directed=False)
        if n_comp > 1:
            tri = self.tri
            sizes = np.bincount(label[tri[:, 0]], minlength=n_comp)
            small = int(np.argmin(sizes))
            first = int(np.flatnonzero(label[tri[:, 0]] == small)[0])
            raise ValueError(f"the mesh has {n_comp} disconnected parts (triangles per part: {sizes.tolist()}; "
                             f"triangle {first} is in a part of {int(sizes[small])}): the forward problem needs one "
                             "connected domain; keep the part with the electrodes or join the parts")

    def edge_kind(self, edges) -> np.ndarray:
        """(K,) int for undirected ``edges`` (K, 2): 0 not a mesh edge, 1 boundary edge, 2 interior edge."""
        if len(edges) == 0:
            return np.zeros(0, np.int64)
        d = self.directed
        fwd = np.asarray(d[edges[:, 0], edges[:, 1]]).reshape(-1)
        bwd = np.asarray(d[edges[:, 1], edges[:, 0]]).reshape(-1)
        return (fwd > 0).astype(np.int64) + (bwd > 0)


def _check_electrode_edges(edges, edge_el, topo: _Topology, n: int):
    lo, hi = edges.min(axis=1), edges.max(axis=1)
    keys = lo * n + hi
    kind = topo.edge_kind(edges)
    is_edge = kind > 0
    if not is_edge.all():
        i = int(np.flatnonzero(~is_edge)[0])
        raise ValueError(f"electrode_edges[{i}] = {edges[i].tolist()} (electrode {int(edge_el[i])}) is not an edge "
                         f"of any triangle ({int(np.count_nonzero(~is_edge))} such edges): list boundary edges, "
                         "each a pair of neighbouring boundary nodes")
    inner = kind == 2
    if inner.any():
        i = int(np.flatnonzero(inner)[0])
        raise ValueError(f"electrode_edges[{i}] = {edges[i].tolist()} (electrode {int(edge_el[i])}) is an interior "
                         f"edge, shared by two triangles ({int(np.count_nonzero(inner))} such edges): electrodes "
                         "lie on the boundary; list boundary edges only")
    order = np.argsort(keys, kind="stable")
    rep = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if rep.size:
        i, j = int(order[rep[0]]), int(order[rep[0] + 1])
        a, b = int(edge_el[i]), int(edge_el[j])
        what = (f"electrodes {a} and {b} overlap" if a != b else f"it is listed twice for electrode {a}")
        raise ValueError(f"edge {edges[i].tolist()} is electrode_edges[{i}] and [{j}]: {what}; each boundary edge "
                         "may belong to one electrode only")
    # each electrode: one contiguous piece of boundary (a path, not a whole loop)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ids, local = np.unique(edge_el[:, None] * np.int64(n) + edges, return_inverse=True)
    local = local.reshape(-1, 2)
    _, label = connected_components(coo_matrix((np.ones(len(local), np.int8), (local[:, 0], local[:, 1])),
                                               shape=(len(ids), len(ids))), directed=False)
    owner = ids // n
    n_el = int(edge_el.max()) + 1
    pieces = np.bincount(np.unique(owner * len(ids) + label) // len(ids), minlength=n_el)
    split = np.flatnonzero(pieces > 1)
    if split.size:
        k = int(split[0])
        raise ValueError(f"electrode {k} is made of {int(pieces[k])} separate pieces of boundary: each electrode must "
                         "be one contiguous run of boundary edges; give each piece its own electrode index")
    loop = np.flatnonzero(np.bincount(owner, minlength=n_el) == np.bincount(edge_el, minlength=n_el))
    if loop.size:
        k = int(loop[0])
        raise ValueError(f"electrode {k} covers a whole boundary loop: leave a gap between the ends of an electrode")


def _electrode_centre_nodes(nodes, edges, edge_el) -> np.ndarray:
    n_el = int(edge_el.max()) + 1
    out = np.empty(n_el, np.int64)
    for k in range(n_el):
        if not np.any(edge_el == k):
            raise ValueError(f"electrode {k} has no edges in electrode_edges: number electrodes 0..L-1 without gaps")
        ids = np.unique(edges[edge_el == k])
        a, b = nodes[edges[edge_el == k, 0]], nodes[edges[edge_el == k, 1]]
        w = np.linalg.norm(a - b, axis=1)
        centre = (w[:, None] * 0.5 * (a + b)).sum(0) / w.sum()
        out[k] = ids[np.argmin(np.linalg.norm(nodes[ids] - centre, axis=1))]
    return out


def from_pyeit(node, element, el_pos, ref_node=None) -> Mesh:
    """A point-electrode mesh from pyEIT arrays (``mesh.node``, ``mesh.element``, ``mesh.el_pos``).

    ``ref_node`` defaults to pyEIT's rule (node 0, or the first index not in ``el_pos``).
    """
    el_pos = np.asarray(el_pos)
    if ref_node is None:
        ref_node = 0 if 0 not in el_pos else int(np.setdiff1d(np.arange(len(el_pos) + 1), el_pos)[0])
    return Mesh.from_arrays(node, element, electrode_nodes=el_pos, ref_node=ref_node, orient=True)


#: meshio cell types that carry no mesh information for jaxeit (gmsh writes physical points as ``vertex``)
_IGNORED_CELLS = ("vertex",)


def from_meshio(m) -> Mesh:
    """A :class:`Mesh` from a ``meshio.Mesh``: the inverse of :meth:`Mesh.to_meshio`.

    Reads ``triangle`` cells and the ``line`` cells of the electrodes: their
    electrode index is the ``electrode`` cell data, else ``gmsh:physical``
    minus one; lines tagged below 0 (or untagged) are not electrodes.
    Point electrodes come from the point data ``electrode_node`` (or the
    field data of older files), else the node nearest each electrode centre.

    Raises:
        ValueError: no triangles; cells of another kind (quads, second-order
            triangles, 3D cells: the model is P1 triangles only, so they are
            rejected rather than dropped); non-integer tags; or an invalid mesh.
    """
    other = sorted({c.type for c in m.cells} - {"triangle", "line", *_IGNORED_CELLS})
    if other:
        counts = {t: sum(len(c.data) for c in m.cells if c.type == t) for t in other}
        raise ValueError(f"meshio mesh has cells jaxeit does not support: {counts}; the forward model uses P1 "
                         "triangles only: split them into triangles (e.g. gmsh -2 with Mesh.RecombineAll=0 or "
                         "Mesh.SecondOrderLinear/-order 1) or remove them, rather than dropping part of the domain")
    tri = [c.data for c in m.cells if c.type == "triangle"]
    if not tri:
        raise ValueError("meshio mesh has no triangle cells")
    lines, tags = [], []
    key = "electrode" if "electrode" in m.cell_data else ("gmsh:physical" if "gmsh:physical" in m.cell_data else None)
    for i, c in enumerate(m.cells):
        if c.type == "line" and key is not None:
            tag = _indices(m.cell_data[key][i], f"cell_data[{key!r}] of line block {i}", None, None)
            tag = tag if key == "electrode" else tag - 1
            lines.append(c.data[tag >= 0])
            tags.append(tag[tag >= 0])
    edges = np.concatenate(lines) if lines else None
    edge_el = np.concatenate(tags) if tags else None
    if edges is not None and len(edges) == 0:
        edges = edge_el = None
    pd = getattr(m, "point_data", {}) or {}
    fd = getattr(m, "field_data", {}) or {}
    if "electrode_node" in pd:
        flag = _indices(pd["electrode_node"], "point_data['electrode_node']", None, None)
        at = np.flatnonzero(flag >= 0)
        el_nodes = at[np.argsort(flag[at])]
        if not np.array_equal(np.sort(flag[at]), np.arange(len(at))):
            raise ValueError("point_data['electrode_node'] must number the electrode nodes 0..L-1 once each, got "
                             f"{np.sort(flag[at]).tolist()[:10]}")
    else:
        el_nodes = fd.get("electrode_nodes")
    if "is_ref_node" in pd:
        ref_at = np.flatnonzero(np.asarray(pd["is_ref_node"]).reshape(-1) != 0)
        ref = int(ref_at[0]) if ref_at.size == 1 else None
    else:
        ref = fd.get("ref_node")
        ref = None if ref is None else int(np.asarray(ref).reshape(-1)[0])
    return Mesh.from_arrays(m.points[:, :2], np.concatenate(tri), electrode_edges=edges,
                            edge_electrode=edge_el, electrode_nodes=el_nodes, ref_node=ref)


# -----------------------------------------------------------------------------------
# gmsh generators
# -----------------------------------------------------------------------------------

@contextlib.contextmanager
def _gmsh_session():
    import gmsh

    started = not gmsh.isInitialized()
    if started:
        gmsh.initialize(interruptible=False)
    gmsh.option.setNumber("General.Terminal", 0)
    gmsh.option.setNumber("General.Verbosity", 0)
    gmsh.model.add("jaxeit")
    try:
        yield gmsh
    finally:
        gmsh.model.remove()
        if started:
            gmsh.finalize()


#: largest mesh a generator makes without being asked twice (about 8 GB of gmsh memory beyond it)
_MAX_ELEMENTS = 20_000_000


def _positive(name: str, value) -> float:
    """``value`` as a finite positive float, else a ValueError naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def _check_generator(h, edge_refinement, offset, area: float):
    """Check the mesh-size arguments of a generator before gmsh sees them."""
    h = _positive("h (element size)", h)
    _positive("edge_refinement", edge_refinement)
    try:
        if not math.isfinite(float(offset)):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"offset must be a finite angle in radians, got {offset!r}") from None
    estimate = 2.3 * area / h**2  # equilateral triangles of side h
    if estimate > _MAX_ELEMENTS:
        raise ValueError(f"h={h:g} would give about {estimate:.2g} triangles on a domain of area {area:.4g}: "
                         f"use h >= {math.sqrt(2.3 * area / _MAX_ELEMENTS):.3g} (same units as the domain)")


def _check_electrodes(perimeter: float, n_electrodes: int, electrode_width: float):
    if isinstance(n_electrodes, bool) or not isinstance(n_electrodes, (int, np.integer)):
        raise ValueError(f"n_electrodes must be an integer, got {n_electrodes!r}")
    if n_electrodes < 1:
        raise ValueError(f"n_electrodes must be >= 1, got {n_electrodes}")
    electrode_width = _positive("electrode_width", electrode_width)
    if n_electrodes * electrode_width >= perimeter:
        raise ValueError(
            f"{n_electrodes} electrodes of width {electrode_width} overlap on a boundary of length "
            f"{perimeter:.4g}: use at most width {perimeter / n_electrodes:.4g} (leave a gap)"
        )


def from_outline(curve: Callable[[np.ndarray], np.ndarray], *, n_electrodes: int = 16,
                 electrode_width: float = 0.2, h: float = 0.05, offset: float = 0.0,
                 edge_refinement: float = 0.3, centre=(0.0, 0.0), circle_radius: float | None = None,
                 n_samples: int = 4096) -> Mesh:
    """Mesh the region inside a closed counter-clockwise curve, with electrodes on it.

    Args:
        curve: maps parameters ``t`` in [0, 1) (array) to points (len(t), 2),
            counter-clockwise, ``curve(0)`` the point at polar angle 0.
        n_electrodes: L.
        electrode_width: electrode length measured along the boundary.
        h: target element size away from electrode ends.
        offset: polar angle (radians) of the centre of electrode 0; the others
            follow counter-clockwise, equally spaced in arc length.
        edge_refinement: element size at electrode ends as a fraction of ``h``
            (the CEM current density is singular there); 1 disables refinement.
        circle_radius: if given, the outline is the circle of this radius about
            ``centre`` and its pieces are exact circle arcs.
    """
    t = np.linspace(0.0, 1.0, n_samples + 1)
    pts = np.asarray(curve(t[:-1]), dtype=np.float64)
    if pts.shape != (n_samples, 2) or not np.all(np.isfinite(pts)):
        raise ValueError(f"curve(t) must return finite points of shape (len(t), 2), got shape {pts.shape}"
                         + ("" if pts.shape != (n_samples, 2) else " with NaN/inf"))
    area = 0.5 * float(np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1]))
    if not area > 0:
        raise ValueError(f"the outline encloses area {area:.4g}: give a closed counter-clockwise curve")
    _check_generator(h, edge_refinement, offset, area)
    closed = np.vstack([pts, pts[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    perimeter = s[-1] if circle_radius is None else 2 * np.pi * circle_radius
    _check_electrodes(perimeter, n_electrodes, electrode_width)
    if circle_radius is not None:
        s = s * perimeter / s[-1]

    # arc-length position of the first electrode centre: the point at polar angle `offset`
    ang = np.unwrap(np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0]))
    ang = ang - ang[0]
    s0 = np.interp(offset % (2 * np.pi), np.append(ang, 2 * np.pi), s)
    centres = s0 + perimeter * np.arange(n_electrodes) / n_electrodes
    ends = np.stack([centres - electrode_width / 2, centres + electrode_width / 2], axis=1).reshape(-1) % perimeter
    # breakpoints along the outline: electrode ends, plus extra points so no piece spans > a quarter turn
    breaks = list(ends)
    order = np.argsort(ends)
    is_electrode_start = np.zeros(2 * n_electrodes, bool)
    is_electrode_start[0::2] = True
    sorted_s = ends[order]
    kinds = []  # for each piece starting at sorted_s[i]: electrode index or -1 (gap)
    for i, idx in enumerate(order):
        kinds.append(idx // 2 if is_electrode_start[idx] else -1)
    pieces = []
    for i in range(len(sorted_s)):
        a, b = sorted_s[i], sorted_s[(i + 1) % len(sorted_s)]
        if b <= a:
            b += perimeter
        n_sub = max(1, int(math.ceil((b - a) / (perimeter / 8))))
        for j in range(n_sub):
            pieces.append((a + (b - a) * j / n_sub, a + (b - a) * (j + 1) / n_sub, kinds[i]))
    del breaks

    def point_at(sv):
        sv = np.atleast_1d(sv) % perimeter
        if circle_radius is not None:
            th = sv / circle_radius
            return np.column_stack([centre[0] + circle_radius * np.cos(th), centre[1] + circle_radius * np.sin(th)])
        return np.column_stack([np.interp(sv, s, closed[:, 0]), np.interp(sv, s, closed[:, 1])])

    with _gmsh_session() as gmsh:
        geo = gmsh.model.geo
        fine = h * min(edge_refinement, 1.0)
        start_pts = [geo.addPoint(*point_at(a)[0], 0.0, h) for a, _, _ in pieces]
        centre_tag = geo.addPoint(centre[0], centre[1], 0.0, h) if circle_radius is not None else None
        curves, curve_kind = [], []
        for i, (a, b, kind) in enumerate(pieces):
            p0, p1 = start_pts[i], start_pts[(i + 1) % len(pieces)]
            if circle_radius is not None:
                c = geo.addCircleArc(p0, centre_tag, p1)
            else:
                n_inner = max(2, int(math.ceil((b - a) / (h / 4))))
                inner = point_at(np.linspace(a, b, n_inner + 1)[1:-1])
                mids = [geo.addPoint(x, y, 0.0, h) for x, y in inner]
                c = geo.addSpline([p0, *mids, p1])
            curves.append(c)
            curve_kind.append(kind)
        loop = geo.addCurveLoop(curves)
        surface = geo.addPlaneSurface([loop])
        geo.synchronize()
        for k in range(n_electrodes):
            tags = [c for c, kind in zip(curves, curve_kind) if kind == k]
            gmsh.model.addPhysicalGroup(1, tags, tag=k + 1)
        gmsh.model.addPhysicalGroup(2, [surface], tag=1000)

        end_tags = [start_pts[i] for i, (_, _, kind) in enumerate(pieces)
                    if kind != pieces[i - 1][2]]
        field = gmsh.model.mesh.field
        dist = field.add("Distance")
        field.setNumbers(dist, "PointsList", end_tags)
        thr = field.add("Threshold")
        field.setNumber(thr, "InField", dist)
        field.setNumber(thr, "SizeMin", fine)
        field.setNumber(thr, "SizeMax", h)
        field.setNumber(thr, "DistMin", 0.5 * fine)
        field.setNumber(thr, "DistMax", 0.5 * fine + 4.0 * (h - fine))
        field.setAsBackgroundMesh(thr)
        for opt, val in [("Mesh.MeshSizeFromPoints", 0), ("Mesh.MeshSizeFromCurvature", 0),
                         ("Mesh.MeshSizeExtendFromBoundary", 0), ("Mesh.Algorithm", 6),
                         ("Mesh.RandomSeed", 1), ("Mesh.Optimize", 1)]:
            gmsh.option.setNumber(opt, val)
        gmsh.model.mesh.generate(2)

        node_tags, coords, _ = gmsh.model.mesh.getNodes()
        coords = coords.reshape(-1, 3)[:, :2]
        index = {int(t): i for i, t in enumerate(node_tags)}
        _, elem_nodes = gmsh.model.mesh.getElementsByType(2)
        tri = np.array([index[int(t)] for t in elem_nodes], dtype=np.int64).reshape(-1, 3)
        edges, edge_el = [], []
        for k in range(n_electrodes):
            for c in gmsh.model.getEntitiesForPhysicalGroup(1, k + 1):
                types, _, enodes = gmsh.model.mesh.getElements(1, c)
                for typ, en in zip(types, enodes):
                    if typ == 1:
                        e = np.array([index[int(t)] for t in en], dtype=np.int64).reshape(-1, 2)
                        edges.append(e)
                        edge_el.append(np.full(len(e), k))
    # keep only nodes used by triangles (drops the arc centre point), renumbered compactly
    used = np.unique(tri)
    remap = -np.ones(len(coords), np.int64)
    remap[used] = np.arange(len(used))
    return Mesh.from_arrays(coords[used], remap[tri], electrode_edges=remap[np.concatenate(edges)],
                            edge_electrode=np.concatenate(edge_el), orient=True)


def disk(radius: float = 1.0, n_electrodes: int = 16, electrode_width: float = 0.2, h: float = 0.05,
         offset: float = 0.0, *, edge_refinement: float = 0.3) -> Mesh:
    """A disk of ``radius`` centred at the origin with ``n_electrodes`` electrodes.

    Electrode k is centred at polar angle ``offset + 2πk/L`` (counter-clockwise);
    ``electrode_width`` is an arc length in the units of ``radius``; electrode
    ends are mesh vertices, with elements of size ``edge_refinement·h`` there.
    """
    radius = _positive("radius", radius)
    _check_generator(h, edge_refinement, offset, math.pi * radius**2)
    return from_outline(lambda t: radius * np.column_stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)]),
                        n_electrodes=n_electrodes, electrode_width=electrode_width, h=h, offset=offset,
                        edge_refinement=edge_refinement, circle_radius=radius)


def ellipse(a: float = 1.0, b: float = 0.7, n_electrodes: int = 16, electrode_width: float = 0.2,
            h: float = 0.05, offset: float = 0.0, *, edge_refinement: float = 0.3) -> Mesh:
    """An ellipse with semi-axes ``a`` (x) and ``b`` (y); electrodes equally spaced in arc length,
    electrode 0 centred at polar angle ``offset``."""
    a, b = _positive("a (semi-axis)", a), _positive("b (semi-axis)", b)
    _check_generator(h, edge_refinement, offset, math.pi * a * b)
    return from_outline(lambda t: np.column_stack([a * np.cos(2 * np.pi * t), b * np.sin(2 * np.pi * t)]),
                        n_electrodes=n_electrodes, electrode_width=electrode_width, h=h, offset=offset,
                        edge_refinement=edge_refinement)


def thorax_outline(t: np.ndarray, width: float = 1.0) -> np.ndarray:
    """A smooth adult-chest-like cross-section (anterior up): (len(t), 2) points, counter-clockwise.

    Laterally ``width`` (half-width), antero-posterior half-depth ~0.68·width,
    flatter posterior side with a shallow spinal indentation.
    """
    th = 2 * np.pi * np.asarray(t)
    x = np.cos(th)
    y = 0.70 * np.sin(th)
    back = y < 0
    y = np.where(back, 0.62 * np.sin(th) * (1 - 0.12 * np.cos(th) ** 2), y)
    y = y + np.where(back, 0.08 * np.exp(-(x / 0.18) ** 2), 0.0)  # spine
    # slightly squarer shoulders: superellipse-like radial push
    r = 1 + 0.06 * np.sin(2 * th) ** 2
    return width * np.column_stack([x * r, y * r])


def thorax(width: float = 1.0, n_electrodes: int = 16, electrode_width: float = 0.15, h: float = 0.05,
           offset: float = math.pi / 2, *, edge_refinement: float = 0.3) -> Mesh:
    """A thorax-like outline (see :func:`thorax_outline`); electrode 0 at the sternum by default."""
    width = _positive("width", width)
    return from_outline(lambda t: thorax_outline(t, width), n_electrodes=n_electrodes,
                        electrode_width=electrode_width, h=h, offset=offset, edge_refinement=edge_refinement)
