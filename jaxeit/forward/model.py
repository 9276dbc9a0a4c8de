"""The differentiable EIT forward model F(σ, z) → voltages.

Units: σ in S per unit length (S/m for meshes in metres), contact impedance z
in Ω·(unit length)² per unit depth, i.e. Ω·m² for a 2D model in metres (the
usual CEM z); currents as in the protocol (A, or mA giving mV·... consistently
scaled voltages). All FEM arrays are float64.
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..mesh import Mesh
from ..protocol import Protocol
from .assembly import Discretization, discretize
from .solvers import klu_symbolic, linear_solve, resolve_backend

__all__ = ["ForwardModel", "Z_RANGE"]

#: accepted contact impedances z (Ω·m² for a mesh in metres). Outside this range the CEM
#: matrix entries |e|/z overflow or lose every digit in float64 next to σ of order 1 S/m
#: (z = 1e-300 gives NaN voltages): rescale the units instead.
Z_RANGE = (1e-12, 1e12)

_SIGMA_MSG = ("sigma must be positive and finite on every element (found a value <= 0, NaN or inf); "
              "parameterise as exp(log_sigma) or clip to a small positive floor")
_Z_MSG = (f"contact_impedance must be finite and within [{Z_RANGE[0]:g}, {Z_RANGE[1]:g}] "
          "(Ohm m^2 for a mesh in metres); rescale the units if yours lie outside")
_SINGULAR_MSG = ("the FEM system is singular or indefinite (its solution has NaN/inf): sigma must be "
                 "positive and finite, contact_impedance in range, and the mesh connected")


# -- pure functions of (discretization, σ, z) ------------------------------------

def _matrix_values(disc: Discretization, sigma, z):
    """(nnz,) values of A(σ, z)."""
    stiff = (sigma[:, None, None] * disc.ke).reshape(-1) * disc.stiff_mask
    contrib = [stiff]
    slots = [disc.stiff_slot]
    if disc.cem_unit.shape[0]:
        z = jnp.broadcast_to(z, (disc.n_electrodes,))
        contrib.append(disc.cem_unit / z[disc.cem_electrode])
        slots.append(disc.cem_slot)
    if disc.const_value.shape[0]:
        contrib.append(disc.const_value.astype(stiff.dtype))
        slots.append(disc.const_slot)
    return jax.ops.segment_sum(jnp.concatenate(contrib), jnp.concatenate(slots),
                               num_segments=disc.nnz)


def _electrode_fields(disc: Discretization, sigma, z, backend: str, cg_tol: float):
    """(n, L) solutions for a unit current into each electrode (CEM ground / point reference)."""
    values = _matrix_values(disc, sigma, z)
    rhs = jnp.asarray(disc.electrode_rhs, values.dtype)
    return linear_solve(values, disc.rows, disc.cols, rhs, n=disc.n_unknowns, backend=backend, cg_tol=cg_tol,
                        klu=disc.klu_symbolic)


def _check_values(sigma, z):
    sigma = eqx.error_if(sigma, ~jnp.all(jnp.isfinite(sigma) & (sigma > 0)), _SIGMA_MSG)
    z = eqx.error_if(z, ~jnp.all((z >= Z_RANGE[0]) & (z <= Z_RANGE[1])), _Z_MSG)
    return sigma, z


def _checked_fields(disc: Discretization, sigma, z, backend: str, cg_tol: float, checks: bool):
    """:func:`_electrode_fields`, with value checks that survive ``jit`` when ``checks``.

    The checks (``equinox.error_if``) raise at run time, also inside a user's ``jit``/``grad``/
    ``vmap``: σ ≤ 0 or non-finite, z outside :data:`Z_RANGE`, and a solution with NaN/inf (a
    singular or indefinite system). Their cost is a few reductions next to the solve.
    """
    if checks:
        sigma, z = _check_values(sigma, z)
    fields = _electrode_fields(disc, sigma, z, backend, cg_tol)
    if checks:
        fields = eqx.error_if(fields, ~jnp.all(jnp.isfinite(fields)), _SINGULAR_MSG)
    return fields


def _center(disc: Discretization, raw):
    """The point model's potentials are relative to the reference node: ground them to Σ U = 0."""
    if disc.electrode_model == "point":
        raw = raw - jnp.mean(raw, axis=0, keepdims=True)
    return raw


