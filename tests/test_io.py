"""Real-data loaders (KIT4, KTC2023) and EITDataset: counts, masks, physics sanity, error cases."""

import numpy as np
import pytest
from scipy.io import savemat

from jaxeit.io import EITDataset, load_kit4, load_ktc2023, load_ktc_mesh, load_ktc_truth
from jaxeit.io.ktc import KTC_ELECTRODE_WIDTH, ktc_level_mask
from jaxeit.protocol import adjacent

from .conftest import data_dir


def _need(*parts):
    path = data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set JAXEIT_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="module")
def kit4():
    return _need("kit4")


@pytest.fixture(scope="module")
def ktc():
    return _need("ktc2023")


# -- KIT4 ----------------------------------------------------------------------------

def test_kit4_adjacent_shapes(kit4):
    d = load_kit4(kit4 / "datamat_2_3.mat", kit4 / "datamat_1_0.mat")
    p = d.protocol
    assert (p.n_electrodes, p.n_patterns, p.n_measurements) == (16, 16, 256)
    assert d.voltages.shape == d.reference.shape == d.mask.shape == (256,)
    assert d.voltages.dtype == np.float64 and d.mask.all()
    assert (d.radius, d.n_electrodes, d.electrode_width, d.current_unit) == (0.14, 16, 0.025, "mA")
    np.testing.assert_allclose(d.electrode_angles, 2 * np.pi * np.arange(16) / 16)
    # adjacent drive k -> k+1 at sqrt(2) mA, pattern 15 closes the ring (16 -> 1)
    for k in range(16):
        assert p.currents[k, k] == pytest.approx(np.sqrt(2)) and p.currents[k, (k + 1) % 16] == pytest.approx(-np.sqrt(2))
    assert d.difference().shape == (256,) and np.abs(d.difference()).max() > 1e-3
    assert not d.voltages.flags.writeable


def test_kit4_pattern_selection(kit4):
    full = load_kit4(kit4 / "datamat_1_0.mat", patterns="all")
    assert (full.protocol.n_patterns, full.n_measurements) == (79, 1264)
    sub = load_kit4(kit4 / "datamat_1_0.mat", patterns=[64, 16])
    assert sub.n_measurements == 32
    np.testing.assert_array_equal(sub.protocol.currents, full.protocol.currents[[64, 16]])
    np.testing.assert_array_equal(sub.voltages, np.concatenate([full.voltages[64 * 16:65 * 16],
                                                                full.voltages[16 * 16:17 * 16]]))
    with pytest.raises(ValueError, match="patterns"):
        load_kit4(kit4 / "datamat_1_0.mat", patterns="skip")
    with pytest.raises(ValueError, match=r"\[0, 79\)"):
        load_kit4(kit4 / "datamat_1_0.mat", patterns=[79])


def test_kit4_empty_tank_sanity(kit4):
    d = load_kit4(kit4 / "datamat_1_0.mat")
    v = d.voltages.reshape(16, 16)  # (pattern, measurement)
    # 16 cyclic adjacent differences of one pattern sum to zero
    np.testing.assert_allclose(v.sum(axis=1), 0, atol=1e-9 * np.abs(v).max())
    # measurement k reads U_k - U_{k+1}: for drive k -> k+1 it is the largest and positive,
    # with equal neighbours by symmetry (the row reading U_k - U_{k-1} fails all three)
    for k in range(16):
        assert np.argmax(v[k]) == k and v[k, k] > 1.0
        assert v[k, (k - 1) % 16] == pytest.approx(v[k, (k + 1) % 16], rel=0.1)
    np.testing.assert_array_equal(d.protocol.measurements[0], np.eye(16)[0] - np.eye(16)[1])


