"""Pixel grids and mesh ↔ grid transfer operators."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxeit
import jaxeit.mesh
from jaxeit import grid as G


@pytest.fixture(scope="module")
def mesh():
    return jaxeit.mesh.disk(h=0.1)


@pytest.fixture(scope="module")
def grid(mesh):
    return G.Grid.for_mesh(mesh, size=48, pad=0.05)


@pytest.fixture(scope="module")
def ops(mesh, grid):
    return {
        "elements": G.mesh_to_grid_elements(mesh, grid),
        "nodes": G.mesh_to_grid_nodes(mesh, grid),
        "to_mesh": G.grid_to_mesh(mesh, grid, samples=16),
        "e2n": G.elements_to_nodes(mesh),
        "n2e": G.nodes_to_elements(mesh),
    }


def _interior(mesh, grid, layers=2.0):
    """(E,) elements farther than `layers` pixels from the unit circle."""
    far = np.linalg.norm(mesh.nodes[mesh.triangles], axis=-1).max(axis=1)
    return far < 1.0 - layers * grid.dx


# -- Grid ------------------------------------------------------------------------------

def test_grid_geometry(mesh, grid):
    assert grid.shape == (48, 48)
    assert grid.x0 == pytest.approx(-1.05) and grid.x1 == pytest.approx(1.05)
    assert grid.dx == pytest.approx(2.1 / 48) and grid.dy == pytest.approx(grid.dx)
    c = grid.centres()
    assert c.shape == (48, 48, 2)
    np.testing.assert_allclose(c[3, 5], [grid.x[5], grid.y[3]])  # row index = y
    assert grid.x[0] == pytest.approx(grid.x0 + grid.dx / 2)
    assert grid.extent == (grid.x0, grid.x1, grid.y0, grid.y1)
    assert G.Grid.for_mesh(mesh) == G.Grid.for_mesh(mesh)  # hashable, by value
    with pytest.raises(ValueError):
        G.Grid(1.0, 0.0, 0.0, 1.0)


def test_domain_mask(mesh, grid):
    mask = G.domain_mask(grid, mesh)
    r = np.linalg.norm(grid.centres(), axis=-1)
    assert mask.shape == grid.shape and mask.dtype == bool
    assert mask[r < 0.98].all() and not mask[r > 1.0].any()


def test_locate_barycentric(mesh):
    pts = mesh.centroids()[:50]
    element, bary = G.locate(mesh, np.vstack([pts, [[2.0, 0.0]]]))
    np.testing.assert_array_equal(element[:50], np.arange(50))
    np.testing.assert_allclose(bary[:50], 1 / 3, atol=1e-12)
    assert element[50] == -1


def test_subtriangle_barycentres():
    for n in (1, 2, 3, 16):
        b = G.subtriangle_barycentres(n)
        assert b.shape == (n * n, 3)
        assert (b > 0).all()
        np.testing.assert_allclose(b.sum(axis=1), 1.0)
        np.testing.assert_allclose(b.mean(axis=0), 1 / 3)  # exact for linear functions


# -- operators ---------------------------------------------------------------------------

def test_nodes_linear_exact(mesh, grid, ops):
    f = lambda p: 0.3 + 1.7 * p[..., 0] - 0.8 * p[..., 1]  # noqa: E731
    img = np.asarray(ops["nodes"](f(mesh.nodes)))
    mask = G.domain_mask(grid, mesh)
    np.testing.assert_allclose(img[mask], f(grid.centres())[mask], atol=1e-12)
    assert (img[~mask] == 0).all()


def test_elements_constant_and_fill(mesh, grid, ops):
    mask = G.domain_mask(grid, mesh)
    img = np.asarray(ops["elements"](np.full(mesh.n_elements, 2.5)))
    assert (img[mask] == 2.5).all() and (img[~mask] == 0).all()
    img_nan = np.asarray(G.mesh_to_grid_elements(mesh, grid, fill=np.nan)(np.full(mesh.n_elements, 2.5)))
    assert (img_nan[mask] == 2.5).all() and np.isnan(img_nan[~mask]).all()


def test_elements_lookup_picks_containing_element(mesh, grid, ops):
    element, _ = G.locate(mesh, grid.points())
    img = np.asarray(ops["elements"](np.arange(mesh.n_elements, dtype=float)))
    inside = element >= 0
    np.testing.assert_array_equal(img.reshape(-1)[inside], element[inside])


def test_grid_to_mesh_constant_and_linear(mesh, grid, ops):
    to_mesh = ops["to_mesh"]
    np.testing.assert_allclose(to_mesh(np.full(grid.shape, 1.3)), 1.3, rtol=1e-12)
    # bilinear interpolation is exact for linear images; element mean = value at the centroid
    lin = lambda p: 0.5 - 0.7 * p[..., 0] + 0.2 * p[..., 1]  # noqa: E731
    np.testing.assert_allclose(to_mesh(lin(grid.centres())), lin(mesh.centroids()), atol=1e-12)
    # constant inside the domain, zero outside: interior elements see only the constant
    mask = G.domain_mask(grid, mesh)
    vals = np.asarray(to_mesh(np.where(mask, 1.3, 0.0)))
    inner = _interior(mesh, grid)
    np.testing.assert_allclose(vals[inner], 1.3, rtol=1e-12)
    assert (vals[~inner] < 1.3 + 1e-12).all()


def test_grid_to_mesh_mask_ignores_fill(mesh, grid):
    mask = G.domain_mask(grid, mesh)
    to_mesh = G.grid_to_mesh(mesh, grid, samples=9, mask=mask)
    image = G.mesh_to_grid_elements(mesh, grid, fill=np.nan)(np.full(mesh.n_elements, 0.7))
    np.testing.assert_allclose(to_mesh(image), 0.7, rtol=1e-12)  # no NaN, no dilution at the boundary
    with pytest.raises(ValueError, match="perfect square"):
        G.grid_to_mesh(mesh, grid, samples=10)


def test_elements_to_nodes(mesh, ops):
    np.testing.assert_allclose(ops["e2n"](np.full(mesh.n_elements, -0.4)), -0.4, rtol=1e-12)
    np.testing.assert_allclose(ops["n2e"](np.full(mesh.n_nodes, 3.0)), 3.0, rtol=1e-12)
    dense = ops["e2n"].todense()
    assert dense.shape == (mesh.n_nodes, mesh.n_elements)
    # node 0: area-weighted mean of the elements around it
    around = np.flatnonzero((mesh.triangles == 0).any(axis=1))
    a = mesh.areas()[around]
    np.testing.assert_allclose(dense[0, around], a / a.sum())


@pytest.mark.parametrize("name", ["elements", "nodes", "to_mesh", "e2n", "n2e"])
def test_transpose_is_adjoint(ops, name):
    op = ops[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(op.in_shape)
    y = rng.standard_normal(op.out_shape)
    lhs = np.vdot(op(x), y)
    rhs = np.vdot(x, op.T(y))
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert op.T.in_shape == op.out_shape and op.T.out_shape == op.in_shape


def test_jit_vmap_grad_batch(mesh, grid, ops):
    op = ops["nodes"]
    rng = np.random.default_rng(1)
    xb = rng.standard_normal((3, 2, mesh.n_nodes))
    ref = op(xb)
    assert ref.shape == (3, 2) + grid.shape
    np.testing.assert_allclose(jax.jit(op)(xb), ref, atol=1e-13)
    np.testing.assert_allclose(jax.vmap(op)(xb), ref, atol=1e-13)
    np.testing.assert_allclose(jax.jit(lambda o, x: o(x))(op, xb[0, 0]), ref[0, 0], atol=1e-13)  # op as argument
    w = rng.standard_normal(grid.shape)
    g = jax.grad(lambda x: jnp.sum(op(x) * w))(xb[0, 0])
    np.testing.assert_allclose(g, op.T(w), atol=1e-12)
    # NaN fill passes through jit without retracing trouble and keeps gradients finite
    op_nan = G.mesh_to_grid_elements(mesh, grid, fill=np.nan)
    g = jax.grad(lambda x: jnp.nansum(jax.jit(lambda o, v: o(v))(op_nan, x)))(jnp.ones(mesh.n_elements))
    assert np.isfinite(g).all()


def test_dtype_and_shape_errors(mesh, ops):
    out = ops["e2n"](np.ones(mesh.n_elements, np.float32))
    assert out.dtype == jnp.float32
    out = ops["e2n"](np.ones(mesh.n_elements, np.complex128) * (1 + 2j))
    np.testing.assert_allclose(out, 1 + 2j)
    with pytest.raises(ValueError, match="expected input"):
        ops["e2n"](np.ones(mesh.n_nodes + 1))


def test_point_location_is_fast():
    """256×256 pixels on a ~20k-element mesh (structured, no gmsh) in well under a second."""
    n = 101
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    nodes = np.column_stack([x.ravel(), y.ravel()])
    k = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    tri = np.concatenate([np.stack([k, k + 1, k + n + 1], 1), np.stack([k, k + n + 1, k + n], 1)])
    mesh = jaxeit.mesh.Mesh.from_arrays(nodes, tri, electrode_nodes=[n - 1], ref_node=0)
    assert mesh.n_elements == 20_000
    grid = G.Grid.for_mesh(mesh, size=256)
    t0 = time.perf_counter()
    op = G.mesh_to_grid_nodes(mesh, grid)
    elapsed = time.perf_counter() - t0
    assert G.domain_mask(grid, mesh).all()
    assert op.nnz <= 3 * 256 * 256
    assert elapsed < 3.0, f"mesh_to_grid_nodes took {elapsed:.2f} s"
