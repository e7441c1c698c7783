"""Derivative audit: every primitive's derivative, three ways, in float32 and float64.

Question: does every derivative jaxcalc ships — the closed forms written beside the functions and
the ``jax.grad`` of the functions themselves — agree with an independent finite-difference
estimate, in both float32 and float64, to the accuracy floating point allows?

Method. Each primitive is probed at random, kink-free inputs (one draw per trial, ``trials``
draws; the largest error over the trials is reported). The inputs are drawn in float64 by
NumPy's ``default_rng([seed, trial, probe index])`` — an explicit key per draw, and no
random-number kernel to compile — and the same draws are cast to float32 and float64:

* activations: every ``*_derivative`` and ``softmax_jacobian``;
* losses: ``mse_grad``, ``binary_cross_entropy_with_logits_grad``,
  ``softmax_cross_entropy_grad``, and ``binary_cross_entropy`` on probabilities (no closed
  form in the library: autodiff vs finite differences only);
* layers: ``dense``, ``conv2d`` (stride 1 with padding, and stride 2 with ``"SAME"``),
  ``max_pool2d``, ``avg_pool2d``, ``batch_norm`` and its closed-form ``batch_norm_input_grad``;
* recurrent unrolls (backpropagation through time, Werbos 1990): Elman RNN, LSTM and GRU cells
  through ``rnn.unroll``;
* ``signal.power_spectrum`` and ``signal.fourier_features``.

A layer or a vector-valued function ``g`` is turned into a scalar ``f = Σ u ⊙ g(·)`` with a
random cotangent ``u`` (a random projection: an error in the derivative is missed only on a
set of ``u`` of measure zero), and differentiated with respect to *all* its inputs (data,
weights, bias, initial state). Two comparisons per primitive and dtype:

* ``closed_vs_autodiff`` — the closed form against ``jax.grad`` (``jax.jacrev`` for
  ``softmax_jacobian``). Closed forms: the library's own ``*_derivative``, ``*_grad`` and
  ``batch_norm_input_grad``, plus textbook ones written here from their formulas where the
  library has none: ``dense`` (``∂W = xᵀu``, ``∂b = Σu``, ``∂x = uWᵀ``), ``conv2d`` at stride 1
  (the backward pass of a convolution is a convolution: ``∂x`` correlates the padded ``u``
  with the flipped kernel, ``∂K`` correlates ``x`` with ``u``), pooling (max pooling routes
  ``u`` to each window's maximum, average pooling spreads it evenly), BPTT by hand for the
  Elman RNN (a reverse ``lax.scan``), and the Wirtinger-calculus gradients of the spectra,
  ``∂P_k/∂x_t = (2/n) Re(X_k e^{2πikt/n})``, ``∂|X_k|/∂x_t = Re(X_k e^{2πikt/n}) / |X_k|``.
* ``autodiff_vs_fd`` — ``jax.grad`` against ``finite_diff.grad`` (central differences with
  the library's default dtype-aware step ``ε^(1/3) · max(1, |θ_j|)``, exact steps).

Error measure (the rule of ``finite_diff.check_grad`` with ``atol = rtol · ‖b‖∞``): for an
estimate ``a`` of the reference ``b``, ``max_i |a_i − b_i| / (|a_i| + |b_i| + ‖b‖∞)`` over every
entry of every leaf — a symmetric relative error (the seed notes' gradient check) whose
denominator is guarded by the derivative's own scale, so entries that should be 0 are judged on
that scale and the measure does not change when ``f`` is rescaled.

Tolerances (``TOLERANCES``), by comparison and dtype:

==================  ========  ========  ==================================================
comparison          float64   float32   why
==================  ========  ========  ==================================================
closed vs autodiff  1e-12     1e-5      two exact formulas that differ only in rounding
                                        (~4500 ε / ~80 ε, ε = 2.2e-16 / 1.2e-7; observed
                                        at most ~1e-15 / ~5e-7, in batch_norm's sums)
autodiff vs FD      1e-7      3e-3      ``finite_diff.DEFAULT_RTOL`` for central
                                        differences: the best achievable error is
                                        ~ε^(2/3) (3.7e-11 / 2.4e-5), times 10²–10³ for
                                        round-off in sums and higher derivatives
==================  ========  ========  ==================================================

Float32 finite differences are weak: their errors are ~1e-5–3e-4 (float64: ~1e-11–6e-10), so
a float32 FD row only catches gross errors (a wrong sign, a missing factor) — a derivative 1 %
off measures ~3.3e-3 here, right at the float32 tolerance. Such an error is found by the
float64 FD rows and by the closed-vs-autodiff rows, whose float32 tolerance is tight.
Inputs keep away from kinks: ReLU/leaky-ReLU inputs have ``|x| ≥ 0.1`` and each max-pooling
window holds values at least 0.1 apart, far more than the largest float32 step (~5e-3·|x|),
so no finite difference straddles a kink.

Plots: ``derivative_audit.png`` — horizontal bars (log scale) of the max relative error of each
primitive, float32 and float64 side by side, one panel per comparison, with the tolerance each
must meet marked by a vertical tick; an error of exactly 0 is drawn at the axis floor.

Run time (2-core CPU, ~11 s of CPU each): ``--quick`` (one trial, tiny shapes) 8–25 s wall
depending on the machine's load, the default (25 trials, larger shapes) 10–25 s. Nearly all of
it is compiling one ``jax.jit`` of the whole audit per dtype (traced afresh every run, so a
patched primitive is what gets audited); ``primitives=[...]`` audits a subset.

References: Werbos, "Backpropagation through time: what it does and how to do it", 1990;
Baydin et al., "Automatic differentiation in machine learning: a survey", JMLR 2018;
Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016 (convolution
backward passes); Press et al., *Numerical Recipes*, 3rd ed., §5.7 (finite-difference steps).
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from experiments import _common
from jaxcalc import activations, finite_diff, layers, losses, rnn, signal
from jaxcalc.runner import ConfigError, experiment_main

ORDER = 20
DESCRIPTION = ("every primitive's derivative: closed form vs jax.grad vs finite differences, "
               "float32 and float64")
DEFAULT_CONFIG: Dict[str, Any] = {
    "seed": 0,
    "trials": 25,        # random draws per primitive; the worst error is reported
    "batch": 4,          # examples in every probe
    "features": 6,       # width of vectors (activations, losses, dense, batch norm)
    "image_size": 6,     # H = W of the images (even: 2×2 pooling tiles it exactly)
    "channels": 2,       # image channels in and out of the convolutions
    "time_steps": 5,     # sequence length of the recurrent unrolls
    "hidden": 3,         # recurrent hidden units
    "signal_length": 16, # samples of the signals (power spectrum, Fourier features)
    "primitives": [],    # names of the rows to audit (see `probes()`); empty = every primitive
    "plots": True,
    "progress": True,
}
QUICK_CONFIG: Dict[str, Any] = {"trials": 1, "batch": 3, "features": 4, "image_size": 4,
                                "time_steps": 3, "signal_length": 8}

DTYPES = ("float32", "float64")
COMPARISONS = ("closed_vs_autodiff", "autodiff_vs_fd")
TOLERANCES: Dict[Tuple[str, str], float] = {
    ("closed_vs_autodiff", "float64"): 1e-12,
    ("closed_vs_autodiff", "float32"): 1e-5,
    ("autodiff_vs_fd", "float64"): finite_diff.DEFAULT_RTOL[("float64", "grad")]["central"],
    ("autodiff_vs_fd", "float32"): finite_diff.DEFAULT_RTOL[("float32", "grad")]["central"],
}
KINK_MARGIN = 0.1  # |x| >= this for ReLU-like inputs; gap between values in a max-pool window
LEAKY_SLOPE = 0.1  # leaky ReLU's negative slope in the audit (the library default 0.01 also works)
# The audit's programs run in microseconds: compiling them is nearly the whole cost. XLA's CPU
# backend compiles about twice as fast without LLVM's optimisation passes; the arithmetic is the
# same IEEE arithmetic (fast-math stays off), only the generated loops are slower.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_ZERO_FLOOR = 1e-18  # where an error of exactly 0 is drawn on the log axis

Pair = Tuple[Any, Any]  # (estimate, reference) pytrees of the same structure
Data = Dict[str, Any]    # a probe's inputs: NumPy draws, then arrays of the audited dtype


class Probe(NamedTuple):
    """One audited primitive: its group, how to draw its inputs, what to compare.

    ``make(rng, cfg)`` draws the inputs with NumPy (float64, or int for labels) — outside
    ``jax.jit``, so no random-number kernel is compiled; ``compute(data)`` is traced under
    ``jax.jit`` with the floating inputs cast to the audited dtype, and returns
    ``{comparison: (estimate, reference)}``.
    """

    group: str
    make: Callable[[np.random.Generator, Dict[str, Any]], Data]
    compute: Callable[[Data], Dict[str, Pair]]


# ----------------------------------------------------------------------------- helpers


def _scalarize(g: Callable[..., jax.Array], u: jax.Array) -> Callable[..., jax.Array]:
    """``θ ↦ Σ u ⊙ g(θ)``: a random projection that turns ``g`` into a scalar to differentiate."""
    return lambda params: jnp.sum(u * g(params))


def _autodiff_and_fd(f: Callable[[Any], jax.Array], params: Any) -> Pair:
    """``(jax.grad(f)(params), finite_diff.grad(f, params))`` — central, default steps.

    All coordinates are differenced in one ``vmap`` (``chunk_size = n``): the shapes are tiny,
    and one batch compiles faster than a ``lax.map`` over chunks plus a remainder.
    """
    n = ravel_pytree(params)[0].size
    return jax.grad(f)(params), finite_diff.grad(f, params, method="central", chunk_size=n)


def _grad_pairs(f: Callable[[Any], jax.Array], params: Any, closed=None, reference=None):
    """``{"autodiff_vs_fd": (grad, fd)}`` plus ``{"closed_vs_autodiff": (closed, reference)}``
    when a closed form is given (``reference`` defaults to ``jax.grad(f)(params)``)."""
    auto, numeric = _autodiff_and_fd(f, params)
    pairs = {"autodiff_vs_fd": (auto, numeric)}
    if closed is not None:
        pairs["closed_vs_autodiff"] = (closed, auto if reference is None else reference(auto))
    return pairs


def _away_from_zero(rng: np.random.Generator, shape) -> np.ndarray:
    """Normal draws pushed out of ``(−KINK_MARGIN, KINK_MARGIN)``: no step crosses a ReLU kink."""
    z = rng.standard_normal(shape)
    return np.sign(z) * (KINK_MARGIN + np.abs(z))


def _distinct_windows(rng: np.random.Generator, shape) -> np.ndarray:
    """NHWC images whose 2×2 pooling windows hold four values ``KINK_MARGIN`` apart or more.

    Each window is a random level plus a random permutation of ``{0, 1, 2, 3} · KINK_MARGIN``,
    so the maximum of a window is unique and no finite-difference step changes which entry it is.
    """
    n, h, w, c = shape
    level = rng.standard_normal((n, h // 2, w // 2, c, 1))
    ranks = rng.permuted(np.broadcast_to(np.arange(4.0), (n, h // 2, w // 2, c, 4)), axis=-1)
    values = (level + KINK_MARGIN * ranks).reshape(n, h // 2, w // 2, c, 2, 2)
    return values.transpose(0, 1, 4, 2, 5, 3).reshape(n, h, w, c)


def _upsample2(x: jax.Array) -> jax.Array:
    """Repeat every pixel of an NHWC image into a 2×2 block (the adjoint of 2×2 sum pooling)."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def _like(rng: np.random.Generator, tree, scale: float = 1.0):
    """NumPy normal draws (times ``scale``) with the structure and leaf shapes of ``tree``."""
    return jax.tree_util.tree_map(lambda leaf: scale * rng.standard_normal(leaf.shape), tree)


