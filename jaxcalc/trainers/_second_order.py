"""Pieces shared by the second-order trainers: damped solves, truncated CG, Armijo line search,
Levenberg-Marquardt damping. They work on flat vectors (``ravel_pytree`` order): dense matrices
only exist at this edge, for models small enough to hold one.
"""

from __future__ import annotations

from typing import Callable, Tuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import cho_factor, cho_solve

from jaxcalc._types import Array

ARMIJO_C1 = 1e-4        # sufficient-decrease constant (Nocedal & Wright, §3.1)
BACKTRACK = 0.5         # step shrink factor per backtrack
MAX_BACKTRACKS = 40     # 0.5**40 ≈ 1e-12: past that the step is taken as zero
LM_SHRINK = 2.0 / 3.0   # Levenberg-Marquardt rule (Martens, 2010): ρ > 3/4 → λ·2/3
LM_GROW = 1.5           #                                           ρ < 1/4 → λ·3/2
LM_REJECT_GROW = 4.0    # a rejected step (ρ ≤ 0): λ·4 before the next try
LM_FLOOR = 1e-8         # damping never adapts below this (relative to the curvature scale 1)


def _spectral_floor(eigs: Array) -> Array:
    r""":math:`\tau = \sqrt{\epsilon}\,\max(1, \max_i |\lambda_i|)`: the smallest curvature kept."""
    return jnp.sqrt(jnp.finfo(eigs.dtype).eps) * jnp.maximum(1.0, jnp.max(jnp.abs(eigs)))


def damped_solve(matrix: Array, g: Array, damping: Array) -> Tuple[Array, Array]:
    r"""Solve :math:`(C + \lambda I) d = -g` by Cholesky; returns ``(d, λ_used)``.

    The Cholesky solve is kept when its relative residual
    :math:`\|(C + \lambda I) d + g\| / \|g\|` is at most :math:`\sqrt\epsilon`. That fails when
    :math:`C + \lambda I` is not positive definite (an indefinite Hessian: the factor is NaN) and
    when it is numerically singular (a rank-deficient Fisher or Hessian with λ = 0, whose
    round-off pivots can be tiny and positive: the factor is finite but ``d`` is ~1e16 long and
    meaningless). Then the damping is raised to
    :math:`\lambda' = 2\max(-\lambda_{min}(C), 0) + \max(\lambda, \tau)` with
    :math:`\tau = \sqrt{\epsilon}\,\max(1, \|C\|_2)`. The system is then positive definite,
    so :math:`g^\top d < 0`: the step never points uphill. Along the most negative eigenvector
    the damped curvature is :math:`|\lambda_{min}| + \max(\lambda, \tau)`, as in saddle-free
    Newton, not just τ: a shift of only :math:`-\lambda_{min} + \tau` would leave the system
    nearly singular there and the step about :math:`\|g\|/\tau \approx 10^8\|g\|` long. For
    a positive semi-definite but singular ``C`` (λ_min ≈ 0) the shift is τ alone, which gives
    the minimum-norm solution when ``g`` lies in the range of ``C``.

    Args:
      matrix: ``(n, n)`` symmetric curvature ``C``.
      g: ``(n,)`` gradient.
      damping: scalar λ ≥ 0.

    Returns:
      ``(d, λ_used)``: ``(n,)`` direction and the scalar damping actually used.
    """
    n = g.shape[0]
    eye = jnp.eye(n, dtype=matrix.dtype)
    tol = jnp.sqrt(jnp.finfo(matrix.dtype).eps) * jnp.linalg.norm(g)

    def chol_solve(lam):
        damped = matrix + lam * eye
        d = -cho_solve(cho_factor(damped, lower=True), g)
        return d, jnp.linalg.norm(damped @ d + g) <= tol  # False for NaN / inf as well

    d, ok = chol_solve(damping)

    def shifted(_):
        eigs = jnp.linalg.eigvalsh(matrix)
        lam = 2.0 * jnp.maximum(-eigs[0], 0.0) + jnp.maximum(damping, _spectral_floor(eigs))
        return chol_solve(lam)[0], lam.astype(damping.dtype)

    return lax.cond(ok, lambda _: (d, damping), shifted, None)


def absolute_matrix(matrix: Array) -> Array:
    r""":math:`|C| = V \max(|\Lambda|, \tau) V^\top` from the eigendecomposition
    :math:`C = V\Lambda V^\top`.

    The curvature of saddle-free Newton (Dauphin et al., "Identifying and attacking the saddle
    point problem in high-dimensional non-convex optimization", 2014): negative-curvature
    directions are followed *down*, so the iteration is repelled from saddle points. Eigenvalues
    are floored at :math:`\tau = \sqrt{\epsilon}\max(1, \max|\Lambda|)`, so :math:`|C|` is positive
    definite even for a singular ``C``.

    Args:
      matrix: ``(n, n)`` symmetric.

    Returns:
      ``(n, n)`` symmetric positive definite.
    """
    eigs, vecs = jnp.linalg.eigh(matrix)
    scale = jnp.maximum(jnp.abs(eigs), _spectral_floor(eigs))
    return (vecs * scale) @ vecs.T


