"""Tests for ``jaxcalc.trainers``: the ``Trainer(init, step)`` contract, convergence, agreement
with optax / scipy / the seeds' NumPy rules, second-order safeguards, and argument checks.

Float64 throughout (``tests/conftest.py``) unless a test builds float32 arrays explicitly.
Shapes are tiny; every compiled ``step`` is reused by the cases that share its configuration.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxcalc import derivatives, losses, models, trainers
from jaxcalc.trainers import _second_order

F64_EXACT = 1e-12   # closed form vs closed form in float64 (same arithmetic up to round-off)
F64_AGREE = 1e-10   # two exact float64 computations along different paths

# ----------------------------------------------------------------------------- problems


def _least_squares_data(num=8, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(num, dim))
    y = X @ rng.normal(size=dim) + 0.3 * rng.normal(size=num)
    return jnp.asarray(X), jnp.asarray(y)


LSQ_X, LSQ_Y = _least_squares_data()
LSQ_BATCH = (LSQ_X, LSQ_Y)


def linear_apply(params, x):
    """``x @ w + b``: (N, d) -> (N,)."""
    return x @ params["w"] + params["b"]


def lsq_loss(params, batch):
    """½ mean squared residual: a convex quadratic with Hessian [X 1]ᵀ[X 1] / N."""
    x, y = batch
    return 0.5 * jnp.mean(jnp.square(linear_apply(params, x) - y))


def lsq_of_output(out, y):
    return 0.5 * jnp.mean(jnp.square(out - y))


def lsq_init(dtype=jnp.float64):
    return {"w": jnp.zeros(3, dtype), "b": jnp.zeros((), dtype)}


def lsq_solution():
    A = np.concatenate([np.asarray(LSQ_X), np.ones((LSQ_X.shape[0], 1))], axis=1)
    coef = np.linalg.lstsq(A, np.asarray(LSQ_Y), rcond=None)[0]
    return {"w": coef[:3], "b": coef[3]}


def rosenbrock(params, batch):
    """The Rosenbrock function; it ignores ``batch`` (a dummy one satisfies the contract)."""
    x = params["x"]
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


DUMMY_BATCH = (jnp.zeros((1,)),)


def indefinite_quartic(params, batch):
    """½θᵀAθ + bᵀθ + ¼Σθ⁴ with the (indefinite) A and b carried in the batch (leading axis 1)."""
    A, b = batch[0][0], batch[1][0]
    t = params["t"]
    return 0.5 * t @ A @ t + b @ t + 0.25 * jnp.sum(t ** 4)


def random_indefinite_batch(seed, n=4):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n, n))
    eigs = np.linspace(-3.0, 2.0, n)
    Q = np.linalg.qr(M)[0]
    A = (Q * eigs) @ Q.T
    return (jnp.asarray(A)[None], jnp.asarray(rng.normal(size=n))[None])


def _logistic_data(num=30, seed=1):
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(size=(num, 2)), np.ones((num, 1))], axis=1)
    y = (rng.uniform(size=num) < 1 / (1 + np.exp(-(X @ np.array([1.5, -2.0, 0.3]))))).astype(float)
    return jnp.asarray(X), jnp.asarray(y)


LOGREG_X, LOGREG_Y = _logistic_data()
L2 = 0.1


def logreg_apply(params, x):
    return x @ params["w"]


def logreg_loss(params, batch):
    """Mean Bernoulli NLL of logits ``x @ w`` plus ``L2/2 ‖w‖²``."""
    x, y = batch
    z = logreg_apply(params, x)
    return jnp.mean(jax.nn.softplus(z) - y * z) + 0.5 * L2 * jnp.sum(jnp.square(params["w"]))


def scipy_logreg_optimum():
    X, y = np.asarray(LOGREG_X), np.asarray(LOGREG_Y)
    n = X.shape[0]

    def f(w):
        z = X @ w
        return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * L2 * w @ w

    def jac(w):
        p = 1 / (1 + np.exp(-(X @ w)))
        return X.T @ (p - y) / n + L2 * w

    def hess(w):
        p = 1 / (1 + np.exp(-(X @ w)))
        return (X.T * (p * (1 - p))) @ X / n + L2 * np.eye(X.shape[1])

    res = scipy.optimize.minimize(f, np.zeros(3), jac=jac, hess=hess, method="trust-exact",
                                  options={"gtol": 1e-12})
    assert res.success, res.message
    return res.x


def _softmax_data(num=10, dim=3, classes=3, seed=2):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(num, dim))), jnp.asarray(rng.integers(0, classes, num))


SOFTMAX_X, SOFTMAX_Y = _softmax_data()


def softmax_apply(params, x):
    return x @ params["W"] + params["b"]


def softmax_loss(params, batch):
    x, y = batch
    logp = jax.nn.log_softmax(softmax_apply(params, x), axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=-1))


def softmax_params():
    rng = np.random.default_rng(3)
    return {"W": jnp.asarray(0.5 * rng.normal(size=(3, 3))),
            "b": jnp.asarray(0.1 * rng.normal(size=3))}


# ----------------------------------------------------------------------------- helpers


def max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def run(trainer, params, batch, steps):
    """``steps`` steps in one compiled ``lax.scan``; returns (params, state, stacked metrics)."""

    @jax.jit
    def go(params, state):
        def body(carry, _):
            p, s = carry
            p, s, m = trainer.step(p, s, batch)
            return (p, s), m

        (p, s), ms = lax.scan(body, (params, state), None, length=steps)
        return p, s, ms

    return go(params, trainer.init(params))


def one_step(trainer, params, batch, use_jit):
    step = jax.jit(trainer.step) if use_jit else trainer.step
    return step(params, trainer.init(params), batch)


def counting(loss_fn):
    """``loss_fn`` plus a counter of its Python calls (= traces under jit)."""
    calls = {"n": 0}

    def wrapped(params, batch):
        calls["n"] += 1
        return loss_fn(params, batch)

    return wrapped, calls


# ----------------------------------------------------------------------------- trainer zoo

GAUSS = dict(apply_fn=linear_apply, likelihood="gaussian")
GN = dict(curvature="gauss_newton", apply_fn=linear_apply, loss_of_output=lsq_of_output)


def _zoo(loss):
    """Every trainer configuration on the least-squares problem: name -> (trainer, steps, tol).

    Step sizes come from the spectrum of H = [X 1]ᵀ[X 1]/N, eigenvalues 0.107 … 1.62: lr 1 for
    GD contracts by 0.89 per step. Adaptive methods (Adam, RMSprop) hover at a distance ~lr from
    the optimum, so they get a decaying schedule. The empirical Fisher is Σ rᵢ² aᵢaᵢᵀ/N, not H:
    at the optimum the eigenvalues of F⁻¹H reach 550 (small residuals, Kunstner et al. 2019),
    so its natural gradient needs lr < 2/550.
    """
    decay = lambda rate: optax.exponential_decay(0.1, transition_steps=1, decay_rate=rate)
    exact = dict(damping=0.0)
    return {
        "sgd": (trainers.sgd(loss, 1.0), 300, 1e-12),
        "sgd_momentum": (trainers.sgd(loss, 0.5, momentum=0.5), 300, 1e-12),
        "sgd_nesterov": (trainers.sgd(loss, 0.5, momentum=0.5, nesterov=True), 300, 1e-12),
        "rmsprop": (trainers.rmsprop(loss, decay(0.97)), 600, 1e-12),
        "adam": (trainers.from_optax(loss, optax.adam(decay(0.99))), 900, 1e-6),
        "ng_empirical": (trainers.natural_gradient(loss, 0.003), 700, 1e-10),
        "ng_empirical_cg": (trainers.natural_gradient(loss, 0.003, solver="cg"), 700, 1e-8),
        "ng_true": (trainers.natural_gradient(loss, 1.0, fisher="true", **exact, **GAUSS), 3,
                    1e-12),
        "ng_true_cg": (trainers.natural_gradient(loss, 1.0, fisher="true", solver="cg", **exact,
                                                 **GAUSS), 3, 1e-10),
        "ng_mc": (trainers.natural_gradient(loss, 0.5, fisher="mc", mc_samples=4, **GAUSS),
                  100, 1e-12),
        "ng_adapt": (trainers.natural_gradient(loss, 1.0, damping=1.0, fisher="true",
                                               adapt_damping=True, **GAUSS), 40, 1e-12),
        "newton": (trainers.newton(loss), 2, 1e-12),
        "newton_no_line_search": (trainers.newton(loss, line_search=False), 2, 1e-12),
        "newton_cg": (trainers.newton(loss, solver="cg"), 10, 1e-10),
        "newton_gauss_newton": (trainers.newton(loss, **GN), 2, 1e-12),
        "newton_gauss_newton_cg": (trainers.newton(loss, solver="cg", **GN), 10, 1e-10),
        "newton_saddle_free": (trainers.newton(loss, curvature="saddle_free"), 2, 1e-12),
        "newton_adapt": (trainers.newton(loss, damping=1.0, adapt_damping=True,
                                         line_search=False), 40, 1e-12),
    }


ZOO_NAMES = list(_zoo(lsq_loss))
SECOND_ORDER = [n for n in ZOO_NAMES if n.startswith(("ng_", "newton"))]


@functools.lru_cache(maxsize=None)
def zoo_entry(name):
    """``(trainer, jax.jit(trainer.step), trace counter, steps, tol)``, compiled once per session.

    Only ``test_trainer_converges_without_retracing`` calls the cached step more than once with
    float64 inputs, so its first call is the first that can see a stepped state."""
    loss, calls = counting(lsq_loss)
    trainer, steps, tol = _zoo(loss)[name]
    return trainer, jax.jit(trainer.step), calls, steps, tol


# ----------------------------------------------------------------------------- convergence


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_trainer_converges_without_retracing(name):
    """Convergence on a convex quadratic, the metrics contract, and no retrace after step 1
    (loss_fn's Python trace count must not grow from the second call on)."""
    trainer, step, calls, steps, tol = zoo_entry(name)
    params = lsq_init()
    params, state, metrics = step(params, trainer.init(params), LSQ_BATCH)
    traced = calls["n"]
    assert traced > 0
    first_loss = float(metrics["loss"])
    np.testing.assert_allclose(first_loss, float(lsq_loss(lsq_init(), LSQ_BATCH)), rtol=1e-14)
    for _ in range(steps - 1):
        params, state, metrics = step(params, state, LSQ_BATCH)
    assert calls["n"] == traced, f"{name}: step retraced after its first call"
    assert max_abs_diff(params, lsq_solution()) < tol
    assert float(metrics["loss"]) < first_loss
    expected = {"loss", "grad_norm"} | ({"damping", "step_size"} if name in SECOND_ORDER else set())
    assert expected <= set(metrics)
    for key, value in metrics.items():
        assert np.shape(value) == (), (key, np.shape(value))
        assert np.all(np.isfinite(np.asarray(value))), key


@pytest.mark.parametrize("name,use_jit", [
    ("newton", True), ("newton_no_line_search", True), ("newton_gauss_newton", True),
    ("newton_saddle_free", True), ("ng_true", True),
    ("ng_true", False),  # one eager run: eager second-order steps cost seconds each
])
def test_full_newton_step_lands_on_the_minimizer_of_a_quadratic(name, use_jit):
    """lr 1, no damping: one step solves a convex quadratic. For least squares the
    Gauss-Newton matrix and the Gaussian Fisher both equal the Hessian, and |H| = H."""
    trainer = zoo_entry(name)[0]
    step = zoo_entry(name)[1] if use_jit else trainer.step
    params0 = {"w": jnp.array([0.5, -0.3, 0.2]), "b": jnp.array(0.1)}
    params, _, metrics = step(params0, trainer.init(params0), LSQ_BATCH)
    assert max_abs_diff(params, lsq_solution()) < F64_EXACT
    assert float(metrics["step_size"]) == 1.0
    assert float(metrics["damping"]) == 0.0
    g = ravel_pytree(jax.grad(lsq_loss)(params0, LSQ_BATCH))[0]
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(jnp.linalg.norm(g)), rtol=1e-14)


