"""The ``rnn_timeseries`` experiment: BPTT RNN forecasts vs baselines, gradient norm by lag.

The quick run's science assertions are the ones that held with a wide margin on seeds 0-4
(RNN MSE at most 0.3× persistence on the sines and 0.55× on the AR(2) process; untrained
gradient ratio lag 23 / lag 0 at most 2e-3); the helper tests are exact.
"""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import rnn_timeseries as rt
from jaxcalc import cli, finite_diff

PLOTS = ("predictions.png", "grad_norm_by_lag.png", "training_curves.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``jaxcalc run rnn_timeseries --quick`` shared by the tests: (results.json, folder)."""
    out = tmp_path_factory.mktemp("rnn_timeseries")
    assert cli.main(["run", "rnn_timeseries", "--quick", "--out", str(out),
                     "--set", "progress=false"]) == 0
    return json.loads((out / "results.json").read_text()), out


# --------------------------------------------------------------------------- the quick run

def test_results_json_holds_the_contract_keys(quick_run):
    results, _ = quick_run
    window = rt.DEFAULT_CONFIG["window"]
    assert set(results["series"]) == {"sum_of_sines", "ar2"}
    for name, r in results["series"].items():
        for key in ("rnn_mse", "last_value_mse", "ar_mse", "oracle_mse"):
            assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] > 0, (name, key)
        norms = results["grad_norm_by_lag"][name]
        for model in ("rnn", "rnn_untrained"):
            g = np.asarray(norms[model], dtype=float)
            assert g.shape == (window,) and np.all(np.isfinite(g)) and np.all(g > 0), model
    assert results["cells"] == rt.QUICK_CONFIG["cells"]


def test_rnn_beats_persistence(quick_run):
    series = quick_run[0]["series"]
    assert series["sum_of_sines"]["rnn_mse"] < 0.5 * series["sum_of_sines"]["last_value_mse"]
    assert series["ar2"]["rnn_mse"] < series["ar2"]["last_value_mse"]
    assert series["sum_of_sines"]["rnn_beats_last_value"] is True


def test_least_squares_ar_is_near_the_noise_floor_on_the_ar2_process(quick_run):
    r = quick_run[0]["series"]["ar2"]
    # AR(24) contains the true AR(2) predictor; its excess test error is the estimation error
    # of 25 coefficients from ~800 windows (a few percent), far from persistence.
    assert r["ar_mse"] < 1.15 * r["oracle_mse"]
    assert r["ar_mse"] < 0.6 * r["last_value_mse"]


def test_untrained_rnn_gradient_vanishes_with_lag(quick_run):
    results, _ = quick_run
    for name in ("sum_of_sines", "ar2"):
        g = np.asarray(results["grad_norm_by_lag"][name]["rnn_untrained"])
        assert g[-1] < 1e-2 * g[0], name
        assert results["grad_decay_per_step"][name]["rnn_untrained"] < 0.8, name
    assert results["rnn_recurrent_matrix"]["untrained"]["spectral_radius"] < 1


def test_training_on_the_sines_lengthens_the_rnn_memory(quick_run):
    results, _ = quick_run
    decay = results["grad_decay_per_step"]["sum_of_sines"]
    assert decay["rnn"] > decay["rnn_untrained"] + 0.1
    spectra = results["rnn_recurrent_matrix"]
    assert spectra["sum_of_sines"]["spectral_radius"] > spectra["untrained"]["spectral_radius"]


def test_plots_are_written(quick_run):
    _, out = quick_run
    for name in PLOTS:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC, name


def test_summary_table_lists_both_series(quick_run):
    text = rt.summarize(quick_run[0])
    assert "sum_of_sines" in text and "ar2" in text and "last value" in text


def test_bad_ar_order_fails_before_any_work(tmp_path):
    config = dict(rt.DEFAULT_CONFIG, **rt.QUICK_CONFIG, out_dir=str(tmp_path), quick=True,
                  ar_order=rt.DEFAULT_CONFIG["window"] + 1)
    with pytest.raises(ValueError, match="rnn_timeseries: ar_order must be in"):
        rt.run(config)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- the helpers

def test_windows_frame_inputs_and_the_next_value():
    inputs, targets = rt.windows(np.arange(6.0), 2)
    np.testing.assert_array_equal(inputs, [[0, 1], [1, 2], [2, 3], [3, 4]])
    np.testing.assert_array_equal(targets, [2, 3, 4, 5])
    with pytest.raises(ValueError, match=r"windows: series must be 1-D and longer than window"):
        rt.windows(np.arange(3.0), 3)


