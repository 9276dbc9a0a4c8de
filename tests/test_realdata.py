"""jaxeit.realdata: tank meshes and electrode numbering, calibration, segmentation, KTC scoring, KIT4 photos."""

import dataclasses
import math

import jax.numpy as jnp
import numpy as np
import pytest

import jaxeit
from jaxeit.protocol import Protocol, adjacent
from jaxeit.realdata import (calibrate, electrode_angles, electrode_permutation, permute_protocol,
                             relabel_electrodes, tank_mesh)
from jaxeit.realdata.calibrate import fit_electrode_widths
from jaxeit.realdata.imaging import noise_weights, weight_protocol
from jaxeit.realdata.tanks import stretch_electrodes
from jaxeit.realdata.kit4 import fit_rotation
from jaxeit.realdata.ktc import disk_mask, pixel_centres, score, segment, segment_image, segment_otsu

from .conftest import data_dir


@pytest.fixture(scope="module")
def tank8():
    """A coarse 8-electrode tank of radius 0.1 m (a few hundred elements)."""
    return tank_mesh(0.1, 8, 0.02, h=0.025, edge_refinement=1.0)


def _angles(mesh):
    c = mesh.electrode_centres()
    return np.mod(np.arctan2(c[:, 1], c[:, 0]), 2 * np.pi)


# -- electrode numbering -----------------------------------------------------------------

def test_electrode_permutation_and_angles():
    np.testing.assert_array_equal(electrode_permutation(8, "ccw"), np.arange(8))
    np.testing.assert_array_equal(electrode_permutation(8, "cw"), [0, 7, 6, 5, 4, 3, 2, 1])
    np.testing.assert_array_equal(electrode_permutation(8, "ccw", shift=2), [2, 3, 4, 5, 6, 7, 0, 1])
    np.testing.assert_allclose(electrode_angles(4, math.pi / 2, "cw"), [math.pi / 2, 0, 3 * math.pi / 2, math.pi])
    with pytest.raises(ValueError, match="direction"):
        electrode_permutation(8, "left")


def _assert_same_angles(actual, desired):
    """Angles equal on the circle (2π and 0 are the same direction)."""
    diff = np.angle(np.exp(1j * (np.asarray(actual) - np.asarray(desired))))
    np.testing.assert_allclose(diff, 0.0, atol=1e-9)


def test_tank_mesh_direction(tank8):
    cw = tank_mesh(0.1, 8, 0.02, h=0.025, offset=math.pi / 2, direction="cw", edge_refinement=1.0)
    _assert_same_angles(_angles(cw), electrode_angles(8, math.pi / 2, "cw"))
    _assert_same_angles(_angles(tank8), electrode_angles(8, 0.0, "ccw"))


def test_permuted_protocol_matches_relabelled_mesh(tank8):
    """Reordering electrodes on the protocol or on the mesh gives the same voltages."""
    proto = adjacent(8)
    perm = electrode_permutation(8, "cw", shift=3)
    sigma = 1.0 + 0.5 * (tank8.centroids()[:, 0] > 0.03)  # an off-centre inclusion breaks the symmetry
    a = jaxeit.ForwardModel(relabel_electrodes(tank8, perm), proto, contact_impedance=1e-3).voltages(sigma)
    b = jaxeit.ForwardModel(tank8, permute_protocol(proto, perm), contact_impedance=1e-3).voltages(sigma)
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="permutation"):
        permute_protocol(proto, [0, 0, 1, 2, 3, 4, 5, 6])


def test_homogeneous_data_cannot_tell_direction(tank8):
    """Reversing the numbering leaves empty-tank data unchanged up to discretisation (why offset/direction
    need an inhomogeneous target)."""
    proto = adjacent(8)
    ones = jnp.ones(tank8.n_elements)
    ccw = jaxeit.ForwardModel(tank8, proto, contact_impedance=1e-3).voltages(ones)
    cw = jaxeit.ForwardModel(tank8, permute_protocol(proto, electrode_permutation(8, "cw")),
                             contact_impedance=1e-3).voltages(ones)
    assert float(jnp.linalg.norm(cw - ccw) / jnp.linalg.norm(ccw)) < 0.02


# -- calibration ---------------------------------------------------------------------------

