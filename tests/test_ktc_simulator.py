"""The KTC2023 simulator: targets in the truth frame, reproducible resumable shards, sensible voltages."""

import dataclasses
import hashlib

import numpy as np
import pytest

from jaxeit.realdata.ktc import disk_mask
from jaxeit.io import load_ktc_reference
from jaxeit.realdata.ktc_simulator import (SHAPES, THIN_SHAPE_WEIGHTS, KTCSimConfig, load_ktc_simulation,
                                           random_truth, simulate_ktc, simulated_dataset)

from .conftest import data_dir


@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_random_truth_draws_each_shape_inside_the_tank(shape):
    weights = tuple(1.0 if k == shape else 0.0 for k in range(len(SHAPES)))
    config = KTCSimConfig(shape_weights=weights, max_objects=3)
    for i in range(5):
        truth, objects = random_truth(np.random.default_rng([1, i]), config)
        assert truth.shape == (256, 256) and truth.dtype == np.uint8
        assert set(np.unique(truth)) <= {0, 1, 2} and len(objects) >= 1
        assert not truth[~disk_mask()].any()                      # nothing outside the tank
        assert 30 < np.count_nonzero(truth) < 0.5 * truth.size


def test_config_checks():
    with pytest.raises(ValueError, match="shape_weights"):
        KTCSimConfig(shape_weights=(1.0,))
    with pytest.raises(ValueError, match="n_samples"):
        KTCSimConfig(n_samples=0)
    with pytest.raises(ValueError, match="bar_width"):
        KTCSimConfig(bar_width=(0.3, 0.1))
    with pytest.raises(ValueError, match="z_electrode_spread"):
        KTCSimConfig(z_electrode_spread=-1.0)
    # the fingerprint names the distribution: not the sample count or the shard and batch sizes
    assert KTCSimConfig().fingerprint() == KTCSimConfig(n_samples=5, shard_size=5, batch_size=5).fingerprint()
    assert len({KTCSimConfig().fingerprint(), KTCSimConfig(seed=1).fingerprint(),
                KTCSimConfig(size_range=(14.0, 42.0)).fingerprint(),
                KTCSimConfig(shape_weights=THIN_SHAPE_WEIGHTS).fingerprint(),
                KTCSimConfig(electrode_stretches=(0.1,) * 32).fingerprint(),
                KTCSimConfig(drift=0.1).fingerprint(),
                KTCSimConfig(drift=0.1, drift_fraction=0.5).fingerprint()}) == 7
    with pytest.raises(ValueError, match="electrode_stretches"):
        KTCSimConfig(electrode_stretches=(0.1,) * 16)
    with pytest.raises(ValueError, match="drift must be in"):
        KTCSimConfig(drift=-0.1)
    with pytest.raises(ValueError, match="drift_fraction must be in"):
        KTCSimConfig(drift=0.1, drift_fraction=1.5)


def test_drift_fraction_draws_drifting_and_still_tanks():
    """``drift_fraction`` < 1: that share of the tanks drifts, the others keep the empty tank's water
    (the same truths and objects in both)."""
    from jaxeit.realdata.ktc_simulator import _sample_parameters

    def water_factors(config):
        factors = []
        for index in range(40):
            truth, image, sigma_bg, _, _ = _sample_parameters(config, index, 1e-3, 1e-4, 32)
            factors.append(np.median(image[truth == 0]) / sigma_bg)
        return np.array(factors)

    still = water_factors(KTCSimConfig(drift=0.1, drift_fraction=0.0))
    mixed = water_factors(KTCSimConfig(drift=0.1, drift_fraction=0.5))
    always = water_factors(KTCSimConfig(drift=0.1))
    np.testing.assert_allclose(still, 1.0)
    assert 8 <= np.sum(np.abs(mixed - 1) > 1e-12) <= 32          # about half of 40 drift
    assert np.all(np.abs(np.log(mixed)) <= 0.1 + 1e-12) and np.all(np.abs(np.log(always)) <= 0.1 + 1e-12)
    assert np.sum(np.abs(always - 1) > 1e-12) == 40


