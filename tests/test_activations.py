"""Tests for jaxcalc.activations: closed forms vs jax.grad, jax.grad vs finite differences,
numerics at extremes, dtype behaviour and a few algebraic properties (hypothesis)."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcalc import activations as act

DTYPES = [jnp.float32, jnp.float64]
# Closed form vs autodiff: a few ulps apart at most.
TOL = {jnp.float32: dict(rtol=1e-5, atol=1e-6), jnp.float64: dict(rtol=1e-12, atol=1e-14)}
FD_STEP = 1e-5  # float64 central differences: truncation ~h² ≈ 1e-10, round-off ~eps/h ≈ 1e-11
FD_TOL = dict(rtol=1e-7, atol=1e-9)

leaky_02 = functools.partial(act.leaky_relu, negative_slope=0.2)
leaky_02_derivative = functools.partial(act.leaky_relu_derivative, negative_slope=0.2)

# (name, function, closed-form derivative); names keep the test ids readable.
PAIRS = [
    ("sigmoid", act.sigmoid, act.sigmoid_derivative),
    ("tanh", act.tanh, act.tanh_derivative),
    ("softplus", act.softplus, act.softplus_derivative),
    ("relu", act.relu, act.relu_derivative),
    ("leaky_relu", act.leaky_relu, act.leaky_relu_derivative),
    ("leaky_relu_0.2", leaky_02, leaky_02_derivative),
]
PAIR_IDS = [p[0] for p in PAIRS]
ELEMENTWISE = [p[1] for p in PAIRS] + [p[2] for p in PAIRS]
ELEMENTWISE_IDS = PAIR_IDS + [n + "_derivative" for n in PAIR_IDS]

# Kinks included on purpose (0): relu/leaky_relu have one-sided conventions there.
GRID = [-6.0, -2.5, -1.0, -0.3, 0.0, 0.3, 1.0, 2.5, 6.0]
SMOOTH_GRID = [-3.0, -1.7, -0.6, 0.45, 1.2, 2.9]  # away from kinks, for finite differences


@pytest.fixture(params=[False, True], ids=["nojit", "jit"])
def maybe_jit(request):
    return jax.jit if request.param else (lambda f: f)


@functools.lru_cache(maxsize=None)
def elementwise_grad(f):
    """d f(x_i) / d x_i for every element, by vmap of jax.grad over a flat copy of x.

    Jitted and cached per ``f`` (one compile per shape and dtype across all tests): it is the
    reference; the function under test is what each test runs with and without jit.
    """
    return jax.jit(lambda x: jax.vmap(jax.grad(f))(x.ravel()).reshape(x.shape))


@functools.lru_cache(maxsize=None)
def reference_softmax_jacobian(ndim):
    """Jitted jax.jacobian of softmax over the last axis, vmapped over the ndim - 1 leading axes."""
    row_jac = jax.jacobian(act.softmax)
    for _ in range(ndim - 1):
        row_jac = jax.vmap(row_jac)
    return jax.jit(row_jac)


def central_fd(f, x, h=FD_STEP):
    """Elementwise central difference (f(x + h) - f(x - h)) / 2h of an elementwise f, in float64."""
    x = np.asarray(x, dtype=np.float64)
    return (np.asarray(f(jnp.asarray(x + h))) - np.asarray(f(jnp.asarray(x - h)))) / (2 * h)


# ---------------------------------------------------------------- closed forms vs jax.grad


@pytest.mark.parametrize("name,f,df", PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_closed_form_derivative_matches_jax_grad(name, f, df, dtype, maybe_jit):
    x = jnp.asarray(GRID, dtype=dtype).reshape(3, 3)
    closed = maybe_jit(df)(x)
    auto = elementwise_grad(f)(x)
    assert closed.dtype == auto.dtype == dtype
    np.testing.assert_allclose(closed, auto, **TOL[dtype])


def test_relu_derivative_at_zero_is_zero_like_jax_grad():
    assert float(act.relu_derivative(0.0)) == 0.0
    assert float(jax.grad(act.relu)(0.0)) == 0.0


def test_leaky_relu_derivative_at_zero_is_negative_slope():
    assert float(act.leaky_relu_derivative(0.0, negative_slope=0.2)) == 0.2
    assert float(jax.grad(leaky_02)(0.0)) == 0.2


def test_sigmoid_derivative_seed_value():
    # The seed's sigmoid_derivative(0.5) in float64 (NumPy: s = 1 / (1 + exp(-0.5)); s * (1 - s)).
    value = act.sigmoid_derivative(jnp.float64(0.5))
    assert value.dtype == jnp.float64
    assert abs(float(value) - 0.2350037122015945) <= 1e-16


def test_wrong_closed_form_is_detected():
    """The comparison above can fail: σ itself is not σ' and must not pass as one."""
    x = jnp.asarray(GRID, dtype=jnp.float64)
    auto = elementwise_grad(act.sigmoid)(x)
    assert not np.allclose(act.sigmoid(x), auto, **TOL[jnp.float64])
    assert not np.allclose(act.tanh_derivative(x) + 1e-9, elementwise_grad(act.tanh)(x),
                           **TOL[jnp.float64])


