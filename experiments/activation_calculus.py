"""Activations beside their closed-form derivatives, and the vanishing gradients they cause.

Question. (a) Does every closed-form derivative in ``jaxcalc.activations`` equal what
``jax.grad`` computes — including at the kinks of ReLU and leaky ReLU, where the derivative is
a convention — and does ``jax.grad`` agree with finite differences? (b) What do those
derivatives do to the gradient of a deep network? Backpropagation multiplies, once per layer,
by ``Wᵀ`` and by the activation's derivative at the pre-activations. The sigmoid's derivative
is at most σ'(0) = 1/4, so in a deep sigmoid network ‖∂L/∂W_l‖ shrinks by about a factor 4
per layer from the output back to the input — the vanishing-gradient problem — while tanh
(tanh'(0) = 1) and ReLU (derivative 0 or 1, He init) keep it roughly constant.

Method. (a) On a grid of ``check_points`` points in [−``check_range``, ``check_range``] plus 0
and the extremes ±50, ±1e4, the largest |closed form − ``jax.vmap(jax.grad(f))``| in float64
and in float32; and ``jaxcalc.finite_diff.check_grad`` (central differences, float64) of
``Σ_a Σ_i f_a(x_{a,i})`` over the pytree ``{activation a: x}`` — whose gradient leaf ``a`` is
``f_a'(x)`` elementwise — on ``fd_points`` points away from the kinks (per-leaf errors).
(b) ``models.mlp([width] * depth + [1], activation)`` — ``depth`` weight layers, Glorot
init for sigmoid/tanh and He init for ReLU, as ``models.mlp`` picks — on standard-normal inputs
``(batch_size, width)`` with standard-normal targets and the loss ``losses.mse``; the Frobenius
norm ‖∂L/∂W_l‖ of each layer's weight gradient (``jax.grad``), averaged over ``num_seeds``
initialisations and data draws (float64). Reported: the ratio of the first layer's norm to the
last layer's, and the mean decay factor per layer, ``ratio ** (1 / (depth − 1))``.

References: Hochreiter, "Untersuchungen zu dynamischen neuronalen Netzen", diploma thesis,
1991, and Bengio, Simard & Frasconi, "Learning long-term dependencies with gradient descent is
difficult", IEEE TNN, 1994 (vanishing gradients); Glorot & Bengio, "Understanding the
difficulty of training deep feedforward neural networks", AISTATS 2010; He et al., "Delving
deep into rectifiers", ICCV 2015; Nair & Hinton, 2010 (ReLU); Maas et al., 2013 (leaky ReLU).

Plots:
* ``activations.png`` — the seeds' figures: each activation with its closed-form derivative
  and ``jax.grad`` dots on top (one panel each), and all five derivatives together;
* ``gradient_norm_per_layer.png`` — ‖∂L/∂W_l‖ against the layer l (log scale), one line per
  activation (mean over seeds, min–max shaded), with the slope (1/4)^(L−l) of the sigmoid bound.

Run time on the shared 2-core CPU (mostly compilation): default (depth 16, 8 seeds) 13–25 s;
``--quick`` (depth 10, 3 seeds) about 11 s.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _common
from jaxcalc import activations, finite_diff, losses, models
from jaxcalc.runner import experiment_main

ORDER = 90
DESCRIPTION = ("activations beside their closed-form derivatives, and vanishing gradients in deep "
               "MLPs")
DEFAULT_CONFIG: Dict[str, Any] = {
    "seed": 0,
    "plot_range": 6.0,           # the figure shows x in [-plot_range, plot_range]
    "check_range": 10.0,         # closed form vs jax.grad on [-check_range, check_range] ...
    "check_points": 2001,        # ... at this many points (plus 0, ±50, ±1e4)
    "fd_points": 200,            # finite-difference check on this many points (even: 0 excluded)
    "leaky_relu_slope": 0.1,     # α of leaky ReLU in part (a) (0.1 so the slope is visible)
    "depth": 16,                 # weight layers of the deep MLPs
    "width": 32,
    "batch_size": 64,
    "num_seeds": 8,
    "depth_activations": ["sigmoid", "tanh", "relu"],
}
QUICK_CONFIG: Dict[str, Any] = {"depth": 10, "num_seeds": 3, "check_points": 401, "fd_points": 64}

# Closed form vs jax.grad: both evaluate the same expression up to rounding; 16 ulps of the
# dtype (the largest seen is softplus, ~4.5 ulps, where jax.grad differentiates logaddexp).
TOLERANCE_ULPS = 16
EXTREMES = (-1e4, -50.0, 0.0, 50.0, 1e4)
FD_RANGE = 6.0  # the finite-difference grid's half-width
KINK_GAP = 1e-3  # finite-difference points keep |x| > KINK_GAP ≫ the step (~6e-6 · max(1, |x|))
SIGMOID_DERIVATIVE_MAX = 0.25  # σ'(0) = 1/4, the sigmoid's per-layer bound
NUM_DOTS = 25  # jax.grad dots per panel of activations.png

Pair = Tuple[Callable, Callable, str]  # (f, closed-form f', the formula for the legend)


def activation_pairs(leaky_slope: float) -> Dict[str, Pair]:
    """The five activations of ``jaxcalc.activations`` with their closed-form derivatives."""
    leaky = functools.partial(activations.leaky_relu, negative_slope=leaky_slope)
    leaky_d = functools.partial(activations.leaky_relu_derivative, negative_slope=leaky_slope)
    return {
        "sigmoid": (activations.sigmoid, activations.sigmoid_derivative, "σ(1 − σ)"),
        "tanh": (activations.tanh, activations.tanh_derivative, "1 − tanh²"),
        "relu": (activations.relu, activations.relu_derivative, "1[x > 0]"),
        "leaky_relu": (leaky, leaky_d, f"1 if x > 0 else {leaky_slope:g}"),
        "softplus": (activations.softplus, activations.softplus_derivative, "σ(x)"),
    }


def derivative_curves(pairs: Dict[str, Pair], x) -> Dict[str, Tuple[jax.Array, ...]]:
    """``{name: (f(x), closed-form f'(x), jax.vmap(jax.grad(f))(x))}`` on the points ``x``."""
    return {name: (f(x), d(x), jax.vmap(jax.grad(f))(x)) for name, (f, d, _) in pairs.items()}


def max_errors(curves: Dict[str, Tuple[jax.Array, ...]]) -> Dict[str, float]:
    """``max |closed form − jax.grad|`` of each activation in ``derivative_curves``' output."""
    return {name: float(jnp.max(jnp.abs(d - g))) for name, (_, d, g) in curves.items()}


def check_points(config: Dict[str, Any], dtype) -> jax.Array:
    """The grid of part (a) in ``dtype``, with 0 and the extremes ±50, ±1e4 appended."""
    r = config["check_range"]
    return jnp.concatenate([jnp.linspace(-r, r, config["check_points"], dtype=dtype),
                            jnp.asarray(EXTREMES, dtype)])


def fd_check(pairs: Dict[str, Pair], x) -> Tuple[Dict[str, float], Dict[str, bool], float]:
    r"""``jax.grad`` vs central finite differences for every activation, in one check.

    ``finite_diff.check_grad`` of :math:`F(\{x_a\}) = \sum_a \sum_i f_a(x_{a,i})` over the
    pytree ``{name: x}``: leaf ``a`` of its gradient is :math:`f_a'(x)` elementwise, and the
    report's per-leaf errors are each activation's.

    Returns:
      ``({name: max relative error}, {name: passed}, rtol)``.
    """
    params = {name: x for name in pairs}
    total = jax.jit(lambda p: sum(jnp.sum(f(p[name])) for name, (f, _, _) in pairs.items()))
    report = finite_diff.check_grad(total, params)
    rel = {name: report.per_leaf[jax.tree_util.keystr((jax.tree_util.DictKey(name),))]
           ["max_rel_error"] for name in pairs}
    return rel, {name: e <= report.rtol for name, e in rel.items()}, report.rtol


# --------------------------------------------------------------------------- part (b)

def layer_gradient_norms(activation: str, depth: int, width: int, batch_size: int,
                         keys) -> jax.Array:
    r"""‖∂L/∂W_l‖ (Frobenius) for every layer of a fresh deep MLP, for each seed.

    ``L = mse(mlp([width] * depth + [1], activation)(x), y)`` with ``x ~ N(0, 1)`` of shape
    ``(batch_size, width)`` and ``y ~ N(0, 1)`` of shape ``(batch_size, 1)``, float64.

    Args:
      activation: a name ``models.mlp`` accepts (it picks He init for ReLU-like, else Glorot).
      depth: number of weight layers (``>= 2``).
      width, batch_size: hidden width and batch size.
      keys: ``(num_seeds, 2)`` PRNG keys, one per initialisation and data draw.

    Returns:
      ``(num_seeds, depth)`` float64 array; column ``l`` is layer ``l + 1`` (input side first).
    """
    net = models.mlp([width] * depth + [1], activation, dtype=jnp.float64)
    k_init, k_x, k_y = (jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys) for i in range(3))
    # Initialise eagerly (one compiled random op per weight shape, reused by every seed) and
    # stack the seeds; a vmapped init under jit would compile every layer's sampler anew.
    params = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves),
                                    *[net.init(k)[1] for k in k_init])
    x = jax.vmap(lambda k: jax.random.normal(k, (batch_size, width), jnp.float64))(k_x)
    y = jax.vmap(lambda k: jax.random.normal(k, (batch_size, 1), jnp.float64))(k_y)

    def norms(p, xs, ys):
        grads = jax.grad(lambda q: losses.mse(net.apply(q, xs), ys))(p)
        return jnp.stack([jnp.linalg.norm(grads[f"dense{l}"]["w"]) for l in range(depth)])

    return jax.jit(jax.vmap(norms))(params, x, y)


