"""Matplotlib figures for meshes, conductivities and reconstructions (headless-safe).

Nothing here imports ``matplotlib.pyplot`` or selects a backend: axes-level
functions draw on the ``ax`` they are given, and :func:`compare` builds a
standalone :class:`matplotlib.figure.Figure` (rendered by Agg when saved; it
also displays inline in Jupyter). So the module works on machines without a
display and never leaks pyplot figures.
"""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Mapping, Sequence, Union

import matplotlib.tri as mtri
import numpy as np
from matplotlib.figure import Figure

from jaxeit import metrics as jm
from jaxeit.grid import Grid
from jaxeit.mesh import Mesh

__all__ = ["plot_mesh", "plot_mesh_values", "plot_image", "compare", "save_figure"]

MetricSpec = Union[Sequence[str], Mapping[str, Callable]]


def _triangulation(mesh: Mesh) -> mtri.Triangulation:
    return mtri.Triangulation(mesh.nodes[:, 0], mesh.nodes[:, 1], mesh.triangles)


def _real(values, what: str) -> np.ndarray:
    values = np.asarray(values)
    if np.iscomplexobj(values):
        raise ValueError(f"{what} are complex: plot .real, .imag or abs() explicitly")
    return values.astype(np.float64)


def _draw_electrodes(ax, mesh: Mesh, **kw):
    """Electrode centres as markers; electrode 0 is drawn in a second colour to show the ordering."""
    centres = mesh.electrode_centres()
    style = dict(marker="s", ms=5, ls="none", color="k", zorder=5)
    style.update(kw)
    ax.plot(centres[1:, 0], centres[1:, 1], **style)
    ax.plot(centres[:1, 0], centres[:1, 1], **{**style, "color": "tab:red"})


def _finish(ax, mappable, colorbar: bool):
    ax.set_aspect("equal")
    if colorbar:
        ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.04)


def plot_mesh(ax, mesh: Mesh, electrodes: bool = True, **kw):
    """Draw the mesh wireframe (and electrode markers) on ``ax``.

    ``kw`` goes to ``ax.triplot`` (default thin grey lines). Returns the lines.
    """
    style = dict(color="0.5", lw=0.4)
    style.update(kw)
    lines = ax.triplot(_triangulation(mesh), **style)
    if electrodes:
        _draw_electrodes(ax, mesh)
    ax.set_aspect("equal")
    return lines


def plot_mesh_values(ax, mesh: Mesh, values, electrodes: bool = True, colorbar: bool = False, **kw):
    """Colour a mesh by element values (E,) (flat) or nodal values (N,) (Gouraud shading).

    Args:
        ax: matplotlib axes.
        mesh: the mesh.
        values: (E,) or (N,) real array (NumPy or JAX).
        electrodes: draw electrode markers at ``mesh.electrode_centres()``.
        colorbar: add a colour bar next to ``ax``.
        **kw: passed to ``ax.tripcolor`` (``cmap``, ``vmin``, ``vmax``, ...).

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
        _draw_electrodes(ax, mesh)
    _finish(ax, pc, colorbar)
    return pc


def plot_image(ax, image, grid: Grid | None = None, mask=None, colorbar: bool = False, **kw):
    """Show an (H, W) image with ``origin="lower"`` (row index = y).

    Args:
        ax: matplotlib axes.
        image: (H, W) real array.
        grid: gives the axis extent; without it, pixel indices are used.
        mask: optional (H, W) bool; pixels outside it are NaN (transparent).
        colorbar: add a colour bar next to ``ax``.
        **kw: passed to ``ax.imshow`` (``cmap``, ``vmin``, ``vmax``, ...).

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
    _finish(ax, im, colorbar)
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
            colorbar: bool = True, dpi: int = 120) -> Figure:
    """Side-by-side panels of images (and the truth) on a shared colour scale.

    Args:
        images: name → (H, W) image, or (E,)/(N,) mesh values when ``mesh`` is given.
        truth: optional reference of the same kind, drawn first as "truth".
        metrics: names of functions in :mod:`jaxeit.metrics` (called as
            ``fn(x, truth, mask=mask)``; e.g. ``["relative_error", "ssim"]``) or
            a dict name → ``fn(x, truth) -> float``. Values appear in the panel
            titles; needs ``truth``.
        path: if given, the figure is saved there atomically (written to a
            temporary file in the same folder, then ``os.replace``); the format
            follows the suffix (.png, .pdf, .svg).
        grid: pixel grid for the axis extent of images.
        mask: (H, W) bool domain mask; pixels outside are blank and excluded
            from the colour range (and passed to the metrics).
        mesh: the mesh for 1-D (mesh-valued) entries.
        cmap, vmin, vmax: colour map and shared range (default: min/max over all
            panels, inside the mask).
        title: figure title.

    Returns:
        The :class:`matplotlib.figure.Figure` (not registered with pyplot).
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

    n = len(arrays)
    fig = Figure(figsize=(panel_size * n + (0.6 if colorbar else 0.0), panel_size + 0.5), dpi=dpi,
                 layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    mappable = None
    for ax, (name, arr) in zip(axes, arrays.items()):
        if arr.ndim == 1:
            if mesh is None:
                raise ValueError(f"{name!r} is 1-D (mesh values): pass mesh=")
            mappable = plot_mesh_values(ax, mesh, arr, electrodes=True, cmap=cmap, vmin=lo, vmax=hi)
        else:
            mappable = plot_image(ax, arr, grid=grid, mask=mask_arr, cmap=cmap, vmin=lo, vmax=hi)
        label = name
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
            label = f"{name}\n{_format_metrics(vals)}"
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if colorbar and mappable is not None:
        fig.colorbar(mappable, ax=list(axes), shrink=0.8)
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
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