# ----------------------------------------------------------------------------- probes


def _activation_probe(fn: Callable, derivative: Callable, kinked: bool = False) -> Probe:
    """``derivative(x)`` vs ``jax.grad(Σ fn)(x)`` (elementwise functions) and ``jax.grad`` vs FD.

    ``fn`` and ``derivative`` are looked up when traced (``activations.X`` at call time), so a
    patched primitive is what gets audited.
    """

    def make(rng, cfg):
        shape = (cfg["batch"], cfg["features"])
        return {"x": _away_from_zero(rng, shape) if kinked else 2.0 * rng.standard_normal(shape)}

    def compute(d):
        return _grad_pairs(lambda x: jnp.sum(fn(x)), d["x"], closed=derivative(d["x"]))

    return Probe("activations", make, compute)


def _softmax_jacobian_make(rng, cfg):
    shape = (cfg["batch"], cfg["features"])
    return {"x": 2.0 * rng.standard_normal(shape), "u": rng.standard_normal(shape)}


def _softmax_jacobian_compute(d):
    """Full per-row Jacobians vs ``jax.jacrev``; FD on the projection ``Σ u ⊙ softmax(x)``."""
    x = d["x"]
    auto_jac = jax.vmap(jax.jacrev(lambda row: activations.softmax(row)))(x)
    pairs = _grad_pairs(_scalarize(lambda x_: activations.softmax(x_), d["u"]), x)
    pairs["closed_vs_autodiff"] = (activations.softmax_jacobian(x), auto_jac)
    return pairs


