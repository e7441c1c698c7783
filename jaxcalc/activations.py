"""Activation functions, each beside its closed-form derivative.

All functions are elementwise (except ``softmax``/``log_softmax``/``softmax_jacobian``, which act
on one axis), pure, ``jax.jit``-able and differentiable by ``jax.grad``. Derivatives are the
derivatives with respect to the *input* ``x``, evaluated elementwise, and a test holds each
against ``jax.grad`` and central finite differences.

Shapes and dtypes: every elementwise function takes an array of any shape (0-D and empty
included) and returns one of the same shape; ``softmax``/``log_softmax`` need at least one
dimension and a non-empty ``axis``, and ``softmax_jacobian`` adds a trailing axis. Inputs are
anything ``jnp.asarray`` takes (arrays, NumPy arrays, Python scalars, nested lists) holding real
numbers. A floating input keeps its dtype (float32 in, float32 out, even with
``jax_enable_x64``); integer and bool input is promoted and computed in the default float dtype.
Complex or non-numeric input raises a ``TypeError`` naming the function and the argument, and bad
shapes or axes a ``ValueError``; all checks use static information only, so they also fire under
``jax.jit``.

Numerics: ``sigmoid`` is ``lax.logistic`` (no overflow: exactly 0 and 1 at ∓1e4, finite
gradients); ``softplus`` is ``logaddexp(x, 0)``; ``log_softmax`` subtracts the max first, so it
is exact for logits of ±1e4, and a ``-inf`` logit (a masked class) gets probability 0 with finite
gradients as long as its slice has one finite logit. NaN in gives NaN out, for every function and
derivative (``relu`` included). XLA on CPU flushes subnormal results to zero, so results within
``finfo(dtype).tiny`` of zero may come back as 0.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcalc._types import Array, ArrayLike
from jaxcalc._validate import as_real_array, check_ndim


def sigmoid(x: ArrayLike) -> Array:
    r"""Logistic sigmoid :math:`\sigma(x) = 1 / (1 + e^{-x})`."""
    return lax.logistic(_float_array("sigmoid", "x", x))


def sigmoid_derivative(x: ArrayLike) -> Array:
    r""":math:`\sigma'(x) = \sigma(x)(1 - \sigma(x))`.

    In float64, ``sigmoid_derivative(0.5) = 0.2350037122015945`` (the seed's value).
    """
    s = lax.logistic(_float_array("sigmoid_derivative", "x", x))
    return s * (1 - s)


def relu(x: ArrayLike) -> Array:
    r"""Rectified linear unit :math:`\max(0, x)`.

    Written with ``where`` rather than ``maximum`` so that ``jax.grad`` gives 0 at the kink
    (``maximum`` splits the tie and would give 0.5), agreeing with ``relu_derivative``. The test
    is ``x <= 0``, so that NaN (which compares false) passes through as NaN.

    Reference: Nair & Hinton, "Rectified Linear Units Improve Restricted Boltzmann Machines", 2010.
    """
    x = _float_array("relu", "x", x)
    return jnp.where(x <= 0, jnp.zeros_like(x), x)


def relu_derivative(x: ArrayLike) -> Array:
    r"""Heaviside step :math:`1[x > 0]` (NaN at NaN).

    By convention ``relu_derivative(0) = 0``, which is also what ``jax.grad(relu)(0.0)`` gives.
    """
    x = _float_array("relu_derivative", "x", x)
    return _keep_nan(x, jnp.where(x > 0, jnp.ones_like(x), jnp.zeros_like(x)))


def tanh(x: ArrayLike) -> Array:
    r"""Hyperbolic tangent."""
    return jnp.tanh(_float_array("tanh", "x", x))


def tanh_derivative(x: ArrayLike) -> Array:
    r""":math:`\tanh'(x) = 1 - \tanh^2(x)`, evaluated as :math:`(1 - t)(1 + t)`.

    The factored form keeps full relative precision where ``t = tanh(x)`` is near ±1 (``1 - t*t``
    loses it to cancellation) and is how JAX differentiates ``tanh``.
    """
    t = jnp.tanh(_float_array("tanh_derivative", "x", x))
    return (1 - t) * (1 + t)


def softplus(x: ArrayLike) -> Array:
    r""":math:`\log(1 + e^{x})`, computed as ``logaddexp(x, 0)`` (no overflow).

    Reference: Dugas et al., "Incorporating Second-Order Functional Knowledge for Better Option
    Pricing", 2001.
    """
    x = _float_array("softplus", "x", x)
    return jnp.logaddexp(x, jnp.zeros_like(x))


def softplus_derivative(x: ArrayLike) -> Array:
    r""":math:`\mathrm{softplus}'(x) = \sigma(x)`."""
    return lax.logistic(_float_array("softplus_derivative", "x", x))


def leaky_relu(x: ArrayLike, negative_slope: float = 0.01) -> Array:
    r""":math:`x` for :math:`x > 0`, else :math:`\alpha x` with ``negative_slope`` α.

    Args:
      x: any shape.
      negative_slope: the scalar α (a Python number or a 0-D array, possibly traced); it is cast
        to the dtype of ``x``, so it never changes the result's dtype.

    Reference: Maas, Hannun & Ng, "Rectifier Nonlinearities Improve Neural Network Acoustic
    Models", 2013.
    """
    x = _float_array("leaky_relu", "x", x)
    slope = _scalar_like("leaky_relu", "negative_slope", negative_slope, x)
    return jnp.where(x > 0, x, slope * x)


def leaky_relu_derivative(x: ArrayLike, negative_slope: float = 0.01) -> Array:
    r""":math:`1` for :math:`x > 0`, else α (NaN at NaN).

    So the derivative at 0 is α, matching ``jax.grad(leaky_relu)(0.0)``. Arguments as in
    ``leaky_relu``.
    """
    fn = "leaky_relu_derivative"
    x = _float_array(fn, "x", x)
    slope = _scalar_like(fn, "negative_slope", negative_slope, x)
    return _keep_nan(x, jnp.where(x > 0, jnp.ones_like(x), jnp.broadcast_to(slope, x.shape)))


def softmax(x: ArrayLike, axis: int = -1) -> Array:
    r""":math:`\mathrm{softmax}(x)_i = e^{x_i - m} / \sum_j e^{x_j - m}` with ``m = max(x)``.

    Normalized along ``axis``; computed as ``exp(log_softmax(x, axis))``.

    Args:
      x: logits of any shape with at least one dimension and a non-empty ``axis``.
      axis: the (one) axis to normalize along, an int in ``[-x.ndim, x.ndim)``.

    Returns:
      Probabilities shaped like ``x``.
    """
    x = _float_array("softmax", "x", x)
    _check_axis("softmax", x, axis)
    return jnp.exp(_log_softmax(x, axis))


def log_softmax(x: ArrayLike, axis: int = -1) -> Array:
    r""":math:`x_i - \log\sum_j e^{x_j}`, with the max subtracted first (exact for logits ±1e4).

    Arguments as in ``softmax``.
    """
    x = _float_array("log_softmax", "x", x)
    _check_axis("log_softmax", x, axis)
    return _log_softmax(x, axis)


def softmax_jacobian(x: ArrayLike) -> Array:
    r"""Jacobian of ``softmax`` over the last axis: :math:`J = \mathrm{diag}(s) - s s^\top`.

    Args:
      x: logits of shape ``(..., C)`` with ``C >= 1``.

    Returns:
      ``(..., C, C)`` with ``J[..., i, j] = ∂ s_i / ∂ x_j``.
    """
    x = _float_array("softmax_jacobian", "x", x)
    _check_axis("softmax_jacobian", x, -1)
    s = jnp.exp(_log_softmax(x, -1))
    return s[..., :, None] * jnp.eye(s.shape[-1], dtype=s.dtype) - s[..., :, None] * s[..., None, :]


def _log_softmax(x: Array, axis: int) -> Array:
    """``log_softmax`` without the argument checks (``x`` already a floating array)."""
    shifted = x - lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def _keep_nan(x: Array, value: Array) -> Array:
    """``value``, but NaN wherever ``x`` is NaN (a step function would otherwise hide it)."""
    return jnp.where(jnp.isnan(x), x, value)


def _float_array(fn: str, name: str, x: ArrayLike) -> Array:
    """``x`` checked by ``as_real_array`` and cast to its floating dtype (default float if none)."""
    arr = as_real_array(fn, name, x)
    return arr.astype(_float_dtype(arr))


def _scalar_like(fn: str, name: str, value: ArrayLike, x: Array) -> Array:
    """The real scalar ``value`` (Python number or 0-D array) as a 0-D array of ``x.dtype``."""
    value = as_real_array(fn, name, value)
    check_ndim(fn, name, value, 0, "(a scalar)")
    return value.astype(x.dtype)


def _check_axis(fn: str, x: Array, axis) -> None:
    """Raise unless ``axis`` is an int naming a non-empty axis of ``x`` (static checks only)."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{fn}: axis must be an int, got {type(axis).__name__} {axis!r}")
    if x.ndim == 0:
        raise ValueError(f"{fn}: x must be at least 1-D (it is normalized along axis {axis}), "
                         f"got shape ()")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{fn}: axis must be in [{-x.ndim}, {x.ndim}) for x of shape "
                         f"{tuple(x.shape)}, got {axis}")
    if x.shape[axis] == 0:
        raise ValueError(f"{fn}: x must have at least one entry along axis {axis}, got shape "
                         f"{tuple(x.shape)}")


def _float_dtype(*xs: ArrayLike):
    """The dtype to compute in: the inputs' promoted dtype if floating, else the default float."""
    dtype = jnp.result_type(*xs)
    if jnp.issubdtype(dtype, jnp.floating):
        return dtype
    return jnp.result_type(float)


__all__ = [
    "sigmoid",
    "sigmoid_derivative",
    "relu",
    "relu_derivative",
    "tanh",
    "tanh_derivative",
    "softplus",
    "softplus_derivative",
    "leaky_relu",
    "leaky_relu_derivative",
    "softmax",
    "log_softmax",
    "softmax_jacobian",
]
