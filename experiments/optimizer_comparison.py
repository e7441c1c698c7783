r"""First- versus second-order training, step for step and second for second.

Question: how much does curvature buy? Seven trainers — gradient descent, heavy-ball momentum,
RMSprop, natural gradient with the empirical and with the true Fisher, and damped Newton with a
dense solve and with Hessian-free CG — take the same number of full-batch steps on four tasks;
each is judged by its loss after every step and by the wall-clock time the steps took.

Tasks (float64 throughout, inside ``jax.enable_x64``):

* ``logreg_digits`` — multinomial (softmax) logistic regression on all ten classes of the 8×8
  digits (``_common.load_digits``: 1347 train, 450 test), a single ``models.mlp([64, 10])``
  layer (650 parameters) started at zero, cross-entropy plus an L2 penalty
  :math:`\frac{\alpha}{2}\|\theta\|^2` (α = 1e-3) on every parameter: strictly convex, so
  every trainer heads for the same minimizer;
* ``xor`` — seed 000's network ``models.two_layer_sigmoid(2, 4, 1)`` (no biases,
  :math:`W \sim N(0, 1)`) on the four XOR points, mean squared error, as in the seed;
* ``spirals`` — the same network with 16 hidden units on two interleaved spirals (2 × 100
  points, synthetic, explicit key); a constant-1 input column stands in for the biases the
  seed's network lacks;
* ``mlp_digits`` — a tanh MLP 64→16→10 (1210 parameters, cross-entropy) on the digits, 16
  hidden units rather than 32: with 32 (2410 parameters) one dense-Hessian Newton step took
  5–15 s on the two shared cores (the Hessian is indefinite, so each step also needs its
  ``eigvalsh``); ``--set mlp_hidden=32`` runs it anyway.

Trainers (``jaxcalc.trainers``):

* ``sgd`` — :math:`\theta \leftarrow \theta - \eta g`; ``momentum`` — heavy ball,
  :math:`\mu = 0.9` (Polyak, 1964); ``rmsprop`` — decay 0.9 (Tieleman & Hinton, 2012). Their
  learning rates (``DEFAULT_CONFIG["learning_rates"]``, per task) are the best of the grid
  :math:`2^{-8}, \dots, 2^{7}` by final loss at the default step count, seed 0; several sit
  just below the rate that diverges, hence the early spikes of ``sgd``;
* ``natgrad_empirical`` / ``natgrad_true`` — :math:`\theta - \eta (F + \lambda I)^{-1} g`,
  η = 1, with the empirical Fisher (mean of per-example gradient outer products) or the true
  Fisher of the model's predictive distribution (Amari, 1998; Martens, 2020): categorical for
  the cross-entropy tasks, unit-variance Gaussian for the squared-error ones (half the
  Gauss–Newton matrix of their mean squared error, so η = 1 tries twice the Gauss–Newton step);
  dense Cholesky solve, and Levenberg–Marquardt adaptation of λ (from 1e-3) that rejects steps
  raising the loss (``adapt_damping=True``). It is needed everywhere: with a fixed λ = 1e-3 the
  loss rose at 5–23 of the first 30 steps on every task, and the true-Fisher run on
  ``mlp_digits`` diverged to a loss near 9000. The true Fisher carries none of the L2 term's
  curvature, so on ``logreg_digits`` it converges linearly where Newton converges quadratically;
* ``newton_dense`` / ``newton_cg`` — :math:`(H + \lambda I)^{-1} g`, λ = 1e-4, with Armijo
  backtracking from the full step; dense Cholesky (raising λ past :math:`|\lambda_{min}(H)|`
  where the Hessian is indefinite) or truncated CG on Hessian-vector products (at most 50
  iterations) that stops on negative curvature (Martens, 2010).

Timing: each trainer's ``step`` is compiled ahead of time (``jax.jit(step).lower(...).compile()``,
not timed) and then run as a Python loop of compiled steps; the clock is read after every step
once its parameters are ready, so the loss-versus-time curves are measured, not interpolated.
LAPACK (OpenBLAS, behind jax's CPU Cholesky and ``eigh``) is held to one thread
(``threadpoolctl``) during the study: on the shared, oversubscribed 2-core machine a 650 × 650
Cholesky solve plus ``eigvalsh`` took a median 8× (up to 40×) longer with OpenBLAS's default
two spinning threads. Seconds still depend on the machine's load: read them as orders of
magnitude.

Result of the default run (2 shared CPU cores): on the convex task the loss is within 1e-6 of
its minimum after 5 steps (0.4 s) of dense Newton, 7 steps (0.03 s) of Newton-CG and 5 steps
(about 1 s) of true-Fisher natural gradient, which then converges only linearly; after 100 steps
``sgd``, ``momentum`` and ``rmsprop`` are still 7e-3, 6e-5 and 2e-2 above it. On ``spirals``
only Newton fits the data (loss 8.5e-5 dense, 5e-3 CG; 100% and 99.5% accuracy) — every other
run ends above 0.08, at most 91% accuracy. On ``mlp_digits`` the true Fisher reaches 7e-10 and
both Newtons 6e-6 in 100 steps, against 8e-3 for momentum; Hessian-free Newton takes 0.4 s for
its 100 steps, the dense second-order trainers 15–130 s (depending on the machine's load; about
20 s to pass 1e-3). Test accuracy (95–98%) hardly depends on the trainer.

Plots: ``loss_vs_step.png`` and ``loss_vs_time.png`` — one panel per task, one line per trainer,
log-scale loss (before each step, and after the last; the time axis is logarithmic too);
``logreg_suboptimality.png`` — :math:`L(\theta_k) - L^*` on the convex task. The summary table
lists final loss, train accuracy (test accuracy on the digits tasks), seconds and the number of
rejected steps.

Run time on 2 shared CPU cores: the default (200 steps on the toy tasks, 100 on the digits
tasks) takes 3 minutes (5 when the machine is busy), mostly the dense-curvature steps on the
digits; ``--quick`` (logistic regression on 300 digits, 20 steps per trainer, mostly compile
time) 8–18 s.

References: Amari, "Natural gradient works efficiently in learning", 1998. Martens, "Deep
learning via Hessian-free optimization", ICML 2010. Martens, "New insights and perspectives on
the natural gradient method", JMLR 2020. Kunstner, Hennig & Balles, "Limitations of the
empirical Fisher approximation", NeurIPS 2019. Nocedal & Wright, *Numerical Optimization*, 2006.
Lang & Witbrock, "Learning to tell two spirals apart", 1988.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg  # noqa: F401  (jax's CPU LAPACK kernels: load its OpenBLAS before limiting it)
from threadpoolctl import threadpool_limits

from experiments import _common
from jaxcalc import losses, models, trainers
from jaxcalc._types import Array, Batch, LossFn, Params
from jaxcalc.runner import experiment_main

ORDER = 40
DESCRIPTION = ("sgd, momentum, rmsprop, natural gradient and Newton on four tasks: loss per step "
               "and per second")

TASKS = ("logreg_digits", "xor", "spirals", "mlp_digits")
TRAINERS = ("sgd", "momentum", "rmsprop", "natgrad_empirical", "natgrad_true", "newton_dense",
            "newton_cg")
DIGITS_TASKS = ("logreg_digits", "mlp_digits")
MOMENTUM = 0.9
NUM_CLASSES = 10

# First order: the best of the grid 2**-8 .. 2**7 by final loss at the default step count, seed 0.
# Second order: η = 1 (natural gradient) and the full step first (Newton; Armijo shortens it).
LEARNING_RATES: Dict[str, Dict[str, float]] = {
    "logreg_digits": {"sgd": 4.0, "momentum": 4.0, "rmsprop": 0.03125,
                      "natgrad_empirical": 1.0, "natgrad_true": 1.0, "newton_dense": 1.0,
                      "newton_cg": 1.0},
    "xor": {"sgd": 64.0, "momentum": 16.0, "rmsprop": 0.5, "natgrad_empirical": 1.0,
            "natgrad_true": 1.0, "newton_dense": 1.0, "newton_cg": 1.0},
    "spirals": {"sgd": 16.0, "momentum": 16.0, "rmsprop": 0.5, "natgrad_empirical": 1.0,
                "natgrad_true": 1.0, "newton_dense": 1.0, "newton_cg": 1.0},
    "mlp_digits": {"sgd": 2.0, "momentum": 1.0, "rmsprop": 0.0625,
                   "natgrad_empirical": 1.0, "natgrad_true": 1.0, "newton_dense": 1.0,
                   "newton_cg": 1.0},
}

DEFAULT_CONFIG: Dict[str, Any] = {
    "seed": 0,                  # initialisation and spiral-data key
    "tasks": list(TASKS),
    "trainers": list(TRAINERS),
    "steps": 200,               # full-batch steps on xor and spirals
    "digits_steps": 100,        # full-batch steps on logreg_digits and mlp_digits
    "digits_train_size": 0,     # training digits used (the first of the fixed split); 0 = all
    "l2": 1e-3,                 # α of the L2 penalty in logreg_digits
    "mlp_hidden": 16,           # hidden width of mlp_digits
    "spiral_points": 100,       # points per spiral (two spirals)
    "spiral_hidden": 16,        # hidden width of the sigmoid net on the spirals
    "spiral_noise": 0.05,       # std of the Gaussian jitter added to the spiral points
    "natgrad_damping": 1e-3,    # initial λ of the natural-gradient trainers (adapted)
    "newton_damping": 1e-4,     # λ of the Newton trainers (fixed)
    "cg_maxiter": 50,           # CG iterations per newton_cg step
    "learning_rates": LEARNING_RATES,
    "progress": True,           # tqdm bar over the (task, trainer) runs
}
QUICK_CONFIG: Dict[str, Any] = {"tasks": ["logreg_digits"], "steps": 20, "digits_steps": 20,
                                "digits_train_size": 300}


class Task(NamedTuple):
    """One training problem: the loss, the model, the data and how to score it."""

    loss_fn: LossFn                      # loss_fn(params, (inputs, targets)) -> mean loss
    apply_fn: Callable                   # model outputs (logits or probabilities)
    likelihood: str                      # for the true Fisher: "categorical" or "gaussian"
    params: Params                       # initial parameters
    train: Batch                         # (inputs, targets)
    test: Optional[Batch]                # held-out (inputs, targets), digits tasks only
    accuracy: Callable[[Array, Array], Array]  # accuracy(outputs, targets) -> fraction right


# --------------------------------------------------------------------------- tasks


def _class_accuracy(logits, labels):
    """Fraction of rows whose arg-max logit is the label."""
    return jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype))


def _binary_accuracy(probs, targets):
    """Fraction of outputs on the right side of 1/2."""
    return jnp.mean(((probs > 0.5) == (targets > 0.5)).astype(probs.dtype))


def _l2(params) -> Array:
    """:math:`\\frac12\\|\\theta\\|^2` over every leaf."""
    return 0.5 * sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(params))


def _digits_batches(dtype, train_size: int = 0) -> Tuple[Batch, Batch]:
    """``((x_train, y_train), (x_test, y_test))``, images flattened to 64 features; the first
    ``train_size`` training digits of the fixed split (all for 0), the whole test split."""
    digits = _common.load_digits(dtype=np.float64)
    x_train, x_test = digits.flat()
    n = len(x_train) if train_size <= 0 else min(int(train_size), len(x_train))
    return ((jnp.asarray(x_train[:n], dtype), jnp.asarray(digits.y_train[:n])),
            (jnp.asarray(x_test, dtype), jnp.asarray(digits.y_test)))


def two_spirals(key, points_per_spiral: int, noise: float,
                dtype=jnp.float64) -> Tuple[Array, Array]:
    """Two interleaved spirals in the plane (Lang & Witbrock, 1988), one per class.

    Point ``i`` of spiral ``c`` sits at radius :math:`r = 0.1 + 0.9\\, t_i` and angle
    :math:`3\\pi t_i + c\\pi` (``t_i`` evenly spaced in [0, 1]: one and a half turns), plus
    Gaussian jitter of standard deviation ``noise``.

    Returns:
      ``(points, labels)``: ``(2P, 2)`` coordinates in about [-1, 1]² and ``(2P, 1)`` targets
      in {0, 1}.
    """
    t = jnp.linspace(0.0, 1.0, points_per_spiral, dtype=dtype)
    r = 0.1 + 0.9 * t
    angle = jnp.concatenate([3 * jnp.pi * t, 3 * jnp.pi * t + jnp.pi])
    radius = jnp.concatenate([r, r])
    points = jnp.stack([radius * jnp.cos(angle), radius * jnp.sin(angle)], axis=1)
    points = points + noise * jax.random.normal(key, points.shape, dtype)
    labels = jnp.repeat(jnp.array([0.0, 1.0], dtype), points_per_spiral)
    return points, labels[:, None]


def _mse_task(net, params, train) -> Task:
    """A task for seed 000's sigmoid network: mean squared error, outputs read as P(class 1)."""
    loss_fn = lambda p, batch: losses.mse(net.apply(p, batch[0]), batch[1])
    return Task(loss_fn, net.apply, "gaussian", params, train, None, _binary_accuracy)


