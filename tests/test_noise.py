"""Tests for jaxeit.noise."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxeit.noise import add_noise, measured_snr_db, noise_std  # noqa: E402


def _voltages(batch=2000, m=208, seed=0):
    """Random voltage batch with per-sample scales spanning 3 decades."""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.uniform(-3, 0, size=(batch, 1))
    return jnp.asarray(scale * rng.standard_normal((batch, m)) + 0.5 * scale)


@pytest.mark.parametrize("snr", [20.0, 40.0, 60.0])
def test_measured_snr_matches_request(snr):
    v = _voltages()
    noisy = add_noise(v, snr, jax.random.key(1))
    measured = measured_snr_db(v, noisy)
    assert measured.shape == (v.shape[0],)
    assert abs(float(jnp.mean(measured)) - snr) < 0.1


def test_noise_std_definition_and_per_sample_levels():
    v = jnp.array([[3.0, 4.0], [30.0, 40.0]])
    std = noise_std(v, 20.0)
    assert std.shape == (2, 1)
    # ||v|| / sqrt(M) * 10^(-SNR/20) = 5 / sqrt(2) * 0.1
    np.testing.assert_allclose(std[:, 0], [0.5 / np.sqrt(2), 5.0 / np.sqrt(2)])


def test_axis_argument_and_per_sample_snr():
    v = _voltages(batch=500, m=64).T  # measurements along axis 0
    snr = jnp.linspace(20.0, 50.0, 500)
    noisy = add_noise(v, snr, jax.random.key(3), axis=0)
    measured = measured_snr_db(v, noisy, axis=0)
    assert measured.shape == (500,)
    # per-sample SNR: the residual is zero-mean with small spread (~0.5 dB at M=64)
    resid = measured - snr
    assert abs(float(jnp.mean(resid))) < 0.1
    assert float(jnp.std(resid)) < 1.0


def test_reproducible_and_key_dependent():
    v = _voltages(batch=4, m=32)
    a = add_noise(v, 30.0, jax.random.key(7))
    b = add_noise(v, 30.0, jax.random.key(7))
    c = add_noise(v, 30.0, jax.random.key(8))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    assert a.shape == v.shape and a.dtype == v.dtype


def test_jit_and_complex():
    v = _voltages(batch=1000, m=128)
    jitted = jax.jit(add_noise)
    np.testing.assert_allclose(jitted(v, 30.0, jax.random.key(0)),
                               add_noise(v, 30.0, jax.random.key(0)))
    vc = v + 1j * v[::-1]
    noisy = add_noise(vc, 30.0, jax.random.key(0))
    assert noisy.dtype == vc.dtype
    assert abs(float(jnp.mean(measured_snr_db(vc, noisy))) - 30.0) < 0.1


def test_nan_and_inf_raise():
    v = _voltages(batch=2, m=8)
    with pytest.raises(ValueError, match="NaN"):
        add_noise(v.at[0, 3].set(jnp.nan), 30.0, jax.random.key(0))
    with pytest.raises(ValueError, match="inf"):
        add_noise(v.at[1, 0].set(jnp.inf), 30.0, jax.random.key(0))
    with pytest.raises(ValueError, match="snr_db"):
        add_noise(v, float("nan"), jax.random.key(0))
    with pytest.raises(ValueError, match="snr_db"):
        noise_std(v, jnp.inf)
