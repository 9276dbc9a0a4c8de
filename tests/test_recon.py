"""Classical reconstructions on tiny problems: they recover what they should, and reject bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxeit.dgm  # noqa: F401  (the learned methods register on import: the same registry in every run)
from jaxeit import ForwardModel, mesh, noise, phantoms, protocol
from jaxeit.dgm import LearnedMethod
from jaxeit.recon import METHODS, STATUSES, GaussNewton, Result, fit_homogeneous, reconstruct
from jaxeit.recon.driver import iterate
from jaxeit.recon.operators import difference_operator, element_adjacency

from .test_diffinr import TinyPrior


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
    assert {"one-step", "gn", "lm", "tv", "bp", "tv-log", "gn-gaussian", "inr", "inr+tv", "diff-inr"} <= set(METHODS)


# -- the registry: every method through both call forms -----------------------------------------

_NET = dict(n_features=8, width=8, depth=1, chunk=2, max_iter=4)
#: small settings per method, so the whole registry runs in seconds (a method missing here runs its defaults)
QUICK = {"gn": dict(max_iter=2), "lm": dict(max_iter=2), "tv": dict(max_iter=2), "tv-log": dict(max_iter=2),
         "gn-gaussian": dict(max_iter=2, corrlength=0.5, variance=0.1), "inr": dict(_NET, grid_size=8),
         "inr+tv": dict(_NET, grid_size=8), "diff-inr": dict(_NET, prior=TinyPrior()),
         "greit": dict(n_targets=40, target_radius=0.2, grid_size=8)}


@pytest.fixture(scope="module")
def tiny_problem(tiny_disk):
    fm = ForwardModel(tiny_disk, protocol.adjacent(8))
    sigma = 1.0 + 0.5 * (np.linalg.norm(tiny_disk.centroids() - [0.3, 0.2], axis=1) < 0.4)
    return fm, np.asarray(fm.voltages(jnp.asarray(sigma))), np.asarray(fm.voltages(jnp.ones(tiny_disk.n_elements)))


#: the methods that run on any geometry; the learned ones know only their training geometry and are run on
#: it in test_dgm_pretrained.py (here they must refuse the tiny disk: test_learned_methods_refuse_...)
GENERAL = sorted(n for n, c in METHODS.items() if not issubclass(c, LearnedMethod))


@pytest.mark.parametrize("name", GENERAL)
def test_every_registered_method_runs_in_both_forms(tiny_problem, name):
    fm, v, v_ref = tiny_problem
    cls = METHODS[name]
    ref = {"reference": v_ref} if cls.uses_reference == "required" else {}
    opts = QUICK.get(name, {})
    by_name = reconstruct(fm, v, name, **ref, **opts)
    by_object = reconstruct(fm, v, cls(**opts), **ref)
    for res in (by_name, by_object):
        assert isinstance(res, Result) and res.method == name and res.status in STATUSES
        assert res.sigma.shape == (fm.n_elements,) and np.all(np.isfinite(res.sigma))
    np.testing.assert_array_equal(by_name.sigma, by_object.sigma)
    with pytest.raises(ValueError, match="its options are"):
        reconstruct(fm, v, name, no_such_option=1, **ref)
    with pytest.raises(ValueError, match="its options are"):
        cls.from_options(iterations=3)


@pytest.mark.parametrize("name", sorted(set(METHODS) - set(GENERAL)))
def test_learned_methods_refuse_a_geometry_they_were_not_trained_on(tiny_problem, name):
    fm, v, _ = tiny_problem
    with pytest.raises(ValueError, match="trained on this geometry|no score model is shipped"):
        reconstruct(fm, v, name)
    with pytest.raises(ValueError, match="its options are"):
        reconstruct(fm, v, name, no_such_option=1)


def test_object_and_string_forms_agree_and_options_override(problem):
    inv, v, _ = problem
    a = reconstruct(inv, v, GaussNewton(alpha=1e-2, max_iter=3))
    b = reconstruct(inv, v, "gn", alpha=1e-2, max_iter=3)
    c = reconstruct(inv, v, GaussNewton(alpha=5.0), alpha=1e-2, max_iter=3)
    np.testing.assert_array_equal(a.sigma, b.sigma)
    np.testing.assert_array_equal(a.sigma, c.sigma)
    assert a.n_iter <= 3 and len(a.history["objective"]) == a.n_iter and len(a.history["residual"]) == a.n_iter


def test_status_says_why_the_run_stopped(problem):
    inv, v, _ = problem
    assert reconstruct(inv, v, "gn", max_iter=1).status == "max_iter"
    assert reconstruct(inv, v, "gn", max_iter=30, tol=0.5).status == "converged"
    assert reconstruct(inv, v, "one-step").status == "done"


def _halve(state, target):
    x, = state
    new = (x + target) / 2
    return (new,), {"objective": jnp.sum((new - target) ** 2)}, jnp.asarray(0, jnp.int32)


def _explode(state):
    new = state[0] * 10.0
    return (new,), {"objective": jnp.where(new > 1e3, jnp.nan, new)}, jnp.asarray(0, jnp.int32)


def test_driver_runs_max_iter_over_chunks_and_stops_a_divergence():
    run = iterate(_halve, (jnp.zeros(3),), (jnp.ones(3),), max_iter=7, chunk=3)
    assert run.n_iter == 7 and run.status == "max_iter" and len(run.history["objective"]) == 7
    np.testing.assert_allclose(run.state[0], 1 - 0.5 ** 7)
    bad = iterate(_explode, (jnp.asarray(1.0),), max_iter=20, chunk=4)
    assert bad.status == "diverged" and float(bad.state[0]) == 1e3  # the last iterate with a finite objective
    assert bad.n_iter == 4


# -- bad input: a ValueError that names the problem ---------------------------------------------

@pytest.mark.parametrize("data, options, phrase", [
    ("zeros", {}, "all zero"),
    ("constant", {}, "constant"),
    ("v", dict(alpha=0.0), "alpha must be a finite number > 0"),
    ("v", dict(alpha=-1.0), "alpha must be a finite number > 0"),
    ("v", dict(alpha=float("nan")), "alpha must be a finite number > 0"),
    ("v", dict(max_iter=-3), "max_iter must be an integer >= 1"),
    ("v", dict(max_iter=0), "max_iter must be an integer >= 1"),
    ("v", dict(max_iter=2.5), "max_iter must be an integer >= 1"),
    ("v", dict(sigma0=np.ones(5)), "sigma0 must be a float or"),
    ("v", dict(sigma0=-1.0), "sigma0 must be a positive"),
    ("v", dict(iterations=3), "has no option 'iterations'; its options are"),
    ("v", dict(prior="lm"), "prior must be one of"),
])
def test_bad_input_is_a_clear_error(tiny_problem, data, options, phrase):
    fm, v, _ = tiny_problem
    arr = {"zeros": np.zeros_like(v), "constant": np.full_like(v, 0.3), "v": v}[data]
    with pytest.raises(ValueError, match=phrase):
        reconstruct(fm, arr, "gn", **options)


def test_reference_misuse_is_a_clear_error(tiny_problem):
    fm, v, v_ref = tiny_problem
    with pytest.raises(ValueError, match="equals reference"):
        reconstruct(fm, v, "one-step", reference=v)
    with pytest.raises(ValueError, match="all zero"):
        reconstruct(fm, v, "one-step", reference=np.zeros_like(v))
    with pytest.raises(ValueError, match="does not use reference"):
        reconstruct(fm, v, "gn", reference=v_ref)
    with pytest.raises(ValueError, match="difference method"):
        reconstruct(fm, v, "bp")
    with pytest.raises(ValueError, match="tv_weight must be a finite number >= 0"):
        reconstruct(fm, v, "inr+tv", tv_weight=-1.0)
    with pytest.raises(ValueError, match="chunk must be an integer >= 1"):
        reconstruct(fm, v, "inr", chunk=0)


def test_inr_runs_exactly_max_iter(tiny_problem):
    """max_iter is not rounded to whole chunks (3 iterations with chunk 50 used to run 50)."""
    fm, v, _ = tiny_problem
    res = reconstruct(fm, v, "inr+tv", max_iter=3, n_features=8, width=8, depth=1, grid_size=8)
    assert res.n_iter == 3 and len(res.history["data"]) == 3


def test_the_documented_way_to_add_a_method_works(tiny_problem, monkeypatch):
    """docs/architecture.md's "How to add a method" example, run as written and registered."""
    import dataclasses
    import re
    from pathlib import Path

    from jaxeit.recon import registry
    from jaxeit.recon.driver import CONTINUE
    from jaxeit.recon.method import Method, sigma_start

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    code = re.search(r"## How to add a method\n\n```python\n(.*?)```", doc, re.S).group(1)
    assert len(code.strip().splitlines()) <= 30
    ns = dict(dataclasses=dataclasses, jnp=jnp, np=np, Method=Method, Result=Result, iterate=iterate,
              CONTINUE=CONTINUE, sigma_start=sigma_start, fit_homogeneous=fit_homogeneous)
    exec(code, ns)
    monkeypatch.setitem(registry.METHODS, "landweber", ns["Landweber"])
    fm, v, _ = tiny_problem
    res = reconstruct(fm, v, "landweber", tau=0.5, max_iter=3)
    assert res.method == "landweber" and res.n_iter == 3 and res.status == "max_iter"
    assert res.history["objective"][-1] < res.history["objective"][0]
    with pytest.raises(ValueError, match="its options are"):
        reconstruct(fm, v, "landweber", step=1.0)