def _activation_probes() -> Dict[str, Probe]:
    slope = LEAKY_SLOPE
    return {
        "sigmoid_derivative": _activation_probe(
            lambda x: activations.sigmoid(x), lambda x: activations.sigmoid_derivative(x)),
        "tanh_derivative": _activation_probe(
            lambda x: activations.tanh(x), lambda x: activations.tanh_derivative(x)),
        "softplus_derivative": _activation_probe(
            lambda x: activations.softplus(x), lambda x: activations.softplus_derivative(x)),
        "relu_derivative": _activation_probe(
            lambda x: activations.relu(x), lambda x: activations.relu_derivative(x),
            kinked=True),
        "leaky_relu_derivative": _activation_probe(
            lambda x: activations.leaky_relu(x, slope),
            lambda x: activations.leaky_relu_derivative(x, slope), kinked=True),
        "softmax_jacobian": Probe("activations", _softmax_jacobian_make,
                                  _softmax_jacobian_compute),
    }


def _loss_probe(loss: Callable, loss_grad: Callable | None, make: Callable) -> Probe:
    """``loss_grad(pred, target)`` vs ``jax.grad`` of the loss w.r.t. the prediction, and vs FD.

    ``loss()``/``loss_grad()`` return the library function when traced (patchable)."""

    def compute(d):
        f = lambda pred: loss()(pred, d["target"])
        closed = None if loss_grad is None else loss_grad()(d["pred"], d["target"])
        return _grad_pairs(f, d["pred"], closed=closed)

    return Probe("losses", make, compute)