def test_shapes_added_with_weight_zero_change_no_sample():
    # the recorded simulations (held-out and validation tanks, training sets) are named by these fingerprints,
    # made before the thin ellipses existed: the defaults must still draw the same tanks under the same name
    assert KTCSimConfig().fingerprint() == "1b1f9c26"
    assert KTCSimConfig(seed=20_002).fingerprint() == "93dde270"
    digest = hashlib.sha256()
    for i in range(10):
        digest.update(random_truth(np.random.default_rng([0, i]), KTCSimConfig())[0].tobytes())
    assert digest.hexdigest()[:16] == "6c02da6236bf3acf"     # the first ten tanks of seed 0, as first simulated


def test_thin_ellipses_are_thin():
    weights = tuple(1.0 if s == "ellipse-cross" else 0.0 for s in SHAPES)
    truth, objects = random_truth(np.random.default_rng([4, 0]), KTCSimConfig(shape_weights=weights, max_objects=1))
    mask = objects[0][1]
    ys, xs = np.nonzero(mask)
    extent = max(np.ptp(xs), np.ptp(ys))
    assert mask.sum() < 0.5 * extent ** 2          # a cross of thin arms fills little of its bounding box


def test_simulate_is_reproducible_and_resumes(tmp_path):
    ref = data_dir() / "ktc2023" / "training" / "ref.mat"
    if not ref.exists():
        pytest.skip(f"real data not found at {ref.parent} (set JAXEIT_DATA)")
    config = KTCSimConfig(n_samples=6, shard_size=4, batch_size=4, h=0.012)
    root = simulate_ktc(config, tmp_path / "a", reference=ref, log=None)
    data = load_ktc_simulation(root)
    assert data["truth"].shape == (6, 256, 256) and data["voltages"].shape == (6, 2356)
    np.testing.assert_array_equal(data["index"], np.arange(6))
    change = np.linalg.norm(data["voltages"] - data["reference"], axis=1) / np.linalg.norm(data["reference"], axis=1)
    assert np.all(change > 1e-3) and np.all(change < 0.5)      # inclusions show, the tank dominates
    (root / "samples" / "shard_00001.npz").unlink()             # a lost shard is made again, identically
    again = load_ktc_simulation(simulate_ktc(config, root, reference=ref, log=None))
    for name, value in data.items():
        np.testing.assert_array_equal(again[name], value)
    other = simulate_ktc(config, tmp_path / "b", reference=ref, log=None)
    np.testing.assert_array_equal(load_ktc_simulation(other)["voltages"], data["voltages"])
    sample = simulated_dataset(data, 4, load_ktc_reference(ref, level=3))   # as a loaded recording of level 3
    np.testing.assert_array_equal(sample.voltages, data["voltages"][4])
    np.testing.assert_array_equal(sample.reference, data["reference"][4])
    assert sample.name == "sim4_level3" and sample.n_usable == 1404
    z = data["contact_impedance"]                                # (n, L): every electrode its own
    assert z.shape == (6, 32) and np.all(z > 0) and np.all(np.std(np.log(z), axis=1) > 0.05)
    with pytest.raises(ValueError, match="another config"):
        simulate_ktc(KTCSimConfig(n_samples=6, shard_size=4, batch_size=4, h=0.012, seed=1), root, reference=ref)
    # electrodes at other widths: the same targets, other voltages
    wide = dataclasses.replace(config, n_samples=2, electrode_stretches=(0.3, -0.3) * 16)
    moved = load_ktc_simulation(simulate_ktc(wide, tmp_path / "c", reference=ref, log=None))
    np.testing.assert_array_equal(moved["truth"], data["truth"][:2])
    assert np.all(np.abs(moved["reference"] - data["reference"][:2]).max(axis=1) > 1e-3)
    # a drift of the water between the two recordings: the same targets, a change that no longer vanishes
    # in the water (about −drift × the empty tank's voltages)
    drifted = load_ktc_simulation(simulate_ktc(dataclasses.replace(config, n_samples=2, drift=0.3),
                                               tmp_path / "d", reference=ref, log=None))
    np.testing.assert_array_equal(drifted["truth"], data["truth"][:2])
    along_empty = lambda d: np.einsum("nm,nm->n", d["voltages"] - d["reference"], d["reference"]) / np.einsum(
        "nm,nm->n", d["reference"], d["reference"])                                       # noqa: E731
    assert np.all(np.abs(along_empty(data)[:2]) < 0.05) and np.all(np.abs(along_empty(drifted)) > 0.1)
