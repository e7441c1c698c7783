"""Exact Hessians vs finite-difference Hessians: error against step size, float32 and float64.

Question: how close can a finite-difference Hessian get to the exact one, at which step, and at
what cost — for three small networks, three finite-difference schemes and two precisions?

Method. Three models with a loss, each at a random point of its own initialisation:

* ``mlp`` — ``models.mlp([3, 6, 2], "tanh")`` with softmax cross-entropy (38 parameters);
* ``cnn`` — ``serial(Conv2D(2, 3), Activation("tanh"), MaxPool2D(2), Flatten(), Dense(3))`` on
  6×6 images with softmax cross-entropy (47 parameters). **tanh replaces ReLU**: ReLU is
  piecewise linear, its Hessian contribution is undefined at every kink, and a finite difference
  that straddles one sees a jump instead of a curvature. Max pooling stays;
  it is smooth away from ties, and the smallest gap between the two largest entries of any
  pooling window is reported (``maxpool_min_gap``) so one can see how far from a tie the point is;
* ``rnn`` — ``models.rnn_regressor(3)`` on sequences ``(batch, 5, 1)`` with mean squared error
  (19 parameters).

The exact Hessian is ``derivatives.hessian_matrix`` (forward-over-reverse HVPs, Pearlmutter
1994). It is compared with ``finite_diff.hessian`` over a sweep of absolute steps ``h`` (one
step for every coordinate):

* ``central_grad`` — ``method="central", source="grad"``: central differences of exact
  gradients, error ``O(h²) + O(ε/h)``, best ~``ε^(2/3)`` at ``h ~ ε^(1/3)``;
* ``second_diff_value`` — ``method="central", source="value"``: second differences of the loss
  itself (no gradient used), error ``O(h²) + O(ε/h²)``, best ~``ε^(1/2)`` at ``h ~ ε^(1/4)``;
* ``richardson`` — ``method="richardson", source="grad"``: central differences at ``h, h/2,
  h/4`` combined by Richardson extrapolation, error ``O(h⁶) + O(ε/h)``, best ~``ε^(6/7)``.

Error of an estimate: ``max|H_fd − H| / max|H|`` (relative max-norm). In float64 both the
estimate and the reference are float64; in float32 the finite differences run in float32 at
the float32-rounded parameters and data, and the reference is the float64 exact Hessian at that
same point, so the float32 error includes float32 round-off (the exact Hessian computed in
float32 is reported too, ``exact_float32_error``: the round-off floor of float32 arithmetic).
Plotted against ``h`` on log-log axes each error traces a V: truncation on the right, round-off
on the left, the best step at the bottom (Press et al., *Numerical Recipes*, 3rd ed., §5.7;
Richardson, 1927; Ridders, 1982).

Timing: each sweep is one compiled ``lax.map`` over the steps; ``seconds`` is its run time
(after a warm-up call; compilation excluded, reported as ``compile_seconds``) divided by the
number of steps, i.e. the cost of one finite-difference Hessian. The exact Hessian is timed the
same way, a compiled ``lax.map`` over ``exact_repeats`` copies of the parameters, so that
neither time is dominated by the ~0.1 ms of dispatching a call. ``--quick`` compiles without
LLVM optimisation (``fast_compile``), which makes its timings unrepresentative — use the
default run for the time table.

Results: ``models`` (float64) and ``models_float32``, each ``{model: {method: {"best_step",
"best_error", "seconds", "compile_seconds", "interior_minimum"}}}``; ``sweeps`` (every error of
every step); ``exact_seconds``, ``num_params``, ``exact_float32_error``; ``checks`` and
``passed`` for the expected science (float64: central best < 1e-6, Richardson best < central
best, every V-curve's minimum inside the sweep).

Plots: ``hessian_vs_fd.png`` — one panel per model, error vs step (log-log), one line per method
(colour) and dtype (solid float64, dashed float32), the best step of each starred, the float32
exact-Hessian floor dotted and, for the CNN, the smallest max-pool gap dash-dotted;
``hessian_fd_timing.png`` — seconds per Hessian for each method and the exact Hessian.

What they show (default run): in float64 central differences of gradients bottom out at
~1e-11–6e-11 near ``h ≈ 3e-6``, second differences of the loss at ~3e-8–2e-7 near ``h ≈ 1e-4``,
and Richardson at ~5e-14–3e-13 near ``h ≈ 3e-3``; float32 is four to seven orders worse. On the
CNN every curve jumps to ~1e-1 once ``h`` exceeds the smallest max-pool gap (~2e-3 at this
point): a window's maximum switches and the finite difference straddles the kink. The kink caps
the usable step, so float32 second differences, whose best step ``ε32^(1/4) ≈ 2e-2`` lies
beyond it, fail on the CNN (~1e-1) while they reach ~1e-3 on the smooth MLP and RNN. Per
Hessian, second differences (``~2n²`` loss evaluations) cost 3–15× central differences of
gradients (``2n`` gradients), Richardson 1–4× (``6n`` gradients), and the exact Hessian (``n``
HVPs) is the cheapest; at these sizes the times are fractions of a millisecond and vary by ~2×
from run to run on a shared CPU.

Run time (2-core CPU, float64 and float32): default about 30 s (27 s of CPU, nearly all
compilation; up to a minute on a loaded machine); ``--quick`` (MLP only, a step per decade,
fast compilation) about 7 s.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from experiments import _common
from jaxcalc import derivatives, finite_diff, layers, losses, models
from jaxcalc.runner import ConfigError, experiment_main

ORDER = 30
DESCRIPTION = ("exact vs finite-difference Hessians (central, second differences, Richardson): "
               "error vs step, float32/float64, cost")
DEFAULT_CONFIG: Dict[str, Any] = {
    "seed": 0,
    "models": ["mlp", "cnn", "rnn"],
    "batch": 8,              # examples in the loss
    "max_step": 1.0,         # largest step of the sweep
    "min_step_float64": 1e-12,
    "min_step_float32": 1e-6,  # below ~ε32 = 1.2e-7 a step no longer moves the parameters
    "steps_per_decade": 2,
    "exact_repeats": 25,     # exact Hessians per timed loop (its time is the loop's / this)
    "fast_compile": False,   # compile without LLVM optimisation (faster start, slower code)
    "plots": True,
    "progress": True,
}
QUICK_CONFIG: Dict[str, Any] = {"models": ["mlp"], "batch": 4, "steps_per_decade": 1,
                                "exact_repeats": 5, "fast_compile": True}
# For `jaxcalc run tour`: all three models (the CNN's max-pool kink shows) on a coarser sweep.
TOUR_CONFIG: Dict[str, Any] = {"steps_per_decade": 1, "fast_compile": True}

MODELS = ("mlp", "cnn", "rnn")
DTYPES = ("float64", "float32")
# method key -> (finite_diff.hessian method, source)
METHODS: Dict[str, Tuple[str, str]] = {
    "central_grad": ("central", "grad"),
    "second_diff_value": ("central", "value"),
    "richardson": ("richardson", "grad"),
}
CENTRAL_BEST_BOUND = 1e-6  # float64: central differences of exact gradients must beat this
IMAGE_SIZE = 6
SEQUENCE_LENGTH = 5
NUM_CLASSES = {"mlp": 2, "cnn": 3}
_FAST_COMPILE = {"xla_backend_optimization_level": 0}


class Problem(NamedTuple):
    """A model's loss ``loss(params, batch)`` at a point: float64 params and data."""

    loss: Callable[[Any, Tuple[Any, Any]], jax.Array]
    params: Any
    batch: Tuple[np.ndarray, np.ndarray]