def test_masked_and_difference(kit4):
    d = load_kit4(kit4 / "datamat_4_1.mat", kit4 / "datamat_1_0.mat")
    mask = np.arange(256) % 3 != 0
    dm = EITDataset(d.protocol, d.voltages, d.reference, mask, d.radius, d.n_electrodes,
                    d.electrode_width, d.electrode_angles, name="x").masked()
    assert dm.n_measurements == mask.sum() and dm.mask.all()
    np.testing.assert_array_equal(dm.difference(), (d.voltages - d.reference)[mask])
    np.testing.assert_array_equal(dm.protocol.measurements, d.protocol.measurements[mask])
    with pytest.raises(ValueError, match="no reference"):
        load_kit4(kit4 / "datamat_4_1.mat").difference()


# -- KTC2023 -------------------------------------------------------------------------

EXPECTED_USABLE = {1: 2356, 2: 1624, 3: 1404, 4: 1200, 5: 1012, 6: 630, 7: 513}


def test_ktc_shapes_level1(ktc):
    tr = ktc / "training"
    d = load_ktc2023(tr / "data1.mat", tr / "ref.mat")
    p = d.protocol
    assert (p.n_electrodes, p.n_patterns, p.n_measurements) == (32, 76, 2356)
    assert d.voltages.shape == d.reference.shape == (2356,) and d.mask.all()
    assert (d.radius, d.n_electrodes, d.current_unit) == (0.115, 32, "mA")
    assert d.electrode_width == pytest.approx(0.01129, abs=1e-5) == KTC_ELECTRODE_WIDTH
    np.testing.assert_allclose(d.electrode_angles, 2 * np.pi * np.arange(32) / 32)
    # injection 0: +I at electrode 0, -I at 2; Mpat column k reads U_k - U_{k+1}
    v = d.reference.reshape(76, 31)
    assert p.currents[0, 0] > 0 and p.currents[0, 2] < 0
    assert v[0, 0] > 0 and v[0, 1] > 0 and set(np.argsort(-np.abs(v[0]))[:2]) == {0, 1}
    np.testing.assert_array_equal(p.measurements[5], np.eye(32)[5] - np.eye(32)[6])


@pytest.mark.parametrize("level", range(1, 8))
def test_ktc_level_masks(ktc, level):
    tr = ktc / "training"
    d = load_ktc2023(tr / "data2.mat", tr / "ref.mat", level=level)
    assert d.n_usable == EXPECTED_USABLE[level] and d.name == f"data2_level{level}"
    removed = np.arange(2 * (level - 1))
    # the README rule, measurement by measurement
    drives_removed = (d.protocol.currents[:, removed] != 0).any(axis=1)
    meas_index = np.tile(np.arange(31), 76)
    expected = ~drives_removed[d.protocol.pattern] & ~np.isin(meas_index, removed)
    np.testing.assert_array_equal(d.mask, expected)
    # physically: usable data neither drive nor read a removed electrode
    m = d.masked()
    assert not m.protocol.measurements[:, removed].any()
    assert not m.protocol.currents[np.unique(m.protocol.pattern)][:, removed].any()
    assert m.difference().shape == (EXPECTED_USABLE[level],)


def test_ktc_level7_drops_rows(ktc):
    tr = ktc / "training"
    mask = load_ktc2023(tr / "data1.mat", tr / "ref.mat", level=7).mask.reshape(76, 31)
    assert not mask[:, :12].any()  # measurements 1..12 (1-based) touch electrodes 1..12
    kept = np.flatnonzero(mask.any(axis=1))
    assert len(kept) == 27 and mask[kept, 12:].all()
    assert not mask[0].any() and not mask[16].any()  # 1 -> 3 and against electrode 1


def test_ktc_level_mask_small_and_bad_level():
    inj = np.zeros((4, 2))
    inj[[0, 2], 0] = 1, -1
    inj[[2, 3], 1] = 1, -1
    np.testing.assert_array_equal(ktc_level_mask(inj, 3, 1), np.ones(6, bool))
    np.testing.assert_array_equal(ktc_level_mask(inj, 3, 2), [0, 0, 0, 0, 0, 1])
    for bad in (0, 8, 1.0, True):
        with pytest.raises(ValueError, match="level"):
            ktc_level_mask(inj, 3, bad)