def _rosenbrock_np(x):
    return scipy.optimize.rosen(x), scipy.optimize.rosen_der(x), scipy.optimize.rosen_hess(x)


def test_newton_on_rosenbrock_dense_converges_in_under_50_steps():
    trainer = trainers.newton(rosenbrock)
    step = jax.jit(trainer.step)
    params = {"x": jnp.array([-1.2, 1.0])}
    state = trainer.init(params)
    losses = []
    for k in range(1, 50):
        params, state, metrics = step(params, state, DUMMY_BATCH)
        losses.append(float(metrics["loss"]))
        if np.max(np.abs(np.asarray(params["x"]) - 1.0)) < 1e-8:
            break
    assert np.max(np.abs(np.asarray(params["x"]) - 1.0)) < 1e-8, (k, params)
    assert np.all(np.diff(losses) <= 0)


def test_newton_cg_on_rosenbrock_reaches_the_minimum():
    """Truncated CG is inexact early (forcing term 0.5‖g‖) and answers negative curvature with a
    gradient-like step, so it crawls along the curved valley: ~65 steps (scipy's Newton-CG: 86)."""
    trainer = trainers.newton(rosenbrock, solver="cg")
    params, _, metrics = run(trainer, {"x": jnp.array([-1.2, 1.0])}, DUMMY_BATCH, 100)
    assert np.max(np.abs(np.asarray(params["x"]) - 1.0)) < 1e-8
    assert np.all(np.diff(np.asarray(metrics["loss"])) <= 0)