def _cnn() -> models.Model:
    """The study's small CNN: tanh in place of ReLU (no kinks for the differences to straddle)."""
    return models.serial(models.Conv2D(2, 3), models.Activation("tanh"), models.MaxPool2D(2),
                         models.Flatten(), models.Dense(NUM_CLASSES["cnn"]))


def make_problem(name: str, seed: int, batch: int) -> Problem:
    """Model, loss, float64 parameters from the model's own ``init`` and NumPy-drawn data."""
    rng = np.random.default_rng([seed, MODELS.index(name)])
    if name == "mlp":
        net, shape = models.mlp([3, 6, NUM_CLASSES["mlp"]], "tanh"), (batch, 3)
        x = rng.standard_normal(shape)
        y = rng.integers(0, NUM_CLASSES["mlp"], batch)
        loss_of_output = losses.softmax_cross_entropy
    elif name == "cnn":
        net, shape = _cnn(), (batch, IMAGE_SIZE, IMAGE_SIZE, 1)
        x = rng.uniform(0.0, 1.0, shape)
        y = rng.integers(0, NUM_CLASSES["cnn"], batch)
        loss_of_output = losses.softmax_cross_entropy
    elif name == "rnn":
        net, shape = models.rnn_regressor(3), (batch, SEQUENCE_LENGTH, 1)
        t = np.arange(SEQUENCE_LENGTH)
        phase = rng.uniform(0, 2 * np.pi, (batch, 1))
        noise = 0.1 * rng.standard_normal((batch, SEQUENCE_LENGTH))
        x = (np.sin(0.7 * t + phase) + noise)[..., None]
        y = np.sin(0.7 * SEQUENCE_LENGTH + phase)
        loss_of_output = losses.mse
    else:
        raise ConfigError(f"hessian_vs_fd: models must be a list of {list(MODELS)}, got {name!r}")
    init = jax.jit(net.init, static_argnums=1)
    _, params = init(jax.random.PRNGKey(seed), shape)
    loss = lambda p, b: loss_of_output(net.apply(p, b[0]), b[1])
    return Problem(loss, params, (x, y))