def make_task(name: str, config: Dict[str, Any], digits=None) -> Task:
    """Build task ``name`` (one of ``TASKS``) in float64 from ``config``."""
    dtype = jnp.float64
    key = jax.random.PRNGKey(config["seed"])
    init_key, data_key = jax.random.split(key)
    if name == "xor":
        net = models.two_layer_sigmoid(2, 4, 1)
        x = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype)
        y = jnp.array([[0.0], [1.0], [1.0], [0.0]], dtype)
        return _mse_task(net, net.init(init_key)[1], (x, y))
    if name == "spirals":
        points, labels = two_spirals(data_key, config["spiral_points"], config["spiral_noise"],
                                     dtype)
        x = jnp.concatenate([points, jnp.ones((points.shape[0], 1), dtype)], axis=1)
        net = models.two_layer_sigmoid(3, config["spiral_hidden"], 1)
        return _mse_task(net, net.init(init_key)[1], (x, labels))
    if digits is None:
        digits = _digits_batches(dtype, config["digits_train_size"])
    train, test = digits
    if name == "logreg_digits":
        net = models.mlp([train[0].shape[1], NUM_CLASSES], dtype=dtype)
        params = jax.tree_util.tree_map(jnp.zeros_like, net.init(init_key)[1])
        alpha = float(config["l2"])
        loss_fn = lambda p, batch: (losses.softmax_cross_entropy(net.apply(p, batch[0]), batch[1])
                                    + alpha * _l2(p))
    elif name == "mlp_digits":
        net = models.mlp([train[0].shape[1], config["mlp_hidden"], NUM_CLASSES], "tanh",
                         dtype=dtype)
        params = jax.jit(lambda k: net.init(k)[1])(init_key)
        loss_fn = lambda p, batch: losses.softmax_cross_entropy(net.apply(p, batch[0]), batch[1])
    else:
        raise ValueError(f"optimizer_comparison: task must be one of {list(TASKS)}, got {name!r}")
    return Task(loss_fn, net.apply, "categorical", params, train, test, _class_accuracy)


