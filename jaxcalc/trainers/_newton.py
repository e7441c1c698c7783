"""Newton's method and its safeguarded variants: damping, line search, Gauss-Newton,
saddle-free |H|, and Hessian-free truncated CG."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxcalc import derivatives
from jaxcalc._types import LossFn
from jaxcalc._validate import check_batch, check_callable, check_choice
from jaxcalc.trainers._base import (Trainer, check_damping, check_flag, check_int,
                                    check_learning_rate, check_state, float_dtype,
                                    value_and_grad)
from jaxcalc.trainers._second_order import (absolute_matrix, armijo, damped_solve,
                                            levenberg_marquardt, truncated_cg)

CURVATURES = ("hessian", "gauss_newton", "saddle_free")
SOLVERS = ("dense", "cg")


def newton(loss_fn: LossFn, *, learning_rate: float = 1.0, damping: float = 0.0,
           solver: str = "dense", curvature: str = "hessian", line_search: bool = True,
           adapt_damping: bool = False, cg_maxiter: int = 50, apply_fn: Callable | None = None,
           loss_of_output: Callable | None = None) -> Trainer:
    r"""Damped Newton steps: solve :math:`(C + \lambda I)\, d = -g`, then :math:`\theta \leftarrow \theta + t d`.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar``.
      learning_rate: the first step tried, :math:`t_0` (1 = the full Newton step); a constant.
      damping: λ ≥ 0 (Levenberg-Marquardt / Tikhonov damping).
      solver: ``"dense"`` — build the n×n curvature (fine to n ≈ 5k) and solve by Cholesky; when
        :math:`C + \lambda I` is not positive definite, λ is raised to
        :math:`2|\lambda_{min}(C)| + \max(\lambda, \tau)` (τ ≈ √ε‖C‖), so :math:`d` is always
        a descent direction of moderate length (see ``_second_order.damped_solve``); the
        ``"damping"`` metric reports the λ used. ``"cg"`` — Hessian-free: truncated
        CG on curvature-vector products (Martens, 2010) that stops on negative curvature.
      curvature: ``"hessian"``; ``"gauss_newton"`` — the GGN :math:`J^\top H_\ell J` (PSD for convex
        losses; needs ``apply_fn(params, inputs)`` and ``loss_of_output(outputs, targets)`` with
        ``loss_fn(p, (x, y)) == loss_of_output(apply_fn(p, x), y)``); ``"saddle_free"`` — |H| from
        the eigendecomposition (Dauphin et al., 2014; dense only), repelled by saddles.
      line_search: backtracking Armijo search from :math:`t_0` in ``lax.while_loop``; the loss
        never increases (a failed search takes no step). Without it the step is always
        :math:`t_0 d`.
      adapt_damping: Levenberg-Marquardt adaptation of λ from the reduction ratio ρ of the
        quadratic model :math:`g^\top\delta + \frac12\delta^\top C\delta` (``C = |H|`` for
        saddle-free) over the step taken; a step with ρ ≤ 0 is rejected (params unchanged,
        ``step_size`` 0) and λ grows ×4 (Marquardt, 1963).
      cg_maxiter: CG iterations per step.

    State: ``{"damping": λ}``. Metrics: ``loss``, ``grad_norm``, ``damping`` (the λ used),
    ``step_size`` (t), ``cg_iters`` (cg), ``rho`` (adapt_damping).
    """
    check_callable("newton", "loss_fn", loss_fn)
    check_learning_rate("newton", learning_rate, allow_schedule=False)
    check_damping("newton", damping)
    check_choice("newton", "solver", solver, SOLVERS)
    check_choice("newton", "curvature", curvature, CURVATURES)
    check_flag("newton", "line_search", line_search)
    check_flag("newton", "adapt_damping", adapt_damping)
    if curvature == "saddle_free" and solver == "cg":
        raise ValueError("newton: curvature='saddle_free' needs solver='dense' (|H| needs the "
                         "eigendecomposition); solver='cg' already handles negative curvature")
    if curvature == "gauss_newton" and (apply_fn is None or loss_of_output is None):
        raise ValueError("newton: curvature='gauss_newton' needs apply_fn and loss_of_output")
    if curvature == "gauss_newton":
        check_callable("newton", "apply_fn", apply_fn)
        check_callable("newton", "loss_of_output", loss_of_output)
    cg_maxiter = check_int("newton", "cg_maxiter", cg_maxiter, 1)

    def init(params):
        return {"damping": jnp.asarray(damping, float_dtype("newton.init", params))}

    def step(params, state, batch):
        batch, _ = check_batch("newton.step", batch)
        check_state("newton.step", state, ("damping",))
        if curvature == "gauss_newton" and len(batch) < 2:
            raise ValueError("newton.step: curvature='gauss_newton' needs batch = (inputs, "
                             "targets, ...) for apply_fn and loss_of_output, got "
                             f"{len(batch)} array(s)")
        loss, grads = value_and_grad("newton.step", loss_fn, params, batch)
        flat_p, unravel = ravel_pytree(params)
        flat_g = ravel_pytree(grads)[0]
        # The loss may be wider than the params (float64 data, float32 params): steps are taken
        # in the params' dtype, so they keep it (and a scan over steps its carry type).
        f_flat = lambda x: loss_fn(unravel(x.astype(flat_p.dtype)), batch)
        lam = state["damping"]
        metrics = {}

        if solver == "dense":
            if curvature == "gauss_newton":
                C = derivatives.ggn_matrix(apply_fn, loss_of_output, params, batch[0], batch[1])
            else:
                C = derivatives.hessian_matrix(lambda p: loss_fn(p, batch), params)
            if curvature == "saddle_free":
                C = absolute_matrix(C)  # the model that is minimized, so ρ below uses |H| too
            d, lam_used = damped_solve(C, flat_g, lam)
            curvature_mv = lambda v: C @ v
        else:
            if curvature == "gauss_newton":  # linear in v: linearized once, outside the CG loop
                ggn_flat = lambda v: ravel_pytree(derivatives.ggn_vp(
                    apply_fn, loss_of_output, params, batch[0], batch[1], unravel(v)))[0]
                _, curvature_mv = jax.linearize(ggn_flat, jnp.zeros_like(flat_p))
            else:
                _, hvp_lin = jax.linearize(jax.grad(f_flat), flat_p)
                curvature_mv = hvp_lin
            d, iters, _ = truncated_cg(curvature_mv, flat_g, lam, cg_maxiter)
            lam_used = lam
            metrics["cg_iters"] = iters

        slope = jnp.vdot(flat_g, d)
        uphill = ~(slope < 0)
        d = jnp.where(uphill, -flat_g, d)  # only when g = 0 or solves failed: steepest descent
        slope = jnp.where(uphill, -jnp.vdot(flat_g, flat_g), slope)
        if line_search:
            t, f_new = armijo(f_flat, flat_p, d, loss, slope, learning_rate)
        else:
            t = jnp.asarray(learning_rate, loss.dtype)
            f_new = f_flat(flat_p + t * d) if adapt_damping else loss

        new_lam = lam
        if adapt_damping:
            delta = t * d
            predicted = jnp.vdot(flat_g, delta) + 0.5 * jnp.vdot(delta, curvature_mv(delta))
            actual = jnp.where(t > 0, f_new - loss, jnp.nan)  # t = 0: the line search failed
            new_lam, metrics["rho"], accept = levenberg_marquardt(jnp.maximum(lam, lam_used),
                                                                  actual, predicted, loss)
            t = jnp.where(accept, t, jnp.zeros_like(t))
        metrics.update(loss=loss, grad_norm=jnp.linalg.norm(flat_g), damping=lam_used,
                       step_size=t.astype(flat_p.dtype))
        new_flat = (flat_p + t * d).astype(flat_p.dtype)
        return unravel(new_flat), {"damping": new_lam}, metrics

    return Trainer(init, step)