def _cast(tree, dtype):
    """Floating leaves of ``tree`` as ``dtype`` arrays; integer leaves (labels) unchanged."""
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype) if jnp.issubdtype(jnp.result_type(a), jnp.floating)
        else jnp.asarray(a), tree)


def maxpool_min_gap(params, images) -> float:
    """Smallest gap between the largest and second-largest entry of any 2×2 pooling window of
    the CNN's first activation (how far the point is from a max-pooling kink)."""
    conv = params["conv0"]
    a = jnp.tanh(layers.conv2d(jnp.asarray(images), conv["w"], conv["b"]))
    n, h, w, c = a.shape
    windows = a[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c)
    windows = jnp.sort(windows.transpose(0, 1, 3, 5, 2, 4).reshape(-1, 4), axis=-1)
    return float(jnp.min(windows[:, -1] - windows[:, -2]))


def sweep_steps(config: Dict[str, Any], dtype_name: str) -> np.ndarray:
    """Log-spaced steps from ``max_step`` down to ``min_step_<dtype>``, ``steps_per_decade``."""
    hi, lo = config["max_step"], config[f"min_step_{dtype_name}"]
    if not 0 < lo < hi:
        raise ConfigError(f"hessian_vs_fd: need 0 < min_step_{dtype_name} < max_step, got "
                         f"{lo!r} and {hi!r}")
    count = int(round(np.log10(hi / lo) * config["steps_per_decade"])) + 1
    return np.logspace(np.log10(hi), np.log10(lo), count)


def _relative_error(estimate: jax.Array, reference: jax.Array) -> jax.Array:
    """``max|A − B| / max|B|`` in float64 (NaN if a step did not move a coordinate)."""
    estimate = estimate.astype(reference.dtype)
    return jnp.max(jnp.abs(estimate - reference)) / jnp.max(jnp.abs(reference))