def make_trainer(name: str, task: Task, learning_rate: float,
                 config: Dict[str, Any]) -> trainers.Trainer:
    """Trainer ``name`` (one of ``TRAINERS``) for ``task``."""
    loss_fn = task.loss_fn
    if name == "sgd":
        return trainers.sgd(loss_fn, learning_rate)
    if name == "momentum":
        return trainers.sgd(loss_fn, learning_rate, momentum=MOMENTUM)
    if name == "rmsprop":
        return trainers.rmsprop(loss_fn, learning_rate)
    if name in ("natgrad_empirical", "natgrad_true"):
        fisher = name.split("_", 1)[1]
        extra = ({"apply_fn": task.apply_fn, "likelihood": task.likelihood}
                 if fisher == "true" else {})
        return trainers.natural_gradient(loss_fn, learning_rate, damping=config["natgrad_damping"],
                                         fisher=fisher, adapt_damping=True, **extra)
    if name in ("newton_dense", "newton_cg"):
        return trainers.newton(loss_fn, learning_rate=learning_rate,
                               damping=config["newton_damping"], solver=name.split("_", 1)[1],
                               cg_maxiter=config["cg_maxiter"])
    raise ValueError(f"optimizer_comparison: trainer must be one of {list(TRAINERS)}, "
                     f"got {name!r}")