@pytest.fixture(scope="module")
def logreg_optimum():
    return scipy_logreg_optimum()


def test_newton_matches_scipy_trust_exact_on_l2_logistic_regression(logreg_optimum):
    trainer = trainers.newton(logreg_loss)
    params, _, _ = run(trainer, {"w": jnp.zeros(3)}, (LOGREG_X, LOGREG_Y), 10)
    np.testing.assert_allclose(params["w"], logreg_optimum, rtol=0, atol=1e-6)


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_natural_gradient_matches_scipy_trust_exact_on_l2_logistic_regression(solver,
                                                                              logreg_optimum):
    r"""The true Fisher F ignores the L2 term, so the step is :math:`(F + \lambda I)^{-1}(g +
    \alpha w)`: a preconditioned gradient step whose fixed point is the regularized optimum. Near
    it the error contracts by :math:`1 - \eta (f + \alpha)/(f + \lambda)` per Fisher eigenvalue f;
    with η = 1 and λ = 2α that factor lies in [0, 1/2], so it converges at least linearly
    (λ < α/2 would diverge along directions the data do not constrain)."""
    trainer = trainers.natural_gradient(logreg_loss, 1.0, damping=2 * L2, fisher="true",
                                        solver=solver, apply_fn=logreg_apply,
                                        likelihood="bernoulli")
    params, _, metrics = run(trainer, {"w": jnp.zeros(3)}, (LOGREG_X, LOGREG_Y), 60)
    np.testing.assert_allclose(params["w"], logreg_optimum, rtol=0, atol=1e-6)
    losses = np.asarray(metrics["loss"])
    assert np.all(np.diff(losses) <= 1e-15 * losses[1:])


def test_seed_two_layer_sigmoid_net_learns_xor():
    net = models.two_layer_sigmoid(2, 4, 1)
    X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = jnp.array([[0.0], [1.0], [1.0], [0.0]])
    mse = lambda p, b: jnp.mean(jnp.square(net.apply(p, b[0]) - b[1]))  # the seed's loss
    _, params = net.init(jax.random.PRNGKey(0))
    assert not np.array_equal(np.round(np.asarray(net.apply(params, X))), np.asarray(y))
    params, _, metrics = run(trainers.sgd(mse, 2.0, momentum=0.9), params, (X, y), 300)
    np.testing.assert_array_equal(np.round(np.asarray(net.apply(params, X))), np.asarray(y))
    assert float(metrics["loss"][-1]) < 0.01


# ----------------------------------------------------------------------------- vs references


def _seed_adaptive_learning_rate_trajectory(w, b, lr, beta, steps):
    """Seed 002 slide 6, AdaptiveLearningRate, in NumPy: v ← βv + (1-β)g², θ ← θ - lr/(√v+1e-8)·g,
    with the least-squares gradient written by hand."""
    X, y = np.asarray(LSQ_X), np.asarray(LSQ_Y)
    v_w, v_b, out = 0.0, 0.0, []
    for _ in range(steps):
        r = X @ w + b - y
        g_w, g_b = X.T @ r / len(y), np.mean(r)
        v_w = beta * v_w + (1 - beta) * g_w ** 2
        v_b = beta * v_b + (1 - beta) * g_b ** 2
        w = w - lr / (np.sqrt(v_w) + 1e-8) * g_w
        b = b - lr / (np.sqrt(v_b) + 1e-8) * g_b
        out.append({"w": w, "b": b})
    return out


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_rmsprop_equals_optax_rmsprop_and_the_seed_rule(dtype):
    """Same arithmetic as optax up to XLA's fusion choices, whose last-bit differences 1/√v
    amplifies as g → 0: 1e-12 in float64, 1e-6 (~10 ulps of the O(1) parameters) in float32."""
    lr, beta, steps = 0.05, 0.8, 20
    start = {"w": np.array([0.5, -0.3, 0.2]), "b": np.float64(0.1)}
    params0 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), start)
    batch = (LSQ_X.astype(dtype), LSQ_Y.astype(dtype))
    trainer = trainers.rmsprop(lsq_loss, lr, decay=beta)
    reference = optax.rmsprop(lr, decay=beta, eps=1e-8, eps_in_sqrt=False)

    @jax.jit
    def reference_step(q, r):
        updates, r = reference.update(jax.grad(lsq_loss)(q, batch), r, q)
        return optax.apply_updates(q, updates), r

    step = jax.jit(trainer.step)
    p, s = params0, trainer.init(params0)
    q, r = params0, reference.init(params0)
    seed = _seed_adaptive_learning_rate_trajectory(start["w"], start["b"], lr, beta, steps)
    tol = 1e-12 if dtype == jnp.float64 else 1e-6
    for k in range(steps):
        p, s, _ = step(p, s, batch)
        q, r = reference_step(q, r)
        assert max_abs_diff(p, q) < tol, k
        if dtype == jnp.float64:  # the seed's rule runs in NumPy float64
            assert max_abs_diff(p, seed[k]) < F64_AGREE, k
        assert p["w"].dtype == dtype
    assert max_abs_diff(p, params0) > 0.1  # the trajectory went somewhere


def _centered(params):
    """Drop the component along W → W + v1ᵀ, b → b + c1, to which softmax is blind."""
    return {"W": params["W"] - params["W"].mean(axis=1, keepdims=True),
            "b": params["b"] - params["b"].mean()}


