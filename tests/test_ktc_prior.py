"""The KTC2023 prior learned from the simulator's targets: its moment, its matrix, the shipped file."""

import numpy as np
import pytest

from jaxeit.realdata import ktc_mesh, ktc_prior
from jaxeit.realdata.ktc import GN_PRIORS, _named_gn_prior, truth_to_mesh
from jaxeit.realdata.ktc_simulator import KTCSimConfig, sample_contrast


@pytest.fixture(scope="module")
def mesh():
    return ktc_mesh(h=0.03)


def test_log_contrasts_are_the_simulators_targets(mesh):
    s = ktc_prior.target_log_contrasts(mesh, 6, seed=4)
    assert s.shape == (6, mesh.n_elements) and s.dtype == np.float64
    np.testing.assert_array_equal(s, ktc_prior.target_log_contrasts(mesh, 6, seed=4))   # the seed decides
    assert not np.allclose(s, ktc_prior.target_log_contrasts(mesh, 6, seed=5))
    for k in range(6):   # the same target as the simulator draws: resistive below 0, conductive above, water 0
        truth, contrast = sample_contrast(KTCSimConfig(seed=4), k)
        assert np.all(contrast[truth == 1] < 0.1 + 1e-12) and np.all(contrast[truth == 2] > 10 - 1e-9)
        conductive, resistive = truth_to_mesh(truth, mesh, samples=4)
        assert np.all(s[k][conductive > 0.999] > np.log(10) - 1e-9)
        assert np.all(s[k][resistive > 0.999] < -np.log(10) + 1e-9)
        np.testing.assert_allclose(s[k][(conductive + resistive) == 0], 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="n_samples"):
        ktc_prior.target_log_contrasts(mesh, 0, seed=1)


def test_moment_and_prior_matrix(mesh):
    m = ktc_prior.simulated_moment(mesh, 40, seed=2, log=None)
    assert m.shape == (mesh.n_elements,) * 2
    np.testing.assert_allclose(m, m.T)
    assert np.mean(np.diag(m)) == pytest.approx(1.0) and np.linalg.eigvalsh(m).min() > -1e-9
    # elements at the wall vary less than the centre: the targets keep off the wall
    radius = np.hypot(*mesh.centroids().T)
    assert np.mean(np.diag(m)[radius > 0.105]) < 0.5 * np.mean(np.diag(m)[radius < 0.06])
    L = ktc_prior.simulated_prior(mesh, 0.1 ** 2, 1e-2, n_samples=40, seed=2, log=None)
    gamma = 0.1 ** 2 * (m + 1e-2 * np.eye(mesh.n_elements))
    np.testing.assert_allclose(L.T @ L @ gamma, np.eye(mesh.n_elements), atol=1e-8)
    with pytest.raises(ValueError, match="variance > 0"):
        ktc_prior.simulated_prior(mesh, -1.0, n_samples=40, seed=2, log=None)


def test_written_moment_is_read_back_only_for_its_own_mesh(mesh, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXEIT_CACHE_DIR", str(tmp_path / "cache" / "xla"))
    path = ktc_prior.write_moment(mesh, tmp_path / "moment.npz", 30, seed=3)
    monkeypatch.setattr(ktc_prior, "SHIPPED_MOMENT", path)
    ktc_prior._MOMENTS.clear()
    said = []
    read = ktc_prior.simulated_moment(mesh, 30, seed=3, log=said.append)
    assert said == []                                             # read, not drawn again
    s = ktc_prior.target_log_contrasts(mesh, 30, seed=3)
    m = s.T @ s / 30
    np.testing.assert_allclose(read, m / np.mean(np.diag(m)), rtol=1e-5, atol=1e-6)   # float32 on disk
    other = ktc_mesh(h=0.035)
    drawn = ktc_prior.simulated_moment(other, 30, seed=3, log=said.append)   # another mesh: drawn, cached
    ktc_prior.simulated_moment(mesh, 31, seed=3, log=said.append)            # another count: drawn
    assert len(said) == 2 and all("no shipped or cached moment" in line for line in said)
    assert len(list(ktc_prior.moment_cache_dir().glob("*.npz"))) == 2
    ktc_prior._MOMENTS.clear()                                    # a new process: read from the cache
    np.testing.assert_allclose(ktc_prior.simulated_moment(other, 30, seed=3, log=said.append), drawn,
                               rtol=1e-5, atol=1e-6)
    assert len(said) == 2
    for f in ktc_prior.moment_cache_dir().glob("*.npz"):         # a damaged entry is drawn again
        f.write_bytes(b"not a moment")
    ktc_prior._MOMENTS.clear()
    ktc_prior.simulated_moment(other, 30, seed=3, log=said.append)
    assert len(said) == 3


def test_the_shipped_moment_is_the_pipelines():
    """The shipped file was made for the pipeline's mesh and today's simulator (else it would be redrawn
    on every first use: remake it with ``python -m jaxeit.realdata.ktc_prior``)."""
    with np.load(ktc_prior.SHIPPED_MOMENT) as f:
        digest = str(f["digest"])
        assert f["upper"].dtype == np.float32
    assert digest == ktc_prior._digest(ktc_mesh(h=0.014), ktc_prior.PRIOR_SAMPLES, ktc_prior.PRIOR_SEED,
                                       KTCSimConfig())


def test_named_prior_in_the_pipeline(mesh, monkeypatch):
    monkeypatch.setattr(ktc_prior, "PRIOR_SAMPLES", 20)                 # a tiny moment for the tiny mesh
    out = _named_gn_prior(mesh, {"prior": "simulated", "variance": 0.2 ** 2, "corrlength": 0.06}, explicit={})
    assert "corrlength" not in out and out["prior"].shape == (mesh.n_elements,) * 2   # the pipeline's dropped
    assert _named_gn_prior(mesh, {"prior": "smoothness", "corrlength": 0.06}, explicit={}) == {"corrlength": 0.06}
    with pytest.raises(ValueError, match="corrlength belongs to the smoothness prior"):
        _named_gn_prior(mesh, {"prior": "simulated", "corrlength": 0.06}, explicit={"corrlength": 0.06})
    with pytest.raises(ValueError, match=str(GN_PRIORS[0])):
        _named_gn_prior(mesh, {"prior": "laplace"}, explicit={"prior": "laplace"})
