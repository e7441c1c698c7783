"""Edge of stability: does gradient descent push the sharpness up to 2/η and hold it there?

Question: classical analysis says gradient descent with step size η is stable on a quadratic only
while the largest Hessian eigenvalue (the *sharpness*) stays below 2/η. Cohen, Kaur, Li, Kolter &
Talwalkar ("Gradient descent on neural networks typically occurs at the edge of stability", ICLR
2021) observed that on neural networks the sharpness first *rises* during training (progressive
sharpening) until it reaches 2/η, and then hovers just at or above 2/η while the loss keeps
falling, non-monotonically, over long time scales. This study reproduces that on the digits.

Method: a tanh MLP 64→32→10 (``models.mlp``, 2410 parameters, float64) trained by full-batch
gradient descent (``trainers.sgd``, no momentum) on the mean squared error (``losses.mse``: the
mean over the N × 10 entries) between its outputs and one-hot targets, on a fixed subset of the
digits (the first ``num_examples`` = 500 of the fixed training split of ``_common.load_digits``,
pixels in [0, 1]), once per learning rate η, every run from the same initialization: Glorot
weights with the read-out layer scaled by ``readout_scale`` = 0.1. The small read-out starts
the network nearly flat (sharpness ≈ 1, below every 2/η studied), so the rise to 2/η is
progressive sharpening, not the catapult that follows a start above 2/η; with the plain Glorot
init the sharpness starts near 6 and, for η above 2/6, first drops. Every ``sharpness_every``
steps the top Hessian eigenvalue of the full-batch loss is computed by Lanczos on
Hessian-vector products (``spectrum.top_eigenvalues``, full reorthogonalization,
``lanczos_iters`` = 20 steps; 50 steps change it in the fourth digit). Between two measurements
the GD steps run as one jitted ``lax.scan``; each Lanczos call is jitted too. float64 keeps the
round-off of the long GD trajectories and of Lanczos far below the effects measured.

Result: ``ratio_to_2_over_lr`` is the mean sharpness over the measurements in the last 20% of
the steps divided by 2/η. The default run measures 1.007, 1.017 and 1.020 for η = 0.6, 0.8 and
1.0: from 1.06 at the start, the sharpness climbs to 2/η (first measured above it at steps 320,
580 and 2000 for η = 1, 0.8 and 0.6), overshoots by 5–25%, drops back when the loss spikes, and
then oscillates within a few percent above 2/η for the rest of the run, while the loss keeps
decreasing, non-monotonically.

Plots:

* ``sharpness.png`` — sharpness against step, one color per η, dashed lines at 2/η in the same
  colors, the ratio's window shaded;
* ``loss.png`` — the training loss per step (log scale), same colors, with a dotted line where
  each run's sharpness was first measured at or above 2/η: the loss is smooth before; its first
  spike comes a few hundred steps later, while the sharpness overshoots, and spikes recur after.

Run time on 2 CPU cores: the default (3 learning rates × 4000 steps, sharpness every 20 steps:
603 Lanczos calls) takes about 11 s; ``--quick`` (2 × 100 steps of a 64→16→10 net on 100
digits) about 5 s and only checks the machinery — 100 steps are too few to reach 2/η.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from experiments import _common
from jaxcalc import losses, models, spectrum, trainers
from jaxcalc.runner import experiment_main

ORDER = 70
DESCRIPTION = ("edge of stability: full-batch GD sharpens the loss until the top Hessian "
               "eigenvalue reaches 2/lr (Cohen et al. 2021)")
DEFAULT_CONFIG: Dict[str, Any] = {
    "seed": 0,                        # initialisation key (shared by every run) and Lanczos keys
    "learning_rates": [0.6, 0.8, 1.0],
    "steps": 4000,                    # full-batch GD steps per learning rate
    "sharpness_every": 20,            # GD steps between two sharpness measurements
    "lanczos_iters": 20,              # Lanczos steps per sharpness measurement
    "num_examples": 500,              # digits used (a fixed subset of the training split)
    "hidden": 32,                     # hidden width of the tanh MLP 64 → hidden → 10
    "readout_scale": 0.1,             # the read-out layer's Glorot init is scaled by this
    "tail_fraction": 0.2,             # the ratio averages the sharpness over this last part
    "progress": True,                 # tqdm bar over the measurements
}
QUICK_CONFIG: Dict[str, Any] = {"learning_rates": [0.8, 1.0], "steps": 100,
                                "sharpness_every": 20, "num_examples": 100, "hidden": 16}
# For `jaxcalc run tour`: enough steps to see the sharpening reach 2/eta and hover (~10 s;
# measured ratios 1.03 and 1.05).
TOUR_CONFIG: Dict[str, Any] = {"learning_rates": [0.8, 1.0], "steps": 1000}

NUM_CLASSES = 10


def run(config: Dict[str, Any]) -> Dict[str, Any]:
    """GD at every learning rate with periodic sharpness; plots; the results dict."""
    steps, every = int(config["steps"]), int(config["sharpness_every"])
    if steps < 1 or every < 1 or steps % every:
        raise ValueError(f"edge_of_stability: steps must be a positive multiple of "
                         f"sharpness_every, got steps={steps}, sharpness_every={every}")
    if not 0.0 < float(config["tail_fraction"]) <= 1.0:
        raise ValueError(f"edge_of_stability: tail_fraction must be in (0, 1], got "
                         f"{config['tail_fraction']!r}")
    start = time.perf_counter()
    digits = _common.load_digits(dtype=np.float64)
    n = int(config["num_examples"])
    lrs = [float(lr) for lr in config["learning_rates"]]
    with jax.enable_x64(True):
        batch = (jnp.asarray(digits.flat()[0][:n], jnp.float64),
                 jax.nn.one_hot(jnp.asarray(digits.y_train[:n]), NUM_CLASSES, dtype=jnp.float64))
        net = models.mlp([batch[0].shape[1], int(config["hidden"]), NUM_CLASSES], "tanh",
                         dtype=jnp.float64)
        init_key, lanczos_key = jax.random.split(jax.random.PRNGKey(config["seed"]))
        params = jax.jit(lambda k: _scaled_readout(net.init(k)[1], config["readout_scale"]))(
            init_key)

        def loss_fn(p, b):
            return losses.mse(net.apply(p, b[0]), b[1])

        iters = int(config["lanczos_iters"])

        @jax.jit
        def sharpness(p, b, key):
            top, _ = spectrum.top_eigenvalues(lambda q: loss_fn(q, b), p, k=1, num_iters=iters,
                                              key=key)
            return top[0], loss_fn(p, b)

        runs = [_gradient_descent(trainers.sgd(loss_fn, lr), lr, params, batch, sharpness,
                                  lanczos_key, steps, every, config["progress"]) for lr in lrs]
    tail = [_tail_mean(r["sharpness_steps"], r["sharpness"], steps, config["tail_fraction"])
            for r in runs]
    results = {
        "learning_rates": lrs,
        "final_sharpness": [r["sharpness"][-1] for r in runs],
        "ratio_to_2_over_lr": [t / (2.0 / lr) for t, lr in zip(tail, lrs)],
        "tail_mean_sharpness": tail,
        "two_over_lr": [2.0 / lr for lr in lrs],
        "initial_sharpness": [r["sharpness"][0] for r in runs],
        "max_sharpness": [float(np.max(r["sharpness"])) for r in runs],
        "first_step_at_edge": [r["first_step_at_edge"] for r in runs],
        "final_loss": [r["loss"][-1] for r in runs],
        "steps": steps,
        "sharpness_every": every,
        "num_measurements": len(runs[0]["sharpness"]) if runs else 0,
        "tail_fraction": float(config["tail_fraction"]),
        "num_params": int(sum(np.size(a) for a in jax.tree_util.tree_leaves(params))),
        "runs": runs,
        "seconds": time.perf_counter() - start,
    }
    _plot(results, config["out_dir"])
    return results


def _gradient_descent(trainer, lr: float, params, batch, sharpness, key, steps: int, every: int,
                      progress: bool) -> Dict[str, Any]:
    """``steps`` full-batch steps of ``trainer``, measuring ``sharpness`` every ``every`` steps.

    The ``every`` steps between two measurements are one jitted ``lax.scan``; measurement ``c``
    (at step ``c · every``) uses the Lanczos key ``fold_in(key, c)``.

    Returns:
      ``sharpness_steps`` and ``sharpness`` (``steps / every + 1`` values, at steps 0, k, ...,
      steps), ``loss`` (``steps + 1`` values: before every step and after the last) and
      ``first_step_at_edge`` (the first measured step with sharpness ≥ 2/η, or None).
    """

    @jax.jit
    def gd_chunk(p, state, b):
        def body(carry, _):
            p, state = carry
            p, state, metrics = trainer.step(p, state, b)
            return (p, state), metrics["loss"]

        (p, state), chunk_losses = lax.scan(body, (p, state), None, length=every)
        return p, state, chunk_losses

    state = trainer.init(params)
    num_chunks = steps // every
    sharp: List[float] = []
    loss_curve: List[float] = []
    for c in _common.progress(range(num_chunks + 1), desc=f"edge_of_stability lr={lr:g}",
                              enabled=progress):
        value, current_loss = sharpness(params, batch, jax.random.fold_in(key, c))
        sharp.append(float(value))
        if c == num_chunks:
            loss_curve.append(float(current_loss))
            break
        params, state, chunk_losses = gd_chunk(params, state, batch)
        loss_curve.extend(np.asarray(chunk_losses).tolist())
    at_steps = [c * every for c in range(num_chunks + 1)]
    above = [step for step, value in zip(at_steps, sharp) if value >= 2.0 / lr]
    return {"learning_rate": lr, "sharpness_steps": at_steps, "sharpness": sharp,
            "loss": loss_curve, "first_step_at_edge": above[0] if above else None}


def _scaled_readout(params, scale: float):
    """``params`` of ``models.mlp`` with the last layer (``dense{L-1}``) multiplied by ``scale``."""
    last = max(params, key=lambda name: int(name[len("dense"):]))
    scaled = jax.tree_util.tree_map(lambda a: scale * a, params[last])
    return {**params, last: scaled}


def _tail_mean(at_steps, values, steps: int, fraction: float) -> float:
    """Mean of ``values`` measured at steps ``>= (1 - fraction) · steps``."""
    at_steps, values = np.asarray(at_steps), np.asarray(values, float)
    return float(np.mean(values[at_steps >= (1.0 - fraction) * steps]))


def _plot(results: Dict[str, Any], out_dir: str) -> None:
    """``sharpness.png`` (sharpness and 2/η per η) and ``loss.png`` (loss per step per η)."""
    plt = _common.pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    steps = results["steps"]
    tail_start = (1.0 - results["tail_fraction"]) * steps
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    ax.axvspan(tail_start, steps, color="0.92", zorder=0,
               label=f"last {results['tail_fraction']:.0%}: the ratio's window")
    for i, r in enumerate(results["runs"]):
        color = colors[i % len(colors)]
        lr = r["learning_rate"]
        ax.plot(r["sharpness_steps"], r["sharpness"], color=color, lw=1.6,
                label=f"η = {lr:g}: sharpness λ_max(H)")
        ax.axhline(2.0 / lr, color=color, ls="--", lw=1.0,
                   label=f"η = {lr:g}: 2/η = {2.0 / lr:.3g}")
    ax.set_ylim(bottom=0)
    ax.set(title="Progressive sharpening up to the edge of stability (full-batch GD, MSE)",
           xlabel="gradient-descent step", ylabel="top Hessian eigenvalue of the loss (Lanczos)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    _common.save_figure(fig, out_dir, "sharpness.png")

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    for i, r in enumerate(results["runs"]):
        color = colors[i % len(colors)]
        ax.plot(np.arange(len(r["loss"])), r["loss"], color=color, lw=1.0,
                label=f"η = {r['learning_rate']:g}")
        if r["first_step_at_edge"] is not None:
            ax.axvline(r["first_step_at_edge"], color=color, ls=":", lw=1.2,
                       label=f"η = {r['learning_rate']:g}: sharpness first ≥ 2/η")
    ax.set_yscale("log")
    ax.set(title="Training loss: smooth until the sharpness passes 2/η, spiky after",
           xlabel="gradient-descent step", ylabel="mean squared error, one-hot targets (log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "loss.png")


def summarize(results: Dict[str, Any]) -> str:
    rows = [[lr, 2.0 / lr, s0, smax, "never" if edge is None else edge, tail, ratio, loss]
            for lr, s0, smax, edge, tail, ratio, loss in zip(
                results["learning_rates"], results["initial_sharpness"],
                results["max_sharpness"], results["first_step_at_edge"],
                results["tail_mean_sharpness"], results["ratio_to_2_over_lr"],
                results["final_loss"])]
    table = _common.format_table(["lr", "2/lr", "initial λmax", "max λmax", "step λmax≥2/lr",
                                  "tail mean λmax", "tail/(2/lr)", "final loss"], rows)
    return (f"{table}\n\n{results['steps']} GD steps, sharpness every "
            f"{results['sharpness_every']} steps ({results['num_measurements']} measurements); "
            f"tail = last {results['tail_fraction']:.0%} of the steps; "
            f"{results['seconds']:.1f} s")


def main() -> int:
    return experiment_main(__name__)


if __name__ == "__main__":
    sys.exit(main())
