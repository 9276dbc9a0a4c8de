"""Measurement noise for simulated EIT voltages.

Noise model
-----------
Additive white Gaussian noise whose level is set by a signal-to-noise ratio
(SNR, in dB) *per measurement vector*. For a voltage vector ``v`` with ``M``
entries along the measurement axis, every entry receives independent
zero-mean Gaussian noise with standard deviation

    std = ||v||_2 / sqrt(M) * 10 ** (-snr_db / 20),

i.e. ``std`` is the RMS voltage scaled by the SNR. Then
``E ||n||_2^2 = ||v||_2^2 * 10 ** (-snr_db / 10)``, so that

    snr_db = 20 * log10(||v||_2 / ||n||_2)

holds in expectation (of the squared norms). Batched inputs ``(B, M)`` get a
separate noise level per sample because the norm is taken along the
measurement axis only.

All functions are pure JAX and jit-able. Input validation (NaN/inf voltages,
non-finite SNR) runs only on concrete arrays; inside ``jax.jit`` the values
are tracers and are not inspected.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["add_noise", "noise_std", "measured_snr_db"]


def _is_concrete(x) -> bool:
    """True if ``x`` holds actual values (not a JAX tracer under jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def _check_finite(x, what: str) -> None:
    """Raise ``ValueError`` if a concrete ``x`` contains NaN or inf."""
    if not _is_concrete(x):
        return
    arr = np.asarray(x)
    if not np.all(np.isfinite(arr)):
        n_nan = int(np.sum(np.isnan(arr)))
        n_inf = int(np.sum(np.isinf(arr)))
        raise ValueError(
            f"{what} must be finite, but contains {n_nan} NaN and {n_inf} inf "
            f"value(s) (shape {arr.shape})."
        )


def _snr_keepdims(snr_db, v: jnp.ndarray, axis: int) -> jnp.ndarray:
    """Broadcast ``snr_db`` to ``v.shape`` with ``axis`` reduced to size 1.

    ``snr_db`` may be a scalar or an array broadcastable to ``v.shape`` with
    the measurement axis removed (e.g. shape ``(B,)`` for ``v`` of shape
    ``(B, M)``), which allows a different SNR per sample.
    """
    snr = jnp.asarray(snr_db, dtype=jnp.real(v).dtype)
    reduced_shape = v.shape[:axis] + v.shape[axis + 1:]
    return jnp.expand_dims(jnp.broadcast_to(snr, reduced_shape), axis)


def _norm_axis(v: jnp.ndarray, axis: int) -> int:
    """Normalise ``axis`` to a non-negative index of ``v``."""
    if v.ndim == 0:
        raise ValueError("Voltages must have at least one (measurement) axis.")
    if not -v.ndim <= axis < v.ndim:
        raise ValueError(f"axis {axis} is out of range for voltages of shape {v.shape}.")
    return axis % v.ndim


def _as_float_array(v) -> jnp.ndarray:
    """Convert to a JAX array with a floating (or complex) dtype."""
    v = jnp.asarray(v)
    if not jnp.issubdtype(v.dtype, jnp.inexact):
        v = v.astype(jnp.result_type(float))
    return v


def noise_std(v, snr_db, axis: int = -1) -> jnp.ndarray:
    """Per-measurement noise standard deviation for a given SNR.

    Args:
        v: clean voltages, real or complex, shape ``(..., M, ...)`` with the
            ``M`` measurements along ``axis`` (e.g. ``(M,)`` or ``(B, M)``).
            Units are those of ``v`` (volts).
        snr_db: SNR in dB; scalar or array broadcastable to ``v.shape`` with
            ``axis`` removed (one SNR per sample).
        axis: the measurement axis.

    Returns:
        ``||v||_2 / sqrt(M) * 10 ** (-snr_db / 20)`` with the norm over
        ``axis``; real array of shape ``v.shape`` with ``axis`` kept as size 1
        (so it broadcasts against ``v``), same precision as ``v``.

    Raises:
        ValueError: if concrete ``v`` or ``snr_db`` contains NaN/inf.
    """
    _check_finite(v, "Voltages")
    _check_finite(snr_db, "snr_db")
    v = _as_float_array(v)
    return _noise_std(v, snr_db, _norm_axis(v, axis))


def add_noise(v, snr_db, key: jax.Array, *, axis: int = -1) -> jnp.ndarray:
    """Add white Gaussian noise at a prescribed SNR per measurement vector.

    Definition: each entry of ``v`` receives i.i.d. zero-mean Gaussian noise
    with standard deviation ``std = ||v||_2 / sqrt(M) * 10 ** (-snr_db / 20)``,
    where the 2-norm and the count ``M`` are taken over ``axis``. Hence
    ``E ||n||^2 = ||v||^2 * 10 ** (-snr_db / 10)``, i.e.
    ``snr_db = 20 log10(||v|| / ||n||)`` in expectation. Batched inputs
    ``(B, M)`` get a per-sample noise level. Complex voltages get circular
    complex noise (real and imaginary parts each with variance ``std^2 / 2``),
    so ``E|n_i|^2 = std^2`` as in the real case.

    Args:
        v: clean voltages, shape ``(..., M, ...)``, real or complex (volts).
        snr_db: SNR in dB; scalar or array broadcastable to ``v.shape`` with
            ``axis`` removed.
        key: a ``jax.random`` key; the same key gives the same noise.
        axis: the measurement axis (keyword-only).

    Returns:
        Noisy voltages ``v + n``, same shape and dtype as ``v`` (integer
        input is promoted to the default float dtype).

    Raises:
        ValueError: if concrete ``v`` or ``snr_db`` contains NaN/inf.
    """
    _check_finite(v, "Voltages")
    _check_finite(snr_db, "snr_db")
    v = _as_float_array(v)
    return _add_noise(v, snr_db, key, _norm_axis(v, axis))


def measured_snr_db(v_clean, v_noisy, axis: int = -1) -> jnp.ndarray:
    """Empirical SNR of a noisy measurement, in dB.

    Args:
        v_clean: clean voltages, shape ``(..., M, ...)``.
        v_noisy: noisy voltages, same shape as ``v_clean``.
        axis: the measurement axis.

    Returns:
        ``20 * log10(||v_clean||_2 / ||v_noisy - v_clean||_2)`` with the norms
        over ``axis``; real array of shape ``v_clean.shape`` with ``axis``
        removed (``inf`` if the noise is exactly zero).

    Raises:
        ValueError: on mismatched shapes, or NaN/inf in concrete inputs.
    """
    _check_finite(v_clean, "Clean voltages")
    _check_finite(v_noisy, "Noisy voltages")
    v_clean = _as_float_array(v_clean)
    v_noisy = _as_float_array(v_noisy)
    if v_clean.shape != v_noisy.shape:
        raise ValueError(
            f"Shape mismatch: v_clean {v_clean.shape} vs v_noisy {v_noisy.shape}."
        )
    return _measured_snr_db(v_clean, v_noisy, _norm_axis(v_clean, axis))


# Jitted kernels: the public wrappers validate concrete inputs first, then
# dispatch here (one compiled call instead of many eager ops).


@functools.partial(jax.jit, static_argnames=("axis",))
def _noise_std(v, snr_db, axis):
    snr = _snr_keepdims(snr_db, v, axis)
    # RMS over the measurement axis = ||v|| / sqrt(M).
    rms = jnp.sqrt(jnp.mean(jnp.abs(v) ** 2, axis=axis, keepdims=True))
    return rms * 10.0 ** (-snr / 20.0)


@functools.partial(jax.jit, static_argnames=("axis",))
def _add_noise(v, snr_db, key, axis):
    std = _noise_std(v, snr_db, axis)
    # For complex dtypes jax.random.normal draws circular noise with
    # E|z|^2 = 1 (variance 1/2 per component), matching the real case.
    z = jax.random.normal(key, v.shape, dtype=v.dtype)
    return v + (std * z).astype(v.dtype)


@functools.partial(jax.jit, static_argnames=("axis",))
def _measured_snr_db(v_clean, v_noisy, axis):
    signal = jnp.linalg.norm(v_clean, axis=axis)
    noise = jnp.linalg.norm(v_noisy - v_clean, axis=axis)
    return 20.0 * jnp.log10(signal / noise)
