"""Tests for jaxeit.metrics."""

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxeit import metrics  # noqa: E402


def _random_pair(shape, seed):
    """Smooth-ish random reference and a noisy reconstruction of it."""
    rng = np.random.default_rng(seed)
    ref = rng.random(shape)
    x = ref + 0.2 * rng.standard_normal(shape)
    return x, ref


def _disk(n, radius, center=(0.0, 0.0)):
    """Boolean disk on an n x n grid covering [-1, 1]^2."""
    t = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(t, t)
    return (xx - center[0]) ** 2 + (yy - center[1]) ** 2 <= radius**2


# --------------------------------------------------------------------------
# comparisons with scikit-image
# --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(64, 64), (128, 128), (37, 50)])
def test_ssim_psnr_match_skimage(shape):
    skm = pytest.importorskip("skimage.metrics")
    x, ref = _random_pair(shape, seed=shape[0])
    dr = float(ref.max() - ref.min())
    expected_ssim = skm.structural_similarity(
        x, ref, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=dr)
    expected_psnr = skm.peak_signal_noise_ratio(ref, x, data_range=dr)
    assert abs(float(metrics.ssim(x, ref, data_range=dr)) - expected_ssim) < 1e-4
    assert abs(float(metrics.ssim(x, ref)) - expected_ssim) < 1e-4  # default range
    assert abs(float(metrics.psnr(x, ref, data_range=dr)) - expected_psnr) < 1e-4
    assert abs(float(metrics.psnr(x, ref)) - expected_psnr) < 1e-4


@pytest.mark.parametrize("shape", [(128, 128), (40, 33)])
def test_ssim_uniform_matches_skimage_defaults(shape):
    """The DGM paper's convention: skimage's default SSIM (uniform 7×7 window, sample covariance)."""
    skm = pytest.importorskip("skimage.metrics")
    x, ref = _random_pair(shape, seed=shape[1])
    dr = float(ref.max() - ref.min())
    expected = skm.structural_similarity(x, ref, data_range=dr)
    assert abs(float(metrics.ssim_uniform(x, ref)) - expected) < 1e-6
    assert abs(float(metrics.ssim_uniform(x, ref, data_range=2 * dr))
               - skm.structural_similarity(x, ref, data_range=2 * dr)) < 1e-6


def test_ssim_float32_and_small_window_match_skimage():
    skm = pytest.importorskip("skimage.metrics")
    x, ref = _random_pair((48, 48), seed=5)
    x32, ref32 = x.astype(np.float32), ref.astype(np.float32)
    expected = skm.structural_similarity(
        x32, ref32, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=1.0)
    got = metrics.ssim(jnp.asarray(x32), jnp.asarray(ref32), data_range=1.0)
    assert got.dtype == jnp.float32
    assert abs(float(got) - expected) < 1e-4
    # sigma=1.0 -> skimage radius int(3.5 + 0.5) = 4, i.e. a 9-tap window
    expected = skm.structural_similarity(
        x, ref, gaussian_weights=True, sigma=1.0,
        use_sample_covariance=False, data_range=1.0)
    got = metrics.ssim(x, ref, data_range=1.0, sigma=1.0, win_size=9)
    assert abs(float(got) - expected) < 1e-4


def test_batched_equals_per_image_and_jit():
    x, ref = _random_pair((2, 3, 64, 64), seed=1)
    for fn in (metrics.ssim, metrics.psnr, metrics.mse, metrics.relative_error,
               metrics.absolute_error, metrics.dynamic_range, metrics.rcr):
        batched = fn(x, ref)
        assert batched.shape == (2, 3)
        single = np.array([[fn(x[i, j], ref[i, j]) for j in range(3)] for i in range(2)])
        np.testing.assert_allclose(batched, single, rtol=1e-10, atol=1e-12)
    mask = _disk(64, 0.9)
    np.testing.assert_allclose(jax.jit(metrics.ssim)(x, ref, mask),
                               metrics.ssim(x, ref, mask), rtol=1e-12)


# --------------------------------------------------------------------------
# hand-made cases
# --------------------------------------------------------------------------