# --------------------------------------------------------------------------- training


def evaluator(task: Task) -> Callable[[Params, Batch], Tuple[Array, Array]]:
    """Jitted ``(params, (inputs, targets)) -> (loss, accuracy)`` for ``task``."""
    def evaluate(params, batch):
        return task.loss_fn(params, batch), task.accuracy(task.apply_fn(params, batch[0]), batch[1])

    return jax.jit(evaluate)


def train(trainer: trainers.Trainer, task: Task, steps: int,
          evaluate: Optional[Callable] = None) -> Dict[str, Any]:
    """``steps`` full-batch steps of ``trainer`` on ``task``: losses, times and scores.

    The step is compiled first (not timed); then a Python loop of compiled steps, the clock
    read after each step once its parameters are ready.

    Returns:
      ``loss`` (steps + 1,) — the loss at the start and after every step; ``time`` (steps + 1,)
      — seconds since the first step began; ``final_loss``, ``seconds`` (all steps),
      ``compile_seconds``, ``rejected_steps`` (steps with ``step_size`` 0: a Levenberg–Marquardt
      rejection or a failed line search), ``train_accuracy`` and, with a test set,
      ``test_accuracy``.
    """
    params, batch = task.params, task.train
    state = trainer.init(params)
    t0 = time.perf_counter()
    step = jax.jit(trainer.step).lower(params, state, batch).compile()
    compile_seconds = time.perf_counter() - t0
    evaluate = evaluator(task) if evaluate is None else evaluate

    metrics_seen: List[Dict[str, Array]] = []
    times = np.zeros(steps + 1)
    t0 = time.perf_counter()
    for i in range(steps):
        params, state, metrics = step(params, state, batch)
        jax.block_until_ready(params)
        times[i + 1] = time.perf_counter() - t0
        metrics_seen.append(metrics)
    final_loss, train_accuracy = (float(v) for v in evaluate(params, batch))
    pre_step = [float(m["loss"]) for m in metrics_seen]
    rejected = sum(float(m.get("step_size", 1.0)) == 0.0 for m in metrics_seen)
    out = {"final_loss": final_loss, "steps": steps, "seconds": float(times[-1]),
           "compile_seconds": compile_seconds, "rejected_steps": int(rejected),
           "train_accuracy": train_accuracy, "loss": pre_step + [final_loss],
           "time": times.tolist()}
    if task.test is not None:
        out["test_loss"], out["test_accuracy"] = (float(v) for v in evaluate(params, task.test))
    return out


