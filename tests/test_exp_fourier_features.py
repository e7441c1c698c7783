"""The ``fourier_features`` experiment: its signals, its inputs, and the quick run's science."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import fourier_features as ff
from jaxcalc import runner

SPEC = ff._SignalSpec.from_config(ff.DEFAULT_CONFIG)
PNGS = ("accuracy_vs_noise.png", "signals_and_spectra.png", "fourier_weights.png")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One ``--quick`` run through the runner (writes config.json and results.json)."""
    out = tmp_path_factory.mktemp("fourier_features")
    results, out_dir = runner.run_experiment("fourier_features", out=out, quick=True)
    return results, out_dir


# --------------------------------------------------------------------------- the quick run

def test_results_json_has_the_contract_keys(quick_run):
    _, out_dir = quick_run
    saved = json.loads((out_dir / "results.json").read_text())
    config = json.loads((out_dir / "config.json").read_text())
    levels = [float(s) for s in config["noise_levels"]]
    assert saved["noise_levels"] == levels
    assert set(saved["accuracy"]) == {"raw", "fourier"}
    for kind in ("raw", "fourier"):
        acc = saved["accuracy"][kind]
        assert len(acc) == len(levels)
        assert all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in acc)
    assert saved["chance"] == pytest.approx(1.0 / config["num_classes"])


def test_fourier_features_beat_raw_samples_at_the_lowest_noise(quick_run):
    results, _ = quick_run
    raw, fourier = results["accuracy"]["raw"][0], results["accuracy"]["fourier"][0]
    # Random phase leaves a linear model on raw samples near chance; the amplitude spectrum
    # separates the bands almost perfectly.
    assert fourier >= 0.95, fourier
    assert raw <= 0.6, raw
    assert fourier - raw >= 0.35, (fourier, raw)


def test_fourier_accuracy_falls_with_noise(quick_run):
    results, _ = quick_run
    fourier = results["accuracy"]["fourier"]
    assert fourier[-1] < fourier[0] - 0.3, fourier


def test_quick_run_writes_every_plot(quick_run):
    _, out_dir = quick_run
    for name in PNGS:
        path = out_dir / name
        assert path.exists() and path.stat().st_size > 10_000, name


def test_summary_lists_every_noise_level(quick_run):
    results, _ = quick_run
    text = ff.summarize(results)
    for sigma in results["noise_levels"]:
        assert f"{sigma:g}" in text
    assert "raw" in text and "fourier" in text and "MLP" not in text  # quick skips the MLP


def test_summary_shows_the_mlp_columns_when_run():
    results = {"noise_levels": [0.1], "accuracy": {"raw": [0.3], "fourier": [1.0]},
               "accuracy_mlp": {"raw": [0.9], "fourier": [1.0]}, "model": "softmax regression",
               "chance": 0.25}
    assert "raw (MLP)" in ff.summarize(results)


# --------------------------------------------------------------------------- the pieces

MAKE_SIGNALS = jax.jit(ff.make_signals, static_argnums=(1, 2))


@pytest.fixture(scope="module")
def signals():
    return MAKE_SIGNALS(jax.random.PRNGKey(3), 5, SPEC)


def test_make_signals_shapes_labels_and_bands(signals):
    s, k = signals, len(SPEC.band_edges) - 1
    assert s.clean.shape == s.noise.shape == (5 * k, SPEC.length)
    assert s.clean.dtype == s.noise.dtype == jnp.float32  # even with x64 enabled
    np.testing.assert_array_equal(s.labels, np.repeat(np.arange(k), 5))
    edges = np.asarray(SPEC.band_edges)
    f, c = np.asarray(s.frequencies), np.asarray(s.labels)
    slack = 1e-5  # float32 rounding of the band edges
    assert np.all(f >= edges[c] + SPEC.margin - slack)
    assert np.all(f <= edges[c + 1] - SPEC.margin + slack)
    amp = np.max(np.abs(np.asarray(s.clean)), axis=1)
    assert np.all(amp <= SPEC.amplitude_max + 1e-5)


