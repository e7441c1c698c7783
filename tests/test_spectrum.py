"""Tests for jaxcalc.spectrum: Lanczos, top eigenpairs, power iteration, Hutchinson, SLQ.

References are dense: ``numpy.linalg.eigh`` of ``hessian_matrix`` on a tiny MLP, and random
symmetric matrices ``U diag(λ) Uᵀ`` with a chosen spectrum. Compiles dominate the run time, so
most calls are jitted once per test and reused over seeds.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from jaxcalc import activations, models
from jaxcalc import spectrum as sp
from jaxcalc.derivatives import hessian_matrix, hvp

KEY = jax.random.PRNGKey(0)
# Dense-vs-Lanczos agreement: round-off of a few dozen O(n) steps, relative to ||A||.
RTOL = {jnp.float64: 1e-10, jnp.float32: 2e-4}


def known_matrix(eigenvalues, seed=0):
    """Symmetric ``U diag(eigenvalues) Uᵀ`` with a random orthogonal ``U`` (NumPy, float64)."""
    lams = np.asarray(eigenvalues, dtype=np.float64)
    u, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(lams.size, lams.size)))
    return (u * lams) @ u.T, u


def tridiag(alphas, betas):
    """Lanczos T (NumPy float64): diagonal ``alphas``, off-diagonals ``betas[:-1]``."""
    alphas, betas = np.asarray(alphas, np.float64), np.asarray(betas, np.float64)
    return np.diag(alphas) + np.diag(betas[:-1], 1) + np.diag(betas[:-1], -1)


def matvec_of(a, dtype=jnp.float64):
    a = jnp.asarray(a, dtype)
    return lambda v: a @ v


@functools.lru_cache(maxsize=None)
def mlp_problem(loss):
    """``mlp([3, 5, 2], "tanh")`` (32 params) with a small loss on n = 4 examples, dense Hessian."""
    init, apply = models.mlp([3, 5, 2], "tanh")
    _, params = init(jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    if loss == "mse":
        y = jax.random.normal(jax.random.PRNGKey(3), (4, 2))
        f = lambda p: 0.5 * jnp.mean(jnp.sum((apply(p, x) - y) ** 2, axis=-1))
    else:
        labels = jnp.array([0, 1, 1, 0])
        f = lambda p: -jnp.mean(jnp.take_along_axis(
            activations.log_softmax(apply(p, x)), labels[:, None], axis=1))
    h = np.asarray(jax.jit(functools.partial(hessian_matrix, f))(params))
    return f, params, h


# ----------------------------------------------------------------------------- lanczos


@pytest.mark.parametrize("dtype, use_jit", [(jnp.float64, False), (jnp.float64, True),
                                            (jnp.float32, True)])
def test_lanczos_basis_is_orthonormal_and_tridiagonalizes(dtype, use_jit):
    n, m = 12, 8
    a, _ = known_matrix(np.linspace(-2.0, 3.0, n), seed=1)
    run = lambda key: sp.lanczos(matvec_of(a, dtype), n, m, key, return_basis=True, dtype=dtype)
    run = jax.jit(run) if use_jit else run
    alphas, betas, q = run(KEY)
    assert alphas.shape == betas.shape == (m,) and q.shape == (m, n)
    assert alphas.dtype == betas.dtype == q.dtype == dtype
    alphas, betas, q = (np.asarray(t, np.float64) for t in (alphas, betas, q))
    tol = RTOL[dtype] * np.abs(a).max() * n
    np.testing.assert_allclose(q @ q.T, np.eye(m), atol=tol)
    t = tridiag(alphas, betas)
    np.testing.assert_allclose(q @ a @ q.T, t, atol=tol)
    # A Qᵀ = Qᵀ T + betas[-1] r e_{m-1}ᵀ with a unit residual r orthogonal to Q.
    resid = a @ q.T - q.T @ t
    np.testing.assert_allclose(resid[:, :-1], 0.0, atol=tol)
    np.testing.assert_allclose(np.linalg.norm(resid[:, -1]), betas[-1], atol=tol)
    assert np.all(betas[:-1] > 0)


def test_lanczos_ritz_values_match_extreme_eigenvalues():
    n, m = 60, 30
    lams = np.concatenate([[10.0, 8.0, 7.0], np.linspace(-1.0, 1.0, n - 6), [-5.0, -6.0, -9.0]])
    a, _ = known_matrix(lams, seed=2)
    alphas, betas = jax.jit(lambda k: sp.lanczos(matvec_of(a), n, m, k))(KEY)
    theta = np.linalg.eigvalsh(tridiag(alphas, betas))
    np.testing.assert_allclose(theta[-3:], [7.0, 8.0, 10.0], rtol=1e-8)
    np.testing.assert_allclose(theta[:3], [-9.0, -6.0, -5.0], rtol=1e-8)
    # Interlacing: every Ritz value lies inside the spectrum.
    assert theta.min() >= -9.0 - 1e-10 and theta.max() <= 10.0 + 1e-10


def test_reorthogonalization_prevents_ghost_eigenvalues():
    """Plain Lanczos loses orthogonality once λ = 100 converges and then finds it again (Paige)."""
    n, m = 50, 40
    lams = np.concatenate([[100.0, 50.0], np.linspace(0.0, 1.0, n - 2)])
    a, _ = known_matrix(lams, seed=0)
    results = {}
    for reorth in (True, False):
        run = jax.jit(lambda k: sp.lanczos(matvec_of(a), n, m, k, reorthogonalize=reorth,
                                           return_basis=True))
        alphas, betas, q = (np.asarray(t) for t in run(KEY))
        theta = np.linalg.eigvalsh(tridiag(alphas, betas))
        results[reorth] = (np.abs(q @ q.T - np.eye(m)).max(), np.sum(np.abs(theta - 100.0) < 1e-6))
    orth_err, copies = results[True]
    assert orth_err < 1e-13 and copies == 1
    orth_err, copies = results[False]
    assert orth_err > 0.1 and copies > 1


@pytest.mark.parametrize("reorth", [True, False])
def test_lanczos_breakdown_gives_no_nan(reorth):
    """diag(3, 3, 3, 2, 1, 1) has three distinct eigenvalues, so every Krylov space is 3-D and
    the third step breaks down: β₂ = 0 exactly (set by the breakdown test, no NaN)."""
    d = jnp.array([3.0, 3.0, 3.0, 2.0, 1.0, 1.0])
    n = d.size
    alphas, betas, q = jax.jit(lambda k: sp.lanczos(lambda v: d * v, n, n, k,
                                                    reorthogonalize=reorth, return_basis=True))(KEY)
    assert np.all(np.isfinite(alphas)) and np.all(np.isfinite(betas)) and np.all(np.isfinite(q))
    assert float(betas[2]) == 0.0
    if reorth:
        # The restart keeps T = Q A Qᵀ, so at m = n every eigenvalue appears with its multiplicity.
        t = tridiag(alphas, betas)
        np.testing.assert_allclose(np.linalg.eigvalsh(t), np.sort(np.asarray(d)), atol=1e-12)
        np.testing.assert_allclose(np.asarray(q @ q.T), np.eye(n), atol=1e-13)


_FULL_LANCZOS_6 = jax.jit(lambda a, key: sp.lanczos(lambda v: a @ v, 6, 6, key))


@settings(max_examples=25, deadline=None)
@given(spectrum=st.lists(st.integers(-3, 3), min_size=6, max_size=6),
       seed=st.integers(0, 2 ** 16))
def test_full_lanczos_recovers_spectrum_with_multiplicities(spectrum, seed):
    """At m = n the Ritz values are the whole spectrum, even with repeated eigenvalues (several
    breakdowns and restarts) — one compile, many matrices."""
    a, _ = known_matrix(spectrum, seed=seed)
    alphas, betas = _FULL_LANCZOS_6(jnp.asarray(a), jax.random.PRNGKey(seed))
    t = tridiag(alphas, betas)
    np.testing.assert_allclose(np.linalg.eigvalsh(t), np.sort(spectrum), atol=1e-12)


def test_lanczos_zero_and_identity_operators():
    run = jax.jit(lambda scale: sp.lanczos(lambda v: scale * v, 4, 4, KEY))
    for scale in (0.0, 1.0):
        alphas, betas = run(scale)
        np.testing.assert_allclose(alphas, scale, atol=1e-15)
        np.testing.assert_allclose(betas, 0.0, atol=1e-15)


# ----------------------------------------------------------------------------- eigenvalues


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_top_eigenvalues_match_dense_hessian(loss):
    f, params, h = mlp_problem(loss)
    values, vectors = jax.jit(lambda p, k: sp.top_eigenvalues(f, p, 3, key=k))(params, KEY)
    exact = np.linalg.eigvalsh(h)[::-1][:3]
    np.testing.assert_allclose(values, exact, rtol=1e-8)
    assert isinstance(vectors, list) and len(vectors) == 3
    for lam, v in zip(values, vectors):
        assert jax.tree_util.tree_structure(v) == jax.tree_util.tree_structure(params)
        flat = np.asarray(ravel_pytree(v)[0])
        np.testing.assert_allclose(np.linalg.norm(flat), 1.0, rtol=1e-12)
        np.testing.assert_allclose(h @ flat, lam * flat, atol=1e-8 * np.abs(exact).max())


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_top_eigenvalues_matvec_known_spectrum(dtype):
    """Well-separated top eigenvalues converge long before num_iters = dim."""
    n = 40
    lams = np.concatenate([[20.0, 12.0, 9.0], np.linspace(-3.0, 3.0, n - 3)])
    a, u = known_matrix(lams, seed=3)
    values, vectors = jax.jit(lambda k: sp.top_eigenvalues_matvec(
        matvec_of(a, dtype), n, 3, key=k, num_iters=25, dtype=dtype))(KEY)
    assert values.shape == (3,) and vectors.shape == (3, n) and values.dtype == dtype
    rtol = 1e-8 if dtype == jnp.float64 else RTOL[dtype]
    np.testing.assert_allclose(values, [20.0, 12.0, 9.0], rtol=rtol)
    overlap = np.abs(np.sum(np.asarray(vectors, np.float64) * u[:, :3].T, axis=1))
    np.testing.assert_allclose(overlap, 1.0, atol=10 * rtol)


def test_top_eigenvalues_of_quadratic_on_a_pytree():
    """f(θ) = ½ θᵀAθ over a dict of arrays has Hessian A in ravel_pytree order. Run eagerly
    (the MLP cases run under jit), with k = num_iters = dim, the largest values allowed."""
    a, _ = known_matrix([4.0, -7.0, 1.0, 2.0, 0.5, 3.0, -1.0], seed=4)
    params = {"b": jnp.ones((2, 2)), "a": jnp.zeros(3)}
    f = lambda p: 0.5 * ravel_pytree(p)[0] @ jnp.asarray(a) @ ravel_pytree(p)[0]
    values, vectors = sp.top_eigenvalues(f, params, k=7, key=KEY)
    np.testing.assert_allclose(values, [4.0, 3.0, 2.0, 1.0, 0.5, -1.0, -7.0], rtol=1e-12)
    flat = np.stack([np.asarray(ravel_pytree(v)[0]) for v in vectors])
    np.testing.assert_allclose(flat @ flat.T, np.eye(7), atol=1e-12)


def test_ravel_matvec_matches_dense_hessian():
    f, params, h = mlp_problem("mse")
    matvec, dim, unravel = sp.ravel_matvec(lambda v: hvp(f, params, v), params)
    assert dim == h.shape[0]
    v = jax.random.normal(KEY, (dim,))
    np.testing.assert_allclose(jax.jit(matvec)(v), h @ np.asarray(v), rtol=1e-12, atol=1e-12)
    assert jax.tree_util.tree_structure(unravel(v)) == jax.tree_util.tree_structure(params)


# ----------------------------------------------------------------------------- power iteration


def test_power_iteration_finds_negative_dominant_eigenvalue():
    n = 20
    lams = np.concatenate([[-10.0, 5.0], np.linspace(-4.0, 4.0, n - 2)])
    a, u = known_matrix(lams, seed=5)
    run = jax.jit(lambda k, tol: sp.power_iteration_matvec(matvec_of(a), n, k, num_iters=500,
                                                           tol=tol), static_argnums=1)
    lam, v = run(KEY, 1e-14)
    np.testing.assert_allclose(lam, -10.0, rtol=1e-10)
    np.testing.assert_allclose(abs(float(np.dot(v, u[:, 0]))), 1.0, atol=1e-8)
    # A loose tolerance stops early and is measurably less accurate.
    lam_loose, _ = run(KEY, 1e-2)
    assert abs(float(lam_loose) + 10.0) > 1e3 * abs(float(lam) + 10.0)


def test_power_iteration_on_mlp_hessian():
    f, params, h = mlp_problem("cross_entropy")
    exact = np.linalg.eigvalsh(h)
    dominant = exact[np.argmax(np.abs(exact))]
    lam, v = jax.jit(lambda p, k: sp.power_iteration(f, p, k, num_iters=5000, tol=1e-15))(
        params, KEY)
    np.testing.assert_allclose(lam, dominant, rtol=1e-8)
    flat = np.asarray(ravel_pytree(v)[0])
    np.testing.assert_allclose(np.linalg.norm(flat), 1.0, rtol=1e-12)
    # The eigenvalue error is quadratic in the eigenvector error, so a 1e-8-accurate Rayleigh
    # quotient only pins the vector to about sqrt(1e-8) = 1e-4.
    np.testing.assert_allclose(h @ flat, lam * flat, atol=1e-4 * abs(dominant))


def test_power_iteration_zero_operator_has_no_nan():
    lam, v = sp.power_iteration_matvec(lambda v: 0.0 * v, 5, KEY)
    assert float(lam) == 0.0 and np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------- hutchinson


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_hutchinson_within_four_standard_errors(distribution):
    f, params, h = mlp_problem("mse")
    trace = np.trace(h)
    run = jax.jit(lambda p, k: sp.hutchinson_trace(f, p, k, num_samples=200,
                                                   distribution=distribution))
    for seed in range(5):
        estimate, se = run(params, jax.random.PRNGKey(seed))
        assert se > 0
        assert abs(float(estimate) - trace) < 4 * float(se)
    # The check has power: a trace off by 10 standard errors is rejected.
    assert abs(float(estimate) - (trace + 10 * float(se))) > 4 * float(se)


@pytest.mark.parametrize("distribution, num_samples",
                         [("rademacher", 100), ("rademacher", 1600), ("gaussian", 400)])
def test_hutchinson_standard_error_shrinks_like_inverse_sqrt(distribution, num_samples):
    """√m · SE matches the probe's exact standard deviation for every m, i.e. SE ∝ 1/√m."""
    n = 20
    a, _ = known_matrix(np.linspace(-2.0, 4.0, n), seed=6)
    variance = 2 * np.sum(a ** 2)  # Gaussian: Var zᵀAz = 2‖A‖_F²
    if distribution == "rademacher":
        variance -= 2 * np.sum(np.diag(a) ** 2)  # Rademacher: 2 Σ_{i≠j} A_ij²
    _, se = sp.hutchinson_trace_matvec(matvec_of(a), n, KEY, num_samples=num_samples,
                                       distribution=distribution, batch_size=50)
    np.testing.assert_allclose(float(se) * np.sqrt(num_samples), np.sqrt(variance), rtol=0.25)


