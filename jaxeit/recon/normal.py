"""Regularised Gauss–Newton normal equations (JᵀJ + A) δ = b without forming the (E, E) matrix.

GN, LM and TV solve, at every iteration, a system whose matrix is a dense
low-rank data part JᵀJ (J is (M, E) with M ≪ E measurements) plus a sparse
SPD regularisation part A (a graph Laplacian on the element adjacency, a
diagonal, or their sum). Forming JᵀJ and factorising the dense (E, E) matrix
costs O(M E²) + O(E³/3): at E = 3.3k elements about 0.14 s + 0.27 s on a
2-core CPU, most of an iteration. Here the Woodbury identity

    (A + JᵀJ)⁻¹ b = y − Y (I + J Y)⁻¹ J y,   y = A⁻¹ b,  Y = A⁻¹ Jᵀ

needs one sparse factorisation of A (the forward model's sparse backend: KLU
inside XLA on a CPU), its solves for M + 1 right-hand sides and an (M, M) dense
solve: O(M² E), about 20 ms at the same size.

The Woodbury form loses accuracy when A is nearly singular (a Laplacian's
constants, regions that TV decouples): so A is solved with a slightly larger
ridge (:data:`PRECONDITIONER_RIDGE` of the mean diagonal of JᵀJ + A), and one
step of iterative refinement against the exact matrix (residual by products
with J, Jᵀ and the sparse A) restores the solution of the exact system: on
the TV and GN iterations of the 28 cm tank it agrees with the dense solve to
better than 1e-9 relative (``tests/test_recon_normal.py``).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..forward.solvers import klu_symbolic, linear_solve, spmv

__all__ = ["SparsePattern", "solve_normal", "PRECONDITIONER_RIDGE"]

#: ridge of the Woodbury preconditioner, relative to mean diag(JᵀJ + A) (the exact system is
#: restored by one refinement step; 1e-10 keeps A's factorisation well conditioned)
PRECONDITIONER_RIDGE = 1e-10

#: A sparse pattern denser than this is solved with the dense backend (no gain from sparsity)
_DENSE_FRACTION = 0.05


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class SparsePattern:
    """The fixed sparsity pattern of an (n, n) symmetric matrix given as coordinate triplets.

    Built once on the host from the triplets' (row, col) lists, possibly with repeats
    (:meth:`from_triplets`); :meth:`values` then scatters per-triplet values (traced) into
    the pattern's sorted, unique slots. Carries what the sparse solve needs: the KLU
    symbolic analysis of the pattern (CPU) or the name of the backend to use.

    Attributes:
        rows, cols: (nnz,) int32 unique entries, sorted by (row, col).
        slot: (n_triplets,) int32 slot of each triplet in ``rows``/``cols``.
        klu: () uint64 KLU symbolic handle (``"klu"`` backend) or None.
        n: the matrix size.
        backend: the sparse solver backend: ``"klu"``, ``"scipy"`` or ``"dense"``.
    """

    rows: jax.Array
    cols: jax.Array
    slot: jax.Array
    klu: jax.Array | None
    n: int
    backend: str

    @classmethod
    def from_triplets(cls, rows, cols, n: int, model_backend: str) -> "SparsePattern":
        """The pattern of triplets (``rows``, ``cols``) (host int arrays; the diagonal is always
        included), solved with the model's backend where it is a sparse direct one (``klu``,
        ``scipy``) and with ``dense`` otherwise (accelerators, ``cg``)."""
        diag = np.arange(n)
        r = np.concatenate([diag, np.asarray(rows, np.int64)])
        c = np.concatenate([diag, np.asarray(cols, np.int64)])
        key = r * n + c
        unique, inverse = np.unique(key, return_inverse=True)
        ur, uc = (unique // n).astype(np.int32), (unique % n).astype(np.int32)
        backend = model_backend if model_backend in ("klu", "scipy") else "dense"
        if len(unique) > _DENSE_FRACTION * n * n:
            backend = "dense"
        handle = jnp.asarray(klu_symbolic(ur, uc, n)) if backend == "klu" else None
        return cls(jnp.asarray(ur), jnp.asarray(uc), jnp.asarray(inverse[n:].astype(np.int32)), handle, int(n),
                   backend)

    @classmethod
    def from_dense(cls, matrix, model_backend: str) -> tuple["SparsePattern", jax.Array]:
        """The pattern of a host (n, n) matrix's nonzeros and its values there."""
        matrix = np.asarray(matrix, np.float64)
        r, c = np.nonzero(matrix)
        pattern = cls.from_triplets(r, c, matrix.shape[0], model_backend)
        return pattern, pattern.values(jnp.asarray(matrix[r, c]))

    def values(self, triplet_values, diagonal=None) -> jax.Array:
        """(nnz,) matrix values: ``triplet_values`` (n_triplets,) summed into their slots, plus an
        optional ``diagonal`` (n,) or scalar."""
        vals = jnp.zeros(self.rows.shape[0], jnp.result_type(triplet_values, float)).at[self.slot].add(triplet_values)
        if diagonal is not None:
            on_diag = self.rows == self.cols
            d = jnp.broadcast_to(jnp.asarray(diagonal, vals.dtype), (self.n,))
            vals = vals + jnp.where(on_diag, d[self.rows], 0.0)
        return vals

    def matvec(self, values, x) -> jax.Array:
        """A @ x for x (n,) or (n, k)."""
        return spmv(values, self.rows, self.cols, x, self.n)

    def diagonal(self, values) -> jax.Array:
        """(n,) diagonal of A."""
        return jnp.zeros(self.n, values.dtype).at[self.rows].add(jnp.where(self.rows == self.cols, values, 0.0))

    def solve(self, values, b) -> jax.Array:
        """A⁻¹ b for b (n,) or (n, k)."""
        return linear_solve(values, self.rows, self.cols, b, n=self.n, backend=self.backend, klu=self.klu)

    def tree_flatten(self):
        return (self.rows, self.cols, self.slot, self.klu), (self.n, self.backend)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children, *aux)