def test_make_signals_is_deterministic_in_its_key_with_and_without_jit(signals):
    eager = ff.make_signals(jax.random.PRNGKey(3), 5, SPEC)
    np.testing.assert_array_equal(eager.labels, signals.labels)
    np.testing.assert_allclose(eager.frequencies, signals.frequencies, rtol=1e-6)
    np.testing.assert_allclose(eager.noise, signals.noise, rtol=1e-6, atol=1e-6)
    # cos of a float32 argument up to 2π·(band_high + 1) ≈ 220 rad: jit may round the
    # argument differently, by a few ulps of 220 (ulp ≈ 1.5e-5)
    max_arg = 2 * np.pi * (SPEC.band_edges[-1] + 1)
    atol = 4 * max_arg * np.finfo(np.float32).eps
    np.testing.assert_allclose(eager.clean, signals.clean, rtol=0, atol=atol)
    other = MAKE_SIGNALS(jax.random.PRNGKey(4), 5, SPEC)
    assert not np.allclose(other.clean, signals.clean)


def test_noisy_adds_scaled_unit_noise(signals):
    s = signals
    np.testing.assert_allclose(s.noisy(0.0), s.clean)
    np.testing.assert_allclose(s.noisy(2.0) - s.clean, 2.0 * s.noise, rtol=1e-6, atol=1e-6)


def test_amplitude_features_ignore_the_phase_raw_samples_do_not(signals):
    # A phase shift by π negates the signal: every logit of a linear model on raw samples
    # flips sign, while the amplitude spectrum is unchanged.
    x = signals.clean
    np.testing.assert_array_equal(ff.features("raw", -x), -ff.features("raw", x))
    np.testing.assert_array_equal(ff.features("fourier", -x), ff.features("fourier", x))
    assert ff.features("fourier", x).shape == (x.shape[0], SPEC.length // 2 + 1)
    # a circular time shift of an integer-frequency tone only changes its phase, too
    t = jnp.arange(SPEC.length, dtype=jnp.float32)
    tone = jnp.cos(2 * jnp.pi * 8 * t / SPEC.length + 0.3)
    np.testing.assert_allclose(ff.features("fourier", jnp.roll(tone, 5)),
                               ff.features("fourier", tone), atol=1e-6)


def test_standardize_uses_the_training_statistics():
    train = jnp.asarray(np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4)), jnp.float32)
    test = train[:5] + 1.0
    z_train, z_test = ff.standardize(train, test)
    np.testing.assert_allclose(np.mean(z_train, axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.std(z_train, axis=0), 1.0, atol=1e-4)
    shift = np.broadcast_to(1.0 / np.std(np.asarray(train), axis=0), (5, 4))
    np.testing.assert_allclose(z_test - z_train[:5], shift, rtol=1e-4)


def test_accuracy_counts_argmax_hits():
    apply = lambda params, x: x
    logits = jnp.array([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert float(ff.accuracy(apply, None, logits, jnp.array([0, 1, 1]))) == pytest.approx(2 / 3)
    assert float(ff.accuracy(apply, None, logits, jnp.array([1, 0, 1]))) == 0.0


@pytest.mark.parametrize("setting, message", [
    ({"band_high": 70.0}, "band_high <= signal_length / 2 = 64"),
    ({"num_classes": 1}, "num_classes must be >= 2"),
    ({"band_margin": 4.0}, "band_margin must be in"),
    ({"noise_levels": []}, "noise_levels must be a non-empty list"),
    ({"amplitude_min": 2.0}, "amplitude_min <= amplitude_max"),
    ({"epochs": 0}, "epochs must be >= 1"),
])
def test_bad_settings_are_rejected_before_any_work(tmp_path, setting, message):
    config = dict(ff.DEFAULT_CONFIG, **setting, out_dir=str(tmp_path), quick=True)
    with pytest.raises(ValueError, match=f"fourier_features: .*{message}"):
        ff.run(config)
    assert not list(tmp_path.iterdir())


def test_the_default_config_is_valid():
    ff.check_config(ff.DEFAULT_CONFIG)
    ff.check_config(dict(ff.DEFAULT_CONFIG, **ff.QUICK_CONFIG))
