"""The ``activation_calculus`` experiment: derivative checks and vanishing gradients."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import activation_calculus as ac
from jaxcalc import activations, losses, models, runner

NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "softplus")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run through the runner (writes config.json and results.json)."""
    out = tmp_path_factory.mktemp("activation_calculus")
    results, out_dir = runner.run_experiment("activation_calculus", out=out, quick=True)
    return results, out_dir


# --------------------------------------------------------------------------- the quick run

def test_results_json_has_the_contract_keys(quick_run):
    _, out_dir = quick_run
    saved = json.loads((out_dir / "results.json").read_text())
    config = json.loads((out_dir / "config.json").read_text())
    acts = config["depth_activations"]
    assert set(saved["gradient_norm_per_layer"]) == set(acts)
    assert set(saved["first_to_last_ratio"]) == set(acts)
    for act in acts:
        norms = saved["gradient_norm_per_layer"][act]
        assert len(norms) == config["depth"]
        assert all(isinstance(v, float) and v > 0 for v in norms)
        assert saved["first_to_last_ratio"][act] == pytest.approx(norms[0] / norms[-1], rel=1e-12)
    for key in ("derivative_max_error", "derivative_max_error_float32", "fd_max_rel_error"):
        assert set(saved[key]) == set(NAMES), key


def test_sigmoid_gradients_vanish_relative_to_relu_and_tanh(quick_run):
    results, _ = quick_run
    ratio = results["first_to_last_ratio"]
    assert ratio["sigmoid"] < 1e-3 * ratio["relu"], ratio
    assert ratio["sigmoid"] < 1e-3 * ratio["tanh"], ratio
    # per layer the sigmoid network loses a factor of about σ'(0) = 1/4
    assert results["decay_per_layer"]["sigmoid"] < 0.5 < results["decay_per_layer"]["relu"]


def test_closed_forms_equal_jax_grad_and_fd(quick_run):
    results, _ = quick_run
    eps64, eps32 = np.finfo(np.float64).eps, np.finfo(np.float32).eps
    for name in NAMES:
        assert results["derivative_max_error"][name] <= ac.TOLERANCE_ULPS * eps64, name
        assert results["derivative_max_error_float32"][name] <= ac.TOLERANCE_ULPS * eps32, name
        assert results["fd_passed"][name] and results["fd_max_rel_error"][name] < 1e-7, name
    assert results["passed"] and runner.exit_status(ac, results) == 0
    # the grid holds 0: σ'(0) = 1/4 exactly, the sigmoid's maximum
    assert results["max_derivative"]["sigmoid"] == 0.25


def test_quick_run_writes_both_plots_and_a_summary(quick_run):
    results, out_dir = quick_run
    for name in ("activations.png", "gradient_norm_per_layer.png"):
        assert (out_dir / name).stat().st_size > 10_000, name
    text = ac.summarize(results)
    assert "sigmoid" in text and "first/last" in text and "FAILED" not in text


def test_exit_status_is_1_when_a_check_failed(quick_run):
    results, _ = quick_run
    assert runner.exit_status(ac, dict(results, passed=False)) == 1
    assert "FAILED" in ac.summarize(dict(results, passed=False))


# --------------------------------------------------------------------------- the checkers fail

@pytest.mark.parametrize("use_jit", [False, True])
def test_max_errors_catch_a_wrong_derivative(use_jit):
    pairs = ac.activation_pairs(0.1)
    wrong = dict(pairs, sigmoid=(activations.sigmoid, activations.tanh_derivative, ""),
                 # the kink convention: jax.grad(relu)(0) = 0, so 1[x >= 0] is off by 1 at 0
                 relu=(activations.relu, lambda v: jnp.where(v >= 0, 1.0, 0.0), ""))
    curves = lambda p: functools.partial(ac.derivative_curves, p)
    if use_jit:
        curves = lambda p: jax.jit(functools.partial(ac.derivative_curves, p))
    with jax.enable_x64(True):
        x = ac.check_points(dict(ac.DEFAULT_CONFIG, check_points=101), jnp.float64)
        right = ac.max_errors(curves(pairs)(x))
        bad = ac.max_errors(curves(wrong)(x))
    assert max(right.values()) <= ac.TOLERANCE_ULPS * np.finfo(np.float64).eps
    assert bad["sigmoid"] > 0.5 and bad["relu"] == 1.0
    assert bad["tanh"] == right["tanh"]


def test_fd_check_catches_a_wrong_custom_gradient_in_its_own_leaf():
    @jax.custom_jvp
    def bad_sigmoid(x):
        return activations.sigmoid(x)

    @bad_sigmoid.defjvp
    def _jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return bad_sigmoid(x), 1.01 * activations.sigmoid_derivative(x) * t  # 1% too large

    pairs = {name: ac.activation_pairs(0.1)[name] for name in ("sigmoid", "tanh")}
    with jax.enable_x64(True):
        x = jnp.linspace(-3.0, 3.0, 16, dtype=jnp.float64)
        rel, passed, rtol = ac.fd_check(dict(pairs, sigmoid=(bad_sigmoid, None, "")), x)
    assert not passed["sigmoid"] and rel["sigmoid"] > 100 * rtol
    assert passed["tanh"] and rel["tanh"] < rtol  # the error stays in its own leaf


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_check_points_include_zero_and_the_extremes(dtype):
    x = np.asarray(ac.check_points(dict(ac.DEFAULT_CONFIG, check_points=11), dtype))
    assert x.dtype == dtype and x.shape == (11 + len(ac.EXTREMES),)
    assert 0.0 in x and 1e4 in x and -1e4 in x


# --------------------------------------------------------------------------- the gradient norms

def test_layer_gradient_norms_equal_a_direct_jax_grad():
    depth, width, batch = 3, ac.DEFAULT_CONFIG["width"], ac.DEFAULT_CONFIG["batch_size"]
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.PRNGKey(7), 2)
        norms = ac.layer_gradient_norms("tanh", depth, width, batch, keys)
        assert norms.shape == (2, depth) and norms.dtype == jnp.float64
        net = models.mlp([width] * depth + [1], "tanh", dtype=jnp.float64)
        grad = jax.jit(jax.grad(lambda p, x, y: losses.mse(net.apply(p, x), y)))
        for s, key in enumerate(keys):
            _, params = net.init(jax.random.fold_in(key, 0))
            x = jax.random.normal(jax.random.fold_in(key, 1), (batch, width), jnp.float64)
            y = jax.random.normal(jax.random.fold_in(key, 2), (batch, 1), jnp.float64)
            grads = grad(params, x, y)
            direct = [np.linalg.norm(np.asarray(grads[f"dense{l}"]["w"])) for l in range(depth)]
            np.testing.assert_allclose(norms[s], direct, rtol=1e-12)


@pytest.mark.parametrize("setting, message", [
    ({"depth": 1}, "activation_calculus: depth must be >= 2"),
    ({"depth_activations": ["sigmoid", "swish"]}, "depth_activations: .*swish"),
])
def test_bad_settings_are_rejected_before_any_work(tmp_path, setting, message):
    config = dict(ac.DEFAULT_CONFIG, **setting, out_dir=str(tmp_path), quick=True)
    with pytest.raises(ValueError, match=message):
        ac.run(config)
    assert not list(tmp_path.iterdir())
