"""Tests of jaxeit.data: physics of the samples, determinism, shards, resume, CLI."""

import importlib
import json

import jax.numpy as jnp
import numpy as np
import pytest

import jaxeit
from jaxeit.data import SimulationConfig, Simulator, load_split, read_metadata, simulate, verify_shard
from jaxeit.data import store
from jaxeit.data.cli import main as cli_main
from jaxeit.recon.linear import LinearGN
from jaxeit.noise import measured_snr_db

simulate_mod = importlib.import_module("jaxeit.data.simulate")   # the module (the package exports the function)

# one small configuration for the whole module: the chunk function compiles once (cached per physics)
TINY = dict(mesh="pyeit", h0=0.3, image_size=16, image_supersample=2, mesh_samples=16, chunk_size=32,
            shard_size=32, n_train=64, n_val=32, n_test=20, seed=7)


@pytest.fixture(scope="module")
def config():
    pytest.importorskip("pyeit")
    return SimulationConfig(**TINY)


@pytest.fixture(scope="module")
def sim(config):
    return Simulator.build(config)


@pytest.fixture(scope="module")
def batch(sim):
    return sim(np.arange(128))


def test_voltages_are_forward_model_plus_noise_at_the_snr(sim, config, batch):
    v_fwd = np.asarray(sim.model.voltages(jnp.asarray(batch["sigma"])))
    np.testing.assert_allclose(batch["v_clean"], v_fwd, rtol=1e-12, atol=1e-15)
    noise = batch["voltages"] - batch["v_clean"]
    assert np.all(np.abs(noise) > 0)
    snr = np.asarray(measured_snr_db(batch["v_clean"], batch["voltages"]))
    assert snr.shape == (128,)
    assert abs(snr.mean() - config.snr_db) < 0.1
    # per sample the noise is white with std ||v||/sqrt(M) 10^(-SNR/20)
    expected = np.linalg.norm(batch["v_clean"], axis=1) / np.sqrt(208) * 10 ** (-config.snr_db / 20)
    ratio = noise.std(axis=1) / expected
    assert abs(ratio.mean() - 1) < 0.02


def test_sample_contents(sim, config, batch):
    e, n = sim.mesh.n_elements, config.image_size
    assert batch["sigma"].shape == (128, e) and batch["sigma"].dtype == np.float64
    assert batch["voltages"].shape == (128, 208)
    assert batch["image"].shape == (128, n, n) and batch["image"].dtype == np.float32
    assert batch["gn_image"].shape == (128, n, n)
    # fixed value assignment: circle k carries the k-th value of the paper's set
    np.testing.assert_array_equal(batch["values"], np.broadcast_to([0.5, 1.5], (128, 2)))
    assert np.all(batch["image"][:, ~sim.mask] == config.exterior_value)
    assert batch["sigma"].min() >= 0.5 - 1e-12 and batch["sigma"].max() <= 1.5 + 1e-12
    # the GN image is a step from the background in the right direction
    assert np.corrcoef((batch["gn_sigma"] - 1).ravel(), (batch["sigma"] - 1).ravel())[0, 1] > 0.3


def test_sample_depends_only_on_seed_and_index(sim, batch):
    again = sim(np.array([100, 3, 77]))
    for k in ("sigma", "voltages", "image", "gn_image"):
        np.testing.assert_allclose(again[k], batch[k][[100, 3, 77]], rtol=1e-12, atol=1e-12)


def test_linear_gn_solves_the_regularised_normal_equations(sim):
    gn = LinearGN.build(sim.model, param="linear", prior="noser", alpha=0.5)
    np.testing.assert_allclose(np.asarray(gn(gn.v_bg)), 1.0, atol=1e-12)   # no data change, no update
    jac = np.asarray(sim.model.jacobian(jnp.ones(sim.mesh.n_elements)))
    dv = np.random.default_rng(0).standard_normal(208) * 1e-3
    delta = np.asarray(gn(gn.v_bg + dv)) - 1.0
    jtj = jac.T @ jac
    lhs = (jtj + gn.lam * np.diag(np.diag(jtj))) @ delta
    np.testing.assert_allclose(lhs, jac.T @ dv, rtol=1e-8, atol=1e-12 * np.abs(jac.T @ dv).max())


