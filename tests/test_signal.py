"""Tests of jaxcalc.signal: the DFT against scipy.fft, the power spectrum's normalisation
(Parseval, scipy.signal.periodogram), amplitude features of sinusoids, finite gradients at zero
bins, finite-difference gradient checks, jit/no-jit agreement and trace-time errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.fft
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcalc import signal

TOL = {jnp.float64: 1e-12, jnp.float32: 1e-5}  # relative to the largest |value|
FD_TOL = 1e-8  # norm-wise relative error of central differences vs jax.grad, float64
FD_EPS = 1e-5

# (shape, axis) pairs: several ranks and axes, odd and even lengths.
SHAPES_AXES = [((8,), -1), ((7,), 0), ((3, 6), 0), ((3, 6), 1), ((2, 5, 4), 1), ((2, 5, 4), -3)]

# One jitted version of each function, shared, so equal shapes compile once per session.
JIT_FFT = jax.jit(signal.fourier_transform, static_argnames="axis")
JIT_POWER = jax.jit(signal.power_spectrum, static_argnames="axis")
JIT_FEATURES = jax.jit(signal.fourier_features, static_argnames="n_features")


def _random(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def _assert_close(got, want, dtype):
    """Elementwise, with the tolerance scaled by the largest |want| (FFT errors scale so)."""
    real = np.finfo(np.dtype(dtype)).dtype
    tol = TOL[jnp.float32 if real == np.float32 else jnp.float64]
    scale = max(1.0, float(np.max(np.abs(want))))
    np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol * scale)


def _central_fd_grad(f, x, eps=FD_EPS):
    """Central differences of the scalar ``f`` w.r.t. every element of the array ``x``."""
    basis = eps * jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
    values = jax.jit(jax.vmap(lambda d: f(x + d)))(jnp.concatenate([basis, -basis]))
    return ((values[:x.size] - values[x.size:]) / (2 * eps)).reshape(x.shape)


def _rel_err(a, b):
    return float(np.linalg.norm(np.ravel(a - b)) / np.linalg.norm(np.ravel(b)))


# ------------------------------------------------------------------------- fourier_transform


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32, np.complex64])
@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
def test_fourier_transform_matches_scipy(shape, axis, dtype, use_jit):
    x = _random(shape, dtype)
    fn = JIT_FFT if use_jit else signal.fourier_transform
    got = fn(jnp.asarray(x), axis=axis)
    want = scipy.fft.fft(x, axis=axis)
    assert got.shape == want.shape
    assert got.dtype == want.dtype  # complex64 for 32-bit input, complex128 for 64-bit
    _assert_close(got, want, dtype)


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=1, max_size=3), data=st.data())
def test_fourier_transform_matches_scipy_property(shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = _random(tuple(shape), np.complex128, seed=len(shape))
    _assert_close(signal.fourier_transform(x, axis=axis), scipy.fft.fft(x, axis=axis),
                  np.complex128)


def test_fourier_transform_of_integers_is_float_dft():
    x = np.arange(6)
    _assert_close(signal.fourier_transform(x), scipy.fft.fft(x), np.float64)


@pytest.mark.parametrize("n", [7, 8])
def test_full_dft_parseval(n):
    x = _random((3, n), np.complex128, seed=n)
    X = np.asarray(signal.fourier_transform(x))
    np.testing.assert_allclose(np.sum(np.abs(X) ** 2, -1) / n, np.sum(np.abs(x) ** 2, -1),
                               rtol=1e-12)


# ---------------------------------------------------------------------------- power_spectrum


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
def test_power_spectrum_matches_numpy(shape, axis, dtype, use_jit):
    x = _random(shape, dtype)
    fn = JIT_POWER if use_jit else signal.power_spectrum
    got = fn(jnp.asarray(x), axis=axis)
    n = shape[axis]
    want = np.abs(np.fft.rfft(x.astype(np.float64), axis=axis)) ** 2 / n
    assert got.dtype == dtype  # real, in the input's precision
    assert got.shape[axis] == n // 2 + 1
    _assert_close(got, want, dtype)


@pytest.mark.parametrize("n", [1, 2, 7, 8])
def test_power_spectrum_parseval_one_sided(n):
    """Σ x² = P_0 + 2 Σ_{0<k<n/2} P_k + [n even] P_{n/2}: the documented normalisation."""
    x = _random((4, n), np.float64, seed=n)
    p = np.asarray(signal.power_spectrum(x))
    weights = np.full(n // 2 + 1, 2.0)
    weights[0] = 1.0
    if n % 2 == 0:
        weights[-1] = 1.0
    np.testing.assert_allclose(p @ weights, np.sum(x ** 2, -1), rtol=1e-12)
    # The naive one-sided sum (no doubling) misses energy, so this check can fail.
    if n > 2:
        assert not np.allclose(p.sum(-1), np.sum(x ** 2, -1), rtol=1e-3)


def test_power_spectrum_relates_to_scipy_periodogram():
    n = 8
    x = _random((n,), np.float64, seed=3)
    _, pxx = scipy.signal.periodogram(x, fs=1.0, detrend=False, scaling="spectrum")
    p = np.asarray(signal.power_spectrum(x))
    scale = np.full(n // 2 + 1, 2.0 / n)
    scale[[0, -1]] = 1.0 / n  # DC and Nyquist are not doubled
    np.testing.assert_allclose(pxx, p * scale, rtol=1e-12, atol=1e-15)


def test_power_spectrum_gradient_matches_finite_differences():
    x = jnp.asarray(_random((2, 7), np.float64, seed=4))
    w = jnp.linspace(0.5, 1.5, 2 * 4).reshape(2, 4)
    loss = lambda v: jnp.sum(w * signal.power_spectrum(v))
    auto = jax.jit(jax.grad(loss))(x)
    fd = _central_fd_grad(loss, x)
    assert _rel_err(auto, fd) < FD_TOL
    assert _rel_err(auto * (1 + 1e-4), fd) > FD_TOL  # a slightly wrong gradient is caught


# -------------------------------------------------------------------------- fourier_features


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape,n_features", [((8,), 5), ((8,), 1), ((3, 7), 4), ((2, 3, 6), 2)])
def test_fourier_features_match_numpy(shape, n_features, dtype, use_jit):
    x = _random(shape, dtype)
    fn = JIT_FEATURES if use_jit else signal.fourier_features
    got = fn(jnp.asarray(x), n_features=n_features)
    want = np.abs(np.fft.rfft(x.astype(np.float64), axis=-1))[..., :n_features] / shape[-1]
    assert got.shape == shape[:-1] + (n_features,)
    assert got.dtype == dtype
    _assert_close(got, want, dtype)


@pytest.mark.parametrize("n,k0", [(16, 3), (15, 5), (32, 1), (16, 8)])
def test_fourier_features_of_a_sinusoid_peak_at_its_bin(n, k0):
    amplitude, phase = 2.5, 0.7
    t = np.arange(n)
    x = amplitude * np.cos(2 * np.pi * k0 * t / n + phase)
    noise = 0.05 * np.random.default_rng(k0).standard_normal((4, n))
    noise[0] = 0.0  # row 0 is the clean sinusoid
    feats = np.asarray(JIT_FEATURES(jnp.asarray(x + noise), n_features=n // 2 + 1))
    np.testing.assert_array_equal(np.argmax(feats, axis=-1), k0)
    # Interior bin: A/2; the Nyquist bin (k0 = n/2) holds the whole A|cos φ|.
    want = amplitude * abs(np.cos(phase)) if 2 * k0 == n else amplitude / 2
    np.testing.assert_allclose(feats[0, k0], want, rtol=1e-12)
    np.testing.assert_allclose(np.delete(feats[0], k0), 0.0, atol=1e-12)


def test_fourier_features_of_a_constant_is_its_magnitude_in_bin_0():
    feats = np.asarray(signal.fourier_features(np.full(6, -1.5), 4))
    np.testing.assert_allclose(feats, [1.5, 0.0, 0.0, 0.0], atol=1e-15)


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("x", [np.zeros((2, 8)), np.full((2, 8), 0.3)],
                         ids=["zero-signal", "constant-zero-ac-bins"])
def test_fourier_features_gradient_finite_at_zero_bins(x, use_jit):
    loss = lambda v: jnp.sum(signal.fourier_features(v, 5))
    grad = (jax.jit(jax.grad(loss)) if use_jit else jax.grad(loss))(jnp.asarray(x))
    assert np.all(np.isfinite(grad))
    # The naive modulus sqrt(re² + im²) gives NaN there: the test is not vacuous.
    naive = lambda v: jnp.sum(jnp.sqrt(jnp.real(jnp.fft.rfft(v)) ** 2
                                       + jnp.imag(jnp.fft.rfft(v)) ** 2))
    assert np.any(np.isnan(jax.grad(naive)(jnp.asarray(x))))


def test_fourier_features_gradient_matches_finite_differences():
    x = jnp.asarray(_random((2, 9), np.float64, seed=5))
    w = jnp.linspace(-1.0, 2.0, 2 * 5).reshape(2, 5)
    loss = lambda v: jnp.sum(w * signal.fourier_features(v, 5))
    auto = jax.jit(jax.grad(loss))(x)
    fd = _central_fd_grad(loss, x)
    assert _rel_err(auto, fd) < FD_TOL
    assert _rel_err(auto * (1 + 1e-4), fd) > FD_TOL


def test_fourier_features_no_retrace_on_same_shapes():
    traces = []

    @jax.jit
    def total(x):
        traces.append(None)  # runs once per trace
        return jnp.sum(signal.fourier_features(x, 3))

    a, b = total(jnp.ones((2, 6))), total(jnp.arange(12.0).reshape(2, 6))
    assert len(traces) == 1 and float(a) != float(b)
    total(jnp.ones((2, 7)))
    assert len(traces) == 2


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [signal.fourier_transform, signal.power_spectrum])
def test_axis_errors(fn):
    name = fn.__name__
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match=rf"{name}: axis must be in \[-2, 2\) for x of shape "
                                         r"\(3, 4\), got 2"):
        fn(x, axis=2)
    with pytest.raises(ValueError, match=rf"{name}: axis must be in \[-2, 2\).*got -3"):
        fn(x, axis=-3)
    with pytest.raises(TypeError, match=rf"{name}: axis must be an int, got 1.0"):
        fn(x, axis=1.0)
    with pytest.raises(ValueError, match=rf"{name}: x must have at least 1 dimension"):
        fn(jnp.float64(1.0))
    with pytest.raises(ValueError, match=rf"{name}: x must have at least one sample along "
                                         r"axis 1"):
        fn(jnp.ones((3, 0)))


@pytest.mark.parametrize("fn", [signal.power_spectrum,
                                lambda x: signal.fourier_features(x, 2)])
def test_real_only_functions_reject_complex(fn):
    with pytest.raises(TypeError, match=r"(power_spectrum|fourier_features): x must be real.*"
                                        r"complex128"):
        fn(jnp.ones(6, jnp.complex128))


def test_fourier_features_n_features_errors():
    x = jnp.ones((2, 8))
    with pytest.raises(ValueError, match=r"fourier_features: n_features must be in "
                                         r"\[1, n // 2 \+ 1\] = \[1, 5\] for signals of length "
                                         r"n = 8 .*got 6"):
        signal.fourier_features(x, 6)
    with pytest.raises(ValueError, match=r"fourier_features: n_features .* got 0"):
        signal.fourier_features(x, 0)
    with pytest.raises(TypeError, match=r"fourier_features: n_features must be an int, got 2.0"):
        signal.fourier_features(x, 2.0)
    with pytest.raises(ValueError, match=r"fourier_features: x must have at least one sample"):
        signal.fourier_features(jnp.ones((2, 0)), 1)
    with pytest.raises(ValueError, match=r"fourier_features: x must have at least 1 dimension"):
        signal.fourier_features(jnp.float64(1.0), 1)
    # Under jit the check still runs at trace time.
    with pytest.raises(ValueError, match=r"fourier_features: n_features"):
        JIT_FEATURES(x, n_features=9)