def run(config: Dict[str, Any]) -> Dict[str, Any]:
    """Every (task, trainer) pair; plots; ``{"runs": {task: {trainer: {...}}}}``."""
    unknown = [t for t in config["tasks"] if t not in TASKS]
    unknown += [t for t in config["trainers"] if t not in TRAINERS]
    if unknown:
        raise ValueError(f"optimizer_comparison: unknown tasks/trainers {unknown}; tasks are "
                         f"{list(TASKS)}, trainers {list(TRAINERS)}")
    pairs = [(t, r) for t in config["tasks"] for r in config["trainers"]]
    rates = config["learning_rates"]
    missing = [f"{t}/{r}" for t, r in pairs if r not in rates.get(t, {})]
    if missing:
        raise ValueError(f"optimizer_comparison: learning_rates has no entry for {missing}; it "
                         "maps task -> trainer -> learning rate")
    start = time.perf_counter()
    runs: Dict[str, Dict[str, Any]] = {}
    # One OpenBLAS thread for the LAPACK calls behind jax's CPU Cholesky / eigh (scipy's OpenBLAS,
    # which jax loads on first use, hence the import above: threadpoolctl only limits libraries
    # already loaded). On a shared, oversubscribed machine its spinning worker threads made those
    # calls 8x slower (median), up to 40x.
    with jax.enable_x64(True), threadpool_limits(limits=1, user_api="blas"):
        digits = (_digits_batches(jnp.float64, config["digits_train_size"])
                  if set(config["tasks"]) & set(DIGITS_TASKS) else None)
        tasks = {name: make_task(name, config, digits) for name in config["tasks"]}
        evaluators = {name: evaluator(task) for name, task in tasks.items()}
        for task_name, trainer_name in _common.progress(pairs, desc="optimizer_comparison",
                                                        enabled=config["progress"]):
            task = tasks[task_name]
            lr = float(rates[task_name][trainer_name])
            steps = config["digits_steps"] if task_name in DIGITS_TASKS else config["steps"]
            result = train(make_trainer(trainer_name, task, lr, config), task, int(steps),
                           evaluators[task_name])
            result["learning_rate"] = lr
            runs.setdefault(task_name, {})[trainer_name] = result
    _plot(runs, config["out_dir"])
    if "logreg_digits" in runs:
        _plot_suboptimality(runs["logreg_digits"], config["out_dir"])
    return {"runs": runs, "seconds": time.perf_counter() - start}


# --------------------------------------------------------------------------- plots

_STYLE = {"sgd": ("tab:blue", "-"), "momentum": ("tab:cyan", "-"), "rmsprop": ("tab:purple", "-"),
          "natgrad_empirical": ("tab:orange", "--"), "natgrad_true": ("tab:red", "--"),
          "newton_dense": ("tab:green", "-."), "newton_cg": ("black", ":")}