def _transfer_matrix(disc: Discretization, fields):
    """(L, L) Z with U = Z I: electrode potentials for unit electrode currents, ground Σ U = 0."""
    return _center(disc, jnp.asarray(disc.electrode_rhs).T @ fields)


def _measure_transfer(disc: Discretization, zmat):
    """(M,) voltages of the protocol from the (L, L) transfer matrix."""
    u = disc.currents @ zmat.T  # (P, L) electrode potentials per pattern
    return jnp.sum(disc.meas_weights * u[disc.meas_pattern], axis=1)


def measure(disc: Discretization, fields):
    """(M,) voltages of the protocol from the (n, L) unit-current ``fields``."""
    return _measure_transfer(disc, _transfer_matrix(disc, fields))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _raw_transfer(backend, cg_tol, n, values, rows, cols, rhs, klu):
    """(L, L) Bᵀ A⁻¹ B for the matrix with slot ``values``; B = ``rhs`` (n, L).

    Its derivative is the reciprocity formula dZ = −Xᵀ dA X with X = A⁻¹B (a custom JVP): the
    fields of the forward solve serve the derivative, so a VJP (``grad``) needs one factorisation
    and no adjoint solve, and ``jacfwd`` no solve per tangent. Higher derivatives stay exact (X in
    the rule is itself differentiable). ``rows``, ``cols``, ``rhs`` and the solver structures
    are constants of the discretisation (their tangents are ignored).
    """
    x = linear_solve(values, rows, cols, rhs, n=n, backend=backend, cg_tol=cg_tol, klu=klu)
    return rhs.T @ x


@_raw_transfer.defjvp
def _raw_transfer_jvp(backend, cg_tol, n, primals, tangents):
    values, rows, cols, rhs, klu = primals
    dv = tangents[0]
    x = linear_solve(values, rows, cols, rhs, n=n, backend=backend, cg_tol=cg_tol, klu=klu)
    dz = -(x[rows] * dv[:, None]).T @ x[cols]  # −Σ_slots dA_s x[row_s] x[col_s]ᵀ
    return rhs.T @ x, dz


def _checked_transfer(disc: Discretization, sigma, z, backend: str, cg_tol: float, checks: bool):
    """(L, L) transfer matrix Z(σ, z) (ground Σ U = 0), with the checks of :func:`_checked_fields`."""
    if checks:
        sigma, z = _check_values(sigma, z)
    values = _matrix_values(disc, sigma, z)
    rhs = jnp.asarray(disc.electrode_rhs, values.dtype)
    zmat = _center(disc, _raw_transfer(backend, cg_tol, disc.n_unknowns, values, disc.rows, disc.cols, rhs,
                                       disc.klu_symbolic))
    if checks:
        zmat = eqx.error_if(zmat, ~jnp.all(jnp.isfinite(zmat)), _SINGULAR_MSG)
    return zmat


@functools.partial(jax.jit, static_argnames=("backend", "cg_tol", "checks"))
def _potentials(disc, sigma, z, backend, cg_tol, checks=True):
    return disc.currents @ _checked_transfer(disc, sigma, z, backend, cg_tol, checks).T


@functools.partial(jax.jit, static_argnames=("backend", "cg_tol", "checks"))
def _voltages(disc, sigma, z, backend, cg_tol, checks=True):
    return _measure_transfer(disc, _checked_transfer(disc, sigma, z, backend, cg_tol, checks))