def _regression_inputs(rng, cfg):
    shape = (cfg["batch"], cfg["features"])
    return {"pred": rng.standard_normal(shape), "target": rng.standard_normal(shape)}


def _binary_logit_inputs(rng, cfg):
    shape = (cfg["batch"], cfg["features"])
    return {"pred": 3.0 * rng.standard_normal(shape),
            "target": rng.integers(0, 2, shape).astype(np.float64)}


def _probability_inputs(rng, cfg):
    """Probabilities in ``[0.1, 0.9]``: inside the loss's clip, and away from the steep ends of
    ``log p`` where the third derivative ``2/p³`` makes float32's large step (~5e-3) truncate."""
    shape = (cfg["batch"], cfg["features"])
    return {"pred": rng.uniform(0.1, 0.9, shape),
            "target": rng.integers(0, 2, shape).astype(np.float64)}


def _class_inputs(rng, cfg):
    return {"pred": 2.0 * rng.standard_normal((cfg["batch"], cfg["features"])),
            "target": rng.integers(0, cfg["features"], cfg["batch"])}


def _loss_probes() -> Dict[str, Probe]:
    return {
        "mse_grad": _loss_probe(lambda: losses.mse, lambda: losses.mse_grad, _regression_inputs),
        "binary_cross_entropy_with_logits_grad": _loss_probe(
            lambda: losses.binary_cross_entropy_with_logits,
            lambda: losses.binary_cross_entropy_with_logits_grad, _binary_logit_inputs),
        "softmax_cross_entropy_grad": _loss_probe(
            lambda: losses.softmax_cross_entropy, lambda: losses.softmax_cross_entropy_grad,
            _class_inputs),
        "binary_cross_entropy (probabilities)": _loss_probe(
            lambda: losses.binary_cross_entropy, None, _probability_inputs),
    }


def _dense_make(rng, cfg):
    n, d = cfg["batch"], cfg["features"]
    return {"params": {"w": rng.standard_normal((d, d + 1)), "b": rng.standard_normal(d + 1),
                       "x": rng.standard_normal((n, d))},
            "u": rng.standard_normal((n, d + 1))}


def _dense_compute(d):
    """Closed form ``∂w = xᵀu``, ``∂b = Σ_n u``, ``∂x = u wᵀ`` of ``Σ u ⊙ (x w + b)``."""
    p, u = d["params"], d["u"]
    f = _scalarize(lambda q: layers.dense({"w": q["w"], "b": q["b"]}, q["x"]), u)
    closed = {"w": p["x"].T @ u, "b": jnp.sum(u, axis=0), "x": u @ p["w"].T}
    return _grad_pairs(f, p, closed=closed)


