"""Bad-input audit of the calculus modules: derivatives, finite_diff, spectrum (issue #8).

Every public function × (wrong rank, wrong shape, wrong dtype, mismatched pytree, non-scalar or
non-callable function argument, bad option): one row of ``BAD_INPUTS`` each, which must raise
ValueError/TypeError at trace time with a message that names the function and the argument. Rows
whose function returns arrays run twice, eagerly and under ``jax.jit`` (the checks use static
information only, so they fire on tracers as well). ``NAN_INPUTS`` records what a NaN input does:
it propagates to the result, or the checker reports failure; no function raises on NaN.

The rows are the source of ``docs/errors.md`` (the calculus part): one table row per test id.
"""

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcalc import derivatives as D
from jaxcalc import finite_diff as fd
from jaxcalc import losses
from jaxcalc import spectrum as sp

KEY = jax.random.PRNGKey(0)
P = {"w": jnp.array([0.3, -0.5, 0.8]), "b": jnp.array(0.1)}  # 4 parameters
X = jnp.array([[1.0, 0.5, -0.2], [0.3, -1.0, 0.4], [-0.7, 0.2, 0.9], [0.1, 0.1, 0.1]])
Y = jnp.array([1.0, -1.0, 0.5, 0.0])
LABELS = jnp.array([0, 1, 1, 0])
NAN_P = {"w": jnp.array([0.3, jnp.nan, 0.8]), "b": jnp.array(0.1)}
GRID = jnp.linspace(-1.0, 3.0, 5)


def f(p):
    """A smooth non-quadratic scalar: its Hessian depends on the point (so NaN can reach it)."""
    return jnp.sum(jnp.tanh(p["w"]) * p["w"]) + jnp.cosh(p["b"])


def f_vector(p):
    return jnp.tanh(p["w"]) + p["b"]


def f_int(p):
    return jnp.sum(p["w"] > 0)  # an integer scalar


def apply_fn(p, x):
    """``(N,)`` outputs: a linear model on ``(N, 3)`` inputs."""
    return jnp.tanh(x @ p["w"] + p["b"])


def apply_logits(p, x):
    """``(N, 2)`` logits."""
    z = x @ p["w"] + p["b"]
    return jnp.stack([z, jnp.sin(z)], axis=-1)


def mse_mean(out, y):
    return jnp.mean((out - y) ** 2)


def loss_fn(p, batch):
    x, y = batch
    return jnp.mean((apply_fn(p, x) - y) ** 2)


def diag_matvec(v):
    return jnp.array([1.0, 2.0, 3.0, 4.0], v.dtype) * v


def nan_matvec(v):
    return jnp.array([1.0, jnp.nan, 3.0, 4.0], v.dtype) * v


def like(tree, **changes):
    """``tree`` (a dict) with some leaves replaced (``None`` removes a leaf)."""
    out = dict(tree)
    for name, value in changes.items():
        if value is None:
            out.pop(name)
        else:
            out[name] = value
    return out


def ints(tree):
    return jax.tree_util.tree_map(lambda a: jnp.round(a).astype(jnp.int32), tree)


def complexes(tree):
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.complex128), tree)


def eager(fn, *args):
    return fn(*args)


def jitted(fn, *args):
    return jax.jit(fn)(*args)


class Bad(NamedTuple):
    """One audit row: ``call(run)`` must raise ``error`` with a message matching ``match``.

    ``run(fn, *arrays)`` is ``fn(*arrays)`` or ``jax.jit(fn)(*arrays)``; ``jit=False`` rows
    (checkers returning Python reports, plotting, dtype helpers) run eagerly only.
    """

    id: str
    function: str
    bad_input: str
    call: Callable
    error: type
    match: str
    jit: bool = True


