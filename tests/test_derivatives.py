"""Tests for jaxcalc.derivatives: every operator against an independent dense reference.

References use plain autodiff on the raveled parameters (``jax.hessian``, ``jax.jacfwd``),
output-space curvature written out in NumPy, and Python loops over examples, on tiny models from
``jaxcalc.models``: a tanh MLP, a small CNN, an RNN regressor, a batch-norm MLP and single dense
layers. float64 unless a test says otherwise; closed form vs autodiff is held to ~1e-10 relative.

Compilation dominates the run time on a small CPU, so each case jits *all* library calls it checks
in one function and its references in another (cached per model). Eager execution compiles every
primitive separately, so the no-jit path is one test (``test_without_jit``) that runs every
public function eagerly on the MLP.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.flatten_util import ravel_pytree

from jaxcalc import derivatives as D
from jaxcalc import layers, models

KEY = jax.random.PRNGKey(0)
TOL = {jnp.float64: 1e-10, jnp.float32: 2e-5}


# ----------------------------------------------------------------------------- helpers


def assert_close(actual, desired, tol):
    """max |actual - desired| <= tol * max(1, max |desired|): relative at the matrix's scale."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    scale = max(1.0, float(np.max(np.abs(desired))))
    err = float(np.max(np.abs(actual - desired)))
    assert err <= tol * scale, f"max abs error {err:.3e} > {tol:.1e} * {scale:.3e}"


def flat_of(tree):
    return np.asarray(ravel_pytree(tree)[0])


def random_like(key, params):
    flat, unravel = ravel_pytree(params)
    return unravel(jax.random.normal(key, flat.shape, flat.dtype))


def cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


# Negative log-likelihoods written independently of the library (optax for two of them).
def nll_per_example(likelihood, out, y):
    if likelihood == "categorical":
        return optax.softmax_cross_entropy_with_integer_labels(out, y)
    if likelihood == "bernoulli":
        per = optax.sigmoid_binary_cross_entropy(out, y)
    else:
        per = 0.5 * (out - y) ** 2
    return per.reshape(per.shape[0], -1).sum(axis=1)


def mean_nll(likelihood):
    """The mean-over-examples negative log-likelihood as ``loss_of_output(outputs, targets)``."""
    return lambda out, y: jnp.mean(nll_per_example(likelihood, out, y))


def output_fisher_np(likelihood, o):
    """Λ of one example's output vector ``o`` (NumPy): diag(p) − ppᵀ, p(1−p), or I."""
    if likelihood == "categorical":
        p = np.exp(o - o.max())
        p /= p.sum()
        return np.diag(p) - np.outer(p, p)
    if likelihood == "bernoulli":
        p = 1 / (1 + np.exp(-o))
        return np.diag(p * (1 - p))
    return np.eye(o.size)


def explicit_fisher(likelihood, out, jac, lam=None):
    """(1/N) Σ_i J_iᵀ Λ_i J_i by a loop over examples, ``jac`` the ``(N·d, n)`` output Jacobian."""
    num = out.shape[0]
    outs = out.reshape(num, -1)
    jacs = jac.reshape(num, outs.shape[1], -1)
    lam = lam if lam is not None else [output_fisher_np(likelihood, o) for o in outs]
    return sum(j.T @ l @ j for j, l in zip(jacs, lam)) / num


# ----------------------------------------------------------------------------- tiny models


def normalize(h, gamma, beta):
    """Train-mode batch norm over the batch axis (jaxcalc.layers.batch_norm when present)."""
    if hasattr(layers, "batch_norm"):
        zeros, ones = jnp.zeros_like(gamma), jnp.ones_like(gamma)
        return layers.batch_norm(h, gamma, beta, zeros, ones, train=True)[0]
    mean = h.mean(axis=0)
    var = ((h - mean) ** 2).mean(axis=0)
    return gamma * (h - mean) / jnp.sqrt(var + 1e-5) + beta


