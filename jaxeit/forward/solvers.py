"""Linear-solver backends for the symmetric positive definite FEM system.

Every backend is used through :func:`linear_solve`, which wraps it in
``jax.lax.custom_linear_solve``: the derivative of x = A(θ)⁻¹B is formed by the
implicit-function rule (one more solve with the same matrix), so JVPs (``jacfwd``)
and VJPs (``grad``) are exact and the factorisation is computed once, from
``stop_gradient`` values, and closed over by both the forward and the adjoint
solve.

Backends (all float64):

``"dense"``  dense Cholesky (``jnp.linalg.cholesky``); pure XLA, fast on a GPU
             and for small meshes; O(n³) so slow on a CPU beyond ~2k unknowns.
``"klu"``    SuiteSparse KLU sparse LU through ``klujax`` (an XLA custom call on
             the CPU, no host callback): the symbolic analysis (AMD ordering) is
             made once per sparsity pattern (:func:`klu_symbolic`, kept with the
             model's :class:`~jaxeit.forward.assembly.Discretization`), each
             call is one numeric factorisation and the solves of all its
             right-hand sides. CPU only; the CPU default. Forward solve vs
             CHOLMOD (refactorisation + 16 solves, same matrix, same run):
             ×0.95–0.99 at 4k nodes, ×2.2–2.3 at 20k, ×3–9 at 80k (KLU is a
             non-supernodal LU); 2–3× faster at 1k–4k (CEM) and 20–55× at 20k
             than the block-tridiagonal Cholesky in pure XLA that it replaced
             (``benchmarks/results/forward_limit.md``).
``"scipy"``  sparse LU (SuperLU, symmetric mode with a minimum-degree ordering)
             on the host through ``jax.pure_callback``; the factor of the last
             few matrices is cached (keyed by the matrix bytes), so the adjoint
             solve of a gradient reuses it. On a GPU it moves data to the host.
             Caution: with jax 0.10 a Python callback receives jax Arrays, and
             on machines with very few cores the XLA CPU runtime can deadlock
             when the callback reads them while other work is queued (a known
             JAX limitation); the pure-XLA backends never call back.
``"cg"``     Jacobi-preconditioned conjugate gradients in pure JAX (per-column
             step sizes); matrix-free, memory O(nnz), any device; iterative, so
             accurate to ``cg_tol``.

``"auto"`` picks ``"dense"`` on accelerators up to ``DENSE_MAX_UNKNOWNS_GPU``
unknowns and ``"cg"`` above; on a CPU ``"klu"`` at every size (``"dense"`` up to
``DENSE_MAX_UNKNOWNS_CPU`` = 0 unknowns: KLU was faster at every size measured; crossovers measured by
``benchmarks/forward.py`` on a CPU and ``benchmarks/gpu/forward_scaling.py`` on an H200: dense
Cholesky time grows ~n^1.8 there and CG ~n^0.75, crossing near 8k unknowns).
``"scipy"`` is a host callback, so ``"auto"`` never picks it.
``benchmarks/forward_limit.py`` measures every backend against scipy's SuperLU
and CHOLMOD on the same matrices; ``benchmarks/gpu/profile_hot_paths.py``
splits a backend's time into assembly, factorisation, solves and measurement.

The matrix must be symmetric positive definite: a singular or indefinite one
(σ ≤ 0, a z out of range, a mesh with a floating part) makes every backend
return NaN or garbage (KLU: a factorisation error), which :class:`~jaxeit.forward.ForwardModel` turns into a
clear error (its ``checks``).
"""

from __future__ import annotations

import collections
import functools
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["BACKENDS", "resolve_backend", "linear_solve", "spmv", "klu_symbolic"]

BACKENDS = ("dense", "klu", "scipy", "cg")
#: on a CPU KLU beats dense Cholesky at every size measured (68 nodes: 0.08 vs 0.11 ms per forward
#: solve; 261–994 unknowns: dense 10–800x slower on the shared 2-core machine), so "auto" never
#: picks dense there
DENSE_MAX_UNKNOWNS_CPU = 0
DENSE_MAX_UNKNOWNS_GPU = 8000   # H200: dense 14 ms vs CG 17 ms at 6.8k nodes, 100 vs 36 ms at 19.7k


def resolve_backend(solver: str, n_unknowns: int) -> str:
    """The backend name that ``solver`` (a backend or ``"auto"``) means for this size and device."""
    if solver == "auto":
        if jax.default_backend() == "cpu":
            return "dense" if n_unknowns <= DENSE_MAX_UNKNOWNS_CPU else "klu"
        return "dense" if n_unknowns <= DENSE_MAX_UNKNOWNS_GPU else "cg"
    if solver not in BACKENDS:
        raise ValueError(f"solver must be 'auto' or one of {BACKENDS}, got {solver!r}")
    if solver == "klu" and jax.default_backend() != "cpu":
        raise ValueError(f"solver='klu' runs on the CPU only (default device here: {jax.default_backend()}); "
                         "use 'auto', 'dense' or 'cg' on an accelerator")
    return solver


