"""The hessian_vs_fd experiment: results contract, the float64 science (central differences of
exact gradients reach < 1e-6, Richardson does better, every V-curve has its minimum inside the
sweep), float32 being worse, the plots, and the checks that must fail on bad numbers.

One run of the quick configuration on all three models (module fixture) serves every test.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from experiments import hessian_vs_fd as hv
from jaxcalc import runner

METHOD_KEYS = {"central_grad", "second_diff_value", "richardson"}
ENTRY_KEYS = {"best_step", "best_error", "seconds"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hessian_vs_fd")
    config = dict(hv.DEFAULT_CONFIG, **hv.QUICK_CONFIG)
    config.update(models=list(hv.MODELS), out_dir=str(out), quick=True, progress=False)
    results = hv.run(config)
    runner.write_json(out / "results.json", results)  # as the runner does
    return results, out


def test_results_contract_float64_and_float32_have_the_same_shape(run):
    results, out = run
    saved = json.loads((out / "results.json").read_text())
    for key in ("models", "models_float32"):
        assert set(saved[key]) == set(hv.MODELS)
        for name, methods in saved[key].items():
            assert set(methods) == METHOD_KEYS
            for entry in methods.values():
                assert set(entry) >= ENTRY_KEYS
                assert all(isinstance(entry[k], float) and entry[k] > 0 for k in ENTRY_KEYS)
    for name in hv.MODELS:
        assert saved["exact_seconds"][name] > 0
        assert saved["num_params"][name] == {"mlp": 38, "cnn": 47, "rnn": 19}[name]


def test_float64_central_differences_of_gradients_are_accurate(run):
    results, _ = run
    for name, methods in results["models"].items():
        assert methods["central_grad"]["best_error"] < 1e-6, name
        # second differences of values only reach ~√ε; still well under 1e-4 here
        assert methods["second_diff_value"]["best_error"] < 1e-4, name


def test_richardson_beats_central_in_float64(run):
    results, _ = run
    for name, methods in results["models"].items():
        assert methods["richardson"]["best_error"] < methods["central_grad"]["best_error"], name


def test_v_curves_have_interior_minima(run):
    """Recomputed from the raw sweeps: the smallest error is at neither end of the sweep, and
    both ends are at least 100× worse (truncation on the right, round-off on the left)."""
    results, _ = run
    for dtype, key in (("float64", "models"), ("float32", "models_float32")):
        sweep = results["sweeps"][dtype]
        steps = np.asarray(sweep["steps"])
        for name in hv.MODELS:
            for method in METHOD_KEYS:
                errors = np.asarray(sweep[name][method], np.float64)
                errors = np.where(np.isfinite(errors), errors, np.inf)
                best = int(np.argmin(errors))
                assert 0 < best < len(steps) - 1, (dtype, name, method)
                assert results[key][name][method]["interior_minimum"]
                assert results[key][name][method]["best_step"] == pytest.approx(steps[best])
                if dtype == "float64":
                    assert min(errors[0], errors[-1]) > 100 * errors[best], (name, method)


def test_best_steps_follow_the_balance_of_truncation_and_round_off(run):
    """float64 best steps: central ~ ε^(1/3) ≈ 6e-6, second differences ~ ε^(1/4) ≈ 1e-4,
    Richardson ~ ε^(1/7) ≈ 6e-3 (a decade of slack either way; the sweep has a step a decade)."""
    results, _ = run
    for name, methods in results["models"].items():
        central = methods["central_grad"]["best_step"]
        value = methods["second_diff_value"]["best_step"]
        richardson = methods["richardson"]["best_step"]
        assert 1e-7 <= central <= 1e-4, name
        assert 1e-5 <= value <= 1e-2, name
        assert central < value and central < richardson, name


def test_float32_is_worse_than_float64_for_every_method(run):
    results, _ = run
    for name in hv.MODELS:
        for method in METHOD_KEYS:
            e64 = results["models"][name][method]["best_error"]
            e32 = results["models_float32"][name][method]["best_error"]
            assert e32 > 100 * e64, (name, method)
        # central differences of float32 gradients cannot beat float32 round-off (~ε32 = 1.2e-7)
        assert results["models_float32"][name]["central_grad"]["best_error"] > 1e-7
        assert 0 < results["exact_float32_error"][name] < 1e-5


def test_checks_pass_and_the_plots_exist(run):
    results, out = run
    assert results["passed"] is True and all(results["checks"].values())
    assert runner.exit_status(hv, results) == 0
    for png in ("hessian_vs_fd.png", "hessian_fd_timing.png"):
        assert (out / png).stat().st_size > 10_000
    assert 0 < results["maxpool_min_gap"] < 1
    text = hv.summarize(results)
    assert "all checks passed" in text and "richardson" in text and "exact" in text


@pytest.mark.parametrize("breakage", ["central_too_big", "richardson_worse", "edge_minimum"])
def test_checks_fail_on_numbers_that_break_the_science(run, breakage):
    bad = copy.deepcopy(run[0])
    mlp = bad["models"]["mlp"]
    if breakage == "central_too_big":
        mlp["central_grad"]["best_error"] = 2e-6
        mlp["richardson"]["best_error"] = 1e-6
    elif breakage == "richardson_worse":
        mlp["richardson"]["best_error"] = 2 * mlp["central_grad"]["best_error"]
    else:
        mlp["second_diff_value"]["interior_minimum"] = False
    bad["checks"] = hv._checks(bad)
    bad["passed"] = all(bad["checks"].values())
    assert not bad["passed"] and runner.exit_status(hv, bad) == 1
    assert "FAILED" in hv.summarize(bad)


def test_sweep_steps_and_their_validation():
    config = dict(hv.DEFAULT_CONFIG)
    steps = hv.sweep_steps(config, "float64")
    assert steps[0] == pytest.approx(1.0) and steps[-1] == pytest.approx(1e-12)
    assert len(steps) == 25 and np.all(np.diff(np.log10(steps)) < 0)
    assert len(hv.sweep_steps(dict(config, steps_per_decade=1), "float32")) == 7
    with pytest.raises(runner.ConfigError, match="min_step_float32"):
        hv.sweep_steps(dict(config, min_step_float32=2.0), "float32")


def test_summary_of_curve_flags_an_edge_minimum():
    steps = np.logspace(0, -4, 5)
    assert hv._summary_of_curve(steps, np.array([1.0, 0.1, 0.01, 0.1, 1.0]))["interior_minimum"]
    edge = hv._summary_of_curve(steps, np.array([1e-9, 0.1, 0.01, 0.1, np.nan]))
    assert edge == {"best_step": 1.0, "best_error": 1e-9, "interior_minimum": False}


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(runner.ConfigError, match="hessian_vs_fd: models.*'vgg'"):
        hv.run(dict(hv.DEFAULT_CONFIG, models=["vgg"], out_dir=str(tmp_path), quick=False))