@pytest.mark.parametrize("damping", [1e-3, 0.0])
def test_natural_gradient_true_fisher_equals_newton_on_softmax_regression(damping):
    """Cross-entropy with a linear model and the canonical (softmax) link: F = H exactly.

    Both are singular along W → W + v1ᵀ, b → b + c1 (softmax is shift-invariant). With λ > 0
    the steps agree outright. With λ = 0 both solvers lift the same τ ≈ 1.5e-8; g is zero along
    that null space only up to round-off (~1e-17), which 1/τ turns into ~1e-9 of null-space
    drift that differs between the two solves, so the steps are compared with it removed."""
    params, batch = softmax_params(), (SOFTMAX_X, SOFTMAX_Y)
    ng = trainers.natural_gradient(softmax_loss, 1.0, damping=damping, fisher="true",
                                   apply_fn=softmax_apply, likelihood="categorical")
    nt = trainers.newton(softmax_loss, damping=damping, line_search=False)
    p_ng, _, m_ng = one_step(ng, params, batch, True)
    p_nt, _, m_nt = one_step(nt, params, batch, True)
    if damping:
        assert max_abs_diff(p_ng, p_nt) < F64_AGREE
        assert float(m_ng["damping"]) == float(m_nt["damping"]) == damping
    else:
        assert max_abs_diff(_centered(p_ng), _centered(p_nt)) < F64_AGREE
        assert max_abs_diff(p_ng, p_nt) < 1e-7
        assert 0 < float(m_ng["damping"]) < 1e-7 and 0 < float(m_nt["damping"]) < 1e-7
    assert max_abs_diff(_centered(p_ng), _centered(params)) > 1e-2  # a real step


def _seed_natural_gradient_update(params, lr, damping):
    """Seed 002 slide 11, NaturalGradientOptimizer.update, in NumPy with every example once:
    F = mean_i g_i g_iᵀ + λI, θ ← θ - lr·F⁻¹ g. Parameters in ravel_pytree order (b, w)."""
    X, y = np.asarray(LSQ_X), np.asarray(LSQ_Y)
    w, b = np.asarray(params["w"]), float(params["b"])
    residual = X @ w + b - y
    per_example = np.concatenate([residual[:, None], residual[:, None] * X], axis=1)  # (N, 1 + d)
    fisher = sum(np.outer(g, g) for g in per_example) / len(y)
    fisher += np.eye(fisher.shape[0]) * damping
    grad = per_example.mean(axis=0)
    natural = np.linalg.solve(fisher, grad)
    return {"w": w - lr * natural[1:], "b": b - lr * natural[0]}


@pytest.mark.parametrize("name,use_jit", [("ng_empirical", True), ("ng_empirical", False),
                                           ("ng_empirical_cg", True)])
def test_natural_gradient_empirical_fisher_matches_the_seed_update(name, use_jit):
    """The zoo's empirical-Fisher trainers: lr 0.003, the seed's damping 1e-4."""
    trainer, step = zoo_entry(name)[:2]
    step = step if use_jit else trainer.step
    params = {"w": jnp.array([0.5, -0.3, 0.2]), "b": jnp.array(0.1)}
    new, _, _ = step(params, trainer.init(params), LSQ_BATCH)
    expected = _seed_natural_gradient_update(params, 0.003, 1e-4)
    moved = max_abs_diff(new, params)
    assert moved > 1e-3
    # dense: a Cholesky solve vs np.linalg.solve. cg: jax's CG stops at a relative residual of
    # 1e-5, and the damped Fisher is well conditioned here (κ ≈ 30).
    tol = F64_AGREE if name == "ng_empirical" else 1e-5 * moved
    assert max_abs_diff(new, expected) < tol


@pytest.mark.parametrize("fisher", ["ng_empirical", "ng_true"])
def test_natural_gradient_cg_solver_matches_dense(fisher):
    params = {"w": jnp.array([0.5, -0.3, 0.2]), "b": jnp.array(0.1)}
    steps = {}
    for name in (fisher, fisher + "_cg"):
        trainer, step = zoo_entry(name)[:2]
        steps[name] = step(params, trainer.init(params), LSQ_BATCH)[0]
    # jax.scipy.sparse.linalg.cg stops at a relative residual of 1e-5 (its default tol).
    delta = max_abs_diff(steps[fisher], params)
    assert delta > 1e-3
    assert max_abs_diff(steps[fisher + "_cg"], steps[fisher]) < 1e-5 * delta


MC_COMMON = dict(damping=1e-4, apply_fn=logreg_apply, likelihood="bernoulli")
MC_PARAMS = {"w": jnp.array([0.3, -0.4, 0.1])}


def _ng_step_w(**kwargs):
    trainer = trainers.natural_gradient(logreg_loss, 1.0, **MC_COMMON, **kwargs)
    return np.asarray(one_step(trainer, MC_PARAMS, (LOGREG_X, LOGREG_Y), True)[0]["w"]
                      - MC_PARAMS["w"])


def test_natural_gradient_mc_fisher_with_many_samples_approaches_the_true_step():
    """MC Fisher error ~ 1/√(S·N): S = 4000 labels for each of N = 30 inputs → ~0.3 %.

    The state carries the (here typed) key: the same state gives the same step, the next
    state fresh labels and so a slightly different step."""
    step_true = _ng_step_w(fisher="true")
    trainer = trainers.natural_gradient(logreg_loss, 1.0, fisher="mc", mc_samples=4000,
                                        key=jax.random.key(7), **MC_COMMON)
    step = jax.jit(trainer.step)
    state0 = trainer.init(MC_PARAMS)
    batch = (LOGREG_X, LOGREG_Y)
    p1, state1, _ = step(MC_PARAMS, state0, batch)
    step_mc = np.asarray(p1["w"] - MC_PARAMS["w"])
    rel = np.linalg.norm(step_mc - step_true) / np.linalg.norm(step_true)
    assert 0 < rel < 3e-2
    assert max_abs_diff(step(MC_PARAMS, state0, batch)[0], p1) == 0.0
    assert max_abs_diff(step(MC_PARAMS, state1, batch)[0], p1) > 1e-8
    assert not np.array_equal(jax.random.key_data(state0["key"]),
                              jax.random.key_data(state1["key"]))


def test_natural_gradient_mc_fisher_cg_solver_approaches_the_true_step():
    if not hasattr(derivatives, "mc_fisher_vp"):
        pytest.skip("derivatives.mc_fisher_vp is not there yet (fisher='mc' with solver='cg')")
    step_true = _ng_step_w(fisher="true")
    step_mc = _ng_step_w(fisher="mc", solver="cg", mc_samples=4000, key=jax.random.PRNGKey(7))
    rel = np.linalg.norm(step_mc - step_true) / np.linalg.norm(step_true)
    assert 0 < rel < 3e-2


# ----------------------------------------------------------------------------- safeguards


def saddle(params, batch):
    """x² − y² + y⁴/4: a saddle at the origin, minima at (0, ±√2) with value −1."""
    x, y = params["z"][0], params["z"][1]
    return x ** 2 - y ** 2 + 0.25 * y ** 4