_TITLES = {"logreg_digits": "softmax regression + L2, digits (convex)",
           "xor": "seed 000 sigmoid net, XOR (MSE)",
           "spirals": "sigmoid net, two spirals (MSE)",
           "mlp_digits": "tanh MLP, digits (cross-entropy)"}


def _plot(runs: Dict[str, Dict[str, Any]], out_dir: str) -> None:
    """``loss_vs_step.png`` and ``loss_vs_time.png``: one panel per task, one line per trainer."""
    plt = _common.pyplot()
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for x_key, x_label, name in (("step", "full-batch step", "loss_vs_step.png"),
                                 ("time", "wall-clock seconds since the first step "
                                          "(compile excluded)", "loss_vs_time.png")):
        n = len(runs)
        cols = min(n, 2)
        rows = (n + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 4.6 * rows), squeeze=False)
        for ax, (task_name, by_trainer) in zip(axes.ravel(), runs.items()):
            for trainer_name, r in by_trainer.items():
                loss = np.maximum(np.asarray(r["loss"], float), np.finfo(float).tiny)
                color, style = _STYLE[trainer_name]
                if x_key == "step":
                    x, y = np.arange(len(loss)), loss
                else:  # log time axis: the points after each step (time 0 is off the axis)
                    x, y = np.asarray(r["time"], float)[1:], loss[1:]
                ax.plot(x, y, style, color=color, label=trainer_name, lw=1.6)
            ax.set_yscale("log")
            if x_key == "time":
                ax.set_xscale("log")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(_minor_formatter(ax.get_ylim()))
            ax.set(title=_TITLES[task_name], xlabel=x_label, ylabel="training loss (log scale)")
            ax.grid(True, which="both", alpha=0.3)
        for ax in axes.ravel()[n:]:
            ax.axis("off")
        axes.ravel()[0].legend(fontsize=8)
        what = "step" if x_key == "step" else "second of wall-clock time"
        fig.suptitle(f"Training loss per {what} (full batch, float64)")
        _common.save_figure(fig, out_dir, name)


def _minor_formatter(limits):
    """Label the minor log ticks 2 and 5 (×10^k) on an axis spanning under two decades."""
    from matplotlib.ticker import FuncFormatter

    low, high = limits
    if np.log10(high / low) >= 2:
        return FuncFormatter(lambda v, _: "")

    def label(v, _):
        mantissa = v / 10.0 ** np.floor(np.log10(v))
        return f"{v:g}" if round(mantissa) in (2, 5) else ""

    return FuncFormatter(label)


def _plot_suboptimality(by_trainer: Dict[str, Any], out_dir: str) -> None:
    """``logreg_suboptimality.png``: :math:`L(\\theta_k) - L^*` on the convex task, with
    :math:`L^*` the lowest loss any trainer reached (Newton's, converged to round-off)."""
    plt = _common.pyplot()
    best = min(min(r["loss"]) for r in by_trainer.values())
    floor = np.finfo(float).eps * abs(best)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for trainer_name, r in by_trainer.items():
        gap = np.maximum(np.asarray(r["loss"], float) - best, floor)
        color, style = _STYLE[trainer_name]
        ax.plot(np.arange(len(gap)), gap, style, color=color, label=trainer_name, lw=1.6)
    ax.axhline(floor, color="gray", lw=0.8)
    ax.set_yscale("log")
    ax.set(title=f"Softmax regression + L2 (convex): distance to the minimum, L* = {best:.10g}",
           xlabel="full-batch step", ylabel="L(θ) − L*  (floored at ε·L*)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _common.save_figure(fig, out_dir, "logreg_suboptimality.png")


def summarize(results: Dict[str, Any]) -> str:
    rows = []
    for task_name, by_trainer in results["runs"].items():
        for trainer_name, r in by_trainer.items():
            test = r.get("test_accuracy")
            rows.append([task_name, trainer_name, r["learning_rate"], r["steps"],
                         float(r["final_loss"]), float(r["train_accuracy"]),
                         "-" if test is None else f"{float(test):.3f}", f"{r['seconds']:.2f}",
                         r["rejected_steps"]])
    return _common.format_table(["task", "trainer", "lr", "steps", "final loss", "train acc",
                                 "test acc", "seconds", "rejected"], rows)


def main() -> int:
    return experiment_main(__name__)


if __name__ == "__main__":
    sys.exit(main())
