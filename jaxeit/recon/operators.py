"""Mesh operators for regularisation: element adjacency and TV differences (priors: :mod:`jaxeit.recon.linear`)."""

from __future__ import annotations

import numpy as np

from ..mesh import Mesh

__all__ = ["element_adjacency", "difference_operator"]


def element_adjacency(mesh: Mesh):
    """Pairs of elements sharing an edge and that edge's length.

    Returns:
        pairs (n_interior_edges, 2) int32 element indices; lengths (n_interior_edges,) float64.
    """
    tri = mesh.triangles
    e = np.sort(tri[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    owner = np.repeat(np.arange(len(tri)), 3)
    order = np.lexsort((e[:, 1], e[:, 0]))
    e, owner = e[order], owner[order]
    same = np.all(e[1:] == e[:-1], axis=1)
    i = np.flatnonzero(same)
    pairs = np.stack([owner[i], owner[i + 1]], axis=1).astype(np.int32)
    lengths = np.linalg.norm(mesh.nodes[e[i, 0]] - mesh.nodes[e[i, 1]], axis=1)
    return pairs, lengths


def difference_operator(mesh: Mesh, weighted: bool = True) -> np.ndarray:
    """(n_interior_edges, E) float64 dense D with (Dσ)_k = l_k (σ_a − σ_b) across interior edge k.

    With ``weighted`` the rows carry the edge length l_k, so ‖Dσ‖₁ is the total
    variation of the piecewise-constant σ (jump × edge length).
    """
    pairs, lengths = element_adjacency(mesh)
    w = lengths if weighted else np.ones_like(lengths)
    d = np.zeros((len(pairs), mesh.n_elements))
    rows = np.arange(len(pairs))
    d[rows, pairs[:, 0]] = w
    d[rows, pairs[:, 1]] = -w
    return d