# --------------------------------------------------------------------------- the experiment

def run(config: Dict[str, Any]) -> Dict[str, Any]:
    depth = int(config["depth"])
    if depth < 2:
        raise ValueError(f"activation_calculus: depth must be >= 2 (first and last layer), "
                         f"got {depth}")
    for act in config["depth_activations"]:
        try:
            models.get_activation(act)
        except ValueError as exc:
            raise ValueError(f"activation_calculus: depth_activations: {exc}") from None
    pairs = activation_pairs(config["leaky_relu_slope"])
    with jax.enable_x64(True):
        curves = {}
        for dtype in (jnp.float64, jnp.float32):
            x = check_points(config, dtype)
            out = jax.jit(functools.partial(derivative_curves, pairs))(x)
            curves[jnp.dtype(dtype).name] = (x, {name: out[name] for name in pairs})
        errors = {dt: max_errors(c) for dt, (_, c) in curves.items()}
        x_fd = jnp.linspace(-FD_RANGE, FD_RANGE, config["fd_points"], dtype=jnp.float64)
        x_fd = x_fd[jnp.abs(x_fd) > KINK_GAP]  # relu and leaky relu have no derivative at 0
        fd_error, fd_passed, fd_rtol = fd_check(pairs, x_fd)
        max_derivative = {name: float(jnp.max(d)) for name, (_, d, _) in
                          curves["float64"][1].items()}

        keys = jax.random.split(jax.random.PRNGKey(config["seed"]), config["num_seeds"])
        per_seed = {}
        for act in _common.progress(config["depth_activations"], desc="activation_calculus"):
            per_seed[act] = np.asarray(layer_gradient_norms(act, depth, config["width"],
                                                            config["batch_size"], keys))
    _plot_activations(pairs, *curves["float64"], config, config["out_dir"])

    mean = {act: norms.mean(axis=0) for act, norms in per_seed.items()}
    ratio = {act: float(m[0] / m[-1]) for act, m in mean.items()}
    tolerance = {name: TOLERANCE_ULPS * float(jnp.finfo(name).eps) for name in errors}
    passed = (all(e <= tolerance[dt] for dt in errors for e in errors[dt].values())
              and all(fd_passed.values()))
    results = {
        "gradient_norm_per_layer": {act: m.tolist() for act, m in mean.items()},
        "first_to_last_ratio": ratio,
        "decay_per_layer": {act: r ** (1.0 / (depth - 1)) for act, r in ratio.items()},
        "gradient_norm_min": {act: n.min(axis=0).tolist() for act, n in per_seed.items()},
        "gradient_norm_max": {act: n.max(axis=0).tolist() for act, n in per_seed.items()},
        "derivative_max_error": errors["float64"],
        "derivative_max_error_float32": errors["float32"],
        "derivative_tolerance": tolerance,
        "fd_max_rel_error": fd_error,
        "fd_passed": fd_passed,
        "fd_rtol": fd_rtol,
        "max_derivative": max_derivative,
        "depth": depth,
        "width": config["width"],
        "num_seeds": config["num_seeds"],
        "passed": passed,
    }
    _plot_gradient_norms(results, config["out_dir"])
    return results


