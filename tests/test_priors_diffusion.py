"""Improved-DDPM pieces: cosine schedule, respacing, learned-range variance, hybrid loss, sampling."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from jaxeit.priors.diffusion import (
    GaussianDiffusion,
    cosine_betas,
    discretized_gaussian_log_likelihood,
    normal_kl,
    space_timesteps,
)


def _f(tau, s=0.008):
    return math.cos((tau + s) / (1 + s) * math.pi / 2) ** 2


@pytest.fixture(scope="module")
def diff():
    return GaussianDiffusion.cosine(1000)


def test_cosine_schedule_values(diff):
    T = 1000
    betas = cosine_betas(T)
    assert betas.shape == (T,) and betas.dtype == np.float64
    for t in (0, 1, 10, 499, 900):
        assert betas[t] == pytest.approx(1 - _f((t + 1) / T) / _f(t / T), rel=1e-12)
        # ᾱ at index t is f((t+1)/T)/f(0) (index t = step t + 1)
        assert diff.alphas_cumprod[t] == pytest.approx(_f((t + 1) / T) / _f(0), rel=1e-9)
    assert betas[-1] == 0.999                                   # clipped
    assert (np.diff(betas) > 0).all()
    assert diff.alphas_cumprod[0] == pytest.approx(0.99997, abs=2e-5)
    assert diff.alphas_cumprod[499] == pytest.approx(0.4936, abs=1e-3)
    assert diff.alphas_cumprod[-1] < 1e-8
    # posterior variance β̃_t = β_t (1 − ᾱ_{t−1})/(1 − ᾱ_t), 0 at t = 0, clipped log
    h = diff._host
    assert h["posterior_variance"][0] == 0.0
    t = 300
    assert h["posterior_variance"][t] == pytest.approx(
        betas[t] * (1 - diff.alphas_cumprod[t - 1]) / (1 - diff.alphas_cumprod[t]))
    assert h["posterior_log_variance_clipped"][0] == h["posterior_log_variance_clipped"][1]


def test_respacing(diff):
    kept = space_timesteps(1000, 50)
    assert kept[0] == 0 and kept[-1] == 999 and len(np.unique(kept)) == 50
    r = diff.respace(50)
    assert r.num_steps == 50 and r.num_train_timesteps == 1000
    np.testing.assert_array_equal(r.timestep_map, kept)
    np.testing.assert_allclose(r.alphas_cumprod, diff.alphas_cumprod[kept], rtol=1e-9)
    ac = diff.alphas_cumprod[kept]
    np.testing.assert_allclose(r.betas[1:], 1 - ac[1:] / ac[:-1], rtol=1e-12)
    assert r.betas[0] == pytest.approx(1 - ac[0])
    # respacing a respaced process composes the maps
    np.testing.assert_array_equal(r.respace(5).timestep_map, kept[space_timesteps(50, 5)])
    with pytest.raises(ValueError, match="respaced steps"):
        diff.respace(0)


def test_learned_range_variance(diff):
    h = diff._host
    for t in (0, 1, 250, 999):
        lb, lbt = math.log(diff.betas[t]), h["posterior_log_variance_clipped"][t]
        for v in (0.0, 0.3, 1.0):
            got = float(diff.model_log_variance(jnp.float32(v), jnp.int32(t)))
            assert got == pytest.approx(v * lb + (1 - v) * lbt, rel=1e-5, abs=1e-5)
    # Σ = exp(v log β + (1 − v) log β̃) lies between β̃ and β for v in [0, 1]
    t = jnp.array([100, 100, 100])
    var = np.exp(np.asarray(diff.model_log_variance(jnp.array([0.0, 0.5, 1.0]), t)))
    assert var[0] < var[1] < var[2]
    assert var[1] == pytest.approx(math.sqrt(var[0] * var[2]), rel=1e-5)


def _hand_loss(diff, x0, t, noise, eps_hat, v):
    """The hybrid loss of a 1-pixel image, by hand in float64."""
    ab = diff.alphas_cumprod
    ab_t, ab_prev = ab[t], (ab[t - 1] if t > 0 else 1.0)
    beta = diff.betas[t]
    x_t = math.sqrt(ab_t) * x0 + math.sqrt(1 - ab_t) * noise
    mse = (noise - eps_hat) ** 2
    x0_hat = (x_t - math.sqrt(1 - ab_t) * eps_hat) / math.sqrt(ab_t)
    c1 = beta * math.sqrt(ab_prev) / (1 - ab_t)
    c2 = (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab_t)
    post_var = lambda k: diff.betas[k] * (1 - (ab[k - 1] if k else 1.0)) / (1 - ab[k])  # noqa: E731
    log_tilde = math.log(post_var(t) if t > 0 else post_var(1))
    logvar = v * math.log(beta) + (1 - v) * log_tilde
    mu = c1 * x0_hat + c2 * x_t
    if t > 0:
        mu_q = c1 * x0 + c2 * x_t
        kl = 0.5 * (-1 + logvar - log_tilde + math.exp(log_tilde - logvar) + (mu_q - mu) ** 2 / math.exp(logvar))
        vb = kl / math.log(2)
    else:
        sd = math.exp(0.5 * logvar)
        p = norm.cdf((x0 + 1 / 255 - mu) / sd) - norm.cdf((x0 - 1 / 255 - mu) / sd)
        vb = -math.log(p) / math.log(2)
    return x_t, mse, vb, mse + 0.001 * 1000 * vb


@pytest.mark.parametrize("t, x0, noise, eps_hat, v", [(10, 0.3, 0.7, 0.5, 0.25), (400, -0.8, -1.2, 0.1, 0.9),
                                                      (0, 0.2, 0.4, 0.3, 0.6)])
def test_hybrid_loss_against_hand_computation(diff, t, x0, noise, eps_hat, v):
    x_t, mse, vb, loss = _hand_loss(diff, x0, t, noise, eps_hat, v)
    arr = lambda a: jnp.full((1, 1, 1), a, jnp.float32)  # noqa: E731
    xt = diff.q_sample(arr(x0), jnp.array([t]), arr(noise))
    assert float(xt[0, 0, 0]) == pytest.approx(x_t, rel=1e-5)
    terms = diff.hybrid_loss(arr(eps_hat), arr(v), arr(x0), xt, jnp.array([t]), arr(noise))
    assert float(terms["mse"][0]) == pytest.approx(mse, rel=1e-5)
    assert float(terms["vb"][0]) == pytest.approx(vb, rel=2e-3, abs=1e-5)
    assert float(terms["loss"][0]) == pytest.approx(loss, rel=2e-3, abs=1e-5)


def test_vlb_term_trains_only_the_variance(diff):
    x0, noise = jnp.full((2, 2, 2), 0.4, jnp.float32), jnp.full((2, 2, 2), 0.3, jnp.float32)
    t = jnp.array([50, 600])
    xt = diff.q_sample(x0, t, noise)

    def vb(eps, v):
        return jnp.sum(diff.hybrid_loss(eps, v, x0, xt, t, noise)["vb"])

    def loss(eps, v):
        return jnp.sum(diff.hybrid_loss(eps, v, x0, xt, t, noise)["loss"])

    eps, v = jnp.full_like(x0, 0.1), jnp.full_like(x0, 0.5)
    g_eps, g_v = jax.jit(jax.grad(vb, argnums=(0, 1)))(eps, v)
    assert float(jnp.abs(g_eps).max()) == 0.0 and float(jnp.abs(g_v).max()) > 0
    # the mean is trained by L_simple alone: d loss / d eps = 2 (eps − noise) / n_pixels
    np.testing.assert_allclose(jax.jit(jax.grad(loss))(eps, v), 2 * (eps - noise) / 4, rtol=1e-6)


def test_kl_and_discretized_likelihood_helpers():
    assert float(normal_kl(0.0, 0.0, 0.0, 0.0)) == 0.0
    assert float(normal_kl(1.0, 0.0, 0.0, 0.0)) == pytest.approx(0.5)
    # the bins of 8-bit data on [-1, 1] sum to one
    edges = np.linspace(-1, 1, 256)
    p = np.exp(np.asarray(discretized_gaussian_log_likelihood(jnp.asarray(edges), mean=0.1, log_scale=math.log(0.3))))
    assert p.sum() == pytest.approx(1.0, abs=1e-4)


def test_q_sample_and_predict_x0_are_inverse(diff):
    key = jax.random.PRNGKey(0)
    x0 = jax.random.uniform(key, (4, 8, 8), jnp.float32, -1, 1)
    noise = jax.random.normal(jax.random.PRNGKey(1), x0.shape, jnp.float32)
    t = jnp.array([0, 100, 500, 900])
    xt, x0_hat, eps_hat = jax.jit(lambda x0, noise: (
        diff.q_sample(x0, t, noise), diff.predict_x0(diff.q_sample(x0, t, noise), t, noise),
        diff.predict_eps(diff.q_sample(x0, t, noise), t, x0)))(x0, noise)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3)
    np.testing.assert_allclose(eps_hat, noise, atol=2e-3)


def _oracle(diff, c):
    """A network that knows the data is the constant image c: ε̂ exact, v = 0.5."""
    ab = jnp.asarray(diff.alphas_cumprod, jnp.float32)

    def apply(params, x, t):
        a = ab[t][:, None, None]
        return (x - jnp.sqrt(a) * c) / jnp.sqrt(1 - a), jnp.full_like(x, 0.5)

    return apply


def test_respaced_ancestral_sampling_shapes_and_oracle(diff):
    c = 0.37
    apply = _oracle(diff, c)
    r = diff.respace(10)
    out = jax.jit(lambda key: r.p_sample_loop(apply, None, key, (3, 8, 8)))(jax.random.PRNGKey(0))
    assert out.shape == (3, 8, 8) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, c, atol=1e-3)          # the last step has no noise
    # denoise = x̂₀ from ε̂, with the original step index
    xt = diff.q_sample(jnp.full((2, 4, 4), c, jnp.float32), jnp.array([200, 700]),
                       jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4), jnp.float32))
    x0_hat = jax.jit(lambda x: diff.denoise(apply, None, x, jnp.array([200, 700])))(xt)
    np.testing.assert_allclose(x0_hat, c, atol=1e-3)
    # a model that predicts ε̂ = 0 still gives finite samples of the right shape
    zero = lambda p, x, t: (jnp.zeros_like(x), jnp.full_like(x, 0.5))  # noqa: E731
    out = diff.respace(20).sampler(zero)(None, jax.random.PRNGKey(0), (2, 8, 8))
    assert out.shape == (2, 8, 8) and np.isfinite(np.asarray(out)).all()
