r"""Discrete Fourier analysis of signals: the DFT, the power spectrum and amplitude features.

Conventions (NumPy/SciPy's): the DFT of a length-``n`` signal is

.. math:: X_k = \sum_{t=0}^{n-1} x_t\, e^{-2\pi i k t / n}, \qquad k = 0, \dots, n-1,

unnormalised, exactly ``scipy.fft.fft`` (which the seed notes use). For a real signal
:math:`X_{n-k} = \overline{X_k}`, so only the one-sided bins ``k = 0..n//2`` (``rfft``) carry
information. ``power_spectrum`` and ``fourier_features`` use those bins and are real-valued and
differentiable, so they can sit inside a model trained with ``jax.grad``; the amplitude is a
double-``where`` modulus so its gradient is finite (zero) where a bin is exactly 0. NaN input is
not an error: it propagates (a NaN sample makes every bin of its signal NaN).

Bad arguments raise at trace time: ``TypeError`` for a wrong dtype or a non-integer ``axis``/
``n_features``, ``ValueError`` for an axis out of range, an empty signal or too many features.
"""

from __future__ import annotations

import operator

import jax.numpy as jnp

from jaxcalc._types import Array, ArrayLike
from jaxcalc._validate import check_real_dtype


def _as_signal(fn: str, x: ArrayLike, *, real: bool) -> Array:
    """``x`` as an array of at least one dimension; integers/bools become the default float,
    complex is kept unless ``real`` (then it is a TypeError)."""
    x = jnp.asarray(x)
    if x.ndim < 1:
        raise ValueError(f"{fn}: x must have at least 1 dimension (..., n), got shape {x.shape}")
    if real:
        check_real_dtype(fn, "x", x, "a real signal")
    elif jnp.issubdtype(x.dtype, jnp.complexfloating):
        return x
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_axis(fn: str, axis, x: Array) -> int:
    """The non-negative form of ``axis``; raise unless it is an int in ``[-ndim, ndim)`` and the
    signal along it is non-empty."""
    if isinstance(axis, bool):
        raise TypeError(f"{fn}: axis must be an int, got {axis!r}")
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"{fn}: axis must be an int, got {axis!r}") from None
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{fn}: axis must be in [{-x.ndim}, {x.ndim}) for x of shape "
                         f"{tuple(x.shape)}, got {axis}")
    axis %= x.ndim
    if x.shape[axis] == 0:
        raise ValueError(f"{fn}: x must have at least one sample along axis {axis}, got shape "
                         f"{tuple(x.shape)}")
    return axis


def _squared_magnitude(z: Array) -> Array:
    r""":math:`|z|^2 = \Re(z)^2 + \Im(z)^2`, real and smooth everywhere (unlike ``abs``)."""
    return jnp.real(z) ** 2 + jnp.imag(z) ** 2


def _safe_abs(z: Array) -> Array:
    r""":math:`|z|` of complex ``z`` with gradient 0 (not 0/0 = NaN) at ``z = 0``.

    Double-``where``: the inner ``where`` keeps ``abs`` away from 0 on both the forward and the
    backward pass, the outer one puts back the exact value 0. ``abs`` is a scaled ``hypot``, so
    :math:`|z|` is exact where :math:`\Re(z)^2 + \Im(z)^2` would underflow (``|z|`` below
    ``sqrt(tiny)``, ~1e-19 in float32) or overflow (above ~1e19 in float32). NaN is ``!= 0``, so
    it propagates.
    """
    nonzero = z != 0
    return jnp.where(nonzero, jnp.abs(jnp.where(nonzero, z, jnp.ones_like(z))),
                     jnp.zeros_like(jnp.real(z)))