def _sweep_fn(f: Callable, method: str, source: str, n: int) -> Callable:
    """``(params, reference, steps) -> errors``: one FD Hessian per step, by ``lax.map``."""
    chunk = max(n, n * (n - 1) // 2)  # every column / entry in one vmap: tiny models

    def sweep(params, reference, steps):
        def error(h):
            estimate = finite_diff.hessian(f, params, method=method, source=source, step=h,
                                           chunk_size=chunk)
            return _relative_error(estimate, reference)

        return lax.map(error, steps)

    return sweep


def _compiled(fn: Callable, args, fast: bool):
    """``jax.jit(fn)`` compiled ahead of time for ``args``; returns ``(compiled, seconds)``."""
    start = time.perf_counter()
    jitted = jax.jit(fn, compiler_options=_FAST_COMPILE if fast else None)
    compiled = jitted.lower(*args).compile()
    return compiled, time.perf_counter() - start


def _timed(compiled, args) -> Tuple[Any, float]:
    """Output and wall time of one call of ``compiled``, after a warm-up call."""
    jax.block_until_ready(compiled(*args))
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, time.perf_counter() - start


def _summary_of_curve(steps: np.ndarray, errors: np.ndarray) -> Dict[str, Any]:
    """Best step and error of a V-curve, and whether the minimum lies inside the sweep."""
    finite = np.where(np.isfinite(errors), errors, np.inf)
    best = int(np.argmin(finite))
    return {"best_step": float(steps[best]), "best_error": float(finite[best]),
            "interior_minimum": bool(0 < best < len(steps) - 1)}


def run(config: Dict[str, Any]) -> Dict[str, Any]:
    names = list(config["models"])
    for name in names:
        if name not in MODELS:
            raise ConfigError(f"hessian_vs_fd: models must be a list of {list(MODELS)}, "
                             f"got {name!r}")
    fast = bool(config["fast_compile"])
    results: Dict[str, Any] = {"models": {}, "models_float32": {}, "sweeps": {},
                               "exact_seconds": {}, "num_params": {}, "exact_float32_error": {}}
    jobs = [(name, None, None) for name in names]  # exact Hessians first, then the sweeps
    jobs += [(name, dtype_name, method) for name in names for dtype_name in DTYPES
             for method in METHODS]
    with jax.enable_x64(True):
        problems = {name: make_problem(name, config["seed"], config["batch"]) for name in names}
        if "cnn" in problems:
            cnn = problems["cnn"]
            results["maxpool_min_gap"] = maxpool_min_gap(cnn.params, cnn.batch[0])
        for dtype_name in DTYPES:
            results["sweeps"][dtype_name] = {"steps": sweep_steps(config, dtype_name).tolist()}
        exact = {}
        for name, dtype_name, method in _common.progress(jobs, desc="hessian_vs_fd",
                                                         enabled=config["progress"]):
            problem = problems[name]
            if method is None:
                exact[name] = _exact(problem, config, fast, results, name)
                continue
            dtype = jnp.dtype(dtype_name)
            params, batch = _cast(problem.params, dtype), _cast(problem.batch, dtype)
            f = lambda p, batch=batch, loss=problem.loss: loss(p, batch)
            n = ravel_pytree(params)[0].size
            fd_method, source = METHODS[method]
            steps = np.asarray(results["sweeps"][dtype_name]["steps"])
            args = (params, exact[name][dtype_name], jnp.asarray(steps, dtype))
            compiled, compile_seconds = _compiled(_sweep_fn(f, fd_method, source, n), args, fast)
            errors, sweep_seconds = _timed(compiled, args)
            errors = np.asarray(errors, np.float64)
            entry = _summary_of_curve(steps, errors)
            entry.update(seconds=sweep_seconds / len(steps), compile_seconds=compile_seconds)
            key = "models" if dtype_name == "float64" else "models_float32"
            results[key].setdefault(name, {})[method] = entry
            results["sweeps"][dtype_name].setdefault(name, {})[method] = errors.tolist()
    results["checks"] = _checks(results)
    results["passed"] = all(results["checks"].values())
    if config["plots"]:
        _plot_curves(results, config["out_dir"])
        _plot_timing(results, config["out_dir"])
    return results


def _exact(problem: Problem, config, fast: bool, results: Dict[str, Any], name: str):
    """Reference Hessians — float64 at the float64 point and float64 at the float32-rounded
    point — plus the exact Hessian's time per call and the error of computing it in float32.

    Each is the first of a compiled ``lax.map`` of ``hessian_matrix`` over ``exact_repeats``
    copies of the parameters (runtime data, so the compiler cannot hoist the work out of the
    loop); the loop's time divided by the copies is the time of one exact Hessian.
    """
    copies = max(1, int(config["exact_repeats"]))

    def hessians(stacked, batch):
        hessian = lambda p: derivatives.hessian_matrix(lambda q: problem.loss(q, batch), p)
        return lax.map(hessian, stacked)

    def stack(params):
        return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (copies,) + a.shape), params)

    p64, b64 = _cast(problem.params, jnp.float64), _cast(problem.batch, jnp.float64)
    p32, b32 = _cast(problem.params, jnp.float32), _cast(problem.batch, jnp.float32)
    compiled64, _ = _compiled(hessians, (stack(p64), b64), fast)
    h64, seconds = _timed(compiled64, (stack(p64), b64))
    h64_at_32 = compiled64(stack(_cast(p32, jnp.float64)), _cast(b32, jnp.float64))[0]
    compiled32, _ = _compiled(hessians, (stack(p32), b32), fast)
    h32 = compiled32(stack(p32), b32)[0]
    results["exact_seconds"][name] = seconds / copies
    results["num_params"][name] = int(h64.shape[-1])
    results["exact_float32_error"][name] = float(_relative_error(h32, h64_at_32))
    return {"float64": h64[0], "float32": h64_at_32}


def _checks(results: Dict[str, Any]) -> Dict[str, bool]:
    """The float64 science: central best < 1e-6, Richardson beats central, interior minima."""
    checks = {}
    for name, methods in results["models"].items():
        checks[f"{name}: central_grad best < {CENTRAL_BEST_BOUND:g}"] = (
            methods["central_grad"]["best_error"] < CENTRAL_BEST_BOUND)
        checks[f"{name}: richardson best < central_grad best"] = (
            methods["richardson"]["best_error"] < methods["central_grad"]["best_error"])
        for method, entry in methods.items():
            checks[f"{name}: {method} minimum inside the sweep"] = entry["interior_minimum"]
    return checks


# ----------------------------------------------------------------------------- plots