def batch_norm_mlp():
    """3 → dense 4 → batch norm → tanh → dense 2; examples interact through the batch stats."""
    d0, d1 = models.Dense(4), models.Dense(2)

    def init(key, shape):
        k0, k1, k2, k3 = jax.random.split(key, 4)
        shape, p0 = d0.init(k0, shape)
        shape, p1 = d1.init(k1, shape)
        bn = {"gamma": 1 + 0.1 * jax.random.normal(k2, (4,)),
              "beta": 0.1 * jax.random.normal(k3, (4,))}
        return shape, {"dense0": p0, "bn": bn, "dense1": p1}

    def apply(params, x):
        h = normalize(d0.apply(params["dense0"], x), params["bn"]["gamma"], params["bn"]["beta"])
        return d1.apply(params["dense1"], jnp.tanh(h))

    return models.Model(init, apply)


def small_cnn(num_classes=3):
    return models.serial(models.Conv2D(2, 3), models.Activation("relu"), models.MaxPool2D(2),
                         models.Flatten(), models.Dense(num_classes))


def squeeze_last(model):
    return models.Model(model.init, lambda p, x: model.apply(p, x)[:, 0])


# name -> (model, input shape). Outputs: mlp (5, 2), cnn (2, 3), rnn (2, 1), bn (6, 2),
# mlp1_flat (5,), linear3 (6, 3), linear2 (6, 2), linear1 (6, 1).
MODELS = {
    "mlp": (lambda: models.mlp([3, 4, 2], "tanh"), (5, 3)),
    "cnn": (small_cnn, (2, 6, 6, 1)),
    "rnn": (lambda: models.rnn_regressor(3), (2, 4, 1)),
    "bn": (batch_norm_mlp, (6, 3)),
    "mlp1_flat": (lambda: squeeze_last(models.mlp([3, 4, 1], "tanh")), (5, 3)),
    "linear3": (lambda: models.mlp([3, 3]), (6, 3)),
    "linear2": (lambda: models.mlp([3, 2]), (6, 3)),
    "linear1": (lambda: models.mlp([3, 1]), (6, 3)),
}


@functools.lru_cache(maxsize=None)
def setup(name, likelihood="gaussian"):
    """(apply, params, inputs, targets) for a model; targets drawn to suit the likelihood."""
    build, shape = MODELS[name]
    model = build()
    k_init, k_x, k_y = jax.random.split(jax.random.fold_in(KEY, len(name)), 3)
    _, params = model.init(k_init, shape)
    x = jax.random.normal(k_x, shape)
    out = jax.eval_shape(model.apply, params, x)
    if likelihood == "categorical":
        y = jax.random.randint(k_y, out.shape[:1], 0, out.shape[1])
    elif likelihood == "bernoulli":
        y = jax.random.bernoulli(k_y, 0.5, out.shape).astype(out.dtype)
    else:
        y = jax.random.normal(k_y, out.shape, out.dtype)
    return model.apply, params, x, y


@functools.lru_cache(maxsize=None)
def references(name, likelihood):
    """Dense autodiff references on the raveled parameters, one jitted computation per model:
    the Hessian of the mean NLL, the output Jacobian ``(N·d, n)``, the loss Hessian in output
    space ``(N·d, N·d)`` and the outputs."""
    apply, params, x, y = setup(name, likelihood)
    flat, unravel = ravel_pytree(params)
    loss = mean_nll(likelihood)

    @jax.jit
    def compute(z):
        out = apply(unravel(z), x)
        return {
            "hessian": jax.hessian(lambda w: loss(apply(unravel(w), x), y))(z),
            "jacobian": jax.jacfwd(lambda w: apply(unravel(w), x).ravel())(z),
            "loss_hessian": jax.hessian(lambda o: loss(o.reshape(out.shape), y))(out.ravel()),
            "out": out,
        }

    return {k: np.asarray(a) for k, a in compute(flat).items()}


# ----------------------------------------------------------------------------- Hessian, GGN, Fisher

CURVATURE_CASES = [
    ("mlp", "categorical"), ("cnn", "categorical"), ("bn", "categorical"), ("rnn", "gaussian"),
    ("mlp1_flat", "bernoulli"), ("linear3", "categorical"), ("linear2", "gaussian"),
    ("linear1", "bernoulli"),
]