def test_lm_image_fits_the_data_better_than_the_one_step_and_renders_like_it(sim, config, batch):
    """The iterative LM baseline (the DGM paper's GN) lowers the data misfit below the one-step GN's, points
    towards the truth, and is rendered on the same grid with the same exterior value."""
    from jaxeit.data import Operators

    ops = Operators.build(config, sim.mesh)
    v = batch["voltages"][:3]
    lm = ops.lm_image(v, alpha=1.0, max_iter=8)
    assert lm.shape == (3, config.image_size, config.image_size) and lm.dtype == np.float32
    np.testing.assert_array_equal(lm[:, ~sim.mask], config.exterior_value)
    sigma_lm = ops.gn.iterative(v, alpha=1.0, max_iter=8, lm=True)
    np.testing.assert_allclose(lm, ops.render_fn(jnp.asarray(sigma_lm)), rtol=1e-6)
    misfit = lambda s: np.linalg.norm(np.asarray(sim.model.voltages(jnp.asarray(s))) - v, axis=-1)
    one_step = np.stack([np.asarray(ops.gn(vi)) for vi in v])
    assert np.all(misfit(sigma_lm) < misfit(one_step))
    assert np.corrcoef((sigma_lm - 1).ravel(), (batch["sigma"][:3] - 1).ravel())[0, 1] > 0.3
    assert lm.shape[1:] == ops.lm_image(v[0], alpha=1.0, max_iter=8).shape   # one sample: (H, W)


def _load_all(root, config):
    return {split: load_split(root, split) for split in config.splits}


def test_shards_reload_bit_identically(tmp_path, config, sim):
    root = simulate(config, tmp_path / "ds", progress=False, log=None)
    meta = read_metadata(root)
    assert meta["status"] == "complete" and meta["splits"]["test"] == [96, 116]
    assert meta["snr"]["snr_db"] == 40.0 and meta["protocol"]["n_measurements"] == 208
    assert meta["mesh"]["source"].startswith("pyeit.mesh.create(16, h0=0.3)")
    for split, (lo, hi) in config.splits.items():
        got = load_split(root, split, verify=True)
        ref = sim(np.arange(lo, hi))           # same chunking as the writer: bit-identical
        for k in store.FIELDS:
            assert got[k].dtype == ref[k].dtype
            np.testing.assert_array_equal(got[k], ref[k])
    assert load_split(root, "val", fields=("image",), limit=5)["image"].shape == (5, 16, 16)
    with pytest.raises(ValueError, match="unknown split"):
        load_split(root, "dev")
    with pytest.raises(ValueError, match="unknown fields"):
        load_split(root, "train", fields=("voltage",))


def test_interrupted_generation_resumes_without_duplicates_or_gaps(tmp_path, config, monkeypatch):
    ref = _load_all(simulate(config, tmp_path / "ref", progress=False, log=None), config)

    calls = {"n": 0}
    real = simulate_mod._write_shard

    def flaky(*a, **k):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(simulate_mod, "_write_shard", flaky)
    root = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        simulate(config, root, progress=False, log=None)
    assert read_metadata(root)["status"] == "incomplete"
    assert verify_shard(store.shard_path(root, "train", 0), 0, 32)
    assert verify_shard(store.shard_path(root, "train", 1), 32, 64)
    assert not store.shard_path(root, "val", 0).exists()
    # a crash mid-write leaves only a temporary file; a corrupt shard is detected by its hash
    stale = root / "val" / ".shard_00000.npz.tmpXYZ.npz"
    stale.parent.mkdir(exist_ok=True)
    stale.write_bytes(b"partial")
    shard = store.shard_path(root, "train", 1)
    shard.write_bytes(shard.read_bytes()[:-10] + b"0123456789")
    assert not verify_shard(shard, 32, 64)
    monkeypatch.setattr(simulate_mod, "_write_shard", real)

    written = []
    monkeypatch.setattr(simulate_mod, "_write_shard", lambda p, *a, **k: written.append(p.name) or real(p, *a, **k))
    simulate(config, root, progress=False, log=None)
    assert sorted(written) == ["shard_00000.npz", "shard_00000.npz", "shard_00001.npz"]  # val, test, train/1
    got = _load_all(root, config)
    for split, (lo, hi) in config.splits.items():
        np.testing.assert_array_equal(got[split]["index"], np.arange(lo, hi))
        for k in store.FIELDS:
            np.testing.assert_array_equal(got[split][k], ref[split][k])
    assert read_metadata(root)["status"] == "complete"
    assert not stale.exists()