# ---------------------------------------------------------------- jax.grad vs finite differences


@pytest.mark.parametrize("name,f,df", PAIRS, ids=PAIR_IDS)
def test_jax_grad_matches_central_differences(name, f, df):
    x = np.asarray(SMOOTH_GRID, dtype=np.float64)
    auto = elementwise_grad(f)(jnp.asarray(x))
    np.testing.assert_allclose(auto, central_fd(f, x), **FD_TOL)


def test_finite_difference_check_detects_wrong_gradient():
    x = np.asarray(SMOOTH_GRID, dtype=np.float64)
    fd = central_fd(act.softplus, x)
    assert not np.allclose(act.sigmoid_derivative(jnp.asarray(x)), fd, **FD_TOL)


@pytest.mark.parametrize("fn", [act.softmax, act.log_softmax], ids=["softmax", "log_softmax"])
def test_softmax_grad_matches_central_differences(fn):
    x = np.array([0.3, -1.2, 2.0, 0.7])
    w = np.array([0.5, -1.0, 2.0, 0.25])  # a generic cotangent: tests the whole Jacobian
    scalar = lambda z: jnp.dot(w, fn(z))
    auto = jax.grad(scalar)(jnp.asarray(x))
    steps = FD_STEP * np.eye(x.size)  # one row per coordinate
    fd = (jax.vmap(scalar)(x + steps) - jax.vmap(scalar)(x - steps)) / (2 * FD_STEP)
    np.testing.assert_allclose(auto, fd, **FD_TOL)


# ---------------------------------------------------------------- softmax Jacobian


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4,), (2, 3)])
def test_softmax_jacobian_matches_jax_jacobian(dtype, shape, maybe_jit):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape) * 3, dtype=dtype)
    closed = maybe_jit(act.softmax_jacobian)(x)
    auto = reference_softmax_jacobian(len(shape))(x)
    assert closed.shape == shape + (shape[-1],)
    assert closed.dtype == dtype
    np.testing.assert_allclose(closed, auto, **TOL[dtype])


def test_softmax_jacobian_is_symmetric_with_zero_column_sums():
    """J = diag(s) - s sᵀ is symmetric, and Σ_i s_i = 1 makes every column of J sum to 0."""
    x = jnp.array([0.1, 2.0, -1.0])
    jac = act.softmax_jacobian(x)
    np.testing.assert_allclose(jac, jac.T, rtol=0, atol=1e-16)
    np.testing.assert_allclose(jac.sum(axis=0), 0.0, atol=1e-16)


# ---------------------------------------------------------------- extremes and dtypes


