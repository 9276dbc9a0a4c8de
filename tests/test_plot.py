"""Plot helpers: headless PNGs, and the conventions of every figure (labelled colour bars, legends, electrodes)."""

import os

import numpy as np
import pytest
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure

import jaxeit
import jaxeit.mesh
from jaxeit import plot, protocol
from jaxeit.grid import Grid, domain_mask, mesh_to_grid_elements

from .conftest import data_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mesh():
    return jaxeit.mesh.disk(h=0.1, offset=np.pi / 2)


@pytest.fixture(scope="module")
def images(mesh):
    grid = Grid.for_mesh(mesh, size=32)
    mask = domain_mask(grid, mesh)
    sigma = 1.0 + (np.linalg.norm(mesh.centroids() - [0.3, 0.2], axis=1) < 0.3)
    truth = np.asarray(mesh_to_grid_elements(mesh, grid)(sigma))
    recon = truth + 0.1 * np.random.default_rng(0).standard_normal(truth.shape)
    return grid, mask, sigma, truth, recon


@pytest.fixture(scope="module")
def tank():
    from jaxeit.realdata import ktc_mesh

    return ktc_mesh(h=0.03)


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def _mappables(ax):
    return [m for m in [*ax.images, *ax.collections] if m.get_array() is not None]


def check_figure(fig: Figure) -> dict:
    """Every axes showing values has a labelled colour bar (sharing its norm) or, for classes, a legend.

    Returns counts {"colorbar": panels with a colour bar, "legend": panels with a class legend}.
    """
    bars = [m.colorbar for ax in fig.axes for m in _mappables(ax) if getattr(m, "colorbar", None) is not None]
    bar_axes = {cb.ax for cb in bars}
    counts = {"colorbar": 0, "legend": 0}
    for ax in fig.axes:
        if ax in bar_axes:
            continue
        for m in _mappables(ax):
            if isinstance(m.norm, BoundaryNorm):  # classes: a legend names each colour
                legend = ax.get_legend()
                assert legend is not None, f"panel {ax.get_title()!r} shows classes without a legend"
                assert len(legend.get_texts()) >= m.norm.Ncmap
                counts["legend"] += 1
            else:
                mine = [cb for cb in bars if cb.mappable.norm is m.norm]
                assert mine, f"panel {ax.get_title()!r} has no colour bar"
                label = mine[0].ax.get_ylabel() or mine[0].ax.get_xlabel()
                assert label.strip(), f"the colour bar of panel {ax.get_title()!r} has no label"
                counts["colorbar"] += 1
    return counts


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_axes_plots(tmp_path, mesh, images):
    grid, mask, sigma, truth, _ = images
    fig = Figure(figsize=(12, 3))
    axes = fig.subplots(1, 4)
    plot.plot_mesh(axes[0], mesh)
    plot.plot_mesh_values(axes[1], mesh, sigma, label=plot.SIGMA_LABEL, cmap="magma")
    plot.plot_mesh_values(axes[2], mesh, mesh.nodes[:, 0], electrodes=False, label="x (m)")  # nodal, Gouraud
    im = plot.plot_image(axes[3], truth, grid=grid, mask=mask, label=plot.SIGMA_LABEL)
    np.testing.assert_allclose(im.get_extent(), grid.extent)
    assert np.ma.getmaskarray(im.get_array())[~mask].all()  # NaN outside the domain: not drawn
    assert check_figure(fig) == {"colorbar": 3, "legend": 0}
    assert {"1", "2"} <= set(_texts(axes[0])) and "2" not in _texts(axes[2])
    path = tmp_path / "axes.png"
    plot.save_figure(fig, path)
    _assert_png(path)
    with pytest.raises(ValueError, match="entries"):
        plot.plot_mesh_values(axes[1], mesh, np.ones(7))
    with pytest.raises(ValueError, match="complex"):
        plot.plot_mesh_values(axes[1], mesh, sigma + 1j)
    with pytest.raises(ValueError, match="label="):  # a colour bar must say what it shows
        plot.plot_mesh_values(axes[1], mesh, sigma, colorbar=True)


def test_electrode_1_is_drawn_where_the_mesh_puts_it(mesh):
    """The figure frame is the mesh frame: electrode 1 of a disk with offset π/2 is at the top."""
    fig = Figure()
    ax = fig.subplots()
    plot.plot_mesh(ax, mesh)
    one = next(t for t in ax.texts if t.get_text() == "1")
    two = next(t for t in ax.texts if t.get_text() == "2")
    x1, y1 = one.get_position()
    x2, y2 = two.get_position()
    assert abs(x1) < 0.01 and y1 > 1.0  # top, just outside the unit disk
    assert np.arctan2(y2, x2) > np.arctan2(y1, x1)  # counter-clockwise numbering
    y_lo, y_hi = ax.get_ylim()
    assert y_hi > y1  # the label is inside the axes


