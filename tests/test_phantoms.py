"""Conductivity phantoms: partial volumes, random circles, thorax, domain checks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxeit
import jaxeit.mesh
from jaxeit import phantoms as P
from jaxeit.grid import Grid


@pytest.fixture(scope="module")
def mesh():
    return jaxeit.mesh.disk(h=0.1)


@pytest.fixture(scope="module")
def circles200():
    return {n: P.random_circles(jax.random.PRNGKey(7), n, batch=200) for n in (2, 4)}


def _contribution(values, mesh, background=0.0):
    return float(np.sum((np.asarray(values) - background) * mesh.areas()))


# -- partial volumes --------------------------------------------------------------------

@pytest.mark.parametrize("centre, radius", [((0.1, -0.2), 0.3), ((-0.45, 0.3), 0.17), ((0.0, 0.0), 0.55)])
def test_circle_area_fractions(mesh, centre, radius):
    ph = P.Phantom.of(background=0.0, circles=[(centre, radius, 1.0)])
    frac = np.asarray(P.on_mesh(ph, mesh))
    assert frac.min() >= 0.0 and frac.max() <= 1.0
    assert _contribution(frac, mesh) == pytest.approx(np.pi * radius**2, rel=1e-3)
    # partial-volume elements exist and whole elements are exact
    assert ((frac > 0.05) & (frac < 0.95)).sum() > 10
    d = np.linalg.norm(mesh.nodes[mesh.triangles] - np.asarray(centre), axis=-1)
    np.testing.assert_array_equal(frac[d.max(axis=1) < radius - 0.02], 1.0)
    np.testing.assert_array_equal(frac[d.min(axis=1) > radius + 0.02], 0.0)


def test_ellipse_area_and_painting_order(mesh):
    ell = ((0.2, 0.1), (0.4, 0.2), 0.7, 1.0)
    ph = P.Phantom.of(background=0.0, ellipses=[ell])
    assert _contribution(P.on_mesh(ph, mesh), mesh) == pytest.approx(np.pi * 0.4 * 0.2, rel=1e-3)
    # a circle painted over the ellipse's centre: the later shape wins
    both = P.Phantom.of(background=1.0, circles=[((0.2, 0.1), 0.1, 5.0)], ellipses=[ell])
    late = P.Phantom(both.background, both.shapes[::-1])
    pts = np.array([[0.2, 0.1], [0.55, 0.35], [-0.8, 0.0]])
    np.testing.assert_allclose(P.at_points(both, pts), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(P.at_points(late, pts), [5.0, 1.0, 1.0])


def test_on_grid_antialiased():
    grid = Grid.square(1.0, 64)
    ph = P.Phantom.of(background=0.0, circles=[((0.13, -0.21), 0.4, 1.0)])
    img = np.asarray(P.on_grid(ph, grid))
    assert img.shape == grid.shape
    assert img.sum() * grid.dx * grid.dy == pytest.approx(np.pi * 0.16, rel=2e-3)
    r = np.linalg.norm(grid.centres() - np.array([0.13, -0.21]), axis=-1)
    assert (img[r < 0.4 - grid.dx] == 1.0).all() and (img[r > 0.4 + grid.dx] == 0.0).all()
    assert ((img > 0) & (img < 1)).any()  # anti-aliased edge


def test_batch_jit_vmap(mesh, circles200):
    batch = circles200[4][:5]
    assert batch.batch_shape == (5,)
    out = P.on_mesh(batch, mesh, samples=16)
    assert out.shape == (5, mesh.n_elements)
    single = P.on_mesh(batch[2], mesh, samples=16)
    np.testing.assert_allclose(out[2], single, atol=1e-12)
    f = jax.jit(lambda ph: P.on_mesh(ph, mesh, samples=16))
    np.testing.assert_allclose(f(batch), out, atol=1e-12)
    np.testing.assert_allclose(jax.vmap(f)(batch), out, atol=1e-12)
    grid = Grid.square(1.0, 16)
    img = jax.jit(P.on_grid, static_argnums=2)(batch, grid, 2)
    np.testing.assert_allclose(img[1], P.on_grid(batch[1], grid, 2), atol=1e-12)


def test_differentiable_in_shape_parameters(mesh):
    def area(r):
        ph = P.Phantom(jnp.asarray(0.0), (P.Circles(jnp.array([[0.1, 0.2]]), r[None], jnp.array([1.0])),))
        return jnp.sum(P.on_mesh(ph, mesh, samples=64) * mesh.areas())

    g = jax.grad(area)(jnp.asarray(0.3))
    assert g == pytest.approx(2 * np.pi * 0.3, rel=0.1)  # d(area)/dr = perimeter


# -- random circles ---------------------------------------------------------------------

@pytest.mark.parametrize("n", [2, 4])
def test_random_circles_constraints(circles200, n):
    ph = circles200[n]
    (circ,) = ph.shapes
    c, r, v = (np.asarray(a) for a in (circ.centre, circ.radius, circ.value))
    assert c.shape == (200, n, 2) and r.shape == (200, n) and v.shape == (200, n)
    assert np.isfinite(c).all()
    assert (np.abs(c) <= 0.55).all()
    assert ((r >= 0.15) & (r <= 0.25)).all()
    allowed = {2: [0.5, 1.5], 4: [0.01, 0.1, 0.5, 1.5]}[n]
    assert np.isin(v, allowed).all()
    assert set(np.unique(v)) == set(allowed)
    d = np.linalg.norm(c[:, :, None] - c[:, None], axis=-1)
    need = r[:, :, None] + r[:, None] + 0.05
    i, j = np.triu_indices(n, 1)
    assert (d[:, i, j] >= need[:, i, j]).all()
    np.testing.assert_array_equal(np.asarray(ph.background), 1.0)
    P.check_inside(ph, 1.0)


def test_random_circles_reproducible(circles200):
    again = P.random_circles(jax.random.PRNGKey(7), 4, batch=200)
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(circles200[4])):
        np.testing.assert_array_equal(a, b)
    other = P.random_circles(jax.random.PRNGKey(8), 4, batch=200)
    assert not np.array_equal(other.shapes[0].centre, again.shapes[0].centre)
    one = P.random_circles(jax.random.PRNGKey(7), 2)
    assert one.batch_shape == () and one.shapes[0].radius.shape == (2,)
    jitted = jax.jit(P.random_circles, static_argnums=(1, 2))(jax.random.PRNGKey(7), 4, 200)
    np.testing.assert_array_equal(jitted.shapes[0].centre, again.shapes[0].centre)


def test_random_circles_infeasible_raises():
    with pytest.raises(ValueError, match="infeasible"):
        P.random_circles(jax.random.PRNGKey(0), 12, values=[1.0], max_rounds=2, candidates=8)
    with pytest.raises(ValueError, match="values="):
        P.random_circles(jax.random.PRNGKey(0), 3)


# -- thorax -----------------------------------------------------------------------------

def test_thorax_inside_and_disjoint(mesh):
    ph = P.thorax()
    P.check_inside(ph, 0.14)
    unit = P.thorax(radius=1.0)
    P.check_inside(unit, mesh)
    # no point lies in two inclusions
    g = Grid.square(1.0, 200)
    pts = g.points()
    sd = jax.jit(lambda ph, p: jnp.concatenate([f.signed_distance(p) for f in ph.shapes], axis=1))(unit, pts)
    inside = np.asarray(sd) <= 0
    assert inside.shape[1] == 3 and inside.sum(axis=1).max() == 1
    # conductivities in S/m and where they belong
    vals = np.asarray(P.at_points(ph, np.array([[0.0, 0.0], [-0.066, -0.011], [0.066, -0.011], [0.0, 0.056]])))
    np.testing.assert_allclose(vals, [0.2, 0.05, 0.05, 0.3])
    sigma = np.asarray(P.on_mesh(unit, mesh))
    assert sigma.min() == pytest.approx(0.05) and sigma.max() == pytest.approx(0.3)
    # partial volumes: the integrated contrast matches the shapes' areas
    g = P.THORAX_GEOMETRY
    contrast = 2 * (0.05 - 0.2) * np.pi * np.prod(g["lung_axes"]) + (0.3 - 0.2) * np.pi * g["heart_radius"] ** 2
    assert _contribution(sigma, mesh, background=0.2) == pytest.approx(contrast, rel=1e-3)


# -- domain checks ----------------------------------------------------------------------

def test_check_inside_raises(mesh):
    out = P.Phantom.of(1.0, circles=[((0.0, 0.0), 0.2, 2.0), ((0.85, 0.0), 0.2, 2.0)])
    with pytest.raises(ValueError, match=r"circles\[1\].*outside the disk"):
        P.check_inside(out, 1.0)
    with pytest.raises(ValueError, match="outside the mesh boundary"):
        P.check_inside(out, mesh)
    ell = P.Phantom.of(1.0, ellipses=[((0.0, 0.5), (0.1, 0.6), 0.0, 2.0)])
    with pytest.raises(ValueError, match="ellipses"):
        P.check_inside(ell, 1.0)
    P.check_inside(P.Phantom.of(1.0, circles=[((0.0, 0.0), 0.5, 2.0)]), mesh)
