"""Forward model: analytic CEM, pyEIT parity, reciprocity, conservation, derivatives, batching, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit import ForwardModel, mesh, protocol
from jaxeit.forward import unit_stiffness
from jaxeit.forward.analytic import disk_cem_potentials


def random_sigma(m, key, low=0.5, high=2.0):
    return jax.random.uniform(key, (m.n_elements,), minval=low, maxval=high)


def test_unit_stiffness_by_hand():
    # right triangle (0,0), (1,0), (0,1): K = ½[[2,-1,-1],[-1,1,0],[-1,0,1]]
    k = unit_stiffness(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), np.array([[0, 1, 2]]))[0]
    np.testing.assert_allclose(k, 0.5 * np.array([[2, -1, -1], [-1, 1, 0], [-1, 0, 1]]), atol=1e-15)


def test_analytic_disk_cem_converges():
    """Homogeneous unit disk, σ=1, z=0.01, 16 electrodes of width 0.2, adjacent drive of 1."""
    prot = protocol.adjacent(16)
    exact = disk_cem_potentials(prot.currents, contact_impedance=0.01, electrode_width=0.2, n_modes=1000)
    errors = []
    for h in (0.08, 0.04, 0.02):
        m = mesh.disk(h=h)
        fm = ForwardModel(m, prot, contact_impedance=0.01)
        u = np.asarray(fm.electrode_potentials(jnp.ones(m.n_elements)))
        errors.append(np.linalg.norm(u - exact) / np.linalg.norm(exact))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.01, errors


def test_analytic_reference_is_converged():
    prot = protocol.adjacent(16)
    a = disk_cem_potentials(prot.currents, n_modes=500)
    b = disk_cem_potentials(prot.currents, n_modes=1000)
    assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-3
    np.testing.assert_allclose(b.sum(axis=1), 0.0, atol=1e-12)


def test_pyeit_parity():
    pm = pytest.importorskip("pyeit.mesh")
    from pyeit.eit import protocol as pp
    from pyeit.eit.fem import EITForward

    mo = pm.create(16, h0=0.06)
    fwd = EITForward(mo, pp.create(16, dist_exc=1, step_meas=1, parser_meas="std"))
    perm = 1.0 + np.random.default_rng(0).random(mo.element.shape[0])
    v_ref = fwd.solve_eit(perm)
    jac_ref, _ = fwd.compute_jac(perm)
    m = mesh.from_pyeit(mo.node, mo.element, mo.el_pos)
    assert m.ref_node == mo.ref_node
    for solver in ("dense", "klu", "scipy"):
        fm = ForwardModel(m, protocol.adjacent(16), electrode_model="point", solver=solver)
        np.testing.assert_allclose(fm.voltages(perm), v_ref, rtol=1e-6, atol=1e-6 * np.abs(v_ref).max())
        # pyEIT's compute_jac returns -dV/dσ
        np.testing.assert_allclose(fm.jacobian(perm), -jac_ref, rtol=1e-6, atol=1e-6 * np.abs(jac_ref).max())


@pytest.mark.parametrize("model", ["cem", "point"])
def test_reciprocity(small_disk, getkey, model):
    """Swapping the drive pair and the measurement pair leaves the transfer impedance unchanged."""
    sigma = random_sigma(small_disk, getkey())
    z = jax.random.uniform(getkey(), (16,), minval=0.005, maxval=0.05)
    drive, meas = (0, 5), (9, 12)
    fwd = protocol.from_pairs(16, [drive], [[meas]])
    rev = protocol.from_pairs(16, [meas], [[drive]])
    v1 = ForwardModel(small_disk, fwd, contact_impedance=z, electrode_model=model).voltages(sigma)
    v2 = ForwardModel(small_disk, rev, contact_impedance=z, electrode_model=model).voltages(sigma)
    np.testing.assert_allclose(v1, v2, rtol=1e-10)


def test_current_conservation_and_ground(small_disk, getkey):
    """Electrode currents (1/z)∫(U − u) ds recovered from the solution equal the injected currents."""
    sigma = random_sigma(small_disk, getkey())
    z = jax.random.uniform(getkey(), (16,), minval=0.005, maxval=0.05)
    prot = protocol.adjacent(16, skip=3)
    fm = ForwardModel(small_disk, prot, contact_impedance=z)
    u_el = np.asarray(fm.electrode_potentials(sigma))
    u = np.asarray(fm.potentials(sigma))
    np.testing.assert_allclose(u_el.sum(axis=1), 0.0, atol=1e-12)
    a, b = small_disk.electrode_edges.T
    length = np.linalg.norm(small_disk.nodes[a] - small_disk.nodes[b], axis=1)
    el = small_disk.edge_electrode
    flux = (u_el[:, el] - 0.5 * (u[:, a] + u[:, b])) * length / np.asarray(z)[el]
    currents = np.stack([np.bincount(el, weights=f, minlength=16) for f in flux])
    np.testing.assert_allclose(currents, prot.currents, atol=1e-10)


@pytest.mark.parametrize("model", ["cem", "point"])
def test_jacobian_matches_finite_differences_and_jacfwd(tiny_disk, getkey, model):
    sigma = random_sigma(tiny_disk, getkey())
    fm = ForwardModel(tiny_disk, protocol.adjacent(8), electrode_model=model)
    jac = np.asarray(fm.jacobian(sigma))
    jac_fwd = np.asarray(jax.jacfwd(fm.voltages)(sigma))
    jac_rev = np.asarray(jax.jacrev(fm.voltages)(sigma))
    scale = np.abs(jac).max()
    np.testing.assert_allclose(jac_fwd, jac, atol=1e-5 * scale, rtol=1e-5)
    np.testing.assert_allclose(jac_rev, jac, atol=1e-5 * scale, rtol=1e-5)
    eps = 1e-6
    for e in (0, 17, tiny_disk.n_elements - 1):
        d = jnp.zeros(tiny_disk.n_elements).at[e].set(eps)
        fd = (fm.voltages(sigma + d) - fm.voltages(sigma - d)) / (2 * eps)
        np.testing.assert_allclose(fd, jac[:, e], atol=1e-5 * scale, rtol=1e-5)


@pytest.mark.parametrize("per_electrode", [False, True])
def test_gradient_in_contact_impedance(small_disk, getkey, per_electrode):
    sigma = random_sigma(small_disk, getkey())
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    z0 = jnp.full((16,), 0.02) if per_electrode else jnp.asarray(0.02)
    w = jax.random.normal(getkey(), (fm.n_measurements,))
    loss = lambda z: jnp.dot(w, fm.voltages(sigma, contact_impedance=z))  # noqa: E731
    g = np.asarray(jax.grad(loss)(z0))
    direction = jax.random.normal(getkey(), np.shape(z0))
    eps = 1e-7
    fd = (loss(z0 + eps * direction) - loss(z0 - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(np.sum(g * np.asarray(direction)), fd, rtol=1e-6)


def test_vmap_equals_separate_calls(small_disk, getkey):
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    # 7 rows: on a CPU a batch runs in groups of CPU_BATCH_GROUP, so this also covers a partial group
    sigmas = jnp.stack([random_sigma(small_disk, getkey()) for _ in range(7)])
    batched = fm.voltages(sigmas)
    vmapped = jax.vmap(fm.voltages)(sigmas)
    for i in range(7):
        np.testing.assert_allclose(batched[i], fm.voltages(sigmas[i]), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(vmapped[i], fm.voltages(sigmas[i]), rtol=1e-12, atol=1e-14)
    # batched Jacobian and the gradient through a batched call (dense backend: the batching is the same
    # for every backend, and dense compiles fastest)
    fd = ForwardModel(small_disk, protocol.adjacent(16), solver="dense")
    jac = fd.jacobian(sigmas[:5])
    assert jac.shape == (5, 208, small_disk.n_elements)
    np.testing.assert_allclose(jac[4], fd.jacobian(sigmas[4]), rtol=1e-12, atol=1e-14)
    w = jax.random.normal(getkey(), (7, 208), dtype=jnp.float64)
    g = jax.grad(lambda s: jnp.sum(w * fd.voltages(s)))(sigmas)
    np.testing.assert_allclose(g[6], w[6] @ fd.jacobian(sigmas[6]), rtol=1e-10, atol=1e-14)


def test_model_is_a_pytree_through_jit(small_disk, getkey):
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    sigma = random_sigma(small_disk, getkey())
    f = jax.jit(lambda model, s: model.voltages(s))
    np.testing.assert_allclose(f(fm, sigma), fm.voltages(sigma), rtol=1e-12)


def test_equal_geometry_reuses_the_compiled_program(small_disk):
    """Meshes and protocols compare by content: a rebuilt but identical model hits jit's cache."""
    f = jax.jit(lambda model, s: model.voltages(s))
    sigma = jnp.ones(small_disk.n_elements)
    f(ForwardModel(small_disk, protocol.adjacent(16)), sigma)
    same = mesh.Mesh(*(np.array(getattr(small_disk, k)) for k in
                       ("nodes", "triangles", "electrode_edges", "edge_electrode", "electrode_nodes")),
                     ref_node=small_disk.ref_node)
    assert same == small_disk and hash(same) == hash(small_disk) and protocol.adjacent(16) == protocol.adjacent(16)
    f(ForwardModel(same, protocol.adjacent(16)), sigma)
    assert f._cache_size() == 1
    # different content is a different model
    other = protocol.opposite(16)
    assert other != protocol.adjacent(16) and protocol.adjacent(16).subset(np.arange(208) < 100) != protocol.adjacent(16)
    f(ForwardModel(small_disk, other), sigma)
    assert f._cache_size() == 2


