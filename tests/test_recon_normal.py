"""The normal equations of GN / LM / TV solved by Woodbury + refinement agree with the dense solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit import ForwardModel, mesh, protocol
from jaxeit.recon.linear import prior_matrix, prior_triplets
from jaxeit.recon.normal import SparsePattern, solve_normal
from jaxeit.recon.operators import element_adjacency


@pytest.fixture(scope="module")
def disk_problem():
    m = mesh.disk(h=0.1)
    fm = ForwardModel(m, protocol.adjacent(16), contact_impedance=0.01, solver="klu")
    sigma = jnp.asarray(np.random.default_rng(0).uniform(0.5, 2.0, m.n_elements))
    return m, fm, fm.jacobian(sigma), sigma


def _tv_laplacian(m, backend):
    pairs, lengths = element_adjacency(m)
    a, b = pairs[:, 0], pairs[:, 1]
    return a, b, lengths, SparsePattern.from_triplets(np.concatenate([a, b, a, b]), np.concatenate([a, b, b, a]),
                                                      m.n_elements, backend)


@pytest.mark.parametrize("backend", ["klu", "dense", "scipy"])
@pytest.mark.parametrize("beta", [1e-2, 1e-8])
def test_tv_system_matches_the_dense_solve(disk_problem, backend, beta):
    """TV's weighted Laplacian with a 1e-12 ridge is nearly singular (constants, decoupled regions):
    the refined Woodbury solution still equals the dense Cholesky solution."""
    m, fm, jac, sigma = disk_problem
    a, b, lengths, pattern = _tv_laplacian(m, backend)
    assert pattern.backend == backend
    y = lengths * (sigma[a] - sigma[b])
    w = 1e-3 * lengths**2 / jnp.sqrt(y**2 + beta)
    n = m.n_elements
    hess = (jac.T @ jac).at[a, a].add(w).at[b, b].add(w).at[a, b].add(-w).at[b, a].add(-w)
    ridge = 1e-12 * jnp.trace(hess) / n
    rhs = jnp.asarray(np.random.default_rng(1).normal(size=n))
    dense = jnp.linalg.solve(hess + ridge * jnp.eye(n), rhs)
    fast = solve_normal(jac, pattern, pattern.values(jnp.concatenate([w, w, -w, -w]), ridge), rhs)
    assert float(jnp.linalg.norm(fast - dense) / jnp.linalg.norm(dense)) < 1e-8


@pytest.mark.parametrize("prior", ["laplace", "tikhonov", "noser"])
def test_gn_system_and_sparse_prior_match_the_dense_forms(disk_problem, prior):
    m, fm, jac, _ = disk_problem
    jtj_diag = np.asarray(jnp.sum(jac**2, axis=0))
    rows, cols, values = prior_triplets(m, prior, jtj_diag)
    pattern = SparsePattern.from_triplets(rows, cols, m.n_elements, "klu")
    r_sparse = pattern.values(jnp.asarray(values))
    r_dense = prior_matrix(m, prior, jtj_diag)
    x = jnp.asarray(np.random.default_rng(2).normal(size=m.n_elements))
    np.testing.assert_allclose(pattern.matvec(r_sparse, x), r_dense @ np.asarray(x), rtol=1e-12, atol=1e-12)
    lam = 10.0 * float(np.mean(jtj_diag) / np.mean(np.diag(r_dense)))
    damping = 0.01 * jtj_diag
    dense = np.linalg.solve(np.asarray(jac.T @ jac) + lam * r_dense + np.diag(damping), np.asarray(x))
    fast = solve_normal(jac, pattern, lam * r_sparse + pattern.values(jnp.zeros(pattern.slot.shape[0]), damping), x)
    assert np.linalg.norm(np.asarray(fast) - dense) / np.linalg.norm(dense) < 1e-9


def test_solve_normal_runs_under_jit_and_a_dense_pattern_falls_back_to_dense(disk_problem):
    m, fm, jac, _ = disk_problem
    n = m.n_elements
    full = np.ones((n, n)) + n * np.eye(n)           # a dense SPD "prior": no gain from sparsity
    pattern, values = SparsePattern.from_dense(full, "klu")
    assert pattern.backend == "dense"
    rhs = jnp.ones(n)
    x = jax.jit(solve_normal)(jac, pattern, values, rhs)
    np.testing.assert_allclose(np.asarray(jac.T @ (jac @ x)) + full @ np.asarray(x), np.ones(n), rtol=1e-9)


@pytest.mark.parametrize("path", ["woodbury", "dense"])
@pytest.mark.parametrize("prior", ["laplace", "noser", "kotre", "matrix"])
def test_linear_gn_operator_equals_the_dense_formula(disk_problem, prior, path, monkeypatch):
    """H = (JᵀWJ + λR)⁻¹JᵀW, built through solve_normal or densely (the cheaper path by flop count),
    equals the dense formula (weights included)."""
    from jaxeit.recon import linear
    from jaxeit.recon.linear import LinearGN

    monkeypatch.setattr(linear, "_WOODBURY_FLOP_COST", 0.0 if path == "woodbury" else 1e12)
    m, fm, _, _ = disk_problem
    w = np.random.default_rng(3).uniform(0.5, 2.0, fm.n_measurements)
    r_given = None
    if prior == "matrix":   # a dense SPD prior (no sparsity)
        c = m.centroids()
        r_given = np.linalg.inv(np.exp(-np.sum((c[:, None] - c[None]) ** 2, -1) / 0.1) + 1e-3 * np.eye(m.n_elements))
    op = LinearGN.build(fm, background=1.3, prior=r_given if prior == "matrix" else prior, alpha=2.0, weights=w)
    jac = np.asarray(fm.jacobian(jnp.full(m.n_elements, 1.3))) * 1.3
    jtwj = jac.T @ (jac * w[:, None])
    r = r_given if prior == "matrix" else prior_matrix(m, prior, np.diag(jtwj))
    lam = 2.0 * np.mean(np.diag(jtwj)) / np.mean(np.diag(r))
    expected = np.linalg.solve(jtwj + lam * r, jac.T * w[None, :])
    assert np.isclose(op.lam, lam, rtol=1e-12)
    assert np.linalg.norm(op.h - expected) / np.linalg.norm(expected) < 1e-8


def test_the_cheaper_path_by_flops():
    """Dense for the KTC tank's many measurements, Woodbury for a fine mesh with few."""
    from jaxeit.recon.linear import _dense_is_cheaper

    assert _dense_is_cheaper(1566, 1404) and _dense_is_cheaper(1566, 513)
    assert not _dense_is_cheaper(3310, 208) and not _dense_is_cheaper(17_000, 2356)


def test_linear_gn_takes_a_precomputed_jacobian(disk_problem):
    """One linearisation shared by several priors gives the same operator; a wrong shape is named."""
    from jaxeit.recon.linear import LinearGN

    m, fm, _, _ = disk_problem
    jac = fm.jacobian(jnp.full(m.n_elements, 1.3))
    own = LinearGN.build(fm, background=1.3, prior="laplace", alpha=2.0)
    given = LinearGN.build(fm, background=1.3, prior="laplace", alpha=2.0, jacobian=jac)
    np.testing.assert_allclose(given.h, own.h, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match=r"jacobian must be \(208, "):
        LinearGN.build(fm, background=1.3, prior="laplace", jacobian=np.asarray(jac)[:-1])