def test_ktc_mesh(ktc):
    for name, n_nodes in [("Mesh_sparse.mat", 1602), ("Mesh_dense.mat", 3766)]:
        m = load_ktc_mesh(ktc / "meshes" / name)
        assert m.n_electrodes == 32 and m.n_nodes == n_nodes
        assert (m.areas() > 0).all()
        assert m.areas().sum() == pytest.approx(np.pi * 0.115**2, rel=2e-3)
        np.testing.assert_allclose(m.electrode_lengths(), KTC_ELECTRODE_WIDTH, rtol=1e-3)
        r = np.linalg.norm(m.electrode_centres(), axis=1)
        np.testing.assert_allclose(r, 0.115, rtol=2e-3)


def test_ktc_truth(ktc):
    classes = set()
    for k in range(1, 5):
        t = load_ktc_truth(ktc / "training" / f"true{k}.mat")
        assert t.shape == (256, 256) and t.dtype == np.uint8
        classes |= set(np.unique(t).tolist())
    assert classes == {0, 1, 2}


# -- error cases on synthetic files --------------------------------------------------

def _kit4_arrays():
    p = adjacent(16, exclude_driven=False)
    cur = np.tile(p.currents.T, (1, 5))[:, :79]
    meas = np.eye(16) - np.roll(np.eye(16), 1, axis=0)  # column k = e_k - e_{k+1}
    return {"CurrentPattern": cur, "MeasPattern": meas, "Uel": np.ones((16, 79))}


def test_kit4_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mat"):
        load_kit4(tmp_path / "nope.mat")
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"this is not a MATLAB file" * 10)
    with pytest.raises(ValueError, match="junk.mat"):
        load_kit4(junk)
    arrays = _kit4_arrays()
    good = tmp_path / "good.mat"
    savemat(good, arrays)
    assert load_kit4(good, good).n_measurements == 256
    missing = tmp_path / "missing.mat"
    savemat(missing, {k: v for k, v in arrays.items() if k != "Uel"})
    with pytest.raises(ValueError, match=r"missing.*Uel"):
        load_kit4(missing)
    wrong = tmp_path / "wrong.mat"
    savemat(wrong, {**arrays, "Uel": np.ones((16, 78))})
    with pytest.raises(ValueError, match=r"'Uel' has shape \(16, 78\)"):
        load_kit4(wrong)
    nan = tmp_path / "nan.mat"
    uel = np.ones((16, 79))
    uel[3, 20] = np.nan
    savemat(nan, {**arrays, "Uel": uel})
    assert load_kit4(nan).n_measurements == 256  # column 20 is not an adjacent pattern
    with pytest.raises(ValueError, match="1 usable voltages are NaN"):
        load_kit4(nan, patterns="all")
    with pytest.raises(ValueError, match="1 usable reference"):
        load_kit4(good, nan, patterns="all")
    other = tmp_path / "other.mat"
    savemat(other, {**arrays, "CurrentPattern": -arrays["CurrentPattern"]})
    with pytest.raises(ValueError, match="other CurrentPattern"):
        load_kit4(good, other)


def test_ktc_errors(tmp_path):
    inj = np.zeros((32, 3))
    inj[[0, 2], 0] = 1, -1
    inj[[2, 4], 1] = 1, -1
    inj[[4, 6], 2] = 1, -1
    mpat = np.eye(32)[:, :31] - np.eye(32)[:, 1:]
    data, ref = tmp_path / "data1.mat", tmp_path / "ref.mat"
    savemat(data, {"Inj": inj, "Mpat": mpat, "Uel": np.ones((93, 1))})
    savemat(ref, {"Injref": inj, "Mpat": mpat, "Uelref": np.ones((93, 1))})
    d = load_ktc2023(data, ref, level=2)
    assert d.n_measurements == 93 and d.n_usable == 2 * 29  # injection 0 dropped, rows 0, 1 dropped
    bad = tmp_path / "bad.mat"
    savemat(bad, {"Inj": inj, "Mpat": mpat, "Uel": np.ones((92, 1))})
    with pytest.raises(ValueError, match=r"Uel has shape \(92, 1\)"):
        load_ktc2023(bad, ref)
    savemat(bad, {"Inj": inj, "Uel": np.ones((93, 1))})
    with pytest.raises(ValueError, match="Mpat"):
        load_ktc2023(bad, ref)
    uel = np.ones((93, 1))
    uel[0] = np.nan  # measurement 0 of injection 0: usable at level 1, dropped at level 2
    savemat(bad, {"Inj": inj, "Mpat": mpat, "Uel": uel})
    with pytest.raises(ValueError, match="bad.mat: 1 of the 93 voltages of Uel used at level 1 are NaN"):
        load_ktc2023(bad, ref, level=1)
    assert load_ktc2023(bad, ref, level=2).n_usable == 58
    with pytest.raises(ValueError, match="level"):
        load_ktc2023(data, ref, level=8)
    with pytest.raises(FileNotFoundError):
        load_ktc2023(data, tmp_path / "no_ref.mat")
    savemat(bad, {"truth": np.full((256, 256), 3.0)})
    with pytest.raises(ValueError, match="outside the classes"):
        load_ktc_truth(bad)
    savemat(bad, {"truth": np.zeros((128, 128))})
    with pytest.raises(ValueError, match="shape"):
        load_ktc_truth(bad)