def test_calibration_recovers_scalar_sigma_and_z(tank8):
    model = jaxeit.ForwardModel(tank8, adjacent(8, amplitude=1e-3), contact_impedance=1e-3)
    sigma, z = 0.3, 2e-4
    v = model.voltages(jnp.full(tank8.n_elements, sigma), z)
    cal = calibrate(model, v)
    assert cal.sigma == pytest.approx(sigma, rel=1e-5)
    assert cal.contact_impedance == pytest.approx(z, rel=1e-3)
    assert cal.residual < 1e-6 and not cal.per_electrode


def test_cached_calibration_is_read_back_and_refitted_when_damaged(tank8, tmp_path, monkeypatch):
    """calibrate_dataset_cached fits once per recording, mesh and options; a damaged entry is fitted again."""
    import importlib

    from jaxeit.io import EITDataset

    cal_module = importlib.import_module("jaxeit.realdata.calibrate")   # the package exports a function of that name

    proto = adjacent(8, amplitude=1.0)
    model = cal_module.forward_model(EITDataset(proto, np.zeros(proto.n_measurements), None, None, 0.1, 8, 0.02,
                                                np.zeros(8), current_unit="mA"), tank8)
    v = np.asarray(model.voltages(jnp.full(tank8.n_elements, 0.3), 2e-4))
    ds = EITDataset(proto, v, v, None, 0.1, 8, 0.02, np.zeros(8), current_unit="mA")
    first = cal_module.calibrate_dataset_cached(ds, tank8, folder=tmp_path)
    assert first.sigma == pytest.approx(0.3, rel=1e-4)
    assert len(list(tmp_path.glob("*.json"))) == 1

    def no_fit(*a, **k):
        raise AssertionError("fitted again although the result is on disk")

    monkeypatch.setattr(cal_module, "calibrate_dataset", no_fit)
    again = cal_module.calibrate_dataset_cached(ds, tank8, folder=tmp_path)
    assert (again.sigma, again.contact_impedance, again.n_iter) == (first.sigma, first.contact_impedance,
                                                                    first.n_iter)
    with pytest.raises(AssertionError, match="fitted again"):   # another mask is another calibration
        cal_module.calibrate_dataset_cached(dataclasses.replace(ds, mask=np.arange(len(v)) > 0), tank8,
                                            folder=tmp_path)
    monkeypatch.undo()
    entry = next(tmp_path.glob("*.json"))
    entry.write_text("{ torn")
    refit = cal_module.calibrate_dataset_cached(ds, tank8, folder=tmp_path)
    assert refit.sigma == pytest.approx(first.sigma, rel=1e-9)
    assert entry.read_text().startswith("{") and "sigma" in entry.read_text()


def test_calibration_recovers_per_electrode_z(tank8):
    model = jaxeit.ForwardModel(tank8, adjacent(8, amplitude=1e-3, exclude_driven=False), contact_impedance=1e-3)
    sigma = 0.3
    z = 2e-4 * np.array([1.0, 1.5, 0.7, 1.2, 0.9, 2.0, 1.1, 0.8])
    v = model.voltages(jnp.full(tank8.n_elements, sigma), jnp.asarray(z))
    scalar = calibrate(model, v)
    full = calibrate(model, v, per_electrode=True)
    assert full.residual < 1e-5 < scalar.residual
    assert full.sigma == pytest.approx(sigma, rel=1e-4)
    np.testing.assert_allclose(full.contact_impedance, z, rtol=1e-2)


def test_stretch_electrodes_widens_one_electrode_and_checks_its_input(tank8):
    st = np.zeros(8)
    st[2] = 0.4
    wide = stretch_electrodes(tank8, st)

    def width(mesh, k):
        e = mesh.electrode_edges[mesh.edge_electrode == k]
        return np.linalg.norm(mesh.nodes[e[:, 0]] - mesh.nodes[e[:, 1]], axis=1).sum()

    assert width(wide, 2) == pytest.approx(1.4 * width(tank8, 2), rel=0.01)
    assert width(wide, 3) == pytest.approx(width(tank8, 3), rel=1e-9)
    np.testing.assert_allclose(np.hypot(*wide.nodes.T), np.hypot(*tank8.nodes.T), atol=1e-12)   # turned only
    np.testing.assert_array_equal(stretch_electrodes(tank8, np.zeros(8)).nodes, tank8.nodes)
    with pytest.raises(ValueError, match="one per electrode"):
        stretch_electrodes(tank8, np.zeros(7))
    with pytest.raises(ValueError, match=r"stretches\[1\] = -1 is outside"):
        stretch_electrodes(tank8, np.array([0, -1.0, 0, 0, 0, 0, 0, 0]))