def test_hutchinson_rademacher_is_exact_on_diagonal():
    d = jnp.array([1.0, -2.0, 3.5, 0.25])
    estimate, se = sp.hutchinson_trace_matvec(lambda v: d * v, 4, KEY, num_samples=8)
    np.testing.assert_allclose(estimate, float(jnp.sum(d)), rtol=1e-14)
    assert float(se) <= 1e-15


# ----------------------------------------------------------------------------- SLQ


def test_slq_quadrature_is_exact_for_low_moments():
    """Rademacher probes on a diagonal A give vᵀAᵏv/‖v‖² = mean(dᵏ): Gauss quadrature with m
    nodes must reproduce moments k < 2m exactly, and weights sum to one."""
    d = np.linspace(-1.0, 2.0, 30) ** 3
    m = 4
    nodes, weights = jax.jit(lambda k: sp.slq_nodes_weights_matvec(
        lambda v: jnp.asarray(d) * v, d.size, k, num_iters=m, num_probes=3))(KEY)
    assert nodes.shape == weights.shape == (3, m)
    np.testing.assert_allclose(np.sum(weights, axis=1), 1.0, rtol=1e-12)
    for power in range(2 * m):
        moments = np.sum(weights * np.asarray(nodes) ** power, axis=1)
        np.testing.assert_allclose(moments, np.mean(d ** power), rtol=1e-9, atol=1e-12)
    # Degree 2m is beyond Gauss exactness: the rule must miss it.
    moment = np.sum(weights[0] * np.asarray(nodes[0]) ** (2 * m))
    assert abs(moment - np.mean(d ** (2 * m))) > 1e-6


