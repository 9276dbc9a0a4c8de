"""Tests of the two-stage CVAE and of the shared training loop (loss decrease, exact resume)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxeit  # noqa: F401
from jaxeit.dgm.cvae import CVAE, CVAEConfig, train_cvae
from jaxeit.dgm.training import FitConfig


def _tiny_set(n=32, size=16, m=208, seed=0):
    """Images of one random disc on a background of 1 and 'voltages' that depend on them linearly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size * 2 - 1
    cx, cy = rng.uniform(-0.5, 0.5, (2, n))
    r = rng.uniform(0.2, 0.4, n)
    images = np.where((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2 < r[:, None, None] ** 2,
                      1.5, 1.0).astype(np.float32)
    mix = rng.standard_normal((size * size, m)) / size
    volts = images.reshape(n, -1) @ mix + 0.01 * rng.standard_normal((n, m))
    return {"image": images, "voltages": volts}


def _config(vae_epochs=6, mlp_epochs=6, **kw):
    return CVAEConfig(image_size=16, channels=(4, 8, 8, 16), mlp_widths=(32, 16), latent_dim=4,
                      vae=FitConfig(epochs=vae_epochs, batch_size=8, lr=3e-3, log_every=4, checkpoint_every=2),
                      mlp=FitConfig(epochs=mlp_epochs, batch_size=8, lr=3e-3, seed=1, log_every=4,
                                    checkpoint_every=2), **kw)


@pytest.fixture(scope="module")
def data():
    return _tiny_set()


def test_cvae_losses_decrease_and_model_round_trips(tmp_path, data):
    model = train_cvae(_config(), data, workdir=tmp_path, progress=False, log=None)
    vae = [h["loss"] for h in model.history["vae"]]
    mlp = [h["loss"] for h in model.history["mlp"]]
    assert len(vae) == 6 and len(mlp) == 6
    assert vae[-1] < 0.7 * vae[0]
    assert mlp[-1] < mlp[0]
    res = model.reconstruct(data["voltages"][:5])
    assert res.method == "cvae" and res.status == "done" and res.sigma is None
    out = res.image
    assert out.shape == (5, 16, 16) and out.dtype == np.float32 and np.all(np.isfinite(out))
    assert model.reconstruct(data["voltages"][0]).image.shape == (16, 16)
    loaded = CVAE.load(tmp_path / "cvae.npz")
    np.testing.assert_array_equal(loaded.reconstruct(data["voltages"][:5]).image, out)
    with pytest.raises(ValueError, match="208 measurements"):
        model.reconstruct(np.zeros((2, 100)))


def test_checkpoint_resume_gives_the_same_state(tmp_path, data):
    config = _config(vae_epochs=2, mlp_epochs=2)
    straight = train_cvae(config, data, workdir=tmp_path / "a", progress=False, log=None)
    # interrupt each stage part-way (3 of 8 steps, between the checkpoints at 2 and 4), then resume
    part = train_cvae(config, data, workdir=tmp_path / "b", progress=False, log=None, until_step={"vae": 3})
    assert part.history["mlp"] == [] and all(h["step"] <= 3 for h in part.history["vae"])
    train_cvae(config, data, workdir=tmp_path / "b", progress=False, log=None, until_step={"mlp": 3})
    resumed = train_cvae(config, data, workdir=tmp_path / "b", progress=False, log=None)
    for a, b in zip(jax.tree_util.tree_leaves((straight.vae_params, straight.mlp_params)),
                    jax.tree_util.tree_leaves((resumed.vae_params, resumed.mlp_params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.history == straight.history          # the same rows, none lost or split
    with pytest.raises(ValueError, match="another config"):
        train_cvae(_config(vae_epochs=3, mlp_epochs=2), data, workdir=tmp_path / "b", progress=False, log=None)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        CVAEConfig(image_size=24)
    with pytest.raises(ValueError, match="latent_target"):
        CVAEConfig(latent_target="median")


def _quadratic(params, rest, batch, key, extra):
    return jnp.sum((params["w"] - jnp.mean(batch["x"])) ** 2), {}


def test_fit_time_budget_stops_early_and_full_run_is_unchanged(monkeypatch):
    from jaxeit import training as trainer
    from jaxeit.dgm import training

    data = {"x": np.arange(64, dtype=np.float32)[:, None]}
    params = {"w": jnp.zeros(())}
    _, hist_full = training.fit(_quadratic, params, data=data, progress=False, log=None,
                                config=training.FitConfig(epochs=20, batch_size=4, lr=0.1, log_every=4))
    assert hist_full[-1]["step"] == 20 * 16

    clock = iter(np.arange(0.0, 1e4, 0.01))   # each reading of the clock: 10 ms later
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: float(next(clock)))
    budget = training.FitConfig(epochs=20, batch_size=4, lr=0.1, log_every=4, max_seconds=0.1)
    _, hist_cut = training.fit(_quadratic, params, data=data, config=budget, progress=False, log=None)
    assert 4 <= hist_cut[-1]["step"] < 20 * 16
    assert hist_cut == hist_full[:len(hist_cut)]   # the same steps as the full run, only fewer