def test_fit_electrode_widths_recovers_the_widths_of_a_simulated_empty_tank(tank8):
    """Empty-tank data made on a mesh with uneven electrode widths: the fit on the drawn mesh finds
    them (the misfit left after channel offsets falls tenfold) and z with them."""
    from jaxeit.io import EITDataset

    protocol = adjacent(8, amplitude=1.0, exclude_driven=False)          # mA
    true = np.array([0.3, -0.2, 0.1, 0.0, -0.3, 0.2, 0.25, -0.1])
    truth_mesh = stretch_electrodes(tank8, true)
    model = jaxeit.ForwardModel(truth_mesh, Protocol(protocol.currents * 1e-3, protocol.measurements,
                                                     protocol.pattern), contact_impedance=2e-4)
    v = np.asarray(model.voltages(jnp.full(tank8.n_elements, 0.3), 2e-4))
    ds = EITDataset(protocol=protocol, voltages=v, reference=v, mask=np.ones(len(v), bool), radius=0.1,
                    n_electrodes=8, electrode_width=0.02, electrode_angles=np.arange(8) * 2 * np.pi / 8)
    fit = fit_electrode_widths(ds, tank8, iterations=4)
    assert fit.misfit_after < 0.1 * fit.misfit_before
    np.testing.assert_allclose(fit.stretches, true, atol=0.05)
    assert fit.calibration.sigma == pytest.approx(0.3, rel=0.02)

def test_weighting_helpers():
    w = noise_weights([1.0, -2.0, 0.01, 0.0])
    assert w.mean() == pytest.approx(1.0) and w[3] > w[1]
    proto = weight_protocol(adjacent(8), np.full(40, 2.0))
    np.testing.assert_allclose(proto.measurements, 2 * adjacent(8).measurements)


# -- KTC scoring and segmentation ------------------------------------------------------------

def _disks(spec):
    """A truth-frame segmentation with disks [(x, y, r, class)] (metres)."""
    p = pixel_centres()
    out = np.zeros((256, 256), np.uint8)
    for x, y, r, c in spec:
        out[np.hypot(p[..., 0] - x, p[..., 1] - y) < r] = c
    return out


def test_ktc_score_hand_made_masks():
    truth = _disks([(-0.04, 0.03, 0.025, 1), (0.04, -0.03, 0.03, 2)])
    assert score(truth, truth) == pytest.approx(1.0, abs=1e-6)
    disjoint = _disks([(0.04, 0.05, 0.025, 1), (-0.05, -0.04, 0.03, 2)])
    assert score(disjoint, truth) < 0.3
    assert score(np.zeros((128, 128)), truth) == 0.0
    shifted = _disks([(-0.035, 0.03, 0.025, 1), (0.045, -0.03, 0.03, 2)])
    assert score(disjoint, truth) < score(shifted, truth) < 1.0


def test_pixel_orientation():
    p = pixel_centres()
    assert p[0, 0, 1] > 0 > p[-1, 0, 1]  # row 0 is the top (+y)
    assert p[0, 0, 0] < 0 < p[0, -1, 0]  # columns run along +x
    assert p[0, 1, 0] - p[0, 0, 0] == pytest.approx(0.23 / 256)
    assert disk_mask().sum() == pytest.approx(math.pi * 128 ** 2, rel=0.01)


def test_segmentation_of_synthetic_contrast():
    truth = _disks([(-0.04, 0.03, 0.03, 1), (0.045, -0.02, 0.03, 2)])
    p = pixel_centres()
    rng = np.random.default_rng(0)
    blur = lambda x, y: np.exp(-((p[..., 0] - x) ** 2 + (p[..., 1] - y) ** 2) / (2 * 0.022 ** 2))  # noqa: E731
    img = 1.5 * blur(0.045, -0.02) - 2.0 * blur(-0.04, 0.03) + 0.02 * rng.standard_normal((256, 256)) + 0.05
    for seg in (segment(img - np.median(img)), segment_otsu(img)):
        assert set(np.unique(seg)) == {0, 1, 2}
        assert score(seg, truth) > 0.8
    # one-sided contrast: no invented resistive class
    one = segment(blur(0.0, 0.0) + 0.01 * rng.standard_normal((256, 256)))
    assert 1 not in np.unique(one) and 2 in np.unique(one)


