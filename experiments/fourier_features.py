"""Classify noisy sinusoids by frequency band: raw samples vs Fourier amplitude features.

Question. Seed 000 introduces the Fourier transform as the tool for "recognising patterns in
signals". How much does it help a classifier? Each signal is a sinusoid whose frequency lies
in one of ``num_classes`` bands, with a random phase and amplitude, plus white Gaussian noise.
The class is a property of the frequency alone, so it is invariant to the phase — but a linear
model on the raw samples cannot be: shifting the phase by π flips the sign of every sample and
so of every logit, and over uniformly random phases the class-conditional mean signal is zero.
The amplitude spectrum :math:`|X_k| / n` (``jaxcalc.signal.fourier_features``) is unchanged by
a phase shift (shift theorem), concentrates the sinusoid in one or two bins while the noise
spreads evenly over all of them, and makes the bands linearly separable.

Method. Signals of length ``n`` (128): :math:`x_t = A \\cos(2\\pi f t / n + \\varphi) + \\sigma
\\varepsilon_t` with ``f`` uniform in its class band (cycles per signal; a ``band_margin``
keeps a gap between neighbouring bands), ``φ ~ U[0, 2π)``, ``A ~ U[amplitude_min,
amplitude_max]``, ``ε ~ N(0, 1)``. The clean signals and the unit noise are drawn once (explicit
keys) and reused at every noise level σ, so only σ changes along the curve. Two inputs — the
raw samples ``(n,)`` and the one-sided amplitude spectrum ``(n // 2 + 1,)`` — are standardised
with the training set's mean and standard deviation and given to the same classifier, trained
identically: softmax regression (``models.mlp([d, K])``) with Adam on the full batch
(``trainers.from_optax`` + ``fit``), from the same initial key. With ``mlp_hidden > 0`` a
one-hidden-layer ReLU MLP is trained the same way, to show what a non-linear model recovers
from the raw samples. Accuracies are on a separate test set drawn from the same distribution.

Plots:
* ``accuracy_vs_noise.png`` — test accuracy against σ (log axis) for raw and Fourier inputs
  (solid: softmax regression; dashed: the MLP when run), chance level dotted;
* ``signals_and_spectra.png`` — one signal per class at σ = ``example_noise`` (noisy and
  clean) beside its power spectrum ``jaxcalc.signal.power_spectrum`` with the class band shaded;
* ``fourier_weights.png`` — the softmax regression's weights on the Fourier features at the
  lowest noise level: each class has learned a detector for its own band.

References: Cooley & Tukey, "An algorithm for the machine calculation of complex Fourier
series", Math. Comp., 1965 (the FFT); Oppenheim & Schafer, "Discrete-Time Signal Processing",
3rd ed., 2010 (the DFT shift theorem: a time shift only changes the phase of X_k).

Run time on the shared 2-core CPU: the default (7 noise levels × 2 inputs × 2 models, 800 + 800
signals, 300 full-batch epochs) 20–30 s; ``--quick`` (3 noise levels, softmax regression only,
400 + 400 signals, 150 epochs) about 9 s.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _common
from jaxcalc import fit, losses, models, signal, trainers
from jaxcalc.runner import experiment_main

ORDER = 80
DESCRIPTION = ("noisy sinusoids classified by frequency band: raw samples vs Fourier amplitude "
               "features")
DEFAULT_CONFIG: Dict[str, Any] = {
    "seed": 0,
    "signal_length": 128,
    "num_classes": 4,
    "band_low": 2.0,            # lowest band edge, cycles per signal
    "band_high": 34.0,          # highest band edge; bands split [band_low, band_high] evenly
    "band_margin": 0.5,         # frequencies keep this far (cycles) inside their band's edges
    "amplitude_min": 0.5,
    "amplitude_max": 1.5,
    "train_per_class": 200,
    "test_per_class": 200,
    "noise_levels": [0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0],
    "epochs": 300,
    "learning_rate": 0.01,
    "mlp_hidden": 64,           # width of the comparison MLP's hidden layer; 0 = skip it
    "example_noise": 1.0,       # σ of the example signals plotted
}
QUICK_CONFIG: Dict[str, Any] = {
    "train_per_class": 100,
    "test_per_class": 100,
    "noise_levels": [0.1, 1.0, 4.0],
    "epochs": 150,
    "mlp_hidden": 0,
}

FEATURES = ("raw", "fourier")
DTYPE = jnp.float32  # classification needs no float64
_STD_FLOOR = 1e-6    # guards the standardisation of a constant feature


class Signals(NamedTuple):
    """Clean signals, unit-variance noise and labels; ``noisy(σ)`` = clean + σ · noise."""

    clean: jax.Array        # (N, n) float32
    noise: jax.Array        # (N, n) float32, standard normal
    labels: jax.Array       # (N,) int32
    frequencies: jax.Array  # (N,) float32, cycles per signal

    def noisy(self, sigma: float):
        return self.clean + sigma * self.noise


def band_edges(config: Dict[str, Any]) -> np.ndarray:
    """The ``num_classes + 1`` band edges (cycles per signal), evenly spaced."""
    return np.linspace(config["band_low"], config["band_high"], config["num_classes"] + 1)


class _SignalSpec(NamedTuple):
    """The static (hashable) description of the signal distribution."""

    length: int
    band_edges: Tuple[float, ...]
    margin: float
    amplitude_min: float
    amplitude_max: float

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "_SignalSpec":
        return cls(int(config["signal_length"]), tuple(float(e) for e in band_edges(config)),
                   float(config["band_margin"]), float(config["amplitude_min"]),
                   float(config["amplitude_max"]))


def make_signals(key, per_class: int, spec: _SignalSpec) -> Signals:
    r"""``per_class`` signals of each class: :math:`A\cos(2\pi f t / n + \varphi)` and unit noise.

    ``f ~ U[edge_c + margin, edge_{c+1} - margin]`` for class ``c``, ``φ ~ U[0, 2π)``,
    ``A ~ U[amplitude_min, amplitude_max]``, noise ``N(0, 1)``.

    Args:
      key: PRNG key.
      per_class: signals per class (static).
      spec: length ``n``, band edges, margin and amplitude range (static).

    Returns:
      ``Signals`` with ``clean`` and ``noise`` of shape ``(K·per_class, n)`` float32, int32
      ``labels (K·per_class,)`` in class-major order, and the ``frequencies``.
    """
    n, num_classes = spec.length, len(spec.band_edges) - 1
    edges = jnp.asarray(spec.band_edges, DTYPE)
    labels = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), per_class)
    k_freq, k_phase, k_amp, k_noise = jax.random.split(key, 4)
    low = edges[labels] + spec.margin
    high = edges[labels + 1] - spec.margin
    freq = low + (high - low) * jax.random.uniform(k_freq, labels.shape, DTYPE)
    phase = 2 * jnp.pi * jax.random.uniform(k_phase, labels.shape, DTYPE)
    amp = jax.random.uniform(k_amp, labels.shape, DTYPE, spec.amplitude_min, spec.amplitude_max)
    t = jnp.arange(n, dtype=DTYPE)
    clean = amp[:, None] * jnp.cos(2 * jnp.pi * freq[:, None] * t / n + phase[:, None])
    noise = jax.random.normal(k_noise, clean.shape, DTYPE)
    return Signals(clean, noise, labels, freq)


def features(kind: str, x):
    """The classifier's input: the raw samples ``(N, n)`` or the amplitude spectrum
    ``(N, n // 2 + 1)`` (``signal.fourier_features`` keeping every one-sided bin)."""
    if kind == "raw":
        return x
    return signal.fourier_features(x, x.shape[-1] // 2 + 1)


def standardize(train, test) -> Tuple[Any, Any]:
    """Both sets standardised per feature with the training set's mean and standard deviation."""
    mean, std = jnp.mean(train, axis=0), jnp.std(train, axis=0) + _STD_FLOOR
    return (train - mean) / std, (test - mean) / std


def _inputs(kind: str, train: Signals, test: Signals, sigma):
    """Standardised ``kind`` features of the training and test signals at noise level ``sigma``."""
    return standardize(features(kind, train.noisy(sigma)), features(kind, test.noisy(sigma)))


def accuracy(apply, params, x, labels):
    """Fraction of ``x`` whose arg-max logit is its label (a scalar array)."""
    return jnp.mean(jnp.argmax(apply(params, x), axis=-1) == labels)


def _classifier(num_inputs: int, hidden: int, num_classes: int):
    """Softmax regression (``hidden == 0``) or a one-hidden-layer ReLU MLP (He init)."""
    sizes = [num_inputs] + ([hidden] if hidden else []) + [num_classes]
    return models.mlp(sizes, "relu", dtype=DTYPE)


def _trainer(net, learning_rate: float):
    """Adam on the mean softmax cross-entropy of ``net``'s logits."""
    def loss_fn(params, batch):
        x, y = batch
        return losses.softmax_cross_entropy(net.apply(params, x), y)

    return trainers.from_optax(loss_fn, optax.adam(learning_rate))


def check_config(config: Dict[str, Any]) -> None:
    """Raise ValueError naming the setting when the signals or the sweep are ill-posed."""
    fn = "fourier_features"
    n, k = config["signal_length"], config["num_classes"]
    low, high = config["band_low"], config["band_high"]
    if k < 2:
        raise ValueError(f"{fn}: num_classes must be >= 2, got {k}")
    if not 0 <= low < high <= n / 2:
        raise ValueError(f"{fn}: need 0 <= band_low < band_high <= signal_length / 2 = {n / 2:g} "
                         f"(the Nyquist frequency), got band_low={low}, band_high={high}")
    width = (high - low) / k
    if not 0 <= 2 * config["band_margin"] < width:
        raise ValueError(f"{fn}: band_margin must be in [0, band width / 2) = [0, {width / 2:g}), "
                         f"got {config['band_margin']}")
    if not 0 < config["amplitude_min"] <= config["amplitude_max"]:
        raise ValueError(f"{fn}: need 0 < amplitude_min <= amplitude_max, got "
                         f"{config['amplitude_min']} and {config['amplitude_max']}")
    levels = config["noise_levels"]
    if not levels or min(levels) < 0:
        raise ValueError(f"{fn}: noise_levels must be a non-empty list of values >= 0, got "
                         f"{levels}")
    for name in ("train_per_class", "test_per_class", "epochs"):
        if config[name] < 1:
            raise ValueError(f"{fn}: {name} must be >= 1, got {config[name]}")
    if config["mlp_hidden"] < 0:
        raise ValueError(f"{fn}: mlp_hidden must be >= 0 (0 = no MLP), got {config['mlp_hidden']}")


def run(config: Dict[str, Any]) -> Dict[str, Any]:
    check_config(config)
    key = jax.random.PRNGKey(config["seed"])
    k_train, k_test, k_init, k_fit = jax.random.split(key, 4)
    generate = jax.jit(make_signals, static_argnums=(1, 2))
    spec = _SignalSpec.from_config(config)
    train = generate(k_train, config["train_per_class"], spec)
    test = generate(k_test, config["test_per_class"], spec)
    noise_levels = [float(s) for s in config["noise_levels"]]
    n, num_classes = config["signal_length"], config["num_classes"]
    widths = {"raw": n, "fourier": n // 2 + 1}
    hidden_sizes = {"softmax": 0}
    if config["mlp_hidden"]:
        hidden_sizes["mlp"] = int(config["mlp_hidden"])

    # One network, trainer and initial parameters per (model, input), and one jitted input
    # pipeline per input: every noise level then reuses the compiled code (``fit`` caches its
    # compiled epoch per trainer).
    prepare = {kind: jax.jit(functools.partial(_inputs, kind)) for kind in FEATURES}
    setups = {}
    for model, hidden in hidden_sizes.items():
        for kind in FEATURES:
            net = _classifier(widths[kind], hidden, num_classes)
            _, params0 = net.init(k_init)
            setups[model, kind] = (net, _trainer(net, config["learning_rate"]), params0,
                                   jax.jit(functools.partial(accuracy, net.apply)))

    test_acc = {m: {k: [] for k in FEATURES} for m in hidden_sizes}
    train_acc = {m: {k: [] for k in FEATURES} for m in hidden_sizes}
    weights_low_noise = None
    jobs = [(s, m, k) for s in noise_levels for m in hidden_sizes for k in FEATURES]
    for sigma, model, kind in _common.progress(jobs, desc="fourier_features"):
        net, trainer, params0, score = setups[model, kind]
        x_train, x_test = prepare[kind](train, test, jnp.asarray(sigma, DTYPE))
        params, _ = fit(trainer, params0, (x_train, train.labels), epochs=config["epochs"],
                        key=k_fit, progress=False)
        train_acc[model][kind].append(float(score(params, x_train, train.labels)))
        test_acc[model][kind].append(float(score(params, x_test, test.labels)))
        if model == "softmax" and kind == "fourier" and sigma == noise_levels[0]:
            weights_low_noise = np.asarray(params["dense0"]["w"])

    results: Dict[str, Any] = {
        "accuracy": test_acc["softmax"],
        "noise_levels": noise_levels,
        "train_accuracy": train_acc["softmax"],
        "chance": 1.0 / num_classes,
        "band_edges": band_edges(config).tolist(),
        "model": "softmax regression",
    }
    if "mlp" in hidden_sizes:
        results["accuracy_mlp"] = test_acc["mlp"]
        results["train_accuracy_mlp"] = train_acc["mlp"]
        results["mlp_hidden"] = hidden_sizes["mlp"]

    out_dir = config["out_dir"]
    _plot_accuracy(results, config, out_dir)
    _plot_examples(train, config, out_dir)
    _plot_weights(weights_low_noise, config, noise_levels[0], out_dir)
    return results


# --------------------------------------------------------------------------- plots

_COLORS = {"raw": "tab:red", "fourier": "tab:blue"}
_LABELS = {"raw": "raw samples", "fourier": "Fourier amplitudes"}


def _plot_accuracy(results: Dict[str, Any], config: Dict[str, Any], out_dir: str) -> None:
    plt = _common.pyplot()
    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    sigmas = results["noise_levels"]
    for kind in FEATURES:
        ax.plot(sigmas, results["accuracy"][kind], "o-", color=_COLORS[kind],
                label=f"{_LABELS[kind]}, softmax regression")
        if "accuracy_mlp" in results:
            ax.plot(sigmas, results["accuracy_mlp"][kind], "s--", color=_COLORS[kind], alpha=0.7,
                    label=f"{_LABELS[kind]}, MLP ({results['mlp_hidden']} ReLU)")
    ax.axhline(results["chance"], color="gray", linestyle=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(sigmas, [f"{s:g}" for s in sigmas])
    ax.minorticks_off()
    ax.set_ylim(0, 1.05)
    ax.set(title="Frequency-band classification: test accuracy vs noise",
           xlabel=f"noise standard deviation σ (signal amplitude {config['amplitude_min']:g}–"
                  f"{config['amplitude_max']:g})", ylabel="test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    _common.save_figure(fig, out_dir, "accuracy_vs_noise.png")


def _plot_examples(train: Signals, config: Dict[str, Any], out_dir: str) -> None:
    plt = _common.pyplot()
    num_classes, per_class = config["num_classes"], config["train_per_class"]
    sigma = config["example_noise"]
    edges = band_edges(config)
    first = np.arange(num_classes) * per_class  # the first signal of each class
    noisy = np.asarray(train.noisy(sigma)[first])
    clean = np.asarray(train.clean[first])
    spectra = np.asarray(signal.power_spectrum(noisy))
    freqs = np.arange(spectra.shape[-1])
    fig, axes = plt.subplots(num_classes, 2, figsize=(11, 2.2 * num_classes), squeeze=False)
    for c in range(num_classes):
        ax = axes[c, 0]
        ax.plot(noisy[c], color="0.6", linewidth=0.8, label="noisy")
        ax.plot(clean[c], color="tab:blue", linewidth=1.2, label="clean")
        ax.set(title=f"class {c}: f = {float(train.frequencies[first[c]]):.1f} cycles "
                     f"(band {edges[c]:g}–{edges[c + 1]:g})",
               xlabel="sample t", ylabel="x_t")
        if c == 0:
            ax.legend(fontsize=7, loc="upper right", framealpha=0.9)
        ax = axes[c, 1]
        ax.axvspan(edges[c], edges[c + 1], color="tab:orange", alpha=0.25)
        ax.semilogy(freqs, spectra[c], color="k", linewidth=1.0)
        ax.set(title=f"class {c}: power spectrum |X_k|² / n, band shaded",
               xlabel="frequency bin k (cycles)", ylabel="power")
    fig.suptitle(f"One training signal per class at noise σ = {sigma:g}, and its power spectrum")
    _common.save_figure(fig, out_dir, "signals_and_spectra.png")


def _plot_weights(weights, config: Dict[str, Any], sigma: float, out_dir: str) -> None:
    plt = _common.pyplot()
    edges = band_edges(config)
    fig, ax = plt.subplots(figsize=(8, 4))
    colors = plt.cm.tab10(np.arange(weights.shape[1]))
    for c in range(weights.shape[1]):
        ax.plot(np.arange(weights.shape[0]), weights[:, c], color=colors[c], label=f"class {c}")
        ax.axvspan(edges[c], edges[c + 1], color=colors[c], alpha=0.12)
    ax.axhline(0, color="gray", linewidth=0.6)
    ax.set(title=f"Softmax regression weights on the Fourier features (σ = {sigma:g})",
           xlabel="frequency bin k (cycles); shaded: class bands",
           ylabel="weight (standardised feature)")
    ax.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "fourier_weights.png")


# --------------------------------------------------------------------------- summary

def summarize(results: Dict[str, Any]) -> str:
    header = ["noise σ", "raw", "fourier"]
    has_mlp = "accuracy_mlp" in results
    if has_mlp:
        header += ["raw (MLP)", "fourier (MLP)"]
    rows = []
    for i, sigma in enumerate(results["noise_levels"]):
        row = [f"{sigma:g}", results["accuracy"]["raw"][i], results["accuracy"]["fourier"][i]]
        if has_mlp:
            row += [results["accuracy_mlp"]["raw"][i], results["accuracy_mlp"]["fourier"][i]]
        rows.append(row)
    table = _common.format_table(header, rows, floatfmt=".3f")
    return (f"test accuracy of {results['model']} (chance {results['chance']:.2f})\n{table}")


def main() -> int:
    return experiment_main(__name__)


if __name__ == "__main__":
    sys.exit(main())