def curvature_library(name, likelihood, full):
    """The library's curvature operators for one model as one function of ``(params, v)``.

    ``full``: all of them; otherwise the dense matrices only (their columns are the matrix-free
    products, so those run too), and no GGN for the linear models (there the Fisher, checked
    against the same reference, is the GGN), to keep compilation short.
    """
    apply, params, x, y = setup(name, likelihood)
    loss = mean_nll(likelihood)
    f = lambda p: loss(apply(p, x), y)

    def library(p, t):
        got = {
            "hessian": D.hessian_matrix(f, p),
            "fisher": D.fisher_matrix(apply, p, x, likelihood),
        }
        if full or not name.startswith("linear"):
            got["ggn"] = D.ggn_matrix(apply, loss, p, x, y)
        if full:
            got.update(
                hvp=D.hvp(f, p, t),
                ggn_vp=D.ggn_vp(apply, loss, p, x, y, t),
                fisher_vp=D.fisher_vp(apply, p, x, likelihood, t),
                jacobian=D.jacobian_matrix(lambda q: apply(q, x), p))
        return got

    return library


def check_curvature(name, likelihood, got, v):
    """Assertions of the curvature suite on a dict of library results."""
    ref = references(name, likelihood)
    v_flat, jac, hessian = flat_of(v), ref["jacobian"], ref["hessian"]
    ggn = jac.T @ ref["loss_hessian"] @ jac

    # Hessian: hessian_matrix vs jax.hessian; exactly symmetric.
    assert_close(got["hessian"], hessian, 1e-10)
    np.testing.assert_array_equal(got["hessian"], got["hessian"].T)
    # GGN = JᵀH_ℓJ, PSD because the NLL is convex in the outputs.
    if "ggn" in got:
        assert_close(got["ggn"], ggn, 1e-10)
        eigs = np.linalg.eigvalsh(got["ggn"])
        assert eigs.min() >= -1e-12 * eigs.max()
    # True Fisher: the GGN of the NLL (canonical link), and (1/N) Σ J_iᵀ Λ_i J_i written out.
    assert_close(got["fisher"], ggn, 1e-10)
    assert_close(got["fisher"], explicit_fisher(likelihood, ref["out"], jac), 1e-10)
    if name.startswith("linear"):
        # A linear model has no model curvature: Fisher = GGN = Hessian.
        assert_close(got["fisher"], hessian, 1e-10)
    if name == "mlp":
        # ... which the tanh MLP does have: that check can fail; its Hessian is indefinite.
        assert np.max(np.abs(got["ggn"] - hessian)) > 1e-3
        eigs = np.linalg.eigvalsh(hessian)
        assert eigs.min() < -1e-6 and eigs.max() > 1e-6
    if "hvp" in got:
        # Matrix-free products: pytrees like params, equal to the dense matrices times v.
        for key, matrix in (("hvp", hessian), ("ggn_vp", ggn), ("fisher_vp", ggn)):
            assert (jax.tree_util.tree_structure(got[key])
                    == jax.tree_util.tree_structure(v)), key
            assert_close(flat_of(got[key]), matrix @ v_flat, 1e-10)
        assert_close(got["jacobian"], jac, 1e-12)


@pytest.mark.parametrize("name,likelihood", CURVATURE_CASES)
def test_curvature_operators_match_dense_references(name, likelihood):
    _, params, _, _ = setup(name, likelihood)
    v = random_like(jax.random.PRNGKey(1), params)
    got = jax.jit(curvature_library(name, likelihood, full=name == "mlp"))(params, v)
    check_curvature(name, likelihood, got, v)


