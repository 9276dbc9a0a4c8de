"""Image-quality metrics for EIT reconstructions.

Conventions shared by all functions:

* Images have shape ``(..., H, W)``; leading batch dimensions are allowed and
  each metric returns one value per image, i.e. an array of shape ``(...)``.
  ``x`` is the reconstruction, ``ref`` the ground truth; both must have the
  same shape.
* ``mask`` is an optional boolean domain mask broadcastable to
  ``(..., H, W)`` (typically ``(H, W)``, e.g. the disk inside a square pixel
  grid). Only pixels where ``mask`` is True enter a metric; ``None`` means the
  whole image. Outside the mask the reconstruction is replaced by the
  reference (and a non-finite reference by 0), so windowed metrics (SSIM) see
  no artificial edge at the domain boundary whatever a method puts outside
  its domain (0, NaN, or an extrapolation).
* Computations use the floating dtype obtained by promoting the inputs with a
  Python float (integer/bool images become the default float dtype; float32
  stays float32). Results have that dtype.
* Everything is pure JAX. The public metrics are already wrapped in
  ``jax.jit`` (so eager calls are fast) and can be used inside other jitted
  or vmapped code. Window parameters (``win_size``, ``sigma``) and
  ``threshold`` are static arguments and must be Python numbers; shape
  checks happen at trace time.

References:
    Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error
    visibility to structural similarity", IEEE TIP 13 (2004) (SSIM).
    Kuopio Tomography Challenge 2023 scoring function (``ktc_score``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "mse",
    "psnr",
    "ssim",
    "ssim_uniform",
    "paper_metrics",
    "relative_error",
    "absolute_error",
    "dynamic_range",
    "rcr",
    "ktc_score",
    "ktc_soft_score",
    "all_metrics",
]

_IMAGE_AXES = (-2, -1)
_HIGHEST = jax.lax.Precision.HIGHEST

# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def _prepare(x, ref, mask):
    """Cast images to a common float dtype and broadcast the mask.

    Returns ``(x, ref, mask)`` with ``mask`` a boolean array of ``x.shape``.
    """
    x = jnp.asarray(x)
    ref = jnp.asarray(ref)
    if x.shape != ref.shape:
        raise ValueError(f"Shape mismatch: x {x.shape} vs ref {ref.shape}.")
    if x.ndim < 2:
        raise ValueError(f"Images must have shape (..., H, W); got {x.shape}.")
    dtype = jnp.result_type(float, x, ref)
    x = x.astype(dtype)
    ref = ref.astype(dtype)
    if mask is None:
        mask = jnp.ones(x.shape, dtype=bool)
    else:
        mask = jnp.broadcast_to(jnp.asarray(mask, dtype=bool), x.shape)
        ref = jnp.where(mask | jnp.isfinite(ref), ref, 0.0)
        x = jnp.where(mask, x, ref)  # outside the domain: no difference, no edge
    return x, ref, mask


def _masked_mean(values, mask):
    """Mean of ``values`` over the pixels where ``mask`` is True, per image."""
    total = jnp.sum(jnp.where(mask, values, 0), axis=_IMAGE_AXES)
    count = jnp.sum(mask, axis=_IMAGE_AXES)
    return total / count


def _masked_sum(values, mask):
    """Sum of ``values`` over the pixels where ``mask`` is True, per image."""
    return jnp.sum(jnp.where(mask, values, 0), axis=_IMAGE_AXES)


def _masked_range(img, mask):
    """``max - min`` of ``img`` over the masked pixels, per image."""
    hi = jnp.max(jnp.where(mask, img, -jnp.inf), axis=_IMAGE_AXES)
    lo = jnp.min(jnp.where(mask, img, jnp.inf), axis=_IMAGE_AXES)
    return hi - lo


def _masked_median(img, mask):
    """Median of ``img`` over the masked pixels, per image (NaN-aware)."""
    flat = jnp.where(mask, img, jnp.nan).reshape(img.shape[:-2] + (-1,))
    return jnp.nanmedian(flat, axis=-1)


def _data_range(ref, mask, data_range):
    """Explicit ``data_range`` or the default ``max(ref) - min(ref)`` in mask."""
    if data_range is None:
        return _masked_range(ref, mask)
    return jnp.asarray(data_range, dtype=ref.dtype)


def _separable_filter(img, mat_h, mat_w):
    """Apply a separable linear filter given by its two 1-D matrices.

    ``img`` has shape ``(..., H, W)``; ``mat_h`` is ``(H, H)`` and ``mat_w``
    ``(W, W)`` with row ``i`` holding the weights that produce output pixel
    ``i`` (boundary handling is folded into the matrices). Returns
    ``mat_h @ img @ mat_w.T``. Highest matmul precision keeps accelerators
    from silently using TF32/bf16.
    """
    out = jnp.matmul(mat_h, img, precision=_HIGHEST)
    return jnp.matmul(out, mat_w.T, precision=_HIGHEST)


# --------------------------------------------------------------------------
# pixel-wise error metrics
# --------------------------------------------------------------------------


@jax.jit
def mse(x, ref, mask=None):
    """Mean squared error.

    ``MSE = mean_{mask} (x - ref)^2``.

    Args:
        x: reconstruction, shape ``(..., H, W)``.
        ref: ground truth, same shape.
        mask: optional boolean mask broadcastable to ``(..., H, W)``.

    Returns:
        Float array of shape ``(...)`` (units of the image squared).
    """
    x, ref, mask = _prepare(x, ref, mask)
    return _masked_mean((x - ref) ** 2, mask)


@jax.jit
def psnr(x, ref, mask=None, data_range=None):
    """Peak signal-to-noise ratio in dB.

    ``PSNR = 10 log10(data_range^2 / MSE)`` with ``MSE`` from :func:`mse`
    (over the mask). This equals
    ``skimage.metrics.peak_signal_noise_ratio(ref, x, data_range=data_range)``
    when no mask is used.

    Args:
        x: reconstruction, shape ``(..., H, W)``.
        ref: ground truth, same shape.
        mask: optional boolean mask broadcastable to ``(..., H, W)``.
        data_range: peak-to-peak range of the signal; scalar or array
            broadcastable to ``(...)``. Default: ``max(ref) - min(ref)``
            computed inside the mask, per image (unlike skimage, whose default
            is derived from the dtype).

    Returns:
        Float array of shape ``(...)`` in dB (``inf`` if ``x == ref``).
    """
    x, ref, mask = _prepare(x, ref, mask)
    rng = _data_range(ref, mask, data_range)
    return 10.0 * jnp.log10(rng**2 / _masked_mean((x - ref) ** 2, mask))


@jax.jit
def relative_error(x, ref, mask=None):
    """Relative L1 error (RE).

    ``RE = sum_{mask} |x - ref| / sum_{mask} |ref|``.

    Args:
        x: reconstruction, shape ``(..., H, W)``.
        ref: ground truth, same shape.
        mask: optional boolean mask broadcastable to ``(..., H, W)``.

    Returns:
        Dimensionless float array of shape ``(...)``; 0 is perfect.
    """
    x, ref, mask = _prepare(x, ref, mask)
    return _masked_sum(jnp.abs(x - ref), mask) / _masked_sum(jnp.abs(ref), mask)


@jax.jit
def absolute_error(x, ref, mask=None):
    """Absolute (mean L1) error (AE).

    ``AE = mean_{mask} |x - ref|``, i.e. the L1 error normalised by the number
    of domain pixels (so it does not depend on the grid resolution).

    Args:
        x: reconstruction, shape ``(..., H, W)``.
        ref: ground truth, same shape.
        mask: optional boolean mask broadcastable to ``(..., H, W)``.

    Returns:
        Float array of shape ``(...)`` in image units; 0 is perfect.
    """
    x, ref, mask = _prepare(x, ref, mask)
    return _masked_mean(jnp.abs(x - ref), mask)


@jax.jit
def dynamic_range(x, ref, mask=None):
    """Dynamic range ratio (DR).

    ``DR = (max x - min x) / (max ref - min ref)`` with extrema over the mask.

    Args:
        x: reconstruction, shape ``(..., H, W)``.
        ref: ground truth, same shape.
        mask: optional boolean mask broadcastable to ``(..., H, W)``.

    Returns:
        Dimensionless float array of shape ``(...)``; 1 is ideal, < 1 means a
        contrast-attenuated reconstruction.
    """
    x, ref, mask = _prepare(x, ref, mask)
    return _masked_range(x, mask) / _masked_range(ref, mask)


# --------------------------------------------------------------------------
# relative coverage ratio
# --------------------------------------------------------------------------


def _inclusion_area(img, mask, threshold):
    """Number of inclusion pixels of ``img`` per image (see :func:`rcr`)."""
    background = _masked_median(img, mask)[..., None, None]
    deviation = jnp.abs(img - background)
    peak = jnp.max(jnp.where(mask, deviation, 0), axis=_IMAGE_AXES)[..., None, None]
    inclusion = mask & (deviation > threshold * peak)
    return jnp.sum(inclusion, axis=_IMAGE_AXES)


@functools.partial(jax.jit, static_argnames=("threshold",))
def rcr(x, ref, mask=None, threshold=0.5):
    """Relative coverage ratio (RCR, Diff-INR paper eq. 19).

    ``RCR = area(inclusion of x) / area(inclusion of ref)`` where, for each
    image separately, the background level ``b`` is the median of the image
    inside the mask, the deviation is ``d = |img - b|``, and the inclusion is
    the set of mask pixels with ``d > threshold * max_{mask} d``. Absolute
    deviations are used so conductive and resistive inclusions both count.

    Args:
        x: reconstruction, shape ``(..., H, W)``.
        ref: ground truth, same shape.
        mask: optional boolean mask broadcastable to ``(..., H, W)``.
        threshold: fraction of the maximum absolute deviation (Python float,
            default 0.5).

    Returns:
        Dimensionless float array of shape ``(...)``; 1 for a perfect
        reconstruction, > 1 when the inclusion is over-estimated (a disk
        reconstructed with twice the radius gives ~4). ``inf``/``nan`` if
        ``ref`` is constant on the mask (no inclusion), since the strict
        inequality then selects no pixel. The median background assumes the
        inclusions cover less than half of the domain.
    """
    x, ref, mask = _prepare(x, ref, mask)
    area_x = _inclusion_area(x, mask, threshold)
    area_ref = _inclusion_area(ref, mask, threshold)
    return area_x.astype(x.dtype) / area_ref.astype(x.dtype)


# --------------------------------------------------------------------------
# SSIM (skimage / Wang et al. 2004 convention)
# --------------------------------------------------------------------------


def _gaussian_taps(win_size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of length ``win_size`` (scipy.ndimage style)."""
    radius = (win_size - 1) // 2
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (k / sigma) ** 2)
    return taps / taps.sum()


