"""Tests of the score SDEs, samplers (PC, diffrax SDE/ODE, CSD*, DPS), DSM loss and score training.

Samplers are checked with the exact score of Gaussian data x₀ ~ N(μ, s² I):
p_t = N(α(t)μ, (α(t)²s² + std(t)²) I), so ∇log p_t(x) = −(x − αμ)/(α²s² + std²).
Moment tolerances are 4 standard errors of the pooled sample mean / variance
(s/√n and s²√(2/n)), plus, where stated, the known discretisation bias of a
first-order sampler.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

import jaxeit  # noqa: F401
from jaxeit.dgm import sampling
from jaxeit.dgm.score import ScoreConfig, ScoreModel, dsm_loss, network_time, train_score
from jaxeit.dgm.sde import VESDE, VPSDE, get_sde
from jaxeit.dgm.training import FitConfig
from jaxeit.priors.unet import init_params

MU, SD = 0.5, 0.3
SDES = {"vp": VPSDE(), "ve": VESDE()}


def gauss_score(sde, mu, sd, x, t):
    """Exact score of p_t for x₀ ~ N(mu, sd² I) (mu may be an array of the event shape)."""
    a, std = sde.marginal_coeffs(t)
    a = a.reshape(a.shape + (1,) * (x.ndim - a.ndim))
    std = std.reshape(a.shape)
    return -(x - a * mu) / (a**2 * sd**2 + std**2)


def exact(sde, mu=MU, sd=SD):
    return Partial(gauss_score, sde, jnp.asarray(mu), jnp.asarray(sd))


def assert_moments(x, mu=MU, sd=SD, var_bias=0.0):
    """Pooled mean within 4 SE; pooled variance within 4 SE plus ``var_bias``·sd²."""
    x = np.asarray(x, np.float64).ravel()
    n = x.size
    se_m, se_v = sd / math.sqrt(n), sd**2 * math.sqrt(2.0 / n)
    assert abs(x.mean() - mu) < 4 * se_m, (x.mean(), mu, se_m)
    assert abs(x.var() - sd**2) < 4 * se_v + var_bias * sd**2, (x.var(), sd**2, se_v)


# -----------------------------------------------------------------------------------
# SDEs
# -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vp", "ve"])
def test_sde_marginal_matches_drift_and_diffusion(name):
    sde = SDES[name]
    t = jnp.array([0.05, 0.3, 0.7, 0.95])
    a, std = sde.marginal_coeffs(t)
    # For linear drift f = c(t)x the marginal variance obeys dVar/dt = 2c·Var + g²; the mean d log α/dt = c.
    h = 1e-5
    a_p, s_p = sde.marginal_coeffs(t + h)
    a_m, s_m = sde.marginal_coeffs(t - h)
    one = jnp.ones((4, 1))
    f, g = sde.drift_diffusion(one, t)
    c = f[:, 0]
    np.testing.assert_allclose((jnp.log(a_p) - jnp.log(a_m)) / (2 * h), c, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose((s_p**2 - s_m**2) / (2 * h), 2 * c * std**2 + g**2, rtol=1e-5)
    x = jnp.ones((4, 3, 5))
    mean, s = sde.marginal(x, t)
    assert mean.shape == x.shape and s.shape == (4,)
    f, g = sde.drift_diffusion(x, t)
    assert f.shape == x.shape and g.shape == (4,)
    # discretisation: one step of the exact forward kernel over [t − dt, t]
    dt = 0.01
    f, G = sde.discretize(x, t, dt)
    a0, s0 = sde.marginal_coeffs(t - dt)
    ratio = a / a0
    np.testing.assert_allclose(1 + f[:, 0, 0], ratio, rtol=1e-10)
    np.testing.assert_allclose(G**2, std**2 - ratio**2 * s0**2, rtol=1e-8)
    z = sde.prior_sample(jax.random.PRNGKey(0), (4000,))
    assert z.dtype == jnp.float32 and abs(float(jnp.std(z)) / sde.prior_std() - 1) < 0.05


def test_sde_defaults_and_names():
    ve, vp = get_sde("VE"), get_sde("vpsde")
    assert isinstance(ve, VESDE) and (ve.sigma_min, ve.sigma_max, ve.N) == (0.01, 128.0, 1000)
    assert isinstance(vp, VPSDE) and (vp.beta_min, vp.beta_max) == (0.1, 20.0)
    assert hash(ve) == hash(VESDE()) and jax.tree_util.tree_leaves(ve) == []
    with pytest.raises(ValueError, match="unknown SDE 'subvp'"):
        get_sde("subvp")
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESDE(sigma_min=1.0, sigma_max=0.5)


# -----------------------------------------------------------------------------------
# Samplers with the exact score
# -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["vp", "ve"])
def test_pc_sampler_reproduces_gaussian(name):
    sde = SDES[name]
    # Langevin (batch norms, r = 0.16): ULA inflates the variance by ≈ r²/(1 − r²) = 2.6 %,
    # plus O(1/N) from the reverse-diffusion predictor (≈ 1.3 % at N = 1000)
    x = sampling.pc_sample(exact(sde), sde, jax.random.PRNGKey(1), shape=(512, 16))
    assert x.shape == (512, 16) and x.dtype == jnp.float32
    assert_moments(x, var_bias=0.04)
    x = sampling.pc_sample(exact(sde), sde, jax.random.PRNGKey(2), shape=(512, 16), corrector="ald", snr=0.056)
    assert_moments(x, var_bias=0.02)


def test_diffrax_samplers_reproduce_gaussian():
    # the drift code is shared by both SDEs: the reverse SDE runs on VP and the ODE on VE
    sde = VPSDE()
    x = sampling.sde_sample(exact(sde), sde, jax.random.PRNGKey(3), shape=(500, 8), n_steps=200)
    assert x.shape == (500, 8) and x.dtype == jnp.float32
    assert_moments(x, var_bias=0.01)
    sde = VESDE()
    x = sampling.ode_sample(exact(sde), sde, jax.random.PRNGKey(4), shape=(500, 8))
    assert x.shape == (500, 8) and x.dtype == jnp.float32
    assert_moments(x)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_csd_star_from_the_data_distribution(name):
    sde, sc = SDES[name], exact(SDES[name])
    t0, n = 0.55, 1500
    # predictor only: the reverse SDE samples x0 | x_t0 (a corrector mixes toward the marginal p_t and
    # forgets x_t0). Both calls run 2·n chains of dimension 2, so they share one compilation.
    x_start = MU + SD * np.random.default_rng(5).standard_normal((2 * n, 2))
    x = sampling.pc_sample(sc, sde, jax.random.PRNGKey(6), x_start=x_start, start_time=t0, corrector="none")
    # x_start ~ p_0 diffused to t0 is p_t0, so the reverse process returns p_0 (O(1/N) predictor bias)
    assert_moments(x, var_bias=0.03)
    # per image: x0 | x_gn ~ N(μ + κα(x_gn − μ), v + κ²std²)
    a, std = (float(v) for v in sde.marginal_coeffs(t0))
    vt = a**2 * SD**2 + std**2
    kappa, v = a * SD**2 / vt, SD**2 * std**2 / vt
    gn = jnp.array([[0.0, 1.0], [0.5, 2.0]])
    mean, sd = sampling.csd_star(sc, sde, gn, jax.random.PRNGKey(7), t0=t0, n_samples=n, corrector="none")
    assert mean.shape == sd.shape == gn.shape
    want_sd = math.sqrt(v + kappa**2 * std**2)
    np.testing.assert_allclose(mean, MU + kappa * a * (gn - MU), atol=4 * want_sd / math.sqrt(n))
    np.testing.assert_allclose(sd, want_sd, rtol=4 * math.sqrt(0.5 / n) + 0.03)
    # the DGM code's variant inserts the (scaled) image without noise
    x_t0, _ = sampling._init_state(sde, jax.random.PRNGKey(7), gn, t0, gn.shape, False, jnp.float32)
    np.testing.assert_allclose(x_t0, a * gn, rtol=1e-6)


def test_dps_moves_toward_the_linear_gaussian_posterior():
    sde = VPSDE()
    d, noise = 4, 0.05
    A = jnp.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    v = jnp.array([1.1, 0.2])
    cov = jnp.linalg.inv(jnp.eye(d) / SD**2 + A.T @ A / noise**2)
    post_mean = cov @ (MU * jnp.ones(d) / SD**2 + A.T @ v / noise**2)
    xs, res = sampling.dps_sample(exact(sde), sde, Partial(jnp.matmul, A), v, jax.random.PRNGKey(8), zeta=0.05,
                                  shape=(d,), n_samples=256, n_steps=300, return_residuals=True)
    assert xs.shape == (256, d) and res.shape == (300, 256)
    prior_gap = float(jnp.linalg.norm(MU - post_mean))
    assert float(jnp.linalg.norm(xs.mean(0) - post_mean)) < 0.3 * prior_gap
    assert float(jnp.mean(res[-1])) < 0.3 * float(jnp.linalg.norm(v - A @ (MU * jnp.ones(d))))
    # ζ = 0 is the unconditional sampler
    xs0 = sampling.dps_sample(exact(sde), sde, Partial(jnp.matmul, A), v, jax.random.PRNGKey(8), zeta=0.0,
                              shape=(d,), n_samples=256, n_steps=300)
    assert float(jnp.linalg.norm(xs0.mean(0) - MU)) < 4 * SD * 2 / math.sqrt(256)


@pytest.mark.parametrize("name", ["vp", "ve"])
def test_dps_from_a_start_image_is_csd_star_plus_the_likelihood_step(name):
    sde, sc = SDES[name], exact(SDES[name])
    t0, n, d = 0.55, 1500, 2
    gn = jnp.array([0.0, 1.0])
    A = jnp.array([[1.0, 0.0]])
    v = jnp.array([2.0])
    # ζ = 0: the reverse diffusion from the diffused start image, x0 | x_gn ~ N(μ + κα(x_gn − μ), v + κ²std²)
    x0, res0 = sampling.dps_sample(sc, sde, Partial(jnp.matmul, A), v, jax.random.PRNGKey(12), zeta=0.0,
                                   shape=(d,), n_samples=n, x_start=gn, start_time=t0, return_residuals=True)
    assert res0.shape[0] == round(sde.N * (t0 - sde.eps) / (sde.T - sde.eps))
    a, std = (float(c) for c in sde.marginal_coeffs(t0))
    vt = a**2 * SD**2 + std**2
    kappa, var = a * SD**2 / vt, SD**2 * std**2 / vt
    want_sd = math.sqrt(var + kappa**2 * std**2)
    np.testing.assert_allclose(x0.mean(0), MU + kappa * a * (gn - MU), atol=4 * want_sd / math.sqrt(n))
    np.testing.assert_allclose(x0.std(0), want_sd, rtol=4 * math.sqrt(0.5 / n) + 0.03)
    # ζ > 0 pulls the measured coordinate toward v and leaves the unmeasured one alone
    x1 = sampling.dps_sample(sc, sde, Partial(jnp.matmul, A), v, jax.random.PRNGKey(12), zeta=0.02,
                             shape=(d,), n_samples=n, x_start=gn, start_time=t0)
    assert abs(float(x1[:, 0].mean()) - 2.0) < 0.5 * abs(float(x0[:, 0].mean()) - 2.0)
    assert abs(float(x1[:, 1].mean()) - float(x0[:, 1].mean())) < 4 * want_sd / math.sqrt(n) * 2
    with pytest.raises(ValueError, match="event shape"):
        sampling.dps_sample(sc, sde, Partial(jnp.matmul, A), v, jax.random.PRNGKey(12), zeta=0.0,
                            shape=(d,), x_start=jnp.zeros(3), start_time=t0)
    with pytest.raises(ValueError, match="needs x_start"):
        sampling.dps_sample(sc, sde, Partial(jnp.matmul, A), v, jax.random.PRNGKey(12), zeta=0.0,
                            shape=(d,), start_time=t0)


def test_dps_data_range_clips_what_the_measurement_sees_and_the_samples():
    sde = VPSDE()
    lo, hi = -0.2, 0.3
    seen = []

    def measure(x):                       # records the extremes of every x̂₀ it is given
        jax.debug.callback(lambda a, b: seen.append((float(a), float(b))), x.min(), x.max())
        return x[:2] * 3.0

    xs = sampling.dps_sample(exact(sde), sde, Partial(measure), jnp.array([5.0, -5.0]), jax.random.PRNGKey(3),
                             zeta=0.5, shape=(4,), n_samples=8, n_steps=40, data_range=(lo, hi))
    assert seen and min(a for a, _ in seen) >= lo - 1e-6 and max(b for _, b in seen) <= hi + 1e-6
    assert float(xs.min()) >= lo - 1e-6 and float(xs.max()) <= hi + 1e-6
    with pytest.raises(ValueError, match="data_range"):
        sampling.dps_sample(exact(sde), sde, Partial(measure), jnp.zeros(2), jax.random.PRNGKey(3), zeta=0.5,
                            shape=(4,), n_steps=4, data_range=(1.0, 0.0))


@pytest.mark.parametrize("name,weighting,shape", [("vp", False, (256, 4, 4)), ("ve", True, (256, 2, 2, 3))])
def test_dsm_loss_is_smallest_at_the_exact_score(name, weighting, shape):
    sde = SDES[name]
    x0 = MU + SD * np.random.default_rng(9).standard_normal(shape)
    loss = jax.jit(dsm_loss, static_argnames=("sde", "likelihood_weighting", "reduce_mean"))
    kw = dict(sde=sde, x0=x0, key=jax.random.PRNGKey(10), likelihood_weighting=weighting, reduce_mean=True)
    good = loss(exact(sde), **kw)
    for wrong in (exact(sde, mu=-0.5), exact(sde, sd=0.6), exact(sde, sd=0.15)):
        assert float(good) < float(loss(wrong, **kw))
    assert good.shape == () and np.isfinite(float(good))


def test_batch_consistency_and_vmap():
    # the (512, 16) VP program is the one of test_pc_sampler_reproduces_gaussian (the corrector is traced)
    sde, sc = VPSDE(), exact(VPSDE())
    key = jax.random.PRNGKey(11)
    for kw in (dict(corrector="ald", snr=0.056), dict(langevin_norm="sample")):
        np.testing.assert_allclose(sampling.pc_sample(sc, sde, key, shape=(512, 16), **kw)[:2],
                                   sampling.pc_sample(sc, sde, key, shape=(2, 16), **kw), rtol=1e-5, atol=1e-5)
    keys = jax.random.split(key, 3)
    one = lambda k: sampling.pc_sample(sc, sde, k, shape=(2, 16))  # noqa: E731
    np.testing.assert_allclose(jax.vmap(one)(keys), jnp.stack([one(k) for k in keys]), rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_value_errors():
    sde, sc = VPSDE(), exact(VPSDE())
    key = jax.random.PRNGKey(0)
    gn = jnp.zeros((2, 3))
    for t0 in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"t0 must be in \(0, 1\]"):
            sampling.csd_star(sc, sde, gn, key, t0=t0)
    with pytest.raises(ValueError, match="must exceed the SDE's smallest time"):
        sampling.csd_star(sc, sde, gn, key, t0=1e-4)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        sampling.csd_star(sc, sde, gn, key, n_steps=0)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        sampling.pc_sample(sc, sde, key, shape=(2, 3), n_steps=0)
    with pytest.raises(ValueError, match="n_steps must be an integer >= 1"):
        sampling.dps_sample(sc, sde, lambda x: x, jnp.zeros(3), key, zeta=1.0, shape=(3,), n_steps=-1)
    with pytest.raises(ValueError, match="unknown corrector"):
        sampling.pc_sample(sc, sde, key, shape=(2, 3), corrector="ode")
    with pytest.raises(ValueError, match="unknown sampler"):
        sampling.csd_star(sc, sde, gn, key, sampler="ddim")
    with pytest.raises(ValueError, match="unknown SDE solver"):
        sampling.sde_sample(sc, sde, key, shape=(2, 3), solver="rk4")
    with pytest.raises(ValueError, match="needs x_start"):
        sampling.pc_sample(sc, sde, key, shape=(2, 3), start_time=0.5)
    with pytest.raises(ValueError, match="unknown SDE"):
        ScoreConfig(sde="cld")


# -----------------------------------------------------------------------------------
# Score network and training
# -----------------------------------------------------------------------------------

def _tiny_config(epochs=6, **kw):
    return ScoreConfig(image_size=8, base_channels=8, channel_mult=(1,), num_res_blocks=1, num_groups=4,
                       shift=1.0, scale=0.5, reduce_mean=True, warmup=0, ema_decay=0.9,
                       fit=FitConfig(epochs=epochs, batch_size=8, lr=3e-3, log_every=4, checkpoint_every=2), **kw)


def _discs(n=32, size=8, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size * 2 - 1
    cx, cy = rng.uniform(-0.5, 0.5, (2, n))
    r = rng.uniform(0.2, 0.4, n)
    inside = (xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2 < r[:, None, None] ** 2
    return np.where(inside, 1.5, 1.0).astype(np.float32)


def test_score_network_wrapper_and_model_round_trip(tmp_path):
    config = _tiny_config()
    sde = config.make_sde()
    _, params = init_params(config.unet_config(), jax.random.PRNGKey(0))
    # the output convolution starts at zero; a bias b makes ε̂ = b everywhere, so the score is −b/std(t)
    b = 0.7
    params["conv_out"]["bias"][...] = jnp.array([b], jnp.float32)
    np.testing.assert_allclose(network_time(sde, jnp.array([0.0, 0.5, 1.0])), [0.0, 499.5, 999.0], atol=1e-3)
    np.testing.assert_allclose(network_time(VPSDE(), jnp.array([0.5])), [499.5])
    model = ScoreModel(config, params, params)
    model.save(tmp_path / "score.npz")
    loaded = ScoreModel.load(tmp_path / "score.npz")
    gn = _discs(2)
    # one noise-free predictor step from t0 to eps (VE: f = 0, G² = σ(t0)² − σ(eps)²) is analytic:
    # x = x_t0 + G²·(−b/σ(t0)) in model units, x_t0 the normalised GN image
    kw = dict(n_samples=2, n_steps=1, corrector="none")       # one network call: a small program
    res = loaded.reconstruct(gn, jax.random.PRNGKey(3), diffuse=False, **kw)
    assert res.method == "csd*" and res.status == "done"
    mean, sd = res.image, res.extras["std"]
    s0, s_eps = (float(v) for v in sde.sigma(jnp.array([0.55, sde.eps])))
    want = config.shift + config.scale * ((gn - config.shift) / config.scale - b * (s0**2 - s_eps**2) / s0)
    assert mean.shape == sd.shape == (2, 8, 8) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sd, 0.0, atol=1e-6)
    res = loaded.reconstruct(gn, jax.random.PRNGKey(3), **kw)
    mean, sd = res.image, res.extras["std"]
    np.testing.assert_array_equal(mean, model.reconstruct(gn, jax.random.PRNGKey(3), **kw).image)
    assert np.all(sd > 0)
    # one image with twice the samples: the same number of chains, so no new compilation
    assert loaded.reconstruct(gn[0], jax.random.PRNGKey(3), **dict(kw, n_samples=4)).image.shape == (8, 8)
    with pytest.raises(ValueError, match="GN images must be"):
        loaded.reconstruct(np.zeros((2, 4, 4)), jax.random.PRNGKey(0))


def test_train_score_loss_decreases_and_resumes_exactly(tmp_path):
    images, key = _discs(), jax.random.PRNGKey(4)
    config = _tiny_config()
    straight = train_score(images, config, tmp_path / "a", key=key, progress=False, log=None)
    losses = [h["loss"] for h in straight.history]
    assert len(losses) == 6 and losses[-1] < 0.8 * losses[0]
    part = train_score(images, config, tmp_path / "b", key=key, progress=False, log=None, until_step=3)
    assert all(h["step"] <= 3 for h in part.history)
    resumed = train_score(images, config, tmp_path / "b", key=key, progress=False, log=None)
    assert resumed.history == straight.history
    for a, b in zip(jax.tree_util.tree_leaves((straight.params, straight.ema_params)),
                    jax.tree_util.tree_leaves((resumed.params, resumed.ema_params))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    ema_gap = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda p, e: jnp.max(jnp.abs(p - e)),
                                                               straight.params, straight.ema_params))
    assert max(float(g) for g in ema_gap) > 0                  # the EMA lags the weights
    loaded = ScoreModel.load(tmp_path / "a" / "score.npz")
    np.testing.assert_array_equal(np.asarray(jax.tree_util.tree_leaves(loaded.ema_params)[0]),
                                  np.asarray(jax.tree_util.tree_leaves(straight.ema_params)[0]))
    with pytest.raises(ValueError, match="another config"):
        train_score(images, _tiny_config(epochs=7), tmp_path / "b", key=key, progress=False, log=None)
