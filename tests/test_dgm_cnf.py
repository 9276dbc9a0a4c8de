"""Tests of the conditional normalising flow: invertibility, exact log-determinant, sampling, I/O."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxeit  # noqa: F401  (float64 available)
from jaxeit.dgm.cnf import CNF, CNFConfig, haar_squeeze, haar_unsqueeze, nll_loss, train_cnf
from jaxeit.dgm.training import FitConfig

TINY = dict(levels=2, blocks=2, hidden=(8, 8), cond_channels=(4, 4), cond_width=4)


def _perturbed(config, seed, scale=0.05):
    """``(graphdef, params, rest)`` of a flow whose zero-initialised layers are perturbed (not the identity)."""
    model = CNF.init(config)
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten(model.params)
    leaves = [jnp.asarray(np.asarray(x) + scale * rng.standard_normal(x.shape), x.dtype) for x in leaves]
    return model.graphdef, jax.tree_util.tree_unflatten(treedef, leaves), model.rest


def _jitted(graphdef, params, rest):
    """Jitted ``forward(x, gn)`` and ``inverse(z, gn)`` (eager NNX calls are slow)."""
    fwd = jax.jit(lambda p, r, x, gn: nnx.merge(graphdef, p, r).forward(x, gn))
    inv = jax.jit(lambda p, r, z, gn: nnx.merge(graphdef, p, r).inverse(z, gn))
    return (lambda x, gn: fwd(params, rest, x, gn)), (lambda z, gn: inv(params, rest, z, gn))


def _images(seed, shape, dtype):
    """Two random image batches around 1 (host RNG: no kernels to compile)."""
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(1 + 0.3 * rng.standard_normal(shape), dtype) for _ in range(2))


@pytest.fixture(scope="module")
def flow64():
    """A perturbed float64 flow on 4×4 images (two scales: 2×2×4, then 1×1×8 after the split)."""
    config = CNFConfig(image_size=4, **TINY, dtype="float64")
    return config, _perturbed(config, 11)


@pytest.fixture(scope="module")
def flow32():
    """A perturbed float32 flow on 8×8 images (the production dtype)."""
    config = CNFConfig(image_size=8, **TINY)
    return config, _perturbed(config, 12)


def test_haar_squeeze_is_orthonormal_and_invertible():
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 4, 6, 3)), jnp.float32)
    y = jax.jit(haar_squeeze)(x)
    assert y.shape == (2, 2, 3, 12)
    np.testing.assert_allclose(jnp.sum(y**2), jnp.sum(x**2), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(haar_unsqueeze)(y), x, atol=1e-6)


@pytest.mark.parametrize("which", ["flow64", "flow32"])
def test_flow_is_invertible(which, request):
    config, parts = request.getfixturevalue(which)
    forward, inverse = _jitted(*parts)
    n = config.image_size
    x, gn = _images(0, (3, n, n), config.jnp_dtype)
    z, logdet = forward(x, gn)
    assert z.shape == (3, n * n) and logdet.shape == (3,) and z.dtype == config.jnp_dtype
    np.testing.assert_allclose(inverse(z, gn), x, atol=1e-5)
    zz = jnp.asarray(np.random.default_rng(1).standard_normal((3, n * n)), config.jnp_dtype)
    np.testing.assert_allclose(forward(inverse(zz, gn), gn)[0], zz, atol=1e-5)
    assert sum(a * b * c for a, b, c in nnx.merge(*parts).latent_shapes()) == n * n


def test_logdet_equals_brute_force_jacobian(flow64):
    config, parts = flow64
    forward, _ = _jitted(*parts)
    x, gn = _images(0, (2, 4, 4), jnp.float64)
    _, logdet = forward(x, gn)
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda v, c: forward(v.reshape(1, 4, 4), c[None])[0][0])))(
        x.reshape(2, 16), gn)
    assert jac.shape == (2, 16, 16)
    sign, brute = jnp.linalg.slogdet(jac)
    assert np.all(np.asarray(sign) != 0)
    assert np.all(np.abs(np.asarray(logdet)) > 1.0)        # a non-trivial Jacobian
    np.testing.assert_allclose(logdet, brute, rtol=1e-10, atol=1e-10)


def test_training_sampling_and_io(tmp_path):
    # one scale, one conditional block: the smallest flow that exercises training, sampling and I/O
    config = CNFConfig(image_size=8, levels=1, blocks=1, hidden=(8,), cond_channels=(4,), cond_width=4, n_samples=5,
                       fit=FitConfig(epochs=2, batch_size=4, lr=1e-3, weight_decay=1e-5, grad_clip=1.0, log_every=1))
    # an untrained flow is the identity up to the fixed maps: log-det of the normalisation only
    fresh = CNF.init(config)
    x, gn = _images(0, (8, 8, 8), jnp.float32)
    forward, _ = _jitted(fresh.graphdef, fresh.params, fresh.rest)
    np.testing.assert_allclose(forward(x, gn)[1], -64 * np.log(config.scale), rtol=1e-6)

    model = train_cnf(config, {"image": np.asarray(x), "gn_image": np.asarray(gn)}, workdir=tmp_path,
                      progress=False, log=None)
    losses = [h["loss"] for h in model.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    xs = model.sample(np.asarray(gn[:3]), jax.random.PRNGKey(0))
    assert xs.shape == (5, 3, 8, 8) and np.all(np.isfinite(xs))
    res = model.reconstruct(np.asarray(gn[:3]), jax.random.PRNGKey(0))
    mean, std = res.image, res.extras["std"]
    assert res.status == "done" and res.extras["samples"].shape == (5, 3, 8, 8)
    np.testing.assert_allclose(mean, xs.mean(0), rtol=1e-6)
    assert std.shape == (3, 8, 8) and np.all(std > 0)
    loaded = CNF.load(tmp_path / "cnf.npz")
    np.testing.assert_array_equal(loaded.sample(np.asarray(gn[:3]), jax.random.PRNGKey(0)), xs)
    with pytest.raises(ValueError, match="8x8"):
        model.sample(np.zeros((2, 4, 4)), jax.random.PRNGKey(0))


def test_nll_loss_and_config_errors(flow32):
    config, (graphdef, params, rest) = flow32
    x, gn = _images(0, (2, 8, 8), jnp.float32)

    @jax.jit
    def both(x, gn, key):
        flow = nnx.merge(graphdef, params, rest)
        return nll_loss(flow, x, gn, key, 0.0)[0], flow.log_prob(x, gn)

    loss, lp = both(x, gn, jax.random.PRNGKey(0))
    np.testing.assert_allclose(loss, -jnp.mean(lp) / 64, rtol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        CNFConfig(image_size=12, levels=3)
    with pytest.raises(ValueError, match="one entry per level"):
        CNFConfig(image_size=16, levels=4, hidden=(8, 8))