def _reflect_filter_matrix(n: int, taps: np.ndarray) -> np.ndarray:
    """``(n, n)`` matrix of a 1-D correlation with scipy ``mode='reflect'``.

    scipy's 'reflect' extends the signal by mirroring about the edge,
    including the edge sample (``d c b a | a b c d | d c b a``), i.e. it is
    periodic with period ``2n``; the boundary is folded into the matrix.
    """
    radius = (len(taps) - 1) // 2
    mat = np.zeros((n, n), dtype=np.float64)
    rows = np.arange(n)
    for offset, w in zip(range(-radius, radius + 1), taps):
        src = np.mod(rows + offset, 2 * n)
        src = np.where(src >= n, 2 * n - 1 - src, src)
        np.add.at(mat, (rows, src), w)
    return mat


@functools.partial(jax.jit, static_argnames=("sigma", "win_size", "window", "sample_covariance"))
def ssim(
    x,
    ref,
    mask=None,
    data_range=None,
    sigma: float = 1.5,
    win_size: int = 11,
    k1: float = 0.01,
    k2: float = 0.03,
    window: str = "gaussian",
    sample_covariance: bool = False,
):
    """Mean structural similarity index (Gaussian-window SSIM, Wang et al.).

    Definition (population statistics, as in Wang et al. 2004): with the
    Gaussian filter ``G`` (std ``sigma``, truncated to ``win_size`` taps per
    axis, weights normalised to sum 1, boundary mode scipy 'reflect'),

        mu_x = G*x, mu_y = G*ref,
        s_xx = G*(x^2) - mu_x^2, s_yy = G*(ref^2) - mu_y^2,
        s_xy = G*(x ref) - mu_x mu_y,
        C1 = (k1 L)^2, C2 = (k2 L)^2 with L = data_range,
        S = (2 mu_x mu_y + C1)(2 s_xy + C2)
            / ((mu_x^2 + mu_y^2 + C1)(s_xx + s_yy + C2)).

    The SSIM map ``S`` is cropped by ``pad = (win_size - 1) // 2`` pixels on
    every side (to drop border effects) and averaged. Without a mask this
    equals ``skimage.metrics.structural_similarity(x, ref,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=data_range)`` for the defaults (skimage truncates at 3.5 sigma,
    giving the same 11-tap window). With a mask, the cropped map is averaged
    only over the pixels where the (equally cropped) mask is True; the
    filtering itself still uses the full image.

    Args:
        x: reconstruction, shape ``(..., H, W)`` with ``H, W >= win_size``.
        ref: ground truth, same shape.
        mask: optional boolean mask broadcastable to ``(..., H, W)``.
        data_range: dynamic range ``L``; scalar or array broadcastable to
            ``(...)``. Default: ``max(ref) - min(ref)`` inside the mask, per
            image.
        sigma: Gaussian standard deviation in pixels (Python float).
        win_size: odd window length in pixels (Python int).
        k1, k2: stabilising constants.
        window: ``"gaussian"`` (above) or ``"uniform"``: a ``win_size`` × ``win_size`` box
            (skimage's default window, ``gaussian_weights=False``).
        sample_covariance: scale variances and covariance by NP/(NP − 1), NP =
            ``win_size``² (skimage's ``use_sample_covariance``, its default with the
            uniform window). See :func:`ssim_uniform` for skimage's defaults together.

    Returns:
        Float array of shape ``(...)``; 1 for identical images.
    """
    if win_size % 2 != 1 or win_size < 1:
        raise ValueError(f"win_size must be a positive odd integer; got {win_size}.")
    if sigma <= 0:
        raise ValueError(f"sigma must be positive; got {sigma}.")
    if window not in ("gaussian", "uniform"):
        raise ValueError(f"window must be 'gaussian' or 'uniform'; got {window!r}.")
    x, ref, mask = _prepare(x, ref, mask)
    height, width = x.shape[-2:]
    if height < win_size or width < win_size:
        raise ValueError(
            f"win_size {win_size} exceeds the image extent {(height, width)}."
        )
    rng = _data_range(ref, mask, data_range)[..., None, None]

    taps = _gaussian_taps(win_size, sigma) if window == "gaussian" else np.full(win_size, 1.0 / win_size)
    mat_h = jnp.asarray(_reflect_filter_matrix(height, taps), dtype=x.dtype)
    mat_w = jnp.asarray(_reflect_filter_matrix(width, taps), dtype=x.dtype)

    def blur(img):
        return _separable_filter(img, mat_h, mat_w)

    mu_x, mu_y = blur(x), blur(ref)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(ref * ref) - mu_y**2
    cov = blur(x * ref) - mu_x * mu_y
    if sample_covariance:
        norm = win_size**2 / (win_size**2 - 1.0)
        var_x, var_y, cov = norm * var_x, norm * var_y, norm * cov
    c1 = (k1 * rng) ** 2
    c2 = (k2 * rng) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )

    pad = (win_size - 1) // 2
    crop = (..., slice(pad, height - pad), slice(pad, width - pad))
    return _masked_mean(ssim_map[crop], mask[crop])