def test_without_jit():
    """Every public function, run eagerly (op by op), passes the same checks as under jit.

    On the softmax-regression model: eager JAX compiles each primitive for each new shape, so
    this is the slowest test however small the model."""
    name, likelihood = "linear3", "categorical"
    apply, params, x, y = setup(name, likelihood)
    v = random_like(jax.random.PRNGKey(1), params)
    check_curvature(name, likelihood, curvature_library(name, likelihood, full=True)(params, v), v)
    loss_fn = lambda p, batch: mean_nll(likelihood)(apply(p, batch[0]), batch[1])
    check_empirical_fisher(name, likelihood, D.empirical_fisher_matrix(loss_fn, params, (x, y)),
                           D.empirical_fisher_vp(loss_fn, params, (x, y), v), v)
    key, num_samples = jax.random.PRNGKey(4), 3
    check_mc_fisher_against_loop(name, likelihood, key, num_samples,
                                 D.mc_fisher_matrix(apply, params, x, likelihood, key, num_samples))


@jax.jit
def _quadratic_operators(a, theta, v):
    """Operators of the linear map θ ↦ Aθ on a two-leaf pytree, f = ½‖Aθ‖² + sum(θ_a)."""
    _, unravel = ravel_pytree({"a": jnp.zeros(3), "b": jnp.zeros((2, 2))})
    params, tangent = unravel(theta), unravel(v)
    apply = lambda p, mat: mat @ ravel_pytree(p)[0]
    half_sq = lambda o, _: 0.5 * jnp.sum(o ** 2)
    f = lambda p: half_sq(apply(p, a), None) + jnp.sum(p["a"])
    return {
        "hessian": D.hessian_matrix(f, params, chunk_size=3),
        "hvp": ravel_pytree(D.hvp(f, params, tangent))[0],
        "ggn": D.ggn_matrix(apply, half_sq, params, a, None),
        "fisher": D.fisher_matrix(apply, params, a, "gaussian"),
        "fisher_vp": ravel_pytree(D.fisher_vp(apply, params, a, "gaussian", tangent))[0],
        "jacobian": D.jacobian_matrix(lambda p: apply(p, a), params),
    }


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3))
def test_closed_form_curvature_of_a_linear_map(seed, scale):
    """f(θ) = ½‖Aθ‖² + linear: Hessian = GGN = AᵀA, Jacobian = A, Gaussian Fisher = AᵀA / N,
    for random A over six orders of magnitude of scale (relative tolerance)."""
    k_a, k_t, k_v = jax.random.split(jax.random.PRNGKey(seed), 3)
    a = scale * jax.random.normal(k_a, (5, 7))
    theta, v = jax.random.normal(k_t, (7,)), jax.random.normal(k_v, (7,))
    got = _quadratic_operators(a, theta, v)
    gram = np.asarray(a).T @ np.asarray(a)
    for key in ("hessian", "ggn"):
        assert_close(got[key] / scale ** 2, gram / scale ** 2, 1e-12)
    assert_close(got["hvp"] / scale ** 2, gram @ np.asarray(v) / scale ** 2, 1e-12)
    assert_close(got["fisher"] / scale ** 2, gram / 5 / scale ** 2, 1e-12)
    assert_close(got["fisher_vp"] / scale ** 2, gram @ np.asarray(v) / 5 / scale ** 2, 1e-12)
    assert_close(got["jacobian"] / scale, np.asarray(a) / scale, 1e-12)


def test_ggn_equals_hessian_for_linear_model_with_mse():
    apply, params, x, _ = setup("linear2")
    y = jax.random.normal(jax.random.PRNGKey(2), (6, 2))
    mse = lambda o, t: jnp.mean((o - t) ** 2)
    f = lambda p: mse(apply(p, x), y)
    ggn, hessian = jax.jit(lambda p: (D.ggn_matrix(apply, mse, p, x, y),
                                      D.hessian_matrix(f, p)))(params)
    flat, unravel = ravel_pytree(params)
    # mean((xW + b - y)²) has the constant Hessian (2 / (N·2)) [x 1]ᵀ[x 1] ⊗ I, written out:
    features = np.concatenate([np.asarray(x), np.ones((6, 1))], axis=1)  # (N, 4): w rows, then b
    gram = 2 * features.T @ features / y.size
    reference = np.zeros((flat.size, flat.size))
    # ravel order: {"dense0": {"b": (2,), "w": (3, 2)}} → b0, b1, w00, w01, w10, w11, w20, w21
    index = lambda row, out: out if row == 3 else 2 + 2 * row + out
    for r1 in range(4):
        for r2 in range(4):
            for o in range(2):
                reference[index(r1, o), index(r2, o)] = gram[r1, r2]
    assert sorted(params["dense0"]) == ["b", "w"]
    assert_close(ggn, reference, 1e-12)
    assert_close(hessian, reference, 1e-12)