def _bad_inputs():
    rows = [
        # ------------------------------------------------------------------ derivatives
        Bad("hvp-v_wrong_rank", "derivatives.hvp", "v leaf of the wrong rank ((3, 1) for (3,))",
            lambda run: run(lambda p, v: D.hvp(f, p, v), P, like(P, w=jnp.ones((3, 1)))),
            ValueError, r"hvp: v must have the same leaf shapes as params; .*\(3, 1\)"),
        Bad("hvp-v_missing_leaf", "derivatives.hvp", "v missing a leaf",
            lambda run: run(lambda p, v: D.hvp(f, p, v), P, like(P, b=None)),
            ValueError, r"hvp: v must have the same pytree structure as params"),
        Bad("hvp-v_extra_leaf", "derivatives.hvp", "v with an extra leaf",
            lambda run: run(lambda p, v: D.hvp(f, p, v), P, like(P, c=jnp.ones(2))),
            ValueError, r"hvp: v must have the same pytree structure as params; .*'c'"),
        Bad("hvp-int_params", "derivatives.hvp", "integer params",
            lambda run: run(lambda p, v: D.hvp(f, p, v), ints(P), P),
            TypeError, r"hvp: params\['b'\] must have a floating dtype, got int32"),
        Bad("hvp-complex_v", "derivatives.hvp", "complex v (would lose its imaginary part)",
            lambda run: run(lambda p, v: D.hvp(f, p, v), P, complexes(P)),
            TypeError, r"hvp: v\['b'\] must have a real \(floating or integer\) dtype.*complex128"),
        Bad("hvp-f_non_scalar", "derivatives.hvp", "f returns a vector",
            lambda run: run(lambda p: D.hvp(f_vector, p, p), P),
            ValueError, r"hvp: f must return a scalar, got an array of shape \(3,\)"),
        Bad("hvp-f_int_valued", "derivatives.hvp", "f returns an integer scalar",
            lambda run: run(lambda p: D.hvp(f_int, p, p), P),
            TypeError, r"hvp: the value of f must have a floating dtype, got int"),
        Bad("hvp-f_not_callable", "derivatives.hvp", "f not callable",
            lambda run: run(lambda p: D.hvp(3.0, p, p), P),
            TypeError, r"hvp: f must be a callable f\(params\) -> scalar, got float"),
        Bad("hessian_matrix-complex_params", "derivatives.hessian_matrix", "complex params",
            lambda run: run(lambda p: D.hessian_matrix(f, p), complexes(P)),
            TypeError, r"hessian_matrix: params\['b'\] must have a floating dtype, got complex"),
        Bad("hessian_matrix-f_non_scalar", "derivatives.hessian_matrix", "f returns a vector",
            lambda run: run(lambda p: D.hessian_matrix(f_vector, p), P),
            ValueError, r"hessian_matrix: f must return a scalar, got .*\(3,\)"),
        Bad("hessian_matrix-f_returns_pytree", "derivatives.hessian_matrix",
            "f returns a tuple (mismatched pytree)",
            lambda run: run(lambda p: D.hessian_matrix(lambda q: (f(q), f(q)), p), P),
            ValueError, r"hessian_matrix: f must return a scalar array, got a tuple"),
        Bad("hessian_matrix-chunk_size_float", "derivatives.hessian_matrix", "chunk_size=2.0",
            lambda run: run(lambda p: D.hessian_matrix(f, p, chunk_size=2.0), P),
            TypeError, r"hessian_matrix: chunk_size must be a positive int or None, got 2.0"),
        Bad("jacobian_matrix-int_params", "derivatives.jacobian_matrix", "integer params",
            lambda run: run(lambda p: D.jacobian_matrix(f_vector, p), ints(P)),
            TypeError, r"jacobian_matrix: params\['b'\] must have a floating dtype"),
        Bad("jacobian_matrix-int_output", "derivatives.jacobian_matrix", "fn returns integers",
            lambda run: run(lambda p: D.jacobian_matrix(lambda q: (q["w"] > 0).astype(int), p),
                            P),
            TypeError, r"jacobian_matrix: fn\(params\) must have a floating dtype, got int"),
        Bad("jacobian_matrix-fn_not_callable", "derivatives.jacobian_matrix", "fn not callable",
            lambda run: run(lambda p: D.jacobian_matrix(None, p), P),
            TypeError, r"jacobian_matrix: fn must be a callable fn\(params\)"),
        Bad("ggn_vp-v_wrong_shape", "derivatives.ggn_vp", "v leaf of the wrong shape",
            lambda run: run(lambda p, v: D.ggn_vp(apply_fn, mse_mean, p, X, Y, v), P,
                            like(P, w=jnp.ones(4))),
            ValueError, r"ggn_vp: v must have the same leaf shapes as params; .*\(4,\)"),
        Bad("ggn_vp-targets_wrong_shape", "derivatives.ggn_vp",
            "targets (4, 1) for outputs (4,), with losses.mse",
            lambda run: run(lambda p, y: D.ggn_vp(apply_fn, losses.mse, p, X, y, p), P,
                            Y[:, None]),
            ValueError, r"ggn_vp: loss_of_output\(outputs, targets\) raised ValueError with "
                        r"outputs=float64\[4\], targets=float64\[4, 1\]: mse: target must have "
                        r"shape \(4,\)"),
        Bad("ggn_vp-inputs_wrong_rank", "derivatives.ggn_vp", "inputs (4, 3, 1) for a (N, 3) model",
            lambda run: run(lambda p, x: D.ggn_vp(apply_fn, mse_mean, p, x, Y, p), P,
                            X[..., None]),
            TypeError, r"ggn_vp: apply_fn\(params, inputs\) raised TypeError with .*"
                       r"inputs=float64\[4, 3, 1\]: dot_general"),
        Bad("ggn_vp-loss_non_scalar", "derivatives.ggn_vp", "loss_of_output returns (N,)",
            lambda run: run(lambda p: D.ggn_vp(apply_fn, lambda o, y: (o - y) ** 2, p, X, Y, p),
                            P),
            ValueError, r"ggn_vp: loss_of_output must return a scalar, got .*\(4,\)"),
        Bad("ggn_vp-int_outputs", "derivatives.ggn_vp", "apply_fn returns integers",
            lambda run: run(lambda p: D.ggn_vp(lambda q, x: jnp.round(x @ q["w"]).astype(int),
                                               mse_mean, p, X, Y, p), P),
            TypeError, r"ggn_vp: apply_fn\(params, inputs\) must have a floating dtype, got int"),
        Bad("ggn_matrix-targets_wrong_shape", "derivatives.ggn_matrix", "targets (3,) for N = 4",
            lambda run: run(lambda p, y: D.ggn_matrix(apply_fn, losses.mse, p, X, y), P, Y[:3]),
            ValueError, r"ggn_matrix: loss_of_output\(outputs, targets\) raised ValueError .*"
                        r"targets=float64\[3\]"),
        Bad("ggn_matrix-loss_not_callable", "derivatives.ggn_matrix", "loss_of_output not callable",
            lambda run: run(lambda p: D.ggn_matrix(apply_fn, "mse", p, X, Y), P),
            TypeError, r"ggn_matrix: loss_of_output must be a callable .*got str"),
        Bad("ggn_matrix-int_params", "derivatives.ggn_matrix", "integer params",
            lambda run: run(lambda p: D.ggn_matrix(apply_fn, mse_mean, p, X, Y), ints(P)),
            TypeError, r"ggn_matrix: params\['b'\] must have a floating dtype"),
        Bad("fisher_vp-v_extra_leaf", "derivatives.fisher_vp", "v with an extra leaf",
            lambda run: run(lambda p, v: D.fisher_vp(apply_logits, p, X, "categorical", v), P,
                            like(P, c=jnp.ones(()))),
            ValueError, r"fisher_vp: v must have the same pytree structure as params"),
        Bad("fisher_vp-categorical_rank", "derivatives.fisher_vp",
            "(N,) outputs for likelihood 'categorical'",
            lambda run: run(lambda p: D.fisher_vp(apply_fn, p, X, "categorical", p), P),
            ValueError, r"fisher_vp: apply_fn\(params, inputs\) must be 2-D \(N, C\) logits .*"
                        r"got shape \(4,\)"),
        Bad("fisher_vp-bernoulli_shape", "derivatives.fisher_vp",
            "(N, 2) outputs for likelihood 'bernoulli'",
            lambda run: run(lambda p: D.fisher_vp(apply_logits, p, X, "bernoulli", p), P),
            ValueError, r"fisher_vp: apply_fn\(params, inputs\) must be \(N,\) or \(N, 1\) "
                        r"logits .*got shape \(4, 2\)"),
        Bad("fisher_vp-likelihood", "derivatives.fisher_vp", "unknown likelihood",
            lambda run: run(lambda p: D.fisher_vp(apply_fn, p, X, "poisson", p), P),
            ValueError, r"fisher_vp: likelihood must be one of \['categorical', 'bernoulli', "
                        r"'gaussian'\], got 'poisson'"),
        Bad("fisher_vp-inputs_wrong_shape", "derivatives.fisher_vp", "inputs (4, 2) for (N, 3)",
            lambda run: run(lambda p, x: D.fisher_vp(apply_fn, p, x, "gaussian", p), P, X[:, :2]),
            TypeError, r"fisher_vp: apply_fn\(params, inputs\) raised TypeError with .*"
                       r"inputs=float64\[4, 2\]"),
        Bad("fisher_matrix-int_outputs", "derivatives.fisher_matrix", "apply_fn returns integers",
            lambda run: run(lambda p: D.fisher_matrix(
                lambda q, x: jnp.round(x @ q["w"]).astype(int), p, X, "gaussian"), P),
            TypeError, r"fisher_matrix: apply_fn\(params, inputs\) must have a floating dtype"),
        Bad("fisher_matrix-scalar_output", "derivatives.fisher_matrix",
            "scalar output for likelihood 'gaussian' (no example axis)",
            lambda run: run(lambda p: D.fisher_matrix(lambda q, x: jnp.sum(apply_fn(q, x)), p, X,
                                                      "gaussian"), P),
            ValueError, r"fisher_matrix: apply_fn\(params, inputs\) must have a leading example "
                        r"axis .*got shape \(\)"),
        Bad("mc_fisher_matrix-num_samples_zero", "derivatives.mc_fisher_matrix", "num_samples=0",
            lambda run: run(lambda p: D.mc_fisher_matrix(apply_logits, p, X, "categorical", KEY,
                                                         0), P),
            ValueError, r"mc_fisher_matrix: num_samples must be > 0, got 0"),
        Bad("mc_fisher_matrix-num_samples_float", "derivatives.mc_fisher_matrix",
            "num_samples=2.0",
            lambda run: run(lambda p: D.mc_fisher_matrix(apply_logits, p, X, "categorical", KEY,
                                                         2.0), P),
            TypeError, r"mc_fisher_matrix: num_samples must be a positive int, got 2.0"),
        Bad("mc_fisher_matrix-key_int", "derivatives.mc_fisher_matrix", "key=0 (a seed, not a key)",
            lambda run: run(lambda p, k: D.mc_fisher_matrix(apply_logits, p, X, "categorical", k,
                                                            2), P, 0),
            TypeError, r"mc_fisher_matrix: key must be a PRNG key .*got int"),
        Bad("mc_fisher_vp-key_wrong_shape", "derivatives.mc_fisher_vp", "key of shape (3,)",
            lambda run: run(lambda p, k: D.mc_fisher_vp(apply_logits, p, X, "categorical", k, 2,
                                                        p), P, jnp.zeros(3, jnp.uint32)),
            ValueError, r"mc_fisher_vp: key must be a PRNG key .*got uint32 of shape \(3,\)"),
        Bad("mc_fisher_vp-key_float", "derivatives.mc_fisher_vp", "float key",
            lambda run: run(lambda p, k: D.mc_fisher_vp(apply_logits, p, X, "categorical", k, 2,
                                                        p), P, jnp.zeros(2)),
            TypeError, r"mc_fisher_vp: key must be a PRNG key .*got float64\[2\]"),
        Bad("mc_fisher_vp-v_missing_leaf", "derivatives.mc_fisher_vp", "v missing a leaf",
            lambda run: run(lambda p, v: D.mc_fisher_vp(apply_logits, p, X, "categorical", KEY, 2,
                                                        v), P, like(P, w=None)),
            ValueError, r"mc_fisher_vp: v must have the same pytree structure as params"),
        Bad("empirical_fisher_vp-v_wrong_rank", "derivatives.empirical_fisher_vp",
            "v leaf of the wrong rank",
            lambda run: run(lambda p, v: D.empirical_fisher_vp(loss_fn, p, (X, Y), v), P,
                            like(P, b=jnp.ones(1))),
            ValueError, r"empirical_fisher_vp: v must have the same leaf shapes as params"),
        Bad("empirical_fisher_vp-batch_dict", "derivatives.empirical_fisher_vp",
            "batch a dict, not a tuple",
            lambda run: run(lambda p: D.empirical_fisher_vp(loss_fn, p, {"x": X, "y": Y}, p), P),
            ValueError, r"empirical_fisher_vp: batch must be a non-empty tuple of arrays .*"
                        r"got dict"),
        Bad("empirical_fisher_vp-batch_mismatched_n", "derivatives.empirical_fisher_vp",
            "targets with 3 examples, inputs with 4",
            lambda run: run(lambda p, y: D.empirical_fisher_vp(loss_fn, p, (X, y), p), P, Y[:3]),
            ValueError, r"empirical_fisher_vp: batch arrays must share a leading dimension N, "
                        r"got shapes \[\(4, 3\), \(3,\)\]"),
        Bad("empirical_fisher_vp-loss_non_scalar", "derivatives.empirical_fisher_vp",
            "loss_fn returns (N,)",
            lambda run: run(lambda p: D.empirical_fisher_vp(
                lambda q, b: (apply_fn(q, b[0]) - b[1]) ** 2, p, (X, Y), p), P),
            ValueError, r"empirical_fisher_vp: loss_fn must return a scalar, got .*\(4,\)"),
        Bad("empirical_fisher_vp-loss_needs_whole_batch", "derivatives.empirical_fisher_vp",
            "loss_fn that only works for N = 4 (a hard-coded reshape)",
            lambda run: run(lambda p: D.empirical_fisher_vp(
                lambda q, b: jnp.mean(b[0].reshape(4, 3) @ q["w"]), p, (X, Y), p), P),
            TypeError, r"empirical_fisher_vp: loss_fn\(params, batch\[:1\]\) raised TypeError "
                       r"with .*batch=\(float64\[4, 3\], float64\[4\]\): .*reshape"),
        Bad("empirical_fisher_matrix-complex_params", "derivatives.empirical_fisher_matrix",
            "complex params",
            lambda run: run(lambda p: D.empirical_fisher_matrix(loss_fn, p, (X, Y)),
                            complexes(P)),
            TypeError, r"empirical_fisher_matrix: params\['b'\] must have a floating dtype"),
        Bad("empirical_fisher_matrix-loss_not_callable", "derivatives.empirical_fisher_matrix",
            "loss_fn not callable",
            lambda run: run(lambda p: D.empirical_fisher_matrix(None, p, (X, Y)), P),
            TypeError, r"empirical_fisher_matrix: loss_fn must be a callable"),
        Bad("empirical_fisher_matrix-loss_raises", "derivatives.empirical_fisher_matrix",
            "inputs of the wrong width inside loss_fn",
            lambda run: run(lambda p, x: D.empirical_fisher_matrix(loss_fn, p, (x, Y)), P,
                            X[:, :2]),
            TypeError, r"empirical_fisher_matrix: loss_fn\(params, batch\) raised "
                       r"TypeError with .*batch=\(float64\[4, 2\], float64\[4\]\)"),
        # ------------------------------------------------------------------ finite_diff
        Bad("fd.default_relative_step-int_dtype", "finite_diff.default_relative_step",
            "integer dtype", lambda run: fd.default_relative_step(jnp.int32),
            TypeError, r"default_relative_step: dtype must be a floating dtype, got int32", False),
        Bad("fd.default_relative_step-derivative", "finite_diff.default_relative_step",
            "derivative=3", lambda run: fd.default_relative_step(jnp.float64, derivative=3),
            ValueError, r"default_relative_step: derivative must be one of \[1, 2\], got 3",
            False),
        Bad("fd.default_relative_step-levels", "finite_diff.default_relative_step", "levels=0",
            lambda run: fd.default_relative_step(jnp.float64, "richardson", levels=0),
            ValueError, r"default_relative_step: levels must be an int >= 1, got 0", False),
        Bad("fd.grad-int_params", "finite_diff.grad", "integer params",
            lambda run: run(lambda p: fd.grad(f, p), ints(P)),
            TypeError, r"grad: params\['b'\] must have a floating dtype, got int32"),
        Bad("fd.grad-complex_params", "finite_diff.grad", "complex params",
            lambda run: run(lambda p: fd.grad(lambda q: jnp.sum(q.real), p),
                            jnp.ones(3, jnp.complex128)),
            TypeError, r"grad: params must have a floating dtype, got complex128"),
        Bad("fd.grad-empty_params", "finite_diff.grad", "params with no leaves",
            lambda run: fd.grad(lambda p: 0.0, {}),
            ValueError, r"grad: params must hold at least one array, got \{\}", False),
        Bad("fd.grad-f_non_scalar", "finite_diff.grad", "f returns a vector",
            lambda run: run(lambda p: fd.grad(f_vector, p), P),
            ValueError, r"grad: f must return a scalar, got an array of shape \(3,\)"),
        Bad("fd.grad-f_raises", "finite_diff.grad", "f fails on params of this shape",
            lambda run: run(lambda p: fd.grad(lambda q: jnp.sum(q["w"] * jnp.ones(4)), p), P),
            TypeError, r"grad: f\(params\) raised TypeError with params=\{'b': float64\[\], "
                       r"'w': float64\[3\]\}"),
        Bad("fd.grad-step_array", "finite_diff.grad", "step of rank 1",
            lambda run: run(lambda p: fd.grad(f, p, step=np.full(4, 1e-3)), P),
            ValueError, r"grad: step must be a positive scalar \(an absolute step\), got an "
                        r"array of shape \(4,\)"),
        Bad("fd.grad-step_str", "finite_diff.grad", "step='1e-3' (a string)",
            lambda run: run(lambda p: fd.grad(f, p, step="1e-3"), P),
            TypeError, r"grad: step must be a positive real scalar .*got '1e-3'"),
        Bad("fd.grad-step_inf", "finite_diff.grad", "step=inf",
            lambda run: run(lambda p: fd.grad(f, p, step=np.inf), P),
            ValueError, r"grad: step must be finite, got inf"),
        Bad("fd.grad-chunk_size_bool", "finite_diff.grad", "chunk_size=True",
            lambda run: run(lambda p: fd.grad(f, p, chunk_size=True), P),
            TypeError, r"grad: chunk_size must be a positive int or None, got True"),
        Bad("fd.grad-method", "finite_diff.grad", "unknown method",
            lambda run: run(lambda p: fd.grad(f, p, method="five-point"), P),
            ValueError, r"grad: method must be one of \['forward', 'backward', 'central', "
                        r"'richardson'\], got 'five-point'"),
        Bad("fd.richardson_grad-levels_float", "finite_diff.richardson_grad", "levels=2.0",
            lambda run: run(lambda p: fd.richardson_grad(f, p, levels=2.0), P),
            TypeError, r"richardson_grad: levels must be an int >= 1, got 2.0"),
        Bad("fd.richardson_grad-f_int_valued", "finite_diff.richardson_grad",
            "f returns an integer scalar",
            lambda run: run(lambda p: fd.richardson_grad(f_int, p), P),
            TypeError, r"richardson_grad: the value of f must have a floating dtype"),
        Bad("fd.hessian-source", "finite_diff.hessian", "unknown source",
            lambda run: run(lambda p: fd.hessian(f, p, source="values"), P),
            ValueError, r"hessian: source must be one of \['grad', 'value'\], got 'values'"),
        Bad("fd.hessian-step_negative", "finite_diff.hessian", "step=-1e-3",
            lambda run: run(lambda p: fd.hessian(f, p, step=-1e-3), P),
            ValueError, r"hessian: step must be > 0, got -0.001"),
        Bad("fd.hessian-int_params", "finite_diff.hessian", "integer params",
            lambda run: run(lambda p: fd.hessian(f, p), ints(P)),
            TypeError, r"hessian: params\['b'\] must have a floating dtype"),
        Bad("fd.hvp-v_missing_leaf", "finite_diff.hvp", "v missing a leaf",
            lambda run: run(lambda p, v: fd.hvp(f, p, v), P, like(P, b=None)),
            ValueError, r"hvp: v must have the same pytree structure as params"),
        Bad("fd.hvp-v_wrong_shape", "finite_diff.hvp", "v leaf of the wrong shape",
            lambda run: run(lambda p, v: fd.hvp(f, p, v), P, like(P, w=jnp.ones(2))),
            ValueError, r"hvp: v must have the same leaf shapes as params"),
        Bad("fd.hvp-int_v", "finite_diff.hvp", "integer v",
            lambda run: run(lambda p, v: fd.hvp(f, p, v), P, ints(P)),
            TypeError, r"hvp: v\['b'\] must have a floating dtype, got int32"),
        Bad("fd.check_grad-rtol_str", "finite_diff.check_grad", "rtol='1e-6' (a string)",
            lambda run: fd.check_grad(f, P, rtol="1e-6"),
            TypeError, r"check_grad: rtol must be a real scalar > 0, got '1e-6'", False),
        Bad("fd.check_grad-rtol_array", "finite_diff.check_grad", "rtol of rank 1",
            lambda run: fd.check_grad(f, P, rtol=np.ones(2)),
            ValueError, r"check_grad: rtol must be a real scalar > 0, got an array of shape "
                        r"\(2,\)", False),
        Bad("fd.check_grad-atol_negative", "finite_diff.check_grad", "atol=-1",
            lambda run: fd.check_grad(f, P, atol=-1.0),
            ValueError, r"check_grad: atol must be >= 0, got -1.0", False),
        Bad("fd.check_grad-int_params", "finite_diff.check_grad", "integer params",
            lambda run: fd.check_grad(f, ints(P)),
            TypeError, r"check_grad: params\['b'\] must have a floating dtype", False),
        Bad("fd.check_grad-f_non_scalar", "finite_diff.check_grad", "f returns a vector",
            lambda run: fd.check_grad(f_vector, P),
            ValueError, r"check_grad: f must return a scalar", False),
        Bad("fd.check_hessian-rtol_inf", "finite_diff.check_hessian", "rtol=inf",
            lambda run: fd.check_hessian(f, P, rtol=np.inf),
            ValueError, r"check_hessian: rtol must be finite, got inf", False),
        Bad("fd.check_hessian-source", "finite_diff.check_hessian", "unknown source",
            lambda run: fd.check_hessian(f, P, source="hvp"),
            ValueError, r"check_hessian: source must be one of \['grad', 'value'\]", False),
        Bad("fd.check_hessian-f_not_callable", "finite_diff.check_hessian", "f not callable",
            lambda run: fd.check_hessian(None, P),
            TypeError, r"check_hessian: f must be a callable f\(params\) -> scalar, got NoneType",
            False),
        Bad("fd.default_sweep_steps-int_dtype", "finite_diff.default_sweep_steps",
            "integer dtype", lambda run: fd.default_sweep_steps(np.int64),
            TypeError, r"default_sweep_steps: dtype must be a floating dtype, got int64", False),
        Bad("fd.default_sweep_steps-complex_dtype", "finite_diff.default_sweep_steps",
            "complex dtype", lambda run: fd.default_sweep_steps(jnp.complex64),
            TypeError, r"default_sweep_steps: dtype must be a floating dtype, got complex64",
            False),
        Bad("fd.step_sweep-steps_2d", "finite_diff.step_sweep", "steps of rank 2",
            lambda run: fd.step_sweep(f, P, steps=np.full((2, 2), 1e-3)),
            ValueError, r"step_sweep: steps must be a non-empty 1-D array of positive steps",
            False),
        Bad("fd.step_sweep-steps_str", "finite_diff.step_sweep", "steps=['1e-3'] (strings)",
            lambda run: fd.step_sweep(f, P, steps=["1e-3"]),
            TypeError, r"step_sweep: steps must be a non-empty 1-D array of positive real steps, "
                       r"got dtype <U4", False),
        Bad("fd.step_sweep-steps_nan", "finite_diff.step_sweep", "a NaN step",
            lambda run: fd.step_sweep(f, P, steps=[1e-3, np.nan]),
            ValueError, r"step_sweep: steps must be a non-empty 1-D array of positive steps, got "
                        r"array\(\[0.001,\s+nan\]\)", False),
        Bad("fd.step_sweep-method_empty", "finite_diff.step_sweep", "method=[]",
            lambda run: fd.step_sweep(f, P, method=[]),
            ValueError, r"step_sweep: method must name at least one of", False),
        Bad("fd.plot_step_sweep-steps_2d", "finite_diff.plot_step_sweep", "steps of rank 2",
            lambda run: fd.plot_step_sweep(np.ones((2, 2)), np.ones((2, 2))),
            ValueError, r"plot_step_sweep: steps must be a non-empty 1-D array", False),
        Bad("fd.plot_step_sweep-errors_shape", "finite_diff.plot_step_sweep",
            "errors shorter than steps",
            lambda run: fd.plot_step_sweep(np.array([1e-2, 1e-3]), {"central": np.ones(3)}),
            ValueError, r"plot_step_sweep: errors\['central'\] must have the shape of steps "
                        r"\(2,\), got \(3,\)", False),
        # ------------------------------------------------------------------ spectrum
        Bad("ravel_matvec-op_wrong_structure", "spectrum.ravel_matvec",
            "op returns one leaf of a two-leaf params",
            lambda run: sp.ravel_matvec(lambda v: v["w"], P),
            ValueError, r"ravel_matvec: op\(v\) must have the same pytree structure as params",
            False),
        Bad("ravel_matvec-op_wrong_shape", "spectrum.ravel_matvec", "op changes a leaf's shape",
            lambda run: sp.ravel_matvec(lambda v: like(v, w=v["w"][:2]), P),
            ValueError, r"ravel_matvec: op\(v\) must have the same leaf shapes as params", False),
        Bad("ravel_matvec-int_params", "spectrum.ravel_matvec", "integer params",
            lambda run: sp.ravel_matvec(lambda v: v, ints(P)),
            TypeError, r"ravel_matvec: params\['b'\] must have a floating dtype", False),
        Bad("ravel_matvec-op_not_callable", "spectrum.ravel_matvec", "op not callable",
            lambda run: sp.ravel_matvec(None, P),
            TypeError, r"ravel_matvec: op must be a callable", False),
        Bad("lanczos-matvec_wrong_shape", "spectrum.lanczos", "matvec returns (3,) for dim 4",
            lambda run: run(lambda k: sp.lanczos(lambda v: v[:3], 4, 2, k), KEY),
            ValueError, r"lanczos: matvec must map a \(4,\) vector to a \(4,\) vector"),
        Bad("lanczos-matvec_not_callable", "spectrum.lanczos", "matvec not callable",
            lambda run: run(lambda k: sp.lanczos(np.eye(4), 4, 2, k), KEY),
            TypeError, r"lanczos: matvec must be a callable .*got ndarray"),
        Bad("lanczos-dim_float", "spectrum.lanczos", "dim=4.0",
            lambda run: run(lambda k: sp.lanczos(diag_matvec, 4.0, 2, k), KEY),
            TypeError, r"lanczos: dim must be a Python int \(static\), got 4.0"),
        Bad("lanczos-num_iters_too_large", "spectrum.lanczos", "num_iters > dim",
            lambda run: run(lambda k: sp.lanczos(diag_matvec, 4, 5, k), KEY),
            ValueError, r"lanczos: num_iters must be in \[1, 4\] \(dim = 4\), got 5"),
        Bad("lanczos-dtype_int", "spectrum.lanczos", "dtype=int32",
            lambda run: run(lambda k: sp.lanczos(diag_matvec, 4, 2, k, dtype=jnp.int32), KEY),
            TypeError, r"lanczos: dtype must be a floating dtype, got int32"),
        Bad("lanczos-key_int", "spectrum.lanczos", "key=0 (a seed, not a key)",
            lambda run: run(lambda k: sp.lanczos(diag_matvec, 4, 2, k), 0),
            TypeError, r"lanczos: key must be a PRNG key .*got int"),
        Bad("top_eigenvalues-int_leaf", "spectrum.top_eigenvalues",
            "one integer leaf among floating ones",
            lambda run: run(lambda p: sp.top_eigenvalues(f, p, key=KEY), like(P, b=jnp.array(1))),
            TypeError, r"top_eigenvalues: params\['b'\] must have a floating dtype"),
        Bad("top_eigenvalues-f_non_scalar", "spectrum.top_eigenvalues", "f returns a vector",
            lambda run: run(lambda p: sp.top_eigenvalues(f_vector, p, key=KEY), P),
            ValueError, r"top_eigenvalues: f must return a scalar, got .*\(3,\)"),
        Bad("top_eigenvalues-k_zero", "spectrum.top_eigenvalues", "k=0",
            lambda run: run(lambda p: sp.top_eigenvalues(f, p, 0, key=KEY), P),
            ValueError, r"top_eigenvalues: k must be in \[1, 4\] .*got 0"),
        Bad("top_eigenvalues-key_float", "spectrum.top_eigenvalues", "float key",
            lambda run: run(lambda p, k: sp.top_eigenvalues(f, p, key=k), P, jnp.zeros(2)),
            TypeError, r"top_eigenvalues: key must be a PRNG key .*got float64\[2\]"),
        Bad("top_eigenvalues_matvec-matvec_rank", "spectrum.top_eigenvalues_matvec",
            "matvec returns (dim, 1)",
            lambda run: run(lambda k: sp.top_eigenvalues_matvec(lambda v: v[:, None], 4, key=k),
                            KEY),
            ValueError, r"top_eigenvalues_matvec: matvec must map a \(4,\) vector to a \(4,\) "
                        r"vector, got output .*\(4, 1\)"),
        Bad("top_eigenvalues_matvec-dtype_int", "spectrum.top_eigenvalues_matvec", "dtype=int32",
            lambda run: run(lambda k: sp.top_eigenvalues_matvec(diag_matvec, 4, key=k,
                                                                dtype=jnp.int32), KEY),
            TypeError, r"top_eigenvalues_matvec: dtype must be a floating dtype, got int32"),
        Bad("top_eigenvalues_matvec-k_too_large", "spectrum.top_eigenvalues_matvec", "k > dim",
            lambda run: run(lambda k: sp.top_eigenvalues_matvec(diag_matvec, 4, 5, key=k), KEY),
            ValueError, r"top_eigenvalues_matvec: k must be in \[1, 4\] .*got 5"),
        Bad("power_iteration-tol_negative", "spectrum.power_iteration", "tol=-1",
            lambda run: run(lambda p: sp.power_iteration(f, p, KEY, tol=-1.0), P),
            ValueError, r"power_iteration: tol must be >= 0, got -1.0"),
        Bad("power_iteration-tol_str", "spectrum.power_iteration", "tol='1e-6' (a string)",
            lambda run: run(lambda p: sp.power_iteration(f, p, KEY, tol="1e-6"), P),
            TypeError, r"power_iteration: tol must be a real Python float, got '1e-6'"),
        Bad("power_iteration-f_returns_pytree", "spectrum.power_iteration",
            "f returns a dict (mismatched pytree)",
            lambda run: run(lambda p: sp.power_iteration(lambda q: {"loss": f(q)}, p, KEY), P),
            ValueError, r"power_iteration: f must return a scalar array, got a dict: "
                        r"\{'loss': float64\[\]\}"),
        Bad("power_iteration-complex_params", "spectrum.power_iteration", "complex params",
            lambda run: run(lambda p: sp.power_iteration(f, p, KEY), complexes(P)),
            TypeError, r"power_iteration: params must have a floating dtype, got complex128"),
        Bad("power_iteration_matvec-dim_zero", "spectrum.power_iteration_matvec", "dim=0",
            lambda run: run(lambda k: sp.power_iteration_matvec(diag_matvec, 0, k), KEY),
            ValueError, r"power_iteration_matvec: dim must be >= 1, got 0"),
        Bad("power_iteration_matvec-complex_output", "spectrum.power_iteration_matvec",
            "matvec returns complex",
            lambda run: run(lambda k: sp.power_iteration_matvec(lambda v: v * 1j, 4, k), KEY),
            TypeError, r"power_iteration_matvec: matvec\(v\) must have a floating dtype, got "
                       r"complex"),
        Bad("power_iteration_matvec-matvec_raises", "spectrum.power_iteration_matvec",
            "matvec fails on (dim,) vectors",
            lambda run: run(lambda k: sp.power_iteration_matvec(lambda v: jnp.ones((3, 3)) @ v, 4,
                                                                k), KEY),
            TypeError, r"power_iteration_matvec: matvec\(v\) raised TypeError with "
                       r"v=float64\[4\]"),
        Bad("hutchinson_trace-num_samples_one", "spectrum.hutchinson_trace", "num_samples=1",
            lambda run: run(lambda p: sp.hutchinson_trace(f, p, KEY, num_samples=1), P),
            ValueError, r"hutchinson_trace: num_samples must be >= 2, got 1"),
        Bad("hutchinson_trace-distribution", "spectrum.hutchinson_trace", "unknown distribution",
            lambda run: run(lambda p: sp.hutchinson_trace(f, p, KEY, num_samples=4,
                                                          distribution="normal"), P),
            ValueError, r"hutchinson_trace: distribution must be one of \['rademacher', "
                        r"'gaussian'\], got 'normal'"),
        Bad("hutchinson_trace-key_batch", "spectrum.hutchinson_trace", "a batch of typed keys",
            lambda run: run(lambda p, k: sp.hutchinson_trace(f, p, k, num_samples=4), P,
                            jax.random.split(jax.random.key(0), 2)),
            ValueError, r"hutchinson_trace: key must be a single PRNG key of shape \(\), got an "
                        r"array of keys of shape \(2,\)"),
        Bad("hutchinson_trace-int_params", "spectrum.hutchinson_trace", "integer params",
            lambda run: run(lambda p: sp.hutchinson_trace(
                lambda q: jnp.sum(q["w"] ** 2).astype(float), p, KEY, num_samples=4), ints(P)),
            TypeError, r"hutchinson_trace: params must have a floating dtype, got int32"),
        Bad("hutchinson_trace_matvec-batch_size_zero", "spectrum.hutchinson_trace_matvec",
            "batch_size=0",
            lambda run: run(lambda k: sp.hutchinson_trace_matvec(diag_matvec, 4, k, num_samples=4,
                                                                 batch_size=0), KEY),
            ValueError, r"hutchinson_trace_matvec: batch_size must be >= 1, got 0"),
        Bad("hutchinson_trace_matvec-num_samples_float", "spectrum.hutchinson_trace_matvec",
            "num_samples=8.0",
            lambda run: run(lambda k: sp.hutchinson_trace_matvec(diag_matvec, 4, k,
                                                                 num_samples=8.0), KEY),
            TypeError, r"hutchinson_trace_matvec: num_samples must be a Python int \(static\), "
                       r"got 8.0"),
        Bad("slq_nodes_weights-num_iters_too_large", "spectrum.slq_nodes_weights",
            "num_iters > dim",
            lambda run: run(lambda p: sp.slq_nodes_weights(f, p, KEY, num_iters=5, num_probes=1),
                            P),
            ValueError, r"slq_nodes_weights: num_iters must be in \[1, 4\] \(dim = 4\), got 5"),
        Bad("slq_nodes_weights-int_leaf", "spectrum.slq_nodes_weights",
            "one integer leaf among floating ones",
            lambda run: run(lambda p: sp.slq_nodes_weights(f, p, KEY, num_iters=2, num_probes=1),
                            like(P, w=jnp.arange(3))),
            TypeError, r"slq_nodes_weights: params\['w'\] must have a floating dtype"),
        Bad("slq_nodes_weights-num_probes_zero", "spectrum.slq_nodes_weights", "num_probes=0",
            lambda run: run(lambda p: sp.slq_nodes_weights(f, p, KEY, num_iters=2, num_probes=0),
                            P),
            ValueError, r"slq_nodes_weights: num_probes must be >= 1, got 0"),
        Bad("slq_nodes_weights_matvec-dtype_complex", "spectrum.slq_nodes_weights_matvec",
            "dtype=complex64",
            lambda run: run(lambda k: sp.slq_nodes_weights_matvec(
                diag_matvec, 4, k, num_iters=2, num_probes=1, dtype=jnp.complex64), KEY),
            TypeError, r"slq_nodes_weights_matvec: dtype must be a floating dtype, got complex64"),
        Bad("slq_nodes_weights_matvec-key_wrong_shape", "spectrum.slq_nodes_weights_matvec",
            "raw key of shape (4,)",
            lambda run: run(lambda k: sp.slq_nodes_weights_matvec(diag_matvec, 4, k, num_iters=2,
                                                                  num_probes=1),
                            jnp.zeros(4, jnp.uint32)),
            ValueError, r"slq_nodes_weights_matvec: key must be a PRNG key .*got uint32 of shape "
                        r"\(4,\)"),
        Bad("spectral_density-grid_2d", "spectrum.spectral_density", "grid of rank 2",
            lambda run: run(lambda p: sp.spectral_density(f, p, KEY, num_iters=2, num_probes=1,
                                                          grid=jnp.zeros((2, 3)), sigma=0.1), P),
            ValueError, r"spectral_density: grid must be 1-D \(num_points,\), got shape \(2, 3\)"),
        Bad("spectral_density-grid_int", "spectrum.spectral_density", "integer grid",
            lambda run: run(lambda p: sp.spectral_density(f, p, KEY, num_iters=2, num_probes=1,
                                                          grid=jnp.arange(3), sigma=0.1), P),
            TypeError, r"spectral_density: grid must have a floating dtype, got int"),
        Bad("spectral_density-sigma_zero", "spectrum.spectral_density", "sigma=0",
            lambda run: run(lambda p: sp.spectral_density(f, p, KEY, num_iters=2, num_probes=1,
                                                          grid=GRID, sigma=0.0), P),
            ValueError, r"spectral_density: sigma must be > 0, got 0.0"),
        Bad("spectral_density-f_non_scalar", "spectrum.spectral_density", "f returns a vector",
            lambda run: run(lambda p: sp.spectral_density(f_vector, p, KEY, num_iters=2,
                                                          num_probes=1, grid=GRID, sigma=0.1), P),
            ValueError, r"spectral_density: f must return a scalar"),
        Bad("spectral_density_matvec-sigma_inf", "spectrum.spectral_density_matvec", "sigma=inf",
            lambda run: run(lambda k: sp.spectral_density_matvec(
                diag_matvec, 4, k, num_iters=2, num_probes=1, grid=GRID, sigma=np.inf), KEY),
            ValueError, r"spectral_density_matvec: sigma must be finite, got inf"),
        Bad("spectral_density_matvec-grid_complex", "spectrum.spectral_density_matvec",
            "complex grid",
            lambda run: run(lambda k: sp.spectral_density_matvec(
                diag_matvec, 4, k, num_iters=2, num_probes=1, grid=GRID * 1j, sigma=0.1), KEY),
            TypeError, r"spectral_density_matvec: grid must have a floating dtype, got complex"),
        Bad("spectral_density_matvec-sigma_str", "spectrum.spectral_density_matvec",
            "sigma='0.1' (a string)",
            lambda run: run(lambda k: sp.spectral_density_matvec(
                diag_matvec, 4, k, num_iters=2, num_probes=1, grid=GRID, sigma="0.1"), KEY),
            TypeError, r"spectral_density_matvec: sigma must be a real Python float, got '0.1'"),
    ]
    return rows


