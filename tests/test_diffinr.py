"""Diff-INR: the SDS gradient identity and an end-to-end run with a tiny untrained prior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxeit import ForwardModel, mesh, protocol
from jaxeit.priors.diffusion import cosine_alphas_cumprod
from jaxeit.priors.unet import UNetConfig, init_params, make_apply
from jaxeit.recon import DiffINR, reconstruct
from jaxeit.recon.diffinr import SDSRegularizer, timestep_analysis


class TinyPrior:
    """The attributes Diff-INR uses, around a tiny randomly initialised U-Net."""

    def __init__(self, size=16):
        cfg = UNetConfig(image_size=size, base_channels=8, channel_mult=(1, 2), attention_resolutions=(8,),
                         num_heads=2, num_groups=4)
        graphdef, self.params = init_params(cfg, jax.random.PRNGKey(0))
        self.network = make_apply(graphdef)
        self.image_size = size
        self.alphas_cumprod = cosine_alphas_cumprod(1000)


@pytest.fixture(scope="module")
def prior():
    return TinyPrior()


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("weighting", ["constant", "snr"])
def test_sds_gradient_is_weighted_noise_residual(prior, weighting, clip):
    n = prior.image_size
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    mask = np.hypot(xx, yy) < 1
    image = jnp.asarray(1.0 + 0.5 * (np.hypot(xx - 0.3, yy) < 0.3), jnp.float32)
    reg = SDSRegularizer(prior, mask, t_range=(100, 300), weighting=weighting, clip_denoised=clip)
    key = jax.random.PRNGKey(7)
    grad = jax.grad(reg)(image, key)
    x = reg.normalise(image)
    t, eps, x_t, eps_hat = reg.sample(x, key)
    a = prior.alphas_cumprod[int(t)]
    if clip:   # ε̂ of the denoised image clipped to [-1, 1]
        x0 = np.clip((np.asarray(x_t) - np.sqrt(1 - a) * np.asarray(eps_hat)) / np.sqrt(a), -1, 1)
        eps_hat = (np.asarray(x_t) - np.sqrt(a) * x0) / np.sqrt(1 - a)
    w = 1.0 if weighting == "constant" else np.sqrt(1 - a) / np.sqrt(a)
    lo, hi = float(image[mask].min()), float(image[mask].max())
    expected = np.where(mask, w * np.asarray(eps_hat - eps) / n**2 * 2 / (hi - lo), 0.0)
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-7)
    assert 100 <= int(t) <= 300


def test_sds_with_clipped_denoiser_never_pushes_past_the_range(prior):
    """At the image's max (x = 1) the SDS step can only lower a pixel, at its min only raise it."""
    mask, image = _disk_case(prior)
    image = image + 0.3 * jnp.asarray(np.random.default_rng(0).standard_normal(image.shape), jnp.float32)
    reg = SDSRegularizer(prior, mask, t_range=(20, 400), clip_denoised=True)
    x = np.asarray(reg.normalise(image))
    top, bottom = mask & (x >= 1 - 1e-6), mask & (x <= -1 + 1e-6)
    assert top.any() and bottom.any()
    for i in range(20):
        grad = np.asarray(jax.grad(reg)(image, jax.random.PRNGKey(i)))   # a step moves x by −grad
        tol = 1e-5 * np.abs(grad).max()   # x at the ends is ±1 to float32 round-off only
        assert np.all(grad[top] >= -tol) and np.all(grad[bottom] <= tol)


def test_sds_keeps_a_nearly_flat_image_flat(prior):
    """The range floor: 1 % of contrast is not stretched to the prior's full [-1, 1] (min_range 0.5)."""
    mask, image = _disk_case(prior)
    faint = 1.0 + 0.02 * (image - 1.0)                       # a 1 % blob
    x = np.asarray(SDSRegularizer(prior, mask).normalise(faint))[mask]
    assert x.max() - x.min() == pytest.approx(2 * 0.01 / 0.5, rel=1e-3)
    x_stretched = np.asarray(SDSRegularizer(prior, mask, min_range=0.0).normalise(faint))[mask]
    assert x_stretched.max() - x_stretched.min() == pytest.approx(2.0, rel=1e-3)


def test_sds_rejects_bad_settings(prior):
    mask = np.ones((16, 16), bool)
    with pytest.raises(ValueError, match="grid"):
        SDSRegularizer(prior, np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="t_min"):
        SDSRegularizer(prior, mask, t_range=(500, 100))
    with pytest.raises(ValueError, match="weighting"):
        SDSRegularizer(prior, mask, weighting="magic")
    with pytest.raises(ValueError, match="weight_schedule"):
        SDSRegularizer(prior, mask, weight_schedule="step")
    with pytest.raises(ValueError, match="t_schedule"):
        SDSRegularizer(prior, mask, t_schedule="reverse")
    with pytest.raises(ValueError, match="n_draws"):
        SDSRegularizer(prior, mask, n_draws=0)
    with pytest.raises(ValueError, match="min_range"):
        SDSRegularizer(prior, mask, min_range=float("nan"))