def test_segment_image_dispatches_to_the_named_rule():
    rng = np.random.default_rng(3)
    p = pixel_centres()
    img = np.exp(-((p[..., 0] - 0.03) ** 2 + p[..., 1] ** 2) / (2 * 0.02 ** 2)) + 0.02 * rng.standard_normal((256, 256))
    np.testing.assert_array_equal(segment_image(img, "otsu"), segment_otsu(img))
    np.testing.assert_array_equal(segment_image(img + 0.3, "sided", level=0.4),
                                  segment(img + 0.3 - np.median((img + 0.3)[disk_mask()]), level=0.4))
    assert 1 not in np.unique(segment_image(img, "sided"))     # one-sided change: no invented resistive class
    with pytest.raises(ValueError, match="unknown segmentation 'kmeans'"):
        segment_image(img, "kmeans")

def test_otsu_segmentation_of_a_two_level_image():
    """A piecewise-constant image with two grey levels cannot be split in three classes: the majority is
    water and the minority resistive (below) or conductive (above), instead of an error."""
    inside = (pixel_centres()[..., 0] ** 2 + pixel_centres()[..., 1] ** 2) < 0.03 ** 2
    for value, cls in ((-2.0, 1), (3.0, 2)):
        seg = segment_otsu(np.where(inside, value, 0.0))
        np.testing.assert_array_equal(seg[disk_mask()], np.where(inside, cls, 0)[disk_mask()])


def test_fit_rotation():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 2))
    theta = 1.1
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    b = (a * [1, -1]) @ rot.T
    t, rms = fit_rotation(a, b, reflect=True)
    assert t == pytest.approx(theta) and rms < 1e-12
    assert fit_rotation(a, b, reflect=False)[1] > 0.1


# -- real data (skipped without the shared data folder) --------------------------------------

def _need(*parts):
    path = data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set JAXEIT_DATA to the shared data folder)")
    return path


def test_real_data_smoke(monkeypatch):
    from jaxeit.io import load_ktc2023, load_ktc_truth
    from jaxeit.realdata import ktc_prior
    from jaxeit.realdata import calibrate_dataset, ktc_mesh
    from jaxeit.realdata.kit4 import photo_frame, read_photo
    from jaxeit.realdata.ktc import PIPELINE_OPTIONS, reconstruct_ktc

    ktc = _need("ktc2023", "training")
    ds = load_ktc2023(ktc / "data1.mat", ktc / "ref.mat", level=1)
    mesh = ktc_mesh(h=0.02)
    cal = calibrate_dataset(ds, mesh)
    assert 5e-4 < cal.sigma < 1e-3 and cal.residual < 0.12  # 2D sheet conductance (S), ~7.8 % misfit
    # the organisers' linearised reference approach (smoothness prior + Otsu) scores ≈ 0.67 here
    out = reconstruct_ktc(ds, mesh, "baseline", truth=load_ktc_truth(ktc / "true1.mat"), calibration=cal)
    assert out.segmentation.shape == (256, 256) and out.score > 0.55
    # a method segments by the pipeline's rule for it (PIPELINE_OPTIONS) unless the call names another
    rule = PIPELINE_OPTIONS["gn-gaussian"]
    monkeypatch.setattr(ktc_prior, "PRIOR_SAMPLES", 200)     # its prior, drawn for this coarser mesh: fewer targets
    out = reconstruct_ktc(ds, mesh, "gn-gaussian", calibration=cal, max_iter=2)
    np.testing.assert_array_equal(out.segmentation,
                                  segment_image(out.image, rule["segmentation"], level=rule["segment_level"]))
    otsu = reconstruct_ktc(ds, mesh, "gn-gaussian", calibration=cal, max_iter=2, segmentation="otsu")
    np.testing.assert_array_equal(otsu.segmentation, segment_otsu(otsu.image))
    with pytest.raises(ValueError, match="its own decision rule"):
        reconstruct_ktc(ds, mesh, "unet", segmentation="otsu")
    frame = photo_frame(read_photo(_need("kit4", "fantom_1_0.jpg")))
    assert math.degrees(frame.electrode1_angle) == pytest.approx(90, abs=3)
    assert 850 < frame.radius_px < 950