def ssim_uniform(x, ref, mask=None, data_range=None):
    """SSIM with scikit-image's defaults: a uniform 7 × 7 window, sample covariance, K1 = 0.01,
    K2 = 0.03, the map cropped by 3 pixels (``skimage.metrics.structural_similarity(x, ref,
    data_range=L)``). The convention of the DGM comparison paper's code, which scores through
    ``dival.measure.SSIM`` on the whole 128 × 128 image with 0 outside the disk. ``data_range``
    defaults to ``max(ref) − min(ref)`` (inside ``mask``). Shapes as :func:`ssim`."""
    return ssim(x, ref, mask=mask, data_range=data_range, win_size=7, window="uniform", sample_covariance=True)


# --------------------------------------------------------------------------
# Kuopio Tomography Challenge 2023 score
# --------------------------------------------------------------------------

KTC_SHAPE = (256, 256)
_KTC_RADIUS = 80.0  # Gaussian std of the KTC SSIM window, in pixels
_KTC_C1 = 1e-4
_KTC_C2 = 9e-4


def _ktc_filter_matrix(n: int) -> np.ndarray:
    """``(n, n)`` banded Toeplitz matrix of the KTC Gaussian, zero padding.

    Kernel ``exp(-k^2 / (2 r^2))`` for ``|k| <= ceil(2 r)`` (321 taps for
    ``r = 80``), as in the official code; 'same'-size convolution with zeros
    outside the image. The official 2-D kernel is the outer product of this
    1-D kernel (its constant prefactor cancels in the normalisation).
    """
    half_width = math.ceil(2 * _KTC_RADIUS)
    offsets = np.subtract.outer(np.arange(n), np.arange(n)).astype(np.float64)
    kernel = np.exp(-0.5 * (offsets / _KTC_RADIUS) ** 2)
    return np.where(np.abs(offsets) <= half_width, kernel, 0.0)


