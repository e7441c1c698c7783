"""Property-based tests of the calculus modules (derivatives, finite_diff, spectrum), issue #8.

Hypothesis draws the values (and a few shapes) of small problems whose answers are known in
closed form or by an independent route:

* ``hvp`` equals ``hessian_matrix @ v``, both equal the closed-form Hessian of
  ``½xᵀAx + bᵀx + Σ c tanh(x)``, and the operator is symmetric (``u·Hv = v·Hu``);
* the GGN, true Fisher and empirical Fisher of a small MLP are PSD, and GGN = Fisher for the
  softmax cross-entropy (canonical link);
* ``check_grad`` passes for ``jax.grad`` and fails for a gradient perturbed in one coordinate,
  and names that coordinate as the worst;
* Hutchinson's estimate is exact for Rademacher probes on a diagonal matrix and within a few
  standard errors for Gaussian probes;
* Lanczos with ``num_iters = dim`` finds the whole spectrum of a symmetric matrix;
* float32 and float64 inputs give float32 and float64 results.

Each property has a fast test (profile ``ci``, run by default) and a ``thorough`` twin
(``pytest -m thorough``: 1000 examples each, 6000 in all). Library calls are jitted with the
problem data as arguments, so one compilation serves every example of a shape and dtype; only
the checkers (Python reports) run eagerly.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.flatten_util import ravel_pytree

from jaxcalc import derivatives as D
from jaxcalc import finite_diff as fd
from jaxcalc import models
from jaxcalc import spectrum as sp

DTYPES = [jnp.float32, jnp.float64]
DTYPE_IDS = ["float32", "float64"]
# Closed form vs autodiff, relative to the scale of the result.
TOL = {jnp.float32: 2e-5, jnp.float64: 1e-10}
# Leaf shapes of the two-leaf params {"a", "b"}: n = 3 and n = 7 parameters.
SHAPES = [((1,), (1, 2)), ((3,), (2, 2))]
# Besides ordinary values: zero, tiny, huge (tanh saturates), and a float32 subnormal.
SPECIAL = [0.0, 1e-30, -1e-30, 1e4, -1e4, 1e-39]


def floats(dtype, low, high):
    width = 32 if dtype == jnp.float32 else 64
    return st.floats(low, high, width=width, allow_nan=False, allow_infinity=False)


def arrays(data, dtype, shape, low=-3.0, high=3.0, special=()):
    """A NumPy array of ``dtype`` with values in ``[low, high]`` and some ``special`` ones."""
    elements = floats(dtype, low, high)
    if special:
        elements = st.one_of(elements, st.sampled_from(special))
    return data.draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))


def assert_close(actual, desired, tol, what=""):
    """max |actual - desired| <= tol * max(1, max |desired|)."""
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    assert actual.shape == desired.shape, (what, actual.shape, desired.shape)
    scale = max(1.0, float(np.max(np.abs(desired), initial=0.0)))
    err = float(np.max(np.abs(actual - desired), initial=0.0))
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


def leaf_dtypes(tree):
    return {jnp.result_type(leaf) for leaf in jax.tree_util.tree_leaves(tree)}


# ----------------------------------------------------------------------------- hvp / Hessian


def objective(params, A, b, c):
    """``½xᵀAx + bᵀx + Σ c tanh(x)`` of the ravelled params ``x`` (``A`` need not be symmetric)."""
    x = ravel_pytree(params)[0]
    return 0.5 * x @ (A @ x) + b @ x + jnp.sum(c * jnp.tanh(x))


def objective_hessian(x, A, c):
    """Closed form ``(A + Aᵀ)/2 + diag(c · tanh''(x))``, ``tanh'' = -2 tanh (1 - tanh²)``."""
    x, A, c = (np.asarray(a, np.float64) for a in (x, A, c))
    t = np.tanh(x)
    return 0.5 * (A + A.T) + np.diag(c * (-2.0 * t * (1.0 - t * t)))


@jax.jit
def _hvp_products(params, A, b, c, u, v):
    f = lambda p: objective(p, A, b, c)
    return D.hvp(f, params, u), D.hvp(f, params, v), D.hessian_matrix(f, params)


def _check_hvp_matches_hessian(dtype, data):
    shape_a, shape_b = data.draw(st.sampled_from(SHAPES))
    params = {"a": arrays(data, dtype, shape_a, special=SPECIAL),
              "b": arrays(data, dtype, shape_b, special=SPECIAL)}
    n = int(np.prod(shape_a) + np.prod(shape_b))
    A = arrays(data, dtype, (n, n), -2.0, 2.0)
    b, c = arrays(data, dtype, (n,), -2.0, 2.0), arrays(data, dtype, (n,), -2.0, 2.0)
    u = {k: arrays(data, dtype, np.shape(leaf), -2.0, 2.0) for k, leaf in params.items()}
    v = {k: arrays(data, dtype, np.shape(leaf), -2.0, 2.0) for k, leaf in params.items()}

    hu, hv, H = _hvp_products(params, A, b, c, u, v)

    assert leaf_dtypes(hv) == {jnp.dtype(dtype)} and H.dtype == dtype
    tol = TOL[dtype]
    x = ravel_pytree(params)[0]
    assert_close(H, objective_hessian(x, A, c), tol, "hessian_matrix vs closed form")
    np.testing.assert_array_equal(H, H.T)
    flat_u, flat_v = ravel_pytree(u)[0], ravel_pytree(v)[0]
    H64 = np.asarray(H, np.float64)
    assert_close(ravel_pytree(hv)[0], H64 @ np.asarray(flat_v, np.float64), tol, "hvp vs H v")
    # The operator itself is symmetric: u·(Hv) = v·(Hu), from two separate products.
    uhv = float(np.dot(np.asarray(flat_u, np.float64), np.asarray(ravel_pytree(hv)[0], np.float64)))
    vhu = float(np.dot(np.asarray(flat_v, np.float64), np.asarray(ravel_pytree(hu)[0], np.float64)))
    scale = np.linalg.norm(H64) * np.linalg.norm(flat_u) * np.linalg.norm(flat_v)
    assert abs(uhv - vhu) <= 10 * tol * max(1.0, float(scale)), (uhv, vhu)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_hvp_matches_hessian(dtype, data):
    _check_hvp_matches_hessian(dtype, data)


@pytest.mark.thorough
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_hvp_matches_hessian_thorough(dtype, data):
    _check_hvp_matches_hessian(dtype, data)


# ----------------------------------------------------------------------------- GGN / Fisher

MLP = models.mlp([2, 3, 2], "tanh")
_MLP_PARAMS = MLP.init(jax.random.PRNGKey(0))[1]


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy with integer labels, written out (not jaxcalc.losses)."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=-1))


# Round-off in J^T Λ J is ~ε·max_i ||J_i||²·||Λ_i|| (||Λ_i|| <= 1 here), whatever the size of
# the result: a large Jacobian whose common-mode part Λ annihilates (inputs of 1e4 feeding both
# logits alike) leaves an O(1) result carrying errors of ε·||J||². The tolerances use that scale.
CURVATURE_EPS_FACTOR = 100


@jax.jit
def _curvatures(params, x, y):
    ggn = D.ggn_matrix(MLP.apply, cross_entropy, params, x, y)
    fisher = D.fisher_matrix(MLP.apply, params, x, "categorical")
    empirical = D.empirical_fisher_matrix(
        lambda p, batch: cross_entropy(MLP.apply(p, batch[0]), batch[1]), params, (x, y))
    flat, unravel = ravel_pytree(params)
    jacobian = jax.jacfwd(lambda q: MLP.apply(unravel(q), x))(flat)  # (N, C, n), a reference
    return ggn, fisher, empirical, jacobian


def _check_curvature_psd(dtype, data):
    flat, unravel = ravel_pytree(_MLP_PARAMS)
    params = unravel(jnp.asarray(arrays(data, dtype, flat.shape, -2.0, 2.0)))
    x = arrays(data, dtype, (3, 2), special=SPECIAL)
    y = data.draw(hnp.arrays(np.int32, (3,), elements=st.integers(0, 1)))

    ggn, fisher, empirical, jacobian = _curvatures(params, x, y)

    J = np.asarray(jacobian, np.float64)
    scale = max(1.0, float(np.max(np.sum(J * J, axis=(1, 2)))))  # max_i ||J_i||_F²
    tol = CURVATURE_EPS_FACTOR * float(jnp.finfo(dtype).eps) * scale
    for M, what in ((ggn, "GGN"), (fisher, "Fisher"), (empirical, "empirical Fisher")):
        assert M.dtype == dtype, (what, M.dtype)
        M = np.asarray(M, np.float64)
        assert np.all(np.isfinite(M)), what
        np.testing.assert_array_equal(M, M.T)
        smallest = float(np.linalg.eigvalsh(M).min())
        assert smallest >= -tol, f"{what}: eigenvalue {smallest:.3e} < -{tol:.1e}"
    # Canonical link: the true Fisher of a categorical model is the GGN of its cross-entropy.
    err = float(np.max(np.abs(np.asarray(fisher, np.float64) - np.asarray(ggn, np.float64))))
    assert err <= tol, f"Fisher vs GGN: {err:.3e} > {tol:.1e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_curvature_matrices_are_psd(dtype, data):
    _check_curvature_psd(dtype, data)


@pytest.mark.thorough
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_curvature_matrices_are_psd_thorough(dtype, data):
    _check_curvature_psd(dtype, data)


# ----------------------------------------------------------------------------- check_grad


def smooth(params, c):
    """``Σ c₀ sin x + ½ Σ c₁ x² + log(1 + |x|²)``: smooth, with every order of derivative."""
    x = ravel_pytree(params)[0]
    return jnp.sum(c[0] * jnp.sin(x)) + 0.5 * jnp.sum(c[1] * x * x) + jnp.log1p(x @ x)


def with_wrong_gradient(f, k, delta):
    """``f`` with its derivative along flat coordinate ``k`` off by ``delta`` (values unchanged)."""

    @jax.custom_jvp
    def wrong(p):
        return f(p)

    @wrong.defjvp
    def wrong_jvp(primals, tangents):
        (p,), (t,) = primals, tangents
        y, dy = jax.jvp(f, (p,), (t,))
        return y, dy + delta * ravel_pytree(t)[0][k]

    return wrong


def _check_grad_checker(data):
    shape_a, shape_b = SHAPES[1]
    dtype = jnp.float64
    tiny = [0.0, 1e-30, -1e-30]  # values where FD steps fall back to the absolute scale
    params = {"a": jnp.asarray(arrays(data, dtype, shape_a, special=tiny)),
              "b": jnp.asarray(arrays(data, dtype, shape_b, special=tiny))}
    n = int(np.prod(shape_a) + np.prod(shape_b))
    c = jnp.asarray(arrays(data, dtype, (2, n), -2.0, 2.0))
    f = lambda p: smooth(p, c)

    good = fd.check_grad(f, params)
    assert good.passed, str(good)
    assert good.max_rel_error <= good.rtol

    k = data.draw(st.integers(0, n - 1), label="perturbed coordinate")
    size = data.draw(st.floats(1e-4, 1.0), label="relative perturbation")
    sign = data.draw(st.sampled_from([-1.0, 1.0]))
    scale = max(1.0, float(np.max(np.abs(ravel_pytree(jax.grad(f)(params))[0]))))
    bad = fd.check_grad(with_wrong_gradient(f, k, sign * size * scale), params)
    assert not bad.passed, str(bad)
    n_a = int(np.prod(shape_a))
    expected = (fd.Coordinate("['a']", (k,)) if k < n_a
                else fd.Coordinate("['b']", tuple(divmod(k - n_a, shape_b[1]))))
    assert bad.worst == expected, (bad.worst, expected)


@given(data=st.data())
def test_check_grad_passes_correct_and_fails_perturbed(data):
    _check_grad_checker(data)


@pytest.mark.thorough
@given(data=st.data())
def test_check_grad_passes_correct_and_fails_perturbed_thorough(data):
    _check_grad_checker(data)


# ----------------------------------------------------------------------------- Hutchinson

NUM_PROBES = 256


@jax.jit
def _traces(d, key):
    """Hutchinson on ``diag(d)``: Rademacher and Gaussian probes, and the Hessian form on
    ``½ Σ d_i x_i²`` (whose Hessian is ``diag(d)`` at any point)."""
    matvec = lambda z: d * z
    kwargs = dict(num_samples=NUM_PROBES, dtype=d.dtype)
    rademacher = sp.hutchinson_trace_matvec(matvec, d.shape[0], key, **kwargs)
    gaussian = sp.hutchinson_trace_matvec(matvec, d.shape[0], key, distribution="gaussian",
                                          **kwargs)
    params = {"a": d[:1], "b": d[1:]}  # only the layout and dtype matter
    f = lambda p: 0.5 * jnp.sum(d * ravel_pytree(p)[0] ** 2)
    hessian = sp.hutchinson_trace(f, params, key, num_samples=4)
    return rademacher, gaussian, hessian


def _check_hutchinson(dtype, data):
    d = jnp.asarray(arrays(data, dtype, (6,), -5.0, 5.0, special=[0.0, 1e-30]))
    key = jax.random.PRNGKey(data.draw(st.integers(0, 2**31 - 1), label="seed"))
    trace = float(np.sum(np.asarray(d, np.float64)))
    tol = TOL[dtype] * max(1.0, float(np.sum(np.abs(np.asarray(d, np.float64)))))

    rademacher, gaussian, hessian = _traces(d, key)

    assert leaf_dtypes((rademacher, gaussian, hessian)) == {jnp.dtype(dtype)}
    # Rademacher on a diagonal matrix: every probe gives z·Dz = Σ d_i z_i² = tr D exactly.
    for estimate, error in (rademacher, hessian):
        assert abs(float(estimate) - trace) <= tol and float(error) <= tol, (estimate, trace)
    # Gaussian probes: unbiased with variance 2 Σ d_i², so within 6 standard errors; the
    # reported standard error estimates that one.
    estimate, error = gaussian
    true_error = float(np.sqrt(2 * np.sum(np.asarray(d, np.float64) ** 2) / NUM_PROBES))
    assert abs(float(estimate) - trace) <= 6 * true_error + tol, (estimate, trace, true_error)
    if true_error > 1e-3:
        assert 0.25 <= float(error) / true_error <= 4.0, (error, true_error)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_hutchinson_trace_on_diagonal_matrices(dtype, data):
    _check_hutchinson(dtype, data)


@pytest.mark.thorough
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_hutchinson_trace_on_diagonal_matrices_thorough(dtype, data):
    _check_hutchinson(dtype, data)


# ----------------------------------------------------------------------------- Lanczos


@jax.jit
def _full_lanczos(A, key):
    dim = A.shape[0]
    return sp.top_eigenvalues_matvec(lambda v: A @ v, dim, dim, key=key, num_iters=dim,
                                     dtype=A.dtype)


def _check_full_spectrum(dtype, data):
    dim = 5
    M = arrays(data, dtype, (dim, dim), -3.0, 3.0, special=[0.0])
    A = jnp.asarray(0.5 * (M + M.T))
    key = jax.random.PRNGKey(data.draw(st.integers(0, 2**31 - 1), label="seed"))

    values, vectors = _full_lanczos(A, key)

    assert values.dtype == dtype and vectors.dtype == dtype
    A64 = np.asarray(A, np.float64)
    norm = max(1.0, float(np.linalg.norm(A64, 2)))
    tol = 10 * TOL[dtype] * norm
    np.testing.assert_allclose(values, np.linalg.eigvalsh(A64)[::-1], rtol=0, atol=tol)
    Y = np.asarray(vectors, np.float64)
    np.testing.assert_allclose(np.linalg.norm(Y, axis=1), 1.0, atol=10 * TOL[dtype])
    residuals = np.linalg.norm(Y @ A64 - np.asarray(values, np.float64)[:, None] * Y, axis=1)
    assert residuals.max() <= tol, residuals


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_lanczos_finds_the_whole_spectrum(dtype, data):
    _check_full_spectrum(dtype, data)


@pytest.mark.thorough
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_lanczos_finds_the_whole_spectrum_thorough(dtype, data):
    _check_full_spectrum(dtype, data)


# ----------------------------------------------------------------------------- dtypes


@jax.jit
def _everything(params, v, key):
    f = lambda p: jnp.sum(jnp.tanh(p["a"]) * p["a"]) + jnp.sum(jnp.sin(p["b"]) ** 2)
    return {
        "derivatives.jacobian_matrix": D.jacobian_matrix(lambda p: jnp.tanh(p["a"]), params),
        "finite_diff.grad": fd.grad(f, params),
        "finite_diff.hessian": fd.hessian(f, params, source="value"),
        "finite_diff.hvp": fd.hvp(f, params, v),
        "spectrum.top_eigenvalues": sp.top_eigenvalues(f, params, 2, key=key),
        "spectrum.power_iteration": sp.power_iteration(f, params, key, num_iters=5),
        "spectrum.spectral_density": sp.spectral_density(
            f, params, key, num_iters=2, num_probes=1,
            grid=jnp.linspace(-1, 1, 3, dtype=v["a"].dtype), sigma=0.5),
    }


def _check_dtypes(dtype, data):
    params = {"a": jnp.asarray(arrays(data, dtype, (3,), special=SPECIAL)),
              "b": jnp.asarray(arrays(data, dtype, (2,), special=SPECIAL))}
    v = {k: jnp.asarray(arrays(data, dtype, leaf.shape)) for k, leaf in params.items()}
    key = jax.random.PRNGKey(data.draw(st.integers(0, 2**31 - 1), label="seed"))

    results = _everything(params, v, key)

    for name, result in results.items():
        assert leaf_dtypes(result) == {jnp.dtype(dtype)}, (name, leaf_dtypes(result))
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(result)), name


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_results_follow_the_input_dtype(dtype, data):
    _check_dtypes(dtype, data)


@pytest.mark.thorough
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@given(data=st.data())
def test_results_follow_the_input_dtype_thorough(dtype, data):
    _check_dtypes(dtype, data)