def _conv_make(stride: int):
    """Images, a 3×3 kernel, a bias and a cotangent shaped like the output at ``stride``."""

    def make(rng, cfg):
        n, s, c = cfg["batch"], cfg["image_size"], cfg["channels"]
        out = s if stride == 1 else -(-s // stride)  # padding 1 at stride 1; "SAME" otherwise
        return {"params": {"x": rng.standard_normal((n, s, s, c)),
                           "kernel": rng.standard_normal((3, 3, c, c + 1)),
                           "bias": rng.standard_normal(c + 1)},
                "u": rng.standard_normal((n, out, out, c + 1))}

    return make


def _conv2d_backward(x, kernel, u, padding: int):
    r"""Closed-form gradients of :math:`\sum u \odot \mathrm{conv2d}(x, K, b)` at stride 1.

    ``∂x`` is the "full" correlation of ``u`` (padded by ``KH − 1 − p``) with the kernel flipped
    in space and with its in/out channels swapped; ``∂K`` is the correlation of the padded ``x``
    with ``u``, computed by ``conv2d`` with the batch axis playing the channels' part; ``∂b`` sums
    ``u`` (Dumoulin & Visin, 2016).
    """
    kh = kernel.shape[0]
    flipped = jnp.flip(kernel, axis=(0, 1)).transpose(0, 1, 3, 2)    # (KH, KW, C_out, C_in)
    dx = layers.conv2d(u, flipped, padding=kh - 1 - padding)
    dk = layers.conv2d(x.transpose(3, 1, 2, 0), u.transpose(1, 2, 0, 3), padding=padding)
    return {"x": dx, "kernel": dk.transpose(1, 2, 0, 3), "bias": jnp.sum(u, axis=(0, 1, 2))}


def _conv2d_stride1_compute(d):
    p = d["params"]
    conv = lambda q: layers.conv2d(q["x"], q["kernel"], q["bias"], stride=1, padding=1)
    closed = _conv2d_backward(p["x"], p["kernel"], d["u"], padding=1)
    return _grad_pairs(_scalarize(conv, d["u"]), p, closed=closed)


def _conv2d_stride2_compute(d):
    conv = lambda q: layers.conv2d(q["x"], q["kernel"], q["bias"], stride=2, padding="SAME")
    return _grad_pairs(_scalarize(conv, d["u"]), d["params"])


def _pool_probe(kind: str) -> Probe:
    """2×2 pooling, stride 2: max routes ``u`` to each window's maximum, average spreads ``u/4``."""

    def make(rng, cfg):
        n, s, c = cfg["batch"], cfg["image_size"], cfg["channels"]
        return {"x": _distinct_windows(rng, (n, s, s, c)),
                "u": rng.standard_normal((n, s // 2, s // 2, c))}

    def compute(d):
        x, u = d["x"], d["u"]
        pool = layers.max_pool2d if kind == "max" else layers.avg_pool2d
        if kind == "max":
            closed = jnp.where(x == _upsample2(layers.max_pool2d(x, 2, 2)), _upsample2(u), 0)
        else:
            closed = _upsample2(u) / 4
        return _grad_pairs(_scalarize(lambda x_: pool(x_, 2, 2), u), x, closed=closed)

    return Probe("layers", make, compute)


def _batch_norm_make(rng, cfg):
    n, d = cfg["batch"], cfg["features"]
    return {"params": {"x": 1.0 + 2.0 * rng.standard_normal((n, d)),
                       "gamma": 1.0 + 0.5 * rng.standard_normal(d),
                       "beta": rng.standard_normal(d)},
            "u": rng.standard_normal((n, d))}


def _batch_norm_compute(d):
    """Train-mode ``batch_norm`` w.r.t. ``(x, γ, β)`` vs FD; ``batch_norm_input_grad`` vs grad."""
    p, u = d["params"], d["u"]
    channels = u.shape[-1]
    stats = (jnp.zeros((channels,), u.dtype), jnp.ones((channels,), u.dtype))
    bn = lambda q: layers.batch_norm(q["x"], q["gamma"], q["beta"], *stats, train=True)[0]
    closed = layers.batch_norm_input_grad(p["x"], p["gamma"], u)
    return _grad_pairs(_scalarize(bn, u), p, closed=closed, reference=lambda auto: auto["x"])


def _elman_bptt(params, h0, xs, u):
    r"""Backpropagation through time by hand for :math:`\sum_t u_t \cdot h_t` of an Elman RNN.

    Forward :math:`h_t = \tanh(a_t)`, :math:`a_t = x_t W_x + h_{t-1} W_h + b`. Backward, from
    :math:`t = T` down to 1, with :math:`\delta_{T+1} = 0`:
    :math:`g_t = u_t + \delta_{t+1} W_h^\top` (the gradient reaching :math:`h_t`),
    :math:`\delta_t = g_t \odot (1 - h_t^2)`, and :math:`\partial W_x = \sum_t x_t^\top \delta_t`,
    :math:`\partial W_h = \sum_t h_{t-1}^\top \delta_t`, :math:`\partial b = \sum_t \delta_t`,
    :math:`\partial h_0 = \delta_1 W_h^\top`, :math:`\partial x_t = \delta_t W_x^\top`
    (Werbos, 1990). The backward sweep is a reverse ``lax.scan``.
    """
    _, hs = rnn.unroll(rnn.rnn_cell, params, h0, xs)                  # (batch, T, H)
    h_prev = jnp.concatenate([h0[:, None], hs[:, :-1]], axis=1)       # h_{t-1}

    def back(delta_next, step):
        h_t, u_t = step
        delta = (u_t + delta_next @ params["w_h"].T) * (1 - h_t * h_t)
        return delta, delta

    _, deltas = lax.scan(back, jnp.zeros_like(h0),
                         (jnp.swapaxes(hs, 0, 1), jnp.swapaxes(u, 0, 1)), reverse=True)
    deltas = jnp.swapaxes(deltas, 0, 1)                               # (batch, T, H)
    return {"cell": {"w_x": jnp.einsum("btf,bth->fh", xs, deltas),
                     "w_h": jnp.einsum("btg,bth->gh", h_prev, deltas),
                     "b": jnp.sum(deltas, axis=(0, 1))},
            "h0": deltas[:, 0] @ params["w_h"].T,
            "xs": deltas @ params["w_x"].T}


_CELLS = {"rnn": (rnn.init_rnn_cell, lambda: rnn.rnn_cell),
          "lstm": (rnn.init_lstm_cell, lambda: rnn.lstm_cell),
          "gru": (rnn.init_gru_cell, lambda: rnn.gru_cell)}
_SEQUENCE_FEATURES = 2


def _unroll_probe(kind: str) -> Probe:
    """BPTT: ``Σ u ⊙ hs`` of ``rnn.unroll`` w.r.t. cell params, initial state and inputs.

    The cell parameters have the layout of ``init_*_cell`` (read with ``jax.eval_shape``, so no
    random kernel is compiled) and entries ``N(0, 1/H)``, a little larger than PyTorch's
    ``U(−1/√H, 1/√H)`` so that every gate is exercised.
    """
    init_cell, cell = _CELLS[kind]

    def make(rng, cfg):
        n, t, hidden = cfg["batch"], cfg["time_steps"], cfg["hidden"]
        layout = jax.eval_shape(lambda: init_cell(jax.random.PRNGKey(0), _SEQUENCE_FEATURES,
                                                  hidden, dtype=jnp.float32))
        h0 = 0.5 * rng.standard_normal((n, hidden))
        return {"params": {"cell": _like(rng, layout, hidden ** -0.5),
                           "h0": (h0, 0.5 * rng.standard_normal((n, hidden))) if kind == "lstm"
                           else h0,
                           "xs": rng.standard_normal((n, t, _SEQUENCE_FEATURES))},
                "u": rng.standard_normal((n, t, hidden))}

    def compute(d):
        p, u = d["params"], d["u"]
        hs = lambda q: rnn.unroll(cell(), q["cell"], q["h0"], q["xs"])[1]
        closed = _elman_bptt(p["cell"], p["h0"], p["xs"], u) if kind == "rnn" else None
        return _grad_pairs(_scalarize(hs, u), p, closed=closed)

    return Probe("rnn", make, compute)


def _dft_phases(n: int, bins: int, dtype) -> jax.Array:
    """``e^{2πi k t / n}`` for ``k < bins``, ``t < n``: ``(bins, n)``, complex."""
    k, t = np.arange(bins)[:, None], np.arange(n)[None, :]
    return jnp.asarray(np.exp(2j * np.pi * k * t / n), jnp.result_type(dtype, jnp.complex64))


def _spectrum_probe(kind: str) -> Probe:
    r"""Wirtinger closed forms: :math:`\partial P_k/\partial x_t = \tfrac2n \Re(X_k\,
    e^{2\pi i k t/n})` and :math:`\partial |X_k|/\partial x_t = \Re(X_k e^{2\pi i k t/n})/|X_k|`
    (``power_spectrum``: all ``n/2 + 1`` bins; ``fourier_features``: the lowest ``n/4 + 1``)."""

    def bins(n):
        return n // 2 + 1 if kind == "power" else n // 4 + 1

    def make(rng, cfg):
        n = cfg["signal_length"]
        return {"x": rng.standard_normal((cfg["batch"], n)),
                "u": rng.standard_normal((cfg["batch"], bins(n)))}

    def compute(d):
        x, u = d["x"], d["u"]
        n, k = x.shape[-1], u.shape[-1]
        g = ((lambda x_: signal.power_spectrum(x_)) if kind == "power"
             else (lambda x_: signal.fourier_features(x_, k)))
        spectrum = jnp.fft.rfft(x, axis=-1)[:, :k]
        phases = _dft_phases(n, k, x.dtype)
        if kind == "power":
            closed = (2.0 / n) * jnp.real((u * spectrum) @ phases)
        else:
            closed = jnp.real((u * spectrum / jnp.abs(spectrum)) @ phases) / n
        return _grad_pairs(_scalarize(g, u), x, closed=closed.astype(x.dtype))

    return Probe("signal", make, compute)


def probes() -> Dict[str, Probe]:
    """Every audited primitive, ``{name: Probe}``, in table order."""
    table: Dict[str, Probe] = {}
    table.update(_activation_probes())
    table.update(_loss_probes())
    table.update({
        "dense": Probe("layers", _dense_make, _dense_compute),
        "conv2d (stride 1, padding 1)": Probe("layers", _conv_make(1), _conv2d_stride1_compute),
        "conv2d (stride 2, SAME)": Probe("layers", _conv_make(2), _conv2d_stride2_compute),
        "max_pool2d (2x2)": _pool_probe("max"),
        "avg_pool2d (2x2)": _pool_probe("avg"),
        "batch_norm / batch_norm_input_grad": Probe("layers", _batch_norm_make,
                                                    _batch_norm_compute),
        "unroll rnn_cell (BPTT)": _unroll_probe("rnn"),
        "unroll lstm_cell (BPTT)": _unroll_probe("lstm"),
        "unroll gru_cell (BPTT)": _unroll_probe("gru"),
        "power_spectrum": _spectrum_probe("power"),
        "fourier_features": _spectrum_probe("features"),
    })
    return table


# ----------------------------------------------------------------------------- measuring


def relative_error(estimate, reference) -> float:
    r"""``max_i |a_i − b_i| / (|a_i| + |b_i| + ‖b‖∞)`` over every entry of two like pytrees.

    ``finite_diff.check_grad``'s rule with ``atol = rtol · ‖b‖∞``; NaN counts as ``inf``.
    """
    a = np.asarray(ravel_pytree(estimate)[0], np.float64)
    b = np.asarray(ravel_pytree(reference)[0], np.float64)
    if a.shape != b.shape:
        raise ValueError(f"relative_error: estimate and reference must have the same number of "
                         f"entries, got {a.shape} and {b.shape}")
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = np.abs(a - b)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = diff / (np.abs(a) + np.abs(b) + scale)
    err = np.where(diff == 0, 0.0, np.where(np.isnan(err), np.inf, err))
    return float(np.max(err)) if err.size else 0.0


def _cast(data: Data, dtype) -> Data:
    """Floating NumPy draws as arrays of ``dtype``; integer ones (labels) unchanged."""
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(a, dtype) if np.issubdtype(np.asarray(a).dtype, np.floating)
        else jnp.asarray(a), data)


def _draw(table: Dict[str, Probe], config: Dict[str, Any], trial: int) -> Dict[str, Data]:
    """Every probe's inputs for one trial, from ``default_rng([seed, trial, probe index])``."""
    return {name: probe.make(np.random.default_rng([config["seed"], trial, i]), config)
            for i, (name, probe) in enumerate(table.items())}


def _selected(table: Dict[str, Probe], names) -> Dict[str, Probe]:
    """The probes named in ``names`` (all of them when empty); unknown names raise ValueError."""
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError(f"derivative_audit: primitives must name rows of the audit, got unknown "
                         f"{unknown}; valid: {list(table)}")
    return {n: p for n, p in table.items() if not names or n in names}


def run(config: Dict[str, Any]) -> Dict[str, Any]:
    if config["image_size"] < 4 or config["image_size"] % 2:
        raise ConfigError(f"derivative_audit: image_size must be even and >= 4, got "
                         f"{config['image_size']}")
    table = _selected(probes(), config["primitives"])
    worst: Dict[Tuple[str, str, str], float] = {}
    seconds: Dict[str, float] = {}
    with jax.enable_x64(True):
        # One jit per dtype over every probe; a new function each run, so a patched primitive
        # is traced afresh. The trials reuse the compiled program (same shapes).
        compute = jax.jit(lambda data: {name: table[name].compute(d) for name, d in data.items()},
                          compiler_options=FAST_COMPILE)
        for dtype_name in DTYPES:
            start = time.perf_counter()
            for trial in _common.progress(range(config["trials"]), desc=f"audit {dtype_name}",
                                          enabled=config["progress"]):
                data = _cast(_draw(table, config, trial), jnp.dtype(dtype_name))
                for name, comparisons in jax.device_get(compute(data)).items():
                    for comparison, (estimate, reference) in comparisons.items():
                        key = (name, dtype_name, comparison)
                        worst[key] = max(worst.get(key, 0.0), relative_error(estimate, reference))
            seconds[dtype_name] = time.perf_counter() - start
    rows = []
    for name, probe in table.items():
        for dtype_name in DTYPES:
            for comparison in COMPARISONS:
                if (name, dtype_name, comparison) not in worst:
                    continue
                err = worst[(name, dtype_name, comparison)]
                tol = TOLERANCES[(comparison, dtype_name)]
                rows.append({"name": name, "group": probe.group, "dtype": dtype_name,
                             "comparison": comparison, "max_rel_error": err, "tolerance": tol,
                             "passed": bool(err <= tol)})
    if config["plots"]:
        _plot(rows, config["out_dir"])
    return {"passed": all(r["passed"] for r in rows), "num_rows": len(rows),
            "num_failed": sum(not r["passed"] for r in rows), "trials": config["trials"],
            "seconds": seconds, "rows": rows}


# ----------------------------------------------------------------------------- reporting


def _plot(rows: List[Dict[str, Any]], out_dir: str) -> None:
    plt = _common.pyplot()
    names = list(dict.fromkeys(r["name"] for r in rows))
    colors = {"float32": ("tab:orange", "saddlebrown"), "float64": ("tab:blue", "navy")}
    titles = {"closed_vs_autodiff": "closed form vs jax.grad",
              "autodiff_vs_fd": "jax.grad vs central finite differences"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.38 * len(names) + 2.2), sharey=True)
    y = np.arange(len(names))
    height = 0.38
    for ax, comparison in zip(axes, COMPARISONS):
        for i, dtype_name in enumerate(DTYPES):
            bar_color, tol_color = colors[dtype_name]
            picked = [r for r in rows if r["comparison"] == comparison and r["dtype"] == dtype_name]
            ys = np.array([names.index(r["name"]) for r in picked]) + (i - 0.5) * height
            errs = [max(r["max_rel_error"], _ZERO_FLOOR) for r in picked]
            ax.barh(ys, errs, height=height, color=bar_color, label=f"{dtype_name} error",
                    edgecolor=["red" if not r["passed"] else "none" for r in picked],
                    linewidth=2)
            ax.plot([r["tolerance"] for r in picked], ys, linestyle="none", marker="|",
                    markersize=10, markeredgewidth=2.2, color=tol_color,
                    label=f"{dtype_name} tolerance")
            for yy, r in zip(ys, picked):
                if r["max_rel_error"] == 0:
                    ax.text(_ZERO_FLOOR * 3, yy, "0 (exact)", va="center", fontsize=6.5)
        ax.set_xscale("log")
        ax.set_xlim(_ZERO_FLOOR / 2, 1.0)
        ax.set_xlabel("max relative error  max |a−b| / (|a|+|b|+‖b‖∞)   (log scale)")
        ax.set_title(titles[comparison])
        ax.grid(True, axis="x", which="major", alpha=0.3)
        ax.legend(loc="lower right", fontsize=8, ncol=2)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names, fontsize=8)
    axes[0].set_ylim(len(names) + 1.2, -0.8)  # top row first; an empty band below for the legend
    fig.suptitle("Derivative audit: max relative error per primitive and dtype "
                 "(| = tolerance, red edge = exceeds it, no bar = no closed form)", fontsize=11)
    _common.save_figure(fig, out_dir, "derivative_audit.png")


def summarize(results: Dict[str, Any]) -> str:
    table = _common.format_table(
        ["", "primitive", "dtype", "comparison", "max rel error", "tolerance"],
        [("ok" if r["passed"] else "!!", r["name"], r["dtype"], r["comparison"],
          f"{r['max_rel_error']:.2e}", f"{r['tolerance']:.0e}") for r in results["rows"]])
    verdict = ("all derivatives agree" if results["passed"]
               else f"{results['num_failed']} ROWS EXCEED THEIR TOLERANCE")
    return f"{table}\n\n{results['num_rows']} rows, {results['trials']} trial(s): {verdict}"


def main() -> int:
    return experiment_main(__name__)


if __name__ == "__main__":
    sys.exit(main())