def test_float32():
    """float32 params give float32 results within float32 round-off of the float64 references
    (every other test is float64)."""
    dtype = jnp.float32
    apply, params64, x64, y = setup("mlp", "categorical")
    ref = references("mlp", "categorical")
    params, x = cast(params64, dtype), x64.astype(dtype)
    f = lambda p: mean_nll("categorical")(apply(p, x), y)
    v64 = random_like(jax.random.PRNGKey(2), params64)  # float64 v is cast to the params' dtype
    hv, hessian, fisher = jax.jit(lambda p, t: (
        D.hvp(f, p, t), D.hessian_matrix(f, p, chunk_size=5),
        D.fisher_matrix(apply, p, x, "categorical")))(params, v64)
    assert hessian.dtype == dtype and fisher.dtype == dtype
    assert all(a.dtype == dtype for a in jax.tree_util.tree_leaves(hv))
    assert_close(hessian, ref["hessian"], TOL[dtype])
    assert_close(flat_of(hv), ref["hessian"] @ flat_of(v64), TOL[dtype])
    assert_close(fisher, explicit_fisher("categorical", ref["out"], ref["jacobian"]), TOL[dtype])


def test_hessian_matrix_chunk_size_invariant():
    apply, params, x, y = setup("mlp", "categorical")
    f = lambda p: mean_nll("categorical")(apply(p, x), y)
    n = flat_of(params).size
    chunks = (1, 7, n, n + 5)
    hessians = jax.jit(lambda p: [D.hessian_matrix(f, p, chunk_size=c) for c in chunks])(params)
    for h in hessians:
        np.testing.assert_array_equal(h, h.T)
        assert_close(h, references("mlp", "categorical")["hessian"], 1e-10)
        assert_close(h, hessians[0], 1e-12)


def test_hessian_matrix_does_not_retrace():
    traces = []

    def f(p):
        traces.append(None)
        return jnp.sum(jnp.sin(p["a"]) * p["b"] ** 2)

    h_fn = jax.jit(lambda p: D.hessian_matrix(f, p, chunk_size=2))
    p1 = {"a": jnp.arange(3.0), "b": jnp.ones(3)}
    h1 = h_fn(p1)
    count = len(traces)
    h2 = h_fn(jax.tree_util.tree_map(lambda a: a + 1.0, p1))
    assert len(traces) == count
    assert not np.allclose(h1, h2)


# ----------------------------------------------------------------------------- Jacobian


def test_jacobian_matrix_modes_and_outputs():
    apply, params, _, _ = setup("mlp")
    x_small, x_large = jnp.ones((2, 3)), jnp.linspace(-1.0, 1.0, 60).reshape(20, 3)
    fns = {
        "reverse": lambda p: apply(p, x_small),  # m = 4 < n = 22
        "forward": lambda p: apply(p, x_large),  # m = 40 > n
        "pytree": lambda p: {"out": apply(p, x_small), "sq": jnp.sum(p["dense1"]["w"] ** 2)},
        "scalar": lambda p: jnp.sum(apply(p, x_small)),
    }
    got = jax.jit(lambda p: {k: D.jacobian_matrix(fn, p) for k, fn in fns.items()})(params)
    flat, unravel = ravel_pytree(params)
    want = jax.jit(lambda z: {k: jax.jacfwd(lambda w: ravel_pytree(fn(unravel(w)))[0])(z)
                              for k, fn in fns.items()})(flat)
    for k, m in (("reverse", 4), ("forward", 40), ("pytree", 5), ("scalar", 1)):
        assert got[k].shape == (m, flat.size), k
        assert_close(got[k], want[k], 1e-12)


# ----------------------------------------------------------------------------- empirical Fisher