_COLORS = {"central_grad": "tab:blue", "second_diff_value": "tab:green", "richardson": "tab:red"}
_LABELS = {"central_grad": "central, from gradients", "second_diff_value":
           "second differences of the loss", "richardson": "Richardson (central h, h/2, h/4)"}


def _plot_curves(results: Dict[str, Any], out_dir: str) -> None:
    plt = _common.pyplot()
    names = list(results["models"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(5.2 * len(names) + 3.2, 4.8),
                             gridspec_kw={"width_ratios": [1] * len(names) + [0.55]})
    legend_ax = axes[-1]
    for ax, name in zip(axes[:-1], names):
        for dtype_name, style in (("float64", "-"), ("float32", "--")):
            sweep = results["sweeps"][dtype_name]
            steps = np.asarray(sweep["steps"])
            table = results["models" if dtype_name == "float64" else "models_float32"][name]
            for method, errors in sweep[name].items():
                errors = np.asarray(errors, np.float64)
                ax.loglog(steps, np.where(errors > 0, errors, np.nan), style, marker="o",
                          markersize=2.5, color=_COLORS[method], linewidth=1.3,
                          label=f"{_LABELS[method]} ({dtype_name})")
                best = table[method]
                ax.plot(best["best_step"], best["best_error"], "*", color=_COLORS[method],
                        markersize=11, markeredgecolor="black", markeredgewidth=0.6)
        ax.axhline(results["exact_float32_error"][name], color="gray", linestyle=":",
                   linewidth=1, label="exact Hessian computed in float32")
        if name == "cnn" and "maxpool_min_gap" in results:
            ax.axvline(results["maxpool_min_gap"], color="black", linestyle="-.", linewidth=0.9,
                       label="smallest max-pool gap (windows switch for larger h)")
        ax.set_xlabel("step h (absolute, every coordinate)")
        ax.set_ylabel("relative error  max|H_fd − H| / max|H|")
        ax.set_title(f"{name} ({results['num_params'][name]} parameters)")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_ylim(1e-16, 1e2)
    handles = {}
    for ax in axes[:-1]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    legend_ax.axis("off")
    legend_ax.legend(list(handles.values()), list(handles), loc="center left", fontsize=8,
                     title="method (dtype)", title_fontsize=9)
    fig.suptitle("Finite-difference Hessians vs the exact Hessian: V-curves "
                 "(solid float64, dashed float32, ★ best step)", fontsize=11)
    _common.save_figure(fig, out_dir, "hessian_vs_fd.png")


def _plot_timing(results: Dict[str, Any], out_dir: str) -> None:
    plt = _common.pyplot()
    names = list(results["models"])
    labels = list(METHODS) + ["exact (hessian_matrix)"]
    width = 0.8 / len(labels)
    fig, ax = plt.subplots(figsize=(2.2 * len(names) + 4, 4))
    x = np.arange(len(names))
    for i, label in enumerate(labels):
        if label in METHODS:
            values = [results["models"][n][label]["seconds"] for n in names]
            color = _COLORS[label]
        else:
            values = [results["exact_seconds"][n] for n in names]
            color = "gray"
        ax.bar(x + (i - (len(labels) - 1) / 2) * width, values, width, color=color, label=label)
    ax.set_yscale("log")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{n} (n={results['num_params'][n]})" for n in names])
    ax.set_ylabel("seconds per Hessian (log scale)")
    ax.set_title("Cost of one Hessian, float64 (compilation excluded)")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "hessian_fd_timing.png")


# ----------------------------------------------------------------------------- summary


def summarize(results: Dict[str, Any]) -> str:
    rows = []
    for key, dtype_name in (("models", "float64"), ("models_float32", "float32")):
        for name, methods in results[key].items():
            for method, e in methods.items():
                rows.append((name, dtype_name, method, f"{e['best_error']:.2e}",
                             f"{e['best_step']:.1e}", f"{e['seconds'] * 1e3:.2f}",
                             "yes" if e["interior_minimum"] else "NO"))
            if dtype_name == "float64":
                rows.append((name, dtype_name, "exact hessian_matrix", "-", "-",
                             f"{results['exact_seconds'][name] * 1e3:.2f}", "-"))
    table = _common.format_table(
        ["model", "dtype", "method", "best error", "best step", "ms/Hessian", "interior min"],
        rows)
    failed = [name for name, ok in results["checks"].items() if not ok]
    verdict = "all checks passed" if not failed else "FAILED: " + "; ".join(failed)
    return f"{table}\n\n{verdict}"


def main() -> int:
    return experiment_main(__name__)


if __name__ == "__main__":
    sys.exit(main())