@functools.partial(jax.jit, static_argnames=("backend", "cg_tol", "checks"))
def _jacobian(disc, sigma, z, backend, cg_tol, checks=True):
    """(M, E) dV/dσ by the adjoint (reciprocity) formula −∫_e ∇u_p·∇ũ_m."""
    fields = _checked_fields(disc, sigma, z, backend, cg_tol, checks)
    phi = fields[: disc.n_nodes][disc.triangles]  # (E, 3, L) unit-current fields at element nodes
    # Q_e[l, k] = ∫_e ∇φ_l·∇φ_k for the unit-current fields; dv_m/dσ_e = −W_m Q_e I_p(m)ᵀ
    q = jnp.einsum("eil,eik->elk", phi, jnp.einsum("eij,ejk->eik", disc.ke, phi))
    h = jnp.einsum("elk,pk->ple", q, disc.currents)  # (P, L, E)
    weights = disc.meas_grouped  # (P, max measurements per pattern, L), zero rows pad
    if disc.electrode_model == "point":
        # potentials are centred (Σ U = 0): v = W(I − 11ᵀ/L)U
        weights = weights - jnp.mean(weights, axis=2, keepdims=True)
    jac = jnp.einsum("pml,ple->pme", weights, h)  # batched matmul per pattern
    return -jac.reshape(-1, jac.shape[-1])[disc.meas_slot]


@functools.partial(jax.jit, static_argnames=("backend", "cg_tol", "checks"))
def _nodal_potentials(disc, sigma, z, backend, cg_tol, checks=True):
    fields = _checked_fields(disc, sigma, z, backend, cg_tol, checks)
    u = disc.currents @ fields[: disc.n_nodes].T  # (P, N)
    if disc.electrode_model == "point":
        raw = jnp.asarray(disc.electrode_rhs).T @ fields  # (L, L) uncentred electrode potentials
        u = u - (disc.currents @ jnp.mean(raw, axis=0))[:, None]  # same ground as the electrodes
    return u


#: samples solved together per step of a batch on a CPU (see :func:`_over_batch`)
CPU_BATCH_GROUP = 4


def _over_batch(fn, sigma):
    """``fn`` over the rows of ``sigma`` (B, E): one ``vmap`` on an accelerator; on a CPU in groups of
    :data:`CPU_BATCH_GROUP` (``lax.map``), because there a vmapped batch of factorisations gets slower
    per sample as B grows, likely as its working set outgrows the caches (979 nodes, the former block-Cholesky backend:
    161 conductivities/s at B = 1, 112 at B = 1024 vmapped, 235 in groups of 4;
    ``benchmarks/gpu/forward_scaling.py``)."""
    b = sigma.shape[0]
    if jax.default_backend() != "cpu" or b <= CPU_BATCH_GROUP:
        return jax.vmap(fn)(sigma)
    # pad to whole groups with copies of the last row (sliced off again), so one group body is compiled
    pad = -b % CPU_BATCH_GROUP
    padded = jnp.concatenate([sigma, jnp.broadcast_to(sigma[-1:], (pad, sigma.shape[1]))]) if pad else sigma
    out = jax.lax.map(jax.vmap(fn), padded.reshape(-1, CPU_BATCH_GROUP, sigma.shape[1]))
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:])[:b], out)


# -- the user-facing class --------------------------------------------------------

def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


