"""Shapes data set of the diffusion prior: ranges, counts, reproducibility, outside-disk rule, normalisation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit.priors import shapes

CFG = shapes.ShapesConfig()


KEY = jax.random.PRNGKey(3)
B, N = 256, 32


@pytest.fixture(scope="module")
def batch():
    """256 images' shapes and their 32×32 conductivity images (one compilation each)."""
    sigma, s = shapes.sample_conductivity(KEY, B, size=N)
    return np.asarray(sigma), jax.tree_util.tree_map(np.asarray, s)


def test_images_span_minus_one_to_one_and_are_reproducible(batch):
    x = shapes.sample_images(KEY, B, size=N)                # reuses the fixture's compiled stages
    assert x.shape == (B, N, N) and x.dtype == jnp.float32
    x = np.asarray(x)
    inside = shapes.disk_mask(N)
    # per-image min/max normalisation over the disk: every image spans exactly [-1, 1]
    np.testing.assert_allclose(x[:, inside].min(axis=1), -1.0, atol=1e-6)
    np.testing.assert_allclose(x[:, inside].max(axis=1), 1.0, atol=1e-6)
    assert x.min() >= -1.0 and x.max() <= 1.0
    # the images are the normalised conductivities of the same key
    np.testing.assert_allclose(x, np.asarray(shapes.normalize(batch[0], inside)[0]), atol=1e-6)
    np.testing.assert_array_equal(x, np.asarray(shapes.sample_images(KEY, B, size=N)))
    assert not np.array_equal(x, np.asarray(shapes.sample_images(jax.random.PRNGKey(1), B, size=N)))


def test_counts_kinds_sizes_and_values(batch):
    _, s = batch
    count = s.active.sum(axis=1)
    assert count.min() >= CFG.min_shapes and count.max() <= CFG.max_shapes
    assert set(np.unique(count)) == set(range(CFG.min_shapes, CFG.max_shapes + 1))
    # the active shapes are the first `count` slots, sorted largest first
    np.testing.assert_array_equal(s.active, np.arange(CFG.max_shapes)[None] < count[:, None])
    assert (np.diff(s.radius, axis=1) <= 0).all()
    assert set(np.unique(s.kind)) == set(range(len(shapes.KINDS)))
    lo, hi = CFG.radius_range
    assert s.radius.min() >= lo - 1e-6 and s.radius.max() <= hi + 1e-6
    # every vertex lies inside the shape's bounding circle and inside the disk minus the margin
    valid = np.arange(CFG.n_vertices)[None, None] < s.n_vertices[..., None]
    d_centre = np.linalg.norm(s.vertices - s.centre[..., None, :], axis=-1)
    assert (d_centre[valid] <= np.broadcast_to(s.radius[..., None], valid.shape)[valid] + 1e-5).all()
    assert np.linalg.norm(s.vertices, axis=-1)[valid].max() <= CFG.domain_radius - CFG.margin + 1e-5
    # n_vertices: 3 (triangles), 4 (rectangles), 4..8 (polygons), V (curved shapes)
    for kind, allowed in [(0, {32}), (1, {32}), (2, {3}), (3, {4}), (4, set(range(5, 9))),
                          (5, set(range(4, 9))), (6, {32})]:
        assert set(np.unique(s.n_vertices[s.kind == kind])) <= allowed
    # contrasts: shapes 1.5x to 10x above or below the background, both signs present
    ratio = s.value / s.background[:, None]
    c = np.maximum(ratio, 1 / ratio)
    assert c.min() >= 1.5 * (1 - 1e-5) and c.max() <= 10 * (1 + 1e-5)
    assert (ratio > 1).any() and (ratio < 1).any()
    assert s.background.min() >= 0.1 * (1 - 1e-6) and s.background.max() <= 10 * (1 + 1e-6)


def test_background_continues_outside_the_disk(batch):
    sigma, s = batch
    outside = ~shapes.disk_mask(32)
    np.testing.assert_array_equal(sigma[:, outside], np.broadcast_to(s.background[:, None],
                                                                     (len(sigma), outside.sum())))
    # and the shapes are visible inside: no image equals its background everywhere
    assert (np.abs(sigma - s.background[:, None, None]).max(axis=(1, 2)) > 0).all()


