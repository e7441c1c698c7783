"""Reproduce every number printed in the seed lecture notes, beside its reference value.

The three seed notes (``shared/seeds/``) are NumPy lectures on the calculus of neural networks.
This experiment recomputes each number they print with jaxcalc (float64), and checks each of
their hand-written derivatives — the chain-rule example, the two-layer network's backprop, the
linear-regression gradient, the loss gradients — against ``jax.grad``. It also redraws the
notes' figures (sigmoid and ReLU beside their derivatives).

Each row: what was computed, jaxcalc's value, the reference (the printed number, or the seed's
own NumPy code run here), the absolute error and the tolerance it must meet.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np

from jaxcalc import activations, layers, losses, models
from jaxcalc.runner import experiment_main

ORDER = 10
DESCRIPTION = "every number printed in the seed notes, recomputed with jaxcalc beside its reference"
DEFAULT_CONFIG: Dict[str, Any] = {"seed": 0, "linreg_epochs": 100, "plots": True}
QUICK_CONFIG: Dict[str, Any] = {}


def _row(name: str, source: str, value, reference, tol: float, note: str = "") -> Dict[str, Any]:
    value, reference = np.asarray(value, np.float64), np.asarray(reference, np.float64)
    err = float(np.max(np.abs(value - reference))) if value.size else 0.0
    return {"name": name, "source": source, "jaxcalc": value.tolist(), "reference": reference.tolist(),
            "abs_error": err, "tolerance": tol, "passed": bool(err <= tol), "note": note}


# --------------------------------------------------------------------------- the seeds' code
# Verbatim NumPy from the notes (reference implementations), lightly renamed.

def _np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _np_sigmoid_derivative(x):
    return _np_sigmoid(x) * (1 - _np_sigmoid(x))


def _seed_chain_rule_example(x, target):  # seed 002, slide 2
    z = x * 2
    y = z + 3
    loss = (y - target) ** 2
    dloss_dy = 2 * (y - target)
    return loss, dloss_dy * 1 * 2


def _seed_two_layer_grads(X, y_true, W1, W2):  # seed 000, backward() before its update
    Z1 = X @ W1
    A1 = _np_sigmoid(Z1)
    Z2 = A1 @ W2
    A2 = _np_sigmoid(Z2)
    error = A2 - y_true
    dW2 = A1.T @ (error * _np_sigmoid_derivative(Z2))
    dW1 = X.T @ ((error * _np_sigmoid_derivative(Z2)) @ W2.T * _np_sigmoid_derivative(Z1))
    return dW1, dW2


def _seed_linreg(X, y, w0, learning_rate, epochs):  # seed 002, slide 1 (fixed start weights)
    weights = w0.copy()
    for _ in range(epochs):
        error = X @ weights - y
        weights -= learning_rate * (X.T @ error / len(X))
    return weights


# --------------------------------------------------------------------------- the experiment

def run(config: Dict[str, Any]) -> Dict[str, Any]:
    with jax.enable_x64(True):
        rows = _rows(config)
    if config.get("plots", True):
        _plot(config["out_dir"])
    return {"passed": all(r["passed"] for r in rows), "num_rows": len(rows), "rows": rows}


def _rows(config) -> List[Dict[str, Any]]:
    rng = np.random.default_rng(config["seed"])
    rows = []

    # seed 000 In[5]: sigmoid_derivative(0.5)
    rows.append(_row("sigmoid_derivative(0.5)", "seed 000 In[5]",
                     activations.sigmoid_derivative(jnp.float64(0.5)), 0.2350037122015945, 1e-16))
    rows.append(_row("jax.grad(sigmoid)(0.5)", "seed 000 In[5]",
                     jax.grad(activations.sigmoid)(jnp.float64(0.5)), 0.2350037122015945, 1e-16,
                     "autodiff agrees with the closed form"))

    # seed 001: one neuron, one gradient step on the squared error (printed to 8 decimals / full)
    x = jnp.array([0.5, 0.3, 0.1])
    params = {"w": jnp.array([0.4, 0.2, 0.6]), "b": jnp.float64(0.1)}
    neuron = lambda p: activations.sigmoid(jnp.dot(x, p["w"]) + p["b"])
    rows.append(_row("neuron output σ(w·x + b)", "seed 001 single_neuron",
                     neuron(params), _np_sigmoid(np.dot([0.5, 0.3, 0.1], [0.4, 0.2, 0.6]) + 0.1), 1e-15))
    g = jax.grad(lambda p: (neuron(p) - 0.4) ** 2)(params)
    new = jax.tree_util.tree_map(lambda p, d: p - 0.1 * d, params, g)
    rows.append(_row("updated weights (lr 0.1, target 0.4)", "seed 001 update_weights",
                     new["w"], [0.39513082, 0.19707849, 0.59902616], 5e-9,
                     "the seed prints 8 decimals"))
    rows.append(_row("updated bias", "seed 001 update_weights", new["b"], 0.09026164910025532, 1e-15))

    # seed 001: convolution and max pooling of the 4x4 image 1..16
    image = jnp.arange(1.0, 17.0).reshape(1, 4, 4, 1)
    kernel = jnp.array([[-1.0, -1.0], [1.0, 1.0]]).reshape(2, 2, 1, 1)
    rows.append(_row("conv2d(image 1..16, [[-1,-1],[1,1]])", "seed 001 convolution2D",
                     layers.conv2d(image, kernel)[0, :, :, 0], np.full((3, 3), 8.0), 0.0))
    rows.append(_row("max_pool2d(image 1..16, 2, stride 2)", "seed 001 max_pooling2D",
                     layers.max_pool2d(image, 2, 2)[0, :, :, 0], [[6.0, 8.0], [14.0, 16.0]], 0.0))

    # seed 002 slide 2: chain rule, x = 1.5, target = 4
    chain = lambda x_: (x_ * 2 + 3 - 4.0) ** 2
    loss_ref, grad_ref = _seed_chain_rule_example(1.5, 4.0)
    rows.append(_row("chain rule: loss((2x+3-t)^2) at x=1.5, t=4", "seed 002 slide 2",
                     chain(jnp.float64(1.5)), loss_ref, 0.0))
    rows.append(_row("chain rule: dloss/dx", "seed 002 slide 2",
                     jax.grad(chain)(jnp.float64(1.5)), grad_ref, 0.0, "hand chain rule == jax.grad"))

    # seed 000: two-layer sigmoid network's hand backprop vs jax.grad, on XOR
    X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = jnp.array([[0.0], [1.0], [1.0], [0.0]])
    net = models.two_layer_sigmoid(2, 4, 1)
    _, p = net.init(jax.random.PRNGKey(config["seed"]))
    dW1, dW2 = _seed_two_layer_grads(np.asarray(X), np.asarray(y), np.asarray(p["W1"]), np.asarray(p["W2"]))
    half_sse = jax.grad(lambda q: 0.5 * jnp.sum((net.apply(q, X) - y) ** 2))(p)
    rows.append(_row("two-layer backprop dW1 vs jax.grad(½·Σ(A2−y)²)", "seed 000 backward",
                     half_sse["W1"], dW1, 1e-15,
                     "the seed's gradient is of ½·sum, not of its own mean loss"))
    rows.append(_row("two-layer backprop dW2 vs jax.grad(½·Σ(A2−y)²)", "seed 000 backward",
                     half_sse["W2"], dW2, 1e-15))
    mse_grad = jax.grad(lambda q: losses.mse(net.apply(q, X), y))(p)
    factor = y.size / 2.0
    rows.append(_row(f"dW1 = (N·out/2 = {factor:g}) × jax.grad(mse)", "seed 000 backward",
                     factor * mse_grad["W1"], dW1, 1e-15,
                     "the 'missing mean factor': mse = mean over N·out elements"))

    # seed 002 slide 1: linear regression by gradient descent
    n, d = 64, 3
    Xl = rng.normal(size=(n, d))
    yl = Xl @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
    w0 = rng.normal(size=d)
    gd_grad = jax.grad(lambda w: 0.5 * losses.mse(jnp.asarray(Xl) @ w, jnp.asarray(yl)))
    rows.append(_row("linreg gradient Xᵀ(Xw−y)/N vs jax.grad(½·mse)", "seed 002 slide 1",
                     gd_grad(jnp.asarray(w0)), Xl.T @ (Xl @ w0 - yl) / n, 1e-14,
                     "the seed's gradient is half the gradient of the mse it prints"))

    def gd(w, _):
        return w - 0.01 * gd_grad(w), None

    w_final, _ = jax.lax.scan(gd, jnp.asarray(w0), None, length=config["linreg_epochs"])
    rows.append(_row(f"linreg weights after {config['linreg_epochs']} GD epochs (lr 0.01)",
                     "seed 002 slide 1", w_final,
                     _seed_linreg(Xl, yl, w0, 0.01, config["linreg_epochs"]), 1e-13,
                     "lax.scan of jax.grad retraces the seed's Python loop"))

    # seed 002 slide 5: loss functions' gradients
    pred, target = rng.normal(size=5), rng.normal(size=5)
    rows.append(_row("mse gradient 2(ŷ−y)/N vs jax.grad(mse)", "seed 002 slide 5",
                     jax.grad(losses.mse)(jnp.asarray(pred), jnp.asarray(target)),
                     2 * (pred - target) / target.shape[0], 1e-15))
    rows.append(_row("mse gradient vs closed form losses.mse_grad", "seed 002 slide 5",
                     losses.mse_grad(jnp.asarray(pred), jnp.asarray(target)),
                     2 * (pred - target) / target.shape[0], 1e-15))
    return rows


def _plot(out_dir: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = jnp.linspace(-10, 10, 401)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    ax.plot(x, activations.sigmoid(x), label="σ(x)")
    ax.plot(x, activations.sigmoid_derivative(x), label="σ'(x) = σ(1−σ)")
    ax.plot(x[::20], jax.vmap(jax.grad(activations.sigmoid))(x[::20]), "k.", label="jax.grad(σ)")
    ax.set(title="Sigmoid and its derivative (seed 002, slide 3)", xlabel="x", ylabel="value")
    ax.grid(True)
    ax.legend()
    x5 = jnp.linspace(-5, 5, 401)
    ax = axes[1]
    ax.plot(x5, activations.relu(x5), label="ReLU(x)")
    ax.plot(x5, activations.relu_derivative(x5), label="ReLU'(x) = 1[x>0]")
    ax.set(title="ReLU and its derivative (seed 002, slide 7)", xlabel="x", ylabel="value")
    ax.grid(True)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "activations.png"), dpi=120)
    plt.close(fig)


def summarize(results: Dict[str, Any]) -> str:
    lines = [f"{'':3}{'quantity':<52} {'abs error':>10}  {'tol':>7}  source"]
    for r in results["rows"]:
        mark = "ok" if r["passed"] else "!!"
        lines.append(f"{mark:3}{r['name'][:52]:<52} {r['abs_error']:>10.2e}  {r['tolerance']:>7.0e}  "
                     f"{r['source']}")
    verdict = "all reproduced" if results["passed"] else "SOME ROWS FAILED"
    lines.append(f"\n{results['num_rows']} rows: {verdict}")
    return "\n".join(lines)


def main() -> int:
    return experiment_main(__name__)


if __name__ == "__main__":
    sys.exit(main())