def _ktc_ssim(truth, reco, mat):
    """KTC-style SSIM of two float binary images ``(..., 256, 256)``."""

    def local_mean(img):
        return _separable_filter(img, mat, mat) / norm

    # conv(ones) separates into the outer product of the row sums.
    row_sums = jnp.sum(mat, axis=1)
    norm = row_sums[:, None] * row_sums[None, :]
    mu_t, mu_r = local_mean(truth), local_mean(reco)
    var_t = local_mean(truth * truth) - mu_t**2
    var_r = local_mean(reco * reco) - mu_r**2
    cov = local_mean(truth * reco) - mu_t * mu_r
    num = (2 * mu_t * mu_r + _KTC_C1) * (2 * cov + _KTC_C2)
    den = (mu_t**2 + mu_r**2 + _KTC_C1) * (var_t + var_r + _KTC_C2)
    return jnp.mean(num / den, axis=_IMAGE_AXES)


@jax.jit
def ktc_score(reco, truth):
    """Kuopio Tomography Challenge 2023 segmentation score.

    Both inputs are segmentations of shape ``(..., 256, 256)`` with classes
    0 (water/background), 1 (resistive) and 2 (conductive); a pixel belongs
    to class ``c`` if ``|value - c| < 0.1`` (as in the official code). For
    ``c in (2, 1)`` the binary masks ``truth == c`` and ``reco == c`` (as
    floats) are compared with an SSIM that uses

    * a Gaussian window of std ``r = 80`` pixels truncated at
      ``ceil(2 r) = 160`` pixels, i.e. a 321 x 321 kernel,
    * 'same'-size zero-padded convolutions normalised by the convolution of
      an all-ones image (local means ``conv(a) / conv(1)``, local
      (co)variances ``conv(a b) / conv(1) - mu_a mu_b``),
    * constants ``c1 = 1e-4``, ``c2 = 9e-4``,

    and the SSIM map is averaged over the whole image. The score is the mean
    of the two class scores (1 is perfect). The Gaussian is separable, so
    the convolutions are done as two banded 256 x 256 matrix products.

    Args:
        reco: reconstructed segmentation ``(..., 256, 256)``, integer or float.
        truth: ground-truth segmentation ``(..., 256, 256)``.

    Returns:
        Float array of shape ``(...)`` (broadcast batch shape). A
        reconstruction whose trailing shape is not ``(256, 256)`` scores 0
        (a scalar 0.0 is returned, nothing is raised).

    Raises:
        ValueError: if ``truth`` does not have trailing shape ``(256, 256)``.
    """
    reco = jnp.asarray(reco)
    truth = jnp.asarray(truth)
    if truth.shape[-2:] != KTC_SHAPE or truth.ndim < 2:
        raise ValueError(f"Ground truth must have shape (..., 256, 256); got {truth.shape}.")
    dtype = jnp.result_type(float, reco, truth)
    if reco.ndim < 2 or reco.shape[-2:] != KTC_SHAPE:
        return jnp.zeros((), dtype=dtype)

    return _ktc_class_mean(truth, lambda c: _ktc_class_mask(reco, c, dtype), dtype)