def _extremes(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    return jnp.asarray([-1e4, -1e-30, -tiny, 0.0, tiny, 1e-30, 1e4], dtype=dtype)


@pytest.mark.parametrize("f", ELEMENTWISE, ids=ELEMENTWISE_IDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_extremes_give_finite_values_and_gradients(f, dtype):
    x = _extremes(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any overflow/invalid RuntimeWarning fails the test
        value = f(x)
        grad = elementwise_grad(f)(x)
    assert value.dtype == grad.dtype == dtype
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_saturates_exactly(dtype):
    out = act.sigmoid(jnp.asarray([-1e4, 1e4], dtype=dtype))
    assert float(out[0]) == 0.0 and float(out[1]) == 1.0
    grads = elementwise_grad(act.sigmoid)(jnp.asarray([-1e4, 1e4], dtype=dtype))
    np.testing.assert_array_equal(grads, [0.0, 0.0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", [act.softmax, act.log_softmax], ids=["softmax", "log_softmax"])
def test_softmax_extremes_finite(dtype, fn):
    x = jnp.asarray([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e-30, -1e-30, 0.0]], dtype=dtype)
    out = fn(x)
    jac = jax.jit(jax.vmap(jax.jacobian(fn)))(x)
    assert out.dtype == jac.dtype == dtype
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(jac))


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_exact_at_plus_minus_1e4(dtype):
    x = jnp.asarray([1e4, -1e4, 0.0], dtype=dtype)
    np.testing.assert_array_equal(act.log_softmax(x), np.array([0.0, -2e4, -1e4]))
    np.testing.assert_array_equal(act.softmax(x), np.array([1.0, 0.0, 0.0]))


@pytest.mark.parametrize("f", ELEMENTWISE + [act.softmax, act.log_softmax, act.softmax_jacobian],
                         ids=ELEMENTWISE_IDS + ["softmax", "log_softmax", "softmax_jacobian"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_follows_floating_input(f, dtype):
    x = jnp.asarray([[-1.0, 0.5], [2.0, 0.0]], dtype=dtype)
    assert f(x).dtype == dtype
    assert jax.eval_shape(f, x).dtype == dtype  # traced, as under jit


@pytest.mark.parametrize("f", ELEMENTWISE, ids=ELEMENTWISE_IDS)
def test_integer_input_computes_in_default_float(f):
    out = f(jnp.arange(-2, 3))
    assert out.dtype == jnp.float64  # conftest enables x64, so the default float is float64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_sums_to_one_along_axis(dtype, axis):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4)) * 5, dtype=dtype)
    s = act.softmax(x, axis=axis)
    np.testing.assert_allclose(s.sum(axis=axis), 1.0, rtol=0, atol=10 * np.finfo(dtype).eps)
    np.testing.assert_allclose(jnp.exp(act.log_softmax(x, axis=axis)), s, **TOL[dtype])


# ---------------------------------------------------------------- properties (hypothesis)

finite = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None)


@PROPERTY_SETTINGS
@given(x=finite)
def test_sigmoid_symmetry_and_range(x):
    s, s_neg = float(act.sigmoid(x)), float(act.sigmoid(-x))
    assert 0.0 <= s <= 1.0
    assert abs(s + s_neg - 1.0) <= 2 * np.finfo(np.float64).eps


@PROPERTY_SETTINGS
@given(x=finite)
def test_softplus_difference_is_identity(x):
    # softplus(x) - softplus(-x) = x, up to a few ulps of max(|x|, 1).
    diff = float(act.softplus(x) - act.softplus(-x))
    assert abs(diff - x) <= 4 * np.finfo(np.float64).eps * max(abs(x), 1.0)


@PROPERTY_SETTINGS
@given(x=finite, slope=st.floats(min_value=0.0, max_value=1.0))
def test_leaky_relu_decomposes_into_relus(x, slope):
    # Exact: each side is one multiplication by slope (or none).
    assert float(act.leaky_relu(x, slope)) == float(act.relu(x) - slope * act.relu(-x))


@PROPERTY_SETTINGS
@given(xs=st.lists(finite, min_size=5, max_size=5),
       shift=st.floats(min_value=-100.0, max_value=100.0))
def test_log_softmax_shift_invariant_and_softmax_normalized(xs, shift):
    x = jnp.asarray(xs)
    # x + shift is rounded to ~eps·(|x| + |shift|); log_softmax adds a few more such roundings.
    scale = float(jnp.max(jnp.abs(x))) + abs(shift) + 1.0
    np.testing.assert_allclose(act.log_softmax(x + shift), act.log_softmax(x),
                               rtol=0, atol=8 * np.finfo(np.float64).eps * scale)
    assert abs(float(act.softmax(x).sum()) - 1.0) <= 1e-15


@PROPERTY_SETTINGS
@given(x=finite)
def test_derivative_ranges(x):
    assert 0.0 <= float(act.sigmoid_derivative(x)) <= 0.25
    assert 0.0 <= float(act.tanh_derivative(x)) <= 1.0
    assert 0.0 <= float(act.softplus_derivative(x)) <= 1.0