def test_saddle_free_newton_escapes_a_saddle_that_attracts_plain_newton():
    start = np.array([0.5, 0.05])
    # Plain Newton, θ ← θ − H⁻¹g with no damping and no line search, converges to the saddle.
    z = start.copy()
    for _ in range(20):
        g = np.array([2 * z[0], -2 * z[1] + z[1] ** 3])
        H = np.diag([2.0, -2.0 + 3 * z[1] ** 2])
        z = z - np.linalg.solve(H, g)
    assert np.max(np.abs(z)) < 1e-12
    # Saddle-free Newton follows the negative curvature down to a minimum.
    for line_search in (True, False):
        trainer = trainers.newton(saddle, curvature="saddle_free", line_search=line_search)
        params, _, _ = run(trainer, {"z": jnp.asarray(start)}, DUMMY_BATCH, 30)
        np.testing.assert_allclose(np.asarray(params["z"]), [0.0, np.sqrt(2.0)], atol=1e-10)


def test_newton_on_indefinite_curvature_takes_a_moderate_descent_step():
    """The library's Newton lifts an indefinite H to H + λ'I with λ' = 2|λ_min| + τ, so even
    without a line search it is not attracted to the saddle, and its step along the negative
    eigenvector is |g_y| / |λ_min|-sized (a shift of |λ_min| + τ alone made it ~|g_y|/τ ≈ 1e7)."""
    start = jnp.array([0.5, 0.05])
    trainer = trainers.newton(saddle, line_search=False)
    params, _, metrics = run(trainer, {"z": start}, DUMMY_BATCH, 30)
    lam_min = -2.0 + 3 * 0.05 ** 2
    np.testing.assert_allclose(float(metrics["damping"][0]), -2 * lam_min, rtol=1e-6)
    first = one_step(trainer, {"z": start}, DUMMY_BATCH, True)[0]["z"]
    g_y = -2 * 0.05 + 0.05 ** 3
    np.testing.assert_allclose(float(first[1] - start[1]), -g_y / -lam_min, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(params["z"]), [0.0, np.sqrt(2.0)], atol=1e-10)


NEWTON_VARIANTS = {
    "dense": dict(),
    "cg": dict(solver="cg"),
    "saddle_free": dict(curvature="saddle_free"),
    "dense_adapt": dict(damping=0.5, adapt_damping=True),
    "big_first_step": dict(learning_rate=1e3, solver="cg"),
}


@pytest.mark.parametrize("variant", list(NEWTON_VARIANTS))
def test_newton_with_line_search_never_increases_the_loss(variant):
    trainer = trainers.newton(indefinite_quartic, **NEWTON_VARIANTS[variant])

    @jax.jit
    def trajectory(params, batch):
        def body(carry, _):
            p, s = carry
            p, s, m = trainer.step(p, s, batch)
            return (p, s), (m["loss"], indefinite_quartic(p, batch), m["step_size"])

        return lax.scan(body, (params, trainer.init(params)), None, length=12)[1]

    rng = np.random.default_rng(11)
    for seed in range(4):
        batch = random_indefinite_batch(seed)
        before, after, t = trajectory({"t": jnp.asarray(0.3 * rng.normal(size=4))}, batch)
        assert np.all(np.asarray(after) <= np.asarray(before)), (seed, before, after)
        assert float(after[-1]) < float(before[0]) - 0.1
        if variant == "big_first_step":
            assert float(t[0]) < 1e3  # the search backtracked


def test_armijo_takes_no_step_when_no_decrease_is_found():
    f = lambda x: jnp.sum(x ** 2)
    x = jnp.array([1.0, -1.0])
    uphill = jnp.array([1.0, -1.0])  # f increases along d for every t > 0
    search = jax.jit(lambda d, slope: _second_order.armijo(f, x, d, f(x), slope, 1.0))
    t, ft = search(uphill, jnp.array(-1.0))
    assert float(t) == 0.0 and float(ft) == 2.0
    t, ft = search(-uphill, jnp.array(-4.0))
    assert float(t) == 1.0 and float(ft) == 0.0  # the full step to the minimum is accepted
    t, ft = search(-4 * uphill, jnp.array(-16.0))
    assert float(t) == 0.25 and float(ft) == 0.0  # overshoot ×4: two halvings


LM_CASES = [  # (actual Δf, predicted Δm, loss, expected factor on λ = 0.3, expected ρ)
    (-0.1, -1.0, 1.0, 1.5, 0.1),            # ρ < 1/4: grow
    (2.0, -1.0, 1.0, 4.0, -2.0),            # uphill: reject, grow ×4
    (-0.5, -1.0, 1.0, 1.0, 0.5),            # keep
    (-0.9, -1.0, 1.0, 2 / 3, 0.9),          # ρ > 3/4: shrink
    (np.nan, -1.0, 1.0, 4.0, -1.0),         # non-finite / failed search: reject, grow ×4
    (0.0, -1e-20, 1.0, 2 / 3, 1.0),         # |Δm| below round-off of f: ρ = 1, not noise
    (-1e-20, -1e-20, 0.0, 2 / 3, 1.0),      # f = 0 resolves any Δm ≠ 0
]


@pytest.mark.parametrize("actual,predicted,loss,factor,rho", LM_CASES)
def test_levenberg_marquardt_rule(actual, predicted, loss, factor, rho):
    new, got_rho, accept = _second_order.levenberg_marquardt(
        jnp.array(0.3), jnp.array(actual), jnp.array(predicted), jnp.array(loss))
    np.testing.assert_allclose(float(got_rho), rho, rtol=1e-14)
    assert bool(accept) == (rho > 0)
    np.testing.assert_allclose(float(new), 0.3 * factor, rtol=1e-14)


def test_levenberg_marquardt_floors_the_damping():
    new, _, _ = _second_order.levenberg_marquardt(jnp.array(0.0), jnp.array(-1.0),
                                                  jnp.array(-1.0), jnp.array(1.0))
    assert float(new) == _second_order.LM_FLOOR
    new, _, _ = _second_order.levenberg_marquardt(jnp.array(0.0), jnp.array(1.0),
                                                  jnp.array(-1.0), jnp.array(1.0))
    assert float(new) == _second_order.LM_FLOOR * _second_order.LM_REJECT_GROW


def _expected_lm(lam, rho):
    if rho <= 0:
        return max(lam, _second_order.LM_FLOOR) * _second_order.LM_REJECT_GROW
    if rho < 0.25:
        return max(lam, _second_order.LM_FLOOR) * 1.5
    if rho > 0.75:
        return max(lam * 2 / 3, _second_order.LM_FLOOR)
    return lam