def check_empirical_fisher(name, likelihood, fisher, fv, v):
    """Empirical Fisher and its product vs a Python loop of per-example (batch-of-one) gradients."""
    apply, params, x, y = setup(name, likelihood)
    # A mean-over-batch loss, as users write it; each example reaches it as a batch of one.
    loss_fn = lambda p, batch: mean_nll(likelihood)(apply(p, batch[0]), batch[1])
    grads = [flat_of(jax.grad(loss_fn)(params, (x[i:i + 1], y[i:i + 1])))
             for i in range(x.shape[0])]
    explicit = sum(np.outer(g, g) for g in grads) / len(grads)
    assert_close(fisher, explicit, 1e-12)
    assert_close(flat_of(fv), explicit @ flat_of(v), 1e-12)
    # Observed labels, not the model's: it is not the true Fisher.
    ref = references(name, likelihood)
    true_fisher = explicit_fisher(likelihood, ref["out"], ref["jacobian"])
    assert np.max(np.abs(fisher - true_fisher)) > 1e-3


def test_empirical_fisher_matches_python_loop():
    name, likelihood = "mlp", "categorical"  # eagerly on the linear model in test_without_jit
    apply, params, x, y = setup(name, likelihood)
    loss_fn = lambda p, batch: mean_nll(likelihood)(apply(p, batch[0]), batch[1])
    v = random_like(jax.random.PRNGKey(3), params)
    fisher, fv = jax.jit(lambda p, t: (D.empirical_fisher_matrix(loss_fn, p, (x, y)),
                                       D.empirical_fisher_vp(loss_fn, p, (x, y), t)))(params, v)
    check_empirical_fisher(name, likelihood, fisher, fv, v)


# ----------------------------------------------------------------------------- Monte Carlo Fisher


def check_mc_fisher_against_loop(name, likelihood, key, num_samples, mc):
    """mc_fisher_matrix vs the mean of g gᵀ over a Python loop of single-example gradients
    g = ∇θ[−log p(y_si | x_i, θ)], for the labels the function draws with ``key``."""
    apply, params, x, _ = setup(name, likelihood)
    labels = D._sample_labels(likelihood, apply(params, x), key, num_samples)
    assert labels.shape[:2] == (num_samples, x.shape[0])
    grad_fn = jax.grad(lambda p, y_s, i: nll_per_example(likelihood, apply(p, x), y_s)[i])
    explicit = 0.0
    for s in range(num_samples):
        for i in range(x.shape[0]):
            g = flat_of(grad_fn(params, labels[s], i))
            explicit = explicit + np.outer(g, g)
    assert_close(mc, explicit / (num_samples * x.shape[0]), 1e-12)


def output_residuals(likelihood, out, labels):
    """∇_out[−log p(y | out)] per sample and example, written out: p − onehot(y), p − y, out − y."""
    if likelihood == "categorical":
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return p[None] - np.eye(out.shape[1])[labels]
    if likelihood == "bernoulli":
        return 1 / (1 + np.exp(-out[None])) - labels
    return out[None] - labels


@pytest.mark.parametrize("name,likelihood", [("mlp", "categorical"), ("linear1", "bernoulli"),
                                             ("linear2", "gaussian")])
