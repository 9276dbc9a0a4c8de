"""Matplotlib figures for meshes, conductivities and reconstructions (headless-safe).

Nothing here imports ``matplotlib.pyplot`` or selects a backend: axes-level
functions draw on the ``ax`` they are given, and the figure-level functions
(:func:`compare`, :func:`contrast_figure`, :func:`ktc_figure`) build a
standalone :class:`matplotlib.figure.Figure` (rendered by Agg when saved; it
also displays inline in Jupyter). So the module works on machines without a
display and never leaks pyplot figures. The command line, the demo, the
notebooks and the benchmarks draw through these functions.

Conventions of every figure
---------------------------
* **Orientation.** Figures are drawn in the mesh frame: x to the right, y up,
  never rotated or mirrored. Images in the :mod:`jaxeit.grid` convention (row
  index = +y) are shown with ``origin="lower"``; images in the KTC2023 truth
  frame (row 0 at the top) with ``origin="upper"`` over the same square, so
  both coincide with the mesh. Electrode 1 (index 0) is drawn in red and
  labelled "1", electrode 2 is labelled "2", so the numbering direction can be
  read off every figure. The tanks of :mod:`jaxeit.realdata` put electrode 1 at
  the top (KIT4 numbered clockwise, KTC2023 counter-clockwise, as fitted to the
  measurements); the demo and the notebooks build their disks with
  ``mesh.disk(..., offset=np.pi / 2)``, so electrode 1 is at the top there too
  (numbered counter-clockwise). ``mesh.disk`` itself defaults to ``offset=0``:
  electrode 1 on the right.
* **Colour bars.** Every panel of continuous values gets a colour bar labelled
  with its quantity and unit: :data:`SIGMA_LABEL` (σ in S/m) or
  :data:`CONTRAST_LABEL` (log(σ/σ_bg), dimensionless). Contrasts use a
  symmetric diverging map: red conductive, blue resistive.
* **Segmentations** (KTC2023 classes, :data:`KTC_CLASSES`) are drawn in three
  flat colours with a legend instead of a colour bar.
* **Electrodes** that carry current or are measured are filled black squares;
  electrodes that a data set does not use (KTC2023 levels ≥ 2 remove some;
  :func:`unused_electrodes`) are grey crosses.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Mapping, Sequence, Union

import matplotlib.tri as mtri
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from jaxeit import metrics as jm
from jaxeit.grid import Grid
from jaxeit.mesh import Mesh

__all__ = ["SIGMA_LABEL", "CONTRAST_LABEL", "KTC_CLASSES", "plot_mesh", "plot_mesh_values", "plot_image",
           "plot_segmentation", "class_handles", "draw_electrodes", "add_colorbar", "unused_electrodes", "compare",
           "contrast_figure", "ktc_figure", "save_figure"]

MetricSpec = Union[Sequence[str], Mapping[str, Callable]]

#: colour-bar label of absolute conductivity images
SIGMA_LABEL = "σ (S/m)"
#: colour-bar label of log-contrast images log(σ/σ_bg) (dimensionless)
CONTRAST_LABEL = "log(σ/σ_bg)"
#: KTC2023 segmentation classes: value → (name, colour)
KTC_CLASSES = {0: ("water (background)", "#eeeeee"), 1: ("resistive", "#2166ac"), 2: ("conductive", "#b2182b")}

_PRESENT = dict(marker="s", ms=4, ls="none", color="k", zorder=5)
_REMOVED = dict(marker="x", ms=5, mew=1.3, ls="none", color="0.55", zorder=5)


def _triangulation(mesh: Mesh) -> mtri.Triangulation:
    return mtri.Triangulation(mesh.nodes[:, 0], mesh.nodes[:, 1], mesh.triangles)


def _real(values, what: str) -> np.ndarray:
    values = np.asarray(values)
    if np.iscomplexobj(values):
        raise ValueError(f"{what} are complex: plot .real, .imag or abs() explicitly")
    return values.astype(np.float64)


def unused_electrodes(protocol, mask=None) -> np.ndarray:
    """Electrodes (0-based) that no usable measurement involves, neither by current nor by voltage.

    Args:
        protocol: a :class:`jaxeit.protocol.Protocol` (``currents`` (P, L),
            ``measurements`` (M, L), ``pattern`` (M,)).
        mask: optional (M,) bool of usable measurements (``EITDataset.mask``;
            a KTC2023 level ≥ 2 masks every measurement touching its removed
            electrodes). ``None``: all measurements.

    Returns:
        (R,) int64 sorted indices; empty when every electrode is used.
    """
    meas = np.asarray(protocol.measurements)
    keep = np.ones(len(meas), bool) if mask is None else np.asarray(mask, dtype=bool).reshape(-1)
    if keep.shape != (len(meas),):
        raise ValueError(f"mask must have one entry per measurement ({len(meas)}), got {keep.size}")
    used = (np.abs(meas[keep]) > 0).any(axis=0)
    used |= (np.abs(np.asarray(protocol.currents)[np.unique(np.asarray(protocol.pattern)[keep])]) > 0).any(axis=0)
    return np.flatnonzero(~used)


def draw_electrodes(ax, mesh: Mesh, *, removed: Sequence[int] = (), numbers: bool = True):
    """Electrode markers at ``mesh.electrode_centres()``, electrode 1 red, "1" and "2" labelled.

    Args:
        ax: matplotlib axes.
        mesh: the mesh (electrode positions in its frame).
        removed: 0-based indices of electrodes the data do not use: drawn as
            grey crosses (legend label "removed electrode").
        numbers: label electrodes 1 and 2 (shows the numbering direction).

    Returns:
        Legend handles (present, and removed when there are any).
    """
    centres = mesh.electrode_centres()
    n = len(centres)
    present = np.ones(n, bool)
    removed = np.asarray(list(removed), dtype=np.int64)
    if removed.size and (removed.min() < 0 or removed.max() >= n):
        raise ValueError(f"removed electrodes must be 0-based indices below {n}, got {removed.tolist()}")
    present[removed] = False
    handles = [ax.plot(*centres[present].T, label="electrode", **_PRESENT)[0]]
    if present[0]:
        ax.plot(*centres[:1].T, **{**_PRESENT, "color": "tab:red"})
    if (~present).any():
        handles.append(ax.plot(*centres[~present].T, label="removed electrode", **_REMOVED)[0])
    if numbers and n >= 2:
        mid = mesh.nodes.mean(axis=0)
        radius = float(np.max(np.linalg.norm(mesh.nodes - mid, axis=1)))
        spots = []
        for k in (0, 1):
            d = centres[k] - mid
            spot = centres[k] + 0.09 * radius * d / (np.linalg.norm(d) or 1.0)
            ax.text(*spot, str(k + 1), ha="center", va="center", fontsize=7,
                    color="tab:red" if k == 0 else "k", zorder=6)
            spots.append(spot)
        # keep the markers and labels inside the axes (images set tight limits at their extent)
        pts = np.vstack([centres, spots])
        pad = 0.05 * radius
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        ax.set_xlim(min(x0, pts[:, 0].min() - pad), max(x1, pts[:, 0].max() + pad))
        ax.set_ylim(min(y0, pts[:, 1].min() - pad), max(y1, pts[:, 1].max() + pad))
    return handles


def add_colorbar(ax, mappable, label: str, **kw):
    """A colour bar for ``mappable`` beside ``ax`` (one axes or a list), labelled with quantity and unit.

    Raises:
        ValueError: if ``label`` is empty (say what the colours mean, e.g.
            :data:`SIGMA_LABEL` or :data:`CONTRAST_LABEL`).
    """
    if not label:
        raise ValueError("a colour bar needs a label with the quantity and unit, e.g. "
                         f"label={SIGMA_LABEL!r} or label={CONTRAST_LABEL!r}")
    fig = (ax[0] if isinstance(ax, (list, tuple, np.ndarray)) else ax).figure
    style = dict(fraction=0.046, pad=0.04)
    style.update(kw)
    cb = fig.colorbar(mappable, ax=ax, **style)
    cb.set_label(label)
    return cb


def _finish(ax, mappable, colorbar, label):
    ax.set_aspect("equal")
    if colorbar is None:
        colorbar = label is not None
    if colorbar:
        add_colorbar(ax, mappable, label)


def plot_mesh(ax, mesh: Mesh, electrodes: bool = True, *, removed: Sequence[int] = (), **kw):
    """Draw the mesh wireframe (and electrode markers) on ``ax``.

    ``removed``: electrodes drawn as unused (:func:`draw_electrodes`).
    ``kw`` goes to ``ax.triplot`` (default thin grey lines). Returns the lines.
    """
    style = dict(color="0.5", lw=0.4)
    style.update(kw)
    lines = ax.triplot(_triangulation(mesh), **style)
    if electrodes:
        draw_electrodes(ax, mesh, removed=removed)
    ax.set_aspect("equal")
    return lines


def plot_mesh_values(ax, mesh: Mesh, values, electrodes: bool = True, colorbar: bool | None = None, *,
                     label: str | None = None, removed: Sequence[int] = (), **kw):
    """Colour a mesh by element values (E,) (flat) or nodal values (N,) (Gouraud shading).

    Args:
        ax: matplotlib axes.
        mesh: the mesh.
        values: (E,) or (N,) real array (NumPy or JAX).
        electrodes: draw electrode markers (:func:`draw_electrodes`).
        colorbar: add a colour bar next to ``ax``; default: when ``label`` is given.
        label: the colour bar's quantity and unit (:data:`SIGMA_LABEL`,
            :data:`CONTRAST_LABEL`, ...); required for a colour bar.
        removed: electrodes drawn as unused.
        **kw: passed to ``ax.tripcolor`` (``cmap``, ``vmin``, ``vmax``, ``norm``, ...).

    Returns:
        The ``tripcolor`` collection (a mappable for a shared colour bar).
    """
    values = _real(values, "values").reshape(-1)
    tri = _triangulation(mesh)
    if values.size == mesh.n_elements:
        pc = ax.tripcolor(tri, facecolors=values, **kw)
    elif values.size == mesh.n_nodes:
        pc = ax.tripcolor(tri, values, shading="gouraud", **kw)
    else:
        raise ValueError(f"values must have {mesh.n_elements} (elements) or {mesh.n_nodes} (nodes) entries, "
                         f"got {values.size}")
    if electrodes:
        draw_electrodes(ax, mesh, removed=removed)
    _finish(ax, pc, colorbar, label)
    return pc


def plot_image(ax, image, grid: Grid | None = None, mask=None, colorbar: bool | None = None, *,
               label: str | None = None, mesh: Mesh | None = None, removed: Sequence[int] = (), **kw):
    """Show an (H, W) image with ``origin="lower"`` (row index = y) unless ``origin`` is given.

    Args:
        ax: matplotlib axes.
        image: (H, W) real array.
        grid: gives the axis extent; without it, pixel indices are used.
        mask: optional (H, W) bool; pixels outside it are NaN (transparent).
        colorbar: add a colour bar next to ``ax``; default: when ``label`` is given.
        label: the colour bar's quantity and unit; required for a colour bar.
        mesh: if given, its electrodes are drawn over the image (needs ``grid``
            or an ``extent`` in the mesh's units).
        removed: electrodes drawn as unused.
        **kw: passed to ``ax.imshow`` (``cmap``, ``vmin``, ``vmax``, ``norm``,
            ``origin``, ``extent``, ...).

    Returns:
        The ``AxesImage``.
    """
    image = _real(image, "image values")
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D (H, W), got shape {image.shape}")
    if mask is not None:
        image = np.where(np.asarray(mask, dtype=bool), image, np.nan)
    style = dict(origin="lower", interpolation="nearest")
    if grid is not None:
        if grid.shape != image.shape:
            raise ValueError(f"image shape {image.shape} does not match the grid {grid.shape}")
        style["extent"] = grid.extent
    style.update(kw)
    im = ax.imshow(image, **style)
    if mesh is not None:
        if "extent" not in style:
            raise ValueError("electrodes over an image need its position: pass grid= or extent=")
        draw_electrodes(ax, mesh, removed=removed)
    _finish(ax, im, colorbar, label)
    return im


def class_handles(classes: Mapping[int, tuple] = KTC_CLASSES) -> list:
    """Legend handles (patches) "value: name" of segmentation classes, e.g. for one ``fig.legend`` over many panels."""
    return [Patch(facecolor=classes[v][1], edgecolor="0.3", lw=0.5, label=f"{v}: {classes[v][0]}")
            for v in sorted(classes)]


def plot_segmentation(ax, segmentation, *, mesh: Mesh | None = None, removed: Sequence[int] = (),
                      origin: str = "upper", legend: bool = True, classes: Mapping[int, tuple] = KTC_CLASSES):
    """Draw a class image (KTC2023: 0 water, 1 resistive, 2 conductive) in flat colours with a legend.

    Args:
        ax: matplotlib axes.
        segmentation: (H, W) integer classes. KTC2023 images are in the truth
            frame (row 0 at the top): ``origin="upper"`` (default).
        mesh: the tank's mesh: places the image on the square circumscribing it
            (the KTC pixel grid), blanks pixels outside the tank and draws the
            electrodes. Without it, pixel indices are used.
        removed: electrodes drawn as unused.
        legend: add a legend of the classes (and of the electrodes when some
            are removed).
        classes: value → (name, colour).

    Returns:
        The ``AxesImage``.
    """
    seg = np.asarray(segmentation)
    if seg.ndim != 2:
        raise ValueError(f"segmentation must be 2-D (H, W), got shape {seg.shape}")
    values = sorted(classes)
    if not np.isin(seg, values).all():
        raise ValueError(f"segmentation holds values {sorted(set(np.unique(seg)) - set(values))} that are not "
                         f"classes {values}; pass classes= with their names and colours")
    img = seg.astype(np.float64)
    style = dict(origin=origin, interpolation="nearest")
    if mesh is not None:
        mid = mesh.nodes.mean(axis=0)
        r = float(np.max(np.linalg.norm(mesh.nodes - mid, axis=1)))
        style["extent"] = (mid[0] - r, mid[0] + r, mid[1] - r, mid[1] + r)
        h, w = seg.shape
        x = mid[0] - r + (np.arange(w) + 0.5) * 2 * r / w
        y = mid[1] - r + (np.arange(h) + 0.5) * 2 * r / h
        if origin == "upper":
            y = y[::-1]
        xx, yy = np.meshgrid(x - mid[0], y - mid[1])
        img = np.where(np.hypot(xx, yy) <= r, img, np.nan)
    cmap = ListedColormap([classes[v][1] for v in values]).with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    bounds = np.concatenate([[values[0] - 0.5], np.asarray(values[:-1]) + 0.5, [values[-1] + 0.5]])
    im = ax.imshow(img, cmap=cmap, norm=BoundaryNorm(bounds, len(values)), **style)
    handles = class_handles(classes)
    if mesh is not None:
        el = draw_electrodes(ax, mesh, removed=removed)
        if len(removed):
            handles += el
    if legend:
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), fontsize=7, frameon=False,
                  ncol=1, handlelength=1.2)
    ax.set_aspect("equal")
    return im


def _metric_functions(metrics: MetricSpec | None) -> dict[str, Callable]:
    if metrics is None:
        return {}
    if isinstance(metrics, Mapping):
        return dict(metrics)
    out = {}
    for name in metrics:
        fn = getattr(jm, name, None)
        if fn is None or not callable(fn):
            raise ValueError(f"unknown metric {name!r}; pass a name from jaxeit.metrics or a dict of callables")
        out[name] = fn
    return out


def _format_metrics(values: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.3g}" for k, v in values.items())


def compare(images: Mapping[str, np.ndarray], truth=None, metrics: MetricSpec | None = None,
            path: str | os.PathLike | None = None, *, grid: Grid | None = None, mask=None,
            mesh: Mesh | None = None, cmap: str = "viridis", vmin: float | None = None,
            vmax: float | None = None, title: str | None = None, panel_size: float = 3.0,
            label: str = SIGMA_LABEL, electrodes: bool = True, removed: Sequence[int] = (),
            dpi: int = 120) -> Figure:
    """Side-by-side panels of images (and the truth) on one colour scale with one labelled colour bar.

    Args:
        images: name → (H, W) image, or (E,)/(N,) mesh values when ``mesh`` is given.
        truth: optional reference of the same kind, drawn first as "truth".
        metrics: names of functions in :mod:`jaxeit.metrics` (called as
            ``fn(x, truth, mask=mask)``; e.g. ``["relative_error", "ssim"]``) or
            a dict name → ``fn(x, truth) -> float``. Values appear in the panel
            titles; needs ``truth``.
        path: if given, the figure is saved there atomically
            (:func:`save_figure`); the format follows the suffix (.png, .pdf, .svg).
        grid: pixel grid for the axis extent of images.
        mask: (H, W) bool domain mask; pixels outside are blank and excluded
            from the colour range (and passed to the metrics).
        mesh: the mesh for 1-D (mesh-valued) entries; with images (and
            ``grid``) its electrodes are drawn over them.
        cmap, vmin, vmax: colour map and shared range (default: min/max over all
            panels, inside the mask).
        title: figure title.
        label: the colour bar's quantity and unit (default :data:`SIGMA_LABEL`;
            :data:`CONTRAST_LABEL` for log-contrasts).
        electrodes: draw the electrodes of ``mesh`` on every panel.
        removed: electrodes drawn as unused.

    Returns:
        The :class:`matplotlib.figure.Figure` (not registered with pyplot). All
        panels share one :class:`matplotlib.colors.Normalize`, the norm of the
        colour bar.
    """
    panels = ({"truth": truth} if truth is not None else {}) | dict(images)
    if not panels:
        raise ValueError("nothing to plot: images is empty and no truth given")
    arrays = {k: _real(v, f"values of {k!r}") for k, v in panels.items()}
    fns = _metric_functions(metrics)
    if fns and truth is None:
        raise ValueError("metrics need a truth to compare against")
    mask_arr = None if mask is None else np.asarray(mask, dtype=bool)

    def visible(a):
        return a[mask_arr] if (mask_arr is not None and a.ndim == 2) else a

    finite = np.concatenate([visible(a)[np.isfinite(visible(a))].ravel() for a in arrays.values()])
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if hi <= lo:  # constant images: open the range so the colour bar is drawable
        hi = lo + max(abs(lo), 1.0) * 1e-6
    norm = Normalize(lo, hi)

    n = len(arrays)
    fig = Figure(figsize=(panel_size * n + 0.9, panel_size + 0.5), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    mappable = None
    for ax, (name, arr) in zip(axes, arrays.items()):
        if arr.ndim == 1:
            if mesh is None:
                raise ValueError(f"{name!r} is 1-D (mesh values): pass mesh=")
            mappable = plot_mesh_values(ax, mesh, arr, electrodes=electrodes, removed=removed, cmap=cmap, norm=norm)
        else:
            on_mesh = mesh if (electrodes and grid is not None) else None
            mappable = plot_image(ax, arr, grid=grid, mask=mask_arr, mesh=on_mesh, removed=removed, cmap=cmap,
                                  norm=norm)
        text = name
        if fns and name != "truth":
            x, ref = arr, arrays["truth"]
            if mask_arr is not None and arr.ndim == 2:
                # outside the domain the reconstruction takes the reference's values (as jaxeit.metrics
                # does with a mask), so fill values (0, NaN) never reach windowed metrics (SSIM)
                ref = np.where(mask_arr | np.isfinite(ref), ref, 0.0)
                x = np.where(mask_arr, x, ref)
            vals = {}
            for mname, fn in fns.items():
                named = not isinstance(metrics, Mapping) and arr.ndim == 2
                value = fn(x, ref, mask=mask_arr) if named else fn(x, ref)
                vals[mname] = float(np.asarray(value))
            text = f"{name}\n{_format_metrics(vals)}"
        ax.set_title(text, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    add_colorbar(list(axes), mappable, label, shrink=0.8, fraction=0.15 / n, pad=0.02)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def _symmetric(values) -> float:
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    return float(finite.max()) if finite.size and finite.max() > 0 else 1.0


def contrast_figure(mesh: Mesh, contrast, *, title: str | None = None, removed: Sequence[int] = (),
                    label: str = CONTRAST_LABEL, panel_size: float = 4.2, path: str | os.PathLike | None = None,
                    dpi: int = 110) -> Figure:
    """One panel: a log-contrast log(σ/σ_bg) (E,) on the mesh, red conductive, blue resistive, colour bar.

    Used for KIT4 reconstructions (``jaxeit reconstruct datamat_*.mat``). ``removed``
    electrodes are drawn as unused; ``path`` saves the figure (:func:`save_figure`).
    """
    fig = Figure(figsize=(panel_size + 0.9, panel_size), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    vmax = _symmetric(contrast)
    plot_mesh_values(ax, mesh, contrast, removed=removed, cmap="RdBu_r", vmin=-vmax, vmax=vmax, label=label)
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def ktc_figure(mesh: Mesh, contrast, segmentation, *, truth=None, removed: Sequence[int] = (),
               score: float | None = None, title: str | None = None, label: str = CONTRAST_LABEL,
               panel_size: float = 3.2,
               path: str | os.PathLike | None = None, dpi: int = 110) -> Figure:
    """KTC2023 result: [truth,] log-contrast on the mesh, segmentation; legends and a colour bar.

    Args:
        mesh: the tank mesh of the reconstruction (:func:`jaxeit.realdata.ktc_mesh`).
        contrast: (E,) log(σ/σ_bg) on ``mesh`` (or Δσ for the organisers' baseline:
            pass ``label="Δσ (S/m)"``).
        segmentation: (256, 256) classes 0/1/2 in the truth frame (row 0 at the top).
        truth: optional (256, 256) ground-truth classes, drawn first.
        removed: electrodes the level removes (0-based), drawn as grey crosses;
            :func:`unused_electrodes` of the data set's protocol and mask.
        score: the challenge score, shown in the segmentation's title.
        title: figure title.
        label: the contrast's colour-bar label (default :data:`CONTRAST_LABEL`).
        path: if given, the figure is saved there (:func:`save_figure`).

    Returns:
        The :class:`matplotlib.figure.Figure`.
    """
    n = 2 + (truth is not None)
    fig = Figure(figsize=(panel_size * n + 0.9, panel_size + 1.1), dpi=dpi, layout="constrained")
    axes = list(fig.subplots(1, n))
    if truth is not None:
        plot_segmentation(axes[0], truth, mesh=mesh, removed=removed)
        axes[0].set_title("truth", fontsize=9)
    ax = axes[-2]
    vmax = _symmetric(contrast)
    plot_mesh_values(ax, mesh, contrast, removed=removed, cmap="RdBu_r", vmin=-vmax, vmax=vmax, label=label)
    ax.set_title("reconstruction", fontsize=9)
    plot_segmentation(axes[-1], segmentation, mesh=mesh, removed=removed)
    axes[-1].set_title("segmentation" + ("" if score is None else f", score {score:.3f}"), fontsize=9)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    if path is not None:
        save_figure(fig, path, dpi=dpi)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, **kw) -> None:
    """Save ``fig`` atomically: write a temporary file beside ``path``, then ``os.replace``.

    Readers never see a half-written file, and an existing file is only
    replaced once the new one is complete. Parent folders are created.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fmt = kw.pop("format", suffix[1:] or "png")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, **kw)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