# --------------------------------------------------------------------------- plots

def _plot_activations(pairs: Dict[str, Pair], x, curves, config: Dict[str, Any],
                      out_dir: str) -> None:
    """One panel per activation from the float64 ``derivative_curves`` on the check grid."""
    plt = _common.pyplot()
    r = config["plot_range"]
    x = np.asarray(x)
    shown = np.flatnonzero(np.abs(x) <= r)
    shown = shown[np.argsort(x[shown])]
    # the grid points nearest to NUM_DOTS evenly spaced targets; 0 is one (the kinks' convention)
    targets = np.linspace(-r, r, NUM_DOTS)
    dots = shown[np.argmin(np.abs(x[shown][None, :] - targets[:, None]), axis=1)]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    flat = axes.ravel()
    for ax, (name, (value, closed, grad)) in zip(flat, curves.items()):
        value, closed, grad = np.asarray(value), np.asarray(closed), np.asarray(grad)
        ax.plot(x[shown], value[shown], color="tab:blue", label=f"{name}(x)")
        ax.plot(x[shown], closed[shown], color="tab:orange",
                label=f"closed form: {pairs[name][2]}")
        ax.plot(x[dots], grad[dots], "k.", markersize=6, label="jax.grad")
        ax.set(title=f"{name} and its derivative", xlabel="x", ylabel="value")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    ax = flat[len(curves)]
    for name, (_, closed, _) in curves.items():
        ax.plot(x[shown], np.asarray(closed)[shown], label=f"{name}'")
    ax.axhline(SIGMOID_DERIVATIVE_MAX, color="gray", linestyle=":", label="σ'(0) = 1/4")
    ax.set(title="All derivatives: σ' never exceeds 1/4", xlabel="x",
           ylabel="derivative")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    for extra in flat[len(curves) + 1:]:
        extra.axis("off")
    _common.save_figure(fig, out_dir, "activations.png")