def solve_normal(jac, pattern: SparsePattern, a_values, b, *, refine: int = 1) -> jax.Array:
    """x = (JᵀJ + A)⁻¹ b, A sparse SPD (or PSD with JᵀJ + A SPD), by Woodbury plus refinement.

    Args:
        jac: (M, E) float64 Jacobian J.
        pattern: the :class:`SparsePattern` of A.
        a_values: (nnz,) values of A on ``pattern``.
        b: (E,) or (E, k) right-hand side(s).
        refine: refinement steps against the exact matrix (each: one more sparse solve).

    Returns:
        float64 solution of the shape of ``b``.
    """
    m = jac.shape[0]
    vector = b.ndim == 1
    b = b[:, None] if vector else b
    k = b.shape[1]
    scale = (jnp.sum(jac**2) + jnp.sum(pattern.diagonal(a_values))) / pattern.n
    p_values = pattern.values(jnp.zeros(pattern.slot.shape[0]), PRECONDITIONER_RIDGE * scale) + a_values
    y_all = pattern.solve(p_values, jnp.concatenate([b, jac.T], axis=1))
    y, big_y = y_all[:, :k], y_all[:, k:]
    # the (M, M) capacitance matrix I + J A⁻¹ Jᵀ, factorised once (LU: robust when A is nearly singular)
    cap = jax.scipy.linalg.lu_factor(jnp.eye(m) + jac @ big_y)

    def woodbury(rhs_y):  # (A + JᵀJ)⁻¹ r from y = A⁻¹ r
        return rhs_y - big_y @ jax.scipy.linalg.lu_solve(cap, jac @ rhs_y)

    x = woodbury(y)
    for _ in range(refine):
        r = b - (jac.T @ (jac @ x) + pattern.matvec(a_values, x))
        x = x + woodbury(pattern.solve(p_values, r))
    return x[:, 0] if vector else x