def test_mc_fisher_converges_to_fisher(name, likelihood):
    """With S labels per example, F̂ = (1/S) Σ_s F̂_s where the one-label estimates
    F̂_s = (1/N) Σ_i J_iᵀ r_si r_siᵀ J_i are i.i.d. with mean F (E[r rᵀ] = Λ). So each entry of F̂
    is ≈ normal with standard error std_s(F̂_s)/√S, estimated from the same S draws. Every entry
    must lie within 5 standard errors of the exact Fisher: over ≤ 22² entries a false alarm has
    probability < 22² · 6e-7 ≈ 3e-4, and the key is fixed, so the outcome is deterministic. The
    same bound rejects a 10% error in F, so it is tight enough to mean something."""
    apply, params, x, _ = setup(name, likelihood)
    ref = references(name, likelihood)
    key, num_samples = jax.random.PRNGKey(5), 4000
    mc = jax.jit(lambda p: D.mc_fisher_matrix(apply, p, x, likelihood, key, num_samples))(params)
    fisher = explicit_fisher(likelihood, ref["out"], ref["jacobian"])

    labels = np.asarray(D._sample_labels(likelihood, jnp.asarray(ref["out"]), key, num_samples))
    residuals = output_residuals(likelihood, ref["out"], labels)  # (S, N, ...)
    num = ref["out"].shape[0]
    jacs = ref["jacobian"].reshape(num, -1, fisher.shape[0])  # (N, d, n)
    grads = np.einsum("sid,idn->sin", residuals.reshape(num_samples, num, -1), jacs)
    per_sample = np.einsum("sin,sim->snm", grads, grads) / num  # F̂_s
    assert_close(mc, per_sample.mean(axis=0), 1e-10)  # the same draws, summed the other way

    stderr = per_sample.std(axis=0, ddof=1) / np.sqrt(num_samples)
    floor = 1e-12 * np.max(np.abs(fisher))  # an entry with no variance must be exact
    max_z = lambda estimate: float(np.max(np.abs(estimate - fisher) / np.maximum(stderr, floor)))
    assert max_z(np.asarray(mc)) < 5
    assert max_z(1.1 * fisher) > 5


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_clear_errors():
    apply, params, x, y = setup("mlp", "categorical")
    f = lambda p: mean_nll("categorical")(apply(p, x), y)
    v = random_like(KEY, params)
    loss_fn = lambda p, batch: mean_nll("categorical")(apply(p, batch[0]), batch[1])

    with pytest.raises(ValueError, match=r"hvp: f must return a scalar, got .* shape \(5, 2\)"):
        D.hvp(lambda p: apply(p, x), params, v)
    with pytest.raises(ValueError, match=r"hessian_matrix: f must return a scalar"):
        D.hessian_matrix(lambda p: apply(p, x), params)
    with pytest.raises(ValueError, match=r"hvp: v must have the same pytree structure as params; "
                                         r"params is .*dense1.*, v is .*"):
        D.hvp(f, params, {"dense0": v["dense0"]})
    bad_v = {"dense0": v["dense0"], "dense1": {"b": v["dense1"]["b"], "w": v["dense1"]["w"].T}}
    with pytest.raises(ValueError, match=r"ggn_vp: v must have the same leaf shapes as params; "
                                         r"params has \[.*\(4, 2\)\], v has \[.*\(2, 4\)\]"):
        D.ggn_vp(apply, mean_nll("categorical"), params, x, y, bad_v)
    with pytest.raises(ValueError, match=r"fisher_vp: v must have the same leaf shapes"):
        D.fisher_vp(apply, params, x, "categorical", bad_v)
    with pytest.raises(ValueError, match=r"empirical_fisher_vp: v must have the same pytree"):
        D.empirical_fisher_vp(loss_fn, params, (x, y), [v])
    int_params = {"w": jnp.ones((3, 2), jnp.int32)}
    with pytest.raises(TypeError, match=r"hvp: params\['w'\] must have a floating dtype, got "
                                        r"int32"):
        D.hvp(lambda p: jnp.sum(p["w"]), int_params, int_params)
    with pytest.raises(TypeError, match=r"fisher_matrix: params\['w'\] must have a floating"):
        D.fisher_matrix(lambda p, a: a @ p["w"], int_params, x, "categorical")
    with pytest.raises(TypeError, match=r"empirical_fisher_matrix: params\['w'\] must have a "
                                        r"floating dtype"):
        D.empirical_fisher_matrix(lambda p, b: jnp.sum(b[0] @ p["w"]), int_params, (x,))
    with pytest.raises(TypeError, match=r"jacobian_matrix: fn\(params\) must have a floating "
                                        r"dtype"):
        D.jacobian_matrix(lambda p: jnp.argmax(apply(p, x), axis=1), params)
    with pytest.raises(ValueError, match=r"ggn_matrix: loss_of_output must return a scalar, got "
                                         r".*shape \(5,\)"):
        D.ggn_matrix(apply, lambda o, t: nll_per_example("categorical", o, t), params, x, y)
    for call in (lambda: D.fisher_vp(apply, params, x, "poisson", v),
                 lambda: D.fisher_matrix(apply, params, x, "poisson"),
                 lambda: D.mc_fisher_matrix(apply, params, x, "poisson", KEY, 2)):
        with pytest.raises(ValueError, match=r"likelihood must be one of \['categorical', "
                                             r"'bernoulli', 'gaussian'\], got 'poisson'"):
            call()
    with pytest.raises(ValueError, match=r"fisher_matrix: apply_fn\(params, inputs\) must be 2-D "
                                         r"\(N, C\) logits .*got shape \(5,\)"):
        D.fisher_matrix(lambda p, a: apply(p, a)[:, 0], params, x, "categorical")
    with pytest.raises(ValueError, match=r"fisher_vp: apply_fn\(params, inputs\) must be \(N,\) "
                                         r"or \(N, 1\) logits .*got shape \(5, 2\)"):
        D.fisher_vp(apply, params, x, "bernoulli", v)
    with pytest.raises(ValueError, match=r"empirical_fisher_matrix: batch arrays must share a "
                                         r"leading dimension N, got "
                                         r"shapes \[\(5, 3\), \(4,\)\]"):
        D.empirical_fisher_matrix(loss_fn, params, (x, y[:4]))
    with pytest.raises(ValueError, match=r"empirical_fisher_vp: batch arrays must share"):
        D.empirical_fisher_vp(loss_fn, params, (x, y[:4]), v)
    with pytest.raises(ValueError, match=r"empirical_fisher_vp: loss_fn must return a scalar"):
        D.empirical_fisher_vp(lambda p, b: apply(p, b[0]), params, (x, y), v)
    with pytest.raises(ValueError, match=r"hessian_matrix: chunk_size must be >= 1, got 0"):
        D.hessian_matrix(f, params, chunk_size=0)
    with pytest.raises(TypeError, match=r"ggn_matrix: chunk_size must be a positive int or None"):
        D.ggn_matrix(apply, mean_nll("categorical"), params, x, y, chunk_size=2.5)
    with pytest.raises(ValueError, match=r"mc_fisher_matrix: num_samples must be > 0, got 0"):
        D.mc_fisher_matrix(apply, params, x, "categorical", KEY, 0)


