r"""Curvature spectra from symmetric matrix-vector products: Lanczos, eigenpairs, trace, density.

Everything here is matrix-free and works on any symmetric linear operator — the Hessian, a
Gauss-Newton matrix, a Fisher. Two forms of each estimator, by a fixed naming rule:

* ``name(f, params, ...)`` acts on the Hessian of the scalar ``f`` at ``params`` through
  :func:`jaxcalc.derivatives.hvp`; vectors are pytrees like ``params``.
* ``name_matvec(matvec, dim, ...)`` acts on a flat operator ``matvec: (dim,) -> (dim,)``. Use
  :func:`ravel_matvec` to flatten any pytree product (``lambda v: ggn_vp(..., v)``) into one.

Iteration counts, probe counts and ``k`` are static Python integers; keys are explicit. Nothing
here jits itself: wrap the call in ``jax.jit`` (closing over ``f``/``matvec`` and the integers).

Convention for Lanczos (:func:`lanczos`): after ``m = num_iters`` steps with orthonormal basis
rows ``q_0, ..., q_{m-1}``, the symmetric tridiagonal matrix :math:`T = Q A Q^\top` has
``T[j, j] = alphas[j]`` and ``T[j, j+1] = T[j+1, j] = betas[j]`` for ``j < m - 1``. The last entry
``betas[m-1]`` is the norm of the final residual, :math:`A Q^\top = Q^\top T + \beta_{m-1}
r\, e_{m-1}^\top` with :math:`\|r\| = 1`; it is not part of ``T`` but bounds the Ritz residuals
(:math:`\|A y_i - \theta_i y_i\| = \beta_{m-1} |s_{m-1,i}|`).
"""

from __future__ import annotations

import math
from typing import Callable, List, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxcalc._types import Array, Params, PRNGKey, PyTree
from jaxcalc._validate import (abstract_call, check_callable, check_choice, check_finite,
                               check_float_dtype, check_floating, check_floating_leaves,
                               check_key, check_ndim, check_positive, check_real_number,
                               check_same_structure, check_scalar_function)
from jaxcalc.derivatives import hvp

Matvec = Callable[[Array], Array]

# A Lanczos residual at most this many machine epsilons times the largest ||A q_j|| seen so far
# counts as a breakdown (an invariant Krylov subspace): beta is set to 0 and the iteration goes on
# from a new direction orthogonal to the basis (see _restart_direction). With full
# reorthogonalization the restart keeps T = Q A Q^T exact, so all Ritz values stay genuine and
# multiple eigenvalues are found once the basis is large enough.
_BREAKDOWN_EPS_FACTOR = 100.0

_TRACE_DISTRIBUTIONS = ("rademacher", "gaussian")


# ----------------------------------------------------------------------------- helpers


def _default_float():
    """float64 when ``jax_enable_x64`` is on, else float32 (JAX's default floating dtype)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _check_int(fn: str, name: str, value, low: int, high: int | None = None, why: str = "") -> int:
    """Raise ValueError unless ``value`` is a Python integer in ``[low, high]``; return it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be a Python int (static), got {value!r}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        hint = f" ({why})" if why else ""
        raise ValueError(f"{fn}: {name} must be {bound}{hint}, got {value}")
    return value


