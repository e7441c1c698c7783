"""Finite differences over parameter pytrees, and checkers that hold exact derivatives to them.

Everything works on the ``jax.flatten_util.ravel_pytree`` view of ``params`` (the same order as
``jaxcalc.derivatives.hessian_matrix``): coordinate ``j`` is moved by a step ``h_j`` and ``f`` (or
``jax.grad(f)``) is evaluated at the moved point. Coordinates are processed ``chunk_size`` at a
time (``vmap`` inside a ``lax.map``), never in a Python loop, so every function here is
``jax.jit``-able and none of them jits itself.

Methods and their truncation error for a first derivative:

* ``"forward"``  ``(f(x + h) − f(x)) / h``, ``O(h)``;
* ``"backward"`` ``(f(x) − f(x − h)) / h``, ``O(h)``;
* ``"central"``  ``(f(x + h) − f(x − h)) / 2h``, ``O(h²)``;
* ``"richardson"`` central differences at ``h, h/2, …, h/2^L`` (``L = RICHARDSON_LEVELS``)
  combined by Richardson extrapolation, ``O(h^(2L+2))``, with an error estimate
  (``richardson_grad``).

Steps. With ``step=None`` each coordinate gets ``h_j = ε^(1/(p+d)) · max(1, |x_j|)`` where ``ε`` is
the machine epsilon of its leaf's dtype, ``p`` the order of the method and ``d`` the order of the
derivative taken by differencing (``d = 1`` for gradients and for Hessians from gradients,
``d = 2`` for Hessians from values). This balances truncation error ``~ h^p`` against round-off
``~ ε / h^d``: ``√ε`` for forward/backward, ``ε^(1/3)`` for central gradients (Press et al.,
*Numerical Recipes*, 3rd ed., §5.7). A user ``step`` is a positive scalar **absolute** step used
for every coordinate (for ``"richardson"`` the largest step of the ladder; for ``hvp`` the
multiple of ``v``). Steps are made exactly representable — the point ``x_j + h_j`` is rounded to
the leaf's dtype first and the displacement actually taken, ``(x_j + h_j) − x_j``, is the
denominator — which removes the ``ε·|x_j| / h_j`` error of dividing by the nominal ``h_j``. A step
too small to move ``x_j`` at all gives NaN, not a silent zero.

The checkers (``check_grad``, ``check_hessian``) compare ``jax.grad`` / ``hessian_matrix`` with
these estimates and return report objects; call them outside ``jax.jit``. ``step_sweep`` and
``plot_step_sweep`` draw the error-vs-step V-curve (truncation error on the right, round-off on
the left).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, Dict, Mapping, NamedTuple, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxcalc import derivatives
from jaxcalc._types import Array, Params, PyTree
from jaxcalc._validate import (check_choice, check_finite, check_float_dtype,
                               check_floating_leaves, check_positive, check_real_number,
                               check_same_structure, check_scalar_function)

METHODS = ("forward", "backward", "central", "richardson")
SOURCES = ("grad", "value")
RICHARDSON_LEVELS = 2  # halvings of the step: central at h, h/2, h/4 → O(h⁶)
_RATIO = 2.0  # step ratio between Richardson levels
_DEFAULT_CHUNK = 64  # coordinates per vmapped batch

# Default relative tolerances of the checkers, by dtype and method (see ``check_grad``). The
# ideal error of a method of order p at its best step is about ε^(p/(p+d)); these are that
# number times a safety factor of ~10²–10⁴ for the constants it hides (higher derivatives of f,
# round-off in f well above ε·|f| for sums over a batch, the 2^L round-off growth of Richardson).
DEFAULT_RTOL = {
    # (dtype name, source): {method: rtol}; source "grad" = first differences (gradients, and
    # Hessians from gradients), "value" = second differences of f (Hessians from values).
    ("float64", "grad"): {"forward": 1e-5, "backward": 1e-5, "central": 1e-7, "richardson": 1e-9},
    ("float64", "value"): {"forward": 1e-3, "backward": 1e-3, "central": 1e-5, "richardson": 1e-7},
    ("float32", "grad"): {"forward": 3e-2, "backward": 3e-2, "central": 3e-3, "richardson": 1e-3},
    ("float32", "value"): {"forward": 1e-1, "backward": 1e-1, "central": 3e-2, "richardson": 1e-2},
}
_LOW_PRECISION_RTOL = 1e-1  # float16 / bfloat16: a smoke test at best


class LowPrecisionWarning(UserWarning):
    """Finite-difference checks in float32 or lower cannot resolve small derivative errors."""


# ----------------------------------------------------------------------------- flat view


class _Flat(NamedTuple):
    x: Array  # ravelled params, in the common (promoted) dtype
    unravel: Callable[[Array], Params]
    eps: Array  # machine epsilon of each coordinate's own leaf dtype, shape (n,)


def _check_params(fn: str, params: Params) -> None:
    """At least one leaf, every leaf floating (there is nothing to difference otherwise)."""
    if not jax.tree_util.tree_leaves(params):
        raise ValueError(f"{fn}: params must hold at least one array, got {params!r}")
    check_floating_leaves(fn, "params", params)


def _check_step(fn: str, step) -> None:
    if step is None:
        return
    if np.shape(step) != ():
        raise ValueError(f"{fn}: step must be a positive scalar (an absolute step), got an array "
                         f"of shape {np.shape(step)}")
    if isinstance(step, jax.core.Tracer):
        return  # a traced step: its value is not known here
    value = check_real_number(fn, "step", step, "a positive real scalar (an absolute step)")
    check_positive(fn, "step", value)
    check_finite(fn, "step", value)


def _check_chunk(fn: str, chunk_size) -> int:
    if chunk_size is None:
        return _DEFAULT_CHUNK
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"{fn}: chunk_size must be a positive int or None, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"{fn}: chunk_size must be a positive int, got {chunk_size!r}")
    return int(chunk_size)


def _check_levels(fn: str, levels) -> int:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)):
        raise TypeError(f"{fn}: levels must be an int >= 1, got {levels!r}")
    if levels < 1:
        raise ValueError(f"{fn}: levels must be an int >= 1, got {levels!r}")
    return int(levels)


def _flatten(params: Params) -> _Flat:
    x, unravel = ravel_pytree(params)
    eps = ravel_pytree(jax.tree_util.tree_map(
        lambda leaf: jnp.full(jnp.shape(leaf), jnp.finfo(jnp.result_type(leaf)).eps, x.dtype),
        params))[0]
    return _Flat(x, unravel, eps)


def _round(flat: _Flat, y: Array) -> Array:
    """``y`` rounded to each coordinate's leaf dtype (a no-op when all leaves share a dtype)."""
    return ravel_pytree(flat.unravel(y))[0]


