"""Plot helpers write PNG files headlessly."""

import os

import numpy as np
import pytest
from matplotlib.figure import Figure

import jaxeit
import jaxeit.mesh
from jaxeit import plot
from jaxeit.grid import Grid, domain_mask, mesh_to_grid_elements

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def mesh():
    return jaxeit.mesh.disk(h=0.1)


@pytest.fixture(scope="module")
def images(mesh):
    grid = Grid.for_mesh(mesh, size=32)
    mask = domain_mask(grid, mesh)
    sigma = 1.0 + (np.linalg.norm(mesh.centroids() - [0.3, 0.2], axis=1) < 0.3)
    truth = np.asarray(mesh_to_grid_elements(mesh, grid)(sigma))
    recon = truth + 0.1 * np.random.default_rng(0).standard_normal(truth.shape)
    return grid, mask, sigma, truth, recon


def _assert_png(path):
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_axes_plots(tmp_path, mesh, images):
    grid, mask, sigma, truth, _ = images
    fig = Figure(figsize=(12, 3))
    axes = fig.subplots(1, 4)
    plot.plot_mesh(axes[0], mesh)
    plot.plot_mesh_values(axes[1], mesh, sigma, colorbar=True, cmap="magma")
    plot.plot_mesh_values(axes[2], mesh, mesh.nodes[:, 0], electrodes=False)  # nodal, Gouraud
    im = plot.plot_image(axes[3], truth, grid=grid, mask=mask, colorbar=True)
    np.testing.assert_allclose(im.get_extent(), grid.extent)
    assert np.ma.getmaskarray(im.get_array())[~mask].all()  # NaN outside the domain: not drawn
    path = tmp_path / "axes.png"
    plot.save_figure(fig, path)
    _assert_png(path)
    with pytest.raises(ValueError, match="entries"):
        plot.plot_mesh_values(axes[1], mesh, np.ones(7))
    with pytest.raises(ValueError, match="complex"):
        plot.plot_mesh_values(axes[1], mesh, sigma + 1j)


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
    # shared colour scale over all panels
    clims = {im.get_clim() for ax in fig.axes for im in ax.get_images()}
    assert len(clims) == 1
    # overwriting an existing file goes through the same atomic replace
    plot.compare({"x": recon}, path=path)
    _assert_png(path)


def test_compare_mesh_values_and_custom_metrics(tmp_path, mesh, images):
    _, _, sigma, _, _ = images
    path = tmp_path / "mesh.png"
    fig = plot.compare({"recon": sigma * 1.1}, truth=sigma, mesh=mesh, path=path,
                       metrics={"max": lambda x, ref: np.abs(x - ref).max()})
    _assert_png(path)
    assert "max=0.2" in fig.axes[1].get_title()
    with pytest.raises(ValueError, match="truth"):
        plot.compare({"a": sigma}, mesh=mesh, metrics=["mse"])
    with pytest.raises(ValueError, match="mesh="):
        plot.compare({"a": sigma})
