"""Host-side precomputation of the FEM system: everything that does not depend on σ or z.

The global matrix of the complete electrode model (CEM), in the unknowns
x = (u at the N nodes, Ũ at L−1 electrodes) with the ground Σ U_l = 0 imposed by
U = 𝒩Ũ, 𝒩 = [I; −1ᵀ] (Somersalo, Cheney, Isaacson 1992), is

    A(σ, z) = [ K(σ) + M_z     C_z 𝒩     ]
              [ 𝒩ᵀ C_zᵀ        𝒩ᵀ D_z 𝒩  ]

symmetric positive definite. Each of its nonzeros is a sum of *contributions*:
σ_e·(unit element stiffness entry) or (1/z_l)·(unit electrode entry). Here we
list every contribution with its slot in a fixed sparsity pattern, so that in
JAX the matrix values are one ``segment_sum`` of (scale × unit value).

The point-electrode model (pyEIT) uses K(σ) alone with the reference node's
row and column replaced by the identity.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from ..mesh import Mesh
from ..protocol import Protocol

__all__ = ["Discretization", "discretize", "unit_stiffness"]


def unit_stiffness(nodes: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """(E, 3, 3) float64 P1 stiffness matrices ∫∇φ_i·∇φ_j of each triangle for σ = 1."""
    p = nodes[triangles]
    s = np.stack([p[:, 2] - p[:, 1], p[:, 0] - p[:, 2], p[:, 1] - p[:, 0]], axis=1)  # edge opposite vertex i
    area = 0.5 * (s[:, 0, 0] * s[:, 1, 1] - s[:, 0, 1] * s[:, 1, 0])
    return np.einsum("eid,ejd->eij", s, s) / (4.0 * area)[:, None, None]


@dataclasses.dataclass(frozen=True)
class Discretization:
    """Arrays of the FEM system (pytree leaves) and its sizes (static).

    Leaves (all numpy/JAX arrays):
        triangles (E, 3) int32; ke (E, 3, 3) float64 unit stiffness;
        stiff_slot (9E,) int32 and stiff_mask (9E,) float64 (0 where the point
        model grounds the reference node);
        cem_unit (C,) float64, cem_electrode (C,) int32, cem_slot (C,) int32:
        electrode contributions, scaled by 1/z of their electrode;
        const_value (K,), const_slot (K,): σ- and z-independent entries;
        rows (nnz,), cols (nnz,) int32: the sparsity pattern;
        electrode_rhs (n, L) float64: right-hand sides for a unit current into
        each electrode (also reads electrode potentials: U = electrode_rhsᵀ x);
        currents (P, L), meas_weights (M, L), meas_pattern (M,) from the protocol;
        meas_grouped (P, K, L) the measurement vectors grouped by pattern (K the
        most of any pattern, zero-padded) and meas_slot (M,) the row of each
        measurement in meas_grouped.reshape(P·K, L), for a batched Jacobian;
        klu_symbolic: () uint64 handle of KLU's symbolic analysis of the pattern
        (:func:`~jaxeit.forward.solvers.klu_symbolic`, added by a model that uses the
        ``"klu"`` solver; None otherwise).
    Static: n_nodes, n_unknowns, n_electrodes, electrode_model.
    """

    triangles: np.ndarray
    ke: np.ndarray
    stiff_slot: np.ndarray
    stiff_mask: np.ndarray
    cem_unit: np.ndarray
    cem_electrode: np.ndarray
    cem_slot: np.ndarray
    const_value: np.ndarray
    const_slot: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    electrode_rhs: np.ndarray
    currents: np.ndarray
    meas_weights: np.ndarray
    meas_pattern: np.ndarray
    meas_grouped: np.ndarray
    meas_slot: np.ndarray
    klu_symbolic: np.ndarray | None = None
    n_nodes: int = dataclasses.field(metadata=dict(static=True), default=0)
    n_unknowns: int = dataclasses.field(metadata=dict(static=True), default=0)
    n_electrodes: int = dataclasses.field(metadata=dict(static=True), default=0)
    electrode_model: str = dataclasses.field(metadata=dict(static=True), default="cem")

    @property
    def nnz(self) -> int:
        return int(self.rows.shape[0])

    @property
    def n_elements(self) -> int:
        return int(self.triangles.shape[0])


jax.tree_util.register_dataclass(Discretization)


def _cem_contributions(mesh: Mesh):
    """Unit CEM entries (value, electrode, row, col) before the 1/z scaling."""
    n, n_el = mesh.n_nodes, mesh.n_electrodes
    a, b = mesh.electrode_edges[:, 0], mesh.electrode_edges[:, 1]
    el = mesh.edge_electrode
    length = np.linalg.norm(mesh.nodes[a] - mesh.nodes[b], axis=1)
    vals, elec, rows, cols = [], [], [], []

    def add(v, e, r, c):
        vals.append(np.broadcast_to(v, np.shape(r)).ravel())
        elec.append(np.broadcast_to(e, np.shape(r)).ravel())
        rows.append(np.ravel(r))
        cols.append(np.ravel(c))

    # M_z: (1/z) ∫_e φ_i φ_j ds = (1/z)·h/6·[[2, 1], [1, 2]]
    for (i, j, w) in [(a, a, 2.0), (a, b, 1.0), (b, a, 1.0), (b, b, 2.0)]:
        add(w * length / 6.0, el, i, j)
    # C𝒩: C_il = −(1/z_l) ∫_e φ_i ds = −(1/z_l)·h/2 per edge end; 𝒩 maps Ũ_k to U_k (k < L−1)
    # and U_{L−1} = −Σ_k Ũ_k.
    ground = n_el - 1
    for end in (a, b):
        first = el < ground
        k = n + el[first]
        add(-length[first] / 2.0, el[first], end[first], k)
        add(-length[first] / 2.0, el[first], k, end[first])
        last = ~first
        for kk in range(ground):
            add(length[last] / 2.0, el[last], end[last], np.full(last.sum(), n + kk))
            add(length[last] / 2.0, el[last], np.full(last.sum(), n + kk), end[last])
    # 𝒩ᵀD𝒩: D_l = |e_l|/z_l on the diagonal, plus D_{L−1} in every entry of the Ũ block
    el_len = mesh.electrode_lengths()
    k = np.arange(ground)
    add(el_len[k], k, n + k, n + k)
    jj, kk = np.meshgrid(k, k, indexing="ij")
    add(el_len[ground], ground, n + jj, n + kk)
    return (np.concatenate(vals), np.concatenate(elec).astype(np.int32),
            np.concatenate(rows), np.concatenate(cols))


def _group_by_pattern(protocol: Protocol):
    counts = np.bincount(protocol.pattern, minlength=protocol.n_patterns)
    per = max(int(counts.max(initial=0)), 1)
    grouped = np.zeros((protocol.n_patterns, per, protocol.n_electrodes))
    slot = np.empty(protocol.n_measurements, np.int32)
    fill = np.zeros(protocol.n_patterns, np.int64)
    for m, p in enumerate(protocol.pattern):
        grouped[p, fill[p]] = protocol.measurements[m]
        slot[m] = p * per + fill[p]
        fill[p] += 1
    return grouped, slot


def discretize(mesh: Mesh, protocol: Protocol, electrode_model: str = "cem") -> Discretization:
    """Precompute the sparsity pattern and unit contributions for ``mesh`` and ``protocol``."""
    if electrode_model not in ("cem", "point"):
        raise ValueError(f"electrode_model must be 'cem' or 'point', got {electrode_model!r}")
    if protocol.n_electrodes != mesh.n_electrodes:
        raise ValueError(
            f"protocol has {protocol.n_electrodes} electrodes but the mesh has {mesh.n_electrodes}: "
            f"build the protocol with n_electrodes={mesh.n_electrodes} or use a matching mesh"
        )
    if electrode_model == "cem" and not mesh.has_electrode_edges:
        raise ValueError("the CEM needs electrode boundary edges, but this mesh has point electrodes "
                         "only (e.g. from pyEIT): use electrode_model='point' or a jaxeit.mesh generator")
    n, n_el = mesh.n_nodes, mesh.n_electrodes
    tri = mesh.triangles
    ke = unit_stiffness(mesh.nodes, tri)
    s_rows = np.repeat(tri, 3, axis=1).ravel()
    s_cols = np.tile(tri, (1, 3)).ravel()

    if electrode_model == "cem":
        n_unknowns = n + n_el - 1
        stiff_mask = np.ones(len(s_rows))
        cem_unit, cem_el, c_rows, c_cols = _cem_contributions(mesh)
        k_rows = k_cols = const_value = np.zeros(0)
        rhs = np.zeros((n_unknowns, n_el))
        rhs[n + np.arange(n_el - 1), np.arange(n_el - 1)] = 1.0  # 𝒩ᵀ e_l
        rhs[n:, n_el - 1] = -1.0
    else:
        n_unknowns = n
        ref = mesh.ref_node
        stiff_mask = ((s_rows != ref) & (s_cols != ref)).astype(np.float64)
        cem_unit = np.zeros(0)
        cem_el = np.zeros(0, np.int32)
        c_rows = c_cols = np.zeros(0, np.int64)
        k_rows, k_cols, const_value = np.array([ref]), np.array([ref]), np.array([1.0])
        rhs = np.zeros((n_unknowns, n_el))
        rhs[mesh.electrode_nodes, np.arange(n_el)] = 1.0

    all_rows = np.concatenate([s_rows, c_rows, k_rows]).astype(np.int64)
    all_cols = np.concatenate([s_cols, c_cols, k_cols]).astype(np.int64)
    keys, slot = np.unique(all_rows * n_unknowns + all_cols, return_inverse=True)
    slot = slot.reshape(-1).astype(np.int32)
    n_s, n_c = len(s_rows), len(c_rows)
    meas_grouped, meas_slot = _group_by_pattern(protocol)
    return Discretization(
        triangles=tri.astype(np.int32), ke=ke,
        stiff_slot=slot[:n_s], stiff_mask=stiff_mask,
        cem_unit=np.asarray(cem_unit, np.float64), cem_electrode=cem_el, cem_slot=slot[n_s:n_s + n_c],
        const_value=np.asarray(const_value, np.float64), const_slot=slot[n_s + n_c:],
        rows=(keys // n_unknowns).astype(np.int32), cols=(keys % n_unknowns).astype(np.int32),
        electrode_rhs=rhs, currents=protocol.currents, meas_weights=protocol.measurements,
        meas_pattern=protocol.pattern, meas_grouped=meas_grouped,
        meas_slot=meas_slot,
        n_nodes=n, n_unknowns=n_unknowns, n_electrodes=n_el,
        electrode_model=electrode_model,
    )
