"""Natural gradient descent: precondition the gradient with the (damped) Fisher matrix."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
import optax

from jaxcalc import derivatives
from jaxcalc._types import LossFn, PRNGKey
from jaxcalc._validate import check_batch, check_callable, check_choice, check_key
from jaxcalc.trainers._base import (Trainer, check_damping, check_flag, check_int,
                                    check_learning_rate, check_real, check_state, float_dtype,
                                    grad_norm, value_and_grad)
from jaxcalc.trainers._second_order import damped_solve, levenberg_marquardt

FISHERS = ("empirical", "true", "mc")
SOLVERS = ("dense", "cg")


def natural_gradient(loss_fn: LossFn, learning_rate: float, *, damping: float = 1e-4,
                     fisher: str = "empirical", solver: str = "dense",
                     apply_fn: Callable | None = None, likelihood: str | None = None,
                     adapt_damping: bool = False, cg_maxiter: int = 50,
                     cg_tol: float | None = None, mc_samples: int = 1,
                     key: PRNGKey | None = None) -> Trainer:
    r"""Natural gradient descent (Amari, 1998): :math:`\theta \leftarrow \theta - \eta (F + \lambda I)^{-1} g`.

    The seeds' ``NaturalGradientOptimizer`` (seed 002, slide 11) with exact, jit-compiled pieces.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar`` mean loss; ``batch = (inputs, targets, ...)``.
      learning_rate: η > 0, a constant (the state keeps no step count for a schedule).
      damping: λ ≥ 0 added to the Fisher's diagonal (the seed's 1e-4). The Fisher has none of
        the curvature of a regularizer inside ``loss_fn``: with an L2 term :math:`\frac\alpha2
        \|\theta\|^2` the iteration is stable only for :math:`\lambda \ge \eta\alpha/2`.
      fisher: ``"empirical"`` — mean of per-example gradient outer products (the seed's choice);
        ``"true"`` — the Fisher of the model's predictive distribution,
        :math:`\frac1N\sum_i J_i^\top \Lambda_i J_i`; ``"mc"`` — its Monte Carlo estimate with
        ``mc_samples`` labels per input drawn from the model. ``"true"``/``"mc"`` need
        ``apply_fn(params, inputs)`` and ``likelihood`` in {"categorical", "bernoulli", "gaussian"}.
      solver: ``"dense"`` (Cholesky of the n×n matrix; raises the damping if it is singular) or
        ``"cg"`` (matrix-free ``jax.scipy.sparse.linalg.cg`` on Fisher-vector products, at most
        ``cg_maxiter`` iterations, warm-free, to the relative residual ``cg_tol``).
      cg_tol: relative residual at which CG stops; default 1e-5 for float32 parameters and
        1e-10 for float64. A stop on a tolerance is a discontinuity: runs whose sums are ordered
        differently (one device vs a sharded batch) can stop one iteration apart and differ by
        about ``cg_tol``; the float64 default keeps that below 1e-9.
      adapt_damping: adapt λ by the Levenberg-Marquardt rule from the reduction ratio ρ of the
        quadratic model :math:`m(\delta) = g^\top\delta + \frac12 \delta^\top F \delta`; a step
        that does not decrease the batch loss (ρ ≤ 0) is rejected (params unchanged,
        ``step_size`` 0) and λ grows ×4. Costs one extra loss evaluation per step.
      key: PRNG key for ``fisher="mc"`` (default ``PRNGKey(0)``), split every step.

    State: ``{"damping": λ, "key": key}``. Metrics: ``loss``, ``grad_norm``, ``damping`` (the λ
    used), ``step_size`` (η), and ``rho`` when ``adapt_damping``.
    """
    check_callable("natural_gradient", "loss_fn", loss_fn)
    check_learning_rate("natural_gradient", learning_rate, allow_schedule=False)
    check_damping("natural_gradient", damping)
    check_choice("natural_gradient", "fisher", fisher, FISHERS)
    check_choice("natural_gradient", "solver", solver, SOLVERS)
    if fisher in ("true", "mc"):
        if apply_fn is None or likelihood is None:
            raise ValueError(f"natural_gradient: fisher={fisher!r} needs apply_fn and likelihood")
        check_callable("natural_gradient", "apply_fn", apply_fn)
        check_choice("natural_gradient", "likelihood", likelihood, derivatives.LIKELIHOODS)
    check_flag("natural_gradient", "adapt_damping", adapt_damping)
    cg_maxiter = check_int("natural_gradient", "cg_maxiter", cg_maxiter, 1)
    if cg_tol is not None and not check_real("natural_gradient", "cg_tol", cg_tol) > 0:
        raise ValueError(f"natural_gradient: cg_tol must be > 0 or None, got {cg_tol!r}")
    mc_samples = check_int("natural_gradient", "mc_samples", mc_samples, 1)
    if key is not None:
        check_key("natural_gradient", "key", key)
    base_key = jax.random.PRNGKey(0) if key is None else key

    def init(params):
        dtype = float_dtype("natural_gradient.init", params)
        return {"damping": jnp.asarray(damping, dtype), "key": base_key}

    def fisher_vp(params, batch, key, v):
        if fisher == "empirical":
            return derivatives.empirical_fisher_vp(loss_fn, params, batch, v)
        if fisher == "true":
            return derivatives.fisher_vp(apply_fn, params, batch[0], likelihood, v)
        return derivatives.mc_fisher_vp(apply_fn, params, batch[0], likelihood, key, mc_samples, v)

    def fisher_matrix(params, batch, key):
        if fisher == "empirical":
            return derivatives.empirical_fisher_matrix(loss_fn, params, batch)
        if fisher == "true":
            return derivatives.fisher_matrix(apply_fn, params, batch[0], likelihood)
        return derivatives.mc_fisher_matrix(apply_fn, params, batch[0], likelihood, key, mc_samples)

    def step(params, state, batch):
        batch, _ = check_batch("natural_gradient.step", batch)
        check_state("natural_gradient.step", state, ("damping", "key"))
        loss, grads = value_and_grad("natural_gradient.step", loss_fn, params, batch)
        key, sample_key = jax.random.split(state["key"])
        lam = state["damping"]
        if solver == "dense":
            flat_g, unravel = ravel_pytree(grads)
            F = fisher_matrix(params, batch, sample_key)
            d_flat, lam_used = damped_solve(F, flat_g, lam)
            direction = unravel(d_flat)
            curvature_vp = lambda v: unravel(F @ ravel_pytree(v)[0])
        else:
            # F·v is linear in v: linearizing it once runs the forward pass (and the label
            # sampling) here, not again in every CG iteration.
            zero = jax.tree_util.tree_map(jnp.zeros_like, params)
            _, curvature_vp = jax.linearize(lambda v: fisher_vp(params, batch, sample_key, v), zero)
            damped = lambda v: optax.tree_utils.tree_add_scale(curvature_vp(v), lam, v)
            tol = cg_tol if cg_tol is not None else (1e-10 if lam.dtype == jnp.float64 else 1e-5)
            solution, _ = jax.scipy.sparse.linalg.cg(damped, grads, tol=tol,
                                                     maxiter=cg_maxiter)
            direction = optax.tree_utils.tree_scale(-1.0, solution)
            lam_used = lam
        lr = jnp.asarray(learning_rate, lam.dtype)
        delta = optax.tree_utils.tree_scale(lr, direction)
        new_params = optax.apply_updates(params, delta)  # keeps each leaf's dtype
        metrics = {"loss": loss, "grad_norm": grad_norm(grads), "damping": lam_used, "step_size": lr}
        new_lam = lam
        if adapt_damping:
            predicted = optax.tree_utils.tree_vdot(grads, delta) + 0.5 * optax.tree_utils.tree_vdot(
                delta, curvature_vp(delta))
            actual = loss_fn(new_params, batch) - loss
            new_lam, metrics["rho"], accept = levenberg_marquardt(jnp.maximum(lam, lam_used),
                                                                  actual, predicted, loss)
            new_params = optax.tree_utils.tree_where(accept, new_params, params)
            metrics["step_size"] = jnp.where(accept, lr, jnp.zeros_like(lr))
        return new_params, {"damping": new_lam, "key": key}, metrics

    return Trainer(init, step)