def test_pixelwise_metrics_by_hand():
    ref = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    x = jnp.array([[1.0, 2.0], [3.0, 6.0]])
    mask = jnp.array([[True, True], [False, True]])
    assert np.isclose(metrics.mse(x, ref), 1.0)  # 4 / 4
    assert np.isclose(metrics.mse(x, ref, mask), 4.0 / 3.0)
    assert np.isclose(metrics.relative_error(x, ref), 2.0 / 10.0)
    assert np.isclose(metrics.relative_error(x, ref, mask), 2.0 / 7.0)
    assert np.isclose(metrics.absolute_error(x, ref), 0.5)
    assert np.isclose(metrics.absolute_error(x, ref, mask), 2.0 / 3.0)
    assert np.isclose(metrics.dynamic_range(x, ref), 5.0 / 3.0)
    assert np.isclose(metrics.dynamic_range(x, ref, mask), 5.0 / 3.0)
    # PSNR with the default data range: range of ref inside the mask (4 - 1)
    assert np.isclose(metrics.psnr(x, ref, mask), 10 * np.log10(9.0 / (4.0 / 3.0)))
    assert np.isclose(metrics.psnr(x, ref, data_range=2.0), 10 * np.log10(4.0))


def test_perfect_reconstruction():
    domain = _disk(64, 1.0)
    ref = 1.0 + _disk(64, 0.3, (0.2, 0.1)).astype(float)
    out = metrics.all_metrics(ref, ref, domain)
    assert set(out) == {"MSE", "PSNR", "SSIM", "RE", "AE", "DR"}
    assert float(out["MSE"]) == 0.0 and float(out["RE"]) == 0.0
    assert float(out["AE"]) == 0.0 and float(out["DR"]) == 1.0
    assert np.isinf(out["PSNR"]) and np.isclose(out["SSIM"], 1.0)
    assert np.isclose(metrics.rcr(ref, ref, domain), 1.0)


def test_rcr_double_radius_disk():
    n = 256
    domain = _disk(n, 1.0)
    ref = 1.0 + 1.0 * _disk(n, 0.2, (0.3, -0.2))
    x = 1.0 + 0.3 * _disk(n, 0.4, (0.3, -0.2))  # weaker contrast, double radius
    value = float(metrics.rcr(x, ref, domain))
    assert abs(value - 4.0) < 0.1
    # resistive inclusion (negative deviation) is detected as well
    x_res = 1.0 - 0.5 * _disk(n, 0.2, (0.3, -0.2))
    assert abs(float(metrics.rcr(x_res, ref, domain)) - 1.0) < 1e-12


def test_masked_ssim_ignores_outside_pixels():
    x, ref = _random_pair((64, 64), seed=3)
    mask = _disk(64, 0.7)
    # changing pixels far outside the mask (beyond the window reach) is ignored
    x2 = np.array(x)
    x2[:3, :3] = 100.0
    assert np.isclose(metrics.ssim(x, ref, mask, data_range=1.0),
                      metrics.ssim(x2, ref, mask, data_range=1.0))
    assert not np.isclose(metrics.ssim(x, ref, data_range=1.0),
                          metrics.ssim(x2, ref, data_range=1.0))


# --------------------------------------------------------------------------
# KTC 2023 score
# --------------------------------------------------------------------------


def _ktc_reference_score(truth, reco):
    """Official KTC2023 scoring, with convolve2d replaced by fftconvolve."""
    from scipy.signal import fftconvolve

    def ssim_official(t, r):
        ws = 160
        wr = np.arange(-ws, ws + 1)
        xx, yy = np.meshgrid(wr, wr)
        ker = np.exp(-0.5 * (xx**2 + yy**2) / 80.0**2) / np.sqrt(2 * np.pi)
        conv = lambda a: fftconvolve(a, ker, mode="same")  # noqa: E731
        corr = conv(np.ones(t.shape))
        gt, gr = conv(t) / corr, conv(r) / corr
        s_t = conv(t * t) / corr - gt**2
        s_r = conv(r * r) / corr - gr**2
        s_tr = conv(t * r) / corr - gt * gr
        num = (2 * gt * gr + 1e-4) * (2 * s_tr + 9e-4)
        den = (gt**2 + gr**2 + 1e-4) * (s_t + s_r + 9e-4)
        return np.mean(num / den)

    scores = [ssim_official((truth == c).astype(float), (reco == c).astype(float))
              for c in (2, 1)]
    return 0.5 * sum(scores)