def _hand_batch(polygons, value=2.0, background=1.0):
    """A ShapeBatch of the fixture's array shapes (so rasterize reuses its compilation):
    image i holds polygons[i] alone, the other images and slots are empty."""
    K, V = CFG.max_shapes, CFG.n_vertices
    verts = np.zeros((B, K, V, 2), np.float32)
    n = np.full((B, K), 3, np.int32)
    active = np.zeros((B, K), bool)
    centre = np.zeros((B, K, 2), np.float32)
    for i, poly in enumerate(polygons):
        verts[i, 0, :len(poly)] = poly
        n[i, 0] = len(poly)
        active[i, 0] = True
        centre[i, 0] = np.mean(poly, axis=0)
    return shapes.ShapeBatch(jnp.asarray(verts), jnp.asarray(n), jnp.zeros((B, K), jnp.int32),
                             jnp.full((B, K), 0.5, jnp.float32), jnp.asarray(centre), jnp.asarray(active),
                             jnp.full((B, K), value, jnp.float32), jnp.full((B,), background, jnp.float32))


def test_rasterised_areas_are_exact_up_to_antialiasing(batch):
    pix = (2.0 / N) ** 2
    # axis-aligned square of half side 0.3, off the pixel grid: area 0.36
    sq = np.array([[0.31, 0.02], [-0.29, 0.02], [-0.29, -0.58], [0.31, -0.58]])
    # a 32-gon of circumradius 0.4 (the circle of the data set): area (V/2) r² sin(2π/V)
    t = 2 * np.pi * np.arange(32) / 32
    circ = 0.4 * np.stack([np.cos(t), np.sin(t)], -1) + [0.1, 0.2]
    img = np.asarray(shapes.rasterize(_hand_batch([sq, circ]), N))
    assert abs((img[0] - 1.0).sum() * pix - 0.36) < 0.002
    exact = 16 * 0.16 * math.sin(2 * math.pi / 32)
    assert abs((img[1] - 1.0).sum() * pix - exact) < 0.003
    assert img.min() >= 1.0 - 1e-6 and img.max() <= 2.0 + 1e-6
    np.testing.assert_array_equal(img[2:], 1.0)


def test_normalize_denormalize_roundtrip():
    rng = np.random.default_rng(0)
    img = rng.uniform(0.5, 3.0, size=(3, 16, 16))
    mask = shapes.disk_mask(16)
    x, lo, hi = shapes.normalize(img, mask)
    assert x.shape == img.shape and lo.shape == hi.shape == (3,)
    np.testing.assert_allclose(lo, img[:, mask].min(axis=1))
    np.testing.assert_allclose(hi, img[:, mask].max(axis=1))
    np.testing.assert_allclose(np.asarray(x)[:, mask].min(axis=1), -1.0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(x)[:, mask].max(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(shapes.denormalize(x, lo, hi), img, rtol=1e-12)
    # fixed ends, and a constant image does not divide by zero
    x2, lo2, hi2 = shapes.normalize(img, mask, lo=0.0, hi=4.0)
    np.testing.assert_allclose(x2, img / 2 - 1)
    xc, _, _ = shapes.normalize(np.full((16, 16), 2.0), mask)
    assert np.isfinite(np.asarray(xc)).all()
    with pytest.raises(ValueError, match="mask"):
        shapes.normalize(img, np.ones((8, 8), bool))


def test_fill_outside_uses_the_median_inside_and_to_prior():
    mask = shapes.disk_mask(16)
    img = np.full((16, 16), np.nan)
    img[mask] = 1.0
    img[6:9, 6:9] = 5.0                       # a small inclusion: the median stays the background
    filled = np.asarray(shapes.fill_outside(img, mask))
    np.testing.assert_array_equal(filled[mask], img[mask])
    np.testing.assert_array_equal(filled[~mask], 1.0)
    x, lo, hi = shapes.to_prior(img, mask)
    assert float(lo) == 1.0 and float(hi) == 5.0
    np.testing.assert_allclose(np.asarray(x)[~mask], -1.0)
    np.testing.assert_allclose(np.asarray(x)[7, 7], 1.0)
    np.testing.assert_array_equal(shapes.fill_outside(img, mask, value=3.0)[~mask], 3.0)


def test_config_is_validated():
    with pytest.raises(ValueError, match="min_shapes"):
        shapes.ShapesConfig(min_shapes=0)
    with pytest.raises(ValueError, match="does not fit"):
        shapes.ShapesConfig(radius_range=(0.2, 0.99))
    with pytest.raises(ValueError, match="contrast_range"):
        shapes.ShapesConfig(contrast_range=(0.5, 2.0))
    with pytest.raises(ValueError, match="batch"):
        shapes.sample_images(jax.random.PRNGKey(0), 0)