def test_spectral_density_equals_smoothed_spectrum_at_full_rank():
    d = np.array([-1.0, -0.5, 0.0, 0.3, 1.0, 2.5])
    sigma = 0.1
    grid = np.linspace(-2.0, 3.5, 401)
    density = sp.spectral_density_matvec(lambda v: jnp.asarray(d) * v, d.size, KEY,
                                         num_iters=d.size, num_probes=2, grid=grid, sigma=sigma)
    exact = np.mean(np.exp(-0.5 * ((grid[:, None] - d) / sigma) ** 2), axis=1) / (
        sigma * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(density, exact, atol=1e-10)


@pytest.mark.parametrize("loss, use_jit", [("mse", True), ("cross_entropy", False)])
def test_spectral_density_of_mlp_hessian(loss, use_jit):
    f, params, h = mlp_problem(loss)
    exact = np.linalg.eigvalsh(h)
    n, probes, sigma = h.shape[0], 4, 0.05
    grid = np.linspace(exact.min() - 10 * sigma, exact.max() + 10 * sigma, 2001)
    run = lambda p, k: sp.spectral_density(f, p, k, num_iters=20, num_probes=probes,
                                           grid=grid, sigma=sigma)
    run = jax.jit(run) if use_jit else run
    density = np.asarray(run(params, KEY))
    assert density.shape == grid.shape and np.all(density >= 0)
    np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, rtol=1e-8)
    # The mean is (1/P) Σ vᵀHv/n with Rademacher v: unbiased for tr(H)/n, with standard deviation
    # sqrt(2 Σ_{i≠j} H_ij²) / (n √P).
    mean = np.trapezoid(grid * density, grid)
    sd = np.sqrt(2 * (np.sum(h ** 2) - np.sum(np.diag(h) ** 2))) / (n * np.sqrt(probes))
    assert abs(mean - np.trace(h) / n) < 4 * sd