def test_newton_damping_adapts_by_the_levenberg_marquardt_rule():
    """ρ = (f(θ+δ) − f(θ)) / (gᵀδ + ½δᵀHδ) recomputed with scipy's Rosenbrock derivatives. The
    recomputed Δf carries an absolute round-off of ~ε·f and δ = θ_new − θ one of ~ε·‖θ‖, so ρ
    agrees to ~ε·(f/|Δm| + ‖θ‖/‖δ‖) once the steps get short."""
    trainer = trainers.newton(rosenbrock, damping=1.0, adapt_damping=True, line_search=False)
    step = jax.jit(trainer.step)
    params = {"x": jnp.array([-1.2, 1.0])}
    state = trainer.init(params)
    seen = set()
    for _ in range(40):  # 29 steps reach 1e-8, 3 of them rejected
        lam = float(state["damping"])
        new, state, metrics = step(params, state, DUMMY_BATCH)
        x, x_new = np.asarray(params["x"]), np.asarray(new["x"])
        f, g, H = _rosenbrock_np(x)
        delta = x_new - x
        predicted = g @ delta + 0.5 * delta @ H @ delta
        if abs(predicted) > 1e3 * np.finfo(float).eps * abs(f):
            rho = (scipy.optimize.rosen(x_new) - f) / predicted
            eps = np.finfo(float).eps
            tol = 1e-9 + 1e2 * eps * (abs(f) / abs(predicted)
                                      + np.linalg.norm(x) / np.linalg.norm(delta))
            assert abs(float(metrics["rho"]) - rho) <= tol, (rho, metrics["rho"])
            seen.add("grow" if rho < 0.25 else "shrink" if rho > 0.75 else "keep")
        rho = float(metrics["rho"])
        if rho <= 0:  # rejected: no move, λ·4
            seen.add("reject")
            chex.assert_trees_all_equal(new, params)
        assert float(metrics["damping"]) == lam  # H + λI stays PD on this path
        np.testing.assert_allclose(float(state["damping"]), _expected_lm(lam, rho), rtol=1e-14)
        params = new
    assert "shrink" in seen and seen & {"grow", "reject"}  # λ moved both ways on this path
    np.testing.assert_allclose(np.asarray(params["x"]), [1.0, 1.0], atol=1e-8)


def test_newton_damping_shrinks_on_a_quadratic_and_stays_bounded_at_the_optimum():
    """The quadratic model is exact on a quadratic: ρ = 1 → λ·2/3 every step. Once there, with the
    line search on, the loss changes by round-off only: ρ = 1 and λ rests at LM_FLOOR (it used to
    read ρ from noise and grow ×1.5 per step without bound)."""
    trainer = trainers.newton(lsq_loss, damping=1.0, adapt_damping=True)
    _, state, metrics = run(trainer, lsq_init(), LSQ_BATCH, 60)
    np.testing.assert_allclose(np.asarray(metrics["rho"][:3]), 1.0, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(metrics["damping"][:3]), [1.0, 2 / 3, 4 / 9], rtol=1e-14)
    assert float(state["damping"]) == _second_order.LM_FLOOR
    assert np.all(np.asarray(metrics["damping"]) <= 1.0)


def test_natural_gradient_damping_adapts_by_the_levenberg_marquardt_rule():
    """For NG the model is gᵀδ + ½δᵀFδ with F the (undamped) Bernoulli Fisher XᵀDX/N."""
    trainer = trainers.natural_gradient(logreg_loss, 1.0, damping=1.0, fisher="true",
                                        apply_fn=logreg_apply, likelihood="bernoulli",
                                        adapt_damping=True)
    step = jax.jit(trainer.step)
    X, y = np.asarray(LOGREG_X), np.asarray(LOGREG_Y)

    def loss_grad_fisher(w):
        z = X @ w
        p = 1 / (1 + np.exp(-z))
        loss = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * L2 * w @ w
        return loss, X.T @ (p - y) / len(y) + L2 * w, (X.T * (p * (1 - p))) @ X / len(y)

    params = {"w": jnp.array([2.0, -3.0, 1.0])}
    state = trainer.init(params)
    for _ in range(6):
        lam = float(state["damping"])
        new, state, metrics = step(params, state, (LOGREG_X, LOGREG_Y))
        w, w_new = np.asarray(params["w"]), np.asarray(new["w"])
        f, g, F = loss_grad_fisher(w)
        delta = w_new - w
        expected_step = -np.linalg.solve(F + lam * np.eye(3), g)
        np.testing.assert_allclose(delta, expected_step, rtol=1e-10)
        rho = (loss_grad_fisher(w_new)[0] - f) / (g @ delta + 0.5 * delta @ F @ delta)
        np.testing.assert_allclose(float(metrics["rho"]), rho, rtol=1e-8)
        np.testing.assert_allclose(float(state["damping"]), _expected_lm(lam, rho), rtol=1e-14)
        params = new


@jax.jit
def _truncated_cg_dense(H, g, damping):
    return _second_order.truncated_cg(lambda v: H @ v, g, damping, 50)


def _random_symmetric(rng, eigs):
    Q = np.linalg.qr(rng.normal(size=(len(eigs), len(eigs))))[0]
    return Q, jnp.asarray((Q * np.asarray(eigs)) @ Q.T)


@pytest.mark.parametrize("seed", range(4))
def test_truncated_cg_returns_a_descent_direction_under_negative_curvature(seed):
    rng = np.random.default_rng(seed)
    Q, H = _random_symmetric(rng, np.linspace(-2.0, 3.0, 6))
    g = jnp.asarray(rng.normal(size=6))
    d, iters, negative = _truncated_cg_dense(H, g, jnp.array(0.0))
    assert float(g @ d) < 0
    assert bool(negative) and int(iters) >= 1
    # Negative curvature on the very first direction p = -g: the answer is -g itself.
    v = jnp.asarray(Q[:, 0])  # eigenvalue -2
    d, iters, negative = _truncated_cg_dense(H, v, jnp.array(0.0))
    np.testing.assert_array_equal(np.asarray(d), -np.asarray(v))
    assert bool(negative) and int(iters) == 1


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), shift=st.floats(-3.0, 3.0))
def test_truncated_cg_descends_on_random_symmetric_matrices(seed, shift):
    rng = np.random.default_rng(seed)
    _, H = _random_symmetric(rng, rng.uniform(-2.0, 2.0, 6) + shift)
    g = jnp.asarray(rng.normal(size=6))
    d, iters, _ = _truncated_cg_dense(H, g, jnp.array(0.0))
    assert float(g @ d) < 0 and 1 <= int(iters) <= 50