def _disk_case(prior):
    n = prior.image_size
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    mask = np.hypot(xx, yy) < 1
    return mask, jnp.asarray(1.0 + 0.5 * (np.hypot(xx - 0.3, yy) < 0.3), jnp.float32)


def test_sds_draws_are_averaged_and_schedules_follow_the_run(prior):
    mask, image = _disk_case(prior)
    key = jax.random.PRNGKey(3)
    many = SDSRegularizer(prior, mask, t_range=(100, 300), n_draws=4)
    one = SDSRegularizer(prior, mask, t_range=(100, 300))
    g_many = np.asarray(jax.grad(many)(image, key))
    # the mean of the four single-draw gradients with the same keys
    g_each = [np.asarray(jax.grad(one)(image, k)) for k in jax.random.split(key, 4)]
    np.testing.assert_allclose(g_many, np.mean(g_each, axis=0), rtol=1e-4, atol=1e-7)
    # λ schedules: "linear" reaches 0 at the end of the run, "warmup" is 0 at its start
    lin = SDSRegularizer(prior, mask, weight_schedule="linear")
    warm = SDSRegularizer(prior, mask, weight_schedule="warmup")
    assert float(jnp.abs(jax.grad(lin)(image, key, 1.0)).max()) == 0.0
    assert float(jnp.abs(jax.grad(warm)(image, key, 0.0)).max()) == 0.0
    np.testing.assert_allclose(np.asarray(jax.grad(lin)(image, key, 0.0)), np.asarray(jax.grad(one)(image, key)),
                               rtol=1e-5, atol=1e-8)
    # annealed t: at the end of the run every draw has t = t_min
    ann = SDSRegularizer(prior, mask, t_range=(100, 300), t_schedule="anneal")
    x = ann.normalise(image)
    ts_end = {int(ann.sample(x, k, 1.0)[0]) for k in jax.random.split(key, 8)}
    ts_start = {int(ann.sample(x, k, 0.0)[0]) for k in jax.random.split(key, 8)}
    assert ts_end == {100} and all(100 <= t <= 300 for t in ts_start) and len(ts_start) > 1


def test_diff_inr_end_to_end(prior, small_disk, tmp_path):
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    sigma = 1.0 + 0.5 * (np.linalg.norm(small_disk.centroids() - [0.3, 0.2], axis=1) < 0.3)
    v = fm.voltages(jnp.asarray(sigma))
    res = reconstruct(fm, v, "diff-inr", prior=prior, max_iter=40, chunk=20, n_features=32, width=32, depth=2,
                      key=jax.random.PRNGKey(1))
    assert res.method == "diff-inr" and np.all(np.isfinite(res.sigma))
    assert res.status == "max_iter" and res.n_iter == 40 and len(res.history["data"]) == 40
    assert res.history["data"][-1] < res.history["data"][0]
    out = timestep_analysis(res, prior, ts=(50, 300), path=tmp_path / "steps.png")
    assert set(out) == {50, 300} and (tmp_path / "steps.png").exists()
    with pytest.raises(ValueError, match="grid"):
        reconstruct(fm, v, DiffINR(prior=prior, grid_size=32, max_iter=1, chunk=1))
    # the SDS options reach the regulariser and run in the same compiled fit
    res2 = reconstruct(fm, v, "diff-inr", prior=prior, max_iter=20, chunk=20, n_features=32, width=32, depth=2,
                       n_draws=2, weight_schedule="linear", t_schedule="anneal", key=jax.random.PRNGKey(1))
    assert res2.status == "max_iter" and np.all(np.isfinite(res2.sigma))


def test_diff_inr_stops_when_it_diverges(prior, small_disk):
    """An absurd learning rate blows the data misfit up: the fit stops at the last good parameters and says so."""
    fm = ForwardModel(small_disk, protocol.adjacent(16))
    sigma = 1.0 + 0.5 * (np.linalg.norm(small_disk.centroids() - [0.3, 0.2], axis=1) < 0.3)
    v = fm.voltages(jnp.asarray(sigma))
    res = reconstruct(fm, v, "diff-inr", prior=prior, max_iter=30, chunk=10, n_features=16, width=16, depth=2,
                      learning_rate=50.0, divergence_factor=10.0)
    assert res.status == "diverged" and res.n_iter < 30
    assert np.all(np.isfinite(res.sigma))
    data = np.asarray(res.history["data"])
    assert data[-1] > 10.0 * np.min(data[:-1]) or not np.isfinite(data[-1])
