"""Tests for jaxcalc.finite_diff: accuracy on closed forms and tiny models, orders of accuracy,
Richardson, exact steps, the checkers (which must fail on deliberately wrong derivatives), the
V-curve and its plot, the seed notes' mixed derivative, jit, and bad input.

Tolerances (float64 unless stated) come from ``finite_diff.DEFAULT_RTOL``: an order-p method's
best error is ~ε^(p/(p+d)) of the derivative scale (central gradient: 3.7e-11), and the table
leaves 10²–10⁴ headroom. Assertions use the same rule as the checkers,
``max |fd − exact| <= rtol · max(1, max |exact|)``, written out independently here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

from jaxcalc import derivatives, models
from jaxcalc import finite_diff as fd

METHODS = fd.METHODS


def _flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def _assert_close_scaled(numerical, exact, rtol):
    """``max |numerical − exact| <= rtol · max(1, max |exact|)`` (the checkers' default rule)."""
    a, b = _flat(numerical), _flat(exact)
    assert a.shape == b.shape
    bound = rtol * max(1.0, float(np.max(np.abs(b))))
    err = float(np.max(np.abs(a - b)))
    assert err <= bound, f"max abs error {err:.3e} > {bound:.3e}"


def _maybe_jit(fn, use_jit):
    return jax.jit(fn) if use_jit else fn


# ----------------------------------------------------------------------------- problems


def rosenbrock(p):
    x = p["x"]
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


ROSEN_X = np.array([-1.2, 1.0, 0.5, 0.8])


def smooth_1d(p):
    """exp(x/2)·sin(x) of the single coordinate: every derivative nonzero near x = 0.7."""
    x = p["x"][0]
    return jnp.exp(0.5 * x) * jnp.sin(x)


X_1D = {"x": jnp.array([0.7])}


@pytest.fixture(scope="module")
def mlp_problem():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    net = models.mlp([3, 4, 2], "tanh")
    _, params = net.init(k1)
    x, y = jax.random.normal(k2, (5, 3)), jax.random.normal(k3, (5, 2))
    return (lambda p: jnp.mean((net.apply(p, x) - y) ** 2)), params


@pytest.fixture(scope="module")
def rnn_problem():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(1), 3)
    net = models.rnn_regressor(2, cell="rnn")
    _, params = net.init(k1, (3, 4, 1))
    xs, y = jax.random.normal(k2, (3, 4, 1)), jax.random.normal(k3, (3, 1))
    return (lambda p: jnp.mean((net.apply(p, xs) - y) ** 2)), params


def _tanh_problem(dtype):
    """A one-layer tanh regression computed entirely in ``dtype``."""
    x = jnp.linspace(-1.0, 1.0, 6, dtype=dtype).reshape(3, 2)
    f = lambda p: jnp.mean(jnp.tanh(x @ p["w"] + p["b"]) ** 2)
    params = {"w": jnp.array([[0.3, -0.5], [0.8, 0.1]], dtype), "b": jnp.array([0.2, -0.1], dtype)}
    return f, params


def _wrong_grad_sin(factor, mask):
    """``sin`` whose custom VJP scales the derivative by ``factor`` where ``mask`` is 1."""

    @jax.custom_vjp
    def s(x):
        return jnp.sin(x)

    s.defvjp(lambda x: (jnp.sin(x), x),
             lambda x, g: (jnp.where(mask, factor, 1.0) * jnp.cos(x) * g,))
    return s


def _wrong_curvature_sin(factor, mask):
    """``sin`` with a right first derivative whose own derivative (−sin) is scaled by ``factor``
    where ``mask`` is 1 (custom JVPs two levels deep)."""

    @jax.custom_jvp
    def c(x):
        return jnp.cos(x)

    c.defjvp(lambda pr, ta: (jnp.cos(pr[0]),
                             -jnp.where(mask, factor, 1.0) * jnp.sin(pr[0]) * ta[0]))

    @jax.custom_jvp
    def s(x):
        return jnp.sin(x)

    s.defjvp(lambda pr, ta: (jnp.sin(pr[0]), c(pr[0]) * ta[0]))
    return s


