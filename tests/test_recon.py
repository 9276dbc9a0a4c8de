"""Classical reconstructions on tiny problems: they recover what they should, and reject bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit import ForwardModel, mesh, noise, phantoms, protocol
from jaxeit.recon import METHODS, fit_homogeneous, reconstruct
from jaxeit.recon.operators import difference_operator, element_adjacency


@pytest.fixture(scope="module")
def problem():
    """Data from a finer mesh than the inverse mesh, one conductive and one resistive circle, 50 dB."""
    fine = mesh.disk(h=0.12)
    coarse = mesh.disk(h=0.2, edge_refinement=0.5)
    ph = phantoms.Phantom.of(1.0, circles=[((0.4, 0.2), 0.25, 2.0), ((-0.35, -0.3), 0.3, 0.5)])
    prot = protocol.adjacent(16)
    v = noise.add_noise(ForwardModel(fine, prot).voltages(phantoms.on_mesh(ph, fine)), 50.0, jax.random.PRNGKey(0))
    inv = ForwardModel(coarse, prot)
    truth = np.asarray(phantoms.on_mesh(ph, coarse))
    return inv, v, truth


def test_fit_homogeneous_recovers_constant(small_disk):
    fm = ForwardModel(small_disk, protocol.adjacent(16), contact_impedance=0.02)
    v = fm.voltages(jnp.full(small_disk.n_elements, 2.7))
    assert abs(fit_homogeneous(fm, v) - 2.7) < 1e-6


@pytest.mark.parametrize("method", ["one-step", "gn", "lm", "tv"])
def test_absolute_methods_beat_the_homogeneous_guess(problem, method):
    inv, v, truth = problem
    res = reconstruct(inv, v, method, max_iter=8) if method in ("gn", "lm", "tv") else reconstruct(inv, v, method)
    err0 = np.linalg.norm(truth - 1.0)
    err = np.linalg.norm(res.sigma - truth)
    assert err < 0.85 * err0, (method, err, err0)
    # inclusions with the right sign: higher σ at the conductive one than at the resistive one
    c = inv.mesh.centroids()
    hot = np.linalg.norm(c - [0.4, 0.2], axis=1) < 0.15
    cold = np.linalg.norm(c - [-0.35, -0.3], axis=1) < 0.15
    assert res.sigma[hot].mean() > 1.0 > res.sigma[cold].mean()
    assert res.history["residual"], "history must be recorded"


def test_iterative_methods_reduce_the_objective(problem):
    inv, v, _ = problem
    for method in ("gn", "tv"):
        obj = reconstruct(inv, v, method, max_iter=6).history["objective"]
        assert obj[-1] < obj[0]


def test_difference_methods(problem):
    inv, v, truth = problem
    v_ref = inv.voltages(jnp.ones(inv.n_elements))
    for method in ("one-step", "bp"):
        res = reconstruct(inv, v, method, reference=v_ref)
        corr = np.corrcoef(res.sigma, truth)[0, 1]
        assert corr > 0.4, (method, corr)


def test_tv_is_piecewise_constant(problem):
    inv, v, _ = problem
    res_tv = reconstruct(inv, v, "tv")
    res_gn = reconstruct(inv, v, "gn")
    d = difference_operator(inv.mesh)

    def top_share(sigma):  # share of the total variation carried by the 20% largest jumps
        jumps = np.sort(np.abs(d @ sigma))[::-1]
        return jumps[: len(jumps) // 5].sum() / jumps.sum()

    # TV concentrates the variation in few jumps (edges of flat regions); GN spreads it
    assert top_share(res_tv.sigma) > top_share(res_gn.sigma) + 0.1


def test_element_adjacency(small_disk):
    pairs, lengths = element_adjacency(small_disk)
    n_edges = len(small_disk.edges())
    n_boundary = len(small_disk.boundary_edges())
    assert len(pairs) == n_edges - n_boundary
    assert np.all(lengths > 0)


def test_bad_voltages(problem):
    inv, v, _ = problem
    with pytest.raises(ValueError, match="shape"):
        reconstruct(inv, v[:-1], "gn")
    with pytest.raises(ValueError, match="NaN"):
        reconstruct(inv, np.asarray(v).copy() * np.where(np.arange(len(v)) == 3, np.nan, 1.0), "gn")
    with pytest.raises(ValueError, match="reference"):
        reconstruct(inv, v, "bp")
    with pytest.raises(ValueError, match="method"):
        reconstruct(inv, v, "magic")
    assert {"one-step", "gn", "lm", "tv", "bp", "inr", "inr+tv", "diff-inr"} <= set(METHODS)
