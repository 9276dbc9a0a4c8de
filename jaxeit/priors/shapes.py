"""The "random overlapping 2D shapes" data set of the Diff-INR prior (paper §4.2).

Each image is a conductivity map on the square ``[-1, 1]²`` sampled on an
``n × n`` pixel grid (the grid of :meth:`jaxeit.grid.Grid.square` with
``half_width = 1``: ``image[i, j]`` is the value at pixel centre
``(x[j], y[i])``, row index = y, so ``imshow(image, origin="lower")`` shows it
upright). The EIT domain is the unit disk inscribed in that square.

Distribution (the paper's exact ranges were lost from our copy; these are our
choices, all fields of :class:`ShapesConfig`)
-------------------------------------------------------------------------
- ``1..5`` shapes per image (uniform count).
- Kinds, equally likely: circle, ellipse (axis ratio 0.3–1), triangle,
  rectangle (aspect from the diagonal angle 20°–70°), regular polygon (5–8
  sides), irregular star-shaped polygon (4–8 vertices, radii 0.5–1 of the
  size, angular jitter) and a smooth closed Bézier blob (4–8 control points,
  radii 0.35–1 of the size, joined by quadratic Bézier arcs through the
  midpoints of the control polygon, i.e. a closed C¹ curve).
- Size: every shape lies inside its bounding circle of radius ``r``. Five
  (``max_shapes``) radii are drawn log-uniform in ``[0.15, 0.5]`` (unit-disk
  radii; 0.15 is ~5 pixels at n = 32 and ~10 at n = 64) and sorted; an image
  with ``count`` shapes paints the ``count`` largest. So images with few
  shapes favour large ones (one shape: the largest of five draws, median
  r ≈ 0.43), images with five shapes have the plain log-uniform sizes. Random
  rotation.
- Location: the bounding circle lies inside the disk of radius
  ``1 - margin`` (``margin = 0.05``): centre uniform over the disk of radius
  ``1 - margin - r``. So every shape is wholly inside the EIT domain.
- Overlap: shapes are painted one over the other, largest first (so small
  shapes are less often hidden), each replacing what lies below it (a shape
  may still hide an earlier one partly or, rarely, wholly).
- Conductivity: background ``σ_bg`` log-uniform in ``[0.1, 10]``; each shape
  ``σ_k = σ_bg · c_k`` with contrast ``c_k = exp(±u)``, ``u`` uniform in
  ``[log 1.5, log 10]`` and the sign uniformly random (more or less
  conductive than the background, 1.5× to 10×).

Outside the disk
----------------
The background value simply continues over the whole square (the images have
no disk edge; the network need not learn it, and the value outside the disk
carries no information). An EIT image is defined only inside its domain; before
the prior sees it, :func:`fill_outside` sets the pixels outside the domain mask
to the image's background estimate, the median of the values inside (for
images that are mostly background, as here, the median is the background).
:func:`to_prior` does fill + :func:`normalize` in one call. A tank of
radius ``R`` maps to the prior's grid by scaling coordinates by ``1/R`` (render
the reconstruction at the pixel centres ``R · pixel_centres(n)``).

Normalisation to [-1, 1]
------------------------
Per image, an affine map of the conductivity
``x = 2 (σ - lo) / (hi - lo) - 1`` with ``lo``, ``hi`` the minimum and
maximum of ``σ`` over the pixels inside the domain (:func:`normalize`;
:func:`denormalize` inverts it). Training images therefore span exactly
``[-1, 1]`` (the lowest shape or background at -1, the highest at +1; shapes
are wholly inside the disk, so the disk's min/max are the image's).
The same rule applies to an EIT image at SDS time; note that min/max
normalisation stretches a nearly constant image to the full range, so a
caller may pass fixed ``lo``/``hi`` instead (e.g. from a stop-gradient
estimate). Under autodiff the default ``lo``/``hi`` are differentiated
through (min/max subgradients); for an SDS step, where the normalisation
should act as a fixed change of units, pass
``lo=jax.lax.stop_gradient(lo), hi=...`` from a first call.

Rasterisation
-------------
Every shape is a closed polygon with at most ``n_vertices`` (32) vertices:
circles, ellipses and Bézier blobs are sampled at 32 points (a circle's
32-gon deviates from it by < 0.5 % of its radius, < 0.1 pixel at n = 64),
polygons use their own 3–8 vertices. Each shape is rasterised on a pixel
window about its centre that holds its bounding circle, then painted in.
Pixel coverage is the soft edge ``clip(1/2 - d / w, 0, 1)`` with ``d`` the
exact signed distance to the polygon (negative inside, even–odd rule) and
``w`` the pixel width, the same anti-aliasing ramp as :mod:`jaxeit.phantoms`.

Speed: :func:`sample_images` makes 380–900 images/s at 32×32 and ~180/s at
64×64 on one core of a 2-core Xeon (float32; measured while the machine was
shared, see ``benchmarks/results/prior_shapes32.md``): a small fraction of a training
step, so the data are streamed, never stored. Everything here is float32,
independent of ``jax_enable_x64``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "KINDS",
    "ShapesConfig",
    "ShapeBatch",
    "sample_shapes",
    "rasterize",
    "sample_conductivity",
    "sample_images",
    "disk_mask",
    "pixel_centres",
    "normalize",
    "denormalize",
    "fill_outside",
    "to_prior",
]

#: Shape kinds, in the order of the ``kind`` codes of :class:`ShapeBatch`.
KINDS = ("circle", "ellipse", "triangle", "rectangle", "regular_polygon", "irregular_polygon", "bezier")

_F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
    """Distribution of the shapes data set (see the module docstring).

    The paper (§4.2) lists these kinds of limits but our copy lost the values;
    the defaults are our documented choices. Lengths are in unit-disk radii.

    Attributes:
        min_shapes, max_shapes: shapes per image, uniform in this range.
        radius_range: (lo, hi) of the bounding radius ``r`` (log-uniform draws; an image
            paints the ``count`` largest of ``max_shapes`` draws).
        margin: every bounding circle lies inside radius ``domain_radius - margin``.
        domain_radius: radius of the EIT disk (1 for the square [-1, 1]²).
        background_range: (lo, hi) of the background conductivity (log-uniform).
        contrast_range: (lo, hi) of the contrast factor ``max(c, 1/c)`` (log-uniform).
        kind_weights: relative probability of each kind in :data:`KINDS`.
        n_vertices: polygon vertices used for curved shapes (and the array width).
    """

    min_shapes: int = 1
    max_shapes: int = 5
    radius_range: tuple[float, float] = (0.15, 0.5)
    margin: float = 0.05
    domain_radius: float = 1.0
    background_range: tuple[float, float] = (0.1, 10.0)
    contrast_range: tuple[float, float] = (1.5, 10.0)
    kind_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    n_vertices: int = 32

    def __post_init__(self):
        if not 1 <= self.min_shapes <= self.max_shapes:
            raise ValueError(f"need 1 <= min_shapes <= max_shapes, got {self.min_shapes}, {self.max_shapes}")
        lo, hi = self.radius_range
        if not 0 < lo <= hi:
            raise ValueError(f"radius_range must satisfy 0 < lo <= hi, got {self.radius_range}")
        if hi >= self.domain_radius - self.margin:
            raise ValueError(f"radius_range upper end {hi} does not fit inside the disk of radius "
                             f"{self.domain_radius} - margin {self.margin}")
        if not 0 < self.background_range[0] <= self.background_range[1]:
            raise ValueError(f"background_range must be positive and ordered, got {self.background_range}")
        if not 1 < self.contrast_range[0] <= self.contrast_range[1]:
            raise ValueError(f"contrast_range must satisfy 1 < lo <= hi, got {self.contrast_range}")
        if len(self.kind_weights) != len(KINDS) or min(self.kind_weights) < 0 or sum(self.kind_weights) <= 0:
            raise ValueError(f"kind_weights needs {len(KINDS)} non-negative weights for {KINDS}, "
                             f"got {self.kind_weights}")
        if self.n_vertices < 8:
            raise ValueError(f"n_vertices must be >= 8, got {self.n_vertices}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ShapesConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class ShapeBatch(NamedTuple):
    """A batch of ``B`` images of at most ``K = max_shapes`` shapes each (float32 / int32).

    Attributes:
        vertices: (B, K, V, 2) polygon vertices, only the first ``n_vertices`` valid.
        n_vertices: (B, K) int32 number of valid vertices (3..V).
        kind: (B, K) int32 index into :data:`KINDS`.
        radius: (B, K) bounding radius.
        centre: (B, K, 2) centre.
        active: (B, K) bool, whether the shape is painted (the first ``count`` slots
            after sorting by size are active).
        value: (B, K) shape conductivity.
        background: (B,) background conductivity.
    """

    vertices: jax.Array
    n_vertices: jax.Array
    kind: jax.Array
    radius: jax.Array
    centre: jax.Array
    active: jax.Array
    value: jax.Array
    background: jax.Array

    @property
    def count(self) -> jax.Array:
        """(B,) int32 number of shapes per image."""
        return self.active.sum(axis=-1).astype(jnp.int32)


# -----------------------------------------------------------------------------------
# Geometry of one shape (all kinds computed, one selected)
# -----------------------------------------------------------------------------------

def _polygon_outline(u, uv, kind, r):
    """(V, 2) vertices about the origin and the number of valid ones, for ``kind``.

    ``u`` (8,) and ``uv`` (3, V) are uniforms on [0, 1) (all the randomness of one
    shape: drawn in bulk, one threefry call per batch, which keeps compilation fast).
    """
    V = uv.shape[-1]
    rot = 2 * math.pi * u[0]
    j = jnp.arange(V, dtype=_F32)
    idx = jnp.arange(V)

    def rotate(p, a):
        c, s = jnp.cos(a), jnp.sin(a)
        return jnp.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], axis=-1)

    theta = 2 * math.pi * j / V
    unit = jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)          # (V, 2)

    circle = r * unit
    ellipse = rotate(r * unit * jnp.stack([1.0, 0.3 + 0.7 * u[1]]), rot)

    # triangle: three vertices about 120° apart (±20° jitter), radii 0.75–1 r
    tri_ang = rot + 2 * math.pi * jnp.arange(3) / 3 + (uv[0, :3] - 0.5) * math.radians(40)
    tri_rad = r * (0.75 + 0.25 * uv[1, :3])
    tri = jnp.stack([tri_rad * jnp.cos(tri_ang), tri_rad * jnp.sin(tri_ang)], axis=-1)

    # rectangle: half-diagonal r, diagonal at 20°–70° to its long side
    alpha = math.radians(20) + math.radians(50) * u[2]
    cx, cy = r * jnp.cos(alpha), r * jnp.sin(alpha)
    rect = rotate(jnp.stack([jnp.stack([cx, cy]), jnp.stack([-cx, cy]),
                             jnp.stack([-cx, -cy]), jnp.stack([cx, -cy])]), rot)

    # regular polygon with 5..8 sides
    m_reg = 5 + jnp.floor(4 * u[3]).astype(jnp.int32)
    a = rot + 2 * math.pi * j / m_reg
    reg = r * jnp.stack([jnp.cos(a), jnp.sin(a)], axis=-1)

    # irregular star-shaped polygon with 4..8 vertices (angular jitter ±0.3 of a step)
    m_irr = 4 + jnp.floor(5 * u[4]).astype(jnp.int32)
    a = rot + 2 * math.pi * (j + 0.6 * (uv[0] - 0.5)) / m_irr
    rad = r * (0.5 + 0.5 * uv[1])
    irr = jnp.stack([rad * jnp.cos(a), rad * jnp.sin(a)], axis=-1)

    # closed Bézier blob: M control points P_k (4..8), arcs from mid(P_{k-1}, P_k) to
    # mid(P_k, P_{k+1}) with control point P_k (quadratic Bézier = closed C¹ curve)
    M = 4 + jnp.floor(5 * u[5]).astype(jnp.int32)
    Mf = M.astype(_F32)
    ca = rot + 2 * math.pi * (j + 0.5 * (uv[2] - 0.5)) / Mf            # control angles (first M used)
    cr = r * (0.35 + 0.65 * uv[1])
    P = jnp.stack([cr * jnp.cos(ca), cr * jnp.sin(ca)], axis=-1)         # (V, 2), first M valid
    s = j / V * Mf                                                       # curve parameter, M arcs
    seg = jnp.minimum(jnp.floor(s).astype(jnp.int32), M - 1)
    tt = (s - seg.astype(_F32))[:, None]
    p0, p1, p2 = P[(seg - 1) % M], P[seg], P[(seg + 1) % M]
    m0, m1 = 0.5 * (p0 + p1), 0.5 * (p1 + p2)
    bez = (1 - tt) ** 2 * m0 + 2 * (1 - tt) * tt * p1 + tt ** 2 * m1

    pad = lambda p: jnp.zeros((V, 2), _F32).at[: p.shape[0]].set(p)  # noqa: E731
    all_v = jnp.stack([circle, ellipse, pad(tri), pad(rect), reg, irr, bez])          # (7, V, 2)
    all_n = jnp.stack([jnp.int32(V), jnp.int32(V), jnp.int32(3), jnp.int32(4), m_reg, m_irr, jnp.int32(V)])
    verts = all_v[kind]
    n = all_n[kind]
    verts = jnp.where((idx < n)[:, None], verts, 0.0)
    return verts, n


@functools.partial(jax.jit, static_argnames=("batch", "config"))
def _sample_shapes(key, *, batch: int, config: ShapesConfig) -> ShapeBatch:
    K, V = config.max_shapes, config.n_vertices
    k_img, k_shape, k_vert = jax.random.split(key, 3)
    ui = jax.random.uniform(k_img, (batch, 2), dtype=_F32)             # count, background
    us = jax.random.uniform(k_shape, (batch, K, 14), dtype=_F32)       # per-shape scalars
    uv = jax.random.uniform(k_vert, (batch, K, 3, V), dtype=_F32)      # per-vertex jitter

    n_counts = config.max_shapes - config.min_shapes + 1
    count = config.min_shapes + jnp.minimum(jnp.floor(ui[:, 0] * n_counts).astype(jnp.int32), n_counts - 1)
    cdf = np.cumsum(config.kind_weights) / np.sum(config.kind_weights)
    kind = jnp.sum(us[..., 0:1] >= jnp.asarray(cdf[:-1], _F32), axis=-1).astype(jnp.int32)
    r_lo, r_hi = config.radius_range
    radius = r_lo * (r_hi / r_lo) ** us[..., 1]
    order = jnp.argsort(-radius, axis=-1)                                # largest first
    radius = jnp.take_along_axis(radius, order, axis=-1)
    reach = config.domain_radius - config.margin - radius
    pr = reach * jnp.sqrt(us[..., 2])
    pa = 2 * math.pi * us[..., 3]
    centre = jnp.stack([pr * jnp.cos(pa), pr * jnp.sin(pa)], axis=-1)

    b_lo, b_hi = config.background_range
    background = b_lo * (b_hi / b_lo) ** ui[:, 1]
    c_lo, c_hi = config.contrast_range
    log_c = math.log(c_lo) + (math.log(c_hi) - math.log(c_lo)) * us[..., 4]
    sign = jnp.where(us[..., 5] < 0.5, -1.0, 1.0).astype(_F32)
    value = background[:, None] * jnp.exp(sign * log_c)

    outline = jax.vmap(jax.vmap(_polygon_outline))
    verts, n_vert = outline(us[..., 6:], uv, kind, radius)
    valid = (jnp.arange(V) < n_vert[..., None])[..., None]
    verts = jnp.where(valid, verts + centre[..., None, :], 0.0)
    active = jnp.arange(K) < count[:, None]
    return ShapeBatch(verts.astype(_F32), n_vert.astype(jnp.int32), kind, radius.astype(_F32),
                      centre.astype(_F32), active, value.astype(_F32), background.astype(_F32))


def sample_shapes(key, batch: int, *, config: ShapesConfig = ShapesConfig()) -> ShapeBatch:
    """Draw the shape parameters of ``batch`` images (jitted; float32).

    Args:
        key: a ``jax.random`` key.
        batch: number of images B.
        config: the distribution (see :class:`ShapesConfig`).

    Returns:
        A :class:`ShapeBatch`; a deterministic function of ``(key, batch, config)``.
    """
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return _sample_shapes(key, batch=int(batch), config=config)


# -----------------------------------------------------------------------------------
# Rasterisation
# -----------------------------------------------------------------------------------

def pixel_centres(size: int) -> np.ndarray:
    """(size,) float32 pixel-centre coordinates of the grid over [-1, 1] (same for x and y)."""
    if int(size) < 2:
        raise ValueError(f"image size must be >= 2, got {size}")
    size = int(size)
    return (-1.0 + (np.arange(size) + 0.5) * (2.0 / size)).astype(np.float32)


def disk_mask(size: int, radius: float = 1.0) -> np.ndarray:
    """(size, size) bool: pixel centres inside the disk of ``radius`` about the origin."""
    c = pixel_centres(size)
    return (c[None, :] ** 2 + c[:, None] ** 2) <= radius ** 2


def _polygon_sdf(points, verts, n):
    """Signed distance (P,) from (P, 2) points to the polygon of the first ``n`` of (V, 2) verts.

    Exact Euclidean distance to the nearest edge; negative inside (even–odd rule).
    """
    V = verts.shape[0]
    idx = jnp.arange(V)
    valid = idx < n
    nxt = jnp.where(idx + 1 < n, idx + 1, 0)
    a, b = verts, verts[nxt]                                   # (V, 2) edge a -> b
    e = b - a
    ee = jnp.maximum(jnp.sum(e * e, axis=-1), 1e-12)          # (V,)
    w = points[:, None, :] - a[None]                           # (P, V, 2)
    t = jnp.clip(jnp.sum(w * e[None], axis=-1) / ee, 0.0, 1.0)
    dv = w - t[..., None] * e[None]
    d2 = jnp.where(valid[None], jnp.sum(dv * dv, axis=-1), jnp.inf)
    dist = jnp.sqrt(jnp.min(d2, axis=-1))
    py = points[:, 1:2]
    up_a, up_b = a[None, :, 1] > py, b[None, :, 1] > py
    ey = jnp.where(e[:, 1] == 0, 1e-12, e[:, 1])
    x_cross = a[None, :, 0] + (py - a[None, :, 1]) * e[None, :, 0] / ey[None]
    crosses = (up_a != up_b) & (points[:, 0:1] < x_cross) & valid[None]
    inside = (jnp.sum(crosses, axis=-1) % 2) == 1
    return jnp.where(inside, -dist, dist)


def _window(size: int, config_radius: float) -> int:
    """Side of the square pixel window that holds any shape of bounding radius ``config_radius``."""
    w = 2.0 / size
    return min(size, int(math.ceil(2.0 * (config_radius + 1.5 * w) / w)) + 1)


@functools.partial(jax.jit, static_argnames=("size", "max_radius"))
def _rasterize(shapes: ShapeBatch, size: int, max_radius: float | None = None):
    c = jnp.asarray(pixel_centres(size))
    width = 2.0 / size
    # each shape is rasterised on a W × W window about its centre (its bounding circle
    # plus 1.5 pixels fits inside), then painted into the image: ~4-10x less work than
    # the whole grid
    W = size if max_radius is None else _window(size, max_radius)
    offs = jnp.arange(W)

    def paint(out, shape):
        verts, n_vert, centre, active, value = shape
        start = jnp.round((centre + 1.0) / width - 0.5).astype(jnp.int32) - (W - 1) // 2
        start = jnp.clip(start, 0, size - W)                          # (x, y) → (col, row)
        xx, yy = jnp.meshgrid(c[start[0] + offs], c[start[1] + offs])
        points = jnp.stack([xx.ravel(), yy.ravel()], axis=-1)         # (W², 2)
        sd = _polygon_sdf(points, verts, n_vert)
        cover = (jnp.clip(0.5 - sd / width, 0.0, 1.0) * active).reshape(W, W)
        win = jax.lax.dynamic_slice(out, (start[1], start[0]), (W, W))
        out = jax.lax.dynamic_update_slice(out, win + cover * (value - win), (start[1], start[0]))
        return out, None

    def one(s: ShapeBatch):
        out = jnp.broadcast_to(s.background, (size, size))
        out, _ = jax.lax.scan(paint, out, (s.vertices, s.n_vertices, s.centre, s.active, s.value))
        return out

    return jax.vmap(one)(shapes)


def rasterize(shapes: ShapeBatch, size: int) -> jax.Array:
    """Anti-aliased conductivity images of a :class:`ShapeBatch`.

    Args:
        shapes: B images' shapes.
        size: image side n (pixels over [-1, 1]).

    Returns:
        (B, n, n) float32 conductivity; the background continues outside the disk.
    """
    # window size from the largest bounding radius, rounded up to 0.1 (few recompilations)
    max_radius = math.ceil(float(jnp.max(shapes.radius)) * 10 + 1e-6) / 10
    return _rasterize(shapes, size=int(size), max_radius=max_radius)


# -----------------------------------------------------------------------------------
# Normalisation and EIT-image preparation
# -----------------------------------------------------------------------------------

def _mask_for(image, mask):
    if mask is None:
        return jnp.asarray(disk_mask(image.shape[-1]))
    mask = jnp.asarray(mask, dtype=bool)
    if mask.shape != image.shape[-2:]:
        raise ValueError(f"mask must have the image's last two dimensions {image.shape[-2:]}, got {mask.shape}")
    return mask


def normalize(image, mask=None, *, lo=None, hi=None, min_range: float = 1e-6):
    """Map a conductivity image to the prior's [-1, 1] units: ``x = 2 (σ - lo) / (hi - lo) - 1``.

    Args:
        image: (..., n, n) conductivity image(s), any float dtype.
        mask: (n, n) bool domain mask; ``lo``/``hi`` are taken over pixels where it is
            True. ``None``: the inscribed unit disk (:func:`disk_mask`).
        lo, hi: optional fixed ends (scalars or (...,) arrays) instead of the masked
            min / max.
        min_range: ``hi - lo`` is floored at ``min_range · max(|lo|, |hi|, 1e-30)`` so a
            constant image does not divide by zero (it maps to -1).

    Returns:
        ``(x, lo, hi)``: x (..., n, n) in the image's dtype, spanning [-1, 1] inside the
        mask when lo/hi are the defaults; lo, hi (...,).
    """
    image = jnp.asarray(image)
    if image.ndim < 2:
        raise ValueError(f"image must have shape (..., n, n), got {image.shape}")
    m = _mask_for(image, mask)
    if lo is None:
        lo = jnp.min(jnp.where(m, image, jnp.inf), axis=(-2, -1))
    if hi is None:
        hi = jnp.max(jnp.where(m, image, -jnp.inf), axis=(-2, -1))
    lo = jnp.asarray(lo, image.dtype)
    hi = jnp.asarray(hi, image.dtype)
    span = jnp.maximum(hi - lo, min_range * jnp.maximum(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), 1e-30))
    x = 2.0 * (image - lo[..., None, None]) / span[..., None, None] - 1.0
    return x, lo, hi


def denormalize(x, lo, hi):
    """Inverse of :func:`normalize`: ``σ = lo + (x + 1) (hi - lo) / 2``; x (..., n, n), lo/hi (...,)."""
    x = jnp.asarray(x)
    lo = jnp.asarray(lo, x.dtype)[..., None, None]
    hi = jnp.asarray(hi, x.dtype)[..., None, None]
    return lo + 0.5 * (x + 1.0) * (hi - lo)


def fill_outside(image, mask, *, value=None):
    """Set pixels outside the domain to the background estimate (the prior's outside rule).

    Args:
        image: (..., n, n) image defined inside ``mask`` (values outside are ignored,
            NaN allowed there).
        mask: (n, n) bool domain mask (e.g. :func:`jaxeit.grid.domain_mask`).
        value: fill value (scalar or (...,)); default the median of the pixels inside.

    Returns:
        (..., n, n) image, equal to ``image`` inside the mask.
    """
    image = jnp.asarray(image)
    m = _mask_for(image, mask)
    if value is None:
        value = jnp.nanmedian(jnp.where(m, image, jnp.nan), axis=(-2, -1))
    value = jnp.asarray(value, image.dtype)
    return jnp.where(m, image, value[..., None, None])


def to_prior(image, mask=None, **normalize_kw):
    """:func:`fill_outside` then :func:`normalize`: an EIT image → the prior's input.

    Returns ``(x, lo, hi)`` as :func:`normalize`; ``mask=None`` means the unit disk.
    """
    image = jnp.asarray(image)
    m = _mask_for(image, mask)
    return normalize(fill_outside(image, m), m, **normalize_kw)


# -----------------------------------------------------------------------------------
# Batched sampling of images
# -----------------------------------------------------------------------------------

def sample_conductivity(key, batch: int, *, size: int = 64,
                        config: ShapesConfig = ShapesConfig()) -> tuple[jax.Array, ShapeBatch]:
    """Random conductivity images and their shapes.

    Returns:
        ``(sigma, shapes)``: (B, n, n) float32 conductivity (background outside the
        disk) and the :class:`ShapeBatch` drawn from ``key``.
    """
    shapes = sample_shapes(key, batch, config=config)
    return rasterize(shapes, size), shapes


@functools.partial(jax.jit, static_argnames=("domain_radius",))
def _normalize_clipped(sigma, *, domain_radius):
    x, _, _ = normalize(sigma, disk_mask(sigma.shape[-1], domain_radius))
    return jnp.clip(x, -1.0, 1.0)                                 # round-off of the affine map


def _sample_images(key, *, batch, size, config):
    """Traceable body of :func:`sample_images` (three jitted stages, inlined under an outer jit)."""
    shapes = _sample_shapes(key, batch=batch, config=config)
    sigma = _rasterize(shapes, size=size, max_radius=config.radius_range[1])
    return _normalize_clipped(sigma, domain_radius=config.domain_radius)


def sample_images(key, batch: int, *, size: int = 64, config: ShapesConfig = ShapesConfig()) -> jax.Array:
    """Training images of the prior: random shapes, normalised to [-1, 1] (jit-compiled stages).

    A deterministic function of ``(key, batch, size, config)``; the training
    stream uses ``fold_in(data_key, step)`` so any step's batch can be rebuilt.
    Throughput on one core of the 2-core Xeon used for the shipped prior: see
    ``benchmarks/results/prior_shapes32.md``.

    Args:
        key: a ``jax.random`` key.
        batch: number of images B.
        size: image side n.
        config: the distribution.

    Returns:
        (B, n, n) float32 in [-1, 1] (:func:`normalize` over the unit disk).
    """
    if int(batch) < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if int(size) < 2:
        raise ValueError(f"image size must be >= 2, got {size}")
    return _sample_images(key, batch=int(batch), size=int(size), config=config)
