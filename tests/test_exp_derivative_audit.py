"""The derivative_audit experiment: every primitive passes in float32 and float64, the audit
fails (exit status 1) when a primitive is broken, and its error measure is check_grad's rule.

The full --quick audit runs once (module fixture, through the CLI); the broken-primitive cases
audit only the patched rows (``primitives=[...]``) to stay fast.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments import derivative_audit as da
from jaxcalc import activations, cli, finite_diff, runner

ROW_KEYS = {"name", "group", "dtype", "comparison", "max_rel_error", "tolerance", "passed"}
# The library's closed forms: each must be held against jax.grad in both dtypes.
LIBRARY_CLOSED_FORMS = ["sigmoid_derivative", "tanh_derivative", "softplus_derivative",
                        "relu_derivative", "leaky_relu_derivative", "softmax_jacobian",
                        "mse_grad", "binary_cross_entropy_with_logits_grad",
                        "softmax_cross_entropy_grad", "batch_norm / batch_norm_input_grad"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("derivative_audit")
    status = cli.main(["run", "derivative_audit", "--quick", "--out", str(out)])
    return status, json.loads((out / "results.json").read_text()), out


def _config(tmp_path, **overrides):
    return dict(da.DEFAULT_CONFIG, **da.QUICK_CONFIG, out_dir=str(tmp_path), quick=True,
                progress=False, **overrides)


def _errors(results, comparison, dtype):
    return {r["name"]: r["max_rel_error"] for r in results["rows"]
            if r["comparison"] == comparison and r["dtype"] == dtype}


# ----------------------------------------------------------------------------- the audit passes


def test_quick_audit_passes_every_row_and_exits_0(quick):
    status, results, out = quick
    assert status == 0
    failed = [(r["name"], r["dtype"], r["comparison"]) for r in results["rows"] if not r["passed"]]
    assert results["passed"] is True and not failed, failed
    assert results["num_rows"] == len(results["rows"]) and results["num_failed"] == 0
    for row in results["rows"]:
        assert set(row) >= ROW_KEYS
        assert row["tolerance"] == da.TOLERANCES[(row["comparison"], row["dtype"])]
        assert 0.0 <= row["max_rel_error"] <= row["tolerance"]
    assert (out / "derivative_audit.png").stat().st_size > 10_000
    assert json.loads((out / "config.json").read_text())["quick"] is True


def test_every_primitive_is_audited_in_both_dtypes(quick):
    _, results, _ = quick
    present = {(r["name"], r["dtype"], r["comparison"]) for r in results["rows"]}
    for name in da.probes():
        for dtype in da.DTYPES:
            assert (name, dtype, "autodiff_vs_fd") in present
    for name in LIBRARY_CLOSED_FORMS + ["dense", "conv2d (stride 1, padding 1)",
                                        "max_pool2d (2x2)", "avg_pool2d (2x2)",
                                        "unroll rnn_cell (BPTT)", "power_spectrum",
                                        "fourier_features"]:
        for dtype in da.DTYPES:
            assert (name, dtype, "closed_vs_autodiff") in present, name
    groups = {r["group"] for r in results["rows"]}
    assert groups == {"activations", "losses", "layers", "rnn", "signal"}
    names = " ".join(da.probes())
    for must in ["binary_cross_entropy (probabilities)", "conv2d (stride 2, SAME)", "lstm", "gru"]:
        assert must in names


def test_float32_finite_differences_are_orders_weaker_than_float64(quick):
    _, results, _ = quick
    fd64 = _errors(results, "autodiff_vs_fd", "float64")
    fd32 = _errors(results, "autodiff_vs_fd", "float32")
    # ε^(2/3): 3.7e-11 (float64) vs 2.4e-5 (float32); the float64 worst beats the float32 best.
    assert max(fd64.values()) < 1e-3 * min(fd32.values())
    closed64 = _errors(results, "closed_vs_autodiff", "float64")
    assert max(closed64.values()) < 1e-13  # two exact formulas: a few ulps apart at most


def test_summary_lists_every_row(quick):
    _, results, _ = quick
    text = da.summarize(results)
    assert "all derivatives agree" in text
    assert len(text.splitlines()) >= len(results["rows"]) + 2


# ----------------------------------------------------------------------------- broken primitives


def test_a_mis_scaled_closed_form_fails_the_audit(monkeypatch, tmp_path):
    original = activations.sigmoid_derivative
    monkeypatch.setattr(activations, "sigmoid_derivative", lambda x: 1.01 * original(x))
    results = da.run(_config(tmp_path, primitives=["sigmoid_derivative", "tanh_derivative"]))
    assert results["passed"] is False
    assert runner.exit_status(da, results) == 1
    failed = {(r["name"], r["dtype"], r["comparison"]) for r in results["rows"] if not r["passed"]}
    assert failed == {("sigmoid_derivative", dtype, "closed_vs_autodiff") for dtype in da.DTYPES}
    for r in results["rows"]:
        if (r["name"], r["dtype"], r["comparison"]) in failed:
            # 1 % of b over |a| + |b| + ‖b‖∞ ≈ 3 |b|: about 0.01 / 3
            assert r["max_rel_error"] == pytest.approx(0.01 / 3, rel=0.05)
    assert "EXCEED" in da.summarize(results)
    assert (tmp_path / "derivative_audit.png").exists()


def test_a_wrong_autodiff_rule_is_caught_by_finite_differences(monkeypatch, tmp_path):
    """A primitive whose jax.grad is wrong (a custom JVP 1 % off): the closed form disagrees
    with it, and in float64 so do finite differences."""

    @jax.custom_jvp
    def bad_tanh(x):
        return jnp.tanh(x)

    @bad_tanh.defjvp
    def _bad_tanh_jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        return jnp.tanh(x), 1.01 * (1 - jnp.tanh(x) ** 2) * dx

    monkeypatch.setattr(activations, "tanh", bad_tanh)
    results = da.run(_config(tmp_path, primitives=["tanh_derivative"], plots=False))
    assert runner.exit_status(da, results) == 1
    verdict = {(r["dtype"], r["comparison"]): r["passed"] for r in results["rows"]}
    assert not verdict[("float64", "autodiff_vs_fd")]
    assert not verdict[("float64", "closed_vs_autodiff")]
    assert not verdict[("float32", "closed_vs_autodiff")]
    # float32 finite differences are weak: a 1 % error sits at about their tolerance
    err32 = next(r["max_rel_error"] for r in results["rows"]
                 if (r["dtype"], r["comparison"]) == ("float32", "autodiff_vs_fd"))
    assert 1e-3 < err32 < 1e-2


def test_unknown_primitive_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(runner.ConfigError, match="no_such_primitive.*valid.*sigmoid_derivative"):
        da.run(_config(tmp_path, primitives=["no_such_primitive"]))
    argv = ["run", "derivative_audit", "--quick", "--out", str(tmp_path / "cli"),
            "--set", 'primitives=["no_such_primitive"]']
    assert cli.main(argv) == 2
    assert "no_such_primitive" in capsys.readouterr().err


# ----------------------------------------------------------------------------- pieces


def test_relative_error_is_check_grads_rule_with_atol_scaled_to_the_gradient():
    f = lambda p: jnp.sum(jnp.sin(p["a"])) * jnp.sum(p["b"] ** 2) + 1e-3 * jnp.sum(p["a"] ** 3)
    params = {"a": jnp.array([0.3, -1.2, 2.0]), "b": jnp.array([[0.5, -0.25]])}
    auto = jax.grad(f)(params)
    numeric = finite_diff.grad(f, params)
    scale = float(np.max(np.abs(ravel_pytree(auto)[0])))
    rtol = 1e-7
    report = finite_diff.check_grad(f, params, rtol=rtol, atol=rtol * scale)
    assert report.passed
    assert da.relative_error(numeric, auto) == pytest.approx(report.max_rel_error, rel=1e-9)


def test_relative_error_edge_cases():
    b = np.array([1.0, -2.0, 0.0])
    assert da.relative_error(b, b) == 0.0
    assert da.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert da.relative_error(np.array([1.0, np.nan, 0.0]), b) == np.inf
    a = b + np.array([0.0, 1e-6, 1e-6])
    assert da.relative_error(1e5 * a, 1e5 * b) == pytest.approx(da.relative_error(a, b))
    # a zero entry is judged on the scale of the whole derivative: 1e-6 / (1e-6 + 2)
    assert da.relative_error(a, b) == pytest.approx(1e-6 / (1e-6 + 2.0), rel=1e-6)
    assert da.relative_error(-b, b) == pytest.approx(2 * 2.0 / (2 + 2 + 2.0))
    with pytest.raises(ValueError, match="relative_error.*same number of entries"):
        da.relative_error(np.zeros(2), np.zeros(3))


def test_inputs_keep_away_from_kinks():
    rng = np.random.default_rng(0)
    x = da._away_from_zero(rng, (50, 7))
    assert np.min(np.abs(x)) >= da.KINK_MARGIN
    images = da._distinct_windows(rng, (3, 6, 8, 2))
    windows = images.reshape(3, 3, 2, 4, 2, 2).transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4)
    gaps = np.diff(np.sort(windows, axis=-1), axis=-1)
    assert np.min(gaps) >= da.KINK_MARGIN - 1e-12


@pytest.mark.parametrize("padding", [0, 2])
def test_conv2d_backward_closed_form_matches_jax_grad_at_other_paddings(padding):
    from jaxcalc import layers

    rng = np.random.default_rng(padding)
    x = jnp.asarray(rng.standard_normal((2, 5, 5, 2)))
    kernel = jnp.asarray(rng.standard_normal((3, 3, 2, 3)))
    bias = jnp.asarray(rng.standard_normal(3))
    out = layers.conv2d(x, kernel, bias, padding=padding)
    u = jnp.asarray(rng.standard_normal(out.shape))
    f = lambda p: jnp.sum(u * layers.conv2d(p["x"], p["kernel"], p["bias"], padding=padding))
    auto = jax.grad(f)({"x": x, "kernel": kernel, "bias": bias})
    closed = da._conv2d_backward(x, kernel, u, padding)
    for name in ("x", "kernel", "bias"):
        np.testing.assert_allclose(closed[name], auto[name], rtol=1e-12, atol=1e-12)