def test_truncated_cg_solves_a_positive_definite_system():
    rng = np.random.default_rng(0)
    _, H = _random_symmetric(rng, np.linspace(1.0, 4.0, 6))
    g = jnp.asarray(1e-4 * rng.normal(size=6))  # small ‖g‖: forcing term √‖g‖·‖g‖ = 1e-2‖g‖
    d, _, negative = _truncated_cg_dense(H, g, jnp.array(0.5))
    assert not bool(negative)
    residual = np.asarray(H @ d + 0.5 * d + g)
    assert np.linalg.norm(residual) <= np.sqrt(np.linalg.norm(g)) * np.linalg.norm(g)
    # The same matrix made indefinite by a negative damping flips the flag (the check can fail).
    assert bool(_truncated_cg_dense(H, g, jnp.array(-5.0))[2])


_damped_solve = jax.jit(_second_order.damped_solve)


def test_damped_solve_raises_damping_only_when_needed():
    g = jnp.array([1.0, 1.0])
    d, lam = _damped_solve(jnp.diag(jnp.array([2.0, 4.0])), g, jnp.array(0.0))
    np.testing.assert_allclose(np.asarray(d), [-0.5, -0.25], rtol=1e-15)
    assert float(lam) == 0.0
    d, lam = _damped_solve(jnp.diag(jnp.array([2.0, -3.0])), g, jnp.array(1.0))
    assert float(lam) == pytest.approx(7.0, rel=1e-12)  # 2|λ_min| + max(λ, τ)
    np.testing.assert_allclose(np.asarray(d), [-1 / 9, -1 / 4], rtol=1e-12)
    singular = jnp.array([[1.0, 1.0], [1.0, 1.0]])  # PSD, rank 1, λ = 0: lifted by τ only
    d, lam = _damped_solve(singular, g, jnp.array(0.0))
    assert 0 < float(lam) < 1e-7
    np.testing.assert_allclose(np.asarray(d), [-0.5, -0.5], rtol=1e-7)  # the minimum-norm solve


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), damping=st.sampled_from([0.0, 1e-6, 0.1, 10.0]),
       rank=st.integers(1, 5))
@example(seed=1112, damping=0.0, rank=4)  # PSD, λ_min = -1e-16: Cholesky "succeeds", ‖d‖ ≈ 4e16
def test_damped_solve_always_descends_and_solves_its_damped_system(seed, damping, rank):
    """Random symmetric C (indefinite, singular or PD): d solves (C + λ_used I) d = −g with
    C + λ_used I positive definite and λ_used ≥ λ, so gᵀd < 0."""
    rng = np.random.default_rng(seed)
    eigs = np.concatenate([rng.uniform(-3.0, 3.0, rank), np.zeros(5 - rank)])
    _, C = _random_symmetric(rng, eigs)
    g = jnp.asarray(rng.normal(size=5))
    d, lam = _damped_solve(C, g, jnp.array(damping))
    shifted = np.asarray(C) + float(lam) * np.eye(5)
    assert float(lam) >= damping
    assert np.linalg.eigvalsh(shifted)[0] > 0
    residual = shifted @ np.asarray(d) + np.asarray(g)
    # Cholesky is backward stable: ‖r‖ ≲ n·ε·‖C + λI‖·‖d‖, and ‖d‖ ≤ ‖g‖/τ ≈ 1e8‖g‖ at worst.
    assert np.linalg.norm(residual) <= 1e-6 * np.linalg.norm(np.asarray(g))
    assert float(g @ d) < 0


def test_absolute_matrix_flips_negative_eigenvalues():
    rng = np.random.default_rng(5)
    Q, H = _random_symmetric(rng, [-3.0, 0.0, 2.0])
    A = np.asarray(jax.jit(_second_order.absolute_matrix)(H))
    tau = np.sqrt(np.finfo(float).eps) * 3.0
    np.testing.assert_allclose(A, (Q * np.array([3.0, tau, 2.0])) @ Q.T, atol=1e-12)


# ----------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("name", ["sgd_momentum", "rmsprop", "ng_empirical", "ng_mc", "newton",
                                  "newton_cg", "newton_adapt"])
def test_float32_params_stay_float32(name):
    trainer, step = zoo_entry(name)[:2]
    params = lsq_init(jnp.float32)
    batch = (LSQ_X.astype(jnp.float32), LSQ_Y.astype(jnp.float32))
    state = trainer.init(params)
    first = None
    for _ in range(3):
        params, state, metrics = step(params, state, batch)
        first = float(metrics["loss"]) if first is None else first
    for leaf in jax.tree_util.tree_leaves(params):
        assert leaf.dtype == jnp.float32
    for leaf in jax.tree_util.tree_leaves(state):
        assert leaf.dtype in (jnp.float32, jnp.int32, jnp.uint32), leaf.dtype
    for key, value in metrics.items():
        assert value.dtype in (jnp.float32, jnp.int32), (key, value.dtype)
    assert np.isfinite(first) and float(lsq_loss(params, batch)) < first


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", [
    lambda lr: trainers.sgd(lsq_loss, lr),
    lambda lr: trainers.rmsprop(lsq_loss, lr),
    lambda lr: trainers.natural_gradient(lsq_loss, lr),
    lambda lr: trainers.newton(lsq_loss, learning_rate=lr),
], ids=["sgd", "rmsprop", "natural_gradient", "newton"])
@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan")])
def test_non_positive_learning_rate_is_rejected(make, lr):
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        make(lr)


def test_schedules_are_rejected_by_second_order_trainers_only():
    schedule = optax.constant_schedule(0.1)
    assert isinstance(trainers.sgd(lsq_loss, schedule), trainers.Trainer)
    with pytest.raises(TypeError, match="natural_gradient: learning_rate"):
        trainers.natural_gradient(lsq_loss, schedule)
    with pytest.raises(TypeError, match="newton: learning_rate"):
        trainers.newton(lsq_loss, learning_rate=schedule)


@pytest.mark.parametrize("make", [
    lambda d: trainers.natural_gradient(lsq_loss, 0.1, damping=d),
    lambda d: trainers.newton(lsq_loss, damping=d),
], ids=["natural_gradient", "newton"])
def test_negative_damping_is_rejected(make):
    with pytest.raises(ValueError, match="damping must be >= 0"):
        make(-1e-3)
    make(0.0)  # the boundary is allowed