def spmv(values, rows, cols, x, n: int):
    """Sparse product A @ x for A in coordinate form; x (n,) or (n, k)."""
    prod = values.reshape(values.shape + (1,) * (x.ndim - 1)) * x[cols]
    return jax.ops.segment_sum(prod, rows, num_segments=n, indices_are_sorted=True)


# -- dense --------------------------------------------------------------------------

def _dense_factor(values, rows, cols, n):
    a = jnp.zeros((n, n), values.dtype).at[rows, cols].set(values)
    return jnp.linalg.cholesky(a)


def _dense_solve(chol, b):
    return jax.scipy.linalg.cho_solve((chol, True), b)


# -- klu (SuiteSparse KLU through klujax) -------------------------------------------

def _klujax():
    """The ``klujax`` module. Importing it sets ``jax_platform_name`` to ``"cpu"`` (and x64 on); the
    platform setting is put back, so that importing it does not move other work off an accelerator."""
    import importlib
    import sys

    if "klujax" not in sys.modules:
        previous = jax.config.read("jax_platform_name")
        importlib.import_module("klujax")
        jax.config.update("jax_platform_name", previous)
    return sys.modules["klujax"]


#: KLU symbolic analyses by sparsity pattern; they live as long as the process, because a
#: handle may be held by any number of models and compiled programs (O(n) memory each)
_KLU_SYMBOLIC: dict = {}
_KLU_LOCK = threading.Lock()


def klu_symbolic(rows, cols, n: int):
    """() uint64 handle of KLU's symbolic analysis (AMD ordering) of the pattern (``rows``, ``cols``).

    Made once per pattern and process (cached), passed to jitted code as an array argument, so
    meshes of the same size share compiled programs. The handle is a host address: it is
    valid in this process only (do not save it).
    """
    rows, cols = np.asarray(rows, np.int32), np.asarray(cols, np.int32)
    key = (int(n), rows.shape[0], rows.tobytes(), cols.tobytes())
    with _KLU_LOCK:
        if key not in _KLU_SYMBOLIC:
            _KLU_SYMBOLIC[key] = _klujax().analyze(rows, cols, int(n))
        return np.asarray(_KLU_SYMBOLIC[key].raw, np.uint64)


def _klu_solve(values, rows, cols, b, handle):
    """x = A⁻¹b by one KLU numeric factorisation (on the kept symbolic analysis) and the solves of all
    columns of b. The pattern is already sorted by (row, col), as KLU's custom call needs, so its
    primitive is bound directly: ``klujax.solve_with_symbol`` would sort it again at every call
    (a 20 % longer forward solve at 14k nodes)."""
    klujax = _klujax()
    prim = getattr(klujax, "solve_with_symbol_f64", None)
    if prim is None:  # another klujax version: its public (sorting) entry point
        return klujax.solve_with_symbol(rows, cols, values, b, handle)
    b2 = b.reshape(b.shape[0], -1)
    x = prim.bind(rows.astype(jnp.int32), cols.astype(jnp.int32), values.astype(jnp.float64)[None],
                  b2.astype(jnp.float64)[None], handle.astype(jnp.uint64))
    return x[0].reshape(b.shape)


# -- scipy (host) -------------------------------------------------------------------

class _SymbolicCache:
    """Per sparsity pattern: a fill-reducing ordering and the permuted CSC structure.

    SuperLU's minimum-degree ordering is a third of the cost of a factorisation;
    the pattern never changes for a model, so it is computed once and later
    factorisations run with the natural order on the permuted matrix.
    """

    def __init__(self):
        self._items: dict = {}
        self._lock = threading.Lock()

    def get(self, rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int):
        key = (n, rows.shape[0], hash(rows.tobytes()), hash(cols.tobytes()))
        with self._lock:
            if key in self._items:
                return self._items[key]
        import scipy.sparse as sp
        import scipy.sparse.linalg as spla

        a = sp.csc_matrix((values, (rows, cols)), shape=(n, n))
        lu = spla.splu(a, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))
        order = np.argsort(lu.perm_c)  # row/column i of the permuted matrix is i-th in this order
        position = np.empty(n, np.int64)
        position[order] = np.arange(n)
        new_rows, new_cols = position[rows], position[cols]
        csc = np.lexsort((new_rows, new_cols))
        indptr = np.concatenate([[0], np.cumsum(np.bincount(new_cols, minlength=n))])
        item = (order, csc, new_rows[csc].astype(np.int32), indptr.astype(np.int32))
        with self._lock:
            self._items[key] = item
        return item