def _ktc_class_mask(seg, c, dtype):
    """Float mask of class ``c`` in a segmentation (``|value - c| < 0.1``, as in the official code)."""
    return (jnp.abs(seg.astype(dtype) - c) < 0.1).astype(dtype)


def _ktc_class_mean(truth, reco_map, dtype):
    """Mean KTC SSIM over the inclusion classes 2 and 1: the truth's mask against ``reco_map(c)``."""
    mat = jnp.asarray(_ktc_filter_matrix(KTC_SHAPE[0]), dtype=dtype)
    scores = [_ktc_ssim(_ktc_class_mask(truth, c, dtype), reco_map(c), mat) for c in (2, 1)]
    return 0.5 * (scores[0] + scores[1])


def ktc_soft_score(probabilities, truth):
    """A differentiable surrogate of :func:`ktc_score`: the class masks of the reconstruction are
    replaced by its class probabilities.

    The same SSIM as the official score (Gaussian window of std 80 px, ``c1 = 1e-4``,
    ``c2 = 9e-4``) compares the truth's binary mask of class ``c`` with ``probabilities[..., c]``
    for ``c in (2, 1)``; the mean of the two is returned. For one-hot probabilities it equals
    ``ktc_score(argmax(probabilities), truth)``; a training loss ``1 - ktc_soft_score`` aims at
    the challenge's score where the cross-entropy aims at pixel accuracy (the score rewards the
    inclusions' shapes and penalises a missed small inclusion far more than a pixel count does).

    Args:
        probabilities: ``(..., 256, 256, 3)`` float class probabilities (water, resistive,
            conductive), e.g. a softmax of logits.
        truth: ``(..., 256, 256)`` integer ground-truth segmentation.

    Returns:
        Float array of shape ``(...)``.
    """
    probabilities = jnp.asarray(probabilities)
    truth = jnp.asarray(truth)
    if probabilities.shape[-3:] != (*KTC_SHAPE, 3) or truth.shape[-2:] != KTC_SHAPE:
        raise ValueError(f"ktc_soft_score: probabilities must have shape (..., 256, 256, 3) and truth (..., 256, 256); "
                         f"got {probabilities.shape} and {truth.shape}")
    return _ktc_class_mean(truth, lambda c: probabilities[..., c], probabilities.dtype)