def _check_static_float(fn: str, name: str, value) -> float:
    """``float(value)`` for a static real number; TypeError for a traced or non-real value."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(f"{fn}: {name} must be a static Python float, got a traced value")
    if np.shape(value) != ():
        raise ValueError(f"{fn}: {name} must be a real Python float, got an array of shape "
                         f"{np.shape(value)}")
    return check_real_number(fn, name, value, "a real Python float")


def _check_matvec(fn: str, matvec: Matvec, dim: int, dtype) -> None:
    """Raise unless ``matvec`` maps a ``(dim,)`` vector to a real floating ``(dim,)`` vector."""
    check_callable(fn, "matvec", matvec, f"matvec(v) -> v' mapping ({dim},) to ({dim},)")
    out = abstract_call(fn, "matvec(v)", matvec, (jax.ShapeDtypeStruct((dim,), dtype),), ("v",))
    shape = getattr(out, "shape", None)
    if shape != (dim,):
        raise ValueError(f"{fn}: matvec must map a ({dim},) vector to a ({dim},) vector, "
                         f"got output {out}")
    check_floating(fn, "matvec(v)", out)


def _matvec_setup(fn: str, matvec: Matvec, dim, dtype):
    """Validate ``dim``/``dtype``/``matvec`` of a ``*_matvec`` function; return ``(dim, dtype)``."""
    dim = _check_int(fn, "dim", dim, 1)
    if dtype is None:
        dtype = _default_float()
    else:
        dtype = jax.dtypes.canonicalize_dtype(check_float_dtype(fn, dtype))
    _check_matvec(fn, matvec, dim, dtype)
    return dim, dtype


def _hessian_operator(fn: str, f: Callable[[Params], Array], params: Params):
    """Flat Hessian product of the scalar ``f`` at ``params``: ``(matvec, dim, dtype, unravel)``."""
    flat, unravel = ravel_pytree(params)
    check_floating(fn, "params", flat)  # all leaves integer (or complex)
    check_floating_leaves(fn, "params", params)  # one integer leaf among floating ones
    if flat.size == 0:
        raise ValueError(f"{fn}: params must have at least one element, got none")
    check_scalar_function(fn, f, params)
    matvec = lambda v: ravel_pytree(hvp(f, params, unravel(v)))[0]
    return matvec, flat.size, flat.dtype, unravel


def _safe_normalize(x: Array) -> Tuple[Array, Array]:
    """``(x / ||x||, ||x||)``, and ``(0, 0)`` for ``x = 0`` — no NaN in value or gradient.

    A NaN ``x`` gives NaN (not a zero vector that would pass for a result)."""
    norm = jnp.linalg.norm(x)
    nonzero = norm != 0
    return jnp.where(nonzero, x / jnp.where(nonzero, norm, 1), jnp.zeros_like(x)), norm


def _tridiagonal(alphas: Array, betas: Array) -> Array:
    """Dense symmetric tridiagonal ``T`` from diagonal ``alphas`` (m,) and ``betas[:m-1]``."""
    off = betas[:-1]
    return jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)


# ----------------------------------------------------------------------------- operators


def ravel_matvec(op: Callable[[PyTree], PyTree], params: Params) -> Tuple[Matvec, int, Callable]:
    """Flat view of a linear operator on parameter pytrees (an HVP, GGN or Fisher product).

    Args:
      op: linear map ``v -> A v`` from pytrees like ``params`` to pytrees like ``params``, e.g.
        ``lambda v: hvp(f, params, v)``; checked here with ``jax.eval_shape`` (nothing runs).
      params: pytree that fixes the layout (``jax.flatten_util.ravel_pytree`` order).

    Returns:
      ``(matvec, dim, unravel)``: ``matvec`` maps ``(dim,)`` vectors to ``(dim,)`` vectors,
      ``dim`` is the number of parameters and ``unravel`` turns a flat vector back into a pytree.
    """
    fn = "ravel_matvec"
    check_callable(fn, "op", op, "op(v) -> pytree like params")
    check_floating_leaves(fn, "params", params)
    out = abstract_call(fn, "op(v)", op, (params,), ("v",))
    check_same_structure(fn, "params", params, "op(v)", out)
    flat, unravel = ravel_pytree(params)
    matvec = lambda v: ravel_pytree(op(unravel(v)))[0]
    return matvec, int(flat.size), unravel


# ----------------------------------------------------------------------------- Lanczos


def _orthogonalize(w: Array, basis: Array) -> Array:
    """Remove from ``w`` its components along the rows of ``basis``, twice (CGS2).

    One classical Gram-Schmidt pass loses orthogonality in floating point; a second pass restores
    it to working precision ("twice is enough", Giraud, Langou & Rozložník, 2005, after Kahan
    and Parlett). Rows of ``basis`` that are still zero contribute nothing.
    """
    w = w - basis.T @ (basis @ w)
    return w - basis.T @ (basis @ w)


def _restart_direction(basis: Array, q: Array, q_prev: Array, reorthogonalize: bool) -> Array:
    r"""A unit vector orthogonal to the basis, for continuing Lanczos after a breakdown.

    The coordinate vector :math:`e_i` least represented in the basis (smallest
    :math:`\|Q e_i\|`), orthogonalized: its orthogonal part has squared norm at least
    ``(dim - rows) / dim``, so it never vanishes while the basis is incomplete. Deterministic and
    RNG-free (a random draw inside the loop body costs much more to compile). Without
    reorthogonalization only ``q`` and ``q_prev`` are known and projected out.
    """
    if reorthogonalize:
        i = jnp.argmin(jnp.sum(basis * basis, axis=0))
        e = jnp.zeros_like(q).at[i].set(1)
        return _safe_normalize(_orthogonalize(e, basis))[0]
    i = jnp.argmin(q * q + q_prev * q_prev)
    e = jnp.zeros_like(q).at[i].set(1)
    e = e - jnp.vdot(q, e) * q - jnp.vdot(q_prev, e) * q_prev
    return _safe_normalize(e)[0]


def _lanczos_run(matvec: Matvec, v0: Array, num_iters: int, reorthogonalize: bool,
                 keep_basis: bool):
    """Lanczos from the unit vector ``v0``.

    Returns ``(alphas, betas, basis)``; ``basis`` is ``(num_iters, dim)`` if ``keep_basis`` or
    ``reorthogonalize``, else ``None``.
    """
    dim, dtype = v0.shape[0], v0.dtype
    store = keep_basis or reorthogonalize
    eps = jnp.finfo(dtype).eps

    def step(carry, j):
        basis, q, q_prev, beta_prev, scale = carry
        if store:
            basis = lax.dynamic_update_index_in_dim(basis, q, j, axis=0)
        aq = matvec(q).astype(dtype)
        scale = jnp.maximum(scale, jnp.linalg.norm(aq))
        alpha = jnp.vdot(q, aq)
        w = aq - alpha * q - beta_prev * q_prev
        if reorthogonalize:
            w = _orthogonalize(w, basis)
        beta = jnp.linalg.norm(w)
        breakdown = beta <= _BREAKDOWN_EPS_FACTOR * eps * scale
        q_next = lax.cond(breakdown,
                          lambda: _restart_direction(basis, q, q_prev, reorthogonalize),
                          lambda: w / jnp.where(breakdown, 1, beta))
        beta = jnp.where(breakdown, jnp.zeros_like(beta), beta)
        return (basis, q_next, q, beta, scale), (alpha, beta)

    basis0 = jnp.zeros((num_iters if store else 0, dim), dtype)
    zero = jnp.zeros((), dtype)
    init = (basis0, v0, jnp.zeros_like(v0), zero, zero)
    (basis, *_), (alphas, betas) = lax.scan(step, init, jnp.arange(num_iters))
    return alphas, betas, (basis if store else None)


def lanczos(matvec: Matvec, dim: int, num_iters: int, key: PRNGKey, *,
            reorthogonalize: bool = True, return_basis: bool = False, dtype=None):
    r"""Lanczos tridiagonalization of a symmetric operator from a random unit start vector.

    Three-term recurrence :math:`\beta_j q_{j+1} = A q_j - \alpha_j q_j - \beta_{j-1} q_{j-1}`,
    :math:`\alpha_j = q_j^\top A q_j`, one ``matvec`` per step inside a ``lax.scan``. With
    ``reorthogonalize`` every new direction is also orthogonalized against all previous ones,
    twice (Paige's analysis: plain Lanczos loses orthogonality once a Ritz value converges,
    which shows up as spurious copies — "ghosts" — of converged eigenvalues). A breakdown
    (:math:`\beta_j \approx 0`: the Krylov space is invariant) sets :math:`\beta_j = 0` and
    restarts with a new direction orthogonal to the basis, so no NaN appears and ``T`` stays
    :math:`Q A Q^\top`.

    Convention: ``T[j, j] = alphas[j]`` and ``T[j, j+1] = T[j+1, j] = betas[j]`` for
    ``j < num_iters - 1``; ``betas[num_iters - 1]`` is the final residual norm, not part of ``T``.
    The eigenvalues of ``T`` (Ritz values) approximate the extreme eigenvalues of ``A`` first.

    Args:
      matvec: symmetric linear map, ``(dim,)`` array to ``(dim,)`` array.
      dim: size of the vectors (static int, >= 1).
      num_iters: number of steps ``m``, static, ``1 <= m <= dim``.
      key: PRNG key for the start vector.
      reorthogonalize: full reorthogonalization (stores the ``(m, dim)`` basis).
      return_basis: also return the basis.
      dtype: dtype of the vectors; default JAX's default float (float64 under x64).

    Returns:
      ``(alphas, betas)``, each ``(m,)``, or ``(alphas, betas, basis)`` with ``basis`` of shape
      ``(m, dim)`` whose rows are the Lanczos vectors :math:`q_j`.

    References:
      Lanczos, 1950. Paige, "The computation of eigenvalues and eigenvectors of very large
      sparse matrices", 1971. Golub & Van Loan, *Matrix Computations*, 4th ed., §10.1.
    """
    fn = "lanczos"
    dim, dtype = _matvec_setup(fn, matvec, dim, dtype)
    num_iters = _check_int(fn, "num_iters", num_iters, 1, dim, f"dim = {dim}")
    check_key(fn, "key", key)
    v0 = _safe_normalize(jax.random.normal(key, (dim,), dtype))[0]
    alphas, betas, basis = _lanczos_run(matvec, v0, num_iters, bool(reorthogonalize),
                                        bool(return_basis))
    return (alphas, betas, basis) if return_basis else (alphas, betas)


# ----------------------------------------------------------------------------- eigenvalues


def _default_num_iters(dim: int, k: int) -> int:
    """``min(dim, max(2k + 20, 40))`` Lanczos steps: enough for the top few on small gaps."""
    return min(dim, max(2 * k + 20, 40))


def top_eigenvalues_matvec(matvec: Matvec, dim: int, k: int = 1, *, key: PRNGKey,
                           num_iters: int | None = None, dtype=None) -> Tuple[Array, Array]:
    r"""The ``k`` largest (algebraic) eigenvalues and unit eigenvectors of a symmetric operator.

    Lanczos with full reorthogonalization (:func:`lanczos`), then the eigendecomposition
    :math:`T = S \Theta S^\top`; Ritz values :math:`\theta_i` and Ritz vectors
    :math:`y_i = Q^\top s_i`. With ``num_iters = dim`` the result is exact up to round-off
    (multiple eigenvalues included, thanks to restarts); with fewer steps the extreme
    eigenvalues converge first, at a rate set by the relative gaps.

    Args:
      matvec: symmetric linear map, ``(dim,)`` to ``(dim,)``.
      dim: size of the vectors (static int).
      k: how many eigenpairs, ``1 <= k <= num_iters``.
      key: PRNG key for the start vector.
      num_iters: Lanczos steps; default ``min(dim, max(2k + 20, 40))``.
      dtype: vector dtype; default JAX's default float.

    Returns:
      ``(eigenvalues, eigenvectors)``: ``(k,)`` in descending order and ``(k, dim)`` unit rows.
    """
    fn = "top_eigenvalues_matvec"
    dim, dtype = _matvec_setup(fn, matvec, dim, dtype)
    return _top_eigenpairs(fn, matvec, dim, dtype, k, num_iters, key)


def _top_eigenpairs(fn, matvec, dim, dtype, k, num_iters, key):
    """Shared body of the two ``top_eigenvalues`` forms (arguments already partly checked)."""
    k = _check_int(fn, "k", k, 1, dim, f"the operator has dimension {dim}")
    if num_iters is None:
        num_iters = _default_num_iters(dim, k)
    num_iters = _check_int(fn, "num_iters", num_iters, k, dim, f"k = {k}, dim = {dim}")
    check_key(fn, "key", key)
    v0 = _safe_normalize(jax.random.normal(key, (dim,), dtype))[0]
    alphas, betas, basis = _lanczos_run(matvec, v0, num_iters, True, True)
    theta, s = jnp.linalg.eigh(_tridiagonal(alphas, betas))
    top = jnp.arange(num_iters - 1, num_iters - 1 - k, -1)
    vectors = (basis.T @ s[:, top]).T
    vectors = jax.vmap(lambda v: _safe_normalize(v)[0])(vectors)
    return theta[top], vectors


def top_eigenvalues(f: Callable[[Params], Array], params: Params, k: int = 1, *,
                    num_iters: int | None = None, key: PRNGKey) -> Tuple[Array, List[PyTree]]:
    r"""The ``k`` largest (algebraic) eigenvalues of the Hessian :math:`\nabla^2 f(\theta)`.

    Lanczos on Hessian-vector products (see :func:`top_eigenvalues_matvec`); never forms the
    ``n × n`` Hessian. Each step costs one HVP (about two gradients) plus ``O(n · num_iters)``
    for reorthogonalization; memory is the ``(num_iters, n)`` Lanczos basis.

    Args:
      f: scalar function of ``params`` (e.g. a loss with the batch closed over).
      params: pytree of floating arrays with ``n`` elements in total.
      k: how many eigenpairs, ``1 <= k <= min(n, num_iters)``.
      num_iters: Lanczos steps (static); default ``min(n, max(2k + 20, 40))``.
      key: PRNG key for the start vector.

    Returns:
      ``(eigenvalues, eigenvectors)``: ``(k,)`` descending, and a list of ``k`` unit-norm
      pytrees like ``params`` (in the same order).

    Reference:
      Ghorbani, Krishnan & Xiao, "An investigation into neural net optimization via Hessian
      eigenvalue density", ICML 2019; Yao et al., "PyHessian", 2020.
    """
    fn = "top_eigenvalues"
    matvec, dim, dtype, unravel = _hessian_operator(fn, f, params)
    values, vectors = _top_eigenpairs(fn, matvec, dim, dtype, k, num_iters, key)
    return values, [unravel(vectors[i]) for i in range(vectors.shape[0])]


def power_iteration_matvec(matvec: Matvec, dim: int, key: PRNGKey, *, num_iters: int = 100,
                           tol: float = 1e-6, dtype=None) -> Tuple[Array, Array]:
    r"""Dominant (largest-magnitude) eigenpair of a symmetric operator by power iteration.

    :math:`v_{t+1} = A v_t / \|A v_t\|`, eigenvalue estimate the Rayleigh quotient
    :math:`\lambda_t = v_t^\top A v_t`, in a ``lax.while_loop`` that stops when
    :math:`|\lambda_t - \lambda_{t-1}| \le \mathrm{tol}\, |\lambda_t|` or after ``num_iters``
    products. The error shrinks like :math:`(\lambda_2/\lambda_1)^{2t}`; if ``±λ`` are both
    dominant the vector does not converge. ``A v = 0`` stops with eigenvalue 0, without NaN; a
    NaN or infinite estimate (e.g. NaN params) stops at once, with a NaN eigenvector.

    Args:
      matvec: symmetric linear map, ``(dim,)`` to ``(dim,)``.
      dim: size of the vectors (static int).
      key: PRNG key for the start vector.
      num_iters: maximal number of products (static, >= 1).
      tol: relative change of the eigenvalue estimate that stops the loop (>= 0).
      dtype: vector dtype; default JAX's default float.

    Returns:
      ``(eigenvalue, eigenvector)``: a scalar and a unit ``(dim,)`` vector with
      ``eigenvalue = v·Av``.
    """
    fn = "power_iteration_matvec"
    dim, dtype = _matvec_setup(fn, matvec, dim, dtype)
    return _power_iteration(fn, matvec, dim, dtype, key, num_iters, tol)


def _power_iteration(fn, matvec, dim, dtype, key, num_iters, tol):
    """Shared body of the two ``power_iteration`` forms."""
    num_iters = _check_int(fn, "num_iters", num_iters, 1)
    tol = _check_static_float(fn, "tol", tol)
    if not tol >= 0:
        raise ValueError(f"{fn}: tol must be >= 0, got {tol}")
    check_key(fn, "key", key)
    matvec_d = lambda v: matvec(v).astype(dtype)

    def cond(state):
        # A NaN or infinite estimate (NaN params, overflow) stops the loop: it cannot recover.
        i, _, _, lam, lam_prev = state
        converged = jnp.abs(lam - lam_prev) <= tol * jnp.abs(lam)
        return (i < num_iters) & jnp.isfinite(lam) & ~converged

    def body(state):
        i, v, av, lam, _ = state
        v_new, norm = _safe_normalize(av)
        v_new = jnp.where(norm > 0, v_new, v)
        av_new = matvec_d(v_new)
        return i + 1, v_new, av_new, jnp.vdot(v_new, av_new), lam

    v0 = _safe_normalize(jax.random.normal(key, (dim,), dtype))[0]
    av0 = matvec_d(v0)
    state = (jnp.array(1), v0, av0, jnp.vdot(v0, av0), jnp.array(jnp.inf, dtype))
    _, v, _, lam, _ = lax.while_loop(cond, body, state)
    return lam, jnp.where(jnp.isfinite(lam), v, jnp.nan)  # no finite vector for a NaN value


def power_iteration(f: Callable[[Params], Array], params: Params, key: PRNGKey, *,
                    num_iters: int = 100, tol: float = 1e-6) -> Tuple[Array, PyTree]:
    r"""Dominant (largest-magnitude) eigenpair of the Hessian :math:`\nabla^2 f(\theta)`.

    Power iteration on HVPs with a relative-change stopping rule; see
    :func:`power_iteration_matvec` for the recurrence and the stopping test.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      key: PRNG key for the start vector.
      num_iters: maximal number of HVPs (static, >= 1).
      tol: relative change of the eigenvalue estimate that stops the loop (>= 0).

    Returns:
      ``(eigenvalue, eigenvector)``: a scalar and a unit-norm pytree like ``params``.
    """
    fn = "power_iteration"
    matvec, dim, dtype, unravel = _hessian_operator(fn, f, params)
    lam, v = _power_iteration(fn, matvec, dim, dtype, key, num_iters, tol)
    return lam, unravel(v)


# ----------------------------------------------------------------------------- trace


def hutchinson_trace_matvec(matvec: Matvec, dim: int, key: PRNGKey, *, num_samples: int,
                            distribution: str = "rademacher", batch_size: int | None = None,
                            dtype=None) -> Tuple[Array, Array]:
    r"""Hutchinson's stochastic trace estimate :math:`\operatorname{tr} A \approx \frac1m
    \sum_i z_i^\top A z_i` with its standard error.

    Probes :math:`z_i` are Rademacher (±1, variance :math:`2\sum_{i\ne j} A_{ij}^2`, the
    smallest possible) or standard Gaussian (variance :math:`2\|A\|_F^2`); both are unbiased.
    Products run through ``lax.map`` over the probes, ``batch_size`` at a time (vmapped).

    Args:
      matvec: symmetric linear map, ``(dim,)`` to ``(dim,)``.
      dim: size of the vectors (static int).
      key: PRNG key for the probes.
      num_samples: number of probes ``m`` (static, >= 2 so that an error can be estimated).
      distribution: ``"rademacher"`` or ``"gaussian"``.
      batch_size: probes per vmapped batch; default all at once.
      dtype: vector dtype; default JAX's default float.

    Returns:
      ``(estimate, standard_error)``, scalars; ``standard_error`` is the sample standard
      deviation of :math:`z^\top A z` over :math:`\sqrt m`.

    Reference:
      Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
      smoothing splines", 1990; Avron & Toledo, J. ACM 2011.
    """
    fn = "hutchinson_trace_matvec"
    dim, dtype = _matvec_setup(fn, matvec, dim, dtype)
    return _hutchinson(fn, matvec, dim, dtype, key, num_samples, distribution, batch_size)


def _hutchinson(fn, matvec, dim, dtype, key, num_samples, distribution, batch_size):
    """Shared body of the two ``hutchinson_trace`` forms."""
    num_samples = _check_int(fn, "num_samples", num_samples, 2)
    check_choice(fn, "distribution", distribution, _TRACE_DISTRIBUTIONS)
    if batch_size is not None:
        batch_size = _check_int(fn, "batch_size", batch_size, 1)
    check_key(fn, "key", key)
    shape = (num_samples, dim)
    if distribution == "rademacher":
        probes = jax.random.rademacher(key, shape, dtype)
    else:
        probes = jax.random.normal(key, shape, dtype)
    quad = lambda z: jnp.vdot(z, matvec(z).astype(dtype))
    samples = lax.map(quad, probes, batch_size=batch_size or num_samples)
    estimate = jnp.mean(samples)
    # math.sqrt, not np.sqrt: a NumPy float64 would promote float32 samples to float64.
    standard_error = jnp.std(samples, ddof=1) / math.sqrt(num_samples)
    return estimate, standard_error


def hutchinson_trace(f: Callable[[Params], Array], params: Params, key: PRNGKey, *,
                     num_samples: int, distribution: str = "rademacher",
                     batch_size: int | None = None) -> Tuple[Array, Array]:
    r"""Hutchinson estimate of :math:`\operatorname{tr} \nabla^2 f(\theta)` from HVPs.

    :math:`\operatorname{tr} H \approx \frac1m \sum_i z_i^\top H z_i`; see
    :func:`hutchinson_trace_matvec` for the probes and the error.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      key: PRNG key for the probes.
      num_samples: number of probes (static, >= 2).
      distribution: ``"rademacher"`` or ``"gaussian"``.
      batch_size: probes per vmapped batch of HVPs; default all at once.

    Returns:
      ``(estimate, standard_error)``, scalars.
    """
    fn = "hutchinson_trace"
    matvec, dim, dtype, _ = _hessian_operator(fn, f, params)
    return _hutchinson(fn, matvec, dim, dtype, key, num_samples, distribution, batch_size)


# ----------------------------------------------------------------------------- density


def slq_nodes_weights_matvec(matvec: Matvec, dim: int, key: PRNGKey, *, num_iters: int,
                             num_probes: int, dtype=None) -> Tuple[Array, Array]:
    r"""Stochastic Lanczos quadrature: Gauss nodes and weights of the spectral measure.

    For each probe :math:`v` (Rademacher, normalized), ``num_iters`` Lanczos steps from
    :math:`v` (full reorthogonalization) give :math:`T = S \Theta S^\top`; nodes are the Ritz
    values :math:`\theta_i` and weights :math:`\tau_i = s_{0i}^2` (they sum to 1). Then
    :math:`\sum_i \tau_i g(\theta_i) \approx v^\top g(A) v`, exactly for polynomials ``g`` of
    degree ``< 2 num_iters``, and averaging over probes estimates
    :math:`\frac1n \operatorname{tr} g(A) = \frac1n \sum_j g(\lambda_j)`. Probes run one after
    another (``lax.map``), so memory is one ``(num_iters, dim)`` basis.

    Args:
      matvec: symmetric linear map, ``(dim,)`` to ``(dim,)``.
      dim: size of the vectors (static int).
      key: PRNG key for the probes.
      num_iters: Lanczos steps per probe (static), ``1 <= num_iters <= dim``.
      num_probes: number of probes (static, >= 1).
      dtype: vector dtype; default JAX's default float.

    Returns:
      ``(nodes, weights)``, each ``(num_probes, num_iters)``; each row of ``weights`` sums to 1.

    Reference:
      Golub & Meurant, *Matrices, Moments and Quadrature*, 2010; Ubaru, Chen & Saad, SIAM
      J. Matrix Anal. Appl. 2017; Ghorbani, Krishnan & Xiao, ICML 2019.
    """
    fn = "slq_nodes_weights_matvec"
    dim, dtype = _matvec_setup(fn, matvec, dim, dtype)
    return _slq(fn, matvec, dim, dtype, key, num_iters, num_probes)


def _slq(fn, matvec, dim, dtype, key, num_iters, num_probes):
    """Shared body of the two ``slq_nodes_weights`` forms."""
    num_iters = _check_int(fn, "num_iters", num_iters, 1, dim, f"dim = {dim}")
    num_probes = _check_int(fn, "num_probes", num_probes, 1)
    check_key(fn, "key", key)

    def one_probe(probe):
        alphas, betas, _ = _lanczos_run(matvec, probe / math.sqrt(dim), num_iters, True, False)
        theta, s = jnp.linalg.eigh(_tridiagonal(alphas, betas))
        return theta, s[0] ** 2

    probes = jax.random.rademacher(key, (num_probes, dim), dtype)
    return lax.map(one_probe, probes)


def slq_nodes_weights(f: Callable[[Params], Array], params: Params, key: PRNGKey, *,
                      num_iters: int, num_probes: int) -> Tuple[Array, Array]:
    r"""Stochastic Lanczos quadrature nodes and weights for the Hessian of ``f`` at ``params``.

    See :func:`slq_nodes_weights_matvec`; the operator is :math:`\nabla^2 f(\theta)` via HVPs.

    Returns:
      ``(nodes, weights)``, each ``(num_probes, num_iters)``.
    """
    fn = "slq_nodes_weights"
    matvec, dim, dtype, _ = _hessian_operator(fn, f, params)
    return _slq(fn, matvec, dim, dtype, key, num_iters, num_probes)


def _check_grid_sigma(fn: str, grid, sigma) -> Tuple[Array, float]:
    """Validate the density grid (1-D, floating) and kernel width (static float > 0)."""
    grid = jnp.asarray(grid)
    check_ndim(fn, "grid", grid, 1, "(num_points,)")
    check_floating(fn, "grid", grid)
    sigma = _check_static_float(fn, "sigma", sigma)
    check_positive(fn, "sigma", sigma)
    check_finite(fn, "sigma", sigma)
    return grid, sigma


def _gaussian_mixture_density(nodes: Array, weights: Array, grid: Array, sigma: float) -> Array:
    r"""Density :math:`\frac1P \sum_{p,i} \tau_{pi} \mathcal N(t; \theta_{pi}, \sigma^2)`."""
    grid = grid.astype(nodes.dtype)
    z = (grid[:, None, None] - nodes[None]) / sigma
    kernel = jnp.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))
    return jnp.sum(kernel * weights[None], axis=(1, 2)) / nodes.shape[0]


def spectral_density_matvec(matvec: Matvec, dim: int, key: PRNGKey, *, num_iters: int,
                            num_probes: int, grid, sigma: float, dtype=None) -> Array:
    r"""Smoothed spectral density of a symmetric operator by stochastic Lanczos quadrature.

    .. math:: \phi_\sigma(t) = \frac{1}{P} \sum_{p=1}^{P} \sum_{i=1}^{m} \tau_{pi}\,
       \frac{1}{\sigma\sqrt{2\pi}} \exp\Big(-\frac{(t - \theta_{pi})^2}{2\sigma^2}\Big)
       \;\approx\; \frac1n \sum_{j=1}^{n} \mathcal N(t;\, \lambda_j, \sigma^2),

    with nodes/weights from :func:`slq_nodes_weights_matvec`. It is a probability density: it
    integrates to 1 over a grid that covers the spectrum by a few ``sigma`` on each side, and
    its mean is :math:`\frac1P\sum_p v_p^\top A v_p \approx \operatorname{tr} A / n`.

    Args:
      matvec: symmetric linear map, ``(dim,)`` to ``(dim,)``.
      dim: size of the vectors (static int).
      key: PRNG key for the probes.
      num_iters: Lanczos steps per probe (static), ``1 <= num_iters <= dim``.
      num_probes: number of probes (static, >= 1).
      grid: ``(num_points,)`` floating eigenvalue locations where the density is evaluated.
      sigma: kernel width, a Python float > 0, in eigenvalue units.
      dtype: vector dtype; default JAX's default float.

    Returns:
      ``(num_points,)`` density values.
    """
    fn = "spectral_density_matvec"
    dim, dtype = _matvec_setup(fn, matvec, dim, dtype)
    grid, sigma = _check_grid_sigma(fn, grid, sigma)
    nodes, weights = _slq(fn, matvec, dim, dtype, key, num_iters, num_probes)
    return _gaussian_mixture_density(nodes, weights, grid, sigma)


def spectral_density(f: Callable[[Params], Array], params: Params, key: PRNGKey, *,
                     num_iters: int, num_probes: int, grid, sigma: float) -> Array:
    r"""Smoothed Hessian eigenvalue density of ``f`` at ``params`` (stochastic Lanczos quadrature).

    See :func:`spectral_density_matvec` for the formula; the operator is
    :math:`\nabla^2 f(\theta)` via HVPs.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays with ``n`` elements.
      key: PRNG key for the probes.
      num_iters: Lanczos steps per probe (static), ``1 <= num_iters <= n``.
      num_probes: number of probes (static, >= 1).
      grid: ``(num_points,)`` eigenvalue locations.
      sigma: Gaussian kernel width (Python float > 0).

    Returns:
      ``(num_points,)`` density values.

    Reference:
      Ghorbani, Krishnan & Xiao, "An investigation into neural net optimization via Hessian
      eigenvalue density", ICML 2019.
    """
    fn = "spectral_density"
    matvec, dim, dtype, _ = _hessian_operator(fn, f, params)
    grid, sigma = _check_grid_sigma(fn, grid, sigma)
    nodes, weights = _slq(fn, matvec, dim, dtype, key, num_iters, num_probes)
    return _gaussian_mixture_density(nodes, weights, grid, sigma)


__all__ = [
    "ravel_matvec",
    "lanczos",
    "top_eigenvalues",
    "top_eigenvalues_matvec",
    "power_iteration",
    "power_iteration_matvec",
    "hutchinson_trace",
    "hutchinson_trace_matvec",
    "slq_nodes_weights",
    "slq_nodes_weights_matvec",
    "spectral_density",
    "spectral_density_matvec",
]