class ForwardModel:
    """Forward model of EIT on a mesh with a protocol.

    Args:
        mesh: :class:`jaxeit.mesh.Mesh`; for the CEM it must have electrode edges.
        protocol: :class:`jaxeit.protocol.Protocol` with ``mesh.n_electrodes`` electrodes.
        contact_impedance: z, scalar or (L,) per electrode (CEM only). Default 0.01.
        electrode_model: ``"cem"`` (complete electrode model) or ``"point"``
            (pyEIT's model: current at the electrode nodes, reference node grounded).
        solver: ``"auto"``, ``"dense"``, ``"klu"``, ``"scipy"`` or ``"cg"``;
            see :mod:`jaxeit.forward.solvers` (``"auto"``: dense for small systems, KLU
            above on a CPU, CG above on an accelerator).
        cg_tol: relative residual tolerance of the ``"cg"`` backend.
        checks: value checks that survive ``jit`` (default on): σ ≤ 0 or non-finite,
            z outside :data:`Z_RANGE` and a singular or indefinite system raise an
            error at run time (``equinox.error_if``: an ``EqxRuntimeError`` naming the
            problem) even inside a user's ``jit``, ``grad`` or ``vmap``, instead of
            NaN or finite wrong voltages. Concrete (non-traced) inputs are checked
            eagerly either way, with a ``ValueError``. Inside a training loop whose
            σ is positive by construction (e.g. ``exp`` of a network output), turn
            them off with ``model.with_checks(False)`` (or ``checks=False``); the
            cost they save is small: ~8 µs per call, under 0.1 % of a 4k-node
            solve (``benchmarks/results/forward_checks.md``).

    Every method takes ``sigma`` as (E,) float64 element conductivities, or
    (B, E) for a batch (solved with ``vmap``), and an optional
    ``contact_impedance`` overriding the model's (for differentiating in z).
    Methods are jit-compiled, differentiable in ``sigma`` and
    ``contact_impedance`` by ``jax.grad``/``jax.vjp``/``jax.jacfwd``, and
    ``vmap``-able. The model is a pytree (its arrays are leaves), so it can be
    an argument of a user's jitted function.
    """

    def __init__(self, mesh: Mesh, protocol: Protocol, *, contact_impedance=0.01,
                 electrode_model: str = "cem", solver: str = "auto", cg_tol: float = 1e-12,
                 checks: bool = True, _disc: Discretization | None = None):
        self.mesh = mesh
        self.protocol = protocol
        self.electrode_model = electrode_model
        disc = _disc if _disc is not None else discretize(mesh, protocol, electrode_model)
        self.solver = resolve_backend(solver, disc.n_unknowns)
        if self.solver == "klu" and disc.klu_symbolic is None:  # once per sparsity pattern (cached)
            disc = dataclasses.replace(disc, klu_symbolic=klu_symbolic(disc.rows, disc.cols, disc.n_unknowns))
        self.disc = jax.tree.map(jnp.asarray, disc)  # on the device once, not at every call
        self.cg_tol = float(cg_tol)
        self.checks = bool(checks)
        self.contact_impedance = self._check_z(contact_impedance)

    # pytree: arrays are leaves, everything else is static
    def tree_flatten(self):
        return (self.disc, self.contact_impedance), (self.mesh, self.protocol, self.electrode_model,
                                                     self.solver, self.cg_tol, self.checks)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.mesh, obj.protocol, obj.electrode_model, obj.solver, obj.cg_tol, obj.checks = aux
        obj.disc, obj.contact_impedance = children
        return obj

    def __setstate__(self, state):
        """Unpickling: KLU's symbolic handle is a host address of the process that made it, so it is
        made again here (from the cache, or by a new analysis in another process)."""
        self.__dict__.update(state)
        d = self.disc
        if d.klu_symbolic is not None:
            handle = klu_symbolic(np.asarray(d.rows), np.asarray(d.cols), d.n_unknowns)
            self.disc = dataclasses.replace(d, klu_symbolic=jnp.asarray(handle))

    # -- sizes ------------------------------------------------------------------------
    @property
    def n_elements(self) -> int:
        return self.mesh.n_elements

    @property
    def n_measurements(self) -> int:
        return self.protocol.n_measurements

    def __repr__(self):
        return (f"ForwardModel({self.mesh!r}, {self.protocol!r}, electrode_model={self.electrode_model!r}, "
                f"solver={self.solver!r}, checks={self.checks})")

    # -- input checks -------------------------------------------------------------------
    def _check_sigma(self, sigma):
        sigma = jnp.asarray(sigma, dtype=jnp.float64)
        if sigma.ndim not in (1, 2) or sigma.shape[-1] != self.n_elements:
            raise ValueError(f"sigma must have shape ({self.n_elements},) (one conductivity per element) "
                             f"or (batch, {self.n_elements}); got {tuple(sigma.shape)}")
        if _is_concrete(sigma):
            s = np.asarray(sigma)
            if not np.all(np.isfinite(s)):
                raise ValueError(f"sigma contains {int((~np.isfinite(s)).sum())} NaN/inf values")
            if np.any(s <= 0):
                raise ValueError(f"sigma must be positive (min {s.min():.3g}); parameterise as "
                                 "exp(log_sigma) or clip to a small positive floor")
        return sigma

    def _check_z(self, z):
        z = jnp.asarray(z, dtype=jnp.float64)
        n_el = self.mesh.n_electrodes
        if z.shape not in ((), (n_el,)):
            raise ValueError(f"contact_impedance must be a scalar or shape ({n_el},), got {tuple(z.shape)}")
        if _is_concrete(z):
            zz = np.asarray(z)
            if not np.all(np.isfinite(zz)) or np.any(zz <= 0):
                raise ValueError("contact_impedance must be positive and finite")
            if np.any(zz < Z_RANGE[0]) or np.any(zz > Z_RANGE[1]):
                raise ValueError(f"{_Z_MSG}; got values in [{zz.min():.3g}, {zz.max():.3g}]")
        return z

    def _call(self, fn, sigma, contact_impedance):
        sigma = self._check_sigma(sigma)
        z = self.contact_impedance if contact_impedance is None else self._check_z(contact_impedance)
        f = functools.partial(fn, backend=self.solver, cg_tol=self.cg_tol, checks=self.checks)
        if sigma.ndim == 2:
            return _over_batch(lambda s: f(self.disc, s, z), sigma)
        return f(self.disc, sigma, z)

    # -- physics ------------------------------------------------------------------------
    def electrode_potentials(self, sigma, contact_impedance=None):
        """(P, L) float64 electrode potentials U per pattern; each row sums to zero (ground)."""
        return self._call(_potentials, sigma, contact_impedance)

    def voltages(self, sigma, contact_impedance=None):
        """(M,) float64 measurements of the protocol, stacked pattern by pattern."""
        return self._call(_voltages, sigma, contact_impedance)

    def jacobian(self, sigma, contact_impedance=None):
        """(M, E) float64 dV/dσ per element, by the adjoint method (one factorisation, L solves)."""
        return self._call(_jacobian, sigma, contact_impedance)

    def potentials(self, sigma, contact_impedance=None):
        """(P, N) float64 nodal potentials per pattern, in the same ground as the electrode potentials."""
        return self._call(_nodal_potentials, sigma, contact_impedance)

    def with_protocol(self, protocol: Protocol) -> "ForwardModel":
        """The same mesh and settings with another protocol (e.g. a measurement subset)."""
        disc = discretize(self.mesh, protocol, self.electrode_model)
        if self.disc.klu_symbolic is not None:  # the pattern does not depend on the protocol
            disc = dataclasses.replace(disc, klu_symbolic=self.disc.klu_symbolic)
        return ForwardModel(self.mesh, protocol, contact_impedance=self.contact_impedance,
                            electrode_model=self.electrode_model, solver=self.solver, cg_tol=self.cg_tol,
                            checks=self.checks, _disc=disc)

    def with_checks(self, enabled: bool) -> "ForwardModel":
        """The same model with the run-time value checks on or off (see the class docstring).

        Shares the discretisation (no copy, no new analysis); e.g. ``fast = model.with_checks(False)``
        before a training loop whose σ is positive by construction.
        """
        obj = object.__new__(ForwardModel)
        obj.__dict__.update(self.__dict__)
        obj.checks = bool(enabled)
        return obj


jax.tree_util.register_pytree_node(ForwardModel, ForwardModel.tree_flatten, ForwardModel.tree_unflatten)