BAD_INPUTS = _bad_inputs()


def _bad_params():
    params = []
    for row in BAD_INPUTS:
        params.append(pytest.param(row, eager, id=f"{row.id}-eager"))
        if row.jit:
            params.append(pytest.param(row, jitted, id=f"{row.id}-jit"))
    return params


@pytest.mark.parametrize("row, run", _bad_params())
def test_bad_input_raises(row, run):
    with pytest.raises(row.error, match=row.match) as info:
        row.call(run)
    assert type(info.value) in (ValueError, TypeError), type(info.value)
    # The message names the public function first (the module prefix is not part of it).
    assert str(info.value).startswith(row.function.split(".")[-1] + ": "), str(info.value)


def test_rows_have_unique_ids_and_cover_every_public_function():
    ids = [row.id for row in BAD_INPUTS] + [row.id for row in NAN_INPUTS]
    assert len(ids) == len(set(ids))
    covered = {row.function for row in BAD_INPUTS}
    for module, prefix in ((D, "derivatives"), (fd, "finite_diff"), (sp, "spectrum")):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not isinstance(obj, type):
                assert f"{prefix}.{name}" in covered, f"{prefix}.{name} has no bad-input row"


# ----------------------------------------------------------------------------- NaN inputs


class NanCase(NamedTuple):
    """``call()`` runs on a NaN input; ``check(result)`` holds what happens (no exception).

    ``jit=True`` cases run as ``jax.jit(call)()`` (one compilation instead of one per primitive);
    the checkers, which return Python reports, run eagerly.
    """

    id: str
    function: str
    bad_input: str
    what_happens: str
    call: Callable
    check: Callable
    jit: bool = True