def test_compare_saves_atomically(tmp_path, mesh, images):
    grid, mask, sigma, truth, recon = images
    path = tmp_path / "sub" / "compare.png"
    fig = plot.compare({"noisy": recon, "same": truth}, truth=truth, grid=grid, mask=mask,
                       metrics=["relative_error", "psnr"], path=path, title="test")
    assert isinstance(fig, Figure)
    _assert_png(path)
    assert os.listdir(path.parent) == ["compare.png"]  # no temporary file left behind
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "truth" and "relative_error=" in titles[1] and "psnr=" in titles[1]
    # shared colour scale over all panels, one labelled colour bar
    clims = {im.get_clim() for ax in fig.axes for im in ax.get_images()}
    assert len(clims) == 1
    assert check_figure(fig) == {"colorbar": 3, "legend": 0}
    # overwriting an existing file goes through the same atomic replace
    plot.compare({"x": recon}, path=path)
    _assert_png(path)


def test_demo_figure(mesh, images):
    """The demo's call: images on a grid with the inverse mesh's electrodes, σ in S/m."""
    grid, mask, _, truth, recon = images
    fig = plot.compare({"GN": recon}, truth=truth, grid=grid, mask=mask, mesh=mesh, label=plot.SIGMA_LABEL,
                       metrics={"PSNR": lambda x, r: float(np.mean((x - r) ** 2))})
    assert check_figure(fig) == {"colorbar": 2, "legend": 0}
    bar = next(m.colorbar for ax in fig.axes for m in _mappables(ax) if m.colorbar is not None)
    assert bar.ax.get_ylabel() == "σ (S/m)"
    for ax in fig.axes[:2]:  # electrodes on every panel, electrode 1 labelled
        assert "1" in _texts(ax) and ax.lines


def test_compare_mesh_values_and_custom_metrics(tmp_path, mesh, images):
    _, _, sigma, _, _ = images
    path = tmp_path / "mesh.png"
    fig = plot.compare({"recon": sigma * 1.1}, truth=sigma, mesh=mesh, path=path, label=plot.CONTRAST_LABEL,
                       metrics={"max": lambda x, ref: np.abs(x - ref).max()})
    _assert_png(path)
    assert "max=0.2" in fig.axes[1].get_title()
    assert check_figure(fig) == {"colorbar": 2, "legend": 0}
    with pytest.raises(ValueError, match="truth"):
        plot.compare({"a": sigma}, mesh=mesh, metrics=["mse"])
    with pytest.raises(ValueError, match="mesh="):
        plot.compare({"a": sigma})
    with pytest.raises(ValueError, match="label="):
        plot.compare({"a": sigma}, mesh=mesh, label="")


def _ktc_inputs(tank):
    contrast = np.tanh(8 * tank.centroids()[:, 0])
    seg = np.zeros((256, 256), np.int64)
    seg[40:90, 100:150] = 2
    seg[150:200, 60:120] = 1
    return contrast, seg


def test_ktc_figure(tmp_path, tank):
    """KTC2023: truth panel, contrast with a labelled colour bar, segmentation legend, removed electrodes."""
    contrast, seg = _ktc_inputs(tank)
    path = tmp_path / "ktc.png"
    fig = plot.ktc_figure(tank, contrast, seg, truth=seg, removed=range(6), score=0.5, title="level 4", path=path)
    _assert_png(path)
    assert check_figure(fig) == {"colorbar": 1, "legend": 2}
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["truth", "reconstruction", "segmentation, score 0.500"]
    legend = [t.get_text() for t in panels[-1].get_legend().get_texts()]
    assert legend[:3] == ["0: water (background)", "1: resistive", "2: conductive"]
    assert "removed electrode" in legend
    bar = next(m.colorbar for m in _mappables(panels[1]))
    assert bar.ax.get_ylabel() == plot.CONTRAST_LABEL
    # present and removed electrodes are drawn apart: 26 squares and 6 crosses at level 4
    for ax in panels:
        by_marker = {ln.get_marker(): len(ln.get_xdata()) for ln in ax.lines if ln.get_label() != "_nolegend_"
                     and not ln.get_label().startswith("_")}
        assert by_marker == {"s": 26, "x": 6}
    # the truth frame (row 0 at the top) lands on the mesh frame: the conductive block (rows 40-90) is up
    im = panels[0].get_images()[0]
    assert im.origin == "upper"
    # without a truth: two panels
    fig = plot.ktc_figure(tank, contrast, seg)
    assert check_figure(fig) == {"colorbar": 1, "legend": 1}
    with pytest.raises(ValueError, match="classes"):
        plot.ktc_figure(tank, contrast, seg + 5)