def _plot_gradient_norms(results: Dict[str, Any], out_dir: str) -> None:
    plt = _common.pyplot()
    depth = results["depth"]
    layers = np.arange(1, depth + 1)
    fig, ax = plt.subplots(figsize=(8, 5))
    for act, mean in results["gradient_norm_per_layer"].items():
        line, = ax.semilogy(layers, mean, "o-", markersize=4,
                            label=f"{act} (first/last = {results['first_to_last_ratio'][act]:.1e})")
        ax.fill_between(layers, results["gradient_norm_min"][act],
                        results["gradient_norm_max"][act], color=line.get_color(), alpha=0.15)
    if "sigmoid" in results["gradient_norm_per_layer"]:
        last = results["gradient_norm_per_layer"]["sigmoid"][-1]
        ax.semilogy(layers, last * SIGMOID_DERIVATIVE_MAX ** (depth - layers), "k:",
                    label="slope (1/4)^(L − l): σ' ≤ 1/4 once per layer")
    ax.set(title=f"Gradient norm per layer: depth-{depth}, width-{results['width']} MLP "
                 f"(mean of {results['num_seeds']} seeds, min–max shaded)",
           xlabel="layer l (1 = input side)", ylabel="‖∂L/∂W_l‖ (Frobenius)")
    ax.set_xticks(layers)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "gradient_norm_per_layer.png")


# --------------------------------------------------------------------------- summary

def summarize(results: Dict[str, Any]) -> str:
    rows = [[name, results["derivative_max_error"][name],
             results["derivative_max_error_float32"][name], results["fd_max_rel_error"][name],
             results["max_derivative"][name]]
            for name in results["derivative_max_error"]]
    derivatives = _common.format_table(
        ["activation", "|closed − grad| f64", "|closed − grad| f32", "grad vs FD (rel)",
         "max f'"], rows, floatfmt=".2g")
    norms = results["gradient_norm_per_layer"]
    rows = [[act, norms[act][0], norms[act][-1], results["first_to_last_ratio"][act],
             results["decay_per_layer"][act]] for act in norms]
    gradients = _common.format_table(
        ["activation", "‖∂L/∂W_1‖", f"‖∂L/∂W_{results['depth']}‖", "first/last", "per layer"],
        rows, floatfmt=".3g")
    tol = results["derivative_tolerance"]
    verdict = ("all closed forms equal jax.grad (tolerance "
               f"{tol['float64']:.1e} f64, {tol['float32']:.1e} f32) and jax.grad equals FD"
               if results["passed"] else "SOME DERIVATIVE CHECKS FAILED")
    return (f"(a) closed-form derivatives\n{derivatives}\n{verdict}\n\n"
            f"(b) gradient norms, depth {results['depth']}, width {results['width']}, "
            f"{results['num_seeds']} seeds\n{gradients}")


def main() -> int:
    return experiment_main(__name__)


if __name__ == "__main__":
    sys.exit(main())