def test_trigonometric_patterns_on_disk(small_disk):
    """Trigonometric currents on a homogeneous disk give nearly sinusoidal potentials (eigen-patterns)."""
    prot = protocol.trigonometric(16)
    u = np.asarray(ForwardModel(small_disk, prot).electrode_potentials(jnp.ones(small_disk.n_elements)))
    cos = np.corrcoef(u[0], prot.currents[0])[0, 1]
    assert cos > 0.999


# -- bad input -------------------------------------------------------------------------

def test_bad_sigma(small_disk):
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    e = small_disk.n_elements
    with pytest.raises(ValueError, match="shape"):
        fm.voltages(jnp.ones(e + 1))
    with pytest.raises(ValueError, match="positive"):
        fm.voltages(jnp.ones(e).at[3].set(-1.0))
    with pytest.raises(ValueError, match="NaN"):
        fm.voltages(jnp.ones(e).at[3].set(jnp.nan))
    with pytest.raises(ValueError, match="contact_impedance"):
        fm.voltages(jnp.ones(e), contact_impedance=jnp.ones(3))
    with pytest.raises(ValueError, match="positive"):
        ForwardModel(small_disk, protocol.adjacent(16), contact_impedance=0.0)


def test_electrode_count_mismatch(small_disk):
    with pytest.raises(ValueError, match="16"):
        ForwardModel(small_disk, protocol.adjacent(32))


def test_cem_needs_electrode_edges():
    m = mesh.Mesh.from_arrays([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 2]], [[0, 1, 2], [1, 3, 2], [2, 3, 4]],
                              electrode_nodes=[0, 1, 3, 4], ref_node=2)
    with pytest.raises(ValueError, match="point"):
        ForwardModel(m, protocol.adjacent(4))
    ForwardModel(m, protocol.adjacent(4), electrode_model="point")


def test_unknown_solver_and_model(small_disk):
    with pytest.raises(ValueError, match="solver"):
        ForwardModel(small_disk, protocol.adjacent(16), solver="magic")
    with pytest.raises(ValueError, match="electrode_model"):
        ForwardModel(small_disk, protocol.adjacent(16), electrode_model="gap")