def test_ar2_process_follows_its_recursion():
    coefficients = (1.5, -0.75)
    x, mean = map(np.asarray, rt.ar2_process(jax.random.PRNGKey(0), 50, coefficients))
    np.testing.assert_allclose(mean[2:], 1.5 * x[1:-1] - 0.75 * x[:-2], rtol=0, atol=1e-12)
    assert np.std(x - mean) > 0.5  # the innovations are N(0, 1), not zero
    with pytest.raises(ValueError, match=r"ar2_process: coefficients must be \[a1, a2\]"):
        rt.ar2_process(jax.random.PRNGKey(0), 10, (0.5,))


def test_sum_of_sines_without_noise_is_the_periodic_clean_signal():
    noisy, clean = rt.sum_of_sines(jax.random.PRNGKey(1), 40, [10.0], [2.0], 0.0)
    np.testing.assert_array_equal(noisy, clean)
    np.testing.assert_allclose(clean[10:], clean[:-10], rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.max(np.abs(clean)), 2.0, rtol=0.05)
    with pytest.raises(ValueError, match="sum_of_sines: periods and amplitudes"):
        rt.sum_of_sines(jax.random.PRNGKey(1), 40, [10.0, 5.0], [1.0], 0.1)


def test_fit_ar_recovers_a_noiseless_ar2_recursion_exactly():
    x = np.empty(40)
    x[:2] = [1.0, 0.3]
    for t in range(2, len(x)):  # a reference recursion in plain NumPy, on 40 numbers
        x[t] = 1.5 * x[t - 1] - 0.75 * x[t - 2]
    inputs, targets = rt.windows(x, 5)
    coefficients = rt.fit_ar(inputs, targets, 2)
    np.testing.assert_allclose(coefficients, [-0.75, 1.5, 0.0], rtol=0, atol=1e-9)  # oldest first
    np.testing.assert_allclose(rt.ar_predict(coefficients, inputs), targets, rtol=0, atol=1e-9)


def test_decay_per_step_of_a_geometric_sequence_is_its_ratio():
    assert rt.decay_per_step(3.0 * 0.7 ** np.arange(10)) == pytest.approx(0.7, rel=1e-12)
    assert rt.decay_per_step(np.ones(5)) == pytest.approx(1.0, rel=1e-12)


@pytest.fixture(scope="module")
def tiny_rnn():
    fns = rt._model_fns("rnn", hidden=4, window=5)
    params = fns["init"](jax.random.PRNGKey(3))
    keys = jax.random.split(jax.random.PRNGKey(4))
    inputs = jax.random.normal(keys[0], (3, 5, 1), jnp.float64)
    targets = jax.random.normal(keys[1], (3, 1), jnp.float64)
    return fns, params, inputs, targets


@pytest.mark.parametrize("jit", [False, True])
def test_bptt_input_gradient_matches_finite_differences(tiny_rnn, jit):
    fns, params, inputs, targets = tiny_rnn
    loss = lambda xs: fns["loss"](params, (xs, targets))
    numerical = finite_diff.grad(jax.jit(loss), inputs)
    analytical = (fns["input_grad"](inputs, params, targets) if jit  # the experiment's jitted one
                  else jax.grad(loss)(inputs))
    np.testing.assert_allclose(analytical, numerical, rtol=1e-7, atol=1e-10)
    # and the check has teeth: the gradient of a perturbed loss is rejected
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(analytical * (1 + 1e-5), numerical, rtol=1e-7, atol=1e-10)


def test_grad_norm_index_is_the_lag(tiny_rnn):
    fns, params, inputs, targets = tiny_rnn
    cut = {**params, "cell": {**params["cell"], "w_h": jnp.zeros_like(params["cell"]["w_h"])}}
    # with no recurrence the prediction depends only on the last input: lag 0
    g = rt.grad_norm_by_lag(fns["input_grad"], cut, inputs, targets)
    assert g[0] > 0 and np.all(g[1:] == 0)
    full = rt.grad_norm_by_lag(fns["input_grad"], params, inputs, targets)
    expected = np.linalg.norm(np.asarray(fns["input_grad"](inputs, params, targets))[:, ::-1, 0],
                              axis=0)
    np.testing.assert_allclose(full, expected, rtol=1e-14)