def _displacement(flat: _Flat, t: Array) -> Array:
    """The displacement actually taken when stepping by ``t``: ``round(x + t) − x`` (exact)."""
    return _round(flat, flat.x + t) - flat.x


def _order(method: str, levels: int) -> int:
    return {"forward": 1, "backward": 1, "central": 2}.get(method, 2 * (levels + 1))


def default_relative_step(dtype, method: str = "central", *, derivative: int = 1,
                          levels: int = RICHARDSON_LEVELS) -> float:
    r"""Relative step :math:`\varepsilon^{1/(p+d)}` that balances truncation and round-off.

    The error of an order-``p`` difference for a ``d``-th derivative is about
    :math:`C h^p + \varepsilon |f| / h^d`, minimal at :math:`h \propto \varepsilon^{1/(p+d)}`;
    the step used for a coordinate ``x_j`` is this times ``max(1, |x_j|)``.

    Args:
      dtype: a floating dtype (its machine epsilon ``ε`` is used).
      method: one of ``METHODS``.
      derivative: ``1`` (first differences) or ``2`` (second differences of values).
      levels: Richardson halvings (``p = 2·(levels + 1)``).

    Returns:
      A Python float, e.g. ``6.06e-6`` for ``"central"`` in float64, ``1.49e-8`` for ``"forward"``.
    """
    fn = "default_relative_step"
    dtype = check_float_dtype(fn, dtype)
    check_choice(fn, "method", method, METHODS)
    check_choice(fn, "derivative", derivative, (1, 2))
    levels = _check_levels(fn, levels)
    eps = float(jnp.finfo(dtype).eps)
    return eps ** (1.0 / (_order(method, levels) + derivative))


def _coordinate_steps(flat: _Flat, method: str, step, derivative: int, levels: int) -> Array:
    """Base step of every coordinate: ``ε_j^(1/(p+d)) · max(1, |x_j|)``, or ``step`` for all."""
    if step is None:
        rel = flat.eps ** (1.0 / (_order(method, levels) + derivative))
        return rel * jnp.maximum(1.0, jnp.abs(flat.x))
    return jnp.broadcast_to(jnp.asarray(step, flat.x.dtype), flat.x.shape)


def _scales(method: str, levels: int) -> Tuple[float, ...]:
    if method == "richardson":
        return tuple(_RATIO ** -k for k in range(levels + 1))
    return (1.0,)