def _square_mesh(one_based: bool, clockwise: bool):
    g = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    h = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    if clockwise:
        h = h[:, [0, 2, 1]]
    elfaces = np.empty((1, 2), dtype=object)
    elfaces[0, 0] = np.array([[0, 1]])
    elfaces[0, 1] = np.array([[2, 3]])
    if one_based:
        h = h + 1
        elfaces[0, 0], elfaces[0, 1] = elfaces[0, 0] + 1, elfaces[0, 1] + 1
    return {"g": g, "H": h.astype(np.uint16), "elfaces": elfaces}


@pytest.mark.parametrize("one_based", [False, True])
def test_ktc_mesh_synthetic(tmp_path, one_based):
    path = tmp_path / "mesh.mat"
    savemat(path, _square_mesh(one_based, clockwise=True))
    m = load_ktc_mesh(path)
    assert m.n_electrodes == 2 and (m.areas() > 0).all()
    np.testing.assert_array_equal(np.sort(m.electrode_edges, axis=1), [[0, 1], [2, 3]])
    arrays = _square_mesh(False, False)
    arrays["elfaces"][0, 1] = np.array([[0, 4]])  # an interior edge
    savemat(path, arrays)
    with pytest.raises(ValueError, match="not boundary edges"):
        load_ktc_mesh(path)
    savemat(path, {**_square_mesh(False, False), "elfaces": np.zeros((1, 2))})
    with pytest.raises(ValueError, match="cell array"):
        load_ktc_mesh(path)


def test_dataset_validation():
    p = adjacent(16)
    angles = 2 * np.pi * np.arange(16) / 16
    args = dict(protocol=p, reference=None, radius=1.0, n_electrodes=16, electrode_width=0.1,
                electrode_angles=angles)
    d = EITDataset(voltages=np.zeros(208), mask=None, **args)
    assert d.mask.all() and d.mask.dtype == bool
    with pytest.raises(ValueError, match=r"shape \(208,\)"):
        EITDataset(voltages=np.zeros(207), mask=None, **args)
    v = np.zeros(208)
    v[[3, 7]] = np.nan, np.inf
    with pytest.raises(ValueError, match="2 usable voltages are NaN or inf.*mask"):
        EITDataset(voltages=v, mask=None, **args)
    ok = EITDataset(voltages=v, mask=np.isfinite(v), **args)  # unusable NaN are allowed
    assert ok.n_usable == 206 and np.isfinite(ok.masked().voltages).all()
    with pytest.raises(ValueError, match="n_electrodes"):
        EITDataset(voltages=np.zeros(208), mask=None, **{**args, "n_electrodes": 8})
    with pytest.raises(ValueError, match="electrode_width"):
        EITDataset(voltages=np.zeros(208), mask=None, **{**args, "electrode_width": 0.5})
    with pytest.raises(ValueError, match="boolean"):
        EITDataset(voltages=np.zeros(208), mask=np.ones(208), **args)