CHECK_PARAMS = {"a": jnp.array([0.3, -0.8]), "b": jnp.array([[0.5, 1.1], [-0.4, 2.0]])}
WRONG_AT = (1, 0)  # the entry of "b" whose derivative is made wrong
WRONG_FLAT = 2 + 2 * WRONG_AT[0] + WRONG_AT[1]  # its ravel_pytree index


def _check_fn(sin_b):
    return lambda p: jnp.sum(jnp.sin(p["a"]) * p["a"]) + jnp.sum(sin_b(p["b"]) + 0.5 * p["b"] ** 2)


# ----------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_grad_rosenbrock_matches_closed_form(method, use_jit):
    params = {"x": jnp.asarray(ROSEN_X)}
    got = _maybe_jit(lambda p: fd.grad(rosenbrock, p, method=method), use_jit)(params)
    assert got["x"].dtype == jnp.float64
    _assert_close_scaled(got, {"x": scipy.optimize.rosen_der(ROSEN_X)},
                         fd.DEFAULT_RTOL[("float64", "grad")][method])


@pytest.mark.parametrize("source", fd.SOURCES)
@pytest.mark.parametrize("method", METHODS)
def test_hessian_rosenbrock_matches_closed_form(method, source):
    params = {"x": jnp.asarray(ROSEN_X)}
    got = np.asarray(fd.hessian(rosenbrock, params, method=method, source=source))
    np.testing.assert_array_equal(got, got.T)
    _assert_close_scaled(got, scipy.optimize.rosen_hess(ROSEN_X),
                         fd.DEFAULT_RTOL[("float64", source)][method])


def _quadratic(shape):
    """½ xᵀAx + bᵀx on an array of ``shape`` with a tridiagonal SPD ``A`` (its Hessian)."""
    n = int(np.prod(shape, dtype=int))
    a = (np.diag(np.arange(2.0, n + 2)) + np.diag(np.full(n - 1, -0.5), 1)
         + np.diag(np.full(n - 1, -0.5), -1))
    b = np.linspace(-0.3, 0.4, n)
    f = lambda p: 0.5 * p["x"].ravel() @ a @ p["x"].ravel() + b @ p["x"].ravel()
    x = np.linspace(-1.3, 2.2, n).reshape(shape)
    return f, {"x": jnp.asarray(x)}, a, a @ x.ravel() + b


def _round_off_bound(scale, derivative):
    """10 ε·scale / h^d at the default central step: the round-off left when truncation is 0."""
    h = fd.default_relative_step(jnp.float64, "central", derivative=derivative)
    return 10 * float(jnp.finfo(jnp.float64).eps) * scale / h ** derivative


@pytest.mark.parametrize("source", fd.SOURCES)
@pytest.mark.parametrize("shape", [(), (3,), (2, 2)])
def test_quadratic_derivatives_are_exact_to_round_off(shape, source):
    # Differences of a linear gradient, second differences and central differences of a
    # quadratic have no truncation error: only round-off ~ ε·|f| / h^d remains.
    f, params, a, g = _quadratic(shape)
    scale = max(abs(float(f(params))), float(np.max(np.abs(g))))
    d = 2 if source == "value" else 1
    hess = fd.hessian(f, params, source=source)
    np.testing.assert_allclose(hess, a, rtol=0, atol=_round_off_bound(scale, d))
    got = fd.grad(f, params)
    assert got["x"].shape == shape
    np.testing.assert_allclose(np.ravel(got["x"]), g, rtol=0, atol=_round_off_bound(scale, 1))


@pytest.mark.parametrize("problem,method", [
    ("mlp_problem", "central"), ("mlp_problem", "richardson"), ("rnn_problem", "central")])
def test_model_gradients_pass_check_grad(problem, method, request):
    f, params = request.getfixturevalue(problem)
    report = fd.check_grad(f, params, method=method)
    assert report.passed, str(report)
    _assert_close_scaled(report.numerical, jax.grad(f)(params),
                         fd.DEFAULT_RTOL[("float64", "grad")][method])


@pytest.mark.parametrize("problem,source", [("mlp_problem", "grad"), ("mlp_problem", "value")])
def test_model_hessians_pass_check_hessian(problem, source, request):
    f, params = request.getfixturevalue(problem)
    report = fd.check_hessian(f, params, source=source)
    assert report.passed, str(report)
    n = _flat(params).size
    assert report.numerical.shape == report.analytical.shape == (n, n)
    _assert_close_scaled(report.numerical, derivatives.hessian_matrix(f, params),
                         fd.DEFAULT_RTOL[("float64", source)]["central"])


