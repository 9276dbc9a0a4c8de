"""Protocols: pyEIT ordering, counts, conservation, from data-set arrays."""

import numpy as np
import pytest

from jaxeit import protocol

from .conftest import data_dir


def test_adjacent_counts_and_sums():
    p = protocol.adjacent(16)
    assert (p.n_patterns, p.n_measurements) == (16, 208)
    np.testing.assert_allclose(p.currents.sum(axis=1), 0)
    np.testing.assert_allclose(p.measurements.sum(axis=1), 0)
    assert protocol.adjacent(16, exclude_driven=False).n_measurements == 256


@pytest.mark.parametrize("skip", [0, 1, 3])
def test_matches_pyeit(skip):
    pp = pytest.importorskip("pyeit.eit.protocol")
    ref = pp.create(16, dist_exc=skip + 1, step_meas=1, parser_meas="std")
    p = protocol.adjacent(16, skip=skip)
    for i, (a, b) in enumerate(ref.ex_mat):
        assert p.currents[i, a] == 1 and p.currents[i, b] == -1
    pairs = np.concatenate(list(ref.meas_mat))
    expected = np.zeros((len(pairs), 16))
    expected[np.arange(len(pairs)), pairs[:, 0]] += 1
    expected[np.arange(len(pairs)), pairs[:, 1]] -= 1
    np.testing.assert_array_equal(p.measurements, expected)


def test_opposite_and_trigonometric():
    p = protocol.opposite(16)
    assert p.currents[0, 0] == 1 and p.currents[0, 8] == -1
    t = protocol.trigonometric(16)
    assert t.n_patterns == 15
    np.testing.assert_allclose(t.currents.sum(axis=1), 0, atol=1e-12)
    with pytest.raises(ValueError, match="even"):
        protocol.opposite(15)


def test_bad_protocols():
    with pytest.raises(ValueError, match="sum to zero"):
        protocol.Protocol(np.ones((2, 4)), np.ones((1, 4)), [0])
    with pytest.raises(ValueError, match="square"):
        protocol.from_arrays(np.eye(4)[:, :2] - np.eye(4)[:, 1:3], np.eye(4))


def test_subset():
    p = protocol.adjacent(16)
    keep = np.arange(208) % 2 == 0
    s = p.subset(keep)
    assert s.n_measurements == 104
    np.testing.assert_array_equal(s.pattern, p.pattern[keep])


def test_from_kit4_arrays():
    path = data_dir() / "kit4" / "datamat_1_0.mat"
    if not path.exists():
        pytest.skip(f"KIT4 data not found at {path} (set JAXEIT_DATA)")
    from scipy.io import loadmat

    d = loadmat(path)
    p = protocol.from_arrays(d["CurrentPattern"], d["MeasPattern"], measurements_per_column=True)
    # column k of MeasPattern reads U_k − U_{k+1} (cyclic)
    np.testing.assert_array_equal(p.measurements[0][:2], [1.0, -1.0])
    assert (p.n_electrodes, p.n_patterns, p.n_measurements) == (16, 79, 79 * 16)
    assert np.allclose(p.currents.sum(axis=1), 0)