class _FactorCache:
    """A small LRU cache of sparse LU factors keyed by the matrix's exact bytes."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()
        self._symbolic = _SymbolicCache()

    def get(self, values: np.ndarray, rows: np.ndarray, cols: np.ndarray, n: int):
        """(order, lu): solve A x = b as x[order] = lu.solve(b[order])."""
        key = (n, values.shape[0], hash(values.tobytes()), hash(rows.tobytes()), hash(cols.tobytes()))
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        order, csc, indices, indptr = self._symbolic.get(rows, cols, values, n)
        item = (order, _splu_natural(values[csc], indices, indptr, n))
        with self._lock:
            self._items[key] = item
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return item


def _splu_natural(data, indices, indptr, n):
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    a = sp.csc_matrix((data, indices, indptr), shape=(n, n))
    return spla.splu(a, permc_spec="NATURAL", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))


_FACTORS = _FactorCache()


def _host_solve(values, rows, cols, b, *, n):
    values, rows, cols, b = (np.asarray(t) for t in (values, rows, cols, b))
    # vmap_method="broadcast_all": leading batch dimensions on every operand
    batch = b.shape[:-2]
    values = np.broadcast_to(values, batch + values.shape[-1:]).reshape(-1, values.shape[-1])
    rows, cols = rows.reshape(-1, rows.shape[-1])[0], cols.reshape(-1, cols.shape[-1])[0]
    bb = b.reshape((-1,) + b.shape[-2:])
    out = np.empty(bb.shape, np.float64)
    for i in range(bb.shape[0]):
        order, lu = _FACTORS.get(np.ascontiguousarray(values[i]), rows, cols, n)
        out[i][order] = lu.solve(np.ascontiguousarray(bb[i][order], np.float64))
    return out.reshape(b.shape)


def _scipy_solve(values, rows, cols, b, n):
    squeeze = b.ndim == 1
    b2 = b[:, None] if squeeze else b
    out = jax.pure_callback(functools.partial(_host_solve, n=n),
                            jax.ShapeDtypeStruct(b2.shape, b2.dtype),
                            values, rows, cols, b2, vmap_method="broadcast_all")
    return out[:, 0] if squeeze else out


# -- conjugate gradients ------------------------------------------------------------

def _cg_solve(values, rows, cols, b, n, tol, maxiter):
    diag = jnp.zeros(n, values.dtype).at[rows].add(jnp.where(rows == cols, values, 0.0))
    squeeze = b.ndim == 1
    b2 = b[:, None] if squeeze else b
    inv_d = (1.0 / diag)[:, None]
    bnorm = jnp.maximum(jnp.linalg.norm(b2, axis=0), 1e-300)

    def body(state):
        x, r, p, rz, k = state
        ap = spmv(values, rows, cols, p, n)
        alpha = rz / jnp.maximum(jnp.sum(p * ap, axis=0), 1e-300)
        x = x + alpha * p
        r = r - alpha * ap
        z = inv_d * r
        rz_new = jnp.sum(r * z, axis=0)
        p = z + (rz_new / jnp.maximum(rz, 1e-300)) * p
        return x, r, p, rz_new, k + 1

    def cond(state):
        _, r, _, _, k = state
        return (k < maxiter) & jnp.any(jnp.linalg.norm(r, axis=0) > tol * bnorm)

    z0 = inv_d * b2
    x, *_ = lax.while_loop(cond, body, (jnp.zeros_like(b2), b2, z0, jnp.sum(b2 * z0, axis=0), 0))
    return x[:, 0] if squeeze else x


# -- the differentiable solve -------------------------------------------------------

def linear_solve(values, rows, cols, b, *, n: int, backend: str, cg_tol: float = 1e-12,
                 cg_maxiter: int | None = None, klu=None):
    """Solve A x = b for the SPD matrix with ``values`` at (``rows``, ``cols``).

    Args:
        values: (nnz,) float64 matrix entries (differentiable).
        rows, cols: (nnz,) int32 sparsity pattern, sorted by row.
        b: (n,) or (n, k) float64 right-hand side(s) (differentiable).
        n: number of unknowns.
        backend: one of :data:`BACKENDS` (already resolved, not ``"auto"``).
        klu: the () uint64 :func:`klu_symbolic` handle of the pattern (needed by ``"klu"``).

    Returns:
        x with the shape of ``b``, float64.
    """
    fixed = lax.stop_gradient(values)
    if backend == "dense":
        chol = _dense_factor(fixed, rows, cols, n)
        solve = lambda _, r: _dense_solve(chol, r)  # noqa: E731
    elif backend == "klu":
        if klu is None:
            raise ValueError("the klu backend needs the pattern's symbolic analysis (klu_symbolic)")
        solve = lambda _, r: _klu_solve(fixed, rows, cols, r, klu)  # noqa: E731
    elif backend == "scipy":
        solve = lambda _, r: _scipy_solve(fixed, rows, cols, r, n)  # noqa: E731
    elif backend == "cg":
        maxiter = cg_maxiter or 10 * n
        solve = lambda _, r: _cg_solve(fixed, rows, cols, r, n, cg_tol, maxiter)  # noqa: E731
    else:
        raise ValueError(f"unknown backend {backend!r}; use one of {BACKENDS}")
    matvec = lambda x: spmv(values, rows, cols, x, n)  # noqa: E731
    return lax.custom_linear_solve(matvec, b, solve, symmetric=True)