def truncated_cg(matvec: Callable[[Array], Array], g: Array, damping: Array,
                 maxiter: int) -> Tuple[Array, Array, Array]:
    r"""Hessian-free Newton direction: truncated CG on :math:`(C + \lambda I) d = -g`.

    Stops when :math:`\|r\| \le \min(0.5, \sqrt{\|g\|})\,\|g\|` (a superlinear forcing sequence,
    Nocedal & Wright Alg. 7.1), after ``maxiter`` iterations, or on *negative curvature*
    (:math:`p^\top (C + \lambda I) p \le 0`): then it returns the last iterate, or :math:`-g`
    if that happens on the first iteration, which is always a descent direction.

    Returns:
      ``(d, iterations, hit_negative_curvature)``.
    """
    g_norm = jnp.linalg.norm(g)
    tol = jnp.minimum(0.5, jnp.sqrt(g_norm)) * g_norm
    op = lambda v: matvec(v) + damping * v

    def cond(carry):
        _, _, _, _, it, done, _ = carry
        return (~done) & (it < maxiter)

    def body(carry):
        z, r, p, rs, it, _, _ = carry
        bp = op(p)
        curv = jnp.vdot(p, bp)
        negative = curv <= 0
        alpha = rs / jnp.where(negative, 1.0, curv)
        z_new = z + alpha * p
        r_new = r + alpha * bp
        rs_new = jnp.vdot(r_new, r_new)
        converged = jnp.sqrt(rs_new) <= tol
        p_new = -r_new + (rs_new / rs) * p
        z_out = jnp.where(negative, jnp.where(it == 0, -g, z), z_new)
        return (z_out, jnp.where(negative, r, r_new), jnp.where(negative, p, p_new),
                jnp.where(negative, rs, rs_new), it + 1, negative | converged, negative)

    zero = jnp.zeros_like(g)
    rs0 = jnp.vdot(g, g)
    init = (zero, g, -g, rs0, jnp.array(0, jnp.int32), rs0 == 0, jnp.array(False))
    d, _, _, _, iters, _, negative = lax.while_loop(cond, body, init)
    return d, iters, negative


def armijo(f: Callable[[Array], Array], x: Array, d: Array, f0: Array, slope: Array,
           t0) -> Tuple[Array, Array]:
    r"""Backtracking line search in ``lax.while_loop`` (Armijo 1966).

    Finds the first :math:`t = t_0 \beta^k` with
    :math:`f(x + t d) \le f_0 + c_1 t\, g^\top d` and a finite value. If none is found in
    ``MAX_BACKTRACKS`` tries the step is 0: the loss never goes up.

    Close to a minimizer with :math:`f^* \ne 0` the decrease a step can make falls below the
    round-off of the loss (:math:`\epsilon |f^*|`): computed values no longer tell better points
    from worse, the search then accepts only steps that happen not to raise the computed loss,
    and progress stops near :math:`\|\theta - \theta^*\| \sim \sqrt{\epsilon}` (in the
    curvature's units). That is the price of monotonicity; without the line search Newton
    converges to full precision.

    Returns:
      ``(t, f(x + t d))``; ``t = 0`` when the search failed.
    """
    t0 = jnp.asarray(t0, f0.dtype)

    def bad(t, ft):
        return ~(jnp.isfinite(ft) & (ft <= f0 + ARMIJO_C1 * t * slope))

    def cond(carry):
        t, ft, k = carry
        return bad(t, ft) & (k < MAX_BACKTRACKS)

    def body(carry):
        t, _, k = carry
        t = t * BACKTRACK
        return t, f(x + t * d), k + 1

    t, ft, _ = lax.while_loop(cond, body, (t0, f(x + t0 * d), jnp.array(0, jnp.int32)))
    accepted = ~bad(t, ft)
    return jnp.where(accepted, t, 0.0), jnp.where(accepted, ft, f0)


def levenberg_marquardt(damping: Array, actual: Array, predicted: Array,
                        loss: Array) -> Tuple[Array, Array, Array]:
    r"""Adapt λ from the reduction ratio :math:`\rho = \Delta f / \Delta m`, rejecting bad steps.

    :math:`\Delta f = f(\theta + \delta) - f(\theta)` is the actual change of the loss and
    :math:`\Delta m = g^\top\delta + \frac12 \delta^\top C \delta` the change the quadratic model
    predicted. A step with :math:`\rho \le 0` (the loss went up, or is not finite — a failed line
    search is passed as NaN) is *rejected* and λ is multiplied by ``LM_REJECT_GROW``, as in
    Marquardt's algorithm (1963; Nocedal & Wright, §10.3): the caller keeps the old parameters.
    An accepted step adapts λ by Martens' (2010) rule: :math:`\rho < 1/4` (the model overestimates
    the decrease) → λ·3/2; :math:`\rho > 3/4` (the model is trustworthy) → λ·2/3, never below
    ``LM_FLOOR``. When :math:`|\Delta m| \le \epsilon |f(\theta)|` both changes are round-off (at a
    minimizer, where ρ would be noise): ρ = 1 and the step is accepted.

    Args:
      damping: scalar λ.
      actual: scalar Δf.
      predicted: scalar Δm.
      loss: scalar f(θ), whose magnitude sets the round-off level.

    Returns:
      ``(new_damping, rho, accept)``; λ and ρ in the dtype of ``damping``, ``accept`` a bool.
    """
    resolvable = jnp.abs(predicted) > jnp.finfo(jnp.result_type(loss)).eps * jnp.abs(loss)
    rho = jnp.where(resolvable, actual / jnp.where(resolvable, predicted, 1.0), 1.0)
    rho = jnp.where(jnp.isfinite(actual) & jnp.isfinite(rho), rho, -1.0)
    accept = rho > 0
    base = jnp.maximum(damping, LM_FLOOR)
    shrink = jnp.maximum(damping * LM_SHRINK, LM_FLOOR)
    adapted = jnp.where(rho < 0.25, base * LM_GROW, jnp.where(rho > 0.75, shrink, damping))
    new = jnp.where(accept, adapted, base * LM_REJECT_GROW)
    return new.astype(damping.dtype), rho.astype(damping.dtype), accept