def test_contrast_figure(tmp_path, tank):
    contrast, _ = _ktc_inputs(tank)
    fig = plot.contrast_figure(tank, contrast, title="KIT4", path=tmp_path / "c.png")
    _assert_png(tmp_path / "c.png")
    assert check_figure(fig) == {"colorbar": 1, "legend": 0}
    lo, hi = next(m for ax in fig.axes for m in _mappables(ax) if m.colorbar is not None).get_clim()
    assert lo == -hi  # symmetric: white is no change


def test_unused_electrodes():
    prot = protocol.adjacent(16)
    assert plot.unused_electrodes(prot).size == 0
    # drop every measurement that drives or reads electrode 3
    touches = (np.abs(prot.measurements[:, 3]) > 0) | (np.abs(prot.currents[prot.pattern, 3]) > 0)
    np.testing.assert_array_equal(plot.unused_electrodes(prot, ~touches), [3])
    with pytest.raises(ValueError, match="one entry per measurement"):
        plot.unused_electrodes(prot, np.ones(5, bool))


@pytest.mark.skipif(not (data_dir() / "ktc2023" / "training" / "ref.mat").is_file(),
                    reason="KTC2023 data not found (set JAXEIT_DATA)")
def test_unused_electrodes_of_ktc_levels():
    """KTC2023 level l removes electrodes 1 … 2(l−1) (1-based): the data set's mask says so."""
    from jaxeit.io import load_ktc2023

    folder = data_dir() / "ktc2023" / "training"
    for level in (1, 4, 7):
        ds = load_ktc2023(folder / "data1.mat", folder / "ref.mat", level=level)
        np.testing.assert_array_equal(plot.unused_electrodes(ds.protocol, ds.mask), np.arange(2 * (level - 1)))


@pytest.fixture
def saved_figures(monkeypatch):
    """Every figure saved through matplotlib while the test runs (the CLI's and the demo's own calls)."""
    figures = []
    original = Figure.savefig

    def record(self, *args, **kwargs):
        figures.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return figures


def test_cli_figures_have_labelled_colour_bars_and_legends(tmp_path, saved_figures, monkeypatch):
    """The figures `jaxeit reconstruct` writes (an .npz of voltages; KTC2023 when the data are there)."""
    import jax.numpy as jnp

    from jaxeit import ForwardModel, cli

    m = jaxeit.mesh.disk(h=0.25, edge_refinement=0.6)
    sigma = 1.0 + 0.5 * (np.linalg.norm(m.centroids() - [0.3, 0.2], axis=1) < 0.35)
    np.savez(tmp_path / "data.npz", v=np.asarray(ForwardModel(m, protocol.adjacent(16)).voltages(jnp.asarray(sigma))))
    assert cli.main(["reconstruct", str(tmp_path / "data.npz"), "--method", "one-step", "--h", "0.25",
                     "--out", str(tmp_path), "--quiet"]) == 0
    assert len(saved_figures) == 1 and check_figure(saved_figures[0])["colorbar"] == 1
    if not (data_dir() / "ktc2023").is_dir():
        pytest.skip(f"real data not found at {data_dir() / 'ktc2023'} (set JAXEIT_DATA)")
    monkeypatch.setenv("JAXEIT_DATA", str(data_dir()))
    assert cli.main(["reconstruct", "ktc2023/training/data1.mat", "--method", "baseline", "--level", "4", "--h", "0.03",
                     "--out", str(tmp_path), "--quiet"]) == 0
    assert check_figure(saved_figures[-1]) == {"colorbar": 1, "legend": 2}   # truth and segmentation legends


def test_demo_figure_as_the_demo_saves_it(tmp_path, saved_figures, monkeypatch):
    """`jaxeit demo`'s own figure (its reconstructions stubbed out: only the drawing is under test)."""
    from jaxeit import cli, recon
    from jaxeit.recon.result import Result

    def fake_reconstruct(model, v, method, grid=None, **_):
        sigma = np.full(model.n_elements, 0.2)
        return Result(sigma=sigma, method=str(method), history={}, n_iter=1, status="done", wall_time=0.0,
                      background=0.2, image=np.full(grid.shape, 0.2))

    disk = jaxeit.mesh.disk
    monkeypatch.setattr(recon, "reconstruct", fake_reconstruct)
    monkeypatch.setattr(jaxeit.mesh, "disk", lambda **kw: disk(**{**kw, "h": 0.03}))   # coarse meshes: quick
    cli.demo(tmp_path, quick=True, quiet=True)
    from jaxeit.priors import DEFAULT_PRIOR, available_priors

    n_methods = 5 if DEFAULT_PRIOR in available_priors() else 4   # Diff-INR needs the shipped prior
    counts = check_figure(saved_figures[-1])
    assert counts == {"colorbar": 1 + n_methods, "legend": 0}   # the truth and each method, σ in S/m