def test_sigterm_stops_after_the_shard_in_progress(tmp_path, config, monkeypatch):
    import os
    import signal

    from jaxeit.signals import Interrupted

    real = simulate_mod._write_shard
    calls = {"n": 0}

    def signalled(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:                      # the signal arrives while shard 2 is written
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)

    monkeypatch.setattr(simulate_mod, "_write_shard", signalled)
    root = tmp_path / "ds"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as exc:
        simulate(config, root, progress=False, log=None)
    assert exc.value.exit_code == 143 and calls["n"] == 2
    assert verify_shard(store.shard_path(root, "train", 1), 32, 64)     # the shard in progress is kept
    assert read_metadata(root)["status"] == "incomplete"
    assert signal.getsignal(signal.SIGTERM) is before                  # the previous handler is back


def test_config_mismatch_and_validation(tmp_path, config):
    root = simulate(config, tmp_path / "ds", progress=False, log=None)
    with pytest.raises(ValueError, match="different config"):
        simulate(config.replace(snr_db=25.0), root, progress=False, log=None)
    with pytest.raises(ValueError, match="n_circles"):
        SimulationConfig(n_circles=3)
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        SimulationConfig(shard_size=100, chunk_size=64)
    with pytest.raises(ValueError, match="electrode edges"):
        SimulationConfig(mesh="pyeit", electrode_model="cem")
    with pytest.raises(ValueError, match="gn_prior"):
        SimulationConfig(gn_prior="ridge")


def test_cli(tmp_path, capsys, config):
    with pytest.raises(SystemExit) as exc:
        cli_main(["--help"])
    assert exc.value.code == 0
    assert "examples:" in capsys.readouterr().out
    args = ["--mesh", "pyeit", "--h0", "0.3", "--size", "16", "--supersample", "2", "--mesh-samples", "16",
            "--n-train", "32", "--n-val", "0", "--n-test", "0", "--shard-size", "32", "--chunk-size", "32",
            "--seed", "7", "--no-progress"]
    rc = cli_main([str(tmp_path / "cli"), *args])
    assert rc == 0
    meta = json.loads((tmp_path / "cli" / "metadata.json").read_text())
    assert meta["config"]["n_train"] == 32 and meta["status"] == "complete"
    assert cli_main([str(tmp_path / "cli"), *args[:-3], "--seed", "8", "--no-progress"]) == 2   # config clash


def test_point_electrode_voltages_equal_pyeit(sim, config, batch):
    """The paper's setting: our point-electrode model on the pyEIT mesh reproduces pyEIT's forward solver."""
    pyeit_mesh = pytest.importorskip("pyeit.mesh")
    from pyeit.eit import protocol as pyeit_protocol
    from pyeit.eit.fem import EITForward

    fwd = EITForward(pyeit_mesh.create(16, h0=config.h0),
                     pyeit_protocol.create(16, dist_exc=1, step_meas=1, parser_meas="std"))
    for i in range(3):
        v = fwd.solve_eit(perm=batch["sigma"][i])
        np.testing.assert_allclose(batch["v_clean"][i], v, rtol=0, atol=1e-12 * np.abs(v).max())


def test_mesh_cache_reuses_the_mesh_without_pyeit(tmp_path, monkeypatch):
    sim_mod = importlib.import_module("jaxeit.data.simulate")   # the module, not the function
    pytest.importorskip("pyeit")
    cfg = SimulationConfig(n_circles=2, snr_db=40.0, image_size=16, n_train=4, n_val=0, n_test=0, shard_size=4,
                           chunk_size=4)
    monkeypatch.setenv(jaxeit.mesh.MESH_CACHE_ENV, str(tmp_path))
    built, info = sim_mod.make_mesh(cfg)
    assert info["kind"] == "pyeit" and len(list(tmp_path.glob("pyeit_*.npz"))) == 1
    monkeypatch.setattr(sim_mod, "_have_pyeit", lambda: False)   # as on a host without pyeit
    cached, info2 = sim_mod.make_mesh(cfg)
    assert info2 == info
    assert np.array_equal(cached.nodes, built.nodes) and np.array_equal(cached.triangles, built.triangles)
    monkeypatch.delenv(jaxeit.mesh.MESH_CACHE_ENV)
    _, info3 = sim_mod.make_mesh(cfg)   # no cache and no pyeit: "auto" falls back to a disk
    assert info3["kind"] == "disk"