# --------------------------------------------------------------------------
# convenience
# --------------------------------------------------------------------------


def paper_metrics(x, ref, domain) -> dict:
    """The six metrics in the DGM comparison paper's convention (its code: ``dival.measure`` and
    ``utils.py``): both images set to 0 outside the disk ``domain`` and scored on the whole square.

    MSE and AE are means over all pixels, PSNR and SSIM use the truth's range over the
    whole image (0 included) as data range, SSIM has scikit-image's default window
    (:func:`ssim_uniform`), RE = Σ|x − ref| / Σ|ref| and DR = range(x) / range(ref)
    over the whole image.

    Args:
        x, ref: reconstruction and truth, ``(..., H, W)`` (values outside ``domain`` are ignored).
        domain: boolean ``(H, W)`` mask of the disk.

    Returns:
        Dict ``"MSE"``, ``"PSNR"``, ``"SSIM"``, ``"RE"``, ``"AE"``, ``"DR"``, each of shape ``(...)``.
    """
    inside = jnp.asarray(domain, bool)
    x = jnp.where(inside, jnp.asarray(x), 0.0)
    ref = jnp.where(inside, jnp.asarray(ref), 0.0)
    return {"MSE": mse(x, ref), "PSNR": psnr(x, ref), "SSIM": ssim_uniform(x, ref), "RE": relative_error(x, ref),
            "AE": absolute_error(x, ref), "DR": dynamic_range(x, ref)}


def all_metrics(x, ref, mask=None) -> dict:
    """Standard metric set for a reconstruction.

    Args:
        x: reconstruction, shape ``(..., H, W)`` with ``H, W >= 11``.
        ref: ground truth, same shape.
        mask: optional boolean mask broadcastable to ``(..., H, W)``.

    Returns:
        Dict with keys ``"MSE"``, ``"PSNR"``, ``"SSIM"``, ``"RE"``, ``"AE"``,
        ``"DR"``, each a float array of shape ``(...)``, computed with the
        default settings of :func:`mse`, :func:`psnr`, :func:`ssim`,
        :func:`relative_error`, :func:`absolute_error` and
        :func:`dynamic_range` (data range from ``ref`` inside the mask).
    """
    return {
        "MSE": mse(x, ref, mask),
        "PSNR": psnr(x, ref, mask),
        "SSIM": ssim(x, ref, mask),
        "RE": relative_error(x, ref, mask),
        "AE": absolute_error(x, ref, mask),
        "DR": dynamic_range(x, ref, mask),
    }
