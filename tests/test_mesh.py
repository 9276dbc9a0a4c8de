"""Meshes: electrode geometry, orientation, quality, conversions, bad input."""

import numpy as np
import pytest

from jaxeit import mesh


def test_disk_electrodes(small_disk):
    m = small_disk
    assert m.n_electrodes == 16
    np.testing.assert_allclose(m.electrode_lengths(), 0.2, rtol=1e-3)  # chords ≈ arc length
    angles = np.arctan2(*m.electrode_centres()[:, ::-1].T) % (2 * np.pi)
    np.testing.assert_allclose(angles, 2 * np.pi * np.arange(16) / 16, atol=1e-6)
    # electrode ends are mesh vertices on the circle at centre ± w/2
    for k in range(16):
        ids = np.unique(m.electrode_edges[m.edge_electrode == k])
        th = np.sort(np.arctan2(m.nodes[ids, 1], m.nodes[ids, 0]) - 2 * np.pi * k / 16)
        th = (th + np.pi) % (2 * np.pi) - np.pi
        assert np.isclose(th.min(), -0.1, atol=1e-9) and np.isclose(th.max(), 0.1, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(m.nodes[m.boundary_loop()], axis=1), 1.0, atol=1e-9)


def test_offset_and_radius():
    m = mesh.disk(radius=0.14, n_electrodes=16, electrode_width=0.025, h=0.02, offset=np.pi / 2)
    centres = m.electrode_centres()
    ang = np.arctan2(centres[:, 1], centres[:, 0])
    np.testing.assert_allclose(np.cos(ang - (np.pi / 2 + 2 * np.pi * np.arange(16) / 16)), 1.0, atol=1e-9)
    np.testing.assert_allclose(m.electrode_lengths(), 0.025, rtol=1e-3)


def test_orientation_quality_and_area(small_disk):
    assert np.all(small_disk.areas() > 0)
    q = small_disk.quality()
    assert q["min_angle_deg"] > 20
    assert abs(small_disk.areas().sum() - np.pi) < 0.01
    assert 0.05 < small_disk.mean_edge_length() < 0.2
    loop = small_disk.boundary_loop()
    x, y = small_disk.nodes[loop].T
    assert 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0  # counter-clockwise


@pytest.mark.parametrize("make", [lambda: mesh.ellipse(h=0.1), lambda: mesh.thorax(h=0.1)])
def test_other_outlines(make):
    m = make()
    assert m.n_electrodes == 16 and np.all(m.areas() > 0)
    lengths = m.electrode_lengths()
    np.testing.assert_allclose(lengths, lengths.mean(), rtol=0.02)


@pytest.mark.parametrize("fmt", ["gmsh22", "gmsh", "vtu", "xdmf"])
@pytest.mark.parametrize("electrodes", ["cem", "point"])
def test_meshio_roundtrip(fmt, electrodes, tiny_disk, tmp_path):
    """to_meshio() written by meshio (gmsh 2.2, gmsh 4.1, VTU, XDMF) reads back as the same mesh, exactly."""
    import meshio

    if fmt == "xdmf":
        pytest.importorskip("h5py", reason="meshio's XDMF writer needs h5py")
    m = tiny_disk
    if electrodes == "point":  # point electrodes and a reference node that are not the defaults
        m = mesh.from_pyeit(m.nodes, m.triangles, [9, 4, 7, 12], ref_node=20)
    path = tmp_path / f"mesh.{'msh' if fmt.startswith('gmsh') else fmt}"
    m.to_meshio().write(path, file_format=fmt)
    back = mesh.from_meshio(meshio.read(path))
    for name in ("nodes", "triangles", "electrode_edges", "edge_electrode", "electrode_nodes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name), err_msg=name)
    assert back.ref_node == m.ref_node


def test_validation_is_fast_on_20k_nodes():
    """All construction checks are vectorised: a 20k-node mesh is validated in well under a second."""
    import time

    n = 142
    x, y = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n))
    nodes = np.column_stack([x.ravel(), y.ravel()])
    k = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    tri = np.concatenate([np.stack([k, k + 1, k + n + 1], 1), np.stack([k, k + n + 1, k + n], 1)])
    edges = np.array([[0, 1], [1, 2], [n - 3, n - 2], [n - 2, n - 1]])
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        m = mesh.Mesh.from_arrays(nodes, tri, electrode_edges=edges, edge_electrode=[0, 0, 1, 1], orient=True)
        times.append(time.perf_counter() - t0)
    assert m.n_nodes == n * n > 20_000 and m.n_electrodes == 2
    assert min(times) < 1.0, f"validating {m} took {min(times):.2f} s"


def test_inverted_triangles_rejected():
    nodes = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1]])
    with pytest.raises(ValueError, match="inverted"):
        mesh.Mesh(nodes, np.array([[0, 2, 1], [1, 3, 2]]), np.zeros((0, 2)), np.zeros(0), [0, 1], ref_node=2)
    with pytest.raises(ValueError, match="degenerate"):
        mesh.Mesh(np.vstack([nodes, [[2.0, 0]]]), np.array([[0, 1, 4], [1, 3, 2]]), np.zeros((0, 2)),
                  np.zeros(0), [0, 1], ref_node=2)
    fixed = mesh.Mesh.from_arrays(nodes, [[0, 2, 1], [1, 3, 2]], electrode_nodes=[0, 1], ref_node=2)
    assert np.all(fixed.areas() > 0)


def test_overlapping_electrodes_rejected():
    with pytest.raises(ValueError, match="overlap"):
        mesh.disk(n_electrodes=16, electrode_width=0.5, h=0.2)


def test_from_pyeit_ref_node_rule():
    m = mesh.from_pyeit([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 2]], [[0, 1, 2], [1, 3, 2], [2, 3, 4]], [0, 1, 3, 4])
    assert m.ref_node == 2 and not m.has_electrode_edges


def test_save_load_roundtrip_exact(tmp_path):
    from jaxeit import mesh as jm

    m = jm.disk(h=0.3)
    path = m.save(tmp_path / "disk.npz")
    back = jm.Mesh.load(path)
    for name in ("nodes", "triangles", "electrode_edges", "edge_electrode", "electrode_nodes"):
        assert np.array_equal(getattr(back, name), getattr(m, name)), name
    assert back.ref_node == m.ref_node


def test_load_bad_file_names_the_problem(tmp_path):
    from jaxeit import mesh as jm

    bad = tmp_path / "x.npz"
    bad.write_text("not a mesh")
    with pytest.raises(ValueError, match="cannot read a mesh"):
        jm.Mesh.load(bad)