def _safe_divide(num: Array, den: Array) -> Array:
    """``num / den``, NaN where the step did not move the point (``den == 0``); double-where."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), jnp.nan)


def _richardson(estimates: Sequence[Array]) -> Tuple[Array, Array]:
    r"""Richardson tableau for estimates ``D(h), D(h/2), …`` with error in even powers of ``h``.

    Column ``m`` removes the ``h^{2m}`` term: :math:`T_{k,m} = T_{k,m-1} +
    (T_{k,m-1} - T_{k-1,m-1}) / (4^m - 1)`; with two estimates this is ``(4 D(h/2) − D(h)) / 3``.
    The error estimate is Ridders': the larger change of the final entry from its two parents,
    :math:`\max(|T_{L,L} - T_{L,L-1}|, |T_{L,L} - T_{L-1,L-1}|)`.

    Reference: Ridders, "Accurate computation of F'(x) and F'(x)F''(x)", Adv. Eng. Software 4, 1982.
    """
    column = list(estimates)
    error = jnp.zeros_like(column[-1])
    for m in range(1, len(estimates)):
        factor = _RATIO ** (2 * m)
        new = [(factor * fine - coarse) / (factor - 1) for coarse, fine in zip(column, column[1:])]
        error = jnp.maximum(jnp.abs(new[-1] - column[-1]), jnp.abs(new[-1] - column[-2]))
        column = new
    return column[-1], error


def _combine(method: str, estimates: Sequence[Array]) -> Tuple[Array, Array]:
    if method == "richardson":
        return _richardson(estimates)
    return estimates[0], jnp.zeros_like(estimates[0])


# ----------------------------------------------------------------------------- engines


def _coordinate_derivatives(g: Callable[[Array], Array], flat: _Flat, h: Array, method: str,
                            levels: int, chunk: int) -> Tuple[Array, Array]:
    """Derivative of ``g`` (flat vector → array) along every coordinate axis ``e_j``.

    Returns ``(estimate, error_estimate)``, each of shape ``(n,) + g_out_shape``; the error
    estimate is zero except for ``"richardson"``.
    """
    x = flat.x
    scales = _scales(method, levels)
    up = jnp.stack([_displacement(flat, s * h) for s in scales], axis=1)  # (n, levels)
    down = jnp.stack([_displacement(flat, -s * h) for s in scales], axis=1)
    g0 = g(x) if method in ("forward", "backward") else None

    def one(args):
        j, d_up, d_down = args
        at = lambda d: g(x.at[j].add(d))
        estimates = []
        for k in range(len(scales)):
            if method == "forward":
                num, den = at(d_up[k]) - g0, d_up[k]
            elif method == "backward":
                num, den = g0 - at(d_down[k]), -d_down[k]
            else:
                num, den = at(d_up[k]) - at(d_down[k]), d_up[k] - d_down[k]
            estimates.append(_safe_divide(num, den))
        return _combine(method, estimates)

    return lax.map(one, (jnp.arange(x.shape[0]), up, down), batch_size=chunk)


def _second_differences(fv: Callable[[Array], Array], flat: _Flat, h: Array, method: str,
                        levels: int, chunk: int) -> Array:
    r"""Dense Hessian from function values only, ``(n, n)``.

    Diagonal: three-point second difference on the points ``a < b < c`` actually taken
    (``(−h, 0, h)`` central, ``(0, h, 2h)`` forward, ``(−2h, −h, 0)`` backward),
    :math:`2[(f_c - f_b)/(c - b) - (f_b - f_a)/(b - a)]/(c - a)`, which is
    :math:`(f(x+h) - 2f(x) + f(x-h))/h^2` for equal steps. Off-diagonal ``i < j``:

    .. math:: [f(h_i, h_j) - f(h_i, l_j) - f(l_i, h_j) + f(l_i, l_j)] / ((h_i - l_i)(h_j - l_j))

    with high/low offsets ``(+h, −h)`` central (the four-point mixed difference), ``(+h, 0)``
    forward, ``(0, −h)`` backward. Both are exact on quadratics, even with the unequal
    displacements that exact steps produce. Richardson extrapolates central at ``h/2^k``.
    """
    x = flat.x
    n = x.shape[0]
    scales = _scales(method, levels)
    dsp = lambda s: _displacement(flat, s * h)
    zero = jnp.zeros_like(x)
    if method == "forward":
        diag_pts = [(zero, dsp(s), dsp(2 * s)) for s in scales]
        box = [(dsp(s), zero) for s in scales]
    elif method == "backward":
        diag_pts = [(dsp(-2 * s), dsp(-s), zero) for s in scales]
        box = [(zero, dsp(-s)) for s in scales]
    else:
        diag_pts = [(dsp(-s), zero, dsp(s)) for s in scales]
        box = [(dsp(s), dsp(-s)) for s in scales]
    a, b, c = (jnp.stack([pts[i] for pts in diag_pts], axis=1) for i in range(3))  # (n, levels)
    hi = jnp.stack([bx[0] for bx in box], axis=1)
    lo = jnp.stack([bx[1] for bx in box], axis=1)

    def diagonal(args):
        i, a_i, b_i, c_i = args
        at = lambda d: fv(x.at[i].add(d))
        estimates = []
        for k in range(len(scales)):
            fa, fb, fc = at(a_i[k]), at(b_i[k]), at(c_i[k])
            slope_hi = _safe_divide(fc - fb, c_i[k] - b_i[k])
            slope_lo = _safe_divide(fb - fa, b_i[k] - a_i[k])
            estimates.append(_safe_divide(2 * (slope_hi - slope_lo), c_i[k] - a_i[k]))
        return _combine(method, estimates)[0]

    def mixed(args):
        i, j = args
        at = lambda di, dj: fv(x.at[i].add(di).at[j].add(dj))
        estimates = []
        for k in range(len(scales)):
            hi_i, lo_i, hi_j, lo_j = hi[i, k], lo[i, k], hi[j, k], lo[j, k]
            num = at(hi_i, hi_j) - at(hi_i, lo_j) - at(lo_i, hi_j) + at(lo_i, lo_j)
            estimates.append(_safe_divide(num, (hi_i - lo_i) * (hi_j - lo_j)))
        return _combine(method, estimates)[0]

    diag = lax.map(diagonal, (jnp.arange(n), a, b, c), batch_size=chunk)
    hess = jnp.diag(diag)
    if n > 1:
        rows, cols = np.triu_indices(n, 1)
        off = lax.map(mixed, (jnp.asarray(rows), jnp.asarray(cols)), batch_size=chunk)
        hess = hess.at[rows, cols].set(off).at[cols, rows].set(off)
    return hess


def _flat_grad(f: Callable[[Params], Array], flat: _Flat) -> Callable[[Array], Array]:
    return lambda y: ravel_pytree(jax.grad(f)(flat.unravel(y)))[0].astype(flat.x.dtype)


def _flat_value(f: Callable[[Params], Array], flat: _Flat) -> Callable[[Array], Array]:
    return lambda y: f(flat.unravel(y))


# ----------------------------------------------------------------------------- public API


def richardson_grad(f: Callable[[Params], Array], params: Params, *, step=None,
                    levels: int = RICHARDSON_LEVELS,
                    chunk_size: int | None = None) -> Tuple[PyTree, PyTree]:
    r"""Gradient by Richardson extrapolation of central differences, with an error estimate.

    Central differences :math:`D(h/2^k)`, ``k = 0..levels``, are combined in a Richardson
    tableau; one level gives :math:`(4 D(h/2) - D(h)) / 3` with error ``O(h⁴)``, ``L`` levels give
    ``O(h^(2L+2))``. Default base step :math:`\varepsilon^{1/(2L+3)} \max(1, |x_j|)`.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      step: optional positive scalar, the absolute base (largest) step.
      levels: number of halvings, ``>= 1``.
      chunk_size: coordinates per vmapped batch (default 64).

    Returns:
      ``(gradient, error_estimate)``, two pytrees like ``params``. The error estimate is
      Ridders' (see ``_richardson``): the size of the last extrapolation's correction, which
      usually overestimates the error of the returned value (it bounds the lower-order ones).

    Reference: Richardson, "The deferred approach to the limit", Phil. Trans. R. Soc. A, 1927.
    """
    fn = "richardson_grad"
    levels = _check_levels(fn, levels)
    estimate, error = _grad_impl(fn, f, params, "richardson", step, levels, chunk_size)
    return estimate, error


def _grad_impl(fn, f, params, method, step, levels, chunk_size):
    check_choice(fn, "method", method, METHODS)
    _check_params(fn, params)
    check_scalar_function(fn, f, params)
    _check_step(fn, step)
    chunk = _check_chunk(fn, chunk_size)
    flat = _flatten(params)
    h = _coordinate_steps(flat, method, step, 1, levels)
    estimate, error = _coordinate_derivatives(_flat_value(f, flat), flat, h, method, levels, chunk)
    dtype = flat.x.dtype
    return flat.unravel(estimate.astype(dtype)), flat.unravel(error.astype(dtype))


def grad(f: Callable[[Params], Array], params: Params, *, method: str = "central", step=None,
         chunk_size: int | None = None) -> PyTree:
    r"""Finite-difference gradient :math:`\partial f / \partial \theta_j` of a scalar ``f``.

    ``central``: :math:`(f(\theta + h_j e_j) - f(\theta - h_j e_j)) / 2h_j`; see the module
    docstring for the other methods, the default steps and exact steps.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays with ``n`` elements in total.
      method: ``"forward"``, ``"backward"``, ``"central"`` or ``"richardson"``.
      step: optional positive scalar absolute step for every coordinate (default: per
        coordinate, ``ε^(1/(p+1)) · max(1, |θ_j|)``).
      chunk_size: coordinates per vmapped batch (default 64).

    Returns:
      A pytree like ``params`` (same leaf dtypes). Costs ``n`` (forward/backward: ``n + 1``),
      ``2n`` (central) or ``2n·(L+1)`` (Richardson) evaluations of ``f``.
    """
    return _grad_impl("grad", f, params, method, step, RICHARDSON_LEVELS, chunk_size)[0]


def hessian(f: Callable[[Params], Array], params: Params, *, method: str = "central", step=None,
            source: str = "grad", chunk_size: int | None = None) -> Array:
    r"""Finite-difference Hessian ``(n, n)`` in ``ravel_pytree`` order, symmetric.

    ``source="grad"`` (default) differences exact gradients: column ``j`` is
    :math:`(\nabla f(\theta + h_j e_j) - \nabla f(\theta - h_j e_j)) / 2h_j` (central), and the
    result is symmetrized, :math:`(H + H^\top)/2`; default step ``ε^(1/(p+1))·max(1, |θ_j|)``.
    ``source="value"`` uses function values only: second differences on the diagonal and the
    four-point mixed difference

    .. math:: \frac{f(\theta + h_i e_i + h_j e_j) - f(\theta + h_i e_i - h_j e_j)
              - f(\theta - h_i e_i + h_j e_j) + f(\theta - h_i e_i - h_j e_j)}{4 h_i h_j}

    off it (see ``_second_differences`` for forward/backward); default step
    ``ε^(1/(p+2))·max(1, |θ_j|)``. It checks a gradient independently of ``jax.grad``, at the
    price of ``ε^(1/2)`` accuracy instead of ``ε^(2/3)`` (central) and ``~2n²`` evaluations of f.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays with ``n`` elements in total.
      method: one of ``METHODS``.
      step: optional positive scalar absolute step for every coordinate.
      source: ``"grad"`` or ``"value"``.
      chunk_size: columns (or entries) per vmapped batch (default 64).

    Returns:
      ``(n, n)`` array in the ravelled params' dtype.
    """
    fn = "hessian"
    check_choice(fn, "method", method, METHODS)
    check_choice(fn, "source", source, SOURCES)
    _check_params(fn, params)
    check_scalar_function(fn, f, params)
    _check_step(fn, step)
    chunk = _check_chunk(fn, chunk_size)
    flat = _flatten(params)
    levels = RICHARDSON_LEVELS
    if source == "value":
        h = _coordinate_steps(flat, method, step, 2, levels)
        hess = _second_differences(_flat_value(f, flat), flat, h, method, levels, chunk)
        return hess.astype(flat.x.dtype)
    h = _coordinate_steps(flat, method, step, 1, levels)
    columns, _ = _coordinate_derivatives(_flat_grad(f, flat), flat, h, method, levels, chunk)
    return (0.5 * (columns + columns.T)).astype(flat.x.dtype)


def hvp(f: Callable[[Params], Array], params: Params, v: PyTree, *, method: str = "central",
        step=None) -> PyTree:
    r"""Hessian-vector product by differencing exact gradients along ``v``.

    Central: :math:`(\nabla f(\theta + t v) - \nabla f(\theta - t v)) / 2t`. Default
    :math:`t = \varepsilon^{1/(p+1)} \max(1, \|\theta\|_\infty) / \|v\|_\infty` so that the
    largest coordinate moves by the same relative amount as in ``grad`` (``ε`` of the
    lowest-precision leaf); ``step`` sets ``t`` itself. The default is applied as a step
    :math:`t \|v\|_\infty` along :math:`v / \|v\|_\infty`, the result scaled back by
    :math:`\|v\|_\infty`, so a tiny ``v`` cannot overflow ``t``. ``t·v`` is not made exact
    coordinate by coordinate (only one scalar denominator exists), so use float64. ``v = 0``
    gives zeros.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      v: pytree with the structure and leaf shapes of ``params``.
      method: one of ``METHODS``.
      step: optional positive scalar ``t``.

    Returns:
      A pytree like ``params``.
    """
    fn = "hvp"
    check_choice(fn, "method", method, METHODS)
    _check_params(fn, params)
    check_same_structure(fn, "params", params, "v", v)
    check_floating_leaves(fn, "v", v)
    check_scalar_function(fn, f, params)
    _check_step(fn, step)
    flat = _flatten(params)
    x = flat.x
    direction = ravel_pytree(v)[0].astype(x.dtype)
    g = _flat_grad(f, flat)
    levels = RICHARDSON_LEVELS
    if step is None:
        # Step along the unit-max direction and scale back: t = rel·max(1, |x|∞) / |v|∞ itself
        # overflows for a tiny v (float32 v ~ 1e-38 with |x| ~ 1e4 gave inf, then NaN).
        v_norm = jnp.max(jnp.abs(direction))
        v_norm = jnp.where(v_norm > 0, v_norm, 1)
        direction = direction / v_norm
        rel = jnp.max(flat.eps) ** (1.0 / (_order(method, levels) + 1))
        t = rel * jnp.maximum(1.0, jnp.max(jnp.abs(x)))
    else:
        v_norm = jnp.ones((), x.dtype)
        t = jnp.asarray(step, x.dtype)
    at = lambda s: g(_round(flat, x + s * direction))
    g0 = g(x) if method in ("forward", "backward") else None
    estimates = []
    for scale in _scales(method, levels):
        ts = scale * t
        if method == "forward":
            estimates.append((at(ts) - g0) / ts)
        elif method == "backward":
            estimates.append((g0 - at(-ts)) / ts)
        else:
            estimates.append((at(ts) - at(-ts)) / (2 * ts))
    return flat.unravel((v_norm * _combine(method, estimates)[0]).astype(x.dtype))


# ----------------------------------------------------------------------------- checkers


class Coordinate(NamedTuple):
    """One ravelled coordinate, named as a leaf path (``jax.tree_util.keystr``) and an index."""

    path: str
    index: Tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.path}[{', '.join(map(str, self.index))}]" if self.index else self.path


class HessianEntry(NamedTuple):
    """One Hessian entry: ``(i, j)`` in the ravelled matrix and the coordinates of row and column."""

    ij: Tuple[int, int]
    row: Coordinate
    col: Coordinate

    def __str__(self) -> str:
        return f"H[{self.ij[0]}, {self.ij[1]}] = d²f / d{self.row} d{self.col}"


@dataclasses.dataclass(frozen=True)
class GradCheckReport:
    """Result of ``check_grad``; ``str(report)`` is a per-leaf table.

    Attributes:
      passed: every entry has ``rel_error <= rtol`` (i.e. ``|a − b| <= atol + rtol(|a| + |b|)``)
        and is finite.
      max_abs_error: ``max |fd − exact|``.
      max_rel_error: ``max |fd − exact| / (|fd| + |exact| + atol/rtol)``.
      worst: ``Coordinate(path, index)`` of the largest relative error.
      per_leaf: ``{path: {"max_abs_error": float, "max_rel_error": float}}``.
      method, dtype, rtol, atol: the settings used.
      numerical, analytical: the finite-difference and ``jax.grad`` pytrees.
    """

    passed: bool
    max_abs_error: float
    max_rel_error: float
    worst: Coordinate
    per_leaf: Dict[str, Dict[str, float]]
    method: str
    dtype: str
    rtol: float
    atol: float
    numerical: PyTree = dataclasses.field(repr=False)
    analytical: PyTree = dataclasses.field(repr=False)

    def __str__(self) -> str:
        a = ravel_pytree(self.numerical)[0]
        b = ravel_pytree(self.analytical)[0]
        k = _flat_index(self.analytical, self.worst)
        head = (f"check_grad {'PASSED' if self.passed else 'FAILED'}: method={self.method}, "
                f"dtype={self.dtype}, rtol={self.rtol:.1e}, atol={self.atol:.1e}")
        rows = [(path, e["max_abs_error"], e["max_rel_error"]) for path, e in self.per_leaf.items()]
        worst = (f"worst: {self.worst}: finite difference {float(a[k]):.10g}, "
                 f"jax.grad {float(b[k]):.10g}")
        return "\n".join([head, _table("leaf", rows, self.rtol), worst])


@dataclasses.dataclass(frozen=True)
class HessianCheckReport:
    """Result of ``check_hessian``; ``str(report)`` is a per-block table.

    Attributes:
      passed, max_abs_error, max_rel_error: as in ``GradCheckReport``, over all ``n²`` entries.
      worst: ``HessianEntry(ij, row, col)`` of the largest relative error.
      per_leaf: ``{(row_path, col_path): {"max_abs_error", "max_rel_error"}}``, one per block.
      method, source, dtype, rtol, atol: the settings used.
      numerical, analytical: the ``(n, n)`` finite-difference and exact Hessians.
    """

    passed: bool
    max_abs_error: float
    max_rel_error: float
    worst: HessianEntry
    per_leaf: Dict[Tuple[str, str], Dict[str, float]]
    method: str
    source: str
    dtype: str
    rtol: float
    atol: float
    numerical: np.ndarray = dataclasses.field(repr=False)
    analytical: np.ndarray = dataclasses.field(repr=False)

    def __str__(self) -> str:
        i, j = self.worst.ij
        head = (f"check_hessian {'PASSED' if self.passed else 'FAILED'}: method={self.method}, "
                f"source={self.source}, dtype={self.dtype}, rtol={self.rtol:.1e}, "
                f"atol={self.atol:.1e}")
        rows = [(f"{r} × {c}", e["max_abs_error"], e["max_rel_error"])
                for (r, c), e in self.per_leaf.items()]
        worst = (f"worst: {self.worst}: finite difference {self.numerical[i, j]:.10g}, "
                 f"exact {self.analytical[i, j]:.10g}")
        return "\n".join([head, _table("block", rows, self.rtol), worst])


def _table(title: str, rows, rtol: float) -> str:
    width = max([len(title)] + [len(r[0]) for r in rows])
    lines = [f"  {title:<{width}}  {'max_abs_error':>13}  {'max_rel_error':>13}  status"]
    for name, abs_err, rel_err in rows:
        status = "ok" if rel_err <= rtol else "FAIL"
        lines.append(f"  {name:<{width}}  {abs_err:>13.3e}  {rel_err:>13.3e}  {status}")
    return "\n".join(lines)


def _leaf_layout(params: Params):
    """``[(path, shape, offset)]`` of the leaves in ``ravel_pytree`` order."""
    layout, offset = [], 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        shape = tuple(np.shape(leaf))
        layout.append((jax.tree_util.keystr(path), shape, offset))
        offset += int(np.prod(shape, dtype=int))
    return layout


def _coordinate(layout, k: int) -> Coordinate:
    offsets = [off for _, _, off in layout]
    leaf = int(np.searchsorted(offsets, k, side="right")) - 1
    path, shape, offset = layout[leaf]
    index = tuple(int(i) for i in np.unravel_index(k - offset, shape)) if shape else ()
    return Coordinate(path, index)


def _flat_index(params: Params, coordinate: Coordinate) -> int:
    for path, shape, offset in _leaf_layout(params):
        if path == coordinate.path:
            return offset + (int(np.ravel_multi_index(coordinate.index, shape)) if shape else 0)
    raise KeyError(coordinate.path)


def _lowest_precision(params: Params):
    """The leaf dtype with the largest machine epsilon."""
    dtypes = [jnp.result_type(leaf) for leaf in jax.tree_util.tree_leaves(params)]
    return jnp.dtype(max(dtypes, key=lambda d: float(jnp.finfo(d).eps)))


def _precision_dtype(fn: str, params: Params):
    """The lowest-precision leaf dtype; warns when it is float32 or lower."""
    dtype = _lowest_precision(params)
    if jnp.finfo(dtype).eps > jnp.finfo(jnp.float64).eps:
        warnings.warn(
            f"{fn}: finite-difference checks are weak in {jnp.dtype(dtype).name}: the best "
            f"central difference is only accurate to ~ε^(2/3) = "
            f"{float(jnp.finfo(dtype).eps) ** (2 / 3):.1e} relative, so errors of a few percent "
            f"or less can go unseen. Check in float64 (jax.config.update('jax_enable_x64', True)); "
            f"the seed notes' own checker used ε = 1e-7 in float64.",
            LowPrecisionWarning, stacklevel=3)
    return jnp.dtype(dtype)


def _default_rtol(dtype, source: str, method: str) -> float:
    key = (jnp.dtype(dtype).name, source)
    return DEFAULT_RTOL[key][method] if key in DEFAULT_RTOL else _LOW_PRECISION_RTOL


def _compare(numerical: np.ndarray, analytical: np.ndarray, rtol, atol):
    """Errors of ``numerical`` vs ``analytical`` and the defaults; see ``check_grad``."""
    a = np.asarray(numerical, np.float64)
    b = np.asarray(analytical, np.float64)
    if atol is None:
        scale = np.max(np.abs(b)) if np.all(np.isfinite(b)) else 1.0
        atol = rtol * max(1.0, float(scale))
    abs_err = np.abs(a - b)
    rel_err = abs_err / (np.abs(a) + np.abs(b) + atol / rtol)
    rel_err = np.where(np.isnan(rel_err), np.inf, rel_err)  # NaN counts as the worst failure
    return abs_err, rel_err, float(atol)


def _check_tolerances(fn: str, rtol, atol) -> None:
    """``rtol`` finite and > 0, ``atol`` finite and >= 0 (each a real scalar, or None)."""
    for name, value, allow_zero in (("rtol", rtol, False), ("atol", atol, True)):
        if value is None:
            continue
        bound = ">= 0" if allow_zero else "> 0"
        if np.shape(value) != ():
            raise ValueError(f"{fn}: {name} must be a real scalar {bound}, got an array of shape "
                             f"{np.shape(value)}")
        value = check_real_number(fn, name, value, f"a real scalar {bound}")
        check_positive(fn, name, value, allow_zero=allow_zero)
        check_finite(fn, name, value)


def check_grad(f: Callable[[Params], Array], params: Params, *, method: str = "central",
               rtol: float | None = None, atol: float | None = None) -> GradCheckReport:
    r"""Compare ``jax.grad(f)`` with the finite-difference ``grad`` entry by entry.

    An entry with finite-difference value ``a`` and exact value ``b`` passes when

    .. math:: \frac{|a - b|}{|a| + |b| + \mathrm{atol}/\mathrm{rtol}} \le \mathrm{rtol}
              \iff |a - b| \le \mathrm{atol} + \mathrm{rtol}\,(|a| + |b|),

    the symmetric relative error of the seed notes' checker with its denominator guarded by
    ``atol/rtol``, so entries that should be 0 are judged on the absolute scale.

    Default ``rtol`` (``DEFAULT_RTOL``): float64 — forward/backward ``1e-5``, central ``1e-7``,
    Richardson ``1e-9``; float32 — ``3e-2``, ``3e-3``, ``1e-3``; lower precision ``1e-1``. The
    best error of an order-``p`` method is ~``ε^(p/(p+1))`` relative to the scale of ``f``'s
    derivatives (float64: ``1.5e-8`` forward, ``3.7e-11`` central, ``~4e-14`` Richardson); the
    defaults leave 10²–10⁴ for the constants (higher derivatives, round-off in ``f``).
    Default ``atol = rtol · max(1, max|∇f|)``: finite-difference error is set by the scale of the
    whole gradient, not by the size of one entry. The dtype is that of the lowest-precision leaf;
    float32 or lower issues a ``LowPrecisionWarning`` because a 1% error can hide below its
    tolerance.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      method: one of ``METHODS``.
      rtol, atol: tolerances (``rtol > 0``, ``atol >= 0``).

    Returns:
      A ``GradCheckReport`` (a Python object: call this outside ``jax.jit``).
    """
    fn = "check_grad"
    check_choice(fn, "method", method, METHODS)
    _check_params(fn, params)
    check_scalar_function(fn, f, params)
    _check_tolerances(fn, rtol, atol)
    dtype = _precision_dtype(fn, params)
    rtol = _default_rtol(dtype, "grad", method) if rtol is None else float(rtol)
    numerical = grad(f, params, method=method)
    analytical = jax.grad(f)(params)
    a, b = ravel_pytree(numerical)[0], ravel_pytree(analytical)[0]
    abs_err, rel_err, atol = _compare(a, b, rtol, atol)
    layout = _leaf_layout(params)
    per_leaf = {}
    for path, shape, offset in layout:
        part = slice(offset, offset + int(np.prod(shape, dtype=int)))
        per_leaf[path] = {"max_abs_error": float(np.max(abs_err[part])),
                          "max_rel_error": float(np.max(rel_err[part]))}
    worst = int(np.argmax(rel_err))
    return GradCheckReport(
        passed=bool(np.all(rel_err <= rtol)), max_abs_error=float(np.max(abs_err)),
        max_rel_error=float(np.max(rel_err)), worst=_coordinate(layout, worst),
        per_leaf=per_leaf, method=method, dtype=dtype.name, rtol=rtol, atol=atol,
        numerical=numerical, analytical=analytical)


def check_hessian(f: Callable[[Params], Array], params: Params, *, method: str = "central",
                  source: str = "grad", rtol: float | None = None,
                  atol: float | None = None) -> HessianCheckReport:
    r"""Compare ``derivatives.hessian_matrix(f)`` with the finite-difference ``hessian``.

    The pass rule and ``atol`` default are those of ``check_grad`` (with ``max|H|``). Default
    ``rtol``: ``source="grad"`` as ``check_grad``; ``source="value"`` (second differences, best
    error ~``ε^(p/(p+2))``: ``1.5e-8`` central in float64) float64 forward/backward ``1e-3``,
    central ``1e-5``, Richardson ``1e-7``; float32 ``1e-1``, ``3e-2``, ``1e-2``.

    ``source="grad"`` checks the second-order rules *given* ``jax.grad`` (a wrong gradient
    whose own derivative is consistent with it passes); ``source="value"`` checks the Hessian
    against ``f`` alone.

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      method: one of ``METHODS``.
      source: ``"grad"`` or ``"value"``.
      rtol, atol: tolerances.

    Returns:
      A ``HessianCheckReport`` (call outside ``jax.jit``).
    """
    fn = "check_hessian"
    check_choice(fn, "method", method, METHODS)
    check_choice(fn, "source", source, SOURCES)
    _check_params(fn, params)
    check_scalar_function(fn, f, params)
    _check_tolerances(fn, rtol, atol)
    dtype = _precision_dtype(fn, params)
    rtol = _default_rtol(dtype, source, method) if rtol is None else float(rtol)
    numerical = np.asarray(hessian(f, params, method=method, source=source))
    analytical = np.asarray(derivatives.hessian_matrix(f, params))
    abs_err, rel_err, atol = _compare(numerical, analytical, rtol, atol)
    layout = _leaf_layout(params)
    per_leaf = {}
    for rpath, rshape, roff in layout:
        rows = slice(roff, roff + int(np.prod(rshape, dtype=int)))
        for cpath, cshape, coff in layout:
            cols = slice(coff, coff + int(np.prod(cshape, dtype=int)))
            per_leaf[(rpath, cpath)] = {"max_abs_error": float(np.max(abs_err[rows, cols])),
                                        "max_rel_error": float(np.max(rel_err[rows, cols]))}
    i, j = (int(k) for k in np.unravel_index(int(np.argmax(rel_err)), rel_err.shape))
    return HessianCheckReport(
        passed=bool(np.all(rel_err <= rtol)), max_abs_error=float(np.max(abs_err)),
        max_rel_error=float(np.max(rel_err)),
        worst=HessianEntry((i, j), _coordinate(layout, i), _coordinate(layout, j)),
        per_leaf=per_leaf, method=method, source=source, dtype=dtype.name, rtol=rtol,
        atol=atol, numerical=numerical, analytical=analytical)


# ----------------------------------------------------------------------------- step sweep


def default_sweep_steps(dtype) -> np.ndarray:
    """Half-decade absolute steps from ``1e-1`` down to the last power of ten above ``ε``.

    float64: ``1e-1 … 1e-15`` (29 steps); float32: ``1e-1 … 1e-6`` (11 steps).
    """
    dtype = check_float_dtype("default_sweep_steps", dtype)
    last = int(math.floor(-math.log10(float(jnp.finfo(dtype).eps))))
    return np.logspace(-1, -last, 2 * (last - 1) + 1)


def step_sweep(f: Callable[[Params], Array], params: Params, steps=None,
               method: Union[str, Sequence[str]] = "central"):
    r"""Error of the finite-difference gradient against ``jax.grad`` as the step shrinks.

    The error is the relative max-norm :math:`\|g_{FD}(h) - \nabla f\|_\infty /
    \|\nabla f\|_\infty` (absolute when the gradient is 0). Plotted on log-log axes it is the
    V-curve: truncation error ``∝ h^p`` on the right, round-off ``∝ ε/h`` on the left. Each step
    is an absolute step for every coordinate; the steps are swept by ``lax.map`` (one trace).

    Args:
      f: scalar function of ``params``.
      params: pytree of floating arrays.
      steps: 1-D positive steps; default ``default_sweep_steps(dtype)``.
      method: one method, or a sequence of methods to sweep each.

    Returns:
      ``(steps, errors)``: NumPy arrays of shape ``(k,)``, or for a sequence of methods ``errors``
      is ``{method: (k,) array}``. A step too small to move a coordinate gives NaN.
    """
    fn = "step_sweep"
    methods = [method] if isinstance(method, str) else list(method)
    if not methods:
        raise ValueError(f"{fn}: method must name at least one of {list(METHODS)}, got {method!r}")
    for m in methods:
        check_choice(fn, "method", m, METHODS)
    _check_params(fn, params)
    check_scalar_function(fn, f, params)
    flat = _flatten(params)
    dtype = flat.x.dtype
    steps = (default_sweep_steps(_lowest_precision(params)) if steps is None
             else _check_steps(fn, steps))
    exact = ravel_pytree(jax.grad(f)(params))[0].astype(dtype)
    scale = jnp.max(jnp.abs(exact))
    scale = jnp.where(scale > 0, scale, 1)

    def error(m, h):
        estimate = ravel_pytree(grad(f, params, method=m, step=h))[0].astype(dtype)
        return jnp.max(jnp.abs(estimate - exact)) / scale

    hs = jnp.asarray(steps, dtype)
    errors = {m: np.asarray(lax.map(lambda h, m=m: error(m, h), hs)) for m in methods}
    return steps, (errors[methods[0]] if isinstance(method, str) else errors)


def _check_steps(fn: str, steps) -> np.ndarray:
    """``steps`` as a float64 NumPy array: real, 1-D, non-empty, finite and positive."""
    array = np.asarray(steps)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{fn}: steps must be a non-empty 1-D array of positive real steps, got "
                        f"dtype {array.dtype}: {steps!r}")
    array = array.astype(np.float64)
    if array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array) & (array > 0)):
        raise ValueError(f"{fn}: steps must be a non-empty 1-D array of positive steps, got "
                         f"{array!r}")
    return array


def _power_label(p: int) -> str:
    superscripts = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")
    return "h" if p == 1 else "h" + str(p).translate(superscripts)


def plot_step_sweep(steps, errors, *, ax=None,
                    title: str = "Finite-difference gradient error vs step",
                    path=None, slopes: Sequence[int] = (1, 2)):
    """Plot ``step_sweep``'s V-curves on log-log axes, with slope guides ``∝ h^p``.

    Uses ``matplotlib.figure.Figure`` (no pyplot state, safe under the Agg backend).

    Args:
      steps: ``(k,)`` steps.
      errors: ``(k,)`` errors, or ``{label: (k,) errors}``.
      ax: optional matplotlib ``Axes`` to draw into; a new figure otherwise.
      title: axes title.
      path: optional file path; the figure is saved there (e.g. a ``.png``).
      slopes: orders ``p`` of the dashed guides, anchored at the first curve's largest step
        (``()`` for none).

    Returns:
      ``(figure, axes)``.
    """
    from matplotlib.figure import Figure

    steps = _check_steps("plot_step_sweep", steps)
    curves = dict(errors) if isinstance(errors, Mapping) else {"finite difference": errors}
    for label, err in curves.items():
        if np.shape(err) != steps.shape:
            raise ValueError(f"plot_step_sweep: errors[{label!r}] must have the shape of steps "
                             f"{steps.shape}, got {np.shape(err)}")
    if ax is None:
        fig = Figure(figsize=(6, 4.5))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for label, err in curves.items():
        err = np.asarray(err, np.float64)
        ax.loglog(steps, np.where(err > 0, err, np.nan), marker="o", markersize=3, label=label)
    first = np.asarray(next(iter(curves.values())), np.float64)
    finite = np.isfinite(first) & (first > 0)
    if slopes and finite.any():
        anchor = int(np.argmax(np.where(finite, steps, -np.inf)))
        floor = np.nanmin(np.where(finite, first, np.nan)) / 10
        for p in slopes:
            guide = first[anchor] * (steps / steps[anchor]) ** p
            guide = np.where(guide >= floor, guide, np.nan)
            ax.loglog(steps, guide, linestyle="--", color="gray", linewidth=0.8,
                      label=f"∝ {_power_label(p)}")
    ax.set_xlabel("step h")
    ax.set_ylabel("relative error  ‖FD − ∇f‖∞ / ‖∇f‖∞")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig, ax


__all__ = [
    "METHODS",
    "SOURCES",
    "RICHARDSON_LEVELS",
    "DEFAULT_RTOL",
    "LowPrecisionWarning",
    "default_relative_step",
    "grad",
    "richardson_grad",
    "hessian",
    "hvp",
    "Coordinate",
    "HessianEntry",
    "GradCheckReport",
    "HessianCheckReport",
    "check_grad",
    "check_hessian",
    "default_sweep_steps",
    "step_sweep",
    "plot_step_sweep",
]