def _ktc_phantom(shift=0):
    seg = np.zeros((256, 256), dtype=int)
    seg[_disk(256, 0.25, (-0.4 + shift, 0.0))] = 2
    seg[_disk(256, 0.2, (0.4 - shift, 0.3))] = 1
    return seg


def test_ktc_score_cases():
    truth = _ktc_phantom()
    assert np.isclose(metrics.ktc_score(truth, truth), 1.0)
    # disjoint masks: conductive/resistive inclusions moved elsewhere
    reco = np.zeros_like(truth)
    reco[_disk(256, 0.25, (0.0, -0.6))] = 2
    reco[_disk(256, 0.2, (-0.5, -0.6))] = 1
    assert not np.any((reco == 2) & (truth == 2))
    assert float(metrics.ktc_score(reco, truth)) < 0.5
    assert float(metrics.ktc_score(np.zeros((128, 128), int), truth)) == 0.0


def test_ktc_score_matches_official_and_batches():
    pytest.importorskip("scipy")
    truth = _ktc_phantom()
    recos = np.stack([_ktc_phantom(shift=s) for s in (0.05, 0.2)])
    expected = [_ktc_reference_score(truth, r) for r in recos]
    got = jax.jit(metrics.ktc_score)(recos, truth)
    assert got.shape == (2,)
    np.testing.assert_allclose(got, expected, atol=1e-8)
    assert expected[0] > expected[1]


def test_ktc_soft_score_is_the_score_on_one_hot_probabilities_and_differentiable():
    truth = _ktc_phantom()
    recos = np.stack([_ktc_phantom(shift=s) for s in (0.05, 0.2)])
    onehot = jax.nn.one_hot(recos, 3, dtype=jnp.float64)
    np.testing.assert_allclose(metrics.ktc_soft_score(onehot, truth), metrics.ktc_score(recos, truth), atol=1e-12)
    # halfway between a poor guess and the truth scores between the two, and the gradient points to the truth
    poor = onehot[1]
    half = 0.5 * (poor + jax.nn.one_hot(truth, 3, dtype=jnp.float64))
    assert float(metrics.ktc_soft_score(poor, truth)) < float(metrics.ktc_soft_score(half, truth)) < 1.0
    grad = jax.grad(lambda p: metrics.ktc_soft_score(p, truth))(half)
    assert np.isfinite(grad).all()
    wrong = (np.asarray(poor[..., 2]) == 1) & (truth != 2)      # pixels called conductive that are not
    assert float(jnp.mean(grad[..., 2][wrong])) < 0.0
    with pytest.raises(ValueError, match=r"\(\.\.\., 256, 256, 3\)"):
        metrics.ktc_soft_score(onehot[..., :2], truth)


def test_paper_metrics_score_the_whole_square_with_zero_outside():
    skm = pytest.importorskip("skimage.metrics")
    n = 64
    t = np.linspace(-1, 1, n)
    xx, yy = np.meshgrid(t, t)
    domain = xx**2 + yy**2 <= 0.95**2
    truth = np.where((xx - 0.3) ** 2 + yy**2 < 0.1, 1.5, 1.0)
    reco = truth + 0.05 * np.random.default_rng(0).standard_normal((n, n))
    reco_out = np.where(domain, reco, 7.0)                     # garbage outside: ignored
    got = {k: float(v) for k, v in metrics.paper_metrics(reco_out, truth, domain).items()}
    x, ref = np.where(domain, reco, 0.0), np.where(domain, truth, 0.0)
    assert abs(got["MSE"] - np.mean((x - ref) ** 2)) < 1e-12
    assert abs(got["AE"] - np.mean(np.abs(x - ref))) < 1e-12
    assert abs(got["RE"] - np.abs(x - ref).sum() / np.abs(ref).sum()) < 1e-12
    assert abs(got["DR"] - np.ptp(x) / np.ptp(ref)) < 1e-12
    assert abs(got["SSIM"] - skm.structural_similarity(x, ref, data_range=np.ptp(ref))) < 1e-6
    assert abs(got["PSNR"] - skm.peak_signal_noise_ratio(ref, x, data_range=np.ptp(ref))) < 1e-8
