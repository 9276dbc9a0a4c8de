"""INR reconstruction: bandwidth rule, the jitted step's gradient, fitting, super-resolution."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxeit import ForwardModel, grid, mesh, noise, phantoms, protocol
from jaxeit.recon.inr import INR, INRConfig, bandwidth_for_mesh, mesh_resolution, render, total_variation
from jaxeit.recon.inr.fit import _loss, data_loss, make_problem
from jaxeit.recon.inr.model import domain_frame, factor_features, normalise_coordinates
from jaxeit.recon import reconstruct


def test_bandwidth_scales_with_mesh_density():
    coarse, fine = mesh.disk(h=0.2), mesh.disk(h=0.1)
    ratio = mesh_resolution(coarse) / mesh_resolution(fine)
    assert 1.5 < ratio < 2.5  # halving h roughly halves the resolution length
    assert bandwidth_for_mesh(fine, 0.2) / bandwidth_for_mesh(coarse, 0.2) == pytest.approx(ratio)
    # scale invariance: the same mesh in metres gives the same bandwidth (normalised frame)
    assert bandwidth_for_mesh(mesh.disk(radius=0.14, electrode_width=0.028, h=0.028), 0.2) == pytest.approx(
        bandwidth_for_mesh(coarse, 0.2), rel=0.05)
    with pytest.raises(ValueError):
        bandwidth_for_mesh(coarse, 0.0)


def test_inr_output_positive_and_near_background():
    net = INR(bandwidth=2.0, background=0.3, n_features=16, width=16, depth=2, rngs=nnx.Rngs(params=0))
    s = net(jax.random.uniform(jax.random.PRNGKey(1), (50, 2), minval=-1, maxval=1))
    assert s.shape == (50,) and bool(jnp.all(s > 0))
    np.testing.assert_allclose(s, 0.3, rtol=0.1)


def test_jitted_step_gradient_equals_explicit_jacobian(small_disk):
    """∇θ ‖F(σθ) − v‖² through custom_linear_solve equals (∂σ/∂θ)ᵀ · 2Jᵀ(F − v) with J the dense Jacobian."""
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    v = fm.voltages(jnp.full(small_disk.n_elements, 1.1) + 0.3 * (small_disk.centroids()[:, 0] > 0.3))
    prob, _ = make_problem(fm, v, 16)
    net = INR(bandwidth=2.0, background=prob.background, n_features=16, width=16, depth=2,
              rngs=nnx.Rngs(params=0), output_scale=0.3)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    loss = lambda p: _loss(p, jax.random.PRNGKey(0), graphdef=graphdef, rest=rest, model=fm, v=v,  # noqa: E731
                           prob=prob, regs=(), weights=())[0]
    g_auto = jax.jit(jax.grad(loss))(params)

    def sigma_of(p):   # element σ: exp of the mean nodal log σ
        log_nodes = nnx.merge(graphdef, p, rest).log_sigma(prob.points)
        return jnp.exp(jnp.mean(log_nodes[small_disk.triangles], axis=1)).astype(jnp.float64)

    sigma, vjp = jax.vjp(sigma_of, params)
    jac = fm.jacobian(sigma)
    cot = 2 * jac.T @ (fm.voltages(sigma) - v) / prob.v_norm2
    (g_explicit,) = vjp(cot)
    for a, b in zip(jax.tree.leaves(g_auto), jax.tree.leaves(g_explicit)):
        scale = float(jnp.max(jnp.abs(b))) + 1e-30
        np.testing.assert_allclose(np.asarray(a) / scale, np.asarray(b) / scale, atol=1e-5)


def _p1_matrix(mesh, points):
    """(P, N) dense P1 interpolation matrix at ``points`` (0 rows outside), built with matplotlib's
    trifinder and barycentric coordinates solved per point: independent of jaxeit.grid."""
    import matplotlib.tri as mtri

    finder = mtri.Triangulation(mesh.nodes[:, 0], mesh.nodes[:, 1], mesh.triangles).get_trifinder()
    out = np.zeros((len(points), mesh.n_nodes))
    for i, (x, y) in enumerate(points):
        e = int(finder(x, y))
        if e < 0:
            continue
        tri = mesh.triangles[e]
        a = np.vstack([mesh.nodes[tri].T, np.ones(3)])
        out[i, tri] = np.linalg.solve(a, [x, y, 1.0])
    return out


def test_one_pass_loss_equals_two_pass_formula(small_disk):
    """Precomputed features and one MLP pass at the nodes give the loss of the direct formula:
    ‖F(exp(mean nodal log σθ per element)) − v‖²/‖v‖² + w·TV(exp(P1-interpolated log σθ)/σ_bg inside
    the mask, 1 outside), and its gradient."""
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    v = fm.voltages(jnp.full(small_disk.n_elements, 1.1) + 0.3 * (small_disk.centroids()[:, 0] > 0.3))
    prob, g = make_problem(fm, v, 16)
    assert prob.points.shape == (small_disk.n_nodes, 2) and prob.triangles.shape == (small_disk.n_elements, 3)
    net = INR(bandwidth=0.3, background=prob.background, n_features=64, width=16, depth=2,
              rngs=nnx.Rngs(params=0), output_scale=0.3)
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)
    tv = total_variation(prob.mask, pixel_size=2 / 16)
    factored = prob.with_features(net.features)
    assert factored.feature_basis is not None and factored.features.shape[0] < 128  # smooth features: low rank
    kw = dict(graphdef=graphdef, rest=rest, model=fm, v=v, regs=(tv,), weights=jnp.asarray([0.1]))
    interp = jnp.asarray(_p1_matrix(small_disk, g.points()))

    def direct(p):
        inr = nnx.merge(graphdef, p, rest)
        frame = domain_frame(small_disk)
        log_nodes = inr.log_sigma(normalise_coordinates(small_disk.nodes, *frame)).astype(jnp.float64)
        d = data_loss(fm, jnp.exp(jnp.mean(log_nodes[small_disk.triangles], axis=1)), v, prob.v_norm2)
        image = jnp.exp(interp @ log_nodes).reshape(g.shape) / prob.background
        return d + 0.1 * tv(jnp.where(prob.mask, image, 1.0))

    key = jax.random.PRNGKey(0)
    for p_ in (prob, prob.with_features(net.features, factor=False), factored):
        val, grad = jax.value_and_grad(lambda p: _loss(p, key, prob=p_, **kw)[0])(params)
        ref_val, ref_grad = jax.value_and_grad(direct)(params)
        np.testing.assert_allclose(val, ref_val, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))


def test_factored_features_equal_the_features_to_float32_rounding():
    x = jax.random.uniform(jax.random.PRNGKey(2), (3000, 2), minval=-1, maxval=1)
    smooth = INR(bandwidth=1.0, n_features=256, rngs=nnx.Rngs(params=0)).features.columns(x)
    basis, coeffs = factor_features(smooth)
    assert basis is not None and basis.shape[0] == 512 and basis.shape[1] == coeffs.shape[0] < 400
    rel = float(jnp.linalg.norm(basis @ coeffs - smooth) / jnp.linalg.norm(smooth))
    assert rel < 1e-6
    # broadband features are full rank: nothing to gain, the features come back unchanged
    rough = INR(bandwidth=40.0, n_features=256, rngs=nnx.Rngs(params=0)).features.columns(x)
    basis, coeffs = factor_features(rough)
    assert basis is None and coeffs.shape == rough.shape


def test_total_variation_of_a_disk():
    g = grid.Grid.square(1.0, 64)
    xx, yy = np.meshgrid(g.x, g.y)
    img = 1.0 + 0.5 * np.clip(0.5 - (np.hypot(xx, yy) - 0.4) / (2 / 64), 0, 1)  # anti-aliased edge
    tv = total_variation(np.ones((64, 64), bool), pixel_size=2 / 64, eps=1e-6)
    # isotropic TV of a disk of radius r and jump c is 2πr·c (forward differences add ~7% at a 1-pixel edge)
    assert float(tv(jnp.asarray(img))) == pytest.approx(2 * np.pi * 0.4 * 0.5, rel=0.1)


def test_inr_tv_reconstructs_an_inclusion():
    fine, coarse = mesh.disk(h=0.12), mesh.disk(h=0.2, edge_refinement=0.5)
    ph = phantoms.Phantom.of(1.0, circles=[((0.35, 0.2), 0.3, 2.0)])
    prot = protocol.adjacent(16)
    v = noise.add_noise(ForwardModel(fine, prot).voltages(phantoms.on_mesh(ph, fine)), 50.0, jax.random.PRNGKey(0))
    inv = ForwardModel(coarse, prot)
    g = grid.Grid.square(1.0, 48)
    res = reconstruct(inv, v, "inr+tv", max_iter=150, chunk=50, n_features=64, width=64, grid=g,
                      key=jax.random.PRNGKey(3))
    assert res.history["data"][-1] < 0.2 * res.history["data"][0]
    truth = np.asarray(phantoms.on_mesh(ph, coarse))
    assert np.corrcoef(res.sigma, truth)[0, 1] > 0.6
    assert res.image.shape == (48, 48)
    # super-resolution: the same INR sampled on a finer grid agrees with the coarse one where they coincide
    fine_img = render(res.extras["inr"], grid.Grid.square(1.0, 96), res.extras["frame"])
    np.testing.assert_allclose(fine_img.reshape(48, 2, 48, 2).mean(axis=(1, 3)), res.image, atol=0.1)


def test_reproducible_from_key(small_disk):
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    v = fm.voltages(jnp.full(small_disk.n_elements, 1.3))
    kw = dict(max_iter=20, chunk=10, n_features=16, width=16, depth=2)
    a = reconstruct(fm, v, "inr", key=jax.random.PRNGKey(5), **kw).sigma
    b = reconstruct(fm, v, "inr", key=jax.random.PRNGKey(5), **kw).sigma
    c = reconstruct(fm, v, "inr", key=jax.random.PRNGKey(6), **kw).sigma
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_tiny_misfit_that_grows_is_not_a_divergence(small_disk, monkeypatch):
    """With a faint inclusion the homogeneous start already fits to ~1e-6; the first Adam steps multiply
    that misfit by far more than divergence_factor, yet the fit recovers. Below the floor it is no divergence."""
    from jaxeit.recon import reconstruct
    from jaxeit.recon.inr import fit as fit_module

    fm = ForwardModel(small_disk, protocol.adjacent(16))
    sigma = 1.0 + 0.02 * (np.linalg.norm(small_disk.centroids() - [0.4, 0.1], axis=1) < 0.3)
    v = fm.voltages(jnp.asarray(sigma))
    opts = dict(max_iter=20, learning_rate=0.05, width=16, n_features=32, chunk=20)
    res = reconstruct(fm, v, "inr", **opts)
    assert res.status == "max_iter" and res.n_iter == 20
    growth = max(res.history["data"]) / res.history["data"][0]
    assert growth > 100                                           # the case this test is about
    monkeypatch.setattr(fit_module, "DIVERGENCE_FLOOR", 0.0)      # the rule without the floor stops it
    assert reconstruct(fm, v, "inr", **dict(opts, chunk=10)).status == "diverged"   # (chunk: a fresh trace)


def test_a_fit_that_loses_the_data_after_its_warm_up_stops(small_disk):
    """A regulariser that takes over halfway drags the image away from the data: once the misfit is
    LOST_FIT_FACTOR times its smallest since the warm-up (and above the floor) the fit stops, says so,
    and keeps the last parameters before that step."""
    from jaxeit.recon import reconstruct
    from jaxeit.recon.inr import fit as fit_module

    class TakeOver:
        uses_fraction = True

        def __call__(self, image, key, fraction):
            return jnp.where(fraction > 0.5, 1e3, 0.0) * jnp.mean((image - 3.0) ** 2)

    fm = ForwardModel(small_disk, protocol.adjacent(16))
    sigma = 1.0 + 0.5 * (np.linalg.norm(small_disk.centroids() - [0.3, 0.2], axis=1) < 0.3)
    v = fm.voltages(jnp.asarray(sigma))
    opts = dict(max_iter=80, learning_rate=0.02, width=16, n_features=32, chunk=20)
    free = reconstruct(fm, v, "inr", **opts)
    assert free.status == "max_iter"
    res = reconstruct(fm, v, "inr", regularizers=((1.0, TakeOver()),), **opts)
    assert res.status == "diverged" and 40 < res.n_iter < 80
    data = np.asarray(res.history["data"])
    late = data[int(fit_module.LOST_FIT_WARMUP * 80):-1]
    assert data[-1] > fit_module.LOST_FIT_FACTOR * max(late.min(), fit_module.LOST_FIT_FLOOR)
    assert np.all(np.isfinite(res.sigma))
