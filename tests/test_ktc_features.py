"""Linearised KTC2023 features: shapes, frame and sign against simulated targets."""

import numpy as np
import pytest

from jaxeit.io import load_ktc_reference
from jaxeit.realdata.ktc_features import FEATURE_PRIORS, LinearisedInputs
from jaxeit.realdata.ktc_simulator import KTCSimConfig, load_ktc_simulation, simulate_ktc

from .conftest import data_dir


@pytest.fixture(scope="module")
def reference():
    path = data_dir() / "ktc2023" / "training" / "ref.mat"
    if not path.exists():
        pytest.skip(f"real data not found at {path.parent} (set JAXEIT_DATA)")
    return load_ktc_reference(path)


def test_features_show_the_objects_where_the_truth_has_them(reference, tmp_path):
    config = KTCSimConfig(n_samples=4, shard_size=4, batch_size=4, h=0.012, max_objects=1, seed=3)
    data = load_ktc_simulation(simulate_ktc(config, tmp_path, reference=reference_path(), log=None))
    inputs = LinearisedInputs.build(reference, h=0.02, size=32, levels=(1, 5))
    assert inputs.levels == (1, 5)
    for level in (1, 5):
        x = inputs(data["voltages"], data["reference"], level)
        assert x.shape == (4, len(FEATURE_PRIORS), 32, 32) and x.dtype == np.float32
        c = (np.arange(32) + 0.5) / 16 - 1.0                     # pixel centres in tank radii
        outside = np.hypot(*np.meshgrid(c, c)) >= 1.0
        assert np.all(x[..., outside] == 0) and np.any(x[..., ~outside] != 0)
    x = inputs(data["voltages"], data["reference"], 1)
    for truth, feats in zip(data["truth"], x):
        label = truth.max()                                       # one object: 1 resistive, 2 conductive
        where = truth.reshape(32, 8, 32, 8).mean(axis=(1, 3)) > 0.5 * label   # mostly the object
        if where.sum() < 2:
            continue
        sign = 1.0 if label == 2 else -1.0
        for channel in feats[1:]:                                 # Laplace and NOSER: sharp enough to localise
            assert sign * channel[where].mean() > 0.3 * np.abs(channel).max()
    with pytest.raises(ValueError, match="level 3"):
        inputs(data["voltages"], data["reference"], 3)


def reference_path():
    return data_dir() / "ktc2023" / "training" / "ref.mat"
