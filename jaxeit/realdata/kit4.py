"""KIT4 photos: tank frame, inclusion positions and sizes, and comparison with reconstructions.

The KIT4 archive has no conductivity ground truth, only photos taken from
above (``fantom_<i>_<j>.jpg``, 2000 × 2000 RGB). This module measures them:

Tank frame (:func:`photo_frame`). The 16 orange tapes on the rim mark the
electrodes; electrode 1's tape (labelled "1") is the top-most in every photo
and "2" is the next one clockwise (to its right). The tape centroids (colour
threshold in HSV, 16 largest blobs) are fitted with a circle: its centre is
the tank centre, the angle of the top-most tape is electrode 1's. The scale
comes from the inner edge of the rim: the radius where the angular mean
brightness first exceeds the mid-level between the water (median over
0.80–0.90 × the tape radius R_t) and the rim (median over 0.96–1 × R_t),
searching outwards from 0.85·R_t — the inner wall, 0.14 m. Photo
coordinates are mapped to metres with x to the right and y *up*, the frame of
the meshes (the photo is an ordinary, non-mirrored view: the upside-down
"16" label reads "91" after a half turn, not mirrored).

Inclusions (:func:`find_inclusions`). Plastic objects are the white
(bright, unsaturated) connected regions inside the tank: centroid and area
of the largest ``n_plastic`` of them. Metal rings show as thin bright
circles: circles are fitted to the bright, unsaturated pixels (the ring's
polished top edge) by the Hough transform (radii 1–9 cm, on a 4× coarser
image) after blanking the plastic regions, keeping the ``n_metal``
strongest non-overlapping ones; a metal ring is an equipotential shell,
i.e. electrically a conductive disk of its outer radius.

Uncertainty. The objects stand on the tank floor and stick out of the water;
the photo sees their tops. The camera is not exactly above the centre: the
bottom-centre marker appears 80 px (≈ 1.3 cm) from the rim centre, which
bounds the perspective displacement of features between the rim and the
floor. Positions are therefore good to about ±1 cm and areas to about ±10 %.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..grid import Grid, mesh_to_grid_elements
from ..io.kit4 import KIT4_RADIUS
from ..metrics import rcr
from ..recon.operators import element_adjacency

__all__ = ["PhotoFrame", "Inclusion", "photo_frame", "find_inclusions", "read_photo", "KIT4_TARGETS",
           "reconstruction_inclusions", "match_inclusions", "fit_rotation", "log_contrast", "image_rcr", "plot_photo"]

#: targets of the shared KIT4 subset: (kind, count) of their inclusions
KIT4_TARGETS = {
    "2_3": {"metal": 2, "plastic": 0},
    "4_1": {"metal": 1, "plastic": 1},
    "4_4": {"metal": 1, "plastic": 1},
}


def read_photo(path) -> np.ndarray:
    """(H, W, 3) float image in [0, 1] (``matplotlib.image.imread``)."""
    import matplotlib.image as mpimg

    img = np.asarray(mpimg.imread(path))
    if img.dtype == np.uint8:
        img = img.astype(np.float64) / 255.0
    return img[..., :3].astype(np.float64)


@dataclasses.dataclass
class PhotoFrame:
    """The tank in a photo: centre (column, row) px, inner-wall radius px, electrode-1 angle.

    ``electrode1_angle`` (rad) and ``tape_angles`` (16,) are polar angles in the
    photo frame with y up (counter-clockwise from the +column direction).
    """

    centre: tuple[float, float]
    radius_px: float
    tape_radius_px: float
    electrode1_angle: float
    tape_angles: np.ndarray
    direction: str  # numbering direction of the tapes seen from above ("cw" or "ccw")

    @property
    def metres_per_pixel(self) -> float:
        return KIT4_RADIUS / self.radius_px

    def to_xy(self, rows, cols) -> np.ndarray:
        """(..., 2) metres (x right, y up, origin at the tank centre) of pixel positions."""
        rows, cols = np.asarray(rows, np.float64), np.asarray(cols, np.float64)
        s = self.metres_per_pixel
        return np.stack([(cols - self.centre[0]) * s, -(rows - self.centre[1]) * s], axis=-1)

    def to_pixels(self, xy) -> tuple[np.ndarray, np.ndarray]:
        """(rows, cols) of points (..., 2) in metres."""
        xy = np.asarray(xy, np.float64)
        s = self.metres_per_pixel
        return self.centre[1] - xy[..., 1] / s, self.centre[0] + xy[..., 0] / s


def _orange_mask(img):
    from skimage.color import rgb2hsv

    hsv = rgb2hsv(img)
    return (hsv[..., 0] > 0.03) & (hsv[..., 0] < 0.12) & (hsv[..., 1] > 0.35) & (hsv[..., 2] > 0.5)


def _fit_circle(x, y):
    a = np.column_stack([2 * x, 2 * y, np.ones_like(x)])
    cx, cy, c = np.linalg.lstsq(a, x ** 2 + y ** 2, rcond=None)[0]
    return cx, cy, math.sqrt(c + cx ** 2 + cy ** 2)


def photo_frame(img, n_electrodes: int = 16) -> PhotoFrame:
    """Locate the tank in a KIT4 photo (module notes). Raises ``ValueError`` if the tapes are not found."""
    from scipy import ndimage as ndi

    orange = _orange_mask(img)
    lab, n = ndi.label(orange)
    if n < n_electrodes:
        raise ValueError(f"found {n} orange blobs, expected the {n_electrodes} electrode tapes")
    sizes = ndi.sum(orange, lab, range(1, n + 1))
    keep = np.argsort(sizes)[::-1][:n_electrodes] + 1
    rows, cols = np.asarray(ndi.center_of_mass(orange, lab, keep)).T
    cx, cy, r_tape = _fit_circle(cols, rows)
    spread = np.std(np.hypot(cols - cx, rows - cy)) / r_tape
    if spread > 0.05:
        raise ValueError(f"the {n_electrodes} largest orange blobs are not on a circle (spread {spread:.2f})")
    angles = np.arctan2(-(rows - cy), cols - cx)
    order = np.argsort(-np.sin(angles))  # top-most first
    top = order[0]
    e1 = float(angles[top])
    # neighbours of electrode 1: which one is the second label? the tapes' order seen from above
    rel = np.mod(angles - e1 + np.pi, 2 * np.pi) - np.pi
    # the tape labelled "2" is to the right of "1" (clockwise): see the module notes (read from the photos)
    direction = "cw"
    # inner rim radius: the steepest rise of the angular-mean brightness between the water and the rim
    grey = img.mean(axis=-1)
    yy, xx = np.indices(grey.shape)
    rb = np.round(np.hypot(xx - cx, yy - cy)).astype(int)
    with np.errstate(invalid="ignore"):  # an empty bin at r = 0 is NaN
        prof = ndi.mean(grey, rb, np.arange(int(r_tape) + 1))
    prof = np.where(np.isfinite(prof), prof, np.nanmean(prof))
    water = np.median(prof[int(0.80 * r_tape): int(0.90 * r_tape)])
    rim = np.median(prof[int(0.96 * r_tape): int(r_tape)])
    start = int(0.85 * r_tape)
    above = np.flatnonzero(prof[start:] > 0.5 * (water + rim))
    if rim <= water or above.size == 0:
        raise ValueError("could not find the inner edge of the tank rim")
    radius = float(start + above[0])
    return PhotoFrame(centre=(float(cx), float(cy)), radius_px=radius, tape_radius_px=float(r_tape),
                      electrode1_angle=e1, tape_angles=np.sort(np.mod(rel + e1, 2 * np.pi)), direction=direction)


@dataclasses.dataclass
class Inclusion:
    """An inclusion located in a photo or a reconstruction (metres, tank frame x right / y up)."""

    kind: str  # "metal" (conductive) or "plastic" (resistive)
    centre: np.ndarray  # (2,)
    area: float  # m²
    radius: float = float("nan")  # m, for circles
    source: str = "photo"


def find_inclusions(img, frame: PhotoFrame, n_metal: int, n_plastic: int) -> list[Inclusion]:
    """Locate ``n_plastic`` white objects and ``n_metal`` metal rings in a photo (module notes)."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2hsv
    from skimage.transform import hough_circle, hough_circle_peaks

    cx, cy = frame.centre
    yy, xx = np.indices(img.shape[:2])
    inside = np.hypot(xx - cx, yy - cy) < 0.93 * frame.radius_px
    hsv = rgb2hsv(img)
    out: list[Inclusion] = []
    white = inside & (hsv[..., 2] > 0.6) & (hsv[..., 1] < 0.3)
    white = ndi.binary_opening(white, iterations=3)
    lab, n = ndi.label(white)
    blank = np.zeros(white.shape, bool)
    if n_plastic:
        sizes = ndi.sum(white, lab, range(1, n + 1))
        for idx in np.argsort(sizes)[::-1][:n_plastic] + 1:
            region = ndi.binary_fill_holes(lab == idx)
            rows, cols = np.nonzero(region)
            centre = frame.to_xy(rows.mean(), cols.mean())
            area = region.sum() * frame.metres_per_pixel ** 2
            out.append(Inclusion("plastic", centre, float(area), float(math.sqrt(area / math.pi))))
            blank |= ndi.binary_dilation(region, iterations=25)
    if n_metal:
        grey = img.mean(axis=-1)
        bright = inside & ~blank & (grey > 0.55) & (hsv[..., 1] < 0.3)  # the polished top edge of a ring
        # Hough transform on a 4× coarser image (block maximum keeps the thin edges)
        f = 4
        hh, ww = (bright.shape[0] // f) * f, (bright.shape[1] // f) * f
        small = bright[:hh, :ww].reshape(hh // f, f, ww // f, f).any(axis=(1, 3))
        px = frame.metres_per_pixel * f
        radii = np.arange(int(0.01 / px), int(0.09 / px) + 1)
        hough = hough_circle(small, radii)
        sep = int(0.03 / px)
        _, ccol, crow, crad = hough_circle_peaks(hough, radii, min_xdistance=sep, min_ydistance=sep,
                                                 total_num_peaks=4 * n_metal)
        ccol, crow, crad = (ccol + 0.5) * f - 0.5, (crow + 0.5) * f - 0.5, crad * f
        px = frame.metres_per_pixel
        chosen = []
        for col, row, rad in zip(ccol, crow, crad):
            if all(math.hypot(col - c2, row - r2) > r + rad for c2, r2, r in chosen):
                chosen.append((col, row, rad))
            if len(chosen) == n_metal:
                break
        for col, row, rad in chosen:
            radius = rad * px
            out.append(Inclusion("metal", frame.to_xy(row, col), math.pi * radius ** 2, radius))
    return out


def plot_photo(ax, photo, frame: PhotoFrame, inclusions=(), title: str | None = None):
    """Show a KIT4 photo on ``ax`` with the fitted tank rim (cyan), electrode 1 (red star) and the
    measured inclusions (yellow: metal, magenta: plastic)."""
    t = np.linspace(0, 2 * math.pi, 200)
    ax.imshow(photo)
    ax.plot(frame.centre[0] + frame.radius_px * np.cos(t), frame.centre[1] - frame.radius_px * np.sin(t), "c",
            lw=0.6)
    e1r, e1c = frame.to_pixels(KIT4_RADIUS * np.array([math.cos(frame.electrode1_angle),
                                                       math.sin(frame.electrode1_angle)]))
    ax.plot(e1c, e1r, "r*", ms=9)
    for inc in inclusions:
        r, c = frame.to_pixels(inc.centre)
        rad = inc.radius / frame.metres_per_pixel
        ax.plot(c + rad * np.cos(t), r - rad * np.sin(t), "y" if inc.kind == "metal" else "m", lw=0.8)
    if title is not None:
        ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


# -- reconstructions -------------------------------------------------------------------------

def log_contrast(sigma, sigma_bg: float) -> np.ndarray:
    """log(σ/σ_bg) minus its median: the change image of a KIT4 target.

    The median removes the background drift of the target recording against
    the reference; σ is floored at 10⁻³σ_bg so the logarithm stays finite.
    """
    c = np.log(np.maximum(np.asarray(sigma, np.float64), 1e-3 * sigma_bg) / sigma_bg)
    return c - np.median(c)


def image_rcr(mesh, contrast, photo_inclusions, size: int = 128) -> float:
    """:func:`jaxeit.metrics.rcr` of a reconstructed contrast (E,) against the photographed inclusions.

    The reference image has +1 on equal-area disks of the metal inclusions and
    −1 on those of the plastic ones (0 elsewhere), on a ``size``² grid over the
    tank; the reconstruction is rendered on the same grid by element lookup.
    """
    g = Grid.square(KIT4_RADIUS, size)
    img = np.asarray(mesh_to_grid_elements(mesh, g)(np.asarray(contrast, np.float64)))
    pts = g.centres()
    ref = np.zeros(g.shape)
    for inc in photo_inclusions:
        inside = np.hypot(pts[..., 0] - inc.centre[0], pts[..., 1] - inc.centre[1]) < math.sqrt(inc.area / math.pi)
        ref[inside] = 1.0 if inc.kind == "metal" else -1.0
    mask = np.hypot(pts[..., 0], pts[..., 1]) < KIT4_RADIUS
    return float(rcr(img, ref, mask=mask))


def reconstruction_inclusions(mesh, contrast, n_metal: int, n_plastic: int, *, level: float = 0.5,
                              rotation: float = 0.0, reflect: bool = False) -> list[Inclusion]:
    """Inclusions of a reconstructed log-contrast (E,) on ``mesh``: connected regions beyond half maximum.

    Conductive (metal) regions: contrast > ``level``·max(contrast); resistive
    (plastic): contrast < ``level``·min(contrast). Elements are grouped into
    connected components through shared edges; the largest ``n_metal``
    (``n_plastic``) components give centroid and area. ``rotation``/``reflect``
    map the mesh frame to the photo frame: p ↦ R(rotation)·diag(1, ∓1)·p.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    contrast = np.asarray(contrast, np.float64)
    cen = mesh.centroids()
    c, s = math.cos(rotation), math.sin(rotation)
    t = np.array([[c, -s], [s, c]]) @ (np.diag([1.0, -1.0]) if reflect else np.eye(2))
    cen = cen @ t.T
    area = mesh.areas()
    pairs, _ = element_adjacency(mesh)
    out = []
    for kind, count, sel in (("metal", n_metal, contrast > level * contrast.max()),
                             ("plastic", n_plastic, contrast < level * contrast.min())):
        if count == 0 or not sel.any():
            continue
        keep = sel[pairs[:, 0]] & sel[pairs[:, 1]]
        e = pairs[keep]
        graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(len(sel), len(sel)))
        _, labels = connected_components(graph, directed=False)
        comps = [np.flatnonzero((labels == lab) & sel) for lab in np.unique(labels[sel])]
        comps.sort(key=lambda ids: -area[ids].sum())
        for ids in comps[:count]:
            a = area[ids].sum()
            out.append(Inclusion(kind, (cen[ids] * area[ids, None]).sum(0) / a, float(a),
                                 float(math.sqrt(a / math.pi)), source="reconstruction"))
    return out


def match_inclusions(reco: list[Inclusion], photo: list[Inclusion]) -> list[tuple[Inclusion, Inclusion, float]]:
    """Pair reconstructed and photo inclusions of the same kind by minimal total distance.

    Returns (reco, photo, distance m) triples; unmatched inclusions are left out.
    """
    from itertools import permutations

    pairs = []
    for kind in ("metal", "plastic"):
        r = [i for i in reco if i.kind == kind]
        p = [i for i in photo if i.kind == kind]
        if not r or not p:
            continue
        best = None
        k = min(len(r), len(p))
        for perm in permutations(range(len(p)), k):
            d = [float(np.linalg.norm(r[i].centre - p[j].centre)) for i, j in zip(range(k), perm)]
            if best is None or sum(d) < best[0]:
                best = (sum(d), [(r[i], p[j], dd) for i, j, dd in zip(range(k), perm, d)])
        pairs += best[1]
    return pairs


def fit_rotation(mesh_points, photo_points, reflect: bool) -> tuple[float, float]:
    """Best rotation θ (rad) with photo ≈ R(θ)·diag(1, ∓1)·mesh (Procrustes about the tank centre).

    Returns (θ, rms distance in m) for paired (K, 2) point sets.
    """
    a = np.asarray(mesh_points, np.float64) * (np.array([1.0, -1.0]) if reflect else 1.0)
    b = np.asarray(photo_points, np.float64)
    # maximise Σ bᵀR a: θ = atan2(Σ a×b, Σ a·b)
    cross = np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])
    dot = np.sum(a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1])
    theta = math.atan2(cross, dot)
    c, s = math.cos(theta), math.sin(theta)
    rot = a @ np.array([[c, -s], [s, c]]).T
    return theta, float(np.sqrt(np.mean(np.sum((rot - b) ** 2, axis=1))))


def contrast_at_inclusions(mesh, contrast, photo_inclusions) -> list[tuple[Inclusion, float, bool]]:
    """Mean reconstructed log-contrast inside each photographed inclusion and whether its sign is right.

    ``contrast`` (E,) on ``mesh``; averages (area-weighted) over the elements
    whose centroid lies in the inclusion's equal-area disk (the nearest element
    when none does). The sign is right when metal is conductive (> 0) and
    plastic resistive (< 0). Returns (inclusion, mean contrast, sign ok) triples.
    """
    contrast = np.asarray(contrast, np.float64)
    cen = mesh.centroids()
    area = mesh.areas()
    out = []
    for inc in photo_inclusions:
        dist = np.hypot(cen[:, 0] - inc.centre[0], cen[:, 1] - inc.centre[1])
        inside = dist < math.sqrt(inc.area / math.pi)
        if not inside.any():
            inside = dist == dist.min()
        mean = float((contrast[inside] * area[inside]).sum() / area[inside].sum())
        out.append((inc, mean, mean > 0 if inc.kind == "metal" else mean < 0))
    return out