def test_errors_raise_at_trace_time_under_jit():
    apply, params, x, _ = setup("mlp", "categorical")
    v = random_like(KEY, params)
    with pytest.raises(ValueError, match=r"fisher_vp: likelihood must be one of"):
        jax.jit(lambda p, t: D.fisher_vp(apply, p, x, "logistic", t))(params, v)
    with pytest.raises(ValueError, match=r"hvp: v must have the same pytree structure"):
        jax.jit(lambda p, t: D.hvp(lambda q: jnp.sum(apply(q, x)), p, t))(params, [v])


@pytest.mark.parametrize("name,likelihood", [("mlp", "categorical"), ("linear1", "bernoulli")])
def test_mc_fisher_vp_is_the_mc_matrix_times_v(name, likelihood):
    """Same key and sample count: the matrix-free product equals the dense estimate times v,
    and a different key gives a different estimate (the product really samples)."""
    apply, params, x, _ = setup(name, likelihood)
    key, num_samples = jax.random.PRNGKey(3), 7
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.PRNGKey(4), flat.shape, flat.dtype)

    @jax.jit
    def both(p, k):
        mc = D.mc_fisher_matrix(apply, p, x, likelihood, k, num_samples)
        return mc @ v, ravel_pytree(D.mc_fisher_vp(apply, p, x, likelihood, k, num_samples, unravel(v)))[0]

    dense_v, product = both(params, key)
    assert_close(product, dense_v, 1e-12)
    other = both(params, jax.random.PRNGKey(99))[1]
    assert float(jnp.max(jnp.abs(other - product))) > 1e-6 * float(jnp.max(jnp.abs(product)))
    with pytest.raises(ValueError, match=r"mc_fisher_vp: num_samples must be > 0, got 0"):
        D.mc_fisher_vp(apply, params, x, likelihood, key, 0, unravel(v))