@pytest.mark.parametrize("make,argument", [
    (lambda: trainers.natural_gradient(lsq_loss, 0.1, fisher="exact"), "fisher"),
    (lambda: trainers.natural_gradient(lsq_loss, 0.1, solver="lu"), "solver"),
    (lambda: trainers.newton(lsq_loss, solver="lu"), "solver"),
    (lambda: trainers.newton(lsq_loss, curvature="bfgs"), "curvature"),
    (lambda: trainers.natural_gradient(lsq_loss, 0.1, fisher="true", apply_fn=linear_apply,
                                       likelihood="poisson"), "likelihood"),
], ids=["fisher", "ng_solver", "newton_solver", "curvature", "likelihood"])
def test_unknown_names_are_rejected(make, argument):
    with pytest.raises(ValueError, match=f"{argument} must be one of"):
        make()


@pytest.mark.parametrize("make,message", [
    (lambda: trainers.natural_gradient(lsq_loss, 0.1, fisher="true"), "needs apply_fn"),
    (lambda: trainers.newton(lsq_loss, curvature="gauss_newton"), "needs apply_fn"),
    (lambda: trainers.newton(lsq_loss, curvature="saddle_free", solver="cg"), "saddle_free"),
    (lambda: trainers.sgd(lsq_loss, 0.1, momentum=1.0), "momentum"),
    (lambda: trainers.sgd(lsq_loss, 0.1, nesterov=True), "nesterov"),
    (lambda: trainers.rmsprop(lsq_loss, 0.1, decay=1.0), "decay"),
    (lambda: trainers.rmsprop(lsq_loss, 0.1, eps=-1.0), "eps"),
    (lambda: trainers.newton(lsq_loss, cg_maxiter=0), "cg_maxiter"),
    (lambda: trainers.natural_gradient(lsq_loss, 0.1, mc_samples=0), "mc_samples"),
])
def test_inconsistent_options_are_rejected(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_from_optax_rejects_a_non_transformation():
    with pytest.raises(TypeError, match="from_optax: transformation"):
        trainers.from_optax(lsq_loss, lambda g: g)


@pytest.mark.parametrize("name", ["sgd", "ng_empirical", "newton"])
@pytest.mark.parametrize("use_jit", [True, False])
def test_step_rejects_batches_that_disagree_on_the_leading_dimension(name, use_jit):
    trainer = _zoo(lsq_loss)[name][0]
    params = lsq_init()
    step = jax.jit(trainer.step) if use_jit else trainer.step
    with pytest.raises(ValueError, match=r"step: batch arrays must share a leading"):
        step(params, trainer.init(params), (LSQ_X, LSQ_Y[:-1]))
    with pytest.raises(ValueError, match=r"step: batch must be a non-empty tuple"):
        step(params, trainer.init(params), ())


@pytest.mark.parametrize("name", ["sgd", "ng_empirical", "newton"])
@pytest.mark.parametrize("use_jit", [True, False])
def test_step_rejects_a_loss_fn_that_returns_a_non_scalar(name, use_jit):
    per_example = lambda p, b: 0.5 * jnp.square(linear_apply(p, b[0]) - b[1])  # (N,), no mean
    trainer = _zoo(per_example)[name][0]
    params = lsq_init()
    step = jax.jit(trainer.step) if use_jit else trainer.step
    with pytest.raises(ValueError, match=r"loss_fn must return a scalar.*\(8,\)"):
        step(params, trainer.init(params), LSQ_BATCH)


def test_gauss_newton_step_needs_targets_in_the_batch():
    trainer = trainers.newton(lambda p, b: jnp.sum(linear_apply(p, b[0])), **GN)
    params = lsq_init()
    with pytest.raises(ValueError, match="gauss_newton' needs batch"):
        trainer.step(params, trainer.init(params), (LSQ_X,))


def _diverging_softmax_problem():
    """A tanh MLP on random labels where a damping of 1e-3 makes the first full NG step go uphill."""
    model = models.mlp([4, 16, 3], "tanh")
    _, params = model.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (32, 4))
    labels = jnp.arange(32) % 3
    loss = lambda p, b: losses.softmax_cross_entropy(model.apply(p, b[0]), b[1])
    return model, params, (x, labels), loss


def test_natural_gradient_rejects_uphill_steps_when_adapting_damping():
    """Levenberg-Marquardt semantics: with adapt_damping a step that raises the loss is not taken
    (params unchanged, step_size 0) and λ grows ×4, so full-batch losses never increase; without
    adaptation the same configuration blows up."""
    model, params, batch, loss = _diverging_softmax_problem()
    kwargs = dict(damping=1e-3, fisher="true", solver="cg", apply_fn=model.apply,
                  likelihood="categorical")
    plain = trainers.natural_gradient(loss, 1.0, **kwargs)
    _, _, plain_metrics = run(plain, params, batch, 6)
    assert np.max(np.asarray(plain_metrics["loss"])) > 10 * float(plain_metrics["loss"][0])

    adaptive = trainers.natural_gradient(loss, 1.0, adapt_damping=True, **kwargs)
    step = jax.jit(adaptive.step)
    state, rejected, initial = adaptive.init(params), 0, float(loss(params, batch))
    for _ in range(10):
        lam = float(state["damping"])
        new, state, metrics = step(params, state, batch)
        if float(metrics["rho"]) <= 0:
            rejected += 1
            assert float(metrics["step_size"]) == 0.0
            chex.assert_trees_all_equal(new, params)
            assert float(state["damping"]) == pytest.approx(lam * _second_order.LM_REJECT_GROW)
        else:
            assert float(loss(new, batch)) < float(metrics["loss"])
        params = new
    assert rejected >= 1
    assert float(loss(params, batch)) < 0.9 * initial


def test_newton_without_line_search_rejects_uphill_steps_when_adapting_damping():
    """On the indefinite x² − y² + y⁴/4, an undamped full Newton step from near the saddle's
    basin can go uphill; with adapt_damping it is rejected and the loss never increases."""
    f = lambda p, b: p["x"] ** 2 - p["y"] ** 2 + p["y"] ** 4 / 4
    trainer = trainers.newton(f, damping=1e-6, line_search=False, adapt_damping=True,
                              learning_rate=1.0)
    step = jax.jit(trainer.step)
    params = {"x": jnp.array(0.5), "y": jnp.array(0.05)}
    state = trainer.init(params)
    previous = float(f(params, None))
    for _ in range(30):
        params, state, metrics = step(params, state, DUMMY_BATCH)
        now = float(f(params, None))
        assert now <= previous + 1e-15
        previous = now
    np.testing.assert_allclose(previous, -1.0, atol=1e-8)  # the minima at y = ±√2