def _all_nan(x):
    leaves = jax.tree_util.tree_leaves(x)
    return bool(leaves) and all(bool(np.all(np.isnan(np.asarray(a)))) for a in leaves)


def _any_nan(x):
    return any(bool(np.any(np.isnan(np.asarray(a)))) for a in jax.tree_util.tree_leaves(x))


def _nan_cross(k, n):
    """Check: NaN exactly in row and column ``k`` of an ``(n, n)`` matrix."""
    expected = np.zeros((n, n), bool)
    expected[k, :] = expected[:, k] = True
    return lambda r: np.array_equal(np.isnan(np.asarray(r)), expected)


def _nan_inputs():
    nan_x = X.at[0, 0].set(jnp.nan)
    propagates = "returns NaN (propagates; no error)"
    return [
        NanCase("nan-hvp", "derivatives.hvp", "NaN in params", propagates + " in the entries "
                "that depend on the NaN coordinate",
                lambda: D.hvp(f, NAN_P, P), lambda r: _any_nan(r)),
        NanCase("nan-hvp_v", "derivatives.hvp", "NaN in v", propagates,
                lambda: D.hvp(f, P, like(P, b=jnp.array(jnp.nan))), lambda r: _any_nan(r)),
        NanCase("nan-hessian_matrix", "derivatives.hessian_matrix", "NaN in params",
                propagates + " in the NaN coordinate's row and column, finite elsewhere",
                lambda: D.hessian_matrix(f, NAN_P), _nan_cross(2, 4)),
        NanCase("nan-jacobian_matrix", "derivatives.jacobian_matrix", "NaN in params",
                propagates, lambda: D.jacobian_matrix(f_vector, NAN_P), _any_nan),
        NanCase("nan-ggn_vp", "derivatives.ggn_vp", "NaN in inputs", propagates,
                lambda: D.ggn_vp(apply_fn, mse_mean, P, nan_x, Y, P), _all_nan),
        NanCase("nan-ggn_matrix", "derivatives.ggn_matrix", "NaN in targets",
                "finite: the GGN of a squared error does not depend on the targets",
                lambda: D.ggn_matrix(apply_fn, mse_mean, P, X, Y.at[0].set(jnp.nan)),
                lambda r: bool(np.all(np.isfinite(r)))),
        NanCase("nan-fisher_vp", "derivatives.fisher_vp", "NaN in inputs", propagates,
                lambda: D.fisher_vp(apply_logits, P, nan_x, "categorical", P), _all_nan),
        NanCase("nan-fisher_matrix", "derivatives.fisher_matrix", "NaN in params", propagates,
                lambda: D.fisher_matrix(apply_logits, NAN_P, X, "categorical"), _all_nan),
        NanCase("nan-mc_fisher_matrix", "derivatives.mc_fisher_matrix", "NaN in inputs",
                propagates, lambda: D.mc_fisher_matrix(apply_fn, P, nan_x, "gaussian", KEY, 2),
                _all_nan),
        NanCase("nan-mc_fisher_vp", "derivatives.mc_fisher_vp", "NaN in params", propagates,
                lambda: D.mc_fisher_vp(apply_fn, NAN_P, X, "bernoulli", KEY, 2, P), _all_nan),
        NanCase("nan-empirical_fisher_vp", "derivatives.empirical_fisher_vp", "NaN in targets",
                propagates, lambda: D.empirical_fisher_vp(loss_fn, P, (X, Y.at[0].set(jnp.nan)),
                                                          P), _all_nan),
        NanCase("nan-empirical_fisher_matrix", "derivatives.empirical_fisher_matrix",
                "NaN in params", propagates,
                lambda: D.empirical_fisher_matrix(loss_fn, NAN_P, (X, Y)), _all_nan),
        NanCase("nan-fd.grad", "finite_diff.grad", "NaN in params",
                propagates + " (every entry: each difference evaluates f at the NaN point)",
                lambda: fd.grad(f, NAN_P), _all_nan),
        NanCase("nan-fd.richardson_grad", "finite_diff.richardson_grad", "NaN in params",
                propagates + " (estimate and error estimate)",
                lambda: fd.richardson_grad(f, NAN_P), _all_nan),
        NanCase("nan-fd.hessian", "finite_diff.hessian", "NaN in params", propagates,
                lambda: fd.hessian(f, NAN_P, source="value"), _all_nan),
        NanCase("nan-fd.hvp", "finite_diff.hvp", "NaN in v",
                propagates + " in the entries the NaN direction reaches (for this separable f "
                "only the NaN leaf; the step is chosen as if |v| = 1)",
                lambda: fd.hvp(f, P, like(P, b=jnp.array(jnp.nan))),
                lambda r: bool(np.isnan(r["b"])) and bool(np.all(np.isfinite(r["w"])))),
        NanCase("nan-fd.check_grad", "finite_diff.check_grad", "NaN in params",
                "report.passed is False, max_rel_error = inf (a NaN entry counts as the worst "
                "failure)", lambda: fd.check_grad(f, NAN_P),
                lambda r: r.passed is False and r.max_rel_error == np.inf, jit=False),
        NanCase("nan-fd.check_hessian", "finite_diff.check_hessian", "NaN in params",
                "report.passed is False, max_rel_error = inf",
                lambda: fd.check_hessian(f, NAN_P),
                lambda r: r.passed is False and r.max_rel_error == np.inf, jit=False),
        NanCase("nan-fd.step_sweep", "finite_diff.step_sweep", "NaN in params",
                "errors are NaN for every step (no error)",
                lambda: fd.step_sweep(f, NAN_P, steps=[1e-2, 1e-4]), lambda r: _all_nan(r[1]),
                jit=False),
        NanCase("nan-fd.plot_step_sweep", "finite_diff.plot_step_sweep", "NaN errors",
                "plotted as gaps (returns the figure; no error)",
                lambda: fd.plot_step_sweep(np.array([1e-2, 1e-3]), np.array([1e-4, np.nan])),
                lambda r: r[1].get_lines()[0].get_xydata().shape == (2, 2), jit=False),
        NanCase("nan-lanczos", "spectrum.lanczos", "matvec returns NaN",
                propagates + " (alphas and betas)", lambda: sp.lanczos(nan_matvec, 4, 3, KEY),
                lambda r: _any_nan(r[0])),
        NanCase("nan-top_eigenvalues", "spectrum.top_eigenvalues", "NaN in params",
                propagates + " (eigenvalues and eigenvectors)",
                lambda: sp.top_eigenvalues(f, NAN_P, 2, key=KEY), lambda r: _all_nan(r[0])),
        NanCase("nan-top_eigenvalues_matvec", "spectrum.top_eigenvalues_matvec",
                "matvec returns NaN", propagates,
                lambda: sp.top_eigenvalues_matvec(nan_matvec, 4, 1, key=KEY), _all_nan),
        NanCase("nan-power_iteration", "spectrum.power_iteration", "NaN in params",
                propagates + "; the loop stops at once on a non-finite estimate",
                lambda: sp.power_iteration(f, NAN_P, KEY), lambda r: _all_nan(r)),
        NanCase("nan-power_iteration_matvec", "spectrum.power_iteration_matvec",
                "matvec returns NaN", propagates + "; the loop stops at once",
                lambda: sp.power_iteration_matvec(nan_matvec, 4, KEY), lambda r: _all_nan(r)),
        NanCase("nan-hutchinson_trace", "spectrum.hutchinson_trace", "NaN in params",
                propagates + " (estimate and standard error)",
                lambda: sp.hutchinson_trace(f, NAN_P, KEY, num_samples=4), _all_nan),
        NanCase("nan-hutchinson_trace_matvec", "spectrum.hutchinson_trace_matvec",
                "matvec returns NaN", propagates,
                lambda: sp.hutchinson_trace_matvec(nan_matvec, 4, KEY, num_samples=4), _all_nan),
        NanCase("nan-slq_nodes_weights", "spectrum.slq_nodes_weights", "NaN in params",
                propagates, lambda: sp.slq_nodes_weights(f, NAN_P, KEY, num_iters=2,
                                                         num_probes=1), lambda r: _all_nan(r[0])),
        NanCase("nan-slq_nodes_weights_matvec", "spectrum.slq_nodes_weights_matvec",
                "matvec returns NaN", propagates,
                lambda: sp.slq_nodes_weights_matvec(nan_matvec, 4, KEY, num_iters=2,
                                                    num_probes=1), lambda r: _all_nan(r[0])),
        NanCase("nan-spectral_density", "spectrum.spectral_density", "NaN in params",
                propagates + " at every grid point",
                lambda: sp.spectral_density(f, NAN_P, KEY, num_iters=2, num_probes=1, grid=GRID,
                                            sigma=0.5), _all_nan),
        NanCase("nan-spectral_density_matvec", "spectrum.spectral_density_matvec",
                "NaN in grid", "NaN at that grid point only; finite elsewhere",
                lambda: sp.spectral_density_matvec(diag_matvec, 4, KEY, num_iters=4, num_probes=1,
                                                   grid=GRID.at[2].set(jnp.nan), sigma=0.5),
                lambda r: bool(np.isnan(r[2])) and bool(np.all(np.isfinite(np.delete(r, 2))))),
    ]


NAN_INPUTS = _nan_inputs()


@pytest.mark.parametrize("case", NAN_INPUTS, ids=[c.id for c in NAN_INPUTS])
def test_nan_input(case):
    result = jax.jit(case.call)() if case.jit else case.call()
    assert case.check(result), f"{case.function}: {case.bad_input}: got {result}"


def test_power_iteration_stops_on_nan():
    """A NaN estimate ends the loop at once instead of running all ``num_iters`` products."""
    calls = []

    def counting(v):
        jax.debug.callback(lambda: calls.append(1))
        return nan_matvec(v)

    sp.power_iteration_matvec(counting, 4, KEY, num_iters=50)
    jax.effects_barrier()
    assert len(calls) == 1, len(calls)