def fourier_transform(x: ArrayLike, axis: int = -1) -> Array:
    r"""Discrete Fourier transform along ``axis``, equal to ``scipy.fft.fft(x, axis=axis)``.

    .. math:: X_k = \sum_{t=0}^{n-1} x_t\, e^{-2\pi i k t / n}

    Args:
      x: real or complex array ``(..., n, ...)`` with the signal along ``axis``; integer input
        is converted to the default float.
      axis: the time axis.

    Returns:
      Complex array of the shape of ``x``: complex64 for float32/complex64 input, complex128
      for float64/complex128.
    """
    x = _as_signal("fourier_transform", x, real=False)
    axis = _check_axis("fourier_transform", axis, x)
    return jnp.fft.fft(x, axis=axis)


def power_spectrum(x: ArrayLike, axis: int = -1) -> Array:
    r"""One-sided power spectrum of a real signal, :math:`P_k = |X_k|^2 / n`, ``k = 0..n//2``.

    ``X = rfft(x)`` along ``axis``. Normalisation: dividing by ``n`` makes the *two-sided*
    spectrum sum to the signal's energy (Parseval), so in one-sided form

    .. math:: \sum_t x_t^2 = P_0 + 2 \sum_{0 < k < n/2} P_k + [n \text{ even}]\, P_{n/2}.

    This is the periodogram with sampling frequency 1, not doubled (``scipy.signal.periodogram``
    with ``scaling="spectrum"`` is ``2 P_k / n`` for the interior bins).

    Args:
      x: real array with the signal (length ``n``) along ``axis``.
      axis: the time axis.

    Returns:
      Real array like ``x`` with ``axis`` of length ``n // 2 + 1``, in ``x``'s float dtype.
    """
    x = _as_signal("power_spectrum", x, real=True)
    axis = _check_axis("power_spectrum", axis, x)
    n = x.shape[axis]
    return _squared_magnitude(jnp.fft.rfft(x, axis=axis)) / n


def fourier_features(x: ArrayLike, n_features: int) -> Array:
    r"""Amplitude spectrum of the lowest ``n_features`` frequencies: :math:`|X_k| / n`.

    ``X = rfft(x)`` over the last axis, ``k = 0..n_features-1``. With this scaling a constant
    signal ``a`` gives ``|a|`` in bin 0, and ``A cos(2π k₀ t / n + φ)`` with ``0 < k₀ < n/2``
    gives ``A / 2`` in bin ``k₀``, whatever ``n`` is. The modulus is a safe norm (double
    ``where``), so the gradient is finite — zero — where a bin is exactly 0 (e.g. a zero
    signal), and exact elsewhere; it is computed without squaring, so it neither underflows to
    0 nor overflows to ∞ where ``|X_k| / n`` itself is representable. NaN input gives NaN.

    Args:
      x: real signals ``(..., n)``.
      n_features: number of bins kept, ``1 <= n_features <= n // 2 + 1`` (a static int).

    Returns:
      ``(..., n_features)`` real array in ``x``'s float dtype.
    """
    x = _as_signal("fourier_features", x, real=True)
    n = x.shape[-1]
    if n == 0:
        raise ValueError(f"fourier_features: x must have at least one sample on its last axis, "
                         f"got shape {tuple(x.shape)}")
    if isinstance(n_features, bool):
        raise TypeError(f"fourier_features: n_features must be an int, got {n_features!r}")
    try:
        n_features = operator.index(n_features)
    except TypeError:
        raise TypeError(f"fourier_features: n_features must be an int, got "
                        f"{n_features!r}") from None
    if not 1 <= n_features <= n // 2 + 1:
        raise ValueError(f"fourier_features: n_features must be in [1, n // 2 + 1] = "
                         f"[1, {n // 2 + 1}] for signals of length n = {n} (x of shape "
                         f"{tuple(x.shape)}), got {n_features}")
    spectrum = jnp.fft.rfft(x, axis=-1)[..., :n_features]
    return _safe_abs(spectrum) / n


__all__ = [
    "fourier_transform",
    "power_spectrum",
    "fourier_features",
]