@pytest.mark.parametrize("method", ["forward", "central", "richardson"])
def test_hvp_matches_exact_hvp(method, mlp_problem):
    f, params = mlp_problem
    v = jax.tree_util.tree_map(lambda x: jnp.cos(3.0 * x), params)
    _assert_close_scaled(fd.hvp(f, params, v, method=method), derivatives.hvp(f, params, v),
                         fd.DEFAULT_RTOL[("float64", "grad")][method])
    zero = jax.tree_util.tree_map(jnp.zeros_like, params)
    np.testing.assert_array_equal(_flat(fd.hvp(f, params, zero, method=method)), 0.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_grad_keeps_dtype_and_meets_dtype_tolerance(dtype):
    f, params = _tanh_problem(dtype)
    got = fd.grad(f, params)
    assert all(leaf.dtype == dtype for leaf in jax.tree_util.tree_leaves(got))
    _assert_close_scaled(got, jax.grad(f)(params),
                         fd.DEFAULT_RTOL[(jnp.dtype(dtype).name, "grad")]["central"])


# ----------------------------------------------------------------------------- orders


def _observed_orders(errors):
    errors = np.asarray(errors)
    return np.log2(errors[:-1] / errors[1:])  # steps halve: error ∝ h^p → ratio 2^p


@pytest.mark.parametrize("method,steps,order", [
    ("forward", [4e-3, 2e-3, 1e-3], 1),
    ("backward", [4e-3, 2e-3, 1e-3], 1),
    ("central", [4e-2, 2e-2, 1e-2], 2),  # halve h → error / 4
    ("richardson", [0.4, 0.2, 0.1], 2 * (fd.RICHARDSON_LEVELS + 1)),
])
def test_error_order(method, steps, order):
    # In the truncation regime the error is C h^p (1 + O(h)); at these steps the next term
    # changes the observed order by < 0.05 (truncation >= 1e-11 ≫ round-off ~1e-15).
    _, errors = fd.step_sweep(smooth_1d, X_1D, steps=steps, method=method)
    np.testing.assert_allclose(_observed_orders(errors), order, atol=0.05)


def test_richardson_one_level_is_fourth_order():
    # (4 D(h/2) − D(h)) / 3 cancels the h² term: error / 16 per halving.
    exact = jax.grad(smooth_1d)(X_1D)["x"][0]
    errors = [abs(float(fd.richardson_grad(smooth_1d, X_1D, step=h, levels=1)[0]["x"][0] - exact))
              for h in (0.2, 0.1, 0.05)]
    np.testing.assert_allclose(_observed_orders(errors), 4, atol=0.05)


@pytest.mark.parametrize("levels", [1, 2])
def test_richardson_error_estimate_bounds_the_error(levels):
    exact = jax.grad(smooth_1d)(X_1D)["x"][0]
    estimate, error = fd.richardson_grad(smooth_1d, X_1D, step=0.2, levels=levels)
    actual = abs(float(estimate["x"][0] - exact))
    assert actual <= float(error["x"][0]) < 1e-1


@pytest.fixture(scope="module")
def default_sweep():
    return fd.step_sweep(smooth_1d, X_1D, method=["forward", "central", "richardson"])


def test_richardson_is_100x_better_than_central_at_best_step(default_sweep):
    _, errors = default_sweep
    best_central, best_richardson = np.nanmin(errors["central"]), np.nanmin(errors["richardson"])
    assert best_richardson * 100 <= best_central, (best_central, best_richardson)


@pytest.mark.parametrize("method", ["forward", "central", "richardson"])
def test_v_curve_has_interior_minimum(method, default_sweep):
    steps, errors = default_sweep
    np.testing.assert_allclose(steps[[0, -1]], [1e-1, 1e-15])
    err = errors[method]
    assert np.all(np.isfinite(err)) and err.shape == steps.shape
    best = int(np.argmin(err))
    assert 0 < best < len(steps) - 1
    # Truncation on the right, round-off on the left: both ends far above the minimum.
    assert err[0] > 100 * err[best] and err[-1] > 100 * err[best]


def test_default_steps_by_dtype_and_method():
    assert fd.default_relative_step(jnp.float64, "forward") == pytest.approx(2.0 ** -26)
    assert fd.default_relative_step(jnp.float64, "central") == pytest.approx(2.0 ** (-52 / 3))
    assert fd.default_relative_step(jnp.float32, "central") == pytest.approx(2.0 ** (-23 / 3))
    assert fd.default_relative_step(jnp.float64, "central", derivative=2) == pytest.approx(
        2.0 ** -13)
    assert fd.default_relative_step(jnp.float64, "richardson") == pytest.approx(2.0 ** (-52 / 7))


# ----------------------------------------------------------------------------- exact steps


@pytest.mark.parametrize("use_jit", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_exact_steps_make_identity_derivative_exact(method, use_jit):
    # f(x) = Σ x: with the displacement actually taken as denominator, (f(x+d) − f(x−d')) /
    # (d + d') is exactly 1. Dividing by the nominal 2h instead is off by ~ε|x|/h ≈ 1e-7.
    params = {"x": jnp.array([1.0 / 3.0, 2.7, -5.1])}
    h = 1e-10
    got = _maybe_jit(lambda p: fd.grad(lambda q: jnp.sum(q["x"]), p, method=method, step=h),
                     use_jit)(params)
    np.testing.assert_array_equal(got["x"], 1.0)
    x = params["x"]
    naive = ((x + h) - (x - h)) / (2 * h)
    assert np.max(np.abs(naive - 1.0)) > 1e-8


def test_exact_steps_with_mixed_precision_leaves():
    # A float32 leaf is moved by a step rounded to float32 (ravel_pytree promotes it to float64
    # and unravel casts back); the denominator is the displacement that survives the cast.
    params = {"a": jnp.array([0.1, 3.7], dtype=jnp.float32), "b": jnp.array([1.0 / 3.0])}
    f = lambda p: jnp.sum(p["a"].astype(jnp.float64)) + 0.0 * jnp.sum(p["b"])  # sums are exact
    got = fd.grad(f, params)
    assert got["a"].dtype == jnp.float32 and got["b"].dtype == jnp.float64
    np.testing.assert_array_equal(_flat(got), [1.0, 1.0, 0.0])
    # Dividing by the nominal float32 step instead is off by ~ulp(a)/h ≈ 1e-5.
    a = np.asarray(params["a"], np.float64)
    h = fd.default_relative_step(jnp.float32, "central") * np.maximum(1.0, np.abs(a))
    moved = (a + h).astype(np.float32).astype(np.float64) - (a - h).astype(np.float32)
    assert np.max(np.abs(moved / (2 * h) - 1.0)) > 1e-7


def test_step_too_small_to_move_gives_nan():
    got = fd.grad(lambda p: jnp.sum(p["x"] ** 2), {"x": jnp.array([1.0, 2.0])}, step=1e-30)
    assert np.all(np.isnan(got["x"]))


# ----------------------------------------------------------------------------- checkers


@pytest.mark.parametrize("factor,passes", [(1.0, True), (1.01, False)])
def test_check_grad_catches_a_one_percent_wrong_vjp(factor, passes):
    mask = np.zeros((2, 2), bool)
    mask[WRONG_AT] = True
    f = _check_fn(_wrong_grad_sin(factor, mask))
    report = fd.check_grad(f, CHECK_PARAMS)
    assert report.passed is passes
    assert set(report.per_leaf) == {"['a']", "['b']"}
    assert set(report.per_leaf["['b']"]) == {"max_abs_error", "max_rel_error"}
    assert report.per_leaf["['a']"]["max_rel_error"] < report.rtol
    assert report.max_rel_error == max(e["max_rel_error"] for e in report.per_leaf.values())
    assert report.method == "central" and report.dtype == "float64"
    text = str(report)
    assert ("PASSED" if passes else "FAILED") in text
    assert "['a']" in text and "max_rel_error" in text
    if not passes:
        assert report.worst == fd.Coordinate("['b']", WRONG_AT)
        path, index = report.worst
        assert (path, index) == ("['b']", (1, 0))
        assert report.per_leaf["['b']"]["max_rel_error"] > report.rtol
        # ∂f/∂b = cos b + b; jax.grad says 1.01 cos b + b at b = −0.4. Relative error with the
        # guarded denominator |fd| + |exact| + atol/rtol, atol/rtol = max(1, max|∇f|).
        b, wrong = -0.4, 0.01 * np.cos(-0.4)
        right = np.cos(b) + b
        guard = max(1.0, float(np.max(np.abs(_flat(jax.grad(f)(CHECK_PARAMS))))))
        assert report.max_abs_error == pytest.approx(wrong, rel=1e-6)
        assert report.max_rel_error == pytest.approx(
            wrong / (abs(right) + abs(right + wrong) + guard), rel=1e-6)
        assert "['b'][1, 0]" in text and "FAIL" in text


@pytest.mark.parametrize("source", fd.SOURCES)
@pytest.mark.parametrize("factor,passes", [(1.0, True), (1.01, False)])
def test_check_hessian_catches_a_one_percent_wrong_second_derivative(factor, passes, source):
    mask = np.zeros((2, 2), bool)
    mask[WRONG_AT] = True
    f = _check_fn(_wrong_curvature_sin(factor, mask))
    assert fd.check_grad(f, CHECK_PARAMS).passed  # the gradient itself is right
    report = fd.check_hessian(f, CHECK_PARAMS, source=source)
    assert report.passed is passes
    assert report.source == source and report.numerical.shape == (6, 6)
    assert set(report.per_leaf) == {(r, c) for r in ("['a']", "['b']") for c in ("['a']", "['b']")}
    text = str(report)
    assert ("PASSED" if passes else "FAILED") in text and "['a'] × ['b']" in text
    if not passes:
        coord = fd.Coordinate("['b']", WRONG_AT)
        assert report.worst == fd.HessianEntry((WRONG_FLAT, WRONG_FLAT), coord, coord)
        assert report.per_leaf[("['b']", "['b']")]["max_rel_error"] > report.rtol
        assert report.per_leaf[("['a']", "['b']")]["max_rel_error"] < report.rtol
        assert f"H[{WRONG_FLAT}, {WRONG_FLAT}]" in text


def test_check_hessian_from_values_catches_a_wrong_gradient():
    # A wrong VJP makes jax.grad and its Hessian consistently wrong: differencing the wrong
    # gradient (source="grad") agrees with it, only second differences of f expose it.
    mask = np.zeros((2, 2), bool)
    mask[WRONG_AT] = True
    f = _check_fn(_wrong_grad_sin(1.01, mask))
    assert fd.check_hessian(f, CHECK_PARAMS, source="grad").passed
    assert not fd.check_hessian(f, CHECK_PARAMS, source="value").passed


def test_check_grad_fails_on_nan_gradient():
    f = _check_fn(_wrong_grad_sin(jnp.nan, np.eye(2, dtype=bool)))
    report = fd.check_grad(f, CHECK_PARAMS)
    assert not report.passed
    assert report.worst.path == "['b']" and report.worst.index in ((0, 0), (1, 1))


def test_check_grad_explicit_tolerances_decide():
    mask = np.zeros((2, 2), bool)
    mask[WRONG_AT] = True
    f = _check_fn(_wrong_grad_sin(1.01, mask))
    assert fd.check_grad(f, CHECK_PARAMS, rtol=1e-2).passed  # 0.5% < 1%
    loose_abs = fd.check_grad(f, CHECK_PARAMS, rtol=1e-9, atol=1e-2)
    assert loose_abs.passed and loose_abs.atol == 1e-2


def test_float32_checks_warn_and_use_float32_tolerances():
    f, params = _tanh_problem(jnp.float32)
    with pytest.warns(fd.LowPrecisionWarning, match="float32"):
        report = fd.check_grad(f, params)
    assert report.dtype == "float32"
    assert report.rtol == fd.DEFAULT_RTOL[("float32", "grad")]["central"]
    assert report.passed, str(report)
    with pytest.warns(fd.LowPrecisionWarning, match="float32"):
        report = fd.check_hessian(f, params)
    assert report.passed, str(report)


# ----------------------------------------------------------------------------- seed notes


def _seed_compute_mixed_derivative(grad_fn, i, j, params, epsilon=1e-7):
    """Port of seed 002 slide 12 ``compute_mixed_derivative`` (NumPy, as written there)."""
    params_plus = params.copy()
    params_plus[i] += epsilon
    params_plus[j] += epsilon
    grad_plus = grad_fn(params_plus)
    params_minus = params.copy()
    params_minus[i] -= epsilon
    params_minus[j] -= epsilon
    grad_minus = grad_fn(params_minus)
    return (grad_plus[i] - grad_minus[i]) / (4 * epsilon ** 2)


def test_seed_mixed_derivative_is_wrong_and_ours_is_right():
    a = np.array([[3.0, -1.0, 0.5], [-1.0, 2.0, 0.25], [0.5, 0.25, 1.5]])
    x = np.array([0.4, -1.3, 2.2])
    grad_fn = lambda theta: a @ theta  # ∇(½ θᵀAθ)
    i, j, eps = 0, 1, 1e-7
    seed = _seed_compute_mixed_derivative(grad_fn, i, j, x, eps)
    # Moving along e_i + e_j gives the directional second derivative A_ii + A_ij, and the
    # denominator 4ε² instead of 2ε scales it by 1/(2ε): 3.0 − 1.0 → 1e7, not A_01 = −1.
    assert seed == pytest.approx((a[i, i] + a[i, j]) / (2 * eps), rel=1e-6)
    assert abs(seed - a[i, j]) > 1e6
    # Even with the denominator fixed the stencil measures A_ii + A_ij, not A_ij.
    fixed = seed * (4 * eps ** 2) / (2 * eps)
    assert fixed == pytest.approx(a[i, i] + a[i, j], rel=1e-6)
    # The four-point mixed difference of values (and differences of gradients) give A_ij.
    f = lambda p: 0.5 * p["x"] @ jnp.asarray(a) @ p["x"]
    params = {"x": jnp.asarray(x)}
    scale = max(abs(float(f(params))), float(np.max(np.abs(a @ x))))
    for source, d in (("value", 2), ("grad", 1)):
        ours = np.asarray(fd.hessian(f, params, source=source))
        np.testing.assert_allclose(ours, a, rtol=0, atol=_round_off_bound(scale, d))


# ----------------------------------------------------------------------------- jit, chunks


# Two evaluations of the same central difference that differ only in how XLA fuses f: the
# difference is FD round-off, ε/h_rel = 2.2e-16 / 6.1e-6 ≈ 4e-11 of the derivative scale; 1e-9
# leaves 25× for the constant.
JIT_VS_EAGER = 1e-9


def test_jit_traces_once_and_matches_eager(mlp_problem):
    f, params = mlp_problem
    traces = []

    def fd_grad(p):
        traces.append(1)
        return fd.grad(f, p)

    jitted = jax.jit(fd_grad)
    first = jitted(params)
    second = jitted(jax.tree_util.tree_map(lambda x: 1.1 * x, params))
    assert len(traces) == 1
    # jit fuses (and may contract to FMA) differently from eager ops, so f's round-off differs
    # by O(ε|f|), which the difference amplifies by 1/h: agreement only to ~ε/h_rel = 4e-11.
    _assert_close_scaled(first, fd.grad(f, params), JIT_VS_EAGER)
    _assert_close_scaled(second, jax.grad(f)(jax.tree_util.tree_map(lambda x: 1.1 * x, params)),
                         fd.DEFAULT_RTOL[("float64", "grad")]["central"])


def test_jit_hessian_and_hvp_and_chunks():
    f = lambda p: rosenbrock(p) + jnp.sin(p["y"]) * jnp.sum(p["x"])
    params = {"x": jnp.asarray(ROSEN_X), "y": jnp.array(0.3)}  # n = 5
    eager = fd.hessian(f, params)
    jitted = jax.jit(lambda p: fd.hessian(f, p, chunk_size=2))(params)  # 5 = 2 + 2 + 1
    _assert_close_scaled(jitted, eager, JIT_VS_EAGER)
    v = {"x": jnp.array([1.0, -2.0, 0.5, 0.25]), "y": jnp.array(1.5)}
    hv = jax.jit(lambda p, w: fd.hvp(f, p, w))(params, v)
    _assert_close_scaled(hv, eager @ _flat(v), fd.DEFAULT_RTOL[("float64", "grad")]["central"])


# ----------------------------------------------------------------------------- plotting


def test_plot_step_sweep_writes_png(tmp_path, default_sweep):
    import matplotlib
    matplotlib.use("Agg")
    steps, errors = default_sweep
    path = tmp_path / "sweep.png"
    fig, ax = fd.plot_step_sweep(steps, errors, path=path, title="V-curve")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title() == "V-curve"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"forward", "central", "richardson", "∝ h", "∝ h²"} <= set(labels)
    # Into given axes, one curve, no guides.
    from matplotlib.figure import Figure
    other = Figure().add_subplot()
    fig2, ax2 = fd.plot_step_sweep(steps, errors["central"], ax=other, slopes=())
    assert ax2 is other and len(ax2.get_lines()) == 1


# ----------------------------------------------------------------------------- bad input


def _vector_f(p):
    return p["w"] * 2.0


GOOD = {"w": jnp.ones(3)}
SCALAR_F = lambda p: jnp.sum(p["w"] ** 2)
CALLS = {
    "grad": lambda f, p, **kw: fd.grad(f, p, **kw),
    "hessian": lambda f, p, **kw: fd.hessian(f, p, **kw),
    "hvp": lambda f, p, **kw: fd.hvp(f, p, p, **kw),
    "check_grad": lambda f, p, **kw: fd.check_grad(f, p, **kw),
    "check_hessian": lambda f, p, **kw: fd.check_hessian(f, p, **kw),
    "step_sweep": lambda f, p, **kw: fd.step_sweep(f, p, **kw),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_non_scalar_f_raises(name):
    with pytest.raises(ValueError, match=rf"{name}: f must return a scalar.*\(3,\)"):
        CALLS[name](_vector_f, GOOD)


@pytest.mark.parametrize("name", list(CALLS))
def test_integer_params_raise(name):
    bad = {"w": jnp.arange(3)}
    with pytest.raises(TypeError, match=rf"{name}: params\['w'\] must have a floating dtype"):
        CALLS[name](SCALAR_F, bad)


@pytest.mark.parametrize("name", list(CALLS))
def test_unknown_method_raises(name):
    with pytest.raises(ValueError, match=rf"{name}: method must be one of .*'centre'"):
        CALLS[name](SCALAR_F, GOOD, method="centre")


@pytest.mark.parametrize("name", ["hessian", "check_hessian"])
def test_unknown_source_raises(name):
    with pytest.raises(ValueError, match=rf"{name}: source must be one of \['grad', 'value'\]"):
        CALLS[name](SCALAR_F, GOOD, source="values")


@pytest.mark.parametrize("step", [0.0, -1e-3, np.ones(3)])
@pytest.mark.parametrize("name", ["grad", "hessian", "hvp"])
def test_bad_step_raises(name, step):
    with pytest.raises(ValueError, match=rf"{name}: step must be"):
        CALLS[name](SCALAR_F, GOOD, step=step)


def test_other_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"hvp: v must have the same pytree structure"):
        fd.hvp(SCALAR_F, GOOD, {"v": jnp.ones(3)})
    with pytest.raises(ValueError, match=r"hvp: v must have the same leaf shapes"):
        fd.hvp(SCALAR_F, GOOD, {"w": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"grad: params must hold at least one array"):
        fd.grad(lambda p: 0.0, {})
    with pytest.raises(TypeError, match=r"grad: f must be a callable"):
        fd.grad(3.0, GOOD)
    with pytest.raises(ValueError, match=r"richardson_grad: levels must be an int >= 1"):
        fd.richardson_grad(SCALAR_F, GOOD, levels=0)
    with pytest.raises(ValueError, match=r"grad: chunk_size must be a positive int"):
        fd.grad(SCALAR_F, GOOD, chunk_size=0)
    with pytest.raises(ValueError, match=r"check_grad: rtol must be > 0"):
        fd.check_grad(SCALAR_F, GOOD, rtol=0.0)
    with pytest.raises(ValueError, match=r"step_sweep: steps must be a non-empty 1-D"):
        fd.step_sweep(SCALAR_F, GOOD, steps=[1e-3, -1e-4])
    with pytest.raises(ValueError, match=r"plot_step_sweep: errors\['central'\] must have the shape"):
        fd.plot_step_sweep(np.ones(3), {"central": np.ones(2)})