# ----------------------------------------------------------------------------- bad input


def _mlp_f():
    init, apply = models.mlp([3, 5, 2], "tanh")
    _, params = init(jax.random.PRNGKey(1))
    x = jnp.ones((4, 3))
    return (lambda p: jnp.mean(apply(p, x) ** 2)), (lambda p: apply(p, x)), params


def _bad_calls():
    f, f_vector, params = _mlp_f()
    eye = lambda v: v
    grid = jnp.linspace(0.0, 1.0, 5)
    return [
        ("k > dim", lambda: sp.top_eigenvalues(f, params, 33, key=KEY),
         ValueError, r"top_eigenvalues: k must be in \[1, 32\].*dimension 32.*got 33"),
        ("k > num_iters", lambda: sp.top_eigenvalues(f, params, 5, num_iters=4, key=KEY),
         ValueError, r"top_eigenvalues: num_iters must be in \[5, 32\].*got 4"),
        ("k = 0", lambda: sp.top_eigenvalues_matvec(eye, 4, 0, key=KEY),
         ValueError, r"top_eigenvalues_matvec: k must be in \[1, 4\].*got 0"),
        ("f non-scalar", lambda: sp.top_eigenvalues(f_vector, params, key=KEY),
         ValueError, r"top_eigenvalues: f must return a scalar, got .*\(4, 2\)"),
        ("f non-scalar power", lambda: sp.power_iteration(f_vector, params, KEY),
         ValueError, r"power_iteration: f must return a scalar"),
        ("integer params", lambda: sp.hutchinson_trace(
            lambda p: jnp.sum(p["w"] ** 2).astype(jnp.float64), {"w": jnp.arange(3)}, KEY,
            num_samples=4),
         TypeError, r"hutchinson_trace: params must have a floating dtype, got int"),
        ("lanczos num_iters 0", lambda: sp.lanczos(eye, 4, 0, KEY),
         ValueError, r"lanczos: num_iters must be in \[1, 4\] \(dim = 4\), got 0"),
        ("lanczos num_iters > dim", lambda: sp.lanczos(eye, 4, 5, KEY),
         ValueError, r"lanczos: num_iters must be in \[1, 4\] \(dim = 4\), got 5"),
        ("lanczos traced num_iters", lambda: jax.jit(lambda m: sp.lanczos(eye, 4, m, KEY))(3),
         TypeError, r"lanczos: num_iters must be a Python int"),
        ("matvec wrong shape", lambda: sp.lanczos(lambda v: v[:3], 4, 2, KEY),
         ValueError, r"lanczos: matvec must map a \(4,\) vector to a \(4,\) vector"),
        ("integer dtype", lambda: sp.lanczos(eye, 4, 2, KEY, dtype=jnp.int32),
         TypeError, r"lanczos: dtype must be a floating dtype, got int32"),
        ("power num_iters", lambda: sp.power_iteration(f, params, KEY, num_iters=0),
         ValueError, r"power_iteration: num_iters must be >= 1, got 0"),
        ("power tol", lambda: sp.power_iteration_matvec(eye, 4, KEY, tol=-1.0),
         ValueError, r"power_iteration_matvec: tol must be >= 0, got -1.0"),
        ("distribution", lambda: sp.hutchinson_trace(f, params, KEY, num_samples=4,
                                                     distribution="normal"),
         ValueError, r"hutchinson_trace: distribution must be one of \['rademacher', 'gaussian'\], "
                     r"got 'normal'"),
        ("num_samples 1", lambda: sp.hutchinson_trace_matvec(eye, 4, KEY, num_samples=1),
         ValueError, r"hutchinson_trace_matvec: num_samples must be >= 2, got 1"),
        ("slq num_iters > dim", lambda: sp.slq_nodes_weights(f, params, KEY, num_iters=40,
                                                             num_probes=1),
         ValueError, r"slq_nodes_weights: num_iters must be in \[1, 32\] \(dim = 32\), got 40"),
        ("slq num_probes 0", lambda: sp.slq_nodes_weights_matvec(eye, 4, KEY, num_iters=2,
                                                                 num_probes=0),
         ValueError, r"slq_nodes_weights_matvec: num_probes must be >= 1, got 0"),
        ("grid 2-D", lambda: sp.spectral_density_matvec(eye, 4, KEY, num_iters=2, num_probes=1,
                                                        grid=jnp.zeros((2, 3)), sigma=0.1),
         ValueError, r"spectral_density_matvec: grid must be 1-D \(num_points,\), got shape \(2, 3\)"),
        ("sigma 0", lambda: sp.spectral_density(f, params, KEY, num_iters=2, num_probes=1,
                                                grid=grid, sigma=0.0),
         ValueError, r"spectral_density: sigma must be > 0, got 0.0"),
        ("dim 0", lambda: sp.power_iteration_matvec(eye, 0, KEY),
         ValueError, r"power_iteration_matvec: dim must be >= 1, got 0"),
    ]


_BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("name, call, error, match", _BAD_CALLS, ids=[c[0] for c in _BAD_CALLS])
def test_bad_input_raises(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_valid_edge_input_does_not_raise():
    """The bounds above are tight: num_samples = 2 is accepted (k = num_iters = dim is used in
    test_top_eigenvalues_of_quadratic_on_a_pytree)."""
    estimate, _ = sp.hutchinson_trace_matvec(lambda v: v, 4, KEY, num_samples=2)
    np.testing.assert_allclose(estimate, 4.0, rtol=1e-14)
